//! A CAEP `session-revoked` whose complex subject names the identity
//! provider's session (`docs/signals.md`, IdP sessions): that session,
//! keyed as nodes key the `sid`s they learn at step-ups.

use serde_json::{Map, Value};
use vigil_engine::{IdpSessionKey, SessionHashKey};
use vigil_fleet::IdpSessionId;

use super::config::{CAEP, Transmitter};

/// The provider session a SET's subject names, for a CAEP
/// `session-revoked` with a complex subject whose `session` is an
/// `opaque` identifier: keyed under the transmitter's issuer (the
/// provider's issuer when the provider transmits itself). `None`
/// otherwise — the user's sessions all end, as before.
pub(super) fn named(
    key: &SessionHashKey,
    t: &Transmitter,
    event: &str,
    sub_id: Option<&Map<String, Value>>,
) -> Option<IdpSessionId> {
    if event.strip_prefix(CAEP) != Some("session-revoked") {
        return None;
    }
    let sub = sub_id?;
    if sub.get("format").and_then(Value::as_str) != Some("complex") {
        return None;
    }
    let session = sub.get("session")?.as_object()?;
    if session.get("format").and_then(Value::as_str) != Some("opaque") {
        return None;
    }
    let sid = session.get("id")?.as_str()?;
    IdpSessionKey::for_sid(key, &t.issuer, sid).map(|k| IdpSessionId(k.0))
}
