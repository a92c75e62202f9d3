//! Every metric the proxy exports, in one place (STYLE.md 9).
//!
//! Names follow `vigil_<area>_<name>_<unit>`; labels are bounded sets taken
//! from config (route and upstream names) or from code (actions, reasons,
//! error codes) — never a user, address or session.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    exponential_buckets,
};
use vigil_engine::{Action, Reason, Ruling};
use vigil_rules::RuleSet;

use crate::respond::Failure;

/// Sets `vigil_proxy_hash_key_info` for the engine's keys.
pub fn hash_keys(metrics: &Metrics, ids: vigil_engine::HashKeyIds) {
    let set = |role: &str, id: vigil_engine::KeyId| {
        metrics
            .hash_key_info
            .with_label_values(&[role, &id.to_string()])
            .set(1);
    };
    set("current", ids.current);
    if let Some(previous) = ids.previous {
        set("previous", previous);
    }
    set("user", ids.user);
}

/// The proxy's metrics, registered in one registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The registry the admin listener exports.
    pub registry: Registry,
    /// `vigil_proxy_requests_total{route}`: requests matched to a route
    /// (`route="none"` for no match, and for requests refused before a
    /// route was chosen: a path with two meanings, a misdirected host).
    pub requests: IntCounterVec,
    /// `vigil_proxy_decisions_total{action,enforced}`: engine decisions;
    /// `enforced="false"` in monitor mode.
    pub decisions: IntCounterVec,
    /// `vigil_proxy_decision_reasons_total{reason}`: reasons behind decisions.
    pub reasons: IntCounterVec,
    /// `vigil_rules_matches_total{rule,mode}`: rule matches; `mode` is
    /// `enforce` for the rule that decided (or a `tag` rule's tag, by
    /// `vigil_rules_tags_total`), `shadow` for a shadow rule's match or any
    /// match on a monitored route.
    pub rule_matches: IntCounterVec,
    /// `vigil_rules_tags_total{tag}`: tags added by `tag` rules.
    pub rule_tags: IntCounterVec,
    /// `vigil_proxy_step_ups_total{stage,outcome}`: OIDC step-ups, by
    /// stage (`start`: a user sent to the provider; `callback`: the
    /// provider's answer) and outcome (`sent`, `passed`, or the refusal's
    /// code, such as `step_up_state_unknown`).
    pub step_ups: IntCounterVec,
    /// `vigil_proxy_pipeline_duration_seconds`: time in the engine per request.
    pub pipeline_seconds: Histogram,
    /// `vigil_proxy_request_errors_total{code,outcome}`: requests the engine
    /// could not evaluate; `outcome` is `refused` or `forwarded` (fail-open).
    /// Also requests refused before any route judged them: `headers_too_large`,
    /// `ambiguous_path` and `nul_in_path` (a path with more than one meaning),
    /// `misdirected` (a host the connection's certificate does not cover).
    pub request_errors: IntCounterVec,
    /// `vigil_proxy_dbsc_total{step,outcome}`: DBSC at the edge; `step` is
    /// `offer`, `register`, `refresh` or `check`, `outcome` what came of it
    /// (`docs/bound-sessions.md`).
    pub dbsc: IntCounterVec,
    /// `vigil_proxy_upstream_errors_total{upstream}`: requests that ended in an
    /// upstream error (the client got a 5xx).
    pub upstream_errors: IntCounterVec,
    /// `vigil_proxy_failures_total{code,answered}`: requests Vigil could not
    /// complete, by [`crate::respond::Failure`] code; `answered="false"`
    /// when nothing could be said (the response had begun, or the client
    /// was gone).
    pub failures: IntCounterVec,
    /// `vigil_proxy_upstream_connect_failures_total{upstream}`: failed
    /// connection attempts, including ones retried elsewhere.
    pub connect_failures: IntCounterVec,
    /// `vigil_proxy_reloads_total{source,result}`: file reloads, `result` is
    /// `reloaded` or `failed` (the old data stays).
    pub reloads: IntCounterVec,
    /// `vigil_proxy_config_reloads_total{result}`: reloads of the config
    /// file, `result` is `applied`, `partial` (applied but for settings that
    /// need a restart) or `failed` (nothing changed).
    pub config_reloads: IntCounterVec,
    /// `vigil_proxy_client_ip_chain_total{outcome}`: forwarding chains that
    /// were not clean: `malformed`, `truncated`, `ignored` (sent by an
    /// untrusted peer), `inconsistent`, `opaque_hop`, `all_trusted`.
    pub chain_anomalies: IntCounterVec,
    /// `vigil_proxy_upstream_healthy_addresses{upstream}`: addresses passing
    /// their active check and not ejected, at the last scrape.
    pub upstream_healthy: prometheus::IntGaugeVec,
    /// `vigil_proxy_tls_hello_total{outcome}`: ClientHellos read on TLS
    /// listeners: `captured`, `unreadable` (not a hello, or beyond the caps),
    /// `timeout`, `closed` (the peer went away first), `untracked` (no socket
    /// cookie to file it under).
    pub tls_hello: IntCounterVec,
    /// `vigil_proxy_connections_open{listener}`: client connections a
    /// listener holds now (after the TLS handshake on TLS listeners).
    pub connections_open: prometheus::IntGaugeVec,
    /// `vigil_proxy_connections_refused_total{listener,reason}`: client
    /// connections closed by a connection limit: `max_connections` (closed
    /// at once, nothing read), `header_timeout` (no whole request head in
    /// time), `header_too_large` (a request head beyond the wire cap).
    pub connections_refused: IntCounterVec,
    /// `vigil_proxy_tls_fingerprint_missing_total`: requests on a TLS
    /// listener whose connection's fingerprint was no longer stored (judged
    /// as unreadable); raise `fingerprint.max_connections` if this grows.
    pub tls_fingerprint_missing: IntCounter,
    /// `vigil_proxy_tls_fingerprints_tracked`: connections whose fingerprint
    /// is stored, as of the last capture.
    pub tls_fingerprints_tracked: IntGauge,
    /// `vigil_engine_sessions_tracked`: sessions with a baseline on this node.
    pub sessions_tracked: IntGauge,
    /// `vigil_engine_sessions_revoked`: revoked sessions remembered on this node.
    pub sessions_revoked: IntGauge,
    /// `vigil_engine_users_tracked`: user profiles on this node.
    pub users_tracked: IntGauge,
    /// `vigil_engine_revocations_minted`: revocations in the budget of
    /// sessions a client could have made up (a sixteenth of
    /// `max_sessions`, at least 1,024); near full, someone mints sessions
    /// to get them revoked.
    pub revocations_minted: IntGauge,
    /// `vigil_engine_evaluations_total`: requests the engine judged (one
    /// evaluation per judged request, response side included), as of the
    /// last scrape.
    pub evaluations: IntCounter,
    /// `vigil_proxy_events_total{kind}`: engine events written to the logs
    /// and metrics (the observability lane).
    pub events: IntCounterVec,
    /// `vigil_proxy_fleet_events_total{kind}`: engine events taken by the
    /// fleet lane (what the controller client will carry).
    pub fleet_events: IntCounterVec,
    /// `vigil_engine_events_dropped_total`: events the observability lane
    /// had no room for (logs and metrics may drop under a flood).
    pub events_dropped: IntCounter,
    /// `vigil_engine_events_lost_total`: fleet events that could not be
    /// queued; each gap is announced on the fleet lane and logged at warn.
    pub events_lost: IntCounter,
    /// `vigil_proxy_snapshots_rejected_total{reason}`: session snapshots
    /// set aside at start (`unauthenticated`, `other_key`, `tampered`,
    /// `rolled_back`, `contents`).
    pub snapshots_rejected: IntCounterVec,
    /// `vigil_proxy_open_requests_ended_total{how}`: requests in flight
    /// that a revocation of their session or user ended
    /// ([`crate::open_requests`]): `closed` (their HTTP/1 connection was
    /// shut down, a second after the revocation) or `flagged` (refused at
    /// their next chunk or when the app answers: HTTP/2, or HTTP/1 gone
    /// within the second).
    pub open_requests_ended: IntCounterVec,
    /// `vigil_proxy_open_requests_untracked_total`: requests with a
    /// session served unfiled because the registry of requests in flight
    /// was full; a revocation does not end them before they end.
    pub open_requests_untracked: IntCounter,
    /// `vigil_proxy_open_requests_tracked`: requests in flight filed by
    /// session, at the last scrape.
    pub open_requests_tracked: IntGauge,
    /// The sync stream from the fleet controller and the events posted to
    /// it (`vigil_proxy_fleet_*`).
    pub fleet: FleetMetrics,
    /// `vigil_proxy_rules_bundles_total{result}`: rule bundles from the
    /// controller (`[rules] source = "controller"`): `applied`,
    /// `unchanged` (in force already) or `rejected` (it does not compile
    /// against this node's config; the running rules stay).
    pub rules_bundles: IntCounterVec,
    /// `vigil_proxy_rules_bundle_version`: the version of the controller's
    /// rule bundle in force; 0 while the node's rules are its files'.
    pub rules_bundle_version: IntGauge,
    /// `vigil_proxy_hash_key_info{role,id}`: 1 for each key the node
    /// hashes with — `role` is `current`, `previous` (during a rotation)
    /// or `user` — and its public id (never the key): which nodes run
    /// which key pair.
    pub hash_key_info: prometheus::IntGaugeVec,
}

