//! The evaluator: feeds a corpus to a real [`Engine`], request by request in
//! time order, and reports per scenario class how often replays were caught
//! and legitimate sessions disturbed.
//!
//! Set-up, as a deployment would have it:
//!
//! - the IP plan becomes one GeoLite2-layout `.mmdb` (country, city,
//!   location, accuracy radius, ASN, organisation) in a temporary
//!   directory, opened as the geo database (the same file answers the ASN
//!   facts);
//! - the `zscaler-egress` networks are the trusted proxy set `zscaler`, and
//!   `X-Forwarded-For` is believed from it;
//! - everything else is `EngineConfig::default()`, and the route policy is
//!   low → allow, medium → step-up, high → block.
//!
//! Per request: when the event says `bind`, the session is bound to its
//! user first (the app named the user at login). When the *owner* gets a
//! step-up they pass it: [`Engine::confirm`] is called with the same request.
//! The attacker cannot pass a step-up and simply goes on. Traces are open
//! loop: a blocked owner also goes on, as a user would after logging in
//! again, so one false block does not hide later ones.
//!
//! The rotating binding (docs/bound-sessions.md) is modelled with cookie
//! jars: unless [`Options::binding`] is off, the engine runs with
//! `[binding] enabled = true` (defaults otherwise), each client of a
//! session (owner, attacker) keeps its own jar, sends the companion it
//! holds beside the app cookie, and stores the companion the engine's
//! response side ([`Engine::binding_cookies`], as the proxy calls it) sets
//! on its response. The thief's jar is a copy of the owner's as it stood
//! at the moment of theft ([`Event::steal`]). A client marked
//! [`Event::lose_rotation`] does not store the next companion it is set
//! (its response was lost) and goes on with the one it held.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use http::header::{ACCEPT_LANGUAGE, COOKIE, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use vigil_engine::{
    Action, ClientIpConfig, Decision, Enforcement, Engine, EngineConfig, ForwardedHeaders, Ja4,
    Policy, RequestView, ResponseView, SessionHashKey, TlsFingerprint, TrustedProxies, Verdict,
};
use vigil_geoip::testdb::{Layout, TestDb, TestRecord};
use vigil_geoip::{GeoIp, GeoPaths};

use crate::scenario::{
    Actor, Corpus, CorpusError, EVENTS_FILE, Event, EventReader, Label, NetworkKind, NetworkPlan,
    Scenario, read_networks,
};

/// The share of legitimate sessions that may be flagged high: 0.1%.
pub const LEGIT_HIGH_TARGET: f64 = 0.001;

/// Name of the trusted proxy set the egress networks form.
pub const PROXY_SET: &str = "zscaler";

/// How to evaluate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Session ids listed per class for misses and false positives, so that
    /// a trace can be looked up. Default 3.
    pub examples: usize,
    /// Run the engine with the rotating binding on and model the clients'
    /// cookie jars. Default true: the binding is what answers the perfect
    /// clones; set false for the passive signals alone.
    pub binding: bool,
}

/// Why a corpus could not be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Reading the corpus failed.
    #[error(transparent)]
    Corpus(#[from] CorpusError),
    /// The IP plan could not be turned into a database or proxy set.
    #[error("networks.json: {0}")]
    Plan(String),
    /// An event cannot be turned into a request.
    #[error("event {index} (session {session}): {what}")]
    Event {
        /// 0-based position in the corpus.
        index: usize,
        /// Its session.
        session: String,
        /// What is wrong.
        what: String,
    },
}

/// The evaluator's state: the engine and what each session saw.
#[derive(Debug)]
pub struct Evaluator {
    engine: Engine,
    policy: Policy,
    sessions: HashMap<String, SessionTally>,
    events: u64,
    engine_errors: u64,
    options: Options,
    /// Each client's companion cookie (`name=value`), when it holds one: the owner's and
    /// the thief's jar per session (the app cookie is the session id).
    jars: HashMap<(String, Actor), Option<String>>,
    /// Clients whose next response that sets a companion is lost
    /// ([`Event::lose_rotation`]).
    losing: HashSet<(String, Actor)>,
    /// Companions set on a response that never reached its client.
    lost_responses: u64,
    /// Sessions with at least one such lost response.
    lost_sessions: BTreeSet<String>,
    /// Keeps the database file alive as long as the engine.
    _dir: tempfile::TempDir,
}

/// What one session saw.
#[derive(Debug, Clone)]
struct SessionTally {
    scenario: Scenario,
    bound: bool,
    owner: Tally,
    attacker: Tally,
    /// Reason codes seen on the attacker's requests.
    attacker_reasons: BTreeSet<&'static str>,
    /// Reason codes on the owner's blocked requests.
    blocked_reasons: BTreeSet<&'static str>,
    /// Reason codes on the owner's step-ups.
    step_up_reasons: BTreeSet<&'static str>,
    /// Risks (login, session, entity) at medium or above on the owner's
    /// blocked requests.
    blocked_by: BTreeSet<&'static str>,
    /// Time of the owner's latest request so far.
    last_owner: Option<u64>,
    /// Seconds from the owner's latest request to the attacker's first.
    replay_gap: Option<u64>,
    /// Attacker requests allowed before the session was caught (the
    /// attacker refused, or the owner refused for a `binding_*` reason
    /// after the replay began); `None` while not caught.
    caught_after: Option<u64>,
    /// The catch was on the owner's request (the thief came first).
    caught_on_owner: bool,
    /// A `binding_*` reason was seen on any request of the session.
    binding_reason: bool,
}

