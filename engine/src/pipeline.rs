//! The pipeline: the stages in order, top to bottom, and what a verdict's
//! effects do. The response side — what the app's response asks of the
//! engine — is in [`respond`].

mod binding;
mod respond;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use smallvec::SmallVec;
use vigil_geoip::GeoIp;

use crate::binding::{Binding, BindingConfig, Check};
use crate::client_ip::{ClientIp, ClientIpConfig, ClientIpStage, ForwardedHeaders};
use crate::decide::{Action, Facts, NoRules, Policy, Rules, Ruling};
use crate::device::{Device, DeviceStage};
use crate::events::{Detection, Event, EventSink, FeedbackKind, Reference, RevocationCause};
use crate::fingerprint::UpstreamFingerprints;
use crate::network::{NetworkChange, NetworkFacts};
use crate::request::{RequestError, RequestView};
use crate::score::{
    Carried, Commit, Feedback, FeedbackError, Observation, Place, Risk, RiskLevel, Risks,
    ScoreConfig, Scorer, UserKey,
};
use crate::session::{KeyId, Session, SessionConfig, SessionHashKey, SessionKey, SessionStage};
pub use respond::{Responded, ResponseEffects, valid_user_name};

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
    /// The rotating binding (docs/bound-sessions.md). Default: off.
    pub binding: BindingConfig,
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
    /// The secret user keys are derived with: the session hash key, unless
    /// [`Engine::with_user_key`] pinned another (a rotation of the session
    /// key must not re-key users).
    user_secret: SessionHashKey,
    /// Where state changes are told; `None`: nobody listens.
    events: Option<EventSink>,
    /// Requests evaluated so far ([`Engine::evaluations`]).
    evaluations: AtomicU64,
    /// The rotating binding, when enabled.
    binding: Option<Binding>,
}

/// The public ids of the keys an engine hashes with ([`SessionHashKey::id`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashKeyIds {
    /// The current session hash key.
    pub current: KeyId,
    /// The retiring one, during a rotation.
    pub previous: Option<KeyId>,
    /// The key user names are hashed with.
    pub user: KeyId,
}

/// The engine's answer for one request, with the facts behind it.
#[derive(Debug, Clone, PartialEq)]
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
    /// Which rule chose `action` (none: the policy table), the tags rules
    /// added and the shadow rules that matched.
    pub ruling: Ruling,
    /// The client's network facts (ASN and country from the geo stage).
    pub network: NetworkFacts,
    /// What carrying out `action` would change; applied by
    /// [`Engine::apply`] as the route's mode allows.
    pub effects: Effects,
    /// How many session credentials the request carried (all judged; the
    /// worst decided). The response side binds and confirms only a request
    /// with exactly one: with several, which one the app honoured cannot be
    /// told.
    pub credentials: usize,
    /// The request's time, in seconds since the Unix epoch.
    pub at: u64,
    /// The rotating binding's judgement of the deciding session (a cookie
    /// session on an engine with the binding on).
    pub binding: Option<Check>,
    /// Where the geo stage placed the client, for the response side.
    place: Option<Place>,
}

/// The state changes a verdict implies, as data: nothing has changed when
/// [`Engine::decide`] returns. [`Engine::apply`] carries them out as the
/// route's [`Enforcement`] allows.
#[derive(Debug, Clone, PartialEq)]
pub struct Effects {
    /// What to commit, one per credential whose state changes: the
    /// request's session; every credential when several were all allowed;
    /// otherwise each credential that earned a refusal, with its own.
    commits: SmallVec<[(Observation, Commit); 1]>,
    /// Every credential whose own verdict was `revoke`.
    revoke: SmallVec<[SessionKey; 1]>,
}

impl Effects {
    /// Whether applying keeps the request's state and learns from it.
    pub fn learns(&self) -> bool {
        self.commits
            .iter()
            .any(|(o, c)| *c == Commit::Allowed && o.is_session())
    }

    /// Whether applying counts a detection against a session's user.
    pub fn records_detection(&self) -> bool {
        self.commits.iter().any(|(o, c)| {
            *c == Commit::Detected
                && matches!(o, Observation::Session { next, .. } if next.user().is_some())
        })
    }

    /// The sessions applying revokes.
    pub fn revokes(&self) -> &[SessionKey] {
        &self.revoke
    }
}

