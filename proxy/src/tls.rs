//! TLS for client-facing listeners: certificates chosen by SNI, loaded at
//! start and again on every config reload.
//!
//! rustls's own `ResolvesServerCertUsingSni` matches exact names only; ours
//! adds `*.` wildcards and a default for clients that send no (or an unknown)
//! name, which is what operators expect of a reverse proxy.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora_rustls::sign::CertifiedKey;
use pingora_rustls::{ClientHello, CryptoProvider, ResolvesServerCert};

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
