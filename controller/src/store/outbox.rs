//! What the outbox keeps (`docs/webhooks.md`, Delivery): each outbound
//! call owed, claimed by one worker at a time through a lease, and the
//! universal logouts with their targets' results.
//!
//! A row is claimed by one `UPDATE … RETURNING` that sets its lease; on
//! PostgreSQL the rows are picked `FOR UPDATE SKIP LOCKED`, so that
//! replicas claiming at once take different rows rather than queueing.
//! A claim counts the attempt: a worker that dies mid-delivery leaves the
//! row to the next claim once its lease is over, one attempt spent.

use sqlx::Row;

use super::{Backend, Store, StoreError, to_i64, to_u64};

/// An outbound call as enqueued.
#[derive(Debug, Clone)]
pub struct NewDelivery<'a> {
    /// Its id (the receiver's deduplication key).
    pub id: &'a str,
    /// The configured endpoint (`webhook:<name>`, `logout:<app>`).
    pub endpoint: &'a str,
    /// What is sent (`webhook`, `global_token_revocation`,
    /// `backchannel_logout`).
    pub kind: &'a str,
    /// The payload.
    pub body: &'a str,
    /// The universal logout it serves.
    pub logout_id: Option<&'a str>,
}

/// What became of an enqueued call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Waiting for delivery.
    Pending,
    /// Its id was enqueued before (delivered, pending or dead): nothing
    /// added.
    Duplicate,
    /// The endpoint's queue was full: stored straight as a dead letter.
    Overflow,
}

/// A claimed call, to be attempted now.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Its id.
    pub id: String,
    /// Its endpoint.
    pub endpoint: String,
    /// What is sent.
    pub kind: String,
    /// The payload.
    pub body: String,
    /// The universal logout it serves.
    pub logout_id: Option<String>,
    /// When it was enqueued (ms).
    pub created_ms: u64,
    /// Attempts made, this one included.
    pub attempts: u64,
}

/// A dead letter, as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its id.
    pub id: String,
    /// Its endpoint.
    pub endpoint: String,
    /// What it was.
    pub kind: String,
    /// The universal logout it served.
    pub logout_id: Option<String>,
    /// When it was enqueued (ms).
    pub created_ms: u64,
    /// When it was given up (ms).
    pub dead_ms: u64,
    /// Attempts made.
    pub attempts: u64,
    /// Why the last attempt failed (or why it was never attempted).
    pub last_error: String,
}

/// The result of one universal logout target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetResult {
    /// The target's name (`nodes`, an app's name, …).
    pub target: String,
    /// Its kind.
    pub kind: String,
    /// `pending`, `delivered`, `failed`, `not_supported`.
    pub state: String,
    /// The last error, or what was done.
    pub detail: Option<String>,
    /// Attempts made.
    pub attempts: u64,
    /// When it last changed (seconds).
    pub updated: u64,
}

/// A universal logout as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRecord {
    /// Its id.
    pub id: String,
    /// The user's key (16 hex digits).
    pub user_key: String,
    /// Who asked (`admin_api`, …).
    pub by: String,
    /// When (seconds).
    pub created: u64,
    /// The change that revoked the user on every node.
    pub seq: u64,
    /// Each target's result.
    pub targets: Vec<TargetResult>,
}

/// Claims on PostgreSQL: other replicas' picked rows are skipped.
const CLAIM_POSTGRES: &str = "UPDATE outbox SET lease_ms = $1, lease_owner = $2, attempts = attempts + 1 \
     WHERE id IN (SELECT id FROM outbox WHERE endpoint = $3 AND state = 'pending' \
     AND next_ms <= $4 AND lease_ms <= $4 ORDER BY next_ms LIMIT $5 FOR UPDATE SKIP LOCKED) \
     RETURNING id, endpoint, kind, body, logout_id, created_ms, attempts";

/// Claims on SQLite: one writer at a time, so the statement is the lock.
const CLAIM_SQLITE: &str = "UPDATE outbox SET lease_ms = $1, lease_owner = $2, attempts = attempts + 1 \
     WHERE id IN (SELECT id FROM outbox WHERE endpoint = $3 AND state = 'pending' \
     AND next_ms <= $4 AND lease_ms <= $4 ORDER BY next_ms LIMIT $5) \
     RETURNING id, endpoint, kind, body, logout_id, created_ms, attempts";

