//! `spin`: an infinite loop (no host calls). Only the executor's deadline or fuel stops it.
fn main() {
    let mut x = 0u64;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}
