//! Choose and fetch a release from several providers, in TUF order: first bring the root
//! up to date from any provider (the highest version that chains from the trusted one,
//! each step verified), then judge every provider's release metadata with that one root,
//! keep the highest version (ties keep the earlier provider), then download every artifact
//! of that exact release (same content digest) verified, failing over among the providers
//! that serve it. A provider that withholds a rotation cannot make the others' revoked keys
//! count again: its release is judged with the newest root too.

use super::{FetchError, Limits, Url};
use phase_release::chain::{RootChain, MAX_ROOT_STEPS};
use phase_release::doc::{Artifact, Release, Root, MAX_METADATA_BYTES};
use phase_release::verify::{self, Policy, TrustError};
use std::path::Path;
use std::sync::Mutex;

/// What happened to one provider's metadata.
#[derive(Debug)]
pub enum MetaOutcome {
    Verified {
        version: u64,
    },
    Failed(FetchError),
    Rejected(TrustError),
    /// Its `N.root.json` did not verify as the next root; the walk goes on without it.
    RootRejected {
        version: u64,
        err: TrustError,
    },
}

/// The chosen release and the providers that serve it, best first.
pub struct Choice {
    pub release: Release,
    pub providers: Vec<Url>,
    /// The verified metadata exactly as served: `release.json` and the root chain
    /// (`(version, N.root.json)`) it was verified with, so this node can serve them on.
    pub metadata: Verified,
}

/// One provider's verified metadata, as bytes.
#[derive(Debug, Clone)]
pub struct Verified {
    pub release_json: Vec<u8>,
    pub chain: Vec<(u64, Vec<u8>)>,
}

/// Update `chain` from the providers, then fetch and verify every provider's release with
/// the resulting root; report each; choose the highest.
pub async fn choose(
    providers: &[Url],
    chain: &mut RootChain,
    policy: &Policy,
    limits: &Limits,
    report: &mut (dyn FnMut(&Url, &MetaOutcome) + Send),
) -> Option<Choice> {
    update_root(providers, chain, limits, report).await;
    let root = chain.root.clone();
    let mut verified: Vec<(Url, Release, [u8; 32], Vec<u8>)> = Vec::new();
    let answers = from_each(providers, "release.json", MAX_METADATA_BYTES + 1, limits).await;
    for (p, answer) in providers.iter().zip(answers) {
        let outcome = match judge(answer, &root, policy) {
            Ok((rel, digest, bytes)) => {
                let v = rel.version;
                verified.push((p.clone(), rel, digest, bytes));
                MetaOutcome::Verified { version: v }
            }
            Err(Ok(e)) => MetaOutcome::Failed(e),
            Err(Err(e)) => MetaOutcome::Rejected(e),
        };
        report(p, &outcome);
    }
    let best = verified.iter().map(|(_, r, _, _)| r.version).max()?;
    let (_, release, digest, release_json) = verified
        .iter()
        .find(|(_, r, _, _)| r.version == best)?
        .clone();
    let providers = verified
        .iter()
        .filter(|(_, _, d, _)| *d == digest)
        .map(|(u, _, _, _)| u.clone())
        .collect();
    Some(Choice {
        release,
        providers,
        metadata: Verified {
            release_json,
            chain: chain.steps.clone(),
        },
    })
}

