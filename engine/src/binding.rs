//! The rotating binding (docs/bound-sessions.md): Vigil's own companion
//! cookie beside the app's session cookie, sealed with a key the fleet
//! shares, rotated every `rotate_after`, so that a copied cookie jar shows
//! itself as soon as the copy and its owner both come back.
//!
//! * [`Sealer`] seals and unseals the companion value: ChaCha20-Poly1305
//!   under a key of its own per seal (format 3: derived from a random
//!   128-bit salt), over the session key, a generation number, a nonce of
//!   the issuance and its time, plus the scope (`Domain`, `Path`,
//!   `SameSite`, `Partitioned`) the companion is set with, so that any
//!   node verifies it and rotates it without a lookup. Format 2 (the same
//!   with AES-256-GCM) and format 1 seals still open.
//!   Unsealing reads untrusted bytes: every length is capped, nothing
//!   panics.
//! * [`BindingStore`] keeps, per session, the latest generation issued,
//!   the nonces of it and of the one before, and when it was issued and
//!   first presented, and two flags: 28 bytes.
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
// the controller's signatures, it has both AEADs the formats use, and its
// API cannot reuse a nonce by accident within one call. Format 3 is
// ChaCha20-Poly1305 because each seal has a key of its own: a ChaCha key
// needs no set-up, where every AES-GCM key costs a key schedule and the
// GHASH tables (format 2 spent most of an opening there; figures in
// docs/performance.md, "Rotating binding"). XChaCha20-Poly1305 under the
// master key with a random 192-bit nonce is the same construction (its
// HChaCha20 subkey plays the part of the BLAKE3 one) but needs another
// crate for a few tens of nanoseconds.
use ring::aead::{
    AES_256_GCM, Aad, Algorithm, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey,
};
use ring::rand::{SecureRandom, SystemRandom};

use crate::score::secs32;
use crate::session::{SessionHashKey, SessionKey};

/// Longest companion value read, in characters: a longer one is invalid
/// unread. A seal with the longest scope is 766 characters; one without
/// `Domain` and `Path` 86.
pub const MAX_COMPANION_LEN: usize = 768;
/// Longest `Domain` or `Path` carried in a seal (a DNS name is at most
/// 253). A longer `Path` is cut to its longest prefix ending in `/` that
/// fits, so that the companion is sent wherever the app cookie is (and on
/// some sibling paths besides); a longer `Domain` cannot be a host's, and
/// gives the default scope.
pub const MAX_SCOPE_ATTR: usize = 255;
/// The prefix of a companion's name in the host-wide scope: a browser
/// takes a `__Host-` cookie only from the host itself (`Secure`, `Path=/`,
/// no `Domain`), so a sibling host cannot set or replace one.
pub const HOST_PREFIX: &str = "__Host-";
/// The seal format's version, its first byte: 3 seals, 2 and 1 still
/// open.
const VERSION: u8 = 3;
const VERSION_2: u8 = 2;
const VERSION_1: u8 = 1;
/// Formats 3 and 2: the random salt from which each seal's own key is
/// derived.
const SALT_LEN: usize = 16;
const TAG_LEN: usize = 16;
/// generation, nonce, issued, session key, same-site (and flags), two
/// lengths.
const FIXED_PLAINTEXT: usize = 4 + 4 + 4 + 16 + 1 + 1 + 1;
/// The longest sealed part (plaintext and tag) of either format.
const MAX_SEALED: usize = FIXED_PLAINTEXT + 2 * MAX_SCOPE_ATTR + TAG_LEN;
/// The longest seal of either format, decoded.
const MAX_RAW: usize = 1 + SALT_LEN + MAX_SEALED;
const AAD_1: &[u8] = b"vigil binding v1";
/// Format 1 carried at most this many bytes of `Domain` and of `Path`.
const MAX_SCOPE_ATTR_1: usize = 48;
/// In the same-site byte of formats 2 and 3: the app cookie is
/// `Partitioned`.
const PARTITIONED: u8 = 0x80;
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
    /// The `Domain` of companions for sessions whose app cookie Vigil has
    /// not seen set (sessions that predate Vigil, or a binding lost):
    /// the app's cookie domain, for an app whose session cookie is
    /// domain-wide. Default none: the host-wide `__Host-` companion.
    pub domain: Option<String>,
    /// Whether the response that completes a step-up or confirmation of a
    /// session also issues a new generation, so that a copy taken before
    /// the owner proved themselves is superseded at once. Default true.
    pub rotate_on_step_up: bool,
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
    /// Not set by the app: nor on the companion, so that the browser
    /// applies its own default (`Lax`, with Chrome's two-minute allowance
    /// for top-level `POST`s, or `None`) to both alike.
    Unset,
    /// `Lax`.
    Lax,
    /// `Strict`.
    Strict,
    /// `None`.
    None,
}

