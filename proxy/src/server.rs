//! Builds the Pingora server from a validated config and runs it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::Server;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::services::listening::Service;
use vigil_engine::{Engine, SessionHashKey};

use pingora_core::services::background::background_service;
use vigil_geoip::{GeoIp, GeoPaths};

use crate::admin::AdminApp;
use crate::config::{Config, HashKeySource, ListenerLimits, RulesSource};
use crate::conn_limits::{ConnectionLimits, H2Connections, LimitMetrics, Limited};
use crate::file_watch::{GeoReload, Reloadable, Reloader, TrustedFiles};
use crate::fleet_sync::{self, FleetState, FleetSync, Outbox};
use crate::generation::{ApplyLock, Generation};
use crate::hello::{ConnectionFingerprints, HelloCapture};
use crate::keyfile;
use crate::metrics::Metrics;
use crate::open_requests::OpenRequests;
use crate::operator::Decisions;
use crate::proxy::VigilProxy;
use crate::reload::{ConfigReloader, ConfigWatch, Signals};
use crate::rules_bundle::BundleApplier;
use crate::service_manager::Readiness;
use crate::snapshot::{self, Snapshotter};
use crate::sweeper::Sweeper;
use crate::tls::{CertificateCheck, ListenerCertificates, SniResolver};
use crate::upgrade::Upgrader;
use crate::upstream::HealthChecks;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The session hash key could not be read or created.
    #[error(transparent)]
    Key(#[from] keyfile::KeyFileError),
    /// A certificate could not be loaded.
    #[error("listener {listener}: {source}")]
    Tls {
        /// The listener.
        listener: String,
        /// The cause.
        source: crate::tls::TlsError,
    },
    /// An upstream group or the admin token could not be built.
    #[error(transparent)]
    Generation(#[from] crate::generation::GenerationError),
    /// A geo database could not be opened.
    #[error(transparent)]
    Geo(#[from] vigil_geoip::GeoError),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The event consumers could not be started.
    #[error("event consumers: {0}")]
    Events(std::io::Error),
    /// The controller client could not be built (its CA file, say).
    #[error("controller: {0}")]
    Controller(String),
}

/// How the process was started, beyond its config.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// The config file, read again on reload; `None` (the demo) makes
    /// every reload fail.
    pub config_file: Option<PathBuf>,
    /// Take the listening sockets over from a running instance through the
    /// upgrade socket (`run --upgrade`), which then stops gracefully.
    pub upgrade: bool,
}

/// Events each lane of the engine's event sink holds before it drops
/// (observability) or announces a gap (fleet).
const EVENT_LANE: usize = 65_536;

/// Bytes a request head may take on the wire beyond twice
/// `max_header_bytes` (which counts header lines only): room for the
/// request line. A head over `max_header_bytes` but within the wire cap is
/// read and answered 431 by the proxy's one renderer; one beyond the wire
/// cap is cut off unanswered, before Pingora buffers it. Twice: a client
/// that overshoots a little still learns why; one sending twice the limit
/// is not a browser, and each connection's buffer stays bounded.
const REQUEST_LINE_ALLOWANCE: usize = 8192;

/// What the last snapshot is written from: the engine, where it goes,
/// the controller cursor and the DBSC bindings.
type FinalSnapshot = (
    Arc<Engine>,
    std::path::PathBuf,
    Option<Arc<FleetState>>,
    Arc<crate::dbsc::Dbsc>,
);

/// A server with every service added, ready to run.
pub struct Vigil {
    server: Server,
    /// The engine and where its snapshot goes, written once more after the
    /// last request has been served, with the controller cursor.
    snapshot: Option<FinalSnapshot>,
    /// Where this process writes its pid, for `vigil-proxy reload`.
    pid_file: PathBuf,
    signals: Signals,
    /// The event lanes, finished before the process exits.
    lanes: crate::events::Lanes,
}

impl Vigil {
    /// Builds every service of `config`: one proxy service per listener, the
    /// admin listener, the upstream health checks and the reloaders.
    /// Extra services (the demo app) can be added before [`Vigil::run`].
    pub fn build(config: Config, options: StartOptions) -> Result<Self, StartError> {
        crate::reload::ignore_hangup_until_listening();
        let keys = match &config.hash_key {
            HashKeySource::File(path) => keyfile::load_keys(path, &config.key_rotation)?,
            HashKeySource::Ephemeral => keyfile::Keys {
                current: SessionHashKey::from_bytes(rand::random()),
                previous: None,
                user: None,
            },
        };
        let mut engine = keys.engine(config.engine.clone());
        // DBSC: its seals are keyed by the fleet's session hash key, so
        // that every node takes the others' bound cookies and challenges.
        let dbsc = Arc::new(crate::dbsc::Dbsc::new(keys.current.as_bytes()));
        let paths = GeoPaths {
            geo: config.geoip.city.clone(),
            asn: config.geoip.asn.clone(),
        };
        let geo = if paths.is_empty() {
            None
        } else {
            let geo = Arc::new(GeoIp::open(&paths)?);
            engine = engine.with_geo(geo.clone());
            Some(geo)
        };
        let metrics = Metrics::new()?;
        let ids = engine.hash_key_ids();
        crate::metrics::hash_keys(&metrics, ids);
        // Info: once per start, and what an operator checks in a rotation.
        tracing::info!(
            current = %ids.current,
            previous = ids.previous.map(|k| k.to_string()).as_deref().unwrap_or("none"),
            user = %ids.user,
            "session hash keys"
        );
        // Requests in flight by session: the request path files them, and
        // every revocation — decided here, by the operator, by the fleet —
        // ends them.
        let open_requests = OpenRequests::new(&metrics);
        // What this node decides for the controller, held on disk while
        // it is away.
        let outbox = match &config.controller {
            Some(c) => Some(Arc::new(
                Outbox::open(
                    &config.server.state_dir.join(fleet_sync::queue::DIR_NAME),
                    fleet_sync::queue::Limits {
                        max_events: c.events_queue,
                        max_bytes: c.events_queue_bytes,
                        segment_bytes: (c.events_queue_bytes / 16).clamp(64 * 1024, 8 << 20),
                    },
                    &metrics.fleet,
                )
                .map_err(|e| StartError::Controller(format!("event queue: {e}")))?,
            )),
            None => None,
        };
        // Events are told to logs and metrics, and to the controller; room
        // for a burst of refusals without a request ever waiting.
        let (sink, streams) = vigil_engine::events::channel(EVENT_LANE, EVENT_LANE);
        let mut lanes = crate::events::consume(
            streams,
            metrics.events.clone(),
            metrics.fleet_events.clone(),
            outbox.clone(),
        )
        .map_err(StartError::Events)?;
        let engine = Arc::new(engine.with_events(sink));
        lanes.hold(engine.clone());
        if let Some(outbox) = &outbox {
            outbox.attach(&engine);
        }
        // Sessions and revocations from before a restart; an ephemeral key
        // (the demo) could not recognise them.
        let snapshot = config
            .snapshot_every
            .filter(|_| matches!(config.hash_key, HashKeySource::File(_)))
            .map(|every| (config.server.state_dir.join(snapshot::FILE_NAME), every));
        let restored = snapshot.as_ref().is_some_and(|(path, _)| {
            snapshot::restore(
                &engine,
                path,
                &metrics.snapshots_rejected,
                Some((&dbsc, &config.dbsc)),
            )
        });
        // Bindings made here go to the controller, which streams them to
        // every node (this one included).
        if let Some(outbox) = &outbox {
            let outbox = outbox.clone();
            dbsc.set_sink(Box::new(move |binding| {
                outbox.push(vigil_fleet::NodeEventKind::DbscBound { binding });
                // Durable (one fsync) off the request's thread.
                let outbox = outbox.clone();
                match tokio::runtime::Handle::try_current() {
                    Ok(rt) => {
                        rt.spawn_blocking(move || outbox.commit());
                    }
                    Err(_) => outbox.commit(),
                }
            }));
        }
        // The controller cursor counts only with the snapshot it was
        // written beside; without that snapshot the node asks for all, and
        // counts as never current.
        let fleet_state = config.controller.as_ref().map(|_| {
            let (from, current_at) = snapshot
                .as_ref()
                .filter(|_| restored)
                .and_then(|(path, _)| fleet_sync::read_cursor(&fleet_sync::cursor_path(path)))
                .unwrap_or((0, 0));
            if from > 0 {
                tracing::info!(
                    applied = from,
                    "fleet sync: resuming after the restored snapshot"
                );
            }
            Arc::new(FleetState::new(from, current_at))
        });
        // Refusals kept for false positives: reported here, on the admin
        // listener, or at the controller, through the sync stream.
        let decisions = Decisions::new();
        let fleet_sync = match (&config.controller, &fleet_state, &outbox) {
            (Some(controller), Some(state), Some(outbox)) => {
                let sync = FleetSync::new(
                    engine.clone(),
                    controller.clone(),
                    state.clone(),
                    outbox.clone(),
                    metrics.fleet.clone(),
                )
                .map_err(StartError::Controller)?
                .with_open_requests(open_requests.clone())
                .with_decisions(decisions.clone())
                .with_dbsc(dbsc.clone(), config.dbsc.clone());
                // What was applied since the snapshot, back before anything
                // is served; journaled from here on. Only beside a
                // snapshot, which is what compacts it.
                if snapshot.is_some() {
                    let path = config.server.state_dir.join(fleet_sync::journal::FILE_NAME);
                    let key = blake3::derive_key(
                        "vigil-proxy controller journal v1",
                        &engine.snapshot_keys().0,
                    );
                    let (journal, opened) = fleet_sync::journal::Journal::open(&path, key)
                        .map_err(|e| StartError::Controller(format!("journal: {e}")))?;
                    if opened.cut_bytes > 0 {
                        tracing::warn!(
                            path = %path.display(),
                            bytes = opened.cut_bytes,
                            "fleet sync: a torn, corrupt or foreign tail of the journal was cut off"
                        );
                    }
                    sync.replay(&opened.entries);
                    state.set_journal(journal);
                }
                sync.replay_queued();
                Some(sync)
            }
            _ => None,
        };
        let rules_source = config.rules_source;
        let current = Arc::new(arc_swap::ArcSwap::from_pointee(Generation::new(
            config, None, &metrics,
        )?));
        let apply = ApplyLock::default();
        if let Some(bundle) = &current.load().config.rules_bundle {
            metrics
                .rules_bundle_version
                .set(i64::try_from(bundle.version).unwrap_or(i64::MAX));
        }
        // Rule bundles from the controller, once there is a generation to
        // apply them to (the journal's last one first).
        let bundles = match (&fleet_sync, &outbox) {
            (Some(_), Some(outbox)) if rules_source == RulesSource::Controller => {
                Some(Arc::new(BundleApplier::new(
                    current.clone(),
                    apply.clone(),
                    metrics.clone(),
                    outbox.clone(),
                )))
            }
            _ => None,
        };
        let fleet_sync = match (fleet_sync, &bundles) {
            (Some(sync), Some(bundles)) => Some(sync.with_rules(bundles.clone())),
            (sync, _) => sync,
        };
        // Counts per minute for the controller's overview and rules page.
        let fleet_sync = fleet_sync.map(|sync| sync.with_counts(metrics.clone(), current.clone()));
        // The start-time settings: sockets, stores and services are built
        // from these, and reloads keep them (see `config::merge`).
        let started = current.load_full();
        let config = &started.config;

        let mut conf = ServerConf {
            threads: config.server.threads,
            work_stealing: config.server.work_stealing,
            grace_period_seconds: Some(config.server.grace_period.as_secs()),
            graceful_shutdown_timeout_seconds: Some(
                config.server.graceful_shutdown_timeout.as_secs(),
            ),
            ..ServerConf::default()
        };
        // Pingora's defaults put these in /tmp, shared by every instance.
        let pid_file = pid_file(&config.server.state_dir);
        conf.pid_file = pid_file.display().to_string();
        let upgrade_sock = config.server.state_dir.join("vigil-proxy.upgrade.sock");
        conf.upgrade_sock = upgrade_sock.display().to_string();
        let opt = Opt {
            upgrade: options.upgrade,
            ..Opt::default()
        };
        let mut server = Server::new_with_opt_and_conf(opt, conf);
        server.bootstrap();

        let fingerprints = config
            .fingerprint
            .capture
            .then(|| ConnectionFingerprints::new(&config.fingerprint.settings));
        let h2_connections = H2Connections::new();
        let app = VigilProxy::new(
            current.clone(),
            engine.clone(),
            metrics.clone(),
            fingerprints.clone(),
            decisions.clone(),
        )
        .with_h2_connections(h2_connections.clone())
        .with_fleet_state(fleet_state.clone())
        .with_open_requests(open_requests.clone())
        .with_dbsc(dbsc.clone());
        let mut certificates = Vec::new();
        for listener in &config.listeners {
            let mut proxy =
                pingora_proxy::http_proxy(&server.configuration, app.for_listener(listener));
            if listener.h2c {
                let mut options = HttpServerOptions::default();
                options.h2c = true;
                proxy.server_options = Some(options);
            }
            proxy.h2_options = Some(h2_options(&listener.limits));
            let limits = ConnectionLimits {
                max_connections: listener.limits.max_connections,
                header_timeout: listener.limits.header_timeout,
                max_head_bytes: 2 * config.max_header_bytes + REQUEST_LINE_ALLOWANCE,
                h2c: listener.h2c,
                h2_max_resets: listener.limits.h2_max_pending_resets,
            };
            let mut service = Service::new(
                format!("proxy {}", listener.name),
                Limited::new(
                    proxy,
                    limits,
                    limit_metrics(&metrics, &listener.name),
                    h2_connections.clone(),
                ),
            );
            let addr = listener.listen.to_string();
            if listener.certificates.is_empty() {
                service.add_tcp(&addr);
            } else {
                let resolver = SniResolver::load(&listener.certificates).map_err(|source| {
                    StartError::Tls {
                        listener: listener.name.clone(),
                        source,
                    }
                })?;
                let resolver = Arc::new(ListenerCertificates::new(resolver));
                // No paths: the resolver serves the certificates. The
                // callback tells requests what their connection was shown.
                let check = CertificateCheck::new(resolver.clone());
                let mut tls =
                    TlsSettings::with_callbacks(Box::new(check)).map_err(|e| StartError::Tls {
                        listener: listener.name.clone(),
                        source: crate::tls::TlsError::Load {
                            cert: String::new(),
                            key: String::new(),
                            reason: e.to_string(),
                        },
                    })?;
                certificates.push((listener.name.clone(), resolver.clone()));
                tls.set_cert_resolver(resolver);
                if listener.http2 {
                    tls.enable_h2();
                }
                service.add_tls_with_settings(&addr, None, tls);
                if let Some(store) = &fingerprints {
                    service.endpoints().set_pre_tls_callback(HelloCapture::new(
                        config.fingerprint.settings,
                        store.clone(),
                        metrics.tls_hello.clone(),
                        metrics.tls_fingerprints_tracked.clone(),
                    ));
                }
            }
            server.add_service(service);
        }

        server.add_service(background_service(
            "upstream health",
            HealthChecks::new(current.clone()),
        ));

        let final_snapshot = snapshot.as_ref().map(|(path, _)| {
            (
                engine.clone(),
                path.clone(),
                fleet_state.clone(),
                dbsc.clone(),
            )
        });
        if let Some((path, every)) = snapshot {
            server.add_service(background_service(
                "session snapshot",
                Snapshotter::new(engine.clone(), path, every, fleet_state.clone())
                    .with_dbsc(dbsc.clone()),
            ));
        }
        if let Some(fleet_sync) = fleet_sync {
            server.add_service(background_service("fleet sync", fleet_sync));
        }
        server.add_service(background_service(
            "session sweep",
            Sweeper::new(engine.clone(), std::time::Duration::from_secs(60)),
        ));
        // Always watched: a reload may add trusted sets read from files.
        let mut watched: Vec<Box<dyn Reloadable>> = vec![Box::new(TrustedFiles::new(
            engine.clone(),
            current.clone(),
            apply.clone(),
        ))];
        if let Some(geo) = geo {
            watched.push(Box::new(GeoReload(geo)));
        }
        let reloader = Reloader::new(config.server.file_check, watched, metrics.reloads.clone());
        server.add_service(background_service("file reload", reloader));

        let mut config_reloader = ConfigReloader::new(
            options.config_file.clone(),
            engine.clone(),
            current.clone(),
            metrics.clone(),
            certificates,
            apply,
        );
        if let Some(bundles) = bundles {
            config_reloader = config_reloader.with_rules(bundles);
        }
        let config_reloader = Arc::new(config_reloader);
        server.add_service(background_service(
            "config watch",
            ConfigWatch::new(config_reloader.clone(), config.server.file_check),
        ));
        let listening = Arc::new(AtomicBool::new(false));
        let upgrader = Upgrader::new(options.config_file.clone(), upgrade_sock);
        let signals = Signals::new(config_reloader, listening.clone()).with_upgrader(upgrader);

        let listen_addrs: Vec<_> = config.listeners.iter().map(|l| l.listen).collect();
        // READY=1 for systemd once the proxy and admin listeners accept.
        let mut everything = listen_addrs.clone();
        everything.push(config.admin.listen);
        server.add_service(background_service(
            "service manager readiness",
            Readiness::new(everything, listening.clone()),
        ));
        let admin = AdminApp::new(metrics, engine, current.clone(), listen_addrs, listening)
            .with_operator_api(decisions)
            .with_open_requests(open_requests);
        let mut admin = Service::new(
            "admin".to_owned(),
            pingora_core::apps::http_app::HttpServer::new_app(admin),
        );
        admin.add_tcp(&config.admin.listen.to_string());
        server.add_service(admin);

        Ok(Self {
            server,
            snapshot: final_snapshot,
            pid_file,
            signals,
            lanes,
        })
    }

    /// Adds another service to run in the same process.
    pub fn add_service(
        &mut self,
        service: impl pingora_core::services::ServiceWithDependents + 'static,
    ) {
        self.server.add_service(service);
    }

    /// Runs until SIGTERM (graceful), SIGINT (fast) or SIGQUIT (sockets
    /// handed to a new binary), reloading the config on SIGHUP; once every
    /// service has stopped, takes what the event lanes still hold (the
    /// controller's outbox made durable) and writes the session snapshot,
    /// and exits the process.
    pub fn run(self) -> ! {
        write_pid_file(&self.pid_file);
        self.server.run(pingora_core::server::RunArgs {
            shutdown_signal: Box::new(self.signals),
        });
        self.lanes.finish();
        if let Some((engine, path, fleet, dbsc)) = &self.snapshot {
            snapshot::write_logged(engine, path, fleet.as_deref(), Some(dbsc));
        }
        remove_pid_file(&self.pid_file);
        std::process::exit(0)
    }
}

/// Pingora's HTTP/2 settings for a listener: its own bounded defaults with
/// the listener's limits on top.
fn h2_options(limits: &ListenerLimits) -> pingora_core::protocols::http::v2::server::H2Options {
    let mut options = pingora_core::protocols::http::v2::server::default_h2_options();
    options
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(limits.h2_max_header_list_bytes)
        .max_pending_accept_reset_streams(limits.h2_max_pending_resets);
    options
}

/// The connection-limit series of `listener`, created at zero so that
/// dashboards see them before the first refusal.
fn limit_metrics(metrics: &Metrics, listener: &str) -> LimitMetrics {
    let refused = |reason: &str| {
        metrics
            .connections_refused
            .with_label_values(&[listener, reason])
    };
    LimitMetrics {
        open: metrics.connections_open.with_label_values(&[listener]),
        over_capacity: refused("max_connections"),
        header_timeout: refused("header_timeout"),
        header_too_large: refused("header_too_large"),
        h2_resets: refused("h2_resets"),
    }
}

/// The pid file of the instance whose state lives in `state_dir`.
pub fn pid_file(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("vigil-proxy.pid")
}

/// Pingora writes the pid file only when it daemonizes; `vigil-proxy
/// reload` needs it always. A new binary taking over (`run --upgrade`)
/// writes its own over the old one's.
fn write_pid_file(path: &std::path::Path) {
    if let Err(e) = std::fs::write(path, format!("{}\n", std::process::id())) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the pid file; `vigil-proxy reload` will not find this process");
    }
}

/// Removes the pid file unless a newer instance has written its own.
fn remove_pid_file(path: &std::path::Path) {
    let ours = std::fs::read_to_string(path)
        .is_ok_and(|text| text.trim() == std::process::id().to_string());
    if ours {
        let _ = std::fs::remove_file(path);
    }
}

impl std::fmt::Debug for Vigil {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vigil").finish_non_exhaustive()
    }
}
