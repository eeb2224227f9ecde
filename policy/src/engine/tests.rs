//! The engine, case by case against docs/rules.md.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;
use crate::env::{Lookup, SourceData, SourceKind, ValueSource};
use crate::workload::{Object, Workload};

/// ConfigMaps and Secrets by name; `synced` answers `Missing` instead of `Unknown`.
#[derive(Default)]
struct Sources {
    objects: BTreeMap<(SourceKind, String), SourceData>,
    synced: bool,
}

impl Sources {
    fn with(mut self, kind: SourceKind, name: &str, data: &[(&str, &str)]) -> Self {
        self.objects.insert(
            (kind, name.to_string()),
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        self
    }
}

impl ValueSource for Sources {
    fn lookup(&self, kind: SourceKind, _: Option<&str>, name: &str) -> Lookup<'_> {
        match self.objects.get(&(kind, name.to_string())) {
            Some(d) => Lookup::Found(d),
            None if self.synced => Lookup::Missing,
            None => Lookup::Unknown,
        }
    }
}

fn now() -> jiff::Timestamp {
    "2026-06-01T12:00:00Z".parse().expect("now")
}

fn workload(v: Value) -> Workload {
    match serde_json::from_value::<Object>(v).expect("object") {
        Object::Workload(w) => *w,
        other => panic!("not a workload: {other:?}"),
    }
}

/// A Pod with one container `app` whose env is the given literal pairs.
fn pod_env(vars: &[(&str, &str)]) -> Workload {
    let env: Vec<Value> = vars
        .iter()
        .map(|(n, v)| json!({"name": n, "value": v}))
        .collect();
    pod_with(json!([{"name": "app", "env": env}]), json!({}))
}

fn pod_with(containers: Value, extra_spec: Value) -> Workload {
    let mut spec = json!({"containers": containers});
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        s.extend(extra.clone());
    }
    workload(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}, "spec": spec}),
    )
}

fn report_with<'a>(w: &'a Workload, sources: &'a Sources, settings: &'a Settings) -> Report<'a> {
    let ctx = Context {
        settings,
        sources,
        now: now(),
    };
    judge(w.view(), &ctx)
}

/// `(container, variable, code)` of every finding.
fn codes_with(w: &Workload, sources: &Sources, settings: &Settings) -> Vec<(String, String, Code)> {
    let r = report_with(w, sources, settings);
    let mut out: Vec<_> = r
        .findings
        .iter()
        .map(|f| (String::new(), String::new(), f.code))
        .collect();
    for (c, f) in r.container_findings() {
        out.push((
            c.name.to_string(),
            f.variable.as_deref().unwrap_or("").to_string(),
            f.code,
        ));
    }
    out
}

fn codes(w: &Workload) -> Vec<(String, String, Code)> {
    codes_with(w, &Sources::default(), &Settings::default())
}

fn one(var: &str, code: Code) -> Vec<(String, String, Code)> {
    vec![("app".to_string(), var.to_string(), code)]
}

fn client(w: &Workload) -> bool {
    let settings = Settings::default();
    let sources = Sources::default();
    report_with(w, &sources, &settings).containers[0].client
}

/// Literal env pairs.
type Pairs<'a> = &'a [(&'a str, &'a str)];
/// `(container, variable, code)` of each finding.
type Found = Vec<(String, String, Code)>;

const CA: (&str, &str) = ("PGSSLROOTCERT", "/etc/ca/ca.crt");
const VF: (&str, &str) = ("PGSSLMODE", "verify-full");

#[test]
fn libpq_environment_alone() {
    use Code::*;
    let cases: &[(Pairs, Found)] = &[
        (&[("PGHOST", "db"), VF, CA], vec![]),
        (&[("PGHOST", "db")], one("PGHOST", SslModeUnset)),
        (
            &[("PGHOSTADDR", "10.0.0.5"), ("PGSSLMODE", "require"), CA],
            one("PGHOSTADDR", SslModeTooWeak),
        ),
        (
            &[("PGHOST", "db"), ("PGSSLMODE", "verify-ca"), CA],
            one("PGHOST", SslModeTooWeak),
        ),
        (
            &[("PGHOST", "db"), ("PGREQUIRESSL", "1")],
            one("PGHOST", SslModeTooWeak),
        ),
        (
            &[("PGHOST", "db"), ("PGREQUIRESSL", "0")],
            one("PGHOST", SslModeUnset),
        ),
        // PGREQUIRESSL is ignored whenever PGSSLMODE is set.
        (&[("PGHOST", "db"), ("PGREQUIRESSL", "1"), VF, CA], vec![]),
        (&[("PGHOST", "db"), VF], one("PGHOST", RootCertMissing)),
        (
            &[("PGHOST", "db"), VF, ("PGSSLROOTCERT", "")],
            one("PGHOST", RootCertMissing),
        ),
        (&[("PGHOST", "db"), VF, ("PGSSLROOTCERT", "system")], vec![]),
        (
            &[("PGHOST", "db"), ("PGSSLROOTCERT", "system")],
            one("PGHOST", RootCertSystemNeedsVerifyFull),
        ),
        (
            &[
                ("PGHOST", "db"),
                ("PGSSLMODE", "require"),
                ("PGSSLROOTCERT", "system"),
            ],
            one("PGHOST", RootCertSystemNeedsVerifyFull),
        ),
        (
            &[("PGHOST", "db"), ("PGSSLMODE", "Verify-Full"), CA],
            one("PGHOST", SslModeInvalid),
        ),
        (
            &[("PGHOST", "db"), ("PGSSLMODE", ""), CA],
            one("PGHOST", SslModeInvalid),
        ),
        (
            &[("PGHOST", "db"), VF, CA, ("PGGSSENCMODE", "require")],
            one("PGHOST", Unverifiable),
        ),
        (&[("PGSERVICE", "prod")], one("PGSERVICE", Unverifiable)),
        // Sockets and loopback.
        (&[("PGHOST", "/var/run/postgresql")], vec![]),
        (&[("PGHOST", "localhost"), ("PGSSLMODE", "disable")], vec![]),
        (
            &[("PGHOST", "127.0.0.1,db"), ("PGSSLMODE", "disable")],
            one("PGHOST", SslModeTooWeak),
        ),
        (
            &[("PGHOST", "db.example.com"), ("PGHOSTADDR", "127.0.0.1")],
            vec![],
        ),
        (
            &[("PGHOST", "a,b"), ("PGHOSTADDR", "10.0.0.1")],
            one("PGHOST", ConnectionStringInvalid),
        ),
    ];
    for (env, want) in cases {
        assert_eq!(&codes(&pod_env(env)), want, "{env:?}");
    }
    // PGUSER/PGPASSWORD/PGDATABASE alone (as in Postgres server images) do not make a client.
    let server = pod_env(&[
        ("PGUSER", "u"),
        ("PGPASSWORD", "secretpassword1"),
        ("PGDATABASE", "d"),
    ]);
    assert!(!client(&server));
    assert!(codes(&server).is_empty());
    assert!(!client(&pod_env(&[("PGHOST", "/tmp")])));
    assert!(client(&pod_env(&[("PGHOST", "localhost")])));
}

