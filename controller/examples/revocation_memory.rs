//! What an edge node's engine holds for revocations streamed from the
//! controller: revokes random session keys the node has never seen (as
//! `vigil-proxy` applies a `session_revoked` change, `Engine::revoke`), and
//! reports resident memory before and after, the time per revocation, and
//! how many of them the engine still holds (`docs/performance.md`, Fleet
//! sync).
//!
//! ```text
//! cargo run --release -p vigil-controller --example revocation_memory -- [revocations] [max_sessions]
//! ```
//!
//! Defaults: 1,000,000 revocations, `max_sessions` 1,000,000 (the engine's
//! default). RSS counts what the allocator took from the kernel, caches'
//! bookkeeping included.

use std::error::Error;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use vigil_engine::{Engine, EngineConfig, ScoreConfig, SessionHashKey, SessionKey};

fn rss_bytes() -> Result<u64, Box<dyn Error>> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .ok_or("no RSS field in /proc/self/statm")?
        .parse()?;
    Ok(pages * 4096)
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn key(state: &mut u64) -> SessionKey {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&splitmix(state).to_be_bytes());
    bytes[8..].copy_from_slice(&splitmix(state).to_be_bytes());
    SessionKey::from_bytes(bytes)
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let revocations: u64 = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let max_sessions: u64 = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let config = EngineConfig {
        score: ScoreConfig {
            max_sessions,
            ..ScoreConfig::default()
        },
        ..EngineConfig::default()
    };
    let engine = Engine::new(config, SessionHashKey::from_bytes([1; 32]));
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let seed = 0x5EED;

    let before = rss_bytes()?;
    let started = Instant::now();
    let mut state = seed;
    for _ in 0..revocations {
        engine.revoke(key(&mut state), now);
    }
    engine.scorer().run_pending_tasks();
    let took = started.elapsed();
    let after = rss_bytes()?;

    let mut state = seed;
    let held = (0..revocations)
        .filter(|_| engine.scorer().is_revoked(&key(&mut state)))
        .count();
    let (minted, budget) = engine.scorer().minted_revocations();
    let grown = after.saturating_sub(before);
    println!(
        "{revocations} revocations of unseen sessions, max_sessions {max_sessions}: \
         RSS {:.1} MiB -> {:.1} MiB (+{:.1} MiB, {:.0} bytes per revocation held)",
        before as f64 / 1_048_576.0,
        after as f64 / 1_048_576.0,
        grown as f64 / 1_048_576.0,
        grown as f64 / held.max(1) as f64,
    );
    println!(
        "{:.2} µs per revoke ({:.0}/s on one thread); held {held} of {revocations}; \
         minted budget {minted} of {budget}",
        took.as_secs_f64() * 1e6 / revocations.max(1) as f64,
        revocations as f64 / took.as_secs_f64(),
    );
    Ok(())
}
