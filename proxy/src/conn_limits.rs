//! Connection limits of a listener: how many connections it holds, how long
//! a client may take to send a request head, and how many bytes that head
//! may take on the wire.
//!
//! Pingora 0.9.1 has no connection cap, times out each read rather than the
//! whole head (a client dripping one byte every few seconds is never cut),
//! and buffers up to 1 MiB of head per connection before it refuses (a
//! private constant). All three are enforced here, in Vigil's own code, by
//! wrapping the listener's application ([`Limited`]) — no change to Pingora:
//!
//! - **Connections.** [`Limited::process_new`] runs once per accepted
//!   connection (after the TLS handshake on TLS listeners) and holds a
//!   semaphore permit for the connection's life. With no permit left the
//!   connection is closed at once, nothing read from it: refused, not
//!   queued — a queue would hold the very sockets the cap protects.
//! - **The head deadline.** An HTTP/1 connection's stream is wrapped in
//!   [`HeadLimited`], which notes when the first byte of a request head
//!   arrives; a watchdog closes the connection when no whole head has
//!   arrived `header_timeout` later. A new connection's clock starts at
//!   accept: one that sends nothing is cut the same way. The proxy marks the
//!   head complete when its first phase runs ([`head_received`]) and the
//!   request done when it logs ([`request_finished`]); between requests on a
//!   kept-alive connection only Pingora's keep-alive timeout runs.
//! - **The head's size on the wire.** While a head is being read,
//!   [`HeadLimited`] hands Pingora at most `max_head_bytes` bytes; one more
//!   read fails the connection. Pingora's buffer therefore never grows past
//!   the cap, whatever its own constant says.
//!
//! HTTP/2 connections (ALPN `h2`, or the h2c preface) are counted but not
//! wrapped: their heads are HPACK blocks bounded by the h2 settings
//! (`h2_max_header_list_bytes`, `h2_max_concurrent_streams`), given to
//! Pingora as its `H2Options`. The rapid-reset pattern (open a stream, reset
//! it, again) is cut in two places: the `h2` crate's own limit on streams
//! reset before the server took them, and — because Pingora takes streams
//! as fast as they come, so that limit rarely fills — [`H2Connections`]:
//! every stream that ends in an error on the client's side counts against
//! its connection, every stream served whole takes one off, and a
//! connection past `h2_max_pending_resets` is closed.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::l4::ext::get_socket_cookie;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    Stream, TimingDigest, UniqueID, UniqueIDType,
};
use pingora_core::server::ShutdownWatch;
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The first bytes of every HTTP/2 connection (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The limits of one listener, from its `[[listeners]]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections held at once; more are closed on accept.
    pub max_connections: usize,
    /// Longest time from the first byte of a request head (or from accept,
    /// for a connection's first request) to its end.
    pub header_timeout: Duration,
    /// Most bytes a request head may take on the wire, request line
    /// included.
    pub max_head_bytes: usize,
    /// Whether the listener takes cleartext HTTP/2 (the preface is looked
    /// for within `header_timeout`).
    pub h2c: bool,
    /// Most streams of one HTTP/2 connection that ended in an error on the
    /// client's side, net of those served whole.
    pub h2_max_resets: usize,
}

/// The counters of one listener.
#[derive(Debug, Clone)]
pub struct LimitMetrics {
    /// `vigil_proxy_connections_open{listener}`.
    pub open: IntGauge,
    /// `vigil_proxy_connections_refused_total{listener,reason="max_connections"}`.
    pub over_capacity: IntCounter,
    /// `…{reason="header_timeout"}`.
    pub header_timeout: IntCounter,
    /// `…{reason="header_too_large"}`.
    pub header_too_large: IntCounter,
    /// `…{reason="h2_resets"}`.
    pub h2_resets: IntCounter,
}

/// Live HTTP/2 connections of every listener by socket cookie (unique on
/// the host), so that the end of a stream, seen by the proxy in another
/// task, reaches its connection. Clones share the map.
#[derive(Debug, Clone, Default)]
pub struct H2Connections {
    live: Arc<Mutex<HashMap<u64, Arc<H2Watch>>>>,
}

/// The reset count of one HTTP/2 connection.
#[derive(Debug)]
struct H2Watch {
    /// Streams that ended in a client-side error, net of streams served.
    resets: AtomicUsize,
    max: usize,
    /// Woken when `resets` passes `max`.
    cut: Notify,
}

/// A connection's entry in [`H2Connections`], removed on drop.
struct H2Entry {
    connections: H2Connections,
    cookie: u64,
    watch: Arc<H2Watch>,
}

/// A listener's application behind its connection limits.
#[derive(Debug)]
pub struct Limited<A> {
    inner: Arc<A>,
    limits: ConnectionLimits,
    permits: Arc<Semaphore>,
    metrics: LimitMetrics,
    h2: H2Connections,
    /// HTTP/1 connections whose first request head is not in yet.
    fresh: Arc<Fresh>,
}

/// Counts the HTTP/1 connections whose first request head is not in yet.
/// Pingora's cleanup at a stop or an upgrade drops a connection still
/// waiting for its head, unanswered: a client that just connected — to the
/// old process, a moment before it let go of the sockets — would see its
/// connection closed (`an_upgrade_hands_every_socket_to_a_new_main_process_without_a_refusal`
/// caught it). [`Limited`]'s cleanup waits for them first.
#[derive(Debug, Default)]
struct Fresh {
    count: AtomicUsize,
    drained: Notify,
}

/// One connection counted in [`Fresh`] until dropped.
#[derive(Debug)]
struct FreshGuard(Arc<Fresh>);

/// Where a connection is in reading its current request head.
#[derive(Debug)]
struct HeadClock {
    /// When the connection was accepted; [`Self::state`] counts from here.
    base: Instant,
    /// [`IDLE`], [`BODY`], or 1 + nanoseconds from `base` to the first byte
    /// of the head being read.
    state: AtomicU64,
    /// Woken when a head starts.
    started: Notify,
    /// Set when a head ran past the size cap.
    too_large: AtomicBool,
    /// Held until the first head is in.
    fresh: Mutex<Option<FreshGuard>>,
}

/// Between requests: no head deadline (Pingora's keep-alive timeout runs).
const IDLE: u64 = 0;
/// The head is in; the body or the response is under way.
const BODY: u64 = u64::MAX;

tokio::task_local! {
    /// The head clock of the HTTP/1 connection this task serves.
    static CLOCK: Arc<HeadClock>;
}

/// An HTTP/1 connection's stream, counting and capping the bytes of each
/// request head.
#[derive(Debug)]
pub struct HeadLimited {
    inner: Stream,
    clock: Arc<HeadClock>,
    max_head_bytes: usize,
    /// Bytes of the current head read so far.
    head_bytes: usize,
    /// Most bytes one read of a head may take (see [`FIRST_HEAD_READ`]).
    window: usize,
    /// The socket's kernel cookie (`SO_COOKIE`), 0 where the kernel gives
    /// none: read by the first request that asks ([`socket_cookie`]) and
    /// kept for the connection's life, as the cookie is the socket's.
    cookie: OnceLock<u64>,
}

/// Bytes the first read of a connection's head may take; doubled for the
/// rest of the connection each time a read fills it, and never beyond the
/// head's cap. Safe code can only hand the inner stream a buffer it has
/// zeroed, and Pingora offers a fresh, uninitialised one of 4 KiB or more
/// on every read, also on the read that finds nothing and waits: zeroing
/// all of it cost 4.1 k instructions per read, 12.3 k per request (9 %
/// of passthrough: docs/performance.md, "A head's read buffer").
/// Request heads are mostly under 1 KiB; a larger one takes a read or two
/// more, once per connection.
const FIRST_HEAD_READ: usize = 1024;

/// Tells the connection's head clock that a whole request head was read.
/// Called from the proxy's first phase; does nothing on HTTP/2 streams and
/// outside a limited connection.
pub fn head_received() {
    let _ = CLOCK.try_with(|c| {
        c.state.store(BODY, Ordering::Release);
        if let Ok(mut fresh) = c.fresh.lock() {
            fresh.take();
        }
    });
}

/// Tells the connection's head clock that its request is over: the next
/// byte read starts a new head.
pub fn request_finished() {
    let _ = CLOCK.try_with(|c| c.state.store(IDLE, Ordering::Release));
}

/// The kernel's cookie for the client socket of `session` (`SO_COOKIE`,
/// unique for the socket's life; never 0), or `None` where the kernel gives
/// none (not Linux). On an HTTP/1 connection Vigil limits it is read once
/// per connection, not per request: a `getsockopt(2)` cost about 0.4 µs of
/// each enforced request's CPU (docs/performance.md, "Issue 17, fifth
/// pass"); HTTP/2 streams read it from the connection's socket digest.
pub fn socket_cookie(session: &pingora_proxy::Session) -> Option<u64> {
    let limited = session
        .downstream_session
        .stream()
        .and_then(|s| (**s).as_any().downcast_ref::<HeadLimited>());
    let cookie = match limited {
        Some(limited) => *limited
            .cookie
            .get_or_init(|| get_socket_cookie(limited.inner.id()).unwrap_or(0)),
        None => session
            .digest()
            .and_then(|d| d.socket_digest.as_ref())
            .and_then(|d| d.socket_cookie().ok())
            .unwrap_or(0),
    };
    (cookie != 0).then_some(cookie)
}

// === impl Limited ===

impl<A> Limited<A> {
    /// `inner` behind `limits`, counting into `metrics`, filing its HTTP/2
    /// connections in `h2` (shared with the proxy, which reports stream
    /// ends there).
    pub fn new(
        inner: A,
        limits: ConnectionLimits,
        metrics: LimitMetrics,
        h2: H2Connections,
    ) -> Self {
        Self {
            inner: Arc::new(inner),
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            metrics,
            h2,
            fresh: Arc::default(),
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Limited<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.metrics.over_capacity.inc();
            return None;
        };
        let _open = Open::new(&self.metrics.open, permit);
        // Counted before the first await (the h2c preface peek waits for
        // the client's bytes): a stop beginning meanwhile waits for this
        // connection's first head too. What is left uncovered is the
        // instant between Pingora's accept and this task's first poll.
        let fresh = FreshGuard::new(&self.fresh);
        let accepted = Instant::now();
        let deadline = accepted + self.limits.header_timeout;
        let h2 = if stream.get_ssl_digest().is_some() {
            matches!(stream.selected_alpn_proto(), Some(ALPN::H2))
        } else if self.limits.h2c {
            let mut preface = [0u8; H2_PREFACE.len()];
            match tokio::time::timeout_at(deadline, stream.try_peek(&mut preface)).await {
                Err(_) => {
                    self.metrics.header_timeout.inc();
                    return None;
                }
                Ok(Err(_)) => return None,
                Ok(Ok(peeked)) => peeked && preface == H2_PREFACE,
            }
        } else {
            false
        };
        if h2 {
            // HTTP/2 has no first head to wait for here.
            drop(fresh);
            let cookie = stream
                .get_socket_digest()
                .and_then(|d| d.socket_cookie().ok())
                .filter(|c| *c != 0);
            let Some(entry) = cookie.map(|c| self.h2.register(c, self.limits.h2_max_resets)) else {
                self.serve(stream, shutdown).await;
                return None;
            };
            tokio::select! {
                () = self.serve(stream, shutdown) => {}
                () = entry.watch.cut.notified() => {
                    // Dropping the connection's future closes its socket.
                    self.metrics.h2_resets.inc();
                }
            }
            return None;
        }

        let clock = Arc::new(HeadClock::started_at(accepted));
        if let Ok(mut held) = clock.fresh.lock() {
            *held = Some(fresh);
        }
        let limited: Stream = Box::new(HeadLimited {
            inner: stream,
            clock: clock.clone(),
            max_head_bytes: self.limits.max_head_bytes,
            head_bytes: 0,
            window: FIRST_HEAD_READ,
            cookie: OnceLock::new(),
        });
        let serve = CLOCK.scope(clock.clone(), self.serve(limited, shutdown));
        tokio::select! {
            () = serve => {}
            () = clock.expired(self.limits.header_timeout) => {
                // Dropping the connection's future closes its socket.
                self.metrics.header_timeout.inc();
            }
        }
        if clock.too_large.load(Ordering::Acquire) {
            self.metrics.header_too_large.inc();
        }
        None
    }

    /// Lets the connections just accepted get their first head in (up to
    /// `header_timeout`), then lets Pingora close the rest. A connection
    /// still in its TLS handshake is not counted.
    async fn cleanup(&self) {
        let drained = self.fresh.drained();
        if tokio::time::timeout(self.limits.header_timeout, drained)
            .await
            .is_err()
        {
            tracing::debug!("stopping with connections whose first request head is not in");
        }
        self.inner.cleanup().await;
    }
}

impl<A: ServerApp + Send + Sync + 'static> Limited<A> {
    /// Runs the inner application over `stream` until it lets go of it; a
    /// stream handed back for reuse is served again here, under the same
    /// permit.
    async fn serve(&self, stream: Stream, shutdown: &ShutdownWatch) {
        let mut next = self.inner.process_new(stream, shutdown).await;
        while let Some(stream) = next {
            next = self.inner.process_new(stream, shutdown).await;
        }
    }
}

/// A connection counted open; uncounted and its permit returned on drop.
struct Open {
    gauge: IntGauge,
    _permit: OwnedSemaphorePermit,
}

impl Open {
    fn new(gauge: &IntGauge, permit: OwnedSemaphorePermit) -> Self {
        gauge.inc();
        Self {
            gauge: gauge.clone(),
            _permit: permit,
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

// === impl H2Connections ===

impl H2Connections {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tells the HTTP/2 connection whose socket cookie is `cookie` that one
    /// of its streams ended, in an error on the client's side (a reset, a
    /// broken stream) or not. Does nothing for a cookie not filed (HTTP/1,
    /// or a connection already gone).
    pub fn stream_ended(&self, cookie: u64, client_error: bool) {
        let watch = match self.live.lock() {
            Ok(live) => live.get(&cookie).cloned(),
            Err(_) => return,
        };
        let Some(watch) = watch else { return };
        if client_error {
            if watch.resets.fetch_add(1, Ordering::AcqRel) + 1 > watch.max {
                watch.cut.notify_one();
            }
        } else {
            let _ = watch
                .resets
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }

    fn register(&self, cookie: u64, max: usize) -> H2Entry {
        let watch = Arc::new(H2Watch {
            resets: AtomicUsize::new(0),
            max,
            cut: Notify::new(),
        });
        if let Ok(mut live) = self.live.lock() {
            live.insert(cookie, watch.clone());
        }
        H2Entry {
            connections: self.clone(),
            cookie,
            watch,
        }
    }
}

impl Drop for H2Entry {
    fn drop(&mut self) {
        if let Ok(mut live) = self.connections.live.lock() {
            live.remove(&self.cookie);
        }
    }
}

// === impl Fresh ===

impl Fresh {
    /// Resolves once no connection is counted.
    async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl FreshGuard {
    fn new(fresh: &Arc<Fresh>) -> Self {
        fresh.count.fetch_add(1, Ordering::AcqRel);
        Self(fresh.clone())
    }
}

impl Drop for FreshGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}

// === impl HeadClock ===

impl HeadClock {
    /// A clock whose first head started at `base` (the accept).
    fn started_at(base: Instant) -> Self {
        Self {
            base,
            state: AtomicU64::new(1),
            started: Notify::new(),
            too_large: AtomicBool::new(false),
            fresh: Mutex::new(None),
        }
    }

    /// When the head being read started, if one is.
    fn head_start(&self) -> Option<Instant> {
        match self.state.load(Ordering::Acquire) {
            IDLE | BODY => None,
            at => Some(self.base + Duration::from_nanos(at - 1)),
        }
    }

    /// Notes the first byte of a head, if none is being read.
    fn note_bytes(&self) -> bool {
        let since = self.base.elapsed().as_nanos();
        let at = u64::try_from(since).unwrap_or(BODY - 1).clamp(1, BODY - 1);
        let started = self
            .state
            .compare_exchange(IDLE, at, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if started {
            self.started.notify_one();
        }
        started
    }

    /// Resolves when a head has been read for longer than `timeout`.
    async fn expired(&self, timeout: Duration) {
        loop {
            // Registered before the state is read: a head that starts in
            // between leaves a permit behind, so no start is missed.
            let started = self.started.notified();
            match self.head_start() {
                None => started.await,
                Some(start) => {
                    tokio::time::sleep_until(start + timeout).await;
                    if self.head_start() == Some(start) {
                        return;
                    }
                }
            }
        }
    }
}

// === impl HeadLimited ===

impl AsyncRead for HeadLimited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let state = this.clock.state.load(Ordering::Acquire);
        if state == BODY {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        if state == IDLE {
            this.head_bytes = 0;
        }
        let room = this.max_head_bytes.saturating_sub(this.head_bytes);
        if room == 0 {
            this.clock.too_large.store(true, Ordering::Release);
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "request head beyond the listener's cap",
            )));
        }
        // At most `room` bytes go into Pingora's buffer: its own cap is far
        // larger. Only the window is zeroed and offered.
        let room = room.min(buf.remaining());
        let offered = room.min(this.window);
        let dst = buf.initialize_unfilled_to(offered);
        let mut capped = ReadBuf::new(dst);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut capped))?;
        let n = capped.filled().len();
        buf.advance(n);
        if n == this.window {
            this.window = this.window.saturating_mul(2).min(this.max_head_bytes);
        }
        if n > 0 {
            if state == IDLE && this.clock.note_bytes() {
                this.head_bytes = 0;
            }
            this.head_bytes += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for HeadLimited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for HeadLimited {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for HeadLimited {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadLimited {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeadLimited {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeadLimited {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for HeadLimited {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for HeadLimited {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    /// A request finds its own connection's socket cookie — the kernel's
    /// answer for that socket, not the peer's — and the connection keeps
    /// it for the requests after (read once, not per request).
    #[tokio::test]
    async fn a_connections_socket_cookie_is_its_own_and_kept() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let want = get_socket_cookie(server.as_raw_fd()).unwrap();
        assert_ne!(want, 0);
        assert_ne!(get_socket_cookie(client.as_raw_fd()).unwrap(), want);
        let limited = HeadLimited {
            inner: Box::new(pingora_core::protocols::l4::stream::Stream::from(server)),
            clock: Arc::new(HeadClock::started_at(Instant::now())),
            max_head_bytes: 1024,
            head_bytes: 0,
            window: FIRST_HEAD_READ,
            cookie: OnceLock::new(),
        };
        let session = pingora_proxy::Session::new_h1(Box::new(limited));
        let kept = || {
            session
                .downstream_session
                .stream()
                .and_then(|s| (**s).as_any().downcast_ref::<HeadLimited>())
                .and_then(|l| l.cookie.get().copied())
        };
        assert_eq!(kept(), None, "nothing read before a request asks");
        assert_eq!(socket_cookie(&session), Some(want));
        assert_eq!(kept(), Some(want));
        assert_eq!(socket_cookie(&session), Some(want));
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_that_never_ends_expires_and_one_that_ends_does_not() {
        let clock = Arc::new(HeadClock::started_at(Instant::now()));
        let timeout = Duration::from_secs(10);
        // The first head counts from accept.
        let started = Instant::now();
        clock.expired(timeout).await;
        assert_eq!(started.elapsed(), timeout);

        // A head marked received stops the clock; the next byte restarts it.
        clock.state.store(BODY, Ordering::Release);
        let watch = tokio::spawn({
            let clock = clock.clone();
            async move { clock.expired(timeout).await }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!watch.is_finished());
        clock.state.store(IDLE, Ordering::Release);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!watch.is_finished(), "idle between requests: no deadline");
        let restarted = Instant::now();
        assert!(clock.note_bytes());
        assert!(
            !clock.note_bytes(),
            "a head already started keeps its start"
        );
        watch.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(restarted.elapsed(), timeout);
    }
}
