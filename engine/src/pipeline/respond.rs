//! The response side: what the app's response asks of the engine (the
//! user it names, the sessions it sets, a step-up confirmation), judged
//! against the verdict of the request it answers.

use http::HeaderValue;
use smallvec::SmallVec;

use super::{Enforcement, Engine, Verdict};
use crate::decide::Action;
use crate::events::{Event, Reference};
use crate::request::ResponseView;
use crate::score::{Issued, UserKey};
use crate::session::SessionKey;

/// What the app's response asks of the engine, read from its headers;
/// see [`Engine::response_effects`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseEffects {
    /// The user the app named, as a key.
    pub user: Option<UserKey>,
    /// The user header was present but not a usable name (empty, too long,
    /// control characters, not UTF-8, or sent twice).
    pub bad_user: bool,
    /// Session cookies the response sets (deleted ones left out): each is a
    /// new session, baselined at issuance.
    pub issued: SmallVec<[SessionKey; 2]>,
    /// The app confirmed that the user has just re-authenticated.
    pub confirm: bool,
}

/// What [`Engine::respond`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Responded {
    /// Sessions baselined at issuance.
    pub issued: usize,
    /// Those sessions: new to the engine (not a known session the app set
    /// again), so that what is offered per new session (DBSC) is offered
    /// once.
    pub new: SmallVec<[SessionKey; 2]>,
    /// The request's own session was bound to the named user.
    pub bound: bool,
    /// The request's session was confirmed.
    pub confirmed: bool,
    /// The user header was present but unusable.
    pub bad_user: bool,
}

/// `Set-Cookie` lines read from one response; more are ignored (an app
/// sets a handful).
const MAX_SET_COOKIES: usize = 32;

// === impl Engine ===

impl Engine {
    /// What the app's response asks of the engine, read from its headers
    /// alone: the user it names, the session cookies it sets (deleted ones
    /// left out), and a step-up confirmation (the confirm header with the
    /// value `1`, from an app trusted to confirm). Changes nothing.
    pub fn response_effects(&self, response: &ResponseView<'_>) -> ResponseEffects {
        let mut out = ResponseEffects::default();
        if let Some(name) = response.user_header {
            let mut values = response.headers.get_all(name).iter();
            if let Some(first) = values.next() {
                match (user_name(first), values.next()) {
                    (Some(user), None) => out.user = Some(self.user_key(user)),
                    _ => out.bad_user = true,
                }
            }
        }
        out.confirm = response.app_confirms
            && response.confirm_header.is_some_and(|name| {
                let mut values = response.headers.get_all(name).iter();
                values.next().is_some_and(|v| v.as_bytes() == b"1") && values.next().is_none()
            });
        for (key, _) in self.session_cookies_set(response) {
            if !out.issued.contains(&key) {
                out.issued.push(key);
            }
        }
        out
    }