/// Where the companion is sent: the app cookie's `Domain`, `Path`,
/// `SameSite` and `Partitioned`, so that the companion goes wherever the
/// session cookie goes. Fixed-size, so that unsealing allocates nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    same_site: SameSite,
    partitioned: bool,
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
    /// Format 3: keys each seal's own ChaCha20-Poly1305 key from its salt.
    current: [u8; 32],
    previous: Option<[u8; 32]>,
    /// Format 2: keys each seal's own AES-256-GCM key from its salt;
    /// opened only.
    current_2: [u8; 32],
    previous_2: Option<[u8; 32]>,
    /// Format 1: one AES key, random nonces; opened only.
    current_1: LessSafeKey,
    previous_1: Option<LessSafeKey>,
    /// Keys the deterministic successor nonces ([`Sealer::successor_nonce`]).
    successor: [u8; 32],
    random: SystemRandom,
}

/// The binding state of one session: 28 bytes.
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
    /// The latest issuance was scoped with a `Domain` (sent to sibling
    /// hosts too): only then may an issuance lost before it was presented
    /// be issued again on [`BindingConfig::domain`]; a host-only one is
    /// issued again host-only.
    pub domain_wide: bool,
}

/// What a request's companion was, read once per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "a seal carries its scope inline (up to 255 bytes of Domain and of Path) so that opening one allocates nothing; a Companion lives on the stack for one request and is never stored"
)]
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
    /// The request brought this session's companion under the name
    /// without [`HOST_PREFIX`] only (set before the prefix was used): a
    /// host-wide issuance then also expires that one.
    pub(crate) unprefixed: bool,
    /// The generation and nonce of the seal judged, if one named the
    /// session: a rotation on a confirmation starts from it, never from a
    /// state it does not match.
    pub(crate) presented: Option<(u32, u32)>,
    /// The request's host lies under [`BindingConfig::domain`]: only then
    /// is that domain a companion's fallback scope.
    pub(crate) in_domain: bool,
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
        domain_wide: bool,
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
            domain: None,
            rotate_on_step_up: true,
        }
    }
}

impl BindingConfig {
    /// The scope of a companion for a session whose app cookie was not
    /// seen set, on a request for `host` (`in_domain`: see
    /// [`BindingConfig::covers`]): host-wide (or on
    /// [`BindingConfig::domain`] when the host lies under it), `Path=/`,
    /// `SameSite=None`, so that it is sent wherever an app cookie of any
    /// scope on this host (or domain) could be.
    pub fn fallback_scope(&self, in_domain: bool) -> Scope {
        match self.domain.as_deref() {
            Some(d) if in_domain => Scope::of(Some(d), Some("/"), SameSite::None),
            _ => Scope::DEFAULT,
        }
    }

    /// Whether a request for `host` (without port) may be given a
    /// companion on [`BindingConfig::domain`]: the host is the domain or
    /// lies under it (RFC 6265 §5.1.3 domain-matching, ASCII
    /// case-insensitive). A browser refuses a `Domain` the host is not
    /// under; for such a host the companion stays host-wide.
    pub fn covers(&self, host: &str) -> bool {
        let Some(d) = self.domain.as_deref() else {
            return false;
        };
        let host = host.trim_end_matches('.');
        if host.eq_ignore_ascii_case(d) {
            return true;
        }
        host.len() > d.len() + 1
            && host
                .get(host.len() - d.len()..)
                .is_some_and(|tail| tail.eq_ignore_ascii_case(d))
            && host.as_bytes()[host.len() - d.len() - 1] == b'.'
            && host.parse::<std::net::IpAddr>().is_err()
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
        partitioned: false,
        domain: Attr::EMPTY,
        path: Attr::EMPTY,
    };

