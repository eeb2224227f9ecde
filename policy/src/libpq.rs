//! libpq connection strings, parsed the way `fe-connect.c` parses them.
//!
//! Two syntaxes: URIs (`conninfo_uri_parse_options`, `conninfo_uri_parse_params`,
//! `conninfo_uri_decode`) and keyword/value strings (`conninfo_parse`). The parsers keep
//! every store in order — libpq keeps the last one, but other drivers keep the first, so
//! the engine needs them all. Error messages carry byte positions, never text from the
//! string: connection strings carry passwords.

use std::borrow::Cow;

/// Where a stored parameter came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// The authority or path of a URI (`user:password@host:port/dbname`).
    Authority,
    /// A URI query parameter.
    Query,
    /// A keyword/value pair.
    KeyValue,
}

/// One keyword/value store, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Param<'a> {
    pub key: Cow<'a, str>,
    pub value: Cow<'a, str>,
    pub place: Place,
}

/// A parsed libpq connection string: its stores in the order libpq makes them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Conninfo<'a> {
    pub params: Vec<Param<'a>>,
}

/// Why libpq would refuse a connection string. Positions are 0-based byte offsets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ParseError {
    #[error("invalid percent-encoded token at byte {0}")]
    BadPercent(usize),
    #[error("forbidden value %00 in a percent-encoded token at byte {0}")]
    PercentZero(usize),
    #[error("no matching \"]\" for the IPv6 host address that starts at byte {0}")]
    UnterminatedIpv6(usize),
    #[error("empty IPv6 host address at byte {0}")]
    EmptyIpv6(usize),
    #[error(
        "unexpected character at byte {0} after an IPv6 host address (expected \":\" or \"/\")"
    )]
    AfterIpv6(usize),
    #[error("query parameter at byte {0} has no \"=\"")]
    MissingQueryEquals(usize),
    #[error("query parameter at byte {0} has a second \"=\"")]
    ExtraQueryEquals(usize),
    #[error("missing \"=\" after the keyword at byte {0}")]
    MissingEquals(usize),
    #[error("unterminated quoted value starting at byte {0}")]
    UnterminatedQuote(usize),
}

/// Every keyword libpq accepts (PostgreSQL 18 `PQconninfoOptions`), plus the long-removed
/// `requiressl` that `conninfo_storeval` still translates. [`is_keyword`] matches them.
#[cfg(test)]
const KEYWORDS: &[&str] = &[
    "application_name",
    "channel_binding",
    "client_encoding",
    "connect_timeout",
    "dbname",
    "fallback_application_name",
    "gssdelegation",
    "gssencmode",
    "gsslib",
    "host",
    "hostaddr",
    "keepalives",
    "keepalives_count",
    "keepalives_idle",
    "keepalives_interval",
    "krbsrvname",
    "load_balance_hosts",
    "max_protocol_version",
    "min_protocol_version",
    "oauth_ca_file",
    "oauth_client_id",
    "oauth_client_secret",
    "oauth_issuer",
    "oauth_scope",
    "options",
    "passfile",
    "password",
    "port",
    "replication",
    "require_auth",
    "requirepeer",
    "requiressl",
    "scram_client_key",
    "scram_server_key",
    "service",
    "ssl_max_protocol_version",
    "ssl_min_protocol_version",
    "sslcert",
    "sslcertmode",
    "sslcompression",
    "sslcrl",
    "sslcrldir",
    "sslkey",
    "sslkeylogfile",
    "sslmode",
    "sslnegotiation",
    "sslpassword",
    "sslrootcert",
    "sslsni",
    "target_session_attrs",
    "tcp_user_timeout",
    "user",
];

/// Keywords whose values are secrets: never shown, and dropped by [`Conninfo::without_secrets`].
pub(crate) const SECRET_KEYWORDS: &[&str] = &[
    "password",
    "sslpassword",
    "oauth_client_secret",
    "scram_client_key",
    "scram_server_key",
];

