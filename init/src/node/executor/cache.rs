//! The compile cache: modules this node compiled, serialized, under `<state-dir>/cache`
//! (`/var/lib/phase/cache`, tmpfs in private mode), one file per module SHA-256 and engine
//! compatibility hash, written atomically (temp file + rename), bounded in total size
//! (least recently used files go first).
//!
//! Deserializing a compiled module runs its machine code, so only bytes this node produced
//! are ever deserialized: each file carries an HMAC-SHA-256 under a key that exists only in
//! this cache directory (created 0600 on first use). A file that fails the check, or that
//! wasmtime rejects, is deleted and the module recompiled; it is never executed.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"PHCWASM1";
const KEY_FILE: &str = "cache.key";
const MAC_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
}

impl CacheError {
    pub fn reason(&self) -> &'static str {
        match self {
            CacheError::Io { .. } => "cache_io",
        }
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> CacheError + '_ {
    move |e| CacheError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// What a lookup found.
pub enum Lookup {
    Hit(wasmtime::Module),
    Miss,
    /// A file was there but failed the check (the reason); it was deleted.
    Discarded(&'static str),
}

pub struct CompileCache {
    dir: PathBuf,
    key: [u8; 32],
    max_bytes: u64,
    engine_tag: String,
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

impl CompileCache {
    /// Open (creating) the cache in `dir` for `engine`.
    pub fn open(dir: &Path, max_bytes: u64, engine: &wasmtime::Engine) -> Result<Self, CacheError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        let key_path = dir.join(KEY_FILE);
        let mut key = [0u8; 32];
        match std::fs::File::open(&key_path) {
            Ok(mut f) => f.read_exact(&mut key).map_err(io(&key_path))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::File::open("/dev/urandom")
                    .and_then(|mut r| r.read_exact(&mut key))
                    .map_err(io(Path::new("/dev/urandom")))?;
                let tmp = dir.join(format!(".{KEY_FILE}.{}", std::process::id()));
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)
                    .and_then(|mut f| f.write_all(&key).and_then(|()| f.sync_all()))
                    .map_err(io(&tmp))?;
                // Another process may have created it meanwhile: keep whichever won.
                std::fs::hard_link(&tmp, &key_path)
                    .or_else(|e| {
                        if e.kind() == std::io::ErrorKind::AlreadyExists {
                            std::fs::File::open(&key_path).and_then(|mut f| f.read_exact(&mut key))
                        } else {
                            Err(e)
                        }
                    })
                    .map_err(io(&key_path))?;
                let _ = std::fs::remove_file(&tmp);
            }
            Err(e) => return Err(io(&key_path)(e)),
        }
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(CompileCache {
            dir: dir.to_path_buf(),
            key,
            max_bytes,
            engine_tag: format!("{:016x}", h.finish()),
        })
    }

    /// The file of a module.
    pub fn path(&self, module_sha256: &[u8; 32]) -> PathBuf {
        self.dir.join(format!(
            "{}-{}.cwasm",
            phase_release::hex::encode(module_sha256),
            self.engine_tag
        ))
    }

    /// `None` only if HMAC refused the key (it takes any length).
    fn mac(&self, module_sha256: &[u8; 32], payload: &[u8]) -> Option<HmacSha256> {
        use hmac::{KeyInit, Mac};
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(&self.key).ok()?;
        m.update(module_sha256);
        m.update(self.engine_tag.as_bytes());
        m.update(payload);
        Some(m)
    }

    /// Look a module up; a bad file is deleted and reported.
    pub fn load(&self, engine: &wasmtime::Engine, module_sha256: &[u8; 32]) -> Lookup {
        use hmac::Mac;
        let path = self.path(module_sha256);
        let mut bytes = Vec::new();
        match std::fs::File::open(&path) {
            Ok(f) => {
                if f.take(self.max_bytes.saturating_add(1))
                    .read_to_end(&mut bytes)
                    .is_err()
                {
                    return self.discard(&path, "unreadable");
                }
            }
            Err(_) => return Lookup::Miss,
        }
        let header = MAGIC.len() + MAC_LEN;
        if bytes.len() < header || &bytes[..MAGIC.len()] != MAGIC {
            return self.discard(&path, "bad_header");
        }
        let payload = &bytes[header..];
        let tag = &bytes[MAGIC.len()..header];
        if self
            .mac(module_sha256, payload)
            .is_none_or(|m| m.verify_slice(tag).is_err())
        {
            return self.discard(&path, "bad_mac");
        }
        // SAFETY: the bytes are exactly what `store` wrote after this node compiled them
        // (checked by the HMAC under this cache's own key), for this engine configuration.
        match unsafe { wasmtime::Module::deserialize(engine, payload) } {
            Ok(m) => {
                // Recently used: last to be evicted.
                let _ = std::fs::File::options()
                    .append(true)
                    .open(&path)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                Lookup::Hit(m)
            }
            Err(_) => self.discard(&path, "rejected_by_engine"),
        }
    }

    fn discard(&self, path: &Path, reason: &'static str) -> Lookup {
        let _ = std::fs::remove_file(path);
        Lookup::Discarded(reason)
    }

    /// Store a module compiled by this node, then evict down to the size bound.
    pub fn store(
        &self,
        module_sha256: &[u8; 32],
        module: &wasmtime::Module,
    ) -> Result<(), CacheError> {
        use hmac::Mac;
        let payload = module.serialize().map_err(|e| CacheError::Io {
            path: self.path(module_sha256),
            reason: format!("serialize: {e}"),
        })?;
        let path = self.path(module_sha256);
        let tmp = self.dir.join(format!(
            ".{}.{}.tmp",
            phase_release::hex::encode(module_sha256),
            std::process::id()
        ));
        let mac = self
            .mac(module_sha256, &payload)
            .ok_or_else(|| CacheError::Io {
                path: path.clone(),
                reason: "HMAC key rejected".into(),
            })?
            .finalize()
            .into_bytes();
        std::fs::File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(MAGIC)?;
                f.write_all(&mac)?;
                f.write_all(&payload)?;
                f.sync_all()
            })
            .map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        self.evict();
        Ok(())
    }

    /// Delete least recently used files until the total is within the bound.
    fn evict(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, m.len(), e.path()))
            })
            .collect();
        files.sort();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        for (_, len, path) in files {
            if total <= self.max_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total = total.saturating_sub(len);
            }
        }
    }
}
