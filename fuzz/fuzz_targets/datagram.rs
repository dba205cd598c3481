//! The inbound path: any datagram through the check, then the source check and routing; and
//! MSS clamping, which both paths run.
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

    // MSS clamping sees every packet, checked (from peers) or not (from the TUN). It never
    // panics; a packet it changes stays as valid as it was, and its one's-complement sum stays
    // the same (the MSS values and the TCP checksum move together, and the TCP header starts at
    // an even offset), so a TCP checksum that verified still does; clamping again does nothing.
    let mtu = 576 + (data.len() % 1024) as u16;
    let mut clamped = data.to_vec();
    if packet::clamp_mss(&mut clamped, mtu) {
        assert_eq!(clamped.len(), data.len());
        assert_eq!(packet::checksum(&clamped), packet::checksum(data));
        assert_eq!(packet::check(&clamped), packet::check(data));
        assert!(!packet::clamp_mss(&mut clamped, mtu));
    } else {
        assert_eq!(clamped, data);
    }
});
