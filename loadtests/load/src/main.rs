//! `vigil-load`: parses the command line and runs; the work is in the library.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use vigil_eval::generate::{GenerateConfig, generate};
use vigil_eval::scenario::{Corpus, Scenario};
use vigil_load::plan::{Plan, PlanOptions};
use vigil_load::report::Report;
use vigil_load::run::{Load, Progress, RunConfig, run};
use vigil_load::stats::Tally;
use vigil_load::target::{Protocol, TargetSpec};
use vigil_load::tls::Trust;
use vigil_load::{cpu, html, origin, prepare, slo};

#[derive(Parser, Debug)]
#[command(
    name = "vigil-load",
    version,
    about = "Scenario-driven load generator for Vigil"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Play the corpus's sessions against one or more targets.
    Run(Box<RunArgs>),
    /// Write the geo database, trusted egress list and proxy config a
    /// target Vigil needs to judge the corpus.
    Prepare(PrepareArgs),
    /// Serve the loopback app (logins answered with Set-Cookie and Vigil-User).
    Origin(OriginArgs),
}

#[derive(Args, Debug)]
struct CorpusArgs {
    /// A corpus directory (networks.json, events.jsonl); generated when absent.
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Generated users.
    #[arg(long, default_value_t = 200)]
    users: usize,
    /// Generated sessions per scenario class.
    #[arg(long, default_value_t = 20)]
    sessions_per_class: usize,
    /// Days of generated history before the scenario sessions.
    #[arg(long, default_value_t = 1)]
    history_days: u64,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Target URL (shorthand for one --target).
    url: Option<String>,
    /// A target: `URL`, or `name=N,url=URL[,host=H][,pid=P[+P…]]`. Repeat to compare.
    #[arg(long = "target")]
    targets: Vec<String>,
    #[command(flatten)]
    corpus: CorpusArgs,
    /// Only these scenario classes (comma-separated), e.g. history,replay_other_country.
    #[arg(long, value_delimiter = ',')]
    classes: Vec<String>,
    /// Open loop: requests per second (over all threads).
    #[arg(long, conflicts_with = "concurrency")]
    rate: Option<u64>,
    /// Closed loop: requests in flight (default 32 when no --rate).
    #[arg(long)]
    concurrency: Option<usize>,
    /// How long each run sends: 10s, 500ms, 2m.
    #[arg(long, default_value = "10s", value_parser = duration)]
    duration: Duration,
    /// Hard cap on requests per run (logins included).
    #[arg(long, default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    max_requests: u64,
    /// Stop after playing the corpus this many times.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    laps: Option<u64>,
    /// Worker threads (each a single-threaded runtime).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
    /// Most requests in flight per thread in rate mode.
    #[arg(long, default_value_t = 10_000)]
    max_in_flight: usize,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = duration)]
    timeout: Duration,
    /// Speak HTTP/2 (ALPN h2 over TLS, prior knowledge in cleartext).
    #[arg(long)]
    http2: bool,
    /// HTTP/1.1: a new connection for every request (`Connection: close`),
    /// so that each pays a connect, and over TLS a handshake.
    #[arg(long, conflicts_with = "http2")]
    new_connection: bool,
    /// Over TLS: resume the sessions the server gives (each device profile
    /// its own), as browsers do; without it every handshake is a full one.
    #[arg(long)]
    tls_resume: bool,
    /// Accept any server certificate (self-signed loopback targets).
    #[arg(long)]
    insecure: bool,
    /// PEM file of CA certificates to verify the target with.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Send each device's corpus JA4 in this header (a TLS-terminating balancer).
    #[arg(long)]
    ja4_header: Option<String>,
    /// Path of login requests.
    #[arg(long, default_value = "/login")]
    login_path: String,
    /// Comparison: rounds per target, alternating targets.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// Target the ratios are taken against (default: the last one).
    #[arg(long)]
    baseline: Option<String>,
    /// Thresholds: 'p99<2ms,detect>=0.99,disturbed<=0.01'. Exit status 2 when one fails.
    #[arg(long, value_parser = parse_slo)]
    slo: Option<Vec<slo::Threshold>>,
    /// Write the JSON report here (`-` for stdout instead of the text).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the HTML report here.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Width of a latency-over-time interval.
    #[arg(long, default_value = "1s", value_parser = duration)]
    interval: Duration,
    /// Closed loop: pause of each lane after each request (e.g. 1100ms,
    /// so that a session's requests cross the binding's rotation time).
    #[arg(long, default_value = "0s", value_parser = duration, conflicts_with = "rate")]
    think: Duration,
    /// The id every session cookie of this invocation carries, eight hex
    /// digits (random by default, and shown in the report). Give one only
    /// to repeat a run against a fresh proxy: against the proxy that saw
    /// it, the same id replays sessions it already judged.
    #[arg(long, value_parser = run_id)]
    run_id: Option<u32>,
}

