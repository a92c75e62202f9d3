//! A simulated browser's cookie jar: what lets the rotating binding
//! (`docs/bound-sessions.md`) see two holders of one copied jar.
//!
//! Every client of a session — the owner, and the thief once the jar is
//! copied — has a jar of its own. It always holds the app's session cookie
//! as the corpus names it (`session=<id>.<run>.<round>.<lap>`: a thief replays
//! that cookie whatever Vigil answers, so a response never removes it from
//! the jar), and whatever other cookie a response sets, Vigil's companion
//! cookie above all: `Set-Cookie` stores a name and value, a `Max-Age` of
//! zero or less deletes it. Path, Domain and expiry dates are not read
//! (one host, one path, runs shorter than any expiry), and `Secure`
//! cookies are kept over cleartext as well: in cleartext the generator
//! plays the browser behind a balancer that ends TLS, which is where the
//! browser's connection is encrypted.
//!
//! Bounded like a browser's: at most [`MAX_COOKIES`] cookies besides the
//! session's, names and values of at most [`MAX_COOKIE_BYTES`] together,
//! at most [`MAX_SET_COOKIES`] `Set-Cookie` fields read per response; what
//! is beyond is ignored, never an error.

use http::{HeaderMap, HeaderValue};

/// Cookies a jar holds besides the session's.
pub const MAX_COOKIES: usize = 16;
/// Longest `name=value` of one cookie (browsers allow 4096).
pub const MAX_COOKIE_BYTES: usize = 4096;
/// `Set-Cookie` fields read from one response.
pub const MAX_SET_COOKIES: usize = 16;

/// One client's cookies.
#[derive(Debug, Clone)]
pub struct Jar {
    /// `<name>=<value>` of the app's session cookie, sent first, never
    /// changed by a response.
    session: String,
    /// `(name, value)` of every other cookie, in the order first set.
    cookies: Vec<(String, String)>,
    /// The `Cookie` header for the cookies above; rebuilt when they change.
    header: Option<HeaderValue>,
    /// The next response that sets a cookie is lost (its `Set-Cookie`
    /// fields are not stored).
    losing: bool,
}

/// What one `Set-Cookie` field asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetCookie {
    /// Store (or replace) `name` with `value`.
    Set(String, String),
    /// Remove `name` (`Max-Age` of zero or less).
    Delete(String),
}

/// What a response set, read from its headers: empty (and nothing
/// allocated) when it sets no cookie.
pub fn set_cookies(headers: &HeaderMap) -> Vec<SetCookie> {
    let mut out = Vec::new();
    for v in headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .take(MAX_SET_COOKIES)
    {
        if let Some(c) = v.to_str().ok().and_then(parse) {
            out.push(c);
        }
    }
    out
}

/// One `Set-Cookie` value; `None` when it names no cookie or is too long.
fn parse(field: &str) -> Option<SetCookie> {
    let mut parts = field.split(';');
    let (name, value) = parts.next()?.split_once('=')?;
    let (name, value) = (name.trim(), value.trim());
    let bad_byte = |b: u8| b.is_ascii_control() || b == b';' || b == b',';
    if name.is_empty()
        || name.len() + value.len() + 1 > MAX_COOKIE_BYTES
        || name.bytes().any(|b| bad_byte(b) || b == b'=' || b == b' ')
        || value.bytes().any(bad_byte)
    {
        return None;
    }
    let expired = parts.any(|attr| {
        let Some((k, v)) = attr.split_once('=') else {
            return false;
        };
        k.trim().eq_ignore_ascii_case("max-age")
            && v.trim().parse::<i64>().is_ok_and(|seconds| seconds <= 0)
    });
    Some(if expired {
        SetCookie::Delete(name.to_owned())
    } else {
        SetCookie::Set(name.to_owned(), value.to_owned())
    })
}

// === impl Jar ===

impl Jar {
    /// A jar holding only the app's session cookie `name=value`.
    pub fn new(session_name: &str, session_value: &str) -> Self {
        Self {
            session: format!("{session_name}={session_value}"),
            cookies: Vec::new(),
            header: None,
            losing: false,
        }
    }

    /// The `Cookie` header this client sends: the session cookie, then
    /// every other cookie held. Built once per change; a clone shares its
    /// bytes. `None` only if the session cookie is not a header value.
    pub fn header(&mut self) -> Option<HeaderValue> {
        if self.header.is_none() {
            let mut s = self.session.clone();
            for (n, v) in &self.cookies {
                s.push_str("; ");
                s.push_str(n);
                s.push('=');
                s.push_str(v);
            }
            self.header = HeaderValue::from_str(&s).ok();
        }
        self.header.clone()
    }

    /// A copy of the cookies (a thief's copy of the jar): the copy does
    /// not inherit a pending loss.
    pub fn copy(&self) -> Self {
        Self {
            losing: false,
            ..self.clone()
        }
    }

    /// The next response that sets a cookie is lost.
    pub fn lose_next(&mut self) {
        self.losing = true;
    }

