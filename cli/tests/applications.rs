//! Every bundled application profile against manifests shaped as its official Helm chart
//! renders it (each file cites the chart's templates): `<id>-compliant` passes,
//! `<id>-weak` is denied and `<id>-unresolved` warns `Unresolved`, each finding naming
//! the application — except where the application itself makes that impossible, pinned
//! below with the reason.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (object, verdict, why it is not the rule's).
const EXCEPTIONS: &[(&str, &str, &str)] = &[
    (
        "authentik-compliant",
        "warning",
        "the chart always loads its own Secret with envFrom; it may set AUTHENTIK_POSTGRESQL__CONN_OPTIONS over the visible settings",
    ),
    (
        "authentik-unresolved",
        "pass",
        "every database setting is in the chart's Secret (envFrom): nothing visible names authentik",
    ),
    (
        "gitlab-weak",
        "warning",
        "the host is only in database.yml, never in the environment: it may be loopback, so a weak mode is Unresolved",
    ),
    (
        "kong-compliant",
        "violation",
        "Kong's pgmoon never checks the server's name: no setting of Kong verifies it",
    ),
];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/applications")
}

#[test]
fn every_profile_has_its_chart_shaped_manifests_and_verdicts() {
    let out = Command::new(env!("CARGO_BIN_EXE_verifyfull"))
        .args(["check", "--output", "json", "--now", "2026-06-01T00:00:00Z"])
        .arg(dir())
        .output()
        .expect("run verifyfull");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(json["errors"], serde_json::json!([]));
    let mut seen = Vec::new();
    for o in json["objects"].as_array().expect("objects") {
        let name = o["name"].as_str().expect("name");
        let (id, kind) = name.rsplit_once('-').expect("<id>-<kind>");
        let file = o["source"].as_str().expect("source");
        assert!(file.ends_with(&format!("/{id}.yaml")), "{name} in {file}");
        let app = policy::profiles::bundled()
            .iter()
            .find(|p| p.id == id)
            .unwrap_or_else(|| panic!("{name}: no bundled profile {id}"))
            .application
            .as_str();
        let findings: Vec<&serde_json::Value> = o["containers"]
            .as_array()
            .expect("containers")
            .iter()
            .flat_map(|c| c["findings"].as_array().expect("findings"))
            .collect();
        let verdict = o["verdict"].as_str().expect("verdict");
        let clients = o["containers"]
            .as_array()
            .expect("containers")
            .iter()
            .any(|c| c["client"] == true);
        let exception = EXCEPTIONS.iter().find(|(n, _, _)| *n == name);
        let expected = match (exception, kind) {
            (Some((_, v, _)), _) => *v,
            (None, "compliant") => "pass",
            (None, "weak") => "violation",
            (None, "unresolved") => "warning",
            _ => panic!("{name}: not <id>-compliant/-weak/-unresolved"),
        };
        assert_eq!(verdict, expected, "{name}: {o:#}");
        if exception.is_none() {
            assert!(clients, "{name} is recognised as a PostgreSQL client");
            let named = |f: &&serde_json::Value| {
                f["application"] == app && f["message"].as_str().is_some_and(|m| m.contains(app))
            };
            match kind {
                "weak" => assert!(
                    findings.iter().any(|f| f["severity"] == "deny" && named(f)),
                    "{name}: a denial naming {app}: {o:#}"
                ),
                "unresolved" => assert!(
                    findings
                        .iter()
                        .any(|f| f["code"] == "Unresolved" && named(f)),
                    "{name}: Unresolved naming {app}: {o:#}"
                ),
                _ => {}
            }
        }
        seen.push(name.to_string());
    }
    for p in policy::profiles::bundled() {
        for kind in ["compliant", "weak", "unresolved"] {
            let name = format!("{}-{kind}", p.id);
            assert!(seen.contains(&name), "{name} is missing");
        }
    }
    assert_eq!(seen.len(), 3 * policy::profiles::bundled().len());
}
