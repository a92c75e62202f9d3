//! Every answer Vigil gives in place of the app, built in one place
//! (STYLE.md 6 and 20): each [`Refusal`] and each [`Failure`] maps to
//! exactly one [`Answer`], and one renderer writes it — an HTML page for
//! people or JSON for programs, chosen by the request's `Accept` ([`Format`]),
//! always with `Vigil-Reference`, `Cache-Control: no-store` and the same
//! reference id in the body and in a log record.
//!
//! The log record of a decision (block, step-up, revoke, ended session) is
//! the decision's own, target `vigil::decision`. Every other answer, and
//! every failure that could no longer be answered, gets one record with
//! target [`LOG_TARGET`].
//!
//! One thing is answered before any of Vigil's code runs: a request whose
//! head is not HTTP (an invalid request line or header line) gets Pingora's
//! bare `400` with no body and no reference, because Pingora refuses it while
//! reading it, before it calls any `ProxyHttp` phase. See
//! `docs/answers.md`.

use bytes::Bytes;
use http::{HeaderMap, StatusCode, header::ACCEPT};
use pingora_error::{Error, ErrorSource, ErrorType};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use crate::metrics::Metrics;

/// Target of the log record of every answer that is not a decision, and of
/// every failure (answered or not): `vigil::error`.
pub const LOG_TARGET: &str = "vigil::error";

/// At most this many media ranges of `Accept` are read; the rest are
/// ignored, so a hostile header costs a bounded amount of work.
const MAX_MEDIA_RANGES: usize = 32;

/// A refused request's body up to this size (by its `Content-Length`) is
/// read and dropped so that its connection can carry the client's next
/// request; a larger one closes the connection unread.
const DRAIN_MAX_BYTES: u64 = 64 * 1024;

/// How long reading that body may take before the connection is closed
/// instead: a client dripping its body holds nothing longer than this.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Why Vigil answers a request itself instead of forwarding it.
#[derive(Debug, Clone, Copy)]
pub enum Refusal<'a> {
    /// No route matches the host and path.
    NoRoute,
    /// The request's header section is larger than `limits.max_header_bytes`.
    HeadersTooLarge,
    /// The engine could not evaluate the request and the route fails closed.
    Malformed {
        /// The error's stable code.
        code: &'static str,
    },
    /// The request's path has no single meaning (`docs/security.md`,
    /// Paths): `400` with error `bad_path` and the reason, `ambiguous_path`
    /// or `nul_in_path`.
    Path {
        /// The reason's stable code.
        code: &'static str,
    },
    /// The route refuses while this node's fleet state is older than its
    /// `stale_after` (`on_stale = "fail_closed"`): `503 fleet_stale`, with
    /// `retry-after` (`docs/controller.md`, Edge node).
    FleetStale,
    /// The session has too many requests open at once (or the node's
    /// registry of them is full): `429 too_many_open_requests`, with
    /// `retry-after`. Served unfiled, the request would outlive a
    /// revocation (`docs/security.md`, Open connections after a revocation).
    TooManyOpen,
    /// The request names a host that the certificate its TLS connection
    /// was given does not cover: `421 misdirected_request`
    /// (`docs/security.md`, Hosts and certificates).
    Misdirected,
    /// A device-bound session without a valid proof of its key:
    /// `403 dbsc_proof_failed`, with the session's refresh challenge when
    /// it is bound (`docs/bound-sessions.md`, DBSC at the edge).
    DbscProofFailed {
        /// The `Secure-Session-Challenge` value, when there is one.
        challenge: Option<&'a str>,
    },
    /// The DBSC store could not be read (a poisoned lock: a bug):
    /// `503 dbsc_unavailable`, with `retry-after`. Not a `403`: the
    /// browser would ask for a challenge for a session Vigil cannot name,
    /// and a `4xx` at refresh ends its DBSC session.
    DbscUnavailable,
    /// The decision was `block`.
    Blocked {
        /// The decision's reference id.
        reference: &'a str,
        /// The "it was me" link, when the route offers one to this
        /// session (`it_was_me`, `docs/step-up.md`): JSON's `it_was_me_url`.
        it_was_me: Option<&'a str>,
        /// The `Set-Cookie` value marking the browser the link is for.
        set_cookie: Option<&'a str>,
    },
    /// The session was revoked earlier.
    SessionEnded {
        /// The decision's reference id.
        reference: &'a str,
        /// Where to sign in again.
        login_url: Option<&'a str>,
    },
    /// The decision was `step_up`.
    StepUp {
        /// The decision's reference id.
        reference: &'a str,
        /// Where browsers re-authenticate.
        url: &'a str,
        /// The session came as a bearer token: answer as an API (RFC 9470).
        bearer: bool,
        /// The authentication context classes the rule asks for (RFC 9470
        /// `acr_values`; checked printable ASCII without quotes at load).
        acr_values: Option<&'a str>,
        /// The most seconds since the user's authentication (RFC 9470
        /// `max_age`).
        max_age: Option<u32>,
    },
    /// A step-up at the identity provider was refused, at its start or at
    /// its callback (`docs/step-up.md`).
    StepUpRefused {
        /// Why.
        problem: crate::stepup::Problem,
        /// Where to sign in afresh, offered when the session's user is not
        /// known.
        login_url: Option<&'a str>,
    },
    /// A step-up passed: back to the page the user asked for.
    StepUpPassed {
        /// The reference logged with the pass.
        reference: &'a str,
        /// The page: a relative URL on this host.
        url: &'a str,
        /// `Set-Cookie` values to send with it: the binding's next
        /// generation, issued on the passed step-up.
        cookies: &'a [String],
    },
    /// The decision was `revoke`: the session has just been ended.
    Revoked {
        /// The decision's reference id.
        reference: &'a str,
        /// Where to sign in again.
        login_url: &'a str,
        /// The session cookie to clear in the browser, if it was a cookie.
        cookie: Option<&'a str>,
    },
}

