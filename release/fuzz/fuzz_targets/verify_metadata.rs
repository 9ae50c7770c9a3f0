//! Metadata verification on arbitrary bytes: never panics; a release accepted against the
//! fixed test root must be signed by its release keys (so random input should never pass).
#![no_main]
use libfuzzer_sys::fuzz_target;
use phase_release::doc::{new_root, Root};
use phase_release::keys::Keypair;
use phase_release::verify::{self, Policy};
use std::sync::OnceLock;

fn root() -> &'static Root {
    static ROOT: OnceLock<Root> = OnceLock::new();
    ROOT.get_or_init(|| {
        let k = Keypair::from_seed(&[1; 32]).public();
        let r = Keypair::from_seed(&[2; 32]).public();
        new_root(1, u64::MAX, &[k], 1, &[r], 1).expect("valid fixture")
    })
}

fuzz_target!(|data: &[u8]| {
    let policy = Policy {
        arch: "x86_64".into(),
        channel: "stable".into(),
        now: 1_800_000_000,
        floor: 0,
        trusted: None,
    };
    if let Ok(v) = verify::verify_release(data, root(), &policy) {
        panic!("unsigned input accepted as release {}", v.doc.version);
    }
    let _ = verify::verify_root_update(root(), data);
    let _ = verify::verify_root_self(data);
});
