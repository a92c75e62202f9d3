//! The bodies of Vigil's fuzz targets, one plain function per parser of
//! untrusted bytes.
//!
//! cargo-fuzz runs them from `fuzz/fuzz_targets/*.rs` (one line each), and
//! `cargo test` runs every committed corpus file and every crash repro
//! through them (`tests/corpora.rs`), so a fixed crash stays fixed without a
//! nightly toolchain. A target returns quietly on input it cannot use and
//! panics (an `assert!`) only when a promise of the code under test breaks.
//!
//! Set-up that costs more than an execution — an engine with its session
//! store and population sketches (1.5 MB zeroed per engine), trusted proxy
//! sets, session stages — is built once per process in a `LazyLock`. The
//! engines therefore keep state from one input to the next, as a proxy
//! does from one request to the next; the assertions below hold whatever
//! came before (docs/fuzzing.md says what that means for reproducing a
//! crash).

use std::net::IpAddr;
#[cfg(feature = "proxy")]
use std::path::Path;
use std::sync::LazyLock;

use http::{HeaderMap, HeaderName, HeaderValue};
use vigil_engine::{
    Action, ChainStrategy, ClientHello, ClientIpConfig, ClientIpStage, CredentialSource, Decision,
    Enforcement, Engine, EngineConfig, ForwardedHeaders, MAX_HELLO_BYTES, NetworkFacts, Node,
    Policy, RequestView, ResponseView, ScoreConfig, SessionConfig, SessionError, SessionHashKey,
    SessionLimits, SessionStage, SessionState, TlsFingerprint, Transport, TrustedProxies,
    UpstreamFingerprints, classify, ja4 as ja4_of, ja4_both, ja4_o, ja4_r, ja4_ro,
};

/// A target's body: takes any bytes, panics only on a broken promise.
pub type Target = fn(&[u8]);

/// Every target by its cargo-fuzz name, for the corpus replay.
pub const TARGETS: &[(&str, Target)] = &[
    #[cfg(feature = "proxy")]
    ("config", config),
    ("binding_seal", binding_seal),
    ("cookies", cookies),
    #[cfg(feature = "proxy")]
    ("dbsc_proof", dbsc_proof),
    ("fleet_frames", fleet_frames),
    ("forwarded_headers", forwarded_headers),
    ("ja4", ja4),
    #[cfg(feature = "proxy")]
    ("paths", paths),
    ("request_headers", request_headers),
    ("response_headers", response_headers),
    ("session_record", session_record),
];

/// Most header lines read from one input: past the engine's own caps, so
/// that the count limits are reached, and few enough to keep executions fast.
const MAX_LINES: usize = 128;

/// `name:value` lines, up to `max`; lines that are not a valid header are
/// skipped.
fn header_lines(block: &[u8], max: usize) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in block.split(|b| *b == b'\n').take(max) {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    headers
}

fn nets(list: &[&str]) -> Vec<ipnet::IpNet> {
    list.iter().filter_map(|n| n.parse().ok()).collect()
}

// === config ===

/// Paths a config may name that are not files (devices, FIFOs, procfs): the
/// config parser reads trusted-proxy files it names, and a read of
/// `/dev/zero` never ends. Such inputs are skipped so that a run stays
/// hermetic; `cidrs::read_file` trusting a file's reported length is a
/// known limit for operators, not for the network.
#[cfg(feature = "proxy")]
const NOT_FILES: [&str; 4] = ["/dev", "/proc", "/sys", "/run"];

/// Arbitrary bytes (as lossy UTF-8) through the proxy's config parser and
/// the CIDR-list parser of trusted proxy files: errors are fine, a panic is
/// not, and every error renders.
#[cfg(feature = "proxy")]
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if NOT_FILES.iter().any(|p| text.contains(p)) {
        return;
    }
    // A directory that does not exist anchors relative paths, so that a
    // named file is found only where a seed names an absolute one.
    let path = Path::new("/nonexistent/vigil-fuzz/vigil-proxy.toml");
    if let Err(e) = vigil_proxy::config::Config::parse(&text, path) {
        let _ = e.to_string();
    }
    let _ = vigil_proxy::cidrs::parse(&text);
}

// === dbsc_proof ===

