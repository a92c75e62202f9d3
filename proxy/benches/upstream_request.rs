//! Building the request the app receives, per request: finding and removing
//! the headers a client must not pass on, and writing the forwarding
//! headers. Each against the way it was done before (issue 17), in the same
//! run: the removal of every name that could be there, one by one, and the
//! three forwarding values as three strings.
#![allow(
    clippy::unwrap_used,
    reason = "bench set-up: a panic is a broken bench"
)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName};
use pingora_http::RequestHeader;
use vigil_engine::{ClientIpStage, ForwardedHeaders, RequestView};
use vigil_proxy::forwarding::{self, Strip};

/// The browser request of `loadtests/callgrind-client.py`: Chrome's
/// headers and three cookies, case kept as Pingora keeps it.
fn browser_request() -> RequestHeader {
    let mut r = RequestHeader::build("GET", b"/", None).unwrap();
    for (name, value) in [
        ("Host", "enforce.test"),
        (
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        ),
        ("Accept", "text/html,application/xhtml+xml,*/*;q=0.8"),
        ("Accept-Language", "en-GB,en;q=0.9"),
        ("Accept-Encoding", "gzip, deflate, br"),
        ("Cookie", "session=s-000123; theme=dark; consent=yes"),
    ] {
        r.append_header(name.to_owned(), value).unwrap();
    }
    r
}

/// The removal as it was: the `Vigil-*` and underscore-alias names
/// collected, then a `remove_header` for each of the 15 spoofable names,
/// the 3 replaced ones and the balancer's two fingerprint headers.
fn remove_each(r: &mut RequestHeader, fingerprints: [Option<&HeaderName>; 2]) {
    let spoofed: Vec<_> = r
        .headers
        .keys()
        .filter(|n| n.as_str().starts_with("vigil-"))
        .cloned()
        .collect();
    for name in spoofed {
        r.remove_header(&name);
    }
    for name in fingerprints.into_iter().flatten() {
        r.remove_header(name);
    }
    let aliases: Vec<_> = r
        .headers
        .keys()
        .filter(|n| forwarding::is_underscore_alias(n.as_str()))
        .cloned()
        .collect();
    for name in aliases {
        r.remove_header(&name);
    }
    for name in forwarding::SPOOFABLE {
        r.remove_header(name);
    }
    for name in forwarding::REPLACED {
        r.remove_header(name);
    }
}

fn one_pass(r: &mut RequestHeader, strip: &Strip<'_>) {
    for name in strip.present(&r.headers) {
        r.remove_header(&name);
    }
}

fn strip(c: &mut Criterion) {
    let clean = browser_request();
    let mut spoofed = browser_request();
    for (name, value) in [
        ("X-Forwarded-For", "6.6.6.6"),
        ("Vigil-Risk-Level", "low"),
        ("True-Client-IP", "6.6.6.6"),
    ] {
        spoofed.append_header(name.to_owned(), value).unwrap();
    }
    let ja4 = HeaderName::from_static("x-lb-ja4");
    let strip = Strip {
        from_trusted_peer: false,
        client_ip_to_app: true,
        extra: &[],
        fingerprints: [Some(&ja4), None],
    };
    let mut g = c.benchmark_group("upstream_request/strip");
    for (label, request) in [("browser", &clean), ("three_spoofed", &spoofed)] {
        g.bench_function(format!("{label}/remove_each"), |b| {
            b.iter_batched_ref(
                || request.clone(),
                |r| remove_each(black_box(r), [Some(&ja4), None]),
                BatchSize::SmallInput,
            );
        });
        g.bench_function(format!("{label}/one_pass"), |b| {
            b.iter_batched_ref(
                || request.clone(),
                |r| one_pass(black_box(r), &strip),
                BatchSize::SmallInput,
            );
        });
    }
    g.finish();
}

fn values(c: &mut Criterion) {
    let headers = HeaderMap::new();
    let view = RequestView {
        peer: "203.0.113.9".parse().unwrap(),
        headers: &headers,
        now_secs: 0,
        tls: Default::default(),
        facts: Default::default(),
    };
    let client = ClientIpStage::default().resolve_with(&view, ForwardedHeaders::X_FORWARDED_FOR);
    let mut g = c.benchmark_group("upstream_request/forwarding_values");
    g.bench_function("three_strings", |b| {
        b.iter(|| {
            let client = black_box(&client);
            let path = forwarding::verified_path(client);
            let xff = http::HeaderValue::try_from(forwarding::x_forwarded_for(&path)).unwrap();
            let fwd = http::HeaderValue::try_from(forwarding::forwarded(&path, "http")).unwrap();
            let ip = http::HeaderValue::try_from(forwarding::ip_text(client.addr)).unwrap();
            (xff, fwd, ip)
        });
    });
    g.bench_function("one_buffer", |b| {
        b.iter(|| forwarding::values(black_box(&client), "http"));
    });
    g.finish();
}

criterion_group!(benches, strip, values);
criterion_main!(benches);
