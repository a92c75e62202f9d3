//! TLS for client-facing listeners: certificates chosen by SNI, loaded at
//! start and again on every config reload.
//!
//! rustls's own `ResolvesServerCertUsingSni` matches exact names only; ours
//! adds `*.` wildcards and a default for clients that send no (or an unknown)
//! name, which is what operators expect of a reverse proxy.
//!
//! Once a handshake is done, [`CertificateCheck`] files what the connection
//! was given ([`Presented`]: the SNI name and the certificate) in the
//! connection's TLS digest, where every request on it — HTTP/1.1 or any
//! HTTP/2 stream — finds it, so that a request for a host the certificate
//! does not cover can be refused (`docs/security.md`, Hosts and
//! certificates).

use std::any::Any;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::TlsRef;
use pingora_rustls::sign::CertifiedKey;
use pingora_rustls::{ClientHello, CryptoProvider, ResolvesServerCert, ServerName};
use rustls::server::ParsedCertificate;

use crate::config::Certificate;

/// A certificate or key that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("cannot load certificate {cert} with key {key}: {reason}")]
    Load {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// What went wrong.
        reason: String,
    },
}

/// Picks a certificate by the SNI name of the ClientHello.
#[derive(Debug)]
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Suffix including the leading dot (".example.org") → key.
    wildcard: Vec<(String, Arc<CertifiedKey>)>,
    default: Arc<CertifiedKey>,
}

/// A listener's certificates as the TLS layer sees them: replaced whole on
/// reload, while handshakes under way finish with the set they started
/// with.
#[derive(Debug)]
pub struct ListenerCertificates(ArcSwap<SniResolver>);

/// What a TLS connection was given: the name it asked for and the
/// certificate it was shown. Filed in the connection's TLS digest by
/// [`CertificateCheck`].
#[derive(Debug)]
pub struct Presented {
    /// The SNI name, lower case; `None` when the client sent none.
    sni: Option<String>,
    /// The certificate chosen for that name.
    certificate: Arc<CertifiedKey>,
}

/// The post-handshake callback of every TLS listener: files the
/// [`Presented`] of each connection.
#[derive(Debug)]
pub struct CertificateCheck(Arc<ListenerCertificates>);

/// Loads a certificate chain and its private key, and checks they match.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let err = |reason: String| TlsError::Load {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        reason,
    };
    pingora_rustls::install_default_crypto_provider();
    let provider =
        CryptoProvider::get_default().ok_or_else(|| err("no TLS crypto provider".into()))?;
    let (certs, private) = pingora_rustls::load_certs_and_key_files(
        &cert.display().to_string(),
        &key.display().to_string(),
    )
    .map_err(|e| err(e.to_string()))?
    .ok_or_else(|| {
        err("no PEM certificate in the first file or no PEM private key in the second".into())
    })?;
    let certs = certs.into_iter().map(|c| c.into_owned()).collect();
    CertifiedKey::from_der(certs, private.clone_key(), provider).map_err(|e| err(e.to_string()))
}

// === impl SniResolver ===

impl SniResolver {
    /// Loads every certificate of a listener; the first is the default.
    pub fn load(certificates: &[Certificate]) -> Result<Self, TlsError> {
        let mut exact = HashMap::new();
        let mut wildcard = Vec::new();
        let mut default = None;
        for c in certificates {
            let ck = Arc::new(load_certified_key(&c.cert, &c.key)?);
            default.get_or_insert_with(|| ck.clone());
            for name in &c.server_names {
                match name.strip_prefix('*') {
                    Some(suffix) => wildcard.push((suffix.to_owned(), ck.clone())),
                    None => {
                        exact.entry(name.clone()).or_insert_with(|| ck.clone());
                    }
                }
            }
        }
        let default = default.ok_or_else(|| TlsError::Load {
            cert: String::new(),
            key: String::new(),
            reason: "a TLS listener needs at least one certificate".into(),
        })?;
        Ok(Self {
            exact,
            wildcard,
            default,
        })
    }

