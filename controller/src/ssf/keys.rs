//! A transmitter's signing keys: its JWK Set, parsed once into verifying
//! keys (so that a SET costs one signature check, never a key parse),
//! cached, and fetched again when it is stale or a SET names a `kid` it
//! does not hold — at most once per `jwks_refetch_seconds` for the latter,
//! so a flood of made-up `kid`s cannot turn the receiver into a client
//! hammering the transmitter.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use tokio::time::Instant;

use super::config::{Alg, KeySource};

/// Largest JWK Set read (a file or a fetch).
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Keys kept of one set; the rest are ignored.
const MAX_KEYS: usize = 64;
/// RSA moduli below this many bits are refused.
pub const MIN_RSA_BITS: usize = 2048;
/// RSA moduli above this many bits are skipped (each check would cost
/// too much).
const MAX_RSA_BITS: usize = 8192;

/// A verifying key.
#[derive(Clone)]
pub struct Key {
    /// What it verifies.
    pub kind: KeyKind,
    /// The JWK's `alg`, when it names one: the SET's must be the same.
    pub alg: Option<String>,
    /// The parsed key (jsonwebtoken's: it checks the components).
    pub decoding: DecodingKey,
    /// The key as ring verifies with it: RSA `(n, e)` big-endian, or a
    /// P-256 point uncompressed (`04 || x || y`).
    public: Public,
}

#[derive(Clone)]
enum Public {
    Rsa(ring::signature::RsaPublicKeyComponents<Vec<u8>>),
    P256(Vec<u8>),
}

impl Key {
    /// Checks a JWS signed with this key, as every inbound endpoint
    /// (SETs, logout tokens, global token revocation bearers) must: the
    /// key's kind fits `alg`, the JWK's own `alg` (if any) is the same, an
    /// RSA key has [`MIN_RSA_BITS`] or more, then the signature. `kid`
    /// names the key in the refusal.
    pub fn check(
        &self,
        alg: Alg,
        kid: &str,
        signing_input: &[u8],
        signature: &str,
    ) -> Result<(), KeyRefusal> {
        if !self.kind.fits(alg) || self.alg.as_deref().is_some_and(|a| a != alg.name()) {
            return Err(KeyRefusal::Unfit(format!(
                "key {kid:?} does not verify {}",
                alg.name()
            )));
        }
        if let KeyKind::Rsa(bits) = self.kind
            && bits < MIN_RSA_BITS
        {
            return Err(KeyRefusal::Unfit(format!(
                "key {kid:?} is {bits} bits; at least {MIN_RSA_BITS} are required"
            )));
        }
        if !self.verifies(alg, signing_input, signature) {
            return Err(KeyRefusal::BadSignature);
        }
        Ok(())
    }

    /// Whether `signature` (base64url, as in a compact JWS) is this key's
    /// over `signing_input` for `alg` (RS256: PKCS #1 v1.5 with SHA-256,
    /// 2,048 to 8,192 bits; ES256: P-256 with SHA-256, `r || s`). The key
    /// must fit `alg` ([`KeyKind::fits`]); ring checks the signature.
    pub fn verifies(&self, alg: Alg, signing_input: &[u8], signature: &str) -> bool {
        let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        match (&self.public, alg) {
            (Public::Rsa(components), Alg::Rs256) => components
                .verify(
                    &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                    signing_input,
                    &signature,
                )
                .is_ok(),
            (Public::P256(point), Alg::Es256) => ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P256_SHA256_FIXED,
                point,
            )
            .verify(signing_input, &signature)
            .is_ok(),
            _ => false,
        }
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// Why [`Key::check`] refused a JWS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRefusal {
    /// The key cannot verify this algorithm, or is too small: what.
    Unfit(String),
    /// The signature does not verify.
    BadSignature,
}

/// A key's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA, of this many bits.
    Rsa(usize),
    /// EC on P-256.
    P256,
}

impl KeyKind {
    /// Whether `alg` is verified with a key of this kind.
    pub fn fits(self, alg: Alg) -> bool {
        matches!(
            (self, alg),
            (KeyKind::Rsa(_), Alg::Rs256) | (KeyKind::P256, Alg::Es256)
        )
    }
}

/// Keys by `kid`.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, Arc<Key>>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.keys.len())
            .finish()
    }
}

impl KeySet {
    /// The key of `kid`.
    pub fn get(&self, kid: &str) -> Option<Arc<Key>> {
        self.keys.get(kid).cloned()
    }
}

fn strip_zeros(mut v: Vec<u8>) -> Vec<u8> {
    let zeros = v.iter().take_while(|b| **b == 0).count();
    v.drain(..zeros);
    v
}

fn bits(n: &[u8]) -> usize {
    let n = match n.iter().position(|b| *b != 0) {
        Some(i) => &n[i..],
        None => return 0,
    };
    n.len() * 8 - n[0].leading_zeros() as usize
}