/// Why a request Vigil forwarded could not be completed, as the client is
/// told: Pingora's error reduced by [`Failure::of`], the one mapping from
/// error to status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The client's request broke HTTP after its head was read (a bad body
    /// framing, say): `400 bad_request`.
    BadRequest,
    /// The client stopped sending its request: `408 request_timeout`.
    RequestTimeout,
    /// The client is gone (reset, closed, not reading): nothing can be
    /// answered. `client_gone`.
    ClientGone,
    /// No upstream address could be reached: none healthy, connection
    /// refused, no route, TLS to the app failed: `502 upstream_unavailable`.
    UpstreamUnavailable,
    /// The upstream did not accept the connection, or answer, within its
    /// `connect_timeout_ms`/`read_timeout_ms`: `504 upstream_timeout`.
    UpstreamTimeout,
    /// The upstream closed or reset the connection: `502 upstream_closed`.
    UpstreamClosed,
    /// The upstream answered with something that is not HTTP:
    /// `502 bad_upstream_response`.
    BadUpstreamResponse,
    /// Any other upstream error: `502 upstream_error`.
    UpstreamError,
    /// Vigil itself failed: `500 internal_error`.
    Internal,
    /// A phase asked for this status explicitly (Pingora's `HTTPStatus`):
    /// `http_status`. Vigil's phases do for a request a revocation ended
    /// while it was in flight (`401`, see [`crate::open_requests`]).
    Status(StatusCode),
}

/// How the client wants to be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A page, for people: the default.
    Html,
    /// `application/json`, for programs that ask for JSON.
    Json,
}

/// Where a failure happened, for its log record.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    /// The matched route's name.
    pub route: Option<&'a str>,
    /// The route's upstream group.
    pub upstream: Option<&'a str>,
}

