//! The `verifyfull check` CLI as a library: input handling and reporting, so that tests and
//! benchmarks drive the same code as the binary.

pub mod audit;
pub mod check;
pub mod input;
pub mod locate;
pub mod sarif;
