//! What templates show, prepared in Rust: every value a plain string or
//! number, so that templates only lay them out (and askama escapes each).

use vigil_engine::SessionState;

use crate::store::{DetectionFacts, StoredFacts};

/// Who is signed in, on every page.
#[derive(Debug, Clone)]
pub(crate) struct Nav {
    /// As [`super::session::Identity::label`].
    pub(crate) identity: String,
    /// `viewer` or `responder`.
    pub(crate) role: &'static str,
    /// Whether action buttons are shown.
    pub(crate) responder: bool,
    /// The session's CSRF token, in every form.
    pub(crate) csrf: String,
}

/// Seconds since the Unix epoch as UTC, `2026-12-03 19:05:08Z`; `-` for 0.
pub(crate) fn time(secs: u64) -> String {
    if secs == 0 {
        return "-".to_owned();
    }
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let (y, m, d) = civil(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day count from 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A detection as listed and shown.
#[derive(Debug, Clone)]
pub(crate) struct Detection {
    pub(crate) reference: String,
    pub(crate) node: String,
    pub(crate) at: String,
    pub(crate) user: Option<String>,
    pub(crate) session: Option<String>,
    pub(crate) route: String,
    pub(crate) rule: Option<String>,
    pub(crate) action: String,
    pub(crate) enforced: bool,
    pub(crate) score: u8,
    pub(crate) reasons: Vec<(String, u8)>,
    pub(crate) false_positive_at: Option<String>,
    pub(crate) confirmed_at: Option<String>,
}

impl Detection {
    pub(crate) fn of(d: &DetectionFacts) -> Detection {
        Detection {
            reference: d.row.reference.clone(),
            node: d.row.node.clone(),
            at: time(d.row.at),
            user: d.user.map(|u| u.to_string()),
            session: d.row.session.clone(),
            route: d.row.route.clone(),
            rule: d.row.rule.clone(),
            action: d.row.action.clone(),
            enforced: d.row.enforced,
            score: d.row.score,
            reasons: d.row.reasons.clone(),
            false_positive_at: d.row.false_positive_at.map(time),
            confirmed_at: d.confirmed_compromise_at.map(time),
        }
    }

    /// `a, b` of the reason codes.
    pub(crate) fn reason_list(&self) -> String {
        self.reasons
            .iter()
            .map(|(code, _)| code.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What a session's record says of its device and network.
#[derive(Debug, Clone, Default)]
pub(crate) struct Baseline {
    pub(crate) first_seen: String,
    pub(crate) last_seen: String,
    pub(crate) device: String,
    pub(crate) browser_major: String,
    pub(crate) ja4: String,
    pub(crate) asn: String,
    /// The ASN as a number, when known: what a trust form posts.
    pub(crate) asn_number: Option<u32>,
    pub(crate) country: String,
    pub(crate) prefix_hash: String,
    pub(crate) via_provider: bool,
}

impl Baseline {
    pub(crate) fn of(state: &SessionState) -> Baseline {
        let device = state.device();
        let mark = state.network();
        Baseline {
            first_seen: time(state.first_seen()),
            last_seen: time(state.last_seen()),
            device: device.id.to_string(),
            browser_major: device.id.major().to_string(),
            ja4: device.ja4.map_or_else(|| "-".to_owned(), |j| j.to_string()),
            asn_number: (mark.asn != 0).then_some(mark.asn),
            asn: if mark.asn == 0 {
                "-".to_owned()
            } else {
                format!("AS{}", mark.asn)
            },
            country: if mark.country == [0, 0] {
                "-".to_owned()
            } else {
                String::from_utf8_lossy(&mark.country).into_owned()
            },
            prefix_hash: format!("{:08x}", mark.prefix),
            via_provider: mark.provider != 0,
        }
    }
}

/// What a detection's request was judged on, as its node reported it.
#[derive(Debug, Clone)]
pub(crate) struct RequestFacts {
    pub(crate) client: String,
    pub(crate) peer: String,
    /// The chain, leftmost first, or `none`.
    pub(crate) chain: String,
    pub(crate) chain_truncated: bool,
    pub(crate) provider: Option<String>,
    pub(crate) ja4: String,
    pub(crate) device: String,
    pub(crate) browser: String,
    pub(crate) platform: String,
    pub(crate) country: String,
    pub(crate) asn: String,
}

impl RequestFacts {
    pub(crate) fn of(f: &StoredFacts) -> RequestFacts {
        RequestFacts {
            client: f.client.clone(),
            peer: f.peer.clone(),
            chain: if f.chain.is_empty() {
                "none (no forwarding header was read)".to_owned()
            } else {
                f.chain.join(", ")
            },
            chain_truncated: f.chain_truncated,
            provider: f.provider.clone(),
            ja4: f.ja4.clone().unwrap_or_else(|| "-".to_owned()),
            device: f.device.clone(),
            browser: if f.browser_major == 0 {
                f.browser.clone()
            } else {
                format!("{} {}", f.browser, f.browser_major)
            },
            platform: if f.platform.is_empty() {
                "-".to_owned()
            } else {
                f.platform.clone()
            },
            country: f.country.clone().unwrap_or_else(|| "-".to_owned()),
            asn: f.asn.map_or_else(|| "-".to_owned(), |a| format!("AS{a}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(time(0), "-");
        assert_eq!(time(1), "1970-01-01 00:00:01Z");
        assert_eq!(time(951_782_400), "2000-02-29 00:00:00Z");
        assert_eq!(time(1_796_325_908), "2026-12-03 19:25:08Z");
        assert_eq!(time(4_107_542_399), "2100-02-28 23:59:59Z");
        // Far out of range: a date, never a panic.
        assert!(!time(u64::MAX).is_empty());
    }
}
