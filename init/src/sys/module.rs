//! Kernel module loading.

use rustix::io::Errno;
use std::path::Path;

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
}

/// `finit_module(open(path), "", flags)`; compressed files are handed to the kernel as-is.
pub fn load(path: &Path) -> Result<Loaded, ModuleError> {
    let file = std::fs::File::open(path).map_err(|source| ModuleError::Open {
        path: path.display().to_string(),
        source,
    })?;
    let name = path.to_string_lossy();
    let flags = if name.ends_with(".ko") {
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

/// `/sys/module/<name>/initstate` reads `live` or `coming`: the module is loaded or being
/// loaded. The kernel's own duplicate check comes only after it has hashed the whole file
/// for its signature, so a caller asks this first.
pub fn present(name: &str) -> bool {
    let state = std::fs::read_to_string(Path::new("/sys/module").join(name).join("initstate"));
    matches!(state.as_deref().map(str::trim), Ok("live" | "coming"))
}
