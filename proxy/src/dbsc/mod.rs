//! Device Bound Session Credentials (DBSC) terminated at the edge, for apps
//! that know nothing of it (`docs/bound-sessions.md`, DBSC at the edge).
//!
//! When the app opens a session on a route with `dbsc = "offer"` or
//! `"require"`, Vigil adds `Secure-Session-Registration` to the response.
//! A browser with DBSC signs the challenge with a key of its own and posts
//! the proof to `<[dbsc] path>/register`; Vigil binds the app's session to
//! that key and sets a short-lived bound cookie, which the browser renews at
//! `<path>/refresh` with a fresh proof each time it expires. From then on a
//! request of that session without a current bound cookie is refused
//! (`403 dbsc_proof_failed`, with a new challenge): a copied cookie jar
//! without the key dies with the short cookie.
//!
//! What is decided here is data ([`Check`], [`Reply`]); the proxy writes
//! it, and a `monitor` route only counts what it would refuse. State lives
//! in [`store::Store`], one per process, kept across reloads.
//!
//! **Across the fleet.** What is made once per DBSC session — the
//! registration: session key, DBSC id, public key — goes to the
//! controller ([`Dbsc::set_sink`]) and comes back to every node through
//! the sync stream ([`Dbsc::adopt`]); it is in the node's snapshot too
//! ([`Dbsc::snapshot_section`]). What changes on every refresh needs no
//! sync: the bound cookie, the refresh challenge and the registration
//! offer are sealed (a 128-bit BLAKE3 MAC under keys derived from the
//! fleet's session hash key, each with its own context), so any node of
//! the fleet checks what another issued without a lookup.

pub mod jwt;
pub mod store;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use vigil_engine::SessionKey;

use vigil_fleet::{DbscBinding, DbscKey, SessionId};

use self::jwt::{ProofError, PublicKey};
use self::store::{Bind, Bound, OfferToken, Presented, Standing, Store, StoreError, Token};

/// Headers of the protocol, as the current draft and Chromium 156 name them.
pub const REGISTRATION: &str = "secure-session-registration";
/// The request header carrying a proof.
pub const RESPONSE: &str = "secure-session-response";
/// The request header naming the session on a refresh.
pub const SESSION_ID: &str = "sec-secure-session-id";
/// The response header giving the next challenge.
pub const CHALLENGE: &str = "secure-session-challenge";

/// Longest session id header accepted (Vigil's are 22 characters).
const MAX_ID_BYTES: usize = 64;
/// Seconds a bound cookie is honoured past its `Max-Age`: the browser
/// times it in milliseconds from when it got the response, Vigil in whole
/// seconds from when it sent it, so a cookie the browser still sends may
/// be up to a second older than Vigil's count, plus the request's transit.
const COOKIE_GRACE: u64 = 2;
/// Rate-limit window, in seconds.
const WINDOW: u64 = 60;
/// `Retry-After` for a refresh naming a DBSC id a node of the fleet made
/// that this node does not hold (yet): the fleet's record is usually
/// there within a second.
const UNKNOWN_HERE_RETRY: u64 = 5;

/// A route's use of DBSC (`dbsc`, default `off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteDbsc {
    /// Nothing offered, nothing checked.
    #[default]
    Off,
    /// Registration offered at issuance; bound sessions must prove
    /// possession, others go on (other mechanisms cover them).
    Offer,
    /// As `offer`, and a session that is not bound once the registration
    /// window has passed is refused: browsers without DBSC cannot use the
    /// route.
    Require,
}

/// `[dbsc]`: the endpoints, cookie and limits, shared by every route
/// that uses DBSC. Reloadable except nothing: the store keeps its entries
/// across reloads and applies the new limits to what comes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Path prefix of Vigil's own endpoints (`path`, default
    /// `/.vigil/dbsc`): `<path>/register` and `<path>/refresh`. Never
    /// forwarded, on any route.
    pub path: String,
    /// The bound cookie's name (`cookie_name`, default `__Host-vigil-dbsc`).
    pub cookie_name: String,
    /// Lifetime of a bound cookie, in seconds (`cookie_lifetime_seconds`,
    /// default 600, 1 to 86 400): how long a copied jar outlives the key.
    pub cookie_lifetime: u64,
    /// How long a refresh challenge may be signed after it was issued
    /// (`challenge_lifetime_seconds`, default `cookie_lifetime_seconds` +
    /// 60: the challenge handed out with a bound cookie is the one the
    /// browser signs when that cookie expires).
    pub challenge_lifetime: u64,
    /// How long a registration offer stays open (`registration_window_seconds`,
    /// default 30): also how long a `require` route lets a new session in
    /// before it is bound.
    pub registration_window: u64,
    /// Bound sessions held (`max_sessions`, default 100 000); as many
    /// registration offers may be pending.
    pub max_sessions: usize,
    /// A bound session not refreshed for this long may be dropped to make
    /// room (`idle_timeout_seconds`, default 30 days).
    pub idle_timeout: u64,
    /// Path prefixes kept out of the session's scope (`exclude_paths`):
    /// static assets, which would otherwise each wait on a refresh.
    pub exclude_paths: Vec<String>,
    /// Registration and refresh requests per client address per minute
    /// (`per_client_per_minute`, default 60).
    pub per_client_per_minute: u32,
    /// Registration and refresh requests per session per minute
    /// (`per_session_per_minute`, default 12).
    pub per_session_per_minute: u32,
    /// What registration does while this node's stream to the controller
    /// is down (`when_cut_off`, default `serve`).
    pub when_cut_off: CutOff,
}

/// What a node cut off from its controller does with registrations
/// (`[dbsc] when_cut_off`; docs/bound-sessions.md, "A node cut off from
/// the controller").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CutOff {
    /// `serve`: registrations are taken on this node alone; the other
    /// nodes learn them once the controller is back (the records wait in
    /// the outbox, and are sent again should the outbox drop any).
    #[default]
    Serve,
    /// `refuse_registration`: `503` + `Retry-After` at the registration
    /// endpoint: the browser registers no DBSC session, and the app
    /// session goes on unbound everywhere (under `offer`: the rotating
    /// binding and passive signals; under `require`: refused as unbound),
    /// so that no node holds a binding the others do not. Refreshes and
    /// bound sessions are served as ever.
    RefuseRegistration,
}

impl Dbsc {
    /// Whether `path` is the registration endpoint (as sent; an encoded
    /// variant is `404` at [`Dbsc::endpoint`] anyway).
    pub fn is_registration(settings: &Settings, path: &str) -> bool {
        path.strip_prefix(settings.path.as_str()) == Some("/register")
    }

    /// The answer to a registration on a node cut off from its controller
    /// under `when_cut_off = "refuse_registration"`: a `5xx`, which the
    /// browser takes as "not now" rather than as the end of anything.
    pub fn cut_off() -> Reply {
        Reply {
            headers: vec![("retry-after", "5".to_owned())],
            ..reply(503, "cut_off")
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            path: "/.vigil/dbsc".to_owned(),
            cookie_name: "__Host-vigil-dbsc".to_owned(),
            cookie_lifetime: 600,
            challenge_lifetime: 660,
            registration_window: 30,
            max_sessions: 100_000,
            idle_timeout: 30 * 86_400,
            exclude_paths: Vec::new(),
            per_client_per_minute: 60,
            per_session_per_minute: 12,
            when_cut_off: CutOff::Serve,
        }
    }
}

/// An answer Vigil gives itself at its DBSC endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// What happened, for the metric and the log (`registered`,
    /// `challenged`, `bad_proof`, ...).
    pub outcome: &'static str,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// JSON body; empty for none.
    pub body: String,
}

/// What a request of a session on a DBSC route comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Proven, excluded from scope, or unbound where that is allowed.
    Pass(&'static str),
    /// No valid proof: refuse (`dbsc_proof_failed`), with the challenge
    /// header to send when the session is bound.
    Refuse {
        /// Why, for the metric: `unproven` or `unbound`.
        why: &'static str,
        /// `Secure-Session-Challenge` value, when there is a session.
        challenge: Option<String>,
    },
    /// The store could not be read (a poisoned lock): answered `503`, not
    /// judged.
    Unavailable,
}

