//! R2DBC PostgreSQL: `r2dbc:postgresql://…`, `r2dbcs:…`, `r2dbc:pool:postgresql://…`
//! (docs/drivers.md, "R2DBC"). Option names are case-sensitive: `sslMode` (with the alias
//! `sslmode`), `sslRootCert`; the default is DISABLE; REQUIRE never verifies; VERIFY_FULL
//! without a root certificate uses the JVM trust store. No environment variable is read.
//! Spring Boot adds `SPRING_R2DBC_PROPERTIES_<KEY>` as lower-case options.

use super::{
    CA, Driver, Environment, Judgement, Parsed, Signals, after_postgres_scheme, hidden, url, weak,
    weak_mode_text,
};
use crate::fixes::params;
use crate::verdict::{Code, FixValue, SslMode};

#[derive(Debug)]
pub(crate) struct R2dbc;

/// `r2dbc[s]:[pool:]postgres[ql]:[failover:]` and what follows it.
fn split_scheme(value: &str) -> Option<(bool, &str)> {
    let (secure, rest) = if let Some(r) = value.strip_prefix("r2dbcs:") {
        (true, r)
    } else {
        (false, value.strip_prefix("r2dbc:")?)
    };
    let rest = rest.strip_prefix("pool:").unwrap_or(rest);
    let rest = after_postgres_scheme(rest)?;
    let rest = rest.strip_prefix("failover:").unwrap_or(rest);
    rest.starts_with("//").then_some((secure, rest))
}

fn mode(v: &str) -> Option<SslMode> {
    SslMode::parse_ignore_case(&v.replace('_', "-"))
}

impl Driver for R2dbc {
    fn name(&self) -> &'static str {
        "R2DBC"
    }

    fn signals(&self) -> Signals {
        Signals {
            value_prefixes: &["r2dbc:", "r2dbcs:"],
            name_prefixes: &[],
            separator: None,
        }
    }

    fn recognise(&self, _: &str, value: &str) -> Option<Parsed> {
        if !value.starts_with("r2dbc") {
            return None;
        }
        let (secure, rest) = split_scheme(value)?;
        let mut parsed = url(rest);
        parsed.secure_scheme = secure;
        Some(parsed)
    }

    fn judge(&self, variable: &str, t: &Parsed, env: &dyn Environment) -> Judgement {
        let (setting, ssl) = match options(variable, t, env) {
            Ok(o) => o,
            Err(unreadable) => return unreadable,
        };
        let has_root = t.last("sslRootCert").is_some_and(|r| !r.is_empty());
        let fix = || {
            let mut changes = vec![("sslMode", FixValue::Literal("VERIFY_FULL"))];
            if !has_root {
                changes.push(("sslRootCert", CA));
            }
            vec![params(None, &changes)]
        };
        let mode = match setting {
            Some(v) => match mode(v) {
                Some(m) => Some(m),
                None => {
                    return Judgement::found(
                        Code::SslModeInvalid,
                        "R2DBC refuses this sslMode (it takes DISABLE, ALLOW, PREFER, REQUIRE, VERIFY_CA, VERIFY_FULL): the application fails to connect",
                        fix(),
                    );
                }
            },
            None if ssl => Some(SslMode::VerifyFull),
            None => None,
        };
        let mut judged = verdict(mode, t, has_root, fix);
        if t.has("sslrootcert") {
            judged = judged
                .note("R2DBC ignores sslrootcert (its option is sslRootCert, case-sensitive)");
        }
        if variable == "SPRING_R2DBC_URL"
            && env.get("SPRING_R2DBC_PROPERTIES_SSLROOTCERT").is_some()
        {
            judged = judged.note(
                "SPRING_R2DBC_PROPERTIES_SSLROOTCERT binds to the option sslrootcert, which R2DBC ignores: put sslRootCert in the URL",
            );
        }
        judged
    }
}

/// The sslMode setting in force and whether `ssl` is on, from the URL and, for
/// `SPRING_R2DBC_URL`, Spring Boot's properties (which override the URL's options, under
/// lower-case keys). `Err`: a property that decides is hidden.
fn options<'t>(
    variable: &str,
    t: &'t Parsed,
    env: &'t dyn Environment,
) -> Result<(Option<&'t str>, bool), Judgement> {
    let spring = |name: &str| match env.get(name) {
        _ if variable != "SPRING_R2DBC_URL" => Ok(None),
        Some(None) => Err(hidden(name)),
        Some(v) => Ok(v),
        None => Ok(None),
    };
    let spring_mode = if t.has("sslMode") {
        None
    } else {
        spring("SPRING_R2DBC_PROPERTIES_SSLMODE")?
    };
    // `ssl=true` (or `r2dbcs:`) is applied first, then sslMode, else its alias.
    // The query's `ssl` replaces the scheme's (the same option, set later).
    // Spring's properties replace both.
    let spring_ssl = spring("SPRING_R2DBC_PROPERTIES_SSL")?;
    let ssl = match spring_ssl.or(t.last("ssl")) {
        Some(v) => v.eq_ignore_ascii_case("true"),
        None => t.secure_scheme,
    };
    let setting = t
        .last("sslMode")
        .or(spring_mode)
        .or_else(|| t.last("sslmode"));
    Ok((setting, ssl))
}

/// What R2DBC does with the SSL mode in force (`None`: unset).
fn verdict(
    mode: Option<SslMode>,
    t: &Parsed,
    has_root: bool,
    fix: impl Fn() -> Vec<crate::verdict::Fix>,
) -> Judgement {
    match mode {
        None => Judgement::found(
            weak(None),
            "no sslMode: R2DBC defaults to DISABLE, plaintext",
            fix(),
        ),
        Some(SslMode::VerifyFull) if t.has("sslHostnameVerifier") => Judgement::found(
            Code::Unverifiable,
            "sslHostnameVerifier replaces R2DBC's host-name check with a class verifyfull cannot judge",
            Vec::new(),
        ),
        Some(SslMode::VerifyFull) if has_root => Judgement::pass(),
        Some(SslMode::VerifyFull) => Judgement::pass().note(
            "R2DBC's VERIFY_FULL without sslRootCert verifies against the JVM trust store: a private CA is not trusted there",
        ),
        Some(SslMode::Require) => Judgement::found(
            Code::SslModeTooWeak,
            "sslMode REQUIRE: encrypted, but R2DBC accepts any server certificate, sslRootCert or not",
            fix(),
        ),
        Some(m) => Judgement::found(
            Code::SslModeTooWeak,
            format!("sslMode {}: {}", m.as_str(), weak_mode_text(m)),
            fix(),
        ),
    }
}
