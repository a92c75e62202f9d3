use super::*;

fn stage(names: &[&str]) -> SessionStage {
    SessionStage::new(
        SessionConfig {
            cookie_names: names.iter().map(|s| s.to_string()).collect(),
            bearer: true,
            limits: SessionLimits::default(),
            ambiguous: Ambiguity::Worst,
        },
        SessionHashKey::from_bytes([1; HASH_KEY_LEN]),
    )
}

fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_bytes(v).unwrap(),
        );
    }
    h
}

/// The first credential read, or the problem: what a request with one
/// credential comes down to.
fn identify(stage: &SessionStage, h: &HeaderMap) -> Result<Option<Session>, SessionError> {
    let c = stage.credentials(h);
    match c.problem() {
        Some(p) => Err(p.clone()),
        None => Ok(c.sessions().first().copied()),
    }
}

fn key(stage: &SessionStage, pairs: &[(&str, &[u8])]) -> Option<Session> {
    identify(stage, &headers(pairs)).unwrap()
}

#[test]
fn finds_the_session_cookie_among_others() {
    let s = stage(&["sid"]);
    let a = key(&s, &[("cookie", b"theme=dark; sid=abc123; lang=en")]).unwrap();
    assert_eq!(a.source, CredentialSource::Cookie(0));
    let b = key(&s, &[("cookie", b"sid=abc123")]).unwrap();
    assert_eq!(a.key, b.key, "same credential, same key");
    let c = key(&s, &[("cookie", b"sid=abc124")]).unwrap();
    assert_ne!(a.key, c.key);
}

#[test]
fn no_credential_means_no_session() {
    let s = stage(&["sid"]);
    assert_eq!(key(&s, &[]), None);
    assert_eq!(key(&s, &[("cookie", b"other=1")]), None);
    assert_eq!(
        key(&s, &[("cookie", b"sid=")]),
        None,
        "empty value is no session"
    );
    assert_eq!(key(&s, &[("authorization", b"Basic dXNlcjpwYXNz")]), None);
    assert_eq!(key(&s, &[("authorization", b"Bearer ")]), None);
}

#[test]
fn cookies_split_over_several_header_lines_are_read() {
    let s = stage(&["sid"]);
    let one = key(&s, &[("cookie", b"a=1; sid=xyz")]).unwrap();
    let two = key(&s, &[("cookie", b"a=1"), ("cookie", b"sid=xyz")]).unwrap();
    assert_eq!(one.key, two.key);
}

#[test]
fn every_configured_cookie_name_is_judged_whatever_the_order() {
    let s = stage(&["primary", "fallback"]);
    let c = s.credentials(&headers(&[("cookie", b"fallback=f; primary=p")]));
    let sources: Vec<_> = c.sessions().iter().map(|s| s.source).collect();
    assert_eq!(
        sources,
        [CredentialSource::Cookie(1), CredentialSource::Cookie(0)]
    );
    let only_fallback = key(&s, &[("cookie", b"fallback=f")]).unwrap();
    assert_eq!(only_fallback.source, CredentialSource::Cookie(1));
}

#[test]
fn bearer_tokens_identify_sessions() {
    let s = stage(&["sid"]);
    let a = key(&s, &[("authorization", b"Bearer tok.en.value")]).unwrap();
    let b = key(&s, &[("authorization", b"bearer   tok.en.value  ")]).unwrap();
    assert_eq!(a.source, CredentialSource::Bearer);
    assert_eq!(
        a.key, b.key,
        "scheme is case-insensitive, whitespace trimmed"
    );
    // With a cookie, both are judged.
    let both = s.credentials(&headers(&[
        ("authorization", b"Bearer tok.en.value"),
        ("cookie", b"sid=c"),
    ]));
    let sources: Vec<_> = both.sessions().iter().map(|s| s.source).collect();
    assert_eq!(
        sources,
        [CredentialSource::Cookie(0), CredentialSource::Bearer]
    );
}

#[test]
fn same_bytes_in_another_place_are_another_session() {
    let s = stage(&["a", "b"]);
    let a = key(&s, &[("cookie", b"a=v")]).unwrap();
    let b = key(&s, &[("cookie", b"b=v")]).unwrap();
    let t = key(&s, &[("authorization", b"Bearer v")]).unwrap();
    assert_ne!(a.key, b.key);
    assert_ne!(a.key, t.key);
}

