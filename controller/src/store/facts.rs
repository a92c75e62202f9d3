//! What a detection's decision saw of its request (`vigil_fleet::RequestFacts`),
//! as columns of the detection's row (migration `0020_detection_facts.sql`):
//! written with the detection, read for its page, and searched by client
//! address (exactly or by CIDR prefix, as a range of keys), ASN and JA4.

use std::net::IpAddr;

use sqlx::Row;
use vigil_fleet::RequestFacts;

use super::dashboard::{DETECTION_COLUMNS, page_clause, read_page};
use super::{DetectionCursor, DetectionFacts, Store, StoreError, to_u64};

/// A client address as its key: 32 lower-case hex digits of its IPv6 form
/// (IPv4 as `::ffff:a.b.c.d`). Fixed width, so that keys sort as the
/// addresses do and a prefix is a range.
pub fn ip_key(ip: IpAddr) -> String {
    format!("{:032x}", as_u128(ip))
}

fn as_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from_be_bytes(v4.to_ipv6_mapped().octets()),
        IpAddr::V6(v6) => u128::from_be_bytes(v6.octets()),
    }
}

/// The addresses a search names: one address, or a CIDR prefix
/// (`192.0.2.0/24`, `2001:db8::/32`), as the first and last key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRange {
    /// The first key ([`ip_key`]).
    pub first: String,
    /// The last key.
    pub last: String,
}

/// Shortest prefixes searched: a broader one is a scan of much of the
/// table, not a search.
const MIN_V4_PREFIX: u8 = 8;
/// Shortest IPv6 prefix searched.
const MIN_V6_PREFIX: u8 = 16;

impl IpRange {
    /// Reads an address or `address/length`: `None` when `s` is neither;
    /// `Some(Err(why))` when it is a prefix out of bounds (a length beyond
    /// the family's, or shorter than [`MIN_V4_PREFIX`] or
    /// [`MIN_V6_PREFIX`]).
    pub fn parse(s: &str) -> Option<Result<IpRange, String>> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let ip: IpAddr = addr.parse().ok()?;
        let (max, min) = match ip {
            IpAddr::V4(_) => (32u8, MIN_V4_PREFIX),
            IpAddr::V6(_) => (128u8, MIN_V6_PREFIX),
        };
        let len = match len {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(l) if (min..=max).contains(&l) => l,
                _ => {
                    return Some(Err(format!(
                        "a prefix length of this family is {min} to {max}"
                    )));
                }
            },
        };
        // In the 128-bit key space an IPv4 prefix sits under ::ffff:0:0/96.
        let bits = u32::from(len) + if max == 32 { 96 } else { 0 };
        let host = u128::MAX.checked_shr(bits).unwrap_or(0);
        let first = as_u128(ip) & !host;
        Some(Ok(IpRange {
            first: format!("{first:032x}"),
            last: format!("{:032x}", first | host),
        }))
    }
}

/// The facts as columns, in the order of [`FACT_COLUMNS`].
pub(super) struct FactColumns {
    client_ip: Option<String>,
    client_key: Option<String>,
    peer: Option<String>,
    chain: Option<String>,
    chain_truncated: Option<i64>,
    provider: Option<String>,
    ja4: Option<String>,
    device: Option<String>,
    browser: Option<String>,
    browser_major: Option<i64>,
    platform: Option<String>,
    country: Option<String>,
    asn: Option<i64>,
}

/// The columns [`FactColumns`] fills.
pub(super) const FACT_COLUMNS: &str = "client_ip, client_key, peer, chain, chain_truncated, \
     provider, ja4, device, browser, browser_major, platform, country, asn";

impl FactColumns {
    /// The columns of `facts` (all NULL without them). The controller took
    /// the facts only within their bounds (`RequestFacts::problem`).
    pub(super) fn of(facts: Option<&RequestFacts>) -> FactColumns {
        let Some(f) = facts else {
            return FactColumns {
                client_ip: None,
                client_key: None,
                peer: None,
                chain: None,
                chain_truncated: None,
                provider: None,
                ja4: None,
                device: None,
                browser: None,
                browser_major: None,
                platform: None,
                country: None,
                asn: None,
            };
        };
        let chain = f
            .chain
            .iter()
            .map(|hop| hop.map_or_else(|| "?".to_owned(), |ip| ip.to_string()))
            .collect::<Vec<_>>()
            .join(" ");
        FactColumns {
            client_ip: Some(f.client.to_string()),
            client_key: Some(ip_key(f.client)),
            peer: Some(f.peer.to_string()),
            chain: Some(chain),
            chain_truncated: Some(i64::from(f.chain_truncated)),
            provider: f.provider.clone(),
            ja4: f.ja4.clone(),
            device: Some(f.device.to_string()),
            browser: Some(f.browser.clone()),
            browser_major: Some(i64::from(f.major)),
            platform: Some(f.platform.clone()),
            country: f.country.map(|c| c.to_string()),
            asn: f.asn.map(i64::from),
        }
    }

    /// Binds the columns, in order, to `q`.
    pub(super) fn bind<'q>(
        self,
        q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
        q.bind(self.client_ip)
            .bind(self.client_key)
            .bind(self.peer)
            .bind(self.chain)
            .bind(self.chain_truncated)
            .bind(self.provider)
            .bind(self.ja4)
            .bind(self.device)
            .bind(self.browser)
            .bind(self.browser_major)
            .bind(self.platform)
            .bind(self.country)
            .bind(self.asn)
    }
}

