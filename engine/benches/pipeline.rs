//! The whole per-request pipeline on warm caches: one known session, same
//! device, and a replay from another device.
#![allow(
    clippy::unwrap_used,
    reason = "bench set-up: a panic is a broken bench"
)]

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use vigil_engine::{Engine, EngineConfig, Policy, RequestView, SessionHashKey};

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";

fn headers(ua: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", "app.example.com".parse().unwrap());
    h.insert("user-agent", ua.parse().unwrap());
    h.insert(
        "accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
            .parse()
            .unwrap(),
    );
    h.insert("accept-language", "en-GB,en;q=0.9".parse().unwrap());
    h.insert(
        "cookie",
        "_ga=GA1.2.123456789.1700000000; theme=dark; session=Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5; csrftoken=abcdef0123456789"
            .parse()
            .unwrap(),
    );
    h
}

fn pipeline(c: &mut Criterion) {
    let engine = Engine::new(EngineConfig::default(), SessionHashKey::from_bytes([5; 32]));
    let policy = Policy::default();
    let peer: IpAddr = "192.0.2.44".parse().unwrap();
    let owner = headers(CHROME);
    let thief = headers(FIREFOX);
    let view = |h| RequestView {
        peer,
        headers: h,
        now_secs: 1_700_000_000,
    };
    // Warm: the session's baseline is known.
    engine.evaluate(&view(&owner), &policy).unwrap();

    let mut g = c.benchmark_group("pipeline");
    g.bench_function("known_session_same_device", |b| {
        b.iter(|| engine.evaluate(black_box(&view(&owner)), &policy).unwrap())
    });
    g.bench_function("known_session_other_device", |b| {
        b.iter(|| engine.evaluate(black_box(&view(&thief)), &policy).unwrap())
    });
    let anonymous = {
        let mut h = owner.clone();
        h.remove("cookie");
        h
    };
    g.bench_function("anonymous", |b| {
        b.iter(|| {
            engine
                .evaluate(black_box(&view(&anonymous)), &policy)
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, pipeline);

fn stages(c: &mut Criterion) {
    let h = headers(CHROME);
    let session = vigil_engine::SessionStage::new(
        vigil_engine::SessionConfig::default(),
        SessionHashKey::from_bytes([5; 32]),
    );
    let device = vigil_engine::DeviceStage::default();
    let mut g = c.benchmark_group("stage");
    g.bench_function("session", |b| {
        b.iter(|| session.identify(black_box(&h)).unwrap())
    });
    g.bench_function("device", |b| b.iter(|| device.observe(black_box(&h))));
    g.finish();
}

criterion_group!(stage_benches, stages);
criterion_main!(benches, stage_benches);
