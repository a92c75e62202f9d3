//! The proxy's share of TLS fingerprinting: per connection, filing the JA4
//! under the socket cookie; per request, reading the cookie of the request's
//! socket (a `getsockopt`) and finding the JA4 again. Parsing the hello and
//! computing the JA4 is the engine's `ja4` bench.
#![allow(
    clippy::unwrap_used,
    reason = "bench set-up: a panic is a broken bench"
)]

use std::hint::black_box;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use pingora_core::protocols::SocketDigest;
use vigil_engine::TlsFingerprint;
use vigil_proxy::hello::{CaptureSettings, ConnectionFingerprints};

fn settings() -> CaptureSettings {
    CaptureSettings {
        max_hello_bytes: 20_480,
        hello_timeout: Duration::from_secs(5),
        max_connections: 131_072,
        idle_timeout: Duration::from_secs(3600),
    }
}

fn fingerprint(c: &mut Criterion) {
    let ja4 = TlsFingerprint::captured("t13d1516h2_8daaf6152771_02713d6af862".parse().unwrap());
    let store = ConnectionFingerprints::new(&settings());
    // A store holding 100,000 live connections.
    for cookie in 1..=100_000u64 {
        store.insert(cookie, ja4);
    }
    let mut g = c.benchmark_group("fingerprint");
    let mut next = 1_000_000u64;
    g.bench_function("per_connection_file", |b| {
        b.iter(|| {
            next += 1;
            store.insert(black_box(next), ja4);
        })
    });
    g.bench_function("per_request_lookup", |b| {
        b.iter(|| store.get(black_box(50_000)))
    });

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    let digest = SocketDigest::from_raw_fd(server.as_raw_fd());
    g.bench_function("per_request_socket_cookie", |b| {
        b.iter(|| black_box(&digest).socket_cookie().unwrap())
    });
    g.finish();
}

criterion_group!(benches, fingerprint);
criterion_main!(benches);
