//! libpq URIs and keyword/value strings: never a panic; what parses renders back to the
//! same keyword/value stores.
#![no_main]

use libfuzzer_sys::fuzz_target;
use policy::{hosts, libpq};

fn pairs(info: &libpq::Conninfo<'_>) -> Vec<(String, String)> {
    info.params
        .iter()
        .filter(|p| libpq::is_keyword(&p.key))
        .map(|p| (p.key.to_string(), p.value.to_string()))
        .collect()
}

fuzz_target!(|s: &str| {
    if let Ok(info) = libpq::parse(s) {
        let clean = info.without_secrets();
        let text = clean.to_keyword_value();
        let back = libpq::parse_keyword_value(&text).expect("rendered text parses");
        assert_eq!(pairs(&back), pairs(&clean));
        let _ = hosts::slots(info.last("host"), info.last("hostaddr"));
    }
    let _ = libpq::recognise_keyword_value(s);
});
