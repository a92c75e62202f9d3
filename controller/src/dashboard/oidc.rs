//! Operator sign-in through an OpenID provider (`[dashboard.oidc]`,
//! `docs/dashboard.md`, Access): the authorization code flow with PKCE
//! (S256), its `state` and `nonce` bound to a pre-login cookie of the
//! browser that started it, and the ID token checked by `openidconnect`
//! (signature with the provider's keys from discovery, issuer, audience,
//! expiry, nonce; asymmetric algorithms only). Its HTTP goes through our
//! reqwest client: rustls with ring, no redirects followed, bounded in time
//! and size.
//!
//! A sign-in under way is held in memory by the SHA-256 of its pre-login
//! cookie, for at most [`PENDING_TTL`] and used once: the callback takes
//! it out whatever follows, so a replayed callback finds nothing.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AsyncHttpClient, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
    HttpRequest, HttpResponse, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    Scope, SignatureVerificationError, TokenResponse,
};
use sha2::{Digest, Sha256};

use super::config::OidcConfig;
use super::session::{NoRandom, Role, random32};

/// Sign-ins under way held at most; beyond, the oldest goes.
pub const MAX_PENDING: usize = 10_000;

/// Sign-ins under way one client (an IPv4 address, an IPv6 /64) holds at
/// most; beyond, its oldest goes: one client starting sign-ins in a loop
/// pushes out only its own.
pub const MAX_PENDING_PER_CLIENT: usize = 16;

/// Seconds a sign-in may take at the provider.
pub const PENDING_TTL: u64 = 600;

/// Largest body read from the provider.
const MAX_BODY_BYTES: usize = 256 * 1024;

/// Discovery (metadata and keys) is repeated when it is this old.
const METADATA_TTL: Duration = Duration::from_secs(3_600);

/// After a failed discovery, sign-ins are answered "unavailable" this long
/// before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// For an ID token naming a key not among the provider's, discovery is
/// repeated at most this often (a key rotation is followed; nothing makes
/// the controller fetch in a loop).
const REFETCH_EVERY: Duration = Duration::from_secs(10);

/// An ID token issued this long before its sign-in started is refused
/// (clock differences between the provider and the controller).
const IAT_SLACK: u64 = 60;

/// Values of the roles claim looked at, at most.
const MAX_ROLE_VALUES: usize = 1_000;

/// Signing algorithms accepted: asymmetric only, so that the client secret
/// never lets anyone mint an ID token.
const ALGORITHMS: [CoreJwsSigningAlgorithm; 8] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// Why a sign-in through the provider failed.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// Discovery or the keys could not be fetched or read.
    #[error("the identity provider is unavailable: {0}")]
    Unavailable(String),
    /// The token endpoint refused the code, or answered nonsense.
    #[error("the identity provider did not confirm the sign-in: {0}")]
    Exchange(String),
    /// The ID token failed a check.
    #[error("the ID token was refused: {0}")]
    Token(String),
    /// No random numbers.
    #[error(transparent)]
    NoRandom(#[from] NoRandom),
}

/// A sign-in under way: what the callback must match.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The `state` sent to the provider.
    pub state: String,
    nonce: String,
    verifier: String,
    /// When it started.
    pub created: u64,
    /// Who started it ([`super::session::client_of`]), when known.
    client: Option<std::net::IpAddr>,
}

/// Who the provider vouched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// The name claim, when present (at most 128 bytes, no control
    /// characters).
    pub name: Option<String>,
    /// The role the roles claim maps to, if any.
    pub role: Option<Role>,
}

/// The provider as discovered, and the sign-ins under way.
#[derive(Debug, Default)]
pub struct Runtime {
    pending: Mutex<HashMap<[u8; 32], Pending>>,
    provider: tokio::sync::Mutex<Discovery>,
}

#[derive(Debug, Default)]
struct Discovery {
    current: Option<(Arc<CoreProviderMetadata>, Instant)>,
    failed: Option<Instant>,
}

