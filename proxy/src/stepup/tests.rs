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
        email: Some("alice@example.test".to_owned()),
        ..Claims::default()
    };
    assert_eq!(claims.user(UserClaim::Sub), Some("u-1"));
    assert_eq!(claims.user(UserClaim::Email), Some("alice@example.test"));
    // A name Vigil would trim is another account at the provider: nobody.
    for sub in [" ", "victim\u{a0}", " victim", "victim\n"] {
        let c = Claims {
            sub: sub.to_owned(),
            ..Claims::default()
        };
        assert_eq!(c.user(UserClaim::Sub), None, "{sub:?}");
    }
    // No verified email, no user by email.
    let unverified = Claims {
        sub: "u-2".to_owned(),
        ..Claims::default()
    };
    assert_eq!(unverified.user(UserClaim::Email), None);
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
        Problem::BadHost,
        Problem::Unavailable,
        Problem::BadCallback,
        Problem::StateUnknown,
        Problem::SessionMismatch,
        Problem::ProviderError,
        Problem::ExchangeFailed,
        Problem::TokenInvalid,
        Problem::NotFresh,
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

#[test]
fn the_callback_host_is_a_plain_host_and_port() {
    for ok in [
        "app.example.com",
        "app.example.com:8443",
        "127.0.0.1:80",
        "[::1]:8080",
        "[::1]",
    ] {
        assert_eq!(plain_authority(ok), Some(ok), "{ok}");
    }
    for hostile in [
        "app.example.com:@evil.example",
        "app.example.com:443/page?x=",
        "user@app.example.com",
        "app.example.com:",
        "app.example.com:99999x",
        "app.example.com:1:2",
        "[::1",
        "[::1]x",
        "[evil]:80",
        "",
        "app example",
    ] {
        assert_eq!(plain_authority(hostile), None, "{hostile:?}");
    }
    assert_eq!(plain_authority(&"a".repeat(256)), None);
}

#[test]
fn ipv6_clients_are_counted_by_their_64() {
    let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
    let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
    let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
    assert_eq!(network(a), network(b));
    assert_ne!(network(a), network(c));
    let v4: IpAddr = "192.0.2.7".parse().unwrap();
    assert_eq!(network(v4), v4);
}

/// The token of a link as the block page carries it.
fn token_of(link: &str) -> &str {
    link.split_once("?it_was_me=").unwrap().1
}

#[test]
fn an_it_was_me_link_is_good_for_its_own_session_device_route_and_block_only() {
    let ups = StepUps::new();
    let alice = LinkFor {
        route: "app",
        session: SessionKey::from_bytes([1; 16]),
        device: DeviceId(0xa11ce),
        browser: [7; 16],
    };
    let block = Reference(0x00ab_cdef_0123_4567);
    let now = 1_800_000_000;
    let link = ups.dispute_link("/cb", alice, block, "/account?tab=keys", now);
    assert!(link.starts_with("/cb?it_was_me="), "{link}");
    let token = token_of(&link);
    // A link is one query parameter of URL-safe characters.
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_'),
        "{token}"
    );
    assert_eq!(
        ups.dispute_of(token, alice, now + 1),
        Some((block, "/account?tab=keys".to_owned()))
    );

    // Another session (the owner's link sent to someone else), the same
    // session on another device (the thief's link passed to the owner,
    // or the owner's to the thief), another route, too late.
    let mallory = LinkFor {
        session: SessionKey::from_bytes([2; 16]),
        ..alice
    };
    let elsewhere = LinkFor {
        device: DeviceId(0xbad),
        ..alice
    };
    let admin = LinkFor {
        route: "admin",
        ..alice
    };
    // The same headers from another browser (an antidetect browser
    // copying the owner's): another mark.
    let copied = LinkFor {
        browser: [8; 16],
        ..alice
    };
    for other in [mallory, elsewhere, admin, copied] {
        assert_eq!(ups.dispute_of(token, other, now), None, "{other:?}");
    }
    let lifetime = LINK_LIFETIME.as_secs();
    assert!(ups.dispute_of(token, alice, now + lifetime).is_some());
    assert_eq!(ups.dispute_of(token, alice, now + lifetime + 1), None);
    // Another process's key (a restarted node, another node): nothing.
    assert_eq!(StepUps::new().dispute_of(token, alice, now), None);

    // Every field is covered: a changed expiry, block, page or tag fails,
    // and so does a token of the wrong shape or another spelling of the
    // same numbers.
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 4);
    let with = |i: usize, value: &str| {
        let mut p = parts.clone();
        p[i] = value;
        p.join(".")
    };
    let later = (now + 300 + lifetime).to_string();
    let other_block = Reference(block.0 + 1).to_string();
    let page = URL_SAFE_NO_PAD.encode("/admin");
    let mut tag = URL_SAFE_NO_PAD.decode(parts[3]).unwrap();
    tag[0] ^= 1;
    let flipped = URL_SAFE_NO_PAD.encode(&tag);
    for forged in [
        with(0, &later),
        with(0, &format!("+{}", parts[0])),
        with(0, &format!("0{}", parts[0])),
        with(1, &other_block),
        with(1, &parts[1].to_ascii_uppercase()),
        with(2, &page),
        with(3, &flipped),
        with(3, ""),
        format!("{token}.x"),
        parts[..3].join("."),
        String::new(),
        "...".to_owned(),
    ] {
        if forged != token {
            assert_eq!(ups.dispute_of(&forged, alice, now), None, "{forged}");
        }
    }
    // A link whose expiry lies further ahead than any this node makes is
    // refused even though this node's key signed it.
    let far = ups.dispute_link("/cb", alice, block, "/", now + lifetime * 10);
    assert_eq!(ups.dispute_of(token_of(&far), alice, now), None);

    // The page to return to stays on this host, whatever was asked.
    let link = ups.dispute_link("/cb", alice, block, "//evil.example/", now);
    assert_eq!(
        ups.dispute_of(token_of(&link), alice, now),
        Some((block, "/".to_owned()))
    );
}