    /// The scope of an app's `Set-Cookie`. A `Path` longer than
    /// [`MAX_SCOPE_ATTR`] is cut to its longest prefix ending in `/` that
    /// fits (a path the app cookie's paths all lie under); a `Domain` or
    /// `Path` that no browser would take (too long, or bytes a cookie
    /// attribute cannot hold) gives [`Scope::DEFAULT`].
    pub fn of(domain: Option<&str>, path: Option<&str>, same_site: SameSite) -> Scope {
        match (
            Attr::new(domain.unwrap_or("")),
            Attr::path(path.unwrap_or("")),
        ) {
            (Some(domain), Some(path)) => Scope {
                same_site,
                partitioned: false,
                domain,
                path,
            },
            _ => Scope::DEFAULT,
        }
    }

    /// This scope, `Partitioned` (CHIPS) as the app cookie is when
    /// `partitioned`: a partitioned app cookie is sent only in its
    /// top-level site's partition, and an unpartitioned companion would be
    /// missing from third-party contexts where it is sent.
    pub fn partitioned(self, partitioned: bool) -> Scope {
        Scope {
            partitioned,
            ..self
        }
    }

    /// Whether the companion covers the whole host and nothing more (no
    /// `Domain`, `Path=/`): it is then named with [`HOST_PREFIX`].
    pub fn is_host_wide(&self) -> bool {
        self.domain.is_empty() && matches!(self.path.as_bytes(), b"" | b"/")
    }

    /// Whether the companion is scoped with a `Domain` (sent to sibling
    /// hosts under it too).
    pub(crate) fn has_domain(&self) -> bool {
        !self.domain.is_empty()
    }

    /// The `Set-Cookie` value of the companion `value` in this scope,
    /// named `name`, or `__Host-name` for a host-wide scope: `Secure`,
    /// `HttpOnly`, a lifetime longer than any app cookie's, `SameSite`
    /// as the app's (left out when the app leaves it out), `Partitioned`
    /// when the app's is.
    pub fn set_cookie(&self, name: &str, value: &str) -> String {
        let path = if self.path.is_empty() {
            "/"
        } else {
            self.path.as_str()
        };
        let prefix = if self.is_host_wide() { HOST_PREFIX } else { "" };
        let mut out = format!("{prefix}{name}={value}; Path={path}");
        if !self.domain.is_empty() {
            out.push_str("; Domain=");
            out.push_str(self.domain.as_str());
        }
        out.push_str(&format!("; Max-Age={MAX_AGE_SECS}; Secure; HttpOnly"));
        out.push_str(match self.same_site {
            SameSite::Unset => "",
            SameSite::Lax => "; SameSite=Lax",
            SameSite::Strict => "; SameSite=Strict",
            SameSite::None => "; SameSite=None",
        });
        if self.partitioned {
            out.push_str("; Partitioned");
        }
        out
    }

    /// The `Set-Cookie` value that expires a companion named `name`
    /// (no prefix) set host-wide before the prefix was used, so that it
    /// does not linger beside its `__Host-` successor.
    pub fn expire_unprefixed(name: &str) -> String {
        format!("{name}=; Path=/; Max-Age=0; Secure; HttpOnly")
    }

    /// Format 2's same-site byte: the mode, and [`PARTITIONED`].
    fn flags(&self) -> u8 {
        let mode = match self.same_site {
            SameSite::Unset => 0,
            SameSite::Lax => 1,
            SameSite::Strict => 2,
            SameSite::None => 3,
        };
        if self.partitioned {
            mode | PARTITIONED
        } else {
            mode
        }
    }
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("same_site", &self.same_site)
            .field("partitioned", &self.partitioned)
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
    /// `;`, at most [`MAX_SCOPE_ATTR`] bytes.
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