/// One answer before it is rendered: what the page and the JSON both say.
#[derive(Debug)]
struct Answer<'a> {
    status: StatusCode,
    /// Stable and machine-readable: JSON's `error`.
    code: &'static str,
    title: &'static str,
    message: &'static str,
    reference: &'a str,
    /// Where to go next: JSON key, URL, and the link's text in the page.
    link: Option<(&'static str, &'a str, &'static str)>,
    /// The engine's error code behind a malformed request: JSON's `reason`.
    reason: Option<&'static str>,
    /// Headers beside the ones every answer has.
    headers: Vec<(&'static str, String)>,
}

/// A fresh random id that ties an answer to its log record, in the one
/// form every reference takes (a decision's too).
pub(crate) fn new_reference() -> vigil_engine::Reference {
    vigil_engine::Reference(rand::random())
}

fn reference() -> String {
    new_reference().to_string()
}

/// Writes the response for `refusal` and ends the exchange. A refusal that
/// is not a decision gets a fresh reference, logged here. The connection
/// stays open for the client's next request when this one's end is known
/// for certain ([`reusable_after_answer`]); otherwise the answer says
/// `Connection: close` and the connection closes.
///
/// The answer's own future is boxed: refusals are the rare path, and held
/// inline it would add its size (over a kilobyte) to every caller's future,
/// so to the request filter's, which Pingora copies into a box of its own
/// on every request (docs/performance.md, "The request filter's future").
pub async fn send(session: &mut Session, refusal: Refusal<'_>) -> pingora_error::Result<()> {
    Box::pin(write_refusal(session, refusal)).await
}

async fn write_refusal(session: &mut Session, refusal: Refusal<'_>) -> pingora_error::Result<()> {
    if !reusable_after_answer(session).await {
        session.set_keepalive(None);
    }
    let format = Format::of(&session.req_header().headers);
    let own;
    let reference = match refusal.reference() {
        Some(r) => r,
        None => {
            own = reference();
            &own
        }
    };
    let answer = refusal.answer(reference);
    let written = write(session, &answer, format).await;
    // Logged once written, with whether it was: a decision's refusal is
    // logged with its facts by the decision log instead.
    if refusal.reference().is_none() {
        tracing::info!(
            target: LOG_TARGET,
            reference,
            code = answer.code,
            status = answer.status.as_u16(),
            answered = written.is_ok(),
            "request refused"
        );
    }
    written
}

/// Answers a request Pingora could not complete (`fail_to_proxy`) with its
/// [`Failure`]'s page or JSON and a fresh reference — unless the response
/// has already begun (its head was sent: the client sees a cut-short body)
/// or the client is gone, when nothing can be said. Either way one log
/// record and `vigil_proxy_failures_total` tell of it.
///
/// Returns the status written, 0 when nothing was.
pub async fn fail(session: &mut Session, e: &Error, scope: Scope<'_>, metrics: &Metrics) -> u16 {
    let failure = Failure::of(e);
    let reference = reference();
    let started = session.response_written().is_some();
    let mut status = 0;
    if let Some(s) = failure.status().filter(|_| !started) {
        // Pingora does not reuse a connection after a failure
        // (`can_reuse_downstream: false`); the answer says so.
        session.set_keepalive(None);
        let format = Format::of(&session.req_header().headers);
        match write(session, &failure.answer(&reference), format).await {
            Ok(()) => status = s.as_u16(),
            Err(w) => {
                tracing::debug!(target: LOG_TARGET, reference = %reference, error = %w, "answer not written")
            }
        }
    }
    let answered = status != 0;
    metrics
        .failures
        .with_label_values(&[failure.code(), if answered { "true" } else { "false" }])
        .inc();

    // A downstream error's text may quote what the client sent; the kind is
    // enough there. An upstream error's text names the peer, which helps.
    let detail = match e.esource() {
        ErrorSource::Downstream => String::new(),
        _ => e.to_string(),
    };
    macro_rules! record {
        ($level:ident) => {
            tracing::$level!(
                target: LOG_TARGET,
                reference = %reference,
                code = failure.code(),
                status,
                answered,
                response_started = started,
                route = scope.route.unwrap_or(""),
                upstream = scope.upstream.unwrap_or(""),
                kind = e.etype().as_str(),
                side = e.esource().as_str(),
                detail = %detail,
                "request failed"
            )
        };
    }
    match failure {
        // An operator should look: the app is down, slow or broken, or Vigil is.
        Failure::UpstreamUnavailable
        | Failure::UpstreamTimeout
        | Failure::UpstreamClosed
        | Failure::BadUpstreamResponse
        | Failure::UpstreamError
        | Failure::Internal => record!(warn),
        // Nobody saw a reference; nobody will ask about it.
        Failure::ClientGone => record!(debug),
        Failure::BadRequest | Failure::RequestTimeout | Failure::Status(_) => record!(info),
    }
    status
}

/// Whether a request Vigil answers itself leaves its HTTP/1 connection
/// ready for the next request. Only when the request's framing is beyond
/// doubt and its body is read to the end: none, already read, or a
/// `Content-Length` of at most [`DRAIN_MAX_BYTES`] read (and dropped) here
/// within [`DRAIN_TIMEOUT`]. Any `Transfer-Encoding`, a repeated or
/// unparsable `Content-Length`, or `Expect: 100-continue` (the client may
/// or may not send the body it announced) close the connection: a body
/// left unread or read differently from the client's intent would be taken
/// for the next request — request smuggling. Bytes sent after the body
/// (pipelining) close it too: Pingora does not reuse a connection that
/// read past a request's end. Connection reuse of HTTP/1.0 and
/// `Connection: close` stay as the client asked (Pingora's).
/// An HTTP/2 stream ends on its own; its connection is not at stake.
async fn reusable_after_answer(session: &mut Session) -> bool {
    if session.is_http2() {
        return true;
    }
    let headers = &session.req_header().headers;
    let Some(length) = request_length(headers) else {
        return false;
    };
    let expects_continue = headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if session.is_body_done() {
        return true;
    }
    if length > DRAIN_MAX_BYTES || expects_continue {
        return false;
    }
    matches!(
        tokio::time::timeout(DRAIN_TIMEOUT, session.drain_request_body()).await,
        Ok(Ok(()))
    )
}

/// The request body's length when its framing is a single, plain
/// `Content-Length` or nothing (no body); `None` for anything else.
fn request_length(headers: &HeaderMap) -> Option<u64> {
    if headers.contains_key(http::header::TRANSFER_ENCODING) {
        return None;
    }
    let mut lengths = headers.get_all(http::header::CONTENT_LENGTH).iter();
    match (lengths.next(), lengths.next()) {
        (None, _) => Some(0),
        (Some(v), None) => {
            let digits = v.as_bytes();
            // Digits only: no sign, no spaces, no list ("5, 5"), and short
            // enough not to overflow.
            if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            std::str::from_utf8(digits).ok()?.parse().ok()
        }
        _ => None,
    }
}

/// Renders `answer` in `format` and writes it as the whole response.
async fn write(
    session: &mut Session,
    answer: &Answer<'_>,
    format: Format,
) -> pingora_error::Result<()> {
    let (content_type, body) = match format {
        Format::Html => ("text/html; charset=utf-8", answer.html()),
        Format::Json => ("application/json", answer.json()),
    };
    let mut resp = ResponseHeader::build(answer.status, Some(answer.headers.len() + 6))?;
    for (name, value) in &answer.headers {
        resp.append_header(*name, value.as_str())?;
    }
    resp.append_header("vigil-reference", answer.reference)?;
    resp.append_header("content-type", content_type)?;
    resp.append_header("cache-control", "no-store")?;
    // The body depends on Accept.
    resp.append_header("vary", "accept")?;
    resp.append_header("content-length", body.len().to_string())?;
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await?;
    Ok(())
}

// === impl Refusal ===

impl<'a> Refusal<'a> {
    /// The decision's reference, when the refusal is a decision's.
    fn reference(&self) -> Option<&'a str> {
        match *self {
            Refusal::NoRoute
            | Refusal::HeadersTooLarge
            | Refusal::Malformed { .. }
            | Refusal::Path { .. }
            | Refusal::Misdirected
            | Refusal::FleetStale
            | Refusal::TooManyOpen
            | Refusal::DbscProofFailed { .. }
            | Refusal::DbscUnavailable
            | Refusal::StepUpRefused { .. } => None,
            Refusal::StepUpPassed { reference, .. } => Some(reference),
            Refusal::Blocked { reference, .. }
            | Refusal::SessionEnded { reference, .. }
            | Refusal::StepUp { reference, .. }
            | Refusal::Revoked { reference, .. } => Some(reference),
        }
    }

    fn answer(self, reference: &'a str) -> Answer<'a> {
        let plain = |status: StatusCode,
                     code: &'static str,
                     title: &'static str,
                     message: &'static str| Answer {
            status,
            code,
            title,
            message,
            reference,
            link: None,
            reason: None,
            headers: Vec::new(),
        };
        match self {
            Refusal::NoRoute => plain(
                StatusCode::NOT_FOUND,
                "no_route",
                "Not found",
                "No application is served at this address.",
            ),
            Refusal::HeadersTooLarge => plain(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                "Request headers too large",
                "The request's headers are larger than this server accepts.",
            ),
            Refusal::Malformed { code } => Answer {
                reason: Some(code),
                ..plain(
                    StatusCode::BAD_REQUEST,
                    "malformed_request",
                    "Bad request",
                    "The request could not be read.",
                )
            },
            Refusal::Path { code } => Answer {
                reason: Some(code),
                ..plain(
                    StatusCode::BAD_REQUEST,
                    "bad_path",
                    "Bad request",
                    "The request's path can be read in more than one way.",
                )
            },
            Refusal::FleetStale => Answer {
                headers: vec![("retry-after", "5".to_owned())],
                ..plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "fleet_stale",
                    "Temporarily unavailable",
                    "This server cannot confirm right now that sessions are still valid. Try again shortly.",
                )
            },
            Refusal::TooManyOpen => Answer {
                headers: vec![("retry-after", "5".to_owned())],
                ..plain(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_open_requests",
                    "Too many requests",
                    "This session has too many requests open at once. Try again shortly.",
                )
            },
            Refusal::Misdirected => plain(
                StatusCode::MISDIRECTED_REQUEST,
                "misdirected_request",
                "Misdirected request",
                "This connection cannot serve the requested host. Connect to it by its own name.",
            ),
            Refusal::DbscProofFailed { challenge } => Answer {
                headers: challenge
                    .map(|c| (crate::dbsc::CHALLENGE, c.to_owned()))
                    .into_iter()
                    .collect(),
                ..plain(
                    StatusCode::FORBIDDEN,
                    "dbsc_proof_failed",
                    "Access blocked",
                    "This session is bound to a device key, and this request did not prove it holds the key.",
                )
            },
            Refusal::DbscUnavailable => Answer {
                headers: vec![("retry-after", "5".to_owned())],
                ..plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "dbsc_unavailable",
                    "Temporarily unavailable",
                    "This server cannot check the session's device binding right now. Try again shortly.",
                )
            },
            Refusal::Blocked {
                it_was_me,
                set_cookie,
                ..
            } => Answer {
                headers: set_cookie
                    .map(|c| vec![("set-cookie", c.to_owned())])
                    .unwrap_or_default(),
                link: it_was_me
                    .map(|url| ("it_was_me_url", url, "It was me: sign in again to continue")),
                ..plain(
                    StatusCode::FORBIDDEN,
                    "blocked",
                    "Access blocked",
                    "This request was blocked to protect your account.",
                )
            },
            Refusal::SessionEnded { login_url, .. } => Answer {
                link: login_url.map(|url| ("login_url", url, "Sign in again")),
                ..plain(
                    StatusCode::UNAUTHORIZED,
                    "session_ended",
                    "Session ended",
                    "This session has ended. Sign in again.",
                )
            },
            // RFC 9470: the error code is the one in WWW-Authenticate.
            Refusal::StepUp {
                url,
                bearer: true,
                acr_values,
                max_age,
                ..
            } => Answer {
                link: Some(("step_up_url", url, "Sign in again")),
                headers: vec![
                    ("www-authenticate", challenge(acr_values, max_age)),
                    ("link", format!("<{url}>; rel=\"authenticate\"")),
                ],
                ..plain(
                    StatusCode::UNAUTHORIZED,
                    "insufficient_user_authentication",
                    "Re-authentication required",
                    "Sign in again to continue.",
                )
            },
            Refusal::StepUp {
                url, bearer: false, ..
            } => redirect(plain, "step_up_required", url, None),
            Refusal::Revoked {
                login_url, cookie, ..
            } => redirect(plain, "session_revoked", login_url, cookie),
            Refusal::StepUpPassed { url, cookies, .. } => Answer {
                link: Some(("location", url, "Continue")),
                headers: std::iter::once(("location", url.to_owned()))
                    .chain(cookies.iter().map(|c| ("set-cookie", c.clone())))
                    .collect(),
                ..plain(
                    StatusCode::SEE_OTHER,
                    "step_up_passed",
                    "Signed in",
                    "You signed in again. Continue to the page you asked for.",
                )
            },
            Refusal::StepUpRefused { problem, login_url } => {
                let (status, title, message) = step_up_page(problem);
                Answer {
                    link: login_url
                        .filter(|_| problem == crate::stepup::Problem::UnknownUser)
                        .map(|url| ("login_url", url, "Sign in")),
                    ..plain(status, problem.code(), title, message)
                }
            }
        }
    }
}

