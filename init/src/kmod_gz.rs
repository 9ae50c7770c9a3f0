//! Kernel modules carried gzip'd (`.ko.gz`) in the initramfs, inflated in memory for
//! `init_module` (PURE). Debian's kernel has no in-kernel module decompression
//! (`CONFIG_MODULE_DECOMPRESS` unset), and the kernel pays for every byte of the initramfs
//! before `/init` starts, so the big modules that load in the background (ext4 and its
//! dependencies, for the state partition) travel at a quarter of their size and are
//! inflated only when their group loads. The gzip trailer's CRC-32 and size are checked.

use std::io::Read;

/// No module of the kernels we boot is near this; a larger output is refused, not allocated.
pub const MAX_MODULE_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum GzError {
    /// Not gzip, a corrupt stream, or a CRC-32/size mismatch in the trailer.
    #[error("not a valid gzip stream: {0}")]
    Corrupt(#[source] std::io::Error),
    #[error("inflates to more than {MAX_MODULE_BYTES} bytes")]
    TooLarge,
}

impl GzError {
    pub fn reason(&self) -> &'static str {
        match self {
            GzError::Corrupt(_) => "module_gzip_corrupt",
            GzError::TooLarge => "module_too_large",
        }
    }
}

/// Whether a module file is carried gzip'd (by its name, as `modules.dep` lists it).
pub fn is_gzip(path: &str) -> bool {
    path.ends_with(".ko.gz")
}

/// The module image inside a `.ko.gz` file's bytes.
pub fn inflate(gz: &[u8]) -> Result<Vec<u8>, GzError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .take(MAX_MODULE_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(GzError::Corrupt)?;
    if out.len() as u64 > MAX_MODULE_BYTES {
        return Err(GzError::TooLarge);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn inflates_what_the_builder_deflates_and_refuses_damage() {
        let image: Vec<u8> = (0..200_000u32).map(|i| (i % 7 + i / 5000) as u8).collect();
        let gz = gzip(&image);
        assert_eq!(inflate(&gz).unwrap(), image);
        // One flipped byte anywhere in the stream or its trailer: refused (the deflate
        // data itself, or the CRC-32 over what it inflated to, or the size).
        for at in [10, gz.len() / 2, gz.len() - 6, gz.len() - 2] {
            let mut bad = gz.clone();
            bad[at] ^= 0x40;
            let e = inflate(&bad).expect_err("damage must be refused");
            assert_eq!(e.reason(), "module_gzip_corrupt", "byte {at}: {e}");
        }
        // Cut short: refused, never a partial module.
        let e = inflate(&gz[..gz.len() - 8]).expect_err("truncated");
        assert_eq!(e.reason(), "module_gzip_corrupt");
        assert_eq!(
            inflate(b"\x7fELF not gzip").unwrap_err().reason(),
            "module_gzip_corrupt"
        );
    }

    #[test]
    fn refuses_what_inflates_past_the_cap() {
        let big = gzip(&vec![0u8; MAX_MODULE_BYTES as usize + 1]);
        assert_eq!(inflate(&big).unwrap_err().reason(), "module_too_large");
    }

    #[test]
    fn gzip_modules_are_known_by_name() {
        assert!(is_gzip("kernel/fs/ext4/ext4.ko.gz"));
        assert!(!is_gzip("kernel/fs/ext4/ext4.ko"));
        assert!(!is_gzip("kernel/fs/ext4/ext4.ko.xz"));
    }
}
