//! IP packet wire format: checked reads of untrusted bytes and the ICMP errors udptun builds.
//!
//! Pure functions over byte slices: no allocation, no I/O. Every accessor is bounds-checked, so
//! nothing that arrives from the network can make it panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Length of an IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = 20;
/// Length of the fixed IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;
/// Length of an ICMP or ICMPv6 error header (type, code, checksum, unused/MTU word).
const ICMP_HEADER_LEN: usize = 8;
/// RFC 4443 §2.4(c): an ICMPv6 error must not exceed the minimum IPv6 MTU.
const IPV6_MIN_MTU: usize = 1280;
const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;
/// IPv6 extension headers walked to find the upper-layer protocol (RFC 8200 §4, RFC 4302).
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const AUTHENTICATION: u8 = 51;
const DESTINATION_OPTIONS: u8 = 60;
/// Most IPv6 extension headers walked before giving up (and sending no error). RFC 8200 §4.1
/// allows each once but Destination Options twice: six; eight leaves room for odd senders.
const MAX_EXTENSION_HEADERS: usize = 8;
/// Time to live / hop limit of the errors udptun originates.
const DEFAULT_TTL: u8 = 64;

/// Why a datagram is not one whole IP packet. Each variant is a drop reason that gets counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// The IP version nibble is neither 4 nor 6 (this includes empty datagrams).
    BadVersion,
    /// Shorter than the fixed header, or an IPv4 header length outside 20..=len.
    BadHeaderLength,
    /// The length field of the header disagrees with the datagram length.
    LengthMismatch,
    /// The IPv4 header checksum is wrong.
    BadChecksum,
}

impl Malformed {
    /// A short label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Malformed::BadVersion => "bad IP version",
            Malformed::BadHeaderLength => "bad header length",
            Malformed::LengthMismatch => "length field does not match datagram length",
            Malformed::BadChecksum => "bad IPv4 header checksum",
        }
    }
}

/// Checks that `datagram` is exactly one well-formed IPv4 or IPv6 packet, as a UDP payload in
/// the FOU direct format must be. Returns the IP version (4 or 6).
pub fn check(datagram: &[u8]) -> Result<u8, Malformed> {
    match datagram.first().map(|b| b >> 4) {
        Some(4) => {
            // Also rejects datagrams shorter than 20 bytes: no header length fits them.
            let header_len = usize::from(datagram[0] & 0x0f) * 4;
            if header_len < IPV4_HEADER_LEN || header_len > datagram.len() {
                return Err(Malformed::BadHeaderLength);
            }
            if usize::from(read_u16(datagram, 2)) != datagram.len() {
                return Err(Malformed::LengthMismatch);
            }
            if checksum(&datagram[..header_len]) != 0 {
                return Err(Malformed::BadChecksum);
            }
            Ok(4)
        }
        Some(6) => {
            if datagram.len() < IPV6_HEADER_LEN {
                return Err(Malformed::BadHeaderLength);
            }
            if usize::from(read_u16(datagram, 4)) + IPV6_HEADER_LEN != datagram.len() {
                return Err(Malformed::LengthMismatch);
            }
            Ok(6)
        }
        _ => Err(Malformed::BadVersion),
    }
}

/// The destination address of an IP packet, or `None` if it is too short to hold one.
pub fn destination(packet: &[u8]) -> Option<IpAddr> {
    address_at(packet, 16, 24)
}

/// The source address of an IP packet, or `None` if it is too short to hold one.
pub fn source(packet: &[u8]) -> Option<IpAddr> {
    address_at(packet, 12, 8)
}

