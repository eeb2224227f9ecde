//! The application profile format (docs/applications.md): what one file says, and the
//! checks every profile passes before it is used — at build time for the bundled ones
//! (`build.rs` includes this file), at load for a user's. Self-contained: it uses serde and
//! serde-saphyr only.

use serde::Deserialize;
use std::collections::BTreeMap;

/// One application: how to recognise it, and what its PostgreSQL variables make its driver
/// do.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The file's stem: `[a-z0-9-]+`.
    pub id: String,
    /// Named in findings.
    pub application: String,
    /// The release the sources describe.
    pub version: String,
    /// The driver the application hands its settings to.
    pub driver: String,
    /// Every condition holds: the application is this one, and it uses PostgreSQL.
    pub recognise: Vec<Condition>,
    /// A variable holding a whole connection URL.
    #[serde(default)]
    pub url: Option<UrlVariable>,
    /// The variable naming the server (none: the application reads it from a file
    /// verifyfull cannot see).
    #[serde(default)]
    pub host: Option<HostVariable>,
    /// Switches deciding TLS; the driver does the weakest of their outcomes.
    #[serde(default)]
    pub tls: Vec<Switch>,
    /// The variable naming the root certificate file.
    #[serde(default)]
    pub root_cert: Option<RootCert>,
    /// What to set, variable by variable, for full verification.
    pub fix: BTreeMap<String, String>,
    /// Where each rule comes from.
    pub sources: Vec<Source>,
    /// What could not be confirmed from the application's documentation or source.
    #[serde(default)]
    pub unconfirmed: Vec<String>,
    /// What users should know, shown in docs/applications.md.
    #[serde(default)]
    pub notes: Option<String>,
}

/// One sign that the application is this one.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The variable.
    pub variable: String,
    /// Values (compared case-insensitively) the variable must have; none: set at all.
    #[serde(default)]
    pub equals: Option<Vec<String>>,
}

/// A variable holding a whole connection URL.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UrlVariable {
    /// The variable.
    pub variable: String,
    /// How the URL's TLS parameters are read.
    pub format: UrlFormat,
}

/// Whose rules a URL's parameters follow.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum UrlFormat {
    /// libpq's.
    Libpq,
    /// pgjdbc's.
    Pgjdbc,
    /// node-postgres's.
    NodePostgres,
    /// SQLAlchemy's (its dialect's driver decides).
    Sqlalchemy,
    /// A driver without rules in verifyfull: judged `Unverifiable`.
    Other,
}

/// The variable naming the server.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostVariable {
    /// The variable.
    pub variable: String,
    /// What the application connects to when the variable is unset.
    #[serde(default)]
    pub default: Option<String>,
}

/// One variable that decides TLS, and what each of its values makes the driver do.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Switch {
    /// The variable.
    pub variable: String,
    /// The application's value when the variable is unset.
    #[serde(default)]
    pub default: Option<String>,
    /// What each value makes the driver do.
    pub values: BTreeMap<String, Outcome>,
    /// Values match exactly as written (node-postgres's `PGSSLMODE`); by default, in any
    /// case.
    #[serde(default)]
    pub case_sensitive: bool,
    /// Any value not listed.
    #[serde(default = "unknown")]
    pub other: Outcome,
    /// The value is a query string the application appends to a URL of this format, and
    /// is judged by that driver's rules (`values` then holds only exceptions).
    #[serde(default)]
    pub query: Option<QueryFormat>,
}

/// A query string's driver.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum QueryFormat {
    /// pgjdbc: `?sslmode=…&sslrootcert=…` (docs/drivers.md).
    Pgjdbc,
}

fn unknown() -> Outcome {
    Outcome::Unknown
}

/// What a driver does, weakest first: the weakest switch decides.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// No TLS.
    Plaintext,
    /// TLS without checking the server's certificate.
    Unverified,
    /// The certificate's chain is checked, not the host name.
    ChainOnly,
    /// Chain and host name checked.
    Verified,
    /// verifyfull cannot tell.
    Unknown,
}

/// The variable naming the root certificate file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RootCert {
    /// The variable.
    pub variable: String,
    /// Full verification needs it set (else: the driver falls back to other roots).
    pub required: bool,
}

