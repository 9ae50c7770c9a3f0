//! `probe`: prints what a job could use to be non-deterministic: WASI's random bytes, wall and
//! monotonic clocks, a NaN's bit pattern, and a HashMap's iteration order. Under the executor
//! all of it comes from the job's seed and virtual clock, so two runs print the same bytes.
use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    fn random_get(buf: *mut u8, len: usize) -> u16;
}

fn random_bytes() -> [u8; 16] {
    let mut buf = [0u8; 16];
    #[cfg(target_arch = "wasm32")]
    // SAFETY: the import writes exactly `len` bytes into `buf`.
    unsafe {
        random_get(buf.as_mut_ptr(), buf.len());
    }
    buf
}

fn main() {
    let r = random_bytes();
    let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
    println!("random {hex}");
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => println!("wall {}", d.as_nanos()),
        Err(_) => println!("wall before epoch"),
    }
    let t0 = Instant::now();
    println!("monotonic elapsed {}", t0.elapsed().as_nanos());
    let zero = std::hint::black_box(0.0f64);
    let nan = (zero / zero) * std::hint::black_box(-1.0);
    println!("nan bits {:016x}", nan.to_bits());
    let map: HashMap<u32, u32> = (0..8).map(|i| (i, i)).collect();
    let order: Vec<u32> = map.keys().copied().collect();
    println!("hashmap order {order:?}");
}
