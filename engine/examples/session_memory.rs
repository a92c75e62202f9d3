//! Measures the memory a tracked session and a user profile cost, through
//! the public engine: resident set size before and after filling the
//! stores, divided by the entries added.
//!
//! ```text
//! cargo run --release -p vigil-engine --example session_memory -- [sessions] [users]
//! ```
//!
//! Defaults: 1,000,000 sessions, then 200,000 users with one session each,
//! then as many sessions again on an engine with the rotating binding on,
//! each with its companion issued (docs/bound-sessions.md).
//! RSS counts what the allocator took from the kernel, so the figure
//! includes the cache's own bookkeeping and allocator overhead, not just
//! `size_of` of the state.
//!
//! The bound sessions are measured in a process of their own (this
//! example run again with `--bound`): freed memory of the first engine
//! stays resident in the allocator's heap, and a second engine in the same
//! process would fill it without the RSS growing — which once made the
//! binding's tables look free.

use std::error::Error;
use std::net::{IpAddr, Ipv4Addr};

use http::HeaderMap;
use vigil_engine::binding::BindingConfig;
use vigil_engine::{
    Enforcement, Engine, EngineConfig, Policy, RequestView, ResponseView, ScoreConfig,
    SessionHashKey, SessionState,
};

const UAS: [&str; 3] = [
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
];

fn rss_bytes() -> Result<u64, Box<dyn Error>> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .ok_or("no RSS field in /proc/self/statm")?
        .parse()?;
    Ok(pages * 4096)
}

fn fill(engine: &Engine, from: u64, n: u64, bind: bool) -> Result<(), Box<dyn Error>> {
    let policy = Policy::default();
    let empty = HeaderMap::new();
    for i in from..from + n {
        let mut h = HeaderMap::new();
        h.insert("cookie", format!("session=s{i}").parse()?);
        h.insert("user-agent", UAS[(i % 3) as usize].parse()?);
        h.insert("accept-language", "en-GB,en;q=0.9".parse()?);
        if bind {
            let key = engine
                .key_for_credential(format!("s{i}").as_bytes())
                .ok_or("no session cookie configured")?;
            engine.bind_user(key, &format!("user{i}"), 1_700_000_000);
        }
        let host = u32::try_from(i % (1 << 24)).unwrap_or(0);
        let peer = IpAddr::V4(Ipv4Addr::from(0x5100_0000 + host));
        let verdict = engine.evaluate(
            &RequestView {
                peer,
                headers: &h,
                now_secs: 1_700_000_000,
                tls: Default::default(),
                facts: Default::default(),
            },
            &policy,
        )?;
        // Issues the companion on an engine with the binding on.
        engine.binding_cookies(
            &verdict,
            &ResponseView {
                headers: &empty,
                now_secs: 1_700_000_000,
                user_header: None,
                confirm_header: None,
                app_confirms: false,
            },
            Enforcement::Enforce,
        );
    }
    engine.scorer().run_pending_tasks();
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1).peekable();
    let bound_only = args.next_if(|a| a == "--bound").is_some();
    let sessions: u64 = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let users: u64 = args.next().map_or(Ok(200_000), |a| a.parse())?;
    if bound_only {
        let per_bound = bound(sessions)?;
        println!("{per_bound}");
        return Ok(());
    }
    let config = EngineConfig {
        score: ScoreConfig {
            max_sessions: sessions + users + 10,
            ..ScoreConfig::default()
        },
        ..EngineConfig::default()
    };
    let engine = Engine::new(config, SessionHashKey::from_bytes([1; 32]));
    fill(&engine, 0, 1000, false)?;

    let before = rss_bytes()?;
    fill(&engine, 1000, sessions, false)?;
    let after = rss_bytes()?;
    let tracked = engine.scorer().tracked_sessions() - 1000;
    let per_session = (after - before) as f64 / tracked as f64;
    println!(
        "sessions: {tracked} tracked, {:.1} MiB, {per_session:.0} bytes each (state {} bytes, record {} bytes)",
        (after - before) as f64 / 1_048_576.0,
        std::mem::size_of::<SessionState>(),
        SessionState::RECORD_LEN,
    );

    let before = rss_bytes()?;
    fill(&engine, 10_000_000, users, true)?;
    let after = rss_bytes()?;
    let profiles = engine.scorer().tracked_users();
    let per_user = (after - before) as f64 / profiles as f64 - per_session;
    println!("users: {profiles} profiles, {per_user:.0} bytes each beyond their session's");
    drop(engine);

    let out = std::process::Command::new(std::env::current_exe()?)
        .arg("--bound")
        .arg(sessions.to_string())
        .output()?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
    }
    print!("{}", String::from_utf8_lossy(&out.stderr));
    let per_bound: f64 = String::from_utf8(out.stdout)?.trim().parse()?;
    println!(
        "bound sessions (fresh process): {per_bound:.0} bytes each, {:.0} more than a session without",
        per_bound - per_session
    );
    Ok(())
}

/// Bytes per bound session, on an engine with the binding on holding
/// `sessions` sessions each with its companion issued.
fn bound(sessions: u64) -> Result<f64, Box<dyn Error>> {
    let config = EngineConfig {
        score: ScoreConfig {
            max_sessions: sessions + 10,
            ..ScoreConfig::default()
        },
        binding: BindingConfig {
            enabled: true,
            ..BindingConfig::default()
        },
        ..EngineConfig::default()
    };
    let engine = Engine::new(config, SessionHashKey::from_bytes([1; 32]));
    fill(&engine, 0, 1000, false)?;
    let before = rss_bytes()?;
    fill(&engine, 1000, sessions, false)?;
    let after = rss_bytes()?;
    let bound = engine.bindings() - 1000;
    eprintln!(
        "bound sessions: {bound} with a binding, {} tracked",
        engine.scorer().tracked_sessions()
    );
    Ok((after - before) as f64 / bound as f64)
}
