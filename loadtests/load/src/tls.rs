//! One TLS client configuration per simulated device.
//!
//! JA4 hashes the cipher suites and extensions a client offers, and names
//! its highest version and first ALPN value. Profile `n` offers its own
//! subset of the nine suites rustls with ring implements (at least one
//! TLS 1.3 suite; TLS 1.2 enabled only when it offers TLS 1.2 suites), and
//! its own order of key-exchange groups, so that two profiles never share a
//! cipher list and hence never a JA4. There are 448 such subsets; a corpus
//! with more distinct JA4s than that wraps around (`docs/load-testing.md`).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Distinct cipher-suite sets available as profiles.
pub const PROFILES: usize = 448;

/// How the server's certificate is checked.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Against these roots.
    Roots(Arc<RootCertStore>),
    /// Not at all (`--insecure`, for self-signed loopback targets).
    Insecure,
}

/// Why a profile could not be built.
#[derive(Debug, thiserror::Error)]
#[error("TLS profile {profile}: {source}")]
pub struct ProfileError {
    profile: usize,
    source: rustls::Error,
}

/// The client configuration of device profile `device` (wrapping at
/// [`PROFILES`]), offering `alpn` (e.g. `[b"h2"]`). `resume`: keep
/// sessions the server offers (rustls's in-memory store, 256 per profile)
/// and offer them on the profile's next connections, as a browser does.
pub fn profile(
    device: usize,
    alpn: &[&[u8]],
    trust: &Trust,
    resume: bool,
) -> Result<ClientConfig, ProfileError> {
    let index = device % PROFILES;
    let base = ring::default_provider();
    let (tls13, tls12): (Vec<_>, Vec<_>) = base
        .cipher_suites
        .iter()
        .copied()
        .partition(|s| s.version() == &rustls::version::TLS13);
    // index = 64 * (tls13 mask - 1) + tls12 mask: 7 non-empty TLS 1.3 sets
    // times 64 TLS 1.2 sets.
    let mask13 = index / 64 + 1;
    let mask12 = index % 64;
    let pick = |suites: &[rustls::SupportedCipherSuite], mask: usize| {
        suites
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, s)| *s)
            .collect::<Vec<_>>()
    };
    let mut suites = pick(&tls13, mask13);
    let twelve = pick(&tls12, mask12);
    let versions: &[&'static rustls::SupportedProtocolVersion] = if twelve.is_empty() {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    suites.extend(twelve);
    let mut groups = base.kx_groups.clone();
    let n = groups.len().max(1);
    groups.rotate_left(index % n);
    let provider = CryptoProvider {
        cipher_suites: suites,
        kx_groups: groups,
        ..base
    };
    let err = |source| ProfileError {
        profile: index,
        source,
    };
    let builder = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .map_err(err)?;
    let mut config = match trust {
        Trust::Roots(roots) => builder
            .with_root_certificates(roots.clone())
            .with_no_client_auth(),
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(ring::default_provider())))
            .with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Without resumption every connection's hello is the device's full one,
    // with one extension list, so one JA4 per device across a run (a
    // resumed hello carries pre_shared_key besides: the same JA4 family).
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(config)
}

/// Accepts any certificate: `--insecure` against a self-signed loopback
/// target. Signatures are still checked, so the handshake is a real one.
#[derive(Debug)]
struct NoVerify(CryptoProvider);

// === impl NoVerify ===

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test")]
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_profile_offers_its_own_cipher_list() {
        let mut seen = BTreeSet::new();
        for i in 0..PROFILES {
            let c = profile(i, &[b"http/1.1"], &Trust::Insecure, false).unwrap();
            let suites: Vec<_> = c
                .crypto_provider()
                .cipher_suites
                .iter()
                .map(|s| format!("{:?}", s.suite()))
                .collect();
            assert!(!suites.is_empty());
            assert!(seen.insert(suites), "profile {i} repeats a cipher list");
        }
        assert_eq!(seen.len(), PROFILES);
    }
}
