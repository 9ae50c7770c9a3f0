//! Kernel module dependency resolution from `modules.dep` (PURE).
//!
//! `modules.dep` lines read `kernel/fs/overlayfs/overlay.ko: dep1.ko dep2.ko`. Module names
//! are file stems with `-` folded to `_`, as the kernel names them. [`load_order`] turns the
//! wanted names into the list of files to `finit_module`, dependencies first.

use std::collections::BTreeMap;

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
    fn cycles_terminate() {
        let t = DepTable::parse("a.ko: b.ko\nb.ko: a.ko\n");
        let plan = load_order(&t, &[], &["a".into()]);
        assert_eq!(plan.order, vec!["b.ko", "a.ko"]);
    }
}
