//! Arbitrary request headers through the whole engine pipeline.
//! The body, its input layout and its checks: `vigil_fuzz_targets::request_headers`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil_fuzz_targets::request_headers(data));
