//! What the scorer remembers of one session, and its compact record.
//!
//! [`SessionState`] is `Copy` and 104 bytes, so that with its key a session
//! costs at most 256 bytes in the store even when the hash table has just
//! doubled (measured in `docs/performance.md`). Its record form
//! ([`SessionState::encode`]) is a fixed 112-byte layout with a version
//! byte (version 1, 104 bytes without the request count and step-up time,
//! is still read), so that a node can snapshot
//! its sessions and the controller can sync them without a schema; decoding
//! checks every field and never panics on foreign bytes.
//!
//! A record is written at the oldest version that holds it: version 3 (the
//! same layout, bit 7 of the TLS source byte set: the JA4 kept is the
//! resumption-stable form) only for a baseline whose stable form differs
//! from its spec form; every other record is written as version 2, byte for
//! byte what the previous release wrote and reads. A release that does not
//! know version 3 refuses such a record as a version it does not read
//! ([`RecordError::Version`]) rather than compare a stable form as a spec
//! form.
//!
//! The layout is written by hand rather than through serde: it is fixed-size
//! (a snapshot's sessions are `n × 112` bytes, seekable), it is the wire format between
//! releases and nodes, so it must not move when a field's Rust type does,
//! and the engine's hot types (`Ja4`, `DeviceId`, `NetworkMark`) then need no
//! serde derives.

use std::fmt;
use std::num::NonZeroU64;

use crate::device::{DeviceId, DeviceSummary, HeaderShape};
use crate::fingerprint::{Ja4Form, TlsSource};
use crate::ja4::Ja4;
use crate::network::NetworkMark;
use crate::session::SessionKey;

/// A user as the risk engine knows them: a keyed hash of the name the app
/// or identity provider gave, so that profiles and records hold no names.
/// Never zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserKey(NonZeroU64);

/// Where a session was last placed by the geo databases, in 6 bytes:
/// hundredths of a degree (about a kilometre, well inside any geo-IP
/// accuracy radius) and the radius in km.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    pub lat: i16,
    pub lon: i16,
    pub accuracy_km: u16,
}

/// The scorer's memory of one session, 104 bytes. The device summary's
/// fields are kept flat so that none of its padding is paid twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionState {
    /// Device traits, header shape, TLS source and JA4 of the session's
    /// device; moved only by a browser update, a first TLS fingerprint or a
    /// confirmation.
    pub(crate) device_id: DeviceId,
    pub(crate) shape: HeaderShape,
    pub(crate) tls_source: TlsSource,
    /// The JA4 and its form (the form's niche keeps this 23 bytes, as
    /// `Option<Ja4>` alone is).
    pub(crate) ja4: Option<(Ja4, Ja4Form)>,
    /// The network last accepted.
    pub(crate) network: NetworkMark,
    /// Where that network was placed, when the geo stage knew.
    pub(crate) place: Option<Place>,
    /// The user the app or identity provider bound the session to.
    pub(crate) user: Option<UserKey>,
    /// First request, seconds since the Unix epoch.
    pub(crate) first_seen: u32,
    /// Last accepted request from the current network (refreshed at most
    /// once a minute: the write is what costs).
    pub(crate) last_seen: u32,
    /// Prefix hash of the network before the last move (0: none), and when
    /// the move was: a return to it soon after is interleaved use.
    pub(crate) previous: u32,
    pub(crate) moved_at: u32,
    /// Last request of any kind, for the store's idle expiry and eviction;
    /// not part of the record.
    pub(crate) touched: u32,
    /// Requests of the session the engine let through and committed
    /// (allowed, or allowed on a monitored route), saturating: what
    /// `session.requests` counts.
    pub(crate) requests: u32,
    /// When the session's user last passed a step-up on it
    /// ([`Scorer::confirm`](super::Scorer)), seconds since the Unix epoch;
    /// 0: never.
    pub(crate) stepped_up_at: u32,
    /// How many times the user had been revoked when the session was bound
    /// to them.
    pub(crate) generation: u16,
    /// [`Self::BASELINED`], [`Self::LOGIN_SCORED`], and in the top three
    /// bits the count of quick moves (see
    /// [`SessionState::moves`]).
    pub(crate) flags: u8,
}

