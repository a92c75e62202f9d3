//! The DBSC check every request of a session on a DBSC route pays: find
//! the bound cookie among the request's cookies, check its seal, and look
//! the session up in a store of 100,000 bound sessions. Verifying a proof
//! (ES256), paid once per refresh, is measured beside it.
#![allow(
    clippy::unwrap_used,
    reason = "bench set-up: a panic is a broken bench"
)]

use std::hint::black_box;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use vigil_engine::SessionKey;
use vigil_proxy::dbsc::jwt::{self, PublicKey};
use vigil_proxy::dbsc::store::Store;
use vigil_proxy::dbsc::{Dbsc, RouteDbsc, Settings};

fn session(i: u32) -> SessionKey {
    let mut k = [0u8; 16];
    k[..4].copy_from_slice(&i.to_le_bytes());
    k[4..8].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_le_bytes());
    SessionKey::from_bytes(k)
}

fn dbsc(c: &mut Criterion) {
    let settings = Settings {
        max_sessions: 200_000,
        ..Settings::default()
    };
    let d = Dbsc::default();
    let key = PublicKey::Es256(Box::new([4; 65]));
    let mut probe = String::new();
    for i in 0..100_000u32 {
        let id = Store::id_for(&session(i));
        d.store()
            .bind(
                session(i),
                key.clone(),
                id,
                1,
                1,
                (settings.max_sessions, 3_600),
                false,
            )
            .unwrap();
        if i == 42_424 {
            probe = d.sealed_cookie(&id, u64::MAX, 0);
        }
    }
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "cookie",
        format!("session=abcdefabcdefabcdef; theme=dark; __Host-vigil-dbsc={probe}")
            .parse()
            .unwrap(),
    );
    let mut g = c.benchmark_group("dbsc");
    g.bench_function("check_proven_100k", |b| {
        b.iter(|| {
            black_box(d.check(
                &settings,
                RouteDbsc::Offer,
                black_box(&session(42_424)),
                &headers,
                "/account",
                100,
            ))
        });
    });

    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let mut point = Box::new([0u8; 65]);
    point.copy_from_slice(pair.public_key().as_ref());
    let registered = PublicKey::Es256(point);
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","typ":"dbsc+jwt"}"#),
        URL_SAFE_NO_PAD.encode(r#"{"jti":"AAAAAAAAAAAAAAAAAAAAAA"}"#)
    );
    let sig = pair.sign(&rng, input.as_bytes()).unwrap();
    let proof = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
    g.bench_function("verify_refresh_es256", |b| {
        b.iter(|| black_box(jwt::verify_refresh(black_box(&proof), &registered).unwrap()));
    });
    g.finish();
}

criterion_group!(benches, dbsc);
criterion_main!(benches);
