//! The engine's view of one request.

use std::net::IpAddr;

use http::HeaderMap;

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
    /// A short, stable code for metrics labels and logs.
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::Session(e) => e.code(),
        }
    }
}
