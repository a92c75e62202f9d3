//! Network facts of a request and how they changed within a session.
//!
//! [`NetworkFacts`] is what the session baseline remembers of where a client
//! was: the derived client address, the trusted provider it came through and
//! that provider's egress node (from the client IP stage), and its ASN and
//! country (filled by the geo stage; `None` until then). [`classify`]
//! compares two of them and says how far the client moved, from
//! [`NetworkChange::Same`] to [`NetworkChange::DifferentCountry`].
//!
//! Absent geo data is *unknown*, never *different*: two addresses whose ASN
//! is not known on both sides classify as [`NetworkChange::DifferentPrefix`],
//! which ranks below every change that geo data proves.

use std::fmt;
use std::net::IpAddr;

use crate::client_ip::{ClientIp, Provider};
use crate::device::fnv1a;

/// Prefix length within which an IPv4 client is deemed not to have moved:
/// the smallest block routed on the Internet, typically one site.
pub const SAME_PREFIX_V4: u8 = 24;
/// Prefix length within which an IPv6 client is deemed not to have moved:
/// a typical site allocation.
pub const SAME_PREFIX_V6: u8 = 48;

/// Where a request came from, as the session scorer compares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NetworkFacts {
    /// The derived client address.
    pub client: IpAddr,
    /// The trusted provider the client came through, if any.
    pub provider: Option<Provider>,
    /// The provider's egress node, if any.
    pub egress: Option<IpAddr>,
    /// The client's autonomous system number; `None` when unknown.
    pub asn: Option<u32>,
    /// The client's ISO 3166-1 alpha-2 country code (ASCII letters, compared
    /// without regard to case); `None` when unknown.
    pub country: Option<[u8; 2]>,
}

/// What a session remembers of a network, in 24 bytes: 32-bit FNV-1a
/// hashes of the client address, its /24 or /48 prefix, the provider name
/// and the egress node (0 for none) — equality is all the classification
/// needs of them, and a collision (one in four billion) only hides a move —
/// and the ASN and country (0 for unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NetworkMark {
    /// Hash of the client address (IPv4 as IPv4-mapped IPv6).
    pub client: u32,
    /// Hash of the client's /24 (IPv4) or /48 (IPv6), tagged by family.
    pub prefix: u32,
    /// Hash of the trusted provider's name; 0 for none.
    pub provider: u32,
    /// Hash of the provider's egress address; 0 for none.
    pub egress: u32,
    /// Autonomous system number; 0 for unknown.
    pub asn: u32,
    /// Upper-case ISO country code; `[0, 0]` for unknown.
    pub country: [u8; 2],
}

/// How the network of a session's request differs from its baseline,
/// ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NetworkChange {
    /// Same client, same provider, same egress.
    Same,
    /// Same client address, same provider, another egress node of it. Not
    /// suspicious by itself: providers balance clients across their nodes.
    EgressChanged,
    /// Same client address, reached through another provider (or through one
    /// where it came directly before, or the reverse).
    ProviderChanged,
    /// Another client address in the same /24 (IPv4) or /48 (IPv6).
    SamePrefix,
    /// Another prefix in the same ASN.
    SameAsn,
    /// Another prefix; ASN or country not known on both sides, so nothing
    /// more can be said.
    DifferentPrefix,
    /// Another ASN (both known), same or unknown country.
    DifferentAsn,
    /// Another country (both known).
    DifferentCountry,
}

// === impl NetworkFacts ===

impl NetworkFacts {
    /// Facts of a bare client address: no provider, no geo data.
    pub fn new(client: IpAddr) -> Self {
        Self {
            client,
            provider: None,
            egress: None,
            asn: None,
            country: None,
        }
    }

    /// How `self` (the current request) differs from `prev` (the baseline).
    pub fn change_from(&self, prev: &NetworkFacts) -> NetworkChange {
        classify(prev, self)
    }

    /// The compact form a session remembers.
    pub fn mark(&self) -> NetworkMark {
        let hash = |bytes: &[u8]| fnv1a(bytes).max(1);
        let client = mapped(self.client);
        NetworkMark {
            client: hash(&client),
            prefix: hash(&prefix_bytes(&client)),
            provider: self.provider.map_or(0, |p| hash(p.as_str().as_bytes())),
            egress: self.egress.map_or(0, |e| hash(&mapped(e))),
            asn: self.asn.unwrap_or(0),
            country: self.country.map_or([0; 2], |c| {
                [c[0].to_ascii_uppercase(), c[1].to_ascii_uppercase()]
            }),
        }
    }
}

// === impl NetworkMark ===