/// A record that is not a session state this release can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Not [`SessionState::RECORD_LEN`] bytes.
    #[error("a session record is {expected} bytes, got {got}")]
    Length {
        /// Bytes expected.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// A version this release does not read.
    #[error("session record version {0} is not supported (expected 1, 2 or 3)")]
    Version(u8),
    /// A field holds a value no release writes.
    #[error("session record field {0} holds an invalid value")]
    Field(&'static str),
}

// === impl UserKey ===

impl UserKey {
    /// Derives the key of the user named `name` under the engine's secret:
    /// BLAKE3 in keyed mode with a domain of its own, so that a user key can
    /// never equal a session key.
    pub(crate) fn derive(secret: &[u8; 32], name: &str) -> Self {
        let mut h = blake3::Hasher::new_keyed(secret);
        h.update(b"user\0");
        h.update(name.as_bytes());
        let mut eight = [0u8; 8];
        eight.copy_from_slice(&h.finalize().as_bytes()[..8]);
        Self(NonZeroU64::new(u64::from_le_bytes(eight)).unwrap_or(NonZeroU64::MIN))
    }

    /// The key of the user named `name` in a fleet whose session hash key
    /// is `key`: what [`crate::Engine::user_key`] gives on every node with
    /// that key, for a controller that names users to its nodes.
    pub fn for_name(key: &crate::SessionHashKey, name: &str) -> Self {
        Self::derive(key.as_bytes(), name)
    }

    /// The key as a number, for records and logs (it reveals nothing of the
    /// name without the engine's secret).
    pub fn as_u64(self) -> u64 {
        self.0.get()
    }

    /// A key read back from a record; `None` for zero.
    pub fn from_u64(v: u64) -> Option<Self> {
        NonZeroU64::new(v).map(Self)
    }
}

impl fmt::Debug for UserKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserKey({:016x})", self.0)
    }
}

impl fmt::Display for UserKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

// === impl SessionState ===

impl SessionState {
    /// The session has a device and network baseline (a state can exist
    /// with only a user binding, before its first request).
    pub(crate) const BASELINED: u8 = 1;
    /// Login risk was judged for the session.
    pub(crate) const LOGIN_SCORED: u8 = 2;
    /// The app issued the session (its `Set-Cookie` was seen) or its user
    /// proved themselves on it: not a value a client made up. Its
    /// revocation goes to the main budget.
    pub(crate) const VOUCHED: u8 = 4;
    const HAS_PLACE: u8 = 8;
    const HAS_JA4: u8 = 16;
    const STORED_FLAGS: u8 = Self::BASELINED | Self::LOGIN_SCORED | Self::VOUCHED;
    const MOVES_SHIFT: u8 = 5;
    /// Most quick moves counted.
    pub(crate) const MAX_MOVES: u8 = 7;

    /// Bytes of [`SessionState::encode`]'s record: the session key and the
    /// state.
    pub const RECORD_LEN: usize = 112;
    /// Bytes of a version 1 record (before the request count and the
    /// step-up time), which [`SessionState::decode`] still reads: snapshots
    /// written by the previous release stay loadable.
    pub const RECORD_LEN_V1: usize = 104;
    const VERSION: u8 = 2;
    const VERSION_1: u8 = 1;
    /// Version 2's layout with the JA4's form in the TLS source byte
    /// ([`Self::JA4_STABLE_SOURCE`]): written only for a stable-form JA4.
    const VERSION_3: u8 = 3;
    /// Bit of the TLS source byte that marks, in a version 3 record, a JA4
    /// kept in the resumption-stable form.
    const JA4_STABLE_SOURCE: u8 = 0x80;

    /// A state holding only a user binding, for a session not seen yet.
    pub(crate) fn bound(user: UserKey, now: u32) -> Self {
        Self {
            user: Some(user),
            ..Self::new(&DeviceSummary::NONE, NetworkMark::default(), None, now)
        }
    }

    /// A fresh baseline of this device and network.
    pub(crate) fn new(
        device: &DeviceSummary,
        network: NetworkMark,
        place: Option<Place>,
        now: u32,
    ) -> Self {
        Self {
            device_id: device.id,
            shape: device.shape,
            tls_source: device.tls_source,
            ja4: device.ja4.map(|j| (j, device.ja4_form)),
            network,
            place,
            user: None,
            first_seen: now,
            last_seen: now,
            previous: 0,
            moved_at: 0,
            touched: now,
            requests: 0,
            stepped_up_at: 0,
            generation: 0,
            flags: 0,
        }
    }

    /// The session's device.
    pub fn device(&self) -> DeviceSummary {
        DeviceSummary {
            id: self.device_id,
            shape: self.shape,
            tls_source: self.tls_source,
            ja4: self.ja4.map(|(j, _)| j),
            ja4_form: self.ja4.map_or(Ja4Form::Spec, |(_, f)| f),
        }
    }

    pub(crate) fn set_device(&mut self, device: &DeviceSummary) {
        self.device_id = device.id;
        self.shape = device.shape;
        self.set_tls(device);
    }

    /// Takes `device`'s TLS source and JA4 (with its form), not its traits.
    pub(crate) fn set_tls(&mut self, device: &DeviceSummary) {
        self.tls_source = device.tls_source;
        self.ja4 = device.ja4.map(|j| (j, device.ja4_form));
    }

