//! Kernel module dependency resolution from `modules.dep` (PURE).
//!
//! `modules.dep` lines read `kernel/fs/overlayfs/overlay.ko: dep1.ko dep2.ko`. Module names
//! are file stems with `-` folded to `_`, as the kernel names them. [`load_order`] turns the
//! wanted names into the list of files to `finit_module`, dependencies first; [`Need`] says
//! which part of the boot needs a module; [`levels`] groups a plan by dependency depth and
//! [`load_by_level`] loads each level on every CPU (the loader is a seam, so the host tests
//! record what it was asked to load and when).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// A parsed `modules.dep`: module name → (path, direct dependency paths).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DepTable {
    entries: BTreeMap<String, (String, Vec<String>)>,
}

/// The kernel's name for a module file: `kernel/drivers/virtio/virtio-pci.ko.xz` → `virtio_pci`.
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base.split_once(".ko").map(|(stem, _)| stem).unwrap_or(base);
    stem.replace('-', "_")
}

impl DepTable {
    /// Parse `modules.dep`; malformed lines are skipped (the builder writes this file).
    pub fn parse(text: &str) -> DepTable {
        let mut entries = BTreeMap::new();
        for line in text.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim();
            if path.is_empty() {
                continue;
            }
            let deps = deps.split_whitespace().map(str::to_string).collect();
            entries.insert(module_name(path), (path.to_string(), deps));
        }
        DepTable { entries }
    }
}

impl DepTable {
    /// The module file for a name (`-` or `_`), if the table has it.
    pub fn path_of(&self, name: &str) -> Option<&str> {
        let name = name.trim().replace('-', "_");
        self.entries.get(&name).map(|(p, _)| p.as_str())
    }

    fn deps_of_path(&self, path: &str) -> &[String] {
        self.entries
            .get(&module_name(path))
            .map(|(_, d)| d.as_slice())
            .unwrap_or(&[])
    }
}

/// Which part of the boot needs a module, which decides when it loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// Block devices, dm-verity, squashfs, overlay: loaded before the local step,
    /// whatever the path.
    Local,
    /// Filesystems for the state partition and the ESP (`kernel/fs/` but squashfs and
    /// overlayfs), and the CRC32C that ext4 and jbd2 checksum with (`kernel/crypto/crc32c*`:
    /// the kernel asks for it by name, and no modprobe answers here): loaded in the
    /// background while the local step verifies the release, and only in a mode that
    /// mounts the state partition.
    State,
    /// Network drivers and protocols (`kernel/drivers/net/`, `kernel/net/`): loaded only
    /// when the network step may run, in the background while the local step works.
    Network,
    /// Hardware RNG drivers (`kernel/drivers/char/hw_random/`): in the background; the
    /// root never waits for entropy.
    Entropy,
    /// `loop`: only a rootfs carried as a file, fetched, or copied to RAM is attached to a
    /// loop device, so it loads when one is attached, never on the dm-verity disk path.
    Loop,
}

impl Need {
    /// Decided by where the kernel tree keeps the module; names the table lacks (built in
    /// or missing) count as local, so they are reported with the first group.
    pub fn of(table: &DepTable, name: &str) -> Need {
        match table.path_of(name) {
            Some(p) if p.starts_with("kernel/drivers/net/") || p.starts_with("kernel/net/") => {
                Need::Network
            }
            Some(p) if p.starts_with("kernel/drivers/char/hw_random/") => Need::Entropy,
            Some(p) if module_name(p) == "loop" => Need::Loop,
            Some(p) if p.starts_with("kernel/crypto/crc32c") => Need::State,
            Some(p)
                if p.starts_with("kernel/fs/")
                    && !p.starts_with("kernel/fs/squashfs/")
                    && !p.starts_with("kernel/fs/overlayfs/") =>
            {
                Need::State
            }
            _ => Need::Local,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Need::Local => "local",
            Need::State => "state",
            Need::Network => "network",
            Need::Entropy => "entropy",
            Need::Loop => "loop",
        }
    }
}

/// The wanted names that `need` covers, in their listed order.
pub fn wanted_for(table: &DepTable, wanted: &[String], need: Need) -> Vec<String> {
    wanted
        .iter()
        .filter(|w| Need::of(table, w) == need)
        .cloned()
        .collect()
}

