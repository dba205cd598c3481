//! What the data plane shares with the rest ([`Shared`]: the peer table and the counters), and
//! logging that cannot flood.
//!
//! Threads add their per-batch totals with relaxed atomics: one add per batch, not per packet.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::peers::PeerTable;
use crate::signature;

/// What the data plane shares with the control plane and the metrics: the table it reads
/// and the counters it writes.
pub struct Shared {
    /// The current peer table; the control plane swaps in new ones whole.
    pub table: ArcSwap<PeerTable>,
    /// Counters.
    pub stats: Stats,
    /// Where the table in force came from (for `udptun show`).
    pub origin: ArcSwap<TableOrigin>,
}

impl Shared {
    /// The first table, with no traffic counted yet.
    pub fn new(table: PeerTable, origin: TableOrigin) -> Self {
        Self {
            table: ArcSwap::from_pointee(table),
            stats: Stats::default(),
            origin: ArcSwap::from_pointee(origin),
        }
    }
}

/// Where a peer table came from, and which version of its source it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableOrigin {
    /// `remote` (`-A`), `file`, `config` (its `[nodes]`) or `url`.
    pub kind: &'static str,
    /// The host, path or URL.
    pub location: String,
    /// When it was loaded (Unix seconds).
    pub loaded_unix: u64,
    /// The document's ETag, if its server sent one.
    pub etag: Option<String>,
    /// The signed timestamp of the document (Unix seconds), with `--hosts-pubkey`.
    pub signed_unix: Option<u64>,
}

/// Why a packet was dropped. Each reason has its own counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// No peer maps the destination (an ICMP unreachable went back).
    NoMapping,
    /// A datagram that is not one whole IP packet (or a TUN super-packet the splitter refused).
    Malformed,
    /// The kernel refused to send a datagram.
    SendError,
    /// Reading from the TUN failed (the packet the kernel held, if any, is lost).
    TunReadError,
    /// The kernel refused a packet written to the TUN.
    TunWriteError,
    /// The outer source address is not the peer the inner source address maps to.
    SourceCheck,
    /// Not routable and not worth an answer: IPv6 with no IPv6 entry in the table (router
    /// solicitations and the like), or bytes from the TUN that are no IP packet.
    Ignored,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 7] = [
        DropReason::NoMapping,
        DropReason::Malformed,
        DropReason::SourceCheck,
        DropReason::SendError,
        DropReason::TunReadError,
        DropReason::TunWriteError,
        DropReason::Ignored,
    ];

    /// A stable name for logs and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::NoMapping => "no_mapping",
            DropReason::Malformed => "malformed",
            DropReason::SourceCheck => "source_check",
            DropReason::SendError => "send_error",
            DropReason::TunReadError => "tun_read_error",
            DropReason::TunWriteError => "tun_write_error",
            DropReason::Ignored => "ignored",
        }
    }
}

/// Why an authenticated keepalive was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepaliveRefusal {
    /// Its MAC does not match the key (or it is not a well-formed keepalive).
    Forged,
    /// Its counter is not above the last one accepted from that peer.
    Replayed,
    /// No peer at its source IP has the tunnel address it names.
    UnknownSender,
    /// It came to a node that has no `--key`.
    NoKey,
}

impl KeepaliveRefusal {
    /// Every reason, in counter order.
    pub const ALL: [KeepaliveRefusal; 4] = [Self::Forged, Self::Replayed, Self::UnknownSender, Self::NoKey];

    /// A stable name for logs and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Forged => "forged",
            Self::Replayed => "replayed",
            Self::UnknownSender => "unknown_sender",
            Self::NoKey => "no_key",
        }
    }
}

