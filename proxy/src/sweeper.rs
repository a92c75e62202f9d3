//! Drops session states that idled out, once a minute, so that their memory
//! returns before the store would reuse it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use vigil_engine::Engine;

/// The background service that sweeps the engine's session store.
pub struct Sweeper {
    engine: Arc<Engine>,
    every: Duration,
}

// === impl Sweeper ===

impl Sweeper {
    /// A sweeper of `engine`'s session store every `every`.
    pub fn new(engine: Arc<Engine>, every: Duration) -> Self {
        Self { engine, every }
    }
}

#[async_trait]
impl BackgroundService for Sweeper {
    async fn start(&self, shutdown: ShutdownWatch) {
        crate::periodic::every(self.every, shutdown, || {
            let scorer = self.engine.scorer();
            scorer.sweep(crate::proxy::now_secs());
            // Revocations of minted sessions evict each other, never a real
            // session's, but a full budget means someone is at it.
            let (minted, budget) = scorer.minted_revocations();
            if budget > 0 && minted.saturating_mul(10) >= budget.saturating_mul(9) {
                tracing::warn!(
                    minted,
                    budget,
                    "the budget of revocations of made-up sessions is nearly full: a client is minting sessions to get them revoked"
                );
            }
        })
        .await;
    }
}

impl std::fmt::Debug for Sweeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sweeper")
            .field("every", &self.every)
            .finish()
    }
}
