//! What the Shared Signals receiver keeps (`docs/signals.md`): each SET
//! taken, by issuer and `jti`, committed in the same transaction as the
//! change it became, so that a SET is acted on once whatever the
//! transmitter retries and wherever the controller crashes; and each
//! stream's last verification.

use sqlx::Row;
use vigil_fleet::{Change, IdpSessionId, SessionId, UserId};

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{Store, StoreError, append_in, to_i64, to_u64};

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

/// Most SETs taken in one transaction (six bound values each, well under
/// SQLite's limit of 32,766).
pub const MAX_SET_BATCH: usize = 512;

impl Store {
    /// Takes one validated SET ([`Store::take_sets`] of one).
    pub async fn take_set(
        &self,
        set: &SetReceipt<'_>,
        action: SetAction,
        now: u64,
    ) -> Result<SetTaken, StoreError> {
        let taken = self.take_sets(&[(*set, action)], now).await?;
        Ok(taken.first().copied().unwrap_or(SetTaken::Duplicate))
    }

    /// Takes validated SETs (at most [`MAX_SET_BATCH`]) in one
    /// transaction — the group commit of concurrent deliveries: each
    /// SET's `jti` row, what it does, and its stream's record. A SET whose
    /// issuer and `jti` are held already (before, or earlier in the same
    /// batch) changes nothing ([`SetTaken::Duplicate`]) and does not
    /// affect the others. One answer per SET, in order.
    pub async fn take_sets(
        &self,
        sets: &[(SetReceipt<'_>, SetAction)],
        now: u64,
    ) -> Result<Vec<SetTaken>, StoreError> {
        if sets.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        // The head row first, as every writer takes it: two deliveries of
        // one SET (two replicas, two connections) queue here, and the
        // second finds the first's row.
        sqlx::query("UPDATE log_head SET head = head WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        let mut sql = String::from(
            "INSERT INTO ssf_jtis (issuer, jti, transmitter, event, received, keep_until) VALUES ",
        );
        for i in 0..sets.len() {
            let b = i * 6;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "(${},${},${},${},${},${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6
            ));
        }
        sql.push_str(" ON CONFLICT (issuer, jti) DO NOTHING RETURNING issuer, jti");
        let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (set, _) in sets {
            insert = insert
                .bind(set.issuer)
                .bind(set.jti)
                .bind(set.transmitter)
                .bind(set.event)
                .bind(to_i64(now))
                .bind(to_i64(set.keep_until));
        }
        let mut fresh: HashSet<(String, String)> = HashSet::new();
        for row in insert.fetch_all(&mut *tx).await? {
            fresh.insert((row.try_get(0)?, row.try_get(1)?));
        }
        let mut taken = Vec::with_capacity(sets.len());
        let mut changes = Vec::new();
        let sessions = self.sessions_of(&mut tx, sets, &fresh).await?;
        // Each stream's record: its last verification in the batch, if any.
        let mut streams: BTreeMap<&str, Option<&str>> = BTreeMap::new();
        for (set, action) in sets {
            // Removed when found: the same SET twice in a batch is taken
            // once.
            if !fresh.remove(&(set.issuer.to_owned(), set.jti.to_owned())) {
                taken.push(false);
                continue;
            }
            taken.push(true);
            match *action {
                SetAction::RevokeUser(user) => {
                    // As `Store::revoke_user`: the user, then each session
                    // the store holds a baseline of for the user.
                    changes.push(Change::UserRevoked { user, at: now });
                    for session in sessions.get(&user).into_iter().flatten() {
                        changes.push(Change::SessionRevoked {
                            session: *session,
                            at: now,
                            vouched: true,
                        });
                    }
                }
                SetAction::UserRisk {
                    user,
                    points,
                    until,
                } => changes.push(Change::UserRisk {
                    user,
                    points,
                    until,
                    at: now,
                }),
                SetAction::RevokeIdpSession { user, idp_session } => {
                    // The sessions signed in under that provider session;
                    // when none is mapped, every session of the user (as
                    // `RevokeUser`: more than asked, never less).
                    match super::idp_sessions::mapped_in(&mut tx, user, idp_session).await? {
                        Some(mapped) => {
                            for session in mapped {
                                changes.push(Change::SessionRevoked {
                                    session,
                                    at: now,
                                    vouched: true,
                                });
                            }
                        }
                        None => {
                            changes.push(Change::UserRevoked { user, at: now });
                            for session in sessions.get(&user).into_iter().flatten() {
                                changes.push(Change::SessionRevoked {
                                    session: *session,
                                    at: now,
                                    vouched: true,
                                });
                            }
                        }
                    }
                }
                SetAction::StepUp(user) => changes.push(Change::UserStepUp { user, at: now }),
                SetAction::Nothing => {}
            }
            let entry = streams.entry(set.transmitter).or_default();
            if set.verification.is_some() {
                *entry = set.verification;
            }
        }
        let head = if changes.is_empty() {
            let row = sqlx::query("SELECT head FROM log_head WHERE id = 1")
                .fetch_one(&mut *tx)
                .await?;
            to_u64(row.try_get(0)?)
        } else {
            append_in(&mut tx, &changes, now).await?
        };
        for (transmitter, verification) in streams {
            match verification {
                Some(state) => {
                    sqlx::query(
                        "INSERT INTO ssf_streams (transmitter, last_verification, verification_state, last_set) \
                         VALUES ($1, $2, $3, $2) ON CONFLICT (transmitter) DO UPDATE SET \
                         last_verification = excluded.last_verification, \
                         verification_state = excluded.verification_state, last_set = excluded.last_set",
                    )
                    .bind(transmitter)
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
                    .bind(transmitter)
                    .bind(to_i64(now))
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(taken
            .into_iter()
            .map(|t| {
                if t {
                    SetTaken::Taken { head }
                } else {
                    SetTaken::Duplicate
                }
            })
            .collect())
    }

    /// The sessions held of each user a SET of `sets` taken now
    /// (`fresh`) revokes, each user's in the order they were recorded:
    /// one query for the batch.
    async fn sessions_of(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        sets: &[(SetReceipt<'_>, SetAction)],
        fresh: &HashSet<(String, String)>,
    ) -> Result<HashMap<UserId, Vec<SessionId>>, StoreError> {
        let users: Vec<UserId> = sets
            .iter()
            .filter_map(|(set, action)| match action {
                SetAction::RevokeUser(user) | SetAction::RevokeIdpSession { user, .. }
                    if fresh.contains(&(set.issuer.to_owned(), set.jti.to_owned())) =>
                {
                    Some(*user)
                }
                _ => None,
            })
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut out: HashMap<UserId, Vec<SessionId>> = HashMap::new();
        if users.is_empty() {
            return Ok(out);
        }
        let mut sql =
            String::from("SELECT user_key, session FROM session_baselines WHERE user_key IN (");
        for i in 0..users.len() {
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!("${}", i + 1));
        }
        sql.push_str(") ORDER BY seq");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for user in &users {
            query = query.bind(user.to_string());
        }
        let by_key: HashMap<String, UserId> = users.iter().map(|u| (u.to_string(), *u)).collect();
        for row in query.fetch_all(&mut **tx).await? {
            let key: String = row.try_get(0)?;
            let session: String = row.try_get(1)?;
            if let (Some(user), Some(session)) = (by_key.get(&key), SessionId::parse(&session)) {
                out.entry(*user).or_default().push(session);
            }
        }
        Ok(out)
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
