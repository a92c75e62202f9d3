//! One load run against one target.
//!
//! `threads` worker threads, each a single-threaded tokio runtime with its
//! own connections and [`Tally`], so that nothing is shared on the hot path
//! but a few counters for the progress line. A session lives on one worker
//! (session index modulo `threads`), and its requests of one lap are sent
//! in corpus order: a request waits for the session's previous one in the
//! lap to complete, as a browser's navigation would.
//!
//! - **Rate** (open loop): request `i` of a worker is due at
//!   [`Schedule::intended`]`(i)` and sent by a task of its own; latency
//!   runs from that instant, so time spent waiting for a connection, for
//!   the session's previous request or for an in-flight slot
//!   (`max_in_flight`) counts against the target. The wait for that
//!   instant is a [`Pacer`]'s (a microsecond timer; tokio's tick is a
//!   millisecond), and how late each request still left is recorded apart
//!   ([`Tally::sent_late`]): the generator's own share of the latency.
//! - **Concurrency** (closed loop): `n` lanes per run, each a task owning a
//!   share of the sessions and sending their requests back to back;
//!   latency runs from the moment the lane was free.
//!
//! HTTP/1.1 connections are driven by the task that uses them (no task of
//! their own) and pooled per device profile; every request's headers are
//! a clone of the step's, built once.
//!
//! The corpus is replayed in laps until the duration or the request cap is
//! reached; each lap's sessions are new ones (the cookie carries the run
//! id, the round and the lap), so a lap never replays a session Vigil has
//! already judged.
//!
//! Cookies: each client of a session (the owner; the thief from the theft
//! on) keeps a [`Jar`], per lap, on the session's worker, from the lap's
//! first request of the session to its last. A session's requests in one
//! lap never overlap (above), so its jars are read and written in corpus
//! order without locks; in the open loop a late target can hold the end
//! of one lap of a session while the next lap's begins, and each lap
//! keeps its own jars throughout: the request sends what its client's jar
//! holds, the response's `Set-Cookie` goes into that jar (Vigil's
//! companion cookie, [`crate::jar`]), and the owner's request marked
//! `steal` leaves a copy of the owner's jar to the thief (without a mark,
//! the thief copies it at its first request). The think time
//! ([`RunConfig::think`]) paces a lane's requests, so that a session's
//! requests are that far apart in the proxy's clock too.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Empty};
use tokio::sync::{Semaphore, oneshot};
use tokio::time::{Instant, Sleep};
use vigil_eval::scenario::Actor;

use crate::jar::{Jar, SetCookie, set_cookies};
use crate::outcome::{Outcome, classify};
use crate::pacer::Pacer;
use crate::plan::{Plan, Step};
use crate::schedule::Schedule;
use crate::stats::Tally;
use crate::target::{Endpoint, H1Conn, Protocol, Sender};

/// Open or closed loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// Requests per second, over all threads.
    Rate(u64),
    /// Requests in flight, over all threads.
    Concurrency(usize),
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Rate or concurrency.
    pub load: Load,
    /// How long to send (in-flight requests then get `timeout` to finish).
    pub duration: Duration,
    /// Hard cap on requests sent, logins included.
    pub max_requests: u64,
    /// Stop after playing the corpus this many times (each thread its share).
    pub laps: Option<u64>,
    /// Worker threads.
    pub threads: usize,
    /// Most requests in flight per thread in rate mode.
    pub max_in_flight: usize,
    /// Longest a request may take; beyond it is an error of kind `timeout`.
    pub timeout: Duration,
    /// Path of the login request.
    pub login_path: String,
    /// Width of a timeline interval.
    pub interval: Duration,
    /// Closed loop only: how long a lane pauses after each request before
    /// its next (a user reading the page). Zero by default; the lane's
    /// latency clock starts after the pause.
    pub think: Duration,
    /// HTTP/1.1 only: every request on a connection of its own, sent with
    /// `Connection: close` and never pooled (`--new-connection`), so that
    /// each request pays a connect (and over TLS a handshake).
    pub new_connection: bool,
    /// This invocation's id, carried by every session cookie beside the
    /// round and the lap: rounds tell one invocation's runs apart, this
    /// tells invocations apart, so that a second `vigil-load run` against
    /// the same proxy (a warm-up, then the measured run) never replays a
    /// session the proxy already judged. `vigil-load run` draws it at
    /// random.
    pub run_id: u32,
}

