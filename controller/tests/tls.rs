//! The controller over HTTPS, with client certificates for nodes: real
//! listeners on loopback, certificates made in the test (rcgen). Transport
//! tests run on SQLite; what the store keeps (a node disabled through the
//! admin API) runs on SQLite and PostgreSQL (127.0.0.1:5432, a fresh
//! database per test, dropped after).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use vigil_fleet::{EventAck, EventBatch, Frame, NodeEvent, NodeEventKind, SessionId, UserId};
use vigil_fleet::{VERSION, read_frame};

const ADMIN: &str = "admin-token-0123456789";
const NODE_B: &str = "node-b-token-0123456789";
const DEADLINE: Duration = Duration::from_secs(20);
const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A CA that issues certificates.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
struct Pair {
    cert: String,
    key: String,
    der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// A leaf for `names` (DNS names, or `127.0.0.1`).
    fn issue(&self, names: &[&str]) -> Pair {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        for name in names {
            params.subject_alt_names.push(match name.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*name).try_into().unwrap()),
            });
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The fleet's certificates: the controller's, and its nodes'.
struct Pki {
    server_ca: Ca,
    node_ca: Ca,
    node_a: Pair,
    node_c: Pair,
    /// The operator's certificate, from the nodes' CA, pinned as the
    /// admin's.
    operator: Pair,
}

impl Pki {
    fn new() -> Pki {
        let node_ca = Ca::new("Vigil nodes");
        Pki {
            server_ca: Ca::new("Vigil controller"),
            node_a: node_ca.issue(&["node-a.nodes.example"]),
            node_c: node_ca.issue(&["node-c.example"]),
            operator: node_ca.issue(&["operator.example"]),
            node_ca,
        }
    }
}

