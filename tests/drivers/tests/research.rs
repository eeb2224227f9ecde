//! The drivers the lab cannot run (docs/drivers.md): for each rule of research.yaml, the
//! engine's verdict is the one pinned there, and the engine never passes a setting its
//! driver does not verify. Needs no server and no driver.

use std::path::Path;

#[test]
fn the_research_rules_hold() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("research.yaml");
    let rules = lab::research::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(rules.len() >= 30, "{} rules", rules.len());
    let mut wrong = Vec::new();
    for r in &rules {
        let verdict = lab::matrix::verdict_of(r.pod()).unwrap_or_else(|e| panic!("{e}"));
        if verdict.text() != r.engine {
            wrong.push(format!(
                "{} {:?}: the engine says {}, pinned {}",
                r.driver,
                r.env,
                verdict.text(),
                r.engine
            ));
        }
        if verdict.pass() && !r.safe() {
            wrong.push(format!("FALSE PASS: {} {:?} ({})", r.driver, r.env, r.does));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