/// The keywords whose presence makes a keyword/value string a Postgres connection string
/// (docs/rules.md): a substring test is not enough.
const TRIGGER_KEYWORDS: &[&str] = &[
    "host",
    "hostaddr",
    "service",
    "sslmode",
    "requiressl",
    "sslrootcert",
];

pub(crate) fn is_keyword(key: &str) -> bool {
    // Checked against the table by a unit test; a match compiles to length-then-bytes tests.
    matches!(
        key,
        "application_name"
            | "channel_binding"
            | "client_encoding"
            | "connect_timeout"
            | "dbname"
            | "fallback_application_name"
            | "gssdelegation"
            | "gssencmode"
            | "gsslib"
            | "host"
            | "hostaddr"
            | "keepalives"
            | "keepalives_count"
            | "keepalives_idle"
            | "keepalives_interval"
            | "krbsrvname"
            | "load_balance_hosts"
            | "max_protocol_version"
            | "min_protocol_version"
            | "oauth_ca_file"
            | "oauth_client_id"
            | "oauth_client_secret"
            | "oauth_issuer"
            | "oauth_scope"
            | "options"
            | "passfile"
            | "password"
            | "port"
            | "replication"
            | "require_auth"
            | "requirepeer"
            | "requiressl"
            | "scram_client_key"
            | "scram_server_key"
            | "service"
            | "ssl_max_protocol_version"
            | "ssl_min_protocol_version"
            | "sslcert"
            | "sslcertmode"
            | "sslcompression"
            | "sslcrl"
            | "sslcrldir"
            | "sslkey"
            | "sslkeylogfile"
            | "sslmode"
            | "sslnegotiation"
            | "sslpassword"
            | "sslrootcert"
            | "sslsni"
            | "target_session_attrs"
            | "tcp_user_timeout"
            | "user"
    )
}

/// A key libpq does not know (`ssl` excepted: libpq reads a URI's `ssl=true`).
pub(crate) fn is_unknown_keyword(key: &str) -> bool {
    !is_keyword(key) && key != "ssl"
}

/// A PostgreSQL URI scheme: libpq's own, or SQLAlchemy's driver-qualified
/// `postgresql+<driver>://`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UriScheme<'a> {
    /// Where the text after `://` starts.
    pub start: usize,
    pub driver: Option<&'a str>,
}

/// Recognises a URI scheme by its prefix.
pub(crate) fn uri_scheme(s: &str) -> Option<UriScheme<'_>> {
    let prefix = uri_prefix_length(s);
    if prefix > 0 {
        return Some(UriScheme {
            start: prefix,
            driver: None,
        });
    }
    let scheme = ["postgresql+", "postgres+"]
        .into_iter()
        .find(|scheme| s.starts_with(scheme))?;
    let rest = &s[scheme.len()..];
    let end = rest.find("://")?;
    let driver = &rest[..end];
    let valid = !driver.is_empty()
        && driver
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_');
    valid.then_some(UriScheme {
        start: scheme.len() + end + 3,
        driver: Some(driver),
    })
}

/// Length of the URI prefix libpq recognises (`uri_prefix_length`), or 0.
pub(crate) fn uri_prefix_length(s: &str) -> usize {
    if s.starts_with("postgresql://") {
        "postgresql://".len()
    } else if s.starts_with("postgres://") {
        "postgres://".len()
    } else {
        0
    }
}

impl<'a> Conninfo<'a> {
    /// The value libpq ends up with for `key` (the last store).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn last(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|p| p.key == key)
            .map(|p| p.value.as_ref())
    }

    /// The same stores with every secret value dropped: what caches may keep.
    pub(crate) fn without_secrets(&self) -> Conninfo<'a> {
        Conninfo {
            params: self
                .params
                .iter()
                .filter(|p| !SECRET_KEYWORDS.contains(&p.key.as_ref()))
                .cloned()
                .collect(),
        }
    }

    /// Renders the stores of libpq keywords as a keyword/value string that libpq parses back
    /// to the same stores (other keys cannot always be expressed in that syntax).
    pub(crate) fn to_keyword_value(&self) -> String {
        let mut out = String::new();
        for p in self.params.iter().filter(|p| is_keyword(&p.key)) {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&p.key);
            out.push_str("='");
            for c in p.value.chars() {
                if c == '\'' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('\'');
        }
        out
    }
}

