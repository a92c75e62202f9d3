//! The group commit of SETs: every delivery (a push, a SET of a poll)
//! validated concurrently hands its SET here, and one task commits as many
//! as are waiting (up to [`MAX_SET_BATCH`]) in one transaction
//! ([`Store::take_sets`]). Each delivery is answered only after the commit
//! that holds its SET; a duplicate in the batch is told so and does not
//! affect the others; a failed commit fails each of its SETs (the
//! transmitter retries: nothing of the batch was kept).

use tokio::sync::{mpsc, oneshot};

use crate::store::Store;
use crate::store::ssf::{MAX_SET_BATCH, SetAction, SetReceipt, SetTaken};

/// A validated SET on its way to the store, and where its answer goes.
#[derive(Debug)]
pub struct PendingSet {
    /// The configured transmitter's name.
    pub transmitter: String,
    /// Its `iss`.
    pub issuer: String,
    /// Its `jti`.
    pub jti: String,
    /// Its event's type URI.
    pub event: String,
    /// Until when its `jti` is kept.
    pub keep_until: u64,
    /// A verification's `state`.
    pub verification: Option<String>,
    /// What it does.
    pub action: SetAction,
    /// The answer: `None` when the store failed.
    pub reply: oneshot::Sender<Option<SetTaken>>,
}

/// Starts the committer over `store`; hand it SETs through the sender.
pub fn start(store: Store) -> mpsc::Sender<PendingSet> {
    let (tx, rx) = mpsc::channel(4 * MAX_SET_BATCH);
    tokio::spawn(committer(store, rx));
    tx
}

async fn committer(store: Store, mut waiting: mpsc::Receiver<PendingSet>) {
    let mut group = Vec::with_capacity(MAX_SET_BATCH);
    while waiting.recv_many(&mut group, MAX_SET_BATCH).await > 0 {
        let sets: Vec<(SetReceipt<'_>, SetAction)> = group
            .iter()
            .map(|p| {
                (
                    SetReceipt {
                        transmitter: &p.transmitter,
                        issuer: &p.issuer,
                        jti: &p.jti,
                        event: &p.event,
                        keep_until: p.keep_until,
                        verification: p.verification.as_deref(),
                    },
                    p.action,
                )
            })
            .collect();
        let result = store.take_sets(&sets, crate::api::now_secs()).await;
        drop(sets);
        match result {
            Ok(taken) => {
                for (p, t) in group.drain(..).zip(taken) {
                    let _ = p.reply.send(Some(t));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, sets = group.len(), "store failed; SETs not taken");
                for p in group.drain(..) {
                    let _ = p.reply.send(None);
                }
            }
        }
    }
}
