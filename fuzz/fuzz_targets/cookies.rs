//! Arbitrary Cookie and Authorization header sets through the session stage alone.
//! The body, its input layout and its checks: `vigil_fuzz_targets::cookies`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil_fuzz_targets::cookies(data));
