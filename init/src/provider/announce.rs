//! What a provider says about itself: read from the release directory it serves.

use crate::discover::mdns::Txt;
use phase_release::doc::{Envelope, Release, MAX_METADATA_BYTES};
use std::path::Path;

/// Channel, arch and version of the release in `dir`, for announcements. Read, not
/// verified: clients verify the signed metadata; a wrong hint only costs them a request.
pub fn summary(dir: &Path) -> Result<Txt, String> {
    release(dir).map(|r| txt(&r))
}

/// What announcements say of `rel`.
pub fn txt(rel: &Release) -> Txt {
    Txt {
        channel: rel.channel.clone(),
        arch: rel.arch.clone(),
        version: rel.version,
        path: "/".into(),
    }
}

/// The signed part of `dir/release.json`, parsed (not verified: see [`summary`]).
pub fn release(dir: &Path) -> Result<Release, String> {
    let path = dir.join("release.json");
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() > MAX_METADATA_BYTES {
        return Err(format!(
            "{}: larger than {MAX_METADATA_BYTES} bytes",
            path.display()
        ));
    }
    let env: Envelope =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_value(env.signed).map_err(|e| format!("{}: {e}", path.display()))
}
