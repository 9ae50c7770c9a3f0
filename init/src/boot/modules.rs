//! Load the kernel modules the initramfs carries: what the local step needs first; the
//! state partition's filesystems in the background alongside the local step (in the modes
//! that open it); network drivers in the background and only when the network step may
//! run; RNG drivers in the background once the local step is done ([`after_root`]);
//! `loop` only when a step attaches a loop device ([`load_now`]). Each group loads by
//! dependency level on every CPU.
//!
//! Virtio PCI functions that only a later group drives (NICs, RNGs) are held back before
//! `virtio_pci` loads and bound by that group (`virtio` decides, `sys::pci` acts): each
//! probe costs ~85 ms of firmware AML under QEMU, and the root needs only the disk.
//! Background groups run at the lowest CPU priority, so on one CPU they mostly use the time
//! the boot path waits; a step that needs one waits for it.
//!
//! The image builder writes `/lib/modules/<release>/modules.dep`, `modules.builtin` and
//! `/etc/phase/modules` (the wanted names). `kmod` decides (groups, order, levels) and runs
//! the levels; `sys::module` loads. Each group ends in one `modules.loaded` event with every
//! module's load time; a background group reports when a step waits for it ([`settle`]).

use super::{Boot, StepError};
use crate::events::Event;
use crate::kmod::{self, DepTable, Need};
use crate::sys::module::{load, present, Loaded};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub const WANTED_LIST: &str = "/etc/phase/modules";

/// One group's outcome, to become its `modules.loaded` event.
#[derive(Debug, Default)]
struct Report {
    loaded: Vec<String>,
    already: Vec<String>,
    builtin: Vec<String>,
    missing: Vec<String>,
    failed: Vec<String>,
    ms: BTreeMap<String, u64>,
    held: Vec<String>,
    bound: Vec<String>,
}

/// Where a group's files come from.
#[derive(Clone)]
struct Source {
    dir: PathBuf,
    table: DepTable,
    builtin: Vec<String>,
}

/// Groups that wait for a step ([`load_now`], [`after_root`]): each group's wanted names
/// and the held PCI functions it binds.
type OnDemand = (Source, Vec<(Need, Vec<String>, Vec<String>)>);

/// Modules still loading in the background (each group and its thread), and the groups a
/// step loads when it needs them.
#[derive(Default)]
pub struct Pending {
    running: Vec<(Need, std::thread::JoinHandle<Report>)>,
    on_demand: Mutex<Option<OnDemand>>,
}

fn load_group(src: &Source, wanted: &[String]) -> Report {
    let plan = kmod::load_order(&src.table, &src.builtin, wanted);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // A module another group loaded (a shared dependency) is not handed to the kernel again.
    let done = kmod::load_by_level(&kmod::levels(&src.table, &plan.order), cpus, |rel| {
        if present(&kmod::module_name(rel)) {
            Ok(Loaded::Already)
        } else {
            load(&src.dir.join(rel))
        }
    });
    let mut r = Report {
        builtin: plan.builtin,
        missing: plan.missing,
        ..Report::default()
    };
    for t in done {
        let name = kmod::module_name(&t.path);
        r.ms.insert(name.clone(), t.ms);
        match t.result {
            Ok(Loaded::Now) => r.loaded.push(name),
            Ok(Loaded::Already) => r.already.push(name),
            Err(e) => {
                tracing::warn!("module {name}: {e}");
                r.failed.push(name);
            }
        }
    }
    for m in &r.missing {
        tracing::warn!(
            "module {m}: not in {}/modules.dep and not built in",
            src.dir.display()
        );
    }
    r
}

/// A background group: lowest priority, bind its held PCI functions, then load.
fn background_group(src: &Source, wanted: &[String], release: &[String]) -> Report {
    if let Err(e) = crate::sys::direct::background_thread() {
        tracing::warn!("module loader keeps normal priority: {e}");
    }
    let mut bound = Vec::new();
    let mut failed = Vec::new();
    for address in release {
        match crate::sys::pci::release(address) {
            Ok(()) => bound.push(address.clone()),
            Err(e) => {
                tracing::warn!("PCI {address} not bound ({}): {e}", e.reason());
                failed.push(address.clone());
            }
        }
    }
    let mut r = load_group(src, wanted);
    r.bound = bound;
    r.failed.extend(failed);
    r
}

/// Emit a group's `modules.loaded`; failures become the step's error.
fn report(boot: &Boot, need: Need, r: Report) -> Result<(), StepError> {
    let result = if r.failed.is_empty() {
        Ok(())
    } else {
        Err(StepError {
            reason: "module_load_failed",
            message: format!("modules failed to load: {}", r.failed.join(", ")),
        })
    };
    boot.events.emit(Event::ModulesLoaded {
        group: need.as_str().to_string(),
        loaded: r.loaded,
        already: r.already,
        builtin: r.builtin,
        missing: r.missing,
        failed: r.failed,
        ms: r.ms,
        held: r.held,
        bound: r.bound,
    });
    result
}

/// The groups loaded in the background, in order (PURE): the state partition's
/// filesystems only in a mode that opens it (private mode never mounts a disk writable,
/// and a thread loading ext4 on a small VM's one CPU would only slow the local step), the
/// network drivers only when the network step may run. The RNG waits for the root
/// ([`after_root`]).
fn background_groups(state_may_mount: bool, network_may_run: bool) -> Vec<Need> {
    [
        (Need::State, state_may_mount),
        (Need::Network, network_may_run),
    ]
    .into_iter()
    .filter_map(|(need, may)| may.then_some(need))
    .collect()
}