/// Parses `s` as libpq's `PQconninfoParse` would: a URI when it has a URI prefix, else a
/// keyword/value string. (The engine recognises the form first and calls the parser for it.)
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn parse(s: &str) -> Result<Conninfo<'_>, ParseError> {
    let prefix = uri_prefix_length(s);
    if prefix > 0 {
        parse_uri_after_prefix(s, prefix)
    } else {
        parse_keyword_value(s)
    }
}

/// Parses a URI whose scheme (`postgresql://`, `postgres://` or a driver-qualified form)
/// ends at byte `start`.
pub(crate) fn parse_uri_after_prefix(s: &str, start: usize) -> Result<Conninfo<'_>, ParseError> {
    let b = s.as_bytes();
    let mut out = Conninfo {
        params: Vec::with_capacity(8),
    };
    let mut p = start;

    // Credentials: look ahead for '@' before any '/'.
    let mut q = p;
    while q < b.len() && b[q] != b'@' && b[q] != b'/' {
        q += 1;
    }
    if q < b.len() && b[q] == b'@' {
        let at = q;
        let mut u = p;
        while u < at && b[u] != b':' {
            u += 1;
        }
        if u > p {
            store(&mut out, s, "user", p, u, Place::Authority)?;
        }
        if u < at && at > u + 1 {
            store(&mut out, s, "password", u + 1, at, Place::Authority)?;
        }
        p = at + 1;
    }

    // Hosts and ports: netloc[:port] pairs separated by commas. One pair (the common case)
    // is borrowed from the input; several are joined with commas, as libpq does.
    let netloc = p;
    let mut hosts = Joined::default();
    let mut ports = Joined::default();
    let mut prevchar: Option<u8>;
    loop {
        let host_start;
        let host_end;
        if p < b.len() && b[p] == b'[' {
            let open = p;
            p += 1;
            host_start = p;
            while p < b.len() && b[p] != b']' {
                p += 1;
            }
            if p >= b.len() {
                return Err(ParseError::UnterminatedIpv6(open));
            }
            if p == host_start {
                return Err(ParseError::EmptyIpv6(open));
            }
            host_end = p;
            p += 1;
            if p < b.len() && !matches!(b[p], b':' | b'/' | b'?' | b',') {
                return Err(ParseError::AfterIpv6(p));
            }
        } else {
            host_start = p;
            while p < b.len() && !matches!(b[p], b':' | b'/' | b'?' | b',') {
                p += 1;
            }
            host_end = p;
        }
        hosts.push(&s[host_start..host_end]);
        prevchar = b.get(p).copied();
        let mut port = "";
        if prevchar == Some(b':') {
            p += 1;
            let port_start = p;
            while p < b.len() && !matches!(b[p], b'/' | b'?' | b',') {
                p += 1;
            }
            port = &s[port_start..p];
            prevchar = b.get(p).copied();
        }
        ports.push(port);
        if prevchar != Some(b',') {
            break;
        }
        p += 1;
    }
    for (key, joined) in [("host", hosts), ("port", ports)] {
        let raw = joined.get();
        if !raw.is_empty() {
            let value = match raw {
                Cow::Borrowed(r) => decode(r, netloc)?,
                Cow::Owned(r) => Cow::Owned(decode(&r, netloc)?.into_owned()),
            };
            out.params.push(param(key, value, Place::Authority));
        }
    }

    if prevchar.is_some() && prevchar != Some(b'?') {
        p += 1;
        let db_start = p;
        while p < b.len() && b[p] != b'?' {
            p += 1;
        }
        if p > db_start {
            store(&mut out, s, "dbname", db_start, p, Place::Authority)?;
        }
        prevchar = b.get(p).copied();
    }

    if prevchar.is_some() {
        parse_query(s, p + 1, &mut out)?;
    }
    Ok(out)
}