    fn pick(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = name else {
            return self.default.clone();
        };
        // rustls hands over the SNI name already lower-cased and validated.
        if let Some(ck) = self.exact.get(name) {
            return ck.clone();
        }
        self.wildcard
            .iter()
            .find(|(suffix, _)| name.len() > suffix.len() && name.ends_with(suffix.as_str()))
            .map_or_else(|| self.default.clone(), |(_, ck)| ck.clone())
    }
}

// === impl Presented ===

impl Presented {
    /// Whether a request for `host` (without port, any case) may be served
    /// on this connection: `host` is the name the connection was opened
    /// for, or one its certificate covers (as a browser reusing an HTTP/2
    /// connection across names requires). An empty host, or one that is
    /// not a DNS name or IP address, is not covered.
    pub fn covers(&self, host: &str) -> bool {
        if host.is_empty() {
            return false;
        }
        if self
            .sni
            .as_deref()
            .is_some_and(|sni| sni.eq_ignore_ascii_case(host))
        {
            return true;
        }
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let Ok(name) = ServerName::try_from(host) else {
            return false;
        };
        let Some(leaf) = self.certificate.cert.first() else {
            return false;
        };
        ParsedCertificate::try_from(leaf)
            .is_ok_and(|cert| rustls::client::verify_server_name(&cert, &name).is_ok())
    }
}

// === impl CertificateCheck ===

impl CertificateCheck {
    /// Files what `certificates` give each connection.
    pub fn new(certificates: Arc<ListenerCertificates>) -> Self {
        Self(certificates)
    }
}

#[async_trait]
impl TlsAccept for CertificateCheck {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        // The resolver picks again by the same name: the same certificate,
        // unless a reload replaced the set during this handshake, when the
        // new set is the one the listener now serves anyway.
        let sni = tls.server_name().map(str::to_ascii_lowercase);
        let certificate = self.0.0.load().pick(sni.as_deref());
        Some(Arc::new(Presented { sni, certificate }))
    }
}

// === impl ListenerCertificates ===

impl ListenerCertificates {
    /// Serves `resolver` until [`ListenerCertificates::replace`].
    pub fn new(resolver: SniResolver) -> Self {
        Self(ArcSwap::from_pointee(resolver))
    }

    /// Serves `resolver` to handshakes from now on.
    pub fn replace(&self, resolver: SniResolver) {
        self.0.store(Arc::new(resolver));
    }
}

impl ResolvesServerCert for ListenerCertificates {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load().pick(client_hello.server_name()))
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(client_hello.server_name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presented(sni: Option<&str>, names: &[&str]) -> Presented {
        pingora_rustls::install_default_crypto_provider();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap();
        let cert = params.self_signed(&key).unwrap();
        let der = pingora_rustls::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let provider = CryptoProvider::get_default().unwrap();
        let certificate =
            Arc::new(CertifiedKey::from_der(vec![cert.der().clone()], der, provider).unwrap());
        Presented {
            sni: sni.map(str::to_owned),
            certificate,
        }
    }

    #[test]
    fn a_host_is_covered_by_the_sni_name_or_the_certificate() {
        let both = presented(
            Some("enforce.test"),
            &["enforce.test", "off.test", "*.w.test"],
        );
        assert!(both.covers("enforce.test"));
        assert!(both.covers("OFF.test"), "a name on the same certificate");
        assert!(both.covers("a.w.test"), "a wildcard of the certificate");
        assert!(!both.covers("other.test"));
        assert!(!both.covers("w.test"));
        assert!(!both.covers(""));

        let one = presented(Some("enforce.test"), &["enforce.test"]);
        assert!(!one.covers("off.test"), "the fronting attack");
        assert!(!one.covers("127.0.0.1"));
        assert!(!one.covers("not a name"));

        let none = presented(None, &["default.test"]);
        assert!(
            none.covers("default.test"),
            "no SNI: the default certificate"
        );
        assert!(!none.covers("enforce.test"));

        let ip = presented(None, &["127.0.0.1"]);
        assert!(ip.covers("127.0.0.1"));
    }
}
