//! Trusted proxy sets: named CIDR lists (`lb`, `cdn`, `zscaler`, …) compiled
//! once into sorted, disjoint ranges per address family, so that asking
//! "which set is this hop in?" is one binary search. A provider's published
//! list of a few thousand networks answers in tens of nanoseconds (see the
//! `client_ip/lookup_2000_cidrs` bench).
//!
//! Networks of different sets may overlap. The most specific network wins
//! (`lb = 10.0.0.0/8` and `zscaler = 10.9.0.0/16` put `10.9.1.1` in
//! `zscaler`); between identical networks, the set listed first wins.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

/// Longest trusted-set name, in bytes.
pub const MAX_PROVIDER_NAME_BYTES: usize = 32;

/// Most trusted sets in one configuration.
pub const MAX_TRUSTED_SETS: usize = 1024;

/// The name of a trusted proxy set, reported as the provider a client came
/// through. Stored inline (at most [`MAX_PROVIDER_NAME_BYTES`] bytes of ASCII
/// letters, digits, `-`, `_` or `.`) so that copying it into every request's
/// facts and every session baseline never allocates or touches a shared
/// reference count.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Provider {
    len: u8,
    bytes: [u8; MAX_PROVIDER_NAME_BYTES],
}

/// A set of trusted proxy networks, compiled for lookup. Cheap to clone (the
/// table is shared). The default has no sets: no peer is trusted, so
/// forwarding headers are never believed.
#[derive(Clone, Default)]
pub struct TrustedProxies {
    table: Arc<Table>,
}

/// Why a list of trusted sets cannot be compiled. [`TrustedProxies::new`]
/// reports every problem at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustedSetError {
    /// A name that is empty, too long or has other bytes than ASCII letters,
    /// digits, `-`, `_` and `.`.
    #[error(
        "trusted set {index}: name {name:?} must be 1 to {MAX_PROVIDER_NAME_BYTES} bytes of letters, digits, '-', '_' or '.'"
    )]
    BadName {
        /// Position of the set in the list, from 0.
        index: usize,
        /// The name given.
        name: String,
    },
    /// A name given to two sets.
    #[error("trusted set {index}: name {name:?} is used twice")]
    DuplicateName {
        /// Position of the second set with this name, from 0.
        index: usize,
        /// The name.
        name: String,
    },
    /// More sets than [`MAX_TRUSTED_SETS`].
    #[error("{count} trusted sets, more than the limit of {MAX_TRUSTED_SETS}")]
    TooManySets {
        /// Sets given.
        count: usize,
    },
}

/// The compiled table and the sets it came from (kept for equality, `Debug`
/// and [`TrustedProxies::sets`]).
#[derive(Default, PartialEq, Eq)]
struct Table {
    sets: Vec<(Provider, Vec<IpNet>)>,
    v4: Ranges<u32>,
    v6: Ranges<u128>,
}

/// Disjoint, sorted, inclusive ranges, each owned by one set. Struct of
/// arrays: the binary search touches only `starts`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Ranges<T> {
    starts: Vec<T>,
    ends: Vec<T>,
    owners: Vec<u16>,
}

/// An address as an integer, for range arithmetic.
trait Key: Copy + Ord {
    fn succ(self) -> Option<Self>;
    fn pred(self) -> Option<Self>;
}

// === impl Provider ===

impl Provider {
    /// The provider named `name`, if it is 1 to [`MAX_PROVIDER_NAME_BYTES`]
    /// bytes of ASCII letters, digits, `-`, `_` or `.`.
    pub fn new(name: &str) -> Option<Self> {
        let src = name.as_bytes();
        let len = u8::try_from(src.len()).ok()?;
        if src.is_empty()
            || src.len() > MAX_PROVIDER_NAME_BYTES
            || !src
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return None;
        }
        let mut bytes = [0u8; MAX_PROVIDER_NAME_BYTES];
        bytes.get_mut(..src.len())?.copy_from_slice(src);
        Some(Self { len, bytes })
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        let bytes = self.bytes.get(..usize::from(self.len)).unwrap_or_default();
        // The constructor admits only ASCII.
        std::str::from_utf8(bytes).unwrap_or_default()
    }
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Provider({:?})", self.as_str())
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl TrustedProxies ===

impl TrustedProxies {
    /// Compiles named CIDR lists, in the order given (the order breaks ties
    /// between identical networks). Host bits of a network are ignored
    /// (`10.0.0.1/8` is `10.0.0.0/8`); IPv4-mapped IPv6 networks
    /// (`::ffff:10.0.0.0/104`) are stored as the IPv4 networks they map. A
    /// set may be empty. Every problem is reported, not only the first.
    pub fn new(sets: Vec<(String, Vec<IpNet>)>) -> Result<Self, Vec<TrustedSetError>> {
        let mut problems = Vec::new();
        if sets.len() > MAX_TRUSTED_SETS {
            problems.push(TrustedSetError::TooManySets { count: sets.len() });
        }
        let mut compiled: Vec<(Provider, Vec<IpNet>)> = Vec::with_capacity(sets.len());
        for (index, (name, nets)) in sets.into_iter().enumerate() {
            let Some(provider) = Provider::new(&name) else {
                problems.push(TrustedSetError::BadName { index, name });
                continue;
            };
            if compiled.iter().any(|(p, _)| *p == provider) {
                problems.push(TrustedSetError::DuplicateName { index, name });
                continue;
            }
            compiled.push((provider, nets));
        }
        if !problems.is_empty() {
            return Err(problems);
        }

        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (owner, (_, nets)) in compiled.iter().enumerate() {
            // Bounded by MAX_TRUSTED_SETS, checked above.
            let owner = u16::try_from(owner).unwrap_or(u16::MAX);
            for net in nets {
                match canonical_net(*net) {
                    IpNet::V4(n) => {
                        v4.push((u32::from(n.network()), u32::from(n.broadcast()), owner));
                    }
                    IpNet::V6(n) => {
                        v6.push((u128::from(n.network()), u128::from(n.broadcast()), owner));
                    }
                }
            }
        }
        Ok(Self {
            table: Arc::new(Table {
                sets: compiled,
                v4: Ranges::build(v4),
                v6: Ranges::build(v6),
            }),
        })
    }

