//! pgjdbc URLs: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use policy::jdbc;

fuzz_target!(|s: &str| {
    if jdbc::recognise(s).is_some() {
        let _ = jdbc::parse(s);
    }
    let _ = jdbc::parse(&format!("jdbc:postgresql:{s}"));
});