/// A controller serving HTTPS on a free port.
struct Controller {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

/// The config used, besides `[tls]`: node `a` by its certificate's name,
/// `b` by token, `c` by its certificate's pin.
fn write_config(dir: &Path, pki: &Pki, store: &str, addr: SocketAddr) -> std::path::PathBuf {
    let server = pki.server_ca.issue(&["127.0.0.1", "localhost"]);
    std::fs::write(dir.join("hash.key"), "11".repeat(32)).unwrap();
    std::fs::write(dir.join("admin.token"), ADMIN).unwrap();
    std::fs::write(dir.join("server.pem"), &server.cert).unwrap();
    std::fs::write(dir.join("server.key"), &server.key).unwrap();
    std::fs::write(dir.join("nodes-ca.pem"), pki.node_ca.pem()).unwrap();
    let toml = format!(
        "listen = \"{addr}\"\nstore = {store:?}\nhash_key_file = \"hash.key\"\nadmin_token_file = \"admin.token\"\n\
         admin_certificate_sha256 = \"{}\"\n\
         [tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\nclient_ca_file = \"nodes-ca.pem\"\n\
         [[nodes]]\nname = \"a\"\ncertificate_san = \"node-a.nodes.example\"\n\
         [[nodes]]\nname = \"b\"\ntoken_sha256 = \"{}\"\n\
         [[nodes]]\nname = \"c\"\ncertificate_sha256 = \"{}\"\n",
        sha256_hex(&pki.operator.der),
        hex::encode(vigil_controller::config::token_hash(NODE_B)),
        sha256_hex(&pki.node_c.der),
    );
    let path = dir.join("controller.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

impl Controller {
    async fn start(pki: &Pki, store: Option<&str>) -> Controller {
        let dir = tempfile::tempdir().unwrap();
        // Held until the controller takes it: a port released and bound
        // again later could be taken in between by another test.
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        held.set_nonblocking(true).unwrap();
        let addr = held.local_addr().unwrap();
        let store = store.map_or_else(
            || format!("sqlite://{}", dir.path().join("controller.db").display()),
            str::to_owned,
        );
        let path = write_config(dir.path(), pki, &store, addr);
        let config = vigil_controller::Config::load(&path).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            vigil_controller::run_on(
                tokio::net::TcpListener::from_std(held).unwrap(),
                config,
                async {
                    let _ = stopped.await;
                },
            )
            .await
            .unwrap();
        });
        let c = Controller {
            addr,
            dir,
            stop: Some(stop),
            task,
        };
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let anonymous = client(pki, None);
        while anonymous.get(c.url("/healthz")).send().await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "controller did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        c
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    async fn admin(&self, pki: &Pki, path: &str, body: serde_json::Value) -> reqwest::Response {
        client(pki, None)
            .post(self.url(path))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// A client trusting the controller's CA, presenting `cert` if given.
fn client(pki: &Pki, cert: Option<&Pair>) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder().add_root_certificate(
        reqwest::Certificate::from_pem(pki.server_ca.pem().as_bytes()).unwrap(),
    );
    if let Some(cert) = cert {
        builder = builder.identity(
            reqwest::Identity::from_pem(format!("{}{}", cert.key, cert.cert).as_bytes()).unwrap(),
        );
    }
    builder.build().unwrap()
}

fn revoked(id: &str, n: u8) -> EventBatch {
    let reference = format!("ref-{id}");
    EventBatch {
        v: VERSION,
        events: vec![
            // The node's evidence first: the controller takes a node's
            // revocation only on its own enforced `revoke` detection.
            NodeEvent {
                id: format!("{id}-d"),
                kind: NodeEventKind::Detection {
                    reference: reference.clone(),
                    session: Some(SessionId([n; 16])),
                    user: Some(UserId(5)),
                    route: "app".to_owned(),
                    rule: None,
                    action: "revoke".to_owned(),
                    enforced: true,
                    score: 90,
                    reasons: vec![("new_device".to_owned(), 90)],
                    at: 100,
                    facts: None,
                },
            },
            NodeEvent {
                id: id.to_owned(),
                kind: NodeEventKind::SessionRevoked {
                    session: SessionId([n; 16]),
                    user: Some(UserId(5)),
                    reference: Some(reference),
                    at: 100,
                },
            },
        ],
    }
}

/// A sync stream's frames as they come.
struct Stream {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Stream {
    async fn open(c: &Controller, client: &reqwest::Client) -> Stream {
        let response = client
            .get(c.url("/v1/sync?since=0"))
            .header(vigil_fleet::VERSION_HEADER, VERSION)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        Stream {
            response,
            buffer: Vec::new(),
        }
    }

    async fn next(&mut self) -> Frame {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return read_frame(&line[..line.len() - 1]).unwrap();
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .expect("a frame within the deadline")
                .unwrap()
                .expect("the stream stays open");
            self.buffer.extend_from_slice(&chunk);
        }
    }

    /// The next frame of changes, past heartbeats and the (empty) snapshot.
    async fn next_change(&mut self) -> Frame {
        loop {
            match self.next().await {
                Frame::Heartbeat { .. } | Frame::Snapshot { .. } | Frame::SnapshotEnd { .. } => {
                    continue;
                }
                other => return other,
            }
        }
    }

    /// Waits for the body to end (the server closed the stream).
    async fn ended(mut self) -> bool {
        tokio::time::timeout(DEADLINE, async {
            loop {
                match self.response.chunk().await {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => return,
                }
            }
        })
        .await
        .is_ok()
    }
}

/// An error with its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[tokio::test]
async fn the_admin_api_is_served_over_https_and_plain_http_gets_nothing() {
    let pki = Pki::new();
    let c = Controller::start(&pki, None).await;
    let r = client(&pki, None)
        .get(c.url("/v1/admin/log"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // ALPN: HTTP/2 when the client offers it.
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    // A wrong admin token is still refused over TLS.
    let r = client(&pki, None)
        .get(c.url("/v1/admin/log"))
        .bearer_auth("not-the-admin-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // HTTP/1.1 works as well.
    let r = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(pki.server_ca.pem().as_bytes()).unwrap(),
        )
        .http1_only()
        .build()
        .unwrap()
        .get(c.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status(), 200);
    // Plain HTTP to the TLS port: no HTTP answer at all.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", c.addr))
        .bearer_auth(ADMIN)
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    // A client that does not trust the controller's CA refuses it.
    let untrusting = reqwest::Client::new().get(c.url("/healthz")).send().await;
    let e = untrusting.expect_err("an unknown server certificate");
    assert!(chain(&e).contains("UnknownIssuer"), "{}", chain(&e));
    c.stop().await;
}

#[tokio::test]
async fn a_node_with_its_certificate_syncs_and_posts_without_a_token() {
    let pki = Pki::new();
    let c = Controller::start(&pki, None).await;
    let node_a = client(&pki, Some(&pki.node_a));
    let mut a = Stream::open(&c, &node_a).await;
    assert!(matches!(a.next().await, Frame::Hello { .. }));
    // The node's event is taken as node a's, and reaches its own stream.
    let r = node_a
        .post(c.url("/v1/events"))
        .header("content-type", "application/json")
        .body(serde_json::to_string(&revoked("boot1-1", 3)).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        serde_json::from_str::<EventAck>(&r.text().await.unwrap()).unwrap(),
        EventAck {
            accepted: 2,
            duplicates: 0,
            refused: 0,
            retry: Vec::new(),
        }
    );
    assert!(matches!(
        a.next_change().await,
        Frame::Changes { first: 1, .. }
    ));
    // A revocation made by the admin reaches the certificate's stream.
    let r = c
        .admin(
            &pki,
            "/v1/admin/sessions/revoke",
            serde_json::json!({"session": SessionId([9; 16]).to_string()}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(matches!(
        a.next_change().await,
        Frame::Changes { first: 2, .. }
    ));
    // Node c, named by its certificate's pin, gets in too; a token node
    // still does with its token, and without a certificate.
    let mut cs = Stream::open(&c, &client(&pki, Some(&pki.node_c))).await;
    assert!(matches!(cs.next().await, Frame::Hello { .. }));
    let b = client(&pki, None)
        .get(c.url("/v1/sync?since=0"))
        .bearer_auth(NODE_B)
        .send()
        .await
        .unwrap();
    assert_eq!(b.status(), 200);
    c.stop().await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_in_the_handshake() {
    let pki = Pki::new();
    let c = Controller::start(&pki, None).await;
    // TLS 1.3: the client's certificate is checked after the client's
    // Finished; the server's fatal alert ends the connection before any
    // HTTP answer, even with a good token beside the certificate.
    // Node a's name, from a CA the controller does not know.
    let stranger = Ca::new("Someone else").issue(&["node-a.nodes.example"]);
    let e = client(&pki, Some(&stranger))
        .get(c.url("/v1/sync?since=0"))
        .bearer_auth(NODE_B)
        .send()
        .await
        .expect_err("a certificate from an unknown CA gets no answer");
    assert!(
        chain(&e).ends_with("received fatal alert: UnknownCA"),
        "{}",
        chain(&e)
    );
    // A forger's CA with the very name of the nodes' CA: the signature
    // does not verify.
    let forged = Ca::new("Vigil nodes").issue(&["node-a.nodes.example"]);
    let e = client(&pki, Some(&forged))
        .post(c.url("/v1/events"))
        .body(serde_json::to_string(&revoked("boot1-1", 3)).unwrap())
        .send()
        .await
        .expect_err("a forged certificate gets no answer");
    assert!(
        chain(&e).ends_with("received fatal alert: DecryptError"),
        "{}",
        chain(&e)
    );
    // Nothing it sent was taken: the log is empty.
    let log = client(&pki, None)
        .get(c.url("/v1/admin/log"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let log: serde_json::Value = serde_json::from_str(&log.text().await.unwrap()).unwrap();
    assert_eq!(log["head"], 0, "{log}");
    c.stop().await;
}

#[tokio::test]
async fn a_valid_certificate_that_names_no_node_is_refused_as_a_bad_token() {
    let pki = Pki::new();
    let c = Controller::start(&pki, None).await;
    let stranger = client(&pki, Some(&pki.node_ca.issue(&["stranger.example"])));
    let bad_token = client(&pki, None)
        .get(c.url("/v1/sync?since=0"))
        .bearer_auth("not-a-node-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_token.status(), 401);
    let bad_body = bad_token.text().await.unwrap();
    let sync = stranger
        .get(c.url("/v1/sync?since=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(sync.status(), 401);
    assert_eq!(sync.text().await.unwrap(), bad_body);
    let post = stranger
        .post(c.url("/v1/events"))
        .body(serde_json::to_string(&revoked("boot1-1", 3)).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 401);
    // An unknown certificate is not made good by a good token beside it.
    let r = stranger
        .get(c.url("/v1/sync?since=0"))
        .bearer_auth(NODE_B)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Nor is one node's certificate with another node's token.
    let r = client(&pki, Some(&pki.node_a))
        .get(c.url("/v1/sync?since=0"))
        .bearer_auth(NODE_B)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A certificate carrying node c's name but not pinned: not node c
    // (c is named by its pin alone).
    let other_c = client(&pki, Some(&pki.node_ca.issue(&["node-c.example"])));
    let r = other_c.get(c.url("/v1/sync?since=0")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // A wildcard certificate from the nodes' CA covers node a's name,
    // but names no node.
    let wildcard = client(&pki, Some(&pki.node_ca.issue(&["*.nodes.example"])));
    let r = wildcard
        .get(c.url("/v1/sync?since=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // No credential at all.
    let r = client(&pki, None)
        .get(c.url("/v1/sync?since=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    c.stop().await;
}

async fn disabled_node_loses_its_certificate_stream(postgres: bool) {
    let pki = Pki::new();
    let pg_name = format!("vigil_test_tls_{}", std::process::id());
    let store = if postgres {
        sqlx::any::install_default_drivers();
        let admin = sqlx::AnyPool::connect(PG_ADMIN)
            .await
            .expect("PostgreSQL on 127.0.0.1:5432");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {pg_name} WITH (FORCE)"
        )))
        .execute(&admin)
        .await
        .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {pg_name}")))
            .execute(&admin)
            .await
            .unwrap();
        Some(format!("postgres://postgres@127.0.0.1:5432/{pg_name}"))
    } else {
        None
    };
    let c = Controller::start(&pki, store.as_deref()).await;
    let node_a = client(&pki, Some(&pki.node_a));
    let mut a = Stream::open(&c, &node_a).await;
    a.next().await;
    a.next().await;
    let r = c
        .admin(
            &pki,
            "/v1/admin/nodes/disable",
            serde_json::json!({"node": "a"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(a.ended().await, "the disabled node's stream ended");
    let r = node_a.get(c.url("/v1/sync?since=0")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = node_a
        .post(c.url("/v1/events"))
        .body(serde_json::to_string(&revoked("boot1-1", 3)).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Enabled again, its certificate gets it in again.
    let r = c
        .admin(
            &pki,
            "/v1/admin/nodes/enable",
            serde_json::json!({"node": "a"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let mut a = Stream::open(&c, &node_a).await;
    assert!(matches!(a.next().await, Frame::Hello { .. }));
    c.stop().await;
    if postgres {
        let admin = sqlx::AnyPool::connect(PG_ADMIN).await.unwrap();
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {pg_name} WITH (FORCE)"
        )))
        .execute(&admin)
        .await;
    }
}

#[tokio::test]
async fn a_node_disabled_through_the_admin_api_loses_its_certificate_stream() {
    disabled_node_loses_its_certificate_stream(false).await;
    disabled_node_loses_its_certificate_stream(true).await;
}

#[tokio::test]
async fn a_renewed_server_certificate_is_served_without_a_restart() {
    let pki = Pki::new();
    let c = Controller::start(&pki, None).await;
    let renewed_ca = Ca::new("Vigil controller, renewed");
    let trusting_renewed = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(renewed_ca.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let renewed = renewed_ca.issue(&["127.0.0.1"]);
    std::fs::write(c.dir.path().join("server.pem"), &renewed.cert).unwrap();
    std::fs::write(c.dir.path().join("server.key"), &renewed.key).unwrap();
    // Served from the next look at the files, to new connections.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match trusting_renewed.get(c.url("/healthz")).send().await {
            Ok(r) => {
                assert_eq!(r.status(), 200);
                break;
            }
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "the renewed certificate was never served: {}",
                chain(&e)
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A client that trusts only the old CA now refuses the controller.
    let e = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(pki.server_ca.pem().as_bytes()).unwrap(),
        )
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
        .get(c.url("/healthz"))
        .send()
        .await
        .expect_err("the old certificate is no longer served");
    assert!(chain(&e).contains("UnknownIssuer"), "{}", chain(&e));
    c.stop().await;
}

#[test]
fn a_renewed_certificate_is_taken_only_with_its_own_key() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let addr = "127.0.0.1:1".parse().unwrap();
    let path = write_config(dir.path(), &pki, "sqlite://x.db", addr);
    let config = vigil_controller::Config::load(&path).unwrap();
    let certs = &config.tls.as_ref().unwrap().certs;
    assert_eq!(certs.reload(), Ok(false), "nothing changed");
    let renewed = pki.server_ca.issue(&["127.0.0.1"]);
    let stray = pki.server_ca.issue(&["127.0.0.1"]);
    std::fs::write(dir.path().join("server.pem"), &renewed.cert).unwrap();
    std::fs::write(dir.path().join("server.key"), &stray.key).unwrap();
    assert_eq!(
        certs.reload(),
        Err(format!(
            "tls.key_file: {d}/server.key: not the key of the certificate in tls.cert_file"
        ))
    );
    // Tried once per change, not again and again.
    assert_eq!(certs.reload(), Ok(false));
    std::fs::write(dir.path().join("server.key"), &renewed.key).unwrap();
    assert_eq!(certs.reload(), Ok(true));
    assert_eq!(certs.reload(), Ok(false));
}

fn problems(dir: &Path, tls: &str, nodes: &str) -> Vec<String> {
    std::fs::write(dir.join("hash.key"), "11".repeat(32)).unwrap();
    std::fs::write(dir.join("admin.token"), ADMIN).unwrap();
    let path = dir.join("controller.toml");
    std::fs::write(
        &path,
        format!("hash_key_file = \"hash.key\"\nadmin_token_file = \"admin.token\"\n{nodes}\n{tls}"),
    )
    .unwrap();
    match vigil_controller::Config::load(&path) {
        Ok(_) => Vec::new(),
        Err(e) => e.problems,
    }
}

#[test]
fn bad_tls_config_names_every_file_key_and_problem_at_once() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let server = pki.server_ca.issue(&["127.0.0.1"]);
    let other = pki.server_ca.issue(&["127.0.0.1"]);
    std::fs::write(dir.path().join("server.pem"), &server.cert).unwrap();
    std::fs::write(dir.path().join("other.key"), &other.key).unwrap();
    std::fs::write(dir.path().join("server.key"), &server.key).unwrap();
    std::fs::write(dir.path().join("garbage.pem"), "not PEM at all\n").unwrap();
    // Good files: no problem, and client certificates are off.
    assert_eq!(
        problems(
            dir.path(),
            "[tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\n",
            ""
        ),
        Vec::<String>::new()
    );
    // A key that is not the certificate's; a CA file without certificates.
    assert_eq!(
        problems(
            dir.path(),
            "[tls]\ncert_file = \"server.pem\"\nkey_file = \"other.key\"\nclient_ca_file = \"garbage.pem\"\n",
            ""
        ),
        [
            format!("tls.key_file: {d}/other.key: not the key of the certificate in tls.cert_file"),
            format!("tls.client_ca_file: {d}/garbage.pem: no PEM certificate"),
        ]
    );
    // Missing files, each named; a key file holding a certificate only.
    let p = problems(
        dir.path(),
        "[tls]\ncert_file = \"missing.pem\"\nkey_file = \"server.pem\"\nclient_ca_file = \"missing-ca.pem\"\n",
        "",
    );
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(
        p[0].starts_with(&format!("tls.cert_file: {d}/missing.pem: ")),
        "{p:?}"
    );
    assert!(
        p[1].starts_with(&format!("tls.key_file: {d}/server.pem: no PEM private key")),
        "{p:?}"
    );
    assert!(
        p[2].starts_with(&format!("tls.client_ca_file: {d}/missing-ca.pem: ")),
        "{p:?}"
    );
    // A key is never quoted in a problem.
    let p = problems(
        dir.path(),
        "[tls]\ncert_file = \"server.key\"\nkey_file = \"server.key\"\n",
        "",
    );
    assert_eq!(
        p,
        [format!("tls.cert_file: {d}/server.key: no PEM certificate")]
    );
    // An unknown key in [tls].
    let p = problems(
        dir.path(),
        "[tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\nca = \"x\"\n",
        "",
    );
    assert_eq!(p.len(), 1);
    assert!(p[0].contains("unknown field `ca`"), "{p:?}");
}

#[test]
fn node_certificates_need_a_client_ca_and_name_one_node_each() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let server = pki.server_ca.issue(&["127.0.0.1"]);
    std::fs::write(dir.path().join("server.pem"), &server.cert).unwrap();
    std::fs::write(dir.path().join("server.key"), &server.key).unwrap();
    std::fs::write(dir.path().join("ca.pem"), pki.node_ca.pem()).unwrap();
    let pin = "ab".repeat(32);
    let nodes = format!(
        "[[nodes]]\nname = \"a\"\ncertificate_san = \"node-a.nodes.example\"\n\
         [[nodes]]\nname = \"b\"\ncertificate_sha256 = \"{pin}\"\n\
         [[nodes]]\nname = \"c\"\n\
         [[nodes]]\nname = \"d\"\ncertificate_san = \"not a name!\"\ncertificate_sha256 = \"12\"\n\
         [[nodes]]\nname = \"e\"\ncertificate_san = \"NODE-A.nodes.example\"\ncertificate_sha256 = \"{}\"\n",
        pin.to_uppercase()
    );
    // Without [tls] client_ca_file.
    assert_eq!(
        problems(
            dir.path(),
            "[tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\n",
            &nodes
        ),
        [
            "nodes[2]: no credential; expected token_sha256, certificate_sha256 or certificate_san",
            "nodes[3].certificate_sha256: expected 64 hex digits (SHA-256 of the certificate's DER)",
            "nodes[3].certificate_san: \"not a name!\" is not a DNS name or IP address",
            "nodes[0].certificate_san: needs [tls] client_ca_file, which node certificates are verified against",
            "nodes[1].certificate_sha256: needs [tls] client_ca_file, which node certificates are verified against",
            "nodes[3].certificate_sha256: needs [tls] client_ca_file, which node certificates are verified against",
            "nodes[3].certificate_san: needs [tls] client_ca_file, which node certificates are verified against",
            "nodes[4].certificate_sha256: needs [tls] client_ca_file, which node certificates are verified against",
            &format!(
                "nodes[4].certificate_sha256: {:?} is another node's too",
                pin.to_uppercase()
            ),
            "nodes[4].certificate_san: needs [tls] client_ca_file, which node certificates are verified against",
            "nodes[4].certificate_san: \"NODE-A.nodes.example\" is another node's too",
        ]
    );
    // A node certificate with no [tls] at all is the same problem.
    assert_eq!(
        problems(
            dir.path(),
            "",
            "[[nodes]]\nname = \"a\"\ncertificate_san = \"node-a.nodes.example\"\n"
        ),
        [
            "nodes[0].certificate_san: needs [tls] client_ca_file, which node certificates are verified against"
        ]
    );
    // With it, certificates alone are enough.
    assert_eq!(
        problems(
            dir.path(),
            "[tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\nclient_ca_file = \"ca.pem\"\n",
            "[[nodes]]\nname = \"a\"\ncertificate_san = \"node-a.nodes.example\"\n[[nodes]]\nname = \"b\"\ncertificate_sha256 = \"12\"\n"
        ),
        ["nodes[1].certificate_sha256: expected 64 hex digits (SHA-256 of the certificate's DER)"]
    );
}

/// The operator's pinned certificate stands for the admin token; every
/// credential presented must be the admin's: a node's certificate is no
/// admin, beside the admin token or alone, and a wrong token is refused
/// beside the operator's certificate. The operator's certificate is no
/// node's either.
#[tokio::test]
async fn the_operators_pinned_certificate_stands_for_the_admin_token_and_no_other_does() {
    let pki = Pki::new();
    let c = Controller::start(&pki, None).await;
    let status = |cert: Option<&Pair>, token: Option<&str>| {
        let mut r = client(&pki, cert).get(c.url("/v1/admin/log"));
        if let Some(token) = token {
            r = r.bearer_auth(token);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(Some(&pki.operator), None).await, 200);
    assert_eq!(status(Some(&pki.operator), Some(ADMIN)).await, 200);
    assert_eq!(status(None, Some(ADMIN)).await, 200);
    assert_eq!(status(Some(&pki.operator), Some(NODE_B)).await, 401);
    assert_eq!(status(Some(&pki.node_a), None).await, 401);
    assert_eq!(status(Some(&pki.node_c), None).await, 401);
    assert_eq!(status(Some(&pki.node_c), Some(ADMIN)).await, 401);
    assert_eq!(status(None, None).await, 401);
    let sync = client(&pki, Some(&pki.operator))
        .get(c.url("/v1/sync?since=0"))
        .header(vigil_fleet::VERSION_HEADER, VERSION)
        .send()
        .await
        .unwrap();
    assert_eq!(sync.status(), 401);
    // A write through the operator's certificate alone.
    let r = client(&pki, Some(&pki.operator))
        .post(c.url("/v1/admin/nodes/disable"))
        .header("content-type", "application/json")
        .body(r#"{"node":"b"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    c.stop().await;
}

#[test]
fn the_admin_certificate_needs_a_client_ca_and_is_no_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let server = pki.server_ca.issue(&["127.0.0.1"]);
    std::fs::write(dir.path().join("server.pem"), &server.cert).unwrap();
    std::fs::write(dir.path().join("server.key"), &server.key).unwrap();
    std::fs::write(dir.path().join("ca.pem"), pki.node_ca.pem()).unwrap();
    let pin = "cd".repeat(32);
    let no_ca = "[tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\n";
    assert_eq!(
        problems(
            dir.path(),
            no_ca,
            &format!(
                "admin_certificate_sha256 = \"{pin}\"\n[[nodes]]\nname = \"b\"\ntoken_sha256 = \"{pin}\"\n"
            )
        ),
        [
            "admin_certificate_sha256: needs [tls] client_ca_file, which client certificates are verified against"
        ]
    );
    let with_ca = format!("{no_ca}client_ca_file = \"ca.pem\"\n");
    assert_eq!(
        problems(
            dir.path(),
            &with_ca,
            &format!(
                "admin_certificate_sha256 = \"{}\"\n[[nodes]]\nname = \"c\"\ncertificate_sha256 = \"{pin}\"\n",
                pin.to_uppercase()
            )
        ),
        [format!(
            "admin_certificate_sha256: {:?} is a node's certificate too",
            pin.to_uppercase()
        )]
    );
    assert_eq!(
        problems(
            dir.path(),
            &with_ca,
            "admin_certificate_sha256 = \"12\"\n[[nodes]]\nname = \"c\"\ncertificate_san = \"node-c.example\"\n"
        ),
        ["admin_certificate_sha256: expected 64 hex digits (SHA-256 of the certificate's DER)"]
    );
}

/// One host's silent connections hold at most its share of the TLS
/// handshakes in flight: its next connection is closed at once, and the
/// slots come back when its connections go.
#[tokio::test]
async fn one_host_cannot_hold_every_handshake() {
    use tokio::io::AsyncReadExt;
    let pki = Pki::new();
    let c = Controller::start(&pki, None).await;
    let mut silent = Vec::new();
    for _ in 0..vigil_controller::tls::PER_PEER_HANDSHAKES {
        silent.push(tokio::net::TcpStream::connect(c.addr).await.unwrap());
    }
    // The listener takes connections in order: once one beyond the share
    // is closed, every silent one holds its slot.
    let mut extra = tokio::net::TcpStream::connect(c.addr).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(30), extra.read(&mut byte))
        .await
        .expect("the connection beyond the share is closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // Closed for the share, not by the handshake timeout: the silent ones,
    // older, are all still open.
    for s in &silent {
        let mut probe = [0u8; 1];
        let open = s.try_read(&mut probe);
        assert!(
            matches!(&open, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "{open:?}"
        );
    }
    drop(silent);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = client(&pki, None)
            .get(c.url("/v1/admin/log"))
            .bearer_auth(ADMIN)
            .send()
            .await;
        if r.as_ref().is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.stop().await;
}

/// The dashboard over HTTPS (`docs/dashboard.md`, Access): its cookie is
/// `__Host-` and `Secure` (the plain name opens nothing), the `Origin`
/// check holds over HTTP/2 (no `Host` header there), and the operator's
/// pinned certificate signs in as a responder where a node's does not.
#[tokio::test]
async fn over_https_the_dashboard_cookie_is_host_only_and_the_pinned_certificate_signs_in() {
    let pki = Pki::new();
    let c = Controller::start(&pki, None).await;
    let origin = format!("https://{}", c.addr);
    let browser = |cert: Option<&Pair>| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .add_root_certificate(
                reqwest::Certificate::from_pem(pki.server_ca.pem().as_bytes()).unwrap(),
            );
        if let Some(cert) = cert {
            b = b.identity(
                reqwest::Identity::from_pem(format!("{}{}", cert.key, cert.cert).as_bytes())
                    .unwrap(),
            );
        }
        b.build().unwrap()
    };
    let sign_in = async |cert: Option<&Pair>, body: &str| {
        browser(cert)
            .post(c.url("/dashboard/login"))
            .header("origin", &origin)
            .header("sec-fetch-site", "same-origin")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    };
    let page = async |cert: Option<&Pair>, cookie: &str| {
        browser(cert)
            .get(c.url("/dashboard"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
    };
    let r = sign_in(None, &format!("token={ADMIN}")).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    let (value, attributes) = set
        .strip_prefix("__Host-vigil-dashboard=")
        .unwrap()
        .split_once(';')
        .unwrap();
    assert_eq!(
        attributes,
        " Path=/; Max-Age=43200; HttpOnly; SameSite=Strict; Secure"
    );
    let r = page(None, &format!("__Host-vigil-dashboard={value}")).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("admin token · <strong>responder</strong>")
    );
    let r = page(None, &format!("vigil-dashboard={value}")).await;
    assert_eq!(r.status(), 303, "the plain name is not the session's");
    // From the http:// origin of the same host and port: another origin.
    let r = browser(None)
        .post(c.url("/dashboard/login"))
        .header("origin", format!("http://{}", c.addr))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={ADMIN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // The sign-in page offers the certificate only to its holder.
    let login = async |cert: Option<&Pair>| {
        browser(cert)
            .get(c.url("/dashboard/login"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let offer = "Sign in with the admin client certificate";
    assert!(login(Some(&pki.operator)).await.contains(offer));
    assert!(!login(None).await.contains(offer));
    assert!(!login(Some(&pki.node_a)).await.contains(offer));
    let r = sign_in(Some(&pki.operator), "certificate=1").await;
    assert_eq!(r.status(), 303);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    let value = set
        .strip_prefix("__Host-vigil-dashboard=")
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    let r = page(
        Some(&pki.operator),
        &format!("__Host-vigil-dashboard={value}"),
    )
    .await;
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("admin certificate · <strong>responder</strong>")
    );
    // A node's certificate, and no certificate, sign in as nobody.
    assert_eq!(
        sign_in(Some(&pki.node_a), "certificate=1").await.status(),
        401
    );
    assert_eq!(sign_in(None, "certificate=1").await.status(), 401);
    c.stop().await;
}
