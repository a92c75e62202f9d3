//! TLS fingerprint facts of the connection a request arrived on.
//!
//! A replayed cookie keeps the victim's User-Agent (it is one header to
//! copy) but rarely the victim's TLS stack. The fingerprint of a request's
//! connection comes from one of two places:
//!
//! - **captured**: Vigil terminated TLS and read the ClientHello itself (the
//!   proxy does that once per connection and hands the JA4 to every request
//!   on it), or
//! - **upstream**: TLS ended at a balancer or CDN in a trusted set, which
//!   passed the client's JA4 (and perhaps JA3) in a configured header. The
//!   header is believed only from a trusted TCP peer; from anyone else it is
//!   ignored (the proxy also strips it before the app sees it).
//!
//! A TLS connection whose ClientHello Vigil could not read (too slow, too
//! long, not a ClientHello) is [`TlsSource::Unreadable`], a fact of its own:
//! a client that hides its hello is compared as such, not waved through.
//!
//! A captured fingerprint has two JA4 forms: the specification's, which
//! logs, facts and the app's header show, and the resumption-stable form
//! ([`crate::ja4::ja4_stable`]), which leaves out the extensions a client
//! adds when it resumes its TLS session (pre_shared_key, early_data) or as
//! its hello's size or the server's retry asks (padding, cookie). Sessions
//! are compared by the stable form, so that the owner resuming a TLS
//! session is not another device. A balancer's JA4 is a hash: it cannot be
//! reduced, and is compared as sent.
//!
//! JA3 is recorded and reported but never compared: browsers that permute
//! their extension order (Chrome since version 110) change their JA3 on every
//! connection, so a JA3 difference is no evidence. JA4 sorts what JA3 hashes
//! in wire order and stays stable.

use std::fmt;
use std::str::FromStr;

use http::{HeaderMap, HeaderName};

use crate::client_ip::TrustedProxies;
use crate::ja4::Ja4;

/// Where a request's TLS fingerprint came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TlsSource {
    /// No fingerprint: a cleartext connection, or TLS ended before Vigil and
    /// the balancer passed none.
    #[default]
    None,
    /// Vigil read the connection's ClientHello.
    Captured,
    /// A trusted balancer reported it in a header.
    Upstream,
    /// A TLS connection whose ClientHello Vigil could not read.
    Unreadable,
}

/// A JA3 fingerprint: the MD5 of the ClientHello's fields in wire order, as
/// 32 hex digits. Only ever received from a trusted balancer.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ja3([u8; 16]);

/// Which form of JA4 a value is (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Ja4Form {
    /// JA4 as its specification defines it: what logs and facts show, and
    /// all a balancer can send.
    #[default]
    Spec,
    /// The resumption-stable form ([`crate::ja4::ja4_stable`]), where it
    /// differs from the spec form.
    Stable,
}

/// The TLS fingerprint facts of one request's connection. 64 bytes, `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TlsFingerprint {
    /// Where the facts came from.
    pub source: TlsSource,
    /// JA4 (`a_b_c`, the specification's form), when known.
    pub ja4: Option<Ja4>,
    /// The resumption-stable form of the JA4, when Vigil read the hello
    /// itself ([`crate::ja4::ja4_stable`]; equal to `ja4` for a hello
    /// without the extensions it leaves out). `None` for a balancer's JA4,
    /// which cannot be reduced.
    pub ja4_stable: Option<Ja4>,
    /// JA3, when a trusted balancer sent one.
    pub ja3: Option<Ja3>,
}

/// How two TLS fingerprints of one session compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsMatch {
    /// One side has no fingerprint: nothing can be said.
    NoEvidence,
    /// The same JA4 (or both unreadable).
    Same,
    /// Same TLS version, SNI, cipher count and ciphers, ALPN; only the
    /// extensions differ: what a browser update (or a feature trial) does.
    SameFamily,
    /// Another TLS stack, or a readable hello where there was none.
    Different,
}

/// Where a trusted balancer puts the client's fingerprints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamFingerprints {
    /// Header holding the client's JA4, e.g.
    /// `cloudfront-viewer-ja4-fingerprint`. `None`: not read.
    pub ja4_header: Option<HeaderName>,
    /// Header holding the client's JA3 (32 hex digits), e.g.
    /// `cloudfront-viewer-ja3-fingerprint`. `None`: not read.
    pub ja3_header: Option<HeaderName>,
    /// Names of the trusted proxy sets whose members may send them. Empty:
    /// nobody may.
    pub trusted_sets: Vec<String>,
}

