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
use tun_rs::SyncDevice;

use crate::keepalive::Key;
use crate::packet;
use crate::peers::{Admission, Inbound, KeepaliveOutcome, PeerId, PeerTable, Reception, Roaming, Verdict};
use crate::poll;
use crate::split::{self, Segment};
use crate::stats::{DropReason, RateLimit, Shared, TokenBucket, Traffic, clock_ms, clock_ns};
use crate::tun::{self, TunReader, TunWriter};
use crate::udp::{self, Receiver, Sender};
use crate::virtio;

/// Frames per TUN → UDP batch, and the arena they are read into: hundreds of small packets, or
/// at least four 64 KiB TSO super-packets (each up to [`split::MAX_SEGMENTS_PER_FRAME`] datagrams).
const OUTBOUND_BATCH: usize = 256;
const OUTBOUND_ARENA: usize = 4 * tun::MAX_FRAME;
/// Largest IP packet the TUN can hand over or take.
const MAX_PACKET: usize = 65_535;
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
    /// The TUN queues also take UDP super-packets (USO): datagrams are coalesced too.
    pub tun_udp_offload: bool,
    /// Send with UDP GSO.
    pub gso: bool,
    /// Receive with UDP GRO.
    pub gro: bool,
    /// The socket is IPv6 (dual-stack): IPv4 peers are addressed as v4-mapped.
    pub socket_is_v6: bool,
    /// The longest a thread keeps looking for work before it sleeps (`poll::Windows`).
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
            let context = Context { queue: &queue, options, shared: &shared, limits: &limits };
            if let Err(error) = run_queue(&context) {
                on_fatal(Fatal(format!("queue {index}: {error}")));
            }
        })?;
    }
    Ok(())
}

/// What one data-plane thread works with: its queue, and the settings, table, counters and
/// rate limits that all threads share.
struct Context<'a> {
    queue: &'a Queue,
    options: Options,
    shared: &'a Shared,
    limits: &'a Limits,
}

/// What one step found in its direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Progress {
    /// Nothing was waiting (or reading failed).
    Empty,
    /// Moved what was waiting and found the queue empty (or a read failed after some): read
    /// again when `poll` says so.
    Drained,
    /// Moved a full batch: more may be waiting.
    More,
}

/// Which of a queue's two file descriptors may have something to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ready {
    tun: bool,
    socket: bool,
}

impl Ready {
    /// After the TUN step: read on only if it filled a batch, and then look at the socket too,
    /// since the loop will not poll before it comes back: a flood from the TUN must not starve
    /// the other direction (measured before this rule: pings answered during a UDP flood waited
    /// up to 98 ms in the socket, against 12 ms with it).
    fn after_sent(&mut self, sent: Progress) {
        self.tun = sent == Progress::More;
        self.socket |= sent == Progress::More;
    }

    /// After the socket step: read on only if it filled a batch; read the TUN after writing into
    /// it, since what was written is often answered within that very write (a local reply, a
    /// TCP ACK).
    fn after_received(&mut self, received: Progress) {
        self.socket = received == Progress::More;
        self.tun |= received != Progress::Empty;
    }

    fn any(self) -> bool {
        self.tun || self.socket
    }
}