fn param<'a>(key: &'static str, value: Cow<'a, str>, place: Place) -> Param<'a> {
    Param {
        key: Cow::Borrowed(key),
        value,
        place,
    }
}

fn store<'a>(
    out: &mut Conninfo<'a>,
    s: &'a str,
    key: &'static str,
    from: usize,
    to: usize,
    place: Place,
) -> Result<(), ParseError> {
    let value = decode(&s[from..to], from)?;
    out.params.push(param(key, value, place));
    Ok(())
}

/// `conninfo_uri_parse_params`: `key=value` pairs separated by `&`, both percent-decoded.
fn parse_query<'a>(s: &'a str, mut p: usize, out: &mut Conninfo<'a>) -> Result<(), ParseError> {
    let b = s.as_bytes();
    while p < b.len() {
        let key_start = p;
        let mut eq: Option<usize> = None;
        loop {
            if p < b.len() && b[p] == b'=' {
                if eq.is_some() {
                    return Err(ParseError::ExtraQueryEquals(key_start));
                }
                eq = Some(p);
                p += 1;
            } else if p >= b.len() || b[p] == b'&' {
                break;
            } else {
                p += 1;
            }
        }
        let Some(eq) = eq else {
            return Err(ParseError::MissingQueryEquals(key_start));
        };
        let key = decode(&s[key_start..eq], key_start)?;
        let value = decode(&s[eq + 1..p], eq + 1)?;
        out.params.push(Param {
            key,
            value,
            place: Place::Query,
        });
        if p < b.len() {
            p += 1; // past '&'
        }
    }
    Ok(())
}

/// `conninfo_uri_decode`: `%XX` only (`+` stays `+`), `%00` forbidden.
/// `offset` is where `s` starts in the whole string, for error positions.
pub(crate) fn decode(s: &str, offset: usize) -> Result<Cow<'_, str>, ParseError> {
    if !s.contains('%') {
        return Ok(Cow::Borrowed(s));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let hex = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
        let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
            return Err(ParseError::BadPercent(offset + i));
        };
        let byte = (hi << 4 | lo) as u8;
        if byte == 0 {
            return Err(ParseError::PercentZero(offset + i));
        }
        out.push(byte);
        i += 3;
    }
    Ok(Cow::Owned(String::from_utf8_lossy(&out).into_owned()))
}

/// Comma-joined pieces of the input: borrowed while there is only one.
#[derive(Default)]
struct Joined<'a> {
    first: Option<&'a str>,
    rest: Option<String>,
}

impl<'a> Joined<'a> {
    fn push(&mut self, piece: &'a str) {
        match (&mut self.rest, self.first) {
            (Some(rest), _) => {
                rest.push(',');
                rest.push_str(piece);
            }
            (None, Some(first)) => self.rest = Some(format!("{first},{piece}")),
            (None, None) => self.first = Some(piece),
        }
    }

    fn get(self) -> Cow<'a, str> {
        match self.rest {
            Some(joined) => Cow::Owned(joined),
            None => Cow::Borrowed(self.first.unwrap_or("")),
        }
    }
}

