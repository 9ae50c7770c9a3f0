//! Keys, roots and releases: `keygen`, `root`, `release`, `sign`, `verify`. The documents
//! are the `phase-release` types the init verifies, so signer and verifier cannot drift.

use anyhow::{anyhow, bail, Context, Result};
use phase_release::doc::{new_root, Artifact, Artifacts, Envelope, Release, Root, Verity};
use phase_release::keys::{Keypair, PrivateKeyFile, PublicKey};
use phase_release::{hex, verify};
use std::path::{Path, PathBuf};

pub const RELEASE_FILE: &str = "release.json";
pub const ROOT_FILE: &str = "root.json";

/// `keygen`: a new Ed25519 key. The private key file is created with mode 0600 before any
/// secret is written, then renamed into place; an existing key is never overwritten.
pub fn keygen(dir: &Path, name: &str, comment: &str) -> Result<(PathBuf, PathBuf, String)> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow!("getrandom: {e}"))?;
    let key = Keypair::from_seed(&seed);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (priv_path, pub_path) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    );
    for p in [&priv_path, &pub_path] {
        if p.exists() {
            bail!("{} exists; refusing to overwrite a key", p.display());
        }
    }
    phase_release::keys::write_private_file(&priv_path, &key.to_file(comment))
        .with_context(|| format!("writing {}", priv_path.display()))?;
    let mut public = serde_json::to_vec_pretty(&key.public())?;
    public.push(b'\n');
    crate::write_atomic(&pub_path, &public)?;
    Ok((priv_path, pub_path, key.key_id()))
}

pub fn read_private(path: &Path) -> Result<Keypair> {
    let f: PrivateKeyFile = serde_json::from_slice(
        &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("{}: not a private key file", path.display()))?;
    Keypair::from_file(&f)
        .ok_or_else(|| anyhow!("{}: malformed ed25519 private key", path.display()))
}

pub fn read_public(path: &Path) -> Result<PublicKey> {
    let k: PublicKey = serde_json::from_slice(
        &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("{}: not a public key file", path.display()))?;
    k.key_id()
        .ok_or_else(|| anyhow!("{}: malformed ed25519 public key", path.display()))?;
    Ok(k)
}

fn read_envelope(path: &Path) -> Result<Envelope> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    verify::open_envelope(&bytes).map_err(|e| anyhow!("{}: {}: {e}", path.display(), e.reason()))
}

fn sign_all(env: &mut Envelope, keys: &[PathBuf]) -> Result<()> {
    for k in keys {
        env.sign(&read_private(k)?).map_err(|e| anyhow!("{e}"))?;
    }
    Ok(())
}

pub struct RootArgs {
    pub root_keys: Vec<PathBuf>,
    pub root_threshold: u64,
    pub release_keys: Vec<PathBuf>,
    pub release_threshold: u64,
    pub expires: u64,
    pub previous: Option<PathBuf>,
    pub sign: Vec<PathBuf>,
    pub output: PathBuf,
}

/// `root`: create root version 1, or (with `--previous`) the next version. A rotation must
/// be signed by a threshold of the previous root keys and of the new ones; this is checked
/// before anything is written.
pub fn root(a: &RootArgs) -> Result<u64> {
    let pubs = |ps: &[PathBuf]| {
        ps.iter()
            .map(|p| read_public(p))
            .collect::<Result<Vec<_>>>()
    };
    let previous: Option<Root> = match &a.previous {
        Some(p) => {
            let env = read_envelope(p)?;
            Some(
                serde_json::from_value(env.signed)
                    .with_context(|| format!("{}: not a root", p.display()))?,
            )
        }
        None => None,
    };
    let version = previous.as_ref().map(|r| r.version + 1).unwrap_or(1);
    let doc = new_root(
        version,
        a.expires,
        &pubs(&a.root_keys)?,
        a.root_threshold,
        &pubs(&a.release_keys)?,
        a.release_threshold,
    )
    .map_err(|e| anyhow!(e))?;
    let mut env = Envelope::new(&doc)?;
    sign_all(&mut env, &a.sign)?;
    let bytes = env.to_bytes();
    match &previous {
        Some(prev) => verify::verify_root_update(prev, &bytes).map(|_| ()),
        None => verify::verify_root_self(&bytes).map(|_| ()),
    }
    .map_err(|e| anyhow!("the new root would not verify: {}: {e}", e.reason()))?;
    crate::write_atomic(&a.output, &bytes)?;
    Ok(version)
}

pub struct ReleaseArgs {
    pub root: PathBuf,
    pub root_history: Vec<PathBuf>,
    pub version: u64,
    pub channel: String,
    pub arch: String,
    pub cmdline: String,
    pub expires: u64,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub rootfs: Option<PathBuf>,
    /// The rootfs's `verity` object (`phase-image rootfs` writes it beside the image).
    pub rootfs_verity: Option<PathBuf>,
    pub sign: Vec<PathBuf>,
    pub out_dir: PathBuf,
}

