//! No output of the CLI — human, JSON, error messages from the YAML and JSON parsers —
//! contains a password or a whole Secret value.

use std::io::Write;
use std::process::{Command, Stdio};

use proptest::prelude::*;
use verifyfull_cli::check::{self, Options};
use verifyfull_cli::input::{self, Source};
use verifyfull_cli::sarif;

fn options() -> Options {
    Options {
        settings: policy::Settings::default(),
        now: jiff::Timestamp::UNIX_EPOCH,
        jobs: 1,
        locate: true,
    }
}

/// Everything the CLI would print for `text` read from stdin.
fn outputs(text: &str) -> String {
    let (mut docs, errors) = input::parse(&Source::Stdin, text);
    input::locate(&Source::Stdin, text, &mut docs);
    let outcome = check::judge(&docs, &errors, &options());
    let mut out = check::render_human(&outcome);
    out.push_str(&serde_json::to_string(&outcome).expect("JSON"));
    out.push_str(&sarif::render(&outcome).to_string());
    out
}

/// YAML double-quoted scalar.
fn yq(s: &str) -> String {
    serde_json::to_string(s).expect("JSON string")
}

fn documents(pw: &str, secret: &str) -> Vec<String> {
    let enc: String = pw
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let uri = format!("postgres://app:{enc}@db/app?sslmode=require");
    vec![
        // A Secret in the input, read by a workload: stringData and base64 data.
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: db}}\nstringData:\n  url: {}\n  whole: {}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers:\n  - name: c\n    env:\n    - name: DATABASE_URL\n      valueFrom: {{secretKeyRef: {{name: db, key: url}}}}\n    - name: PGSSLMODE\n      valueFrom: {{secretKeyRef: {{name: db, key: whole}}}}\n    - name: PGHOST\n      valueFrom: {{secretKeyRef: {{name: db, key: whole}}}}\n",
            yq(&uri),
            yq(secret)
        ),
        // Literal connection strings.
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers:\n  - name: c\n    env:\n    - {{name: DATABASE_URL, value: {}}}\n    - {{name: DSN, value: {}}}\n    - {{name: PGPASSWORD, value: {}}}\n",
            yq(&uri),
            yq(&format!(
                "host=db password='{}' sslmode=prefer",
                pw.replace('\\', "\\\\").replace('\'', "\\'")
            )),
            yq(pw)
        ),
        // Documents the API server would reject, with the secret next to the error.
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  hostNetwork: {}\n  containers: []\n",
            yq(secret)
        ),
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, labels: {{a: {}}}}}\nspec:\n  containers:\n  - name: c\n    env:\n    - {{name: PGPASSWORD, value: [{}}}\n",
            yq(secret),
            yq(pw)
        ),
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: x}}\ndata:\n  k: {}\n",
            yq(secret)
        ),
        format!(
            "{{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"spec\": {{\"containers\": [{{\"name\": \"c\", \"env\": [{{\"name\": {}, \"value\": 1}}]}}]}}}}",
            yq(secret)
        ),
        format!(
            "apiVersion: v1\nkind: Pod\nspec: {}\n  bad: indent\n",
            yq(secret)
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn cli_output_never_contains_a_secret(
        pw in "[A-Za-z0-9@:/?&=%+ '#!$.,;-]{12,24}",
        secret in "[A-Za-z0-9+/=_-]{12,32}",
    ) {
        for doc in documents(&pw, &secret) {
            let out = outputs(&doc);
            prop_assert!(!out.contains(&pw), "password leaked for {doc}:\n{out}");
            prop_assert!(!out.contains(&secret), "secret leaked for {doc}:\n{out}");
        }
    }

    /// A secret written unquoted, so that YAML or JSON reads it as another type: every
    /// message names the type and the position, never the scalar.
    #[test]
    fn mistyped_secrets_never_appear_in_errors(
        digits in "[1-9][0-9]{11,19}",
        shape in 0usize..7,
        field in 0usize..3,
    ) {
        let scalar = match shape {
            0 => digits.clone(),
            1 => format!("-{digits}"),
            2 => format!("{digits}.5"),
            3 => format!("{digits}e3"),
            4 => format!("0x{digits}"),
            5 => format!("0o{}", digits.replace(['8', '9'], "7")),
            _ => format!("+{digits}"),
        };
        let secret = scalar.trim_start_matches(['+', '-']).trim_start_matches("0x").trim_start_matches("0o");
        let place = match field {
            0 => format!("    env:\n    - name: PGPASSWORD\n      value: {scalar}\n"),
            1 => format!("    env:\n    - {{name: DATABASE_URL, value: {scalar}}}\n"),
            _ => format!("    env:\n    - name: PGHOST\n      value: {scalar}\n"),
        };
        let yaml = format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers:\n  - name: c\n{place}");
        let json = format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "spec": {{"containers": [{{"name": "c", "env": [{{"name": "PGPASSWORD", "value": {}}}]}}]}}}}"#,
            if shape == 4 || shape == 5 || shape == 6 { digits.clone() } else { scalar.clone() }
        );
        for doc in [yaml, json] {
            let (_, errors) = input::parse(&Source::Stdin, &doc);
            prop_assert_eq!(errors.len(), 1, "{}", doc);
            let e = &errors[0];
            prop_assert!(e.line.is_some() && e.column.is_some(), "{:?}", e);
            prop_assert!(e.message.contains("env[0].value"), "{}", e.message);
            prop_assert!(
                ["integer", "number", "floating point"].iter().any(|t| e.message.contains(t)),
                "{}", e.message
            );
            let out = outputs(&doc);
            prop_assert!(!out.contains(&digits[..12]), "leaked:\n{}", out);
            prop_assert!(!out.contains(secret), "leaked:\n{}", out);
        }
    }

    #[test]
    fn cli_parsing_never_panics(text in "(apiVersion: v1\nkind: Pod\n|---\n|spec:\n|  containers:\n|  - name: c\n|    env:\n|[ -~]{0,20}\n){0,12}") {
        let _ = outputs(&text);
    }
}

#[test]
fn binary_output_and_stderr_never_contain_the_password() {
    let pw = "Sup3r-Secret+Pass/word";
    for doc in documents(pw, "c2VjcmV0LXZhbHVlLTEyMzQ1") {
        for format in ["human", "json"] {
            let mut child = Command::new(env!("CARGO_BIN_EXE_verifyfull"))
                .args(["check", "--output", format, "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(doc.as_bytes())
                .expect("write");
            let out = child.wait_with_output().expect("wait");
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!all.contains(pw), "{format}: {all}");
            assert!(!all.contains("c2VjcmV0LXZhbHVlLTEyMzQ1"), "{format}: {all}");
            assert!(!all.contains("secret-value-12345"), "{format}: {all}");
        }
    }
}
