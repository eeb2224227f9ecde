//! Findings, notes and per-container verdicts (docs/rules.md, "Verdicts"), and the policy settings
//! that decide how `Unresolved` and `Unverifiable` weigh.

use std::borrow::Cow;

use serde::Serialize;

use crate::env::{Origin, SourceKind};
use crate::hosts::SlotMismatch;
use crate::jdbc::JdbcError;
use crate::libpq::ParseError;

/// The finding codes (docs/rules.md, "Verdicts").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Code {
    /// No sslmode is set: libpq's default, `prefer`, never verifies the server.
    SslModeUnset,
    /// The sslmode is set, weaker than `verify-full`.
    SslModeTooWeak,
    /// The sslmode is not a value the client knows: it refuses to connect.
    SslModeInvalid,
    /// The connection string does not parse.
    ConnectionStringInvalid,
    /// `verify-full` without a root certificate to verify against.
    RootCertMissing,
    /// `sslrootcert=system` with an sslmode weaker than `verify-full`.
    RootCertSystemNeedsVerifyFull,
    /// Something switches verification off (`NODE_TLS_REJECT_UNAUTHORIZED=0`, a non-validating factory).
    VerificationDisabled,
    /// A deciding value is in a ConfigMap or Secret that cannot be read.
    Unresolved,
    /// Something verifyfull cannot see decides (a service file, a custom factory, GSSAPI, an unknown driver).
    Unverifiable,
    /// An exemption without `verifyfull.dev/exempt-reason`.
    ExemptionReasonMissing,
    /// An exemption annotation that cannot be applied.
    ExemptionInvalid,
}

impl Code {
    /// Every code, in the order of docs/rules.md's table.
    pub const ALL: [Code; 11] = [
        Code::SslModeUnset,
        Code::SslModeTooWeak,
        Code::SslModeInvalid,
        Code::ConnectionStringInvalid,
        Code::RootCertMissing,
        Code::RootCertSystemNeedsVerifyFull,
        Code::VerificationDisabled,
        Code::Unresolved,
        Code::Unverifiable,
        Code::ExemptionReasonMissing,
        Code::ExemptionInvalid,
    ];

    /// What the code means, in one line: docs/rules.md's table says the same (a test
    /// keeps them equal), and SARIF's rules carry it.
    pub fn meaning(self) -> &'static str {
        match self {
            Code::SslModeUnset => "no sslmode anywhere: the default falls back to plaintext",
            Code::SslModeTooWeak => {
                "disable, allow, prefer, require, verify-ca (a host-name check is missing)"
            }
            Code::SslModeInvalid => "a value the client does not know (including empty)",
            Code::ConnectionStringInvalid => "a string the driver would refuse",
            Code::RootCertMissing => "verify-full with no root certificate",
            Code::RootCertSystemNeedsVerifyFull => "`system` without an explicit verify-full",
            Code::VerificationDisabled => {
                "verification switched off (`NonValidatingFactory`, `NODE_TLS_REJECT_UNAUTHORIZED=0`, trust-all)"
            }
            Code::Unresolved => "a deciding value could not be read",
            Code::Unverifiable => {
                "a service file, a custom factory or verifier, GSSAPI, or a driver's setting verifyfull cannot judge"
            }
            Code::ExemptionReasonMissing => "an exemption without a reason (not applied)",
            Code::ExemptionInvalid => {
                "a malformed `exempt-until`, an unknown container, or an exemption on the workload's own metadata (not applied)"
            }
        }
    }

    /// The code's name, as in reports and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::SslModeUnset => "SslModeUnset",
            Code::SslModeTooWeak => "SslModeTooWeak",
            Code::SslModeInvalid => "SslModeInvalid",
            Code::ConnectionStringInvalid => "ConnectionStringInvalid",
            Code::RootCertMissing => "RootCertMissing",
            Code::RootCertSystemNeedsVerifyFull => "RootCertSystemNeedsVerifyFull",
            Code::VerificationDisabled => "VerificationDisabled",
            Code::Unresolved => "Unresolved",
            Code::Unverifiable => "Unverifiable",
            Code::ExemptionReasonMissing => "ExemptionReasonMissing",
            Code::ExemptionInvalid => "ExemptionInvalid",
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a finding does to an admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Recorded only.
    Allow,
    /// Allowed with an admission warning.
    Warn,
    /// Denies the admission.
    Deny,
}

