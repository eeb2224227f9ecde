//! pgjdbc URLs, parsed as `org.postgresql.Driver.parseURL` parses them.
//!
//! `jdbc:postgresql:` and wrapped forms `jdbc:<wrapper>:postgresql:` (p6spy, OpenTelemetry,
//! the AWS wrapper, Testcontainers). Query keys and values are form-decoded (`+` is a
//! space). Errors carry byte positions only.

use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JdbcUrl<'a> {
    /// The wrapper driver named between `jdbc:` and `postgresql:`, if any.
    pub wrapper: Option<&'a str>,
    /// Hosts in order (`localhost` where the URL names none).
    pub hosts: Vec<Cow<'a, str>>,
    /// Query properties in order; a key without `=` has an empty value.
    pub params: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JdbcError {
    #[error("more than one \"/\" after the host list")]
    TooManySlashes,
    #[error("no \"/\" after the host list")]
    MissingSlash,
    #[error("a port is not a number")]
    BadPort,
    #[error("invalid %-escape at byte {0}")]
    BadEscape(usize),
}

/// Recognises `jdbc:postgresql:` and `jdbc:<wrapper>:postgresql:`; returns the wrapper and
/// where the part after `postgresql:` starts.
pub(crate) fn recognise(s: &str) -> Option<(Option<&str>, usize)> {
    let rest = s.strip_prefix("jdbc:")?;
    if rest.starts_with("postgresql:") {
        return Some((None, "jdbc:postgresql:".len()));
    }
    let colon = rest.find(':')?;
    let wrapper = &rest[..colon];
    let valid = !wrapper.is_empty()
        && wrapper
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.');
    if valid && rest[colon + 1..].starts_with("postgresql:") {
        Some((
            Some(wrapper),
            "jdbc:".len() + colon + 1 + "postgresql:".len(),
        ))
    } else {
        None
    }
}

/// Parses a URL that [`recognise`] accepted.
pub(crate) fn parse(s: &str) -> Result<JdbcUrl<'_>, JdbcError> {
    let Some((wrapper, start)) = recognise(s) else {
        return Err(JdbcError::MissingSlash);
    };
    let (server, args, args_at) = match s[start..].find('?') {
        Some(q) => (&s[start..start + q], &s[start + q + 1..], start + q + 1),
        None => (&s[start..], "", s.len()),
    };
    let mut hosts = Vec::with_capacity(1);
    if let Some(net) = server
        .strip_prefix("//")
        .filter(|_| server != "//" && server != "///")
    {
        if net.bytes().filter(|&c| c == b'/').count() > 1 {
            return Err(JdbcError::TooManySlashes);
        }
        let slash = net.find('/').ok_or(JdbcError::MissingSlash)?;
        for address in net[..slash].split(',') {
            let port_idx = address.rfind(':');
            let host = match port_idx {
                Some(i) if address.rfind(']').is_none_or(|b| b < i) => {
                    let port = &address[i + 1..];
                    if !port.bytes().all(|c| c.is_ascii_digit()) {
                        return Err(JdbcError::BadPort);
                    }
                    &address[..i]
                }
                _ => address,
            };
            hosts.push(Cow::Borrowed(if host.is_empty() {
                "localhost"
            } else {
                host
            }));
        }
    } else {
        hosts.push(Cow::Borrowed("localhost"));
    }
    let mut params = Vec::with_capacity(4);
    let mut at = args_at;
    for token in args.split('&') {
        let here = at;
        at += token.len() + 1;
        if token.is_empty() {
            continue;
        }
        match token.find('=') {
            None => params.push((form_decode(token, here)?, Cow::Borrowed(""))),
            Some(eq) => params.push((
                form_decode(&token[..eq], here)?,
                form_decode(&token[eq + 1..], here + eq + 1)?,
            )),
        }
    }
    Ok(JdbcUrl {
        wrapper,
        hosts,
        params,
    })
}

/// `java.net.URLDecoder.decode(s, UTF_8)`.
fn form_decode(s: &str, offset: usize) -> Result<Cow<'_, str>, JdbcError> {
    if !s.contains(['%', '+']) {
        return Ok(Cow::Borrowed(s));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
                let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
                    return Err(JdbcError::BadEscape(offset + i));
                };
                out.push((hi << 4 | lo) as u8);
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(Cow::Owned(String::from_utf8_lossy(&out).into_owned()))
}

impl JdbcUrl<'_> {
    /// The value pgjdbc ends up with for `key` (the last).
    pub(crate) fn last(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }

    pub(crate) fn values<'s>(&'s self, key: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.params
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(s: &str) -> Vec<String> {
        parse(s)
            .expect("parses")
            .hosts
            .into_iter()
            .map(Cow::into_owned)
            .collect()
    }

    #[test]
    fn recognition() {
        assert_eq!(recognise("jdbc:postgresql://h/db"), Some((None, 16)));
        assert_eq!(
            recognise("jdbc:p6spy:postgresql://h/db"),
            Some((Some("p6spy"), 22))
        );
        assert_eq!(
            recognise("jdbc:aws-wrapper:postgresql://h/db").map(|r| r.0),
            Some(Some("aws-wrapper"))
        );
        assert_eq!(recognise("jdbc:mysql://h/db"), None);
        assert_eq!(recognise("jdbc:a:b:postgresql://h/db"), None);
        assert_eq!(recognise("postgresql://h"), None);
    }

    #[test]
    fn hosts_and_defaults() {
        assert_eq!(hosts("jdbc:postgresql://db:5432/app"), ["db"]);
        assert_eq!(
            hosts("jdbc:postgresql://a:1,b,[::1]:3/app"),
            ["a", "b", "[::1]"]
        );
        assert_eq!(hosts("jdbc:postgresql://[::1]/app"), ["[::1]"]);
        assert_eq!(hosts("jdbc:postgresql://:5432/app"), ["localhost"]);
        assert_eq!(hosts("jdbc:postgresql:app"), ["localhost"]);
        assert_eq!(hosts("jdbc:postgresql:/"), ["localhost"]);
        assert_eq!(hosts("jdbc:postgresql://"), ["localhost"]);
    }

    #[test]
    fn params_are_form_decoded() {
        let url = parse("jdbc:postgresql://db/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca+1.crt&ssl&&user=a").expect("parses");
        assert_eq!(url.values("sslmode").collect::<Vec<_>>(), ["verify-full"]);
        assert_eq!(
            url.values("sslrootcert").collect::<Vec<_>>(),
            ["/etc/ca 1.crt"]
        );
        assert_eq!(url.values("ssl").collect::<Vec<_>>(), [""]);
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse("jdbc:postgresql://db/app/x"),
            Err(JdbcError::TooManySlashes)
        );
        assert_eq!(parse("jdbc:postgresql://db"), Err(JdbcError::MissingSlash));
        assert_eq!(parse("jdbc:postgresql://db:x/app"), Err(JdbcError::BadPort));
        assert_eq!(
            parse("jdbc:postgresql://db/app?password=%zz"),
            Err(JdbcError::BadEscape(34))
        );
    }
}
