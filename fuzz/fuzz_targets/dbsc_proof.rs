//! Arbitrary bytes as a DBSC proof through the proxy's verifiers.
//! The body, its input layout and its checks: `vigil_fuzz_targets::dbsc_proof`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil_fuzz_targets::dbsc_proof(data));