impl Store {
    /// Enqueues `d` unless its id is held already; when the endpoint has
    /// `max_queue` calls pending, it is stored as a dead letter instead
    /// (the count is read, not locked: concurrent enqueues may pass the
    /// bound by their number).
    pub async fn enqueue(
        &self,
        d: &NewDelivery<'_>,
        max_queue: u64,
        now_ms: u64,
    ) -> Result<Enqueued, StoreError> {
        let pending: i64 =
            sqlx::query("SELECT COUNT(*) FROM outbox WHERE endpoint = $1 AND state = 'pending'")
                .bind(d.endpoint)
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?;
        let full = to_u64(pending) >= max_queue;
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO outbox (id, endpoint, kind, body, logout_id, created_ms, state, attempts, \
             next_ms, lease_ms, lease_owner, last_error, done_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $6, 0, '', $8, $9) ON CONFLICT (id) DO NOTHING",
        )
        .bind(d.id)
        .bind(d.endpoint)
        .bind(d.kind)
        .bind(d.body)
        .bind(d.logout_id)
        .bind(to_i64(now_ms))
        .bind(if full { "dead" } else { "pending" })
        .bind(full.then(|| format!("queue full: {max_queue} calls pending for this endpoint")))
        .bind(full.then(|| to_i64(now_ms)))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(Enqueued::Duplicate);
        }
        if full && let Some(logout) = d.logout_id {
            set_target(
                &mut tx,
                logout,
                d.endpoint,
                "failed",
                Some("queue full; dead-lettered"),
                now_ms / 1000,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(if full {
            Enqueued::Overflow
        } else {
            Enqueued::Pending
        })
    }

    /// Claims up to `limit` calls of `endpoint` due at `now_ms` for
    /// `owner` until `lease_ms`, counting an attempt on each.
    pub async fn claim(
        &self,
        endpoint: &str,
        limit: usize,
        owner: &str,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Vec<Claimed>, StoreError> {
        let sql = match self.backend {
            Backend::Postgres => CLAIM_POSTGRES,
            Backend::Sqlite => CLAIM_SQLITE,
        };
        let rows = sqlx::query(sql)
            .bind(to_i64(lease_ms))
            .bind(owner)
            .bind(endpoint)
            .bind(to_i64(now_ms))
            .bind(i64::try_from(limit).unwrap_or(0))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Claimed {
                    id: r.try_get(0)?,
                    endpoint: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    body: r.try_get(3)?,
                    logout_id: r.try_get(4)?,
                    created_ms: to_u64(r.try_get(5)?),
                    attempts: to_u64(r.try_get(6)?),
                })
            })
            .collect()
    }

    /// Records a delivery: the row is kept as delivered (its id held for
    /// deduplication until [`Store::expire_outbox`]), its logout target
    /// marked. `false` when `owner` no longer holds the row (its lease
    /// ran out and another worker took it): nothing is changed then.
    pub async fn delivered(
        &self,
        c: &Claimed,
        owner: &str,
        detail: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE outbox SET state = 'delivered', done_ms = $1, lease_ms = 0, last_error = NULL \
             WHERE id = $2 AND lease_owner = $3 AND state = 'pending'",
        )
        .bind(to_i64(now_ms))
        .bind(&c.id)
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 1
            && let Some(logout) = &c.logout_id
        {
            set_target_attempts(
                &mut tx,
                logout,
                &c.endpoint,
                "delivered",
                Some(detail),
                c.attempts,
                now_ms / 1000,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Records a failed attempt: tried again at `retry_at_ms`, or, with
    /// `None`, given up as a dead letter.
    pub async fn failed(
        &self,
        c: &Claimed,
        owner: &str,
        error: &str,
        retry_at_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let n = match retry_at_ms {
            Some(at) => sqlx::query(
                "UPDATE outbox SET next_ms = $1, lease_ms = 0, last_error = $2 \
                     WHERE id = $3 AND lease_owner = $4 AND state = 'pending'",
            )
            .bind(to_i64(at))
            .bind(error)
            .bind(&c.id)
            .bind(owner)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
            None => sqlx::query(
                "UPDATE outbox SET state = 'dead', done_ms = $1, lease_ms = 0, last_error = $2 \
                     WHERE id = $3 AND lease_owner = $4 AND state = 'pending'",
            )
            .bind(to_i64(now_ms))
            .bind(error)
            .bind(&c.id)
            .bind(owner)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
        };
        if n == 1
            && let Some(logout) = &c.logout_id
        {
            let detail = match retry_at_ms {
                Some(_) => format!("{error} (will retry)"),
                None => format!("{error} (dead-lettered)"),
            };
            set_target_attempts(
                &mut tx,
                logout,
                &c.endpoint,
                "failed",
                Some(&detail),
                c.attempts,
                now_ms / 1000,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Dead letters, newest first, `limit` from `offset`, and whether
    /// there are more.
    pub async fn dead_letters(
        &self,
        limit: usize,
        offset: u64,
    ) -> Result<(Vec<DeadLetter>, bool), StoreError> {
        let rows = sqlx::query(
            "SELECT id, endpoint, kind, logout_id, created_ms, done_ms, attempts, last_error \
             FROM outbox WHERE state = 'dead' ORDER BY done_ms DESC, id LIMIT $1 OFFSET $2",
        )
        .bind(i64::try_from(limit).unwrap_or(0) + 1)
        .bind(to_i64(offset))
        .fetch_all(&self.pool)
        .await?;
        let more = rows.len() > limit;
        let list = rows
            .iter()
            .take(limit)
            .map(|r| {
                Ok(DeadLetter {
                    id: r.try_get(0)?,
                    endpoint: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    logout_id: r.try_get(3)?,
                    created_ms: to_u64(r.try_get(4)?),
                    dead_ms: to_u64(r.try_get::<Option<i64>, _>(5)?.unwrap_or(0)),
                    attempts: to_u64(r.try_get(6)?),
                    last_error: r.try_get::<Option<String>, _>(7)?.unwrap_or_default(),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok((list, more))
    }

    /// Puts dead letter `id` back in its queue, as new: due now, no
    /// attempts, its age from now. `None` when no dead letter has that id;
    /// else its endpoint.
    pub async fn retry_dead(&self, id: &str, now_ms: u64) -> Result<Option<String>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE outbox SET state = 'pending', attempts = 0, created_ms = $1, next_ms = $1, \
             lease_ms = 0, done_ms = NULL WHERE id = $2 AND state = 'dead' \
             RETURNING endpoint, logout_id",
        )
        .bind(to_i64(now_ms))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let endpoint: String = row.try_get(0)?;
        if let Some(logout) = row.try_get::<Option<String>, _>(1)? {
            set_target(
                &mut tx,
                &logout,
                &endpoint,
                "pending",
                Some("retried by the admin API"),
                now_ms / 1000,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Some(endpoint))
    }

    /// Deletes dead letter `id`; whether there was one.
    pub async fn delete_dead(&self, id: &str) -> Result<bool, StoreError> {
        Ok(
            sqlx::query("DELETE FROM outbox WHERE id = $1 AND state = 'dead'")
                .bind(id)
                .execute(&self.pool)
                .await?
                .rows_affected()
                == 1,
        )
    }

    /// Calls pending for `endpoint`.
    pub async fn pending(&self, endpoint: &str) -> Result<u64, StoreError> {
        let n: i64 =
            sqlx::query("SELECT COUNT(*) FROM outbox WHERE endpoint = $1 AND state = 'pending'")
                .bind(endpoint)
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?;
        Ok(to_u64(n))
    }

    /// Deletes delivered calls done before `delivered_before_ms`, and of
    /// each endpoint's dead letters all but the newest `keep_dead`; how
    /// many.
    pub async fn expire_outbox(
        &self,
        delivered_before_ms: u64,
        endpoints: &[String],
        keep_dead: u64,
    ) -> Result<u64, StoreError> {
        let mut n = sqlx::query("DELETE FROM outbox WHERE state = 'delivered' AND done_ms < $1")
            .bind(to_i64(delivered_before_ms))
            .execute(&self.pool)
            .await?
            .rows_affected();
        for endpoint in endpoints {
            let cutoff = sqlx::query(
                "SELECT done_ms FROM outbox WHERE endpoint = $1 AND state = 'dead' \
                 ORDER BY done_ms DESC LIMIT 1 OFFSET $2",
            )
            .bind(endpoint)
            .bind(to_i64(keep_dead.saturating_sub(1)))
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = cutoff {
                let cutoff: i64 = row.try_get::<Option<i64>, _>(0)?.unwrap_or(0);
                n += sqlx::query(
                    "DELETE FROM outbox WHERE endpoint = $1 AND state = 'dead' AND done_ms < $2",
                )
                .bind(endpoint)
                .bind(cutoff)
                .execute(&self.pool)
                .await?
                .rows_affected();
            }
        }
        Ok(n)
    }

    // === universal logout ===

    /// Records a universal logout and its targets' first results.
    pub async fn record_logout(
        &self,
        record: &LogoutRecord,
        deliveries: &[NewDelivery<'_>],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO logouts (id, user_key, by_whom, created, seq) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&record.id)
        .bind(&record.user_key)
        .bind(&record.by)
        .bind(to_i64(record.created))
        .bind(to_i64(record.seq))
        .execute(&mut *tx)
        .await?;
        for t in &record.targets {
            sqlx::query(
                "INSERT INTO logout_targets (logout_id, target, kind, state, detail, attempts, updated) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&record.id)
            .bind(&t.target)
            .bind(&t.kind)
            .bind(&t.state)
            .bind(&t.detail)
            .bind(to_i64(t.attempts))
            .bind(to_i64(t.updated))
            .execute(&mut *tx)
            .await?;
        }
        for d in deliveries {
            // A logout's calls are never refused for a full queue: they
            // are few (one per app) and each is an operator's action.
            sqlx::query(
                "INSERT INTO outbox (id, endpoint, kind, body, logout_id, created_ms, state, attempts, \
                 next_ms, lease_ms, lease_owner) VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $6, 0, '')",
            )
            .bind(d.id)
            .bind(d.endpoint)
            .bind(d.kind)
            .bind(d.body)
            .bind(d.logout_id)
            .bind(to_i64(now_ms))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A universal logout with its targets.
    pub async fn logout(&self, id: &str) -> Result<Option<LogoutRecord>, StoreError> {
        let Some(row) =
            sqlx::query("SELECT id, user_key, by_whom, created, seq FROM logouts WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
        else {
            return Ok(None);
        };
        let mut record = LogoutRecord {
            id: row.try_get(0)?,
            user_key: row.try_get(1)?,
            by: row.try_get(2)?,
            created: to_u64(row.try_get(3)?),
            seq: to_u64(row.try_get(4)?),
            targets: Vec::new(),
        };
        let rows = sqlx::query(
            "SELECT target, kind, state, detail, attempts, updated FROM logout_targets \
             WHERE logout_id = $1 ORDER BY target",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            record.targets.push(TargetResult {
                target: r.try_get(0)?,
                kind: r.try_get(1)?,
                state: r.try_get(2)?,
                detail: r.try_get(3)?,
                attempts: to_u64(r.try_get(4)?),
                updated: to_u64(r.try_get(5)?),
            });
        }
        Ok(Some(record))
    }

    /// The ids of a user's universal logouts, newest first (at most
    /// `limit`).
    pub async fn logouts_of(
        &self,
        user_key: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM logouts WHERE user_key = $1 ORDER BY created DESC, id LIMIT $2",
        )
        .bind(user_key)
        .bind(i64::try_from(limit).unwrap_or(0))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect::<Result<Vec<_>, StoreError>>()
    }
}

async fn set_target(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    logout: &str,
    endpoint: &str,
    state: &str,
    detail: Option<&str>,
    now: u64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE logout_targets SET state = $1, detail = $2, updated = $3 \
         WHERE logout_id = $4 AND target = $5",
    )
    .bind(state)
    .bind(detail)
    .bind(to_i64(now))
    .bind(logout)
    .bind(target_of(endpoint))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn set_target_attempts(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    logout: &str,
    endpoint: &str,
    state: &str,
    detail: Option<&str>,
    attempts: u64,
    now: u64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE logout_targets SET state = $1, detail = $2, attempts = $3, updated = $4 \
         WHERE logout_id = $5 AND target = $6",
    )
    .bind(state)
    .bind(detail)
    .bind(to_i64(attempts))
    .bind(to_i64(now))
    .bind(logout)
    .bind(target_of(endpoint))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A logout target's name from its outbox endpoint (`logout:<app>`).
fn target_of(endpoint: &str) -> &str {
    endpoint.strip_prefix("logout:").unwrap_or(endpoint)
}

impl Store {
    /// Deletes what the outbox keeps of an erased user: their logouts,
    /// their targets' results, and the calls of those logouts not yet
    /// delivered (they carry the user's name). How many logouts.
    pub async fn forget_logouts(&self, user_key: &str) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM outbox WHERE logout_id IN (SELECT id FROM logouts WHERE user_key = $1)",
        )
        .bind(user_key)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM logout_targets WHERE logout_id IN (SELECT id FROM logouts WHERE user_key = $1)",
        )
        .bind(user_key)
        .execute(&mut *tx)
        .await?;
        let n = sqlx::query("DELETE FROM logouts WHERE user_key = $1")
            .bind(user_key)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n)
    }
}

impl Store {
    /// Gives up the calls pending for an endpoint not in `configured`
    /// (removed from the config since they were made): dead letters, to
    /// be deleted or retried once it is back. How many.
    pub async fn orphans_dead(
        &self,
        configured: &[String],
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let rows = sqlx::query("SELECT DISTINCT endpoint FROM outbox WHERE state = 'pending'")
            .fetch_all(&self.pool)
            .await?;
        let mut n = 0;
        for row in rows {
            let endpoint: String = row.try_get(0)?;
            if configured.contains(&endpoint) {
                continue;
            }
            n += sqlx::query(
                "UPDATE outbox SET state = 'dead', done_ms = $1, lease_ms = 0, \
                 last_error = 'endpoint no longer configured' \
                 WHERE endpoint = $2 AND state = 'pending' AND lease_ms <= $1",
            )
            .bind(to_i64(now_ms))
            .bind(&endpoint)
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        Ok(n)
    }
}
