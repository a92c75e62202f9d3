//! Bounded readers of `Forwarded` (RFC 7239) and `X-Forwarded-For`.
//!
//! Both read **right to left**: the last header line first, and each line
//! from its end. Proxies append to these headers, so the rightmost entries
//! are the ones written by the proxies Vigil trusts and the leftmost ones are
//! whatever the client sent. Reading from the right means that
//!
//! - the caps cut off the client's end of the chain, never the proxies' end:
//!   a client that pads the header cannot push the real entries out of reach;
//! - a quoting trick in the client's part of a `Forwarded` line (an
//!   unbalanced `"`, an escaped quote) cannot swallow the entries that
//!   proxies appended after it, because those are split off first;
//! - no more than `max_bytes` bytes of a header are ever looked at.
//!
//! Each entry is then parsed on its own, left to right, strictly: anything
//! that is not a well-formed entry becomes [`Node::Malformed`] in place, so
//! that the positions of the other hops are kept.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Hop, Hops, Node};

/// The two header syntaxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Syntax {
    /// RFC 7239 `Forwarded`.
    Forwarded,
    /// De-facto `X-Forwarded-For`.
    XForwardedFor,
}

/// The caps on one header's read.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Most bytes read across all lines of the header, one byte counted per
    /// line break.
    pub max_bytes: usize,
    /// Most entries kept.
    pub max_hops: usize,
}

/// What a read noticed besides the hops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Read {
    /// A cap was hit: entries to the left were not read.
    pub truncated: bool,
    /// Some entry read could not be parsed.
    pub malformed: bool,
}

/// Longest node text (after unquoting) that is parsed; longer is malformed.
/// `[ffff:…:255.255.255.255%zone]:65535` fits with room for a zone id.
const MAX_NODE_BYTES: usize = 96;
/// Longest IPv6 zone id accepted (Linux interface names are at most 15).
const MAX_ZONE_BYTES: usize = 32;

/// Reads the entries of one header, nearest (rightmost) first, into `out`.
/// `lines` yields the header's lines **last line first**. Blank entries
/// (`a,,b`, a trailing comma, an empty line) are skipped, as RFC 9110 lists
/// allow. Never panics, and looks at no more than `limits.max_bytes` bytes.
pub(super) fn read<'a>(
    lines: impl Iterator<Item = &'a [u8]>,
    syntax: Syntax,
    limits: Limits,
    out: &mut Hops,
) -> Read {
    let mut read = Read::default();
    let mut budget = limits.max_bytes;
    for line in lines {
        if budget == 0 {
            if !line.is_empty() {
                read.truncated = true;
                break;
            }
            continue;
        }
        let cut = line.len() > budget;
        let window = if cut {
            line.get(line.len() - budget..).unwrap_or_default()
        } else {
            line
        };
        budget = budget.saturating_sub(line.len().saturating_add(1));
        let mut end = window.len();
        loop {
            let boundary = match syntax {
                Syntax::Forwarded => element_boundary(window, end),
                Syntax::XForwardedFor => window
                    .get(..end)
                    .unwrap_or_default()
                    .iter()
                    .rposition(|b| *b == b','),
            };
            if boundary.is_none() && cut {
                // The leftmost entry of the window may have been cut in two.
                read.truncated = true;
                return read;
            }
            let start = boundary.map_or(0, |c| c + 1);
            let entry = window.get(start..end).unwrap_or_default();
            if !entry.trim_ascii().is_empty() {
                if out.len() >= limits.max_hops {
                    read.truncated = true;
                    return read;
                }
                let hop = match syntax {
                    Syntax::Forwarded => forwarded_element(entry),
                    Syntax::XForwardedFor => xff_entry(entry),
                };
                read.malformed |= hop.node == Node::Malformed;
                out.push(hop);
            }
            match boundary {
                Some(c) => end = c,
                None => break,
            }
        }
    }
    read
}

/// The position of the comma that ends the element before `end` in a
/// `Forwarded` line, skipping commas inside quoted strings, scanning right to
/// left. Inside a quoted string a `"` is escaped when an odd run of
/// backslashes precedes it.
fn element_boundary(line: &[u8], end: usize) -> Option<usize> {
    let head = line.get(..end)?;
    let mut inside = false;
    let mut i = head.len();
    while i > 0 {
        i -= 1;
        match (inside, head.get(i).copied()?) {
            (false, b',') => return Some(i),
            (false, b'"') => inside = true,
            (true, b'"') => {
                let run = head
                    .get(..i)?
                    .iter()
                    .rev()
                    .take_while(|b| **b == b'\\')
                    .count();
                if run % 2 == 0 {
                    inside = false;
                }
            }
            _ => {}
        }
    }
    None
}

