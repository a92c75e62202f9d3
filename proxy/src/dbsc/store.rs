//! DBSC state on this node: the public key each bound session registered,
//! its current challenge and bound cookie, and the registrations offered
//! but not yet made. A store of its own, sized by DBSC sessions, apart
//! from the engine's session baselines (whose per-session budget a key
//! of 65 to 1024 bytes would break).
//!
//! Bounded: `max_sessions` bound sessions, as many pending
//! registrations. A full store refuses new registrations (answered `503`,
//! which a browser backs off from) rather than evicting a bound session:
//! an evicted binding would be a session that no longer needs a proof.
//! Entries idle past `idle_timeout` are swept when room is needed.

use std::collections::HashMap;
use std::sync::Mutex;

use vigil_engine::SessionKey;

use super::jwt::PublicKey;

/// Shards of the bound-session map: a request's check locks one.
const SHARDS: usize = 16;

/// Random bytes of a challenge, a bound cookie and a session id.
pub type Token = [u8; 16];

/// One bound session.
#[derive(Debug, Clone)]
pub struct Bound {
    /// The DBSC session identifier given to the browser.
    pub id: Token,
    /// The key the browser registered.
    pub key: PublicKey,
    /// The challenge the next refresh proof must sign, and when it was made.
    pub challenge: Token,
    pub challenge_at: u64,
    /// BLAKE3 of the bound cookie in force (first 16 bytes), and when it
    /// expires; the previous one stays valid until its own expiry (requests
    /// sent just before a refresh).
    pub cookie: Token,
    pub cookie_until: u64,
    pub previous: Token,
    pub previous_until: u64,
    /// Last registration or refresh, for the idle sweep.
    pub touched: u64,
}

/// A registration offered at issuance and not yet made: the session
/// offered, and the other sessions the same response opened, bound with it.
#[derive(Debug, Clone)]
struct Pending {
    session: SessionKey,
    also: Vec<SessionKey>,
    at: u64,
}

#[derive(Debug, Default)]
struct Shard {
    by_session: HashMap<SessionKey, Bound>,
    by_id: HashMap<Token, SessionKey>,
    /// Sessions that inherited another's binding (the app rotated or added
    /// a session cookie on a proven request; a second cookie of a bound
    /// registration): the session whose entry holds the binding, and when.
    aliases: HashMap<SessionKey, (SessionKey, u64)>,
}

#[derive(Debug, Default)]
struct Offers {
    by_challenge: HashMap<Token, Pending>,
    /// When each session was first offered: a session is offered once, and
    /// its `require` window runs from then only.
    by_session: HashMap<SessionKey, u64>,
}

/// Why the store could not take a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// `max_sessions` bound sessions, none idle.
    #[error("the DBSC store is full")]
    Full,
    /// A lock was poisoned by a panic elsewhere: answered as an outage.
    #[error("the DBSC store is unavailable")]
    Unavailable,
}

/// The store; one per process, kept across reloads.
#[derive(Debug)]
pub struct Store {
    shards: [Mutex<Shard>; SHARDS],
    offers: Mutex<Offers>,
}

/// What a request's bound cookie comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// The session is not bound here.
    Unbound {
        /// A registration was offered within the window and not made yet.
        pending: bool,
    },
    /// Bound, and the cookie is current (or the previous, unexpired).
    Proven,
    /// Bound, and the cookie is missing, expired or not this session's:
    /// the refresh challenge is owed.
    Unproven {
        /// The session's id and its current challenge.
        id: Token,
        challenge: Token,
    },
}

// === impl Store ===

impl Default for Store {
    fn default() -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::default()),
            offers: Mutex::default(),
        }
    }
}

impl Store {
    /// Memory held per bound session, in bytes, not counting the hash
    /// tables' spare capacity: the entry and its two index slots, plus the
    /// key's heap bytes (65 for P-256; 256 + 3 for a 2048-bit RSA key).
    pub fn entry_bytes(key_heap_bytes: usize) -> usize {
        std::mem::size_of::<(SessionKey, Bound)>()
            + std::mem::size_of::<(Token, SessionKey)>()
            + 2 // one control byte per table (hashbrown)
            + key_heap_bytes
    }

    fn shard_of(id: &Token) -> usize {
        usize::from(id[0]) % SHARDS
    }

    /// A fresh session id that lands in `session`'s shard, so that both
    /// lookups lock one shard.
    fn id_for(session: &SessionKey) -> Token {
        let mut id: Token = rand::random();
        let shard = usize::from(session.as_bytes()[0]) % SHARDS;
        // SHARDS divides 256: the low bits pick the shard, the rest stay random.
        id[0] = (id[0] & !0x0f) | u8::try_from(shard).unwrap_or(0);
        id
    }

