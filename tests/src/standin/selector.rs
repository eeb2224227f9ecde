//! Label and field selectors: the query-string forms and the `LabelSelector` object.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector {
    reqs: Vec<Req>,
    /// Field selectors compare values at dotted paths; label selectors look up labels.
    fields: bool,
}

impl Selector {
    /// Parses `a=b,c!=d,e in (x,y),f notin (z),g,!h` as the API server does.
    pub fn labels(s: &str) -> Result<Selector, String> {
        parse(s, false)
    }

    /// Parses `metadata.name=x,status.phase!=Running`.
    pub fn fields(s: &str) -> Result<Selector, String> {
        parse(s, true)
    }

    /// A `metav1.LabelSelector` object (`matchLabels`, `matchExpressions`).
    pub fn from_object(v: &Value) -> Result<Selector, String> {
        let mut reqs = Vec::new();
        if let Some(m) = v.get("matchLabels").and_then(Value::as_object) {
            for (k, val) in m {
                reqs.push(Req::Eq(k.clone(), val.as_str().unwrap_or_default().into()));
            }
        }
        if let Some(exprs) = v.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e["key"].as_str().unwrap_or_default().to_string();
                let values = super::resources::strings(&e["values"]);
                reqs.push(match e["operator"].as_str().unwrap_or_default() {
                    "In" => Req::In(key, values),
                    "NotIn" => Req::NotIn(key, values),
                    "Exists" => Req::Exists(key),
                    "DoesNotExist" => Req::NotExists(key),
                    other => return Err(format!("{other:?} is not a valid selector operator")),
                });
            }
        }
        Ok(Selector {
            reqs,
            fields: false,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Whether `obj` (a whole object) matches.
    pub fn matches(&self, obj: &Value) -> bool {
        if self.fields {
            self.matches_with(|k| field(obj, k))
        } else {
            let labels = &obj["metadata"]["labels"];
            self.matches_with(|k| labels.get(k).and_then(Value::as_str).map(str::to_string))
        }
    }

    /// Whether a bare label map matches.
    pub fn matches_labels(&self, labels: &Value) -> bool {
        self.matches_with(|k| labels.get(k).and_then(Value::as_str).map(str::to_string))
    }

    fn matches_with(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.reqs.iter().all(|r| match r {
            Req::Eq(k, v) => get(k).as_deref() == Some(v.as_str()),
            Req::NotEq(k, v) => get(k).as_deref() != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.contains(&x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.contains(&x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }
}

/// A field selector's value: strings as they are, numbers and booleans as text.
fn field(obj: &Value, path: &str) -> Option<String> {
    let mut v = obj;
    for part in path.split('.') {
        v = v.get(part)?;
    }
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn parse(s: &str, fields: bool) -> Result<Selector, String> {
    let mut reqs = Vec::new();
    for part in split_top(s) {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        reqs.push(parse_one(part, fields)?);
    }
    Ok(Selector { reqs, fields })
}

/// Splits on commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_one(part: &str, fields: bool) -> Result<Req, String> {
    let bad = || format!("unable to parse requirement: {part:?}");
    if let Some((k, v)) = part.split_once("!=") {
        return Ok(Req::NotEq(k.trim().into(), v.trim().into()));
    }
    if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(Req::Eq(k.trim().into(), v.trim().into()));
    }
    if fields {
        return Err(bad());
    }
    for (op, notin) in [(" notin ", true), (" in ", false)] {
        if let Some((k, rest)) = part.split_once(op) {
            let rest = rest.trim();
            let inner = rest
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(bad)?;
            let values = inner.split(',').map(|v| v.trim().to_string()).collect();
            let key = k.trim().to_string();
            return Ok(if notin {
                Req::NotIn(key, values)
            } else {
                Req::In(key, values)
            });
        }
    }
    if let Some(k) = part.strip_prefix('!') {
        return Ok(Req::NotExists(k.trim().into()));
    }
    if part.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok(Req::Exists(part.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selector_forms() {
        let obj = json!({"metadata": {"labels": {"app": "db", "tier": "back"}}});
        for (sel, want) in [
            ("", true),
            ("app=db", true),
            ("app==db,tier=back", true),
            ("app!=db", false),
            ("app in (web, db)", true),
            ("app notin (db)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("missing notin (x)", true),
        ] {
            assert_eq!(Selector::labels(sel).unwrap().matches(&obj), want, "{sel}");
        }
        assert!(Selector::labels("app in db").is_err());
    }

    #[test]
    fn field_selector_reads_paths() {
        let obj =
            json!({"metadata": {"name": "a", "namespace": "n"}, "status": {"phase": "Running"}});
        assert!(
            Selector::fields("metadata.name=a,metadata.namespace!=x")
                .unwrap()
                .matches(&obj)
        );
        assert!(
            !Selector::fields("status.phase=Pending")
                .unwrap()
                .matches(&obj)
        );
        assert!(Selector::fields("metadata.name").is_err());
    }

    #[test]
    fn label_selector_object() {
        let sel = Selector::from_object(&json!({
            "matchLabels": {"a": "1"},
            "matchExpressions": [{"key": "m", "operator": "In", "values": ["x"]}]
        }))
        .unwrap();
        assert!(sel.matches_labels(&json!({"a": "1", "m": "x"})));
        assert!(!sel.matches_labels(&json!({"a": "1", "m": "y"})));
        assert!(
            Selector::from_object(&json!({"matchExpressions": [{"key": "m", "operator": "Is"}]}))
                .is_err()
        );
    }
}
