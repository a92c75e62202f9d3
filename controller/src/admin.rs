//! The admin API for security teams (`docs/controller.md`, Admin API):
//! users ranked by entity risk, one user's sessions, devices, networks and
//! detections, devices and networks trusted for a user on every node, and
//! false positives reported by reference id.
//!
//! Every call needs the admin's bearer token (checked before the body is
//! read), takes a JSON body of at most [`MAX_BODY_BYTES`] or a query of
//! known keys, and answers errors as the rest of the API does
//! ([`ApiError`]). Lists hold at most [`MAX_LIMIT`] items.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use vigil_fleet::{Change, Country, DeviceId, TrustedNetwork, UserId};

use crate::api::{ApiError, App, admin, commit, json, now_secs, user_id};
use crate::config::UserNames;
use crate::store::{DetectionRow, Intake, SessionRow, UserDetail};
use crate::tls::Peer;

/// Largest body of an admin call here: a few short fields.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Most items in one list.
pub const MAX_LIMIT: usize = 1_000;

/// Items in a list when the caller names no `limit`.
pub const DEFAULT_LIMIT: usize = 100;

/// Longest reference id (as the event intake takes them).
const MAX_REFERENCE_BYTES: usize = 64;

/// Reads an admin call's JSON body, refusing one longer than
/// [`MAX_BODY_BYTES`] before parsing it.
fn small_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("at most {MAX_BODY_BYTES} bytes"),
        ));
    }
    json(body)
}

/// A list's `limit`: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
fn limit_of(limit: Option<u64>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT as u64).contains(&n) => {
            Ok(usize::try_from(n).unwrap_or(MAX_LIMIT))
        }
        Some(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_limit",
            format!("limit is 1 to {MAX_LIMIT}"),
        )),
    }
}

/// Keeps `name` as `user`'s when names are kept (`user_names = "clear"`);
/// does nothing otherwise.
pub(crate) async fn keep_name(app: &App, user: UserId, name: &str) -> Result<(), ApiError> {
    if app.config.user_names == UserNames::Clear
        && let Some(name) = vigil_engine::valid_user_name(name)
    {
        app.store.remember_name(user, name, now_secs()).await?;
    }
    Ok(())
}

/// The user a call names: by `user` (a name, hashed as nodes hash it) or
/// by `key` (16 hex digits, as lists show it) — exactly one.
fn who(app: &App, user: Option<&str>, key: Option<&str>) -> Result<UserId, ApiError> {
    match (user, key) {
        (Some(name), None) => user_id(app, name),
        (None, Some(key)) => UserId::parse(key).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_user",
                "a user key is 16 lower-case hex digits, not all zero",
            )
        }),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_user",
            "give exactly one of user (a name) and key (16 hex digits)",
        )),
    }
}

// === GET /v1/admin/users ===

/// `limit` and `offset` of a list query: each at most once, decimal;
/// nothing else.
pub(crate) fn page_of(query: Option<&str>) -> Result<(usize, u64), ApiError> {
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_query",
            format!("expected ?limit=<1 to {MAX_LIMIT}>&offset=<decimal>, each at most once"),
        )
    };
    let (mut limit, mut offset) = (None, None);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').ok_or_else(bad)?;
        let slot = match name {
            "limit" => &mut limit,
            "offset" => &mut offset,
            _ => return Err(bad()),
        };
        if slot.is_some() || value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        *slot = Some(value.parse::<u64>().map_err(|_| bad())?);
    }
    Ok((limit_of(limit)?, offset.unwrap_or(0)))
}

/// `GET /v1/admin/users?limit=&offset=`: users with some entity risk now,
/// highest first.
pub async fn list_users(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    admin(&app, &headers, &peer)?;
    let (limit, offset) = page_of(query.as_deref())?;
    let weight = vigil_engine::ScoreConfig::default().recent_detection;
    let (users, more) = app
        .store
        .risky_users(now_secs(), weight, limit, offset)
        .await?;
    let names = app.config.user_names == UserNames::Clear;
    let users: Vec<Value> = users
        .iter()
        .map(|u| {
            let mut v = json!({
                "key": u.user.to_string(),
                "entity_risk": u.entity_risk,
                "detections": u.detections,
                "detections_until": (u.detections > 0).then_some(u.detections_until),
                "risk_points": u.risk_points,
                "risk_until": (u.risk_points > 0).then_some(u.risk_until),
                "revoked_at": u.revoked_at,
            });
            if names {
                v["name"] = json!(u.name);
            }
            v
        })
        .collect();
    let next = more.then(|| offset.saturating_add(users.len() as u64));
    Ok(Json(json!({"users": users, "next_offset": next})).into_response())
}

