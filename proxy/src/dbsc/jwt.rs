//! DBSC proofs: the compact JWS a browser signs with its session key
//! (`typ` `dbsc+jwt`), parsed within fixed bounds and verified with
//! `ring`.
//!
//! Why `ring` rather than a JOSE crate: it is already in the tree (rustls
//! and Pingora use it), it verifies exactly the two algorithms the draft
//! allows (ES256 as a fixed-width r‖s signature, RS256), and a proof is
//! three base64url parts and two small JSON objects: a JOSE crate would
//! add an algorithm-negotiation surface this endpoint must refuse anyway.
//! The draft's third algorithm, `none`, proves no possession and is
//! refused.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, UnparsedPublicKey};
use serde::Deserialize;

/// Longest proof accepted, in bytes: an RS256 proof with a 4096-bit key
/// in its header is about 1.5 KiB.
pub const MAX_PROOF_BYTES: usize = 8 * 1024;
/// Longest `jti` accepted (Vigil's challenges are 43 characters).
const MAX_JTI_BYTES: usize = 256;
/// Smallest and largest RSA modulus accepted, in bytes (2048 to 8192 bits,
/// ring's own range for PKCS#1 v1.5 with SHA-256).
const RSA_MODULUS_BYTES: std::ops::RangeInclusive<usize> = 256..=1024;

/// A public key a session is bound to, as registered.
#[derive(Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// P-256, the uncompressed SEC1 point `04 ‖ x ‖ y`.
    Es256(Box<[u8; 65]>),
    /// RSA: modulus and exponent, big-endian, without leading zeros.
    Rs256 { n: Box<[u8]>, e: Box<[u8]> },
}

/// A proof whose signature verified: its claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// The challenge the browser signed.
    pub jti: String,
    /// The key in the header (registration proofs only).
    pub key: Option<PublicKey>,
}

/// Why a proof was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// Not three base64url parts of JSON within the bounds.
    #[error("malformed proof")]
    Malformed,
    /// `typ` is not `dbsc+jwt`.
    #[error("typ is not dbsc+jwt")]
    BadType,
    /// `alg` is not ES256 or RS256, or not the registered key's.
    #[error("algorithm refused")]
    BadAlgorithm,
    /// The header's `jwk` is missing (registration), present (refresh),
    /// or not a usable key.
    #[error("bad or misplaced key")]
    BadKey,
    /// The signature does not verify with the key.
    #[error("signature does not verify")]
    BadSignature,
}

#[derive(Deserialize)]
struct Header {
    typ: Option<String>,
    alg: Option<String>,
    jwk: Option<Jwk>,
    /// Any `crit` makes the proof refused: Vigil understands no extension.
    crit: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
    /// Private members (EC `d`; RSA `d`, `p`, `q`, `dp`, `dq`, `qi`, `oth`):
    /// a key sent with its private part is not a device-bound key.
    d: Option<serde::de::IgnoredAny>,
    p: Option<serde::de::IgnoredAny>,
    q: Option<serde::de::IgnoredAny>,
    dp: Option<serde::de::IgnoredAny>,
    dq: Option<serde::de::IgnoredAny>,
    qi: Option<serde::de::IgnoredAny>,
    oth: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct Payload {
    jti: Option<String>,
}

/// The three parts of a compact JWS, decoded.
struct Parts<'a> {
    header: Header,
    payload: Payload,
    signed: &'a [u8],
    signature: Vec<u8>,
}

/// Verifies a registration proof: the key is the one in its header.
pub fn verify_registration(token: &str) -> Result<Proof, ProofError> {
    let parts = split(token)?;
    let jwk = parts.header.jwk.as_ref().ok_or(ProofError::BadKey)?;
    let key = key_of(parts.header.alg.as_deref(), jwk)?;
    check(&parts, &key)?;
    Ok(Proof {
        jti: jti_of(parts.payload)?,
        key: Some(key),
    })
}