/// Packet and byte counters in each direction, and drops by reason.
#[derive(Default)]
pub struct Stats {
    /// Packets read from the TUN and sent to peers.
    pub sent_packets: AtomicU64,
    /// Bytes of those packets.
    pub sent_bytes: AtomicU64,
    /// Packets received from peers and written to the TUN.
    pub received_packets: AtomicU64,
    /// Bytes of those packets.
    pub received_bytes: AtomicU64,
    /// Keepalives received: zero-length datagrams, and datagrams that start like an
    /// authenticated keepalive (refused ones included; those are also counted by reason).
    pub keepalives_received: AtomicU64,
    /// Datagrams from another port of a peer's IP that did not move the peer (it was active, or
    /// a key is set).
    pub roaming_refused: AtomicU64,
    /// Authenticated keepalives refused, by [`KeepaliveRefusal`].
    pub keepalives_refused: [AtomicU64; KeepaliveRefusal::ALL.len()],
    /// Peer tables published after the first.
    pub tables_loaded: AtomicU64,
    /// Reloads, fetches or documents that failed (the previous table stayed in force).
    pub load_failures: AtomicU64,
    /// Documents refused by `--hosts-pubkey` or `--hosts-max-age`, by [`signature::Reason`]
    /// (each also counts as a load failure).
    pub hosts_refused: [AtomicU64; signature::Reason::ALL.len()],
    /// When the hosts source last loaded or was confirmed unchanged (Unix seconds).
    pub last_load_unix: AtomicU64,
    /// ICMP errors not sent about unmapped destinations because the rate limit held them back
    /// (their packets count as `no_mapping` drops all the same).
    pub icmp_errors_suppressed: AtomicU64,
    /// TCP SYNs whose MSS was lowered to fit the tunnel, in either direction.
    pub mss_clamped: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
}

impl Stats {
    /// Counts `count` packets dropped for `reason`.
    pub fn drop(&self, reason: DropReason, count: u64) {
        if count > 0 {
            self.drops[reason as usize].fetch_add(count, Relaxed);
        }
    }

    /// Packets dropped for `reason` so far.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].load(Relaxed)
    }

    /// A one-line summary for the log: traffic in each direction and every drop reason.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "sent {} packets ({} bytes), received {} packets ({} bytes)",
            self.sent_packets.load(Relaxed),
            self.sent_bytes.load(Relaxed),
            self.received_packets.load(Relaxed),
            self.received_bytes.load(Relaxed),
        );
        for reason in DropReason::ALL {
            line += &format!(", dropped {}={}", reason.name(), self.dropped(reason));
        }
        line += &format!(", icmp_errors_suppressed={}", self.icmp_errors_suppressed.load(Relaxed));
        line
    }
}

/// One peer's traffic, shared by the endpoints that stand for it in successive tables (a
/// reload hands the same counters on, so nothing counted in between is lost or counted twice).
/// The data plane adds a run of packets to or from one peer at a time: one add per run, not per
/// packet.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Packets received from the peer that passed the checks (handed to the TUN).
    pub received_packets: AtomicU64,
    /// Bytes of those packets.
    pub received_bytes: AtomicU64,
    /// Packets sent to the peer.
    pub sent_packets: AtomicU64,
    /// Bytes of those packets.
    pub sent_bytes: AtomicU64,
    /// When a packet or keepalive was last received from the peer (milliseconds on
    /// [`clock_ms`]); 0 while never.
    pub last_received_ms: AtomicU64,
}

impl Traffic {
    /// Counts `packets` packets of `bytes` bytes in all received at `now_ms`.
    pub fn add_received(&self, packets: u64, bytes: u64, now_ms: u64) {
        if packets > 0 {
            self.received_packets.fetch_add(packets, Relaxed);
            self.received_bytes.fetch_add(bytes, Relaxed);
            self.heard(now_ms);
        }
    }

    /// Counts `packets` packets of `bytes` bytes in all sent.
    pub fn add_sent(&self, packets: u64, bytes: u64) {
        if packets > 0 {
            self.sent_packets.fetch_add(packets, Relaxed);
            self.sent_bytes.fetch_add(bytes, Relaxed);
        }
    }

