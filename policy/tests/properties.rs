//! Property tests: the parsers and the engine never panic on arbitrary input, and no
//! output of the engine ever contains a password or a whole Secret value.

use std::collections::BTreeMap;

use policy::{Context, Object, Report, Settings, Workload};
use policy::{Lookup, SourceData, SourceKind, ValueSource};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Every text the engine can produce for a report.
pub fn all_text(report: &Report<'_>) -> String {
    let mut out = String::new();
    for f in &report.findings {
        out.push_str(&f.message(None));
        out.push_str(&f.warning(None));
        out.push_str(&f.fix());
        out.push_str(&format!("{f:?}"));
    }
    for n in &report.notes {
        out.push_str(&n.message());
    }
    for c in &report.containers {
        for f in &c.findings {
            out.push_str(&f.message(Some(c.name)));
            out.push_str(&f.warning(Some(c.name)));
            out.push_str(&f.explanation());
        }
        for n in &c.notes {
            out.push_str(&n.message());
        }
    }
    out
}

struct Sources(BTreeMap<(SourceKind, String), SourceData>);

impl ValueSource for Sources {
    fn lookup(&self, kind: SourceKind, _: Option<&str>, name: &str) -> Lookup<'_> {
        match self.0.get(&(kind, name.to_string())) {
            Some(d) => Lookup::Found(d),
            None => Lookup::Unknown,
        }
    }
}

fn workload(v: Value) -> Option<Workload> {
    match serde_json::from_value::<Object>(v) {
        Ok(Object::Workload(w)) => Some(*w),
        _ => None,
    }
}

fn judged_text(w: &Workload, sources: &Sources) -> String {
    let settings = Settings::default();
    let ctx = Context {
        settings: &settings,
        sources,
        now: jiff::Timestamp::UNIX_EPOCH,
    };
    all_text(&policy::judge(w.view(), &ctx))
}

