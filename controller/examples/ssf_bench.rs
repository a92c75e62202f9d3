//! A load run of SET intake, end to end: the controller (this program
//! again, in a child process of its own, so that its CPU time is its own)
//! on loopback, and `--connections` concurrent clients pushing `--sets`
//! distinct signed CAEP `session-revoked` SETs (each a distinct user: each
//! one verified, its `jti` committed, and the user's revocation appended to
//! the log) to `POST /v1/ssf/push/{transmitter}` (`docs/signals.md`,
//! Throughput).
//!
//! ```text
//! cargo run --release -p vigil-controller --example ssf_bench -- \
//!     --store sqlite|postgres --sets 20000 --connections 64 [--event revoke|ignored]
//! ```
//!
//! `--event ignored` pushes CAEP `session-established` instead, which the
//! receiver takes and ignores by default: everything but the action (the
//! `jti` is still committed), to tell the action's cost from the rest.
//!
//! Reports SETs/s (wall), the controller process's CPU seconds (from
//! `/proc/PID/stat`, user + system) over the run and per SET — its
//! inverse is the SETs a core takes a second — and, measured apart in
//! this process, what one RS256 verification costs, so that the rest
//! (HTTP, parsing, the group commit) can be told from it. The SETs are
//! signed by the independent `easyssf-test` transmitter (RSA 2048) before
//! the clock starts.

use std::error::Error;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use easyssf_test::TestTransmitter;
use serde_json::{Value, json};

type BoxError = Box<dyn Error + Send + Sync>;

const ADMIN: &str = "bench-admin-token-0123456789";
const PUSH: &str = "bench-push-token-0123456789";
const AUDIENCE: &str = "https://vigil.bench/ssf";
const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";
const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
const SESSION_ESTABLISHED: &str =
    "https://schemas.openid.net/secevent/caep/event-type/session-established";

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(config) = arg(&args, "--serve") {
        return serve(Path::new(&config));
    }
    let postgres = arg(&args, "--store").as_deref() == Some("postgres");
    let sets: usize = arg(&args, "--sets").map_or(Ok(20_000), |s| s.parse())?;
    let connections: usize = arg(&args, "--connections").map_or(Ok(64), |s| s.parse())?;
    let event = if arg(&args, "--event").as_deref() == Some("ignored") {
        SESSION_ESTABLISHED
    } else {
        SESSION_REVOKED
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(postgres, sets, connections, event))
}

/// The child: the controller of `config` until its standard input closes.
fn serve(config: &Path) -> Result<(), BoxError> {
    let config = vigil_controller::Config::load(config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        let _ = stop.send(());
    });
    runtime.block_on(vigil_controller::run(config, async {
        let _ = stopped.await;
    }))?;
    Ok(())
}

/// User + system CPU seconds of process `pid` (`/proc/PID/stat`).
fn cpu_seconds(pid: u32) -> Result<f64, BoxError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').ok_or("no stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11).ok_or("no utime")?.parse()?;
    let stime: f64 = fields.get(12).ok_or("no stime")?.parse()?;
    let ticks: f64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0);
    Ok((utime + stime) / ticks)
}

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // Closing its standard input stops it; then it is waited for.
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

