//! The job protocol `/phase/job/1` on the wire: request-response over the node's libp2p host,
//! each message one CBOR value, with size caps on both sides.
//!
//! A request carries the module (or only its SHA-256, when the node may have it cached), args,
//! env, stdin, the limits asked for, and the requester's Ed25519 public key and signature. The
//! signature covers [`SignedJob`] (module and input by digest, the addressed node, limits, the
//! issue time) as canonical JSON under the domain tag `phase-boot/v1/job-request\n`
//! (`phase_release::doc::signing_input`), so it can be replayed neither as another document
//! type nor to another node. [`check`] is the node's pure validation, in this order: sizes
//! (`too_large`), form (`bad_request`), signature (`bad_signature`), clock skew and digests
//! (`bad_request`). Admission (allowlist, rate) comes after, in [`super::admission`].
//!
//! A response is the outcome, stdout, stderr and the signed receipt, or an explicit refusal
//! with a stable [`Refusal`] reason: a node never answers by dropping the stream (except for a
//! frame above the codec's hard cap, [`MAX_REQUEST_FRAME`], which cannot be read at all).

use phase_release::hex;
use phase_release::keys::Keypair;
use phase_release::receipt::{Limits, Outcome};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// The protocol name (versioned: an incompatible change is `/phase/job/2`).
pub const PROTOCOL: &str = "/phase/job/1";
/// The document type of the request signature (`phase-boot/v1/job-request\n` + canonical JSON).
pub const SIGNED_TYPE: &str = "job-request";
/// Largest module a request may carry.
pub const MAX_MODULE_BYTES: usize = 8 << 20;
/// Largest stdin + args + env of a request.
pub const MAX_INPUT_BYTES: usize = 1 << 20;
/// Largest job id.
pub const MAX_ID_BYTES: usize = 128;
/// Most args or env entries.
pub const MAX_ITEMS: usize = 1024;
/// The codec's hard cap on a request frame: above the policy caps, so a request somewhat too
/// large is still read and refused with `too_large`.
pub const MAX_REQUEST_FRAME: u64 = 16 << 20;
/// The codec's cap on a response: the node's largest stdout (4 MiB) and stderr (1 MiB) caps,
/// the receipt (64 KiB), and CBOR framing.
pub const MAX_RESPONSE_FRAME: u64 = 6 << 20;
/// How far a request's issue time may be from the node's clock.
pub const MAX_SKEW_MS: u64 = 5 * 60 * 1000;

/// What the requester signs: everything that determines the job, by digest, and whom it is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedJob {
    /// The requester's name for the job (bound into the receipt).
    pub id: String,
    /// Hex (16 to 64 characters), chosen by the requester: bound into the receipt and the
    /// seed of the job's random source.
    pub nonce: String,
    /// The public key (hex) of the node the request is addressed to.
    pub node: String,
    pub module_sha256: String,
    /// `phase_release::receipt::input_sha256` of args, env and stdin.
    pub input_sha256: String,
    pub limits: Limits,
    pub issued_unix_ms: u64,
}

/// One job request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRequest {
    pub job: SignedJob,
    /// The module; `None` asks the node to use its cached copy of `job.module_sha256`.
    pub module: Option<ByteBuf>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin: ByteBuf,
    /// The requester's Ed25519 public key (32 bytes).
    pub requester: ByteBuf,
    /// Ed25519 over the signing input of `job` (64 bytes).
    pub signature: ByteBuf,
}

/// One answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobResponse {
    /// The job ran (whatever its outcome); `receipt` is the DSSE envelope signed by the node.
    Done {
        outcome: Outcome,
        stdout: ByteBuf,
        stderr: ByteBuf,
        receipt: ByteBuf,
    },
    /// The job was not run.
    Refused {
        reason: Refusal,
        /// For `rate_limited`: when a token is next available.
        retry_after_ms: Option<u64>,
    },
}

