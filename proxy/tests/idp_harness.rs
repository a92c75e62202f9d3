//! The test IdP on its own, no Vigil involved: it must behave as the
//! step-up tests assume — an authorization code flow with PKCE whose ID
//! token says how the user logged in — before any of them relies on it.
//!
//! Needs node and `npm ci --prefix proxy/tests/idp`; the browser test needs
//! `/usr/bin/chromium`.

// Test code: a failed unwrap is a failed test. clippy.toml allows these in
// #[test] functions; this also covers the helpers in `common`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{
    ACR_MFA, ACR_PWD, CLIENT_ID, CLIENT_SECRET, FormClient, Idp, IdpConfig, closed_port, form_body,
    http_client, json_body, jwt_header, jwt_payload, run_browser,
};
use reqwest::Url;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Redirects from the authorization endpoint to the login form, or from
/// the form's answer back to the redirect URI: two at most each way.
const MAX_HOPS: usize = 4;

/// An authorization request as a relying party makes it.
struct AuthRequest {
    url: String,
    state: String,
    nonce: String,
    verifier: String,
}

/// What the redirect URI received.
struct Callback {
    code: String,
    state: String,
}

/// Builds the authorization request: code flow, PKCE S256, `openid email`,
/// and `extra` parameters (`prompt`, `acr_values`, ...).
fn auth_request(idp: &Idp, redirect_uri: &str, tag: &str, extra: &[(&str, &str)]) -> AuthRequest {
    let state = format!("state-{tag}");
    let nonce = format!("nonce-{tag}");
    // 43 to 128 unreserved characters (RFC 7636 4.1).
    let verifier = format!("verifier-{tag}-{}", "0123456789".repeat(5));
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let mut url = Url::parse(&idp.url("/auth")).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", CLIENT_ID)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", "openid email")
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .extend_pairs(extra);
    AuthRequest {
        url: url.into(),
        state,
        nonce,
        verifier,
    }
}

/// Runs `request` up to the login form, logs in, and follows back to
/// `redirect_uri` without requesting it.
async fn log_in(
    client: &mut FormClient,
    request: &AuthRequest,
    redirect_uri: &str,
    (login, password, otp): (&str, &str, Option<&str>),
) -> Callback {
    let to_form = client.follow(&request.url, MAX_HOPS).await;
    let form = &to_form.page;
    assert_eq!(form.status, 200, "{:?}\n{}", to_form.hops, form.body);
    assert!(form.body.contains("<form"), "{}", form.body);
    let answer = client
        .submit_login(&form.url, &form.body, login, password, otp)
        .await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let back = client
        .follow_until(&answer.location().unwrap(), MAX_HOPS, |url| {
            url.starts_with(redirect_uri)
        })
        .await;
    let location = back
        .page
        .location()
        .expect("redirected to the redirect URI");
    let query: Vec<(String, String)> = Url::parse(&location)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    let param = |name: &str| {
        query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name} in {location}"))
    };
    Callback {
        code: param("code"),
        state: param("state"),
    }
}

/// Exchanges `code` at the token endpoint with `client_secret_basic`;
/// returns the status and the JSON body.
async fn exchange(idp: &Idp, code: &str, verifier: &str, redirect_uri: &str) -> (u16, Value) {
    let response = http_client()
        .post(idp.url("/token"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form_body(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ]))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, json_body(response).await)
}

/// A redirect URI nothing listens on: the form client never requests it.
fn closed_redirect_uri() -> String {
    format!("http://{}/cb", closed_port())
}

async fn jwks_kids(idp: &Idp) -> Vec<String> {
    let jwks = json_body(http_client().get(idp.url("/jwks")).send().await.unwrap()).await;
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn discovery_names_its_issuer_and_s256() {
    let idp = Idp::start(&IdpConfig::new().redirect_uri(&closed_redirect_uri()));
    let discovery = json_body(
        http_client()
            .get(idp.url("/.well-known/openid-configuration"))
            .send()
            .await
            .unwrap(),
    )
    .await;

    assert_eq!(discovery["issuer"], idp.issuer());
    assert!(idp.issuer().starts_with("http://127.0.0.1:"));
    assert_eq!(
        discovery["code_challenge_methods_supported"],
        json!(["S256"])
    );
    assert_eq!(discovery["acr_values_supported"], json!([ACR_PWD, ACR_MFA]));
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        json!(["RS256"])
    );
}

