//! A responder's actions: mark a detection a false positive or a
//! confirmed compromise, revoke a session, log a user out everywhere.
//! Each is asked for on a confirmation page that says what it will do
//! (`GET /dashboard/confirm`), then posted with the session's CSRF token
//! (`POST /dashboard/act`), and carried out by the same functions as the
//! admin API's calls: the behaviour is the same whichever is used.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use bytes::Bytes;
use vigil_fleet::{Change, Country, SessionId, TrustedNetwork, UserId};

use super::session::Role;
use super::view::Nav;
use super::{Operator, PageError, checked_post, operator, page, query};
use crate::admin::Trusted;
use crate::api::{App, now_secs, user_id};
use crate::tls::Peer;

/// What a responder can do from the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    FalsePositive,
    ConfirmedCompromise,
    RevokeSession,
    LogoutUser,
    TrustDevice,
    TrustNetwork,
}

impl Action {
    fn parse(s: &str) -> Result<Action, PageError> {
        Ok(match s {
            "false-positive" => Action::FalsePositive,
            "confirmed-compromise" => Action::ConfirmedCompromise,
            "revoke-session" => Action::RevokeSession,
            "logout-user" => Action::LogoutUser,
            "trust-device" => Action::TrustDevice,
            "trust-network" => Action::TrustNetwork,
            _ => {
                return Err(PageError::BadRequest(
                    "action is one of false-positive, confirmed-compromise, revoke-session, \
                     logout-user, trust-device, trust-network"
                        .into(),
                ));
            }
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Action::FalsePositive => "false-positive",
            Action::ConfirmedCompromise => "confirmed-compromise",
            Action::RevokeSession => "revoke-session",
            Action::LogoutUser => "logout-user",
            Action::TrustDevice => "trust-device",
            Action::TrustNetwork => "trust-network",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Action::FalsePositive => "Mark a false positive",
            Action::ConfirmedCompromise => "Confirm a compromise",
            Action::RevokeSession => "Revoke a session",
            Action::LogoutUser => "Log a user out everywhere",
            Action::TrustDevice => "Trust a device for a user",
            Action::TrustNetwork => "Trust a network for a user",
        }
    }

    /// What it will do, said before it is done.
    fn effects(self) -> &'static [&'static str] {
        match self {
            Action::FalsePositive => &[
                "The detection stops counting toward its user's entity risk, on every node.",
                "The request's device and network become the session's on every node: the user's next request from that device is allowed wherever it lands.",
                "Every node trusts that device and network (its /24 or /48, ASN and country) for its user, as the detection's facts name them; a detection without facts (an older node's) trusts nothing more.",
                "Marking it again changes nothing.",
            ],
            Action::ConfirmedCompromise => &[
                "The detection is labelled a confirmed compromise.",
                "Every session of every user it names is revoked on every node.",
                "Each Shared Signals stream that asked for it gets a RISC credential-compromise event.",
            ],
            Action::RevokeSession => &[
                "The session is ended on every node: its next request is refused.",
                "Webhooks that follow revocations are called.",
            ],
            Action::LogoutUser => &[
                "Every session of the user is revoked on every node.",
                "Each app configured for universal logout is called (back-channel logout, global token revocation).",
            ],
            Action::TrustDevice => &[
                "Every node trusts this device for this user: seeing it is no evidence against them.",
                "It is kept in every snapshot; there is no untrust yet.",
            ],
            Action::TrustNetwork => &[
                "Every node trusts this network (an ASN or a country) for this user: seeing it is no evidence against them.",
                "It is kept in every snapshot; there is no untrust yet.",
            ],
        }
    }

    /// Its form's fields besides `action` and `csrf`.
    fn fields(self) -> &'static [&'static str] {
        match self {
            Action::FalsePositive => &["reference"],
            Action::ConfirmedCompromise => &["reference", "credential_type"],
            Action::RevokeSession => &["session"],
            Action::LogoutUser => &["key", "name"],
            Action::TrustDevice => &["key", "device"],
            Action::TrustNetwork => &["key", "asn", "country"],
        }
    }
}

const FIELDS: [&str; 9] = [
    "action",
    "reference",
    "credential_type",
    "session",
    "key",
    "name",
    "device",
    "asn",
    "country",
];

