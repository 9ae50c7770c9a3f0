//! Kernel modules for the initramfs: find them in an unpacked kernel package, read each
//! module's `.modinfo` `depends=` list (what depmod records), close the wanted set over its
//! dependencies, and write a `modules.dep` the init can follow. No depmod needed.

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The kernel's name for a module file (`virtio-pci.ko` → `virtio_pci`).
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.split_once(".ko")
        .map(|(s, _)| s)
        .unwrap_or(base)
        .replace('-', "_")
}

/// Read the NUL-separated `.modinfo` strings of an ELF64 little-endian module (PURE).
pub fn modinfo(elf: &[u8]) -> Result<Vec<String>> {
    let u16_at = |o: usize| -> Result<u16> {
        Ok(u16::from_le_bytes(
            elf.get(o..o + 2).context("truncated ELF")?.try_into()?,
        ))
    };
    let u32_at = |o: usize| -> Result<u32> {
        Ok(u32::from_le_bytes(
            elf.get(o..o + 4).context("truncated ELF")?.try_into()?,
        ))
    };
    let u64_at = |o: usize| -> Result<u64> {
        Ok(u64::from_le_bytes(
            elf.get(o..o + 8).context("truncated ELF")?.try_into()?,
        ))
    };
    if elf.get(..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        bail!("not an ELF64 little-endian file (compressed modules are not supported)");
    }
    let shoff = u64_at(0x28)? as usize;
    let shentsize = u16_at(0x3a)? as usize;
    let shnum = u16_at(0x3c)? as usize;
    let shstrndx = u16_at(0x3e)? as usize;
    let section = |i: usize| -> Result<(u32, usize, usize)> {
        let h = shoff + i * shentsize;
        Ok((
            u32_at(h)?,
            u64_at(h + 0x18)? as usize,
            u64_at(h + 0x20)? as usize,
        ))
    };
    let (_, stroff, strsize) = section(shstrndx)?;
    let names = elf
        .get(stroff..stroff + strsize)
        .context("section names out of range")?;
    for i in 0..shnum {
        let (name, off, size) = section(i)?;
        let name = names.get(name as usize..).unwrap_or(&[]);
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        if &name[..end] == b".modinfo" {
            let data = elf.get(off..off + size).context(".modinfo out of range")?;
            return Ok(data
                .split(|&b| b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect());
        }
    }
    bail!("no .modinfo section")
}

/// The `depends=` names of a module (PURE).
pub fn depends(info: &[String]) -> Vec<String> {
    info.iter()
        .find_map(|s| s.strip_prefix("depends="))
        .map(|d| {
            d.split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.replace('-', "_"))
                .collect()
        })
        .unwrap_or_default()
}

/// What goes into the initramfs.
#[derive(Debug, Default)]
pub struct Selection {
    /// name → path relative to the modules directory, with its direct dependencies.
    pub modules: BTreeMap<String, (String, Vec<String>)>,
    pub builtin: Vec<String>,
    pub missing: Vec<String>,
}

/// Close `wanted` over dependencies. `index` maps names to relative paths; `deps_of` reads a
/// module's dependencies (from its file, in the real builder).
pub fn select(
    index: &BTreeMap<String, String>,
    builtin: &BTreeSet<String>,
    wanted: &[String],
    mut deps_of: impl FnMut(&str) -> Result<Vec<String>>,
) -> Result<Selection> {
    let mut sel = Selection::default();
    let mut todo: Vec<String> = wanted.iter().map(|w| w.replace('-', "_")).collect();
    todo.reverse();
    while let Some(name) = todo.pop() {
        if sel.modules.contains_key(&name)
            || sel.builtin.contains(&name)
            || sel.missing.contains(&name)
        {
            continue;
        }
        if let Some(rel) = index.get(&name) {
            let deps: Vec<String> = deps_of(rel)
                .with_context(|| format!("reading module {rel}"))?
                .iter()
                .map(|d| d.replace('-', "_"))
                .collect();
            todo.extend(deps.iter().cloned());
            sel.modules.insert(name, (rel.clone(), deps));
        } else if builtin.contains(&name) {
            sel.builtin.push(name);
        } else {
            sel.missing.push(name);
        }
    }
    Ok(sel)
}

/// `modules.dep` text for the selection: each module with its full dependency closure,
/// listed the way depmod does (load them last to first) (PURE).
pub fn modules_dep(sel: &Selection) -> String {
    let mut out = String::new();
    for (path, deps) in sel.modules.values() {
        let mut order = Vec::new();
        for d in deps {
            closure(sel, d, &mut order, &mut Vec::new());
        }
        order.reverse();
        let deps: Vec<&str> = order.iter().map(String::as_str).collect();
        out.push_str(&format!("{path}:"));
        for d in deps {
            out.push(' ');
            out.push_str(d);
        }
        out.push('\n');
    }
    out
}