/// A request to Vigil's DBSC endpoints, as [`Dbsc::endpoint`] reads it.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// The request method.
    pub method: &'a str,
    /// The path as sent.
    pub path: &'a str,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The request's host, without port (the scope rules name it).
    pub host: &'a str,
    /// The client address, for the per-client rate limit.
    pub client: IpAddr,
    /// The app sessions whose cookies the request carries: a registration
    /// is taken only for a session the registering request holds.
    pub sessions: &'a [SessionKey],
    /// Seconds since the Unix epoch.
    pub now: u64,
}

/// Where this node's new bindings go: the controller's outbox.
pub type Sink = Box<dyn Fn(DbscBinding) + Send + Sync>;

/// Ends the DBSC section of a snapshot.
pub const SECTION_MAGIC: &[u8; 8] = b"VIGDBSC1";

/// Seconds an offer or challenge may be dated ahead of this node's clock
/// (another node's clock may run ahead).
const SKEW: u64 = 60;

/// DBSC on this node: the store, the seal keys and the endpoints' rate
/// limits.
#[derive(Default)]
pub struct Dbsc {
    store: Store,
    keys: Keys,
    /// New bindings made here, for the fleet.
    sink: std::sync::OnceLock<Sink>,
    /// Per client address: every request to the endpoints.
    clients: Limiter,
    /// Per bound session: verified proofs only (a session id is visible to
    /// anyone holding the app cookie; unproven requests must not spend the
    /// owner's budget).
    sessions: Limiter,
}

/// The seal keys, derived from the fleet's session hash key: every node
/// of the fleet derives the same.
struct Keys {
    cookie: [u8; 32],
    challenge: [u8; 32],
    offer: [u8; 32],
    id: [u8; 32],
}

impl Default for Keys {
    /// Keys of this process alone (tests, a node without a key file).
    fn default() -> Self {
        Keys::from_secret(&rand::random())
    }
}

impl Keys {
    fn from_secret(secret: &[u8; 32]) -> Self {
        Keys {
            cookie: blake3::derive_key("vigil 2026-12 dbsc bound cookie", secret),
            challenge: blake3::derive_key("vigil 2026-12 dbsc refresh challenge", secret),
            offer: blake3::derive_key("vigil 2026-12 dbsc registration offer", secret),
            id: blake3::derive_key("vigil 2026-12 dbsc session id", secret),
        }
    }
}

impl std::fmt::Debug for Dbsc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dbsc")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// An offer or a challenge: `body ‖ tag(subject ‖ body)`, the subject
/// (the session key of an offer, the DBSC id of a challenge) bound in
/// without being carried. One layout for both, each under its own key.
fn seal_token(key: &[u8; 32], subject: &[u8], body: [u8; 16]) -> [u8; 32] {
    let mut t = [0u8; 32];
    t[..16].copy_from_slice(&body);
    t[16..].copy_from_slice(&tag(key, &[subject, &body]));
    t
}

/// Whether `t` was sealed by [`seal_token`] under `key` for `subject`.
fn token_opens(key: &[u8; 32], subject: &[u8], t: &[u8; 32]) -> bool {
    same_tag(&t[16..], &tag(key, &[subject, &t[..16]]))
}

/// The first 16 bytes of the keyed BLAKE3 of `parts`.
fn tag(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 16] {
    let mut h = blake3::Hasher::new_keyed(key);
    for p in parts {
        h.update(p);
    }
    let mut t = [0u8; 16];
    t.copy_from_slice(&h.finalize().as_bytes()[..16]);
    t
}

/// Compares two tags in time independent of where they differ.
fn same_tag(a: &[u8], b: &[u8; 16]) -> bool {
    same_bytes(a, b)
}

/// Compares two byte strings of one length in time independent of where
/// they differ.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Fixed one-minute windows per key (a client address or a session id),
/// in a bounded map.
#[derive(Debug, Default)]
struct Limiter {
    counts: Mutex<HashMap<[u8; 17], (u64, u32)>>,
}

/// Keys each rate limiter holds at most; past it, counts of past windows
/// are dropped, then an arbitrary key's count (a flood of addresses can
/// neither grow memory nor lock everyone else out; it can at worst reset
/// someone's count, which the per-session limit and the proofs bound).
const LIMITER_KEYS: usize = 65_536;

/// What [`Dbsc::issued`] did with the sessions a response opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issue {
    /// Offer registration: the `Secure-Session-Registration` value.
    Offer(String),
    /// The request carried a bound session: the new sessions inherit its
    /// binding (the app rotated or renewed its cookie).
    Inherited,
    /// Nothing offered, and why (the metric's `outcome`): `unproven` (an
    /// excluded path), `not_new` (every session was carried by the request
    /// or bound), `not_offered` (offered before, or offers full),
    /// `store_unavailable`.
    None(&'static str),
}

// === impl Dbsc ===

impl Dbsc {
    /// DBSC whose seals are keyed by `secret`, the fleet's session hash
    /// key: every node of the fleet accepts the others' cookies and
    /// challenges.
    pub fn new(secret: &[u8; 32]) -> Self {
        Dbsc {
            keys: Keys::from_secret(secret),
            ..Dbsc::default()
        }
    }

    /// Sends every binding made on this node to `sink` (the controller's
    /// outbox). Once.
    pub fn set_sink(&self, sink: Sink) {
        let _ = self.sink.set(sink);
    }

    fn tell(&self, session: SessionKey, root: Option<SessionKey>, b: &Bound) {
        if let Some(sink) = self.sink.get() {
            sink(DbscBinding {
                session: SessionId(*session.as_bytes()),
                id: SessionId(b.id),
                root: root.map(|r| SessionId(*r.as_bytes())),
                key: DbscKey(b.key.to_bytes()),
                at: b.at,
            });
        }
    }

