//! Splits what the TUN hands over with offloads on (a virtio-net header, then one packet or a
//! TSO/USO super-packet) into the IP packets the wire carries, without copying payloads. Pure:
//! no I/O here.
//!
//! A super-packet's segments each get their own headers, written into a small header arena
//! (IPv4 total length, identification and header checksum; IPv6 payload length; TCP sequence
//! number and flags; UDP length; the L4 checksum over pseudo-header, header and payload), while
//! their payloads stay where they are in the frame: a [`Segment`] names both. A packet that is
//! not a super-packet stays whole in the frame, its checksum completed there if the kernel left
//! it partial. The rules are the kernel's GSO rules, as wireguard-go's `gsoSplit` and tun-rs's
//! `gso_split` apply them; the virtio header's `hdr_len` is not trusted (the kernel may set it to
//! the whole first packet on the forward path), the transport header's own length is.

use std::ops::Range;

use crate::packet::{
    Checksum, IPV4_HEADER_LEN, IPV6_HEADER_LEN, PROTO_TCP, PROTO_UDP, TCP_CWR, TCP_FIN, TCP_PSH,
    UDP_HEADER_LEN,
};
use crate::virtio::{
    FLAG_NEEDS_CSUM, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, VIRTIO_HEADER_LEN, VirtioHeader,
};

/// Most segments one super-packet may split into: 64 KiB of TCP at the smallest sensible MSS
/// (512), and the kernel's UDP_MAX_SEGMENTS (128) for USO.
pub const MAX_SEGMENTS_PER_FRAME: usize = 128;

/// Why a frame was refused (it is dropped and counted as malformed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Shorter than the virtio header.
    NoVirtioHeader,
    /// A GSO type this splitter does not know.
    UnknownGsoType,
    /// The checksum start or offset lies outside the packet, or does not fit the protocol.
    ChecksumOutOfRange,
    /// A super-packet with a segment size of 0.
    ZeroSegmentSize,
    /// The IP version does not fit the GSO type, or the IP header is too short or wrong.
    BadIpHeader,
    /// The transport header is malformed or runs past the frame (or `hdr_len` does).
    BadTransportHeader,
    /// A super-packet without payload.
    NoPayload,
    /// More than [`MAX_SEGMENTS_PER_FRAME`] segments.
    TooManySegments,
    /// A segment would not fit an IP packet's length field.
    SegmentTooLarge,
}

impl Refused {
    /// A short description for the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::NoVirtioHeader => "frame shorter than its virtio-net header",
            Refused::UnknownGsoType => "unknown GSO type",
            Refused::ChecksumOutOfRange => "checksum start or offset out of range",
            Refused::ZeroSegmentSize => "GSO segment size 0",
            Refused::BadIpHeader => "IP header does not fit the GSO type",
            Refused::BadTransportHeader => "transport header malformed or past the frame",
            Refused::NoPayload => "GSO super-packet without payload",
            Refused::TooManySegments => "too many GSO segments",
            Refused::SegmentTooLarge => "GSO segment larger than an IP packet",
        }
    }
}

/// One IP packet of a frame: the bytes of `header` in the header arena (empty for a packet that
/// stayed whole), then the bytes of `payload` in the frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Range in the header arena.
    pub header: Range<usize>,
    /// Range in the frame.
    pub payload: Range<usize>,
}

impl Segment {
    /// Whether the packet lies whole in the frame (it was no super-packet).
    pub fn is_whole(&self) -> bool {
        self.header.is_empty()
    }
}