#[test]
fn connection_strings() {
    use Code::*;
    let cases: &[(&str, Pairs, Option<Code>)] = &[
        (
            "postgres://u:p@db/app?sslmode=verify-full&sslrootcert=/ca.crt",
            &[],
            None,
        ),
        (
            "postgres://u:p@db/app?sslmode=require",
            &[],
            Some(SslModeTooWeak),
        ),
        ("postgres://u:p@db/app", &[], Some(SslModeUnset)),
        // The string beats the environment.
        (
            "postgres://db/app?sslmode=disable",
            &[VF, CA],
            Some(SslModeTooWeak),
        ),
        ("postgres://db/app", &[VF, CA], None),
        (
            "postgres://db/app?sslmode=verify-full",
            &[],
            Some(RootCertMissing),
        ),
        ("postgres://db/app?sslmode=verify-full", &[CA], None),
        (
            "postgres://db/app?sslmode=verify-full&sslrootcert=",
            &[CA],
            Some(RootCertMissing),
        ),
        ("postgres://db/app?ssl=true", &[], Some(SslModeTooWeak)),
        (
            "postgres://db/app?requiressl=1&sslrootcert=/ca",
            &[],
            Some(SslModeTooWeak),
        ),
        (
            "postgres://db/app?sslmode=verify-full&sslrootcert=system",
            &[],
            None,
        ),
        (
            "postgres://db/app?sslrootcert=system",
            &[],
            Some(RootCertSystemNeedsVerifyFull),
        ),
        (
            "postgres://db/app?sslmode=Verify-Full&sslrootcert=/ca",
            &[],
            Some(SslModeInvalid),
        ),
        (
            "postgres://db/app?sslmode=verify%2Dfull&sslrootcert=%2Fca",
            &[],
            None,
        ),
        (
            "postgres://db/app?sslmode=%zz",
            &[],
            Some(ConnectionStringInvalid),
        ),
        ("postgres://[::1/app", &[], Some(ConnectionStringInvalid)),
        // No host in the string: PGHOST decides; none at all is a socket.
        (
            "postgresql:///app?sslmode=disable",
            &[("PGHOST", "db.prod.svc")],
            Some(SslModeTooWeak),
        ),
        ("postgresql:///app?sslmode=disable", &[], None),
        (
            "postgresql:///app?host=/cloudsql/p:r:i&sslmode=disable",
            &[],
            None,
        ),
        ("postgres://%2Fvar%2Frun/app", &[], None),
        // A query host= replaces the authority's host.
        ("postgres://db/app?host=/tmp&sslmode=disable", &[], None),
        (
            "postgres://localhost/app?host=db&sslmode=disable",
            &[],
            Some(SslModeTooWeak),
        ),
        // Loopback: an in-Pod proxy does the TLS.
        (
            "postgres://u:p@127.0.0.1:5432/app?sslmode=disable",
            &[],
            None,
        ),
        ("postgres://u:p@[::1]:5432/app", &[], None),
        (
            "postgres://localhost,db/app?sslmode=disable",
            &[],
            Some(SslModeTooWeak),
        ),
        (
            "postgres://db.example.com/app?hostaddr=127.0.0.1",
            &[],
            None,
        ),
        // Keyword/value strings.
        (
            "host=db dbname=app sslmode=verify-full sslrootcert=/ca",
            &[],
            None,
        ),
        ("host = db  sslmode = 'require'", &[], Some(SslModeTooWeak)),
        ("host=db requiressl=1", &[], Some(SslModeTooWeak)),
        (
            "host=db sslmode='verify-full",
            &[],
            Some(ConnectionStringInvalid),
        ),
        ("host=db service=prod", &[], Some(Unverifiable)),
        (
            "service=prod sslmode=verify-full sslrootcert=/ca host=db",
            &[],
            None,
        ),
        (
            "host=db sslmode=verify-full sslrootcert=/ca gssencmode=require",
            &[],
            Some(Unverifiable),
        ),
        // Duplicates with different values: the weakest counts.
        (
            "host=db sslmode=verify-full sslrootcert=/ca sslmode=disable",
            &[],
            Some(SslModeTooWeak),
        ),
        (
            "host=db sslmode=disable sslmode=verify-full sslrootcert=/ca",
            &[],
            Some(SslModeTooWeak),
        ),
        (
            "host=db sslmode=verify-full sslmode=verify-full sslrootcert=/ca",
            &[],
            None,
        ),
        (
            "host=localhost host=db sslmode=disable",
            &[],
            Some(SslModeTooWeak),
        ),
        // Not libpq: other keywords, plain text (Npgsql strings: the drivers' tests).
        (
            "Host=db;Database=app;SSL Mode=Disable",
            &[],
            Some(SslModeTooWeak),
        ),
        ("vhost=db", &[], None),
        ("user=app dbname=app", &[], None),
        // Driver-qualified schemes.
        (
            "postgresql+psycopg2://db/app?sslmode=verify-full&sslrootcert=/ca",
            &[],
            None,
        ),
        ("postgresql+psycopg://db/app", &[], Some(SslModeUnset)),
        // An unknown dialect's own TLS parameter (asyncpg and pg8000: the drivers' tests).
        (
            "postgresql+pypostgresql://db/app?sslcontext=x",
            &[],
            Some(Unverifiable),
        ),
        (
            "postgresql+pypostgresql://db/app?sslmode=verify-full&sslrootcert=/ca",
            &[],
            None,
        ),
        (
            "postgresql+pypostgresql://db/app?sslmode=prefer",
            &[],
            Some(SslModeTooWeak),
        ),
    ];
    for (url, extra, want) in cases {
        let mut env = vec![("DATABASE_URL", *url)];
        env.extend_from_slice(extra);
        let got = codes(&pod_env(&env));
        let want: Vec<_> = want.map(|c| one("DATABASE_URL", c)).unwrap_or_default();
        // A PGHOST in `extra` is a target of its own: keep only the string's findings.
        let got: Vec<_> = got
            .into_iter()
            .filter(|(_, v, _)| v == "DATABASE_URL")
            .collect();
        assert_eq!(got, want, "{url} {extra:?}");
    }
}

