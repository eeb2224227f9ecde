//! The real-world corpus (copied from `shared/corpus/real`, attribution in SOURCES.tsv):
//! every file goes through the CLI without a panic, and the verdict of every PostgreSQL
//! client container is pinned in EXPECTED.tsv with a one-line reason.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// `verifyfull check --output json` at a fixed instant over `path`.
fn check(path: &Path) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_verifyfull"))
        .args(["check", "--output", "json", "--now", "2026-06-01T00:00:00Z"])
        .arg(path)
        .output()
        .expect("run verifyfull");
    let code = out.status.code().expect("exited, not killed by a signal");
    let json = serde_json::from_slice(&out.stdout).expect("JSON output");
    (code, json)
}

#[test]
fn every_file_is_handled_without_a_panic() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus())
        .expect("corpus")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 52, "the corpus has 52 manifests");
    for f in &files {
        let (code, json) = check(f);
        let path = f.display();
        assert!(matches!(code, 0 | 1), "{path}: exit {code}: {json}");
        assert_eq!(json["errors"], serde_json::json!([]), "{path}");
    }
}

#[test]
fn client_verdicts_are_pinned() {
    let dir = corpus();
    let (code, json) = check(&dir);
    assert_eq!(code, 1, "the corpus has violations");
    assert_eq!(json["errors"], serde_json::json!([]));

    let mut actual = BTreeSet::new();
    for o in json["objects"].as_array().expect("objects") {
        let file = o["source"]
            .as_str()
            .expect("source")
            .rsplit('/')
            .next()
            .expect("name")
            .to_string();
        for c in o["containers"].as_array().expect("containers") {
            let findings = c["findings"].as_array().expect("findings");
            if !c["client"].as_bool().expect("client") && findings.is_empty() {
                continue;
            }
            let mut codes: Vec<&str> = findings
                .iter()
                .map(|f| f["code"].as_str().expect("code"))
                .collect();
            codes.sort();
            let codes = if codes.is_empty() {
                "-".to_string()
            } else {
                codes.join(",")
            };
            actual.insert((
                file.clone(),
                o["document"].to_string(),
                c["name"].as_str().expect("name").to_string(),
                c["verdict"].as_str().expect("verdict").to_string(),
                codes,
            ));
        }
    }

    let expected_text = std::fs::read_to_string(dir.join("EXPECTED.tsv")).expect("EXPECTED.tsv");
    let mut expected = BTreeSet::new();
    for line in expected_text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 6, "EXPECTED.tsv row needs 6 columns: {line}");
        assert!(
            !cols[5].trim().is_empty(),
            "every pinned verdict has a reason: {line}"
        );
        expected.insert((
            cols[0].to_string(),
            cols[1].to_string(),
            cols[2].to_string(),
            cols[3].to_string(),
            cols[4].to_string(),
        ));
    }
    let missing: Vec<_> = expected.difference(&actual).collect();
    let unexpected: Vec<_> = actual.difference(&expected).collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "expected but not produced: {missing:#?}\nproduced but not expected: {unexpected:#?}"
    );
}