const MALFORMED: Hop = Hop {
    node: Node::Malformed,
    port: None,
};

/// One `X-Forwarded-For` entry: `192.0.2.1`, `192.0.2.1:5678`,
/// `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:443`, `fe80::1%eth0`, or
/// `unknown`. Surrounding whitespace is ignored.
pub(super) fn xff_entry(entry: &[u8]) -> Hop {
    let e = entry.trim_ascii();
    if e.len() > MAX_NODE_BYTES {
        return MALFORMED;
    }
    if e.eq_ignore_ascii_case(b"unknown") {
        return Hop {
            node: Node::Unknown,
            port: None,
        };
    }
    if let Some(rest) = e.strip_prefix(b"[") {
        return bracketed(rest, false).unwrap_or(MALFORMED);
    }
    let colons = e.iter().filter(|b| **b == b':').count();
    let parsed = match colons {
        0 => ipv4(e).map(|ip| (ip, None)),
        1 => e
            .iter()
            .position(|b| *b == b':')
            .and_then(|i| Some((ipv4(e.get(..i)?)?, port(e.get(i + 1..)?, false)?))),
        _ => ipv6(e).map(|ip| (ip, None)),
    };
    match parsed {
        Some((ip, port)) => Hop {
            node: Node::Ip(ip),
            port,
        },
        None => MALFORMED,
    }
}

/// One `Forwarded` element: `;`-separated `name=value` pairs, names
/// case-insensitive, values tokens or quoted strings. Only `for` is read;
/// the others are checked for syntax and skipped. A `for` given twice makes
/// the element malformed; an element without `for` is [`Node::Unknown`].
/// Whitespace around pairs and `;` is tolerated; around `=` it is not
/// (RFC 7239's `token "=" value`): `For =1.1.1.1` is malformed, as an app
/// reading the header strictly would not take it.
pub(super) fn forwarded_element(element: &[u8]) -> Hop {
    let mut i = 0;
    let mut found: Option<Hop> = None;
    loop {
        i = skip_ows(element, i);
        let Some(&b) = element.get(i) else { break };
        if b == b';' {
            i += 1;
            continue;
        }
        let name_start = i;
        while element.get(i).is_some_and(|b| is_tchar(*b)) {
            i += 1;
        }
        let Some(name) = element.get(name_start..i).filter(|n| !n.is_empty()) else {
            return MALFORMED;
        };
        if element.get(i) != Some(&b'=') {
            return MALFORMED;
        }
        i += 1;
        let value = if element.get(i) == Some(&b'"') {
            let Some(close) = closing_quote(element, i + 1) else {
                return MALFORMED;
            };
            let raw = element.get(i + 1..close).unwrap_or_default();
            i = close + 1;
            Value::Quoted(raw)
        } else {
            let start = i;
            while element.get(i).is_some_and(|b| is_value_byte(*b)) {
                i += 1;
            }
            match element.get(start..i) {
                Some(v) if !v.is_empty() => Value::Token(v),
                _ => return MALFORMED,
            }
        };
        i = skip_ows(element, i);
        if !matches!(element.get(i), None | Some(b';')) {
            return MALFORMED;
        }
        if name.eq_ignore_ascii_case(b"for") {
            if found.is_some() {
                return MALFORMED;
            }
            found = Some(value.node());
        }
    }
    found.unwrap_or(Hop {
        node: Node::Unknown,
        port: None,
    })
}

/// A `Forwarded` parameter value.
enum Value<'a> {
    Token(&'a [u8]),
    /// The bytes between the quotes, escapes not yet removed.
    Quoted(&'a [u8]),
}

impl Value<'_> {
    fn node(&self) -> Hop {
        match self {
            Value::Token(v) => forwarded_node(v),
            Value::Quoted(raw) if !raw.contains(&b'\\') => forwarded_node(raw),
            Value::Quoted(raw) => {
                let mut buf = [0u8; MAX_NODE_BYTES];
                let mut len = 0;
                let mut escaped = false;
                for b in raw.iter().copied() {
                    if !escaped && b == b'\\' {
                        escaped = true;
                        continue;
                    }
                    escaped = false;
                    let Some(slot) = buf.get_mut(len) else {
                        return MALFORMED;
                    };
                    *slot = b;
                    len += 1;
                }
                forwarded_node(buf.get(..len).unwrap_or_default())
            }
        }
    }
}

