//! Arbitrary request paths through the path normaliser and route selection.
//! The body, its input layout and its checks: `vigil_fuzz_targets::paths`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil_fuzz_targets::paths(data));
