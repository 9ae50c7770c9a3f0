//! PURE: the background scrub of the verified rootfs. dm-verity checks a block only when
//! it is read, so a worn stick can hold a bad block unnoticed for weeks; stage 2 reads the
//! whole verity device once, paced, and every block dm-verity refuses (EIO) is located to
//! its 4 KiB block and reported. The reader, the clock and the pause are passed in (the
//! `sys` layer gives an `O_DIRECT` reader at idle priority), so the loop is host-tested.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// dm-verity's data block: the unit a mismatch is reported in.
pub const BLOCK: u64 = 4096;
/// Bytes per read while the device answers (a refused chunk is re-read block by block).
pub const CHUNK: usize = 1 << 20;
/// Where the squashfs lower layer of the root overlay is mounted (stage 1 put it there;
/// /run moved into the rootfs with the switch).
pub const LOWER: &str = "/run/phase/lower";

#[derive(Debug, thiserror::Error)]
pub enum ScrubError {
    #[error("open {device}: {source}")]
    Open {
        device: String,
        #[source]
        source: std::io::Error,
    },
    #[error("read {device} at byte {offset}: {source}")]
    Read {
        device: String,
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("scrub of {device} stopped at byte {offset} (shutdown)")]
    Cancelled { device: String, offset: u64 },
}

impl ScrubError {
    pub fn reason(&self) -> &'static str {
        match self {
            ScrubError::Open { .. } => "scrub_open_failed",
            ScrubError::Read { .. } => "scrub_read_failed",
            ScrubError::Cancelled { .. } => "scrub_cancelled",
        }
    }
}

/// What to scrub, read from the mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The dm-verity device under the rootfs.
    Verity(String),
    /// Nothing to scrub, and why.
    Skip(&'static str),
}

/// The device mounted at `lower` in `/proc/self/mounts` text: a device-mapper device
/// (`/dev/dm-N`, the only mappings the init makes are verity) is scrubbed; a loop device
/// is a RAM copy that was hashed whole before mounting.
pub fn target(mounts: &str, lower: &str) -> Target {
    let Some(source) = mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (src, dst) = (f.next()?, f.next()?);
        (dst == lower).then_some(src)
    }) else {
        return Target::Skip("no_lower_mount");
    };
    match source.strip_prefix("/dev/dm-") {
        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            Target::Verity(source.to_string())
        }
        _ if source.starts_with("/dev/loop") => Target::Skip("rootfs_in_ram"),
        _ => Target::Skip("not_a_verity_device"),
    }
}

/// How long to pause before the next read so that `done` bytes in `elapsed` stay at or
/// under `bytes_per_s` on average.
pub fn pace(done: u64, elapsed: Duration, bytes_per_s: u64) -> Duration {
    if bytes_per_s == 0 {
        return Duration::ZERO;
    }
    let due = Duration::from_secs_f64(done as f64 / bytes_per_s as f64);
    due.saturating_sub(elapsed)
}

/// A block device read at absolute offsets (an `O_DIRECT` fd in the guest, a fake here).
pub trait ReadAt {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize>;
}

/// The outcome of a complete pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub bytes: u64,
    pub bad_blocks: u64,
    /// The first refused block's byte offset.
    pub first_bad: Option<u64>,
}

/// What the node does after a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    KeepServing,
    /// The medium returns blocks that do not match the signed tree: peers must not be sent
    /// here for this release. PID 1 and its other services keep running (the blocks it
    /// needs were verified when read, and any later read of a bad one is refused again).
    StopServing,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::KeepServing => "keep_serving",
            Decision::StopServing => "stop_serving",
        }
    }
}

pub fn decide(r: &Report) -> Decision {
    if r.bad_blocks == 0 {
        Decision::KeepServing
    } else {
        Decision::StopServing
    }
}

/// dm-verity answers EIO for a block whose hash does not match.
fn refused(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(5)
}

