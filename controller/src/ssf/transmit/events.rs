//! Which SETs committed changes become, for which stream (`docs/signals.md`,
//! Vigil as a transmitter): pure functions over what the store read, so
//! that the rules are tested without a database.
//!
//! - A user's revocation (`UserRevoked`: the admin API, a partner's SET, a
//!   confirmed compromise) is one CAEP `session-revoked` about the user;
//!   the revocations of the user's sessions committed with it are part of
//!   it, not SETs of their own.
//! - A session's revocation vouched for (an operator's, or a node's of a
//!   session bound to a user) is a `session-revoked` about the session's
//!   user and the session (a complex subject), when the session's user is
//!   known; a session nobody is known to own is not sent (a receiver can
//!   do nothing with Vigil's session key alone, and unvouched revocations
//!   of made-up cookies would be noise).
//! - A user's entity risk crossing a level (low / medium / high, the
//!   engine's default thresholds over detections and points) is a CAEP
//!   `risk-level-change` with principal `USER`.
//! - A user's erasure is not sent: it is not a security event, and the
//!   user is being forgotten.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};
use vigil_fleet::{Change, UserId};

use super::config::{Receiver, UserSubject};
use crate::ssf::config::{CAEP, RISC, SSF};
use crate::store::ssf_tx::{FanOutInput, FanOutPlan, TxStream};

/// CAEP `session-revoked`.
pub fn session_revoked() -> String {
    format!("{CAEP}session-revoked")
}
/// CAEP `risk-level-change`.
pub fn risk_level_change() -> String {
    format!("{CAEP}risk-level-change")
}
/// RISC `credential-compromise`.
pub fn credential_compromise() -> String {
    format!("{RISC}credential-compromise")
}
/// SSF `verification`.
pub fn verification() -> String {
    format!("{SSF}verification")
}

/// The events a stream can ask for.
pub fn supported() -> Vec<String> {
    vec![
        session_revoked(),
        risk_level_change(),
        credential_compromise(),
    ]
}

/// One event about a user, before it is addressed to a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Its type URI.
    pub event: String,
    /// The user it is about.
    pub user: UserId,
    /// The session it is about (Vigil's session key, 32 hex digits).
    pub session: Option<String>,
    /// Its payload.
    pub payload: Value,
}

/// The entity-risk level of `detections` and `points`, as a node with
/// the engine's default weights and thresholds scores it.
pub fn level(detections: u64, points: u64) -> &'static str {
    let score = vigil_engine::ScoreConfig::default();
    let total = detections
        .min(3)
        .saturating_mul(u64::from(score.recent_detection))
        .saturating_add(points)
        .min(100);
    match score.level(u8::try_from(total).unwrap_or(100)) {
        vigil_engine::RiskLevel::High => "HIGH",
        vigil_engine::RiskLevel::Medium => "MEDIUM",
        vigil_engine::RiskLevel::Low => "LOW",
    }
}

/// The events the changes of `input` are, in order, and the levels now
/// sent.
pub fn derive(input: &FanOutInput) -> (Vec<Event>, Vec<(UserId, String)>) {
    let mut out = Vec::new();
    let mut levels: HashMap<UserId, String> = input.levels.clone();
    let mut level_changes = Vec::new();
    // The users revoked in this read, with when: their sessions'
    // revocations of the same moment are part of it.
    let revoked: HashSet<(UserId, u64)> = input
        .changes
        .iter()
        .filter_map(|(_, c)| match c {
            Change::UserRevoked { user, at } => Some((*user, *at)),
            _ => None,
        })
        .collect();
    for (_, change) in &input.changes {
        match change {
            Change::UserRevoked { user, at } => out.push(Event {
                event: session_revoked(),
                user: *user,
                session: None,
                payload: json!({
                    "event_timestamp": at,
                    "reason_admin": {"en": "Every session of the user was ended at Vigil"},
                    "reason_user": {"en": "You were signed out everywhere for your security"},
                }),
            }),
            Change::SessionRevoked {
                session,
                at,
                vouched,
            } => {
                let Some(user) = input.session_users.get(session) else {
                    continue;
                };
                if !vouched || revoked.contains(&(*user, *at)) {
                    continue;
                }
                let mut payload = json!({
                    "event_timestamp": at,
                    "reason_user": {"en": "Your session was ended for your security"},
                });
                match input.detections.get(session) {
                    Some((rule, reasons)) => {
                        payload["initiating_entity"] = json!("policy");
                        let rule = rule.as_deref().unwrap_or("the default policy");
                        payload["reason_admin"] = json!({
                            "en": format!("Vigil revoked the session ({rule}): {}", reason_codes(reasons))
                        });
                    }
                    None => {
                        payload["reason_admin"] = json!({"en": "The session was ended at Vigil"});
                    }
                }
                out.push(Event {
                    event: session_revoked(),
                    user: *user,
                    session: Some(session.to_string()),
                    payload,
                });
            }
            Change::UserRisk { user, .. } | Change::UserDetections { user, .. } => {
                let Some((detections, points)) = input.risk.get(user) else {
                    continue;
                };
                let now = level(*detections, *points);
                let before = levels.get(user).map_or("LOW", String::as_str).to_owned();
                if before == now {
                    continue;
                }
                out.push(Event {
                    event: risk_level_change(),
                    user: *user,
                    session: None,
                    payload: json!({
                        "principal": "USER",
                        "current_level": now,
                        "previous_level": before,
                        "risk_reason": "Vigil's entity risk of the user (detections across the fleet and partner signals)",
                    }),
                });
                levels.insert(*user, now.to_owned());
                level_changes.push((*user, now.to_owned()));
            }
            _ => {}
        }
    }
    (out, level_changes)
}

