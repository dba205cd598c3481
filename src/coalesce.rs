//! Receive-side coalescing (GRO) for a TUN with virtio-net offloads, without copies: decides
//! which consecutive segments of a flow join into one super-packet and builds, for each write,
//! a small header (the virtio-net header and the first segment's IP and TCP/UDP headers
//! rewritten for the whole) that goes before the segments' payloads where they lie.
//!
//! The rules follow the kernel's GRO (and wireguard-go's, which tun-rs ported): only segments
//! that the kernel would cut back into exactly the same packets are joined, so a super-packet
//! forwarded on is re-segmented byte for byte. A merged packet goes up the stack as
//! CHECKSUM_PARTIAL, that is trusted, and the outer UDP checksum may be absent (IPv4 FOU), so
//! each segment's own TCP/UDP checksum is verified before it joins; one that fails is written
//! alone for the kernel to drop and count.
//!
//! Pure: no I/O. [`Coalescer::plan`] takes the packets of a batch, [`Coalescer::writes`] yields
//! what to write.

use std::ops::Range;

use crate::packet::{
    self, IPV4_HEADER_LEN, IPV6_HEADER_LEN, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_HEADER_LEN, TCP_PSH,
    UDP_HEADER_LEN,
};
use crate::virtio::{FLAG_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, VIRTIO_HEADER_LEN, VirtioHeader};

/// The most segments in one super-packet: the kernel refuses a UDP one of more than
/// UDP_MAX_SEGMENTS (64 on older kernels); TCP ones are held to the same, which also bounds a
/// write's slices far below IOV_MAX.
pub const MAX_SEGMENTS_PER_WRITE: usize = 64;
/// The largest IP packet (IPv4 total length, IPv6 payload length plus header, without jumbo).
pub const MAX_SUPER_PACKET: usize = 65_535;
/// Flows coalesced at once; a further flow closes the oldest group.
const MAX_OPEN_GROUPS: usize = 8;

/// Where the checksum field lies in a TCP and a UDP header.
const TCP_CHECKSUM_OFFSET: usize = 16;
const UDP_CHECKSUM_OFFSET: usize = 6;
/// IPv4 flags and fragment offset: MF and the offset (a fragment never joins).
const IPV4_MF_AND_OFFSET: u16 = 0x3fff;

/// What a packet that may join a super-packet looks like (read once, by [`Segment::parse`]).
#[derive(Clone, Copy)]
struct Segment {
    v6: bool,
    udp: bool,
    /// IP header length (20 or 40: no IPv4 options, no IPv6 extension headers).
    ip_len: usize,
    /// IP and TCP/UDP headers.
    header_len: usize,
    payload: usize,
    /// TCP sequence number (0 for UDP).
    seq: u32,
    /// IPv4 identification (0 for IPv6).
    id: u16,
    /// The TCP flags byte (0 for UDP).
    flags: u8,
}