#[derive(Args, Debug)]
struct PrepareArgs {
    #[command(flatten)]
    corpus: CorpusArgs,
    /// Directory to write into.
    #[arg(long)]
    out: PathBuf,
    /// The proxy's cleartext listener.
    #[arg(long, default_value = "127.0.0.1:18092")]
    listen: String,
    /// The proxy's TLS listener, with --cert and --key.
    #[arg(long, requires_all = ["cert", "key"])]
    tls_listen: Option<String>,
    /// Certificate (PEM) of the TLS listener.
    #[arg(long)]
    cert: Option<String>,
    /// Key (PEM) of the TLS listener.
    #[arg(long)]
    key: Option<String>,
    /// The origin.
    #[arg(long, default_value = "127.0.0.1:18091")]
    origin: String,
    /// The proxy's admin listener.
    #[arg(long, default_value = "127.0.0.1:18093")]
    admin: String,
    /// The proxy's worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// The rotating binding's rotation time (`[binding]
    /// rotate_after_seconds`); the grace is 30 s or this, if shorter.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    rotate_after: u32,
}

#[derive(Args, Debug)]
struct OriginArgs {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:18091")]
    listen: SocketAddr,
    /// Path of login requests.
    #[arg(long, default_value = "/login")]
    login_path: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => run_cmd(*a),
        Command::Prepare(a) => prepare_cmd(a).map(|()| ExitCode::SUCCESS),
        Command::Origin(a) => origin_cmd(a).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vigil-load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_slo(s: &str) -> Result<Vec<slo::Threshold>, String> {
    slo::parse(s).map_err(|e| e.to_string())
}

/// A run id as the report shows it: eight hex digits.
fn run_id(s: &str) -> Result<u32, String> {
    let bad = || format!("{s:?} is not a run id (eight hex digits, e.g. 1a2b3c4d)");
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    u32::from_str_radix(s, 16).map_err(|_| bad())
}

/// `10s`, `500ms`, `2m`, `1h`.
fn duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = n
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("{s:?} is not a duration (10s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unit must be ms, s, m or h")),
    };
    if secs > 86_400.0 {
        return Err(format!("{s:?} is longer than a day"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn corpus(a: &CorpusArgs) -> Result<Corpus, String> {
    match &a.corpus {
        Some(dir) => Corpus::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display())),
        None => Ok(generate(&GenerateConfig {
            seed: a.seed,
            users: a.users,
            sessions_per_class: a.sessions_per_class,
            history_days: a.history_days,
            ..GenerateConfig::default()
        })
        .0),
    }
}

fn prepare_cmd(a: PrepareArgs) -> Result<(), String> {
    let corpus = corpus(&a.corpus)?;
    let setup = prepare::ProxySetup {
        listen: a.listen,
        tls: match (a.tls_listen, a.cert, a.key) {
            (Some(l), Some(c), Some(k)) => Some((l, c, k)),
            _ => None,
        },
        origin: a.origin,
        admin: a.admin,
        threads: a.threads,
        step_up_url: "/step-up".into(),
        rotate_after_seconds: a.rotate_after,
    };
    prepare::write(&a.out, &corpus.networks, &setup)?;
    println!(
        "wrote {}/{{geo.mmdb,zscaler.txt,vigil-proxy.toml}}",
        a.out.display()
    );
    Ok(())
}

fn origin_cmd(a: OriginArgs) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let received = Arc::new(origin::Received::default());
        let (addr, task) = origin::start(a.listen, a.login_path, received.clone())
            .await
            .map_err(|e| format!("{}: {e}", a.listen))?;
        eprintln!("origin serving on http://{addr}/ (Ctrl-C stops)");
        let _ = tokio::signal::ctrl_c().await;
        task.abort();
        println!(
            "received {} requests ({} logins, {} with a session cookie)",
            received.requests.load(Ordering::Relaxed),
            received.logins.load(Ordering::Relaxed),
            received.with_session.load(Ordering::Relaxed)
        );
        Ok(())
    })
}