    /// Stores what a response set. Returns whether the response's cookies
    /// were lost instead ([`Jar::lose_next`]).
    pub fn store(&mut self, set: Vec<SetCookie>) -> bool {
        let session_name = self.session.split('=').next().unwrap_or_default();
        let set: Vec<SetCookie> = set
            .into_iter()
            .filter(|c| match c {
                SetCookie::Set(n, _) | SetCookie::Delete(n) => n != session_name,
            })
            .collect();
        if set.is_empty() {
            return false;
        }
        if std::mem::take(&mut self.losing) {
            return true;
        }
        for c in set {
            match c {
                SetCookie::Set(name, value) => {
                    if let Some(slot) = self.cookies.iter_mut().find(|(n, _)| *n == name) {
                        slot.1 = value;
                    } else if self.cookies.len() < MAX_COOKIES {
                        self.cookies.push((name, value));
                    }
                }
                SetCookie::Delete(name) => self.cookies.retain(|(n, _)| *n != name),
            }
        }
        self.header = None;
        false
    }

    /// The value of cookie `name`, if held (the session cookie included).
    pub fn get(&self, name: &str) -> Option<&str> {
        if let Some((n, v)) = self.session.split_once('=')
            && n == name
        {
            return Some(v);
        }
        self.cookies
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test")]
    use super::*;

    fn response(fields: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for f in fields {
            h.append(http::header::SET_COOKIE, HeaderValue::from_str(f).unwrap());
        }
        h
    }

    #[test]
    fn a_jar_sends_back_what_responses_set_and_forgets_what_they_expire() {
        let mut jar = Jar::new("session", "s1.0.0");
        assert_eq!(jar.header().unwrap(), "session=s1.0.0");
        let lost = jar.store(set_cookies(&response(&[
            "session=s1.0.0; Path=/; HttpOnly",
            "vigil_bind=AAAA; Path=/; Max-Age=34560000; Secure; HttpOnly; SameSite=Lax",
        ])));
        assert!(!lost);
        assert_eq!(jar.header().unwrap(), "session=s1.0.0; vigil_bind=AAAA");
        jar.store(set_cookies(&response(&["vigil_bind=BBBB; Secure"])));
        assert_eq!(jar.get("vigil_bind"), Some("BBBB"));
        jar.store(set_cookies(&response(&[
            "other=1",
            "vigil_bind=; Max-Age=0",
        ])));
        assert_eq!(jar.header().unwrap(), "session=s1.0.0; other=1");
        jar.store(set_cookies(&response(&["other=; max-age=-1"])));
        assert_eq!(jar.header().unwrap(), "session=s1.0.0");
    }

    #[test]
    fn the_session_cookie_stays_whatever_a_response_says() {
        // A revocation clears the app cookie; the corpus's client replays
        // it all the same (a thief does), so its refusals stay visible.
        let mut jar = Jar::new("session", "s1.0.0");
        assert!(!jar.store(set_cookies(&response(&["session=; Max-Age=0"]))));
        assert_eq!(jar.header().unwrap(), "session=s1.0.0");
    }

    #[test]
    fn a_lost_response_leaves_the_jar_as_it_was_once() {
        let mut jar = Jar::new("session", "s");
        jar.store(vec![SetCookie::Set("vigil_bind".into(), "g1".into())]);
        jar.lose_next();
        // A response that sets nothing does not use up the loss.
        assert!(!jar.store(set_cookies(&HeaderMap::new())));
        assert!(jar.store(vec![SetCookie::Set("vigil_bind".into(), "g2".into())]));
        assert_eq!(jar.get("vigil_bind"), Some("g1"));
        assert!(!jar.store(vec![SetCookie::Set("vigil_bind".into(), "g2b".into())]));
        assert_eq!(jar.get("vigil_bind"), Some("g2b"));
    }

    #[test]
    fn a_copy_goes_its_own_way() {
        let mut owner = Jar::new("session", "s");
        owner.store(vec![SetCookie::Set("vigil_bind".into(), "g1".into())]);
        let mut thief = owner.clone();
        owner.store(vec![SetCookie::Set("vigil_bind".into(), "g2".into())]);
        assert_eq!(thief.header().unwrap(), "session=s; vigil_bind=g1");
        assert_eq!(owner.header().unwrap(), "session=s; vigil_bind=g2");
    }

    #[test]
    fn malformed_or_oversized_fields_are_ignored() {
        let long = format!("big={}", "x".repeat(MAX_COOKIE_BYTES));
        let fields = [
            "no-equals-sign",
            "=value",
            "bad name=1",
            "ctl=a\u{7f}b",
            long.as_str(),
        ];
        let mut h = HeaderMap::new();
        for f in fields {
            if let Ok(v) = HeaderValue::from_str(f) {
                h.append(http::header::SET_COOKIE, v);
            }
        }
        h.append(
            http::header::SET_COOKIE,
            HeaderValue::from_bytes(b"bin=\xff").unwrap(),
        );
        assert_eq!(set_cookies(&h), vec![]);
        // At most MAX_SET_COOKIES fields read, MAX_COOKIES kept.
        let many: Vec<String> = (0..40).map(|i| format!("c{i}=v")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let set = set_cookies(&response(&refs));
        assert_eq!(set.len(), MAX_SET_COOKIES);
        let mut jar = Jar::new("session", "s");
        jar.store(set.clone());
        jar.store(
            (20..40)
                .map(|i| SetCookie::Set(format!("d{i}"), "v".into()))
                .collect(),
        );
        assert_eq!(jar.cookies.len(), MAX_COOKIES);
    }
}
