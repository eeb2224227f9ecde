//! `verifyfull check --output sarif`: valid SARIF 2.1.0 (checked against the vendored
//! OASIS schema, formats included), one result per finding at the line and column of the
//! variable's entry, and unreadable input as a notification — pinned for the examples.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
}

/// `verifyfull check --output sarif ARGS` from the workspace root: exit code and log.
fn sarif(args: &[&str], stdin: &str) -> (i32, Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_verifyfull"))
        .args([
            "check",
            "--output",
            "sarif",
            "--now",
            "2026-12-01T00:00:00Z",
        ])
        .args(args)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run verifyfull");
    (child.stdin.take().expect("stdin"))
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("verifyfull");
    let log = serde_json::from_slice(&out.stdout).expect("SARIF is JSON");
    (out.status.code().expect("exit code"), log)
}

fn assert_valid(log: &Value) {
    let path = root().join("cli/tests/sarif/sarif-schema-2.1.0.json");
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("schema")).expect("JSON");
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(log)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "not valid SARIF 2.1.0: {errors:#?}");
}

/// Each result as `rule level uri:line:column object [suppressed]`.
fn results(log: &Value) -> Vec<String> {
    let run = &log["runs"][0];
    let rules = run["tool"]["driver"]["rules"].as_array().expect("rules");
    (run["results"].as_array().expect("results").iter())
        .map(|r| {
            let rule = r["ruleId"].as_str().expect("ruleId");
            let index = r["ruleIndex"].as_u64().expect("ruleIndex") as usize;
            assert_eq!(rules[index]["id"], rule, "ruleIndex points at the rule");
            let at = &r["locations"][0]["physicalLocation"];
            let suppressed = if r.get("suppressions").is_some() {
                " suppressed"
            } else {
                ""
            };
            format!(
                "{rule} {} {}:{}:{} {}{suppressed}",
                r["level"].as_str().expect("level"),
                at["artifactLocation"]["uri"].as_str().expect("uri"),
                at["region"]["startLine"],
                at["region"]["startColumn"],
                r["locations"][0]["logicalLocations"][0]["fullyQualifiedName"]
                    .as_str()
                    .expect("logical location"),
            )
        })
        .collect()
}

#[test]
fn the_examples_point_at_each_variable() {
    let (code, log) = sarif(&["examples"], "");
    assert_eq!(code, 1, "examples/weak.yaml is denied");
    assert_valid(&log);
    assert_eq!(
        results(&log),
        [
            "SslModeUnset error examples/backup-cronjob.yaml:19:34 CronJob shop/nightly-backup/pg-dump",
            "SslModeTooWeak error examples/npgsql.yaml:22:17 Deployment shop/inventory/inventory",
            "SslModeTooWeak error examples/prisma.yaml:21:17 Deployment shop/storefront/storefront",
            "SslModeTooWeak error examples/proxy-and-exemption.yaml:45:17 Job analytics/legacy-import/import suppressed",
            "Unresolved warning examples/unresolved.yaml:20:17 StatefulSet search/search-indexer/indexer",
            "SslModeUnset error examples/weak.yaml:29:17 Deployment shop/billing/migrate",
            "SslModeTooWeak error examples/weak.yaml:39:17 Deployment shop/billing/billing",
            "VerificationDisabled error examples/weak.yaml:62:21 CronJob shop/ledger-export/export",
        ]
    );
    let rules = log["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .expect("rules");
    assert_eq!(
        rules.len(),
        policy::Code::ALL.len(),
        "a rule per finding code"
    );
    for (rule, code) in rules.iter().zip(policy::Code::ALL) {
        assert_eq!(rule["id"], code.as_str());
        let help = rule["help"]["text"].as_str().expect("help text");
        assert!(help.starts_with(code.meaning()), "{help}");
    }
    let exempt = &log["runs"][0]["results"][3]["suppressions"][0];
    assert_eq!(exempt["kind"], "inSource");
    assert!(
        (exempt["justification"].as_str()).is_some_and(|j| j.contains("vendor")),
        "the exemption's reason: {exempt}"
    );
}

#[test]
fn lists_args_and_later_entries_are_located() {
    // A variable defined twice: the later entry wins, and the finding points at it (a
    // duplicate key elsewhere does not lose the positions: the last one wins, as kubectl
    // reads it). A
    // List's items each have their own positions; a connection string in `args` points at
    // its element; JSON is located as YAML is.
    let stream = r#"apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: a, namespace: ns}
  spec:
    containers:
    - name: app
      image: x
      image: y
      env:
      - {name: DATABASE_URL, value: "postgres://db.example.net/app?sslmode=verify-full&sslrootcert=/ca.crt"}
      - {name: PGSSLMODE, value: verify-full}
      - {name: DATABASE_URL, value: "postgres://db.example.net/app?sslmode=require"}
- apiVersion: v1
  kind: Pod
  metadata: {name: b, namespace: ns}
  spec:
    containers:
    - name: tool
      image: x
      args:
      - --verbose
      - "postgres://db.example.net/app?sslmode=prefer"
---
{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "c"},
 "spec": {"containers": [{"name": "j", "image": "x",
   "env": [{"name": "JDBC_URL", "value": "jdbc:postgresql://db.example.net/app?sslmode=require"}]}]}}
"#;
    let (code, log) = sarif(&["-"], stream);
    assert_eq!(code, 1);
    assert_valid(&log);
    assert_eq!(
        results(&log),
        [
            "SslModeTooWeak error -:15:16 Pod ns/a/app",
            "SslModeTooWeak error -:25:9 Pod ns/b/tool",
            "SslModeTooWeak error -:29:21 Pod c/j",
        ]
    );
}

#[test]
fn unreadable_input_is_a_notification() {
    let (code, log) = sarif(&["-", "examples/does-not-exist.yaml"], "kind: [\n");
    assert_eq!(code, 2);
    assert_valid(&log);
    let invocation = &log["runs"][0]["invocations"][0];
    assert_eq!(invocation["executionSuccessful"], false);
    let notes = invocation["toolExecutionNotifications"]
        .as_array()
        .expect("notifications");
    let uris: Vec<&str> = notes
        .iter()
        .map(|n| {
            assert_eq!(n["level"], "error");
            n["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
                .as_str()
                .expect("uri")
        })
        .collect();
    assert_eq!(uris, ["examples/does-not-exist.yaml", "-"]);
}

#[test]
fn the_vendored_schema_is_the_one_its_licence_names() {
    let licence = std::fs::read_to_string(root().join("cli/tests/sarif/LICENSE")).expect("LICENSE");
    let schema =
        std::fs::read(root().join("cli/tests/sarif/sarif-schema-2.1.0.json")).expect("schema");
    assert!(licence.contains("Copyright (c) OASIS Open"));
    let schema: Value = serde_json::from_slice(&schema).expect("JSON");
    assert_eq!(
        schema["$id"],
        "https://raw.githubusercontent.com/oasis-tcs/sarif-spec/master/Schemata/sarif-schema-2.1.0.json"
    );
}
