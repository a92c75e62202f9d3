//! Client IP: who is really on the other end.
//!
//! The TCP peer is the only address nobody can forge. Behind load balancers,
//! CDNs and egress proxies (Zscaler and the like) the client's address
//! arrives instead in `Forwarded` (RFC 7239) or `X-Forwarded-For`, which any
//! client can also write. This stage believes those headers only as far as
//! configured [trusted proxy sets](TrustedProxies) vouch for them:
//!
//! 1. **An untrusted peer's headers are never read.** The client is the peer
//!    and [`ChainFlags::headers_ignored`] says headers were there.
//! 2. **[`ChainStrategy::Walk`]** (default): start at the peer and walk the
//!    chain right to left, skipping hops that are in a trusted set. The first
//!    untrusted hop is the client. Anything to its left was written by the
//!    client or by proxies nobody vouches for, and is never used.
//! 3. **[`ChainStrategy::Hops`]`(n)`**: exactly `n` proxies stand in front of
//!    Vigil, the peer being the first: the client is the `n`-th hop counted
//!    from the right with the peer as the first, so the `n - 1` header entries
//!    nearest Vigil are skipped whatever their addresses. The peer must still
//!    be in a trusted set.
//!
//! Decisions on the cases the standards leave open:
//!
//! - **Which header wins.** Which headers are read is per listener
//!   ([`ForwardedHeaders`], overridable per request with
//!   [`ClientIpStage::resolve_with`]). When both are read and both are
//!   present, `Forwarded` wins: it is the standard, and it can say `unknown`
//!   and obfuscate. `X-Forwarded-For` is walked as well, and
//!   [`ChainFlags::inconsistent`] is set when the two name different
//!   clients. Honour only the headers your proxies write: a header they pass
//!   through untouched is the client's to forge, so "both" suits only a
//!   fleet whose proxies maintain both.
//! - **All hops trusted.** When the walk runs out of hops (every hop,
//!   including the peer, is trusted, or the chain is shorter than
//!   `Hops(n)` expects), the leftmost hop is the client and
//!   [`ChainFlags::all_trusted`] is set. The client is then a proxy address:
//!   the provider did not pass the real one on.
//! - **`unknown`, obfuscated and malformed hops.** Where the walk needs an
//!   address and finds one of these (or a `Forwarded` element without
//!   `for`), it stops and takes the hop to its right — the last one it
//!   trusted — as the client, and sets [`ChainFlags::opaque_hop`]. Guessing
//!   past a hop we cannot see would let its writer choose the client.
//! - **IPv6 zone ids** (`fe80::1%eth0`) are validated and dropped: a zone
//!   names an interface on the host that wrote the entry and means nothing
//!   here, while the address is still the best identity of a client on that
//!   link. An invalid zone makes the entry malformed.
//! - **IPv4-mapped IPv6** (`::ffff:192.0.2.1`) is read as IPv4 everywhere:
//!   in headers, in trusted sets and for the peer itself.
//! - **Private ranges are not special.** `10.0.0.0/8` is trusted only when a
//!   set lists it; otherwise a private address is a client like any other.
//! - **Caps.** At most `max_header_bytes` bytes of each header (all its
//!   lines together) and `max_hops` entries are read, from the right, so
//!   that padding only ever cuts off the client's own end of the chain.
//!   Hitting either sets [`ChainFlags::truncated`].
//!
//! Provider and egress: [`ClientIp::provider`] is the set of the trusted hop
//! next to the client, on the client's side of the walk, and
//! [`ClientIp::egress`] is that hop's address — the node of the provider the
//! client reached Vigil through. When the client is itself a trusted hop
//! (`all_trusted`, `opaque_hop`), both describe the client hop. A change of
//! egress node behind the same provider is not a change of client: see
//! [`classify`](crate::classify).

mod parse;
mod trusted;

use std::fmt;
use std::net::IpAddr;

use http::header::{FORWARDED, GetAll};
use http::{HeaderName, HeaderValue};
use smallvec::SmallVec;

