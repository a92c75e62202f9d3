//! One load run against one target.
//!
//! `threads` worker threads, each a single-threaded tokio runtime with its
//! own connections and [`Tally`], so that nothing is shared on the hot path
//! but a few counters for the progress line. A session lives on one worker
//! (session index modulo `threads`), and its requests are sent in corpus
//! order: a request waits for the session's previous one to complete, as a
//! browser's navigation would.
//!
//! - **Rate** (open loop): request `i` of a worker is due at
//!   [`Schedule::intended`]`(i)`; latency runs from that instant, so time
//!   spent waiting for a connection, for the session's previous request or
//!   for an in-flight slot (`max_in_flight`) counts against the target.
//! - **Concurrency** (closed loop): `n` requests in flight at all times;
//!   latency runs from the moment a slot became free.
//!
//! The corpus is replayed in laps until the duration or the request cap is
//! reached; each lap's sessions are new ones (the cookie carries the lap),
//! so a lap never replays a session Vigil has already judged.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request};
use http_body_util::{BodyExt, Empty};
use tokio::sync::{Semaphore, oneshot};
use tokio::time::Instant;
use vigil_eval::scenario::Actor;

use crate::outcome::{Outcome, classify};
use crate::plan::{Plan, Step};
use crate::schedule::Schedule;
use crate::stats::Tally;
use crate::target::{Endpoint, Protocol, Sender};

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
/// runs apart (cookies and tallies), so that runs against the same proxy
/// never share sessions.
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
    h1: Vec<Vec<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>>,
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
    let w = Rc::new(Worker {
        tally: RefCell::new(Tally::new(cfg.interval)),
        pool: RefCell::new(Pool::default()),
        start: Instant::now(),
        plan,
        endpoint,
        round,
        progress,
        cfg,
    });
    if mine.is_empty() {
        return w.tally.replace(Tally::new(w.cfg.interval));
    }
    let (schedule, slots) = match w.cfg.load {
        Load::Rate(rate) => {
            let share = rate / threads as u64 + u64::from((worker as u64) < rate % threads as u64);
            (Schedule::new(share.max(1)).ok(), w.cfg.max_in_flight.max(1))
        }
        Load::Concurrency(n) => (
            None,
            (n / threads + usize::from(worker < n % threads)).max(1),
        ),
    };
    let slots_sem = Arc::new(Semaphore::new(slots));
    let sessions = w.plan.sessions.len();
    let mut chains: Vec<Option<oneshot::Receiver<()>>> = Vec::new();
    let mut lap_of_chains = u64::MAX;
    let deadline = w.start + w.cfg.duration;
    let mut i: u64 = 0;
    loop {
        if w.progress.stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            break;
        }
        let intended = match &schedule {
            Some(s) => {
                let at = w.start + s.intended(i);
                if at > Instant::now() {
                    tokio::time::sleep_until(at.min(deadline)).await;
                    continue;
                }
                Some(at)
            }
            None => None,
        };
        let Ok(permit) = slots_sem.clone().acquire_owned().await else {
            break;
        };
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
        if w.progress.sent.fetch_add(cost, Ordering::Relaxed) + cost > w.cfg.max_requests {
            break;
        }
        if lap != lap_of_chains {
            chains = std::iter::repeat_with(|| None).take(sessions).collect();
            lap_of_chains = lap;
        }
        let session = usize::try_from(step.session).unwrap_or(0);
        let (done, wait) = oneshot::channel();
        let previous = chains.get_mut(session).and_then(|c| c.replace(wait));
        let intended = intended.unwrap_or_else(Instant::now);
        let w2 = w.clone();
        let step_index = mine.get(idx).copied().unwrap_or(0);
        tokio::task::spawn_local(async move {
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            w2.play(step_index, lap, intended).await;
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
    w.tally.replace(Tally::new(w.cfg.interval))
}

// === impl Worker ===

impl Worker {
    /// Sends one step (its login first when it has one) and records it.
    async fn play(&self, index: usize, lap: u64, intended: Instant) {
        let Some(step) = self.plan.steps.get(index) else {
            return;
        };
        let Some(info) = self
            .plan
            .sessions
            .get(usize::try_from(step.session).unwrap_or(0))
        else {
            return;
        };
        let lap = u32::try_from(lap).unwrap_or(u32::MAX);
        let id = format!("{}.{}.{lap}", info.id, self.round);
        let epoch = self.round.wrapping_mul(1 << 16).wrapping_add(lap);
        let mut from = intended;
        if step.login {
            let path = format!(
                "{}?session={}&user={}",
                self.cfg.login_path,
                query_safe(&id),
                query_safe(&info.user)
            );
            let outcome = self.exchange(step, &path, None).await;
            let now = Instant::now();
            self.record(from, now, (epoch, step.session), step.actor, &outcome);
            from = now;
        }
        let cookie = HeaderValue::from_str(&format!("session={id}")).ok();
        let path = self.endpoint.path.clone();
        let outcome = self.exchange(step, &path, cookie).await;
        self.record(
            from,
            Instant::now(),
            (epoch, step.session),
            step.actor,
            &outcome,
        );
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

    /// One request and its whole response, within the timeout.
    async fn exchange(&self, step: &Step, path: &str, cookie: Option<HeaderValue>) -> Outcome {
        match tokio::time::timeout(self.cfg.timeout, self.exchange_inner(step, path, cookie)).await
        {
            Ok(o) => o,
            Err(_) => Outcome::Error("timeout".into()),
        }
    }

    async fn exchange_inner(
        &self,
        step: &Step,
        path: &str,
        cookie: Option<HeaderValue>,
    ) -> Outcome {
        let e = &self.endpoint;
        let device = if e.per_device() {
            usize::try_from(step.device).unwrap_or(0)
        } else {
            0
        };
        let uri = match e.protocol {
            Protocol::Http1 => path.to_owned(),
            Protocol::Http2 => format!(
                "{}://{}{path}",
                e.scheme,
                e.authority.to_str().unwrap_or_default()
            ),
        };
        let mut builder = Request::builder().method(Method::GET).uri(uri);
        if let Some(h) = builder.headers_mut() {
            if e.protocol == Protocol::Http1 {
                h.insert(http::header::HOST, e.authority.clone());
            }
            for (k, v) in &step.headers {
                h.append(k.clone(), v.clone());
            }
            if let Some(c) = cookie {
                h.insert(http::header::COOKIE, c);
            }
        }
        let Ok(request) = builder.body(Empty::<Bytes>::new()) else {
            return Outcome::Error("request".into());
        };
        let sender = match self.checkout(device).await {
            Ok(s) => s,
            Err(e) => return Outcome::Error(e.to_string()),
        };
        match sender {
            Sender::H1(mut send) => {
                let response = match send.send_request(request).await {
                    Ok(r) => r,
                    Err(_) => return Outcome::Error("send".into()),
                };
                let (parts, body) = response.into_parts();
                if body.collect().await.is_err() {
                    return Outcome::Error("body".into());
                }
                if !send.is_closed() {
                    let mut pool = self.pool.borrow_mut();
                    if pool.h1.len() <= device {
                        pool.h1.resize_with(device + 1, Vec::new);
                    }
                    if let Some(idle) = pool.h1.get_mut(device) {
                        idle.push(send);
                    }
                }
                classify(parts.status, &parts.headers)
            }
            Sender::H2(mut send) => {
                let response = match send.send_request(request).await {
                    Ok(r) => r,
                    Err(_) => {
                        // The connection is gone: open a new one next time.
                        if let Some(slot) = self.pool.borrow_mut().h2.get_mut(device) {
                            *slot = None;
                        }
                        return Outcome::Error("send".into());
                    }
                };
                let (parts, body) = response.into_parts();
                if body.collect().await.is_err() {
                    return Outcome::Error("body".into());
                }
                classify(parts.status, &parts.headers)
            }
        }
    }

    /// An idle connection of the device, or a new one.
    async fn checkout(&self, device: usize) -> Result<Sender, crate::target::ConnectError> {
        match self.endpoint.protocol {
            Protocol::Http1 => {
                loop {
                    let idle = self.pool.borrow_mut().h1.get_mut(device).and_then(Vec::pop);
                    match idle {
                        Some(mut s) => {
                            if s.ready().await.is_ok() {
                                return Ok(Sender::H1(s));
                            }
                        }
                        None => break,
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
