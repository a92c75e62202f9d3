//! A corpus (`loadtests/eval`'s scenario format) turned into the requests
//! of a load run.
//!
//! Every event becomes one request, in the corpus's order. What the event
//! says about the client becomes what Vigil sees:
//!
//! - the TCP peer: the generator connects from loopback, which the proxy
//!   under test trusts as its balancer; the event's `peer` (and the `xff`
//!   its peer wrote, for a Zscaler egress) arrives in `X-Forwarded-For`, as
//!   a trusted balancer in front of Vigil would write it;
//! - User-Agent, Accept-Language, client hints and `Sec-Fetch-Site` as the
//!   event has them, and `Cookie: session=<id>` with the cookies the
//!   client's jar holds ([`crate::jar`]);
//! - the device's TLS stack: each distinct JA4 of the corpus is a *device
//!   profile*, and over TLS every connection of that profile uses its own
//!   client configuration ([`crate::tls`]), so the proxy's JA4 differs
//!   between victim and thief exactly when the corpus's does. In cleartext
//!   the JA4 can be sent in a header instead, as a TLS-terminating balancer
//!   would (`--ja4-header`, the proxy's `upstream_ja4_header`).
//! - an event with `bind` is preceded by the session's login: the same
//!   client without the cookie asks for `<login path>?session=<id>&user=<user>`
//!   and the app (`vigil-load origin`) answers with `Set-Cookie` and
//!   `Vigil-User`, so that Vigil baselines and binds the session at issuance.
//!
//! Corpus time is not replayed: requests follow each other as fast as the
//! schedule sends them, so classes whose legitimacy depends on elapsed time
//! (a flight, an idle gap, a network left hours ago) are judged in
//! compressed time (`docs/load-testing.md`).

use std::collections::HashMap;

use http::{HeaderName, HeaderValue};
use vigil_eval::scenario::{Actor, Corpus, Event, Label, Scenario};

/// One request of the run.
#[derive(Debug, Clone)]
pub struct Step {
    /// Index into [`Plan::sessions`].
    pub session: u32,
    /// Owner or thief.
    pub actor: Actor,
    /// Log in first (the event's `bind`, on the session's first bound request).
    pub login: bool,
    /// Index of the device profile (distinct JA4 of the corpus).
    pub device: u32,
    /// The moment of theft (the event's `steal`, an owner's request): the
    /// thief's cookie jar becomes a copy of the owner's as it stands after
    /// this request's response.
    pub steal: bool,
    /// The event's `lose_rotation`: from this request on, the next response
    /// that sets this client a cookie does not reach its jar.
    pub lose_rotation: bool,
    /// Request headers other than `Cookie` and `Host`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// One session of the corpus.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// The corpus's session id (the cookie's value, before the run, round
    /// and lap suffix).
    pub id: String,
    /// The owner's user name.
    pub user: String,
    /// Its class.
    pub scenario: Scenario,
}

/// The requests of a run, in order.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Requests, in corpus order.
    pub steps: Vec<Step>,
    /// Sessions, by index.
    pub sessions: Vec<SessionInfo>,
    /// The distinct JA4s of the corpus, by device profile index.
    pub devices: Vec<String>,
}

/// How events become requests.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Send the event's JA4 in this header (a balancer that ends TLS).
    pub ja4_header: Option<HeaderName>,
    /// Only these classes (all when empty).
    pub classes: Vec<Scenario>,
}

/// An event the generator cannot turn into a request.
#[derive(Debug, thiserror::Error)]
#[error("event {index} (session {session}): {what}")]
pub struct PlanError {
    /// Position in the corpus.
    pub index: usize,
    /// Its session.
    pub session: String,
    /// What is wrong.
    pub what: String,
}

// === impl Plan ===

