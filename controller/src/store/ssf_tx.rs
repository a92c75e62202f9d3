//! What the Shared Signals transmitter keeps (`docs/signals.md`, Vigil as
//! a transmitter): the streams receivers created, their subjects, each
//! stream's queue of SETs, and the transmitter's cursor in the change log.
//!
//! Events are derived from committed changes: [`Store::ssf_tx_fan_out`]
//! takes the cursor's row lock (one replica at a time), reads the changes
//! after it, enqueues what the caller's plan derives from them, and moves
//! the cursor, in one transaction: a revocation committed on any path is
//! enqueued once. Pushes are delivered by one controller per stream at a
//! time ([`Store::ssf_tx_lease`]).

use std::collections::HashMap;

use sqlx::Row;
use vigil_fleet::{Change, SessionId, UserId};

use super::{Store, StoreError, revoke_user_in, to_i64, to_u64};

/// A stream as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxStream {
    /// Its id.
    pub stream_id: String,
    /// The receiver that owns it (its configured name).
    pub client: String,
    /// What the receiver supplied, as JSON.
    pub config: String,
    /// `enabled`, `paused` or `disabled`.
    pub status: String,
    /// Why, as the receiver said when it set the status.
    pub reason: Option<String>,
    /// Every subject's events unless removed (`true`), or only those of
    /// subjects added.
    pub all_subjects: bool,
    /// SETs dropped from its queue because it was full.
    pub dropped: u64,
    /// Push attempts failed in a row.
    pub failures: u64,
    /// When the next push is tried (milliseconds since the epoch).
    pub next_try: u64,
}

/// One SET waiting in a stream's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// Its number in the queue.
    pub seq: u64,
    /// Its `jti`.
    pub jti: String,
    /// Its claims (JSON), `iss` and `iat` added when signed.
    pub claims: String,
}

/// What [`Store::ssf_tx_fan_out`] hands the plan: the committed changes
/// after the cursor, and what the store knows that events need.
#[derive(Debug, Default)]
pub struct FanOutInput {
    /// The changes, in order.
    pub changes: Vec<(u64, Change)>,
    /// Whether changes between the cursor and the first were compacted
    /// away before they could be read.
    pub gap: bool,
    /// The user each revoked session is bound to, where known.
    pub session_users: HashMap<SessionId, UserId>,
    /// Names kept of the users named (`user_names = "clear"`).
    pub names: HashMap<UserId, String>,
    /// The last detection that revoked each revoked session, where one
    /// is held: its rule and reason codes.
    pub detections: HashMap<SessionId, (Option<String>, String)>,
    /// Each user's entity risk now, for those whose risk changed:
    /// detections counted, and the points an operator or partner set.
    pub risk: HashMap<UserId, (u64, u64)>,
    /// The entity-risk level last sent for those users.
    pub levels: HashMap<UserId, String>,
    /// Streams not disabled.
    pub streams: Vec<TxStream>,
    /// Each stream's subjects: key → included.
    pub subjects: HashMap<String, HashMap<String, bool>>,
    /// When each stream was last sent a user's `session-revoked`, by
    /// subject key, within the echo window.
    pub recent: HashMap<(String, String), u64>,
    /// Now (seconds since the epoch).
    pub now: u64,
}

/// What a plan asks [`Store::ssf_tx_fan_out`] to write.
#[derive(Debug, Default)]
pub struct FanOutPlan {
    /// `(stream, jti, claims)` to enqueue, in order.
    pub enqueue: Vec<(String, String, String)>,
    /// Entity-risk levels now sent, by user.
    pub levels: Vec<(UserId, String)>,
    /// `(stream, subject key)` sent a user's `session-revoked` now.
    pub recent: Vec<(String, String)>,
}

/// What a fan-out did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FanOut {
    /// Changes read.
    pub changes: usize,
    /// SETs enqueued.
    pub enqueued: usize,
    /// SETs dropped from full queues, by stream.
    pub dropped: HashMap<String, u64>,
}

fn stream_of(row: &sqlx::any::AnyRow) -> Result<TxStream, StoreError> {
    Ok(TxStream {
        stream_id: row.try_get(0)?,
        client: row.try_get(1)?,
        config: row.try_get(2)?,
        status: row.try_get(3)?,
        reason: row.try_get(4)?,
        all_subjects: row.try_get::<i64, _>(5)? != 0,
        dropped: to_u64(row.try_get(6)?),
        failures: to_u64(row.try_get(7)?),
        next_try: to_u64(row.try_get(8)?),
    })
}

