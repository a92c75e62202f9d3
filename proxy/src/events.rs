//! The proxy's consumers of the engine's event stream (see
//! `vigil_engine::events` and `docs/events.md`).
//!
//! Each lane is drained by one thread of its own, so a slow log sink never
//! holds a request: the engine only ever `try_send`s. The observability
//! lane writes the decision log (one record per refusal, target
//! `vigil::decision`) and counts every event; the fleet lane counts what
//! it carries, hands the revocations this node decided to the controller
//! client's outbox (`crate::fleet_sync`) when a controller is configured,
//! made durable in groups of what was queued together, and warns when a gap was announced.
//! At exit the lanes are [finished](Lanes::finish): what is still queued
//! is taken, and made durable, before the process ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus::IntCounterVec;
use vigil_engine::events::{Detection, Event, EventStreams, FleetStream};

use crate::fleet_sync::Outbox;

/// The running lanes, to [finish](Lanes::finish) at exit.
#[derive(Debug)]
pub struct Lanes {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// One message per lane that has ended, panicked or not.
    ended: Receiver<()>,
    outbox: Option<Arc<Outbox>>,
    /// Kept until the lanes have finished: the outbox reads session
    /// records from the engine through a weak reference, and once the
    /// services have stopped this may be the last strong one.
    engine: Option<Arc<vigil_engine::Engine>>,
}

/// Tells [`Lanes::finish`] that its lane has ended, when dropped: also
/// when the lane panics.
struct Ended(SyncSender<()>);

impl Drop for Ended {
    fn drop(&mut self) {
        let _ = self.0.try_send(());
    }
}

/// The longest an exit waits for the lanes to take what is queued (at
/// most the lanes' capacity, one group with one `fsync`) before it goes
/// on without them: a stalled disk or log sink must not keep a stopped
/// proxy from exiting.
const FINISH_WITHIN: Duration = Duration::from_secs(5);

/// Starts one named thread per lane; they run until [`Lanes::finish`] (or
/// until the engine, and with it every sender, is dropped). `outbox`
/// takes the fleet lane's events for the controller, when there is one.
pub fn consume(
    streams: EventStreams,
    told: IntCounterVec,
    fleet: IntCounterVec,
    outbox: Option<Arc<Outbox>>,
) -> std::io::Result<Lanes> {
    let EventStreams {
        observe,
        fleet: fleet_rx,
    } = streams;
    let stop = Arc::new(AtomicBool::new(false));
    let (ended_tx, ended) = sync_channel(2);
    let observe_stop = stop.clone();
    let observe_ended = Ended(ended_tx.clone());
    let observer = std::thread::Builder::new()
        .name("vigil-events".into())
        .spawn(move || {
            let _ended = observe_ended;
            observe_lane(&observe, &told, &observe_stop);
        })?;
    let fleet_stop = stop.clone();
    let fleet_ended = Ended(ended_tx);
    let fleet_outbox = outbox.clone();
    let carrier = std::thread::Builder::new()
        .name("vigil-fleet".into())
        .spawn(move || {
            let _ended = fleet_ended;
            fleet_lane(&fleet_rx, &fleet, fleet_outbox.as_deref(), &fleet_stop);
        })?;
    Ok(Lanes {
        stop,
        threads: vec![observer, carrier],
        ended,
        outbox,
        engine: None,
    })
}

impl Lanes {
    /// Keeps `engine` alive until the lanes have finished (see
    /// [`Lanes::finish`]).
    pub fn hold(&mut self, engine: Arc<vigil_engine::Engine>) {
        self.engine = Some(engine);
    }

    /// Has each lane take everything still queued — counted, logged, and
    /// in the controller's outbox — and end, then makes the outbox durable
    /// (also what was pushed to it beside the lanes: DBSC bindings, whose
    /// own commit runs on a blocking task the runtime's shutdown may have
    /// dropped). Called when the services have stopped and the process is
    /// about to exit: a revocation decided by a request's last moments
    /// would otherwise die with the process (up to [`REST`] of events
    /// waits in the lanes at any time). Returns whether both lanes ended
    /// within [`FINISH_WITHIN`]; an idle lane ends within [`IDLE`].
    pub fn finish(self) -> bool {
        self.stop.store(true, Ordering::Release);
        let deadline = std::time::Instant::now() + FINISH_WITHIN;
        let all = self.threads.iter().all(|_| {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            self.ended.recv_timeout(left).is_ok()
        });
        if all {
            for thread in self.threads {
                if thread.join().is_err() {
                    tracing::error!(target: "vigil::event", "an event lane panicked; what it held is lost");
                }
            }
        } else {
            tracing::warn!(
                target: "vigil::event",
                within = ?FINISH_WITHIN,
                "the event lanes did not finish in time; exiting without what they still hold"
            );
        }
        if let Some(outbox) = &self.outbox {
            outbox.commit();
        }
        drop(self.engine);
        all
    }
}