/// Parses a JWK Set: signing keys with a `kid`, RSA or EC P-256; others
/// (encryption keys, other curves, symmetric keys) are skipped. An RSA
/// key below [`MIN_RSA_BITS`] is kept, so that a SET signed with it is
/// refused as a weak key rather than as an unknown one.
pub fn parse_jwks(bytes: &[u8]) -> Result<KeySet, String> {
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(format!("a JWK Set of more than {MAX_JWKS_BYTES} bytes"));
    }
    let doc: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let list = doc
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or("not a JWK Set: no \"keys\" array")?;
    let mut set = KeySet::default();
    for jwk in list.iter().take(MAX_KEYS) {
        let s = |k: &str| jwk.get(k).and_then(serde_json::Value::as_str);
        let Some(kid) = s("kid").filter(|k| !k.is_empty() && k.len() <= 256) else {
            continue;
        };
        if s("use").is_some_and(|u| u != "sig") {
            continue;
        }
        let key = match (s("kty"), s("crv")) {
            (Some("RSA"), _) => {
                let (Some(n), Some(e)) = (s("n"), s("e")) else {
                    continue;
                };
                let Ok(raw_n) = URL_SAFE_NO_PAD.decode(n) else {
                    continue;
                };
                let b = bits(&raw_n);
                if b > MAX_RSA_BITS {
                    continue;
                }
                let Ok(decoding) = DecodingKey::from_rsa_components(n, e) else {
                    continue;
                };
                let Ok(raw_e) = URL_SAFE_NO_PAD.decode(e) else {
                    continue;
                };
                Key {
                    kind: KeyKind::Rsa(b),
                    alg: s("alg").map(str::to_owned),
                    decoding,
                    // ring wants both without leading zeros.
                    public: Public::Rsa(ring::signature::RsaPublicKeyComponents {
                        n: strip_zeros(raw_n),
                        e: strip_zeros(raw_e),
                    }),
                }
            }
            (Some("EC"), Some("P-256")) => {
                let (Some(x), Some(y)) = (s("x"), s("y")) else {
                    continue;
                };
                let Ok(decoding) = DecodingKey::from_ec_components(x, y) else {
                    continue;
                };
                let (Ok(raw_x), Ok(raw_y)) = (URL_SAFE_NO_PAD.decode(x), URL_SAFE_NO_PAD.decode(y))
                else {
                    continue;
                };
                if raw_x.len() != 32 || raw_y.len() != 32 {
                    continue;
                }
                let mut point = Vec::with_capacity(65);
                point.push(4);
                point.extend_from_slice(&raw_x);
                point.extend_from_slice(&raw_y);
                Key {
                    kind: KeyKind::P256,
                    alg: s("alg").map(str::to_owned),
                    decoding,
                    public: Public::P256(point),
                }
            }
            _ => continue,
        };
        set.keys.insert(kid.to_owned(), Arc::new(key));
    }
    Ok(set)
}

/// Why no key could be had.
#[derive(Debug)]
pub enum KeyError {
    /// The set holds no key of that `kid` (after a refetch, when one was
    /// allowed).
    Unknown,
    /// The keys could not be fetched and none are held: try again later.
    Unavailable(String),
}

/// A transmitter's keys at run time.
pub struct Keys {
    source: KeySource,
    cache_for: Duration,
    refetch_every: Duration,
    client: Option<reqwest::Client>,
    held: RwLock<Option<(Instant, Arc<KeySet>)>>,
    /// Held while fetching; the last refetch for an unknown `kid`.
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// The keys of `source`, fetched with `client` when from a URL.
    pub fn new(
        source: KeySource,
        cache_for: Duration,
        refetch_every: Duration,
        client: Option<reqwest::Client>,
    ) -> Keys {
        Keys {
            source,
            cache_for,
            refetch_every,
            client,
            held: RwLock::new(None),
            fetching: tokio::sync::Mutex::new(None),
        }
    }

    fn held(&self) -> Option<(Instant, Arc<KeySet>)> {
        self.held
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The key of `kid`.
    pub async fn key(&self, kid: &str) -> Result<Arc<Key>, KeyError> {
        if let KeySource::Static(set) = &self.source {
            return set.get(kid).ok_or(KeyError::Unknown);
        }
        if let Some((at, set)) = self.held()
            && at.elapsed() < self.cache_for
            && let Some(key) = set.get(kid)
        {
            return Ok(key);
        }
        let mut last_refetch = self.fetching.lock().await;
        // Another call may have fetched while this one waited.
        let held = self.held();
        if let Some((at, set)) = &held
            && at.elapsed() < self.cache_for
        {
            if let Some(key) = set.get(kid) {
                return Ok(key);
            }
            // Fresh, and without the kid: one refetch per interval.
            if last_refetch.is_some_and(|t| t.elapsed() < self.refetch_every) {
                return Err(KeyError::Unknown);
            }
            *last_refetch = Some(Instant::now());
        }
        match self.fetch_set().await {
            Ok(set) => {
                let set = Arc::new(set);
                *self
                    .held
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some((Instant::now(), Arc::clone(&set)));
                set.get(kid).ok_or(KeyError::Unknown)
            }
            Err(e) => {
                tracing::warn!(source = ?self.source, error = %e, "transmitter keys not fetched");
                // Stale keys serve until a fetch succeeds, tried again
                // after `jwks_refetch_seconds` rather than at every SET.
                match held {
                    Some((_, set)) => {
                        let retry_at = Instant::now()
                            .checked_sub(self.cache_for.saturating_sub(self.refetch_every))
                            .unwrap_or_else(Instant::now);
                        *self
                            .held
                            .write()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) =
                            Some((retry_at, Arc::clone(&set)));
                        set.get(kid).ok_or(KeyError::Unknown)
                    }
                    None => Err(KeyError::Unavailable(e)),
                }
            }
        }
    }

