//! Fixes that work (docs/admission.md, "Fixes"): every fix of every finding, made
//! mechanically to the Pod, lets the engine pass it. Generated Pods mix connection strings
//! of every form with the libpq environment; each has one target, so "pass" means no
//! finding at all.

use policy::verdict::{Change, Code, FixValue, Severity};
use policy::{Context, Object, Settings, Workload};
use proptest::prelude::*;
use serde_json::{Value, json};

const CA: &str = "/etc/postgresql-ca/ca.crt";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Form {
    Url,
    Kv,
    Jdbc,
    /// No string: PGHOST.
    Env,
}

/// `key=value` pairs of a string, in order (the generated strings need no quoting).
fn split(form: Form, value: &str) -> (String, Vec<(String, String)>) {
    let (head, rest, sep) = match form {
        Form::Url | Form::Jdbc => match value.split_once('?') {
            Some((h, q)) => (h.to_string(), q.to_string(), '&'),
            None => (value.to_string(), String::new(), '&'),
        },
        _ => (String::new(), value.to_string(), ' '),
    };
    let pairs = rest
        .split(sep)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect();
    (head, pairs)
}

fn join(form: Form, head: &str, pairs: &[(String, String)]) -> String {
    let pairs: Vec<String> = pairs
        .iter()
        .map(|(k, v)| match (form, v.as_str()) {
            // libpq reads `key= next=…` as key = "next=…": an empty value is quoted.
            (Form::Kv, "") => format!("{k}=''"),
            _ => format!("{k}={v}"),
        })
        .collect();
    match form {
        Form::Url | Form::Jdbc => format!("{head}?{}", pairs.join("&")),
        _ => pairs.join(" "),
    }
}

fn text(v: FixValue) -> &'static str {
    match v {
        FixValue::Literal(s) => s,
        FixValue::CaFile => CA,
    }
}

/// The Pod's env with one change made.
fn apply(form: Form, env: &mut Vec<(String, String)>, variable: &str, change: &Change) {
    match change {
        Change::Param { key, value, drop } => {
            let Some(slot) = env.iter_mut().find(|(n, _)| n == variable) else {
                panic!("the fix changes {variable}, which the Pod does not have");
            };
            let (head, mut pairs) = split(form, &slot.1);
            pairs.retain(|(k, _)| k != key && !drop.contains(&k.as_str()));
            pairs.push((key.to_string(), text(*value).to_string()));
            slot.1 = join(form, &head, &pairs);
        }
        Change::Env { name, value } => {
            env.retain(|(n, _)| n != name);
            env.push((name.to_string(), text(*value).to_string()));
        }
        Change::Unset { name } => env.retain(|(n, _)| n != name),
    }
}

fn pod(env: &[(String, String)]) -> Workload {
    let env: Vec<Value> = env
        .iter()
        .map(|(n, v)| json!({"name": n, "value": v}))
        .collect();
    let object = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"},
        "spec": {"containers": [{"name": "app", "env": env}]}});
    match serde_json::from_value::<Object>(object) {
        Ok(Object::Workload(w)) => *w,
        other => panic!("not a workload: {other:?}"),
    }
}

/// `(code, variable, fixes)` of each finding of the Pod.
fn judge(env: &[(String, String)]) -> Vec<(Code, Severity, String, Vec<policy::verdict::Fix>)> {
    let w = pod(env);
    let settings = Settings::default();
    let ctx = Context {
        settings: &settings,
        sources: &policy::NoSources,
        now: jiff::Timestamp::UNIX_EPOCH,
    };
    policy::evaluate(w.view(), &ctx)
        .container_findings()
        .map(|(_, f)| {
            (
                f.code,
                f.severity,
                f.variable.as_deref().unwrap_or("").to_string(),
                f.fixes.clone(),
            )
        })
        .collect()
}

fn opt<T: Clone + std::fmt::Debug + 'static>(items: &[T]) -> impl Strategy<Value = Option<T>> {
    proptest::option::of(proptest::sample::select(items.to_vec()))
}

const MODES: &[&str] = &[
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
    "Verify-Full",
    "",
];

prop_compose! {
    fn pods()(
        form in proptest::sample::select(vec![Form::Url, Form::Kv, Form::Jdbc, Form::Env]),
        mode in opt(MODES),
        second_mode in opt(MODES),
        alias in opt(&["requiressl=1", "requiressl=0", "ssl=true", "ssl=false"]),
        root in opt(&[CA, "system", ""]),
        factory in opt(&["org.postgresql.ssl.NonValidatingFactory", "org.postgresql.ssl.DefaultJavaSSLFactory"]),
        env_mode in opt(MODES),
        env_root in opt(&[CA, "system", ""]),
        requiressl in opt(&["1", "0"]),
        node_off in any::<bool>(),
    ) -> (Form, Vec<(String, String)>) {
        let mut params: Vec<String> = Vec::new();
        params.extend(alias.filter(|a| form != Form::Kv || a.starts_with("requiressl")).map(str::to_string));
        params.extend(mode.map(|m| format!("sslmode={m}")));
        params.extend(second_mode.map(|m| format!("sslmode={m}")));
        params.extend(root.map(|r| format!("sslrootcert={r}")));
        if form == Form::Jdbc {
            params.extend(factory.map(|f| format!("sslfactory={f}")));
        }
        let mut env = Vec::new();
        match form {
            Form::Url => env.push(("DATABASE_URL".into(), format!("postgresql://app@db.prod.svc/app?{}", params.join("&")))),
            Form::Jdbc => env.push(("SPRING_DATASOURCE_URL".into(), format!("jdbc:postgresql://db.prod.svc/app?{}", params.join("&")))),
            Form::Kv => {
                let (head, pairs) = split(Form::Kv, &params.join(" "));
                env.push(("DATABASE_URL".into(), format!("host=db.prod.svc dbname=app {}", join(Form::Kv, &head, &pairs))))
            }
            Form::Env => env.push(("PGHOST".into(), "db.prod.svc".into())),
        }
        env.extend(env_mode.map(|m| ("PGSSLMODE".to_string(), m.to_string())));
        env.extend(env_root.map(|r| ("PGSSLROOTCERT".to_string(), r.to_string())));
        env.extend(requiressl.map(|r| ("PGREQUIRESSL".to_string(), r.to_string())));
        if node_off {
            env.push(("NODE_TLS_REJECT_UNAUTHORIZED".into(), "0".into()));
        }
        (form, env)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn every_fix_makes_the_target_pass((form, env) in pods()) {
        for (code, severity, variable, fixes) in judge(&env) {
            if severity == Severity::Deny {
                prop_assert!(!fixes.is_empty(), "{code} on {variable} has no fix; env {env:?}");
            }
            for fix in fixes {
                let mut fixed = env.clone();
                for change in &fix.changes {
                    apply(form, &mut fixed, &variable, change);
                }
                let after = judge(&fixed);
                prop_assert!(
                    after.is_empty(),
                    "{code} on {variable}: fix {fix:?} leaves {:?}\nbefore: {env:?}\nafter:  {fixed:?}",
                    after.iter().map(|f| f.0).collect::<Vec<_>>()
                );
            }
        }
    }
}
