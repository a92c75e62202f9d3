//! The seal as an attacker meets it: every byte of untrusted input read
//! within bounds, nothing forged or edited opens.

use proptest::prelude::*;

use super::*;

fn sealer() -> Sealer {
    Sealer::new(&SessionHashKey::from_bytes([3; 32]), None)
}

fn seal() -> Seal {
    Seal {
        session: SessionKey::from_bytes([9; 16]),
        generation: 7,
        nonce: 0xdead_beef,
        issued_at: 1_700_000_000,
        scope: Scope::of(Some("example.com"), Some("/"), SameSite::Strict),
    }
}

#[test]
fn a_seal_opens_to_what_was_sealed() {
    let s = sealer();
    let value = s.seal(&seal()).unwrap();
    assert!(value.len() <= MAX_COMPANION_LEN);
    assert_eq!(s.unseal(value.as_bytes()), Ok(seal()));
}

/// A seal of format 1, as nodes made before format 2: the random-nonce
/// AES-GCM seal under the fleet's one derived key.
fn seal_1(s: &Sealer, seal: &Seal) -> String {
    let nonce = [0x5a; NONCE_LEN];
    let mut buf = Vec::new();
    buf.extend_from_slice(&seal.generation.to_le_bytes());
    buf.extend_from_slice(&seal.nonce.to_le_bytes());
    buf.extend_from_slice(&seal.issued_at.to_le_bytes());
    buf.extend_from_slice(seal.session.as_bytes());
    buf.push(seal.scope.flags());
    buf.push(seal.scope.domain.len);
    buf.extend_from_slice(seal.scope.domain.as_bytes());
    buf.push(seal.scope.path.len);
    buf.extend_from_slice(seal.scope.path.as_bytes());
    s.current_1
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(AAD_1),
            &mut buf,
        )
        .unwrap();
    let mut out = vec![VERSION_1];
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&buf);
    URL_SAFE_NO_PAD.encode(out)
}

#[test]
fn the_longest_scope_fits_the_bound() {
    let s = sealer();
    let long = "a".repeat(MAX_SCOPE_ATTR);
    let mut v = seal();
    v.scope = Scope::of(Some(&long), Some(&long), SameSite::None).partitioned(true);
    let value = s.seal(&v).unwrap();
    assert!(value.len() <= MAX_COMPANION_LEN, "{}", value.len());
    assert_eq!(s.unseal(value.as_bytes()), Ok(v));
    // A domain one byte longer is no host's: the default scope is used.
    let longer = "a".repeat(MAX_SCOPE_ATTR + 1);
    assert_eq!(
        Scope::of(Some(&longer), None, SameSite::Lax),
        Scope::DEFAULT
    );
}

/// An app whose session cookie lives on a long path: the companion keeps
/// the longest `/`-ended prefix that fits, so it is sent with every
/// request the app cookie is sent with (and seals and opens as such).
#[test]
fn a_long_path_is_cut_to_a_prefix_the_app_cookie_lies_under() {
    let segment = "segment-of-thirty-one-bytes-xx/";
    let long = format!("/{}", segment.repeat(10)); // 311 bytes
    assert!(long.len() > MAX_SCOPE_ATTR);
    let scope = Scope::of(None, Some(&long), SameSite::Lax);
    let cut = scope.path.as_str();
    assert!(cut.len() <= MAX_SCOPE_ATTR && cut.ends_with('/'), "{cut}");
    assert!(long.starts_with(cut), "{cut}");
    assert_eq!(cut.len(), 1 + 31 * 8);
    assert!(!scope.is_host_wide());
    let c = scope.set_cookie("vigil_bind", "v");
    assert!(c.starts_with("vigil_bind=v; Path=/segment-of"), "{c}");
    let s = sealer();
    let mut v = seal();
    v.scope = scope;
    assert_eq!(s.unseal(s.seal(&v).unwrap().as_bytes()), Ok(v));
    // No `/` to cut at past the first: the whole host.
    let one = format!("/{}", "x".repeat(300));
    assert_eq!(
        Scope::of(None, Some(&one), SameSite::Lax).path.as_str(),
        "/"
    );
}