impl NetworkMark {
    /// How the network moved from `self` (the baseline) to `cur`; see
    /// [`classify`].
    pub fn change_to(&self, cur: &NetworkMark) -> NetworkChange {
        if self.client == cur.client {
            return if self.provider != cur.provider {
                NetworkChange::ProviderChanged
            } else if self.egress != cur.egress {
                NetworkChange::EgressChanged
            } else {
                NetworkChange::Same
            };
        }
        if self.prefix == cur.prefix {
            return NetworkChange::SamePrefix;
        }
        if self.country != [0; 2] && cur.country != [0; 2] && self.country != cur.country {
            return NetworkChange::DifferentCountry;
        }
        match (self.asn, cur.asn) {
            (0, _) | (_, 0) => NetworkChange::DifferentPrefix,
            (a, b) if a != b => NetworkChange::DifferentAsn,
            _ => NetworkChange::SameAsn,
        }
    }

    /// The ASN, when known.
    pub fn asn(&self) -> Option<u32> {
        (self.asn != 0).then_some(self.asn)
    }

    /// The country code, when known.
    pub fn country(&self) -> Option<[u8; 2]> {
        (self.country != [0; 2]).then_some(self.country)
    }
}

/// The /24 of an IPv4 (mapped) address or the /48 of an IPv6 one, with a
/// family tag so that the two never collide.
fn prefix_bytes(c: &[u8; 16]) -> [u8; 7] {
    let v4 = c[..10].iter().all(|b| *b == 0) && c[10] == 0xff && c[11] == 0xff;
    if v4 {
        [4, c[12], c[13], c[14], 0, 0, 0]
    } else {
        [6, c[0], c[1], c[2], c[3], c[4], c[5]]
    }
}

/// An address as 16 bytes, IPv4 (and IPv4-mapped IPv6) as IPv4-mapped.
fn mapped(ip: IpAddr) -> [u8; 16] {
    match ip.to_canonical() {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

impl From<&ClientIp> for NetworkFacts {
    /// The client IP stage's facts; ASN and country left for the geo stage.
    fn from(client: &ClientIp) -> Self {
        Self {
            client: client.addr,
            provider: client.provider,
            egress: client.egress,
            asn: None,
            country: None,
        }
    }
}

/// How the network moved from `prev` (the session's baseline) to `cur`.
///
/// With the same client address, only the path can differ: provider, then
/// egress. With another address: the same prefix first (geo data is coarser
/// than a /24), then proven differences (country, then ASN), then a proven
/// same ASN; with ASN unknown on either side, [`NetworkChange::DifferentPrefix`].
pub fn classify(prev: &NetworkFacts, cur: &NetworkFacts) -> NetworkChange {
    prev.mark().change_to(&cur.mark())
}

/// Whether two addresses share a /24 (IPv4) or /48 (IPv6). Addresses of
/// different families never do.
pub fn same_prefix(a: IpAddr, b: IpAddr) -> bool {
    match (a.to_canonical(), b.to_canonical()) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let shift = 32 - u32::from(SAME_PREFIX_V4);
            u32::from(a) >> shift == u32::from(b) >> shift
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let shift = 128 - u32::from(SAME_PREFIX_V6);
            u128::from(a) >> shift == u128::from(b) >> shift
        }
        _ => false,
    }
}

// === impl NetworkChange ===

impl NetworkChange {
    /// Every change, least severe first, for metrics initialisation and docs.
    pub const ALL: [NetworkChange; 8] = [
        NetworkChange::Same,
        NetworkChange::EgressChanged,
        NetworkChange::ProviderChanged,
        NetworkChange::SamePrefix,
        NetworkChange::SameAsn,
        NetworkChange::DifferentPrefix,
        NetworkChange::DifferentAsn,
        NetworkChange::DifferentCountry,
    ];

    /// How suspicious the change is, 0 to 100, increasing with the order of
    /// the variants: 0 for no move of the client (`Same`, `EgressChanged`),
    /// 10 for a new path to the same client, 100 for another country.
    pub fn severity(self) -> u8 {
        match self {
            NetworkChange::Same | NetworkChange::EgressChanged => 0,
            NetworkChange::ProviderChanged => 10,
            NetworkChange::SamePrefix => 20,
            NetworkChange::SameAsn => 40,
            NetworkChange::DifferentPrefix => 60,
            NetworkChange::DifferentAsn => 80,
            NetworkChange::DifferentCountry => 100,
        }
    }

    /// Whether the client address itself changed (severity of
    /// [`NetworkChange::SamePrefix`] or more). This is what the scorer's
    /// `ip_changed` reason means.
    pub fn client_changed(self) -> bool {
        self >= NetworkChange::SamePrefix
    }

    /// The stable code of this change, for logs, headers and metric labels.
    pub fn code(self) -> &'static str {
        match self {
            NetworkChange::Same => "same",
            NetworkChange::EgressChanged => "egress_changed",
            NetworkChange::ProviderChanged => "provider_changed",
            NetworkChange::SamePrefix => "same_prefix",
            NetworkChange::SameAsn => "same_asn",
            NetworkChange::DifferentPrefix => "different_prefix",
            NetworkChange::DifferentAsn => "different_asn",
            NetworkChange::DifferentCountry => "different_country",
        }
    }
}

