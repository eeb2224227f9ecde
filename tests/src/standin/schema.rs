//! Custom resources against their CRD's `openAPIV3Schema`: defaulting and pruning on
//! decode, then validation (types, required, enums, bounds, patterns, list-map keys) and
//! `x-kubernetes-validations` evaluated with the `cel` crate.

use serde_json::{Map, Value};

/// Evaluates a CEL expression to a boolean with the given variables bound.
pub fn eval_bool(rule: &str, vars: &[(&str, &Value)]) -> Result<bool, String> {
    let program = cel::Program::compile(rule).map_err(|e| format!("compilation failed: {e}"))?;
    let mut ctx = cel::Context::default();
    for (name, v) in vars {
        let value = cel::to_value(v).map_err(|e| e.to_string())?;
        ctx.add_variable_from_value(*name, value);
    }
    match program.execute(&ctx) {
        Ok(cel::Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!("expression evaluated to {other:?}, not a bool")),
        Err(e) => Err(e.to_string()),
    }
}

/// Applies `default`s and drops fields the schema does not know, as the API server does
/// when it decodes a custom resource.
pub fn default_and_prune(schema: &Value, v: &mut Value, root: bool) {
    match v {
        Value::Object(m) => {
            let props = schema["properties"].as_object();
            if let Some(props) = props {
                for (k, s) in props {
                    if root && k == "metadata" {
                        continue;
                    }
                    if !m.contains_key(k)
                        && let Some(d) = s.get("default")
                    {
                        m.insert(k.clone(), d.clone());
                    }
                }
            }
            let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let sub = props.and_then(|p| p.get(&k)).or(additional);
                match sub {
                    Some(s) => {
                        if let Some(child) = m.get_mut(&k) {
                            default_and_prune(s, child, false);
                        }
                    }
                    None if !preserve => {
                        m.remove(&k);
                    }
                    None => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for i in items {
                    default_and_prune(s, i, false);
                }
            }
        }
        _ => {}
    }
}

/// One validation error, as the API server words it.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub reason: &'static str,
    pub message: String,
}

