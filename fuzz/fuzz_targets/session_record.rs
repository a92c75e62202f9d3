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
    // Counts that match the body, chosen by the first bytes, so that the
    // revocation, profile and flag decoders are reached too.
    if let [a, b, c, d, body @ ..] = data {
        let sizes = [104usize, 32, 328, 20];
        let mut counts = [usize::from(*a % 3), usize::from(*b % 3), usize::from(*c % 3), usize::from(*d % 3)];
        let mut body = body.to_vec();
        let need: usize = counts.iter().zip(sizes).map(|(n, s)| n * s).sum();
        if body.len() < need {
            counts = [0; 4];
        }
        let need: usize = counts.iter().zip(sizes).map(|(n, s)| n * s).sum();
        body.truncate(need);
        let mut shaped = b"VIGILSS2".to_vec();
        for n in counts {
            shaped.extend_from_slice(&(n as u64).to_le_bytes());
        }
        shaped.extend_from_slice(&body);
        let _ = engine.scorer().restore(&shaped, 1_700_000_000);
    }
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
