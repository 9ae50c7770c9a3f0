//! PCI functions in sysfs: list them, hold one back from driver binding
//! (`driver_override`), and bind it later (`drivers_probe`).

use crate::virtio::PciFunction;
use std::path::Path;

const DEVICES: &str = "/sys/bus/pci/devices";
const DRIVERS_PROBE: &str = "/sys/bus/pci/drivers_probe";
/// No driver has this name, so a function overridden to it binds to nothing.
const HELD: &str = "phase-held";

#[derive(Debug, thiserror::Error)]
pub enum PciError {
    #[error("write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl PciError {
    /// Stable snake_case reason for events.
    pub fn reason(&self) -> &'static str {
        match self {
            PciError::Write { .. } => "pci_write_failed",
        }
    }
}

fn write(path: &Path, value: &str) -> Result<(), PciError> {
    std::fs::write(path, value).map_err(|source| PciError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// Every function under `/sys/bus/pci/devices` whose `uevent` reads; none if sysfs has no
/// PCI bus.
pub fn functions() -> Vec<PciFunction> {
    let Ok(dir) = std::fs::read_dir(DEVICES) else {
        return Vec::new();
    };
    let mut out: Vec<PciFunction> = dir
        .flatten()
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path().join("uevent")).ok()?;
            PciFunction::from_uevent(&e.file_name().to_string_lossy(), &text)
        })
        .collect();
    out.sort_by(|a, b| a.address.cmp(&b.address));
    out
}

/// `echo phase-held > .../<address>/driver_override`: no driver binds the function.
pub fn hold(address: &str) -> Result<(), PciError> {
    write(
        &Path::new(DEVICES).join(address).join("driver_override"),
        HELD,
    )
}

/// Clear the override, then `echo <address> > /sys/bus/pci/drivers_probe`: the kernel
/// binds the function to its driver now (the probe runs in this thread).
pub fn release(address: &str) -> Result<(), PciError> {
    write(
        &Path::new(DEVICES).join(address).join("driver_override"),
        "\n",
    )?;
    write(Path::new(DRIVERS_PROBE), address)
}
