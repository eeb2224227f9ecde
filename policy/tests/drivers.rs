//! The drivers the lab cannot run (docs/drivers.md): for each case of
//! tests/drivers/research.yaml, the engine's verdict is the one pinned there, and the
//! engine never passes a setting its driver does not verify.

use std::collections::BTreeMap;

use policy::{Context, Object, Settings};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    driver: String,
    source: String,
    env: BTreeMap<String, String>,
    does: String,
    engine: String,
}

fn verdict(env: &BTreeMap<String, String>) -> String {
    let env: Vec<Value> = env
        .iter()
        .map(|(n, v)| json!({"name": n, "value": v}))
        .collect();
    let object = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"},
        "spec": {"containers": [{"name": "app", "env": env}]}});
    let Ok(Object::Workload(w)) = serde_json::from_value::<Object>(object) else {
        panic!("the case's Pod does not decode");
    };
    let settings = Settings::default();
    let ctx = Context {
        settings: &settings,
        sources: &policy::NoSources,
        now: jiff::Timestamp::UNIX_EPOCH,
    };
    let report = policy::evaluate(w.view(), &ctx);
    let mut codes: Vec<&str> = report
        .container_findings()
        .map(|(_, f)| f.code.as_str())
        .collect();
    codes.sort();
    codes.dedup();
    if codes.is_empty() {
        "pass".into()
    } else {
        codes.join(",")
    }
}

#[test]
fn the_research_rules_hold() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/drivers/research.yaml"
    );
    let text = std::fs::read_to_string(path).expect("research.yaml");
    let cases: Vec<Case> = serde_saphyr::from_str(&text).expect("research.yaml parses");
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut wrong = Vec::new();
    for c in &cases {
        assert!(!c.source.is_empty(), "every rule names its source: {c:?}");
        let got = verdict(&c.env);
        if got != c.engine {
            wrong.push(format!(
                "{} {:?}: engine says {got}, pinned {}",
                c.driver, c.env, c.engine
            ));
        }
        let safe = matches!(c.does.as_str(), "verified" | "refuses all");
        // A Unix socket is no network target: no TLS applies, nothing to judge.
        let socket = c.env.values().any(|v| v.contains("Host=/"));
        if got == "pass" && !safe && !socket {
            wrong.push(format!("FALSE PASS: {} {:?} ({})", c.driver, c.env, c.does));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