impl fmt::Display for NetworkChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(client: &str) -> NetworkFacts {
        NetworkFacts::new(client.parse().unwrap())
    }

    fn with(
        client: &str,
        provider: Option<&str>,
        egress: Option<&str>,
        asn: Option<u32>,
        country: Option<&[u8; 2]>,
    ) -> NetworkFacts {
        NetworkFacts {
            client: client.parse().unwrap(),
            provider: provider.map(|p| Provider::new(p).unwrap()),
            egress: egress.map(|e| e.parse().unwrap()),
            asn,
            country: country.copied(),
        }
    }

    #[test]
    fn classifies_every_kind_of_move() {
        use NetworkChange::*;
        let zs = Some("zscaler");
        let cases = [
            (facts("192.0.2.1"), facts("192.0.2.1"), Same),
            (
                with("192.0.2.1", zs, Some("185.46.212.10"), None, None),
                with("192.0.2.1", zs, Some("185.46.212.10"), None, None),
                Same,
            ),
            (
                with("192.0.2.1", zs, Some("185.46.212.10"), None, None),
                with("192.0.2.1", zs, Some("185.46.213.77"), None, None),
                EgressChanged,
            ),
            (
                with("192.0.2.1", zs, Some("185.46.212.10"), None, None),
                with("192.0.2.1", Some("cdn"), Some("203.0.113.5"), None, None),
                ProviderChanged,
            ),
            (
                facts("192.0.2.1"),
                with("192.0.2.1", zs, Some("185.46.212.10"), None, None),
                ProviderChanged,
            ),
            (facts("192.0.2.1"), facts("192.0.2.200"), SamePrefix),
            (
                facts("2001:db8:1::1"),
                facts("2001:db8:1:ff::9"),
                SamePrefix,
            ),
            (
                facts("2001:db8:1::1"),
                facts("2001:db8:2::1"),
                DifferentPrefix,
            ),
            (facts("192.0.2.1"), facts("2001:db8::1"), DifferentPrefix),
            (
                with("192.0.2.1", None, None, Some(64500), Some(b"DE")),
                with("198.51.100.1", None, None, Some(64500), Some(b"de")),
                SameAsn,
            ),
            (
                with("192.0.2.1", None, None, Some(64500), Some(b"DE")),
                with("198.51.100.1", None, None, Some(64501), Some(b"DE")),
                DifferentAsn,
            ),
            (
                with("192.0.2.1", None, None, Some(64500), Some(b"DE")),
                with("198.51.100.1", None, None, Some(64500), Some(b"FR")),
                DifferentCountry,
            ),
            (
                with("192.0.2.1", None, None, Some(64500), None),
                with("198.51.100.1", None, None, None, None),
                DifferentPrefix,
            ),
            (
                with("192.0.2.1", None, None, None, Some(b"DE")),
                with("198.51.100.1", None, None, Some(64501), None),
                DifferentPrefix,
            ),
            // Geo data on the same client address changes nothing.
            (
                with("192.0.2.1", None, None, Some(1), Some(b"DE")),
                with("192.0.2.1", None, None, Some(2), Some(b"FR")),
                Same,
            ),
        ];
        for (prev, cur, want) in cases {
            assert_eq!(classify(&prev, &cur), want, "{prev:?} -> {cur:?}");
            assert_eq!(cur.change_from(&prev), want);
        }
    }

    #[test]
    fn unknown_geo_never_ranks_as_a_proven_difference() {
        assert!(NetworkChange::DifferentPrefix < NetworkChange::DifferentAsn);
        assert!(NetworkChange::DifferentPrefix < NetworkChange::DifferentCountry);
        assert!(NetworkChange::DifferentPrefix.severity() < NetworkChange::DifferentAsn.severity());
    }

    #[test]
    fn severity_follows_the_order_and_only_moves_change_the_client() {
        for w in NetworkChange::ALL.windows(2) {
            assert!(w[0] < w[1]);
            assert!(w[0].severity() <= w[1].severity(), "{w:?}");
        }
        let moved: Vec<_> = NetworkChange::ALL
            .iter()
            .filter(|c| c.client_changed())
            .collect();
        assert_eq!(moved.first(), Some(&&NetworkChange::SamePrefix));
        assert!(!NetworkChange::EgressChanged.client_changed());
        assert_eq!(NetworkChange::EgressChanged.severity(), 0);
    }

    #[test]
    fn prefixes_fold_mapped_addresses() {
        assert!(same_prefix(
            "::ffff:192.0.2.1".parse().unwrap(),
            "192.0.2.77".parse().unwrap()
        ));
        assert!(!same_prefix(
            "192.0.2.1".parse().unwrap(),
            "192.0.3.1".parse().unwrap()
        ));
    }
}