/// One queue's loop: move whatever is waiting in either direction; when nothing is, keep
/// looking for a while before sleeping in `poll`, so that a reply that follows a request within
/// that window costs no thread wake-up (measured: ping through the tunnel 213 → 55 µs average on
/// the benchmark machine). How long adapts to the traffic (`poll::Windows`), at most
/// `busy_poll`. Polls yield the CPU, since spinning on the two cores the benchmark shares with
/// its senders and receivers made latency ten times worse.
///
/// A side is read only when `poll` or its last step says something may be waiting, so that
/// few reads find nothing: the far end of a ping makes `poll`, `recvmmsg`, `writev`, two reads
/// (the reply, then nothing more) and `sendmmsg`. `poll` is level-triggered, so a step that
/// stops early costs a trip through it, never a packet left waiting.
fn run_queue(context: &Context) -> io::Result<()> {
    let mut outbound = TunToUdp::new(context.options);
    let mut inbound = UdpToTun::new(context.options);
    let mut windows = poll::Windows::new(context.options.busy_poll);
    let mut last = poll::Last::Received;
    let mut idle_since = Instant::now();
    let mut ready = Ready { tun: true, socket: true };
    loop {
        let mut sent = Progress::Empty;
        let mut received = Progress::Empty;
        if ready.tun {
            sent = outbound.step(context)?;
            ready.after_sent(sent);
        }
        if ready.socket {
            received = inbound.step(context)?;
            ready.after_received(received);
        }
        if sent != Progress::Empty || received != Progress::Empty {
            last = if sent != Progress::Empty { poll::Last::Sent } else { poll::Last::Received };
            idle_since = Instant::now();
        }
        if ready.any() {
            continue;
        }
        if idle_since.elapsed() < windows.window(last) {
            ready = readiness(context.queue, Wait::No)?;
            if !ready.any() {
                thread::yield_now();
            }
        } else {
            let asleep = Instant::now();
            ready = readiness(context.queue, Wait::UntilReadable)?;
            idle_since = Instant::now();
            windows.slept(last, idle_since - asleep);
        }
    }
}

/// Whether [`readiness`] may sleep.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    No,
    UntilReadable,
}

/// Asks `poll` which of the TUN queue and the socket have something to read, sleeping until
/// one has if `wait` says so. A pending socket error or hang-up counts as readable: the next
/// receive returns (and so clears, or reports) it; a closed descriptor is fatal.
fn readiness(queue: &Queue, wait: Wait) -> io::Result<Ready> {
    let mut fds = [
        libc::pollfd { fd: queue.device.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: queue.socket.as_raw_fd(), events: libc::POLLIN, revents: 0 },
    ];
    let timeout = if wait == Wait::UntilReadable { -1 } else { 0 };
    loop {
        // SAFETY: two valid pollfds.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
        if rc >= 0 {
            if fds[0].revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                return Err(gone(io::Error::from(io::ErrorKind::BrokenPipe)));
            }
            if fds[1].revents & libc::POLLNVAL != 0 {
                return Err(io::Error::from_raw_os_error(libc::EBADF));
            }
            return Ok(Ready {
                tun: fds[0].revents & libc::POLLIN != 0,
                socket: fds[1].revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0,
            });
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
struct TunToUdp {
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

impl TunToUdp {
    fn new(options: Options) -> Self {
        Self {
            reader: TunReader::new(OUTBOUND_ARENA, OUTBOUND_BATCH),
            headers: Vec::new(),
            segments: Vec::new(),
            outgoing: Vec::with_capacity(OUTBOUND_BATCH),
            failed: Vec::new(),
            reply: vec![0u8; virtio::VIRTIO_HEADER_LEN + MAX_PACKET],
            reply_offset: if options.tun_offload { virtio::VIRTIO_HEADER_LEN } else { 0 },
            sender: Sender::new(options.gso),
        }
    }

    /// Reads what the TUN queue holds (up to a batch) and sends it.
    fn step(&mut self, context: &Context) -> io::Result<Progress> {
        let Context { queue, options, shared, limits } = *context;
        let device = &queue.device;
        match self.reader.fill(device) {
            Ok(0) => return Ok(Progress::Empty),
            Ok(_) => {}
            Err(e) if tun::is_gone(&e) => return Err(gone(e)),
            Err(e) => {
                warn_limited!(limits.tun_read_error, "reading from the TUN failed: {e}");
                shared.stats.drop(DropReason::TunReadError, 1);
                return Ok(Progress::Empty);
            }
        }

        let table = shared.table.load();
        let (headers, segments, outgoing) = (&mut self.headers, &mut self.segments, &mut self.outgoing);
        headers.clear();
        outgoing.clear();
        let mut tally = Tally::default();
        // Read once per batch, and only if an error is due.
        let mut now_ns = None;
        for (index, frame) in self.reader.frames_mut().enumerate() {
            segments.clear();
            if !options.tun_offload {
                segments.push(Segment { header: 0..0, payload: 0..frame.len() });
            } else if let Err(refusal) = split::split(frame, headers, segments) {
                tally.drop(DropReason::Malformed, 1);
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
                            tally.mss_clamped += clamp_mss(&mut frame[segment.payload.clone()], options);
                        }
                        outgoing.push(Outgoing { frame: index, segment, to, peer });
                    }
                }
                Verdict::Unreachable => {
                    tally.drop(DropReason::NoMapping, segments.len() as u64);
                    let offset = self.reply_offset;
                    let allow = || {
                        let now = *now_ns.get_or_insert_with(clock_ns);
                        let allowed = limits.icmp_errors.take(now);
                        tally.icmp_errors_suppressed += u64::from(!allowed);
                        allowed
                    };
                    if let Some(len) = packet::unreachable_limited(packet, &mut self.reply[offset..], allow) {
                        self.reply[..offset].fill(0);
                        if let Err(e) = device.send(&self.reply[..offset + len]) {
                            tally.drop(DropReason::TunWriteError, tun_write_failed(e, limits)?);
                        }
                    }
                }
                Verdict::Ignore => tally.drop(DropReason::Ignored, segments.len() as u64),
            }
        }
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
        tally.drop(DropReason::SendError, failed.len() as u64);
        tally.publish(shared);
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
        Ok(if self.reader.drained() { Progress::Drained } else { Progress::More })
    }
}

