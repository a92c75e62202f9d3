//! The whole pipeline as a deployment runs it — session, client IP chain
//! behind a trusted balancer, device with a captured JA4, geo and ASN from
//! `.mmdb` files, the three risks against a user with a history, decision —
//! on warm caches, one thread, with the proxy's allocator (mimalloc). The
//! known-session and replayed requests are also timed one by one for their
//! latency distribution (criterion reports means and medians only).
//!
//! ```text
//! cargo bench -p vigil-engine --bench risk
//! ```
#![allow(
    clippy::unwrap_used,
    reason = "bench set-up: a panic is a broken bench"
)]

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use ipnet::IpNet;
use vigil_engine::{
    ClientIpConfig, Engine, EngineConfig, ForwardedHeaders, Policy, RequestView, SessionHashKey,
    TlsFingerprint, TrustedProxies,
};
use vigil_geoip::testdb::{Layout, TestDb, TestRecord};

// The allocator the proxy binary runs with, so that the latency tail is the
// deployed one (glibc's malloc trims and regrows its heap top under this
// allocation pattern, which adds ~25 µs to one request in a hundred).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const T0: u64 = 1_700_000_000;
const BALANCER: &str = "10.0.0.2";
const HOME: &str = "81.2.69.10";
const MOBILE: &str = "31.94.1.10";

struct Bench {
    engine: Engine,
    _dir: tempfile::TempDir,
}

fn bench_world() -> Bench {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("geo.mmdb");
    let mut db = TestDb::new(Layout::GeoLite2);
    db.push(
        "81.2.69.0/24",
        TestRecord::new()
            .country("GB")
            .location(51.51, -0.09)
            .accuracy_km(20)
            .asn(2856),
    );
    db.push(
        "31.94.0.0/16",
        TestRecord::new()
            .country("GB")
            .location(51.50, -0.12)
            .accuracy_km(50)
            .asn(12576),
    );
    // A realistically sized tree: 20,000 more networks around them.
    for i in 0..20_000u32 {
        let a = std::net::Ipv4Addr::from(0x5000_0000 + (i << 8));
        db.push(
            &format!("{a}/24"),
            TestRecord::new()
                .country(["DE", "FR", "US", "NL"][(i % 4) as usize])
                .location(50.0, 8.0)
                .accuracy_km(100)
                .asn(64_512 + i % 1000),
        );
    }
    db.write(&path).unwrap();
    let geo = vigil_geoip::GeoIp::open(&vigil_geoip::GeoPaths {
        geo: vec![path.clone()],
        asn: vec![path],
    })
    .unwrap();
    let lb: Vec<IpNet> = vec!["10.0.0.0/24".parse().unwrap()];
    let engine = Engine::new(
        EngineConfig {
            client_ip: ClientIpConfig {
                headers: ForwardedHeaders::X_FORWARDED_FOR,
                trusted: TrustedProxies::new(vec![("lb".to_owned(), lb)]).unwrap(),
                ..ClientIpConfig::default()
            },
            ..EngineConfig::default()
        },
        SessionHashKey::from_bytes([5; 32]),
    )
    .with_geo(Arc::new(geo));
    Bench { engine, _dir: dir }
}

fn headers(session: &str, client: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", "app.example.com".parse().unwrap());
    h.insert("user-agent", CHROME.parse().unwrap());
    h.insert("accept-language", "en-GB,en;q=0.9".parse().unwrap());
    h.insert("sec-ch-ua-platform", "\"Windows\"".parse().unwrap());
    h.insert("sec-fetch-site", "same-origin".parse().unwrap());
    h.insert(
        "cookie",
        format!("_ga=GA1.2.123456789.1700000000; theme=dark; session={session}; csrftoken=abcdef0123456789")
            .parse()
            .unwrap(),
    );
    h.insert("x-forwarded-for", client.parse().unwrap());
    h
}

fn view(h: &HeaderMap, at: u64) -> RequestView<'_> {
    RequestView {
        peer: BALANCER.parse::<IpAddr>().unwrap(),
        headers: h,
        now_secs: at,
        tls: TlsFingerprint::captured("t13d1516h2_8daaf6152771_02713d6af862".parse().unwrap()),
        facts: Default::default(),
    }
}

/// Ten days of history for "alice" (home, lunchtime on mobile), then the
/// session under test, bound and warm.
fn warm(b: &Bench, session: &str) {
    let policy = Policy::default();
    for d in 0..10u64 {
        let s = format!("hist{d}");
        let t = T0 + d * 86_400;
        b.engine.bind_user(
            b.engine.key_for_credential(s.as_bytes()).unwrap(),
            "alice",
            t,
        );
        for (ip, dt) in [(HOME, 0), (MOBILE, 4 * 3600), (HOME, 9 * 3600)] {
            b.engine
                .evaluate(&view(&headers(&s, ip), t + dt), &policy)
                .unwrap();
        }
    }
    let t = T0 + 10 * 86_400;
    b.engine.bind_user(
        b.engine.key_for_credential(session.as_bytes()).unwrap(),
        "alice",
        t,
    );
    b.engine
        .evaluate(&view(&headers(session, HOME), t), &policy)
        .unwrap();
}

