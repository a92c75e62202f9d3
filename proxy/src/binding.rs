//! The rotating binding at the response (docs/bound-sessions.md): the
//! engine says which companion cookies a response sets; this adds them,
//! one `Set-Cookie` each, only on the responses that issue or rotate.

use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use vigil_engine::binding::HOST_PREFIX;
use vigil_engine::{Enforcement, Engine, ResponseView, Verdict};

/// Takes the companion cookie `name` (and `__Host-name`) out of the
/// request's `Cookie` headers before it goes to the app: it is Vigil's,
/// and the app has no use for it (nor any business logging it). Other
/// cookies are kept as sent; a header left with none is removed. Exact
/// name match, as the engine reads it.
pub(crate) fn strip_companion(request: &mut RequestHeader, name: &str) -> Result<()> {
    let values: Vec<_> = request
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .cloned()
        .collect();
    let carries = |v: &http::HeaderValue| {
        v.as_bytes()
            .split(|b| *b == b';')
            .any(|piece| is_companion(piece, name))
    };
    if !values.iter().any(carries) {
        return Ok(());
    }
    request.remove_header(&http::header::COOKIE);
    for value in values {
        let kept: Vec<&[u8]> = value
            .as_bytes()
            .split(|b| *b == b';')
            .filter(|piece| !is_companion(piece, name) && !piece.trim_ascii().is_empty())
            .map(<[u8]>::trim_ascii)
            .collect();
        if kept.is_empty() {
            continue;
        }
        let joined = kept.join(&b"; "[..]);
        // Pieces of a valid header value joined with "; " are one too.
        if let Ok(v) = http::HeaderValue::from_bytes(&joined) {
            request.append_header(http::header::COOKIE, v)?;
        }
    }
    Ok(())
}

fn is_companion(piece: &[u8], name: &str) -> bool {
    piece.split(|b| *b == b'=').next().is_some_and(|n| {
        let n = n.trim_ascii();
        n == name.as_bytes() || n.strip_prefix(HOST_PREFIX.as_bytes()) == Some(name.as_bytes())
    })
}

/// Adds the companion cookies the engine issues for `verdict`'s response
/// (`confirmed`: the response confirmed the request's session, which may
/// rotate it). Returns how many were added. The values are never logged.
pub(crate) fn add_companions(
    engine: &Engine,
    verdict: &Verdict,
    response: &mut ResponseHeader,
    view_now: u64,
    enforcement: Enforcement,
    confirmed: bool,
) -> Result<usize> {
    let status = response.status.as_u16();
    let cookies = engine.binding_cookies_confirmed(
        verdict,
        &ResponseView {
            headers: &response.headers,
            now_secs: view_now,
            user_header: None,
            confirm_header: None,
            app_confirms: false,
        },
        enforcement,
        status,
        confirmed,
    );
    for cookie in &cookies {
        response.append_header(http::header::SET_COOKIE, cookie.as_str())?;
    }
    Ok(cookies.len())
}