impl Segment {
    /// Reads `packet` if it is a candidate: IPv4 without options or fragments, or IPv6 without
    /// extension headers, carrying TCP with data and only ACK (and PSH), or (when `udp`) UDP
    /// with data and a checksum; lengths consistent and the TCP/UDP checksum right.
    fn parse(packet: &[u8], udp: bool) -> Option<Self> {
        let version = packet.first()? >> 4;
        let (v6, ip_len, protocol, ip_total, id) = match version {
            4 => {
                let header = packet.get(..IPV4_HEADER_LEN)?;
                let fragment = u16::from_be_bytes([header[6], header[7]]);
                if header[0] != 0x45 || fragment & IPV4_MF_AND_OFFSET != 0 {
                    return None;
                }
                let total = usize::from(u16::from_be_bytes([header[2], header[3]]));
                (false, IPV4_HEADER_LEN, header[9], total, u16::from_be_bytes([header[4], header[5]]))
            }
            6 => {
                let header = packet.get(..IPV6_HEADER_LEN)?;
                let total = IPV6_HEADER_LEN + usize::from(u16::from_be_bytes([header[4], header[5]]));
                (true, IPV6_HEADER_LEN, header[6], total, 0)
            }
            _ => return None,
        };
        if ip_total != packet.len() {
            return None;
        }
        let l4 = &packet[ip_len..];
        let (l4_len, seq, flags) = match protocol {
            PROTO_TCP => {
                let header = l4.get(..TCP_HEADER_LEN)?;
                let len = usize::from(header[12] >> 4) * 4;
                // No reserved or AE bits, and no flags but ACK and PSH.
                if len < TCP_HEADER_LEN || header[12] & 0x0f != 0 || header[13] & !TCP_PSH != TCP_ACK {
                    return None;
                }
                (len, u32::from_be_bytes([header[4], header[5], header[6], header[7]]), header[13])
            }
            PROTO_UDP if udp => {
                let header = l4.get(..UDP_HEADER_LEN)?;
                // IPv4's "no checksum" cannot be verified, and the kernel would add one.
                if usize::from(u16::from_be_bytes([header[4], header[5]])) != l4.len()
                    || header[6..8] == [0, 0]
                {
                    return None;
                }
                (UDP_HEADER_LEN, 0, 0)
            }
            _ => return None,
        };
        if l4.len() <= l4_len {
            return None;
        }
        let segment = Self {
            v6,
            udp: protocol == PROTO_UDP,
            ip_len,
            header_len: ip_len + l4_len,
            payload: l4.len() - l4_len,
            seq,
            id,
            flags,
        };
        // The pseudo-header's sum plus the TCP/UDP segment's is all ones when the checksum is
        // right.
        let sum = add(segment.pseudo_sum(packet, l4.len()), !packet::checksum(l4));
        (sum == 0xffff).then_some(segment)
    }

    /// The folded, not inverted, sum of the pseudo-header (addresses, protocol, `l4_len`).
    fn pseudo_sum(&self, packet: &[u8], l4_len: usize) -> u16 {
        let addresses = if self.v6 { &packet[8..40] } else { &packet[12..20] };
        let protocol = if self.udp { PROTO_UDP } else { PROTO_TCP };
        // Lengths above 65,535 only happen for IPv6 jumbograms, never built here; the sum of
        // the two halves keeps even those right.
        let length = add((l4_len >> 16) as u16, l4_len as u16);
        add(add(!packet::checksum(addresses), u16::from(protocol)), length)
    }

    /// Whether `b` (read as `other`) is of this segment's flow `a`: IP version, protocol,
    /// addresses and ports.
    fn same_flow(&self, other: &Segment, a: &[u8], b: &[u8]) -> bool {
        let ports = self.ip_len..self.ip_len + 4;
        self.v6 == other.v6
            && self.udp == other.udp
            && Self::addresses(a) == Self::addresses(b)
            && a[ports.clone()] == b[ports]
    }

    /// Whether `b`, of this segment's flow `a` and with a header as long, has the headers the
    /// kernel would rebuild from `a`'s when it cuts a super-packet: IPv4 version, header length,
    /// TOS, flags, TTL (all but lengths, ID and checksum), IPv6 version, traffic class, flow
    /// label, hop limit; for TCP the ACK number, header length, window, urgent pointer and
    /// options (the flags are checked by [`Segment::parse`], only PSH may differ).
    fn same_headers(&self, a: &[u8], b: &[u8]) -> bool {
        let ip = if self.v6 {
            a[..4] == b[..4] && a[6..8] == b[6..8]
        } else {
            a[..2] == b[..2] && a[6..10] == b[6..10]
        };
        let (ta, tb) = (&a[self.ip_len..self.header_len], &b[self.ip_len..self.header_len]);
        ip && (self.udp || (ta[8..13] == tb[8..13] && ta[14..16] == tb[14..16] && ta[18..] == tb[18..]))
    }

    /// The IP addresses, which a packet that is no candidate compares to close its flow's group.
    fn addresses(packet: &[u8]) -> Option<&[u8]> {
        match packet.first()? >> 4 {
            4 => packet.get(12..20),
            6 => packet.get(8..40),
            _ => None,
        }
    }
}

