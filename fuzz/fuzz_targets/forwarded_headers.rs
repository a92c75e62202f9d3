//! Arbitrary Forwarded / X-Forwarded-For lines through the client IP stage.
//! The body, its input layout and its checks: `vigil_fuzz_targets::forwarded_headers`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil_fuzz_targets::forwarded_headers(data));
