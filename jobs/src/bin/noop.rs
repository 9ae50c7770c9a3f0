//! `noop`: does nothing and exits 0; the bench's warm job (request to signed receipt).
fn main() {}
