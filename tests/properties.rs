//! Property tests of the pure core against naive models.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use udptun::hosts;
use udptun::packet::{self, Malformed, Malformed::*};
use udptun::prefix::{Prefix, PrefixMap};
use udptun::split;

/// RFC 1071 the slow way: 64-bit sum of padded 16-bit words, folded once at the end.
fn naive_checksum(data: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    for (i, byte) in data.iter().enumerate() {
        sum += if i % 2 == 0 { u64::from(*byte) << 8 } else { u64::from(*byte) };
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn v4_prefix() -> impl Strategy<Value = Prefix> {
    // Few distinct networks so that prefixes nest and overlap often.
    (0u32..16, 0u8..=32).prop_map(|(net, len)| {
        let addr = Ipv4Addr::from((10 << 24) | (net << 12) | (net << 4));
        let masked = u32::from(addr) & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        format!("{}/{len}", Ipv4Addr::from(masked)).parse().unwrap()
    })
}

fn contains(prefix: &Prefix, addr: Ipv4Addr) -> bool {
    let IpAddr::V4(net) = prefix.addr() else { return false };
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix.prefix_len())).unwrap_or(0);
    u32::from(addr) & mask == u32::from(net)
}

proptest! {
    #[test]
    fn checksum_matches_the_naive_sum(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
        prop_assert_eq!(packet::checksum(&data), naive_checksum(&data));
    }

    /// Every length 0..=2000 at odd alignments (a slice starting 0-7 bytes into its buffer),
    /// and the same bytes summed in pieces cut anywhere.
    #[test]
    fn checksum_matches_the_naive_sum_at_any_alignment_and_in_pieces(
        data in proptest::collection::vec(any::<u8>(), 2008),
        len in 0usize..=2000,
        start in 0usize..8,
        cuts in (any::<prop::sample::Index>(), any::<prop::sample::Index>()),
    ) {
        let piece = &data[start..start + len];
        prop_assert_eq!(packet::checksum(piece), naive_checksum(piece));
        let (a, b) = (cuts.0.index(len + 1), cuts.1.index(len + 1));
        let (a, b) = (a.min(b), a.max(b));
        let mut sum = packet::Checksum::default();
        sum.add(&piece[..a]).add(&piece[a..b]).add(&piece[b..]);
        prop_assert_eq!(sum.finish(), naive_checksum(piece));
    }

    #[test]
    fn prefix_lookup_matches_a_linear_scan(
        entries in proptest::collection::vec((v4_prefix(), any::<u16>()), 0..40),
        queries in proptest::collection::vec((0u32..16, any::<u16>()), 1..40),
    ) {
        let mut map = PrefixMap::default();
        for (prefix, value) in &entries {
            map.insert(*prefix, *value);
        }
        for (net, host) in queries {
            let addr = Ipv4Addr::from((10 << 24) | (net << 12) | u32::from(host & 0xfff));
            // Longest matching prefix; for equal prefixes the last insertion wins.
            let expected = entries
                .iter()
                .enumerate()
                .filter(|(_, (p, _))| contains(p, addr))
                .max_by_key(|(i, (p, _))| (p.prefix_len(), *i))
                .map(|(_, (_, v))| *v);
            prop_assert_eq!(map.lookup(IpAddr::V4(addr)).copied(), expected, "{}", addr);
        }
    }

    #[test]
    fn hosts_documents_round_trip(
        entries in proptest::collection::hash_map(v4_prefix(), ("[a-z][a-z0-9-]{0,20}(\\.[a-z]{2,5})?", 1u16..), 0..30),
        quoted in any::<bool>(),
    ) {
        let entries: Vec<_> = entries.into_iter().collect();
        let body: Vec<String> = entries
            .iter()
            .map(|(prefix, (host, port))| {
                if quoted {
                    format!("\"{prefix}\": {{ \"host\": \"{host}\", \"port\": {port} }}")
                } else {
                    format!("'{prefix}' : {{ host : '{host}', port : {port} }}")
                }
            })
            .collect();
        let text = format!("{{ nodes : {{\n{}\n}} }}", body.join(",\n"));
        let parsed = hosts::parse(&text).unwrap();
        let got: Vec<(Prefix, String, u16)> = parsed.into_iter().map(|e| (e.prefix, e.host, e.port)).collect();
        let want: Vec<(Prefix, String, u16)> = entries.into_iter().map(|(p, (h, port))| (p, h, port)).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn any_bytes_are_checked_without_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        prop_assert_eq!(packet::check(&data), model_check(&data));
    }

    #[test]
    fn valid_packets_always_pass(packet in valid_packet()) {
        let version = packet[0] >> 4;
        prop_assert_eq!(packet::check(&packet), Ok(version));
        let (source, destination) = match version {
            4 => (ip(&packet[12..16]), ip(&packet[16..20])),
            _ => (ip(&packet[8..24]), ip(&packet[24..40])),
        };
        prop_assert_eq!(packet::source(&packet), Some(source));
        prop_assert_eq!(packet::destination(&packet), Some(destination));
    }
}