/// Splits `frame` (virtio header + packet) into segments, appended to `segments`, their headers
/// appended to `headers`. A packet that is not a super-packet becomes one whole segment, its
/// checksum completed in the frame if the kernel asked for that. On a refusal nothing is
/// appended and the frame is unchanged.
pub fn split(frame: &mut [u8], headers: &mut Vec<u8>, segments: &mut Vec<Segment>) -> Result<(), Refused> {
    let virtio = VirtioHeader::parse(frame).ok_or(Refused::NoVirtioHeader)?;
    let frame_len = frame.len();
    let packet = &mut frame[VIRTIO_HEADER_LEN..];
    let gso_type = virtio.gso_type & !GSO_ECN;
    if gso_type == GSO_NONE {
        if virtio.flags & FLAG_NEEDS_CSUM != 0 {
            complete_checksum(packet, virtio.csum_start.into(), virtio.csum_offset.into())?;
        }
        segments.push(Segment { header: 0..0, payload: VIRTIO_HEADER_LEN..frame_len });
        return Ok(());
    }
    let plan = Plan::new(packet, virtio, gso_type)?;
    let payload_len = packet.len() - plan.hdr_len;
    let gso_size = usize::from(virtio.gso_size);
    let count = payload_len.div_ceil(gso_size);
    headers.reserve(count * plan.hdr_len);
    for (i, start) in (plan.hdr_len..packet.len()).step_by(gso_size).enumerate() {
        let end = (start + gso_size).min(packet.len());
        let at = headers.len();
        headers.extend_from_slice(&packet[..plan.hdr_len]);
        plan.write(&mut headers[at..], i, end == packet.len(), &packet[start..end]);
        segments.push(Segment {
            header: at..headers.len(),
            payload: VIRTIO_HEADER_LEN + start..VIRTIO_HEADER_LEN + end,
        });
    }
    Ok(())
}

/// Completes a partial checksum (CHECKSUM_PARTIAL): the field at `start + offset` holds the
/// pseudo-header's sum, so the checksum is the complement of the sum from `start` to the end.
fn complete_checksum(packet: &mut [u8], start: usize, offset: usize) -> Result<(), Refused> {
    let at = start + offset;
    if at + 2 > packet.len() {
        return Err(Refused::ChecksumOutOfRange);
    }
    let sum = Checksum::default().add(&packet[start..]).finish();
    packet[at..at + 2].copy_from_slice(&nonzero(sum).to_be_bytes());
    Ok(())
}

/// A checksum of 0 is sent as 0xffff, its equal in one's complement (for UDP, 0 would mean "no
/// checksum"), as the kernel does.
fn nonzero(sum: u16) -> u16 {
    if sum == 0 { 0xffff } else { sum }
}

/// What a super-packet's checked headers say, to write each segment's headers from.
struct Plan {
    v6: bool,
    tcp: bool,
    /// Length of the IP header (with IPv6 extension headers): `csum_start`.
    ip_len: usize,
    /// Length of all headers: `ip_len` + the transport header's own length.
    hdr_len: usize,
    gso_size: u32,
    /// The pseudo-header's addresses and protocol, summed once.
    pseudo: Checksum,
}

