//! Copying one store into another: backup (into a fresh SQLite file),
//! restore (back into an empty store), and moving from SQLite to
//! PostgreSQL (`vigil-controller copy FROM TO`, `docs/controller.md`).
//!
//! The source is read in one consistent view (a read transaction; on
//! PostgreSQL `REPEATABLE READ`), so a copy taken while the controller
//! runs is the store as of one moment: the change log with its numbers and
//! the state it built, node event ids, disabled nodes, rule bundles and
//! what nodes reported of them, nodes' daily budgets, the Shared Signals
//! transmitter's streams, queues and place in the log. The destination
//! must be empty (its schema is applied first) and is written in one
//! transaction: a copy that fails leaves it empty.

use sqlx::{Any, Row, Transaction};

use crate::store::{Backend, Store, StoreError};

/// A column's type: every column of the schema is one of these.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Int,
}

/// The tables copied, with their columns, parents before children.
const TABLES: &[(&str, &[(&str, Kind)])] = &[
    (
        "changes",
        &[("seq", Kind::Int), ("at", Kind::Int), ("body", Kind::Text)],
    ),
    (
        "revoked_sessions",
        &[
            ("session", Kind::Text),
            ("at", Kind::Int),
            ("seq", Kind::Int),
            ("vouched", Kind::Int),
        ],
    ),
    (
        "revoked_users",
        &[
            ("user_key", Kind::Text),
            ("at", Kind::Int),
            ("seq", Kind::Int),
        ],
    ),
    (
        "idp_sessions",
        &[
            ("idp_session", Kind::Text),
            ("session", Kind::Text),
            ("user_key", Kind::Text),
            ("at", Kind::Int),
        ],
    ),
    (
        "user_step_ups",
        &[
            ("user_key", Kind::Text),
            ("at", Kind::Int),
            ("seq", Kind::Int),
        ],
    ),
    (
        "user_risk",
        &[
            ("user_key", Kind::Text),
            ("points", Kind::Int),
            ("until", Kind::Int),
            ("at", Kind::Int),
            ("seq", Kind::Int),
        ],
    ),
    (
        "node_events",
        &[("node", Kind::Text), ("id", Kind::Text), ("at", Kind::Int)],
    ),
    (
        "session_baselines",
        &[
            ("session", Kind::Text),
            ("user_key", Kind::Text),
            ("first_seen", Kind::Int),
            ("record", Kind::Text),
            ("confirmed", Kind::Int),
            ("seq", Kind::Int),
            ("updated", Kind::Int),
            ("node", Kind::Text),
        ],
    ),
    (
        "session_bindings",
        &[
            ("session", Kind::Text),
            ("generation", Kind::Int),
            ("nonce", Kind::Int),
            ("previous_nonce", Kind::Int),
            ("issued_at", Kind::Int),
            ("presented_at", Kind::Int),
            ("compromised", Kind::Int),
            ("seq", Kind::Int),
            ("updated", Kind::Int),
        ],
    ),
    (
        "detections",
        &[
            ("node", Kind::Text),
            ("reference", Kind::Text),
            ("session", Kind::Text),
            ("user_key", Kind::Text),
            ("route", Kind::Text),
            ("rule", Kind::Text),
            ("action", Kind::Text),
            ("enforced", Kind::Int),
            ("score", Kind::Int),
            ("reasons", Kind::Text),
            ("at", Kind::Int),
            ("false_positive", Kind::Int),
            ("confirmed_compromise", Kind::Int),
            ("stepped_up", Kind::Int),
        ],
    ),
    (
        "user_detections",
        &[
            ("user_key", Kind::Text),
            ("count", Kind::Int),
            ("until", Kind::Int),
            ("seq", Kind::Int),
        ],
    ),
    ("disabled_nodes", &[("name", Kind::Text), ("at", Kind::Int)]),
    (
        "user_profiles",
        &[
            ("user_key", Kind::Text),
            ("record", Kind::Text),
            ("seq", Kind::Int),
            ("updated", Kind::Int),
        ],
    ),
    (
        "population_counters",
        &[("cell", Kind::Int), ("count", Kind::Int)],
    ),
    (
        "population_totals",
        &[("feature", Kind::Int), ("total", Kind::Int)],
    ),
    (
        "erased_users",
        &[("user_key", Kind::Text), ("at", Kind::Int)],
    ),
    (
        "user_trust",
        &[
            ("user_key", Kind::Text),
            ("what", Kind::Text),
            ("value", Kind::Text),
            ("at", Kind::Int),
            ("seq", Kind::Int),
        ],
    ),
    (
        "user_names",
        &[
            ("user_key", Kind::Text),
            ("name", Kind::Text),
            ("at", Kind::Int),
        ],
    ),
    (
        "rule_bundles",
        &[
            ("version", Kind::Int),
            ("text", Kind::Text),
            ("sha256", Kind::Text),
            ("created_at", Kind::Int),
            ("seq", Kind::Int),
        ],
    ),
    (
        "node_rules",
        &[
            ("node", Kind::Text),
            ("version", Kind::Int),
            ("sha256", Kind::Text),
            ("applied_at", Kind::Int),
            ("failed_version", Kind::Int),
            ("failed_sha256", Kind::Text),
            ("failure", Kind::Text),
            ("failed_at", Kind::Int),
        ],
    ),
    (
        "node_user_budget",
        &[
            ("node", Kind::Text),
            ("day", Kind::Int),
            ("user_key", Kind::Text),
            ("observations", Kind::Int),
            ("new_sessions", Kind::Int),
        ],
    ),
    (
        "node_day_budget",
        &[
            ("node", Kind::Text),
            ("day", Kind::Int),
            ("new_users", Kind::Int),
            ("vouched", Kind::Int),
        ],
    ),
    // The Shared Signals transmitter's streams and queues (its cursor is
    // one row, set like the log's head).
    (
        "ssf_tx_streams",
        &[
            ("stream_id", Kind::Text),
            ("client", Kind::Text),
            ("config", Kind::Text),
            ("status", Kind::Text),
            ("reason", Kind::Text),
            ("all_subjects", Kind::Int),
            ("created", Kind::Int),
            ("updated", Kind::Int),
            ("next_seq", Kind::Int),
            ("dropped", Kind::Int),
            ("lease_owner", Kind::Text),
            ("lease_until", Kind::Int),
            ("next_try", Kind::Int),
            ("failures", Kind::Int),
        ],
    ),
    (
        "ssf_tx_subjects",
        &[
            ("stream_id", Kind::Text),
            ("subject", Kind::Text),
            ("included", Kind::Int),
        ],
    ),
    (
        "ssf_tx_queue",
        &[
            ("stream_id", Kind::Text),
            ("seq", Kind::Int),
            ("jti", Kind::Text),
            ("claims", Kind::Text),
            ("sent", Kind::Int),
        ],
    ),
    (
        "ssf_tx_refused",
        &[
            ("stream_id", Kind::Text),
            ("jti", Kind::Text),
            ("err", Kind::Text),
            ("description", Kind::Text),
            ("at", Kind::Int),
        ],
    ),
    (
        "ssf_tx_user_levels",
        &[
            ("user_key", Kind::Text),
            ("level", Kind::Text),
            ("at", Kind::Int),
        ],
    ),
    (
        "ssf_tx_recent",
        &[
            ("stream_id", Kind::Text),
            ("subject", Kind::Text),
            ("at", Kind::Int),
        ],
    ),
    // The dashboard's audit trail (`docs/dashboard.md`): a backup keeps
    // who did what.
    (
        "audit",
        &[
            ("id", Kind::Text),
            ("at", Kind::Int),
            ("who", Kind::Text),
            ("role", Kind::Text),
            ("client", Kind::Text),
            ("action", Kind::Text),
            ("target", Kind::Text),
            ("outcome", Kind::Text),
        ],
    ),
    // Nodes' counts per minute: the overview's and the rules page's
    // history.
    (
        "node_counts",
        &[
            ("node", Kind::Text),
            ("run", Kind::Text),
            ("minute", Kind::Int),
            ("kind", Kind::Text),
            ("name", Kind::Text),
            ("action", Kind::Text),
            ("n", Kind::Int),
        ],
    ),
];

