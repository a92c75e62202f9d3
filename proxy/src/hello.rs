//! ClientHello capture: the JA4 of every TLS connection Vigil terminates,
//! read once per connection and found again by every request on it.
//!
//! rustls does not hand the raw ClientHello to applications, and Pingora's
//! rustls path passes no handshake data to callbacks. Pingora does run a
//! pre-TLS callback on each accepted TLS connection ([`PreTlsProcess`]) and
//! lets it put bytes back (`Stream::rewind`). So [`HelloCapture`] reads the
//! TLS records that hold the ClientHello (bounded in bytes, records and
//! time), computes the JA4 with the engine's parser (the specification's
//! form and the resumption-stable form the session baseline is compared
//! by, see `docs/fingerprint.md`), rewinds every byte it
//! read so that rustls sees an untouched stream, and files the fingerprint
//! under the connection's kernel socket cookie (`SO_COOKIE`: unique per
//! socket for the life of the host, unlike a file descriptor). A request —
//! HTTP/1.1 or any stream of an HTTP/2 connection — finds it by the same
//! cookie through its session digest ([`ConnectionFingerprints::get`]).
//!
//! An entry lives exactly as long as its connection. Pingora has no
//! connection-closed callback for servers, but its L4 stream calls the
//! `on_disconnected` of the [`Tracer`] it holds when it is dropped — a hook
//! Pingora uses for upstream connections, and that a downstream stream
//! carries unused. The capture puts a [`Forget`] there, which removes the
//! connection's entry when the connection goes, so closed connections never
//! fill the store and a flood of handshakes cannot push out the entries of
//! live ones. The store is still a bounded `moka` cache (`max_connections`,
//! least recently used first) as a backstop; a request whose connection's
//! entry is missing anyway (more live TLS connections than the bound) gets
//! *no evidence* and is counted (`vigil_proxy_tls_fingerprint_missing_total`)
//! — never evidence of another device, which would let a flood get other
//! users' sessions refused. The engine still notes a session whose baseline
//! had a fingerprint arriving without one (`tls_evidence_lost`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use pingora_core::listeners::PreTlsProcess;
use pingora_core::protocols::GetSocketDigest;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::upstreams::peer::{Tracer, Tracing};
use pingora_error::Result;
use prometheus::{IntCounterVec, IntGauge};
use tokio::io::AsyncReadExt;
use vigil_engine::{ClientHello, HelloError, TlsFingerprint, Transport};

/// Most TLS records a ClientHello may be spread over before Vigil gives up
/// reading it. Real stacks send one (two with large post-quantum key
/// shares); every new record costs a re-parse, so the cap bounds the work a
/// client can cause by fragmenting its hello into tiny records.
const MAX_HELLO_RECORDS: usize = 8;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 4096;
/// TLS record header: type, version, length.
const RECORD_HEADER_LEN: usize = 5;

/// Settings of the capture (`[fingerprint]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureSettings {
    /// Most bytes read before the hello is declared unreadable.
    pub max_hello_bytes: usize,
    /// Longest wait for the whole hello.
    pub hello_timeout: Duration,
    /// Most connections whose fingerprint is kept.
    pub max_connections: u64,
    /// An entry not looked up for this long is dropped.
    pub idle_timeout: Duration,
}

/// Fingerprints of live TLS connections, by socket cookie.
#[derive(Clone)]
pub struct ConnectionFingerprints {
    entries: Cache<u64, TlsFingerprint>,
}

/// The pre-TLS callback of every TLS listener.
#[derive(Debug)]
pub struct HelloCapture {
    settings: CaptureSettings,
    store: ConnectionFingerprints,
    outcomes: IntCounterVec,
    tracked: IntGauge,
}

/// How reading one connection's hello ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Read and fingerprinted.
    Captured,
    /// Bytes that are not a ClientHello, or one beyond the caps.
    Unreadable,
    /// Not all of it within the timeout.
    Timeout,
    /// The peer closed, or the socket failed, before the hello was whole.
    Closed,
}