#[test]
fn jdbc_urls() {
    use Code::*;
    let cases: &[(&str, Option<Code>)] = &[
        (
            "jdbc:postgresql://db:5432/app?sslmode=verify-full&sslrootcert=/ca.crt",
            None,
        ),
        (
            "jdbc:postgresql://db/app?sslmode=VERIFY-FULL&sslrootcert=/ca.crt",
            None,
        ),
        // pgjdbc ignores PGSSLMODE/PGSSLROOTCERT (set in every case here).
        ("jdbc:postgresql://db/app", Some(SslModeUnset)),
        ("jdbc:postgresql://db/app?ssl=true", Some(RootCertMissing)),
        ("jdbc:postgresql://db/app?ssl&sslrootcert=/ca", None),
        ("jdbc:postgresql://db/app?ssl=false", Some(SslModeTooWeak)),
        (
            "jdbc:postgresql://db/app?sslmode=require&sslrootcert=/ca",
            Some(SslModeTooWeak),
        ),
        (
            "jdbc:postgresql://db/app?sslmode=verify-full&sslfactory=org.postgresql.ssl.NonValidatingFactory",
            Some(VerificationDisabled),
        ),
        (
            "jdbc:postgresql://db/app?sslmode=verify-full&sslfactory=org.postgresql.ssl.DefaultJavaSSLFactory",
            None,
        ),
        (
            "jdbc:postgresql://db/app?sslmode=require&sslfactory=org.postgresql.ssl.DefaultJavaSSLFactory",
            Some(RootCertSystemNeedsVerifyFull),
        ),
        (
            "jdbc:postgresql://db/app?sslmode=verify-full&sslrootcert=/ca&sslfactory=com.example.Factory",
            Some(Unverifiable),
        ),
        (
            "jdbc:postgresql://db/app?sslmode=verify-full&sslrootcert=/ca&sslhostnameverifier=com.example.V",
            Some(Unverifiable),
        ),
        (
            "jdbc:postgresql://db/app?sslmode=bogus",
            Some(SslModeInvalid),
        ),
        ("jdbc:postgresql://db/app/x", Some(ConnectionStringInvalid)),
        ("jdbc:postgresql://localhost:5432/app", None),
        ("jdbc:postgresql:app", None),
        (
            "jdbc:otel:postgresql://db/app?sslmode=disable",
            Some(SslModeTooWeak),
        ),
        ("jdbc:mysql://db/app", None),
    ];
    for (url, want) in cases {
        let w = pod_env(&[("SPRING_DATASOURCE_URL", url), VF, CA]);
        let got: Vec<_> = codes(&w)
            .into_iter()
            .filter(|(_, v, _)| v == "SPRING_DATASOURCE_URL")
            .collect();
        let want: Vec<_> = want
            .map(|c| one("SPRING_DATASOURCE_URL", c))
            .unwrap_or_default();
        assert_eq!(got, want, "{url}");
    }
}

#[test]
fn every_container_list_and_sockets() {
    let bad = json!([{"name": "PGHOST", "value": "db"}]);
    let w = pod_with(
        json!([{"name": "app", "env": bad}]),
        json!({
            "initContainers": [{"name": "migrate", "env": bad}, {"name": "sidecar", "restartPolicy": "Always", "env": bad}],
            "ephemeralContainers": [{"name": "debug", "env": bad}],
        }),
    );
    let settings = Settings::default();
    let sources = Sources::default();
    let r = report_with(&w, &sources, &settings);
    let lists: Vec<_> = r
        .containers
        .iter()
        .map(|c| (c.name, c.list, c.verdict()))
        .collect();
    assert_eq!(
        lists,
        vec![
            ("migrate", ContainerList::Init, Verdict::Violation),
            ("sidecar", ContainerList::Init, Verdict::Violation),
            ("app", ContainerList::Main, Verdict::Violation),
            ("debug", ContainerList::Ephemeral, Verdict::Violation),
        ]
    );
}

#[test]
fn loopback_policy_and_host_network() {
    let env =
        json!([{"name": "DATABASE_URL", "value": "postgres://localhost/app?sslmode=disable"}]);
    let w = pod_with(json!([{"name": "app", "env": env}]), json!({}));
    let settings = Settings::default();
    let sources = Sources::default();
    let r = report_with(&w, &sources, &settings);
    assert!(r.containers[0].findings.is_empty());
    assert!(matches!(
        r.containers[0].notes[..],
        [Note::LoopbackAllowed {
            if_remote: Code::SslModeTooWeak,
            ..
        }]
    ));
    let check = Settings {
        loopback: LoopbackPolicy::Check,
        ..Settings::default()
    };
    assert_eq!(
        codes_with(&w, &sources, &check),
        one("DATABASE_URL", Code::SslModeTooWeak)
    );
    let host_net = pod_with(
        json!([{"name": "app", "env": env}]),
        json!({"hostNetwork": true}),
    );
    assert_eq!(codes(&host_net), one("DATABASE_URL", Code::SslModeTooWeak));
}

