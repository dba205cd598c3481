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
/// IP protocol numbers of TCP and UDP.
pub(crate) const PROTO_TCP: u8 = 6;
pub(crate) const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;
/// Length of a UDP header.
pub(crate) const UDP_HEADER_LEN: usize = 8;
/// Length of a TCP header without options.
pub(crate) const TCP_HEADER_LEN: usize = 20;
/// Bits of the TCP flags byte (offset 13).
const TCP_SYN: u8 = 0x02;
pub(crate) const TCP_FIN: u8 = 0x01;
pub(crate) const TCP_PSH: u8 = 0x08;
pub(crate) const TCP_ACK: u8 = 0x10;
pub(crate) const TCP_CWR: u8 = 0x80;
/// TCP option kinds (RFC 9293 §3.1): end of list, no-operation, maximum segment size.
const TCP_OPTION_END: u8 = 0;
const TCP_OPTION_NOP: u8 = 1;
const TCP_OPTION_MSS: u8 = 2;
/// Length of the MSS option: kind, length, a 16-bit value.
const TCP_OPTION_MSS_LEN: usize = 4;
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

/// One's-complement sum of 16-bit big-endian words (RFC 1071), folded to 16 bits but not
/// inverted. A trailing odd byte counts as the high byte of a last word padded with zero.
fn sum_words(data: &[u8]) -> u32 {
    u32::from(fold16(sum_native(data)))
}

/// Adds `data` as 32-bit words in native byte order into four 64-bit accumulators: no carry
/// is lost below 2^32 words (16 GiB), far beyond any packet, and the compiler vectorises the
/// unrolled loop. Folding the total to 16 bits gives the one's-complement sum of the 16-bit
/// words in native order (RFC 1071 §2(B): byte order only swaps the folded result); a tail
/// shorter than 16 bytes is padded with zeros, so an odd last byte is a word's first byte.
fn sum_native(data: &[u8]) -> u64 {
    let word = |c: &[u8; 16], i: usize| u64::from(u32::from_ne_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]));
    let (chunks, tail) = data.as_chunks::<16>();
    let mut acc = [0u64; 4];
    for chunk in chunks {
        for (lane, sum) in acc.iter_mut().enumerate() {
            *sum += word(chunk, lane * 4);
        }
    }
    let mut last = [0u8; 16];
    last[..tail.len()].copy_from_slice(tail);
    for (lane, sum) in acc.iter_mut().enumerate() {
        *sum += word(&last, lane * 4);
    }
    // Each lane is below 2^62 here; fold them to 32 bits before adding them up.
    acc.iter().map(|&sum| (sum & 0xffff_ffff) + (sum >> 32)).sum()
}

/// Folds a native-order sum to the 16-bit one's-complement sum of big-endian words.
fn fold16(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    u16::from_be(sum as u16)
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

/// An Internet checksum built from several pieces (a pseudo-header, a header, a payload that lie
/// apart), as if they were one contiguous run of bytes: a piece that follows an odd number of
/// bytes has its sum byte-swapped (RFC 1071 §2(B)), so pieces of any length may follow.
#[derive(Clone, Copy, Debug, Default)]
pub struct Checksum {
    sum: u32,
    odd: bool,
}

impl Checksum {
    /// Adds the next piece of bytes.
    pub fn add(&mut self, data: &[u8]) -> &mut Self {
        let sum = sum_words(data) as u16;
        self.sum += u32::from(if self.odd { sum.swap_bytes() } else { sum });
        self.sum = (self.sum & 0xffff) + (self.sum >> 16);
        self.odd ^= data.len() % 2 == 1;
        self
    }

    /// Adds a 16-bit big-endian word (a pseudo-header field).
    pub fn add_u16(&mut self, word: u16) -> &mut Self {
        self.add(&word.to_be_bytes())
    }

    /// The checksum of everything added: the complement of the folded sum.
    pub fn finish(&self) -> u16 {
        fold(self.sum)
    }
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
/// the upper-layer header: returns its protocol and offset, or `None` when there is no
/// upper-layer header to read: a non-first fragment, a chain that runs past the packet, or one
/// longer than [`MAX_EXTENSION_HEADERS`] (no error answers those, and no MSS is clamped in
/// them). Every read is bounds-checked.
fn upper_layer_v6(packet: &[u8]) -> Option<(u8, usize, Authenticated)> {
    let mut protocol = packet[6];
    let mut offset = IPV6_HEADER_LEN;
    let mut authenticated = Authenticated(false);
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
            AUTHENTICATION => {
                authenticated = Authenticated(true);
                (usize::from(*packet.get(offset + 1)?) + 2) * 4
            }
            upper => return Some((upper, offset, authenticated)),
        };
        protocol = *packet.get(offset)?;
        offset += len;
        if offset > packet.len() {
            return None;
        }
    }
    None
}

