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
    /// in one transaction. With `sid`: the sessions signed in under that
    /// provider session, whichever user they are bound to; when none is
    /// known, every session of the user (with `sub`) or nothing (`sid`
    /// alone); when more are known than the mapping holds (16), every
    /// session of each user they are bound to, and of the user. With a
    /// user alone: every session of the user.
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
        // The sessions signed in under the provider session, whoever they
        // are bound to: a mapping is made only for a session bound to the
        // user who signed in with that provider-signed `sid`, so they are
        // that login's, even when `sub` names users by another claim than
        // the nodes do.
        let mapped: Vec<(SessionId, Option<UserId>)> = match of.idp_session {
            None => Vec::new(),
            Some(sid) => sqlx::query(
                "SELECT session, user_key FROM idp_sessions WHERE idp_session = $1 ORDER BY session",
            )
            .bind(sid.to_string())
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .filter_map(|row| {
                let session = SessionId::parse(&row.try_get::<String, _>(0).ok()?)?;
                let user = row
                    .try_get::<Option<String>, _>(1)
                    .ok()
                    .flatten()
                    .as_deref()
                    .and_then(UserId::parse);
                Some((session, user))
            })
            .collect(),
        };
        let full = i64::try_from(mapped.len())
            .is_ok_and(|n| n >= idp_sessions::MAX_SESSIONS_PER_IDP_SESSION);
        if let Some(sid) = of.idp_session {
            sqlx::query("DELETE FROM idp_sessions WHERE idp_session = $1")
                .bind(sid.to_string())
                .execute(&mut *tx)
                .await?;
        }
        let (head, by_sid) = if !mapped.is_empty() && !full {
            let changes: Vec<Change> = mapped
                .iter()
                .map(|(session, _)| Change::SessionRevoked {
                    session: *session,
                    at: now,
                    vouched: true,
                })
                .collect();
            (append_in(&mut tx, &changes, now).await?, mapped.len())
        } else {
            // None mapped (or more than the mapping holds, so some may be
            // missing from it): every session of the user named, and with
            // a full mapping of each user it names — more than asked,
            // never less.
            let mut users: Vec<UserId> = of.user.into_iter().collect();
            if full {
                for user in mapped.iter().filter_map(|(_, u)| *u) {
                    if !users.contains(&user) {
                        users.push(user);
                    }
                }
            }
            let mut head = None;
            for user in users {
                head = Some(revoke_user_in(&mut tx, user, now, now).await?);
            }
            let head = match head {
                Some(head) => head,
                None => {
                    let row = sqlx::query("SELECT head FROM log_head WHERE id = 1")
                        .fetch_one(&mut *tx)
                        .await?;
                    to_u64(row.try_get(0)?)
                }
            };
            (head, 0)
        };
        tx.commit().await?;
        Ok(LogoutTaken::Taken { head, by_sid })
    }
}