/// Counters the progress line reads while a run goes on.
#[derive(Debug, Default)]
pub struct Progress {
    /// Requests completed.
    pub done: AtomicU64,
    /// Requests sent (the cap counts these).
    pub sent: AtomicU64,
    /// Errors.
    pub errors: AtomicU64,
    /// Thieves' requests refused.
    pub detections: AtomicU64,
    /// Owners' requests refused.
    pub disturbed: AtomicU64,
    /// Set to stop early (Ctrl-C).
    pub stop: AtomicBool,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Merged records of every worker.
    pub tally: Tally,
    /// From the first send to the last completion.
    pub elapsed: Duration,
}

/// Runs `plan` against `endpoint`. `round` tells sessions of different
/// runs of one invocation apart (cookies and tallies) and
/// [`RunConfig::run_id`] those of different invocations, so that runs
/// against the same proxy never share sessions.
pub fn run(
    plan: &Arc<Plan>,
    endpoint: &Arc<Endpoint>,
    cfg: &RunConfig,
    round: u32,
    progress: &Arc<Progress>,
) -> std::io::Result<RunResult> {
    let threads = cfg.threads.max(1);
    let start = std::time::Instant::now();
    let mut handles = Vec::new();
    for worker in 0..threads {
        let plan = plan.clone();
        let endpoint = endpoint.clone();
        let cfg = cfg.clone();
        let progress = progress.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("load-{worker}"))
                .spawn(move || -> std::io::Result<Tally> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    let local = tokio::task::LocalSet::new();
                    Ok(local.block_on(
                        &rt,
                        worker_loop(plan, endpoint, cfg, worker, threads, round, progress),
                    ))
                })?,
        );
    }
    let mut tally = Tally::new(cfg.interval);
    for h in handles {
        let t = h
            .join()
            .map_err(|_| std::io::Error::other("a worker thread panicked"))??;
        tally.merge(&t);
    }
    Ok(RunResult {
        tally,
        elapsed: start.elapsed(),
    })
}

/// A worker's connections: idle HTTP/1.1 connections and one HTTP/2
/// connection per device profile.
#[derive(Debug, Default)]
struct Pool {
    h1: Vec<Vec<H1Conn>>,
    h2: Vec<Option<hyper::client::conn::http2::SendRequest<Empty<Bytes>>>>,
}

struct Worker {
    plan: Arc<Plan>,
    endpoint: Arc<Endpoint>,
    cfg: RunConfig,
    round: u32,
    start: Instant,
    tally: RefCell<Tally>,
    pool: RefCell<Pool>,
    progress: Arc<Progress>,
    /// Per step of this worker (by plan index; others empty): the request's
    /// headers, built once, with `Host` (HTTP/1.1) and a `Cookie` slot
    /// already in place so that filling the slot never grows the map.
    headers: Vec<HeaderMap>,
    /// Per session: its clients' cookie jars in each lap that has begun
    /// and not ended (one, unless a late target holds a lap's end while
    /// the next begins).
    jars: RefCell<Vec<Vec<Jars>>>,
    /// Per step (by plan index): whether it is its session's last, after
    /// which the lap's jars of the session are dropped.
    last: Vec<bool>,
}

/// The cookie jars of one session in one lap.
#[derive(Debug, Clone)]
struct Jars {
    lap: u64,
    owner: Jar,
    /// From the theft on.
    thief: Option<Jar>,
}

