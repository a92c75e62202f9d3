//! The rotating binding (docs/bound-sessions.md): Vigil's own companion
//! cookie beside the app's session cookie, sealed with a key the fleet
//! shares, rotated every `rotate_after`, so that a copied cookie jar shows
//! itself as soon as the copy and its owner both come back.
//!
//! * [`Sealer`] seals and unseals the companion value: AES-256-GCM over the
//!   session key, a generation number, a nonce of the issuance and its
//!   time, plus the scope (`Domain`, `Path`, `SameSite`) the companion is
//!   set with, so that any node verifies it and rotates it without a
//!   lookup. Unsealing reads untrusted bytes: every length is capped,
//!   nothing panics.
//! * [`BindingStore`] keeps, per session, the latest generation issued,
//!   the nonces of it and of the one before, and when it was issued and
//!   first presented: 20 bytes.
//! * [`check`] judges one presentation against that state and returns what
//!   it found and what applying should change, as data: nothing changes
//!   until the caller applies it as the route's mode allows.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
// ring rather than another AEAD crate: it is already built for rustls and
// the controller's signatures, its AES-GCM uses the CPU's AES instructions
// (the seal is opened on every request of a bound session), and its API
// cannot reuse a nonce by accident within one call.
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::score::secs32;
use crate::session::{SessionHashKey, SessionKey};

/// Longest companion value read, in bytes: a longer one is invalid
/// unread. A seal with the longest scope is 251 characters.
pub const MAX_COMPANION_LEN: usize = 256;
/// Longest `Domain` or `Path` carried in a seal; an app cookie with a
/// longer one gets a companion with the default scope instead.
pub const MAX_SCOPE_ATTR: usize = 48;
/// The seal format's version, its first byte.
const VERSION: u8 = 1;
const TAG_LEN: usize = 16;
/// generation, nonce, issued, session key, same-site, two lengths.
const FIXED_PLAINTEXT: usize = 4 + 4 + 4 + 16 + 1 + 1 + 1;
const MAX_SEALED: usize = 1 + NONCE_LEN + FIXED_PLAINTEXT + 2 * MAX_SCOPE_ATTR + TAG_LEN;
const AAD: &[u8] = b"vigil binding v1";
/// Chrome's cap on a cookie's lifetime: the companion must outlive any
/// app cookie it stands beside, or a browser restart would lose it.
const MAX_AGE_SECS: u64 = 400 * 86_400;
/// A presentation refreshes a state's idle clock at most this often, so
/// that a session in use is not evicted while its requests write nothing.
const SEEN_EVERY: u32 = 60;

/// The rotating binding's settings (`[binding]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingConfig {
    /// Whether Vigil issues and checks the companion cookie. Default false.
    pub enabled: bool,
    /// The companion cookie's name. Default `vigil_bind`.
    pub cookie_name: String,
    /// A generation first presented this long after its issuance is
    /// replaced on the response. Default 5 minutes.
    pub rotate_after: Duration,
    /// How long the previous generation stays valid after its successor's
    /// first presentation (requests in flight, tabs, HTTP/2 streams), and
    /// how long an issued successor may go unpresented before a request
    /// with the old generation gets it again (a lost response). Default
    /// 30 seconds.
    pub grace: Duration,
}

/// What a presentation of the companion tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Finding {
    /// A superseded generation came after its successor was presented,
    /// outside the grace; or an issuance of a generation that another
    /// issuance of the same generation replaced: two holders.
    Reused,
    /// The session had a binding that was presented, and this request
    /// brings none.
    Missing,
    /// The companion does not unseal, is sent twice with different values,
    /// or names another session.
    Invalid,
}

/// The `SameSite` of the app's session cookie, carried to the companion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// Not set by the app: the companion says `Lax`, as browsers default.
    Unset,
    /// `Lax`.
    Lax,
    /// `Strict`.
    Strict,
    /// `None`.
    None,
}

/// Where the companion is sent: the app cookie's `Domain`, `Path` and
/// `SameSite`, so that the companion goes wherever the session cookie
/// goes. Fixed-size, so that unsealing allocates nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    same_site: SameSite,
    domain: Attr,
    path: Attr,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Attr {
    len: u8,
    bytes: [u8; MAX_SCOPE_ATTR],
}

