//! A real OpenID Connect provider on loopback (`proxy/tests/idp/idp.mjs`,
//! oidc-provider under node), a person who logs in at it with a form, and a
//! headless Chromium that does the same (`proxy/tests/idp/browser.mjs`).
//!
//! The node packages come from `npm ci --prefix proxy/tests/idp` (`.ci/run`).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cookie::Cookie;
use cookie::time::OffsetDateTime;
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, COOKIE, HeaderMap, LOCATION, SET_COOKIE};
use serde::Serialize;
use tempfile::TempDir;

use super::client::http_client;

/// The client id of [`IdpConfig::new`]'s client.
pub(crate) const CLIENT_ID: &str = "vigil";
/// The client secret of [`IdpConfig::new`]'s client.
pub(crate) const CLIENT_SECRET: &str = "vigil-test-secret-0123456789";
/// The acr of a login with a password only.
pub(crate) const ACR_PWD: &str = "urn:vigil:pwd";
/// The acr of a login with a password and a correct one-time code.
pub(crate) const ACR_MFA: &str = "urn:vigil:mfa";

/// Longest wait for the IdP to print its issuer. Generous: node loads
/// oidc-provider and makes an RSA key before it listens, and a test binary
/// starts one per test, a dozen at once on two busy cores (30 s was once
/// not enough while another build ran beside the suite).
const START_DEADLINE: Duration = Duration::from_secs(120);
/// Longest run of `browser.mjs`: its own 20 s, plus Chromium's start.
const BROWSER_DEADLINE: Duration = Duration::from_secs(40);

/// A running test IdP, killed by its handle when dropped.
///
/// Its config and its stderr (`stderr.log`) are in its own temporary
/// directory; a start that fails panics with that log.
#[derive(Debug)]
pub(crate) struct Idp {
    child: Mutex<Child>,
    dir: TempDir,
    issuer: String,
}

/// What the IdP knows: its clients and its accounts.
///
/// [`IdpConfig::new`] has one client, [`CLIENT_ID`] with [`CLIENT_SECRET`]
/// and no redirect URI yet (add them with [`IdpConfig::redirect_uri`]), and
/// three accounts:
/// - `alice`: password `pw-a`, OTP `123456`, `alice@example.test`;
/// - `bob`: password `pw-b`, OTP `654321`, `bob@example.test`;
/// - `stale`: password `pw-s`, OTP `111111`, `stale@example.test`, whose
///   `auth_time` stays that of its first login (an IdP that does not
///   advance it on re-authentication).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct IdpConfig {
    port: u16,
    clients: Vec<IdpClient>,
    accounts: BTreeMap<String, Account>,
}

/// A relying party registered at the IdP. It authenticates at the token
/// endpoint with `client_secret_basic` or `client_secret_post`, and must
/// send PKCE (S256).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct IdpClient {
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) redirect_uris: Vec<String>,
    /// Where the IdP posts its back-channel logout tokens; with it, the
    /// IdP's ID tokens for this client carry `sid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) backchannel_logout_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) backchannel_logout_session_required: Option<bool>,
}

/// A user of the IdP.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Account {
    pub(crate) password: String,
    pub(crate) otp: String,
    pub(crate) email: String,
    /// The IdP reports the first login's time as `auth_time` ever after.
    pub(crate) stale_auth_time: bool,
}

/// A person with a browser that runs no script: follows redirects one at a
/// time, keeps cookies, and fills in the IdP's login form.
///
/// Cookies are kept per `host:port`, whatever their `Domain` and `Path`
/// (every server in a test is its own loopback port); a `Set-Cookie` with
/// `Max-Age=0` or a past `Expires` deletes one.
#[derive(Debug)]
pub(crate) struct FormClient {
    http: reqwest::Client,
    jar: HashMap<String, BTreeMap<String, String>>,
}

