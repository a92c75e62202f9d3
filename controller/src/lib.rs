//! `vigil-controller`: one source of truth for the fleet's revocations and
//! user risk, streamed to every edge node (`docs/controller.md`).
//!
//! The store ([`store`]) keeps a contiguous change log and the state it
//! builds; the API ([`api`]) streams it to nodes, takes their events, and
//! lets an operator revoke a session or a user everywhere.

pub mod admin;
mod admin_audit;
pub mod api;
pub mod bcl;
pub mod config;
pub mod copy;
pub mod dashboard;
pub mod feedback;
pub mod logout;
pub mod metrics;
pub mod outbox;
pub mod service_manager;
pub mod signing;
pub mod ssf;
pub mod store;
pub mod tail;
pub mod tls;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

pub use crate::config::Config;
use crate::store::Store;

/// How often the log is compacted.
const COMPACT_EVERY: Duration = Duration::from_secs(60);

/// Why the controller could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The listener could not be bound or served.
    #[error("listen {0}: {1}")]
    Listen(std::net::SocketAddr, std::io::Error),
    /// The metrics could not be set up.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Tasks that end with [`run`], however it ends (returned, or dropped).
struct Tasks(Vec<tokio::task::AbortHandle>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Opens the store and serves the API on `config.listen` until `shutdown`
/// resolves.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let listen = config.listen;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| RunError::Listen(listen, e))?;
    run_on(listener, config, shutdown).await
}

/// [`run`] on a listener already bound (`config.listen` is then only
/// named in logs): what a caller that must hold its port from the start
/// uses, as tests running side by side do.
pub async fn run_on(
    listener: TcpListener,
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let store = Store::open(&config.store).await?;
    let bounds = store.bounds().await?;
    let listen = listener.local_addr().unwrap_or(config.listen);
    let drop_seq = config.test_drop_seq;
    if let Some(seq) = drop_seq {
        tracing::warn!(
            seq,
            "TEST HOOK {}: change {seq} is left out of every live sync stream; never set this in production",
            tail::DROP_SEQ_ENV
        );
    }
    let app = Arc::new(api::App::new(
        store.clone(),
        config.clone(),
        bounds.head,
        drop_seq,
    )?);
    app.refresh_disabled().await?;
    if config.user_names == config::UserNames::Keyed {
        // Names kept while `user_names` was "clear" go once it is not.
        let forgotten = store.forget_names().await?;
        if forgotten > 0 {
            tracing::info!(forgotten, "user names deleted: user_names is \"keyed\"");
        }
    }
    let watcher = Arc::downgrade(&app);
    let mut tasks = Tasks(Vec::new());
    // Keys read at start, one poller per polled transmitter
    // (`docs/signals.md`).
    tasks.0.extend(ssf::start(&app));
    if let Some(outbox) = &app.outbox {
        tasks
            .0
            .push(tokio::spawn(outbox::Outbox::run(Arc::clone(outbox))).abort_handle());
    }
    tasks.0.push(
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(api::NODES_REFRESH);
            loop {
                tick.tick().await;
                let Some(app) = watcher.upgrade() else { return };
                if let Err(e) = app.refresh_disabled().await {
                    tracing::warn!(error = %e, "disabled nodes not reread");
                }
            }
        })
        .abort_handle(),
    );
    tasks.0.push(
        tokio::spawn(tail::run(
            Arc::clone(&app.tail),
            store.clone(),
            app.metrics.clone(),
            app.head.subscribe(),
            bounds.head,
            config.poll,
        ))
        .abort_handle(),
    );
    if store.backend() == store::Backend::Postgres {
        // Listening before the API answers: a change committed by another
        // replica after this one is up wakes it.
        let first = match tail::connect(&config.store).await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "change notifications: cannot listen yet; polling meanwhile");
                None
            }
        };
        tasks.0.push(
            tokio::spawn(tail::listen(
                config.store.clone(),
                Arc::clone(&app.tail),
                app.metrics.clone(),
                first,
            ))
            .abort_handle(),
        );
    }
    if config.ssf_tx.is_some() {
        tasks
            .0
            .push(tokio::spawn(ssf::transmit::deliver::run(Arc::downgrade(&app))).abort_handle());
    }
    let keep = config.keep_changes;
    let (keep_sessions, keep_detections) = (config.keep_sessions, config.keep_detections);
    let keep_profiles = config.keep_profiles;
    let keep_audit = config.keep_audit;
    let compaction = tokio::spawn(async move {
        let mut tick = tokio::time::interval(COMPACT_EVERY);
        loop {
            tick.tick().await;
            match store.compact(keep).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "change log compacted"),
                Err(e) => tracing::warn!(error = %e, "change log not compacted"),
            }
            match store
                .expire(api::now_secs(), keep_sessions, keep_detections)
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "records past their retention deleted"),
                Err(e) => tracing::warn!(error = %e, "records past their retention not deleted"),
            }
            // A call of its own rather than another argument to `expire`:
            // the retention of histories is one concern, kept apart.
            match store.expire_profiles(api::now_secs(), keep_profiles).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "user histories past their retention deleted"),
                Err(e) => {
                    tracing::warn!(error = %e, "user histories past their retention not deleted")
                }
            }
            match store
                .expire_audit(api::now_secs().saturating_sub(keep_audit))
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "audit rows past keep_audit_days deleted"),
                Err(e) => tracing::warn!(error = %e, "audit rows past keep_audit_days not deleted"),
            }
            // SET ids past the age at which their SETs are refused anyway.
            if let Err(e) = store.expire_set_ids(api::now_secs()).await {
                tracing::warn!(error = %e, "SET ids past their age not deleted");
            }
        }
    });
    tasks.0.push(compaction.abort_handle());
    let ids = app.config.key_ids;
    tracing::info!(
        current = %ids.current,
        previous = ids.previous.map(|k| k.to_string()).as_deref().unwrap_or("none"),
        user = %ids.user,
        "session hash keys"
    );
    if let Some(tls) = &config.tls {
        // A renewed certificate is served from its files' next look.
        let certs = Arc::clone(&tls.certs);
        tasks.0.push(
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(tls::RELOAD_EVERY);
                loop {
                    tick.tick().await;
                    let reloaded = tokio::task::spawn_blocking({
                        let certs = Arc::clone(&certs);
                        move || certs.reload()
                    })
                    .await;
                    match reloaded {
                        Ok(Ok(false)) => {}
                        Ok(Ok(true)) => tracing::info!("TLS certificate reloaded"),
                        Ok(Err(problems)) => tracing::warn!(
                            %problems,
                            "TLS certificate files changed but not reloaded; the old certificate is served"
                        ),
                        Err(e) => tracing::warn!(error = %e, "TLS certificate not reloaded"),
                    }
                }
            })
            .abort_handle(),
        );
    }
    let https = config.tls.is_some();
    tracing::info!(%listen, https, head = bounds.head, backend = ?app.store.backend(), "controller listening");
    // Each request learns its connection's client certificate, if any.
    let service = api::router(app).into_make_service_with_connect_info::<tls::Peer>();
    // The listener was bound before the store opened: connections made
    // meanwhile wait in its backlog and are served from here on.
    service_manager::ready("serving");
    match config.tls {
        None => axum::serve(listener, service)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| RunError::Listen(listen, e)),
        Some(tls) => axum::serve(tls::TlsListener::new(listener, tls.server), service)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| RunError::Listen(listen, e)),
    }
}
