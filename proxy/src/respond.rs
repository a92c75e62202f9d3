//! Every answer Vigil gives in place of the app, built in one place
//! (STYLE.md 6): each [`Refusal`] maps to exactly one response.

use bytes::Bytes;
use http::StatusCode;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

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
    /// The decision was `block`.
    Blocked {
        /// The decision's reference id.
        reference: &'a str,
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

/// Writes the response for `refusal` and ends the exchange.
pub async fn send(session: &mut Session, refusal: Refusal<'_>) -> pingora_error::Result<()> {
    let (status, mut headers, body) = render(refusal);
    headers.push(("content-type", "text/html; charset=utf-8".to_owned()));
    headers.push(("cache-control", "no-store".to_owned()));
    let mut resp = ResponseHeader::build(status, Some(headers.len() + 1))?;
    for (name, value) in headers {
        resp.append_header(name, value)?;
    }
    resp.append_header("content-length", body.len().to_string())?;
    session.set_keepalive(None);
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await?;
    Ok(())
}

type Rendered = (StatusCode, Vec<(&'static str, String)>, String);

fn render(refusal: Refusal<'_>) -> Rendered {
    match refusal {
        Refusal::NoRoute => (
            StatusCode::NOT_FOUND,
            vec![],
            page(
                "Not found",
                "No application is served at this address.",
                None,
            ),
        ),
        Refusal::HeadersTooLarge => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            vec![],
            page(
                "Request headers too large",
                "The request's headers are larger than this server accepts.",
                None,
            ),
        ),
        Refusal::Malformed { code } => (
            StatusCode::BAD_REQUEST,
            vec![],
            page(
                "Bad request",
                &format!("The request could not be read ({}).", escape(code)),
                None,
            ),
        ),
        Refusal::Blocked { reference } => (
            StatusCode::FORBIDDEN,
            vec![("vigil-reference", reference.to_owned())],
            page(
                "Access blocked",
                "This request was blocked to protect your account.",
                Some(reference),
            ),
        ),
        Refusal::SessionEnded {
            reference,
            login_url,
        } => {
            let body = match login_url {
                Some(url) => format!(
                    "This session has ended. <a href=\"{}\">Sign in again</a>.",
                    escape(url)
                ),
                None => "This session has ended. Sign in again.".to_owned(),
            };
            (
                StatusCode::UNAUTHORIZED,
                vec![("vigil-reference", reference.to_owned())],
                page("Session ended", &body, Some(reference)),
            )
        }
        Refusal::StepUp {
            reference,
            url,
            bearer: true,
        } => (
            StatusCode::UNAUTHORIZED,
            vec![
                (
                    "www-authenticate",
                    "Bearer error=\"insufficient_user_authentication\", \
                     error_description=\"Re-authentication required\""
                        .to_owned(),
                ),
                ("vigil-reference", reference.to_owned()),
                ("link", format!("<{url}>; rel=\"authenticate\"")),
            ],
            page(
                "Re-authentication required",
                "Sign in again to continue.",
                Some(reference),
            ),
        ),
        Refusal::StepUp {
            reference,
            url,
            bearer: false,
        } => redirect(url, reference, None),
        Refusal::Revoked {
            reference,
            login_url,
            cookie,
        } => redirect(login_url, reference, cookie),
    }
}

fn redirect(url: &str, reference: &str, clear_cookie: Option<&str>) -> Rendered {
    let mut headers = vec![
        ("location", url.to_owned()),
        ("vigil-reference", reference.to_owned()),
    ];
    if let Some(name) = clear_cookie {
        headers.push((
            "set-cookie",
            format!("{name}=; Max-Age=0; Path=/; HttpOnly"),
        ));
    }
    let body = page(
        "Sign in again",
        &format!(
            "Continue at <a href=\"{}\">{}</a>.",
            escape(url),
            escape(url)
        ),
        Some(reference),
    );
    (StatusCode::SEE_OTHER, headers, body)
}

fn page(title: &str, message: &str, reference: Option<&str>) -> String {
    let reference = reference
        .map(|r| format!("<p><small>Reference: {}</small></p>", escape(r)))
        .unwrap_or_default();
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p>{message}</p>{reference}</body></html>\n"
    )
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
mod tests {
    use super::*;

    #[test]
    fn block_page_carries_the_reference() {
        let (status, headers, body) = render(Refusal::Blocked {
            reference: "abc123",
        });
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("Reference: abc123"));
        assert!(headers.contains(&("vigil-reference", "abc123".to_owned())));
    }

    #[test]
    fn api_step_up_follows_rfc_9470() {
        let (status, headers, _) = render(Refusal::StepUp {
            reference: "r",
            url: "/login",
            bearer: true,
        });
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let auth = &headers
            .iter()
            .find(|(n, _)| *n == "www-authenticate")
            .unwrap()
            .1;
        assert!(auth.contains("insufficient_user_authentication"));
    }

    #[test]
    fn revoke_clears_the_cookie_and_redirects() {
        let (status, headers, _) = render(Refusal::Revoked {
            reference: "r",
            login_url: "/login",
            cookie: Some("sid"),
        });
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert!(headers.contains(&("location", "/login".to_owned())));
        assert!(
            headers
                .iter()
                .any(|(n, v)| *n == "set-cookie" && v.starts_with("sid=;"))
        );
    }

    #[test]
    fn config_urls_are_escaped_in_pages() {
        let (_, _, body) = render(Refusal::SessionEnded {
            reference: "r",
            login_url: Some("/login?a=\"><script>"),
        });
        assert!(!body.contains("<script>"));
    }
}
