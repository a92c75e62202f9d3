//! One path, one meaning: the form of a request path that routes are
//! matched on.
//!
//! Apps and the servers in front of them read a path in different ways:
//! one removes `..` segments, another decodes `%2e` first, a Java container
//! drops `;` path parameters (`..;/`), a Windows one reads `\` as `/`, some
//! decode twice. If Vigil matched routes on the path as sent, a client
//! could reach an enforcing route's app through an `off` route's prefix
//! (`/static/../admin`). So routes match on [`normalise`]d paths, the most
//! reduced reading any of those apps could make; the path is still
//! forwarded as the client sent it, and a request whose raw and normalised
//! paths would select different routes is refused (see
//! [`crate::routes::select`]).
//!
//! [`normalise`] is pure and bounded: it never panics, its output is never
//! longer than its input, and it reads its input a bounded number of times
//! ([`MAX_DECODE_PASSES`]).

use std::borrow::Cow;

/// Most decoding passes: a path still changing after this many (an
/// encoding nested deeper than any app decodes) is refused, not guessed at.
pub const MAX_DECODE_PASSES: usize = 4;

/// Why a path has no single meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path carries a NUL (`%00`, or one hidden under `%25`s): C-based
    /// apps end the path there.
    #[error("the path carries a NUL")]
    Nul,
    /// The path's encoding is nested deeper than [`MAX_DECODE_PASSES`].
    #[error("the path is encoded too many times over")]
    TooDeep,
}

impl PathError {
    /// The stable code: the refusal's `reason`, the metric label.
    pub fn code(self) -> &'static str {
        match self {
            PathError::Nul => "nul_in_path",
            PathError::TooDeep => "ambiguous_path",
        }
    }
}

/// The path routes are matched on, for the path `path` of a request
/// (without its query; anything from `?` or `#` on is ignored):
///
/// - percent-encoded unreserved characters (RFC 3986: letters, digits,
///   `-` `.` `_` `~`) and `/`, `\` and `;` are decoded, also when hidden
///   under any number of `%25` (`%252e` is `.`); other escapes stay as sent;
/// - `\` is read as `/`;
/// - a `;` and what follows it up to the next `/` is dropped (a path
///   parameter: `..;x` is `..`);
/// - empty segments (`//`) and `.` segments are dropped, a `..` segment
///   removes the one before it, never going above the root;
/// - a path ending in `/`, `/.` or `/..` keeps one trailing `/`.
///
/// A path that does not start with `/` once decoded (`*`) is returned
/// decoded but otherwise as is. The result is borrowed when there is
/// nothing to change. Never longer than `path`; idempotent.
pub fn normalise(path: &str) -> Result<Cow<'_, str>, PathError> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    if path.bytes().any(|b| b == 0) {
        return Err(PathError::Nul);
    }
    if is_normal(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    reduce(path).map(Cow::Owned)
}