/// Arbitrary bytes (lossy UTF-8) as a DBSC proof through both verifiers
/// (`vigil_proxy::dbsc::jwt`): as a registration proof, and as a refresh
/// proof against a fixed P-256 key and a fixed RSA key. Refusals are
/// expected, a panic is a bug; a proof that verifies must carry a `jti`
/// within bounds, and a registration key.
#[cfg(feature = "proxy")]
pub fn dbsc_proof(data: &[u8]) {
    use vigil_proxy::dbsc::jwt::{self, PublicKey};
    let text = String::from_utf8_lossy(data);
    if let Ok(proof) = jwt::verify_registration(&text) {
        assert!(proof.key.is_some(), "a registration binds a key");
        assert!(!proof.jti.is_empty() && proof.jti.len() <= 256);
    }
    let ec = PublicKey::Es256(Box::new([4; 65]));
    let rsa = PublicKey::Rs256 {
        n: vec![0xc5; 256].into(),
        e: vec![1, 0, 1].into(),
    };
    for key in [&ec, &rsa] {
        if let Ok(proof) = jwt::verify_refresh(&text, key) {
            assert!(proof.key.is_none(), "a refresh never brings a key");
        }
    }
}

// === paths ===

/// Routes of the kind an attacker would pick between: an enforcing app,
/// `off` static files and health checks, a host of its own, a wildcard.
#[cfg(feature = "proxy")]
static ROUTES: LazyLock<Vec<vigil_proxy::config::Route>> = LazyLock::new(|| {
    let text = r#"
[[listeners]]
name = "http"
listen = "127.0.0.1:8080"

[[upstreams]]
name = "app"
addresses = ["127.0.0.1:3000"]

[[routes]]
name = "app"
upstream = "app"

[[routes]]
name = "static"
upstream = "app"
path_prefix = "/static"
mode = "off"

[[routes]]
name = "health"
upstream = "app"
path_prefix = "/healthz"
mode = "off"

[[routes]]
name = "admin"
upstream = "app"
path_prefix = "/admin"
hosts = ["admin.test"]

[[routes]]
name = "api"
upstream = "app"
path_prefix = "/api/v1"
hosts = ["*.test"]
mode = "monitor"
"#;
    let path = Path::new("/nonexistent/vigil-fuzz/paths.toml");
    // Checked in `paths` (no routes, no route selection to fuzz).
    vigil_proxy::config::Config::parse(text, path)
        .map(|c| c.routes)
        .unwrap_or_default()
});

/// Hosts the routes above tell apart.
#[cfg(feature = "proxy")]
const HOSTS: [&str; 4] = ["app.test", "admin.test", "ADMIN.test", "other.example"];

/// Arbitrary request paths (as lossy UTF-8) through the path normaliser
/// and route selection.
///
/// Input: byte 0 picks the host; the rest is the path as sent.
///
/// Checks: the normalised path is never longer than the path as sent,
/// normalising it again changes nothing, and once it starts with `/` it
/// holds no `.`, `..` or empty segment, no `\` and no `;`; a route chosen
/// by [`vigil_proxy::routes::select`] is the route of the path as sent and
/// of the normalised path alike, and the path it reports is the
/// normalised one.
#[cfg(feature = "proxy")]
pub fn paths(data: &[u8]) {
    use vigil_proxy::path::normalise;
    use vigil_proxy::routes::{route_index, select};

    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    assert_eq!(ROUTES.len(), 5, "the paths target's routes no longer parse");
    let host = HOSTS[usize::from(pick) % HOSTS.len()];
    let raw = String::from_utf8_lossy(rest);
    let raw = raw.as_ref();
    let Ok(normal) = normalise(raw) else {
        assert!(
            select(&ROUTES, host, raw).is_err(),
            "a path without one meaning selected a route: {raw:?}"
        );
        return;
    };
    let sent = raw.split(['?', '#']).next().unwrap_or_default();
    assert!(normal.len() <= sent.len(), "{raw:?} grew to {normal:?}");
    assert_eq!(
        normalise(&normal).as_deref(),
        Ok(normal.as_ref()),
        "normalising {raw:?} twice changed it"
    );
    if let Some(tail) = normal.strip_prefix('/') {
        assert!(
            !normal.contains(['\\', ';']),
            "{raw:?} normalised to {normal:?}"
        );
        let segments: Vec<&str> = tail.split('/').collect();
        for (i, seg) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            assert!(
                *seg != "." && *seg != ".." && (last || !seg.is_empty()),
                "{raw:?} normalised to {normal:?}, segment {seg:?} left"
            );
        }
    }
    if let Ok(selected) = select(&ROUTES, host, raw) {
        assert_eq!(selected.path, normal, "select matched on another path");
        assert_eq!(selected.index, route_index(&ROUTES, host, &normal));
        if matches!(normal, std::borrow::Cow::Owned(_)) {
            assert_eq!(
                selected.index,
                route_index(&ROUTES, host, raw),
                "{raw:?} and {normal:?} take different routes, yet one was selected"
            );
        }
    }
}

