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
            self.engine.scorer().sweep(crate::proxy::now_secs());
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
