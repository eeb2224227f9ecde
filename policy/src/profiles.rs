//! Application profiles (docs/applications.md): how off-the-shelf applications read their
//! PostgreSQL settings from their own variables, and what each value makes their driver
//! do. One file per application in `profiles/`, checked when the crate is built.

mod schema;

pub use schema::{
    Condition, Error, HostVariable, MAX_BYTES, Outcome, Profile, QueryFormat, RootCert, Source,
    Switch, UrlFormat, UrlVariable, parse,
};

use std::fmt::Write as _;
use std::sync::LazyLock;

/// The bundled profiles' files and text (`build.rs` checked every one).
static BUNDLED_TEXT: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/profiles.rs"));

static BUNDLED: LazyLock<Vec<Profile>> = LazyLock::new(|| {
    BUNDLED_TEXT
        .iter()
        .filter_map(|(file, text)| parse(file, text).ok())
        .collect()
});

/// The bundled profiles, by file name.
pub fn bundled() -> &'static [Profile] {
    &BUNDLED
}

impl Outcome {
    /// What it means, for people.
    pub fn describe(self) -> &'static str {
        match self {
            Outcome::Plaintext => "no TLS",
            Outcome::Unverified => "TLS, the server not verified",
            Outcome::ChainOnly => "TLS, the chain verified but not the host name",
            Outcome::Verified => "TLS, chain and host name verified",
            Outcome::Unknown => "cannot be told",
        }
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// docs/applications.md: every profile, what verify-full needs there, and its sources.
pub fn markdown(profiles: &[Profile]) -> String {
    let mut out = String::from(
        "# Applications verifyfull knows\n\n\
         Generated from `policy/profiles/` by `VERIFYFULL_BLESS=1 cargo test -p verifyfull-policy \
         --lib profiles`; do not edit. A container is judged as one of these applications when \
         its own variables say so (never its image name): by what the application's driver \
         does with each value, as its documentation or source, cited for every rule, says. A \
         recognised application whose server is not visible is `Unresolved`; findings name \
         the application and what to set in its variables. Profiles of your own (the \
         format: [profile-example.yaml](profile-example.yaml)): `verifyfull check --profile \
         FILE`, or the chart's `profiles:` value for the webhook and the operator, re-read \
         while they run ([operations.md](operations.md#application-profiles-of-your-own)).\n\n\
         | application | driver | recognised by | TLS decided by | verify-full needs |\n\
         |---|---|---|---|---|\n",
    );
    for p in profiles {
        let recognise: Vec<String> = p
            .recognise
            .iter()
            .map(|c| match &c.equals {
                Some(v) => format!("`{}={}`", c.variable, v.join("|")),
                None => format!("`{}`", c.variable),
            })
            .collect();
        let mut deciding: Vec<String> = p.tls.iter().map(|s| format!("`{}`", s.variable)).collect();
        if let Some(u) = &p.url {
            deciding.insert(0, format!("`{}` (URL)", u.variable));
        }
        let fix: Vec<String> = p.fix.iter().map(|(k, v)| format!("`{k}={v}`")).collect();
        let _ = writeln!(
            out,
            "| [{}](#{}) | {} | {} | {} | {} |",
            cell(&p.application),
            p.id,
            cell(&p.driver),
            recognise.join(" and "),
            deciding.join(", "),
            cell(&fix.join(" ")),
        );
    }
    for p in profiles {
        section(&mut out, p);
    }
    out
}

/// One application's section of docs/applications.md: its variables, notes and sources.
fn section(out: &mut String, p: &Profile) {
    let _ = write!(
        out,
        "\n## {}\n\n<a id=\"{}\"></a>As of {}; driver: {}.\n\n",
        p.application, p.id, p.version, p.driver
    );
    if let Some(u) = &p.url {
        let _ = writeln!(out, "- `{}`: the whole connection URL.", u.variable);
    }
    if let Some(h) = &p.host {
        let default = h
            .default
            .as_deref()
            .map_or(String::new(), |d| format!(" (unset: `{d}`)"));
        let _ = writeln!(out, "- `{}`: the server{default}.", h.variable);
    }
    for s in &p.tls {
        let default = s
            .default
            .as_deref()
            .map_or(String::new(), |d| format!("; unset: `{d}`"));
        let values: Vec<String> = s
            .values
            .iter()
            .map(|(v, o)| format!("`{v}`: {}", o.describe()))
            .collect();
        let other = match s.query {
            Some(QueryFormat::Pgjdbc) => {
                "any other value: judged as a pgjdbc query string (its sslmode, or ssl=true)"
                    .to_string()
            }
            None => format!("any other value: {}", s.other.describe()),
        };
        let _ = writeln!(
            out,
            "- `{}`: {}; {other}{default}.",
            s.variable,
            values.join(", "),
        );
    }
    if let Some(r) = &p.root_cert {
        let need = if r.required {
            "needed for verification"
        } else {
            "optional: the driver falls back to other roots"
        };
        let _ = writeln!(out, "- `{}`: the CA file, {need}.", r.variable);
    }
    if let Some(n) = &p.notes {
        let _ = writeln!(out, "\n{}", n.trim());
    }
    out.push_str("\nSources:\n\n");
    for s in &p.sources {
        let _ = writeln!(out, "- {}: {}", s.about.trim(), s.cite.trim());
    }
    if !p.unconfirmed.is_empty() {
        out.push_str("\nNot confirmed from the application's documentation or source:\n\n");
        for u in &p.unconfirmed {
            let _ = writeln!(out, "- {}", u.trim());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_profile_loads_and_the_docs_are_generated_from_them() {
        assert_eq!(bundled().len(), BUNDLED_TEXT.len());
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/applications.md");
        let generated = markdown(bundled());
        if std::env::var_os("VERIFYFULL_BLESS").is_some() {
            std::fs::write(path, &generated).expect("write docs/applications.md");
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/applications.md is not what the profiles say: run VERIFYFULL_BLESS=1 cargo test -p verifyfull-policy --lib profiles"
        );
    }

    #[test]
    fn a_bad_profile_names_its_file_and_field() {
        let good = BUNDLED_TEXT[0].1;
        let cases = [
            (format!("{good}\nsurprise: 1\n"), "surprise"),
            (good.replace("recognise:", "recognize:"), "recognize"),
            ("id: x\n".to_string(), "application"),
            ("{".to_string(), "my.yaml"),
        ];
        for (text, field) in cases {
            let e = parse("my.yaml", &text).expect_err(field);
            assert_eq!(e.file, "my.yaml");
            assert!(e.to_string().contains(field), "{field}: {e}");
        }
        let huge = "#".repeat(MAX_BYTES + 1);
        assert!(parse("big.yaml", &huge).is_err());
    }
}

/// A set of profiles, looked up by the variable of each one's first condition: a
/// container's variables are looked up, never every profile scanned per variable.
#[derive(Debug)]
pub struct ProfileSet {
    profiles: Vec<&'static Profile>,
    index: std::collections::HashMap<&'static str, Vec<&'static Profile>>,
    /// By a name's first byte, a bit per length (mod 64) of the indexed names: nearly every
    /// variable of a container is ruled out without hashing it.
    maybe: Vec<u64>,
}

impl ProfileSet {
    fn new(profiles: Vec<&'static Profile>) -> ProfileSet {
        let mut index: std::collections::HashMap<&'static str, Vec<&'static Profile>> =
            std::collections::HashMap::new();
        let mut maybe = vec![0u64; 256];
        for p in &profiles {
            if let Some(first) = p.recognise.first() {
                let name = first.variable.as_str();
                index.entry(name).or_default().push(p);
                if let Some(b) = name.as_bytes().first() {
                    maybe[usize::from(*b)] |= 1 << (name.len() % 64);
                }
            }
        }
        ProfileSet {
            profiles,
            index,
            maybe,
        }
    }

    /// The bundled profiles with a user's: one of the user's replaces a bundled one of the
    /// same `id`. Kept for the life of the process (the CLI loads them once).
    pub fn with_user(user: Vec<Profile>) -> &'static ProfileSet {
        let user: &'static [Profile] = Box::leak(user.into_boxed_slice());
        let mut all: Vec<&'static Profile> = bundled()
            .iter()
            .filter(|b| !user.iter().any(|u| u.id == b.id))
            .collect();
        all.extend(user.iter());
        Box::leak(Box::new(ProfileSet::new(all)))
    }

    /// Every profile in the set.
    pub fn profiles(&self) -> &[&'static Profile] {
        &self.profiles
    }

    /// The profiles a variable named `name` may be the first sign of.
    pub(crate) fn candidates(&self, name: &str) -> &[&'static Profile] {
        let possible = name
            .as_bytes()
            .first()
            .is_some_and(|b| self.maybe[usize::from(*b)] >> (name.len() % 64) & 1 == 1);
        if !possible {
            return &[];
        }
        self.index.get(name).map_or(&[], Vec::as_slice)
    }
}

static BUNDLED_SET: LazyLock<ProfileSet> =
    LazyLock::new(|| ProfileSet::new(bundled().iter().collect()));

/// A user's profiles from `(file, text)` pairs: each parsed and checked, and no `id`
/// given by two files. The first problem, naming its file and field.
pub fn parse_user<'t>(
    files: impl IntoIterator<Item = (&'t str, &'t str)>,
) -> Result<Vec<Profile>, Error> {
    let mut loaded: Vec<(Profile, &str)> = Vec::new();
    for (file, text) in files {
        let p = parse(file, text)?;
        if let Some((_, other)) = loaded.iter().find(|(q, _)| q.id == p.id) {
            return Err(Error {
                file: file.to_string(),
                message: format!("id: {:?} is given by {other} too", p.id),
            });
        }
        loaded.push((p, file));
    }
    Ok(loaded.into_iter().map(|(p, _)| p).collect())
}

/// A profile file's text from `f` (the caller opens it: this crate touches no file),
/// refused unread past the size a profile can have.
pub fn read_text(file: &str, f: impl std::io::Read) -> Result<String, Error> {
    use std::io::Read as _;
    let err = |message: String| Error {
        file: file.to_string(),
        message,
    };
    let mut bytes = Vec::new();
    f.take(MAX_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(e.to_string()))?;
    if bytes.len() > MAX_BYTES {
        return Err(err(format!("over {MAX_BYTES} bytes")));
    }
    String::from_utf8(bytes).map_err(|_| err("not UTF-8 text".to_string()))
}

/// A set that is replaced, whole, while the engine runs: the webhook and operator reload
/// a user's profiles from a mounted ConfigMap (docs/applications.md). A judgement reads
/// the set once per Pod, so no Pod is judged with two sets.
#[derive(Debug)]
pub struct Live(std::sync::RwLock<&'static ProfileSet>);

impl Live {
    /// Starts with the bundled profiles. Kept for the life of the process.
    pub fn new() -> &'static Live {
        Box::leak(Box::new(Live(std::sync::RwLock::new(&BUNDLED_SET))))
    }

    /// Replaces the set; Pods judged from now on use `set`.
    pub fn replace(&self, set: &'static ProfileSet) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = set;
    }

    /// The set in use.
    pub fn current(&self) -> &'static ProfileSet {
        *self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The profiles the engine uses: the bundled ones, a set with a user's, or a live set.
#[derive(Debug, Clone, Copy, Default)]
pub struct Profiles(Chosen);

#[derive(Debug, Clone, Copy, Default)]
enum Chosen {
    #[default]
    Bundled,
    Fixed(&'static ProfileSet),
    Live(&'static Live),
}

impl Profiles {
    /// A fixed set.
    pub fn new(set: &'static ProfileSet) -> Profiles {
        Profiles(Chosen::Fixed(set))
    }

    /// The set `live` holds when a Pod is judged.
    pub fn live(live: &'static Live) -> Profiles {
        Profiles(Chosen::Live(live))
    }

    /// The set in use now.
    pub fn set(self) -> &'static ProfileSet {
        match self.0 {
            Chosen::Bundled => &BUNDLED_SET,
            Chosen::Fixed(set) => set,
            Chosen::Live(live) => live.current(),
        }
    }
}

/// Two settings are the same when they use the same set, or the same live set.
impl PartialEq for Profiles {
    fn eq(&self, other: &Profiles) -> bool {
        match (self.0, other.0) {
            (Chosen::Live(a), Chosen::Live(b)) => std::ptr::eq(a, b),
            (Chosen::Live(_), _) | (_, Chosen::Live(_)) => false,
            _ => std::ptr::eq(self.set(), other.set()),
        }
    }
}

impl Eq for Profiles {}

/// Where a recognised application connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Server<'v> {
    /// A host, as visible.
    Host(&'v str),
    /// Set, but hidden.
    Hidden(&'static str),
    /// In a file verifyfull cannot see.
    NotVisible,
}

/// What a recognised application's settings make its driver do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Judged<'v> {
    /// A whole URL variable is set: it is judged as a connection string.
    ByUrl,
    Pass,
    Finding {
        code: crate::verdict::Code,
        /// The variable that decides.
        variable: &'static str,
        what: String,
        server: Server<'v>,
    },
}

/// What pgjdbc does with a query string appended to its URL (docs/drivers.md, pgjdbc),
/// when the engine cannot judge the whole URL (its server is hidden): the last `sslmode`
/// decides; without one, `ssl=true` (or an empty `ssl`) means verify-full and no `ssl`
/// means prefer; `NonValidatingFactory` verifies nothing; another factory or host-name
/// verifier is not judged.
fn pgjdbc_query(query: &str) -> Outcome {
    let whole = format!("jdbc:postgresql://h/d{query}");
    let Ok(url) = crate::jdbc::parse(&whole) else {
        return Outcome::Unknown;
    };
    match url.last("sslfactory") {
        Some(f) if f.ends_with(".NonValidatingFactory") => return Outcome::Unverified,
        Some(_) => return Outcome::Unknown,
        None => {}
    }
    if url.last("sslhostnameverifier").is_some() {
        return Outcome::Unknown;
    }
    let mode = match (url.last("sslmode"), url.last("ssl")) {
        (Some(m), _) => m.to_ascii_lowercase(),
        (None, Some(s)) if s.is_empty() || s.eq_ignore_ascii_case("true") => "verify-full".into(),
        (None, _) => "prefer".into(),
    };
    match mode.as_str() {
        "disable" | "allow" | "prefer" => Outcome::Plaintext,
        "require" => Outcome::Unverified,
        "verify-ca" => Outcome::ChainOnly,
        // Without sslrootcert pgjdbc reads ~/.postgresql/root.crt, or refuses to connect.
        "verify-full" => Outcome::Verified,
        _ => Outcome::Unknown,
    }
}

fn matches(s: &Switch, value: &str) -> Outcome {
    if let Some(QueryFormat::Pgjdbc) = s.query
        && !s.values.contains_key(value)
    {
        return pgjdbc_query(value);
    }
    s.values
        .iter()
        .find(|(k, _)| {
            if s.case_sensitive {
                k.as_str() == value
            } else {
                k.eq_ignore_ascii_case(value)
            }
        })
        .map_or(s.other, |(_, o)| *o)
}

/// Judges a profile against a container's environment; `None` when the application is not
/// this one (or its signs are hidden).
pub(crate) fn judge<'v>(
    p: &'static Profile,
    env: &'v dyn crate::drivers::Environment,
) -> Option<Judged<'v>> {
    use crate::verdict::Code;
    for c in &p.recognise {
        let value = env.get(&c.variable)?;
        if let Some(equals) = &c.equals {
            let v = value?;
            if !equals.iter().any(|e| e.eq_ignore_ascii_case(v)) {
                return None;
            }
        }
    }
    if let Some(u) = &p.url
        && env.get(&u.variable).is_some()
    {
        return Some(Judged::ByUrl);
    }
    let server = match &p.host {
        Some(h) => match env.get(&h.variable) {
            Some(Some(v)) => Server::Host(v),
            Some(None) => Server::Hidden(h.variable.as_str()),
            None => h
                .default
                .as_deref()
                .map_or(Server::NotVisible, Server::Host),
        },
        None => Server::NotVisible,
    };
    let finding = |code, variable: &'static str, what: String| {
        Some(Judged::Finding {
            code,
            variable,
            what,
            server,
        })
    };
    // The weakest switch decides; hidden and unknown ones matter only if the rest verify.
    let mut weakest: Option<(Outcome, &'static Switch, Option<&str>)> = None;
    let (mut hidden, mut unknown) = (None, None);
    for s in &p.tls {
        let (outcome, value) = match env.get(&s.variable) {
            Some(None) => {
                hidden.get_or_insert(s);
                continue;
            }
            Some(Some(v)) => (matches(s, v), Some(v)),
            None => (
                s.default
                    .as_deref()
                    .map_or(Outcome::Unknown, |d| matches(s, d)),
                None,
            ),
        };
        if outcome == Outcome::Unknown {
            unknown.get_or_insert((s, value));
        } else if weakest.is_none_or(|(w, _, _)| outcome < w) {
            weakest = Some((outcome, s, value));
        }
    }
    match weakest {
        Some((o, s, value)) if o < Outcome::Verified => {
            let (code, said) = match value {
                Some(v) => (Code::SslModeTooWeak, format!("{}={v}", s.variable)),
                None => (Code::SslModeUnset, format!("{} unset", s.variable)),
            };
            return finding(code, &s.variable, format!("{said}: {}", o.describe()));
        }
        _ => {}
    }
    if let Some(s) = hidden {
        return finding(
            Code::Unresolved,
            &s.variable,
            format!("{} decides, and its value cannot be read", s.variable),
        );
    }
    if let Some((s, value)) = unknown {
        let said = value.map_or(format!("{} unset", s.variable), |v| {
            format!("{}={v}", s.variable)
        });
        return finding(
            Code::Unverifiable,
            &s.variable,
            format!("{said}: what {} then does cannot be told", p.driver),
        );
    }
    let Some((_, s, _)) = weakest else {
        let variable = p
            .host
            .as_ref()
            .map_or(p.recognise[0].variable.as_str(), |h| h.variable.as_str());
        return finding(
            Code::SslModeUnset,
            variable,
            "no variable of it sets TLS: only a connection URL can".to_string(),
        );
    };
    if let Some(r) = p.root_cert.as_ref().filter(|r| r.required) {
        match env.get(&r.variable) {
            None => {
                return finding(
                    Code::RootCertMissing,
                    &r.variable,
                    format!(
                        "{} verifies, but {} names no CA file",
                        s.variable, r.variable
                    ),
                );
            }
            Some(None) => {
                return finding(
                    Code::Unresolved,
                    &r.variable,
                    format!("{} decides, and its value cannot be read", r.variable),
                );
            }
            Some(Some(_)) => {}
        }
    }
    Some(Judged::Pass)
}

impl Profile {
    /// Whether setting `fix` makes every switch verify: some drivers cannot (Kong's pgmoon
    /// sends no server name, so no value of its switches checks one).
    pub fn fix_verifies(&self) -> bool {
        self.url.is_some()
            || self.tls.iter().all(|s| {
                let value = self.fix.get(&s.variable).or(s.default.as_ref());
                value.is_some_and(|v| matches(s, v) == Outcome::Verified)
            })
    }
}

#[cfg(test)]
mod judging {
    use super::*;
    use crate::verdict::Code;
    use std::collections::HashMap;

