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
#[derive(Clone, PartialEq, Eq)]
pub struct SessionHashKey([u8; HASH_KEY_LEN]);

/// The public name of a [`SessionHashKey`]: 8 hex digits of a hash derived
/// from it (never the key), for logs, metrics and the fleet's view of which
/// node runs which key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; 4]);

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
pub const MAX_CREDENTIALS: usize = 16;

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
    /// The keyed hash of the credential under the previous (retiring) hash
    /// key, while one is configured ([`SessionStage::with_previous`]): the
    /// name its state and revocation may still be filed under. Always the
    /// same credential as `key`: which key judges a session is never the
    /// client's choice.
    pub previous: Option<SessionKey>,
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
    /// Whether no browser causes this problem, so that the request is
    /// refused on every route whatever its `on_error` says: two
    /// `Authorization` headers, more session credentials than judged, a
    /// session cookie longer than a browser stores, or ambiguity where the
    /// config refuses it. A client must not be able to choose the
    /// fail-open path.
    pub fn fails_closed(&self) -> bool {
        !matches!(self, SessionError::TooManyCookies { .. })
    }

    /// A short, stable code for metrics labels and logs.
    pub fn code(&self) -> &'static str {
        match self {
            SessionError::TooManyCookies { .. } => "too_many_cookies",
            SessionError::CredentialTooLong { .. } => "credential_too_long",
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
    /// The key being retired, during a rotation: every credential is also
    /// hashed under it (docs/controller.md, "Rotating the hash key").
    previous: Option<SessionHashKey>,
    /// The configured cookie names as [`normalised_name`] makes them, once:
    /// they never change while the stage lives (a reload keeps them).
    names: Arc<[Vec<u8>]>,
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

    /// The key's public name: a one-way derivation, so that operators can
    /// tell which nodes run which key without the key being shown.
    pub fn id(&self) -> KeyId {
        let id = blake3::derive_key("vigil 2026-12 session hash key id", &self.0);
        KeyId([id[0], id[1], id[2], id[3]])
    }
}

