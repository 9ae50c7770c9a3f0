//! Fair shares of the provider: no one client, and no crowd of slow ones, can keep others
//! from being served. The admission rule is a plain function ([`admit`]); [`Clients`]
//! counts open connections per client address and releases them on drop.
//!
//! - At most `per_client` connections from one address at once; more are answered 503.
//! - At most `max_open` connections at all (heads being read and transfers); more are
//!   answered 503 at once, so nobody waits unanswered in the kernel's backlog.
//! - Transfers share `max_connections` slots; files of at most [`SMALL_FILE`] bytes (the
//!   metadata) may also use `reserved` slots of their own, so `release.json` is answered
//!   while every large transfer slot is taken.
//! - A transfer below the minimum send rate over a window is dropped (the same
//!   [`crate::fetch::pace::Pace`] the client judges providers with), freeing its slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Files up to this size may use the reserved share (release metadata is at most 64 KiB).
pub const SMALL_FILE: u64 = 256 * 1024;

/// Why a connection is turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This address already has `per_client` connections open.
    ClientFull,
    /// `max_open` connections are open.
    ServerFull,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::ClientFull => "client_connection_cap",
            Refusal::ServerFull => "server_connection_cap",
        }
    }
}

/// Admit one more connection, given what is open now.
pub fn admit(
    open: usize,
    open_from_client: usize,
    max_open: usize,
    per_client: usize,
) -> Result<(), Refusal> {
    if open_from_client >= per_client {
        return Err(Refusal::ClientFull);
    }
    if open >= max_open {
        return Err(Refusal::ServerFull);
    }
    Ok(())
}

/// Open connections, in all and per client address.
pub struct Clients {
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    max_open: usize,
    per_client: usize,
}

/// One admitted connection; dropping it gives the place back.
pub struct Entry {
    clients: Arc<Clients>,
    ip: IpAddr,
}

impl Clients {
    pub fn new(max_open: usize, per_client: usize) -> Arc<Clients> {
        Arc::new(Clients {
            open: Mutex::new((0, HashMap::new())),
            max_open,
            per_client,
        })
    }

    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Result<Entry, Refusal> {
        // An IPv4 client on a dual-stack socket is one client, however it is written.
        let ip = ip.to_canonical();
        let mut g = self.open.lock().map_err(|_| Refusal::ServerFull)?;
        let (total, per) = &mut *g;
        admit(
            *total,
            per.get(&ip).copied().unwrap_or(0),
            self.max_open,
            self.per_client,
        )?;
        *total += 1;
        *per.entry(ip).or_insert(0) += 1;
        Ok(Entry {
            clients: self.clone(),
            ip,
        })
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Ok(mut g) = self.clients.open.lock() {
            let (total, per) = &mut *g;
            *total = total.saturating_sub(1);
            if let Some(n) = per.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    per.remove(&self.ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission() {
        use Refusal::*;
        // (open, open from this client, want) with max_open 10, per_client 3
        let cases = [
            (0, 0, Ok(())),
            (9, 2, Ok(())),
            (5, 3, Err(ClientFull)),
            (10, 0, Err(ServerFull)),
            (10, 3, Err(ClientFull)),
        ];
        for (open, mine, want) in cases {
            assert_eq!(admit(open, mine, 10, 3), want, "{open} open, {mine} mine");
        }
    }

    #[test]
    fn entries_count_per_client_and_give_back_on_drop() {
        let c = Clients::new(4, 2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let a1 = c.enter(a).unwrap();
        let _a2 = c.enter(mapped).unwrap();
        assert_eq!(c.enter(a).err(), Some(Refusal::ClientFull));
        let _b1 = c.enter(b).unwrap();
        let _b2 = c.enter(b).unwrap();
        let other: IpAddr = "10.0.0.3".parse().unwrap();
        assert_eq!(c.enter(other).err(), Some(Refusal::ServerFull));
        drop(a1);
        assert!(c.enter(a).is_ok());
    }
}