async fn worker_loop(
    plan: Arc<Plan>,
    endpoint: Arc<Endpoint>,
    cfg: RunConfig,
    worker: usize,
    threads: usize,
    round: u32,
    progress: Arc<Progress>,
) -> Tally {
    let mine: Vec<usize> = plan
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| usize::try_from(s.session).unwrap_or(0) % threads == worker)
        .map(|(i, _)| i)
        .collect();
    let mut headers = vec![HeaderMap::new(); plan.steps.len()];
    for &i in &mine {
        if let (Some(h), Some(step)) = (headers.get_mut(i), plan.steps.get(i)) {
            *h = template(step, &endpoint, cfg.new_connection);
        }
    }
    let mut last = vec![false; plan.steps.len()];
    let mut seen = vec![false; plan.sessions.len()];
    for (i, step) in plan.steps.iter().enumerate().rev() {
        if let Some(s) = seen.get_mut(usize::try_from(step.session).unwrap_or(usize::MAX))
            && !std::mem::replace(s, true)
            && let Some(l) = last.get_mut(i)
        {
            *l = true;
        }
    }
    let w = Rc::new(Worker {
        tally: RefCell::new(Tally::new(cfg.interval)),
        pool: RefCell::new(Pool::default()),
        start: Instant::now(),
        jars: RefCell::new(vec![Vec::new(); plan.sessions.len()]),
        last,
        headers,
        plan,
        endpoint,
        round,
        progress,
        cfg,
    });
    if mine.is_empty() {
        return w.tally.replace(Tally::new(w.cfg.interval));
    }
    match w.cfg.load {
        Load::Rate(rate) => {
            let share = rate / threads as u64 + u64::from((worker as u64) < rate % threads as u64);
            open_loop(&w, &mine, share.max(1)).await;
        }
        Load::Concurrency(n) => {
            let n = (n / threads + usize::from(worker < n % threads)).max(1);
            closed_loop(&w, &mine, n, threads).await;
        }
    }
    w.tally.replace(Tally::new(w.cfg.interval))
}

/// Whether the run must stop before sending `cost` more requests; counts
/// them as sent otherwise.
fn over(w: &Worker, cost: u64, now: Instant) -> bool {
    w.progress.stop.load(Ordering::Relaxed)
        || now >= w.start + w.cfg.duration
        || w.progress.sent.fetch_add(cost, Ordering::Relaxed) + cost > w.cfg.max_requests
}