/// How `Unresolved` / `Unverifiable` findings are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Treatment {
    /// The finding denies.
    Deny,
    /// The finding warns.
    Warn,
    /// The finding is recorded only.
    Allow,
}

impl Treatment {
    pub(crate) fn severity(self) -> Severity {
        match self {
            Treatment::Deny => Severity::Deny,
            Treatment::Warn => Severity::Warn,
            Treatment::Allow => Severity::Allow,
        }
    }
}

/// Whether targets that stay inside the Pod (loopback) are exempt from the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum LoopbackPolicy {
    /// A target that stays inside the Pod is not judged (an in-Pod proxy does the TLS).
    Allow,
    /// Loopback targets are judged like any other.
    Check,
}

/// libpq's sslmode values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub(crate) enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub(crate) const ALL: [SslMode; 6] = [
        SslMode::Disable,
        SslMode::Allow,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// libpq compares case-sensitively.
    pub(crate) fn parse(s: &str) -> Option<SslMode> {
        SslMode::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// pgjdbc compares case-insensitively.
    pub(crate) fn parse_ignore_case(s: &str) -> Option<SslMode> {
        SslMode::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
    }
}

/// The kind of target a finding is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target<'a> {
    /// A libpq URI (`postgres://`, `postgresql://`, `postgresql+psycopg://`).
    Uri,
    /// A string for a driver whose rules are not libpq's (docs/drivers.md).
    Driver {
        driver: Cow<'a, str>,
    },
    KeyValue,
    Jdbc,
    /// `PGHOST`/`PGHOSTADDR`/`PGSERVICE`: what `psql` with no arguments connects to.
    Environment,
    /// A variable whose value is hidden but whose name says it holds a connection string.
    HiddenVariable,
}

/// Where a deciding value was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SetBy<'a> {
    /// A parameter of the target's own string (`sslmode`, `requiressl`, `ssl`, …).
    Param { key: &'static str },
    /// A libpq environment variable.
    Env {
        var: &'static str,
        origin: Origin<'a>,
    },
}

/// A value the engine cannot see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hidden<'a> {
    /// A variable whose ConfigMap/Secret could not be read (`not_found`: known to be absent).
    Var {
        var: Cow<'a, str>,
        origin: Origin<'a>,
        not_found: bool,
    },
    /// An `envFrom` source that could not be read and may define the variable.
    Open {
        var: &'static str,
        kind: SourceKind,
        name: &'a str,
        not_found: bool,
    },
    /// A value the kubelet fills in at run time (`spec.nodeName`, `resourceFieldRef`).
    Runtime { var: Cow<'a, str> },
}

/// The setting a hidden or unverifiable value decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Setting {
    SslMode,
    RootCert,
    Host,
    Target,
    /// `NODE_TLS_REJECT_UNAUTHORIZED`.
    Verification,
}

impl Setting {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Setting::SslMode => "sslmode",
            Setting::RootCert => "the root certificate",
            Setting::Host => "the host",
            Setting::Target => "the connection string",
            Setting::Verification => "certificate verification (NODE_TLS_REJECT_UNAUTHORIZED)",
        }
    }
}

/// What makes a target's settings unverifiable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unverifiable<'a> {
    /// A libpq service file (`service=`/`PGSERVICE`) supplies the setting.
    ServiceFile {
        by: SetBy<'a>,
    },
    /// GSSAPI encryption is requested instead of TLS.
    Gss {
        by: SetBy<'a>,
    },
    JdbcFactory,
    JdbcHostnameVerifier,
    /// A non-libpq driver's own TLS parameter.
    DriverParameter {
        driver: Cow<'a, str>,
        key: Cow<'a, str>,
    },
}

/// Why a string would be refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Syntax {
    Libpq(ParseError),
    Jdbc(JdbcError),
    Slots(SlotMismatch),
}

