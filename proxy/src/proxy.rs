//! The Pingora side of the request path: translate a request into the
//! engine's view, run the engine, carry out its verdict. Deciding lives in
//! `vigil-engine`; this file only translates (STYLE.md 3).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use pingora_core::modules::http::HttpModules;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{ProxyHttp, Session};
use vigil_engine::{
    Action, ClientIp, CredentialSource, Decision, Enforcement, Engine, ForwardedHeaders,
    NetworkFacts, RequestFacts, RequestView, ResponseView, TlsFingerprint, Verdict,
};

use crate::config::{FailMode, Listener, Misdirected, Mode, OnStale, Route, StepUpVia};
use crate::conn_limits::H2Connections;
use crate::dbsc::{self, Dbsc, RouteDbsc};
use crate::events::reasons_list;
use crate::fleet_sync::FleetState;
use crate::forwarding;
use crate::generation::{Current, Generation};
use crate::hello::ConnectionFingerprints;
use crate::metrics::Metrics;
use crate::open_requests::{self, Open, OpenRequests};
use crate::operator::{Decisions, Refused};
use crate::respond::{self, Refusal};
use crate::stepup::{self, Outcome, StepUps};
use crate::tls::Presented;

/// The proxy application. Each listener gets a clone; clones share the
/// config generation in force, engine and metrics.
#[derive(Clone)]
pub struct VigilProxy {
    /// Loaded once per request, into its [`RequestCtx`].
    current: Current,
    engine: Arc<Engine>,
    metrics: Metrics,
    /// Which forwarding headers this listener believes.
    forwarded: ForwardedHeaders,
    /// Whether this listener terminates TLS (the scheme told to the app).
    tls: bool,
    /// Whether a TLS request for a host its connection's certificate does
    /// not cover is refused (421).
    misdirected: Misdirected,
    /// Whether this cleartext listener refuses sessions baselined over TLS.
    tls_required: bool,
    /// The listener's `keepalive_idle_seconds`: longest wait for the next
    /// request on a kept HTTP/1 connection.
    keepalive_idle: u64,
    /// This listener's name, a fact of every request it takes.
    listener: Arc<str>,
    /// TLS fingerprints of live connections; `None` when capture is off.
    fingerprints: Option<ConnectionFingerprints>,
    /// Recent refusals, for false-positive feedback.
    decisions: Decisions,
    /// Live HTTP/2 connections, told how each stream ended (rapid reset).
    h2: H2Connections,
    /// Step-ups at the identity provider: pending, counted, and the
    /// provider's metadata; kept across reloads.
    step_ups: Arc<StepUps>,
    /// The controller client's state, when there is one: how old this
    /// node's fleet state is, for routes with `stale_after`.
    fleet: Option<Arc<FleetState>>,
    /// Requests in flight by session, which revocations end.
    open: Option<OpenRequests>,
    /// DBSC bindings and the endpoints' limits; kept across reloads.
    dbsc: Arc<Dbsc>,
}

/// Per-request state.
#[derive(Debug)]
pub struct RequestCtx {
    /// The config generation in force when the request started: its route,
    /// policy and upstream stay those of this generation whatever reloads
    /// happen meanwhile.
    generation: Arc<Generation>,
    route: Option<usize>,
    /// Risk headers for the app, when the request was evaluated and allowed.
    risk: Option<RiskHeaders>,
    /// Connection attempts so far, for bounded retries.
    attempts: usize,
    /// The client as derived, for the forwarding headers sent to the app,
    /// when the request has no verdict to carry it (routes not judged).
    client: Option<ClientIp>,
    /// The request's verdict: the response side is judged against it, so
    /// that a request is evaluated once. Boxed: Pingora moves the context
    /// inside its request futures (boxed, and so copied, on every
    /// request), and inline the verdict made three quarters of its 2 KB
    /// (docs/performance.md, "The request context").
    verdict: Option<Box<Verdict>>,
    /// The request's place among the requests in flight, when it carries
    /// a session on an enforcing route; taken (and so taken out) in
    /// `logging`, before its connection can be closed or reused.
    open: Option<Open>,
}

/// Header values built once the verdict is known; the common case (low risk,
/// no reasons) allocates nothing.
#[derive(Debug)]
struct RiskHeaders {
    level: HeaderValue,
    score: HeaderValue,
    reasons: HeaderValue,
    /// Tags added by `tag` rules, comma-separated; `None` when there are none.
    tags: Option<HeaderValue>,
}

// === impl VigilProxy ===

impl VigilProxy {
    /// Builds the application.
    pub fn new(
        current: Current,
        engine: Arc<Engine>,
        metrics: Metrics,
        fingerprints: Option<ConnectionFingerprints>,
        decisions: Decisions,
    ) -> Self {
        Self {
            current,
            engine,
            metrics,
            forwarded: ForwardedHeaders::default(),
            tls: false,
            misdirected: Misdirected::Refuse,
            tls_required: false,
            keepalive_idle: crate::config::ListenerLimits::default().keepalive_idle_seconds,
            listener: Arc::from(""),
            fingerprints,
            decisions,
            h2: H2Connections::default(),
            step_ups: Arc::new(StepUps::new()),
            fleet: None,
            open: None,
            dbsc: Arc::new(Dbsc::default()),
        }
    }

    /// Files every request with a session on an enforcing route in `open`,
    /// so that a revocation ends it while it is in flight
    /// ([`crate::open_requests`]); revocations this proxy decides end them
    /// there too.
    pub fn with_open_requests(mut self, open: OpenRequests) -> Self {
        self.open = Some(open);
        self
    }

    /// Uses `dbsc` (keyed by the fleet's session hash key, fed by the
    /// sync stream) rather than a store of this process alone.
    pub fn with_dbsc(mut self, dbsc: Arc<Dbsc>) -> Self {
        self.dbsc = dbsc;
        self
    }

    /// Judges routes with `stale_after` by the age of `fleet`, the
    /// controller client's state.
    pub fn with_fleet_state(mut self, fleet: Option<Arc<FleetState>>) -> Self {
        self.fleet = fleet;
        self
    }

    /// Reports the end of every HTTP/2 stream to `h2`, where the listeners'
    /// connection limits count client resets.
    pub fn with_h2_connections(mut self, h2: H2Connections) -> Self {
        self.h2 = h2;
        self
    }

