//! The dashboard's pages: overview, detections, one detection, one user,
//! search. Each reads the store (bounded lists), prepares plain values
//! ([`super::view`]) and renders its template.

use std::sync::Arc;

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use vigil_fleet::UserId;

use super::chart::{Chart, RiskChart, chart, risk_chart};
use super::view::{Baseline, Detection, Nav, RequestFacts, time};
use super::{PageError, operator, page, query};
use crate::api::{App, now_secs, user_id};
use crate::config::UserNames;
use crate::store::{
    AuditCursor, DetectionCursor, SessionCursor, SessionRow, TIMELINE_SECOND_CAP, TimelinePage,
};

/// Rows on a page of a list.
pub(crate) const PAGE_SIZE: usize = 50;

/// Rows in each list of the overview.
const OVERVIEW_ROWS: usize = 15;

/// The chart's buckets: 24 of an hour.
const BUCKET_SECS: u64 = 3_600;
const BUCKETS: u32 = 24;

/// Detections whose reasons the overview counts at most.
const REASON_CAP: usize = 10_000;

/// Sessions and detections a user page shows at most.
const USER_ROWS: usize = 100;

/// Hours of a user's entity risk charted.
const RISK_HOURS: u32 = 168;

/// A user's detections their risk chart is rebuilt from at most (the
/// newest).
const RISK_CAP: usize = 2_000;

/// Entries of a user's timeline shown (the newest).
const TIMELINE_ROWS: usize = 50;

/// Offsets a list may be paged to: beyond, a search serves better.
const MAX_OFFSET: u64 = 100_000;

fn offset_of(q: &std::collections::HashMap<String, String>) -> Result<u64, PageError> {
    match q.get("offset") {
        None => Ok(0),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|o| *o <= MAX_OFFSET && !v.starts_with('+'))
            .ok_or_else(|| PageError::BadRequest(format!("offset is 0 to {MAX_OFFSET}"))),
    }
}

/// Where a paged list stands, paged by keyset: whether this is a page
/// after the first (a link back to the newest), and the cursor of the
/// page after it, when more rows follow.
struct Paging {
    deeper: bool,
    next: Option<String>,
}

impl Paging {
    /// The page after `before`, or from `offset` (links made before
    /// cursors), whose last row's cursor is `last`; `more` rows follow.
    fn of(before: bool, offset: u64, more: bool, last: Option<String>) -> Self {
        Self {
            deeper: before || offset > 0,
            next: if more { last } else { None },
        }
    }
}

/// The `before` cursor of a list's query, read by `parse`: `400` with
/// what is wrong with it; `offset` and `before` together are `400` too.
fn cursor_of<C>(
    q: &std::collections::HashMap<String, String>,
    parse: impl Fn(&str) -> Result<C, String>,
) -> Result<Option<C>, PageError> {
    match q.get("before") {
        None => Ok(None),
        Some(_) if q.contains_key("offset") => Err(PageError::BadRequest(
            "give before or offset, not both".into(),
        )),
        Some(c) => parse(c)
            .map(Some)
            .map_err(|why| PageError::BadRequest(format!("before: {why}"))),
    }
}

/// The `user` of a list's query: a user key, or `400`.
fn user_param(key: Option<&String>) -> Result<UserId, PageError> {
    key.and_then(|k| UserId::parse(k)).ok_or_else(|| {
        PageError::BadRequest("user: a user key is 16 lower-case hex digits, not all zero".into())
    })
}

// === overview ===

struct RiskyRow {
    key: String,
    name: Option<String>,
    entity_risk: u8,
    detections: u8,
    risk_points: u8,
    revoked_at: Option<String>,
}

struct NodeRow {
    name: String,
    disabled: Option<&'static str>,
    streams: u32,
    last_sync: String,
    last_events: String,
    lag: Option<u64>,
    rules: String,
    rules_failure: bool,
}

