//! Typed events: every state change the engine makes, as data, on one
//! bounded, non-blocking stream.
//!
//! The decision log, metrics, and later the controller client, the SSF
//! transmitter and webhooks are all consumers of this one stream; none of
//! them reaches into the engine (ARCHITECTURE.md, "Events are the one
//! contract between the parts"). The fields of each event are a public
//! contract, specified in `docs/events.md`.
//!
//! The sink has two lanes, because consumers differ in what they may lose:
//!
//! - the **observability** lane gets every event; when it is full the event
//!   is dropped for that lane and counted ([`EventSink::dropped`]). Logs and
//!   metrics may lose lines under a flood; a request never waits for them.
//! - the **fleet** lane gets the events that change state the fleet must
//!   share ([`EventClass::Fleet`]: sightings, bindings, enforced detections,
//!   revocations, confirmations, feedback, partner reports). It never
//!   blocks a request either, so when it is full an event cannot be
//!   delivered — but it is never lost *silently*: it is counted
//!   ([`EventSink::lost`]), and the next fleet event that fits is preceded
//!   by [`Event::Lost`] with the number missed, so the consumer knows its
//!   view has a gap and must resynchronise (the controller's durable queue
//!   and sync stream close that gap). A quarter of the lane is kept for the
//!   events a client cannot mint by the thousand — revocations,
//!   confirmations, feedback, partner reports ([`Event::is_critical`]) — so
//!   that a flood of new sessions or refusals never crowds them out.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{
    Receiver, RecvError, RecvTimeoutError, SyncSender, TryRecvError, sync_channel,
};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::pipeline::Verdict;
use crate::score::UserKey;
use crate::session::SessionKey;

/// One state change of the engine, or one decision worth telling.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A session's first allowed request: its device and network became its
    /// baseline (a session first seen without a login Vigil observed).
    SessionSeen {
        /// The session.
        session: SessionKey,
        /// Its user, when already bound.
        user: Option<UserKey>,
        /// Seconds since the Unix epoch.
        at: u64,
    },
    /// The app's response opened a session (`Set-Cookie` of a session
    /// cookie): the *requesting* client's device and network are its
    /// baseline, before anyone has presented the new value.
    SessionIssued {
        /// The new session.
        session: SessionKey,
        /// The user the app named in the same response, if any.
        user: Option<UserKey>,
        /// Seconds since the Unix epoch.
        at: u64,
    },
    /// A session was bound to a user (the app named them).
    SessionBound {
        /// The session.
        session: SessionKey,
        /// The user.
        user: UserKey,
        /// Seconds since the Unix epoch.
        at: u64,
    },
    /// A session known under the retiring hash key was presented after the
    /// switch to a new one: its state (baseline, binding, revocation) is now
    /// filed under its key of the current hash key (docs/controller.md,
    /// "Rotating the hash key").
    SessionRekeyed {
        /// The session's key under the current hash key.
        session: SessionKey,
        /// Its key under the previous hash key.
        previous: SessionKey,
        /// Its user, when bound.
        user: Option<UserKey>,
        /// Whether what was carried is a revocation.
        revoked: bool,
        /// Seconds since the Unix epoch.
        at: u64,
    },
    /// A request was (or, on a monitoring route, would have been) refused.
    Detection(Box<Detection>),
    /// A session was ended on this node.
    SessionRevoked {
        /// The session.
        session: SessionKey,
        /// Its user, when bound.
        user: Option<UserKey>,
        /// Who ended it.
        cause: RevocationCause,
        /// Seconds since the Unix epoch.
        at: u64,
    },
    /// Every session bound to a user so far was ended (universal logout).
    UserRevoked {
        /// The user.
        user: UserKey,
        /// Sessions ended on this node by it.
        sessions: u64,
        /// Seconds since the Unix epoch.
        at: u64,
    },
    /// The session's user proved themselves (a step-up passed): the
    /// request's device and network became the session's baseline.
    Confirmed {
        /// The session.
        session: SessionKey,
        /// Its user, when bound.
        user: Option<UserKey>,
        /// Seconds since the Unix epoch.
        at: u64,
        /// The refusal the user disputed ("it was me" on a block page)
        /// and this step-up answered, if any: their word on that decision.
        disputed: Option<Reference>,
    },
    /// An operator's feedback was applied.
    FeedbackApplied {
        /// Which feedback.
        kind: FeedbackKind,
        /// The session it was about (a false positive), if any.
        session: Option<SessionKey>,
        /// The user it was about, when known.
        user: Option<UserKey>,
        /// Seconds since the Unix epoch.
        at: u64,
    },
    /// Every session of the user first seen at or before `at` must pass a
    /// step-up at its next request (an operator's or a partner's ask,
    /// streamed by the controller).
    StepUpRequired {
        /// The user.
        user: UserKey,
        /// Seconds since the Unix epoch.
        at: u64,
    },
    /// The session's user passed a step-up at an identity provider whose
    /// ID token named its own session: that provider session, hashed with
    /// its issuer under the fleet's user key.
    IdpSessionLearned {
        /// The session.
        session: SessionKey,
        /// Its user.
        user: UserKey,
        /// The provider's session.
        idp_session: crate::IdpSessionKey,
        /// Seconds since the Unix epoch.
        at: u64,
    },
    /// A partner reported the user at risk.
    PartnerReported {
        /// The user.
        user: UserKey,
        /// Entity-risk points carried until `until`.
        points: u8,
        /// Seconds since the Unix epoch at which the report lapses.
        until: u64,
        /// Seconds since the Unix epoch.
        at: u64,
    },
    /// What an allowed request of a bound user taught: its feature values
    /// were learnt for the user's history and the population model (a
    /// session's login, a move of network, a step-up, a false positive).
    /// For the fleet, which adds them up for every node
    /// (`docs/risk.md`, fleet-wide history).
    UserLearned(crate::score::Learnt),
    /// Fleet events that could not be delivered because the fleet lane was
    /// full: the consumer's view has a gap of this many events and must
    /// resynchronise. Only ever on the fleet lane.
    Lost {
        /// How many fleet events were not delivered since the last `Lost`.
        count: u64,
    },
}

