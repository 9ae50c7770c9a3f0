//! Load the kernel modules the initramfs carries, dependencies first.
//!
//! The image builder writes `/lib/modules/<release>/modules.dep`, `modules.builtin` and
//! `/etc/phase/modules` (the wanted names). `kmod::load_order` decides; `sys::module` loads.

use super::{Boot, StepError};
use crate::events::Event;
use crate::kmod;
use crate::sys::module::{load, Loaded};
use std::path::Path;

pub const WANTED_LIST: &str = "/etc/phase/modules";

pub fn run(boot: &mut Boot) -> Result<(), StepError> {
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    let dir = Path::new("/lib/modules").join(&release);
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let wanted: Vec<String> = read(Path::new(WANTED_LIST))
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    let table = kmod::DepTable::parse(&read(&dir.join("modules.dep")));
    let builtin = kmod::builtin_names(&read(&dir.join("modules.builtin")));
    let plan = kmod::load_order(&table, &builtin, &wanted);

    let (mut loaded, mut already, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for rel in &plan.order {
        let name = kmod::module_name(rel);
        match load(&dir.join(rel)) {
            Ok(Loaded::Now) => loaded.push(name),
            Ok(Loaded::Already) => already.push(name),
            Err(e) => {
                tracing::warn!("module {name}: {e}");
                failed.push(name);
            }
        }
    }
    for m in &plan.missing {
        tracing::warn!(
            "module {m}: not in {}/modules.dep and not built in",
            dir.display()
        );
    }
    let result = if failed.is_empty() {
        Ok(())
    } else {
        Err(StepError {
            reason: "module_load_failed",
            message: format!("modules failed to load: {}", failed.join(", ")),
        })
    };
    boot.events.emit(Event::ModulesLoaded {
        loaded,
        already,
        builtin: plan.builtin,
        missing: plan.missing,
        failed,
    });
    result
}
