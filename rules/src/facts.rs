//! The facts a condition can read: their names, types and, for the facts
//! that take one of a few values, those values. `docs/rules.md` is written
//! from [`FACTS`]; a test keeps the two in agreement.
//!
//! A fact that is not known for a request has a value of its type that
//! says so — `""` for a string, `0` for a number ([`NEVER`] for the age of
//! a step-up that never happened), `false` for a flag — so
//! that every condition has an answer and evaluation never fails: `has()`
//! and errors are not part of Vigil's CEL (see [`crate::compile`]).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::IpAddr;

use vigil_engine::{Facts, NetworkChange, Reason};

/// A fact's CEL type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// `bool`.
    Bool,
    /// `int` (64-bit signed).
    Int,
    /// `string`.
    String,
    /// `list(string)`.
    StringList,
}

/// A fact of the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fact {
    RequestMethod,
    RequestScheme,
    RequestHost,
    RequestPath,
    RequestRoute,
    RequestListener,
    SessionPresent,
    SessionNew,
    SessionAge,
    SessionIdle,
    SessionCredentials,
    SessionUserKnown,
    SessionRequests,
    SessionStepUpAge,
    ClientIp,
    ClientPeer,
    ClientChainLength,
    ClientProvider,
    ClientEgress,
    ClientAsn,
    ClientCountry,
    ClientNetworkChange,
    DeviceJa4,
    DeviceJa4A,
    DeviceTlsSource,
    DeviceBrowser,
    DeviceMajor,
    DeviceOs,
    DeviceClass,
    DeviceMatches,
    RiskLevel,
    RiskScore,
    RiskReasons,
    RiskDefault,
    LoginLevel,
    LoginScore,
    SessionRiskLevel,
    SessionRiskScore,
    EntityLevel,
    EntityScore,
    UserKnown,
    UserLearning,
    TimeHour,
    TimeWeekday,
}

/// One row of the schema.
#[derive(Debug, Clone, Copy)]
pub struct FactDef {
    /// The dotted name conditions use.
    pub name: &'static str,
    /// Which fact.
    pub fact: Fact,
    /// Its type.
    pub ty: Type,
    /// For a string that takes one of a few values: those values (a
    /// literal compared with it must be one of them). Empty: any string.
    pub values: &'static [&'static str],
    /// What it is, for `docs/rules.md` and `rules check`.
    pub doc: &'static str,
}

const LEVELS: &[&str] = &["low", "medium", "high"];
const ACTIONS: &[&str] = &["allow", "step_up", "block", "revoke"];
const NETWORK_CHANGES: &[&str] = &[
    "",
    "same",
    "egress_changed",
    "provider_changed",
    "same_prefix",
    "same_asn",
    "different_prefix",
    "different_asn",
    "different_country",
];
const BROWSERS: &[&str] = &[
    "chrome", "edge", "firefox", "safari", "opera", "samsung", "curl", "tool", "other",
];
const OSES: &[&str] = &[
    "windows", "macos", "ios", "android", "chromeos", "linux", "unknown",
];
const CLASSES: &[&str] = &["desktop", "mobile", "tablet", "tool", "bot", "unknown"];
const SCHEMES: &[&str] = &["http", "https"];
const TLS_SOURCES: &[&str] = &["none", "captured", "upstream", "unreadable"];

macro_rules! facts {
    ($( $name:literal => $fact:ident, $ty:ident, $values:expr, $doc:literal; )*) => {
        /// Every fact, in the order `docs/rules.md` lists them.
        pub const FACTS: &[FactDef] = &[
            $( FactDef { name: $name, fact: Fact::$fact, ty: Type::$ty, values: $values, doc: $doc }, )*
        ];
    };
}