    /// Takes a binding from the fleet (the controller's record of a
    /// registration another node, or this one, verified). The record is
    /// the first registration the controller took for the session: it
    /// replaces a different one this node may hold (two registrations in
    /// the window before either was heard of end with the first). Returns
    /// what it came to, the kind of
    /// `vigil_proxy_fleet_changes_applied_total`: `dbsc_bound` (taken),
    /// `dbsc_bound_evicting` (taken in place of the entry used least
    /// recently: the store is full), `dbsc_bound_unchanged` (held
    /// already, or an alias of a binding not held here),
    /// `dbsc_bound_replacing` (taken in place of a different registration
    /// of the session made on this node, which lost), `dbsc_bound_full`
    /// (not taken: no room could be made), `dbsc_bound_refused` (an id no
    /// node of this fleet made, or a key that does not read).
    pub fn adopt(&self, settings: &Settings, binding: &DbscBinding, now: u64) -> &'static str {
        let limits = (settings.max_sessions, settings.idle_timeout);
        if !self.id_ok(&binding.id.0) {
            return "dbsc_bound_refused";
        }
        let session = SessionKey::from_bytes(binding.session.0);
        let done = if let Some(root) = binding.root {
            self.store
                .alias(
                    session,
                    SessionKey::from_bytes(root.0),
                    binding.at.min(now),
                    limits,
                )
                .map(|new| if new { Bind::New } else { Bind::Same })
        } else {
            let Some(key) = PublicKey::from_bytes(&binding.key.0) else {
                return "dbsc_bound_refused";
            };
            self.store.bind(
                session,
                key,
                binding.id.0,
                binding.at.min(now),
                now,
                limits,
                true,
            )
        };
        match done {
            Ok(Bind::New) => "dbsc_bound",
            Ok(Bind::Evicted) => "dbsc_bound_evicting",
            Ok(Bind::Replaced) => {
                // The registration race lost here: whoever registered on
                // this node (possibly a thief holding the owner's offer)
                // holds a key the session is no longer bound to, and is
                // refused from now on.
                tracing::warn!(
                    session = %session.short(),
                    "dbsc: the fleet's binding replaced another registration of this session taken here; the local one lost the race"
                );
                "dbsc_bound_replacing"
            }
            Ok(Bind::Same | Bind::Other) => "dbsc_bound_unchanged",
            Err(StoreError::Full) => "dbsc_bound_full",
            Err(StoreError::Unavailable) => "dbsc_bound_unavailable",
        }
    }

    /// Every binding this node holds, as the fleet's records (roots, then
    /// the sessions that inherited one): what a node sends the controller
    /// again when some of its own records may have been lost on the way
    /// (`crate::fleet_sync`). The controller takes a record it holds as
    /// held and refuses one that differs from the first it took, so
    /// sending what came from the fleet again changes nothing.
    pub fn records(&self) -> Vec<DbscBinding> {
        let mut roots = HashMap::new();
        let mut out = Vec::new();
        for entry in self.store.entries() {
            match entry {
                store::Entry::Root {
                    session,
                    id,
                    key,
                    at,
                    ..
                } => {
                    let key = DbscKey(key.to_bytes());
                    roots.insert(session, (id, key.clone()));
                    out.push(DbscBinding {
                        session: SessionId(*session.as_bytes()),
                        id: SessionId(id),
                        root: None,
                        key,
                        at,
                    });
                }
                store::Entry::Alias { session, root, at } => {
                    if let Some((id, key)) = roots.get(&root) {
                        out.push(DbscBinding {
                            session: SessionId(*session.as_bytes()),
                            id: SessionId(*id),
                            root: Some(SessionId(*root.as_bytes())),
                            key: key.clone(),
                            at,
                        });
                    }
                }
            }
        }
        out
    }

    /// The DBSC id of a registration: of `offer` by `key`, for `session`.
    /// Its first half is a keyed hash of the offer and the key (the same
    /// registration gets the same id on every node, so a registration
    /// replayed on another node is the very binding the controller
    /// already holds), in `session`'s shard; its second half seals the
    /// first under the fleet's key, so any node tells an id a node made
    /// from a made-up one without holding it.
    fn new_id(&self, session: &SessionKey, offer: &OfferToken, key: &PublicKey) -> Token {
        let mut id: Token = [0; 16];
        let half = tag(&self.keys.id, &[b"id", offer, &key.to_bytes()]);
        id[..8].copy_from_slice(&half[..8]);
        // SHARDS divides 256: the low bits pick the shard.
        id[0] = (id[0] & 0xf0) | (session.as_bytes()[0] & 0x0f);
        let seal = tag(&self.keys.id, &[b"seal", &id[..8]]);
        id[8..].copy_from_slice(&seal[..8]);
        id
    }

    /// Whether `id` is one a node of this fleet made.
    fn id_ok(&self, id: &Token) -> bool {
        same_bytes(&id[8..], &tag(&self.keys.id, &[b"seal", &id[..8]])[..8])
    }

    /// The bindings as a section of the node's snapshot (written inside
    /// its MAC, `crate::snapshot`): each entry, then the count (u32 LE),
    /// then [`SECTION_MAGIC`].
    pub fn snapshot_section(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut n = 0u32;
        for entry in self.store.entries() {
            match entry {
                store::Entry::Root {
                    session,
                    id,
                    key,
                    counter,
                    at,
                    touched,
                } => {
                    let key = key.to_bytes();
                    let Ok(len) = u16::try_from(key.len()) else {
                        continue;
                    };
                    out.push(1);
                    out.extend_from_slice(session.as_bytes());
                    out.extend_from_slice(&id);
                    out.extend_from_slice(&counter.to_le_bytes());
                    out.extend_from_slice(&at.to_le_bytes());
                    out.extend_from_slice(&touched.to_le_bytes());
                    out.extend_from_slice(&len.to_le_bytes());
                    out.extend_from_slice(&key);
                }
                store::Entry::Alias { session, root, at } => {
                    out.push(2);
                    out.extend_from_slice(session.as_bytes());
                    out.extend_from_slice(root.as_bytes());
                    out.extend_from_slice(&at.to_le_bytes());
                }
            }
            n += 1;
        }
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(SECTION_MAGIC);
        out
    }

    /// Takes back a [`Dbsc::snapshot_section`] (authenticated by the
    /// snapshot's MAC); bindings idle past `idle_timeout` are left out,
    /// and past `2 × max_sessions` entries (a snapshot written under a
    /// larger `max_sessions`) the rest are parsed but not taken. Returns
    /// the entries taken, or `None` for a section that does not parse
    /// (nothing is taken then; the caller restores the engine's part
    /// anyway).
    pub fn restore_section(&self, settings: &Settings, section: &[u8], now: u64) -> Option<usize> {
        let body = section.strip_suffix(SECTION_MAGIC.as_slice())?;
        let split = body.len().checked_sub(4)?;
        let (mut rest, count) = body.split_at(split);
        let count = u32::from_le_bytes(count.try_into().ok()?);
        let limit = settings.max_sessions.saturating_mul(2);
        // Every entry is at least 41 bytes: a count the bytes cannot hold
        // is refused before anything is read.
        if usize::try_from(count).ok()?.saturating_mul(41) > rest.len() {
            return None;
        }
        fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            if rest.len() < n {
                return None;
            }
            let (head, tail) = rest.split_at(n);
            *rest = tail;
            Some(head)
        }
        let key16 = |b: &[u8]| -> Option<[u8; 16]> { b.try_into().ok() };
        let mut entries = Vec::new();
        for _ in 0..count {
            let entry = match take(&mut rest, 1)?[0] {
                1 => {
                    let session = SessionKey::from_bytes(key16(take(&mut rest, 16)?)?);
                    let id = key16(take(&mut rest, 16)?)?;
                    let counter = u32::from_le_bytes(take(&mut rest, 4)?.try_into().ok()?);
                    let at = u64::from_le_bytes(take(&mut rest, 8)?.try_into().ok()?);
                    let touched = u64::from_le_bytes(take(&mut rest, 8)?.try_into().ok()?);
                    let len = u16::from_le_bytes(take(&mut rest, 2)?.try_into().ok()?);
                    let key = PublicKey::from_bytes(take(&mut rest, usize::from(len))?)?;
                    store::Entry::Root {
                        session,
                        id,
                        key,
                        counter,
                        at,
                        touched,
                    }
                }
                2 => store::Entry::Alias {
                    session: SessionKey::from_bytes(key16(take(&mut rest, 16)?)?),
                    root: SessionKey::from_bytes(key16(take(&mut rest, 16)?)?),
                    at: u64::from_le_bytes(take(&mut rest, 8)?.try_into().ok()?),
                },
                _ => return None,
            };
            if entries.len() < limit {
                entries.push(entry);
            }
        }
        if !rest.is_empty() {
            return None;
        }
        let limits = (settings.max_sessions, settings.idle_timeout);
        Some(
            entries
                .into_iter()
                .filter(|e| self.store.restore(e.clone(), now, limits))
                .count(),
        )
    }

    /// The store, for reports.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A sealed registration offer for `session`, made at `now`:
    /// `at ‖ nonce ‖ tag`.
    fn offer_token(&self, session: &SessionKey, now: u64) -> OfferToken {
        let mut body = [0u8; 16];
        body[..8].copy_from_slice(&now.to_be_bytes());
        body[8..].copy_from_slice(&rand::random::<[u8; 8]>());
        seal_token(&self.keys.offer, session.as_bytes(), body)
    }

    /// Which of `carried` the offer `token` was made for, if its seal
    /// verifies for one of them and it is within `window`.
    fn offered(
        &self,
        token: &OfferToken,
        carried: &[SessionKey],
        now: u64,
        window: u64,
    ) -> Option<SessionKey> {
        // The seal first: nothing the client chose is computed with before
        // it verifies.
        let session = carried
            .iter()
            .copied()
            .find(|s| token_opens(&self.keys.offer, s.as_bytes(), token))?;
        let at = u64::from_be_bytes(token[..8].try_into().ok()?);
        if at.saturating_add(window) <= now || at > now.saturating_add(SKEW) {
            return None;
        }
        Some(session)
    }

    /// A sealed refresh challenge for DBSC session `id` at refresh counter
    /// `counter`: `at ‖ counter ‖ nonce ‖ tag`.
    fn challenge(&self, id: &Token, counter: u32, now: u64) -> [u8; 32] {
        let mut body = [0u8; 16];
        body[..8].copy_from_slice(&now.to_be_bytes());
        body[8..12].copy_from_slice(&counter.to_be_bytes());
        body[12..].copy_from_slice(&rand::random::<[u8; 4]>());
        seal_token(&self.keys.challenge, id, body)
    }

    /// A challenge's issue time and counter, if its seal verifies for `id`.
    fn challenge_of(&self, id: &Token, t: &[u8; 32]) -> Option<(u64, u32)> {
        if !token_opens(&self.keys.challenge, id, t) {
            return None;
        }
        Some((
            u64::from_be_bytes(t[..8].try_into().ok()?),
            u32::from_be_bytes(t[8..12].try_into().ok()?),
        ))
    }

    /// A sealed bound cookie: `id ‖ until ‖ counter ‖ tag` (public for
    /// the benches and tests, which need a cookie as issued).
    pub fn sealed_cookie(&self, id: &Token, until: u64, counter: u32) -> String {
        let mut c = [0u8; 44];
        c[..16].copy_from_slice(id);
        c[16..24].copy_from_slice(&until.to_be_bytes());
        c[24..28].copy_from_slice(&counter.to_be_bytes());
        let mac = tag(&self.keys.cookie, &[&c[..28]]);
        c[28..].copy_from_slice(&mac);
        URL_SAFE_NO_PAD.encode(c)
    }

    /// What a bound cookie says, if its seal verifies.
    fn presented(&self, value: &str) -> Option<Presented> {
        let c: [u8; 44] = decode_n(value)?;
        if !same_tag(&c[28..], &tag(&self.keys.cookie, &[&c[..28]])) {
            return None;
        }
        Some(Presented {
            id: c[..16].try_into().ok()?,
            until: u64::from_be_bytes(c[16..24].try_into().ok()?),
            counter: u32::from_be_bytes(c[24..28].try_into().ok()?),
        })
    }

    /// The `Secure-Session-Challenge` value for `id` at `counter`.
    fn challenge_header(&self, id: &Token, counter: u32, now: u64) -> String {
        format!(
            "\"{}\";id=\"{}\"",
            URL_SAFE_NO_PAD.encode(self.challenge(id, counter, now)),
            encode(id)
        )
    }

    /// The session instructions, a sealed bound cookie at `counter` and the
    /// next challenge.
    fn granted(
        &self,
        s: &Settings,
        outcome: &'static str,
        id: &Token,
        counter: u32,
        host: &str,
        now: u64,
    ) -> Reply {
        let until = now
            .saturating_add(s.cookie_lifetime)
            .saturating_add(COOKIE_GRACE);
        let cookie = self.sealed_cookie(id, until, counter);
        granted(
            s,
            outcome,
            id,
            &cookie,
            self.challenge_header(id, counter, now),
            host,
        )
    }

    /// The `Secure-Session-Registration` value for `session`, a session
    /// the app just opened (with `also`, the others the same response
    /// opened), or `None` when no offer can be made (offered before,
    /// bound, or the offers are full).
    pub fn offer(
        &self,
        settings: &Settings,
        session: SessionKey,
        also: Vec<SessionKey>,
        now: u64,
    ) -> Option<String> {
        let challenge = self.offer_token(&session, now);
        self.store
            .offer(
                session,
                also,
                now,
                settings.registration_window,
                settings.max_sessions,
                challenge,
            )
            .then(|| {
                format!(
                    "(ES256 RS256);path=\"{}/register\";challenge=\"{}\"",
                    settings.path,
                    URL_SAFE_NO_PAD.encode(challenge)
                )
            })
    }

    /// The app's response opened `new` (sessions new to the engine) in
    /// answer to a request for `path` (normalised) carrying the sessions
    /// `carried`. Decides what DBSC does with them:
    ///
    /// - a session the request itself carried, or one bound already, is
    ///   never offered (a thief presenting a victim's unbound cookie that
    ///   the app sets again must not register his key for it);
    /// - a request that carried a bound session passes its binding on to
    ///   the new sessions, proven or not (the app rotated or renewed its
    ///   cookie: the new session needs the same key's proofs, and whoever
    ///   asked gets no offer of his own for it);
    /// - a request on an excluded path (no proof asked) gets no offer;
    /// - otherwise the first new session is offered, and the others are
    ///   bound with it when it registers.
    pub fn issued(
        &self,
        settings: &Settings,
        carried: &[SessionKey],
        path: &str,
        new: &[SessionKey],
        now: u64,
    ) -> Issue {
        let fresh: Vec<SessionKey> = new
            .iter()
            .filter(|k| !carried.contains(k) && !self.store.is_bound(k))
            .copied()
            .collect();
        let Some((&first, rest)) = fresh.split_first() else {
            return Issue::None("not_new");
        };
        if let Some(root) = carried.iter().find_map(|k| self.store.root(k)) {
            let bound = self.store.bound(&root);
            let limits = (settings.max_sessions, settings.idle_timeout);
            for key in &fresh {
                match self.store.alias(*key, root, now, limits) {
                    Ok(true) => {
                        if let Some(b) = &bound {
                            self.tell(*key, Some(root), b);
                        }
                    }
                    Ok(false) => {}
                    Err(StoreError::Full) => return Issue::None("store_full"),
                    Err(StoreError::Unavailable) => return Issue::None("store_unavailable"),
                }
            }
            return Issue::Inherited;
        }
        if excluded(settings, path) {
            return Issue::None("unproven");
        }
        match self.offer(settings, first, rest.to_vec(), now) {
            Some(value) => Issue::Offer(value),
            None => Issue::None("not_offered"),
        }
    }

    /// Judges a request of `session` on a route with `mode` (not `Off`),
    /// for `path`, carrying `headers`.
    pub fn check(
        &self,
        settings: &Settings,
        mode: RouteDbsc,
        session: &SessionKey,
        headers: &HeaderMap,
        path: &str,
        now: u64,
    ) -> Check {
        if excluded(settings, path) {
            return Check::Pass("excluded");
        }
        // A cookie sealed to outlive any this fleet issues (a node whose
        // clock runs ahead) proves nothing.
        let latest = now
            .saturating_add(settings.cookie_lifetime)
            .saturating_add(COOKIE_GRACE)
            .saturating_add(SKEW);
        let cookie = bound_cookie(headers, &settings.cookie_name)
            .and_then(|v| self.presented(v))
            .filter(|c| c.until <= latest);
        match self
            .store
            .standing(session, cookie.as_ref(), now, settings.registration_window)
        {
            Standing::Proven => Check::Pass("proven"),
            Standing::Unbound { pending: true } => Check::Pass("pending"),
            Standing::Unbound { pending: false } if mode == RouteDbsc::Offer => {
                Check::Pass("unbound")
            }
            Standing::Unbound { .. } => Check::Refuse {
                why: "unbound",
                challenge: None,
            },
            Standing::Unproven { id, counter } => Check::Refuse {
                why: "unproven",
                challenge: Some(self.challenge_header(&id, counter, now)),
            },
            Standing::Unavailable => Check::Unavailable,
        }
    }

    /// Whether `settings.path` covers `path`, as sent or once normalised
    /// (`/.vigil/dbsc/%72egister` is Vigil's too, and gets `404` rather
    /// than reaching the app): the request is Vigil's.
    pub fn owns(settings: &Settings, path: &str) -> bool {
        let covers = |path: &str| {
            path.strip_prefix(settings.path.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '?']))
        };
        covers(path) || crate::path::normalise(path).is_ok_and(|p| covers(p.as_ref()))
    }

    /// Answers a request to one of Vigil's DBSC endpoints.
    pub fn endpoint(&self, settings: &Settings, ask: &Ask<'_>) -> Reply {
        let Ask {
            method,
            path,
            headers,
            host,
            client,
            sessions,
            now,
        } = *ask;
        let rest = path.strip_prefix(settings.path.as_str()).unwrap_or("");
        let refresh = match rest {
            "/register" => false,
            "/refresh" => true,
            _ => return reply(404, "not_found"),
        };
        if method != "POST" {
            return Reply {
                headers: vec![("allow", "POST".to_owned())],
                ..reply(405, "bad_method")
            };
        }
        if !self
            .clients
            .allow(&client_key(client), now, settings.per_client_per_minute)
        {
            return limited();
        }
        let result = if refresh {
            self.refresh(settings, headers, host, now)
        } else {
            self.register(settings, headers, host, sessions, now)
        };
        result.unwrap_or_else(|e| match e {
            StoreError::Full => Reply {
                headers: vec![("retry-after", "60".to_owned())],
                ..reply(503, "store_full")
            },
            StoreError::Unavailable => reply(500, "store_unavailable"),
        })
    }

    fn register(
        &self,
        s: &Settings,
        headers: &HeaderMap,
        host: &str,
        carried: &[SessionKey],
        now: u64,
    ) -> Result<Reply, StoreError> {
        let Some(token) = one(headers, RESPONSE) else {
            return Ok(reply(400, "no_proof"));
        };
        let proof = match jwt::verify_registration(token) {
            Ok(p) => p,
            Err(e) => return Ok(proof_refused(e)),
        };
        let (Some(challenge), Some(key)) = (decode_n::<32>(&proof.jti), proof.key) else {
            return Ok(reply(401, "unknown_challenge"));
        };
        // Only a request holding the offered session's cookie registers for
        // it: a challenge seen by someone else is of no use to him. The
        // offer may have been made by another node: its seal says for
        // which session and when.
        let Some(session) = self.offered(&challenge, carried, now, s.registration_window) else {
            return Ok(reply(401, "unknown_challenge"));
        };
        let also = self.store.take_offer(&challenge, &session)?;
        let id = self.new_id(&session, &challenge, &key);
        let bound = self.store.bind(
            session,
            key,
            id,
            now,
            now,
            (s.max_sessions, s.idle_timeout),
            false,
        )?;
        if bound != Bind::New {
            // The offer is spent: its session is bound, here or (the
            // fleet's record) on another node.
            return Ok(reply(401, "already_bound"));
        }
        if let Some(b) = self.store.bound(&session) {
            self.tell(session, None, &b);
            let limits = (s.max_sessions, s.idle_timeout);
            for other in also {
                // Bound already: the others go on unbound if there is no
                // room (a 503 now would lose the registration made).
                if self.store.alias(other, session, now, limits) == Ok(true) {
                    self.tell(other, Some(session), &b);
                }
            }
        }
        Ok(self.granted(s, "registered", &id, 0, host, now))
    }

    fn refresh(
        &self,
        s: &Settings,
        headers: &HeaderMap,
        host: &str,
        now: u64,
    ) -> Result<Reply, StoreError> {
        let Some(id) = one(headers, SESSION_ID)
            .map(jwt::unquote)
            .filter(|v| v.len() <= MAX_ID_BYTES)
            .and_then(decode)
        else {
            return Ok(reply(400, "bad_session_id"));
        };
        // `404` ends the browser's DBSC session: only for an id no node of
        // this fleet made. An id a node made that this one does not hold
        // (the record on its way, the controller away, a node restarted
        // without its snapshot) is `503`: the browser keeps its session
        // and comes back, here or on a node that holds it.
        if !self.id_ok(&id) {
            return Ok(reply(404, "unknown_session"));
        }
        let Some(bound) = self.store.by_id(&id)? else {
            return Ok(Reply {
                headers: vec![("retry-after", UNKNOWN_HERE_RETRY.to_string())],
                ..reply(503, "unknown_here")
            });
        };
        let challenge_again = |outcome| -> Result<Reply, StoreError> {
            Ok(Reply {
                headers: vec![(CHALLENGE, self.challenge_header(&id, bound.counter, now))],
                ..reply(403, outcome)
            })
        };
        let Some(token) = one(headers, RESPONSE) else {
            // A new challenge each time: the ones handed out before stay
            // good while fresh, so anyone holding the app cookie can ask
            // without making the owner's proof stale.
            return challenge_again("challenged");
        };
        let proof = match jwt::verify_refresh(token, &bound.key) {
            Ok(p) => p,
            Err(e) => return Ok(proof_refused(e)),
        };
        // Verified proofs only count against the session's budget.
        let mut skey = [0u8; 17];
        skey[0] = b'i';
        skey[1..].copy_from_slice(&id);
        if !self.sessions.allow(&skey, now, s.per_session_per_minute) {
            return Ok(limited());
        }
        // Signed by the key, but not a challenge of this session (made
        // up), too old, or minted before a refresh this node has seen
        // (stale or replayed). The protocol's retry path: a browser that
        // raced a rotation signs the new one; a replayer cannot.
        let Some((at, counter)) =
            decode_n::<32>(&proof.jti).and_then(|c| self.challenge_of(&id, &c))
        else {
            return challenge_again("stale_or_replayed");
        };
        if at.saturating_add(s.challenge_lifetime) <= now || at > now.saturating_add(SKEW) {
            return challenge_again("expired_challenge");
        }
        let Some(next) = self.store.refreshed(&id, counter, now)? else {
            return challenge_again("stale_or_replayed");
        };
        Ok(self.granted(s, "refreshed", &id, next, host, now))
    }
}