/// Why a fingerprint string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseFingerprintError {
    /// Not `a_b_c` with a 10-character `a` and 12 hex digits in `b` and `c`.
    #[error(
        "not a JA4 fingerprint (expected 10 characters, 12 hex digits, 12 hex digits, joined by '_')"
    )]
    Ja4,
    /// Not 32 hex digits.
    #[error("not a JA3 fingerprint (expected 32 hex digits)")]
    Ja3,
}

// === impl TlsFingerprint ===

impl TlsFingerprint {
    /// No fingerprint (cleartext).
    pub const NONE: Self = Self {
        source: TlsSource::None,
        ja4: None,
        ja4_stable: None,
        ja3: None,
    };

    /// A JA4 Vigil read from the connection's ClientHello, its stable form
    /// unknown (as from a recorded string): compared as the spec form.
    pub fn captured(ja4: Ja4) -> Self {
        Self {
            source: TlsSource::Captured,
            ja4: Some(ja4),
            ja4_stable: None,
            ja3: None,
        }
    }

    /// Both JA4 forms of the ClientHello Vigil read on the connection
    /// ([`crate::ja4::ja4_both`]).
    pub fn of_hello(hello: &crate::ja4::ClientHello, transport: crate::ja4::Transport) -> Self {
        let (spec, stable) = crate::ja4::ja4_both(hello, transport);
        Self {
            source: TlsSource::Captured,
            ja4: Some(spec),
            ja4_stable: Some(stable),
            ja3: None,
        }
    }

    /// A TLS connection whose ClientHello could not be read.
    pub fn unreadable() -> Self {
        Self {
            source: TlsSource::Unreadable,
            ja4: None,
            ja4_stable: None,
            ja3: None,
        }
    }

    /// The JA4 a session keeps of this connection, and its form: the
    /// stable form where it differs from the spec form (a captured hello
    /// with padding, pre_shared_key, early_data or cookie), else the spec
    /// form (which is then the stable form too, for a captured hello).
    pub fn baseline_ja4(&self) -> (Option<Ja4>, Ja4Form) {
        match (self.ja4, self.ja4_stable) {
            (Some(spec), Some(stable)) if spec != stable => (Some(stable), Ja4Form::Stable),
            (ja4, _) => (ja4, Ja4Form::Spec),
        }
    }

    /// Compares a session's baseline fingerprint with this request's.
    ///
    /// Every JA4 form known on one side is compared with every form known
    /// on the other: the same if any two are equal, the same family if any
    /// two are. Comparing a spec form with a stable one is sound: the two
    /// can be equal only when the spec form's hello had none of the
    /// extensions the stable form leaves out, and its spec form is then its
    /// stable form. So a resumed connection matches its full handshake's
    /// baseline in either form, and a balancer's JA4 (spec form only)
    /// matches a captured baseline of a hello without those extensions.
    pub fn compare(&self, baseline: &TlsFingerprint) -> TlsMatch {
        use TlsSource::{Captured, None, Unreadable, Upstream};
        match (baseline.source, self.source) {
            (None, _) | (_, None) => TlsMatch::NoEvidence,
            (Unreadable, Unreadable) => TlsMatch::Same,
            (Unreadable, _) | (_, Unreadable) => TlsMatch::Different,
            (Captured | Upstream, Captured | Upstream) => {
                let old = [baseline.ja4, baseline.ja4_stable];
                let new = [self.ja4, self.ja4_stable];
                let pairs = || {
                    old.iter()
                        .flatten()
                        .flat_map(|a| new.iter().flatten().map(move |b| (a, b)))
                };
                if pairs().next().is_none() {
                    // A balancer that sent only JA3: nothing comparable.
                    TlsMatch::NoEvidence
                } else if pairs().any(|(a, b)| a == b) {
                    TlsMatch::Same
                } else if pairs().any(|(a, b)| a.same_family(b)) {
                    TlsMatch::SameFamily
                } else {
                    TlsMatch::Different
                }
            }
        }
    }
}