// === cookies ===

/// Session stages with different cookie names, bearer settings and caps,
/// chosen by the first input byte.
static SESSION_STAGES: LazyLock<Vec<(bool, SessionStage)>> = LazyLock::new(|| {
    let names: [&[&str]; 4] = [
        &["session"],
        &["sid", "session", "__Host-id"],
        &["a", "ab", "a b"],
        &[],
    ];
    let limits = [
        SessionLimits::default(),
        SessionLimits {
            max_cookies: 3,
            max_credential_bytes: 16,
        },
    ];
    let mut stages = Vec::new();
    for names in names {
        for bearer in [true, false] {
            for limits in limits {
                let config = SessionConfig {
                    cookie_names: names.iter().map(|n| (*n).to_owned()).collect(),
                    bearer,
                    limits,
                    ambiguous: vigil_engine::Ambiguity::Worst,
                };
                let stage = SessionStage::new(config, SessionHashKey::from_bytes([3; 32]));
                stages.push((bearer, stage));
            }
        }
    }
    stages
});

/// Arbitrary `Cookie` and `Authorization` header sets through the session
/// stage alone — the credential parser — under several configs.
///
/// Input: byte 0 picks the stage (cookie names, bearer on or off, default
/// or tiny caps); the rest is split on `\n` into header values, each line's
/// first byte choosing the header (even: `Cookie`, odd: `Authorization`).
/// Checks that the answer is the same twice, that every cookie session
/// names a configured cookie, that a bearer session comes only with bearer
/// on and an `Authorization` header, that the credentials stay within their
/// bound, and that a problem is one of the caps.
pub fn cookies(data: &[u8]) {
    let Some((&select, rest)) = data.split_first() else {
        return;
    };
    let Some((bearer, stage)) = SESSION_STAGES.get(usize::from(select) % SESSION_STAGES.len())
    else {
        return;
    };
    let mut headers = HeaderMap::new();
    for line in rest.split(|b| *b == b'\n').take(MAX_LINES) {
        let Some((&which, value)) = line.split_first() else {
            continue;
        };
        let Ok(v) = HeaderValue::from_bytes(value) else {
            continue;
        };
        let name = if which % 2 == 0 {
            http::header::COOKIE
        } else {
            http::header::AUTHORIZATION
        };
        headers.append(name, v);
    }
    let got = stage.credentials(&headers);
    assert_eq!(
        got,
        stage.credentials(&headers),
        "credentials is not a function"
    );
    assert!(got.sessions().len() <= vigil_engine::MAX_CREDENTIALS);
    for session in got.sessions() {
        match session.source {
            CredentialSource::Cookie(rank) => {
                assert!(
                    stage.cookie_key(rank, b"x").is_some(),
                    "cookie rank {rank} is not configured: {stage:?}"
                );
            }
            CredentialSource::Bearer => {
                assert!(*bearer, "a bearer session while bearer is off");
                assert!(headers.contains_key(http::header::AUTHORIZATION));
            }
        }
    }
    if let Some(e) = got.problem() {
        let _ = e.code();
        match e {
            SessionError::TooManyCookies { count, limit } => assert!(count > limit),
            SessionError::CredentialTooLong { len, limit } => assert!(len > limit),
            SessionError::TooManyCredentials { limit } => {
                assert_eq!(*limit, vigil_engine::MAX_CREDENTIALS);
            }
            SessionError::SeveralAuthorizations | SessionError::Ambiguous { .. } => {}
        }
    }
}

// === forwarded_headers ===

const PEERS: [&str; 8] = [
    "10.0.0.2",
    "203.0.113.9",
    "2001:db8:cd::1",
    "::ffff:10.0.0.3",
    "198.51.100.7",
    "192.168.1.1",
    "2001:db8:1::1",
    "185.46.212.1",
];

