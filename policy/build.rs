//! Bundles the application profiles of `profiles/`: each is parsed and checked here with
//! the same code the engine loads them with (`src/profiles/schema.rs`), so a bad profile
//! fails the build with its file and field; the good ones are included as text.

#[allow(dead_code)] // The build uses the parser; the engine uses the rest.
#[path = "src/profiles/schema.rs"]
mod schema;

use std::fmt::Write as _;

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    let mut out = String::from("&[\n");
    let mut errors = Vec::new();
    for path in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        let name = format!(
            "policy/profiles/{}",
            path.file_name().unwrap_or_default().to_string_lossy()
        );
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        match std::fs::read_to_string(path) {
            Ok(text) => match schema::parse(&name, &text) {
                Ok(p) if p.id == stem => {
                    let _ = writeln!(out, "    ({name:?}, include_str!({:?})),", path.display());
                }
                Ok(p) => errors.push(format!("{name}: id: {:?} is not the file's name", p.id)),
                Err(e) => errors.push(e.to_string()),
            },
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    if !errors.is_empty() {
        for e in &errors {
            println!("cargo:warning=application profile {e}");
        }
        panic!(
            "{} application profile(s) are invalid:\n{}",
            errors.len(),
            errors.join("\n")
        );
    }
    out.push(']');
    let target =
        std::path::Path::new(&std::env::var("OUT_DIR").unwrap_or_default()).join("profiles.rs");
    if let Err(e) = std::fs::write(&target, out) {
        panic!("{}: {e}", target.display());
    }
}
