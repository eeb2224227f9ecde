//! The Vert.x PostgreSQL client as Quarkus configures it (docs/drivers.md, "Vert.x (Quarkus
//! reactive)"): `QUARKUS_DATASOURCE[__<NAME>_]_REACTIVE_URL`, or a `vertx-reactive:` URL.
//! The default is DISABLE; verify-full needs the host-name verification algorithm HTTPS
//! (Quarkus's default is NONE, and it refuses to start) and trust settings; trust-all
//! turns verification off. PG* variables are not read.

use std::borrow::Cow;

use super::{
    CA, Driver, Environment, Judgement, Parsed, Signals, after_postgres_scheme, hidden, url, weak,
    weak_mode_text,
};
use crate::verdict::{Change, Code, Fix, FixValue, SslMode};

#[derive(Debug)]
pub(crate) struct QuarkusReactive;

/// The datasource's TLS settings, after its prefix; the trust settings from the fourth on.
const SETTINGS: [&str; 7] = [
    "POSTGRESQL_SSL_MODE",
    "TRUST_ALL",
    "HOSTNAME_VERIFICATION_ALGORITHM",
    "TRUST_CERTIFICATE_PEM_CERTS",
    "TRUST_CERTIFICATE_JKS_PATH",
    "TRUST_CERTIFICATE_PFX_PATH",
    "TLS_CONFIGURATION_NAME",
];

/// The settings' common prefix: `QUARKUS_DATASOURCE_REACTIVE_` or a named datasource's.
fn prefix(variable: &str) -> Option<&str> {
    let p = variable.strip_suffix("URL")?;
    (p.starts_with("QUARKUS_DATASOURCE_") && p.ends_with("REACTIVE_")).then_some(p)
}

impl Driver for QuarkusReactive {
    fn name(&self) -> &'static str {
        "Vert.x (Quarkus reactive)"
    }

    fn signals(&self) -> Signals {
        Signals {
            value_prefixes: &["vertx-reactive:"],
            name_prefixes: &["QUARKUS_DATASOURCE_"],
            separator: None,
        }
    }

    fn recognise(&self, variable: &str, value: &str) -> Option<Parsed> {
        let value = value
            .strip_prefix("vertx-reactive:")
            .or_else(|| prefix(variable).map(|_| value))?;
        after_postgres_scheme(value).map(url)
    }

    fn judge(&self, variable: &str, t: &Parsed, env: &dyn Environment) -> Judgement {
        let p = prefix(variable).unwrap_or("QUARKUS_DATASOURCE_REACTIVE_");
        if let Some(s) = SETTINGS
            .iter()
            .find(|s| env.get(&format!("{p}{s}")) == Some(None))
        {
            return hidden(&format!("{p}{s}"));
        }
        let setting = |s: &str| env.get(&format!("{p}{s}")).flatten();
        // A named TLS configuration lives outside the Pod (and may trust all).
        if setting("TLS_CONFIGURATION_NAME").is_some_and(|v| !v.is_empty()) {
            return Judgement::found(
                Code::Unverifiable,
                "a TLS configuration from Quarkus's TLS registry decides trust, and it is not in the Pod",
                Vec::new(),
            );
        }
        // Vert.x neither decodes query keys nor cares about their case.
        if t.escaped_key {
            return Judgement::found(
                Code::Unverifiable,
                "a percent-encoded query key: the Vert.x client reads it undecoded, as another key",
                Vec::new(),
            );
        }
        let tls = Tls::read(&setting);
        let fixes = tls.fixes(p);
        // The SSL-mode setting overrides the URL's sslmode only when set.
        let mode = setting("POSTGRESQL_SSL_MODE")
            .or_else(|| {
                t.params
                    .iter()
                    .rev()
                    .find(|(k, _)| k.eq_ignore_ascii_case("sslmode"))
                    .map(|(_, v)| v.as_str())
            })
            .map(SslMode::parse_ignore_case);
        let mut judged = tls.judge(mode, fixes);
        if t.has("sslrootcert") {
            judged = judged.note(
                "the Vert.x client sends sslrootcert to the server as a setting: it is not a trust setting",
            );
        }
        judged
    }
}

