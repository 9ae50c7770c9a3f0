//! Kernel uevents as the `NETLINK_KOBJECT_UEVENT` socket delivers them (PURE): a header
//! `ACTION@DEVPATH` then NUL-separated `KEY=VALUE` pairs. Messages from udev (`libudev`
//! magic header) are not kernel uevents and are refused.

/// One kernel uevent: the fields a boot step waits on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Uevent {
    pub action: String,
    pub devpath: String,
    pub subsystem: String,
    /// `DEVTYPE`: `disk` or `partition` for block devices.
    pub devtype: Option<String>,
    /// `DEVNAME`: the node under /dev (`vda`).
    pub devname: Option<String>,
}

impl Uevent {
    /// Parse one datagram; `None` if it is not a kernel uevent.
    pub fn parse(msg: &[u8]) -> Option<Uevent> {
        let mut parts = msg.split(|b| *b == 0).filter(|p| !p.is_empty());
        let header = std::str::from_utf8(parts.next()?).ok()?;
        let (action, devpath) = header.split_once('@')?;
        let mut ev = Uevent {
            action: action.to_string(),
            devpath: devpath.to_string(),
            ..Uevent::default()
        };
        for p in parts {
            let Ok(kv) = std::str::from_utf8(p) else {
                continue;
            };
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            match k {
                "ACTION" => ev.action = v.to_string(),
                "DEVPATH" => ev.devpath = v.to_string(),
                "SUBSYSTEM" => ev.subsystem = v.to_string(),
                "DEVTYPE" => ev.devtype = Some(v.to_string()),
                "DEVNAME" => ev.devname = Some(v.to_string()),
                _ => {}
            }
        }
        (!ev.action.is_empty() && !ev.subsystem.is_empty()).then_some(ev)
    }

    /// A whole block device appeared (its partitions, if any, are already in /dev: the
    /// kernel announces a disk after scanning its partition table).
    pub fn is_disk_added(&self) -> bool {
        self.action == "add" && self.subsystem == "block" && self.devtype.as_deref() == Some("disk")
    }

    /// The device node `/dev/NAME` was added.
    pub fn is_added(&self, name: &str) -> bool {
        self.action == "add" && self.devname.as_deref() == Some(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_uevents_and_refuses_the_rest() {
        let disk = b"add@/devices/pci0000:00/0000:00:04.0/virtio1/block/vda\0ACTION=add\0DEVPATH=/devices/pci0000:00/0000:00:04.0/virtio1/block/vda\0SUBSYSTEM=block\0MAJOR=254\0MINOR=0\0DEVNAME=vda\0DEVTYPE=disk\0DISKSEQ=1\0SEQNUM=1234\0";
        let e = Uevent::parse(disk).unwrap();
        assert!(e.is_disk_added());
        assert_eq!(e.devname.as_deref(), Some("vda"));
        assert!(e.is_added("vda") && !e.is_added("vdb") && !e.is_added("/dev/vda"));
        let part = b"add@/devices/x/block/vda/vda1\0ACTION=add\0SUBSYSTEM=block\0DEVNAME=vda1\0DEVTYPE=partition\0";
        assert!(!Uevent::parse(part).unwrap().is_disk_added());
        let removed = b"remove@/devices/x/block/vda\0ACTION=remove\0SUBSYSTEM=block\0DEVNAME=vda\0DEVTYPE=disk\0";
        assert!(!Uevent::parse(removed).unwrap().is_disk_added());
        assert!(!Uevent::parse(removed).unwrap().is_added("vda"));
        let net = b"add@/devices/virtual/net/lo\0ACTION=add\0SUBSYSTEM=net\0INTERFACE=lo\0";
        assert!(!Uevent::parse(net).unwrap().is_disk_added());
        for not_kernel in [
            &b"libudev\0\xfe\xed\xca\xfe"[..],
            b"",
            b"\0\0",
            b"add@/devices/x\0ACTION=add\0",
            b"\xff\xfe@x\0SUBSYSTEM=block\0",
        ] {
            assert!(Uevent::parse(not_kernel).is_none(), "{not_kernel:?}");
        }
    }
}