/// The status, title and message of a refused step-up.
fn step_up_page(problem: crate::stepup::Problem) -> (StatusCode, &'static str, &'static str) {
    use crate::stepup::Problem as P;
    match problem {
        P::RateLimited => (
            StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-in attempts",
            "Too many sign-in attempts from this session or address. Wait a minute and try again.",
        ),
        P::Loop => (
            StatusCode::FORBIDDEN,
            "Sign-in loop",
            "You just signed in again, and this page still asks for it. It cannot be reached this way; contact the service's support with the reference below.",
        ),
        P::NoSession => (
            StatusCode::FORBIDDEN,
            "Sign in first",
            "This page needs a signed-in session before it can ask you to sign in again.",
        ),
        P::BadHost => (
            StatusCode::BAD_REQUEST,
            "Bad host",
            "This request's host name cannot be signed in at.",
        ),
        P::NotFresh => (
            StatusCode::FORBIDDEN,
            "Sign in again",
            "The sign-in service did not show a new sign-in. Sign in again with your password or key.",
        ),
        P::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in unavailable",
            "The sign-in service cannot be reached right now. Try again shortly.",
        ),
        P::BadCallback => (
            StatusCode::BAD_REQUEST,
            "Bad sign-in answer",
            "The answer from the sign-in service could not be read.",
        ),
        P::StateUnknown => (
            StatusCode::BAD_REQUEST,
            "Sign-in link expired",
            "This sign-in answer was already used, has expired, or was never sent. Go back to the page and try again.",
        ),
        P::SessionMismatch => (
            StatusCode::FORBIDDEN,
            "Wrong session",
            "This sign-in was started by another session. Go back to the page and try again.",
        ),
        P::ProviderError => (
            StatusCode::FORBIDDEN,
            "Sign-in not completed",
            "The sign-in service did not complete the sign-in.",
        ),
        P::ExchangeFailed => (
            StatusCode::BAD_GATEWAY,
            "Sign-in not completed",
            "The sign-in could not be completed with the sign-in service. Try again.",
        ),
        P::TokenInvalid => (
            StatusCode::FORBIDDEN,
            "Sign-in refused",
            "The sign-in service's answer did not pass its checks.",
        ),
        P::Insufficient => (
            StatusCode::FORBIDDEN,
            "Stronger sign-in needed",
            "This page needs a stronger or more recent sign-in than the one completed.",
        ),
        P::UnknownUser => (
            StatusCode::FORBIDDEN,
            "Sign in afresh",
            "This session's account is not known, so signing in again cannot confirm it. Sign in afresh.",
        ),
        P::WrongUser => (
            StatusCode::FORBIDDEN,
            "Different account",
            "You signed in with a different account than this session's. Sign in with the session's own account.",
        ),
        P::Refused => (
            StatusCode::FORBIDDEN,
            "Access blocked",
            "This session cannot continue.",
        ),
        P::LinkInvalid => (
            StatusCode::FORBIDDEN,
            "Link expired",
            "This link has expired, was used already, or belongs to another session. Go back to the page and try again.",
        ),
    }
}

