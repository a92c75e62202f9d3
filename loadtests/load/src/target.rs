//! Targets: what the operator names, and connections to it.
//!
//! A target is only ever the address of its URL: `vigil-load` resolves
//! nothing else and follows no redirects.

use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Uri};
use http_body_util::Empty;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::tls::{self, PROFILES, Trust};

/// A target as the operator named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    /// Name in reports (`enforce`, `nginx`, …).
    pub name: String,
    /// `http://` or `https://` URL; its path is the path of browsing requests.
    pub url: Uri,
    /// `Host` to send instead of the URL's authority (routes by host).
    pub host: Option<String>,
    /// Processes whose CPU time is charged to this target
    /// (`/proc/PID/stat`), summed: a proxy and the auth service it asks.
    pub pids: Vec<u32>,
}

/// A `--target` that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("--target {spec:?}: {problem}")]
pub struct TargetError {
    spec: String,
    problem: String,
}

/// Protocol on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1, one request at a time per connection.
    Http1,
    /// HTTP/2 (ALPN `h2` over TLS, prior knowledge in cleartext).
    Http2,
}

/// An HTTP/1.1 connection's I/O: polled by the task that uses the
/// connection, in the same task as the request (no task of its own, so no
/// wake-up hand-off between tasks per request).
pub type H1Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// An HTTP/1.1 connection: the request handle and the I/O that serves it.
pub struct H1Conn {
    /// Sends one request at a time.
    pub send: http1::SendRequest<Empty<Bytes>>,
    /// Reads and writes the socket; must be polled while a request is out.
    pub io: H1Driver,
}

impl std::fmt::Debug for H1Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Conn").finish_non_exhaustive()
    }
}

/// A connection ready to send.
#[derive(Debug)]
pub enum Sender {
    /// HTTP/1.1, one request at a time, driven by its user.
    H1(H1Conn),
    /// HTTP/2, shared by concurrent requests; its I/O runs in a task.
    H2(http2::SendRequest<Empty<Bytes>>),
}

/// A target resolved for connecting.
#[derive(Debug)]
pub struct Endpoint {
    /// The socket address dialled.
    pub addr: SocketAddr,
    /// `Host` / `:authority`.
    pub authority: HeaderValue,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The path of browsing requests.
    pub path: String,
    /// The request target of browsing requests: the path in HTTP/1.1, the
    /// absolute URI in HTTP/2. Built once; cloning it shares its bytes.
    pub uri: Uri,
    /// Wire protocol.
    pub protocol: Protocol,
    /// Per device profile, over TLS.
    tls: Option<(Vec<Arc<ClientConfig>>, ServerName<'static>)>,
    /// Longest wait for a connection.
    connect_timeout: Duration,
    /// Connections opened (TCP connected; over TLS, handshake done).
    pub opened: AtomicU64,
    /// TLS handshakes that resumed a session.
    pub resumed: AtomicU64,
}

/// Why a connection failed, as an error kind of the report.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect refused or failed.
    #[error("connect")]
    Connect,
    /// TCP or TLS took longer than the connect timeout.
    #[error("connect_timeout")]
    Timeout,
    /// The TLS handshake failed.
    #[error("tls")]
    Tls,
    /// The HTTP handshake failed.
    #[error("handshake")]
    Handshake,
}

// === impl TargetSpec ===