/// Why a node did not run a job. Stable snake_case names on the wire and in `job.done`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    #[error("the requester's key is not on this node's allowlist")]
    NotAllowed,
    #[error("the requester sent more jobs than its rate allows")]
    RateLimited,
    #[error("every worker is busy and the queue is full")]
    Busy,
    #[error("the module or the input is larger than the node accepts")]
    TooLarge,
    #[error("the request signature does not verify")]
    BadSignature,
    #[error("the request is malformed, addressed to another node, stale, or its digests differ")]
    BadRequest,
    #[error("only the module digest was sent and this node does not have that module")]
    UnknownModule,
    #[error("a requested limit is above what this node allows")]
    LimitsAboveNode,
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NotAllowed => "not_allowed",
            Refusal::RateLimited => "rate_limited",
            Refusal::Busy => "busy",
            Refusal::TooLarge => "too_large",
            Refusal::BadSignature => "bad_signature",
            Refusal::BadRequest => "bad_request",
            Refusal::UnknownModule => "unknown_module",
            Refusal::LimitsAboveNode => "limits_above_node",
        }
    }
}

/// The bytes the requester signs.
pub fn signing_input(job: &SignedJob) -> Vec<u8> {
    let value = serde_json::to_value(job).unwrap_or(serde_json::Value::Null);
    phase_release::doc::signing_input(SIGNED_TYPE, &phase_release::canonical::encode(&value))
}

/// What a requester puts in a request (before signing).
pub struct Draft<'a> {
    pub id: &'a str,
    pub nonce: &'a str,
    /// The addressed node's public key.
    pub node: &'a [u8; 32],
    pub module: &'a [u8],
    /// Send the module's bytes (or only its digest).
    pub send_module: bool,
    pub args: &'a [String],
    pub env: &'a [(String, String)],
    pub stdin: &'a [u8],
    pub limits: Limits,
    pub issued_unix_ms: u64,
}

/// Build and sign a request with the requester's key.
pub fn sign(d: &Draft, key: &Keypair) -> JobRequest {
    let stdin_sha256 = phase_release::sha256(d.stdin);
    let job = SignedJob {
        id: d.id.into(),
        nonce: d.nonce.into(),
        node: hex::encode(d.node),
        module_sha256: hex::encode(&phase_release::sha256(d.module)),
        input_sha256: hex::encode(&phase_release::receipt::input_sha256(
            d.args,
            d.env,
            &stdin_sha256,
        )),
        limits: d.limits,
        issued_unix_ms: d.issued_unix_ms,
    };
    let signature = key.sign(&signing_input(&job));
    JobRequest {
        job,
        module: d.send_module.then(|| ByteBuf::from(d.module.to_vec())),
        args: d.args.to_vec(),
        env: d.env.to_vec(),
        stdin: ByteBuf::from(d.stdin.to_vec()),
        requester: ByteBuf::from(key.public().bytes().unwrap_or_default().to_vec()),
        signature: ByteBuf::from(signature.to_vec()),
    }
}

/// A request that passed [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub requester: [u8; 32],
    pub module_sha256: [u8; 32],
}

fn input_len(r: &JobRequest) -> usize {
    r.stdin.len()
        + r.args.iter().map(|a| a.len() + 1).sum::<usize>()
        + r.env
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum::<usize>()
}

