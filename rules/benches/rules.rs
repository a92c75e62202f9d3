//! What rules add to a decision: 50 realistic rules (most scoped away from
//! the request, the rest reading risk, reasons, device, country, headers,
//! paths and a couple of patterns) evaluated over the facts of a real
//! engine decision, against the same decision without rules; and the same
//! 50 conditions through the `cel` crate's interpreter, building its
//! context per request as it must — the cost that justifies Vigil's own
//! evaluator (src/compile.rs).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "bench set-up: a panic is a broken bench"
)]

use std::collections::HashMap;
use std::hint::black_box;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use cel::extractors::This;
use cel::{Context, ExecutionError, Program, Value as Cel};
use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use vigil_engine::{
    Action, Engine, EngineConfig, ForwardedHeaders, Policy, RequestFacts, RequestView,
    SessionHashKey, TlsFingerprint,
};
use vigil_rules::RuleSet;

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// (scope lines, condition, action): 50 rules a security team could
/// write for a few apps behind one proxy.
fn rules() -> Vec<(String, String, &'static str)> {
    let mut out: Vec<(String, String, &'static str)> = Vec::new();
    let mut add = |scope: String, condition: String, action: &'static str| {
        out.push((scope, condition, action));
    };
    // Other apps: scoped by host, never in scope for this request.
    for (i, host) in [
        "admin.example.com",
        "*.internal.example.com",
        "billing.example.com",
        "api.example.com",
        "*.partners.example.com",
        "sso.example.com",
        "grafana.example.com",
        "ci.example.com",
        "docs.example.com",
        "status.example.com",
    ]
    .iter()
    .enumerate()
    {
        add(
            format!("hosts = [\"{host}\"]"),
            format!("risk.level != \"low\" || risk.score > {}", 20 + i),
            ["block", "step_up"][i % 2],
        );
    }
    // This app's sensitive paths: in host scope, not in path scope.
    for (i, prefix) in [
        "/admin",
        "/api/v2/payments",
        "/billing",
        "/account/delete",
        "/export",
        "/settings/security",
        "/oauth/authorize",
        "/internal",
        "/graphql",
        "/upload",
    ]
    .iter()
    .enumerate()
    {
        add(
            format!("hosts = [\"app.example.com\"]\npath_prefixes = [\"{prefix}\"]"),
            format!(
                "\"device_changed\" in risk.reasons || risk.score >= {}",
                30 + i
            ),
            ["step_up", "block"][i % 2],
        );
    }
    // Methods.
    add(
        "methods = [\"DELETE\", \"PUT\"]".into(),
        "!user.known".into(),
        "block",
    );
    add(
        "methods = [\"POST\"]".into(),
        "session.new && risk.level == \"medium\"".into(),
        "step_up",
    );
    // Everywhere: conditions that are read and do not match.
    let everywhere: [(&str, &str); 28] = [
        ("risk.level == \"high\"", "block"),
        ("risk.level == \"medium\" && !device.matches", "step_up"),
        ("\"impossible_travel\" in risk.reasons", "revoke"),
        (
            "\"concurrent_networks\" in risk.reasons && risk.score > 40",
            "revoke",
        ),
        (
            "\"revoked\" in risk.reasons || \"user_revoked\" in risk.reasons",
            "block",
        ),
        ("size(risk.reasons) >= 3", "step_up"),
        (
            "\"ja4_mismatch\" in risk.reasons && device.tls_source == \"captured\"",
            "block",
        ),
        ("\"new_country_for_user\" in risk.reasons", "step_up"),
        (
            "device.browser == \"curl\" || device.class == \"tool\"",
            "block",
        ),
        (
            "device.browser in [\"opera\", \"samsung\"] && device.major < 100",
            "step_up",
        ),
        ("device.class == \"bot\"", "block"),
        (
            "device.browser == \"chrome\" && device.major < 100",
            "block",
        ),
        (
            "device.os == \"linux\" && device.class == \"mobile\"",
            "step_up",
        ),
        (
            "client.country in [\"KP\", \"IR\", \"SY\", \"CU\", \"RU\"]",
            "block",
        ),
        (
            "client.country != \"\" && client.country in [\"CN\", \"BY\"] && !user.known",
            "step_up",
        ),
        ("client.asn in [4134, 4837, 9808]", "step_up"),
        (
            "client.network_change in [\"different_country\", \"different_asn\"]",
            "step_up",
        ),
        ("client.chain_length > 3", "block"),
        (
            "request.headers[\"User-Agent\"].contains(\"python-requests\")",
            "block",
        ),
        ("request.headers[\"User-Agent\"] == \"\"", "block"),
        ("request.headers[\"X-Debug\"] != \"\"", "block"),
        (
            "request.headers[\"user-agent\"].matches(\"(?i)(sqlmap|nikto|nmap|masscan)\")",
            "revoke",
        ),
        (
            "request.path.startsWith(\"/wp-admin\") || request.path.startsWith(\"/.git\")",
            "block",
        ),
        ("request.path.matches(\"^/api/v[0-9]+/admin/\")", "block"),
        ("request.path.endsWith(\".php\")", "block"),
        ("session.age > 2592000", "step_up"),
        ("session.credentials > 1 && risk.score > 10", "step_up"),
        ("time.hour < 5 && risk.level != \"low\"", "step_up"),
    ];
    for (c, a) in everywhere {
        add(String::new(), c.to_owned(), a);
    }
    assert_eq!(out.len(), 50);
    out
}