/// What a datasource's TLS settings say, besides its SSL mode.
struct Tls {
    /// Trust-all is on.
    trust_all: bool,
    /// A host-name verification algorithm other than NONE.
    algorithm: bool,
    /// Trust settings (PEM, JKS or PFX).
    trust: bool,
}

impl Tls {
    fn read<'v>(setting: &impl Fn(&str) -> Option<&'v str>) -> Tls {
        // SmallRye Config's booleans: true, 1, yes, y, on, ja, j, si, sim, oui.
        let trust_all = setting("TRUST_ALL").is_some_and(|v| {
            ["true", "1", "yes", "y", "on", "ja", "j", "si", "sim", "oui"]
                .iter()
                .any(|t| v.trim().eq_ignore_ascii_case(t))
        });
        let algorithm = setting("HOSTNAME_VERIFICATION_ALGORITHM")
            .is_some_and(|v| !v.is_empty() && !v.eq_ignore_ascii_case("NONE"));
        let trust = SETTINGS[3..]
            .iter()
            .any(|s| setting(s).is_some_and(|v| !v.is_empty()));
        Tls {
            trust_all,
            algorithm,
            trust,
        }
    }

    /// What to set (and unset) under the settings' prefix `p` for full verification.
    fn fixes(&self, p: &str) -> Vec<Fix> {
        let name = |s: &str| -> Cow<'static, str> { Cow::Owned(format!("{p}{s}")) };
        let mut changes = vec![Change::Env {
            name: name("POSTGRESQL_SSL_MODE"),
            value: FixValue::Literal("verify-full"),
        }];
        if !self.algorithm {
            changes.push(Change::Env {
                name: name("HOSTNAME_VERIFICATION_ALGORITHM"),
                value: FixValue::Literal("HTTPS"),
            });
        }
        if !self.trust {
            changes.push(Change::Env {
                name: name("TRUST_CERTIFICATE_PEM_CERTS"),
                value: CA,
            });
        }
        if self.trust_all {
            changes.push(Change::Unset {
                name: name("TRUST_ALL"),
            });
        }
        vec![Fix {
            driver: None,
            changes,
        }]
    }

    /// The SSL mode in force (`Some(None)`: one the client refuses), with these settings.
    fn judge(&self, mode: Option<Option<SslMode>>, fixes: Vec<Fix>) -> Judgement {
        match mode {
            None => Judgement::found(
                weak(None),
                "no SSL mode: the Vert.x client defaults to DISABLE, plaintext",
                fixes,
            ),
            Some(None) => Judgement::found(
                Code::SslModeInvalid,
                "the Vert.x client refuses this SSL mode: the application fails to start",
                fixes,
            ),
            Some(Some(SslMode::VerifyFull)) if self.trust_all => Judgement::found(
                Code::VerificationDisabled,
                "trust-all accepts any server certificate, verify-full or not",
                fixes,
            ),
            Some(Some(SslMode::VerifyFull)) if !self.algorithm => Judgement::found(
                Code::ConnectionStringInvalid,
                "verify-full without a host-name verification algorithm: Quarkus (default NONE) refuses to start",
                fixes,
            ),
            Some(Some(SslMode::VerifyFull)) if !self.trust => Judgement::found(
                Code::RootCertMissing,
                "verify-full without trust settings: the Vert.x client refuses to connect",
                fixes,
            ),
            Some(Some(SslMode::VerifyFull)) => Judgement::pass(),
            Some(Some(m)) => Judgement::found(
                Code::SslModeTooWeak,
                format!(
                    "SSL mode {}: {} (prefer falls back to plaintext on any TLS failure)",
                    m.as_str(),
                    weak_mode_text(m)
                ),
                fixes,
            ),
        }
    }
}
