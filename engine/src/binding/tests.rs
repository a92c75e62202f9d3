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

#[test]
fn the_longest_scope_fits_the_bound() {
    let s = sealer();
    let long = "a".repeat(MAX_SCOPE_ATTR);
    let mut v = seal();
    v.scope = Scope::of(Some(&long), Some(&long), SameSite::None);
    let value = s.seal(&v).unwrap();
    assert!(value.len() <= MAX_COMPANION_LEN, "{}", value.len());
    assert_eq!(s.unseal(value.as_bytes()), Ok(v));
    // One byte more does not fit: the default scope is used.
    let longer = "a".repeat(MAX_SCOPE_ATTR + 1);
    assert_eq!(
        Scope::of(Some(&longer), None, SameSite::Lax),
        Scope::DEFAULT
    );
}

#[test]
fn every_single_bit_flip_is_refused() {
    let s = sealer();
    let value = s.seal(&seal()).unwrap();
    let raw = URL_SAFE_NO_PAD.decode(&value).unwrap();
    for i in 0..raw.len() * 8 {
        let mut edited = raw.clone();
        edited[i / 8] ^= 1 << (i % 8);
        let v = URL_SAFE_NO_PAD.encode(&edited);
        assert!(s.unseal(v.as_bytes()).is_err(), "bit {i}");
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
        domain in "[a-z.]{0,48}",
        path in "/[a-z/]{0,47}",
    ) {
        let v = Seal {
            session: SessionKey::from_bytes(session),
            generation,
            nonce,
            issued_at,
            scope: Scope::of(Some(&domain), Some(&path), SameSite::Lax),
        };
        let s = sealer();
        prop_assert_eq!(s.unseal(s.seal(&v).unwrap().as_bytes()), Ok(v));
    }
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