// === POST /v1/admin/users/detail ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DetailRequest {
    user: Option<String>,
    key: Option<String>,
    limit: Option<u64>,
}

/// `POST /v1/admin/users/detail`: what the controller holds of one user.
pub async fn user_detail(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin(&app, &headers, &peer)?;
    let req: DetailRequest = small_json(&body)?;
    let limit = limit_of(req.limit)?;
    let user = who(&app, req.user.as_deref(), req.key.as_deref())?;
    let detail = app.store.user_detail(user, limit).await?;
    let held = !(detail.sessions.is_empty()
        && detail.detections.is_empty()
        && detail.trusted.is_empty()
        && detail.detection_count.is_none()
        && detail.risk.is_none()
        && detail.revoked_at.is_none());
    // A name is kept for a user the controller knows, not for every name
    // looked up.
    if held && let Some(name) = &req.user {
        keep_name(&app, user, name).await?;
    }
    let names = app.config.user_names == UserNames::Clear;
    let name = if names {
        req.user
            .as_deref()
            .and_then(vigil_engine::valid_user_name)
            .map(str::to_owned)
            .or(detail.name.clone())
    } else {
        None
    };
    Ok(Json(detail_json(user, name, &detail)).into_response())
}

fn detail_json(user: UserId, name: Option<String>, d: &UserDetail) -> Value {
    let now = now_secs();
    let mut devices: BTreeMap<String, Value> = BTreeMap::new();
    let mut networks: BTreeMap<String, Value> = BTreeMap::new();
    let sessions: Vec<Value> = d
        .sessions
        .iter()
        .map(|s| session_json(s, &mut devices, &mut networks))
        .collect();
    let mut v = json!({
        "key": user.to_string(),
        "detections_in_force": d.detection_count
            .filter(|(count, until)| *count > 0 && *until > now)
            .map(|(count, until)| json!({"count": count, "until": until})),
        "risk": d.risk
            .filter(|(points, until)| *points > 0 && *until > now)
            .map(|(points, until)| json!({"points": points, "until": until})),
        "revoked_at": d.revoked_at,
        "sessions": sessions,
        "devices": devices.into_values().collect::<Vec<_>>(),
        "networks": networks.into_values().collect::<Vec<_>>(),
        "detections": d.detections.iter().map(detection_json).collect::<Vec<_>>(),
        "trusted": d.trusted.iter().map(|t| json!({t.what.as_str(): t.value, "at": t.at})).collect::<Vec<_>>(),
    });
    if let Some(name) = name {
        v["name"] = json!(name);
    }
    v
}

/// A session as shown, its device and network added to the distinct ones
/// seen (each counting the sessions it was seen on).
fn session_json(
    s: &SessionRow,
    devices: &mut BTreeMap<String, Value>,
    networks: &mut BTreeMap<String, Value>,
) -> Value {
    let Some(state) = &s.state else {
        return json!({
            "session": s.session,
            "first_seen": null,
            "last_seen": null,
            "confirmed": s.confirmed,
            "revoked": s.revoked,
            "node": s.node,
            "device": null,
            "network": null,
        });
    };
    let device = state.device();
    let device_id = device.id.to_string();
    let seen = devices.entry(device_id.clone()).or_insert_with(|| {
        json!({
            "device": device_id,
            "browser_major": device.id.major(),
            "ja4": device.ja4.map(|j| j.to_string()),
            "sessions": 0,
        })
    });
    seen["sessions"] = json!(seen["sessions"].as_u64().unwrap_or(0) + 1);
    let mark = state.network();
    let network = json!({
        // The record keeps hashes of the address and its prefix, never the
        // address: the prefix hash tells networks apart.
        "prefix_hash": format!("{:08x}", mark.prefix),
        "asn": (mark.asn != 0).then_some(mark.asn),
        "country": (mark.country != [0, 0])
            .then(|| String::from_utf8_lossy(&mark.country).into_owned()),
        "via_provider": mark.provider != 0,
    });
    let id = network.to_string();
    let seen = networks.entry(id).or_insert_with(|| {
        let mut n = network.clone();
        n["sessions"] = json!(0);
        n
    });
    seen["sessions"] = json!(seen["sessions"].as_u64().unwrap_or(0) + 1);
    json!({
        "session": s.session,
        "first_seen": state.first_seen(),
        "last_seen": state.last_seen(),
        "confirmed": s.confirmed,
        "revoked": s.revoked,
        "node": s.node,
        "device": device_id,
        "network": network,
    })
}