use crate::request::RequestView;

pub use trusted::{
    MAX_PROVIDER_NAME_BYTES, MAX_TRUSTED_SETS, Provider, TrustedProxies, TrustedSetError,
};

use parse::{Limits, Syntax};

/// `X-Forwarded-For`.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Default of [`ClientIpConfig::max_header_bytes`].
pub const DEFAULT_MAX_HEADER_BYTES: usize = 8 * 1024;
/// Default of [`ClientIpConfig::max_hops`].
pub const DEFAULT_MAX_HOPS: usize = 32;

/// Hops stored inline in a [`Chain`]. Honest chains are one to four hops, so
/// four keeps them off the heap while keeping `ClientIp` small (every verdict
/// carries one); a longer chain spills, still bounded by
/// [`ClientIpConfig::max_hops`].
const INLINE_HOPS: usize = 4;

/// Which forwarding headers are believed (from a trusted peer only). The
/// proxy chooses per listener; the default believes none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ForwardedHeaders {
    /// RFC 7239 `Forwarded`.
    pub forwarded: bool,
    /// `X-Forwarded-For`.
    pub x_forwarded_for: bool,
}

/// How the chain is walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChainStrategy {
    /// Right to left from the peer, skipping hops in trusted sets; the first
    /// untrusted hop is the client. The default.
    #[default]
    Walk,
    /// Exactly this many proxies in front of Vigil, the peer counted as the
    /// first: the client is this many hops left of the peer. `Hops(0)` means
    /// no proxy: headers are ignored and the client is the peer.
    Hops(u8),
}

/// How the client address is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIpConfig {
    /// Headers believed when the caller does not choose per request.
    /// Default: none (the client is the peer).
    pub headers: ForwardedHeaders,
    /// How the chain is walked. Default [`ChainStrategy::Walk`].
    pub strategy: ChainStrategy,
    /// The trusted proxy sets. Default: none.
    pub trusted: TrustedProxies,
    /// Most bytes read from each forwarding header, all its lines together
    /// (a line break counts one byte). Default 8 KiB.
    pub max_header_bytes: usize,
    /// Most entries read from each forwarding header. Default 32.
    pub max_hops: usize,
}

/// The header a chain was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainSource {
    /// RFC 7239 `Forwarded`.
    Forwarded,
    /// `X-Forwarded-For`.
    XForwardedFor,
}

/// What one entry of a chain names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Node {
    /// An address (IPv4-mapped IPv6 already folded to IPv4, zone id dropped).
    Ip(IpAddr),
    /// `unknown`, or a `Forwarded` element without `for`.
    Unknown,
    /// An RFC 7239 obfuscated identifier (`_hidden`).
    Obfuscated,
    /// An entry that could not be parsed.
    Malformed,
}

/// One entry of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hop {
    /// The node.
    pub node: Node,
    /// The port, when the entry gave one in digits.
    pub port: Option<u16>,
}

/// The entries of the forwarding header that was read, in header order
/// (leftmost, farthest from Vigil, first), without the peer. Bounded by
/// [`ClientIpConfig::max_hops`]; when the cap was hit these are the
/// rightmost entries. Up to four hops are stored without allocating.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Chain {
    hops: Hops,
}

/// Storage of a chain while it is read: nearest first.
type Hops = SmallVec<[Hop; INLINE_HOPS]>;

/// What went differently from a clean chain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ChainFlags {
    /// Some entry read could not be parsed (it is in the chain as
    /// [`Node::Malformed`]).
    pub malformed: bool,
    /// A cap ([`ClientIpConfig::max_header_bytes`] or
    /// [`ClientIpConfig::max_hops`]) was hit; the leftmost entries were not
    /// read.
    pub truncated: bool,
    /// The peer is not trusted and sent headers this request honours; they
    /// were not read.
    pub headers_ignored: bool,
    /// The walk ran out of hops: every hop was trusted, and the leftmost one
    /// is the client.
    pub all_trusted: bool,
    /// The walk stopped at an `unknown`, obfuscated or malformed hop and took
    /// the trusted hop to its right as the client.
    pub opaque_hop: bool,
    /// Both headers were read and name different clients; `Forwarded` won.
    pub inconsistent: bool,
}