/// The plan's files grouped by dependency level: level 0 depends on nothing, level n only on
/// levels below n, so the files of one level may load in parallel. `order` must list
/// dependencies first (as [`load_order`] does); a dependency outside `order` (built in or
/// missing) does not hold a module back.
pub fn levels(table: &DepTable, order: &[String]) -> Vec<Vec<String>> {
    let mut level: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out: Vec<Vec<String>> = Vec::new();
    for path in order {
        let l = table
            .deps_of_path(path)
            .iter()
            .filter_map(|d| order.iter().find(|o| module_name(o) == module_name(d)))
            .filter_map(|d| level.get(d.as_str()).map(|l| l + 1))
            .max()
            .unwrap_or(0);
        level.insert(path, l);
        if out.len() <= l {
            out.resize(l + 1, Vec::new());
        }
        out[l].push(path.clone());
    }
    out
}

/// One load: the file, what the loader returned, and how long it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timed<R> {
    pub path: String,
    pub result: R,
    pub ms: u64,
}

/// Load `levels` in order; within a level, `workers` threads take files as they come. A
/// level starts only when the one below has finished, so no module loads before its
/// dependencies. Results come back in level order, and in listed order within a level.
pub fn load_by_level<R: Send>(
    levels: &[Vec<String>],
    workers: usize,
    load: impl Fn(&str) -> R + Sync,
) -> Vec<Timed<R>> {
    let mut all = Vec::new();
    for level in levels {
        let next = AtomicUsize::new(0);
        let done: Mutex<Vec<(usize, Timed<R>)>> = Mutex::new(Vec::new());
        let work = || loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(path) = level.get(i) else { break };
            let started = Instant::now();
            let result = load(path);
            let ms = started.elapsed().as_millis() as u64;
            let t = Timed {
                path: path.clone(),
                result,
                ms,
            };
            match done.lock() {
                Ok(mut g) => g.push((i, t)),
                Err(p) => p.into_inner().push((i, t)),
            }
        };
        match workers.clamp(1, level.len().max(1)) {
            // One worker: this thread (a thread per level costs a TCG boot ~1 ms each).
            1 => work(),
            n => std::thread::scope(|s| {
                for _ in 0..n {
                    s.spawn(work);
                }
            }),
        }
        let mut done = match done.into_inner() {
            Ok(d) => d,
            Err(p) => p.into_inner(),
        };
        done.sort_by_key(|(i, _)| *i);
        all.extend(done.into_iter().map(|(_, t)| t));
    }
    all
}

/// Names listed in `modules.builtin` (built into the kernel, nothing to load).
pub fn builtin_names(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(module_name)
        .collect()
}

/// The result of resolving a wanted list.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadPlan {
    /// Module paths (relative to the modules directory), dependencies before dependents,
    /// each once.
    pub order: Vec<String>,
    /// Wanted names that are built into the kernel.
    pub builtin: Vec<String>,
    /// Wanted names (or dependencies) found neither in the table nor built in.
    pub missing: Vec<String>,
}

/// Resolve `wanted` (module names, `-` or `_`) against the table. Cycles cannot occur in a
/// valid `modules.dep`; if one does, each module is still emitted once.
pub fn load_order(table: &DepTable, builtin: &[String], wanted: &[String]) -> LoadPlan {
    let mut plan = LoadPlan::default();
    let mut visiting: Vec<String> = Vec::new();
    for w in wanted {
        let name = w.trim().replace('-', "_");
        if name.is_empty() {
            continue;
        }
        if table.entries.contains_key(&name) {
            visit(table, &name, &mut plan, &mut visiting);
        } else if builtin.contains(&name) {
            if !plan.builtin.contains(&name) {
                plan.builtin.push(name);
            }
        } else if !plan.missing.contains(&name) {
            plan.missing.push(name);
        }
    }
    plan
}

