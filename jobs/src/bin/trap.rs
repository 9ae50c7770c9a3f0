//! `trap`: prints a line, then executes `unreachable` (a WebAssembly trap, not an exit).
fn main() {
    println!("about to trap");
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}