fn rule_file() -> String {
    let mut text = String::new();
    for (i, (scope, condition, action)) in rules().into_iter().enumerate() {
        text.push_str(&format!(
            "[[rule]]\nname = \"rule-{i}\"\n{scope}\ncondition = '''{condition}'''\naction = \"{action}\"\n\n"
        ));
    }
    text
}

fn headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", "app.example.com".parse().unwrap());
    h.insert("user-agent", CHROME.parse().unwrap());
    h.insert(
        "accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
            .parse()
            .unwrap(),
    );
    h.insert("accept-language", "en-GB,en;q=0.9".parse().unwrap());
    h.insert(
        "cookie",
        "_ga=GA1.2.123456789.1700000000; theme=dark; session=Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5"
            .parse()
            .unwrap(),
    );
    h
}

/// `matches` as cel's standard library defines it (the crate is built
/// without its `regex` feature).
fn matches(This(this): This<Arc<String>>, re: Arc<String>) -> Result<bool, ExecutionError> {
    regex::Regex::new(&re)
        .map(|r| r.is_match(&this))
        .map_err(|e| ExecutionError::function_error("matches", e))
}

thread_local! {
    static PATTERNS: std::cell::RefCell<HashMap<String, regex::Regex>> =
        std::cell::RefCell::new(HashMap::new());
}

/// `matches` with each pattern compiled once: what the interpreter costs
/// without cel's per-call `Regex::new`.
fn matches_cached(This(this): This<Arc<String>>, re: Arc<String>) -> Result<bool, ExecutionError> {
    PATTERNS.with(|p| {
        let mut p = p.borrow_mut();
        if !p.contains_key(re.as_str()) {
            let compiled =
                regex::Regex::new(&re).map_err(|e| ExecutionError::function_error("matches", e))?;
            p.insert(re.to_string(), compiled);
        }
        Ok(p[re.as_str()].is_match(&this))
    })
}

