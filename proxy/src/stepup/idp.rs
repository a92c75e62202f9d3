//! The identity provider as Vigil talks to it: discovery, the
//! authorization request, the code exchange and the ID token's checks, on
//! `openidconnect`, whose HTTP goes through our reqwest client (same rustls
//! and ring as the rest of Vigil, no redirects followed, bounded bodies).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use base64::Engine as _;
use openidconnect::core::{
    CoreAuthPrompt, CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm,
    CoreProviderMetadata,
};
use openidconnect::{
    AsyncHttpClient, AuthenticationContextClass, AuthorizationCode, ClaimsVerificationError,
    ClientId, ClientSecret, CsrfToken, HttpRequest, HttpResponse, IssuerUrl, JsonWebKeySet, Nonce,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, SignatureVerificationError,
    TokenResponse,
};

use super::{Claims, Problem};
use crate::config::{Oidc, UserClaim};
use crate::outbound::{self, error_chain};

/// Largest body read from the provider.
const MAX_BODY_BYTES: usize = 256 * 1024;

/// After a failed discovery, callers are answered "unavailable" for this
/// long before it is tried again, so that an outage is not a flood.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The provider's keys are fetched again for a token naming an unknown
/// key at most this often (the first time at once), so that a rotation is
/// followed and nothing can make Vigil fetch them in a loop.
const REFETCH_EVERY: Duration = Duration::from_secs(10);

/// Discovery (metadata and keys) is repeated when it is this old, so that
/// retired keys stop being trusted; if the provider cannot be reached then,
/// the old metadata is kept.
const METADATA_TTL: Duration = Duration::from_secs(3_600);

/// Signing algorithms accepted: asymmetric only, so that knowing the
/// client secret never lets anyone mint an ID token.
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

/// Why talking to the provider failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum IdpError {
    /// Discovery or the keys could not be fetched or read.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// The token endpoint refused the code or answered nonsense.
    #[error("code exchange failed: {0}")]
    Exchange(String),
    /// The ID token failed a check.
    #[error("ID token refused: {0}")]
    Token(String),
}

impl IdpError {
    /// The page the user gets.
    pub(super) fn problem(&self) -> Problem {
        match self {
            IdpError::Unavailable(_) => Problem::Unavailable,
            IdpError::Exchange(_) => Problem::ExchangeFailed,
            IdpError::Token(_) => Problem::TokenInvalid,
        }
    }
}

/// An authorization request, ready to send.
#[derive(Debug)]
pub(super) struct Authorize {
    pub(super) url: String,
    pub(super) state: String,
    pub(super) nonce: String,
    pub(super) verifier: String,
}

/// The provider as discovered for one `[oidc]` section.
#[derive(Debug)]
pub struct Provider {
    oidc: Arc<Oidc>,
    metadata: CoreProviderMetadata,
    http: Http,
    discovered_at: Instant,
}

impl Provider {
    fn client_id(&self) -> ClientId {
        ClientId::new(self.oidc.client_id.clone())
    }

    fn secret(&self) -> Option<ClientSecret> {
        self.oidc.client_secret.clone().map(ClientSecret::new)
    }

