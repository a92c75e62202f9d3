//! Test certificates made with rcgen: a CA and leaf certificates it signs,
//! written as PEM files, so HTTPS tests need nothing from outside.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tempfile::TempDir;

/// A certificate authority, with a directory for the files of the
/// certificates it issues. Keep it alive while a proxy reads those files.
#[derive(Debug)]
pub(crate) struct Ca {
    dir: TempDir,
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub(crate) struct Leaf {
    names: Vec<String>,
    cert_path: PathBuf,
    key_path: PathBuf,
    der: Vec<u8>,
    /// The key's SubjectPublicKeyInfo, DER.
    spki: Vec<u8>,
}

// === impl Ca ===

impl Ca {
    /// A new self-signed CA called `name`.
    pub(crate) fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let dir = TempDir::new().unwrap();
        let pem = cert.pem();
        std::fs::write(dir.path().join("ca.pem"), &pem).unwrap();
        Ca {
            dir,
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// Issues a certificate for `names` (the first is also its CN) and writes
    /// it and its key to the CA's directory.
    pub(crate) fn leaf(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].as_str());
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let stem = names[0].replace('*', "wildcard");
        let cert_path = self.dir.path().join(format!("{stem}.pem"));
        let key_path = self.dir.path().join(format!("{stem}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Leaf {
            names,
            cert_path,
            key_path,
            der: cert.der().to_vec(),
            spki: rcgen::PublicKeyData::subject_public_key_info(&key),
        }
    }

    /// The CA certificate in PEM.
    pub(crate) fn pem(&self) -> &str {
        &self.pem
    }

    /// The CA certificate's file, for `curl --cacert`.
    pub(crate) fn pem_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The CA certificate for a reqwest client's roots.
    pub(crate) fn root(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(self.pem.as_bytes()).unwrap()
    }
}

// === impl Leaf ===

impl Leaf {
    /// The names the certificate is for.
    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    /// The certificate's PEM file.
    pub(crate) fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The private key's PEM file.
    pub(crate) fn key_path(&self) -> &Path {
        &self.key_path
    }

    /// Base64 of the SHA-256 of the key's SubjectPublicKeyInfo: what
    /// Chromium's `--ignore-certificate-errors-spki-list` takes.
    pub(crate) fn spki_sha256_base64(&self) -> String {
        use base64::Engine as _;
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.spki);
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    }

    /// The certificate in DER, to compare with what a server presented.
    pub(crate) fn der(&self) -> &[u8] {
        &self.der
    }
}