/// What the engine saw: enough to explain a finding without repeating any value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cause<'a> {
    /// `SslModeTooWeak`. `root_configured`: a root certificate is set (libpq's `require`
    /// then behaves as `verify-ca`).
    WeakMode {
        mode: SslMode,
        by: SetBy<'a>,
        root_configured: bool,
        jdbc: bool,
    },
    /// `SslModeUnset`.
    NoMode,
    /// `SslModeInvalid`; `close` is the valid mode it differs from only in case.
    BadMode {
        by: SetBy<'a>,
        empty: bool,
        close: Option<SslMode>,
    },
    /// `RootCertMissing`.
    NoRoot { by: SetBy<'a> },
    /// `RootCertSystemNeedsVerifyFull`.
    SystemRoot {
        by: SetBy<'a>,
        mode: Option<SslMode>,
    },
    /// `VerificationDisabled` by pgjdbc's `NonValidatingFactory`.
    NonValidatingFactory,
    /// A finding of a driver's own rules (docs/drivers.md): what that driver will do.
    Driver {
        driver: &'static str,
        what: Cow<'static, str>,
    },
    /// `VerificationDisabled`: `NODE_TLS_REJECT_UNAUTHORIZED=0` turns verification off for
    /// every TLS connection of a Node.js process (node-postgres reads the target).
    NodeTlsOff { origin: Origin<'a> },
    /// `ConnectionStringInvalid`.
    Syntax(Syntax),
    /// `Unresolved`.
    Hidden {
        setting: Setting,
        hidden: Hidden<'a>,
    },
    /// `Unverifiable`.
    Unverifiable(Unverifiable<'a>),
    /// `ExemptionReasonMissing`.
    ExemptionNoReason,
    /// `ExemptionInvalid`: `exempt-until` is not an RFC 3339 date or date-time with offset.
    ExemptionBadUntil,
    /// `ExemptionInvalid`: the exemption names a container the Pod does not have.
    ExemptionUnknownContainer { name: Cow<'a, str> },
    /// `ExemptionInvalid`: on the workload's metadata; `path` is where it belongs.
    ExemptionMisplaced { path: &'static str },
}

/// One thing wrong (or that cannot be checked) with a container's or an object's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding<'a> {
    /// What is wrong.
    pub code: Code,
    /// What it does to an admission, under the settings in use.
    pub severity: Severity,
    /// The variable to look at (`None` for findings about the object).
    pub variable: Option<Cow<'a, str>>,
    /// Where that variable's value came from.
    pub origin: Option<Origin<'a>>,
    pub(crate) target: Option<Target<'a>>,
    pub(crate) cause: Cause<'a>,
    /// For `Unresolved`/`Unverifiable` that hide the host: the finding it would be if the
    /// host is not loopback.
    pub(crate) if_remote: Option<Code>,
    /// The application whose settings these are, when a profile recognised it
    /// (docs/applications.md).
    pub application: Option<&'static str>,
    /// How this finding's fixes are made: [`Finding::fixes`] makes them when asked, since
    /// most findings are counted, not read.
    pub(crate) fix_plan: FixPlan,
}

/// What a finding's fixes are made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FixPlan {
    /// No mechanical change helps (a hidden value, a syntax error): advice only.
    None,
    /// libpq's or pgjdbc's settings, within what the target lets a fix change.
    Libpq {
        scope: Scope,
        /// `NODE_TLS_REJECT_UNAUTHORIZED=0` must go too.
        unset_node_tls: bool,
    },
    /// Listed by the rule that made the finding.
    Listed(Vec<Fix>),
}

/// One way to fix a finding: its changes, made together (docs/admission.md, "Fixes").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fix {
    /// The driver this fix is for, where drivers need different ones.
    pub driver: Option<&'static str>,
    /// Made together.
    pub changes: Vec<Change>,
}

/// One change of a fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Set `key=value` in the finding's connection string (every occurrence of `key`
    /// replaced by one), and remove the keys of `drop`.
    Param {
        /// The keyword.
        key: &'static str,
        /// Its new value.
        value: FixValue,
        /// Aliases to remove (`requiressl`, `ssl`).
        drop: &'static [&'static str],
    },
    /// Set an environment variable of the container.
    Env {
        /// The variable.
        name: Cow<'static, str>,
        /// Its new value.
        value: FixValue,
    },
    /// Remove an environment variable from the container.
    Unset {
        /// The variable.
        name: Cow<'static, str>,
    },
}

