//! Writes the CRD YAML generated from `policy::crd` to `crds/` (or stdout with `-`).
//! `cargo run -p verifyfull-operator --bin crdgen`; a test fails when the committed file
//! differs from what this generates.

use std::process::ExitCode;

fn main() -> ExitCode {
    let yaml = match operator::crd_yaml() {
        Ok(y) => y,
        Err(e) => {
            eprintln!("crdgen: {e}");
            return ExitCode::from(1);
        }
    };
    let dest = std::env::args()
        .nth(1)
        .unwrap_or_else(|| operator::CRD_FILE.to_string());
    if dest == "-" {
        print!("{yaml}");
        return ExitCode::SUCCESS;
    }
    match std::fs::write(&dest, yaml) {
        Ok(()) => {
            eprintln!("wrote {dest}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crdgen: {dest}: {e}");
            ExitCode::from(1)
        }
    }
}