#[test]
fn same_site_is_mirrored_exactly_and_partitioned_is_copied() {
    let c = Scope::of(Some("example.com"), Some("/app"), SameSite::Unset).set_cookie("b", "v");
    assert!(!c.contains("SameSite"), "{c}");
    assert!(!c.contains("Partitioned"), "{c}");
    for (mode, attr) in [
        (SameSite::Lax, "; SameSite=Lax"),
        (SameSite::Strict, "; SameSite=Strict"),
        (SameSite::None, "; SameSite=None"),
    ] {
        let c = Scope::of(None, Some("/app"), mode).set_cookie("b", "v");
        assert!(c.contains(attr), "{c}");
        assert_eq!(c.matches("SameSite").count(), 1, "{c}");
    }
    let scope = Scope::of(None, Some("/"), SameSite::None).partitioned(true);
    let c = scope.set_cookie("b", "v");
    assert!(c.ends_with("; SameSite=None; Partitioned"), "{c}");
    // Carried through the seal, so that a rotation keeps it.
    let s = sealer();
    let mut v = seal();
    v.scope = scope;
    assert_eq!(s.unseal(s.seal(&v).unwrap().as_bytes()), Ok(v));
}

#[test]
fn a_host_wide_companion_is_named_with_the_host_prefix_and_no_other_is() {
    for scope in [
        Scope::DEFAULT,
        Scope::of(None, None, SameSite::Lax),
        Scope::of(None, Some("/"), SameSite::Strict),
    ] {
        let c = scope.set_cookie("vigil_bind", "v");
        assert!(c.starts_with("__Host-vigil_bind=v; Path=/;"), "{c}");
        assert!(c.contains("; Secure") && !c.contains("Domain"), "{c}");
    }
    for scope in [
        Scope::of(Some("example.com"), Some("/"), SameSite::Lax),
        Scope::of(None, Some("/app"), SameSite::Lax),
    ] {
        let c = scope.set_cookie("vigil_bind", "v");
        assert!(c.starts_with("vigil_bind=v;"), "{c}");
    }
}

/// Format 1 seals, made before format 2, open during the change (under
/// the current and the retiring key); new seals are format 3.
#[test]
fn format_1_seals_still_open_and_new_seals_are_format_3() {
    let s = sealer();
    let v1 = seal_1(&s, &seal());
    assert_eq!(s.unseal(v1.as_bytes()), Ok(seal()));
    let new = Sealer::new(
        &SessionHashKey::from_bytes([4; 32]),
        Some(&SessionHashKey::from_bytes([3; 32])),
    );
    assert_eq!(new.unseal(v1.as_bytes()), Ok(seal()));
    let v3 = s.seal(&seal()).unwrap();
    assert_eq!(URL_SAFE_NO_PAD.decode(&v3).unwrap()[0], 3);
    // Format 1 never carried `Partitioned` nor long attributes: a format 1
    // value claiming either is not one any node wrote.
    let mut p = seal();
    p.scope = p.scope.partitioned(true);
    assert_eq!(s.unseal(seal_1(&s, &p).as_bytes()), Err(UnsealError::Seal));
    let mut long = seal();
    long.scope = Scope::of(Some(&"a".repeat(49)), None, SameSite::Lax);
    assert_eq!(
        s.unseal(seal_1(&s, &long).as_bytes()),
        Err(UnsealError::Seal)
    );
    // An unknown version is refused as such.
    for version in [0, 4, 0xff] {
        let mut raw = URL_SAFE_NO_PAD.decode(&v3).unwrap();
        raw[0] = version;
        assert_eq!(
            s.unseal(URL_SAFE_NO_PAD.encode(&raw).as_bytes()),
            Err(UnsealError::Version)
        );
    }
}

