//! Fixes that work (docs/admission.md, "Fixes"): every fix of every finding, made
//! mechanically to the Pod, lets the engine pass it. Generated Pods mix connection strings
//! of every form with the libpq environment; each has one target, so "pass" means no
//! finding at all.

use policy::{Change, Code, FixValue, Severity};
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
    /// `Key=Value;` (keys case-insensitive, spaces ignored).
    Npgsql,
}

/// Npgsql compares keys without case or spaces.
fn same_key(form: Form, a: &str, b: &str) -> bool {
    match form {
        Form::Npgsql => {
            let n = |s: &str| s.replace(' ', "").to_lowercase();
            n(a) == n(b)
        }
        _ => a == b,
    }
}

/// `key=value` pairs of a string, in order (the generated strings need no quoting).
fn split(form: Form, value: &str) -> (String, Vec<(String, String)>) {
    let (head, rest, sep) = match form {
        Form::Url | Form::Jdbc => match value.split_once('?') {
            Some((h, q)) => (h.to_string(), q.to_string(), '&'),
            None => (value.to_string(), String::new(), '&'),
        },
        Form::Npgsql => (String::new(), value.to_string(), ';'),
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
        Form::Npgsql => pairs.join(";"),
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
            pairs.retain(|(k, _)| {
                !same_key(form, k, key) && !drop.iter().any(|d| same_key(form, k, d))
            });
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
fn judge(env: &[(String, String)]) -> Vec<(Code, Severity, String, Vec<policy::Fix>)> {
    let w = pod(env);
    let settings = Settings::default();
    let ctx = Context {
        settings: &settings,
        sources: &policy::NoSources,
        now: jiff::Timestamp::UNIX_EPOCH,
    };
    policy::judge(w.view(), &ctx)
        .container_findings()
        .map(|(_, f)| {
            (
                f.code,
                f.severity,
                f.variable.as_deref().unwrap_or("").to_string(),
                f.fixes(),
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
            Form::Env | Form::Npgsql => env.push(("PGHOST".into(), "db.prod.svc".into())),
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

/// The drivers' own forms: the string, and the environment around it.
fn drivers() -> impl Strategy<Value = (Form, Vec<(String, String)>)> {
    let npgsql = (
        opt(&[
            "Disable",
            "Prefer",
            "Require",
            "VerifyCA",
            "VerifyFull",
            "verify-full",
            "5",
            "3",
        ]),
        opt(&[CA, ""]),
        opt(&["verify-full"]),
        opt(&[CA]),
    )
        .prop_map(|(mode, root, env_mode, env_root)| {
            let mut s = "Host=db.prod.svc;Database=app".to_string();
            s.extend(mode.map(|m| format!(";SSL Mode={m}")));
            s.extend(root.map(|r| format!(";Root Certificate={r}")));
            let mut env = vec![("ConnectionStrings__Default".to_string(), s)];
            env.extend(env_mode.map(|m| ("PGSSLMODE".to_string(), m.to_string())));
            env.extend(env_root.map(|r| ("PGSSLROOTCERT".to_string(), r.to_string())));
            (Form::Npgsql, env)
        });
    let r2dbc = (
        any::<bool>(),
        opt(&[
            "sslMode=VERIFY_FULL",
            "sslMode=require",
            "sslMode=verify-ca",
            "sslmode=verify-full",
            "ssl=true",
            "sslMode=bogus",
        ]),
        opt(&["sslRootCert", "sslrootcert"]),
        opt(&["require", "verify-full"]),
    )
        .prop_map(|(secure, mode, root, spring)| {
            let scheme = if secure { "r2dbcs" } else { "r2dbc" };
            let mut q: Vec<String> = mode.iter().map(|m| m.to_string()).collect();
            q.extend(root.map(|k| format!("{k}={CA}")));
            let mut env = vec![(
                "SPRING_R2DBC_URL".to_string(),
                format!("{scheme}:postgresql://db.prod.svc/app?{}", q.join("&")),
            )];
            env.extend(
                spring.map(|m| ("SPRING_R2DBC_PROPERTIES_SSLMODE".to_string(), m.to_string())),
            );
            (Form::Url, env)
        });
    let prisma = (
        opt(&["disable", "prefer", "require", "verify-full"]),
        opt(&["strict", "accept_invalid_certs"]),
        opt(&["sslcert", "sslrootcert"]),
    )
        .prop_map(|(mode, accept, root)| {
            let mut q = vec!["schema=public".to_string()];
            q.extend(mode.map(|m| format!("sslmode={m}")));
            q.extend(accept.map(|a| format!("sslaccept={a}")));
            q.extend(root.map(|k| format!("{k}={CA}")));
            (
                Form::Url,
                vec![(
                    "DATABASE_URL".to_string(),
                    format!("postgresql://app@db.prod.svc/app?{}", q.join("&")),
                )],
            )
        });
    let asyncpg = (
        opt(&[
            "ssl=verify-full",
            "ssl=require",
            "ssl=true",
            "sslmode=verify-full",
        ]),
        opt(&[CA, "system"]),
        opt(&["verify-full", "require"]),
    )
        .prop_map(|(param, root, env_mode)| {
            let mut env = vec![(
                "DATABASE_URL".to_string(),
                format!(
                    "postgresql+asyncpg://app@db.prod.svc/app?{}",
                    param.unwrap_or("")
                ),
            )];
            env.extend(root.map(|r| ("PGSSLROOTCERT".to_string(), r.to_string())));
            env.extend(env_mode.map(|m| ("PGSSLMODE".to_string(), m.to_string())));
            (Form::Url, env)
        });
    let quarkus = (
        opt(&["sslmode=verify-full", "sslmode=require", "sslmode=prefer"]),
        opt(&["verify-full", "disable", "require"]),
        opt(&["HTTPS", "NONE"]),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(url_mode, mode, algorithm, trust, trust_all)| {
            let p = "QUARKUS_DATASOURCE_REACTIVE_";
            let mut env = vec![(
                format!("{p}URL"),
                format!("postgresql://db.prod.svc/app?{}", url_mode.unwrap_or("")),
            )];
            env.extend(mode.map(|m| (format!("{p}POSTGRESQL_SSL_MODE"), m.to_string())));
            env.extend(
                algorithm.map(|a| (format!("{p}HOSTNAME_VERIFICATION_ALGORITHM"), a.to_string())),
            );
            if trust {
                env.push((format!("{p}TRUST_CERTIFICATE_PEM_CERTS"), CA.to_string()));
            }
            if trust_all {
                env.push((format!("{p}TRUST_ALL"), "true".to_string()));
            }
            (Form::Url, env)
        });
    prop_oneof![npgsql, r2dbc, prisma, asyncpg, quarkus]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn every_fix_makes_the_target_pass((form, env) in prop_oneof![pods(), drivers()]) {
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
