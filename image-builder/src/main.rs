//! `phase-image`: builds Phase Boot's artifacts, rootless and reproducibly.
//!
//! Each subcommand collects its inputs into a plan, builds in memory where it can, and
//! writes its output atomically. One exit-code mapping: 0 ok, 1 failed (with the reason).

mod blockdev;
mod disk;
mod esp;
mod grub;
mod initramfs;
mod kconfig;
mod kmod;
mod menu;
mod netboot;
mod qcow2;
mod release;
mod squashfs;
mod verity;
mod write;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "phase-image",
    version,
    about = "Build Phase Boot images (initramfs, rootfs, releases, disks)"
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
        /// Lowest release version this initramfs will accept (written to /etc/phase/release-floor).
        #[arg(long, default_value_t = 0)]
        release_floor: u64,
        /// Fail if a listed module is neither in the kernel tree nor built in.
        #[arg(long)]
        strict: bool,
        /// Output file.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Build the root filesystem: a zstd squashfs with a dm-verity hash tree.
    ///
    /// Holds every file under --tree, /etc/os-release, the init at /usr/lib/phase/phase,
    /// the kernel modules the initramfs does not carry (with modules.dep and modules.builtin)
    /// and the mount points. Writes OUTPUT (padded to 4096 bytes), the hash device beside it
    /// (OUTPUT's stem + .verity) and its metadata (stem + .verity.json, the release format's
    /// `verity` object). Deterministic: owner root, every mtime SOURCE_DATE_EPOCH (or 0).
    Rootfs {
        /// The static `phase` binary, installed as /usr/lib/phase/phase.
        #[arg(long)]
        init: PathBuf,
        /// An unpacked /lib/modules/<release> directory of the target kernel.
        #[arg(long)]
        modules_dir: PathBuf,
        /// The initramfs module list (initramfs/modules.txt): those modules and their
        /// dependencies stay out of the rootfs.
        #[arg(long)]
        initramfs_modules: PathBuf,
        /// Directory copied into the image as it is (files 0644, or 0755 if executable).
        #[arg(long, default_value = "rootfs")]
        tree: PathBuf,
        /// Version for /etc/os-release (VERSION_ID).
        #[arg(long)]
        version: String,
        /// Print progress every N files.
        #[arg(long, default_value_t = 500)]
        progress_every: usize,
        /// Output image (e.g. out/rootfs.squashfs).
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Build the GPT disk image: release metadata, rootfs, hash device, empty state.
    ///
    /// Partitions phase-meta (release.json), phase-root (the rootfs), phase-verity (its
    /// hash device) and phase-state (empty ext4), 1 MiB aligned; see docs/disk-layout.md.
    /// The hash device is checked against the rootfs first; the root and verity partitions'
    /// GUIDs are the halves of the root hash. Needs mkfs.ext4 (e2fsprogs), runs rootless.
    /// Deterministic: every GUID derived from the inputs, ext4 times SOURCE_DATE_EPOCH.
    Disk {
        /// Release directory; its release.json goes into the phase-meta partition.
        #[arg(long)]
        release_dir: PathBuf,
        /// The rootfs image (out/rootfs.squashfs).
        #[arg(long)]
        rootfs: PathBuf,
        /// Its dm-verity hash device (out/rootfs.verity).
        #[arg(long)]
        verity: PathBuf,
        /// Size of the phase-state partition, MiB.
        #[arg(long, default_value_t = 64)]
        state_size_mib: u64,
        /// Make the disk boot by itself on BIOS, UEFI x64 and UEFI IA32: GRUB boot code
        /// in the MBR, a BIOS boot partition and a FAT32 ESP first, holding the loaders,
        /// the menu (Internet, Local, Private, Debug), the release's kernel and initramfs
        /// (checked against release.json) and the trusted root. Needs grub-mkimage and
        /// GRUB's i386-pc, x86_64-efi and i386-efi modules (scripts/setup.sh).
        #[arg(long, requires = "trusted_root")]
        bootable: bool,
        /// The trusted root to copy onto the ESP (with --bootable).
        #[arg(long)]
        trusted_root: Option<PathBuf>,
        /// GRUB's module directories.
        #[arg(long, default_value = grub::DEFAULT_DIR)]
        grub_dir: PathBuf,
        /// Output disk image.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Write the netboot TFTP root: kernel, initramfs, iPXE menu, GRUB UEFI network loader.
    ///
    /// OUT_DIR gets vmlinuz, initramfs.img, boot.ipxe (iPXE menu: Internet, Local, Private,
    /// Debug), site.ipxe, grubnetx64.efi (grub-mkimage x86_64-efi with efinet, tftp, http;
    /// reads /grub/grub.cfg from its TFTP server), grub/grub.cfg, grub/site.cfg,
    /// dnsmasq.conf.example and a README on serving it to BIOS and UEFI PXE clients.
    /// Farm settings (provider URL, default entry, timeout) go in the site files.
    Netboot {
        /// The kernel (the release's, so a diskless boot mounts its rootfs without kexec).
        #[arg(long)]
        kernel: PathBuf,
        /// The Phase Boot initramfs.
        #[arg(long)]
        initramfs: PathBuf,
        /// Kernel words every menu entry starts with.
        #[arg(long, default_value = "console=tty0 console=ttyS0,115200 panic=10")]
        cmdline: String,
        /// GRUB's x86_64-efi module directory (grub-efi-amd64-bin).
        #[arg(long, default_value = "/usr/lib/grub/x86_64-efi")]
        grub_efi_dir: PathBuf,
        /// The TFTP root to write (e.g. out/netboot).
        #[arg(short, long)]
        out_dir: PathBuf,
    },
    /// Convert a raw disk image (out/phase-x86_64.img) to qcow2 (out/phase-x86_64.qcow2)
    /// with qemu-img.
    Qcow2 {
        /// The raw disk image.
        image: PathBuf,
        /// Output qcow2 file.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Compute the dm-verity hash tree of a file (a multiple of 4096 bytes), as
    /// `veritysetup format` would with a salt and UUID derived from the data.
    ///
    /// Writes the hash device to OUTPUT and the release format's `verity` object to
    /// OUTPUT.json; prints the root hash.
    Verity {
        /// The data (e.g. a padded squashfs).
        data: PathBuf,
        /// The hash device to write.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Generate an Ed25519 key: DIR/NAME.key (private, mode 0600) and DIR/NAME.pub.
    ///
    /// Prints the key ID (SHA-256 of the public key). Never overwrites an existing key.
    /// Make real keys on an offline machine; see docs/keys.md.
    Keygen {
        /// Directory for the key files.
        #[arg(long)]
        out_dir: PathBuf,
        /// Base name of the key files.
        #[arg(long)]
        name: String,
        /// Note stored in the private key file (e.g. who holds it).
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Create a signed root document (version 1), or rotate: --previous gives the next version.
    ///
    /// A rotation must be signed by a threshold of the previous root's root keys and of the
    /// new root keys; the new root is verified before it is written.
    Root {
        /// Public key (.pub) allowed to sign roots; repeat.
        #[arg(long = "root-key", required = true)]
        root_keys: Vec<PathBuf>,
        #[arg(long, default_value_t = 1)]
        root_threshold: u64,
        /// Public key (.pub) allowed to sign releases; repeat.
        #[arg(long = "release-key", required = true)]
        release_keys: Vec<PathBuf>,
        #[arg(long, default_value_t = 1)]
        release_threshold: u64,
        /// Expiry, days after SOURCE_DATE_EPOCH (or now if unset).
        #[arg(long, default_value_t = 365)]
        expires_in_days: u64,
        /// The current root, when rotating.
        #[arg(long)]
        previous: Option<PathBuf>,
        /// Private key (.key) to sign with; repeat.
        #[arg(long = "sign", required = true)]
        sign: Vec<PathBuf>,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Write a signed release into a directory any static HTTP server can serve.
    ///
    /// Copies and hashes the artifacts, writes release.json signed with each --sign key,
    /// root.json and N.root.json for each root given (for clients walking the chain).
    Release {
        /// The root the release keys come from.
        #[arg(long)]
        root: PathBuf,
        /// Earlier roots, so clients that trust an older root can walk the chain.
        #[arg(long)]
        root_history: Vec<PathBuf>,
        /// Release version (monotonic).
        #[arg(long)]
        version: u64,
        #[arg(long, default_value = "stable")]
        channel: String,
        #[arg(long, default_value = "x86_64")]
        arch: String,
        /// Kernel command line the release boots with.
        #[arg(long, default_value = "")]
        cmdline: String,
        /// Expiry, days after SOURCE_DATE_EPOCH (or now if unset).
        #[arg(long, default_value_t = 90)]
        expires_in_days: u64,
        #[arg(long)]
        kernel: PathBuf,
        #[arg(long)]
        initramfs: PathBuf,
        /// The root filesystem image (e.g. out/rootfs.squashfs from `phase-image rootfs`).
        #[arg(long)]
        rootfs: Option<PathBuf>,
        /// The rootfs's dm-verity metadata (e.g. out/rootfs.verity.json): the rootfs artifact
        /// then carries its root hash, and the hash device (named in it, beside it) is checked
        /// against the rootfs and copied into the release directory.
        #[arg(long, requires = "rootfs")]
        rootfs_verity: Option<PathBuf>,
        /// Private key (.key) to sign with; repeat (or add more later with `sign`).
        #[arg(long = "sign")]
        sign: Vec<PathBuf>,
        #[arg(long)]
        out_dir: PathBuf,
    },
    /// Add a signature to a root or release file in place (thresholds held by several people).
    Sign {
        #[arg(long)]
        key: PathBuf,
        file: PathBuf,
    },
    /// Verify a release directory against a trusted root: exit 0, or 1 with one line
    /// `verify failed: <reason>: <detail>`.
    Verify {
        /// The trusted root (e.g. out/trusted-root.json).
        #[arg(long)]
        root: PathBuf,
        /// Release directory (release.json, N.root.json, artifacts).
        dir: PathBuf,
        #[arg(long, default_value = "x86_64")]
        arch: String,
        #[arg(long, default_value = "stable")]
        channel: String,
        /// Time to check expiry against, unix seconds (default: now).
        #[arg(long)]
        now: Option<u64>,
        /// Lowest acceptable release version.
        #[arg(long, default_value_t = 0)]
        floor: u64,
    },
    /// Write an image to a whole disk (a USB stick), then read it back and compare SHA-256.
    ///
    /// Refuses (exit 1, `write refused: <reason>: <detail>`) a path that is not a block
    /// device, a partition, a disk holding the running system, a disk any of whose
    /// partitions is mounted, swap or held by device-mapper, and a disk smaller than the
    /// image. Shows the model, size and partitions it will overwrite and asks you to type
    /// `yes` (or pass --yes). Needs write access to DEVICE (usually root).
    Write {
        /// The image (e.g. out/phase-x86_64.img).
        image: PathBuf,
        /// The whole disk, e.g. /dev/sdb.
        device: PathBuf,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
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

/// The time expiries count from: SOURCE_DATE_EPOCH if set (reproducible), else now.
fn base_time() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(_) => Ok(u64::from(source_date_epoch()?)),
        Err(_) => Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()),
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Initramfs {
            init,
            modules_dir,
            modules_list,
            files,
            release_floor,
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
                release_floor,
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
        Cmd::Rootfs {
            init,
            modules_dir,
            initramfs_modules,
            tree,
            version,
            progress_every,
            output,
        } => {
            let start = std::time::Instant::now();
            let list = std::fs::read_to_string(&initramfs_modules)
                .with_context(|| format!("reading {}", initramfs_modules.display()))?;
            let inputs = squashfs::Inputs {
                init,
                modules_dir,
                initramfs_modules: initramfs::parse_module_list(&list),
                tree,
                version,
                mtime: source_date_epoch()?,
            };
            let w = squashfs::write(&inputs, &output, progress_every)?;
            for m in &w.report.deps_missing {
                eprintln!("phase-image: warning: module dependency {m} is in neither image");
            }
            println!(
                "{}: {} bytes ({} data blocks), {} entries, {} modules; {} dependencies left to the initramfs",
                output.display(),
                w.image_bytes,
                w.verity.data_blocks,
                w.report.entries,
                w.report.modules,
                w.report.deps_in_initramfs.len()
            );
            println!(
                "{}: {} bytes\n{}\nroot hash {}\nbuilt in {:.1} s",
                w.hash.display(),
                w.verity.hash_size,
                w.json.display(),
                w.verity.root_hash,
                start.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Cmd::Disk {
            release_dir,
            rootfs,
            verity,
            state_size_mib,
            bootable,
            trusted_root,
            grub_dir,
            output,
        } => {
            let boot = match (bootable, trusted_root) {
                (true, Some(trusted_root)) => Some(disk::BootInputs {
                    trusted_root,
                    grub_dir,
                }),
                (true, None) => bail!("--bootable needs --trusted-root"),
                (false, _) => None,
            };
            let w = disk::write(
                &disk::Inputs {
                    release_dir,
                    rootfs,
                    verity,
                    state_size_mib,
                    mtime: source_date_epoch()?,
                    boot,
                },
                &output,
            )?;
            println!(
                "{}: {} bytes, disk GUID {}",
                output.display(),
                w.layout.sectors * phase_layout::SECTOR,
                w.disk_guid
            );
            for (p, (first, last)) in w.parts.iter().zip(&w.layout.parts) {
                println!(
                    "  {:<12} LBA {first:>8}..{last:<8} {:>6} MiB  type {}  guid {}",
                    p.name,
                    ((last + 1 - first) * phase_layout::SECTOR) >> 20,
                    p.type_guid,
                    p.guid
                );
            }
            println!("root hash {}", phase_release::hex::encode(&w.root_hash));
            Ok(())
        }
        Cmd::Netboot {
            kernel,
            initramfs,
            cmdline,
            grub_efi_dir,
            out_dir,
        } => {
            let files = netboot::write(
                &netboot::Inputs {
                    kernel,
                    initramfs,
                    cmdline,
                    grub_efi_dir,
                },
                &out_dir,
            )?;
            println!("{}: netboot TFTP root", out_dir.display());
            for f in files {
                let size = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
                println!("  {} ({size} bytes)", f.display());
            }
            Ok(())
        }
        Cmd::Qcow2 { image, output } => {
            let n = qcow2::convert(&image, &output)?;
            println!(
                "{}: {n} bytes (qcow2 of {})",
                output.display(),
                image.display()
            );
            Ok(())
        }
        Cmd::Verity { data, output } => {
            let bytes =
                std::fs::read(&data).with_context(|| format!("reading {}", data.display()))?;
            let tree =
                verity::compute(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", data.display()))?;
            let name = output
                .file_name()
                .context("output has no file name")?
                .to_string_lossy()
                .into_owned();
            let mut json = serde_json::to_vec_pretty(&tree.doc(&name))?;
            json.push(b'\n');
            let json_path = output.with_file_name(format!("{name}.json"));
            write_atomic(&output, &tree.hash_device)?;
            write_atomic(&json_path, &json)?;
            println!(
                "{}: {} bytes, {} data blocks\n{}\nroot hash {}",
                output.display(),
                tree.hash_device.len(),
                tree.data_blocks,
                json_path.display(),
                phase_release::hex::encode(&tree.root_hash)
            );
            Ok(())
        }
        Cmd::Keygen {
            out_dir,
            name,
            comment,
        } => {
            let (k, p, id) = release::keygen(&out_dir, &name, &comment)?;
            println!(
                "private key {} (mode 0600)\npublic key  {}\nkey id      {id}",
                k.display(),
                p.display()
            );
            Ok(())
        }
        Cmd::Root {
            root_keys,
            root_threshold,
            release_keys,
            release_threshold,
            expires_in_days,
            previous,
            sign,
            output,
        } => {
            let v = release::root(&release::RootArgs {
                root_keys,
                root_threshold,
                release_keys,
                release_threshold,
                expires: base_time()? + expires_in_days * 86_400,
                previous,
                sign,
                output: output.clone(),
            })?;
            println!("{}: root version {v}", output.display());
            Ok(())
        }
        Cmd::Release {
            root,
            root_history,
            version,
            channel,
            arch,
            cmdline,
            expires_in_days,
            kernel,
            initramfs,
            rootfs,
            rootfs_verity,
            sign,
            out_dir,
        } => {
            let lines = release::release(&release::ReleaseArgs {
                root,
                root_history,
                version,
                channel,
                arch,
                cmdline,
                expires: base_time()? + expires_in_days * 86_400,
                kernel,
                initramfs,
                rootfs,
                rootfs_verity,
                sign,
                out_dir: out_dir.clone(),
            })?;
            println!("{}: release {version}", out_dir.display());
            for l in lines {
                println!("  {l}");
            }
            Ok(())
        }
        Cmd::Sign { key, file } => {
            let id = release::sign(&key, &file)?;
            println!("{}: signed by {id}", file.display());
            Ok(())
        }
        Cmd::Verify {
            root,
            dir,
            arch,
            channel,
            now,
            floor,
        } => {
            let now = match now {
                Some(n) => n,
                None => std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs(),
            };
            match release::verify_dir(&release::VerifyArgs {
                root,
                dir,
                arch,
                channel,
                now,
                floor,
            }) {
                Ok(msg) => {
                    println!("{msg}");
                    Ok(())
                }
                Err(r) => {
                    eprintln!("verify failed: {}: {}", r.reason, r.message);
                    std::process::exit(1);
                }
            }
        }
        Cmd::Write { image, device, yes } => match write::run(&image, &device, yes) {
            Ok(()) => Ok(()),
            Err(e) => match e.downcast_ref::<write::Refusal>() {
                Some(r) => {
                    eprintln!("write refused: {}: {r}", r.reason());
                    std::process::exit(1);
                }
                None => Err(e),
            },
        },
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

/// A temp file name beside `path` (same directory, so a rename onto `path` is atomic);
/// creates the directory.
pub fn temp_beside(path: &Path) -> Result<PathBuf> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    Ok(dir.join(format!(
        ".{}.tmp{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    )))
}

/// Write `bytes` to `path` via a temp file in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = temp_beside(path)?;
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))?;
    Ok(())
}
