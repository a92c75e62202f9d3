//! Arbitrary bytes as a companion cookie value and as a `Cookie` header.
//! The body, its input layout and its checks: `vigil_fuzz_targets::binding_seal`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil_fuzz_targets::binding_seal(data));