    pub(crate) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Moves to another prefix in a row, each soon after the one before:
    /// a session hopping networks the way rotating proxies do.
    pub(crate) fn moves(&self) -> u8 {
        self.flags >> Self::MOVES_SHIFT
    }

    pub(crate) fn set_moves(&mut self, n: u8) {
        self.flags =
            (self.flags & Self::STORED_FLAGS) | (n.min(Self::MAX_MOVES) << Self::MOVES_SHIFT);
    }

    /// The network the session last accepted: hashes of its client,
    /// prefix, provider and egress, and its ASN and country as looked up.
    pub fn network(&self) -> NetworkMark {
        self.network
    }

    /// The user the session is bound to.
    pub fn user(&self) -> Option<UserKey> {
        self.user
    }

    /// First request, seconds since the Unix epoch.
    pub fn first_seen(&self) -> u64 {
        u64::from(self.first_seen)
    }

    /// Requests of the session the engine let through (committed as
    /// allowed), saturating at `u32::MAX`.
    pub fn requests(&self) -> u32 {
        self.requests
    }

    /// When the session's user last passed a step-up on it, seconds since
    /// the Unix epoch; `None`: never.
    pub fn stepped_up_at(&self) -> Option<u64> {
        (self.stepped_up_at != 0).then_some(u64::from(self.stepped_up_at))
    }

    /// The session key and this state as a fixed-layout record (little
    /// endian): key (16), version, flags, device id (8), header shape, TLS
    /// source, JA4 (22), client, prefix, provider, egress, ASN hashes (4
    /// each), country (2), latitude, longitude (i16, 1/100 degree),
    /// accuracy (u16), user (8), first seen, last seen, previous prefix,
    /// moved at (4 each), the user's revocation count at binding (u16),
    /// then (version 2) the request count and the step-up time (4 each,
    /// 0: never). Version 3 when the JA4 is kept in the resumption-stable
    /// form (bit 7 of the TLS source byte), version 2 otherwise.
    pub fn encode(&self, key: &SessionKey) -> [u8; Self::RECORD_LEN] {
        let mut w = Writer {
            buf: [0; Self::RECORD_LEN],
            at: 0,
        };
        let mut flags = self.flags & (Self::STORED_FLAGS | Self::MAX_MOVES << Self::MOVES_SHIFT);
        if self.place.is_some() {
            flags |= Self::HAS_PLACE;
        }
        if self.ja4.is_some() {
            flags |= Self::HAS_JA4;
        }
        let (version, source) = match self.ja4 {
            Some((_, Ja4Form::Stable)) => (
                Self::VERSION_3,
                self.tls_source.to_u8() | Self::JA4_STABLE_SOURCE,
            ),
            _ => (Self::VERSION, self.tls_source.to_u8()),
        };
        w.put(key.as_bytes());
        w.put(&[version, flags]);
        w.put(&self.device_id.0.to_le_bytes());
        w.put(&[self.shape.bits(), source]);
        w.put(&self.ja4.map_or([0; 22], |(j, _)| j.to_raw()));
        let n = &self.network;
        for v in [n.client, n.prefix, n.provider, n.egress, n.asn] {
            w.put(&v.to_le_bytes());
        }
        w.put(&n.country);
        let place = self.place.unwrap_or(Place {
            lat: 0,
            lon: 0,
            accuracy_km: 0,
        });
        w.put(&place.lat.to_le_bytes());
        w.put(&place.lon.to_le_bytes());
        w.put(&place.accuracy_km.to_le_bytes());
        w.put(&self.user.map_or(0, UserKey::as_u64).to_le_bytes());
        for v in [
            self.first_seen,
            self.last_seen,
            self.previous,
            self.moved_at,
        ] {
            w.put(&v.to_le_bytes());
        }
        w.put(&self.generation.to_le_bytes());
        w.put(&self.requests.to_le_bytes());
        w.put(&self.stepped_up_at.to_le_bytes());
        w.buf
    }

    /// `record` bound to `user` instead of its own (re-encoded at the
    /// version [`SessionState::encode`] picks): the fleet's controller joins one node's
    /// baseline of a session with another node's binding of it.
    pub fn with_user(
        record: &[u8],
        user: Option<UserKey>,
    ) -> Result<[u8; Self::RECORD_LEN], RecordError> {
        let (key, mut state) = Self::decode(record)?;
        state.user = user;
        Ok(state.encode(&key))
    }

    /// Seconds since the Unix epoch of the session's last accepted request
    /// as recorded.
    pub fn last_seen(&self) -> u64 {
        u64::from(self.last_seen)
    }

