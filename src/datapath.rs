//! The data plane: one thread per queue moves packets TUN → UDP and UDP → TUN.
//!
//! Each thread works in batches: it reads as many packets as are waiting, decides for all of
//! them with one load of the peer table, and hands them on with as few system calls as the
//! kernel allows. Nothing here allocates once the buffers are warm, takes a lock, or logs more
//! than once a second.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use socket2::Socket;
use tun_rs::{GROTable, SyncDevice, VIRTIO_NET_HDR_LEN};

use crate::keepalive::{self, Key};
use crate::packet;
use crate::peers::{Admission, KeepaliveOutcome, PeerId, PeerTable, Roaming, Verdict};
use crate::split::{self, Segment};
use crate::stats::{
    DropReason, KeepaliveRefusal, RateLimit, Shared, TokenBucket, Traffic, clock_ms, clock_ns,
};
use crate::tun::{self, TunReader};
use crate::udp::{self, Receiver, Sender};

/// Frames per TUN → UDP batch, and the arena they are read into: hundreds of small packets, or
/// at least four 64 KiB TSO super-packets (each up to [`split::MAX_SEGMENTS`] datagrams).
const OUTBOUND_BATCH: usize = 256;
const OUTBOUND_ARENA: usize = 4 * tun::MAX_FRAME;
/// Largest IP packet the TUN can hand over or take.
const MAX_PACKET: usize = 65_535;
/// Packets per coalescing write to the TUN (see `write_coalesced`); also the size of the pool
/// of packet buffers on the receive side, which so becomes resident soon after start.
const GRO_WRITE_BATCH: usize = 64;
/// UDP receive buffers per `recvmmsg` with GRO (each holds up to 64 datagrams) and without.
const GRO_RECEIVE_BATCH: usize = 4;
const PLAIN_RECEIVE_BATCH: usize = 64;
/// ICMP errors about unmapped destinations written into the TUN, at most, per second and at
/// once, by all threads together: a flood to unmapped addresses costs a counter, not a flood of
/// replies (the kernel limits the errors it originates the same way).
const ICMP_ERRORS_PER_SECOND: u32 = 1000;
const ICMP_ERROR_BURST: u32 = 50;

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
    /// How long a thread keeps looking for work before it sleeps.
    pub busy_poll: Duration,
    /// Accept packets whatever their outer source address (no source check).
    pub accept_any_source: bool,
    /// When a datagram from another port of a peer's IP moves the peer.
    pub roaming: Roaming,
    /// The shared key that authenticates keepalives (`--key`).
    pub key: Option<Key>,
    /// The device MTU that the MSS of TCP SYNs crossing the tunnel (either way) is lowered to
    /// fit, or `None` with `--no-clamp-mss`.
    pub clamp_mss: Option<u16>,
}

/// Starts one thread per queue. A thread that hits an unrecoverable error (the TUN device
/// removed, the socket gone) reports it through `on_fatal` and stops.
pub fn spawn(
    queues: Vec<Queue>,
    options: Options,
    shared: &Arc<Shared>,
    on_fatal: Arc<dyn Fn(Fatal) + Send + Sync>,
) -> io::Result<()> {
    let limits = Arc::new(Limits::default());
    for (index, queue) in queues.into_iter().enumerate() {
        let (shared, on_fatal, limits) = (shared.clone(), on_fatal.clone(), limits.clone());
        thread::Builder::new().name(format!("queue-{index}")).spawn(move || {
            if let Err(error) = run_queue(&queue, options, &shared, &limits) {
                on_fatal(Fatal(format!("queue {index}: {error}")));
            }
        })?;
    }
    Ok(())
}

/// One queue's loop: move whatever is waiting in either direction; when nothing is, keep
/// looking for `busy_poll` before sleeping in `poll`, so that a reply that follows a request
/// within that window costs no thread wake-up (measured: ping through the tunnel 213 → 55 µs
/// average on the benchmark machine). Polls yield the CPU, since spinning on the two cores the
/// benchmark shares with its senders and receivers made latency ten times worse.
fn run_queue(queue: &Queue, options: Options, shared: &Shared, limits: &Limits) -> io::Result<()> {
    let mut outbound = Outbound::new(options);
    let mut inbound = Inbound::new(options);
    let mut idle_since = Instant::now();
    loop {
        let sent = outbound.step(queue, options, shared, limits)?;
        let received = inbound.step(queue, options, shared, limits)?;
        if sent || received {
            idle_since = Instant::now();
        } else if idle_since.elapsed() < options.busy_poll {
            thread::yield_now();
        } else {
            wait_readable(queue)?;
            idle_since = Instant::now();
        }
    }
}

