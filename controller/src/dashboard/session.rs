//! Dashboard sessions (`docs/dashboard.md`, Access): who signed in, with
//! which role, until when; the CSRF token of each; and the limit on
//! failed sign-ins.
//!
//! A session id is 32 random bytes, sent once in a cookie and kept here
//! only as its SHA-256: a copy of this memory opens no session. The
//! credential that opened it is kept only as its SHA-256 as well. The CSRF
//! token is an HMAC of a per-session secret, so that it is checked in
//! constant time ([`hmac::Mac::verify_slice`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use ring::rand::SecureRandom;
use sha2::{Digest, Sha256};

use super::DashboardConfig;

/// Sessions held at most; beyond, the one closest to its end goes.
pub const MAX_SESSIONS: usize = 10_000;

/// Sessions one credential may hold at once.
pub const MAX_PER_CREDENTIAL: usize = 16;

/// Client addresses whose failed sign-ins are counted at most; beyond,
/// only the limit of every client together applies to new ones.
const MAX_TRACKED_CLIENTS: usize = 10_000;

/// Length of a session id and of a CSRF token, base64url without padding.
const TOKEN_CHARS: usize = 43;

/// What a signed-in operator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Reads every page; acts on nothing.
    Viewer,
    /// Reads, and acts: false positives, confirmed compromises,
    /// revocations, universal logout.
    Responder,
}

impl Role {
    /// `viewer` or `responder`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Responder => "responder",
        }
    }
}

/// Who opened a session: what the dashboard shows and logs of them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Identity {
    /// The controller's admin token.
    AdminToken,
    /// The pinned admin client certificate.
    AdminCertificate,
    /// A viewer token, named by the first 8 hex digits of its SHA-256.
    ViewerToken(String),
    /// An operator signed in through the OpenID provider of
    /// `[dashboard.oidc]`: its issuer and the operator's subject there
    /// (who they are), and the name claim (only shown).
    Oidc {
        /// The ID token's `iss`.
        issuer: String,
        /// The ID token's `sub`.
        subject: String,
        /// The configured name claim, when the token had one.
        name: Option<String>,
    },
}

impl Identity {
    /// As shown and logged: never the credential itself.
    pub fn label(&self) -> String {
        match self {
            Identity::AdminToken => "admin token".to_owned(),
            Identity::AdminCertificate => "admin certificate".to_owned(),
            Identity::ViewerToken(id) => format!("viewer token {id}"),
            Identity::Oidc {
                issuer,
                subject,
                name: Some(name),
            } => format!("{name} (oidc {issuer} sub {subject})"),
            Identity::Oidc {
                issuer,
                subject,
                name: None,
            } => format!("oidc {issuer} sub {subject}"),
        }
    }
}

/// One signed-in operator.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who.
    pub identity: Identity,
    /// What they may do.
    pub role: Role,
    /// SHA-256 of the credential that opened it (token or certificate).
    pub credential: [u8; 32],
    /// The secret its CSRF token is derived from.
    csrf_secret: [u8; 32],
    /// When it was opened (seconds since the Unix epoch).
    pub created: u64,
    /// When it was last used.
    pub last_used: u64,
}

impl Session {
    /// The CSRF token every form of this session carries.
    pub fn csrf_token(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.csrf_mac().finalize().into_bytes())
    }

    fn csrf_mac(&self) -> Hmac<Sha256> {
        // An HMAC takes a key of any length: this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.csrf_secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(b"vigil-dashboard-csrf");
        mac
    }

    /// Whether `token` is this session's CSRF token, compared in constant
    /// time.
    pub fn csrf_ok(&self, token: &str) -> bool {
        if token.len() != TOKEN_CHARS {
            return false;
        }
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(token) else {
            return false;
        };
        self.csrf_mac().verify_slice(&bytes).is_ok()
    }
}

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("the system's random source failed")]
pub struct NoRandom;

