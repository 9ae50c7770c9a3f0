//! Artifact streams: size and SHA-256 enforced as bytes arrive, so an endless or
//! oversized stream is cut off at the first byte past the declared size, and nothing is
//! used before [`ArtifactVerifier::finish`] says it matches.

use crate::doc::Artifact;
use crate::verify::TrustError;
use sha2::{Digest, Sha256};

pub struct ArtifactVerifier {
    name: String,
    declared: u64,
    expected: [u8; 32],
    seen: u64,
    hash: Sha256,
}

impl ArtifactVerifier {
    pub fn new(name: &str, a: &Artifact) -> Result<Self, TrustError> {
        let expected =
            crate::hex::decode::<32>(&a.sha256).ok_or_else(|| TrustError::BadArtifactPath {
                name: name.into(),
                path: a.path.clone(),
            })?;
        Ok(ArtifactVerifier {
            name: name.into(),
            declared: a.size,
            expected,
            seen: 0,
            hash: Sha256::new(),
        })
    }

    /// Feed the next chunk. Fails as soon as more bytes arrive than were declared.
    pub fn update(&mut self, chunk: &[u8]) -> Result<(), TrustError> {
        let n = chunk.len() as u64;
        if self.seen + n > self.declared {
            return Err(TrustError::ArtifactTooLong {
                name: self.name.clone(),
                declared: self.declared,
            });
        }
        self.seen += n;
        self.hash.update(chunk);
        Ok(())
    }

    pub fn bytes_seen(&self) -> u64 {
        self.seen
    }

    /// The stream ended: it must be exactly the declared size and hash.
    pub fn finish(self) -> Result<(), TrustError> {
        if self.seen != self.declared {
            return Err(TrustError::ArtifactSize {
                name: self.name,
                expected: self.declared,
                got: self.seen,
            });
        }
        let got: [u8; 32] = self.hash.finalize().into();
        if got != self.expected {
            return Err(TrustError::ArtifactHash { name: self.name });
        }
        Ok(())
    }
}

/// Read `r` to its end through a verifier, in 256 KiB chunks; returns the verified size.
pub fn verify_reader(
    name: &str,
    a: &Artifact,
    mut r: impl std::io::Read,
) -> Result<u64, StreamError> {
    let mut v = ArtifactVerifier::new(name, a)?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StreamError::Io(e.to_string())),
        };
        v.update(&buf[..n])?;
    }
    let seen = v.bytes_seen();
    v.finish()?;
    Ok(seen)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error("read failed: {0}")]
    Io(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(data: &[u8]) -> Artifact {
        Artifact {
            path: "x".into(),
            size: data.len() as u64,
            sha256: crate::hex::encode(&crate::sha256(data)),
            verity: None,
        }
    }

    #[test]
    fn exact_stream_verifies() {
        let data = vec![7u8; 1_000_000];
        assert_eq!(
            verify_reader("k", &artifact(&data), &data[..]),
            Ok(1_000_000)
        );
    }

    #[test]
    fn endless_stream_is_cut_off_at_declared_size() {
        let a = artifact(b"hello");
        // An endless reader: the verifier must stop it, not read forever.
        let endless = std::io::repeat(b'h');
        let e = verify_reader("kernel", &a, endless).unwrap_err();
        assert_eq!(
            e,
            StreamError::Trust(TrustError::ArtifactTooLong {
                name: "kernel".into(),
                declared: 5
            })
        );
    }

    #[test]
    fn short_and_altered_streams_rejected() {
        let a = artifact(b"hello");
        assert!(matches!(
            verify_reader("k", &a, &b"hell"[..]),
            Err(StreamError::Trust(TrustError::ArtifactSize { got: 4, .. }))
        ));
        assert!(matches!(
            verify_reader("k", &a, &b"jello"[..]),
            Err(StreamError::Trust(TrustError::ArtifactHash { .. }))
        ));
    }
}