/// [`normalise`] without the shortcut for paths that are already normal.
fn reduce(path: &str) -> Result<String, PathError> {
    let mut decoded = path.as_bytes().to_vec();
    let mut settled = false;
    for _ in 0..MAX_DECODE_PASSES {
        match decode_pass(&decoded)? {
            Some(next) => decoded = next,
            None => {
                settled = true;
                break;
            }
        }
    }
    if !settled && decode_pass(&decoded)?.is_some() {
        return Err(PathError::TooDeep);
    }
    for b in &mut decoded {
        if *b == b'\\' {
            *b = b'/';
        }
    }
    let out = if decoded.first() == Some(&b'/') {
        remove_dot_segments(&decoded)
    } else {
        decoded
    };
    // Only ASCII was decoded, replaced or removed, and only whole segments or
    // segment tails after an ASCII `;`, so the bytes stay UTF-8; the lossy
    // form is never needed but costs nothing to keep total.
    Ok(match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// True when [`normalise`] would return `path` unchanged: the common case,
/// answered without allocating.
fn is_normal(path: &[u8]) -> bool {
    if path.first() != Some(&b'/') {
        return !path.iter().any(|b| matches!(b, b'%' | b'\\'));
    }
    if path.iter().any(|b| matches!(b, b'%' | b'\\' | b';')) {
        return false;
    }
    // The first segment follows the leading `/`; the last may be empty
    // (a trailing slash), no other may.
    let segments = path[1..].split(|b| *b == b'/');
    let count = path[1..].split(|b| *b == b'/').count();
    for (i, seg) in segments.enumerate() {
        if seg == b"." || seg == b".." || (seg.is_empty() && i + 1 != count) {
            return false;
        }
    }
    true
}

/// One decoding pass: `%` `(25)*` `HH` becomes the byte `HH` when that is
/// one [`decodes`]; `None` when nothing was decoded.
fn decode_pass(input: &[u8]) -> Result<Option<Vec<u8>>, PathError> {
    let mut out = Vec::with_capacity(input.len());
    let mut changed = false;
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        // Skip every "25" that is followed by another escape's two digits.
        let mut j = i + 1;
        while input.get(j..j + 2) == Some(b"25") && hex_pair(input, j + 2).is_some() {
            j += 2;
        }
        match hex_pair(input, j) {
            Some(0) => return Err(PathError::Nul),
            Some(v) if decodes(v) => {
                out.push(v);
                changed = true;
                i = j + 2;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(changed.then_some(out))
}

/// The byte two hex digits at `at` stand for.
fn hex_pair(input: &[u8], at: usize) -> Option<u8> {
    let hi = (*input.get(at)? as char).to_digit(16)?;
    let lo = (*input.get(at + 1)? as char).to_digit(16)?;
    u8::try_from(hi * 16 + lo).ok()
}

/// The bytes decoded for matching: RFC 3986 unreserved characters (their
/// encoded and plain forms are the same path) and the separators apps
/// disagree on.
fn decodes(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/' | b'\\' | b';')
}

/// RFC 3986 5.2.4 over `/`-separated segments, with empty segments and
/// path parameters dropped. `path` starts with `/`.
fn remove_dot_segments(path: &[u8]) -> Vec<u8> {
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut trailing = false;
    for seg in path.split(|b| *b == b'/').skip(1) {
        let seg = seg.split(|b| *b == b';').next().unwrap_or_default();
        trailing = matches!(seg, b"" | b"." | b"..");
        match seg {
            b"" | b"." => {}
            b".." => {
                kept.pop();
            }
            _ => kept.push(seg),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for seg in &kept {
        out.push(b'/');
        out.extend_from_slice(seg);
    }
    if out.is_empty() || trailing {
        out.push(b'/');
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn n(path: &str) -> String {
        normalise(path)
            .map(Cow::into_owned)
            .unwrap_or_else(|e| e.code().to_owned())
    }

    #[test]
    fn dot_segments_and_their_encodings_are_removed() {
        for attack in [
            "/static/../echo",
            "/static/%2e%2e/echo",
            "/static/%2E%2E/echo",
            "/static/.%2e/echo",
            "/static/..%2fecho",
            "/static/..%2Fecho",
            "/static/%252e%252e/echo",
            "/static/%25252e%25252e/echo",
            "/static/..;/echo",
            "/static/..;x=1/echo",
            "/static/..%3b/echo",
            "/static\\..\\echo",
            "/static/..%5cecho",
            "/static/./../echo",
            "//static/../echo",
            "/static/%2e%2e%2fecho",
        ] {
            assert_eq!(n(attack), "/echo", "{attack}");
        }
    }

    #[test]
    fn ordinary_paths_are_borrowed_and_unchanged() {
        for path in ["/", "/echo", "/static/app.js", "/api/v1/", "/a-b_c~d", "*"] {
            assert!(
                matches!(normalise(path), Ok(Cow::Borrowed(p)) if p == path),
                "{path}"
            );
        }
    }

    #[test]
    fn slashes_fold_and_trailing_slashes_stay() {
        assert_eq!(n("//static//app.js"), "/static/app.js");
        assert_eq!(n("/static//"), "/static/");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("/a/."), "/a/");
        assert_eq!(n("/.."), "/");
        assert_eq!(n("/../../.."), "/");
        assert_eq!(n("/st%61tic/x"), "/static/x");
        assert_eq!(n("/api/a%2Fb"), "/api/a/b");
        assert_eq!(n("/a/%41%2"), "/a/A%2");
        assert_eq!(n("/q/%3F%20x"), "/q/%3F%20x", "other escapes stay");
        assert_eq!(n("/x?a=/../y"), "/x", "the query is not the path");
    }

    #[test]
    fn nul_is_refused_however_encoded() {
        for path in ["/a%00b", "/a%2500", "/a%252500/x", "/a\0"] {
            assert_eq!(normalise(path), Err(PathError::Nul), "{path}");
        }
    }

    /// `path` with every letter and digit percent-encoded: one more
    /// decoding pass to undo.
    fn encode_alnum(path: &str) -> String {
        path.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    format!("%{:02X}", c as u32)
                } else {
                    c.to_string()
                }
            })
            .collect()
    }

    #[test]
    fn escapes_nested_deeper_than_the_passes_are_refused() {
        let mut layered = "%2e%2e".to_owned();
        for _ in 1..MAX_DECODE_PASSES {
            layered = encode_alnum(&layered);
        }
        assert_eq!(n(&format!("/static/{layered}/echo")), "/echo");
        let deeper = encode_alnum(&layered);
        assert_eq!(
            normalise(&format!("/static/{deeper}/echo")),
            Err(PathError::TooDeep)
        );
    }

    proptest! {
        #[test]
        fn never_panics_and_never_grows(raw in proptest::collection::vec(any::<u8>(), 0..256)) {
            let s = String::from_utf8_lossy(&raw);
            if let Ok(p) = normalise(&s) {
                prop_assert!(p.len() <= s.len());
            }
        }

        #[test]
        fn the_shortcut_agrees_with_the_full_reduction(path in "[/a-z.*]{0,30}") {
            if is_normal(path.as_bytes()) {
                prop_assert_eq!(reduce(&path), Ok(path.clone()));
            }
        }

        #[test]
        fn normal_paths_are_fixed_points(path in "[/a-z.%25ef;\\\\0-9]{0,40}") {
            if let Ok(once) = normalise(&path) {
                let once = once.into_owned();
                let twice = normalise(&once);
                prop_assert_eq!(twice.as_deref(), Ok(once.as_str()));
                if once.starts_with('/') {
                    for bad in ["/../", "/./", "//", "\\", ";"] {
                        prop_assert!(!once.contains(bad), "{} in {}", bad, once);
                    }
                    prop_assert!(!once.ends_with("/..") && !once.ends_with("/."));
                }
            }
        }
    }
}