/// One response, its body read.
#[derive(Debug, Clone)]
pub(crate) struct Page {
    /// The URL requested.
    pub(crate) url: String,
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

/// Where [`FormClient::follow`] went.
#[derive(Debug, Clone)]
pub(crate) struct Followed {
    /// Every request, `(url, status)`, in order; the last is `page`'s.
    pub(crate) hops: Vec<(String, u16)>,
    pub(crate) page: Page,
}

/// The payload of a JWT, decoded but not verified.
pub(crate) fn jwt_payload(jwt: &str) -> serde_json::Value {
    jwt_part(jwt, 1)
}

/// The protected header of a JWT, decoded but not verified.
pub(crate) fn jwt_header(jwt: &str) -> serde_json::Value {
    jwt_part(jwt, 0)
}

fn jwt_part(jwt: &str, index: usize) -> serde_json::Value {
    let part = jwt.split('.').nth(index).expect("a JWT has three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// The body of `response` as JSON (reqwest's `json` feature is off).
pub(crate) async fn json_body(response: reqwest::Response) -> serde_json::Value {
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `pairs` as an `application/x-www-form-urlencoded` body.
pub(crate) fn form_body(pairs: &[(&str, &str)]) -> String {
    // The url crate's query serializer is that encoding.
    let mut url = Url::parse("http://form.invalid/").unwrap();
    url.query_pairs_mut().extend_pairs(pairs);
    url.query().unwrap_or("").to_owned()
}

/// Runs `browser.mjs` with `args` (see that file) and returns the JSON line
/// it prints: `{"url", "status", "body", "hops"}`. Panics, with its stderr,
/// if it fails or takes longer than [`BROWSER_DEADLINE`].
pub(crate) async fn run_browser(args: serde_json::Value) -> serde_json::Value {
    run_script("browser.mjs", args).await
}

/// Runs `node <script> '<args>'` from `tests/idp` (a browser script: its
/// deadline and output contract are [`run_browser`]'s) and returns the
/// JSON line it printed.
pub(crate) async fn run_script(script: &str, args: serde_json::Value) -> serde_json::Value {
    let child = Command::new("node")
        .arg(idp_dir().join(script))
        .arg(args.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node is installed");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    // Waiting blocks, so on a blocking thread: the test's own servers keep
    // running on its runtime meanwhile.
    let wait = tokio::task::spawn_blocking(move || child.wait_with_output());
    let output = match tokio::time::timeout(BROWSER_DEADLINE, wait).await {
        Ok(output) => output.unwrap().unwrap(),
        Err(_) => {
            // Our own child, still unreaped (its waiter holds it), so the pid
            // is still its.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            panic!("{script} ran longer than {BROWSER_DEADLINE:?}");
        }
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script} failed: {stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{script} printed {stdout:?} ({e}); stderr: {stderr}"))
}

fn idp_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/idp")
}

// === impl Idp ===

impl Idp {
    /// Runs `node idp.mjs config.json` with `config` and waits for the line
    /// naming its issuer. Panics, with its log, if it exits or says nothing
    /// within the deadline.
    pub(crate) fn start(config: &IdpConfig) -> Idp {
        assert!(
            config.clients.iter().all(|c| !c.redirect_uris.is_empty()),
            "every IdP client needs a redirect URI (IdpConfig::redirect_uri)"
        );
        let dir = TempDir::new().unwrap();
        let config_path = dir.path().join("config.json");
        std::fs::write(&config_path, serde_json::to_vec(config).unwrap()).unwrap();
        let log_path = dir.path().join("stderr.log");
        let mut child = Command::new("node")
            .arg(idp_dir().join("idp.mjs"))
            .arg(&config_path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log_path).unwrap())
            .spawn()
            .expect("node is installed");
        let stdout = child.stdout.take().unwrap();
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        match first_line(stdout) {
            Some(line) => {
                let issuer = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v["issuer"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| panic!("the IdP printed {line:?}; its log:\n{}", log()));
                Idp {
                    child: Mutex::new(child),
                    dir,
                    issuer,
                }
            }
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the IdP named no issuer within {START_DEADLINE:?}; its log:\n{}",
                    log()
                );
            }
        }
    }

    /// The `sid` of the IdP session that last signed `account` in to the
    /// first client (the test hook `GET /test/sid`), if any.
    pub(crate) async fn last_sid(&self, account: &str) -> Option<String> {
        let r = crate::common::http_client()
            .get(self.url(&format!("/test/sid?account={account}")))
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        v["sid"].as_str().map(str::to_owned)
    }

    /// `http://127.0.0.1:PORT`, where it serves discovery.
    pub(crate) fn issuer(&self) -> &str {
        &self.issuer
    }

    /// `issuer` followed by `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// Replaces the signing key by a new one with a new kid, and returns the
    /// kid. Sessions, codes and grants at the IdP are lost with the old key.
    pub(crate) async fn rotate_keys(&self) -> String {
        let response = http_client()
            .post(self.url("/test/rotate-keys"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body = json_body(response).await;
        body["kid"].as_str().unwrap().to_owned()
    }

    /// What it wrote to stderr so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

/// The first line of `stdout`, or `None` if the process closes it or says
/// nothing within [`START_DEADLINE`]. The read blocks, so a thread does it;
/// a late line goes nowhere once the wait is over.
fn first_line(stdout: ChildStdout) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(read.ok().filter(|n| *n > 0).map(|_| line));
    });
    rx.recv_timeout(START_DEADLINE).ok().flatten()
}

impl Drop for Idp {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

// === impl IdpConfig ===

impl IdpConfig {
    /// The default client and accounts (see [`IdpConfig`]), any free port.
    pub(crate) fn new() -> IdpConfig {
        let account = |password: &str, otp: &str, email: &str, stale_auth_time| Account {
            password: password.to_owned(),
            otp: otp.to_owned(),
            email: email.to_owned(),
            stale_auth_time,
        };
        IdpConfig {
            port: 0,
            clients: vec![IdpClient {
                client_id: CLIENT_ID.to_owned(),
                client_secret: CLIENT_SECRET.to_owned(),
                redirect_uris: Vec::new(),
                backchannel_logout_uri: None,
                backchannel_logout_session_required: None,
            }],
            accounts: BTreeMap::from([
                (
                    "alice".to_owned(),
                    account("pw-a", "123456", "alice@example.test", false),
                ),
                (
                    "bob".to_owned(),
                    account("pw-b", "654321", "bob@example.test", false),
                ),
                (
                    "stale".to_owned(),
                    account("pw-s", "111111", "stale@example.test", true),
                ),
            ]),
        }
    }

    /// Adds a redirect URI to the first client.
    pub(crate) fn redirect_uri(mut self, uri: &str) -> IdpConfig {
        self.clients[0].redirect_uris.push(uri.to_owned());
        self
    }

    /// Has the first client take back-channel logout tokens at `uri`,
    /// with the session's `sid` (so ID tokens carry `sid` too).
    pub(crate) fn backchannel_logout_uri(mut self, uri: &str) -> IdpConfig {
        self.clients[0].backchannel_logout_uri = Some(uri.to_owned());
        self.clients[0].backchannel_logout_session_required = Some(true);
        self
    }

    /// Adds a client.
    pub(crate) fn client(mut self, client: IdpClient) -> IdpConfig {
        self.clients.push(client);
        self
    }

    /// Adds an account, or replaces the one with that id.
    pub(crate) fn account(mut self, id: &str, account: Account) -> IdpConfig {
        self.accounts.insert(id.to_owned(), account);
        self
    }

    /// Listens on this port rather than any free one.
    pub(crate) fn port(mut self, port: u16) -> IdpConfig {
        self.port = port;
        self
    }
}

// === impl FormClient ===

impl FormClient {
    /// No cookies; follows no redirect by itself.
    pub(crate) fn new() -> FormClient {
        FormClient {
            http: http_client(),
            jar: HashMap::new(),
        }
    }

    /// Sets a cookie for every request to `host_port` (`127.0.0.1:8080`).
    pub(crate) fn set_cookie(&mut self, host_port: &str, name: &str, value: &str) {
        self.jar
            .entry(host_port.to_owned())
            .or_default()
            .insert(name.to_owned(), value.to_owned());
    }

    /// Every cookie it holds for the host and port of `url`.
    pub(crate) fn cookies_of(&self, url: &str) -> Vec<(String, String)> {
        self.jar
            .get(&host_port(url))
            .map(|c| c.iter().map(|(n, v)| (n.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// The cookie `name` it holds for `host_port`.
    pub(crate) fn cookie(&self, host_port: &str, name: &str) -> Option<&str> {
        self.jar.get(host_port)?.get(name).map(String::as_str)
    }

    /// GETs `url` with its cookies for that host and port, and keeps the
    /// cookies the response sets.
    pub(crate) async fn get(&mut self, url: &str) -> Page {
        let request = self.http.get(url);
        self.send(url, request).await
    }

    /// GETs `url` and follows 302, 303 and 307 redirects, at most
    /// `max_hops` of them; the final page is the first answer that is not
    /// one. Panics if there are more.
    pub(crate) async fn follow(&mut self, url: &str, max_hops: usize) -> Followed {
        self.follow_until(url, max_hops, |_| false).await
    }

    /// Like [`FormClient::follow`], but stops at a redirect whose resolved
    /// `Location` satisfies `stop` (a relying party's redirect URI, say)
    /// without requesting it; that redirect is the final page.
    pub(crate) async fn follow_until(
        &mut self,
        url: &str,
        max_hops: usize,
        stop: impl Fn(&str) -> bool,
    ) -> Followed {
        let mut hops = Vec::new();
        let mut url = url.to_owned();
        loop {
            let page = self.get(&url).await;
            hops.push((url.clone(), page.status));
            let Some(next) = page.location().filter(|_| page.is_redirect()) else {
                return Followed { hops, page };
            };
            if stop(&next) {
                return Followed { hops, page };
            }
            assert!(
                hops.len() <= max_hops,
                "more than {max_hops} redirects: {hops:?}"
            );
            url = next;
        }
    }

    /// Fills in the IdP's login form found in `html` (the body of
    /// `page_url`) and posts it; `otp: None` leaves the code empty. Returns
    /// the answer, a redirect when the login worked; the caller follows it.
    pub(crate) async fn submit_login(
        &mut self,
        page_url: &str,
        html: &str,
        login: &str,
        password: &str,
        otp: Option<&str>,
    ) -> Page {
        // Our own form: `<form method="post" action="...">`, one per page.
        let action = html
            .split("<form")
            .nth(1)
            .and_then(|form| form.split("action=\"").nth(1))
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no login form at {page_url}:\n{html}"));
        let action = Url::parse(page_url).unwrap().join(action).unwrap();
        let body = form_body(&[
            ("login", login),
            ("password", password),
            ("otp", otp.unwrap_or("")),
        ]);
        let request = self
            .http
            .post(action.as_str())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        self.send(action.as_str(), request).await
    }

    /// Posts `pairs` as a form to `url` with its cookies, keeping the
    /// cookies the answer sets.
    pub(crate) async fn post_form(&mut self, url: &str, pairs: &[(&str, &str)]) -> Page {
        let request = self
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form_body(pairs));
        self.send(url, request).await
    }

    async fn send(&mut self, url: &str, mut request: reqwest::RequestBuilder) -> Page {
        let host_port = host_port(url);
        if let Some(cookies) = self.jar.get(&host_port).filter(|c| !c.is_empty()) {
            let header: Vec<String> = cookies.iter().map(|(n, v)| format!("{n}={v}")).collect();
            request = request.header(COOKIE, header.join("; "));
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        for set in headers.get_all(SET_COOKIE) {
            self.keep(&host_port, set.to_str().unwrap());
        }
        let body = response.text().await.unwrap();
        Page {
            url: url.to_owned(),
            status,
            headers,
            body,
        }
    }

    fn keep(&mut self, host_port: &str, set_cookie: &str) {
        let cookie = Cookie::parse(set_cookie).unwrap();
        let expired = cookie.max_age().is_some_and(|age| age.whole_seconds() <= 0)
            || cookie
                .expires_datetime()
                .is_some_and(|at| at <= OffsetDateTime::now_utc());
        let jar = self.jar.entry(host_port.to_owned()).or_default();
        if expired {
            jar.remove(cookie.name());
        } else {
            jar.insert(cookie.name().to_owned(), cookie.value().to_owned());
        }
    }
}

fn host_port(url: &str) -> String {
    let url = Url::parse(url).unwrap();
    format!(
        "{}:{}",
        url.host_str().unwrap(),
        url.port_or_known_default().unwrap()
    )
}

// === impl Page ===

impl Page {
    /// Its `Location`, resolved against its URL.
    pub(crate) fn location(&self) -> Option<String> {
        let location = self.headers.get(LOCATION)?.to_str().ok()?;
        Some(Url::parse(&self.url).ok()?.join(location).ok()?.to_string())
    }

    /// A 302, 303 or 307: the redirects a browser follows with a GET here.
    pub(crate) fn is_redirect(&self) -> bool {
        matches!(self.status, 302 | 303 | 307)
    }

    /// The value of its header `name`.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }
}
