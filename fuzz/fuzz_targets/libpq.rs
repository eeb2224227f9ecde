//! libpq URIs and keyword/value strings: never a panic; what parses renders back to the
//! same keyword/value stores.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| policy::fuzzing::libpq(s));