/// Actions one actor of a session got.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    requests: u64,
    allowed: u64,
    step_ups: u64,
    blocked: u64,
    /// 1-based index of the first request that was not allowed.
    first_detection: Option<u64>,
}

/// The report: one row per class, the targets and whether they were met.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Whether the rotating binding was on ([`Options::binding`]).
    pub binding: bool,
    /// Requests evaluated.
    pub events: u64,
    /// Sessions seen.
    pub sessions: u64,
    /// Requests the engine could not evaluate (counted as allowed).
    pub engine_errors: u64,
    /// Companion cookies set on a response its client lost
    /// ([`Event::lose_rotation`]): the client went on with what it held.
    pub lost_responses: u64,
    /// Sessions with at least one lost response.
    pub lost_response_sessions: u64,
    /// Per class, in [`Scenario::ALL`] order.
    pub classes: Vec<ClassReport>,
    /// All legitimate sessions together.
    pub legit: LegitTotal,
    /// Each target and its outcome.
    pub targets: Vec<TargetOutcome>,
}

/// One class's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ClassReport {
    /// The class.
    pub class: Scenario,
    /// Its label.
    pub label: Label,
    /// Sessions.
    pub sessions: u64,
    /// Requests, owner's and attacker's.
    pub requests: u64,
    /// The owner's requests.
    pub owner_requests: u64,
    /// Sessions with an owner request blocked (for legit classes: the false
    /// positives).
    pub owner_blocked_sessions: u64,
    /// Sessions with an owner step-up.
    pub owner_stepped_up_sessions: u64,
    /// Owner step-ups in all.
    pub owner_step_ups: u64,
    /// Legit classes only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legit: Option<LegitFigures>,
    /// Attack classes only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attack: Option<AttackFigures>,
}

/// Friction and false positives of a legit class.
#[derive(Debug, Clone, Serialize)]
pub struct LegitFigures {
    /// Share of sessions with a request blocked (flagged high).
    pub false_positive_rate: f64,
    /// Share of sessions stepped up at least once.
    pub step_up_rate: f64,
    /// Step-ups per session.
    pub mean_step_ups: f64,
    /// Reason codes on blocked requests: sessions per code.
    pub false_positive_reasons: BTreeMap<String, u64>,
    /// Which risk was medium or high on blocked requests: sessions per
    /// `login`, `session`, `entity`.
    pub false_positive_risks: BTreeMap<String, u64>,
    /// Reason codes on step-ups: sessions per code.
    pub step_up_reasons: BTreeMap<String, u64>,
    /// Some blocked sessions' ids.
    pub false_positive_examples: Vec<String>,
}

/// Detection figures of an attack class.
#[derive(Debug, Clone, Serialize)]
pub struct AttackFigures {
    /// The attacker's requests.
    pub attacker_requests: u64,
    /// Sessions whose attacker got at least one action other than allow.
    pub detected: u64,
    /// `detected / sessions`.
    pub detection_rate: f64,
    /// Sessions whose attacker got a block.
    pub detected_high: u64,
    /// `detected_high / sessions`.
    pub detection_high_rate: f64,
    /// Attacker requests up to and including the first one not allowed,
    /// over detected sessions.
    pub requests_until_detection: Option<Summary>,
    /// Attacker requests allowed, over all sessions.
    pub attacker_requests_allowed: u64,
    /// The target detection rate; `None` for the perfect clones.
    pub target: Option<f64>,
    /// Reason codes seen on the attacker's requests of undetected
    /// sessions: sessions per code; `(none)` when there was none.
    pub miss_reasons: BTreeMap<String, u64>,
    /// Some undetected sessions' ids.
    pub miss_examples: Vec<String>,
    /// Detection by the time from the owner's latest request to the
    /// replay's first: `<1h`, `1h-24h`, `>=24h`, each `[detected,
    /// sessions]`. Shows what a session store that forgets idle sessions
    /// misses.
    pub by_replay_gap: BTreeMap<String, [u64; 2]>,
    /// Sessions caught: the attacker got an action other than allow, or,
    /// after the replay began, the owner was refused for a `binding_*`
    /// reason (the thief came first and rotated the binding; with a route
    /// whose `high` is `revoke`, that refusal ends the session for both).
    pub caught: u64,
    /// `caught / sessions`.
    pub caught_rate: f64,
    /// Of `caught`, those caught on the owner's request only.
    pub caught_on_owner: u64,
    /// Attacker requests allowed before the catch, over caught sessions.
    pub allowed_before_caught: Option<Summary>,
    /// Sessions with a `binding_*` reason on any request.
    pub binding_sessions: u64,
}

/// Mean, median and 95th percentile.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// Mean.
    pub mean: f64,
    /// Median (nearest rank).
    pub median: u64,
    /// 95th percentile (nearest rank).
    pub p95: u64,
}

/// All legitimate sessions together.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LegitTotal {
    /// Sessions.
    pub sessions: u64,
    /// Sessions with a request blocked.
    pub flagged_high: u64,
    /// `flagged_high / sessions`.
    pub false_positive_rate: f64,
    /// Sessions stepped up.
    pub stepped_up: u64,
    /// `stepped_up / sessions`.
    pub step_up_rate: f64,
}