/// Verifies a refresh proof with the session's registered key. The
/// header must not carry a key (the draft forbids it; a thief offering
/// his own would otherwise be a question of which key wins).
pub fn verify_refresh(token: &str, key: &PublicKey) -> Result<Proof, ProofError> {
    let parts = split(token)?;
    if parts.header.jwk.is_some() {
        return Err(ProofError::BadKey);
    }
    let alg_matches = matches!(
        (parts.header.alg.as_deref(), key),
        (Some("ES256"), PublicKey::Es256(_)) | (Some("RS256"), PublicKey::Rs256 { .. })
    );
    if !alg_matches {
        return Err(ProofError::BadAlgorithm);
    }
    check(&parts, key)?;
    Ok(Proof {
        jti: jti_of(parts.payload)?,
        key: None,
    })
}

/// A header value as sent: bare, or a structured-field string in quotes.
pub fn unquote(value: &str) -> &str {
    let v = value.trim();
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

fn split(token: &str) -> Result<Parts<'_>, ProofError> {
    let token = unquote(token);
    if token.len() > MAX_PROOF_BYTES {
        return Err(ProofError::Malformed);
    }
    let mut it = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(ProofError::Malformed);
    };
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| ProofError::Malformed)
    };
    let header: Header = serde_json::from_slice(&decode(h)?).map_err(|_| ProofError::Malformed)?;
    let payload: Payload =
        serde_json::from_slice(&decode(p)?).map_err(|_| ProofError::Malformed)?;
    if header.typ.as_deref() != Some("dbsc+jwt") {
        return Err(ProofError::BadType);
    }
    if header.crit.is_some() {
        return Err(ProofError::Malformed);
    }
    let signed = token
        .get(..h.len() + 1 + p.len())
        .ok_or(ProofError::Malformed)?
        .as_bytes();
    Ok(Parts {
        header,
        payload,
        signed,
        signature: decode(s)?,
    })
}

fn key_of(alg: Option<&str>, jwk: &Jwk) -> Result<PublicKey, ProofError> {
    let private = [&jwk.d, &jwk.p, &jwk.q, &jwk.dp, &jwk.dq, &jwk.qi, &jwk.oth];
    if private.iter().any(|m| m.is_some()) {
        return Err(ProofError::BadKey);
    }
    let field = |v: &Option<String>| {
        v.as_deref()
            .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
            .ok_or(ProofError::BadKey)
    };
    match (alg, jwk.kty.as_deref()) {
        (Some("ES256"), Some("EC")) => {
            if jwk.crv.as_deref() != Some("P-256") {
                return Err(ProofError::BadKey);
            }
            let (x, y) = (field(&jwk.x)?, field(&jwk.y)?);
            if x.len() != 32 || y.len() != 32 {
                return Err(ProofError::BadKey);
            }
            let mut point = Box::new([0u8; 65]);
            point[0] = 4;
            point[1..33].copy_from_slice(&x);
            point[33..].copy_from_slice(&y);
            Ok(PublicKey::Es256(point))
        }
        (Some("RS256"), Some("RSA")) => {
            let (n, e) = (field(&jwk.n)?, field(&jwk.e)?);
            let n = strip_zeros(&n);
            let e = strip_zeros(&e);
            if !RSA_MODULUS_BYTES.contains(&n.len()) || e.is_empty() || e.len() > 4 {
                return Err(ProofError::BadKey);
            }
            Ok(PublicKey::Rs256 {
                n: n.into(),
                e: e.into(),
            })
        }
        (Some("ES256" | "RS256"), _) => Err(ProofError::BadKey),
        _ => Err(ProofError::BadAlgorithm),
    }
}

fn check(parts: &Parts<'_>, key: &PublicKey) -> Result<(), ProofError> {
    let ok = match key {
        PublicKey::Es256(point) => {
            UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point[..])
                .verify(parts.signed, &parts.signature)
                .is_ok()
        }
        PublicKey::Rs256 { n, e } => signature::RsaPublicKeyComponents { n, e }
            .verify(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                parts.signed,
                &parts.signature,
            )
            .is_ok(),
    };
    if ok {
        Ok(())
    } else {
        Err(ProofError::BadSignature)
    }
}

fn jti_of(payload: Payload) -> Result<String, ProofError> {
    match payload.jti {
        Some(j) if !j.is_empty() && j.len() <= MAX_JTI_BYTES => Ok(j),
        _ => Err(ProofError::Malformed),
    }
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[first..]
}

