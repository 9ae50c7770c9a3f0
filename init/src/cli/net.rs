//! `phase net up [IP] [--keep]`: bring the network up with the init's own code (DHCPv4 or a
//! kernel `ip=` value) and print the `net.up` event.

use super::{parsed, subcommand, Args, Parsed, Sub};

const SUBS: &[Sub] = &[Sub {
    name: "up",
    synopsis: "[IP] [--keep]",
    about: "configure an interface by DHCP or ip=, print net.up",
    run: up,
}];

pub fn run(args: Args) -> i32 {
    subcommand(
        "net",
        "Bring the network up as the init does (changes this host's or namespace's interfaces).",
        SUBS,
        args,
    )
}

pub const UP_USAGE: &str = "\
Usage: phase net up [IP] [--keep]

Bring up the network as the init does and print the net.up event. IP is a kernel ip= value
(dhcp, or CLIENT::GATEWAY:NETMASK:HOSTNAME:DEVICE:off; default dhcp). Changes this host's
(or network namespace's) interfaces; never writes /etc/resolv.conf.
  --keep    stay and renew the DHCP lease at T1 (net.renewed events) until killed";

struct Opts {
    ip: Option<String>,
    keep: bool,
}

fn parse(args: Args) -> Result<Parsed<Opts>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut o = Opts {
        ip: None,
        keep: false,
    };
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("keep") => o.keep = true,
            Value(v) if o.ip.is_none() => o.ip = Some(v.string()?),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Parsed::Run(o))
}

fn up(args: Args) -> i32 {
    parsed(
        "net up",
        UP_USAGE,
        parse(args),
        |o| match crate::net::ipconfig::parse(o.ip.as_deref()) {
            Ok(ip) => configure(ip, o.keep),
            Err(e) => super::usage_error("net up", UP_USAGE, e),
        },
    )
}

fn configure(ip: crate::net::ipconfig::IpParam, keep: bool) -> i32 {
    crate::log::init();
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return 1;
    };
    let events = std::sync::Arc::new(crate::events::EventLog::new());
    match rt.block_on(crate::boot::network::configure(&ip, false)) {
        Ok(up) => {
            events.emit(crate::events::Event::NetUp {
                iface: up.iface,
                addr: format!("{}/{}", up.config.addr, up.config.prefix),
                method: up.method.into(),
                router: up.config.router.map(|r| r.to_string()),
            });
            match (keep, up.lease) {
                (true, Some(held)) => {
                    match rt.block_on(crate::boot::network::keep_lease(held, events)) {
                        Ok(()) => 0,
                        Err(e) => {
                            eprintln!("phase net: {e}");
                            1
                        }
                    }
                }
                _ => 0,
            }
        }
        Err(e) => {
            eprintln!("phase net: {}: {}", e.reason, e.message);
            1
        }
    }
}