/// The facts of one request as owned values, from the verdict and the
/// request: what the interpreter's context is built from.
struct Snapshot {
    strings: Vec<(&'static str, String)>,
    ints: Vec<(&'static str, i64)>,
    bools: Vec<(&'static str, bool)>,
    reasons: Vec<String>,
    headers: Vec<(&'static str, String)>,
}

fn context(s: &Snapshot, cached: bool) -> Context<'static, 'static> {
    let mut ctx = Context::default();
    if cached {
        ctx.add_function("matches", matches_cached).unwrap();
    } else {
        ctx.add_function("matches", matches).unwrap();
    }
    let mut groups: HashMap<&str, HashMap<String, Cel>> = HashMap::new();
    let mut put = |name: &str, v: Cel| {
        let (group, rest) = name.split_once('.').unwrap();
        groups
            .entry(match group {
                "request" => "request",
                "session" => "session",
                "client" => "client",
                "device" => "device",
                "risk" => "risk",
                "user" => "user",
                _ => "time",
            })
            .or_default()
            .insert(rest.to_owned(), v);
    };
    for (n, v) in &s.strings {
        put(n, v.clone().into());
    }
    for (n, v) in &s.ints {
        put(n, (*v).into());
    }
    for (n, v) in &s.bools {
        put(n, (*v).into());
    }
    put("risk.reasons", s.reasons.clone().into());
    let headers: HashMap<String, Cel> = s
        .headers
        .iter()
        .map(|(n, v)| ((*n).to_owned(), v.clone().into()))
        .collect();
    put("request.headers", headers.into());
    for (name, map) in groups {
        ctx.add_variable_from_value(name, map);
    }
    ctx
}

fn bench(c: &mut Criterion) {
    let engine = Engine::new(EngineConfig::default(), SessionHashKey::from_bytes([5; 32]));
    let policy = Policy::default();
    let set = RuleSet::parse_files(&[(PathBuf::from("rules.toml"), rule_file())])
        .unwrap_or_else(|e| panic!("{e}"));
    let peer: IpAddr = "192.0.2.44".parse().unwrap();
    let h = headers();
    let request = RequestView {
        peer,
        headers: &h,
        now_secs: 1_700_000_000,
        tls: TlsFingerprint::captured("t13d1516h2_8daaf6152771_02713d6af862".parse().unwrap()),
        facts: RequestFacts {
            method: "GET",
            scheme: "https",
            host: "app.example.com",
            path: "/account/settings",
            listener: "public",
            route: "app",
        },
    };
    // Warm: the session's baseline is known.
    engine.evaluate(&request, &policy).unwrap();
    let fwd = ForwardedHeaders::NONE;
    let v = engine
        .decide_with_rules(&request, &policy, &set, fwd)
        .unwrap();
    assert_eq!(v.action, Action::Allow);
    assert_eq!(v.ruling.rule, None, "no rule decides: all 50 are looked at");

    let snapshot = Snapshot {
        strings: vec![
            ("request.method", "GET".into()),
            ("request.scheme", "https".into()),
            ("request.host", "app.example.com".into()),
            ("request.path", "/account/settings".into()),
            ("request.route", "app".into()),
            ("request.listener", "public".into()),
            ("client.ip", v.client.addr.to_string()),
            ("client.peer", v.client.peer.to_string()),
            ("client.provider", String::new()),
            ("client.egress", String::new()),
            ("client.country", String::new()),
            ("client.network_change", "same".into()),
            ("device.ja4", "t13d1516h2_8daaf6152771_02713d6af862".into()),
            ("device.ja4_a", "t13d1516h2".into()),
            ("device.tls_source", "captured".into()),
            ("device.browser", v.device.browser.as_str().into()),
            ("device.os", v.device.platform.as_str().into()),
            ("device.class", v.device.class.as_str().into()),
            ("risk.level", v.risk.level.as_str().into()),
            ("risk.default", "allow".into()),
            ("risk.login.level", "low".into()),
            ("risk.session.level", "low".into()),
            ("risk.entity.level", "low".into()),
        ],
        ints: vec![
            ("session.age", 0),
            ("session.idle", 0),
            ("session.credentials", 1),
            ("client.chain_length", 0),
            ("client.asn", 0),
            ("device.major", i64::from(v.device.major)),
            ("risk.score", i64::from(v.risk.score)),
            ("risk.login.score", 0),
            ("risk.session.score", 0),
            ("risk.entity.score", 0),
            ("time.hour", 22),
            ("time.weekday", 2),
        ],
        bools: vec![
            ("session.present", true),
            ("session.new", false),
            ("session.user_known", false),
            ("device.matches", true),
            ("user.known", false),
            ("user.learning", false),
        ],
        reasons: Vec::new(),
        headers: vec![
            ("User-Agent", CHROME.into()),
            ("user-agent", CHROME.into()),
            ("X-Debug", String::new()),
        ],
    };
    let programs: Vec<(Program, &vigil_rules::Rule)> = set
        .rules()
        .iter()
        .map(|r| {
            let source = r.condition_source.as_deref().unwrap();
            (Program::compile(source).unwrap(), r)
        })
        .collect();
    // The interpreter agrees on this request: nothing matches.
    {
        let ctx = context(&snapshot, false);
        for (p, r) in programs
            .iter()
            .filter(|(_, r)| r.scope.matches(&request.facts))
        {
            assert_eq!(p.execute(&ctx), Ok(Cel::Bool(false)), "{}", r.name);
        }
    }

    let mut g = c.benchmark_group("decide");
    g.bench_function("no_rules", |b| {
        b.iter(|| engine.decide(black_box(&request), &policy, fwd).unwrap())
    });
    g.bench_function("50_rules", |b| {
        b.iter(|| {
            engine
                .decide_with_rules(black_box(&request), &policy, &set, fwd)
                .unwrap()
        })
    });
    g.finish();
    latency(&engine, &request, &policy, &set);

    let mut g = c.benchmark_group("cel_interpreter");
    // Per request: the context from the request's facts, then the same
    // scope checks and first match as the rule set.
    let interpret = |cached: bool| {
        let ctx = context(black_box(&snapshot), cached);
        let mut decided = None;
        for (i, (p, r)) in programs.iter().enumerate() {
            if !r.scope.matches(&request.facts) {
                continue;
            }
            if p.execute(&ctx) == Ok(Cel::Bool(true)) {
                decided = Some(i);
                break;
            }
        }
        decided
    };
    g.bench_function("50_rules", |b| b.iter(|| interpret(false)));
    // The same with patterns compiled once (cel compiles one per call).
    g.bench_function("50_rules_patterns_cached", |b| b.iter(|| interpret(true)));
    // Only building the context.
    g.bench_function("context_only", |b| {
        b.iter(|| context(black_box(&snapshot), true))
    });
    g.finish();
}

/// Per-decision latency without and with the 50 rules, decision by
/// decision (criterion reports medians, not tails), the two interleaved so
/// that both see the same machine: p50, p90, p99 and p99.9 of each.
/// `VIGIL_LATENCY_N` sets the number (default 200,000): fewer to count
/// instructions under callgrind with a filter that runs no criterion bench.
fn latency(engine: &Engine, request: &RequestView<'_>, policy: &Policy, set: &RuleSet) {
    let fwd = ForwardedHeaders::NONE;
    let n: usize = std::env::var("VIGIL_LATENCY_N")
        .ok()
        .map_or(200_000, |v| v.parse().unwrap());
    let (mut none, mut fifty) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let start = Instant::now();
        black_box(engine.decide(black_box(request), policy, fwd).unwrap());
        none.push(start.elapsed().as_nanos());
        let start = Instant::now();
        black_box(
            engine
                .decide_with_rules(black_box(request), policy, set, fwd)
                .unwrap(),
        );
        fifty.push(start.elapsed().as_nanos());
    }
    for (name, nanos) in [("no_rules", &mut none), ("50_rules", &mut fifty)] {
        nanos.sort_unstable();
        // Per-mille ranks, exact in integers.
        let at = |per_mille: usize| nanos[(n * per_mille / 1000).min(n - 1)] as f64 / 1000.0;
        println!(
            "decide/latency {name} ({n} decisions, one thread): \
             p50 {:.2} µs, p90 {:.2} µs, p99 {:.2} µs, p99.9 {:.2} µs",
            at(500),
            at(900),
            at(990),
            at(999),
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
