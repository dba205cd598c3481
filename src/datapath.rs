//! The data plane: per queue, one thread moves packets TUN → UDP and one moves them UDP → TUN.
//!
//! Each thread works in batches: it reads as many packets as are waiting, decides for all of
//! them with one load of the peer table, and hands them on with as few system calls as the
//! kernel allows. Nothing here allocates once the buffers are warm, takes a lock, or logs more
//! than once a second.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;

use arc_swap::ArcSwap;
use socket2::Socket;
use tun_rs::{GROTable, SyncDevice, VIRTIO_NET_HDR_LEN};

use crate::packet;
use crate::peers::{PeerTable, Verdict};
use crate::stats::{Drop, RateLimit, Stats};
use crate::tun;
use crate::udp::{self, Receiver, Sender};

/// Packets per TUN → UDP batch. A 64 KiB TSO packet splits into at most
/// [`SUPER_PACKET_SEGMENTS`] packets, so a batch always has room for one more read.
const OUTBOUND_BATCH: usize = 256;
const SUPER_PACKET_SEGMENTS: usize = 128;
/// Largest IP packet the TUN can hand over or take.
const MAX_PACKET: usize = 65_535;
/// UDP receive buffers per `recvmmsg` with GRO (each holds up to 64 datagrams) and without.
const GRO_RECEIVE_BATCH: usize = 8;
const PLAIN_RECEIVE_BATCH: usize = 64;

/// What the data plane shares with the control plane.
pub struct Shared {
    /// The current peer table; the control plane swaps in new ones whole.
    pub table: ArcSwap<PeerTable>,
    /// Counters.
    pub stats: Stats,
}

/// What a data-plane thread reports to the main thread when it cannot go on.
#[derive(Debug)]
pub struct Fatal(pub String);

/// One TUN queue and the UDP socket that serves it.
pub struct Queue {
    /// The TUN queue.
    pub device: SyncDevice,
    /// The UDP socket.
    pub socket: Socket,
}

/// Settings every data-plane thread shares.
#[derive(Clone, Copy)]
pub struct Options {
    /// The TUN queues use virtio-net headers (TSO split on read, GRO coalescing on write).
    pub tun_offload: bool,
    /// Send with UDP GSO.
    pub gso: bool,
    /// Receive with UDP GRO.
    pub gro: bool,
    /// The socket is IPv6 (dual-stack): IPv4 peers are addressed as v4-mapped.
    pub socket_is_v6: bool,
}

/// Starts the two threads of each queue. A thread that hits an unrecoverable error (the TUN
/// device removed, the socket gone) reports it through `on_fatal` and stops.
pub fn spawn(
    queues: Vec<Queue>,
    options: Options,
    shared: &Arc<Shared>,
    on_fatal: Arc<dyn Fn(Fatal) + Send + Sync>,
) -> io::Result<()> {
    let limits = Arc::new(Limits::default());
    for (index, queue) in queues.into_iter().enumerate() {
        let queue = Arc::new(queue);
        for direction in [Direction::Outbound, Direction::Inbound] {
            let (queue, shared, on_fatal, limits) =
                (queue.clone(), shared.clone(), on_fatal.clone(), limits.clone());
            thread::Builder::new().name(format!("{}-{index}", direction.name())).spawn(move || {
                let result = match direction {
                    Direction::Outbound => outbound(&queue, options, &shared, &limits),
                    Direction::Inbound => inbound(&queue, options, &shared, &limits),
                };
                if let Err(error) = result {
                    on_fatal(Fatal(format!("{} thread: {error}", direction.name())));
                }
            })?;
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Direction {
    Outbound,
    Inbound,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Outbound => "tun-to-udp",
            Direction::Inbound => "udp-to-tun",
        }
    }
}

/// Log rate limits, one per kind of message, shared by all threads.
struct Limits {
    malformed: RateLimit,
    send_error: RateLimit,
    tun_read_error: RateLimit,
    tun_write_error: RateLimit,
    udp_read_error: RateLimit,
}

impl Default for Limits {
    fn default() -> Self {
        let second = || RateLimit::new(1000);
        Self {
            malformed: second(),
            send_error: second(),
            tun_read_error: second(),
            tun_write_error: second(),
            udp_read_error: second(),
        }
    }
}

/// Logs a warning unless `limit` holds it back, telling how many were held back before it.
macro_rules! warn_limited {
    ($limit:expr, $($arg:tt)+) => {
        if let Some(suppressed) = $limit.allow() {
            tracing::warn!(suppressed, $($arg)+);
        }
    };
}

/// Reuses a vector's allocation for borrows of a new lifetime (the vector is emptied).
fn recycle<'b>(mut slices: Vec<IoSlice<'_>>) -> Vec<IoSlice<'b>> {
    slices.clear();
    slices.into_iter().map(|_| unreachable!("the vector is empty")).collect()
}