/// The controller client's metrics (`docs/controller.md`, Edge node).
#[derive(Debug, Clone)]
pub struct FleetMetrics {
    /// `vigil_proxy_fleet_connected`: 1 while a sync stream is open and
    /// its hello was read, else 0.
    pub connected: IntGauge,
    /// `vigil_proxy_fleet_applied_sequence`: the controller's change
    /// sequence this node's engine holds everything up to.
    pub applied: IntGauge,
    /// `vigil_proxy_fleet_head_sequence`: the newest sequence the
    /// controller announced; `head - applied` is the node's lag.
    pub head: IntGauge,
    /// `vigil_proxy_fleet_resyncs_total{reason}`: full snapshots asked for
    /// because the stream skipped a sequence (`gap`) or the controller is
    /// behind this node (`ahead`).
    pub resyncs: IntCounterVec,
    /// `vigil_proxy_fleet_reconnects_total{reason}`: sync streams ended and
    /// opened again: `connect` (no answer), `unauthorized` (401),
    /// `status` (another answer), `protocol` (a line that is not a frame,
    /// or out of order), `silent` (no line for three heartbeats),
    /// `closed` (the controller ended it), `resync`.
    pub reconnects: IntCounterVec,
    /// `vigil_proxy_fleet_changes_applied_total{kind}`: changes from the
    /// controller applied to the engine, snapshots included.
    pub changes: IntCounterVec,
    /// `vigil_proxy_fleet_events_sent_total`: events the controller took.
    pub events_sent: IntCounter,
    /// `vigil_proxy_fleet_events_dropped_total`: events dropped unsent: the
    /// oldest when the queue was full, or a batch the controller refused
    /// as malformed.
    pub events_dropped: IntCounter,
    /// `vigil_proxy_fleet_events_retried_total`: posts of a batch that
    /// failed and will be sent again (same ids).
    pub events_retried: IntCounter,
    /// `vigil_proxy_fleet_events_queued`: events waiting to be sent (in
    /// the on-disk queue), counted once written and synced: what it shows
    /// survives a crash.
    pub events_queued: IntGauge,
    /// `vigil_proxy_fleet_state_age_seconds`: seconds since a live sync
    /// stream last proved this node current (heartbeats included); as
    /// large as the Unix time for a node never current.
    pub state_age: IntGauge,
    /// `vigil_proxy_fleet_stale_requests_total{route,outcome}`: requests
    /// on a route with `stale_after` while the node's fleet state was
    /// older: `refused` (503 `fleet_stale`, `on_stale = "fail_closed"`) or
    /// `judged` (with what the node has).
    pub stale_requests: IntCounterVec,
}

