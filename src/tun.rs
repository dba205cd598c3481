//! The TUN device edge: creates the device (IFF_TUN, no packet information) with one queue per
//! data-plane thread, and with virtio-net offloads (TSO/USO, checksum) where the kernel has them.

use std::io;
use std::path::Path;

use tun_rs::{DeviceBuilder, SyncDevice};

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
    let name = first.name()?;
    let mut handles = vec![first];
    for _ in 1..queues {
        let queue = handles[0].try_clone()?;
        handles.push(queue);
    }
    for handle in &handles {
        handle.set_nonblocking(true)?;
    }
    Ok(Tun { name, queues: handles, offload })
}

/// Whether a TUN read or write error means the device is gone for good.
pub fn is_gone(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EBADFD | libc::EBADF | libc::ENODEV))
        || error.kind() == io::ErrorKind::BrokenPipe
}