    /// The app session cookies the response sets (at most
    /// `MAX_SET_COOKIES` `Set-Cookie` lines read; deleting ones left out),
    /// each with its session key: what the response side and the binding
    /// both read, parsed one way.
    pub(super) fn session_cookies_set<'a>(
        &'a self,
        response: &'a ResponseView<'_>,
    ) -> impl Iterator<Item = (SessionKey, cookie::Cookie<'a>)> + 'a {
        let now = i64::try_from(response.now_secs).unwrap_or(i64::MAX);
        response
            .headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .take(MAX_SET_COOKIES)
            .filter_map(|value| {
                std::str::from_utf8(value.as_bytes())
                    .ok()
                    .and_then(|v| cookie::Cookie::parse(v).ok())
            })
            .filter(move |cookie| {
                // Max-Age wins over Expires (RFC 6265, 5.3 step 3).
                let deleted = cookie.value().is_empty()
                    || match cookie.max_age() {
                        Some(age) => age.is_zero() || age.is_negative(),
                        None => cookie
                            .expires_datetime()
                            .is_some_and(|t| t.unix_timestamp() <= now),
                    };
                !deleted
            })
            .filter_map(|cookie| {
                let key = self.key_for_cookie(cookie.name(), cookie.value().as_bytes())?;
                Some((key, cookie))
            })
    }

    /// The response side of the request `verdict` judged: one evaluation
    /// per request, never a second identify or resolve. Sessions the
    /// response opens are baselined with the *requesting* client's device
    /// and network (so a thief's first use of a cookie stolen at issuance
    /// is judged against the victim's), and bound to the user the app
    /// names; without a new session, the request's own session is bound; a
    /// confirmation makes the request's device and network its session's
    /// baseline. On an enforcing or monitoring route this happens only for
    /// a request that was (or would have been) allowed; on an `off` route
    /// only a confirmation applies.
    pub fn respond(
        &self,
        verdict: &Verdict,
        response: &ResponseView<'_>,
        enforcement: Enforcement,
    ) -> Responded {
        let effects = self.response_effects(response);
        let mut done = Responded {
            bad_user: effects.bad_user,
            ..Responded::default()
        };
        let now = response.now_secs;
        let learning = match enforcement {
            Enforcement::Enforce | Enforcement::Monitor => verdict.action == Action::Allow,
            Enforcement::Off => false,
        };
        // With several credentials in the request, which one the app
        // honoured cannot be told: a thief could pass a step-up for his own
        // account next to the victim's cookie and have the victim's session
        // adopt his device. Only a request with one credential binds or
        // confirms the request's session.
        let single = verdict.credentials == 1;
        let confirming = effects.confirm
            && (learning || enforcement == Enforcement::Off)
            && single
            && verdict.session.is_some();
        if learning {
            let device = verdict.device.summary();
            let mark = verdict.network.mark();
            for &key in &effects.issued {
                match self
                    .scorer
                    .issue(key, effects.user, &device, &mark, verdict.place, now)
                {
                    Issued::New => {
                        done.issued += 1;
                        done.new.push(key);
                        self.emit(|| Event::SessionIssued {
                            session: key,
                            user: effects.user,
                            at: now,
                        });
                    }
                    Issued::Bound => {
                        done.bound = true;
                        if let Some(user) = effects.user {
                            self.emit(|| Event::SessionBound {
                                session: key,
                                user,
                                at: now,
                            });
                        }
                    }
                    Issued::Known | Issued::Revoked => {}
                }
            }
            if let (0, Some(user), Some(session), true) =
                (done.issued, effects.user, verdict.session, single)
                && effects.issued.is_empty()
                && self.scorer.bind_user(session.key, user, now)
            {
                done.bound = true;
                self.emit(|| Event::SessionBound {
                    session: session.key,
                    user,
                    at: now,
                });
            }
        }
        if let (true, Some(session)) = (confirming, verdict.session) {
            done.confirmed = self.confirm_verdict(session.key, verdict, now, None);
        }
        done
    }

    /// Confirms `session` from `verdict`'s device and network.
    fn confirm_verdict(
        &self,
        session: SessionKey,
        verdict: &Verdict,
        now: u64,
        disputed: Option<Reference>,
    ) -> bool {
        let Some((user, learnt)) = self.scorer.confirm(
            session,
            &verdict.device,
            &verdict.network.mark(),
            verdict.place,
            now,
        ) else {
            return false;
        };
        if let Some(learnt) = learnt {
            self.emit(|| Event::UserLearned(learnt));
        }
        self.emit(|| Event::Confirmed {
            session,
            user,
            at: now,
            disputed,
        });
        true
    }

    /// The request `verdict` judged passed a step-up (its client proved
    /// to be the session's user): its device and network become the
    /// session's baseline and are learnt for the user. No second
    /// evaluation: the verdict's facts are used. Returns whether a session
    /// was confirmed (not for an anonymous or revoked one).
    pub fn confirm(&self, verdict: &Verdict) -> bool {
        let now = self.now_of(verdict);
        verdict
            .session
            .is_some_and(|s| self.confirm_verdict(s.key, verdict, now, None))
    }

    /// As [`Engine::confirm`], for a step-up the user asked for to dispute
    /// the refusal `disputed` ("it was me" on a block page): the
    /// [`Event::Confirmed`] names it, so that the fleet labels that
    /// decision with the user's word. Whether a blocked session may be
    /// confirmed at all is the caller's choice; a revoked one never is.
    pub fn confirm_disputed(&self, verdict: &Verdict, disputed: Reference) -> bool {
        let now = self.now_of(verdict);
        verdict
            .session
            .is_some_and(|s| self.confirm_verdict(s.key, verdict, now, Some(disputed)))
    }
}

/// The user the app named: one value of 1 to 256 bytes of visible UTF-8
/// (an id or an email address), trimmed.
fn user_name(value: &HeaderValue) -> Option<&str> {
    valid_user_name(std::str::from_utf8(value.as_bytes()).ok()?)
}

/// A user name as Vigil takes it, from the app or an operator: trimmed, 1 to
/// 256 bytes, no control characters.
pub fn valid_user_name(name: &str) -> Option<&str> {
    let name = name.trim();
    let ok = !name.is_empty() && name.len() <= 256 && !name.chars().any(char::is_control);
    ok.then_some(name)
}
