//! Kernel module loading: `finit_module` of a `.ko` file, or `init_module` of a `.ko.gz`
//! file's image inflated by [`crate::kmod_gz`].

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

/// `finit_module(open(path), "", flags)`; a `.ko.gz` is inflated and given to
/// `init_module(image, "")`; other compressed files are handed to the kernel as-is.
pub fn load(path: &Path) -> Result<Loaded, ModuleError> {
    if crate::kmod_gz::is_gzip(&path.to_string_lossy()) {
        return load_gzip(path);
    }
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

fn load_gzip(path: &Path) -> Result<Loaded, ModuleError> {
    let name = path.display().to_string();
    let gz = std::fs::read(path).map_err(|source| ModuleError::Open {
        path: name.clone(),
        source,
    })?;
    let image = crate::kmod_gz::inflate(&gz).map_err(|source| ModuleError::Inflate {
        path: name.clone(),
        source,
    })?;
    match rustix::system::init_module(&image, c"") {
        Ok(()) => Ok(Loaded::Now),
        Err(Errno::EXIST) => Ok(Loaded::Already),
        Err(errno) => Err(ModuleError::LoadImage { path: name, errno }),
    }
}