// === impl KeyId ===

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
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
        let names = config
            .cookie_names
            .iter()
            .map(|n| normalised_name(n.as_bytes()))
            .collect();
        Self {
            config: Arc::new(ArcSwap::from_pointee(config)),
            key,
            previous: None,
            names,
        }
    }

    /// Also hashes every credential under `previous`, the key being retired
    /// ([`Session::previous`]). A previous key equal to the current one is
    /// ignored: it would name every session twice by one name.
    pub fn with_previous(mut self, previous: SessionHashKey) -> Self {
        self.previous = (previous != self.key).then_some(previous);
        self
    }

    /// The ids of the current key and of the previous one, if any.
    pub fn key_ids(&self) -> (KeyId, Option<KeyId>) {
        (
            self.key.id(),
            self.previous.as_ref().map(SessionHashKey::id),
        )
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
    /// name across all `Cookie` lines, and the bearer token whenever one is
    /// present. Apps differ in which duplicate they take (first, last), in
    /// how they split a line (`;`; also `,` and spaces, as Python's
    /// `http.cookies` and older RFC 2965 parsers do), in how they match
    /// names (ASP.NET ignores case; PHP turns `.` and spaces into `_`) and
    /// in whether they unquote or decode a value, so Vigil reads each line
    /// as the most lenient of them would and judges everything it finds
    /// (see `docs/security.md`, "Which session is judged"). Each value is
    /// reduced to one canonical form ([`canonical_value`]), so that the
    /// quoted, escaped and percent-encoded spellings of a session are the
    /// same session.
    ///
    /// Reading goes on past what cannot be used — cookies beyond the limit,
    /// an overlong value, a second `Authorization` header — so that the
    /// credentials that *can* be read are still judged; the first such
    /// problem is reported beside them, and the caller must not treat the
    /// request as readable ([`SessionError::fails_closed`] says which
    /// problems no browser causes).
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
            for (name, raw) in cookie_pairs(value.as_bytes()) {
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
                let Some(rank) = self.names.iter().position(|n| name_matches(name, n)) else {
                    continue;
                };
                let value = canonical_value(raw);
                if value.is_empty() {
                    continue;
                }
                let name = config.cookie_names.get(rank).map_or("", String::as_str);
                match self.hash(b"cookie", name.as_bytes(), &value) {
                    Ok((key, previous)) => out.push(Session {
                        key,
                        source: CredentialSource::Cookie(rank),
                        previous,
                    }),
                    Err(e) => problem(&mut out, e),
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
                    Ok((key, previous)) => out.push(Session {
                        key,
                        source: CredentialSource::Bearer,
                        previous,
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
        self.hash(b"cookie", name.as_bytes(), &canonical_value(value))
            .ok()
            .map(|(key, _)| key)
    }

    /// The position of `name` among the configured session cookies.
    pub fn rank_of(&self, name: &str) -> Option<usize> {
        // Matched as `credentials` matches names.
        self.names
            .iter()
            .position(|n| name_matches(name.as_bytes(), n))
    }

    /// The credential's key under the current hash key, and under the
    /// previous one while a rotation is under way.
    fn hash(
        &self,
        kind: &[u8],
        name: &[u8],
        value: &[u8],
    ) -> Result<(SessionKey, Option<SessionKey>), SessionError> {
        let limit = self.config.load().limits.max_credential_bytes;
        if value.len() > limit {
            return Err(SessionError::CredentialTooLong {
                len: value.len(),
                limit,
            });
        }
        let previous = self
            .previous
            .as_ref()
            .map(|k| keyed_hash(k, kind, name, value));
        Ok((keyed_hash(&self.key, kind, name, value), previous))
    }
}

impl fmt::Debug for SessionStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionStage")
            .field("config", &self.config.load())
            .finish_non_exhaustive()
    }
}

/// The session key of a credential under `key`. Domain separation: the
/// same bytes under another cookie name or as a bearer token are another
/// session.
fn keyed_hash(key: &SessionHashKey, kind: &[u8], name: &[u8], value: &[u8]) -> SessionKey {
    let mut h = blake3::Hasher::new_keyed(key.as_bytes());
    h.update(kind);
    h.update(&[0]);
    h.update(name);
    h.update(&[0]);
    h.update(value);
    let digest = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest.as_bytes()[..16]);
    SessionKey(out)
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

/// The `name=value` pairs of one `Cookie` line, split as the most lenient
/// app parser would: on `;`, and also on `,`, spaces and tabs (Python's
/// `http.cookies` splits on whitespace, RFC 2965 parsers on commas; an RFC
/// 6265 value contains none of them, so no real cookie is cut). Works on
/// bytes: a byte that is not UTF-8 spoils only its own pair. Pieces without
/// `=` are skipped.
///
/// Each `;` piece is read whole too, so that a name with a space in it
/// (which PHP reads with `_`) is found as well as the pairs a whitespace
/// splitter sees in it.
pub(crate) fn cookie_pairs(line: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    fn pair(piece: &[u8]) -> Option<(&[u8], &[u8])> {
        let eq = piece.iter().position(|b| *b == b'=')?;
        let name = piece.get(..eq)?.trim_ascii();
        let value = piece.get(eq + 1..)?.trim_ascii();
        (!name.is_empty()).then_some((name, value))
    }
    line.split(|b| *b == b';').flat_map(|piece| {
        let whole = pair(piece);
        let split = piece
            .trim_ascii()
            .iter()
            .any(|b| matches!(b, b',' | b' ' | b'\t'))
            .then(|| {
                piece
                    .split(|b| matches!(b, b',' | b' ' | b'\t'))
                    .filter_map(pair)
            });
        whole.into_iter().chain(split.into_iter().flatten())
    })
}

/// A cookie name as lenient apps match it: percent-decoded (PHP), ASCII
/// lower case (ASP.NET), with `.`, space and `[` as `_` (PHP). Over-matching
/// only judges more.
fn normalised_name(name: &[u8]) -> Vec<u8> {
    let decoded = percent_decode(name).unwrap_or_else(|| name.to_vec());
    decoded
        .into_iter()
        .map(|b| match b.to_ascii_lowercase() {
            b'.' | b' ' | b'[' => b'_',
            other => other,
        })
        .collect()
}

/// Whether the cookie name `name` (as sent) is `normalised` (a configured
/// name through [`normalised_name`]). Allocates only for a name with `%`.
fn name_matches(name: &[u8], normalised: &[u8]) -> bool {
    if name.contains(&b'%') {
        return normalised_name(name) == normalised;
    }
    name.len() == normalised.len()
        && name.iter().zip(normalised).all(|(b, n)| {
            let b = match b.to_ascii_lowercase() {
                b'.' | b' ' | b'[' => b'_',
                other => other,
            };
            b == *n
        })
}

/// One canonical form of a cookie value, so that every spelling an app
/// could read as the same session is one session to Vigil: surrounding
/// double quotes removed (and, for a value that opens a quote it never
/// closes, its first and last byte, as Node's `cookie` up to 0.6 does),
/// backslash escapes inside quotes undone as Python's `http.cookies` does
/// (`\\[0-3][0-7][0-7]` is that character, `\\x` is `x`), then `%XX`
/// decoded as `decodeURIComponent` does when the result is UTF-8. A plain
/// value is its own canonical form (no allocation).
pub(crate) fn canonical_value(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    use std::borrow::Cow;
    let raw = raw.trim_ascii();
    let mut value: Cow<'_, [u8]> = Cow::Borrowed(raw);
    if let Some(rest) = raw.strip_prefix(b"\"") {
        let inner = rest.strip_suffix(b"\"").unwrap_or_else(|| {
            // Node's old parser drops the last byte whatever it is.
            rest.get(..rest.len().saturating_sub(1)).unwrap_or_default()
        });
        value = if inner.contains(&b'\\') {
            Cow::Owned(unescape(inner))
        } else {
            Cow::Borrowed(inner)
        };
    }
    if value.contains(&b'%')
        && let Some(decoded) = percent_decode(&value)
        && std::str::from_utf8(&decoded).is_ok()
    {
        value = Cow::Owned(decoded);
    }
    value
}

/// Backslash escapes inside a quoted value, undone as Python's
/// `http.cookies` does: `\\` and three octal digits starting 0 to 3 is that
/// character (U+0000 to U+00FF, written as UTF-8), `\\x` is `x`.
fn unescape(inner: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while let Some(&b) = inner.get(i) {
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let octal = inner.get(i + 1..i + 4).filter(|d| {
            (b'0'..=b'3').contains(&d[0]) && d[1..].iter().all(|c| (b'0'..=b'7').contains(c))
        });
        if let Some(d) = octal {
            let code =
                u32::from(d[0] - b'0') * 64 + u32::from(d[1] - b'0') * 8 + u32::from(d[2] - b'0');
            let mut utf8 = [0u8; 4];
            let c = char::from_u32(code).unwrap_or('\u{fffd}');
            out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            i += 4;
        } else if let Some(&next) = inner.get(i + 1) {
            out.push(next);
            i += 2;
        } else {
            out.push(b);
            i += 1;
        }
    }
    out
}

/// `%XX` decoded; `None` when an escape is malformed.
fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        if b == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            let hi = char::from(hex[0]).to_digit(16)?;
            let lo = char::from(hex[1]).to_digit(16)?;
            out.push(u8::try_from(hi * 16 + lo).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests;