impl Plan {
    /// The plan of a corpus.
    pub fn from_corpus(corpus: &Corpus, options: &PlanOptions) -> Result<Self, PlanError> {
        let mut plan = Plan::default();
        let mut sessions: HashMap<&str, (u32, bool)> = HashMap::new();
        let mut devices: HashMap<&str, u32> = HashMap::new();
        for (index, event) in corpus.events.iter().enumerate() {
            if !options.classes.is_empty() && !options.classes.contains(&event.scenario) {
                continue;
            }
            let bad = |what: String| PlanError {
                index,
                session: event.session.clone(),
                what,
            };
            let next =
                u32::try_from(plan.sessions.len()).map_err(|_| bad("too many sessions".into()))?;
            let (session, bound) = sessions.entry(&event.session).or_insert_with(|| {
                plan.sessions.push(SessionInfo {
                    id: event.session.clone(),
                    user: event.user.clone(),
                    scenario: event.scenario,
                });
                (next, false)
            });
            let login = event.bind && event.actor == Actor::Owner && !*bound;
            *bound |= login;
            let ndev =
                u32::try_from(plan.devices.len()).map_err(|_| bad("too many devices".into()))?;
            let device = *devices.entry(&event.ja4).or_insert_with(|| {
                plan.devices.push(event.ja4.clone());
                ndev
            });
            plan.steps.push(Step {
                session: *session,
                actor: event.actor,
                login,
                device,
                steal: event.steal && event.actor == Actor::Owner,
                lose_rotation: event.lose_rotation,
                headers: headers(event, options).map_err(bad)?,
            });
        }
        Ok(plan)
    }

    /// Sessions per label.
    pub fn count(&self, label: Label) -> usize {
        self.sessions
            .iter()
            .filter(|s| s.scenario.label() == label)
            .count()
    }
}

/// The headers an event describes, through a trusted balancer.
fn headers(event: &Event, options: &PlanOptions) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let value = |name: &str, v: &str| {
        HeaderValue::from_str(v).map_err(|_| format!("{name} {v:?} is not a valid header value"))
    };
    let mut h = vec![(http::header::USER_AGENT, value("ua", &event.ua)?)];
    if let Some(v) = &event.accept_language {
        h.push((http::header::ACCEPT_LANGUAGE, value("accept_language", v)?));
    }
    let optional = [
        ("sec-ch-ua-platform", &event.ch_platform),
        ("sec-ch-ua-mobile", &event.ch_mobile),
        ("sec-ch-ua", &event.ch_ua),
    ];
    for (name, v) in optional {
        if let Some(v) = v {
            h.push((HeaderName::from_static(name), value(name, v)?));
        }
    }
    if event.fetch_metadata {
        h.push((
            HeaderName::from_static("sec-fetch-site"),
            HeaderValue::from_static("same-origin"),
        ));
    }
    // The balancer appends the address it got the connection from.
    let xff = match &event.xff {
        Some(chain) => format!("{chain}, {}", event.peer),
        None => event.peer.to_string(),
    };
    h.push((
        HeaderName::from_static("x-forwarded-for"),
        value("xff", &xff)?,
    ));
    if let Some(name) = &options.ja4_header {
        h.push((name.clone(), value("ja4", &event.ja4)?));
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test")]
    use super::*;
    use vigil_eval::generate::{GenerateConfig, generate};

    #[test]
    fn every_event_is_one_request_and_each_bound_session_logs_in_once() {
        let (corpus, _) = generate(&GenerateConfig {
            users: 40,
            sessions_per_class: 5,
            history_days: 1,
            ..GenerateConfig::default()
        });
        let plan = Plan::from_corpus(&corpus, &PlanOptions::default()).unwrap();
        assert_eq!(plan.steps.len(), corpus.events.len());
        let mut logins = HashMap::new();
        for s in &plan.steps {
            if s.login {
                *logins.entry(s.session).or_insert(0) += 1;
                assert_eq!(s.actor, Actor::Owner);
            }
        }
        assert!(logins.values().all(|n| *n == 1));
        assert!(!logins.is_empty());
        // Victim and thief of a copied-UA replay use different devices.
        for class in [
            Scenario::ReplayCopiedUaOtherTls,
            Scenario::ReplayOtherCountry,
        ] {
            let s = plan
                .sessions
                .iter()
                .position(|s| s.scenario == class)
                .unwrap();
            let devs = |a| {
                plan.steps
                    .iter()
                    .filter(|st| st.session as usize == s && st.actor == a)
                    .map(|st| st.device)
                    .collect::<std::collections::BTreeSet<_>>()
            };
            if class == Scenario::ReplayCopiedUaOtherTls {
                assert!(devs(Actor::Owner).is_disjoint(&devs(Actor::Attacker)));
            }
            assert!(!devs(Actor::Attacker).is_empty());
        }
    }
}
