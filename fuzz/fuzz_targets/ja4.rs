//! Arbitrary bytes through the ClientHello parser and every JA4 form.
//! The body, its input layout and its checks: `vigil_fuzz_targets::ja4`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil_fuzz_targets::ja4(data));