static TRUSTED: LazyLock<TrustedProxies> = LazyLock::new(|| {
    TrustedProxies::new(vec![
        ("lb".into(), nets(&["10.0.0.0/8", "fd00::/8"])),
        ("cdn".into(), nets(&["203.0.113.0/24", "2001:db8:cd::/48"])),
        (
            "zscaler".into(),
            nets(&["185.46.212.0/22", "10.99.0.0/16", "2a03:eec0::/32"]),
        ),
    ])
    .unwrap_or_default()
});

static PEER_ADDRS: LazyLock<Vec<IpAddr>> =
    LazyLock::new(|| PEERS.iter().filter_map(|p| p.parse().ok()).collect());

/// Arbitrary bytes as `Forwarded` and `X-Forwarded-For` lines through the
/// client IP stage, with three trusted sets, every strategy and small caps,
/// then (with the `proxy` feature) through the proxy's rendering of the
/// verified path for the app.
///
/// Input: byte 0 picks the honoured headers (bits 0-1), the strategy (bits
/// 2-4) and the peer (bits 5-7); byte 1 the caps; the rest is split on `\n`
/// into header lines, each line's first byte choosing the header (even:
/// `Forwarded`, odd: `X-Forwarded-For`). Checks the hop cap, that an
/// untrusted peer's headers are never believed, that the client is the peer
/// or a hop, and that a trusted hop is never the client unless flagged.
pub fn forwarded_headers(data: &[u8]) {
    let (Some(&select), Some(&caps)) = (data.first(), data.get(1)) else {
        return;
    };
    let honoured = ForwardedHeaders {
        forwarded: select & 1 != 0,
        x_forwarded_for: select & 2 != 0,
    };
    let strategy = match (select >> 2) & 7 {
        n @ 4.. => ChainStrategy::Hops(n - 4),
        _ => ChainStrategy::Walk,
    };
    let Some(&peer) = PEER_ADDRS.get(usize::from(select >> 5)) else {
        return;
    };
    let max_hops = usize::from(caps & 0x1f);
    let max_header_bytes = [0, 7, 64, 300, 8192, 1, 33, 4096][usize::from(caps >> 5)];

    let mut headers = HeaderMap::new();
    for line in data[2..].split(|b| *b == b'\n').take(64) {
        let Some((&which, value)) = line.split_first() else {
            continue;
        };
        let Ok(v) = HeaderValue::from_bytes(value) else {
            continue;
        };
        headers.append(
            if which % 2 == 0 {
                "forwarded"
            } else {
                "x-forwarded-for"
            },
            v,
        );
    }

    let trusted = &*TRUSTED;
    let stage = ClientIpStage::new(ClientIpConfig {
        headers: honoured,
        strategy,
        trusted: trusted.clone(),
        max_header_bytes,
        max_hops,
    });
    let view = RequestView {
        peer,
        headers: &headers,
        now_secs: 0,
        tls: TlsFingerprint::default(),
        facts: Default::default(),
    };
    let got = stage.resolve(&view);

    assert!(got.chain.len() <= max_hops, "hop cap broken");
    assert!(
        got.addr == got.peer || got.chain.iter().any(|h| h.node == Node::Ip(got.addr)),
        "client is neither the peer nor a hop"
    );
    let peer_trusted = trusted.lookup(got.peer).is_some();
    if !peer_trusted {
        assert_eq!(
            got.addr, got.peer,
            "an untrusted peer's headers were believed"
        );
    }
    if strategy == ChainStrategy::Walk
        && peer_trusted
        && !got.flags.all_trusted
        && !got.flags.opaque_hop
    {
        assert!(
            trusted.lookup(got.addr).is_none(),
            "a trusted hop was taken as the client"
        );
    }

    // What the proxy tells the app: the client first, the peer last.
    #[cfg(feature = "proxy")]
    {
        let path = vigil_proxy::forwarding::verified_path(&got);
        assert_eq!(
            path.first(),
            Some(&got.addr),
            "path does not start at the client"
        );
        assert_eq!(
            path.last(),
            Some(&got.peer),
            "path does not end at the peer"
        );
        let _ = vigil_proxy::forwarding::x_forwarded_for(&path);
        let _ = vigil_proxy::forwarding::forwarded(&path, "https");
    }

    // The other honoured set on the same request, and how the two compare.
    let other = stage.resolve_with(&view, ForwardedHeaders::BOTH);
    let _ = classify(&NetworkFacts::from(&got), &NetworkFacts::from(&other));
}

