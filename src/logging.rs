//! How log lines look: plain text for a terminal or a file; lines that the systemd journal reads
//! a priority from when stderr is the journal (so `journalctl -p err` finds the errors); or one
//! JSON object per line for log shippers.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The format of log lines on stderr (`--log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `journal` when stderr is the systemd journal (JOURNAL_STREAM names it), else `text`.
    Auto,
    /// A timestamp, the level and the message.
    Text,
    /// The syslog priority (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug and trace) and
    /// the message: the journal keeps the priority and adds the time itself.
    Journal,
    /// One JSON object per line: `timestamp`, `level`, `message` and the event's fields.
    Json,
}

impl LogFormat {
    /// What `Auto` means here and now; any other format is itself.
    pub fn resolve(self) -> LogFormat {
        match self {
            LogFormat::Auto if stderr_is_journal() => LogFormat::Journal,
            LogFormat::Auto => LogFormat::Text,
            other => other,
        }
    }
}

/// Whether stderr is connected to the systemd journal: systemd then sets `JOURNAL_STREAM` to the
/// `DEVICE:INODE` of that stream. Checking that it names stderr itself keeps a variable inherited
/// by a child whose stderr goes elsewhere (a pipe, a file) from counting.
pub fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Ok(stderr) = std::io::stderr().as_fd().try_clone_to_owned() else { return false };
    let Ok(meta) = std::fs::File::from(stderr).metadata() else { return false };
    stream.to_str().is_some_and(|stream| names_stream(stream, meta.dev(), meta.ino()))
}

/// Whether `stream`, a `JOURNAL_STREAM` value (decimal `DEVICE:INODE`), names the file with this
/// device and inode number.
fn names_stream(stream: &str, device: u64, inode: u64) -> bool {
    stream.split_once(':').is_some_and(|(d, i)| d.parse() == Ok(device) && i.parse() == Ok(inode))
}

/// The syslog priority of a level, as sd-daemon(3) prefixes take it.
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Writes `text` with `<priority>` before each of its lines, so that the journal gives every
/// line the priority, not only the first.
fn write_prefixed(out: &mut impl fmt::Write, priority: u8, text: &str) -> fmt::Result {
    for line in text.split('\n') {
        writeln!(out, "<{priority}>{line}")?;
    }
    Ok(())
}

/// The event format for the journal: each line its priority and the message with its fields;
/// no timestamp (the journal has its own) and no colours.
pub struct Journal;

impl<S, N> FormatEvent<S, N> for Journal
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut text = String::new();
        ctx.format_fields(Writer::new(&mut text), event)?;
        write_prefixed(&mut writer, priority(*event.metadata().level()), &text)
    }
}

/// Prints an error that comes before logging is set up (a bad command line or config file) on
/// stderr: as an error priority when stderr is the journal, as it is otherwise.
pub fn print_early_error(text: &str) {
    let text = text.trim_end();
    let mut out = String::new();
    if stderr_is_journal() {
        // Writing into a String cannot fail.
        let _ = write_prefixed(&mut out, priority(Level::ERROR), text);
    } else {
        let _ = writeln!(out, "{text}");
    }
    let _ = std::io::stderr().lock().write_all(out.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn journal_stream_must_name_this_device_and_inode() {
        assert!(names_stream("2049:131075", 2049, 131_075));
        assert!(!names_stream("2049:131075", 2049, 131_076));
        assert!(!names_stream("2050:131075", 2049, 131_075));
        for garbage in ["", "2049", "2049:", ":131075", "0x801:131075", "2049:131075:1"] {
            assert!(!names_stream(garbage, 2049, 131_075), "{garbage:?}");
        }
    }

    #[test]
    fn priorities_are_syslog_ones() {
        let levels = [Level::ERROR, Level::WARN, Level::INFO, Level::DEBUG, Level::TRACE];
        assert_eq!(levels.map(priority), [3, 4, 6, 7, 7]);
    }

    /// A writer that keeps what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn journal_lines_carry_the_priority_and_the_fields_but_no_time() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .event_format(Journal)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!("the local address is gone");
            tracing::warn!(suppressed = 3, "dropped");
            tracing::info!("two\nlines");
            tracing::trace!("detail");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "<3>the local address is gone\n<4>dropped suppressed=3\n<6>two\n<6>lines\n<7>detail\n"
        );
    }

    #[test]
    fn every_line_of_a_prefixed_text_gets_the_priority() {
        let mut out = String::new();
        write_prefixed(&mut out, 3, "error: bad\n\nUsage: udptun").unwrap();
        assert_eq!(out, "<3>error: bad\n<3>\n<3>Usage: udptun\n");
    }
}