/// One's-complement addition of two 16-bit sums.
fn add(a: u16, b: u16) -> u16 {
    let (sum, carry) = a.overflowing_add(b);
    sum + u16::from(carry)
}

/// Index meaning "no packet" in the member lists.
const NONE: usize = usize::MAX;

/// A run of packets written as one: a super-packet, or one packet alone (`segment` `None`).
struct Group {
    first: usize,
    last: usize,
    count: usize,
    /// Its IP length once merged.
    len: usize,
    segment: Option<Segment>,
    /// TCP: the sequence number the next segment must have.
    next_seq: u32,
    /// The last segment's TCP flags (its PSH goes into the merged header).
    last_flags: u8,
    /// Where its header lies in the arena (filled by `plan` at the end).
    header: Range<usize>,
}

/// The coalescer's state, kept between batches so that a warm one never allocates.
pub struct Coalescer {
    udp: bool,
    groups: Vec<Group>,
    /// Indexes into `groups` of the groups that may still grow, oldest first.
    open: Vec<usize>,
    /// For each packet, the next member of its group (or [`NONE`]).
    next: Vec<usize>,
    arena: Vec<u8>,
}

/// One write to the TUN: `header`, then `payloads`.
pub struct Write<'c> {
    /// The virtio-net header, followed for a super-packet by its IP and TCP/UDP headers.
    pub header: &'c [u8],
    group: &'c Group,
    next: &'c [usize],
}

impl<'c> Write<'c> {
    /// The slices that follow the header: the whole packet when it is alone, else each
    /// segment's payload in order.
    pub fn payloads<'p>(&self, packets: &'c [&'p [u8]]) -> impl Iterator<Item = &'p [u8]> + 'c {
        let skip = self.group.segment.map_or(0, |segment| segment.header_len);
        let next = self.next;
        std::iter::successors(Some(self.group.first), move |&i| Some(next[i]).filter(|&n| n != NONE))
            .map(move |i| &packets[i][skip..])
    }

    /// How many packets this write carries.
    pub fn segments(&self) -> usize {
        self.group.count
    }
}

impl Coalescer {
    /// A coalescer; `udp` says whether UDP datagrams may join (the TUN takes USO).
    pub fn new(udp: bool) -> Self {
        Self { udp, groups: Vec::new(), open: Vec::new(), next: Vec::new(), arena: Vec::new() }
    }

    /// Decides how `packets` (whole IP packets, in the order received) are written: each joins
    /// the open group of its flow if the rules allow, else starts one (or is written alone).
    /// Order within a flow is kept; groups are written in the order they started.
    pub fn plan(&mut self, packets: &[&[u8]]) {
        self.groups.clear();
        self.open.clear();
        self.next.clear();
        self.next.resize(packets.len(), NONE);
        self.arena.clear();
        for (index, packet) in packets.iter().enumerate() {
            match Segment::parse(packet, self.udp) {
                Some(segment) => self.add_segment(packets, index, segment),
                None => {
                    // Later packets of its flow must not join a group written before it.
                    let addresses = Segment::addresses(packet);
                    self.open.retain(|&g| {
                        addresses
                            .is_some_and(|a| Segment::addresses(packets[self.groups[g].first]) != Some(a))
                    });
                    self.start(index, packet.len(), None);
                }
            }
        }
        for group in &mut self.groups {
            let start = self.arena.len();
            match group.segment.filter(|_| group.count > 1) {
                None => {
                    group.segment = None;
                    self.arena.resize(start + VIRTIO_HEADER_LEN, 0);
                }
                Some(segment) => {
                    write_header(&mut self.arena, packets[group.first], segment, group.len, group.last_flags)
                }
            }
            group.header = start..self.arena.len();
        }
    }

