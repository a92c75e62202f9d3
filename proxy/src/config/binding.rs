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