/// How much worse one action is than another, for choosing the verdict
/// among several credentials. An action this build does not know counts as
/// a block.
fn severity(action: Action) -> u8 {
    match action {
        Action::Allow => 0,
        Action::StepUp => 1,
        Action::Revoke => 3,
        _ => 2,
    }
}

/// How far a route lets a verdict's effects go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Enforcement {
    /// Carry out the decision and every effect it implies.
    Enforce,
    /// Forward every request; learn from a request only when it would have
    /// been allowed; a would-be refusal changes no state at all (no
    /// revocation, no detection counted, no baseline change) and is only
    /// told ([`Event::Detection`] with `enforced: false`).
    Monitor,
    /// Change nothing and tell nothing; only a step-up confirmation from an
    /// app trusted to confirm applies on the response side.
    Off,
}

/// Where a decision was made, for its event and log record.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'a> {
    /// How far the route lets the verdict go.
    pub enforcement: Enforcement,
    /// The route's name.
    pub route: &'a str,
    /// The reference id of a refusal (shown to the client); `None` for an
    /// allowed request.
    pub reference: Option<Reference>,
    /// The name of the rule that decided (`None`: the route's policy).
    pub rule: Option<&'a str>,
    /// The tags rules added, comma-separated (`None`: none).
    pub tags: Option<&'a str>,
}

/// What [`Engine::apply`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// The request's state was kept and its features learnt.
    pub learnt: bool,
    /// A detection was counted against the user.
    pub detection_recorded: bool,
    /// The session was revoked.
    pub revoked: bool,
}

impl Engine {
    /// Builds an engine with an empty session store.
    pub fn new(config: EngineConfig, hash_key: SessionHashKey) -> Self {
        let binding = config.binding.enabled.then(|| {
            Binding::new(
                config.binding.clone(),
                &hash_key,
                config.score.max_sessions,
                config.score.session_idle_timeout,
            )
        });
        Self {
            binding,
            session: SessionStage::new(config.session, hash_key.clone()),
            client_ip: ArcSwap::from_pointee(ClientIpStage::new(config.client_ip)),
            device: DeviceStage::new(config.upstream_fingerprints),
            geo: None,
            scorer: Scorer::new(config.score),
            user_secret: hash_key.clone(),
            events: None,
            evaluations: AtomicU64::new(0),
        }
    }

    /// Also hashes every session credential under `previous`, the hash key
    /// being retired: a session known (or revoked) under it is carried over
    /// to its key under the current one on sight, a revocation under either
    /// key refuses, and a revocation decided here is made under both keys,
    /// so that nodes still on the old key alone honour it
    /// (docs/controller.md, "Rotating the hash key"). User keys are not
    /// affected ([`Engine::with_user_key`]).
    pub fn with_previous_hash_key(mut self, previous: SessionHashKey) -> Self {
        self.binding = self.binding.map(|b| b.with_previous(&previous));
        self.session = self.session.with_previous(previous);
        self
    }

    /// Derives user keys ([`Engine::user_key`]) and the snapshot keys from
    /// `key` instead of the session hash key: user keys name users in every
    /// store of the fleet, the controller's included, and the controller
    /// cannot re-key names it holds only hashed, so they stay on a key of
    /// their own while the session key rotates.
    pub fn with_user_key(mut self, key: SessionHashKey) -> Self {
        self.user_secret = key;
        self
    }

    /// The public ids of the keys this engine hashes with.
    pub fn hash_key_ids(&self) -> HashKeyIds {
        let (current, previous) = self.session.key_ids();
        HashKeyIds {
            current,
            previous,
            user: self.user_secret.id(),
        }
    }

    /// Files what this node holds under each session's previous key under
    /// its current key ([`Scorer::carry`]), and tells each move. Not a
    /// decision's effect: the same state under its new name, nothing
    /// learnt, so it happens on every route, whatever its mode.
    fn carry(&self, sessions: &[Session], now_secs: u64) {
        for session in sessions {
            let Some(previous) = session.previous else {
                continue;
            };
            let (user, revoked) = match self.scorer.carry(session.key, previous, now_secs) {
                Carried::Nothing => continue,
                Carried::Revocation(user) => (user, true),
                Carried::State(user) => (user, false),
            };
            self.emit(|| Event::SessionRekeyed {
                session: session.key,
                previous,
                user,
                revoked,
                at: now_secs,
            });
        }
    }

    /// Tells every state change to `sink`; see [`crate::events`].
    pub fn with_events(mut self, sink: EventSink) -> Self {
        self.events = Some(sink);
        self
    }