#[test]
fn the_hash_key_matters() {
    let h = headers(&[("cookie", b"session=v")]);
    let k1 = identify(
        &SessionStage::new(
            SessionConfig::default(),
            SessionHashKey::from_bytes([1; 32]),
        ),
        &h,
    )
    .unwrap()
    .unwrap();
    let k2 = identify(
        &SessionStage::new(
            SessionConfig::default(),
            SessionHashKey::from_bytes([2; 32]),
        ),
        &h,
    )
    .unwrap()
    .unwrap();
    assert_ne!(k1.key, k2.key);
}

#[test]
fn malformed_neighbours_do_not_hide_the_session() {
    let s = stage(&["sid"]);
    let got = key(&s, &[("cookie", b";;; =novalue; junk; sid=ok; ==")]).unwrap();
    let clean = key(&s, &[("cookie", b"sid=ok")]).unwrap();
    assert_eq!(got.key, clean.key);
}

#[test]
fn too_many_cookies_is_an_error() {
    let s = stage(&["sid"]);
    let many: String = (0..1000).map(|i| format!("c{i}=v; ")).collect();
    let err = identify(&s, &headers(&[("cookie", many.as_bytes())])).unwrap_err();
    assert_eq!(
        err,
        SessionError::TooManyCookies {
            count: 201,
            limit: 200
        }
    );
}

#[test]
fn overlong_credentials_are_an_error() {
    let s = stage(&["sid"]);
    let long = format!("sid={}", "x".repeat(5000));
    assert!(matches!(
        identify(&s, &headers(&[("cookie", long.as_bytes())])),
        Err(SessionError::CredentialTooLong { len: 5000, .. })
    ));
    let long = format!("Bearer {}", "x".repeat(5000));
    assert!(matches!(
        identify(&s, &headers(&[("authorization", long.as_bytes())])),
        Err(SessionError::CredentialTooLong { .. })
    ));
}

#[test]
fn a_value_that_is_not_utf8_is_still_a_credential() {
    let s = stage(&["sid"]);
    let c = s.credentials(&headers(&[("cookie", b"sid=\xff\xfe")]));
    assert_eq!(c.problem(), None);
    assert_eq!(c.sessions().len(), 1);
}

#[test]
fn debug_output_never_shows_secrets() {
    let k = SessionHashKey::from_bytes([0xab; 32]);
    assert!(!format!("{k:?}").contains("ab"));
    let s = key(&stage(&["sid"]), &[("cookie", b"sid=supersecret")]).unwrap();
    let shown = format!("{s:?} {}", s.key.short());
    assert!(!shown.contains("supersecret"));
    assert_eq!(s.key.short().to_string().len(), 8);
    assert_eq!(s.key.to_string().len(), 32);
}

proptest::proptest! {
    #[test]
    fn never_panics_and_respects_bounds(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..4096),
                                        auth in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let s = stage(&["sid", "session"]);
        let mut h = HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_bytes(&bytes) { h.insert("cookie", v); }
        if let Ok(v) = http::HeaderValue::from_bytes(&auth) { h.insert("authorization", v); }
        let _ = identify(&s, &h);
    }

    #[test]
    fn a_session_cookie_is_found_wherever_it_stands(
        before in proptest::collection::vec("[a-z]{1,8}=[a-zA-Z0-9]{0,8}", 0..20),
        after in proptest::collection::vec("[a-z]{1,8}=[a-zA-Z0-9]{0,8}", 0..20),
        value in "[A-Za-z0-9_-]{1,64}",
    ) {
        let s = stage(&["sid"]);
        let filter = |v: &Vec<String>| v.iter().filter(|c| !c.starts_with("sid=")).cloned().collect::<Vec<_>>();
        let mut all = filter(&before);
        all.push(format!("sid={value}"));
        all.extend(filter(&after));
        let got = key(&s, &[("cookie", all.join("; ").as_bytes())]).unwrap();
        let alone = key(&s, &[("cookie", format!("sid={value}").as_bytes())]).unwrap();
        proptest::prop_assert_eq!(got.key, alone.key);
    }
}

#[test]
fn reconfigure_applies_bearer_and_limits_and_keeps_the_cookie_names() {
    let s = stage(&["sid"]);
    let before = key(&s, &[("cookie", b"sid=abc")]).unwrap();
    s.reconfigure(SessionConfig {
        ambiguous: Ambiguity::Worst,
        cookie_names: vec!["other".to_owned()],
        bearer: false,
        limits: SessionLimits {
            max_cookies: 1,
            ..SessionLimits::default()
        },
    });
    assert_eq!(
        key(&s, &[("cookie", b"sid=abc")]),
        Some(before),
        "the same cookie is the same session"
    );
    assert_eq!(key(&s, &[("authorization", b"Bearer tok.en")]), None);
    assert!(matches!(
        identify(&s, &headers(&[("cookie", b"a=1; sid=abc")])),
        Err(SessionError::TooManyCookies { limit: 1, .. })
    ));
}