    /// The set `addr` belongs to, by the most specific network that holds
    /// it. IPv4-mapped IPv6 addresses are looked up as IPv4.
    pub fn lookup(&self, addr: IpAddr) -> Option<Provider> {
        self.find(addr).and_then(|i| self.provider(i))
    }

    /// Whether no set is configured (then no peer is ever trusted).
    pub fn is_empty(&self) -> bool {
        self.table.sets.is_empty()
    }

    /// The sets as given: names and networks, in order.
    pub fn sets(&self) -> impl Iterator<Item = (Provider, &[IpNet])> {
        self.table.sets.iter().map(|(p, n)| (*p, n.as_slice()))
    }

    /// Number of disjoint ranges the sets compiled to (IPv4, IPv6), for
    /// gauges and tests.
    pub fn ranges(&self) -> (usize, usize) {
        (self.table.v4.starts.len(), self.table.v6.starts.len())
    }

    /// The index of the set `addr` belongs to.
    pub(super) fn find(&self, addr: IpAddr) -> Option<u16> {
        match addr.to_canonical() {
            IpAddr::V4(a) => self.table.v4.find(u32::from(a)),
            IpAddr::V6(a) => self.table.v6.find(u128::from(a)),
        }
    }

    /// The provider of set `index`.
    pub(super) fn provider(&self, index: u16) -> Option<Provider> {
        self.table.sets.get(usize::from(index)).map(|(p, _)| *p)
    }
}

impl PartialEq for TrustedProxies {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.table, &other.table) || self.table.sets == other.table.sets
    }
}

impl Eq for TrustedProxies {}

impl fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Provider lists run to thousands of networks: show their sizes.
        let mut m = f.debug_map();
        for (p, nets) in &self.table.sets {
            m.entry(&p.as_str(), &nets.len());
        }
        m.finish()
    }
}

/// An IPv6 network inside `::ffff:0:0/96` as the IPv4 network it maps;
/// anything else truncated to its network address.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(n) = net
        && n.prefix_len() >= 96
        && let Some(v4) = n.network().to_ipv4_mapped()
        && let Ok(mapped) = ipnet::Ipv4Net::new(v4, n.prefix_len() - 96)
    {
        return IpNet::V4(mapped.trunc());
    }
    net.trunc()
}

// === impl Ranges ===

impl<T: Key> Ranges<T> {
    /// Builds disjoint ranges from CIDR ranges `(first, last, owner)`. CIDR
    /// ranges either nest or are disjoint, so one sweep in order of start
    /// (widest first) with a stack of the open ranges gives every point to
    /// its innermost range.
    fn build(mut nets: Vec<(T, T, u16)>) -> Self {
        nets.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        let mut out = Self {
            starts: Vec::new(),
            ends: Vec::new(),
            owners: Vec::new(),
        };
        let mut open: Vec<(T, T, u16)> = Vec::new();
        // The first point not yet given an owner; None once past the end of
        // the address space.
        let mut next: Option<T> = nets.first().map(|n| n.0);
        for &(first, last, owner) in &nets {
            while let Some(&(_, top_last, top_owner)) = open.last() {
                if top_last >= first {
                    break;
                }
                if let Some(p) = next {
                    out.push(p, top_last, top_owner);
                }
                next = top_last.succ();
                open.pop();
            }
            if let Some(&(top_first, top_last, top_owner)) = open.last() {
                if (top_first, top_last) == (first, last) {
                    // The same network in a later set: the first set keeps it.
                    continue;
                }
                if let (Some(p), Some(before)) = (next, first.pred())
                    && p < first
                {
                    out.push(p, before, top_owner);
                }
            }
            next = Some(first);
            open.push((first, last, owner));
        }
        while let Some((_, last, owner)) = open.pop() {
            if let Some(p) = next
                && p <= last
            {
                out.push(p, last, owner);
            }
            next = last.succ();
        }
        out
    }

    /// Appends `[first, last]`, merging it into the previous range when they
    /// touch and share an owner.
    fn push(&mut self, first: T, last: T, owner: u16) {
        if let (Some(end), Some(prev)) = (self.ends.last_mut(), self.owners.last())
            && *prev == owner
            && end.succ() == Some(first)
        {
            *end = last;
            return;
        }
        self.starts.push(first);
        self.ends.push(last);
        self.owners.push(owner);
    }

    fn find(&self, x: T) -> Option<u16> {
        let i = self.starts.partition_point(|s| *s <= x).checked_sub(1)?;
        if x <= *self.ends.get(i)? {
            self.owners.get(i).copied()
        } else {
            None
        }
    }
}

impl Key for u32 {
    fn succ(self) -> Option<Self> {
        self.checked_add(1)
    }
    fn pred(self) -> Option<Self> {
        self.checked_sub(1)
    }
}

impl Key for u128 {
    fn succ(self) -> Option<Self> {
        self.checked_add(1)
    }
    fn pred(self) -> Option<Self> {
        self.checked_sub(1)
    }
}
