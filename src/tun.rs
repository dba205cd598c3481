//! The TUN device edge: creates the device (IFF_TUN, no packet information) with one queue per
//! data-plane thread, and with virtio-net offloads (TSO/USO, checksum) where the kernel has them;
//! [`TunWriter`] writes received packets to it, coalesced into super-packets where it can.

use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::path::Path;

use tun_rs::{DeviceBuilder, SyncDevice};

use crate::coalesce::{Coalescer, MAX_SEGMENTS};

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
const WRITE_BATCH: usize = MAX_SEGMENTS;

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
/// [`TunBatch::finish`]. Write errors go to the caller's `failed`, which returns how many
/// packets to count as lost, or the error itself when it is fatal (see [`is_gone`]).
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
            // number at most MAX_SEGMENTS + 1, far below IOV_MAX.
            let written = unsafe { libc::writev(fd, slices.as_ptr().cast(), slices.len() as libc::c_int) };
            if written < 0 {
                failures += failed(io::Error::last_os_error())?;
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
