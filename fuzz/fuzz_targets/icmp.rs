//! The ICMP error builders: whatever the packet, an error they build is itself a valid packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use udptun::packet;

fuzz_target!(|data: &[u8]| {
    let mut out = [0u8; 1500];
    if let Some(len) = packet::unreachable(data, &mut out) {
        let reply = &out[..len];
        let version = packet::check(reply).expect("an ICMP error must be a well-formed packet");
        assert_eq!(version, data[0] >> 4);
        assert_eq!(packet::source(reply), packet::destination(data));
        assert_eq!(packet::destination(reply), packet::source(data));
        if version == 4 {
            assert_eq!(packet::checksum(&reply[20..]), 0, "ICMP checksum");
        }
    }
});