pub fn run(boot: &mut Boot) -> Result<(), StepError> {
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    let dir: PathBuf = Path::new("/lib/modules").join(&release);
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let wanted: Vec<String> = read(Path::new(WANTED_LIST))
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    let table = DepTable::parse(&read(&dir.join("modules.dep")));
    let src = Source {
        builtin: kmod::builtin_names(&read(&dir.join("modules.builtin"))),
        dir,
        table,
    };
    let wanted_for = |need| kmod::wanted_for(&src.table, &wanted, need);

    // Before virtio_pci loads: functions a later group drives wait for it.
    let mut held: Vec<(String, Need)> = Vec::new();
    for (address, need) in crate::virtio::to_hold(&crate::sys::pci::functions()) {
        match crate::sys::pci::hold(&address) {
            Ok(()) => held.push((address, need)),
            Err(e) => tracing::warn!("PCI {address} binds now ({}): {e}", e.reason()),
        }
    }
    let mut local = load_group(&src, &wanted_for(Need::Local));
    local.held = held.iter().map(|(a, _)| a.clone()).collect();

    // Private mode without a provider URL never brings a link up; after a kexec
    // (`phase.stage=2`) the network the previous kernel had is carried.
    let network_may_run = !boot.config.providers.is_empty()
        || boot.config.mode.allows_lan()
        || boot.config.stage == crate::config::Stage::Two;
    let release_for = |need| -> Vec<String> {
        held.iter()
            .filter(|(_, n)| *n == need)
            .map(|(a, _)| a.clone())
            .collect()
    };
    for need in background_groups(boot.config.mode.persists(), network_may_run) {
        spawn_group(boot, &src, need, wanted_for(need), release_for(need));
    }
    let on_demand = vec![
        (Need::Loop, wanted_for(Need::Loop), Vec::new()),
        (
            Need::Entropy,
            wanted_for(Need::Entropy),
            release_for(Need::Entropy),
        ),
    ];
    match boot.modules.on_demand.lock() {
        Ok(mut g) => *g = Some((src, on_demand)),
        Err(p) => *p.into_inner() = Some((src, on_demand)),
    }
    report(boot, Need::Local, local)
}

/// Start a group in the background (inline if no thread can be started).
fn spawn_group(
    boot: &mut Boot,
    src: &Source,
    need: Need,
    wanted: Vec<String>,
    release: Vec<String>,
) {
    if wanted.is_empty() && release.is_empty() {
        return;
    }
    let s = src.clone();
    let (w, r) = (wanted.clone(), release.clone());
    match std::thread::Builder::new()
        .name(format!("modules-{}", need.as_str()))
        .spawn(move || background_group(&s, &w, &r))
    {
        Ok(h) => boot.modules.running.push((need, h)),
        Err(e) => {
            tracing::warn!(
                "cannot start the {} module loader ({e}): loading inline",
                need.as_str()
            );
            let r = background_group(src, &wanted, &release);
            if let Err(e) = report(boot, need, r) {
                tracing::warn!("{}", e.message);
            }
        }
    }
}

/// A group waiting for a step, taken out so that it loads once.
fn take(boot: &Boot, need: Need) -> Option<(Source, Vec<String>, Vec<String>)> {
    let mut g = match boot.modules.on_demand.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let (src, groups) = g.as_mut()?;
    let i = groups.iter().position(|(n, _, _)| *n == need)?;
    let (_, wanted, release) = groups.remove(i);
    Some((src.clone(), wanted, release))
}

/// Load an on-demand group now, once (`loop` before a loop device is attached), and
/// report it; a failure is logged, and the step's own use of the module names it.
pub fn load_now(boot: &Boot, need: Need) {
    let Some((src, wanted, _)) = take(boot, need) else {
        return;
    };
    if wanted.is_empty() {
        return;
    }
    if let Err(e) = report(boot, need, load_group(&src, &wanted)) {
        tracing::warn!("{}", e.message);
    }
}

/// After the local step, whatever its outcome: the RNG group (bind the held RNG, load its
/// driver) in the background. Not before: a PCI probe's AML runs in the kernel without
/// yielding, so on one CPU it would hold the root back even at the lowest priority.
pub fn after_root(boot: &mut Boot) {
    if let Some((src, wanted, release)) = take(boot, Need::Entropy) {
        spawn_group(boot, &src, Need::Entropy, wanted, release);
    }
}

/// Wait for a group loading in the background (bounded by the kernel's own module
/// loading) and report it. The local step waits for `State` before mounting the state
/// partition, the network step for `Network` before it looks for links.
pub fn settle(boot: &mut Boot, need: Need) {
    let Some(i) = boot.modules.running.iter().position(|(n, _)| *n == need) else {
        return;
    };
    let (need, handle) = boot.modules.running.remove(i);
    let r = match handle.join() {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!("the {} module loader panicked", need.as_str());
            Report::default()
        }
    };
    if let Err(e) = report(boot, need, r) {
        tracing::warn!("{}", e.message);
        boot.events.emit(Event::Fallback {
            step: "modules".into(),
            reason: e.reason.into(),
        });
    }
}

/// Every group still loading: before the handoff (no load may be cut short by the exec)
/// and before `init.ready`, so each group is reported once.
pub fn settle_all(boot: &mut Boot) {
    after_root(boot);
    for need in [Need::State, Need::Network, Need::Entropy] {
        settle(boot, need);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_groups_follow_what_the_boot_may_need() {
        assert_eq!(background_groups(true, true), [Need::State, Need::Network]);
        assert_eq!(background_groups(false, true), [Need::Network]);
        assert_eq!(background_groups(true, false), [Need::State]);
        assert!(background_groups(false, false).is_empty());
    }
}
