//! Load the kernel modules the initramfs carries: what the local step needs first; the
//! state partition's filesystems in the background alongside the local step (in the modes
//! that open it); network drivers in the background and only when the network step may
//! run; RNG drivers in the background once the local step is done ([`after_root`]);
//! `loop` only when a step attaches a loop device ([`load_now`]). A diskless boot loads
//! the RNG group, then the network group, then the state group, in one thread. Each group
//! loads by dependency level on every CPU.
//!
//! Virtio PCI functions that only a later group drives (NICs, RNGs) are held back before
//! `virtio_pci` loads and bound by that group (`virtio` decides, `sys::pci` acts): each
//! probe costs ~85 ms of firmware AML under QEMU, and the root needs only the disk. Two
//! probes at once contend in the kernel's ACPI interpreter (~360 ms each), so groups that
//! bind PCI functions before the same step share one thread, in order ([`background_groups`]).
//! Background threads run at the lowest CPU priority, so on one CPU they mostly use the time
//! the boot path waits; a step that needs a group waits for its thread.
//!
//! The image builder writes `/lib/modules/<release>/modules.dep`, `modules.builtin` and
//! `/etc/phase/modules` (the wanted names). `kmod` decides (groups, order, levels) and runs
//! the levels; `sys::module` loads. Each group ends in one `modules.loaded` event with every
//! module's load time; a background group reports when a step waits for it ([`settle`]).

use super::{Boot, StepError};
use crate::events::Event;
use crate::kmod::{self, DepTable, Need};
use crate::sys::clock::boottime_ms;
use crate::sys::module::{load, present, Loaded};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
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
    /// Guest time (ms since kernel start) the group began and was done.
    from_ms: u64,
    to_ms: u64,
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
type OnDemand = (Source, Vec<Group>);

/// A group to load: its wanted names and the held PCI functions it binds first.
type Group = (Need, Vec<String>, Vec<String>);

/// A background thread loading groups in order: those not yet reported, and the channel
/// on which it sends each group's report as soon as that group is done.
struct Loader {
    unreported: VecDeque<Need>,
    reports: Receiver<Report>,
}

/// Modules still loading in the background (each thread and its groups), and the groups
/// a step loads when it needs them.
#[derive(Default)]
pub struct Pending {
    running: Vec<Loader>,
    on_demand: Mutex<Option<OnDemand>>,
}

fn load_group(src: &Source, wanted: &[String]) -> Report {
    let from_ms = boottime_ms();
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
        from_ms,
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
    r.to_ms = boottime_ms();
    r
}

/// A background thread: lowest priority, then each group in order, its report sent as
/// soon as it is done (a step waiting for it need not wait for the groups after it).
fn load_in_order(src: &Source, groups: &[Group], reports: &Sender<Report>) {
    if let Err(e) = crate::sys::direct::background_thread() {
        tracing::warn!("module loader keeps normal priority: {e}");
    }
    for (_, wanted, release) in groups {
        if reports.send(bind_and_load(src, wanted, release)).is_err() {
            // The receiver is gone with the boot: nothing would report the rest.
            return;
        }
    }
}

/// A group: bind its held PCI functions one after the other, then load its modules.
fn bind_and_load(src: &Source, wanted: &[String], release: &[String]) -> Report {
    let from_ms = boottime_ms();
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
    r.from_ms = from_ms;
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
        from_ms: r.from_ms,
        to_ms: r.to_ms,
        signatures: crate::sys::module::signatures().name(),
    });
    result
}

/// The threads the modules step starts, each with the groups it loads one after the
/// other (PURE). The state partition's filesystems only in a mode that opens it (private
/// mode never mounts a disk writable, and a thread loading ext4 on a small VM's one CPU
/// would only slow the local step), the network drivers only when the network step may
/// run. A boot that looks for a disk loads the state and network groups side by side and
/// the RNG once the root is done ([`after_root`]): a PCI probe would slow the local step.
/// A diskless boot that brings the network up waits for the NIC next, and DHCP's first
/// `getrandom` blocks until the kernel has entropy: one thread binds the RNG and loads its
/// driver, then binds the NIC (two probes at once contend in ACPI), then loads the state
/// group, which would otherwise take half the one CPU from those probes.
fn background_groups(
    state_may_mount: bool,
    network_may_run: bool,
    diskless: bool,
) -> Vec<Vec<Need>> {
    let state = state_may_mount.then_some(Need::State);
    match (network_may_run, diskless) {
        (true, true) => vec![[Some(Need::Entropy), Some(Need::Network), state]
            .into_iter()
            .flatten()
            .collect()],
        (true, false) => [state, Some(Need::Network)]
            .into_iter()
            .flatten()
            .map(|need| vec![need])
            .collect(),
        (false, _) => state.into_iter().map(|need| vec![need]).collect(),
    }
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
    let threads = background_groups(
        boot.config.mode.persists(),
        network_may_run,
        boot.config.diskless,
    );
    let started = |need| threads.iter().flatten().any(|n| *n == need);
    let mut on_demand = vec![(Need::Loop, wanted_for(Need::Loop), Vec::new())];
    if !started(Need::Entropy) {
        on_demand.push((
            Need::Entropy,
            wanted_for(Need::Entropy),
            release_for(Need::Entropy),
        ));
    }
    for needs in &threads {
        let groups = needs
            .iter()
            .map(|&need| (need, wanted_for(need), release_for(need)))
            .collect();
        spawn_groups(boot, &src, groups);
    }
    match boot.modules.on_demand.lock() {
        Ok(mut g) => *g = Some((src, on_demand)),
        Err(p) => *p.into_inner() = Some((src, on_demand)),
    }
    report(boot, Need::Local, local)
}

