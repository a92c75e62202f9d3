//! The OpenID Shared Signals receiver (`docs/signals.md`): transmitters
//! (an identity provider, an XDR, a CASB) push Security Event Tokens
//! (RFC 8417) to `POST /v1/ssf/push/{transmitter}` (RFC 8935); each one
//! validated becomes what the admin API would do — a user's revocation
//! streamed to every node, or the user's entity risk — committed with the
//! SET's `jti` so that it is done once.

pub mod commit;
pub mod config;
pub mod gtr;
pub mod keys;
pub mod limit;
pub mod poll;
mod sessions;
pub mod status;
mod stepup;
pub mod transmit;
pub mod verify;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use vigil_engine::UserKey;
use vigil_fleet::UserId;

use crate::api::{App, now_secs};
use crate::store::ssf::{SetAction, SetReceipt, SetTaken};
use config::{Action, SSF, SubjectFormat, Transmitter};
use keys::{KeyError, Keys};
use verify::Rejection;

pub use config::RawSsf;

/// Largest SET body read: SETs are a few kilobytes; anything near this is
/// not one.
pub const MAX_SET_BYTES: usize = 64 * 1024;

/// The receiver's state: each transmitter with its keys and rate limit,
/// the per-source rate limit, and the group committer.
#[derive(Debug)]
pub struct Receiver {
    transmitters: HashMap<String, Stream>,
    /// Each source address's bucket (`ssf.source_rate_per_second`).
    pub sources: limit::Limiter<std::net::IpAddr>,
    commits: Option<tokio::sync::mpsc::Sender<commit::PendingSet>>,
    /// The global token revocation endpoint's peers.
    pub gtr: gtr::Inbound,
}

/// A configured transmitter at run time.
#[derive(Debug)]
pub struct Stream {
    /// Its configuration.
    pub t: Transmitter,
    /// Its keys.
    pub keys: Keys,
    limit: limit::Limiter<()>,
    /// What this process saw of it.
    pub status: status::Status,
}

impl Receiver {
    /// The receiver of `transmitters`, its SETs committed to `store`.
    /// Starts its committer task: call it within a Tokio runtime.
    pub fn new(
        transmitters: &[Transmitter],
        inbound: &config::Inbound,
        gtr_peers: &[gtr::Peer],
        store: &crate::store::Store,
    ) -> Receiver {
        let client = if transmitters
            .iter()
            .any(|t| !matches!(t.keys, config::KeySource::Static(_)))
        {
            keys::client()
        } else {
            None
        };
        Receiver {
            transmitters: transmitters
                .iter()
                .map(|t| {
                    let keys =
                        Keys::new(t.keys.clone(), t.jwks_cache, t.jwks_refetch, client.clone());
                    let stream = Stream {
                        t: t.clone(),
                        keys,
                        limit: limit::Limiter::new(t.rate, 1),
                        status: status::Status::default(),
                    };
                    (t.name.clone(), stream)
                })
                .collect(),
            sources: limit::Limiter::new(inbound.source_rate, limit::MAX_SOURCES),
            commits: (!transmitters.is_empty()).then(|| commit::start(store.clone())),
            gtr: gtr::Inbound::new(gtr_peers),
        }
    }

    /// The transmitter named `name`.
    pub fn stream(&self, name: &str) -> Option<&Stream> {
        self.transmitters.get(name)
    }

    /// The configured transmitters.
    pub fn streams(&self) -> impl Iterator<Item = &Stream> {
        self.transmitters.values()
    }

    /// Takes one request from `peer`'s source address: `Err(retry_after)`
    /// when over its rate. A request without a known address (none in
    /// tests that build requests by hand) shares one bucket.
    pub fn check_source(&self, peer: &crate::tls::Peer) -> Result<(), std::time::Duration> {
        let key = peer.addr.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| {
            limit::source_key(a.ip())
        });
        self.sources.check(&key)
    }
}

/// Starts the receiver's tasks: each transmitter's keys read at once
/// (through its metadata when discovered), and one poller per polled
/// transmitter. Their handles, to abort them when the controller stops.
pub fn start(app: &Arc<App>) -> Vec<tokio::task::AbortHandle> {
    let mut tasks = poll::start(app);
    for s in app.ssf.streams() {
        if matches!(s.t.keys, config::KeySource::Static(_)) {
            continue;
        }
        let (app, name) = (Arc::downgrade(app), s.t.name.clone());
        tasks.push(
            tokio::spawn(async move {
                if let Some(app) = app.upgrade()
                    && let Some(s) = app.ssf.stream(&name)
                    && let Err(KeyError::Unavailable(e)) = s.keys.key("").await
                {
                    s.status.error(now_secs(), &format!("keys: {e}"));
                }
            })
            .abort_handle(),
        );
    }
    tasks
}