const STREAM_COLUMNS: &str =
    "stream_id, client, config, status, reason, all_subjects, dropped, failures, next_try";

impl Store {
    /// Creates a stream for `client` unless it holds `max` already;
    /// whether it was created.
    pub async fn ssf_tx_create(
        &self,
        stream_id: &str,
        client: &str,
        config: &str,
        all_subjects: bool,
        max: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The cursor's row lock: two creations of one client queue here,
        // and the second counts the first's stream.
        sqlx::query("UPDATE ssf_tx_cursor SET seq = seq WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        let held: i64 = sqlx::query("SELECT COUNT(*) FROM ssf_tx_streams WHERE client = $1")
            .bind(client)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if to_u64(held) >= max {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO ssf_tx_streams (stream_id, client, config, status, reason, all_subjects, \
             created, updated, next_seq, dropped, lease_owner, lease_until, next_try, failures) \
             VALUES ($1, $2, $3, 'enabled', NULL, $4, $5, $5, 0, 0, NULL, 0, 0, 0)",
        )
        .bind(stream_id)
        .bind(client)
        .bind(config)
        .bind(i64::from(all_subjects))
        .bind(to_i64(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The stream `stream_id`, whoever owns it.
    pub async fn ssf_tx_stream(&self, stream_id: &str) -> Result<Option<TxStream>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {STREAM_COLUMNS} FROM ssf_tx_streams WHERE stream_id = $1"
        )))
        .bind(stream_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(stream_of).transpose()
    }

    /// Every stream, by receiver then age; at most 1,000.
    pub async fn ssf_tx_all_streams(&self) -> Result<Vec<TxStream>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {STREAM_COLUMNS} FROM ssf_tx_streams ORDER BY client, created, stream_id LIMIT 1000"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stream_of).collect()
    }