/// The `reason` values of `vigil_proxy_fleet_reconnects_total`.
pub const FLEET_RECONNECT_REASONS: [&str; 7] = [
    "connect",
    "unauthorized",
    "status",
    "protocol",
    "silent",
    "closed",
    "resync",
];

impl Metrics {
    /// Creates and registers every metric in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let requests = counter(
            "vigil_proxy_requests_total",
            "Requests by matched route.",
            &["route"],
        )?;
        let decisions = counter(
            "vigil_proxy_decisions_total",
            "Engine decisions by action; enforced=false in monitor mode.",
            &["action", "enforced"],
        )?;
        let reasons = counter(
            "vigil_proxy_decision_reasons_total",
            "Reasons found by the scorer.",
            &["reason"],
        )?;
        let rule_matches = counter(
            "vigil_rules_matches_total",
            "Rule matches by rule and mode (enforce: it decided; shadow: recorded only).",
            &["rule", "mode"],
        )?;
        let rule_tags = counter(
            "vigil_rules_tags_total",
            "Tags added by tag rules.",
            &["tag"],
        )?;
        let step_ups = counter(
            "vigil_proxy_step_ups_total",
            "OIDC step-ups by stage (start, callback) and outcome.",
            &["stage", "outcome"],
        )?;
        let request_errors = counter(
            "vigil_proxy_request_errors_total",
            "Requests the engine could not evaluate, by code and what was done.",
            &["code", "outcome"],
        )?;
        let dbsc = counter(
            "vigil_proxy_dbsc_total",
            "DBSC registrations, refreshes and checks, by step and outcome.",
            &["step", "outcome"],
        )?;
        let upstream_errors = counter(
            "vigil_proxy_upstream_errors_total",
            "Requests that ended in an upstream error.",
            &["upstream"],
        )?;
        let failures = counter(
            "vigil_proxy_failures_total",
            "Requests Vigil could not complete, by failure code and whether the client was answered.",
            &["code", "answered"],
        )?;
        for code in Failure::CODES {
            for answered in ["true", "false"] {
                failures.with_label_values(&[code, answered]);
            }
        }
        let connect_failures = counter(
            "vigil_proxy_upstream_connect_failures_total",
            "Failed upstream connection attempts, retried or not.",
            &["upstream"],
        )?;
        let reloads = counter(
            "vigil_proxy_reloads_total",
            "File reloads by source and result; a failed reload keeps the old data.",
            &["source", "result"],
        )?;
        let config_reloads = counter(
            "vigil_proxy_config_reloads_total",
            "Config file reloads by result; partial leaves settings that need a restart, failed changes nothing.",
            &["result"],
        )?;
        for result in ["applied", "partial", "failed"] {
            config_reloads.with_label_values(&[result]);
        }
        let chain_anomalies = counter(
            "vigil_proxy_client_ip_chain_total",
            "Forwarding chains that were malformed, truncated, ignored, inconsistent, opaque or all trusted.",
            &["outcome"],
        )?;
        let upstream_healthy = prometheus::IntGaugeVec::new(
            Opts::new(
                "vigil_proxy_upstream_healthy_addresses",
                "Upstream addresses passing their active check and not ejected.",
            ),
            &["upstream"],
        )?;
        registry.register(Box::new(upstream_healthy.clone()))?;
        // 1 µs to ~16 ms: the engine's budget is microseconds.
        let pipeline_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "vigil_proxy_pipeline_duration_seconds",
                "Time spent in the engine per evaluated request.",
            )
            .buckets(exponential_buckets(1e-6, 2.0, 15)?),
        )?;
        registry.register(Box::new(pipeline_seconds.clone()))?;
        let tls_hello = counter(
            "vigil_proxy_tls_hello_total",
            "ClientHellos read on TLS listeners, by outcome.",
            &["outcome"],
        )?;
        for outcome in ["captured", "unreadable", "timeout", "closed", "untracked"] {
            tls_hello.with_label_values(&[outcome]);
        }
        let connections_open = prometheus::IntGaugeVec::new(
            Opts::new(
                "vigil_proxy_connections_open",
                "Client connections a listener holds now.",
            ),
            &["listener"],
        )?;
        registry.register(Box::new(connections_open.clone()))?;
        let connections_refused = counter(
            "vigil_proxy_connections_refused_total",
            "Client connections closed by a connection limit, by listener and reason.",
            &["listener", "reason"],
        )?;
        let tls_fingerprint_missing = IntCounter::new(
            "vigil_proxy_tls_fingerprint_missing_total",
            "Requests on TLS listeners whose connection fingerprint was no longer stored.",
        )?;
        registry.register(Box::new(tls_fingerprint_missing.clone()))?;
        let tls_fingerprints_tracked = IntGauge::new(
            "vigil_proxy_tls_fingerprints_tracked",
            "Connections whose TLS fingerprint is stored.",
        )?;
        registry.register(Box::new(tls_fingerprints_tracked.clone()))?;
        let sessions_tracked = IntGauge::new(
            "vigil_engine_sessions_tracked",
            "Sessions with a baseline on this node.",
        )?;
        registry.register(Box::new(sessions_tracked.clone()))?;
        let sessions_revoked = IntGauge::new(
            "vigil_engine_sessions_revoked",
            "Revoked sessions remembered on this node.",
        )?;
        registry.register(Box::new(sessions_revoked.clone()))?;
        let users_tracked = IntGauge::new(
            "vigil_engine_users_tracked",
            "User profiles (history of networks and devices) on this node.",
        )?;
        registry.register(Box::new(users_tracked.clone()))?;
        let revocations_minted = IntGauge::new(
            "vigil_engine_revocations_minted",
            "Revocations of sessions a client could have made up, in their own budget.",
        )?;
        registry.register(Box::new(revocations_minted.clone()))?;
        let plain = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let evaluations = plain(
            "vigil_engine_evaluations_total",
            "Requests the engine judged: one evaluation per judged request.",
        )?;
        let events_dropped = plain(
            "vigil_engine_events_dropped_total",
            "Engine events dropped by the observability lane (logs, metrics) for want of room.",
        )?;
        let events_lost = plain(
            "vigil_engine_events_lost_total",
            "Engine events the fleet lane could not queue; each gap is announced and logged.",
        )?;
        let events = counter(
            "vigil_proxy_events_total",
            "Engine events written to logs and metrics, by kind.",
            &["kind"],
        )?;
        let fleet_events = counter(
            "vigil_proxy_fleet_events_total",
            "Engine events taken by the fleet lane, by kind.",
            &["kind"],
        )?;
        let snapshots_rejected = counter(
            "vigil_proxy_snapshots_rejected_total",
            "Session snapshots set aside at start, by reason.",
            &["reason"],
        )?;
        for reason in [
            "unauthenticated",
            "other_key",
            "tampered",
            "rolled_back",
            "contents",
        ] {
            snapshots_rejected.with_label_values(&[reason]);
        }
        let open_requests_ended = counter(
            "vigil_proxy_open_requests_ended_total",
            "Requests in flight ended by a revocation of their session or user, by how (closed, flagged).",
            &["how"],
        )?;
        for how in ["closed", "flagged"] {
            open_requests_ended.with_label_values(&[how]);
        }
        let open_requests_untracked = plain(
            "vigil_proxy_open_requests_untracked_total",
            "Requests with a session served unfiled: the registry of requests in flight was full.",
        )?;
        let open_requests_tracked = IntGauge::new(
            "vigil_proxy_open_requests_tracked",
            "Requests in flight filed by session, at the last scrape.",
        )?;
        registry.register(Box::new(open_requests_tracked.clone()))?;
        let fleet = FleetMetrics::new(&registry)?;
        for kind in vigil_engine::Event::KINDS {
            events.with_label_values(&[kind]);
            fleet_events.with_label_values(&[kind]);
        }

        // Export every action at zero so dashboards and alerts see the series
        // before the first block.
        for action in Action::ALL {
            for enforced in ["true", "false"] {
                decisions.with_label_values(&[action.as_str(), enforced]);
            }
        }
        let rules_bundles = counter(
            "vigil_proxy_rules_bundles_total",
            "Rule bundles from the controller by result (applied, unchanged, rejected: the running rules stay).",
            &["result"],
        )?;
        for result in ["applied", "unchanged", "rejected"] {
            rules_bundles.with_label_values(&[result]);
        }
        let rules_bundle_version = IntGauge::new(
            "vigil_proxy_rules_bundle_version",
            "The version of the controller's rule bundle in force; 0 while the rules are the node's files'.",
        )?;
        registry.register(Box::new(rules_bundle_version.clone()))?;
        let hash_key_info = prometheus::IntGaugeVec::new(
            Opts::new(
                "vigil_proxy_hash_key_info",
                "The session hash keys in use, by role (current, previous, user), named by their public id.",
            ),
            &["role", "id"],
        )?;
        registry.register(Box::new(hash_key_info.clone()))?;
        Ok(Self {
            registry,
            requests,
            decisions,
            reasons,
            rule_matches,
            rule_tags,
            step_ups,
            pipeline_seconds,
            request_errors,
            dbsc,
            upstream_errors,
            failures,
            connect_failures,
            reloads,
            config_reloads,
            chain_anomalies,
            upstream_healthy,
            tls_hello,
            connections_open,
            connections_refused,
            tls_fingerprint_missing,
            tls_fingerprints_tracked,
            sessions_tracked,
            sessions_revoked,
            users_tracked,
            revocations_minted,
            evaluations,
            events,
            fleet_events,
            events_dropped,
            events_lost,
            snapshots_rejected,
            open_requests_ended,
            open_requests_untracked,
            open_requests_tracked,
            fleet,
            rules_bundles,
            rules_bundle_version,
            hash_key_info,
        })
    }
}

