//! A node that syncs with its controller over mutual TLS: the controller
//! (in this test process, on SQLite) serves HTTPS and knows the node by its
//! client certificate alone; the proxy process trusts the controller's CA
//! and holds no token. Certificates are made here (rcgen).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Browser, Config, Origin, Proxy, Route};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};

const ADMIN: &str = "fleet-admin-token-0123456789";
const DEADLINE: Duration = Duration::from_secs(30);

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A leaf for `san` signed by `ca`, written as `NAME.pem` and `NAME.key`.
fn issue(ca: &CertifiedIssuer<'static, KeyPair>, san: SanType, dir: &Path, name: &str) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names.push(san);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

fn session_key(key_file: &Path, value: &str) -> String {
    let text = std::fs::read_to_string(key_file).unwrap();
    let key: [u8; 32] = hex::decode(text.trim()).unwrap().try_into().unwrap();
    let engine = vigil_engine::Engine::new(
        vigil_engine::EngineConfig::default(),
        vigil_engine::SessionHashKey::from_bytes(key),
    );
    engine
        .key_for_cookie("session", value.as_bytes())
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_node_known_by_its_certificate_syncs_over_mutual_tls_and_obeys_a_revocation() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = d.join("fleet-hash.key");
    std::fs::write(&key, "5a".repeat(32)).unwrap();
    std::fs::write(d.join("admin.token"), ADMIN).unwrap();
    let server_ca = ca("Vigil controller");
    let node_ca = ca("Vigil nodes");
    issue(
        &server_ca,
        SanType::IpAddress([127, 0, 0, 1].into()),
        d,
        "controller",
    );
    issue(
        &node_ca,
        SanType::DnsName("node-a.example".try_into().unwrap()),
        d,
        "node-a",
    );
    std::fs::write(d.join("server-ca.pem"), server_ca.pem()).unwrap();
    std::fs::write(d.join("node-ca.pem"), node_ca.pem()).unwrap();
    // Held until the controller takes it: a port released and bound
    // again later could be taken in between by another test.
    let held = common::held_listener();
    let controller = held.local_addr().unwrap();
    std::fs::write(
        d.join("controller.toml"),
        format!(
            "listen = \"{controller}\"\nhash_key_file = \"fleet-hash.key\"\nadmin_token_file = \"admin.token\"\n\
             [tls]\ncert_file = \"controller.pem\"\nkey_file = \"controller.key\"\nclient_ca_file = \"node-ca.pem\"\n\
             [[nodes]]\nname = \"a\"\ncertificate_san = \"node-a.example\"\n"
        ),
    )
    .unwrap();
    let config = vigil_controller::Config::load(&d.join("controller.toml")).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
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
    let origin = Origin::start();
    let state = d.join("a");
    std::fs::create_dir_all(&state).unwrap();
    let node = Proxy::start(
        &Config::new()
            .state_dir(&state)
            .upstream("app", origin.addr())
            .route(Route::new("app", "/", "app").high("revoke"))
            .section(&format!(
                "[session]\nhash_key_file = {:?}\n\n[controller]\nurl = \"https://{controller}\"\n\
                 ca_file = {:?}\nclient_cert_file = {:?}\nclient_key_file = {:?}\n",
                key.display().to_string(),
                d.join("server-ca.pem").display().to_string(),
                d.join("node-a.pem").display().to_string(),
                d.join("node-a.key").display().to_string(),
            ))
            .render(),
    )
    .await;
    node.wait_for_metric("vigil_proxy_fleet_connected", &[], |v| v == 1.0)
        .await;

    let browser = Browser::firefox();
    assert_eq!(
        browser
            .get(&node.url("/login?session=s-one"))
            .await
            .status(),
        200
    );
    let browser = browser.cookie("session=s-one");
    assert_eq!(browser.get(&node.url("/echo")).await.status(), 200);

    let _ = rustls::crypto::ring::default_provider().install_default();
    let admin = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(server_ca.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let call = |path: &str, body: serde_json::Value| {
        admin
            .post(format!("https://{controller}{path}"))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let r = call(
        "/v1/admin/sessions/revoke",
        serde_json::json!({ "session": session_key(&key, "s-one") }),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    // The revocation made at the controller reaches the node over mutual
    // TLS and is enforced there.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let status = browser.get(&node.url("/echo")).await.status();
        if status == 401 {
            break;
        }
        assert_eq!(status, 200, "allowed until the revocation arrives");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the revocation never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Disabled at the controller, the node's certificate no longer gets
    // it in: its stream ends and its reconnections are refused (401).
    let r = call("/v1/admin/nodes/disable", serde_json::json!({"node": "a"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    node.wait_for_metric("vigil_proxy_fleet_connected", &[], |v| v == 0.0)
        .await;
    node.wait_for_metric(
        "vigil_proxy_fleet_reconnects_total",
        &[("reason", "unauthorized")],
        |v| v >= 1.0,
    )
    .await;
    let _ = stop.send(());
}