/// How long a lane with nothing queued waits before it looks whether it
/// is [finished](Lanes::finish): the most an exit waits for an idle lane.
/// An idle lane wakes ten times a second, a busy one up to 500 (see
/// [`REST`]).
const IDLE: Duration = Duration::from_millis(100);

/// How long a lane rests after emptying its queue before it waits on it
/// again. A lane that waits right away is woken by every event: at a few
/// thousand events a second (a login or a refusal every few requests) each
/// one costs the request's thread a wake-up and the shared core two
/// context switches and a consumer spinning on the channel's lock — 7.8 %
/// of the proxy's CPU in the load corpus (docs/performance.md, "The event
/// lanes"). Resting first lets events gather: a lane wakes at most 500
/// times a second whatever the rate, and takes what came meanwhile in one
/// pass. The queue (65,536 events) holds what even a flood adds in 2 ms,
/// and neither consumer is in a hurry: logs and counters, and the
/// controller's outbox, whose delivery is a matter of seconds.
const REST: Duration = Duration::from_millis(2);

fn observe_lane(rx: &Receiver<Arc<Event>>, told: &IntCounterVec, stop: &AtomicBool) {
    let observe = |event: &Event| {
        told.with_label_values(&[event.kind()]).inc();
        match event {
            Event::Detection(d) => log_detection(d),
            other => tracing::debug!(target: "vigil::event", event = ?other, "event"),
        }
    };
    loop {
        let first = match rx.recv_timeout(IDLE) {
            Ok(first) => Some(first),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // Finishing: everything queued, then end. What a runtime that
        // outlived its shutdown still emits after this is counted as
        // dropped.
        let finishing = stop.load(Ordering::Acquire);
        let mut taken = 0;
        for event in first.into_iter().chain(rx.try_iter()) {
            observe(&event);
            taken += 1;
        }
        if finishing {
            return;
        }
        if taken > 0 {
            std::thread::sleep(REST);
        }
    }
}

/// Most events taken from the lane before the outbox's group is made
/// durable (one `fsync` per group, not per event).
const GROUP: usize = 256;

fn fleet_lane(
    rx: &FleetStream,
    carried: &IntCounterVec,
    outbox: Option<&Outbox>,
    stop: &AtomicBool,
) {
    loop {
        let first = match rx.recv_timeout(IDLE) {
            Ok(first) => Some(first),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // Finishing: everything queued, in one last group. What a runtime
        // that outlived its shutdown still emits after this is counted as
        // lost.
        let finishing = stop.load(Ordering::Acquire);
        let most = if finishing { usize::MAX } else { GROUP };
        // What is queued already joins the first event's group.
        let mut taken = 0;
        for event in first.into_iter().chain(rx.try_iter()).take(most) {
            fleet_event(&event, carried, outbox);
            taken += 1;
        }
        if taken > 0
            && let Some(outbox) = outbox
        {
            outbox.commit();
        }
        if finishing {
            return;
        }
        // A full group may have more behind it: take it now.
        if (1..GROUP).contains(&taken) {
            std::thread::sleep(REST);
        }
    }
}

fn fleet_event(event: &Event, carried: &IntCounterVec, outbox: Option<&Outbox>) {
    carried.with_label_values(&[event.kind()]).inc();
    if let Event::Lost { count } = event {
        // Counted by kind above (`lost`) and, per event, by the engine
        // (`vigil_engine_events_lost_total`).
        tracing::warn!(
            target: "vigil::event",
            count,
            "fleet events were not delivered (event queue full); the fleet view has a gap"
        );
    }
    if let Some(outbox) = outbox {
        outbox.offer(event);
    }
}

/// One structured record per refusal. Only the session key's short prefix
/// is logged, never the credential; the user only as its keyed hash.
fn log_detection(d: &Detection) {
    let v = &d.verdict;
    let session = v
        .session
        .map(|s| s.key.short().to_string())
        .unwrap_or_default();
    tracing::info!(
        target: "vigil::decision",
        reference = %d.reference,
        route = %d.route,
        rule = d.rule.as_deref().unwrap_or(""),
        tags = d.tags.as_deref().unwrap_or(""),
        action = %v.action,
        enforced = d.enforced,
        level = %v.risk.level,
        score = v.risk.score,
        reasons = %reasons_list(v),
        login_score = v.risks.login.as_ref().map_or(0, |r| r.score),
        session_score = v.risks.session.score,
        entity_score = v.risks.entity.score,
        learning = v.risks.learning,
        session = %session,
        user = %v.user.map(|u| u.to_string()).unwrap_or_default(),
        client = %v.client.addr,
        provider = v.client.provider.as_ref().map_or("", |p| p.as_str()),
        network_change = v.network_change.map_or("", |c| c.code()),
        device = %v.device.id,
        browser = v.device.browser.as_str(),
        major = v.device.major,
        platform = v.device.platform.as_str(),
        class = v.device.class.as_str(),
        tls = v.device.tls.source.as_str(),
        ja4 = %v.device.tls.ja4.map(|j| j.to_string()).unwrap_or_default(),
        "decision"
    );
}

/// The verdict's reason codes, comma-separated (the `Vigil-Risk-Reasons`
/// header and the log's `reasons` field).
pub(crate) fn reasons_list(verdict: &vigil_engine::Verdict) -> String {
    let mut out = String::new();
    for (i, c) in verdict.risk.reasons.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(c.reason.code());
    }
    out
}

#[cfg(test)]
mod tests {
    use vigil_engine::SessionKey;

    use super::*;
    use crate::fleet_sync::queue::Limits;
    use crate::metrics::Metrics;

    const LIMITS: Limits = Limits {
        max_events: 1_000,
        max_bytes: 1 << 20,
        segment_bytes: 64 * 1024,
    };

    /// A revocation carried over a key rotation: one the controller takes
    /// as it is, without an engine to read records from.
    fn carried_revocation(n: u16) -> Event {
        let key = |tag: u8| {
            let mut bytes = [tag; 16];
            bytes[..2].copy_from_slice(&n.to_be_bytes());
            SessionKey::from_bytes(bytes)
        };
        Event::SessionRekeyed {
            session: key(1),
            previous: key(2),
            user: None,
            revoked: true,
            at: 1_000,
        }
    }

    fn outbox(dir: &std::path::Path, metrics: &Metrics) -> Arc<Outbox> {
        Arc::new(Outbox::open(dir, LIMITS, &metrics.fleet).unwrap())
    }

    /// The lanes of `streams`, counted in `metrics`.
    fn start(streams: EventStreams, metrics: &Metrics, outbox: Option<Arc<Outbox>>) -> Lanes {
        consume(
            streams,
            metrics.events.clone(),
            metrics.fleet_events.clone(),
            outbox,
        )
        .unwrap()
    }

    /// What a restart finds queued for the controller in `dir`.
    fn queued_after_restart(dir: &std::path::Path) -> i64 {
        let restarted = Metrics::new().unwrap();
        let _reopened = outbox(dir, &restarted);
        restarted.fleet.events_queued.get()
    }

    /// A finishing lane takes everything queued — more than one group —
    /// in one pass, and the fleet lane's is durable when it returns. The
    /// lanes run here on the test's own thread, told to finish before
    /// they start: nothing is taken before the finishing pass.
    #[test]
    fn a_finishing_lane_takes_everything_queued() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new().unwrap();
        let outbox = outbox(dir.path(), &metrics);
        let (sink, streams) = vigil_engine::events::channel(1_024, 1_024);
        let burst: u16 = 300;
        assert!(usize::from(burst) > GROUP);
        for n in 0..burst {
            sink.emit(carried_revocation(n));
        }
        let finishing = AtomicBool::new(true);
        observe_lane(&streams.observe, &metrics.events, &finishing);
        fleet_lane(
            &streams.fleet,
            &metrics.fleet_events,
            Some(&outbox),
            &finishing,
        );

        let kind = ["session_rekeyed"];
        assert_eq!(
            metrics.events.with_label_values(&kind).get(),
            u64::from(burst)
        );
        assert_eq!(
            metrics.fleet_events.with_label_values(&kind).get(),
            u64::from(burst)
        );
        assert_eq!(queued_after_restart(dir.path()), i64::from(burst));
    }

    /// The process exits right after a burst of revocations, and after a
    /// binding pushed to the outbox beside the lanes: once `finish`
    /// returns, all of it is on disk in the controller's queue, as a
    /// restart reads it.
    #[test]
    fn finishing_the_lanes_leaves_every_queued_event_durable() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new().unwrap();
        let outbox = outbox(dir.path(), &metrics);
        let (sink, streams) = vigil_engine::events::channel(1_024, 1_024);
        let lanes = start(streams, &metrics, Some(outbox.clone()));
        let burst: u16 = 300;
        for n in 0..burst {
            sink.emit(carried_revocation(n));
        }
        // Pushed, never committed by its own path.
        outbox.push(vigil_fleet::NodeEventKind::SessionRevoked {
            session: vigil_fleet::SessionId([7; 16]),
            user: None,
            reference: None,
            at: 1_000,
        });
        assert!(lanes.finish(), "both lanes ended");

        let kind = ["session_rekeyed"];
        assert_eq!(
            metrics.events.with_label_values(&kind).get(),
            u64::from(burst)
        );
        assert_eq!(queued_after_restart(dir.path()), i64::from(burst) + 1);
        // The sink outlives the lanes: what comes after is counted, never
        // waited for.
        sink.emit(carried_revocation(0));
        assert_eq!((sink.dropped(), sink.lost()), (1, 1));
    }

    /// Idle lanes (nothing ever queued) finish too, without an event to
    /// wake them.
    #[test]
    fn idle_lanes_finish() {
        let metrics = Metrics::new().unwrap();
        let (_sink, streams) = vigil_engine::events::channel(4, 4);
        let lanes = start(streams, &metrics, None);
        assert!(lanes.finish(), "both lanes ended");
    }
}
