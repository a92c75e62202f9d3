//! Score: three risks per request, each explained by its reasons.
//!
//! * **Session risk** — this request against the session's own baseline:
//!   the device's traits and TLS fingerprint ([`Device::compare`]), the
//!   network through [`NetworkMark::change_to`] (an egress node change behind
//!   the same trusted provider is not a move), impossible travel between the
//!   places the geo stage gave, and a return to the previous network soon
//!   after leaving it (two places using one session at once: a replayed
//!   cookie).
//! * **Login risk** — the first request at which the session's user is known,
//!   against the user's history (the likelihood model of [`profile`]).
//! * **Entity risk** — the user across sessions: revoked everywhere, reported
//!   by a partner, or caught on another session recently.
//!
//! Each is a [`Risk`]: a score from 0 to 100, its level and the reasons with
//! their points; the request's overall risk adds them up. Nothing here
//! changes state: [`Scorer::commit`] learns from a request once the decision
//! says it was allowed, so a blocked replay teaches nothing.
//!
//! State is bounded: session states (104 bytes each, with a fixed record form
//! for snapshots and sync — see [`state`]) in a store of our own sized to
//! the per-session memory budget ([`store`]); user profiles (320 bytes),
//! entity flags (only for users that have some) and revocations in `moka`
//! caches; the population's frequency sketches (6 × 256 KiB).
//!
//! This file holds the scoring path, read top-down: the [`Scorer`], the
//! session and login risks, and what a decided request commits. Around it,
//! one concern per file: [`reason`] (reasons, levels, risks), [`config`]
//! (weights and thresholds), [`entity`] (entity risk and the user-level
//! flags), [`vouch`] (sessions the app set, step-ups, operators' feedback)
//! and [`snapshot`] (snapshots and session records).

mod config;
mod entity;
mod history;
mod profile;
mod reason;
mod snapshot;
mod state;
mod store;
#[cfg(test)]
mod tests;
mod vouch;

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use vigil_geoip::Location;
use vigil_geoip::travel::{Travel, TravelConfig, classify as travel};

use crate::decide::SessionFacts;
use crate::device::{Device, TraitMatch};
use crate::fingerprint::{Ja4Form, TlsMatch, TlsSource};
use crate::network::{NetworkChange, NetworkMark};
use crate::session::SessionKey;
pub use config::{FeatureWeights, ScoreConfig, UserModelConfig};
use entity::EntityState;
pub use history::{Learnt, POPULATION_CELLS, PROFILE_FEATURES, ProfileRecord, population_cells};
use profile::{ALL, Evidence, Feature, Features, NETWORK, Population, UserProfile};
pub use reason::{Contribution, Reason, Risk, RiskLevel, Risks};
pub use snapshot::{Adopted, Restored, SnapshotError};
pub(crate) use state::{Place, secs32};
pub use state::{RecordError, SessionState, UserKey};
use store::SessionStore;
pub(crate) use vouch::Issued;
pub use vouch::{Feedback, FeedbackError, TrustedNetwork};

/// The scorer and its stores.
#[derive(Clone)]
pub struct Scorer {
    /// Behind an `ArcSwap` so that weights and thresholds can be replaced
    /// while requests run ([`Scorer::reconfigure`]); the store sizes in it
    /// stay those the stores were built with.
    /// Shared by clones, as the stores are.
    config: Arc<ArcSwap<ScoreConfig>>,
    sessions: Arc<SessionStore>,
    /// Revocations of sessions the app issued or a user is bound to.
    revoked: Cache<SessionKey, Revocation>,
    /// Revocations of sessions a client could have made up (first seen
    /// without issuance or binding): a budget of their own, so that a flood
    /// of minted cookies replayed from a second device — each revoked —
    /// never evicts the revocation of a real session.
    minted: Cache<SessionKey, Revocation>,
    profiles: Cache<UserKey, Arc<Mutex<UserProfile>>>,
    entities: Cache<UserKey, EntityState>,
    population: Arc<Population>,
}

