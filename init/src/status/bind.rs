//! Where the status endpoint listens (PURE), from the mode and `phase.status=`.
//!
//! `auto`: on the node's own address in internet and local modes (loopback when the boot
//! configured no network), nowhere in private mode. `on`: the same, private mode too.
//! `off`: nowhere.

use crate::config::{Mode, StatusSetting};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// The address to listen on, or `None` for no endpoint.
pub fn decide(mode: Mode, setting: StatusSetting, own: Option<Ipv4Addr>) -> Option<SocketAddr> {
    let wanted = match setting {
        StatusSetting::Off => false,
        StatusSetting::On => true,
        StatusSetting::Auto => mode != Mode::Private,
    };
    wanted.then(|| {
        SocketAddr::V4(SocketAddrV4::new(
            own.unwrap_or(Ipv4Addr::LOCALHOST),
            super::STATUS_PORT,
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Mode::*;
    use StatusSetting::*;

    #[test]
    fn listen_address_by_mode_and_setting() {
        let own = Some(Ipv4Addr::new(10, 0, 2, 15));
        let at = |ip: [u8; 4]| Some(SocketAddr::from((ip, super::super::STATUS_PORT)));
        let table = [
            (Internet, Auto, own, at([10, 0, 2, 15])),
            (Local, Auto, own, at([10, 0, 2, 15])),
            (Internet, Auto, None, at([127, 0, 0, 1])),
            (Private, Auto, own, None),
            (Private, On, own, at([10, 0, 2, 15])),
            (Private, On, None, at([127, 0, 0, 1])),
            (Internet, Off, own, None),
            (Private, Off, None, None),
        ];
        for (mode, setting, own, want) in table {
            assert_eq!(
                decide(mode, setting, own),
                want,
                "{mode:?} {setting:?} {own:?}"
            );
        }
    }
}