fn answer(status: StatusCode, err: &str, description: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({"err": err, "description": description})),
    )
        .into_response()
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, [(header::CACHE_CONTROL, "no-store")]).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// `POST /v1/ssf/push/{transmitter}`: one SET (RFC 8935). The bearer is
/// checked before a byte of the body is read; then the body (at most
/// [`MAX_SET_BYTES`]), the SET ([`verify`]), its subject, and what it does,
/// committed with its `jti`. `202` when taken (or taken before: a replay
/// does nothing again), `400` with `{"err","description"}` when refused,
/// `401` for a wrong or missing bearer, `413` for a body too large, `503`
/// when the keys or the store are unavailable (the transmitter retries).
pub async fn push(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    peer: crate::tls::Peer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let count = |label: &str, result: &str| {
        app.metrics
            .ssf_sets
            .with_label_values(&[label, result])
            .inc();
    };
    // The source's rate first, before anything of the request is looked
    // at; the transmitter's once its bearer is known, so that a flood
    // without it cannot spend the transmitter's allowance.
    if let Err(retry) = app.ssf.check_source(&peer) {
        count("-", "rate_limited");
        return limit::too_many(retry);
    }
    let Some(stream) = app.ssf.transmitters.get(&name) else {
        count("-", "unauthorized");
        return unauthorized();
    };
    let (t, keys) = (&stream.t, &stream.keys);
    let label = t.name.as_str();
    let authenticated = bearer(&headers)
        .is_some_and(|token| t.push_token_sha256 == Some(crate::config::token_hash(token)));
    if !authenticated {
        count(label, "unauthorized");
        return unauthorized();
    }
    if let Err(retry) = stream.limit.check(&()) {
        count(label, "rate_limited");
        return limit::too_many(retry);
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if content_type.as_deref() != Some("application/secevent+jwt") {
        count(label, "invalid_request");
        return answer(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Content-Type must be application/secevent+jwt",
        );
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_SET_BYTES).await else {
        count(label, "too_large");
        return answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            &format!("a SET of at most {MAX_SET_BYTES} bytes"),
        );
    };
    match take(&app, t, keys, &bytes).await {
        Ok(result) => {
            count(label, result);
            accepted()
        }
        Err(Refused::Set(r)) => {
            count(label, r.err);
            stream
                .status
                .error(now_secs(), &format!("{}: {}", r.err, r.description));
            tracing::info!(transmitter = label, err = r.err, description = %r.description, "SET refused");
            answer(StatusCode::BAD_REQUEST, r.err, &r.description)
        }
        Err(Refused::Unavailable(why)) => {
            count(label, "unavailable");
            stream.status.error(now_secs(), why);
            answer(StatusCode::SERVICE_UNAVAILABLE, "unavailable", why)
        }
    }
}

