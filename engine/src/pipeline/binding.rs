//! The rotating binding's part in the pipeline (docs/bound-sessions.md):
//! judged with each cookie session on the request side, its presentation
//! recorded when the verdict is applied, and its companion cookie issued
//! or rotated on the response side — each as the route's mode allows.

use smallvec::SmallVec;

use super::{Enforcement, Engine, Verdict};
use crate::binding::fleet::FleetBinding;
use crate::binding::{
    self, BindingState, Check, Companions, Finding, Issue, Record, SameSite, Scope, Seal,
};
use crate::decide::Action;
use crate::request::ResponseView;
use crate::score::{Contribution, Reason, ScoreConfig, secs32};
use crate::session::{CredentialSource, Session, SessionKey};

// === impl Engine ===

impl Engine {
    /// The request's companion cookie, read once per request; `None` when
    /// the binding is off.
    pub(super) fn companion(&self, headers: &http::HeaderMap) -> Option<Companions> {
        let b = self.binding.as_ref()?;
        Some(Companions::read(&b.sealer, headers, &b.config.cookie_name))
    }

    /// The binding's judgement of `session`: only a cookie session is
    /// bound (an API client with a bearer token keeps no cookies).
    pub(super) fn check_binding(
        &self,
        session: Option<Session>,
        companions: Option<&Companions>,
        host: &str,
        now: u64,
    ) -> Option<Check> {
        let b = self.binding.as_ref()?;
        let session = session.filter(|s| matches!(s.source, CredentialSource::Cookie(_)))?;
        let state = b
            .store
            .get(&session.key, now)
            .or_else(|| session.previous.and_then(|p| b.store.get(&p, now)));
        let companions = companions?;
        let mut check = binding::check_all(
            &b.config,
            session.key,
            session.previous,
            companions,
            state,
            now,
        );
        check.unprefixed = companions.unprefixed(session.key, session.previous);
        check.in_domain = b.config.covers(host);
        Some(check)
    }

    /// The reason and points of a check's finding.
    pub(super) fn binding_contribution(
        &self,
        check: &Check,
        config: &ScoreConfig,
    ) -> Option<Contribution> {
        Some(match check.finding? {
            Finding::Reused => Contribution {
                reason: Reason::BindingReused,
                points: config.binding_reused,
            },
            Finding::Missing => Contribution {
                reason: Reason::BindingMissing,
                points: config.binding_missing,
            },
            Finding::Invalid => Contribution {
                reason: Reason::BindingInvalid,
                points: config.binding_invalid,
            },
        })
    }

    /// Records what a request's companion showed: two holders (whatever
    /// the verdict), or, for an allowed request, the first presentation of
    /// an issuance, a generation issued elsewhere, or that the session is
    /// still in use. Called only as the route's mode allows.
    pub(super) fn record_binding(&self, verdict: &Verdict) {
        let (Some(b), Some(check)) = (&self.binding, &verdict.binding) else {
            return;
        };
        let now = secs32(verdict.at);
        if verdict.action != Action::Allow && check.record != Record::Compromised {
            return;
        }
        match check.record {
            Record::Nothing => {}
            Record::Compromised => {
                // During a hash-key rotation the state judged may be held
                // under the session's previous key: the mark is written
                // under the current key on a copy of it, so that the
                // record the fleet gets names the generation and nonce
                // judged (never an empty generation 0).
                let found = verdict
                    .session
                    .filter(|s| s.key == check.session)
                    .and_then(|s| s.previous)
                    .and_then(|p| b.store.get(&p, verdict.at));
                b.store.update_published(check.session, verdict.at, |held| {
                    let s = held.or(found)?;
                    Some(BindingState {
                        compromised: true,
                        seen_at: now,
                        ..s
                    })
                });
            }
            Record::Seen => {
                b.store.update(check.session, verdict.at, |held| {
                    let s = held.filter(|s| !s.compromised)?;
                    Some(BindingState { seen_at: now, ..s })
                });
            }
            Record::Presented { generation, nonce } => {
                b.store.update_published(check.session, verdict.at, |held| {
                    let s = held?;
                    (s.generation == generation
                        && s.nonce == nonce
                        && s.presented_at == 0
                        && !s.compromised)
                        .then_some(BindingState {
                            presented_at: now.max(1),
                            seen_at: now,
                            ..s
                        })
                });
            }
            Record::Adopt { .. } => adopt(b, check.session, check.record, verdict.at),
        }
    }

