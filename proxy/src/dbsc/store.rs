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

/// Sessions that may inherit one binding at once (an app rotating its
/// session cookie makes one per rotation): past it, the oldest alias of
/// that binding is dropped (its cookie is the one the app rotated away
/// longest ago), so one bound session cannot fill the store nor every
/// node's snapshot with aliases.
pub const MAX_ALIASES: usize = 8;

/// Seconds between two updates of a binding's `touched` by proven
/// requests (the idle sweep counts in days).
pub const TOUCH_EVERY: u64 = 60;

/// One bound session: what its registration fixed, and the highest
/// refresh counter this node issued or saw on a bound cookie.
#[derive(Debug, Clone)]
pub struct Bound {
    /// The DBSC session identifier given to the browser.
    pub id: Token,
    /// The key the browser registered.
    pub key: PublicKey,
    /// The highest refresh counter this node issued or saw presented: a
    /// challenge minted under a lower one is stale here, and a bound
    /// cookie more than one refresh behind it is not accepted.
    pub counter: u32,
    /// When the session was registered.
    pub at: u64,
    /// Last registration, refresh or proven request (at most
    /// [`TOUCH_EVERY`] stale), for the idle sweep.
    pub touched: u64,
    /// The sessions that inherited this binding, oldest first (at most
    /// [`MAX_ALIASES`]).
    pub aliases: Vec<SessionKey>,
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

impl Shard {
    fn len(&self) -> usize {
        self.by_session.len() + self.aliases.len()
    }

    /// Drops the entries idle past `idle`: aliases made, and bindings
    /// last used, that long ago.
    fn sweep(&mut self, now: u64, idle: u64) {
        self.aliases
            .retain(|_, (_, at)| at.saturating_add(idle) > now);
        let mut gone = Vec::new();
        self.by_session.retain(|_, b| {
            let keep = b.touched.saturating_add(idle) > now;
            if !keep {
                gone.push(b.id);
            }
            keep
        });
        for id in gone {
            self.by_id.remove(&id);
        }
    }

    /// Drops the entry used least recently (an alias by when it was made,
    /// a binding by its last use), to make room for a record of the
    /// fleet's. Whether there was one.
    fn evict_oldest(&mut self) -> bool {
        let alias = self
            .aliases
            .iter()
            .map(|(k, (_, at))| (*at, *k))
            .min_by_key(|(at, _)| *at);
        let root = self
            .by_session
            .iter()
            .map(|(k, b)| (b.touched, *k))
            .min_by_key(|(at, _)| *at);
        match (alias, root) {
            (Some((a, k)), Some((r, _))) if a <= r => self.aliases.remove(&k).is_some(),
            (Some((_, k)), None) => self.aliases.remove(&k).is_some(),
            (_, Some((_, k))) => match self.by_session.remove(&k) {
                Some(b) => {
                    self.by_id.remove(&b.id);
                    true
                }
                None => false,
            },
            (None, None) => false,
        }
    }
}

#[derive(Debug, Default)]
struct Offers {
    by_challenge: HashMap<OfferToken, Pending>,
    /// When each session was first offered: a session is offered once, and
    /// its `require` window runs from then only.
    by_session: HashMap<SessionKey, u64>,
}

/// An offer's challenge as sent (stateless: MAC'd, see `super`).
pub type OfferToken = [u8; 32];

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
    /// Bound, and the cookie is current (or one refresh behind, unexpired).
    Proven,
    /// Bound, and the cookie is missing, expired or not this session's:
    /// the refresh challenge is owed.
    Unproven {
        /// The session's id and its refresh counter here.
        id: Token,
        counter: u32,
    },
    /// The store could not be read (a poisoned lock): no verdict.
    Unavailable,
}

/// A bound cookie whose seal verified: what it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presented {
    /// The DBSC session it was issued to.
    pub id: Token,
    /// Until when it is honoured (its `Max-Age` plus the grace).
    pub until: u64,
    /// The refresh counter it was issued at.
    pub counter: u32,
}