/// Sleeps until the TUN queue or the socket has something to read.
fn wait_readable(queue: &Queue) -> io::Result<()> {
    let mut fds = [
        libc::pollfd { fd: queue.device.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: queue.socket.as_raw_fd(), events: libc::POLLIN, revents: 0 },
    ];
    loop {
        // SAFETY: two valid pollfds.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if rc >= 0 {
            if fds[0].revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                return Err(gone(io::Error::from(io::ErrorKind::BrokenPipe)));
            }
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// Rate limits shared by all threads: the log's, one per kind of message, and the ICMP errors'.
struct Limits {
    icmp_errors: TokenBucket,
    malformed: RateLimit,
    source_check: RateLimit,
    new_port: RateLimit,
    roaming_refused: RateLimit,
    keepalive_refused: RateLimit,
    send_error: RateLimit,
    tun_read_error: RateLimit,
    tun_write_error: RateLimit,
    udp_read_error: RateLimit,
}

impl Default for Limits {
    fn default() -> Self {
        let second = || RateLimit::new(1000);
        Self {
            icmp_errors: TokenBucket::new(ICMP_ERRORS_PER_SECOND, ICMP_ERROR_BURST),
            malformed: second(),
            source_check: second(),
            new_port: second(),
            roaming_refused: second(),
            keepalive_refused: second(),
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

/// A packet bound for a peer: which frame of the batch and which segment of it.
struct Outgoing {
    frame: usize,
    segment: Segment,
    to: SocketAddr,
    peer: PeerId,
}

/// TUN → UDP: read frames, split TSO super-packets into segments (headers in a small arena,
/// payloads left in the frames), route them, send them.
struct Outbound {
    reader: TunReader,
    /// The headers of the segments of split super-packets.
    headers: Vec<u8>,
    /// The segments of the frame being split.
    segments: Vec<Segment>,
    outgoing: Vec<Outgoing>,
    /// Indexes of the datagrams whose send failed, ascending.
    failed: Vec<usize>,
    reply: Vec<u8>,
    reply_offset: usize,
    sender: Sender,
}

impl Outbound {
    fn new(options: Options) -> Self {
        Self {
            reader: TunReader::new(OUTBOUND_ARENA, OUTBOUND_BATCH),
            headers: Vec::new(),
            segments: Vec::new(),
            outgoing: Vec::with_capacity(OUTBOUND_BATCH),
            failed: Vec::new(),
            reply: vec![0u8; VIRTIO_NET_HDR_LEN + MAX_PACKET],
            reply_offset: if options.tun_offload { VIRTIO_NET_HDR_LEN } else { 0 },
            sender: Sender::new(options.gso),
        }
    }

    /// Reads what the TUN queue holds (up to a batch) and sends it. Returns whether there was
    /// anything.
    fn step(
        &mut self,
        queue: &Queue,
        options: Options,
        shared: &Shared,
        limits: &Limits,
    ) -> io::Result<bool> {
        let device = &queue.device;
        match self.reader.fill(device) {
            Ok(0) => return Ok(false),
            Ok(_) => {}
            Err(e) if tun::is_gone(&e) => return Err(gone(e)),
            Err(e) => {
                warn_limited!(limits.tun_read_error, "reading from the TUN failed: {e}");
                return Ok(true);
            }
        }

        let table = shared.table.load();
        let (headers, segments, outgoing) = (&mut self.headers, &mut self.segments, &mut self.outgoing);
        headers.clear();
        outgoing.clear();
        let (mut malformed, mut unreachable, mut ignored, mut suppressed, mut clamped) = (0, 0, 0, 0, 0);
        // Read once per batch, and only if an error is due.
        let mut now_ns = None;
        for (index, frame) in self.reader.frames_mut().enumerate() {
            segments.clear();
            if !options.tun_offload {
                segments.push(Segment { header: 0..0, payload: 0..frame.len() });
            } else if let Err(refusal) = split::split(frame, headers, segments) {
                malformed += 1;
                warn_limited!(limits.malformed, "dropped a frame read from the TUN: {}", refusal.as_str());
                continue;
            }
            // Every segment of a frame has the frame's addresses: one verdict for them all.
            let start = self.reply_offset.min(frame.len());
            let packet = &frame[start..];
            match table.route(packet) {
                Verdict::Send(to, peer) => {
                    let to = udp::to_socket_family(to, options.socket_is_v6);
                    for segment in segments.drain(..) {
                        // Only a whole packet can be a SYN (the kernel never makes a SYN a
                        // super-packet), so clamping in place in the frame is enough.
                        if segment.is_whole() {
                            clamped += clamp_mss(&mut frame[segment.payload.clone()], options);
                        }
                        outgoing.push(Outgoing { frame: index, segment, to, peer });
                    }
                }
                Verdict::Unreachable => {
                    unreachable += segments.len() as u64;
                    let offset = self.reply_offset;
                    let allow = || {
                        let now = *now_ns.get_or_insert_with(clock_ns);
                        let allowed = limits.icmp_errors.take(now);
                        suppressed += u64::from(!allowed);
                        allowed
                    };
                    if let Some(len) = packet::unreachable_limited(packet, &mut self.reply[offset..], allow) {
                        self.reply[..offset].fill(0);
                        if let Err(e) = device.send(&self.reply[..offset + len]) {
                            shared.stats.drop(DropReason::TunWriteError, tun_write_failed(e, limits)?);
                        }
                    }
                }
                Verdict::Ignore => ignored += segments.len() as u64,
            }
        }
        shared.stats.drop(DropReason::Malformed, malformed);
        shared.stats.drop(DropReason::NoMapping, unreachable);
        shared.stats.drop(DropReason::Ignored, ignored);
        add(&shared.stats.icmp_errors_suppressed, suppressed);
        add(&shared.stats.mss_clamped, clamped);

        let mut batch = self.sender.batch();
        for out in outgoing.iter() {
            let frame = self.reader.frame(out.frame);
            batch.push(
                out.to,
                out.peer,
                [&headers[out.segment.header.clone()], &frame[out.segment.payload.clone()]],
            );
        }
        let failed = &mut self.failed;
        failed.clear();
        batch.send(&queue.socket, &mut |failure| {
            failed.push(failure.index);
            warn_limited!(
                limits.send_error,
                "sending to {} failed: {}",
                outgoing[failure.index].to,
                failure.error
            );
        });
        shared.stats.drop(DropReason::SendError, failed.len() as u64);
        let mut per_peer = PerPeer::default();
        let mut failures = failed.iter().peekable();
        for (index, transmit) in batch.transmits().iter().enumerate() {
            if failures.next_if_eq(&&index).is_none() {
                per_peer.add(&table, transmit.peer, transmit.len, |traffic, packets, bytes| {
                    traffic.add_sent(packets, bytes)
                });
            }
        }
        let (packets, bytes) =
            per_peer.finish(&table, |traffic, packets, bytes| traffic.add_sent(packets, bytes));
        add(&shared.stats.sent_packets, packets);
        add(&shared.stats.sent_bytes, bytes);
        Ok(true)
    }
}

/// UDP → TUN: receive datagrams, check each is one whole IP packet, write them to the TUN
/// (coalescing TCP segments into super-packets when offloads are on).
struct Inbound {
    receiver: Receiver,
    gro_table: GROTable,
    pending: Vec<Vec<u8>>,
}

impl Inbound {
    fn new(options: Options) -> Self {
        Self {
            receiver: if options.gro {
                Receiver::new(GRO_RECEIVE_BATCH, udp::GRO_BUFFER_BYTES)
            } else {
                Receiver::new(PLAIN_RECEIVE_BATCH, MAX_PACKET)
            },
            gro_table: GROTable::default(),
            pending: Vec::new(),
        }
    }

    /// Takes what the socket holds (up to a batch) and writes it to the TUN. Returns whether
    /// there was anything.
    fn step(
        &mut self,
        queue: &Queue,
        options: Options,
        shared: &Shared,
        limits: &Limits,
    ) -> io::Result<bool> {
        let device = &queue.device;
        match self.receiver.recv(&queue.socket) {
            Ok(0) => return Ok(false),
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBADF | libc::ENOTSOCK)) => return Err(e),
            Err(e) => {
                warn_limited!(limits.udp_read_error, "receiving from the UDP socket failed: {e}");
                return Ok(true);
            }
        }
        let table = shared.table.load();
        let now = clock_ms();
        let (mut malformed, mut write_failures, mut unattributed, mut unattributed_bytes) = (0, 0, 0, 0);
        let mut per_peer = PerPeer::default();
        let count_received = |traffic: &Traffic, packets, bytes| traffic.add_received(packets, bytes, now);
        let (mut keepalives, mut spoofed, mut roaming_refused, mut clamped) = (0u64, 0u64, 0u64, 0u64);
        let mut used = 0;
        for (source, datagram) in self.receiver.datagrams() {
            if datagram.is_empty() {
                keepalives += 1;
                roaming_refused += note_admission(table.keepalive_from(source, now, options.roaming), limits);
                continue;
            }
            if datagram[0] == keepalive::KIND {
                keepalives += 1;
                authenticated_keepalive(&table, options.key.as_ref(), source, datagram, now, shared, limits);
                continue;
            }
            if let Err(reason) = packet::check(datagram) {
                malformed += 1;
                warn_limited!(limits.malformed, "dropped a datagram from {source}: {}", reason.as_str());
                continue;
            }
            let (admission, peer) =
                table.admit(datagram, source, options.accept_any_source, now, options.roaming);
            roaming_refused += note_admission(admission, limits);
            if admission == Admission::Rejected {
                spoofed += 1;
                warn_limited!(
                    limits.source_check,
                    "dropped a packet from {}, received from {source}: the table maps that address to \
                     another peer (--accept-any-source turns this check off)",
                    packet::source(datagram).map_or("?".to_string(), |a| a.to_string())
                );
                continue;
            }
            match peer {
                Some(peer) => per_peer.add(&table, peer, datagram.len(), count_received),
                // Accepted from no peer (--accept-any-source): counted in the totals only.
                None => {
                    (unattributed, unattributed_bytes) =
                        (unattributed + 1, unattributed_bytes + datagram.len() as u64)
                }
            }
            clamped += clamp_mss(datagram, options);
            if options.tun_offload {
                // The GRO table needs each packet in its own buffer after a virtio header.
                if used == self.pending.len() {
                    self.pending.push(Vec::with_capacity(VIRTIO_NET_HDR_LEN + MAX_PACKET));
                }
                let buffer = &mut self.pending[used];
                buffer.clear();
                buffer.resize(VIRTIO_NET_HDR_LEN, 0);
                buffer.extend_from_slice(datagram);
                used += 1;
                if used == GRO_WRITE_BATCH {
                    write_failures +=
                        write_coalesced(device, &mut self.gro_table, &mut self.pending[..used], limits)?;
                    used = 0;
                }
            } else if let Err(e) = device.send(datagram) {
                write_failures += tun_write_failed(e, limits)?;
            }
        }
        write_failures += write_coalesced(device, &mut self.gro_table, &mut self.pending[..used], limits)?;
        shared.stats.drop(DropReason::Malformed, malformed);
        shared.stats.drop(DropReason::SourceCheck, spoofed);
        shared.stats.drop(DropReason::TunWriteError, write_failures);
        add(&shared.stats.keepalives_received, keepalives);
        add(&shared.stats.roaming_refused, roaming_refused);
        let (packets, bytes) = per_peer.finish(&table, count_received);
        add(&shared.stats.received_packets, packets + unattributed);
        add(&shared.stats.received_bytes, bytes + unattributed_bytes);
        add(&shared.stats.mss_clamped, clamped);
        Ok(true)
    }
}

/// Counts packets per peer a run at a time: consecutive packets of one peer are added to its
/// [`Traffic`] with one call, so that a batch costs one atomic add per run of a peer, never a
/// lock or an allocation; also keeps the batch's totals.
#[derive(Default)]
struct PerPeer {
    run: Option<(PeerId, u64, u64)>,
    packets: u64,
    bytes: u64,
}

impl PerPeer {
    /// Adds one packet of `size` bytes of `peer`; `count` adds a finished run to a peer.
    fn add(&mut self, table: &PeerTable, peer: PeerId, size: usize, count: impl Fn(&Traffic, u64, u64)) {
        match &mut self.run {
            Some((current, packets, bytes)) if *current == peer => {
                *packets += 1;
                *bytes += size as u64;
            }
            run => {
                if let Some(finished) = run.replace((peer, 1, size as u64)) {
                    self.flush(table, finished, &count);
                }
            }
        }
    }

    fn flush(
        &mut self,
        table: &PeerTable,
        (peer, packets, bytes): (PeerId, u64, u64),
        count: &impl Fn(&Traffic, u64, u64),
    ) {
        if let Some(endpoint) = table.peer(peer) {
            count(endpoint.traffic(), packets, bytes);
        }
        self.packets += packets;
        self.bytes += bytes;
    }

    /// Adds the last run; returns the batch's packets and bytes.
    fn finish(mut self, table: &PeerTable, count: impl Fn(&Traffic, u64, u64)) -> (u64, u64) {
        if let Some(run) = self.run.take() {
            self.flush(table, run, &count);
        }
        (self.packets, self.bytes)
    }
}

/// Lowers the MSS of a TCP SYN to fit the tunnel unless `--no-clamp-mss`; 1 if it did, else 0.
fn clamp_mss(packet: &mut [u8], options: Options) -> u64 {
    options.clamp_mss.is_some_and(|mtu| packet::clamp_mss(packet, mtu)).into()
}

/// Writes `packets` (each behind a virtio-net header) to the TUN, coalescing TCP and UDP
/// segments into super-packets. Returns the number of failed writes, or the error if the device
/// is gone. Callers pass at most [`GRO_WRITE_BATCH`] packets: the kernel refuses (EINVAL) a UDP
/// super-packet of more than UDP_MAX_SEGMENTS (64 on older kernels) datagrams, and the GRO
/// table would coalesce hundreds of small ones.
fn write_coalesced(
    device: &SyncDevice,
    gro_table: &mut GROTable,
    packets: &mut [Vec<u8>],
    limits: &Limits,
) -> io::Result<u64> {
    if packets.is_empty() {
        return Ok(0);
    }
    match device.send_multiple(gro_table, packets, VIRTIO_NET_HDR_LEN) {
        Ok(_) => Ok(0),
        Err(e) => tun_write_failed(e, limits),
    }
}

/// A TUN write failed: the error itself if the device is gone (fatal), else one failure,
/// logged at most once a second.
fn tun_write_failed(e: io::Error, limits: &Limits) -> io::Result<u64> {
    if tun::is_gone(&e) {
        return Err(gone(e));
    }
    warn_limited!(limits.tun_write_error, "writing to the TUN failed: {e}");
    Ok(1)
}

/// Says which device went away, rather than just "file descriptor in bad state".
fn gone(e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("the TUN device is gone ({e})"))
}

/// Tells the operator when a peer's replies start going to another port (it is behind a NAT
/// that rewrote its port, or the NAT's mapping changed), or when a datagram from another port
/// of a peer's IP did not move it. Returns 1 for a refused move (to be counted), else 0.
fn note_admission(admission: Admission, limits: &Limits) -> u64 {
    match admission {
        Admission::AcceptedFromNewPort { configured, now } => {
            warn_limited!(limits.new_port, "peer {configured} is now reached at {now} (behind NAT?)");
            0
        }
        Admission::AcceptedMoveRefused { current, from } => {
            warn_limited!(
                limits.roaming_refused,
                "a datagram from {from} did not move the peer at {current}: it is still active \
                 (--roam-hold), or only an authenticated keepalive moves it (--key)"
            );
            1
        }
        Admission::Accepted | Admission::Rejected => 0,
    }
}

/// Checks and applies an authenticated keepalive (a datagram that starts with
/// [`keepalive::KIND`]); a refused one is counted by reason and logged at a limited rate.
fn authenticated_keepalive(
    table: &PeerTable,
    key: Option<&Key>,
    source: SocketAddr,
    datagram: &[u8],
    now: u64,
    shared: &Shared,
    limits: &Limits,
) {
    let refusal = match key.map(|key| keepalive::open(key, datagram)) {
        None => KeepaliveRefusal::NoKey,
        Some(Err(_)) => KeepaliveRefusal::Forged,
        Some(Ok(keepalive)) => {
            match table.authenticated_keepalive(keepalive.sender, keepalive.counter, source, now) {
                KeepaliveOutcome::Heard => return,
                KeepaliveOutcome::Moved { configured, now } => {
                    warn_limited!(
                        limits.new_port,
                        "peer {configured} is now reached at {now} (authenticated)"
                    );
                    return;
                }
                KeepaliveOutcome::Replayed => KeepaliveRefusal::Replayed,
                KeepaliveOutcome::UnknownSender => KeepaliveRefusal::UnknownSender,
            }
        }
    };
    add(&shared.stats.keepalives_refused[refusal as usize], 1);
    warn_limited!(
        limits.keepalive_refused,
        "refused an authenticated keepalive from {source}: {}",
        refusal.name()
    );
}

fn add(counter: &std::sync::atomic::AtomicU64, value: u64) {
    if value > 0 {
        counter.fetch_add(value, std::sync::atomic::Ordering::Relaxed);
    }
}