/// The value a change sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FixValue {
    /// This text.
    Literal(&'static str),
    /// The path of the CA bundle the client should trust.
    CaFile,
}

/// Facts worth telling that are not findings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note<'a> {
    /// Every TCP host is loopback: an in-Pod proxy does the TLS. `if_remote` is the finding
    /// it would otherwise be.
    LoopbackAllowed {
        /// The connection string's variable.
        variable: Cow<'a, str>,
        /// The finding were the host remote.
        if_remote: Code,
    },
    /// `sslrootcert=system`: the TLS library's trust store.
    SystemTrustStore {
        /// The connection string's variable.
        variable: Cow<'a, str>,
    },
    /// pgjdbc's `DefaultJavaSSLFactory`: the JVM trust store.
    JvmTrustStore {
        /// The connection string's variable.
        variable: Cow<'a, str>,
    },
    /// A driver's rule worth telling (docs/drivers.md).
    Driver {
        /// The connection string's variable.
        variable: Cow<'a, str>,
        /// The driver.
        driver: &'static str,
        /// What to know.
        text: Cow<'static, str>,
    },
    /// `SSL_CERT_FILE`/`SSL_CERT_DIR` change what `system` trusts.
    SslCertEnv {
        /// `SSL_CERT_FILE` or `SSL_CERT_DIR`.
        variable: &'static str,
    },
    /// A `PG*` or connection-string variable is defined twice in `env`; the last wins.
    Redefined {
        /// The variable.
        variable: Cow<'a, str>,
    },
    /// `PGSERVICE=""`: libpq will fail to connect.
    EmptyService {
        /// `PGSERVICE`.
        variable: Cow<'a, str>,
    },
    /// A TLS setting is given more than once with different values; the weakest counts.
    Conflicting {
        /// The connection string's variable.
        variable: Cow<'a, str>,
        /// The setting given twice.
        key: &'static str,
    },
    /// Keywords libpq does not know: libpq refuses the string, other drivers may not.
    UnknownKeywords {
        /// The connection string's variable.
        variable: Cow<'a, str>,
        /// How many.
        count: usize,
    },
    /// The exemption ended.
    ExemptionExpired,
    /// A command line longer than what is read (docs/limits.md): the rest is not judged.
    CommandLineLimit,
    /// A `$(VAR)` reference in this variable was not expanded: it would have gone over
    /// the expansion limit. It is judged as a value that cannot be seen.
    ExpansionLimit {
        /// The variable.
        variable: Cow<'a, str>,
    },
}

/// Which list of the Pod spec a container is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum ContainerList {
    /// `initContainers`.
    #[serde(rename = "initContainers")]
    Init,
    /// `containers`.
    #[serde(rename = "containers")]
    Main,
    /// `ephemeralContainers`.
    #[serde(rename = "ephemeralContainers")]
    Ephemeral,
}

impl ContainerList {
    /// The list's field name in a Pod spec.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerList::Init => "initContainers",
            ContainerList::Main => "containers",
            ContainerList::Ephemeral => "ephemeralContainers",
        }
    }
}

/// A container's verdict: its worst finding, unless exempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// No finding warns or denies.
    Pass,
    /// A finding denies.
    Violation,
    /// A finding warns, none denies.
    Warning,
    /// A finding would warn or deny, and an exemption covers the container.
    Exempt,
}

