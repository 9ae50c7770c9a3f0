//! Root rotation against two providers (`phase fetch`, the stage-1 client, on loopback).
//! Root 2 replaces the release keys of root 1 (the TEST release keys are revoked).
//! Provider A serves `2.root.json` and release 2 signed by the new key; provider B serves
//! release 3 signed by the revoked keys and answers 404 for `2.root.json`. The client must
//! update its root first, from A, and then judge B's release with root 2: the revoked keys
//! lose, release 2 is fetched, and the rotation is kept with the metadata.

use phase_release::doc::{new_root, Envelope};
use phase_release::keys::{Keypair, PrivateKeyFile};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn top() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn test_key(name: &str) -> Keypair {
    let text = std::fs::read(top().join("keys/test").join(name)).unwrap();
    let f: PrivateKeyFile = serde_json::from_slice(&text).unwrap();
    Keypair::from_file(&f).unwrap()
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `phase provider serve DIR` on a free loopback port; returns it and its URL once it answers.
fn serve(dir: &Path) -> (Killed, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let c = Command::new(env!("CARGO_BIN_EXE_phase"))
        .args(["provider", "serve"])
        .arg(dir)
        .args(["--listen", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Ready when it accepts a connection (bounded: 10 s).
    for _ in 0..200 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (Killed(c), format!("http://{addr}/"))
}

/// A copy of the built release with `release.json` re-signed as `version` by `keys`.
fn release_dir(dir: &Path, version: u64, keys: &[&Keypair]) {
    std::fs::create_dir_all(dir).unwrap();
    for e in std::fs::read_dir(top().join("out/release"))
        .unwrap()
        .flatten()
    {
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    let bytes = std::fs::read(dir.join("release.json")).unwrap();
    let mut env = phase_release::verify::open_envelope(&bytes).unwrap();
    env.signed["version"] = version.into();
    env.signatures.clear();
    for k in keys {
        env.sign(k).unwrap();
    }
    std::fs::write(dir.join("release.json"), env.to_bytes()).unwrap();
}

fn events(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .filter_map(|l| l.strip_prefix("PHASE-EVENT "))
        .map(|j| serde_json::from_str(j).unwrap())
        .collect()
}

#[test]
fn revoked_release_keys_lose_to_the_rotated_root() {
    let root_path = top().join("out/trusted-root.json");
    assert!(root_path.exists(), "run `make build` first");
    let root1 = phase_release::verify::verify_root_self(&std::fs::read(&root_path).unwrap())
        .unwrap()
        .doc;
    let work = std::env::temp_dir().join(format!("phase-rotation-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);

    // Root 2: same root key, one new release key; the two TEST release keys are revoked.
    let root_key = test_key("TEST-root-1.key");
    let new_release = Keypair::from_seed(&[0x52; 32]);
    let root2 = new_root(
        2,
        root1.expires,
        &[root_key.public()],
        1,
        &[new_release.public()],
        1,
    )
    .unwrap();
    let mut root2_env = Envelope::new(&root2).unwrap();
    root2_env.sign(&root_key).unwrap();

    let (a, b) = (work.join("a"), work.join("b"));
    release_dir(&a, 2, &[&new_release]);
    std::fs::write(a.join("2.root.json"), root2_env.to_bytes()).unwrap();
    let revoked = [
        test_key("TEST-release-1.key"),
        test_key("TEST-release-2.key"),
    ];
    release_dir(&b, 3, &[&revoked[0], &revoked[1]]);
    let (_sa, url_a) = serve(&a);
    let (_sb, url_b) = serve(&b);

    // B first: the order of providers must not matter.
    let got = work.join("got");
    let out = Command::new(env!("CARGO_BIN_EXE_phase"))
        .args(["fetch", "--root"])
        .arg(&root_path)
        .args(["--provider", &url_b, "--provider", &url_a, "--out"])
        .arg(&got)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = events(&text);
    let find = |name: &str, f: &dyn Fn(&serde_json::Value) -> bool| {
        ev.iter().any(|e| e["event"] == name && f(e))
    };
    assert!(
        find("verify.failed", &|e| e["provider"] == url_b.as_str()
            && e["artifact"] == "release.json"
            && e["reason"] == "unknown_key"),
        "{text}"
    );
    assert!(
        !find("provider.found", &|e| e["url"] == url_b.as_str()),
        "{text}"
    );
    assert!(find("release.verified", &|e| e["version"] == 2), "{text}");
    assert!(find("artifacts.verified", &|e| e["version"] == 2), "{text}");
    // The rotation travels with the metadata, so this node can serve it on.
    assert_eq!(
        std::fs::read(got.join("2.root.json")).unwrap(),
        root2_env.to_bytes()
    );
    let _ = std::fs::remove_dir_all(&work);
}
