//! Step-up at the identity provider: Vigil as an OpenID Connect relying
//! party (`docs/step-up.md`).
//!
//! A route with `step_up = "oidc"` answers a `step_up` decision on a page
//! by sending the browser to the provider (authorization code flow with
//! PKCE, `prompt=login`, and the rule's `acr_values`/`max_age`), with a
//! one-time `state` and `nonce` remembered here against the session's key.
//! The provider sends the browser back to the route's callback path; the
//! callback is judged like any request of the route, then:
//!
//! 1. the `state` is taken (once: a replayed callback finds nothing) and
//!    the request's one session credential must be the one that was sent;
//! 2. the code is exchanged (PKCE verifier, client secret) and the ID
//!    token checked: signature against the provider's keys (fetched again
//!    once for a new `kid`), issuer, audience, expiry, the `nonce`, issued
//!    after Vigil sent the user (Vigil's own record, since some providers
//!    keep an old `auth_time` on re-authentication), `auth_time` within
//!    `max_age` and `acr` among the `acr_values` when the rule asked;
//! 3. the token's user must be the session's user: a step-up confirms who a
//!    session belongs to, it never hands a session to whoever signs in;
//! 4. the engine confirms the session from the callback's own facts (the
//!    device and network become its baseline), and the browser goes back to
//!    the page it asked for, a relative URL on the same host.
//!
//! Everything refused is answered with a page naming the reason
//! ([`Problem`]), counted in `vigil_proxy_step_ups_total` and logged with
//! target [`LOG_TARGET`]. Starts and callbacks are rate-limited per
//! session and per client address; a session sent back to the provider for
//! the same page just after passing is in a loop, and refused.
//!
//! What is remembered (pending step-ups, recent passes, counters) lives in
//! this node's memory, across config reloads; a fleet needs the callback
//! to reach the node that sent the user (or the controller to carry it).

mod idp;
mod limit;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::Nonce;
use vigil_engine::{Action, DeviceId, Engine, Reason, Reference, SessionKey, UserKey, Verdict};

use crate::config::{Oidc, UserClaim};
use crate::metrics::Metrics;

pub use self::idp::Provider;
use self::limit::Limiter;

/// Target of every step-up log record: `vigil::stepup`.
pub const LOG_TARGET: &str = "vigil::stepup";

/// Bytes of step-ups waiting for their callback on one node (each weighed
/// by its strings); beyond it the least recently sent are forgotten (their
/// callbacks then find no state). About 100,000 ordinary ones.
const MAX_PENDING_BYTES: u64 = 64 * 1024 * 1024;

/// Keys each rate limiter and the loop memory track; beyond it the least
/// recently seen are forgotten.
const MAX_TRACKED: u64 = 100_000;

/// The longest `pending_seconds` allowed: no pending step-up outlives it,
/// whatever a reload sets meanwhile (each is also checked against the
/// setting in force at its callback).
const PENDING_CEILING: Duration = Duration::from_secs(3_600);

/// Longest original URL kept to return to; a longer one returns to `/`.
const MAX_TARGET_BYTES: usize = 2_048;

/// Longest callback query read.
const MAX_QUERY_BYTES: usize = 8_192;

/// How long an "it was me" link on a block page can be followed: long
/// enough to read the page, short enough that a link copied off a screen
/// or a log is soon worth nothing (it is only ever good for its own
/// session, which must pass a step-up besides).
const LINK_LIFETIME: Duration = Duration::from_secs(600);

/// The query parameter of an "it was me" link, on the callback path.
const LINK_PARAM: &str = "it_was_me";

/// What an "it was me" link's MAC starts with: its purpose and version,
/// so that no other MAC this key might ever make can pass for one.
const LINK_CONTEXT: &[u8] = b"vigil it_was_me v1\0";

