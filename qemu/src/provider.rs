//! A release provider on this machine's loopback for boot tests: `phase provider serve`
//! ([`crate::host_phase`])
//! on `127.0.0.1`, reached by a guest through [`crate::Vm::user_net_to`].

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running server; killed when dropped.
pub struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `phase provider serve DIR --listen 127.0.0.1:0`: the server and the port it printed.
pub fn serve(dir: &Path) -> std::io::Result<(Server, u16)> {
    let mut c = Command::new(crate::host_phase())
        .args(["provider", "serve"])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let out = c.stdout.take().ok_or(std::io::ErrorKind::BrokenPipe)?;
    let server = Server(c);
    let mut line = String::new();
    std::io::BufReader::new(out).read_line(&mut line)?;
    let port = line
        .trim()
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("phase provider serve printed {line:?}, not its URL"),
            )
        })?;
    Ok((server, port))
}
