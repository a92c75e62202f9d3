//! An identity provider's session, as the fleet names it: the keyed hash
//! of the provider's issuer and the `sid` of an ID token it issued, under
//! the fleet's user key. A node learns one at each step-up whose ID token
//! carries `sid`; the controller computes the same from a logout that
//! names the provider session, so that the two meet without the raw `sid`
//! ever being stored or sent.

use crate::session::SessionHashKey;

/// Longest `sid` taken (bytes); a longer one names no session.
pub const MAX_SID_BYTES: usize = 256;

/// An identity provider session's key: 16 bytes of BLAKE3 in keyed mode,
/// in a domain of its own (it can equal no user or session key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdpSessionKey(pub [u8; 16]);

impl IdpSessionKey {
    /// The key of the session `sid` of the provider `issuer` in a fleet
    /// whose user key is `key` (what [`crate::Engine::idp_session_key`]
    /// gives on every node). `None` for a `sid` that is empty, longer than
    /// [`MAX_SID_BYTES`] or holds anything but visible ASCII (OpenID
    /// Connect's `sid` is a string; nothing longer or stranger is one a
    /// provider sends).
    pub fn for_sid(key: &SessionHashKey, issuer: &str, sid: &str) -> Option<Self> {
        Self::derive(key.as_bytes(), issuer, sid)
    }

    pub(crate) fn derive(secret: &[u8; 32], issuer: &str, sid: &str) -> Option<Self> {
        let ok = !sid.is_empty()
            && sid.len() <= MAX_SID_BYTES
            && sid.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return None;
        }
        let mut h = blake3::Hasher::new_keyed(secret);
        h.update(b"idp-session\0");
        // The issuer's length first: no issuer/sid pair can be read as
        // another.
        h.update(&(issuer.len() as u64).to_le_bytes());
        h.update(issuer.as_bytes());
        h.update(sid.as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize().as_bytes()[..16]);
        Some(Self(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_session_of_the_same_issuer_is_the_same_key_and_nothing_else_is() {
        let key = SessionHashKey::from_bytes([7; 32]);
        let a = IdpSessionKey::for_sid(&key, "https://idp.example", "s1").unwrap();
        assert_eq!(
            IdpSessionKey::for_sid(&key, "https://idp.example", "s1"),
            Some(a)
        );
        for (issuer, sid) in [
            ("https://idp.example", "s2"),
            ("https://other.example", "s1"),
            ("https://idp.examples", "1"),
        ] {
            assert_ne!(IdpSessionKey::for_sid(&key, issuer, sid), Some(a));
        }
        let other = SessionHashKey::from_bytes([8; 32]);
        assert_ne!(
            IdpSessionKey::for_sid(&other, "https://idp.example", "s1"),
            Some(a)
        );
        for bad in ["", "a b", "é", &"x".repeat(257)] {
            assert_eq!(
                IdpSessionKey::for_sid(&key, "https://idp.example", bad),
                None
            );
        }
    }
}