    /// The writes of the last [`Coalescer::plan`], in order.
    pub fn writes(&self) -> impl Iterator<Item = Write<'_>> {
        self.groups.iter().map(|group| Write {
            header: &self.arena[group.header.clone()],
            group,
            next: &self.next,
        })
    }

    fn add_segment(&mut self, packets: &[&[u8]], index: usize, segment: Segment) {
        let packet = packets[index];
        let position = self.open.iter().position(|&g| {
            let group = &self.groups[g];
            group.segment.is_some_and(|open| open.same_flow(&segment, packets[group.first], packet))
        });
        if let Some(position) = position {
            let g = self.open[position];
            if self.joins(g, packets, index, &segment) {
                let group = &mut self.groups[g];
                self.next[group.last] = index;
                group.last = index;
                group.count += 1;
                group.len += segment.payload;
                group.next_seq = segment.seq.wrapping_add(segment.payload as u32);
                group.last_flags = segment.flags;
                let first = group.segment.map_or(0, |s| s.payload);
                // A shorter segment or PSH ends the group; so does reaching a limit.
                if segment.payload < first
                    || segment.flags & TCP_PSH != 0
                    || group.count == MAX_SEGMENTS_PER_WRITE
                {
                    self.open.remove(position);
                }
                return;
            }
            self.open.remove(position);
        }
        if self.open.len() == MAX_OPEN_GROUPS {
            self.open.remove(0);
        }
        let g = self.start(index, packet.len(), Some(segment));
        if segment.flags & TCP_PSH == 0 {
            self.open.push(g);
        }
    }

    /// Whether `segment` (of the same flow and header shape) may follow group `g`'s last one.
    fn joins(&self, g: usize, packets: &[&[u8]], index: usize, segment: &Segment) -> bool {
        let group = &self.groups[g];
        let Some(first) = group.segment else { return false };
        let ip_ok = first.v6 || segment.id == first.id.wrapping_add(group.count as u16);
        let tcp_ok = first.udp || segment.seq == group.next_seq;
        ip_ok
            && tcp_ok
            && segment.header_len == first.header_len
            && segment.payload <= first.payload
            && group.len + segment.payload <= MAX_SUPER_PACKET
            && first.same_headers(packets[group.first], packets[index])
    }

    fn start(&mut self, index: usize, len: usize, segment: Option<Segment>) -> usize {
        self.groups.push(Group {
            first: index,
            last: index,
            count: 1,
            len,
            segment,
            next_seq: segment.map_or(0, |s| s.seq.wrapping_add(s.payload as u32)),
            last_flags: segment.map_or(0, |s| s.flags),
            header: 0..0,
        });
        self.groups.len() - 1
    }
}