    /// The sink events go to, for its counters.
    pub fn events(&self) -> Option<&EventSink> {
        self.events.as_ref()
    }

    fn emit(&self, event: impl FnOnce() -> Event) {
        if let Some(sink) = &self.events {
            sink.emit(event());
        }
    }

    /// Requests evaluated ([`Engine::decide`]) since the engine was built:
    /// one per judged request, whatever its response does.
    pub fn evaluations(&self) -> u64 {
        self.evaluations.load(Ordering::Relaxed)
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

    /// Runs every stage on one request and carries out the verdict as an
    /// enforcing route does, believing the forwarding headers of
    /// [`EngineConfig::client_ip`]: [`Engine::decide`] then
    /// [`Engine::apply`] with [`Enforcement::Enforce`]. A `Revoke` verdict
    /// has already ended the session here when this returns.
    pub fn evaluate(
        &self,
        request: &RequestView<'_>,
        policy: &Policy,
    ) -> Result<Verdict, RequestError> {
        let headers = self.client_ip.load().config().headers;
        self.evaluate_with(request, policy, headers)
    }

    /// [`Engine::evaluate`], believing the forwarding headers `forwarded`
    /// instead of the configured ones.
    pub fn evaluate_with(
        &self,
        request: &RequestView<'_>,
        policy: &Policy,
        forwarded: ForwardedHeaders,
    ) -> Result<Verdict, RequestError> {
        let verdict = self.decide(request, policy, forwarded)?;
        self.apply(
            &verdict,
            &Decision {
                enforcement: Enforcement::Enforce,
                route: request.facts.route,
                reference: None,
                rule: None,
                tags: None,
            },
        );
        Ok(verdict)
    }

    /// Runs every stage on one request and decides, believing the
    /// forwarding headers `forwarded` (the proxy passes its listener's
    /// choice; headers are believed only from a peer in a trusted set).
    /// Changes nothing: what the decision implies is in
    /// [`Verdict::effects`], for [`Engine::apply`].
    pub fn decide(
        &self,
        request: &RequestView<'_>,
        policy: &Policy,
        forwarded: ForwardedHeaders,
    ) -> Result<Verdict, RequestError> {
        self.decide_with_rules(request, policy, &NoRules, forwarded)
    }

    /// [`Engine::decide`] with `rules` in front of the policy table: each
    /// credential's action is the rules' ruling over its [`Facts`], the
    /// table's action the default. A revoked session is refused (`block`)
    /// whatever the rules say.
    pub fn decide_with_rules(
        &self,
        request: &RequestView<'_>,
        policy: &Policy,
        rules: &dyn Rules,
        forwarded: ForwardedHeaders,
    ) -> Result<Verdict, RequestError> {
        self.evaluations.fetch_add(1, Ordering::Relaxed);
        let credentials = self.session.credentials(request.headers);
        self.carry(credentials.sessions(), request.now_secs);
        let client_ip = self.client_ip.load();
        let client = client_ip.resolve_with(request, forwarded);
        let device = self.device.observe(request, &client_ip.config().trusted);
        let (network, place) = self.locate(&client);
        let mark = network.mark();
        let config = self.scorer.config();
        let companion = self.companion(request.headers);
        // Every credential an app could honour is judged; the worst verdict
        // decides (docs/security.md, "Which session is judged").
        let judge = |session: Option<Session>| {
            let mut scored = self.scorer.score(
                session.map(|s| s.key),
                &device,
                &mark,
                place,
                request.now_secs,
            );
            let binding = self.check_binding(
                session,
                companion.as_ref(),
                request.facts.host,
                request.now_secs,
            );
            if let Some(contribution) = binding.and_then(|c| self.binding_contribution(&c, &config))
            {
                scored.risks.add_session(&config, contribution);
            }
            let risk = scored.risks.overall(&config);
            let default = policy.decide(&risk);
            let ruling = if risk.reasons.iter().any(|c| c.reason.is_final()) {
                Ruling::table(default)
            } else {
                rules.rule(&Facts {
                    request,
                    session: scored.observation.session_facts(),
                    credentials: credentials.sessions().len(),
                    client: &client,
                    network: &network,
                    network_change: scored.change,
                    device: &device,
                    risk: &risk,
                    level: policy.level(&risk),
                    risks: &scored.risks,
                    user: scored.user,
                    default,
                })
            };
            // Rules cannot lower a step-up asked of the user (an operator
            // or a partner spoke); one that blocks or revokes stands.
            let ruling = match crate::decide::at_least_step_up(&risk, ruling.action) {
                Action::StepUp if ruling.action == Action::Allow => Ruling {
                    action: Action::StepUp,
                    rule: None,
                    ..ruling
                },
                _ => ruling,
            };
            let action = ruling.action;
            (session, scored, risk, action, ruling, binding)
        };
        let sessions = credentials.sessions();
        let commit_of = |risk: &Risk, action: Action| {
            let revoked = risk.reasons.iter().any(|c| c.reason.is_final());
            match action {
                Action::Allow => Commit::Allowed,
                _ if policy.level(risk) == RiskLevel::High && !revoked => Commit::Detected,
                _ => Commit::Refused,
            }
        };
        let mut judged: SmallVec<[_; 1]> = if sessions.is_empty() {
            smallvec::smallvec![judge(None)]
        } else {
            sessions.iter().map(|s| judge(Some(*s))).collect()
        };
        // Nothing is learnt unless every credential would be allowed; each
        // refusal's effects apply to the credential that earned it, so a
        // decoy (even a revoked one) shields no stolen credential beside it.
        let all_allowed = judged.iter().all(|j| j.3 == Action::Allow);
        let mut commits: SmallVec<[(Observation, Commit); 1]> = SmallVec::new();
        let mut revoke: SmallVec<[SessionKey; 1]> = SmallVec::new();
        for (session, scored, risk, action, _, _) in &judged {
            if all_allowed || *action != Action::Allow {
                commits.push((scored.observation, commit_of(risk, *action)));
            }
            if let (Action::Revoke, Some(s)) = (action, session) {
                revoke.push(s.key);
                // Under the retiring key too, for nodes not yet switched.
                revoke.extend(s.previous);
            }
        }
        let worst = (0..judged.len())
            .max_by_key(|&i| (severity(judged[i].3), judged[i].2.score))
            .unwrap_or(0);
        let count = judged.len();
        let (session, scored, risk, action, ruling, binding) = judged.swap_remove(worst);
        // What could not be read never turns a session into an unjudged one:
        // a refusal of a readable credential holds; otherwise the route's
        // fail mode decides.
        if let Some(problem) = credentials.problem()
            && action == Action::Allow
        {
            return Err(RequestError::Session(problem.clone()));
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
            ruling,
            network,
            effects: Effects { commits, revoke },
            credentials: if sessions.is_empty() { 0 } else { count },
            at: request.now_secs,
            binding,
            place,
        })
    }

