//! JA4: the TLS client fingerprint of a connection's ClientHello.
//!
//! Implements the JA4 TLS client method of FoxIO's JA4+ specification
//! (`technical_details/JA4.md`, BSD-licensed) and nothing else of JA4+. A
//! fingerprint reads `a_b_c`:
//!
//! - `a` (10 characters): transport (`t` TCP, `q` QUIC), TLS version, `d`/`i`
//!   for SNI present/absent, two-digit cipher and extension counts, and the
//!   first and last characters of the first ALPN protocol.
//! - `b`: the first 12 hex digits of SHA-256 over the sorted cipher list.
//! - `c`: the first 12 hex digits of SHA-256 over the sorted extension list
//!   (without SNI and ALPN), `_`, and the signature algorithms in wire order.
//!
//! GREASE values (RFC 8701) are dropped everywhere before counting, sorting
//! or hashing.
//!
//! Besides the specification's form, [`ja4_stable`] computes a
//! **resumption-stable** form (not part of JA4+): the same `a_b_c` with the
//! extensions a client adds or drops from one connection to the next of the
//! same TLS stack left out of the extension count and the `c` list —
//! padding (21), pre_shared_key (41), early_data (42) and cookie (44). A
//! client resuming its TLS session sends pre_shared_key (and perhaps
//! early_data), its hello's length changes and with it whether padding is
//! needed, and a HelloRetryRequest's cookie comes and goes: none of that is
//! another device. A hello carrying none of them has a stable form equal to
//! its JA4. [`ja4_both`] gives both forms in one pass.
//!
//! Parsing is bounded: [`ClientHello::from_records`] reads TLS records as they
//! come off the socket and reassembles a ClientHello spread over several of
//! them, up to [`MAX_HELLO_BYTES`]; [`ClientHello::from_handshake`] reads a
//! bare handshake message (as a QUIC CRYPTO frame carries it). Either returns
//! [`HelloError::Incomplete`] while the bytes so far are a valid prefix, so
//! the caller can read more and retry, and [`HelloError::Malformed`] once they
//! cannot become a ClientHello.
//!
//! Decisions on the cases the specification leaves open:
//!
//! - **`c` is `000000000000`** when no extension other than SNI and ALPN
//!   remains, in `ja4_o` as in `ja4` (the specification states the rule for
//!   the sorted list only; the `ja4plus` implementation applies it to both,
//!   and so do we). Signature algorithms cannot then be present: they travel
//!   in an extension.
//! - **Raw forms** (`ja4_r`, `ja4_ro`) print exactly the strings that `b` and
//!   `c` hash: no trailing `_` when there are no signature algorithms, and an
//!   empty list where the hashed form would print `000000000000`.
//! - **Duplicate extensions** are counted and listed as often as they appear;
//!   the first occurrence supplies ALPN, supported versions and signature
//!   algorithms.
//! - **supported_versions present but holding only GREASE** falls back to the
//!   legacy version, as if absent.
//! - **SNI** is `d` whenever the server_name extension is present, whatever it
//!   holds: the specification keys on the extension, not on its contents.
//! - **Extensions JA4 reads** (ALPN, supported_versions, signature_algorithms)
//!   must be well formed or the whole hello is [`Malformed`]; a TLS stack would
//!   reject them as well. Other extensions' contents are not inspected.
//! - **DTLS** hellos carry a different handshake header and are not parsed;
//!   their version codes (`d1`, `d2`, `d3`) are still mapped.

use std::fmt;

use sha2::{Digest, Sha256};
use smallvec::SmallVec;

/// The most handshake body bytes (the ClientHello after its 4-byte header)
/// this module reassembles or reads: 17 KiB. Real hellos, post-quantum key
/// shares and ECH included, stay under 4 KiB; the slack admits a full
/// 16 KiB record and a bit.
pub const MAX_HELLO_BYTES: usize = 17 * 1024;