impl Plan {
    fn new(packet: &[u8], virtio: VirtioHeader, gso_type: u8) -> Result<Self, Refused> {
        let tcp = match gso_type {
            GSO_TCPV4 | GSO_TCPV6 => true,
            GSO_UDP_L4 => false,
            _ => return Err(Refused::UnknownGsoType),
        };
        if virtio.gso_size == 0 {
            return Err(Refused::ZeroSegmentSize);
        }
        let v6 = match packet.first().map(|b| b >> 4) {
            Some(4) if gso_type != GSO_TCPV6 => false,
            Some(6) if gso_type != GSO_TCPV4 => true,
            _ => return Err(Refused::BadIpHeader),
        };
        let ip_len = usize::from(virtio.csum_start);
        let expected_offset = if tcp { 16 } else { 6 };
        if usize::from(virtio.csum_offset) != expected_offset {
            return Err(Refused::ChecksumOutOfRange);
        }
        let protocol = if tcp { PROTO_TCP } else { PROTO_UDP };
        // The IP header must be what the virtio header says, of a length the segments' headers
        // can be rewritten in (IPv4: at least 20 bytes; IPv6: no extension headers, whose
        // routing header would change the pseudo-header), and its length field must cover
        // exactly the frame: a frame cut short by the read is refused, not split.
        let length_field = |at: usize| usize::from(u16::from_be_bytes([packet[at], packet[at + 1]]));
        if v6 {
            if ip_len != IPV6_HEADER_LEN
                || packet.len() < IPV6_HEADER_LEN
                || packet[6] != protocol
                || length_field(4) + IPV6_HEADER_LEN != packet.len()
            {
                return Err(Refused::BadIpHeader);
            }
        } else if packet.len() < IPV4_HEADER_LEN
            || ip_len < IPV4_HEADER_LEN
            || usize::from(packet[0] & 0x0f) * 4 != ip_len
            || packet[9] != protocol
            || length_field(2) != packet.len()
        {
            return Err(Refused::BadIpHeader);
        }
        let transport_len = if tcp {
            let data_offset = packet.get(ip_len + 12).ok_or(Refused::BadTransportHeader)? >> 4;
            usize::from(data_offset) * 4
        } else {
            UDP_HEADER_LEN
        };
        if transport_len < if tcp { 20 } else { UDP_HEADER_LEN } {
            return Err(Refused::BadTransportHeader);
        }
        let hdr_len = ip_len + transport_len;
        if hdr_len > packet.len() || usize::from(virtio.hdr_len) > packet.len() {
            return Err(Refused::BadTransportHeader);
        }
        let payload_len = packet.len() - hdr_len;
        if payload_len == 0 {
            return Err(Refused::NoPayload);
        }
        if payload_len.div_ceil(usize::from(virtio.gso_size)) > MAX_SEGMENTS_PER_FRAME {
            return Err(Refused::TooManySegments);
        }
        let largest = hdr_len + payload_len.min(usize::from(virtio.gso_size));
        if largest > usize::from(u16::MAX) {
            return Err(Refused::SegmentTooLarge);
        }
        let mut pseudo = Checksum::default();
        pseudo.add(if v6 { &packet[8..40] } else { &packet[12..20] }).add_u16(protocol.into());
        Ok(Self { v6, tcp, ip_len, hdr_len, gso_size: virtio.gso_size.into(), pseudo })
    }

    /// Turns `header` (a copy of the super-packet's headers) into segment `index`'s, carrying
    /// `payload`; `last` tells whether it is the last segment.
    fn write(&self, header: &mut [u8], index: usize, last: bool, payload: &[u8]) {
        let total = self.hdr_len + payload.len();
        let l4_len = total - self.ip_len;
        // The lengths were checked to fit 16 bits in `Plan::new`.
        if self.v6 {
            header[4..6].copy_from_slice(&((total - IPV6_HEADER_LEN) as u16).to_be_bytes());
        } else {
            header[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            let id = u16::from_be_bytes([header[4], header[5]]).wrapping_add(index as u16);
            header[4..6].copy_from_slice(&id.to_be_bytes());
            header[10..12].fill(0);
            let sum = Checksum::default().add(&header[..self.ip_len]).finish();
            header[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        let l4 = &mut header[self.ip_len..];
        let checksum_at = if self.tcp {
            let seq = u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]])
                .wrapping_add(self.gso_size.wrapping_mul(index as u32));
            l4[4..8].copy_from_slice(&seq.to_be_bytes());
            if index > 0 {
                l4[13] &= !TCP_CWR;
            }
            if !last {
                l4[13] &= !(TCP_FIN | TCP_PSH);
            }
            16
        } else {
            l4[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            6
        };
        l4[checksum_at..checksum_at + 2].fill(0);
        let mut sum = self.pseudo;
        sum.add_u16(l4_len as u16).add(l4).add(payload);
        l4[checksum_at..checksum_at + 2].copy_from_slice(&nonzero(sum.finish()).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet;
    use crate::packet::tests::{l4_checksum as l4_check, naive_checksum as naive};

    fn tcp_header(seq: u32, flags: u8) -> Vec<u8> {
        let mut tcp = vec![0u8; 32]; // 20 bytes + 12 of options (data offset 8)
        tcp[..4].copy_from_slice(&[0x1f, 0x90, 0xc3, 0x50]);
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[12] = 8 << 4;
        tcp[13] = flags;
        tcp[14..16].copy_from_slice(&[0xff, 0xff]);
        tcp[20..32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        tcp
    }

    fn ipv4(protocol: u8, rest: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, protocol, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        p[2..4].copy_from_slice(&((20 + rest.len()) as u16).to_be_bytes());
        p.extend_from_slice(rest);
        p
    }

    fn ipv6(protocol: u8, rest: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 0, protocol, 64];
        p[4..6].copy_from_slice(&(rest.len() as u16).to_be_bytes());
        p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p.extend_from_slice(rest);
        p
    }

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 1) as u8).collect()
    }

