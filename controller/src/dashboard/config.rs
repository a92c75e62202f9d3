//! `[dashboard]`: who may sign in to the dashboard with which role, and
//! how long a dashboard session lasts (`docs/dashboard.md`).

use serde::Deserialize;

/// The dashboard's settings, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashboardConfig {
    /// Whether `/dashboard` is served at all (`enabled`, default `true`).
    pub enabled: bool,
    /// SHA-256 of each token that signs in as a `viewer`
    /// (`viewer_tokens_sha256`, what `vigil-controller hash-token` prints):
    /// the raw tokens are never in the config. The admin token (and the
    /// pinned admin certificate) sign in as a `responder`.
    pub viewer_tokens: Vec<[u8; 32]>,
    /// Seconds a dashboard session lives without a request
    /// (`idle_timeout_minutes`, 1 to 1,440, default 30).
    pub idle_timeout: u64,
    /// Seconds a dashboard session lives at most, busy or not
    /// (`max_session_hours`, 1 to 168, default 12).
    pub max_age: u64,
    /// Failed sign-ins one client address may make per minute
    /// (`failed_logins_per_minute`, 1 to 1,000, default 5); every client
    /// together may make ten times as many.
    pub failed_logins_per_minute: u32,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            enabled: true,
            viewer_tokens: Vec::new(),
            idle_timeout: 30 * 60,
            max_age: 12 * 3_600,
            failed_logins_per_minute: 5,
        }
    }
}

/// `[dashboard]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDashboard {
    enabled: Option<bool>,
    #[serde(default)]
    viewer_tokens_sha256: Vec<String>,
    idle_timeout_minutes: Option<u64>,
    max_session_hours: Option<u64>,
    failed_logins_per_minute: Option<u32>,
}

impl RawDashboard {
    /// The settings, each problem pushed under `dashboard.<key>`.
    /// `admin_token` is the admin token's hash: a viewer token equal to it
    /// would make the role ambiguous, and is refused.
    pub fn validate(
        &self,
        admin_token: Option<&[u8; 32]>,
        problems: &mut Vec<String>,
    ) -> DashboardConfig {
        let d = DashboardConfig::default();
        let mut viewer_tokens = Vec::new();
        for (i, hex) in self.viewer_tokens_sha256.iter().enumerate() {
            let mut hash = [0u8; 32];
            if hex.len() != 64 || hex::decode_to_slice(hex, &mut hash).is_err() {
                problems.push(format!(
                    "dashboard.viewer_tokens_sha256[{i}]: expected 64 hex digits (what `vigil-controller hash-token` prints)"
                ));
                continue;
            }
            if Some(&hash) == admin_token {
                problems.push(format!(
                    "dashboard.viewer_tokens_sha256[{i}]: is the admin token's hash; a viewer token must differ from it"
                ));
                continue;
            }
            if viewer_tokens.contains(&hash) {
                problems.push(format!(
                    "dashboard.viewer_tokens_sha256[{i}]: appears twice"
                ));
                continue;
            }
            viewer_tokens.push(hash);
        }
        let mut ranged = |key: &str, value: Option<u64>, default: u64, max: u64| {
            let v = value.unwrap_or(default);
            if !(1..=max).contains(&v) {
                problems.push(format!(
                    "dashboard.{key}: {v} is out of range; expected 1 to {max}"
                ));
                return default;
            }
            v
        };
        let idle = ranged("idle_timeout_minutes", self.idle_timeout_minutes, 30, 1_440);
        let hours = ranged("max_session_hours", self.max_session_hours, 12, 168);
        let failed = ranged(
            "failed_logins_per_minute",
            self.failed_logins_per_minute.map(u64::from),
            u64::from(d.failed_logins_per_minute),
            1_000,
        );
        DashboardConfig {
            enabled: self.enabled.unwrap_or(true),
            viewer_tokens,
            idle_timeout: idle * 60,
            max_age: hours * 3_600,
            failed_logins_per_minute: u32::try_from(failed).unwrap_or(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let admin = crate::config::token_hash("admin-token-0123456789");
        let raw: RawDashboard = toml::from_str(&format!(
            "viewer_tokens_sha256 = [\"xyz\", \"{a}\", \"{v}\", \"{v}\"]\nidle_timeout_minutes = 0\nmax_session_hours = 169\n",
            a = hex::encode(admin),
            v = hex::encode(crate::config::token_hash("viewer-token-0123456789")),
        ))
        .unwrap();
        let mut problems = Vec::new();
        let d = raw.validate(Some(&admin), &mut problems);
        assert_eq!(
            problems,
            [
                "dashboard.viewer_tokens_sha256[0]: expected 64 hex digits (what `vigil-controller hash-token` prints)",
                "dashboard.viewer_tokens_sha256[1]: is the admin token's hash; a viewer token must differ from it",
                "dashboard.viewer_tokens_sha256[3]: appears twice",
                "dashboard.idle_timeout_minutes: 0 is out of range; expected 1 to 1440",
                "dashboard.max_session_hours: 169 is out of range; expected 1 to 168",
            ]
        );
        assert_eq!(d.viewer_tokens.len(), 1);
        assert!(toml::from_str::<RawDashboard>("viewer_token = \"x\"").is_err());
    }

    #[test]
    fn nothing_written_is_the_defaults() {
        let mut problems = Vec::new();
        let d = RawDashboard::default().validate(None, &mut problems);
        assert!(problems.is_empty());
        assert_eq!(d, DashboardConfig::default());
    }
}