fn address_at(packet: &[u8], v4_offset: usize, v6_offset: usize) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => {
            let bytes: [u8; 4] = packet.get(v4_offset..v4_offset + 4)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(bytes)))
        }
        6 => {
            let bytes: [u8; 16] = packet.get(v6_offset..v6_offset + 16)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

fn read_u16(bytes: &[u8], offset: usize) -> u16 {
    u16::from_be_bytes([bytes[offset], bytes[offset + 1]])
}

/// One's-complement sum of 16-bit big-endian words (RFC 1071), not yet folded or inverted.
fn sum_words(data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    let mut sum: u32 = 0;
    for word in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([word[0], word[1]])));
        // Fold early so the sum never overflows, whatever the length.
        sum = (sum & 0xffff) + (sum >> 16);
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The Internet checksum (RFC 1071) of `data`. Over a region that already holds its checksum
/// field this is 0 when the checksum is right.
pub fn checksum(data: &[u8]) -> u16 {
    fold(sum_words(data))
}

/// Builds, into `out`, the ICMP error udptun writes back into the TUN when it has no peer for
/// `original`'s destination: ICMP Destination Host Unreachable (type 3, code 1) for IPv4, or
/// ICMPv6 Address Unreachable (type 1, code 3) for IPv6, sent from the unreachable address to
/// the original sender.
///
/// Returns the length written, or `None` when no error may be sent (RFC 1122 §3.2.2 and
/// RFC 4443 §2.4(e): never about an ICMP error, a non-first fragment, or a packet to or from
/// a multicast, broadcast or unspecified address; for IPv6, also not when the extension header
/// chain runs past the packet or is longer than [`MAX_EXTENSION_HEADERS`]), or when `out` is
/// too small.
pub fn unreachable(original: &[u8], out: &mut [u8]) -> Option<usize> {
    unreachable_limited(original, out, || true)
}

/// [`unreachable`] behind a rate limit: `allow` is asked once, and only about a packet the
/// rules above let an error answer, before anything is built; if it says no, nothing is built
/// and the answer is `None`. So packets that would get no error anyway spend no token.
pub fn unreachable_limited(original: &[u8], out: &mut [u8], allow: impl FnOnce() -> bool) -> Option<usize> {
    match original.first()? >> 4 {
        4 => unreachable_v4(original, out, allow),
        6 => unreachable_v6(original, out, allow),
        _ => None,
    }
}

fn unreachable_v4(original: &[u8], out: &mut [u8], allow: impl FnOnce() -> bool) -> Option<usize> {
    let header_len = usize::from(original.first()? & 0x0f) * 4;
    if header_len < IPV4_HEADER_LEN || original.len() < header_len {
        return None;
    }
    let IpAddr::V4(src) = source(original)? else { return None };
    let IpAddr::V4(dst) = destination(original)? else { return None };
    if !is_unicast_v4(src) || !is_unicast_v4(dst) {
        return None;
    }
    let fragment_offset = read_u16(original, 6) & 0x1fff;
    if fragment_offset != 0 {
        return None;
    }
    if original[9] == PROTO_ICMP {
        // Only echo requests and other queries may draw an error, never an error message.
        let icmp_type = *original.get(header_len)?;
        if !matches!(icmp_type, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18) {
            return None;
        }
    }
    // The original header and the first 8 bytes of its payload (RFC 792).
    let quoted = &original[..original.len().min(header_len + 8)];
    let total = IPV4_HEADER_LEN + ICMP_HEADER_LEN + quoted.len();
    let out = out.get_mut(..total)?;
    if !allow() {
        return None;
    }

    let (ip, icmp) = out.split_at_mut(IPV4_HEADER_LEN);
    ip.copy_from_slice(&[0; IPV4_HEADER_LEN]);
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[8] = DEFAULT_TTL;
    ip[9] = PROTO_ICMP;
    ip[12..16].copy_from_slice(&dst.octets());
    ip[16..20].copy_from_slice(&src.octets());
    let ip_checksum = checksum(ip);
    ip[10..12].copy_from_slice(&ip_checksum.to_be_bytes());

    icmp[..ICMP_HEADER_LEN].copy_from_slice(&[3, 1, 0, 0, 0, 0, 0, 0]);
    icmp[ICMP_HEADER_LEN..].copy_from_slice(quoted);
    let icmp_checksum = checksum(icmp);
    icmp[2..4].copy_from_slice(&icmp_checksum.to_be_bytes());
    Some(total)
}