/// What scoring found, to be committed once the decision is known.
#[allow(
    clippy::large_enum_variant,
    reason = "lives on the stack for one request; boxing it would allocate on every request"
)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Observation {
    /// No session: nothing to remember.
    Anonymous,
    /// The session is revoked.
    Revoked,
    /// A session's request: the state to keep if it is allowed, and what to
    /// learn of the user.
    Session {
        key: SessionKey,
        prior: Option<SessionState>,
        next: SessionState,
        learn: Learn,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Learn {
    features: Features,
    which: &'static [Feature],
    /// A new session of the user (counted toward the learning period).
    new_session: bool,
    /// Learn the values as trusted (confirmed by an operator).
    trust: bool,
}

/// What [`Scorer::carry`] moved from a session's previous key to its
/// current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Carried {
    /// Nothing: the current key holds the session's state or revocation
    /// already, or neither key holds anything.
    Nothing,
    /// A revocation (by the user's revocation when `Some`).
    Revocation(Option<UserKey>),
    /// The session's state, bound to the user when `Some`.
    State(Option<UserKey>),
}

/// What the decision made of a request, for [`Scorer::commit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Commit {
    /// Allowed: learn from it.
    Allowed,
    /// Refused at high risk for what it showed (not for a revocation):
    /// count it against the user.
    Detected,
    /// Refused otherwise: nothing to learn or count.
    Refused,
}

/// What [`Scorer::score`] found.
#[derive(Debug)]
pub(crate) struct Scored {
    pub risks: Risks,
    /// The user the session is bound to.
    pub user: Option<UserKey>,
    pub change: Option<NetworkChange>,
    pub observation: Observation,
}

/// How often an unchanged session's last-seen time is rewritten, in
/// seconds: travel speed is then judged to within a minute, and a busy
/// session's state is rewritten once a minute, not once a request (each
/// allowed request only adds one to its count, in place).
const LAST_SEEN_GRANULARITY: u32 = 60;
/// A revoked session: when, and the user whose revocation it was (`None`
/// when the session itself was revoked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Revocation {
    at: u64,
    by_user: Option<UserKey>,
}

// === impl Scorer ===

impl Scorer {
    /// Builds a scorer with empty stores.
    pub fn new(config: ScoreConfig) -> Self {
        let sessions = Arc::new(SessionStore::new(
            config.max_sessions,
            config.session_idle_timeout,
        ));
        // Least recently used eviction everywhere: moka's default admission
        // policy turns a new entry away when the cache is full of ones used
        // more often, and a revocation, a new user or a first detection is
        // used once before it matters.
        let revoked = Cache::builder()
            .max_capacity(config.max_sessions)
            // Never shorter than a session can live, or the cookie outlives
            // its revocation.
            .time_to_live(config.revocation_ttl.max(config.session_idle_timeout))
            .eviction_policy(EvictionPolicy::lru())
            .build();
        let minted = Cache::builder()
            .max_capacity(minted_budget(config.max_sessions))
            .time_to_live(config.revocation_ttl.max(config.session_idle_timeout))
            .eviction_policy(EvictionPolicy::lru())
            .build();
        let profiles = Cache::builder()
            .max_capacity(config.max_users)
            .time_to_idle(config.user_idle_timeout)
            .eviction_policy(EvictionPolicy::lru())
            .build();
        let entities = Cache::builder()
            .max_capacity(config.max_users)
            .time_to_idle(config.user_idle_timeout)
            .eviction_policy(EvictionPolicy::lru())
            .build();
        Self {
            config: Arc::new(ArcSwap::from_pointee(config)),
            sessions,
            revoked,
            minted,
            profiles,
            entities,
            population: Arc::new(Population::new()),
        }
    }

    /// The configuration now in force.
    pub fn config(&self) -> Arc<ScoreConfig> {
        self.config.load_full()
    }

    /// Replaces weights and thresholds for requests scored from now on. The
    /// stores keep their sizes and lifetimes (`max_sessions`,
    /// `session_idle_timeout`, `revocation_ttl`, `max_users`,
    /// `user_idle_timeout` of `config` are ignored): resizing them would
    /// mean rebuilding them, and losing every session.
    pub fn reconfigure(&self, mut config: ScoreConfig) {
        let running = self.config.load();
        config.max_sessions = running.max_sessions;
        config.session_idle_timeout = running.session_idle_timeout;
        config.revocation_ttl = running.revocation_ttl;
        config.max_users = running.max_users;
        config.user_idle_timeout = running.user_idle_timeout;
        self.config.store(Arc::new(config));
    }

