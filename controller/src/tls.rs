//! HTTPS for the controller (`[tls]`, `docs/controller.md`): the listener
//! that takes TLS connections, the client certificate each connection
//! proved it holds ([`Peer`]), and how a certificate names an edge node.
//!
//! rustls (ring) through tokio-rustls, served by axum's own `serve`: the
//! listener ([`TlsListener`]) hands axum finished TLS streams, so HTTP/1.1
//! and HTTP/2 (ALPN), graceful shutdown and long-lived sync streams work
//! as they do over plain TCP. Handshakes run in their own tasks, bounded
//! in time and number, so a slow client never holds up the next.

use std::convert::Infallible;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::http::request::Parts;
use axum::serve::{IncomingStream, Listener};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::Node;

/// How often the certificate's files are looked at for a change.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// A handshake not finished in this long is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Handshakes in progress at once from one client address; beyond, its
/// new connections are closed at once. Nodes and operators connect a few
/// times at most; a host holding more is starving the others.
pub const PER_PEER_HANDSHAKES: usize = 16;

/// Handshakes in progress at once; beyond, new connections wait in the
/// kernel's backlog.
const MAX_HANDSHAKES: usize = 1024;

/// `[tls]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    cert_file: PathBuf,
    key_file: PathBuf,
    client_ca_file: Option<PathBuf>,
}

impl RawTls {
    /// Whether client certificates are asked for and verified.
    pub(crate) fn verifies_clients(&self) -> bool {
        self.client_ca_file.is_some()
    }
}

/// `[tls]`, validated: the files read and the server's TLS config built.
#[derive(Clone)]
pub struct Tls {
    /// The certificate chain served (PEM, leaf first).
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// The CAs whose client certificates are verified, when set; without
    /// it no client certificate is asked for.
    pub client_ca_file: Option<PathBuf>,
    /// The rustls config built from them.
    pub server: Arc<ServerConfig>,
    /// The certificate it serves, reread when its files change.
    pub certs: Arc<Certs>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("client_ca_file", &self.client_ca_file)
            .finish_non_exhaustive()
    }
}

/// Reads `[tls]`'s files (relative paths resolved by `resolve`) and builds
/// the server's config; every problem found is pushed, each with its key.
pub(crate) fn load(
    raw: &RawTls,
    resolve: impl Fn(&Path) -> PathBuf,
    problems: &mut Vec<String>,
) -> Option<Tls> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (cert_file, key_file) = (resolve(&raw.cert_file), resolve(&raw.key_file));
    let pair = read_pair(&cert_file, &key_file, &provider, problems);
    let verifier = match &raw.client_ca_file {
        None => Some(WebPkiClientVerifier::no_client_auth()),
        Some(ca) => read_certs(&resolve(ca), "tls.client_ca_file", problems).and_then(|certs| {
            let mut roots = RootCertStore::empty();
            for (i, cert) in certs.into_iter().enumerate() {
                if let Err(e) = roots.add(cert) {
                    problems.push(format!(
                        "tls.client_ca_file: {}: certificate {}: {e}",
                        resolve(ca).display(),
                        i + 1
                    ));
                }
            }
            // A client without a certificate still connects: it may hold
            // a token (an admin, a node not moved to certificates yet).
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                .allow_unauthenticated()
                .build()
                .map_err(|e| {
                    problems.push(format!(
                        "tls.client_ca_file: {}: {e}",
                        resolve(ca).display()
                    ));
                })
                .ok()
        }),
    };
    let (pair, verifier) = (pair?, verifier?);
    let certs = Arc::new(Certs {
        stamp: Mutex::new(stamp(&cert_file, &key_file)),
        cert_file: cert_file.clone(),
        key_file: key_file.clone(),
        provider: Arc::clone(&provider),
        current: RwLock::new(Arc::new(pair)),
    });
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| problems.push(format!("tls: {e}")))
        .ok()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::clone(&certs) as Arc<dyn ResolvesServerCert>);
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Some(Tls {
        cert_file,
        key_file,
        client_ca_file: raw.client_ca_file.as_deref().map(&resolve),
        server: Arc::new(server),
        certs,
    })
}

