//! The receive-side coalescer fed segment mixes: flows of TCP and UDP over IPv4 and IPv6 with
//! any lengths, sequence steps and flags, then any byte of each packet changed. It must never
//! panic, never build a super-packet over 65,535 bytes or 64 segments, and must write every
//! packet exactly once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use udptun::coalesce::{Coalescer, MAX_SEGMENTS_PER_WRITE, MAX_SUPER_PACKET};
use udptun::packet;
use udptun::virtio::VIRTIO_HEADER_LEN;

/// Bytes per packet description: kind, length (2), sequence step, TCP flags, byte to change
/// (2), its XOR.
const RECORD: usize = 8;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, records)) = data.split_first() else { return };
    let mut seq = [0u32; 8];
    let mut id = [0u16; 8];
    let packets: Vec<Vec<u8>> = records
        .chunks_exact(RECORD)
        .take(300)
        .map(|r| {
            let flow = usize::from(r[0] & 7);
            let len = usize::from(u16::from_le_bytes([r[1], r[2]])) % (MAX_SUPER_PACKET - 59);
            seq[flow] = seq[flow].wrapping_add(u32::from(r[3]));
            id[flow] = id[flow].wrapping_add(u16::from(r[3] & 1));
            let packet = build(flow, id[flow], seq[flow], r[4], len, r[5..8].try_into().unwrap());
            seq[flow] = seq[flow].wrapping_add(len as u32);
            id[flow] = id[flow].wrapping_add(1);
            packet
        })
        .collect();
    let slices: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
    let mut coalescer = Coalescer::new(mode & 1 == 1);
    coalescer.plan(&slices);
    let mut written = 0;
    for write in coalescer.writes() {
        assert!(write.header.len() >= VIRTIO_HEADER_LEN);
        let len =
            write.header.len() - VIRTIO_HEADER_LEN + write.payloads(&slices).map(<[u8]>::len).sum::<usize>();
        let segments = write.segments();
        assert!((1..=MAX_SEGMENTS_PER_WRITE).contains(&segments));
        if segments > 1 {
            assert!(len <= MAX_SUPER_PACKET, "a super-packet of {len} bytes");
        } else {
            assert_eq!(write.header, [0; VIRTIO_HEADER_LEN]);
        }
        written += segments;
    }
    assert_eq!(written, packets.len());
});

/// A packet of `flow` (bit 0: IPv6, bit 1: UDP, bit 2: the other port) with a `len`-byte
/// payload and right checksums, then one byte changed (`change`: offset, little-endian, XOR).
fn build(flow: usize, id: u16, seq: u32, flags: u8, len: usize, change: [u8; 3]) -> Vec<u8> {
    let (v6, udp) = (flow & 1 == 1, flow & 2 == 2);
    let protocol = if udp { 17 } else { 6 };
    let l4_len = if udp { 8 } else { 20 } + len;
    let mut packet = if v6 {
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&(l4_len as u16).to_be_bytes());
        h.extend_from_slice(&[protocol, 64, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        h.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        h
    } else {
        let mut h = vec![0x45, 0];
        h.extend_from_slice(&((20 + l4_len) as u16).to_be_bytes());
        h.extend_from_slice(&id.to_be_bytes());
        h.extend_from_slice(&[0x40, 0, 64, protocol, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        let checksum = packet::checksum(&h);
        h[10..12].copy_from_slice(&checksum.to_be_bytes());
        h
    };
    let ip_len = packet.len();
    packet.extend_from_slice(&(1000 + (flow as u16 >> 2)).to_be_bytes());
    packet.extend_from_slice(&2000u16.to_be_bytes());
    if udp {
        packet.extend_from_slice(&(l4_len as u16).to_be_bytes());
        packet.extend_from_slice(&[0, 0]);
    } else {
        packet.extend_from_slice(&seq.to_be_bytes());
        packet.extend_from_slice(&[0, 0, 0, 7, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    }
    packet.resize(ip_len + l4_len, 0xab);
    let mut pseudo = packet[if v6 { 8 } else { 12 }..ip_len].to_vec();
    pseudo.extend_from_slice(&[0, protocol]);
    pseudo.extend_from_slice(&(l4_len as u16).to_be_bytes());
    pseudo.extend_from_slice(&packet[ip_len..]);
    let field = ip_len + if udp { 6 } else { 16 };
    let checksum = packet::checksum(&pseudo);
    packet[field..field + 2].copy_from_slice(&checksum.to_be_bytes());
    let at = usize::from(u16::from_le_bytes([change[0], change[1]])) % packet.len();
    packet[at] ^= change[2];
    packet
}
