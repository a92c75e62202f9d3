//! The controller's signing keys (`[signing]`, `docs/controller.md`): what
//! it signs with when it speaks for itself to other systems — Security
//! Event Tokens to SSF receivers, OIDC back-channel `logout_token`s and
//! global token revocation bearers to apps — and the JWK Set
//! (`GET /.well-known/jwks.json`) they verify with.
//!
//! Keys are PEM files (PKCS#8, or PKCS#1 / SEC 1): RSA of 2,048 bits or
//! more signs RS256, the one algorithm every SSF and OIDC peer must take;
//! P-256 signs ES256. The first file signs; every file is published, so a
//! key is rotated by putting the new one first and keeping the old one
//! listed until every peer's cached JWK Set has picked the new one up
//! (peers cache for minutes to a day), then dropping it. Every replica
//! reads the same files, so every replica signs alike. A key's `kid` is
//! its RFC 7638 thumbprint: the same key has the same `kid` on every
//! replica and after every restart, and no two keys share one.
//!
//! Signing is `jsonwebtoken`'s (the crate the receiver verifies with);
//! keys are parsed here, with rustls' PEM reader and the `rsa` crate, so
//! that a key of the wrong kind or size is refused at start with its file
//! named rather than at the first signature.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::traits::PublicKeyParts as _;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject as _;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// Smallest RSA key taken, in bits (as the receiver asks of transmitters).
pub const MIN_RSA_BITS: usize = 2048;

/// Most key files listed: one signing and a few being rotated out.
pub const MAX_KEYS: usize = 8;

/// `[signing]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSigning {
    issuer: String,
    key_files: Vec<PathBuf>,
}

/// Why a token could not be signed: a serialization failure of its claims,
/// or the crypto library's refusal (neither happens with a key `load`
/// took, but the caller decides what a failure does).
#[derive(Debug, thiserror::Error)]
#[error("signing failed: {0}")]
pub struct SignError(#[from] jsonwebtoken::errors::Error);

/// One key: how it signs and how it is published.
struct Key {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

/// The controller's signing keys and issuer.
pub struct Signer {
    issuer: String,
    files: Vec<PathBuf>,
    keys: Vec<Key>,
    jwks: Value,
}

impl fmt::Debug for Signer {
    // Never the keys: their ids and files only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("issuer", &self.issuer)
            .field("files", &self.files)
            .field(
                "kids",
                &self.keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Signer {
    /// The issuer (`iss`) of everything the controller signs.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The `kid` of the key that signs.
    pub fn kid(&self) -> &str {
        &self.keys[0].kid
    }

    /// The algorithm of the key that signs.
    pub fn algorithm(&self) -> Algorithm {
        self.keys[0].alg
    }

    /// `claims` signed with the first key as a compact JWS whose header
    /// carries `alg`, `kid` and `typ` (`secevent+jwt` for a SET,
    /// `logout+jwt` for a logout token, `JWT` otherwise).
    pub fn sign(&self, typ: &str, claims: &Value) -> Result<String, SignError> {
        let key = &self.keys[0];
        let mut header = Header::new(key.alg);
        header.kid = Some(key.kid.clone());
        header.typ = Some(typ.to_owned());
        Ok(jsonwebtoken::encode(&header, claims, &key.encoding)?)
    }

    /// Every key's public half, as the JWK Set peers verify with.
    pub fn jwks(&self) -> &Value {
        &self.jwks
    }
}

/// `[signing]`, its files read; every problem pushed with its key.
pub(crate) fn load(
    raw: &RawSigning,
    resolve: &dyn Fn(&Path) -> PathBuf,
    problems: &mut Vec<String>,
) -> Option<Signer> {
    let before = problems.len();
    match url::Url::parse(&raw.issuer) {
        Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && loopback(&u)) => {
            if u.query().is_some() || u.fragment().is_some() {
                problems.push(format!(
                    "signing.issuer: {:?}: an issuer has no query or fragment",
                    raw.issuer
                ));
            }
        }
        Ok(_) => problems.push(format!(
            "signing.issuer: {:?}: expected an https:// URL (http:// on loopback only)",
            raw.issuer
        )),
        Err(e) => problems.push(format!("signing.issuer: {:?}: {e}", raw.issuer)),
    }
    if raw.key_files.is_empty() || raw.key_files.len() > MAX_KEYS {
        problems.push(format!(
            "signing.key_files: {} files; expected 1 to {MAX_KEYS} (the first signs)",
            raw.key_files.len()
        ));
    }
    // Each key with the index of its file, for naming a duplicate.
    let mut keys: Vec<(usize, Key)> = Vec::new();
    for (i, file) in raw.key_files.iter().enumerate() {
        let path = resolve(file);
        let what = format!("signing.key_files[{i}]: {}", path.display());
        match std::fs::read(&path) {
            Err(e) => problems.push(format!("{what}: {e}")),
            Ok(pem) => match parse(&pem) {
                Err(problem) => problems.push(format!("{what}: {problem}")),
                Ok(key) => {
                    if let Some((j, _)) = keys.iter().find(|(_, k)| k.kid == key.kid) {
                        problems.push(format!("{what}: the same key as signing.key_files[{j}]"));
                    } else {
                        keys.push((i, key));
                    }
                }
            },
        }
    }
    if problems.len() > before {
        return None;
    }
    let keys: Vec<Key> = keys.into_iter().map(|(_, k)| k).collect();
    let jwks = json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() });
    Some(Signer {
        issuer: raw.issuer.clone(),
        files: raw.key_files.iter().map(|f| resolve(f)).collect(),
        keys,
        jwks,
    })
}

fn loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
}