    /// Every stream of `client`, oldest first.
    pub async fn ssf_tx_streams(&self, client: &str) -> Result<Vec<TxStream>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {STREAM_COLUMNS} FROM ssf_tx_streams WHERE client = $1 ORDER BY created, stream_id"
        )))
        .bind(client)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stream_of).collect()
    }

    /// Replaces what the receiver supplied of a stream.
    pub async fn ssf_tx_set_config(
        &self,
        stream_id: &str,
        config: &str,
        now: u64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE ssf_tx_streams SET config = $1, updated = $2, failures = 0, next_try = 0 WHERE stream_id = $3")
            .bind(config)
            .bind(to_i64(now))
            .bind(stream_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes a stream with its subjects and queue.
    pub async fn ssf_tx_delete(&self, stream_id: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for table in [
            "ssf_tx_queue",
            "ssf_tx_subjects",
            "ssf_tx_refused",
            "ssf_tx_streams",
        ] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE stream_id = $1"
            )))
            .bind(stream_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Sets a stream's status; a disabled stream's queue is emptied (it
    /// holds nothing while disabled).
    pub async fn ssf_tx_set_status(
        &self,
        stream_id: &str,
        status: &str,
        reason: Option<&str>,
        now: u64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE ssf_tx_streams SET status = $1, reason = $2, updated = $3, failures = 0, next_try = 0 \
             WHERE stream_id = $4",
        )
        .bind(status)
        .bind(reason)
        .bind(to_i64(now))
        .bind(stream_id)
        .execute(&mut *tx)
        .await?;
        if status == "disabled" {
            sqlx::query("DELETE FROM ssf_tx_queue WHERE stream_id = $1")
                .bind(stream_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records a subject added (`included`) or removed on a stream.
    pub async fn ssf_tx_subject(
        &self,
        stream_id: &str,
        subject: &str,
        included: bool,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO ssf_tx_subjects (stream_id, subject, included) VALUES ($1, $2, $3) \
             ON CONFLICT (stream_id, subject) DO UPDATE SET included = excluded.included",
        )
        .bind(stream_id)
        .bind(subject)
        .bind(i64::from(included))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Subjects recorded on a stream, most `limit`.
    pub async fn ssf_tx_subject_count(&self, stream_id: &str) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM ssf_tx_subjects WHERE stream_id = $1")
            .bind(stream_id)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        Ok(to_u64(n))
    }

    /// Enqueues one SET on one stream (a verification, an operator's
    /// event), dropping the oldest beyond `max_queue`; how many dropped.
    pub async fn ssf_tx_enqueue(
        &self,
        stream_id: &str,
        jti: &str,
        claims: &str,
        max_queue: u64,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let dropped = enqueue_in(&mut tx, stream_id, jti, claims, max_queue).await?;
        tx.commit().await?;
        Ok(dropped)
    }

    /// SETs waiting on a stream.
    pub async fn ssf_tx_queued(&self, stream_id: &str) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM ssf_tx_queue WHERE stream_id = $1")
            .bind(stream_id)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        Ok(to_u64(n))
    }

    /// The first `limit` SETs of a stream's queue, in order; with
    /// `unsent_before`, only those never handed out by a poll or handed
    /// out before it (milliseconds).
    pub async fn ssf_tx_peek(
        &self,
        stream_id: &str,
        limit: usize,
        unsent_before: Option<u64>,
    ) -> Result<Vec<Queued>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, jti, claims FROM ssf_tx_queue WHERE stream_id = $1 AND sent <= $2 \
             ORDER BY seq LIMIT $3",
        )
        .bind(stream_id)
        .bind(to_i64(unsent_before.unwrap_or(u64::MAX >> 1)))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Queued {
                    seq: to_u64(r.try_get(0)?),
                    jti: r.try_get(1)?,
                    claims: r.try_get(2)?,
                })
            })
            .collect()
    }

    /// Marks SETs handed out by a poll at `now_ms`.
    pub async fn ssf_tx_mark_sent(
        &self,
        stream_id: &str,
        seqs: &[u64],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for seq in seqs {
            sqlx::query("UPDATE ssf_tx_queue SET sent = $1 WHERE stream_id = $2 AND seq = $3")
                .bind(to_i64(now_ms))
                .bind(stream_id)
                .bind(to_i64(*seq))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes SETs delivered (acknowledged, or refused by the receiver:
    /// `refused` with `(err, description)`, kept for the operator);
    /// how many were removed.
    pub async fn ssf_tx_done(
        &self,
        stream_id: &str,
        jti: &str,
        refused: Option<(&str, &str)>,
        now: u64,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("DELETE FROM ssf_tx_queue WHERE stream_id = $1 AND jti = $2")
            .bind(stream_id)
            .bind(jti)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n > 0
            && let Some((err, description)) = refused
        {
            sqlx::query(
                "INSERT INTO ssf_tx_refused (stream_id, jti, err, description, at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (stream_id, jti) DO NOTHING",
            )
            .bind(stream_id)
            .bind(jti)
            .bind(err)
            .bind(description)
            .bind(to_i64(now))
            .execute(&mut *tx)
            .await?;
            // The newest hundred per stream are enough to see what is wrong.
            sqlx::query(
                "DELETE FROM ssf_tx_refused WHERE stream_id = $1 AND jti NOT IN \
                 (SELECT jti FROM ssf_tx_refused WHERE stream_id = $1 ORDER BY at DESC, jti LIMIT 100)",
            )
            .bind(stream_id)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE ssf_tx_streams SET failures = 0, next_try = 0 WHERE stream_id = $1")
            .bind(stream_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(n)
    }

    /// The newest `limit` SETs a stream's receiver refused: `(jti, err,
    /// description, at)`.
    pub async fn ssf_tx_refused(
        &self,
        stream_id: &str,
        limit: usize,
    ) -> Result<Vec<(String, String, String, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT jti, err, description, at FROM ssf_tx_refused WHERE stream_id = $1 \
             ORDER BY at DESC, jti LIMIT $2",
        )
        .bind(stream_id)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    to_u64(r.try_get(3)?),
                ))
            })
            .collect()
    }

    /// A push failed: the stream's next try is at `next_try`
    /// (milliseconds).
    pub async fn ssf_tx_failed(&self, stream_id: &str, next_try: u64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE ssf_tx_streams SET failures = failures + 1, next_try = $1 WHERE stream_id = $2",
        )
        .bind(to_i64(next_try))
        .bind(stream_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Streams enabled, with SETs waiting, due (`next_try` reached at
    /// `now_ms`) and not leased by another controller.
    pub async fn ssf_tx_due(&self, owner: &str, now_ms: u64) -> Result<Vec<TxStream>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {STREAM_COLUMNS} FROM ssf_tx_streams s WHERE status = 'enabled' AND next_try <= $1 \
             AND (lease_owner IS NULL OR lease_owner = $2 OR lease_until < $1) \
             AND EXISTS (SELECT 1 FROM ssf_tx_queue q WHERE q.stream_id = s.stream_id) \
             ORDER BY next_try, stream_id LIMIT 100"
        )))
        .bind(to_i64(now_ms))
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stream_of).collect()
    }

    /// Takes the lease of a stream's pushes for `owner` until `until_ms`
    /// unless another controller holds it; whether taken.
    pub async fn ssf_tx_lease(
        &self,
        stream_id: &str,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE ssf_tx_streams SET lease_owner = $1, lease_until = $2 WHERE stream_id = $3 \
             AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until < $4)",
        )
        .bind(owner)
        .bind(to_i64(until_ms))
        .bind(stream_id)
        .bind(to_i64(now_ms))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Gives a stream's lease back.
    pub async fn ssf_tx_release(&self, stream_id: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE ssf_tx_streams SET lease_owner = NULL, lease_until = 0 \
             WHERE stream_id = $1 AND lease_owner = $2",
        )
        .bind(stream_id)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Reads up to `limit` changes after the transmitter's cursor, lets
    /// `plan` derive the SETs, enqueues them, and moves the cursor — in
    /// one transaction under the cursor's row lock.
    pub async fn ssf_tx_fan_out(
        &self,
        limit: usize,
        max_queue: u64,
        now: u64,
        echo_window: u64,
        plan: impl FnOnce(&FanOutInput) -> FanOutPlan,
    ) -> Result<FanOut, StoreError> {
        // Read first, without a lock: an idle transmitter takes no write
        // lock (SQLite has one writer, and the intake needs it).
        let row = sqlx::query(
            "SELECT c.seq, h.head FROM ssf_tx_cursor c, log_head h WHERE c.id = 1 AND h.id = 1",
        )
        .fetch_one(&self.pool)
        .await?;
        let (seen, head): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        if seen >= head {
            return Ok(FanOut::default());
        }
        let mut tx = self.pool.begin().await?;
        let cursor: i64 =
            sqlx::query("UPDATE ssf_tx_cursor SET seq = seq WHERE id = 1 RETURNING seq")
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
        let streams: i64 =
            sqlx::query("SELECT COUNT(*) FROM ssf_tx_streams WHERE status <> 'disabled'")
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
        if streams == 0 {
            // Nobody to tell: the cursor skips to the head unread.
            sqlx::query(
                "UPDATE ssf_tx_cursor SET seq = (SELECT head FROM log_head WHERE id = 1) WHERE id = 1",
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(FanOut::default());
        }
        let rows =
            sqlx::query("SELECT seq, body FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(cursor)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&mut *tx)
                .await?;
        let mut input = FanOutInput {
            now,
            ..FanOutInput::default()
        };
        for row in &rows {
            let seq = to_u64(row.try_get(0)?);
            let body: String = row.try_get(1)?;
            // A change of a later build reads as `Unknown`; one that does
            // not parse at all is skipped rather than stopping the stream.
            if let Ok(change) = serde_json::from_str::<Change>(&body) {
                input.changes.push((seq, change));
            }
        }
        let Some(last) = rows.last().map(|r| r.try_get::<i64, _>(0)).transpose()? else {
            tx.rollback().await?;
            return Ok(FanOut::default());
        };
        input.gap = rows
            .first()
            .map(|r| r.try_get::<i64, _>(0))
            .transpose()?
            .is_some_and(|first| first > cursor + 1);
        let mut users: Vec<UserId> = Vec::new();
        for (_, change) in &input.changes {
            match change {
                Change::SessionRevoked { session, .. } => {
                    if let Some(row) =
                        sqlx::query("SELECT user_key FROM session_baselines WHERE session = $1")
                            .bind(session.to_string())
                            .fetch_optional(&mut *tx)
                            .await?
                        && let Some(user) = row
                            .try_get::<Option<String>, _>(0)?
                            .as_deref()
                            .and_then(UserId::parse)
                    {
                        input.session_users.insert(*session, user);
                        users.push(user);
                    }
                    if let Some(row) = sqlx::query(
                        "SELECT rule, reasons, user_key FROM detections WHERE session = $1 AND action = 'revoke' \
                         AND enforced = 1 ORDER BY at DESC LIMIT 1",
                    )
                    .bind(session.to_string())
                    .fetch_optional(&mut *tx)
                    .await?
                    {
                        input
                            .detections
                            .insert(*session, (row.try_get(0)?, row.try_get(1)?));
                        if let Some(user) = row
                            .try_get::<Option<String>, _>(2)?
                            .as_deref()
                            .and_then(UserId::parse)
                        {
                            input.session_users.entry(*session).or_insert(user);
                            users.push(user);
                        }
                    }
                }
                Change::UserRevoked { user, .. } => users.push(*user),
                Change::UserRisk { user, .. } | Change::UserDetections { user, .. } => {
                    users.push(*user);
                    if input.risk.contains_key(user) {
                        continue;
                    }
                    let d = sqlx::query(
                        "SELECT count FROM user_detections WHERE user_key = $1 AND until > $2",
                    )
                    .bind(user.to_string())
                    .bind(to_i64(now))
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|r| r.try_get::<i64, _>(0))
                    .transpose()?
                    .map_or(0, to_u64);
                    let p = sqlx::query(
                        "SELECT points FROM user_risk WHERE user_key = $1 AND until > $2",
                    )
                    .bind(user.to_string())
                    .bind(to_i64(now))
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|r| r.try_get::<i64, _>(0))
                    .transpose()?
                    .map_or(0, to_u64);
                    input.risk.insert(*user, (d, p));
                    if let Some(row) =
                        sqlx::query("SELECT level FROM ssf_tx_user_levels WHERE user_key = $1")
                            .bind(user.to_string())
                            .fetch_optional(&mut *tx)
                            .await?
                    {
                        input.levels.insert(*user, row.try_get(0)?);
                    }
                }
                _ => {}
            }
        }
        users.sort_unstable();
        users.dedup();
        for user in users {
            if let Some(row) = sqlx::query("SELECT name FROM user_names WHERE user_key = $1")
                .bind(user.to_string())
                .fetch_optional(&mut *tx)
                .await?
            {
                input.names.insert(user, row.try_get(0)?);
            }
        }
        read_streams(&mut tx, &mut input).await?;
        if echo_window > 0 {
            let since = to_i64(now.saturating_sub(echo_window));
            sqlx::query("DELETE FROM ssf_tx_recent WHERE at < $1")
                .bind(since)
                .execute(&mut *tx)
                .await?;
            for row in sqlx::query("SELECT stream_id, subject, at FROM ssf_tx_recent")
                .fetch_all(&mut *tx)
                .await?
            {
                input
                    .recent
                    .insert((row.try_get(0)?, row.try_get(1)?), to_u64(row.try_get(2)?));
            }
        }
        let planned = plan(&input);
        let mut done = FanOut {
            changes: input.changes.len(),
            ..FanOut::default()
        };
        for (stream, jti, claims) in &planned.enqueue {
            let dropped = enqueue_in(&mut tx, stream, jti, claims, max_queue).await?;
            if dropped > 0 {
                *done.dropped.entry(stream.clone()).or_default() += dropped;
            }
            done.enqueued += 1;
        }
        for (user, level) in &planned.levels {
            sqlx::query(
                "INSERT INTO ssf_tx_user_levels (user_key, level, at) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_key) DO UPDATE SET level = excluded.level, at = excluded.at",
            )
            .bind(user.to_string())
            .bind(level)
            .bind(to_i64(now))
            .execute(&mut *tx)
            .await?;
        }
        for (stream, subject) in &planned.recent {
            sqlx::query(
                "INSERT INTO ssf_tx_recent (stream_id, subject, at) VALUES ($1, $2, $3) \
                 ON CONFLICT (stream_id, subject) DO UPDATE SET at = excluded.at",
            )
            .bind(stream)
            .bind(subject)
            .bind(to_i64(now))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE ssf_tx_cursor SET seq = $1 WHERE id = 1")
            .bind(last)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done)
    }
}

