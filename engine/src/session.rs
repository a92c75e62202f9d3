//! Session identity: find the session credential and reduce it at once to a
//! keyed hash. The raw credential never leaves this module.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE};
use smallvec::SmallVec;

/// Length in bytes of the secret key that session credentials are hashed with.
pub const HASH_KEY_LEN: usize = 32;

/// The secret key for session hashing. Its `Debug` output is redacted.
#[derive(Clone)]
pub struct SessionHashKey([u8; HASH_KEY_LEN]);

/// A session credential reduced to a 128-bit keyed hash (BLAKE3 in keyed
/// mode). Safe to store, log (see [`SessionKey::short`]) and send to the
/// controller: without the hash key it reveals nothing about the credential.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey([u8; 16]);

/// The first 8 hex digits of a [`SessionKey`], for logs: enough to correlate
/// records, too short to serve as the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShortKey([u8; 4]);

/// Where a session credential was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    /// A cookie; the index is its position in [`SessionConfig::cookie_names`].
    Cookie(usize),
    /// An `Authorization: Bearer` token.
    Bearer,
}

/// Most distinct session credentials judged in one request; more is an
/// error (browsers send a name twice or three times, for cookies of
/// different paths or domains).
pub const MAX_CREDENTIALS: usize = 8;

/// Every session credential a request carries, as [`SessionStage::credentials`]
/// read them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    sessions: SmallVec<[Session; 2]>,
    problem: Option<SessionError>,
    overflow: bool,
}

/// What to do with a request that carries more than one session credential
/// (`[session] ambiguous_credentials`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Ambiguity {
    /// Judge every credential; the worst verdict decides, its effects apply
    /// to the credential that earned it, and nothing is learnt unless every
    /// credential would be allowed. The default: browsers send a name twice
    /// for cookies of different paths or domains.
    #[default]
    Worst,
    /// Refuse the request (`400`, reason `ambiguous_credentials`).
    Refuse,
}

/// The session a request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// The keyed hash of the credential.
    pub key: SessionKey,
    /// Where the credential came from.
    pub source: CredentialSource,
}

/// Caps on the bytes the session stage reads from one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Most cookies accepted across all `Cookie` header lines. Default 200.
    pub max_cookies: usize,
    /// Longest session credential (cookie value or bearer token), in bytes.
    /// Default 4096.
    pub max_credential_bytes: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_cookies: 200,
            max_credential_bytes: 4096,
        }
    }
}

/// How sessions are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Cookie names that carry a session, most preferred first.
    /// Default `["session"]`.
    pub cookie_names: Vec<String>,
    /// Whether `Authorization: Bearer` tokens identify sessions when no session
    /// cookie is present. Default true.
    pub bearer: bool,
    /// Bounds on what is read.
    pub limits: SessionLimits,
    /// What to do with several session credentials in one request.
    /// Default [`Ambiguity::Worst`].
    pub ambiguous: Ambiguity,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            cookie_names: vec!["session".to_owned()],
            bearer: true,
            limits: SessionLimits::default(),
            ambiguous: Ambiguity::Worst,
        }
    }
}

/// A request whose session credential cannot be read within bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// More cookies than [`SessionLimits::max_cookies`].
    #[error("request carries {count} cookies, more than the limit of {limit}")]
    TooManyCookies {
        /// Cookies counted before giving up (the limit plus one).
        count: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A session credential longer than [`SessionLimits::max_credential_bytes`].
    #[error("session credential is {len} bytes, more than the limit of {limit}")]
    CredentialTooLong {
        /// Length of the credential in bytes.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A `Cookie` header that is not UTF-8.
    #[error("cookie header is not valid UTF-8")]
    CookieNotUtf8,
    /// More than one `Authorization` header: apps differ in which they read.
    #[error("request carries more than one Authorization header")]
    SeveralAuthorizations,
    /// More distinct session credentials than [`MAX_CREDENTIALS`].
    #[error("request carries more than {limit} session credentials")]
    TooManyCredentials {
        /// The limit.
        limit: usize,
    },
    /// Several session credentials where the config refuses ambiguity.
    #[error("request carries {count} session credentials")]
    Ambiguous {
        /// How many distinct credentials.
        count: usize,
    },
}

impl SessionError {
    /// A short, stable code for metrics labels and logs.
    pub fn code(&self) -> &'static str {
        match self {
            SessionError::TooManyCookies { .. } => "too_many_cookies",
            SessionError::CredentialTooLong { .. } => "credential_too_long",
            SessionError::CookieNotUtf8 => "cookie_not_utf8",
            SessionError::SeveralAuthorizations => "several_authorizations",
            SessionError::TooManyCredentials { .. } => "too_many_credentials",
            SessionError::Ambiguous { .. } => "ambiguous_credentials",
        }
    }
}

/// The session stage: finds the credential and hashes it.
#[derive(Clone)]
pub struct SessionStage {
    /// Behind an `ArcSwap` for [`SessionStage::reconfigure`]; shared by
    /// clones.
    config: Arc<ArcSwap<SessionConfig>>,
    key: SessionHashKey,
}