/// What a seal says: which session, which generation and issuance, when,
/// and the scope to rotate it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seal {
    /// The session key (under the hash key current when it was sealed).
    pub session: SessionKey,
    /// The generation, from 1.
    pub generation: u32,
    /// The issuance's nonce: two issuances of one generation differ.
    pub nonce: u32,
    /// When it was issued, seconds since the Unix epoch.
    pub issued_at: u32,
    /// Where the companion is sent.
    pub scope: Scope,
}

/// Why a companion value is not a seal; never shown to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnsealError {
    /// Longer than [`MAX_COMPANION_LEN`], or shorter than any seal.
    #[error("companion value length out of range")]
    Length,
    /// Not unpadded base64url.
    #[error("companion value is not base64url")]
    Encoding,
    /// Another format version.
    #[error("companion seal version not supported")]
    Version,
    /// No key of this node opens it: forged, edited or sealed elsewhere.
    #[error("companion seal does not open")]
    Seal,
    /// Opens, but its fields are not a seal any node writes.
    #[error("companion seal fields are malformed")]
    Fields,
}

/// The AEAD keys of the fleet: derived from the session hash key (and the
/// one being retired), which every node already shares and rotates with
/// an overlap, so the binding needs no secret of its own to provision.
pub struct Sealer {
    current: LessSafeKey,
    previous: Option<LessSafeKey>,
    /// Keys the deterministic successor nonces ([`Sealer::successor_nonce`]).
    successor: [u8; 32],
    random: SystemRandom,
}

/// The binding state of one session: 24 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct BindingState {
    /// The latest generation issued.
    pub generation: u32,
    /// Its issuance's nonce.
    pub nonce: u32,
    /// The nonce of the generation before (0: not known, when the state
    /// was learnt from a seal issued elsewhere).
    pub previous_nonce: u32,
    /// When the latest generation was issued.
    pub issued_at: u32,
    /// When it was first presented; 0: not yet.
    pub presented_at: u32,
    /// When a presentation last kept the state from idling out (written
    /// at most once a minute).
    pub seen_at: u32,
    /// Two holders were seen: every later request of the session, whatever
    /// generation it brings, is [`Finding::Reused`], so that neither the
    /// owner nor the copy goes on however the policy answers the first
    /// refusal (docs/bound-sessions.md, "Once reused, always reused").
    pub compromised: bool,
    /// An advance or a mark the fleet has not been told yet: the session
    /// waits, once, in the store's queue of records to publish
    /// ([`fleet`]).
    pub unsent: bool,
}

/// What a request's companion was, read once per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Companion {
    /// None sent.
    Absent,
    /// Sent but unusable.
    Invalid(UnsealError),
    /// Sent twice with different values.
    Duplicated,
    /// A seal that opened.
    Sealed(Seal),
}

/// The judgement of one session's binding: what was found, and what
/// applying changes (request side) and issues (response side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    /// The session judged.
    pub session: SessionKey,
    /// What the presentation tells; `None`: nothing wrong.
    pub finding: Option<Finding>,
    pub(crate) record: Record,
    pub(crate) issue: Issue,
    pub(crate) scope: Option<Scope>,
}

/// The request-side change a check implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record {
    Nothing,
    /// Two holders were seen: the session is marked, for good.
    Compromised,
    /// A presentation of a known issuance keeps the state from idling out.
    Seen,
    /// The current issuance was presented for the first time.
    Presented {
        generation: u32,
        nonce: u32,
    },
    /// A seal issued elsewhere (another node, before a restart) names a
    /// generation this node has not seen: learnt, as presented now.
    Adopt {
        generation: u32,
        nonce: u32,
        issued_at: u32,
    },
}

/// The response-side issuance a check implies; each applies only if the
/// state is still the one judged (compare and set), so that of many
/// requests crossing a rotation together, one rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Issue {
    Nothing,
    /// A session with no binding on this node gets generation 1.
    First,
    /// The current generation is replaced by the next.
    Rotate {
        generation: u32,
        nonce: u32,
    },
    /// An issued generation never presented is issued again with a new
    /// nonce (its response was lost).
    Again {
        generation: u32,
        nonce: u32,
    },
}