#[derive(Template)]
#[template(path = "dashboard/overview.html")]
struct Overview {
    nav: Nav,
    now: String,
    head: u64,
    chart: Chart,
    total_day: u64,
    /// Requests judged, as nodes count them (`super::rules`).
    judged: super::rules::Judged,
    reasons: Vec<(String, u64)>,
    reasons_capped: bool,
    risky: Vec<RiskyRow>,
    more_risky: bool,
    detections: Vec<Detection>,
    nodes: Vec<NodeRow>,
    streams: SignalStreams,
}

/// `GET /dashboard`.
pub(crate) async fn overview(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, PageError> {
    let operator = operator(&app, &headers)?;
    query(raw.as_deref(), &[])?;
    let now = now_secs();
    let since =
        (now / BUCKET_SECS * BUCKET_SECS).saturating_sub(BUCKET_SECS * u64::from(BUCKETS - 1));
    let buckets = app.store.detection_buckets(since, BUCKET_SECS).await?;
    let chart = chart(&buckets, now, BUCKET_SECS, BUCKETS);
    let total_day = buckets.counts.values().flat_map(|a| a.values()).sum();
    let judged = super::rules::judged(&app, now).await?;
    let (reasons, read) = app.store.reason_counts(since, REASON_CAP).await?;
    let mut reasons: Vec<(String, u64)> = reasons.into_iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    reasons.truncate(OVERVIEW_ROWS);
    let weight = vigil_engine::ScoreConfig::default().recent_detection;
    let (users, more_risky) = app.store.risky_users(now, weight, OVERVIEW_ROWS, 0).await?;
    let names = app.config.user_names == UserNames::Clear;
    let risky = users
        .iter()
        .map(|u| RiskyRow {
            key: u.user.to_string(),
            name: if names { u.name.clone() } else { None },
            entity_risk: u.entity_risk,
            detections: u.detections,
            risk_points: u.risk_points,
            revoked_at: u.revoked_at.map(time),
        })
        .collect();
    let (recent, _) = app
        .store
        .recent_detections(OVERVIEW_ROWS, None, None, 0)
        .await?;
    let head = app.store.bounds().await?.head;
    app.refresh_disabled().await?;
    let disabled = app.disabled.borrow().clone();
    let reported = app.store.node_rules().await?;
    let nodes = app
        .config
        .nodes
        .iter()
        .map(|n| {
            let seen = app.fleet.get(&n.name);
            let status = reported.get(&n.name);
            NodeRow {
                name: n.name.clone(),
                disabled: if n.disabled {
                    Some("config")
                } else if disabled.contains(&n.name) {
                    Some("admin API")
                } else {
                    None
                },
                streams: seen.streams,
                last_sync: time(seen.last_sync),
                last_events: time(seen.last_events),
                lag: (seen.streams > 0).then(|| head.saturating_sub(seen.cursor)),
                rules: status.and_then(|s| s.applied.as_ref()).map_or_else(
                    || "-".to_owned(),
                    |(v, _, at)| format!("v{v} at {}", time(*at)),
                ),
                rules_failure: status.is_some_and(|s| s.failure.is_some()),
            }
        })
        .collect();
    page(&Overview {
        nav: operator.nav(),
        now: time(now),
        head,
        chart,
        total_day,
        judged,
        reasons,
        reasons_capped: read >= REASON_CAP,
        risky,
        more_risky,
        detections: recent.iter().map(Detection::of).collect(),
        nodes,
        streams: signal_streams(&app, now).await?,
    })
}

// === overview: signal streams ===

/// A transmitter the controller receives SETs from (`[[ssf.transmitters]]`).
struct ReceivedRow {
    name: String,
    issuer: String,
    delivery: &'static str,
    last_set: String,
    verified: Option<(String, String)>,
}

/// A stream the controller transmits on (`[ssf_transmitter]`).
struct TransmittedRow {
    receiver: String,
    stream_id: String,
    status: String,
    reason: Option<String>,
    queued: u64,
    dropped: u64,
    failures: u64,
    next_try: Option<String>,
}

/// The Shared Signals streams, received and transmitted, and their state.
struct SignalStreams {
    received: Vec<ReceivedRow>,
    /// `None` when the controller transmits none (`[ssf_transmitter]` unset).
    transmitted: Option<Vec<TransmittedRow>>,
    /// More streams are held than shown.
    more_transmitted: bool,
}

/// Streams transmitted shown at most.
const STREAM_ROWS: usize = 20;

async fn signal_streams(app: &App, now: u64) -> Result<SignalStreams, PageError> {
    let mut received = Vec::with_capacity(app.config.ssf.len());
    for t in &app.config.ssf {
        let record = app.store.ssf_stream(&t.name).await?;
        received.push(ReceivedRow {
            name: t.name.clone(),
            issuer: t.issuer.clone(),
            delivery: if t.poll.is_some() { "poll" } else { "push" },
            last_set: record
                .as_ref()
                .map_or_else(|| "none yet".to_owned(), |r| time(r.last_set)),
            verified: record
                .and_then(|r| r.verification)
                .map(|(at, state)| (time(at), state)),
        });
    }
    let (transmitted, more_transmitted) = if app.config.ssf_tx.is_some() {
        let all = app.store.ssf_tx_all_streams().await?;
        let more = all.len() > STREAM_ROWS;
        let mut rows = Vec::with_capacity(all.len().min(STREAM_ROWS));
        for s in all.into_iter().take(STREAM_ROWS) {
            rows.push(TransmittedRow {
                queued: app.store.ssf_tx_queued(&s.stream_id).await?,
                receiver: s.client,
                stream_id: s.stream_id,
                status: s.status,
                reason: s.reason,
                dropped: s.dropped,
                failures: s.failures,
                next_try: (s.failures > 0 && s.next_try / 1_000 > now)
                    .then(|| time(s.next_try / 1_000)),
            });
        }
        (Some(rows), more)
    } else {
        (None, false)
    };
    Ok(SignalStreams {
        received,
        transmitted,
        more_transmitted,
    })
}

// === detections ===

#[derive(Template)]
#[template(path = "dashboard/detections.html")]
struct Detections {
    nav: Nav,
    /// The user the list is of, when one: `&user=KEY` in its links.
    user: Option<String>,
    detections: Vec<Detection>,
    paging: Paging,
}

/// `GET /dashboard/detections?before=&user=`: every detection held (of
/// one user with `user=KEY`), newest first, [`PAGE_SIZE`] a page, paged by
/// keyset (`before`, the last row's cursor); `offset` still reads.
pub(crate) async fn detections(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, PageError> {
    let operator = operator(&app, &headers)?;
    let q = query(raw.as_deref(), &["offset", "before", "user"])?;
    let offset = offset_of(&q)?;
    let before = cursor_of(&q, DetectionCursor::parse)?;
    let user = q.get("user").map(|k| user_param(Some(k))).transpose()?;
    let (list, more) = app
        .store
        .recent_detections(PAGE_SIZE, user, before.as_ref(), offset)
        .await?;
    let last = list
        .last()
        .map(|d| DetectionCursor::after(&d.row).to_string());
    page(&Detections {
        nav: operator.nav(),
        user: user.map(|u| u.to_string()),
        detections: list.iter().map(Detection::of).collect(),
        paging: Paging::of(before.is_some(), offset, more, last),
    })
}

// === one detection ===

#[derive(Template)]
#[template(path = "dashboard/detection.html")]
struct DetectionPage {
    nav: Nav,
    reference: String,
    detections: Vec<(Detection, Option<RequestFacts>, Option<Baseline>)>,
}

/// `GET /dashboard/detection?reference=`: every node's detection with
/// that reference id, with all its stored facts — the request's as the
/// node reported them — and, when the session's record is held, the
/// device and network it was baselined on.
pub(crate) async fn detection(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, PageError> {
    let operator = operator(&app, &headers)?;
    let q = query(raw.as_deref(), &["reference"])?;
    let reference = q.get("reference").map(|r| r.trim()).unwrap_or_default();
    crate::admin::check_reference(reference)?;
    let found = app.store.detections_by_reference(reference, 16).await?;
    if found.is_empty() {
        return Err(PageError::NotFound(format!(
            "no detection with reference {reference:?} is held: unknown, not reported by a node, or past keep_detections_days"
        )));
    }
    let mut detections = Vec::with_capacity(found.len());
    for d in &found {
        let baseline = match &d.row.session {
            Some(s) => app
                .store
                .session_record(s)
                .await?
                .and_then(|h| h.state)
                .map(|s| Baseline::of(&s)),
            None => None,
        };
        let facts = app
            .store
            .request_facts(&d.row.node, &d.row.reference)
            .await?
            .map(|f| RequestFacts::of(&f));
        detections.push((Detection::of(d), facts, baseline));
    }
    page(&DetectionPage {
        nav: operator.nav(),
        reference: reference.to_owned(),
        detections,
    })
}

// === one user ===

struct SessionView {
    session: String,
    node: String,
    confirmed: bool,
    revoked: bool,
    baseline: Option<Baseline>,
}

impl SessionView {
    fn of(s: &SessionRow) -> Self {
        Self {
            session: s.session.clone(),
            node: s.node.clone().unwrap_or_else(|| "-".to_owned()),
            confirmed: s.confirmed,
            revoked: s.revoked,
            baseline: s.state.as_ref().map(Baseline::of),
        }
    }
}

#[derive(Template)]
#[template(path = "dashboard/user.html")]
struct UserPage {
    nav: Nav,
    key: String,
    name: Option<String>,
    names_kept: bool,
    entity_risk: u8,
    detections_in_force: Option<(u8, String)>,
    risk: Option<(u8, String)>,
    revoked_at: Option<String>,
    sessions: Vec<SessionView>,
    /// The cursor of the sessions list after the last record shown, when
    /// the user has more.
    older_sessions: Option<String>,
    detections: Vec<Detection>,
    /// The cursor of the detections list after the last one shown, when
    /// the user has more.
    older_detections: Option<String>,
    trusted: Vec<(String, String, String)>,
    risk_chart: RiskChart,
    timeline: TimelineView,
}

struct TimelineRow {
    at: String,
    what: &'static str,
    detail: String,
    reference: Option<String>,
}

/// A page of a user's timeline as shown.
struct TimelineView {
    entries: Vec<TimelineRow>,
    /// The `before` of the next page.
    next: Option<u64>,
    /// The second of this page some of which is not listed, and of what.
    crowded: Option<(String, &'static str)>,
    second_cap: usize,
}

impl TimelineView {
    fn of(page: TimelinePage) -> Self {
        Self {
            entries: page
                .entries
                .into_iter()
                .map(|e| TimelineRow {
                    at: time(e.at),
                    what: e.what,
                    detail: e.detail,
                    reference: e.reference,
                })
                .collect(),
            next: page.next,
            crowded: page.crowded.map(|(at, what)| (time(at), what)),
            second_cap: TIMELINE_SECOND_CAP,
        }
    }
}

/// `GET /dashboard/user?key=` (16 hex digits) or `?name=` (hashed as
/// nodes hash it).
pub(crate) async fn user(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, PageError> {
    let operator = operator(&app, &headers)?;
    let q = query(raw.as_deref(), &["key", "name"])?;
    let (user, given) = match (q.get("key"), q.get("name")) {
        (Some(key), None) => (
            UserId::parse(key).ok_or_else(|| {
                PageError::BadRequest("a user key is 16 lower-case hex digits, not all zero".into())
            })?,
            None,
        ),
        (None, Some(name)) => (user_id(&app, name)?, Some(name.clone())),
        _ => {
            return Err(PageError::BadRequest(
                "give exactly one of key and name".into(),
            ));
        }
    };
    if given.is_some() {
        // A name is never in a link: the page's address is by key.
        return Ok(Redirect::to(&format!("/dashboard/user?key={user}")).into_response());
    }
    let d = app.store.user_detail(user, USER_ROWS).await?;
    let now = now_secs();
    let count = d
        .detection_count
        .filter(|(c, until)| *c > 0 && *until > now);
    let risk = d.risk.filter(|(p, until)| *p > 0 && *until > now);
    let weight = u64::from(vigil_engine::ScoreConfig::default().recent_detection);
    let entity = count.map_or(0, |(c, _)| u64::from(c.min(3)) * weight)
        + risk.map_or(0, |(p, _)| u64::from(p));
    let names_kept = app.config.user_names == UserNames::Clear;
    let (found, more) = app
        .store
        .recent_detections(USER_ROWS, Some(user), None, 0)
        .await?;
    let window = app.config.detection_window;
    let since = now.saturating_sub(u64::from(RISK_HOURS) * 3_600 + window);
    let inputs = app.store.risk_inputs(user, since, RISK_CAP).await?;
    let risk_chart = risk_chart(
        &inputs,
        now,
        window,
        vigil_engine::ScoreConfig::default().recent_detection,
        RISK_HOURS,
    );
    let timeline = app.store.user_timeline(user, TIMELINE_ROWS, None).await?;
    page(&UserPage {
        nav: operator.nav(),
        key: user.to_string(),
        name: if names_kept { d.name.clone() } else { None },
        names_kept,
        entity_risk: u8::try_from(entity.min(100)).unwrap_or(100),
        detections_in_force: count.map(|(c, until)| (c, time(until))),
        risk: risk.map(|(p, until)| (p, time(until))),
        revoked_at: d.revoked_at.map(time),
        sessions: d.sessions.iter().map(SessionView::of).collect(),
        older_sessions: d.more_sessions.as_ref().map(ToString::to_string),
        detections: found.iter().map(Detection::of).collect(),
        older_detections: if more {
            found
                .last()
                .map(|d| DetectionCursor::after(&d.row).to_string())
        } else {
            None
        },
        risk_chart,
        timeline: TimelineView::of(timeline),
        trusted: d
            .trusted
            .iter()
            .map(|t| (t.what.clone(), t.value.clone(), time(t.at)))
            .collect(),
    })
}

// === one user's sessions ===

#[derive(Template)]
#[template(path = "dashboard/sessions.html")]
struct SessionsPage {
    nav: Nav,
    key: String,
    sessions: Vec<SessionView>,
    next: Option<String>,
}

/// `GET /dashboard/sessions?user=KEY&before=CURSOR`: a user's held
/// session records, newest first seen, [`PAGE_SIZE`] a page,
/// by keyset (the user page shows the first [`USER_ROWS`] and links here
/// when there are more).
pub(crate) async fn sessions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, PageError> {
    let operator = operator(&app, &headers)?;
    let q = query(raw.as_deref(), &["user", "before"])?;
    let user = user_param(q.get("user"))?;
    let before = cursor_of(&q, SessionCursor::parse)?;
    let (rows, next) = app
        .store
        .user_sessions(user, PAGE_SIZE, before.as_ref())
        .await?;
    page(&SessionsPage {
        nav: operator.nav(),
        key: user.to_string(),
        sessions: rows.iter().map(SessionView::of).collect(),
        next: next.as_ref().map(ToString::to_string),
    })
}

// === one user's timeline ===

#[derive(Template)]
#[template(path = "dashboard/timeline.html")]
struct TimelinePageView {
    nav: Nav,
    key: String,
    before: String,
    timeline: TimelineView,
}

/// `GET /dashboard/timeline?user=KEY&before=T`: a user's timeline older
/// than `T` (seconds since the Unix epoch), [`TIMELINE_ROWS`] a page and
/// the rest of its last second (the user page shows the first).
pub(crate) async fn timeline(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, PageError> {
    let operator = operator(&app, &headers)?;
    let q = query(raw.as_deref(), &["user", "before"])?;
    let user = user_param(q.get("user"))?;
    let before = q
        .get("before")
        .ok_or_else(|| PageError::BadRequest("before: give the time the page ends".into()))?;
    let before = before
        .parse::<u64>()
        .ok()
        .filter(|t| !before.starts_with('+') && i64::try_from(*t).is_ok())
        .ok_or_else(|| {
            PageError::BadRequest("before: decimal seconds since the Unix epoch".into())
        })?;
    let page_of = app
        .store
        .user_timeline(user, TIMELINE_ROWS, Some(before))
        .await?;
    page(&TimelinePageView {
        nav: operator.nav(),
        key: user.to_string(),
        before: time(before),
        timeline: TimelineView::of(page_of),
    })
}

// === search ===

struct SessionHitView {
    session: String,
    user: Option<String>,
    node: String,
    baseline: Option<Baseline>,
}

#[derive(Template)]
#[template(path = "dashboard/search.html")]
struct SearchPage {
    nav: Nav,
    q: String,
    searched: bool,
    user_by_key: Option<String>,
    user_by_name: Option<String>,
    detections: Vec<Detection>,
    sessions: Vec<SessionHitView>,
    notes: Vec<String>,
    /// What the detections below were found by (client address, ASN,
    /// JA4), when `q` named one.
    by_fact: Option<String>,
    by_fact_hits: Vec<Detection>,
    /// Their pages: 50 each, by the detections list's cursor.
    by_fact_paging: Paging,
}

/// Shortest session key prefix searched: shorter ones match too much.
const MIN_PREFIX: usize = 6;

/// `GET /dashboard/search?q=`: a user key, a user name, a session key
/// prefix, a reference id — whatever `q` can be, each looked up.
pub(crate) async fn search(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, PageError> {
    let operator = operator(&app, &headers)?;
    let q = query(raw.as_deref(), &["q", "before"])?;
    let text = q.get("q").map(|q| q.trim().to_owned()).unwrap_or_default();
    // A later page of detections by a fact: only that search runs.
    let before = cursor_of(&q, DetectionCursor::parse)?;
    let mut found = SearchPage {
        nav: operator.nav(),
        q: text.clone(),
        searched: !text.is_empty(),
        user_by_key: None,
        user_by_name: None,
        detections: Vec::new(),
        sessions: Vec::new(),
        notes: Vec::new(),
        by_fact: None,
        by_fact_hits: Vec::new(),
        by_fact_paging: Paging::of(before.is_some(), 0, false, None),
    };
    if text.is_empty() {
        return page(&found);
    }
    if text.len() > 256 {
        return Err(PageError::BadRequest(
            "a search is at most 256 bytes".into(),
        ));
    }
    if before.is_some() {
        search_facts(&app, &text, before.as_ref(), &mut found).await?;
        if found.by_fact.is_none() {
            return Err(PageError::BadRequest(
                "before: only a search by client address, ASN or JA4 has pages".into(),
            ));
        }
        return page(&found);
    }
    let lower = text.to_ascii_lowercase();
    let hex = lower.bytes().all(|b| b.is_ascii_hexdigit());
    // A reference id is 16 hex digits, as a user key is: offer the user
    // only when the store holds something of theirs, or every reference
    // searched would lead first to an empty user page.
    if let Some(user) = UserId::parse(&lower)
        && user_held(&app, user).await?
    {
        found.user_by_key = Some(user.to_string());
    }
    if crate::admin::check_reference(&text).is_ok() {
        let list = app.store.detections_by_reference(&text, 16).await?;
        found.detections = list.iter().map(Detection::of).collect();
    }
    if hex && (MIN_PREFIX..=32).contains(&lower.len()) {
        found.sessions = app
            .store
            .sessions_by_prefix(&lower, PAGE_SIZE)
            .await?
            .into_iter()
            .map(|h| SessionHitView {
                session: h.session,
                user: h.user.map(|u| u.to_string()),
                node: h.node.unwrap_or_else(|| "-".to_owned()),
                baseline: h.state.as_ref().map(Baseline::of),
            })
            .collect();
    } else if hex && lower.len() < MIN_PREFIX {
        found.notes.push(format!(
            "a session key prefix is at least {MIN_PREFIX} hex digits"
        ));
    }
    if let Ok(user) = user_id(&app, &text)
        && user_held(&app, user).await?
    {
        found.user_by_name = Some(user.to_string());
    }
    search_facts(&app, &text, None, &mut found).await?;
    page(&found)
}

/// Whether the store holds anything of `user`: a session, a detection,
/// a count, risk points or a revocation.
async fn user_held(app: &App, user: UserId) -> Result<bool, PageError> {
    let d = app.store.user_detail(user, 1).await?;
    Ok(!(d.sessions.is_empty()
        && d.detections.is_empty()
        && d.detection_count.is_none()
        && d.risk.is_none()
        && d.revoked_at.is_none()))
}

/// Detections by the facts their requests were judged on: a client
/// address or CIDR prefix (a range of keys), `AS` and a number, a JA4.
async fn search_facts(
    app: &App,
    text: &str,
    before: Option<&DetectionCursor>,
    found: &mut SearchPage,
) -> Result<(), PageError> {
    let mut show = |by: String, (list, more): (Vec<crate::store::DetectionFacts>, bool)| {
        found.by_fact = Some(by);
        found.by_fact_hits = list.iter().map(Detection::of).collect();
        let last = list
            .last()
            .map(|d| DetectionCursor::after(&d.row).to_string());
        found.by_fact_paging = Paging::of(before.is_some(), 0, more, last);
    };
    if let Some(range) = crate::store::IpRange::parse(text) {
        match range {
            Ok(range) => show(
                "client address".to_owned(),
                app.store
                    .detections_by_client(&range, PAGE_SIZE, before)
                    .await?,
            ),
            Err(why) => found.notes.push(why),
        }
        return Ok(());
    }
    let upper = text.to_ascii_uppercase();
    if let Some(number) = upper
        .strip_prefix("AS")
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    {
        match number.parse::<u32>() {
            Ok(asn) if asn > 0 => show(
                format!("ASN AS{asn}"),
                app.store.detections_by_asn(asn, PAGE_SIZE, before).await?,
            ),
            _ => found
                .notes
                .push("an ASN is `AS` and a number from 1 to 4294967295".to_owned()),
        }
        return Ok(());
    }
    // The hex parts are lower case; `a` is kept as the client made it (its
    // ALPN characters) and tried in lower case too.
    let lower = text.to_ascii_lowercase();
    let typed = match (text.get(..11), text.get(11..)) {
        (Some(a), Some(rest)) => format!("{a}{}", rest.to_ascii_lowercase()),
        _ => lower.clone(),
    };
    if vigil_fleet::is_ja4(&typed) {
        show(
            "JA4".to_owned(),
            app.store
                .detections_by_ja4(&[&typed, &lower], PAGE_SIZE, before)
                .await?,
        );
    }
    Ok(())
}

// === audit ===

struct AuditRow {
    at: String,
    who: String,
    role: String,
    client: String,
    action: String,
    target: String,
    outcome: String,
}

#[derive(Template)]
#[template(path = "dashboard/audit.html")]
struct AuditPage {
    nav: Nav,
    entries: Vec<AuditRow>,
    paging: Paging,
}

/// `GET /dashboard/audit?before=`: what operators did through the
/// dashboard, newest first, [`PAGE_SIZE`] a page, paged by keyset
/// (`before`); `offset` still reads.
pub(crate) async fn audit(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, PageError> {
    let operator = operator(&app, &headers)?;
    let q = query(raw.as_deref(), &["offset", "before"])?;
    let offset = offset_of(&q)?;
    let before = cursor_of(&q, AuditCursor::parse)?;
    let (list, more) = app
        .store
        .audit_page(PAGE_SIZE, before.as_ref(), offset)
        .await?;
    let last = list.last().map(|e| AuditCursor::after(e).to_string());
    page(&AuditPage {
        nav: operator.nav(),
        entries: list
            .into_iter()
            .map(|e| AuditRow {
                at: time(e.at),
                who: e.who,
                role: e.role,
                client: e.client.unwrap_or_else(|| "-".to_owned()),
                action: e.action,
                target: e.target,
                outcome: e.outcome,
            })
            .collect(),
        paging: Paging::of(before.is_some(), offset, more, last),
    })
}