/// What an operator's confirmed compromise did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compromise {
    /// The users the detection names, now revoked.
    pub users: Vec<UserId>,
    /// Whether it was marked now (`false`: marked before; nothing done
    /// again).
    pub changed: bool,
    /// The log's head after.
    pub head: u64,
    /// SETs enqueued.
    pub enqueued: usize,
}

impl Store {
    /// Marks the detection `reference` a confirmed compromise, revokes
    /// every user it names, and enqueues what `plan` makes of those users
    /// (given the streams, subjects and names, as a fan-out is), in one
    /// transaction; `None` when no detection has that reference.
    pub async fn confirm_compromise(
        &self,
        reference: &str,
        now: u64,
        max_queue: u64,
        plan: impl FnOnce(&FanOutInput, &[UserId]) -> FanOutPlan,
    ) -> Result<Option<Compromise>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE log_head SET head = head WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(
            "SELECT user_key, confirmed_compromise FROM detections WHERE reference = $1 ORDER BY node",
        )
        .bind(reference)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut users = Vec::new();
        let mut marked = false;
        for row in &rows {
            marked |= row.try_get::<Option<i64>, _>(1)?.is_some();
            if let Some(user) = row
                .try_get::<Option<String>, _>(0)?
                .as_deref()
                .and_then(UserId::parse)
                && !users.contains(&user)
            {
                users.push(user);
            }
        }
        let head_now =
            |row: sqlx::any::AnyRow| -> Result<u64, StoreError> { Ok(to_u64(row.try_get(0)?)) };
        if marked {
            let head = head_now(
                sqlx::query("SELECT head FROM log_head WHERE id = 1")
                    .fetch_one(&mut *tx)
                    .await?,
            )?;
            tx.commit().await?;
            return Ok(Some(Compromise {
                users,
                changed: false,
                head,
                enqueued: 0,
            }));
        }
        sqlx::query("UPDATE detections SET confirmed_compromise = $1 WHERE reference = $2")
            .bind(to_i64(now))
            .bind(reference)
            .execute(&mut *tx)
            .await?;
        let mut head = head_now(
            sqlx::query("SELECT head FROM log_head WHERE id = 1")
                .fetch_one(&mut *tx)
                .await?,
        )?;
        for user in &users {
            head = revoke_user_in(&mut tx, *user, now, now).await?;
        }
        let mut input = FanOutInput::default();
        for user in &users {
            if let Some(row) = sqlx::query("SELECT name FROM user_names WHERE user_key = $1")
                .bind(user.to_string())
                .fetch_optional(&mut *tx)
                .await?
            {
                input.names.insert(*user, row.try_get(0)?);
            }
        }
        read_streams(&mut tx, &mut input).await?;
        let planned = plan(&input, &users);
        for (stream, jti, claims) in &planned.enqueue {
            enqueue_in(&mut tx, stream, jti, claims, max_queue).await?;
        }
        tx.commit().await?;
        Ok(Some(Compromise {
            users,
            changed: true,
            head,
            enqueued: planned.enqueue.len(),
        }))
    }
}

