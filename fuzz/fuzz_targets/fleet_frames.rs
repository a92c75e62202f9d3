//! Arbitrary bytes as a line of the fleet sync stream and as a node's
//! event batch. The body, its input layout and its checks:
//! `vigil_fuzz_targets::fleet_frames`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil_fuzz_targets::fleet_frames(data));
