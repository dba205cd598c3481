//! The TUN device edge: creates the device (IFF_TUN, no packet information) with one queue per
//! data-plane thread, and with virtio-net offloads (TSO/USO, checksum) where the kernel has them;
//! [`TunWriter`] writes received packets to it, coalesced into super-packets where it can.

use std::io::{self, IoSlice};
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use tun_rs::{DeviceBuilder, SyncDevice};

use crate::coalesce::{Coalescer, MAX_SEGMENTS_PER_WRITE};

/// Linux limit on interface names (IFNAMSIZ less the terminating NUL).
const MAX_NAME_LEN: usize = 15;

/// A created TUN device: its real name and one handle per queue.
pub struct Tun {
    /// The device name the kernel gave (with `%d` filled in).
    pub name: String,
    /// One handle per queue; several only when the device is multiqueue.
    pub queues: Vec<SyncDevice>,
    /// Whether the queues speak virtio-net headers (TSO/GRO offloads are on).
    pub offload: bool,
    /// Whether the queues also take UDP super-packets (USO), so that datagrams may be joined.
    pub udp_offload: bool,
}

/// Creates the TUN device `name` (a `%d` in it picks a free number) with `queues` queues and
/// the given MTU. Offloads are tried when `offload` is true and left off if the kernel refuses.
pub fn create(name: &str, queues: usize, offload: bool, mtu: u16) -> io::Result<Tun> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.contains(['/', ' ']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{name}` is not a valid interface name (1-{MAX_NAME_LEN} characters, no `/` or space)"),
        ));
    }
    // Attaching to an existing multiqueue TUN would silently share it with its owner.
    if !name.contains('%') && Path::new("/sys/class/net").join(name).exists() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("device {name} already exists (is another udptun running?)"),
        ));
    }
    let build = |offload: bool| {
        DeviceBuilder::new().name(name).mtu(mtu).multi_queue(queues > 1).offload(offload).build_sync()
    };
    let first = match build(offload) {
        Ok(device) => device,
        Err(error) if offload => {
            tracing::warn!("TUN offloads unavailable ({error}); continuing without them");
            build(false)?
        }
        Err(error) => return Err(error),
    };
    let offload = first.tcp_gso();
    let udp_offload = offload && first.udp_gso();
    let name = first.name()?;
    let mut handles = vec![first];
    for _ in 1..queues {
        let queue = handles[0].try_clone()?;
        handles.push(queue);
    }
    for handle in &handles {
        handle.set_nonblocking(true)?;
    }
    Ok(Tun { name, queues: handles, offload, udp_offload })
}

/// Largest frame one TUN read may return: a virtio-net header and an IP packet of 64 KiB (an
/// IPv6 one has its 40-byte header on top of a payload length of up to 65,535).
pub const MAX_FRAME: usize = 10 + 40 + 65_535;

/// Reads batches of frames from a TUN queue into one contiguous arena, each read landing right
/// after the previous one, so that a batch of small packets costs no copies and no buffer per
/// packet. A frame is what one `read` returns: with offloads a virtio-net header and a packet or
/// super-packet, without them one packet. Frames stay valid (and mutable, to complete checksums
/// and clamp MSS in place) until the next [`TunReader::fill`].
pub struct TunReader {
    arena: Vec<u8>,
    frames: Vec<Range<usize>>,
    max_frames: usize,
    drained: bool,
}

impl TunReader {
    /// A reader whose batches hold up to `max_frames` frames in an arena of `arena_bytes` (at
    /// least [`MAX_FRAME`], so that every batch has room for one frame of any size).
    pub fn new(arena_bytes: usize, max_frames: usize) -> Self {
        Self {
            // Zeroed allocations stay untouched (not resident) until frames land in them.
            arena: vec![0u8; arena_bytes.max(MAX_FRAME)],
            frames: Vec::with_capacity(max_frames),
            max_frames: max_frames.max(1),
            drained: false,
        }
    }

    /// Reads frames from the non-blocking `device` until its queue is empty, fewer than
    /// [`MAX_FRAME`] bytes of the arena remain or the batch holds `max_frames` frames. Returns
    /// how many it holds. An error ends the batch: it is returned only if no frame was read
    /// (the next fill meets it again if it lasts).
    pub fn fill(&mut self, device: &impl AsRawFd) -> io::Result<usize> {
        self.frames.clear();
        self.drained = true;
        let mut used = 0;
        while self.frames.len() < self.max_frames && self.arena.len() - used >= MAX_FRAME {
            match read(device.as_raw_fd(), &mut self.arena[used..used + MAX_FRAME]) {
                Ok(len) => {
                    self.frames.push(used..used + len);
                    used += len;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || !self.frames.is_empty() => {
                    return Ok(self.frames.len());
                }
                Err(e) => return Err(e),
            }
        }
        // The batch is full: more may be waiting.
        self.drained = false;
        Ok(self.frames.len())
    }

    /// Whether the last fill found the queue empty (or failed) before its batch was full, so
    /// that reading again before `poll` says there is more would only cost a system call.
    pub fn drained(&self) -> bool {
        self.drained
    }

    /// The frames of the last fill, mutable.
    pub fn frames_mut(&mut self) -> impl Iterator<Item = &mut [u8]> {
        let mut rest: &mut [u8] = &mut self.arena;
        let mut at = 0;
        self.frames.iter().map(move |range| {
            // Frames are ascending and disjoint: skip to this one, split it off.
            let (_, tail) = std::mem::take(&mut rest).split_at_mut(range.start - at);
            let (frame, tail) = tail.split_at_mut(range.len());
            rest = tail;
            at = range.end;
            frame
        })
    }

    /// Frame `index` of the last fill.
    pub fn frame(&self, index: usize) -> &[u8] {
        &self.arena[self.frames[index].clone()]
    }
}

/// One `read(2)` into `buf`.
fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length for the duration of the call.
    let rc = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    usize::try_from(rc).map_err(|_| io::Error::last_os_error())
}

/// Whether a TUN read or write error means the device is gone for good.
pub fn is_gone(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EBADFD | libc::EBADF | libc::ENODEV))
        || error.kind() == io::ErrorKind::BrokenPipe
}

/// Writes the packets of a batch to a TUN queue: with offloads, joined into super-packets by a
/// [`Coalescer`] and written with one `writev` each (virtio-net header and rewritten headers
/// from a small arena, then the payloads where they lie: no copies); without, each packet as
/// received with one `write`. Owns the buffers it needs, so that a warm writer never allocates.
pub struct TunWriter {
    offload: bool,
    coalescer: Coalescer,
    /// The batch's packets, held until the flush (empty between batches; see `recycle`).
    packets: Vec<&'static [u8]>,
    /// One write's slices (empty between writes).
    slices: Vec<IoSlice<'static>>,
}

/// Packets held before they are coalesced and written: the most one super-packet may carry.
const WRITE_BATCH: usize = MAX_SEGMENTS_PER_WRITE;

impl TunWriter {
    /// A writer for a queue that speaks virtio-net headers when `offload` is true, and takes
    /// UDP super-packets (USO) when `udp_offload` is.
    pub fn new(offload: bool, udp_offload: bool) -> Self {
        Self {
            offload,
            coalescer: Coalescer::new(udp_offload),
            packets: Vec::with_capacity(WRITE_BATCH),
            slices: Vec::with_capacity(WRITE_BATCH + 1),
        }
    }

    /// Starts a batch of packets that live for `'a` (in the receive buffers) for `device`.
    pub fn batch<'w, 'a>(&'w mut self, device: &'w SyncDevice) -> TunBatch<'w, 'a> {
        let packets = recycle(std::mem::take(&mut self.packets));
        TunBatch { writer: self, device, packets }
    }
}