    /// The companion cookies the response to `verdict`'s request sets, as
    /// `Set-Cookie` values, for a response of status 200: see
    /// [`Engine::binding_cookies_for_status`].
    pub fn binding_cookies(
        &self,
        verdict: &Verdict,
        response: &ResponseView<'_>,
        enforcement: Enforcement,
    ) -> SmallVec<[String; 1]> {
        self.binding_cookies_for_status(verdict, response, enforcement, 200)
    }

    /// The companion cookies the response (of HTTP status `status`) to
    /// `verdict`'s request sets, as `Set-Cookie` values: generation 1 for
    /// each session the app's response opens that has no binding yet (its
    /// scope from the app's `Set-Cookie`); unless one was, the request
    /// session's first binding (on a 2xx or 3xx response only: an app's
    /// 401 to a made-up session value binds nothing), rotation or
    /// re-issuance the verdict called for. An app re-sending its session
    /// cookie on every response (a rolling expiry) opens nothing new, so
    /// its sessions still rotate. Each issuance is a compare-and-set
    /// against the state judged, so that of requests crossing a rotation
    /// together one rotates. Only for an allowed request on an enforcing
    /// or monitoring route; never on `off`. The values are never logged.
    pub fn binding_cookies_for_status(
        &self,
        verdict: &Verdict,
        response: &ResponseView<'_>,
        enforcement: Enforcement,
        status: u16,
    ) -> SmallVec<[String; 1]> {
        self.binding_cookies_confirmed(verdict, response, enforcement, status, false)
    }

    /// [`Engine::binding_cookies_for_status`] for a response that may
    /// complete a step-up or confirmation of the request's session
    /// (`confirmed`: the engine confirmed it, [`Engine::respond`] or
    /// [`Engine::confirm`]). With `rotate_on_step_up`, such a response
    /// also issues the next generation when nothing else is issued (the
    /// current one presented, the check clean), so that whatever copy of
    /// the jar was taken before the owner proved themselves is superseded
    /// by a generation only the owner holds; a request Vigil sent to step
    /// up (its verdict `step_up`) counts as allowed once confirmed.
    pub fn binding_cookies_confirmed(
        &self,
        verdict: &Verdict,
        response: &ResponseView<'_>,
        enforcement: Enforcement,
        status: u16,
        confirmed: bool,
    ) -> SmallVec<[String; 1]> {
        let mut out = SmallVec::new();
        let Some(b) = self.binding.as_ref() else {
            return out;
        };
        let allowed = match enforcement {
            Enforcement::Enforce | Enforcement::Monitor => {
                verdict.action == Action::Allow || (confirmed && verdict.action == Action::StepUp)
            }
            Enforcement::Off => false,
        };
        if !allowed {
            return out;
        }
        let now = response.now_secs;
        let first = |held: Option<BindingState>| {
            held.is_none().then_some(BindingState {
                generation: 1,
                ..BindingState::default()
            })
        };
        for (key, scope) in self.opened_sessions(response) {
            let nonce = b.sealer.successor_nonce(&key, 1, 0);
            if let Some(c) = self.issue(key, scope, now, Some(nonce), first) {
                out.push(c);
            }
        }
        // A response that opened a session replaces the request's: one
        // companion per response, so that the browser keeps the new one.
        let Some(check) = verdict
            .binding
            .filter(|_| out.is_empty() && verdict.credentials == 1)
        else {
            return out;
        };
        let session = check.session;
        let scope = check
            .scope
            .unwrap_or_else(|| b.config.fallback_scope(check.in_domain));
        let (issue, on_confirmation) = match check.issue {
            Issue::Nothing if confirmed && b.config.rotate_on_step_up => {
                (self.confirmed_rotation(&check, now), true)
            }
            other => (other, false),
        };
        let issued = match issue {
            Issue::Nothing => None,
            Issue::First if !(200..400).contains(&status) => None,
            Issue::First => {
                let nonce = b.sealer.successor_nonce(&session, 1, 0);
                self.issue(session, scope, now, Some(nonce), first)
            }
            Issue::Rotate { generation, nonce } => {
                let next = generation.saturating_add(1);
                // A rotation on a confirmation takes a random nonce: the
                // deterministic successor is what any node would issue to
                // whoever presents this generation next, a copy too, and
                // the generation only the owner holds must differ from it.
                let successor =
                    (!on_confirmation).then(|| b.sealer.successor_nonce(&session, next, nonce));
                self.issue(session, scope, now, successor, |held| {
                    let s = held.filter(|s| s.generation == generation && s.nonce == nonce)?;
                    Some(BindingState {
                        generation: next,
                        previous_nonce: nonce,
                        ..s
                    })
                })
            }
            Issue::Again { generation, nonce } => self.issue(session, scope, now, None, |held| {
                held.filter(|s| {
                    s.generation == generation && s.nonce == nonce && s.presented_at == 0
                })
            }),
        };
        if let Some(cookie) = issued {
            out.push(cookie);
            // The bare-named companion this one succeeds under the
            // `__Host-` name: expired, so that it does not linger.
            if check.unprefixed && scope.is_host_wide() {
                out.push(Scope::expire_unprefixed(&b.config.cookie_name));
            }
        }
        out
    }

