//! Identity provider sessions learnt at step-ups (`docs/signals.md`, IdP
//! sessions): which Vigil sessions signed in under a provider's session,
//! so that the provider's logout of it ends those alone.
//!
//! A node's word is a claim: a session is mapped only when the controller
//! holds it bound to the very user the node names, so a stolen node token
//! can map a provider session to nothing but that user's own sessions —
//! all of which the provider's logout of the user would end anyway.

use std::collections::HashMap;

use sqlx::{Any, Row, Transaction};
use vigil_fleet::{IdpSessionId, SessionId, UserId};

use super::{Held, Refusal, StoreError, to_i64};

/// Most Vigil sessions kept per provider session. One that reaches it is
/// treated as unknown at its logout (every session of the user ends):
/// what was not kept is not spared.
pub const MAX_SESSIONS_PER_IDP_SESSION: i64 = 16;

/// Takes a node's [`vigil_fleet::NodeEventKind::IdpSession`]: kept when
/// the session is bound to `user` (in this batch, `pending`, or in the
/// store), refused ([`Refusal::OtherUser`]) otherwise.
pub(super) async fn take(
    tx: &mut Transaction<'static, Any>,
    pending: &HashMap<SessionId, Held>,
    session: SessionId,
    user: UserId,
    idp_session: IdpSessionId,
    at: u64,
) -> Result<Result<(), Refusal>, StoreError> {
    let bound = match pending.get(&session) {
        Some(held) => held.user,
        None => sqlx::query("SELECT user_key FROM session_baselines WHERE session = $1")
            .bind(session.to_string())
            .fetch_optional(&mut **tx)
            .await?
            .and_then(|row| row.try_get::<Option<String>, _>(0).ok().flatten())
            .and_then(|u| UserId::parse(&u)),
    };
    if bound != Some(user) {
        return Ok(Err(Refusal::OtherUser));
    }
    let held: i64 = sqlx::query("SELECT COUNT(*) FROM idp_sessions WHERE idp_session = $1")
        .bind(idp_session.to_string())
        .fetch_one(&mut **tx)
        .await?
        .try_get(0)?;
    if held >= MAX_SESSIONS_PER_IDP_SESSION {
        // Full: its logout ends every session of the user.
        return Ok(Ok(()));
    }
    sqlx::query(
        "INSERT INTO idp_sessions (idp_session, session, user_key, at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (idp_session, session) DO UPDATE SET at = excluded.at",
    )
    .bind(idp_session.to_string())
    .bind(session.to_string())
    .bind(user.to_string())
    .bind(to_i64(at))
    .execute(&mut **tx)
    .await?;
    Ok(Ok(()))
}

/// The sessions mapped to `idp_session` of `user`, their mapping deleted;
/// `None` when none is, or the provider session is full: the caller then
/// ends every session of the user.
pub(super) async fn mapped_in(
    tx: &mut Transaction<'static, Any>,
    user: UserId,
    idp_session: IdpSessionId,
) -> Result<Option<Vec<SessionId>>, StoreError> {
    let sessions: Vec<SessionId> = sqlx::query(
        "SELECT session FROM idp_sessions WHERE idp_session = $1 AND user_key = $2 ORDER BY session",
    )
    .bind(idp_session.to_string())
    .bind(user.to_string())
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .filter_map(|row| row.try_get::<String, _>(0).ok())
    .filter_map(|s| SessionId::parse(&s))
    .collect();
    let full = sessions.len() >= usize::try_from(MAX_SESSIONS_PER_IDP_SESSION).unwrap_or(16);
    if sessions.is_empty() || full {
        return Ok(None);
    }
    sqlx::query("DELETE FROM idp_sessions WHERE idp_session = $1")
        .bind(idp_session.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(Some(sessions))
}