/// Why a step-up was refused: each is a page with its own code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// Too many starts or callbacks from this session or address.
    RateLimited,
    /// Sent to step up for the same page just after passing.
    Loop,
    /// The request has no session to step up (or several credentials).
    NoSession,
    /// The request's `Host` is not a plain `host[:port]`: no callback
    /// address can be built from it.
    BadHost,
    /// The provider could not be reached or answered nonsense.
    Unavailable,
    /// The callback's query is missing, repeated or malformed.
    BadCallback,
    /// The `state` is unknown: used already, expired, or never sent.
    StateUnknown,
    /// The callback carries another session than the one sent.
    SessionMismatch,
    /// The provider answered with an error (the user cancelled, say).
    ProviderError,
    /// The code could not be exchanged for tokens.
    ExchangeFailed,
    /// The ID token failed a check (signature, issuer, audience, expiry,
    /// nonce, issued before the user was sent).
    TokenInvalid,
    /// The provider did not show that the user signed in after Vigil sent
    /// them (`auth_time` missing or older), so the sign-in may be a silent
    /// one from an existing (perhaps stolen) provider session.
    NotFresh,
    /// The authentication is older than `max_age`, or of another class
    /// than `acr_values` asked for.
    Insufficient,
    /// The session's user is not known: it must sign in afresh.
    UnknownUser,
    /// Someone else signed in than the session's user.
    WrongUser,
    /// The session was revoked, or the callback itself is refused.
    Refused,
    /// An "it was me" link that is not this session's, was altered, has
    /// expired or was answered already.
    LinkInvalid,
}

impl Problem {
    /// The stable code: the page's and JSON's `error`, the log's `code`,
    /// the metric's `outcome`.
    pub fn code(self) -> &'static str {
        match self {
            Problem::RateLimited => "step_up_rate_limited",
            Problem::Loop => "step_up_loop",
            Problem::NoSession => "step_up_no_session",
            Problem::BadHost => "step_up_bad_host",
            Problem::Unavailable => "step_up_unavailable",
            Problem::BadCallback => "step_up_bad_callback",
            Problem::StateUnknown => "step_up_state_unknown",
            Problem::SessionMismatch => "step_up_session_mismatch",
            Problem::ProviderError => "step_up_provider_error",
            Problem::ExchangeFailed => "step_up_exchange_failed",
            Problem::TokenInvalid => "step_up_token_invalid",
            Problem::NotFresh => "step_up_not_fresh",
            Problem::Insufficient => "step_up_insufficient",
            Problem::UnknownUser => "step_up_unknown_user",
            Problem::WrongUser => "step_up_wrong_user",
            Problem::Refused => "step_up_refused",
            Problem::LinkInvalid => "step_up_link_invalid",
        }
    }
}

/// A step-up sent to the provider, waiting for its callback.
#[derive(Debug)]
struct Pending {
    /// The session that was sent; the callback must carry it.
    session: SessionKey,
    /// The route that sent it; the callback must arrive on it.
    route: String,
    /// The issuer it was sent to.
    issuer: String,
    /// The `redirect_uri` sent, which the code exchange repeats.
    redirect_uri: String,
    /// The PKCE verifier.
    verifier: String,
    /// The nonce the ID token must carry.
    nonce: String,
    /// Where to return: a relative URL on the same host.
    target: String,
    /// When the user was sent (Unix seconds).
    sent_at: u64,
    /// What the rule asked for.
    acr_values: Vec<String>,
    /// Seconds since authentication the rule allows.
    max_age: Option<u32>,
    /// The block the user disputes ("it was me"), when they asked for
    /// this step-up themselves.
    disputed: Option<Disputed>,
}

impl Pending {
    /// Bytes held, roughly, for the cache's bound.
    fn weight(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.route.len()
            + self.issuer.len()
            + self.redirect_uri.len()
            + self.verifier.len()
            + self.nonce.len()
            + self.target.len()
            + self.acr_values.iter().map(String::len).sum::<usize>()
    }
}

/// A step-up passed, for loop detection.
#[derive(Debug, Clone)]
struct Passed {
    at: u64,
    target: String,
}

/// What a step-up start or callback comes to.
#[derive(Debug)]
pub enum Outcome {
    /// Send the browser to this URL: the provider (start) or the original
    /// page (callback passed).
    Redirect(String),
    /// Refuse with this problem's page.
    Refuse(Problem),
}