/// TUF step one: ask the providers for `N+1.root.json` and take, in provider order, the
/// first that verifies as the next root; repeat until none has a next one. A provider that
/// answers 404, fails, or serves a root that does not verify is asked no further.
/// Providers are asked at once ([`from_each`]), so a silent one costs one bound per step,
/// not one per provider before the honest ones.
async fn update_root(
    providers: &[Url],
    chain: &mut RootChain,
    limits: &Limits,
    report: &mut (dyn FnMut(&Url, &MetaOutcome) + Send),
) {
    let mut asked: Vec<Url> = providers.to_vec();
    while chain.steps.len() < MAX_ROOT_STEPS && !asked.is_empty() {
        let v = chain.next_version();
        let file = format!("{v}.root.json");
        let answers = from_each(&asked, &file, MAX_METADATA_BYTES, limits).await;
        let (mut keep, mut extended) = (Vec::new(), false);
        for (p, answer) in asked.iter().zip(answers) {
            if extended {
                keep.push(p.clone()); // not needed for this step
                continue;
            }
            match answer {
                Ok(bytes) => match chain.extend(&bytes) {
                    Ok(()) => {
                        tracing::info!("{p}{file}: root version {v} verified");
                        extended = true;
                        keep.push(p.clone());
                    }
                    Err(err) => report(p, &MetaOutcome::RootRejected { version: v, err }),
                },
                Err(FetchError::Verify { err, .. }) => {
                    report(p, &MetaOutcome::RootRejected { version: v, err })
                }
                Err(FetchError::Status { status: 404, .. }) => {}
                // Its release.json fetch will say what is wrong with this provider.
                Err(e) => tracing::warn!("{p}{file}: {e}"),
            }
        }
        if !extended {
            break;
        }
        asked = keep;
    }
}

/// `file` from every provider at once, each bounded as [`super::small`] is; the answers in
/// provider order. Asking in turn would let each silent provider before an honest one
/// spend its whole bound.
async fn from_each(
    providers: &[Url],
    file: &str,
    cap: usize,
    limits: &Limits,
) -> Vec<Result<Vec<u8>, FetchError>> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, p) in providers.iter().enumerate() {
        let (p, file, limits) = (p.clone(), file.to_string(), *limits);
        tasks.spawn(async move { (i, super::small(&p, &file, cap, &limits).await) });
    }
    let mut answers: Vec<Option<Result<Vec<u8>, FetchError>>> =
        providers.iter().map(|_| None).collect();
    while let Some(done) = tasks.join_next().await {
        if let Ok((i, answer)) = done {
            answers[i] = Some(answer);
        }
    }
    answers
        .into_iter()
        .zip(providers)
        .map(|(a, p)| {
            a.unwrap_or_else(|| {
                Err(FetchError::Io {
                    url: format!("{p}{file}"),
                    msg: "request task failed".into(),
                })
            })
        })
        .collect()
}

/// A verified release (with its digest and bytes), or why not: `Err(Ok)` is a transport
/// failure, `Err(Err)` a verification failure.
type Judged = Result<(Release, [u8; 32], Vec<u8>), Result<FetchError, TrustError>>;

/// One provider's `release.json` answer, judged with `root`.
fn judge(answer: Result<Vec<u8>, FetchError>, root: &Root, policy: &Policy) -> Judged {
    let bytes = answer.map_err(|e| match e {
        FetchError::Verify { err, .. } => Err(err),
        other => Ok(other),
    })?;
    let v = verify::verify_release(&bytes, root, policy).map_err(Err)?;
    Ok((v.doc, v.digest, bytes))
}

/// Every file a release needs (the one list in `phase_release::artifact`).
pub fn files(rel: &Release) -> Vec<(String, Artifact)> {
    phase_release::artifact::files(rel)
}

/// How one artifact's download ended, with what happened on the way.
pub type ArtifactResult = Result<super::Report, (super::Report, FetchError)>;

/// Write the verified metadata of `choice` into `dir` (`release.json`, `N.root.json`).
fn write_metadata(choice: &Choice, dir: &Path) -> std::io::Result<()> {
    std::fs::write(dir.join("release.json"), &choice.metadata.release_json)?;
    for (v, b) in &choice.metadata.chain {
        std::fs::write(dir.join(format!("{v}.root.json")), b)?;
    }
    Ok(())
}

/// Artifacts downloaded at once (each on its own connection and verify thread): below a
/// provider's per-client connection cap (`provider::serve::Config::per_client`, 8), so a
/// fetching node never crowds out its own metadata requests.
pub const PARALLEL_ARTIFACTS: usize = 4;