/// The sessions of this controller process and its failed sign-ins.
#[derive(Debug, Default)]
pub struct Sessions {
    /// By SHA-256 of the session id.
    held: Mutex<HashMap<[u8; 32], Session>>,
    /// Failed sign-ins in the current minute: per client (an IPv4 address,
    /// an IPv6 /64) and of every client together.
    failed: Mutex<Failed>,
    /// Sign-ins through the OpenID provider under way, and the provider
    /// as discovered.
    pub(crate) oidc: super::oidc::Runtime,
}

#[derive(Debug, Default)]
struct Failed {
    total: Window,
    by_client: HashMap<IpAddr, Window>,
}

/// Failures counted from `start` for a minute.
#[derive(Debug, Default, Clone, Copy)]
struct Window {
    start: u64,
    count: u32,
}

pub(crate) fn random32() -> Result<[u8; 32], NoRandom> {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| NoRandom)?;
    Ok(bytes)
}

fn id_hash(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// The client a failed sign-in counts against: its address, an IPv6 one
/// as its /64 (one host holds a whole /64).
pub(crate) fn client_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(a) => IpAddr::V4(a),
        IpAddr::V6(a) => {
            let mut o = a.octets();
            o[8..].fill(0);
            IpAddr::from(o)
        }
    }
}

// === impl Sessions ===

impl Sessions {
    /// Opens a session for `identity` with `role`, its credential's hash
    /// `credential`, at `now`; the id to send in the cookie.
    pub fn open(
        &self,
        identity: Identity,
        role: Role,
        credential: [u8; 32],
        now: u64,
        config: &DashboardConfig,
    ) -> Result<String, NoRandom> {
        let id = URL_SAFE_NO_PAD.encode(random32()?);
        let session = Session {
            identity,
            role,
            credential,
            csrf_secret: random32()?,
            created: now,
            last_used: now,
        };
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // One credential holds at most `MAX_PER_CREDENTIAL` sessions: its
        // oldest goes first, so that one credential signing in again and
        // again (a viewer token, say) fills only its own share and never
        // pushes another operator's session out.
        let mine: Vec<_> = held
            .iter()
            .filter(|(_, s)| s.credential == credential)
            .map(|(k, s)| (s.created, *k))
            .collect();
        if mine.len() >= MAX_PER_CREDENTIAL
            && let Some((_, k)) = mine.iter().min()
        {
            held.remove(k);
        }
        if held.len() >= MAX_SESSIONS {
            held.retain(|_, s| live(s, now, config));
        }
        if held.len() >= MAX_SESSIONS {
            // Still full of live sessions: the one that would end first
            // goes.
            let first = held
                .iter()
                .min_by_key(|(_, s)| ends_at(s, config))
                .map(|(k, _)| *k);
            if let Some(k) = first {
                held.remove(&k);
            }
        }
        held.insert(id_hash(&id), session);
        Ok(id)
    }

    /// The live session with cookie value `id`, its last use moved to
    /// `now`; an expired one is dropped.
    pub fn get(&self, id: &str, now: u64, config: &DashboardConfig) -> Option<Session> {
        if id.len() != TOKEN_CHARS {
            return None;
        }
        let key = id_hash(id);
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let session = held.get_mut(&key)?;
        if !live(session, now, config) {
            held.remove(&key);
            return None;
        }
        session.last_used = now;
        Some(session.clone())
    }