    /// Scores a request of `session`. Does not change the stores:
    /// [`Scorer::commit`] does, once the decision is known.
    pub(crate) fn score(
        &self,
        session: Option<SessionKey>,
        device: &Device,
        network: &NetworkMark,
        place: Option<Place>,
        now_secs: u64,
    ) -> Scored {
        let Some(key) = session else {
            return Scored {
                risks: Risks::none(),
                user: None,
                change: None,
                observation: Observation::Anonymous,
            };
        };
        // `contains_key` records no read in the cache's log (a `get` on every
        // request would run its housekeeping more often, which is the tail).
        if let Some(revocation) = self.revocation(&key) {
            let mut risks = Risks::none();
            let (reason, part) = if revocation.by_user.is_some() {
                (Reason::UserRevoked, &mut risks.entity)
            } else {
                (Reason::Revoked, &mut risks.session)
            };
            *part = Risk::from_contributions(
                &self.config.load(),
                vec![Contribution {
                    reason,
                    points: 100,
                }],
            );
            return Scored {
                risks,
                user: revocation.by_user,
                change: None,
                observation: Observation::Revoked,
            };
        }
        let now = secs32(now_secs);
        // Read without touching: the store changes only when the decision
        // is applied (`commit`).
        let prior = self.sessions.read(&key, now);
        let features = Features::of(network, device.id);
        let mut risks = Risks::none();
        let mut change = None;
        let mut learn = Learn {
            features,
            which: &[],
            new_session: false,
            trust: false,
        };
        let fresh = |base: Option<&SessionState>| SessionState {
            user: base.and_then(|s| s.user),
            first_seen: base.map_or(now, |s| s.first_seen.min(now)),
            requests: base.map_or(0, |s| s.requests),
            stepped_up_at: base.map_or(0, |s| s.stepped_up_at),
            generation: base.map_or(0, |s| s.generation),
            flags: SessionState::BASELINED,
            ..SessionState::new(&device.summary(), *network, place, now)
        };
        let mut next = match prior {
            Some(s) if s.has(SessionState::BASELINED) => {
                let (risk, moved, next) =
                    self.session_risk(&s, device, network, &features, place, now);
                risks.session = risk;
                change = Some(moved);
                if moved >= NetworkChange::SameAsn {
                    learn.which = &NETWORK;
                }
                next
            }
            _ => fresh(prior.as_ref()),
        };
        if let Some(user) = next.user {
            if !next.has(SessionState::LOGIN_SCORED) {
                let (risk, learning) = self.login_risk(user, &features, now);
                risks.login = Some(risk);
                risks.learning = learning;
                next.flags |= SessionState::LOGIN_SCORED;
                learn.which = &ALL;
                learn.new_session = true;
            }
            risks.entity = self.entity_risk(
                user,
                entity::SessionClock {
                    generation: next.generation,
                    first_seen: next.first_seen,
                    stepped_up_at: next.stepped_up_at,
                },
                now,
            );
        }
        Scored {
            risks,
            user: next.user,
            change,
            observation: Observation::Session {
                key,
                prior,
                next,
                learn,
            },
        }
    }