// === impl Limiter ===

impl Limiter {
    /// Counts one request for `key`; false past `limit` in this window.
    fn allow(&self, key: &[u8; 17], now: u64, limit: u32) -> bool {
        let Ok(mut counts) = self.counts.lock() else {
            return false;
        };
        let window = now / WINDOW;
        if !counts.contains_key(key) && counts.len() >= LIMITER_KEYS {
            counts.retain(|_, (w, _)| *w == window);
            if counts.len() >= LIMITER_KEYS
                && let Some(evicted) = counts.keys().next().copied()
            {
                counts.remove(&evicted);
            }
        }
        let entry = counts.entry(*key).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1 <= limit
    }
}

/// Writes `reply` as the whole response. Never cached, never framed.
pub async fn write(
    session: &mut pingora_proxy::Session,
    reply: Reply,
) -> pingora_error::Result<()> {
    let mut resp =
        pingora_http::ResponseHeader::build(reply.status, Some(reply.headers.len() + 4))?;
    for (name, value) in reply.headers {
        resp.append_header(name, value)?;
    }
    resp.append_header("cache-control", "no-store")?;
    resp.append_header("x-frame-options", "DENY")?;
    resp.append_header("content-length", reply.body.len().to_string())?;
    session
        .write_response_header(Box::new(resp), reply.body.is_empty())
        .await?;
    if !reply.body.is_empty() {
        session
            .write_response_body(Some(bytes::Bytes::from(reply.body)), true)
            .await?;
    }
    Ok(())
}