/// A refused (or would-be refused) request with everything the decision saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// The reference id shown to the client and written to the log.
    pub reference: Reference,
    /// The route's name.
    pub route: Box<str>,
    /// The rule that decided; `None` when the route's policy did.
    pub rule: Option<Box<str>>,
    /// The tags rules added, comma-separated; `None` when none did.
    pub tags: Option<Box<str>>,
    /// Whether the refusal was carried out (`false` on a monitoring route).
    pub enforced: bool,
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// The verdict: session, client and chain, device, risks with reasons
    /// and points, user, action.
    pub verdict: Verdict,
}

/// The id that ties a refusal page to its log record and its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reference(pub u64);

/// Why a session was revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RevocationCause {
    /// A decision on one of its requests (`revoke` action).
    Decision,
    /// An operator or another system, from outside the request path.
    Operator,
}

/// Which operator feedback was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FeedbackKind {
    /// A refusal was a false positive: the refused request's device and
    /// network were adopted and trusted.
    FalsePositive,
    /// A device was trusted for a user.
    TrustDevice,
    /// A network was trusted for a user.
    TrustNetwork,
}

/// Which consumers an event is for; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventClass {
    /// Logs and metrics only: may be dropped on overflow, counted.
    Observability,
    /// State the fleet must share: never lost silently.
    Fleet,
}

/// The producing side, held by the engine. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventSink {
    inner: Arc<SinkInner>,
}

#[derive(Debug)]
struct SinkInner {
    observe: SyncSender<Arc<Event>>,
    fleet: SyncSender<Arc<Event>>,
    /// Fleet events queued and not yet received (shared with the
    /// [`FleetStream`]), for the room kept for critical events.
    queued: Arc<AtomicUsize>,
    capacity: usize,
    dropped: AtomicU64,
    lost: AtomicU64,
    /// Fleet events lost since the last [`Event::Lost`] was delivered.
    /// Behind the lock every fleet send takes, so that a gap is announced
    /// before any event after it.
    unreported: Mutex<u64>,
}

/// The consuming side: one receiver per lane, each for one consumer.
#[derive(Debug)]
pub struct EventStreams {
    /// Every event; drained by logs and metrics.
    pub observe: Receiver<Arc<Event>>,
    /// Fleet events and [`Event::Lost`] markers; drained by the fleet
    /// client.
    pub fleet: FleetStream,
}

/// The fleet lane's receiving end.
#[derive(Debug)]
pub struct FleetStream {
    rx: Receiver<Arc<Event>>,
    queued: Arc<AtomicUsize>,
}

/// A sink with room for `observe` events on the observability lane and
/// `fleet` events on the fleet lane (each at least 1).
pub fn channel(observe: usize, fleet: usize) -> (EventSink, EventStreams) {
    let fleet = fleet.max(4);
    let (otx, orx) = sync_channel(observe.max(1));
    let (ftx, frx) = sync_channel(fleet);
    let queued = Arc::new(AtomicUsize::new(0));
    let sink = EventSink {
        inner: Arc::new(SinkInner {
            observe: otx,
            fleet: ftx,
            queued: queued.clone(),
            capacity: fleet,
            dropped: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            unreported: Mutex::new(0),
        }),
    };
    (
        sink,
        EventStreams {
            observe: orx,
            fleet: FleetStream { rx: frx, queued },
        },
    )
}

// === impl Event ===

impl Event {
    /// Which consumers the event is for.
    ///
    /// A detection is for the fleet only when it was enforced and was not
    /// the refusal of a session already revoked: replaying a dead cookie
    /// changes no state, and must not cost the fleet anything.
    pub fn class(&self) -> EventClass {
        match self {
            Event::Detection(d)
                if !d.enforced || d.verdict.risk.reasons.iter().any(|c| c.reason.is_final()) =>
            {
                EventClass::Observability
            }
            _ => EventClass::Fleet,
        }
    }

