//! User-facing text for findings and notes. Built from the structured cause only: the
//! engine never has a value to repeat except the sslmode token, so no message can carry a
//! password or a Secret value.

use std::fmt::Write;

use crate::env::Origin;
use crate::verdict::*;

/// Admission warnings are capped at this many characters.
pub const WARNING_LIMIT: usize = 120;

fn by_text(by: &SetBy<'_>, mode: Option<SslMode>) -> String {
    match (by, mode) {
        (SetBy::Param { key: "requiressl" }, Some(m)) => {
            format!("requiressl (read as sslmode={})", m.as_str())
        }
        (SetBy::Param { key: "ssl" }, Some(m)) => format!("ssl (read as sslmode={})", m.as_str()),
        (SetBy::Param { key }, Some(m)) => format!("{key}={}", m.as_str()),
        (SetBy::Param { key }, None) => (*key).to_string(),
        (SetBy::Env { var, origin }, Some(m)) if *var == "PGREQUIRESSL" => {
            format!("PGREQUIRESSL ({origin}, read as sslmode={})", m.as_str())
        }
        (SetBy::Env { var, origin }, Some(m)) => format!("{var}={} ({origin})", m.as_str()),
        (SetBy::Env { var, origin }, None) => format!("{var} ({origin})"),
    }
}

fn hidden_text(h: &Hidden<'_>) -> String {
    match h {
        Hidden::Var {
            var,
            origin,
            not_found,
        } => {
            let why = match (origin, not_found) {
                (_, true) => "which does not exist",
                (Origin::Literal, false) => "which references a value that could not be read",
                _ => "which could not be read",
            };
            format!("{var} ({origin}), {why}")
        }
        Hidden::Open {
            var,
            kind,
            name,
            not_found,
        } => {
            let why = if *not_found {
                "does not exist"
            } else {
                "could not be read"
            };
            format!(
                "{var}, which envFrom {} {name} may define ({why})",
                kind.as_str()
            )
        }
        Hidden::Runtime { var } => format!("{var}, known only at run time"),
    }
}

fn unverifiable_text(u: &Unverifiable<'_>) -> String {
    match u {
        Unverifiable::ServiceFile { by } => format!(
            "a libpq service file decides (service from {}), and verifyfull cannot read service files",
            by_text(by, None)
        ),
        Unverifiable::Gss { by } => format!(
            "{} requests GSSAPI encryption instead of TLS, which verifyfull cannot judge",
            by_text(by, None)
        ),
        Unverifiable::JdbcFactory => {
            "a custom sslfactory decides how pgjdbc checks the server certificate".to_string()
        }
        Unverifiable::JdbcHostnameVerifier => {
            "a custom sslhostnameverifier decides how pgjdbc checks the host name".to_string()
        }
        Unverifiable::DriverParameter { driver, key } => format!(
            "the {driver} driver's own TLS parameter {key} decides, and verifyfull does not know its rules"
        ),
    }
}

fn consequence(mode: SslMode, root_configured: bool, jdbc: bool) -> &'static str {
    match mode {
        SslMode::Disable => {
            "the client never uses TLS: the password and all data cross the network in plaintext"
        }
        SslMode::Allow => {
            "the client tries plaintext first and uses TLS only if the server insists"
        }
        SslMode::Prefer => {
            "the client falls back to plaintext when TLS fails and never checks the server's certificate"
        }
        SslMode::Require if jdbc => "pgjdbc encrypts but never validates the server's certificate",
        SslMode::Require if root_configured => {
            "with a root certificate libpq's require checks the certificate chain but not the host name, and other drivers (sqlx, asyncpg without the file, pgx with prefer) check nothing"
        }
        SslMode::Require => "the connection is encrypted but nothing checks who the server is",
        SslMode::VerifyCa => {
            "the certificate chain is checked but not the host name: any server with a certificate from that CA passes"
        }
        SslMode::VerifyFull => "the server is verified",
    }
}