#[test]
fn env_semantics_feed_the_verdict() {
    use Code::*;
    // $(VAR) expansion builds the URL; a service link host is a cluster IP.
    let w = pod_env(&[
        ("DB_HOST", "db"),
        ("DATABASE_URL", "postgres://$(DB_HOST)/app"),
    ]);
    assert_eq!(codes(&w), one("DATABASE_URL", SslModeUnset));
    let w = pod_env(&[(
        "DATABASE_URL",
        "postgres://$(PG_SERVICE_HOST)/app?sslmode=disable",
    )]);
    assert_eq!(codes(&w), one("DATABASE_URL", SslModeTooWeak));
    // `$$(X)` is an escape, not a reference: the host stays literal text.
    let w = pod_env(&[("DATABASE_URL", "postgres://$$(LOCAL)/app?sslmode=disable")]);
    assert_eq!(codes(&w), one("DATABASE_URL", SslModeTooWeak));
    // A later duplicate wins, and is noted.
    let w = pod_env(&[
        ("PGHOST", "db"),
        ("PGSSLMODE", "verify-full"),
        ("PGSSLMODE", "disable"),
    ]);
    assert_eq!(codes(&w), one("PGHOST", SslModeTooWeak));
    let settings = Settings::default();
    let sources = Sources::default();
    let r = report_with(&w, &sources, &settings);
    assert!(
        r.containers[0]
            .notes
            .iter()
            .any(|n| matches!(n, Note::Redefined { variable } if variable == "PGSSLMODE"))
    );

    // envFrom order, prefix, env override, with resolved sources.
    let w = pod_with(
        json!([{"name": "app",
            "envFrom": [{"configMapRef": {"name": "db"}}, {"secretRef": {"name": "creds"}, "prefix": "APP_"}],
            "env": [{"name": "PGSSLMODE", "value": "verify-full"}]}]),
        json!({}),
    );
    let sources = Sources::default()
        .with(
            SourceKind::ConfigMap,
            "db",
            &[
                ("PGHOST", "db"),
                ("PGSSLMODE", "disable"),
                ("PGSSLROOTCERT", "/ca"),
            ],
        )
        .with(
            SourceKind::Secret,
            "creds",
            &[("DATABASE_URL", "postgres://u:pw@db/app?sslmode=require")],
        );
    let got = codes_with(&w, &sources, &Settings::default());
    assert_eq!(
        got,
        vec![("app".into(), "APP_DATABASE_URL".into(), SslModeTooWeak)]
    );
    let r = report_with(&w, &sources, &settings);
    assert_eq!(
        r.containers[0].findings[0].origin,
        Some(Origin::EnvFrom {
            kind: SourceKind::Secret,
            name: "creds",
            key: "DATABASE_URL"
        })
    );
}