    /// Whether the event may use the fleet lane's reserved room: state
    /// changes a client cannot cause by the thousand.
    pub fn is_critical(&self) -> bool {
        matches!(
            self,
            Event::SessionRevoked { .. }
                | Event::UserRevoked { .. }
                | Event::Confirmed { .. }
                | Event::FeedbackApplied { .. }
                | Event::PartnerReported { .. }
                | Event::StepUpRequired { .. }
                | Event::IdpSessionLearned { .. }
                | Event::Lost { .. }
        )
    }

    /// A short, stable name for metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::SessionSeen { .. } => "session_seen",
            Event::SessionIssued { .. } => "session_issued",
            Event::SessionBound { .. } => "session_bound",
            Event::SessionRekeyed { .. } => "session_rekeyed",
            Event::Detection(_) => "detection",
            Event::SessionRevoked { .. } => "session_revoked",
            Event::UserRevoked { .. } => "user_revoked",
            Event::Confirmed { .. } => "confirmed",
            Event::FeedbackApplied { .. } => "feedback_applied",
            Event::PartnerReported { .. } => "partner_reported",
            Event::StepUpRequired { .. } => "step_up_required",
            Event::IdpSessionLearned { .. } => "idp_session_learned",
            Event::UserLearned(_) => "user_learned",
            Event::Lost { .. } => "lost",
        }
    }

    /// Every kind, for metrics initialisation and docs.
    pub const KINDS: [&'static str; 14] = [
        "session_seen",
        "session_issued",
        "session_bound",
        "session_rekeyed",
        "detection",
        "session_revoked",
        "user_revoked",
        "confirmed",
        "feedback_applied",
        "partner_reported",
        "step_up_required",
        "idp_session_learned",
        "user_learned",
        "lost",
    ];
}

// === impl FleetStream ===

impl FleetStream {
    /// The next fleet event, waiting for one; an error once the engine and
    /// every sender are gone.
    pub fn recv(&self) -> Result<Arc<Event>, RecvError> {
        let event = self.rx.recv()?;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        Ok(event)
    }

    /// The next fleet event, waiting at most `timeout` for one.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Arc<Event>, RecvTimeoutError> {
        let event = self.rx.recv_timeout(timeout)?;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        Ok(event)
    }

    /// The next fleet event if one is queued.
    pub fn try_recv(&self) -> Result<Arc<Event>, TryRecvError> {
        let event = self.rx.try_recv()?;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        Ok(event)
    }

    /// Every event queued now, without waiting.
    pub fn try_iter(&self) -> impl Iterator<Item = Arc<Event>> + '_ {
        std::iter::from_fn(|| self.try_recv().ok())
    }
}

// === impl Reference ===

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

// === impl RevocationCause, FeedbackKind ===

impl RevocationCause {
    /// The name used in logs and `docs/events.md`.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationCause::Decision => "decision",
            RevocationCause::Operator => "operator",
        }
    }
}

impl FeedbackKind {
    /// The name used in logs and `docs/events.md`.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackKind::FalsePositive => "false_positive",
            FeedbackKind::TrustDevice => "trust_device",
            FeedbackKind::TrustNetwork => "trust_network",
        }
    }
}

// === impl EventSink ===

impl EventSink {
    /// Hands `event` to its lanes without ever waiting; see the module docs
    /// for what happens when a lane is full.
    pub fn emit(&self, event: Event) {
        let s = &self.inner;
        let fleet = event.class() == EventClass::Fleet;
        let event = Arc::new(event);
        if s.observe.try_send(event.clone()).is_err() {
            s.dropped.fetch_add(1, Ordering::Relaxed);
        }
        if !fleet {
            return;
        }
        // One fleet send at a time: a gap's marker then always comes before
        // any event emitted after the gap.
        let mut unreported = s.unreported.lock().unwrap_or_else(PoisonError::into_inner);
        // The marker goes only in front of an event that fits behind it, so
        // markers never fill the room kept for critical events.
        let needed = 1 + usize::from(*unreported > 0);
        let limit = if event.is_critical() {
            s.capacity
        } else {
            s.capacity - s.capacity / 4
        };
        let delivered = s.queued.load(Ordering::Acquire) + needed <= limit
            && (*unreported == 0 || self.send_fleet(Event::Lost { count: *unreported }))
            && {
                *unreported = 0;
                self.send_fleet_arc(event)
            };
        if !delivered {
            *unreported += 1;
            s.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn send_fleet(&self, event: Event) -> bool {
        self.send_fleet_arc(Arc::new(event))
    }

    /// Queues one fleet event; false when the lane is full or its receiver
    /// gone.
    fn send_fleet_arc(&self, event: Arc<Event>) -> bool {
        let s = &self.inner;
        s.queued.fetch_add(1, Ordering::AcqRel);
        if s.fleet.try_send(event).is_err() {
            s.queued.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Events dropped from the observability lane because it was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Fleet events that could not be delivered because the fleet lane was
    /// full (each announced by an [`Event::Lost`] once there is room).
    pub fn lost(&self) -> u64 {
        self.inner.lost.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