/// The reason codes of a detection's stored reasons (`[[code, points],
/// …]`), comma-separated; the stored text when it is not that.
fn reason_codes(stored: &str) -> String {
    match serde_json::from_str::<Vec<(String, Value)>>(stored) {
        Ok(reasons) if !reasons.is_empty() => reasons
            .into_iter()
            .map(|(code, _)| code)
            .collect::<Vec<_>>()
            .join(", "),
        _ => "a detection".to_owned(),
    }
}

/// How `user` is named to `receiver`, if it can be.
pub fn user_subject(receiver: &Receiver, user: UserId, name: Option<&str>) -> Option<Value> {
    match (&receiver.subject, name) {
        (UserSubject::OpaqueKey, _) => Some(json!({"format": "opaque", "id": user.to_string()})),
        (UserSubject::OpaqueName, Some(n)) => Some(json!({"format": "opaque", "id": n})),
        (UserSubject::Email, Some(n)) if n.contains('@') => {
            Some(json!({"format": "email", "email": n}))
        }
        (UserSubject::IssSub(iss), Some(n)) => {
            Some(json!({"format": "iss_sub", "iss": iss, "sub": n}))
        }
        _ => None,
    }
}

/// The canonical key of a simple subject, as subjects are recorded per
/// stream: `format:value`; `None` for a format not matched.
pub fn subject_key(subject: &serde_json::Map<String, Value>) -> Option<String> {
    let s = |k: &str| subject.get(k).and_then(Value::as_str);
    let key = match s("format")? {
        "opaque" => format!("opaque:{}", s("id")?),
        "email" => format!("email:{}", s("email")?.to_lowercase()),
        "iss_sub" => format!("iss_sub:{}|{}", s("iss")?, s("sub")?),
        "complex" => {
            // A complex subject is recorded by its user.
            let user = subject.get("user")?.as_object()?;
            return subject_key(user);
        }
        _ => return None,
    };
    (key.len() <= 1024).then_some(key)
}

/// The events a stream delivers, from what its receiver asked for.
pub fn delivered(config: &Value) -> Vec<String> {
    let supported = supported();
    let mut out: Vec<String> = config
        .get("events_requested")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|e| supported.iter().any(|s| s == e))
        .map(str::to_owned)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether a stream takes events about `subject` (a user's subject).
pub fn wants(stream: &TxStream, subjects: Option<&HashMap<String, bool>>, key: &str) -> bool {
    match subjects.and_then(|s| s.get(key)) {
        Some(included) => *included,
        None => stream.all_subjects,
    }
}

/// A new `jti`: 128 random bits, hex.
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    // The process's one CSPRNG (rustls's, ring); failing it is failing
    // the operating system's random source.
    if rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .is_err()
    {
        tracing::error!("the system's random source failed");
    }
    hex::encode(bytes)
}

/// The claims of a SET about `sub_id` on a stream, `iss` and `iat`
/// added when signed.
pub fn claims(receiver: &Receiver, jti: &str, sub_id: Value, event: &str, payload: Value) -> Value {
    json!({
        "jti": jti,
        "aud": receiver.audience,
        "sub_id": sub_id,
        "events": { event: payload },
    })
}

/// Addresses `events` to every stream that wants them: the plan of a
/// fan-out.
pub fn plan(input: &FanOutInput, receivers: &[Receiver], echo_window: u64) -> FanOutPlan {
    let (events, levels) = derive(input);
    let mut recent = input.recent.clone();
    let mut sent = Vec::new();
    let enqueue = address(input, receivers, &events, |stream, key, e| {
        // A user's revocation sent to this stream within the window is
        // not sent again: a loop between two systems stops here.
        if echo_window == 0 || e.event != session_revoked() || e.session.is_some() {
            return true;
        }
        let k = (stream.to_owned(), key.to_owned());
        if recent
            .get(&k)
            .is_some_and(|at| at.saturating_add(echo_window) > input.now)
        {
            return false;
        }
        recent.insert(k.clone(), input.now);
        sent.push(k);
        true
    });
    FanOutPlan {
        enqueue,
        levels,
        recent: sent,
    }
}