#[test]
fn hidden_values_are_never_guessed() {
    use Code::*;
    let secret_ref =
        |var: &str| json!({"name": var, "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}});
    let lit = |var: &str, v: &str| json!({"name": var, "value": v});
    let run = |env: Value| codes(&pod_with(json!([{"name": "app", "env": env}]), json!({})));

    // A hidden sslmode decides: Unresolved, not a violation.
    assert_eq!(
        run(json!([lit("PGHOST", "db"), secret_ref("PGSSLMODE")])),
        one("PGHOST", Unresolved)
    );
    // A hidden connection-string variable is a client with an Unresolved target.
    assert_eq!(
        run(json!([secret_ref("DATABASE_URL")])),
        one("DATABASE_URL", Unresolved)
    );
    assert_eq!(
        run(json!([secret_ref("POSTGRES_URI")])),
        one("POSTGRES_URI", Unresolved)
    );
    assert_eq!(
        run(json!([secret_ref("app_database_url")])),
        one("app_database_url", Unresolved)
    );
    // Other hidden names do not.
    assert_eq!(run(json!([secret_ref("API_TOKEN")])), vec![]);
    // A hidden PGHOST makes a client too.
    assert_eq!(
        run(json!([secret_ref("PGHOST"), VF_JSON(), CA_JSON()])),
        vec![]
    );
    assert_eq!(
        run(json!([secret_ref("PGHOST")])),
        one("PGHOST", Unresolved)
    );
    // A visible violation at higher precedence is still a violation.
    assert_eq!(
        run(json!([
            lit("DATABASE_URL", "postgres://db/app?sslmode=disable"),
            secret_ref("PGSSLMODE")
        ])),
        one("DATABASE_URL", SslModeTooWeak)
    );
    // A hidden password does not matter.
    assert_eq!(
        run(json!([
            secret_ref("PASS"),
            lit(
                "DATABASE_URL",
                "postgres://u:$(PASS)@db/app?sslmode=verify-full&sslrootcert=/ca"
            )
        ])),
        vec![]
    );
    // A hidden sslmode inside the string.
    assert_eq!(
        run(json!([
            secret_ref("MODE"),
            lit("DATABASE_URL", "postgres://db/app?sslmode=$(MODE)")
        ])),
        one("DATABASE_URL", Unresolved)
    );
    // The hidden host could be loopback: Unresolved, with the violation behind it.
    let env = json!([secret_ref("PGHOST"), lit("PGSSLMODE", "disable")]);
    let w = pod_with(json!([{"name": "app", "env": env}]), json!({}));
    let settings = Settings::default();
    let sources = Sources::default();
    let r = report_with(&w, &sources, &settings);
    assert_eq!(r.containers[0].findings[0].code, Unresolved);
    assert_eq!(r.containers[0].findings[0].if_remote, Some(SslModeTooWeak));

    // Unresolved envFrom: may define PGSSLMODE, so Unresolved, not SslModeUnset.
    let open = |env: Value| {
        codes(&pod_with(
            json!([{"name": "app", "envFrom": [{"secretRef": {"name": "db"}}], "env": env}]),
            json!({}),
        ))
    };
    assert_eq!(
        open(json!([lit("PGHOST", "db")])),
        one("PGHOST", Unresolved)
    );
    assert_eq!(
        open(json!([lit("PGHOST", "db"), lit("PGSSLMODE", "disable")])),
        one("PGHOST", SslModeTooWeak)
    );
    // No visible target, only an unresolved envFrom: not reported (documented blind spot).
    assert_eq!(open(json!([])), vec![]);
    assert_eq!(open(json!([lit("OTHER", "x")])), vec![]);

    // A synced cache: an absent optional reference sets nothing.
    let optional = json!([lit("PGHOST", "db"), VF_JSON(), CA_JSON(),
        {"name": "PGSSLMODE_X", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k", "optional": true}}}]);
    let w = pod_with(json!([{"name": "app", "env": optional}]), json!({}));
    let synced = Sources {
        synced: true,
        ..Sources::default()
    };
    assert_eq!(codes_with(&w, &synced, &Settings::default()), vec![]);

    // Policy decides how Unresolved weighs.
    let w = pod_env(&[]);
    let _ = w;
    let w = pod_with(
        json!([{"name": "app", "env": [secret_ref("DATABASE_URL")]}]),
        json!({}),
    );
    let deny = Settings {
        unresolved: Treatment::Deny,
        ..Settings::default()
    };
    let sources = Sources::default();
    assert!(report_with(&w, &sources, &deny).denied());
    assert!(!report_with(&w, &sources, &Settings::default()).denied());
    let allow = Settings {
        unresolved: Treatment::Allow,
        ..Settings::default()
    };
    assert_eq!(
        report_with(&w, &sources, &allow).containers[0].verdict(),
        Verdict::Pass
    );
}

#[allow(non_snake_case)]
fn VF_JSON() -> Value {
    json!({"name": VF.0, "value": VF.1})
}

#[allow(non_snake_case)]
fn CA_JSON() -> Value {
    json!({"name": CA.0, "value": CA.1})
}

#[test]
fn notes() {
    let settings = Settings::default();
    let sources = Sources::default();
    let w = pod_env(&[
        ("PGHOST", "db"),
        VF,
        ("PGSSLROOTCERT", "system"),
        ("SSL_CERT_FILE", "/x"),
    ]);
    let r = report_with(&w, &sources, &settings);
    assert!(r.containers[0].findings.is_empty());
    assert!(r.containers[0].notes.contains(&Note::SystemTrustStore {
        variable: "PGHOST".into()
    }));
    assert!(r.containers[0].notes.contains(&Note::SslCertEnv {
        variable: "SSL_CERT_FILE"
    }));
    let w = pod_env(&[("PGHOST", "db"), ("PGSERVICE", ""), VF, CA]);
    let r = report_with(&w, &sources, &settings);
    assert!(r.containers[0].notes.contains(&Note::EmptyService {
        variable: "PGSERVICE".into()
    }));
    let w = pod_env(&[(
        "DATABASE_URL",
        "postgres://db/app?sslmode=verify-full&sslrootcert=/ca&search_path=public",
    )]);
    let r = report_with(&w, &sources, &settings);
    assert!(matches!(
        r.containers[0].notes[..],
        [Note::UnknownKeywords { count: 1, .. }]
    ));
}

fn exempt_pod(annotations: Value) -> Workload {
    workload(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "annotations": annotations},
        "spec": {"containers": [
            {"name": "app", "env": [{"name": "PGHOST", "value": "db"}]},
            {"name": "other", "env": [{"name": "PGHOST", "value": "db"}]},
        ]}
    }))
}

#[test]
fn exemptions() {
    let settings = Settings::default();
    let sources = Sources::default();
    let verdicts = |w: &Workload| {
        let r = report_with(w, &sources, &settings);
        let object: Vec<Code> = r.findings.iter().map(|f| f.code).collect();
        let containers: Vec<Verdict> = r.containers.iter().map(|c| c.verdict()).collect();
        (object, containers, r.denied())
    };
    use Verdict::*;
    let w = exempt_pod(
        json!({"verifyfull.dev/exempt": "true", "verifyfull.dev/exempt-reason": "legacy, ticket 42"}),
    );
    assert_eq!(verdicts(&w), (vec![], vec![Exempt, Exempt], false));
    let w =
        exempt_pod(json!({"verifyfull.dev/exempt": "app", "verifyfull.dev/exempt-reason": "r"}));
    assert_eq!(verdicts(&w), (vec![], vec![Exempt, Violation], true));
    let w = exempt_pod(
        json!({"verifyfull.dev/exempt": "app, other", "verifyfull.dev/exempt-reason": "r", "verifyfull.dev/exempt-until": "2026-06-01"}),
    );
    assert_eq!(verdicts(&w), (vec![], vec![Exempt, Exempt], false));
    // Expired (a date ends at the end of that day UTC; now is 2026-06-01T12:00Z).
    let w = exempt_pod(
        json!({"verifyfull.dev/exempt": "true", "verifyfull.dev/exempt-reason": "r", "verifyfull.dev/exempt-until": "2026-05-31"}),
    );
    assert_eq!(verdicts(&w), (vec![], vec![Violation, Violation], true));
    let w = exempt_pod(
        json!({"verifyfull.dev/exempt": "true", "verifyfull.dev/exempt-reason": "r", "verifyfull.dev/exempt-until": "2026-06-01T11:59:59Z"}),
    );
    assert!(verdicts(&w).2);
    let w =
        exempt_pod(json!({"verifyfull.dev/exempt": "true", "verifyfull.dev/exempt-reason": " "}));
    assert_eq!(
        verdicts(&w),
        (
            vec![Code::ExemptionReasonMissing],
            vec![Violation, Violation],
            true
        )
    );
    let w = exempt_pod(
        json!({"verifyfull.dev/exempt": "true", "verifyfull.dev/exempt-reason": "r", "verifyfull.dev/exempt-until": "next week"}),
    );
    assert_eq!(verdicts(&w).0, vec![Code::ExemptionInvalid]);
    let w = exempt_pod(
        json!({"verifyfull.dev/exempt": "app,ghost", "verifyfull.dev/exempt-reason": "r"}),
    );
    assert_eq!(
        verdicts(&w),
        (
            vec![Code::ExemptionInvalid],
            vec![Violation, Violation],
            true
        )
    );
    let w =
        exempt_pod(json!({"verifyfull.dev/exempt": "false", "verifyfull.dev/exempt-reason": "r"}));
    assert_eq!(verdicts(&w), (vec![], vec![Violation, Violation], true));

    // On a workload's own metadata: not applied, reported with where it belongs.
    let d = workload(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d", "annotations": {"verifyfull.dev/exempt": "true", "verifyfull.dev/exempt-reason": "r"}},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "env": [{"name": "PGHOST", "value": "db"}]}]}}}
    }));
    let r = report_with(&d, &sources, &settings);
    assert!(matches!(
        r.findings[..],
        [Finding {
            code: Code::ExemptionInvalid,
            cause: Cause::ExemptionMisplaced {
                path: "spec.template.metadata.annotations"
            },
            ..
        }]
    ));
    assert_eq!(r.containers[0].verdict(), Violation);
    // On the template: applied.
    let d = workload(json!({
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"},
        "spec": {"jobTemplate": {"spec": {"template": {
            "metadata": {"annotations": {"verifyfull.dev/exempt": "true", "verifyfull.dev/exempt-reason": "r"}},
            "spec": {"containers": [{"name": "app", "env": [{"name": "PGHOST", "value": "db"}]}]}}}}}
    }));
    assert!(!report_with(&d, &sources, &settings).denied());
}

#[test]
fn messages_name_the_fix_and_fit_warnings() {
    let secret = json!([{"name": "PGSSLMODE", "valueFrom": {"secretKeyRef": {"name": "db", "key": "mode"}}},
        {"name": "PGHOST", "value": "db"}]);
    let w = pod_with(json!([{"name": "api", "env": secret}]), json!({}));
    let settings = Settings::default();
    let sources = Sources::default();
    let r = report_with(&w, &sources, &settings);
    let f = &r.containers[0].findings[0];
    let msg = f.message(Some("api"));
    assert!(msg.contains("container api"), "{msg}");
    assert!(msg.contains("PGSSLMODE (Secret db/mode)"), "{msg}");
    assert!(msg.contains("Fix:"), "{msg}");

    let w = pod_env(&[("DATABASE_URL", "postgres://db/app?sslmode=require")]);
    let r = report_with(&w, &sources, &settings);
    let f = &r.containers[0].findings[0];
    assert_eq!(
        f.message(Some("app")),
        "container app: DATABASE_URL (literal value): SslModeTooWeak: sslmode=require: the connection is encrypted but nothing checks who the server is. Fix: set sslmode=verify-full and sslrootcert=<CA file> in DATABASE_URL."
    );
    let warning = f.warning(Some("app"));
    assert!(
        warning.starts_with("app/DATABASE_URL: SslModeTooWeak: "),
        "{warning}"
    );
    assert!(warning.chars().count() <= crate::message::WARNING_LIMIT);
}

