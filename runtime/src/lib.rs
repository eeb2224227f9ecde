//! What verifyfull's two servers (the webhook and the operator) share: HTTP/1.1 serving
//! that no client can take down ([`serve`]), logging that never blocks or fails a request
//! ([`logging`]), and the process signals they answer ([`signals`]).
//!
//! The limits and why they are what they are: docs/operations.md.

pub mod admin;
pub mod logging;
pub mod metrics;
pub mod profiles;
pub mod serve;
pub mod signals;