/// One target and how it went.
#[derive(Debug, Clone, Serialize)]
pub struct TargetOutcome {
    /// What is measured.
    pub name: String,
    /// `>=` or `<=`.
    pub comparison: &'static str,
    /// The target.
    pub target: f64,
    /// The measured value; `None` when the corpus had no such session.
    pub actual: Option<f64>,
    /// Whether it was met.
    pub met: bool,
}

// === impl Options ===

impl Default for Options {
    fn default() -> Self {
        Self {
            examples: 3,
            binding: true,
        }
    }
}

/// Evaluates a corpus held in memory.
pub fn evaluate_corpus(corpus: &Corpus, options: &Options) -> Result<Report, EvalError> {
    let mut evaluator = Evaluator::new(&corpus.networks, options.clone())?;
    for event in &corpus.events {
        evaluator.feed(event)?;
    }
    Ok(evaluator.finish())
}

/// Evaluates a corpus directory, streaming its events.
pub fn evaluate_dir(dir: &Path, options: &Options) -> Result<Report, EvalError> {
    let plan = read_networks(dir)?;
    let mut evaluator = Evaluator::new(&plan, options.clone())?;
    for event in EventReader::open(&dir.join(EVENTS_FILE))? {
        evaluator.feed(&event?)?;
    }
    Ok(evaluator.finish())
}

// === impl Evaluator ===

impl Evaluator {
    /// An engine set up for the world of `plan`.
    pub fn new(plan: &NetworkPlan, options: Options) -> Result<Self, EvalError> {
        let dir = tempfile::tempdir()
            .map_err(|e| EvalError::Plan(format!("cannot create a temporary directory: {e}")))?;
        let path = dir.path().join("world.mmdb");
        geo_database(plan)
            .write(&path)
            .map_err(|e| EvalError::Plan(e.to_string()))?;
        let geo = GeoIp::open(&GeoPaths::new().with_geo(&path))
            .map_err(|e| EvalError::Plan(e.to_string()))?;
        let mut config = engine_config(plan)?;
        config.binding.enabled = options.binding;
        let engine =
            Engine::new(config, SessionHashKey::from_bytes([0x5e; 32])).with_geo(Arc::new(geo));
        Ok(Self {
            engine,
            policy: policy(),
            sessions: HashMap::new(),
            events: 0,
            engine_errors: 0,
            options,
            jars: HashMap::new(),
            losing: HashSet::new(),
            lost_responses: 0,
            lost_sessions: BTreeSet::new(),
            _dir: dir,
        })
    }

    /// Evaluates one request. Events must come in time order.
    pub fn feed(&mut self, event: &Event) -> Result<(), EvalError> {
        let index = self.events;
        self.events += 1;
        let bad = |what: String| EvalError::Event {
            index: usize::try_from(index).unwrap_or(usize::MAX),
            session: event.session.clone(),
            what,
        };
        let jar_key = (event.session.clone(), event.actor);
        if event.actor == Actor::Attacker && !self.jars.contains_key(&jar_key) {
            // No theft marked before: the jar as it stands now.
            let owner = self
                .jars
                .get(&(event.session.clone(), Actor::Owner))
                .cloned()
                .flatten();
            self.jars.insert(jar_key.clone(), owner);
        }
        if event.lose_rotation {
            self.losing.insert(jar_key.clone());
        }
        let ja4: Ja4 = event
            .ja4
            .parse()
            .map_err(|e| bad(format!("ja4 {:?}: {e}", event.ja4)))?;
        let first_bind = event.bind && !self.sessions.get(&event.session).is_some_and(|t| t.bound);
        if first_bind {
            let headers = headers(event, None).map_err(&bad)?;
            let view = RequestView {
                peer: event.peer,
                headers: &headers,
                now_secs: event.t,
                tls: TlsFingerprint::captured(ja4),
                facts: Default::default(),
            };
            if let Some(value) = self.login(&view, event).map_err(&bad)? {
                self.store(&jar_key, value);
            }
        }
        // The request after the login carries what the login response set.
        let companion = self.jars.get(&jar_key).cloned().flatten();
        let headers = headers(event, companion.as_deref()).map_err(&bad)?;
        let view = RequestView {
            peer: event.peer,
            headers: &headers,
            now_secs: event.t,
            tls: TlsFingerprint::captured(ja4),
            facts: Default::default(),
        };
        self.sessions
            .entry(event.session.clone())
            .or_insert_with(|| SessionTally::new(event.scenario))
            .bound |= first_bind;
        let verdict = match self.engine.evaluate(&view, &self.policy) {
            Ok(v) => v,
            Err(_) => {
                self.engine_errors += 1;
                return Ok(());
            }
        };
        // The response: the companion the engine sets goes into the jar of
        // the client that made the request (the proxy adds it to the app's
        // response; here the app sets no cookie of its own).
        if let Some(value) = self.companion_set(&verdict, &HeaderMap::new(), event.t) {
            self.store(&jar_key, value);
        }
        if event.steal && event.actor == Actor::Owner {
            let jar = self.jars.get(&jar_key).cloned().flatten();
            self.jars
                .insert((event.session.clone(), Actor::Attacker), jar);
        }
        let Some(tally) = self.sessions.get_mut(&event.session) else {
            return Ok(());
        };
        let codes = || verdict.risk.reasons.iter().map(|c| c.reason.code());
        let binding_reason = codes().any(|c| c.starts_with("binding_"));
        tally.binding_reason |= binding_reason;
        let action = verdict.action;
        let replaying = tally.attacker.requests > 0 || event.actor == Actor::Attacker;
        if tally.caught_after.is_none() && replaying && action != Action::Allow {
            match event.actor {
                Actor::Attacker => tally.caught_after = Some(tally.attacker.allowed),
                Actor::Owner if binding_reason => {
                    tally.caught_after = Some(tally.attacker.allowed);
                    tally.caught_on_owner = true;
                }
                Actor::Owner => {}
            }
        }
        match event.actor {
            Actor::Owner => {
                tally.last_owner = Some(event.t);
                tally.owner.count(action);
                match action {
                    Action::StepUp => {
                        tally.step_up_reasons.extend(codes());
                        // The owner passes the step-up.
                        self.engine.confirm(&verdict);
                    }
                    Action::Allow => {}
                    // Block, revoke, and any refusal added later.
                    _ => {
                        tally.blocked_reasons.extend(codes());
                        let risks = &verdict.risks;
                        let raised =
                            |r: &vigil_engine::Risk| r.level > vigil_engine::RiskLevel::Low;
                        if risks.login.as_ref().is_some_and(raised) {
                            tally.blocked_by.insert("login");
                        }
                        if raised(&risks.session) {
                            tally.blocked_by.insert("session");
                        }
                        if raised(&risks.entity) {
                            tally.blocked_by.insert("entity");
                        }
                    }
                }
            }
            Actor::Attacker => {
                if tally.attacker.requests == 0 {
                    tally.replay_gap = tally.last_owner.map(|t| event.t.saturating_sub(t));
                }
                tally.attacker.count(action);
                tally.attacker_reasons.extend(codes());
            }
        }
        Ok(())
    }