    /// Notes that the peer was heard at `now_ms` (a keepalive, or data).
    pub fn heard(&self, now_ms: u64) {
        // Written at most once a millisecond, so threads do not fight over the line for it.
        if self.last_received_ms.load(Relaxed) < now_ms {
            self.last_received_ms.fetch_max(now_ms, Relaxed);
        }
    }
}

/// Lets one log line through per interval and counts what it held back, so a flood of bad
/// input costs a counter increment, not a write to the log.
pub struct RateLimit {
    start: Instant,
    interval_ms: u64,
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimit {
    /// A limiter that allows one line per `interval_ms` milliseconds.
    pub fn new(interval_ms: u64) -> Self {
        Self { start: Instant::now(), interval_ms, next_ms: AtomicU64::new(0), suppressed: AtomicU64::new(0) }
    }

    /// `Some(n)` if a line may be logged now, `n` being how many were held back since the last
    /// one; `None` if this one must be held back.
    pub fn allow(&self) -> Option<u64> {
        let now = self.start.elapsed().as_millis() as u64;
        let next = self.next_ms.load(Relaxed);
        if now >= next
            && self.next_ms.compare_exchange(next, now + self.interval_ms, Relaxed, Relaxed).is_ok()
        {
            Some(self.suppressed.swap(0, Relaxed))
        } else {
            self.suppressed.fetch_add(1, Relaxed);
            None
        }
    }
}

/// A token bucket shared by threads without a lock: `per_second` tokens a second, at most
/// `burst` at once, full at the start. It caps the ICMP errors udptun writes into the TUN, so a
/// flood to unmapped addresses cannot turn into a flood of replies.
///
/// Kept as the generic cell rate algorithm (GCRA, the token bucket's equivalent in one word):
/// `due` is when the bucket would be full again; each token moves it one interval on, and a
/// token is there when that leaves it at most `burst` intervals after now. The caller passes
/// the time, so the logic runs and is tested without a clock.
pub struct TokenBucket {
    interval_ns: u64,
    burst_ns: u64,
    due: AtomicU64,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens that refills at `per_second` (both above zero).
    pub fn new(per_second: u32, burst: u32) -> Self {
        assert!(per_second > 0 && burst > 0, "a token bucket needs a rate and a burst");
        let interval_ns = 1_000_000_000 / u64::from(per_second);
        Self { interval_ns, burst_ns: interval_ns * u64::from(burst), due: AtomicU64::new(0) }
    }