fn is_unicast_v4(addr: Ipv4Addr) -> bool {
    !(addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast())
}

/// Follows the extension header chain of an IPv6 packet (whose fixed header is all there) to
/// the upper-layer header: returns its protocol and offset, or `None` when no error may answer
/// the packet: a non-first fragment, a chain that runs past the packet, or one longer than
/// [`MAX_EXTENSION_HEADERS`]. Every read is bounds-checked.
fn upper_layer_v6(packet: &[u8]) -> Option<(u8, usize)> {
    let mut protocol = packet[6];
    let mut offset = IPV6_HEADER_LEN;
    for _ in 0..=MAX_EXTENSION_HEADERS {
        let len = match protocol {
            // Length in 8-octet units, not counting the first 8 (RFC 8200 §4.3-4.6).
            HOP_BY_HOP | ROUTING | DESTINATION_OPTIONS => (usize::from(*packet.get(offset + 1)?) + 1) * 8,
            FRAGMENT => {
                let offset_and_flags = packet.get(offset + 2..offset + 4)?;
                if u16::from_be_bytes([offset_and_flags[0], offset_and_flags[1]]) >> 3 != 0 {
                    return None;
                }
                8
            }
            // Length in 4-octet units, not counting the first 8 (RFC 4302 §2.2).
            AUTHENTICATION => (usize::from(*packet.get(offset + 1)?) + 2) * 4,
            upper => return Some((upper, offset)),
        };
        protocol = *packet.get(offset)?;
        offset += len;
        if offset > packet.len() {
            return None;
        }
    }
    None
}