impl FleetMetrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let plain = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let counter =
            |name: &str, help: &str, label: &str| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let resyncs = counter(
            "vigil_proxy_fleet_resyncs_total",
            "Full snapshots asked of the controller, by reason (gap, ahead).",
            "reason",
        )?;
        for reason in ["gap", "ahead"] {
            resyncs.with_label_values(&[reason]);
        }
        let reconnects = counter(
            "vigil_proxy_fleet_reconnects_total",
            "Sync streams ended and opened again, by reason.",
            "reason",
        )?;
        for reason in FLEET_RECONNECT_REASONS {
            reconnects.with_label_values(&[reason]);
        }
        let changes = counter(
            "vigil_proxy_fleet_changes_applied_total",
            "Changes from the controller applied to the engine, by kind.",
            "kind",
        )?;
        for kind in [
            "session_revoked",
            "user_revoked",
            "user_step_up",
            "user_risk",
        ] {
            changes.with_label_values(&[kind]);
        }
        Ok(Self {
            connected: gauge(
                "vigil_proxy_fleet_connected",
                "1 while the sync stream from the controller is open.",
            )?,
            applied: gauge(
                "vigil_proxy_fleet_applied_sequence",
                "The controller's change sequence this node holds everything up to.",
            )?,
            head: gauge(
                "vigil_proxy_fleet_head_sequence",
                "The newest change sequence the controller announced.",
            )?,
            resyncs,
            reconnects,
            changes,
            events_sent: plain(
                "vigil_proxy_fleet_events_sent_total",
                "Events the controller took.",
            )?,
            events_dropped: plain(
                "vigil_proxy_fleet_events_dropped_total",
                "Events dropped unsent: the oldest of a full queue, or a batch refused as malformed.",
            )?,
            events_retried: plain(
                "vigil_proxy_fleet_events_retried_total",
                "Failed posts of an event batch, sent again with the same ids.",
            )?,
            events_queued: gauge(
                "vigil_proxy_fleet_events_queued",
                "Events waiting to be sent to the controller.",
            )?,
            state_age: gauge(
                "vigil_proxy_fleet_state_age_seconds",
                "Seconds since a live sync stream last proved this node current.",
            )?,
            stale_requests: {
                let c = IntCounterVec::new(
                    Opts::new(
                        "vigil_proxy_fleet_stale_requests_total",
                        "Requests on a route with stale_after while the fleet state was older, by outcome (refused, judged).",
                    ),
                    &["route", "outcome"],
                )?;
                registry.register(Box::new(c.clone()))?;
                c
            },
        })
    }
}

