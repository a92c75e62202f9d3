//! A load run of fleet sync: one controller in-process, `N` edge
//! subscribers on `GET /v1/sync`, and a writer revoking sessions at a target
//! rate. Reports what was committed, what every subscriber received, the
//! latency from a revocation being issued to each subscriber parsing it, and
//! the process's peak RSS (`docs/performance.md`, Fleet sync).
//!
//! ```text
//! cargo run --release -p vigil-controller --example sync_bench -- \
//!     --store sqlite|postgres --subscribers 100 --rate 10000 --seconds 15 \
//!     --batch 100 --mode append|events|admin [--writers W]
//! ```
//!
//! Modes — how the writer revokes:
//! - `append`: `Store::append` directly, `--batch` changes per transaction.
//!   The store's own throughput; a direct append is another writer to the
//!   controller, as another replica is: on PostgreSQL its `NOTIFY` wakes the
//!   controller's tail, on SQLite the tail finds it by its poll (1 s).
//! - `events`: `POST /v1/events`, `--batch` revocations per request (at
//!   most 500), each with its evidence (the node's detection just before
//!   it: two events a revocation, `docs/controller.md`, Intake rules),
//!   posted as each node in turn (each allowed 1,000,000 a minute): one
//!   transaction per request, and it wakes the streams. The batched API
//!   path.
//! - `admin`: `POST /v1/admin/sessions/revoke`, one session per request and
//!   per transaction, from `--writers` concurrent clients (default 8).
//!
//! Each change's session key carries its index in its first 8 bytes, so a
//! subscriber finds when it was issued without a shared map keyed by
//! sequence. Latency is from the instant the writer started the write
//! (request sent, or `append` called) to the instant a subscriber parsed the
//! frame holding it, over every (subscriber, change) pair; the write's own
//! duration is reported beside it. Everything — controller, store client,
//! subscribers, writer — shares this process and its cores.

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vigil_controller::store::Store;
use vigil_fleet::{Change, EventBatch, Frame, NodeEvent, NodeEventKind, SessionId, VERSION};

const ADMIN: &str = "bench-admin-token-0123456789";
const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";
/// How long subscribers may take to catch up after the writer stops.
const DRAIN: Duration = Duration::from_secs(30);

type BoxError = Box<dyn Error + Send + Sync>;

/// How the writer revokes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Append,
    Events,
    Admin,
}

/// The run's parameters.
#[derive(Debug, Clone)]
struct Args {
    postgres: bool,
    subscribers: usize,
    rate: u64,
    seconds: u64,
    batch: usize,
    mode: Mode,
    writers: usize,
}

/// A latency histogram shared by every subscriber: 10 µs buckets below
/// 10 ms, 1 ms buckets above, up to a minute.
#[derive(Debug)]
struct Histogram {
    buckets: Vec<AtomicU64>,
    max_us: AtomicU64,
}

/// What the writers and subscribers share.
#[derive(Debug)]
struct Shared {
    start: Instant,
    /// Per change index: nanoseconds from `start` at which its write
    /// started, plus one (0: not issued yet).
    issued: Vec<AtomicU64>,
    /// Changes committed (written and acknowledged).
    committed: AtomicU64,
    /// How many changes a subscriber waits for: all that may be issued,
    /// until the writers are done, then all that were committed.
    stop_at: AtomicU64,
    latency: Histogram,
    write: Histogram,
}

/// One subscriber's tally.
#[derive(Debug, Default)]
struct Tally {
    received: u64,
    frames: u64,
    gaps: u64,
    unknown: u64,
    last_receive: Option<Instant>,
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime
        .block_on(run(args))
        .map_err(|e| -> Box<dyn Error> { e })
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut args = Args {
        postgres: false,
        subscribers: 100,
        rate: 1_000,
        seconds: 10,
        batch: 100,
        mode: Mode::Append,
        writers: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--store" => {
                args.postgres = match value.as_str() {
                    "sqlite" => false,
                    "postgres" => true,
                    other => return Err(format!("--store {other}: sqlite or postgres").into()),
                }
            }
            "--subscribers" => args.subscribers = value.parse()?,
            "--rate" => args.rate = value.parse()?,
            "--seconds" => args.seconds = value.parse()?,
            "--batch" => args.batch = value.parse()?,
            "--writers" => args.writers = value.parse()?,
            "--mode" => {
                args.mode = match value.as_str() {
                    "append" => Mode::Append,
                    "events" => Mode::Events,
                    "admin" => Mode::Admin,
                    other => {
                        return Err(format!("--mode {other}: append, events or admin").into());
                    }
                }
            }
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if args.mode == Mode::Admin {
        args.batch = 1;
    }
    if args.writers == 0 {
        args.writers = if args.mode == Mode::Admin { 8 } else { 1 };
    }
    if args.batch == 0 || args.batch > vigil_fleet::MAX_EVENTS || args.rate == 0 {
        return Err("--batch 1 to 1000 and --rate above 0".into());
    }
    if args.mode == Mode::Events && args.batch > vigil_fleet::MAX_EVENTS / 2 {
        return Err("--batch 1 to 500 with --mode events (two events a revocation)".into());
    }
    Ok(args)
}