/// The client address the rest of the pipeline judges, and how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIp {
    /// The derived client address.
    pub addr: IpAddr,
    /// The TCP peer (IPv4-mapped IPv6 folded to IPv4).
    pub peer: IpAddr,
    /// The header the chain was read from; `None` when none was.
    pub source: Option<ChainSource>,
    /// The chain as read.
    pub chain: Chain,
    /// The trusted set of the hop next to the client (see the module docs);
    /// `None` when the client is an untrusted peer.
    pub provider: Option<Provider>,
    /// The address of that hop: the provider's egress node.
    pub egress: Option<IpAddr>,
    /// Flags for metrics, logs and rules.
    pub flags: ChainFlags,
}

/// The client IP stage. `Default` believes no header: the client is the peer.
///
/// ```
/// use http::HeaderMap;
/// use vigil_engine::{ClientIpConfig, ClientIpStage, ForwardedHeaders, RequestView, TrustedProxies};
///
/// let trusted = TrustedProxies::new(vec![
///     ("lb".to_owned(), vec!["10.0.0.0/24".parse().unwrap()]),
///     ("zscaler".to_owned(), vec!["185.46.212.0/22".parse().unwrap()]),
/// ])
/// .unwrap();
/// let stage = ClientIpStage::new(ClientIpConfig { trusted, ..ClientIpConfig::default() });
/// let mut headers = HeaderMap::new();
/// // The client forged the first entry; Zscaler and the load balancer appended theirs.
/// headers.insert("x-forwarded-for", "6.6.6.6, 198.51.100.7, 185.46.212.10".parse().unwrap());
/// let view = RequestView { peer: "10.0.0.2".parse().unwrap(), headers: &headers, now_secs: 0, tls: Default::default(), facts: Default::default() };
/// let client = stage.resolve_with(&view, ForwardedHeaders::X_FORWARDED_FOR);
/// assert_eq!(client.addr.to_string(), "198.51.100.7");
/// assert_eq!(client.provider.unwrap().as_str(), "zscaler");
/// assert_eq!(client.egress.unwrap().to_string(), "185.46.212.10");
/// ```
#[derive(Debug, Clone, Default)]
pub struct ClientIpStage {
    config: ClientIpConfig,
}

/// Where a walk ended.
#[derive(Debug, Clone, Copy)]
struct Walked {
    client: IpAddr,
    provider: Option<u16>,
    egress: Option<IpAddr>,
    all_trusted: bool,
    opaque_hop: bool,
}

// === impl ForwardedHeaders ===

impl ForwardedHeaders {
    /// Believe no header.
    pub const NONE: Self = Self {
        forwarded: false,
        x_forwarded_for: false,
    };
    /// Believe `Forwarded` only.
    pub const FORWARDED: Self = Self {
        forwarded: true,
        x_forwarded_for: false,
    };
    /// Believe `X-Forwarded-For` only.
    pub const X_FORWARDED_FOR: Self = Self {
        forwarded: false,
        x_forwarded_for: true,
    };
    /// Believe both; `Forwarded` wins when both are present.
    pub const BOTH: Self = Self {
        forwarded: true,
        x_forwarded_for: true,
    };

    /// Whether any header is believed.
    pub fn any(self) -> bool {
        self.forwarded || self.x_forwarded_for
    }
}

// === impl ClientIpConfig ===

impl Default for ClientIpConfig {
    fn default() -> Self {
        Self {
            headers: ForwardedHeaders::NONE,
            strategy: ChainStrategy::Walk,
            trusted: TrustedProxies::default(),
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_hops: DEFAULT_MAX_HOPS,
        }
    }
}

// === impl Chain ===

