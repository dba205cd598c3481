//! Exit statuses a supervisor can act on (as in `sysexits.h`): configuration that no restart can
//! fix and a start-up failure that may pass are marked where they are found, so that the binary
//! tells them apart by type, not by the wording of a message.

use std::fmt;

/// `EX_CONFIG`: configuration that no restart can fix (the units do not restart on it).
pub const CONFIG: u8 = 78;
/// `EX_TEMPFAIL`: a start-up failure that may pass by itself (the units restart on it).
pub const TEMPFAIL: u8 = 75;
/// Any other failure (a device or socket that cannot be set up, a fatal error while running).
pub const FAILURE: u8 = 1;

/// What kind of failure an error is, for the exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The configuration is wrong: a file that is missing or does not parse, a bad value.
    Config,
    /// May pass without a change here: a name that does not resolve yet, a hosts URL that
    /// cannot be fetched or serves a document that does not load.
    Temporary,
}

impl Failure {
    /// `error`, marked as this kind of failure; its message and chain are unchanged.
    pub fn mark(self, error: impl Into<anyhow::Error>) -> anyhow::Error {
        anyhow::Error::new(Marked { failure: self, error: error.into() })
    }

    /// The exit status of this kind of failure.
    pub fn status(self) -> u8 {
        match self {
            Failure::Config => CONFIG,
            Failure::Temporary => TEMPFAIL,
        }
    }
}

/// The exit status for `error`: that of the outermost mark in its chain, else [`FAILURE`].
pub fn status(error: &anyhow::Error) -> u8 {
    error.downcast_ref::<Marked>().map_or(FAILURE, |marked| marked.failure.status())
}

/// An error with its kind of failure; it displays and chains as the error itself.
#[derive(Debug)]
struct Marked {
    failure: Failure,
    error: anyhow::Error,
}

impl fmt::Display for Marked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for Marked {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::anyhow;

    #[test]
    fn a_mark_sets_the_status_and_leaves_the_message_alone() {
        let inner = anyhow!("No such file").context("--key /etc/udptun.key");
        let marked = Failure::Config.mark(inner);
        assert_eq!(format!("{marked:#}"), "--key /etc/udptun.key: No such file");
        assert_eq!(format!("{marked}"), "--key /etc/udptun.key");
        assert_eq!(status(&marked), CONFIG);
        assert_eq!(status(&Failure::Temporary.mark(anyhow!("x"))), TEMPFAIL);
    }

    #[test]
    fn context_added_later_keeps_the_mark_and_the_outermost_mark_wins() {
        let marked = Failure::Temporary.mark(anyhow!("does not resolve")).context("the first table");
        assert_eq!(status(&marked), TEMPFAIL);
        assert_eq!(format!("{marked:#}"), "the first table: does not resolve");
        assert_eq!(status(&Failure::Config.mark(marked)), CONFIG);
    }

    #[test]
    fn an_unmarked_error_is_a_plain_failure() {
        let io = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        assert_eq!(status(&anyhow::Error::new(io).context("UDP port 0.0.0.0:7777")), FAILURE);
    }
}
