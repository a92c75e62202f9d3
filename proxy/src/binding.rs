//! The rotating binding at the response (docs/bound-sessions.md): the
//! engine says which companion cookies a response sets; this adds them,
//! one `Set-Cookie` each, only on the responses that issue or rotate.

use pingora_error::Result;
use pingora_http::ResponseHeader;
use vigil_engine::{Enforcement, Engine, ResponseView, Verdict};

/// Adds the companion cookies the engine issues for `verdict`'s response.
/// Returns how many were added. The values are never logged.
pub(crate) fn add_companions(
    engine: &Engine,
    verdict: &Verdict,
    response: &mut ResponseHeader,
    view_now: u64,
    enforcement: Enforcement,
) -> Result<usize> {
    let cookies = engine.binding_cookies(
        verdict,
        &ResponseView {
            headers: &response.headers,
            now_secs: view_now,
            user_header: None,
            confirm_header: None,
            app_confirms: false,
        },
        enforcement,
    );
    for cookie in &cookies {
        response.append_header(http::header::SET_COOKIE, cookie.as_str())?;
    }
    Ok(cookies.len())
}