/// One value read.
enum Value {
    Text(Option<String>),
    Int(Option<i64>),
}

/// What a copy moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Rows copied, all tables.
    pub rows: u64,
    /// The log's head, as copied.
    pub head: u64,
}

/// Why a copy could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The destination holds data already.
    #[error("the destination is not empty ({0} holds rows): restore into an empty store")]
    NotEmpty(&'static str),
}

impl From<sqlx::Error> for CopyError {
    fn from(e: sqlx::Error) -> Self {
        CopyError::Store(StoreError::Db(e))
    }
}

/// Copies everything in `from` into the empty `to`.
pub async fn copy(from: &Store, to: &Store) -> Result<Copied, CopyError> {
    let mut dst = to.pool().begin().await?;
    let head: i64 = sqlx::query("SELECT head FROM log_head WHERE id = 1")
        .fetch_one(&mut *dst)
        .await?
        .try_get(0)?;
    if head != 0 {
        return Err(CopyError::NotEmpty("log_head"));
    }
    for (table, _) in TABLES {
        let any = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT 1 FROM {table} LIMIT 1"
        )))
        .fetch_optional(&mut *dst)
        .await?;
        if any.is_some() {
            return Err(CopyError::NotEmpty(table));
        }
    }
    let mut src = from.pool().begin().await?;
    if from.backend() == Backend::Postgres {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *src)
            .await?;
    }
    let row = sqlx::query("SELECT head, oldest FROM log_head WHERE id = 1")
        .fetch_one(&mut *src)
        .await?;
    let (head, oldest): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    let mut rows = 0;
    for (table, columns) in TABLES {
        rows += copy_table(&mut src, &mut dst, table, columns).await?;
    }
    sqlx::query("UPDATE log_head SET head = $1, oldest = $2 WHERE id = 1")
        .bind(head)
        .bind(oldest)
        .execute(&mut *dst)
        .await?;
    let cursor: i64 = sqlx::query("SELECT seq FROM ssf_tx_cursor WHERE id = 1")
        .fetch_one(&mut *src)
        .await?
        .try_get(0)?;
    sqlx::query("UPDATE ssf_tx_cursor SET seq = $1 WHERE id = 1")
        .bind(cursor)
        .execute(&mut *dst)
        .await?;
    src.commit().await?;
    dst.commit().await?;
    Ok(Copied {
        rows,
        head: u64::try_from(head).unwrap_or(0),
    })
}

async fn copy_table(
    src: &mut Transaction<'static, Any>,
    dst: &mut Transaction<'static, Any>,
    table: &str,
    columns: &[(&str, Kind)],
) -> Result<u64, CopyError> {
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    let select = format!("SELECT {} FROM {table}", names.join(", "));
    let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
    let insert = format!(
        "INSERT INTO {table} ({}) VALUES ({})",
        names.join(", "),
        placeholders.join(", ")
    );
    let mut n = 0;
    for row in sqlx::query(sqlx::AssertSqlSafe(select))
        .fetch_all(&mut **src)
        .await?
    {
        let values = columns
            .iter()
            .enumerate()
            .map(|(i, (_, kind))| {
                Ok(match kind {
                    Kind::Text => Value::Text(row.try_get(i)?),
                    Kind::Int => Value::Int(row.try_get(i)?),
                })
            })
            .collect::<Result<Vec<Value>, sqlx::Error>>()?;
        let mut query = sqlx::query(sqlx::AssertSqlSafe(insert.clone()));
        for value in values {
            query = match value {
                Value::Text(v) => query.bind(v),
                Value::Int(v) => query.bind(v),
            };
        }
        query.execute(&mut **dst).await?;
        n += 1;
    }
    Ok(n)
}
