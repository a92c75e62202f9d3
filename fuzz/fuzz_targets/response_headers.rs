//! Arbitrary request, then response headers through decide, apply and respond.
//! The body, its input layout and its checks: `vigil_fuzz_targets::response_headers`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil_fuzz_targets::response_headers(data));
