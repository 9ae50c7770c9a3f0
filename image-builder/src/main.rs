//! `phase-image`: builds Phase Boot's artifacts, rootless and reproducibly.
//!
//! Each subcommand collects its inputs into a plan, builds in memory where it can, and
//! writes its output atomically. One exit-code mapping: 0 ok, 1 failed (with the reason).

mod cpio;
mod initramfs;
mod kconfig;
mod kmod;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "phase-image",
    version,
    about = "Build Phase Boot images (initramfs, releases, disks)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the initramfs: /init, kernel modules with their dependencies, extra files.
    ///
    /// Deterministic: entries sorted, owner root, every mtime SOURCE_DATE_EPOCH (or 0).
    Initramfs {
        /// The static `phase` binary to install as /init.
        #[arg(long)]
        init: PathBuf,
        /// An unpacked /lib/modules/<release> directory of the target kernel.
        #[arg(long)]
        modules_dir: PathBuf,
        /// File naming the modules to load at boot, one per line (initramfs/modules.txt).
        #[arg(long)]
        modules_list: PathBuf,
        /// Extra file to include, as DEST=SRC (DEST is the path inside the initramfs).
        #[arg(long = "file", value_name = "DEST=SRC")]
        files: Vec<String>,
        /// Fail if a listed module is neither in the kernel tree nor built in.
        #[arg(long)]
        strict: bool,
        /// Output file.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Check a kernel .config against the options Phase Boot requires.
    KernelConfig {
        /// The kernel's config (e.g. /boot/config-<release>).
        #[arg(long)]
        config: PathBuf,
        /// The requirement list (kernel-config/required.txt).
        #[arg(long)]
        required: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("phase-image: error: {e:#}");
        std::process::exit(1);
    }
}

fn source_date_epoch() -> Result<u32> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")),
        Err(_) => Ok(0),
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Initramfs {
            init,
            modules_dir,
            modules_list,
            files,
            strict,
            output,
        } => {
            let list = std::fs::read_to_string(&modules_list)
                .with_context(|| format!("reading {}", modules_list.display()))?;
            let files = files
                .iter()
                .map(|f| {
                    f.split_once('=')
                        .map(|(d, s)| (d.to_string(), PathBuf::from(s)))
                        .with_context(|| format!("--file {f:?}: expected DEST=SRC"))
                })
                .collect::<Result<Vec<_>>>()?;
            let inputs = initramfs::Inputs {
                init,
                modules_dir,
                wanted: initramfs::parse_module_list(&list),
                files,
                mtime: source_date_epoch()?,
            };
            let r = initramfs::write(&inputs, &output)?;
            for m in &r.missing {
                eprintln!(
                    "phase-image: warning: module {m} is neither in the kernel tree nor built in"
                );
            }
            if strict && !r.missing.is_empty() {
                bail!("missing modules: {}", r.missing.join(", "));
            }
            let size = std::fs::metadata(&output)?.len();
            println!(
                "{}: {} entries, {} modules ({} built in), cpio {} bytes, compressed {} bytes",
                output.display(),
                r.entries,
                r.modules,
                r.builtin.len(),
                r.cpio_bytes,
                size
            );
            Ok(())
        }
        Cmd::KernelConfig { config, required } => {
            let req = kconfig::parse_required(
                &std::fs::read_to_string(&required)
                    .with_context(|| format!("reading {}", required.display()))?,
            )
            .map_err(|e| anyhow::anyhow!("{}: {e}", required.display()))?;
            let cfg = kconfig::parse_config(
                &std::fs::read_to_string(&config)
                    .with_context(|| format!("reading {}", config.display()))?,
            );
            let unmet = kconfig::check(&req, &cfg);
            for u in &unmet {
                eprintln!("{}: {u}", config.display());
            }
            if unmet.is_empty() {
                println!(
                    "{}: all {} required options present",
                    config.display(),
                    req.len()
                );
                Ok(())
            } else {
                bail!("{} of {} required options unmet", unmet.len(), req.len())
            }
        }
    }
}

/// Write `bytes` to `path` via a temp file in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))?;
    Ok(())
}