/// The certificate chain in `cert_file` and the key in `key_file`, which
/// must be its: problems pushed under `tls.cert_file` and `tls.key_file`.
fn read_pair(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
    problems: &mut Vec<String>,
) -> Option<CertifiedKey> {
    let chain = read_certs(cert_file, "tls.cert_file", problems);
    let key = match std::fs::read(key_file) {
        Err(e) => {
            problems.push(format!("tls.key_file: {}: {e}", key_file.display()));
            None
        }
        // The key's bytes are never part of a message.
        Ok(pem) => match PrivateKeyDer::from_pem_slice(&pem) {
            Ok(key) => Some(key),
            Err(e) => {
                problems.push(format!(
                    "tls.key_file: {}: no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
                    key_file.display()
                ));
                None
            }
        },
    };
    match CertifiedKey::from_der(chain?, key?, provider) {
        Ok(pair) => Some(pair),
        Err(rustls::Error::InconsistentKeys(_)) => {
            problems.push(format!(
                "tls.key_file: {}: not the key of the certificate in tls.cert_file",
                key_file.display()
            ));
            None
        }
        Err(e) => {
            problems.push(format!("tls.key_file: {}: {e}", key_file.display()));
            None
        }
    }
}

/// What the certificate and key files hold, as one SHA-256 (a file's
/// time may not move when it is rewritten within a clock tick).
fn stamp(cert_file: &Path, key_file: &Path) -> Option<[u8; 32]> {
    let mut hash = Sha256::new();
    for file in [cert_file, key_file] {
        let bytes = std::fs::read(file).ok()?;
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(&bytes);
    }
    Some(hash.finalize().into())
}

/// The certificate served, reread when its files change
/// ([`Certs::reload`]): a renewed certificate needs no restart.
pub struct Certs {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' contents when last read ([`stamp`]).
    stamp: Mutex<Option<[u8; 32]>>,
}

impl std::fmt::Debug for Certs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certs")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl Certs {
    /// Rereads the files if either changed since last read: `Ok(true)`
    /// when a new certificate is served from now on; `Err` (every problem)
    /// when the files do not make a certificate and its key, and the one
    /// served is kept. A file changed again is tried again.
    pub fn reload(&self) -> Result<bool, String> {
        let now = stamp(&self.cert_file, &self.key_file);
        {
            let mut last = self.stamp.lock().unwrap_or_else(PoisonError::into_inner);
            if now.is_none() || *last == now {
                return Ok(false);
            }
            *last = now;
        }
        let mut problems = Vec::new();
        match read_pair(
            &self.cert_file,
            &self.key_file,
            &self.provider,
            &mut problems,
        ) {
            Some(pair) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(pair);
                Ok(true)
            }
            None => Err(problems.join("; ")),
        }
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

/// The PEM certificates in `file`: at least one, or a problem under `key`.
fn read_certs(
    file: &Path,
    key: &str,
    problems: &mut Vec<String>,
) -> Option<Vec<CertificateDer<'static>>> {
    let pem = match std::fs::read(file) {
        Ok(pem) => pem,
        Err(e) => {
            problems.push(format!("{key}: {}: {e}", file.display()));
            return None;
        }
    };
    match CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>() {
        Ok(certs) if !certs.is_empty() => {
            if let Some(i) = certs
                .iter()
                .position(|c| ParsedCertificate::try_from(c).is_err())
            {
                problems.push(format!(
                    "{key}: {}: certificate {} is not a valid X.509 certificate",
                    file.display(),
                    i + 1
                ));
                return None;
            }
            Some(certs)
        }
        Ok(_) => {
            problems.push(format!("{key}: {}: no PEM certificate", file.display()));
            None
        }
        Err(e) => {
            problems.push(format!("{key}: {}: {e}", file.display()));
            None
        }
    }
}

/// A node's `certificate_san`: a DNS name (or IP address) its client
/// certificate must carry as a subject alternative name; `None` when not
/// one.
pub(crate) fn parse_san(san: &str) -> Option<ServerName<'static>> {
    ServerName::try_from(san.to_owned()).ok()
}

/// The client certificate a TLS connection proved it holds (verified
/// against `client_ca_file` in the handshake).
#[derive(Debug)]
pub struct ClientCert {
    der: CertificateDer<'static>,
    sha256: [u8; 32],
}

impl ClientCert {
    fn new(der: CertificateDer<'static>) -> Self {
        let sha256 = Sha256::digest(der.as_ref()).into();
        Self { der, sha256 }
    }