    /// The first credential of the request that is revoked on this node, if
    /// any: the one lookup a route that judges nothing (`off`) still makes,
    /// so that a revocation holds on every route. Not an evaluation.
    /// Input no browser sends is an error here too.
    pub fn revoked_credential(
        &self,
        request: &RequestView<'_>,
    ) -> Result<Option<Session>, RequestError> {
        let credentials = self.session.credentials(request.headers);
        if let Some(problem) = credentials.problem().filter(|p| p.fails_closed()) {
            return Err(RequestError::Session(problem.clone()));
        }
        self.carry(credentials.sessions(), request.now_secs);
        Ok(credentials
            .sessions()
            .iter()
            .find(|s| self.scorer.is_revoked(&s.key))
            .copied())
    }

    /// The keys of every session credential the request carries, in the
    /// order read (each followed by its key under the previous hash key,
    /// during a rotation); what could not be read is left out. Not an evaluation:
    /// for a request judged with more than one credential, whose verdict
    /// names only the worst, so that the proxy can file the request under
    /// each of them and a revocation of any one ends it.
    pub fn credential_keys(&self, headers: &http::HeaderMap) -> SmallVec<[SessionKey; 2]> {
        self.session
            .credentials(headers)
            .sessions()
            .iter()
            .flat_map(|s| std::iter::once(s.key).chain(s.previous))
            .collect()
    }

