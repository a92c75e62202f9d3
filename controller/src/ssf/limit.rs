//! Per-peer rate limits on the inbound signal endpoints (the push
//! endpoint, the global token revocation endpoint): a token bucket per
//! source address, checked before anything else of a request is looked
//! at, and one per transmitter or peer, checked once its bearer is
//! known (so that an unauthenticated flood cannot spend a transmitter's
//! allowance). A request over either is answered `429` with
//! `Retry-After`, before its body is read.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Source addresses tracked at once; beyond, new sources share one
/// bucket (so that a spray of addresses cannot grow memory).
pub const MAX_SOURCES: usize = 4096;

/// A rate: `per_second` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Requests a second, sustained.
    pub per_second: f64,
    /// Requests at once after a quiet time.
    pub burst: f64,
}

/// Token buckets by key, at most `max_keys` of them.
#[derive(Debug)]
pub struct Limiter<K> {
    rate: Rate,
    max_keys: usize,
    buckets: Mutex<HashMap<Option<K>, (Instant, f64)>>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    /// A limiter of `rate` per key.
    pub fn new(rate: Rate, max_keys: usize) -> Limiter<K> {
        Limiter {
            rate,
            max_keys: max_keys.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request of `key`: `Err(retry_after)` when over its rate.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let Rate { per_second, burst } = self.rate;
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut slot = Some(key.clone());
        if !buckets.contains_key(&slot) && buckets.len() >= self.max_keys {
            // Full buckets are forgotten (a fresh one is the same);
            // if none is, the newcomer shares the overflow bucket.
            buckets.retain(|_, (at, tokens)| {
                *tokens + now.duration_since(*at).as_secs_f64() * per_second < burst
            });
            if buckets.len() >= self.max_keys {
                slot = None;
            }
        }
        let (at, tokens) = buckets.entry(slot).or_insert((now, burst));
        let refilled = (*tokens + now.duration_since(*at).as_secs_f64() * per_second).min(burst);
        *at = now;
        if refilled >= 1.0 {
            *tokens = refilled - 1.0;
            Ok(())
        } else {
            *tokens = refilled;
            let wait = ((1.0 - refilled) / per_second).ceil().max(1.0);
            Err(Duration::from_secs_f64(wait.min(3600.0)))
        }
    }
}

/// The key of a source address: the address for IPv4, its /64 for IPv6
/// (one host commonly holds a whole /64).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::V6(o.into())
            }
        },
    }
}

/// A `429` with `Retry-After` and an RFC 8935-shaped body.
pub fn too_many(retry_after: Duration) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        [
            (
                axum::http::header::RETRY_AFTER,
                retry_after.as_secs().max(1).to_string(),
            ),
            (axum::http::header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        axum::Json(serde_json::json!({
            "err": "too_many_requests",
            "description": "over this peer's rate limit; retry later",
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let l = Limiter::new(
            Rate {
                per_second: 2.0,
                burst: 3.0,
            },
            8,
        );
        for _ in 0..3 {
            assert!(l.check_at(&1, t0).is_ok());
        }
        assert_eq!(l.check_at(&1, t0), Err(Duration::from_secs(1)));
        assert!(l.check_at(&2, t0).is_ok(), "another key has its own bucket");
        let later = t0 + Duration::from_millis(500);
        assert!(l.check_at(&1, later).is_ok());
        assert!(l.check_at(&1, later).is_err());
    }

    #[test]
    fn past_max_keys_newcomers_share_one_bucket() {
        let l = Limiter::new(
            Rate {
                per_second: 1.0,
                burst: 1.0,
            },
            2,
        );
        assert!(l.check(&1).is_ok());
        assert!(l.check(&2).is_ok());
        assert!(l.check(&3).is_ok(), "the overflow bucket's one");
        assert!(l.check(&4).is_err(), "shares 3's");
        assert_eq!(l.buckets.lock().unwrap().len(), 3);
    }

    #[test]
    fn ipv6_sources_are_keyed_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        let m: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(source_key(m), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
