//! The controller's metrics, served as Prometheus text on `GET /metrics`
//! (`docs/controller.md`, Metrics). Unauthenticated, like the proxy's: they
//! are counts, sizes and durations, never a token, a session key or a user.
//! One counts per node (its configured name, as operators know it): what
//! the intake refused of each node's word, so that a node whose token is
//! misused stands out.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric the controller keeps, registered in one registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Sync streams open now.
    pub subscribers: IntGauge,
    /// Frames of changes written to streams, by where they came from:
    /// `shared` (encoded once by the tail, the same bytes to every caught-up
    /// stream) or `store` (read by one stream for itself, catching up).
    pub frames_sent: IntCounterVec,
    /// Changes written to streams, by the same source.
    pub changes_sent: IntCounterVec,
    /// Streams that fell behind the shared frames and read the store to
    /// catch up.
    pub lagged: IntCounter,
    /// Reads of the log that failed (the tail's or a stream's).
    pub store_read_errors: IntCounter,
    /// The newest sequence this process has read from the log.
    pub head: IntGauge,
    /// How long a writing transaction took, from begin to commit.
    pub commit_seconds: Histogram,
    /// Changes in each frame the tail encoded: the delta batch size.
    pub frame_changes: Histogram,
    /// PostgreSQL notifications received from writers (any replica).
    pub notifications: IntCounter,
    /// Node events posted, by outcome: `taken`, `duplicate`,
    /// `rate_limited`.
    pub events: IntCounterVec,
    /// SETs pushed by Shared Signals transmitters, by transmitter (its
    /// configured name, `-` for none) and result (`docs/signals.md`).
    pub ssf_sets: IntCounterVec,
    /// OpenID Connect back-channel logout tokens posted, by provider (its
    /// configured name, `-` for none) and result (`docs/signals.md`).
    pub bcl_tokens: IntCounterVec,
    /// Node events taken but refused by the intake rules, by node and
    /// reason (`docs/controller.md`, Intake rules).
    pub refused: IntCounterVec,
    /// Outbound calls enqueued, by endpoint (`webhook:<name>`,
    /// `logout:<app>`) and result (`pending`, `duplicate`, `overflow`).
    pub outbox_enqueued: IntCounterVec,
    /// Outbound attempts, by endpoint and result (`delivered`, `failed`:
    /// to be retried, `dead`: given up).
    pub outbox_attempts: IntCounterVec,
    /// Outbound calls pending, by endpoint (refreshed every minute).
    pub outbox_pending: IntGaugeVec,
    /// How long an outbound attempt took.
    pub outbox_seconds: Histogram,
    /// SETs the transmitter handled, by receiver (its configured name)
    /// and result: `enqueued`, `delivered` (a push taken or a poll's ack),
    /// `refused` (a push's 400 or a poll's setErr), `retry` (a push that
    /// failed, tried again after back-off), `dropped` (a full queue's
    /// oldest), `polled` (handed out by a poll).
    pub ssf_tx_sets: IntCounterVec,
    /// Revocations of each node taken unvouched because its daily budget
    /// of vouching on its own baselines was spent.
    pub unvouched: IntCounterVec,
    /// Labelled detections of the last 30 days, by `by` (`all`, `reason`,
    /// `rule`), `name` (a reason code, a rule name, `(policy)`, `(other)`,
    /// `(other rules)`: bounded, `crate::feedback`) and `label`
    /// (`confirmed_compromise`, `false_positive`); recounted on a scrape at
    /// most every ten seconds.
    pub labelled: IntGaugeVec,
    /// 1 when the labelled detections counted were cut at
    /// `feedback::LABELLED_CAP`.
    pub labels_capped: IntGauge,
    /// When `labelled` was last recounted (held while recounting, so
    /// that concurrent scrapes count once).
    pub labels_counted: std::sync::Arc<tokio::sync::Mutex<Option<std::time::Instant>>>,
}

