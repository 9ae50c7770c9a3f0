//! Capability records: each attack its own rejection, what a node stores, the keys, the
//! `--need` parser and the selection table.

use super::*;

const NOW: u64 = 1_800_000_000;

fn key(b: u8) -> SigningKey {
    SigningKey::from_bytes(&[b; 32])
}

fn record(key: &SigningKey) -> Capability {
    let node = hex::encode(&key.verifying_key().to_bytes());
    let peer = peer_id(&key.verifying_key().to_bytes()).unwrap();
    Capability {
        node,
        addrs: vec![format!("/ip4/127.0.0.1/tcp/4101/p2p/{peer}")],
        arch: "x86_64".into(),
        wasm: vec!["wasm32-wasip1".into()],
        cpus: 2,
        memory_mib: 256,
        free_slots: 2,
        issued: NOW - 10,
        expires: NOW + 1800,
    }
}

fn signed(r: Capability, k: &SigningKey) -> (Vec<u8>, Vec<u8>) {
    let s = r.sign(k);
    (record_key(&s.signed.node), s.encode())
}

#[test]
fn a_signed_record_verifies_under_its_own_key() {
    let k = key(1);
    let (at, value) = signed(record(&k), &k);
    let r = verify(&at, &value, NOW).unwrap();
    assert_eq!(r, {
        let mut want = record(&k);
        want.node = hex::encode(&k.verifying_key().to_bytes());
        want
    });
}

#[test]
fn every_attack_is_named() {
    let (k, other) = (key(1), key(2));
    let good = || record(&k);
    let (at, _) = signed(good(), &k);
    let tamper = |f: &dyn Fn(&mut serde_json::Value)| {
        let (_, v) = signed(good(), &k);
        let mut j: serde_json::Value = serde_json::from_slice(&v).unwrap();
        f(&mut j);
        serde_json::to_vec(&j).unwrap()
    };
    let with = |f: &dyn Fn(&mut Capability)| {
        let mut r = good();
        f(&mut r);
        signed(r, &k).1
    };
    // (what, key, value, now, reason)
    type Case<'a> = (&'a str, Vec<u8>, Vec<u8>, u64, &'a str);
    let cases: Vec<Case> = vec![
        (
            "free slots inflated after signing",
            at.clone(),
            tamper(&|j| j["signed"]["free_slots"] = 99.into()),
            NOW,
            "bad_signature",
        ),
        (
            "another key's signature",
            at.clone(),
            tamper(&|j| {
                let mut r = good();
                r.free_slots = 1;
                j["sig"] = r.sign(&other).sig.into();
            }),
            NOW,
            "bad_signature",
        ),
        (
            "a valid record of node 2 put under node 1's key",
            at.clone(),
            signed(record(&other), &other).1,
            NOW,
            "wrong_key",
        ),
        (
            "expired",
            at.clone(),
            signed(good(), &k).1,
            NOW + 1800,
            "expired",
        ),
        (
            "issued in the future",
            at.clone(),
            with(&|r| {
                r.issued = NOW + 600;
                r.expires = NOW + 1200
            }),
            NOW,
            "not_yet_valid",
        ),
        (
            "lives longer than an hour",
            at.clone(),
            with(&|r| r.expires = r.issued + MAX_TTL_S + 1),
            NOW,
            "too_long_lived",
        ),
        (
            "unknown field",
            at.clone(),
            tamper(&|j| j["signed"]["gpu"] = true.into()),
            NOW,
            "malformed",
        ),
        ("not JSON", at.clone(), b"{".to_vec(), NOW, "malformed"),
        (
            "too large",
            at.clone(),
            vec![b' '; MAX_RECORD_BYTES + 1],
            NOW,
            "too_large",
        ),
        (
            "no WASM target",
            at.clone(),
            with(&|r| r.wasm.clear()),
            NOW,
            "out_of_bounds",
        ),
        (
            "arch with a slash",
            at.clone(),
            with(&|r| r.arch = "x86_64/../".into()),
            NOW,
            "out_of_bounds",
        ),
        (
            "zero CPUs",
            at.clone(),
            with(&|r| r.cpus = 0),
            NOW,
            "out_of_bounds",
        ),
        (
            "too many addresses",
            at.clone(),
            with(&|r| r.addrs = vec!["/ip4/10.0.0.1/tcp/1".into(); 9]),
            NOW,
            "out_of_bounds",
        ),
        (
            "an address of another peer",
            at.clone(),
            with(&|r| {
                let p = peer_id(&other.verifying_key().to_bytes()).unwrap();
                r.addrs = vec![format!("/ip4/10.0.0.1/tcp/1/p2p/{p}")]
            }),
            NOW,
            "bad_addr",
        ),
        (
            "not a multiaddr",
            at.clone(),
            with(&|r| r.addrs = vec!["http://10.0.0.1/".into()]),
            NOW,
            "bad_addr",
        ),
    ];
    for (what, at, value, now, want) in cases {
        assert_eq!(
            verify(&at, &value, now).map(|_| ()).map_err(|e| e.reason()),
            Err(want),
            "{what}"
        );
    }
}

