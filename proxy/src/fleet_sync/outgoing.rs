//! Which of the engine's events this node tells the controller, and in
//! what form (`docs/controller.md`, Event intake).
//!
//! - Revocations this node decided (the controller's and operators' are
//!   not echoed back), each with its evidence: the reference of the
//!   enforced `revoke` detection of that session, always queued with it,
//!   just before it, in one step (the engine tells the detection first;
//!   it is held until its revocation comes, so that both go in one
//!   batch). The controller
//!   takes a node's revocation on that evidence only (`docs/controller.md`,
//!   Intake rules). A request carrying several credentials judged `revoke`
//!   has one detection, of the worst; the others are revoked on this node
//!   only.
//! - Session records when a session's baseline or binding is made: its
//!   first sighting, its issue by the app, its binding to a user, its
//!   user's passed step-up (`confirmed`) — only for sessions bound to a
//!   user, so that neither cookies minted by the thousand nor anonymous
//!   sessions an app hands out to every visitor cost the fleet anything.
//! - Sessions re-keyed during a rotation of the hash key
//!   (`docs/controller.md`, "Rotating the hash key"): a carried state of a
//!   bound session as its record under the new key, a carried revocation
//!   as a revocation under the new key, so that the fleet holds both under
//!   the key that outlives the rotation.
//! - Enforced detections of a session bound to a user, with the decision's
//!   facts (bounded as the controller takes them), at most one per session
//!   per [`DETECTION_EVERY`]: a replay loop is one detection to the fleet,
//!   and one of nobody's session is no one's risk. A detection that
//!   revokes its session is always posted, bound or not: it is the
//!   revocation's evidence.
//! - What the engine learnt of a bound user (a login, a move of network, a
//!   step-up, a false positive): the feature values, for the user's
//!   fleet-wide history and the population model (`docs/risk.md`,
//!   fleet-wide history). The engine only learns from sessions an app
//!   bound to a user, so nobody can mint these by the thousand.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use vigil_engine::events::{FeedbackKind, RevocationCause};
use vigil_engine::{Engine, Event, Reference, SessionKey};
use vigil_fleet::{
    Country, DeviceId, IdpSessionId, MAX_CHAIN_HOPS, MAX_FACT_BYTES, NodeEventKind, Record,
    RequestFacts, SessionId, UserId,
};

/// Seconds between two detections of one session told to the controller.
pub(super) const DETECTION_EVERY: u64 = 60;

/// Sessions remembered for [`DETECTION_EVERY`]; forgotten all at once when
/// full (a flood of distinct sessions gets one detection each per window
/// anyway).
const RECENT_DETECTIONS: usize = 10_000;

/// What the decision saw of the request, bounded as the controller takes
/// it (`vigil_fleet::RequestFacts::problem`). Made from the detection's
/// verdict on the fleet lane's thread: an allowed request never pays for it.
/// Facts the controller would refuse are never sent: a refused batch is
/// dropped whole (its revocations with it), and the JA4 is the client's to
/// shape. Without such a JA4, or else without facts, the detection goes.
fn request_facts(v: &vigil_engine::Verdict) -> Option<RequestFacts> {
    let mut facts = facts_of(v);
    if facts.problem().is_some() {
        facts.ja4 = None;
    }
    facts.problem().is_none().then_some(facts)
}

fn facts_of(v: &vigil_engine::Verdict) -> RequestFacts {
    let hops = v.client.chain.as_slice();
    let kept = &hops[hops.len().saturating_sub(MAX_CHAIN_HOPS)..];
    let chain = kept
        .iter()
        .map(|hop| match hop.node {
            vigil_engine::Node::Ip(ip) => Some(ip),
            _ => None,
        })
        .collect();
    RequestFacts {
        client: v.client.addr,
        peer: v.client.peer,
        chain,
        chain_truncated: v.client.flags.truncated || kept.len() < hops.len(),
        provider: v
            .client
            .provider
            .as_ref()
            .map(|p| bounded(p.as_str(), MAX_FACT_BYTES)),
        ja4: v.device.tls.ja4.map(|j| j.to_string()),
        device: DeviceId(v.device.id.0),
        browser: bounded(v.device.browser.as_str(), MAX_FACT_BYTES),
        major: v.device.major,
        platform: bounded(v.device.platform.as_str(), MAX_FACT_BYTES),
        country: v
            .network
            .country
            .map(|c| c.map(|b| b.to_ascii_uppercase()))
            .and_then(|c| Country::parse(std::str::from_utf8(&c).ok()?)),
        asn: v.network.asn.filter(|&a| a != 0),
    }
}

