//! Prisma's query and schema engines (docs/drivers.md, "Prisma"): a `postgres[ql]://` URL
//! with a parameter only Prisma takes. Its engine knows only sslmode disable, prefer and
//! require (verify-full is ignored and leaves prefer); verification is `sslaccept=strict`,
//! and `sslcert` is the CA (not a client certificate, as in libpq). libpq refuses these
//! parameters, so Prisma's rules alone decide.

use super::{CA, Driver, Environment, Judgement, Parsed, Signals, after_postgres_scheme, url};
use crate::fixes::params;
use crate::verdict::{Change, Code, FixValue};

#[derive(Debug)]
pub(crate) struct Prisma;

/// Parameters no other driver takes.
const SIGNALS: &[&str] = &[
    "sslaccept",
    "sslidentity",
    "schema",
    "connection_limit",
    "pool_timeout",
    "pgbouncer",
];

impl Driver for Prisma {
    fn name(&self) -> &'static str {
        "Prisma"
    }

    fn signals(&self) -> Signals {
        Signals {
            value_prefixes: &["postgresql:", "postgres:"],
            name_prefixes: &[],
            separator: None,
        }
    }

    fn recognise(&self, _: &str, value: &str) -> Option<Parsed> {
        let rest = after_postgres_scheme(value)?;
        let (_, query) = rest.split_once('?')?;
        let signal = |key: &str| SIGNALS.contains(&key);
        // One pass over the raw keys; an escaped key is decoded first (Prisma decodes it).
        if query.contains('%') {
            let parsed = url(rest);
            return parsed
                .params
                .iter()
                .any(|(k, _)| signal(k))
                .then_some(parsed);
        }
        query
            .split('&')
            .any(|p| signal(p.split('=').next().unwrap_or("")))
            .then(|| url(rest))
    }

    fn runs_on_node(&self) -> bool {
        true
    }

    fn judge(&self, _: &str, t: &Parsed, _: &dyn Environment) -> Judgement {
        let fix = || {
            let mut fix = params(
                Some("Prisma"),
                &[
                    ("sslmode", FixValue::Literal("require")),
                    ("sslaccept", FixValue::Literal("strict")),
                    ("sslcert", CA),
                ],
            );
            if let Some(Change::Param { drop, .. }) = fix.changes.first_mut() {
                *drop = &["uselibpqcompat"];
            }
            vec![fix]
        };
        // Any sslaccept value but accept_invalid_certs means strict.
        let strict = t
            .last("sslaccept")
            .is_some_and(|v| v != "accept_invalid_certs");
        let ca = t.last("sslcert").is_some_and(|v| !v.is_empty());
        let found = |code, what: &'static str| Judgement::found(code, what, fix());
        let judged = match t.last("sslmode") {
            // The same URL in node-postgres's libpq mode (Prisma 7's adapter) verifies nothing.
            _ if t.has("uselibpqcompat") => found(
                Code::SslModeTooWeak,
                "uselibpqcompat: node-postgres (Prisma 7's adapter) reads sslmode=require as libpq does, unverified",
            ),
            Some("disable") => found(Code::SslModeTooWeak, "sslmode=disable: no TLS at all"),
            Some("require") if strict && ca => Judgement::pass(),
            Some("require") if strict => Judgement::pass().note(
                "Prisma's sslaccept=strict without sslcert verifies against the system trust store: a private CA is not trusted there",
            ),
            Some("require") => found(
                Code::SslModeTooWeak,
                "sslmode=require without sslaccept=strict: Prisma accepts any server certificate (sslaccept defaults to accept_invalid_certs)",
            ),
            Some("prefer") => found(
                Code::SslModeTooWeak,
                "sslmode=prefer: Prisma falls back to plaintext when the server (or an impostor) declines TLS",
            ),
            None => found(
                Code::SslModeUnset,
                "no sslmode: Prisma uses prefer and accepts any certificate, with a plaintext fallback",
            ),
            Some(_) => found(
                Code::SslModeTooWeak,
                "Prisma's engine knows only disable, prefer and require: any other sslmode (verify-full included) is ignored and leaves prefer, unverified",
            ),
        };
        if t.has("sslrootcert") {
            judged.note("Prisma's engine ignores sslrootcert: its CA parameter is sslcert")
        } else {
            judged
        }
    }
}