/// The relying party: pending step-ups, counters and the provider's
/// metadata, shared by every listener and kept across reloads.
#[derive(Debug)]
pub struct StepUps {
    pending: moka::sync::Cache<String, Arc<Pending>>,
    passed: moka::sync::Cache<SessionKey, Passed>,
    /// Signs "it was me" links: this process's own key, drawn at start
    /// (a link outlives neither its [`LINK_LIFETIME`] nor the process).
    link_key: ring::hmac::Key,
    /// Blocks whose "it was me" step-up passed: their link is spent.
    disputes_passed: moka::sync::Cache<Reference, ()>,
    /// Starts per session.
    per_session: Limiter<SessionKey>,
    /// Starts per client network.
    starts_per_client: Limiter<IpAddr>,
    /// Callbacks per client network, counted apart from starts: a flood of
    /// junk callbacks spends only its own address's budget, and nobody's
    /// session budget.
    callbacks_per_client: Limiter<IpAddr>,
    provider: idp::Cache,
}

impl Default for StepUps {
    fn default() -> Self {
        Self::new()
    }
}

/// The start of a step-up: what the decision and the request say.
#[derive(Debug)]
pub struct Start<'a> {
    /// The route's name.
    pub route: &'a str,
    /// `http` or `https`: the scheme the browser used.
    pub scheme: &'a str,
    /// The `Host` the browser used, port included (the route matched it).
    pub authority: &'a str,
    /// The route's callback path.
    pub callback_path: &'a str,
    /// The request's path and query as sent.
    pub target: &'a str,
    /// The rule's `acr_values` (space-separated), if any.
    pub acr_values: Option<&'a str>,
    /// The rule's `max_age`, if any.
    pub max_age: Option<u32>,
    /// The request's time.
    pub now: u64,
}

/// Whom an "it was me" link is for: one session on one device, on one
/// route. A link followed with the session's cookie from another device
/// (the thief's link passed to the owner, or the owner's to the thief)
/// is no link.
#[derive(Debug, Clone, Copy)]
pub struct LinkFor<'a> {
    /// The route's name.
    pub route: &'a str,
    /// The session blocked.
    pub session: SessionKey,
    /// The device it was blocked on (the engine's device id).
    pub device: DeviceId,
    /// The browser it was blocked in: the random mark of its
    /// [`BROWSER_COOKIE`] (the device id is read from headers a thief can
    /// copy; this cookie he cannot read).
    pub browser: BrowserMark,
}

/// A browser's random mark, in its [`BROWSER_COOKIE`].
pub type BrowserMark = [u8; 16];

/// The cookie that marks the browser a block page with an "it was me"
/// link was shown in: HttpOnly, on the callback path only (never
/// forwarded to the app), for the link's lifetime.
pub const BROWSER_COOKIE: &str = "vigil-dispute";

/// The block a step-up answers, when the user disputed it ("it was me").
#[derive(Debug, Clone, Copy)]
struct Disputed {
    reference: Reference,
    /// The device it was blocked on: the callback must come from it.
    device: DeviceId,
    /// The browser it was blocked in: the callback must carry its mark.
    browser: BrowserMark,
}

/// A step-up's callback as it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Returned<'a> {
    /// The route's name.
    pub route: &'a str,
    /// The callback's query string.
    pub query: Option<&'a str>,
    /// The browser's mark ([`browser_mark`]), if it carries one.
    pub browser: Option<BrowserMark>,
    /// The request's time.
    pub now: u64,
}

// === impl StepUps ===

