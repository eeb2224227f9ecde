//! pgjdbc's rules (docs/admission.md): only the JDBC URL counts (pgjdbc reads no PG*
//! variable); `sslmode` is case-insensitive; the SSL factory decides what the root
//! certificate is, and `NonValidatingFactory` turns verification off.

use smallvec::smallvec;

use super::libpq_rules::root_of;
use super::{
    Candidates, Destination, Judge, Mode, Root, Subject, hidden_var, keep_last_distinct,
    modes_verify_full, roots_configured, weaker_destination,
};
use crate::env::Var;
use crate::hosts::{self, Loopback, has_hidden};
use crate::jdbc::JdbcUrl;
use crate::verdict::*;

impl<'e, 'a> Judge<'e, 'a> {
    pub(crate) fn jdbc(&mut self, s: &Subject<'a>, url: &JdbcUrl<'_>, var: &Var<'a>) {
        self.client = true;
        let factory = url.last("sslfactory");
        let non_validating = matches!(
            factory,
            Some(
                "org.postgresql.ssl.NonValidatingFactory"
                    | "org.postgresql.ssl.jdbc4.NonValidatingFactory"
            )
        );
        if non_validating {
            self.push(
                s,
                Code::VerificationDisabled,
                Cause::NonValidatingFactory,
                None,
            );
            return;
        }
        let unverifiable = unverifiable(url, factory);
        let (modes, conflicting) = modes(url, var);
        if conflicting {
            self.notes.push(Note::Conflicting {
                variable: s.variable.clone(),
                key: "sslmode",
            });
        }
        let roots: Candidates<Root<'a>> =
            if factory == Some("org.postgresql.ssl.DefaultJavaSSLFactory") {
                self.notes.push(Note::JvmTrustStore {
                    variable: s.variable.clone(),
                });
                smallvec![Root::System(SetBy::Param { key: "sslfactory" })]
            } else {
                match url.last("sslrootcert") {
                    None => smallvec![Root::None],
                    Some(v) => smallvec![root_of(v, SetBy::Param { key: "sslrootcert" }, var)],
                }
            };
        let s = &Subject {
            scope: Scope {
                form: Form::Jdbc,
                string_sets_mode: true,
                string_sets_root: true,
                mode_verify_full: modes_verify_full(&modes),
                root_configured: roots_configured(&roots),
                ..s.scope
            },
            ..s.clone()
        };
        let mut dest = Destination::Socket;
        for h in &url.hosts {
            let n = match hosts::loopback(h) {
                Loopback::Yes => Destination::Loopback,
                Loopback::No => Destination::Remote,
                Loopback::Unknown => Destination::Unknown(Ok(hidden_var(var))),
            };
            dest = weaker_destination(dest, n);
        }
        if let Some(u) = unverifiable
            && !(matches!(dest, Destination::Loopback) && self.loopback_allowed)
        {
            self.push(s, Code::Unverifiable, Cause::Unverifiable(u), None);
            return;
        }
        self.weakest(s, &modes, &roots, &[dest], true);
    }
}

/// A host-name verifier or SSL factory whose checks verifyfull cannot know (pgjdbc's own
/// verifier, named explicitly, is no override).
fn unverifiable(url: &JdbcUrl<'_>, factory: Option<&str>) -> Option<Unverifiable<'static>> {
    let verifier = url.last("sslhostnameverifier");
    if verifier.is_some_and(|v| v != "org.postgresql.ssl.PGjdbcHostnameVerifier") {
        return Some(Unverifiable::JdbcHostnameVerifier);
    }
    match factory {
        None
        | Some("org.postgresql.ssl.LibPQFactory")
        | Some("org.postgresql.ssl.jdbc4.LibPQFactory")
        | Some("org.postgresql.ssl.DefaultJavaSSLFactory") => None,
        Some(_) => Some(Unverifiable::JdbcFactory),
    }
}

/// The sslmode candidates of a URL (`sslmode`, case-insensitive, each distinct value; else
/// `ssl`: true or empty means verify-full, anything else prefer), and whether `sslmode` is
/// given more than once with different values.
fn modes<'a>(url: &JdbcUrl<'_>, var: &Var<'a>) -> (Candidates<Mode<'a>>, bool) {
    let mut stores: Candidates<&str> = url.values("sslmode").collect();
    keep_last_distinct(&mut stores, |v| *v);
    let conflicting = stores.len() > 1;
    if stores.is_empty() {
        let ssl = SetBy::Param { key: "ssl" };
        let modes = match url.last("ssl") {
            None => smallvec![Mode::Default],
            Some(v) if has_hidden(v) => smallvec![Mode::Hidden(hidden_var(var))],
            Some(v) if v.is_empty() || v.eq_ignore_ascii_case("true") => {
                smallvec![Mode::Known(SslMode::VerifyFull, ssl)]
            }
            Some(_) => smallvec![Mode::Known(SslMode::Prefer, ssl)],
        };
        return (modes, conflicting);
    }
    let modes = stores
        .into_iter()
        .map(|v| {
            if has_hidden(v) {
                return Mode::Hidden(hidden_var(var));
            }
            let by = SetBy::Param { key: "sslmode" };
            match SslMode::parse_ignore_case(v) {
                Some(m) => Mode::Known(m, by),
                None => Mode::Invalid {
                    by,
                    empty: v.is_empty(),
                    close: None,
                },
            }
        })
        .collect();
    (modes, conflicting)
}
