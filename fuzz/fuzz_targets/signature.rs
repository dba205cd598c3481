//! The signature file parser (`--hosts-pubkey`): whatever the bytes, `parse` and `check` never
//! panic; what `parse` accepts has a trusted comment whose timestamp is the one `check` gives
//! when it accepts (the fuzzer may change the unsigned comment line and still verify).
#![no_main]

use libfuzzer_sys::fuzz_target;
use udptun::signature::{self, Policy};

/// The key of the seed in fuzz/corpus/signature (made with `minisign -G -W`).
const PUBLIC_KEY: &[u8] = b"untrusted comment: minisign public key 95480C7DBB34C917\n\
    RWQXyTS7fQxIld4HebWKrr1K6Wqa3/X1izG68R1rxEA+4YD/gf9Fux8s\n";
/// The document the seed signs.
const DOCUMENT: &[u8] = b"{ \"nodes\": { \"192.168.100.2\": { \"host\": \"10.100.0.2\" } } }\n";

fuzz_target!(|data: &[u8]| {
    let parsed = signature::parse(data);
    if let Ok(parsed) = &parsed {
        let comment = parsed.signature.trusted_comment();
        assert_eq!(parsed.timestamp, signature::timestamp(comment));
    }
    let key = signature::parse_public_key(PUBLIC_KEY, "pub").expect("the seed's key");
    let policy = Policy::new(vec![key], None);
    if let Ok(signed) = policy.check(DOCUMENT, Some(data), "fuzz.minisig", None, 0) {
        let parsed = parsed.expect("a signature that verifies parses");
        assert_eq!(parsed.timestamp, Ok(signed));
    }
});