    fn frame(virtio: VirtioHeader, packet: &[u8]) -> Vec<u8> {
        [&virtio.to_bytes()[..], packet].concat()
    }

    fn gso(gso_type: u8, hdr_len: usize, gso_size: u16, csum_start: usize, csum_offset: u16) -> VirtioHeader {
        VirtioHeader {
            flags: FLAG_NEEDS_CSUM,
            gso_type,
            hdr_len: hdr_len as u16,
            gso_size,
            csum_start: csum_start as u16,
            csum_offset,
        }
    }

    /// Splits and returns each segment's bytes, header and payload joined.
    fn packets(frame: &mut [u8]) -> Result<Vec<Vec<u8>>, Refused> {
        let (mut headers, mut segments) = (Vec::new(), Vec::new());
        split(frame, &mut headers, &mut segments)?;
        Ok(segments
            .iter()
            .map(|s| [&headers[s.header.clone()], &frame[s.payload.clone()]].concat())
            .collect())
    }

    #[test]
    fn a_tcpv4_super_packet_splits_byte_exact_with_valid_checksums() {
        let data = payload(3000);
        let packet = ipv4(PROTO_TCP, &[tcp_header(1000, 0x80 | 0x18 | 0x01), data.clone()].concat());
        let mut f = frame(gso(GSO_TCPV4 | GSO_ECN, 52, 1400, 20, 16), &packet);
        let out = packets(&mut f).unwrap();
        assert_eq!(out.len(), 3);
        for (i, p) in out.iter().enumerate() {
            let chunk = &data[i * 1400..((i + 1) * 1400).min(3000)];
            assert_eq!(p.len(), 52 + chunk.len());
            assert_eq!(&p[52..], chunk);
            assert_eq!(u16::from_be_bytes([p[2], p[3]]) as usize, p.len(), "total length");
            assert_eq!(u16::from_be_bytes([p[4], p[5]]), 0x1234 + i as u16, "identification");
            assert_eq!(naive(&p[..20]), 0, "IPv4 header checksum");
            assert_eq!(l4_check(p), 0, "TCP checksum");
            assert_eq!(u32::from_be_bytes([p[24], p[25], p[26], p[27]]), 1000 + 1400 * i as u32);
            let expected_flags = match i {
                0 => 0x80 | 0x10,
                1 => 0x10,
                _ => 0x18 | 0x01,
            };
            assert_eq!(p[33], expected_flags, "flags of segment {i}");
            // Everything else is the super-packet's (the TCP checksum lies at 36..38).
            assert_eq!(&p[34..36], &packet[34..36]);
            assert_eq!(&p[38..52], &packet[38..52]);
            assert_eq!(&p[12..20], &packet[12..20]);
        }
    }

