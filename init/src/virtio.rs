//! Virtio PCI functions and when each may bind (PURE).
//!
//! The kernel probes every matching PCI function when `virtio_pci` loads, and each probe
//! enables the function's legacy interrupt: ACPI evaluates the firmware's `_PRT` routing
//! method. QEMU's i440fx firmware builds that table with a 128-step AML loop, about 85 ms
//! per probe under TCG (docs/bench.md). Only block devices are needed for the root, so the
//! other kinds this init drives are held back (`driver_override`) until the module group
//! that uses them runs: the network group binds NICs, the entropy group the RNG.

use crate::kmod::Need;

/// PCI vendor id of virtio devices (Red Hat, Inc.).
pub const VENDOR: u16 = 0x1af4;

/// A PCI function as sysfs lists it under `/sys/bus/pci/devices/<address>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciFunction {
    /// `0000:00:03.0`
    pub address: String,
    pub vendor: u16,
    pub device: u16,
    pub subsystem_device: u16,
    /// A driver is bound already (built-in `virtio_pci`, or bound earlier).
    pub bound: bool,
}

/// The virtio device type (virtio spec 1.2, "Device Types").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Net,
    Block,
    Console,
    Entropy,
    /// Any other type id (balloon, SCSI, 9p, GPU, ...): bound as before, with `virtio_pci`.
    Other(u16),
}

impl Kind {
    fn from_id(id: u16) -> Kind {
        match id {
            1 => Kind::Net,
            2 => Kind::Block,
            3 => Kind::Console,
            4 => Kind::Entropy,
            other => Kind::Other(other),
        }
    }

    /// The module group that binds a function of this kind; `None`: it binds when
    /// `virtio_pci` loads (block devices, and every kind this init does not drive).
    pub fn bound_by(self) -> Option<Need> {
        match self {
            Kind::Net => Some(Need::Network),
            Kind::Entropy => Some(Need::Entropy),
            Kind::Block | Kind::Console | Kind::Other(_) => None,
        }
    }
}

/// The virtio type of a PCI function, or `None` if it is not a virtio device.
/// Transitional devices (0x1000..=0x103f) carry the type in the subsystem device id,
/// modern ones (0x1040..=0x107f) as `device - 0x1040`.
pub fn kind(vendor: u16, device: u16, subsystem_device: u16) -> Option<Kind> {
    if vendor != VENDOR {
        return None;
    }
    match device {
        0x1000..=0x103f => Some(Kind::from_id(subsystem_device)),
        0x1040..=0x107f => Some(Kind::from_id(device - 0x1040)),
        _ => None,
    }
}

impl PciFunction {
    /// A function from its sysfs `uevent` file (`PCI_ID=1AF4:1001`, `PCI_SUBSYS_ID=1AF4:0002`,
    /// `DRIVER=` once bound): one read per function instead of one per id.
    pub fn from_uevent(address: &str, text: &str) -> Option<PciFunction> {
        let value = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        };
        let pair = |key: &str| -> Option<(u16, u16)> {
            let (a, b) = value(key)?.trim().split_once(':')?;
            Some((
                u16::from_str_radix(a, 16).ok()?,
                u16::from_str_radix(b, 16).ok()?,
            ))
        };
        let (vendor, device) = pair("PCI_ID")?;
        let (_, subsystem_device) = pair("PCI_SUBSYS_ID")?;
        Some(PciFunction {
            address: address.to_string(),
            vendor,
            device,
            subsystem_device,
            bound: value("DRIVER").is_some(),
        })
    }
}