    /// A `Path`: as [`Attr::new`], but one too long is cut after its last
    /// `/` that leaves it short enough. Cookie path matching (RFC 6265
    /// §5.1.4) sends a cookie of path `/a/` with every request a cookie
    /// of path `/a/b...` is sent with, so the cut companion still goes
    /// wherever the app cookie goes.
    fn path(s: &str) -> Option<Attr> {
        let b = s.as_bytes();
        if b.len() <= MAX_SCOPE_ATTR {
            return Attr::new(s);
        }
        let head = b.get(..MAX_SCOPE_ATTR)?;
        let cut = head.iter().rposition(|c| *c == b'/')?;
        // The cut keeps its `/`, and ASCII splits on any byte boundary.
        Attr::new(s.get(..=cut)?)
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
            current_2: Self::key_2(current),
            previous_2: previous.map(Self::key_2),
            current_1: Self::key_1(current),
            previous_1: previous.map(Self::key_1),
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

    /// Format 3's master key: it keys the derivation of each seal's own
    /// ChaCha20-Poly1305 key from the seal's salt, and encrypts nothing
    /// itself. A context of its own, so that no derived key ever serves
    /// both AEADs.
    fn key(hash_key: &SessionHashKey) -> [u8; 32] {
        blake3::derive_key("vigil 2026-12 binding seal v3", hash_key.as_bytes())
    }

    /// Format 2's master key (per-seal AES keys), for opening seals made
    /// before format 3.
    fn key_2(hash_key: &SessionHashKey) -> [u8; 32] {
        blake3::derive_key("vigil 2026-12 binding seal v2", hash_key.as_bytes())
    }

    /// Format 1's AES key, for opening seals made before format 2.
    fn key_1(hash_key: &SessionHashKey) -> LessSafeKey {
        let bytes = blake3::derive_key("vigil 2026-12 binding seal", hash_key.as_bytes());
        // AES-256 takes exactly the 32 bytes derive_key returns, so this
        // cannot fail; the fallback keeps the code free of panics.
        let unbound = UnboundKey::new(&AES_256_GCM, &bytes).unwrap_or_else(|_| fallback_key());
        LessSafeKey::new(unbound)
    }

    /// The key of the seal salted `salt` under `master`, for `algorithm`
    /// (ChaCha20-Poly1305 in format 3, AES-256-GCM in format 2): a keyed
    /// BLAKE3 hash of the salt. Each seal has a key of its own, used for
    /// that one seal with the all-zero nonce, so no (key, nonce) pair
    /// ever encrypts twice unless two 128-bit random salts collide.
    fn seal_key(
        algorithm: &'static Algorithm,
        master: &[u8; 32],
        salt: &[u8; SALT_LEN],
    ) -> LessSafeKey {
        let bytes = blake3::keyed_hash(master, salt);
        let unbound =
            UnboundKey::new(algorithm, bytes.as_bytes()).unwrap_or_else(|_| fallback_key());
        LessSafeKey::new(unbound)
    }

    /// Seals `seal` as a companion value (unpadded base64url, format 3).
    /// `None` only if the system's random source fails.
    pub fn seal(&self, seal: &Seal) -> Option<String> {
        self.seal_as(VERSION, seal)
    }

    /// Seals `seal` in format 3, or 2 (as nodes made before format 3; for
    /// the tests of the change only).
    fn seal_as(&self, version: u8, seal: &Seal) -> Option<String> {
        let (algorithm, master) = match version {
            VERSION => (&CHACHA20_POLY1305, &self.current),
            VERSION_2 => (&AES_256_GCM, &self.current_2),
            _ => return None,
        };
        let mut salt = [0u8; SALT_LEN];
        self.random.fill(&mut salt).ok()?;
        let mut header = [0u8; 1 + SALT_LEN];
        header[0] = version;
        header[1..].copy_from_slice(&salt);
        let mut buf = Vec::with_capacity(MAX_RAW);
        buf.extend_from_slice(&header);
        buf.extend_from_slice(&seal.generation.to_le_bytes());
        buf.extend_from_slice(&seal.nonce.to_le_bytes());
        buf.extend_from_slice(&seal.issued_at.to_le_bytes());
        buf.extend_from_slice(seal.session.as_bytes());
        buf.push(seal.scope.flags());
        buf.push(seal.scope.domain.len);
        buf.extend_from_slice(seal.scope.domain.as_bytes());
        buf.push(seal.scope.path.len);
        buf.extend_from_slice(seal.scope.path.as_bytes());
        let tag = Self::seal_key(algorithm, master, &salt)
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([0; NONCE_LEN]),
                Aad::from(&header),
                buf.get_mut(header.len()..)?,
            )
            .ok()?;
        buf.extend_from_slice(tag.as_ref());
        Some(URL_SAFE_NO_PAD.encode(buf))
    }

