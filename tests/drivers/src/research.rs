//! The drivers the lab cannot run (`research.yaml`): what each does with a setting, from
//! its source, and the Pod the engine judges for it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub driver: String,
    /// The source file and function (or documentation) the behaviour was read in.
    pub source: String,
    pub env: BTreeMap<String, String>,
    /// What the driver does: verified, refuses all, chain only, unverified, plaintext.
    pub does: String,
    /// The engine's verdict: `pass` or its codes, comma-separated.
    pub engine: String,
}

impl Rule {
    /// A Pod whose one container has exactly this environment.
    pub fn pod(&self) -> Value {
        let env: Vec<Value> = self
            .env
            .iter()
            .map(|(n, v)| json!({"name": n, "value": v}))
            .collect();
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "research", "namespace": "lab"},
            "spec": {"containers": [{"name": "app", "image": "app", "env": env}]}})
    }

    /// The driver's behaviour is safe to pass: it verified, or refused everything.
    pub fn safe(&self) -> bool {
        matches!(self.does.as_str(), "verified" | "refuses all")
    }
}

pub fn load(path: &Path) -> Result<Vec<Rule>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let rules: Vec<Rule> =
        serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    const CLASSES: [&str; 5] = [
        "verified",
        "refuses all",
        "chain only",
        "unverified",
        "plaintext",
    ];
    for r in &rules {
        if !CLASSES.contains(&r.does.as_str()) {
            return Err(format!(
                "{}: {}: unknown behaviour {:?}",
                path.display(),
                r.driver,
                r.does
            ));
        }
        if r.source.is_empty() {
            return Err(format!(
                "{}: {}: every rule names its source",
                path.display(),
                r.driver
            ));
        }
    }
    Ok(rules)
}
