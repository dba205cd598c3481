//! The ICMP error builders: whatever the packet, an error they build is itself a valid packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use udptun::packet;

/// RFC 1071 the slow way, independent of `packet::checksum`: a 64-bit sum of the 16-bit words
/// of all `parts` concatenated (an odd length padded with a zero), folded at the end. Over data
/// that holds a correct checksum the result is 0.
fn naive_checksum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.concat();
    let mut sum: u64 = 0;
    for (i, byte) in bytes.iter().enumerate() {
        sum += if i % 2 == 0 { u64::from(*byte) << 8 } else { u64::from(*byte) };
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fuzz_target!(|data: &[u8]| {
    let mut out = [0u8; 1500];
    if let Some(len) = packet::unreachable(data, &mut out) {
        let reply = &out[..len];
        let version = packet::check(reply).expect("an ICMP error must be a well-formed packet");
        assert_eq!(version, data[0] >> 4);
        assert_eq!(packet::source(reply), packet::destination(data));
        assert_eq!(packet::destination(reply), packet::source(data));
        if version == 4 {
            let header_len = usize::from(reply[0] & 0x0f) * 4;
            assert_eq!(reply[9], 1, "protocol ICMP");
            assert_eq!(naive_checksum(&[&reply[..header_len]]), 0, "IPv4 header checksum");
            assert_eq!(naive_checksum(&[&reply[header_len..]]), 0, "ICMP checksum");
        } else {
            // No extension headers: the ICMPv6 message follows the fixed header.
            assert_eq!(reply[6], 58, "next header ICMPv6");
            let icmp = &reply[40..];
            assert_eq!(usize::from(u16::from_be_bytes([reply[4], reply[5]])), icmp.len());
            assert!(icmp.len() + 40 <= 1280, "an ICMPv6 error fits the minimum MTU");
            // The checksum covers the pseudo-header (RFC 8200 §8.1): source, destination,
            // upper-layer length (32 bits), three zero bytes and the next header.
            let length = (icmp.len() as u32).to_be_bytes();
            let pseudo = [&reply[8..24], &reply[24..40], &length[..], &[0, 0, 0, 58][..], icmp];
            assert_eq!(naive_checksum(&pseudo), 0, "ICMPv6 checksum");
        }
    }
});
