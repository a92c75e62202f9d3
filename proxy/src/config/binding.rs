//! `[binding]`: the rotating binding (docs/bound-sessions.md).

use std::time::Duration;

use vigil_engine::binding::BindingConfig;

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
    if session_cookies
        .iter()
        .any(|c| c.eq_ignore_ascii_case(&cookie_name))
    {
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
    t.finish(p);
    BindingConfig {
        enabled,
        cookie_name,
        rotate_after: Duration::from_secs(rotate_after),
        grace: Duration::from_secs(grace),
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
    }
}