/// UDP → TUN: receive datagrams, check each is one whole IP packet, hand them to the
/// [`TunWriter`] (which coalesces them into super-packets when offloads are on).
struct UdpToTun {
    receiver: Receiver,
    writer: TunWriter,
}

impl UdpToTun {
    fn new(options: Options) -> Self {
        Self {
            receiver: if options.gro {
                Receiver::new(GRO_RECEIVE_BATCH, udp::GRO_BUFFER_BYTES)
            } else {
                Receiver::new(PLAIN_RECEIVE_BATCH, MAX_PACKET)
            },
            writer: TunWriter::new(options.tun_offload, options.tun_udp_offload),
        }
    }

    /// Takes what the socket holds (up to a batch) and writes it to the TUN.
    fn step(&mut self, context: &Context) -> io::Result<Progress> {
        let Context { queue, options, shared, limits } = *context;
        match self.receiver.recv(&queue.socket) {
            Ok(0) => return Ok(Progress::Empty),
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBADF | libc::ENOTSOCK)) => return Err(e),
            Err(e) => {
                warn_limited!(limits.udp_read_error, "receiving from the UDP socket failed: {e}");
                return Ok(Progress::Empty);
            }
        }
        let table = shared.table.load();
        let now = clock_ms();
        let rules = Reception {
            key: options.key.as_ref(),
            any_source: options.accept_any_source,
            roaming: options.roaming,
        };
        let mut tally = Tally::default();
        let mut per_peer = PerPeer::default();
        let count_received = |traffic: &Traffic, packets, bytes| traffic.add_received(packets, bytes, now);
        let mut failed = |e| tun_write_failed(e, limits);
        let mut writes = self.writer.batch(&queue.device);
        for (source, datagram) in self.receiver.datagrams() {
            let peer = match table.receive(datagram, source, now, rules) {
                Inbound::Deliver(admission, peer) => {
                    tally.roaming_refused += note_admission(admission, limits);
                    peer
                }
                Inbound::Keepalive(admission) => {
                    tally.keepalives += 1;
                    tally.roaming_refused += note_admission(admission, limits);
                    continue;
                }
                Inbound::AuthenticatedKeepalive(outcome) => {
                    tally.keepalives += 1;
                    note_authenticated_keepalive(outcome, source, shared, limits);
                    continue;
                }
                Inbound::Malformed(reason) => {
                    tally.drop(DropReason::Malformed, 1);
                    warn_limited!(limits.malformed, "dropped a datagram from {source}: {}", reason.as_str());
                    continue;
                }
                Inbound::Rejected => {
                    tally.drop(DropReason::SourceCheck, 1);
                    warn_limited!(
                        limits.source_check,
                        "dropped a packet from {}, received from {source}: the table maps that address \
                         to another peer (--accept-any-source turns this check off)",
                        packet::source(datagram).map_or("?".to_string(), |a| a.to_string())
                    );
                    continue;
                }
            };
            match peer {
                Some(peer) => per_peer.add(&table, peer, datagram.len(), count_received),
                // Accepted from no peer (--accept-any-source): counted in the totals only.
                None => tally.unattributed.add(datagram.len()),
            }
            tally.mss_clamped += clamp_mss(datagram, options);
            tally.drop(DropReason::TunWriteError, writes.push(datagram, &mut failed)?);
        }
        tally.drop(DropReason::TunWriteError, writes.finish(&mut failed)?);
        let (packets, bytes) = per_peer.finish(&table, count_received);
        tally.publish(shared);
        add(&shared.stats.received_packets, packets + tally.unattributed.packets);
        add(&shared.stats.received_bytes, bytes + tally.unattributed.bytes);
        Ok(if self.receiver.drained() { Progress::Drained } else { Progress::More })
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

