//! A deterministic, realistic mix of Pod-carrying manifests for the benchmarks: 1–6
//! containers, URIs, JDBC URLs, keyword/value strings, the libpq environment, envFrom,
//! Secret references, `$(VAR)` expansion, and containers that are not clients at all.
//! Shared by the engine and the CLI benchmarks.

use serde_json::{Value, json};

/// A small linear congruential generator: the same mix on every run.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const NOISE: &[(&str, &str)] = &[
    ("LOG_LEVEL", "info"),
    ("PORT", "8080"),
    ("JAVA_OPTS", "-Xmx512m -XX:+UseG1GC"),
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "http://otel-collector.observability:4317",
    ),
    ("FEATURE_FLAGS", "checkout-v2,fast-search"),
    ("TZ", "UTC"),
    ("REDIS_URL", "redis://cache.shop.svc:6379/0"),
    ("GOMAXPROCS", "2"),
];

const MODES: &[&str] = &["verify-full", "require", "prefer", "disable", "verify-ca"];

fn lit(name: &str, value: &str) -> Value {
    json!({"name": name, "value": value})
}

fn container(rng: &mut Rng, i: usize) -> Value {
    let mut env: Vec<Value> = Vec::new();
    let mut env_from: Vec<Value> = Vec::new();
    for _ in 0..rng.below(5) + 1 {
        let (n, v) = NOISE[rng.below(NOISE.len() as u64) as usize];
        env.push(lit(n, v));
    }
    let mode = rng.pick(MODES);
    let host = rng.pick(&[
        "orders-db.shop.svc",
        "10.0.3.7",
        "pg-primary.data.svc.cluster.local",
        "127.0.0.1",
    ]);
    match rng.below(9) {
        0 => env.push(lit(
            "DATABASE_URL",
            &format!("postgres://orders:s3cr3t-Passw0rd@{host}:5432/orders?sslmode={mode}&sslrootcert=/etc/verifyfull/ca/ca.crt"),
        )),
        1 => {
            env.push(lit("PGHOST", host));
            env.push(lit("PGSSLMODE", mode));
            env.push(lit("PGSSLROOTCERT", "/etc/verifyfull/ca/ca.crt"));
            env.push(json!({"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": "orders-db", "key": "password"}}}));
        }
        2 => env.push(lit(
            "SPRING_DATASOURCE_URL",
            &format!("jdbc:postgresql://{host}:5432/orders?sslmode={mode}&sslrootcert=/etc/ca.crt&ApplicationName=orders"),
        )),
        3 => env.push(lit(
            "DSN",
            &format!("host={host} port=5432 dbname=orders user=orders sslmode={mode} sslrootcert=/etc/ca.crt"),
        )),
        4 => env.push(json!({"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "orders-db-app", "key": "uri"}}})),
        5 => env_from.push(json!({"configMapRef": {"name": "db-env"}})),
        6 => {
            env.push(lit("DB_HOST", host));
            env.push(lit("DATABASE_URL", &format!("postgresql://orders@$(DB_HOST):5432/orders?sslmode={mode}")));
        }
        _ => {}
    }
    let mut c = json!({"name": format!("c{i}"), "image": "registry.example.com/shop/orders:1.42.0", "env": env});
    if !env_from.is_empty() {
        c["envFrom"] = Value::Array(env_from);
    }
    c["resources"] =
        json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}});
    c["ports"] = json!([{"containerPort": 8080, "name": "http"}]);
    c
}