    /// A container's variables: `None` is set but hidden.
    struct Vars(HashMap<&'static str, Option<&'static str>>);

    impl crate::drivers::Environment for Vars {
        fn get(&self, name: &str) -> Option<Option<&str>> {
            self.0.get(name).copied()
        }
    }

    fn profile(id: &str) -> &'static Profile {
        bundled().iter().find(|p| p.id == id).expect(id)
    }

    fn judged(id: &str, vars: &[(&'static str, Option<&'static str>)]) -> Option<Judged<'static>> {
        let env = Box::leak(Box::new(Vars(vars.iter().copied().collect())));
        judge(profile(id), env)
    }

    fn code(j: Option<Judged<'_>>) -> Option<Code> {
        match j {
            Some(Judged::Finding { code, .. }) => Some(code),
            _ => None,
        }
    }

    #[test]
    fn weak_compliant_hidden_and_unrecognised() {
        let base = [
            ("GF_DATABASE_TYPE", Some("postgres")),
            ("GF_DATABASE_HOST", Some("db.example.net:5432")),
        ];
        let with = |extra: &[(&'static str, Option<&'static str>)]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            judged("grafana", &v)
        };
        assert_eq!(code(with(&[])), Some(Code::SslModeUnset));
        assert_eq!(
            code(with(&[("GF_DATABASE_SSL_MODE", Some("require"))])),
            Some(Code::SslModeTooWeak)
        );
        // lib/pq without a CA path verifies against the system roots, as libpq's
        // `sslrootcert=system` does.
        assert_eq!(
            with(&[("GF_DATABASE_SSL_MODE", Some("verify-full"))]),
            Some(Judged::Pass)
        );
        let n8n = |extra: &[(&'static str, Option<&'static str>)]| {
            let mut v = vec![
                ("DB_TYPE", Some("postgresdb")),
                ("DB_POSTGRESDB_HOST", Some("db.example.net")),
                ("DB_POSTGRESDB_SSL_ENABLED", Some("true")),
            ];
            v.extend_from_slice(extra);
            code(judged("n8n", &v))
        };
        assert_eq!(
            n8n(&[("DB_POSTGRESDB_SSL_REJECT_UNAUTHORIZED", Some("false"))]),
            Some(Code::SslModeTooWeak)
        );
        assert_eq!(
            with(&[
                ("GF_DATABASE_SSL_MODE", Some("VERIFY-FULL")),
                ("GF_DATABASE_CA_CERT_PATH", Some("/etc/ca.crt"))
            ]),
            Some(Judged::Pass)
        );
        assert_eq!(
            code(with(&[("GF_DATABASE_SSL_MODE", None)])),
            Some(Code::Unresolved)
        );
        // A whole URL is judged as a connection string, not by the profile.
        assert_eq!(
            with(&[("GF_DATABASE_URL", Some("postgres://db/x"))]),
            Some(Judged::ByUrl)
        );
        // MySQL: not this profile's business.
        assert_eq!(
            judged("grafana", &[("GF_DATABASE_TYPE", Some("mysql"))]),
            None
        );
    }

    #[test]
    fn a_query_string_switch_is_judged_by_its_driver() {
        let kc = |props: &'static str| {
            code(judged(
                "keycloak",
                &[
                    ("KC_DB", Some("postgres")),
                    ("KC_DB_URL_HOST", Some("db.example.net")),
                    ("KC_DB_URL_PROPERTIES", Some(props)),
                ],
            ))
        };
        assert_eq!(kc("?sslmode=verify-full&sslrootcert=/ca.crt"), None);
        assert_eq!(
            kc("?ssl=true"),
            None,
            "ssl=true without sslmode is verify-full"
        );
        assert_eq!(kc("?sslmode=VERIFY-FULL"), None, "compared in any case");
        assert_eq!(kc("?sslmode=require"), Some(Code::SslModeTooWeak));
        assert_eq!(
            kc("?sslmode=verify-full&sslmode=require"),
            Some(Code::SslModeTooWeak),
            "the last wins"
        );
        assert_eq!(kc("?ssl=false"), Some(Code::SslModeTooWeak), "prefer");
        assert_eq!(
            kc("?connectTimeout=5"),
            Some(Code::SslModeTooWeak),
            "no sslmode: prefer"
        );
        assert_eq!(
            kc(""),
            Some(Code::SslModeTooWeak),
            "an empty value is listed: plaintext"
        );
        assert_eq!(
            kc("?sslmode=verify-full&sslfactory=org.postgresql.ssl.NonValidatingFactory"),
            Some(Code::SslModeTooWeak),
            "verifies nothing"
        );
        assert_eq!(
            kc("?sslmode=verify-full&sslfactory=com.example.Factory"),
            Some(Code::Unverifiable)
        );
        assert_eq!(kc("?sslmode=nonsense"), Some(Code::Unverifiable));
    }

    #[test]
    fn case_sensitive_switches_and_fixes_that_cannot_verify() {
        let kong = |ssl: &'static str| {
            judged(
                "kong",
                &[
                    ("KONG_PG_HOST", Some("pg.example.net")),
                    ("KONG_PG_PASSWORD", None),
                    ("KONG_PG_SSL", Some(ssl)),
                    ("KONG_PG_SSL_REQUIRED", Some("on")),
                    ("KONG_PG_SSL_VERIFY", Some("on")),
                ],
            )
        };
        // Kong reads exactly `on`: `ON` is off.
        let Some(Judged::Finding { what, .. }) = kong("ON") else {
            panic!("ON")
        };
        assert!(what.contains("no TLS"), "{what}");
        let Some(Judged::Finding { what, .. }) = kong("on") else {
            panic!("on")
        };
        assert!(what.contains("not the host name"), "{what}");
        assert!(!profile("kong").fix_verifies());
        assert!(profile("grafana").fix_verifies());
    }

    /// The recognising variables of a profile, with values that match.
    fn signs(p: &'static Profile) -> Vec<(&'static str, Option<&'static str>)> {
        p.recognise
            .iter()
            .map(|c| {
                let v = c
                    .equals
                    .as_ref()
                    .and_then(|e| e.first())
                    .map_or("x", String::as_str);
                (c.variable.as_str(), Some(v))
            })
            .collect()
    }

    /// Every bundled profile of split settings, with its TLS variables unset: a finding
    /// unless its defaults verify; with its server hidden: the finding is about a server
    /// it cannot see.
    #[test]
    fn every_bundled_profile_judges_its_defaults_and_a_hidden_server() {
        for p in bundled().iter().filter(|p| p.url.is_none()) {
            let Some(h) = &p.host else { continue };
            let mut vars = signs(p);
            vars.retain(|(k, _)| *k != h.variable);
            let defaults_verify = p.tls.iter().all(|s| {
                s.default
                    .as_deref()
                    .is_some_and(|d| matches(s, d) == Outcome::Verified)
            }) && !p.root_cert.as_ref().is_some_and(|r| r.required);
            let mut visible = vars.clone();
            visible.push((h.variable.as_str(), Some("db.example.net")));
            let j = judged(&p.id, &visible);
            if defaults_verify {
                assert_eq!(j, Some(Judged::Pass), "{}", p.id);
            } else {
                assert!(matches!(j, Some(Judged::Finding { .. })), "{}: {j:?}", p.id);
            }
            let mut hidden = vars;
            hidden.push((h.variable.as_str(), None));
            if let Some(Judged::Finding { server, .. }) = judged(&p.id, &hidden) {
                assert_eq!(server, Server::Hidden(h.variable.as_str()), "{}", p.id);
            }
        }
    }

    #[test]
    fn every_bundled_fix_that_verifies_passes_its_own_profile() {
        for p in bundled()
            .iter()
            .filter(|p| p.url.is_none() && p.fix_verifies())
        {
            let mut vars = signs(p);
            if let Some(h) = &p.host {
                vars.push((&h.variable, Some("db.example.net")));
            }
            for (k, v) in &p.fix {
                vars.push((k, Some(v)));
            }
            assert_eq!(judged(&p.id, &vars), Some(Judged::Pass), "{}", p.id);
        }
    }
}