// --- every credential an app could honour ---

fn creds(stage: &SessionStage, pairs: &[(&str, &[u8])]) -> Credentials {
    stage.credentials(&headers(pairs))
}

fn keys_of(c: &Credentials) -> Vec<SessionKey> {
    c.sessions().iter().map(|s| s.key).collect()
}

#[test]
fn a_quoted_value_is_also_judged_as_the_app_unquotes_it() {
    let s = stage(&["sid"]);
    let victim = key(&s, &[("cookie", b"sid=abc")]).unwrap().key;
    for sent in [
        &b"sid=\"abc\""[..],
        b"sid=\"\\141bc\"",
        b"sid=%61bc",
        b"sid=\"%61bc\"",
    ] {
        let c = creds(&s, &[("cookie", sent)]);
        assert!(
            keys_of(&c).contains(&victim),
            "{}",
            String::from_utf8_lossy(sent)
        );
        assert_eq!(c.problem(), None);
    }
}

#[test]
fn every_duplicate_on_every_line_is_judged() {
    let s = stage(&["sid"]);
    let victim = key(&s, &[("cookie", b"sid=victim")]).unwrap().key;
    for pairs in [
        &[("cookie", &b"sid=decoy; sid=victim"[..])][..],
        &[("cookie", b"sid=victim; sid=decoy")],
        &[("cookie", b"sid=decoy"), ("cookie", b"sid=victim")],
        &[("cookie", b"a=1"), ("cookie", b"b=2; sid=victim")],
    ] {
        let c = creds(&s, pairs);
        assert!(keys_of(&c).contains(&victim), "{pairs:?}");
    }
}

#[test]
fn a_bearer_token_is_judged_next_to_a_cookie_and_after_any_whitespace() {
    let s = stage(&["sid"]);
    let token = key(&s, &[("authorization", b"Bearer tok.en")]).unwrap().key;
    for auth in [
        &b"Bearer\ttok.en"[..],
        b"bearer   tok.en",
        b"BEARER tok.en ",
    ] {
        let c = creds(&s, &[("cookie", b"sid=any"), ("authorization", auth)]);
        assert_eq!(c.sessions().len(), 2);
        assert!(
            keys_of(&c).contains(&token),
            "{}",
            String::from_utf8_lossy(auth)
        );
    }
    assert_eq!(
        creds(&s, &[("authorization", b"Bearertok.en")]).sessions(),
        []
    );
}

#[test]
fn two_authorization_headers_are_a_problem_but_the_first_is_still_judged() {
    let s = stage(&["sid"]);
    let c = creds(
        &s,
        &[
            ("authorization", b"Bearer one"),
            ("authorization", b"Bearer two"),
        ],
    );
    assert_eq!(c.problem(), Some(&SessionError::SeveralAuthorizations));
    assert_eq!(c.sessions().len(), 1);
}

#[test]
fn what_cannot_be_read_does_not_hide_what_can() {
    let s = stage(&["sid"]);
    let victim = key(&s, &[("cookie", b"sid=victim")]).unwrap().key;
    // Bytes that are not UTF-8, on the same line or another.
    let c = creds(&s, &[("cookie", b"sid=victim; x=\xff")]);
    assert_eq!(c.problem(), None);
    assert_eq!(keys_of(&c), [victim]);
    let c = creds(&s, &[("cookie", b"x=\xff"), ("cookie", b"sid=victim")]);
    assert_eq!(keys_of(&c), [victim]);
    // The session cookie past the cookie limit.
    let mut many: Vec<String> = (0..250).map(|i| format!("j{i}=x")).collect();
    many.push("sid=victim".to_owned());
    let c = creds(&s, &[("cookie", many.join("; ").as_bytes())]);
    assert!(matches!(
        c.problem(),
        Some(SessionError::TooManyCookies { limit: 200, .. })
    ));
    assert_eq!(keys_of(&c), [victim]);
    // An overlong value next to a readable one.
    let long = format!("sid={}; sid=victim", "a".repeat(5000));
    let c = creds(&s, &[("cookie", long.as_bytes())]);
    assert!(matches!(
        c.problem(),
        Some(SessionError::CredentialTooLong { .. })
    ));
    assert_eq!(keys_of(&c), [victim]);
}