    #[test]
    fn a_tcpv6_super_packet_splits_with_payload_lengths_and_checksums() {
        let data = payload(2801);
        let packet = ipv6(PROTO_TCP, &[tcp_header(u32::MAX - 100, 0x10), data.clone()].concat());
        let mut f = frame(gso(GSO_TCPV6, 72, 1400, 40, 16), &packet);
        let out = packets(&mut f).unwrap();
        assert_eq!(out.iter().map(Vec::len).collect::<Vec<_>>(), vec![1472, 1472, 73]);
        for (i, p) in out.iter().enumerate() {
            assert_eq!(u16::from_be_bytes([p[4], p[5]]) as usize, p.len() - 40);
            assert_eq!(l4_check(p), 0);
            let seq = u32::from_be_bytes([p[44], p[45], p[46], p[47]]);
            assert_eq!(seq, (u32::MAX - 100).wrapping_add(1400 * i as u32), "sequence wraps");
        }
        assert_eq!(out.iter().flat_map(|p| p[72..].to_vec()).collect::<Vec<_>>(), data);
    }

    #[test]
    fn a_udp_super_packet_splits_into_datagrams_with_their_own_lengths() {
        let data = payload(250);
        let mut udp = vec![0x30, 0x39, 0x00, 0x35, 0, 0, 0, 0];
        udp.extend_from_slice(&data);
        for packet in [ipv4(PROTO_UDP, &udp), ipv6(PROTO_UDP, &udp)] {
            let ip_len = if packet[0] >> 4 == 4 { 20 } else { 40 };
            let mut f = frame(gso(GSO_UDP_L4, ip_len + 8, 100, ip_len, 6), &packet);
            let out = packets(&mut f).unwrap();
            assert_eq!(out.len(), 3);
            for (i, p) in out.iter().enumerate() {
                let udp = &p[ip_len..];
                assert_eq!(u16::from_be_bytes([udp[4], udp[5]]) as usize, udp.len());
                assert_eq!(&udp[8..], &data[i * 100..((i + 1) * 100).min(250)]);
                assert_eq!(l4_check(p), 0);
                assert_eq!(packet::check(p).map(|_| ()), Ok(()));
            }
        }
    }

    #[test]
    fn a_partial_checksum_is_completed_in_the_frame() {
        let mut udp = vec![0x30, 0x39, 0x00, 0x35, 0, 13, 0, 0];
        udp.extend_from_slice(b"hello");
        let mut packet = ipv4(PROTO_UDP, &udp);
        // What the kernel leaves in the field: the pseudo-header's sum, not inverted.
        let pseudo = !naive(&[&packet[12..20], &[0, PROTO_UDP, 0, 13][..]].concat());
        packet[26..28].copy_from_slice(&pseudo.to_be_bytes());
        let virtio = VirtioHeader { gso_type: GSO_NONE, ..gso(0, 0, 0, 20, 6) };
        let mut f = frame(virtio, &packet);
        let out = packets(&mut f).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(l4_check(&out[0]), 0);
        assert_eq!(&f[VIRTIO_HEADER_LEN..], &out[0][..], "completed where it lies");
        // Without the flag nothing changes.
        let mut f = frame(VirtioHeader { flags: 0, ..virtio }, &packet);
        assert_eq!(packets(&mut f).unwrap(), vec![packet]);
    }

