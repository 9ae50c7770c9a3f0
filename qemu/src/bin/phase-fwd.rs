//! `phase-fwd HOST:PORT`: relay stdin/stdout to a TCP connection. QEMU user networking
//! runs it per guest connection (`guestfwd=tcp:10.0.2.100:8080-cmd:phase-fwd 127.0.0.1:N`),
//! which is how a guest reaches a test server on 127.0.0.1 and nothing else.

use std::io::{Read, Write};
use std::net::TcpStream;

fn main() {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: phase-fwd HOST:PORT");
        std::process::exit(2);
    };
    let Ok(sock) = TcpStream::connect(&addr) else {
        std::process::exit(1);
    };
    let Ok(mut to_sock) = sock.try_clone() else {
        std::process::exit(1);
    };
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 65536];
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 || to_sock.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to_sock.shutdown(std::net::Shutdown::Write);
    });
    let mut from_sock = sock;
    let mut stdout = std::io::stdout().lock();
    let mut buf = [0u8; 65536];
    while let Ok(n) = from_sock.read(&mut buf) {
        if n == 0 || stdout.write_all(&buf[..n]).is_err() || stdout.flush().is_err() {
            break;
        }
    }
}
