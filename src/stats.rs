//! Counters shared by the data-plane threads, and logging that cannot flood.
//!
//! Threads add their per-batch totals with relaxed atomics: one add per batch, not per packet.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// Why a packet was dropped. Each reason has its own counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// No peer maps the destination (an ICMP unreachable went back).
    NoMapping,
    /// A datagram that is not one whole IP packet (or a TUN super-packet the splitter refused).
    Malformed,
    /// The kernel refused to send a datagram.
    SendError,
    /// The kernel refused a packet written to the TUN.
    TunWriteError,
    /// The outer source address is not the peer the inner source address maps to.
    SourceCheck,
    /// Not routable and not worth an answer: IPv6 with no IPv6 entry in the table (router
    /// solicitations and the like), or bytes from the TUN that are no IP packet.
    Ignored,
}

impl Drop {
    /// Every reason, in counter order.
    pub const ALL: [Drop; 6] = [
        Drop::NoMapping,
        Drop::Malformed,
        Drop::SourceCheck,
        Drop::SendError,
        Drop::TunWriteError,
        Drop::Ignored,
    ];

    /// A stable name for logs and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Drop::NoMapping => "no_mapping",
            Drop::Malformed => "malformed",
            Drop::SourceCheck => "source_check",
            Drop::SendError => "send_error",
            Drop::TunWriteError => "tun_write_error",
            Drop::Ignored => "ignored",
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
    /// Keepalives (zero-length datagrams) received.
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
    /// When the hosts source last loaded or was confirmed unchanged (Unix seconds).
    pub last_load_unix: AtomicU64,
    drops: [AtomicU64; Drop::ALL.len()],
}

impl Stats {
    /// Counts `count` packets dropped for `reason`.
    pub fn drop(&self, reason: Drop, count: u64) {
        if count > 0 {
            self.drops[reason as usize].fetch_add(count, Relaxed);
        }
    }

    /// Packets dropped for `reason` so far.
    pub fn dropped(&self, reason: Drop) -> u64 {
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
        for reason in Drop::ALL {
            line += &format!(", dropped {}={}", reason.name(), self.dropped(reason));
        }
        line
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn drops_are_counted_by_reason() {
        let stats = Stats::default();
        stats.drop(Drop::Malformed, 3);
        stats.drop(Drop::Malformed, 2);
        stats.drop(Drop::SendError, 1);
        assert_eq!(stats.dropped(Drop::Malformed), 5);
        assert_eq!(stats.dropped(Drop::SendError), 1);
        assert_eq!(stats.dropped(Drop::NoMapping), 0);
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