/// Format 2 seals (AES-256-GCM under a per-seal key), made before format
/// 3, open during the change, under the current and the retiring key,
/// with every scope they could carry; the same fields sealed in format 3
/// open to the same seal.
#[test]
fn format_2_seals_still_open_beside_format_3() {
    let s = sealer();
    let mut v = seal();
    v.scope = Scope::of(Some(&"d".repeat(253)), Some("/app/"), SameSite::None).partitioned(true);
    let v2 = s.seal_as(VERSION_2, &v).unwrap();
    let v3 = s.seal(&v).unwrap();
    // The same size: only the AEAD differs.
    assert_eq!(v2.len(), v3.len());
    assert_eq!(URL_SAFE_NO_PAD.decode(&v2).unwrap()[0], 2);
    assert_eq!(s.unseal(v2.as_bytes()), Ok(v));
    assert_eq!(s.unseal(v3.as_bytes()), Ok(v));
    let new = Sealer::new(
        &SessionHashKey::from_bytes([4; 32]),
        Some(&SessionHashKey::from_bytes([3; 32])),
    );
    assert_eq!(new.unseal(v2.as_bytes()), Ok(v));
    assert_eq!(new.unseal(v3.as_bytes()), Ok(v));
    // Under a key the node does not hold, neither opens.
    let other = Sealer::new(&SessionHashKey::from_bytes([4; 32]), None);
    assert_eq!(other.unseal(v2.as_bytes()), Err(UnsealError::Seal));
    assert_eq!(other.unseal(v3.as_bytes()), Err(UnsealError::Seal));
}

/// A seal relabelled as the other format (version byte 2 ↔ 3) opens
/// nothing: the version is authenticated, and each format derives its
/// per-seal keys from a master key of its own, so that no key ever serves
/// both AEADs.
#[test]
fn a_seal_relabelled_as_the_other_format_opens_nothing() {
    let s = sealer();
    for (value, to) in [
        (s.seal(&seal()).unwrap(), VERSION_2),
        (s.seal_as(VERSION_2, &seal()).unwrap(), VERSION),
    ] {
        let mut raw = URL_SAFE_NO_PAD.decode(&value).unwrap();
        raw[0] = to;
        assert_eq!(
            s.unseal(URL_SAFE_NO_PAD.encode(&raw).as_bytes()),
            Err(UnsealError::Seal)
        );
    }
    assert_ne!(s.current, s.current_2);
}

/// Formats 3 and 2: each seal has a salt of its own, and so a key of its
/// own; the same fields sealed twice share no salt and no ciphertext, and
/// a salt moved onto another seal's body opens nothing.
#[test]
fn every_seal_has_its_own_salt_and_a_salt_swapped_in_opens_nothing() {
    let s = sealer();
    for version in [VERSION, VERSION_2] {
        let a = URL_SAFE_NO_PAD
            .decode(s.seal_as(version, &seal()).unwrap())
            .unwrap();
        let b = URL_SAFE_NO_PAD
            .decode(s.seal_as(version, &seal()).unwrap())
            .unwrap();
        assert_ne!(a[1..1 + SALT_LEN], b[1..1 + SALT_LEN]);
        assert_ne!(a[1 + SALT_LEN..], b[1 + SALT_LEN..]);
        let mut swapped = a.clone();
        swapped[1..1 + SALT_LEN].copy_from_slice(&b[1..1 + SALT_LEN]);
        assert_eq!(
            s.unseal(URL_SAFE_NO_PAD.encode(&swapped).as_bytes()),
            Err(UnsealError::Seal)
        );
    }
}