// === impl PublicKey ===

impl PublicKey {
    /// Bytes held for the key (for the store's memory report).
    pub fn heap_bytes(&self) -> usize {
        match self {
            PublicKey::Es256(_) => 65,
            PublicKey::Rs256 { n, e } => n.len() + e.len(),
        }
    }

    /// Vigil's own encoding, as the fleet and the snapshot carry it:
    /// `1 ‖ SEC1 point` for P-256, `2 ‖ len(e) ‖ e ‖ n` for RSA.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            PublicKey::Es256(point) => [&[1u8][..], &point[..]].concat(),
            PublicKey::Rs256 { n, e } => {
                let len = u8::try_from(e.len()).unwrap_or(0);
                [&[2u8, len][..], e, n].concat()
            }
        }
    }

    /// Reads [`PublicKey::to_bytes`] back, within the bounds a proof's key
    /// is held to; `None` for anything else.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        match b {
            [1, point @ ..] if point.len() == 65 && point[0] == 4 => {
                let mut p = Box::new([0u8; 65]);
                p.copy_from_slice(point);
                Some(PublicKey::Es256(p))
            }
            [2, len, rest @ ..] => {
                let len = usize::from(*len);
                if !(1..=4).contains(&len) || rest.len() < len {
                    return None;
                }
                let (e, n) = rest.split_at(len);
                (RSA_MODULUS_BYTES.contains(&n.len()) && n[0] != 0 && e[0] != 0).then(|| {
                    PublicKey::Rs256 {
                        n: n.into(),
                        e: e.into(),
                    }
                })
            }
            _ => None,
        }
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublicKey::Es256(_) => f.write_str("PublicKey::Es256"),
            PublicKey::Rs256 { n, .. } => write!(f, "PublicKey::Rs256({} bits)", n.len() * 8),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

    fn b64(b: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(b)
    }

    fn key() -> EcdsaKeyPair {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap()
    }

    fn sign(k: &EcdsaKeyPair, header: &serde_json::Value, jti: &str) -> String {
        let h = b64(header.to_string().as_bytes());
        let p = b64(serde_json::json!({ "jti": jti }).to_string().as_bytes());
        let input = format!("{h}.{p}");
        let sig = k.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    }

    fn jwk(k: &EcdsaKeyPair) -> serde_json::Value {
        let pt = k.public_key().as_ref();
        serde_json::json!({"kty":"EC","crv":"P-256","x":b64(&pt[1..33]),"y":b64(&pt[33..])})
    }

    #[test]
    fn registration_then_refresh_with_the_same_key() {
        let k = key();
        let reg = sign(
            &k,
            &serde_json::json!({"alg":"ES256","typ":"dbsc+jwt","jwk":jwk(&k)}),
            "c1",
        );
        let proof = verify_registration(&reg).unwrap();
        assert_eq!(proof.jti, "c1");
        let registered = proof.key.unwrap();
        let refresh = sign(
            &k,
            &serde_json::json!({"alg":"ES256","typ":"dbsc+jwt"}),
            "c2",
        );
        assert_eq!(verify_refresh(&refresh, &registered).unwrap().jti, "c2");
        // Quoted as a structured-field string: the same proof.
        assert!(verify_refresh(&format!("\"{refresh}\""), &registered).is_ok());
    }

    #[test]
    fn foreign_key_bad_typ_alg_and_shapes_are_refused() {
        let (k, thief) = (key(), key());
        let registered = verify_registration(&sign(
            &k,
            &serde_json::json!({"alg":"ES256","typ":"dbsc+jwt","jwk":jwk(&k)}),
            "c",
        ))
        .unwrap()
        .key
        .unwrap();
        let h = serde_json::json!({"alg":"ES256","typ":"dbsc+jwt"});
        assert_eq!(
            verify_refresh(&sign(&thief, &h, "c"), &registered),
            Err(ProofError::BadSignature)
        );
        let jwt = serde_json::json!({"alg":"ES256","typ":"JWT"});
        assert_eq!(
            verify_refresh(&sign(&k, &jwt, "c"), &registered),
            Err(ProofError::BadType)
        );
        let rs = serde_json::json!({"alg":"RS256","typ":"dbsc+jwt"});
        assert_eq!(
            verify_refresh(&sign(&k, &rs, "c"), &registered),
            Err(ProofError::BadAlgorithm)
        );
        let none = serde_json::json!({"alg":"none","typ":"dbsc+jwt","jwk":jwk(&k)});
        assert_eq!(
            verify_registration(&sign(&k, &none, "c")),
            Err(ProofError::BadAlgorithm)
        );
        // A private member in the key, or any `crit`: refused.
        let mut private = jwk(&k);
        private["d"] = serde_json::json!("AAAA");
        let h = serde_json::json!({"alg":"ES256","typ":"dbsc+jwt","jwk":private});
        assert_eq!(
            verify_registration(&sign(&k, &h, "c")),
            Err(ProofError::BadKey)
        );
        let crit = serde_json::json!({"alg":"ES256","typ":"dbsc+jwt","jwk":jwk(&k),"crit":["x"]});
        assert_eq!(
            verify_registration(&sign(&k, &crit, "c")),
            Err(ProofError::Malformed)
        );
        // A key in a refresh header: refused, whoever's it is.
        let with_key = serde_json::json!({"alg":"ES256","typ":"dbsc+jwt","jwk":jwk(&k)});
        assert_eq!(
            verify_refresh(&sign(&k, &with_key, "c"), &registered),
            Err(ProofError::BadKey)
        );
        // The thief's registration proof verifies, with the thief's key.
        let stolen = sign(
            &thief,
            &serde_json::json!({"alg":"ES256","typ":"dbsc+jwt","jwk":jwk(&k)}),
            "c",
        );
        assert_eq!(verify_registration(&stolen), Err(ProofError::BadSignature));
        for bad in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.!!.!!",
            &"a".repeat(MAX_PROOF_BYTES + 1),
        ] {
            assert_eq!(
                verify_registration(bad),
                Err(ProofError::Malformed),
                "{bad:.20}"
            );
        }
    }

    /// RS256, which the draft allows and Chromium does not use: a 2048-bit
    /// test key (`testdata/rsa2048.der`, PKCS#1 DER made with `openssl genpkey` and `openssl rsa -traditional`,
    /// used nowhere else).
    #[test]
    fn rs256_registration_and_refresh() {
        let der = include_bytes!("testdata/rsa2048.der");
        let pair = signature::RsaKeyPair::from_der(der).unwrap();
        let parts = signature::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
        let (n, e) = (parts.n, parts.e);
        let sign = |header: serde_json::Value, jti: &str| {
            let h = b64(header.to_string().as_bytes());
            let p = b64(serde_json::json!({ "jti": jti }).to_string().as_bytes());
            let input = format!("{h}.{p}");
            let mut sig = vec![0; pair.public().modulus_len()];
            pair.sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .unwrap();
            format!("{input}.{}", b64(&sig))
        };
        let jwk = serde_json::json!({"kty": "RSA", "n": b64(&n), "e": b64(&e)});
        let reg = sign(
            serde_json::json!({"alg":"RS256","typ":"dbsc+jwt","jwk":jwk}),
            "r1",
        );
        let key = verify_registration(&reg).unwrap().key.unwrap();
        assert!(matches!(key, PublicKey::Rs256 { .. }));
        let refresh = sign(serde_json::json!({"alg":"RS256","typ":"dbsc+jwt"}), "r2");
        assert_eq!(verify_refresh(&refresh, &key).unwrap().jti, "r2");
        // An RSA proof for a session bound to a P-256 key: refused.
        let ec = PublicKey::Es256(Box::new([4; 65]));
        assert_eq!(verify_refresh(&refresh, &ec), Err(ProofError::BadAlgorithm));
        // ES256 named with an RSA key: refused.
        let mixed = sign(
            serde_json::json!({"alg":"ES256","typ":"dbsc+jwt","jwk":jwk}),
            "r1",
        );
        assert_eq!(verify_registration(&mixed), Err(ProofError::BadKey));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(s in ".{0,600}") {
            let _ = verify_registration(&s);
            let _ = verify_refresh(&s, &PublicKey::Es256(Box::new([4; 65])));
        }
    }
}