    /// Ends the session with cookie value `id`, if held.
    pub fn close(&self, id: &str) {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id_hash(id));
    }

    /// Sessions held (live or not yet swept).
    pub fn len(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `client` (when known) may try to sign in at `now`: fewer
    /// than `per_minute` failures in its window of a minute (which starts
    /// at its first failure). Judged before the credential is: a client
    /// over its limit learns nothing of its guesses.
    pub fn may_try(&self, client: Option<IpAddr>, now: u64, per_minute: u32) -> bool {
        let mut failed = self
            .failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        client
            .map(client_of)
            .and_then(|c| failed.by_client.get_mut(&c))
            .is_none_or(|w| w.count(now) < per_minute)
    }

    /// Whether every client together has failed ten times `per_minute` in
    /// the minute: then a wrong credential is answered as a refusal of
    /// the rate, not as a wrong credential. It is judged after the
    /// credential, so that a right one (or the pinned certificate, which
    /// cannot be guessed) still signs in: otherwise anyone spreading bad
    /// guesses over many addresses could keep every operator out.
    pub fn all_over(&self, now: u64, per_minute: u32) -> bool {
        self.failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .total
            .count(now)
            >= per_minute.saturating_mul(10)
    }

    /// Counts a failed sign-in of `client` at `now`.
    pub fn failed(&self, client: Option<IpAddr>, now: u64) {
        let mut failed = self
            .failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        failed.total.add(now);
        let Some(c) = client.map(client_of) else {
            return;
        };
        if failed.by_client.len() >= MAX_TRACKED_CLIENTS && !failed.by_client.contains_key(&c) {
            failed.by_client.retain(|_, w| w.count(now) > 0);
        }
        if failed.by_client.len() < MAX_TRACKED_CLIENTS || failed.by_client.contains_key(&c) {
            failed.by_client.entry(c).or_default().add(now);
        }
    }
}

impl Window {
    /// Failures in the window at `now`; a window a minute old is over.
    fn count(&mut self, now: u64) -> u32 {
        if now >= self.start.saturating_add(60) {
            *self = Window::default();
        }
        self.count
    }

    fn add(&mut self, now: u64) {
        if self.count(now) == 0 {
            self.start = now;
        }
        self.count = self.count.saturating_add(1);
    }
}

fn ends_at(s: &Session, config: &DashboardConfig) -> u64 {
    s.last_used
        .saturating_add(config.idle_timeout)
        .min(s.created.saturating_add(config.max_age))
}