/// One PEM private key as a signing key with its public JWK.
fn parse(pem: &[u8]) -> Result<Key, String> {
    let der = PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| format!("expected one PEM private key (PKCS#8, PKCS#1 or SEC 1): {e}"))?;
    let (alg, encoding) = match der {
        PrivateKeyDer::Pkcs1(k) => rsa_key(
            rsa::pkcs1::DecodeRsaPrivateKey::from_pkcs1_der(k.secret_pkcs1_der())
                .map_err(|e| format!("not an RSA key: {e}"))?,
        )?,
        PrivateKeyDer::Pkcs8(k) => match rsa::RsaPrivateKey::from_pkcs8_der(k.secret_pkcs8_der()) {
            Ok(rsa) => rsa_key(rsa)?,
            Err(_) => ec_key(EncodingKey::from_ec_der(k.secret_pkcs8_der()))?,
        },
        PrivateKeyDer::Sec1(_) => {
            return Err("an EC key in SEC 1 form: convert it to PKCS#8 \
                 (openssl pkcs8 -topk8 -nocrypt)"
                .to_owned());
        }
        _ => return Err("an unknown kind of private key".to_owned()),
    };
    let public = Jwk::from_encoding_key(&encoding, alg).map_err(|e| match alg {
        Algorithm::ES256 => format!("not an RSA or P-256 key: {e}"),
        _ => format!("unusable key: {e}"),
    })?;
    let kid = thumbprint(&public.algorithm).ok_or("unusable key: no public half")?;
    // A signature made now, so that a key the crypto library would refuse
    // is refused at start, with its file named.
    let mut header = Header::new(alg);
    header.kid = Some(kid.clone());
    jsonwebtoken::encode(&header, &json!({}), &encoding)
        .map_err(|e| format!("cannot sign with it: {e}"))?;
    let mut jwk = public;
    jwk.common.key_id = Some(kid.clone());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    let jwk = serde_json::to_value(&jwk).map_err(|e| e.to_string())?;
    Ok(Key {
        kid,
        alg,
        encoding,
        jwk,
    })
}

fn rsa_key(key: rsa::RsaPrivateKey) -> Result<(Algorithm, EncodingKey), String> {
    let bits = key.size() * 8;
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "an RSA key of {bits} bits; at least {MIN_RSA_BITS} are needed"
        ));
    }
    let der = key.to_pkcs1_der().map_err(|e| e.to_string())?;
    Ok((Algorithm::RS256, EncodingKey::from_rsa_der(der.as_bytes())))
}

fn ec_key(key: EncodingKey) -> Result<(Algorithm, EncodingKey), String> {
    // Checked by `Jwk::from_encoding_key` and the trial signature: a
    // PKCS#8 key that is neither RSA nor P-256 fails there.
    Ok((Algorithm::ES256, key))
}