    /// A random number from the system's source (an issuance's nonce);
    /// `None` only if the source fails.
    pub(crate) fn random_u32(&self) -> Option<u32> {
        let mut b = [0u8; 4];
        self.random.fill(&mut b).ok()?;
        Some(u32::from_le_bytes(b))
    }

    /// Opens a companion value of format 3, 2 or 1: bounded,
    /// allocation-free, never panics.
    pub fn unseal(&self, value: &[u8]) -> Result<Seal, UnsealError> {
        let min = (1 + SALT_LEN.min(NONCE_LEN) + FIXED_PLAINTEXT + TAG_LEN).div_ceil(3) * 4 - 2;
        if value.len() > MAX_COMPANION_LEN || value.len() < min {
            return Err(UnsealError::Length);
        }
        let mut raw = [0u8; MAX_COMPANION_LEN];
        let n = URL_SAFE_NO_PAD
            .decode_slice(value, &mut raw)
            .map_err(|_| UnsealError::Encoding)?;
        let raw = raw.get_mut(..n).ok_or(UnsealError::Length)?;
        let (header, max_attr) = match raw.first() {
            Some(&(VERSION | VERSION_2)) => (1 + SALT_LEN, MAX_SCOPE_ATTR),
            Some(&VERSION_1) => (1 + NONCE_LEN, MAX_SCOPE_ATTR_1),
            Some(_) => return Err(UnsealError::Version),
            None => return Err(UnsealError::Length),
        };
        let longest = header + FIXED_PLAINTEXT + 2 * max_attr + TAG_LEN;
        if raw.len() < header + FIXED_PLAINTEXT + TAG_LEN || raw.len() > longest {
            return Err(UnsealError::Length);
        }
        let (head, sealed) = raw.split_at_mut(header);
        let (&version, salt) = head.split_first().ok_or(UnsealError::Length)?;
        // A failed open may leave the buffer scrambled: keep a copy for the
        // previous key, only when there is one.
        let mut copy = [0u8; MAX_SEALED];
        let copy = copy.get_mut(..sealed.len()).ok_or(UnsealError::Length)?;
        if version == VERSION_1 {
            if self.previous_1.is_some() {
                copy.copy_from_slice(sealed);
            }
            return self.unseal_1(salt, sealed, copy);
        }
        let (algorithm, current, previous) = match version {
            VERSION => (&CHACHA20_POLY1305, &self.current, &self.previous),
            _ => (&AES_256_GCM, &self.current_2, &self.previous_2),
        };
        if previous.is_some() {
            copy.copy_from_slice(sealed);
        }
        let salt: [u8; SALT_LEN] = salt.try_into().map_err(|_| UnsealError::Length)?;
        let open = |master: &[u8; 32], buf: &mut [u8]| -> Option<Seal> {
            let plain = Self::seal_key(algorithm, master, &salt)
                .open_in_place(
                    Nonce::assume_unique_for_key([0; NONCE_LEN]),
                    Aad::from(&*head),
                    buf,
                )
                .ok()?;
            parse_plaintext(plain, version)
        };
        if let Some(seal) = open(current, sealed) {
            return Ok(seal);
        }
        match previous {
            Some(previous) => open(previous, copy).ok_or(UnsealError::Seal),
            None => Err(UnsealError::Seal),
        }
    }

