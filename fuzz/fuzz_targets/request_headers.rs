//! Arbitrary request headers through the whole engine pipeline: session
//! (cookies, bearer tokens), device traits, scoring and decision. Each input
//! is evaluated twice so that the known-session path runs too.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use vigil_engine::{Engine, EngineConfig, Policy, RequestView, SessionHashKey};

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n').take(128) {
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    let engine = Engine::new(EngineConfig::default(), SessionHashKey::from_bytes([0; 32]));
    let view = RequestView { peer: [192, 0, 2, 1].into(), headers: &headers, now_secs: 0 };
    let _ = engine.evaluate(&view, &Policy::default());
    let _ = engine.evaluate(&view, &Policy::default());
});