    /// The authorization request for a step-up returning to
    /// `redirect_uri`: code flow, PKCE S256, `prompt=login`, and what the
    /// rule asked for.
    pub(super) fn authorize(
        &self,
        redirect_uri: &str,
        acr_values: &[String],
        max_age: Option<u32>,
    ) -> Result<Authorize, IdpError> {
        let redirect = RedirectUrl::new(redirect_uri.to_owned())
            .map_err(|e| IdpError::Unavailable(format!("redirect_uri {redirect_uri:?}: {e}")))?;
        let client = CoreClient::from_provider_metadata(
            self.metadata.clone(),
            self.client_id(),
            self.secret(),
        )
        .set_redirect_uri(redirect);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge)
            .add_prompt(CoreAuthPrompt::Login);
        if self.oidc.user_claim == UserClaim::Email {
            request = request.add_scope(Scope::new("email".to_owned()));
        }
        for acr in acr_values {
            request = request.add_auth_context_value(AuthenticationContextClass::new(acr.clone()));
        }
        if let Some(age) = max_age {
            request = request.set_max_age(Duration::from_secs(u64::from(age)));
        }
        let (url, state, nonce) = request.url();
        Ok(Authorize {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
        })
    }

    /// Checks `id_token` (already received) against this provider's keys.
    fn verify(
        &self,
        id_token: &openidconnect::core::CoreIdToken,
        nonce: &Nonce,
        not_before: u64,
    ) -> Result<Claims, ClaimsVerificationError> {
        let client = CoreClient::from_provider_metadata(
            self.metadata.clone(),
            self.client_id(),
            self.secret(),
        );
        let not_before = i64::try_from(not_before).unwrap_or(i64::MAX);
        let verifier = client
            .id_token_verifier()
            .set_allowed_algs(ALGORITHMS)
            .set_issue_time_verifier_fn(move |iat| {
                if iat.timestamp() >= not_before {
                    Ok(())
                } else {
                    Err("issued before Vigil sent the user to sign in".to_owned())
                }
            });
        let claims = id_token.claims(&verifier, nonce)?;
        Ok(Claims {
            sub: claims.subject().as_str().to_owned(),
            email: claims
                .email()
                .filter(|_| claims.email_verified() == Some(true))
                .map(|e| e.as_str().to_owned()),
            acr: claims.auth_context_ref().map(|a| a.as_str().to_owned()),
            amr: claims
                .auth_method_refs()
                .map(|v| v.iter().map(|a| a.as_str().to_owned()).collect())
                .unwrap_or_default(),
            auth_time: claims
                .auth_time()
                .and_then(|t| u64::try_from(t.timestamp()).ok()),
            // `openidconnect`'s core claims leave `sid` out: read from the
            // payload of the token whose signature and claims were just
            // verified.
            sid: token_sid(&id_token.to_string()),
        })
    }
}

/// The discovered provider, shared; discovered again when `[oidc]`
/// changes, its keys fetched again for a `kid` not seen before.
#[derive(Debug, Default)]
pub(super) struct Cache {
    current: ArcSwapOption<Provider>,
    refresh: tokio::sync::Mutex<Refresh>,
}

#[derive(Debug, Default)]
struct Refresh {
    /// When discovery last failed, and for which settings.
    failed: Option<(Arc<Oidc>, Instant)>,
    /// When the keys were last fetched again for an unknown `kid`.
    refetched: Option<Instant>,
}

impl Cache {
    /// The provider for `oidc`, discovered on first use.
    pub(super) async fn get(&self, oidc: &Arc<Oidc>) -> Result<Arc<Provider>, IdpError> {
        let fresh =
            |p: &Arc<Provider>| *p.oidc == **oidc && p.discovered_at.elapsed() < METADATA_TTL;
        if let Some(p) = self.current.load_full().filter(fresh) {
            return Ok(p);
        }
        let mut refresh = self.refresh.lock().await;
        let current = self.current.load_full();
        if let Some(p) = current.clone().filter(fresh) {
            return Ok(p);
        }
        // Old metadata for the same settings stays in use while the
        // provider cannot be reached.
        let stale = current.filter(|p| *p.oidc == **oidc);
        if let Some((failed, at)) = &refresh.failed
            && **failed == **oidc
            && at.elapsed() < RETRY_AFTER
        {
            return stale
                .ok_or_else(|| IdpError::Unavailable("discovery failed moments ago".to_owned()));
        }
        match discover(oidc).await {
            Ok(p) => {
                let p = Arc::new(p);
                tracing::info!(target: super::LOG_TARGET, issuer = %oidc.issuer, "identity provider discovered");
                self.current.store(Some(Arc::clone(&p)));
                refresh.failed = None;
                Ok(p)
            }
            Err(e) => {
                refresh.failed = Some((Arc::clone(oidc), Instant::now()));
                match stale {
                    Some(p) => {
                        tracing::warn!(target: super::LOG_TARGET, issuer = %oidc.issuer, error = %e, "identity provider not discovered again; its old metadata stays in use");
                        Ok(p)
                    }
                    None => Err(e),
                }
            }
        }
    }

