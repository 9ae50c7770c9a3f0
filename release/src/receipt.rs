//! Job receipts: what a node ran and what came out, signed so that anyone can check it
//! (specified in docs/jobs.md).
//!
//! A receipt is a DSSE envelope (`payloadType` [`PAYLOAD_TYPE`], Ed25519 over DSSE's
//! pre-authentication encoding, [`pae`]) whose payload is an in-toto Statement v1: the
//! `subject` is the job's output (`stdout`, `stderr`, by SHA-256) and the predicate, of type
//! [`PREDICATE_TYPE`], binds the job (id, nonce, requester), the module and input digests,
//! the limits, the determinism settings, the outcome, the usage, the executor, the node's
//! key and the timestamps. Existing DSSE/in-toto verifiers accept it; [`verify_receipt`] is
//! the one check this project uses, and it also compares the receipt with the job that was
//! asked for and the output that was received.

use crate::canonical;
use crate::hex;
use crate::keys::Keypair;
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

/// DSSE payload type of an in-toto statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// in-toto Statement v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// Our predicate type (docs/jobs.md).
pub const PREDICATE_TYPE: &str = "https://phase-boot.dev/attestation/job-receipt/v1";
/// Largest receipt read; checked before parsing.
pub const MAX_RECEIPT_BYTES: usize = 64 * 1024;
/// Domain tag of the input digest (see [`input_sha256`]).
const INPUT_DOMAIN: &[u8] = b"phase-boot/v1/job-input\n";

/// Limits a job ran under (all enforced; see docs/jobs.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Total bytes of all linear memories and tables together.
    pub memory_bytes: u64,
    /// Fuel (roughly one unit per WebAssembly instruction).
    pub fuel: u64,
    /// Wall-clock deadline from the start of execution.
    pub timeout_ms: u64,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
}

/// How a job's non-determinism was pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Determinism {
    /// Seed of the job's only random source (WASI `random_get`), 32 bytes hex.
    pub seed: String,
    /// The virtual clock's first reading (ns since the Unix epoch) ...
    pub clock_start_ns: u64,
    /// ... and how far it advances at each reading.
    pub clock_step_ns: u64,
    pub nan_canonicalization: bool,
    pub relaxed_simd_deterministic: bool,
    /// The code generation target (baseline ISA: no host CPU features).
    pub target: String,
}

/// What a trap was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrapKind {
    Unreachable,
    StackOverflow,
    MemoryOutOfBounds,
    TableOutOfBounds,
    IndirectCallToNull,
    BadSignature,
    IntegerOverflow,
    IntegerDivisionByZero,
    BadConversionToInteger,
    /// A host function failed (e.g. WASI refused an operation in a way that traps).
    HostError,
    Other,
}

/// Why a job was not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusedReason {
    /// All workers busy and the queue full.
    QueueFull,
    /// A requested limit is above what this node allows.
    LimitsAboveNode,
    ModuleTooLarge,
    InputTooLarge,
}

/// Which output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    Exit {
        code: i32,
    },
    Trap {
        trap: TrapKind,
    },
    OutOfFuel,
    Timeout,
    MemoryLimit,
    /// The stream reached its cap: what fit was kept, and the job was stopped there.
    OutputTruncated {
        stream: Stream,
    },
    InvalidModule,
    Refused {
        reason: RefusedReason,
    },
}

impl Outcome {
    /// Stable name of the outcome kind (`exit`, `trap`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Exit { .. } => "exit",
            Outcome::Trap { .. } => "trap",
            Outcome::OutOfFuel => "out_of_fuel",
            Outcome::Timeout => "timeout",
            Outcome::MemoryLimit => "memory_limit",
            Outcome::OutputTruncated { .. } => "output_truncated",
            Outcome::InvalidModule => "invalid_module",
            Outcome::Refused { .. } => "refused",
        }
    }
}

/// The job as the requester asked for it: everything [`verify_receipt`] compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: String,
    /// Requester-chosen nonce (hex), so a receipt answers exactly one request.
    pub nonce: String,
    /// The requester's Ed25519 public key (hex), if the request named one.
    pub requester: Option<String>,
    pub module_sha256: [u8; 32],
    /// Arguments after argv\[0\] (the job sees argv\[0\] = `job`).
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin_sha256: [u8; 32],
    pub limits: Limits,
    pub seed: [u8; 32],
    pub clock_start_ns: u64,
}

impl Job {
    /// See [`input_sha256`].
    pub fn input_sha256(&self) -> [u8; 32] {
        input_sha256(&self.args, &self.env, &self.stdin_sha256)
    }
}