    /// The application as one listener runs it: with that listener's
    /// choice of forwarding headers and scheme.
    pub fn for_listener(&self, listener: &Listener) -> Self {
        let mut app = self.clone();
        app.forwarded = listener.forwarded;
        app.tls = !listener.certificates.is_empty();
        app.misdirected = listener.misdirected;
        app.tls_required = listener.tls_required_for_tls_sessions;
        app.keepalive_idle = listener.limits.keepalive_idle_seconds;
        app.listener = Arc::from(listener.name.as_str());
        app
    }

    /// The TLS fingerprint of the connection `session` arrived on: the one
    /// captured from its ClientHello, found by the socket cookie (the same
    /// for every HTTP/2 stream of a connection). On a TLS listener a
    /// connection without one (more live connections than the store holds)
    /// has no evidence, counted: never evidence of another device, or a
    /// flood could get other users refused. See [`crate::hello`].
    fn connection_fingerprint(&self, session: &Session) -> TlsFingerprint {
        let Some(store) = self.fingerprints.as_ref().filter(|_| self.tls) else {
            return TlsFingerprint::NONE;
        };
        let found = crate::conn_limits::socket_cookie(session).and_then(|cookie| store.get(cookie));
        found.unwrap_or_else(|| {
            self.metrics.tls_fingerprint_missing.inc();
            TlsFingerprint::NONE
        })
    }

    /// Whether `session` asks a TLS listener that refuses misdirected
    /// requests for a host its connection's certificate does not cover:
    /// then the host, and so the route and its mode, would be the client's
    /// choice rather than the TLS name's. A TLS connection whose
    /// certificate is not known is refused too.
    fn misdirected(&self, session: &Session, host: &str) -> bool {
        if !self.tls || self.misdirected == Misdirected::Allow {
            return false;
        }
        let presented = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .and_then(|t| t.extension.get::<Presented>().map(|p| p.covers(host)));
        !presented.unwrap_or(false)
    }

    /// Counts what was unusual about a forwarding chain.
    fn count_chain(&self, client: &ClientIp) {
        let f = client.flags;
        for (set, outcome) in [
            (f.malformed, "malformed"),
            (f.truncated, "truncated"),
            (f.headers_ignored, "ignored"),
            (f.inconsistent, "inconsistent"),
            (f.opaque_hop, "opaque_hop"),
            (f.all_trusted, "all_trusted"),
        ] {
            if set {
                self.metrics
                    .chain_anomalies
                    .with_label_values(&[outcome])
                    .inc();
            }
        }
    }