// === fleet_frames ===

/// Arbitrary bytes as one line of the controller's sync stream
/// (`vigil_fleet::read_frame`) and as a node's posted event batch: no panic,
/// the caps hold, and what reads writes back and reads again the same.
///
/// Input: byte 0 picks the reader (even: a stream line; odd: an event
/// batch); the rest is the bytes.
pub fn fleet_frames(data: &[u8]) {
    let Some((&select, bytes)) = data.split_first() else {
        return;
    };
    if select & 1 == 0 {
        let Ok(frame) = vigil_fleet::read_frame(bytes) else {
            return;
        };
        if let vigil_fleet::Frame::Snapshot { changes, .. }
        | vigil_fleet::Frame::Changes { changes, .. } = &frame
        {
            assert!(
                changes.len() <= vigil_fleet::MAX_BATCH,
                "batch past the cap"
            );
        }
        let line = vigil_fleet::write_frame(&frame);
        assert_eq!(line.last(), Some(&b'\n'));
        let again = vigil_fleet::read_frame(&line[..line.len() - 1]);
        assert!(
            matches!(again, Ok(f) if f == frame),
            "a frame read back differently"
        );
    } else if let Ok(batch) = serde_json::from_slice::<vigil_fleet::EventBatch>(bytes) {
        let json = serde_json::to_vec(&batch).unwrap_or_default();
        let again = serde_json::from_slice::<vigil_fleet::EventBatch>(&json);
        assert!(
            matches!(again, Ok(b) if b == batch),
            "a batch read back differently"
        );
    }
}

// === ja4 ===

/// Arbitrary bytes through both ClientHello entry points and every JA4
/// form: no panic, the record cap holds, and a hello that parses
/// fingerprints to a well-formed string.
///
/// Input: byte 0 picks the cap on the handshake body (`MAX_HELLO_BYTES` or
/// a small one, to reach the limit path); the rest is the bytes off the
/// socket.
pub fn ja4(data: &[u8]) {
    let Some((&select, bytes)) = data.split_first() else {
        return;
    };
    let cap = if select & 1 == 0 {
        MAX_HELLO_BYTES
    } else {
        usize::from(select) * 4
    };

    for parsed in [
        ClientHello::from_records_capped(bytes, cap),
        ClientHello::from_handshake_capped(bytes, cap),
    ] {
        let Ok(hello) = parsed else { continue };
        assert!(hello.ciphers().len() * 2 <= cap, "cipher list past the cap");
        for t in [Transport::Tcp, Transport::Quic] {
            let fp = ja4_of(&hello, t).to_string();
            assert_eq!(fp.len(), 36, "ja4 is not a_b_c: {fp}");
            assert!(fp.is_ascii());
            assert_eq!(ja4_o(&hello, t).a(), ja4_of(&hello, t).a());
            assert!(ja4_r(&hello, t).starts_with(&fp[..10]));
            assert!(ja4_ro(&hello, t).starts_with(&fp[..10]));
            // The one-pass pair: its spec form is JA4, and the stable form
            // differs from it in the extension count and `c` at most.
            let (spec, stable) = ja4_both(&hello, t);
            assert_eq!(spec, ja4_of(&hello, t));
            assert!(spec.same_family(&stable), "{spec} {stable}");
        }
    }
}

// === request_headers ===

/// The peer of `request_headers`: inside the trusted `cdn` set, so that the
/// balancer's fingerprint headers are read.
const BALANCER: [u8; 4] = [192, 0, 2, 1];

static REQUEST_ENGINE: LazyLock<Engine> = LazyLock::new(|| {
    let config = EngineConfig {
        client_ip: ClientIpConfig {
            trusted: TrustedProxies::new(vec![("cdn".into(), nets(&["192.0.2.0/24"]))])
                .unwrap_or_default(),
            ..ClientIpConfig::default()
        },
        upstream_fingerprints: UpstreamFingerprints {
            ja4_header: Some(HeaderName::from_static("x-ja4")),
            ja3_header: Some(HeaderName::from_static("x-ja3")),
            trusted_sets: vec!["cdn".into()],
        },
        score: small_store(),
        ..EngineConfig::default()
    };
    Engine::new(config, SessionHashKey::from_bytes([0; 32]))
});