impl StepUps {
    /// Empty state.
    pub fn new() -> Self {
        Self {
            // Least recently used goes first: moka's default (TinyLFU)
            // admits a new entry only if it is read more often than the
            // one it would evict, and pending step-ups are read once, so a
            // full cache would refuse every new one.
            pending: moka::sync::Cache::builder()
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .weigher(|state: &String, p: &Arc<Pending>| {
                    u32::try_from(state.len() + p.weight()).unwrap_or(u32::MAX)
                })
                .max_capacity(MAX_PENDING_BYTES)
                .time_to_live(PENDING_CEILING)
                .build(),
            passed: moka::sync::Cache::builder()
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .max_capacity(MAX_TRACKED)
                .time_to_live(PENDING_CEILING)
                .build(),
            link_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &rand::random::<[u8; 32]>()),
            // Held as long as a step-up started from a link can be
            // answered: the link's lifetime, then the longest pending.
            disputes_passed: moka::sync::Cache::builder()
                .max_capacity(MAX_TRACKED)
                .time_to_live(LINK_LIFETIME + PENDING_CEILING)
                .build(),
            per_session: Limiter::new(MAX_TRACKED),
            starts_per_client: Limiter::new(MAX_TRACKED),
            callbacks_per_client: Limiter::new(MAX_TRACKED),
            provider: idp::Cache::default(),
        }
    }

    /// Whether this session or client network has used up its minute of
    /// starts.
    fn start_limited(&self, oidc: &Oidc, session: SessionKey, client: IpAddr) -> bool {
        let by_client = self
            .starts_per_client
            .hit(network(client), oidc.per_client_per_minute);
        let by_session = self.per_session.hit(session, oidc.per_session_per_minute);
        by_client || by_session
    }

    /// Starts a step-up for the request `verdict` judged: the URL of the
    /// provider to send the browser to, or why not.
    pub async fn start(&self, oidc: &Arc<Oidc>, verdict: &Verdict, start: &Start<'_>) -> Outcome {
        let Some(session) = verdict.session.filter(|_| verdict.credentials == 1) else {
            return Outcome::Refuse(Problem::NoSession);
        };
        if self.start_limited(oidc, session.key, verdict.client.addr) {
            return Outcome::Refuse(Problem::RateLimited);
        }
        self.send(oidc, session.key, start, safe_target(start.target), None)
            .await
    }

    /// The "it was me" link for the block `reference` of `holder`,
    /// answered at `callback_path`: a relative URL carrying when it
    /// expires, the block's reference, the page to return to and a MAC
    /// over those, the session, its device and the route under this
    /// process's key. It names no session (the browser's own cookie does)
    /// and is good for no other session, device, route or block.
    pub fn dispute_link(
        &self,
        callback_path: &str,
        holder: LinkFor<'_>,
        reference: Reference,
        target: &str,
        now: u64,
    ) -> String {
        let expires = now.saturating_add(LINK_LIFETIME.as_secs());
        let target = safe_target(target);
        let message = Self::link_message(holder, reference, expires, &target);
        let tag = ring::hmac::sign(&self.link_key, &message);
        format!(
            "{callback_path}?{LINK_PARAM}={expires}.{reference}.{}.{}",
            URL_SAFE_NO_PAD.encode(target.as_bytes()),
            URL_SAFE_NO_PAD.encode(tag.as_ref()),
        )
    }

    /// What an "it was me" link's MAC covers: its purpose, the session,
    /// its device, the route, the block, when it expires and the page to
    /// return to.
    fn link_message(
        holder: LinkFor<'_>,
        reference: Reference,
        expires: u64,
        target: &str,
    ) -> Vec<u8> {
        let route = holder.route;
        let mut out = Vec::with_capacity(LINK_CONTEXT.len() + 72 + route.len() + target.len());
        out.extend_from_slice(LINK_CONTEXT);
        out.extend_from_slice(holder.session.as_bytes());
        out.extend_from_slice(&holder.device.0.to_be_bytes());
        out.extend_from_slice(&holder.browser);
        // Lengths first: no two field lists read as the same bytes.
        out.extend_from_slice(&(route.len() as u64).to_be_bytes());
        out.extend_from_slice(route.as_bytes());
        out.extend_from_slice(&reference.0.to_be_bytes());
        out.extend_from_slice(&expires.to_be_bytes());
        out.extend_from_slice(target.as_bytes());
        out
    }

    /// The block and the page an "it was me" link `token` names, when it
    /// is `holder`'s, unaltered and unexpired.
    fn dispute_of(
        &self,
        token: &str,
        holder: LinkFor<'_>,
        now: u64,
    ) -> Option<(Reference, String)> {
        let mut parts = token.split('.');
        let (expires, reference, target, tag) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        // Digits only: `+1` or leading zeros would be other spellings of
        // one link.
        let digits =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && !s.starts_with('0');
        if !digits(expires) {
            return None;
        }
        let expires: u64 = expires.parse().ok()?;
        if now > expires || expires > now.saturating_add(LINK_LIFETIME.as_secs()) {
            return None;
        }
        if reference.len() != 16
            || !reference
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return None;
        }
        let reference = Reference(u64::from_str_radix(reference, 16).ok()?);
        let target = String::from_utf8(URL_SAFE_NO_PAD.decode(target).ok()?).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        // Checked over the bytes as sent (in constant time), then the
        // target must be one this node would have put in a link.
        let message = Self::link_message(holder, reference, expires, &target);
        ring::hmac::verify(&self.link_key, &message, &tag).ok()?;
        (safe_target(&target) == target).then_some((reference, target))
    }

    /// Starts the step-up that answers an "it was me" link (`token`, from
    /// the callback path's query) for the request `verdict` judged: the
    /// block it names is disputed, and a pass labels it with the user's
    /// word. Refused unless the link is this session's and device's, on
    /// this route, unaltered, unexpired and unspent, and the block is one
    /// a step-up may answer ([`disputable`]). A link that fails spends
    /// only its client network's budget of starts, never the session's:
    /// a thief holding the cookie cannot lock the owner out of step-ups
    /// with made-up links.
    pub async fn dispute(
        &self,
        oidc: &Arc<Oidc>,
        verdict: &Verdict,
        start: &Start<'_>,
        token: &str,
        browser: Option<BrowserMark>,
    ) -> Outcome {
        let Some(session) = verdict.session.filter(|_| verdict.credentials == 1) else {
            return Outcome::Refuse(Problem::NoSession);
        };
        if self
            .starts_per_client
            .hit(network(verdict.client.addr), oidc.per_client_per_minute)
        {
            return Outcome::Refuse(Problem::RateLimited);
        }
        let Some(browser) = browser else {
            return Outcome::Refuse(Problem::LinkInvalid);
        };
        let holder = LinkFor {
            route: start.route,
            session: session.key,
            device: verdict.device.id,
            browser,
        };
        let Some((reference, target)) = self.dispute_of(token, holder, start.now) else {
            return Outcome::Refuse(Problem::LinkInvalid);
        };
        if self.disputes_passed.contains_key(&reference) {
            return Outcome::Refuse(Problem::LinkInvalid);
        }
        if self
            .per_session
            .hit(session.key, oidc.per_session_per_minute)
        {
            return Outcome::Refuse(Problem::RateLimited);
        }
        if !disputable(verdict) {
            return Outcome::Refuse(Problem::Refused);
        }
        let disputed = Disputed {
            reference,
            device: verdict.device.id,
            browser,
        };
        self.send(oidc, session.key, start, target, Some(disputed))
            .await
    }

    /// Sends `session` to the provider, to return to `target`.
    async fn send(
        &self,
        oidc: &Arc<Oidc>,
        session: SessionKey,
        start: &Start<'_>,
        target: String,
        disputed: Option<Disputed>,
    ) -> Outcome {
        let Some(authority) = plain_authority(start.authority) else {
            return Outcome::Refuse(Problem::BadHost);
        };
        if let Some(p) = self.passed.get(&session)
            && p.target == target
            && start.now.saturating_sub(p.at) < oidc.loop_window.as_secs()
        {
            return Outcome::Refuse(Problem::Loop);
        }
        let provider = match self.provider.get(oidc).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(target: LOG_TARGET, issuer = %oidc.issuer, error = %e, "identity provider unavailable");
                return Outcome::Refuse(Problem::Unavailable);
            }
        };
        let redirect_uri = format!("{}://{authority}{}", start.scheme, start.callback_path);
        let acr_values: Vec<String> = start
            .acr_values
            .map(|a| a.split_ascii_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        let request = match provider.authorize(&redirect_uri, &acr_values, start.max_age) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(target: LOG_TARGET, error = %e, redirect_uri, "step-up not sent");
                return Outcome::Refuse(Problem::Unavailable);
            }
        };
        self.pending.insert(
            request.state,
            Arc::new(Pending {
                session,
                route: start.route.to_owned(),
                issuer: oidc.issuer.clone(),
                redirect_uri,
                verifier: request.verifier,
                nonce: request.nonce,
                target,
                sent_at: start.now,
                acr_values,
                max_age: start.max_age,
                disputed,
            }),
        );
        Outcome::Redirect(request.url)
    }

    /// Takes the provider's answer at a callback path: `query` is the
    /// request's query string, `verdict` the callback request's own
    /// verdict on `route`. On success the session is confirmed through
    /// `engine`, and the outcome is the page to return to.
    pub async fn callback(
        &self,
        oidc: &Arc<Oidc>,
        engine: &Engine,
        returned: Returned<'_>,
        verdict: &Verdict,
    ) -> Outcome {
        let Returned {
            route,
            query,
            browser,
            now,
        } = returned;
        let session = verdict.session.filter(|_| verdict.credentials == 1);
        if self
            .callbacks_per_client
            .hit(network(verdict.client.addr), oidc.per_client_per_minute)
        {
            return Outcome::Refuse(Problem::RateLimited);
        }
        let Some(params) = Callback::parse(query.unwrap_or("")) else {
            return Outcome::Refuse(Problem::BadCallback);
        };
        // Taken, not read: a callback is good once, whatever follows.
        let Some(pending) = params.state.as_deref().and_then(|s| self.pending.remove(s)) else {
            return Outcome::Refuse(Problem::StateUnknown);
        };
        if now.saturating_sub(pending.sent_at) > oidc.pending.as_secs()
            || pending.route != route
            || pending.issuer != oidc.issuer
        {
            return Outcome::Refuse(Problem::StateUnknown);
        }
        let Some(session) = session.filter(|s| s.key == pending.session) else {
            return Outcome::Refuse(Problem::SessionMismatch);
        };
        // RFC 9207: a provider that names itself must be ours.
        if params.iss.as_deref().is_some_and(|iss| iss != oidc.issuer) {
            return Outcome::Refuse(Problem::TokenInvalid);
        }
        if let Some(error) = &params.error {
            tracing::info!(target: LOG_TARGET, session = %session.key.short(), error = %sanitised(error), "provider refused the step-up");
            return Outcome::Refuse(Problem::ProviderError);
        }
        let Some(code) = params.code else {
            return Outcome::Refuse(Problem::BadCallback);
        };
        let provider = match self.provider.get(oidc).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(target: LOG_TARGET, issuer = %oidc.issuer, error = %e, "identity provider unavailable");
                return Outcome::Refuse(Problem::Unavailable);
            }
        };
        let skew = oidc.clock_skew.as_secs();
        let not_before = pending.sent_at.saturating_sub(skew);
        let claims = match self
            .provider
            .exchange(
                &provider,
                oidc,
                &code,
                &pending.redirect_uri,
                &pending.verifier,
                &Nonce::new(pending.nonce.clone()),
                not_before,
            )
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::info!(target: LOG_TARGET, session = %session.key.short(), error = %e, "step-up token refused");
                return Outcome::Refuse(e.problem());
            }
        };
        // A fresh sign-in: after Vigil sent the user. Without this, a
        // provider session (perhaps stolen along with the app's cookie)
        // could answer silently; `prompt=login` is only a request.
        if oidc.require_auth_time
            && claims
                .auth_time
                .is_none_or(|t| t.saturating_add(skew) < pending.sent_at)
        {
            return Outcome::Refuse(Problem::NotFresh);
        }
        if let Some(max_age) = pending.max_age {
            let fresh = claims
                .auth_time
                .is_some_and(|t| t.saturating_add(u64::from(max_age)).saturating_add(skew) >= now);
            if !fresh {
                return Outcome::Refuse(Problem::Insufficient);
            }
        }
        if !pending.acr_values.is_empty()
            && !claims
                .acr
                .as_ref()
                .is_some_and(|acr| pending.acr_values.contains(acr))
        {
            return Outcome::Refuse(Problem::Insufficient);
        }
        let Some(name) = claims.user(oidc.user_claim) else {
            return Outcome::Refuse(Problem::TokenInvalid);
        };
        let Some(user) = verdict.user else {
            return Outcome::Refuse(Problem::UnknownUser);
        };
        let signed_in: UserKey = engine.user_key(name);
        if signed_in != user {
            tracing::warn!(target: LOG_TARGET, session = %session.key.short(), "someone else signed in at the step-up of this session");
            return Outcome::Refuse(Problem::WrongUser);
        }
        // The callback is a request like any: a session the engine would
        // block or has revoked does not pass by signing in — unless the
        // user disputed that block themselves ("it was me"), which is what
        // the step-up answers; a revoked or ended session never passes.
        let passable = match verdict.action {
            Action::Allow | Action::StepUp => true,
            Action::Block => pending.disputed.is_some() && disputable(verdict),
            _ => false,
        };
        if !passable {
            return Outcome::Refuse(Problem::Refused);
        }
        // A dispute is answered from the device that was blocked (the
        // owner signing in for a link the thief passed on confirms
        // nothing under it), and once: of two step-ups started from one
        // link, the first to pass spends it (a claim given back if the
        // engine then confirms nothing).
        if let Some(d) = pending.disputed {
            let same_browser = browser == Some(d.browser);
            if verdict.device.id != d.device || !same_browser {
                return Outcome::Refuse(Problem::Refused);
            }
            let first = self
                .disputes_passed
                .entry(d.reference)
                .or_insert_with(|| ())
                .is_fresh();
            if !first {
                return Outcome::Refuse(Problem::LinkInvalid);
            }
        }
        let confirmed = match pending.disputed {
            Some(d) => engine.confirm_disputed(verdict, d.reference),
            None => engine.confirm(verdict),
        };
        if !confirmed {
            if let Some(d) = pending.disputed {
                self.disputes_passed.invalidate(&d.reference);
            }
            return Outcome::Refuse(Problem::Refused);
        }
        // The provider's session, for its logout to end this one (hashed
        // in the engine; the raw `sid` is neither kept nor logged).
        let sid_learnt = claims
            .sid
            .as_deref()
            .is_some_and(|sid| engine.learn_idp_session(session.key, &oidc.issuer, sid, now));
        tracing::info!(
            target: LOG_TARGET,
            session = %session.key.short(),
            route,
            sid_learnt,
            acr = claims.acr.as_deref().unwrap_or(""),
            amr = %claims.amr.join(" "),
            auth_time = claims.auth_time.unwrap_or(0),
            disputed = %pending.disputed.map(|d| d.reference.to_string()).unwrap_or_default(),
            "step-up passed"
        );
        self.passed.insert(
            session.key,
            Passed {
                at: now,
                target: pending.target.clone(),
            },
        );
        Outcome::Redirect(pending.target.clone())
    }

    /// Counts an outcome.
    pub fn count(metrics: &Metrics, stage: &str, outcome: &Outcome) {
        let label = match outcome {
            Outcome::Redirect(_) if stage != "callback" => "sent",
            Outcome::Redirect(_) => "passed",
            Outcome::Refuse(p) => p.code(),
        };
        metrics.step_ups.with_label_values(&[stage, label]).inc();
    }
}