/// Removes a connection's entry when Pingora drops its stream.
#[derive(Debug, Clone)]
struct Forget {
    entries: Cache<u64, TlsFingerprint>,
    cookie: u64,
}

// === impl ConnectionFingerprints ===

impl ConnectionFingerprints {
    /// An empty store.
    pub fn new(settings: &CaptureSettings) -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(settings.max_connections)
                .time_to_idle(settings.idle_timeout)
                // LRU admits every new connection; the default TinyLFU
                // could refuse a fresh key when the store is full.
                .eviction_policy(EvictionPolicy::lru())
                .build(),
        }
    }

    /// The fingerprint of the connection whose socket cookie is `cookie`.
    pub fn get(&self, cookie: u64) -> Option<TlsFingerprint> {
        self.entries.get(&cookie)
    }

    /// Approximate number of connections tracked.
    pub fn tracked(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    /// Files `fingerprint` under the socket cookie `cookie`.
    pub fn insert(&self, cookie: u64, fingerprint: TlsFingerprint) {
        self.entries.insert(cookie, fingerprint);
    }

    /// Forgets the connection whose socket cookie is `cookie`.
    pub fn remove(&self, cookie: u64) {
        self.entries.invalidate(&cookie);
    }
}

impl std::fmt::Debug for ConnectionFingerprints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionFingerprints")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

// === impl HelloCapture ===

impl HelloCapture {
    /// A capture filing into `store`, counting outcomes in `outcomes`
    /// (`vigil_proxy_tls_hello_total{outcome}`) and the store's size in
    /// `tracked`.
    pub fn new(
        settings: CaptureSettings,
        store: ConnectionFingerprints,
        outcomes: IntCounterVec,
        tracked: IntGauge,
    ) -> Arc<Self> {
        Arc::new(Self {
            settings,
            store,
            outcomes,
            tracked,
        })
    }
}

#[async_trait]
impl PreTlsProcess for HelloCapture {
    async fn process(&self, stream: &mut L4Stream) -> Result<()> {
        let cookie = stream
            .get_socket_digest()
            .and_then(|d| d.socket_cookie().ok())
            .filter(|c| *c != 0);
        let mut buf = Vec::new();
        let outcome = match tokio::time::timeout(
            self.settings.hello_timeout,
            read_hello(stream, &mut buf, self.settings.max_hello_bytes),
        )
        .await
        {
            Ok(Ok(hello)) => {
                if let Some(cookie) = cookie {
                    // Both JA4 forms in one pass: the spec form for logs,
                    // facts and the app, the resumption-stable form for
                    // comparing with the session's baseline.
                    self.store
                        .insert(cookie, TlsFingerprint::of_hello(&hello, Transport::Tcp));
                }
                Outcome::Captured
            }
            Ok(Err(outcome)) => outcome,
            Err(_) => Outcome::Timeout,
        };
        if matches!(outcome, Outcome::Unreadable | Outcome::Timeout)
            && let Some(cookie) = cookie
        {
            self.store.insert(cookie, TlsFingerprint::unreadable());
        }
        // The entry goes with the connection. A stream that already carries
        // a tracer (none does downstream today) keeps it, and its entry
        // ages out of the bounded store instead.
        if let (Some(cookie), None) = (cookie, stream.tracer.as_ref()) {
            stream.tracer = Some(Tracer(Box::new(Forget {
                entries: self.store.entries.clone(),
                cookie,
            })));
        }
        self.outcomes
            .with_label_values(&[if cookie.is_none() {
                "untracked"
            } else {
                outcome.as_str()
            }])
            .inc();
        self.tracked
            .set(i64::try_from(self.store.entries.entry_count()).unwrap_or(i64::MAX));
        // Every byte goes back, whatever happened: rustls judges the
        // handshake, Vigil only watched it.
        stream.rewind(&buf);
        Ok(())
    }
}