fn detection_json(d: &DetectionRow) -> Value {
    json!({
        "reference": d.reference,
        "node": d.node,
        "session": d.session,
        "route": d.route,
        "rule": d.rule,
        "action": d.action,
        "enforced": d.enforced,
        "score": d.score,
        "reasons": d.reasons.iter().map(|(code, points)| json!({"code": code, "points": points})).collect::<Vec<_>>(),
        "at": d.at,
        "false_positive": d.false_positive_at.is_some(),
        "false_positive_at": d.false_positive_at,
    })
}

// === trust ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustDeviceRequest {
    user: Option<String>,
    key: Option<String>,
    /// The device id as nodes log it: 16 hex digits.
    device: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustNetworkRequest {
    user: Option<String>,
    key: Option<String>,
    asn: Option<u32>,
    prefix: Option<IpAddr>,
    country: Option<String>,
}

/// `POST /v1/admin/users/trust-device`: the node call's body
/// (`{"user", "device"}`), carried to every node.
pub async fn trust_device(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin(&app, &headers, &peer)?;
    let req: TrustDeviceRequest = small_json(&body)?;
    let device = parse_device(&req.device)?;
    let user = who(&app, req.user.as_deref(), req.key.as_deref())?;
    if let Some(name) = &req.user {
        keep_name(&app, user, name).await?;
    }
    let seq = commit_trust(&app, user, Trusted::Device(device), "the admin API").await?;
    Ok(Json(json!({"seq": seq})).into_response())
}

/// A device id as the node's call reads it: 16 hex digits, either case.
pub(crate) fn parse_device(text: &str) -> Result<DeviceId, ApiError> {
    u64::from_str_radix(text, 16)
        .ok()
        .filter(|_| text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(DeviceId)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_device",
                "a device id is 16 hex digits, as nodes log it",
            )
        })
}

/// What an operator trusts for a user on every node.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Trusted {
    Device(DeviceId),
    Network(TrustedNetwork),
}

/// Trusts `what` for `user` on every node, as the admin API's
/// `trust-device` and `trust-network` do and the dashboard's form for a
/// responder (`by`, logged); the change's sequence number.
pub(crate) async fn commit_trust(
    app: &App,
    user: UserId,
    what: Trusted,
    by: &str,
) -> Result<u64, ApiError> {
    let at = now_secs();
    let change = match what {
        Trusted::Device(device) => Change::DeviceTrusted { user, device, at },
        Trusted::Network(network) => Change::NetworkTrusted { user, network, at },
    };
    let seq = commit(app, change).await?;
    match what {
        Trusted::Device(device) => {
            tracing::info!(user = %user, device = %device, seq, by, "a device trusted for a user");
        }
        Trusted::Network(_) => {
            tracing::info!(user = %user, seq, by, "a network trusted for a user")
        }
    }
    Ok(seq)
}

/// `POST /v1/admin/users/trust-network`: the node call's body
/// (`{"user"}` with one of `asn`, `prefix`, `country`), carried to every
/// node. A prefix is kept as its /24 or /48: the host part is neither
/// needed nor stored.
pub async fn trust_network(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin(&app, &headers, &peer)?;
    let req: TrustNetworkRequest = small_json(&body)?;
    let bad = |message: &str| ApiError::new(StatusCode::BAD_REQUEST, "bad_network", message);
    let network = match (req.asn, req.prefix, req.country.as_deref()) {
        (Some(0), None, None) => return Err(bad("ASN 0 is no network")),
        (Some(asn), None, None) => TrustedNetwork::Asn { asn },
        (None, Some(ip), None) => TrustedNetwork::Prefix {
            prefix: prefix_of(ip),
        },
        (None, None, Some(c)) => TrustedNetwork::Country {
            country: Country::parse(&c.to_ascii_uppercase())
                .ok_or_else(|| bad("a country is a two-letter code"))?,
        },
        _ => return Err(bad("give exactly one of asn, prefix, country")),
    };
    let user = who(&app, req.user.as_deref(), req.key.as_deref())?;
    if let Some(name) = &req.user {
        keep_name(&app, user, name).await?;
    }
    let seq = commit_trust(&app, user, Trusted::Network(network), "the admin API").await?;
    Ok(Json(json!({"seq": seq})).into_response())
}

/// The first address of the /24 (IPv4, and IPv4-mapped IPv6) or /48
/// (IPv6) holding `ip`: the prefix a node trusts for it.
pub fn prefix_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(a) => {
            let [a, b, c, _] = a.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(a) => {
            let mut o = a.octets();
            o[6..].fill(0);
            IpAddr::from(o)
        }
    }
}