/// The binding as the engine holds it: settings, keys and states.
#[derive(Debug)]
pub(crate) struct Binding {
    pub config: BindingConfig,
    pub sealer: Sealer,
    pub store: BindingStore,
    /// The hash key the sealer's current key is derived from, to derive
    /// it again beside a previous one.
    hash_key: SessionHashKey,
}

/// Takes a session key's first eight bytes as its hash: keys are keyed
/// hashes, uniform and not chosen by clients (as the session store does).
#[derive(Debug, Default, Clone, Copy)]
struct KeyHasher(u64);

type Shard = HashMap<SessionKey, BindingState, BuildHasherDefault<KeyHasher>>;

const SHARDS: usize = 64;

/// The binding states of this node's sessions, bounded like the session
/// store: at most `max_sessions`, idle ones dropped first.
pub(crate) struct BindingStore {
    shards: Box<[Mutex<Shard>]>,
    shard_cap: usize,
    idle: u32,
    /// Sessions whose state changed in a way the fleet must learn, each
    /// at most once (its state's `unsent`), oldest first ([`fleet`]).
    unsent: Mutex<std::collections::VecDeque<SessionKey>>,
    /// Whether advances are queued for the fleet (a controller is
    /// configured); without one nothing is queued.
    publishing: std::sync::atomic::AtomicBool,
}

// === impl Binding ===

impl Binding {
    pub(crate) fn new(
        config: BindingConfig,
        hash_key: &SessionHashKey,
        max_sessions: u64,
        idle: Duration,
    ) -> Self {
        Self {
            config,
            sealer: Sealer::new(hash_key, None),
            store: BindingStore::new(max_sessions, idle),
            hash_key: hash_key.clone(),
        }
    }

    /// Also opens seals made under the retiring hash key's derived key.
    pub(crate) fn with_previous(mut self, previous: &SessionHashKey) -> Self {
        self.sealer = Sealer::new(&self.hash_key, Some(previous));
        self
    }
}

// === impl BindingConfig ===

impl Default for BindingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            cookie_name: "vigil_bind".into(),
            rotate_after: Duration::from_secs(300),
            grace: Duration::from_secs(30),
        }
    }
}

// === impl Finding ===

impl Finding {
    /// The reason code it is scored as.
    pub fn code(self) -> &'static str {
        match self {
            Finding::Reused => "binding_reused",
            Finding::Missing => "binding_missing",
            Finding::Invalid => "binding_invalid",
        }
    }
}

// === impl Scope ===

impl Scope {
    /// The default scope, for a session first seen without its app's
    /// `Set-Cookie`: the whole host, sent on cross-site requests too
    /// (`SameSite=None`), so that the companion is never missing where an
    /// app cookie of any scope on this host is sent.
    pub const DEFAULT: Scope = Scope {
        same_site: SameSite::None,
        domain: Attr::EMPTY,
        path: Attr::EMPTY,
    };

    /// The scope of an app's `Set-Cookie`; attributes too long to carry
    /// give [`Scope::DEFAULT`].
    pub fn of(domain: Option<&str>, path: Option<&str>, same_site: SameSite) -> Scope {
        match (
            Attr::new(domain.unwrap_or("")),
            Attr::new(path.unwrap_or("")),
        ) {
            (Some(domain), Some(path)) => Scope {
                same_site,
                domain,
                path,
            },
            _ => Scope::DEFAULT,
        }
    }

    /// The `Set-Cookie` value of the companion `value` in this scope:
    /// `Secure`, `HttpOnly`, a lifetime longer than any app cookie's.
    pub fn set_cookie(&self, name: &str, value: &str) -> String {
        let path = if self.path.is_empty() {
            "/"
        } else {
            self.path.as_str()
        };
        let mut out = format!("{name}={value}; Path={path}");
        if !self.domain.is_empty() {
            out.push_str("; Domain=");
            out.push_str(self.domain.as_str());
        }
        out.push_str(&format!("; Max-Age={MAX_AGE_SECS}; Secure; HttpOnly"));
        out.push_str(match self.same_site {
            SameSite::Unset | SameSite::Lax => "; SameSite=Lax",
            SameSite::Strict => "; SameSite=Strict",
            SameSite::None => "; SameSite=None",
        });
        out
    }
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("same_site", &self.same_site)
            .field("domain", &self.domain.as_str())
            .field("path", &self.path.as_str())
            .finish()
    }
}

