use http::HeaderValue;
use pingora_error::ErrorType as T;

use super::*;

fn header<'h>(answer: &'h Answer<'_>, name: &str) -> Option<&'h str> {
    answer
        .headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

fn json(answer: &Answer<'_>) -> serde_json::Value {
    serde_json::from_str(&answer.json()).unwrap()
}

fn accept(values: &[&str]) -> Format {
    let mut headers = HeaderMap::new();
    for v in values {
        headers.append(ACCEPT, HeaderValue::from_bytes(v.as_bytes()).unwrap());
    }
    Format::of(&headers)
}

// --- Refusals ---

#[test]
fn block_page_carries_the_reference() {
    let answer = Refusal::Blocked {
        reference: "abc123",
        it_was_me: None,
        set_cookie: None,
    }
    .answer("abc123");
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(answer.html().contains("Reference: abc123"));
    assert_eq!(answer.reference, "abc123");
}

#[test]
fn a_block_in_json_names_its_code_and_reference() {
    let answer = Refusal::Blocked {
        reference: "r1",
        it_was_me: None,
        set_cookie: None,
    }
    .answer("r1");
    assert_eq!(
        json(&answer),
        serde_json::json!({
            "error": "blocked",
            "status": 403,
            "message": "This request was blocked to protect your account.",
            "reference": "r1",
        })
    );
}

#[test]
fn a_block_offering_it_was_me_links_to_it_in_html_and_json() {
    let link = "/.vigil/oidc/callback?it_was_me=1.00ab.Lw.x\"><script>";
    let answer = Refusal::Blocked {
        reference: "r2",
        it_was_me: Some(link),
        set_cookie: Some("vigil-dispute=00; Path=/cb; HttpOnly"),
    }
    .answer("r2");
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(json(&answer)["it_was_me_url"], link);
    assert_eq!(json(&answer)["error"], "blocked");
    let html = answer.html();
    assert!(
        html.contains(
            "href=\"/.vigil/oidc/callback?it_was_me=1.00ab.Lw.x&quot;&gt;&lt;script&gt;\""
        ),
        "{html}"
    );
    assert!(!html.contains("<script>"), "{html}");
    assert_eq!(
        header(&answer, "set-cookie"),
        Some("vigil-dispute=00; Path=/cb; HttpOnly")
    );
}

#[test]
fn api_step_up_follows_rfc_9470() {
    let answer = Refusal::StepUp {
        reference: "r",
        url: "/login",
        bearer: true,
        acr_values: None,
        max_age: None,
    }
    .answer("r");
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let auth = header(&answer, "www-authenticate").unwrap();
    assert!(auth.contains("insufficient_user_authentication"));
    assert_eq!(
        header(&answer, "link"),
        Some("</login>; rel=\"authenticate\"")
    );
    assert_eq!(json(&answer)["error"], "insufficient_user_authentication");
    assert_eq!(json(&answer)["step_up_url"], "/login");
}

#[test]
fn revoke_clears_the_cookie_and_redirects() {
    let answer = Refusal::Revoked {
        reference: "r",
        login_url: "/login",
        cookie: Some("sid"),
    }
    .answer("r");
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(header(&answer, "location"), Some("/login"));
    assert!(header(&answer, "set-cookie").is_some_and(|v| v.starts_with("sid=;")));
    assert_eq!(json(&answer)["error"], "session_revoked");
    assert_eq!(json(&answer)["location"], "/login");
}

#[test]
fn refusals_that_are_not_decisions_have_no_reference_of_their_own() {
    for refusal in [
        Refusal::NoRoute,
        Refusal::HeadersTooLarge,
        Refusal::Malformed { code: "x" },
        Refusal::Path { code: "x" },
        Refusal::Misdirected,
    ] {
        assert_eq!(refusal.reference(), None, "{refusal:?}");
    }
    assert_eq!(
        Refusal::Blocked {
            reference: "r",
            it_was_me: None,
            set_cookie: None
        }
        .reference(),
        Some("r")
    );
}

#[test]
fn a_malformed_request_says_why_in_json() {
    let answer = Refusal::Malformed {
        code: "too_many_cookies",
    }
    .answer("r");
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(json(&answer)["error"], "malformed_request");
    assert_eq!(json(&answer)["reason"], "too_many_cookies");
}

#[test]
fn a_path_refusal_is_400_with_its_reason_and_a_misdirected_request_421() {
    let answer = Refusal::Path {
        code: "ambiguous_path",
    }
    .answer("r");
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(json(&answer)["error"], "bad_path");
    assert_eq!(json(&answer)["reason"], "ambiguous_path");
    assert!(answer.html().contains("(ambiguous_path)"));
    let answer = Refusal::Misdirected.answer("r");
    assert_eq!(answer.status, StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(json(&answer)["error"], "misdirected_request");
}

#[test]
fn config_urls_are_escaped_in_pages() {
    let answer = Refusal::SessionEnded {
        reference: "r",
        login_url: Some("/login?a=\"><script>"),
    }
    .answer("r");
    assert!(!answer.html().contains("<script>"));
    assert_eq!(json(&answer)["login_url"], "/login?a=\"><script>");
}

// --- Failures: one test per class of Pingora error ---

#[test]
fn connect_failures_upstream_are_502_upstream_unavailable() {
    for t in [
        T::ConnectRefused,
        T::ConnectNoRoute,
        T::ConnectError,
        T::TLSHandshakeFailure,
        T::InvalidCert,
    ] {
        let f = Failure::of(&Error::new_up(t.clone()));
        assert_eq!(f, Failure::UpstreamUnavailable, "{t:?}");
        assert_eq!(f.status(), Some(StatusCode::BAD_GATEWAY));
        assert_eq!(f.code(), "upstream_unavailable");
    }
}

#[test]
fn upstream_timeouts_are_504() {
    for t in [
        T::ConnectTimedout,
        T::TLSHandshakeTimedout,
        T::ReadTimedout,
        T::WriteTimedout,
    ] {
        let f = Failure::of(&Error::new_up(t.clone()));
        assert_eq!(f, Failure::UpstreamTimeout, "{t:?}");
        assert_eq!(f.status(), Some(StatusCode::GATEWAY_TIMEOUT));
    }
}

#[test]
fn an_upstream_that_closes_or_resets_is_502_upstream_closed() {
    for t in [T::ConnectionClosed, T::ReadError, T::WriteError] {
        let f = Failure::of(&Error::new_up(t.clone()));
        assert_eq!(f, Failure::UpstreamClosed, "{t:?}");
        assert_eq!(f.status(), Some(StatusCode::BAD_GATEWAY));
    }
}

#[test]
fn an_upstream_answer_that_is_not_http_is_502_bad_upstream_response() {
    for t in [T::InvalidHTTPHeader, T::H1Error, T::H2Error, T::InvalidH2] {
        let f = Failure::of(&Error::new_up(t.clone()));
        assert_eq!(f, Failure::BadUpstreamResponse, "{t:?}");
        assert_eq!(f.status(), Some(StatusCode::BAD_GATEWAY));
    }
}

#[test]
fn any_other_upstream_error_is_502() {
    let f = Failure::of(&Error::new_up(T::InternalError));
    assert_eq!(f, Failure::UpstreamError);
    assert_eq!(f.status(), Some(StatusCode::BAD_GATEWAY));
}

#[test]
fn a_broken_client_request_is_400() {
    for t in [T::InvalidHTTPHeader, T::H1Error, T::H2Error] {
        let f = Failure::of(&Error::new_down(t.clone()));
        assert_eq!(f, Failure::BadRequest, "{t:?}");
        assert_eq!(f.status(), Some(StatusCode::BAD_REQUEST));
    }
}

#[test]
fn a_refusal_that_could_not_be_written_is_a_client_gone() {
    for t in [T::WriteError, T::ConnectionClosed] {
        assert_eq!(
            Failure::of(&Error::new(t.clone())),
            Failure::ClientGone,
            "{t:?}"
        );
    }
}

#[test]
fn a_client_too_slow_to_send_is_408() {
    let f = Failure::of(&Error::new_down(T::ReadTimedout));
    assert_eq!(f, Failure::RequestTimeout);
    assert_eq!(f.status(), Some(StatusCode::REQUEST_TIMEOUT));
}

#[test]
fn a_client_that_is_gone_gets_no_answer() {
    for t in [
        T::ReadError,
        T::WriteError,
        T::ConnectionClosed,
        T::WriteTimedout,
    ] {
        let f = Failure::of(&Error::new_down(t.clone()));
        assert_eq!(f, Failure::ClientGone, "{t:?}");
        assert_eq!(f.status(), None);
    }
}

#[test]
fn vigils_own_errors_are_500() {
    for e in [
        Error::new_in(T::InternalError),
        Error::new_in(T::WriteError),
        Error::new(T::InternalError),
    ] {
        let f = Failure::of(&e);
        assert_eq!(f, Failure::Internal, "{e}");
        assert_eq!(f.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
    }
}

#[test]
fn an_explicit_status_is_kept_and_a_bogus_one_is_500() {
    let f = Failure::of(&Error::new_up(T::HTTPStatus(503)));
    assert_eq!(f.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(f.code(), "http_status");
    assert_eq!(
        Failure::of(&Error::new(T::HTTPStatus(200))),
        Failure::Internal
    );
    assert_eq!(
        Failure::of(&Error::new(T::HTTPStatus(1000))),
        Failure::Internal
    );
}

#[test]
fn every_failure_code_is_exported() {
    for f in [
        Failure::BadRequest,
        Failure::RequestTimeout,
        Failure::ClientGone,
        Failure::UpstreamUnavailable,
        Failure::UpstreamTimeout,
        Failure::UpstreamClosed,
        Failure::BadUpstreamResponse,
        Failure::UpstreamError,
        Failure::Internal,
        Failure::Status(StatusCode::IM_A_TEAPOT),
    ] {
        assert!(Failure::CODES.contains(&f.code()), "{f:?}");
    }
}

#[test]
fn a_failure_page_and_json_carry_the_reference() {
    let answer = Failure::UpstreamTimeout.answer("feed");
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(answer.html().contains("Reference: feed"));
    assert_eq!(json(&answer)["error"], "upstream_timeout");
    assert_eq!(json(&answer)["reference"], "feed");
    assert_eq!(json(&answer)["status"], 504);
}

// --- Content negotiation ---

#[test]
fn browsers_and_wildcards_get_the_page() {
    assert_eq!(accept(&[]), Format::Html);
    assert_eq!(
        accept(&["text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"]),
        Format::Html
    );
    assert_eq!(accept(&["*/*"]), Format::Html);
    assert_eq!(accept(&["application/*"]), Format::Html);
}

#[test]
fn clients_asking_for_json_get_json() {
    assert_eq!(accept(&["application/json"]), Format::Json);
    assert_eq!(accept(&["APPLICATION/JSON"]), Format::Json);
    assert_eq!(accept(&["application/problem+json"]), Format::Json);
    assert_eq!(
        accept(&["application/vnd.api+json; charset=utf-8"]),
        Format::Json
    );
    assert_eq!(accept(&["application/json, text/plain, */*"]), Format::Json);
    assert_eq!(accept(&["text/plain", "application/json"]), Format::Json);
}

#[test]
fn the_higher_weight_wins_and_a_tie_goes_to_json() {
    assert_eq!(
        accept(&["text/html;q=0.9, application/json;q=0.8"]),
        Format::Html
    );
    assert_eq!(
        accept(&["text/html;q=0.5, application/json;q=0.8"]),
        Format::Json
    );
    assert_eq!(accept(&["text/html, application/json"]), Format::Json);
    assert_eq!(accept(&["application/json;q=0"]), Format::Html);
}

#[test]
fn unreadable_ranges_are_ignored() {
    assert_eq!(accept(&["application/json;q=2"]), Format::Html);
    assert_eq!(accept(&["application/json;q=0.1234"]), Format::Html);
    assert_eq!(accept(&["application/json;q=abc"]), Format::Html);
    assert_eq!(accept(&["application/+json"]), Format::Html);
    assert_eq!(accept(&["json"]), Format::Html);
    assert_eq!(accept(&["application/é+json"]), Format::Html);
}

#[test]
fn only_the_first_ranges_are_read() {
    let mut many = vec!["text/plain"; MAX_MEDIA_RANGES];
    many.push("application/json");
    assert_eq!(accept(&[&many.join(",")]), Format::Html);
}

#[test]
fn quality_values_are_read_in_thousandths() {
    assert_eq!(quality("1"), Some(1000));
    assert_eq!(quality("1.000"), Some(1000));
    assert_eq!(quality("0.5"), Some(500));
    assert_eq!(quality("0.05"), Some(50));
    assert_eq!(quality("0"), Some(0));
    assert_eq!(quality("1.5"), None);
    assert_eq!(quality(""), None);
    assert_eq!(quality("0.+1"), None);
}

proptest::proptest! {
    #[test]
    fn any_accept_header_is_read_without_panicking(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        if let Ok(value) = HeaderValue::from_bytes(&raw) {
            let mut headers = HeaderMap::new();
            headers.append(ACCEPT, value);
            let _ = Format::of(&headers);
        }
    }

    #[test]
    fn json_asked_for_first_wins_over_anything_after_it(rest in "[ -~]{0,200}") {
        let value = format!("application/json, {rest}");
        proptest::prop_assume!(HeaderValue::from_str(&value).is_ok());
        // Only a page weighted 1 and a JSON range weighted 0 could beat it;
        // neither is in a tail without those words.
        proptest::prop_assume!(!rest.to_ascii_lowercase().contains("html") && !rest.to_ascii_lowercase().contains("json"));
        proptest::prop_assert_eq!(accept(&[&value]), Format::Json);
    }

    #[test]
    fn a_weight_is_read_exactly_or_not_at_all(int in 0u8..3, frac in "[0-9]{0,4}") {
        let text = if frac.is_empty() { int.to_string() } else { format!("{int}.{frac}") };
        let padded: u16 = format!("{frac:0<3}").get(..3).and_then(|f| f.parse().ok()).unwrap_or(0);
        let want = match (int, frac.len()) {
            (_, 4) => None,
            (0, _) => Some(padded),
            (1, _) if padded == 0 => Some(1000),
            _ => None,
        };
        proptest::prop_assert_eq!(quality(&text), want);
    }
}

// --- Keeping the connection after an answer ---

fn framing(lines: &[(&str, &[u8])]) -> Option<u64> {
    let mut headers = HeaderMap::new();
    for (name, value) in lines {
        headers.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(value).unwrap(),
        );
    }
    request_length(&headers)
}

#[test]
fn only_a_single_plain_content_length_or_none_frames_a_body_we_may_drain() {
    assert_eq!(framing(&[]), Some(0));
    assert_eq!(framing(&[("content-length", b"0")]), Some(0));
    assert_eq!(framing(&[("content-length", b"1234")]), Some(1234));
    assert_eq!(framing(&[("Content-Length", b"007")]), Some(7));
    // Anything a parser might read two ways closes the connection.
    for bad in [
        &[("transfer-encoding", &b"chunked"[..])][..],
        &[("transfer-encoding", b"identity")],
        &[("content-length", b"5"), ("transfer-encoding", b"chunked")],
        &[("content-length", b"5"), ("content-length", b"5")],
        &[("content-length", b"5, 5")],
        &[("content-length", b"+5")],
        &[("content-length", b"-1")],
        &[("content-length", b" 5")],
        &[("content-length", b"5 ")],
        &[("content-length", b"0x10")],
        &[("content-length", b"")],
        &[("content-length", b"99999999999999999999999")],
    ] {
        assert_eq!(framing(bad), None, "{bad:?}");
    }
}