/// The RFC 7638 thumbprint of a public key: SHA-256 over its required
/// members in lexicographic order, base64url.
fn thumbprint(params: &AlgorithmParameters) -> Option<String> {
    let canonical = match params {
        AlgorithmParameters::RSA(r) => {
            format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, r.e, r.n)
        }
        AlgorithmParameters::EllipticCurve(ec) => format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            ec.x, ec.y
        ),
        _ => return None,
    };
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    /// The committed RSA test key (`controller/tests/keys/`).
    const RSA_TEST_KEY: &str = include_str!("../tests/keys/rs256-test.pem");

    fn raw(dir: &Path, pems: &[&str]) -> RawSigning {
        let key_files = pems
            .iter()
            .enumerate()
            .map(|(i, pem)| {
                let path = dir.join(format!("k{i}.pem"));
                std::fs::write(&path, pem).unwrap();
                path
            })
            .collect();
        RawSigning {
            issuer: "https://vigil.example.com".into(),
            key_files,
        }
    }

    fn p256() -> String {
        rcgen::KeyPair::generate().unwrap().serialize_pem()
    }

    fn load_ok(raw: &RawSigning) -> Signer {
        let mut problems = Vec::new();
        let signer = load(raw, &|p| p.to_path_buf(), &mut problems);
        assert_eq!(problems, Vec::<String>::new());
        signer.unwrap()
    }

    /// Verifies `token` against the published JWK Set, as a peer would.
    fn verify(signer: &Signer, token: &str) -> Value {
        let header = jsonwebtoken::decode_header(token).unwrap();
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(signer.jwks().clone()).unwrap();
        let jwk = set.find(header.kid.as_deref().unwrap()).unwrap();
        let mut validation = Validation::new(header.alg);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_aud = false;
        jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
            .unwrap()
            .claims
    }

    #[test]
    fn an_rsa_key_signs_rs256_and_a_peer_verifies_with_the_jwks() {
        let dir = tempfile::tempdir().unwrap();
        let signer = load_ok(&raw(dir.path(), &[RSA_TEST_KEY]));
        assert_eq!(signer.algorithm(), Algorithm::RS256);
        let token = signer
            .sign("secevent+jwt", &json!({"iss": signer.issuer(), "jti": "1"}))
            .unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("secevent+jwt"));
        assert_eq!(header.kid.as_deref(), Some(signer.kid()));
        assert_eq!(
            verify(&signer, &token),
            json!({"iss": "https://vigil.example.com", "jti": "1"})
        );
        let jwk = &signer.jwks()["keys"][0];
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["alg"], "RS256");
        assert!(jwk.get("d").is_none(), "no private member is published");
    }

    #[test]
    fn the_first_key_signs_and_every_key_is_published() {
        let dir = tempfile::tempdir().unwrap();
        let (new, old) = (p256(), RSA_TEST_KEY.to_owned());
        let signer = load_ok(&raw(dir.path(), &[&new, &old]));
        assert_eq!(signer.algorithm(), Algorithm::ES256);
        let kids: Vec<&str> = signer.jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(kids.len(), 2);
        assert_eq!(kids[0], signer.kid());
        assert_ne!(kids[0], kids[1]);
        let token = signer.sign("logout+jwt", &json!({"sub": "a"})).unwrap();
        assert_eq!(verify(&signer, &token), json!({"sub": "a"}));
        // The old key alone (the previous configuration) keeps its kid.
        let before = load_ok(&raw(dir.path(), &[&old]));
        assert_eq!(before.kid(), kids[1]);
    }

    #[test]
    fn a_kid_is_the_rfc_7638_thumbprint() {
        // RFC 7638 §3.1's example key and thumbprint.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let params = AlgorithmParameters::RSA(jsonwebtoken::jwk::RSAKeyParameters {
            key_type: jsonwebtoken::jwk::RSAKeyType::RSA,
            n: n.into(),
            e: "AQAB".into(),
        });
        assert_eq!(
            thumbprint(&params).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn bad_keys_are_each_named_with_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let small = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:1024",
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8(o.stdout).unwrap());
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
            .unwrap()
            .serialize_pem();
        let mut pems = vec!["not a key", &p384, RSA_TEST_KEY, RSA_TEST_KEY];
        if let Some(small) = &small {
            pems.push(small);
        }
        let mut raw = raw(dir.path(), &pems);
        raw.key_files.push(dir.path().join("missing.pem"));
        raw.issuer = "http://vigil.example.com".into();
        let mut problems = Vec::new();
        assert!(load(&raw, &|p| p.to_path_buf(), &mut problems).is_none());
        let has = |prefix: &str, text: &str| {
            problems
                .iter()
                .any(|p| p.starts_with(prefix) && p.contains(text))
        };
        assert!(has("signing.issuer:", "https://"), "{problems:?}");
        assert!(
            has("signing.key_files[0]:", "expected one PEM private key"),
            "{problems:?}"
        );
        assert!(
            has("signing.key_files[1]:", "not an RSA or P-256 key"),
            "{problems:?}"
        );
        assert!(
            has(
                "signing.key_files[3]:",
                "the same key as signing.key_files[2]"
            ),
            "{problems:?}"
        );
        if small.is_some() {
            assert!(has("signing.key_files[4]:", "1024 bits"), "{problems:?}");
        }
        assert!(
            has(
                &format!("signing.key_files[{}]:", pems.len()),
                "missing.pem"
            ),
            "{problems:?}"
        );
        assert_eq!(
            problems.len(),
            5 + usize::from(small.is_some()),
            "{problems:?}"
        );
    }

    #[test]
    fn the_debug_form_shows_no_key() {
        let dir = tempfile::tempdir().unwrap();
        let signer = load_ok(&raw(dir.path(), &[RSA_TEST_KEY]));
        let shown = format!("{signer:?}");
        assert!(shown.contains(signer.kid()));
        assert!(!shown.contains("PRIVATE"));
        assert!(!shown.contains(signer.jwks()["keys"][0]["n"].as_str().unwrap()));
    }
}
