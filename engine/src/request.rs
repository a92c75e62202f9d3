//! The engine's view of one request.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName};

use crate::fingerprint::TlsFingerprint;
use crate::session::SessionError;

/// What the engine sees of one request, borrowed from the proxy's parsed
/// request so that nothing is copied on the hot path.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The address of the TCP peer that sent the request.
    pub peer: IpAddr,
    /// The request headers as received from the peer, untrusted.
    pub headers: &'a HeaderMap,
    /// Wall-clock time of the request, in seconds since the Unix epoch.
    /// Passed in so that the pipeline stays a pure function of its inputs.
    pub now_secs: u64,
    /// The TLS fingerprint of the connection the request came on, as the
    /// proxy captured it: [`TlsFingerprint::NONE`] on a cleartext listener.
    /// A trusted balancer's fingerprint headers take its place (see
    /// [`UpstreamFingerprints`](crate::UpstreamFingerprints)).
    pub tls: TlsFingerprint,
    /// What the request asks for and where it came in: the facts rules and
    /// logs read. Not used to score; default: all empty.
    pub facts: RequestFacts<'a>,
}

/// The request line and where the request came in, borrowed from the
/// proxy's parsed request. Every field is as the proxy resolved it, never
/// re-derived from headers by the engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestFacts<'a> {
    /// The method, e.g. `GET`.
    pub method: &'a str,
    /// `https` when the listener terminates TLS, `http` otherwise.
    pub scheme: &'a str,
    /// The host the request is for, without port, as routing used it.
    pub host: &'a str,
    /// The path as routing matched it.
    pub path: &'a str,
    /// The listener's name.
    pub listener: &'a str,
    /// The route's name.
    pub route: &'a str,
}

/// What the engine sees of the app's response to a request it judged: the
/// response side of the same evaluation (user binding, baseline at
/// issuance, confirmation). See [`Engine::respond`](crate::Engine::respond).
#[derive(Debug, Clone, Copy)]
pub struct ResponseView<'a> {
    /// The response headers as the app sent them.
    pub headers: &'a HeaderMap,
    /// Wall-clock time of the response, in seconds since the Unix epoch.
    pub now_secs: u64,
    /// The header in which the app names the session's user
    /// (`[session] user_header`); `None` when the app never does.
    pub user_header: Option<&'a HeaderName>,
    /// The header with which the app says the user has just
    /// re-authenticated (`[session] confirm_header`); believed only with
    /// the value `1` and only when `app_confirms` is set.
    pub confirm_header: Option<&'a HeaderName>,
    /// Whether this route's app is trusted to confirm a step-up
    /// (`routes.app_confirms`). A reflected header on any other route must
    /// not re-baseline whoever sent the request.
    pub app_confirms: bool,
}

/// Why the engine could not evaluate a request. The proxy maps each variant to
/// a response in one place, honouring the route's fail-open or fail-closed
/// choice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The session credential could not be read within the configured bounds.
    #[error(transparent)]
    Session(#[from] SessionError),
}

impl RequestError {
    /// Whether the request must be refused on every route whatever its
    /// `on_error` says: input no browser sends (see
    /// [`SessionError::fails_closed`]).
    pub fn fails_closed(&self) -> bool {
        match self {
            RequestError::Session(e) => e.fails_closed(),
        }
    }

    /// A short, stable code for metrics labels and logs.
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::Session(e) => e.code(),
        }
    }
}