/// The session instructions, the bound cookie and the next challenge.
fn granted(
    s: &Settings,
    outcome: &'static str,
    id: &Token,
    cookie: &str,
    challenge: String,
    host: &str,
) -> Reply {
    let attributes = "Path=/; Secure; HttpOnly; SameSite=Lax";
    let excluded: Vec<_> = s
        .exclude_paths
        .iter()
        .map(|p| serde_json::json!({ "type": "exclude", "domain": host, "path": p }))
        .collect();
    let body = serde_json::json!({
        "session_identifier": encode(id),
        "refresh_url": format!("{}/refresh", s.path),
        "scope": { "include_site": false, "scope_specification": excluded },
        "credentials": [{ "type": "cookie", "name": s.cookie_name, "attributes": attributes }],
    });
    Reply {
        status: 200,
        outcome,
        headers: vec![
            (
                "set-cookie",
                format!(
                    "{}={}; Max-Age={}; {attributes}",
                    s.cookie_name, cookie, s.cookie_lifetime
                ),
            ),
            (CHALLENGE, challenge),
            ("content-type", "application/json".to_owned()),
        ],
        body: body.to_string(),
    }
}

fn reply(status: u16, outcome: &'static str) -> Reply {
    Reply {
        status,
        outcome,
        headers: Vec::new(),
        body: String::new(),
    }
}

/// `503` with `Retry-After`: a browser backs off from a 5xx and keeps its
/// session, where any 4xx but 403 would end it.
fn limited() -> Reply {
    Reply {
        headers: vec![("retry-after", WINDOW.to_string())],
        ..reply(503, "rate_limited")
    }
}