fn unauthorized() -> Response {
    let mut r = answer(
        StatusCode::UNAUTHORIZED,
        "authentication_failed",
        "a valid bearer token is required",
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

/// Why a SET was not taken.
#[derive(Debug)]
pub enum Refused {
    /// Refused: its RFC 8935 code and description (`400`, or `setErrs`).
    Set(Rejection),
    /// Not now: the keys or the store are unavailable; deliver again.
    Unavailable(&'static str),
}

impl From<Rejection> for Refused {
    fn from(r: Rejection) -> Self {
        Refused::Set(r)
    }
}

fn invalid(description: impl Into<String>) -> Refused {
    Refused::Set(Rejection {
        err: "invalid_request",
        description: description.into(),
    })
}

/// Validates and takes one SET, delivered by push or by poll; the
/// metric's result when taken.
pub(crate) async fn take(
    app: &App,
    t: &Transmitter,
    keys: &Keys,
    bytes: &[u8],
) -> Result<&'static str, Refused> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| invalid("the body is not a compact JWS"))?
        .trim();
    let parsed = verify::parse(text, t)?;
    let key = match keys.key(&parsed.kid).await {
        Ok(key) => key,
        Err(KeyError::Unknown) => {
            return Err(Refused::Set(Rejection {
                err: "invalid_key",
                description: format!("no key {:?} in the transmitter's JWK Set", parsed.kid),
            }));
        }
        Err(KeyError::Unavailable(_)) => {
            return Err(Refused::Unavailable(
                "the transmitter's keys could not be fetched; try again",
            ));
        }
    };
    let now = now_secs();
    let claims = verify::verify(&parsed, &key, t, now)?;
    // The user's name when the event's action is universal logout.
    let mut logout: Option<String> = None;
    let (action, result, verification) = if claims.event == format!("{SSF}verification") {
        let state = claims
            .payload
            .get("state")
            .and_then(Value::as_str)
            .unwrap_or("");
        if state.len() > 256 {
            return Err(invalid("the verification state is too long"));
        }
        (SetAction::Nothing, "verification", Some(state.to_owned()))
    } else {
        match t.actions.get(&claims.event).copied() {
            None | Some(Action::Ignore) => (SetAction::Nothing, "ignored", None),
            Some(action) => {
                let name = user_name(t, claims.sub_id.as_ref())?;
                if action == Action::Logout {
                    logout = Some(name.clone());
                }
                let user = UserId(UserKey::for_name(&app.config.hash_key, &name).as_u64());
                let action = match (action, risk_direction(&claims.event, &claims.payload)?) {
                    // Universal logout is of the user, never of one
                    // provider session.
                    (Action::Logout, _) => SetAction::RevokeUser(user),
                    (Action::RevokeUser, _) => match sessions::named(
                        &app.config.hash_key,
                        t,
                        &claims.event,
                        claims.sub_id.as_ref(),
                    ) {
                        Some(idp_session) => SetAction::RevokeIdpSession { user, idp_session },
                        None => SetAction::RevokeUser(user),
                    },
                    (Action::StepUp, _) => match stepup::wanted(&claims.event, &claims.payload) {
                        Ok(true) => SetAction::StepUp(user),
                        Ok(false) => SetAction::Nothing,
                        Err(e) => return Err(invalid(e)),
                    },
                    (Action::ClearRisk, _) | (Action::RaiseRisk, Some(false)) => {
                        SetAction::UserRisk {
                            user,
                            points: 0,
                            until: now,
                        }
                    }
                    (Action::RaiseRisk, Some(true)) => SetAction::UserRisk {
                        user,
                        points: t.risk_points,
                        until: now.saturating_add(t.risk_ttl),
                    },
                    (Action::RaiseRisk, None) | (Action::Ignore, _) => SetAction::Nothing,
                };
                let result = if action == SetAction::Nothing {
                    "ignored"
                } else {
                    // The admin API's path: the name is kept beside its
                    // key only under `user_names = "clear"`.
                    crate::admin::keep_name(app, user, &name)
                        .await
                        .map_err(|_| Refused::Unavailable("the store failed; try again"))?;
                    "accepted"
                };
                (action, result, None)
            }
        }
    };
    let receipt = SetReceipt {
        transmitter: &t.name,
        issuer: &t.issuer,
        jti: &claims.jti,
        event: &claims.event,
        keep_until: claims
            .iat
            .saturating_add(t.max_age)
            .saturating_add(t.clock_skew),
        verification: verification.as_deref(),
    };
    let taken = match &app.ssf.commits {
        Some(commits) => {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let pending = commit::PendingSet {
                transmitter: receipt.transmitter.to_owned(),
                issuer: receipt.issuer.to_owned(),
                jti: receipt.jti.to_owned(),
                event: receipt.event.to_owned(),
                keep_until: receipt.keep_until,
                verification: receipt.verification.map(str::to_owned),
                action,
                reply,
            };
            match commits.send(pending).await {
                Ok(()) => answer.await.ok().flatten().ok_or(()),
                Err(_) => Err(()),
            }
        }
        None => app
            .store
            .take_set(&receipt, action, now)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "store failed; SET not taken");
            }),
    };
    match taken {
        Ok(SetTaken::Taken { head }) => {
            app.head.send_if_modified(|h| {
                let newer = head > *h;
                if newer {
                    *h = head;
                }
                newer
            });
            if action != SetAction::Nothing {
                tracing::info!(transmitter = %t.name, event = %claims.event, action = ?action, head, "SET taken");
                // Told to the webhooks after the commit: a store failure
                // here is the transmitter's retry, a duplicate, not told.
                if let Err(e) = crate::webhooks::set_taken(
                    app,
                    &t.name,
                    &claims.jti,
                    &claims.event,
                    action,
                    head,
                )
                .await
                {
                    tracing::warn!(error = %e, "SET taken; its webhooks not enqueued");
                }
                // The apps of a universal logout, after the fleet's
                // revocation committed with the SET.
                if let (Some(name), SetAction::RevokeUser(user)) = (&logout, action)
                    && let Err(e) =
                        crate::logout::apps(app, user, name, &format!("ssf:{}", t.name), head).await
                {
                    tracing::warn!(error = ?e, "SET taken; its universal logout's apps not called");
                }
            }
            Ok(result)
        }
        Ok(SetTaken::Duplicate) => Ok("duplicate"),
        Err(()) => Err(Refused::Unavailable("the store failed; try again")),
    }
}