/// Largest TLS plaintext record payload (RFC 8446 §5.1).
const MAX_RECORD_PAYLOAD: usize = 1 << 14;
const RECORD_HEADER_LEN: usize = 5;
const HANDSHAKE_HEADER_LEN: usize = 4;
const CONTENT_TYPE_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const RANDOM_LEN: usize = 32;

const EXT_SERVER_NAME: u16 = 0x0000;
const EXT_SIGNATURE_ALGORITHMS: u16 = 0x000d;
const EXT_ALPN: u16 = 0x0010;
const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;
const EXT_PADDING: u16 = 0x0015;
const EXT_PRE_SHARED_KEY: u16 = 0x0029;
const EXT_EARLY_DATA: u16 = 0x002a;
const EXT_COOKIE: u16 = 0x002c;

/// The extensions the resumption-stable form leaves out: what one TLS stack
/// sends on some connections and not on others (see the module docs).
pub const RESUMPTION_EXTENSIONS: [u16; 4] =
    [EXT_PADDING, EXT_PRE_SHARED_KEY, EXT_EARLY_DATA, EXT_COOKIE];

/// Room for the sorted lists without touching the heap in the common case.
const INLINE_LIST: usize = 32;
type List = SmallVec<[u16; INLINE_LIST]>;

/// The parts of a ClientHello that JA4 reads, in wire order, GREASE included.
///
/// Built only by parsing ([`ClientHello::from_records`],
/// [`ClientHello::from_handshake`]), so its lists are bounded by
/// [`MAX_HELLO_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    legacy_version: u16,
    ciphers: Vec<u16>,
    extensions: Vec<u16>,
    supported_versions: Vec<u16>,
    signature_algorithms: Vec<u16>,
    alpn: Vec<Vec<u8>>,
}

/// Why bytes did not yield a ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// The bytes so far are a valid prefix of a ClientHello: read more and
    /// parse again from the start.
    #[error("ClientHello is incomplete; more bytes are needed")]
    Incomplete,
    /// The bytes cannot become a ClientHello, whatever follows.
    #[error("malformed ClientHello: {0}")]
    Malformed(#[from] Malformed),
}

/// The ways bytes fail to be a ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// A TLS record that is not a handshake record (content type 22).
    #[error("record content type {0} is not handshake (22)")]
    NotHandshakeRecord(u8),
    /// A record whose protocol version does not start with 3: not TLS.
    #[error("record version major {0} is not TLS (3)")]
    NotTls(u8),
    /// A record longer than the 16 KiB TLS allows.
    #[error("record payload of {0} bytes exceeds 16384")]
    RecordTooLong(usize),
    /// A handshake record with no payload, which TLS forbids.
    #[error("empty handshake record")]
    EmptyRecord,
    /// A handshake message that is not a ClientHello (type 1).
    #[error("handshake message type {0} is not ClientHello (1)")]
    NotClientHello(u8),
    /// A ClientHello longer than the configured cap.
    #[error("ClientHello of {len} bytes exceeds the limit of {limit}")]
    TooLong {
        /// Length of the handshake body the header announced.
        len: usize,
        /// The cap in force.
        limit: usize,
    },
    /// A length prefix that runs past the end of its container.
    #[error("{0} overruns its container")]
    Overrun(&'static str),
    /// A list of 16-bit values with an odd byte length.
    #[error("{0} has an odd length")]
    OddLength(&'static str),
    /// Bytes left over inside a structure that must be consumed exactly.
    #[error("trailing bytes after {0}")]
    Trailing(&'static str),
}

/// The transport a ClientHello arrived over: JA4's first character.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// TLS over TCP: `t`. The default.
    #[default]
    Tcp,
    /// TLS inside QUIC: `q`.
    Quic,
}

/// Characters in a JA4's text: `a` (10), `_`, `b` (12), `_`, `c` (12).
const JA4_LEN: usize = 36;

/// A JA4 fingerprint (`ja4` or `ja4_o`), stored in 22 bytes.
///
/// Displays as the `a_b_c` string, e.g. `t13d1516h2_8daaf6152771_e5627efa2ab1`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ja4 {
    a: [u8; 10],
    b: [u8; 6],
    c: [u8; 6],
}