/// Whether an IPv6 packet's extension headers include an Authentication Header (RFC 4302),
/// whose integrity check covers what follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Authenticated(bool);

fn unreachable_v6(original: &[u8], out: &mut [u8], allow: impl FnOnce() -> bool) -> Option<usize> {
    let IpAddr::V6(src) = source(original)? else { return None };
    let IpAddr::V6(dst) = destination(original)? else { return None };
    if src.is_unspecified() || src.is_multicast() || dst.is_unspecified() || dst.is_multicast() {
        return None;
    }
    // `destination` read the last bytes of the fixed header: all 40 are there.
    let (protocol, offset, _) = upper_layer_v6(original)?;
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

/// Lowers the MSS option of a TCP SYN or SYN-ACK in `packet` (IPv4, or IPv6 behind up to
/// [`MAX_EXTENSION_HEADERS`] extension headers, none of them an Authentication Header, whose
/// check covers the segment) to what fits a tunnel of `mtu` bytes:
/// `mtu - 40` for IPv4, `mtu - 60` for IPv6 (the fixed headers, IPv6's being longer). Then
/// neither end sends a segment too big for the tunnel, even where the ICMP "fragmentation
/// needed" that would tell it so is filtered (an MTU black hole). The TCP checksum is updated
/// incrementally (RFC 1624); nothing else changes, so the packet stays what the FOU direct
/// format carries.
///
/// Returns whether the packet changed. Everything else is left as it is: packets that are not
/// a TCP SYN (told with a few byte compares, since every packet is asked), IPv4 fragments after
/// the first, an MSS already low enough, and malformed options (a length below 2 or past the
/// header, an MSS option not 4 bytes long). Every MSS option is lowered, since a receiver may
/// take any of them.
pub fn clamp_mss(packet: &mut [u8], mtu: u16) -> bool {
    let (tcp, fixed_headers) = match packet.first().map(|b| b >> 4) {
        Some(4) => {
            if packet.len() < IPV4_HEADER_LEN || packet[9] != PROTO_TCP || read_u16(packet, 6) & 0x1fff != 0 {
                return false;
            }
            let header_len = usize::from(packet[0] & 0x0f) * 4;
            if header_len < IPV4_HEADER_LEN {
                return false;
            }
            (header_len, IPV4_HEADER_LEN + TCP_HEADER_LEN)
        }
        Some(6) if packet.len() >= IPV6_HEADER_LEN => match upper_layer_v6(packet) {
            // An Authentication Header covers the segment: a changed MSS would fail its check.
            Some((PROTO_TCP, offset, Authenticated(false))) => (offset, IPV6_HEADER_LEN + TCP_HEADER_LEN),
            _ => return false,
        },
        _ => return false,
    };
    let Some(segment) = packet.get_mut(tcp..) else { return false };
    if segment.len() < TCP_HEADER_LEN || segment[13] & TCP_SYN == 0 {
        return false;
    }
    let data_offset = usize::from(segment[12] >> 4) * 4;
    if data_offset < TCP_HEADER_LEN {
        return false;
    }
    let Some(header) = segment.get_mut(..data_offset) else { return false };
    let (fixed, options) = header.split_at_mut(TCP_HEADER_LEN);
    let limit = mtu.saturating_sub(fixed_headers as u16);
    // A first walk checks every option and looks for an MSS to lower; only then, a second
    // changes what the first found, so a malformed list is never half changed.
    let mut too_high = false;
    if !mss_options(options, |_, value| too_high |= u16::from_be_bytes(*value) > limit) || !too_high {
        return false;
    }
    let mut sum = u32::from(!read_u16(fixed, 16));
    mss_options(options, |at, value| {
        let old = u16::from_be_bytes(*value);
        if old > limit {
            *value = limit.to_be_bytes();
            // RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'). The options start at an even offset of the
            // segment; a value at an odd one straddles two checksum words, where its bytes
            // count swapped (RFC 1071 §2(B): the sum is byte-order independent).
            let (old, new) = if at % 2 == 0 { (old, limit) } else { (old.swap_bytes(), limit.swap_bytes()) };
            sum += u32::from(!old) + u32::from(new);
        }
    });
    fixed[16..18].copy_from_slice(&fold(sum).to_be_bytes());
    true
}

/// Walks the options of a TCP header (RFC 9293 §3.1), calling `on_mss` with the offset and the
/// value of each MSS option. Returns `false`, having stopped there, at a malformed option.
fn mss_options(options: &mut [u8], mut on_mss: impl FnMut(usize, &mut [u8; 2])) -> bool {
    let mut at = 0;
    while let Some(&kind) = options.get(at) {
        match kind {
            TCP_OPTION_END => break,
            TCP_OPTION_NOP => at += 1,
            _ => {
                let Some(&len) = options.get(at + 1) else { return false };
                let len = usize::from(len);
                if len < 2
                    || at + len > options.len()
                    || (kind == TCP_OPTION_MSS && len != TCP_OPTION_MSS_LEN)
                {
                    return false;
                }
                if kind == TCP_OPTION_MSS
                    && let Some(value) = options[at + 2..at + len].first_chunk_mut::<2>()
                {
                    on_mss(at + 2, value);
                }
                at += len;
            }
        }
    }
    true
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
    pub(crate) fn naive_checksum(data: &[u8]) -> u16 {
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

    /// The [`naive_checksum`] of an IPv4 or IPv6 (fixed header) packet's TCP/UDP segment as it
    /// stands, with its pseudo-header: 0 when its checksum field is right, the value to store
    /// when that field is zero.
    pub(crate) fn l4_checksum(packet: &[u8]) -> u16 {
        let (ip_len, protocol, addresses) = match packet[0] >> 4 {
            4 => (usize::from(packet[0] & 15) * 4, packet[9], &packet[12..20]),
            _ => (40, packet[6], &packet[8..40]),
        };
        let l4 = &packet[ip_len..];
        let mut pseudo = addresses.to_vec();
        pseudo.extend_from_slice(&[0, protocol]);
        pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(l4);
        naive_checksum(&pseudo)
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
    fn checksum_matches_naive_at_every_length_and_alignment() {
        let data: Vec<u8> = (0..2100u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for start in 0..4 {
            for len in 0..=2000 {
                let piece = &data[start..start + len];
                assert_eq!(checksum(piece), naive_checksum(piece), "start {start} len {len}");
            }
        }
    }

    #[test]
    fn checksum_of_pieces_equals_checksum_of_their_concatenation() {
        let data: Vec<u8> = (0..1500u32).map(|i| (i * 31 % 253) as u8).collect();
        for (a, b) in [(0, 0), (1, 1), (1, 2), (3, 700), (20, 21), (41, 1000), (1499, 1500)] {
            let mut sum = Checksum::default();
            sum.add(&data[..a]).add(&data[a..b]).add(&data[b..]);
            assert_eq!(sum.finish(), naive_checksum(&data), "cut at {a} and {b}");
        }
        let mut words = Checksum::default();
        words.add(&[0xab]).add_u16(0x1234).add(&[0xcd]);
        assert_eq!(words.finish(), naive_checksum(&[0xab, 0x12, 0x34, 0xcd]));
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

    const SYN: u8 = TCP_SYN;
    const SYN_ACK: u8 = TCP_SYN | ACK;
    const ACK: u8 = 0x10;

    /// The options Linux puts on a SYN: MSS 1460, SACK permitted, timestamps, NOP, window scale.
    const LINUX_OPTIONS: [u8; 20] = [2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 1, 2, 3, 0, 0, 0, 0, 1, 3, 3, 7];

    /// An MSS option with `mss`.
    fn mss_option(mss: u16) -> Vec<u8> {
        [&[TCP_OPTION_MSS, 4][..], &mss.to_be_bytes()].concat()
    }

    /// A TCP segment 40000 -> 443 with `flags`, `options` (padded with end-of-list to a multiple
    /// of 4) and 7 bytes of data (an odd length, as the checksum must handle); checksum zero.
    fn tcp_segment(flags: u8, options: &[u8]) -> Vec<u8> {
        let mut options = options.to_vec();
        options.resize(options.len().next_multiple_of(4), TCP_OPTION_END);
        let data_offset = ((TCP_HEADER_LEN + options.len()) / 4) as u8;
        let mut segment = vec![0x9c, 0x40, 0x01, 0xbb, 0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0];
        segment.extend_from_slice(&[data_offset << 4, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
        segment.extend_from_slice(&options);
        segment.extend_from_slice(b"payload");
        segment
    }

    /// The TCP checksum of the segment at `tcp` (to the end of `packet`) and its pseudo-header,
    /// computed afresh: 0 when the checksum field is right.
    fn tcp_checksum(packet: &[u8], tcp: usize) -> u16 {
        let length = packet.len() - tcp;
        let pseudo = match packet[0] >> 4 {
            4 => [&packet[12..20], &[0, PROTO_TCP], &(length as u16).to_be_bytes()].concat(),
            _ => [&packet[8..40], &(length as u32).to_be_bytes(), &[0, 0, 0, PROTO_TCP]].concat(),
        };
        naive_checksum(&[&pseudo, &packet[tcp..]].concat())
    }

    /// `packet` with the TCP checksum of its segment at `tcp` set.
    fn with_tcp_checksum(mut packet: Vec<u8>, tcp: usize) -> Vec<u8> {
        packet[tcp + 16..tcp + 18].copy_from_slice(&[0, 0]);
        let sum = tcp_checksum(&packet, tcp);
        packet[tcp + 16..tcp + 18].copy_from_slice(&sum.to_be_bytes());
        packet
    }

    /// An IPv4 packet 10.0.0.1 -> 10.0.0.2 with `ip_options` carrying `segment` as TCP, both
    /// checksums set. Returns it and the offset of the segment.
    fn tcp_v4(ip_options: &[u8], segment: &[u8]) -> (Vec<u8>, usize) {
        let mut p = echo_request_v4([10, 0, 0, 1], [10, 0, 0, 2])[..IPV4_HEADER_LEN].to_vec();
        p.extend_from_slice(ip_options);
        let tcp = p.len();
        p[0] = 0x40 | (tcp / 4) as u8;
        p[9] = PROTO_TCP;
        p[2..4].copy_from_slice(&((tcp + segment.len()) as u16).to_be_bytes());
        p[10..12].copy_from_slice(&[0, 0]);
        let sum = checksum(&p);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p.extend_from_slice(segment);
        (with_tcp_checksum(p, tcp), tcp)
    }

    /// An IPv6 packet fd00::1 -> fd00::9 behind `chain` carrying `segment` as TCP, checksum set.
    fn tcp_v6(chain: &[(u8, Vec<u8>)], segment: &[u8]) -> (Vec<u8>, usize) {
        let p = v6_with_chain(chain, PROTO_TCP, segment);
        let tcp = p.len() - segment.len();
        (with_tcp_checksum(p, tcp), tcp)
    }

    /// Clamps a copy of `packet` for a tunnel of `mtu` bytes: whether it changed, and the copy.
    fn clamped(packet: &[u8], mtu: u16) -> (bool, Vec<u8>) {
        let mut copy = packet.to_vec();
        (clamp_mss(&mut copy, mtu), copy)
    }

    /// Asserts that `after` is `before` with the MSS values at `values` set to `mss`, the TCP
    /// checksum (at `tcp`) changed to what a computation afresh finds, and nothing else changed.
    fn assert_lowered(before: &[u8], after: &[u8], tcp: usize, values: &[usize], mss: u16) {
        assert_eq!(tcp_checksum(before, tcp), 0, "the test packet's checksum is right");
        assert_eq!(tcp_checksum(after, tcp), 0, "the checksum is right after clamping");
        for &at in values {
            assert_eq!(read_u16(after, at), mss, "the MSS at {at}");
        }
        let allowed: Vec<usize> =
            values.iter().flat_map(|&at| [at, at + 1]).chain([tcp + 16, tcp + 17]).collect();
        let changed: Vec<usize> = (0..before.len()).filter(|&i| before[i] != after[i]).collect();
        assert!(changed.iter().all(|i| allowed.contains(i)), "changed {changed:?}, may change {allowed:?}");
        assert_eq!(before.len(), after.len());
    }

    #[test]
    fn clamp_mss_lowers_syns_and_syn_acks_over_ipv4() {
        for flags in [SYN, SYN_ACK] {
            let (syn, tcp) = tcp_v4(&[], &tcp_segment(flags, &LINUX_OPTIONS));
            for (mtu, mss) in [(1472, 1432), (1400, 1360), (576, 536)] {
                let (changed, after) = clamped(&syn, mtu);
                assert!(changed, "flags {flags:#x}, mtu {mtu}");
                assert_lowered(&syn, &after, tcp, &[tcp + 22], mss);
                assert_eq!(check(&after), Ok(4), "the IP header is untouched");
            }
        }
    }

    #[test]
    fn clamp_mss_leaves_an_mss_that_fits_and_a_syn_without_one() {
        for mss in [536, 1432] {
            let options = [&mss_option(mss)[..], &LINUX_OPTIONS[4..]].concat();
            let (syn, _) = tcp_v4(&[], &tcp_segment(SYN, &options));
            assert_eq!(clamped(&syn, 1472), (false, syn.clone()), "MSS {mss}");
        }
        let (no_mss, _) = tcp_v4(&[], &tcp_segment(SYN, &LINUX_OPTIONS[4..]));
        assert_eq!(clamped(&no_mss, 1472), (false, no_mss.clone()));
        let (no_options, _) = tcp_v4(&[], &tcp_segment(SYN, &[]));
        assert_eq!(clamped(&no_options, 1472), (false, no_options.clone()));
    }

    #[test]
    fn clamp_mss_updates_the_checksum_at_either_alignment_and_any_value() {
        // NOPs before the MSS put its value at odd and even offsets; options after it as well.
        for nops in 0..4 {
            for mss in [1433, 9000, 0x8000, 0xffff] {
                for flags in [SYN, SYN_ACK] {
                    let options =
                        [&vec![TCP_OPTION_NOP; nops][..], &mss_option(mss), &LINUX_OPTIONS[4..]].concat();
                    let (syn, tcp) = tcp_v4(&[], &tcp_segment(flags, &options));
                    let (changed, after) = clamped(&syn, 1472);
                    assert!(changed, "{nops} NOPs, MSS {mss}");
                    assert_lowered(&syn, &after, tcp, &[tcp + 20 + nops + 2], 1432);
                }
            }
        }
        // The MSS last, after timestamps and window scale.
        let options = [&LINUX_OPTIONS[4..], &[TCP_OPTION_NOP][..], &mss_option(1460)].concat();
        let (syn, tcp) = tcp_v4(&[], &tcp_segment(SYN, &options));
        let (changed, after) = clamped(&syn, 1472);
        assert!(changed);
        assert_lowered(&syn, &after, tcp, &[tcp + 20 + 16 + 1 + 2], 1432);
    }

    #[test]
    fn clamp_mss_lowers_every_mss_option() {
        let options = [mss_option(1460), vec![TCP_OPTION_NOP], mss_option(1500)].concat();
        let (syn, tcp) = tcp_v4(&[], &tcp_segment(SYN, &options));
        let (changed, after) = clamped(&syn, 1472);
        assert!(changed);
        assert_lowered(&syn, &after, tcp, &[tcp + 22, tcp + 27], 1432);
    }

    #[test]
    fn clamp_mss_finds_tcp_behind_ipv4_options() {
        let (syn, tcp) = tcp_v4(&[TCP_OPTION_NOP, 1, 1, 0], &tcp_segment(SYN, &LINUX_OPTIONS));
        assert_eq!(tcp, 24);
        let (changed, after) = clamped(&syn, 1472);
        assert!(changed);
        assert_lowered(&syn, &after, tcp, &[tcp + 22], 1432);
    }

    #[test]
    fn clamp_mss_touches_no_other_packet() {
        let (syn, _) = tcp_v4(&[], &tcp_segment(SYN, &LINUX_OPTIONS));
        let mut others = Vec::new();
        for flags in [ACK, 0, !TCP_SYN] {
            others.push(tcp_v4(&[], &tcp_segment(flags, &LINUX_OPTIONS)).0);
        }
        let mut udp = syn.clone();
        udp[9] = 17;
        let mut later_fragment = syn.clone();
        later_fragment[6..8].copy_from_slice(&[0x20, 0x01]); // more fragments, offset 8 bytes
        let mut short_ihl = syn.clone();
        short_ihl[0] = 0x44;
        let mut short_data_offset = syn.clone();
        short_data_offset[20 + 12] = 0x40; // 16 bytes: no room for options
        let mut long_data_offset = syn.clone();
        long_data_offset[20 + 12] = 0xf0; // 60 bytes: past the packet
        let mut version_5 = syn.clone();
        version_5[0] = 0x55;
        others.extend([udp, later_fragment, short_ihl, short_data_offset, long_data_offset, version_5]);
        for packet in &others {
            assert_eq!(clamped(packet, 1472), (false, packet.clone()), "{packet:02x?}");
        }
        // The first fragment holds the TCP header: it is clamped.
        let mut first_fragment = syn.clone();
        first_fragment[6..8].copy_from_slice(&[0x20, 0x00]);
        assert!(clamped(&first_fragment, 1472).0);
    }

    #[test]
    fn clamp_mss_leaves_malformed_options_alone() {
        let mss = mss_option(1460);
        let timestamps = &LINUX_OPTIONS[6..16];
        for options in [
            [&mss[..], &[8, 0]].concat(),                // a length of 0 after the MSS
            [&[8, 1][..], &mss].concat(),                // a length of 1 before it
            vec![2, 3, 0x05, 0xb4],                      // an MSS option 3 bytes long
            vec![2, 5, 0x05, 0xb4, 0],                   // and 5
            [&mss[..], timestamps, &[3, 9, 7]].concat(), // window scale past the header
            [&mss[..], &[1, 1, 1, 8]].concat(),          // a kind with no length byte
        ] {
            let (syn, _) = tcp_v4(&[], &tcp_segment(SYN, &options));
            assert_eq!(clamped(&syn, 1472), (false, syn.clone()), "options {options:?}");
        }
        // What follows the end of the list is no option.
        let (after_end, _) = tcp_v4(&[], &tcp_segment(SYN, &[&[0, 0, 0, 0][..], &mss].concat()));
        assert_eq!(clamped(&after_end, 1472), (false, after_end.clone()));
    }

    #[test]
    fn clamp_mss_changes_a_cut_packet_only_when_its_tcp_header_is_whole() {
        let (syn, tcp) = tcp_v4(&[], &tcp_segment(SYN, &LINUX_OPTIONS));
        let unauthenticated: Vec<_> =
            every_extension().into_iter().filter(|(k, _)| *k != AUTHENTICATION).collect();
        let (v6, tcp_v6) = tcp_v6(&unauthenticated, &tcp_segment(SYN, &LINUX_OPTIONS));
        for (packet, tcp) in [(syn, tcp), (v6, tcp_v6)] {
            for cut in 0..=packet.len() {
                let (changed, after) = clamped(&packet[..cut], 1280);
                assert_eq!(changed, cut >= tcp + 20 + LINUX_OPTIONS.len(), "cut at {cut}");
                assert_eq!(changed, after != packet[..cut]);
            }
        }
    }

    #[test]
    fn clamp_mss_lowers_ipv6_syns_to_mtu_minus_60_behind_extension_headers() {
        let mut chains: Vec<Vec<(u8, Vec<u8>)>> = every_extension().into_iter().map(|h| vec![h]).collect();
        chains.push(vec![]);
        chains.push(every_extension());
        let options = [&mss_option(1440)[..], &LINUX_OPTIONS[4..]].concat();
        for chain in &chains {
            let kinds: Vec<u8> = chain.iter().map(|(kind, _)| *kind).collect();
            let (syn, tcp) = tcp_v6(chain, &tcp_segment(SYN, &options));
            if kinds.contains(&AUTHENTICATION) {
                // AH's integrity check covers the segment: left alone, or the SYN would be dropped.
                assert_eq!(clamped(&syn, 1452), (false, syn.clone()), "behind {kinds:?}");
                continue;
            }
            let (changed, after) = clamped(&syn, 1452);
            assert!(changed, "behind {kinds:?}");
            assert_lowered(&syn, &after, tcp, &[tcp + 22], 1392);
            assert_eq!(check(&after), Ok(6));
            assert_eq!(clamped(&syn, 1500), (false, syn.clone()), "1440 fits 1500, behind {kinds:?}");
        }
        // No TCP header to read: a later fragment, or a chain too long.
        let (later_fragment, _) = tcp_v6(&[fragment(1, false)], &tcp_segment(SYN, &options));
        assert_eq!(clamped(&later_fragment, 1452), (false, later_fragment.clone()));
        let nine = vec![extension(DESTINATION_OPTIONS, 0, 8); 9];
        let (too_long, _) = tcp_v6(&nine, &tcp_segment(SYN, &options));
        assert_eq!(clamped(&too_long, 1452), (false, too_long.clone()));
        let eight = vec![extension(DESTINATION_OPTIONS, 0, 8); 8];
        assert!(clamped(&tcp_v6(&eight, &tcp_segment(SYN, &options)).0, 1452).0);
    }

    /// One TCP option: the common ones, an MSS of any value, or any bytes (malformed options).
    fn tcp_option() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        prop_oneof![
            Just(vec![TCP_OPTION_NOP]),
            Just(vec![TCP_OPTION_END]),
            any::<u16>().prop_map(mss_option),
            Just(LINUX_OPTIONS[4..6].to_vec()),
            Just(LINUX_OPTIONS[6..16].to_vec()),
            Just(LINUX_OPTIONS[17..20].to_vec()),
            proptest::collection::vec(any::<u8>(), 0..6),
        ]
    }

    proptest::proptest! {
        /// SYNs with options in any order and number, malformed ones, bytes of the TCP header
        /// overwritten, checksums right or wrong: clamping changes the packet only where it
        /// says, keeps a right checksum right, and keeps the sum of the whole packet.
        #[test]
        fn clamp_mss_keeps_a_right_checksum_right(
            v6 in proptest::bool::ANY,
            chain in proptest::sample::subsequence(every_extension(), 0..=6),
            flags in proptest::num::u8::ANY,
            options in proptest::collection::vec(tcp_option(), 0..8),
            overwrite in proptest::collection::vec((0..60usize, proptest::num::u8::ANY), 0..3),
            mtu in 576u16..=9000,
        ) {
            let mut options = options.concat();
            options.truncate(40);
            let segment = tcp_segment(flags, &options);
            let (mut packet, tcp) = if v6 { tcp_v6(&chain, &segment) } else { tcp_v4(&[], &segment) };
            for (at, byte) in overwrite {
                if let Some(b) = packet.get_mut(tcp + at) {
                    *b = byte;
                }
            }
            let (changed, after) = clamped(&packet, mtu);
            proptest::prop_assert_eq!(changed, after != packet);
            proptest::prop_assert_eq!(checksum(&after), checksum(&packet));
            if tcp_checksum(&packet, tcp) == 0 {
                proptest::prop_assert_eq!(tcp_checksum(&after, tcp), 0);
            }
            if changed {
                proptest::prop_assert!(after[tcp + 13] & TCP_SYN != 0);
                proptest::prop_assert!(!clamped(&after, mtu).0, "clamping twice changes nothing more");
            }
        }
    }
}