impl Attr {
    const EMPTY: Attr = Attr {
        len: 0,
        bytes: [0; MAX_SCOPE_ATTR],
    };

    /// An attribute value as a cookie may carry it: visible ASCII without
    /// `;` and `,`, at most [`MAX_SCOPE_ATTR`] bytes.
    fn new(s: &str) -> Option<Attr> {
        let b = s.as_bytes();
        if b.len() > MAX_SCOPE_ATTR || !b.iter().all(|c| c.is_ascii_graphic() && *c != b';') {
            return None;
        }
        let mut a = Attr::EMPTY;
        a.bytes[..b.len()].copy_from_slice(b);
        a.len = u8::try_from(b.len()).ok()?;
        Some(a)
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }

    fn as_str(&self) -> &str {
        // Only visible ASCII is ever stored (`Attr::new`, `read_attr`).
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

// === impl Sealer ===

impl Sealer {
    /// The sealer of a fleet whose session hash key is `current`
    /// (`previous`: the one being retired, whose seals still open).
    pub fn new(current: &SessionHashKey, previous: Option<&SessionHashKey>) -> Self {
        Self {
            current: Self::key(current),
            previous: previous.map(Self::key),
            successor: blake3::derive_key("vigil 2026-12 binding successor", current.as_bytes()),
            random: SystemRandom::new(),
        }
    }

    /// The issuance nonce of generation `generation` of `session` following
    /// the issuance `previous_nonce` (0 for generation 1): a keyed hash of
    /// the three, never 0. Every node sharing the hash key computes the
    /// same one, so that two nodes rotating one session at once issue the
    /// identical successor instead of two that tell each other apart as
    /// reuse (docs/bound-sessions.md, "Several nodes"). Who cannot compute
    /// it: anyone without the fleet's key, so a successor is still
    /// unguessable to a client.
    pub fn successor_nonce(
        &self,
        session: &SessionKey,
        generation: u32,
        previous_nonce: u32,
    ) -> u32 {
        let mut h = blake3::Hasher::new_keyed(&self.successor);
        h.update(session.as_bytes());
        h.update(&generation.to_le_bytes());
        h.update(&previous_nonce.to_le_bytes());
        let out = h.finalize();
        let mut b = [0u8; 4];
        b.copy_from_slice(&out.as_bytes()[..4]);
        u32::from_le_bytes(b).max(1)
    }

    fn key(hash_key: &SessionHashKey) -> LessSafeKey {
        let bytes = blake3::derive_key("vigil 2026-12 binding seal", hash_key.as_bytes());
        // AES-256 takes exactly the 32 bytes derive_key returns, so this
        // cannot fail; the fallback keeps the code free of panics.
        let unbound = UnboundKey::new(&AES_256_GCM, &bytes).unwrap_or_else(|_| fallback_key());
        LessSafeKey::new(unbound)
    }

    /// Seals `seal` as a companion value (unpadded base64url). `None` only
    /// if the system's random source fails.
    pub fn seal(&self, seal: &Seal) -> Option<String> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).ok()?;
        let mut buf = Vec::with_capacity(MAX_SEALED);
        buf.extend_from_slice(&seal.generation.to_le_bytes());
        buf.extend_from_slice(&seal.nonce.to_le_bytes());
        buf.extend_from_slice(&seal.issued_at.to_le_bytes());
        buf.extend_from_slice(seal.session.as_bytes());
        buf.push(match seal.scope.same_site {
            SameSite::Unset => 0,
            SameSite::Lax => 1,
            SameSite::Strict => 2,
            SameSite::None => 3,
        });
        buf.push(seal.scope.domain.len);
        buf.extend_from_slice(seal.scope.domain.as_bytes());
        buf.push(seal.scope.path.len);
        buf.extend_from_slice(seal.scope.path.as_bytes());
        self.current
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut buf,
            )
            .ok()?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + buf.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Some(URL_SAFE_NO_PAD.encode(out))
    }

    /// A random number from the system's source (an issuance's nonce);
    /// `None` only if the source fails.
    pub(crate) fn random_u32(&self) -> Option<u32> {
        let mut b = [0u8; 4];
        self.random.fill(&mut b).ok()?;
        Some(u32::from_le_bytes(b))
    }

    /// Opens a companion value: bounded, allocation-free, never panics.
    pub fn unseal(&self, value: &[u8]) -> Result<Seal, UnsealError> {
        let min = (1 + NONCE_LEN + FIXED_PLAINTEXT + TAG_LEN).div_ceil(3) * 4 - 2;
        if value.len() > MAX_COMPANION_LEN || value.len() < min {
            return Err(UnsealError::Length);
        }
        let mut raw = [0u8; MAX_COMPANION_LEN];
        let n = URL_SAFE_NO_PAD
            .decode_slice(value, &mut raw)
            .map_err(|_| UnsealError::Encoding)?;
        let raw = raw.get_mut(..n).ok_or(UnsealError::Length)?;
        let (version, rest) = raw.split_first_mut().ok_or(UnsealError::Length)?;
        if *version != VERSION {
            return Err(UnsealError::Version);
        }
        if rest.len() < NONCE_LEN + FIXED_PLAINTEXT + TAG_LEN || rest.len() > MAX_SEALED - 1 {
            return Err(UnsealError::Length);
        }
        let (nonce, sealed) = rest.split_at_mut(NONCE_LEN);
        let mut nonce_bytes = [0u8; NONCE_LEN];
        nonce_bytes.copy_from_slice(nonce);
        // A failed open may leave the buffer scrambled: keep a copy for the
        // previous key, only when there is one.
        let mut copy = [0u8; MAX_SEALED];
        let copy = copy.get_mut(..sealed.len()).ok_or(UnsealError::Length)?;
        if self.previous.is_some() {
            copy.copy_from_slice(sealed);
        }
        let open = |key: &LessSafeKey, buf: &mut [u8]| -> Option<Seal> {
            let plain = key
                .open_in_place(
                    Nonce::assume_unique_for_key(nonce_bytes),
                    Aad::from(AAD),
                    buf,
                )
                .ok()?;
            parse_plaintext(plain)
        };
        if let Some(seal) = open(&self.current, sealed) {
            return Ok(seal);
        }
        match &self.previous {
            Some(previous) => open(previous, copy).ok_or(UnsealError::Seal),
            None => Err(UnsealError::Seal),
        }
    }
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("previous", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

/// Never used: AES-256 accepts every 32-byte key. A key of zeros would
/// seal nothing another node opens, so it fails safe.
fn fallback_key() -> UnboundKey {
    #[allow(clippy::expect_used, reason = "32 bytes is AES-256's key length")]
    UnboundKey::new(&AES_256_GCM, &[0u8; 32]).expect("AES-256 takes a 32-byte key")
}

/// The fields of an opened seal; `None` for any that no node writes.
fn parse_plaintext(p: &[u8]) -> Option<Seal> {
    let u32_at = |i: usize| -> Option<u32> {
        let b: [u8; 4] = p.get(i..i + 4)?.try_into().ok()?;
        Some(u32::from_le_bytes(b))
    };
    let generation = u32_at(0)?;
    let nonce = u32_at(4)?;
    let issued_at = u32_at(8)?;
    let session: [u8; 16] = p.get(12..28)?.try_into().ok()?;
    let same_site = match p.get(28)? {
        0 => SameSite::Unset,
        1 => SameSite::Lax,
        2 => SameSite::Strict,
        3 => SameSite::None,
        _ => return None,
    };
    let (domain, rest) = read_attr(p.get(29..)?)?;
    let (path, rest) = read_attr(rest)?;
    if !rest.is_empty() || generation == 0 || nonce == 0 {
        return None;
    }
    Some(Seal {
        session: SessionKey::from_bytes(session),
        generation,
        nonce,
        issued_at,
        scope: Scope {
            same_site,
            domain,
            path,
        },
    })
}

fn read_attr(p: &[u8]) -> Option<(Attr, &[u8])> {
    let (len, rest) = p.split_first()?;
    let len = usize::from(*len);
    let value = rest.get(..len)?;
    let attr = Attr::new(std::str::from_utf8(value).ok()?)?;
    Some((attr, rest.get(len..)?))
}

// === impl Companion ===

/// Companion values read from one request: at most this many.
pub const MAX_COMPANIONS: usize = 4;

/// The companion values a request carries (a browser sends one per scope:
/// an app with sessions on `/` and `/admin`, or a cookie a sibling host
/// tossed in on the parent domain), each opened once.
#[derive(Debug, Clone, Default)]
pub struct Companions {
    values: smallvec::SmallVec<[Result<Seal, UnsealError>; 1]>,
    /// More than [`MAX_COMPANIONS`] values were sent.
    overflow: bool,
}

/// The `name=value` pairs of a `Cookie` header value, split strictly on
/// `;` as browsers send them (RFC 6265 §4.2.1), blanks trimmed: Vigil
/// reads its own cookie, so a value like `prefs=a,vigil_bind=x` holds no
/// companion.
fn strict_pairs(line: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    line.split(|b| *b == b';').filter_map(|piece| {
        let piece = piece.trim_ascii();
        let eq = piece.iter().position(|b| *b == b'=')?;
        Some((
            piece.get(..eq)?.trim_ascii(),
            piece.get(eq + 1..)?.trim_ascii(),
        ))
    })
}

impl Companions {
    /// Reads every companion named `name` from a request's `Cookie`
    /// headers (exact name, strict split), at most [`MAX_COMPANIONS`].
    pub fn read(sealer: &Sealer, headers: &http::HeaderMap, name: &str) -> Companions {
        let mut out = Companions::default();
        let mut seen: smallvec::SmallVec<[&[u8]; 1]> = smallvec::SmallVec::new();
        for value in headers.get_all(http::header::COOKIE) {
            for (n, v) in strict_pairs(value.as_bytes()) {
                if n != name.as_bytes() || seen.contains(&v) {
                    continue;
                }
                if seen.len() == MAX_COMPANIONS {
                    out.overflow = true;
                    return out;
                }
                seen.push(v);
                out.values.push(sealer.unseal(v));
            }
        }
        out
    }

    /// The companion standing for `session` (also known as `previous`):
    /// the seal naming it (of several, the latest generation; two of one
    /// generation that differ are [`Companion::Duplicated`]). Values that
    /// do not open are ignored when one does; a seal naming only other
    /// sessions is [`UnsealError::Fields`]-invalid for this one.
    pub fn for_session(&self, session: SessionKey, previous: Option<SessionKey>) -> Companion {
        if self.overflow {
            return Companion::Duplicated;
        }
        let mut best: Option<Seal> = None;
        let mut opened = false;
        let mut first_error = None;
        for value in &self.values {
            match value {
                Ok(seal) => {
                    opened = true;
                    if seal.session != session && Some(seal.session) != previous {
                        continue;
                    }
                    match best {
                        Some(b) if b.generation > seal.generation => {}
                        Some(b) if b.generation == seal.generation && b.nonce != seal.nonce => {
                            return Companion::Duplicated;
                        }
                        _ => best = Some(*seal),
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(*e);
                }
            }
        }
        match (best, opened, first_error) {
            (Some(seal), _, _) => Companion::Sealed(seal),
            // Only others' seals: a foreign companion.
            (None, true, _) => Companion::Invalid(UnsealError::Fields),
            (None, false, Some(e)) => Companion::Invalid(e),
            (None, false, None) => Companion::Absent,
        }
    }
}

impl Companion {
    /// Reads the companion named `name` from a request's `Cookie` headers:
    /// the exact name only (Vigil reads its own cookie; no app does),
    /// split strictly on `;`. Several different values are
    /// [`Companion::Duplicated`]; [`Companions`] tells them apart per
    /// session, as the engine does.
    pub fn read(sealer: &Sealer, headers: &http::HeaderMap, name: &str) -> Companion {
        let mut found: Option<&[u8]> = None;
        for value in headers.get_all(http::header::COOKIE) {
            for (n, v) in strict_pairs(value.as_bytes()) {
                if n != name.as_bytes() {
                    continue;
                }
                match found {
                    Some(prev) if prev != v => return Companion::Duplicated,
                    _ => found = Some(v),
                }
            }
        }
        match found {
            None => Companion::Absent,
            Some(v) => match sealer.unseal(v) {
                Ok(seal) => Companion::Sealed(seal),
                Err(e) => Companion::Invalid(e),
            },
        }
    }
}

/// Judges the binding of `session` (also known as `previous` under the
/// retiring hash key) given the request's companion and the state held.
/// Changes nothing.
pub(crate) fn check(
    config: &BindingConfig,
    session: SessionKey,
    previous: Option<SessionKey>,
    companion: &Companion,
    state: Option<BindingState>,
    now: u64,
) -> Check {
    let now = secs32(now);
    let grace = secs32(config.grace.as_secs());
    let rotate_after = secs32(config.rotate_after.as_secs());
    let mut out = Check {
        session,
        finding: None,
        record: Record::Nothing,
        issue: Issue::Nothing,
        scope: None,
    };
    if state.is_some_and(|s| s.compromised) {
        // Once two holders were seen, no generation vouches for anyone.
        out.finding = Some(Finding::Reused);
        return out;
    }
    // With nothing held for the session, a seal no key opens (sealed before
    // a key rotation, by an older format, or for a binding this node lost)
    // or one naming only other sessions (a sibling host's tossed cookie,
    // an older session's) proves nothing either way: as if none were
    // sent, it is replaced.
    let unknown = state.is_none()
        && matches!(
            companion,
            Companion::Invalid(UnsealError::Seal | UnsealError::Version | UnsealError::Fields)
        );
    let seal = match companion {
        Companion::Sealed(seal) => *seal,
        _ if unknown => {
            out.issue = Issue::First;
            return out;
        }
        Companion::Absent => {
            match state {
                // A binding its holder presented, and now none: someone
                // holds the app cookie without its companion.
                Some(s) if s.presented_at != 0 || s.generation > 1 => {
                    out.finding = Some(Finding::Missing)
                }
                // Issued, never presented: the response may be in flight
                // or lost; issued again once the grace is over.
                Some(s) if now.saturating_sub(s.issued_at) >= grace => {
                    out.issue = Issue::Again {
                        generation: s.generation,
                        nonce: s.nonce,
                    }
                }
                Some(_) => {}
                None => out.issue = Issue::First,
            }
            return out;
        }
        Companion::Invalid(_) | Companion::Duplicated => {
            out.finding = Some(Finding::Invalid);
            return out;
        }
    };
    if seal.session != session && Some(seal.session) != previous {
        out.finding = Some(Finding::Invalid);
        return out;
    }
    out.scope = Some(seal.scope);
    let Some(s) = state.filter(|s| seal.generation <= s.generation) else {
        // Unknown here, or a later generation than this node has seen:
        // another node issued it (seals cannot be forged), so it is learnt.
        out.record = Record::Adopt {
            generation: seal.generation,
            nonce: seal.nonce,
            issued_at: seal.issued_at,
        };
        return out;
    };
    if seal.generation == s.generation {
        if seal.nonce != s.nonce {
            // Replaced by another issuance of the same generation, which
            // went to whoever brought the old one: two holders.
            reused(&mut out);
        } else if s.presented_at == 0 {
            out.record = Record::Presented {
                generation: s.generation,
                nonce: s.nonce,
            };
        } else if now.saturating_sub(s.presented_at) >= grace
            && now.saturating_sub(s.issued_at) >= rotate_after
        {
            out.issue = Issue::Rotate {
                generation: s.generation,
                nonce: s.nonce,
            };
        } else if now.saturating_sub(s.seen_at) >= SEEN_EVERY {
            out.record = Record::Seen;
        }
        return out;
    }
    let superseded_nonce = s.previous_nonce != 0 && seal.nonce != s.previous_nonce;
    if seal.generation + 1 < s.generation || superseded_nonce {
        reused(&mut out);
    } else if s.presented_at == 0 {
        // The successor was issued and never presented: the response that
        // carried it may have been lost. Accepted; issued again (a new
        // nonce) once the grace is over, so that whoever holds the first
        // issuance is told apart when it shows.
        if now.saturating_sub(s.issued_at) >= grace {
            out.issue = Issue::Again {
                generation: s.generation,
                nonce: s.nonce,
            };
        }
    } else if now.saturating_sub(s.presented_at) >= grace {
        reused(&mut out);
    }
    out
}

/// Two holders: found, and the session marked for good once applied.
fn reused(out: &mut Check) {
    out.finding = Some(Finding::Reused);
    out.record = Record::Compromised;
}

// === impl BindingStore ===

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut eight = [0u8; 8];
        let n = bytes.len().min(8);
        eight[..n].copy_from_slice(&bytes[..n]);
        self.0 = self.0.rotate_left(17) ^ u64::from_le_bytes(eight);
    }
}

