//! Strict schema validation of rendered objects with `kubernetes-validate --strict`, which
//! checks them against the bundled OpenAPI schemas of a Kubernetes release and, unlike
//! the `k8s-openapi` types, rejects fields the API does not know.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// `KUBERNETES_VALIDATE`, else `.ci/validate.d/venv/bin/kubernetes-validate` (what
/// `.ci/tools` installs).
fn tool() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("KUBERNETES_VALIDATE").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.ci/validate.d/venv/bin/kubernetes-validate");
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "{} is missing: run .ci/tools (or set KUBERNETES_VALIDATE)",
            p.display()
        ))
    }
}

/// A custom resource: its group has a dot and is not Kubernetes' own (`*.k8s.io`). The tool
/// has no schema for these and would only warn and pass; decided here, by apiVersion, so
/// that a built-in kind the tool cannot find (say a removed apiVersion) still fails.
fn is_custom(doc: &Value) -> bool {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    match api_version.split_once('/') {
        Some((group, _)) => group.contains('.') && !group.ends_with(".k8s.io"),
        None => false,
    }
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("?")
}

/// `Kind/name`, for messages.
fn describe(doc: &Value) -> String {
    format!(
        "{}/{}",
        str_of(&doc["kind"]),
        str_of(&doc["metadata"]["name"])
    )
}

/// A scratch directory, removed when dropped (also on an early return).
#[derive(Debug)]
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `kubernetes-validate --strict -k <version>` on every doc for each version. Custom
/// resources (see `is_custom`) are not sent; they come back as `Ok` with one
/// `"Kind/name (apiVersion)"` each, for the caller to check. `Err` names the docs, the
/// version and the tool's output.
pub fn validate_strict(
    label: &str,
    docs: &[Value],
    versions: &[&str],
) -> Result<Vec<String>, String> {
    let tool = tool()?;
    let (custom, builtin): (Vec<&Value>, Vec<&Value>) = docs.iter().partition(|d| is_custom(d));
    let skipped = custom
        .iter()
        .map(|d| format!("{} ({})", describe(d), str_of(&d["apiVersion"])))
        .collect();

    // Unique per call: the tests run on parallel threads of one process.
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let dir = Scratch(std::env::temp_dir().join(format!(
        "verifyfull-kv-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )));
    std::fs::create_dir_all(&dir.0).map_err(|e| format!("{}: {e}", dir.0.display()))?;
    // One file per doc (JSON is YAML), named so the tool's output points at the doc.
    let mut files = Vec::new();
    for (i, d) in builtin.iter().enumerate() {
        let name = format!("{i:02}-{}.json", describe(d).replace(['/', ' '], "_"));
        let path = dir.0.join(name);
        let json = serde_json::to_vec_pretty(d).map_err(|e| format!("{}: {e}", describe(d)))?;
        std::fs::write(&path, json).map_err(|e| format!("{}: {e}", path.display()))?;
        files.push((path, describe(d)));
    }
    if files.is_empty() {
        return Ok(skipped);
    }

    for version in versions {
        let out = Command::new(&tool)
            .args(["--strict", "-k", *version])
            .args(files.iter().map(|(p, _)| p))
            .env("PYTHONUTF8", "1") // the docs are UTF-8 whatever the locale
            .output()
            .map_err(|e| format!("{}: {e} (run .ci/tools)", tool.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        // Every file must say `INFO <file> passed ...` and nothing else: the tool exits 0
        // on a missing schema (WARN) and skips empty docs, so the exit code alone is not enough.
        let unpassed: Vec<&str> = files
            .iter()
            .filter(|(p, _)| {
                let p = p.display().to_string();
                let mut lines = stdout.lines().filter(|l| l.contains(&p));
                let passed = format!("INFO {p} passed");
                !matches!((lines.next(), lines.next()), (Some(l), None) if l.starts_with(&passed))
            })
            .map(|(_, d)| d.as_str())
            .collect();
        if !out.status.success() || !unpassed.is_empty() {
            let what = if unpassed.is_empty() {
                "the run".to_owned()
            } else {
                unpassed.join(", ")
            };
            // The tool's own words, less the passes.
            let said: String = stdout
                .lines()
                .filter(|l| !l.starts_with("INFO "))
                .map(|l| format!("{l}\n"))
                .collect();
            return Err(format!(
                "{label}: kubernetes-validate --strict -k {version} ({}) failed for {what}:\n{said}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
            ));
        }
    }
    Ok(skipped)
}
