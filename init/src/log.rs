//! Human-readable logs: `[   2.345] LEVEL target: message` on the console and, once
//! `/dev/kmsg` exists, in the kernel log. Debug lines only with `phase.debug`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use tracing::Level;
use tracing_subscriber::fmt::{format::Writer, time::FormatTime, MakeWriter};

static DEBUG: AtomicBool = AtomicBool::new(false);
static KMSG: OnceLock<std::fs::File> = OnceLock::new();

/// Install the subscriber. Safe to call once; later calls are ignored.
pub fn init() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(Level::DEBUG)
        .with_ansi(false)
        .with_timer(BootTime)
        .with_writer(Sink)
        .try_init();
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
            // Our own info lines; only warnings and errors from libraries (libp2p is
            // chatty at info), unless `phase.debug`.
            enabled: DEBUG.load(Ordering::Relaxed)
                || level <= Level::WARN
                || (level <= Level::INFO && meta.target().starts_with("phase")),
        }
    }
}