    /// [`Engine::decide`] for a request whose credentials could not be read
    /// (the route fails open): judged as carrying no session, so that the
    /// response side still has its client and device — a session the app
    /// opens in answer to it is baselined and bound like any other. Not
    /// counted again in [`Engine::evaluations`]: the failed decision was.
    pub fn decide_without_session(
        &self,
        request: &RequestView<'_>,
        policy: &Policy,
        forwarded: ForwardedHeaders,
    ) -> Verdict {
        let client_ip = self.client_ip.load();
        let client = client_ip.resolve_with(request, forwarded);
        let device = self.device.observe(request, &client_ip.config().trusted);
        let (network, place) = self.locate(&client);
        let risk = Risk::none();
        let action = policy.decide(&risk);
        Verdict {
            ruling: Ruling::table(action),
            session: None,
            client,
            network_change: None,
            device,
            risk,
            risks: Risks::none(),
            user: None,
            action,
            network,
            effects: Effects {
                commits: smallvec::smallvec![(Observation::Anonymous, Commit::Allowed)],
                revoke: SmallVec::new(),
            },
            credentials: 0,
            at: request.now_secs,
            binding: None,
            place,
        }
    }

    /// Carries out `verdict`'s effects as far as `decision.enforcement`
    /// allows (see [`Enforcement`]), and tells what changed. A refusal is
    /// told as an [`Event::Detection`] whether or not it was enforced.
    pub fn apply(&self, verdict: &Verdict, decision: &Decision<'_>) -> Applied {
        let now = self.now_of(verdict);
        let effects = &verdict.effects;
        let commits = match decision.enforcement {
            Enforcement::Enforce => true,
            // A monitored request changes state only as an allowed one.
            Enforcement::Monitor => verdict.action == Action::Allow,
            Enforcement::Off => return Applied::default(),
        };
        let mut applied = Applied::default();
        if commits {
            self.record_binding(verdict);
        }
        for (observation, commit) in effects.commits.iter().filter(|_| commits) {
            let first = observation.first_sighting();
            if let Some(learnt) = self.scorer.commit(*observation, *commit, now) {
                self.emit(|| Event::UserLearned(learnt));
            }
            let learnt = *commit == Commit::Allowed && observation.is_session();
            applied.learnt |= learnt;
            applied.detection_recorded |= *commit == Commit::Detected
                && observation
                    .session()
                    .is_some_and(|(_, user)| user.is_some());
            if let (true, Some((session, user))) = (learnt && first, observation.session()) {
                self.emit(|| Event::SessionSeen {
                    session,
                    user,
                    at: now,
                });
            }
        }
        if verdict.action != Action::Allow {
            self.emit(|| {
                Event::Detection(Box::new(Detection {
                    reference: decision.reference.unwrap_or(Reference(0)),
                    route: decision.route.into(),
                    rule: decision.rule.map(Into::into),
                    tags: decision.tags.map(Into::into),
                    enforced: decision.enforcement == Enforcement::Enforce,
                    at: now,
                    verdict: verdict.clone(),
                }))
            });
        }
        for &key in effects
            .revoke
            .iter()
            .filter(|_| decision.enforcement == Enforcement::Enforce)
        {
            let user = self.scorer.session(&key).and_then(|s| s.user());
            self.scorer.revoke(key, now);
            applied.revoked = true;
            self.emit(|| Event::SessionRevoked {
                session: key,
                user: user.or(verdict.user),
                cause: RevocationCause::Decision,
                at: now,
            });
        }
        applied
    }

