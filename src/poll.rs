//! How long a data-plane thread keeps polling before it sleeps. Pure: the caller measures.
//!
//! Polling after the last packet saves the wake-up (tens to hundreds of µs on a VM) when the
//! next packet comes within the window, and wastes the window when it does not. What comes next
//! depends on what the thread did last: after sending a request to the network it waits for
//! the peer's reply (one round trip); after writing a packet into the TUN it waits for the
//! local reply (a few µs), or for nothing when the packet was itself a reply. So there is one
//! window per direction, adapted like KVM's halt polling: a sleep that ended sooner than the
//! longest window (`--busy-poll`) means a longer window would have caught the packet, so the
//! window grows to cover twice that sleep; a long sleep halves it. An idle tunnel
//! (or the idle side of request and reply) so sleeps at once, and a ping polls only while a
//! reply is on its way.

use std::time::Duration;

/// A sleep counts as short (the packet came soon after the poll gave up) up to this many times
/// the longest window: the sleep as measured includes the wake-up itself, which takes a few
/// hundred µs on a loaded VM, so that a reply 100 µs after the thread slept may wake it 300 µs
/// later.
const WAKE_SLACK: u32 = 4;

/// What the thread did last before it ran out of work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Last {
    /// Sent datagrams to the network (read from the TUN).
    Sent,
    /// Wrote packets into the TUN (received from the network).
    Received,
}

/// The two polling windows, each between zero and `longest`.
#[derive(Debug)]
pub struct Windows {
    longest: Duration,
    after_sent: Duration,
    after_received: Duration,
}

impl Windows {
    /// Both windows start closed: a thread that has seen no traffic sleeps at once.
    pub fn new(longest: Duration) -> Self {
        Windows { longest, after_sent: Duration::ZERO, after_received: Duration::ZERO }
    }

    /// How long to poll after `last`.
    pub fn window(&self, last: Last) -> Duration {
        match last {
            Last::Sent => self.after_sent,
            Last::Received => self.after_received,
        }
    }

    /// Adapts the window after `last` to a sleep of `slept` that followed it (the thread had
    /// polled for the whole window before).
    pub fn slept(&mut self, last: Last, slept: Duration) {
        let longest = self.longest;
        let window = match last {
            Last::Sent => &mut self.after_sent,
            Last::Received => &mut self.after_received,
        };
        *window = if slept < longest * WAKE_SLACK {
            (*window * 2).max(slept * 2).min(longest)
        } else {
            *window / 2
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn a_window_opens_to_cover_replies_that_came_soon_after_the_sleep() {
        let mut w = Windows::new(200 * US);
        assert_eq!(w.window(Last::Sent), Duration::ZERO);
        w.slept(Last::Sent, 60 * US);
        assert_eq!(w.window(Last::Sent), 120 * US);
        // It never exceeds the longest window.
        w.slept(Last::Sent, 90 * US);
        assert_eq!(w.window(Last::Sent), 200 * US);
        // The other direction is untouched.
        assert_eq!(w.window(Last::Received), Duration::ZERO);
    }

    #[test]
    fn long_sleeps_close_a_window_by_halves() {
        let mut w = Windows::new(200 * US);
        w.slept(Last::Received, 100 * US);
        assert_eq!(w.window(Last::Received), 200 * US);
        for nanos in [100_000, 50_000, 25_000, 12_500] {
            w.slept(Last::Received, Duration::from_millis(10));
            assert_eq!(w.window(Last::Received), Duration::from_nanos(nanos));
        }
    }

    #[test]
    fn a_ping_keeps_polling_only_for_the_reply() {
        // The pinging side: a request sent, its reply 100 µs later, the next request 10 ms on.
        let mut w = Windows::new(200 * US);
        for _ in 0..10 {
            // The reply: caught by the poll once the window is open, else after a short sleep.
            if w.window(Last::Sent) < 100 * US {
                w.slept(Last::Sent, 100 * US - w.window(Last::Sent));
            }
            w.slept(Last::Received, Duration::from_millis(10) - w.window(Last::Received));
        }
        assert_eq!(w.window(Last::Sent), 200 * US);
        assert!(w.window(Last::Received) < US, "{:?}", w.window(Last::Received));
    }

    #[test]
    fn a_zero_longest_window_never_polls() {
        let mut w = Windows::new(Duration::ZERO);
        w.slept(Last::Sent, 5 * US);
        assert_eq!(w.window(Last::Sent), Duration::ZERO);
    }
}