/// Validates a whole custom resource; `old` is the stored object on update (for
/// transition rules with `oldSelf`).
pub fn validate(schema: &Value, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    // Rules run only on an object that passed the structural checks, so that a rule
    // never reports a missing field the schema already names.
    let mut errs = Vec::new();
    walk(schema, obj, old, "", &mut errs, Pass::Structure);
    if errs.is_empty() {
        walk(schema, obj, old, "", &mut errs, Pass::Rules);
    }
    errs
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn short(v: &Value) -> String {
    match v {
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => other.to_string(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Pass {
    Structure,
    Rules,
}

fn walk(
    schema: &Value,
    v: &Value,
    old: Option<&Value>,
    path: &str,
    errs: &mut Vec<FieldError>,
    pass: Pass,
) {
    let root = path.is_empty();
    let invalid = |errs: &mut Vec<FieldError>, msg: String| {
        errs.push(FieldError {
            field: path.to_string(),
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {}: {msg}", short(v)),
        })
    };
    if v.is_null() {
        if schema["nullable"] != true && !root {
            invalid(
                errs,
                format!(
                    "{path} in body must be of type {}: \"null\"",
                    type_name(schema)
                ),
            );
        }
        return;
    }
    let int_or_string = schema["x-kubernetes-int-or-string"] == true;
    let ty = schema["type"].as_str().unwrap_or("");
    let type_ok = int_or_string && (v.is_i64() || v.is_u64() || v.is_string())
        || match ty {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            _ => true,
        };
    if !type_ok {
        let got = match v {
            Value::Object(_) => "object",
            Value::Array(_) => "array",
            Value::String(_) => "string",
            Value::Number(n) if n.is_f64() => "number",
            Value::Number(_) => "integer",
            Value::Bool(_) => "boolean",
            Value::Null => "null",
        };
        invalid(
            errs,
            format!("{path} in body must be of type {ty}: \"{got}\""),
        );
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        errs.push(FieldError {
            field: path.to_string(),
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {}: supported values: {}",
                v,
                list.join(", ")
            ),
        });
    }
    match v {
        Value::Object(m) => object(schema, m, old, path, errs, pass),
        Value::Array(items) => array(schema, items, old, path, errs, pass),
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(max) = schema["maxLength"].as_u64()
                && len > max
            {
                errs.push(FieldError {
                    field: path.into(),
                    reason: "FieldValueTooLong",
                    message: format!("Too long: may not be more than {max} bytes"),
                });
            }
            if let Some(min) = schema["minLength"].as_u64()
                && len < min
            {
                invalid(
                    errs,
                    format!("{path} in body should be at least {min} chars long"),
                );
            }
            if let Some(p) = schema["pattern"].as_str() {
                match regex::Regex::new(p) {
                    Ok(re) if !re.is_match(s) => {
                        invalid(errs, format!("{path} in body should match '{p}'"))
                    }
                    Ok(_) => {}
                    Err(e) => invalid(errs, format!("pattern {p:?} does not compile: {e}")),
                }
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or_default();
            if let Some(max) = schema["maximum"].as_f64()
                && (x > max || (schema["exclusiveMaximum"] == true && x >= max))
            {
                invalid(
                    errs,
                    format!("{path} in body should be less than or equal to {max}"),
                );
            }
            if let Some(min) = schema["minimum"].as_f64()
                && (x < min || (schema["exclusiveMinimum"] == true && x <= min))
            {
                invalid(
                    errs,
                    format!("{path} in body should be greater than or equal to {min}"),
                );
            }
        }
        _ => {}
    }
    if pass == Pass::Rules {
        rules(schema, v, old, path, errs);
    }
}

fn type_name(schema: &Value) -> &str {
    schema["type"].as_str().unwrap_or("object")
}

fn object(
    schema: &Value,
    m: &Map<String, Value>,
    old: Option<&Value>,
    path: &str,
    errs: &mut Vec<FieldError>,
    pass: Pass,
) {
    let root = path.is_empty();
    for r in super::resources::strings(&schema["required"]) {
        if !m.contains_key(&r) {
            errs.push(FieldError {
                field: join(path, &r),
                reason: "FieldValueRequired",
                message: "Required value".into(),
            });
        }
    }
    let props = schema["properties"].as_object();
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (k, child) in m {
        if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(s) = props.and_then(|p| p.get(k)).or(additional) {
            let old_child = old.and_then(|o| o.get(k));
            walk(s, child, old_child, &join(path, k), errs, pass);
        }
    }
}

fn array(
    schema: &Value,
    items: &[Value],
    old: Option<&Value>,
    path: &str,
    errs: &mut Vec<FieldError>,
    pass: Pass,
) {
    let n = items.len() as u64;
    if let Some(max) = schema["maxItems"].as_u64()
        && n > max
    {
        errs.push(FieldError {
            field: path.into(),
            reason: "FieldValueTooMany",
            message: format!("Too many: {n}: must have at most {max} items"),
        });
    }
    if let Some(min) = schema["minItems"].as_u64()
        && n < min
    {
        errs.push(FieldError {
            field: path.into(),
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {n}: {path} in body should have at least {min} items"),
        });
    }
    let keys = super::resources::strings(&schema["x-kubernetes-list-map-keys"]);
    let is_map = schema["x-kubernetes-list-type"] == "map";
    let is_set = schema["x-kubernetes-list-type"] == "set";
    let mut seen: Vec<Value> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let id = if is_map {
            Value::Array(
                keys.iter()
                    .map(|k| item.get(k).cloned().unwrap_or(Value::Null))
                    .collect(),
            )
        } else {
            item.clone()
        };
        if (is_map || is_set) && seen.contains(&id) {
            errs.push(FieldError {
                field: format!("{path}[{i}]"),
                reason: "FieldValueDuplicate",
                message: format!(
                    "Duplicate value: {}",
                    if is_map { id.to_string() } else { short(item) }
                ),
            });
        }
        seen.push(id);
        if let Some(s) = schema.get("items") {
            // Transition rules of items need a stable identity; list-map items pair by key.
            let old_item = old.and_then(Value::as_array).and_then(|o| {
                if is_map {
                    o.iter()
                        .find(|x| keys.iter().all(|k| x.get(k) == item.get(k)))
                } else {
                    None
                }
            });
            walk(s, item, old_item, &format!("{path}[{i}]"), errs, pass);
        }
    }
}

fn rules(schema: &Value, v: &Value, old: Option<&Value>, path: &str, errs: &mut Vec<FieldError>) {
    let Some(list) = schema["x-kubernetes-validations"].as_array() else {
        return;
    };
    for r in list {
        let Some(rule) = r["rule"].as_str() else {
            continue;
        };
        let transition = rule.contains("oldSelf");
        let result = match (transition, old) {
            // Transition rules are skipped on create, as the API server does.
            (true, None) => continue,
            (true, Some(o)) => eval_bool(rule, &[("self", v), ("oldSelf", o)]),
            (false, _) => eval_bool(rule, &[("self", v)]),
        };
        let field = match r["fieldPath"].as_str() {
            Some(fp) => format!("{path}{fp}"),
            None => path.to_string(),
        };
        match result {
            Ok(true) => {}
            Ok(false) => {
                let msg = r["message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("failed rule: {rule}"));
                errs.push(FieldError {
                    field,
                    reason: "FieldValueInvalid",
                    message: format!("Invalid value: {}: {msg}", short(v)),
                });
            }
            Err(e) => errs.push(FieldError {
                field,
                reason: "FieldValueInvalid",
                message: format!("Invalid value: {}: rule {rule:?}: {e}", short(v)),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
        "spec": {"type": "object", "required": ["mode"],
            "x-kubernetes-validations": [{"rule": "self.replicas <= 10", "message": "at most ten"}],
            "properties": {
                "mode": {"type": "string", "enum": ["inject", "fix"]},
                "replicas": {"type": "integer", "default": 1, "minimum": 0},
                "name": {"type": "string", "pattern": "^[a-z]+$",
                         "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "immutable"}]},
                "items": {"type": "array", "x-kubernetes-list-type": "map",
                          "x-kubernetes-list-map-keys": ["type"],
                          "items": {"type": "object", "properties": {"type": {"type": "string"}}}}
            }}}})
    }

    #[test]
    fn defaults_prune_and_validate() {
        let s = schema();
        let mut obj = json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"},
                             "spec": {"mode": "inject", "unknown": 1}});
        default_and_prune(&s, &mut obj, true);
        assert_eq!(obj["spec"], json!({"mode": "inject", "replicas": 1}));
        assert!(validate(&s, &obj, None).is_empty());
    }

    #[test]
    fn reports_each_problem_with_its_field() {
        let s = schema();
        let obj = json!({"spec": {"mode": "break", "replicas": 11, "name": "A1",
                                  "items": [{"type": "a"}, {"type": "a"}]}});
        let errs = validate(&s, &obj, None);
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        // Rules wait for the structure to be right.
        assert_eq!(
            fields,
            ["spec.items[1]", "spec.mode", "spec.name"],
            "{errs:?}"
        );
        assert!(
            errs[1]
                .message
                .contains("supported values: \"inject\", \"fix\"")
        );
        let rule = validate(&s, &json!({"spec": {"mode": "fix", "replicas": 11}}), None);
        assert_eq!(rule.len(), 1);
        assert_eq!(rule[0].field, "spec");
        assert!(rule[0].message.ends_with("at most ten"));
        let missing = validate(&s, &json!({"spec": {}}), None);
        assert_eq!(missing[0].field, "spec.mode");
        assert_eq!(missing[0].message, "Required value");
    }

    #[test]
    fn transition_rules_use_the_old_object() {
        let s = schema();
        let old = json!({"spec": {"mode": "fix", "replicas": 1, "name": "a"}});
        let new = json!({"spec": {"mode": "fix", "replicas": 1, "name": "b"}});
        assert!(validate(&s, &new, None).is_empty());
        let errs = validate(&s, &new, Some(&old));
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.name");
    }
}
