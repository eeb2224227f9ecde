//! `verifyfull check --output sarif`: SARIF 2.1.0, the format code-scanning services read
//! (GitHub's among them). One rule per finding code, with what it means; one result per
//! finding, at the line and column of the variable's `env` entry (or its `command`/`args`
//! element) in the source; findings an exemption covers carry the exemption as an in-source
//! suppression; inputs that could not be read are tool execution notifications.

use serde_json::{Value, json};

use crate::check::{FindingOut, ObjectOut, Outcome};
use crate::input::InputError;
use crate::locate::Position;

/// The SARIF log for `outcome`.
pub fn render(outcome: &Outcome) -> Value {
    let rules: Vec<Value> = policy::Code::ALL.iter().map(|c| rule(*c)).collect();
    let mut results = Vec::new();
    for o in &outcome.objects {
        for f in &o.findings {
            results.push(result(o, None, f, None));
        }
        for c in &o.containers {
            let exempt = (c.verdict == policy::Verdict::Exempt)
                .then(|| o.exemption.as_ref().map(|e| e.reason.as_str()))
                .flatten();
            for f in &c.findings {
                results.push(result(o, Some(&c.name), f, exempt));
            }
        }
    }
    let notifications: Vec<Value> = outcome.errors.iter().map(notification).collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "verifyfull",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": env!("CARGO_PKG_REPOSITORY"),
                "rules": rules,
            }},
            "invocations": [{
                "executionSuccessful": outcome.errors.is_empty(),
                "toolExecutionNotifications": notifications,
            }],
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    })
}

fn rule(code: policy::Code) -> Value {
    let level = match code {
        policy::Code::Unresolved | policy::Code::Unverifiable => "warning",
        _ => "error",
    };
    json!({
        "id": code.as_str(),
        "name": code.as_str(),
        "shortDescription": {"text": code.meaning()},
        "help": {
            "text": format!("{}. How verifyfull reaches this verdict, and how to fix it: docs/rules.md in verifyfull's repository.", code.meaning()),
        },
        "defaultConfiguration": {"level": level},
    })
}

fn result(o: &ObjectOut, container: Option<&str>, f: &FindingOut, exempt: Option<&str>) -> Value {
    let level = match f.severity {
        policy::Severity::Deny => "error",
        policy::Severity::Warn => "warning",
        policy::Severity::Allow => "note",
    };
    let object = format!(
        "{} {}{}",
        o.kind,
        o.namespace
            .as_deref()
            .map_or(String::new(), |n| format!("{n}/")),
        o.name.as_deref().unwrap_or("(unnamed)"),
    );
    let at = o
        .spans
        .as_ref()
        .and_then(|s| s.find(container, f.variable.as_deref()));
    let mut logical = object.clone();
    if let Some(c) = container {
        logical = format!("{logical}/{c}");
    }
    let mut r = json!({
        "ruleId": f.code.as_str(),
        "ruleIndex": policy::Code::ALL.iter().position(|c| *c == f.code),
        "level": level,
        "message": {"text": format!("{object}: {}", f.message)},
        "locations": [{
            "physicalLocation": physical(&o.source, at),
            "logicalLocations": [{"fullyQualifiedName": logical, "kind": "object"}],
        }],
    });
    if let Some(reason) = exempt {
        r["suppressions"] = json!([{"kind": "inSource", "justification": reason}]);
    }
    r
}

fn notification(e: &InputError) -> Value {
    // serde_json counts a column 0 at the end of input; SARIF's columns start at 1.
    let at = e.line.map(|line| Position {
        line: line.max(1),
        column: e.column.unwrap_or(1).max(1),
    });
    json!({
        "level": "error",
        "message": {"text": e.message},
        "locations": [{"physicalLocation": physical(&e.source, at)}],
    })
}

fn physical(source: &str, at: Option<Position>) -> Value {
    let mut p = json!({"artifactLocation": {"uri": uri(source)}});
    if let Some(at) = at {
        p["region"] = json!({"startLine": at.line, "startColumn": at.column});
    }
    p
}

/// A path as a URI reference: relative (without a leading `./`) as given, `file://` when
/// absolute; `/` separators, and the characters a URI does not allow percent-encoded.
fn uri(path: &str) -> String {
    let path = path.replace('\\', "/");
    let path = path.trim_start_matches("./");
    let mut out = String::with_capacity(path.len() + 7);
    if path.starts_with('/') {
        out.push_str("file://");
    }
    for b in path.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(char::from(b))
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
