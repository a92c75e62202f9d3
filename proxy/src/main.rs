//! `vigil-proxy`: parse the command line, load config, start services.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vigil_geoip::{GeoDatabases, GeoPaths};
use vigil_proxy::config::{Config, ConfigError};
use vigil_proxy::demo::{self, DemoAddrs};
use vigil_proxy::logging;
use vigil_proxy::server::{StartOptions, Vigil};

// mimalloc was measured faster than the system allocator on the proxy path;
// see docs/performance.md.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "vigil-proxy",
    version,
    about = "Continuous session security at the edge"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy with a config file. SIGHUP reloads the file.
    Run {
        /// The config file (TOML).
        #[arg(short, long, env = "VIGIL_CONFIG")]
        config: PathBuf,
        /// Take the listening sockets over from the running instance with the
        /// same state_dir, which then stops gracefully: send it SIGQUIT once
        /// this one is started. For a new binary; a new config only needs
        /// `reload`.
        #[arg(short, long)]
        upgrade: bool,
        /// Stop (as on SIGTERM) when standard input closes: for a process
        /// started by another that must not outlive it (the demo's node B).
        #[arg(long, hide = true)]
        exit_with_parent: bool,
    },
    /// Check a config file, then tell the proxy running with it (found by
    /// the pid file in its state_dir) to reload it.
    Reload {
        /// The config file (TOML).
        #[arg(short, long, env = "VIGIL_CONFIG")]
        config: PathBuf,
    },
    /// Check a config file with this binary, then tell the proxy running
    /// with it (found by the pid file in its state_dir) to start this
    /// binary's path anew and hand it its sockets: the zero-downtime binary
    /// upgrade (docs/deployment.md). Install the new binary at the running
    /// one's path first.
    Upgrade {
        /// The config file (TOML).
        #[arg(short, long, env = "VIGIL_CONFIG")]
        config: PathBuf,
    },
    /// Check a config file and list every problem in it.
    Check {
        /// The config file (TOML).
        #[arg(short, long, env = "VIGIL_CONFIG")]
        config: PathBuf,
    },
    /// Geo and ASN databases.
    Geoip {
        #[command(subcommand)]
        command: GeoipCommand,
    },
    /// Show what Vigil derives from one request and why it decides what it
    /// does: route, credential, client-IP walk, JA4, device, geo, risks,
    /// every fact a rule reads, each rule's result, the action. The same
    /// code as the proxy, with no network; the session is judged as new.
    Explain {
        /// The config file (TOML).
        #[arg(short, long, env = "VIGIL_CONFIG")]
        config: PathBuf,
        /// A raw HTTP/1.1 request head; without it, one is built from
        /// --method, --target and --header.
        #[arg(long)]
        request: Option<PathBuf>,
        /// The method, without --request.
        #[arg(long, default_value = "GET")]
        method: String,
        /// The request target, without --request.
        #[arg(long, default_value = "/")]
        target: String,
        /// A header line `Name: value`, without --request (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// The TCP peer's address.
        #[arg(long)]
        peer: IpAddr,
        /// The ClientHello as hex (TLS records, as on the wire).
        #[arg(long, conflicts_with = "hello")]
        hello_hex: Option<String>,
        /// A file with the ClientHello bytes (TLS records, as on the wire).
        #[arg(long)]
        hello: Option<PathBuf>,
        /// The listener the request came in on; default the first TLS one
        /// with --hello/--hello-hex, else the first.
        #[arg(long)]
        listener: Option<String>,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Rule files: check them, run their tests.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Run a built-in demo: Vigil in front of a small app, on loopback.
    Demo {
        /// Vigil's proxy listener.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Vigil's admin listener.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// The demo app's listener.
        #[arg(long, default_value = "127.0.0.1:3000")]
        origin: SocketAddr,
        /// Node B's proxy listener.
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen_b: SocketAddr,
        /// Node B's admin listener.
        #[arg(long, default_value = "127.0.0.1:9902")]
        admin_b: SocketAddr,
        /// The controller's API.
        #[arg(long, default_value = "127.0.0.1:9700")]
        controller: SocketAddr,
    },
}

