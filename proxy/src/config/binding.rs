//! `[binding]`: the rotating binding (docs/bound-sessions.md).

use std::time::Duration;

use vigil_engine::binding::{BindingConfig, HOST_PREFIX};

use super::fields::{Fields, Problems};
use super::within;

/// Reads `[binding]`; every problem is reported.
pub(super) fn read_binding(
    f: &mut Fields<'_>,
    session_cookies: &[String],
    p: &mut Problems,
) -> BindingConfig {
    let mut t = f.table(p, "binding");
    let d = BindingConfig::default();
    let enabled = t.or(p, "enabled", d.enabled);
    let cookie_name: String = t.or(p, "cookie_name", d.cookie_name.clone());
    let valid_name = !cookie_name.is_empty()
        && cookie_name.len() <= 64
        && cookie_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !valid_name {
        p.push(
            t.key("cookie_name"),
            format!("{cookie_name:?} is not a cookie name; expected 1 to 64 of a-z A-Z 0-9 _ - ."),
        );
    }
    // Vigil adds the `__Host-` prefix itself where the scope allows it.
    let lower = cookie_name.to_ascii_lowercase();
    if lower.starts_with("__host-") || lower.starts_with("__secure-") {
        p.push(
            t.key("cookie_name"),
            format!("{cookie_name:?} starts with a cookie prefix; Vigil adds __Host- itself to host-wide companions"),
        );
    }
    if session_cookies.iter().any(|c| {
        c.eq_ignore_ascii_case(&cookie_name)
            || c.eq_ignore_ascii_case(&format!("{HOST_PREFIX}{cookie_name}"))
    }) {
        p.push(
            t.key("cookie_name"),
            format!("{cookie_name:?} is a session cookie of the app ([session] cookies)"),
        );
    }
    let rotate_after: u64 = t.or(p, "rotate_after_seconds", d.rotate_after.as_secs());
    within(p, t.key("rotate_after_seconds"), rotate_after, 1..=86_400);
    let grace: u64 = t.or(p, "grace_seconds", d.grace.as_secs());
    within(p, t.key("grace_seconds"), grace, 1..=3_600);
    if grace > rotate_after {
        p.push(
            t.key("grace_seconds"),
            format!("{grace} is longer than rotate_after_seconds ({rotate_after}); a generation must outlive its grace"),
        );
    }
    let domain: Option<String> = t.opt(p, "domain");
    let domain = domain.and_then(|d| match valid_domain(&d) {
        Some(d) if public_suffix(&d) => {
            p.push(
                t.key("domain"),
                format!("{d:?} is a public suffix: every site under it would receive the companion, and browsers refuse such a Domain; expected the app's own domain, such as \"example.co.uk\""),
            );
            None
        }
        Some(d) => Some(d),
        None => {
            p.push(
                t.key("domain"),
                format!("{d:?} is not a cookie domain; expected a host name such as \"example.com\" (labels of a-z 0-9 -, at most 253 bytes, no port, no IP address)"),
            );
            None
        }
    });
    let rotate_on_step_up = t.or(p, "rotate_on_step_up", d.rotate_on_step_up);
    t.finish(p);
    BindingConfig {
        enabled,
        cookie_name,
        rotate_after: Duration::from_secs(rotate_after),
        grace: Duration::from_secs(grace),
        domain,
        rotate_on_step_up,
    }
}

/// Vigil's two cookies and the app's must not share a name: one would be
/// read for the other, and the companion or the DBSC cookie is taken out
/// of the `Cookie` header before the app sees it, so the app would lose
/// its session. Compared without case (some frameworks fold it), and the
/// companion under both names it is set with (bare, and `__Host-`).
pub(super) fn check_cookie_names(
    binding: &BindingConfig,
    dbsc_cookie: &str,
    session_cookies: &[String],
    p: &mut Problems,
) {
    let host = format!("{HOST_PREFIX}{}", binding.cookie_name);
    if dbsc_cookie.eq_ignore_ascii_case(&binding.cookie_name)
        || dbsc_cookie.eq_ignore_ascii_case(&host)
    {
        p.push(
            "binding.cookie_name",
            format!(
                "{:?} collides with [dbsc] cookie_name {dbsc_cookie:?} (the companion is set as {:?} and {host:?}); the DBSC cookie and the companion must have different names",
                binding.cookie_name, binding.cookie_name
            ),
        );
    }
    if let Some(c) = session_cookies
        .iter()
        .find(|c| c.eq_ignore_ascii_case(dbsc_cookie))
    {
        p.push(
            "dbsc.cookie_name",
            format!(
                "{dbsc_cookie:?} is a session cookie of the app ([session] cookies has {c:?}); Vigil takes its DBSC cookie out of every request, so the app would never see its session"
            ),
        );
    }
}