/// A `$(VAR)` chain that would double past the limits: the settings it feeds are
/// `Unresolved` (never guessed), the variable where expansion stopped is named in a note,
/// and a visible weak setting elsewhere is still a violation.
#[test]
fn expansion_bombs_are_unresolved_with_a_note() {
    let mut vars: Vec<(String, String)> = vec![("B0".into(), "x".repeat(16))];
    for i in 1..40 {
        vars.push((format!("B{i}"), format!("$(B{})$(B{})", i - 1, i - 1)));
    }
    vars.push(("PGHOST".into(), "$(B39)".into()));
    vars.push((
        "DATABASE_URL".into(),
        "postgres://db.example.net/app?sslmode=verify-full&sslrootcert=$(B39)".into(),
    ));
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let w = pod_env(&pairs);
    let settings = Settings::default();
    let sources = Sources::default();
    let r = report_with(&w, &sources, &settings);
    let c = &r.containers[0];
    assert!(c.client);
    let found: Vec<(&str, Code)> = c
        .findings
        .iter()
        .map(|f| (f.variable.as_deref().unwrap_or(""), f.code))
        .collect();
    assert!(
        found.contains(&("DATABASE_URL", Code::Unresolved)),
        "{found:?}"
    );
    assert!(found.contains(&("PGHOST", Code::Unresolved)), "{found:?}");
    assert!(
        c.notes
            .iter()
            .any(|n| matches!(n, Note::ExpansionLimit { variable } if variable == "B13")),
        "{:?}",
        c.notes
    );
    // A weak setting in plain sight still denies.
    vars.push((
        "WEAK_URL".into(),
        "postgres://db.example.net/app?sslmode=disable&application_name=$(B39)".into(),
    ));
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let w = pod_env(&pairs);
    assert!(
        codes(&w).contains(&("app".into(), "WEAK_URL".into(), Code::SslModeTooWeak)),
        "{:?}",
        codes(&w)
    );
}

/// docs/drivers.md, "Commands": connection strings and libpq tools' hosts in the command
/// line, after `$(VAR)` expansion.
#[test]
fn command_and_args() {
    use Code::*;
    let container = |command: Value, args: Value, env: Value| {
        pod_with(
            json!([{"name": "app", "command": command, "args": args, "env": env}]),
            json!({}),
        )
    };
    let verified = json!([
        {"name": "PGSSLMODE", "value": "verify-full"},
        {"name": "PGSSLROOTCERT", "value": "/ca"}
    ]);
    type Case = (Value, Value, Value, Vec<(String, String, Code)>);
    let cases: Vec<Case> = vec![
        // A backup CronJob's pg_dump with a host and no PGSSLMODE.
        (
            json!(["pg_dump", "-h", "db.prod.svc", "-U", "app"]),
            json!([]),
            json!([]),
            one("command[1]", SslModeUnset),
        ),
        (
            json!(["/usr/bin/pg_dump"]),
            json!(["--host=db.prod.svc", "--port=5433"]),
            verified.clone(),
            vec![],
        ),
        (
            json!([]),
            json!(["psql", "-hdb.prod.svc"]),
            json!([]),
            one("args[1]", SslModeUnset),
        ),
        // Only loopback: an in-Pod proxy.
        (
            json!(["pg_isready", "-h", "localhost"]),
            json!([]),
            json!([]),
            vec![],
        ),
        // `--flag=value` and plain arguments are recognised by value.
        (
            json!(["/app"]),
            json!(["--database-url=postgresql://db.prod.svc/app?sslmode=require"]),
            json!([]),
            one("args[0]", SslModeTooWeak),
        ),
        (
            json!([]),
            json!(["jdbc:postgresql://db.prod.svc/app"]),
            json!([]),
            one("args[0]", SslModeUnset),
        ),
        (
            json!([]),
            json!(["--db", "Host=db.prod.svc;SSL Mode=Require"]),
            json!([]),
            one("args[1]", SslModeTooWeak),
        ),
        // `$(VAR)` is expanded first.
        (
            json!(["psql", "-h", "$(DB_HOST)"]),
            json!([]),
            json!([{"name": "DB_HOST", "value": "db.prod.svc"}]),
            one("command[1]", SslModeUnset),
        ),
        // A script: its URLs, and the tool that starts it.
        (
            json!([
                "sh",
                "-c",
                "psql 'postgresql://db.prod.svc/app?sslmode=disable' -c 'select 1'"
            ]),
            json!([]),
            json!([]),
            one("command[2]", SslModeTooWeak),
        ),
        (
            json!([
                "/bin/bash",
                "-c",
                "exec pg_dump -h db.prod.svc app > /backup/app.sql"
            ]),
            json!([]),
            verified.clone(),
            vec![],
        ),
        (
            json!([
                "/bin/bash",
                "-c",
                "exec pg_dump -h db.prod.svc app > /backup/app.sql"
            ]),
            json!([]),
            json!([]),
            one("command[2]", SslModeUnset),
        ),
        // Not a tool, not a connection string.
        (
            json!(["nginx", "-h", "db.prod.svc"]),
            json!([]),
            json!([]),
            vec![],
        ),
    ];
    for (command, args, env, want) in cases {
        let w = container(command.clone(), args.clone(), env);
        assert_eq!(codes(&w), want, "{command} {args}");
    }
    // The fix of a tool's host sets the environment: `-h` takes no sslmode.
    let w = container(
        json!(["pg_dump", "-h", "db.prod.svc"]),
        json!([]),
        json!([]),
    );
    let (sources, settings) = (Sources::default(), Settings::default());
    let r = report_with(&w, &sources, &settings);
    let f = &r.containers[0].findings[0];
    assert_eq!(
        f.fix(),
        "set PGSSLMODE=verify-full and PGSSLROOTCERT=<CA file>"
    );
}