fn hash(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

impl Runtime {
    /// Starts a sign-in at `now`: the pre-login cookie's value and the
    /// provider's authorization URL to send the browser to.
    pub async fn start(
        &self,
        oidc: &OidcConfig,
        from: Option<std::net::IpAddr>,
        now: u64,
    ) -> Result<(String, String), OidcError> {
        let metadata = self.metadata(oidc, false).await?;
        let client = client(oidc, &metadata)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in oidc.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        let cookie = URL_SAFE_NO_PAD.encode(random32()?);
        let pending = Pending {
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
            created: now,
            client: from.map(super::session::client_of),
        };
        self.hold(&cookie, pending, now);
        Ok((cookie, url.to_string()))
    }

    /// Holds `pending` under `cookie`'s hash: its client's oldest goes
    /// beyond [`MAX_PENDING_PER_CLIENT`], the oldest of all beyond
    /// [`MAX_PENDING`].
    fn hold(&self, cookie: &str, pending: Pending, now: u64) {
        let mut held = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = pending.client {
            let mine: Vec<_> = held
                .iter()
                .filter(|(_, p)| p.client == Some(client))
                .map(|(k, p)| (p.created, *k))
                .collect();
            if mine.len() >= MAX_PENDING_PER_CLIENT
                && let Some((_, k)) = mine.iter().min()
            {
                held.remove(k);
            }
        }
        if held.len() >= MAX_PENDING {
            held.retain(|_, p| now < p.created.saturating_add(PENDING_TTL));
        }
        if held.len() >= MAX_PENDING
            && let Some(oldest) = held.iter().min_by_key(|(_, p)| p.created).map(|(k, _)| *k)
        {
            held.remove(&oldest);
        }
        held.insert(hash(cookie), pending);
    }

    /// Takes out the sign-in of pre-login cookie `cookie`, if it is under
    /// way at `now`: once taken, it is gone, whatever follows.
    pub fn take(&self, cookie: &str, now: u64) -> Option<Pending> {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&hash(cookie))?;
        (now < pending.created.saturating_add(PENDING_TTL)).then_some(pending)
    }

    /// Sign-ins under way held.
    pub fn pending(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Exchanges `code` (with the PKCE verifier of `pending`) and checks
    /// the ID token: with the keys known, and once more after discovering
    /// again if the token names a key not among them.
    pub async fn finish(
        &self,
        oidc: &OidcConfig,
        pending: &Pending,
        code: &str,
    ) -> Result<Verified, OidcError> {
        let metadata = self.metadata(oidc, false).await?;
        let client = client(oidc, &metadata)?;
        let http = Http::new()?;
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| OidcError::Exchange(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier.clone()))
            .request_async(&http)
            .await
            .map_err(|e| OidcError::Exchange(error_chain(&e)))?;
        let id_token = token
            .id_token()
            .ok_or_else(|| OidcError::Exchange("no ID token in the token response".to_owned()))?;
        match verify(oidc, &metadata, id_token, pending) {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                let fresh = self.metadata(oidc, true).await?;
                verify(oidc, &fresh, id_token, pending).map_err(|e| OidcError::Token(e.to_string()))
            }
            other => other.map_err(|e| OidcError::Token(e.to_string())),
        }
    }

    /// The provider's metadata and keys, discovered when missing or old,
    /// or (`refetch`) when an ID token named an unknown key and the last
    /// discovery is older than [`REFETCH_EVERY`].
    async fn metadata(
        &self,
        oidc: &OidcConfig,
        refetch: bool,
    ) -> Result<Arc<CoreProviderMetadata>, OidcError> {
        let mut d = self.provider.lock().await;
        if let Some((m, at)) = &d.current {
            let age = at.elapsed();
            if age < METADATA_TTL && !(refetch && age >= REFETCH_EVERY) {
                return Ok(Arc::clone(m));
            }
        }
        if d.failed.is_some_and(|at| at.elapsed() < RETRY_AFTER) {
            return match &d.current {
                Some((m, _)) => Ok(Arc::clone(m)),
                None => Err(OidcError::Unavailable(
                    "discovery failed moments ago".to_owned(),
                )),
            };
        }
        match discover(oidc).await {
            Ok(m) => {
                let m = Arc::new(m);
                tracing::info!(issuer = %oidc.issuer, "dashboard identity provider discovered");
                d.current = Some((Arc::clone(&m), Instant::now()));
                d.failed = None;
                Ok(m)
            }
            Err(e) => {
                d.failed = Some(Instant::now());
                match &d.current {
                    Some((m, _)) => {
                        tracing::warn!(issuer = %oidc.issuer, error = %e, "dashboard identity provider not discovered again; its old metadata stays in use");
                        Ok(Arc::clone(m))
                    }
                    None => Err(e),
                }
            }
        }
    }
}

