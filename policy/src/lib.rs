//! verifyfull's decision engine: a pure library (no I/O, no clock, no Kubernetes client).
//!
//! Given a Pod spec (from any Pod-carrying kind), it computes each container's effective
//! environment as the kubelet would, recognises PostgreSQL connection strings by value,
//! applies libpq's (or pgjdbc's) precedence rules, and reports what each client will do and
//! how to fix it. The CLI, the webhook and the operator all call [`judge`].
#![warn(unreachable_pub, missing_docs)]

pub mod admission;
#[cfg(feature = "clap")]
pub mod args;
mod command;
mod context;
pub mod crd;
mod drivers;
mod engine;
mod env;
mod exemptions;
mod fixes;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod hosts;
pub mod inject;
mod jdbc;
mod libpq;
pub mod message;
pub mod profiles;
pub mod redact;
pub mod reports;
mod verdict;
mod workload;

pub use context::{Context, Settings};
pub use engine::judge;
pub use env::{Lookup, NoSources, SourceData, SourceKind, ValueSource};
pub use verdict::{
    Change, Code, ContainerList, ContainerReport, Finding, Fix, FixValue, LoopbackPolicy, Note,
    Report, Severity, Treatment, Verdict,
};
pub use workload::{
    Container, MAX_CONTAINERS, MAX_ENV_PER_POD, Meta, Object, PodSpec, PodTemplate, PodView,
    Workload, WorkloadKind,
};