fn closure(sel: &Selection, name: &str, order: &mut Vec<String>, stack: &mut Vec<String>) {
    let Some((path, deps)) = sel.modules.get(name) else {
        return;
    };
    if order.contains(path) || stack.iter().any(|s| s == name) {
        return;
    }
    stack.push(name.to_string());
    for d in deps {
        closure(sel, d, order, stack);
    }
    stack.pop();
    order.push(path.clone());
}

/// An unpacked `/lib/modules/<release>` tree, read once: its release name, every module's
/// relative path by name, and `modules.builtin`.
pub struct Tree {
    pub dir: PathBuf,
    pub release: String,
    pub index: BTreeMap<String, String>,
    pub builtin_text: String,
    pub builtin: BTreeSet<String>,
}

impl Tree {
    pub fn open(dir: &Path) -> Result<Tree> {
        let release = dir
            .file_name()
            .context("modules directory has no name")?
            .to_string_lossy()
            .into_owned();
        let builtin_text = std::fs::read_to_string(dir.join("modules.builtin"))
            .with_context(|| format!("reading {}/modules.builtin", dir.display()))?;
        let builtin = builtin_text.lines().map(module_name).collect();
        Ok(Tree {
            dir: dir.to_path_buf(),
            release,
            index: index(dir)?,
            builtin_text,
            builtin,
        })
    }

    /// The `depends=` names of the module at `rel`, read from its file.
    pub fn deps_of(&self, rel: &str) -> Result<Vec<String>> {
        let bytes = std::fs::read(self.dir.join(rel))?;
        Ok(depends(&modinfo(&bytes)?))
    }
}

/// Map every module under `dir` (a `/lib/modules/<release>` tree) to its relative path.
pub fn index(dir: &Path) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            let p = e.path();
            if e.file_type()?.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().contains(".ko") {
                let rel = p.strip_prefix(dir)?.to_string_lossy().into_owned();
                map.insert(module_name(&rel), rel);
            }
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel_for(wanted: &[&str]) -> Selection {
        let index: BTreeMap<String, String> = [
            ("virtio_blk", "kernel/drivers/block/virtio_blk.ko"),
            ("virtio_ring", "kernel/drivers/virtio/virtio_ring.ko"),
            ("virtio", "kernel/drivers/virtio/virtio.ko"),
            ("dm_verity", "kernel/drivers/md/dm-verity.ko"),
            ("dm_bufio", "kernel/drivers/md/dm-bufio.ko"),
            ("dm_mod", "kernel/drivers/md/dm-mod.ko"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let deps = |rel: &str| -> Result<Vec<String>> {
            Ok(match module_name(rel).as_str() {
                "virtio_blk" => vec!["virtio".into(), "virtio_ring".into()],
                "virtio_ring" => vec!["virtio".into()],
                "dm_verity" => vec!["dm-bufio".into(), "dm_mod".into()],
                _ => vec![],
            })
        };
        let builtin: BTreeSet<String> = ["ext4".to_string()].into();
        let wanted: Vec<String> = wanted.iter().map(|s| s.to_string()).collect();
        select(&index, &builtin, &wanted, deps).unwrap()
    }

    #[test]
    fn selection_closes_over_dependencies() {
        let sel = sel_for(&["virtio-blk", "ext4", "nosuch", "dm_verity"]);
        assert_eq!(
            sel.modules.keys().collect::<Vec<_>>(),
            [
                "dm_bufio",
                "dm_mod",
                "dm_verity",
                "virtio",
                "virtio_blk",
                "virtio_ring"
            ]
        );
        assert_eq!(sel.builtin, ["ext4"]);
        assert_eq!(sel.missing, ["nosuch"]);
    }

    #[test]
    fn dep_file_lists_closure_last_loaded_first() {
        let dep = modules_dep(&sel_for(&["virtio_blk", "dm_verity"]));
        assert!(dep.contains(
            "kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n"
        ), "{dep}");
        assert!(dep.contains(
            "kernel/drivers/md/dm-verity.ko: kernel/drivers/md/dm-mod.ko kernel/drivers/md/dm-bufio.ko\n"
        ), "{dep}");
        assert!(dep.contains("kernel/drivers/virtio/virtio.ko:\n"));
    }

    #[test]
    fn modinfo_rejects_non_elf() {
        assert!(modinfo(b"\xfd7zXZ\0").is_err());
        assert!(modinfo(b"\x7fELF\x02\x01").is_err());
        assert!(modinfo(&[]).is_err());
    }

    #[test]
    fn depends_field() {
        let info = vec![
            "license=GPL".to_string(),
            "depends=dm-bufio,dm_mod".to_string(),
        ];
        assert_eq!(depends(&info), ["dm_bufio", "dm_mod"]);
        assert!(depends(&["depends=".to_string()]).is_empty());
    }
}
