//! The hosts document parser (lenient JSON, prefixes, IPv6): any text parses or fails cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use udptun::hosts;
use udptun::prefix::Prefix;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match hosts::parse(text) {
        Ok(entries) => {
            for entry in entries {
                assert_ne!(entry.port, 0);
                assert!(!entry.host.trim().is_empty());
                assert!(entry.line >= 1 && entry.line <= text.lines().count().max(1));
                let again: Prefix = entry.prefix.to_string().parse().expect("a prefix prints parseably");
                assert_eq!(again, entry.prefix);
            }
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
});
