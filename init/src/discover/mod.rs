//! Provider discovery: where a release may come from when the command line names none.
//!
//! Order and mode policy are plain functions here; the LAN browser/announcer (mdns.rs)
//! and the DHT node (dht.rs) do the I/O.

pub mod dht;
pub mod dht_cli;
pub mod mdns;
pub mod record;

use crate::config::Mode;

/// How a provider was found; the `how` field of `provider.found`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum How {
    /// `phase.provider=` on the kernel command line (or `--provider` on a host).
    Url,
    /// DNS-SD over mDNS on the LAN.
    Mdns,
    /// A signed record in the libp2p Kademlia DHT.
    Dht,
}

impl How {
    pub fn name(self) -> &'static str {
        match self {
            How::Url => "url",
            How::Mdns => "mdns",
            How::Dht => "dht",
        }
    }
}

/// A provider to ask for metadata; nothing about it is trusted until its release verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Base URL of a release directory (`http://IP:PORT/PATH/`).
    pub url: String,
    pub how: How,
    /// The release version the provider advertised (unverified: only used for ordering).
    pub advertised: Option<u64>,
}

/// Which discovery methods a boot may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub lan: bool,
    pub dht: bool,
}

/// The mode policy of the design: `private` neither browses nor contacts the DHT,
/// `local` stays on the LAN, `internet` uses both (the DHT only with bootstrap peers).
pub fn plan(mode: Mode, have_bootstrap_peers: bool) -> Plan {
    Plan {
        lan: mode.allows_lan(),
        dht: mode.allows_dht() && have_bootstrap_peers,
    }
}

/// Whether a node announces what it serves, and where.
pub fn announce_plan(mode: Mode) -> Plan {
    // Same policy: a private node serves nothing and says nothing.
    plan(mode, true)
}

/// Candidates kept per discovery method, and in all: each costs metadata requests.
pub const MAX_PER_METHOD: usize = 16;
pub const MAX_CANDIDATES: usize = 24;

/// Order discovered candidates for the verified fetch: the LAN before the DHT, and within
/// each, those advertising a version this node verified itself first ([`record::Verified`]:
/// a made-up higher version must not crowd them out), then the higher advertised version. The fetch keeps the highest version that
/// verifies and, among equal versions, the earliest candidate: so ties prefer the LAN.
/// Duplicate URLs keep their first (best) place. At most [`MAX_PER_METHOD`] per method and
/// [`MAX_CANDIDATES`] in all are kept (an advertised version is unverified, so a flood of
/// high ones fills a method's share, not the list).
pub fn order(mut found: Vec<Candidate>, verified: &record::Verified) -> Vec<Candidate> {
    let backed = |c: &Candidate| c.advertised.is_some_and(|v| verified.backs(v));
    found.sort_by(|a, b| {
        a.how
            .cmp(&b.how)
            .then(backed(b).cmp(&backed(a)))
            .then(b.advertised.cmp(&a.advertised))
            .then(a.url.cmp(&b.url))
    });
    let mut seen = std::collections::HashSet::new();
    found.retain(|c| seen.insert(c.url.clone()));
    let mut per: std::collections::HashMap<How, usize> = Default::default();
    found.retain(|c| {
        let n = per.entry(c.how).or_default();
        *n += 1;
        *n <= MAX_PER_METHOD
    });
    found.truncate(MAX_CANDIDATES);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(url: &str, how: How, v: Option<u64>) -> Candidate {
        Candidate {
            url: url.into(),
            how,
            advertised: v,
        }
    }

    #[test]
    fn mode_policy() {
        assert_eq!(
            plan(Mode::Private, true),
            Plan {
                lan: false,
                dht: false
            }
        );
        assert_eq!(
            plan(Mode::Local, true),
            Plan {
                lan: true,
                dht: false
            }
        );
        assert_eq!(
            plan(Mode::Internet, true),
            Plan {
                lan: true,
                dht: true
            }
        );
        assert_eq!(
            plan(Mode::Internet, false),
            Plan {
                lan: true,
                dht: false
            }
        );
        assert_eq!(
            announce_plan(Mode::Private),
            Plan {
                lan: false,
                dht: false
            }
        );
        assert_eq!(
            announce_plan(Mode::Local),
            Plan {
                lan: true,
                dht: false
            }
        );
    }

    #[test]
    fn lan_first_then_version_then_dedupe() {
        let got = order(
            vec![
                c("http://d/", How::Dht, Some(9)),
                c("http://a/", How::Mdns, Some(1)),
                c("http://b/", How::Mdns, Some(3)),
                c("http://b/", How::Dht, Some(3)),
                c("http://n/", How::Mdns, None),
            ],
            &record::Verified::default(),
        );
        let urls: Vec<_> = got.iter().map(|c| (c.url.as_str(), c.how)).collect();
        assert_eq!(
            urls,
            vec![
                ("http://b/", How::Mdns),
                ("http://a/", How::Mdns),
                ("http://n/", How::Mdns),
                ("http://d/", How::Dht),
            ]
        );
    }

    #[test]
    fn candidates_are_capped_per_method_and_in_all() {
        let many = |how, n: usize| {
            (0..n).map(move |i| {
                c(
                    &format!("http://10.0.{}.{}/", how as u8, i),
                    how,
                    Some(i as u64),
                )
            })
        };
        let got = order(
            many(How::Mdns, 40).chain(many(How::Dht, 40)).collect(),
            &record::Verified::default(),
        );
        let count = |how| got.iter().filter(|c| c.how == how).count();
        assert_eq!(got.len(), MAX_CANDIDATES);
        assert_eq!(count(How::Mdns), MAX_PER_METHOD);
        assert_eq!(count(How::Dht), MAX_CANDIDATES - MAX_PER_METHOD);
        // The highest advertised versions of each method are the ones kept.
        assert_eq!(got[0].advertised, Some(39));
    }

    /// The DHT's share of the list is a flood of made-up high versions: a provider
    /// advertising the release this node verified is still kept, first of its method.
    #[test]
    fn a_verified_version_outranks_a_flood_of_higher_claims() {
        let mut found: Vec<Candidate> = (0..64)
            .map(|i| c(&format!("http://10.9.{i}.1/"), How::Dht, Some(999)))
            .collect();
        found.push(c("http://10.0.0.1/", How::Dht, Some(2)));
        found.push(c("http://10.0.0.2/", How::Mdns, Some(1)));
        let got = order(found.clone(), &record::Verified::new([2]));
        assert_eq!(got[0].url, "http://10.0.0.2/", "the LAN still comes first");
        assert_eq!(got[1].url, "http://10.0.0.1/");
        // Knowing nothing, the version order alone would drop it.
        let blind = order(found, &record::Verified::default());
        assert!(blind.iter().all(|c| c.url != "http://10.0.0.1/"));
    }
}