/// A driver's deciding variable that cannot be read is `Unresolved`: neither a pass nor a
/// violation (docs/rules.md, "Hidden values").
#[test]
fn drivers_never_decide_on_hidden_settings() {
    let secret = |name: &str| json!({"name": name, "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}});
    let lit = |name: &str, value: &str| json!({"name": name, "value": value});
    let p = "QUARKUS_DATASOURCE_REACTIVE_";
    let cases = [
        json!([
            lit(&format!("{p}URL"), "postgresql://db.prod.svc/app"),
            lit(&format!("{p}POSTGRESQL_SSL_MODE"), "verify-full"),
            lit(&format!("{p}HOSTNAME_VERIFICATION_ALGORITHM"), "HTTPS"),
            lit(&format!("{p}TRUST_CERTIFICATE_PEM_CERTS"), "/ca"),
            secret(&format!("{p}TRUST_ALL")),
        ]),
        json!([
            lit("DATABASE_URL", "postgresql+asyncpg://db.prod.svc/app"),
            secret("PGSSLMODE")
        ]),
        json!([
            lit(
                "DATABASE_URL",
                "postgresql+asyncpg://db.prod.svc/app?ssl=verify-full"
            ),
            secret("PGSSLROOTCERT")
        ]),
        json!([
            lit(
                "SPRING_R2DBC_URL",
                "r2dbc:postgresql://db.prod.svc/app?sslRootCert=/ca"
            ),
            secret("SPRING_R2DBC_PROPERTIES_SSLMODE")
        ]),
    ];
    for env in cases {
        let w = pod_with(json!([{"name": "app", "env": env}]), json!({}));
        let got: Vec<Code> = codes(&w).into_iter().map(|(_, _, c)| c).collect();
        assert_eq!(got, vec![Code::Unresolved], "{env}");
    }
}

/// An Npgsql host that is a path (or `@abstract`) is a Unix socket: no TLS applies, so no
/// target (docs/drivers.md, "Npgsql").
#[test]
fn npgsql_unix_sockets_are_not_network_targets() {
    for value in [
        "Host=/var/run/postgresql;Database=app",
        "Host=@pgsocket;Database=app;SSL Mode=Disable",
    ] {
        let w = pod_env(&[("ConnectionStrings__Default", value)]);
        assert_eq!(codes(&w), vec![], "{value}");
        assert!(!client(&w), "{value}");
    }
}

/// Settings that once passed although the driver that reads them would not verify, each
/// with the reason it must not (a review of the drivers' rules).
#[test]
fn drivers_close_the_reviewed_gaps() {
    use Code::*;
    let lit = |name: &str, value: &str| json!({"name": name, "value": value});
    let secret = |name: &str| json!({"name": name, "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}});
    let p = "QUARKUS_DATASOURCE_REACTIVE_";
    let quarkus = |extra: Vec<Value>| {
        let mut env = vec![
            lit(&format!("{p}URL"), "postgresql://db.prod.svc/app"),
            lit(&format!("{p}POSTGRESQL_SSL_MODE"), "verify-full"),
            lit(&format!("{p}HOSTNAME_VERIFICATION_ALGORITHM"), "HTTPS"),
            lit(&format!("{p}TRUST_CERTIFICATE_PEM_CERTS"), "/ca"),
        ];
        env.extend(extra);
        Value::Array(env)
    };
    let cases: Vec<(Value, Vec<Code>)> = vec![
        // A password from a Secret does not hide a weak mode.
        (
            json!([
                secret("DB_PASSWORD"),
                lit(
                    "SPRING_R2DBC_URL",
                    "r2dbc:postgresql://app:$(DB_PASSWORD)@db.prod.svc/app"
                )
            ]),
            vec![SslModeUnset],
        ),
        (
            json!([
                secret("DB_PASSWORD"),
                lit(
                    "ConnectionStrings__Default",
                    "Host=db.prod.svc;Password=$(DB_PASSWORD);SSL Mode=Disable"
                )
            ]),
            vec![SslModeTooWeak],
        ),
        // Elsewhere a hidden span decides: Unresolved.
        (
            json!([
                secret("OPTS"),
                lit(
                    "SPRING_R2DBC_URL",
                    "r2dbc:postgresql://db.prod.svc/app?$(OPTS)"
                )
            ]),
            vec![Unresolved],
        ),
        // The other drivers' variables from a Secret, or made of one.
        (
            json!([secret("ConnectionStrings__Default")]),
            vec![Unresolved],
        ),
        (
            json!([secret("CONN"), lit("ConnectionStrings__Default", "$(CONN)")]),
            vec![Unresolved],
        ),
        (json!([secret("SPRING_R2DBC_URL")]), vec![Unresolved]),
        // A hidden NODE_TLS_REJECT_UNAUTHORIZED could be 0.
        (
            json!([
                lit(
                    "DATABASE_URL",
                    "postgresql://db.prod.svc/app?sslmode=verify-full&sslrootcert=/ca"
                ),
                secret("NODE_TLS_REJECT_UNAUTHORIZED")
            ]),
            vec![Unresolved],
        ),
        // A libpq keyword string with a `;` in a value is libpq's.
        (
            json!([lit(
                "DATABASE_URL",
                "host=db.prod.svc sslmode=disable user=app;sslmode=VerifyFull"
            )]),
            vec![SslModeTooWeak],
        ),
        // A fragment is dropped by URL parsers: what follows `#` is not there.
        (
            json!([lit(
                "SPRING_R2DBC_URL",
                "r2dbc:postgresql://db.prod.svc/app#?sslMode=VERIFY_FULL"
            )]),
            vec![SslModeUnset],
        ),
        (
            json!([lit(
                "APP_DB",
                "r2dbc:postgresql://db.prod.svc#@localhost/app"
            )]),
            vec![SslModeUnset],
        ),
        // A query `host=` and an empty host.
        (
            json!([lit(
                "DATABASE_URL",
                "postgresql+asyncpg://app@/app?host=db.prod.svc&ssl=disable"
            )]),
            vec![SslModeTooWeak],
        ),
        (
            json!([lit(
                &format!("{p}URL"),
                "postgresql://localhost/app?host=db.prod.svc&sslmode=disable"
            )]),
            vec![SslModeTooWeak],
        ),
        // Vert.x reads keys in any case, undecoded.
        (
            quarkus(vec![lit(
                &format!("{p}URL"),
                "postgresql://db.prod.svc/app?ssl%6Dode=verify-full",
            )]),
            vec![Unverifiable],
        ),
        // SmallRye's booleans; a TLS registry configuration is outside the Pod.
        (
            quarkus(vec![lit(&format!("{p}TRUST_ALL"), "yes")]),
            vec![VerificationDisabled],
        ),
        (
            quarkus(vec![lit(&format!("{p}TLS_CONFIGURATION_NAME"), "db")]),
            vec![Unverifiable],
        ),
        // Prisma runs on Node.js, whose adapter may read the URL in libpq mode.
        (
            json!([lit(
                "DATABASE_URL",
                "postgresql://db.prod.svc/app?schema=public&sslmode=require&sslaccept=strict&sslcert=/ca&uselibpqcompat=true"
            )]),
            vec![SslModeTooWeak],
        ),
        (
            json!([
                lit(
                    "DATABASE_URL",
                    "postgresql://db.prod.svc/app?schema=public&sslmode=require&sslaccept=strict&sslcert=/ca"
                ),
                lit("NODE_TLS_REJECT_UNAUTHORIZED", "0")
            ]),
            vec![VerificationDisabled],
        ),
        // R2DBC: the query's ssl replaces the scheme's.
        (
            json!([lit(
                "APP_DB",
                "r2dbcs:postgresql://db.prod.svc/app?ssl=false"
            )]),
            vec![SslModeUnset],
        ),
        // Empty .NET segments are allowed.
        (
            json!([lit(
                "ConnectionStrings__Default",
                "Host=db.prod.svc;;SSL Mode=Disable;"
            )]),
            vec![SslModeTooWeak],
        ),
    ];
    for (env, want) in cases {
        let w = pod_with(json!([{"name": "app", "env": env}]), json!({}));
        let got: Vec<Code> = codes(&w).into_iter().map(|(_, _, c)| c).collect();
        assert_eq!(got, want, "{env}");
    }
    // A tool's -d keyword string merges with its -h (its sslmode wins).
    let w = pod_with(
        json!([{"name": "app", "command": ["pg_dump", "-h", "db.prod.svc", "-d", "dbname=app sslmode=disable"],
            "env": [lit("PGSSLMODE", "verify-full"), lit("PGSSLROOTCERT", "/ca")]}]),
        json!({}),
    );
    let got: Vec<Code> = codes(&w).into_iter().map(|(_, _, c)| c).collect();
    assert_eq!(got, vec![SslModeTooWeak]);
    // A JDBC URL in a script is read once, as JDBC.
    let w = pod_with(
        json!([{"name": "app", "command": ["sh", "-c", "java -jar app.jar --url='jdbc:postgresql://db.prod.svc/app?sslmode=verify-full&sslrootcert=/ca'"]}]),
        json!({}),
    );
    assert_eq!(codes(&w), vec![]);
}

/// A `#` in a libpq URI: libpq reads past it, URL parsers drop the fragment.
#[test]
fn uri_fragments_are_judged_both_ways() {
    let w = pod_env(&[(
        "DATABASE_URL",
        "postgresql://db.prod.svc/app#?sslmode=verify-full&sslrootcert=/ca",
    )]);
    assert_eq!(codes(&w), one("DATABASE_URL", Code::SslModeUnset));
}

/// A Secret value the webhook's cache kept no text of is hidden, not visible text.
#[test]
fn secret_values_kept_as_hidden_stay_hidden() {
    let sources =
        Sources::default().with(SourceKind::Secret, "s", &[("k", crate::hosts::HIDDEN_STR)]);
    let p = "QUARKUS_DATASOURCE_REACTIVE_";
    let w = pod_with(
        json!([{"name": "app", "env": [
            {"name": format!("{p}URL"), "value": "postgresql://db.prod.svc/app"},
            {"name": format!("{p}POSTGRESQL_SSL_MODE"), "value": "verify-full"},
            {"name": format!("{p}HOSTNAME_VERIFICATION_ALGORITHM"), "value": "HTTPS"},
            {"name": format!("{p}TRUST_CERTIFICATE_PEM_CERTS"), "value": "/ca"},
            {"name": format!("{p}TRUST_ALL"), "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        ]}]),
        json!({}),
    );
    let got: Vec<Code> = codes_with(&w, &sources, &Settings::default())
        .into_iter()
        .map(|(_, _, c)| c)
        .collect();
    assert_eq!(got, vec![Code::Unresolved]);
}

/// Spring's `ssl` property and .NET strings with a keyword verifyfull does not know.
#[test]
fn spring_ssl_and_unknown_npgsql_keywords() {
    use Code::*;
    let cases: [(Pairs<'_>, Vec<Code>); 3] = [
        (
            &[
                ("SPRING_R2DBC_URL", "r2dbcs:postgresql://db.prod.svc/app"),
                ("SPRING_R2DBC_PROPERTIES_SSL", "false"),
            ],
            vec![SslModeUnset],
        ),
        (
            &[(
                "ConnectionStrings__Default",
                "Host=db.prod.svc;Some Future Option=1;SSL Mode=Prefer",
            )],
            vec![SslModeTooWeak],
        ),
        // Outside a .NET variable, an unknown keyword means it is not Npgsql's.
        (
            &[(
                "APP_SETTINGS",
                "Host=db.prod.svc;Some Future Option=1;SSL Mode=Prefer",
            )],
            vec![],
        ),
    ];
    for (env, want) in cases {
        let got: Vec<Code> = codes(&pod_env(env))
            .into_iter()
            .map(|(_, _, c)| c)
            .collect();
        assert_eq!(got, want, "{env:?}");
    }
}

#[test]
fn an_application_query_string_is_judged_as_the_url_it_makes() {
    let keycloak = |props: &str| {
        codes(&pod_env(&[
            ("KC_DB", "postgres"),
            ("KC_DB_URL_HOST", "db.example.net"),
            ("KC_DB_URL_PROPERTIES", props),
        ]))
    };
    let props = "KC_DB_URL_PROPERTIES";
    assert_eq!(keycloak("?sslmode=verify-full&sslrootcert=/ca.crt"), vec![]);
    assert_eq!(
        keycloak("?sslmode=require"),
        one(props, Code::SslModeTooWeak)
    );
    assert_eq!(keycloak("?ssl=true"), one(props, Code::RootCertMissing));
    assert_eq!(
        keycloak("?sslmode=verify-full&sslfactory=org.postgresql.ssl.NonValidatingFactory"),
        one(props, Code::VerificationDisabled)
    );
    // On loopback (a TLS sidecar), allowed by default.
    let local = codes(&pod_env(&[
        ("KC_DB", "postgres"),
        ("KC_DB_URL_HOST", "127.0.0.1"),
        ("KC_DB_URL_PROPERTIES", "?sslmode=disable"),
    ]));
    assert_eq!(local, vec![]);
}
