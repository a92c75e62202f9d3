//! What the OpenID Connect back-channel logout receiver keeps
//! (`docs/signals.md`): each logout token taken, by issuer and `jti`,
//! committed in the same transaction as the revocations it made.

use sqlx::Row;
use vigil_fleet::{Change, IdpSessionId, SessionId, UserId};

use super::{Store, StoreError, append_in, idp_sessions, revoke_user_in, to_i64, to_u64};

/// A validated logout token, as kept.
#[derive(Debug, Clone, Copy)]
pub struct LogoutReceipt<'a> {
    /// The configured provider's name.
    pub provider: &'a str,
    /// Its `iss`.
    pub issuer: &'a str,
    /// Its `jti`.
    pub jti: &'a str,
    /// Until when its `jti` is kept (seconds since the Unix epoch).
    pub keep_until: u64,
}

/// Who the token logs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogoutOf {
    /// The user, from `sub` (when the provider's `sub` names users).
    pub user: Option<UserId>,
    /// The provider's session, from `sid`.
    pub idp_session: Option<IdpSessionId>,
}

/// What became of a logout token in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoutTaken {
    /// Taken: the head after, and how many Vigil sessions it ended by
    /// their provider session (0: the user's, or none known).
    Taken {
        /// The log's head after the commit.
        head: u64,
        /// Sessions ended by `sid`.
        by_sid: usize,
    },
    /// Its issuer and `jti` were taken before: a replay.
    Replayed,
}

impl Store {
    /// Takes a validated logout token: its `jti` row and the revocations,
    /// in one transaction. With `sid` and a user: the user's sessions
    /// signed in under that provider session, or every session of the
    /// user when none is known; with `sid` alone: the sessions signed in
    /// under it (none known: nothing); with a user alone: every session
    /// of the user.
    pub async fn take_logout(
        &self,
        token: &LogoutReceipt<'_>,
        of: LogoutOf,
        now: u64,
    ) -> Result<LogoutTaken, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE log_head SET head = head WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO bcl_jtis (issuer, jti, provider, received, keep_until) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (issuer, jti) DO NOTHING",
        )
        .bind(token.issuer)
        .bind(token.jti)
        .bind(token.provider)
        .bind(to_i64(now))
        .bind(to_i64(token.keep_until))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(LogoutTaken::Replayed);
        }
        let (head, by_sid) = match (of.user, of.idp_session) {
            (Some(user), Some(sid)) => {
                idp_sessions::revoke_in(&mut tx, user, sid, now, now).await?
            }
            (Some(user), None) => (revoke_user_in(&mut tx, user, now, now).await?, 0),
            (None, Some(sid)) => {
                let sessions: Vec<SessionId> = sqlx::query(
                    "SELECT session FROM idp_sessions WHERE idp_session = $1 ORDER BY session",
                )
                .bind(sid.to_string())
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .filter_map(|row| row.try_get::<String, _>(0).ok())
                .filter_map(|s| SessionId::parse(&s))
                .collect();
                sqlx::query("DELETE FROM idp_sessions WHERE idp_session = $1")
                    .bind(sid.to_string())
                    .execute(&mut *tx)
                    .await?;
                let changes: Vec<Change> = sessions
                    .iter()
                    .map(|session| Change::SessionRevoked {
                        session: *session,
                        at: now,
                        vouched: true,
                    })
                    .collect();
                (append_in(&mut tx, &changes, now).await?, sessions.len())
            }
            (None, None) => {
                let row = sqlx::query("SELECT head FROM log_head WHERE id = 1")
                    .fetch_one(&mut *tx)
                    .await?;
                (to_u64(row.try_get(0)?), 0)
            }
        };
        tx.commit().await?;
        Ok(LogoutTaken::Taken { head, by_sid })
    }
}
