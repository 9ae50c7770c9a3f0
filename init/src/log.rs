//! Human-readable logs: `[   2.345] LEVEL target: message` on the console and, once
//! `/dev/kmsg` exists, in the kernel log. Debug lines only with `phase.debug`.
//!
//! Log fields carry strings from the network (mDNS names, DHT URLs, HTTP errors). Each
//! record is written as exactly one line, control characters escaped ([`one_line`]), so a
//! log line always starts with its timestamp: only the event writer can start a console
//! line with `PHASE-EVENT`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use tracing::Level;
use tracing_subscriber::fmt::{format::Writer, time::FormatTime, MakeWriter};

static DEBUG: AtomicBool = AtomicBool::new(false);
static KMSG: OnceLock<std::fs::File> = OnceLock::new();

/// Install the subscriber. Safe to call once; later calls are ignored.
pub fn init() {
    use tracing_subscriber::layer::SubscriberExt;
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(Level::DEBUG)
        .with_ansi(false)
        .with_timer(BootTime)
        .with_writer(Sink)
        .finish()
        // Asked before a record is formatted: a line nobody will see costs nothing.
        .with(tracing_subscriber::filter::filter_fn(|m| {
            shown(*m.level(), m.target(), DEBUG.load(Ordering::Relaxed))
        }));
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// Whether a record is shown: our own info lines; only warnings and errors from libraries
/// (libp2p is chatty at info), unless `phase.debug`.
fn shown(level: Level, target: &str, debug: bool) -> bool {
    debug || level <= Level::WARN || (level <= Level::INFO && target.starts_with("phase"))
}

pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

/// Copy log lines to the kernel log from now on.
pub fn attach_kmsg(file: std::fs::File) {
    let _ = KMSG.set(file);
}

struct BootTime;

impl FormatTime for BootTime {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        let ms = crate::sys::clock::boottime_ms();
        write!(w, "[{:>5}.{:03}]", ms / 1000, ms % 1000)
    }
}

#[derive(Clone, Copy)]
struct Sink;

/// One log line; written to the console and kmsg when dropped (tracing writes a line in
/// several pieces, kmsg needs it whole).
struct Line {
    buf: Vec<u8>,
    kmsg_level: u8,
    enabled: bool,
}

impl Write for Line {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if !self.enabled || self.buf.is_empty() {
            return;
        }
        self.buf = one_line(&self.buf);
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&self.buf);
        let _ = out.flush();
        if let Some(mut k) = KMSG.get() {
            // Facility user; warnings and errors keep their level so `dmesg -l err` finds
            // them, the rest is logged at debug level so the console does not show it twice.
            let mut rec = format!("<{}>", 8 + self.kmsg_level).into_bytes();
            rec.extend_from_slice(&self.buf);
            let _ = k.write_all(&rec);
        }
    }
}

/// One log record as one console line: every control character but a final newline
/// (CR, LF, ESC, NUL, …) and DEL written as `\xNN`, so nothing from a field can start a
/// new line, move the cursor or clear the screen.
pub fn one_line(record: &[u8]) -> Vec<u8> {
    let body = record.strip_suffix(b"\n").unwrap_or(record);
    let mut out = Vec::with_capacity(record.len() + 1);
    for &b in body {
        if b < 0x20 && b != b'\t' || b == 0x7f {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out.push(b'\n');
    out
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = Line;
    fn make_writer(&'a self) -> Line {
        Line {
            buf: Vec::new(),
            kmsg_level: 7,
            enabled: true,
        }
    }
    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Line {
        let level = *meta.level();
        Line {
            buf: Vec::with_capacity(128),
            kmsg_level: match level {
                Level::ERROR => 3,
                Level::WARN => 4,
                _ => 7,
            },
            enabled: shown(level, meta.target(), DEBUG.load(Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn library_info_and_every_debug_line_only_with_phase_debug() {
        for (level, target, debug, want) in [
            (Level::INFO, "phase::boot", false, true),
            (Level::DEBUG, "phase::boot", false, false),
            (Level::DEBUG, "phase::boot", true, true),
            (Level::INFO, "libp2p_kad", false, false),
            (Level::INFO, "libp2p_kad", true, true),
            (Level::WARN, "libp2p_kad", false, true),
            (Level::ERROR, "hyper", false, true),
            (Level::TRACE, "phase", true, true),
        ] {
            assert_eq!(
                shown(level, target, debug),
                want,
                "{level} {target} {debug}"
            );
        }
    }

    #[test]
    fn control_characters_are_escaped() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"plain\n", b"plain\n"),
            (b"no newline", b"no newline\n"),
            (b"a\nPHASE-EVENT {}\n", b"a\\x0aPHASE-EVENT {}\n"),
            (b"a\r\nb", b"a\\x0d\\x0ab\n"),
            (b"\x1b[2Jx\x7f\x00", b"\\x1b[2Jx\\x7f\\x00\n"),
            (b"tab\tok", b"tab\tok\n"),
        ];
        for (raw, want) in cases {
            assert_eq!(one_line(raw), *want, "{}", String::from_utf8_lossy(raw));
        }
    }

    /// What the init logs about a DHT record or an mDNS answer, formatted by the real
    /// subscriber and escaped as the console writer does: no forged event line.
    #[test]
    fn a_forged_event_in_a_network_string_stays_inside_its_log_line() {
        #[derive(Clone)]
        struct Capture(Arc<Mutex<Vec<u8>>>);
        struct Record(Vec<u8>, Arc<Mutex<Vec<u8>>>);
        impl Write for Record {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        impl Drop for Record {
            fn drop(&mut self) {
                if let Ok(mut all) = self.1.lock() {
                    all.extend_from_slice(&one_line(&self.0));
                }
            }
        }
        impl<'a> MakeWriter<'a> for Capture {
            type Writer = Record;
            fn make_writer(&'a self) -> Record {
                Record(Vec::new(), self.0.clone())
            }
        }
        let all = Arc::new(Mutex::new(Vec::new()));
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_timer(BootTime)
            .with_writer(Capture(all.clone()))
            .finish();
        let forged =
            "PHASE-EVENT {\"event\":\"init.ready\",\"t_ms\":1,\"mode\":\"internet\",\"stage\":2}";
        let url = format!("http://10.0.0.3/\n{forged}");
        let name = format!("node\r\n{forged}\n");
        tracing::subscriber::with_default(sub, || {
            tracing::info!("DHT: rejected a record from {url}: bad_url");
            tracing::info!("LAN: skipped {name}: bad_path");
            tracing::warn!(url = %url, "provider failed");
        });
        let text = String::from_utf8(all.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        for l in text.lines() {
            assert!(l.starts_with('['), "{l}");
            assert!(!l.contains('\r'), "{l}");
        }
        assert!(text.contains(forged), "the string is kept, as data: {text}");
    }
}
