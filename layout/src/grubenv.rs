//! The menu-choice file on the ESP (`/boot/grub/grubenv`): GRUB's 1024-byte environment
//! block, which the menu loads with `load_env` to pick the default entry, the timeout and
//! extra kernel arguments. Its size never changes, so a choice can be written straight
//! into a disk image's bytes (a test's copy, or a stick) without a FAT driver: [`find`]
//! locates the block by its signature and our marker line at a sector boundary.

/// GRUB's signature line; comment lines (`#`) are skipped by GRUB's parser.
const SIGNATURE: &[u8] = b"# GRUB Environment Block\n";
/// Our marker: tells this block from the signature string inside GRUB's own images.
const MARKER: &[u8] = b"# phase-boot menu choice (docs/usb.md)\n";
pub const SIZE: usize = 1024;
/// The variables the menu reads, and only these (`load_env` is given this list).
pub const VARIABLES: [&str; 3] = ["default", "timeout", "phase_extra"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrubenvError {
    #[error("{0:?} is not a menu variable (one of default, timeout, phase_extra)")]
    UnknownVariable(String),
    #[error("value {0:?} has a character GRUB would read as syntax (newline, quote, $, ; or \\)")]
    BadValue(String),
    #[error("the variables do not fit in {SIZE} bytes")]
    TooLong,
}

impl GrubenvError {
    pub fn reason(&self) -> &'static str {
        match self {
            GrubenvError::UnknownVariable(_) => "grubenv_unknown_variable",
            GrubenvError::BadValue(_) => "grubenv_bad_value",
            GrubenvError::TooLong => "grubenv_too_long",
        }
    }
}

/// The block holding `vars` (none: an empty choice, the menu's own defaults).
pub fn render(vars: &[(&str, &str)]) -> Result<[u8; SIZE], GrubenvError> {
    let mut b = Vec::with_capacity(SIZE);
    b.extend_from_slice(SIGNATURE);
    b.extend_from_slice(MARKER);
    for (k, v) in vars {
        if !VARIABLES.contains(k) {
            return Err(GrubenvError::UnknownVariable(k.to_string()));
        }
        if v.chars().any(|c| "\n\r'\"$;\\#{}".contains(c)) {
            return Err(GrubenvError::BadValue(v.to_string()));
        }
        b.extend_from_slice(format!("{k}={v}\n").as_bytes());
    }
    if b.len() > SIZE {
        return Err(GrubenvError::TooLong);
    }
    b.resize(SIZE, b'#');
    let mut out = [0u8; SIZE];
    out.copy_from_slice(&b);
    Ok(out)
}

/// Byte offset of our block in a disk image: at a 512-byte boundary, starting with the
/// signature and our marker.
pub fn find(image: &[u8]) -> Option<usize> {
    (0..image.len().saturating_sub(SIZE - 1))
        .step_by(512)
        .find(|&o| {
            image[o..].starts_with(SIGNATURE) && image[o + SIGNATURE.len()..].starts_with(MARKER)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_block_grub_reads() {
        let b = render(&[
            ("default", "local"),
            ("phase_extra", "phase.poweroff=stage2.start"),
        ])
        .unwrap();
        let text = std::str::from_utf8(&b).unwrap();
        assert!(text.starts_with("# GRUB Environment Block\n# phase-boot"));
        assert!(text.contains("\ndefault=local\nphase_extra=phase.poweroff=stage2.start\n#"));
        assert!(text.ends_with("####"));
        assert_eq!(render(&[]).unwrap().len(), SIZE);
    }

    #[test]
    fn refuses_what_grub_would_misread() {
        let r = |v: &[(&str, &str)]| render(v).err().map(|e| e.reason());
        assert_eq!(r(&[("root", "x")]), Some("grubenv_unknown_variable"));
        assert_eq!(
            r(&[("phase_extra", "a\ndefault=debug")]),
            Some("grubenv_bad_value")
        );
        assert_eq!(r(&[("phase_extra", "$(x)")]), Some("grubenv_bad_value"));
        assert_eq!(
            r(&[("phase_extra", &"x".repeat(1000))]),
            Some("grubenv_too_long")
        );
    }

    #[test]
    fn found_at_a_sector_boundary_only_with_the_marker() {
        let mut img = vec![0u8; 8192];
        // GRUB's own images carry the signature string, not at a sector with our marker.
        img[512..512 + SIGNATURE.len()].copy_from_slice(SIGNATURE);
        img[3000..3000 + SIZE].copy_from_slice(&render(&[]).unwrap());
        assert_eq!(find(&img), None);
        img[4096..4096 + SIZE].copy_from_slice(&render(&[]).unwrap());
        assert_eq!(find(&img), Some(4096));
    }
}