    /// The report.
    pub fn finish(self) -> Report {
        let examples = self.options.examples;
        let mut by_class: BTreeMap<Scenario, Vec<(&String, &SessionTally)>> = BTreeMap::new();
        for (id, tally) in &self.sessions {
            by_class
                .entry(tally.scenario)
                .or_default()
                .push((id, tally));
        }
        for list in by_class.values_mut() {
            // Deterministic example ids whatever the hash map's order.
            list.sort_by(|a, b| a.0.cmp(b.0));
        }
        let mut classes = Vec::new();
        let mut legit = LegitTotal {
            sessions: 0,
            flagged_high: 0,
            false_positive_rate: 0.0,
            stepped_up: 0,
            step_up_rate: 0.0,
        };
        let mut targets = Vec::new();
        for class in Scenario::ALL {
            let list = by_class.get(&class).map(Vec::as_slice).unwrap_or(&[]);
            let report = ClassReport::of(class, list, examples);
            if class.label() == Label::Legit {
                legit.sessions += report.sessions;
                legit.flagged_high += report.owner_blocked_sessions;
                legit.stepped_up += report.owner_stepped_up_sessions;
            }
            if let (Some(a), Some(target)) = (&report.attack, class.detection_target()) {
                let actual = (report.sessions > 0).then_some(a.detection_rate);
                targets.push(TargetOutcome {
                    name: format!("{class} detected"),
                    comparison: ">=",
                    target,
                    actual,
                    met: actual.is_some_and(|v| v >= target),
                });
            } else if let Some(target) = class.detection_target() {
                targets.push(TargetOutcome {
                    name: format!("{class} detected"),
                    comparison: ">=",
                    target,
                    actual: None,
                    met: false,
                });
            }
            if report.sessions > 0 {
                classes.push(report);
            }
        }
        legit.false_positive_rate = ratio(legit.flagged_high, legit.sessions);
        legit.step_up_rate = ratio(legit.stepped_up, legit.sessions);
        let actual = (legit.sessions > 0).then_some(legit.false_positive_rate);
        targets.push(TargetOutcome {
            name: "legit sessions flagged high".to_owned(),
            comparison: "<=",
            target: LEGIT_HIGH_TARGET,
            actual,
            met: actual.is_some_and(|v| v <= LEGIT_HIGH_TARGET),
        });
        Report {
            binding: self.options.binding,
            events: self.events,
            sessions: self.sessions.len() as u64,
            engine_errors: self.engine_errors,
            lost_responses: self.lost_responses,
            lost_response_sessions: self.lost_sessions.len() as u64,
            classes,
            legit,
            targets,
        }
    }
}

/// The route policy of the evaluation: low → allow, medium → step-up, high
/// → block.
pub fn policy() -> Policy {
    Policy {
        low: Action::Allow,
        medium: Action::StepUp,
        high: Action::Block,
        ..Policy::default()
    }
}