/// TUN → UDP: read packets (splitting TSO super-packets), route them, send them.
fn outbound(queue: &Queue, options: Options, shared: &Shared, limits: &Limits) -> io::Result<()> {
    let device = &queue.device;
    let mut raw = vec![0u8; VIRTIO_NET_HDR_LEN + MAX_PACKET];
    // Zeroed allocations stay untouched (not resident) until a packet lands in them; cloning
    // one buffer (`vec![buf; n]`) would write every byte.
    let mut packets: Vec<Vec<u8>> = (0..OUTBOUND_BATCH).map(|_| vec![0u8; MAX_PACKET]).collect();
    let mut sizes = vec![0usize; OUTBOUND_BATCH];
    let mut datagrams: Vec<(SocketAddr, usize)> = Vec::with_capacity(OUTBOUND_BATCH);
    let mut payload_storage: Vec<IoSlice<'static>> = Vec::with_capacity(OUTBOUND_BATCH);
    let mut reply = vec![0u8; VIRTIO_NET_HDR_LEN + MAX_PACKET];
    let reply_offset = if options.tun_offload { VIRTIO_NET_HDR_LEN } else { 0 };
    let mut sender = Sender::new(options.gso);

    loop {
        // Read until the queue is empty or the batch is full.
        let mut filled = 0;
        while OUTBOUND_BATCH - filled >= SUPER_PACKET_SEGMENTS {
            match device.recv_multiple(&mut raw, &mut packets[filled..], &mut sizes[filled..], 0) {
                Ok(count) => filled += count,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if filled > 0 {
                        break;
                    }
                    tun::wait_readable(device)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if tun::is_gone(&e) => return Err(e),
                // A super-packet the splitter refused: drop it, keep going.
                Err(e) => {
                    shared.stats.drop(Drop::Malformed, 1);
                    warn_limited!(limits.tun_read_error, "dropped a packet read from the TUN: {e}");
                }
            }
        }

        let table = shared.table.load();
        let mut payloads = recycle(std::mem::take(&mut payload_storage));
        datagrams.clear();
        let (mut unreachable, mut ignored) = (0, 0);
        for (packet, &size) in packets.iter().zip(&sizes[..filled]) {
            let packet = &packet[..size];
            match table.route(packet) {
                Verdict::Send(peer) => {
                    datagrams.push((udp::to_socket_family(peer, options.socket_is_v6), size));
                    payloads.push(IoSlice::new(packet));
                }
                Verdict::Unreachable => {
                    unreachable += 1;
                    if let Some(len) = packet::unreachable(packet, &mut reply[reply_offset..]) {
                        reply[..reply_offset].fill(0);
                        if let Err(e) = device.send(&reply[..reply_offset + len]) {
                            shared.stats.drop(Drop::TunWriteError, 1);
                            warn_limited!(
                                limits.tun_write_error,
                                "writing an ICMP error to the TUN failed: {e}"
                            );
                        }
                    }
                }
                Verdict::Ignore => ignored += 1,
            }
        }
        shared.stats.drop(Drop::NoMapping, unreachable);
        shared.stats.drop(Drop::Ignored, ignored);

        let mut failed = 0u64;
        let mut failed_bytes = 0u64;
        sender.send(&queue.socket, &datagrams, &payloads, &mut |failure| {
            failed += 1;
            failed_bytes += datagrams[failure.index].1 as u64;
            warn_limited!(
                limits.send_error,
                "sending to {} failed: {}",
                datagrams[failure.index].0,
                failure.error
            );
        });
        shared.stats.drop(Drop::SendError, failed);
        let bytes: u64 = datagrams.iter().map(|d| d.1 as u64).sum();
        add(&shared.stats.sent_packets, datagrams.len() as u64 - failed);
        add(&shared.stats.sent_bytes, bytes - failed_bytes);
        payload_storage = recycle(payloads);
    }
}

