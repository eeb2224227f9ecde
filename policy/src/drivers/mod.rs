//! The drivers beyond libpq and pgjdbc (docs/drivers.md): each module recognises its own
//! targets in a variable and judges them by that driver's rules. A target passes only when
//! every driver that could plausibly read it verifies the server fully; a driver's module
//! claims a value only on a signal of that driver (its URL scheme, its parameters, its
//! variables), never by guessing. Adding a driver is its file and one line in [`DRIVERS`].

use std::borrow::Cow;

use crate::verdict::{Code, Fix, FixValue, SslMode};

mod npgsql;
mod prisma;
mod r2dbc;
mod sqlalchemy;
mod vertx;

/// The drivers, in the order they are asked: the first that recognises a value judges it;
/// a value none of them recognises is read by libpq's or pgjdbc's rules.
pub(crate) static DRIVERS: &[&dyn Driver] = &[
    &npgsql::Npgsql,
    &r2dbc::R2dbc,
    &vertx::QuarkusReactive,
    &sqlalchemy::Asyncpg,
    &sqlalchemy::Pg8000,
    &prisma::Prisma,
];

/// One driver's rules.
pub(crate) trait Driver: Sync {
    fn name(&self) -> &'static str;
    /// What any value this driver claims has: [`may_claim`] asks no driver about a variable
    /// none of them could claim.
    fn signals(&self) -> Signals;
    /// Reads the value of `variable` as this driver's target, if it carries this driver's
    /// signal.
    fn recognise(&self, variable: &str, value: &str) -> Option<Parsed>;
    /// What this driver does with the target, in the container's environment.
    fn judge(&self, variable: &str, target: &Parsed, env: &dyn Environment) -> Judgement;
    /// The driver runs in a Node.js process, where `NODE_TLS_REJECT_UNAUTHORIZED=0`
    /// turns verification off.
    fn runs_on_node(&self) -> bool {
        false
    }
}

/// A driver claims only values that start with one of `value_prefixes`, variables whose
/// name starts with one of `name_prefixes`, or values holding `separator`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Signals {
    pub value_prefixes: &'static [&'static str],
    pub name_prefixes: &'static [&'static str],
    pub separator: Option<u8>,
}

/// Every driver's signals, gathered once, by first byte: most variables are ruled out by
/// one lookup.
struct Prefilter {
    values: Vec<Vec<&'static str>>,
    names: Vec<Vec<&'static str>>,
    separators: Vec<u8>,
}

static PREFILTER: std::sync::LazyLock<Prefilter> = std::sync::LazyLock::new(|| {
    let mut p = Prefilter {
        values: vec![Vec::new(); 256],
        names: vec![Vec::new(); 256],
        separators: Vec::new(),
    };
    for d in DRIVERS {
        let s = d.signals();
        for v in s.value_prefixes {
            p.values[usize::from(v.as_bytes()[0])].push(v);
        }
        for n in s.name_prefixes {
            p.names[usize::from(n.as_bytes()[0])].push(n);
        }
        p.separators.extend(s.separator);
    }
    p
});

/// Whether some driver could claim this variable: asked for every visible variable, so
/// that the drivers themselves are asked only about the few that carry a signal.
pub(crate) fn may_claim(name: &str, value: &str) -> bool {
    let p = &*PREFILTER;
    let starts = |by_first: &[Vec<&str>], text: &str| {
        text.as_bytes().first().is_some_and(|b| {
            by_first[usize::from(*b)]
                .iter()
                .any(|x| text.starts_with(x))
        })
    };
    starts(&p.values, value)
        || starts(&p.names, name)
        || p.separators.iter().any(|s| value.as_bytes().contains(s))
}

/// What a driver sees of the container besides the variable it judges.
pub(crate) trait Environment {
    /// A variable's value: `None` unset, `Some(None)` set but not visible.
    fn get(&self, name: &str) -> Option<Option<&str>>;
}

/// A recognised target: where it connects and its settings, as its driver reads them.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    /// Network hosts (Unix socket paths are not listed: no TLS applies there).
    pub hosts: Vec<String>,
    /// Parameters in order, percent-decoded where the format says so.
    pub params: Vec<(String, String)>,
    /// The scheme itself asks for TLS (`r2dbcs:`).
    pub secure_scheme: bool,
    /// Some key was percent-encoded (drivers that do not decode keys read another key).
    pub escaped_key: bool,
}

impl Parsed {
    /// The last value of a key (exact match).
    pub(crate) fn last(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.params.iter().any(|(k, _)| k == key)
    }
}

/// A driver's verdict on one target.
#[derive(Debug)]
pub(crate) struct Judgement {
    pub outcome: Result<(), Found>,
    /// Facts worth telling that are not findings.
    pub notes: Vec<Cow<'static, str>>,
}

/// A finding of a driver's rules: its code, what the driver will do, and its fixes.
#[derive(Debug)]
pub(crate) struct Found {
    pub code: Code,
    pub what: Cow<'static, str>,
    pub fixes: Vec<Fix>,
}

