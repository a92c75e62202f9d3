//! When a `step_up` action steps the user up (`docs/signals.md`, Events):
//! always, except for a CAEP `assurance-level-change`, whose payload says
//! which way the level went — only a lower level asks for a fresh sign-in.

use serde_json::{Map, Value};

use super::config::CAEP;

/// Longest level name compared; a longer one is refused.
const MAX_LEVEL_BYTES: usize = 256;

/// Whether an event taken with the `step_up` action steps its user up, or
/// why its payload is refused (`invalid_request`).
///
/// For `assurance-level-change` (CAEP 1.0 §3.4: `namespace` and
/// `current_level` required, `previous_level` and `change_direction`
/// optional): `change_direction` `decrease` steps up and `increase` does
/// not; without it, `previous_level` and `current_level` are compared
/// when both end in a number after the same stem (`nist-aal2` →
/// `nist-aal1`, as the NIST and ISO namespaces name their levels) — a
/// lower number steps up, a higher or equal one does not. When the
/// direction cannot be told (no previous level, levels of a custom
/// namespace that do not compare), the user is stepped up: more than
/// asked, never less.
pub(super) fn wanted(event: &str, payload: &Map<String, Value>) -> Result<bool, &'static str> {
    if event.strip_prefix(CAEP) != Some("assurance-level-change") {
        return Ok(true);
    }
    let text = |k: &str| -> Result<Option<&str>, &'static str> {
        match payload.get(k) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_LEVEL_BYTES => Ok(Some(s)),
            Some(_) => Err(
                "assurance-level-change: a level, namespace or direction that is not a string of 1 to 256 bytes",
            ),
        }
    };
    if text("namespace")?.is_none() {
        return Err("assurance-level-change needs namespace");
    }
    let Some(current) = text("current_level")? else {
        return Err("assurance-level-change needs current_level");
    };
    let previous = text("previous_level")?;
    match text("change_direction")? {
        Some("decrease") => return Ok(true),
        Some("increase") => return Ok(false),
        Some(_) => return Err("assurance-level-change: change_direction is increase or decrease"),
        None => {}
    }
    Ok(match previous.and_then(|p| compare(p, current)) {
        Some(std::cmp::Ordering::Greater) => true,
        Some(_) => false,
        None => true,
    })
}

/// `previous` against `current` when both are a shared stem followed by a
/// number (`nist-aal3`, `nist-aal1`); `None` when they do not compare.
fn compare(previous: &str, current: &str) -> Option<std::cmp::Ordering> {
    let (stem_p, n_p) = split_number(previous)?;
    let (stem_c, n_c) = split_number(current)?;
    (stem_p.eq_ignore_ascii_case(stem_c)).then(|| n_p.cmp(&n_c))
}

/// A level name as its stem and trailing number (at most 9 digits).
fn split_number(level: &str) -> Option<(&str, u32)> {
    let digits = level.bytes().rev().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 9 {
        return None;
    }
    let (stem, number) = level.split_at(level.len() - digits);
    Some((stem, number.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALC: &str = "https://schemas.openid.net/secevent/caep/event-type/assurance-level-change";

    fn payload(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn other_events_always_step_up() {
        let cc = "https://schemas.openid.net/secevent/caep/event-type/credential-change";
        assert_eq!(wanted(cc, &Map::new()), Ok(true));
    }

    #[test]
    fn only_a_lower_assurance_level_steps_up() {
        let cases = [
            (
                serde_json::json!({"namespace":"nist-aal","current_level":"nist-aal1","previous_level":"nist-aal2"}),
                true,
            ),
            (
                serde_json::json!({"namespace":"nist-aal","current_level":"nist-aal3","previous_level":"nist-aal2"}),
                false,
            ),
            (
                serde_json::json!({"namespace":"nist-aal","current_level":"nist-aal2","previous_level":"nist-aal2"}),
                false,
            ),
            // The transmitter's own word wins over the names.
            (
                serde_json::json!({"namespace":"custom","current_level":"gold","change_direction":"decrease"}),
                true,
            ),
            (
                serde_json::json!({"namespace":"nist-aal","current_level":"nist-aal1","previous_level":"nist-aal2","change_direction":"increase"}),
                false,
            ),
            // Cannot be told: stepped up.
            (
                serde_json::json!({"namespace":"custom","current_level":"gold","previous_level":"silver"}),
                true,
            ),
            (
                serde_json::json!({"namespace":"nist-aal","current_level":"nist-aal1"}),
                true,
            ),
            (
                serde_json::json!({"namespace":"x","current_level":"a1","previous_level":"b2"}),
                true,
            ),
        ];
        for (p, want) in cases {
            assert_eq!(wanted(ALC, &payload(p.clone())), Ok(want), "{p}");
        }
    }

    #[test]
    fn a_malformed_assurance_level_change_is_refused() {
        for p in [
            serde_json::json!({"current_level":"nist-aal1"}),
            serde_json::json!({"namespace":"nist-aal"}),
            serde_json::json!({"namespace":"nist-aal","current_level":1}),
            serde_json::json!({"namespace":"nist-aal","current_level":"nist-aal1","change_direction":"sideways"}),
            serde_json::json!({"namespace":"nist-aal","current_level":"x".repeat(300)}),
        ] {
            assert!(wanted(ALC, &payload(p.clone())).is_err(), "{p}");
        }
    }
}
