//! The response side of one evaluation: arbitrary request headers, then
//! arbitrary response headers (`Set-Cookie`, the user and confirm
//! headers), through `Engine::decide`, `Engine::apply` and
//! `Engine::respond` in the mode the first byte picks — the same calls the
//! proxy and the offline evaluator make. Checks that the response side never
//! evaluates again and that a monitoring or `off` route never revokes.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use vigil_engine::{
    Decision, Enforcement, Engine, EngineConfig, ForwardedHeaders, Policy, RequestView,
    ResponseView, SessionHashKey,
};

fn headers(block: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in block.split(|b| *b == b'\n').take(64) {
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    headers
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let split = rest.windows(2).position(|w| w == b"\n\n").unwrap_or(rest.len());
    let request = headers(&rest[..split]);
    let response = headers(rest.get(split + 2..).unwrap_or_default());
    let enforcement = match mode % 3 {
        0 => Enforcement::Enforce,
        1 => Enforcement::Monitor,
        _ => Enforcement::Off,
    };
    let engine = Engine::new(EngineConfig::default(), SessionHashKey::from_bytes([0; 32]));
    let policy = Policy {
        high: vigil_engine::Action::Revoke,
        ..Policy::default()
    };
    let user = HeaderName::from_static("vigil-user");
    let confirm = HeaderName::from_static("vigil-confirm");
    for (i, now) in [1_700_000_000u64, 1_700_000_060].into_iter().enumerate() {
        let view = RequestView {
            peer: [192, 0, 2, 1 + i as u8].into(),
            headers: &request,
            now_secs: now,
            tls: Default::default(),
            facts: Default::default(),
        };
        let Ok(verdict) = engine.decide(&view, &policy, ForwardedHeaders::default()) else {
            return;
        };
        let applied = engine.apply(
            &verdict,
            &Decision {
                enforcement,
                route: "fuzz",
                reference: None,
            },
        );
        assert!(!applied.revoked || enforcement == Enforcement::Enforce);
        engine.respond(
            &verdict,
            &ResponseView {
                headers: &response,
                now_secs: now,
                user_header: Some(&user),
                confirm_header: Some(&confirm),
                app_confirms: mode & 4 != 0,
            },
            enforcement,
        );
        assert_eq!(engine.evaluations(), i as u64 + 1);
    }
});
