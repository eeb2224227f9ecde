//! Writes the CRD YAML generated from `policy::crd` to `crds/` and to the chart's
//! `files/crds/` (Helm reads files inside the chart only), or to stdout with `-`.
//! `cargo run -p verifyfull-operator --bin crdgen` from the repository root; a test fails
//! when either committed file differs from what this generates.

use std::process::ExitCode;

fn main() -> ExitCode {
    let yaml = match operator::crd_yaml() {
        Ok(y) => y,
        Err(e) => {
            eprintln!("crdgen: {e}");
            return ExitCode::from(1);
        }
    };
    if std::env::args().nth(1).as_deref() == Some("-") {
        print!("{yaml}");
        return ExitCode::SUCCESS;
    }
    for dest in [operator::CRD_FILE, operator::CHART_CRD_FILE] {
        if let Err(e) = std::fs::write(dest, &yaml) {
            eprintln!("crdgen: {dest}: {e} (run it from the repository root)");
            return ExitCode::from(1);
        }
        eprintln!("wrote {dest}");
    }
    ExitCode::SUCCESS
}
