//! The config file parsers: any text gives arguments or an error naming the origin, and its
//! `[nodes]` tables entries or an error placed in the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use udptun::{cli, config};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(error) = cli::config_to_args(text, "fuzz.toml", &|_| false) {
        assert!(error.to_string().starts_with("fuzz.toml"), "{error}");
    }
    match config::parse(text) {
        Ok(parsed) => {
            for entry in parsed.nodes.iter().flat_map(|n| &n.entries) {
                assert!((1..=text.lines().count().max(1)).contains(&entry.line), "{entry:?}");
            }
        }
        Err(error) => {
            if let Some((line, _)) = error.position {
                assert!(line <= text.split('\n').count(), "{error}");
            }
        }
    }
});
