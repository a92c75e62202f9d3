//! Writes meaningful seed inputs for every target into `<dir>/<target>/`:
//! real ClientHellos from the engine's JA4 tests, real browser header sets,
//! the example config and the config test cases, and a snapshot and
//! session records written by a real engine.
//!
//! ```sh
//! cargo run -p vigil-fuzz-targets --example seeds -- /tmp/seeds
//! ```
//!
//! `fuzz/run-all.sh --merge` (cargo fuzz cmin) then keeps what adds
//! coverage; the committed corpus is the result, so this is run again only
//! when the formats change.

// A developer tool, not the proxy: a failure to write is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};

use http::HeaderMap;
use vigil_engine::{Engine, EngineConfig, Policy, RequestView, SessionHashKey};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

const CHROME_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const FIREFOX_UA: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
const SAFARI_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
const CURL_UA: &str = "curl/8.5.0";
/// A JWT (`{"alg":"HS256"}`.`{"sub":"alice","sid":"s1","jti":"j1"}`.sig).
const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIsInNpZCI6InMxIiwianRpIjoiajEifQ.c2ln";

fn write(dir: &Path, target: &str, name: &str, data: &[u8]) {
    let d = dir.join(target);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join(format!("seed-{name}")), data).unwrap();
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// The `const NAME: &str = "<hex>";` hellos of the engine's JA4 tests.
fn hellos() -> Vec<(String, Vec<u8>)> {
    let text = fs::read_to_string(Path::new(ROOT).join("engine/src/ja4/tests.rs")).unwrap();
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("const ")?;
            let (name, rest) = rest.split_once(": &str = \"")?;
            let value = rest.strip_suffix("\";")?;
            value
                .starts_with("1603")
                .then(|| (name.to_lowercase(), hex(value)))
        })
        .collect()
}

/// The raw-string configs of the config tests.
fn test_configs() -> Vec<String> {
    let text = fs::read_to_string(Path::new(ROOT).join("proxy/src/config/tests.rs")).unwrap();
    text.split("r#\"")
        .skip(1)
        .filter_map(|s| s.split_once("\"#").map(|(c, _)| c.to_owned()))
        .collect()
}