async fn run(args: Args) -> Result<(), BoxError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    sqlx::any::install_default_drivers();
    let db = if args.postgres {
        let name = format!("vigil_bench_{:016x}", seed());
        let admin = sqlx::AnyPool::connect(PG_ADMIN).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await?;
        Some(name)
    } else {
        None
    };
    let dir = tempfile::tempdir()?;
    let store_url = match &db {
        Some(name) => format!("postgres://postgres@127.0.0.1:5432/{name}"),
        None => format!("sqlite://{}", dir.path().join("controller.db").display()),
    };
    let outcome = bench(&args, &dir, &store_url).await;
    if let Some(name) = db {
        let admin = sqlx::AnyPool::connect(PG_ADMIN).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&admin)
        .await?;
    }
    outcome
}

async fn bench(args: &Args, dir: &tempfile::TempDir, store_url: &str) -> Result<(), BoxError> {
    // The controller, with one node (and token) per subscriber, and at
    // least one: the `events` writer posts as node 0.
    std::fs::write(dir.path().join("hash.key"), "11".repeat(32))?;
    std::fs::write(dir.path().join("admin.token"), ADMIN)?;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut toml = format!(
        "listen = \"{addr}\"\nstore = {store_url:?}\nhash_key_file = \"hash.key\"\nadmin_token_file = \"admin.token\"\nnode_events_per_minute = 1000000\nnode_revocations_per_minute = 1000000\n"
    );
    for i in 0..args.subscribers.max(1) {
        toml.push_str(&format!(
            "[[nodes]]\nname = \"n{i}\"\ntoken_sha256 = \"{}\"\n",
            hex::encode(vigil_controller::config::token_hash(&node_token(i)))
        ));
    }
    let path = dir.path().join("controller.toml");
    std::fs::write(&path, toml)?;
    let config = vigil_controller::Config::load(&path)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(vigil_controller::run(config, async {
        let _ = stopped.await;
    }));
    let base = format!("http://{addr}");
    wait_healthy(&base).await?;

    let total = usize::try_from(args.rate.saturating_mul(args.seconds))?;
    let shared = Arc::new(Shared {
        start: Instant::now(),
        issued: (0..total).map(|_| AtomicU64::new(0)).collect(),
        committed: AtomicU64::new(0),
        stop_at: AtomicU64::new(u64::MAX),
        latency: Histogram::new(),
        write: Histogram::new(),
    });

    // Subscribers: each its own client and connection, past the empty
    // snapshot before the writer starts.
    let mut subscribers = Vec::new();
    let mut ready = Vec::new();
    for i in 0..args.subscribers {
        let (tx, rx) = tokio::sync::oneshot::channel();
        ready.push(rx);
        subscribers.push(tokio::spawn(subscribe(
            base.clone(),
            node_token(i),
            Arc::clone(&shared),
            tx,
        )));
    }
    for rx in ready {
        rx.await??;
    }

    let store = Store::open(store_url).await?;
    let cpu_before = cpu_secs()?;
    let next_batch = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..args.writers {
        writers.push(tokio::spawn(write(
            args.clone(),
            store.clone(),
            base.clone(),
            Arc::clone(&shared),
            Arc::clone(&next_batch),
            t0,
        )));
    }
    for w in writers {
        w.await??;
    }
    let write_secs = t0.elapsed().as_secs_f64();
    let committed = shared.committed.load(Ordering::Relaxed);
    shared.stop_at.store(committed, Ordering::Relaxed);

    // Let the subscribers catch up; one still behind at the deadline counts
    // as incomplete.
    let deadline = tokio::time::Instant::now() + DRAIN;
    let mut tallies = Vec::new();
    for s in subscribers {
        match tokio::time::timeout_at(deadline, s).await {
            Ok(joined) => tallies.push(joined??),
            Err(_) => eprintln!("a subscriber did not catch up within {DRAIN:?}"),
        }
    }
    let cpu = cpu_secs()? - cpu_before;
    let scraped = reqwest::get(format!("{base}/metrics"))
        .await?
        .text()
        .await?;
    let _ = stop.send(());
    controller.abort();

    report(args, &shared, committed, write_secs, t0, &tallies)?;
    let value = |series: &str| -> f64 {
        scraped
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    };
    println!(
        "load average (1, 5, 15 min) at the end: {}",
        std::fs::read_to_string("/proc/loadavg")?
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let tail_frames = value("vigil_controller_frame_changes_count");
    println!(
        "controller: the tail encoded {tail_frames:.0} frames of {:.0} changes on average; frames written shared {:.0}, from a stream's own store reads {:.0}; lagged streams {:.0}; commits {:.0}, mean {:.1} ms",
        value("vigil_controller_frame_changes_sum") / tail_frames.max(1.0),
        value("vigil_controller_frames_sent_total{source=\"shared\"}"),
        value("vigil_controller_frames_sent_total{source=\"store\"}"),
        value("vigil_controller_stream_lagged_total"),
        value("vigil_controller_commit_seconds_count"),
        value("vigil_controller_commit_seconds_sum") * 1e3
            / value("vigil_controller_commit_seconds_count").max(1.0),
    );
    let delivered: u64 = tallies.iter().map(|t| t.received).sum();
    if delivered > 0 {
        println!(
            "CPU of this process (controller, subscribers, writer; not the PostgreSQL server): {cpu:.1} s over {:.1} s, {:.1} µs per change delivered to one subscriber",
            t0.elapsed().as_secs_f64(),
            cpu * 1e6 / delivered as f64,
        );
    } else {
        println!(
            "CPU of this process: {cpu:.1} s over {:.1} s",
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn node_token(i: usize) -> String {
    format!("bench-node-token-{i:06}")
}

async fn wait_healthy(base: &str) -> Result<(), BoxError> {
    let client = reqwest::Client::builder().build()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        if Instant::now() > deadline {
            return Err("the controller did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A session key whose first 8 bytes are `index`, the rest random.
fn session_for(index: u64, rng: &mut u64) -> SessionId {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&index.to_be_bytes());
    id[8..].copy_from_slice(&splitmix(rng).to_be_bytes());
    SessionId(id)
}

fn index_of(session: &SessionId) -> Option<usize> {
    let bytes: [u8; 8] = session.0[..8].try_into().ok()?;
    usize::try_from(u64::from_be_bytes(bytes)).ok()
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn seed() -> u64 {
    let mut s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    splitmix(&mut s)
}

fn nanos_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// One writer: takes the next batch number from `next`, waits for its slot
/// in the schedule (`batch / rate` seconds apart), writes it. A writer
/// behind schedule writes at once: the achieved rate is then what the path
/// sustains. No batch is started after one and a half times `--seconds`.
async fn write(
    args: Args,
    store: Store,
    base: String,
    shared: Arc<Shared>,
    next: Arc<AtomicU64>,
    t0: Instant,
) -> Result<(), BoxError> {
    let client = reqwest::Client::builder().build()?;
    let mut rng = seed();
    let batch = args.batch as u64;
    let total = shared.issued.len() as u64;
    let now_secs = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let give_up = t0 + Duration::from_millis(args.seconds * 1_500);
    loop {
        let k = next.fetch_add(1, Ordering::Relaxed);
        let first = k * batch;
        if first >= total || Instant::now() > give_up {
            return Ok(());
        }
        let slot = t0 + Duration::from_secs_f64(first as f64 / args.rate as f64);
        tokio::time::sleep_until(slot.into()).await;
        let last = (first + batch).min(total);
        let sessions: Vec<SessionId> = (first..last).map(|i| session_for(i, &mut rng)).collect();
        let started = Instant::now();
        let mark = nanos_since(shared.start) + 1;
        for i in first..last {
            if let Some(slot) = shared.issued.get(usize::try_from(i)?) {
                slot.store(mark, Ordering::Relaxed);
            }
        }
        match args.mode {
            Mode::Append => {
                let changes: Vec<Change> = sessions
                    .iter()
                    .map(|&session| Change::SessionRevoked {
                        session,
                        at: now_secs,
                        vouched: true,
                    })
                    .collect();
                store.append(&changes, now_secs).await?;
            }
            Mode::Events => {
                let events = sessions
                    .iter()
                    .zip(first..)
                    .flat_map(|(&session, i)| {
                        [
                            NodeEvent {
                                id: format!("d{i}"),
                                kind: NodeEventKind::Detection {
                                    reference: format!("r{i}"),
                                    session: Some(session),
                                    user: None,
                                    route: "bench".to_owned(),
                                    rule: None,
                                    action: "revoke".to_owned(),
                                    enforced: true,
                                    score: 90,
                                    reasons: Vec::new(),
                                    at: now_secs,
                                    facts: None,
                                },
                            },
                            NodeEvent {
                                id: format!("e{i}"),
                                kind: NodeEventKind::SessionRevoked {
                                    session,
                                    user: None,
                                    reference: Some(format!("r{i}")),
                                    at: now_secs,
                                },
                            },
                        ]
                    })
                    .collect();
                let body = serde_json::to_string(&EventBatch { v: VERSION, events })?;
                let r = client
                    .post(format!("{base}/v1/events"))
                    // Round the nodes, each within its allowance.
                    .bearer_auth(node_token(usize::try_from(k)? % args.subscribers.max(1)))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                if !r.status().is_success() {
                    return Err(format!("POST /v1/events: {}", r.status()).into());
                }
            }
            Mode::Admin => {
                for session in &sessions {
                    let r = client
                        .post(format!("{base}/v1/admin/sessions/revoke"))
                        .bearer_auth(ADMIN)
                        .header("content-type", "application/json")
                        .body(format!("{{\"session\":\"{session}\"}}"))
                        .send()
                        .await?;
                    if !r.status().is_success() {
                        return Err(format!("POST revoke: {}", r.status()).into());
                    }
                }
            }
        }
        shared.write.record(started.elapsed());
        shared.committed.fetch_add(last - first, Ordering::Relaxed);
    }
}

/// One edge subscriber: opens the stream at 0, reads the empty snapshot,
/// signals `ready`, then tallies every change until it has as many as
/// `stop_at`.
async fn subscribe(
    base: String,
    token: String,
    shared: Arc<Shared>,
    ready: tokio::sync::oneshot::Sender<Result<(), BoxError>>,
) -> Result<Tally, BoxError> {
    let client = reqwest::Client::builder().build()?;
    let mut response = client
        .get(format!("{base}/v1/sync?since=0"))
        .bearer_auth(&token)
        // A node of this version: the shared frames, not the downgrade.
        .header(vigil_fleet::VERSION_HEADER, vigil_fleet::VERSION)
        .send()
        .await?;
    if response.status() != 200 {
        let e = format!("GET /v1/sync: {}", response.status());
        let _ = ready.send(Err(e.clone().into()));
        return Err(e.into());
    }
    let mut ready = Some(ready);
    let mut buffer: Vec<u8> = Vec::new();
    let mut tally = Tally::default();
    let mut cursor = 0u64;
    while tally.received < shared.stop_at.load(Ordering::Relaxed) {
        // Bounded, so that the end of the writers is seen without a frame.
        let Ok(chunk) = tokio::time::timeout(Duration::from_millis(100), response.chunk()).await
        else {
            continue;
        };
        let Some(chunk) = chunk? else {
            return Err("the stream ended".into());
        };
        buffer.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(end) = buffer[start..].iter().position(|b| *b == b'\n') {
            let line = &buffer[start..start + end];
            start += end + 1;
            match vigil_fleet::read_frame(line)? {
                Frame::SnapshotEnd { seq } => {
                    cursor = seq;
                    if let Some(r) = ready.take() {
                        let _ = r.send(Ok(()));
                    }
                }
                Frame::Changes { first, changes } => {
                    let now = nanos_since(shared.start);
                    if first != cursor + 1 {
                        tally.gaps += 1;
                    }
                    cursor = first + changes.len() as u64 - 1;
                    tally.frames += 1;
                    tally.received += changes.len() as u64;
                    tally.last_receive = Some(Instant::now());
                    for change in &changes {
                        let issued = match change {
                            Change::SessionRevoked { session, .. } => index_of(session)
                                .and_then(|i| shared.issued.get(i))
                                .map_or(0, |a| a.load(Ordering::Relaxed)),
                            _ => 0,
                        };
                        if issued == 0 {
                            tally.unknown += 1;
                            continue;
                        }
                        shared
                            .latency
                            .record(Duration::from_nanos(now.saturating_sub(issued - 1)));
                    }
                }
                Frame::Hello { .. }
                | Frame::Snapshot { .. }
                | Frame::Heartbeat { .. }
                | Frame::Unknown => {}
            }
        }
        buffer.drain(..start);
    }
    Ok(tally)
}

fn report(
    args: &Args,
    shared: &Shared,
    committed: u64,
    write_secs: f64,
    t0: Instant,
    tallies: &[Tally],
) -> Result<(), BoxError> {
    let complete = tallies
        .iter()
        .filter(|t| t.received >= committed && t.gaps == 0)
        .count();
    let received: u64 = tallies.iter().map(|t| t.received).sum();
    let frames: u64 = tallies.iter().map(|t| t.frames).sum();
    let gaps: u64 = tallies.iter().map(|t| t.gaps).sum();
    let unknown: u64 = tallies.iter().map(|t| t.unknown).sum();
    // Per subscriber: its changes over the time from the first write to its
    // last receive.
    let mut rates: Vec<f64> = tallies
        .iter()
        .filter_map(|t| {
            let secs = t.last_receive?.duration_since(t0).as_secs_f64();
            Some(t.received as f64 / secs)
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    let mode = match args.mode {
        Mode::Append => "append",
        Mode::Events => "events",
        Mode::Admin => "admin",
    };
    println!(
        "store={} mode={mode} subscribers={} target={}/s for {} s, batch {} per transaction, {} writer(s)",
        if args.postgres { "postgres" } else { "sqlite" },
        args.subscribers,
        args.rate,
        args.seconds,
        args.batch,
        args.writers,
    );
    println!(
        "committed: {committed} changes in {write_secs:.2} s = {:.0}/s; write p50 {} p99 {} max {}",
        committed as f64 / write_secs,
        fmt(shared.write.quantile(500)),
        fmt(shared.write.quantile(990)),
        fmt(shared.write.max()),
    );
    println!(
        "delivered: {complete}/{} subscribers got all {committed} with no gap; {received} changes in {frames} frames ({:.0} a frame), gaps {gaps}, unknown {unknown}",
        tallies.len(),
        received as f64 / frames.max(1) as f64,
    );
    if let (Some(lo), Some(hi)) = (rates.first(), rates.last()) {
        println!(
            "per subscriber: {lo:.0}/s to {hi:.0}/s (changes over first write to last receive)"
        );
    }
    println!(
        "latency issued→received over {} pairs: p50 {} p90 {} p99 {} max {}",
        shared.latency.count(),
        fmt(shared.latency.quantile(500)),
        fmt(shared.latency.quantile(900)),
        fmt(shared.latency.quantile(990)),
        fmt(shared.latency.max()),
    );
    println!("peak RSS: {:.1} MiB", peak_rss_kib()? as f64 / 1024.0);
    Ok(())
}

fn fmt(d: Duration) -> String {
    if d < Duration::from_millis(10) {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.0} ms", d.as_secs_f64() * 1e3)
    }
}

/// User and system CPU time of this process so far, in seconds (Linux
/// clock ticks of 1/100 s).
fn cpu_secs() -> Result<f64, BoxError> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: utime and stime are the 12th and 13th after it.
    let rest = stat
        .rsplit_once(')')
        .ok_or("no command in /proc/self/stat")?
        .1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next().ok_or("no utime")?.parse()?;
    let stime: u64 = fields.next().ok_or("no stime")?.parse()?;
    Ok((utime + stime) as f64 / 100.0)
}

/// The process's peak resident set (`VmHWM`), in KiB.
fn peak_rss_kib() -> Result<u64, BoxError> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .ok_or("no VmHWM in /proc/self/status")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or("VmHWM without a value")?
        .parse()?)
}

// === impl Histogram ===

const FINE: u64 = 1_000; // 10 µs buckets up to 10 ms
const COARSE: u64 = 60_000; // then 1 ms buckets up to 60 s

impl Histogram {
    fn new() -> Self {
        Self {
            buckets: (0..FINE + COARSE).map(|_| AtomicU64::new(0)).collect(),
            max_us: AtomicU64::new(0),
        }
    }

    fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.max_us.fetch_max(us, Ordering::Relaxed);
        let bucket = if us < FINE * 10 {
            us / 10
        } else {
            (FINE + us / 1_000 - 10).min(FINE + COARSE - 1)
        };
        if let Some(b) = usize::try_from(bucket)
            .ok()
            .and_then(|b| self.buckets.get(b))
        {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    fn max(&self) -> Duration {
        Duration::from_micros(self.max_us.load(Ordering::Relaxed))
    }

    /// The upper edge of the bucket holding the quantile `per_mille` / 1000.
    fn quantile(&self, per_mille: u64) -> Duration {
        let total = self.count();
        if total == 0 {
            return Duration::ZERO;
        }
        // Nearest rank.
        let rank =
            u64::try_from((u128::from(total) * u128::from(per_mille.min(1_000))).div_ceil(1_000))
                .unwrap_or(total)
                .max(1);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank {
                let i = i as u64;
                let us = if i < FINE {
                    (i + 1) * 10
                } else {
                    (i - FINE + 11) * 1_000
                };
                return Duration::from_micros(us).min(self.max());
            }
        }
        self.max()
    }
}
