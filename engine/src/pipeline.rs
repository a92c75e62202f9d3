//! The pipeline: the stages in order, top to bottom.

use std::sync::Arc;

use arc_swap::ArcSwap;
use vigil_geoip::GeoIp;

use crate::client_ip::{ClientIp, ClientIpConfig, ClientIpStage, ForwardedHeaders};
use crate::decide::{Action, Policy};
use crate::device::{Device, DeviceStage};
use crate::fingerprint::UpstreamFingerprints;
use crate::network::{NetworkChange, NetworkFacts};
use crate::request::{RequestError, RequestView};
use crate::score::{
    Commit, Feedback, FeedbackError, Place, Risk, RiskLevel, Risks, ScoreConfig, Scorer, UserKey,
};
use crate::session::{Session, SessionConfig, SessionHashKey, SessionKey, SessionStage};

/// Everything the engine is configured with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineConfig {
    /// How sessions are found.
    pub session: SessionConfig,
    /// How requests are scored.
    pub score: ScoreConfig,
    /// How the client address is found behind proxies. Default: no
    /// forwarding header believed, the client is the TCP peer.
    pub client_ip: ClientIpConfig,
    /// Fingerprint headers believed from trusted balancers that end TLS
    /// before Vigil. Default: none.
    pub upstream_fingerprints: UpstreamFingerprints,
}

/// The engine: the stages and the session store they share.
///
/// The client IP stage sits behind an `ArcSwap` so that trusted proxy sets
/// read from files can be replaced whole while requests run, without losing
/// the session store; each request loads one snapshot of it.
#[derive(Debug)]
pub struct Engine {
    session: SessionStage,
    client_ip: ArcSwap<ClientIpStage>,
    device: DeviceStage,
    geo: Option<Arc<GeoIp>>,
    scorer: Scorer,
    /// The secret user keys are derived with (the session hash key's).
    user_secret: SessionHashKey,
}

/// The engine's answer for one request, with the facts behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The session, if the request carried one.
    pub session: Option<Session>,
    /// The client the request was judged as, and the chain it was found in.
    pub client: ClientIp,
    /// How the session's network moved since its baseline; `None` for an
    /// anonymous, new or revoked session.
    pub network_change: Option<NetworkChange>,
    /// The device observed.
    pub device: Device,
    /// The request's overall risk: the three risks' contributions added up.
    pub risk: Risk,
    /// Login, session and entity risk apart.
    pub risks: Risks,
    /// The user the session is bound to, when the app or identity provider
    /// named one.
    pub user: Option<UserKey>,
    /// What to do.
    pub action: Action,
}

impl Engine {
    /// Builds an engine with an empty session store.
    pub fn new(config: EngineConfig, hash_key: SessionHashKey) -> Self {
        Self {
            session: SessionStage::new(config.session, hash_key.clone()),
            client_ip: ArcSwap::from_pointee(ClientIpStage::new(config.client_ip)),
            device: DeviceStage::new(config.upstream_fingerprints),
            geo: None,
            scorer: Scorer::new(config.score),
            user_secret: hash_key.clone(),
        }
    }

    /// Adds the geo stage: the derived client's ASN and country from these
    /// databases feed the network-change classification. Without it, ASN
    /// and country are unknown (never "different").
    pub fn with_geo(mut self, geo: Arc<GeoIp>) -> Self {
        self.geo = Some(geo);
        self
    }

    /// Replaces the client IP stage (new trusted sets read from a changed
    /// file). Requests under way finish with the stage they started with.
    pub fn set_client_ip(&self, config: ClientIpConfig) {
        self.client_ip.store(Arc::new(ClientIpStage::new(config)));
    }

    /// Applies a reloaded config to requests evaluated from now on: score
    /// weights and thresholds, bearer tokens and session limits, the client
    /// IP config and the fingerprint headers believed from balancers. The
    /// session store stays, and so does what would re-key or resize it: the
    /// cookie names in `config.session` and the store sizes in
    /// `config.score` are ignored (a restart applies them). Requests under
    /// way finish with the stages they started with.
    pub fn reconfigure(&self, config: EngineConfig) {
        self.session.reconfigure(config.session);
        self.scorer.reconfigure(config.score);
        self.set_client_ip(config.client_ip);
        self.device.set_upstream(config.upstream_fingerprints);
    }

    /// Only the client IP stage, for requests that are forwarded without
    /// being judged (route mode `off`, fail-open): the app still gets a
    /// clean client address.
    pub fn resolve_client(
        &self,
        request: &RequestView<'_>,
        forwarded: ForwardedHeaders,
    ) -> ClientIp {
        self.client_ip.load().resolve_with(request, forwarded)
    }

    /// Runs every stage on one request and records what it taught the
    /// session store, believing the forwarding headers of
    /// [`EngineConfig::client_ip`]. A `Revoke` verdict has already ended the
    /// session here when this returns.
    pub fn evaluate(
        &self,
        request: &RequestView<'_>,
        policy: &Policy,
    ) -> Result<Verdict, RequestError> {
        let headers = self.client_ip.load().config().headers;
        self.evaluate_with(request, policy, headers)
    }

