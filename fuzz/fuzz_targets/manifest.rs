//! Whole manifests through the CLI's parser and the engine: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verifyfull_cli::check::{self, Options};
use verifyfull_cli::input::{self, Source};

fuzz_target!(|s: &str| {
    let (docs, errors) = input::parse(&Source::Stdin, s);
    let options = Options {
        settings: policy::Settings::default(),
        now: jiff::Timestamp::UNIX_EPOCH,
        jobs: 1,
    };
    let outcome = check::judge(&docs, &errors, &options);
    let _ = check::render_human(&outcome);
});