/// The callback's parameters: each at most once, or the query is refused
/// (a duplicate is a client choosing which value counts).
#[derive(Debug, Default, PartialEq, Eq)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    iss: Option<String>,
}

impl Callback {
    fn parse(query: &str) -> Option<Callback> {
        if query.len() > MAX_QUERY_BYTES {
            return None;
        }
        let mut out = Callback::default();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match name.as_ref() {
                "code" => &mut out.code,
                "state" => &mut out.state,
                "error" => &mut out.error,
                "iss" => &mut out.iss,
                _ => continue,
            };
            if slot.is_some() || value.is_empty() || value.len() > 2_048 {
                return None;
            }
            *slot = Some(value.into_owned());
        }
        Some(out)
    }
}

/// Whether a step-up may answer this verdict's block ("it was me"): a
/// block the risk score decided, which a sign-in as the owner answers.
/// Not a session ended (revoked, here or by the fleet), which signing in
/// never restores; not a block an operator's rule decided (policy, not a
/// guess about who holds the session); not a partner's report of
/// compromise, nor a binding's evidence that two parties hold the cookie
/// (a reused, missing or invalid companion): evidence a sign-in does not
/// answer.
pub fn disputable(verdict: &Verdict) -> bool {
    verdict.action != Action::Revoke
        && verdict.ruling.rule.is_none()
        && !verdict.risk.reasons.iter().any(|c| {
            c.reason.is_final()
                || matches!(
                    c.reason,
                    Reason::PartnerReported
                        | Reason::BindingReused
                        | Reason::BindingMissing
                        | Reason::BindingInvalid
                )
        })
}