/// A proof that does not verify: `400` when it is not a proof at all,
/// `401` otherwise. Either ends the sender's DBSC session at the browser;
/// the binding here stays (a thief must not be able to unbind the owner).
fn proof_refused(e: ProofError) -> Reply {
    match e {
        ProofError::Malformed => reply(400, "malformed_proof"),
        ProofError::BadType => reply(401, "bad_typ"),
        ProofError::BadAlgorithm => reply(401, "bad_alg"),
        ProofError::BadKey => reply(401, "bad_key"),
        ProofError::BadSignature => reply(401, "bad_signature"),
    }
}

/// Whether `path` (normalised) is under one of the excluded prefixes, on a
/// segment boundary: `/static` excludes `/static/a`, not `/static-admin`.
fn excluded(settings: &Settings, path: &str) -> bool {
    settings
        .exclude_paths
        .iter()
        .any(|p| vigil_rules::prefix_matches(p, path))
}

/// The only value of header `name`; `None` when absent, repeated or not text.
fn one<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()
}

/// The value of the bound cookie, when the request carries it exactly once.
fn bound_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut found = None;
    // Every `Cookie` header (the request's header size cap bounds them):
    // stopping early would miss a second copy placed after the cut.
    for value in headers.get_all(http::header::COOKIE).iter() {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            if let Some((n, v)) = pair.trim().split_once('=')
                && n == name
            {
                if found.is_some() {
                    return None;
                }
                found = Some(v);
            }
        }
    }
    found
}

/// Removes the bound cookie from the `Cookie` header sent to the app: it is
/// Vigil's, and a credential of sorts. Returns the rewritten value when it
/// was there. Split as bytes: a `Cookie` value that is not UTF-8 must not
/// carry the bound cookie through, and its other pairs go on as they were.
pub fn without_bound_cookie(headers: &HeaderMap, name: &str) -> Option<Vec<u8>> {
    let mut seen = false;
    let mut kept: Vec<&[u8]> = Vec::new();
    for value in headers.get_all(http::header::COOKIE).iter() {
        for pair in value.as_bytes().split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            let pair_name = pair.split(|&b| b == b'=').next().unwrap_or_default();
            if pair.contains(&b'=') && pair_name == name.as_bytes() {
                seen = true;
            } else if !pair.is_empty() {
                kept.push(pair);
            }
        }
    }
    seen.then(|| kept.join(&b"; "[..]))
}

fn client_key(ip: IpAddr) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = b'c';
    match ip {
        IpAddr::V4(v4) => k[1..5].copy_from_slice(&v4.octets()),
        // A /64 is one client: a host chooses freely within it.
        IpAddr::V6(v6) => k[1..9].copy_from_slice(&v6.octets()[..8]),
    }
    k
}

fn encode(t: &Token) -> String {
    URL_SAFE_NO_PAD.encode(t)
}

fn decode(s: &str) -> Option<Token> {
    decode_n(s)
}

