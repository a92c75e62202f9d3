//! `[dashboard]`: who may sign in to the dashboard with which role, and
//! how long a dashboard session lasts (`docs/dashboard.md`).

use std::path::{Path, PathBuf};

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
    /// Operator sign-in through an OpenID provider (`[dashboard.oidc]`).
    pub oidc: Option<OidcConfig>,
}

/// `[dashboard.oidc]`: the OpenID provider operators sign in with, and
/// how its claims map to roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// The issuer (`issuer`): discovery is at its well-known address, and
    /// an ID token's `iss` must be it exactly.
    pub issuer: String,
    /// The controller's client id at the provider (`client_id`).
    pub client_id: String,
    /// The client secret (`client_secret_file`), never logged.
    pub client_secret: Secret,
    /// Where the provider sends operators back (`redirect_url`): this
    /// controller's `/dashboard/oidc/callback`, as registered there.
    pub redirect_url: String,
    /// Scopes asked for (`scopes`, default `["openid"]`; `openid` always).
    pub scopes: Vec<String>,
    /// The claim of the ID token holding the operator's groups or roles
    /// (`roles_claim`, default `groups`): a string or a list of strings.
    pub roles_claim: String,
    /// Values of that claim that make a responder (`responder_values`).
    pub responder_values: Vec<String>,
    /// Values that make a viewer (`viewer_values`); an operator with
    /// neither is refused.
    pub viewer_values: Vec<String>,
    /// The claim shown as the operator's name (`name_claim`, default
    /// `name`); the identity itself is issuer and subject.
    pub name_claim: String,
}

/// A secret read from a file: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// The path of the callback `redirect_url` must name.
pub const CALLBACK_PATH: &str = "/dashboard/oidc/callback";

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            enabled: true,
            viewer_tokens: Vec::new(),
            idle_timeout: 30 * 60,
            max_age: 12 * 3_600,
            failed_logins_per_minute: 5,
            oidc: None,
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
    oidc: Option<RawOidc>,
}

/// `[dashboard.oidc]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    issuer: String,
    client_id: String,
    client_secret_file: PathBuf,
    redirect_url: String,
    scopes: Option<Vec<String>>,
    roles_claim: Option<String>,
    #[serde(default)]
    responder_values: Vec<String>,
    #[serde(default)]
    viewer_values: Vec<String>,
    name_claim: Option<String>,
}

/// An `http(s)` URL without user, query or fragment; `https` unless its
/// host is loopback (a test, or a provider on the same host).
fn web_url(key: &str, value: &str, problems: &mut Vec<String>) -> Option<url::Url> {
    let bad = |why: &str| format!("dashboard.oidc.{key}: {value:?}: {why}");
    let Ok(url) = url::Url::parse(value) else {
        problems.push(bad("not an absolute URL"));
        return None;
    };
    let loopback = match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    let why = match url.scheme() {
        _ if url.host().is_none() => Some("has no host"),
        "https" => None,
        "http" if loopback => None,
        "http" => Some("must be https (http only on loopback)"),
        _ => Some("must be an https URL"),
    }
    .or_else(|| {
        (!url.username().is_empty() || url.password().is_some())
            .then_some("must not carry a user or password")
    })
    .or_else(|| {
        (url.query().is_some() || url.fragment().is_some())
            .then_some("must have no query or fragment")
    });
    match why {
        Some(why) => {
            problems.push(bad(why));
            None
        }
        None => Some(url),
    }
}

/// A claim name or claim value as configured: 1 to 256 characters, no
/// control characters.
fn plain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && !s.chars().any(char::is_control)
}