/// The RISC credential types an operator may name
/// (`credential-compromise`'s `credential_type`).
pub const CREDENTIAL_TYPES: &[&str] = &[
    "password",
    "pin",
    "x509",
    "fido2-platform",
    "fido2-roaming",
    "fido-u2f",
    "verifiable-credential",
    "phone-voice",
    "phone-sms",
    "app",
];

/// RISC `credential-compromise` about each of `users`: an operator
/// confirmed the compromise Vigil's detection `reference` caught.
pub fn compromise(
    input: &FanOutInput,
    users: &[UserId],
    receivers: &[Receiver],
    credential_type: &str,
    reference: &str,
    at: u64,
) -> FanOutPlan {
    let events: Vec<Event> = users
        .iter()
        .map(|user| Event {
            event: credential_compromise(),
            user: *user,
            session: None,
            payload: json!({
                "credential_type": credential_type,
                "event_timestamp": at,
                "reason_admin": {"en": format!(
                    "An operator confirmed the compromise Vigil detected (reference {reference})"
                )},
            }),
        })
        .collect();
    FanOutPlan {
        enqueue: address(input, receivers, &events, |_, _, _| true),
        ..FanOutPlan::default()
    }
}

/// Each event addressed to each stream that delivers its type and wants
/// its subject: `(stream, jti, claims)`.
fn address(
    input: &FanOutInput,
    receivers: &[Receiver],
    events: &[Event],
    mut send: impl FnMut(&str, &str, &Event) -> bool,
) -> Vec<(String, String, String)> {
    let mut enqueue = Vec::new();
    for stream in &input.streams {
        let Some(receiver) = receivers.iter().find(|r| r.name == stream.client) else {
            continue;
        };
        let config: Value = serde_json::from_str(&stream.config).unwrap_or(Value::Null);
        let delivered = delivered(&config);
        for e in events {
            if !delivered.contains(&e.event) {
                continue;
            }
            let name = input.names.get(&e.user).map(String::as_str);
            let Some(user) = user_subject(receiver, e.user, name) else {
                continue;
            };
            let Some(key) = user.as_object().and_then(subject_key) else {
                continue;
            };
            if !wants(stream, input.subjects.get(&stream.stream_id), &key)
                || !send(&stream.stream_id, &key, e)
            {
                continue;
            }
            let sub_id = match &e.session {
                Some(session) => json!({
                    "format": "complex",
                    "user": user,
                    "session": {"format": "opaque", "id": session},
                }),
                None => user,
            };
            let jti = new_id();
            let claims = claims(receiver, &jti, sub_id, &e.event, e.payload.clone());
            enqueue.push((stream.stream_id.clone(), jti, claims.to_string()));
        }
    }
    enqueue
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use vigil_fleet::SessionId;

    fn receiver() -> Receiver {
        Receiver {
            name: "idp".into(),
            token_sha256: Some([0; 32]),
            client_id: None,
            audience: "https://idp.example".into(),
            subject: UserSubject::OpaqueKey,
            push_endpoints: vec![],
        }
    }

    fn stream(all: bool) -> TxStream {
        TxStream {
            stream_id: "s1".into(),
            client: "idp".into(),
            config: json!({"events_requested": [session_revoked(), "urn:other"]}).to_string(),
            status: "enabled".into(),
            reason: None,
            all_subjects: all,
            dropped: 0,
            failures: 0,
            next_try: 0,
        }
    }

    #[test]
    fn a_user_revocation_is_one_event_whatever_sessions_went_with_it() {
        let user = UserId(7);
        let s = SessionId([1; 16]);
        let mut input = FanOutInput {
            changes: vec![
                (1, Change::UserRevoked { user, at: 5 }),
                (
                    2,
                    Change::SessionRevoked {
                        session: s,
                        at: 5,
                        vouched: true,
                    },
                ),
            ],
            streams: vec![stream(true)],
            ..FanOutInput::default()
        };
        input.session_users.insert(s, user);
        let p = plan(&input, &[receiver()], 0);
        assert_eq!(p.enqueue.len(), 1);
        let claims: Value = serde_json::from_str(&p.enqueue[0].2).unwrap();
        assert_eq!(
            claims["sub_id"],
            json!({"format":"opaque","id": user.to_string()})
        );
        assert_eq!(claims["aud"], "https://idp.example");
        assert!(claims["events"][session_revoked()]["reason_admin"]["en"].is_string());
    }

    #[test]
    fn a_session_revocation_names_user_and_session_and_unknown_owners_are_not_sent() {
        let user = UserId(9);
        let known = SessionId([2; 16]);
        let unknown = SessionId([3; 16]);
        let unvouched = SessionId([4; 16]);
        let mut input = FanOutInput {
            changes: vec![
                (
                    1,
                    Change::SessionRevoked {
                        session: known,
                        at: 5,
                        vouched: true,
                    },
                ),
                (
                    2,
                    Change::SessionRevoked {
                        session: unknown,
                        at: 5,
                        vouched: true,
                    },
                ),
                (
                    3,
                    Change::SessionRevoked {
                        session: unvouched,
                        at: 5,
                        vouched: false,
                    },
                ),
            ],
            streams: vec![stream(true)],
            ..FanOutInput::default()
        };
        input.session_users.insert(known, user);
        input.session_users.insert(unvouched, user);
        let p = plan(&input, &[receiver()], 0);
        assert_eq!(p.enqueue.len(), 1);
        let claims: Value = serde_json::from_str(&p.enqueue[0].2).unwrap();
        assert_eq!(claims["sub_id"]["format"], "complex");
        assert_eq!(claims["sub_id"]["session"]["id"], known.to_string());
    }

    /// The loop: Vigil revokes alice on a partner's signal, tells the
    /// partner, which revokes and tells Vigil again… A second revocation
    /// of alice within the window is not sent to the same stream.
    #[test]
    fn a_users_revocation_is_sent_once_per_echo_window() {
        let user = UserId(5);
        let key = format!("opaque:{user}");
        let mut input = FanOutInput {
            changes: vec![
                (1, Change::UserRevoked { user, at: 100 }),
                (2, Change::UserRevoked { user, at: 100 }),
            ],
            streams: vec![stream(true)],
            now: 100,
            ..FanOutInput::default()
        };
        let p = plan(&input, &[receiver()], 60);
        assert_eq!(p.enqueue.len(), 1);
        assert_eq!(p.recent, vec![("s1".to_owned(), key.clone())]);
        input.recent.insert(("s1".to_owned(), key.clone()), 100);
        input.now = 159;
        assert!(plan(&input, &[receiver()], 60).enqueue.is_empty());
        input.now = 160;
        assert_eq!(plan(&input, &[receiver()], 60).enqueue.len(), 1);
        input.now = 100;
        assert_eq!(plan(&input, &[receiver()], 0).enqueue.len(), 2);
    }

    #[test]
    fn subjects_filter_per_stream() {
        let user = UserId(11);
        let key = format!("opaque:{user}");
        let mut input = FanOutInput {
            changes: vec![(1, Change::UserRevoked { user, at: 1 })],
            streams: vec![stream(false)],
            ..FanOutInput::default()
        };
        assert!(plan(&input, &[receiver()], 0).enqueue.is_empty());
        input
            .subjects
            .insert("s1".into(), HashMap::from([(key.clone(), true)]));
        assert_eq!(plan(&input, &[receiver()], 0).enqueue.len(), 1);
        input.streams = vec![stream(true)];
        input
            .subjects
            .insert("s1".into(), HashMap::from([(key, false)]));
        assert!(plan(&input, &[receiver()], 0).enqueue.is_empty());
    }

    #[test]
    fn risk_is_sent_when_it_crosses_a_level_only() {
        let user = UserId(3);
        let mut input = FanOutInput {
            changes: vec![(
                1,
                Change::UserRisk {
                    user,
                    points: 80,
                    until: 9,
                    at: 1,
                },
            )],
            ..FanOutInput::default()
        };
        input.risk.insert(user, (0, 80));
        let (events, levels) = derive(&input);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].payload["current_level"], "HIGH");
        assert_eq!(events[0].payload["previous_level"], "LOW");
        assert_eq!(levels, vec![(user, "HIGH".to_owned())]);
        input.levels.insert(user, "HIGH".into());
        assert!(derive(&input).0.is_empty());
    }

    #[test]
    fn names_are_sent_only_in_the_format_asked() {
        let mut r = receiver();
        r.subject = UserSubject::Email;
        assert_eq!(user_subject(&r, UserId(1), None), None);
        assert_eq!(user_subject(&r, UserId(1), Some("alice")), None);
        assert_eq!(
            user_subject(&r, UserId(1), Some("alice@example.com")),
            Some(json!({"format":"email","email":"alice@example.com"}))
        );
        assert_eq!(
            subject_key(
                json!({"format":"complex","user":{"format":"email","email":"A@x"}})
                    .as_object()
                    .unwrap()
            ),
            Some("email:a@x".into())
        );
    }
}