impl Chain {
    /// The hops, leftmost first.
    pub fn as_slice(&self) -> &[Hop] {
        &self.hops
    }

    /// Number of hops.
    pub fn len(&self) -> usize {
        self.hops.len()
    }

    /// Whether no hop was read.
    pub fn is_empty(&self) -> bool {
        self.hops.is_empty()
    }

    /// The hops, leftmost first.
    pub fn iter(&self) -> std::slice::Iter<'_, Hop> {
        self.hops.iter()
    }
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.hops.iter()).finish()
    }
}

impl<'a> IntoIterator for &'a Chain {
    type Item = &'a Hop;
    type IntoIter = std::slice::Iter<'a, Hop>;

    fn into_iter(self) -> Self::IntoIter {
        self.hops.iter()
    }
}

// === impl ClientIp ===

impl ClientIp {
    /// A client that is the peer itself, with no chain: what a request
    /// without believed headers resolves to.
    pub fn from_peer(peer: IpAddr) -> Self {
        let peer = peer.to_canonical();
        Self {
            addr: peer,
            peer,
            source: None,
            chain: Chain::default(),
            provider: None,
            egress: None,
            flags: ChainFlags::default(),
        }
    }
}

// === impl ClientIpStage ===

impl ClientIpStage {
    /// Builds the stage. The config is already valid: trusted sets were
    /// checked when [`TrustedProxies`] was built.
    pub fn new(config: ClientIpConfig) -> Self {
        Self { config }
    }

    /// The stage's config.
    pub fn config(&self) -> &ClientIpConfig {
        &self.config
    }

    /// Derives the client of a request, believing the configured
    /// [`ClientIpConfig::headers`].
    pub fn resolve(&self, request: &RequestView<'_>) -> ClientIp {
        self.resolve_with(request, self.config.headers)
    }

    /// Derives the client of a request, believing `honoured` (the listener's
    /// choice) instead of the configured headers. Never fails: what cannot be
    /// read is flagged, and the answer falls back to an address a trusted
    /// party vouched for. Reads at most `max_header_bytes` bytes and keeps at
    /// most `max_hops` hops of each header; allocates only for chains of
    /// more than four hops.
    pub fn resolve_with(&self, request: &RequestView<'_>, honoured: ForwardedHeaders) -> ClientIp {
        let mut client = ClientIp::from_peer(request.peer);
        let peer = client.peer;
        // One map lookup per believed header; the lines are read from it.
        let lines = |honour: bool, name: HeaderName| {
            honour
                .then(|| request.headers.get_all(name))
                .filter(|all| all.iter().next().is_some())
        };
        let forwarded = lines(honoured.forwarded, FORWARDED);
        let x_forwarded_for = lines(honoured.x_forwarded_for, X_FORWARDED_FOR);
        let present = forwarded.is_some() || x_forwarded_for.is_some();

        let Some(peer_set) = self.config.trusted.find(peer) else {
            client.flags.headers_ignored = present;
            return client;
        };
        if self.config.strategy == ChainStrategy::Hops(0) {
            client.flags.headers_ignored = present;
            return client;
        }

        let limits = Limits {
            max_bytes: self.config.max_header_bytes,
            max_hops: self.config.max_hops,
        };
        let read = |all: &GetAll<'_, HeaderValue>, syntax, hops: &mut Hops| {
            let lines = all.iter().rev().map(HeaderValue::as_bytes);
            parse::read(lines, syntax, limits, hops)
        };
        let mut hops = Hops::new();
        let (source, read_first) = match (&forwarded, &x_forwarded_for) {
            (Some(all), _) => (
                Some(ChainSource::Forwarded),
                read(all, Syntax::Forwarded, &mut hops),
            ),
            (None, Some(all)) => (
                Some(ChainSource::XForwardedFor),
                read(all, Syntax::XForwardedFor, &mut hops),
            ),
            (None, None) => (None, parse::Read::default()),
        };
        let walked = self.walk(peer, peer_set, &hops);

