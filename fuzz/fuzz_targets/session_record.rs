//! Arbitrary bytes as a session snapshot file and as a session record from
//! a snapshot or another node:
//! decoding never panics, and whatever decodes encodes back to the same
//! bytes' meaning (decode ∘ encode is the identity on decoded states), and
//! an engine takes it in or refuses it without harm.
//!
//! Input: the record bytes; most inputs are given the right length and
//! version so that the field checks are reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_engine::{Engine, EngineConfig, SessionHashKey, SessionState};

fuzz_target!(|data: &[u8]| {
    let _ = SessionState::decode(data);
    // The same bytes as a whole snapshot file, and behind a valid header.
    let engine = Engine::new(EngineConfig::default(), SessionHashKey::from_bytes([1; 32]));
    let _ = engine.scorer().restore(data, 1_700_000_000);
    let mut snapshot = b"VIGILSS2".to_vec();
    snapshot.extend_from_slice(data);
    let _ = engine.scorer().restore(&snapshot, 1_700_000_000);
    let mut record = [0u8; SessionState::RECORD_LEN];
    for (d, s) in record.iter_mut().zip(data) {
        *d = *s;
    }
    record[16] = 1;
    if let Ok((key, state)) = SessionState::decode(&record) {
        let again = SessionState::decode(&state.encode(&key));
        assert_eq!(again, Ok((key, state)));
        let engine = Engine::new(EngineConfig::default(), SessionHashKey::from_bytes([1; 32]));
        assert_eq!(engine.scorer().import(&record, u64::from(u32::MAX)), Ok(key));
        // With "now" at the end of the record's clock nothing is clamped.
        assert_eq!(engine.scorer().session(&key), Some(state));
    }
});