fn run_cmd(a: RunArgs) -> Result<ExitCode, String> {
    let mut specs = Vec::new();
    for s in a.url.iter().chain(&a.targets) {
        specs.push(TargetSpec::parse(s).map_err(|e| e.to_string())?);
    }
    if specs.is_empty() {
        return Err("name a target: vigil-load run URL, or --target".into());
    }
    let mut classes = Vec::new();
    for c in &a.classes {
        classes.push(
            c.parse::<Scenario>()
                .map_err(|e| format!("--classes: {e}"))?,
        );
    }
    let ja4_header = a
        .ja4_header
        .as_deref()
        .map(|h| {
            http::HeaderName::try_from(h)
                .map_err(|_| format!("--ja4-header {h:?} is not a header name"))
        })
        .transpose()?;
    let corpus = corpus(&a.corpus)?;
    let plan = Arc::new(
        Plan::from_corpus(
            &corpus,
            &PlanOptions {
                ja4_header,
                classes,
            },
        )
        .map_err(|e| e.to_string())?,
    );
    if plan.steps.is_empty() {
        return Err("the corpus has no requests (for these classes)".into());
    }
    let trust = if a.insecure {
        Trust::Insecure
    } else {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(path) = &a.ca {
            use rustls::pki_types::pem::PemObject as _;
            for cert in rustls::pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("--ca {}: {e}", path.display()))?
            {
                let cert = cert.map_err(|e| format!("--ca {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("--ca {}: {e}", path.display()))?;
            }
        }
        Trust::Roots(Arc::new(roots))
    };
    let protocol = if a.http2 {
        Protocol::Http2
    } else {
        Protocol::Http1
    };
    let load = match (a.rate, a.concurrency) {
        (Some(r), _) => Load::Rate(r),
        (None, Some(c)) => Load::Concurrency(c.max(1)),
        (None, None) => Load::Concurrency(32),
    };
    let cfg = RunConfig {
        load,
        duration: a.duration,
        max_requests: a.max_requests,
        laps: a.laps,
        threads: usize::from(a.threads),
        max_in_flight: a.max_in_flight,
        timeout: a.timeout,
        login_path: a.login_path.clone(),
        interval: a.interval,
        think: a.think,
        new_connection: a.new_connection,
        run_id: a.run_id.unwrap_or_else(rand::random),
    };
    let mut endpoints = Vec::new();
    for s in &specs {
        endpoints.push(Arc::new(s.endpoint_with(
            protocol,
            plan.devices.len(),
            &trust,
            a.tls_resume,
        )?));
    }
    let mut load_text = match load {
        Load::Rate(r) => format!("rate {r}/s"),
        Load::Concurrency(c) => format!("concurrency {c}"),
    };
    if a.new_connection {
        load_text.push_str(", a connection per request");
    }
    if a.tls_resume {
        load_text.push_str(", TLS resumption");
    }
    load_text.push_str(&format!(", run id {:08x}", cfg.run_id));
    let quiet = a.json.as_deref() == Some(std::path::Path::new("-"));
    let bar = if std::io::stderr().is_terminal() && !quiet {
        indicatif::ProgressBar::new_spinner()
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut tallies: Vec<Tally> = specs.iter().map(|_| Tally::new(cfg.interval)).collect();
    let mut elapsed = vec![Duration::ZERO; specs.len()];
    let mut cpu_used = vec![(0u64, true); specs.len()];
    let interrupted = interrupt_flag();
    let started = std::time::Instant::now();
    'rounds: for round in 0..a.rounds {
        for (i, (spec, endpoint)) in specs.iter().zip(&endpoints).enumerate() {
            if interrupted.load(Ordering::Relaxed) {
                break 'rounds;
            }
            let progress = Arc::new(Progress::default());
            let offset = started.elapsed();
            let before = cpu::cpu_micros_of(&spec.pids);
            let ticker = progress_ticker(
                &bar,
                &progress,
                &interrupted,
                format!("{} round {}/{}", spec.name, round + 1, a.rounds),
            );
            let id =
                round * u32::try_from(specs.len()).unwrap_or(1) + u32::try_from(i).unwrap_or(0);
            let result = run(&plan, endpoint, &cfg, id, &progress).map_err(|e| e.to_string());
            progress.stop.store(true, Ordering::Relaxed);
            let _ = ticker.join();
            let mut result = result?;
            // Rounds run one after the other: place this one's timeline
            // where it ran, so that the chart shows rounds side by side.
            result.tally.delay(offset);
            if let (Some(b), Some(a)) = (before, cpu::cpu_micros_of(&spec.pids))
                && let Some(c) = cpu_used.get_mut(i)
            {
                c.0 += a.saturating_sub(b);
            } else if let Some(c) = cpu_used.get_mut(i) {
                c.1 = false;
            }
            if let (Some(t), Some(e)) = (tallies.get_mut(i), elapsed.get_mut(i)) {
                t.merge(&result.tally);
                *e += result.elapsed;
            }
        }
    }
    bar.finish_and_clear();
    if interrupted.load(Ordering::Relaxed) {
        eprintln!("interrupted: reporting the requests completed so far");
    }
    let transport = format!(
        "{} over {}",
        if a.http2 { "HTTP/2" } else { "HTTP/1.1" },
        "{}"
    );
    let mut reports = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let (Some(t), Some(e), Some(c)) = (tallies.get(i), elapsed.get(i), cpu_used.get(i)) else {
            continue;
        };
        let tls = spec.url.scheme_str() == Some("https");
        let mut r = Report::new(
            &spec.name,
            load_text.clone(),
            transport.replace("{}", if tls { "TLS" } else { "cleartext" }),
            &plan,
            t,
            *e,
        );
        if !spec.pids.is_empty() && c.1 && t.requests > 0 {
            r.cpu_us_per_request = Some(c.0 as f64 / t.requests as f64);
        }
        if let Some(e) = endpoints.get(i) {
            r.connections = e.opened.load(Ordering::Relaxed);
            r.tls_resumed = e.resumed.load(Ordering::Relaxed);
        }
        reports.push(r);
    }
    let ratios = ratios(&reports, a.baseline.as_deref())?;
    let checks: Vec<slo::Check> = a
        .slo
        .iter()
        .flatten()
        .flat_map(|t| reports.iter().map(|r| t.check(r)))
        .collect();
    let command: String = std::env::args().collect::<Vec<_>>().join(" ");
    if let Some(path) = &a.html {
        std::fs::write(path, html::render(&reports, &checks, &ratios, &command))
            .map_err(|e| format!("--html {}: {e}", path.display()))?;
    }
    let json = serde_json::json!({ "reports": reports, "ratios": ratios, "checks": checks });
    match a.json.as_deref() {
        Some(p) if p == std::path::Path::new("-") => println!("{json:#}"),
        Some(p) => {
            std::fs::write(p, format!("{json:#}\n"))
                .map_err(|e| format!("--json {}: {e}", p.display()))?;
        }
        None => {}
    }
    if !quiet {
        for r in &reports {
            println!("{}", r.text());
        }
        for (t, b, rps, p99) in &ratios {
            println!("ratio {t} / {b}: throughput {rps:.2}×, p99 {p99:.2}×");
        }
        for c in &checks {
            println!(
                "slo {} {}: {} (measured {})",
                c.target,
                c.threshold,
                if c.pass { "pass" } else { "FAIL" },
                c.measured
                    .map_or("nothing".to_owned(), |m| format!("{m:.4}"))
            );
        }
    }
    Ok(if checks.iter().all(|c| c.pass) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// Throughput and p99 of every target against the baseline.
fn ratios(
    reports: &[Report],
    baseline: Option<&str>,
) -> Result<Vec<(String, String, f64, f64)>, String> {
    if reports.len() < 2 {
        return Ok(Vec::new());
    }
    let base = match baseline {
        Some(name) => reports
            .iter()
            .find(|r| r.target == name)
            .ok_or_else(|| format!("--baseline {name:?} is not a target name"))?,
        None => reports.last().ok_or("no reports")?,
    };
    Ok(reports
        .iter()
        .filter(|r| r.target != base.target)
        .map(|r| {
            (
                r.target.clone(),
                base.target.clone(),
                r.throughput / base.throughput.max(1e-9),
                r.latency.p99 as f64 / (base.latency.p99.max(1)) as f64,
            )
        })
        .collect())
}

/// Set on the first Ctrl-C (SIGINT): the run stops sending, lets what is
/// in flight finish and reports what was done. A second Ctrl-C exits at
/// once (status 130).
fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    let (ready, registered) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
        else {
            let _ = ready.send(());
            return;
        };
        rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut sigint) = signal(SignalKind::interrupt()) else {
                let _ = ready.send(());
                return;
            };
            let _ = ready.send(());
            sigint.recv().await;
            eprintln!(
                "
interrupted: finishing the requests in flight (Ctrl-C again to quit)"
            );
            set.store(true, Ordering::Relaxed);
            sigint.recv().await;
            std::process::exit(130);
        });
    });
    // Registered before the run starts: an early Ctrl-C must not kill it.
    let _ = registered.recv();
    flag
}

/// Updates the progress line every 200 ms until the run's `stop` is set;
/// passes an interruption on to the run.
fn progress_ticker(
    bar: &indicatif::ProgressBar,
    p: &Arc<Progress>,
    interrupted: &Arc<AtomicBool>,
    what: String,
) -> std::thread::JoinHandle<()> {
    let bar = bar.clone();
    let p = p.clone();
    let interrupted = interrupted.clone();
    std::thread::spawn(move || {
        let start = std::time::Instant::now();
        while !p.stop.load(Ordering::Relaxed) {
            if interrupted.load(Ordering::Relaxed) {
                p.stop.store(true, Ordering::Relaxed);
            }
            let done = p.done.load(Ordering::Relaxed);
            let secs = start.elapsed().as_secs_f64().max(1e-3);
            bar.set_message(format!(
                "{what}: {done} requests, {:.0} req/s, {} errors, {} hijack requests refused, {} owner requests refused",
                done as f64 / secs,
                p.errors.load(Ordering::Relaxed),
                p.detections.load(Ordering::Relaxed),
                p.disturbed.load(Ordering::Relaxed),
            ));
            bar.tick();
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}