/// The RFC 9470 challenge: the error, and what the authentication must
/// satisfy when a rule said.
fn challenge(acr_values: Option<&str>, max_age: Option<u32>) -> String {
    let mut out = String::from(
        "Bearer error=\"insufficient_user_authentication\", \
         error_description=\"Re-authentication required\"",
    );
    if let Some(acr) = acr_values {
        out.push_str(", acr_values=\"");
        out.push_str(acr);
        out.push('"');
    }
    if let Some(age) = max_age {
        out.push_str(", max_age=");
        out.push_str(&age.to_string());
    }
    out
}

fn redirect<'a>(
    plain: impl Fn(StatusCode, &'static str, &'static str, &'static str) -> Answer<'a>,
    code: &'static str,
    url: &'a str,
    clear_cookie: Option<&str>,
) -> Answer<'a> {
    let mut headers = vec![("location", url.to_owned())];
    if let Some(name) = clear_cookie {
        headers.push((
            "set-cookie",
            format!("{name}=; Max-Age=0; Path=/; HttpOnly"),
        ));
    }
    Answer {
        link: Some(("location", url, "Continue")),
        headers,
        ..plain(
            StatusCode::SEE_OTHER,
            code,
            "Sign in again",
            "Sign in again to continue.",
        )
    }
}