/// A `Domain` a browser takes: a host name (a leading dot, which browsers
/// ignore, dropped; lower-cased), at least two labels of 1 to 63 of
/// a-z 0-9 and inner `-`, at most 253 bytes, not all digits in the last
/// label (an IPv4 address cannot be a cookie domain for other hosts).
fn valid_domain(d: &str) -> Option<String> {
    let d = d.strip_prefix('.').unwrap_or(d).to_ascii_lowercase();
    let labels: Vec<&str> = d.split('.').collect();
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let ok = d.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| label_ok(l))
        && !labels
            .last()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    ok.then_some(d)
}

/// Whether `d` (valid, lower-cased) is an obvious public suffix: a
/// well-known second-level registry under a country code (`co.uk`,
/// `com.au`, `ac.jp`, ...) or one of a few hosting suffixes where sites of
/// different owners sit side by side. Not the Public Suffix List (that
/// would be a dependency and a list to keep current): a heuristic that
/// catches the usual mistakes; single labels are refused already.
fn public_suffix(d: &str) -> bool {
    const REGISTRIES: &[&str] = &[
        "ac", "co", "com", "edu", "gob", "go", "gov", "ltd", "me", "mil", "ne", "net", "nic", "or",
        "org", "plc", "sch",
    ];
    const HOSTING: &[&str] = &[
        "appspot.com",
        "azurewebsites.net",
        "blogspot.com",
        "cloudfront.net",
        "github.io",
        "herokuapp.com",
        "netlify.app",
        "pages.dev",
        "vercel.app",
        "workers.dev",
    ];
    if HOSTING.contains(&d) {
        return true;
    }
    match d.split('.').collect::<Vec<_>>().as_slice() {
        [second, cc] => cc.len() == 2 && REGISTRIES.contains(second),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{Config, ConfigError};

    const BASE: &str = r#"
[[listeners]]
name = "http"
listen = "127.0.0.1:8080"

[[upstreams]]
name = "app"
addresses = ["127.0.0.1:3000"]

[[routes]]
name = "app"
upstream = "app"
"#;

    fn problems(extra: &str) -> Vec<String> {
        match Config::parse(
            &format!("{BASE}{extra}"),
            Path::new("/etc/vigil/proxy.toml"),
        ) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid { problems, .. }) => {
                problems.iter().map(|p| p.key.clone()).collect()
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_binding_is_off_by_default_and_its_settings_are_read() {
        let c = Config::parse(BASE, Path::new("/etc/vigil/proxy.toml")).unwrap();
        assert!(!c.engine.binding.enabled);
        let c = Config::parse(
            &format!(
                "{BASE}[binding]\nenabled = true\ncookie_name = \"b\"\nrotate_after_seconds = 60\ngrace_seconds = 5\n\
                 [risk]\nbinding_reused = 90\nbinding_missing = 50\nbinding_invalid = 40\n"
            ),
            Path::new("/etc/vigil/proxy.toml"),
        )
        .unwrap();
        let b = &c.engine.binding;
        assert!(b.enabled);
        assert_eq!(b.cookie_name, "b");
        assert_eq!(b.rotate_after.as_secs(), 60);
        assert_eq!(b.grace.as_secs(), 5);
        let s = &c.engine.score;
        assert_eq!(
            (s.binding_reused, s.binding_missing, s.binding_invalid),
            (90, 50, 40)
        );
        // Defaults: no domain (host-wide `__Host-` companions), rotation on
        // a step-up.
        assert_eq!(b.domain, None);
        assert!(b.rotate_on_step_up);
        let c = Config::parse(
            &format!(
                "{BASE}[binding]\nenabled = true\ndomain = \".Example.COM\"\nrotate_on_step_up = false\n"
            ),
            Path::new("/etc/vigil/proxy.toml"),
        )
        .unwrap();
        let b = &c.engine.binding;
        assert_eq!(b.domain.as_deref(), Some("example.com"));
        assert!(!b.rotate_on_step_up);
    }

    #[test]
    fn every_binding_problem_is_reported_at_once() {
        let keys = problems(
            "[binding]\ncookie_name = \"session\"\nrotate_after_seconds = 0\ngrace_seconds = 7200\nrotate = 1\n\
             [risk]\nbinding_reused = 101\n",
        );
        for key in [
            "binding.cookie_name",
            "binding.rotate_after_seconds",
            "binding.grace_seconds",
            "binding.rotate",
            "risk.binding_reused",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} not in {keys:?}");
        }
        let keys = problems("[binding]\ncookie_name = \"a b;c\"\n");
        assert_eq!(keys, vec!["binding.cookie_name"]);
        let keys = problems("[binding]\ncookie_name = \"__Host-bind\"\n");
        assert_eq!(keys, vec!["binding.cookie_name"]);
        let keys = problems("[binding]\nrotate_on_step_up = \"yes\"\n");
        assert_eq!(keys, vec!["binding.rotate_on_step_up"]);
    }

    /// The companion (under either of its names), the DBSC cookie and the
    /// app's session cookies are four names: any two alike would make
    /// Vigil read one for the other, or take the app's own session out of
    /// its requests. Each collision is named with its key, all at once.
    #[test]
    fn colliding_cookie_names_are_refused_with_their_keys() {
        for (extra, want) in [
            // The companion's `__Host-` name is the DBSC cookie's.
            (
                "[binding]\ncookie_name = \"vigil-dbsc\"\n",
                vec!["binding.cookie_name"],
            ),
            // Case folded: a framework folding case would mix them up.
            (
                "[binding]\ncookie_name = \"Vigil-DBSC\"\n",
                vec!["binding.cookie_name"],
            ),
            (
                "[binding]\ncookie_name = \"b\"\n[dbsc]\ncookie_name = \"__Host-b\"\n",
                vec!["binding.cookie_name"],
            ),
            // The DBSC cookie named as the app's session cookie.
            (
                "[session]\ncookies = [\"sid\", \"__Host-sid\"]\n[dbsc]\ncookie_name = \"__Host-sid\"\n",
                vec!["dbsc.cookie_name"],
            ),
            // Both at once, with another problem beside them.
            (
                "[session]\ncookies = [\"__host-x\"]\n[binding]\ncookie_name = \"x\"\n[dbsc]\ncookie_name = \"__Host-x\"\nmax_sessions = 1\n",
                vec![
                    "binding.cookie_name",
                    "dbsc.max_sessions",
                    "binding.cookie_name",
                    "dbsc.cookie_name",
                ],
            ),
        ] {
            let mut keys = problems(extra);
            keys.sort();
            let mut want: Vec<String> = want.into_iter().map(str::to_owned).collect();
            want.sort();
            assert_eq!(keys, want, "{extra}");
        }
        // Names that only look alike are fine.
        for extra in [
            "[binding]\ncookie_name = \"vigil-dbsc2\"\n",
            "[dbsc]\ncookie_name = \"__Host-vigil_bind2\"\n",
            "[session]\ncookies = [\"vigil-dbsc\"]\n",
        ] {
            assert_eq!(problems(extra), Vec::<String>::new(), "{extra}");
        }
        let text = format!("{BASE}[binding]\ncookie_name = \"vigil-dbsc\"\n");
        let shown = Config::parse(&text, Path::new("/etc/vigil/proxy.toml"))
            .unwrap_err()
            .to_string();
        assert!(shown.contains("/etc/vigil/proxy.toml"), "{shown}");
        assert!(
            shown.contains(
                "binding.cookie_name: \"vigil-dbsc\" collides with [dbsc] cookie_name \"__Host-vigil-dbsc\""
            ),
            "{shown}"
        );
    }

    /// An obvious public suffix is refused: a companion on it would go to
    /// every site registered under it (and browsers refuse it anyway).
    #[test]
    fn a_public_suffix_as_binding_domain_is_refused() {
        for bad in [
            "co.uk",
            ".CO.UK",
            "com.au",
            "ac.jp",
            "github.io",
            "herokuapp.com",
        ] {
            let text = format!("{BASE}[binding]\ndomain = {bad:?}\n");
            match Config::parse(&text, Path::new("/etc/vigil/proxy.toml")) {
                Err(e @ ConfigError::Invalid { .. }) => {
                    let shown = e.to_string();
                    assert!(shown.contains("binding.domain"), "{shown}");
                    assert!(shown.contains("is a public suffix"), "{shown}");
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        for good in [
            "example.co.uk",
            "example.com",
            "app.github.io",
            "co.example",
        ] {
            assert_eq!(
                problems(&format!("[binding]\ndomain = {good:?}\n")),
                Vec::<String>::new(),
                "{good}"
            );
        }
    }

    /// A bad `domain` names the file, the key and what was expected.
    #[test]
    fn a_bad_binding_domain_is_reported_with_file_key_and_expectation() {
        for bad in [
            "",
            "localhost",
            "example.com:443",
            "192.0.2.1",
            "exa mple.com",
            "-example.com",
            "example..com",
            "example.com;Path=/",
        ] {
            let text = format!("{BASE}[binding]\ndomain = {bad:?}\n");
            match Config::parse(&text, Path::new("/etc/vigil/proxy.toml")) {
                Err(e @ ConfigError::Invalid { .. }) => {
                    let shown = e.to_string();
                    assert!(shown.contains("/etc/vigil/proxy.toml"), "{shown}");
                    assert!(shown.contains("binding.domain"), "{shown}");
                    assert!(shown.contains("not a cookie domain"), "{shown}");
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let long = format!("{}com", format!("{}.", "a".repeat(63)).repeat(4));
        assert_eq!(
            problems(&format!("[binding]\ndomain = {long:?}\n")),
            vec!["binding.domain"]
        );
    }
}