/// The inbound check restated from its specification: version 4 or 6; for IPv4 a header
/// length of 20 bytes or more within the datagram, a total length equal to the datagram's and a
/// header whose one's-complement sum is all ones; for IPv6 a fixed header and a payload length
/// that accounts for the rest of the datagram.
fn model_check(datagram: &[u8]) -> Result<u8, Malformed> {
    let field = |at: usize| usize::from(datagram[at]) << 8 | usize::from(datagram[at + 1]);
    match datagram.first().map(|b| b >> 4) {
        Some(4) => {
            let header_len = usize::from(datagram[0] % 16) * 4;
            if datagram.len() < 20 || !(20..=datagram.len()).contains(&header_len) {
                Err(Malformed::BadHeaderLength)
            } else if field(2) != datagram.len() {
                Err(Malformed::LengthMismatch)
            } else if naive_checksum(&datagram[..header_len]) != 0 {
                Err(Malformed::BadChecksum)
            } else {
                Ok(4)
            }
        }
        Some(6) if datagram.len() < 40 => Err(Malformed::BadHeaderLength),
        Some(6) if 40 + field(4) != datagram.len() => Err(Malformed::LengthMismatch),
        Some(6) => Ok(6),
        _ => Err(Malformed::BadVersion),
    }
}

fn ip(bytes: &[u8]) -> IpAddr {
    match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).unwrap()),
        _ => IpAddr::from(<[u8; 16]>::try_from(bytes).unwrap()),
    }
}

/// An IPv4 packet with 0 to 10 words of options and up to 300 bytes of payload, every other
/// header field random, the total length and the header checksum right.
fn valid_v4() -> impl Strategy<Value = Vec<u8>> {
    (0usize..=10, vec(any::<u8>(), 60), vec(any::<u8>(), 0..300)).prop_map(|(words, header, payload)| {
        let header_len = 20 + 4 * words;
        let mut packet = header[..header_len].to_vec();
        packet[0] = 0x40 | (header_len / 4) as u8;
        packet.extend_from_slice(&payload);
        let total = packet.len() as u16;
        packet[2..4].copy_from_slice(&total.to_be_bytes());
        packet[10..12].copy_from_slice(&[0, 0]);
        let checksum = naive_checksum(&packet[..header_len]);
        packet[10..12].copy_from_slice(&checksum.to_be_bytes());
        packet
    })
}

/// An IPv6 packet with up to 300 bytes of payload, the payload length right.
fn valid_v6() -> impl Strategy<Value = Vec<u8>> {
    (vec(any::<u8>(), 40), vec(any::<u8>(), 0..300)).prop_map(|(header, payload)| {
        let mut packet = header;
        packet[0] = 0x60 | (packet[0] & 0x0f);
        packet[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
        packet.extend_from_slice(&payload);
        packet
    })
}

fn valid_packet() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![valid_v4(), valid_v6()]
}