    /// Reads [`SessionState::encode`]'s record back, checking every field.
    /// A version 1 record ([`Self::RECORD_LEN_V1`] bytes) reads as a
    /// session with no request counted and no step-up.
    pub fn decode(record: &[u8]) -> Result<(SessionKey, Self), RecordError> {
        let expected = match record.get(16) {
            Some(&Self::VERSION_1) => Self::RECORD_LEN_V1,
            _ => Self::RECORD_LEN,
        };
        if record.len() != expected {
            return Err(RecordError::Length {
                expected,
                got: record.len(),
            });
        }
        let mut r = Reader { buf: record };
        let key = SessionKey::from_bytes(r.take::<16>());
        let [version, flags] = r.take::<2>();
        if ![Self::VERSION_1, Self::VERSION, Self::VERSION_3].contains(&version) {
            return Err(RecordError::Version(version));
        }
        let device_id = DeviceId(u64::from_le_bytes(r.take()));
        let [shape, source] = r.take::<2>();
        if HeaderShape::from_bits(shape).bits() != shape {
            return Err(RecordError::Field("header shape"));
        }
        // Only version 3 has the form bit; a stable form needs a JA4.
        let stable = version == Self::VERSION_3 && source & Self::JA4_STABLE_SOURCE != 0;
        if stable && flags & Self::HAS_JA4 == 0 {
            return Err(RecordError::Field("tls source"));
        }
        let source = if stable {
            source & !Self::JA4_STABLE_SOURCE
        } else {
            source
        };
        let tls_source = TlsSource::from_u8(source).ok_or(RecordError::Field("tls source"))?;
        let raw = r.take::<22>();
        let ja4 = if flags & Self::HAS_JA4 != 0 {
            let form = if stable {
                Ja4Form::Stable
            } else {
                Ja4Form::Spec
            };
            Some((Ja4::from_raw(&raw).ok_or(RecordError::Field("ja4"))?, form))
        } else {
            None
        };
        let mut u32s = || u32::from_le_bytes(r.take());
        let network = NetworkMark {
            client: u32s(),
            prefix: u32s(),
            provider: u32s(),
            egress: u32s(),
            asn: u32s(),
            country: r.take(),
        };
        if network.country != [0; 2] && !network.country.iter().all(u8::is_ascii_uppercase) {
            return Err(RecordError::Field("country"));
        }
        let lat = i16::from_le_bytes(r.take());
        let lon = i16::from_le_bytes(r.take());
        let accuracy_km = u16::from_le_bytes(r.take());
        let place = if flags & Self::HAS_PLACE != 0 {
            if lat.unsigned_abs() > 9000 || lon.unsigned_abs() > 18000 {
                return Err(RecordError::Field("place"));
            }
            Some(Place {
                lat,
                lon,
                accuracy_km,
            })
        } else {
            None
        };
        let user = UserKey::from_u64(u64::from_le_bytes(r.take()));
        let mut u32s = || u32::from_le_bytes(r.take());
        let (first_seen, last_seen, previous, moved_at) = (u32s(), u32s(), u32s(), u32s());
        let generation = u16::from_le_bytes(r.take());
        // Version 1 ends here: the reader yields zeros past its end.
        let (requests, stepped_up_at) = if version != Self::VERSION_1 {
            let mut u32s = || u32::from_le_bytes(r.take());
            (u32s(), u32s())
        } else {
            (0, 0)
        };
        let state = SessionState {
            device_id,
            shape: HeaderShape::from_bits(shape),
            tls_source,
            ja4,
            network,
            place,
            user,
            first_seen,
            last_seen,
            previous,
            moved_at,
            touched: last_seen,
            requests,
            stepped_up_at,
            generation,
            flags: flags & (Self::STORED_FLAGS | Self::MAX_MOVES << Self::MOVES_SHIFT),
        };
        Ok((key, state))
    }
}

/// Seconds since the epoch as the `u32` records keep (good until 2106;
/// later saturates rather than wraps).
pub(crate) fn secs32(secs: u64) -> u32 {
    u32::try_from(secs).unwrap_or(u32::MAX)
}

struct Writer {
    buf: [u8; SessionState::RECORD_LEN],
    at: usize,
}

impl Writer {
    fn put(&mut self, bytes: &[u8]) {
        // The layout's fields add up to RECORD_LEN exactly (tested), so the
        // range is always in bounds; `get_mut` keeps it panic-free anyway.
        if let Some(dst) = self.buf.get_mut(self.at..self.at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
        self.at += bytes.len();
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    /// The next `N` bytes. The caller checked the record's length, and the
    /// fields add up to it; a short buffer yields zeros, never a panic.
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some((head, rest)) = self.buf.split_at_checked(N) {
            out.copy_from_slice(head);
            self.buf = rest;
        }
        out
    }
}
