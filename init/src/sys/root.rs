//! Switching root, the way switch_root(8) does it for an initramfs (pivot_root cannot
//! leave the initial rootfs): move the pseudo filesystems into the new root, free the
//! initramfs, make the new root `/`, then exec the new root's init.

use rustix::mount::mount_move;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

/// Mounts that move into the new root (their submounts go with them).
pub const MOVED: &[&str] = &["/dev", "/proc", "/sys", "/run"];

/// `mount(old, new_root/old, NULL, MS_MOVE, NULL)` for each of [`MOVED`].
pub fn move_pseudo(new_root: &str) -> Result<(), String> {
    for m in MOVED {
        let target = format!("{new_root}{m}");
        std::fs::create_dir_all(&target).map_err(|e| format!("mkdir {target}: {e}"))?;
        mount_move(*m, target.as_str()).map_err(|e| format!("mount --move {m} {target}: {e}"))?;
    }
    Ok(())
}

/// Delete the initramfs's files (it is RAM), staying on its device: mount points of other
/// filesystems (the new root among them) are left alone, and so are the `keep` paths
/// (still in use through a bind mount).
pub fn free_initramfs(keep: &[&str]) -> u64 {
    let Ok(root_dev) = std::fs::symlink_metadata("/").map(|m| m.dev()) else {
        return 0;
    };
    fn walk(dir: &Path, dev: u64, keep: &[&str], freed: &mut u64) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if md.dev() != dev || keep.iter().any(|k| p == Path::new(k)) {
                continue;
            }
            if md.is_dir() {
                walk(&p, dev, keep, freed);
                let _ = std::fs::remove_dir(&p);
            } else {
                *freed += md.len();
                let _ = std::fs::remove_file(&p);
            }
        }
    }
    let mut freed = 0;
    walk(Path::new("/"), root_dev, keep, &mut freed);
    freed
}

/// `chdir(new_root)`, `mount(".", "/", NULL, MS_MOVE)`, `chroot(".")`, `chdir("/")`.
pub fn enter(new_root: &str) -> Result<(), String> {
    std::env::set_current_dir(new_root).map_err(|e| format!("chdir {new_root}: {e}"))?;
    mount_move(".", "/").map_err(|e| format!("mount --move {new_root} /: {e}"))?;
    rustix::process::chroot(".").map_err(|e| format!("chroot {new_root}: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    Ok(())
}

/// `execv(init, [init, args…])`; returns only on failure.
pub fn exec(init: &str, args: &[&str]) -> std::io::Error {
    std::process::Command::new(init).args(args).exec()
}
