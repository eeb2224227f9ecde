//! What the engine needs besides the Pod: policy, value sources and the clock.

use crate::env::ValueSource;
use crate::verdict::{Code, LoopbackPolicy, Severity, Treatment};

/// What the engine needs besides the Pod: policy, value sources and the clock.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    /// The policy settings.
    pub settings: &'a Settings,
    /// Where referenced ConfigMaps and Secrets are read.
    pub sources: &'a dyn ValueSource,
    /// Exemption expiry is judged against this instant; the engine never reads a clock.
    pub now: jiff::Timestamp,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", self.settings)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

/// Policy settings of the engine (webhook flags, CLI flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// What an `Unresolved` finding does.
    pub unresolved: Treatment,
    /// What an `Unverifiable` finding does.
    pub unverifiable: Treatment,
    /// Whether loopback targets are judged.
    pub loopback: LoopbackPolicy,
    /// Names of variables that hold connection strings, matched case-insensitively as
    /// substrings; `A+B` means both. A hidden variable with such a name makes a client.
    pub connection_variable_patterns: Vec<String>,
    /// The application profiles (docs/applications.md).
    pub profiles: crate::profiles::Profiles,
}

pub(crate) const DEFAULT_CONNECTION_VARIABLE_PATTERNS: &[&str] = &[
    "DATABASE_URL",
    "DATABASE_URI",
    "DB_URL",
    "DSN",
    "JDBC",
    "POSTGRES+URL",
    "POSTGRES+URI",
    "PG+URL",
    "PG+URI",
    "SPRING_DATASOURCE_URL",
    // The other drivers' variables (docs/drivers.md).
    "CONNECTIONSTRINGS__",
    "CONNSTR_",
    "R2DBC+URL",
    "REACTIVE_URL",
];

impl Default for Settings {
    fn default() -> Self {
        Settings {
            unresolved: Treatment::Warn,
            unverifiable: Treatment::Warn,
            loopback: LoopbackPolicy::Allow,
            connection_variable_patterns: DEFAULT_CONNECTION_VARIABLE_PATTERNS
                .iter()
                .map(|p| p.to_string())
                .collect(),
            profiles: Default::default(),
        }
    }
}

impl Settings {
    /// What a finding with `code` does to an admission.
    pub fn severity(&self, code: Code) -> Severity {
        match code {
            Code::Unresolved => self.unresolved.severity(),
            Code::Unverifiable => self.unverifiable.severity(),
            _ => Severity::Deny,
        }
    }

    /// Whether a variable name looks like it holds a connection string.
    pub fn is_connection_variable(&self, name: &str) -> bool {
        // Names and patterns are nearly always upper case already: then plain substring
        // search (fast) is the case-insensitive search.
        let upper = upper_case(name);
        let matches = |p: &String| {
            p.split('+')
                .all(|part| upper.contains(upper_case(part).as_ref()))
        };
        // A part of a connection named as such (`SONAR_JDBC_PASSWORD`, `KC_DB_URL_HOST`) is
        // not a connection string, unless a pattern names it in full or is a prefix for
        // names of the user's choosing (`ConnectionStrings__Database`).
        let last = upper.rsplit(['_', '.', '-']).next().unwrap_or_default();
        if NOT_CONNECTION_STRINGS.contains(&last) {
            return self
                .connection_variable_patterns
                .iter()
                .any(|p| p.eq_ignore_ascii_case(name) || (p.ends_with('_') && matches(p)));
        }
        self.connection_variable_patterns.iter().any(matches)
    }
}

/// Last name parts that say a variable holds one part of a connection, not a string.
const NOT_CONNECTION_STRINGS: &[&str] = &[
    "PASSWORD", "PASSWD", "PASS", "PWD", "USER", "USERNAME", "PORT", "HOST", "DATABASE", "DBNAME",
];

fn upper_case(s: &str) -> std::borrow::Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_lowercase()) {
        s.to_ascii_uppercase().into()
    } else {
        s.into()
    }
}

#[cfg(test)]
mod tests {
    use super::Settings;

    #[test]
    fn connection_variables_by_name_but_not_their_parts() {
        let s = Settings::default();
        for name in ["DATABASE_URL", "app_jdbc_url", "SONAR_JDBC_URL", "PG_DSN"] {
            assert!(s.is_connection_variable(name), "{name}");
        }
        for name in [
            "SONAR_JDBC_PASSWORD",
            "SONAR_JDBC_USERNAME",
            "KC_DB_URL_HOST",
            "KC_DB_URL_PORT",
            "KC_DB_URL_DATABASE",
            "DATABASE_URL_PASS",
            "HOME",
        ] {
            assert!(!s.is_connection_variable(name), "{name}");
        }
        for name in [
            "ConnectionStrings__Database",
            "CONNSTR_HOST",
            "ConnectionStrings__User",
        ] {
            assert!(
                s.is_connection_variable(name),
                "a name of the user's choosing: {name}"
            );
        }
        let own = Settings {
            connection_variable_patterns: vec!["BILLING_DB_HOST".into()],
            ..Settings::default()
        };
        assert!(
            own.is_connection_variable("BILLING_DB_HOST"),
            "named in full"
        );
    }
}