    /// SHA-256 of its DER: what a node's `certificate_sha256` pins.
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    /// Whether this certificate is `node`'s: the node names a certificate
    /// (`certificate_sha256`, `certificate_san`) and every name it gives
    /// matches.
    pub fn names(&self, node: &Node) -> bool {
        if node.certificate_sha256.is_none() && node.certificate_san.is_none() {
            return false;
        }
        if node
            .certificate_sha256
            .is_some_and(|pin| pin != self.sha256)
        {
            return false;
        }
        let Some(san) = &node.certificate_san else {
            return true;
        };
        let Ok(cert) = ParsedCertificate::try_from(&self.der) else {
            return false;
        };
        let covers =
            |name: &ServerName<'_>| rustls::client::verify_server_name(&cert, name).is_ok();
        // The name itself, and not through a wildcard: a certificate that
        // also covers a made-up sibling of the name is a wildcard one, and
        // names no node.
        covers(san) && !sibling(san).is_some_and(|s| covers(&s))
    }
}

/// A name beside `san` that no node has (`vigil-no-such-node.` and its
/// parent domain); none for an IP address or a one-label name.
fn sibling(san: &ServerName<'_>) -> Option<ServerName<'static>> {
    let ServerName::DnsName(name) = san else {
        return None;
    };
    let (_, parent) = name.as_ref().split_once('.')?;
    ServerName::try_from(format!("vigil-no-such-node.{parent}")).ok()
}

/// Who is at the other end of a request's connection: the client
/// certificate it presented, if any. Plain HTTP, and TLS without one:
/// none. An extractor that never fails.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// The verified client certificate.
    pub cert: Option<Arc<ClientCert>>,
    /// The client's address (for per-source rate limits, `crate::ssf::limit`).
    pub addr: Option<std::net::SocketAddr>,
}

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(parts
            .extensions
            .get::<ConnectInfo<Peer>>()
            .map(|c| c.0.clone())
            .unwrap_or_default())
    }
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Peer {
            cert: None,
            addr: Some(*stream.remote_addr()),
        }
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// Handshakes in flight per client address ([`PER_PEER_HANDSHAKES`]).
#[derive(Debug, Default)]
struct PerPeer(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// One handshake's place in [`PerPeer`], given back when dropped.
#[derive(Debug)]
struct PeerSlot(Arc<PerPeer>, std::net::IpAddr);

impl PerPeer {
    /// A slot for `ip`, unless it holds [`PER_PEER_HANDSHAKES`] already.
    fn take(this: &Arc<PerPeer>, ip: std::net::IpAddr) -> Option<PeerSlot> {
        let mut held = this
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = held.entry(ip).or_insert(0);
        if *n >= PER_PEER_HANDSHAKES {
            return None;
        }
        *n += 1;
        Some(PeerSlot(Arc::clone(this), ip))
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut held = self
            .0
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = held.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.1);
            }
        }
    }
}

/// A TCP listener whose connections are TLS: axum is handed each one once
/// its handshake is done, with its [`Peer`].
#[derive(Debug)]
pub struct TlsListener {
    done: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    accepter: tokio::task::AbortHandle,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepter.abort();
    }
}

impl TlsListener {
    /// Takes `tcp`'s connections through TLS with `config`.
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> Self {
        let (tx, done) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let per_peer = Arc::new(PerPeer::default());
        let accepter = tokio::spawn(async move {
            loop {
                let Ok(permit) = Arc::clone(&handshakes).acquire_owned().await else {
                    return;
                };
                let (stream, from) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors and the like: passes.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // One address holds at most its share of the handshakes in
                // flight: silent connections from one host cannot take
                // every slot and starve the nodes and the operator.
                let Some(slot) = PerPeer::take(&per_peer, from.ip()) else {
                    tracing::info!(%from, "TLS handshake refused: too many in flight from this address");
                    continue;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::info!(%from, error = %e, "TLS handshake refused");
                            return;
                        }
                        Err(_) => {
                            tracing::info!(%from, "TLS handshake timed out");
                            return;
                        }
                    };
                    drop(permit);
                    let cert = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|leaf| Arc::new(ClientCert::new(leaf.clone().into_owned())));
                    let _ = tx
                        .send((
                            tls,
                            Peer {
                                cert,
                                addr: Some(from),
                            },
                        ))
                        .await;
                });
            }
        })
        .abort_handle();
        Self { done, accepter }
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.done.recv().await {
            Some(c) => c,
            // The accepter ended (aborted with the listener): nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        // No certificate: the listener's own side (axum asks, only to log).
        Ok(Peer::default())
    }
}
