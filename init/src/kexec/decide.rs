//! PURE: the handoff decision. Stage 1 ends in exactly one of three ways: switch root into
//! a verified rootfs for the running kernel, kexec into a verified release's own kernel,
//! or stay on the initramfs (with a reason). This replaces a `rootfs_ready` flag and a
//! `kexec_needed` string spread over the steps.

use crate::config::KexecPolicy;

/// Where a verified release came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The boot medium (its partitions verified by dm-verity or a hashed RAM copy).
    Local,
    /// A provider (its artifacts downloaded into RAM, each SHA-256 checked).
    Fetched,
}

/// A verified release that stage 1 could boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub version: u64,
    /// The SHA-256 (hex) of its signed kernel.
    pub kernel_sha256: String,
}

/// What stage 1 does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handoff {
    /// Switch root into this release's rootfs, on the running kernel.
    SwitchRoot { source: Source, version: u64 },
    /// kexec into this release's kernel and initramfs, carrying it across.
    Kexec { source: Source, version: u64 },
    /// Nothing to boot into: the initramfs keeps serving.
    Stay(Stay),
}

/// Why stage 1 stays on the initramfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stay {
    /// No release verified, locally or from a provider.
    NoRelease,
    /// The only releases need another kernel and `phase.kexec=never`.
    KexecForbidden,
}

impl Stay {
    pub fn reason(self) -> &'static str {
        match self {
            Stay::NoRelease => "no_verified_release",
            Stay::KexecForbidden => "kexec_forbidden",
        }
    }
}

/// Decide (see the module docs). The newest verified release wins (the local one on a
/// tie: it is already mounted); it is booted by kexec when its kernel is not the running
/// one (`running`: `/etc/phase/kernel.sha256`), or always with `phase.kexec=always`. With
/// `phase.kexec=never` the newest release of the running kernel is taken instead. The
/// floor and rollback rules were applied when each offer was verified.
pub fn handoff(
    local: Option<&Offer>,
    fetched: Option<&Offer>,
    running: &str,
    policy: KexecPolicy,
) -> Handoff {
    let mut offers: Vec<(Source, &Offer)> = Vec::new();
    if let Some(l) = local {
        offers.push((Source::Local, l));
    }
    if let Some(f) = fetched {
        offers.push((Source::Fetched, f));
    }
    // Newest first; the stable sort keeps Local ahead of Fetched on a tie.
    offers.sort_by_key(|o| std::cmp::Reverse(o.1.version));
    let same_kernel = |o: &Offer| o.kernel_sha256.eq_ignore_ascii_case(running.trim());
    let Some(&(source, newest)) = offers.first() else {
        return Handoff::Stay(Stay::NoRelease);
    };
    match policy {
        KexecPolicy::Always => Handoff::Kexec {
            source,
            version: newest.version,
        },
        KexecPolicy::Auto if !same_kernel(newest) => Handoff::Kexec {
            source,
            version: newest.version,
        },
        KexecPolicy::Auto => Handoff::SwitchRoot {
            source,
            version: newest.version,
        },
        KexecPolicy::Never => match offers.iter().find(|(_, o)| same_kernel(o)) {
            Some(&(source, o)) => Handoff::SwitchRoot {
                source,
                version: o.version,
            },
            None => Handoff::Stay(Stay::KexecForbidden),
        },
    }
}