/// The functions to hold back before `virtio_pci` loads, each with the group that binds it
/// later: unbound virtio functions whose kind a later group drives.
pub fn to_hold(functions: &[PciFunction]) -> Vec<(String, Need)> {
    functions
        .iter()
        .filter(|f| !f.bound)
        .filter_map(|f| {
            let need = kind(f.vendor, f.device, f.subsystem_device)?.bound_by()?;
            Some((f.address.clone(), need))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(address: &str, vendor: u16, device: u16, sub: u16, bound: bool) -> PciFunction {
        PciFunction {
            address: address.into(),
            vendor,
            device,
            subsystem_device: sub,
            bound,
        }
    }

    #[test]
    fn kinds_of_transitional_and_modern_functions() {
        for (vendor, device, sub, want) in [
            (VENDOR, 0x1000, 1, Some(Kind::Net)),
            (VENDOR, 0x1001, 2, Some(Kind::Block)),
            (VENDOR, 0x1005, 4, Some(Kind::Entropy)),
            (VENDOR, 0x1003, 3, Some(Kind::Console)),
            (VENDOR, 0x1004, 8, Some(Kind::Other(8))),
            (VENDOR, 0x1041, 0x1100, Some(Kind::Net)),
            (VENDOR, 0x1042, 0x1100, Some(Kind::Block)),
            (VENDOR, 0x1044, 0x1100, Some(Kind::Entropy)),
            (VENDOR, 0x1050, 0x1100, Some(Kind::Other(16))),
            // Not virtio: another vendor, or a Red Hat id outside the virtio ranges.
            (0x8086, 0x1001, 2, None),
            (0x1234, 0x1111, 0x1100, None),
            (VENDOR, 0x1110, 0x1100, None),
        ] {
            assert_eq!(
                kind(vendor, device, sub),
                want,
                "{vendor:#x}:{device:#x}/{sub}"
            );
        }
    }

    #[test]
    fn functions_parse_as_sysfs_writes_their_uevent() {
        let rng = "PCI_CLASS=FF0000\nPCI_ID=1AF4:1005\nPCI_SUBSYS_ID=1AF4:0004\nPCI_SLOT_NAME=0000:00:03.0\nMODALIAS=pci:v00001AF4d00001005sv00001AF4sd00000004bcFFsc00i00\n";
        assert_eq!(
            PciFunction::from_uevent("0000:00:03.0", rng),
            Some(f("0000:00:03.0", VENDOR, 0x1005, 4, false))
        );
        let bound = format!("DRIVER=virtio-pci\n{rng}");
        assert!(PciFunction::from_uevent("a", &bound).is_some_and(|f| f.bound));
        for bad in [
            "",
            "PCI_ID=1AF4:1005\n",
            "PCI_ID=1AF4\nPCI_SUBSYS_ID=1AF4:0004\n",
            "PCI_ID=zz:1005\nPCI_SUBSYS_ID=1AF4:0004\n",
            "PCI_ID=12345:1005\nPCI_SUBSYS_ID=1AF4:0004\n",
            "XPCI_ID=1AF4:1005\nPCI_SUBSYS_ID=1AF4:0004\n",
        ] {
            assert_eq!(PciFunction::from_uevent("a", bad), None, "{bad:?}");
        }
    }

    /// QEMU's machine as the tests boot it (RNG at 00:03.0, disk at 00:04.0) plus a NIC:
    /// only the RNG and the NIC wait, each for its own group; nothing bound is touched.
    #[test]
    fn only_the_kinds_a_later_group_drives_are_held() {
        let functions = [
            f("0000:00:00.0", 0x8086, 0x1237, 0x1100, false),
            f("0000:00:02.0", 0x1234, 0x1111, 0x1100, false),
            f("0000:00:03.0", VENDOR, 0x1005, 4, false),
            f("0000:00:04.0", VENDOR, 0x1001, 2, false),
            f("0000:00:05.0", VENDOR, 0x1000, 1, false),
            f("0000:00:06.0", VENDOR, 0x1003, 3, false),
            f("0000:00:07.0", VENDOR, 0x1044, 0x1100, true),
        ];
        assert_eq!(
            to_hold(&functions),
            [
                ("0000:00:03.0".to_string(), Need::Entropy),
                ("0000:00:05.0".to_string(), Need::Network),
            ]
        );
        assert!(to_hold(&[]).is_empty());
    }
}
