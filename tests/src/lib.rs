//! End-to-end tests for verifyfull: an in-process Kubernetes API stand-in, and the harness
//! that runs scenarios against it or against a real cluster.

pub mod harness;
pub mod pki;
pub mod scenario;
pub mod standin;