/// What [`Store::bind`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bind {
    /// Bound now.
    New,
    /// Bound already, to this very registration: nothing changed.
    Same,
    /// Bound already to another registration, which stays.
    Other,
    /// Bound now (the fleet's record), and the shard being full of entries
    /// in use, the one used least recently was dropped to make room.
    Evicted,
    /// Bound now (the fleet's record) in place of another registration of
    /// the session this node had taken: the controller took a different
    /// one first, and the local one lost (the registration race, or a
    /// thief's registration in the window before the owner's record came).
    Replaced,
}

/// One entry of the store as the snapshot and the fleet carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A registered session.
    Root {
        session: SessionKey,
        id: Token,
        key: PublicKey,
        counter: u32,
        at: u64,
        touched: u64,
    },
    /// A session that inherited `root`'s binding.
    Alias {
        session: SessionKey,
        root: SessionKey,
        at: u64,
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
    /// lookups lock one shard (on every node: the shard is a function of
    /// the session key alone).
    pub fn id_for(session: &SessionKey) -> Token {
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

    /// Whether `session` may be offered a registration now: not offered
    /// before here (a session is offered once: a re-offer would reopen its
    /// `require` window and let whoever asked next register), not bound,
    /// and fewer than `capacity` offers held (expired ones swept first).
    /// When it may, the offer is recorded under `challenge`.
    pub fn offer(
        &self,
        session: SessionKey,
        also: Vec<SessionKey>,
        now: u64,
        window: u64,
        capacity: usize,
        challenge: OfferToken,
    ) -> bool {
        if self.is_bound(&session) {
            return false;
        }
        let Ok(mut offers) = self.offers.lock() else {
            return false;
        };
        if offers.by_session.contains_key(&session) {
            return false;
        }
        if offers.by_session.len() >= capacity {
            offers
                .by_challenge
                .retain(|_, p| p.at.saturating_add(window) > now);
            offers
                .by_session
                .retain(|_, at| at.saturating_add(window) > now);
            if offers.by_session.len() >= capacity {
                return false;
            }
        }
        offers.by_challenge.insert(
            challenge,
            Pending {
                session,
                also,
                at: now,
            },
        );
        offers.by_session.insert(session, now);
        true
    }

    /// Takes this node's record of the offer `challenge` (whose seal the
    /// caller verified for `session`): the other sessions opened with it.
    /// Empty when this node did not make the offer (it was made by
    /// another node of the fleet).
    pub fn take_offer(
        &self,
        challenge: &OfferToken,
        session: &SessionKey,
    ) -> Result<Vec<SessionKey>, StoreError> {
        let mut offers = self.offers.lock().map_err(|_| StoreError::Unavailable)?;
        offers.by_session.remove(session);
        match offers.by_challenge.remove(challenge) {
            Some(p) if p.session == *session => Ok(p.also),
            _ => Ok(Vec::new()),
        }
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

    /// The binding `root` holds, cloned.
    pub fn bound(&self, root: &SessionKey) -> Option<Bound> {
        self.shard_for(root).ok()?.by_session.get(root).cloned()
    }

    /// `session` inherits the binding of `root` (a bound session, not an
    /// alias, held here): from now on it is proven by `root`'s bound
    /// cookies. Nothing when `session` is bound already or `root` is not
    /// held here. Counted against `capacity` like a binding (idle entries
    /// swept first; `Full` when none is); past [`MAX_ALIASES`] for one
    /// root, its oldest alias is dropped.
    pub fn alias(
        &self,
        session: SessionKey,
        root: SessionKey,
        now: u64,
        limits: (usize, u64),
    ) -> Result<bool, StoreError> {
        if session == root {
            return Ok(false);
        }
        let (capacity, idle) = limits;
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        {
            let mut shard = self.shard_for(&session)?;
            if shard.by_session.contains_key(&session) || shard.aliases.contains_key(&session) {
                return Ok(false);
            }
            if shard.len() >= per_shard {
                shard.sweep(now, idle);
                if shard.len() >= per_shard {
                    return Err(StoreError::Full);
                }
            }
        }
        // One shard locked at a time (no lock order to keep): the root's
        // list first, then the alias itself.
        let dropped = {
            let mut shard = self.shard_for(&root)?;
            let Some(b) = shard.by_session.get_mut(&root) else {
                return Ok(false);
            };
            b.aliases.push(session);
            (b.aliases.len() > MAX_ALIASES).then(|| b.aliases.remove(0))
        };
        if let Some(old) = dropped {
            let mut shard = self.shard_for(&old)?;
            if shard.aliases.get(&old).is_some_and(|(r, _)| *r == root) {
                shard.aliases.remove(&old);
            }
        }
        let mut shard = self.shard_for(&session)?;
        if shard.by_session.contains_key(&session) {
            return Ok(false);
        }
        Ok(shard.aliases.insert(session, (root, now)).is_none())
    }

    /// Binds `session` to `key` under `id` (made by [`Store::id_for`],
    /// here or on the node that verified the registration). A session
    /// already bound keeps its binding: the first registration wins (a
    /// thief holding a copy cannot re-bind it to his own key) — unless
    /// `replace`, for the fleet's record, which is the first registration
    /// the controller took and so the fleet's first (two nodes that each
    /// took one in the window before either heard of the other end with
    /// the controller's).
    #[allow(clippy::too_many_arguments)] // each is one fact of the binding
    pub fn bind(
        &self,
        session: SessionKey,
        key: PublicKey,
        id: Token,
        at: u64,
        now: u64,
        limits: (usize, u64),
        replace: bool,
    ) -> Result<Bind, StoreError> {
        let (capacity, idle) = limits;
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        if Self::shard_of(&id) != usize::from(session.as_bytes()[0]) % SHARDS {
            // Not an id made for this session: never from a Vigil node.
            return Ok(Bind::Other);
        }
        let mut shard = self.shard_for(&session)?;
        let mut aliases = Vec::new();
        let mut made = Bind::New;
        if let Some(b) = shard.by_session.get(&session) {
            if b.id == id && b.key == key {
                return Ok(Bind::Same);
            }
            if !replace {
                return Ok(Bind::Other);
            }
            let old = b.id;
            made = Bind::Replaced;
            shard.by_id.remove(&old);
            // Its aliases are of the session, whichever key it is bound to.
            aliases = shard
                .by_session
                .remove(&session)
                .map(|b| b.aliases)
                .unwrap_or_default();
        } else if shard.aliases.contains_key(&session) {
            if !replace {
                return Ok(Bind::Other);
            }
            shard.aliases.remove(&session);
            made = Bind::Replaced;
        }
        if shard.by_id.contains_key(&id) {
            return Ok(Bind::Other);
        }
        if shard.len() >= per_shard {
            shard.sweep(now, idle);
            if shard.len() >= per_shard {
                // The fleet's record is a binding the owner's browser holds
                // on every node: not taking it would leave the session
                // unbound here. It takes the place of the entry used least
                // recently; a local registration is refused instead (503).
                if !replace || !shard.evict_oldest() {
                    return Err(StoreError::Full);
                }
                made = Bind::Evicted;
            }
        }
        shard.by_id.insert(id, session);
        shard.by_session.insert(
            session,
            Bound {
                id,
                key,
                counter: 0,
                at,
                touched: now.max(at),
                aliases,
            },
        );
        Ok(made)
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

    /// A refresh proof of a challenge minted at refresh counter `signed`
    /// verified: unless a refresh at or past it happened here since (the
    /// challenge is stale, or the proof replayed), moves the counter past
    /// it and returns the new counter, the one of the next bound cookie.
    pub fn refreshed(&self, id: &Token, signed: u32, now: u64) -> Result<Option<u32>, StoreError> {
        let mut guard = self.shards[Self::shard_of(id)]
            .lock()
            .map_err(|_| StoreError::Unavailable)?;
        let shard = &mut *guard;
        let Some(b) = shard
            .by_id
            .get(id)
            .and_then(|s| shard.by_session.get_mut(s))
        else {
            return Ok(None);
        };
        if signed < b.counter {
            return Ok(None);
        }
        b.counter = signed.saturating_add(1);
        b.touched = now;
        Ok(Some(b.counter))
    }

    /// Where `session` stands given the bound cookie the request carries
    /// (its seal verified). Proven when the cookie is of the session's
    /// binding, unexpired, and at most one refresh behind the newest this
    /// node knows (the previous cookie stays good until its own expiry for
    /// requests sent just before a refresh). A poisoned lock stands as
    /// [`Standing::Unavailable`] (answered `503`: a `403` would hand out a
    /// challenge for no session).
    pub fn standing(
        &self,
        session: &SessionKey,
        cookie: Option<&Presented>,
        now: u64,
        window: u64,
    ) -> Standing {
        const UNAVAILABLE: Standing = Standing::Unavailable;
        let Ok(shard) = self.shard_for(session) else {
            return UNAVAILABLE;
        };
        if let Some(&(root, used)) = shard.aliases.get(session) {
            drop(shard);
            let Ok(mut shard) = self.shard_for(&root) else {
                return UNAVAILABLE;
            };
            let standing = match shard.by_session.get_mut(&root) {
                Some(b) => Self::judge(b, cookie, now),
                // The binding it inherited was swept as idle.
                None => Standing::Unbound { pending: false },
            };
            drop(shard);
            // In use: not idle either (its time is its last use, throttled
            // as the root's), so a rotated session is not swept, and left
            // unbound, while the browser uses it.
            if standing == Standing::Proven && now >= used.saturating_add(TOUCH_EVERY) {
                let Ok(mut shard) = self.shard_for(session) else {
                    return UNAVAILABLE;
                };
                if let Some((_, at)) = shard.aliases.get_mut(session) {
                    *at = (*at).max(now);
                }
            }
            return standing;
        }
        drop(shard);
        let Ok(mut shard) = self.shard_for(session) else {
            return UNAVAILABLE;
        };
        let Some(b) = shard.by_session.get_mut(session) else {
            drop(shard);
            let Ok(offers) = self.offers.lock() else {
                return UNAVAILABLE;
            };
            let pending = offers
                .by_session
                .get(session)
                .is_some_and(|at| at.saturating_add(window) > now);
            return Standing::Unbound { pending };
        };
        Self::judge(b, cookie, now)
    }

    fn judge(b: &mut Bound, cookie: Option<&Presented>, now: u64) -> Standing {
        let proven = cookie.is_some_and(|c| {
            c.id == b.id && now < c.until && c.counter.saturating_add(1) >= b.counter
        });
        match cookie {
            Some(c) if proven => {
                // A cookie of a refresh made on another node: from now on
                // this node holds its challenges and cookies to it.
                b.counter = b.counter.max(c.counter);
                // In use: not idle (refreshes happen on whichever node the
                // browser reaches; every node sees its requests).
                if now >= b.touched.saturating_add(TOUCH_EVERY) {
                    b.touched = now;
                }
                Standing::Proven
            }
            _ => Standing::Unproven {
                id: b.id,
                counter: b.counter,
            },
        }
    }

    /// Every entry, for the snapshot: bound sessions first, then aliases.
    pub fn entries(&self) -> Vec<Entry> {
        let mut roots = Vec::new();
        let mut aliases = Vec::new();
        for shard in &self.shards {
            let Ok(shard) = shard.lock() else { continue };
            for (session, b) in &shard.by_session {
                roots.push(Entry::Root {
                    session: *session,
                    id: b.id,
                    key: b.key.clone(),
                    counter: b.counter,
                    at: b.at,
                    touched: b.touched,
                });
            }
            for (session, (root, at)) in &shard.aliases {
                aliases.push(Entry::Alias {
                    session: *session,
                    root: *root,
                    at: *at,
                });
            }
        }
        // Oldest first: restored in this order, each root's list of
        // aliases keeps its order.
        aliases.sort_by_key(|e| match e {
            Entry::Alias { at, .. } => *at,
            Entry::Root { .. } => 0,
        });
        roots.extend(aliases);
        roots
    }

    /// Takes back an entry of a snapshot; whether it was new.
    pub fn restore(&self, entry: Entry, now: u64, limits: (usize, u64)) -> bool {
        match entry {
            Entry::Root {
                session,
                id,
                key,
                counter,
                at,
                touched,
            } => {
                let (_, idle) = limits;
                if touched.saturating_add(idle) <= now {
                    return false;
                }
                let bound = self.bind(session, key, id, at, touched, limits, false);
                if bound == Ok(Bind::New)
                    && let Ok(mut shard) = self.shard_for(&session)
                    && let Some(b) = shard.by_session.get_mut(&session)
                {
                    b.counter = counter;
                    b.touched = touched;
                }
                bound == Ok(Bind::New)
            }
            Entry::Alias { session, root, at } => {
                let (_, idle) = limits;
                at.saturating_add(idle) > now && self.alias(session, root, at, limits) == Ok(true)
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

    fn bind(s: &Store, k: SessionKey, now: u64, limits: (usize, u64)) -> Result<Token, StoreError> {
        let id = Store::id_for(&k);
        match s.bind(k, key(), id, now, now, limits, false)? {
            Bind::New => Ok(id),
            other => panic!("{other:?}"),
        }
    }

    fn cookie(id: Token, until: u64, counter: u32) -> Presented {
        Presented { id, until, counter }
    }

    #[test]
    fn first_registration_wins_and_counters_move() {
        let s = Store::default();
        let k = SessionKey::from_bytes([7; 16]);
        let id = bind(&s, k, 10, (10, 1000)).unwrap();
        let other = Store::id_for(&k);
        assert_eq!(
            s.bind(k, key(), other, 10, 10, (10, 1000), false),
            Ok(Bind::Other)
        );
        assert_eq!(
            s.bind(k, key(), id, 10, 10, (10, 1000), false),
            Ok(Bind::Same)
        );
        assert_eq!(
            s.standing(&k, Some(&cookie(id, 100, 0)), 50, 30),
            Standing::Proven
        );
        // Expired, another session's, or none: unproven.
        for c in [Some(cookie(id, 50, 0)), Some(cookie(other, 100, 0)), None] {
            assert!(matches!(
                s.standing(&k, c.as_ref(), 50, 30),
                Standing::Unproven { .. }
            ));
        }
        // A challenge at counter 0 refreshes once; then it is stale.
        assert_eq!(s.refreshed(&id, 0, 60), Ok(Some(1)));
        assert_eq!(s.refreshed(&id, 0, 61), Ok(None));
        assert_eq!(s.refreshed(&id, 1, 62), Ok(Some(2)));
        // The previous cookie (counter 1) until its own expiry; two behind
        // (counter 0) no longer.
        assert_eq!(
            s.standing(&k, Some(&cookie(id, 100, 1)), 70, 30),
            Standing::Proven
        );
        assert!(matches!(
            s.standing(&k, Some(&cookie(id, 100, 0)), 70, 30),
            Standing::Unproven { counter: 2, .. }
        ));
    }

    #[test]
    fn the_fleets_record_replaces_a_different_local_binding() {
        let s = Store::default();
        let k = SessionKey::from_bytes([5; 16]);
        let thiefs = bind(&s, k, 10, (10, 1000)).unwrap();
        let owners = Store::id_for(&k);
        assert_eq!(
            s.bind(k, key(), owners, 5, 20, (10, 1000), true),
            Ok(Bind::Replaced)
        );
        assert!(s.by_id(&thiefs).unwrap().is_none());
        // Again: held already, nothing replaced.
        assert_eq!(
            s.bind(k, key(), owners, 5, 21, (10, 1000), true),
            Ok(Bind::Same)
        );
        assert!(s.by_id(&owners).unwrap().is_some());
        // An id that is not of the session's shard is never a node's.
        let mut foreign = owners;
        foreign[0] ^= 1;
        assert_eq!(
            s.bind(
                SessionKey::from_bytes([6; 16]),
                key(),
                foreign,
                5,
                20,
                (10, 1000),
                true
            ),
            Ok(Bind::Other)
        );
    }

    #[test]
    fn a_cookie_of_a_refresh_elsewhere_moves_the_counter_here() {
        let s = Store::default();
        let k = SessionKey::from_bytes([9; 16]);
        let id = bind(&s, k, 10, (10, 1000)).unwrap();
        // Another node refreshed three times: its cookie is proven here,
        // and challenges minted here before it are stale from then on.
        assert_eq!(
            s.standing(&k, Some(&cookie(id, 100, 3)), 50, 30),
            Standing::Proven
        );
        assert_eq!(s.refreshed(&id, 0, 51), Ok(None));
        assert_eq!(s.refreshed(&id, 3, 51), Ok(Some(4)));
    }

    #[test]
    fn full_store_refuses_and_idle_entries_make_room() {
        let s = Store::default();
        // Capacity 16: one per shard; two keys in shard 0.
        let a = SessionKey::from_bytes([0; 16]);
        let b = SessionKey::from_bytes([16; 16]);
        bind(&s, a, 10, (16, 100)).unwrap();
        assert_eq!(bind(&s, b, 20, (16, 100)), Err(StoreError::Full));
        bind(&s, b, 110, (16, 100)).unwrap();
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn offers_are_single_use_bounded_and_expire() {
        let s = Store::default();
        let k = SessionKey::from_bytes([1; 16]);
        assert!(s.offer(k, vec![SessionKey::from_bytes([8; 16])], 10, 30, 1, [1; 32]));
        assert!(!s.offer(
            SessionKey::from_bytes([2; 16]),
            Vec::new(),
            11,
            30,
            1,
            [2; 32]
        ));
        assert_eq!(
            s.standing(&k, None, 20, 30),
            Standing::Unbound { pending: true }
        );
        assert_eq!(
            s.take_offer(&[1; 32], &k),
            Ok(vec![SessionKey::from_bytes([8; 16])])
        );
        assert_eq!(s.take_offer(&[1; 32], &k), Ok(Vec::new()));
        // Offered once: the window is not reopened.
        let other = SessionKey::from_bytes([3; 16]);
        assert!(s.offer(other, Vec::new(), 50, 30, 2, [3; 32]));
        assert!(!s.offer(other, Vec::new(), 60, 30, 2, [4; 32]));
        assert!(!s.offer(other, Vec::new(), 90, 30, 2, [5; 32]));
        assert_eq!(
            s.standing(&other, None, 90, 30),
            Standing::Unbound { pending: false }
        );
    }

    #[test]
    fn an_alias_is_proven_by_its_roots_cookie() {
        let s = Store::default();
        let root = SessionKey::from_bytes([1; 16]);
        let new = SessionKey::from_bytes([2; 16]);
        let id = bind(&s, root, 10, (32, 1000)).unwrap();
        assert_eq!(s.alias(new, root, 20, (32, 1000)), Ok(true));
        assert_eq!(s.root(&new), Some(root));
        assert!(s.is_bound(&new));
        assert_eq!(
            s.standing(&new, Some(&cookie(id, 100, 0)), 50, 30),
            Standing::Proven
        );
        assert!(matches!(
            s.standing(&new, None, 50, 30),
            Standing::Unproven { .. }
        ));
        // Bound already: neither offered nor bound again.
        assert!(!s.offer(new, Vec::new(), 50, 30, 10, [6; 32]));
        assert_eq!(
            s.bind(new, key(), Store::id_for(&new), 50, 50, (32, 1000), false),
            Ok(Bind::Other)
        );
    }

    #[test]
    fn entries_come_back() {
        let s = Store::default();
        let root = SessionKey::from_bytes([1; 16]);
        let id = bind(&s, root, 10, (32, 1000)).unwrap();
        s.alias(SessionKey::from_bytes([2; 16]), root, 20, (32, 1000))
            .unwrap();
        s.refreshed(&id, 0, 30).unwrap();
        let back = Store::default();
        for e in s.entries() {
            assert!(back.restore(e, 40, (32, 1000)));
        }
        assert_eq!(back.by_id(&id).unwrap().unwrap().counter, 1);
        assert_eq!(back.root(&SessionKey::from_bytes([2; 16])), Some(root));
        // Idle past the timeout: left out.
        let late = Store::default();
        assert!(
            !s.entries()
                .into_iter()
                .any(|e| matches!(e, Entry::Root { .. }) && late.restore(e, 2_000, (32, 1000)))
        );
    }

    /// Finding 4: aliases count against the store's capacity, and one
    /// binding holds at most `MAX_ALIASES` (the oldest dropped first).
    #[test]
    fn aliases_are_bounded_per_root_and_by_capacity() {
        let s = Store::default();
        let root = SessionKey::from_bytes([1; 16]);
        bind(&s, root, 10, (1_000, 1_000)).unwrap();
        let alias = |i: u8| {
            let mut k = [i; 16];
            k[0] = 2;
            SessionKey::from_bytes(k)
        };
        for i in 0..=u8::try_from(MAX_ALIASES).unwrap() {
            assert_eq!(
                s.alias(alias(i), root, 20 + u64::from(i), (1_000, 1_000)),
                Ok(true)
            );
        }
        assert_eq!(s.root(&alias(0)), None, "the oldest was dropped");
        for i in 1..=u8::try_from(MAX_ALIASES).unwrap() {
            assert_eq!(s.root(&alias(i)), Some(root));
        }
        assert_eq!(s.bound(&root).unwrap().aliases.len(), MAX_ALIASES);
        // Capacity 16: one entry per shard. Shard 3 holds a binding: no
        // alias fits there; nor is one made of a root not held here.
        let tight = Store::default();
        let root = SessionKey::from_bytes([3; 16]);
        bind(&tight, root, 10, (16, 1_000)).unwrap();
        assert_eq!(
            tight.alias(SessionKey::from_bytes([19; 16]), root, 20, (16, 1_000)),
            Err(StoreError::Full)
        );
        assert_eq!(
            tight.alias(
                SessionKey::from_bytes([4; 16]),
                SessionKey::from_bytes([5; 16]),
                20,
                (16, 1_000)
            ),
            Ok(false)
        );
    }

    /// Finding 8: a binding in use is not idle, though never refreshed
    /// here (its refreshes happen on other nodes): proven requests keep it
    /// from the sweep.
    #[test]
    fn proven_requests_keep_a_binding_from_the_idle_sweep() {
        let s = Store::default();
        let a = SessionKey::from_bytes([0; 16]);
        let id = bind(&s, a, 10, (16, 100)).unwrap();
        assert_eq!(
            s.standing(&a, Some(&cookie(id, 1_000, 0)), 10 + TOUCH_EVERY, 30),
            Standing::Proven
        );
        assert_eq!(s.bound(&a).unwrap().touched, 10 + TOUCH_EVERY);
        // Within `TOUCH_EVERY` of the last: not written again.
        s.standing(&a, Some(&cookie(id, 1_000, 0)), 11 + TOUCH_EVERY, 30);
        assert_eq!(s.bound(&a).unwrap().touched, 10 + TOUCH_EVERY);
        // Past `idle` from registration, not from last use: no room.
        let b = SessionKey::from_bytes([16; 16]);
        assert_eq!(bind(&s, b, 120, (16, 100)), Err(StoreError::Full));
        bind(&s, b, 10 + TOUCH_EVERY + 100, (16, 100)).unwrap();
    }

    /// An alias in use is not idle either: its rotated session is not
    /// swept, and left unbound, while the browser uses it.
    #[test]
    fn proven_requests_keep_an_alias_from_the_idle_sweep() {
        let s = Store::default();
        let root = SessionKey::from_bytes([1; 16]);
        let new = SessionKey::from_bytes([0; 16]);
        let id = bind(&s, root, 10, (16, 100)).unwrap();
        assert_eq!(s.alias(new, root, 10, (16, 100)), Ok(true));
        assert_eq!(
            s.standing(&new, Some(&cookie(id, 1_000, 0)), 10 + TOUCH_EVERY, 30),
            Standing::Proven
        );
        // Shard 0 (the alias's) is full: past `idle` from the alias's
        // making, but not from its last use, there is no room.
        let other = SessionKey::from_bytes([16; 16]);
        assert_eq!(bind(&s, other, 120, (16, 100)), Err(StoreError::Full));
        assert_eq!(s.root(&new), Some(root));
    }

    /// Finding 9: a poisoned lock is an outage, not a verdict.
    #[test]
    fn a_poisoned_shard_stands_unavailable() {
        let s = Store::default();
        let k = SessionKey::from_bytes([0; 16]);
        let id = bind(&s, k, 10, (16, 100)).unwrap();
        std::thread::scope(|t| {
            let _ = t
                .spawn(|| {
                    let _held = s.shards[0].lock();
                    panic!("poisons shard 0");
                })
                .join();
        });
        assert_eq!(
            s.standing(&k, Some(&cookie(id, 1_000, 0)), 20, 30),
            Standing::Unavailable
        );
        assert_eq!(s.by_id(&id).err(), Some(StoreError::Unavailable));
    }

    #[test]
    fn entry_size_is_reported() {
        // Printed by `cargo test -p vigil-proxy dbsc::store -- --nocapture`.
        println!("DBSC entry: {} bytes (P-256)", Store::entry_bytes(65));
        assert!(Store::entry_bytes(65) < 400);
    }
}
