//! The cases (`cases.yaml`) and the two ways each is handed over: to a real driver, and in a
//! Pod to the engine.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    /// `postgresql://user@host:port/postgres?<params>`
    Url,
    /// `host=… port=… user=… dbname=postgres <params>`
    Kv,
    /// `jdbc:postgresql://host:port/postgres?<params>`
    Jdbc,
    /// No string: `PGHOST`, `PGPORT`, `PGUSER`.
    Env,
}

impl Form {
    pub const ALL: [Form; 4] = [Form::Url, Form::Kv, Form::Env, Form::Jdbc];

    pub fn title(self) -> &'static str {
        match self {
            Form::Url => "postgresql:// URLs",
            Form::Kv => "libpq keyword/value strings",
            Form::Jdbc => "JDBC URLs",
            Form::Env => "The libpq environment alone",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub id: String,
    pub form: Form,
    #[serde(default)]
    pub params: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// What the placeholders stand for.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `{ca}`: the trusted CA's certificate file.
    pub ca: String,
    /// `{missing}`: a path where no file is.
    pub missing: String,
}

impl Paths {
    /// The paths the engine's Pods use: fixed, so the generated documentation is stable.
    pub fn in_pod() -> Paths {
        Paths {
            ca: "/etc/postgresql-ca/ca.crt".into(),
            missing: "/etc/postgresql-ca/missing.crt".into(),
        }
    }

    fn fill(&self, s: &str) -> String {
        s.replace("{ca}", &self.ca)
            .replace("{missing}", &self.missing)
    }
}

/// Where a connection goes.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub database: &'a str,
}

impl Case {
    /// The connection string in the case's form (empty for the environment form).
    pub fn target(&self, to: Endpoint<'_>, paths: &Paths) -> String {
        let params = paths.fill(&self.params);
        let Endpoint {
            host,
            port,
            user,
            database,
        } = to;
        let query = if params.is_empty() {
            String::new()
        } else {
            format!("?{params}")
        };
        match self.form {
            Form::Url => format!("postgresql://{user}@{host}:{port}/{database}{query}"),
            Form::Kv => format!("host={host} port={port} user={user} dbname={database} {params}")
                .trim_end()
                .to_string(),
            // pgjdbc takes the user as a property when the URL has none.
            Form::Jdbc => format!("jdbc:postgresql://{host}:{port}/{database}{query}"),
            Form::Env => String::new(),
        }
    }

    /// The environment of the attempt: the case's variables, and for the environment form
    /// the server's address.
    pub fn env(&self, to: Endpoint<'_>, paths: &Paths) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = self
            .env
            .iter()
            .map(|(k, v)| (k.clone(), paths.fill(v)))
            .collect();
        if self.form == Form::Env {
            env.insert("PGHOST".into(), to.host.into());
            env.insert("PGPORT".into(), to.port.to_string());
            env.insert("PGUSER".into(), to.user.into());
        }
        env
    }

    /// A Pod whose one container hands the same settings to the driver, as a cluster
    /// would: the string in `DATABASE_URL` (JDBC: `SPRING_DATASOURCE_URL`), a real host.
    pub fn pod(&self) -> Value {
        let paths = Paths::in_pod();
        let to = Endpoint {
            host: "db.prod.svc",
            port: 5432,
            user: "app",
            database: "app",
        };
        let mut env: Vec<Value> = Vec::new();
        let target = self.target(to, &paths);
        match self.form {
            Form::Url | Form::Kv => env.push(json!({"name": "DATABASE_URL", "value": target})),
            Form::Jdbc => env.push(json!({"name": "SPRING_DATASOURCE_URL", "value": target})),
            Form::Env => {}
        }
        env.extend(
            self.env(to, &paths)
                .into_iter()
                .map(|(k, v)| json!({"name": k, "value": v})),
        );
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "lab", "namespace": "lab"},
            "spec": {"containers": [{"name": "app", "image": "app", "env": env}]},
        })
    }
}

pub fn load(path: &Path) -> Result<Vec<Case>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let cases: Vec<Case> =
        serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut seen = std::collections::BTreeSet::new();
    for c in &cases {
        if !seen.insert(c.id.as_str()) {
            return Err(format!("{}: case id {} is repeated", path.display(), c.id));
        }
    }
    Ok(cases)
}
