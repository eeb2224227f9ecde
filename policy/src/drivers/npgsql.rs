//! Npgsql (.NET): `Key=Value;…` strings, keys case-insensitive with optional spaces
//! (docs/drivers.md, "Npgsql"). Npgsql reads `PGSSLROOTCERT` but never `PGSSLMODE` or
//! `PGHOST`; `Require` ignores the root certificate (8.0 on); `VerifyFull` without one
//! verifies against the OS trust store.

use super::{CA, Driver, Environment, Judgement, Parsed, Signals, weak, weak_mode_text};
use crate::verdict::{Change, Code, Fix, FixValue, SslMode};

#[derive(Debug)]
pub(crate) struct Npgsql;

/// Npgsql's keywords, lower case without spaces (display names and property names).
const KEYWORDS: &[&str] = &[
    "host",
    "server",
    "port",
    "database",
    "db",
    "username",
    "userid",
    "user",
    "uid",
    "password",
    "psw",
    "pwd",
    "passfile",
    "sslmode",
    "rootcertificate",
    "trustservercertificate",
    "checkcertificaterevocation",
    "sslcertificate",
    "sslkey",
    "sslpassword",
    "sslnegotiation",
    "applicationname",
    "enlist",
    "pooling",
    "minimumpoolsize",
    "minpoolsize",
    "maximumpoolsize",
    "maxpoolsize",
    "timeout",
    "commandtimeout",
    "keepalive",
    "tcpkeepalive",
    "tcpkeepalivetime",
    "tcpkeepaliveinterval",
    "includeerrordetail",
    "searchpath",
    "targetsessionattributes",
    "loadbalancehosts",
    "connectionidlelifetime",
    "connectionpruninginterval",
    "connectionlifetime",
    "maxautoprepare",
    "autoprepareminusages",
    "noresetonclose",
    "servercompatibilitymode",
    "options",
    "multiplexing",
    "readbuffersize",
    "writebuffersize",
    "socketreceivebuffersize",
    "socketsendbuffersize",
    "clientencoding",
    "encoding",
    "timezone",
    "kerberosservicename",
    "krbsrvname",
    "includerealm",
    "persistsecurityinfo",
    "logparameters",
    "gssencryptionmode",
    "channelbinding",
    "requireauth",
    "hostrecheckseconds",
    "cancellationtimeout",
    "internalcommandtimeout",
    "arraynullabilitymode",
    "loadtablecomposites",
    "includefailedbatchedcommand",
    "replicationmode",
    "writecoalescingbufferthresholdbytes",
];

/// Keys SQL Server's strings do not have: with `Server=`, one of them says Npgsql.
const NPGSQL_ONLY: &[&str] = &["host", "sslmode", "rootcertificate", "username", "port"];

/// .NET configuration's connection-string variables.
const DOTNET_PREFIXES: &[&str] = &[
    "ConnectionStrings__",
    "POSTGRESQLCONNSTR_",
    "CUSTOMCONNSTR_",
];

fn is_dotnet_variable(name: &str) -> bool {
    DOTNET_PREFIXES.iter().any(|p| name.starts_with(p))
}

fn normal(key: &str) -> String {
    key.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// .NET connection-string syntax: `;`-separated pairs, values optionally in single or
/// double quotes (a doubled quote inside stands for one). `None`: not that syntax.
fn pairs(value: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = value.trim_start();
    while !rest.is_empty() {
        // Empty segments (`;;`, a trailing `;`) are allowed, as .NET allows them.
        if let Some(r) = rest.strip_prefix(';') {
            rest = r.trim_start();
            continue;
        }
        let eq = rest.find('=')?;
        let key = normal(&rest[..eq]);
        if key.is_empty() || key.contains(';') {
            return None;
        }
        let after = rest[eq + 1..].trim_start();
        let (val, next) = match after.chars().next() {
            Some(q @ ('\'' | '"')) => {
                let mut v = String::new();
                let mut chars = after[1..].char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    if c == q {
                        if after[1 + i + 1..].starts_with(q) {
                            v.push(q);
                            chars.next();
                        } else {
                            end = Some(1 + i + 1);
                            break;
                        }
                    } else {
                        v.push(c);
                    }
                }
                let tail = after[end?..].trim_start();
                (v, tail.strip_prefix(';').unwrap_or(tail))
            }
            _ => match after.find(';') {
                Some(i) => (after[..i].trim_end().to_string(), &after[i + 1..]),
                None => (after.trim_end().to_string(), ""),
            },
        };
        out.push((key, val));
        rest = next.trim_start();
    }
    Some(out)
}

/// Npgsql's `SslMode` enum, in its order (.NET's `Enum.Parse` also takes the numbers).
const MODES: [(&str, SslMode); 6] = [
    ("Disable", SslMode::Disable),
    ("Allow", SslMode::Allow),
    ("Prefer", SslMode::Prefer),
    ("Require", SslMode::Require),
    ("VerifyCA", SslMode::VerifyCa),
    ("VerifyFull", SslMode::VerifyFull),
];