#[test]
fn every_single_bit_flip_is_refused() {
    let s = sealer();
    for version in [VERSION, VERSION_2] {
        let value = s.seal_as(version, &seal()).unwrap();
        let raw = URL_SAFE_NO_PAD.decode(&value).unwrap();
        for i in 0..raw.len() * 8 {
            let mut edited = raw.clone();
            edited[i / 8] ^= 1 << (i % 8);
            let v = URL_SAFE_NO_PAD.encode(&edited);
            assert!(s.unseal(v.as_bytes()).is_err(), "format {version}, bit {i}");
        }
    }
}

#[test]
fn another_fleets_seal_is_refused_and_the_retiring_key_still_opens() {
    let old = SessionHashKey::from_bytes([3; 32]);
    let new = SessionHashKey::from_bytes([4; 32]);
    let value = Sealer::new(&old, None).seal(&seal()).unwrap();
    assert_eq!(
        Sealer::new(&new, None).unseal(value.as_bytes()),
        Err(UnsealError::Seal)
    );
    assert_eq!(
        Sealer::new(&new, Some(&old)).unseal(value.as_bytes()),
        Ok(seal())
    );
}

#[test]
fn padded_standard_base64_and_overlong_values_are_refused() {
    let s = sealer();
    let value = s.seal(&seal()).unwrap();
    assert!(s.unseal(format!("{value}=").as_bytes()).is_err());
    assert!(
        s.unseal(value.replace('-', "+").replace('_', "/").as_bytes())
            .is_err()
            || !value.contains(['-', '_'])
    );
    assert_eq!(
        s.unseal("A".repeat(MAX_COMPANION_LEN + 1).as_bytes()),
        Err(UnsealError::Length)
    );
    assert_eq!(s.unseal(b""), Err(UnsealError::Length));
}

proptest! {
    #[test]
    fn unsealing_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = sealer().unseal(&bytes);
    }

    #[test]
    fn unsealing_any_base64url_never_opens(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let v = URL_SAFE_NO_PAD.encode(&bytes);
        prop_assert!(sealer().unseal(v.as_bytes()).is_err());
    }

    #[test]
    fn any_seal_round_trips(
        session in any::<[u8; 16]>(),
        generation in 1u32..,
        nonce in 1u32..,
        issued_at in any::<u32>(),
        domain in "[a-z.]{0,253}",
        path in "/[a-z/]{0,400}",
        mode in 0u8..4,
        partitioned in any::<bool>(),
    ) {
        let same_site = [SameSite::Unset, SameSite::Lax, SameSite::Strict, SameSite::None][usize::from(mode)];
        let v = Seal {
            session: SessionKey::from_bytes(session),
            generation,
            nonce,
            issued_at,
            scope: Scope::of(Some(&domain), Some(&path), same_site).partitioned(partitioned),
        };
        let s = sealer();
        let value = s.seal(&v).unwrap();
        prop_assert!(value.len() <= MAX_COMPANION_LEN);
        prop_assert_eq!(s.unseal(value.as_bytes()), Ok(v));
        // The path kept is one the app's lies under.
        prop_assert!(path.starts_with(v.scope.path.as_str()));
    }

    /// Any format 2 seal a node wrote opens to its fields under format 3's
    /// sealer, through the whole change.
    #[test]
    fn any_format_2_seal_still_opens(
        session in any::<[u8; 16]>(),
        generation in 1u32..,
        nonce in 1u32..,
        domain in "[a-z.]{0,253}",
        path in "/[a-z/]{0,254}",
        partitioned in any::<bool>(),
    ) {
        let v = Seal {
            session: SessionKey::from_bytes(session),
            generation,
            nonce,
            issued_at: 1_700_000_000,
            scope: Scope::of(Some(&domain), Some(&path), SameSite::Lax).partitioned(partitioned),
        };
        let s = sealer();
        prop_assert_eq!(s.unseal(s.seal_as(VERSION_2, &v).unwrap().as_bytes()), Ok(v));
    }

    /// Any format 1 seal a node wrote opens to its fields under format 3's
    /// sealer, through the whole change.
    #[test]
    fn any_format_1_seal_still_opens(
        session in any::<[u8; 16]>(),
        generation in 1u32..,
        nonce in 1u32..,
        domain in "[a-z.]{0,48}",
        path in "/[a-z/]{0,47}",
    ) {
        let v = Seal {
            session: SessionKey::from_bytes(session),
            generation,
            nonce,
            issued_at: 1_700_000_000,
            scope: Scope::of(Some(&domain), Some(&path), SameSite::Lax),
        };
        let s = sealer();
        prop_assert_eq!(s.unseal(seal_1(&s, &v).as_bytes()), Ok(v));
    }

    /// Two companions under the bare name and the `__Host-` name: the
    /// `__Host-` one naming the session is the one read, whatever the
    /// bare one carries or where it stands in the header.
    #[test]
    fn a_host_named_companion_is_never_outweighed_by_a_bare_one(
        later in 8u32..1000, bare_first in any::<bool>(),
    ) {
        let s = sealer();
        let mine = s.seal(&seal()).unwrap();
        let mut tossed = seal();
        tossed.generation = later;
        tossed.nonce = 77;
        let tossed = s.seal(&tossed).unwrap();
        let cookie = if bare_first {
            format!("vigil_bind={tossed}; __Host-vigil_bind={mine}")
        } else {
            format!("__Host-vigil_bind={mine}; vigil_bind={tossed}")
        };
        let mut h = http::HeaderMap::new();
        h.insert(http::header::COOKIE, cookie.parse().unwrap());
        let c = Companions::read(&s, &h, "vigil_bind");
        prop_assert_eq!(c.for_session(seal().session, None), Companion::Sealed(seal()));
        prop_assert!(!c.unprefixed(seal().session, None));
    }
}