    /// The engine's view of the request `session` is handling, now, on
    /// `route`, whose path normalises to `path` (what the route was chosen
    /// by, so rules see the same path).
    fn request_view<'a>(
        &'a self,
        session: &'a Session,
        route: &'a Route,
        path: &'a str,
    ) -> RequestView<'a> {
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
        let req = session.req_header();
        RequestView {
            peer,
            headers: &req.headers,
            now_secs: now_secs(),
            tls: self.connection_fingerprint(session),
            facts: RequestFacts {
                method: req.method.as_str(),
                scheme: if self.tls { "https" } else { "http" },
                host: request_host(req),
                path,
                listener: &self.listener,
                route: &route.name,
            },
        }
    }

    /// Keeps a refusal's session and facts under its reference, for
    /// feedback.
    fn remember(&self, reference: &str, verdict: &Verdict) {
        if let Some(s) = verdict.session {
            self.decisions.record(
                reference,
                Refused {
                    session: s.key,
                    device: verdict.device.summary(),
                    network: NetworkFacts::from(&verdict.client),
                },
            );
        }
    }

    /// Files an allowed request among the requests in flight, under each
    /// session it carries (a verdict names only the worst of several, and
    /// a thief could add a made-up one), with the user it is bound to and,
    /// on HTTP/1, its client socket. Returns true when one of its sessions
    /// was revoked since its verdict: a revocation that looked for it
    /// before it was filed would miss it, so it is refused instead. That
    /// second look is two cache lookups; the filing, one insert.
    fn file_open(&self, session: &Session, verdict: &Verdict, ctx: &mut RequestCtx) -> Filing {
        let (Some(open), Some(s)) = (&self.open, verdict.session) else {
            return Filing::Filed;
        };
        let keys = if verdict.credentials > 1 {
            self.engine.credential_keys(&session.req_header().headers)
        } else {
            // During a rotation of the hash key, under the retiring key
            // too: a node still on it alone revokes under it.
            let mut keys = smallvec::smallvec![s.key];
            keys.extend(s.previous);
            keys
        };
        ctx.open = open.open(&keys, verdict.user, open_requests::socket_of(session));
        if ctx.open.is_none() {
            // Served unfiled, it would be out of a revocation's reach.
            return Filing::Full;
        }
        let scorer = self.engine.scorer();
        if keys.iter().any(|k| scorer.is_revoked(k)) {
            Filing::Revoked
        } else {
            Filing::Filed
        }
    }

    /// Whether a revocation ended this request while it was in flight: its
    /// phases then carry nothing more (see [`crate::open_requests`]).
    fn ended(ctx: &RequestCtx) -> Result<()> {
        if ctx.open.as_ref().is_some_and(Open::ended) {
            // 401 when nothing of the response was sent (the session's
            // next request is answered the same); the stream cut otherwise.
            let mut e = Error::explain(
                ErrorType::HTTPStatus(401),
                "the session was revoked while the request was open",
            );
            e.esource = ErrorSource::Downstream;
            return Err(e);
        }
        Ok(())
    }

    /// Refuses a revoked session on a route that does not judge requests:
    /// a revocation holds on every route.
    async fn refuse_revoked(&self, session: &mut Session, route: &Route) -> Result<bool> {
        self.metrics
            .request_errors
            .with_label_values(&["session_revoked", "refused"])
            .inc();
        let reference = respond::new_reference().to_string();
        respond::send(
            session,
            Refusal::SessionEnded {
                reference: &reference,
                login_url: route.login_url.as_deref(),
            },
        )
        .await?;
        Ok(true)
    }

    /// Whether `route` refuses the request because this node's fleet
    /// state is older than its `stale_after` (`503 fleet_stale`): when
    /// the route fails closed and enforces; otherwise it goes on judging
    /// with what the node has, counted. One atomic load when the state is
    /// fresh; nothing the client sends bears on it.
    fn refuses_stale(&self, route: &Route) -> bool {
        let (Some(stale), Some(fleet)) = (route.stale, self.fleet.as_deref()) else {
            return false;
        };
        if !fleet.stale(stale.after, crate::proxy::now_secs()) {
            return false;
        }
        let refuse = stale.on_stale == OnStale::FailClosed && route.mode == Mode::Enforce;
        self.metrics
            .fleet
            .stale_requests
            .with_label_values(&[
                route.name.as_str(),
                if refuse { "refused" } else { "judged" },
            ])
            .inc();
        if refuse {
            self.metrics
                .request_errors
                .with_label_values(&["fleet_stale", "refused"])
                .inc();
            tracing::debug!(route = %route.name, "request refused: the fleet state is stale");
        }
        refuse
    }

    /// Refuses input no browser sends, on a route that judges nothing.
    async fn refuse_malformed(
        &self,
        session: &mut Session,
        route: &Route,
        e: &vigil_engine::RequestError,
    ) -> Result<bool> {
        self.metrics
            .request_errors
            .with_label_values(&[e.code(), "refused"])
            .inc();
        tracing::debug!(route = %route.name, error = %e, "request refused unjudged");
        respond::send(session, Refusal::Malformed { code: e.code() }).await?;
        Ok(true)
    }

    /// The identity provider's answer at `route`'s callback path: never
    /// forwarded. The callback is judged like any request of the route
    /// (nothing applied: it is Vigil's own page), and its verdict is what
    /// a passed step-up confirms.
    async fn step_up_callback(
        &self,
        session: &mut Session,
        route: &Route,
        oidc: &Arc<crate::config::Oidc>,
        rules: &vigil_rules::RuleSet,
        path: &str,
    ) -> Result<bool> {
        let view = self.request_view(session, route, path);
        let decided = self
            .engine
            .decide_with_rules(&view, &route.policy, rules, self.forwarded);
        if let Some(token) = stepup::dispute_token(session.req_header().uri.query()) {
            return self
                .dispute(session, route, oidc, path, &token, decided)
                .await;
        }
        let mut cookies = Vec::new();
        let outcome = match decided {
            // Only an enforcing route sends users to step up; a route
            // switched to monitor or off since confirms nothing. A session
            // born over TLS is not confirmed on a cleartext listener that
            // refuses it.
            Ok(verdict)
                if route.mode != Mode::Enforce
                    || (self.tls_required
                        && verdict.risk.has(vigil_engine::Reason::TlsEvidenceLost)) =>
            {
                Outcome::Refuse(stepup::Problem::Refused)
            }
            Ok(verdict) => {
                let req = session.req_header();
                let returned = stepup::Returned {
                    route: &route.name,
                    query: req.uri.query(),
                    browser: stepup::browser_mark(&req.headers),
                    now: verdict.at,
                };
                let outcome = self
                    .step_ups
                    .callback(oidc, &self.engine, returned, &verdict)
                    .await;
                // Passed: the session was confirmed; the binding may
                // rotate on it (`[binding] rotate_on_step_up`).
                if matches!(outcome, Outcome::Redirect(_)) {
                    let empty = http::HeaderMap::new();
                    cookies = self
                        .engine
                        .binding_cookies_confirmed(
                            &verdict,
                            &ResponseView {
                                headers: &empty,
                                now_secs: now_secs(),
                                user_header: None,
                                confirm_header: None,
                                app_confirms: false,
                            },
                            Enforcement::Enforce,
                            303,
                            true,
                        )
                        .into_vec();
                }
                outcome
            }
            Err(_) => Outcome::Refuse(stepup::Problem::NoSession),
        };
        StepUps::count(&self.metrics, "callback", &outcome);
        let reference = respond::new_reference().to_string();
        let refusal = match &outcome {
            Outcome::Redirect(url) => Refusal::StepUpPassed {
                reference: &reference,
                url,
                cookies: &cookies,
            },
            Outcome::Refuse(problem) => Refusal::StepUpRefused {
                problem: *problem,
                login_url: route.login_url.as_deref(),
            },
        };
        respond::send(session, refusal).await?;
        Ok(true)
    }

    /// An "it was me" link followed (`docs/step-up.md`): the block it
    /// names is disputed by a step-up at the provider, which the callback
    /// then answers as any. The link's request is judged like the
    /// callback (nothing applied), and must be of the session the link
    /// was made for.
    async fn dispute(
        &self,
        session: &mut Session,
        route: &Route,
        oidc: &Arc<crate::config::Oidc>,
        callback_path: &str,
        token: &str,
        decided: std::result::Result<Verdict, vigil_engine::RequestError>,
    ) -> Result<bool> {
        let offered = matches!(
            route.step_up,
            Some(StepUpVia::Oidc {
                it_was_me: true,
                ..
            })
        );
        let outcome = match decided {
            Ok(_) if !offered => Outcome::Refuse(stepup::Problem::LinkInvalid),
            Ok(verdict)
                if route.mode != Mode::Enforce
                    || (self.tls_required
                        && verdict.risk.has(vigil_engine::Reason::TlsEvidenceLost)) =>
            {
                Outcome::Refuse(stepup::Problem::Refused)
            }
            Ok(verdict) => {
                let start = stepup::Start {
                    route: &route.name,
                    scheme: if self.tls { "https" } else { "http" },
                    authority: request_authority(session.req_header()),
                    callback_path,
                    // The page to return to is the link's own.
                    target: "/",
                    acr_values: None,
                    max_age: None,
                    now: verdict.at,
                };
                let browser = stepup::browser_mark(&session.req_header().headers);
                self.step_ups
                    .dispute(oidc, &verdict, &start, token, browser)
                    .await
            }
            Err(_) => Outcome::Refuse(stepup::Problem::NoSession),
        };
        StepUps::count(&self.metrics, "dispute", &outcome);
        let reference = respond::new_reference().to_string();
        if matches!(outcome, Outcome::Redirect(_)) {
            tracing::info!(target: stepup::LOG_TARGET, reference, route = %route.name, "it was me: sent to step up");
        }
        respond::send(session, sent_to_step_up(&outcome, &reference, route)).await?;
        Ok(true)
    }

    /// Answers a request to Vigil's own DBSC endpoints
    /// ([`crate::dbsc`]): never forwarded.
    async fn dbsc_endpoint(&self, session: &mut Session, generation: &Generation) -> Result<bool> {
        let settings = &generation.config.dbsc;
        let req = session.req_header();
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
        let path = req.uri.path();
        let view = RequestView {
            peer,
            headers: &req.headers,
            now_secs: now_secs(),
            tls: TlsFingerprint::NONE,
            facts: RequestFacts {
                method: req.method.as_str(),
                scheme: if self.tls { "https" } else { "http" },
                host: request_host(req),
                path,
                listener: &self.listener,
                route: "",
            },
        };
        let client = self.engine.resolve_client(&view, self.forwarded).addr;
        let sessions = self.engine.credential_keys(&req.headers);
        // Cut off from the controller: no binding the other nodes would
        // not learn, if the operator said so.
        let cut_off = settings.when_cut_off == dbsc::CutOff::RefuseRegistration
            && self.fleet.is_some()
            && self.metrics.fleet.connected.get() == 0
            && Dbsc::is_registration(settings, path);
        let reply = if cut_off {
            Dbsc::cut_off()
        } else {
            self.dbsc.endpoint(
                settings,
                &dbsc::Ask {
                    method: req.method.as_str(),
                    path,
                    headers: &req.headers,
                    host: request_host(req),
                    client,
                    sessions: &sessions,
                    now: now_secs(),
                },
            )
        };
        let step = if path.ends_with("/refresh") {
            "refresh"
        } else {
            "register"
        };
        self.metrics
            .dbsc
            .with_label_values(&[step, reply.outcome])
            .inc();
        tracing::debug!(
            step,
            outcome = reply.outcome,
            status = reply.status,
            "dbsc endpoint"
        );
        dbsc::write(session, reply).await?;
        Ok(true)
    }

    /// Whether a request of a device-bound session lacks its proof and
    /// is refused: on an enforcing route only; a monitoring one counts it.
    async fn dbsc_refuses(
        &self,
        session: &mut Session,
        route: &Route,
        settings: &dbsc::Settings,
        verdict: &Verdict,
        path: &str,
    ) -> Result<bool> {
        let Some(s) = verdict.session.filter(|_| route.dbsc != RouteDbsc::Off) else {
            return Ok(false);
        };
        // Every credential the request carries, not only the one whose
        // verdict was worst: a thief must not be able to add a fresh,
        // unbound session next to the bound one he copied.
        let headers = &session.req_header().headers;
        let keys = if verdict.credentials > 1 {
            self.engine.credential_keys(headers)
        } else {
            smallvec::smallvec![s.key]
        };
        let mut check = dbsc::Check::Pass("proven");
        for key in &keys {
            check = self
                .dbsc
                .check(settings, route.dbsc, key, headers, path, verdict.at);
            if !matches!(check, dbsc::Check::Pass(_)) {
                break;
            }
        }
        let (why, challenge) = match check {
            dbsc::Check::Refuse { why, challenge } => (why, challenge),
            dbsc::Check::Pass(how) => {
                self.metrics.dbsc.with_label_values(&["check", how]).inc();
                return Ok(false);
            }
            // An outage, not a verdict on the request: 503, never 403
            // (the browser keeps its DBSC session and retries); a
            // `monitor` route never refuses.
            dbsc::Check::Unavailable => {
                self.metrics
                    .dbsc
                    .with_label_values(&["check", "store_unavailable"])
                    .inc();
                if route.mode != Mode::Enforce {
                    return Ok(false);
                }
                respond::send(session, Refusal::DbscUnavailable).await?;
                return Ok(true);
            }
        };
        let enforced = route.mode == Mode::Enforce;
        self.metrics
            .request_errors
            .with_label_values(&[
                "dbsc_proof_failed",
                if enforced { "refused" } else { "monitored" },
            ])
            .inc();
        self.metrics.dbsc.with_label_values(&["check", why]).inc();
        tracing::debug!(route = %route.name, session = %s.key.short(), path, why, enforced, "dbsc_proof_failed");
        if !enforced {
            return Ok(false);
        }
        respond::send(
            session,
            Refusal::DbscProofFailed {
                challenge: challenge.as_deref(),
            },
        )
        .await?;
        Ok(true)
    }

    /// Carries out a verdict as far as the route's mode allows: its
    /// effects through the engine, the refusal as a response. Returns true
    /// when a response was sent.
    async fn enforce(
        &self,
        session: &mut Session,
        route: &Route,
        verdict: &Verdict,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let generation = Arc::clone(&ctx.generation);
        let enforced = route.mode == Mode::Enforce;
        generation.counters.decision(verdict.action, enforced);
        generation.counters.ruling(&verdict.ruling, !enforced);
        for c in &verdict.risk.reasons {
            generation.counters.reason(c.reason);
        }
        let reference = (verdict.action != Action::Allow).then(respond::new_reference);
        let rules = &generation.config.rules;
        let rule = verdict.ruling.rule.and_then(|i| rules.rule_at(i));
        // Tag names are checked identifiers (a-z 0-9 - _ .): a header value
        // and a log field as they are.
        let tags = (verdict.ruling.tags != 0).then(|| {
            rules
                .tags(verdict.ruling.tags)
                .collect::<Vec<_>>()
                .join(",")
        });
        let applied = self.engine.apply(
            verdict,
            &Decision {
                enforcement: enforcement(route.mode),
                route: &route.name,
                reference,
                rule: rule.map(|r| r.name.as_str()),
                tags: tags.as_deref(),
            },
        );
        // A revoked session's other requests in flight end with it.
        if let (true, Some(open)) = (applied.revoked, &self.open) {
            for key in verdict.effects.revokes() {
                open.end_session(key);
            }
        }
        // Shadow rules change nothing; what they would have done is told.
        for r in verdict
            .ruling
            .shadow
            .iter()
            .filter_map(|i| rules.rule_at(*i))
        {
            tracing::info!(
                target: "vigil::rules",
                rule = %r.name,
                would = r.action_name(),
                decided = %verdict.action,
                route = %route.name,
                "shadow rule matched"
            );
        }
        let decision_reference = reference;
        let reference = reference.map(|r| r.to_string()).unwrap_or_default();
        if verdict.action != Action::Allow {
            self.remember(&reference, verdict);
        }

        if verdict.action == Action::Allow || !enforced {
            if generation.config.risk_to_app {
                ctx.risk = Some(RiskHeaders {
                    level: HeaderValue::from_static(verdict.risk.level.as_str()),
                    score: score_value(verdict.risk.score),
                    reasons: if verdict.risk.reasons.is_empty() {
                        HeaderValue::from_static("")
                    } else {
                        // Reason codes are ASCII identifiers joined by commas.
                        HeaderValue::from_str(&reasons_list(verdict))
                            .unwrap_or(HeaderValue::from_static(""))
                    },
                    tags: tags.as_deref().and_then(|t| HeaderValue::from_str(t).ok()),
                });
            }
            return Ok(false);
        }

        let cookie = match verdict.session.map(|s| s.source) {
            Some(CredentialSource::Cookie(i)) => {
                generation.config.engine.session.cookie_names.get(i)
            }
            _ => None,
        };
        let bearer = matches!(
            verdict.session.map(|s| s.source),
            Some(CredentialSource::Bearer)
        );
        if let (Action::StepUp, false, Some(StepUpVia::Oidc { callback_path, .. }), Some(oidc)) = (
            verdict.action,
            bearer,
            &route.step_up,
            &generation.config.oidc,
        ) {
            let req = session.req_header();
            let start = stepup::Start {
                route: &route.name,
                scheme: if self.tls { "https" } else { "http" },
                authority: request_authority(req),
                callback_path,
                target: req
                    .uri
                    .path_and_query()
                    .map_or("/", http::uri::PathAndQuery::as_str),
                acr_values: rule.and_then(|r| r.acr_values.as_deref()),
                max_age: rule.and_then(|r| r.max_age),
                now: verdict.at,
            };
            let outcome = self.step_ups.start(oidc, verdict, &start).await;
            StepUps::count(&self.metrics, "start", &outcome);
            respond::send(session, sent_to_step_up(&outcome, &reference, route)).await?;
            return Ok(true);
        }
        let issuer = generation.config.oidc.as_ref().map(|o| o.issuer.as_str());
        let refusal = match verdict.action {
            Action::Block if verdict.risk.reasons.iter().any(|c| c.reason.is_final()) => {
                Refusal::SessionEnded {
                    reference: &reference,
                    login_url: route.login_url.as_deref(),
                }
            }
            Action::StepUp => Refusal::StepUp {
                reference: &reference,
                // Config validation requires a way to step up when a
                // policy or rule does; an API's client is pointed at the
                // provider (RFC 9470 leaves the how to it).
                url: match &route.step_up {
                    Some(StepUpVia::Url(url)) => url,
                    Some(StepUpVia::Oidc { .. }) => issuer.unwrap_or("/"),
                    None => "/",
                },
                bearer,
                acr_values: rule.and_then(|r| r.acr_values.as_deref()),
                max_age: rule.and_then(|r| r.max_age),
            },
            Action::Revoke => Refusal::Revoked {
                reference: &reference,
                // Config validation requires login_url when a policy revokes.
                login_url: route.login_url.as_deref().unwrap_or("/"),
                cookie: cookie.map(String::as_str),
            },
            Action::Block => {
                let offer = self.it_was_me_link(
                    session,
                    route,
                    verdict,
                    decision_reference,
                    cookie.is_some(),
                );
                return respond::send(
                    session,
                    Refusal::Blocked {
                        reference: &reference,
                        it_was_me: offer.as_ref().map(|(link, _)| link.as_str()),
                        set_cookie: offer.as_ref().map(|(_, cookie)| cookie.as_str()),
                    },
                )
                .await
                .map(|()| true);
            }
            // Any action this build does not know: refused.
            _ => Refusal::Blocked {
                reference: &reference,
                it_was_me: None,
                set_cookie: None,
            },
        };
        respond::send(session, refusal).await?;
        Ok(true)
    }

    /// The "it was me" link a block page offers (`docs/step-up.md`), and
    /// the `Set-Cookie` that marks the browser it is for: only on a route
    /// that offers it (`it_was_me`, stepping up at `[oidc]`), only to a
    /// browser's one session cookie whose user is known (a step-up
    /// confirms who a session belongs to, nothing else), only for a block
    /// a sign-in answers, and only for this block of this session in this
    /// browser on this route. A browser that carries a mark keeps it (its
    /// page's blocked images must not void the page's link).
    fn it_was_me_link(
        &self,
        session: &Session,
        route: &Route,
        verdict: &Verdict,
        reference: Option<vigil_engine::Reference>,
        by_cookie: bool,
    ) -> Option<(String, String)> {
        let Some(StepUpVia::Oidc {
            callback_path,
            it_was_me: true,
        }) = &route.step_up
        else {
            return None;
        };
        let key = verdict.session.filter(|_| verdict.credentials == 1)?.key;
        if !by_cookie || verdict.user.is_none() || !stepup::disputable(verdict) {
            return None;
        }
        let req = session.req_header();
        let target = req
            .uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str);
        let browser = stepup::browser_mark(&req.headers).unwrap_or_else(rand::random);
        let holder = stepup::LinkFor {
            route: &route.name,
            session: key,
            device: verdict.device.id,
            browser,
        };
        let link =
            self.step_ups
                .dispute_link(callback_path, holder, reference?, target, verdict.at);
        Some((
            link,
            stepup::browser_cookie(&browser, callback_path, self.tls),
        ))
    }

    /// The request filter: Pingora boxes the future of each filter call
    /// (`async_trait`) and copies the whole of it into its box on every
    /// request, so what this future holds across an await is paid by every
    /// request, refused or not. The verdict is therefore boxed as soon as it
    /// is made, and the rare paths' large futures (the step-up callback,
    /// the DBSC endpoint) are boxed where they are awaited
    /// (`the_request_filters_future_stays_small`).
    async fn judge(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let generation = Arc::clone(&ctx.generation);
        let req = session.req_header();
        if header_bytes(req) > generation.config.max_header_bytes {
            self.metrics
                .request_errors
                .with_label_values(&["headers_too_large", "refused"])
                .inc();
            respond::send(session, Refusal::HeadersTooLarge).await?;
            return Ok(true);
        }
        let host = request_host(req);
        if self.misdirected(session, host) {
            self.metrics
                .request_errors
                .with_label_values(&["misdirected", "refused"])
                .inc();
            generation.counters.request(None);
            respond::send(session, Refusal::Misdirected).await?;
            return Ok(true);
        }
        if generation.dbsc && Dbsc::owns(&generation.config.dbsc, req.uri.path()) {
            return Box::pin(self.dbsc_endpoint(session, &generation)).await;
        }
        let selected = match crate::routes::select(&generation.config.routes, host, req.uri.path())
        {
            Ok(selected) => selected,
            Err(e) => {
                self.metrics
                    .request_errors
                    .with_label_values(&[e.code(), "refused"])
                    .inc();
                generation.counters.request(None);
                respond::send(session, Refusal::Path { code: e.code() }).await?;
                return Ok(true);
            }
        };
        ctx.route = selected.index;
        let path = selected.path;
        let Some(route) = generation.route(ctx.route) else {
            generation.counters.request(None);
            respond::send(session, Refusal::NoRoute).await?;
            return Ok(true);
        };
        generation.counters.request(ctx.route);
        if self.refuses_stale(route) {
            respond::send(session, Refusal::FleetStale).await?;
            return Ok(true);
        }
        if let (Some(StepUpVia::Oidc { callback_path, .. }), Some(oidc)) =
            (&route.step_up, &generation.config.oidc)
            && *path == **callback_path
        {
            let path = path.into_owned();
            let rules = generation.config.rules.as_ref();
            return Box::pin(self.step_up_callback(session, route, oidc, rules, &path)).await;
        }
        // Scope exclusions are judged on the path the route was chosen by.
        let dbsc_path = (route.dbsc != RouteDbsc::Off).then(|| path.to_string());
        let view = self.request_view(session, route, &path);
        if route.mode == Mode::Off && !route.app_confirms {
            // `off` skips scoring and learning, not the revocation lookup.
            if route.revocation_check {
                match self.engine.revoked_credential(&view) {
                    Ok(None) => {}
                    Ok(Some(_)) => return self.refuse_revoked(session, route).await,
                    Err(e) => return self.refuse_malformed(session, route, &e).await,
                }
            }
            if generation.config.client_ip.to_app {
                ctx.client = Some(self.engine.resolve_client(&view, self.forwarded));
            }
            return Ok(false);
        }
        let started = Instant::now();
        let result = self
            .engine
            .decide_with_rules(
                &view,
                &route.policy,
                generation.config.rules.as_ref(),
                self.forwarded,
            )
            .map(Box::new);
        self.metrics
            .pipeline_seconds
            .observe(started.elapsed().as_secs_f64());

        match result {
            // An `off` route whose app confirms step-ups: judged only so that
            // a confirmation has the request's facts; nothing applied.
            Ok(verdict) if route.mode == Mode::Off => {
                // Any credential revoked, not only the one that decided.
                if route.revocation_check
                    && !matches!(self.engine.revoked_credential(&view), Ok(None))
                {
                    return self.refuse_revoked(session, route).await;
                }
                ctx.verdict = Some(verdict);
                Ok(false)
            }
            Ok(verdict) => {
                self.count_chain(&verdict.client);
                // A session born over TLS has no business on this cleartext
                // listener: the erased evidence is a refusal here, and
                // nothing of the request is applied or learnt.
                if self.tls_required
                    && route.mode == Mode::Enforce
                    && verdict.risk.has(vigil_engine::Reason::TlsEvidenceLost)
                {
                    self.metrics
                        .request_errors
                        .with_label_values(&["tls_required", "refused"])
                        .inc();
                    let reference = respond::new_reference().to_string();
                    respond::send(
                        session,
                        Refusal::Blocked {
                            reference: &reference,
                            it_was_me: None,
                            set_cookie: None,
                        },
                    )
                    .await?;
                    return Ok(true);
                }
                let mut refused = self.enforce(session, route, &verdict, ctx).await?;
                if !refused {
                    refused = self
                        .dbsc_refuses(
                            session,
                            route,
                            &generation.config.dbsc,
                            &verdict,
                            dbsc_path.as_deref().unwrap_or("/"),
                        )
                        .await?;
                    if refused {
                        return Ok(true);
                    }
                }
                if !refused && route.mode == Mode::Enforce {
                    match self.file_open(session, &verdict, ctx) {
                        Filing::Filed => {}
                        Filing::Revoked => return self.refuse_revoked(session, route).await,
                        Filing::Full => {
                            self.metrics
                                .request_errors
                                .with_label_values(&["too_many_open_requests", "refused"])
                                .inc();
                            respond::send(session, Refusal::TooManyOpen).await?;
                            return Ok(true);
                        }
                    }
                }
                ctx.verdict = Some(verdict);
                Ok(refused)
            }
            Err(e) => {
                // An `off` route forwards whatever it is sent: it was judged
                // only for a confirmation, and there is none to be had. Input
                // no browser sends is refused everywhere: a client must not
                // choose the fail-open path.
                // A DBSC route fails closed on every one: a request whose
                // credentials cannot be read cannot be checked for a proof.
                let open = !e.fails_closed()
                    && route.dbsc == RouteDbsc::Off
                    && (route.on_error == FailMode::Open || route.mode == Mode::Off);
                let outcome = if open { "forwarded" } else { "refused" };
                self.metrics
                    .request_errors
                    .with_label_values(&[e.code(), outcome])
                    .inc();
                tracing::debug!(route = %route.name, error = %e, outcome, "request not evaluated");
                if open {
                    // No session judged, but the response side still sees
                    // the client: a session the app opens now is baselined
                    // and bound like any other.
                    let verdict =
                        self.engine
                            .decide_without_session(&view, &route.policy, self.forwarded);
                    if route.mode == Mode::Off {
                        ctx.client = Some(verdict.client);
                    } else {
                        ctx.verdict = Some(Box::new(verdict));
                    }
                    return Ok(false);
                }
                respond::send(session, Refusal::Malformed { code: e.code() }).await?;
                Ok(true)
            }
        }
    }
}