    /// This request against the session's baseline; also the state to keep
    /// if the request is allowed.
    fn session_risk(
        &self,
        s: &SessionState,
        device: &Device,
        network: &NetworkMark,
        features: &Features,
        place: Option<Place>,
        now: u32,
    ) -> (Risk, NetworkChange, SessionState) {
        let c = &*self.config.load();
        let mut reasons = Vec::new();
        let mut add = |reason, points| reasons.push(Contribution { reason, points });
        let mut next = *s;
        let m = device.compare(&s.device());
        match m.traits {
            TraitMatch::Same => {}
            TraitMatch::Upgraded if m.tls != TlsMatch::Different => {
                add(Reason::DeviceUpgraded, c.device_upgraded);
                let mut upgraded = device.summary();
                if m.tls == TlsMatch::NoEvidence && s.tls_source != TlsSource::None {
                    // No TLS evidence this time: the fingerprint stays.
                    let kept = s.device();
                    upgraded.tls_source = kept.tls_source;
                    upgraded.ja4 = kept.ja4;
                    upgraded.ja4_form = kept.ja4_form;
                }
                next.set_device(&upgraded);
            }
            TraitMatch::Upgraded | TraitMatch::Different => {
                add(Reason::DeviceChanged, c.device_changed);
            }
        }
        match m.tls {
            TlsMatch::Same => {
                // A baseline kept in the spec form — by a release before
                // the stable form, from a hello with padding or a resumed
                // one — that this hello matches moves to the hello's stable
                // form where that differs: from then on the owner's full
                // and resumed handshakes both match it. Once per session.
                let seen = device.summary();
                let kept = s.device();
                if kept.ja4_form == Ja4Form::Spec
                    && seen.ja4_form == Ja4Form::Stable
                    && kept.ja4 != seen.ja4
                {
                    next.set_tls(&seen);
                }
            }
            TlsMatch::NoEvidence => {
                // A first fingerprint for a session that had none is learnt.
                if s.tls_source == TlsSource::None && device.tls.source != TlsSource::None {
                    next.set_tls(&device.summary());
                }
                // A session that had one and now shows none lost evidence:
                // a thief replaying on a cleartext listener must not score
                // as nothing. The baseline keeps its fingerprint.
                if s.tls_source != TlsSource::None && device.tls.source == TlsSource::None {
                    add(Reason::TlsEvidenceLost, c.tls_evidence_lost);
                }
            }
            TlsMatch::SameFamily if m.traits == TraitMatch::Upgraded => {}
            TlsMatch::SameFamily => add(Reason::Ja4Mismatch, c.ja4_family_changed),
            TlsMatch::Different => add(Reason::Ja4Mismatch, c.ja4_mismatch),
        }

        let change = s.network.change_to(network);
        let window = secs32(c.concurrent_window.as_secs());
        if change >= NetworkChange::SameAsn {
            let (familiar, surprise) = match s.user {
                Some(user) => self.network_surprise(user, features, change, place, now),
                None => (false, Vec::new()),
            };
            if !familiar {
                match change {
                    NetworkChange::SameAsn => add(Reason::IpChanged, c.ip_changed_same_asn),
                    NetworkChange::DifferentPrefix => add(Reason::IpChanged, c.ip_changed),
                    NetworkChange::DifferentAsn => add(Reason::AsnChanged, c.asn_changed),
                    _ => add(Reason::CountryChanged, c.country_changed),
                }
            }
            reasons.extend(surprise);
            let coarse = |p: &Place| p.accuracy_km >= c.coarse_location_km;
            let same_country = change < NetworkChange::DifferentCountry;
            if let (Some(a), Some(b)) = (s.place, place)
                && !(same_country && (coarse(&a) || coarse(&b)))
            {
                let elapsed = f64::from(now.saturating_sub(s.last_seen));
                let config = TravelConfig {
                    max_kmh: f64::from(c.max_kmh),
                };
                if let Travel::Impossible { .. } =
                    travel(&a.location(), &b.location(), elapsed, &config)
                {
                    reasons.push(Contribution {
                        reason: Reason::ImpossibleTravel,
                        points: c.impossible_travel,
                    });
                }
            }
            if s.previous != 0
                && network.prefix == s.previous
                && now.saturating_sub(s.moved_at) <= window
            {
                reasons.push(Contribution {
                    reason: Reason::ConcurrentNetworks,
                    points: c.concurrent_networks,
                });
            }
        }
        if network.prefix != s.network.prefix {
            let quick = s.moved_at != 0 && now.saturating_sub(s.moved_at) <= window;
            let moves = if quick {
                s.moves().saturating_add(1)
            } else {
                1
            };
            if moves >= c.churn_moves && c.churn_moves > 0 {
                reasons.push(Contribution {
                    reason: Reason::NetworkChurn,
                    points: c.network_churn,
                });
            }
            next.set_moves(moves);
        }
        if *network != s.network {
            if network.prefix != s.network.prefix {
                next.previous = s.network.prefix;
                next.moved_at = now;
            }
            next.network = *network;
            next.place = place.or(s.place);
            next.last_seen = now;
        } else if now.saturating_sub(s.last_seen) >= LAST_SEEN_GRANULARITY {
            next.last_seen = now;
        }
        (Risk::from_contributions(c, reasons), change, next)
    }