/// The counters every request touches, resolved once at start so that the
/// request path indexes an array instead of hashing label values.
#[derive(Debug, Clone)]
pub struct RequestCounters {
    /// `requests_total` per route, in config order.
    routes: Vec<IntCounter>,
    no_route: IntCounter,
    /// `decisions_total` per action (in `Action::ALL` order) × enforced.
    decisions: Vec<[IntCounter; 2]>,
    /// `decision_reasons_total` per reason (in `Reason::ALL` order).
    reasons: Vec<IntCounter>,
    /// `rules_matches_total` per rule of the generation's set, [enforce,
    /// shadow].
    rules: Vec<[IntCounter; 2]>,
    /// `rules_tags_total` per tag index of the set.
    tags: Vec<IntCounter>,
}

impl RequestCounters {
    /// Resolves the counters for `route_names` and the rules of `rules`.
    pub fn new<'a>(
        metrics: &Metrics,
        route_names: impl IntoIterator<Item = &'a str>,
        rules: &RuleSet,
    ) -> Self {
        let requests = |name: &str| metrics.requests.with_label_values(&[name]);
        Self {
            rules: rules
                .rules()
                .iter()
                .map(|r| {
                    [
                        metrics
                            .rule_matches
                            .with_label_values(&[r.name.as_str(), "enforce"]),
                        metrics
                            .rule_matches
                            .with_label_values(&[r.name.as_str(), "shadow"]),
                    ]
                })
                .collect(),
            tags: (0..=u8::MAX)
                .map_while(|i| rules.tag(i))
                .map(|t| metrics.rule_tags.with_label_values(&[t]))
                .collect(),
            routes: route_names.into_iter().map(requests).collect(),
            no_route: requests("none"),
            decisions: Action::ALL
                .iter()
                .map(|a| {
                    [
                        metrics.decisions.with_label_values(&[a.as_str(), "false"]),
                        metrics.decisions.with_label_values(&[a.as_str(), "true"]),
                    ]
                })
                .collect(),
            reasons: Reason::ALL
                .iter()
                .map(|r| metrics.reasons.with_label_values(&[r.code()]))
                .collect(),
        }
    }

    /// Counts a request for route `index`, or for no route.
    pub fn request(&self, index: Option<usize>) {
        index
            .and_then(|i| self.routes.get(i))
            .unwrap_or(&self.no_route)
            .inc();
    }

    /// Counts a decision.
    pub fn decision(&self, action: Action, enforced: bool) {
        if let Some(pair) = Action::ALL
            .iter()
            .position(|a| *a == action)
            .and_then(|i| self.decisions.get(i))
        {
            pair[usize::from(enforced)].inc();
        }
    }

    /// Counts the rule matches of a ruling: the deciding rule as enforced
    /// unless `monitored` (then as shadow), every shadow match, every tag.
    pub fn ruling(&self, ruling: &Ruling, monitored: bool) {
        if let Some(pair) = ruling.rule.and_then(|i| self.rules.get(usize::from(i))) {
            pair[usize::from(monitored)].inc();
        }
        for i in &ruling.shadow {
            if let Some(pair) = self.rules.get(usize::from(*i)) {
                pair[1].inc();
            }
        }
        if ruling.tags == 0 {
            return;
        }
        for (i, tag) in self.tags.iter().enumerate() {
            if ruling.tags & (1 << i) != 0 {
                tag.inc();
            }
        }
    }

    /// Counts a reason.
    pub fn reason(&self, reason: Reason) {
        if let Some(c) = Reason::ALL
            .iter()
            .position(|r| *r == reason)
            .and_then(|i| self.reasons.get(i))
        {
            c.inc();
        }
    }
}

/// Brings a counter kept elsewhere (the engine's) up to `value`.
pub(crate) fn catch_up(counter: &IntCounter, value: u64) {
    counter.inc_by(value.saturating_sub(counter.get()));
}
