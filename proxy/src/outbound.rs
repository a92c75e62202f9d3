//! The HTTP clients Vigil calls out with — to the identity provider
//! (step-up) and to the controller (fleet sync) — built one way: rustls
//! with ring as everywhere else, the system's roots plus an optional CA
//! file, no redirects followed (an endpoint that redirects is refused, not
//! followed elsewhere), and bodies read up to a bound.

use std::path::Path;
use std::time::Duration;

/// A client trusting the system's roots and the PEM certificates in
/// `ca_file`; `timeout` bounds each whole call when given.
pub fn client(
    ca_file: Option<&Path>,
    connect_timeout: Duration,
    timeout: Option<Duration>,
) -> Result<reqwest::Client, String> {
    builder(ca_file, connect_timeout, timeout)?
        .build()
        .map_err(|e| error_chain(&e))
}

/// The builder of [`client`], for a caller that adds to it (the fleet
/// client's certificate).
pub fn builder(
    ca_file: Option<&Path>,
    connect_timeout: Duration,
    timeout: Option<Duration>,
) -> Result<reqwest::ClientBuilder, String> {
    pingora_rustls::install_default_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout);
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    if let Some(file) = ca_file {
        let pem = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{}: {e}", file.display()))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder)
}

/// A client certificate and its key for mutual TLS, read from their PEM
/// files (checked at config load; read again here).
pub fn identity(cert: &crate::config::ClientCert) -> Result<reqwest::Identity, String> {
    let mut pem =
        std::fs::read(&cert.key_file).map_err(|e| format!("{}: {e}", cert.key_file.display()))?;
    pem.push(b'\n');
    pem.extend(
        std::fs::read(&cert.cert_file).map_err(|e| format!("{}: {e}", cert.cert_file.display()))?,
    );
    // reqwest's message names no bytes of the key.
    reqwest::Identity::from_pem(&pem).map_err(|e| {
        format!(
            "{} and {}: {}",
            cert.cert_file.display(),
            cert.key_file.display(),
            error_chain(&e)
        )
    })
}

/// A response's body, refused when longer than `max` bytes.
pub async fn body(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| error_chain(&e))? {
        if body.len() + chunk.len() > max {
            return Err(format!("response body larger than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error with its sources, on one line (reqwest's own message hides the
/// cause).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