/// Start one thread loading these groups in order (inline if no thread can be started);
/// a group with nothing to load or bind is left out.
fn spawn_groups(boot: &mut Boot, src: &Source, mut groups: Vec<Group>) {
    groups.retain(|(_, wanted, release)| !(wanted.is_empty() && release.is_empty()));
    let Some((first, _, _)) = groups.first() else {
        return;
    };
    let name = format!("modules-{}", first.as_str());
    let unreported = groups.iter().map(|(n, _, _)| *n).collect();
    let (tx, reports) = channel();
    let s = src.clone();
    let g = groups.clone();
    match std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || load_in_order(&s, &g, &tx))
    {
        Ok(_) => boot.modules.running.push(Loader {
            unreported,
            reports,
        }),
        Err(e) => {
            tracing::warn!("cannot start the {name} module loader ({e}): loading inline");
            for (need, wanted, release) in &groups {
                if let Err(e) = report(boot, *need, bind_and_load(src, wanted, release)) {
                    tracing::warn!("{}", e.message);
                }
            }
        }
    }
}

/// A group waiting for a step, taken out so that it loads once.
fn take(boot: &Boot, need: Need) -> Option<(Source, Group)> {
    let mut g = match boot.modules.on_demand.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let (src, groups) = g.as_mut()?;
    let i = groups.iter().position(|(n, _, _)| *n == need)?;
    Some((src.clone(), groups.remove(i)))
}

/// Load an on-demand group now, once (`loop` before a loop device is attached), and
/// report it; a failure is logged, and the step's own use of the module names it.
pub fn load_now(boot: &Boot, need: Need) {
    let Some((src, (_, wanted, _))) = take(boot, need) else {
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
    if let Some((src, group)) = take(boot, Need::Entropy) {
        spawn_groups(boot, &src, vec![group]);
    }
}

/// Wait for a group loading in the background (bounded by the kernel's own module
/// loading) and report it, with the groups its thread loaded before it, in that order.
/// The local step waits for `State` before mounting the state partition, the network step
/// for `Network` before it looks for links.
pub fn settle(boot: &mut Boot, need: Need) {
    let Some(i) = boot
        .modules
        .running
        .iter()
        .position(|l| l.unreported.contains(&need))
    else {
        return;
    };
    while let Some(next) = boot.modules.running[i].unreported.pop_front() {
        let r = match boot.modules.running[i].reports.recv() {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!("the {} module loader ended early", next.as_str());
                Report::default()
            }
        };
        if let Err(e) = report(boot, next, r) {
            tracing::warn!("{}", e.message);
            boot.events.emit(Event::Fallback {
                step: "modules".into(),
                reason: e.reason.into(),
            });
        }
        if next == need {
            break;
        }
    }
    if boot.modules.running[i].unreported.is_empty() {
        boot.modules.running.remove(i);
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

    /// (state may mount, network may run, diskless) -> threads, each with its groups in
    /// order. The RNG joins the NIC's thread, first, only on a diskless boot that brings
    /// the network up (the state group last); everywhere else it waits for the root
    /// (`after_root`).
    #[test]
    fn background_groups_follow_what_the_boot_may_need() {
        use Need::{Entropy, Network, State};
        type Threads = &'static [&'static [Need]];
        let table: [((bool, bool, bool), Threads); 8] = [
            ((true, true, false), &[&[State], &[Network]]),
            ((false, true, false), &[&[Network]]),
            ((true, false, false), &[&[State]]),
            ((false, false, false), &[]),
            ((true, true, true), &[&[Entropy, Network, State]]),
            ((false, true, true), &[&[Entropy, Network]]),
            ((true, false, true), &[&[State]]),
            ((false, false, true), &[]),
        ];
        for ((state, network, diskless), want) in table {
            assert_eq!(
                background_groups(state, network, diskless),
                want,
                "state {state}, network {network}, diskless {diskless}"
            );
        }
    }
}