fn client(
    oidc: &OidcConfig,
    metadata: &CoreProviderMetadata,
) -> Result<
    CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    >,
    OidcError,
> {
    let redirect = RedirectUrl::new(oidc.redirect_url.clone())
        .map_err(|e| OidcError::Unavailable(format!("redirect_url: {e}")))?;
    Ok(CoreClient::from_provider_metadata(
        metadata.clone(),
        ClientId::new(oidc.client_id.clone()),
        Some(ClientSecret::new(oidc.client_secret.0.clone())),
    )
    .set_redirect_uri(redirect))
}

/// Checks the ID token against `metadata`'s keys, the issuer, the client
/// id, its expiry, the sign-in's nonce and start; reads who it names and
/// the role its roles claim maps to.
fn verify(
    oidc: &OidcConfig,
    metadata: &CoreProviderMetadata,
    id_token: &CoreIdToken,
    pending: &Pending,
) -> Result<Verified, ClaimsVerificationError> {
    let client = CoreClient::from_provider_metadata(
        metadata.clone(),
        ClientId::new(oidc.client_id.clone()),
        Some(ClientSecret::new(oidc.client_secret.0.clone())),
    );
    let not_before = i64::try_from(pending.created.saturating_sub(IAT_SLACK)).unwrap_or(i64::MAX);
    let verifier = client
        .id_token_verifier()
        .set_allowed_algs(ALGORITHMS)
        .set_issue_time_verifier_fn(move |iat| {
            if iat.timestamp() >= not_before {
                Ok(())
            } else {
                Err("issued before the sign-in started".to_owned())
            }
        });
    let claims = id_token.claims(&verifier, &Nonce::new(pending.nonce.clone()))?;
    // `openidconnect`'s core claims hold neither groups nor every name
    // claim: both are read from the payload of the token whose signature
    // and claims were just verified.
    let payload = payload(&id_token.to_string()).unwrap_or_default();
    let name = payload
        .get(&oidc.name_claim)
        .and_then(serde_json::Value::as_str)
        .map(|n| {
            let n: String = n.chars().filter(|c| !c.is_control()).collect();
            super::cut(n.trim(), 128)
        })
        .filter(|n| !n.is_empty());
    Ok(Verified {
        issuer: claims.issuer().as_str().to_owned(),
        subject: claims.subject().as_str().to_owned(),
        name,
        role: role_of(oidc, payload.get(&oidc.roles_claim)),
    })
}

/// The role a roles claim (a string, or a list of strings) maps to: a
/// responder value wins over a viewer value; neither is no role.
pub fn role_of(oidc: &OidcConfig, claim: Option<&serde_json::Value>) -> Option<Role> {
    let values: Vec<&str> = match claim {
        Some(serde_json::Value::String(s)) => vec![s.as_str()],
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .take(MAX_ROLE_VALUES)
            .filter_map(serde_json::Value::as_str)
            .collect(),
        _ => Vec::new(),
    };
    let has = |wanted: &[String]| values.iter().any(|v| wanted.iter().any(|w| w == v));
    if has(&oidc.responder_values) {
        Some(Role::Responder)
    } else if has(&oidc.viewer_values) {
        Some(Role::Viewer)
    } else {
        None
    }
}

/// The payload of a compact JWT as a JSON object (the token verified by
/// the caller), or none.
fn payload(jwt: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let part = jwt.split('.').nth(1)?;
    if part.len() > 64 * 1024 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        serde_json::Value::Object(m) => Some(m),
        _ => None,
    }
}

