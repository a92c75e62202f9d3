//! The whole per-request pipeline on warm caches: one known session, same
//! device, and a replay from another device; the stages alone; and the
//! client IP chain through ~2,000 trusted CIDRs; the session stage and the
//! pipeline during a rotation of the hash key.
#![allow(
    clippy::unwrap_used,
    reason = "bench set-up: a panic is a broken bench"
)]

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use ipnet::IpNet;
use vigil_engine::{
    ClientIpConfig, ClientIpStage, Engine, EngineConfig, ForwardedHeaders, Policy, RequestView,
    SessionHashKey, TrustedProxies,
};

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
        tls: chrome_tls(),
        facts: Default::default(),
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
    // During a rotation of the hash key: a second hash per credential and
    // two revocation probes under the previous key (the session's state is
    // under the current key once carried).
    let rotating = Engine::new(EngineConfig::default(), SessionHashKey::from_bytes([6; 32]))
        .with_previous_hash_key(SessionHashKey::from_bytes([5; 32]))
        .with_user_key(SessionHashKey::from_bytes([5; 32]));
    rotating.evaluate(&view(&owner), &policy).unwrap();
    g.bench_function("known_session_same_device_rotating", |b| {
        b.iter(|| {
            rotating
                .evaluate(black_box(&view(&owner)), &policy)
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, pipeline);

/// The JA4 the proxy would have captured for a Chrome connection.
fn chrome_tls() -> vigil_engine::TlsFingerprint {
    vigil_engine::TlsFingerprint::captured("t13d1516h2_8daaf6152771_02713d6af862".parse().unwrap())
}

fn stages(c: &mut Criterion) {
    let h = headers(CHROME);
    let session = vigil_engine::SessionStage::new(
        vigil_engine::SessionConfig::default(),
        SessionHashKey::from_bytes([5; 32]),
    );
    let device = vigil_engine::DeviceStage::default();
    let mut g = c.benchmark_group("stage");
    g.bench_function("session", |b| b.iter(|| session.credentials(black_box(&h))));
    let rotating = session
        .clone()
        .with_previous(SessionHashKey::from_bytes([6; 32]));
    g.bench_function("session_rotating", |b| {
        b.iter(|| rotating.credentials(black_box(&h)))
    });
    let tls = vigil_engine::TlsFingerprint::captured(
        "t13d1516h2_8daaf6152771_02713d6af862".parse().unwrap(),
    );
    // The User-Agent parse is cached after the first request: this is the
    // per-request cost of a returning browser.
    g.bench_function("device", |b| {
        b.iter(|| device.traits(black_box(&h), black_box(tls)))
    });
    // A User-Agent never seen before: the uap patterns run (once per
    // distinct User-Agent in the cache's lifetime).
    let mut n = 0u64;
    g.bench_function("device_new_user_agent", |b| {
        b.iter(|| {
            n += 1;
            let mut h = h.clone();
            let ua = format!("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.{n}.0 Safari/537.36");
            h.insert("user-agent", ua.parse().unwrap());
            device.traits(&h, tls)
        })
    });
    g.finish();
}

criterion_group!(stage_benches, stages);

/// Trusted sets of 2,002 networks: a load balancer, a CDN (500 IPv4 /24s)
/// and a Zscaler-sized list (1,200 IPv4 /23s–/26s, 300 IPv6 /32s–/48s),
/// spread pseudo-randomly over the address space.
fn big_sets() -> TrustedProxies {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut cdn: Vec<IpNet> = vec!["203.0.113.0/24".parse().unwrap()];
    for _ in 0..499 {
        let a = u32::try_from(next() & 0xffff_ff00).unwrap();
        cdn.push(
            format!("{}/24", std::net::Ipv4Addr::from(a))
                .parse()
                .unwrap(),
        );
    }
    let mut zscaler: Vec<IpNet> = vec!["185.46.212.0/22".parse().unwrap()];
    for _ in 0..1199 {
        let len = 23 + u8::try_from(next() % 4).unwrap();
        let a = u32::try_from(next() & 0xffff_ffff).unwrap();
        zscaler.push(
            format!("{}/{len}", std::net::Ipv4Addr::from(a))
                .parse()
                .unwrap(),
        );
    }
    zscaler.push("2a03:eec0::/32".parse().unwrap());
    for _ in 0..299 {
        let len = 32 + u8::try_from(next() % 17).unwrap();
        let a = (u128::from(next()) << 64) | u128::from(next());
        zscaler.push(
            format!("{}/{len}", std::net::Ipv6Addr::from(a))
                .parse()
                .unwrap(),
        );
    }
    let lb: Vec<IpNet> = vec!["10.0.0.0/24".parse().unwrap()];
    TrustedProxies::new(vec![
        ("lb".to_owned(), lb),
        ("cdn".to_owned(), cdn),
        ("zscaler".to_owned(), zscaler),
    ])
    .unwrap()
}

fn client_ip(c: &mut Criterion) {
    let trusted = big_sets();
    let stage = ClientIpStage::new(ClientIpConfig {
        headers: ForwardedHeaders::BOTH,
        trusted: trusted.clone(),
        ..ClientIpConfig::default()
    });
    let lb: IpAddr = "10.0.0.2".parse().unwrap();
    let view = |peer, headers| RequestView {
        peer,
        headers,
        now_secs: 1_700_000_000,
        tls: chrome_tls(),
        facts: Default::default(),
    };
    let none = headers(CHROME);
    let mut xff = headers(CHROME);
    xff.insert(
        "x-forwarded-for",
        "198.51.100.7, 185.46.212.10, 203.0.113.10".parse().unwrap(),
    );
    let mut fwd = headers(CHROME);
    fwd.insert(
        "forwarded",
        "for=198.51.100.7;proto=https, for=\"[2a03:eec0::10]:443\", for=203.0.113.10;by=_edge"
            .parse()
            .unwrap(),
    );
    // The shapes the benches claim.
    let got = stage.resolve(&view(lb, &xff));
    assert_eq!(
        (got.addr.to_string(), got.chain.len()),
        ("198.51.100.7".to_owned(), 3)
    );
    let got = stage.resolve(&view(lb, &fwd));
    assert_eq!(
        (got.addr.to_string(), got.chain.len()),
        ("198.51.100.7".to_owned(), 3)
    );

    let mut g = c.benchmark_group("client_ip");
    let default = ClientIpStage::default();
    let direct: IpAddr = "192.0.2.44".parse().unwrap();
    g.bench_function("no_headers_default", |b| {
        b.iter(|| default.resolve(black_box(&view(direct, &none))))
    });
    g.bench_function("no_headers_untrusted_peer", |b| {
        b.iter(|| stage.resolve(black_box(&view(direct, &xff))))
    });
    g.bench_function("no_headers_trusted_peer", |b| {
        b.iter(|| stage.resolve(black_box(&view(lb, &none))))
    });
    g.bench_function("xff_3_hops_2000_cidrs", |b| {
        b.iter(|| stage.resolve(black_box(&view(lb, &xff))))
    });
    g.bench_function("forwarded_3_hops_2000_cidrs", |b| {
        b.iter(|| stage.resolve(black_box(&view(lb, &fwd))))
    });
    let probes: Vec<IpAddr> = [
        "185.46.213.7",
        "198.51.100.7",
        "203.0.113.10",
        "2a03:eec0::10",
        "2001:db8::1",
        "10.0.0.2",
        "8.8.8.8",
        "100.64.1.1",
    ]
    .iter()
    .map(|a| a.parse().unwrap())
    .collect();
    g.bench_function("lookup_2000_cidrs", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % probes.len();
            trusted.lookup(black_box(probes[i]))
        })
    });

    // The whole pipeline behind the chain, known session.
    let engine = Engine::new(
        EngineConfig {
            client_ip: ClientIpConfig {
                headers: ForwardedHeaders::X_FORWARDED_FOR,
                trusted,
                ..ClientIpConfig::default()
            },
            ..EngineConfig::default()
        },
        SessionHashKey::from_bytes([5; 32]),
    );
    let policy = Policy::default();
    engine.evaluate(&view(lb, &xff), &policy).unwrap();
    g.bench_function("pipeline_known_session_xff_3_hops", |b| {
        b.iter(|| {
            engine
                .evaluate(black_box(&view(lb, &xff)), &policy)
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(client_ip_benches, client_ip);

/// A Chrome-shaped ClientHello in one record, 1,740 bytes: GREASE,
/// X25519MLKEM768 key share, ECH, 15 ciphers and 16 extensions (the vector
/// `CHROME` of the engine's JA4 tests).
const CHROME_HELLO: &str = "16030106c7010006c30303000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20111111111111111111111111111111111111111111111111111111111111111100203a3a130113021303c02bc02fc02cc030cca9cca8c013c014009c009d002f00350100065adada0000002d00020101003304ef04ed4a4a00010011ec04c000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001d002000000000000000000000000000000000000000000000000000000000000000000010000e000c02683208687474702f312e31fe0d00c800000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000017000044cd0005000302683200000014001200000f7777772e6578616d706c652e636f6d000b00020100000a000c000a4a4a11ec001d00170018002b0007062a2a03040303ff010001000023000000120000000500050100000000000d0012001004030804040105030805050108060601001b0004000200021a1a000100";

fn ja4(c: &mut Criterion) {
    let bytes: Vec<u8> = (0..CHROME_HELLO.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&CHROME_HELLO[i..i + 2], 16).unwrap())
        .collect();
    let tcp = vigil_engine::Transport::Tcp;
    let mut g = c.benchmark_group("ja4");
    g.bench_function("parse_chrome_hello", |b| {
        b.iter(|| vigil_engine::ClientHello::from_records(black_box(&bytes)).unwrap())
    });
    let hello = vigil_engine::ClientHello::from_records(&bytes).unwrap();
    g.bench_function("fingerprint_chrome_hello", |b| {
        b.iter(|| vigil_engine::ja4(black_box(&hello), tcp))
    });
    g.bench_function("parse_and_fingerprint_chrome_hello", |b| {
        b.iter(|| {
            let hello = vigil_engine::ClientHello::from_records(black_box(&bytes)).unwrap();
            vigil_engine::ja4(&hello, tcp)
        })
    });
    // Both forms, as the proxy computes them per connection: for a full
    // hello (nothing left out: `c` hashed once) and for the same hello
    // resumed (pre_shared_key added: `c` hashed twice, `b` once).
    let resumed =
        vigil_engine::ClientHello::from_records(&with_extension(&bytes, 41, &[0; 40])).unwrap();
    g.bench_function("fingerprint_resumed_chrome_hello", |b| {
        b.iter(|| vigil_engine::ja4(black_box(&resumed), tcp))
    });
    g.bench_function("both_forms_chrome_hello", |b| {
        b.iter(|| vigil_engine::ja4_both(black_box(&hello), tcp))
    });
    g.bench_function("both_forms_resumed_chrome_hello", |b| {
        b.iter(|| vigil_engine::ja4_both(black_box(&resumed), tcp))
    });
    // Its text, as the app's `Vigil-JA4` header carries it on every
    // request when `fingerprint.to_app` is on.
    let ja4 = vigil_engine::ja4(&hello, tcp);
    g.bench_function("text", |b| b.iter(|| black_box(&ja4).to_string()));
    g.finish();
}

/// `record` (one handshake record holding a ClientHello) with an extension
/// of type `ty` appended, every length fixed up.
fn with_extension(record: &[u8], ty: u16, body: &[u8]) -> Vec<u8> {
    let mut out = record.to_vec();
    let grow = u16::try_from(4 + body.len()).unwrap();
    out.extend_from_slice(&ty.to_be_bytes());
    out.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    out.extend_from_slice(body);
    let add16 = |buf: &mut Vec<u8>, at: usize| {
        let v = u16::from_be_bytes([buf[at], buf[at + 1]]) + grow;
        buf[at..at + 2].copy_from_slice(&v.to_be_bytes());
    };
    add16(&mut out, 3);
    // The handshake length is 24 bits; the hello stays under 64 KiB.
    add16(&mut out, 7);
    // Past the record and handshake headers, version and random: the
    // session id, the ciphers and the compression methods, then the
    // extensions' length.
    let mut at = 5 + 4 + 2 + 32;
    at += 1 + usize::from(out[at]);
    at += 2 + usize::from(u16::from_be_bytes([out[at], out[at + 1]]));
    at += 1 + usize::from(out[at]);
    add16(&mut out, at);
    out
}

criterion_group!(ja4_benches, ja4);
criterion_main!(benches, stage_benches, client_ip_benches, ja4_benches);