#[derive(Debug, Subcommand)]
enum GeoipCommand {
    /// Print what Vigil sees for an address: country, city, coordinates, ASN.
    Lookup {
        /// The address.
        ip: IpAddr,
        /// Take the databases from this config file's [geoip] section.
        #[arg(short, long, env = "VIGIL_CONFIG", conflicts_with_all = ["city", "asn"])]
        config: Option<PathBuf>,
        /// A City or Country database (repeatable).
        #[arg(long)]
        city: Vec<PathBuf>,
        /// An ASN database (repeatable).
        #[arg(long)]
        asn: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// Load every rule file of a directory and list the rules, or every
    /// problem with its file, rule, line and column.
    Check {
        /// The rule directory (its `*.toml` files).
        dir: PathBuf,
    },
    /// Run the test cases of DIR/tests/*.toml against the rules of DIR.
    Test {
        /// The rule directory.
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                for warning in c.warnings() {
                    eprintln!("warning: {}: {warning}", config.display());
                }
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => config_failed(&e),
        },
        Command::Run {
            config,
            upgrade,
            exit_with_parent,
        } => match Config::load(&config) {
            Ok(c) => {
                if exit_with_parent {
                    exit_when_stdin_closes();
                }
                let options = StartOptions {
                    config_file: Some(config),
                    upgrade,
                };
                start(c, options, None)
            }
            Err(e) => config_failed(&e),
        },
        Command::Reload { config } => match Config::load(&config) {
            Ok(c) => {
                let pid_file = vigil_proxy::server::pid_file(&c.server.state_dir);
                match vigil_proxy::signal::reload(&pid_file) {
                    Ok(pid) => {
                        println!(
                            "{}: ok; asked process {pid} to reload it (the outcome is in its log and vigil_proxy_config_reloads_total)",
                            config.display()
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            Err(e) => config_failed(&e),
        },
        Command::Upgrade { config } => match Config::load(&config) {
            Ok(c) => {
                let pid_file = vigil_proxy::server::pid_file(&c.server.state_dir);
                match vigil_proxy::signal::upgrade(&pid_file) {
                    Ok(pid) => {
                        println!(
                            "{}: ok; asked process {pid} to start a new process from its binary's path and hand it the sockets (the outcome is in its log)",
                            config.display()
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            Err(e) => config_failed(&e),
        },
        Command::Geoip {
            command:
                GeoipCommand::Lookup {
                    ip,
                    config,
                    city,
                    asn,
                },
        } => {
            let paths = match config {
                Some(path) => match Config::load(&path) {
                    Ok(c) => GeoPaths {
                        geo: c.geoip.city,
                        asn: c.geoip.asn,
                    },
                    Err(e) => return config_failed(&e),
                },
                None => GeoPaths { geo: city, asn },
            };
            match GeoDatabases::open(&paths) {
                Ok(dbs) => {
                    print!("{}", vigil_proxy::geoip_cli::report(&dbs, ip));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Explain {
            config,
            request,
            method,
            target,
            headers,
            peer,
            hello_hex,
            hello,
            listener,
            json,
        } => {
            let c = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return config_failed(&e),
            };
            let prepared = (|| -> Result<_, String> {
                let request = vigil_proxy::explain::request_bytes(
                    request.as_deref(),
                    &method,
                    &target,
                    &headers,
                )
                .map_err(|e| format!("cannot read the request: {e}"))?;
                let hello = match (hello_hex, hello) {
                    (Some(h), _) => {
                        Some(vigil_proxy::explain::hello_from_hex(&h).map_err(|e| e.to_string())?)
                    }
                    (None, Some(path)) => Some(
                        std::fs::read(&path)
                            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
                    ),
                    (None, None) => None,
                };
                Ok(vigil_proxy::explain::Input {
                    request,
                    peer,
                    hello,
                    listener,
                    now: None,
                })
            })();
            let report = prepared.and_then(|input| {
                vigil_proxy::explain::explain(&c, &input).map_err(|e| e.to_string())
            });
            match report {
                Ok(report) if json => {
                    println!("{report}");
                    ExitCode::SUCCESS
                }
                Ok(report) => {
                    print!("{}", vigil_proxy::explain::render(&report));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Rules { command } => {
            let (text, ok) = match command {
                RulesCommand::Check { dir } => vigil_proxy::rules_cli::check(&dir),
                RulesCommand::Test { dir } => vigil_proxy::rules_cli::test(&dir),
            };
            if ok {
                print!("{text}");
                ExitCode::SUCCESS
            } else {
                eprint!("{text}");
                ExitCode::FAILURE
            }
        }
        Command::Demo {
            listen,
            admin,
            origin,
            listen_b,
            admin_b,
            controller,
        } => {
            let addrs = DemoAddrs {
                listen,
                admin,
                origin,
                listen_b,
                admin_b,
                controller,
            };
            let started = demo::prepare(addrs).and_then(|fleet| {
                let config = demo::config(&fleet, addrs)?;
                demo::start_controller(&fleet)?;
                let node_b = demo::start_node_b(&fleet, addrs)?;
                Ok((fleet, config, node_b))
            });
            match started {
                // Node B's standard input is held open by this process
                // until it exits: then node B stops too.
                Ok((fleet, config, node_b)) => {
                    let banner = demo::banner(addrs, &fleet);
                    std::mem::forget(node_b);
                    start(config, StartOptions::default(), Some((addrs, banner)))
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn start(config: Config, options: StartOptions, demo: Option<(DemoAddrs, String)>) -> ExitCode {
    logging::init(&config.log);
    // What `check` prints, said again where an operator running it will look.
    for warning in config.warnings() {
        tracing::warn!(%warning, "config warning");
    }
    let mut vigil = match Vigil::build(config, options) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some((addrs, banner)) = demo {
        vigil.add_service(demo::app_service(addrs.origin));
        print!("{banner}");
    }
    vigil.run()
}

/// Sends this process SIGTERM (a graceful stop) once its standard input
/// reaches its end: the process that started it, holding the other end,
/// has exited.
fn exit_when_stdin_closes() {
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(std::io::Read::read(&mut stdin, &mut sink), Ok(n) if n > 0) {}
        let pid = i32::try_from(std::process::id()).unwrap_or(0);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    });
}

fn config_failed(e: &ConfigError) -> ExitCode {
    for line in e.to_string().lines() {
        eprintln!("error: {line}");
    }
    ExitCode::FAILURE
}
