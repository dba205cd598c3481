//! Property tests of the pure core against naive models.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use udptun::packet::{self, Malformed, Malformed::*};
use udptun::prefix::{Prefix, PrefixMap};
use udptun::{coalesce, hosts, split, virtio};

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

/// A flow of the coalescer model: IPv4 TCP, IPv6 TCP, IPv4 UDP, IPv6 UDP, or a second IPv4 TCP
/// flow (other ports).
const FLOWS: usize = 5;

/// One step of a flow: its payload length, its flags (0 ACK, 1 ACK|PSH, 2 ACK|FIN), whether
/// it skips ahead in sequence or ID, whether its checksum is broken.
#[derive(Clone, Debug)]
struct Step {
    flow: usize,
    len: usize,
    flags: u8,
    gap: bool,
    corrupt: bool,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0..FLOWS,
        prop_oneof![4 => Just(100usize), 1 => 0usize..120],
        prop_oneof![8 => Just(0u8), 1 => 1u8..3],
        prop::bool::weighted(0.05),
        prop::bool::weighted(0.05),
    )
        .prop_map(|(flow, len, flags, gap, corrupt)| Step { flow, len, flags, gap, corrupt })
}

/// Builds the packets the steps describe, each flow keeping its own sequence number and ID.
fn flow_packets(steps: &[Step]) -> Vec<Vec<u8>> {
    let mut seq = [0x1000_0000u32; FLOWS];
    let mut id = [0u16; FLOWS];
    steps
        .iter()
        .map(|s| {
            let (v6, udp) =
                [(false, false), (true, false), (false, true), (true, true), (false, false)][s.flow];
            let skip = u32::from(s.gap) * 7;
            seq[s.flow] = seq[s.flow].wrapping_add(skip);
            id[s.flow] = id[s.flow].wrapping_add(skip as u16);
            let payload: Vec<u8> = (0..s.len).map(|i| (seq[s.flow] as usize + i) as u8).collect();
            let flags = [0x10, 0x18, 0x11][usize::from(s.flags)];
            let mut packet =
                model_packet(v6, udp, 1000 + s.flow as u16, id[s.flow], seq[s.flow], flags, &payload);
            seq[s.flow] = seq[s.flow].wrapping_add(s.len as u32);
            id[s.flow] = id[s.flow].wrapping_add(1);
            if s.corrupt {
                let last = packet.len() - 1;
                packet[last] ^= 0x5a;
            }
            packet
        })
        .collect()
}