/// Download every file of `choice` into `dir`, verified, then its metadata (last: a
/// directory with `release.json` is complete and servable). Calls `report` for each
/// artifact. Returns the artifact bytes downloaded.
///
/// The smallest artifact goes first and alone: until one artifact has verified, a hostile
/// provider at the head of the list costs one artifact's attempt, not one per artifact.
/// The rest then download at once ([`PARALLEL_ARTIFACTS`]), each starting from the
/// provider list as it stands then: a provider that failed on any artifact goes last.
/// The first artifact that fails ends the download; every file not verified is removed.
pub async fn download(
    choice: &Choice,
    dir: &Path,
    limits: &Limits,
    report: &mut (dyn FnMut(&str, &ArtifactResult) + Send),
    progress: &mut (dyn FnMut(&str, u64, u64) + Send),
) -> Result<u64, FetchError> {
    use libp2p::futures::stream::{FuturesUnordered, StreamExt};
    let mut files = files(&choice.release);
    files.sort_by_key(|(_, a)| a.size);
    let shared = Shared {
        dir,
        limits,
        providers: Mutex::new(choice.providers.clone()),
        report: Mutex::new(report),
        progress: Mutex::new(progress),
    };
    let mut files = files.into_iter();
    let mut bytes = 0;
    if let Some((name, a)) = files.next() {
        shared.one(&name, &a).await?;
        bytes += a.size;
    }
    let mut waiting: Vec<(String, Artifact)> = files.rev().collect();
    let mut running = FuturesUnordered::new();
    // Files being written by the running downloads.
    let mut open: Vec<String> = Vec::new();
    loop {
        while running.len() < PARALLEL_ARTIFACTS {
            let Some((name, a)) = waiting.pop() else {
                break;
            };
            open.push(a.path.clone());
            let shared = &shared;
            running.push(async move {
                let r = shared.one(&name, &a).await;
                (a.path, a.size, r)
            });
        }
        let Some((path, size, r)) = running.next().await else {
            break;
        };
        open.retain(|p| *p != path);
        if let Err(e) = r {
            // The others stop where they are (dropping them closes their connections);
            // nothing unverified stays behind.
            drop(running);
            for path in open {
                let _ = std::fs::remove_file(dir.join(path));
            }
            return Err(e);
        }
        bytes += size;
    }
    write_metadata(choice, dir).map_err(|e| FetchError::Output {
        artifact: dir.display().to_string(),
        msg: e.to_string(),
    })?;
    Ok(bytes)
}

/// Called with each artifact's outcome; called with each artifact's progress.
type OnArtifact<'a> = &'a mut (dyn FnMut(&str, &ArtifactResult) + Send);
type OnProgress<'a> = &'a mut (dyn FnMut(&str, u64, u64) + Send);

/// What the artifacts of one download share: the provider order and the callbacks.
struct Shared<'a> {
    dir: &'a Path,
    limits: &'a Limits,
    providers: Mutex<Vec<Url>>,
    report: Mutex<OnArtifact<'a>>,
    progress: Mutex<OnProgress<'a>>,
}

impl Shared<'_> {
    /// One artifact into its file, verified, or why not (its file removed).
    async fn one(&self, name: &str, a: &Artifact) -> Result<(), FetchError> {
        let path = self.dir.join(&a.path);
        let mut f = std::fs::File::create(&path).map_err(|e| FetchError::Output {
            artifact: path.display().to_string(),
            msg: e.to_string(),
        })?;
        let providers = match self.providers.lock() {
            Ok(p) => p.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let mut progress = |done, total| {
            if let Ok(mut p) = self.progress.lock() {
                p(name, done, total)
            }
        };
        let r = super::artifact(name, a, &providers, &mut f, self.limits, &mut progress).await;
        if let Ok(mut report) = self.report.lock() {
            report(name, &r);
        }
        let rep = match &r {
            Ok(rep) | Err((rep, _)) => rep,
        };
        if let Ok(mut p) = self.providers.lock() {
            p.sort_by_key(|p| rep.failed(p));
        }
        match r {
            Ok(_) => Ok(()),
            Err((_, e)) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }
}