// === impl SessionHashKey ===

impl SessionHashKey {
    /// Wraps key bytes read from config or a key file.
    pub fn from_bytes(bytes: [u8; HASH_KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The key bytes, for persisting a generated key.
    pub fn as_bytes(&self) -> &[u8; HASH_KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for SessionHashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionHashKey(<redacted>)")
    }
}

// === impl SessionKey ===

impl SessionKey {
    /// Builds a key from its 16 bytes, e.g. when read back from a store.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The 16 bytes of the hash.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The log-safe prefix of this key.
    pub fn short(&self) -> ShortKey {
        ShortKey([self.0[0], self.0[1], self.0[2], self.0[3]])
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKey({})", self.short())
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Display for ShortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

// === impl Credentials ===

impl Credentials {
    /// The distinct sessions found, in the order read (cookies, then the
    /// bearer token).
    pub fn sessions(&self) -> &[Session] {
        &self.sessions
    }

    /// What could not be read, if anything: the request must then not be
    /// treated as readable, whatever the sessions found say.
    pub fn problem(&self) -> Option<&SessionError> {
        self.problem.as_ref()
    }

    fn push(&mut self, session: Session) {
        if self.sessions.iter().any(|s| s.key == session.key) {
            return;
        }
        if self.sessions.len() == MAX_CREDENTIALS {
            self.overflow = true;
            return;
        }
        self.sessions.push(session);
    }
}

// === impl SessionStage ===

impl SessionStage {
    /// Builds the stage from its config and the hashing key.
    pub fn new(config: SessionConfig, key: SessionHashKey) -> Self {
        Self {
            config: Arc::new(ArcSwap::from_pointee(config)),
            key,
        }
    }

    /// Applies a reloaded config's `bearer` and `limits` to requests from now
    /// on. The cookie names stay: a session's key is derived from its
    /// cookie's name, so changing them would re-key every session.
    pub fn reconfigure(&self, config: SessionConfig) {
        let cookie_names = self.config.load().cookie_names.clone();
        self.config.store(Arc::new(SessionConfig {
            cookie_names,
            ..config
        }));
    }

    /// Every session credential in the request that an app could honour,
    /// each reduced to its key: every occurrence of every configured cookie
    /// name across all `Cookie` lines, each in every form an app's cookie
    /// parser may read it in (as sent; unquoted, with backslash escapes
    /// undone as Python's `http.cookies` does; percent-decoded as Node's
    /// `cookie` package does), and the bearer token whenever one is present.
    /// Apps differ in which duplicate they take (first, last) and in whether
    /// they unquote or decode, so Vigil judges them all (see
    /// `docs/security.md`).
    ///
    /// Reading goes on past what cannot be read — a line that is not UTF-8,
    /// cookies beyond the limit, an overlong value, a second `Authorization`
    /// header — so that the credentials that *can* be read are still judged;
    /// the first such problem is reported beside them, and the caller must
    /// not treat the request as readable.
    pub fn credentials(&self, headers: &HeaderMap) -> Credentials {
        let config = self.config.load();
        let limits = config.limits;
        let mut out = Credentials::default();
        let mut count = 0usize;
        let problem = |out: &mut Credentials, e: SessionError| {
            if out.problem.is_none() {
                out.problem = Some(e);
            }
        };
        // HTTP/2 clients may split cookies over several header fields.
        for value in headers.get_all(COOKIE) {
            let Ok(text) = std::str::from_utf8(value.as_bytes()) else {
                problem(&mut out, SessionError::CookieNotUtf8);
                continue;
            };
            for cookie in cookie::Cookie::split_parse(text) {
                count += 1;
                if count == limits.max_cookies + 1 {
                    problem(
                        &mut out,
                        SessionError::TooManyCookies {
                            count,
                            limit: limits.max_cookies,
                        },
                    );
                }
                // A malformed cookie next to ours is the browser's business,
                // not a reason to lose the session: skip it.
                let Ok(cookie) = cookie else { continue };
                let Some(rank) = rank(&config, cookie.name()) else {
                    continue;
                };
                let Some(raw) = cookie.value_raw() else {
                    continue;
                };
                let name = config.cookie_names.get(rank).map_or("", String::as_str);
                for form in value_forms(raw) {
                    match self.hash(b"cookie", name.as_bytes(), form.as_bytes()) {
                        Ok(key) => out.push(Session {
                            key,
                            source: CredentialSource::Cookie(rank),
                        }),
                        Err(e) => problem(&mut out, e),
                    }
                }
            }
        }
        if config.bearer {
            let mut values = headers.get_all(AUTHORIZATION).iter();
            let first = values.next();
            if values.next().is_some() {
                problem(&mut out, SessionError::SeveralAuthorizations);
            }
            if let Some(token) = first.and_then(|v| bearer(v.as_bytes())) {
                match self.hash(b"bearer", b"", token) {
                    Ok(key) => out.push(Session {
                        key,
                        source: CredentialSource::Bearer,
                    }),
                    Err(e) => problem(&mut out, e),
                }
            }
        }
        if out.overflow {
            problem(
                &mut out,
                SessionError::TooManyCredentials {
                    limit: MAX_CREDENTIALS,
                },
            );
        }
        if out.sessions.len() > 1 && config.ambiguous == Ambiguity::Refuse {
            let count = out.sessions.len();
            problem(&mut out, SessionError::Ambiguous { count });
        }
        out
    }

    /// The key of `value` sent as the `rank`th configured cookie; `None`
    /// when there is no such cookie name or the value is too long.
    pub fn cookie_key(&self, rank: usize, value: &[u8]) -> Option<SessionKey> {
        let config = self.config.load();
        let name = config.cookie_names.get(rank)?;
        self.hash(b"cookie", name.as_bytes(), value).ok()
    }

    /// The position of `name` among the configured session cookies.
    pub fn rank_of(&self, name: &str) -> Option<usize> {
        rank(&self.config.load(), name)
    }

    fn hash(&self, kind: &[u8], name: &[u8], value: &[u8]) -> Result<SessionKey, SessionError> {
        let limit = self.config.load().limits.max_credential_bytes;
        if value.len() > limit {
            return Err(SessionError::CredentialTooLong {
                len: value.len(),
                limit,
            });
        }
        // Domain separation: the same bytes under another cookie name or as a
        // bearer token are another session.
        let mut h = blake3::Hasher::new_keyed(self.key.as_bytes());
        h.update(kind);
        h.update(&[0]);
        h.update(name);
        h.update(&[0]);
        h.update(value);
        let digest = h.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest.as_bytes()[..16]);
        Ok(SessionKey(out))
    }
}

impl fmt::Debug for SessionStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionStage")
            .field("config", &self.config.load())
            .finish_non_exhaustive()
    }
}

fn rank(config: &SessionConfig, name: &str) -> Option<usize> {
    config.cookie_names.iter().position(|n| n == name)
}

/// The token of an `Authorization: Bearer <token>` value, if that is what it is.
/// Any run of spaces and tabs may follow the scheme (RFC 9110's `1*SP`,
/// and the tabs some servers accept): whatever an app would take as a
/// bearer token is judged as one.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer";
    let value = value.trim_ascii_start();
    let head = value.get(..SCHEME.len())?;
    if !head.eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let rest = value.get(SCHEME.len()..)?;
    if !rest.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// The forms in which an app's cookie parser may read a raw cookie value:
/// as sent; without surrounding double quotes, backslash escapes undone
/// (Python's `http.cookies` also turns `\ooo` octal escapes into bytes);
/// percent-decoded when that gives UTF-8 (Node's `cookie` package). Empty
/// forms are left out; at most three.
fn value_forms(raw: &str) -> SmallVec<[std::borrow::Cow<'_, str>; 3]> {
    use std::borrow::Cow;
    fn add<'a>(form: Cow<'a, str>, forms: &mut SmallVec<[Cow<'a, str>; 3]>) {
        if !form.is_empty() && !forms.contains(&form) {
            forms.push(form);
        }
    }
    let mut forms: SmallVec<[Cow<'_, str>; 3]> = SmallVec::new();
    add(Cow::Borrowed(raw), &mut forms);
    let unquoted = raw
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .map(|inner| {
            if inner.contains('\\') {
                Cow::Owned(unescape(inner))
            } else {
                Cow::Borrowed(inner)
            }
        });
    let base = unquoted.clone().unwrap_or(Cow::Borrowed(raw));
    if let Some(u) = unquoted {
        add(u, &mut forms);
    }
    if base.contains('%')
        && let Some(decoded) = percent_decode(&base)
    {
        add(Cow::Owned(decoded), &mut forms);
    }
    forms
}

/// Backslash escapes inside a quoted cookie value, undone as Python's
/// `http.cookies` does: `\ooo` (three octal digits) is that byte, `\x` is
/// `x`. Bytes that do not make UTF-8 are replaced, as no app would match
/// them either.
fn unescape(inner: &str) -> String {
    let b = inner.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            let octal = b
                .get(i + 1..i + 4)
                .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
            if let Some(d) = octal {
                let v = u32::from(d[0] - b'0') * 64
                    + u32::from(d[1] - b'0') * 8
                    + u32::from(d[2] - b'0');
                out.push(u8::try_from(v & 0xff).unwrap_or(0));
                i += 4;
            } else {
                out.push(b[i + 1]);
                i += 2;
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `%XX` decoded as `decodeURIComponent` does; `None` when an escape is
/// malformed or the result is not UTF-8 (Node then keeps the raw value).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hi = char::from(hex[0]).to_digit(16)?;
            let lo = char::from(hex[1]).to_digit(16)?;
            out.push(u8::try_from(hi * 16 + lo).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests;
