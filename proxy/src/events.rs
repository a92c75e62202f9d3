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

use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use prometheus::IntCounterVec;
use vigil_engine::events::{Detection, Event, EventStreams, FleetStream};

use crate::fleet_sync::Outbox;

/// Starts one named thread per lane; they end when the engine (and with it
/// every sender) is dropped. `outbox` takes the fleet lane's events for
/// the controller, when there is one.
pub fn consume(
    streams: EventStreams,
    told: IntCounterVec,
    fleet: IntCounterVec,
    outbox: Option<Arc<Outbox>>,
) -> std::io::Result<()> {
    let EventStreams {
        observe,
        fleet: fleet_rx,
    } = streams;
    std::thread::Builder::new()
        .name("vigil-events".into())
        .spawn(move || observe_lane(&observe, &told))?;
    std::thread::Builder::new()
        .name("vigil-fleet".into())
        .spawn(move || fleet_lane(&fleet_rx, &fleet, outbox.as_deref()))?;
    Ok(())
}

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

fn observe_lane(rx: &Receiver<Arc<Event>>, told: &IntCounterVec) {
    while let Ok(first) = rx.recv() {
        for event in std::iter::once(first).chain(rx.try_iter()) {
            told.with_label_values(&[event.kind()]).inc();
            match &*event {
                Event::Detection(d) => log_detection(d),
                other => tracing::debug!(target: "vigil::event", event = ?other, "event"),
            }
        }
        std::thread::sleep(REST);
    }
}

/// Most events taken from the lane before the outbox's group is made
/// durable (one `fsync` per group, not per event).
const GROUP: usize = 256;

fn fleet_lane(rx: &FleetStream, carried: &IntCounterVec, outbox: Option<&Outbox>) {
    while let Ok(first) = rx.recv() {
        // What is queued already joins the first event's group.
        let mut taken = 0;
        for event in std::iter::once(first).chain(rx.try_iter().take(GROUP - 1)) {
            fleet_event(&event, carried, outbox);
            taken += 1;
        }
        if let Some(outbox) = outbox {
            outbox.commit();
        }
        // A full group may have more behind it: take it now.
        if taken < GROUP {
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