/// A change to a valid packet, aimed at the header more often than not.
#[derive(Clone, Debug)]
enum Mutation {
    /// XOR a byte (its offset taken modulo the length) with a non-zero mask.
    Flip(usize, u8),
    /// Cut the packet short.
    Truncate(prop::sample::Index),
    /// Append bytes.
    Extend(Vec<u8>),
    /// Set the low nibble of the first byte: the IPv4 header length (traffic class in IPv6).
    HeaderLength(u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (0usize..40, 1u8..).prop_map(|(at, mask)| Mutation::Flip(at, mask)),
        1 => (any::<usize>(), 1u8..).prop_map(|(at, mask)| Mutation::Flip(at, mask)),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        1 => vec(any::<u8>(), 1..8).prop_map(Mutation::Extend),
        1 => (0u8..16).prop_map(Mutation::HeaderLength),
    ]
}

fn apply(packet: &mut Vec<u8>, mutation: &Mutation) {
    match mutation {
        Mutation::Flip(_, _) if packet.is_empty() => {}
        Mutation::Flip(at, mask) => {
            let at = at % packet.len();
            packet[at] ^= mask;
        }
        Mutation::Truncate(_) if packet.is_empty() => {}
        Mutation::Truncate(index) => packet.truncate(index.index(packet.len())),
        Mutation::Extend(bytes) => packet.extend_from_slice(bytes),
        Mutation::HeaderLength(_) if packet.is_empty() => {}
        Mutation::HeaderLength(nibble) => packet[0] = packet[0] & 0xf0 | nibble,
    }
}

/// Valid packets, a third of them left alone and the rest mutated up to twice, through the
/// check: its verdict must be the model's. Counts the verdicts so that the test fails if the
/// accepting branch (or any rejecting one) is rarely reached, as it is with random bytes.
#[test]
fn mutated_packets_get_the_models_verdict() {
    let cases = 3000;
    // By the verdict's name (Malformed is not Hash).
    let verdicts = RefCell::new(BTreeMap::<String, usize>::new());
    let config = ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() };
    let strategy = (valid_packet(), vec(mutation(), 0..3));
    TestRunner::new(config)
        .run(&strategy, |(mut packet, mutations)| {
            for mutation in &mutations {
                apply(&mut packet, mutation);
            }
            let verdict = packet::check(&packet);
            prop_assert_eq!(verdict, model_check(&packet), "{:?} after {:?}", packet, mutations);
            if verdict.is_ok() {
                prop_assert!(packet::source(&packet).is_some() && packet::destination(&packet).is_some());
            }
            *verdicts.borrow_mut().entry(format!("{verdict:?}")).or_default() += 1;
            Ok(())
        })
        .unwrap();
    let verdicts = verdicts.into_inner();
    let count = |verdict: Result<u8, Malformed>| verdicts.get(&format!("{verdict:?}")).copied().unwrap_or(0);
    let accepted = count(Ok(4)) + count(Ok(6));
    assert!(accepted * 4 >= cases as usize, "only {accepted} of {cases} accepted: {verdicts:?}");
    for verdict in
        [Ok(4), Ok(6)].into_iter().chain([BadVersion, BadHeaderLength, LengthMismatch, BadChecksum].map(Err))
    {
        // Each is expected 40 times or more; fewer than 10 is vanishingly unlikely.
        assert!(count(verdict) >= 10, "{verdict:?} too rare: {verdicts:?}");
    }
}

