//! The requests in flight on this node, filed by session: what a
//! revocation ends besides the session's next request.
//!
//! Vigil judges a request once, when it starts. A WebSocket, a streamed
//! response (server-sent events, a long download) or a long poll opened
//! before a revocation would otherwise keep flowing after it: a thief
//! holding an open connection would keep it for as long as the app does.
//! So every request of an enforcing route that carries a session is filed
//! here at its start ([`OpenRequests::open`], one insert under one shard's
//! lock) and taken out when it ends (the [`Open`] handle, dropped in the
//! `logging` phase); every place that revokes a session or a user on this
//! node — a `revoke` decision, the admin API, the fleet's sync stream —
//! ends what is filed under it ([`OpenRequests::end_session`],
//! [`OpenRequests::end_user`]).
//!
//! # How a request is ended from outside it
//!
//! Pingora (0.9) offers no handle to cancel a request from another task:
//! its proxy loop polls the client and the upstream, never anything of
//! ours, and calls our phases only when bytes move. Two things are done
//! to each request ended:
//!
//! - **Its flag is set.** The request's own phases look at it: the request
//!   body filter (client to app, WebSocket frames included), the response
//!   head and every response body chunk refuse to go on (`401` when no
//!   response has begun; the stream cut otherwise). This ends whatever
//!   still *flows*, on HTTP/1 and HTTP/2 alike, at its next chunk — and an
//!   idle HTTP/2 long poll when the app finally answers: the answer never
//!   reaches the client.
//! - **On HTTP/1, the client's socket is shut down** (`shutdown(2)`, both
//!   directions) when the request is still in flight [`GRACE`] (1 s)
//!   later: a request about to complete when the revocation arrived
//!   completes or is answered `401` by its flag, rather than cut. An
//!   HTTP/1 connection carries one request at a time, so
//!   this ends exactly the revoked request, idle or not: Pingora's read of
//!   the client returns end-of-file at once (a closed client aborts the
//!   request), the upstream connection is dropped, and the client sees the
//!   connection close (for a WebSocket: the TCP connection ends without a
//!   close frame, which browsers report as close code 1006). HTTP/2 is
//!   never shut down: one connection carries streams of other sessions,
//!   which a revocation must not touch; its streams rely on the flag.
//!
//! A file descriptor is a number the kernel reuses once it is closed, so
//! a socket is only ever shut down while it is surely the request's own:
//! the request takes itself out in `logging`, before Pingora closes or
//! reuses its connection, under the same lock the revocation holds while
//! it shuts down; and the socket's kernel cookie (`SO_COOKIE`, unique for
//! the socket's life, read once per connection:
//! [`crate::conn_limits::socket_cookie`]), taken when the request was
//! filed, must still match
//! — a request that vanished without `logging` cannot get another
//! connection shut down.
//!
//! # Bounds
//!
//! [`SHARDS`] shards of at most [`MAX_TRACKED`]` / SHARDS` requests each
//! (about 100 bytes a request). A request that finds its shard full is
//! served unfiled, counted (`vigil_proxy_open_requests_untracked_total`):
//! its next request is still refused, but a revocation does not end it.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use pingora_core::protocols::l4::ext::get_socket_cookie;
use pingora_proxy::Session;
use prometheus::{IntCounter, IntCounterVec};
use smallvec::SmallVec;
use vigil_engine::{SessionKey, UserKey};

use crate::metrics::Metrics;

/// Shards of the registry: requests of different sessions rarely share a
/// lock.
pub const SHARDS: usize = 64;
/// Most requests filed at once, all shards together (about 25 MiB when
/// full): far more long-lived connections than one node holds.
pub const MAX_TRACKED: usize = 262_144;
const PER_SHARD: usize = MAX_TRACKED / SHARDS;
/// Most requests one session may have filed at once: a browser holds a
/// few dozen at most. Without it a thief could fill the session's shard
/// with slow requests and have the next one served unfiled, out of a
/// revocation's reach; past it the request is refused instead.
pub const PER_SESSION: usize = 64;
/// How long an ended HTTP/1 request has before its connection is shut
/// down: a request about to complete (judged a moment before the
/// revocation arrived) completes, or its flag answers it `401`, rather
/// than its client seeing the connection cut; a WebSocket or long poll
/// is closed after it.
pub const GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// The registry of requests in flight, by session. Cheap to clone: the
/// request path, the admin API and the controller client share one.
#[derive(Clone)]
pub struct OpenRequests(Arc<Inner>);

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    next_id: AtomicU64,
    /// `vigil_proxy_open_requests_ended_total{how}`.
    ended: IntCounterVec,
    /// `vigil_proxy_open_requests_untracked_total`.
    untracked: IntCounter,
}

