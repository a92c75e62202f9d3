//! Sessions' rotating bindings as the fleet knows them
//! (`docs/bound-sessions.md`, "Across the fleet"): one row per session,
//! the join of every record nodes posted ([`vigil_engine::FleetBinding::join`],
//! the same join every node applies), so that records arriving late, twice
//! or out of order never lower a generation nor undo a compromised mark.
//! Only a record that changes the row is streamed.

use std::collections::HashMap;

use sqlx::{Any, Row, Transaction};
use vigil_engine::{FleetBinding, SessionKey};
use vigil_fleet::{BindingRecord, Change, SessionId};

use super::{Store, StoreError, to_i64, to_u64};

/// What taking a node's record does.
pub(super) enum Judged {
    /// Nothing new: the row already holds as much.
    Nothing,
    /// The row becomes this; `marks` when it newly says compromised.
    Joined { record: BindingRecord, marks: bool },
}

/// Joins `record` (a node's, at `now`) with the row held (or taken
/// earlier in this batch, `pending`). Times ahead of `now` are brought
/// back to it: a node's clock ahead must not lengthen a grace anywhere.
pub(super) async fn judge(
    tx: &mut Transaction<'static, Any>,
    pending: &HashMap<SessionId, BindingRecord>,
    record: &BindingRecord,
    now: u64,
) -> Result<Judged, StoreError> {
    let now32 = u32::try_from(now).unwrap_or(u32::MAX);
    let mut r = to_engine(record);
    if !r.is_valid() {
        return Ok(Judged::Nothing);
    }
    r.issued_at = r.issued_at.min(now32);
    if r.presented_at != 0 {
        r.presented_at = r.presented_at.min(now32);
    }
    let held = match pending.get(&record.session) {
        Some(held) => Some(to_engine(held)),
        None => read(tx, record.session).await?.map(|h| to_engine(&h)),
    };
    let joined = held.map_or(r, |h| h.join(&r));
    if held == Some(joined) {
        return Ok(Judged::Nothing);
    }
    Ok(Judged::Joined {
        record: to_fleet(&joined),
        marks: joined.compromised && !held.is_some_and(|h| h.compromised),
    })
}

/// The row of `session`, if one is held.
async fn read(
    tx: &mut Transaction<'static, Any>,
    session: SessionId,
) -> Result<Option<BindingRecord>, StoreError> {
    let row = sqlx::query(
        "SELECT generation, nonce, previous_nonce, issued_at, presented_at, compromised \
         FROM session_bindings WHERE session = $1",
    )
    .bind(session.to_string())
    .fetch_optional(&mut **tx)
    .await?;
    row.map(|row| of_row(session, &row)).transpose()
}

fn of_row(session: SessionId, row: &sqlx::any::AnyRow) -> Result<BindingRecord, StoreError> {
    let u = |i: usize| -> Result<u32, sqlx::Error> {
        Ok(u32::try_from(row.try_get::<i64, _>(i)?).unwrap_or(0))
    };
    Ok(BindingRecord {
        session,
        generation: u(0)?,
        nonce: u(1)?,
        previous_nonce: u(2)?,
        issued_at: u(3)?,
        presented_at: u(4)?,
        compromised: row.try_get::<i64, _>(5)? != 0,
    })
}

/// Writes the row of a streamed [`Change::SessionBinding`] (change `seq`).
pub(super) async fn write(
    tx: &mut Transaction<'static, Any>,
    record: &BindingRecord,
    seq: i64,
    now: u64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO session_bindings (session, generation, nonce, previous_nonce, issued_at, \
         presented_at, compromised, seq, updated) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (session) DO UPDATE SET generation = excluded.generation, \
         nonce = excluded.nonce, previous_nonce = excluded.previous_nonce, \
         issued_at = excluded.issued_at, presented_at = excluded.presented_at, \
         compromised = CASE WHEN session_bindings.compromised <> 0 THEN 1 ELSE excluded.compromised END, \
         seq = excluded.seq, updated = excluded.updated",
    )
    .bind(record.session.to_string())
    .bind(i64::from(record.generation))
    .bind(i64::from(record.nonce))
    .bind(i64::from(record.previous_nonce))
    .bind(i64::from(record.issued_at))
    .bind(i64::from(record.presented_at))
    .bind(i64::from(record.compromised))
    .bind(seq)
    .bind(to_i64(now))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Every row, as changes for a snapshot, oldest change first.
pub(super) async fn snapshot(
    tx: &mut Transaction<'static, Any>,
) -> Result<Vec<Change>, StoreError> {
    let mut out = Vec::new();
    for row in sqlx::query(
        "SELECT generation, nonce, previous_nonce, issued_at, presented_at, compromised, session \
         FROM session_bindings ORDER BY seq",
    )
    .fetch_all(&mut **tx)
    .await?
    {
        let session: String = row.try_get(6)?;
        let Some(session) = SessionId::parse(&session) else {
            continue;
        };
        out.push(Change::SessionBinding(of_row(session, &row)?));
    }
    Ok(out)
}

impl Store {
    /// The fleet's binding of `session`, if the store holds one.
    pub async fn binding(&self, session: SessionId) -> Result<Option<BindingRecord>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let held = read(&mut tx, session).await?;
        tx.commit().await?;
        Ok(held)
    }

    /// Rows held, for tests and the operator.
    pub async fn bindings(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM session_bindings")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        Ok(to_u64(n))
    }
}

/// The engine's form of a record.
pub fn to_engine(r: &BindingRecord) -> FleetBinding {
    FleetBinding {
        session: SessionKey::from_bytes(r.session.0),
        generation: r.generation,
        nonce: r.nonce,
        previous_nonce: r.previous_nonce,
        issued_at: r.issued_at,
        presented_at: r.presented_at,
        compromised: r.compromised,
    }
}

/// The protocol's form of a record.
pub fn to_fleet(r: &FleetBinding) -> BindingRecord {
    BindingRecord {
        session: SessionId(*r.session.as_bytes()),
        generation: r.generation,
        nonce: r.nonce,
        previous_nonce: r.previous_nonce,
        issued_at: r.issued_at,
        presented_at: r.presented_at,
        compromised: r.compromised,
    }
}
