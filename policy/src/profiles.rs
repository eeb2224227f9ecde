//! Application profiles (docs/applications.md): how off-the-shelf applications read their
//! PostgreSQL settings from their own variables, and what each value makes their driver
//! do. One file per application in `profiles/`, checked when the crate is built.

mod schema;

pub use schema::{
    Condition, Error, HostVariable, MAX_BYTES, Outcome, Profile, RootCert, Source, Switch,
    UrlFormat, UrlVariable, parse,
};

use std::fmt::Write as _;
use std::sync::LazyLock;

/// The bundled profiles' files and text (`build.rs` checked every one).
static BUNDLED_TEXT: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/profiles.rs"));

static BUNDLED: LazyLock<Vec<Profile>> = LazyLock::new(|| {
    BUNDLED_TEXT
        .iter()
        .filter_map(|(file, text)| parse(file, text).ok())
        .collect()
});

/// The bundled profiles, by file name.
pub fn bundled() -> &'static [Profile] {
    &BUNDLED
}

impl Outcome {
    /// What it means, for people.
    pub fn describe(self) -> &'static str {
        match self {
            Outcome::Plaintext => "no TLS",
            Outcome::Unverified => "TLS, the server not verified",
            Outcome::ChainOnly => "TLS, the chain verified but not the host name",
            Outcome::Verified => "TLS, chain and host name verified",
            Outcome::Unknown => "cannot be told",
        }
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// docs/applications.md: every profile, what verify-full needs there, and its sources.
pub fn markdown(profiles: &[Profile]) -> String {
    let mut out = String::from(
        "# Applications verifyfull knows\n\n\
         Generated from `policy/profiles/` by `VERIFYFULL_BLESS=1 cargo test -p verifyfull-policy \
         --lib profiles`; do not edit. Each profile says how the application is recognised (by \
         its own variables, never by its image name) and what its driver does with each \
         value, citing the application's documentation or source for every rule.\n\n\
         | application | driver | recognised by | TLS decided by | verify-full needs |\n\
         |---|---|---|---|---|\n",
    );
    for p in profiles {
        let recognise: Vec<String> = p
            .recognise
            .iter()
            .map(|c| match &c.equals {
                Some(v) => format!("`{}={}`", c.variable, v.join("|")),
                None => format!("`{}`", c.variable),
            })
            .collect();
        let mut deciding: Vec<String> = p.tls.iter().map(|s| format!("`{}`", s.variable)).collect();
        if let Some(u) = &p.url {
            deciding.insert(0, format!("`{}` (URL)", u.variable));
        }
        let fix: Vec<String> = p.fix.iter().map(|(k, v)| format!("`{k}={v}`")).collect();
        let _ = writeln!(
            out,
            "| [{}](#{}) | {} | {} | {} | {} |",
            cell(&p.application),
            p.id,
            cell(&p.driver),
            recognise.join(" and "),
            deciding.join(", "),
            cell(&fix.join(" ")),
        );
    }
    for p in profiles {
        let _ = write!(
            out,
            "\n## {}\n\n<a id=\"{}\"></a>As of {}; driver: {}.\n\n",
            p.application, p.id, p.version, p.driver
        );
        if let Some(u) = &p.url {
            let _ = writeln!(out, "- `{}`: the whole connection URL.", u.variable);
        }
        if let Some(h) = &p.host {
            let default = h
                .default
                .as_deref()
                .map_or(String::new(), |d| format!(" (unset: `{d}`)"));
            let _ = writeln!(out, "- `{}`: the server{default}.", h.variable);
        }
        for s in &p.tls {
            let default = s
                .default
                .as_deref()
                .map_or(String::new(), |d| format!("; unset: `{d}`"));
            let values: Vec<String> = s
                .values
                .iter()
                .map(|(v, o)| format!("`{v}`: {}", o.describe()))
                .collect();
            let _ = writeln!(
                out,
                "- `{}`: {}; any other value: {}{default}.",
                s.variable,
                values.join(", "),
                s.other.describe()
            );
        }
        if let Some(r) = &p.root_cert {
            let need = if r.required {
                "needed for verification"
            } else {
                "optional: the driver falls back to other roots"
            };
            let _ = writeln!(out, "- `{}`: the CA file, {need}.", r.variable);
        }
        if let Some(n) = &p.notes {
            let _ = writeln!(out, "\n{}", n.trim());
        }
        out.push_str("\nSources:\n\n");
        for s in &p.sources {
            let _ = writeln!(out, "- {}: {}", s.about.trim(), s.cite.trim());
        }
        if !p.unconfirmed.is_empty() {
            out.push_str("\nNot confirmed from the application's documentation or source:\n\n");
            for u in &p.unconfirmed {
                let _ = writeln!(out, "- {}", u.trim());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_profile_loads_and_the_docs_are_generated_from_them() {
        assert_eq!(bundled().len(), BUNDLED_TEXT.len());
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/applications.md");
        let generated = markdown(bundled());
        if std::env::var_os("VERIFYFULL_BLESS").is_some() {
            std::fs::write(path, &generated).expect("write docs/applications.md");
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/applications.md is not what the profiles say: run VERIFYFULL_BLESS=1 cargo test -p verifyfull-policy --lib profiles"
        );
    }

    #[test]
    fn a_bad_profile_names_its_file_and_field() {
        let good = BUNDLED_TEXT[0].1;
        let cases = [
            (format!("{good}\nsurprise: 1\n"), "surprise"),
            (good.replace("recognise:", "recognize:"), "recognize"),
            ("id: x\n".to_string(), "application"),
            ("{".to_string(), "my.yaml"),
        ];
        for (text, field) in cases {
            let e = parse("my.yaml", &text).expect_err(field);
            assert_eq!(e.file, "my.yaml");
            assert!(e.to_string().contains(field), "{field}: {e}");
        }
        let huge = "#".repeat(MAX_BYTES + 1);
        assert!(parse("big.yaml", &huge).is_err());
    }
}