impl Finding<'_> {
    /// What the client will do, in a sentence.
    pub fn explanation(&self) -> String {
        let text = self.cause_text();
        match (self.application, &self.cause) {
            (Some(app), Cause::Driver { driver, .. }) if *driver == app => text,
            (Some(app), _) => format!("{app}: {text}"),
            (None, _) => text,
        }
    }

    fn cause_text(&self) -> String {
        let jdbc = self.target == Some(Target::Jdbc);
        match &self.cause {
            Cause::WeakMode {
                mode,
                by,
                root_configured,
                jdbc,
            } => format!(
                "{}: {}",
                by_text(by, Some(*mode)),
                consequence(*mode, *root_configured, *jdbc)
            ),
            Cause::NoMode => {
                let who = if jdbc { "pgjdbc" } else { "libpq" };
                format!("no sslmode is set anywhere, so {who} uses prefer: it falls back to plaintext and never checks the server's certificate")
            }
            Cause::BadMode { by, empty, close } => bad_mode_text(by, *empty, *close),
            Cause::NoRoot { by } => format!(
                "{} but no root certificate is configured: the connection fails, or trusts whatever the image has at ~/.postgresql/root.crt",
                by_text(by, Some(SslMode::VerifyFull))
            ),
            Cause::SystemRoot { by, mode } => {
                let mode = mode.map_or("no sslmode".to_string(), |m| format!("sslmode {}", m.as_str()));
                format!(
                    "the root certificate is system ({}) with {mode}: libpq 16+ insists on verify-full, older libpq and other drivers read system as a file name",
                    by_text(by, None)
                )
            }
            Cause::NonValidatingFactory => {
                "sslfactory=org.postgresql.ssl.NonValidatingFactory: pgjdbc accepts any server certificate".to_string()
            }
            Cause::Driver { driver, what } => format!("{driver}: {what}"),
            Cause::NodeTlsOff { origin } => format!(
                "NODE_TLS_REJECT_UNAUTHORIZED=0 ({origin}) turns certificate verification off for every TLS connection of a Node.js process: node-postgres would accept any server"
            ),
            Cause::Syntax(e) => {
                let (what, who) = match e {
                    Syntax::Libpq(e) => (e.to_string(), "libpq"),
                    Syntax::Jdbc(e) => (e.to_string(), "pgjdbc"),
                    Syntax::Slots(e) => (e.to_string(), "libpq"),
                };
                format!("the connection string is invalid ({what}): {who} refuses it")
            }
            Cause::Hidden { setting, hidden } => self.hidden_cause_text(*setting, hidden),
            Cause::Unverifiable(u) => {
                let mut s = unverifiable_text(u);
                if let Some(b) = self.if_remote {
                    let _ = write!(s, "; unless the host is loopback this is {b}");
                }
                s
            }
            Cause::ExemptionNoReason => format!(
                "{} without a {} annotation: the exemption is not applied",
                crate::exemptions::EXEMPT,
                crate::exemptions::EXEMPT_REASON
            ),
            Cause::ExemptionBadUntil => format!(
                "{} is not an RFC 3339 date (2026-12-31) or date-time with offset (2026-12-31T18:00:00Z): the exemption is not applied",
                crate::exemptions::EXEMPT_UNTIL
            ),
            Cause::ExemptionUnknownContainer { name } => format!(
                "{} names container {name}, which the Pod does not have: the exemption is not applied",
                crate::exemptions::EXEMPT
            ),
            Cause::ExemptionMisplaced { .. } => {
                "exemption annotations on the workload's own metadata are not copied to its Pods: not applied".to_string()
            }
        }
    }

    /// A hidden value decides `setting`.
    fn hidden_cause_text(&self, setting: Setting, hidden: &Hidden<'_>) -> String {
        let mut s = match setting {
            Setting::Target if self.application.is_some() => format!(
                "{}; the application takes its connection string from it",
                hidden_text(hidden)
            ),
            Setting::Target => format!(
                "{}; its name says it holds a connection string",
                hidden_text(hidden)
            ),
            _ => format!("{} depends on {}", setting.as_str(), hidden_text(hidden)),
        };
        if let Some(b) = self.if_remote {
            let _ = write!(s, "; unless that host is loopback this is {b}");
        }
        s
    }

    /// What to change: the finding's fixes, or advice where no mechanical change can help.
    pub fn fix(&self) -> String {
        let var = self.variable.as_deref().unwrap_or("the variable");
        let fixes = self.fixes();
        if !fixes.is_empty() {
            return crate::fixes::render(&fixes, var);
        }
        match &self.cause {
            Cause::Syntax(_) => format!("fix the syntax of {var} (percent-encode special characters, quote values)"),
            Cause::Hidden { .. } => {
                "let verifyfull see the value (include the ConfigMap/Secret, or let the webhook read Secrets)".to_string()
            }
            Cause::Unverifiable(Unverifiable::ServiceFile { .. }) => {
                format!("set sslmode=verify-full and sslrootcert in {var} itself")
            }
            Cause::ExemptionNoReason => format!("add a non-empty {}", crate::exemptions::EXEMPT_REASON),
            Cause::ExemptionBadUntil => format!("write {} as 2026-12-31 or 2026-12-31T18:00:00Z", crate::exemptions::EXEMPT_UNTIL),
            Cause::ExemptionUnknownContainer { .. } => {
                format!("list only containers of this Pod in {}", crate::exemptions::EXEMPT)
            }
            Cause::ExemptionMisplaced { path } => format!("move the annotations to {path}"),
            Cause::Driver { .. } if self.code == Code::Unresolved => {
                "let verifyfull see the hidden value (include the ConfigMap/Secret, or let the webhook read Secrets)".to_string()
            }
            Cause::Driver { .. } if self.application.is_some() => {
                "connect through a proxy beside it that verifies the server (on loopback), or exempt the container with a reason".to_string()
            }
            _ => "use sslmode=verify-full with sslrootcert, or exempt the container with a reason".to_string(),
        }
    }

    /// The full text: where, what the client will do, and the fix.
    pub fn message(&self, container: Option<&str>) -> String {
        let mut s = String::new();
        if let Some(c) = container {
            let _ = write!(s, "container {c}: ");
        }
        if let Some(v) = &self.variable {
            let _ = write!(s, "{v}");
            if let Some(o) = &self.origin {
                let _ = write!(s, " ({o})");
            }
            s.push_str(": ");
        }
        let _ = write!(
            s,
            "{}: {}. Fix: {}.",
            self.code,
            self.explanation(),
            self.fix()
        );
        s
    }

    /// One admission warning: `<container>/<VAR>: <code>: <fix>`, at most
    /// [`WARNING_LIMIT`] characters.
    pub fn warning(&self, container: Option<&str>) -> String {
        let mut s = String::new();
        match (container, &self.variable) {
            (Some(c), Some(v)) => {
                let _ = write!(s, "{c}/{v}: ");
            }
            (Some(c), None) => {
                let _ = write!(s, "{c}: ");
            }
            (None, Some(v)) => {
                let _ = write!(s, "{v}: ");
            }
            (None, None) => {}
        }
        let _ = write!(s, "{}: {}", self.code, self.fix());
        truncate(s, WARNING_LIMIT)
    }
}