/// Tells what an authenticated keepalive did: a move is logged, a refusal counted by reason
/// and logged, both at a limited rate.
fn note_authenticated_keepalive(
    outcome: KeepaliveOutcome,
    source: SocketAddr,
    shared: &Shared,
    limits: &Limits,
) {
    match outcome {
        KeepaliveOutcome::Heard => {}
        KeepaliveOutcome::Moved { configured, now } => {
            warn_limited!(limits.new_port, "peer {configured} is now reached at {now} (authenticated)");
        }
        KeepaliveOutcome::Refused(refusal) => {
            add(&shared.stats.keepalives_refused[refusal as usize], 1);
            warn_limited!(
                limits.keepalive_refused,
                "refused an authenticated keepalive from {source}: {}",
                refusal.name()
            );
        }
    }
}

/// The counters of one batch, added to the shared ones at its end: one atomic add per counter
/// that moved, whatever the batch's size.
#[derive(Default)]
struct Tally {
    drops: [u64; DropReason::ALL.len()],
    keepalives: u64,
    roaming_refused: u64,
    mss_clamped: u64,
    icmp_errors_suppressed: u64,
    /// Packets accepted from no peer (`--accept-any-source`), counted in the totals only.
    unattributed: Volume,
}

/// Packets and their bytes.
#[derive(Default)]
struct Volume {
    packets: u64,
    bytes: u64,
}

impl Volume {
    fn add(&mut self, size: usize) {
        self.packets += 1;
        self.bytes += size as u64;
    }
}

impl Tally {
    fn drop(&mut self, reason: DropReason, packets: u64) {
        self.drops[reason as usize] += packets;
    }

    fn publish(&self, shared: &Shared) {
        for reason in DropReason::ALL {
            shared.stats.drop(reason, self.drops[reason as usize]);
        }
        add(&shared.stats.keepalives_received, self.keepalives);
        add(&shared.stats.roaming_refused, self.roaming_refused);
        add(&shared.stats.mss_clamped, self.mss_clamped);
        add(&shared.stats.icmp_errors_suppressed, self.icmp_errors_suppressed);
    }
}

fn add(counter: &std::sync::atomic::AtomicU64, value: u64) {
    if value > 0 {
        counter.fetch_add(value, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_side_that_keeps_filling_batches_never_keeps_the_loop_from_the_other() {
        // The TUN floods (every step fills a batch); the socket had nothing last time.
        let mut ready = Ready { tun: true, socket: false };
        for _ in 0..3 {
            ready.after_sent(Progress::More);
            assert!(ready.socket, "the socket is looked at in every round of a TUN flood");
            ready.after_received(Progress::Empty);
        }
        // The socket floods: the TUN is read after every batch written into it.
        let mut ready = Ready { tun: false, socket: true };
        ready.after_received(Progress::More);
        assert_eq!(ready, Ready { tun: true, socket: true });
    }

    #[test]
    fn drained_sides_are_left_to_poll() {
        let mut ready = Ready { tun: true, socket: true };
        ready.after_sent(Progress::Drained);
        assert_eq!(ready, Ready { tun: false, socket: true });
        // Nothing came in: nothing was written into the TUN, so nothing to read there either.
        ready.after_received(Progress::Empty);
        assert!(!ready.any());
        // A packet written into the TUN: its local reply may already be there.
        let mut ready = Ready { tun: false, socket: true };
        ready.after_received(Progress::Drained);
        assert_eq!(ready, Ready { tun: true, socket: false });
    }
}