/// A super-packet as the TUN hands it over with offloads: its virtio header and the packet
/// (IPv4 or IPv6; TCP with `options` bytes of options, or UDP), and the payload it carries.
fn super_packet(
    v6: bool,
    tcp: bool,
    options: usize,
    seq: u32,
    flags: u8,
    gso_size: u16,
    payload: &[u8],
) -> Vec<u8> {
    let ip_len = if v6 { 40 } else { 20 };
    let l4_len = if tcp { 20 + options } else { 8 };
    let mut p = vec![0u8; ip_len + l4_len];
    let protocol = if tcp { 6 } else { 17 };
    if v6 {
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((l4_len + payload.len()) as u16).to_be_bytes());
        p[6] = protocol;
        p[7] = 64;
        p[8] = 0xfd;
        p[23] = 1;
        p[24] = 0xfd;
        p[39] = 2;
    } else {
        p[..12].copy_from_slice(&[0x45, 0, 0, 0, 0xab, 0xcd, 0x40, 0, 64, protocol, 0, 0]);
        p[12..20].copy_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    }
    let l4 = &mut p[ip_len..];
    l4[..4].copy_from_slice(&[0x1f, 0x90, 0xc3, 0x50]);
    if tcp {
        l4[4..8].copy_from_slice(&seq.to_be_bytes());
        l4[12] = ((l4_len / 4) as u8) << 4;
        l4[13] = flags;
        // NOP options, so the header stays well formed.
        l4[20..].fill(1);
    }
    let virtio = split::VirtioHeader {
        flags: 1,
        gso_type: match (tcp, v6) {
            (false, _) => 5,
            (true, false) => 1,
            (true, true) => 4,
        },
        hdr_len: (ip_len + l4_len) as u16,
        gso_size,
        csum_start: ip_len as u16,
        csum_offset: if tcp { 16 } else { 6 },
    };
    [&virtio.to_bytes()[..], &p, payload].concat()
}

/// The L4 checksum of a whole packet with its pseudo-header, computed afresh: 0 when right.
fn l4_checksum(packet: &[u8]) -> u16 {
    let (ip_len, protocol, addresses) = match packet[0] >> 4 {
        4 => (20, packet[9], &packet[12..20]),
        _ => (40, packet[6], &packet[8..40]),
    };
    let l4 = &packet[ip_len..];
    let pseudo = [addresses, &[0, protocol], &(l4.len() as u16).to_be_bytes(), l4].concat();
    naive_checksum(&pseudo)
}

proptest! {
    /// What the splitter cuts, joined again, is the super-packet's payload; every segment is one
    /// valid IP packet no larger than the headers and the segment size (the MTU the kernel
    /// sized them for), with a valid L4 checksum and its sequence number where its bytes begin.
    #[test]
    fn split_segments_are_valid_packets_that_rejoin_to_the_payload(
        (v6, tcp) in (any::<bool>(), any::<bool>()),
        options in (0usize..=10).prop_map(|words| words * 4),
        seq in any::<u32>(),
        flags in any::<u8>(),
        gso_size in 1u16..2000,
        payload in vec(any::<u8>(), 1..20_000),
    ) {
        let gso_size = gso_size.max((payload.len().div_ceil(split::MAX_SEGMENTS)) as u16);
        let mut frame = super_packet(v6, tcp, options, seq, flags, gso_size, &payload);
        let (mut headers, mut segments) = (Vec::new(), Vec::new());
        prop_assert_eq!(split::split(&mut frame, &mut headers, &mut segments), Ok(()));
        let hdr_len = (if v6 { 40 } else { 20 }) + if tcp { 20 + options } else { 8 };
        let mut joined = Vec::new();
        for (i, segment) in segments.iter().enumerate() {
            prop_assert!(segment.payload.start >= split::VIRTIO_HEADER_LEN && segment.payload.end <= frame.len());
            let packet = [&headers[segment.header.clone()], &frame[segment.payload.clone()]].concat();
            prop_assert!(packet.len() <= hdr_len + usize::from(gso_size));
            prop_assert!(packet::check(&packet).is_ok(), "segment {} is no valid IP packet", i);
            prop_assert_eq!(l4_checksum(&packet), 0, "segment {}", i);
            if tcp {
                let at = hdr_len - options - 20 + 4;
                let got = u32::from_be_bytes([packet[at], packet[at + 1], packet[at + 2], packet[at + 3]]);
                prop_assert_eq!(got, seq.wrapping_add(joined.len() as u32));
            }
            joined.extend_from_slice(&packet[hdr_len..]);
        }
        prop_assert_eq!(joined, payload);
    }
}