/// Discovery: the metadata at the issuer's well-known address (whose
/// `issuer` must be the configured one, checked by `openidconnect`) and
/// its keys. An https issuer's endpoints must be https too.
async fn discover(oidc: &OidcConfig) -> Result<CoreProviderMetadata, OidcError> {
    let http = Http::new()?;
    let issuer = IssuerUrl::new(oidc.issuer.clone())
        .map_err(|e| OidcError::Unavailable(format!("issuer: {e}")))?;
    let metadata = CoreProviderMetadata::discover_async(issuer, &http)
        .await
        .map_err(|e| OidcError::Unavailable(error_chain(&e)))?;
    if oidc.issuer.starts_with("https:") {
        let endpoints = [
            Some(metadata.authorization_endpoint().url()),
            metadata.token_endpoint().map(|t| t.url()),
            Some(metadata.jwks_uri().url()),
        ];
        if let Some(clear) = endpoints
            .into_iter()
            .flatten()
            .find(|u| u.scheme() != "https")
        {
            return Err(OidcError::Unavailable(format!(
                "discovery names a cleartext endpoint: {clear}"
            )));
        }
    }
    Ok(metadata)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The HTTP client `openidconnect` calls: no redirects, bounded in time,
/// bodies refused beyond [`MAX_BODY_BYTES`].
#[derive(Debug, Clone)]
struct Http {
    client: reqwest::Client,
}

/// A failed call to the provider.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct HttpError(String);

impl Http {
    fn new() -> Result<Self, OidcError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| OidcError::Unavailable(error_chain(&e)))?;
        Ok(Http { client })
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let request =
            reqwest::Request::try_from(request).map_err(|e| HttpError(error_chain(&e)))?;
        let mut response = self
            .client
            .execute(request)
            .await
            .map_err(|e| HttpError(error_chain(&e)))?;
        let mut out = http::Response::builder().status(response.status());
        for (name, value) in response.headers() {
            out = out.header(name, value);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| HttpError(error_chain(&e)))?
        {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(HttpError(format!(
                    "the answer is over {MAX_BODY_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        out.body(body).map_err(|e| HttpError(e.to_string()))
    }
}

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::config::Secret;

    fn oidc() -> OidcConfig {
        OidcConfig {
            issuer: "https://idp.example".to_owned(),
            client_id: "vigil".to_owned(),
            client_secret: Secret("s".to_owned()),
            redirect_url: "https://c.example/dashboard/oidc/callback".to_owned(),
            scopes: vec!["openid".to_owned()],
            roles_claim: "groups".to_owned(),
            responder_values: vec!["ops".to_owned()],
            viewer_values: vec!["audit".to_owned()],
            name_claim: "name".to_owned(),
        }
    }

    #[test]
    fn roles_come_from_a_string_or_a_list_and_a_responder_value_wins() {
        let o = oidc();
        let role = |v: serde_json::Value| role_of(&o, Some(&v));
        assert_eq!(role(serde_json::json!("ops")), Some(Role::Responder));
        assert_eq!(role(serde_json::json!(["audit"])), Some(Role::Viewer));
        assert_eq!(
            role(serde_json::json!(["audit", 7, "ops"])),
            Some(Role::Responder)
        );
        for none in [
            serde_json::json!([]),
            serde_json::json!("OPS"),
            serde_json::json!(["ops "]),
            serde_json::json!({"ops": true}),
            serde_json::json!(true),
        ] {
            assert_eq!(role(none.clone()), None, "{none}");
        }
        assert_eq!(role_of(&o, None), None);
    }

    #[test]
    fn a_pending_sign_in_is_taken_once_and_only_while_fresh() {
        let r = Runtime::default();
        let p = Pending {
            state: "s".to_owned(),
            nonce: "n".to_owned(),
            verifier: "v".to_owned(),
            created: 100,
            client: None,
        };
        r.pending.lock().unwrap().insert(hash("cookie"), p.clone());
        assert!(r.take("other", 101).is_none());
        assert_eq!(r.take("cookie", 101).unwrap().state, "s");
        assert!(r.take("cookie", 101).is_none(), "taken once");
        r.pending.lock().unwrap().insert(hash("cookie"), p);
        assert!(r.take("cookie", 100 + PENDING_TTL).is_none(), "expired");
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn one_client_starting_sign_ins_in_a_loop_pushes_out_only_its_own() {
        let r = Runtime::default();
        let pending = |client: &str, created| Pending {
            state: String::new(),
            nonce: String::new(),
            verifier: String::new(),
            created,
            client: Some(super::super::session::client_of(client.parse().unwrap())),
        };
        r.hold("operator", pending("192.0.2.1", 0), 0);
        for i in 0..(MAX_PENDING_PER_CLIENT as u64 * 3) {
            // Another address of the same IPv6 /64 is the same client.
            let addr = format!("2001:db8::{:x}", i + 1);
            r.hold(&format!("flood-{i}"), pending(&addr, 1 + i), 1 + i);
        }
        assert_eq!(r.pending(), MAX_PENDING_PER_CLIENT + 1);
        assert!(r.take("operator", 60).is_some());
        assert!(r.take("flood-0", 60).is_none(), "the flood's oldest went");
        let last = format!("flood-{}", MAX_PENDING_PER_CLIENT * 3 - 1);
        assert!(r.take(&last, 60).is_some());
    }
}
