//! `phase`: the Phase Boot PID 1, and the host CLI when it is not PID 1.
//!
//! As PID 1 it runs [`boot::run`] inside `catch_unwind`, and whatever happens it ends in
//! [`sys::power::finish`]: poweroff or reboot, never a return to the kernel (an exiting
//! PID 1 is a kernel panic). As any other process it is the `phase` CLI (`phase --help`).
//!
//! # Dependencies (all on the boot path, so each must pay for its size)
//! - `rustix`: typed, libc-free syscalls (mount, finit_module, reboot, waitpid, clocks); no
//!   unsafe of our own for them.
//! - `tokio` (current-thread runtime, signals, timers, sync): the supervisor runs the node's
//!   services as tasks in this one process, and signals (SIGCHLD/SIGTERM/SIGINT) arrive as
//!   streams instead of async-signal-unsafe handlers.
//! - `tracing` + `tracing-subscriber` (fmt only, no ANSI, no env filter): structured logs
//!   to the console and `/dev/kmsg`; the same facade the later node code (libp2p, wasmtime)
//!   logs through.
//! - `serde` + `serde_json`: event lines now, signed release metadata next; one JSON
//!   implementation for both.
//! - `thiserror`: one error enum per module with a stable `reason()`, at no runtime cost.
//! - `phase-layout` (ours; sha2 only): the disk layout shared with `phase-image`, so the
//!   partition types and GPT parsing the init trusts are the ones the builder writes.
//! - `mdns-sd`: DNS-SD over mDNS for LAN discovery and announcements (pure Rust, its own
//!   small thread, no D-Bus/avahi needed); interoperates with avahi and Bonjour, which a
//!   hand-written querier would have to prove case by case (probing, known answers, goodbyes).
//! - `fatfs` (std + alloc, no chrono): a disk-booted node reads its release's kernel and
//!   initramfs back from the ESP to serve them, through a reader that refuses writes; no
//!   mount, so no vfat/nls modules in the initramfs (the builder writes the ESP with it too).
//! - `libp2p` (tcp, noise, yamux, kad, identify, ping, request-response + cbor; no DNS, QUIC,
//!   TLS or relay) + `ed25519-dalek`: provider discovery in `internet` mode needs a DHT that
//!   interoperates and survives hostile peers; Kademlia + Noise is the standard, and the same
//!   host carries the job protocol (src/p2p/; request-response is libp2p's own, with size
//!   caps, and costs the initramfs's build little since it only composes it).
//!   `serde_bytes` makes the job protocol's byte fields CBOR byte strings (a module as an
//!   array of integers would double on the wire).
//!   Its node key is an ed25519 key that also signs the provider records (ed25519-dalek, as
//!   in `phase-release`). The largest dependency of the init: +2.0 MiB static (musl, release).
//! - Feature `executor` (default; the rootfs's `/usr/lib/phase/phase` has it, the initramfs's
//!   build leaves it out): `wasmtime` (Cranelift, pooling allocator) + `wasmtime-wasi`
//!   (preview 1) run jobs (src/node/); a sandbox with fuel, epochs, resource limiters and
//!   copy-on-write instantiation is not something to hand-write. `hmac` + `sha2` check that
//!   compile-cache files are this node's own; `rand_core` is the trait of the job's seeded
//!   random source; `bytes` is the buffer type of WASI's output streams. Size: see README.
//! - `flate2` (miniz_oxide backend, decoding only is linked): the big modules that load in
//!   the background (ext4, jbd2, mbcache, crc16) are carried gzip'd in the initramfs and
//!   inflated when their group loads (src/kmod_gz.rs): Debian's kernel cannot decompress
//!   modules itself, and the initramfs's unpack before `/init` is paid per byte. The crate
//!   `phase-image` already uses; a pure-Rust inflater with the gzip CRC-32 check.
//! - `lexopt` (no dependencies, ~1k lines): the one argument parser of every `phase` command
//!   (src/cli/). It only splits options and values, correctly (`--opt=value`, `--`, bundled
//!   shorts, non-UTF-8), so each command keeps its own plain parsing loop and usage text
//!   instead of a derive framework's code size; off PID 1 only, but in the same binary.
//!   `phase-cli-args` (ours; lexopt only) is the shape around it that `phase-image` shares:
//!   the dispatch table, generated `--help`, usage errors (a few hundred bytes of code).

mod boot;
mod cli;
mod config;
mod discover;
mod events;
mod fetch;
mod grow;
mod handover;
mod kexec;
mod kmod;
mod kmod_gz;
mod kmod_sig;
mod log;
mod net;
#[cfg(feature = "executor")]
mod node;
mod p2p;
mod paths;
mod provider;
mod scrub;
mod selftest;
mod status;
mod supervise;
mod sys;
mod uevent;
mod virtio;

fn main() {
    if rustix::process::getpid().is_init() {
        pid1()
    } else {
        std::process::exit(cli::run(std::env::args_os().skip(1).collect()))
    }
}

/// PID 1: boot, and end in poweroff/reboot whatever happens.
fn pid1() -> ! {
    let t0 = sys::clock::boottime_ms();
    log::init();
    let events = std::sync::Arc::new(events::EventLog::new());
    boot::install_panic_hook(events.clone());
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let stage = config::Stage::from_argv(std::env::args().nth(1).as_deref());
        boot::run(t0, events.clone(), stage)
    }));
    let action = match outcome {
        Ok(Ok(action)) => action,
        Ok(Err(e)) => boot::deliberate_reboot(&events, &format!("tokio runtime: {e}")),
        Err(_) => boot::deliberate_reboot(&events, "panic in the boot sequence"),
    };
    sys::power::finish(action)
}