impl Judgement {
    pub(crate) fn pass() -> Judgement {
        Judgement {
            outcome: Ok(()),
            notes: Vec::new(),
        }
    }

    pub(crate) fn found(
        code: Code,
        what: impl Into<Cow<'static, str>>,
        fixes: Vec<Fix>,
    ) -> Judgement {
        Judgement {
            outcome: Err(Found {
                code,
                what: what.into(),
                fixes,
            }),
            notes: Vec::new(),
        }
    }

    pub(crate) fn note(mut self, text: impl Into<Cow<'static, str>>) -> Judgement {
        self.notes.push(text.into());
        self
    }
}

/// Splits a URL after its scheme (`//user:password@host1:5432,host2/db?k=v&…`) into its
/// network hosts and its percent-decoded query parameters. Never fails: a malformed escape
/// stays as written (the driver's rules decide what that means).
pub(crate) fn url(rest: &str) -> Parsed {
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    // A fragment is not sent: URL parsers (java.net.URI, WHATWG, Go, Rust) drop it.
    let rest = rest.split('#').next().unwrap_or(rest);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let query = rest[end..].split_once('?').map_or("", |(_, q)| q);
    let hostlist = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let mut parsed = Parsed::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        parsed.escaped_key |= k.contains('%');
        parsed.params.push((decoded(k), decoded(v)));
    }
    // A query `host=` replaces the authority's (SQLAlchemy, Vert.x, Prisma); no host at all
    // is the driver's default, `localhost` over TCP.
    let hostlist = parsed
        .last("host")
        .map_or(hostlist.to_string(), str::to_string);
    let mut socket = false;
    for h in hostlist.split(',').filter(|h| !h.is_empty()) {
        let host = decoded(host_of(h));
        if host.starts_with('/') {
            socket = true;
        } else if !host.is_empty() {
            parsed.hosts.push(host);
        }
    }
    if parsed.hosts.is_empty() && !socket {
        parsed.hosts.push("localhost".to_string());
    }
    parsed
}

/// The host of `host[:port]` or `[v6][:port]` (what follows a `,` or `/` is not it).
pub(crate) fn host_of(h: &str) -> &str {
    match h.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => h.split([':', ',', '/']).next().unwrap_or(h),
    }
}

/// Every hidden span of a driver's value is a password: in a URL's user information, or
/// the value of a .NET `Password`/`PSW`/`PWD` key. A password cannot change where the
/// driver connects or how it verifies.
pub(crate) fn hidden_only_in_credentials(value: &str) -> bool {
    use crate::hosts::has_hidden;
    if let Some(at) = value.find("://") {
        let rest = &value[at + 3..];
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let Some(userinfo_end) = rest[..authority_end].rfind('@') else {
            return false;
        };
        return !has_hidden(&value[..at]) && !has_hidden(&rest[userinfo_end..]);
    }
    value.split(';').all(|segment| {
        let (key, v) = segment.split_once('=').unwrap_or((segment, ""));
        let key: String = key
            .chars()
            .filter(|c| !c.is_whitespace())
            .flat_map(char::to_lowercase)
            .collect();
        !has_hidden(segment)
            || (matches!(key.as_str(), "password" | "psw" | "pwd")
                && !has_hidden(&key)
                && !v.contains(';'))
    })
}

/// What follows a `postgresql:` or `postgres:` scheme.
pub(crate) fn after_postgres_scheme(value: &str) -> Option<&str> {
    value
        .strip_prefix("postgresql:")
        .or_else(|| value.strip_prefix("postgres:"))
}

fn decoded(s: &str) -> String {
    crate::libpq::decode(s, 0).map_or_else(|_| s.to_string(), |d| d.into_owned())
}

/// A deciding variable verifyfull cannot read: `Unresolved`, never a pass or a violation.
pub(crate) fn hidden(variable: &str) -> Judgement {
    Judgement::found(
        Code::Unresolved,
        format!("{variable} decides, and its value cannot be read"),
        Vec::new(),
    )
}

/// What a mode does, for messages: the weak libpq-named modes share their consequences.
pub(crate) fn weak_mode_text(mode: SslMode) -> &'static str {
    match mode {
        SslMode::Disable => "no TLS at all",
        SslMode::Allow => "plaintext first, TLS only if the server insists, never verified",
        SslMode::Prefer => "TLS if the server offers it, never verified, plaintext otherwise",
        SslMode::Require => "encrypted, but any server certificate is accepted",
        SslMode::VerifyCa => "the certificate chain is checked but not the host name",
        SslMode::VerifyFull => "verified",
    }
}

/// The CA file, for fixes.
pub(crate) const CA: FixValue = FixValue::CaFile;

/// The code of a weak or absent mode.
pub(crate) fn weak(mode: Option<SslMode>) -> Code {
    match mode {
        None => Code::SslModeUnset,
        Some(_) => Code::SslModeTooWeak,
    }
}
