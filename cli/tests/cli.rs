//! The `verifyfull check` binary: inputs, output formats, exit codes, errors.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

fn verifyfull(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_verifyfull"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn verifyfull");
    if let Some(text) = stdin {
        // A run that fails before reading its input (a bad flag) closes stdin first.
        let written = child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes());
        if let Err(e) = written {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
        }
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().expect("exit code"),
        String::from_utf8(out.stdout).expect("utf-8"),
        String::from_utf8(out.stderr).expect("utf-8"),
    )
}

fn json(args: &[&str], stdin: Option<&str>) -> (i32, serde_json::Value) {
    let mut all = vec!["check", "--output", "json", "--now", "2026-06-01T00:00:00Z"];
    all.extend_from_slice(args);
    let (code, out, err) = verifyfull(&all, stdin);
    (
        code,
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}")),
    )
}

const COMPLIANT: &str = "apiVersion: v1
kind: Pod
metadata: {name: ok, namespace: shop}
spec:
  containers:
  - name: app
    env:
    - {name: PGHOST, value: db}
    - {name: PGSSLMODE, value: verify-full}
    - {name: PGSSLROOTCERT, value: /ca.crt}
";

const WEAK: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: weak, namespace: shop}
spec:
  template:
    spec:
      containers:
      - name: app
        env:
        - {name: DATABASE_URL, value: 'postgres://db/app?sslmode=require'}
";

#[test]
fn exit_codes() {
    assert_eq!(json(&["-"], Some(COMPLIANT)).0, 0);
    assert_eq!(json(&["-"], Some(WEAK)).0, 1);
    let hidden = "apiVersion: v1\nkind: Pod\nmetadata: {name: h}\nspec:\n  containers:\n  - name: app\n    env:\n    - name: DATABASE_URL\n      valueFrom: {secretKeyRef: {name: s, key: url}}\n";
    // Unresolved warns by default; a flag makes it deny.
    assert_eq!(json(&["-"], Some(hidden)).0, 0);
    assert_eq!(json(&["--unresolved", "deny", "-"], Some(hidden)).0, 1);
    // Bad input wins over violations, and the good documents are still reported.
    let mixed = format!("{WEAK}---\napiVersion: v1\nkind: Pod\nspec: [\n---\n{COMPLIANT}");
    let (code, out) = json(&["-"], Some(&mixed));
    assert_eq!(code, 2);
    assert_eq!(out["objects"].as_array().map(Vec::len), Some(2));
    assert_eq!(out["errors"][0]["document"], 2);
}

#[test]
fn json_shape() {
    let (_, out) = json(&["-"], Some(WEAK));
    let o = &out["objects"][0];
    assert_eq!(o["source"], "-");
    assert_eq!(o["document"], 1);
    assert_eq!(o["kind"], "Deployment");
    assert_eq!(o["namespace"], "shop");
    assert_eq!(o["name"], "weak");
    let c = &o["containers"][0];
    assert_eq!(c["name"], "app");
    assert_eq!(c["list"], "containers");
    assert_eq!(c["client"], true);
    assert_eq!(c["verdict"], "violation");
    let f = &c["findings"][0];
    assert_eq!(f["code"], "SslModeTooWeak");
    assert_eq!(f["variable"], "DATABASE_URL");
    assert!(f["message"].as_str().is_some_and(|m| m.contains("Fix:")));
    assert_eq!(out["errors"], serde_json::json!([]));
}

#[test]
fn lists_json_files_and_directories() {
    let dir = tempdir("lists");
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "db"}, "data": {"PGSSLMODE": "disable"}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c",
            "envFrom": [{"configMapRef": {"name": "db"}}], "env": [{"name": "PGHOST", "value": "db"}]}]}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad"}, "spec": {"containers": [{"name": "c",
            "env": [{"name": "PGPORT", "value": 5432}]}]}},
    ]});
    std::fs::write(dir.join("list.json"), list.to_string()).expect("write");
    std::fs::create_dir_all(dir.join("nested")).expect("mkdir");
    std::fs::write(dir.join("nested/ok.yml"), COMPLIANT).expect("write");
    std::fs::write(dir.join("nested/ignored.txt"), "not yaml").expect("write");
    let (code, out) = json(&[dir.to_str().expect("path")], None);
    assert_eq!(code, 2);
    let objects = out["objects"].as_array().expect("objects");
    assert_eq!(objects.len(), 2);
    assert_eq!(objects[0]["item"], 2);
    // The ConfigMap in the same List resolved envFrom: PGSSLMODE=disable.
    assert_eq!(
        objects[0]["containers"][0]["findings"][0]["code"],
        "SslModeTooWeak"
    );
    assert!(
        objects[1]["source"]
            .as_str()
            .is_some_and(|s| s.ends_with("nested/ok.yml"))
    );
    let e = &out["errors"][0];
    assert_eq!(e["item"], 3);
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("spec.containers[0].env[0].value")),
        "{e}"
    );
}

