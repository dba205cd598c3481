//! How a batch of outgoing datagrams is cut into UDP GSO sends. Pure: no sockets here.
//!
//! The rules are the kernel's (and wireguard-go's `coalesceMessages`): one send carries
//! consecutive datagrams to the same peer, all of one size except the last, which may be
//! shorter and then ends the send; at most [`MAX_DATAGRAMS_PER_SEND`] of them and at most
//! [`MAX_PAYLOAD`] bytes in all.

use std::net::SocketAddr;

/// Most datagrams one GSO send may carry (`UDP_MAX_SEGMENTS` in older kernels; newer allow 128).
pub const MAX_DATAGRAMS_PER_SEND: usize = 64;
/// Most payload bytes one UDP send may carry over IPv4 (65535 - 20 - 8).
pub const MAX_PAYLOAD: usize = 65_507;

/// A run of consecutive datagrams that go out in one send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// Index of the first datagram of the run.
    pub start: usize,
    /// Number of datagrams.
    pub count: usize,
    /// Size of every datagram but the last; the segment size given to the kernel.
    pub segment_size: usize,
}

/// Cuts `datagrams` into runs; `key` tells each one's destination and length. `gso_limit` is
/// the largest segment size that may be coalesced (0 turns coalescing off: every datagram is a
/// run of its own).
pub fn runs<T>(
    datagrams: &[T],
    key: impl Fn(&T) -> (SocketAddr, usize),
    gso_limit: usize,
    out: &mut Vec<Run>,
) {
    out.clear();
    let mut index = 0;
    while index < datagrams.len() {
        let (dest, size) = key(&datagrams[index]);
        let mut run = Run { start: index, count: 1, segment_size: size };
        if size <= gso_limit {
            let mut total = size;
            for (next_dest, next_size) in datagrams[index + 1..].iter().map(&key) {
                if next_dest != dest
                    || next_size > size
                    || run.count == MAX_DATAGRAMS_PER_SEND
                    || total + next_size > MAX_PAYLOAD
                {
                    break;
                }
                run.count += 1;
                total += next_size;
                if next_size < size {
                    break;
                }
            }
        }
        index += run.count;
        out.push(run);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, n], 7777))
    }

    fn cut(datagrams: &[(SocketAddr, usize)], limit: usize) -> Vec<(usize, usize, usize)> {
        let mut out = Vec::new();
        runs(datagrams, |d| *d, limit, &mut out);
        out.iter().map(|r| (r.start, r.count, r.segment_size)).collect()
    }

    #[test]
    fn same_peer_same_size_is_one_run_with_a_shorter_tail() {
        let d = [(peer(1), 1400), (peer(1), 1400), (peer(1), 1400), (peer(1), 300), (peer(1), 1400)];
        assert_eq!(cut(&d, 65_535), vec![(0, 4, 1400), (4, 1, 1400)]);
    }

    #[test]
    fn a_new_peer_or_a_larger_datagram_starts_a_new_run() {
        let d = [(peer(1), 100), (peer(2), 100), (peer(2), 200), (peer(2), 200)];
        assert_eq!(cut(&d, 65_535), vec![(0, 1, 100), (1, 1, 100), (2, 2, 200)]);
    }

    #[test]
    fn runs_respect_segment_and_byte_caps() {
        let small = vec![(peer(1), 64); 130];
        assert_eq!(cut(&small, 65_535), vec![(0, 64, 64), (64, 64, 64), (128, 2, 64)]);
        // 46 segments of 1472 bytes (a 64 KiB TSO packet) exceed one send's 65,507 bytes.
        let large = vec![(peer(1), 1472); 46];
        assert_eq!(cut(&large, 65_535), vec![(0, 44, 1472), (44, 2, 1472)]);
        // Exactly 65,507 bytes still fit: 63 of 1,024 and a last one of 995.
        let mut exact = vec![(peer(1), 1024); 63];
        exact.push((peer(1), 995));
        assert_eq!(cut(&exact, 65_535), vec![(0, 64, 1024)]);
    }

    #[test]
    fn sizes_above_the_limit_go_alone() {
        let d = [(peer(1), 1400), (peer(1), 1400), (peer(1), 100), (peer(1), 100)];
        assert_eq!(cut(&d, 1000), vec![(0, 1, 1400), (1, 1, 1400), (2, 2, 100)]);
        assert_eq!(cut(&d, 0).len(), 4);
        assert_eq!(cut(&[], 65_535), vec![]);
    }
}
