//! Canonical JSON: parsing arbitrary bytes never panics, and whatever parses re-encodes to
//! exactly the input (the canonical property).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = phase_release::canonical::parse(data) {
        assert_eq!(phase_release::canonical::encode(&v), data);
    }
});