// === POST /v1/admin/detections/false-positive ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FalsePositiveRequest {
    reference: String,
}

/// `POST /v1/admin/detections/false-positive`: the detection with this
/// reference was a false positive. It stops counting toward its user's
/// entity risk (the lowered count is streamed) and every node is told;
/// the node that refused the request adopts its device and network for
/// the session (and posts that baseline, confirmed, which every node
/// takes), and every node trusts them for the user from the detection's
/// facts (`trusted`; none for a detection without facts). Reporting it
/// again changes nothing, and says so.
pub async fn false_positive(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin(&app, &headers, &peer)?;
    let req: FalsePositiveRequest = small_json(&body)?;
    let done = mark_false_positive(&app, &req.reference, "the admin API").await?;
    Ok(Json(done).into_response())
}

/// Checks a reference id as the refusal page shows it: 1 to
/// [`MAX_REFERENCE_BYTES`] bytes, no control character.
pub(crate) fn check_reference(reference: &str) -> Result<(), ApiError> {
    if reference.is_empty()
        || reference.len() > MAX_REFERENCE_BYTES
        || reference.chars().any(char::is_control)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_reference",
            format!("a reference id is 1 to {MAX_REFERENCE_BYTES} bytes, as on the refusal page"),
        ));
    }
    Ok(())
}

/// Marks the detections with `reference` a false positive, as
/// `POST /v1/admin/detections/false-positive` does for the admin API and
/// the dashboard's form for a responder (`by`, logged); the API's answer.
pub(crate) async fn mark_false_positive(
    app: &App,
    reference: &str,
    by: &str,
) -> Result<Value, ApiError> {
    check_reference(reference)?;
    let intake = Intake {
        detection_window: app.config.detection_window,
        max_session_age: app.config.keep_sessions,
        revocations_left: 0,
        marks_left: 0,
        keep_profiles: app.config.keep_profiles,
        budgets: app.config.budgets,
        rotating: app.config.key_ids.previous.is_some(),
        keep_counts: app.config.keep_detections,
    };
    let Some(done) = app
        .store
        .false_positive(reference, now_secs(), intake)
        .await?
    else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_reference",
            "no detection with that reference is held: unknown, not reported by a node \
             (only enforced detections of bound sessions, or of sessions they revoked, are), or past keep_detections_days",
        ));
    };
    if done.changed {
        app.head.send_replace(done.head);
        tracing::info!(%reference, head = done.head, by, "a false positive reported");
    }
    let counts: Vec<Value> = done
        .counts
        .iter()
        .filter_map(|c| match c {
            Change::UserDetections { user, count, until } => {
                Some(json!({"key": user.to_string(), "count": count, "until": until}))
            }
            _ => None,
        })
        .collect();
    let trusted: Vec<Value> = done
        .trusted
        .iter()
        .filter_map(|c| match c {
            Change::DeviceTrusted { user, device, .. } => {
                Some(json!({"key": user.to_string(), "device": device.to_string()}))
            }
            Change::NetworkTrusted { user, network, .. } => Some(json!({
                "key": user.to_string(),
                "network": serde_json::to_value(network).unwrap_or(Value::Null),
            })),
            _ => None,
        })
        .collect();
    Ok(json!({
        "reference": reference,
        "changed": done.changed,
        "message": if done.changed {
            "marked a false positive; every node told"
        } else {
            "already marked a false positive; nothing changed"
        },
        "nodes": done.nodes,
        "trusted": trusted,
        "counts": counts,
        "seq": done.head,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_is_kept_as_its_first_address() {
        assert_eq!(
            prefix_of("81.2.69.10".parse().unwrap()),
            "81.2.69.0".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            prefix_of("::ffff:81.2.69.10".parse().unwrap()),
            "81.2.69.0".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            prefix_of("2001:db8:1:2:3::4".parse().unwrap()),
            "2001:db8:1::".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn a_list_query_is_limit_and_offset_or_nothing() {
        assert_eq!(page_of(None).unwrap(), (DEFAULT_LIMIT, 0));
        assert_eq!(page_of(Some("limit=5&offset=10")).unwrap(), (5, 10));
        assert_eq!(page_of(Some("limit=1000")).unwrap(), (1000, 0));
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=5&limit=6",
            "offset=-1",
            "limit",
            "limit=",
            "user=alice",
            "offset=99999999999999999999",
        ] {
            assert!(page_of(Some(bad)).is_err(), "{bad}");
        }
    }
}
