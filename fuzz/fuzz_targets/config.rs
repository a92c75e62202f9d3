//! Arbitrary bytes through the proxy's config parser and the CIDR-list parser.
//! The body, its input layout and its checks: `vigil_fuzz_targets::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil_fuzz_targets::config(data));