impl TlsSource {
    /// `none`, `captured`, `upstream` or `unreadable`: for logs and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsSource::None => "none",
            TlsSource::Captured => "captured",
            TlsSource::Upstream => "upstream",
            TlsSource::Unreadable => "unreadable",
        }
    }

    /// The byte a compact record stores (bits 0–1; version 3 records use
    /// bit 7 for the JA4's form).
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            TlsSource::None => 0,
            TlsSource::Captured => 1,
            TlsSource::Upstream => 2,
            TlsSource::Unreadable => 3,
        }
    }

    /// Reads [`TlsSource::to_u8`] back.
    pub(crate) fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => TlsSource::None,
            1 => TlsSource::Captured,
            2 => TlsSource::Upstream,
            3 => TlsSource::Unreadable,
            _ => return None,
        })
    }
}

impl TlsMatch {
    /// `no_evidence`, `same`, `same_family` or `different`.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMatch::NoEvidence => "no_evidence",
            TlsMatch::Same => "same",
            TlsMatch::SameFamily => "same_family",
            TlsMatch::Different => "different",
        }
    }
}

// === impl UpstreamFingerprints ===

impl UpstreamFingerprints {
    /// Whether any header is configured.
    pub fn is_enabled(&self) -> bool {
        (self.ja4_header.is_some() || self.ja3_header.is_some()) && !self.trusted_sets.is_empty()
    }

    /// The fingerprint a trusted balancer reported for this request, or
    /// `None` when the peer is not in one of the trusted sets (the headers are
    /// then ignored). From a trusted balancer that sent nothing usable the
    /// answer is [`TlsFingerprint::NONE`], not `None`: what Vigil captured on
    /// that connection is the balancer's own stack and says nothing of the
    /// client. A malformed value is ignored, not an error.
    pub fn read(
        &self,
        trusted: &TrustedProxies,
        peer: std::net::IpAddr,
        headers: &HeaderMap,
    ) -> Option<TlsFingerprint> {
        if !self.is_enabled() {
            return None;
        }
        let set = trusted.lookup(peer)?;
        if !self.trusted_sets.iter().any(|s| s == set.as_str()) {
            return None;
        }
        // A header sent twice is a client's forged line next to the
        // balancer's (balancers that append put theirs last, others first):
        // neither can be believed, and the request is marked unreadable —
        // evidence that something stood between the client and the
        // balancer, judged like a hello Vigil could not read.
        let lines = |name: &Option<HeaderName>| {
            name.as_ref()
                .map_or(0, |n| headers.get_all(n).iter().count())
        };
        if lines(&self.ja4_header) > 1 || lines(&self.ja3_header) > 1 {
            return Some(TlsFingerprint::unreadable());
        }
        let value = |name: &Option<HeaderName>| {
            name.as_ref()
                .and_then(|n| headers.get(n))
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let ja4 = value(&self.ja4_header).and_then(|v| v.parse::<Ja4>().ok());
        let ja3 = value(&self.ja3_header).and_then(|v| v.parse::<Ja3>().ok());
        if ja4.is_none() && ja3.is_none() {
            return Some(TlsFingerprint::NONE);
        }
        Some(TlsFingerprint {
            source: TlsSource::Upstream,
            ja4,
            ja4_stable: None,
            ja3,
        })
    }
}

// === impl Ja3 ===

impl Ja3 {
    /// The 16 bytes of the MD5.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl FromStr for Ja3 {
    type Err = ParseFingerprintError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0; 16];
        decode_hex(s.as_bytes(), &mut out).ok_or(ParseFingerprintError::Ja3)?;
        Ok(Ja3(out))
    }
}

impl fmt::Display for Ja3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0; 32];
        encode_hex(&self.0, &mut out);
        f.write_str(std::str::from_utf8(&out).unwrap_or(""))
    }
}

/// Writes `bytes` as lower-case hex into `out`, which holds exactly
/// `2 * bytes.len()` characters (the inverse of [`decode_hex`]).
pub(crate) fn encode_hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    debug_assert_eq!(out.len(), 2 * bytes.len());
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

impl fmt::Debug for Ja3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ja3({self})")
    }
}

/// Decodes exactly `2 * out.len()` hex digits (either case) into `out`.
pub(crate) fn decode_hex(hex: &[u8], out: &mut [u8]) -> Option<()> {
    if hex.len() != out.len() * 2 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(())
}

#[cfg(test)]
mod tests;
