//! Operator sign-in to the dashboard through a real OpenID provider
//! (`proxy/tests/idp/idp.mjs`, oidc-provider under node on loopback;
//! `npm ci --prefix proxy/tests/idp` first), as the attack: roles from the
//! groups claim, an identity with none refused, and callbacks that were
//! forged, replayed, unbound to the browser or carrying another sign-in's
//! nonce, each refused with its status.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::Db;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const ADMIN: &str = "admin-token-0123456789";
const CLIENT_SECRET: &str = "vigil-dashboard-secret-0123456789";
const DEADLINE: Duration = Duration::from_secs(30);

/// The test IdP, killed through its handle when dropped.
struct Idp {
    child: Child,
    issuer: String,
    _dir: tempfile::TempDir,
}

impl Idp {
    /// Starts `idp.mjs` with client `vigil` redirecting to `redirect`, and
    /// the accounts: alice (groups `vigil-responders`), bob
    /// (`vigil-viewers`), carol (`staff`, no dashboard role), dave (no
    /// groups at all). Password `pw-<name>`.
    fn start(redirect: &str) -> Idp {
        let account = |name: &str, groups: Option<Vec<&str>>| {
            let mut a = serde_json::json!({
                "password": format!("pw-{name}"),
                "otp": "123456",
                "email": format!("{name}@example.test"),
                "stale_auth_time": false,
            });
            if let Some(g) = groups {
                a["groups"] = serde_json::json!(g);
            }
            a
        };
        let config = serde_json::json!({
            "port": 0,
            "clients": [{
                "client_id": "vigil",
                "client_secret": CLIENT_SECRET,
                "redirect_uris": [redirect],
            }],
            "accounts": {
                "alice": account("alice", Some(vec!["staff", "vigil-responders"])),
                "bob": account("bob", Some(vec!["vigil-viewers"])),
                "carol": account("carol", Some(vec!["staff"])),
                "dave": account("dave", None),
            },
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("idp.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let idp = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proxy/tests/idp/idp.mjs");
        let mut child = Command::new("node")
            .arg(idp)
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .expect("node is installed");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(DEADLINE).unwrap_or_default();
        let issuer = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v["issuer"].as_str().map(str::to_owned));
        let Some(issuer) = issuer else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the IdP named no issuer ({line:?}); its log:\n{}",
                std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
            );
        };
        Idp {
            child,
            issuer,
            _dir: dir,
        }
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Controller {
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

impl Controller {
    /// A controller on `listener` whose dashboard signs operators in
    /// through `issuer`.
    async fn start(listener: tokio::net::TcpListener, store: &str, issuer: &str) -> Controller {
        let addr = listener.local_addr().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hash.key"), "11".repeat(32)).unwrap();
        std::fs::write(dir.path().join("admin.token"), ADMIN).unwrap();
        std::fs::write(dir.path().join("oidc.secret"), CLIENT_SECRET).unwrap();
        let toml = format!(
            "listen = \"{addr}\"\nstore = {store:?}\nhash_key_file = \"hash.key\"\nadmin_token_file = \"admin.token\"\n\
             user_names = \"clear\"\n\
             [dashboard.oidc]\nissuer = \"{issuer}\"\nclient_id = \"vigil\"\nclient_secret_file = \"oidc.secret\"\n\
             redirect_url = \"http://{addr}/dashboard/oidc/callback\"\nscopes = [\"openid\", \"email\", \"groups\"]\n\
             roles_claim = \"groups\"\nresponder_values = [\"vigil-responders\"]\nviewer_values = [\"vigil-viewers\"]\n\
             name_claim = \"email\"\n",
        );
        let path = dir.path().join("controller.toml");
        std::fs::write(&path, toml).unwrap();
        let config = vigil_controller::Config::load(&path).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            vigil_controller::run_on(listener, config, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        let c = Controller {
            addr,
            _dir: dir,
            stop: Some(stop),
            task,
        };
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while client().get(c.url("/healthz")).send().await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "controller did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        c
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// A browser that runs no script: keeps cookies per `host:port`, follows
/// redirects one at a time, fills in the IdP's login form.
#[derive(Default)]
struct Browser {
    jar: HashMap<String, BTreeMap<String, String>>,
}

struct Page {
    status: u16,
    location: Option<String>,
    set_cookies: Vec<String>,
    body: String,
}

fn host_port(url: &str) -> String {
    let u = url::Url::parse(url).unwrap();
    format!(
        "{}:{}",
        u.host_str().unwrap(),
        u.port_or_known_default().unwrap()
    )
}

impl Browser {
    async fn send(&mut self, url: &str, form: Option<&[(&str, &str)]>) -> Page {
        let mut request = match form {
            None => client().get(url),
            Some(pairs) => client()
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(
                    url::form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(pairs)
                        .finish(),
                ),
        };
        let hp = host_port(url);
        if let Some(c) = self.jar.get(&hp).filter(|c| !c.is_empty()) {
            let header: Vec<String> = c.iter().map(|(n, v)| format!("{n}={v}")).collect();
            request = request.header("cookie", header.join("; "));
        }
        let r = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = r.status().as_u16();
        let location = r.headers().get("location").map(|l| {
            url::Url::parse(url)
                .unwrap()
                .join(l.to_str().unwrap())
                .unwrap()
                .to_string()
        });
        let set_cookies: Vec<String> = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        for set in &set_cookies {
            let (pair, attrs) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').unwrap();
            let jar = self.jar.entry(hp.clone()).or_default();
            if attrs.contains("Max-Age=0") {
                jar.remove(name.trim());
            } else {
                jar.insert(name.trim().to_owned(), value.to_owned());
            }
        }
        Page {
            status,
            location,
            set_cookies,
            body: r.text().await.unwrap(),
        }
    }

    fn cookie(&self, url: &str, name: &str) -> Option<String> {
        self.jar.get(&host_port(url))?.get(name).cloned()
    }

    /// Starts a sign-in at the controller: the IdP's authorization URL.
    async fn start(&mut self, c: &Controller) -> String {
        let p = self.send(&c.url("/dashboard/oidc/start"), None).await;
        assert_eq!(p.status, 303);
        assert!(
            p.set_cookies
                .iter()
                .any(|s| s.starts_with("vigil-dashboard-oidc=")
                    && s.contains("HttpOnly")
                    && s.contains("SameSite=Lax")
                    && s.contains("Path=/")),
            "{:?}",
            p.set_cookies
        );
        p.location.unwrap()
    }

    /// Goes to `authorize` at the IdP, logs in as `login`, and returns the
    /// callback URL the IdP sends the browser to (not requested).
    async fn authorize(&mut self, authorize: &str, login: &str) -> String {
        let mut url = authorize.to_owned();
        for _ in 0..10 {
            let p = self.send(&url, None).await;
            if let Some(next) = p.location.clone().filter(|_| matches!(p.status, 302 | 303)) {
                if next.contains("/dashboard/oidc/callback") {
                    return next;
                }
                url = next;
                continue;
            }
            assert_eq!(p.status, 200, "{url}: {}", p.body);
            let action = p
                .body
                .split("action=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or_else(|| panic!("no login form at {url}: {}", p.body));
            let action = url::Url::parse(&url).unwrap().join(action).unwrap();
            let password = format!("pw-{login}");
            let p = self
                .send(
                    action.as_str(),
                    Some(&[("login", login), ("password", &password), ("otp", "")]),
                )
                .await;
            assert_eq!(p.status, 303, "{}", p.body);
            url = p.location.unwrap();
        }
        panic!("no callback after 10 hops from {authorize}");
    }
}

fn param(url: &str, name: &str) -> String {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no {name} in {url}"))
}

fn with_param(url: &str, name: &str, value: &str) -> String {
    let mut u = url::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| {
            if k == name {
                (k.into_owned(), value.to_owned())
            } else {
                (k.into_owned(), v.into_owned())
            }
        })
        .collect();
    u.query_pairs_mut().clear().extend_pairs(pairs);
    u.to_string()
}

/// A controller on a port of its own and the IdP that sends back to it.
async fn setup(store: &str) -> (Controller, Idp) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let idp = Idp::start(&format!("http://{addr}/dashboard/oidc/callback"));
    let c = Controller::start(listener, store, &idp.issuer).await;
    (c, idp)
}

const SESSION: &str = "vigil-dashboard";

#[tokio::test]
async fn operators_sign_in_through_the_idp_with_the_role_their_groups_give() {
    let db = Db::new(false).await;
    let (c, idp) = setup(&db.url()).await;
    // The sign-in page offers the provider.
    let login = client()
        .get(c.url("/dashboard/login"))
        .send()
        .await
        .unwrap();
    assert!(
        login
            .text()
            .await
            .unwrap()
            .contains("href=\"/dashboard/oidc/start\"")
    );

    // alice is in vigil-responders: a responder.
    let mut alice = Browser::default();
    let authorize = alice.start(&c).await;
    assert!(
        authorize.starts_with(&format!("{}/", idp.issuer)),
        "{authorize}"
    );
    assert_eq!(param(&authorize, "code_challenge_method"), "S256");
    assert_eq!(param(&authorize, "response_type"), "code");
    assert_eq!(param(&authorize, "scope"), "openid email groups");
    let callback = alice.authorize(&authorize, "alice").await;
    let p = alice.send(&callback, None).await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(
        p.body.contains("Signed in as alice@example.test"),
        "{}",
        p.body
    );
    assert!(p.body.contains("http-equiv=\"refresh\""));
    let set = p
        .set_cookies
        .iter()
        .find(|s| s.starts_with("vigil-dashboard="))
        .unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    // The pre-login cookie is cleared.
    assert!(alice.cookie(&c.url("/"), "vigil-dashboard-oidc").is_none());
    let overview = alice.send(&c.url("/dashboard"), None).await;
    assert_eq!(overview.status, 200);
    assert!(
        overview.body.contains("<strong>responder</strong>"),
        "{}",
        overview.body
    );
    let confirm = alice
        .send(
            &c.url("/dashboard/confirm?action=false-positive&reference=r-1"),
            None,
        )
        .await;
    assert_ne!(confirm.status, 403, "a responder may act");

    // bob is in vigil-viewers: reads, cannot act.
    let mut bob = Browser::default();
    let authorize = bob.start(&c).await;
    let callback = bob.authorize(&authorize, "bob").await;
    assert_eq!(bob.send(&callback, None).await.status, 200);
    let overview = bob.send(&c.url("/dashboard"), None).await;
    assert_eq!(overview.status, 200);
    assert!(overview.body.contains("<strong>viewer</strong>"));
    let confirm = bob
        .send(
            &c.url("/dashboard/confirm?action=false-positive&reference=r-1"),
            None,
        )
        .await;
    assert_eq!(confirm.status, 403);

    // carol (groups, none mapped) and dave (no groups claim): refused,
    // no session.
    for who in ["carol", "dave"] {
        let mut b = Browser::default();
        let authorize = b.start(&c).await;
        let callback = b.authorize(&authorize, who).await;
        let p = b.send(&callback, None).await;
        assert_eq!(p.status, 403, "{who}: {}", p.body);
        assert!(p.body.contains("no role on this dashboard"));
        assert!(b.cookie(&c.url("/"), SESSION).is_none(), "{who}");
        assert_eq!(b.send(&c.url("/dashboard"), None).await.status, 303);
    }

    // The audit trail names each by issuer and subject, with the role.
    let store = vigil_controller::store::Store::open(&db.url())
        .await
        .unwrap();
    let (audit, _) = store.audit_entries(20, 0).await.unwrap();
    let mut seen: Vec<(String, String, String)> = audit
        .iter()
        .map(|e| (e.who.clone(), e.role.clone(), e.outcome.clone()))
        .collect();
    seen.sort();
    let who = |name: &str| format!("{name}@example.test (oidc {} sub {name})", idp.issuer);
    assert_eq!(
        seen,
        vec![
            (who("alice"), "responder".to_owned(), "signed in".to_owned()),
            (who("bob"), "viewer".to_owned(), "signed in".to_owned()),
            (
                who("carol"),
                "none".to_owned(),
                "refused: no dashboard role in the identity's claims".to_owned()
            ),
            (
                who("dave"),
                "none".to_owned(),
                "refused: no dashboard role in the identity's claims".to_owned()
            ),
        ]
    );
    assert!(
        audit
            .iter()
            .all(|e| e.client.as_deref() == Some("127.0.0.1"))
    );
    c.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn forged_replayed_and_unbound_callbacks_are_refused() {
    let db = Db::new(false).await;
    let (c, _idp) = setup(&db.url()).await;
    let signed_in = |b: &Browser| b.cookie(&c.url("/"), SESSION).is_some();

    // A callback without the pre-login cookie (a code and state carried to
    // another browser: login CSRF, or a stolen callback URL): 400.
    let mut victim = Browser::default();
    let authorize = victim.start(&c).await;
    let callback = victim.authorize(&authorize, "alice").await;
    let mut other = Browser::default();
    let p = other.send(&callback, None).await;
    assert_eq!(p.status, 400, "{}", p.body);
    assert!(!signed_in(&other));

    // A forged state with the right pre-login cookie: 403, and the
    // sign-in is spent: the genuine callback after it is 400.
    let forged = with_param(&callback, "state", "forged-state");
    let kept = victim.jar.clone();
    let p = victim.send(&forged, None).await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(victim.cookie(&c.url("/"), "vigil-dashboard-oidc").is_none());
    // The answer cleared the pre-login cookie; a browser that kept it
    // anyway finds the sign-in spent.
    victim.jar = kept;
    let p = victim.send(&callback, None).await;
    assert_eq!(p.status, 400);
    assert!(!signed_in(&victim));

    // A good sign-in, then its callback replayed with the same pre-login
    // cookie: 400.
    let mut b = Browser::default();
    let authorize = b.start(&c).await;
    let callback = b.authorize(&authorize, "alice").await;
    let prelogin = b.cookie(&c.url("/"), "vigil-dashboard-oidc").unwrap();
    assert_eq!(b.send(&callback, None).await.status, 200);
    assert!(signed_in(&b));
    let mut replay = Browser::default();
    replay
        .jar
        .entry(host_port(&c.url("/")))
        .or_default()
        .insert("vigil-dashboard-oidc".to_owned(), prelogin);
    assert_eq!(replay.send(&callback, None).await.status, 400);
    assert!(!signed_in(&replay));

    // The used code with a new sign-in's own state: the provider refuses
    // the code (used, and bound to another PKCE challenge): 401.
    let mut b = Browser::default();
    let authorize = b.start(&c).await;
    let fresh_state = param(&authorize, "state");
    let p = b
        .send(&with_param(&callback, "state", &fresh_state), None)
        .await;
    assert_eq!(p.status, 401, "{}", p.body);
    assert!(!signed_in(&b));

    // Another nonce: the browser is sent to the provider with this
    // sign-in's state and PKCE challenge but a nonce of the attacker's.
    // The code exchanges (PKCE holds), yet the ID token's nonce is not
    // the sign-in's: 401.
    let mut b = Browser::default();
    let authorize = b.start(&c).await;
    let tampered = with_param(&authorize, "nonce", "attackers-nonce");
    let callback = b.authorize(&tampered, "alice").await;
    let p = b.send(&callback, None).await;
    assert_eq!(p.status, 401, "{}", p.body);
    assert!(!signed_in(&b));

    // The provider answering with an error (the right state): 401.
    let mut b = Browser::default();
    let authorize = b.start(&c).await;
    let state = param(&authorize, "state");
    let p = b
        .send(
            &c.url(&format!(
                "/dashboard/oidc/callback?error=access_denied&state={state}"
            )),
            None,
        )
        .await;
    assert_eq!(p.status, 401, "{}", p.body);

    // A callback naming another issuer (RFC 9207 `iss`): 403.
    let mut b = Browser::default();
    let authorize = b.start(&c).await;
    let callback = b.authorize(&authorize, "alice").await;
    let evil = if callback.contains("iss=") {
        with_param(&callback, "iss", "https://evil.example")
    } else {
        format!("{callback}&iss=https%3A%2F%2Fevil.example")
    };
    let p = b.send(&evil, None).await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(!signed_in(&b));

    // Malformed callbacks: a field twice, an unknown field: 400.
    for q in ["code=a&code=b&state=x", "code=a&state=x&extra=1"] {
        let mut b = Browser::default();
        b.start(&c).await;
        let p = b
            .send(&c.url(&format!("/dashboard/oidc/callback?{q}")), None)
            .await;
        assert_eq!(p.status, 400, "{q}");
    }
    // No failed sign-in above opened a session, nor wrote a sign-in row.
    let store = vigil_controller::store::Store::open(&db.url())
        .await
        .unwrap();
    let (audit, _) = store.audit_entries(50, 0).await.unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    c.stop().await;
    db.drop_db().await;
}

/// The key the controller hashes `name` to (hash key `11` × 32).
fn key_of(name: &str) -> String {
    format!(
        "{:016x}",
        vigil_engine::UserKey::for_name(
            &vigil_engine::SessionHashKey::from_bytes([0x11; 32]),
            name,
        )
        .as_u64()
    )
}

#[tokio::test]
async fn admin_api_calls_are_audited_listed_with_the_admin_token_and_scrubbed_on_erasure() {
    common::both(async |postgres| {
        let db = Db::new(postgres).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        // Discovery is lazy: no provider is needed for the admin API.
        let c = Controller::start(listener, &db.url(), "http://127.0.0.1:9").await;
        let post = |path: &str, token: Option<&str>, body: &str| {
            let mut r = client()
                .post(c.url(path))
                .header("content-type", "application/json")
                .body(body.to_owned());
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            r.send()
        };
        let list = |query: &str, token: Option<&str>| {
            let mut r = client().get(c.url(&format!("/v1/admin/audit{query}")));
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            r.send()
        };
        // The trail is the admin's only.
        assert_eq!(list("", None).await.unwrap().status(), 401);
        assert_eq!(
            list("", Some("wrong-token-0123456789"))
                .await
                .unwrap()
                .status(),
            401
        );
        // A refused caller's call is not an operator's action: no row.
        let r = post(
            "/v1/admin/users/revoke",
            Some("wrong-token-0123456789"),
            r#"{"user":"mallory"}"#,
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 401);
        // Reads are not rows either.
        let r = client()
            .get(c.url("/v1/admin/users"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // A change, and a malformed one.
        let r = post(
            "/v1/admin/users/revoke",
            Some(ADMIN),
            r#"{"user":"mallory"}"#,
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 200);
        let r = post(
            "/v1/admin/users/revoke",
            Some(ADMIN),
            r#"{"user":"mallory","x":1}"#,
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 400);
        let r = list("?limit=10", Some(ADMIN)).await.unwrap();
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        let entries = body["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 2, "{body}");
        assert_eq!(body["more"], false);
        let mallory = key_of("mallory");
        let mut seen: Vec<(String, String)> = entries
            .iter()
            .map(|e| {
                assert_eq!(e["who"], "admin API (admin token)");
                assert_eq!(e["role"], "responder");
                assert_eq!(e["client"], "127.0.0.1");
                assert_eq!(e["action"], "api POST /v1/admin/users/revoke");
                assert_eq!(e["target"], mallory.as_str(), "the key, never the name");
                (
                    e["target"].as_str().unwrap().to_owned(),
                    e["outcome"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        seen.sort();
        assert_eq!(seen[0].1, "200 OK");
        assert_eq!(seen[1].1, "400 Bad Request");
        // Paging.
        let r = list("?limit=1", Some(ADMIN)).await.unwrap();
        let page: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(page["entries"].as_array().unwrap().len(), 1);
        assert_eq!(page["more"], true);
        assert_eq!(page["next_offset"], 1);
        for bad in [
            "?limit=0",
            "?limit=501",
            "?offset=-1",
            "?limit=1&limit=2",
            "?since=1",
        ] {
            assert_eq!(list(bad, Some(ADMIN)).await.unwrap().status(), 400, "{bad}");
        }
        // Erasure scrubs every row naming the user's key, and its own row
        // names nobody.
        let r = post(
            "/v1/admin/users/erase",
            Some(ADMIN),
            r#"{"user":"mallory"}"#,
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 200);
        let r = list("", Some(ADMIN)).await.unwrap();
        let text = r.text().await.unwrap();
        assert!(!text.contains(&mallory), "{text}");
        assert!(!text.contains("mallory"), "{text}");
        let body: serde_json::Value = serde_json::from_str(&text).unwrap();
        let targets: Vec<&str> = body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["target"].as_str().unwrap())
            .collect();
        assert_eq!(targets, ["(erased user)"; 3]);
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}