async fn bench(
    postgres: bool,
    n: usize,
    connections: usize,
    event: &'static str,
) -> Result<(), BoxError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let db_name = format!("vigil_ssf_bench_{}", std::process::id());
    let store = if postgres {
        sqlx::any::install_default_drivers();
        let name = &db_name;
        let admin = sqlx::AnyPool::connect(PG_ADMIN).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&admin)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await?;
        format!("postgres://postgres@127.0.0.1:5432/{name}")
    } else {
        format!("sqlite://{}", dir.path().join("controller.db").display())
    };
    let t = TestTransmitter::new();
    std::fs::write(dir.path().join("hash.key"), hex::encode([0x42u8; 32]))?;
    std::fs::write(dir.path().join("admin.token"), ADMIN)?;
    std::fs::write(dir.path().join("push.token"), PUSH)?;
    std::fs::write(
        dir.path().join("jwks.json"),
        serde_json::to_string(&t.jwk_set())?,
    )?;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let config = format!(
        "listen = \"{addr}\"\nstore = {store:?}\nhash_key_file = \"hash.key\"\nadmin_token_file = \"admin.token\"\n\
         [ssf]\nsource_rate_per_second = 1000000\nsource_burst = 2000000\n\
         [[ssf.transmitters]]\nname = \"idp\"\nissuer = {:?}\naudience = {AUDIENCE:?}\n\
         jwks_file = \"jwks.json\"\npush_token_file = \"push.token\"\nsubjects = [\"email\"]\n\
         rate_per_second = 1000000\nburst = 2000000\n",
        t.issuer()
    );
    let config_path = dir.path().join("controller.toml");
    std::fs::write(&config_path, config)?;

    // What one verification costs, measured apart.
    let verify_us = {
        let config = vigil_controller::Config::load(&config_path)?;
        let transmitter = config.ssf.first().ok_or("no transmitter")?.clone();
        let keys = vigil_controller::ssf::keys::parse_jwks(&serde_json::to_vec(&t.jwk_set())?)?;
        let set = t.sign_set(&claims(&t, 0, event));
        let now = vigil_controller::api::now_secs();
        let rounds = 2000;
        let started = Instant::now();
        for _ in 0..rounds {
            let parsed = vigil_controller::ssf::verify::parse(&set, &transmitter)
                .map_err(|r| r.description)?;
            let key = keys.get(&parsed.kid).ok_or("no key")?;
            vigil_controller::ssf::verify::verify(&parsed, &key, &transmitter, now)
                .map_err(|r| r.description)?;
        }
        started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
    };

    eprintln!("signing {n} SETs…");
    let signed = sign_all(&t, n, event);

    let child = Command::new(std::env::current_exe()?)
        .arg("--serve")
        .arg(&config_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let pid = child.id();
    let child = ChildGuard(child);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            return Err("the controller did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu_before = cpu_seconds(pid)?;
    let started = Instant::now();
    let signed = Arc::new(signed);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (client, signed, next) = (client.clone(), Arc::clone(&signed), Arc::clone(&next));
        let url = format!("http://{addr}/v1/ssf/push/idp");
        tasks.spawn(async move {
            let mut refused = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(set) = signed.get(i) else {
                    return refused;
                };
                let ok = client
                    .post(&url)
                    .bearer_auth(PUSH)
                    .header("content-type", "application/secevent+jwt")
                    .body(set.clone())
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 202);
                if !ok {
                    refused += 1;
                }
            }
        });
    }
    let refused: usize = tasks.join_all().await.into_iter().sum();
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu_before;
    // On PostgreSQL, the server's backends serving the controller (their
    // whole life: connections, migrations, the run), read before the
    // controller closes them.
    let pg_cpu = if postgres {
        let admin = sqlx::AnyPool::connect(PG_ADMIN).await?;
        let mut total = 0.0;
        for row in sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT pid FROM pg_stat_activity WHERE datname = '{db_name}'"
        )))
        .fetch_all(&admin)
        .await?
        {
            let pid: i32 = sqlx::Row::try_get(&row, 0)?;
            total += u32::try_from(pid)
                .map_or(Ok(0.0), cpu_seconds)
                .unwrap_or(0.0);
        }
        Some(total)
    } else {
        None
    };
    let log: Value = serde_json::from_str(
        &client
            .get(format!("http://{addr}/v1/admin/log"))
            .bearer_auth(ADMIN)
            .send()
            .await?
            .text()
            .await?,
    )?;
    drop(child);
    #[allow(clippy::cast_precision_loss)]
    let nf = n as f64;
    println!(
        "store {} sets {n} connections {connections} event {}: {:.0} SETs/s wall ({wall:.2} s), \
         controller CPU {cpu:.2} s = {:.1} µs/SET = {:.0} SETs/s per core; \
         RS256 verification alone {verify_us:.1} µs; not 202: {refused}; log head {}{}",
        if postgres { "postgres" } else { "sqlite" },
        event.rsplit('/').next().unwrap_or(event),
        nf / wall,
        cpu * 1e6 / nf,
        nf / cpu,
        log["head"],
        pg_cpu.map_or(String::new(), |c| format!(
            "; PostgreSQL backends CPU {c:.2} s = {:.1} µs/SET, with the controller's {:.0} SETs/s per core",
            c * 1e6 / nf,
            nf / (cpu + c)
        )),
    );
    Ok(())
}

fn claims(t: &TestTransmitter, i: usize, event: &str) -> serde_json::Map<String, Value> {
    let mut c = t.set_claims(
        event,
        Some(
            json!({"format": "email", "email": format!("user{i}@bench.example")})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        ),
    );
    c.insert("aud".into(), AUDIENCE.into());
    c
}

/// Signs `n` SETs on every core.
fn sign_all(t: &TestTransmitter, n: usize, event: &'static str) -> Vec<String> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let chunks: Vec<Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|k| {
                s.spawn(move || {
                    (k..n)
                        .step_by(threads)
                        .map(|i| t.sign_set(&claims(t, i, event)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    chunks.into_iter().flatten().collect()
}
