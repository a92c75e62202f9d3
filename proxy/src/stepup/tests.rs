use super::*;

#[test]
fn callback_query_takes_each_parameter_once() {
    let c = Callback::parse("code=abc&state=s1&iss=http%3A%2F%2Fidp").unwrap();
    assert_eq!(c.code.as_deref(), Some("abc"));
    assert_eq!(c.state.as_deref(), Some("s1"));
    assert_eq!(c.iss.as_deref(), Some("http://idp"));
    assert_eq!(c.error, None);
    // Unknown parameters are ignored.
    assert_eq!(
        Callback::parse("session_state=x&state=s")
            .unwrap()
            .state
            .as_deref(),
        Some("s")
    );
    assert_eq!(Callback::parse("").unwrap(), Callback::default());
}

#[test]
fn a_client_cannot_choose_which_of_two_values_counts() {
    for query in [
        "code=a&code=b&state=s",
        "code=a&state=s&state=t",
        "state=s&error=x&error=y",
        // Encoded names are the same parameter.
        "state=s&%73tate=t",
        "code=a&state=",
    ] {
        assert_eq!(Callback::parse(query), None, "{query}");
    }
    let long = format!("state={}", "a".repeat(MAX_QUERY_BYTES));
    assert_eq!(Callback::parse(&long), None);
}

#[test]
fn the_page_to_return_to_stays_on_this_host() {
    assert_eq!(safe_target("/account?tab=1"), "/account?tab=1");
    for hostile in [
        "//evil.example/",
        "/\\evil.example/",
        "https://evil.example/",
        "evil",
        "/a b",
        "/\u{7f}",
        "/é",
        "",
    ] {
        assert_eq!(safe_target(hostile), "/", "{hostile:?}");
    }
    assert_eq!(
        safe_target(&format!("/{}", "a".repeat(MAX_TARGET_BYTES))),
        "/"
    );
}

#[test]
fn provider_errors_are_logged_as_plain_codes() {
    assert_eq!(sanitised("access_denied"), "access_denied");
    assert_eq!(sanitised("x\r\ny=1 <script>"), "xy1script");
    assert_eq!(sanitised(&"e".repeat(200)).len(), 64);
}

#[test]
fn the_user_is_read_from_the_configured_claim() {
    let claims = Claims {
        sub: "u-1".to_owned(),
        email: Some(" alice@example.test ".to_owned()),
        preferred_username: None,
        ..Claims::default()
    };
    assert_eq!(claims.user(UserClaim::Sub), Some("u-1"));
    assert_eq!(claims.user(UserClaim::Email), Some("alice@example.test"));
    assert_eq!(claims.user(UserClaim::PreferredUsername), None);
    let blank = Claims {
        sub: " ".to_owned(),
        ..Claims::default()
    };
    assert_eq!(blank.user(UserClaim::Sub), None);
}

#[test]
fn limits_count_per_key_per_minute() {
    let limit = Limiter::new(100);
    assert!(!limit.hit(1u8, 2));
    assert!(!limit.hit(1u8, 2));
    assert!(limit.hit(1u8, 2));
    assert!(!limit.hit(2u8, 2), "another key has its own count");
}

#[test]
fn every_problem_has_its_own_code() {
    let all = [
        Problem::RateLimited,
        Problem::Loop,
        Problem::NoSession,
        Problem::Unavailable,
        Problem::BadCallback,
        Problem::StateUnknown,
        Problem::SessionMismatch,
        Problem::ProviderError,
        Problem::ExchangeFailed,
        Problem::TokenInvalid,
        Problem::Insufficient,
        Problem::UnknownUser,
        Problem::WrongUser,
        Problem::Refused,
    ];
    let mut codes: Vec<_> = all.iter().map(|p| p.code()).collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), all.len());
}