fn risk(c: &mut Criterion) {
    let b = bench_world();
    let policy = Policy::default();
    warm(&b, "bench");
    let t = T0 + 10 * 86_400 + 60;
    let home = headers("bench", HOME);
    let v = b.engine.evaluate(&view(&home, t), &policy).unwrap();
    assert!(v.risk.reasons.is_empty() && !v.risks.learning, "{v:?}");
    assert_eq!(v.client.addr.to_string(), HOME);
    // Latency first, on the warm world as a deployment has it (the
    // criterion runs below add tens of thousands of sessions).
    latency(&b, &home, t, "known_user_session_same_device");
    let mut thief = headers("bench", MOBILE);
    thief.insert("user-agent", "python-requests/2.32.3".parse().unwrap());
    latency(&b, &thief, t, "known_user_session_replayed");

    let mut g = c.benchmark_group("risk");
    g.bench_function("known_user_session_same_device", |bn| {
        bn.iter(|| {
            b.engine
                .evaluate(black_box(&view(&home, t)), &policy)
                .unwrap()
        })
    });
    // Every request moves between the user's two networks: the profile is
    // read, travel computed, the state rewritten.
    let mobile = headers("bench", MOBILE);
    let mut i = 0u64;
    g.bench_function("known_user_session_moving", |bn| {
        bn.iter(|| {
            i += 1;
            let h = if i.is_multiple_of(2) { &home } else { &mobile };
            b.engine
                .evaluate(black_box(&view(h, t + i)), &policy)
                .unwrap()
        })
    });
    // A replay from another device: refused, nothing learnt, entity risk
    // recorded.
    g.bench_function("known_user_session_replayed", |bn| {
        bn.iter(|| {
            b.engine
                .evaluate(black_box(&view(&thief, t)), &policy)
                .unwrap()
        })
    });
    // A new session of the user: login risk against the profile.
    let mut n = 0u64;
    g.bench_function("login", |bn| {
        bn.iter(|| {
            n += 1;
            let h = headers(&format!("login{n}"), HOME);
            b.engine.evaluate(black_box(&view(&h, t)), &policy).unwrap()
        })
    });
    g.finish();
}

/// Per-request latency of the warm known-session path, request by request.
fn latency(b: &Bench, h: &HeaderMap, t: u64, name: &str) {
    let policy = Policy::default();
    let n = 200_000;
    let mut nanos = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        black_box(b.engine.evaluate(black_box(&view(h, t)), &policy).unwrap());
        nanos.push(u64::try_from(start.elapsed().as_nanos()).unwrap());
    }
    nanos.sort_unstable();
    // Per-mille ranks, exact in integers.
    let at = |per_mille: usize| nanos[(n * per_mille / 1000).min(n - 1)] as f64 / 1000.0;
    println!(
        "risk/latency {name} ({n} requests, one thread): \
         p50 {:.2} µs, p90 {:.2} µs, p99 {:.2} µs, p99.9 {:.2} µs, max {:.2} µs",
        at(500),
        at(900),
        at(990),
        at(999),
        at(1000),
    );
}

/// The steady state of a deployment rather than of one session: ten
/// thousand users, each with three days of history on a network of their
/// own, bound and past learning, and each request the next user's in turn.
/// One session's state stays in the CPU's caches between iterations of the
/// benches above; here every request finds its session, user, device and
/// network state cold, as the proxy does under the load corpus (its
/// decision took 2.9 µs there against 1.0-1.2 µs on warm caches;
/// docs/performance.md, issue 17's sixth pass).
fn corpus(c: &mut Criterion) {
    const USERS: u32 = 10_000;
    let b = bench_world();
    let policy = Policy::default();
    let home = |i: u32| std::net::Ipv4Addr::from(0x5000_0000 + (i << 8) + 10).to_string();
    for d in 0..3u64 {
        let t = T0 + d * 86_400;
        for i in 0..USERS {
            let s = format!("u{i}d{d}");
            b.engine.bind_user(
                b.engine.key_for_credential(s.as_bytes()).unwrap(),
                &format!("user{i}"),
                t,
            );
            for dt in [0, 3600, 7200] {
                b.engine
                    .evaluate(&view(&headers(&s, &home(i)), t + dt), &policy)
                    .unwrap();
            }
        }
    }
    let t = T0 + 3 * 86_400;
    let requests: Vec<HeaderMap> = (0..USERS)
        .map(|i| {
            let s = format!("u{i}now");
            b.engine.bind_user(
                b.engine.key_for_credential(s.as_bytes()).unwrap(),
                &format!("user{i}"),
                t,
            );
            let h = headers(&s, &home(i));
            b.engine.evaluate(&view(&h, t), &policy).unwrap();
            h
        })
        .collect();
    for h in &requests {
        let v = b.engine.evaluate(&view(h, t + 1), &policy).unwrap();
        assert!(
            v.action == vigil_engine::Action::Allow && v.risk.reasons.is_empty(),
            "{v:?}"
        );
    }
    let mut g = c.benchmark_group("risk");
    let mut next = 0usize;
    g.bench_function("known_users_10k_in_turn", |bn| {
        bn.iter(|| {
            next = (next + 1) % requests.len();
            b.engine
                .evaluate(black_box(&view(&requests[next], t + 60)), &policy)
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, risk, corpus);
criterion_main!(benches);