    /// The first request of a user's session against their history.
    fn login_risk(&self, user: UserKey, features: &Features, now: u32) -> (Risk, bool) {
        let Some(profile) = self.profiles.get(&user) else {
            return (Risk::none(), true);
        };
        let profile = profile.lock().unwrap_or_else(PoisonError::into_inner);
        let config = self.config.load();
        let m = &config.model;
        if profile.learning(
            now,
            m.learning_sessions,
            secs32(m.learning_period.as_secs()),
        ) {
            return (Risk::none(), true);
        }
        let evidence = profile.evidence(&self.population, features, &ALL, f64::from(m.llr_cap));
        let reasons = self.model_points(evidence, 100);
        (Risk::from_contributions(&config, reasons), false)
    }

    /// Whether a mid-session move lands on a network familiar to the user
    /// (then the move is no evidence), and the model's points otherwise.
    ///
    /// A network is familiar when its prefix is (seen `familiar_after`
    /// times, or trusted), when its ASN was trusted, or when its ASN is
    /// familiar and the place is coarse or unknown: mobile carriers move a
    /// user across their prefixes all day and are placed at the country's
    /// centre, while a home or office line keeps its prefix — a new prefix
    /// of a familiar fixed-line ISP, placed at a city, is someone else's
    /// line.
    fn network_surprise(
        &self,
        user: UserKey,
        features: &Features,
        change: NetworkChange,
        place: Option<Place>,
        now: u32,
    ) -> (bool, Vec<Contribution>) {
        let Some(profile) = self.profiles.get(&user) else {
            return (false, Vec::new());
        };
        let profile = profile.lock().unwrap_or_else(PoisonError::into_inner);
        let config = self.config.load();
        let m = &config.model;
        let after = m.familiar_after;
        let asn = features.get(Feature::Asn);
        let coarse = place.is_none_or(|p| p.accuracy_km >= config.coarse_location_km);
        let network_known = profile.familiar(Feature::Prefix, features.get(Feature::Prefix), after)
            || profile.count(Feature::Asn, asn).1
            || (coarse && profile.familiar(Feature::Asn, asn, after));
        let familiar = network_known
            && (change < NetworkChange::DifferentCountry
                || profile.familiar(Feature::Country, features.get(Feature::Country), after));
        if familiar
            || profile.learning(
                now,
                m.learning_sessions,
                secs32(m.learning_period.as_secs()),
            )
        {
            return (familiar, Vec::new());
        }
        let evidence = profile.evidence(&self.population, features, &NETWORK, f64::from(m.llr_cap));
        (false, self.model_points(evidence, m.session_cap))
    }