/// Appends to `arena` the virtio-net header and `first`'s headers rewritten for a super-packet
/// of `len` bytes whose last segment had TCP `flags`.
fn write_header(arena: &mut Vec<u8>, first: &[u8], segment: Segment, len: usize, flags: u8) {
    let (gso_type, checksum_offset) = match (segment.udp, segment.v6) {
        (true, _) => (GSO_UDP_L4, UDP_CHECKSUM_OFFSET),
        (false, false) => (GSO_TCPV4, TCP_CHECKSUM_OFFSET),
        (false, true) => (GSO_TCPV6, TCP_CHECKSUM_OFFSET),
    };
    // Header lengths and the segment size fit 16 bits: a super-packet is at most 65,535 bytes.
    let virtio = VirtioHeader {
        flags: FLAG_NEEDS_CSUM,
        gso_type,
        hdr_len: segment.header_len as u16,
        gso_size: segment.payload as u16,
        csum_start: segment.ip_len as u16,
        csum_offset: checksum_offset as u16,
    };
    arena.extend_from_slice(&virtio.to_bytes());
    let start = arena.len();
    arena.extend_from_slice(&first[..segment.header_len]);
    let header = &mut arena[start..];
    let l4_len = len - segment.ip_len;
    if segment.v6 {
        header[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
    } else {
        header[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        header[10..12].fill(0);
        let checksum = packet::checksum(&header[..IPV4_HEADER_LEN]);
        header[10..12].copy_from_slice(&checksum.to_be_bytes());
    }
    let l4 = segment.ip_len;
    if segment.udp {
        header[l4 + 4..l4 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
    } else {
        header[l4 + 13] = flags;
    }
    // CHECKSUM_PARTIAL: the field holds the pseudo-header's sum, the kernel adds the rest.
    let partial = segment.pseudo_sum(header, l4_len);
    header[l4 + checksum_offset..l4 + checksum_offset + 2].copy_from_slice(&partial.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::tests::l4_checksum;

    /// A packet to build: IPv4 10.0.0.1 → 10.0.0.2 or IPv6 fd00::1 → fd00::2, ports
    /// 1000 → 2000, TTL 64, DF, TCP ACK 0x01020304, window 0xffff, with right checksums.
    #[derive(Clone)]
    struct Spec {
        v6: bool,
        udp: bool,
        id: u16,
        seq: u32,
        flags: u8,
        options: Vec<u8>,
        payload: Vec<u8>,
    }

    fn tcp(v6: bool, seq: u32, len: usize) -> Spec {
        let payload = (0..len).map(|i| (seq as usize + i) as u8).collect();
        Spec { v6, udp: false, id: seq as u16 / 100, seq, flags: TCP_ACK, options: vec![], payload }
    }

    fn udp(v6: bool, id: u16, len: usize) -> Spec {
        Spec { udp: true, id, flags: 0, ..tcp(v6, u32::from(id), len) }
    }

    fn build(spec: &Spec) -> Vec<u8> {
        let l4_len = if spec.udp { 8 } else { 20 + spec.options.len() } + spec.payload.len();
        let protocol = if spec.udp { PROTO_UDP } else { PROTO_TCP };
        let mut packet = if spec.v6 {
            let mut h = vec![0x60, 0, 0, 0, 0, 0, protocol, 64];
            h[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            h.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            h.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            h
        } else {
            let mut h = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, protocol, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
            h[2..4].copy_from_slice(&((20 + l4_len) as u16).to_be_bytes());
            h[4..6].copy_from_slice(&spec.id.to_be_bytes());
            let checksum = packet::checksum(&h);
            h[10..12].copy_from_slice(&checksum.to_be_bytes());
            h
        };
        let ip_len = packet.len();
        packet.extend_from_slice(&1000u16.to_be_bytes());
        packet.extend_from_slice(&2000u16.to_be_bytes());
        if spec.udp {
            packet.extend_from_slice(&(l4_len as u16).to_be_bytes());
            packet.extend_from_slice(&[0, 0]);
        } else {
            packet.extend_from_slice(&spec.seq.to_be_bytes());
            packet.extend_from_slice(&[1, 2, 3, 4]);
            packet.push((((20 + spec.options.len()) / 4) << 4) as u8);
            packet.extend_from_slice(&[spec.flags, 0xff, 0xff, 0, 0, 0, 0]);
            packet.extend_from_slice(&spec.options);
        }
        packet.extend_from_slice(&spec.payload);
        let offset = ip_len + if spec.udp { 6 } else { 16 };
        // UDP sends a checksum of 0 as 0xffff (0 means none).
        let checksum = match l4_checksum(&packet) {
            0 if spec.udp => 0xffff,
            checksum => checksum,
        };
        packet[offset..offset + 2].copy_from_slice(&checksum.to_be_bytes());
        packet
    }

    /// Plans `specs` and returns each write as (header, concatenated payloads).
    fn plan(specs: &[Spec], udp: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
        let packets: Vec<Vec<u8>> = specs.iter().map(build).collect();
        let slices: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
        let mut coalescer = Coalescer::new(udp);
        coalescer.plan(&slices);
        coalescer
            .writes()
            .map(|w| (w.header.to_vec(), w.payloads(&slices).collect::<Vec<_>>().concat()))
            .collect()
    }

    /// The number of packets each write carries.
    fn shape(specs: &[Spec], udp: bool) -> Vec<usize> {
        let packets: Vec<Vec<u8>> = specs.iter().map(build).collect();
        let slices: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
        let mut coalescer = Coalescer::new(udp);
        coalescer.plan(&slices);
        coalescer.writes().map(|w| w.segments()).collect()
    }

    /// Checks one merged write of `specs` byte for byte against the packet built whole (the
    /// first's headers, the last's flags, all payloads), after doing what the kernel does with
    /// CHECKSUM_PARTIAL, and returns its virtio-net header.
    fn merged(specs: &[Spec], udp: bool) -> Vec<u8> {
        let writes = plan(specs, udp);
        assert_eq!(writes.len(), 1, "expected one write");
        let (header, payloads) = &writes[0];
        let mut whole = header[VIRTIO_HEADER_LEN..].to_vec();
        whole.extend_from_slice(payloads);
        let start = usize::from(u16::from_ne_bytes([header[6], header[7]]));
        let offset = start + usize::from(u16::from_ne_bytes([header[8], header[9]]));
        let completed = packet::checksum(&whole[start..]);
        whole[offset..offset + 2].copy_from_slice(&completed.to_be_bytes());
        let mut expected = specs[0].clone();
        expected.flags = specs.last().unwrap().flags;
        expected.payload = specs.iter().flat_map(|s| s.payload.clone()).collect();
        assert_eq!(whole, build(&expected));
        header[..VIRTIO_HEADER_LEN].to_vec()
    }

    fn virtio(gso_type: u8, hdr_len: u16, gso_size: u16, csum_start: u16, csum_offset: u16) -> Vec<u8> {
        VirtioHeader { flags: FLAG_NEEDS_CSUM, gso_type, hdr_len, gso_size, csum_start, csum_offset }
            .to_bytes()
            .to_vec()
    }

    #[test]
    fn contiguous_tcp_segments_merge_with_headers_rewritten() {
        let v4 = [tcp(false, 0, 1000), tcp(false, 1000, 1000), tcp(false, 2000, 1000)];
        let v4 = [v4[0].clone(), Spec { id: 1, ..v4[1].clone() }, Spec { id: 2, ..v4[2].clone() }];
        assert_eq!(merged(&v4, false), virtio(GSO_TCPV4, 40, 1000, 20, 16));
        let v6 = [tcp(true, 0, 1000), tcp(true, 1000, 1000), tcp(true, 2000, 300)];
        assert_eq!(merged(&v6, false), virtio(GSO_TCPV6, 60, 1000, 40, 16));
    }

    #[test]
    fn header_is_byte_exact() {
        // Two 4-byte segments: IPv4 total length 48, header checksum and TCP partial sum
        // worked out by hand.
        let mut first = tcp(false, 0, 4);
        first.id = 0x1234;
        let second = Spec { id: 0x1235, payload: vec![9; 4], flags: TCP_ACK | TCP_PSH, ..tcp(false, 4, 4) };
        let writes = plan(&[first, second], false);
        let mut expected = virtio(GSO_TCPV4, 40, 4, 20, 16);
        expected.extend_from_slice(&[
            0x45, 0, 0, 48, 0x12, 0x34, 0x40, 0, 64, 6, 0x00, 0x00, 10, 0, 0, 1, 10, 0, 0, 2, // IPv4
            0x03, 0xe8, 0x07, 0xd0, 0, 0, 0, 0, 1, 2, 3, 4, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0, // TCP
        ]);
        // IPv4 checksum: 0x4500 + 0x0030 + 0x1234 + 0x4000 + 0x4006 + 0x0a00 + 0x0001 + 0x0a00
        // + 0x0002 = 0xeb6d, inverted 0x1492.
        expected[VIRTIO_HEADER_LEN + 10..VIRTIO_HEADER_LEN + 12].copy_from_slice(&[0x14, 0x92]);
        // TCP pseudo-header: 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 6 + 28 = 0x1425, not inverted.
        expected[VIRTIO_HEADER_LEN + 36..VIRTIO_HEADER_LEN + 38].copy_from_slice(&[0x14, 0x25]);
        assert_eq!(writes[0].0, expected);
        assert_eq!(writes[0].1, [0, 1, 2, 3, 9, 9, 9, 9]);
    }

    #[test]
    fn udp_merges_only_with_uso() {
        let specs: Vec<Spec> = (0..3).map(|i| udp(false, i, 64)).collect();
        assert_eq!(merged(&specs, true), virtio(GSO_UDP_L4, 28, 64, 20, 6));
        assert_eq!(shape(&specs, false), [1, 1, 1]);
        let v6: Vec<Spec> = (0..3).map(|i| udp(true, i, if i == 2 { 10 } else { 64 })).collect();
        assert_eq!(merged(&v6, true), virtio(GSO_UDP_L4, 48, 64, 40, 6));
    }

    #[test]
    fn single_packets_get_a_zero_header_and_go_whole() {
        let specs = [tcp(false, 0, 100), Spec { flags: TCP_ACK | 0x01, ..tcp(false, 100, 100) }];
        let writes = plan(&specs, true);
        assert_eq!(writes.len(), 2);
        for ((header, payload), spec) in writes.iter().zip(&specs) {
            assert_eq!(header, &[0; VIRTIO_HEADER_LEN]);
            assert_eq!(payload, &build(spec));
        }
    }

    #[test]
    fn tcp_refusals() {
        let next = |spec: Spec| vec![tcp(false, 0, 100), Spec { id: 1, ..spec }];
        // A gap, another ACK number, other options, a larger segment, another window.
        assert_eq!(shape(&next(tcp(false, 101, 100)), false), [1, 1]);
        let mut other_ack = build(&next(tcp(false, 100, 100))[1]);
        other_ack[20 + 11] ^= 1;
        let mut other_window = build(&next(tcp(false, 100, 100))[1]);
        other_window[20 + 15] ^= 1;
        for bad in [other_ack, other_window] {
            let first = build(&tcp(false, 0, 100));
            let mut coalescer = Coalescer::new(false);
            coalescer.plan(&[&first, &bad]);
            assert_eq!(coalescer.writes().count(), 2);
        }
        let with_options = |spec: Spec, option: u8| Spec { options: vec![1, 1, 1, option], ..spec };
        let specs =
            [with_options(tcp(false, 0, 100), 0), with_options(Spec { id: 1, ..tcp(false, 100, 100) }, 1)];
        assert_eq!(shape(&specs, false), [1, 1]);
        assert_eq!(shape(&next(tcp(false, 100, 101)), false), [1, 1]);
        // Same options do merge.
        let specs =
            [with_options(tcp(false, 0, 100), 0), with_options(Spec { id: 1, ..tcp(false, 100, 100) }, 0)];
        assert_eq!(shape(&specs, false), [2]);
        // SYN, FIN, RST, URG, ECE, CWR never merge, neither does a segment without data.
        for flag in [0x02, 0x01, 0x04, 0x20, 0x40, 0x80] {
            assert_eq!(shape(&next(Spec { flags: TCP_ACK | flag, ..tcp(false, 100, 100) }), false), [1, 1]);
            let first = Spec { flags: TCP_ACK | flag, ..tcp(false, 0, 100) };
            assert_eq!(shape(&[first, Spec { id: 1, ..tcp(false, 100, 100) }], false), [1, 1]);
        }
        assert_eq!(shape(&[tcp(false, 0, 0), tcp(false, 0, 100)], false), [1, 1]);
    }

    #[test]
    fn short_or_pushed_segments_end_a_group() {
        let ids = |specs: Vec<Spec>| -> Vec<Spec> {
            specs.into_iter().enumerate().map(|(i, s)| Spec { id: i as u16, ..s }).collect()
        };
        let short = ids(vec![tcp(false, 0, 100), tcp(false, 100, 50), tcp(false, 150, 50)]);
        assert_eq!(shape(&short, false), [2, 1]);
        let pushed = Spec { flags: TCP_ACK | TCP_PSH, ..tcp(false, 100, 100) };
        assert_eq!(shape(&ids(vec![tcp(false, 0, 100), pushed, tcp(false, 200, 100)]), false), [2, 1]);
        let pushed_first = Spec { flags: TCP_ACK | TCP_PSH, ..tcp(false, 0, 100) };
        assert_eq!(shape(&ids(vec![pushed_first, tcp(false, 100, 100)]), false), [1, 1]);
    }

    #[test]
    fn ip_header_refusals() {
        let pair = |change: &dyn Fn(&mut Vec<u8>)| {
            let first = build(&tcp(false, 0, 100));
            let mut second = build(&Spec { id: 1, ..tcp(false, 100, 100) });
            change(&mut second);
            second[36..38].fill(0);
            let l4 = l4_checksum(&second);
            second[36..38].copy_from_slice(&l4.to_be_bytes());
            second[10..12].fill(0);
            let ip = packet::checksum(&second[..20]);
            second[10..12].copy_from_slice(&ip.to_be_bytes());
            let mut coalescer = Coalescer::new(true);
            coalescer.plan(&[&first, &second]);
            coalescer.writes().count()
        };
        assert_eq!(pair(&|_| {}), 1);
        assert_eq!(pair(&|p| p[1] = 1), 2, "TOS");
        assert_eq!(pair(&|p| p[8] = 63), 2, "TTL");
        assert_eq!(pair(&|p| p[6] = 0), 2, "DF");
        assert_eq!(pair(&|p| p[5] = 7), 2, "ID not the next");
        assert_eq!(pair(&|p| p[6] |= 0x20), 2, "more fragments");
        // IPv4 options (IHL 6): the first never starts a group.
        let mut options = build(&tcp(false, 0, 100));
        options[0] = 0x46;
        assert!(Segment::parse(&options, true).is_none());
    }

    #[test]
    fn ipv6_extension_headers_and_other_protocols_never_merge() {
        let mut hop_by_hop = build(&tcp(true, 0, 100));
        hop_by_hop[6] = 0;
        assert!(Segment::parse(&hop_by_hop, true).is_none());
        let mut icmp = build(&tcp(false, 0, 100));
        icmp[9] = 1;
        assert!(Segment::parse(&icmp, true).is_none());
    }

    #[test]
    fn bad_checksums_are_written_alone() {
        let specs = [
            tcp(false, 0, 100),
            Spec { id: 1, ..tcp(false, 100, 100) },
            Spec { id: 2, ..tcp(false, 200, 100) },
        ];
        let mut packets: Vec<Vec<u8>> = specs.iter().map(build).collect();
        packets[1][60] ^= 0xff;
        let slices: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
        let mut coalescer = Coalescer::new(true);
        coalescer.plan(&slices);
        // The bad one closes its flow's group: the third must not jump ahead of it.
        assert_eq!(coalescer.writes().map(|w| w.segments()).collect::<Vec<_>>(), [1, 1, 1]);
        // UDP without a checksum (IPv4's 0) cannot be checked.
        let mut no_checksum = build(&udp(false, 0, 64));
        no_checksum[26..28].fill(0);
        assert!(Segment::parse(&no_checksum, true).is_none());
    }

    #[test]
    fn limits_split_groups() {
        let specs: Vec<Spec> = (0..130).map(|i| udp(false, i, 8)).collect();
        assert_eq!(shape(&specs, true), [64, 64, 2]);
        // 40 bytes of headers, 40,000 of payload: 25,496 more would pass 65,535 bytes.
        let big = [tcp(false, 0, 40_000), Spec { id: 1, ..tcp(false, 40_000, 40_000) }];
        let big = [
            Spec { payload: vec![0; 40_000], ..big[0].clone() },
            Spec { payload: vec![0; 25_496], ..big[1].clone() },
        ];
        assert_eq!(shape(&big, false), [1, 1]);
        let fits = [big[0].clone(), Spec { payload: vec![0; 25_495], ..big[1].clone() }];
        assert_eq!(shape(&fits, false), [2]);
    }

    #[test]
    fn interleaved_flows_keep_their_order() {
        let a = |i: u32| Spec { id: i as u16, ..tcp(false, i * 100, 100) };
        let b = |i: u32| Spec { id: i as u16, ..tcp(true, i * 100, 100) };
        let writes = plan(&[a(0), b(0), a(1), b(1), a(2)], false);
        assert_eq!(writes.len(), 2);
        assert_eq!(shape(&[a(0), b(0), a(1), b(1), a(2)], false), [3, 2]);
        // A flow's packet that cannot join ends its group: later ones do not pass it.
        let fin = Spec { flags: TCP_ACK | 0x01, ..a(1) };
        assert_eq!(shape(&[a(0), fin, a(1)], false), [1, 1, 1]);
    }
}