fn browser_headers(ua: &str, session: &str) -> String {
    format!(
        "host:app.example.com\nuser-agent:{ua}\naccept:text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\n\
         accept-language:de-CH,de;q=0.9,en-US;q=0.8,en;q=0.7\naccept-encoding:gzip, deflate, br, zstd\n\
         sec-ch-ua:\"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"\nsec-ch-ua-mobile:?0\nsec-ch-ua-platform:\"Windows\"\n\
         cookie:theme=dark; session={session}; _ga=GA1.2.1.2\n"
    )
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: seeds <dir>"));

    // ja4: byte 0 even keeps the real cap; odd bytes a small one.
    for (name, bytes) in hellos() {
        let mut records = vec![0u8];
        records.extend_from_slice(&bytes);
        write(&dir, "ja4", &format!("{name}-records"), &records);
        // The bare handshake message, without the record header.
        let mut bare = vec![0u8];
        bare.extend_from_slice(&bytes[5..]);
        write(&dir, "ja4", &format!("{name}-handshake"), &bare);
        let mut capped = vec![0x41u8];
        capped.extend_from_slice(&bytes);
        write(&dir, "ja4", &format!("{name}-capped"), &capped);
    }

    // request_headers: browsers, a bearer API client, a balancer's JA4/JA3.
    let browsers = [
        ("chrome", CHROME_UA),
        ("firefox", FIREFOX_UA),
        ("safari", SAFARI_UA),
        ("curl", CURL_UA),
    ];
    for (name, ua) in browsers {
        write(
            &dir,
            "request_headers",
            name,
            browser_headers(ua, "s3cr3t-value").as_bytes(),
        );
    }
    write(
        &dir,
        "request_headers",
        "bearer-balancer",
        format!(
            "user-agent:{CURL_UA}\nauthorization:Bearer {JWT}\n\
             x-ja4:t13d1516h2_8daaf6152771_02713d6af862\nx-ja3:771,4865-4866-4867,0-23-65281,29-23-24,0\n"
        )
        .as_bytes(),
    );

    // response_headers: mode byte, request, blank line, response.
    for (mode, name) in [
        (0u8, "enforce"),
        (1, "monitor"),
        (2, "off"),
        (4, "confirms"),
    ] {
        let mut data = vec![mode];
        data.extend_from_slice(browser_headers(CHROME_UA, "abc").as_bytes());
        data.extend_from_slice(
            b"\nset-cookie:session=new-value; Path=/; Secure; HttpOnly; SameSite=Lax\n\
              set-cookie:theme=dark\nvigil-user:alice@example.com\nvigil-confirm:1\n",
        );
        write(&dir, "response_headers", name, &data);
    }

    // cookies: stage byte, then lines (even first byte: Cookie, odd: Authorization).
    let cookie_sets: [(&str, u8, &[&str]); 6] = [
        ("one", 0, &["0session=abc"]),
        (
            "preferred",
            2,
            &["0session=a; sid=b", "0__Host-id=c; theme=dark"],
        ),
        ("quoted", 0, &["0session=\"abc\"; session=def"]),
        ("bearer", 0, &["1Bearer abc.def.ghi"]),
        ("jwt", 4, &["1bearer  eyJhbGciOiJIUzI1NiJ9.e30.c2ln "]),
        (
            "caps",
            1,
            &["0a=1; b=2; c=3; d=4; session=xxxxxxxxxxxxxxxxxxxxxx"],
        ),
    ];
    for (name, stage, lines) in cookie_sets {
        let mut data = vec![stage];
        data.extend_from_slice(lines.join("\n").as_bytes());
        write(&dir, "cookies", name, &data);
    }

    // forwarded_headers: byte 0 headers (bits 0-1), strategy (2-4) and peer
    // (5-7); byte 1 the header byte cap (index, bits 5-7) and hop cap; lines.
    let sel = |headers: u8, strategy: u8, peer: u8| headers | strategy << 2 | peer << 5;
    let caps = |bytes: u8, hops: u8| bytes << 5 | hops;
    let chains: [(&str, u8, u8, &str); 5] = [
        (
            "xff-walk",
            sel(3, 0, 0),
            caps(4, 8),
            "1198.51.100.1, 203.0.113.5",
        ),
        (
            "forwarded",
            sel(1, 0, 1),
            caps(4, 8),
            "0for=198.51.100.1;proto=https, for=\"[2001:db8:cd::5]:443\"",
        ),
        (
            "zscaler",
            sel(3, 0, 7),
            caps(4, 8),
            "1192.0.2.44, 185.46.212.7\n0for=192.0.2.44",
        ),
        (
            "hops",
            sel(2, 6, 0),
            caps(3, 4),
            "1192.0.2.1, 192.0.2.2, 10.1.1.1",
        ),
        (
            "obfuscated",
            sel(1, 0, 0),
            caps(4, 8),
            "0for=_hidden, for=unknown",
        ),
    ];
    for (name, select, caps, lines) in chains {
        let mut data = vec![select, caps];
        data.extend_from_slice(lines.as_bytes());
        write(&dir, "forwarded_headers", name, &data);
    }

    // config: the example, every config test case, a CIDR list.
    let example = fs::read(Path::new(ROOT).join("examples/vigil-proxy.toml")).unwrap();
    write(&dir, "config", "example", &example);
    for (i, c) in test_configs().iter().enumerate() {
        write(&dir, "config", &format!("test-{i}"), c.as_bytes());
    }
    write(
        &dir,
        "config",
        "cidrs",
        b"# a trusted list\n10.0.0.0/8\n2001:db8::/32\n192.0.2.1\n",
    );

    // session_record: a snapshot and records written by a real engine.
    let engine = Engine::new(EngineConfig::default(), SessionHashKey::from_bytes([1; 32]));
    for (i, (ua, session)) in [(CHROME_UA, "a"), (FIREFOX_UA, "b"), (SAFARI_UA, "c")]
        .into_iter()
        .enumerate()
    {
        let headers: HeaderMap = {
            let mut h = HeaderMap::new();
            h.insert("user-agent", ua.parse().unwrap());
            h.insert("cookie", format!("session={session}").parse().unwrap());
            h
        };
        for step in 0..3u64 {
            let view = RequestView {
                peer: [
                    198,
                    51,
                    100,
                    u8::try_from(i * 10).unwrap() + u8::try_from(step).unwrap(),
                ]
                .into(),
                headers: &headers,
                now_secs: 1_700_000_000 + step * 600,
                tls: Default::default(),
                facts: Default::default(),
            };
            let _ = engine.evaluate(&view, &Policy::default());
        }
        let key = engine
            .key_for_cookie("session", session.as_bytes())
            .unwrap();
        engine.bind_user(key, &format!("user{i}@example.com"), 1_700_000_100);
        write(
            &dir,
            "session_record",
            &format!("record-{i}"),
            &engine.scorer().export(&key).unwrap(),
        );
    }
    let revoked = engine.key_for_cookie("session", b"c").unwrap();
    engine.revoke(revoked, 1_700_000_200);
    write(
        &dir,
        "session_record",
        "snapshot",
        &engine.scorer().snapshot(),
    );
    // Without the magic, so that the "behind a valid header" path reads it.
    write(
        &dir,
        "session_record",
        "snapshot-body",
        &engine.scorer().snapshot()[8..],
    );
    // binding_seal: real seals (format 3) under the target's key, and
    // edits of one; `seed-seal-0` and `-1` in the corpus are format 1,
    // `seed-seal2-*` and `seed-cookie2-*` format 2.
    let sealer = vigil_engine::binding::Sealer::new(&SessionHashKey::from_bytes([5; 32]), None);
    let long = format!("/{}", "segment/".repeat(40));
    for (i, (domain, path)) in [
        (None, None),
        (Some("example.com"), Some("/app")),
        (Some("a.example.com"), Some(long.as_str())),
    ]
    .into_iter()
    .enumerate()
    {
        let seal = vigil_engine::binding::Seal {
            session: engine.key_for_cookie("session", b"a").unwrap(),
            generation: 3,
            nonce: 0x1234_5678,
            issued_at: 1_700_000_000,
            scope: vigil_engine::binding::Scope::of(
                domain,
                path,
                vigil_engine::binding::SameSite::Lax,
            )
            .partitioned(i == 2),
        };
        let value = sealer.seal(&seal).unwrap();
        write(
            &dir,
            "binding_seal",
            &format!("seal3-{i}"),
            value.as_bytes(),
        );
        write(
            &dir,
            "binding_seal",
            &format!("cookie3-{i}"),
            format!("session=a; __Host-vigil_bind={value}; vigil_bind={value}x").as_bytes(),
        );
    }
    println!("seeds written to {}", dir.display());
}