    #[test]
    fn hostile_headers_are_refused_and_leave_the_frame_alone() {
        let tcp = ipv4(PROTO_TCP, &[tcp_header(1, 0x10), payload(3000)].concat());
        let good = gso(GSO_TCPV4, 52, 1400, 20, 16);
        let cases: Vec<(VirtioHeader, Vec<u8>, Refused)> = vec![
            (VirtioHeader { gso_type: 2, ..good }, tcp.clone(), Refused::UnknownGsoType),
            (VirtioHeader { gso_size: 0, ..good }, tcp.clone(), Refused::ZeroSegmentSize),
            (VirtioHeader { hdr_len: 4000, ..good }, tcp.clone(), Refused::BadTransportHeader),
            (VirtioHeader { csum_offset: 6, ..good }, tcp.clone(), Refused::ChecksumOutOfRange),
            (VirtioHeader { csum_start: 24, ..good }, tcp.clone(), Refused::BadIpHeader),
            (VirtioHeader { csum_start: 60_000, ..good }, tcp.clone(), Refused::BadIpHeader),
            (VirtioHeader { gso_type: GSO_TCPV6, ..good }, tcp.clone(), Refused::BadIpHeader),
            (VirtioHeader { gso_size: 20, ..good }, tcp.clone(), Refused::TooManySegments),
            (good, ipv4(PROTO_TCP, &tcp_header(1, 0x10)), Refused::NoPayload),
            (good, ipv4(PROTO_TCP, &tcp_header(1, 0x10)[..20]), Refused::BadTransportHeader),
            // Cut short (the IP length says more than the frame holds).
            (good, tcp[..2000].to_vec(), Refused::BadIpHeader),
            (good, tcp[..10].to_vec(), Refused::BadIpHeader),
            (good, vec![], Refused::BadIpHeader),
            (
                VirtioHeader { gso_type: GSO_NONE, csum_start: 3040, ..good },
                tcp.clone(),
                Refused::ChecksumOutOfRange,
            ),
            (
                VirtioHeader { gso_type: GSO_NONE, csum_offset: u16::MAX, ..good },
                tcp.clone(),
                Refused::ChecksumOutOfRange,
            ),
        ];
        for (virtio, packet, refusal) in cases {
            let mut f = frame(virtio, &packet);
            let before = f.clone();
            assert_eq!(packets(&mut f), Err(refusal), "{virtio:?}");
            assert_eq!(f, before);
        }
        // A TCP data offset below 5 words.
        let mut short = tcp.clone();
        short[32] = 4 << 4;
        assert_eq!(packets(&mut frame(good, &short)), Err(Refused::BadTransportHeader));
        // IPv4 that says another protocol than the GSO type.
        let udp = ipv4(PROTO_UDP, &[tcp_header(1, 0x10), payload(3000)].concat());
        assert_eq!(packets(&mut frame(good, &udp)), Err(Refused::BadIpHeader));
        assert_eq!(packets(&mut [0u8; 9]), Err(Refused::NoVirtioHeader));
        // An IPv4 header length below 20 bytes, which the checksum offset agrees with: the
        // segments' headers would be too short to rewrite.
        let udp = ipv4(PROTO_UDP, &[vec![0, 1, 0, 2, 0, 0, 0, 0], payload(3000)].concat());
        let udp_gso = gso(GSO_UDP_L4, 28, 1400, 20, 6);
        assert!(packets(&mut frame(udp_gso, &udp)).is_ok());
        let mut no_header = udp.clone();
        no_header[0] = 0x40;
        let zero = VirtioHeader { csum_start: 0, ..udp_gso };
        assert_eq!(packets(&mut frame(zero, &no_header)), Err(Refused::BadIpHeader));
        // IPv6 whose next header is not the GSO type's protocol.
        let v6 = ipv6(PROTO_UDP, &[tcp_header(1, 0x10), payload(3000)].concat());
        let v6_gso = gso(GSO_TCPV6, 72, 1400, 40, 16);
        assert_eq!(packets(&mut frame(v6_gso, &v6)), Err(Refused::BadIpHeader));
    }

    #[test]
    fn a_refusal_appends_nothing() {
        let (mut headers, mut segments) = (vec![1, 2, 3], Vec::new());
        let mut f = frame(gso(GSO_TCPV4, 52, 0, 20, 16), &ipv4(PROTO_TCP, &tcp_header(1, 0)));
        assert!(split(&mut f, &mut headers, &mut segments).is_err());
        assert_eq!((headers, segments), (vec![1, 2, 3], vec![]));
    }

    #[test]
    fn virtio_headers_round_trip() {
        let virtio = gso(GSO_TCPV6 | GSO_ECN, 74, 1428, 40, 16);
        assert_eq!(VirtioHeader::parse(&virtio.to_bytes()), Some(virtio));
        assert_eq!(VirtioHeader::parse(&[0; 9]), None);
    }
}