    /// Exchanges `code` and verifies the ID token: with the keys known,
    /// and once more after fetching the keys again if the token names a
    /// key not among them (the provider rotated its keys).
    #[allow(clippy::too_many_arguments, reason = "one step-up's facts, named")]
    pub(super) async fn exchange(
        &self,
        provider: &Arc<Provider>,
        oidc: &Arc<Oidc>,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
        nonce: &Nonce,
        not_before: u64,
    ) -> Result<Claims, IdpError> {
        let redirect = RedirectUrl::new(redirect_uri.to_owned())
            .map_err(|e| IdpError::Exchange(e.to_string()))?;
        let client = CoreClient::from_provider_metadata(
            provider.metadata.clone(),
            provider.client_id(),
            provider.secret(),
        )
        .set_redirect_uri(redirect);
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| IdpError::Exchange(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()))
            .request_async(&provider.http)
            .await
            .map_err(|e| IdpError::Exchange(error_chain(&e)))?;
        let id_token = token
            .id_token()
            .ok_or_else(|| IdpError::Exchange("no ID token in the token response".to_owned()))?;
        match provider.verify(id_token, nonce, not_before) {
            Ok(claims) => Ok(claims),
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                let fresh = self.refetch_keys(provider, oidc, id_token).await?;
                fresh
                    .verify(id_token, nonce, not_before)
                    .map_err(|e| IdpError::Token(e.to_string()))
            }
            Err(e) => Err(IdpError::Token(e.to_string())),
        }
    }

    /// Fetches the provider's keys again for a token whose `kid` is not
    /// among them: at once the first time, then at most every
    /// [`REFETCH_EVERY`], so that a rotation is followed and a run of
    /// tokens naming unknown keys costs a bounded number of fetches.
    async fn refetch_keys(
        &self,
        provider: &Arc<Provider>,
        oidc: &Arc<Oidc>,
        id_token: &openidconnect::core::CoreIdToken,
    ) -> Result<Arc<Provider>, IdpError> {
        let kid = token_kid(&id_token.to_string())
            .ok_or_else(|| IdpError::Token("no key matches and the token names none".to_owned()))?;
        let mut refresh = self.refresh.lock().await;
        if let Some(current) = self.current.load_full()
            && !Arc::ptr_eq(&current, provider)
            && *current.oidc == **oidc
        {
            // Another request refetched meanwhile.
            return Ok(current);
        }
        if refresh
            .refetched
            .is_some_and(|at| at.elapsed() < REFETCH_EVERY)
        {
            return Err(IdpError::Token(format!(
                "no key {kid:?} among the provider's keys, fetched moments ago"
            )));
        }
        refresh.refetched = Some(Instant::now());
        let jwks = JsonWebKeySet::fetch_async(provider.metadata.jwks_uri(), &provider.http)
            .await
            .map_err(|e| IdpError::Unavailable(error_chain(&e)))?;
        let fresh = Arc::new(Provider {
            oidc: Arc::clone(&provider.oidc),
            metadata: provider.metadata.clone().set_jwks(jwks),
            http: provider.http.clone(),
            discovered_at: provider.discovered_at,
        });
        tracing::info!(target: super::LOG_TARGET, issuer = %oidc.issuer, kid, "identity provider keys fetched again");
        self.current.store(Some(Arc::clone(&fresh)));
        Ok(fresh)
    }
}

