//! What the engine needs besides the Pod: policy, value sources and the clock.

use crate::env::ValueSource;
use crate::verdict::Settings;

/// What the engine needs besides the Pod: policy, value sources and the clock.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub settings: &'a Settings,
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