/// Removes quoted text from a parser or deserializer message: serde's messages quote the
/// offending value (`invalid type: string "…"`, ``integer `…` ``, serde-saphyr's `[…]`),
/// which may be a password. Only short names without digits survive.
pub fn without_quoted_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' || c == '`' || c == '[' {
            let close = if c == '[' { ']' } else { c };
            let mut inner = String::new();
            let mut closed = false;
            for d in chars.by_ref() {
                if d == close {
                    closed = true;
                    break;
                }
                inner.push(d);
            }
            // Type names and field names are short identifiers, list indices short
            // numbers; keep those.
            let index = c == '[' && (1..=5).contains(&inner.len());
            let keep = closed
                && inner.len() <= 40
                && inner.chars().all(|ch| {
                    ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '[' | ']' | '-' | '/')
                })
                && (index && inner.chars().all(|ch| ch.is_ascii_digit())
                    || !inner.chars().any(|ch| ch.is_ascii_digit()));
            out.push(c);
            out.push_str(if keep { &inner } else { "…" });
            out.push(close);
        } else {
            out.push(c);
        }
    }
    out
}

/// A parser's or deserializer's error message for users: without its own position suffix
/// (callers add file, line and column) and without any quoted value.
pub fn parser_error(message: &str) -> String {
    let text = message.find(" at line ").map_or(message, |i| &message[..i]);
    without_quoted_values(text)
}

/// Cuts `s` to at most `max` characters, marking the cut with an ellipsis.
pub fn truncate(s: String, max: usize) -> String {
    if s.chars().count() <= max {
        return s;
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

impl Note<'_> {
    /// The note as users read it.
    pub fn message(&self) -> String {
        match self {
            Note::LoopbackAllowed { variable, if_remote } => format!(
                "{variable}: every TCP host is loopback, so an in-Pod proxy does the TLS; allowed (it would otherwise be {if_remote})"
            ),
            Note::SystemTrustStore { variable } => format!(
                "{variable}: sslrootcert=system trusts the TLS library's store (libpq 16+); older clients read it as a file name"
            ),
            Note::JvmTrustStore { variable } => {
                format!("{variable}: DefaultJavaSSLFactory trusts the JVM's trust store")
            }
            Note::SslCertEnv { variable } => {
                format!("{variable} is set: it changes what the system trust store trusts")
            }
            Note::Redefined { variable } => {
                format!("{variable} is defined more than once in env; the last definition wins")
            }
            Note::EmptyService { variable } => {
                format!("{variable} is empty: libpq will fail to connect")
            }
            Note::Driver {
                variable,
                driver,
                text,
            } => format!("{variable} ({driver}): {text}"),
            Note::Conflicting { variable, key } => format!(
                "{variable} sets {key} more than once with different values (libpq keeps the last, some drivers the first); the weakest is judged"
            ),
            Note::UnknownKeywords { variable, count } => format!(
                "{variable} has {count} parameter(s) libpq does not know: libpq refuses it, other drivers may accept it"
            ),
            Note::CommandLineLimit => {
                "the command line is longer than verifyfull reads (1,000 words of up to 64 KiB, 100 URLs per script): the rest is not judged".to_string()
            }
            Note::ExemptionExpired => {
                "the exemption has expired (verifyfull.dev/exempt-until)".to_string()
            }
            Note::ExpansionLimit { variable } => format!(
                "{variable}: a $(VAR) reference would take it over {} KiB (or the Pod over {} KiB) of expanded text; verifyfull does not expand it and judges that part as unseen",
                crate::env::MAX_EXPANDED_VALUE / 1024,
                crate::env::MAX_EXPANDED_POD / 1024
            ),
        }
    }
}

/// Why an sslmode value is refused.
fn bad_mode_text(by: &SetBy<'_>, empty: bool, close: Option<SslMode>) -> String {
    let mut s = format!("{} is not a valid sslmode", by_text(by, None));
    if empty {
        s.push_str(" (it is empty)");
    }
    if let Some(c) = close {
        let _ = write!(
            s,
            " (libpq compares case-sensitively; {} is meant)",
            c.as_str()
        );
    }
    s.push_str(": libpq refuses to connect, and several drivers silently fall back to prefer");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_errors_keep_names_and_drop_values() {
        assert_eq!(
            parser_error(
                r#"invalid type: string "hunter2hunter2", expected i32 at line 3 column 7"#
            ),
            r#"invalid type: string "…", expected i32"#
        );
        assert_eq!(
            without_quoted_values("unknown field `spec`, expected `kind`"),
            "unknown field `spec`, expected `kind`"
        );
        assert_eq!(
            without_quoted_values("invalid value: `Pa55word!`"),
            "invalid value: `…`"
        );
        // serde-saphyr brackets the scalar; list indices stay.
        assert_eq!(
            without_quoted_values("The string value [918273645501] must be quoted"),
            "The string value […] must be quoted"
        );
        assert_eq!(
            without_quoted_values(
                "spec.containers[12].env[0].value: invalid type: integer `918273645501`"
            ),
            "spec.containers[12].env[0].value: invalid type: integer `…`"
        );
    }
}