    /// Turns the model's evidence into contributions, one per reason, the
    /// total held to `cap`.
    fn model_points(&self, evidence: impl Iterator<Item = Evidence>, cap: u8) -> Vec<Contribution> {
        let config = self.config.load();
        let w = &config.model.weights;
        let mut sums = [0.0f64; 3];
        for e in evidence {
            let slot = match e.feature {
                Feature::Prefix | Feature::Asn => 0,
                Feature::Country => 1,
                Feature::Device | Feature::Browser | Feature::Platform => 2,
            };
            sums[slot] += f64::from(w.of(e.feature)) * e.llr;
        }
        let mut left = u32::from(cap);
        let mut out = Vec::new();
        for (sum, reason) in sums.into_iter().zip([
            Reason::NewNetworkForUser,
            Reason::NewCountryForUser,
            Reason::NewDeviceForUser,
        ]) {
            #[allow(
                clippy::cast_possible_truncation,
                reason = "clamped to 0..=255 first, so the cast is exact"
            )]
            let points = (sum.round().clamp(0.0, 255.0) as u32).min(left);
            if points > 0 {
                left -= points;
                out.push(Contribution {
                    reason,
                    points: u8::try_from(points).unwrap_or(u8::MAX),
                });
            }
        }
        out
    }

    /// Records what a decided request taught. An allowed request's state is
    /// kept (a first request becomes the baseline; a move of network, a
    /// browser update, a first TLS fingerprint are learnt — never another
    /// device), and its features are learnt for the user and the population.
    /// A refused request teaches nothing, except that a high one counts
    /// against its user for a while.
    /// Returns what was learnt of the session's user, for the fleet.
    pub(crate) fn commit(
        &self,
        observation: Observation,
        verdict: Commit,
        now_secs: u64,
    ) -> Option<Learnt> {
        let Observation::Session {
            key,
            prior,
            next,
            learn,
        } = observation
        else {
            return None;
        };
        let now = secs32(now_secs);
        match verdict {
            Commit::Allowed => {}
            Commit::Detected => {
                if let Some(user) = next.user {
                    self.record_detection(user, now);
                }
                return None;
            }
            Commit::Refused => return None,
        }
        if prior == Some(next) {
            // Nothing new to keep but the count: mark the session used as
            // often as its last-seen time is kept, and count the request.
            self.sessions.count(&key, now, LAST_SEEN_GRANULARITY);
        } else {
            // Merged under the shard's lock: a binding or confirmation that
            // landed while this request was scored is kept, not overwritten,
            // and requests counted meanwhile are not lost.
            self.sessions.update(key, now, |stored| {
                let mut next = next;
                next.requests = stored
                    .map_or(next.requests, |s| s.requests)
                    .saturating_add(1);
                next.stepped_up_at = stored.map_or(next.stepped_up_at, |s| {
                    s.stepped_up_at.max(next.stepped_up_at)
                });
                let before = prior.map_or((None, 0), |p| (p.user, p.generation));
                if let Some(stored) = stored
                    && (stored.user, stored.generation) != before
                {
                    next.user = stored.user;
                    next.generation = stored.generation;
                    next.flags = (next.flags & !SessionState::LOGIN_SCORED)
                        | (stored.flags & SessionState::LOGIN_SCORED);
                }
                next
            });
        }
        self.learn(next.user, &learn, now)
    }

    /// Learns `learn` for `user` and the population; returns what was
    /// learnt, for the fleet ([`Learnt`]).
    fn learn(&self, user: Option<UserKey>, learn: &Learn, now: u32) -> Option<Learnt> {
        // The population counts only sessions an app bound to a user:
        // anyone can open unbound sessions by the thousand to make their
        // network look common.
        let user = user?;
        if learn.which.is_empty() {
            return None;
        }
        self.population.observe(&learn.features, learn.which);
        let profile = self
            .profiles
            .get_with(user, || Arc::new(Mutex::new(UserProfile::new(now))));
        let mut p = profile.lock().unwrap_or_else(PoisonError::into_inner);
        if learn.new_session {
            p.add_session();
        }
        p.observe(&learn.features, learn.which, now);
        if learn.trust {
            for &f in learn.which {
                p.trust(f, learn.features.get(f), now);
            }
        }
        Some(Learnt::new(
            user,
            &learn.features,
            learn.which,
            learn.new_session,
            learn.trust,
            u64::from(now),
        ))
    }

    /// Binds a session to its user (the app or identity provider said who
    /// opened it). The session's next request is judged against the user's
    /// history (login risk) and counts toward it.
    /// Returns whether the binding changed anything (a session already
    /// bound to `user` is left as it is).
    pub fn bind_user(&self, key: SessionKey, user: UserKey, now_secs: u64) -> bool {
        let now = secs32(now_secs);
        if self
            .sessions
            .read(&key, now)
            .is_some_and(|s| s.user == Some(user))
        {
            return false;
        }
        let generation = self.entities.get(&user).map_or(0, |e| e.generation);
        let mut changed = true;
        self.sessions.update(key, now, |held| match held {
            Some(s) if s.user == Some(user) => {
                changed = false;
                *s
            }
            Some(s) => {
                let mut s = *s;
                s.user = Some(user);
                s.generation = generation;
                s.flags &= !SessionState::LOGIN_SCORED;
                s
            }
            None => SessionState {
                generation,
                ..SessionState::bound(user, now)
            },
        });
        changed
    }

    /// Ends a session on this node: later requests with it score
    /// [`Reason::Revoked`]. Its state is dropped.
    /// A session the app issued or a user is bound to goes to the main
    /// budget; one a client could have made up, to the minted one.
    pub fn revoke(&self, key: SessionKey, now_secs: u64) {
        let vouched = self
            .sessions
            .peek(&key)
            .is_some_and(|s| s.user.is_some() || s.has(SessionState::VOUCHED));
        let revocation = Revocation {
            at: now_secs,
            by_user: None,
        };
        if vouched {
            self.minted.invalidate(&key);
            self.revoked.insert(key, revocation);
        } else if !self.revoked.contains_key(&key) {
            self.minted.insert(key, revocation);
        }
        self.sessions.remove(&key);
    }

    /// Ends a session on this node on the word of someone trusted (an
    /// operator, the fleet's controller for a vouched revocation): the
    /// main budget, whatever this node knows of the session.
    pub fn revoke_vouched(&self, key: SessionKey, now_secs: u64) {
        self.minted.invalidate(&key);
        self.revoked.insert(
            key,
            Revocation {
                at: now_secs,
                by_user: None,
            },
        );
        self.sessions.remove(&key);
    }

    /// Files what this node holds of a session under `previous` (its key
    /// under the retiring hash key) under `key` (its key under the current
    /// one), on sight during a rotation:
    ///
    /// - a revocation under `previous` is copied to `key` (same budget,
    ///   same user), whatever `key` holds: a revocation under either key
    ///   refuses, and a revoked cookie never becomes a fresh session when
    ///   the previous key is dropped;
    /// - otherwise, when `key` has no state and `previous` has one, the
    ///   state (baseline, binding, first sighting) moves to `key`, so the
    ///   session is judged against the baseline it had — a thief's first
    ///   request after the switch is judged against the owner's.
    ///
    /// State already under `key` is kept (it is newer). Costs two
    /// revocation probes and, only when `key` has no state, one store read.
    pub(crate) fn carry(&self, key: SessionKey, previous: SessionKey, now_secs: u64) -> Carried {
        if self.revocation(&key).is_some() {
            return Carried::Nothing;
        }
        if let Some(revocation) = self.revocation(&previous) {
            if self.revoked.contains_key(&previous) {
                self.revoked.insert(key, revocation);
            } else {
                self.minted.insert(key, revocation);
            }
            self.sessions.remove(&key);
            return Carried::Revocation(revocation.by_user);
        }
        let now = secs32(now_secs);
        if self.sessions.read(&key, now).is_some() {
            return Carried::Nothing;
        }
        let Some(state) = self.sessions.read(&previous, now) else {
            return Carried::Nothing;
        };
        let mut carried = state;
        self.sessions.update(key, now, |held| {
            // A state written under `key` meanwhile (another request of
            // the session) is newer than the one being carried.
            carried = held.copied().unwrap_or(state);
            carried
        });
        self.sessions.remove(&previous);
        Carried::State(carried.user)
    }

    /// The session's revocation, from either budget. `contains_key` first:
    /// it records no read in the cache's log (a `get` on every request
    /// would run its housekeeping more often, which is the tail).
    fn revocation(&self, key: &SessionKey) -> Option<Revocation> {
        if self.revoked.contains_key(key) {
            return self.revoked.get(key);
        }
        self.minted
            .contains_key(key)
            .then(|| self.minted.get(key))
            .flatten()
    }

    /// Approximate number of revocations in the minted budget, and its
    /// size: a budget nearly full means someone mints sessions to revoke.
    pub fn minted_revocations(&self) -> (u64, u64) {
        (
            self.minted.entry_count(),
            self.minted.policy().max_capacity().unwrap_or(0),
        )
    }

    /// Whether the session is revoked on this node.
    pub fn is_revoked(&self, key: &SessionKey) -> bool {
        self.revoked.contains_key(key) || self.minted.contains_key(key)
    }

    /// The state kept for a session.
    pub fn session(&self, key: &SessionKey) -> Option<SessionState> {
        self.sessions.peek(key)
    }

    /// Approximate number of sessions with a state.
    pub fn tracked_sessions(&self) -> u64 {
        self.sessions.len()
    }

    /// Approximate number of user profiles.
    pub fn tracked_users(&self) -> u64 {
        self.profiles.entry_count()
    }

    /// Approximate number of revoked sessions remembered.
    pub fn revoked_sessions(&self) -> u64 {
        self.revoked.entry_count() + self.minted.entry_count()
    }

    /// Drops the session states idle for the timeout at `now_secs`. The
    /// store also drops them as it is used; this returns their memory
    /// sooner. The proxy calls it once a minute.
    pub fn sweep(&self, now_secs: u64) {
        self.sessions.sweep(secs32(now_secs));
    }

    /// Runs the caches' pending maintenance (eviction, counts). Cheap; the
    /// caches also do it on their own as they are used.
    pub fn run_pending_tasks(&self) {
        self.revoked.run_pending_tasks();
        self.minted.run_pending_tasks();
        self.profiles.run_pending_tasks();
        self.entities.run_pending_tasks();
    }
}

