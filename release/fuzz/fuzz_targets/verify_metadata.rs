//! Metadata verification on arbitrary bytes, in two modes chosen by the first byte:
//! - even: the rest is a whole metadata file (envelope), verified as a release, a root
//!   update and a self-signed root against the fixture root;
//! - odd: the rest is the `signed` part of a release, which the target signs with the
//!   fixture's release key before verifying, so that every mutation gets past the
//!   signature check and exercises expiry, arch, channel, floor, rollback and the
//!   artifact path and dm-verity checks.
//! Either way it never panics, and whatever is accepted meets every rule of the policy.
//! The seed corpus is signed with the fixture keys (`cargo run -p phase-release --example
//! fuzz-corpus DIR`, run by `make fuzz`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use phase_release::doc::{new_root, Envelope, Release, Root};
use phase_release::keys::Keypair;
use phase_release::verify::{self, Policy};
use std::sync::OnceLock;

/// The fixture: root key seed 1, release key seed 2 (the corpus example uses the same).
fn release_key() -> Keypair {
    Keypair::from_seed(&[2; 32])
}

fn root() -> &'static Root {
    static ROOT: OnceLock<Root> = OnceLock::new();
    ROOT.get_or_init(|| {
        let k = Keypair::from_seed(&[1; 32]).public();
        new_root(1, u64::MAX, &[k], 1, &[release_key().public()], 1).expect("valid fixture")
    })
}

const NOW: u64 = 1_800_000_000;

fn policy() -> Policy {
    Policy {
        arch: "x86_64".into(),
        channel: "stable".into(),
        now: NOW,
        floor: 2,
        trusted: Some((3, [7; 32])),
    }
}

/// What every accepted release must satisfy.
fn check_accepted(r: &Release) {
    let p = policy();
    assert!(r.expires > NOW, "expired release accepted");
    assert_eq!(r.arch, p.arch);
    assert_eq!(r.channel, p.channel);
    assert!(r.version >= 3, "rollback accepted: {}", r.version);
    assert!(
        phase_release::artifact::check(r).is_ok(),
        "bad artifact accepted"
    );
    for (_, a) in phase_release::artifact::files(r) {
        assert!(phase_release::artifact::plain_file_name(&a.path), "{}", a.path);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        if let Ok(v) = verify::verify_release(rest, root(), &policy()) {
            check_accepted(&v.doc);
        }
        let _ = verify::verify_root_update(root(), rest);
        let _ = verify::verify_root_self(rest);
        return;
    }
    let Ok(signed) = phase_release::canonical::parse(rest) else {
        return;
    };
    let mut env = Envelope {
        signatures: Vec::new(),
        signed,
    };
    if env.sign(&release_key()).is_err() {
        return;
    }
    if let Ok(v) = verify::verify_release(&env.to_bytes(), root(), &policy()) {
        check_accepted(&v.doc);
    }
});