static CAPTURED: LazyLock<TlsFingerprint> = LazyLock::new(|| {
    "t13d1516h2_8daaf6152771_02713d6af862"
        .parse()
        .map(TlsFingerprint::captured)
        .unwrap_or_default()
});

/// Score settings with stores small enough that a long run evicts rather
/// than grows: a fuzzer creates a new session on most inputs.
fn small_store() -> ScoreConfig {
    ScoreConfig {
        max_sessions: 65_536,
        max_users: 65_536,
        ..ScoreConfig::default()
    }
}

/// Arbitrary request headers (`name:value` lines, up to 128) through the
/// whole engine pipeline: session (cookies, bearer tokens), device traits
/// (User-Agent patterns, client hints, Accept-Language, a trusted
/// balancer's `x-ja4`/`x-ja3` headers), scoring and decision. Each input is
/// evaluated twice so that the known-session path runs too.
pub fn request_headers(data: &[u8]) {
    let headers = header_lines(data, MAX_LINES);
    let engine = &*REQUEST_ENGINE;
    let view = RequestView {
        peer: BALANCER.into(),
        headers: &headers,
        now_secs: 0,
        tls: *CAPTURED,
        facts: Default::default(),
    };
    let _ = engine.evaluate(&view, &Policy::default());
    let _ = engine.evaluate(&view, &Policy::default());
}

// === response_headers ===

static RESPONSE_ENGINE: LazyLock<Engine> = LazyLock::new(|| {
    Engine::new(
        EngineConfig {
            score: small_store(),
            ..EngineConfig::default()
        },
        SessionHashKey::from_bytes([0; 32]),
    )
});

