//! Builds the Pingora server from a validated config and runs it.

use std::sync::Arc;

use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::Server;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::services::listening::Service;
use vigil_engine::{Engine, SessionHashKey};

use pingora_core::services::background::background_service;
use vigil_geoip::{GeoIp, GeoPaths};

use crate::admin::AdminApp;
use crate::config::{Config, HashKeySource};
use crate::feedback::{AdminToken, Decisions};
use crate::hello::{ConnectionFingerprints, HelloCapture};
use crate::keyfile;
use crate::metrics::Metrics;
use crate::proxy::VigilProxy;
use crate::reload::{GeoReload, Reloadable, Reloader, Sweeper, TrustedFiles};
use crate::snapshot::{self, Snapshotter};
use crate::tls::SniResolver;
use crate::upstream::UpstreamGroup;

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
    /// An upstream group could not be built.
    #[error(transparent)]
    Upstream(#[from] crate::upstream::UpstreamError),
    /// A geo database could not be opened.
    #[error(transparent)]
    Geo(#[from] vigil_geoip::GeoError),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The admin token could not be read.
    #[error(transparent)]
    Token(#[from] crate::feedback::TokenError),
    /// The event consumers could not be started.
    #[error("event consumers: {0}")]
    Events(std::io::Error),
}

/// Events each lane of the engine's event sink holds before it drops
/// (observability) or announces a gap (fleet).
const EVENT_LANE: usize = 65_536;

/// A server with every service added, ready to run.
pub struct Vigil {
    server: Server,
    /// The engine and where its snapshot goes, written once more after the
    /// last request has been served.
    snapshot: Option<(Arc<Engine>, std::path::PathBuf)>,
}

impl Vigil {
    /// Builds every service of `config`: one proxy service per listener, the
    /// admin listener, and a health-check service per upstream group.
    /// Extra services (the demo app) can be added before [`Vigil::run`].
    pub fn build(config: Config) -> Result<Self, StartError> {
        let hash_key = match &config.hash_key {
            HashKeySource::File(path) => keyfile::load_or_create(path)?,
            HashKeySource::Ephemeral => SessionHashKey::from_bytes(rand::random()),
        };
        let config = Arc::new(config);
        let mut engine = Engine::new(config.engine.clone(), hash_key);
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
        // Events are told to logs and metrics now, to the controller later;
        // room for a burst of refusals without a request ever waiting.
        let (sink, streams) = vigil_engine::events::channel(EVENT_LANE, EVENT_LANE);
        crate::events::consume(
            streams,
            metrics.events.clone(),
            metrics.fleet_events.clone(),
        )
        .map_err(StartError::Events)?;
        let engine = Arc::new(engine.with_events(sink));
        // Sessions and revocations from before a restart; an ephemeral key
        // (the demo) could not recognise them.
        let snapshot = config
            .snapshot_every
            .filter(|_| matches!(config.hash_key, HashKeySource::File(_)))
            .map(|every| (config.server.state_dir.join(snapshot::FILE_NAME), every));
        if let Some((path, _)) = &snapshot {
            snapshot::restore(&engine, path);
        }
        let mut upstreams = Vec::new();
        let mut health_services = Vec::new();
        for u in &config.upstreams {
            let (group, health) = UpstreamGroup::new(u.clone())?;
            upstreams.push(group);
            health_services.extend(health);
        }
        let upstreams = Arc::new(upstreams);

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
        conf.pid_file = config
            .server
            .state_dir
            .join("vigil-proxy.pid")
            .display()
            .to_string();
        conf.upgrade_sock = config
            .server
            .state_dir
            .join("vigil-proxy.upgrade.sock")
            .display()
            .to_string();
        let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
        server.bootstrap();

        let fingerprints = config
            .fingerprint
            .capture
            .then(|| ConnectionFingerprints::new(&config.fingerprint.settings));
        let decisions = Decisions::new();
        let token = config
            .admin
            .token_file
            .as_deref()
            .map(AdminToken::load)
            .transpose()?;
        let app = VigilProxy::new(
            config.clone(),
            engine.clone(),
            upstreams.clone(),
            metrics.clone(),
            fingerprints.clone(),
            decisions.clone(),
        );
        for listener in &config.listeners {
            let mut service = pingora_proxy::http_proxy_service_with_name(
                &server.configuration,
                app.for_listener(listener),
                &format!("proxy {}", listener.name),
            );
            if listener.h2c
                && let Some(logic) = service.app_logic_mut()
            {
                let mut options = HttpServerOptions::default();
                options.h2c = true;
                logic.server_options = Some(options);
            }
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
                // The paths are unused: the resolver serves the certificates.
                let mut tls = TlsSettings::intermediate("", "").map_err(|e| StartError::Tls {
                    listener: listener.name.clone(),
                    source: crate::tls::TlsError::Load {
                        cert: String::new(),
                        key: String::new(),
                        reason: e.to_string(),
                    },
                })?;
                tls.set_cert_resolver(Arc::new(resolver));
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

        for health in health_services {
            server.add_service(health);
        }

        let final_snapshot = snapshot
            .as_ref()
            .map(|(path, _)| (engine.clone(), path.clone()));
        if let Some((path, every)) = snapshot {
            server.add_service(background_service(
                "session snapshot",
                Snapshotter::new(engine.clone(), path, every),
            ));
        }
        server.add_service(background_service(
            "session sweep",
            Sweeper::new(engine.clone(), std::time::Duration::from_secs(60)),
        ));
        let mut watched: Vec<Box<dyn Reloadable>> = Vec::new();
        if let Some(geo) = geo {
            watched.push(Box::new(GeoReload(geo)));
        }
        let trusted = TrustedFiles::new(
            engine.clone(),
            config.engine.client_ip.clone(),
            config.trusted_proxies.clone(),
        );
        if trusted.watches_files() {
            watched.push(Box::new(trusted));
        }
        if !watched.is_empty() {
            let reloader =
                Reloader::new(config.server.file_check, watched, metrics.reloads.clone());
            server.add_service(background_service("file reload", reloader));
        }

        let listen_addrs = config.listeners.iter().map(|l| l.listen).collect();
        let admin = AdminApp::new(metrics, engine, upstreams, listen_addrs)
            .with_operator_api(token, decisions);
        let mut admin = Service::new(
            "admin".to_owned(),
            pingora_core::apps::http_app::HttpServer::new_app(admin),
        );
        admin.add_tcp(&config.admin.listen.to_string());
        server.add_service(admin);

        Ok(Self {
            server,
            snapshot: final_snapshot,
        })
    }

    /// Adds another service to run in the same process.
    pub fn add_service(
        &mut self,
        service: impl pingora_core::services::ServiceWithDependents + 'static,
    ) {
        self.server.add_service(service);
    }

    /// Runs until SIGTERM (graceful) or SIGINT (fast), writes the session
    /// snapshot once every service has stopped, and exits the process.
    pub fn run(self) -> ! {
        self.server.run(pingora_core::server::RunArgs::default());
        if let Some((engine, path)) = &self.snapshot {
            snapshot::write_logged(engine, path);
        }
        std::process::exit(0)
    }
}

impl std::fmt::Debug for Vigil {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vigil").finish_non_exhaustive()
    }
}
