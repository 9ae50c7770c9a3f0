//! Link broadcasts (PURE): the interfaces an rtnetlink `RTM_NEWLINK` datagram reports with
//! carrier (`IFF_LOWER_UP`). The carrier wait sleeps on these instead of polling sysfs.

const NLMSG_HDR: usize = 16;
const IFINFOMSG: usize = 16;
const RTM_NEWLINK: u16 = 16;
/// `IFF_LOWER_UP`: the driver signals carrier (what `/sys/class/net/X/carrier` reads).
const IFF_LOWER_UP: u32 = 0x1_0000;

/// The interface indexes that one datagram (possibly several messages) reports with
/// carrier. Truncated or foreign messages are skipped, never trusted.
pub fn with_carrier(datagram: &[u8]) -> Vec<u32> {
    let mut up = Vec::new();
    let mut rest = datagram;
    while rest.len() >= NLMSG_HDR {
        let u32_at = |b: &[u8], i: usize| {
            b.get(i..i + 4)
                .and_then(|s| s.try_into().ok())
                .map(u32::from_ne_bytes)
        };
        let Some(len) = u32_at(rest, 0).map(|l| l as usize) else {
            break;
        };
        if len < NLMSG_HDR || len > rest.len() {
            break;
        }
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        if kind == RTM_NEWLINK && len >= NLMSG_HDR + IFINFOMSG {
            let index = u32_at(rest, NLMSG_HDR + 4);
            let flags = u32_at(rest, NLMSG_HDR + 8);
            if let (Some(index), Some(flags)) = (index, flags) {
                if flags & IFF_LOWER_UP != 0 {
                    up.push(index);
                }
            }
        }
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    up
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One message of `len` bytes (at least the headers), padded to 4 as the kernel does.
    fn newlink(kind: u16, index: u32, flags: u32, len: usize) -> Vec<u8> {
        let len = (NLMSG_HDR + IFINFOMSG).max(len);
        let mut m = vec![0u8; len.next_multiple_of(4)];
        m[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
        m[4..6].copy_from_slice(&kind.to_ne_bytes());
        m[NLMSG_HDR + 4..NLMSG_HDR + 8].copy_from_slice(&index.to_ne_bytes());
        m[NLMSG_HDR + 8..NLMSG_HDR + 12].copy_from_slice(&flags.to_ne_bytes());
        m
    }

    #[test]
    fn carrier_is_read_from_newlink_flags() {
        let up = 0x1_0043; // LOWER_UP | RUNNING | BROADCAST | UP
        let cases: &[(&str, Vec<u8>, Vec<u32>)] = &[
            ("carrier", newlink(RTM_NEWLINK, 2, up, 0), vec![2]),
            ("up, no carrier", newlink(RTM_NEWLINK, 2, 0x1003, 0), vec![]),
            ("not a link message", newlink(17, 2, up, 0), vec![]),
            (
                "two messages, attributes after the first",
                [
                    newlink(RTM_NEWLINK, 3, up, 42),
                    newlink(RTM_NEWLINK, 4, up, 0),
                ]
                .concat(),
                vec![3, 4],
            ),
            (
                "truncated",
                newlink(RTM_NEWLINK, 2, up, 0)[..20].to_vec(),
                vec![],
            ),
            (
                "length past the end",
                {
                    let mut m = newlink(RTM_NEWLINK, 2, up, 0);
                    m[0..4].copy_from_slice(&999u32.to_ne_bytes());
                    m
                },
                vec![],
            ),
            ("empty", vec![], vec![]),
        ];
        for (what, dgram, want) in cases {
            assert_eq!(with_carrier(dgram), *want, "{what}");
        }
    }
}