#[async_trait]
impl ProxyHttp for VigilProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx {
            generation: self.current.load_full(),
            route: None,
            risk: None,
            attempts: 0,
            client: None,
            verdict: None,
            open: None,
        }
    }

    // Pingora's default registers a response-compression module, disabled
    // (level 0), that is still built, boxed and called on every request
    // (its two header filters are boxed futures). Vigil compresses
    // nothing and leaves each response's body and encoding as the app sent
    // them: no modules (so none can be switched on per request either).
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        // The head is in: the connection's head deadline and size cap stop.
        crate::conn_limits::head_received();
        // A connection kept for another request waits at most the
        // listener's `keepalive_idle_seconds` for it. Pingora's default for
        // HTTP/1.1 is to wait for ever, or as long as the client's own
        // `Keep-Alive: timeout=` asks: either way a client could hold
        // every slot of `max_connections` by going quiet after one
        // answer (a refusal included, now that refusals keep the
        // connection). A client's `Connection: close` still closes.
        match session.get_keepalive() {
            Some(secs) if secs == 0 || secs > self.keepalive_idle => {
                session.set_keepalive(Some(self.keepalive_idle));
            }
            _ => {}
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        // Nothing else held here: this future is the one boxed and copied
        // per request, and the size test can only measure `judge`'s.
        self.judge(session, ctx).await
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        ctx.attempts += 1;
        let group = ctx
            .generation
            .upstream(ctx.route)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "request has no route"))?;
        group.select().ok_or_else(|| {
            let mut e = Error::explain(
                ErrorType::ConnectNoRoute,
                format!("upstream {}: no healthy address", group.config.name),
            );
            e.esource = ErrorSource::Upstream;
            e
        })
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(group) = ctx.generation.upstream(ctx.route) {
            self.metrics
                .connect_failures
                .with_label_values(&[&group.config.name])
                .inc();
            if let Some(addr) = peer._address.as_inet() {
                group.eject(addr);
            }
            // Nothing was sent yet: another address may take the request.
            if ctx.attempts < group.config.addresses.len() {
                e.set_retry(true);
            }
        }
        e
    }

    // Pingora's default would answer with its own bare page (STYLE.md 20).
    // `error_while_proxy` is left alone: it only decides retries, never answers.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> pingora_proxy::FailToProxy {
        let generation = Arc::clone(&ctx.generation);
        let scope = respond::Scope {
            route: generation.route(ctx.route).map(|r| r.name.as_str()),
            upstream: generation
                .upstream(ctx.route)
                .map(|g| g.config.name.as_str()),
        };
        let status = respond::fail(session, e, scope, &self.metrics).await;
        pingora_proxy::FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Self::CTX, _e: &Error) -> bool {
        // `fail_to_proxy` has logged it, with the reference the client saw.
        true
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // The bound cookie is Vigil's: never the app's to see, on any
        // route — it is host-wide (`__Host-`, `Path=/`), so the browser
        // sends it to the apps behind routes without DBSC too, and any
        // node of the fleet would take a leaked copy.
        if ctx.generation.dbsc
            && let Some(rest) = dbsc::without_bound_cookie(
                &upstream_request.headers,
                &ctx.generation.config.dbsc.cookie_name,
            )
        {
            upstream_request.remove_header(&http::header::COOKIE);
            if !rest.is_empty() {
                upstream_request.insert_header(http::header::COOKIE, rest)?;
            }
        }
        // Whatever a client said about its address, scheme or host goes;
        // Vigil says what it saw. A trusted balancer in front (the peer is
        // in a trusted set) ends TLS itself, so its scheme and host stand.
        // The app must be able to trust every Vigil-* header it sees; a
        // balancer's fingerprint headers were read by the engine (from a
        // trusted peer only), and the app gets Vigil's own instead. One
        // pass over the names the request carries finds all of them.
        let config = &ctx.generation.config;
        let client = ctx
            .verdict
            .as_ref()
            .map(|v| &v.client)
            .or(ctx.client.as_ref());
        let from_trusted_peer = client.is_some_and(|c| c.provider.is_some());
        let upstream_fp = &config.engine.upstream_fingerprints;
        let strip = forwarding::Strip {
            from_trusted_peer,
            client_ip_to_app: config.client_ip.to_app,
            extra: &config.client_ip.strip_headers,
            fingerprints: [
                upstream_fp.ja4_header.as_ref(),
                upstream_fp.ja3_header.as_ref(),
            ],
        };
        for name in strip.present(&upstream_request.headers) {
            upstream_request.remove_header(&name);
        }
        if config.fingerprint.to_app
            && let Some(tls) = ctx.verdict.as_ref().map(|v| v.device.tls)
        {
            if let Some(ja4) = tls.ja4 {
                upstream_request.insert_header("vigil-ja4", ja4.to_string())?;
            }
            if let Some(ja3) = tls.ja3 {
                upstream_request.insert_header("vigil-ja3", ja3.to_string())?;
            }
        }
        if config.engine.binding.enabled {
            crate::binding::strip_companion(upstream_request, &config.engine.binding.cookie_name)?;
        }
        let proto = if self.tls { "https" } else { "http" };
        if !(from_trusted_peer && upstream_request.headers.contains_key("x-forwarded-proto")) {
            upstream_request.insert_header("x-forwarded-proto", HeaderValue::from_static(proto))?;
        }
        if from_trusted_peer && upstream_request.headers.contains_key("x-forwarded-host") {
            // The balancer's word on the host stands.
        } else if let Some(host) = upstream_request
            .headers
            .get(http::header::HOST)
            .cloned()
            .or_else(|| {
                upstream_request
                    .uri
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            })
        {
            upstream_request.insert_header("x-forwarded-host", host)?;
        }
        if config.client_ip.to_app {
            // `X-Forwarded-For`, `Forwarded` and `X-Real-IP` went with the
            // spoofable ones above.
            if let Some(client) = client {
                let values = forwarding::values(client, proto);
                upstream_request.insert_header("x-forwarded-for", values.x_forwarded_for)?;
                upstream_request.insert_header("forwarded", values.forwarded)?;
                upstream_request.insert_header("vigil-client-ip", values.client_ip)?;
            }
        }
        // Not taken: a retried connection builds the upstream request again.
        if let Some(risk) = &ctx.risk {
            upstream_request.insert_header("vigil-risk-level", risk.level.clone())?;
            upstream_request.insert_header("vigil-risk-score", risk.score.clone())?;
            upstream_request.insert_header("vigil-risk-reasons", risk.reasons.clone())?;
            if let Some(tags) = &risk.tags {
                upstream_request.insert_header("vigil-tags", tags.clone())?;
            }
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // Client to app, WebSocket frames included.
        Self::ended(ctx)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<std::time::Duration>> {
        // App to client: a stream that flows ends at its next chunk.
        Self::ended(ctx)?;
        Ok(None)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // An idle request (an HTTP/2 long poll) revoked while the app took
        // its time: its answer never reaches the client.
        Self::ended(ctx)?;
        let generation = &ctx.generation;
        let config = &generation.config;
        // Judged against the request's verdict: the response side is part
        // of the same, single evaluation. Informational heads (103 Early
        // Hints) set nothing a browser keeps, and come before the real one.
        if let (Some(verdict), Some(route), false) = (
            &ctx.verdict,
            generation.route(ctx.route),
            upstream_response.status.is_informational(),
        ) {
            let now = now_secs();
            let done = self.engine.respond(
                verdict,
                &ResponseView {
                    headers: &upstream_response.headers,
                    now_secs: now,
                    user_header: config.user_header.as_ref(),
                    confirm_header: config.confirm_header.as_ref(),
                    app_confirms: route.app_confirms,
                },
                enforcement(route.mode),
            );
            if done.bad_user {
                self.metrics
                    .request_errors
                    .with_label_values(&["bad_user_header", "ignored"])
                    .inc();
            }
            // Cookie binding, when configured: nothing to issue otherwise.
            if config.engine.binding.enabled {
                crate::binding::add_companions(
                    &self.engine,
                    verdict,
                    upstream_response,
                    now,
                    enforcement(route.mode),
                    done.confirmed,
                )?;
            }
            // Sessions the app opens here on a DBSC route, new to the
            // engine (so on an allowed request, or one a monitoring route
            // would allow), over TLS, which DBSC requires: offered a
            // binding, or given the request's own ([`Dbsc::issued`]).
            if route.dbsc != RouteDbsc::Off && self.tls && !done.new.is_empty() {
                let req = session.req_header();
                let carried = self.engine.credential_keys(&req.headers);
                let path = crate::path::normalise(req.uri.path()).unwrap_or_default();
                let issue = self
                    .dbsc
                    .issued(&config.dbsc, &carried, &path, &done.new, now);
                let outcome = match &issue {
                    dbsc::Issue::Offer(_) => "offered",
                    dbsc::Issue::Inherited => "inherited",
                    dbsc::Issue::None(why) => *why,
                };
                self.metrics
                    .dbsc
                    .with_label_values(&["offer", outcome])
                    .inc();
                if let dbsc::Issue::Offer(value) = issue {
                    upstream_response.append_header(dbsc::REGISTRATION, value)?;
                }
            }
        }
        // Never for the client's eyes, judged route or not.
        for name in [&config.confirm_header, &config.user_header]
            .into_iter()
            .flatten()
        {
            upstream_response.remove_header(name);
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        // Out of the registry before Pingora closes or reuses the
        // connection: a revocation must never shut down a socket that is
        // no longer this request's.
        let revoked = ctx.open.take().is_some_and(|o| o.ended());
        // The next byte on this connection starts a new head.
        crate::conn_limits::request_finished();
        if session.is_http2()
            && let Some(cookie) = crate::conn_limits::socket_cookie(session)
        {
            // A stream Vigil ended for a revocation is not the client's
            // reset: it must not count towards closing a connection that
            // may carry other sessions' streams.
            let client_error =
                !revoked && e.is_some_and(|e| e.esource() == &ErrorSource::Downstream);
            self.h2.stream_ended(cookie, client_error);
        }
        let Some(e) = e else { return };
        if e.esource() == &ErrorSource::Upstream
            && let Some(group) = ctx.generation.upstream(ctx.route)
        {
            self.metrics
                .upstream_errors
                .with_label_values(&[&group.config.name])
                .inc();
        }
    }
}

impl std::fmt::Debug for VigilProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VigilProxy").finish_non_exhaustive()
    }
}

