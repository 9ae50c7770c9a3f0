//! `escape`: tries to read a host file, create a file and open a TCP socket. In the sandbox
//! every attempt must fail: it prints one line per attempt and exits 0 only if all failed.
use std::io::Read;

fn main() {
    let mut escaped = false;
    match std::fs::File::open("/etc/passwd").and_then(|mut f| {
        let mut s = String::new();
        f.read_to_string(&mut s).map(|_| s)
    }) {
        Ok(_) => {
            println!("open /etc/passwd: ESCAPED");
            escaped = true;
        }
        Err(e) => println!("open /etc/passwd: denied ({:?})", e.kind()),
    }
    match std::fs::write("escape.txt", b"x") {
        Ok(()) => {
            println!("create escape.txt: ESCAPED");
            escaped = true;
        }
        Err(e) => println!("create escape.txt: denied ({:?})", e.kind()),
    }
    match std::net::TcpStream::connect("127.0.0.1:22") {
        Ok(_) => {
            println!("connect 127.0.0.1:22: ESCAPED");
            escaped = true;
        }
        Err(e) => println!("connect 127.0.0.1:22: denied ({:?})", e.kind()),
    }
    std::process::exit(if escaped { 1 } else { 0 });
}