impl TargetSpec {
    /// Parses `URL` or `name=N,url=URL[,host=H][,pid=P[+P…]]`.
    pub fn parse(spec: &str) -> Result<Self, TargetError> {
        let bad = |problem: &str| TargetError {
            spec: spec.to_owned(),
            problem: problem.to_owned(),
        };
        let mut name = None;
        let mut url = None;
        let mut host = None;
        let mut pid = None;
        if spec.starts_with("http://") || spec.starts_with("https://") {
            url = Some(spec.to_owned());
        } else {
            for part in spec.split(',') {
                let (k, v) = part
                    .split_once('=')
                    .ok_or_else(|| bad("expected name=…,url=…[,host=…][,pid=…]"))?;
                let slot = match k.trim() {
                    "name" => &mut name,
                    "url" => &mut url,
                    "host" => &mut host,
                    "pid" => &mut pid,
                    other => {
                        return Err(bad(&format!(
                            "unknown key {other:?}; expected name, url, host or pid"
                        )));
                    }
                };
                if slot.replace(v.trim().to_owned()).is_some() {
                    return Err(bad(&format!("{k} given twice")));
                }
            }
        }
        let url_text = url.ok_or_else(|| bad("no url"))?;
        let url: Uri = url_text
            .parse()
            .map_err(|_| bad("the url does not parse"))?;
        match url.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(bad("the url must start with http:// or https://")),
        }
        if url.host().is_none() {
            return Err(bad("the url has no host"));
        }
        let pids = match pid {
            None => Vec::new(),
            Some(p) => p
                .split('+')
                .map(|p| p.trim().parse::<u32>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| bad("pid is not a process id (or P+P… for several)"))?,
        };
        let name = name.unwrap_or_else(|| url_text.clone());
        if name.is_empty() {
            return Err(bad("empty name"));
        }
        Ok(Self {
            name,
            url,
            host,
            pids,
        })
    }

    /// Resolves the target for connecting: its address, and over TLS one
    /// connector per device profile (at most `devices`), without TLS
    /// resumption.
    pub fn endpoint(
        &self,
        protocol: Protocol,
        devices: usize,
        trust: &Trust,
    ) -> Result<Endpoint, String> {
        self.endpoint_with(protocol, devices, trust, false)
    }

    /// As [`TargetSpec::endpoint`]; `resume` lets each device profile
    /// resume the TLS sessions the server gave it (`--tls-resume`).
    pub fn endpoint_with(
        &self,
        protocol: Protocol,
        devices: usize,
        trust: &Trust,
        resume: bool,
    ) -> Result<Endpoint, String> {
        let host = self.url.host().unwrap_or_default();
        let https = self.url.scheme_str() == Some("https");
        let port = self.url.port_u16().unwrap_or(if https { 443 } else { 80 });
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addr = (bare, port)
            .to_socket_addrs()
            .map_err(|e| format!("{}: {e}", self.name))?
            .next()
            .ok_or_else(|| format!("{}: {host} has no address", self.name))?;
        let authority = match &self.host {
            Some(h) => h.clone(),
            None => self
                .url
                .authority()
                .map(ToString::to_string)
                .unwrap_or_default(),
        };
        let authority = HeaderValue::from_str(&authority)
            .map_err(|_| format!("{}: host {authority:?} is not a header value", self.name))?;
        let tls = if https {
            let sni_host = self
                .host
                .as_deref()
                .map(|h| h.split(':').next().unwrap_or(h).to_owned())
                .unwrap_or_else(|| bare.to_owned());
            let sni = ServerName::try_from(sni_host)
                .map_err(|e| format!("{}: server name: {e}", self.name))?;
            let alpn: &[&[u8]] = match protocol {
                Protocol::Http1 => &[b"http/1.1"],
                Protocol::Http2 => &[b"h2"],
            };
            let mut connectors = Vec::new();
            for d in 0..devices.clamp(1, PROFILES) {
                let config: ClientConfig =
                    tls::profile(d, alpn, trust, resume).map_err(|e| e.to_string())?;
                connectors.push(Arc::new(config));
            }
            Some((connectors, sni))
        } else {
            None
        };
        let path = match self.url.path() {
            "" => "/".to_owned(),
            p => p.to_owned(),
        };
        let uri = match protocol {
            Protocol::Http1 => path.clone(),
            Protocol::Http2 => format!(
                "{}://{}{path}",
                if https { "https" } else { "http" },
                authority.to_str().unwrap_or_default()
            ),
        };
        let uri: Uri = uri
            .parse()
            .map_err(|_| format!("{}: {uri:?} is not a request target", self.name))?;
        Ok(Endpoint {
            uri,
            addr,
            authority,
            scheme: if https { "https" } else { "http" },
            path,
            protocol,
            tls,
            connect_timeout: Duration::from_secs(5),
            opened: AtomicU64::new(0),
            resumed: AtomicU64::new(0),
        })
    }
}

// === impl Endpoint ===

impl Endpoint {
    /// Whether connections differ by device (TLS).
    pub fn per_device(&self) -> bool {
        self.tls.is_some()
    }

    /// Opens a connection for device profile `device`.
    pub async fn connect(&self, device: usize) -> Result<Sender, ConnectError> {
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| ConnectError::Timeout)?
            .map_err(|_| ConnectError::Connect)?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => {
                self.opened.fetch_add(1, Ordering::Relaxed);
                self.handshake(tcp).await
            }
            Some((connectors, sni)) => {
                let connector = TlsConnector::from(
                    connectors
                        .get(device % connectors.len().max(1))
                        .ok_or(ConnectError::Tls)?
                        .clone(),
                );
                let stream =
                    tokio::time::timeout(self.connect_timeout, connector.connect(sni.clone(), tcp))
                        .await
                        .map_err(|_| ConnectError::Timeout)?
                        .map_err(|_| ConnectError::Tls)?;
                self.opened.fetch_add(1, Ordering::Relaxed);
                if stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                    self.resumed.fetch_add(1, Ordering::Relaxed);
                }
                self.handshake(stream).await
            }
        }
    }

    async fn handshake<S>(&self, io: S) -> Result<Sender, ConnectError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        match self.protocol {
            Protocol::Http1 => {
                let (send, conn) = http1::handshake(io)
                    .await
                    .map_err(|_| ConnectError::Handshake)?;
                Ok(Sender::H1(H1Conn {
                    send,
                    io: Box::pin(conn),
                }))
            }
            Protocol::Http2 => {
                let (send, conn) = http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|_| ConnectError::Handshake)?;
                tokio::spawn(conn);
                Ok(Sender::H2(send))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test")]
    use super::*;

    #[test]
    fn targets_parse_with_their_options() {
        let t =
            TargetSpec::parse("name=enforce,url=http://127.0.0.1:8080/,host=enforce.test,pid=42")
                .unwrap();
        assert_eq!(t.name, "enforce");
        assert_eq!(t.host.as_deref(), Some("enforce.test"));
        assert_eq!(t.pids, [42]);
        let t = TargetSpec::parse("name=auth,url=http://127.0.0.1:8080/,pid=42+43").unwrap();
        assert_eq!(t.pids, [42, 43]);
        let t = TargetSpec::parse("https://127.0.0.1:8443/app").unwrap();
        assert_eq!(t.name, "https://127.0.0.1:8443/app");
        assert_eq!(t.url.path(), "/app");
    }

    #[test]
    fn bad_targets_say_what_is_wrong() {
        for (spec, problem) in [
            ("name=a", "no url"),
            ("name=a,url=ftp://x", "http:// or https://"),
            ("name=a,url=http://x,colour=red", "unknown key \"colour\""),
            ("name=a,name=b,url=http://x", "name given twice"),
            ("name=a,url=http://x,pid=me", "pid is not a process id"),
            ("name=a,url=http://x,pid=1+", "pid is not a process id"),
            ("name=a,url=http://x,pid=1+-2", "pid is not a process id"),
            ("enforce", "expected name=…,url=…"),
        ] {
            let e = TargetSpec::parse(spec).unwrap_err().to_string();
            assert!(e.contains(problem), "{spec}: {e}");
        }
    }
}