/// A container of the second mix: the drivers beyond libpq and pgjdbc, and connection
/// strings in `command`/`args`.
fn driver_container(rng: &mut Rng, i: usize) -> Value {
    let mut env: Vec<Value> = Vec::new();
    for _ in 0..rng.below(5) + 1 {
        let (n, v) = NOISE[rng.below(NOISE.len() as u64) as usize];
        env.push(lit(n, v));
    }
    let host = rng.pick(&[
        "orders-db.shop.svc",
        "10.0.3.7",
        "pg-primary.data.svc.cluster.local",
    ]);
    let ca = "/etc/verifyfull/ca/ca.crt";
    let mut c =
        json!({"name": format!("c{i}"), "image": "registry.example.com/shop/orders:1.42.0"});
    match rng.below(8) {
        0 => {
            let mode = rng.pick(&["VerifyFull", "Require", "Prefer"]);
            env.push(lit("ConnectionStrings__Default", &format!(
                "Host={host};Port=5432;Database=orders;Username=orders;Password=s3cr3t-Passw0rd;SSL Mode={mode};Root Certificate={ca}")));
        }
        1 => {
            let mode = rng.pick(&["VERIFY_FULL", "REQUIRE", "verify-full"]);
            env.push(lit(
                "SPRING_R2DBC_URL",
                &format!("r2dbc:postgresql://{host}:5432/orders?sslMode={mode}&sslRootCert={ca}"),
            ));
        }
        2 => {
            let accept = rng.pick(&["strict", "accept_invalid_certs"]);
            env.push(lit("DATABASE_URL", &format!(
                "postgresql://orders:s3cr3t-Passw0rd@{host}:5432/orders?schema=public&sslmode=require&sslaccept={accept}&sslcert={ca}")));
        }
        3 => {
            env.push(lit(
                "DATABASE_URL",
                &format!("postgresql+asyncpg://orders@{host}/orders?ssl=verify-full"),
            ));
            env.push(lit("PGSSLROOTCERT", ca));
        }
        4 => {
            let p = "QUARKUS_DATASOURCE_REACTIVE_";
            env.push(lit(
                &format!("{p}URL"),
                &format!("postgresql://{host}:5432/orders"),
            ));
            env.push(lit(&format!("{p}POSTGRESQL_SSL_MODE"), "verify-full"));
            env.push(lit(&format!("{p}HOSTNAME_VERIFICATION_ALGORITHM"), "HTTPS"));
            env.push(lit(&format!("{p}TRUST_CERTIFICATE_PEM_CERTS"), ca));
        }
        5 => {
            c["command"] = json!([
                "pg_dump",
                "-h",
                host,
                "-U",
                "backup",
                "-f",
                "/backup/orders.sql",
                "orders"
            ]);
            env.push(lit("PGSSLMODE", rng.pick(&["verify-full", "require"])));
            env.push(lit("PGSSLROOTCERT", ca));
        }
        6 => {
            c["args"] = json!([
                "--port=8080",
                format!(
                    "--database-url=postgresql://orders@{host}/orders?sslmode=verify-full&sslrootcert={ca}"
                )
            ]);
            if rng.below(4) == 0 {
                env.push(lit("NODE_TLS_REJECT_UNAUTHORIZED", "0"));
            }
        }
        _ => {
            c["command"] = json!([
                "sh",
                "-c",
                format!(
                    "psql 'postgresql://orders@{host}/orders?sslmode=require' -c 'select 1' && exec /app"
                )
            ]);
        }
    }
    c["env"] = Value::Array(env);
    c["resources"] =
        json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}});
    c
}

/// One Pod-carrying object of the libpq/pgjdbc mix.
pub fn workload(rng: &mut Rng, n: usize) -> Value {
    workload_of(rng, n, container)
}

/// One Pod-carrying object of the drivers-and-arguments mix.
pub fn driver_workload(rng: &mut Rng, n: usize) -> Value {
    workload_of(rng, n, driver_container)
}

fn workload_of(rng: &mut Rng, n: usize, container: fn(&mut Rng, usize) -> Value) -> Value {
    let containers: Vec<Value> = (0..rng.below(6) + 1)
        .map(|i| container(rng, i as usize))
        .collect();
    let spec = json!({"containers": containers, "serviceAccountName": "orders"});
    let meta = json!({"name": format!("orders-{n}"), "namespace": "shop", "labels": {"app": "orders", "tier": "backend"}});
    let template = json!({"metadata": {"labels": {"app": "orders"}}, "spec": spec});
    match rng.below(10) {
        0 => json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}),
        1 => {
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": {"template": template}})
        }
        2 => json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta,
            "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": template}}}}),
        3 => json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta,
            "spec": {"serviceName": "orders", "selector": {"matchLabels": {"app": "orders"}}, "template": template}}),
        _ => json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "orders"}}, "template": template}}),
    }
}

/// The ConfigMap the mix's `envFrom` references.
pub fn config_map() -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "db-env", "namespace": "shop"},
        "data": {"PGHOST": "orders-db.shop.svc", "PGSSLMODE": "verify-full", "PGSSLROOTCERT": "/etc/ca.crt", "PGDATABASE": "orders"}})
}

/// Block-style YAML for a JSON value (strings double-quoted, as JSON escapes are YAML).
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    emit(v, 0, &mut out);
    out
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        other => other.to_string(),
    }
}

fn emit(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) => {
            for (k, val) in m {
                match val {
                    Value::Object(inner) if !inner.is_empty() => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        emit(val, indent + 2, out);
                    }
                    Value::Array(items) if !items.is_empty() => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        emit(val, indent, out);
                    }
                    Value::Object(_) => out.push_str(&format!("{pad}{k}: {{}}\n")),
                    Value::Array(_) => out.push_str(&format!("{pad}{k}: []\n")),
                    _ => out.push_str(&format!("{pad}{k}: {}\n", scalar(val))),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(m) if !m.is_empty() => {
                        let mut inner = String::new();
                        emit(item, indent + 2, &mut inner);
                        // The first key goes on the dash line.
                        let trimmed = inner.trim_start_matches(' ');
                        out.push_str(&format!("{pad}- {trimmed}"));
                    }
                    _ => out.push_str(&format!("{pad}- {}\n", scalar(item))),
                }
            }
        }
        _ => out.push_str(&format!("{pad}{}\n", scalar(v))),
    }
}