fn mode(v: &str) -> Option<(&'static str, SslMode)> {
    let v = v.trim();
    if let Ok(n) = v.parse::<usize>() {
        return MODES.get(n).copied();
    }
    MODES
        .iter()
        .find(|(name, _)| v.eq_ignore_ascii_case(name))
        .copied()
}

impl Driver for Npgsql {
    fn name(&self) -> &'static str {
        "Npgsql"
    }

    fn signals(&self) -> Signals {
        Signals {
            value_prefixes: &[],
            name_prefixes: DOTNET_PREFIXES,
            separator: Some(b';'),
        }
    }

    fn recognise(&self, variable: &str, value: &str) -> Option<Parsed> {
        let dotnet = is_dotnet_variable(variable);
        if !value.contains(';') && !dotnet {
            return None;
        }
        // libpq reads a keyword/value string whatever `;` it holds: libpq's rules decide.
        if !matches!(
            crate::libpq::recognise_keyword_value(value),
            crate::libpq::KeyValueRecognition::No
        ) {
            return None;
        }
        let params = pairs(value)?;
        let known = |k: &str| KEYWORDS.contains(&k);
        let has = |k: &str| params.iter().any(|(p, _)| p == k);
        // In a .NET connection-string variable, a keyword missing from the list above does
        // not hide the string (Npgsql refuses keywords it does not know; a newer one it
        // knows would otherwise make the string invisible here).
        let npgsql = (dotnet || params.iter().all(|(k, _)| known(k)))
            && (has("host")
                || (has("server")
                    && (NPGSQL_ONLY.iter().any(|k| has(k))
                        || variable.starts_with("POSTGRESQLCONNSTR_"))));
        if !npgsql {
            return None;
        }
        let host = params
            .iter()
            .rev()
            .find(|(k, _)| k == "host" || k == "server")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let hosts = host
            .split(',')
            .map(|h| h.trim())
            // A path or `@abstract` is a Unix socket: no TLS applies.
            .filter(|h| !h.is_empty() && !h.starts_with('/') && !h.starts_with('@'))
            .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name).to_string())
            .collect();
        Some(Parsed {
            hosts,
            params,
            secure_scheme: false,
            escaped_key: false,
        })
    }

    fn judge(&self, _: &str, t: &Parsed, env: &dyn Environment) -> Judgement {
        let fix = |root: bool| {
            // Npgsql 6 and 7 refuse VerifyFull next to Trust Server Certificate.
            let mut changes = vec![Change::Param {
                key: "SSL Mode",
                value: FixValue::Literal("VerifyFull"),
                drop: &[
                    "SslMode",
                    "Trust Server Certificate",
                    "TrustServerCertificate",
                ],
            }];
            if root {
                changes.push(Change::Param {
                    key: "Root Certificate",
                    value: CA,
                    drop: &["RootCertificate"],
                });
            }
            vec![Fix {
                driver: None,
                changes,
            }]
        };
        let root = t.last("rootcertificate").is_some_and(|r| !r.is_empty())
            || env.get("PGSSLROOTCERT").is_some_and(|v| v != Some(""));
        let judged = match t.last("sslmode") {
            None => Judgement::found(
                weak(None),
                "no SSL Mode: Npgsql uses Prefer (TLS if the server offers it, never verified, plaintext otherwise)",
                fix(!root),
            ),
            Some(v) => match mode(v) {
                None => Judgement::found(
                    Code::SslModeInvalid,
                    "Npgsql refuses this SSL Mode (it knows Disable, Allow, Prefer, Require, VerifyCA, VerifyFull; verify-full is libpq's spelling): the application fails to start",
                    fix(!root),
                ),
                Some((_, SslMode::VerifyFull)) if root => Judgement::pass(),
                Some((_, SslMode::VerifyFull)) => Judgement::pass().note(
                    "Npgsql's VerifyFull without Root Certificate or PGSSLROOTCERT verifies against the OS trust store: a private CA is not trusted there",
                ),
                Some((_, SslMode::Require)) => Judgement::found(
                    Code::SslModeTooWeak,
                    "SSL Mode=Require: encrypted, but Npgsql 8+ accepts any server certificate and ignores Root Certificate",
                    fix(!root),
                ),
                Some((name, m)) => Judgement::found(
                    weak(Some(m)),
                    format!("SSL Mode={name}: {}", weak_mode_text(m)),
                    fix(!root),
                ),
            },
        };
        let mut judged = judged;
        if env.get("PGSSLMODE").is_some() {
            judged = judged.note("Npgsql ignores PGSSLMODE: only the string's SSL Mode counts");
        }
        if t.params
            .iter()
            .any(|(k, _)| !KEYWORDS.contains(&k.as_str()))
        {
            judged = judged.note(
                "keywords verifyfull does not know: Npgsql refuses those it does not know either; the string is judged by the others",
            );
        }
        if t.last("trustservercertificate")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            judged = judged.note(
                "Trust Server Certificate does nothing since Npgsql 8 (before 8 it turned verification off)",
            );
        }
        judged
    }
}
