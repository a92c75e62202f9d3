//! The rotating binding's part in the pipeline (docs/bound-sessions.md):
//! judged with each cookie session on the request side, its presentation
//! recorded when the verdict is applied, and its companion cookie issued
//! or rotated on the response side — each as the route's mode allows.

use smallvec::SmallVec;

use super::{Enforcement, Engine, Verdict};
use crate::binding::{
    self, BindingState, Check, Companion, Finding, Issue, Record, SameSite, Scope, Seal,
};
use crate::decide::Action;
use crate::request::ResponseView;
use crate::score::{Contribution, Reason, ScoreConfig, secs32};
use crate::session::{CredentialSource, Session, SessionKey};

/// `Set-Cookie` lines read from one response for issuances; more are
/// ignored, as on the rest of the response side.
const MAX_SET_COOKIES: usize = 32;

// === impl Engine ===

impl Engine {
    /// The request's companion cookie, read once per request; `None` when
    /// the binding is off.
    pub(super) fn companion(&self, headers: &http::HeaderMap) -> Option<Companion> {
        let b = self.binding.as_ref()?;
        Some(Companion::read(&b.sealer, headers, &b.config.cookie_name))
    }

    /// The binding's judgement of `session`: only a cookie session is
    /// bound (an API client with a bearer token keeps no cookies).
    pub(super) fn check_binding(
        &self,
        session: Option<Session>,
        companion: Option<&Companion>,
        now: u64,
    ) -> Option<Check> {
        let b = self.binding.as_ref()?;
        let session = session.filter(|s| matches!(s.source, CredentialSource::Cookie(_)))?;
        let state = b
            .store
            .get(&session.key, now)
            .or_else(|| session.previous.and_then(|p| b.store.get(&p, now)));
        Some(binding::check(
            &b.config,
            session.key,
            session.previous,
            companion?,
            state,
            now,
        ))
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

    /// Records what an allowed request's companion showed: the first
    /// presentation of an issuance, or a generation issued elsewhere.
    pub(super) fn record_binding(&self, verdict: &Verdict) {
        let (Some(b), Some(check)) = (&self.binding, &verdict.binding) else {
            return;
        };
        let now = secs32(verdict.at);
        match check.record {
            Record::Nothing => {}
            Record::Presented { generation, nonce } => {
                b.store.update(check.session, verdict.at, |held| {
                    let s = held?;
                    (s.generation == generation && s.nonce == nonce && s.presented_at == 0)
                        .then_some(BindingState {
                            presented_at: now.max(1),
                            ..s
                        })
                });
            }
            Record::Adopt {
                generation,
                nonce,
                issued_at,
            } => {
                b.store.update(check.session, verdict.at, |held| {
                    if held.is_some_and(|s| s.generation >= generation) {
                        return None;
                    }
                    let previous_nonce = held
                        .filter(|s| s.generation + 1 == generation)
                        .map_or(0, |s| s.nonce);
                    Some(BindingState {
                        generation,
                        nonce,
                        previous_nonce,
                        issued_at,
                        presented_at: now.max(1),
                    })
                });
            }
        }
    }

    /// The companion cookies the response to `verdict`'s request sets, as
    /// `Set-Cookie` values: generation 1 for each session the app's
    /// response opens (its scope from the app's `Set-Cookie`), otherwise
    /// the request session's first binding, rotation or re-issuance the
    /// verdict called for. Each issuance is a compare-and-set against the
    /// state judged, so that of requests crossing a rotation together one
    /// rotates. Only for an allowed request on an enforcing or monitoring
    /// route; never on `off`. The values are never logged.
    pub fn binding_cookies(
        &self,
        verdict: &Verdict,
        response: &ResponseView<'_>,
        enforcement: Enforcement,
    ) -> SmallVec<[String; 1]> {
        let mut out = SmallVec::new();
        if self.binding.is_none() {
            return out;
        }
        let allowed = match enforcement {
            Enforcement::Enforce | Enforcement::Monitor => verdict.action == Action::Allow,
            Enforcement::Off => false,
        };
        if !allowed {
            return out;
        }
        let now = response.now_secs;
        let mut opened = false;
        for (key, scope) in self.opened_sessions(response) {
            opened = true;
            if let Some(c) = self.issue(key, scope, now, |held| {
                held.is_none().then_some(BindingState {
                    generation: 1,
                    nonce: 0,
                    previous_nonce: 0,
                    issued_at: 0,
                    presented_at: 0,
                })
            }) {
                out.push(c);
            }
        }
        let Some(check) = verdict
            .binding
            .filter(|_| !opened && verdict.credentials == 1)
        else {
            return out;
        };
        let scope = check.scope.unwrap_or(Scope::DEFAULT);
        let issued = match check.issue {
            Issue::Nothing => None,
            Issue::First => self.issue(check.session, scope, now, |held| {
                held.is_none().then_some(BindingState {
                    generation: 1,
                    nonce: 0,
                    previous_nonce: 0,
                    issued_at: 0,
                    presented_at: 0,
                })
            }),
            Issue::Rotate { generation, nonce } => self.issue(check.session, scope, now, |held| {
                let s = held.filter(|s| s.generation == generation && s.nonce == nonce)?;
                Some(BindingState {
                    generation: generation.saturating_add(1),
                    previous_nonce: nonce,
                    ..s
                })
            }),
            Issue::Again { generation, nonce } => self.issue(check.session, scope, now, |held| {
                held.filter(|s| {
                    s.generation == generation && s.nonce == nonce && s.presented_at == 0
                })
            }),
        };
        out.extend(issued);
        out
    }

    /// Applies `next` (which sets the generation and previous nonce; the
    /// nonce and times are filled in here) and seals the result.
    fn issue(
        &self,
        session: SessionKey,
        scope: Scope,
        now: u64,
        next: impl FnOnce(Option<BindingState>) -> Option<BindingState>,
    ) -> Option<String> {
        let b = self.binding.as_ref()?;
        let nonce = loop {
            let n = b.sealer.random_u32()?;
            if n != 0 {
                break n;
            }
        };
        let now32 = secs32(now);
        let state = b.store.update(session, now, |held| {
            let n = next(held)?;
            Some(BindingState {
                nonce,
                issued_at: now32,
                presented_at: 0,
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
        let now = i64::try_from(response.now_secs).unwrap_or(i64::MAX);
        for value in response
            .headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .take(MAX_SET_COOKIES)
        {
            let Some(cookie) = std::str::from_utf8(value.as_bytes())
                .ok()
                .and_then(|v| cookie::Cookie::parse(v).ok())
            else {
                continue;
            };
            let deleted = cookie.value().is_empty()
                || match cookie.max_age() {
                    Some(age) => age.is_zero() || age.is_negative(),
                    None => cookie
                        .expires_datetime()
                        .is_some_and(|t| t.unix_timestamp() <= now),
                };
            if deleted {
                continue;
            }
            let Some(key) = self.key_for_cookie(cookie.name(), cookie.value().as_bytes()) else {
                continue;
            };
            if out.iter().any(|(k, _)| *k == key) {
                continue;
            }
            let same_site = match cookie.same_site() {
                None => SameSite::Unset,
                Some(cookie::SameSite::Lax) => SameSite::Lax,
                Some(cookie::SameSite::Strict) => SameSite::Strict,
                Some(cookie::SameSite::None) => SameSite::None,
            };
            out.push((key, Scope::of(cookie.domain(), cookie.path(), same_site)));
        }
        out
    }

    /// Bindings held on this node, for a gauge and the memory measurement.
    pub fn bindings(&self) -> usize {
        self.binding.as_ref().map_or(0, |b| b.store.len())
    }
}