impl RawOidc {
    fn validate(&self, base: &Path, problems: &mut Vec<String>) -> Option<OidcConfig> {
        let before = problems.len();
        web_url("issuer", &self.issuer, problems);
        if self.client_id.is_empty() || self.client_id.len() > 1024 {
            problems.push("dashboard.oidc.client_id: 1 to 1024 characters".to_owned());
        }
        let file = if self.client_secret_file.is_absolute() {
            self.client_secret_file.clone()
        } else {
            base.join(&self.client_secret_file)
        };
        let secret = match std::fs::read_to_string(&file) {
            Ok(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Ok(_) => {
                problems.push(format!(
                    "dashboard.oidc.client_secret_file: {}: is empty",
                    self.client_secret_file.display()
                ));
                None
            }
            Err(e) => {
                problems.push(format!(
                    "dashboard.oidc.client_secret_file: {}: {e}",
                    self.client_secret_file.display()
                ));
                None
            }
        };
        if let Some(url) = web_url("redirect_url", &self.redirect_url, problems)
            && url.path() != CALLBACK_PATH
        {
            problems.push(format!(
                "dashboard.oidc.redirect_url: {:?}: its path must be {CALLBACK_PATH}",
                self.redirect_url
            ));
        }
        let scopes = self
            .scopes
            .clone()
            .unwrap_or_else(|| vec!["openid".to_owned()]);
        for (i, scope) in scopes.iter().enumerate() {
            // RFC 6749 3.3: visible ASCII but the space, `"` and `\`.
            let ok = !scope.is_empty()
                && scope
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
            if !ok {
                problems.push(format!(
                    "dashboard.oidc.scopes[{i}]: {scope:?} is not a scope token"
                ));
            } else if scopes[..i].contains(scope) {
                problems.push(format!(
                    "dashboard.oidc.scopes[{i}]: {scope:?} appears twice"
                ));
            }
        }
        if !scopes.iter().any(|s| s == "openid") {
            problems.push("dashboard.oidc.scopes: must include \"openid\"".to_owned());
        }
        let roles_claim = self
            .roles_claim
            .clone()
            .unwrap_or_else(|| "groups".to_owned());
        let name_claim = self.name_claim.clone().unwrap_or_else(|| "name".to_owned());
        for (key, claim) in [("roles_claim", &roles_claim), ("name_claim", &name_claim)] {
            if !plain(claim) {
                problems.push(format!(
                    "dashboard.oidc.{key}: {claim:?}: 1 to 256 characters, no control characters"
                ));
            }
        }
        for (key, values) in [
            ("responder_values", &self.responder_values),
            ("viewer_values", &self.viewer_values),
        ] {
            for (i, v) in values.iter().enumerate() {
                if !plain(v) {
                    problems.push(format!(
                        "dashboard.oidc.{key}[{i}]: {v:?}: 1 to 256 characters, no control characters"
                    ));
                } else if values[..i].contains(v) {
                    problems.push(format!("dashboard.oidc.{key}[{i}]: {v:?} appears twice"));
                }
            }
        }
        for (i, v) in self.viewer_values.iter().enumerate() {
            if self.responder_values.contains(v) {
                problems.push(format!(
                    "dashboard.oidc.viewer_values[{i}]: {v:?} is also a responder value; a value maps to one role"
                ));
            }
        }
        if self.responder_values.is_empty() && self.viewer_values.is_empty() {
            problems.push(
                "dashboard.oidc: responder_values and viewer_values are both empty; nobody could sign in"
                    .to_owned(),
            );
        }
        if problems.len() > before {
            return None;
        }
        Some(OidcConfig {
            issuer: self.issuer.clone(),
            client_id: self.client_id.clone(),
            client_secret: Secret(secret?),
            redirect_url: self.redirect_url.clone(),
            scopes,
            roles_claim,
            responder_values: self.responder_values.clone(),
            viewer_values: self.viewer_values.clone(),
            name_claim,
        })
    }
}

impl RawDashboard {
    /// The settings, each problem pushed under `dashboard.<key>`.
    /// `admin_token` is the admin token's hash: a viewer token equal to it
    /// would make the role ambiguous, and is refused.
    pub fn validate(
        &self,
        admin_token: Option<&[u8; 32]>,
        base: &Path,
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
            oidc: self.oidc.as_ref().and_then(|o| o.validate(base, problems)),
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
        let d = raw.validate(Some(&admin), Path::new("."), &mut problems);
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
        let d = RawDashboard::default().validate(None, Path::new("."), &mut problems);
        assert!(problems.is_empty());
        assert_eq!(d, DashboardConfig::default());
    }

    #[test]
    fn every_oidc_problem_is_reported_with_its_key_at_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("empty.secret"), "\n").unwrap();
        let raw: RawDashboard = toml::from_str(
            "[oidc]\nissuer = \"http://idp.example/\"\nclient_id = \"\"\n\
             client_secret_file = \"empty.secret\"\nredirect_url = \"https://c.example/dashboard/login?x=1\"\n\
             scopes = [\"email\", \"a b\", \"email\"]\nroles_claim = \"\"\n\
             responder_values = [\"ops\", \"ops\"]\nviewer_values = [\"ops\"]\n",
        )
        .unwrap();
        let mut problems = Vec::new();
        let d = raw.validate(None, dir.path(), &mut problems);
        assert_eq!(
            problems,
            [
                "dashboard.oidc.issuer: \"http://idp.example/\": must be https (http only on loopback)",
                "dashboard.oidc.client_id: 1 to 1024 characters",
                "dashboard.oidc.client_secret_file: empty.secret: is empty",
                "dashboard.oidc.redirect_url: \"https://c.example/dashboard/login?x=1\": must have no query or fragment",
                "dashboard.oidc.scopes[1]: \"a b\" is not a scope token",
                "dashboard.oidc.scopes[2]: \"email\" appears twice",
                "dashboard.oidc.scopes: must include \"openid\"",
                "dashboard.oidc.roles_claim: \"\": 1 to 256 characters, no control characters",
                "dashboard.oidc.responder_values[1]: \"ops\" appears twice",
                "dashboard.oidc.viewer_values[0]: \"ops\" is also a responder value; a value maps to one role",
            ]
        );
        assert_eq!(d.oidc, None);
        // A missing secret file and a callback at another path; nobody mapped.
        let raw: RawDashboard = toml::from_str(
            "[oidc]\nissuer = \"https://idp.example\"\nclient_id = \"vigil\"\n\
             client_secret_file = \"none.secret\"\nredirect_url = \"https://c.example/callback\"\n",
        )
        .unwrap();
        let mut problems = Vec::new();
        raw.validate(None, dir.path(), &mut problems);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("dashboard.oidc.client_secret_file: none.secret: "));
        assert_eq!(
            problems[1],
            "dashboard.oidc.redirect_url: \"https://c.example/callback\": its path must be /dashboard/oidc/callback"
        );
        assert!(problems[2].starts_with("dashboard.oidc: responder_values and viewer_values"));
        // A good one.
        std::fs::write(dir.path().join("good.secret"), "s3cret\n").unwrap();
        let raw: RawDashboard = toml::from_str(
            "[oidc]\nissuer = \"http://127.0.0.1:9/\"\nclient_id = \"vigil\"\n\
             client_secret_file = \"good.secret\"\nredirect_url = \"http://127.0.0.1:8/dashboard/oidc/callback\"\n\
             responder_values = [\"ops\"]\n",
        )
        .unwrap();
        let mut problems = Vec::new();
        let d = raw.validate(None, dir.path(), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let oidc = d.oidc.unwrap();
        assert_eq!(oidc.client_secret.0, "s3cret");
        assert_eq!(format!("{:?}", oidc.client_secret), "Secret(…)");
        assert_eq!(oidc.scopes, ["openid"]);
        assert_eq!(oidc.roles_claim, "groups");
    }
}
