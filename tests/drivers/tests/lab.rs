//! The driver conformance lab (docs/drivers.md): eight real drivers, four real servers, every
//! case of `cases.yaml`. Needs the clients `.ci/drivers` installs; fails loudly without them.

use std::io::Write;
use std::path::{Path, PathBuf};

use lab::matrix;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn no_driver_reaches_an_impostor_where_the_engine_passes() {
    // Failures carry the driver's or the server's last log lines: printed as text.
    if let Err(e) = lab() {
        panic!("{e}");
    }
}

fn lab() -> Result<(), String> {
    let root = root();
    let cases = lab::cases::load(&root.join("tests/drivers/cases.yaml"))?;
    assert!(
        cases.len() >= 150,
        "the lab needs at least 150 cases, has {}",
        cases.len()
    );
    let mut drivers = lab::clients::drivers(&root, Path::new(env!("CARGO_BIN_EXE_sqlx-client")));
    // A developer's knob to run a few drivers (comma-separated names); the matrix says which ran.
    if let Ok(only) = std::env::var("VERIFYFULL_LAB_ONLY") {
        drivers.retain(|d| only.split(',').any(|n| n == d.name));
    }
    let work = matrix::work_dir()?;
    let run = matrix::run(&drivers, cases, &work);
    let _ = std::fs::remove_dir_all(&work);
    let run = run?;
    // Written past the test harness's capture: CI's log shows the matrix on success too.
    let _ = std::io::stdout().write_all(matrix::render_matrix(&run).as_bytes());
    let allowed = matrix::load_allowed(&root.join("tests/drivers/allowed.yaml"))?;
    let problems = matrix::problems(&run, &allowed);
    if !problems.is_empty() {
        return Err(format!(
            "{} problems:\n{}",
            problems.len(),
            problems.join("\n")
        ));
    }
    // docs/drivers.md is what this run observed (every driver: a partial run cannot say).
    let rules = lab::research::load(&root.join("tests/drivers/research.yaml"))?;
    let doc = lab::docs::render(&run, &rules)?;
    let path = root.join("docs/drivers.md");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if std::env::var_os("VERIFYFULL_LAB_ONLY").is_none() && doc != committed {
        if std::env::var_os("VERIFYFULL_BLESS").is_some() {
            std::fs::write(&path, doc).map_err(|e| format!("{}: {e}", path.display()))?;
        } else {
            return Err(format!(
                "{} differs from what the lab observed: see the change with \
                 VERIFYFULL_BLESS=1 cargo test -p verifyfull-driver-lab --test lab; git diff",
                path.display()
            ));
        }
    }
    Ok(())
}
