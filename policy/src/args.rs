//! The policy settings as command-line flags (each also an environment variable), one arg
//! group flattened into every binary so the CLI and the webhook spell them alike.

use crate::context::{DEFAULT_CONNECTION_VARIABLE_PATTERNS, Settings};
use crate::verdict::{LoopbackPolicy, Treatment};

/// The engine's policy settings as flags.
#[derive(clap::Args, Debug, Clone)]
pub struct SettingsArgs {
    /// What an Unresolved finding does (a deciding value is in a Secret/ConfigMap that cannot be read).
    #[arg(long, value_enum, default_value_t = Treatment::Warn, env = "VERIFYFULL_UNRESOLVED")]
    pub unresolved: Treatment,
    /// What an Unverifiable finding does (a service file, custom JDBC factory, GSSAPI or unknown driver decides).
    #[arg(long, value_enum, default_value_t = Treatment::Warn, env = "VERIFYFULL_UNVERIFIABLE")]
    pub unverifiable: Treatment,
    /// Whether targets on loopback (an in-Pod proxy does the TLS) are allowed or checked.
    #[arg(long, value_enum, default_value_t = LoopbackPolicy::Allow, env = "VERIFYFULL_LOOPBACK")]
    pub loopback: LoopbackPolicy,
    /// Names of variables that hold connection strings (substring, case-insensitive; A+B
    /// means both). Repeat to replace the defaults.
    #[arg(
        long = "connection-variable",
        value_name = "PATTERN",
        env = "VERIFYFULL_CONNECTION_VARIABLES",
        value_delimiter = ','
    )]
    pub connection_variables: Vec<String>,
}

impl SettingsArgs {
    /// The settings these flags give.
    pub fn settings(&self) -> Settings {
        let patterns = if self.connection_variables.is_empty() {
            DEFAULT_CONNECTION_VARIABLE_PATTERNS
                .iter()
                .map(|p| p.to_string())
                .collect()
        } else {
            self.connection_variables.clone()
        };
        Settings {
            unresolved: self.unresolved,
            unverifiable: self.unverifiable,
            loopback: self.loopback,
            connection_variable_patterns: patterns,
            profiles: Default::default(),
        }
    }
}