impl BindingState {
    /// The last time the state was written, for idle expiry.
    fn touched(&self) -> u32 {
        self.issued_at.max(self.presented_at).max(self.seen_at)
    }
}

impl BindingStore {
    pub(crate) fn new(max_sessions: u64, idle: Duration) -> Self {
        let max = usize::try_from(max_sessions).unwrap_or(usize::MAX).max(1);
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            shard_cap: (max / SHARDS).max(1),
            idle: secs32(idle.as_secs()).max(1),
            unsent: Mutex::new(std::collections::VecDeque::new()),
            publishing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn shard(&self, key: &SessionKey) -> std::sync::MutexGuard<'_, Shard> {
        let i = usize::from(key.as_bytes()[15]) % self.shards.len();
        // A poisoned shard still holds consistent entries: each is
        // replaced whole.
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The state of `key`, unless it idled out by `now`.
    pub(crate) fn get(&self, key: &SessionKey, now: u64) -> Option<BindingState> {
        let now = secs32(now);
        self.shard(key)
            .get(key)
            .filter(|s| now.saturating_sub(s.touched()) < self.idle)
            .copied()
    }

    /// Replaces the state of `key` with `f` of the one held, in one step
    /// under the shard's lock; `f` returning `None` leaves it as it was.
    /// Returns what `f` returned.
    pub(crate) fn update(
        &self,
        key: SessionKey,
        now: u64,
        f: impl FnOnce(Option<BindingState>) -> Option<BindingState>,
    ) -> Option<BindingState> {
        let now32 = secs32(now);
        let mut shard = self.shard(&key);
        let held = shard
            .get(&key)
            .filter(|s| now32.saturating_sub(s.touched()) < self.idle)
            .copied();
        let next = f(held)?;
        if held.is_none() && shard.len() >= self.shard_cap && !shard.contains_key(&key) {
            self.evict(&mut shard, now32);
        }
        shard.insert(key, next);
        Some(next)
    }

    /// Makes room in a full shard: the idle first, then the least
    /// recently written sixteenth. A compromised session's state is never
    /// written again (its requests are all refused), so it would always be
    /// the oldest: it goes only when the shard holds nothing else, or
    /// idles out — else a thief could push its mark out with a flood of
    /// new sessions and be adopted afresh.
    fn evict(&self, shard: &mut Shard, now: u32) {
        shard.retain(|_, s| now.saturating_sub(s.touched()) < self.idle);
        if shard.len() < self.shard_cap {
            return;
        }
        let spare_marks = shard.values().any(|s| !s.compromised);
        let candidate = |s: &BindingState| !(spare_marks && s.compromised);
        let mut ages: Vec<u32> = shard
            .values()
            .filter(|s| candidate(s))
            .map(BindingState::touched)
            .collect();
        let k = (ages.len() / 16).max(1);
        let (_, cut, _) = ages.select_nth_unstable(k - 1);
        let cut = *cut;
        // At most k go, however many share the cut's age (a burst of
        // sessions issued in one second must not empty the shard).
        let old: Vec<SessionKey> = shard
            .iter()
            .filter(|(_, s)| candidate(s) && s.touched() <= cut)
            .map(|(k, _)| *k)
            .take(k)
            .collect();
        for key in old {
            shard.remove(&key);
        }
    }

    /// Bindings held.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

impl std::fmt::Debug for BindingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BindingStore")
            .field("shard_cap", &self.shard_cap)
            .finish_non_exhaustive()
    }
}

pub mod fleet;
#[cfg(test)]
mod tests;