/// How long a detection not told is remembered with the one that stands
/// for it: longer than an "it was me" link and its step-up can last.
const REPRESENTED_FOR: std::time::Duration = std::time::Duration::from_secs(3_600);

/// The detection told for a session's window.
#[derive(Debug, Clone, Copy)]
struct Told {
    at: u64,
    reference: Reference,
    /// The device it was decided on.
    device: vigil_engine::DeviceId,
    /// Whether it is a block a user may dispute ("it was me").
    disputable: bool,
}

/// Turns engine events into node events.
pub(super) struct Outgoing {
    engine: OnceLock<Weak<Engine>>,
    /// Per session, the detection last told.
    detected: Mutex<HashMap<SessionKey, Told>>,
    /// Disputable blocks not told (one detection a session per
    /// [`DETECTION_EVERY`]), each with the told block that stands for it —
    /// only one of the same session on the same device that may be
    /// disputed too: a user who disputes one of them ("it was me") is
    /// taken to dispute that one, which the controller holds; never a
    /// thief's detection on another device, nor a rule's block. Bounded
    /// in count and time, least recently used first: a session blocked
    /// in a loop pushes out only the oldest.
    represented: moka::sync::Cache<Reference, Reference>,
    /// Per session revoked by a detection just told, that detection (the
    /// evidence, with its reference), held until its revocation event
    /// takes it.
    evidence: Mutex<HashMap<SessionKey, NodeEventKind>>,
}

impl Default for Outgoing {
    fn default() -> Self {
        Self {
            engine: OnceLock::new(),
            detected: Mutex::default(),
            represented: moka::sync::Cache::builder()
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .max_capacity(100_000)
                .time_to_live(REPRESENTED_FOR)
                .build(),
            evidence: Mutex::default(),
        }
    }
}

impl Outgoing {
    /// Reads session records from `engine` (set once, after the engine is
    /// built: its events start flowing only then).
    pub(super) fn attach(&self, engine: &Arc<Engine>) {
        let _ = self.engine.set(Arc::downgrade(engine));
    }

    /// The node events for `event` that the controller wants, in order.
    pub(super) fn node_events(&self, event: &Event) -> Vec<NodeEventKind> {
        if let Event::SessionRevoked {
            session,
            user,
            cause: RevocationCause::Decision,
            at,
        } = event
        {
            // Without its evidence (another credential of the request
            // the detection names, or the detection lost on the way) the
            // controller would refuse it: not posted.
            let Some(evidence) = self.evidence_of(session) else {
                return Vec::new();
            };
            let NodeEventKind::Detection { reference, .. } = &evidence else {
                return Vec::new();
            };
            let revocation = NodeEventKind::SessionRevoked {
                session: SessionId(*session.as_bytes()),
                user: user.map(|u| UserId(u.as_u64())),
                reference: Some(reference.clone()),
                at: *at,
            };
            return vec![evidence, revocation];
        }
        self.node_event(event).into_iter().collect()
    }