/// A file name the release directory can hold: what the verifier accepts as an artifact
/// path, and not one of the metadata files.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('/')
        && !name.starts_with('.')
        && name != RELEASE_FILE
        && name != ROOT_FILE
        && !name.ends_with(".root.json")
}

/// Copy a file into the release directory while hashing it; returns its bytes too.
fn add_artifact(src: &Path, dir: &Path) -> Result<(Artifact, Vec<u8>)> {
    let name = src
        .file_name()
        .ok_or_else(|| anyhow!("{}: no file name", src.display()))?
        .to_string_lossy()
        .into_owned();
    if !plain_name(&name) {
        bail!("{}: {name:?} cannot be an artifact name", src.display());
    }
    let bytes = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
    crate::write_atomic(&dir.join(&name), &bytes)?;
    let a = Artifact {
        path: name,
        size: bytes.len() as u64,
        sha256: hex::encode(&phase_release::sha256(&bytes)),
        verity: None,
    };
    Ok((a, bytes))
}

/// Read a `verity` object, check it against its hash device (beside it) and against the
/// rootfs (the tree recomputed with the device's salt must match byte for byte and give
/// the same root hash), then copy the hash device into the release directory.
fn add_verity(json: &Path, rootfs: &[u8], dir: &Path) -> Result<Verity> {
    let v: Verity = serde_json::from_slice(
        &std::fs::read(json).with_context(|| format!("reading {}", json.display()))?,
    )
    .with_context(|| format!("{}: not a verity object", json.display()))?;
    if !plain_name(&v.hash_path) {
        bail!(
            "{}: hash_path {:?} is not a plain file name",
            json.display(),
            v.hash_path
        );
    }
    let src = json.with_file_name(&v.hash_path);
    let hash = std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
    if hash.len() as u64 != v.hash_size {
        bail!(
            "{}: {} bytes, {} says {}",
            src.display(),
            hash.len(),
            json.display(),
            v.hash_size
        );
    }
    if hex::encode(&phase_release::sha256(&hash)) != v.hash_sha256 {
        bail!("{}: SHA-256 differs from {}", src.display(), json.display());
    }
    let tree = crate::verity::verify(rootfs, &hash)
        .map_err(|e| anyhow!("{} does not match the rootfs: {e}", src.display()))?;
    if tree.doc(&v.hash_path) != v {
        bail!(
            "{}: root hash, salt or sizes differ from the tree of the rootfs (root hash {})",
            json.display(),
            hex::encode(&tree.root_hash)
        );
    }
    crate::write_atomic(&dir.join(&v.hash_path), &hash)?;
    Ok(v)
}

/// `release`: hash and copy the artifacts, write and sign `release.json`, and put the root
/// (and its history, as `N.root.json`) beside them: a directory any HTTP server can serve.
pub fn release(a: &ReleaseArgs) -> Result<Vec<String>> {
    std::fs::create_dir_all(&a.out_dir)?;
    let root_env = read_envelope(&a.root)?;
    let _: Root =
        serde_json::from_value(root_env.signed.clone()).context("--root is not a root document")?;
    let rootfs = match &a.rootfs {
        Some(p) => {
            let (mut art, bytes) = add_artifact(p, &a.out_dir)?;
            if let Some(j) = &a.rootfs_verity {
                art.verity = Some(add_verity(j, &bytes, &a.out_dir)?);
            }
            Some(art)
        }
        None if a.rootfs_verity.is_some() => bail!("--rootfs-verity needs --rootfs"),
        None => None,
    };
    let artifacts = Artifacts {
        kernel: add_artifact(&a.kernel, &a.out_dir)?.0,
        initramfs: add_artifact(&a.initramfs, &a.out_dir)?.0,
        rootfs,
    };
    let mut names: Vec<&str> = artifacts.iter().map(|(_, a)| a.path.as_str()).collect();
    names.extend(
        artifacts
            .iter()
            .filter_map(|(_, a)| Some(a.verity.as_ref()?.hash_path.as_str())),
    );
    names.sort();
    if names.windows(2).any(|w| w[0] == w[1]) {
        bail!("two release files share a name: {names:?}");
    }
    let doc = Release {
        doc_type: "release".into(),
        spec_version: phase_release::doc::SPEC_VERSION,
        version: a.version,
        channel: a.channel.clone(),
        arch: a.arch.clone(),
        expires: a.expires,
        cmdline: a.cmdline.clone(),
        artifacts,
    };
    let mut env = Envelope::new(&doc)?;
    sign_all(&mut env, &a.sign)?;
    crate::write_atomic(&a.out_dir.join(RELEASE_FILE), &env.to_bytes())?;
    crate::write_atomic(&a.out_dir.join(ROOT_FILE), &root_env.to_bytes())?;
    for h in a.root_history.iter().chain(std::iter::once(&a.root)) {
        let env = read_envelope(h)?;
        let r: Root = serde_json::from_value(env.signed.clone())
            .with_context(|| format!("{}: not a root", h.display()))?;
        crate::write_atomic(
            &a.out_dir.join(format!("{}.root.json", r.version)),
            &env.to_bytes(),
        )?;
    }
    Ok(doc
        .artifacts
        .iter()
        .map(|(n, a)| match &a.verity {
            Some(v) => format!(
                "{n}: {} ({} bytes), verity {} ({} bytes), root hash {}",
                a.path, a.size, v.hash_path, v.hash_size, v.root_hash
            ),
            None => format!("{n}: {} ({} bytes)", a.path, a.size),
        })
        .collect())
}