facts! {
    "request.method" => RequestMethod, String, &[], "the method, as sent (`GET`, `POST`, …)";
    "request.scheme" => RequestScheme, String, SCHEMES, "`https` on a TLS listener, else `http`";
    "request.host" => RequestHost, String, &[], "the host routing used, lower case, without port";
    "request.path" => RequestPath, String, &[], "the normalised path routing matched (no query)";
    "request.route" => RequestRoute, String, &[], "the route's name";
    "request.listener" => RequestListener, String, &[], "the listener's name";
    "session.present" => SessionPresent, Bool, &[], "the request carries a live session (not revoked)";
    "session.new" => SessionNew, Bool, &[], "the session has no baseline yet: its first judged request";
    "session.age" => SessionAge, Int, &[], "seconds since the session's first request (0 without a session)";
    "session.idle" => SessionIdle, Int, &[], "seconds since the session's previous request (0 for a new session)";
    "session.credentials" => SessionCredentials, Int, &[], "session credentials the request carried (cookies and bearer)";
    "session.user_known" => SessionUserKnown, Bool, &[], "the session is bound to a user";
    "session.requests" => SessionRequests, Int, &[], "requests of the session the engine let through before this one, plus this one (1 on its first request; 0 without a session)";
    "session.step_up_age" => SessionStepUpAge, Int, &[], "seconds since the session's user last passed a step-up on it; `9223372036854775807` (the largest int) when never, and without a session";
    "client.ip" => ClientIp, String, &[], "the client address found through trusted proxies";
    "client.peer" => ClientPeer, String, &[], "the TCP peer's address";
    "client.chain_length" => ClientChainLength, Int, &[], "hops read from the forwarding header (0: none)";
    "client.provider" => ClientProvider, String, &[], "the trusted set the client came through (`\"\"`: direct)";
    "client.egress" => ClientEgress, String, &[], "that provider's egress address (`\"\"`: none)";
    "client.asn" => ClientAsn, Int, &[], "the client's autonomous system (0: unknown)";
    "client.country" => ClientCountry, String, &[], "ISO 3166-1 alpha-2 country, upper case (`\"\"`: unknown)";
    "client.network_change" => ClientNetworkChange, String, NETWORK_CHANGES, "how the network moved since the session's baseline (`\"\"`: no baseline)";
    "device.ja4" => DeviceJa4, String, &[], "the JA4 of the connection (`\"\"`: none)";
    "device.ja4_a" => DeviceJa4A, String, &[], "JA4's first part: protocol, TLS version, SNI, counts, ALPN (the client's family)";
    "device.tls_source" => DeviceTlsSource, String, TLS_SOURCES, "where the TLS facts came from";
    "device.browser" => DeviceBrowser, String, BROWSERS, "browser family from the User-Agent";
    "device.major" => DeviceMajor, Int, &[], "browser major version (0: unknown)";
    "device.os" => DeviceOs, String, OSES, "platform";
    "device.class" => DeviceClass, String, CLASSES, "device class";
    "device.matches" => DeviceMatches, Bool, &[], "a known session's device matched its baseline (no device reason)";
    "risk.level" => RiskLevel, String, LEVELS, "the overall level, as the route's thresholds read it";
    "risk.score" => RiskScore, Int, &[], "the overall score, 0 to 100";
    "risk.reasons" => RiskReasons, StringList, &[], "reason codes of all three risks (docs/risk.md)";
    "risk.default" => RiskDefault, String, ACTIONS, "the route policy's action for this risk";
    "risk.login.level" => LoginLevel, String, LEVELS, "login risk level (`low` when not scored)";
    "risk.login.score" => LoginScore, Int, &[], "login risk score";
    "risk.session.level" => SessionRiskLevel, String, LEVELS, "session risk level";
    "risk.session.score" => SessionRiskScore, Int, &[], "session risk score";
    "risk.entity.level" => EntityLevel, String, LEVELS, "entity (user) risk level";
    "risk.entity.score" => EntityScore, Int, &[], "entity (user) risk score";
    "user.known" => UserKnown, Bool, &[], "the session's user is known";
    "user.learning" => UserLearning, Bool, &[], "the user is still in the learning period";
    "time.hour" => TimeHour, Int, &[], "hour of the request, 0 to 23, in `[rules] time_zone`";
    "time.weekday" => TimeWeekday, Int, &[], "day of the week, 0 (Sunday) to 6, in `[rules] time_zone`";
}

/// The map of request headers: `request.headers["user-agent"]`, the
/// header's value (several lines joined with `, `; `""` when absent).
pub const HEADERS: &str = "request.headers";

/// The fact named `name`.
pub fn lookup(name: &str) -> Option<&'static FactDef> {
    FACTS.iter().find(|f| f.name == name)
}