// === impl Failure ===

impl Failure {
    /// Every [`Failure::code`], for exporting each series at zero.
    pub const CODES: [&'static str; 10] = [
        "bad_request",
        "request_timeout",
        "client_gone",
        "upstream_unavailable",
        "upstream_timeout",
        "upstream_closed",
        "bad_upstream_response",
        "upstream_error",
        "internal_error",
        "http_status",
    ];

    /// The one mapping from a Pingora error to what the client is told.
    ///
    /// Pingora's own default (`fail_to_proxy`) answers 502 for every
    /// upstream error, 400 for a downstream one unless the connection is
    /// dead, 500 otherwise; this keeps that and tells timeouts (504, and 408
    /// for a client too slow to send its request) and the kinds of upstream
    /// failure apart.
    pub fn of(e: &Error) -> Failure {
        use ErrorType as T;
        if let T::HTTPStatus(code) = e.etype() {
            return StatusCode::from_u16(*code)
                .ok()
                .filter(|s| s.is_client_error() || s.is_server_error())
                .map_or(Failure::Internal, Failure::Status);
        }
        match e.esource() {
            ErrorSource::Upstream => match e.etype() {
                T::ConnectTimedout
                | T::TLSHandshakeTimedout
                | T::ReadTimedout
                | T::WriteTimedout => Failure::UpstreamTimeout,
                T::ConnectRefused
                | T::ConnectNoRoute
                | T::ConnectError
                | T::ConnectProxyFailure
                | T::BindError
                | T::SocketError
                | T::TLSWantX509Lookup
                | T::TLSHandshakeFailure
                | T::InvalidCert
                | T::HandshakeError => Failure::UpstreamUnavailable,
                T::ConnectionClosed | T::ReadError | T::WriteError => Failure::UpstreamClosed,
                T::InvalidHTTPHeader | T::H1Error | T::H2Error | T::InvalidH2 | T::H2Downgrade => {
                    Failure::BadUpstreamResponse
                }
                _ => Failure::UpstreamError,
            },
            ErrorSource::Downstream => match e.etype() {
                // Writing to a client that does not read only waits longer.
                T::ReadError | T::WriteError | T::ConnectionClosed | T::WriteTimedout => {
                    Failure::ClientGone
                }
                T::ReadTimedout => Failure::RequestTimeout,
                _ => Failure::BadRequest,
            },
            // Pingora tags the errors of its own I/O with a side. An untagged
            // I/O error is one of Vigil's phases failing to write a refusal
            // to the client: the client is the one gone.
            ErrorSource::Unset => match e.etype() {
                T::ReadError | T::WriteError | T::ConnectionClosed | T::WriteTimedout => {
                    Failure::ClientGone
                }
                _ => Failure::Internal,
            },
            ErrorSource::Internal => Failure::Internal,
        }
    }