    /// The key set, fetched from its URL, or from the URL the
    /// transmitter's metadata gives (read again at each fetch, so that a
    /// transmitter that moves its keys is followed).
    async fn fetch_set(&self) -> Result<KeySet, String> {
        let uri = match &self.source {
            KeySource::Static(set) => return Ok((**set).clone()),
            KeySource::Uri(uri) => uri.clone(),
            KeySource::Discovered {
                metadata_url,
                issuer,
            } => {
                let client = self.client.as_ref().ok_or("no HTTP client")?;
                discover(client, metadata_url, issuer).await?.jwks_uri
            }
        };
        let client = self.client.as_ref().ok_or("no HTTP client")?;
        parse_jwks(&get_bounded(client, &uri, MAX_JWKS_BYTES).await?)
    }
}

/// Largest transmitter metadata document read.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;

/// What Vigil uses of a transmitter's metadata
/// (`/.well-known/ssf-configuration`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// `jwks_uri`: https://, or http:// on loopback only.
    pub jwks_uri: String,
}

/// Reads the metadata at `url` (bounded in size and time, no redirect
/// followed); its `issuer` must be `issuer` exactly, and its `jwks_uri`
/// fetchable.
pub async fn discover(
    client: &reqwest::Client,
    url: &str,
    issuer: &str,
) -> Result<Metadata, String> {
    let body = get_bounded(client, url, MAX_METADATA_BYTES).await?;
    let doc: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("metadata: not JSON: {e}"))?;
    let got = doc.get("issuer").and_then(serde_json::Value::as_str);
    if got != Some(issuer) {
        return Err(format!(
            "metadata: issuer {got:?} is not the configured {issuer:?}: refused"
        ));
    }
    let jwks_uri = doc
        .get("jwks_uri")
        .and_then(serde_json::Value::as_str)
        .ok_or("metadata: no jwks_uri")?;
    if !super::config::fetchable(jwks_uri) {
        return Err(format!(
            "metadata: jwks_uri {jwks_uri:?} is not https:// (or http:// on loopback)"
        ));
    }
    Ok(Metadata {
        jwks_uri: jwks_uri.to_owned(),
    })
}

/// The body of `GET uri`, at most `max` bytes, a 2xx answer only.
async fn get_bounded(client: &reqwest::Client, uri: &str, max: usize) -> Result<Vec<u8>, String> {
    {
        let mut response = client
            .get(uri)
            .header("accept", "application/jwk-set+json, application/json")
            .send()
            .await
            .map_err(|e| error_chain(&e))?;
        if !response.status().is_success() {
            return Err(format!("{uri} answered {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| error_chain(&e))? {
            if body.len() + chunk.len() > max {
                return Err(format!("{uri}: a document of more than {max} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The client keys are fetched with: rustls with ring as everywhere else,
/// no redirects followed, every call bounded in time.
pub fn client() -> Option<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(
            |e| tracing::warn!(error = %error_chain(&e), "no HTTP client for transmitter keys"),
        )
        .ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn bits_count_from_the_first_set_bit() {
        assert_eq!(bits(&[0, 0, 1]), 1);
        assert_eq!(bits(&[0x80, 0]), 16);
        assert_eq!(bits(&[0; 4]), 0);
    }

    #[test]
    fn a_jwk_set_keeps_signing_keys_with_a_kid_only() {
        let set = parse_jwks(
            br#"{"keys":[
                {"kty":"oct","kid":"h","k":"c2VjcmV0"},
                {"kty":"RSA","kid":"enc","use":"enc","n":"sXch","e":"AQAB"},
                {"kty":"RSA","n":"sXch","e":"AQAB"},
                {"kty":"EC","crv":"P-384","kid":"p384","x":"AA","y":"AA"}
            ]}"#,
        )
        .unwrap();
        assert!(set.keys.is_empty());
        assert!(parse_jwks(b"[]").is_err());
        assert!(parse_jwks(b"{").is_err());
    }
}