/// The engine's verdict on one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerReport<'a> {
    /// The container's name.
    pub name: &'a str,
    /// Which list it is in.
    pub list: ContainerList,
    /// A PostgreSQL client: at least one network target (or one that may be).
    pub client: bool,
    /// It has libpq targets, all of them non-loopback TCP, and no connection string sets
    /// its own sslmode: setting `PGSSLMODE` decides for all of them (the operator's fix).
    pub(crate) fixable: bool,
    /// An exemption covers this container.
    pub(crate) exempt: bool,
    /// What is wrong, weakest-first per variable.
    pub findings: Vec<Finding<'a>>,
    /// What is worth telling besides.
    pub notes: Vec<Note<'a>>,
}

impl ContainerReport<'_> {
    /// Its worst finding's verdict, or `Exempt`.
    pub fn verdict(&self) -> Verdict {
        let worst = self.findings.iter().map(|f| f.severity).max();
        match worst {
            Some(Severity::Deny | Severity::Warn) if self.exempt => Verdict::Exempt,
            Some(Severity::Deny) => Verdict::Violation,
            Some(Severity::Warn) => Verdict::Warning,
            _ => Verdict::Pass,
        }
    }
}

/// An exemption in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exemption<'a> {
    /// `None`: every container.
    pub containers: Option<Vec<&'a str>>,
    pub reason: &'a str,
    pub until: Option<jiff::Timestamp>,
}

impl Exemption<'_> {
    pub fn covers(&self, container: &str) -> bool {
        self.containers
            .as_ref()
            .is_none_or(|names| names.contains(&container))
    }
}

/// The engine's verdict on one Pod spec.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report<'a> {
    /// Findings about the object itself (exemption annotations).
    pub findings: Vec<Finding<'a>>,
    /// What is worth telling about the object.
    pub notes: Vec<Note<'a>>,
    /// One report per container, in the Pod spec's order.
    pub containers: Vec<ContainerReport<'a>>,
    /// The exemption in force, if any.
    pub exemption: Option<Exemption<'a>>,
}

impl Report<'_> {
    /// The worst severity of any finding that is not exempted.
    pub fn worst(&self) -> Option<Severity> {
        let object = self.findings.iter().map(|f| f.severity);
        let containers = self
            .containers
            .iter()
            .filter(|c| !c.exempt)
            .flat_map(|c| c.findings.iter().map(|f| f.severity));
        object.chain(containers).max()
    }

    /// A finding that is not exempted denies.
    pub fn denied(&self) -> bool {
        self.worst() == Some(Severity::Deny)
    }

    /// All container findings with their container, exempted or not.
    pub fn container_findings(&self) -> impl Iterator<Item = (&ContainerReport<'_>, &Finding<'_>)> {
        self.containers
            .iter()
            .flat_map(|c| c.findings.iter().map(move |f| (c, f)))
    }
}

/// What a fix may change for a libpq or JDBC target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Scope {
    pub form: Form,
    /// The string sets sslmode (or requiressl, or ssl): the environment cannot override it.
    pub string_sets_mode: bool,
    /// The string sets requiressl or ssl, which a new sslmode must replace.
    pub mode_alias: bool,
    /// The string sets sslrootcert.
    pub string_sets_root: bool,
    /// Every candidate sslmode is verify-full.
    pub mode_verify_full: bool,
    /// Every candidate has a root certificate (a file, or system).
    pub root_configured: bool,
    /// A service file applies: `PGSSLMODE`/`PGSSLROOTCERT` never decide.
    pub service: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Form {
    /// A libpq URI or keyword/value string.
    #[default]
    Libpq,
    Jdbc,
    /// The libpq environment alone.
    Environment,
}

#[cfg(test)]
mod tests {
    use super::Code;

    #[test]
    fn the_rules_table_says_what_each_code_means() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/rules.md");
        let rules = std::fs::read_to_string(path).expect("docs/rules.md");
        let rows: Vec<(&str, &str)> = rules
            .lines()
            .filter_map(|l| {
                let (code, rest) = l.strip_prefix("| `")?.split_once("` | ")?;
                Some((code, rest.strip_suffix(" |")?))
            })
            .collect();
        let codes: Vec<(&str, &str)> = Code::ALL
            .iter()
            .map(|c| (c.as_str(), c.meaning()))
            .collect();
        assert_eq!(rows, codes, "docs/rules.md's table of codes");
    }
}
