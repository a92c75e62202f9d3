//! The rotating binding's cost per request (docs/bound-sessions.md): the
//! companion read from a real browser's `Cookie` header and unsealed (the
//! current seal format 3, and the formats 2 and 1 that still open), a
//! forged one refused, and the whole pipeline for a bound session against
//! the same request with the binding off.
#![allow(
    clippy::unwrap_used,
    reason = "bench set-up: a panic is a broken bench"
)]

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use vigil_engine::binding::{BindingConfig, Companion, SameSite, Scope, Seal, Sealer};
use vigil_engine::{
    Enforcement, Engine, EngineConfig, Policy, RequestView, ResponseView, SessionHashKey,
};

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const SESSION: &str = "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5";

fn headers(companion: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("user-agent", CHROME.parse().unwrap());
    h.insert("accept-language", "en-GB,en;q=0.9".parse().unwrap());
    let bind = companion.map_or(String::new(), |c| format!("; __Host-vigil_bind={c}"));
    h.insert(
        "cookie",
        format!("_ga=GA1.2.123456789.1700000000; theme=dark; session={SESSION}{bind}; csrftoken=abcdef0123456789")
            .parse()
            .unwrap(),
    );
    h
}

fn seal(c: &mut Criterion) {
    let key = SessionHashKey::from_bytes([5; 32]);
    let sealer = Sealer::new(&key, None);
    let engine = Engine::new(EngineConfig::default(), key);
    let value = sealer
        .seal(&Seal {
            session: engine
                .key_for_cookie("session", SESSION.as_bytes())
                .unwrap(),
            generation: 12,
            nonce: 0x1234_5678,
            issued_at: 1_700_000_000,
            scope: Scope::of(Some("example.com"), Some("/"), SameSite::Lax),
        })
        .unwrap();
    // The longest scope a seal carries: 253-byte domain, 255-byte path.
    let longest = sealer
        .seal(&Seal {
            session: engine
                .key_for_cookie("session", SESSION.as_bytes())
                .unwrap(),
            generation: 12,
            nonce: 0x1234_5678,
            issued_at: 1_700_000_000,
            scope: Scope::of(
                Some(&"d".repeat(253)),
                Some(&format!("/{}", "p".repeat(254))),
                SameSite::None,
            )
            .partitioned(true),
        })
        .unwrap();
    let h = headers(Some(&value));
    let mut forged = value.clone().into_bytes();
    forged[20] ^= 1;
    let forged = String::from_utf8(forged).unwrap();
    let hf = headers(Some(&forged));
    let session = engine
        .key_for_cookie("session", SESSION.as_bytes())
        .unwrap();
    let mut g = c.benchmark_group("binding");
    g.bench_function("unseal", |b| {
        b.iter(|| sealer.unseal(black_box(value.as_bytes())))
    });
    // Seals of formats 2 and 1 under the same key (the fuzz corpus's
    // seeds, made by earlier releases): the cost of the old formats, in
    // the same run, of values of the same scope (none) as `unseal_no_scope`.
    let no_scope = sealer
        .seal(&Seal {
            session,
            generation: 3,
            nonce: 0x1234_5678,
            issued_at: 1_700_000_000,
            scope: Scope::of(None, None, SameSite::Lax),
        })
        .unwrap();
    g.bench_function("unseal_no_scope", |b| {
        b.iter(|| sealer.unseal(black_box(no_scope.as_bytes())))
    });
    let format_2 = include_bytes!("../../fuzz/corpus/binding_seal/seed-seal2-0");
    assert!(sealer.unseal(format_2).is_ok());
    g.bench_function("unseal_format_2", |b| {
        b.iter(|| sealer.unseal(black_box(format_2)))
    });
    let format_1 = include_bytes!("../../fuzz/corpus/binding_seal/seed-seal-0");
    assert!(sealer.unseal(format_1).is_ok());
    g.bench_function("unseal_format_1", |b| {
        b.iter(|| sealer.unseal(black_box(format_1)))
    });
    g.bench_function("unseal_longest_scope", |b| {
        b.iter(|| sealer.unseal(black_box(longest.as_bytes())))
    });
    g.bench_function("seal", |b| {
        b.iter(|| {
            sealer.seal(black_box(&Seal {
                session,
                generation: 13,
                nonce: 0x1234_5679,
                issued_at: 1_700_000_300,
                scope: Scope::of(Some("example.com"), Some("/"), SameSite::Lax),
            }))
        })
    });
    g.bench_function("read_and_unseal", |b| {
        b.iter(|| Companion::read(&sealer, black_box(&h), "vigil_bind"))
    });
    g.bench_function("read_forged", |b| {
        b.iter(|| Companion::read(&sealer, black_box(&hf), "vigil_bind"))
    });
    g.finish();
}

fn pipeline(c: &mut Criterion) {
    let key = SessionHashKey::from_bytes([5; 32]);
    let off = Engine::new(EngineConfig::default(), key.clone());
    let on = Engine::new(
        EngineConfig {
            binding: BindingConfig {
                enabled: true,
                ..BindingConfig::default()
            },
            ..EngineConfig::default()
        },
        key,
    );
    let policy = Policy::default();
    let peer: IpAddr = "192.0.2.44".parse().unwrap();
    let now = 1_700_000_000;
    let bare = headers(None);
    let view = |h| RequestView {
        peer,
        headers: h,
        now_secs: now,
        tls: Default::default(),
        facts: Default::default(),
    };
    // Bind the session on `on`: first sight issues generation 1.
    let v = on.evaluate(&view(&bare), &policy).unwrap();
    let empty = HeaderMap::new();
    let set = on.binding_cookies(
        &v,
        &ResponseView {
            headers: &empty,
            now_secs: now,
            user_header: None,
            confirm_header: None,
            app_confirms: false,
        },
        Enforcement::Enforce,
    );
    let value = set[0].split(';').next().unwrap().split_once('=').unwrap().1;
    let bound = headers(Some(value));
    on.evaluate(&view(&bound), &policy).unwrap();
    off.evaluate(&view(&bare), &policy).unwrap();

    let mut g = c.benchmark_group("pipeline_binding");
    g.bench_function("known_session_binding_off", |b| {
        b.iter(|| off.evaluate(black_box(&view(&bare)), &policy).unwrap())
    });
    g.bench_function("known_session_bound", |b| {
        b.iter(|| on.evaluate(black_box(&view(&bound)), &policy).unwrap())
    });
    g.finish();
}

criterion_group!(benches, seal, pipeline);
criterion_main!(benches);