/// Whether lists are sorted (`ja4`, `ja4_r`) or in wire order (`ja4_o`,
/// `ja4_ro`, which also keep SNI and ALPN in the extension list).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    Sorted,
    Original,
}

/// A bounds-checked cursor over a byte slice; every read names its field.
struct Reader<'a> {
    buf: &'a [u8],
}

// === impl ClientHello ===

impl ClientHello {
    /// Parses the ClientHello at the start of `input`, the bytes a TLS client
    /// sent over TCP: one or more handshake records (content type 22) that
    /// together hold the ClientHello message, at most [`MAX_HELLO_BYTES`]
    /// long. Bytes after the message are ignored.
    pub fn from_records(input: &[u8]) -> Result<Self, HelloError> {
        Self::from_records_capped(input, MAX_HELLO_BYTES)
    }

    /// [`ClientHello::from_records`] with a cap of `max_bytes` on the
    /// handshake body instead of [`MAX_HELLO_BYTES`]. At most `max_bytes + 4`
    /// bytes are copied when the hello spans records; none when it fits in
    /// the first.
    pub fn from_records_capped(input: &[u8], max_bytes: usize) -> Result<Self, HelloError> {
        let (first, mut rest) = split_record(input)?;
        if let Some(total) = message_len(first, max_bytes)?
            && let Some(msg) = first.get(..total)
        {
            return parse_message(msg);
        }

        // The hello spans records. `first` is shorter than the message, which
        // `message_len` capped, so this copy is bounded.
        let cap = max_bytes.saturating_add(HANDSHAKE_HEADER_LEN);
        let mut buf = Vec::with_capacity(cap.min(2 * MAX_RECORD_PAYLOAD));
        buf.extend_from_slice(first);
        loop {
            let (payload, next) = split_record(rest)?;
            rest = next;
            let room = cap.saturating_sub(buf.len());
            buf.extend_from_slice(payload.get(..room.min(payload.len())).unwrap_or(&[]));
            if let Some(total) = message_len(&buf, max_bytes)?
                && let Some(msg) = buf.get(..total)
            {
                return parse_message(msg);
            }
        }
    }

    /// Parses a bare ClientHello handshake message (type 1, 3-byte length,
    /// body) at the start of `msg`, as QUIC carries it or a proxy captures it
    /// after the record layer. At most [`MAX_HELLO_BYTES`] of body; bytes
    /// after the message are ignored.
    pub fn from_handshake(msg: &[u8]) -> Result<Self, HelloError> {
        Self::from_handshake_capped(msg, MAX_HELLO_BYTES)
    }

    /// [`ClientHello::from_handshake`] with a cap of `max_bytes` on the body.
    pub fn from_handshake_capped(msg: &[u8], max_bytes: usize) -> Result<Self, HelloError> {
        match message_len(msg, max_bytes)? {
            Some(total) => parse_message(msg.get(..total).ok_or(HelloError::Incomplete)?),
            None => Err(HelloError::Incomplete),
        }
    }

    /// The `legacy_version` field (0x0303 for TLS 1.2 and 1.3 clients).
    pub fn legacy_version(&self) -> u16 {
        self.legacy_version
    }

    /// Cipher suites in wire order, GREASE included.
    pub fn ciphers(&self) -> &[u16] {
        &self.ciphers
    }

    /// Extension types in wire order, GREASE and duplicates included.
    pub fn extensions(&self) -> &[u16] {
        &self.extensions
    }

    /// Whether the server_name extension is present.
    pub fn has_sni(&self) -> bool {
        self.extensions.contains(&EXT_SERVER_NAME)
    }

    /// The supported_versions list in wire order, GREASE included; empty when
    /// the extension is absent.
    pub fn supported_versions(&self) -> &[u16] {
        &self.supported_versions
    }

    /// The signature_algorithms list in wire order, GREASE included; empty
    /// when the extension is absent.
    pub fn signature_algorithms(&self) -> &[u16] {
        &self.signature_algorithms
    }