/// SHA-256 over `"phase-boot/v1/job-input\n"` + the canonical JSON
/// `{"args":[...],"env":[[k,v],...],"stdin_sha256":"<hex>"}`.
pub fn input_sha256(
    args: &[String],
    env: &[(String, String)],
    stdin_sha256: &[u8; 32],
) -> [u8; 32] {
    let v = serde_json::json!({
        "args": args,
        "env": env.iter().map(|(k, v)| [k, v]).collect::<Vec<_>>(),
        "stdin_sha256": hex::encode(stdin_sha256),
    });
    let mut input = INPUT_DOMAIN.to_vec();
    input.extend_from_slice(&canonical::encode(&v));
    crate::sha256(&input)
}

/// The predicate's `job` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRef {
    pub id: String,
    pub nonce: String,
    pub requester: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Digest {
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// [`input_sha256`] of args, env and stdin.
    pub sha256: String,
    pub stdin_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    pub fuel: u64,
    pub wall_us: u64,
    pub memory_peak_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Executor {
    pub name: String,
    pub version: String,
    pub wasmtime: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Ed25519 public key (hex): the key of the node's libp2p peer id.
    pub public_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timestamps {
    pub started_unix_ms: u64,
    pub finished_unix_ms: u64,
}

/// The predicate of type [`PREDICATE_TYPE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Predicate {
    pub job: JobRef,
    pub module: Digest,
    pub input: Input,
    pub limits: Limits,
    pub determinism: Determinism,
    pub outcome: Outcome,
    pub usage: Usage,
    pub executor: Executor,
    pub node: Node,
    pub timestamps: Timestamps,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    pub name: String,
    pub digest: Digest,
}

/// An in-toto Statement v1 with our predicate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub statement_type: String,
    pub subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: Predicate,
}

impl Statement {
    /// A statement about `stdout`/`stderr` with `predicate`.
    pub fn new(stdout_sha256: &[u8; 32], stderr_sha256: &[u8; 32], predicate: Predicate) -> Self {
        let subject = |name: &str, d: &[u8; 32]| Subject {
            name: name.into(),
            digest: Digest {
                sha256: hex::encode(d),
            },
        };
        Statement {
            statement_type: STATEMENT_TYPE.into(),
            subject: vec![
                subject("stdout", stdout_sha256),
                subject("stderr", stderr_sha256),
            ],
            predicate_type: PREDICATE_TYPE.into(),
            predicate,
        }
    }

    fn output_digest(&self, name: &str) -> Option<&str> {
        self.subject
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.digest.sha256.as_str())
    }
}

/// A DSSE envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Standard base64 of the payload bytes.
    pub payload: String,
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    pub signatures: Vec<DsseSignature>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DsseSignature {
    /// Our key ID: hex SHA-256 of the public key (as for release keys).
    pub keyid: String,
    /// Standard base64 of the 64-byte Ed25519 signature.
    pub sig: String,
}

/// DSSE v1 pre-authentication encoding: `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    v.extend_from_slice(payload);
    v
}

/// Sign `statement` with the node key: the receipt's bytes (JSON envelope).
pub fn sign_receipt(statement: &Statement, key: &Keypair) -> Vec<u8> {
    let value = serde_json::to_value(statement).unwrap_or(serde_json::Value::Null);
    let payload = canonical::encode(&value);
    let sig = key.sign(&pae(PAYLOAD_TYPE, &payload));
    let b64 = base64::engine::general_purpose::STANDARD;
    let env = Envelope {
        payload: b64.encode(&payload),
        payload_type: PAYLOAD_TYPE.into(),
        signatures: vec![DsseSignature {
            keyid: key.key_id(),
            sig: b64.encode(sig),
        }],
    };
    serde_json::to_vec(&env).unwrap_or_default()
}

/// Output as received, by digest; `None` = not checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutputCheck {
    pub stdout_sha256: Option<[u8; 32]>,
    pub stderr_sha256: Option<[u8; 32]>,
}

/// Why a receipt was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("receipt larger than {MAX_RECEIPT_BYTES} bytes")]
    TooLarge,
    #[error("not a DSSE envelope: {0}")]
    Envelope(String),
    #[error("payloadType is {0:?}, not {PAYLOAD_TYPE}")]
    PayloadType(String),
    #[error("payload is not an in-toto statement with our predicate: {0}")]
    Statement(String),
    #[error("node key in the predicate is not an Ed25519 public key")]
    NodeKey,
    #[error("receipt is from node {got}, not the expected {expected}")]
    WrongNode { expected: String, got: String },
    #[error("no valid signature by the node key over the payload")]
    BadSignature,
    #[error("receipt's {0} differs from the job")]
    JobMismatch(&'static str),
    #[error("receipt's {0} digest differs from the output")]
    OutputMismatch(&'static str),
}

impl ReceiptError {
    pub fn reason(&self) -> &'static str {
        match self {
            ReceiptError::TooLarge => "too_large",
            ReceiptError::Envelope(_) => "not_dsse",
            ReceiptError::PayloadType(_) => "payload_type",
            ReceiptError::Statement(_) => "not_statement",
            ReceiptError::NodeKey => "node_key",
            ReceiptError::WrongNode { .. } => "wrong_node",
            ReceiptError::BadSignature => "bad_signature",
            ReceiptError::JobMismatch(_) => "job_mismatch",
            ReceiptError::OutputMismatch(_) => "output_mismatch",
        }
    }
}