#[test]
fn another_documents_signature_is_not_a_capability_signature() {
    // The same bytes signed under another tag (domain separation) do not verify.
    let k = key(1);
    let mut r = record(&k);
    r.node = hex::encode(&k.verifying_key().to_bytes());
    let canon = canonical::encode(&serde_json::to_value(&r).unwrap());
    let other_tag = phase_release::doc::signing_input("provider-record", &canon);
    let s = SignedCapability {
        signed: r.clone(),
        sig: hex::encode(&k.sign(&other_tag).to_bytes()),
    };
    assert_eq!(
        verify(&record_key(&r.node), &s.encode(), NOW).map_err(|e| e.reason()),
        Err("bad_signature")
    );
}

#[test]
fn selection_ranks_nodes_that_can_take_the_job() {
    let node = |n: &str, arch: &str, mem: u64, slots: u32, cpus: u32| Capability {
        node: n.into(),
        addrs: vec![],
        arch: arch.into(),
        wasm: vec!["wasm32-wasip1".into()],
        cpus,
        memory_mib: mem,
        free_slots: slots,
        issued: 0,
        expires: 1,
    };
    let mut no_wasi = node("e", "x86_64", 512, 4, 4);
    no_wasi.wasm = vec!["wasm32-unknown".into()];
    let nodes = vec![
        node("a", "x86_64", 512, 1, 8),
        node("b", "aarch64", 512, 4, 4),
        node("c", "x86_64", 64, 4, 4),
        node("d", "x86_64", 512, 0, 4),
        no_wasi,
        node("f", "x86_64", 256, 3, 2),
        node("g", "x86_64", 1024, 3, 4),
        node("h", "x86_64", 1024, 8, 1),
    ];
    let need = Need {
        arch: "x86_64".into(),
        wasm: "wasm32-wasip1".into(),
        memory_mib: 128,
        cpus: 2,
        free_slots: 1,
    };
    let (fit, passed) = select(nodes, &need, 7);
    let order: Vec<_> = fit.iter().map(|c| c.node.as_str()).collect();
    // Most free slots first, then most CPUs.
    assert_eq!(order, ["g", "f", "a"]);
    let why: Vec<_> = passed.iter().map(|p| (p.node.as_str(), p.reason)).collect();
    assert_eq!(
        why,
        [
            ("b", "wrong_arch"),
            ("c", "too_little_memory"),
            ("d", "no_free_slot"),
            ("e", "no_wasm_target"),
            ("h", "too_few_cpus")
        ]
    );
}

#[test]
fn equal_nodes_are_spread_by_the_requesters_seed() {
    let equal: Vec<Capability> = (0..8)
        .map(|i| Capability {
            node: format!("node{i}"),
            addrs: vec![],
            arch: "x86_64".into(),
            wasm: vec!["wasm32-wasip1".into()],
            cpus: 2,
            memory_mib: 256,
            free_slots: 1,
            issued: 0,
            expires: 1,
        })
        .collect();
    let need = Need {
        arch: "x86_64".into(),
        wasm: "wasm32-wasip1".into(),
        memory_mib: 1,
        cpus: 1,
        free_slots: 1,
    };
    let first = |seed| select(equal.clone(), &need, seed).0[0].node.clone();
    assert_eq!(first(1), first(1));
    let firsts: std::collections::BTreeSet<_> = (0..32).map(first).collect();
    assert!(firsts.len() > 2, "{firsts:?}");
}

