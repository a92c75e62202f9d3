//! The controller's store: the change log and the state it builds, in
//! SQLite (one file, the default) or PostgreSQL (several replicas), through
//! one code path on sqlx's `Any` driver and one schema
//! (`controller/migrations/`), applied at start.
//!
//! **Contiguous, commit-ordered sequence numbers.** Every writing
//! transaction first updates the single row of `log_head` (`head = head +
//! n`), which locks it until commit: no two transactions hold numbers at
//! once, so numbers are handed out in commit order, and a transaction that
//! rolls back gives its numbers back with it. A reader that sees change `n`
//! committed therefore sees every change below `n`, and a gap in what a node
//! receives always means a loss — never a number skipped or committed late,
//! which a database sequence would allow.

use std::str::FromStr;

use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyPool, Row, Transaction};
use vigil_fleet::{Change, EventAck, NodeEvent, NodeEventKind, SessionId, UserId};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or could not be reached.
    #[error("store: {0}")]
    Db(#[from] sqlx::Error),
    /// Applying the schema failed.
    #[error("store migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored record could not be read back.
    #[error("store record {seq}: {problem}")]
    Record {
        /// The change's sequence number.
        seq: u64,
        /// What is wrong with it.
        problem: String,
    },
}

/// Which database the store is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One SQLite file.
    Sqlite,
    /// PostgreSQL, possibly shared by several controllers.
    Postgres,
}

/// The log's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The newest sequence committed (0: none yet).
    pub head: u64,
    /// The oldest sequence still in the log.
    pub oldest: u64,
}

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Store {
    /// Opens the store at `url` (`sqlite://PATH`, created if missing, or
    /// `postgres://…`) and applies the schema.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        let url = match backend {
            Backend::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_owned(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                // One writer at a time anyway; readers share the file.
                Backend::Sqlite => 4,
                Backend::Postgres => 16,
            })
            .connect(&url)
            .await?;
        if backend == Backend::Sqlite {
            // Readers do not wait for the writer, and a commit is durable.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        MIGRATOR.run(&pool).await?;
        Ok(Store { pool, backend })
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The log's bounds now.
    pub async fn bounds(&self) -> Result<Bounds, StoreError> {
        let row = sqlx::query("SELECT head, oldest FROM log_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(Bounds {
            head: to_u64(row.try_get(0)?),
            oldest: to_u64(row.try_get(1)?),
        })
    }

    /// Appends `changes` in one transaction; returns the sequence of the
    /// last (the head), or the head unchanged for none.
    pub async fn append(&self, changes: &[Change], now: u64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let head = append_in(&mut tx, changes, now).await?;
        tx.commit().await?;
        Ok(head)
    }

    /// Takes a node's events: each not taken before (by node and id)
    /// becomes a change, all in one transaction. Returns what was taken and
    /// the head after.
    pub async fn take_events(
        &self,
        node: &str,
        events: &[NodeEvent],
        now: u64,
    ) -> Result<(EventAck, u64), StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut ack = EventAck {
            accepted: 0,
            duplicates: 0,
        };
        let mut changes = Vec::new();
        for event in events {
            let inserted = sqlx::query(
                "INSERT INTO node_events (node, id, at) VALUES ($1, $2, $3) \
                 ON CONFLICT (node, id) DO NOTHING",
            )
            .bind(node)
            .bind(event.id.as_str())
            .bind(to_i64(now))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                ack.duplicates += 1;
                continue;
            }
            ack.accepted += 1;
            match &event.kind {
                // A node vouches for a session bound to a user; a cookie
                // it saw only as a replay could have been made up.
                NodeEventKind::SessionRevoked {
                    session, user, at, ..
                } => {
                    changes.push(Change::SessionRevoked {
                        session: *session,
                        at: *at,
                        vouched: user.is_some(),
                    });
                }
            }
        }
        let head = append_in(&mut tx, &changes, now).await?;
        tx.commit().await?;
        Ok((ack, head))
    }

    /// Up to `limit` changes after `after`, in order.
    pub async fn since(&self, after: u64, limit: usize) -> Result<Vec<(u64, Change)>, StoreError> {
        let rows =
            sqlx::query("SELECT seq, body FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(to_i64(after))
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| {
                let seq = to_u64(row.try_get(0)?);
                let body: String = row.try_get(1)?;
                let change = serde_json::from_str(&body).map_err(|e| StoreError::Record {
                    seq,
                    problem: e.to_string(),
                })?;
                Ok((seq, change))
            })
            .collect()
    }

    /// The whole state as changes, as of the returned sequence, read in
    /// one consistent view.
    pub async fn snapshot(&self) -> Result<(u64, Vec<Change>), StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        let head = to_u64(
            sqlx::query("SELECT head FROM log_head WHERE id = 1")
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?,
        );
        let mut out = Vec::new();
        for row in sqlx::query("SELECT session, at, vouched FROM revoked_sessions ORDER BY seq")
            .fetch_all(&mut *tx)
            .await?
        {
            let session: String = row.try_get(0)?;
            let Some(session) = SessionId::parse(&session) else {
                continue;
            };
            out.push(Change::SessionRevoked {
                session,
                at: to_u64(row.try_get(1)?),
                vouched: row.try_get::<i64, _>(2)? != 0,
            });
        }
        for row in sqlx::query("SELECT user_key, at FROM revoked_users ORDER BY seq")
            .fetch_all(&mut *tx)
            .await?
        {
            let user: String = row.try_get(0)?;
            let Some(user) = UserId::parse(&user) else {
                continue;
            };
            out.push(Change::UserRevoked {
                user,
                at: to_u64(row.try_get(1)?),
            });
        }
        for row in sqlx::query("SELECT user_key, points, until, at FROM user_risk ORDER BY seq")
            .fetch_all(&mut *tx)
            .await?
        {
            let user: String = row.try_get(0)?;
            let Some(user) = UserId::parse(&user) else {
                continue;
            };
            out.push(Change::UserRisk {
                user,
                points: u8::try_from(row.try_get::<i64, _>(1)?).unwrap_or(100),
                until: to_u64(row.try_get(2)?),
                at: to_u64(row.try_get(3)?),
            });
        }
        tx.commit().await?;
        Ok((head, out))
    }

    /// Deletes the log's changes older than the newest `keep` and moves
    /// `oldest` up: a node further behind gets a snapshot. Returns how many
    /// were deleted.
    pub async fn compact(&self, keep: u64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("UPDATE log_head SET oldest = CASE WHEN head > $1 THEN head - $1 + 1 ELSE oldest END WHERE id = 1 RETURNING oldest")
            .bind(to_i64(keep))
            .fetch_one(&mut *tx)
            .await?;
        let oldest: i64 = row.try_get(0)?;
        let deleted = sqlx::query("DELETE FROM changes WHERE seq < $1")
            .bind(oldest)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted)
    }
}

