//! `[controller]`'s mutual TLS keys: a client certificate and its key,
//! checked at load, and a token that becomes optional beside them.

use std::path::Path;

use super::*;

const MINIMAL: &str = r#"
[[listeners]]
name = "http"
listen = "127.0.0.1:8080"

[[upstreams]]
name = "app"
addresses = ["127.0.0.1:3000"]

[[routes]]
name = "app"
upstream = "app"
"#;

fn parse(text: &str) -> Result<Config, Vec<Problem>> {
    Config::parse(text, Path::new("/etc/vigil/proxy.toml")).map_err(|e| match e {
        ConfigError::Invalid { problems, .. } => problems,
        ConfigError::Read { .. } => unreachable!(),
    })
}

fn problems(text: &str) -> Vec<String> {
    parse(text)
        .unwrap_err()
        .iter()
        .map(|p| format!("{}: {}", p.key, p.message))
        .collect()
}

/// A certificate for `node-a.example` and its key, and another key.
fn files(dir: &Path) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["node-a.example".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("node.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("node.key"), key.serialize_pem()).unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(dir.join("other.key"), other.serialize_pem()).unwrap();
    std::fs::write(dir.join("token"), "node-t0ken\n").unwrap();
}

fn controller(dir: &Path, url: &str, keys: &str) -> String {
    let d = dir.display();
    format!(
        "[controller]\nurl = \"{url}\"\n{}\n{MINIMAL}",
        keys.replace("DIR", &d.to_string())
    )
}

#[test]
fn a_client_certificate_is_enough_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    files(dir.path());
    let c = parse(&controller(
        dir.path(),
        "https://ctl.example.com",
        "client_cert_file = \"DIR/node.pem\"\nclient_key_file = \"DIR/node.key\"",
    ))
    .unwrap();
    let ctl = c.controller.as_deref().unwrap();
    assert_eq!(ctl.token, None);
    assert_eq!(
        ctl.client_cert,
        Some(ClientCert {
            cert_file: dir.path().join("node.pem"),
            key_file: dir.path().join("node.key"),
        })
    );
    // Both together: the token is sent too.
    let c = parse(&controller(
        dir.path(),
        "https://ctl.example.com",
        "token_file = \"DIR/token\"\nclient_cert_file = \"DIR/node.pem\"\nclient_key_file = \"DIR/node.key\"",
    ))
    .unwrap();
    assert_eq!(
        c.controller.as_deref().unwrap().token.as_deref(),
        Some("node-t0ken")
    );
    // Neither: the token is missing, and the message says what else would do.
    assert_eq!(
        problems(&controller(dir.path(), "https://ctl.example.com", "")),
        [
            "controller.token_file: missing; expected a file holding this node's token (or client_cert_file and client_key_file)"
        ]
    );
}

#[test]
fn a_bad_client_certificate_names_its_keys_and_problems_at_once() {
    let dir = tempfile::tempdir().unwrap();
    files(dir.path());
    let d = dir.path().display();
    // The key of another certificate, over cleartext.
    assert_eq!(
        problems(&controller(
            dir.path(),
            "http://127.0.0.1:7000",
            "client_cert_file = \"DIR/node.pem\"\nclient_key_file = \"DIR/other.key\"",
        )),
        [
            "controller.client_cert_file: a client certificate needs an https url".to_owned(),
            format!(
                "controller.client_key_file: {d}/other.key: not the key of the certificate in client_cert_file"
            ),
        ]
    );
    // One without the other.
    assert_eq!(
        problems(&controller(
            dir.path(),
            "https://ctl.example.com",
            "client_cert_file = \"DIR/node.pem\"",
        )),
        ["controller.client_key_file: missing; client_cert_file needs its key"]
    );
    assert_eq!(
        problems(&controller(
            dir.path(),
            "https://ctl.example.com",
            "client_key_file = \"DIR/node.key\"",
        )),
        ["controller.client_cert_file: missing; client_key_file needs its certificate"]
    );
    // Files swapped, and a missing one: each named; no key bytes quoted.
    let p = problems(&controller(
        dir.path(),
        "https://ctl.example.com",
        "client_cert_file = \"DIR/node.key\"\nclient_key_file = \"DIR/node.pem\"",
    ));
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!(
        p[0],
        format!("controller.client_cert_file: {d}/node.key: no PEM certificate")
    );
    assert!(
        p[1].starts_with(&format!(
            "controller.client_key_file: {d}/node.pem: no PEM private key"
        )),
        "{p:?}"
    );
    let p = problems(&controller(
        dir.path(),
        "https://ctl.example.com",
        "client_cert_file = \"DIR/missing.pem\"\nclient_key_file = \"DIR/node.key\"",
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with(&format!(
            "controller.client_cert_file: {d}/missing.pem: cannot read: "
        )),
        "{p:?}"
    );
}