/// The host a request is for, without port: the URI's authority (HTTP/2,
/// absolute-form) or the Host header.
fn request_host(req: &RequestHeader) -> &str {
    let raw = req.uri.host().or_else(|| {
        req.headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
    });
    let Some(raw) = raw else { return "" };
    // "[::1]:8080" → "[::1]", "example.com:8080" → "example.com".
    if raw.starts_with('[') {
        return raw.split_inclusive(']').next().unwrap_or(raw);
    }
    raw.split(':').next().unwrap_or(raw)
}

/// The answer to a step-up start (a `step_up` decision, or an "it was me"
/// link followed): `303` to the provider, or the refusal's page.
fn sent_to_step_up<'a>(outcome: &'a Outcome, reference: &'a str, route: &'a Route) -> Refusal<'a> {
    match outcome {
        Outcome::Redirect(url) => Refusal::StepUp {
            reference,
            url,
            bearer: false,
            acr_values: None,
            max_age: None,
        },
        Outcome::Refuse(problem) => Refusal::StepUpRefused {
            problem: *problem,
            login_url: route.login_url.as_deref(),
        },
    }
}

/// The host a request is for as the browser wrote it, port included:
/// where Vigil's own callback is on the same origin. The route matched
/// its host part.
fn request_authority(req: &RequestHeader) -> &str {
    req.uri
        .authority()
        .map(http::uri::Authority::as_str)
        .or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("")
}