    /// Takes one token at `now_ns` (nanoseconds since any fixed start, the same for every
    /// caller); returns whether there was one. A caller whose `now_ns` lags another's only
    /// finds fewer tokens, never more.
    pub fn take(&self, now_ns: u64) -> bool {
        let mut due = self.due.load(Relaxed);
        loop {
            let next = due.max(now_ns).saturating_add(self.interval_ns);
            if next > now_ns.saturating_add(self.burst_ns) {
                return false;
            }
            match self.due.compare_exchange_weak(due, next, Relaxed, Relaxed) {
                Ok(_) => return true,
                Err(current) => due = current,
            }
        }
    }
}

/// Nanoseconds on the data plane's clock (monotonic, from its first reading): what the ICMP
/// rate limit counts in.
pub fn clock_ns() -> u64 {
    static START: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
    START.elapsed().as_nanos() as u64
}

/// Milliseconds on the same clock, never 0: what "heard" times are in (the control plane
/// starts the roaming holds of a new table with it).
pub fn clock_ms() -> u64 {
    clock_ns() / 1_000_000 + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn drops_are_counted_by_reason() {
        let stats = Stats::default();
        stats.drop(DropReason::Malformed, 3);
        stats.drop(DropReason::Malformed, 2);
        stats.drop(DropReason::SendError, 1);
        assert_eq!(stats.dropped(DropReason::Malformed), 5);
        assert_eq!(stats.dropped(DropReason::SendError), 1);
        assert_eq!(stats.dropped(DropReason::NoMapping), 0);
    }

    const MS: u64 = 1_000_000;

    /// Tokens `bucket` gives at `now_ns` to as many requests as it will take (at most 10,000).
    fn drain(bucket: &TokenBucket, now_ns: u64) -> usize {
        (0..10_000).take_while(|_| bucket.take(now_ns)).count()
    }

    #[test]
    fn a_token_bucket_starts_full_and_refills_at_its_rate() {
        let bucket = TokenBucket::new(1000, 50);
        assert_eq!(drain(&bucket, 0), 50, "the whole burst at once, then nothing");
        assert!(!bucket.take(0));
        assert!(!bucket.take(MS - 1), "not a whole interval later");
        assert!(bucket.take(MS), "one token per millisecond");
        assert!(!bucket.take(MS));
        assert_eq!(drain(&bucket, 11 * MS), 10);
        // However long it was idle, it holds no more than the burst.
        assert_eq!(drain(&bucket, 3_600_000 * MS), 50);
        // Starting later than zero makes no difference.
        assert_eq!(drain(&TokenBucket::new(1000, 50), 123_456 * MS), 50);
    }

    #[test]
    fn a_token_bucket_under_steady_demand_gives_the_burst_and_the_rate() {
        // A request every 10 µs for one second: 100,000 requests.
        let bucket = TokenBucket::new(1000, 50);
        let given = (0..100_000u64).filter(|i| bucket.take(i * 10_000)).count();
        assert!((1049..=1050).contains(&given), "{given}");
        // A different rate and burst.
        let bucket = TokenBucket::new(10, 3);
        let given = (0..1_000u64).filter(|i| bucket.take(i * 10 * MS)).count();
        assert_eq!(given, 3 + 99, "3 at once, then one every 100 ms of the remaining 9.99 s");
    }

    #[test]
    fn a_token_bucket_gives_no_extra_token_to_a_late_clock() {
        let bucket = TokenBucket::new(1000, 50);
        assert_eq!(drain(&bucket, 100 * MS), 50);
        // A thread that read the clock earlier finds the bucket as empty.
        assert!(!bucket.take(99 * MS));
        assert!(!bucket.take(0));
        assert!(bucket.take(101 * MS));
    }

    #[test]
    fn a_token_bucket_shared_by_threads_gives_each_token_once() {
        let bucket = TokenBucket::new(1000, 50);
        let given: usize = std::thread::scope(|scope| {
            let workers: Vec<_> =
                (0..4).map(|_| scope.spawn(|| (0..10_000).filter(|_| bucket.take(5 * MS)).count())).collect();
            workers.into_iter().map(|w| w.join().expect("worker")).sum()
        });
        assert_eq!(given, 50);
    }

    #[test]
    #[should_panic(expected = "a rate and a burst")]
    fn a_token_bucket_needs_a_rate() {
        TokenBucket::new(0, 50);
    }

    #[test]
    fn rate_limit_lets_one_through_and_counts_the_rest() {
        let limit = RateLimit::new(60_000);
        assert_eq!(limit.allow(), Some(0));
        for _ in 0..5 {
            assert_eq!(limit.allow(), None);
        }

        // Once the interval has passed, the next line through reports how many were held back,
        // and the count starts again from zero.
        let interval = Duration::from_millis(500);
        let limit = RateLimit::new(interval.as_millis() as u64);
        assert_eq!(limit.allow(), Some(0));
        for _ in 0..7 {
            assert_eq!(limit.allow(), None);
        }
        std::thread::sleep(interval + Duration::from_millis(50));
        assert_eq!(limit.allow(), Some(7));
        assert_eq!(limit.allow(), None);
        assert_eq!(limit.allow(), None);
        std::thread::sleep(interval + Duration::from_millis(50));
        assert_eq!(limit.allow(), Some(2));

        let immediate = RateLimit::new(0);
        assert_eq!(immediate.allow(), Some(0));
        assert_eq!(immediate.allow(), Some(0));
    }
}