    /// [`Engine::evaluate`], believing the forwarding headers `forwarded`
    /// instead of the configured ones: the proxy passes its listener's
    /// choice. Headers are believed only from a peer in a trusted set.
    pub fn evaluate_with(
        &self,
        request: &RequestView<'_>,
        policy: &Policy,
        forwarded: ForwardedHeaders,
    ) -> Result<Verdict, RequestError> {
        let session = self.session.identify(request.headers)?;
        let client_ip = self.client_ip.load();
        let client = client_ip.resolve_with(request, forwarded);
        let device = self.device.observe(request, &client_ip.config().trusted);
        let (network, place) = self.locate(&client);
        let scored = self.scorer.score(
            session.map(|s| s.key),
            &device,
            &network.mark(),
            place,
            request.now_secs,
        );
        let risk = scored.risks.overall(&self.scorer.config());
        let action = policy.decide(&risk);

        let revoked = risk.reasons.iter().any(|c| c.reason.is_final());
        let commit = match action {
            Action::Allow => Commit::Allowed,
            _ if policy.level(&risk) == RiskLevel::High && !revoked => Commit::Detected,
            _ => Commit::Refused,
        };
        self.scorer
            .commit(scored.observation, commit, request.now_secs);
        if let (Action::Revoke, Some(s)) = (action, session) {
            self.scorer.revoke(s.key, request.now_secs);
        }
        Ok(Verdict {
            session,
            client,
            network_change: scored.change,
            device,
            risk,
            risks: scored.risks,
            user: scored.user,
            action,
        })
    }

    /// The network facts of the client, with ASN, country and place from the
    /// geo stage when there is one.
    fn locate(&self, client: &ClientIp) -> (NetworkFacts, Option<Place>) {
        let mut network = NetworkFacts::from(client);
        let mut place = None;
        if let Some(geo) = &self.geo {
            let facts = geo.lookup(client.addr);
            network.asn = facts.asn;
            network.country = facts.country.map(|c| c.as_bytes());
            place = facts.location.as_ref().and_then(Place::from_location);
        }
        (network, place)
    }

    /// The user key of the user named `name` (as the app or identity
    /// provider names them): a keyed hash, so that no store holds names.
    pub fn user_key(&self, name: &str) -> UserKey {
        UserKey::derive(self.user_secret.as_bytes(), name)
    }

    /// The session key of a credential sent as the first configured session
    /// cookie, e.g. to bind the session a login response sets before its
    /// first request. `None` when no cookie is configured or the value is
    /// longer than the session limits allow.
    pub fn key_for_credential(&self, value: &[u8]) -> Option<SessionKey> {
        self.session.cookie_key(0, value)
    }

    /// The session key of `value` sent as the session cookie `name`; `None`
    /// when `name` is not a configured session cookie or the value is too
    /// long. The proxy binds the session a login response sets with it.
    pub fn key_for_cookie(&self, name: &str, value: &[u8]) -> Option<SessionKey> {
        self.session.cookie_key(self.session.rank_of(name)?, value)
    }

    /// Binds a session to the user named `name`; see [`Scorer::bind_user`].
    pub fn bind_user(&self, session: SessionKey, name: &str, now_secs: u64) {
        self.scorer
            .bind_user(session, self.user_key(name), now_secs);
    }

    /// This request's client passed a step-up: its device and network become
    /// its session's baseline and are learnt for the user. Returns the
    /// session, if the request carried one.
    pub fn confirm(&self, request: &RequestView<'_>) -> Result<Option<SessionKey>, RequestError> {
        let headers = self.client_ip.load().config().headers;
        self.confirm_with(request, headers)
    }

    /// [`Engine::confirm`], believing the forwarding headers `forwarded`
    /// (the listener's), as [`Engine::evaluate_with`] does.
    pub fn confirm_with(
        &self,
        request: &RequestView<'_>,
        forwarded: ForwardedHeaders,
    ) -> Result<Option<SessionKey>, RequestError> {
        let Some(session) = self.session.identify(request.headers)? else {
            return Ok(None);
        };
        let client_ip = self.client_ip.load();
        let client = client_ip.resolve_with(request, forwarded);
        let device = self.device.observe(request, &client_ip.config().trusted);
        let (network, place) = self.locate(&client);
        self.scorer.confirm(
            session.key,
            &device,
            &network.mark(),
            place,
            request.now_secs,
        );
        Ok(Some(session.key))
    }

    /// Applies an operator's feedback; see [`Feedback`].
    pub fn feedback(&self, feedback: Feedback, now_secs: u64) -> Result<(), FeedbackError> {
        let place = match &feedback {
            Feedback::FalsePositive { network, .. } => self.geo.as_ref().and_then(|g| {
                g.lookup(network.client)
                    .location
                    .as_ref()
                    .and_then(Place::from_location)
            }),
            _ => None,
        };
        let feedback = match feedback {
            Feedback::FalsePositive {
                session,
                device,
                mut network,
            } => {
                if let Some(geo) = &self.geo {
                    let facts = geo.lookup(network.client);
                    network.asn = facts.asn;
                    network.country = facts.country.map(|c| c.as_bytes());
                }
                Feedback::FalsePositive {
                    session,
                    device,
                    network,
                }
            }
            other => other,
        };
        self.scorer.feedback(feedback, place, now_secs)
    }

    /// The session store, for revocations from outside the request path and
    /// for gauges.
    pub fn scorer(&self) -> &Scorer {
        &self.scorer
    }
}

#[cfg(test)]
mod tests;