/// Browsers trim only spaces and tabs around a cookie's name and value: a
/// name with a form feed, CR or LF before it is another cookie's, never
/// the `__Host-` companion.
#[test]
fn only_spaces_and_tabs_are_trimmed_from_cookie_names_and_values() {
    let pairs: Vec<(&[u8], &[u8])> =
        strict_pairs(b" \t__Host-vigil_bind = a \t;\x0c__Host-vigil_bind=b;\r\nvigil_bind=c\x0b")
            .collect();
    assert_eq!(
        pairs,
        vec![
            (&b"__Host-vigil_bind"[..], &b"a"[..]),
            (&b"\x0c__Host-vigil_bind"[..], &b"b"[..]),
            (&b"\r\nvigil_bind"[..], &b"c\x0b"[..]),
        ]
    );
    assert_eq!(companion_name(pairs[1].0, "vigil_bind"), None);
    assert_eq!(companion_name(pairs[2].0, "vigil_bind"), None);
    assert_eq!(trim_sp_tab(b" \t "), b"");
}

/// A `__Host-` value and four bare ones a sibling tossed in, in either
/// order: each name has its own cap, and the single reading the bench and
/// fuzz target use agrees with the engine's ([`Companions`]): the
/// `__Host-` value, not a duplicate.
#[test]
fn the_single_reading_agrees_with_the_per_session_one() {
    let s = sealer();
    let mine = s.seal(&seal()).unwrap();
    let bare = "vigil_bind=j1; vigil_bind=j2; vigil_bind=j3; vigil_bind=j4; vigil_bind=j5";
    for cookie in [
        format!("{bare}; __Host-vigil_bind={mine}"),
        format!("__Host-vigil_bind={mine}; {bare}"),
    ] {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::COOKIE, cookie.parse().unwrap());
        let c = Companions::read(&s, &h, "vigil_bind");
        assert_eq!(
            c.for_session(seal().session, None),
            Companion::Sealed(seal())
        );
        assert_eq!(
            Companion::read(&s, &h, "vigil_bind"),
            Companion::Sealed(seal())
        );
    }
    // Bare only: five are more than are read; two different ones are
    // duplicated; one is read.
    let mut h = http::HeaderMap::new();
    h.insert(http::header::COOKIE, bare.parse().unwrap());
    assert_eq!(Companion::read(&s, &h, "vigil_bind"), Companion::Duplicated);
    h.insert(
        http::header::COOKIE,
        format!("vigil_bind={mine}; vigil_bind={mine}")
            .parse()
            .unwrap(),
    );
    assert_eq!(
        Companion::read(&s, &h, "vigil_bind"),
        Companion::Sealed(seal())
    );
    h.insert(
        http::header::COOKIE,
        format!("vigil_bind={mine}; vigil_bind=x").parse().unwrap(),
    );
    assert_eq!(Companion::read(&s, &h, "vigil_bind"), Companion::Duplicated);
}

