//! The `vigil-controller` binary: parse the command line, load the config,
//! run. Everything else is in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "vigil-controller", version, about = "Vigil's fleet controller")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the sync stream, event intake and admin API.
    Run {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a config file and exit.
    Check {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the SHA-256 of a token read from standard input, as a node's
    /// `token_sha256` in the config.
    HashToken,
    /// Copy a store into an empty one, as of one moment: a backup (into a
    /// new SQLite file), a restore, or a move from SQLite to PostgreSQL.
    Copy {
        /// The store copied: `sqlite://PATH` or `postgres://…`.
        from: String,
        /// The empty store written (its schema is applied first).
        to: String,
    },
    /// Write the detections operators labelled (false positive, confirmed
    /// compromise) as JSON Lines for the offline evaluator's `vigil-replay`
    /// (docs/evaluation.md). No session or user key is written.
    ExportLabels {
        /// The controller's config file (its store is read).
        #[arg(long, short)]
        config: PathBuf,
        /// Decisions from this time: seconds since the Unix epoch or a UTC
        /// date YYYY-MM-DD. Default: 7 days ago.
        #[arg(long)]
        since: Option<String>,
        /// Decisions before this time (same forms). Default: now.
        #[arg(long)]
        until: Option<String>,
        /// At most this many decisions (the oldest first); the end line
        /// says whether more were left out.
        #[arg(long, default_value_t = 1_000_000)]
        max: u64,
        /// The file written (through a temporary file renamed over it), or
        /// `-` for standard output.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::HashToken => {
            let mut token = String::new();
            if std::io::stdin().read_line(&mut token).is_err() || token.trim().is_empty() {
                eprintln!("vigil-controller: no token on standard input");
                return ExitCode::FAILURE;
            }
            println!(
                "{}",
                hex::encode(vigil_controller::config::token_hash(&token))
            );
            ExitCode::SUCCESS
        }
        Command::Copy { from, to } => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("vigil-controller: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let copied = runtime.block_on(async {
                let source = vigil_controller::store::Store::open(&from).await?;
                let destination = vigil_controller::store::Store::open(&to).await?;
                vigil_controller::copy::copy(&source, &destination).await
            });
            match copied {
                Ok(c) => {
                    println!("copied {} rows; the log's head is {}", c.rows, c.head);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("vigil-controller: copy: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::ExportLabels {
            config,
            since,
            until,
            max,
            out,
        } => export_labels(&config, since.as_deref(), until.as_deref(), max, &out),
        Command::Check { config } => match vigil_controller::Config::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_writer(std::io::stderr)
                .init();
            let config = match vigil_controller::Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("vigil-controller: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            // SIGTERM (systemd, Kubernetes) or SIGINT (a terminal) stops it.
            let shutdown = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut term) => {
                        tokio::select! {
                            _ = term.recv() => {},
                            _ = tokio::signal::ctrl_c() => {},
                        }
                    }
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
                vigil_controller::service_manager::stopping();
            };
            // SIGHUP would end the process by default; there is no config
            // reload to give it (`service_manager`), so it is refused aloud.
            // Registered before anything starts, so that no SIGHUP finds
            // the default action.
            let hangup = {
                let _in_runtime = runtime.enter();
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            };
            if let Ok(mut hangup) = hangup {
                runtime.spawn(async move {
                    while hangup.recv().await.is_some() {
                        tracing::warn!(
                            "SIGHUP: vigil-controller has no config reload; restart it to apply a new config (TLS certificates are reread on their own)"
                        );
                    }
                });
            }
            match runtime.block_on(vigil_controller::run(config, shutdown)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vigil-controller: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `vigil-controller export-labels`.
fn export_labels(
    config: &std::path::Path,
    since: Option<&str>,
    until: Option<&str>,
    max: u64,
    out: &std::path::Path,
) -> ExitCode {
    use vigil_controller::feedback::{export, parse_time};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let times = (
        since.map_or(Ok(now.saturating_sub(7 * 86_400)), parse_time),
        until.map_or(Ok(now), parse_time),
    );
    let (since, until) = match times {
        (Ok(s), Ok(u)) if s < u => (s, u),
        (Ok(_), Ok(_)) => {
            eprintln!("vigil-controller: export-labels: --since must be before --until");
            return ExitCode::FAILURE;
        }
        (Err(e), _) => {
            eprintln!("vigil-controller: export-labels: --since {e}");
            return ExitCode::FAILURE;
        }
        (_, Err(e)) => {
            eprintln!("vigil-controller: export-labels: --until {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = match vigil_controller::Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vigil-controller: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let to_stdout = out.as_os_str() == "-";
    let exported = runtime.block_on(async {
        let store = vigil_controller::store::Store::open(&config.store).await?;
        if to_stdout {
            let mut w = std::io::BufWriter::new(std::io::stdout().lock());
            return export(&store, since, until, max, now, &mut w).await;
        }
        // Written beside the target and renamed over it: a failed export
        // leaves no half file where a whole one is expected.
        let mut partial = out.as_os_str().to_owned();
        partial.push(".partial");
        let partial = std::path::PathBuf::from(partial);
        let mut w = std::io::BufWriter::new(std::fs::File::create(&partial)?);
        let done = export(&store, since, until, max, now, &mut w).await;
        let done = done.and_then(|d| {
            let file = w.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            std::fs::rename(&partial, out)?;
            Ok(d)
        });
        if done.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        done
    });
    match exported {
        Ok(e) => {
            eprintln!(
                "exported {} labelled decisions{}",
                e.decisions,
                if e.complete {
                    ""
                } else {
                    " (--max reached: more were left out)"
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vigil-controller: export-labels: {e}");
            ExitCode::FAILURE
        }
    }
}