/// Every reason code `risk.reasons` can hold.
pub fn reason_codes() -> impl Iterator<Item = &'static str> {
    Reason::ALL.iter().map(|r| r.code())
}

/// Bit of `reason` in a reason mask.
pub(crate) fn reason_bit(code: &str) -> Option<u32> {
    Reason::ALL
        .iter()
        .position(|r| r.code() == code)
        .map(|i| 1 << i)
}

// === the values of facts ===

/// A string fact's value: borrowed from the request, or formatted into a
/// buffer on the stack (addresses, JA4) — never allocated, except a
/// header sent on several lines, which is joined.
#[derive(Debug)]
pub enum Text<'a> {
    /// Borrowed, or joined.
    Str(Cow<'a, str>),
    /// Formatted on the stack.
    Inline(Inline),
}

/// Up to 64 bytes of text on the stack.
#[derive(Debug)]
pub struct Inline {
    buf: [u8; 64],
    len: usize,
}

impl Inline {
    fn new() -> Self {
        Self {
            buf: [0; 64],
            len: 0,
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl std::fmt::Write for Inline {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl Text<'_> {
    /// The text.
    pub fn as_str(&self) -> &str {
        match self {
            Text::Str(s) => s,
            Text::Inline(i) => i.as_str(),
        }
    }
}

fn addr(ip: IpAddr) -> Text<'static> {
    let mut out = Inline::new();
    // An address is at most 45 bytes: it always fits.
    let _ = write!(out, "{ip}");
    Text::Inline(out)
}

const DEVICE_REASONS: [Reason; 3] = [
    Reason::DeviceChanged,
    Reason::Ja4Mismatch,
    Reason::TlsEvidenceLost,
];

/// Where an evaluation reads facts from: a request's [`Facts`] in the
/// proxy ([`Request`]), or a test case's table of values.
pub trait FactSource {
    /// The value of a `bool` fact.
    fn boolean(&self, fact: Fact) -> bool;
    /// The value of an `int` fact.
    fn integer(&self, fact: Fact) -> i64;
    /// The value of a `string` fact.
    fn text(&self, fact: Fact) -> Text<'_>;
    /// The value of the header `name` (lower case): its lines joined with
    /// `, `, bytes that are not UTF-8 as U+FFFD; `""` when absent.
    fn header(&self, name: &http::HeaderName) -> Text<'_>;
    /// `risk.reasons` as a mask: bit `i` for [`Reason::ALL`]`[i]`.
    fn reasons(&self) -> u32;
}

/// A request's facts as the engine derived them, with the zone its local
/// time is read in.
#[derive(Debug, Clone, Copy)]
pub struct Request<'f, 'a> {
    /// The facts.
    pub facts: &'f Facts<'a>,
    /// The zone of `time.hour` and `time.weekday`.
    pub zone: &'f jiff::tz::TimeZone,
}

impl FactSource for Request<'_, '_> {
    fn boolean(&self, fact: Fact) -> bool {
        let f = self.facts;
        match fact {
            Fact::SessionPresent => f.session.is_some(),
            Fact::SessionNew => f.session.is_some_and(|s| s.new),
            Fact::SessionUserKnown | Fact::UserKnown => f.user.is_some(),
            Fact::DeviceMatches => {
                f.session.is_some_and(|s| !s.new)
                    && !f
                        .risks
                        .session
                        .reasons
                        .iter()
                        .any(|c| DEVICE_REASONS.contains(&c.reason))
            }
            Fact::UserLearning => f.risks.learning,
            _ => false,
        }
    }

    fn integer(&self, fact: Fact) -> i64 {
        let f = self.facts;
        let now = f.request.now_secs;
        let wide = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        match fact {
            Fact::SessionAge => f
                .session
                .map_or(0, |s| wide(now.saturating_sub(s.first_seen))),
            Fact::SessionIdle => f
                .session
                .and_then(|s| s.last_seen)
                .map_or(0, |l| wide(now.saturating_sub(l))),
            Fact::SessionCredentials => wide(f.credentials as u64),
            Fact::SessionRequests => f.session.map_or(0, |s| wide(s.requests)),
            Fact::SessionStepUpAge => f
                .session
                .and_then(|s| s.stepped_up_at)
                .map_or(NEVER, |at| wide(now.saturating_sub(at))),
            Fact::ClientChainLength => wide(f.client.chain.len() as u64),
            Fact::ClientAsn => f.network.asn.map_or(0, i64::from),
            Fact::DeviceMajor => i64::from(f.device.major),
            Fact::RiskScore => i64::from(f.risk.score),
            Fact::LoginScore => f.risks.login.as_ref().map_or(0, |r| i64::from(r.score)),
            Fact::SessionRiskScore => i64::from(f.risks.session.score),
            Fact::EntityScore => i64::from(f.risks.entity.score),
            Fact::TimeHour | Fact::TimeWeekday => {
                let Ok(at) = jiff::Timestamp::from_second(wide(now)) else {
                    return 0;
                };
                let local = at.to_zoned(self.zone.clone());
                if fact == Fact::TimeHour {
                    i64::from(local.hour())
                } else {
                    i64::from(local.weekday().to_sunday_zero_offset())
                }
            }
            _ => 0,
        }
    }

    fn text(&self, fact: Fact) -> Text<'_> {
        let f = self.facts;
        let borrowed = |s| Text::Str(Cow::Borrowed(s));
        let r = &f.request.facts;
        match fact {
            Fact::RequestMethod => borrowed(r.method),
            Fact::RequestScheme => borrowed(r.scheme),
            // Lower case, whatever case the client wrote: `Host:
            // ADMIN.example.com` must not slip past a condition on
            // "admin.example.com" (routes ignore case too).
            Fact::RequestHost if r.host.bytes().any(|b| b.is_ascii_uppercase()) => {
                Text::Str(Cow::Owned(r.host.to_ascii_lowercase()))
            }
            Fact::RequestHost => borrowed(r.host),
            Fact::RequestPath => borrowed(r.path),
            Fact::RequestRoute => borrowed(r.route),
            Fact::RequestListener => borrowed(r.listener),
            Fact::ClientIp => addr(f.client.addr),
            Fact::ClientPeer => addr(f.client.peer),
            Fact::ClientProvider => {
                let mut out = Inline::new();
                if let Some(p) = &f.client.provider {
                    let _ = out.write_str(p.as_str());
                }
                Text::Inline(out)
            }
            Fact::ClientEgress => match f.client.egress {
                Some(ip) => addr(ip),
                None => borrowed(""),
            },
            Fact::ClientCountry => {
                let mut out = Inline::new();
                if let Some(c) = f.network.country {
                    for b in c {
                        let _ = out.write_char(char::from(b.to_ascii_uppercase()));
                    }
                }
                Text::Inline(out)
            }
            Fact::ClientNetworkChange => borrowed(f.network_change.map_or("", NetworkChange::code)),
            Fact::DeviceJa4 => {
                let mut out = Inline::new();
                if let Some(j) = &f.device.tls.ja4 {
                    // A JA4 is 36 bytes: it always fits.
                    let _ = write!(out, "{j}");
                }
                Text::Inline(out)
            }
            Fact::DeviceJa4A => {
                let mut out = Inline::new();
                if let Some(j) = &f.device.tls.ja4 {
                    let _ = out.write_str(j.a());
                }
                Text::Inline(out)
            }
            Fact::DeviceTlsSource => borrowed(f.device.tls.source.as_str()),
            Fact::DeviceBrowser => borrowed(f.device.browser.as_str()),
            Fact::DeviceOs => borrowed(f.device.platform.as_str()),
            Fact::DeviceClass => borrowed(f.device.class.as_str()),
            Fact::RiskLevel => borrowed(f.level.as_str()),
            Fact::RiskDefault => borrowed(f.default.as_str()),
            Fact::LoginLevel => {
                borrowed(f.risks.login.as_ref().map_or("low", |r| r.level.as_str()))
            }
            Fact::SessionRiskLevel => borrowed(f.risks.session.level.as_str()),
            Fact::EntityLevel => borrowed(f.risks.entity.level.as_str()),
            _ => borrowed(""),
        }
    }

    fn header(&self, name: &http::HeaderName) -> Text<'_> {
        let mut values = self.facts.request.headers.get_all(name).iter();
        let Some(first) = values.next() else {
            return Text::Str(Cow::Borrowed(""));
        };
        // Bytes that are not UTF-8 read as U+FFFD, never as an empty value:
        // one stray byte must not hide the rest of a header from a rule.
        let first = text_of(first.as_bytes());
        let Some(second) = values.next() else {
            return Text::Str(first);
        };
        let mut joined = first.into_owned();
        for v in std::iter::once(second).chain(values) {
            joined.push_str(", ");
            joined.push_str(&text_of(v.as_bytes()));
        }
        Text::Str(Cow::Owned(joined))
    }