    fn shard_for(
        &self,
        session: &SessionKey,
    ) -> Result<std::sync::MutexGuard<'_, Shard>, StoreError> {
        self.shards[usize::from(session.as_bytes()[0]) % SHARDS]
            .lock()
            .map_err(|_| StoreError::Unavailable)
    }

    /// Records a registration offer for `session` (and `also`, the other
    /// sessions the same response opened); returns its challenge, or `None`
    /// when the session was offered before (a session is offered once: a
    /// re-offer would reopen its `require` window and let whoever asked
    /// next register), is bound, or `capacity` offers are held (expired
    /// ones swept first).
    pub fn offer(
        &self,
        session: SessionKey,
        also: Vec<SessionKey>,
        now: u64,
        window: u64,
        capacity: usize,
    ) -> Option<Token> {
        if self.is_bound(&session) {
            return None;
        }
        let mut offers = self.offers.lock().ok()?;
        if offers.by_session.contains_key(&session) {
            return None;
        }
        if offers.by_session.len() >= capacity {
            offers.by_challenge.retain(|_, p| p.at + window > now);
            offers.by_session.retain(|_, at| *at + window > now);
            if offers.by_session.len() >= capacity {
                return None;
            }
        }
        let challenge: Token = rand::random();
        offers.by_challenge.insert(
            challenge,
            Pending {
                session,
                also,
                at: now,
            },
        );
        offers.by_session.insert(session, now);
        Some(challenge)
    }

    /// Takes the offer `challenge` names, if it is within the window and
    /// its session is among `carried` (the sessions whose cookies the
    /// registration request itself sent: whoever registers must hold the
    /// session). A challenge is good for one registration. Returns the
    /// session and the others opened with it.
    pub fn take_offer(
        &self,
        challenge: &Token,
        carried: &[SessionKey],
        now: u64,
        window: u64,
    ) -> Result<Option<(SessionKey, Vec<SessionKey>)>, StoreError> {
        let mut offers = self.offers.lock().map_err(|_| StoreError::Unavailable)?;
        let Some(p) = offers.by_challenge.get(challenge) else {
            return Ok(None);
        };
        if !carried.contains(&p.session) {
            return Ok(None);
        }
        let Some(p) = offers.by_challenge.remove(challenge) else {
            return Ok(None);
        };
        // Taken: the session is bound next (or the store is full), and is
        // never offered again either way (only a session new to the engine
        // is offered).
        offers.by_session.remove(&p.session);
        Ok((p.at + window > now).then_some((p.session, p.also)))
    }

    /// Whether `session` is bound here, itself or as an alias.
    pub fn is_bound(&self, session: &SessionKey) -> bool {
        self.shard_for(session)
            .is_ok_and(|s| s.by_session.contains_key(session) || s.aliases.contains_key(session))
    }

    /// The session holding `session`'s binding: itself, or the one it is
    /// an alias of. `None` when not bound.
    pub fn root(&self, session: &SessionKey) -> Option<SessionKey> {
        let shard = self.shard_for(session).ok()?;
        if shard.by_session.contains_key(session) {
            return Some(*session);
        }
        shard.aliases.get(session).map(|(root, _)| *root)
    }

    /// `session` inherits the binding of `root` (a bound session, not an
    /// alias): from now on it is proven by `root`'s bound cookies, which
    /// `root`'s refreshes rotate. Nothing when `session` is bound already.
    pub fn alias(
        &self,
        session: SessionKey,
        root: SessionKey,
        now: u64,
    ) -> Result<bool, StoreError> {
        if session == root {
            return Ok(false);
        }
        let mut shard = self.shard_for(&session)?;
        if shard.by_session.contains_key(&session) || shard.aliases.contains_key(&session) {
            return Ok(false);
        }
        shard.aliases.insert(session, (root, now));
        Ok(true)
    }

    /// Binds `session` to `key` with a first cookie and challenge. A
    /// session already bound keeps its key: the first registration wins
    /// (a thief holding a copy cannot re-bind it to his own key).
    #[allow(clippy::too_many_arguments)] // each is one fact of the binding
    pub fn bind(
        &self,
        session: SessionKey,
        key: PublicKey,
        cookie: Token,
        cookie_until: u64,
        challenge: Token,
        now: u64,
        limits: (usize, u64),
    ) -> Result<Option<Token>, StoreError> {
        let (capacity, idle) = limits;
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        let mut shard = self.shard_for(&session)?;
        if shard.by_session.contains_key(&session) || shard.aliases.contains_key(&session) {
            return Ok(None);
        }
        if shard.by_session.len() + shard.aliases.len() >= per_shard {
            shard.aliases.retain(|_, (_, at)| *at + idle > now);
            let mut gone = Vec::new();
            shard.by_session.retain(|_, b| {
                let keep = b.touched + idle > now;
                if !keep {
                    gone.push(b.id);
                }
                keep
            });
            for id in gone {
                shard.by_id.remove(&id);
            }
            if shard.by_session.len() + shard.aliases.len() >= per_shard {
                return Err(StoreError::Full);
            }
        }
        let id = Self::id_for(&session);
        shard.by_id.insert(id, session);
        shard.by_session.insert(
            session,
            Bound {
                id,
                key,
                challenge,
                challenge_at: now,
                cookie,
                cookie_until,
                previous: [0; 16],
                previous_until: 0,
                touched: now,
            },
        );
        Ok(Some(id))
    }

    /// The bound session with id `id`, cloned.
    pub fn by_id(&self, id: &Token) -> Result<Option<Bound>, StoreError> {
        let shard = self.shards[Self::shard_of(id)]
            .lock()
            .map_err(|_| StoreError::Unavailable)?;
        Ok(shard
            .by_id
            .get(id)
            .and_then(|s| shard.by_session.get(s))
            .cloned())
    }

    /// Replaces the challenge of session `id` (the 403 of a refresh).
    pub fn rechallenge(&self, id: &Token, challenge: Token, now: u64) -> Result<bool, StoreError> {
        let mut guard = self.shards[Self::shard_of(id)]
            .lock()
            .map_err(|_| StoreError::Unavailable)?;
        let shard = &mut *guard;
        let Some(b) = shard
            .by_id
            .get(id)
            .and_then(|s| shard.by_session.get_mut(s))
        else {
            return Ok(false);
        };
        b.challenge = challenge;
        b.challenge_at = now;
        Ok(true)
    }

    /// A refresh proof for `signed` verified: if `signed` is still the
    /// session's challenge (not consumed by a racing refresh), rotates
    /// the challenge and the cookie. Returns false when it was not.
    pub fn refreshed(
        &self,
        id: &Token,
        signed: &Token,
        next: (Token, Token, u64),
        now: u64,
    ) -> Result<bool, StoreError> {
        let (challenge, cookie, cookie_until) = next;
        let mut guard = self.shards[Self::shard_of(id)]
            .lock()
            .map_err(|_| StoreError::Unavailable)?;
        let shard = &mut *guard;
        let Some(b) = shard
            .by_id
            .get(id)
            .and_then(|s| shard.by_session.get_mut(s))
        else {
            return Ok(false);
        };
        if b.challenge != *signed {
            return Ok(false);
        }
        b.challenge = challenge;
        b.challenge_at = now;
        b.previous = b.cookie;
        b.previous_until = b.cookie_until;
        b.cookie = cookie;
        b.cookie_until = cookie_until;
        b.touched = now;
        Ok(true)
    }

    /// Where `session` stands given the hash of the bound cookie the
    /// request carries. Unavailable (a poisoned lock) stands as unproven.
    pub fn standing(
        &self,
        session: &SessionKey,
        cookie: Option<&Token>,
        now: u64,
        window: u64,
    ) -> Standing {
        let Ok(shard) = self.shard_for(session) else {
            return Standing::Unproven {
                id: [0; 16],
                challenge: [0; 16],
            };
        };
        if let Some(&(root, _)) = shard.aliases.get(session) {
            drop(shard);
            let Ok(shard) = self.shard_for(&root) else {
                return Standing::Unproven {
                    id: [0; 16],
                    challenge: [0; 16],
                };
            };
            return match shard.by_session.get(&root) {
                Some(b) => Self::judge(b, cookie, now),
                // The binding it inherited was swept as idle.
                None => Standing::Unbound { pending: false },
            };
        }
        let Some(b) = shard.by_session.get(session) else {
            drop(shard);
            let pending = self
                .offers
                .lock()
                .ok()
                .and_then(|o| o.by_session.get(session).copied())
                .is_some_and(|at| at + window > now);
            return Standing::Unbound { pending };
        };
        Self::judge(b, cookie, now)
    }

    fn judge(b: &Bound, cookie: Option<&Token>, now: u64) -> Standing {
        let proven = cookie.is_some_and(|c| {
            (*c == b.cookie && now < b.cookie_until) || (*c == b.previous && now < b.previous_until)
        });
        if proven {
            Standing::Proven
        } else {
            Standing::Unproven {
                id: b.id,
                challenge: b.challenge,
            }
        }
    }

    /// Bound sessions held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .filter_map(|s| s.lock().ok().map(|s| s.by_session.len()))
            .sum()
    }

    /// Whether no session is bound.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PublicKey {
        PublicKey::Es256(Box::new([4; 65]))
    }

    #[test]
    fn first_registration_wins_and_cookies_rotate() {
        let s = Store::default();
        let k = SessionKey::from_bytes([7; 16]);
        let id = s
            .bind(k, key(), [1; 16], 100, [9; 16], 10, (10, 1000))
            .unwrap()
            .unwrap();
        assert_eq!(
            s.bind(k, key(), [2; 16], 100, [9; 16], 10, (10, 1000)),
            Ok(None)
        );
        assert_eq!(s.standing(&k, Some(&[1; 16]), 50, 30), Standing::Proven);
        assert!(matches!(
            s.standing(&k, Some(&[1; 16]), 100, 30),
            Standing::Unproven { .. }
        ));
        assert!(matches!(
            s.standing(&k, None, 50, 30),
            Standing::Unproven { .. }
        ));
        // A proof of a challenge that is not the current one changes nothing.
        assert_eq!(
            s.refreshed(&id, &[8; 16], ([5; 16], [3; 16], 200), 60),
            Ok(false)
        );
        assert_eq!(
            s.refreshed(&id, &[9; 16], ([5; 16], [3; 16], 200), 60),
            Ok(true)
        );
        // Replayed: the challenge has rotated.
        assert_eq!(
            s.refreshed(&id, &[9; 16], ([6; 16], [4; 16], 300), 61),
            Ok(false)
        );
        assert_eq!(s.standing(&k, Some(&[3; 16]), 150, 30), Standing::Proven);
        // The previous cookie until its own expiry.
        assert_eq!(s.standing(&k, Some(&[1; 16]), 99, 30), Standing::Proven);
        assert!(matches!(
            s.standing(&k, Some(&[1; 16]), 100, 30),
            Standing::Unproven { .. }
        ));
    }

    #[test]
    fn full_store_refuses_and_idle_entries_make_room() {
        let s = Store::default();
        // Capacity 16: one per shard; two keys in shard 0.
        let a = SessionKey::from_bytes([0; 16]);
        let b = SessionKey::from_bytes([16; 16]);
        assert!(
            s.bind(a, key(), [1; 16], 100, [1; 16], 10, (16, 100))
                .unwrap()
                .is_some()
        );
        assert_eq!(
            s.bind(b, key(), [1; 16], 100, [1; 16], 20, (16, 100)),
            Err(StoreError::Full)
        );
        assert!(
            s.bind(b, key(), [1; 16], 300, [1; 16], 110, (16, 100))
                .unwrap()
                .is_some()
        );
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn offers_are_single_use_bounded_and_expire() {
        let s = Store::default();
        let k = SessionKey::from_bytes([1; 16]);
        let c = s.offer(k, Vec::new(), 10, 30, 1).unwrap();
        assert_eq!(
            s.offer(SessionKey::from_bytes([2; 16]), Vec::new(), 11, 30, 1),
            None
        );
        assert_eq!(
            s.standing(&k, None, 20, 30),
            Standing::Unbound { pending: true }
        );
        // Only for a request that carries the session.
        assert_eq!(s.take_offer(&c, &[], 20, 30), Ok(None));
        assert_eq!(s.take_offer(&c, &[k], 20, 30), Ok(Some((k, Vec::new()))));
        assert_eq!(s.take_offer(&c, &[k], 20, 30), Ok(None));
        // Offered once: the window is not reopened.
        let other = SessionKey::from_bytes([3; 16]);
        let c = s.offer(other, Vec::new(), 50, 30, 2).unwrap();
        assert_eq!(s.offer(other, Vec::new(), 60, 30, 2), None);
        assert_eq!(s.offer(other, Vec::new(), 90, 30, 2), None);
        assert_eq!(
            s.standing(&other, None, 90, 30),
            Standing::Unbound { pending: false }
        );
        assert_eq!(s.take_offer(&c, &[other], 80, 30), Ok(None));
    }

    #[test]
    fn an_alias_is_proven_by_its_roots_cookie() {
        let s = Store::default();
        let root = SessionKey::from_bytes([1; 16]);
        let new = SessionKey::from_bytes([2; 16]);
        s.bind(root, key(), [1; 16], 100, [9; 16], 10, (32, 1000))
            .unwrap()
            .unwrap();
        assert_eq!(s.alias(new, root, 20), Ok(true));
        assert_eq!(s.root(&new), Some(root));
        assert!(s.is_bound(&new));
        assert_eq!(s.standing(&new, Some(&[1; 16]), 50, 30), Standing::Proven);
        assert!(matches!(
            s.standing(&new, None, 50, 30),
            Standing::Unproven { .. }
        ));
        // Bound already: neither offered nor bound again.
        assert_eq!(s.offer(new, Vec::new(), 50, 30, 10), None);
        assert_eq!(
            s.bind(new, key(), [2; 16], 100, [9; 16], 50, (32, 1000)),
            Ok(None)
        );
    }

    #[test]
    fn entry_size_is_reported() {
        // Printed by `cargo test -p vigil-proxy dbsc::store -- --nocapture`.
        println!("DBSC entry: {} bytes (P-256)", Store::entry_bytes(65));
        assert!(Store::entry_bytes(65) < 400);
    }
}