/// The response side of one evaluation: arbitrary request headers, then
/// arbitrary response headers (`Set-Cookie`, the user and confirm
/// headers), through `Engine::decide`, `Engine::apply` and
/// `Engine::respond` in the mode the first byte picks — the calls the proxy
/// and the offline evaluator make — twice, from two peers a minute apart.
///
/// Input: byte 0 picks the mode (`% 3`: enforce, monitor, off) and, with
/// bit 2, whether the app confirms; the rest is request lines, a blank
/// line, response lines. Checks that the response side never evaluates
/// again and that only an enforcing route revokes.
pub fn response_headers(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let split = rest
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or(rest.len());
    let request = header_lines(&rest[..split], 64);
    let response = header_lines(rest.get(split + 2..).unwrap_or_default(), 64);
    let enforcement = match mode % 3 {
        0 => Enforcement::Enforce,
        1 => Enforcement::Monitor,
        _ => Enforcement::Off,
    };
    let engine = &*RESPONSE_ENGINE;
    let policy = Policy {
        high: Action::Revoke,
        ..Policy::default()
    };
    let user = HeaderName::from_static("vigil-user");
    let confirm = HeaderName::from_static("vigil-confirm");
    for (peer, now) in [(1u8, 1_700_000_000u64), (2, 1_700_000_060)] {
        let view = RequestView {
            peer: [192, 0, 2, peer].into(),
            headers: &request,
            now_secs: now,
            tls: TlsFingerprint::default(),
            facts: Default::default(),
        };
        let before = engine.evaluations();
        let Ok(verdict) = engine.decide(&view, &policy, ForwardedHeaders::default()) else {
            return;
        };
        let applied = engine.apply(
            &verdict,
            &Decision {
                enforcement,
                route: "fuzz",
                reference: None,
                rule: None,
                tags: None,
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
        assert_eq!(
            engine.evaluations(),
            before + 1,
            "the response side evaluated again"
        );
    }
}

// === session_record ===

/// The engine snapshots are restored into.
static RESTORE_ENGINE: LazyLock<Engine> = LazyLock::new(|| {
    Engine::new(
        EngineConfig {
            score: small_store(),
            ..EngineConfig::default()
        },
        SessionHashKey::from_bytes([1; 32]),
    )
});

/// The engine single records are imported into: nothing else touches it, so
/// no session in it is ever revoked.
static IMPORT_ENGINE: LazyLock<Engine> = LazyLock::new(|| {
    Engine::new(
        EngineConfig {
            score: small_store(),
            ..EngineConfig::default()
        },
        SessionHashKey::from_bytes([1; 32]),
    )
});

/// Snapshot magic of the current format.
const SNAPSHOT_MAGIC: &[u8; 8] = b"VIGILSS4";
/// Record sizes of a snapshot's four sections, in header order: sessions,
/// revocations, user profiles, user flags.
const SECTION_SIZES: [usize; 4] = [SessionState::RECORD_LEN, 32, 328, 24];

/// Arbitrary bytes as a session snapshot file (`Scorer::restore`: bare,
/// behind a valid header, and with counts shaped to the input so that the
/// revocation, profile and flag decoders are reached) and as one session
/// record from a snapshot or another node (`SessionState::decode`, given
/// the right length and version so that the field checks are reached).
/// Checks that what decodes re-encodes to the same state and that an engine
/// imports it as `Scorer::import` promises.
pub fn session_record(data: &[u8]) {
    let _ = SessionState::decode(data);
    let scorer = RESTORE_ENGINE.scorer();
    let now = 1_700_000_000;
    let _ = scorer.restore(data, now);
    let mut snapshot = SNAPSHOT_MAGIC.to_vec();
    snapshot.extend_from_slice(data);
    let _ = scorer.restore(&snapshot, now);
    if let [a, b, c, d, body @ ..] = data {
        let mut counts = [a, b, c, d].map(|n| usize::from(*n % 3));
        let need = |counts: &[usize; 4]| -> usize {
            counts.iter().zip(SECTION_SIZES).map(|(n, s)| n * s).sum()
        };
        if body.len() < need(&counts) {
            counts = [0; 4];
        }
        let mut shaped = SNAPSHOT_MAGIC.to_vec();
        for n in counts {
            shaped.extend_from_slice(&u64::try_from(n).unwrap_or(u64::MAX).to_le_bytes());
        }
        shaped.extend_from_slice(&body[..need(&counts)]);
        let _ = scorer.restore(&shaped, now);
    }

    let mut record = [0u8; SessionState::RECORD_LEN];
    for (d, s) in record.iter_mut().zip(data) {
        *d = *s;
    }
    record[16] = 1;
    if let Ok((key, state)) = SessionState::decode(&record) {
        let again = SessionState::decode(&state.encode(&key));
        assert_eq!(again, Ok((key, state)));
        // With "now" at the end of the record's clock nothing is clamped.
        let scorer = IMPORT_ENGINE.scorer();
        let before = scorer.session(&key);
        assert_eq!(scorer.import(&record, u64::from(u32::MAX)), Ok(key));
        // A state held from an earlier input stays only if it is newer.
        let held = scorer.session(&key);
        assert!(
            held == Some(state) || (before.is_some() && held == before),
            "import lost the record: held {held:?}, imported {state:?}"
        );
    }
}

// === binding_seal ===

/// The fleet key companion values are opened with.
static SEALER: LazyLock<vigil_engine::binding::Sealer> = LazyLock::new(|| {
    vigil_engine::binding::Sealer::new(&SessionHashKey::from_bytes([5; 32]), None)
});

/// Arbitrary bytes as a companion value (`Sealer::unseal`, every seal
/// format: bounded, never panics; what opens re-seals, as format 3, to
/// the same fields, scope included) and as a `Cookie` header carrying it
/// under the bare and the `__Host-` name (`Companion::read`,
/// `Companions::read` and the choice among them per session). Nothing but
/// a seal made with the key opens: the seeds include real seals of all
/// three formats, so that the opening paths and the field checks behind them
/// are reached.
pub fn binding_seal(data: &[u8]) {
    use vigil_engine::binding::{Companion, Companions, MAX_COMPANION_LEN};
    if let Ok(seal) = SEALER.unseal(data) {
        assert!(data.len() <= MAX_COMPANION_LEN);
        if let Some(again) = SEALER.seal(&seal) {
            assert!(again.len() <= MAX_COMPANION_LEN);
            assert_eq!(SEALER.unseal(again.as_bytes()), Ok(seal));
        }
    }
    if let Ok(value) = HeaderValue::from_bytes(data) {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::COOKIE, value);
        let _ = Companion::read(&SEALER, &headers, "vigil_bind");
        let all = Companions::read(&SEALER, &headers, "vigil_bind");
        let session = vigil_engine::SessionKey::from_bytes([0x11; 16]);
        let _ = all.for_session(session, None);
    }
}