    /// The rotation a confirmation of `check`'s session calls for: the
    /// generation held, if the request presented exactly that issuance
    /// (a generation this node had not seen is learnt first; a previous
    /// generation within the grace rotates nothing), it was presented
    /// (before, or by this very request: Vigil's step-up callback records
    /// nothing) and nothing was found wrong. Compare-and-set on it, as any
    /// rotation.
    fn confirmed_rotation(&self, check: &Check, now: u64) -> Issue {
        let Some(b) = self.binding.as_ref() else {
            return Issue::Nothing;
        };
        if check.finding.is_some() {
            return Issue::Nothing;
        }
        let Some(presented) = check.presented else {
            return Issue::Nothing;
        };
        if matches!(check.record, Record::Adopt { .. }) {
            adopt(b, check.session, check.record, now);
        }
        let Some(s) = b.store.get(&check.session, now) else {
            return Issue::Nothing;
        };
        if (s.generation, s.nonce) != presented {
            return Issue::Nothing;
        }
        let presented = s.presented_at != 0
            || check.record
                == Record::Presented {
                    generation: s.generation,
                    nonce: s.nonce,
                };
        if check.finding.is_some() || s.compromised || !presented {
            return Issue::Nothing;
        }
        Issue::Rotate {
            generation: s.generation,
            nonce: s.nonce,
        }
    }

    /// Applies `next` (which sets the generation and previous nonce; the
    /// nonce — `nonce`, or a random one — and times are filled in here)
    /// and seals the result. A compromised session is issued nothing.
    fn issue(
        &self,
        session: SessionKey,
        scope: Scope,
        now: u64,
        nonce: Option<u32>,
        next: impl FnOnce(Option<BindingState>) -> Option<BindingState>,
    ) -> Option<String> {
        let b = self.binding.as_ref()?;
        let nonce = match nonce {
            Some(n) => n,
            None => loop {
                let n = b.sealer.random_u32()?;
                if n != 0 {
                    break n;
                }
            },
        };
        let now32 = secs32(now);
        let state = b.store.update(session, now, |held| {
            if held.is_some_and(|s| s.compromised) {
                return None;
            }
            let n = next(held)?;
            Some(BindingState {
                nonce,
                issued_at: now32,
                presented_at: 0,
                seen_at: now32,
                domain_wide: scope.has_domain(),
                ..n
            })
        })?;
        let value = b.sealer.seal(&Seal {
            session,
            generation: state.generation,
            nonce: state.nonce,
            issued_at: state.issued_at,
            scope,
        })?;
        Some(scope.set_cookie(&b.config.cookie_name, &value))
    }

    /// The sessions the response opens (app session cookies it sets, not
    /// deleting), each with its `Set-Cookie`'s scope.
    fn opened_sessions(&self, response: &ResponseView<'_>) -> SmallVec<[(SessionKey, Scope); 1]> {
        let mut out: SmallVec<[(SessionKey, Scope); 1]> = SmallVec::new();
        for (key, cookie) in self.session_cookies_set(response) {
            if out.iter().any(|(k, _)| *k == key) {
                continue;
            }
            let same_site = match cookie.same_site() {
                None => SameSite::Unset,
                Some(cookie::SameSite::Lax) => SameSite::Lax,
                Some(cookie::SameSite::Strict) => SameSite::Strict,
                Some(cookie::SameSite::None) => SameSite::None,
            };
            let scope = Scope::of(cookie.domain(), cookie.path(), same_site)
                .partitioned(cookie.partitioned().unwrap_or(false));
            out.push((key, scope));
        }
        out
    }