#[derive(Template)]
#[template(path = "dashboard/confirm.html")]
struct ConfirmPage {
    nav: Nav,
    action: &'static str,
    title: &'static str,
    effects: &'static [&'static str],
    /// The values posted as they are (hidden fields).
    hidden: Vec<(String, String)>,
    /// Whether a credential type is chosen (a confirmed compromise).
    credential_types: Vec<&'static str>,
    /// Whether the user's name is asked for (universal logout needs it
    /// and the controller keeps none).
    ask_name: bool,
    /// What this very action will do, read from the store now (a false
    /// positive: the devices and networks it will trust, for whom).
    plan: Vec<String>,
    /// Where "cancel" goes.
    back: String,
}

fn responder(operator: &Operator) -> Result<(), PageError> {
    if operator.session.role == Role::Responder {
        Ok(())
    } else {
        Err(PageError::NotResponder)
    }
}

fn session_of(fields: &HashMap<String, String>) -> Result<SessionId, PageError> {
    fields
        .get("session")
        .and_then(|s| SessionId::parse(s))
        .ok_or_else(|| PageError::BadRequest("a session key is 32 lower-case hex digits".into()))
}

fn key_of(fields: &HashMap<String, String>) -> Result<UserId, PageError> {
    fields
        .get("key")
        .and_then(|k| UserId::parse(k))
        .ok_or_else(|| PageError::BadRequest("a user key is 16 lower-case hex digits".into()))
}

/// The device, ASN or country a trust form names: exactly one.
fn trusted_of(action: Action, fields: &HashMap<String, String>) -> Result<Trusted, PageError> {
    let bad = |m: &str| PageError::BadRequest(m.to_owned());
    match (
        action,
        fields.get("device"),
        fields.get("asn"),
        fields.get("country"),
    ) {
        (Action::TrustDevice, Some(d), None, None) => {
            Ok(Trusted::Device(crate::admin::parse_device(d)?))
        }
        (Action::TrustNetwork, None, Some(asn), None) => match asn.parse::<u32>() {
            Ok(n) if n != 0 && asn.bytes().all(|b| b.is_ascii_digit()) => {
                Ok(Trusted::Network(TrustedNetwork::Asn { asn: n }))
            }
            _ => Err(bad("an ASN is a decimal number from 1")),
        },
        (Action::TrustNetwork, None, None, Some(c)) => Country::parse(&c.to_ascii_uppercase())
            .map(|country| Trusted::Network(TrustedNetwork::Country { country }))
            .ok_or_else(|| bad("a country is a two-letter code")),
        _ => Err(bad(
            "trust-device names a device; trust-network exactly one of asn and country",
        )),
    }
}

fn reference_of(fields: &HashMap<String, String>) -> Result<&str, PageError> {
    let r = fields
        .get("reference")
        .map(String::as_str)
        .unwrap_or_default();
    crate::admin::check_reference(r)?;
    Ok(r)
}