fn is_c_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// `conninfo_parse`: `keyword = value` pairs separated by white space; values may be single
/// quoted; a backslash escapes the next character in both forms. Unknown keywords are kept
/// (see [`is_unknown_keyword`]).
pub(crate) fn parse_keyword_value(s: &str) -> Result<Conninfo<'_>, ParseError> {
    let b = s.as_bytes();
    let mut out = Conninfo {
        params: Vec::with_capacity(8),
    };
    let mut p = 0;
    while p < b.len() {
        if is_c_space(b[p]) {
            p += 1;
            continue;
        }
        let key_start = p;
        let mut key_end = p;
        while p < b.len() {
            if b[p] == b'=' {
                key_end = p;
                break;
            }
            if is_c_space(b[p]) {
                key_end = p;
                while p < b.len() && is_c_space(b[p]) {
                    p += 1;
                }
                break;
            }
            p += 1;
            key_end = p;
        }
        if p >= b.len() || b[p] != b'=' {
            return Err(ParseError::MissingEquals(key_start));
        }
        p += 1;
        while p < b.len() && is_c_space(b[p]) {
            p += 1;
        }
        let value;
        if p < b.len() && b[p] == b'\'' {
            let quote = p;
            p += 1;
            let mut v = Vec::new();
            loop {
                match b.get(p) {
                    None => return Err(ParseError::UnterminatedQuote(quote)),
                    Some(b'\\') => {
                        p += 1;
                        if let Some(&c) = b.get(p) {
                            v.push(c);
                            p += 1;
                        }
                    }
                    Some(b'\'') => {
                        p += 1;
                        break;
                    }
                    Some(&c) => {
                        v.push(c);
                        p += 1;
                    }
                }
            }
            value = Cow::Owned(String::from_utf8_lossy(&v).into_owned());
        } else {
            let start = p;
            let mut escaped = false;
            while p < b.len() && !is_c_space(b[p]) {
                if b[p] == b'\\' {
                    escaped = true;
                    p += 1;
                }
                p += 1;
            }
            let end = p.min(b.len());
            value = if escaped {
                let mut v = Vec::with_capacity(end - start);
                let mut i = start;
                while i < end {
                    if b[i] == b'\\' {
                        i += 1;
                        if i < end {
                            v.push(b[i]);
                        }
                    } else {
                        v.push(b[i]);
                    }
                    i += 1;
                }
                Cow::Owned(String::from_utf8_lossy(&v).into_owned())
            } else {
                Cow::Borrowed(&s[start..end])
            };
            p = end;
        }
        out.params.push(Param {
            key: Cow::Borrowed(&s[key_start..key_end]),
            value,
            place: Place::KeyValue,
        });
    }
    Ok(out)
}

/// How a value reads as a keyword/value string, for recognition (docs/rules.md).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum KeyValueRecognition<'a> {
    /// A libpq connection string.
    Yes(Conninfo<'a>),
    /// It starts like one (libpq keywords, one of the trigger keywords) but libpq refuses it.
    Invalid(ParseError),
    /// Not a libpq keyword/value string.
    No,
}