    /// Opens the sealed part of a format 1 value (`nonce`: its random
    /// AES-GCM nonce; `copy`: the sealed part again, filled when there is
    /// a previous key).
    fn unseal_1(
        &self,
        nonce: &[u8],
        sealed: &mut [u8],
        copy: &mut [u8],
    ) -> Result<Seal, UnsealError> {
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| UnsealError::Length)?;
        let open = |key: &LessSafeKey, buf: &mut [u8]| -> Option<Seal> {
            let plain = key
                .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(AAD_1), buf)
                .ok()?;
            parse_plaintext(plain, VERSION_1)
        };
        if let Some(seal) = open(&self.current_1, sealed) {
            return Ok(seal);
        }
        match &self.previous_1 {
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

/// Never used: AES-256 and ChaCha20 accept every 32-byte key. A key of
/// zeros (of the other algorithm, even) would seal nothing another node
/// opens, so it fails safe.
fn fallback_key() -> UnboundKey {
    #[allow(clippy::expect_used, reason = "32 bytes is AES-256's key length")]
    UnboundKey::new(&AES_256_GCM, &[0u8; 32]).expect("AES-256 takes a 32-byte key")
}

/// The fields of an opened seal of format `version`; `None` for any that
/// no node writes.
fn parse_plaintext(p: &[u8], version: u8) -> Option<Seal> {
    let u32_at = |i: usize| -> Option<u32> {
        let b: [u8; 4] = p.get(i..i + 4)?.try_into().ok()?;
        Some(u32::from_le_bytes(b))
    };
    let generation = u32_at(0)?;
    let nonce = u32_at(4)?;
    let issued_at = u32_at(8)?;
    let session: [u8; 16] = p.get(12..28)?.try_into().ok()?;
    let flags = *p.get(28)?;
    // Format 1 knew no `Partitioned`, nor scope attributes past 48 bytes.
    let (partitioned, max_attr) = match version {
        VERSION_1 => (false, MAX_SCOPE_ATTR_1),
        _ => (flags & PARTITIONED != 0, MAX_SCOPE_ATTR),
    };
    let same_site = match flags & !PARTITIONED {
        0 => SameSite::Unset,
        1 => SameSite::Lax,
        2 => SameSite::Strict,
        3 => SameSite::None,
        _ => return None,
    };
    if version == VERSION_1 && flags & PARTITIONED != 0 {
        return None;
    }
    let (domain, rest) = read_attr(p.get(29..)?, max_attr)?;
    let (path, rest) = read_attr(rest, max_attr)?;
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
            partitioned,
            domain,
            path,
        },
    })
}

fn read_attr(p: &[u8], max: usize) -> Option<(Attr, &[u8])> {
    let (len, rest) = p.split_first()?;
    let len = usize::from(*len);
    if len > max {
        return None;
    }
    let value = rest.get(..len)?;
    let attr = Attr::new(std::str::from_utf8(value).ok()?)?;
    Some((attr, rest.get(len..)?))
}

// === impl Companion ===

/// Companion values read from one request under each name (the bare
/// name and the `__Host-` name counted apart): at most this many.
pub const MAX_COMPANIONS: usize = 4;

/// The companion values a request carries (a browser sends one per scope:
/// an app with sessions on `/` and `/admin`, or a cookie a sibling host
/// tossed in on the parent domain), each opened once, kept apart by name:
/// those under the `__Host-` name (only the host itself sets one) and
/// those under the bare name (a sibling host on the parent domain can set
/// any number). Each name has its own cap, so that bare values a sibling
/// tossed in can neither push the owner's `__Host-` value out nor make the
/// request overflow.
#[derive(Debug, Clone, Default)]
pub struct Companions {
    host: Named,
    bare: Named,
}

/// The values sent under one of the two names.
#[derive(Debug, Clone, Default)]
struct Named {
    values: smallvec::SmallVec<[Result<Seal, UnsealError>; 1]>,
    /// More than [`MAX_COMPANIONS`] different values were sent.
    overflow: bool,
}

/// Whether a cookie named `n` is the companion `name`: `Some(true)` under
/// the `__Host-` name, `Some(false)` under the bare one (companions set
/// before the prefix was used, and those of a scope that cannot take it).
fn companion_name(n: &[u8], name: &str) -> Option<bool> {
    if n == name.as_bytes() {
        return Some(false);
    }
    let prefixed = n.strip_prefix(HOST_PREFIX.as_bytes())? == name.as_bytes();
    prefixed.then_some(true)
}

