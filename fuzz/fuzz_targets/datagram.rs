//! The inbound path: any datagram through the check, then the source check and routing.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use udptun::packet;
use udptun::peers::{PeerTable, Roaming};

static TABLE: LazyLock<PeerTable> = LazyLock::new(|| {
    let entry = |prefix: &str, peer: &str| (prefix.parse().unwrap(), peer.parse().unwrap());
    PeerTable::from_entries([
        entry("192.168.100.1", "192.0.2.1:7777"),
        entry("10.0.0.0/8", "192.0.2.2:7777"),
        entry("fd00::/64", "[2001:db8::1]:7777"),
    ])
});

fuzz_target!(|data: &[u8]| {
    let source = "192.0.2.1:40000".parse().unwrap();
    // The table lives across inputs, so the roaming hold sees a clock that moves on.
    let now = 1 + data.len() as u64 * 100;
    let roaming = Roaming { hold_ms: 15_000, keyed: data.first().is_some_and(|b| b & 1 == 1) };
    match packet::check(data) {
        Ok(version) => {
            assert!(version == 4 || version == 6);
            // A checked packet always has both addresses.
            assert!(packet::source(data).is_some() && packet::destination(data).is_some());
            let _ = TABLE.admit(data, source, false, now, roaming);
            let _ = TABLE.route(data);
        }
        Err(reason) => {
            let _ = reason.as_str();
        }
    }
    let _ = TABLE.keepalive_from(source, now, roaming);
});