#[derive(Default)]
struct Shard {
    by_session: HashMap<SessionKey, SmallVec<[Entry; 1]>>,
    len: usize,
}

struct Entry {
    id: u64,
    /// The user the session was bound to when the request started.
    user: Option<UserKey>,
    ended: Arc<AtomicBool>,
    socket: Option<Socket>,
}

/// The client socket of an HTTP/1 request: its descriptor, and the
/// kernel's cookie for the socket, which tells it from a later socket
/// given the same descriptor number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Socket {
    fd: RawFd,
    cookie: u64,
}

/// A request's place in the registry, held in its context: dropping it
/// (in `logging`, or with the context) takes the request out.
pub struct Open {
    registry: OpenRequests,
    /// Each session the request was filed under, with its entry's id.
    filed: SmallVec<[(SessionKey, u64); 1]>,
    ended: Arc<AtomicBool>,
}

/// What one revocation ended: how many requests, and the HTTP/1 ones
/// whose sockets are to be shut down after [`GRACE`].
struct Pending {
    ended: usize,
    sockets: SmallVec<[(SessionKey, u64); 2]>,
}

impl Pending {
    fn new() -> Self {
        Self {
            ended: 0,
            sockets: SmallVec::new(),
        }
    }
}

/// How a revocation ended a request, the `how` label of
/// `vigil_proxy_open_requests_ended_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    /// Its HTTP/1 connection was shut down: it ends now, idle or not.
    Closed,
    /// Flagged only (HTTP/2; or HTTP/1 gone within the grace, or whose
    /// descriptor is no longer its socket): it ends at its next chunk
    /// either way, or when the app answers.
    Flagged,
}

// === impl OpenRequests ===