fn is_hex(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len()) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The node's validation of a request addressed to `node` at `now_ms` (pure; see the module
/// docs for the order of checks).
pub fn check(r: &JobRequest, node: &[u8; 32], now_ms: u64) -> Result<Checked, Refusal> {
    if r.module
        .as_ref()
        .is_some_and(|m| m.len() > MAX_MODULE_BYTES)
        || input_len(r) > MAX_INPUT_BYTES
        || r.args.len() > MAX_ITEMS
        || r.env.len() > MAX_ITEMS
    {
        return Err(Refusal::TooLarge);
    }
    let j = &r.job;
    let id_ok =
        !j.id.is_empty() && j.id.len() <= MAX_ID_BYTES && j.id.chars().all(|c| !c.is_control());
    let requester: Option<[u8; 32]> = r.requester.as_slice().try_into().ok();
    let signature: Option<[u8; 64]> = r.signature.as_slice().try_into().ok();
    let module_sha256 = hex::decode::<32>(&j.module_sha256);
    let (Some(requester), Some(signature), Some(module_sha256), true, true, true) = (
        requester,
        signature,
        module_sha256,
        id_ok,
        is_hex(&j.nonce, 16, 64),
        is_hex(&j.input_sha256, 64, 64),
    ) else {
        return Err(Refusal::BadRequest);
    };
    if hex::decode::<32>(&j.node).as_ref() != Some(node) {
        return Err(Refusal::BadRequest);
    }
    let key =
        ed25519_dalek::VerifyingKey::from_bytes(&requester).map_err(|_| Refusal::BadSignature)?;
    key.verify_strict(
        &signing_input(j),
        &ed25519_dalek::Signature::from_bytes(&signature),
    )
    .map_err(|_| Refusal::BadSignature)?;
    if j.issued_unix_ms.abs_diff(now_ms) > MAX_SKEW_MS {
        return Err(Refusal::BadRequest);
    }
    if let Some(m) = &r.module {
        if phase_release::sha256(m) != module_sha256 {
            return Err(Refusal::BadRequest);
        }
    }
    let input =
        phase_release::receipt::input_sha256(&r.args, &r.env, &phase_release::sha256(&r.stdin));
    if hex::encode(&input) != j.input_sha256 {
        return Err(Refusal::BadRequest);
    }
    Ok(Checked {
        requester,
        module_sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: [u8; 32] = [7; 32];
    const NOW: u64 = 1_800_000_000_000;

    fn limits() -> Limits {
        Limits {
            memory_bytes: 1 << 20,
            fuel: 1000,
            timeout_ms: 100,
            stdout_bytes: 10,
            stderr_bytes: 10,
        }
    }

    fn request(key: &Keypair) -> JobRequest {
        let args = vec!["a".to_string()];
        let env = vec![("K".to_string(), "V".to_string())];
        sign(
            &Draft {
                id: "job-1",
                nonce: "00112233445566778899aabbccddeeff",
                node: &NODE,
                module: b"\0asm module",
                send_module: true,
                args: &args,
                env: &env,
                stdin: b"in",
                limits: limits(),
                issued_unix_ms: NOW,
            },
            key,
        )
    }

    #[test]
    fn a_signed_request_checks_and_names_its_requester() {
        let key = Keypair::from_seed(&[1; 32]);
        let c = check(&request(&key), &NODE, NOW + 1000).unwrap();
        assert_eq!(Some(c.requester), key.public().bytes());
        assert_eq!(c.module_sha256, phase_release::sha256(b"\0asm module"));
        // The digest alone is a valid request too.
        let mut r = request(&key);
        r.module = None;
        assert!(check(&r, &NODE, NOW).is_ok());
    }

    /// Every tampering, each with the reason it is refused for.
    #[test]
    fn every_tampering_is_refused_with_its_reason() {
        let key = Keypair::from_seed(&[1; 32]);
        let other = Keypair::from_seed(&[2; 32]);
        type Tamper = fn(&mut JobRequest, &Keypair);
        let cases: &[(&str, Tamper, Refusal)] = &[
            (
                "module too large",
                |r, _| r.module = Some(ByteBuf::from(vec![0; MAX_MODULE_BYTES + 1])),
                Refusal::TooLarge,
            ),
            (
                "stdin too large",
                |r, _| r.stdin = ByteBuf::from(vec![0; MAX_INPUT_BYTES + 1]),
                Refusal::TooLarge,
            ),
            (
                "too many args",
                |r, _| r.args = vec![String::new(); MAX_ITEMS + 1],
                Refusal::TooLarge,
            ),
            (
                "short key",
                |r, _| r.requester = ByteBuf::from(vec![1; 31]),
                Refusal::BadRequest,
            ),
            (
                "short signature",
                |r, _| r.signature = ByteBuf::from(vec![1; 63]),
                Refusal::BadRequest,
            ),
            ("empty id", |r, _| r.job.id.clear(), Refusal::BadRequest),
            (
                "control char in id",
                |r, _| r.job.id = "a\nPHASE-EVENT".into(),
                Refusal::BadRequest,
            ),
            (
                "short nonce",
                |r, _| r.job.nonce = "00".into(),
                Refusal::BadRequest,
            ),
            (
                "uppercase nonce",
                |r, _| r.job.nonce = "00112233445566778899AABBCCDDEEFF".into(),
                Refusal::BadRequest,
            ),
            (
                "module digest not hex",
                |r, _| r.job.module_sha256 = "x".into(),
                Refusal::BadRequest,
            ),
            (
                "another node",
                |r, _| r.job.node = hex::encode(&[8; 32]),
                Refusal::BadRequest,
            ),
            (
                "altered signed field",
                |r, _| r.job.limits.fuel += 1,
                Refusal::BadSignature,
            ),
            (
                "signed by another key",
                |r, o| r.requester = ByteBuf::from(o.public().bytes().unwrap().to_vec()),
                Refusal::BadSignature,
            ),
            (
                "flipped signature bit",
                |r, _| r.signature[0] ^= 1,
                Refusal::BadSignature,
            ),
            (
                "module swapped",
                |r, _| r.module = Some(ByteBuf::from(b"\0asm other".to_vec())),
                Refusal::BadRequest,
            ),
            (
                "args swapped",
                |r, _| r.args = vec!["b".into()],
                Refusal::BadRequest,
            ),
            ("env swapped", |r, _| r.env.clear(), Refusal::BadRequest),
            (
                "stdin swapped",
                |r, _| r.stdin = ByteBuf::from(b"IN".to_vec()),
                Refusal::BadRequest,
            ),
        ];
        for (what, tamper, want) in cases {
            let mut r = request(&key);
            tamper(&mut r, &other);
            assert_eq!(check(&r, &NODE, NOW), Err(*want), "{what}");
        }
        // Stale or from the future, beyond the skew.
        let r = request(&key);
        assert_eq!(
            check(&r, &NODE, NOW + MAX_SKEW_MS + 1),
            Err(Refusal::BadRequest)
        );
        assert_eq!(
            check(&r, &NODE, NOW - MAX_SKEW_MS - 1),
            Err(Refusal::BadRequest)
        );
        assert!(check(&r, &NODE, NOW + MAX_SKEW_MS).is_ok());
    }

    /// The signature is domain separated: the same canonical bytes under another document
    /// type's tag do not verify.
    #[test]
    fn signature_is_domain_separated() {
        let key = Keypair::from_seed(&[1; 32]);
        let mut r = request(&key);
        let value = serde_json::to_value(&r.job).unwrap();
        let canon = phase_release::canonical::encode(&value);
        let wrong = phase_release::doc::signing_input("release", &canon);
        r.signature = ByteBuf::from(key.sign(&wrong).to_vec());
        assert_eq!(check(&r, &NODE, NOW), Err(Refusal::BadSignature));
        assert!(signing_input(&r.job).starts_with(b"phase-boot/v1/job-request\n"));
    }

    #[test]
    fn messages_round_trip_through_cbor_with_byte_strings() {
        let key = Keypair::from_seed(&[1; 32]);
        let r = request(&key);
        let buf = cbor4ii::serde::to_vec(Vec::new(), &r).unwrap();
        // The module is one byte string (not an array of integers).
        assert!(buf.len() < 600, "{} bytes", buf.len());
        let back: JobRequest = cbor4ii::serde::from_slice(&buf).unwrap();
        assert!(check(&back, &NODE, NOW).is_ok());
        let responses = [
            JobResponse::Done {
                outcome: Outcome::Exit { code: 3 },
                stdout: ByteBuf::from(b"out".to_vec()),
                stderr: ByteBuf::new(),
                receipt: ByteBuf::from(b"{}".to_vec()),
            },
            JobResponse::Refused {
                reason: Refusal::RateLimited,
                retry_after_ms: Some(100),
            },
        ];
        for resp in responses {
            let buf = cbor4ii::serde::to_vec(Vec::new(), &resp).unwrap();
            let back: JobResponse = cbor4ii::serde::from_slice(&buf).unwrap();
            assert_eq!(back, resp);
        }
    }

    #[test]
    fn refusal_reasons_are_the_wire_names() {
        let all = [
            Refusal::NotAllowed,
            Refusal::RateLimited,
            Refusal::Busy,
            Refusal::TooLarge,
            Refusal::BadSignature,
            Refusal::BadRequest,
            Refusal::UnknownModule,
            Refusal::LimitsAboveNode,
        ];
        for r in all {
            assert_eq!(serde_json::to_value(r).unwrap(), r.reason());
        }
    }
}
