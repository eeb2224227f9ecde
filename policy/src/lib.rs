//! verifyfull's decision engine: a pure library (no I/O, no clock, no Kubernetes client).
//!
//! Given a Pod spec (from any Pod-carrying kind), it computes each container's effective
//! environment as the kubelet would, recognises PostgreSQL connection strings by value,
//! applies libpq's (or pgjdbc's) precedence rules, and reports what each client will do and
//! how to fix it. The CLI, the webhook and the operator all call [`evaluate`].

pub mod admission;
#[cfg(feature = "clap")]
pub mod args;
mod command;
mod context;
pub mod crd;
mod drivers;
pub mod engine;
pub mod env;
pub mod exemptions;
pub mod fixes;
pub mod hosts;
pub mod inject;
pub mod jdbc;
pub mod libpq;
pub mod message;
pub mod profiles;
pub mod redact;
pub mod verdict;
pub mod workload;

pub use context::{Context, Settings};
pub use engine::evaluate;
pub use env::{Lookup, NoSources, SourceData, SourceKind, ValueSource};
pub use verdict::{Code, Finding, LoopbackPolicy, Report, Severity, Treatment, Verdict};
pub use workload::{
    Container, Meta, Object, PodSpec, PodTemplate, PodView, Workload, WorkloadKind,
};