/// `[binding] domain` is used only for a host that is the domain or lies
/// under it.
#[test]
fn the_configured_domain_covers_only_hosts_under_it() {
    let c = BindingConfig {
        domain: Some("example.com".into()),
        ..BindingConfig::default()
    };
    for host in [
        "example.com",
        "app.example.com",
        "A.B.Example.COM",
        "app.example.com.",
    ] {
        assert!(c.covers(host), "{host}");
    }
    for host in [
        "",
        "com",
        "badexample.com",
        "example.com.evil.test",
        "example.org",
        ".example.com",
    ] {
        assert!(!c.covers(host), "{host}");
    }
    assert!(!BindingConfig::default().covers("example.com"));
    assert_eq!(c.fallback_scope(false), Scope::DEFAULT);
    assert!(c.fallback_scope(true).has_domain());
}

/// The per-session state stays as small as documented
/// (docs/bound-sessions.md, "State and cost").
#[test]
fn a_binding_state_is_28_bytes() {
    assert_eq!(std::mem::size_of::<BindingState>(), 28);
}

#[test]
fn a_full_store_evicts_a_sixteenth_even_when_every_entry_has_one_age() {
    let store = BindingStore::new(64 * 32, std::time::Duration::from_secs(3600));
    let state = BindingState {
        generation: 1,
        nonce: 1,
        previous_nonce: 0,
        issued_at: 100,
        ..BindingState::default()
    };
    for i in 0..10_000u32 {
        let mut k = [0u8; 16];
        k[..4].copy_from_slice(&i.to_le_bytes());
        k[15] = 0;
        store.update(SessionKey::from_bytes(k), 100, |_| Some(state));
    }
    // One shard, capped at 32: never emptied by a pass.
    assert!((30..=32).contains(&store.len()), "{}", store.len());
}

/// The binding store's tables, like the session store's
/// (`a_churned_full_store_keeps_its_tables_at_their_size`): a full large
/// store churned by a flood of new sessions keeps every shard's table at
/// the size its cap needs, instead of doubling on the tombstones its
/// evictions leave.
#[test]
fn a_churned_full_binding_store_keeps_its_tables_at_their_size() {
    let max = crate::shards::LARGE;
    let store = BindingStore::new(max as u64, std::time::Duration::from_secs(1 << 30));
    let (shards, cap) = crate::shards::large_layout(max).unwrap();
    assert_eq!((store.shards.len(), store.shard_cap), (shards, cap));
    let room = (cap * 8 / 7).next_power_of_two() / 8 * 7;
    for i in 0..(4 * max) as u64 {
        let h = blake3::hash(&i.to_le_bytes());
        let key = SessionKey::from_bytes(h.as_bytes()[..16].try_into().unwrap());
        let at = 1_000 + u32::try_from(i / 64).unwrap();
        store.update(key, u64::from(at), |_| {
            Some(BindingState {
                generation: 1,
                nonce: 1,
                issued_at: at,
                ..BindingState::default()
            })
        });
    }
    assert!(store.len() >= shards * cap * 3 / 4, "{}", store.len());
    let largest = store
        .shards
        .iter()
        .map(|s| s.lock().unwrap().capacity())
        .max()
        .unwrap();
    assert!(largest <= room, "{largest} > {room}");
}
