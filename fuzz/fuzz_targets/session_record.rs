//! Arbitrary bytes as a session snapshot file and as one session record.
//! The body, its input layout and its checks: `vigil_fuzz_targets::session_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil_fuzz_targets::session_record(data));