#[tokio::test]
async fn code_flow_with_otp_gives_an_mfa_id_token() {
    let redirect_uri = closed_redirect_uri();
    let idp = Idp::start(&IdpConfig::new().redirect_uri(&redirect_uri));
    let mut client = FormClient::new();
    let extra = [("acr_values", ACR_MFA), ("prompt", "login")];
    let request = auth_request(&idp, &redirect_uri, "mfa", &extra);

    let callback = log_in(
        &mut client,
        &request,
        &redirect_uri,
        ("alice", "pw-a", Some("123456")),
    )
    .await;
    assert_eq!(callback.state, request.state);
    let (status, tokens) = exchange(&idp, &callback.code, &request.verifier, &redirect_uri).await;
    assert_eq!(status, 200, "{tokens}");

    let id_token = tokens["id_token"].as_str().unwrap();
    let header = jwt_header(id_token);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(
        json!(jwks_kids(&idp).await),
        json!([header["kid"].as_str().unwrap()])
    );
    let claims = jwt_payload(id_token);
    assert_eq!(claims["iss"], idp.issuer());
    assert_eq!(claims["aud"], CLIENT_ID);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["email"], "alice@example.test");
    assert_eq!(claims["acr"], ACR_MFA);
    assert_eq!(claims["amr"], json!(["pwd", "otp"]));
    assert_eq!(claims["nonce"], request.nonce.as_str());
    assert!(claims["auth_time"].is_u64(), "{claims}");
    assert!(claims["iat"].is_u64(), "{claims}");

    // A code is good once; oidc-provider says so as invalid_grant.
    let (status, error) = exchange(&idp, &callback.code, &request.verifier, &redirect_uri).await;
    assert_eq!(status, 400);
    assert_eq!(error["error"], "invalid_grant");

    // With the IdP session alive, prompt=login still shows the form.
    let again = auth_request(&idp, &redirect_uri, "again", &[("prompt", "login")]);
    let to_form = client.follow(&again.url, MAX_HOPS).await;
    assert_eq!(to_form.page.status, 200);
    assert!(to_form.page.body.contains("name=\"password\""));
}

#[tokio::test]
async fn without_otp_the_id_token_says_password_only_and_no_acr_values_needed() {
    let redirect_uri = closed_redirect_uri();
    let idp = Idp::start(&IdpConfig::new().redirect_uri(&redirect_uri));
    let mut client = FormClient::new();
    let request = auth_request(&idp, &redirect_uri, "pwd", &[]);

    let callback = log_in(&mut client, &request, &redirect_uri, ("bob", "pw-b", None)).await;
    let (status, tokens) = exchange(&idp, &callback.code, &request.verifier, &redirect_uri).await;
    assert_eq!(status, 200, "{tokens}");

    let claims = jwt_payload(tokens["id_token"].as_str().unwrap());
    assert_eq!(claims["sub"], "bob");
    assert_eq!(claims["acr"], ACR_PWD);
    assert_eq!(claims["amr"], json!(["pwd"]));
    assert!(claims["auth_time"].is_u64(), "{claims}");

    // The IdP session now answers without a form...
    let silent = auth_request(&idp, &redirect_uri, "silent", &[]);
    let back = client
        .follow_until(&silent.url, MAX_HOPS, |url| url.starts_with(&redirect_uri))
        .await;
    assert!(back.page.is_redirect(), "{:?}", back.hops);
    // ...but max_age=0 asks for the form again.
    let fresh = auth_request(&idp, &redirect_uri, "fresh", &[("max_age", "0")]);
    let to_form = client.follow(&fresh.url, MAX_HOPS).await;
    assert_eq!(to_form.page.status, 200);
    assert!(to_form.page.body.contains("name=\"password\""));
}