impl fmt::Debug for Scorer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scorer")
            .field("config", &self.config.load())
            .field("sessions", &self.sessions)
            .field("tracked_users", &self.profiles.entry_count())
            .finish_non_exhaustive()
    }
}

// === impl Observation ===

impl Observation {
    /// The session and its user, when the request carried a live one.
    pub(crate) fn session(&self) -> Option<(SessionKey, Option<UserKey>)> {
        match self {
            Observation::Session { key, next, .. } => Some((*key, next.user)),
            _ => None,
        }
    }

    /// What rules may read of the session: `None` without a live session.
    pub(crate) fn session_facts(&self) -> Option<SessionFacts> {
        match self {
            Observation::Session { prior, next, .. } => Some(SessionFacts {
                new: !prior.is_some_and(|p| p.has(SessionState::BASELINED)),
                first_seen: u64::from(next.first_seen),
                last_seen: prior.map(|p| u64::from(p.touched)),
                requests: u64::from(next.requests) + 1,
                stepped_up_at: next.stepped_up_at(),
            }),
            _ => None,
        }
    }

    /// Whether the request carried a live session.
    pub(crate) fn is_session(&self) -> bool {
        matches!(self, Observation::Session { .. })
    }

    /// Whether committing this as allowed takes the session's first
    /// baseline.
    pub(crate) fn first_sighting(&self) -> bool {
        matches!(self, Observation::Session { prior, .. }
            if !prior.is_some_and(|p| p.has(SessionState::BASELINED)))
    }
}

// === impl Place ===

impl Place {
    /// The geo stage's location, at `f32` precision (a metre or so).
    /// The geo stage's location in hundredths of a degree; `None` off the
    /// globe.
    pub(crate) fn from_location(l: &Location) -> Option<Self> {
        let on_globe = l.lat.abs() <= 90.0 && l.lon.abs() <= 180.0;
        #[allow(
            clippy::cast_possible_truncation,
            reason = "in range (checked just above; NaN fails the check): at most ±18,000"
        )]
        let hundredths = |deg: f64| (deg * 100.0).round() as i16;
        on_globe.then(|| Self {
            lat: hundredths(l.lat),
            lon: hundredths(l.lon),
            accuracy_km: l.accuracy_km,
        })
    }

    fn location(self) -> Location {
        Location {
            lat: f64::from(self.lat) / 100.0,
            lon: f64::from(self.lon) / 100.0,
            accuracy_km: self.accuracy_km,
        }
    }
}

/// The minted-revocation budget for a store of `max_sessions`: a sixteenth,
/// at least 1,024 (`docs/risk.md`, state and memory).
pub(crate) fn minted_budget(max_sessions: u64) -> u64 {
    (max_sessions / 16).max(1_024)
}