    fn reasons(&self) -> u32 {
        let risks = self.facts.risks;
        let mut mask = 0;
        let all = risks
            .login
            .iter()
            .chain([&risks.session, &risks.entity])
            .flat_map(|r| r.reasons.iter());
        for c in all {
            if let Some(i) = Reason::ALL.iter().position(|r| *r == c.reason) {
                mask |= 1 << i;
            }
        }
        mask
    }
}

/// Bytes as text: borrowed when UTF-8 (checked by the fast validator), with
/// U+FFFD for what is not otherwise.
fn text_of(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Facts given as values by name: a test case, or `explain` input. A fact
/// not given has its "unknown" value (`""`, `0`, `false`, no reasons).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FactMap {
    /// Values by fact.
    pub values: Vec<(Fact, Value)>,
    /// Headers by lower-case name.
    pub headers: Vec<(String, String)>,
}

/// A fact's value in a [`FactMap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A `bool`.
    Bool(bool),
    /// An `int`.
    Int(i64),
    /// A `string`.
    String(String),
    /// `risk.reasons`: codes.
    List(Vec<String>),
}

impl FactMap {
    fn get(&self, fact: Fact) -> Option<&Value> {
        self.values.iter().find(|(f, _)| *f == fact).map(|(_, v)| v)
    }
}