/// A password of at least 12 characters, with characters that need escaping in every syntax.
fn password() -> impl Strategy<Value = String> {
    "[A-Za-z0-9@:/?&=%+ '\\\\#!$.,;-]{12,24}".prop_filter("not blank", |p| !p.trim().is_empty())
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b' ' => "+".to_string(),
            b if b.is_ascii_alphanumeric() || b"-._*".contains(&b) => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

fn quote_kv(s: &str) -> String {
    let mut out = String::from("'");
    for c in s.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// Connection strings carrying `pw` in every way a password can travel.
fn strings_with(pw: &str, mode: &str) -> Vec<String> {
    let enc = percent_encode(pw);
    vec![
        format!("postgres://app:{enc}@db.prod.svc:5432/app?sslmode={mode}"),
        format!("postgresql://app:{enc}@db1,db2:5433/app?sslmode={mode}&sslrootcert=/ca"),
        format!("postgresql+asyncpg://app:{enc}@db/app?ssl={mode}"),
        format!("postgres://db/app?password={enc}&sslmode={mode}"),
        format!("host=db password={} sslmode={mode}", quote_kv(pw)),
        format!("host=db sslpassword={} sslmode='{mode}", quote_kv(pw)),
        format!(
            "jdbc:postgresql://db/app?user=a&password={}&sslmode={mode}",
            form_encode(pw)
        ),
        format!(
            "jdbc:postgresql://db/app?password={}&sslfactory=org.postgresql.ssl.NonValidatingFactory",
            form_encode(pw)
        ),
        // Malformed on purpose: the error must not echo the string.
        format!("postgres://app:{pw}@db/app?sslmode=%zz"),
        format!("postgres://app:{enc}@[db/app"),
        format!("jdbc:postgresql://db/app/x?password={}", form_encode(pw)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parsers_never_panic(s in ".{0,200}", uri in "postgres(ql)?://[a-z@:/?&=%\\[\\],.0-9]{0,60}") {
        policy::fuzzing::libpq(&s);
        policy::fuzzing::libpq(&uri);
        policy::fuzzing::jdbc(&s);
        policy::fuzzing::hosts(&s, &uri);
        policy::fuzzing::exemption_until(&s);
    }

    #[test]
    fn engine_never_panics(
        vars in proptest::collection::vec(("(PG[A-Z]{2,10}|DATABASE_URL|[A-Z_]{1,8})", "(postgres://|jdbc:postgresql:|host=|sslmode=|\\$\\(|\\$\\$|[a-z]){0,6}.{0,30}"), 0..12),
        from_refs in proptest::collection::vec(("[a-z]{1,3}", proptest::option::of("[A-Z_]{0,4}")), 0..3),
        annotations in proptest::collection::btree_map("verifyfull\\.dev/exempt(-reason|-until)?", ".{0,20}", 0..3),
        host_network in any::<bool>(),
    ) {
        let env: Vec<Value> = vars.iter().enumerate().map(|(i, (n, v))| {
            if i % 4 == 3 {
                json!({"name": n, "valueFrom": {"secretKeyRef": {"name": "s", "key": v}}})
            } else {
                json!({"name": n, "value": v})
            }
        }).collect();
        let env_from: Vec<Value> = from_refs.iter().map(|(name, prefix)| json!({"configMapRef": {"name": name}, "prefix": prefix})).collect();
        let w = workload(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "annotations": annotations},
            "spec": {"hostNetwork": host_network, "containers": [{"name": "c", "env": env, "envFrom": env_from}]}
        }));
        let mut data = BTreeMap::new();
        data.insert((SourceKind::ConfigMap, "a".to_string()), vars.iter().cloned().collect::<SourceData>());
        if let Some(w) = w {
            let _ = judged_text(&w, &Sources(data));
        }
    }

    #[test]
    fn no_output_contains_a_password(pw in password(), mode in "(disable|require|verify-full|Verify-Full|)") {
        let strings = strings_with(&pw, &mode);
        let mut env: Vec<Value> = strings
            .iter()
            .enumerate()
            .map(|(i, s)| json!({"name": format!("DATABASE_URL_{i}"), "value": s}))
            .collect();
        env.push(json!({"name": "PGPASSWORD", "value": pw}));
        env.push(json!({"name": "PGHOST", "value": "db"}));
        let w = workload(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "env": env}]}
        }))
        .expect("a workload");
        let text = judged_text(&w, &Sources(BTreeMap::new()));
        prop_assert!(!text.contains(&pw), "password leaked: {}", text);
        prop_assert!(!text.contains(&percent_encode(&pw)), "encoded password leaked");
    }

    #[test]
    fn no_output_contains_a_secret_value(secret in password(), other in password()) {
        // The same Secret value read into every kind of variable, directly and via envFrom.
        let names = ["DATABASE_URL", "PGSSLMODE", "PGHOST", "PGHOSTADDR", "PGSSLROOTCERT", "PGSERVICE", "PGREQUIRESSL", "JDBC_URL", "OTHER"];
        let env: Vec<Value> = names
            .iter()
            .map(|n| json!({"name": n, "valueFrom": {"secretKeyRef": {"name": "db", "key": "v"}}}))
            .chain([json!({"name": "URL2", "value": "postgres://u:$(OTHER)@$(PGHOST)/app?sslmode=$(PGSSLMODE)"})])
            .collect();
        let w = workload(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [
                {"name": "c", "env": env},
                {"name": "d", "envFrom": [{"secretRef": {"name": "db"}}], "env": [{"name": "PGHOST", "value": "db"}]},
            ]}
        }))
        .expect("a workload");
        let mut data = BTreeMap::new();
        let mut secret_data: SourceData = names.iter().map(|n| (n.to_string(), other.clone())).collect();
        secret_data.insert("v".to_string(), secret.clone());
        data.insert((SourceKind::Secret, "db".to_string()), secret_data);
        let text = judged_text(&w, &Sources(data));
        prop_assert!(!text.contains(&secret), "secret leaked: {}", text);
        prop_assert!(!text.contains(&other), "secret leaked: {}", text);
    }
}