#[test]
fn a_node_stores_only_newer_valid_records_under_their_own_key() {
    let k = key(1);
    let at = record_key(&hex::encode(&k.verifying_key().to_bytes()));
    let old = {
        let mut r = record(&k);
        r.issued = NOW - 100;
        r.sign(&k).encode()
    };
    let new = record(&k).sign(&k).encode();
    let withdrawn = {
        let mut r = record(&k);
        r.issued = NOW;
        r.free_slots = 0;
        r.sign(&k).encode()
    };
    let admitted = |held: Option<&[u8]>, incoming: &[u8], elsewhere| {
        admit(held, incoming, &at, NOW, elsewhere).map_err(|e| e.reason())
    };
    assert_eq!(admitted(None, &new, 0), Ok(()));
    assert_eq!(admitted(Some(&old), &new, 0), Ok(()));
    assert_eq!(admitted(Some(&new), &withdrawn, 0), Ok(()));
    // A replayed older record does not undo a newer one (a withdrawal stays withdrawn).
    assert_eq!(admitted(Some(&withdrawn), &new, 0), Err("stale"));
    assert_eq!(admitted(Some(&new), &old, 0), Err("stale"));
    // A record that does not verify is refused, whatever is held.
    assert_eq!(admitted(None, b"[]", 0), Err("malformed"));
    // A full node takes no new key but keeps updating the ones it holds.
    assert_eq!(admitted(None, &new, MAX_HELD), Err("too_large"));
    assert_eq!(admitted(Some(&old), &new, MAX_HELD), Ok(()));
    // Not a capability key at all.
    assert_eq!(
        admit(
            None,
            &new,
            b"/phase-boot/v1/providers/stable/x86_64",
            NOW,
            0
        )
        .map_err(|e| e.reason()),
        Err("bad_key")
    );
}

#[test]
fn keys_name_what_they_hold() {
    let k = key(3);
    let node = hex::encode(&k.verifying_key().to_bytes());
    assert!(is_record_key(&record_key(&node)));
    assert!(!is_record_key(&offer_key("x86_64", WASM_TARGET)));
    assert!(is_offer_key(&offer_key("x86_64", WASM_TARGET)));
    assert!(!is_offer_key(&record_key(&node)));
    assert!(!is_offer_key(b"/phase-boot/v1/capable/x86_64"));
    assert!(!is_offer_key(b"/phase-boot/v1/capable/x86_64/a/b"));
    assert!(!is_offer_key(b"/ipfs/some-cid"));
    let peer = peer_id(&k.verifying_key().to_bytes()).unwrap();
    assert_eq!(node_of(&peer), Some(node));
    let rsa_like = libp2p::PeerId::random();
    assert_eq!(node_of(&rsa_like), None);
}

#[test]
fn need_parses_and_names_what_is_wrong() {
    let d = Need::default();
    assert_eq!(Need::parse("").unwrap(), d);
    assert_eq!(Need::parse("wasm").unwrap(), d);
    let n = Need::parse("wasm=wasm32-wasip2, cpus=4,memory=512,slots=2,arch=aarch64").unwrap();
    assert_eq!(
        n,
        Need {
            arch: "aarch64".into(),
            wasm: "wasm32-wasip2".into(),
            memory_mib: 512,
            cpus: 4,
            free_slots: 2,
        }
    );
    for bad in [
        "gpu",
        "cpus",
        "cpus=x",
        "memory=-1",
        "arch=a/b",
        "wasm=",
        "slots=99999999999",
    ] {
        let e = Need::parse(bad).unwrap_err();
        assert!(e.contains("--need"), "{bad}: {e}");
    }
}

#[test]
fn records_list_lan_addresses_before_loopback() {
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let lo = "/ip4/127.0.0.1/tcp/4001/p2p/x";
    let lan = "/ip4/10.216.0.2/tcp/4001/p2p/x";
    assert_eq!(offered_addrs(&s(&[lo, lan])), s(&[lan]));
    assert_eq!(offered_addrs(&s(&[lo])), s(&[lo]));
    assert_eq!(offered_addrs(&s(&[lan; 12])).len(), MAX_ADDRS);
}

#[test]
fn an_offer_makes_a_record_that_verifies() {
    let k = key(4);
    let peer = peer_id(&k.verifying_key().to_bytes()).unwrap();
    let offer = Offer {
        addrs: vec![format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer}")],
        arch: "x86_64".into(),
        wasm: vec![WASM_TARGET.into()],
        cpus: 2,
        memory_mib: 256,
    };
    let s = offer.record(3, NOW).sign(&k);
    let got = verify(&record_key(&s.signed.node), &s.encode(), NOW + 1).unwrap();
    assert_eq!(got.free_slots, 3);
    assert!(got.expires - got.issued <= MAX_TTL_S);
    // Until it expires.
    assert_eq!(
        verify(&record_key(&s.signed.node), &s.encode(), got.expires).map_err(|e| e.reason()),
        Err("expired")
    );
}
