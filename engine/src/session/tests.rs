use super::*;

fn stage(names: &[&str]) -> SessionStage {
    SessionStage::new(
        SessionConfig {
            cookie_names: names.iter().map(|s| s.to_string()).collect(),
            bearer: true,
            limits: SessionLimits::default(),
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

fn key(stage: &SessionStage, pairs: &[(&str, &[u8])]) -> Option<Session> {
    stage.identify(&headers(pairs)).unwrap()
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
fn earlier_configured_cookie_name_wins_regardless_of_order() {
    let s = stage(&["primary", "fallback"]);
    let got = key(&s, &[("cookie", b"fallback=f; primary=p")]).unwrap();
    assert_eq!(got.source, CredentialSource::Cookie(0));
    let only_fallback = key(&s, &[("cookie", b"fallback=f")]).unwrap();
    assert_eq!(only_fallback.source, CredentialSource::Cookie(1));
}

#[test]
fn bearer_tokens_identify_sessions_when_no_cookie() {
    let s = stage(&["sid"]);
    let a = key(&s, &[("authorization", b"Bearer tok.en.value")]).unwrap();
    let b = key(&s, &[("authorization", b"bearer   tok.en.value  ")]).unwrap();
    assert_eq!(a.source, CredentialSource::Bearer);
    assert_eq!(
        a.key, b.key,
        "scheme is case-insensitive, whitespace trimmed"
    );
    let with_cookie = key(
        &s,
        &[
            ("authorization", b"Bearer tok.en.value"),
            ("cookie", b"sid=c"),
        ],
    )
    .unwrap();
    assert_eq!(with_cookie.source, CredentialSource::Cookie(0));
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
    let k1 = SessionStage::new(
        SessionConfig::default(),
        SessionHashKey::from_bytes([1; 32]),
    )
    .identify(&h)
    .unwrap()
    .unwrap();
    let k2 = SessionStage::new(
        SessionConfig::default(),
        SessionHashKey::from_bytes([2; 32]),
    )
    .identify(&h)
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
    let err = s
        .identify(&headers(&[("cookie", many.as_bytes())]))
        .unwrap_err();
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
        s.identify(&headers(&[("cookie", long.as_bytes())])),
        Err(SessionError::CredentialTooLong { len: 5000, .. })
    ));
    let long = format!("Bearer {}", "x".repeat(5000));
    assert!(matches!(
        s.identify(&headers(&[("authorization", long.as_bytes())])),
        Err(SessionError::CredentialTooLong { .. })
    ));
}

#[test]
fn non_utf8_cookie_header_is_an_error() {
    let s = stage(&["sid"]);
    assert_eq!(
        s.identify(&headers(&[("cookie", b"sid=\xff\xfe")])),
        Err(SessionError::CookieNotUtf8)
    );
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
        let _ = s.identify(&h);
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
        s.identify(&headers(&[("cookie", b"a=1; sid=abc")])),
        Err(SessionError::TooManyCookies { limit: 1, .. })
    ));
}
