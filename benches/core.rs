//! Criterion benchmarks of the pure per-packet work: the table lookup (100,000 entries), the
//! inbound check, the Internet checksum, MSS clamping, the ICMP error builder and receive-side
//! coalescing.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use udptun::coalesce::Coalescer;
use udptun::packet;
use udptun::peers::{PeerTable, Roaming};
use udptun::prefix::Prefix;

fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, len: usize) -> Vec<u8> {
    ipv4_packet_of(17, src, dst, len)
}

fn ipv4_packet_of(protocol: u8, src: Ipv4Addr, dst: Ipv4Addr, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = protocol;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let sum = packet::checksum(&p[..20]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p
}

/// `count` contiguous TCP segments of one flow, `len` bytes each, with right checksums: what
/// one GRO receive brings during a bulk transfer.
fn tcp_segments(count: usize, len: usize) -> Vec<Vec<u8>> {
    let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    (0..count)
        .map(|i| {
            let mut p = ipv4_packet_of(6, a, b, len);
            p[4..6].copy_from_slice(&(i as u16).to_be_bytes());
            p[10..12].fill(0);
            let sum = packet::checksum(&p[..20]);
            p[10..12].copy_from_slice(&sum.to_be_bytes());
            p[24..28].copy_from_slice(&((i * (len - 40)) as u32).to_be_bytes());
            p[32..34].copy_from_slice(&[0x50, 0x10]);
            let mut pseudo = p[12..20].to_vec();
            pseudo.extend_from_slice(&[0, 6]);
            pseudo.extend_from_slice(&((len - 20) as u16).to_be_bytes());
            pseudo.extend_from_slice(&p[20..]);
            let sum = packet::checksum(&pseudo);
            p[36..38].copy_from_slice(&sum.to_be_bytes());
            p
        })
        .collect()
}

/// 100,000 host entries in 10.0.0.0/8 and a few prefixes, each to its own peer.
pub fn big_table() -> PeerTable {
    let hosts = (0..100_000u32).map(|i| {
        let inner = Ipv4Addr::from((10 << 24) | i);
        let peer = SocketAddr::from((Ipv4Addr::from((100 << 24) | i), 7777));
        (Prefix::from(inner), peer)
    });
    let nets = (0..16u32).map(|i| {
        let net: Prefix = format!("172.{}.0.0/16", 16 + i).parse().unwrap();
        (net, SocketAddr::from(([198, 51, 100, i as u8], 7777)))
    });
    PeerTable::from_entries(hosts.chain(nets))
}

fn benchmarks(c: &mut Criterion) {
    let table = big_table();
    let to_host = ipv4_packet(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 1, 0x86, 0x9f), 1400);
    let to_prefix = ipv4_packet(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(172, 20, 1, 1), 1400);
    let unmapped = ipv4_packet(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(192, 0, 2, 1), 1400);
    c.bench_function("route: 100k table, host entry", |b| b.iter(|| table.route(black_box(&to_host))));
    c.bench_function("route: 100k table, /16 prefix", |b| b.iter(|| table.route(black_box(&to_prefix))));
    c.bench_function("route: 100k table, no entry", |b| b.iter(|| table.route(black_box(&unmapped))));
    let source = "100.0.0.1:7777".parse().unwrap();
    let from_host = ipv4_packet(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 1400);
    c.bench_function("source check: 100k table", |b| {
        b.iter(|| {
            table.admit(
                black_box(&from_host),
                source,
                false,
                1_000,
                Roaming { hold_ms: 15_000, keyed: false },
            )
        })
    });
    for len in [1400, 64] {
        let data: Vec<u8> = (0..len as u32).map(|i| (i * 7 + 3) as u8).collect();
        c.bench_function(&format!("checksum: {len} bytes"), |b| {
            b.iter(|| packet::checksum(black_box(&data)))
        });
    }
    c.bench_function("check: 1400-byte IPv4 datagram", |b| b.iter(|| packet::check(black_box(&to_host))));
    // What every packet pays: a TCP segment that is no SYN (the TCP checksum does not matter).
    let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let mut segment = ipv4_packet_of(6, a, b, 1400);
    segment[20 + 12..20 + 14].copy_from_slice(&[0x50, 0x10]);
    c.bench_function("clamp MSS: a TCP segment that is no SYN", |b| {
        b.iter(|| packet::clamp_mss(black_box(&mut segment), 1472))
    });
    // A SYN with Linux's options (MSS 1460, SACK permitted, timestamps, window scale).
    let mut syn = ipv4_packet_of(6, a, b, 60);
    syn[20 + 12..20 + 14].copy_from_slice(&[0xa0, 0x02]);
    syn[40..60].copy_from_slice(&[2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 1, 2, 3, 0, 0, 0, 0, 1, 3, 3, 7]);
    c.bench_function("clamp MSS: a SYN", |b| {
        b.iter_batched_ref(|| syn.clone(), |syn| packet::clamp_mss(syn, 1472), BatchSize::SmallInput)
    });
    // Coalescing a GRO receive's worth of TCP segments, and the part of it that verifies each
    // segment's checksum.
    let segments = tcp_segments(44, 1400);
    let slices: Vec<&[u8]> = segments.iter().map(Vec::as_slice).collect();
    let mut coalescer = Coalescer::new(true);
    c.bench_function("coalesce: 44 TCP segments of 1400 bytes", |b| {
        b.iter(|| coalescer.plan(black_box(&slices)))
    });
    c.bench_function("coalesce: checksums of 44 TCP segments of 1400 bytes", |b| {
        b.iter(|| slices.iter().map(|s| packet::checksum(black_box(&s[20..]))).fold(0u16, u16::wrapping_add))
    });
    let mut out = [0u8; 1500];
    c.bench_function("build ICMP unreachable", |b| {
        b.iter(|| packet::unreachable(black_box(&unmapped), &mut out))
    });
}

criterion_group!(core, benchmarks);
criterion_main!(core);