    /// The node event for `event`, if the controller wants it (a decided
    /// revocation: [`Outgoing::node_events`]).
    fn node_event(&self, event: &Event) -> Option<NodeEventKind> {
        match event {
            Event::SessionSeen {
                session,
                user: Some(_),
                ..
            }
            | Event::SessionIssued {
                session,
                user: Some(_),
                ..
            }
            | Event::SessionBound { session, .. } => self.record(session, false, false, None),
            Event::Confirmed {
                session,
                user: Some(_),
                disputed,
                ..
            } => {
                let disputed = disputed.map(|r| self.representative(r).to_string());
                self.record(session, true, false, disputed)
            }
            // An operator vouched for a refused request (a false
            // positive): its device and network are the session's
            // baseline now, confirmed as a step-up's is, so that every
            // node takes it in place of the one it holds and the user's
            // next request from that device is allowed wherever it lands.
            Event::FeedbackApplied {
                kind: FeedbackKind::FalsePositive,
                session: Some(session),
                user: Some(_),
                ..
            } => self.record(session, true, true, None),
            Event::SessionRekeyed {
                session,
                user: Some(_),
                revoked: false,
                ..
            } => self.record(session, false, false, None),
            Event::SessionRekeyed {
                session,
                user,
                revoked: true,
                at,
                ..
            } => Some(NodeEventKind::SessionRevoked {
                session: SessionId(*session.as_bytes()),
                user: user.map(|u| UserId(u.as_u64())),
                reference: None,
                at: *at,
            }),
            Event::Detection(d) if d.enforced => {
                let session = d.verdict.session.as_ref()?.key;
                let revokes = d.verdict.action == vigil_engine::Action::Revoke
                    && d.verdict.effects.revokes().contains(&session);
                let first = self.first_detection(session, d);
                if !revokes && (!first || d.verdict.user.is_none()) {
                    return None;
                }
                let detection = NodeEventKind::Detection {
                    reference: d.reference.to_string(),
                    session: Some(SessionId(*session.as_bytes())),
                    user: d.verdict.user.map(|u| UserId(u.as_u64())),
                    route: bounded(&d.route, 128),
                    rule: d.rule.as_deref().map(|r| bounded(r, 128)),
                    action: bounded(&d.verdict.action.to_string(), 32),
                    enforced: true,
                    score: d.verdict.risk.score,
                    reasons: d
                        .verdict
                        .risk
                        .reasons
                        .iter()
                        .take(32)
                        .map(|c| (c.reason.code().to_owned(), c.points))
                        .collect(),
                    at: d.at,
                    facts: request_facts(&d.verdict).map(Box::new),
                };
                if revokes {
                    // Told with its revocation, next; during a hash key
                    // rotation the engine also revokes the session under
                    // the retiring key, whose twin names this detection.
                    if let Some(previous) = d.verdict.session.as_ref().and_then(|s| s.previous) {
                        self.keep_evidence(previous, detection.clone());
                    }
                    self.keep_evidence(session, detection);
                    return None;
                }
                Some(detection)
            }
            Event::IdpSessionLearned {
                session,
                user,
                idp_session,
                at,
            } => Some(NodeEventKind::IdpSession {
                session: SessionId(*session.as_bytes()),
                user: UserId(user.as_u64()),
                idp_session: IdpSessionId(idp_session.0),
                at: *at,
            }),
            Event::UserLearned(learnt) => Some(NodeEventKind::UserLearned {
                user: UserId(learnt.user.as_u64()),
                values: learnt.values,
                which: learnt.which,
                new_session: learnt.new_session,
                trusted: learnt.trust,
                at: learnt.at,
            }),
            _ => None,
        }
    }

    /// The session's record as the engine holds it now (it may have moved
    /// on since the event: what is sent is never older than the event).
    fn record(
        &self,
        session: &SessionKey,
        confirmed: bool,
        false_positive: bool,
        disputed: Option<String>,
    ) -> Option<NodeEventKind> {
        let engine = self.engine.get()?.upgrade()?;
        let record = engine.scorer().export(session)?;
        Some(NodeEventKind::SessionBaseline {
            record: Record(record.to_vec()),
            confirmed,
            false_positive,
            disputed,
        })
    }

    /// Keeps `detection` as the evidence of `session`'s revocation, told
    /// next (the engine tells a revocation right after its detection).
    fn keep_evidence(&self, session: SessionKey, detection: NodeEventKind) {
        let mut evidence = self.evidence.lock().unwrap_or_else(PoisonError::into_inner);
        if evidence.len() >= RECENT_DETECTIONS {
            evidence.clear();
        }
        evidence.insert(session, detection);
    }

    /// The evidence kept of `session`'s revocation, taken.
    fn evidence_of(&self, session: &SessionKey) -> Option<NodeEventKind> {
        self.evidence
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(session)
    }

    /// Whether detection `d` of `session` is the first of its window; a
    /// disputable block that is not is remembered as represented by the
    /// one that was, when that one is a disputable block of the same
    /// device.
    fn first_detection(&self, session: SessionKey, d: &vigil_engine::events::Detection) -> bool {
        let this = Told {
            at: d.at,
            reference: d.reference,
            device: d.verdict.device.id,
            disputable: d.verdict.action == vigil_engine::Action::Block
                && crate::stepup::disputable(&d.verdict),
        };
        let mut detected = self.detected.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(&told) = detected.get(&session)
            && this.at < told.at.saturating_add(DETECTION_EVERY)
        {
            drop(detected);
            if this.disputable && told.disputable && told.device == this.device {
                self.represented.insert(this.reference, told.reference);
            }
            return false;
        }
        if detected.len() >= RECENT_DETECTIONS {
            detected.clear();
        }
        detected.insert(session, this);
        true
    }

    /// The told detection that stands for `reference` (itself when it was
    /// told, or when no told one may stand for it).
    fn representative(&self, reference: Reference) -> Reference {
        self.represented.get(&reference).unwrap_or(reference)
    }
}

/// `s` cut to at most `max` bytes at a character boundary: a name longer
/// than the controller takes would have the whole batch refused.
fn bounded(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing").finish_non_exhaustive()
    }
}