impl OpenRequests {
    /// An empty registry counting into `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        Self(Arc::new(Inner {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            next_id: AtomicU64::new(1),
            ended: metrics.open_requests_ended.clone(),
            untracked: metrics.open_requests_untracked.clone(),
        }))
    }

    /// Files a request under each of `sessions` (the request's
    /// credentials; one in all but odd cases), with the `user` its session
    /// is bound to and its client `socket` when it is HTTP/1 (see
    /// [`socket_of`]). `None` when a shard is full: the request goes on
    /// unfiled, counted.
    pub fn open(
        &self,
        sessions: &[SessionKey],
        user: Option<UserKey>,
        socket: Option<Socket>,
    ) -> Option<Open> {
        let ended = Arc::new(AtomicBool::new(false));
        let mut open = Open {
            registry: self.clone(),
            filed: SmallVec::new(),
            ended: ended.clone(),
        };
        for &session in sessions {
            let id = self.0.next_id.fetch_add(1, Ordering::Relaxed);
            let mut shard = self.shard(&session);
            let held = shard.by_session.get(&session).map_or(0, |v| v.len());
            if shard.len >= PER_SHARD || held >= PER_SESSION {
                drop(shard);
                self.0.untracked.inc();
                // What was filed already is taken out as `open` drops.
                return None;
            }
            shard.len += 1;
            shard.by_session.entry(session).or_default().push(Entry {
                id,
                user,
                ended: ended.clone(),
                socket,
            });
            drop(shard);
            open.filed.push((session, id));
        }
        Some(open)
    }

    /// Ends every request filed under `session`; returns how many (not
    /// counting those a revocation ended already).
    pub fn end_session(&self, session: &SessionKey) -> usize {
        let mut later = Pending::new();
        let shard = self.shard(session);
        if let Some(entries) = shard.by_session.get(session) {
            for entry in entries {
                self.end(*session, entry, &mut later);
            }
        }
        drop(shard);
        let ended = later.ended;
        if ended > 0 {
            tracing::debug!(
                target: "vigil::open_requests",
                session = %session.short(),
                ended,
                "revoked session: open requests ended"
            );
        }
        self.shut_down_later(later);
        ended
    }

    /// Ends every request of `user`'s sessions: filed as bound to `user`,
    /// or of a session `revoked` now says is revoked (bound to the user
    /// after its request started, or known bound only to the engine).
    /// Called after the engine revoked or erased the user. Visits every
    /// shard: a user revocation is rare, and a request holds no user
    /// index of its own. Returns how many were ended.
    pub fn end_user(&self, user: UserKey, revoked: impl Fn(&SessionKey) -> bool) -> usize {
        let mut later = Pending::new();
        for shard in &self.0.shards {
            let shard = lock(shard);
            for (session, entries) in &shard.by_session {
                let whole = revoked(session);
                for entry in entries.iter().filter(|e| whole || e.user == Some(user)) {
                    self.end(*session, entry, &mut later);
                }
            }
        }
        let ended = later.ended;
        if ended > 0 {
            tracing::debug!(
                target: "vigil::open_requests",
                %user,
                ended,
                "revoked user: open requests ended"
            );
        }
        self.shut_down_later(later);
        ended
    }

    /// Requests filed now, all shards together (ended ones included until
    /// they are gone).
    pub fn len(&self) -> usize {
        self.0.shards.iter().map(|s| lock(s).len).sum()
    }

    /// Whether no request is filed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sets `entry`'s flag, unless a revocation did already; an HTTP/1
    /// request is put down for its socket to be shut down after [`GRACE`].
    fn end(&self, session: SessionKey, entry: &Entry, later: &mut Pending) {
        if entry.ended.swap(true, Ordering::AcqRel) {
            return;
        }
        later.ended += 1;
        if entry.socket.is_some() {
            later.sockets.push((session, entry.id));
        } else {
            self.count(How::Flagged);
        }
    }

    /// After [`GRACE`], shuts down the client socket of each request in
    /// `later` still in flight; at once when there is no runtime to wait
    /// on (nothing is in flight then in practice: start-up replays).
    fn shut_down_later(&self, later: Pending) {
        if later.sockets.is_empty() {
            return;
        }
        let registry = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    tokio::time::sleep(GRACE).await;
                    registry.shut_down(&later.sockets);
                });
            }
            Err(_) => registry.shut_down(&later.sockets),
        }
    }

    /// Shuts down the client socket of each of `requests` still filed.
    /// Under the entry's shard lock: the request cannot take itself out
    /// (and Pingora close or reuse its connection) meanwhile; and only
    /// while the descriptor's kernel cookie is the one filed.
    fn shut_down(&self, requests: &[(SessionKey, u64)]) {
        for (session, id) in requests {
            let shard = self.shard(session);
            let socket = shard
                .by_session
                .get(session)
                .and_then(|entries| entries.iter().find(|e| e.id == *id))
                .and_then(|e| e.socket);
            let how = match socket {
                Some(s) if get_socket_cookie(s.fd).ok() == Some(s.cookie) => {
                    match nix::sys::socket::shutdown(s.fd, nix::sys::socket::Shutdown::Both) {
                        Ok(()) => How::Closed,
                        Err(e) => {
                            // The client went first: the flag ended it.
                            tracing::debug!(target: "vigil::open_requests", error = %e, "shutdown failed");
                            How::Flagged
                        }
                    }
                }
                // Gone within the grace (refused by its flag, or done), or
                // the descriptor is another socket's now.
                _ => How::Flagged,
            };
            drop(shard);
            self.count(how);
        }
    }

    fn count(&self, how: How) {
        self.0
            .ended
            .with_label_values(&[match how {
                How::Closed => "closed",
                How::Flagged => "flagged",
            }])
            .inc();
    }

    fn shard(&self, session: &SessionKey) -> MutexGuard<'_, Shard> {
        // Session keys are keyed hashes: any two bytes are uniform.
        let b = session.as_bytes();
        let i = usize::from(u16::from_le_bytes([b[0], b[1]])) % SHARDS;
        lock(&self.0.shards[i])
    }

    fn close(&self, session: &SessionKey, id: u64) {
        let mut shard = self.shard(session);
        let Some(entries) = shard.by_session.get_mut(session) else {
            return;
        };
        let before = entries.len();
        entries.retain(|e| e.id != id);
        let gone = before - entries.len();
        if entries.is_empty() {
            shard.by_session.remove(session);
        }
        shard.len -= gone;
    }
}

