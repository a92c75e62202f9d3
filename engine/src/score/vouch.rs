//! Vouching: what the app, the user or an operator says of a session or a
//! user — a session the app set ([`Scorer::issue`]), a step-up passed
//! ([`Scorer::confirm`]), an operator's feedback ([`Scorer::feedback`]) —
//! taken in as the session's baseline or trusted for the user.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use super::profile::{ALL, Feature, Features, UserProfile};
use super::{Learn, Place, Scorer, SessionState, UserKey, secs32};
use crate::device::{Device, DeviceId, DeviceSummary};
use crate::fingerprint::TlsSource;
use crate::network::{NetworkFacts, NetworkMark};
use crate::session::SessionKey;

/// An operator's or the user's word on a detection, taken into account from
/// the next request on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Feedback {
    /// A refusal was a false positive: the refused request's device and
    /// network become the session's baseline and are trusted for its user.
    FalsePositive {
        /// The session.
        session: SessionKey,
        /// The refused request's device.
        device: DeviceSummary,
        /// The refused request's network (ASN, country and place are looked
        /// up again).
        network: NetworkFacts,
    },
    /// This device (whatever its browser version) is the user's.
    TrustDevice {
        /// The user.
        user: UserKey,
        /// The device.
        device: DeviceId,
    },
    /// This network is the user's: moving to it is not evidence and the
    /// model does not count it against them.
    TrustNetwork {
        /// The user.
        user: UserKey,
        /// The network.
        network: TrustedNetwork,
    },
}

/// Why feedback could not be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FeedbackError {
    /// The session was revoked since: it stays revoked.
    #[error("the session was revoked")]
    Revoked,
    /// The session is no longer remembered on this node.
    #[error("the session is no longer known on this node")]
    NoSession,
}

/// A network an operator can trust for a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustedNetwork {
    /// Every address of an autonomous system.
    Asn(u32),
    /// The /24 (IPv4) or /48 (IPv6) holding this address.
    Prefix(IpAddr),
    /// A country (ISO 3166-1 alpha-2, either case).
    Country([u8; 2]),
}

/// What [`Scorer::issue`] did with a session the app set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Issued {
    /// A new session, baselined.
    New,
    /// A known session, kept as it was and bound to the named user.
    Bound,
    /// A known session, kept as it was.
    Known,
    /// A revoked session: nothing recorded.
    Revoked,
}

// === impl Scorer ===

impl Scorer {
    /// The app opened a session in a response to a request from this device
    /// and network: they are its baseline before anyone presents the new
    /// value, and it is bound to `user` when the app named one. A session
    /// already known keeps its baseline (apps re-set the same cookie to
    /// extend it) and is bound to `user` if one is named; a revoked one
    /// stays revoked. Returns what was done.
    pub(crate) fn issue(
        &self,
        key: SessionKey,
        user: Option<UserKey>,
        device: &DeviceSummary,
        network: &NetworkMark,
        place: Option<Place>,
        now_secs: u64,
    ) -> Issued {
        if self.is_revoked(&key) {
            return Issued::Revoked;
        }
        let now = secs32(now_secs);
        let generation = user
            .and_then(|u| self.entities.get(&u))
            .map_or(0, |e| e.generation);
        let mut issued = false;
        self.sessions.update(key, now, |held| match held {
            Some(s) => *s,
            None => {
                issued = true;
                SessionState {
                    user,
                    generation,
                    flags: SessionState::BASELINED | SessionState::VOUCHED,
                    ..SessionState::new(device, *network, place, now)
                }
            }
        });
        match (issued, user) {
            (true, _) => Issued::New,
            (false, Some(user)) if self.bind_user(key, user, now_secs) => Issued::Bound,
            (false, Some(_)) => Issued::Known,
            (false, None) => Issued::Known,
        }
    }

    /// The session's user proved themselves from this request's device and
    /// network (a step-up passed): those become the session's baseline and
    /// are learnt for the user, and the user's recent detections are
    /// cleared. The session's step-up time becomes `now_secs`. Returns the
    /// session's user and what was learnt of them (for the fleet), or
    /// `None` when nothing was confirmed (the session is revoked).
    pub(crate) fn confirm(
        &self,
        key: SessionKey,
        device: &Device,
        network: &NetworkMark,
        place: Option<Place>,
        now_secs: u64,
    ) -> Option<(Option<UserKey>, Option<super::Learnt>)> {
        if self.is_revoked(&key) {
            return None;
        }
        let now = secs32(now_secs);
        let mut next = SessionState::new(&device.summary(), *network, place, now);
        self.sessions.update(key, now, |held| {
            next = adopt(held, &device.summary(), network, place, now);
            // 0 means never: a step-up at the epoch reads as one second in.
            next.stepped_up_at = now.max(1);
            next
        });
        let learn = Learn {
            features: Features::of(network, device.id),
            which: &ALL,
            new_session: false,
            trust: false,
        };
        let learnt = self.learn(next.user, &learn, now);
        if let Some(user) = next.user {
            self.clear_detections(user);
        }
        Some((next.user, learnt))
    }

