//! Entry points for the fuzz targets (`fuzz/`) and the property tests: each feeds one
//! arbitrary text to the parsers behind it and panics only when an invariant breaks.
//! Behind the `fuzzing` feature, so the parsers themselves stay private.

use crate::{exemptions, hosts, jdbc, libpq};

/// The libpq parsers: URIs and keyword/value strings never panic, and what parses renders
/// back (without secrets) to the same keyword/value pairs.
pub fn libpq(s: &str) {
    if let Ok(info) = libpq::parse(s) {
        let clean = info.without_secrets();
        let text = clean.to_keyword_value();
        let back = libpq::parse_keyword_value(&text).expect("rendered text parses");
        assert_eq!(pairs(&back), pairs(&clean), "round trip of {text:?}");
        let _ = hosts::slots(info.last("host"), info.last("hostaddr"));
    }
    let _ = libpq::parse_keyword_value(s);
    let _ = libpq::recognise_keyword_value(s);
}

fn pairs(info: &libpq::Conninfo<'_>) -> Vec<(String, String)> {
    info.params
        .iter()
        .filter(|p| libpq::is_keyword(&p.key))
        .map(|p| (p.key.to_string(), p.value.to_string()))
        .collect()
}

/// The pgjdbc URL parser, on the text as it is and after the pgjdbc prefix.
pub fn jdbc(s: &str) {
    if jdbc::recognise(s).is_some() {
        let _ = jdbc::parse(s);
    }
    let _ = jdbc::parse(&format!("jdbc:postgresql:{s}"));
}

/// libpq's host/hostaddr slot pairing.
pub fn hosts(host: &str, hostaddr: &str) {
    let _ = hosts::slots(Some(host), Some(hostaddr));
}

/// The exemption expiry parser.
pub fn exemption_until(s: &str) {
    let _ = exemptions::parse_until(s);
}