#[tokio::test]
async fn a_wrong_password_shows_the_form_again() {
    let redirect_uri = closed_redirect_uri();
    let idp = Idp::start(&IdpConfig::new().redirect_uri(&redirect_uri));
    let mut client = FormClient::new();
    let request = auth_request(&idp, &redirect_uri, "wrong", &[]);
    let form = client.follow(&request.url, MAX_HOPS).await.page;

    let answer = client
        .submit_login(&form.url, &form.body, "alice", "pw-b", Some("123456"))
        .await;

    assert_eq!(answer.status, 200);
    assert!(answer.body.contains("invalid"), "{}", answer.body);
    assert!(answer.body.contains("<form"), "{}", answer.body);
}

#[tokio::test]
async fn the_stale_account_keeps_its_first_auth_time() {
    let redirect_uri = closed_redirect_uri();
    let idp = Idp::start(&IdpConfig::new().redirect_uri(&redirect_uri));
    let mut client = FormClient::new();
    let mut auth_times = Vec::new();
    for round in ["first", "second"] {
        if round == "second" {
            // auth_time counts whole seconds: the second login must be in a
            // later second for a stuck auth_time to show. Not synchronisation.
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        }
        let request = auth_request(&idp, &redirect_uri, round, &[("prompt", "login")]);
        let account = ("stale", "pw-s", Some("111111"));
        let callback = log_in(&mut client, &request, &redirect_uri, account).await;
        let (_, tokens) = exchange(&idp, &callback.code, &request.verifier, &redirect_uri).await;
        let claims = jwt_payload(tokens["id_token"].as_str().unwrap());
        auth_times.push((claims["auth_time"].clone(), claims["iat"].clone()));
    }

    let (first, _) = &auth_times[0];
    let (second, second_iat) = &auth_times[1];
    assert_eq!(first, second);
    assert!(second_iat.as_u64().unwrap() > second.as_u64().unwrap());
}

#[tokio::test]
async fn rotating_keys_changes_the_kid() {
    let redirect_uri = closed_redirect_uri();
    let idp = Idp::start(&IdpConfig::new().redirect_uri(&redirect_uri));
    let before = jwks_kids(&idp).await;

    let kid = idp.rotate_keys().await;

    assert_eq!(jwks_kids(&idp).await, vec![kid.clone()]);
    assert!(!before.contains(&kid));
    // New ID tokens are signed with the new key.
    let mut client = FormClient::new();
    let request = auth_request(&idp, &redirect_uri, "rotated", &[]);
    let account = ("alice", "pw-a", None);
    let callback = log_in(&mut client, &request, &redirect_uri, account).await;
    let (_, tokens) = exchange(&idp, &callback.code, &request.verifier, &redirect_uri).await;
    assert_eq!(jwt_header(tokens["id_token"].as_str().unwrap())["kid"], kid);
}

#[tokio::test]
async fn chromium_logs_in_and_lands_on_the_redirect_uri() {
    let landing = Landing::start().await;
    let redirect_uri = format!("http://{}/cb", landing.addr);
    let idp = Idp::start(&IdpConfig::new().redirect_uri(&redirect_uri));
    let request = auth_request(&idp, &redirect_uri, "browser", &[("prompt", "login")]);

    let result = run_browser(json!({
        "start": request.url,
        "cookies": [{"name": "session", "value": "v", "url": format!("http://localhost:{}", landing.addr.port())}],
        "login": "alice",
        "password": "pw-a",
        "otp": "123456",
        "stop_prefix": redirect_uri,
    }))
    .await;

    let url = result["url"].as_str().unwrap();
    assert!(url.starts_with(&redirect_uri), "{result}");
    assert!(
        url.contains(&format!("state={}", request.state)),
        "{result}"
    );
    assert_eq!(result["status"], 200, "{result}");
    assert_eq!(result["body"], "landed", "{result}");
    let hops: Vec<&str> = result["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert_eq!(hops.first(), Some(&request.url.as_str()), "{result}");
    assert!(hops.iter().any(|h| h.contains("/interaction/")), "{result}");
    assert_eq!(hops.last(), Some(&url), "{result}");
}

/// The relying party's redirect URI for the browser: answers every request
/// `200 landed`.
struct Landing {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Landing {
    async fn start() -> Landing {
        let listener = TcpListener::from_std(common::held_listener()).unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let answer = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\
                                  content-length: 6\r\nconnection: close\r\n\r\nlanded";
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        Landing { addr, task }
    }
}

impl Drop for Landing {
    fn drop(&mut self) {
        self.task.abort();
    }
}