/// A batch being written (see [`TunWriter::batch`]): [`TunBatch::push`] each packet, then
/// [`TunBatch::finish`]. Each failed write goes to the caller's `failed`, which returns 1 to
/// count it (the batch counts every packet the write carried as lost), or the error itself when
/// it is fatal (see [`is_gone`]).
pub struct TunBatch<'w, 'a> {
    writer: &'w mut TunWriter,
    device: &'w SyncDevice,
    packets: Vec<&'a [u8]>,
}

impl<'a> TunBatch<'_, 'a> {
    /// Adds `packet` (one whole IP packet); returns the failed writes it caused.
    pub fn push(
        &mut self,
        packet: &'a [u8],
        failed: &mut impl FnMut(io::Error) -> io::Result<u64>,
    ) -> io::Result<u64> {
        if !self.writer.offload {
            return self.device.send(packet).map_or_else(failed, |_| Ok(0));
        }
        self.packets.push(packet);
        if self.packets.len() < WRITE_BATCH {
            return Ok(0);
        }
        self.flush(failed)
    }

    /// Writes what is held; returns the failed writes.
    pub fn finish(mut self, failed: &mut impl FnMut(io::Error) -> io::Result<u64>) -> io::Result<u64> {
        self.flush(failed)
    }

    fn flush(&mut self, failed: &mut impl FnMut(io::Error) -> io::Result<u64>) -> io::Result<u64> {
        if self.packets.is_empty() {
            return Ok(0);
        }
        let writer = &mut *self.writer;
        writer.coalescer.plan(&self.packets);
        let fd = self.device.as_raw_fd();
        let mut failures = 0;
        let mut slices: Vec<IoSlice<'_>> = recycle(std::mem::take(&mut writer.slices));
        for write in writer.coalescer.writes() {
            slices.clear();
            slices.push(IoSlice::new(write.header));
            slices.extend(write.payloads(&self.packets).map(IoSlice::new));
            // SAFETY: `IoSlice` is ABI-compatible with `iovec`; the slices outlive the call and
            // number at most MAX_SEGMENTS_PER_WRITE + 1, far below IOV_MAX.
            let written = unsafe { libc::writev(fd, slices.as_ptr().cast(), slices.len() as libc::c_int) };
            if written < 0 {
                // Every packet the write carried is lost.
                failures += failed(io::Error::last_os_error())? * write.segments() as u64;
            }
        }
        writer.slices = recycle(slices);
        self.packets.clear();
        Ok(failures)
    }
}