        client.flags.truncated = read_first.truncated;
        client.flags.malformed = read_first.malformed;
        if let (Some(_), Some(all)) = (&forwarded, &x_forwarded_for) {
            let mut other = Hops::new();
            let read = read(all, Syntax::XForwardedFor, &mut other);
            client.flags.truncated |= read.truncated;
            client.flags.malformed |= read.malformed;
            client.flags.inconsistent = self.walk(peer, peer_set, &other).client != walked.client;
        }

        hops.reverse();
        client.addr = walked.client;
        client.source = source;
        client.chain = Chain { hops };
        client.provider = walked
            .provider
            .and_then(|i| self.config.trusted.provider(i));
        client.egress = walked.egress;
        client.flags.all_trusted = walked.all_trusted;
        client.flags.opaque_hop = walked.opaque_hop;
        client
    }

    /// Walks `hops` (nearest first) from a trusted peer.
    fn walk(&self, peer: IpAddr, peer_set: u16, hops: &[Hop]) -> Walked {
        match self.config.strategy {
            ChainStrategy::Walk => self.walk_trusted(peer, peer_set, hops),
            ChainStrategy::Hops(n) => self.walk_count(peer, peer_set, hops, usize::from(n)),
        }
    }

    /// [`ChainStrategy::Walk`].
    fn walk_trusted(&self, peer: IpAddr, peer_set: u16, hops: &[Hop]) -> Walked {
        let trusted = &self.config.trusted;
        // The last hop known to be trusted, and its set.
        let (mut at, mut set) = (peer, peer_set);
        for hop in hops {
            let Node::Ip(addr) = hop.node else {
                return Walked::trusted_client(at, Some(set), false, true);
            };
            match trusted.find(addr) {
                Some(s) => (at, set) = (addr, s),
                None => {
                    return Walked {
                        client: addr,
                        provider: Some(set),
                        egress: Some(at),
                        all_trusted: false,
                        opaque_hop: false,
                    };
                }
            }
        }
        Walked::trusted_client(at, Some(set), true, false)
    }

    /// [`ChainStrategy::Hops`] with `n >= 1`: the client is `hops[n - 1]`.
    fn walk_count(&self, peer: IpAddr, peer_set: u16, hops: &[Hop], n: usize) -> Walked {
        let trusted = &self.config.trusted;
        let set_of = |addr: IpAddr, i: usize| {
            if i == 0 {
                Some(peer_set)
            } else {
                trusted.find(addr)
            }
        };
        // Combined positions: 0 is the peer, i is hops[i - 1].
        let at = |i: usize| -> Option<IpAddr> {
            if i == 0 {
                return Some(peer);
            }
            match hops.get(i - 1)?.node {
                Node::Ip(a) => Some(a),
                _ => None,
            }
        };
        let target = n.min(hops.len());
        if let Some(client) = at(target) {
            if target < n {
                // The chain is shorter than the proxies in front: its
                // leftmost hop is a proxy, and the client.
                return Walked::trusted_client(client, set_of(client, target), true, false);
            }
            let egress = at(target - 1);
            return Walked {
                client,
                provider: egress.and_then(|e| set_of(e, target - 1)),
                egress,
                all_trusted: false,
                opaque_hop: false,
            };
        }
        // An opaque hop where the client should be: the nearest address to
        // its right. Position 0, the peer, always has one.
        let (i, client) = (0..target)
            .rev()
            .find_map(|i| at(i).map(|a| (i, a)))
            .unwrap_or((0, peer));
        Walked::trusted_client(client, set_of(client, i), false, true)
    }
}

// === impl Walked ===

impl Walked {
    /// A client that is itself a trusted hop: provider and egress describe
    /// that hop.
    fn trusted_client(
        client: IpAddr,
        set: Option<u16>,
        all_trusted: bool,
        opaque_hop: bool,
    ) -> Self {
        Self {
            client,
            provider: set,
            egress: Some(client),
            all_trusted,
            opaque_hop,
        }
    }
}

#[cfg(test)]
mod tests;