#[test]
fn a_link_in_a_callback_query_is_read_once_and_alone() {
    assert_eq!(dispute_token(None), None);
    assert_eq!(dispute_token(Some("code=a&state=s")), None);
    assert_eq!(dispute_token(Some("it_was_me=t1")).as_deref(), Some("t1"));
    assert_eq!(
        dispute_token(Some("x=1&it_was_me=t1")).as_deref(),
        Some("t1")
    );
    // Twice (a client choosing which counts), or mixed with a provider's
    // answer (a callback choosing to be a link): an empty token, which no
    // link matches.
    for query in [
        "it_was_me=t1&it_was_me=t2",
        "it_was_me=t1&%69t_was_me=t2",
        "it_was_me=t1&state=s&code=c",
        "error=x&it_was_me=t1",
    ] {
        assert_eq!(dispute_token(Some(query)).as_deref(), Some(""), "{query}");
    }
}

proptest::proptest! {
    /// Whatever a client puts in a link or a callback query, reading it
    /// never panics, and nothing but a link this node made is a link.
    #[test]
    fn no_made_up_link_is_taken(token in "[0-9a-zA-Z._%=&-]{0,300}", query in "\\PC{0,300}") {
        let ups = StepUps::new();
        let alice = LinkFor {
            route: "app",
            session: SessionKey::from_bytes([1; 16]),
            device: DeviceId(1),
            browser: [1; 16],
        };
        proptest::prop_assert_eq!(ups.dispute_of(&token, alice, 1_800_000_000), None);
        let _ = dispute_token(Some(&query));
        let _ = dispute_token(Some(&token));
    }
}

#[test]
fn a_browser_mark_is_one_cookie_of_32_hex_digits() {
    let headers = |values: &[&str]| {
        let mut h = http::HeaderMap::new();
        for v in values {
            h.append(http::header::COOKIE, v.parse().unwrap());
        }
        h
    };
    let good = "00112233445566778899aabbccddeeff";
    let mark = browser_mark(&headers(&[&format!("session=s; vigil-dispute={good}")]));
    assert_eq!(mark.map(hex::encode).as_deref(), Some(good));
    // Split across Cookie headers (HTTP/2) is still one.
    assert!(browser_mark(&headers(&["session=s", &format!("vigil-dispute={good}")])).is_some());
    for bad in [
        vec![format!("vigil-dispute={good}; vigil-dispute={good}")],
        vec![
            format!("vigil-dispute={good}"),
            format!("vigil-dispute={good}"),
        ],
        vec![format!("vigil-dispute={}", good.to_ascii_uppercase())],
        vec![format!("vigil-dispute={}", &good[1..])],
        vec![format!("vigil-dispute={good}0")],
        vec!["vigil-dispute=".to_owned()],
        vec!["session=s".to_owned()],
    ] {
        let values: Vec<&str> = bad.iter().map(String::as_str).collect();
        assert_eq!(browser_mark(&headers(&values)), None, "{bad:?}");
    }
    let cookie = browser_cookie(&[0xab; 16], "/cb", true);
    assert_eq!(
        cookie,
        format!(
            "vigil-dispute={}; Path=/cb; Max-Age=600; HttpOnly; SameSite=Lax; Secure",
            "ab".repeat(16)
        )
    );
}