/// `GET /dashboard/confirm?action=…`: what the action will do, and the
/// form that does it. A responder's only.
pub(crate) async fn confirm_page(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, PageError> {
    let operator = operator(&app, &headers)?;
    responder(&operator)?;
    let q = query(raw.as_deref(), &FIELDS)?;
    let action = Action::parse(q.get("action").map(String::as_str).unwrap_or(""))?;
    let mut hidden = Vec::new();
    let mut ask_name = false;
    let mut plan = Vec::new();
    let back;
    match action {
        Action::FalsePositive | Action::ConfirmedCompromise => {
            let r = reference_of(&q)?;
            hidden.push(("reference".to_owned(), r.to_owned()));
            if action == Action::FalsePositive {
                plan = false_positive_plan(&app, r).await?;
            }
            back = format!(
                "/dashboard/detection?reference={}",
                url::form_urlencoded::byte_serialize(r.as_bytes()).collect::<String>()
            );
        }
        Action::RevokeSession => {
            let s = session_of(&q)?;
            hidden.push(("session".to_owned(), s.to_string()));
            back = format!("/dashboard/search?q={s}");
        }
        Action::LogoutUser => {
            let key = key_of(&q)?;
            hidden.push(("key".to_owned(), key.to_string()));
            match q.get("name") {
                Some(name) => hidden.push(("name".to_owned(), name.clone())),
                None => ask_name = true,
            }
            back = format!("/dashboard/user?key={key}");
        }
        Action::TrustDevice | Action::TrustNetwork => {
            let key = key_of(&q)?;
            let what = trusted_of(action, &q)?;
            hidden.push(("key".to_owned(), key.to_string()));
            match what {
                Trusted::Device(d) => hidden.push(("device".to_owned(), d.to_string())),
                Trusted::Network(TrustedNetwork::Asn { asn }) => {
                    hidden.push(("asn".to_owned(), asn.to_string()));
                }
                Trusted::Network(TrustedNetwork::Country { country }) => {
                    hidden.push(("country".to_owned(), country.to_string()));
                }
                Trusted::Network(_) => {}
            }
            back = format!("/dashboard/user?key={key}");
        }
    }
    page(&ConfirmPage {
        nav: operator.nav(),
        action: action.as_str(),
        title: action.title(),
        effects: action.effects(),
        hidden,
        credential_types: if action == Action::ConfirmedCompromise {
            crate::ssf::transmit::events::CREDENTIAL_TYPES.to_vec()
        } else {
            Vec::new()
        },
        ask_name,
        plan,
        back,
    })
}

/// What marking `reference` a false positive will do, line by line, by
/// the store's own rule ([`crate::store::FalsePositivePlan`]): the page
/// shows exactly what the action trusts, not what it might.
async fn false_positive_plan(app: &App, reference: &str) -> Result<Vec<String>, PageError> {
    let Some(plan) = app
        .store
        .false_positive_preview(reference, now_secs())
        .await?
    else {
        return Ok(vec![
            "No detection with this reference is held (unknown, not reported, or past keep_detections_days): confirming changes nothing.".to_owned(),
        ]);
    };
    if !plan.changed {
        return Ok(vec![
            "Every detection with this reference is marked a false positive already: confirming changes nothing.".to_owned(),
        ]);
    }
    let mut out = Vec::new();
    for change in &plan.trusted {
        match change {
            Change::DeviceTrusted { user, device, .. } => {
                out.push(format!("Trust device {device} for user {user}."));
            }
            Change::NetworkTrusted { user, network, .. } => {
                let what = match network {
                    TrustedNetwork::Prefix { prefix } => {
                        let bits = if prefix.is_ipv4() { 24 } else { 48 };
                        format!("network {prefix}/{bits}")
                    }
                    TrustedNetwork::Asn { asn } => format!("ASN {asn}"),
                    TrustedNetwork::Country { country } => format!("country {country}"),
                    TrustedNetwork::Unknown => continue,
                };
                out.push(format!("Trust {what} for user {user}."));
            }
            _ => {}
        }
    }
    if !plan.agree {
        out.push(format!(
            "Nodes ({}) reported this reference with different users or request facts: nothing is trusted; the detections still stop counting.",
            plan.nodes.join(", ")
        ));
    } else if out.is_empty() {
        out.push("The detection carries no request facts (a node of an earlier build) or no user: nothing is trusted; it still stops counting.".to_owned());
    }
    Ok(out)
}

#[derive(Template)]
#[template(path = "dashboard/done.html")]
struct DonePage {
    nav: Nav,
    title: &'static str,
    message: String,
    link: (String, String),
}

/// `POST /dashboard/act`: a responder's action, from this controller's
/// page, with the session's CSRF token. Once the session and its token
/// are good, the attempt is audited whatever its outcome (a viewer's
/// refusal included).
pub(crate) async fn act(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, PageError> {
    let (operator, fields) = checked_post(&app, &headers, &uri, &body, &FIELDS)?;
    let done = carry_out(&app, &operator, &fields).await;
    if matches!(done, Err(PageError::NotResponder)) {
        // Not written to the audit trail: a viewer posting refused
        // actions in a loop would otherwise bury the responders' entries
        // under rows of text of its choosing. The log keeps the attempt.
        tracing::warn!(
            operator = %operator.session.identity.label(),
            "dashboard action refused: a viewer may not act"
        );
        return Err(PageError::NotResponder);
    }
    let target = ["reference", "session", "key"]
        .iter()
        .find_map(|k| fields.get(*k))
        .map_or("", String::as_str);
    let outcome = match &done {
        Ok((_, message, _)) => message.clone(),
        Err(e) => format!("refused: {e}"),
    };
    super::audit(
        &app,
        &operator.session,
        &peer,
        fields.get("action").map_or("", String::as_str),
        target,
        &outcome,
    )
    .await;
    let (title, message, link) = done?;
    page(&DonePage {
        nav: operator.nav(),
        title,
        message,
        link,
    })
}

/// What a checked form asks, done by the admin API's functions: the
/// action's title, what the operator is told, and a link back.
async fn carry_out(
    app: &App,
    operator: &Operator,
    fields: &HashMap<String, String>,
) -> Result<(&'static str, String, (String, String)), PageError> {
    responder(operator)?;
    let action = Action::parse(fields.get("action").map(String::as_str).unwrap_or(""))?;
    if let Some(extra) = fields
        .keys()
        .find(|k| *k != "action" && !action.fields().contains(&k.as_str()))
    {
        return Err(PageError::BadRequest(format!(
            "field {extra:?} is not one of {}'s",
            action.as_str()
        )));
    }
    let who = operator.session.identity.label();
    let by = format!("dashboard ({who})");
    let (message, link) = match action {
        Action::FalsePositive => {
            let r = reference_of(fields)?;
            let done = crate::admin::mark_false_positive(app, r, &by).await?;
            let changed = done["changed"].as_bool().unwrap_or(false);
            (
                if changed {
                    "Marked a false positive; every node told.".to_owned()
                } else {
                    "Already marked a false positive; nothing changed.".to_owned()
                },
                detection_link(r),
            )
        }
        Action::ConfirmedCompromise => {
            let r = reference_of(fields)?;
            let credential = fields
                .get("credential_type")
                .map(String::as_str)
                .filter(|c| !c.is_empty());
            let done = crate::ssf::transmit::compromise::confirm(app, r, credential, &by).await?;
            let users = done["users"].as_array().map_or(0, Vec::len);
            let changed = done["changed"].as_bool().unwrap_or(false);
            (
                if changed {
                    format!("Confirmed a compromise; {users} user(s) revoked on every node.")
                } else {
                    "Already confirmed a compromise; nothing changed.".to_owned()
                },
                detection_link(r),
            )
        }
        Action::RevokeSession => {
            let s = session_of(fields)?;
            let seq = crate::api::revoke_one_session(app, s, "dashboard").await?;
            tracing::info!(who, seq, "session revoked from the dashboard");
            (
                format!("Session {s} revoked on every node (change {seq})."),
                (
                    format!("/dashboard/search?q={s}"),
                    "Back to the session".to_owned(),
                ),
            )
        }
        Action::LogoutUser => {
            let key = key_of(fields)?;
            let name = fields.get("name").map(String::as_str).unwrap_or_default();
            // The name must be the user's: a slip of the keyboard logs out
            // nobody else.
            if user_id(app, name)? != key {
                return Err(PageError::BadRequest(
                    "that name is not this user's: its key differs".into(),
                ));
            }
            let done =
                crate::logout::universal_logout(app, name, &format!("dashboard:{who}")).await?;
            let id = done["id"].as_str().unwrap_or("").to_owned();
            (
                format!(
                    "Every session of the user revoked on every node; logout {id} recorded and its apps called."
                ),
                (
                    format!("/dashboard/user?key={key}"),
                    "Back to the user".to_owned(),
                ),
            )
        }
        Action::TrustDevice | Action::TrustNetwork => {
            let key = key_of(fields)?;
            let what = trusted_of(action, fields)?;
            let seq = crate::admin::commit_trust(app, key, what, &by).await?;
            (
                format!("Trusted for the user on every node (change {seq})."),
                (
                    format!("/dashboard/user?key={key}"),
                    "Back to the user".to_owned(),
                ),
            )
        }
    };
    Ok((action.title(), message, link))
}

fn detection_link(reference: &str) -> (String, String) {
    (
        format!(
            "/dashboard/detection?reference={}",
            url::form_urlencoded::byte_serialize(reference.as_bytes()).collect::<String>()
        ),
        "Back to the detection".to_owned(),
    )
}
