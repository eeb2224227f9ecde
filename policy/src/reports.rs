//! Policy reports (docs/reports.md): the engine's verdicts in the shape Policy Reporter,
//! Kyverno's tooling and dashboards read — `openreports.io/v1alpha1` `Report`, or its
//! predecessor `wgpolicyk8s.io/v1alpha2` `PolicyReport`. One result per (workload,
//! container, finding code), `pass` for a PostgreSQL client with no finding, `skip` for
//! what an exemption covers; messages are the findings' own (no secret in them). Pure:
//! the caller says when, and hands in the previous reports so that an unchanged result
//! keeps its timestamp.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::verdict::{ContainerReport, Report, Severity, Verdict};

/// The report API to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ReportApi {
    /// `openreports.io/v1alpha1` `Report`.
    #[cfg_attr(feature = "clap", value(name = "openreports"))]
    OpenReports,
    /// `wgpolicyk8s.io/v1alpha2` `PolicyReport`.
    Wgpolicyk8s,
}

impl ReportApi {
    /// `apiVersion` and `kind`.
    pub fn type_meta(self) -> (&'static str, &'static str) {
        match self {
            ReportApi::OpenReports => ("openreports.io/v1alpha1", "Report"),
            ReportApi::Wgpolicyk8s => ("wgpolicyk8s.io/v1alpha2", "PolicyReport"),
        }
    }
}

/// A report's name in its namespace: `verifyfull`, then `verifyfull-2`, … when split.
pub const NAME: &str = "verifyfull";
/// The `policy` of every result.
pub const POLICY: &str = "verifyfull";
/// A report's results are split so that no object is larger than this (the API server
/// refuses requests over 1.5 MiB; etcd's default value limit is the same).
pub const MAX_REPORT_BYTES: usize = 1024 * 1024;

/// The workload a result is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Resource {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`, when known (not for manifests).
    pub uid: Option<String>,
}

/// One result: what a container's settings make of one finding code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The workload.
    pub resource: Resource,
    /// The container.
    pub container: String,
    /// The finding code (`rule`); `None` for a pass.
    pub rule: Option<&'static str>,
    /// `fail`, `warn`, `pass` or `skip`.
    pub result: &'static str,
    /// What the finding says (every finding of the code, joined).
    pub message: String,
    /// `container`, `variable`, `source` and, when known, `mode`.
    pub properties: BTreeMap<String, String>,
}

/// The rows of one judged workload. `mode` is its namespace's admission mode, if known.
pub fn rows(resource: &Resource, report: &Report<'_>, mode: Option<&str>) -> Vec<Row> {
    let mut out = Vec::new();
    for c in &report.containers {
        out.extend(container_rows(resource, c, mode));
    }
    out
}

fn container_rows(resource: &Resource, c: &ContainerReport<'_>, mode: Option<&str>) -> Vec<Row> {
    let exempt = c.verdict() == Verdict::Exempt;
    let mut by_code: BTreeMap<&'static str, Row> = BTreeMap::new();
    for f in &c.findings {
        let result = match f.severity {
            _ if exempt => "skip",
            Severity::Deny => "fail",
            Severity::Warn => "warn",
            Severity::Allow => "pass",
        };
        let rule = f.code.as_str();
        let row = by_code.entry(rule).or_insert_with(|| Row {
            resource: resource.clone(),
            container: c.name.to_string(),
            rule: Some(rule),
            result,
            message: String::new(),
            properties: properties(c.name, mode),
        });
        if !row.message.is_empty() {
            row.message.push_str("; ");
        }
        row.message.push_str(&f.message(Some(c.name)));
        if let Some(v) = &f.variable {
            row.properties
                .entry("variable".into())
                .or_insert_with(|| v.to_string());
        }
        if let Some(o) = &f.origin {
            row.properties
                .entry("source".into())
                .or_insert_with(|| o.to_string());
        }
    }
    if by_code.is_empty() && c.client {
        return vec![Row {
            resource: resource.clone(),
            container: c.name.to_string(),
            rule: None,
            result: "pass",
            message: format!("container {}: every target verifies the server", c.name),
            properties: properties(c.name, mode),
        }];
    }
    by_code.into_values().collect()
}