    /// The status the client gets; `None` when nothing can be answered.
    pub fn status(self) -> Option<StatusCode> {
        Some(match self {
            Failure::BadRequest => StatusCode::BAD_REQUEST,
            Failure::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Failure::ClientGone => return None,
            Failure::UpstreamUnavailable
            | Failure::UpstreamClosed
            | Failure::BadUpstreamResponse
            | Failure::UpstreamError => StatusCode::BAD_GATEWAY,
            Failure::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Failure::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Failure::Status(s) => s,
        })
    }

    /// The stable code: JSON's `error`, the log's `code`, the metric label.
    pub fn code(self) -> &'static str {
        match self {
            Failure::BadRequest => "bad_request",
            Failure::RequestTimeout => "request_timeout",
            Failure::ClientGone => "client_gone",
            Failure::UpstreamUnavailable => "upstream_unavailable",
            Failure::UpstreamTimeout => "upstream_timeout",
            Failure::UpstreamClosed => "upstream_closed",
            Failure::BadUpstreamResponse => "bad_upstream_response",
            Failure::UpstreamError => "upstream_error",
            Failure::Internal => "internal_error",
            Failure::Status(_) => "http_status",
        }
    }

    fn answer(self, reference: &str) -> Answer<'_> {
        let (title, message) = match self {
            Failure::BadRequest | Failure::ClientGone => {
                ("Bad request", "The request could not be read.")
            }
            Failure::RequestTimeout => ("Request timeout", "The request took too long to arrive."),
            Failure::UpstreamUnavailable => (
                "Application unavailable",
                "The application cannot be reached right now. Try again shortly.",
            ),
            Failure::UpstreamTimeout => (
                "Application timed out",
                "The application did not answer in time. Try again shortly.",
            ),
            Failure::UpstreamClosed | Failure::BadUpstreamResponse | Failure::UpstreamError => (
                "Application error",
                "The application could not answer this request.",
            ),
            Failure::Internal => (
                "Internal error",
                "Something went wrong while handling this request.",
            ),
            Failure::Status(s) => (
                s.canonical_reason().unwrap_or("Error"),
                "This request could not be completed.",
            ),
        };
        Answer {
            status: self.status().unwrap_or(StatusCode::BAD_REQUEST),
            code: self.code(),
            title,
            message,
            reference,
            link: None,
            reason: None,
            headers: Vec::new(),
        }
    }
}