/// Read `size` bytes of `dev` once. `pause(d)` is called before a read that would exceed
/// the rate; `on_bad(offset)` for each refused block, as found; `cancel` is checked before
/// every read. A read error other than a refusal ends the pass.
#[allow(clippy::too_many_arguments)]
pub fn scrub(
    device: &str,
    dev: &mut impl ReadAt,
    size: u64,
    bytes_per_s: u64,
    cancel: &AtomicBool,
    elapsed: impl Fn() -> Duration,
    mut pause: impl FnMut(Duration),
    mut on_bad: impl FnMut(u64),
) -> Result<Report, ScrubError> {
    let mut buf = vec![0u8; CHUNK];
    let mut report = Report {
        bytes: 0,
        bad_blocks: 0,
        first_bad: None,
    };
    let mut off = 0u64;
    let read_err = |offset, source| ScrubError::Read {
        device: device.to_string(),
        offset,
        source,
    };
    while off < size {
        if cancel.load(Ordering::Relaxed) {
            return Err(ScrubError::Cancelled {
                device: device.to_string(),
                offset: off,
            });
        }
        let wait = pace(report.bytes, elapsed(), bytes_per_s);
        if !wait.is_zero() {
            pause(wait);
        }
        let len = (size - off).min(CHUNK as u64) as usize;
        match dev.read_at(off, &mut buf[..len]) {
            Ok(0) => {
                return Err(read_err(
                    off,
                    std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
                ))
            }
            Ok(n) => {
                report.bytes += n as u64;
                off += n as u64;
            }
            Err(e) if refused(&e) => {
                // Somewhere in this chunk: find the block(s), one read each.
                let end = off + len as u64;
                let mut b = off;
                while b < end {
                    let blen = (end - b).min(BLOCK) as usize;
                    match dev.read_at(b, &mut buf[..blen]) {
                        Ok(n) if n > 0 => report.bytes += n as u64,
                        Ok(_) => {
                            return Err(read_err(
                                b,
                                std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
                            ))
                        }
                        Err(e) if refused(&e) => {
                            report.bad_blocks += 1;
                            report.first_bad.get_or_insert(b);
                            report.bytes += blen as u64;
                            on_bad(b);
                        }
                        Err(e) => return Err(read_err(b, e)),
                    }
                    b += blen as u64;
                }
                off = end;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_err(off, e)),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A device of `size` bytes where the listed blocks fail like dm-verity (EIO for any
    /// read that covers them), optionally answering at most `short` bytes per read.
    struct Fake {
        size: u64,
        bad: Vec<u64>,
        short: Option<usize>,
        reads: u32,
    }

    impl ReadAt for Fake {
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
            self.reads += 1;
            let end = offset + buf.len() as u64;
            if self.bad.iter().any(|b| *b < end && b + BLOCK > offset) {
                return Err(std::io::Error::from_raw_os_error(5));
            }
            let n = (self.size.saturating_sub(offset) as usize)
                .min(buf.len())
                .min(self.short.unwrap_or(usize::MAX));
            buf[..n].fill(0xa5);
            Ok(n)
        }
    }

    fn run(f: &mut Fake, rate: u64) -> (Result<Report, ScrubError>, Vec<u64>, Duration) {
        let clock = Cell::new(Duration::ZERO);
        let mut bad = Vec::new();
        let mut paused = Duration::ZERO;
        let cancel = AtomicBool::new(false);
        let size = f.size;
        let r = scrub(
            "/dev/dm-0",
            f,
            size,
            rate,
            &cancel,
            || clock.get(),
            |d| {
                paused += d;
                clock.set(clock.get() + d);
            },
            |o| bad.push(o),
        );
        (r, bad, paused)
    }

    #[test]
    fn refused_blocks_are_located_and_the_pass_goes_on() {
        let cases: &[(u64, &[u64])] = &[
            (3 * CHUNK as u64, &[]),
            (3 * CHUNK as u64, &[CHUNK as u64 + 5 * BLOCK]),
            (3 * CHUNK as u64, &[0, 3 * CHUNK as u64 - BLOCK]),
            // A size that is not a whole chunk, the bad block in the last, partial one.
            (2 * CHUNK as u64 + 3 * BLOCK, &[2 * CHUNK as u64 + BLOCK]),
            (CHUNK as u64, &[BLOCK, 2 * BLOCK, 9 * BLOCK]),
        ];
        for (size, bad) in cases {
            let mut f = Fake {
                size: *size,
                bad: bad.to_vec(),
                short: None,
                reads: 0,
            };
            let (r, found, _) = run(&mut f, 0);
            let r = r.unwrap();
            assert_eq!(found, bad.to_vec(), "size {size}");
            assert_eq!(r.bytes, *size, "every byte is accounted for");
            assert_eq!(r.bad_blocks, bad.len() as u64);
            assert_eq!(r.first_bad, bad.first().copied());
            let want = if bad.is_empty() {
                Decision::KeepServing
            } else {
                Decision::StopServing
            };
            assert_eq!(decide(&r), want);
        }
    }

    #[test]
    fn short_reads_continue_where_they_stopped() {
        let mut f = Fake {
            size: CHUNK as u64 + 7 * BLOCK,
            bad: vec![],
            short: Some(3 * BLOCK as usize + 17),
            reads: 0,
        };
        let (r, _, _) = run(&mut f, 0);
        assert_eq!(r.unwrap().bytes, CHUNK as u64 + 7 * BLOCK);
        assert!(f.reads > 2);
    }

    #[test]
    fn the_pass_is_paced_to_the_rate() {
        let size = 8 * CHUNK as u64;
        let mut f = Fake {
            size,
            bad: vec![],
            short: None,
            reads: 0,
        };
        // 2 MiB/s: the 8th chunk may start at 3.5 s, the reads themselves take no time here.
        let (r, _, paused) = run(&mut f, 2 * CHUNK as u64);
        assert_eq!(r.unwrap().bytes, size);
        assert_eq!(paused, Duration::from_millis(3500));
        let (_, _, unpaced) = run(
            &mut Fake {
                size,
                bad: vec![],
                short: None,
                reads: 0,
            },
            0,
        );
        assert_eq!(unpaced, Duration::ZERO);
    }

    #[test]
    fn pace_table() {
        let s = Duration::from_secs;
        let cases = [
            (0, s(0), 100, s(0)),
            (100, s(0), 100, s(1)),
            (100, s(1), 100, s(0)),
            (100, s(5), 100, s(0)),
            (300, s(1), 100, s(2)),
            (300, s(1), 0, s(0)),
        ];
        for (done, elapsed, rate, want) in cases {
            assert_eq!(pace(done, elapsed, rate), want, "{done} {elapsed:?} {rate}");
        }
    }

    #[test]
    fn other_errors_and_cancel_end_the_pass() {
        struct Broken;
        impl ReadAt for Broken {
            fn read_at(&mut self, _: u64, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::from_raw_os_error(19)) // ENODEV
            }
        }
        let cancel = AtomicBool::new(false);
        let e = scrub(
            "d",
            &mut Broken,
            BLOCK,
            0,
            &cancel,
            || Duration::ZERO,
            |_| {},
            |_| {},
        )
        .unwrap_err();
        assert_eq!(e.reason(), "scrub_read_failed");
        cancel.store(true, Ordering::Relaxed);
        let e = scrub(
            "d",
            &mut Broken,
            BLOCK,
            0,
            &cancel,
            || Duration::ZERO,
            |_| {},
            |_| {},
        )
        .unwrap_err();
        assert_eq!(e.reason(), "scrub_cancelled");
    }

    #[test]
    fn target_table() {
        let cases = [
            (
                "/dev/dm-0 /run/phase/lower squashfs ro 0 0\n",
                Target::Verity("/dev/dm-0".into()),
            ),
            (
                "overlay / overlay rw 0 0\n/dev/dm-12 /run/phase/lower squashfs ro 0 0\n",
                Target::Verity("/dev/dm-12".into()),
            ),
            (
                "/dev/loop0 /run/phase/lower squashfs ro 0 0\n",
                Target::Skip("rootfs_in_ram"),
            ),
            (
                "/dev/vda2 /run/phase/lower squashfs ro 0 0\n",
                Target::Skip("not_a_verity_device"),
            ),
            (
                "/dev/dm-x /run/phase/lower squashfs ro 0 0\n",
                Target::Skip("not_a_verity_device"),
            ),
            (
                "/dev/dm-0 /run/phase/lowerx squashfs ro 0 0\n",
                Target::Skip("no_lower_mount"),
            ),
            ("", Target::Skip("no_lower_mount")),
        ];
        for (mounts, want) in cases {
            assert_eq!(target(mounts, LOWER), want, "{mounts:?}");
        }
    }
}