/// `EngineConfig::default()` with the plan's egress networks trusted as
/// [`PROXY_SET`] and `X-Forwarded-For` believed from them.
pub fn engine_config(plan: &NetworkPlan) -> Result<EngineConfig, EvalError> {
    let mut cidrs = Vec::new();
    for n in &plan.networks {
        if n.kind == NetworkKind::ZscalerEgress {
            let net: ipnet::IpNet = n.cidr.parse().map_err(|e| {
                EvalError::Plan(format!("network {}: cidr {:?}: {e}", n.name, n.cidr))
            })?;
            cidrs.push(net);
        }
    }
    let trusted = if cidrs.is_empty() {
        TrustedProxies::default()
    } else {
        TrustedProxies::new(vec![(PROXY_SET.to_owned(), cidrs)]).map_err(|errors| {
            EvalError::Plan(
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?
    };
    Ok(EngineConfig {
        client_ip: ClientIpConfig {
            headers: ForwardedHeaders::X_FORWARDED_FOR,
            trusted,
            ..ClientIpConfig::default()
        },
        ..EngineConfig::default()
    })
}

/// The plan as a GeoLite2-layout database.
pub fn geo_database(plan: &NetworkPlan) -> TestDb {
    let mut db = TestDb::new(Layout::GeoLite2);
    for n in &plan.networks {
        let mut record = TestRecord::new()
            .country(&n.country)
            .location(n.lat, n.lon)
            .accuracy_km(n.accuracy_km)
            .asn(n.asn)
            .org(&n.org);
        if let Some(city) = &n.city {
            record = record.city(city);
        }
        db.push(&n.cidr, record);
    }
    db
}

/// The header the corpus's app names its user in.
const USER_HEADER: HeaderName = HeaderName::from_static("vigil-user");

impl Evaluator {
    /// The session's login, as the proxy sees it: the same client's request
    /// without the cookie, whose response sets it and names the user. It
    /// goes through the engine's response side, the same code the proxy
    /// runs, so the session is baselined at issuance and bound.
    ///
    /// Returns the companion cookie the login response sets, when the
    /// binding is on.
    fn login(&self, request: &RequestView<'_>, event: &Event) -> Result<Option<String>, String> {
        let mut headers = request.headers.clone();
        headers.remove(COOKIE);
        let view = RequestView {
            headers: &headers,
            ..*request
        };
        let verdict = self
            .engine
            .decide(&view, &self.policy, ForwardedHeaders::X_FORWARDED_FOR)
            .map_err(|e| e.to_string())?;
        self.engine.apply(
            &verdict,
            &Decision {
                enforcement: Enforcement::Enforce,
                route: "",
                reference: None,
                rule: None,
                tags: None,
            },
        );
        let mut response = HeaderMap::new();
        let cookie = format!("session={}; Path=/; HttpOnly", event.session);
        response.insert(
            http::header::SET_COOKIE,
            HeaderValue::from_str(&cookie).map_err(|_| "session id is not a cookie value")?,
        );
        response.insert(
            USER_HEADER,
            HeaderValue::from_str(&event.user).map_err(|_| "user is not a header value")?,
        );
        let done = self.engine.respond(
            &verdict,
            &ResponseView {
                headers: &response,
                now_secs: event.t,
                user_header: Some(&USER_HEADER),
                confirm_header: None,
                app_confirms: false,
            },
            Enforcement::Enforce,
        );
        if done.bad_user {
            return Err(format!("user {:?} is not a usable name", event.user));
        }
        if done.issued + usize::from(done.bound) == 0 {
            return Err(format!(
                "session {:?} was neither opened nor bound by its login",
                event.session
            ));
        }
        Ok(self.companion_set(&verdict, &response, event.t))
    }

    /// Puts the companion a response set into its client's jar, unless
    /// that client is losing its next such response.
    fn store(&mut self, jar: &(String, Actor), value: String) {
        if self.losing.remove(jar) {
            self.lost_responses += 1;
            self.lost_sessions.insert(jar.0.clone());
            return;
        }
        self.jars.insert(jar.clone(), Some(value));
    }

    /// The companion cookie (`name=value`) the engine sets on the response to
    /// `verdict`'s request (`response`: the app's response headers), as
    /// the proxy asks for it on an enforcing route; `None` when it sets
    /// none.
    fn companion_set(&self, verdict: &Verdict, response: &HeaderMap, now: u64) -> Option<String> {
        if !self.options.binding {
            return None;
        }
        let cookies = self.engine.binding_cookies(
            verdict,
            &ResponseView {
                headers: response,
                now_secs: now,
                user_header: None,
                confirm_header: None,
                app_confirms: false,
            },
            Enforcement::Enforce,
        );
        // Kept as `name=value`: a host-wide companion is named
        // `__Host-<cookie_name>`, one of another scope `<cookie_name>`; a
        // cookie that deletes a superseded bare-named one is not kept.
        let name = &EngineConfig::default().binding.cookie_name;
        cookies.iter().find_map(|c| {
            let (pair, attributes) = c.split_once(';').unwrap_or((c, ""));
            let (n, v) = pair.split_once('=')?;
            let n = n.trim();
            let ours =
                n == name || n.strip_prefix(vigil_engine::binding::HOST_PREFIX) == Some(name);
            let deletes = attributes
                .split(';')
                .any(|a| a.trim().eq_ignore_ascii_case("max-age=0"));
            (ours && !deletes).then(|| format!("{n}={}", v.trim()))
        })
    }
}

/// The request headers an event describes, with the companion cookie
/// `companion` the client holds beside the app cookie.
fn headers(event: &Event, companion: Option<&str>) -> Result<HeaderMap, String> {
    let mut h = HeaderMap::new();
    let value = |name: &str, v: &str| {
        HeaderValue::from_str(v).map_err(|_| format!("{name} {v:?} is not a valid header value"))
    };
    let cookie = match companion {
        Some(pair) => format!("session={}; {pair}", event.session),
        None => format!("session={}", event.session),
    };
    h.insert(COOKIE, value("session", &cookie)?);
    h.insert(USER_AGENT, value("ua", &event.ua)?);
    if let Some(v) = &event.accept_language {
        h.insert(ACCEPT_LANGUAGE, value("accept_language", v)?);
    }
    let optional = [
        ("sec-ch-ua-platform", &event.ch_platform),
        ("sec-ch-ua-mobile", &event.ch_mobile),
        ("sec-ch-ua", &event.ch_ua),
        ("x-forwarded-for", &event.xff),
    ];
    for (name, v) in optional {
        if let Some(v) = v {
            h.insert(HeaderName::from_static(name), value(name, v)?);
        }
    }
    if event.fetch_metadata {
        h.insert(
            HeaderName::from_static("sec-fetch-site"),
            HeaderValue::from_static("same-origin"),
        );
    }
    Ok(h)
}

fn ratio(n: u64, d: u64) -> f64 {
    if d == 0 { 0.0 } else { n as f64 / d as f64 }
}

// === impl SessionTally, Tally ===

impl SessionTally {
    fn new(scenario: Scenario) -> Self {
        Self {
            scenario,
            bound: false,
            owner: Tally::default(),
            attacker: Tally::default(),
            attacker_reasons: BTreeSet::new(),
            blocked_reasons: BTreeSet::new(),
            step_up_reasons: BTreeSet::new(),
            blocked_by: BTreeSet::new(),
            last_owner: None,
            replay_gap: None,
            caught_after: None,
            caught_on_owner: false,
            binding_reason: false,
        }
    }
}

impl Tally {
    fn count(&mut self, action: Action) {
        self.requests += 1;
        match action {
            Action::Allow => self.allowed += 1,
            Action::StepUp => self.step_ups += 1,
            _ => self.blocked += 1,
        }
        if action != Action::Allow && self.first_detection.is_none() {
            self.first_detection = Some(self.requests);
        }
    }
}

// === impl ClassReport ===

impl ClassReport {
    fn of(class: Scenario, list: &[(&String, &SessionTally)], examples: usize) -> Self {
        let sessions = list.len() as u64;
        let sum = |f: &dyn Fn(&SessionTally) -> u64| list.iter().map(|(_, s)| f(s)).sum::<u64>();
        let owner_requests = sum(&|s| s.owner.requests);
        let attacker_requests = sum(&|s| s.attacker.requests);
        let owner_blocked_sessions = sum(&|s| u64::from(s.owner.blocked > 0));
        let owner_stepped_up_sessions = sum(&|s| u64::from(s.owner.step_ups > 0));
        let owner_step_ups = sum(&|s| s.owner.step_ups);
        let count_codes = |pick: &dyn Fn(&SessionTally) -> Option<&BTreeSet<&'static str>>| {
            let mut out: BTreeMap<String, u64> = BTreeMap::new();
            for (_, s) in list {
                if let Some(codes) = pick(s) {
                    if codes.is_empty() {
                        *out.entry("(none)".to_owned()).or_default() += 1;
                    }
                    for c in codes {
                        *out.entry((*c).to_owned()).or_default() += 1;
                    }
                }
            }
            out
        };
        let ids = |pred: &dyn Fn(&SessionTally) -> bool| {
            list.iter()
                .filter(|(_, s)| pred(s))
                .take(examples)
                .map(|(id, _)| (*id).clone())
                .collect::<Vec<_>>()
        };
        let legit = (class.label() == Label::Legit).then(|| LegitFigures {
            false_positive_rate: ratio(owner_blocked_sessions, sessions),
            step_up_rate: ratio(owner_stepped_up_sessions, sessions),
            mean_step_ups: ratio(owner_step_ups, sessions),
            false_positive_reasons: count_codes(&|s| {
                (s.owner.blocked > 0).then_some(&s.blocked_reasons)
            }),
            false_positive_risks: count_codes(&|s| (s.owner.blocked > 0).then_some(&s.blocked_by)),
            step_up_reasons: count_codes(&|s| (s.owner.step_ups > 0).then_some(&s.step_up_reasons)),
            false_positive_examples: ids(&|s| s.owner.blocked > 0),
        });
        let attack = match class.label() {
            Label::Attack => {
                let target = class.detection_target();
                let detected = sum(&|s| u64::from(s.attacker.first_detection.is_some()));
                let detected_high = sum(&|s| u64::from(s.attacker.blocked > 0));
                let mut until: Vec<u64> = list
                    .iter()
                    .filter_map(|(_, s)| s.attacker.first_detection)
                    .collect();
                until.sort_unstable();
                let caught = sum(&|s| u64::from(s.caught_after.is_some()));
                let mut before: Vec<u64> =
                    list.iter().filter_map(|(_, s)| s.caught_after).collect();
                before.sort_unstable();
                Some(AttackFigures {
                    attacker_requests,
                    detected,
                    detection_rate: ratio(detected, sessions),
                    detected_high,
                    detection_high_rate: ratio(detected_high, sessions),
                    requests_until_detection: summary(&until),
                    attacker_requests_allowed: sum(&|s| s.attacker.allowed),
                    target,
                    miss_reasons: count_codes(&|s| {
                        s.attacker
                            .first_detection
                            .is_none()
                            .then_some(&s.attacker_reasons)
                    }),
                    miss_examples: ids(&|s| s.attacker.first_detection.is_none()),
                    by_replay_gap: by_gap(list),
                    caught,
                    caught_rate: ratio(caught, sessions),
                    caught_on_owner: sum(&|s| {
                        u64::from(s.caught_on_owner && s.attacker.first_detection.is_none())
                    }),
                    allowed_before_caught: summary(&before),
                    binding_sessions: sum(&|s| u64::from(s.binding_reason)),
                })
            }
            Label::Legit => None,
        };
        Self {
            class,
            label: class.label(),
            sessions,
            requests: owner_requests + attacker_requests,
            owner_requests,
            owner_blocked_sessions,
            owner_stepped_up_sessions,
            owner_step_ups,
            legit,
            attack,
        }
    }
}

/// Detected and all sessions per replay-gap bucket.
fn by_gap(list: &[(&String, &SessionTally)]) -> BTreeMap<String, [u64; 2]> {
    let mut out: BTreeMap<String, [u64; 2]> = BTreeMap::new();
    for (_, s) in list {
        let Some(gap) = s.replay_gap else { continue };
        let bucket = match gap {
            g if g < 3_600 => "<1h",
            g if g < 86_400 => "1h-24h",
            _ => ">=24h",
        };
        let e = out.entry(bucket.to_owned()).or_default();
        e[0] += u64::from(s.attacker.first_detection.is_some());
        e[1] += 1;
    }
    out
}

/// Mean, median and p95 of sorted values; `None` when empty.
fn summary(sorted: &[u64]) -> Option<Summary> {
    if sorted.is_empty() {
        return None;
    }
    let rank = |percent: usize| {
        // Nearest rank: ceil(p/100 * n), at least 1.
        let i = (percent * sorted.len())
            .div_ceil(100)
            .clamp(1, sorted.len());
        sorted[i - 1]
    };
    Some(Summary {
        mean: sorted.iter().sum::<u64>() as f64 / sorted.len() as f64,
        median: rank(50),
        p95: rank(95),
    })
}

// === impl Report ===

impl Report {
    /// Whether every target was met.
    pub fn passed(&self) -> bool {
        self.targets.iter().all(|t| t.met)
    }

    /// The targets that were missed.
    pub fn misses(&self) -> impl Iterator<Item = &TargetOutcome> {
        self.targets.iter().filter(|t| !t.met)
    }

    /// The report as text tables: attack classes, legit classes, targets,
    /// then the reasons behind misses, false positives and step-ups.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let pct = |v: f64| format!("{:.2}%", v * 100.0);
        let _ = writeln!(
            out,
            "{} requests in {} sessions; {} engine errors\n",
            self.events, self.sessions, self.engine_errors
        );
        let _ = writeln!(out, "binding {}", if self.binding { "on" } else { "off" });
        let _ = writeln!(
            out,
            "companions lost with their response (rotation_lost): {} in {} sessions\n",
            self.lost_responses, self.lost_response_sessions
        );
        let _ = writeln!(
            out,
            "{:<38} {:>8} {:>9} {:>9} {:>9} {:>18} {:>9} {:>9} {:>9} {:>16}",
            "attack class",
            "sessions",
            "attacker",
            "detected",
            "at high",
            "until mean/med/p95",
            "allowed",
            "owner blk",
            "caught",
            "allowed before"
        );
        for c in &self.classes {
            let Some(a) = &c.attack else { continue };
            let until = a.requests_until_detection.map_or_else(
                || "-".to_owned(),
                |s| format!("{:.2}/{}/{}", s.mean, s.median, s.p95),
            );
            let before = a.allowed_before_caught.map_or_else(
                || "-".to_owned(),
                |s| format!("{:.2}/{}/{}", s.mean, s.median, s.p95),
            );
            let _ = writeln!(
                out,
                "{:<38} {:>8} {:>9} {:>9} {:>9} {:>18} {:>9} {:>9} {:>9} {:>16}",
                c.class.as_str(),
                c.sessions,
                a.attacker_requests,
                pct(a.detection_rate),
                pct(a.detection_high_rate),
                until,
                a.attacker_requests_allowed,
                c.owner_blocked_sessions,
                pct(a.caught_rate),
                before
            );
        }
        let _ = writeln!(
            out,
            "\n{:<38} {:>8} {:>9} {:>12} {:>11} {:>13}",
            "legit class", "sessions", "requests", "flagged high", "stepped up", "step-ups/sess"
        );
        for c in &self.classes {
            let Some(l) = &c.legit else { continue };
            let _ = writeln!(
                out,
                "{:<38} {:>8} {:>9} {:>12} {:>11} {:>13.3}",
                c.class.as_str(),
                c.sessions,
                c.requests,
                format!(
                    "{} ({})",
                    c.owner_blocked_sessions,
                    pct(l.false_positive_rate)
                ),
                pct(l.step_up_rate),
                l.mean_step_ups
            );
        }
        let _ = writeln!(
            out,
            "{:<38} {:>8} {:>9} {:>12} {:>11}",
            "all legit",
            self.legit.sessions,
            "",
            format!(
                "{} ({})",
                self.legit.flagged_high,
                pct(self.legit.false_positive_rate)
            ),
            pct(self.legit.step_up_rate)
        );
        let _ = writeln!(out, "\ntargets:");
        for t in &self.targets {
            let actual = t.actual.map_or_else(|| "no sessions".to_owned(), pct);
            let _ = writeln!(
                out,
                "  {:<4} {:<50} {} {:<8} actual {}",
                if t.met { "ok" } else { "MISS" },
                t.name,
                t.comparison,
                pct(t.target),
                actual
            );
        }
        let reasons = |m: &BTreeMap<String, u64>| {
            let mut v: Vec<_> = m.iter().collect();
            v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            v.iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let header = |out: &mut String, title: &str, printed: &mut bool| {
            if !*printed {
                let _ = writeln!(out, "\n{title}");
                *printed = true;
            }
        };
        let _ = writeln!(
            out,
            "\ndetection by time from the owner's latest request to the replay (detected/sessions)"
        );
        for c in &self.classes {
            let Some(a) = &c.attack else { continue };
            let cell = |k: &str| {
                a.by_replay_gap.get(k).map_or_else(
                    || "-".to_owned(),
                    |[d, n]| format!("{d}/{n} ({})", pct(ratio(*d, *n))),
                )
            };
            let _ = writeln!(
                out,
                "  {:<38} <1h {:<20} 1h-24h {:<20} >=24h {}",
                c.class.as_str(),
                cell("<1h"),
                cell("1h-24h"),
                cell(">=24h")
            );
        }
        let mut printed = false;
        for c in &self.classes {
            if let Some(a) = &c.attack
                && a.detected < c.sessions
            {
                header(
                    &mut out,
                    "missed replays (attacker never challenged): reason codes seen, sessions per code",
                    &mut printed,
                );
                let _ = writeln!(
                    out,
                    "  {}: {} missed; {}; e.g. {}",
                    c.class,
                    c.sessions - a.detected,
                    reasons(&a.miss_reasons),
                    a.miss_examples.join(" ")
                );
            }
        }
        let mut printed = false;
        for c in &self.classes {
            if let Some(l) = &c.legit
                && c.owner_blocked_sessions > 0
            {
                header(
                    &mut out,
                    "false positives (legit session blocked): reason codes, sessions per code [risks]",
                    &mut printed,
                );
                let _ = writeln!(
                    out,
                    "  {}: {}; [{}]; e.g. {}",
                    c.class,
                    reasons(&l.false_positive_reasons),
                    reasons(&l.false_positive_risks),
                    l.false_positive_examples.join(" ")
                );
            }
        }
        let mut printed = false;
        for c in &self.classes {
            if let Some(l) = &c.legit
                && c.owner_stepped_up_sessions > 0
            {
                header(
                    &mut out,
                    "step-ups of legit sessions: reason codes, sessions per code",
                    &mut printed,
                );
                let _ = writeln!(out, "  {}: {}", c.class, reasons(&l.step_up_reasons));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Network;

    fn plan() -> NetworkPlan {
        let net = |name: &str, cidr: &str, country: &str, asn: u32, kind| Network {
            name: name.into(),
            cidr: cidr.into(),
            country: country.into(),
            city: None,
            lat: 51.5,
            lon: -0.12,
            accuracy_km: 20,
            asn,
            org: format!("org {asn}"),
            kind,
        };
        NetworkPlan {
            networks: vec![
                net("home", "81.2.0.0/16", "GB", 2856, NetworkKind::Residential),
                net(
                    "zs",
                    "165.225.8.0/23",
                    "GB",
                    62044,
                    NetworkKind::ZscalerEgress,
                ),
            ],
        }
    }

    #[test]
    fn one_file_serves_geo_and_asn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.mmdb");
        geo_database(&plan()).write(&path).unwrap();
        let geo = GeoIp::open(&GeoPaths::new().with_geo(&path)).unwrap();
        let facts = geo.lookup("81.2.69.7".parse().unwrap());
        assert_eq!(facts.asn, Some(2856));
        assert_eq!(
            facts.country.map(|c| c.as_str().to_owned()).as_deref(),
            Some("GB")
        );
        assert_eq!(facts.location.map(|l| l.accuracy_km), Some(20));
    }

    #[test]
    fn the_proxy_set_is_trusted_and_its_forwarded_client_believed() {
        let config = engine_config(&plan()).unwrap();
        let engine = Engine::new(config, SessionHashKey::from_bytes([1; 32]));
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "81.2.69.7".parse().unwrap());
        let view = RequestView {
            peer: "165.225.8.9".parse().unwrap(),
            headers: &h,
            now_secs: 1,
            tls: TlsFingerprint::NONE,
            facts: Default::default(),
        };
        let client = engine.resolve_client(&view, ForwardedHeaders::X_FORWARDED_FOR);
        assert_eq!(client.addr.to_string(), "81.2.69.7");
        assert_eq!(
            client.provider.map(|p| p.as_str().to_owned()).as_deref(),
            Some(PROXY_SET)
        );
        // From an untrusted peer the header is not believed.
        let view = RequestView {
            peer: "81.2.1.1".parse().unwrap(),
            ..view
        };
        assert_eq!(
            engine
                .resolve_client(&view, ForwardedHeaders::X_FORWARDED_FOR)
                .addr
                .to_string(),
            "81.2.1.1"
        );
    }

    #[test]
    fn summaries_use_nearest_rank() {
        assert_eq!(summary(&[]), None);
        let s = summary(&[1, 1, 1, 2, 9]).unwrap();
        assert_eq!((s.median, s.p95), (1, 9));
        assert!((s.mean - 2.8).abs() < 1e-9);
    }

    #[test]
    fn tallies_record_the_first_detection() {
        let mut t = Tally::default();
        for a in [Action::Allow, Action::Allow, Action::StepUp, Action::Block] {
            t.count(a);
        }
        assert_eq!(t.first_detection, Some(3));
        assert_eq!((t.allowed, t.step_ups, t.blocked), (2, 1, 1));
    }
}