    /// The ALPN protocol names in wire order; empty when the extension is
    /// absent.
    pub fn alpn(&self) -> &[Vec<u8>] {
        &self.alpn
    }

    /// The TLS version JA4 reports: the highest non-GREASE supported_versions
    /// entry, else the legacy version.
    pub fn version(&self) -> u16 {
        self.supported_versions
            .iter()
            .copied()
            .filter(|v| !is_grease(*v))
            .max()
            .unwrap_or(self.legacy_version)
    }
}

// === impl Ja4 ===

impl Ja4 {
    /// The `a` part: 10 ASCII characters, e.g. `t13d1516h2`.
    pub fn a(&self) -> &str {
        // Every byte of `a` is written from ASCII tables below.
        std::str::from_utf8(&self.a).unwrap_or("")
    }

    /// The fingerprint's text, `a_b_c` with `b` and `c` in lower-case
    /// hex, as bytes: what `Display` writes for the app's `Vigil-JA4`
    /// header on every request. Written by hand: `write!` with `{:02x}` per
    /// byte took most of the 0.3 µs a request spent formatting it
    /// (docs/performance.md, "Issue 17, fifth pass").
    fn to_ascii(self) -> [u8; JA4_LEN] {
        let mut out = [b'_'; JA4_LEN];
        out[..10].copy_from_slice(&self.a);
        crate::fingerprint::encode_hex(&self.b, &mut out[11..23]);
        crate::fingerprint::encode_hex(&self.c, &mut out[24..]);
        out
    }

    /// The `b` part as the 6 bytes whose hex is printed.
    pub fn b(&self) -> [u8; 6] {
        self.b
    }

    /// The `c` part as the 6 bytes whose hex is printed.
    pub fn c(&self) -> [u8; 6] {
        self.c
    }

    /// Whether `other` is the same TLS stack in another configuration: the
    /// same transport, TLS version, SNI presence, cipher count, ALPN and
    /// cipher list (`b`), with only the extensions (their count in `a`, and
    /// `c`) differing. That is what a browser update or a feature trial
    /// changes; another library changes the ciphers too.
    pub fn same_family(&self, other: &Ja4) -> bool {
        // a = transport(1) version(2) sni(1) ciphers(2) extensions(2) alpn(2)
        self.a[..6] == other.a[..6] && self.a[8..] == other.a[8..] && self.b == other.b
    }

    /// The 22 bytes a compact record stores: `a`, then `b` and `c` raw.
    pub(crate) fn to_raw(self) -> [u8; 22] {
        let mut out = [0u8; 22];
        out[..10].copy_from_slice(&self.a);
        out[10..16].copy_from_slice(&self.b);
        out[16..].copy_from_slice(&self.c);
        out
    }

    /// Reads [`Ja4::to_raw`] back; `None` when `a` is not printable ASCII
    /// (a record from elsewhere is checked, not trusted).
    pub(crate) fn from_raw(raw: &[u8; 22]) -> Option<Ja4> {
        let mut ja4 = Ja4 {
            a: [0; 10],
            b: [0; 6],
            c: [0; 6],
        };
        ja4.a.copy_from_slice(&raw[..10]);
        ja4.b.copy_from_slice(&raw[10..16]);
        ja4.c.copy_from_slice(&raw[16..]);
        ja4.a.iter().all(u8::is_ascii_alphanumeric).then_some(ja4)
    }
}

impl std::str::FromStr for Ja4 {
    type Err = crate::fingerprint::ParseFingerprintError;

    /// Parses the `a_b_c` form, as a balancer reports it: `a` is 10 ASCII
    /// letters and digits (lower-cased), `b` and `c` 12 hex digits each.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = crate::fingerprint::ParseFingerprintError::Ja4;
        let mut parts = s.split('_');
        let (Some(a), Some(b), Some(c), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(err);
        };
        let a: [u8; 10] = a.as_bytes().try_into().map_err(|_| err)?;
        if !a.iter().all(u8::is_ascii_alphanumeric) {
            return Err(err);
        }
        let mut out = Ja4 {
            a: a.map(|c| c.to_ascii_lowercase()),
            b: [0; 6],
            c: [0; 6],
        };
        crate::fingerprint::decode_hex(b.as_bytes(), &mut out.b).ok_or(err)?;
        crate::fingerprint::decode_hex(c.as_bytes(), &mut out.c).ok_or(err)?;
        Ok(out)
    }
}

