//! Kernel module loading: `finit_module` of a `.ko` file, or `init_module` of a `.ko.gz`
//! file's image inflated by [`crate::kmod_gz`]. Where the kernel does not enforce module
//! signatures, a signed image goes to `init_module` without its signature
//! ([`crate::kmod_sig`] says why); the first refusal of one (lockdown) ends that for good.

use crate::kmod_sig;
use rustix::io::Errno;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};

/// `MODULE_INIT_COMPRESSED_FILE`: let the kernel decompress `.ko.xz`/`.ko.zst`.
const MODULE_INIT_COMPRESSED_FILE: i32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    Now,
    /// `EEXIST`: already loaded (or built in under this name).
    Already,
}

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("open {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("finit_module({path}): {errno}")]
    Load {
        path: String,
        #[source]
        errno: Errno,
    },
    #[error("{path}: {}: {source}", .source.reason())]
    Inflate {
        path: String,
        #[source]
        source: crate::kmod_gz::GzError,
    },
    #[error("init_module({path}): {errno}")]
    LoadImage {
        path: String,
        #[source]
        errno: Errno,
    },
}

/// `finit_module(open(path), "", flags)`; a `.ko` whose signature is left off, or a `.ko.gz`
/// inflated, goes to `init_module(image, "")`; other compressed files are handed to the
/// kernel as-is.
pub fn load(path: &Path) -> Result<Loaded, ModuleError> {
    let name = path.to_string_lossy();
    if crate::kmod_gz::is_gzip(&name) {
        return load_gzip(path);
    }
    let plain = name.ends_with(".ko");
    if plain && signatures() == Signatures::LeftOff {
        let image = std::fs::read(path).map_err(opening(path))?;
        return load_image(path, &image);
    }
    let file = std::fs::File::open(path).map_err(opening(path))?;
    let flags = if plain {
        0
    } else {
        MODULE_INIT_COMPRESSED_FILE
    };
    match rustix::system::finit_module(&file, c"", flags) {
        Ok(()) => Ok(Loaded::Now),
        Err(Errno::EXIST) => Ok(Loaded::Already),
        Err(errno) => Err(ModuleError::Load {
            path: path.display().to_string(),
            errno,
        }),
    }
}

fn opening(path: &Path) -> impl FnOnce(std::io::Error) -> ModuleError + '_ {
    move |source| ModuleError::Open {
        path: path.display().to_string(),
        source,
    }
}

/// `/sys/module/<name>/initstate` reads `live` or `coming`: the module is loaded or being
/// loaded. The kernel's own duplicate check comes only after it has hashed the whole file
/// for its signature, so a caller asks this first.
pub fn present(name: &str) -> bool {
    let state = std::fs::read_to_string(Path::new("/sys/module").join(name).join("initstate"));
    matches!(state.as_deref().map(str::trim), Ok("live" | "coming"))
}

fn load_gzip(path: &Path) -> Result<Loaded, ModuleError> {
    let gz = std::fs::read(path).map_err(opening(path))?;
    let image = crate::kmod_gz::inflate(&gz).map_err(|source| ModuleError::Inflate {
        path: path.display().to_string(),
        source,
    })?;
    load_image(path, &image)
}

/// Whether the init hands the kernel signed modules without their signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signatures {
    /// The kernel would load a module whose signature fails: the signatures are left off.
    LeftOff,
    /// The kernel checks each module's signature: it enforces them (or has no module
    /// signing, then there is nothing to check).
    Checked,
    /// `sig_enforce` said no, but the kernel refused an image without its signature
    /// (lockdown): every module since went with its signature.
    Refused,
}

impl Signatures {
    pub fn name(self) -> &'static str {
        match self {
            Signatures::LeftOff => "left_off_not_enforced",
            Signatures::Checked => "checked",
            Signatures::Refused => "checked_unsigned_refused",
        }
    }
}

/// 0: not read yet; 1, 2, 3: [`Signatures::LeftOff`], `Checked`, `Refused`.
static SIGNATURES: AtomicU8 = AtomicU8::new(0);

/// What this boot does with module signatures: read once from the kernel's `sig_enforce`.
pub fn signatures() -> Signatures {
    match SIGNATURES.load(Ordering::Relaxed) {
        1 => Signatures::LeftOff,
        2 => Signatures::Checked,
        3 => Signatures::Refused,
        _ => {
            let param = std::fs::read_to_string("/sys/module/module/parameters/sig_enforce");
            let off = kmod_sig::not_enforced(param.ok().as_deref());
            // Another thread may have seen a refusal meanwhile: that stands.
            let first = if off { 1 } else { 2 };
            let _ = SIGNATURES.compare_exchange(0, first, Ordering::Relaxed, Ordering::Relaxed);
            signatures()
        }
    }
}

/// `init_module` of an image in memory: without its signature while they are left off; if
/// the kernel refuses that (`EPERM` under lockdown, `EKEYREJECTED` when enforcing), with it,
/// and with every module after it.
fn load_image(path: &Path, image: &[u8]) -> Result<Loaded, ModuleError> {
    let bare = match signatures() {
        Signatures::LeftOff => kmod_sig::unsigned(image),
        Signatures::Checked | Signatures::Refused => None,
    };
    if let Some(bare) = bare {
        match rustix::system::init_module(bare, c"") {
            Err(Errno::PERM | Errno::KEYREJECTED) => {
                SIGNATURES.store(3, Ordering::Relaxed);
                tracing::warn!(
                    module = %path.display(),
                    "the kernel refused a module without its signature (lockdown): every module goes signed from now on"
                );
            }
            other => return loaded(path, other),
        }
    }
    loaded(path, rustix::system::init_module(image, c""))
}

fn loaded(path: &Path, result: Result<(), Errno>) -> Result<Loaded, ModuleError> {
    match result {
        Ok(()) => Ok(Loaded::Now),
        Err(Errno::EXIST) => Ok(Loaded::Already),
        Err(errno) => Err(ModuleError::LoadImage {
            path: path.display().to_string(),
            errno,
        }),
    }
}