/// Where a rule comes from.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// The rule.
    pub about: String,
    /// The document or source file (with its function) that says so.
    pub cite: String,
}

/// A profile that cannot be used: the file, and what is wrong (with its field).
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    /// The file.
    pub file: String,
    /// What is wrong, with the field.
    pub message: String,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file, self.message)
    }
}

impl std::error::Error for Error {}

/// A profile is small: anything larger is not one.
pub const MAX_BYTES: usize = 64 * 1024;

fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_documents = 1;
    budget.max_depth = 32;
    budget.max_nodes = 10_000;
    budget.max_total_scalar_bytes = MAX_BYTES;
    let mut o = serde_saphyr::Options::default();
    o.budget = Some(budget);
    // Snippets would quote neighbouring lines; a profile holds no secret, but the rule is
    // the same everywhere.
    o.with_snippet = false;
    o.crop_radius = 0;
    o
}

/// Parses and checks the profile in `text`, read from `file` (named in every error).
pub fn parse(file: &str, text: &str) -> Result<Profile, Error> {
    let err = |message: String| Error {
        file: file.to_string(),
        message,
    };
    if text.len() > MAX_BYTES {
        return Err(err(format!("over {MAX_BYTES} bytes")));
    }
    let profile: Profile =
        serde_saphyr::from_str_with_options(text, options()).map_err(|e| err(e.to_string()))?;
    check(&profile).map_err(err)?;
    Ok(profile)
}

fn is_variable(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The rules serde cannot express; the message names the field.
fn check(p: &Profile) -> Result<(), String> {
    if p.id.is_empty()
        || !p
            .id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(format!("id: {:?} is not [a-z0-9-]+", p.id));
    }
    for (field, v) in [
        ("application", &p.application),
        ("version", &p.version),
        ("driver", &p.driver),
    ] {
        if v.trim().is_empty() {
            return Err(format!("{field}: empty"));
        }
    }
    if p.recognise.is_empty() {
        return Err("recognise: at least one condition".into());
    }
    let mut variables: Vec<(String, &str)> = Vec::new();
    for (i, c) in p.recognise.iter().enumerate() {
        variables.push((format!("recognise[{i}].variable"), &c.variable));
        if c.equals.as_ref().is_some_and(Vec::is_empty) {
            return Err(format!(
                "recognise[{i}].equals: empty (omit it to mean \"set\")"
            ));
        }
    }
    if let Some(u) = &p.url {
        variables.push(("url.variable".into(), &u.variable));
    }
    if let Some(h) = &p.host {
        variables.push(("host.variable".into(), &h.variable));
    }
    for (i, s) in p.tls.iter().enumerate() {
        variables.push((format!("tls[{i}].variable"), &s.variable));
        if s.values.is_empty() {
            return Err(format!("tls[{i}].values: empty"));
        }
        let lower: std::collections::BTreeSet<String> =
            s.values.keys().map(|k| k.to_ascii_lowercase()).collect();
        if !s.case_sensitive && lower.len() != s.values.len() {
            return Err(format!(
                "tls[{i}].values: two values differ only in case (values match case-insensitively)"
            ));
        }
    }
    if let Some(r) = &p.root_cert {
        variables.push(("root_cert.variable".into(), &r.variable));
    }
    for (field, v) in &variables {
        if !is_variable(v) {
            return Err(format!("{field}: {v:?} is not a variable name"));
        }
    }
    if p.url.is_none() && p.tls.is_empty() {
        return Err("tls: at least one switch, or a url".into());
    }
    if p.fix.is_empty() {
        return Err("fix: what to set for full verification".into());
    }
    if let Some(bad) = p.fix.keys().find(|k| !is_variable(k)) {
        return Err(format!("fix: {bad:?} is not a variable name"));
    }
    if p.sources.is_empty() {
        return Err("sources: every rule needs one".into());
    }
    for (i, s) in p.sources.iter().enumerate() {
        if s.cite.trim().is_empty() || s.about.trim().is_empty() {
            return Err(format!("sources[{i}]: `about` and `cite` are both needed"));
        }
    }
    Ok(())
}