/// Parse a receipt and check its signature (by the node key it names, or by `node` when the
/// requester knows which node it asked), without comparing it with a job.
pub fn open_receipt(bytes: &[u8], node: Option<&[u8; 32]>) -> Result<Statement, ReceiptError> {
    if bytes.len() > MAX_RECEIPT_BYTES {
        return Err(ReceiptError::TooLarge);
    }
    let env: Envelope =
        serde_json::from_slice(bytes).map_err(|e| ReceiptError::Envelope(e.to_string()))?;
    if env.payload_type != PAYLOAD_TYPE {
        return Err(ReceiptError::PayloadType(env.payload_type));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = b64
        .decode(&env.payload)
        .map_err(|e| ReceiptError::Envelope(format!("payload: {e}")))?;
    let value = canonical::parse(&payload).map_err(|e| ReceiptError::Statement(e.to_string()))?;
    let st: Statement =
        serde_json::from_value(value).map_err(|e| ReceiptError::Statement(e.to_string()))?;
    if st.statement_type != STATEMENT_TYPE || st.predicate_type != PREDICATE_TYPE {
        return Err(ReceiptError::Statement(format!(
            "_type {:?}, predicateType {:?}",
            st.statement_type, st.predicate_type
        )));
    }
    let claimed = hex::decode::<32>(&st.predicate.node.public_key).ok_or(ReceiptError::NodeKey)?;
    if let Some(expected) = node {
        if *expected != claimed {
            return Err(ReceiptError::WrongNode {
                expected: hex::encode(expected),
                got: st.predicate.node.public_key.clone(),
            });
        }
    }
    let vk = VerifyingKey::from_bytes(&claimed).map_err(|_| ReceiptError::NodeKey)?;
    let keyid = crate::keys::key_id(&claimed);
    let msg = pae(&env.payload_type, &payload);
    let signed = env.signatures.iter().any(|s| {
        s.keyid == keyid
            && b64
                .decode(&s.sig)
                .ok()
                .and_then(|b| <[u8; 64]>::try_from(b.as_slice()).ok())
                .is_some_and(|b| vk.verify_strict(&msg, &Signature::from_bytes(&b)).is_ok())
    });
    if !signed {
        return Err(ReceiptError::BadSignature);
    }
    Ok(st)
}

/// The one check of a receipt: signed by the node (`node`, or the key it names), about
/// exactly `job`, with the output received. Returns the verified statement (outcome, usage,
/// timestamps are what the node reports).
pub fn verify_receipt(
    bytes: &[u8],
    job: &Job,
    output: &OutputCheck,
    node: Option<&[u8; 32]>,
) -> Result<Statement, ReceiptError> {
    let st = open_receipt(bytes, node)?;
    let p = &st.predicate;
    let same = |field: &'static str, ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(ReceiptError::JobMismatch(field))
        }
    };
    same("job.id", p.job.id == job.id)?;
    same("job.nonce", p.job.nonce == job.nonce)?;
    same("job.requester", p.job.requester == job.requester)?;
    same(
        "module.sha256",
        p.module.sha256 == hex::encode(&job.module_sha256),
    )?;
    same(
        "input.sha256",
        p.input.sha256 == hex::encode(&job.input_sha256()),
    )?;
    same(
        "input.stdin_sha256",
        p.input.stdin_sha256 == hex::encode(&job.stdin_sha256),
    )?;
    same("limits", p.limits == job.limits)?;
    same(
        "determinism.seed",
        p.determinism.seed == hex::encode(&job.seed),
    )?;
    same(
        "determinism.clock_start_ns",
        p.determinism.clock_start_ns == job.clock_start_ns,
    )?;
    for (name, field, want) in [
        ("stdout", "stdout", output.stdout_sha256),
        ("stderr", "stderr", output.stderr_sha256),
    ] {
        let got = st
            .output_digest(name)
            .ok_or(ReceiptError::Statement(format!("no {name} subject")))?;
        if want.is_some_and(|w| hex::encode(&w) != got) {
            return Err(ReceiptError::OutputMismatch(field));
        }
    }
    if st.subject.len() != 2 {
        return Err(ReceiptError::Statement(
            "subject is not [stdout, stderr]".into(),
        ));
    }
    Ok(st)
}

#[cfg(test)]
#[path = "receipt_tests.rs"]
mod tests;