/// The streams not disabled and their subjects, into `input`.
async fn read_streams(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    input: &mut FanOutInput,
) -> Result<(), StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {STREAM_COLUMNS} FROM ssf_tx_streams WHERE status <> 'disabled' ORDER BY stream_id"
    )))
    .fetch_all(&mut **tx)
    .await?;
    input.streams = rows.iter().map(stream_of).collect::<Result<_, _>>()?;
    for row in sqlx::query("SELECT stream_id, subject, included FROM ssf_tx_subjects")
        .fetch_all(&mut **tx)
        .await?
    {
        input
            .subjects
            .entry(row.try_get(0)?)
            .or_default()
            .insert(row.try_get(1)?, row.try_get::<i64, _>(2)? != 0);
    }
    Ok(())
}

/// Enqueues inside `tx`, dropping the oldest beyond `max_queue`; how
/// many were dropped.
async fn enqueue_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    stream_id: &str,
    jti: &str,
    claims: &str,
    max_queue: u64,
) -> Result<u64, StoreError> {
    let Some(row) = sqlx::query(
        "UPDATE ssf_tx_streams SET next_seq = next_seq + 1 WHERE stream_id = $1 RETURNING next_seq",
    )
    .bind(stream_id)
    .fetch_optional(&mut **tx)
    .await?
    else {
        // Deleted meanwhile.
        return Ok(0);
    };
    let seq: i64 = row.try_get(0)?;
    sqlx::query(
        "INSERT INTO ssf_tx_queue (stream_id, seq, jti, claims, sent) VALUES ($1, $2, $3, $4, 0)",
    )
    .bind(stream_id)
    .bind(seq)
    .bind(jti)
    .bind(claims)
    .execute(&mut **tx)
    .await?;
    // Numbers are contiguous per stream: everything at or below
    // `seq - max_queue` is beyond the bound.
    let dropped = sqlx::query("DELETE FROM ssf_tx_queue WHERE stream_id = $1 AND seq <= $2")
        .bind(stream_id)
        .bind(seq - to_i64(max_queue))
        .execute(&mut **tx)
        .await?
        .rows_affected();
    if dropped > 0 {
        sqlx::query("UPDATE ssf_tx_streams SET dropped = dropped + $1 WHERE stream_id = $2")
            .bind(to_i64(dropped))
            .bind(stream_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(dropped)
}