/// The browser's mark: its [`BROWSER_COOKIE`], when the request carries it
/// exactly once (over every `Cookie` header) as 32 lower-case hex digits.
/// Twice is none: a client does not choose which counts.
pub fn browser_mark(headers: &http::HeaderMap) -> Option<BrowserMark> {
    let mut found = None;
    for header in headers.get_all(http::header::COOKIE) {
        let Ok(text) = header.to_str() else {
            continue;
        };
        for pair in text.split(';') {
            let Some((name, value)) = pair.trim().split_once('=') else {
                continue;
            };
            if name != BROWSER_COOKIE {
                continue;
            }
            if found.is_some() {
                return None;
            }
            found = Some(value);
        }
    }
    let value = found?;
    if value.len() != 32
        || !value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let mut mark = [0u8; 16];
    hex::decode_to_slice(value, &mut mark).ok()?;
    Some(mark)
}

/// The `Set-Cookie` value that gives a browser `mark`, on `callback_path`
/// only, for an "it was me" link's lifetime.
pub fn browser_cookie(mark: &BrowserMark, callback_path: &str, secure: bool) -> String {
    format!(
        "{BROWSER_COOKIE}={}; Path={callback_path}; Max-Age={}; HttpOnly; SameSite=Lax{}",
        hex::encode(mark),
        LINK_LIFETIME.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The token of an "it was me" link when `query` carries one: the
/// parameter's value when it is there once and nothing of a provider's
/// answer is, an empty token (never valid) when it is there otherwise.
/// `None` when the query is a provider's answer.
pub fn dispute_token(query: Option<&str>) -> Option<String> {
    let query = query?;
    if query.len() > MAX_QUERY_BYTES {
        return None;
    }
    let mut token: Option<String> = None;
    let mut seen = 0usize;
    let mut other = false;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            LINK_PARAM => {
                seen += 1;
                token = Some(value.into_owned());
            }
            "code" | "state" | "error" | "iss" => other = true,
            _ => {}
        }
    }
    match (seen, other) {
        (0, _) => None,
        (1, false) => token,
        _ => Some(String::new()),
    }
}

