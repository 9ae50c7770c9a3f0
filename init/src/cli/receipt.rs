//! `phase receipt verify`: its options (the job's description read as `phase job run` reads
//! it, [`JobDesc`]), and the check itself in `node::job_cli`.

use super::job::{job_args, key32, JobDesc};
use super::{parsed, subcommand, Args, Parsed, Sub};
use std::path::PathBuf;

const RECEIPT_SUBS: &[Sub] = &[Sub {
    name: "verify",
    synopsis: "RECEIPT --module MODULE.wasm [OPTIONS] [-- ARGS...]",
    about: "check a receipt's signature, module, input and output",
    run: verify,
}];

pub const VERIFY_USAGE: &str = "\
Usage: phase receipt verify RECEIPT --module MODULE.wasm [OPTIONS] [-- ARGS...]

Checks the receipt's DSSE signature (by the node key it names, or --node) and that it is
about this module, these ARGS, env and stdin, and this output. Job identity and limits not
given are taken from the receipt. Prints one JSON line; exit 0 if verified, 1 if not (the
reason is printed), 2 on a usage error.
  --stdin FILE  --stdout FILE  --stderr FILE
                         the input given and the output received (stdin default: empty;
                         outputs not given are not compared)
  --env K=V              the job's environment (repeatable)
  --node HEX             the node public key the job was sent to
  --job-id ID  --nonce HEX  --requester HEX
  --reexec               run the job again here (same seed, clock and limits) and require
                         the same outcome, fuel and output digests
  --state-dir DIR        for --reexec's compile cache (default /var/lib/phase)";

/// `phase receipt verify`, parsed.
#[derive(Debug, PartialEq)]
pub struct VerifyOpts {
    pub receipt: PathBuf,
    pub module: PathBuf,
    /// What the caller says the job was; identity not given is taken from the receipt.
    pub job: JobDesc,
    pub stdin: Option<PathBuf>,
    pub stdout: Option<PathBuf>,
    pub stderr: Option<PathBuf>,
    /// The node public key the job was sent to.
    pub node: Option<[u8; 32]>,
    pub reexec: bool,
    pub state_dir: Option<PathBuf>,
}

pub fn parse_verify(args: Args) -> Result<Parsed<VerifyOpts>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut job = JobDesc::default();
    let (mut receipt, mut module, mut state_dir) = (None, None, None);
    let (mut stdin, mut stdout, mut stderr) = (None, None, None);
    let (mut node, mut reexec) = (None, false);
    loop {
        if let Some(a) = job_args(&mut p)? {
            job.args = a;
            break;
        }
        let Some(arg) = p.next()? else { break };
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("module") => module = Some(PathBuf::from(p.value()?)),
            Long("stdin") => stdin = Some(PathBuf::from(p.value()?)),
            Long("stdout") => stdout = Some(PathBuf::from(p.value()?)),
            Long("stderr") => stderr = Some(PathBuf::from(p.value()?)),
            Long("node") => node = Some(p.value()?.parse_with(key32)?),
            Long("reexec") => reexec = true,
            Long("state-dir") => state_dir = Some(PathBuf::from(p.value()?)),
            Long(name) => {
                let name = name.to_owned();
                if !job.take(&name, &mut p)? {
                    return Err(lexopt::Error::UnexpectedOption(format!("--{name}")));
                }
            }
            Value(v) if receipt.is_none() => receipt = Some(PathBuf::from(v)),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Parsed::Run(VerifyOpts {
        receipt: receipt.ok_or("one RECEIPT is required")?,
        module: module.ok_or("--module MODULE.wasm is required")?,
        job,
        stdin,
        stdout,
        stderr,
        node,
        reexec,
        state_dir,
    }))
}

/// `phase receipt ...`
pub fn receipt(args: Args) -> i32 {
    subcommand(
        "receipt",
        "Job receipts: DSSE envelopes signed by the node that ran the job (docs/jobs.md).",
        RECEIPT_SUBS,
        args,
    )
}

fn verify(args: Args) -> i32 {
    parsed(
        "receipt verify",
        VERIFY_USAGE,
        parse_verify(args),
        crate::node::job_cli::verify,
    )
}

#[cfg(test)]
mod tests;
