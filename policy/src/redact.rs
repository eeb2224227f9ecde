//! What a cache may keep of a Secret value (docs/rules.md, "Verdicts"): the facts the engine
//! needs, never the value. Connection strings lose their passwords; sslmode tokens and
//! the other short switches libpq reads stay; everything else becomes a hidden span, so a
//! reference to it is `Unresolved`, never guessed.

use std::collections::HashMap;

use crate::env::{Lookup, SourceData, SourceKind, ValueSource};
use crate::hosts::HIDDEN_STR;
use crate::jdbc;
use crate::libpq::{self, SECRET_KEYWORDS};
use crate::verdict::SslMode;

/// Values that are switches, not secrets: sslmode tokens, `system`, `PGREQUIRESSL`'s
/// `0`/`1`, `require` for `PGGSSENCMODE`, and the empty value.
fn is_switch(v: &str) -> bool {
    v.is_empty() || SslMode::parse_ignore_case(v).is_some() || matches!(v, "system" | "0" | "1")
}

/// Removes every password from a URI, in place: the userinfo password and secret query
/// parameters. `start` is where the text after `scheme://` begins.
fn redact_uri(s: &str, start: usize) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    out.push_str(&s[..start]);
    let mut p = start;
    // libpq's look-ahead: credentials end at the first '@' before any '/'.
    let mut q = p;
    while q < b.len() && b[q] != b'@' && b[q] != b'/' {
        q += 1;
    }
    if q < b.len() && b[q] == b'@' {
        let user_end = s[p..q].find(':').map_or(q, |i| p + i);
        out.push_str(&s[p..user_end]);
        out.push('@');
        p = q + 1;
    }
    let (rest, query) = match s[p..].find('?') {
        Some(i) => (&s[p..p + i], Some(&s[p + i + 1..])),
        None => (&s[p..], None),
    };
    out.push_str(rest);
    if let Some(query) = query {
        let kept: Vec<&str> = query
            .split('&')
            .filter(|param| {
                let key = param.split('=').next().unwrap_or_default();
                let decoded = libpq::decode(key, 0).unwrap_or_default();
                !SECRET_KEYWORDS.contains(&decoded.as_ref())
            })
            .collect();
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    out
}

fn redact_jdbc(s: &str) -> String {
    match s.find('?') {
        None => s.to_string(),
        Some(i) => {
            let kept: Vec<&str> = s[i + 1..]
                .split('&')
                .filter(|param| {
                    let key = param.split('=').next().unwrap_or_default();
                    !key.eq_ignore_ascii_case("password")
                        && !key.eq_ignore_ascii_case("sslpassword")
                })
                .collect();
            format!("{}?{}", &s[..i], kept.join("&"))
        }
    }
}

/// What a cache keeps of one Secret value.
pub fn secret_value(value: &str) -> String {
    if is_switch(value) {
        return value.to_string();
    }
    if let Some(scheme) = libpq::uri_scheme(value) {
        return redact_uri(value, scheme.start);
    }
    if jdbc::recognise(value).is_some() {
        return redact_jdbc(value);
    }
    if let libpq::KeyValueRecognition::Yes(info) = libpq::recognise_keyword_value(value) {
        return info.without_secrets().to_keyword_value();
    }
    HIDDEN_STR.to_string()
}

/// ConfigMap values longer than this are kept as hidden: no environment value is that
/// long, and whole files kept from ConfigMaps would cost memory for nothing.
pub const MAX_CONFIG_MAP_VALUE: usize = 4096;

/// What a cache keeps of one ConfigMap's or Secret's data: ConfigMap values as they are
/// (hidden beyond [`MAX_CONFIG_MAP_VALUE`]), Secret values through [`secret_value`].
pub fn reduce(kind: SourceKind, data: impl IntoIterator<Item = (String, String)>) -> SourceData {
    data.into_iter()
        .map(|(k, v)| {
            let v = match kind {
                SourceKind::Secret => secret_value(&v),
                SourceKind::ConfigMap if v.len() > MAX_CONFIG_MAP_VALUE => HIDDEN_STR.to_string(),
                SourceKind::ConfigMap => v,
            };
            (k, v)
        })
        .collect()
}

/// ConfigMaps and Secrets read whole from a cluster, each kept as [`reduce`] keeps it: an
/// object that is not there does not exist (`Missing`); a kind that could not be read is
/// hidden (`Unknown`), never missing. The audit's and the operator's reports' source.
#[derive(Debug)]
pub struct Listed {
    objects: HashMap<(SourceKind, String, String), SourceData>,
    /// Whether ConfigMaps, then Secrets, could be read.
    readable: [bool; 2],
}

fn slot(kind: SourceKind) -> usize {
    match kind {
        SourceKind::ConfigMap => 0,
        SourceKind::Secret => 1,
    }
}

impl Listed {
    /// Empty; each kind readable or not.
    pub fn new(config_maps: bool, secrets: bool) -> Listed {
        Listed {
            objects: HashMap::new(),
            readable: [config_maps, secrets],
        }
    }

    /// Says whether `kind` could be read after all.
    pub fn set_readable(&mut self, kind: SourceKind, readable: bool) {
        self.readable[slot(kind)] = readable;
    }

    /// Keeps an object's `data` (Secret values decoded), reduced.
    pub fn insert(
        &mut self,
        kind: SourceKind,
        namespace: &str,
        name: &str,
        data: impl IntoIterator<Item = (String, String)>,
    ) {
        let key = (kind, namespace.to_string(), name.to_string());
        self.objects.insert(key, reduce(kind, data));
    }

    /// Forgets a deleted object.
    pub fn remove(&mut self, kind: SourceKind, namespace: &str, name: &str) {
        self.objects
            .remove(&(kind, namespace.to_string(), name.to_string()));
    }
}

impl ValueSource for Listed {
    fn lookup(&self, kind: SourceKind, namespace: Option<&str>, name: &str) -> Lookup<'_> {
        if !self.readable[slot(kind)] {
            return Lookup::Unknown;
        }
        let key = (
            kind,
            namespace.unwrap_or_default().to_string(),
            name.to_string(),
        );
        self.objects
            .get(&key)
            .map_or(Lookup::Missing, Lookup::Found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_go_facts_stay() {
        let cases = [
            (
                "postgres://app:s3cr3t-pw@db:5432/app?sslmode=require",
                "postgres://app@db:5432/app?sslmode=require",
            ),
            (
                "postgresql://app:pw@h1,h2/app?password=x&sslrootcert=/ca",
                "postgresql://app@h1,h2/app?sslrootcert=/ca",
            ),
            (
                "postgresql+asyncpg://u:pw@db/app?ssl=require",
                "postgresql+asyncpg://u@db/app?ssl=require",
            ),
            ("postgres://db/app?pass%77ord=x", "postgres://db/app?"),
            (
                "jdbc:postgresql://db/app?user=a&password=pw&sslmode=verify-full",
                "jdbc:postgresql://db/app?user=a&sslmode=verify-full",
            ),
            (
                "host=db password='p w' sslmode=verify-full",
                "host='db' sslmode='verify-full'",
            ),
            ("verify-full", "verify-full"),
            ("system", "system"),
            ("1", "1"),
            ("", ""),
            ("hunter2hunter2", "\u{E000}"),
            ("db.prod.svc", "\u{E000}"),
        ];
        for (input, kept) in cases {
            assert_eq!(secret_value(input), kept, "{input}");
        }
    }
}