impl FactSource for FactMap {
    fn boolean(&self, fact: Fact) -> bool {
        matches!(self.get(fact), Some(Value::Bool(true)))
    }

    fn integer(&self, fact: Fact) -> i64 {
        match self.get(fact) {
            Some(Value::Int(i)) => *i,
            _ => default_int(fact),
        }
    }

    fn text(&self, fact: Fact) -> Text<'_> {
        let s = match self.get(fact) {
            Some(Value::String(s)) => s.as_str(),
            _ => default_text(fact),
        };
        Text::Str(Cow::Borrowed(s))
    }

    fn header(&self, name: &http::HeaderName) -> Text<'_> {
        let s = self
            .headers
            .iter()
            .find(|(n, _)| n == name.as_str())
            .map_or("", |(_, v)| v.as_str());
        Text::Str(Cow::Borrowed(s))
    }

    fn reasons(&self) -> u32 {
        match self.get(Fact::RiskReasons) {
            Some(Value::List(codes)) => codes
                .iter()
                .filter_map(|c| reason_bit(c))
                .fold(0, |m, b| m | b),
            _ => 0,
        }
    }
}

/// `session.step_up_age` of a session that never passed a step-up (and
/// of a request without a session): older than any age a rule can write,
/// so that `session.step_up_age <= 900` is false and
/// `session.step_up_age > 900` true for it.
pub const NEVER: i64 = i64::MAX;

/// The value an int fact has when not known: 0, but for
/// `session.step_up_age`, whose 0 would mean "just now" ([`NEVER`]).
pub fn default_int(fact: Fact) -> i64 {
    match fact {
        Fact::SessionStepUpAge => NEVER,
        _ => 0,
    }
}

/// The value a string fact has when not known: `""`, but for the facts
/// that always have one of their values.
pub fn default_text(fact: Fact) -> &'static str {
    match fact {
        Fact::RiskLevel | Fact::LoginLevel | Fact::SessionRiskLevel | Fact::EntityLevel => "low",
        Fact::RiskDefault => "allow",
        Fact::RequestScheme => "http",
        Fact::DeviceTlsSource => "none",
        Fact::DeviceBrowser => "other",
        Fact::DeviceOs | Fact::DeviceClass => "unknown",
        _ => "",
    }
}
