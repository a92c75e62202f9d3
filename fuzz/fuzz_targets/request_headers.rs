//! Arbitrary request headers through the whole engine pipeline: session
//! (cookies, bearer tokens), device traits (User-Agent patterns, client
//! hints, a trusted balancer's `x-ja4`/`x-ja3` headers), scoring and
//! decision. Each input is evaluated twice so that the known-session path
//! runs too.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use vigil_engine::{
    ClientIpConfig, Engine, EngineConfig, Policy, RequestView, SessionHashKey, TlsFingerprint,
    TrustedProxies, UpstreamFingerprints,
};

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n').take(128) {
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    let mut config = EngineConfig::default();
    // The peer is a trusted balancer whose fingerprint headers are read.
    config.client_ip = ClientIpConfig {
        trusted: TrustedProxies::new(vec![("cdn".into(), vec!["192.0.2.0/24".parse().unwrap()])])
            .unwrap(),
        ..ClientIpConfig::default()
    };
    config.upstream_fingerprints = UpstreamFingerprints {
        ja4_header: Some(HeaderName::from_static("x-ja4")),
        ja3_header: Some(HeaderName::from_static("x-ja3")),
        trusted_sets: vec!["cdn".into()],
    };
    let engine = Engine::new(config, SessionHashKey::from_bytes([0; 32]));
    let view = RequestView {
        peer: [192, 0, 2, 1].into(),
        headers: &headers,
        now_secs: 0,
        tls: TlsFingerprint::captured("t13d1516h2_8daaf6152771_02713d6af862".parse().unwrap()),
        facts: Default::default(),
    };
    let _ = engine.evaluate(&view, &Policy::default());
    let _ = engine.evaluate(&view, &Policy::default());
});