#[test]
fn more_credentials_than_the_bound_is_a_problem() {
    let s = stage(&["sid"]);
    let many: Vec<String> = (0..20).map(|i| format!("sid=v{i}")).collect();
    let c = creds(&s, &[("cookie", many.join("; ").as_bytes())]);
    assert_eq!(c.sessions().len(), MAX_CREDENTIALS);
    assert_eq!(
        c.problem(),
        Some(&SessionError::TooManyCredentials {
            limit: MAX_CREDENTIALS
        })
    );
}

#[test]
fn refuse_mode_makes_two_credentials_a_problem() {
    let s = SessionStage::new(
        SessionConfig {
            cookie_names: vec!["sid".to_owned()],
            ambiguous: Ambiguity::Refuse,
            ..SessionConfig::default()
        },
        SessionHashKey::from_bytes([1; HASH_KEY_LEN]),
    );
    let c = creds(&s, &[("cookie", b"sid=a; sid=b")]);
    assert_eq!(c.problem(), Some(&SessionError::Ambiguous { count: 2 }));
    // The same value twice is one credential.
    assert_eq!(creds(&s, &[("cookie", b"sid=a; sid=a")]).problem(), None);
}

proptest::proptest! {
    #[test]
    fn credentials_never_panic_and_stay_bounded(
        lines in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..512), 0..6)
    ) {
        let s = stage(&["sid", "remember"]);
        let mut h = HeaderMap::new();
        for (i, l) in lines.iter().enumerate() {
            let name = if i % 3 == 2 { "authorization" } else { "cookie" };
            if let Ok(v) = http::HeaderValue::from_bytes(l) {
                h.append(name, v);
            }
        }
        let c = s.credentials(&h);
        proptest::prop_assert!(c.sessions().len() <= MAX_CREDENTIALS);
    }
}

#[test]
fn cookies_hidden_behind_other_separators_or_name_spellings_are_found() {
    let s = stage(&["sess_id"]);
    let victim = key(&s, &[("cookie", b"sess_id=victim")]).unwrap().key;
    for line in [
        &b"x=1 sess_id=victim"[..],
        b"x=1, sess_id=victim",
        b"x=1,sess_id=victim",
        b"SESS_ID=victim",
        b"sess.id=victim",
        b"sess id=victim",
        b"%73ess_id=victim",
        b"x=\xff; sess_id=victim",
    ] {
        let c = creds(&s, &[("cookie", line)]);
        assert_eq!(keys_of(&c), [victim], "{}", String::from_utf8_lossy(line));
    }
}

#[test]
fn every_spelling_of_one_value_is_one_session() {
    let s = stage(&["sid"]);
    // A token with "477" in it: Python reads "\477" as the three
    // characters, not an octal escape.
    let victim = key(&s, &[("cookie", b"sid=ab477c")]).unwrap().key;
    for line in [
        &b"sid=\"ab477c\""[..],
        b"sid=\"ab\\477c\"",
        b"sid=\"\\141b477c\"",
        b"sid=ab%34%377c",
        b"sid=\"ab477cX",
    ] {
        let c = creds(&s, &[("cookie", line)]);
        assert_eq!(keys_of(&c), [victim], "{}", String::from_utf8_lossy(line));
        assert_eq!(c.problem(), None);
    }
    // A value the app issued percent-encoded is the same session as its
    // decoded spelling (Express's "s%3A…").
    let issued = s.cookie_key(0, b"s%3Aabc.def").unwrap();
    let decoded = key(&s, &[("cookie", b"sid=s:abc.def")]).unwrap().key;
    assert_eq!(issued, decoded);
}

#[test]
fn refuse_mode_counts_spellings_of_one_value_once() {
    let s = SessionStage::new(
        SessionConfig {
            cookie_names: vec!["sid".to_owned()],
            ambiguous: Ambiguity::Refuse,
            ..SessionConfig::default()
        },
        SessionHashKey::from_bytes([1; HASH_KEY_LEN]),
    );
    let c = creds(&s, &[("cookie", b"sid=\"a%62c\"; sid=abc")]);
    assert_eq!(c.problem(), None);
    assert_eq!(c.sessions().len(), 1);
}

#[test]
fn only_a_cookie_limit_is_a_problem_a_browser_can_cause() {
    assert!(!SessionError::TooManyCookies { count: 2, limit: 1 }.fails_closed());
    for e in [
        SessionError::SeveralAuthorizations,
        SessionError::TooManyCredentials { limit: 1 },
        SessionError::Ambiguous { count: 2 },
        SessionError::CredentialTooLong { len: 2, limit: 1 },
    ] {
        assert!(e.fails_closed(), "{e:?}");
    }
}
