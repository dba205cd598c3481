//! The config file parser: any text gives arguments or an error naming the origin.
#![no_main]

use libfuzzer_sys::fuzz_target;
use udptun::cli;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(error) = cli::config_to_args(text, "fuzz.toml", &|_| false) {
        assert!(error.to_string().starts_with("fuzz.toml"), "{error}");
    }
});