/// Closed loop: `n` lanes, each sending its own sessions' requests back to
/// back. A session belongs to one lane (its index among this worker's
/// sessions modulo `n`), so its requests go in corpus order without any
/// hand-off between tasks; a lane reuses one timer for all its requests.
async fn closed_loop(w: &Rc<Worker>, mine: &[usize], n: usize, threads: usize) {
    let mut lanes: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &i in mine {
        let session = w.plan.steps.get(i).map_or(0, |s| s.session as usize);
        if let Some(l) = lanes.get_mut((session / threads) % n) {
            l.push(i);
        }
    }
    let mut tasks = Vec::new();
    for steps in lanes.into_iter().filter(|l| !l.is_empty()) {
        let w = w.clone();
        tasks.push(tokio::task::spawn_local(async move {
            let mut timer = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
            let len = steps.len() as u64;
            let mut i: u64 = 0;
            loop {
                if w.cfg.laps.is_some_and(|l| i >= l.saturating_mul(len)) {
                    break;
                }
                let lap = i / len;
                let Some(&index) = usize::try_from(i % len).ok().and_then(|j| steps.get(j)) else {
                    break;
                };
                let login = w.plan.steps.get(index).is_some_and(|s| s.login);
                let now = Instant::now();
                if over(&w, 1 + u64::from(login), now) {
                    break;
                }
                w.play(index, lap, now, timer.as_mut()).await;
                i += 1;
                if !w.cfg.think.is_zero() {
                    tokio::time::sleep(w.cfg.think).await;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Open loop: request `i` is due at [`Schedule::intended`]`(i)` and sent
/// by a task of its own, which first waits for the session's previous
/// request in the same lap; at most `max_in_flight` at a time.
async fn open_loop(w: &Rc<Worker>, mine: &[usize], rate: u64) {
    let schedule = Schedule::new(rate).ok();
    let slots = w.cfg.max_in_flight.max(1);
    let slots_sem = Arc::new(Semaphore::new(slots));
    let sessions = w.plan.sessions.len();
    let mut chains: Vec<Option<oneshot::Receiver<()>>> = Vec::new();
    let mut lap_of_chains = u64::MAX;
    let deadline = w.start + w.cfg.duration;
    let mut pacer = Pacer::new();
    // When the loop last waited for an in-flight slot: the requests due
    // meanwhile are late because of the target, not of the generator.
    let mut slot_freed = w.start;
    let mut i: u64 = 0;
    loop {
        if w.progress.stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            break;
        }
        let intended = match &schedule {
            Some(s) => {
                let at = w.start + s.intended(i);
                if at > Instant::now() {
                    pacer.until(at.min(deadline)).await;
                    continue;
                }
                at
            }
            None => Instant::now(),
        };
        let permit = match slots_sem.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let Ok(p) = slots_sem.clone().acquire_owned().await else {
                    break;
                };
                slot_freed = Instant::now();
                p
            }
        };
        // Open loop: the instant from which any further delay in sending
        // is the generator's own.
        let owed_from = schedule.as_ref().map(|_| intended.max(slot_freed));
        if w.cfg
            .laps
            .is_some_and(|l| i >= l.saturating_mul(mine.len() as u64))
        {
            break;
        }
        let idx = usize::try_from(i % mine.len() as u64).unwrap_or(0);
        let lap = i / mine.len() as u64;
        let Some(step) = mine.get(idx).and_then(|s| w.plan.steps.get(*s)) else {
            break;
        };
        let cost = 1 + u64::from(step.login);
        if over(w, cost, intended.min(deadline - Duration::from_nanos(1))) {
            break;
        }
        if lap != lap_of_chains {
            chains = std::iter::repeat_with(|| None).take(sessions).collect();
            lap_of_chains = lap;
        }
        let session = usize::try_from(step.session).unwrap_or(0);
        let (done, wait) = oneshot::channel();
        let previous = chains.get_mut(session).and_then(|c| c.replace(wait));
        let w2 = w.clone();
        let step_index = mine.get(idx).copied().unwrap_or(0);
        tokio::task::spawn_local(async move {
            // Taken up by its own task: the loop's lateness and the wait
            // for this worker's other tasks are the generator's; what
            // follows (the session's previous request, a connection) is
            // the target's.
            if let Some(from) = owed_from {
                let late = Instant::now().saturating_duration_since(from);
                w2.tally.borrow_mut().record_sent_late(late);
            }
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            let timer = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
            w2.play(step_index, lap, intended, timer).await;
            drop(done);
            drop(permit);
        });
        i += 1;
    }
    // Let what is in flight finish, within the request timeout.
    let all = u32::try_from(slots).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(
        w.cfg.timeout + Duration::from_secs(1),
        slots_sem.acquire_many(all),
    )
    .await;
}

/// A step's request headers: the event's, `Host` in HTTP/1.1, and a
/// placeholder cookie.
fn template(step: &Step, e: &Endpoint, new_connection: bool) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(step.headers.len() + 3);
    if e.protocol == Protocol::Http1 {
        h.insert(http::header::HOST, e.authority.clone());
        if new_connection {
            h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    for (k, v) in &step.headers {
        h.append(k.clone(), v.clone());
    }
    h.insert(http::header::COOKIE, HeaderValue::from_static(""));
    h
}

// === impl Worker ===

impl Worker {
    /// Sends one step (its login first when it has one) and records it.
    /// `timer` bounds each request (`--timeout`); it is reset, not
    /// re-created, per request.
    async fn play(&self, index: usize, lap: u64, intended: Instant, mut timer: Pin<&mut Sleep>) {
        let Some(step) = self.plan.steps.get(index) else {
            return;
        };
        let session = usize::try_from(step.session).unwrap_or(0);
        let Some(info) = self.plan.sessions.get(session) else {
            return;
        };
        let lap32 = u32::try_from(lap).unwrap_or(u32::MAX);
        let epoch = self.round.wrapping_mul(1 << 16).wrapping_add(lap32);
        let mut headers = self.headers.get(index).cloned().unwrap_or_default();
        let mut from = intended;
        if step.login {
            let id = self.session_value(&info.id, lap32);
            let path = format!(
                "{}?session={}&user={}",
                self.cfg.login_path,
                query_safe(&id),
                query_safe(&info.user)
            );
            let uri = match self.endpoint.protocol {
                Protocol::Http1 => path.parse::<Uri>(),
                Protocol::Http2 => format!(
                    "{}://{}{path}",
                    self.endpoint.scheme,
                    self.endpoint.authority.to_str().unwrap_or_default()
                )
                .parse::<Uri>(),
            };
            let mut login_headers = headers.clone();
            login_headers.remove(http::header::COOKIE);
            let outcome = match uri {
                Ok(uri) => {
                    let (outcome, set) = self
                        .exchange(step, uri, login_headers, timer.as_mut())
                        .await;
                    self.store(session, lap, Actor::Owner, set);
                    outcome
                }
                Err(_) => Outcome::Error("request".into()),
            };
            let now = Instant::now();
            self.record(from, now, (epoch, step.session), step.actor, &outcome);
            from = now;
        }
        if let Some(c) = self.cookie(session, lap, step) {
            headers.insert(http::header::COOKIE, c);
        }
        let (outcome, set) = self
            .exchange(step, self.endpoint.uri.clone(), headers, timer)
            .await;
        self.store(session, lap, step.actor, set);
        if step.steal {
            self.steal(session, lap);
        }
        if self.last.get(index).copied().unwrap_or(false) {
            self.end_lap(session, lap);
        }
        self.record(
            from,
            Instant::now(),
            (epoch, step.session),
            step.actor,
            &outcome,
        );
    }

    /// The app's session value of corpus session `id` in `lap`:
    /// `<id>.<run id>.<round>.<lap>`: never the same in two rounds or two
    /// laps, nor (but for a 1 in 2^32 draw) in two invocations.
    fn session_value(&self, id: &str, lap: u32) -> String {
        format!("{id}.{:08x}.{}.{lap}", self.cfg.run_id, self.round)
    }

    /// The `Cookie` header `step`'s client sends: `session=` the
    /// [`Worker::session_value`] and what its jar holds. Makes the
    /// session's jars for the lap unless its login made them; copies the
    /// owner's jar to a thief who has none yet; marks the jar as losing its next response when the
    /// step says so.
    fn cookie(&self, session: usize, lap: u64, step: &Step) -> Option<HeaderValue> {
        let mut jars = self.jars.borrow_mut();
        let jars = self.jars_of(&mut jars, session, lap)?;
        let jar = match step.actor {
            Actor::Owner => &mut jars.owner,
            Actor::Attacker => jars.thief.get_or_insert_with(|| jars.owner.copy()),
        };
        if step.lose_rotation {
            jar.lose_next();
        }
        jar.header()
    }

    /// The jars of `session` in `lap`, made when the lap's first request
    /// of the session (its login, if it has one) needs them.
    fn jars_of<'a>(
        &self,
        jars: &'a mut [Vec<Jars>],
        session: usize,
        lap: u64,
    ) -> Option<&'a mut Jars> {
        let laps = jars.get_mut(session)?;
        let at = match laps.iter().position(|j| j.lap == lap) {
            Some(at) => at,
            None => {
                let info = self.plan.sessions.get(session)?;
                let lap32 = u32::try_from(lap).unwrap_or(u32::MAX);
                laps.push(Jars {
                    lap,
                    owner: Jar::new("session", &self.session_value(&info.id, lap32)),
                    thief: None,
                });
                laps.len() - 1
            }
        };
        laps.get_mut(at)
    }

    /// Puts what a response set into the jar of the client that sent the
    /// request (nothing to do for the usual response that sets nothing),
    /// making the lap's jars if this is their first need (a login's
    /// response).
    fn store(&self, session: usize, lap: u64, actor: Actor, set: Vec<SetCookie>) {
        if set.is_empty() {
            return;
        }
        let mut jars = self.jars.borrow_mut();
        let Some(jars) = self.jars_of(&mut jars, session, lap) else {
            return;
        };
        let jar = match actor {
            Actor::Owner => Some(&mut jars.owner),
            Actor::Attacker => jars.thief.as_mut(),
        };
        if let Some(jar) = jar {
            jar.store(set);
        }
    }

    /// The theft: the thief's jar becomes a copy of the owner's as it
    /// stands now.
    fn steal(&self, session: usize, lap: u64) {
        if let Some(jars) = self.jars_of(&mut self.jars.borrow_mut(), session, lap) {
            jars.thief = Some(jars.owner.copy());
        }
    }

    /// The session's last request of `lap` is done: its jars go.
    fn end_lap(&self, session: usize, lap: u64) {
        if let Some(laps) = self.jars.borrow_mut().get_mut(session) {
            laps.retain(|j| j.lap != lap);
        }
    }

    fn record(
        &self,
        from: Instant,
        now: Instant,
        key: (u32, u32),
        actor: Actor,
        outcome: &Outcome,
    ) {
        self.tally.borrow_mut().record(
            now.saturating_duration_since(from),
            now.saturating_duration_since(self.start),
            key,
            actor,
            outcome,
        );
        let p = &self.progress;
        p.done.fetch_add(1, Ordering::Relaxed);
        match (outcome, actor) {
            (Outcome::Error(_), _) => p.errors.fetch_add(1, Ordering::Relaxed),
            (Outcome::Refused(_), Actor::Attacker) => p.detections.fetch_add(1, Ordering::Relaxed),
            (Outcome::Refused(_), Actor::Owner) => p.disturbed.fetch_add(1, Ordering::Relaxed),
            (Outcome::Served, _) => 0,
        };
    }

    /// One request and its whole response, within the timeout: what it
    /// came to, and the cookies the response set (empty when the response
    /// was lost).
    async fn exchange(
        &self,
        step: &Step,
        uri: Uri,
        headers: HeaderMap,
        mut timer: Pin<&mut Sleep>,
    ) -> (Outcome, Vec<SetCookie>) {
        timer.as_mut().reset(Instant::now() + self.cfg.timeout);
        let mut request = Request::new(Empty::<Bytes>::new());
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        let device = if self.endpoint.per_device() {
            usize::try_from(step.device).unwrap_or(0)
        } else {
            0
        };
        let sender = tokio::select! {
            biased;
            s = self.checkout(device) => s,
            () = timer.as_mut() => return (Outcome::Error("timeout".into()), Vec::new()),
        };
        let sender = match sender {
            Ok(s) => s,
            Err(e) => return (Outcome::Error(e.to_string()), Vec::new()),
        };
        match sender {
            Sender::H1(conn) => self.exchange_h1(conn, request, device, timer).await,
            Sender::H2(send) => {
                let exchange = async move {
                    let mut send = send;
                    let response = send.send_request(request).await.map_err(|_| "send")?;
                    let (parts, body) = response.into_parts();
                    drain(body).await.map_err(|()| "body")?;
                    Ok::<_, &str>((
                        classify(parts.status, &parts.headers),
                        set_cookies(&parts.headers),
                    ))
                };
                let result = tokio::select! {
                    biased;
                    r = exchange => r,
                    () = timer => return (Outcome::Error("timeout".into()), Vec::new()),
                };
                match result {
                    Ok(o) => o,
                    Err(kind) => {
                        if kind == "send" {
                            // The connection is gone: open a new one next time.
                            if let Some(slot) = self.pool.borrow_mut().h2.get_mut(device) {
                                *slot = None;
                            }
                        }
                        (Outcome::Error(kind.into()), Vec::new())
                    }
                }
            }
        }
    }

    /// An HTTP/1.1 exchange, driving the connection's I/O in this task;
    /// the connection goes back to the pool if it stays open.
    async fn exchange_h1(
        &self,
        conn: H1Conn,
        request: Request<Empty<Bytes>>,
        device: usize,
        mut timer: Pin<&mut Sleep>,
    ) -> (Outcome, Vec<SetCookie>) {
        let H1Conn { mut send, mut io } = conn;
        let mut io_done = false;
        let result = {
            let exchange = async {
                send.ready().await.map_err(|_| "send")?;
                let response = send.send_request(request).await.map_err(|_| "send")?;
                let (parts, body) = response.into_parts();
                drain(body).await.map_err(|()| "body")?;
                Ok::<_, &str>((
                    classify(parts.status, &parts.headers),
                    set_cookies(&parts.headers),
                ))
            };
            let mut exchange = std::pin::pin!(exchange);
            loop {
                tokio::select! {
                    biased;
                    r = &mut exchange => break r,
                    _ = &mut io, if !io_done => io_done = true,
                    () = timer.as_mut() => break Err("timeout"),
                }
            }
        };
        if !io_done {
            // One more turn of the I/O: a response that closed the
            // connection ends it here.
            io_done = std::future::poll_fn(|cx| Poll::Ready(io.as_mut().poll(cx).is_ready())).await;
        }
        match result {
            Ok(outcome) => {
                if !io_done && !send.is_closed() && !self.cfg.new_connection {
                    let mut pool = self.pool.borrow_mut();
                    if pool.h1.len() <= device {
                        pool.h1.resize_with(device + 1, Vec::new);
                    }
                    if let Some(idle) = pool.h1.get_mut(device) {
                        idle.push(H1Conn { send, io });
                    }
                }
                outcome
            }
            Err(kind) => (Outcome::Error(kind.into()), Vec::new()),
        }
    }

    /// An idle connection of the device, or a new one.
    async fn checkout(&self, device: usize) -> Result<Sender, crate::target::ConnectError> {
        match self.endpoint.protocol {
            Protocol::Http1 => {
                loop {
                    let idle = self.pool.borrow_mut().h1.get_mut(device).and_then(Vec::pop);
                    let Some(mut c) = idle else {
                        break;
                    };
                    // An idle connection's I/O is not polled: let it see
                    // now whether the server closed it meanwhile. Cheap:
                    // tokio only reads a socket the kernel said is ready.
                    let ended =
                        std::future::poll_fn(|cx| Poll::Ready(c.io.as_mut().poll(cx).is_ready()))
                            .await;
                    if !ended && !c.send.is_closed() {
                        return Ok(Sender::H1(c));
                    }
                }
                self.endpoint.connect(device).await
            }
            Protocol::Http2 => {
                let shared = self
                    .pool
                    .borrow()
                    .h2
                    .get(device)
                    .and_then(Clone::clone)
                    .filter(|s| !s.is_closed());
                if let Some(s) = shared {
                    return Ok(Sender::H2(s));
                }
                let fresh = self.endpoint.connect(device).await?;
                if let Sender::H2(s) = &fresh {
                    let mut pool = self.pool.borrow_mut();
                    if pool.h2.len() <= device {
                        pool.h2.resize_with(device + 1, || None);
                    }
                    if let Some(slot) = pool.h2.get_mut(device) {
                        *slot = Some(s.clone());
                    }
                }
                Ok(fresh)
            }
        }
    }
}

/// Reads a response body to its end, keeping nothing.
async fn drain(mut body: hyper::body::Incoming) -> Result<(), ()> {
    while let Some(frame) = body.frame().await {
        frame.map_err(|_| ())?;
    }
    Ok(())
}

/// Percent-encodes everything but unreserved characters.
fn query_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(query_safe("u1.a-b_c~"), "u1.a-b_c~");
        assert_eq!(query_safe("a b&c=d"), "a%20b%26c%3Dd");
    }
}