    /// Bindings held on this node, for a gauge and the memory measurement.
    pub fn bindings(&self) -> usize {
        self.binding.as_ref().map_or(0, |b| b.store.len())
    }

    /// From now on, queues each binding advance and compromised mark of
    /// this node for the fleet ([`Engine::unsent_bindings`]); call once a
    /// controller is configured (without one nothing would take them).
    pub fn publish_bindings(&self) {
        if let Some(b) = &self.binding {
            b.store.publish();
        }
    }

    /// Up to `max` binding records waiting to be told to the fleet, each
    /// session at most once and as its state is now (a newer change
    /// replaced any older one): see docs/bound-sessions.md, "Across the
    /// fleet". Taken: give back with [`Engine::bindings_unsent_again`]
    /// what could not be sent.
    pub fn unsent_bindings(&self, max: usize, now: u64) -> Vec<FleetBinding> {
        self.binding
            .as_ref()
            .map_or_else(Vec::new, |b| b.store.take_unsent(max, now))
    }

    /// Queues again records [`Engine::unsent_bindings`] gave that could
    /// not be sent.
    pub fn bindings_unsent_again(&self, records: &[FleetBinding]) {
        if let Some(b) = &self.binding {
            b.store.unsent_again(records);
        }
    }

    /// Binding records waiting to be told to the fleet.
    pub fn bindings_unsent(&self) -> usize {
        self.binding.as_ref().map_or(0, |b| b.store.unsent_len())
    }

    /// Takes a session's binding as the fleet knows it (another node's
    /// record, streamed by the controller), at `now`: joined with the
    /// state held, monotonically (never a lower generation, never a mark
    /// undone; in any order, any number of times). Whether it changed
    /// anything. A record that is not one a node writes is ignored.
    pub fn merge_binding(&self, record: &FleetBinding, now: u64) -> bool {
        self.binding
            .as_ref()
            .is_some_and(|b| b.store.merge(record, now))
    }

    /// Writes the binding states as a snapshot section, after the
    /// scorer's ([`crate::binding::fleet::split_snapshot`] finds it);
    /// returns how many. Nothing (not even an empty section) with the
    /// binding off, so that the file is the scorer's alone.
    pub fn write_binding_snapshot<W: std::io::Write>(&self, w: &mut W) -> std::io::Result<u64> {
        match &self.binding {
            Some(b) => b.store.write_snapshot(w),
            None => Ok(0),
        }
    }

    /// Restores a binding section at `now`: (restored, skipped), or
    /// `None` when the section is malformed. With the binding off it is
    /// ignored.
    pub fn restore_binding_snapshot(&self, section: &[u8], now: u64) -> Option<(u64, u64)> {
        match &self.binding {
            Some(b) => b.store.restore_snapshot(section, now),
            None => Some((0, 0)),
        }
    }

    /// The largest binding section this engine writes (0 with the binding
    /// off).
    pub fn max_binding_snapshot_bytes(&self) -> u64 {
        self.binding
            .as_ref()
            .map_or(0, |b| b.store.max_snapshot_bytes())
    }
}

/// Learns a generation issued elsewhere (`record`: a [`Record::Adopt`]),
/// as presented now, unless this node holds it (or a later one) already
/// or the session is marked.
fn adopt(b: &binding::Binding, session: SessionKey, record: Record, at: u64) {
    let Record::Adopt {
        generation,
        nonce,
        issued_at,
        domain_wide,
    } = record
    else {
        return;
    };
    let now = secs32(at);
    b.store.update_published(session, at, |held| {
        if held.is_some_and(|s| s.generation >= generation || s.compromised) {
            return None;
        }
        // The previous nonce only from an issuance presented here: one
        // never presented (an issuance whose response was lost, replaced
        // elsewhere) must not become the fleet's (0: not known).
        let previous_nonce = held
            .filter(|s| s.generation + 1 == generation && s.presented_at != 0)
            .map_or(0, |s| s.nonce);
        Some(BindingState {
            generation,
            nonce,
            previous_nonce,
            // A seal's time is the issuer's: never later than now.
            issued_at: issued_at.min(now),
            presented_at: now.max(1),
            seen_at: now,
            compromised: false,
            unsent: false,
            domain_wide,
        })
    });
}