    /// The time a verdict was made at: the request's.
    fn now_of(&self, verdict: &Verdict) -> u64 {
        verdict.at
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

    /// The key snapshots of this engine's state are authenticated with,
    /// derived from the session hash key (so a snapshot made under another
    /// key, or edited, is told apart), and the hash key's public
    /// fingerprint, written in the snapshot to say which key it was made
    /// under.
    pub fn snapshot_keys(&self) -> ([u8; 32], [u8; 16]) {
        let mac = blake3::derive_key(
            "vigil 2026-12 session snapshot mac",
            self.user_secret.as_bytes(),
        );
        let id = blake3::derive_key(
            "vigil 2026-12 session hash key fingerprint",
            self.user_secret.as_bytes(),
        );
        let mut fingerprint = [0u8; 16];
        fingerprint.copy_from_slice(&id[..16]);
        (mac, fingerprint)
    }

    /// The user key of the user named `name` (as the app or identity
    /// provider names them): a keyed hash, so that no store holds names.
    pub fn user_key(&self, name: &str) -> UserKey {
        UserKey::derive(self.user_secret.as_bytes(), name)
    }

    /// The key of the identity provider session `sid` of `issuer` under
    /// the fleet's user key ([`IdpSessionKey::for_sid`]).
    pub fn idp_session_key(&self, issuer: &str, sid: &str) -> Option<crate::IdpSessionKey> {
        crate::IdpSessionKey::derive(self.user_secret.as_bytes(), issuer, sid)
    }

    /// The user of `session` passed a step-up at the identity provider
    /// `issuer`, whose ID token named its session `sid`: told to the fleet
    /// ([`Event::IdpSessionLearned`], the `sid` hashed), so that the
    /// provider's logout of that session can end this one. Nothing is
    /// kept on the node. Returns whether it was told (a `sid` that is no
    /// `sid`, or a session bound to nobody, is not).
    pub fn learn_idp_session(
        &self,
        session: SessionKey,
        issuer: &str,
        sid: &str,
        now_secs: u64,
    ) -> bool {
        let Some(user) = self.scorer.session(&session).and_then(|s| s.user()) else {
            return false;
        };
        let Some(idp_session) = self.idp_session_key(issuer, sid) else {
            return false;
        };
        self.emit(|| Event::IdpSessionLearned {
            session,
            user,
            idp_session,
            at: now_secs,
        });
        true
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
        let user = self.user_key(name);
        if self.scorer.bind_user(session, user, now_secs) {
            self.emit(|| Event::SessionBound {
                session,
                user,
                at: now_secs,
            });
        }
    }

    /// Ends a session on this node, from outside the request path (an
    /// operator, the fleet); see [`Scorer::revoke`].
    pub fn revoke(&self, session: SessionKey, now_secs: u64) {
        let user = self.scorer.session(&session).and_then(|s| s.user());
        self.scorer.revoke(session, now_secs);
        self.emit(|| Event::SessionRevoked {
            session,
            user,
            cause: RevocationCause::Operator,
            at: now_secs,
        });
    }

    /// Ends a session on this node on a trusted word (an operator, a
    /// vouched fleet revocation): kept in the main revocation budget even
    /// for a session this node has never seen; see
    /// [`Scorer::revoke_vouched`].
    pub fn revoke_vouched(&self, session: SessionKey, now_secs: u64) {
        let user = self.scorer.session(&session).and_then(|s| s.user());
        self.scorer.revoke_vouched(session, now_secs);
        self.emit(|| Event::SessionRevoked {
            session,
            user,
            cause: RevocationCause::Operator,
            at: now_secs,
        });
    }

    /// Ends every session bound to `user` so far; see
    /// [`Scorer::revoke_user`].
    pub fn revoke_user(&self, user: UserKey, now_secs: u64) {
        let sessions = self.scorer.revoke_user(user, now_secs);
        self.emit(|| Event::UserRevoked {
            user,
            sessions,
            at: now_secs,
        });
    }

    /// Every session of `user` first seen at or before `at_secs` must pass
    /// a step-up at its next request; see [`Scorer::require_step_up`].
    pub fn require_step_up(&self, user: UserKey, at_secs: u64) {
        self.scorer.require_step_up(user, at_secs);
        self.emit(|| Event::StepUpRequired { user, at: at_secs });
    }

    /// A partner reported `user` at risk; see [`Scorer::report_user`].
    pub fn report_user(&self, user: UserKey, points: u8, ttl: std::time::Duration, now_secs: u64) {
        self.scorer.report_user(user, points, ttl, now_secs);
        self.emit(|| Event::PartnerReported {
            user,
            points: points.min(100),
            until: now_secs.saturating_add(ttl.as_secs()),
            at: now_secs,
        });
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
        let (kind, session, user) = match &feedback {
            Feedback::FalsePositive { session, .. } => (
                FeedbackKind::FalsePositive,
                Some(*session),
                self.scorer.session(session).and_then(|s| s.user()),
            ),
            Feedback::TrustDevice { user, .. } => (FeedbackKind::TrustDevice, None, Some(*user)),
            Feedback::TrustNetwork { user, .. } => (FeedbackKind::TrustNetwork, None, Some(*user)),
        };
        if let Some(learnt) = self.scorer.feedback(feedback, place, now_secs)? {
            self.emit(|| Event::UserLearned(learnt));
        }
        self.emit(|| Event::FeedbackApplied {
            kind,
            session,
            user,
            at: now_secs,
        });
        Ok(())
    }

    /// The session store, for revocations from outside the request path and
    /// for gauges.
    pub fn scorer(&self) -> &Scorer {
        &self.scorer
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod effects_tests;

#[cfg(test)]
mod rotation_tests;

#[cfg(test)]
mod binding_tests;