/// UDP → TUN: receive datagrams, check each is one whole IP packet, write them to the TUN
/// (coalescing TCP segments into super-packets when offloads are on).
fn inbound(queue: &Queue, options: Options, shared: &Shared, limits: &Limits) -> io::Result<()> {
    let device = &queue.device;
    let mut receiver = if options.gro {
        Receiver::new(GRO_RECEIVE_BATCH, udp::GRO_BUFFER_BYTES)
    } else {
        Receiver::new(PLAIN_RECEIVE_BATCH, MAX_PACKET)
    };
    let mut gro_table = GROTable::default();
    let mut pending: Vec<Vec<u8>> = Vec::new();

    loop {
        if let Err(e) = receiver.recv(&queue.socket) {
            if matches!(e.raw_os_error(), Some(libc::EBADF | libc::ENOTSOCK)) {
                return Err(e);
            }
            warn_limited!(limits.udp_read_error, "receiving from the UDP socket failed: {e}");
            continue;
        }
        let (mut count, mut bytes, mut malformed, mut write_failures) = (0u64, 0u64, 0u64, 0u64);
        let mut used = 0;
        for (source, datagram) in receiver.datagrams() {
            if let Err(reason) = packet::check(datagram) {
                malformed += 1;
                warn_limited!(limits.malformed, "dropped a datagram from {source}: {}", reason.as_str());
                continue;
            }
            count += 1;
            bytes += datagram.len() as u64;
            if options.tun_offload {
                // The GRO table needs each packet in its own buffer after a virtio header.
                if used == pending.len() {
                    pending.push(Vec::with_capacity(VIRTIO_NET_HDR_LEN + MAX_PACKET));
                }
                let buffer = &mut pending[used];
                buffer.clear();
                buffer.resize(VIRTIO_NET_HDR_LEN, 0);
                buffer.extend_from_slice(datagram);
                used += 1;
            } else if let Err(e) = device.send(datagram) {
                if tun::is_gone(&e) {
                    return Err(e);
                }
                write_failures += 1;
                warn_limited!(limits.tun_write_error, "writing to the TUN failed: {e}");
            }
        }
        let written = match used {
            0 => Ok(0),
            _ => device.send_multiple(&mut gro_table, &mut pending[..used], VIRTIO_NET_HDR_LEN),
        };
        if let Err(e) = written {
            if tun::is_gone(&e) {
                return Err(e);
            }
            write_failures += 1;
            warn_limited!(limits.tun_write_error, "writing to the TUN failed: {e}");
        }
        shared.stats.drop(Drop::Malformed, malformed);
        shared.stats.drop(Drop::TunWriteError, write_failures);
        add(&shared.stats.received_packets, count);
        add(&shared.stats.received_bytes, bytes);
    }
}

fn add(counter: &std::sync::atomic::AtomicU64, value: u64) {
    if value > 0 {
        counter.fetch_add(value, std::sync::atomic::Ordering::Relaxed);
    }
}