#[test]
fn errors_name_file_document_line_and_column() {
    let dir = tempdir("errors");
    let path = dir.join("broken.yaml");
    std::fs::write(
        &path,
        format!(
            "{COMPLIANT}---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n  labels: [unclosed\n"
        ),
    )
    .expect("write");
    let (code, out, _) = verifyfull(&["check", path.to_str().expect("path")], None);
    assert_eq!(code, 2);
    let line = out
        .lines()
        .find(|l| l.starts_with("error:"))
        .expect("an error line");
    assert!(line.contains("broken.yaml: document 2 (line 16"), "{line}");
    // Missing files and non-Kubernetes documents are errors too; never a panic.
    let (code, out, _) = verifyfull(&["check", "/no/such/file.yaml"], None);
    assert_eq!(code, 2);
    assert!(out.contains("error: /no/such/file.yaml"), "{out}");
    for garbage in [
        "- a\n- b\n",
        "just text\n",
        "{\"kind\": 5}",
        "apiVersion: v1\n",
        "\u{0}\u{1}",
    ] {
        let (code, _, err) = verifyfull(&["check", "-"], Some(garbage));
        assert_eq!(code, 2, "{garbage:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn flags_loopback_and_now() {
    let proxy = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: app\n    env:\n    - {name: DATABASE_URL, value: 'postgres://127.0.0.1/app?sslmode=disable'}\n";
    assert_eq!(json(&["-"], Some(proxy)).0, 0);
    assert_eq!(json(&["--loopback", "check", "-"], Some(proxy)).0, 1);
    let exempt = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    verifyfull.dev/exempt: 'true'\n    verifyfull.dev/exempt-reason: legacy\n    verifyfull.dev/exempt-until: '2026-07-01'\nspec:\n  containers:\n  - name: app\n    env:\n    - {name: PGHOST, value: db}\n";
    let (code, out) = json(&["-"], Some(exempt));
    assert_eq!(code, 0);
    assert_eq!(out["objects"][0]["verdict"], "exempt");
    assert_eq!(out["objects"][0]["exemption"]["reason"], "legacy");
    let (code, _, _) = verifyfull(
        &["check", "--now", "2026-07-02T00:00:00Z", "-"],
        Some(exempt),
    );
    assert_eq!(code, 1, "expired");
}

#[test]
fn bundled_examples() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let (code, out) = json(&[examples.to_str().expect("path")], None);
    assert_eq!(code, 1);
    let verdicts: Vec<(String, String)> = out["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .map(|o| {
            (
                o["name"].as_str().unwrap_or("").to_string(),
                o["verdict"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let expect = |n: &str, v: &str| (n.to_string(), v.to_string());
    assert_eq!(
        verdicts,
        vec![
            expect("nightly-backup", "violation"),
            expect("orders", "pass"),
            expect("inventory", "violation"),
            expect("payments", "pass"),
            expect("storefront", "violation"),
            expect("reports", "pass"),
            expect("legacy-import", "exempt"),
            expect("notifications", "pass"),
            expect("catalog", "pass"),
            expect("analytics", "pass"),
            expect("search-indexer", "warning"),
            expect("billing", "violation"),
            expect("ledger-export", "violation"),
        ]
    );
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("verifyfull-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A profile of one's own (`--profile`): the in-house application is judged by it and named;
/// a malformed profile is exit 2 with its file, field and line, and nothing is judged.
#[test]
fn user_profiles_are_applied_and_a_bad_one_is_named() {
    let profile = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/profile-example.yaml");
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: billing}\nspec:\n  containers:\n  - name: billing\n    image: billing:4.2\n    env:\n    - {name: BILLING_DB_HOST, value: db.example.net}\n";
    let (code, out, _) = verifyfull(&["check", "-"], Some(pod));
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = verifyfull(&["check", "--profile", profile, "-"], Some(pod));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("Billing: BILLING_DB_SSLMODE unset"), "{out}");
    assert!(
        out.contains("set BILLING_DB_CA=<CA file> and BILLING_DB_SSLMODE=verify-full"),
        "{out}"
    );
    let dir = std::env::temp_dir().join(format!("verifyfull-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let bad = dir.join("bad.yaml");
    let text = std::fs::read_to_string(profile).expect("profile");
    std::fs::write(&bad, text.replace("recognise:", "recognize:")).expect("write");
    let bad_arg = bad.display().to_string();
    let (code, out, err) = verifyfull(&["check", "--profile", &bad_arg, "-"], Some(pod));
    assert_eq!(code, 2, "{out}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains(&bad_arg) && err.contains("recognize") && err.contains("line"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