fn unreachable_v6(original: &[u8], out: &mut [u8], allow: impl FnOnce() -> bool) -> Option<usize> {
    let IpAddr::V6(src) = source(original)? else { return None };
    let IpAddr::V6(dst) = destination(original)? else { return None };
    if src.is_unspecified() || src.is_multicast() || dst.is_unspecified() || dst.is_multicast() {
        return None;
    }
    // `destination` read the last bytes of the fixed header: all 40 are there.
    let (protocol, offset) = upper_layer_v6(original)?;
    // ICMPv6 types below 128 are errors (RFC 4443 §2.1).
    if protocol == PROTO_ICMPV6 && *original.get(offset)? < 128 {
        return None;
    }
    // As much of the original as fits in the minimum IPv6 MTU (RFC 4443 §3.1).
    let room = IPV6_MIN_MTU - IPV6_HEADER_LEN - ICMP_HEADER_LEN;
    let quoted = &original[..original.len().min(room)];
    let icmp_len = ICMP_HEADER_LEN + quoted.len();
    let total = IPV6_HEADER_LEN + icmp_len;
    let out = out.get_mut(..total)?;
    if !allow() {
        return None;
    }

    let (ip, icmp) = out.split_at_mut(IPV6_HEADER_LEN);
    ip.copy_from_slice(&[0; IPV6_HEADER_LEN]);
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&(icmp_len as u16).to_be_bytes());
    ip[6] = PROTO_ICMPV6;
    ip[7] = DEFAULT_TTL;
    ip[8..24].copy_from_slice(&dst.octets());
    ip[24..40].copy_from_slice(&src.octets());

    icmp[..ICMP_HEADER_LEN].copy_from_slice(&[1, 3, 0, 0, 0, 0, 0, 0]);
    icmp[ICMP_HEADER_LEN..].copy_from_slice(quoted);
    // The ICMPv6 checksum covers a pseudo-header (RFC 8200 §8.1).
    let pseudo = sum_words(&ip[8..40]) + (icmp_len as u32) + u32::from(PROTO_ICMPV6) + sum_words(icmp);
    icmp[2..4].copy_from_slice(&fold(pseudo).to_be_bytes());
    Some(total)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An ICMP echo request 10.0.0.1 -> 10.0.0.2 with 4 bytes of data, checksums set.
    pub(crate) fn echo_request_v4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 32, 0x12, 0x34, 0x40, 0, 64, PROTO_ICMP, 0, 0, // ver..checksum
            0, 0, 0, 0, 0, 0, 0, 0, // addresses, filled below
            8, 0, 0, 0, 0, 1, 0, 1, b'p', b'i', b'n', b'g',
        ];
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        let c = checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let c = checksum(&p[20..]);
        p[22..24].copy_from_slice(&c.to_be_bytes());
        p
    }

    /// A UDP packet over IPv6 with `payload`, the UDP checksum left zero.
    pub(crate) fn udp_v6(src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
        let udp_len = 8 + payload.len();
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(udp_len as u16).to_be_bytes());
        p.extend_from_slice(&[17, 64]);
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(&[0x30, 0x39, 0x1e, 0x61]);
        p.extend_from_slice(&(udp_len as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(payload);
        p
    }

    /// Independent checksum: sum as u64 over a padded copy, then fold (no early folding).
    fn naive_checksum(data: &[u8]) -> u16 {
        let mut padded = data.to_vec();
        if padded.len() % 2 == 1 {
            padded.push(0);
        }
        let mut sum: u64 = padded.chunks(2).map(|w| u64::from(w[0]) << 8 | u64::from(w[1])).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2, checksum 220d.
        assert_eq!(checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), 0x220d);
    }

    #[test]
    fn checksum_matches_naive_on_odd_and_long_inputs() {
        let data: Vec<u8> = (0..70_001u32).map(|i| (i * 7919 % 251) as u8).collect();
        for len in [0, 1, 2, 3, 19, 20, 1499, 65_535, 70_001] {
            assert_eq!(checksum(&data[..len]), naive_checksum(&data[..len]), "len {len}");
        }
        assert_eq!(checksum(&[0xff; 4096]), naive_checksum(&[0xff; 4096]));
    }

    #[test]
    fn check_accepts_whole_ipv4_and_ipv6_packets() {
        assert_eq!(check(&echo_request_v4([10, 0, 0, 1], [10, 0, 0, 2])), Ok(4));
        let v6 = udp_v6(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST, b"hello");
        assert_eq!(check(&v6), Ok(6));
    }

    #[test]
    fn check_rejects_each_malformation() {
        let good = echo_request_v4([10, 0, 0, 1], [10, 0, 0, 2]);
        assert_eq!(check(&[]), Err(Malformed::BadVersion));
        assert_eq!(check(&[0x55; 40]), Err(Malformed::BadVersion));
        assert_eq!(check(&good[..19]), Err(Malformed::BadHeaderLength));

        let mut short_ihl = good.clone();
        short_ihl[0] = 0x44;
        assert_eq!(check(&short_ihl), Err(Malformed::BadHeaderLength));
        let mut long_ihl = good.clone();
        long_ihl[0] = 0x4f; // 60-byte header in a 32-byte packet
        assert_eq!(check(&long_ihl), Err(Malformed::BadHeaderLength));

        assert_eq!(check(&good[..31]), Err(Malformed::LengthMismatch));
        let mut padded = good.clone();
        padded.push(0);
        assert_eq!(check(&padded), Err(Malformed::LengthMismatch));

        let mut bad_sum = good.clone();
        bad_sum[8] = 63; // TTL changed, checksum not updated
        assert_eq!(check(&bad_sum), Err(Malformed::BadChecksum));

        let v6 = udp_v6(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST, b"hello");
        assert_eq!(check(&v6[..39]), Err(Malformed::BadHeaderLength));
        assert_eq!(check(&v6[..v6.len() - 1]), Err(Malformed::LengthMismatch));
    }

    #[test]
    fn check_takes_a_bare_header_and_the_largest_header_length() {
        let bare = echo_request_v4([10, 0, 0, 1], [10, 0, 0, 2]);
        let mut header_only = bare[..20].to_vec();
        header_only[2..4].copy_from_slice(&20u16.to_be_bytes());
        header_only[10..12].copy_from_slice(&[0, 0]);
        let c = checksum(&header_only);
        header_only[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(check(&header_only), Ok(4), "a 20-byte packet is all header, and valid");
        for short in 1..20 {
            assert_eq!(check(&header_only[..short]), Err(Malformed::BadHeaderLength), "{short} bytes");
        }
    }

    #[test]
    fn malformations_have_distinct_labels() {
        let all = [
            Malformed::BadVersion,
            Malformed::BadHeaderLength,
            Malformed::LengthMismatch,
            Malformed::BadChecksum,
        ];
        let labels: std::collections::HashSet<&str> = all.iter().map(|m| m.as_str()).collect();
        assert_eq!(labels.len(), all.len(), "{labels:?}");
        assert!(labels.iter().all(|l| l.len() > 5), "{labels:?}");
        assert_eq!(Malformed::BadChecksum.as_str(), "bad IPv4 header checksum");
    }

    #[test]
    fn addresses_are_read_from_both_versions() {
        let v4 = echo_request_v4([10, 0, 0, 1], [10, 0, 0, 2]);
        assert_eq!(source(&v4), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(destination(&v4), Some("10.0.0.2".parse().unwrap()));
        let (a, b): (Ipv6Addr, Ipv6Addr) = ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        let v6 = udp_v6(a, b, b"x");
        assert_eq!(source(&v6), Some(IpAddr::V6(a)));
        assert_eq!(destination(&v6), Some(IpAddr::V6(b)));
        assert_eq!(destination(&v4[..19]), None);
        assert_eq!(destination(&[]), None);
    }

    #[test]
    fn unreachable_v4_quotes_header_and_8_bytes_with_valid_checksums() {
        let mut original = echo_request_v4([10, 0, 0, 1], [10, 0, 0, 9]);
        original.extend_from_slice(&[0xaa; 100]);
        let total = original.len() as u16;
        original[2..4].copy_from_slice(&total.to_be_bytes());
        let mut out = [0u8; 1500];
        let n = unreachable(&original, &mut out).expect("an error is due");
        let reply = &out[..n];
        assert_eq!(n, 20 + 8 + 20 + 8);
        assert_eq!(check(reply), Ok(4));
        assert_eq!(source(reply), Some("10.0.0.9".parse().unwrap()));
        assert_eq!(destination(reply), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(reply[9], PROTO_ICMP);
        assert_eq!(&reply[20..22], &[3, 1]);
        assert_eq!(naive_checksum(&reply[..20]), 0);
        assert_eq!(naive_checksum(&reply[20..]), 0);
        assert_eq!(&reply[28..], &original[..28]);
    }

    #[test]
    fn unreachable_v4_is_never_sent_about_errors_fragments_or_broadcasts() {
        let mut out = [0u8; 1500];
        let mut error = echo_request_v4([10, 0, 0, 1], [10, 0, 0, 9]);
        error[20] = 3; // an ICMP destination unreachable itself
        assert_eq!(unreachable(&error, &mut out), None);
        let mut fragment = echo_request_v4([10, 0, 0, 1], [10, 0, 0, 9]);
        fragment[6..8].copy_from_slice(&[0x00, 0x10]);
        assert_eq!(unreachable(&fragment, &mut out), None);
        for dst in [[224, 0, 0, 1], [255, 255, 255, 255], [0, 0, 0, 0]] {
            assert_eq!(unreachable(&echo_request_v4([10, 0, 0, 1], dst), &mut out), None);
        }
        let original = echo_request_v4([10, 0, 0, 1], [10, 0, 0, 9]);
        assert_eq!(unreachable(&original, &mut out[..40]), None, "too small a buffer");
    }

    #[test]
    fn unreachable_v4_needs_a_whole_header_and_may_quote_a_bare_one() {
        let mut out = [0u8; 1500];
        let mut original = echo_request_v4([10, 0, 0, 1], [10, 0, 0, 9]);
        original[9] = 17; // UDP: no ICMP rule may be what refuses these
        let mut short_ihl = original.clone();
        short_ihl[0] = 0x44; // a 16-byte header
        assert_eq!(unreachable(&short_ihl, &mut out), None);
        let mut long_ihl = original.clone();
        long_ihl[0] = 0x4f; // a 60-byte header in a 32-byte packet
        assert_eq!(unreachable(&long_ihl, &mut out), None);
        let mut udp_header_only = original[..20].to_vec();
        udp_header_only[9] = 17;
        assert_eq!(unreachable(&udp_header_only, &mut out), Some(20 + 8 + 20), "20 bytes: quoted whole");
    }

    #[test]
    fn unreachable_v6_has_a_valid_pseudo_header_checksum() {
        let (a, b): (Ipv6Addr, Ipv6Addr) = ("fd00::1".parse().unwrap(), "fd00::9".parse().unwrap());
        let original = udp_v6(a, b, &[0x55; 2000]);
        let mut out = [0u8; 1500];
        let n = unreachable(&original, &mut out).expect("an error is due");
        let reply = &out[..n];
        assert_eq!(n, IPV6_MIN_MTU);
        assert_eq!(check(reply), Ok(6));
        assert_eq!(source(reply), Some(IpAddr::V6(b)));
        assert_eq!(destination(reply), Some(IpAddr::V6(a)));
        assert_eq!(&reply[40..42], &[1, 3]);
        // Independent computation: checksum over pseudo-header + ICMPv6 message is 0.
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&reply[8..40]);
        pseudo.extend_from_slice(&((n - 40) as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, PROTO_ICMPV6]);
        pseudo.extend_from_slice(&reply[40..]);
        assert_eq!(naive_checksum(&pseudo), 0);
        assert_eq!(&reply[48..], &original[..n - 48]);
    }

    #[test]
    fn unreachable_v6_is_never_sent_about_errors_or_multicast() {
        let mut out = [0u8; 1500];
        let a: Ipv6Addr = "fd00::1".parse().unwrap();
        let multicast = udp_v6(a, "ff02::1".parse().unwrap(), b"x");
        assert_eq!(unreachable(&multicast, &mut out), None);
        let mut error = udp_v6(a, "fd00::9".parse().unwrap(), b"x");
        error[6] = PROTO_ICMPV6;
        error[40] = 1;
        assert_eq!(unreachable(&error, &mut out), None);
        // Each of the four addresses alone forbids an error.
        let b: Ipv6Addr = "fd00::9".parse().unwrap();
        for (src, dst) in [
            (Ipv6Addr::UNSPECIFIED, b),
            ("ff02::1".parse().unwrap(), b),
            (a, Ipv6Addr::UNSPECIFIED),
            (a, "ff02::1".parse().unwrap()),
        ] {
            assert_eq!(unreachable(&udp_v6(src, dst, b"x"), &mut out), None, "{src} -> {dst}");
        }
    }

    #[test]
    fn unreachable_v6_answers_queries_and_bare_headers() {
        let mut out = [0u8; 1500];
        let (a, b): (Ipv6Addr, Ipv6Addr) = ("fd00::1".parse().unwrap(), "fd00::9".parse().unwrap());
        let mut echo_request = udp_v6(a, b, b"x");
        echo_request[6] = PROTO_ICMPV6;
        echo_request[40] = 128; // the first informational type
        assert_eq!(unreachable(&echo_request, &mut out), Some(40 + 8 + echo_request.len()));
        let mut no_next_header = udp_v6(a, b, b"")[..40].to_vec();
        no_next_header[4..6].copy_from_slice(&[0, 0]);
        no_next_header[6] = 59;
        assert_eq!(unreachable(&no_next_header, &mut out), Some(40 + 8 + 40));
    }

    /// An extension header of type `kind`, `size` bytes, `length` in its length field, its body
    /// 0x80 bytes: a walk that got a length wrong would land on them and read an informational
    /// ICMPv6 type or an unknown protocol, and answer where it must not.
    fn extension(kind: u8, length: u8, size: usize) -> (u8, Vec<u8>) {
        let mut header = vec![0x80; size];
        header[1] = length;
        (kind, header)
    }

    /// A fragment header at `offset` (8-octet units) with the more-fragments flag `more`.
    fn fragment(offset: u16, more: bool) -> (u8, Vec<u8>) {
        let mut header = vec![0, 0, 0, 0, 0x80, 0x80, 0x80, 0x80];
        header[2..4].copy_from_slice(&(offset << 3 | u16::from(more)).to_be_bytes());
        (FRAGMENT, header)
    }

    /// One of each extension header (Destination Options twice), each a size its length field
    /// must be read right for: 16-byte options, a 16-byte authentication header.
    fn every_extension() -> Vec<(u8, Vec<u8>)> {
        vec![
            extension(HOP_BY_HOP, 1, 16),
            extension(DESTINATION_OPTIONS, 0, 8),
            extension(ROUTING, 0, 8),
            fragment(0, true),
            extension(AUTHENTICATION, 2, 16),
            extension(DESTINATION_OPTIONS, 1, 16),
        ]
    }

    /// An IPv6 packet fd00::1 -> fd00::9: the fixed header, `chain` (next-header bytes filled in
    /// here), then `upper` with `payload`; the payload length field set.
    fn v6_with_chain(chain: &[(u8, Vec<u8>)], upper: u8, payload: &[u8]) -> Vec<u8> {
        let (a, b): (Ipv6Addr, Ipv6Addr) = ("fd00::1".parse().unwrap(), "fd00::9".parse().unwrap());
        let mut p = udp_v6(a, b, b"")[..IPV6_HEADER_LEN].to_vec();
        let kinds: Vec<u8> = chain.iter().map(|(kind, _)| *kind).chain([upper]).collect();
        p[6] = kinds[0];
        for ((_, header), next) in chain.iter().zip(&kinds[1..]) {
            p.push(*next);
            p.extend_from_slice(&header[1..]);
        }
        p.extend_from_slice(payload);
        let payload_len = (p.len() - IPV6_HEADER_LEN) as u16;
        p[4..6].copy_from_slice(&payload_len.to_be_bytes());
        p
    }

    /// An ICMPv6 message of `icmp_type` followed by bytes that read as informational types.
    fn icmpv6(icmp_type: u8) -> Vec<u8> {
        [&[icmp_type, 0, 0, 0, 0, 0, 0, 0][..], &[0x80; 24]].concat()
    }

    #[test]
    fn unreachable_v6_finds_an_icmpv6_error_behind_extension_headers() {
        let mut out = [0u8; 1500];
        let mut chains: Vec<Vec<(u8, Vec<u8>)>> = every_extension().into_iter().map(|h| vec![h]).collect();
        chains.push(every_extension());
        for chain in &chains {
            let kinds: Vec<u8> = chain.iter().map(|(kind, _)| *kind).collect();
            for error_type in [1, 2, 3, 4, 127] {
                let error = v6_with_chain(chain, PROTO_ICMPV6, &icmpv6(error_type));
                assert_eq!(unreachable(&error, &mut out), None, "ICMPv6 type {error_type} behind {kinds:?}");
            }
            let echo = v6_with_chain(chain, PROTO_ICMPV6, &icmpv6(128));
            let n =
                unreachable(&echo, &mut out).unwrap_or_else(|| panic!("an echo request behind {kinds:?}"));
            assert_eq!(&out[48..n], &echo[..], "the whole original is quoted");
            assert_eq!(check(&out[..n]), Ok(6));
            let udp = v6_with_chain(chain, 17, &[0x80; 16]);
            assert_eq!(unreachable(&udp, &mut out), Some(48 + udp.len()), "UDP behind {kinds:?}");
        }
    }

    #[test]
    fn unreachable_v6_is_never_sent_about_a_non_first_fragment() {
        let mut out = [0u8; 1500];
        let hop_by_hop = extension(HOP_BY_HOP, 0, 8);
        for (offset, more) in [(1, false), (1, true), (185, true), (0x1fff, false)] {
            for chain in [vec![fragment(offset, more)], vec![hop_by_hop.clone(), fragment(offset, more)]] {
                let packet = v6_with_chain(&chain, 17, &[0x80; 16]);
                assert_eq!(unreachable(&packet, &mut out), None, "offset {offset}, more {more}");
            }
        }
        // The first fragment, and an atomic fragment (offset 0, no more), may draw an error.
        for more in [true, false] {
            let packet = v6_with_chain(&[fragment(0, more)], 17, &[0x80; 16]);
            assert_eq!(unreachable(&packet, &mut out), Some(48 + packet.len()), "more {more}");
        }
    }

    #[test]
    fn unreachable_v6_is_never_sent_when_the_chain_runs_past_the_packet() {
        let mut out = [0u8; 1500];
        // A length field that claims more than there is: 88 bytes of options in 24.
        let long = v6_with_chain(&[extension(HOP_BY_HOP, 10, 8)], 17, &[0x80; 16]);
        assert_eq!(unreachable(&long, &mut out), None);
        let long_auth = v6_with_chain(&[extension(AUTHENTICATION, 9, 8)], 17, &[0x80; 16]);
        assert_eq!(unreachable(&long_auth, &mut out), None);
        // A header cut short: each prefix of a chain that holds the whole of no header after the
        // fixed one. Cut right after a header, the next one (or the ICMPv6 type) is missing.
        let whole = v6_with_chain(&every_extension(), PROTO_ICMPV6, &icmpv6(128));
        let chain_end = IPV6_HEADER_LEN + every_extension().iter().map(|(_, h)| h.len()).sum::<usize>();
        for cut in IPV6_HEADER_LEN..=chain_end {
            assert_eq!(unreachable(&whole[..cut], &mut out), None, "cut at {cut}");
        }
        assert!(unreachable(&whole[..chain_end + 1], &mut out).is_some(), "the ICMPv6 type is there");
        // A chain that ends exactly at the end of the packet is whole.
        let no_next_header = v6_with_chain(&every_extension(), 59, b"");
        assert_eq!(unreachable(&no_next_header, &mut out), Some(48 + no_next_header.len()));
    }

    #[test]
    fn unreachable_v6_walks_at_most_eight_extension_headers() {
        let mut out = [0u8; 1500];
        let options = extension(DESTINATION_OPTIONS, 0, 8);
        let eight = v6_with_chain(&vec![options.clone(); 8], PROTO_ICMPV6, &icmpv6(128));
        assert_eq!(unreachable(&eight, &mut out), Some(48 + eight.len()));
        let nine = v6_with_chain(&vec![options; 9], PROTO_ICMPV6, &icmpv6(128));
        assert_eq!(unreachable(&nine, &mut out), None);
    }

    #[test]
    fn unreachable_limited_asks_only_about_packets_an_error_may_answer() {
        let mut out = [0u8; 1500];
        let echo = echo_request_v4([10, 0, 0, 1], [10, 0, 0, 9]);
        let v6_echo = v6_with_chain(&every_extension(), PROTO_ICMPV6, &icmpv6(128));
        for packet in [&echo, &v6_echo] {
            let mut asked = 0;
            let refused = unreachable_limited(packet, &mut out, || {
                asked += 1;
                false
            });
            assert_eq!((refused, asked), (None, 1), "the limit refuses: no error");
            let mut expected = [0u8; 1500];
            let n = unreachable(packet, &mut expected);
            assert!(n.is_some());
            assert_eq!(unreachable_limited(packet, &mut out, || true), n);
            assert_eq!(out, expected, "with a token, the same error");
        }
        let mut icmp_error = echo.clone();
        icmp_error[20] = 3;
        let v6_error = v6_with_chain(&every_extension(), PROTO_ICMPV6, &icmpv6(1));
        let multicast = echo_request_v4([10, 0, 0, 1], [224, 0, 0, 1]);
        for packet in [&icmp_error[..], &v6_error, &multicast, &v6_error[..50]] {
            let never = || -> bool { panic!("asked about a packet no error may answer") };
            assert_eq!(unreachable_limited(packet, &mut out, never), None);
        }
        let never = || -> bool { panic!("asked though the error does not fit") };
        assert_eq!(unreachable_limited(&echo, &mut out[..40], never), None);
    }
}
