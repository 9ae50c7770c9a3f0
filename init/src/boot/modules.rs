//! Load the kernel modules the initramfs carries: what the local step needs first; the
//! state partition's filesystems in the background alongside the local step (in the modes
//! that open it); network
//! drivers in the background and only when the network step may run. Each group loads by
//! dependency level on every CPU.
//!
//! The image builder writes `/lib/modules/<release>/modules.dep`, `modules.builtin` and
//! `/etc/phase/modules` (the wanted names). `kmod` decides (groups, order, levels) and runs
//! the levels; `sys::module` loads. Each group ends in one `modules.loaded` event with every
//! module's load time; a background group reports when a step waits for it ([`settle`]).

use super::{Boot, StepError};
use crate::events::Event;
use crate::kmod::{self, DepTable, Need};
use crate::sys::module::{load, Loaded};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
}

/// Modules still loading in the background: each group and its thread.
#[derive(Default)]
pub struct Pending(Vec<(Need, std::thread::JoinHandle<Report>)>);

fn load_group(dir: &Path, table: &DepTable, builtin: &[String], wanted: &[String]) -> Report {
    let plan = kmod::load_order(table, builtin, wanted);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let done = kmod::load_by_level(&kmod::levels(table, &plan.order), cpus, |rel| {
        load(&dir.join(rel))
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
            dir.display()
        );
    }
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
    });
    result
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
    let builtin = kmod::builtin_names(&read(&dir.join("modules.builtin")));

    let local = load_group(
        &dir,
        &table,
        &builtin,
        &kmod::wanted_for(&table, &wanted, Need::Local),
    );
    // The state partition's filesystems load while the local step verifies the release.
    // Network drivers only under the network step's own condition: private mode without
    // a provider URL never brings a link up, so they are not loaded at all.
    // After a kexec (`phase.stage=2`) the network the previous kernel had is carried.
    let network_may_run = !boot.config.providers.is_empty()
        || boot.config.mode.allows_lan()
        || boot.config.stage == crate::config::Stage::Two;
    for need in background_groups(boot.config.mode.persists(), network_may_run) {
        let wanted = kmod::wanted_for(&table, &wanted, need);
        if wanted.is_empty() {
            continue;
        }
        let (d, t, b) = (dir.clone(), table.clone(), builtin.clone());
        let w = wanted.clone();
        match std::thread::Builder::new()
            .name(format!("modules-{}", need.as_str()))
            .spawn(move || load_group(&d, &t, &b, &w))
        {
            Ok(h) => boot.modules.0.push((need, h)),
            Err(e) => {
                tracing::warn!(
                    "cannot start the {} module loader ({e}): loading inline",
                    need.as_str()
                );
                let r = load_group(&dir, &table, &builtin, &wanted);
                if let Err(e) = report(boot, need, r) {
                    tracing::warn!("{}", e.message);
                }
            }
        }
    }
    report(boot, Need::Local, local)
}

/// The groups loaded in the background, in order (PURE): the state partition's
/// filesystems only in a mode that opens it (private mode never mounts a disk writable,
/// and a thread loading ext4 on a small VM's one CPU would only slow the local step), the
/// network drivers only when the network step may run.
fn background_groups(state_may_mount: bool, network_may_run: bool) -> Vec<Need> {
    [
        (Need::State, state_may_mount),
        (Need::Network, network_may_run),
    ]
    .into_iter()
    .filter_map(|(need, may)| may.then_some(need))
    .collect()
}

/// Wait for a group loading in the background (bounded by the kernel's own module
/// loading) and report it. The local step waits for `State` before mounting the state
/// partition, the network step for `Network` before it looks for links.
pub fn settle(boot: &mut Boot, need: Need) {
    let Some(i) = boot.modules.0.iter().position(|(n, _)| *n == need) else {
        return;
    };
    let (need, handle) = boot.modules.0.remove(i);
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
    for need in [Need::State, Need::Network] {
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