impl fmt::Display for Ja4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every byte is ASCII (`a` from ASCII tables, the rest hex digits
        // and `_`), so this never falls back.
        f.write_str(std::str::from_utf8(&self.to_ascii()).unwrap_or(""))
    }
}

impl fmt::Debug for Ja4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ja4({self})")
    }
}

// === impl Reader ===

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Malformed> {
        let head = self.buf.get(..n).ok_or(Malformed::Overrun(field))?;
        self.buf = self.buf.get(n..).unwrap_or(&[]);
        Ok(head)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, Malformed> {
        let b = self.take(1, field)?;
        Ok(b.first().copied().unwrap_or(0))
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, Malformed> {
        match *self.take(2, field)? {
            [hi, lo] => Ok(u16::from_be_bytes([hi, lo])),
            _ => Err(Malformed::Overrun(field)),
        }
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self, field: &'static str) -> Result<&'a [u8], Malformed> {
        let len = self.u8(field)?;
        self.take(usize::from(len), field)
    }

    /// A vector with a two-byte length prefix.
    fn vec16(&mut self, field: &'static str) -> Result<&'a [u8], Malformed> {
        let len = self.u16(field)?;
        self.take(usize::from(len), field)
    }

    /// Fails unless every byte was read.
    fn finish(&self, field: &'static str) -> Result<(), Malformed> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Malformed::Trailing(field))
        }
    }
}

// === JA4 ===

/// The JA4 fingerprint of `hello`: sorted lists, hashed.
pub fn ja4(hello: &ClientHello, transport: Transport) -> Ja4 {
    fingerprint(hello, transport, Order::Sorted)
}

/// The resumption-stable form of [`ja4`]: the extensions in
/// [`RESUMPTION_EXTENSIONS`] are neither counted in `a` nor listed in `c`.
/// Equal to [`ja4`] when the hello has none of them. Not a JA4+ fingerprint:
/// compare it only with another stable form (or a JA4 of a hello without
/// those extensions).
pub fn ja4_stable(hello: &ClientHello, transport: Transport) -> Ja4 {
    ja4_both(hello, transport).1
}

/// [`ja4`] and [`ja4_stable`] of `hello` in one pass: the ciphers are sorted
/// and hashed once (`b` is the same in both), and `c` is hashed a second
/// time only when the hello holds an extension the stable form leaves out.
pub fn ja4_both(hello: &ClientHello, transport: Transport) -> (Ja4, Ja4) {
    let (ciphers, extensions, sigalgs) = lists(hello, Order::Sorted);
    let b = hash_b(&ciphers);
    let a = part_a(hello, transport);
    let spec = Ja4 {
        a,
        b,
        c: hash_c(&extensions, &sigalgs),
    };
    let left_out = extensions
        .iter()
        .filter(|e| RESUMPTION_EXTENSIONS.contains(e))
        .count();
    if left_out == 0 {
        return (spec, spec);
    }
    let kept: List = extensions
        .iter()
        .copied()
        .filter(|e| !RESUMPTION_EXTENSIONS.contains(e))
        .collect();
    let mut stable_a = a;
    let counted = hello.extensions.iter().filter(|v| !is_grease(**v)).count();
    let [e1, e2] = count(counted.saturating_sub(left_out));
    stable_a[6] = e1;
    stable_a[7] = e2;
    let stable = Ja4 {
        a: stable_a,
        b,
        c: hash_c(&kept, &sigalgs),
    };
    (spec, stable)
}

/// The `ja4_o` fingerprint: as [`ja4`] but with ciphers and extensions in
/// wire order, SNI and ALPN kept in the extension list.
pub fn ja4_o(hello: &ClientHello, transport: Transport) -> Ja4 {
    fingerprint(hello, transport, Order::Original)
}

/// The `ja4_r` raw fingerprint: `a`, then the sorted cipher list, then the
/// strings hashed into `c`, all unhashed, e.g.
/// `t13d1516h2_002f,0035,…_0005,000a,…_0403,0804,…`.
pub fn ja4_r(hello: &ClientHello, transport: Transport) -> String {
    raw(hello, transport, Order::Sorted)
}

/// The `ja4_ro` raw fingerprint: as [`ja4_r`] in wire order, SNI and ALPN
/// kept in the extension list.
pub fn ja4_ro(hello: &ClientHello, transport: Transport) -> String {
    raw(hello, transport, Order::Original)
}

/// Whether `v` is a GREASE value (RFC 8701): `0x?a?a` with equal bytes.
fn is_grease(v: u16) -> bool {
    let [hi, lo] = v.to_be_bytes();
    hi == lo && lo & 0x0f == 0x0a
}

fn fingerprint(hello: &ClientHello, transport: Transport, order: Order) -> Ja4 {
    let (ciphers, extensions, sigalgs) = lists(hello, order);
    // Both orders zero `c` when nothing but SNI and ALPN remains: the
    // specification's rule names the sorted list, and `ja4plus` applies it
    // to `ja4_o` too.
    let c = if !has_hashed_extensions(hello) {
        [0; 6]
    } else {
        hash_c(&extensions, &sigalgs)
    };
    Ja4 {
        a: part_a(hello, transport),
        b: hash_b(&ciphers),
        c,
    }
}

/// `b`: the cipher list hashed, zeros when empty.
fn hash_b(ciphers: &[u16]) -> [u8; 6] {
    if ciphers.is_empty() {
        return [0; 6];
    }
    let mut h = Sha256::new();
    hash_list(&mut h, ciphers);
    truncate(h)
}

/// `c` of the sorted form: the extension list (SNI and ALPN already out)
/// and the signature algorithms hashed; zeros when the list is empty.
fn hash_c(extensions: &[u16], sigalgs: &[u16]) -> [u8; 6] {
    if extensions.is_empty() {
        return [0; 6];
    }
    let mut h = Sha256::new();
    hash_list(&mut h, extensions);
    if !sigalgs.is_empty() {
        h.update(b"_");
        hash_list(&mut h, sigalgs);
    }
    truncate(h)
}

fn raw(hello: &ClientHello, transport: Transport, order: Order) -> String {
    let (ciphers, extensions, sigalgs) = lists(hello, order);
    let mut out =
        String::with_capacity(12 + 5 * (ciphers.len() + extensions.len() + sigalgs.len()));
    out.push_str(std::str::from_utf8(&part_a(hello, transport)).unwrap_or(""));
    out.push('_');
    push_list(&mut out, &ciphers);
    out.push('_');
    push_list(&mut out, &extensions);
    if !sigalgs.is_empty() {
        out.push('_');
        push_list(&mut out, &sigalgs);
    }
    out
}

/// Whether any extension other than GREASE, SNI and ALPN is present.
fn has_hashed_extensions(hello: &ClientHello) -> bool {
    hello
        .extensions
        .iter()
        .any(|e| !is_grease(*e) && *e != EXT_SERVER_NAME && *e != EXT_ALPN)
}

/// The cipher, extension and signature algorithm lists as `order` hashes
/// them, GREASE removed.
fn lists(hello: &ClientHello, order: Order) -> (List, List, List) {
    let keep = |v: &u16| !is_grease(*v);
    let mut ciphers: List = hello.ciphers.iter().copied().filter(keep).collect();
    let mut extensions: List = match order {
        Order::Sorted => hello
            .extensions
            .iter()
            .copied()
            .filter(|e| keep(e) && *e != EXT_SERVER_NAME && *e != EXT_ALPN)
            .collect(),
        Order::Original => hello.extensions.iter().copied().filter(keep).collect(),
    };
    if order == Order::Sorted {
        ciphers.sort_unstable();
        extensions.sort_unstable();
    }
    let sigalgs = hello
        .signature_algorithms
        .iter()
        .copied()
        .filter(keep)
        .collect();
    (ciphers, extensions, sigalgs)
}

fn part_a(hello: &ClientHello, transport: Transport) -> [u8; 10] {
    let proto = match transport {
        Transport::Tcp => b't',
        Transport::Quic => b'q',
    };
    let [v1, v2] = version_code(hello.version());
    let sni = if hello.has_sni() { b'd' } else { b'i' };
    let [c1, c2] = count(hello.ciphers.iter().filter(|v| !is_grease(**v)).count());
    let [e1, e2] = count(hello.extensions.iter().filter(|v| !is_grease(**v)).count());
    let [l1, l2] = alpn_code(hello.alpn.first().map(Vec::as_slice));
    [proto, v1, v2, sni, c1, c2, e1, e2, l1, l2]
}

fn version_code(version: u16) -> [u8; 2] {
    match version {
        0x0304 => *b"13",
        0x0303 => *b"12",
        0x0302 => *b"11",
        0x0301 => *b"10",
        0x0300 => *b"s3",
        0x0002 => *b"s2",
        0xfeff => *b"d1",
        0xfefd => *b"d2",
        0xfefc => *b"d3",
        _ => *b"00",
    }
}

/// Two decimal digits, capped at 99.
fn count(n: usize) -> [u8; 2] {
    let n = u8::try_from(n.min(99)).unwrap_or(99);
    [b'0' + n / 10, b'0' + n % 10]
}

/// First and last characters of the first ALPN protocol; when either end is
/// not ASCII alphanumeric, the first and last hex digits of the whole value.
fn alpn_code(first: Option<&[u8]>) -> [u8; 2] {
    let (Some(&head), Some(&tail)) = (first.and_then(<[u8]>::first), first.and_then(<[u8]>::last))
    else {
        return *b"00";
    };
    if head.is_ascii_alphanumeric() && tail.is_ascii_alphanumeric() {
        [head, tail]
    } else {
        [hex_digit(head >> 4), hex_digit(tail & 0x0f)]
    }
}

fn hex_digit(nibble: u8) -> u8 {
    match nibble & 0x0f {
        n @ 0..=9 => b'0' + n,
        n => b'a' + (n - 10),
    }
}

fn hex4(v: u16) -> [u8; 4] {
    let [hi, lo] = v.to_be_bytes();
    [
        hex_digit(hi >> 4),
        hex_digit(hi),
        hex_digit(lo >> 4),
        hex_digit(lo),
    ]
}

/// Feeds `list` to `h` as comma-joined 4-digit lower-case hex.
fn hash_list(h: &mut Sha256, list: &[u16]) {
    for (i, v) in list.iter().enumerate() {
        if i > 0 {
            h.update(b",");
        }
        h.update(hex4(*v));
    }
}

fn push_list(out: &mut String, list: &[u16]) {
    for (i, v) in list.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.extend(hex4(*v).iter().map(|b| char::from(*b)));
    }
}

fn truncate(h: Sha256) -> [u8; 6] {
    let digest = h.finalize();
    let mut out = [0; 6];
    for (o, d) in out.iter_mut().zip(digest.iter()) {
        *o = *d;
    }
    out
}

// === parsing ===

/// Splits the first handshake record off `input`: its payload and the rest.
fn split_record(input: &[u8]) -> Result<(&[u8], &[u8]), HelloError> {
    let Some(&content_type) = input.first() else {
        return Err(HelloError::Incomplete);
    };
    if content_type != CONTENT_TYPE_HANDSHAKE {
        return Err(Malformed::NotHandshakeRecord(content_type).into());
    }
    if let Some(&major) = input.get(1)
        && major != 3
    {
        return Err(Malformed::NotTls(major).into());
    }
    let Some(&[_, _, _, hi, lo]) = input.get(..RECORD_HEADER_LEN) else {
        return Err(HelloError::Incomplete);
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len > MAX_RECORD_PAYLOAD {
        return Err(Malformed::RecordTooLong(len).into());
    }
    if len == 0 {
        return Err(Malformed::EmptyRecord.into());
    }
    let end = RECORD_HEADER_LEN + len;
    match (input.get(RECORD_HEADER_LEN..end), input.get(end..)) {
        (Some(payload), Some(rest)) => Ok((payload, rest)),
        _ => Err(HelloError::Incomplete),
    }
}

/// The total length (header included) of the ClientHello message starting
/// `buf`, once its header is there.
fn message_len(buf: &[u8], max_bytes: usize) -> Result<Option<usize>, HelloError> {
    if let Some(&msg_type) = buf.first()
        && msg_type != HANDSHAKE_CLIENT_HELLO
    {
        return Err(Malformed::NotClientHello(msg_type).into());
    }
    let Some(&[_, a, b, c]) = buf.get(..HANDSHAKE_HEADER_LEN) else {
        return Ok(None);
    };
    let len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
    if len > max_bytes {
        return Err(Malformed::TooLong {
            len,
            limit: max_bytes,
        }
        .into());
    }
    Ok(Some(HANDSHAKE_HEADER_LEN + len))
}

/// Parses one complete ClientHello message, header included.
fn parse_message(msg: &[u8]) -> Result<ClientHello, HelloError> {
    let body = msg.get(HANDSHAKE_HEADER_LEN..).unwrap_or(&[]);
    Ok(parse_body(body)?)
}

fn parse_body(body: &[u8]) -> Result<ClientHello, Malformed> {
    let mut r = Reader::new(body);
    let legacy_version = r.u16("legacy_version")?;
    r.take(RANDOM_LEN, "random")?;
    r.vec8("legacy_session_id")?;
    let ciphers = u16_list(r.vec16("cipher_suites")?, "cipher_suites")?;
    r.vec8("legacy_compression_methods")?;

    let mut hello = ClientHello {
        legacy_version,
        ciphers,
        extensions: Vec::new(),
        supported_versions: Vec::new(),
        signature_algorithms: Vec::new(),
        alpn: Vec::new(),
    };
    // Hellos from before RFC 3546 end here, without an extensions block.
    if r.is_empty() {
        return Ok(hello);
    }
    let mut exts = Reader::new(r.vec16("extensions")?);
    r.finish("extensions")?;

    let (mut seen_versions, mut seen_sigalgs, mut seen_alpn) = (false, false, false);
    while !exts.is_empty() {
        let ty = exts.u16("extension_type")?;
        let data = exts.vec16("extension_data")?;
        hello.extensions.push(ty);
        match ty {
            EXT_SUPPORTED_VERSIONS if !seen_versions => {
                seen_versions = true;
                let mut d = Reader::new(data);
                hello.supported_versions =
                    u16_list(d.vec8("supported_versions")?, "supported_versions")?;
                d.finish("supported_versions")?;
            }
            EXT_SIGNATURE_ALGORITHMS if !seen_sigalgs => {
                seen_sigalgs = true;
                let mut d = Reader::new(data);
                hello.signature_algorithms =
                    u16_list(d.vec16("signature_algorithms")?, "signature_algorithms")?;
                d.finish("signature_algorithms")?;
            }
            EXT_ALPN if !seen_alpn => {
                seen_alpn = true;
                let mut d = Reader::new(data);
                let mut names = Reader::new(d.vec16("alpn")?);
                d.finish("alpn")?;
                while !names.is_empty() {
                    hello.alpn.push(names.vec8("alpn_protocol")?.to_vec());
                }
            }
            _ => {}
        }
    }
    Ok(hello)
}

/// Reads a list of big-endian 16-bit values.
fn u16_list(bytes: &[u8], field: &'static str) -> Result<Vec<u16>, Malformed> {
    let pairs = bytes.chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return Err(Malformed::OddLength(field));
    }
    Ok(pairs
        .map(|p| match *p {
            [hi, lo] => u16::from_be_bytes([hi, lo]),
            _ => 0,
        })
        .collect())
}

#[cfg(test)]
mod tests;