/// Decides whether a value is a libpq keyword/value connection string: it parses, all its
/// keywords are libpq keywords, and it names a host, a service or a TLS setting.
pub(crate) fn recognise_keyword_value(s: &str) -> KeyValueRecognition<'_> {
    if !s.contains('=') {
        return KeyValueRecognition::No;
    }
    match parse_keyword_value(s) {
        Ok(info) => {
            let all_known = info.params.iter().all(|p| is_keyword(&p.key));
            let triggered = info
                .params
                .iter()
                .any(|p| TRIGGER_KEYWORDS.contains(&p.key.as_ref()));
            if all_known && triggered {
                KeyValueRecognition::Yes(info)
            } else {
                KeyValueRecognition::No
            }
        }
        Err(e) => {
            // Judge the part before the error: libpq keywords only, and a trigger among them.
            let prefix = match e {
                ParseError::UnterminatedQuote(at) | ParseError::MissingEquals(at) => &s[..at],
                _ => return KeyValueRecognition::No,
            };
            match parse_keyword_value(prefix) {
                Ok(info)
                    if !info.params.is_empty()
                        && info.params.iter().all(|p| is_keyword(&p.key))
                        && info
                            .params
                            .iter()
                            .any(|p| TRIGGER_KEYWORDS.contains(&p.key.as_ref())) =>
                {
                    KeyValueRecognition::Invalid(e)
                }
                _ => KeyValueRecognition::No,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(s: &str) -> Vec<(String, String)> {
        parse(s)
            .expect("parses")
            .params
            .into_iter()
            .map(|p| (p.key.into_owned(), p.value.into_owned()))
            .collect()
    }

    fn kv(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keyword_match_agrees_with_the_table() {
        assert!(KEYWORDS.iter().all(|k| is_keyword(k)));
        let matched = KEYWORDS.len();
        assert_eq!(matched, 52);
        for not in ["", "Host", "ssl", "sslmode ", "schema", "hostaddrx"] {
            assert!(!is_keyword(not), "{not}");
        }
    }

    #[test]
    fn uri_with_everything() {
        assert_eq!(
            pairs(
                "postgresql://u%40x:p%3Ass@h1:5432,h2:5433/db%20x?sslmode=verify-full&application_name=a+b"
            ),
            kv(&[
                ("user", "u@x"),
                ("password", "p:ss"),
                ("host", "h1,h2"),
                ("port", "5432,5433"),
                ("dbname", "db x"),
                ("sslmode", "verify-full"),
                ("application_name", "a+b"),
            ])
        );
    }

    #[test]
    fn query_host_is_a_later_store() {
        let info = parse("postgresql://remote/db?host=/tmp").expect("parses");
        let hosts: Vec<&str> = (info.params.iter())
            .filter(|p| p.key == "host")
            .map(|p| p.value.as_ref())
            .collect();
        assert_eq!(hosts, ["remote", "/tmp"]);
        assert_eq!(info.last("host"), Some("/tmp"));
    }

    #[test]
    fn password_with_colon_and_empty_user() {
        assert_eq!(
            pairs("postgres://:pw:x@h"),
            kv(&[("password", "pw:x"), ("host", "h")])
        );
        assert_eq!(
            pairs("postgres://u:@h"),
            kv(&[("user", "u"), ("host", "h")])
        );
    }

    #[test]
    fn keyword_value_basic_forms() {
        assert_eq!(
            pairs(r"host = db  password='p w\'x' sslrootcert=/a\ b dbname=x"),
            kv(&[
                ("host", "db"),
                ("password", "p w'x"),
                ("sslrootcert", "/a b"),
                ("dbname", "x"),
            ])
        );
        // A value may run straight into the next keyword after a closing quote.
        assert_eq!(
            pairs("host='a'sslmode=disable"),
            kv(&[("host", "a"), ("sslmode", "disable")])
        );
        assert_eq!(pairs("host="), kv(&[("host", "")]));
    }

    #[test]
    fn keyword_value_errors() {
        assert_eq!(
            parse_keyword_value("host='db"),
            Err(ParseError::UnterminatedQuote(5))
        );
        assert_eq!(
            parse_keyword_value("host=db sslmode"),
            Err(ParseError::MissingEquals(8))
        );
        assert_eq!(parse("postgre://"), Err(ParseError::MissingEquals(0)));
    }

    #[test]
    fn recognition() {
        use KeyValueRecognition::*;
        assert!(matches!(
            recognise_keyword_value("host=db dbname=app"),
            Yes(_)
        ));
        assert!(matches!(recognise_keyword_value("sslmode=require"), Yes(_)));
        // Npgsql, a vhost setting, a plain word: not libpq.
        assert_eq!(recognise_keyword_value("Host=db;Database=app"), No);
        assert_eq!(recognise_keyword_value("vhost=example"), No);
        assert_eq!(recognise_keyword_value("dbname=app user=x"), No);
        assert_eq!(recognise_keyword_value("Host=db"), No);
        assert_eq!(recognise_keyword_value("a=b host=c"), No);
        assert_eq!(recognise_keyword_value("just words"), No);
        assert_eq!(
            recognise_keyword_value("host=db password='unterminated"),
            Invalid(ParseError::UnterminatedQuote(17))
        );
    }

    #[test]
    fn secrets_are_dropped_and_rendering_round_trips() {
        let info =
            parse("host=db password=hunter2hunter2 sslrootcert='/x y/\\'z'").expect("parses");
        let clean = info.without_secrets();
        let text = clean.to_keyword_value();
        assert!(!text.contains("hunter2"));
        assert_eq!(parse(&text).expect("round trip"), clean);
    }

    /// The URI cases of PostgreSQL's own libpq test suite
    /// (`src/interfaces/libpq/t/001_uri.pl`) — every one, since all of them concern hosts,
    /// sockets or sslmode. `local` means every connection slot is a Unix socket.
    #[test]
    fn libpq_001_uri_cases() {
        use crate::hosts::{Slot, slots};
        // (uri, expected stores, network: true = "(inet)", false = "(local)")
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);
        let ok: &[Case] = &[
            (
                "postgresql://uri-user:secret@host:12345/db",
                &[
                    ("user", "uri-user"),
                    ("password", "secret"),
                    ("host", "host"),
                    ("port", "12345"),
                    ("dbname", "db"),
                ],
                true,
            ),
            (
                "postgresql://uri-user@host:12345/db",
                &[
                    ("user", "uri-user"),
                    ("host", "host"),
                    ("port", "12345"),
                    ("dbname", "db"),
                ],
                true,
            ),
            (
                "postgresql://uri-user@host/db",
                &[("user", "uri-user"), ("host", "host"), ("dbname", "db")],
                true,
            ),
            (
                "postgresql://host:12345/db",
                &[("host", "host"), ("port", "12345"), ("dbname", "db")],
                true,
            ),
            (
                "postgresql://host/db",
                &[("host", "host"), ("dbname", "db")],
                true,
            ),
            (
                "postgresql://uri-user@host:12345/",
                &[("user", "uri-user"), ("host", "host"), ("port", "12345")],
                true,
            ),
            (
                "postgresql://uri-user@host/",
                &[("user", "uri-user"), ("host", "host")],
                true,
            ),
            ("postgresql://uri-user@", &[("user", "uri-user")], false),
            (
                "postgresql://host:12345/",
                &[("host", "host"), ("port", "12345")],
                true,
            ),
            (
                "postgresql://host:12345",
                &[("host", "host"), ("port", "12345")],
                true,
            ),
            ("postgresql://host/", &[("host", "host")], true),
            ("postgresql://host", &[("host", "host")], true),
            ("postgresql://", &[], false),
            (
                "postgresql://?hostaddr=127.0.0.1",
                &[("hostaddr", "127.0.0.1")],
                true,
            ),
            (
                "postgresql://example.com?hostaddr=63.1.2.4",
                &[("host", "example.com"), ("hostaddr", "63.1.2.4")],
                true,
            ),
            ("postgresql://%68ost/", &[("host", "host")], true),
            (
                "postgresql://host/db?user=uri-user",
                &[("host", "host"), ("dbname", "db"), ("user", "uri-user")],
                true,
            ),
            (
                "postgresql://host/db?user=uri-user&port=12345",
                &[
                    ("host", "host"),
                    ("dbname", "db"),
                    ("user", "uri-user"),
                    ("port", "12345"),
                ],
                true,
            ),
            (
                "postgresql://host/db?u%73er=someotheruser&port=12345",
                &[
                    ("host", "host"),
                    ("dbname", "db"),
                    ("user", "someotheruser"),
                    ("port", "12345"),
                ],
                true,
            ),
            (
                "postgresql://host:12345?user=uri-user",
                &[("host", "host"), ("port", "12345"), ("user", "uri-user")],
                true,
            ),
            (
                "postgresql://host?user=uri-user",
                &[("host", "host"), ("user", "uri-user")],
                true,
            ),
            ("postgresql://host?", &[("host", "host")], true),
            (
                "postgresql://[::1]:12345/db",
                &[("host", "::1"), ("port", "12345"), ("dbname", "db")],
                true,
            ),
            (
                "postgresql://[::1]/db",
                &[("host", "::1"), ("dbname", "db")],
                true,
            ),
            (
                "postgresql://[2001:db8::1234]/",
                &[("host", "2001:db8::1234")],
                true,
            ),
            (
                "postgresql://[200z:db8::1234]/",
                &[("host", "200z:db8::1234")],
                true,
            ),
            ("postgresql://[::1]", &[("host", "::1")], true),
            ("postgres://", &[], false),
            ("postgres:///", &[], false),
            ("postgres:///db", &[("dbname", "db")], false),
            (
                "postgres://uri-user@/db",
                &[("user", "uri-user"), ("dbname", "db")],
                false,
            ),
            (
                "postgres://?host=/path/to/socket/dir",
                &[("host", "/path/to/socket/dir")],
                false,
            ),
            ("postgres://@host", &[("host", "host")], true),
            ("postgres://host:/", &[("host", "host")], true),
            ("postgres://:12345/", &[("port", "12345")], false),
            (
                "postgres://otheruser@?host=/no/such/directory",
                &[("user", "otheruser"), ("host", "/no/such/directory")],
                false,
            ),
            (
                "postgres://otheruser@/?host=/no/such/directory",
                &[("user", "otheruser"), ("host", "/no/such/directory")],
                false,
            ),
            (
                "postgres://otheruser@:12345?host=/no/such/socket/path",
                &[
                    ("user", "otheruser"),
                    ("port", "12345"),
                    ("host", "/no/such/socket/path"),
                ],
                false,
            ),
            (
                "postgres://otheruser@:12345/db?host=/path/to/socket",
                &[
                    ("user", "otheruser"),
                    ("port", "12345"),
                    ("dbname", "db"),
                    ("host", "/path/to/socket"),
                ],
                false,
            ),
            (
                "postgres://:12345/db?host=/path/to/socket",
                &[
                    ("port", "12345"),
                    ("dbname", "db"),
                    ("host", "/path/to/socket"),
                ],
                false,
            ),
            (
                "postgres://:12345?host=/path/to/socket",
                &[("port", "12345"), ("host", "/path/to/socket")],
                false,
            ),
            (
                "postgres://%2Fvar%2Flib%2Fpostgresql/dbname",
                &[("host", "/var/lib/postgresql"), ("dbname", "dbname")],
                false,
            ),
            (
                "postgresql://host?sslmode=disable",
                &[("host", "host"), ("sslmode", "disable")],
                true,
            ),
            (
                "postgresql://host?sslmode=prefer",
                &[("host", "host"), ("sslmode", "prefer")],
                true,
            ),
            (
                "postgresql://host?sslmode=verify-full",
                &[("host", "host"), ("sslmode", "verify-full")],
                true,
            ),
        ];
        for (uri, stores, inet) in ok {
            assert_eq!(pairs(uri), kv(stores), "{uri}");
            let info = parse(uri).expect("parses");
            let mut s = slots(info.last("host"), info.last("hostaddr")).expect("slots");
            let network = s.any(|slot| matches!(slot, Slot::Tcp { .. }));
            assert_eq!(network, *inet, "{uri}");
        }
        // libpq refuses these query keywords; the parser reports them as unknown.
        for uri in [
            "postgresql://host/db?u%7aer=someotheruser&port=12345",
            "postgresql://host?uzer=",
        ] {
            let info = parse(uri).expect("parses");
            let unknown: Vec<&str> = info
                .params
                .iter()
                .map(|p| p.key.as_ref())
                .filter(|k| is_unknown_keyword(k))
                .collect();
            assert_eq!(unknown, ["uzer"], "{uri}");
        }
        let errors: &[(&str, ParseError)] = &[
            ("postgre://", ParseError::MissingEquals(0)),
            ("postgres://[::1", ParseError::UnterminatedIpv6(11)),
            ("postgres://[]", ParseError::EmptyIpv6(11)),
            // libpq counts positions from 1: "position 17".
            ("postgres://[::1]z", ParseError::AfterIpv6(16)),
            ("postgresql://host?zzz", ParseError::MissingQueryEquals(18)),
            (
                "postgresql://host?value1&value2",
                ParseError::MissingQueryEquals(18),
            ),
            (
                "postgresql://host?key=key=value",
                ParseError::ExtraQueryEquals(18),
            ),
            ("postgres://host?dbname=%XXfoo", ParseError::BadPercent(23)),
            ("postgresql://a%00b", ParseError::PercentZero(14)),
            ("postgresql://%zz", ParseError::BadPercent(13)),
            ("postgresql://%1", ParseError::BadPercent(13)),
            ("postgresql://%", ParseError::BadPercent(13)),
        ];
        for (uri, err) in errors {
            assert_eq!(parse(uri), Err(err.clone()), "{uri}");
        }
    }
}
