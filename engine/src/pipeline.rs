//! The pipeline: the stages in order, top to bottom.

use crate::client_ip::{ClientIp, ClientIpStage};
use crate::decide::{Action, Policy};
use crate::device::{Device, DeviceStage};
use crate::request::{RequestError, RequestView};
use crate::score::{Risk, ScoreConfig, Scorer};
use crate::session::{Session, SessionConfig, SessionHashKey, SessionStage};

/// Everything the engine is configured with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineConfig {
    /// How sessions are found.
    pub session: SessionConfig,
    /// How requests are scored.
    pub score: ScoreConfig,
}

/// The engine: the stages and the session store they share.
#[derive(Debug, Clone)]
pub struct Engine {
    session: SessionStage,
    client_ip: ClientIpStage,
    device: DeviceStage,
    scorer: Scorer,
}

/// The engine's answer for one request, with the facts behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The session, if the request carried one.
    pub session: Option<Session>,
    /// The client the request was judged as.
    pub client: ClientIp,
    /// The device observed.
    pub device: Device,
    /// The risk found.
    pub risk: Risk,
    /// What to do.
    pub action: Action,
}

impl Engine {
    /// Builds an engine with an empty session store.
    pub fn new(config: EngineConfig, hash_key: SessionHashKey) -> Self {
        Self {
            session: SessionStage::new(config.session, hash_key),
            client_ip: ClientIpStage::default(),
            device: DeviceStage::default(),
            scorer: Scorer::new(config.score),
        }
    }

    /// Runs every stage on one request and records what it taught the
    /// session store. A `Revoke` verdict has already ended the session here
    /// when this returns.
    pub fn evaluate(
        &self,
        request: &RequestView<'_>,
        policy: &Policy,
    ) -> Result<Verdict, RequestError> {
        let session = self.session.identify(request.headers)?;
        let client = self.client_ip.resolve(request);
        let device = self.device.observe(request.headers);
        let (risk, observation) =
            self.scorer
                .score(session.map(|s| s.key), &device, &client, request.now_secs);
        let action = policy.decide(&risk);

        self.scorer
            .commit(observation, &client, action == Action::Allow);
        if let (Action::Revoke, Some(s)) = (action, session) {
            self.scorer.revoke(s.key, request.now_secs);
        }
        Ok(Verdict {
            session,
            client,
            device,
            risk,
            action,
        })
    }

    /// The session store, for revocations from outside the request path and
    /// for gauges.
    pub fn scorer(&self) -> &Scorer {
        &self.scorer
    }
}

#[cfg(test)]
mod tests;