impl std::fmt::Debug for OpenRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenRequests").finish_non_exhaustive()
    }
}

/// A poisoned shard holds plain data that no panic leaves half-changed in
/// a way that matters more than serving: go on with it.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

// === impl Open ===

impl Open {
    /// Whether a revocation ended the request: its phases then refuse to
    /// carry anything more. One atomic load.
    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        for (session, id) in &self.filed {
            self.registry.close(session, *id);
        }
    }
}

impl std::fmt::Debug for Open {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Open")
            .field("filed", &self.filed.len())
            .field("ended", &self.ended())
            .finish()
    }
}

/// The client socket of `session` when it is HTTP/1 (cleartext or TLS):
/// the one connection shutting down ends this request and nothing else.
/// `None` on HTTP/2 (the connection carries other sessions' streams) and
/// where the kernel gives no socket cookie (not Linux).
pub fn socket_of(session: &Session) -> Option<Socket> {
    if session.is_http2() {
        return None;
    }
    let fd = session.downstream_session.stream()?.id();
    let cookie = crate::conn_limits::socket_cookie(session)?;
    Some(Socket { fd, cookie })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SessionKey {
        SessionKey::from_bytes([n; 16])
    }

    fn registry() -> (OpenRequests, Metrics) {
        let metrics = Metrics::new().unwrap();
        (OpenRequests::new(&metrics), metrics)
    }

    #[test]
    fn a_session_revocation_ends_only_that_sessions_requests() {
        let (r, m) = registry();
        let a1 = r.open(&[key(1)], None, None).unwrap();
        let a2 = r.open(&[key(1)], None, None).unwrap();
        let b = r.open(&[key(2)], None, None).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r.end_session(&key(1)), 2);
        assert!(a1.ended() && a2.ended());
        assert!(!b.ended());
        assert_eq!(
            m.open_requests_ended.with_label_values(&["flagged"]).get(),
            2
        );
        // Ended, not counted twice: a second revocation ends none.
        assert_eq!(r.end_session(&key(1)), 0);
        // Still filed until they are gone.
        assert_eq!(r.len(), 3);
        drop((a1, a2));
        assert_eq!(r.len(), 1);
        drop(b);
        assert!(r.is_empty());
    }

    /// The attack: a thief holds many slow requests of the stolen session
    /// so that the next one (the WebSocket that matters) would be served
    /// unfiled, out of a revocation's reach. Past [`PER_SESSION`] it is not
    /// filed, which the proxy answers `429`; another session is unaffected,
    /// and one request ending makes room again.
    #[test]
    fn one_session_cannot_hold_more_than_its_share_of_the_registry() {
        let (r, m) = registry();
        let mut held: Vec<_> = (0..PER_SESSION)
            .map(|_| r.open(&[key(1)], None, None).unwrap())
            .collect();
        assert!(r.open(&[key(1)], None, None).is_none());
        assert_eq!(m.open_requests_untracked.get(), 1);
        // A request also naming the full session is not filed either.
        assert!(r.open(&[key(2), key(1)], None, None).is_none());
        assert_eq!(r.len(), PER_SESSION);
        let other = r.open(&[key(2)], None, None).unwrap();
        held.pop();
        assert!(r.open(&[key(1)], None, None).is_some());
        assert_eq!(r.end_session(&key(1)), PER_SESSION - 1);
        assert!(!other.ended());
    }

    #[test]
    fn a_user_revocation_ends_the_users_sessions_and_those_the_engine_says_are_revoked() {
        let (r, _) = registry();
        let alice = UserKey::from_u64(7).unwrap();
        let bob = UserKey::from_u64(8).unwrap();
        let a = r.open(&[key(1)], Some(alice), None).unwrap();
        // Bound to alice after its request started: the engine knows.
        let late = r.open(&[key(3)], None, None).unwrap();
        let b = r.open(&[key(2)], Some(bob), None).unwrap();
        assert_eq!(r.end_user(alice, |s| *s == key(3)), 2);
        assert!(a.ended() && late.ended());
        assert!(!b.ended());
        assert_eq!(r.end_user(alice, |s| *s == key(3)), 0);
    }

    #[test]
    fn a_request_with_two_credentials_ends_with_either() {
        let (r, _) = registry();
        let both = r.open(&[key(1), key(2)], None, None).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r.end_session(&key(2)), 1);
        assert!(both.ended());
        // One request, ended once.
        assert_eq!(r.end_session(&key(1)), 0);
        drop(both);
        assert!(r.is_empty());
    }

    #[test]
    fn a_full_shard_refuses_and_counts() {
        let (r, m) = registry();
        // Sessions whose keys share their first two bytes share a shard.
        let in_shard = |i: usize| {
            let mut b = [9u8; 16];
            b[1] = 0;
            b[2..10].copy_from_slice(&(i as u64).to_le_bytes());
            SessionKey::from_bytes(b)
        };
        let held: Vec<_> = (0..PER_SHARD)
            .map(|i| r.open(&[in_shard(i / PER_SESSION)], None, None).unwrap())
            .collect();
        assert!(r.open(&[in_shard(PER_SHARD)], None, None).is_none());
        assert_eq!(m.open_requests_untracked.get(), 1);
        drop(held);
        assert!(r.is_empty());
        assert!(r.open(&[in_shard(PER_SHARD)], None, None).is_some());
    }

    #[tokio::test]
    async fn an_http1_socket_is_shut_down_after_the_grace_unless_the_request_ended() {
        let (r, m) = registry();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let pair = || {
            let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (server, _) = listener.accept().unwrap();
            use std::os::fd::AsRawFd;
            let fd = server.as_raw_fd();
            let socket = Socket {
                fd,
                cookie: get_socket_cookie(fd).unwrap(),
            };
            (client, server, socket)
        };
        let (client, _server, socket) = pair();
        let held = r.open(&[key(1)], None, Some(socket)).unwrap();
        let (_client2, _server2, socket2) = pair();
        let done = r.open(&[key(1)], None, Some(socket2)).unwrap();
        assert_eq!(r.end_session(&key(1)), 2);
        assert!(held.ended() && done.ended());
        // One completes within the grace: its socket is left alone.
        drop(done);
        let flagged = m.open_requests_ended.with_label_values(&["flagged"]);
        let closed = m.open_requests_ended.with_label_values(&["closed"]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while closed.get() + flagged.get() < 2 {
            assert!(std::time::Instant::now() < deadline, "never shut down");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!((closed.get(), flagged.get()), (1, 1));
        // The held one's peer reads end-of-file.
        use std::io::Read;
        let mut buf = [0u8; 1];
        assert_eq!((&client).read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn a_socket_whose_cookie_changed_is_not_shut_down() {
        let (r, m) = registry();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        use std::os::fd::AsRawFd;
        let fd = server.as_raw_fd();
        let cookie = get_socket_cookie(fd).unwrap();
        // As if the descriptor now named another socket.
        let stale = Socket {
            fd,
            cookie: cookie.wrapping_add(1),
        };
        let open = r.open(&[key(1)], None, Some(stale)).unwrap();
        r.end_session(&key(1));
        assert!(open.ended());
        assert_eq!(
            m.open_requests_ended.with_label_values(&["flagged"]).get(),
            1
        );
        // The right cookie: shut down, and the peer reads end-of-file.
        let open = r
            .open(&[key(2)], None, Some(Socket { fd, cookie }))
            .unwrap();
        r.end_session(&key(2));
        assert!(open.ended());
        assert_eq!(
            m.open_requests_ended.with_label_values(&["closed"]).get(),
            1
        );
        use std::io::Read;
        let mut buf = [0u8; 1];
        assert_eq!((&client).read(&mut buf).unwrap(), 0);
    }
}