/// `N` bytes from unpadded base64url of exactly their length.
fn decode_n<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != (N * 4).div_ceil(3) {
        return None;
    }
    URL_SAFE_NO_PAD.decode(s).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_cookie_is_read_once_and_stripped() {
        let mut h = HeaderMap::new();
        h.append("cookie", "a=1; __Host-vigil-dbsc=x; b=2".parse().unwrap());
        assert_eq!(bound_cookie(&h, "__Host-vigil-dbsc"), Some("x"));
        assert_eq!(
            without_bound_cookie(&h, "__Host-vigil-dbsc").as_deref(),
            Some(&b"a=1; b=2"[..])
        );
        // A value that is not UTF-8 does not carry it through.
        let mut raw = HeaderMap::new();
        raw.append(
            "cookie",
            http::HeaderValue::from_bytes(b"a=\xff; __Host-vigil-dbsc=x").unwrap(),
        );
        assert_eq!(
            without_bound_cookie(&raw, "__Host-vigil-dbsc").as_deref(),
            Some(&b"a=\xff"[..])
        );
        h.append("cookie", "__Host-vigil-dbsc=y".parse().unwrap());
        // Twice: neither counts.
        assert_eq!(bound_cookie(&h, "__Host-vigil-dbsc"), None);
    }

    #[test]
    fn bound_cookie_is_found_past_many_cookie_headers() {
        let mut h = HeaderMap::new();
        for i in 0..20 {
            h.append("cookie", format!("c{i}=v").parse().unwrap());
        }
        h.append("cookie", "__Host-vigil-dbsc=late".parse().unwrap());
        assert_eq!(bound_cookie(&h, "__Host-vigil-dbsc"), Some("late"));
    }

    #[test]
    fn exclusions_end_on_a_segment() {
        let s = Settings {
            exclude_paths: vec!["/static".to_owned()],
            ..Settings::default()
        };
        assert!(excluded(&s, "/static"));
        assert!(excluded(&s, "/static/app.js"));
        assert!(!excluded(&s, "/static-admin"));
        assert!(!excluded(&s, "/staticx/a"));
    }

    #[test]
    fn owns_only_its_prefix() {
        let s = Settings::default();
        assert!(Dbsc::owns(&s, "/.vigil/dbsc/%72egister"));
        assert!(Dbsc::owns(&s, "/x/../.vigil/dbsc/register"));
        assert!(Dbsc::owns(&s, "/.vigil/dbsc/refresh"));
        assert!(Dbsc::owns(&s, "/.vigil/dbsc"));
        assert!(!Dbsc::owns(&s, "/.vigil/dbscx"));
        assert!(!Dbsc::owns(&s, "/app"));
    }

    fn key() -> ring::signature::EcdsaKeyPair {
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap()
    }

    fn proof(k: &ring::signature::EcdsaKeyPair, jwk: bool, jti: &str) -> String {
        use ring::signature::KeyPair;
        let p = k.public_key().as_ref();
        let mut h = serde_json::json!({"alg": "ES256", "typ": "dbsc+jwt"});
        if jwk {
            h["jwk"] = serde_json::json!({"kty": "EC", "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..])});
        }
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(h.to_string()),
            URL_SAFE_NO_PAD.encode(serde_json::json!({ "jti": jti }).to_string())
        );
        let sig = k
            .sign(&ring::rand::SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, v.parse().unwrap());
        }
        h
    }

    /// Time-bound paths, with the clock as an argument: an offer past its
    /// window and a challenge past its lifetime.
    #[test]
    fn offers_and_challenges_expire() {
        let s = Settings::default();
        let d = Dbsc::default();
        let ip = IpAddr::from([127, 0, 0, 1]);
        let k = key();
        let session = SessionKey::from_bytes([3; 16]);
        let offer = d.offer(&s, session, Vec::new(), 1_000).unwrap();
        let c = offer
            .split("challenge=\"")
            .nth(1)
            .unwrap()
            .trim_end_matches('"');
        let late = headers(&[(RESPONSE, &proof(&k, true, c))]);
        let r = d.endpoint(
            &s,
            &Ask {
                method: "POST",
                path: "/.vigil/dbsc/register",
                headers: &late,
                host: "h",
                client: ip,
                sessions: &[session],
                now: 1_000 + s.registration_window,
            },
        );
        assert_eq!((r.status, r.outcome), (401, "unknown_challenge"));

        let session = SessionKey::from_bytes([4; 16]);
        let offer = d.offer(&s, session, Vec::new(), 2_000).unwrap();
        let c = offer
            .split("challenge=\"")
            .nth(1)
            .unwrap()
            .trim_end_matches('"');
        let first = headers(&[(RESPONSE, &proof(&k, true, c))]);
        let r = d.endpoint(
            &s,
            &Ask {
                method: "POST",
                path: "/.vigil/dbsc/register",
                headers: &first,
                host: "h",
                client: ip,
                sessions: &[session],
                now: 2_001,
            },
        );
        assert_eq!(r.status, 200);
        let next = r
            .headers
            .iter()
            .find(|(n, _)| *n == CHALLENGE)
            .unwrap()
            .1
            .clone();
        let (c, id) = (
            next.split('"').nth(1).unwrap(),
            next.split('"').nth(3).unwrap(),
        );
        let stale = headers(&[(SESSION_ID, id), (RESPONSE, &proof(&k, false, c))]);
        let r = d.endpoint(
            &s,
            &Ask {
                method: "POST",
                path: "/.vigil/dbsc/refresh",
                headers: &stale,
                host: "h",
                client: ip,
                sessions: &[session],
                now: 2_001 + s.challenge_lifetime,
            },
        );
        assert_eq!((r.status, r.outcome), (403, "expired_challenge"));
        let next = r
            .headers
            .iter()
            .find(|(n, _)| *n == CHALLENGE)
            .unwrap()
            .1
            .clone();
        let c = next.split('"').nth(1).unwrap();
        let fresh = headers(&[(SESSION_ID, id), (RESPONSE, &proof(&k, false, c))]);
        let r = d.endpoint(
            &s,
            &Ask {
                method: "POST",
                path: "/.vigil/dbsc/refresh",
                headers: &fresh,
                host: "h",
                client: ip,
                sessions: &[session],
                now: 2_002 + s.challenge_lifetime,
            },
        );
        assert_eq!((r.status, r.outcome), (200, "refreshed"));
    }

    /// Two nodes of one fleet (one secret): B knows A's binding only from
    /// the record A sent, and takes A's cookie and challenge; a node of
    /// another secret takes neither; a tampered cookie is nobody's.
    #[test]
    fn another_node_of_the_fleet_takes_the_cookie_and_the_challenge() {
        let s = Settings::default();
        let (a, b) = (Dbsc::new(&[7; 32]), Dbsc::new(&[7; 32]));
        let sent = std::sync::Arc::new(Mutex::new(Vec::new()));
        let to = sent.clone();
        a.set_sink(Box::new(move |r| to.lock().unwrap().push(r)));
        let ip = IpAddr::from([127, 0, 0, 1]);
        let k = key();
        let session = SessionKey::from_bytes([3; 16]);
        // Offered by B, registered at A: the offer's seal is the fleet's.
        let offer = b.offer(&s, session, Vec::new(), 1_000).unwrap();
        let c = offer
            .split("challenge=\"")
            .nth(1)
            .unwrap()
            .trim_end_matches('"');
        let h = headers(&[(RESPONSE, &proof(&k, true, c))]);
        let ask = |path, headers, now| Ask {
            method: "POST",
            path,
            headers,
            host: "h",
            client: ip,
            sessions: std::slice::from_ref(&session),
            now,
        };
        let r = a.endpoint(&s, &ask("/.vigil/dbsc/register", &h, 1_001));
        assert_eq!((r.status, r.outcome), (200, "registered"));
        let records = sent.lock().unwrap().clone();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].session.0, *session.as_bytes());
        let set = &r
            .headers
            .iter()
            .find(|(n, _)| *n == "set-cookie")
            .unwrap()
            .1;
        let value = set
            .split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_owned();
        let jar = headers(&[("cookie", &format!("{}={value}", s.cookie_name))]);
        // B before the record: the session is not bound there (its offer
        // is pending there).
        assert_eq!(
            b.check(&s, RouteDbsc::Offer, &session, &jar, "/", 1_002),
            Check::Pass("pending")
        );
        assert_eq!(b.adopt(&s, &records[0], 1_002), "dbsc_bound");
        assert_eq!(b.adopt(&s, &records[0], 1_002), "dbsc_bound_unchanged");
        assert_eq!(
            b.check(&s, RouteDbsc::Require, &session, &jar, "/", 1_002),
            Check::Pass("proven")
        );
        let other = Dbsc::new(&[8; 32]);
        // A node of another fleet takes neither the record (its id is not
        // one of its fleet's) nor the cookie.
        assert_eq!(other.adopt(&s, &records[0], 1_002), "dbsc_bound_refused");
        assert!(matches!(
            other.check(&s, RouteDbsc::Require, &session, &jar, "/", 1_002),
            Check::Refuse { .. }
        ));
        let mut forged = value.clone().into_bytes();
        forged[20] = if forged[20] == b'A' { b'B' } else { b'A' };
        let forged = headers(&[(
            "cookie",
            &format!("{}={}", s.cookie_name, String::from_utf8(forged).unwrap()),
        )]);
        assert!(matches!(
            b.check(&s, RouteDbsc::Require, &session, &forged, "/", 1_002),
            Check::Refuse { .. }
        ));
        // The challenge A handed out, signed and sent to B: refreshed.
        let next = &r.headers.iter().find(|(n, _)| *n == CHALLENGE).unwrap().1;
        let (c, id) = (
            next.split('"').nth(1).unwrap(),
            next.split('"').nth(3).unwrap(),
        );
        let p = proof(&k, false, c);
        let h = headers(&[(SESSION_ID, id), (RESPONSE, &p)]);
        let r = b.endpoint(&s, &ask("/.vigil/dbsc/refresh", &h, 1_003));
        assert_eq!((r.status, r.outcome), (200, "refreshed"));
        // The same proof again at B: stale. At A, which has not seen the
        // refresh, it is taken once (the window the docs state).
        let r = b.endpoint(&s, &ask("/.vigil/dbsc/refresh", &h, 1_004));
        assert_eq!((r.status, r.outcome), (403, "stale_or_replayed"));
        let r = a.endpoint(&s, &ask("/.vigil/dbsc/refresh", &h, 1_004));
        assert_eq!((r.status, r.outcome), (200, "refreshed"));
        let r = a.endpoint(&s, &ask("/.vigil/dbsc/refresh", &h, 1_005));
        assert_eq!((r.status, r.outcome), (403, "stale_or_replayed"));
    }

    /// The section a snapshot carries comes back whole, and a damaged one
    /// is refused whole.
    #[test]
    fn the_snapshot_section_round_trips_and_is_bounded() {
        let s = Settings::default();
        let a = Dbsc::new(&[7; 32]);
        let session = SessionKey::from_bytes([3; 16]);
        let id = Store::id_for(&session);
        a.store
            .bind(
                session,
                PublicKey::Es256(Box::new([4; 65])),
                id,
                10,
                10,
                (10, 1000),
                false,
            )
            .unwrap();
        a.store
            .alias(SessionKey::from_bytes([4; 16]), session, 11, (10, 1000))
            .unwrap();
        let section = a.snapshot_section();
        let b = Dbsc::new(&[7; 32]);
        assert_eq!(b.restore_section(&s, &section, 20), Some(2));
        assert!(b.store.by_id(&id).unwrap().is_some());
        for cut in [1, 5, section.len() - 9] {
            assert_eq!(
                Dbsc::default().restore_section(&s, &section[cut..], 20),
                None
            );
        }
        // Written under a larger `max_sessions`: the section is read whole
        // and only the first `2 × max_sessions` entries are taken.
        let tight = Settings {
            max_sessions: 0,
            ..Settings::default()
        };
        assert_eq!(
            Dbsc::default().restore_section(&tight, &section, 20),
            Some(0)
        );
        // A count the bytes cannot hold: refused before anything is read.
        let mut lying = section.clone();
        let at = lying.len() - 12;
        lying[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Dbsc::default().restore_section(&s, &lying, 20), None);
    }

    /// Registers `session` at `d` with the offer `d` made, at `now`; the
    /// reply.
    fn register_at(
        d: &Dbsc,
        s: &Settings,
        k: &ring::signature::EcdsaKeyPair,
        session: SessionKey,
        now: u64,
    ) -> Reply {
        let offer = d.offer(s, session, Vec::new(), now).unwrap();
        let c = offer
            .split("challenge=\"")
            .nth(1)
            .unwrap()
            .trim_end_matches('"');
        let h = headers(&[(RESPONSE, &proof(k, true, c))]);
        d.endpoint(
            s,
            &Ask {
                method: "POST",
                path: "/.vigil/dbsc/register",
                headers: &h,
                host: "h",
                client: IpAddr::from([127, 0, 0, 1]),
                sessions: &[session],
                now,
            },
        )
    }

    fn refresh_at(d: &Dbsc, s: &Settings, id: &str, now: u64) -> Reply {
        let h = headers(&[(SESSION_ID, id)]);
        d.endpoint(
            s,
            &Ask {
                method: "POST",
                path: "/.vigil/dbsc/refresh",
                headers: &h,
                host: "h",
                client: IpAddr::from([127, 0, 0, 1]),
                sessions: &[],
                now,
            },
        )
    }

    fn id_of(r: &Reply) -> String {
        let c = &r.headers.iter().find(|(n, _)| *n == CHALLENGE).unwrap().1;
        c.split('"').nth(3).unwrap().to_owned()
    }

    /// Finding 1: a refresh naming the owner's id at a node that does not
    /// hold the binding (yet) is `503` with `Retry-After` — the browser
    /// keeps its DBSC session — and never `404`, which would end it; a
    /// made-up id, or one a node of another fleet made, is `404`.
    #[test]
    fn a_node_without_the_binding_does_not_end_the_owners_session() {
        let s = Settings::default();
        let (a, b) = (Dbsc::new(&[7; 32]), Dbsc::new(&[7; 32]));
        let r = register_at(&a, &s, &key(), SessionKey::from_bytes([3; 16]), 1_000);
        assert_eq!((r.status, r.outcome), (200, "registered"));
        let id = id_of(&r);
        let r = refresh_at(&b, &s, &id, 1_001);
        assert_eq!((r.status, r.outcome), (503, "unknown_here"));
        assert_eq!(r.headers, vec![("retry-after", "5".to_owned())]);
        // Made up: every bit of the id's seal counts.
        let raw = decode(&id).unwrap();
        for i in [0, 8, 15] {
            let mut bad = raw;
            bad[i] ^= 1;
            let r = refresh_at(&b, &s, &encode(&bad), 1_001);
            assert_eq!((r.status, r.outcome), (404, "unknown_session"), "byte {i}");
        }
        // Another fleet's id.
        let other = Dbsc::new(&[8; 32]);
        let r = register_at(&other, &s, &key(), SessionKey::from_bytes([4; 16]), 1_000);
        let r = refresh_at(&b, &s, &id_of(&r), 1_001);
        assert_eq!((r.status, r.outcome), (404, "unknown_session"));
        // The node that holds it: the refresh protocol.
        let r = refresh_at(&a, &s, &id, 1_001);
        assert_eq!((r.status, r.outcome), (403, "challenged"));
    }

    /// Finding 5 (its first half): the id is a function of the offer and
    /// the key, so one registration is the same binding on every node.
    #[test]
    fn one_registration_has_one_id_on_every_node() {
        let (a, b) = (Dbsc::new(&[7; 32]), Dbsc::new(&[7; 32]));
        let session = SessionKey::from_bytes([5; 16]);
        let offer = a.offer_token(&session, 1_000);
        let k = PublicKey::Es256(Box::new([4; 65]));
        let id = a.new_id(&session, &offer, &k);
        assert_eq!(b.new_id(&session, &offer, &k), id);
        assert!(b.id_ok(&id));
        assert_eq!(usize::from(id[0]) % 16, usize::from(5u8) % 16);
        let thiefs = PublicKey::Es256(Box::new([5; 65]));
        assert_ne!(a.new_id(&session, &offer, &thiefs), id);
    }

    /// Finding 7: client-chosen times are never added to before their
    /// seal verifies, and sealed ones saturate: an offer dated at the end
    /// of time, made up or sealed, is refused without a panic (tests run
    /// with overflow checks).
    #[test]
    fn times_at_the_end_of_the_clock_do_not_panic() {
        let s = Settings::default();
        let d = Dbsc::new(&[7; 32]);
        let k = key();
        let session = SessionKey::from_bytes([3; 16]);
        let mut forged = [0xffu8; 32];
        forged[8..].fill(0);
        let h = headers(&[(RESPONSE, &proof(&k, true, &URL_SAFE_NO_PAD.encode(forged)))]);
        let ask = |headers, now| Ask {
            method: "POST",
            path: "/.vigil/dbsc/register",
            headers,
            host: "h",
            client: IpAddr::from([127, 0, 0, 1]),
            sessions: std::slice::from_ref(&session),
            now,
        };
        let r = d.endpoint(&s, &ask(&h, 1_000));
        assert_eq!((r.status, r.outcome), (401, "unknown_challenge"));
        // Sealed, at the clock's end: taken, and its cookie and challenge
        // made without overflowing.
        let end = u64::MAX - 1;
        let r = register_at(&d, &s, &k, session, end);
        assert_eq!((r.status, r.outcome), (200, "registered"));
        let r = refresh_at(&d, &s, &id_of(&r), u64::MAX);
        assert_eq!((r.status, r.outcome), (403, "challenged"));
    }

    /// Finding 6: a cookie sealed to outlive any the fleet issues (a node
    /// whose clock runs ahead) proves nothing; one at the bound does.
    #[test]
    fn a_cookie_expiring_past_any_the_fleet_issues_is_refused() {
        let s = Settings::default();
        let d = Dbsc::new(&[7; 32]);
        let session = SessionKey::from_bytes([3; 16]);
        let r = register_at(&d, &s, &key(), session, 1_000);
        let id = decode(&id_of(&r)).unwrap();
        let latest = 1_000 + s.cookie_lifetime + COOKIE_GRACE + SKEW;
        let jar = |until| {
            headers(&[(
                "cookie",
                &format!("{}={}", s.cookie_name, d.sealed_cookie(&id, until, 0)),
            )])
        };
        assert_eq!(
            d.check(&s, RouteDbsc::Offer, &session, &jar(latest), "/", 1_000),
            Check::Pass("proven")
        );
        assert!(matches!(
            d.check(&s, RouteDbsc::Offer, &session, &jar(latest + 1), "/", 1_000),
            Check::Refuse {
                why: "unproven",
                ..
            }
        ));
        assert!(matches!(
            d.check(&s, RouteDbsc::Offer, &session, &jar(u64::MAX), "/", 1_000),
            Check::Refuse {
                why: "unproven",
                ..
            }
        ));
    }

    /// Findings 3 and 4: a fleet record arriving at a full node takes the
    /// place of the entry used least recently (counted apart), never
    /// dropped; a record whose id no node made is refused.
    #[test]
    fn a_fleet_record_at_a_full_node_is_held_and_counted() {
        let s = Settings {
            max_sessions: 16,
            ..Settings::default()
        };
        let (a, b) = (Dbsc::new(&[7; 32]), Dbsc::new(&[7; 32]));
        let sent = std::sync::Arc::new(Mutex::new(Vec::new()));
        let to = sent.clone();
        a.set_sink(Box::new(move |r| to.lock().unwrap().push(r)));
        // One entry per shard; B's shard 0 is full with its own binding.
        let r = register_at(&b, &s, &key(), SessionKey::from_bytes([0; 16]), 1_000);
        assert_eq!(r.status, 200);
        let r = register_at(&a, &s, &key(), SessionKey::from_bytes([16; 16]), 1_001);
        assert_eq!(r.status, 200);
        let record = sent.lock().unwrap()[0].clone();
        assert_eq!(b.adopt(&s, &record, 1_002), "dbsc_bound_evicting");
        assert!(b.store.is_bound(&SessionKey::from_bytes([16; 16])));
        assert!(!b.store.is_bound(&SessionKey::from_bytes([0; 16])));
        // A local registration on a full shard is refused instead (503).
        let r = register_at(&b, &s, &key(), SessionKey::from_bytes([32; 16]), 1_003);
        assert_eq!((r.status, r.outcome), (503, "store_full"));
        let mut forged = record;
        forged.id.0[9] ^= 1;
        assert_eq!(b.adopt(&s, &forged, 1_004), "dbsc_bound_refused");
    }

    #[test]
    fn limiter_counts_per_window() {
        let l = Limiter::default();
        let k = client_key(IpAddr::from([127, 0, 0, 1]));
        assert!(l.allow(&k, 60, 2));
        assert!(l.allow(&k, 61, 2));
        assert!(!l.allow(&k, 62, 2));
        assert!(l.allow(&k, 120, 2));
    }
}