impl Metrics {
    /// A fresh set.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let subscribers = IntGauge::new("vigil_controller_subscribers", "Sync streams open now.")?;
        let frames_sent = IntCounterVec::new(
            Opts::new(
                "vigil_controller_frames_sent_total",
                "Frames of changes written to sync streams, by source (shared: encoded once for every stream; store: read by one stream catching up).",
            ),
            &["source"],
        )?;
        let changes_sent = IntCounterVec::new(
            Opts::new(
                "vigil_controller_changes_sent_total",
                "Changes written to sync streams, by source.",
            ),
            &["source"],
        )?;
        let lagged = IntCounter::new(
            "vigil_controller_stream_lagged_total",
            "Times a sync stream fell behind the shared frames and read the store to catch up.",
        )?;
        let store_read_errors = IntCounter::new(
            "vigil_controller_store_read_errors_total",
            "Reads of the change log that failed.",
        )?;
        let head = IntGauge::new(
            "vigil_controller_head",
            "The newest sequence this controller has read from the log.",
        )?;
        let commit_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "vigil_controller_commit_seconds",
                "Duration of a writing transaction, begin to commit.",
            )
            .buckets(vec![
                0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
        )?;
        let frame_changes = Histogram::with_opts(
            HistogramOpts::new(
                "vigil_controller_frame_changes",
                "Changes in each frame the tail encoded (the delta batch size).",
            )
            .buckets(vec![1.0, 10.0, 100.0, 250.0, 500.0, 1_000.0]),
        )?;
        let notifications = IntCounter::new(
            "vigil_controller_notifications_total",
            "PostgreSQL change notifications received.",
        )?;
        let events = IntCounterVec::new(
            Opts::new(
                "vigil_controller_events_total",
                "Node events posted, by outcome (taken, duplicate, rate_limited).",
            ),
            &["outcome"],
        )?;
        let refused = IntCounterVec::new(
            Opts::new(
                "vigil_controller_node_events_refused_total",
                "Node events refused by the intake rules (a revocation without evidence, an observation beyond the node's daily budget), by node and reason.",
            ),
            &["node", "reason"],
        )?;
        registry.register(Box::new(refused.clone()))?;
        let unvouched = IntCounterVec::new(
            Opts::new(
                "vigil_controller_node_revocations_unvouched_total",
                "A node's revocations on baselines it recorded itself taken unvouched: its node_vouched_revocations_per_day was spent.",
            ),
            &["node"],
        )?;
        registry.register(Box::new(unvouched.clone()))?;
        registry.register(Box::new(subscribers.clone()))?;
        registry.register(Box::new(frames_sent.clone()))?;
        registry.register(Box::new(changes_sent.clone()))?;
        registry.register(Box::new(lagged.clone()))?;
        registry.register(Box::new(store_read_errors.clone()))?;
        registry.register(Box::new(head.clone()))?;
        registry.register(Box::new(commit_seconds.clone()))?;
        registry.register(Box::new(frame_changes.clone()))?;
        registry.register(Box::new(notifications.clone()))?;
        registry.register(Box::new(events.clone()))?;
        let ssf_sets = IntCounterVec::new(
            Opts::new(
                "vigil_controller_ssf_sets_total",
                "SETs pushed by Shared Signals transmitters, by transmitter and result (accepted, verification, ignored, duplicate, unauthorized, too_large, unavailable, or the RFC 8935 error code).",
            ),
            &["transmitter", "result"],
        )?;
        registry.register(Box::new(ssf_sets.clone()))?;
        let outbox_enqueued = IntCounterVec::new(
            Opts::new(
                "vigil_controller_outbox_enqueued_total",
                "Outbound calls (webhooks, logout targets) enqueued, by endpoint and result (pending, duplicate, overflow: dead-lettered at once, the endpoint's queue full).",
            ),
            &["endpoint", "result"],
        )?;
        let outbox_attempts = IntCounterVec::new(
            Opts::new(
                "vigil_controller_outbox_attempts_total",
                "Outbound attempts, by endpoint and result (delivered, failed: retried later, dead: given up).",
            ),
            &["endpoint", "result"],
        )?;
        let outbox_pending = IntGaugeVec::new(
            Opts::new(
                "vigil_controller_outbox_pending",
                "Outbound calls pending, by endpoint (refreshed every minute).",
            ),
            &["endpoint"],
        )?;
        let outbox_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "vigil_controller_outbox_attempt_seconds",
                "Duration of one outbound attempt.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        registry.register(Box::new(outbox_enqueued.clone()))?;
        registry.register(Box::new(outbox_attempts.clone()))?;
        registry.register(Box::new(outbox_pending.clone()))?;
        registry.register(Box::new(outbox_seconds.clone()))?;
        let ssf_tx_sets = IntCounterVec::new(
            Opts::new(
                "vigil_controller_ssf_tx_sets_total",
                "SETs the Shared Signals transmitter handled, by receiver and result (enqueued, delivered, refused, retry, dropped, polled).",
            ),
            &["receiver", "result"],
        )?;
        registry.register(Box::new(ssf_tx_sets.clone()))?;
        let bcl_tokens = IntCounterVec::new(
            Opts::new(
                "vigil_controller_backchannel_logout_tokens_total",
                "OpenID Connect back-channel logout tokens posted, by provider and result (accepted, invalid_request, rate_limited, too_large, unavailable, unknown_provider).",
            ),
            &["provider", "result"],
        )?;
        registry.register(Box::new(bcl_tokens.clone()))?;
        let labelled = IntGaugeVec::new(
            Opts::new(
                "vigil_controller_labelled_detections",
                "Detections of the last 30 days an operator labelled, by what they are counted under (by: all, reason, rule; name: the reason code or rule name, bounded) and label (confirmed_compromise, false_positive).",
            ),
            &["by", "name", "label"],
        )?;
        registry.register(Box::new(labelled.clone()))?;
        let labels_capped = IntGauge::new(
            "vigil_controller_labelled_detections_capped",
            "1 when the labelled detections counted were cut at the newest 100,000.",
        )?;
        registry.register(Box::new(labels_capped.clone()))?;
        Ok(Metrics {
            labelled,
            labels_capped,
            labels_counted: std::sync::Arc::default(),
            outbox_enqueued,
            outbox_attempts,
            outbox_pending,
            outbox_seconds,
            registry,
            subscribers,
            frames_sent,
            changes_sent,
            lagged,
            store_read_errors,
            head,
            commit_seconds,
            frame_changes,
            notifications,
            events,
            ssf_sets,
            bcl_tokens,
            refused,
            ssf_tx_sets,
            unvouched,
        })
    }

    /// Counts a frame of `changes` sent from `source`.
    pub fn sent(&self, source: &str, changes: u64) {
        self.frames_sent.with_label_values(&[source]).inc();
        self.changes_sent
            .with_label_values(&[source])
            .inc_by(changes);
    }

    /// Counts the outcome of a batch of node events.
    pub fn events(&self, outcome: &str, n: u64) {
        self.events.with_label_values(&[outcome]).inc_by(n);
    }

    /// Counts `n` events of `node` refused for `reason`.
    pub fn refused(&self, node: &str, reason: &str, n: u64) {
        self.refused.with_label_values(&[node, reason]).inc_by(n);
    }

    /// The Prometheus text of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}
