//! pgjdbc URLs: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| policy::fuzzing::jdbc(s));