/// `sign`: add a signature to a root or release file, in place.
pub fn sign(key: &Path, file: &Path) -> Result<String> {
    let mut env = read_envelope(file)?;
    let k = read_private(key)?;
    env.sign(&k)
        .map_err(|e| anyhow!("{}: {e}", file.display()))?;
    crate::write_atomic(file, &env.to_bytes())?;
    Ok(k.key_id())
}

pub struct VerifyArgs {
    pub root: PathBuf,
    pub dir: PathBuf,
    pub arch: String,
    pub channel: String,
    pub now: u64,
    pub floor: u64,
}

/// Why `verify` failed: the stable reason and the message.
#[derive(Debug)]
pub struct Rejection {
    pub reason: &'static str,
    pub message: String,
}

/// `verify`: walk the root chain from the trusted ROOT through DIR/N.root.json, verify
/// DIR/release.json, then every artifact's size and SHA-256 as it is read.
pub fn verify_dir(a: &VerifyArgs) -> std::result::Result<String, Rejection> {
    let reject = |reason: &'static str, message: String| Rejection { reason, message };
    let trust = |e: verify::TrustError| Rejection {
        reason: e.reason(),
        message: e.to_string(),
    };
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| reject("unreadable", format!("{}: {e}", p.display())))
    };
    let trusted = verify::verify_root_self(&read(&a.root)?)
        .map_err(trust)?
        .doc;
    let root = verify::update_root_chain(
        trusted,
        |v| std::fs::read(a.dir.join(format!("{v}.root.json"))).ok(),
        a.now,
    )
    .map_err(trust)?;
    let rel_path = a.dir.join(RELEASE_FILE);
    let meta = std::fs::metadata(&rel_path)
        .map_err(|e| reject("unreadable", format!("{}: {e}", rel_path.display())))?;
    if meta.len() > phase_release::doc::MAX_METADATA_BYTES as u64 {
        return Err(trust(verify::TrustError::Oversized {
            size: meta.len() as usize,
            max: phase_release::doc::MAX_METADATA_BYTES,
        }));
    }
    let policy = verify::Policy {
        arch: a.arch.clone(),
        channel: a.channel.clone(),
        now: a.now,
        floor: a.floor,
        trusted: None,
    };
    let rel = verify::verify_release(&read(&rel_path)?, &root, &policy)
        .map_err(trust)?
        .doc;
    let stream = |name: &str, art: &Artifact| -> std::result::Result<(), Rejection> {
        let p = a.dir.join(&art.path);
        let f = std::fs::File::open(&p)
            .map_err(|e| reject("artifact_missing", format!("{}: {e}", p.display())))?;
        phase_release::stream::verify_reader(name, art, std::io::BufReader::new(f)).map_err(
            |e| match e {
                phase_release::stream::StreamError::Trust(t) => trust(t),
                phase_release::stream::StreamError::Io(m) => {
                    reject("unreadable", format!("{}: {m}", p.display()))
                }
            },
        )?;
        Ok(())
    };
    // The same list of files the init fetches; their names and the verity parameters
    // were checked by verify_release (phase_release::artifact::check).
    let mut trees = 0;
    for (name, art) in phase_release::artifact::files(&rel) {
        stream(&name, &art)?;
        trees += usize::from(name.ends_with(".verity"));
    }
    let trees = match trees {
        0 => String::new(),
        n => format!(", {n} verity hash device{}", if n == 1 { "" } else { "s" }),
    };
    Ok(format!(
        "release {} (channel {}, arch {}) verified against root version {}: {} artifacts ok{trees}",
        rel.version,
        rel.channel,
        rel.arch,
        root.version,
        rel.artifacts.iter().count()
    ))
}