/// Size of the header section as sent: each `name: value\r\n` line.
fn header_bytes(req: &RequestHeader) -> usize {
    req.headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum()
}

/// `Vigil-Risk-Score`'s value: one of 256 built once (formatting the
/// number allocated on every request).
fn score_value(score: u8) -> HeaderValue {
    static SCORES: std::sync::LazyLock<Vec<HeaderValue>> = std::sync::LazyLock::new(|| {
        (0..=u8::MAX)
            .map(|s| HeaderValue::from(u16::from(s)))
            .collect()
    });
    SCORES[usize::from(score)].clone()
}

/// How far a route's mode lets a verdict go.
fn enforcement(mode: Mode) -> Enforcement {
    match mode {
        Mode::Enforce => Enforcement::Enforce,
        Mode::Monitor => Enforcement::Monitor,
        Mode::Off => Enforcement::Off,
    }
}

/// Wall-clock seconds since the Unix epoch: the time the engine is given.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pingora copies the request context each time it boxes a request's
    /// future: what grows it costs every request, on every route
    /// (docs/performance.md, "The request context"). 2,000 bytes with the
    /// verdict inline; a field that pushes it past this bound belongs
    /// behind a box, as the verdict is.
    #[test]
    fn the_request_context_stays_small() {
        assert!(
            std::mem::size_of::<RequestCtx>() <= 512,
            "{} bytes",
            std::mem::size_of::<RequestCtx>()
        );
    }

    /// The size of the future `f` returns, without calling it.
    fn future_size<'a, F, Fut>(_: F) -> usize
    where
        F: FnOnce(&'a VigilProxy, &'a mut Session, &'a mut RequestCtx) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    #[test]
    fn the_request_filters_future_stays_small() {
        // Copied whole into a box on every request: 10,800 bytes when the
        // verdict and the rare paths' futures were held in it, 1,128 since.
        // Each of them inline again fails here: the DBSC endpoint (1,944),
        // a refusal's answer (2,216), the verdict (5,176), the step-up
        // callback (7,744).
        let size = future_size(VigilProxy::judge);
        assert!(size <= 1536, "{size} bytes");
    }

    fn req(uri: &str, host: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.set_uri(uri.parse().unwrap());
        if let Some(h) = host {
            r.insert_header("host", h).unwrap();
        }
        r
    }

    #[test]
    fn host_comes_from_authority_or_header_without_port() {
        assert_eq!(
            request_host(&req("/", Some("app.example.com:8443"))),
            "app.example.com"
        );
        assert_eq!(request_host(&req("/", Some("[::1]:8080"))), "[::1]");
        assert_eq!(
            request_host(&req("https://a.example.org/x", Some("b"))),
            "a.example.org"
        );
        assert_eq!(request_host(&req("/", None)), "");
    }
}

/// What filing a request for revocations came to ([`crate::open_requests`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filing {
    /// Filed (or nothing to file): served.
    Filed,
    /// Revoked between its verdict and its filing: refused `401`.
    Revoked,
    /// Not filed: the session has [`open_requests::PER_SESSION`] requests
    /// open, or the registry's shard is full. Refused `429`: served, it
    /// would outlive a revocation.
    Full,
}