/// The page to return to: the request's own path and query when it is a
/// plain relative URL on this host, `/` otherwise. Never `//host` or
/// `/\host`, which browsers read as another host.
fn safe_target(target: &str) -> String {
    let ok = target.starts_with('/')
        && !target.starts_with("//")
        && !target.starts_with("/\\")
        && target.len() <= MAX_TARGET_BYTES
        && target.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        target.to_owned()
    } else {
        "/".to_owned()
    }
}

/// The `Host` a browser used when it is a plain `host[:port]`: a DNS name
/// or IP literal and a port of digits, nothing else (no user info, path or
/// query, which would move the callback elsewhere), at most 255 bytes.
fn plain_authority(authority: &str) -> Option<&str> {
    if authority.is_empty() || authority.len() > 255 {
        return None;
    }
    let (host_ok, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let (v6, after) = rest.split_once(']')?;
            let port = match after {
                "" => None,
                after => Some(after.strip_prefix(':')?),
            };
            (v6.parse::<std::net::Ipv6Addr>().is_ok(), port)
        }
        None => {
            let (host, port) = match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            let ok = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            (ok, port)
        }
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    (host_ok && port_ok).then_some(authority)
}

/// The network a client address is counted under: the address itself for
/// IPv4, its /64 for IPv6 (one subscriber's usual share, which it can
/// otherwise rotate through freely).
fn network(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::V6(std::net::Ipv6Addr::from(octets))
        }
    }
}