/// Discovery: the metadata at the issuer's well-known address (whose
/// `issuer` must be the configured one, checked by `openidconnect`) and
/// its keys.
async fn discover(oidc: &Arc<Oidc>) -> Result<Provider, IdpError> {
    let http = Http::new(oidc)?;
    let issuer = IssuerUrl::new(oidc.issuer.clone())
        .map_err(|e| IdpError::Unavailable(format!("issuer: {e}")))?;
    let metadata = CoreProviderMetadata::discover_async(issuer, &http)
        .await
        .map_err(|e| IdpError::Unavailable(error_chain(&e)))?;
    // An https issuer's endpoints are https too: the code and the keys
    // never travel in clear because the discovery document said so.
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
            return Err(IdpError::Unavailable(format!(
                "discovery names a cleartext endpoint: {clear}"
            )));
        }
    }
    Ok(Provider {
        oidc: Arc::clone(oidc),
        metadata,
        http,
        discovered_at: Instant::now(),
    })
}

/// The `kid` in a compact JWT's header, if it names one.
/// The `sid` claim of a (verified) JWT: a string of at most
/// [`vigil_engine::MAX_SID_BYTES`] visible ASCII characters, or none.
fn token_sid(jwt: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    // An ID token of a few kilobytes; a payload past 64 KiB is no ID
    // token worth reading.
    if payload.len() > 64 * 1024 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let sid = value.get("sid")?.as_str()?;
    let ok = !sid.is_empty()
        && sid.len() <= vigil_engine::MAX_SID_BYTES
        && sid.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| sid.to_owned())
}

fn token_kid(jwt: &str) -> Option<String> {
    let header = jwt.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let kid = value.get("kid")?.as_str()?;
    (kid.len() <= 256).then(|| kid.to_owned())
}

/// The HTTP client `openidconnect` calls: an [`outbound`] client with a
/// timeout per call, bodies refused beyond [`MAX_BODY_BYTES`].
#[derive(Debug, Clone)]
struct Http {
    client: reqwest::Client,
}

/// A failed call to the provider.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct HttpError(String);

impl Http {
    fn new(oidc: &Oidc) -> Result<Self, IdpError> {
        let client = outbound::client(oidc.ca_file.as_deref(), oidc.timeout, Some(oidc.timeout))
            .map_err(IdpError::Unavailable)?;
        Ok(Self { client })
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let request =
            reqwest::Request::try_from(request).map_err(|e| HttpError(error_chain(&e)))?;
        let response = self
            .client
            .execute(request)
            .await
            .map_err(|e| HttpError(error_chain(&e)))?;
        let mut out = http::Response::builder().status(response.status());
        for (name, value) in response.headers() {
            out = out.header(name, value);
        }
        let body = outbound::body(response, MAX_BODY_BYTES)
            .await
            .map_err(HttpError)?;
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

    #[test]
    fn kid_is_read_from_the_header_only() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let jwt = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"RS256","kid":"k1"}"#),
            b64(r#"{"kid":"no"}"#)
        );
        assert_eq!(token_kid(&jwt).as_deref(), Some("k1"));
        assert_eq!(
            token_kid(&format!("{}.x.y", b64(r#"{"alg":"RS256"}"#))),
            None
        );
        assert_eq!(token_kid("not base64!.x.y"), None);
        assert_eq!(token_kid(""), None);
    }

    #[test]
    fn the_sid_is_read_only_when_it_is_a_plain_string() {
        let jwt = |payload: &str| {
            format!(
                "e30.{}.sig",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload)
            )
        };
        assert_eq!(
            token_sid(&jwt(r#"{"sid":"a1-b2.c3"}"#)).as_deref(),
            Some("a1-b2.c3")
        );
        for payload in [
            r#"{"sub":"x"}"#.to_owned(),
            r#"{"sid":""}"#.to_owned(),
            r#"{"sid":7}"#.to_owned(),
            r#"{"sid":"a b"}"#.to_owned(),
            format!(r#"{{"sid":"{}"}}"#, "s".repeat(257)),
        ] {
            assert_eq!(token_sid(&jwt(&payload)), None, "{payload}");
        }
        assert_eq!(token_sid("only-one-part"), None);
    }
}