/// A `Forwarded` node (RFC 7239 §6): `nodename [":" node-port]` where the
/// name is an IPv4 address, a bracketed IPv6 address, `unknown` or an
/// obfuscated `_identifier`, and the port is digits or an obfuscated
/// `_identifier`. A bare (unbracketed) IPv6 address is malformed: its last
/// group cannot be told from a port.
fn forwarded_node(v: &[u8]) -> Hop {
    if v.len() > MAX_NODE_BYTES {
        return MALFORMED;
    }
    if let Some(rest) = v.strip_prefix(b"[") {
        return bracketed(rest, true).unwrap_or(MALFORMED);
    }
    let (name, port_text) = match v.iter().position(|b| *b == b':') {
        Some(i) => (v.get(..i).unwrap_or_default(), v.get(i + 1..)),
        None => (v, None),
    };
    let port = match port_text {
        None => None,
        Some(p) => match port(p, true) {
            Some(p) => p,
            None => return MALFORMED,
        },
    };
    let node = if name.eq_ignore_ascii_case(b"unknown") {
        Node::Unknown
    } else if is_obfuscated(name) {
        Node::Obfuscated
    } else if let Some(ip) = ipv4(name) {
        Node::Ip(ip)
    } else {
        return MALFORMED;
    };
    Hop { node, port }
}

/// After a `[`: an IPv6 address (zone id allowed), `]`, then nothing or
/// `:port`.
fn bracketed(rest: &[u8], obfuscated_port: bool) -> Option<Hop> {
    let close = rest.iter().position(|b| *b == b']')?;
    let ip = ipv6(rest.get(..close)?)?;
    let after = rest.get(close + 1..)?;
    let port = match after {
        [] => None,
        [b':', p @ ..] => port(p, obfuscated_port)?,
        _ => return None,
    };
    Some(Hop {
        node: Node::Ip(ip),
        port,
    })
}

/// Digits (at most 65535) → `Some(Some(port))`; an obfuscated port, when
/// allowed → `Some(None)`; anything else → `None`.
fn port(p: &[u8], obfuscated: bool) -> Option<Option<u16>> {
    if obfuscated && is_obfuscated(p) {
        return Some(None);
    }
    if p.is_empty() || p.len() > 5 || !p.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = p.iter().fold(0u32, |acc, b| acc * 10 + u32::from(b - b'0'));
    u16::try_from(n).ok().map(Some)
}

/// Dotted-quad IPv4, strict (no leading zeros, no shorthand). `0.0.0.0`
/// names no host, so it is no chain entry either.
fn ipv4(s: &[u8]) -> Option<IpAddr> {
    if s.len() > 15 {
        return None;
    }
    let text = std::str::from_utf8(s).ok()?;
    text.parse::<Ipv4Addr>()
        .ok()
        .map(IpAddr::V4)
        .filter(|ip| !ip.is_unspecified())
}

/// IPv6 text with an optional `%zone` suffix, which is validated and
/// dropped. IPv4-mapped addresses come back as IPv4.
fn ipv6(s: &[u8]) -> Option<IpAddr> {
    let (addr, zone) = match s.iter().position(|b| *b == b'%') {
        Some(i) => (s.get(..i)?, Some(s.get(i + 1..)?)),
        None => (s, None),
    };
    if let Some(zone) = zone
        && (zone.is_empty()
            || zone.len() > MAX_ZONE_BYTES
            || !zone
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')))
    {
        return None;
    }
    let text = std::str::from_utf8(addr).ok()?;
    let ip = text.parse::<Ipv6Addr>().ok()?;
    // `::` (and `::ffff:0.0.0.0`) name no host.
    Some(IpAddr::V6(ip).to_canonical()).filter(|ip| !ip.is_unspecified())
}

/// RFC 7239 `obfnode`/`obfport`: `_` then letters, digits, `.`, `_`, `-`.
fn is_obfuscated(s: &[u8]) -> bool {
    match s {
        [b'_', rest @ ..] => {
            !rest.is_empty()
                && rest
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        }
        _ => false,
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// A byte of an unquoted value. Laxer than `token`: `:`, `[`, `]` and `/`
/// appear unquoted in the wild (`for=192.0.2.1:80`); the node grammar is
/// still strict.
fn is_value_byte(b: u8) -> bool {
    b.is_ascii_graphic() && !matches!(b, b'"' | b';' | b',')
}

fn skip_ows(s: &[u8], mut i: usize) -> usize {
    while matches!(s.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    i
}

/// The index of the `"` that closes a quoted string whose content starts at
/// `from`, honouring `\` escapes.
fn closing_quote(s: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    loop {
        match s.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
}
