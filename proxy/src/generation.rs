//! One generation of the running config: what a request is routed, judged
//! and counted with.
//!
//! Each request loads the generation in force when it starts and keeps it
//! to its end (ARCHITECTURE.md: one snapshot per request), so a reload
//! changes nothing under a request in flight. A reload builds the next
//! generation whole and stores it in one step; a bad reload stores nothing.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::config::{Config, Route};
use crate::metrics::{Metrics, RequestCounters};
use crate::operator::{AdminToken, TokenError};
use crate::upstream::{UpstreamError, UpstreamGroup};

/// The generation in force, shared by the proxy, the admin listener, the
/// health checks and the reloader.
pub type Current = Arc<ArcSwap<Generation>>;

/// Held while the engine's settings and the generation are replaced, so
/// that a config reload and a trusted-file reload never interleave.
pub type ApplyLock = Arc<Mutex<()>>;

/// An immutable config generation.
#[derive(Debug)]
pub struct Generation {
    /// The config as applied (restart-only settings at their running values).
    pub config: Config,
    /// The upstream groups, in `config.upstreams` order.
    pub upstreams: Vec<Arc<UpstreamGroup>>,
    /// The per-request counters, resolved for `config.routes`.
    pub counters: RequestCounters,
    /// The operator API's token, read from `[admin] token_file` when the
    /// generation was built (a reload rotates it); `None` turns the calls
    /// off.
    pub admin_token: Option<AdminToken>,
    /// Some route binds sessions with DBSC: its endpoints and its bound
    /// cookie are looked for. Resolved once, not on every request.
    pub dbsc: bool,
}

/// Why a generation could not be built from a valid config.
#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    /// An upstream group could not be built.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The admin token file could not be used.
    #[error(transparent)]
    Token(#[from] TokenError),
}

// === impl Generation ===

impl Generation {
    /// Builds a generation. Upstream groups whose config is unchanged from
    /// `previous` are carried over with their health and ejection state;
    /// changed and new ones start fresh, healthy until checked.
    pub fn new(
        config: Config,
        previous: Option<&Generation>,
        metrics: &Metrics,
    ) -> Result<Self, GenerationError> {
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        for u in &config.upstreams {
            let kept = previous
                .and_then(|p| p.upstreams.iter().find(|g| g.config == *u))
                .cloned();
            let group = match kept {
                Some(group) => group,
                None => Arc::new(UpstreamGroup::new(u.clone())?),
            };
            upstreams.push(group);
        }
        let counters = RequestCounters::new(
            metrics,
            config.routes.iter().map(|r| r.name.as_str()),
            &config.rules,
        );
        let admin_token = config
            .admin
            .token_file
            .as_deref()
            .map(AdminToken::load)
            .transpose()?;
        Ok(Self {
            dbsc: any_dbsc(&config),
            config,
            upstreams,
            counters,
            admin_token,
        })
    }

    /// The next generation with `config`, which differs from this one's
    /// in its rules only (a rule bundle applied): the upstream groups and
    /// the admin token carried over, the rule counters resolved for the
    /// new rules. Cannot fail: nothing is read.
    pub fn with_config(&self, config: Config, metrics: &Metrics) -> Self {
        let counters = RequestCounters::new(
            metrics,
            config.routes.iter().map(|r| r.name.as_str()),
            &config.rules,
        );
        Self {
            dbsc: any_dbsc(&config),
            config,
            upstreams: self.upstreams.clone(),
            counters,
            admin_token: self.admin_token.clone(),
        }
    }

    /// The route at `index`, as found by [`crate::routes::route_index`] in
    /// this generation.
    pub fn route(&self, index: Option<usize>) -> Option<&Route> {
        index.and_then(|i| self.config.routes.get(i))
    }

    /// The upstream group of the route at `index`.
    pub fn upstream(&self, index: Option<usize>) -> Option<&UpstreamGroup> {
        self.route(index)
            .and_then(|r| self.upstreams.get(r.upstream))
            .map(Arc::as_ref)
    }
}

/// Whether some route of `config` binds sessions with DBSC.
fn any_dbsc(config: &Config) -> bool {
    config
        .routes
        .iter()
        .any(|r| r.dbsc != crate::dbsc::RouteDbsc::Off)
}
