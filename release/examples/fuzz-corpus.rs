//! Seed corpus for the `verify_metadata` fuzz target, signed with its fixture keys (root
//! key seed 1, release key seed 2), so that fuzzing starts from releases that verify.
//!
//! Usage: cargo run -p phase-release --example fuzz-corpus RELEASE_JSON OUT_DIR
//! RELEASE_JSON is any release (e.g. out/release/release.json); its `signed` part is kept,
//! with a version and expiry the fuzz policy accepts.

use phase_release::doc::Envelope;
use phase_release::keys::Keypair;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [release, out] = args.as_slice() else {
        eprintln!("usage: fuzz-corpus RELEASE_JSON OUT_DIR");
        std::process::exit(2);
    };
    let run = || -> Result<(), String> {
        let bytes = std::fs::read(release).map_err(|e| format!("{release}: {e}"))?;
        let mut env =
            phase_release::verify::open_envelope(&bytes).map_err(|e| format!("{release}: {e}"))?;
        env.signed["version"] = 5.into();
        env.signed["expires"] = 4_000_000_000u64.into();
        let mut signed = Envelope {
            signatures: Vec::new(),
            signed: env.signed.clone(),
        };
        signed
            .sign(&Keypair::from_seed(&[2; 32]))
            .map_err(str::to_string)?;
        std::fs::create_dir_all(out).map_err(|e| format!("{out}: {e}"))?;
        // Mode byte 0: a whole signed file; mode byte 1: the signed part alone.
        let mut whole = vec![0u8];
        whole.extend(signed.to_bytes());
        let mut part = vec![1u8];
        part.extend(signed.signed_bytes());
        for (name, b) in [("signed-release", whole), ("release-signed-part", part)] {
            let p = std::path::Path::new(out).join(name);
            std::fs::write(&p, b).map_err(|e| format!("{}: {e}", p.display()))?;
        }
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("fuzz-corpus: {e}");
        std::process::exit(1);
    }
}
