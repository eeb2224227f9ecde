//! SQLAlchemy dialects whose driver is not libpq (docs/drivers.md, "asyncpg (SQLAlchemy)",
//! "pg8000 (SQLAlchemy)"): the URL's query keys become the driver's `connect()` arguments. `+asyncpg` takes `ssl=<mode>` and
//! its root certificate only from `PGSSLROOTCERT`; `sslmode=`/`sslrootcert=` are not
//! arguments of asyncpg (the application fails at start). `+pg8000` cannot express
//! verification in a URL at all.

use super::{
    CA, Driver, Environment, Judgement, Parsed, Signals, hidden, url, weak, weak_mode_text,
};
use crate::verdict::{Change, Code, Fix, FixValue, SslMode};

#[derive(Debug)]
pub(crate) struct Asyncpg;

#[derive(Debug)]
pub(crate) struct Pg8000;

const DIALECT_SIGNALS: Signals = Signals {
    value_prefixes: &["postgresql+", "postgres+"],
    name_prefixes: &[],
    separator: None,
};

fn dialect<'v>(value: &'v str, driver: &str) -> Option<&'v str> {
    let rest = value
        .strip_prefix("postgresql+")
        .or_else(|| value.strip_prefix("postgres+"))?;
    rest.strip_prefix(driver)?.strip_prefix(':')
}

impl Driver for Asyncpg {
    fn name(&self) -> &'static str {
        "asyncpg (SQLAlchemy)"
    }

    fn signals(&self) -> Signals {
        DIALECT_SIGNALS
    }

    fn recognise(&self, _: &str, value: &str) -> Option<Parsed> {
        dialect(value, "asyncpg").map(url)
    }

    fn judge(&self, _: &str, t: &Parsed, env: &dyn Environment) -> Judgement {
        // asyncpg reads `system` as a file name.
        let root_env = env.get("PGSSLROOTCERT");
        let root = matches!(root_env, Some(Some(v)) if !v.is_empty() && v != "system");
        let mut changes = vec![Change::Param {
            key: "ssl",
            value: FixValue::Literal("verify-full"),
            drop: &["sslmode", "sslrootcert"],
        }];
        if !root {
            changes.push(Change::Env {
                name: "PGSSLROOTCERT".into(),
                value: CA,
            });
        }
        let fixes = vec![Fix {
            driver: None,
            changes,
        }];
        let mode = match (t.last("ssl"), env.get("PGSSLMODE")) {
            (Some(v), _) => Some(SslMode::parse(v)),
            (None, Some(Some(v))) => Some(SslMode::parse(v)),
            (None, Some(None)) => return hidden("PGSSLMODE"),
            (None, None) => None,
        };
        let mut judged = match mode {
            None => Judgement::found(
                weak(None),
                "no ssl argument: asyncpg uses PGSSLMODE, else prefer (never verified, plaintext otherwise)",
                fixes,
            ),
            Some(None) => Judgement::found(
                Code::SslModeInvalid,
                "asyncpg refuses this ssl mode (disable, allow, prefer, require, verify-ca, verify-full): the application fails to connect",
                fixes,
            ),
            Some(Some(SslMode::VerifyFull)) if root => Judgement::pass(),
            Some(Some(SslMode::VerifyFull)) if root_env == Some(None) => hidden("PGSSLROOTCERT"),
            Some(Some(SslMode::VerifyFull)) => Judgement::found(
                Code::RootCertMissing,
                "verify-full without PGSSLROOTCERT: asyncpg fails, or trusts whatever the image has at ~/.postgresql/root.crt",
                fixes,
            ),
            Some(Some(m)) => Judgement::found(
                Code::SslModeTooWeak,
                format!("ssl={}: {}", m.as_str(), weak_mode_text(m)),
                fixes,
            ),
        };
        if t.has("sslmode") || t.has("sslrootcert") {
            judged = judged.note(
                "sslmode and sslrootcert are not asyncpg arguments: SQLAlchemy passes them on and the application fails at start; use ssl=verify-full and PGSSLROOTCERT",
            );
        }
        judged
    }
}

impl Driver for Pg8000 {
    fn name(&self) -> &'static str {
        "pg8000 (SQLAlchemy)"
    }

    fn signals(&self) -> Signals {
        DIALECT_SIGNALS
    }

    fn recognise(&self, _: &str, value: &str) -> Option<Parsed> {
        dialect(value, "pg8000").map(url)
    }

    fn judge(&self, _: &str, _: &Parsed, _: &dyn Environment) -> Judgement {
        Judgement::found(
            Code::Unverifiable,
            "a postgresql+pg8000 URL cannot express verification (pg8000 1.31+ tries TLS without verifying it); only an ssl_context in code can",
            Vec::new(),
        )
    }
}