impl Drop for TunBatch<'_, '_> {
    fn drop(&mut self) {
        self.writer.packets = recycle(std::mem::take(&mut self.packets));
    }
}

/// Empties `items` and gives back its allocation as a vector of another type of the same
/// layout (here: the same slices with another lifetime), so that buffers of borrowed slices
/// are reused from batch to batch instead of allocated.
fn recycle<A, B>(mut items: Vec<A>) -> Vec<B> {
    items.clear();
    items.into_iter().map(|_| unreachable!("the vector is empty")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::UdpSocket;

    /// A non-blocking UDP socket stands in for a TUN queue: one `read` returns one datagram.
    fn queue_with(datagrams: &[&[u8]]) -> UdpSocket {
        let queue = UdpSocket::bind("127.0.0.1:0").unwrap();
        queue.set_nonblocking(true).unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        for datagram in datagrams {
            sender.send_to(datagram, queue.local_addr().unwrap()).unwrap();
        }
        queue
    }

    #[test]
    fn a_fill_reads_frames_back_to_back_until_the_queue_is_empty() {
        let queue = queue_with(&[b"one", b"", b"three", &[7; 1500]]);
        let mut reader = TunReader::new(2 * MAX_FRAME, 256);
        assert_eq!(reader.fill(&queue).unwrap(), 4);
        assert!(reader.drained(), "the queue ran dry before the batch was full");
        assert_eq!(reader.frames, vec![0..3, 3..3, 3..8, 8..1508], "each right after the last");
        let frames: Vec<Vec<u8>> = reader.frames_mut().map(|f| f.to_vec()).collect();
        assert_eq!(frames, vec![b"one".to_vec(), vec![], b"three".to_vec(), vec![7; 1500]]);
        reader.frames_mut().nth(2).unwrap()[0] = b'T';
        assert_eq!(reader.frame(2), b"Three");
        assert_eq!(reader.fill(&queue).unwrap(), 0, "empty queue: an empty batch");
    }

    #[test]
    fn a_fill_stops_at_the_frame_limit_and_when_the_arena_has_no_room_for_a_largest_frame() {
        let queue = queue_with(&[b"a", b"b", b"c"]);
        let mut reader = TunReader::new(2 * MAX_FRAME, 2);
        assert_eq!(reader.fill(&queue).unwrap(), 2);
        assert!(!reader.drained(), "a full batch: more may be waiting");
        assert_eq!(reader.fill(&queue).unwrap(), 1);
        assert!(reader.drained());
        // Room for one largest frame and a half: a second read never starts.
        let queue = queue_with(&[b"a", b"b"]);
        let mut reader = TunReader::new(MAX_FRAME * 3 / 2, 256);
        assert_eq!(reader.fill(&queue).unwrap(), 2, "small frames leave room");
        let queue = queue_with(&[&[1; 40_000], b"b"]);
        assert_eq!(reader.fill(&queue).unwrap(), 1, "a large frame leaves too little");
        assert!(!reader.drained(), "a full arena: more may be waiting");
        assert_eq!(reader.fill(&queue).unwrap(), 1);
    }
}