fn live(s: &Session, now: u64, config: &DashboardConfig) -> bool {
    now < ends_at(s, config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DashboardConfig {
        DashboardConfig {
            idle_timeout: 100,
            max_age: 1_000,
            ..DashboardConfig::default()
        }
    }

    #[test]
    fn a_session_ends_when_idle_or_old_whichever_comes_first() {
        let s = Sessions::default();
        let c = config();
        let id = s
            .open(Identity::AdminToken, Role::Responder, [1; 32], 0, &c)
            .unwrap();
        assert_eq!(id.len(), TOKEN_CHARS);
        // Used every 99 s it stays, until its absolute end.
        let mut t = 0;
        while t + 99 < 1_000 {
            t += 99;
            assert!(s.get(&id, t, &c).is_some(), "at {t}");
        }
        assert!(s.get(&id, 1_000, &c).is_none());
        assert!(s.is_empty(), "an expired session is dropped");
        // Idle for the timeout: gone.
        let id = s
            .open(Identity::AdminToken, Role::Responder, [1; 32], 0, &c)
            .unwrap();
        assert!(s.get(&id, 100, &c).is_none());
    }

    #[test]
    fn only_the_exact_id_opens_a_session() {
        let s = Sessions::default();
        let c = config();
        let id = s
            .open(Identity::AdminToken, Role::Viewer, [1; 32], 0, &c)
            .unwrap();
        let mut other = id.clone().into_bytes();
        other[0] = if other[0] == b'A' { b'B' } else { b'A' };
        for bad in [
            String::from_utf8(other).unwrap(),
            id[..42].to_owned(),
            format!("{id}A"),
            id.to_uppercase(),
            String::new(),
        ] {
            assert!(s.get(&bad, 1, &c).is_none(), "{bad}");
        }
        s.close(&id);
        assert!(s.get(&id, 1, &c).is_none());
    }

    #[test]
    fn a_csrf_token_is_its_sessions_only() {
        let s = Sessions::default();
        let c = config();
        let a = s
            .open(Identity::AdminToken, Role::Responder, [1; 32], 0, &c)
            .unwrap();
        let b = s
            .open(Identity::AdminToken, Role::Responder, [1; 32], 0, &c)
            .unwrap();
        let (a, b) = (s.get(&a, 1, &c).unwrap(), s.get(&b, 1, &c).unwrap());
        let token = a.csrf_token();
        assert!(a.csrf_ok(&token));
        assert!(!b.csrf_ok(&token));
        assert!(!a.csrf_ok(""));
        assert!(!a.csrf_ok(&token[..42]));
        assert!(!a.csrf_ok(&format!("{token}=")));
        assert!(!a.csrf_ok(&"A".repeat(TOKEN_CHARS)));
    }

    #[test]
    fn failed_sign_ins_are_limited_per_client_and_in_total() {
        let s = Sessions::default();
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..5 {
            assert!(s.may_try(Some(one), 60, 5));
            s.failed(Some(one), 60);
        }
        assert!(!s.may_try(Some(one), 60, 5));
        // The same host over IPv4-mapped IPv6: the same client.
        assert!(!s.may_try(Some("::ffff:192.0.2.1".parse().unwrap()), 61, 5));
        // Another address of the same IPv6 /64 counts with the first.
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        for _ in 0..5 {
            s.failed(Some(v6), 62);
        }
        assert!(!s.may_try(Some("2001:db8::ffff".parse().unwrap()), 62, 5));
        assert!(s.may_try(Some("2001:db8:0:1::1".parse().unwrap()), 62, 5));
        // A minute after the first failure, the window starts afresh.
        assert!(!s.may_try(Some(one), 119, 5));
        assert!(s.may_try(Some(one), 120, 5));
        // Everyone together: ten times a client's allowance. A fresh
        // client may still try (a right credential signs in); a wrong one
        // is then answered as over the rate.
        assert!(!s.all_over(180, 5));
        for i in 0..50u8 {
            s.failed(Some(IpAddr::from([198, 51, 100, i])), 180);
        }
        assert!(s.all_over(180, 5));
        assert!(s.may_try(Some("203.0.113.9".parse().unwrap()), 180, 5));
        assert!(!s.all_over(240, 5));
    }

    #[test]
    fn one_credential_signing_in_again_and_again_pushes_out_only_its_own_sessions() {
        let s = Sessions::default();
        let c = config();
        let responder = s
            .open(Identity::AdminToken, Role::Responder, [9; 32], 0, &c)
            .unwrap();
        let viewer: Vec<_> = (0..MAX_SESSIONS as u64 * 2)
            .map(|i| {
                s.open(Identity::AdminToken, Role::Viewer, [1; 32], 1 + i, &c)
                    .unwrap()
            })
            .collect();
        assert_eq!(s.len(), MAX_PER_CREDENTIAL + 1);
        assert!(s.get(&responder, 30, &c).is_some());
        // The viewer's newest sessions are the ones kept.
        assert!(s.get(&viewer[viewer.len() - 1], 30, &c).is_some());
        assert!(
            s.get(&viewer[viewer.len() - MAX_PER_CREDENTIAL], 30, &c)
                .is_some()
        );
        assert!(
            s.get(&viewer[viewer.len() - MAX_PER_CREDENTIAL - 1], 30, &c)
                .is_none()
        );
    }

    #[test]
    fn a_full_store_drops_the_session_closest_to_its_end() {
        let s = Sessions::default();
        let c = config();
        // Credentials of their own, each under its cap.
        let credential = |i: usize| {
            let mut c = [0u8; 32];
            c[..8].copy_from_slice(&(i as u64).to_le_bytes());
            c
        };
        let first = s
            .open(Identity::AdminToken, Role::Viewer, credential(0), 0, &c)
            .unwrap();
        for i in 1..MAX_SESSIONS {
            s.open(Identity::AdminToken, Role::Viewer, credential(i), 10, &c)
                .unwrap();
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        let last = s
            .open(
                Identity::AdminToken,
                Role::Viewer,
                credential(MAX_SESSIONS),
                20,
                &c,
            )
            .unwrap();
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(s.get(&first, 20, &c).is_none());
        assert!(s.get(&last, 20, &c).is_some());
    }
}
