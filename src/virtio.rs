//! The virtio-net header (`struct virtio_net_hdr`) that precedes every packet on a TUN with
//! offloads: what the splitter reads from the TUN and the coalescer writes to it. Pure: no I/O.

/// Length of the virtio-net header in front of every frame when offloads are on (`struct
/// virtio_net_hdr`, without `num_buffers`, as tun-rs sets the device up).
pub const VIRTIO_HEADER_LEN: usize = 10;
/// `flags`: the checksum from `csum_start` is still to be completed (`VIRTIO_NET_HDR_F_NEEDS_CSUM`).
pub const FLAG_NEEDS_CSUM: u8 = 1;
/// `gso_type`: one packet, no super-packet.
pub const GSO_NONE: u8 = 0;
/// `gso_type`: a TCP over IPv4 super-packet.
pub const GSO_TCPV4: u8 = 1;
/// `gso_type`: a UDP super-packet (USO), cut into datagrams of `gso_size`.
pub const GSO_UDP_L4: u8 = 5;
/// `gso_type`: a TCP over IPv6 super-packet.
pub const GSO_TCPV6: u8 = 4;
/// The ECN bit of `gso_type`: the TCP super-packet carries CWR on its first segment.
pub const GSO_ECN: u8 = 0x80;

/// The virtio-net header (`struct virtio_net_hdr`; its fields in the host's byte order, as the
/// TUN reads and writes them unless `TUNSETVNETLE`/`TUNSETVNETBE` says otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtioHeader {
    /// `VIRTIO_NET_HDR_F_*`: bit 0 asks for the checksum to be completed.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*`, with the ECN bit (0x80).
    pub gso_type: u8,
    /// Length of the headers (the splitter does not trust it, see `split`).
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where the checksummed region starts (the transport header).
    pub csum_start: u16,
    /// Where, from `csum_start`, the checksum field lies.
    pub csum_offset: u16,
}

impl VirtioHeader {
    /// Decodes the first [`VIRTIO_HEADER_LEN`] bytes of `frame`, if it has them.
    pub fn parse(frame: &[u8]) -> Option<Self> {
        let h = frame.first_chunk::<VIRTIO_HEADER_LEN>()?;
        let word = |at: usize| u16::from_ne_bytes([h[at], h[at + 1]]);
        Some(Self {
            flags: h[0],
            gso_type: h[1],
            hdr_len: word(2),
            gso_size: word(4),
            csum_start: word(6),
            csum_offset: word(8),
        })
    }

    /// The header's bytes, as the TUN reads and writes them.
    pub fn to_bytes(self) -> [u8; VIRTIO_HEADER_LEN] {
        let mut out = [0u8; VIRTIO_HEADER_LEN];
        out[0] = self.flags;
        out[1] = self.gso_type;
        for (at, value) in
            [(2, self.hdr_len), (4, self.gso_size), (6, self.csum_start), (8, self.csum_offset)]
        {
            out[at..at + 2].copy_from_slice(&value.to_ne_bytes());
        }
        out
    }
}