fn properties(container: &str, mode: Option<&str>) -> BTreeMap<String, String> {
    let mut p = BTreeMap::from([("container".to_string(), container.to_string())]);
    if let Some(m) = mode {
        p.insert("mode".into(), m.to_string());
    }
    p
}

/// The reports of one namespace: `rows` sorted and split so that none is over
/// [`MAX_REPORT_BYTES`]. A result keeps the timestamp it had in `previous` (reports this
/// function made before) while its outcome is the same; a new or changed one gets `now`.
pub fn namespace_reports(
    api: ReportApi,
    namespace: &str,
    mut rows: Vec<Row>,
    now: jiff::Timestamp,
    previous: &[Value],
) -> Vec<Value> {
    rows.sort_by(|a, b| {
        (&a.resource, &a.container, a.rule).cmp(&(&b.resource, &b.container, b.rule))
    });
    let kept = previous_timestamps(previous);
    let results: Vec<Value> = rows.iter().map(|r| result(r, &kept, now)).collect();
    let (api_version, kind) = api.type_meta();
    let mut reports = Vec::new();
    let mut part: Vec<Value> = Vec::new();
    let mut size = 0;
    for r in results {
        let len = r.to_string().len() + 1;
        if !part.is_empty() && size + len > MAX_REPORT_BYTES - 4096 {
            reports.push(std::mem::take(&mut part));
            size = 0;
        }
        size += len;
        part.push(r);
    }
    reports.push(part);
    (reports.into_iter().enumerate())
        .map(|(i, results)| {
            let name = if i == 0 {
                NAME.to_string()
            } else {
                format!("{NAME}-{}", i + 1)
            };
            json!({
                "apiVersion": api_version,
                "kind": kind,
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": {"app.kubernetes.io/managed-by": "verifyfull"},
                },
                "summary": summary(&results),
                "results": results,
            })
        })
        .collect()
}

/// The identity of a result: what must be equal for its timestamp to carry over.
fn identity(r: &Value) -> Value {
    json!([
        r["resources"],
        r["rule"],
        r["result"],
        r["message"],
        r["properties"]
    ])
}

fn previous_timestamps(previous: &[Value]) -> BTreeMap<String, Value> {
    (previous.iter())
        .flat_map(|p| p["results"].as_array().into_iter().flatten())
        .map(|r| (identity(r).to_string(), r["timestamp"].clone()))
        .collect()
}

fn result(r: &Row, kept: &BTreeMap<String, Value>, now: jiff::Timestamp) -> Value {
    let mut resource = json!({
        "apiVersion": r.resource.api_version,
        "kind": r.resource.kind,
        "namespace": r.resource.namespace,
        "name": r.resource.name,
    });
    if let Some(uid) = &r.resource.uid {
        resource["uid"] = json!(uid);
    }
    let severity = match r.result {
        "fail" => "high",
        "warn" => "medium",
        _ => "info",
    };
    let mut v = json!({
        "source": POLICY,
        "policy": POLICY,
        "rule": r.rule.unwrap_or("VerifyFull"),
        "result": r.result,
        "severity": severity,
        "scored": true,
        "message": r.message,
        "resources": [resource],
        "properties": r.properties,
    });
    let timestamp = kept.get(&identity(&v).to_string()).cloned();
    v["timestamp"] = timestamp
        .unwrap_or_else(|| json!({"seconds": now.as_second(), "nanos": now.subsec_nanosecond()}));
    v
}