/// A provider's error code as logged: its first 64 characters of
/// `[A-Za-z0-9_.-]`.
fn sanitised(error: &str) -> String {
    error
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        .take(64)
        .collect()
}

/// What Vigil reads from a verified ID token.
#[derive(Debug, Clone, Default)]
pub struct Claims {
    /// `sub`.
    pub sub: String,
    /// `email`, when present and `email_verified` is true: an unverified
    /// address is whatever the account's holder typed.
    pub email: Option<String>,
    /// `acr`, when present.
    pub acr: Option<String>,
    /// `amr`, possibly empty.
    pub amr: Vec<String>,
    /// `auth_time`, when present (Unix seconds).
    pub auth_time: Option<u64>,
    /// `sid`, the provider's session, when present and a plain string
    /// (at most [`vigil_engine::MAX_SID_BYTES`] visible ASCII characters).
    pub sid: Option<String>,
}

impl Claims {
    /// The user the token names by `claim`, as Vigil takes a user name,
    /// and exactly so: a name that Vigil would trim (`"victim\u{a0}"`, an
    /// account the provider holds apart from `victim`) names nobody.
    fn user(&self, claim: UserClaim) -> Option<&str> {
        let raw = match claim {
            UserClaim::Sub => Some(self.sub.as_str()),
            UserClaim::Email => self.email.as_deref(),
        };
        raw.filter(|r| vigil_engine::valid_user_name(r) == Some(*r))
    }
}