/// A detection's request facts as stored, for its page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFacts {
    /// The client address as judged.
    pub client: String,
    /// The TCP peer.
    pub peer: String,
    /// The chain, leftmost first; `?` for an entry naming no address.
    pub chain: Vec<String>,
    /// Entries of the chain were left out.
    pub chain_truncated: bool,
    /// The trusted provider the client came through.
    pub provider: Option<String>,
    /// The JA4.
    pub ja4: Option<String>,
    /// The device, 16 hex digits.
    pub device: String,
    /// The browser family.
    pub browser: String,
    /// The browser's major version (0: unknown).
    pub browser_major: u64,
    /// The platform.
    pub platform: String,
    /// The country.
    pub country: Option<String>,
    /// The ASN.
    pub asn: Option<u64>,
}

// === impl Store ===

impl Store {
    /// The request facts of `node`'s detection `reference`, when it was
    /// reported with them.
    pub async fn request_facts(
        &self,
        node: &str,
        reference: &str,
    ) -> Result<Option<StoredFacts>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {FACT_COLUMNS} FROM detections \
             WHERE node = $1 AND reference = $2 AND client_key IS NOT NULL"
        )))
        .bind(node)
        .bind(reference)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let text = |i: usize| -> Result<String, sqlx::Error> {
            Ok(row.try_get::<Option<String>, _>(i)?.unwrap_or_default())
        };
        let chain = text(3)?;
        Ok(Some(StoredFacts {
            client: text(0)?,
            peer: text(2)?,
            chain: chain.split_whitespace().map(str::to_owned).collect(),
            chain_truncated: row.try_get::<Option<i64>, _>(4)?.unwrap_or(0) != 0,
            provider: row.try_get(5)?,
            ja4: row.try_get(6)?,
            device: text(7)?,
            browser: text(8)?,
            browser_major: to_u64(row.try_get::<Option<i64>, _>(9)?.unwrap_or(0)),
            platform: text(10)?,
            country: row.try_get(11)?,
            asn: row.try_get::<Option<i64>, _>(12)?.map(to_u64),
        }))
    }

    /// A page of the detections whose client address is in `range`: up to
    /// `limit` after `before`, newest first (the detections list's order),
    /// and whether more follow.
    pub async fn detections_by_client(
        &self,
        range: &IpRange,
        limit: usize,
        before: Option<&DetectionCursor>,
    ) -> Result<(Vec<DetectionFacts>, bool), StoreError> {
        let q = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DETECTION_COLUMNS} FROM detections WHERE client_key >= $1 AND client_key <= $2{}",
            page_clause(2, before, false)
        )))
        .bind(range.first.as_str())
        .bind(range.last.as_str());
        read_page(&self.pool, q, limit, before, None).await
    }

    /// A page of the detections of clients in autonomous system `asn`, as
    /// [`Store::detections_by_client`].
    pub async fn detections_by_asn(
        &self,
        asn: u32,
        limit: usize,
        before: Option<&DetectionCursor>,
    ) -> Result<(Vec<DetectionFacts>, bool), StoreError> {
        let q = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DETECTION_COLUMNS} FROM detections WHERE asn = $1{}",
            page_clause(1, before, false)
        )))
        .bind(i64::from(asn));
        read_page(&self.pool, q, limit, before, None).await
    }

    /// A page of the detections of connections with either JA4 of `ja4`,
    /// as [`Store::detections_by_client`].
    pub async fn detections_by_ja4(
        &self,
        ja4: &[&str; 2],
        limit: usize,
        before: Option<&DetectionCursor>,
    ) -> Result<(Vec<DetectionFacts>, bool), StoreError> {
        let q = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DETECTION_COLUMNS} FROM detections WHERE ja4 IN ($1, $2){}",
            page_clause(2, before, false)
        )))
        .bind(ja4[0])
        .bind(ja4[1]);
        read_page(&self.pool, q, limit, before, None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_as_addresses_and_prefixes_are_ranges() {
        assert_eq!(
            ip_key("192.0.2.1".parse().unwrap()),
            "00000000000000000000ffffc0000201"
        );
        assert_eq!(
            ip_key("2001:db8::1".parse().unwrap()),
            "20010db8000000000000000000000001"
        );
        let r = IpRange::parse("192.0.2.77/24").unwrap().unwrap();
        assert_eq!(r.first, "00000000000000000000ffffc0000200");
        assert_eq!(r.last, "00000000000000000000ffffc00002ff");
        let one = IpRange::parse("192.0.2.77").unwrap().unwrap();
        assert_eq!(one.first, one.last);
        let r = IpRange::parse("2001:db8:1::/48").unwrap().unwrap();
        assert_eq!(r.first, "20010db8000100000000000000000000");
        assert_eq!(r.last, "20010db80001ffffffffffffffffffff");
        let all = IpRange::parse("2001:db8::/128").unwrap().unwrap();
        assert_eq!(all.first, all.last);
        assert_eq!(IpRange::parse("example"), None);
        assert_eq!(IpRange::parse("<script>/24"), None);
        for bad in [
            "10.0.0.0/7",
            "10.0.0.0/33",
            "10.0.0.0/x",
            "::/15",
            "::/129",
            "1.2.3.4/",
        ] {
            assert!(IpRange::parse(bad).unwrap().is_err(), "{bad}");
        }
    }
}