/// An IPv4 or IPv6 TCP or UDP packet with right checksums (TTL 64, DF, window 0xffff, ACK
/// number 7).
fn model_packet(v6: bool, udp: bool, port: u16, id: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let protocol = if udp { 17 } else { 6 };
    let l4_len = if udp { 8 } else { 20 } + payload.len();
    let mut packet = if v6 {
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&(l4_len as u16).to_be_bytes());
        h.extend_from_slice(&[protocol, 64]);
        h.extend_from_slice(&Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1).octets());
        h.extend_from_slice(&Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2).octets());
        h
    } else {
        let mut h = vec![0x45, 0];
        h.extend_from_slice(&((20 + l4_len) as u16).to_be_bytes());
        h.extend_from_slice(&id.to_be_bytes());
        h.extend_from_slice(&[0x40, 0, 64, protocol, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        h
    };
    packet.extend_from_slice(&port.to_be_bytes());
    packet.extend_from_slice(&2000u16.to_be_bytes());
    if udp {
        packet.extend_from_slice(&(l4_len as u16).to_be_bytes());
        packet.extend_from_slice(&[0, 0]);
    } else {
        packet.extend_from_slice(&seq.to_be_bytes());
        packet.extend_from_slice(&[0, 0, 0, 7, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    }
    packet.extend_from_slice(payload);
    fix_checksums(&mut packet);
    packet
}

/// Sets the IPv4 header checksum and the TCP/UDP checksum of `packet` (computed naively).
fn fix_checksums(packet: &mut [u8]) {
    let v6 = packet[0] >> 4 == 6;
    let ip_len = if v6 { 40 } else { 20 };
    if !v6 {
        packet[10..12].fill(0);
        let checksum = naive_checksum(&packet[..20]);
        packet[10..12].copy_from_slice(&checksum.to_be_bytes());
    }
    let protocol = packet[if v6 { 6 } else { 9 }];
    let field = ip_len + if protocol == 17 { 6 } else { 16 };
    packet[field..field + 2].fill(0);
    let mut pseudo = if v6 { packet[8..40].to_vec() } else { packet[12..20].to_vec() };
    pseudo.extend_from_slice(&[0, protocol]);
    pseudo.extend_from_slice(&((packet.len() - ip_len) as u16).to_be_bytes());
    pseudo.extend_from_slice(&packet[ip_len..]);
    let checksum = match naive_checksum(&pseudo) {
        0 if protocol == 17 => 0xffff,
        checksum => checksum,
    };
    packet[field..field + 2].copy_from_slice(&checksum.to_be_bytes());
}

/// A reference splitter: what the kernel makes of a write (a virtio-net header, then the
/// packet or the super-packet's headers and payloads). Each segment gets the headers with its
/// lengths, IPv4 ID (+1 each), TCP sequence number, PSH only on the last, and fresh checksums.
fn split_write(write: &[u8]) -> Vec<Vec<u8>> {
    let (virtio, packet) = write.split_at(virtio::VIRTIO_HEADER_LEN);
    if virtio[1] == 0 {
        assert_eq!(virtio, [0; 10], "a packet alone has an all-zero header");
        return vec![packet.to_vec()];
    }
    assert_eq!(virtio[0], 1, "a super-packet needs its checksum completed");
    let field = |i: usize| usize::from(u16::from_ne_bytes([virtio[i], virtio[i + 1]]));
    let (header_len, size, ip_len) = (field(2), field(4), field(6));
    let (headers, payload) = packet.split_at(header_len);
    let chunks: Vec<&[u8]> = payload.chunks(size).collect();
    assert!(chunks.len() >= 2, "a super-packet of one segment");
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut segment = [headers, chunk].concat();
            let len = segment.len();
            if ip_len == 40 {
                segment[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
            } else {
                segment[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                let id = u16::from_be_bytes([segment[4], segment[5]]).wrapping_add(i as u16);
                segment[4..6].copy_from_slice(&id.to_be_bytes());
            }
            if virtio[1] == 5 {
                segment[ip_len + 4..ip_len + 6].copy_from_slice(&((len - ip_len) as u16).to_be_bytes());
            } else {
                let seq = u32::from_be_bytes(segment[ip_len + 4..ip_len + 8].try_into().unwrap());
                let seq = seq.wrapping_add((i * size) as u32);
                segment[ip_len + 4..ip_len + 8].copy_from_slice(&seq.to_be_bytes());
                if i + 1 < chunks.len() {
                    segment[ip_len + 13] &= !0x09;
                }
            }
            fix_checksums(&mut segment);
            segment
        })
        .collect()
}

proptest! {
    #[test]
    fn coalesced_writes_split_back_into_the_packets(steps in vec(step(), 0..200), udp in any::<bool>()) {
        let packets = flow_packets(&steps);
        let slices: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
        let mut coalescer = coalesce::Coalescer::new(udp);
        coalescer.plan(&slices);
        let mut out = Vec::new();
        for write in coalescer.writes() {
            let bytes = [write.header.to_vec(), write.payloads(&slices).collect::<Vec<_>>().concat()].concat();
            prop_assert!(bytes.len() - virtio::VIRTIO_HEADER_LEN <= coalesce::MAX_SUPER_PACKET);
            let segments = split_write(&bytes);
            prop_assert_eq!(segments.len(), write.segments());
            prop_assert!(segments.len() <= coalesce::MAX_SEGMENTS_PER_WRITE);
            out.extend(segments);
        }
        // Every packet comes back byte for byte, once, and each flow in its order.
        prop_assert_eq!(out.len(), packets.len());
        for flow in 0..FLOWS {
            let sent: Vec<&Vec<u8>> = packets.iter().zip(&steps).filter(|(_, s)| s.flow == flow).map(|(p, _)| p).collect();
            let port = (1000 + flow as u16).to_be_bytes();
            let got: Vec<&Vec<u8>> = out.iter().filter(|p| {
                let ip_len = if p[0] >> 4 == 6 { 40 } else { 20 };
                p[ip_len..ip_len + 2] == port && (p[0] >> 4 == 6) == [false, true, false, true, false][flow]
                    && p[if ip_len == 40 { 6 } else { 9 }] == [6, 6, 17, 17, 6][flow]
            }).collect();
            prop_assert_eq!(sent, got);
        }
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
        p[2..4].copy_from_slice(&((ip_len + l4_len + payload.len()) as u16).to_be_bytes());
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
    let virtio = virtio::VirtioHeader {
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
        let gso_size = gso_size.max((payload.len().div_ceil(split::MAX_SEGMENTS_PER_FRAME)) as u16);
        let mut frame = super_packet(v6, tcp, options, seq, flags, gso_size, &payload);
        let (mut headers, mut segments) = (Vec::new(), Vec::new());
        prop_assert_eq!(split::split(&mut frame, &mut headers, &mut segments), Ok(()));
        let hdr_len = (if v6 { 40 } else { 20 }) + if tcp { 20 + options } else { 8 };
        let mut joined = Vec::new();
        for (i, segment) in segments.iter().enumerate() {
            prop_assert!(segment.payload.start >= virtio::VIRTIO_HEADER_LEN && segment.payload.end <= frame.len());
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