impl Tracing for Forget {
    fn on_connected(&self) {}

    fn on_disconnected(&self) {
        self.entries.invalidate(&self.cookie);
    }

    fn boxed_clone(&self) -> Box<dyn Tracing> {
        Box::new(self.clone())
    }
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Captured => "captured",
            Outcome::Unreadable => "unreadable",
            Outcome::Timeout => "timeout",
            Outcome::Closed => "closed",
        }
    }
}

/// Reads from `stream` into `buf` until `buf` starts with a whole
/// ClientHello. Parses after the first read and then only when another
/// record is complete, at most [`MAX_HELLO_RECORDS`] times, so the work is
/// bounded by the caps however the client slices its bytes.
async fn read_hello(
    stream: &mut L4Stream,
    buf: &mut Vec<u8>,
    max_bytes: usize,
) -> std::result::Result<ClientHello, Outcome> {
    let mut records = RecordCounter::default();
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        let room = max_bytes.saturating_sub(buf.len()).min(READ_CHUNK);
        if room == 0 {
            return Err(Outcome::Unreadable);
        }
        let n = match stream.read(&mut chunk[..room]).await {
            Ok(0) | Err(_) => return Err(Outcome::Closed),
            Ok(n) => n,
        };
        let first_read = buf.is_empty();
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        // The first bytes are parsed at once so that what is not TLS at all
        // is known without waiting for a record that will never end.
        if !records.advance(buf) && !first_read {
            continue;
        }
        if records.complete > MAX_HELLO_RECORDS {
            return Err(Outcome::Unreadable);
        }
        match ClientHello::from_records_capped(buf, max_bytes) {
            Ok(hello) => return Ok(hello),
            Err(HelloError::Incomplete) => {}
            Err(HelloError::Malformed(_)) => return Err(Outcome::Unreadable),
        }
    }
}

/// Walks TLS record headers as bytes arrive, once over each byte.
#[derive(Debug, Default)]
struct RecordCounter {
    /// Offset just past the last complete record.
    end: usize,
    /// Complete records so far.
    complete: usize,
}

impl RecordCounter {
    /// Moves over the records `buf` now completes; true if any.
    fn advance(&mut self, buf: &[u8]) -> bool {
        let before = self.complete;
        while let Some(header) = buf.get(self.end..self.end + RECORD_HEADER_LEN) {
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            let next = self.end + RECORD_HEADER_LEN + len;
            if next > buf.len() {
                break;
            }
            self.end = next;
            self.complete += 1;
        }
        self.complete > before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_counter_moves_only_over_whole_records() {
        let mut c = RecordCounter::default();
        let mut buf = vec![22, 3, 1, 0, 3, 1, 2];
        assert!(!c.advance(&buf));
        buf.push(3);
        assert!(c.advance(&buf));
        assert_eq!((c.end, c.complete), (8, 1));
        // Two more records arrive in one read, the second only in part.
        buf.extend_from_slice(&[22, 3, 1, 0, 1, 9, 22, 3, 1, 0, 2, 7]);
        assert!(c.advance(&buf));
        assert_eq!((c.end, c.complete), (14, 2));
        assert!(!c.advance(&buf));
        buf.push(8);
        assert!(c.advance(&buf));
        assert_eq!(c.complete, 3);
    }

    #[test]
    fn lru_store_admits_new_connections_when_full() {
        let store = ConnectionFingerprints::new(&CaptureSettings {
            max_hello_bytes: 1024,
            hello_timeout: Duration::from_secs(1),
            max_connections: 4,
            idle_timeout: Duration::from_secs(60),
        });
        for cookie in 1..=64 {
            store.insert(cookie, TlsFingerprint::unreadable());
            store.entries.run_pending_tasks();
        }
        // The newest connection is always found; the store stays bounded.
        assert!(store.get(64).is_some());
        assert!(store.tracked() <= 4);
    }
}
