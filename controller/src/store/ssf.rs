//! What the Shared Signals receiver keeps (`docs/signals.md`): each SET
//! taken, by issuer and `jti`, committed in the same transaction as the
//! change it became, so that a SET is acted on once whatever the
//! transmitter retries and wherever the controller crashes; and each
//! stream's last verification.

use sqlx::Row;
use vigil_fleet::{Change, IdpSessionId, UserId};

use super::{Store, StoreError, append_in, revoke_user_in, to_i64, to_u64};

/// What a SET does to the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetAction {
    /// Every session of the user ends everywhere: the admin API's user
    /// revocation ([`Store::revoke_user`]).
    RevokeUser(UserId),
    /// The user's entity risk is set ([`Change::UserRisk`], as the admin
    /// API's `users/risk`): `points` until `until`; zero points clears it.
    UserRisk {
        /// The user.
        user: UserId,
        /// 0 to 100.
        points: u8,
        /// Until when (seconds since the Unix epoch).
        until: u64,
    },
    /// The identity provider ended one of its sessions of the user: the
    /// Vigil sessions that signed in under it end, or every session of
    /// the user when none is known ([`idp_sessions`](super::idp_sessions)).
    RevokeIdpSession {
        /// The user.
        user: UserId,
        /// The provider's session.
        idp_session: IdpSessionId,
    },
    /// Every session of the user must pass a step-up at its next request
    /// ([`Store::step_up_user`]).
    StepUp(UserId),
    /// Nothing but the record of the SET (a verification, an event not
    /// acted on).
    Nothing,
}

/// A SET the receiver validated, as kept.
#[derive(Debug, Clone, Copy)]
pub struct SetReceipt<'a> {
    /// The configured transmitter's name.
    pub transmitter: &'a str,
    /// Its `iss`.
    pub issuer: &'a str,
    /// Its `jti`.
    pub jti: &'a str,
    /// Its one event's type URI.
    pub event: &'a str,
    /// Until when its `jti` is kept (seconds since the Unix epoch): past
    /// it, the SET is refused as too old before it reaches the store.
    pub keep_until: u64,
    /// A verification event's `state` (`Some("")` for one without): the
    /// stream's last verification is recorded.
    pub verification: Option<&'a str>,
}

/// What became of a SET in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTaken {
    /// Taken for the first time; the head after (unchanged when it did
    /// nothing to the fleet).
    Taken {
        /// The log's head after the commit.
        head: u64,
    },
    /// Its issuer and `jti` were taken before: nothing done again.
    Duplicate,
}

/// A transmitter's stream as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRecord {
    /// When its last verification event came, and the `state` it carried.
    pub verification: Option<(u64, String)>,
    /// When its last SET was taken.
    pub last_set: u64,
}

impl Store {
    /// Takes a validated SET: its `jti` row, `action`, and the stream's
    /// record, in one transaction. A SET whose issuer and `jti` are held
    /// already changes nothing ([`SetTaken::Duplicate`]).
    pub async fn take_set(
        &self,
        set: &SetReceipt<'_>,
        action: SetAction,
        now: u64,
    ) -> Result<SetTaken, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The head row first, as every writer takes it: two deliveries of
        // one SET (two replicas, two connections) queue here, and the
        // second finds the first's row.
        sqlx::query("UPDATE log_head SET head = head WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO ssf_jtis (issuer, jti, transmitter, event, received, keep_until) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (issuer, jti) DO NOTHING",
        )
        .bind(set.issuer)
        .bind(set.jti)
        .bind(set.transmitter)
        .bind(set.event)
        .bind(to_i64(now))
        .bind(to_i64(set.keep_until))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(SetTaken::Duplicate);
        }
        let head = match action {
            SetAction::RevokeUser(user) => revoke_user_in(&mut tx, user, now, now).await?,
            SetAction::UserRisk {
                user,
                points,
                until,
            } => {
                append_in(
                    &mut tx,
                    &[Change::UserRisk {
                        user,
                        points,
                        until,
                        at: now,
                    }],
                    now,
                )
                .await?
            }
            SetAction::RevokeIdpSession { user, idp_session } => {
                super::idp_sessions::revoke_in(&mut tx, user, idp_session, now, now)
                    .await?
                    .0
            }
            SetAction::StepUp(user) => {
                append_in(&mut tx, &[Change::UserStepUp { user, at: now }], now).await?
            }
            SetAction::Nothing => {
                let row = sqlx::query("SELECT head FROM log_head WHERE id = 1")
                    .fetch_one(&mut *tx)
                    .await?;
                to_u64(row.try_get(0)?)
            }
        };
        match set.verification {
            Some(state) => {
                sqlx::query(
                    "INSERT INTO ssf_streams (transmitter, last_verification, verification_state, last_set) \
                     VALUES ($1, $2, $3, $2) ON CONFLICT (transmitter) DO UPDATE SET \
                     last_verification = excluded.last_verification, \
                     verification_state = excluded.verification_state, last_set = excluded.last_set",
                )
                .bind(set.transmitter)
                .bind(to_i64(now))
                .bind(state)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query(
                    "INSERT INTO ssf_streams (transmitter, last_set) VALUES ($1, $2) \
                     ON CONFLICT (transmitter) DO UPDATE SET last_set = excluded.last_set",
                )
                .bind(set.transmitter)
                .bind(to_i64(now))
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(SetTaken::Taken { head })
    }

    /// The stream of `transmitter` as recorded; `None` before its first
    /// SET.
    pub async fn ssf_stream(&self, transmitter: &str) -> Result<Option<StreamRecord>, StoreError> {
        let Some(row) = sqlx::query(
            "SELECT last_verification, verification_state, last_set FROM ssf_streams \
             WHERE transmitter = $1",
        )
        .bind(transmitter)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let at: Option<i64> = row.try_get(0)?;
        let state: Option<String> = row.try_get(1)?;
        Ok(Some(StreamRecord {
            verification: at.map(|at| (to_u64(at), state.unwrap_or_default())),
            last_set: to_u64(row.try_get(2)?),
        }))
    }

    /// Deletes the `jti`s kept past their `keep_until`; how many.
    pub async fn expire_set_ids(&self, now: u64) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM ssf_jtis WHERE keep_until < $1")
            .bind(to_i64(now))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}
