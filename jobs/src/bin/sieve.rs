//! `sieve N`: counts the primes below N (default 10,000,000) with a sieve of Eratosthenes and
//! prints the count and a checksum of them. The CPU-heavy job of the bench (also built natively
//! to compare).
fn main() {
    let n: usize = match std::env::args().nth(1) {
        Some(a) => match a.parse() {
            Ok(n) => n,
            Err(_) => {
                eprintln!("sieve: N must be a number, got {a:?}");
                std::process::exit(2);
            }
        },
        None => 10_000_000,
    };
    let mut composite = vec![false; n.max(2)];
    let mut count = 0u64;
    let mut checksum = 0u64;
    for i in 2..n {
        if composite[i] {
            continue;
        }
        count += 1;
        checksum = checksum.wrapping_mul(31).wrapping_add(i as u64);
        let mut j = i.saturating_mul(i);
        while j < n {
            composite[j] = true;
            j += i;
        }
    }
    println!("primes below {n}: {count} (checksum {checksum:016x})");
}