fn summary(results: &[Value]) -> Value {
    let count = |what: &str| results.iter().filter(|r| r["result"] == what).count();
    json!({
        "pass": count("pass"),
        "fail": count("fail"),
        "warn": count("warn"),
        "error": 0,
        "skip": count("skip"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Context, NoSources, Object, Settings};

    fn judged(yaml_env: serde_json::Value, annotations: serde_json::Value) -> Vec<Row> {
        let pod = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "annotations": annotations},
            "spec": {"containers": [
                {"name": "app", "env": yaml_env},
                {"name": "sidecar", "env": []}
            ]}
        });
        let Ok(Object::Workload(w)) = serde_json::from_value::<Object>(pod) else {
            panic!("a Pod")
        };
        let settings = Settings::default();
        let ctx = Context {
            settings: &settings,
            sources: &NoSources,
            now: jiff::Timestamp::UNIX_EPOCH,
        };
        let report = crate::judge(w.view(), &ctx);
        let resource = Resource {
            api_version: "v1".into(),
            kind: "Pod".into(),
            namespace: "ns".into(),
            name: "p".into(),
            uid: Some("u-1".into()),
        };
        rows(&resource, &report, Some("enforce"))
    }

    fn env(pairs: &[(&str, &str)]) -> serde_json::Value {
        pairs
            .iter()
            .map(|(n, v)| serde_json::json!({"name": n, "value": v}))
            .collect()
    }

    /// A Pod whose client uses sslmode=require.
    fn weak() -> Vec<Row> {
        judged(
            env(&[("PGHOST", "db.example.net"), ("PGSSLMODE", "require")]),
            serde_json::json!({}),
        )
    }

    /// A Pod whose client verifies the server.
    fn verified() -> Vec<Row> {
        judged(
            env(&[
                ("PGHOST", "db.example.net"),
                ("PGSSLMODE", "verify-full"),
                ("PGSSLROOTCERT", "/ca.crt"),
            ]),
            serde_json::json!({}),
        )
    }

    #[test]
    fn one_result_per_container_and_code_pass_for_clients_skip_when_exempt() {
        let weak = weak();
        assert_eq!(weak.len(), 1, "the sidecar is not a client: {weak:?}");
        assert_eq!(
            (weak[0].rule, weak[0].result),
            (Some("SslModeTooWeak"), "fail")
        );
        assert_eq!(weak[0].properties["variable"], "PGHOST");
        assert_eq!(weak[0].properties["mode"], "enforce");
        let good = verified();
        assert_eq!((good[0].rule, good[0].result), (None, "pass"));
        let exempt = judged(
            env(&[("PGHOST", "db.example.net"), ("PGSSLMODE", "require")]),
            serde_json::json!({"verifyfull.dev/exempt": "true", "verifyfull.dev/exempt-reason": "vendor"}),
        );
        assert_eq!(exempt[0].result, "skip");
    }

    #[test]
    fn a_result_keeps_its_timestamp_until_its_outcome_changes() {
        let weak = weak();
        let t0 = jiff::Timestamp::from_second(1_000).expect("instant");
        let t1 = jiff::Timestamp::from_second(2_000).expect("instant");
        let first = namespace_reports(ReportApi::OpenReports, "ns", weak.clone(), t0, &[]);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0]["apiVersion"], "openreports.io/v1alpha1");
        assert_eq!(first[0]["summary"]["fail"], 1);
        let again = namespace_reports(ReportApi::OpenReports, "ns", weak, t1, &first);
        assert_eq!(
            again, first,
            "nothing changed: the same object, old timestamp"
        );
        let fixed = verified();
        let after = namespace_reports(ReportApi::Wgpolicyk8s, "ns", fixed, t1, &first);
        assert_eq!(after[0]["kind"], "PolicyReport");
        assert_eq!(after[0]["results"][0]["timestamp"]["seconds"], 2_000);
    }

    #[test]
    fn a_namespace_over_the_size_is_split() {
        let weak = weak();
        let rows: Vec<Row> = (0..5_000)
            .map(|i| {
                let mut r = weak[0].clone();
                r.resource.name = format!("p{i:05}");
                r
            })
            .collect();
        let reports = namespace_reports(
            ReportApi::OpenReports,
            "ns",
            rows,
            jiff::Timestamp::UNIX_EPOCH,
            &[],
        );
        assert!(reports.len() > 1, "5,000 results of ~500 bytes");
        let names: Vec<&str> = reports
            .iter()
            .map(|r| r["metadata"]["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names[..2], ["verifyfull", "verifyfull-2"]);
        let total: u64 = reports
            .iter()
            .map(|r| r["summary"]["fail"].as_u64().expect("count"))
            .sum();
        assert_eq!(total, 5_000);
        for r in &reports {
            assert!(
                r.to_string().len() <= MAX_REPORT_BYTES,
                "{}",
                r.to_string().len()
            );
        }
    }
}