/// The PostgreSQL channel every writing transaction notifies at commit,
/// with the new head as its payload.
pub const NOTIFY_CHANNEL: &str = "vigil_changes";

/// Log rows per `INSERT` statement: one round trip (and one statement to
/// plan) for many rows, well inside SQLite's and PostgreSQL's limits on
/// bound parameters (3 a row).
const ROWS_PER_INSERT: usize = 250;

/// Inserts the log rows of `changes`, numbered from `first`, a few hundred
/// to a statement.
async fn insert_log_rows(
    tx: &mut Transaction<'static, Any>,
    first: i64,
    changes: &[Change],
    now: u64,
) -> Result<(), StoreError> {
    let mut seq = first;
    for chunk in changes.chunks(ROWS_PER_INSERT) {
        let mut sql = String::from("INSERT INTO changes (seq, at, body) VALUES ");
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            let p = 3 * i;
            sql.push_str(&format!("(${}, ${}, ${})", p + 1, p + 2, p + 3));
        }
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for change in chunk {
            let body = serde_json::to_string(change).map_err(|e| StoreError::Record {
                seq: to_u64(seq),
                problem: e.to_string(),
            })?;
            query = query.bind(seq).bind(to_i64(now)).bind(body);
            seq += 1;
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Appends inside `tx`: the head row first (taking its lock), then each
/// change and the state it builds.
async fn append_in(
    tx: &mut Transaction<'static, Any>,
    changes: &[Change],
    now: u64,
) -> Result<u64, StoreError> {
    let n = i64::try_from(changes.len()).unwrap_or(i64::MAX);
    let head: i64 = sqlx::query("UPDATE log_head SET head = head + $1 WHERE id = 1 RETURNING head")
        .bind(n)
        .fetch_one(&mut **tx)
        .await?
        .try_get(0)?;
    let first = head - n + 1;
    insert_log_rows(tx, first, changes, now).await?;
    if n > 0 && tx.backend_name() == "PostgreSQL" {
        // Delivered at commit, to every replica listening (`crate::tail`).
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(NOTIFY_CHANNEL)
            .bind(head.to_string())
            .execute(&mut **tx)
            .await?;
    }
    for (seq, change) in (first..).zip(changes) {
        match change {
            Change::SessionRevoked {
                session,
                at,
                vouched,
            } => {
                // A later vouched revocation of the same session vouches
                // for it; nothing takes a vouch back.
                sqlx::query(
                    "INSERT INTO revoked_sessions (session, at, seq, vouched) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (session) DO UPDATE SET vouched = CASE \
                     WHEN excluded.vouched > revoked_sessions.vouched THEN excluded.vouched \
                     ELSE revoked_sessions.vouched END",
                )
                .bind(session.to_string())
                .bind(to_i64(*at))
                .bind(seq)
                .bind(i64::from(*vouched))
                .execute(&mut **tx)
                .await?;
            }
            Change::UserRevoked { user, at } => {
                sqlx::query(
                    "INSERT INTO revoked_users (user_key, at, seq) VALUES ($1, $2, $3) \
                     ON CONFLICT (user_key) DO UPDATE SET at = excluded.at, seq = excluded.seq",
                )
                .bind(user.to_string())
                .bind(to_i64(*at))
                .bind(seq)
                .execute(&mut **tx)
                .await?;
            }
            Change::UserRisk {
                user, points: 0, ..
            } => {
                sqlx::query("DELETE FROM user_risk WHERE user_key = $1")
                    .bind(user.to_string())
                    .execute(&mut **tx)
                    .await?;
            }
            Change::UserRisk {
                user,
                points,
                until,
                at,
            } => {
                sqlx::query(
                    "INSERT INTO user_risk (user_key, points, until, at, seq) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (user_key) DO UPDATE SET points = excluded.points, \
                     until = excluded.until, at = excluded.at, seq = excluded.seq",
                )
                .bind(user.to_string())
                .bind(i64::from(*points))
                .bind(to_i64(*until))
                .bind(to_i64(*at))
                .bind(seq)
                .execute(&mut **tx)
                .await?;
            }
        }
    }
    Ok(to_u64(head))
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" => Ok(Backend::Postgres),
            other => Err(format!(
                "{other:?} is not a store; expected sqlite or postgres"
            )),
        }
    }
}