/// `b` without leading and trailing spaces and horizontal tabs: what a
/// browser trims from a cookie's name and value (RFC 6265bis §5.6), and no
/// more: a form feed, CR or LF is part of the name, so that
/// `\x0c__Host-vigil_bind` is not read as the `__Host-` companion.
fn trim_sp_tab(b: &[u8]) -> &[u8] {
    let blank = |c: &u8| *c == b' ' || *c == b'\t';
    let start = b.iter().position(|c| !blank(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !blank(c)).map_or(start, |i| i + 1);
    b.get(start..end).unwrap_or_default()
}

/// The `name=value` pairs of a `Cookie` header value, split strictly on
/// `;` as browsers send them (RFC 6265 §4.2.1), spaces and tabs trimmed:
/// Vigil reads its own cookie, so a value like `prefs=a,vigil_bind=x`
/// holds no companion.
fn strict_pairs(line: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    line.split(|b| *b == b';').filter_map(|piece| {
        let eq = piece.iter().position(|b| *b == b'=')?;
        Some((
            trim_sp_tab(piece.get(..eq)?),
            trim_sp_tab(piece.get(eq + 1..)?),
        ))
    })
}

impl Named {
    /// Whether a value names `session` (or `previous`).
    fn names(&self, session: SessionKey, previous: Option<SessionKey>) -> bool {
        self.values
            .iter()
            .any(|v| matches!(v, Ok(s) if s.session == session || Some(s.session) == previous))
    }
}

impl Companions {
    /// Reads every companion named `name` or `__Host-name` from a
    /// request's `Cookie` headers (exact names, strict split), at most
    /// [`MAX_COMPANIONS`] different values under each name.
    pub fn read(sealer: &Sealer, headers: &http::HeaderMap, name: &str) -> Companions {
        let mut out = Companions::default();
        let mut seen: smallvec::SmallVec<[(bool, &[u8]); 2]> = smallvec::SmallVec::new();
        for value in headers.get_all(http::header::COOKIE) {
            for (n, v) in strict_pairs(value.as_bytes()) {
                let Some(host) = companion_name(n, name) else {
                    continue;
                };
                if seen.contains(&(host, v)) {
                    continue;
                }
                let named = if host { &mut out.host } else { &mut out.bare };
                if named.values.len() == MAX_COMPANIONS {
                    named.overflow = true;
                    continue;
                }
                seen.push((host, v));
                named.values.push(sealer.unseal(v));
            }
        }
        out
    }

    /// Whether a `__Host-` value names `session` (or `previous`): the
    /// bare-named values are then not read for it at all, nor their
    /// overflow. Only the host itself sets a `__Host-` cookie; a
    /// bare-named one may have been tossed in by a sibling host on the
    /// parent domain, and must neither spoil the owner's nor stand in for
    /// it (not even a valid later generation of the same session that a
    /// thief rotated to and planted in the owner's browser, which would
    /// make the two holders look like one).
    fn host_named(&self, session: SessionKey, previous: Option<SessionKey>) -> bool {
        self.host.names(session, previous)
    }

    /// Whether `session`'s companion came under the bare name only (a
    /// host-wide companion set before the prefix was used): see
    /// [`Check::unprefixed`].
    pub(crate) fn unprefixed(&self, session: SessionKey, previous: Option<SessionKey>) -> bool {
        !self.host_named(session, previous)
            && self.bare.values.iter().any(|v| {
                matches!(v, Ok(s) if (s.session == session || Some(s.session) == previous) && s.scope.is_host_wide())
            })
    }

    /// The values read for `session`: the `__Host-` ones if one names it,
    /// else both names'; and whether they overflowed.
    fn judged(
        &self,
        session: SessionKey,
        previous: Option<SessionKey>,
    ) -> (impl Iterator<Item = &Result<Seal, UnsealError>>, bool) {
        let host_only = self.host_named(session, previous);
        let bare: &[Result<Seal, UnsealError>] = if host_only { &[] } else { &self.bare.values };
        let overflow = self.host.overflow || (!host_only && self.bare.overflow);
        (self.host.values.iter().chain(bare.iter()), overflow)
    }

    /// The seals naming `session` (also known as `previous`) among the
    /// values judged for it ([`Companions::for_session`]): each is judged,
    /// so that a superseded one beside its successor shows two holders.
    pub fn seals_for(&self, session: SessionKey, previous: Option<SessionKey>) -> SmallSeals {
        let (values, _) = self.judged(session, previous);
        values
            .filter_map(|v| v.as_ref().ok())
            .filter(|s| s.session == session || Some(s.session) == previous)
            .copied()
            .collect()
    }

    /// The companion standing for `session` (also known as `previous`):
    /// the seal naming it (of several, the latest generation; two of one
    /// generation that differ are [`Companion::Duplicated`]; [`check_all`]
    /// judges the others too), under the `__Host-` name if one names it
    /// there. Values that do not open are ignored when one does; a seal
    /// naming only other sessions is [`UnsealError::Fields`]-invalid for
    /// this one. More values than are read under a name judged is
    /// [`Companion::Duplicated`].
    pub fn for_session(&self, session: SessionKey, previous: Option<SessionKey>) -> Companion {
        let (values, overflow) = self.judged(session, previous);
        if overflow {
            return Companion::Duplicated;
        }
        let mut best: Option<Seal> = None;
        let mut opened = false;
        let mut first_error = None;
        for value in values {
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

    /// The one companion of a request whose session is not known (the
    /// bench, the fuzz target): read as [`Companions::for_session`] reads
    /// them, the `__Host-` values if there are any, else the bare ones;
    /// several different values under that name are
    /// [`Companion::Duplicated`], as is an overflow of it.
    pub fn single(&self) -> Companion {
        let named = if self.host.values.is_empty() && !self.host.overflow {
            &self.bare
        } else {
            &self.host
        };
        match named.values.as_slice() {
            _ if named.overflow => Companion::Duplicated,
            [] => Companion::Absent,
            [Ok(seal)] => Companion::Sealed(*seal),
            [Err(e)] => Companion::Invalid(*e),
            _ => Companion::Duplicated,
        }
    }
}

/// The seals of one session a request brings (one per scope, in practice).
pub type SmallSeals = smallvec::SmallVec<[Seal; 1]>;

impl Companion {
    /// Reads the companion named `name` or `__Host-name` from a request's
    /// `Cookie` headers: the exact names only (Vigil reads its own cookie;
    /// no app does), split strictly on `;`, as [`Companions::read`] and
    /// [`Companions::single`]: a `__Host-` value outweighs bare ones, and
    /// several different values under one name are
    /// [`Companion::Duplicated`].
    pub fn read(sealer: &Sealer, headers: &http::HeaderMap, name: &str) -> Companion {
        Companions::read(sealer, headers, name).single()
    }
}

/// Judges the binding of `session` given every companion value the
/// request brings for it: the one [`Companions::for_session`] picks, and
/// each other seal naming the session under the same name, so that a
/// superseded generation sent beside its successor (two holders' values
/// in one browser, one of them planted) is [`Finding::Reused`] as it
/// would be alone. A previous generation within the grace is not.
pub(crate) fn check_all(
    config: &BindingConfig,
    session: SessionKey,
    previous: Option<SessionKey>,
    companions: &Companions,
    state: Option<BindingState>,
    now: u64,
) -> Check {
    let picked = companions.for_session(session, previous);
    let out = check(config, session, previous, &picked, state, now);
    let Companion::Sealed(judged) = picked else {
        return out;
    };
    if out.finding.is_some() {
        return out;
    }
    for other in companions.seals_for(session, previous) {
        if other.generation == judged.generation && other.nonce == judged.nonce {
            continue;
        }
        let c = check(
            config,
            session,
            previous,
            &Companion::Sealed(other),
            state,
            now,
        );
        if c.finding == Some(Finding::Reused) {
            return Check {
                unprefixed: out.unprefixed,
                ..c
            };
        }
    }
    out
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
        unprefixed: false,
        presented: None,
        in_domain: false,
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
                    };
                    // The lost issuance's scope is not kept: one that
                    // was host-only is issued again host-only, never on
                    // the configured domain.
                    if !s.domain_wide {
                        out.scope = Some(Scope::DEFAULT);
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
    out.presented = Some((seal.generation, seal.nonce));
    let Some(s) = state.filter(|s| seal.generation <= s.generation) else {
        // Unknown here, or a later generation than this node has seen:
        // another node issued it (seals cannot be forged), so it is learnt.
        out.record = Record::Adopt {
            generation: seal.generation,
            nonce: seal.nonce,
            issued_at: seal.issued_at,
            domain_wide: seal.scope.has_domain(),
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
        // The session store's layout for a large store (`crate::shards`),
        // so that a full table is 80–82% used here too.
        let (shards, shard_cap) =
            crate::shards::large_layout(max).unwrap_or((SHARDS, (max / SHARDS).max(1)));
        Self {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            shard_cap,
            idle: secs32(idle.as_secs()).max(1),
            unsent: Mutex::new(std::collections::VecDeque::new()),
            publishing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn shard(&self, key: &SessionKey) -> std::sync::MutexGuard<'_, Shard> {
        let i = crate::shards::index(key, self.shards.len());
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
        if held.is_none() && !shard.contains_key(&key) {
            if shard.len() >= self.shard_cap {
                self.evict(&mut shard, now32);
            }
            crate::shards::make_space(&mut shard, self.shard_cap);
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