/// For the events whose payload says which way risk goes: `Some(true)`
/// to raise, `Some(false)` to clear, `None` for neither (a medium level,
/// a compliant device). `Some(true)` for every other event.
fn risk_direction(event: &str, payload: &Map<String, Value>) -> Result<Option<bool>, Refused> {
    let field = |k: &str| payload.get(k).and_then(Value::as_str);
    match event.strip_prefix(config::CAEP) {
        Some("risk-level-change") => match field("current_level") {
            Some(l) if l.eq_ignore_ascii_case("high") => Ok(Some(true)),
            Some(l) if l.eq_ignore_ascii_case("low") => Ok(Some(false)),
            Some(l) if l.eq_ignore_ascii_case("medium") => Ok(None),
            _ => Err(invalid(
                "risk-level-change needs current_level LOW, MEDIUM or HIGH",
            )),
        },
        Some("device-compliance-change") => match field("current_status") {
            Some("not-compliant") => Ok(Some(true)),
            Some("compliant") => Ok(None),
            _ => Err(invalid(
                "device-compliance-change needs current_status compliant or not-compliant",
            )),
        },
        _ => Ok(Some(true)),
    }
}

/// The user name a subject maps to (`docs/signals.md`, Subjects): a
/// simple subject of a format the transmitter's `subjects` list, or a
/// complex subject's `user` member. A complex subject's `session` cannot
/// be mapped to a Vigil session (Vigil does not know the IdP's session
/// ids): the user's sessions are all revoked.
fn user_name(t: &Transmitter, sub_id: Option<&Map<String, Value>>) -> Result<String, Refused> {
    let sub = sub_id.ok_or_else(|| invalid("sub_id is missing"))?;
    let format = sub.get("format").and_then(Value::as_str).unwrap_or("");
    let simple = if format == "complex" {
        sub.get("user")
            .and_then(Value::as_object)
            .ok_or_else(|| invalid("a complex sub_id without a user cannot be mapped"))?
    } else {
        sub
    };
    let name = simple_name(t, simple)?;
    vigil_engine::valid_user_name(&name)
        .map(str::to_owned)
        .ok_or_else(|| invalid("the subject is not a user name of 1 to 256 visible characters"))
}

fn simple_name(t: &Transmitter, sub: &Map<String, Value>) -> Result<String, Refused> {
    let field = |k: &str| sub.get(k).and_then(Value::as_str);
    let format = field("format").unwrap_or("");
    let wanted = match format {
        "email" => SubjectFormat::Email,
        "iss_sub" => SubjectFormat::IssSub,
        "opaque" => SubjectFormat::Opaque,
        _ => {
            return Err(invalid(format!(
                "sub_id format {format:?} is not supported"
            )));
        }
    };
    if !t.subjects.contains(&wanted) {
        return Err(invalid(format!(
            "sub_id format {format:?} is not accepted from this transmitter"
        )));
    }
    match wanted {
        SubjectFormat::Email => {
            let email = field("email").ok_or_else(|| invalid("an email subject needs email"))?;
            Ok(if t.lowercase_email {
                email.to_lowercase()
            } else {
                email.to_owned()
            })
        }
        SubjectFormat::IssSub => {
            let (Some(iss), Some(sub)) = (field("iss"), field("sub")) else {
                return Err(invalid("an iss_sub subject needs iss and sub"));
            };
            if !t.subject_issuers.iter().any(|i| i == iss) {
                return Err(invalid(
                    "the iss_sub subject's iss is not one of this transmitter's subject_issuers",
                ));
            }
            Ok(sub.to_owned())
        }
        SubjectFormat::Opaque => field("id")
            .map(str::to_owned)
            .ok_or_else(|| invalid("an opaque subject needs id")),
    }
}