    /// Applies an operator's feedback; `place` is where the geo stage puts
    /// a false positive's network. Returns what it taught of the user, for
    /// the fleet: a false positive's device and network, learnt and
    /// trusted, or the device or network an operator trusted (which the
    /// fleet counts as one sighting of it, trusted).
    pub(crate) fn feedback(
        &self,
        feedback: Feedback,
        place: Option<Place>,
        now_secs: u64,
    ) -> Result<Option<super::Learnt>, FeedbackError> {
        let now = secs32(now_secs);
        let trust = |user: UserKey, values: &[(Feature, u32)]| {
            let profile = self
                .profiles
                .get_with(user, || Arc::new(Mutex::new(UserProfile::new(now))));
            let mut p = profile.lock().unwrap_or_else(PoisonError::into_inner);
            for &(f, v) in values {
                p.trust(f, v, now);
            }
        };
        let learnt;
        match feedback {
            Feedback::FalsePositive {
                session,
                device,
                network,
            } => {
                if self.is_revoked(&session) {
                    return Err(FeedbackError::Revoked);
                }
                if self.sessions.peek(&session).is_none() {
                    return Err(FeedbackError::NoSession);
                }
                let mark = network.mark();
                let mut state = SessionState::new(&device, mark, place, now);
                self.sessions.update(session, now, |held| {
                    state = adopt(held, &device, &mark, place, now);
                    state
                });
                let learn = Learn {
                    features: Features::of(&mark, device.id),
                    which: &ALL,
                    new_session: false,
                    trust: true,
                };
                learnt = self.learn(state.user, &learn, now);
                if let Some(user) = state.user {
                    self.clear_detections(user);
                }
            }
            Feedback::TrustDevice { user, device } => {
                let f = Features::of(&NetworkMark::default(), device);
                let which = [Feature::Device, Feature::Browser, Feature::Platform];
                trust(user, &which.map(|k| (k, f.get(k))));
                learnt = Some(super::Learnt::new(
                    user,
                    &f,
                    &which,
                    false,
                    true,
                    u64::from(now),
                ));
            }
            Feedback::TrustNetwork { user, network } => {
                let (feature, facts) = match network {
                    TrustedNetwork::Asn(asn) => (
                        Feature::Asn,
                        NetworkMark {
                            asn,
                            ..NetworkMark::default()
                        },
                    ),
                    TrustedNetwork::Prefix(ip) => (Feature::Prefix, NetworkFacts::new(ip).mark()),
                    TrustedNetwork::Country(c) => (
                        Feature::Country,
                        NetworkMark {
                            country: [c[0].to_ascii_uppercase(), c[1].to_ascii_uppercase()],
                            ..NetworkMark::default()
                        },
                    ),
                };
                let f = Features::of(&facts, DeviceId(0));
                trust(user, &[(feature, f.get(feature))]);
                learnt = Some(super::Learnt::new(
                    user,
                    &f,
                    &[feature],
                    false,
                    true,
                    u64::from(now),
                ));
            }
        }
        Ok(learnt)
    }
}

/// The session state after its user proved themselves (or an operator
/// vouched) from this device and network: they become the baseline, the
/// TLS fingerprint kept if this device showed none, the move counter reset,
/// and login judged.
fn adopt(
    held: Option<&SessionState>,
    device: &DeviceSummary,
    network: &NetworkMark,
    place: Option<Place>,
    now: u32,
) -> SessionState {
    let mut next = held
        .copied()
        .unwrap_or_else(|| SessionState::new(device, *network, place, now));
    if next.network.prefix != network.prefix && next.has(SessionState::BASELINED) {
        next.previous = next.network.prefix;
        next.moved_at = now;
    }
    let mut device = *device;
    if device.tls_source == TlsSource::None && next.tls_source != TlsSource::None {
        let kept = next.device();
        device.tls_source = kept.tls_source;
        device.ja4 = kept.ja4;
        device.ja4_form = kept.ja4_form;
    }
    next.set_device(&device);
    next.network = *network;
    next.place = place.or(next.place);
    next.last_seen = now;
    // Its user proved themselves on it (or an operator vouched).
    next.flags |= SessionState::BASELINED | SessionState::VOUCHED;
    if next.user.is_some() {
        next.flags |= SessionState::LOGIN_SCORED;
    }
    next.set_moves(0);
    next
}