// === impl Format ===

impl Format {
    /// JSON when `Accept` asks for `application/json` or any
    /// `application/*+json` at least as much as for `text/html` or
    /// `application/xhtml+xml`; a page otherwise — browsers, and clients
    /// that accept anything (`*/*`), get the page.
    pub fn of(headers: &HeaderMap) -> Format {
        // Best quality seen, in thousandths.
        let (mut json, mut html) = (0u16, 0u16);
        let ranges = headers
            .get_all(ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .take(MAX_MEDIA_RANGES);
        for range in ranges {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim();
            let q = parts
                .find_map(|p| {
                    let (name, value) = p.split_once('=')?;
                    name.trim()
                        .eq_ignore_ascii_case("q")
                        .then(|| quality(value.trim()))
                })
                .unwrap_or(Some(1000));
            // An unreadable weight discards its range, as RFC 9110 12.4.2 allows.
            let Some(q) = q else { continue };
            if is_json(media) {
                json = json.max(q);
            } else if is_html(media) {
                html = html.max(q);
            }
        }
        if json > 0 && json >= html {
            Format::Json
        } else {
            Format::Html
        }
    }
}

/// `application/json` or `application/<anything>+json`, any case.
fn is_json(media: &str) -> bool {
    let Some((kind, sub)) = media.split_once('/') else {
        return false;
    };
    let sub = sub.as_bytes();
    kind.eq_ignore_ascii_case("application")
        && (sub.eq_ignore_ascii_case(b"json")
            || (sub.len() > 5 && sub[sub.len() - 5..].eq_ignore_ascii_case(b"+json")))
}

fn is_html(media: &str) -> bool {
    media.eq_ignore_ascii_case("text/html") || media.eq_ignore_ascii_case("application/xhtml+xml")
}

/// An RFC 9110 `qvalue` in thousandths: `0`, `0.5`, `1.000`; `None` if it
/// is not one.
fn quality(value: &str) -> Option<u16> {
    let (int, frac) = value.split_once('.').unwrap_or((value, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'));
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

// === impl Answer ===

impl Answer<'_> {
    fn html(&self) -> String {
        let title = self.title;
        let mut body = format!("<p>{}</p>", escape(self.message));
        if let Some(reason) = self.reason {
            body.push_str(&format!("<p>({})</p>", escape(reason)));
        }
        if let Some((_, url, text)) = self.link {
            body.push_str(&format!(
                "<p><a href=\"{}\">{}</a>: {}</p>",
                escape(url),
                escape(text),
                escape(url)
            ));
        }
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
             <body><h1>{title}</h1>{body}<p><small>Reference: {}</small></p></body></html>\n",
            escape(self.reference)
        )
    }

    fn json(&self) -> String {
        let mut body = serde_json::Map::new();
        body.insert("error".to_owned(), self.code.into());
        body.insert("status".to_owned(), self.status.as_u16().into());
        body.insert("message".to_owned(), self.message.into());
        body.insert("reference".to_owned(), self.reference.into());
        if let Some(reason) = self.reason {
            body.insert("reason".to_owned(), reason.into());
        }
        if let Some((key, url, _)) = self.link {
            body.insert(key.to_owned(), url.into());
        }
        let mut out = serde_json::Value::Object(body).to_string();
        out.push('\n');
        out
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