fn visit(table: &DepTable, name: &str, plan: &mut LoadPlan, visiting: &mut Vec<String>) {
    let Some((path, deps)) = table.entries.get(name) else {
        if !plan.missing.iter().any(|m| m == name) {
            plan.missing.push(name.to_string());
        }
        return;
    };
    if plan.order.contains(path) || visiting.iter().any(|v| v == name) {
        return;
    }
    visiting.push(name.to_string());
    // modules.dep lists the full transitive closure in load order (deepest last); visiting
    // each dependency recursively also covers files that list only direct dependencies.
    for dep in deps.iter().rev() {
        visit(table, &module_name(dep), plan, visiting);
    }
    visiting.pop();
    plan.order.push(path.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/overlayfs/overlay.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio-pci.ko.xz: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_ring.ko: kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio.ko:
garbage line without colon
kernel/drivers/md/dm-verity.ko: kernel/drivers/md/dm-bufio.ko kernel/drivers/md/dm-mod.ko
kernel/drivers/md/dm-bufio.ko:
";

    #[test]
    fn names() {
        for (path, name) in [
            ("kernel/fs/overlayfs/overlay.ko", "overlay"),
            ("kernel/drivers/virtio/virtio-pci.ko.xz", "virtio_pci"),
            ("a/b/dm-verity.ko.zst", "dm_verity"),
            ("loop.ko", "loop"),
        ] {
            assert_eq!(module_name(path), name);
        }
    }

    #[test]
    fn resolves_dependencies_first_once() {
        let t = DepTable::parse(DEP);
        let plan = load_order(
            &t,
            &[],
            &["virtio_blk".into(), "virtio-pci".into(), "overlay".into()],
        );
        assert_eq!(
            plan.order,
            vec![
                "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/block/virtio_blk.ko",
                "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
                "kernel/drivers/virtio/virtio-pci.ko.xz",
                "kernel/fs/overlayfs/overlay.ko",
            ]
        );
        assert!(plan.missing.is_empty() && plan.builtin.is_empty());
    }

    #[test]
    fn builtin_and_missing_are_named() {
        let t = DepTable::parse(DEP);
        let builtin =
            builtin_names("kernel/fs/ext4/ext4.ko\n\nkernel/drivers/char/hw_random/rng-core.ko\n");
        let plan = load_order(
            &t,
            &builtin,
            &[
                "ext4".into(),
                "rng-core".into(),
                "nosuch".into(),
                "dm_verity".into(),
                "nosuch".into(),
            ],
        );
        assert_eq!(plan.builtin, vec!["ext4", "rng_core"]);
        // dm-mod is a dependency with no entry of its own: named missing, not silently skipped.
        assert_eq!(plan.missing, vec!["nosuch", "dm_mod"]);
        assert_eq!(
            plan.order,
            vec![
                "kernel/drivers/md/dm-bufio.ko",
                "kernel/drivers/md/dm-verity.ko"
            ]
        );
    }

    #[test]
    fn levels_put_dependencies_below_dependents() {
        let t = DepTable::parse(DEP);
        let plan = load_order(
            &t,
            &[],
            &["virtio-pci".into(), "virtio_blk".into(), "overlay".into()],
        );
        assert_eq!(
            levels(&t, &plan.order),
            vec![
                vec![
                    "kernel/drivers/virtio/virtio.ko",
                    "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
                    "kernel/fs/overlayfs/overlay.ko",
                ],
                vec!["kernel/drivers/virtio/virtio_ring.ko"],
                vec![
                    "kernel/drivers/virtio/virtio-pci.ko.xz",
                    "kernel/drivers/block/virtio_blk.ko",
                ],
            ]
        );
        // A dependency that is missing does not hold its dependent back.
        let plan = load_order(&t, &[], &["dm-verity".into()]);
        assert_eq!(
            levels(&t, &plan.order),
            vec![
                vec!["kernel/drivers/md/dm-bufio.ko"],
                vec!["kernel/drivers/md/dm-verity.ko"]
            ]
        );
    }

    /// Loads in parallel with a recording loader: every module's load starts only after
    /// each of its dependencies' loads ended, and every file loads exactly once.
    #[test]
    fn parallel_loader_never_loads_a_module_before_its_dependencies() {
        let dep = "\
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/md/dm-mod.ko:
kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko kernel/lib/crc16.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko:
kernel/fs/squashfs/squashfs.ko:
kernel/drivers/block/loop.ko:
";
        let t = DepTable::parse(&format!("{DEP}{dep}"));
        let wanted: Vec<String> = [
            "virtio_net",
            "virtio_pci",
            "virtio_blk",
            "squashfs",
            "overlay",
            "loop",
            "dm_verity",
            "dm_mod",
            "ext4",
        ]
        .map(String::from)
        .to_vec();
        let plan = load_order(&t, &[], &wanted);
        let clock = AtomicUsize::new(0);
        // path -> (tick when its load started, tick when it ended)
        let seen: Mutex<BTreeMap<String, Vec<(usize, usize)>>> = Mutex::new(BTreeMap::new());
        let loaded = load_by_level(&levels(&t, &plan.order), 4, |path| {
            let start = clock.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(2));
            let end = clock.fetch_add(1, Ordering::SeqCst);
            seen.lock()
                .unwrap()
                .entry(path.to_string())
                .or_default()
                .push((start, end));
            module_name(path)
        });
        let seen = seen.into_inner().unwrap();
        assert_eq!(loaded.len(), plan.order.len());
        assert_eq!(seen.len(), plan.order.len());
        for path in &plan.order {
            let runs = &seen[path];
            assert_eq!(runs.len(), 1, "{path} loaded {} times", runs.len());
            for d in t.deps_of_path(path) {
                let Some(dep) = seen.get(d) else { continue }; // missing (dm-bufio's dm-mod entry is there)
                assert!(
                    dep[0].1 < runs[0].0,
                    "{path} started at {} before its dependency {d} ended at {}",
                    runs[0].0,
                    dep[0].1
                );
            }
        }
        // Every result names its file, and the loader ran on more than one thread.
        assert!(loaded.iter().all(|l| l.result == module_name(&l.path)));
        let firsts: Vec<usize> = seen.values().map(|r| r[0].0).collect();
        let overlapped = seen
            .values()
            .any(|r| firsts.iter().any(|&s| s > r[0].0 && s < r[0].1));
        assert!(overlapped, "no two loads overlapped: {seen:?}");
    }

    #[test]
    fn groups_are_told_apart_by_their_place_in_the_tree() {
        let t = DepTable::parse(
            "kernel/drivers/net/virtio_net.ko:\nkernel/net/packet/af_packet.ko:\nkernel/fs/ext4/ext4.ko:\nkernel/drivers/block/virtio_blk.ko:\nkernel/fs/squashfs/squashfs.ko:\nkernel/fs/overlayfs/overlay.ko:\nkernel/fs/fat/vfat.ko:\nkernel/drivers/char/hw_random/virtio-rng.ko:\nkernel/drivers/block/loop.ko:\nkernel/drivers/md/dm-verity.ko:\nkernel/crypto/crc32c_generic.ko:\nkernel/crypto/sha256_generic.ko:\n",
        );
        let wanted: Vec<String> = [
            "virtio_net",
            "ext4",
            "af-packet",
            "virtio_blk",
            "squashfs",
            "nosuch",
            "overlay",
            "vfat",
            "virtio_rng",
            "loop",
            "dm_verity",
            "crc32c_generic",
            "sha256_generic",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(wanted_for(&t, &wanted, Need::Entropy), ["virtio_rng"]);
        assert_eq!(wanted_for(&t, &wanted, Need::Loop), ["loop"]);
        assert_eq!(
            wanted_for(&t, &wanted, Need::Network),
            ["virtio_net", "af-packet"]
        );
        assert_eq!(
            wanted_for(&t, &wanted, Need::State),
            ["ext4", "vfat", "crc32c_generic"]
        );
        assert_eq!(
            wanted_for(&t, &wanted, Need::Local),
            [
                "virtio_blk",
                "squashfs",
                "nosuch",
                "overlay",
                "dm_verity",
                "sha256_generic"
            ]
        );
    }

    #[test]
    fn cycles_terminate() {
        let t = DepTable::parse("a.ko: b.ko\nb.ko: a.ko\n");
        let plan = load_order(&t, &[], &["a".into()]);
        assert_eq!(plan.order, vec!["b.ko", "a.ko"]);
    }
}
