//! The fleet sync protocol, version 1: what a controller streams to edge
//! nodes and what nodes post back (`docs/controller.md`, Sync protocol).
//!
//! Plain data with serde, no I/O: the controller and the proxy share these
//! types, so that both ends read and write one format. Every key is a keyed
//! hash made with the fleet's one session hash key; nothing here carries a
//! credential or, in this version, a user's name.
//!
//! The stream is newline-delimited JSON ([`Frame`] per line, at most
//! [`MAX_LINE_BYTES`]); [`read_frame`] is its bounded parser. Numbers in a
//! stream are the controller's change sequence: contiguous, starting at 1,
//! so that a node that sees `n + 2` after `n` knows it missed one.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
///
/// Version 2 added session baselines, user detection counts and node
/// detections; version 3 users' histories and the population model
/// ([`Change::UserProfile`], [`Change::Population`],
/// [`NodeEventKind::UserLearned`]), devices and networks trusted for a
/// user and false positives reported at the controller, rule bundles
/// ([`Change::RulesBundle`], [`NodeEventKind::RulesBundle`]); version 4
/// user-level step-up ([`Change::UserStepUp`]) and identity provider
/// sessions learnt at step-ups ([`NodeEventKind::IdpSession`]); version 5
/// sessions' rotating bindings ([`Change::SessionBinding`],
/// [`NodeEventKind::SessionBinding`]); within version 5, a detection's
/// request facts and nodes' counts per minute ([`NodeEventKind::Counts`]).
/// The rules that keep a
/// fleet mid-upgrade working
/// (`docs/controller.md`, Versions):
///
/// - A node names its version in the [`VERSION_HEADER`] of its sync request
///   (absent: 1); the controller answers in that version if it speaks it,
///   else in its own older one ([`Frame::Hello`]'s `v`), and a node reads
///   every version up to its own.
/// - The controller streams to a node of an older version each change that
///   version does not know as a change it does ([`Change::for_version`]):
///   numbers stay contiguous, nothing is skipped.
/// - A node posts to a controller of an older version only the events
///   that version knows ([`NodeEventKind::since`]), in an [`EventBatch`]
///   of that version.
/// - Change kinds, event kinds and frame types added within a version are
///   read by older builds of it as [`Change::Unknown`],
///   [`NodeEventKind::Unknown`] and [`Frame::Unknown`].
pub const VERSION: u32 = 5;

/// The request header in which a node names the protocol version it
/// speaks.
pub const VERSION_HEADER: &str = "vigil-fleet-version";

/// Longest line of a stream or event batch accepted.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// Most changes in one [`Frame::Changes`] or snapshot chunk.
pub const MAX_BATCH: usize = 1_000;

/// Most events in one posted [`EventBatch`].
pub const MAX_EVENTS: usize = 1_000;

/// A session key: 16 bytes, written as 32 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub [u8; 16]);

/// An identity provider's session (its issuer and the `sid` of an ID
/// token) as a keyed hash under the fleet's user key: 16 bytes, written as
/// 32 lower-case hex digits. The raw `sid` never leaves the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdpSessionId(pub [u8; 16]);

/// A user key: 8 bytes (non-zero), written as 16 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub u64);

/// One line of the sync stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Frame {
    /// First line: who answers, and where its log stands.
    Hello {
        /// The protocol version the controller speaks.
        v: u32,
        /// The newest sequence committed.
        head: u64,
        /// The oldest sequence still in the log; a node behind it gets a
        /// snapshot.
        oldest: u64,
        /// Whether a snapshot follows (the node's cursor was too old,
        /// unknown, or zero).
        snapshot: bool,
    },
    /// Part of a snapshot: state as of `seq`, in chunks.
    Snapshot {
        /// The sequence the snapshot is as of.
        seq: u64,
        /// Records of the state.
        changes: Vec<Change>,
    },
    /// The snapshot is whole: the node's state is as of `seq`; deltas
    /// after it follow.
    SnapshotEnd {
        /// The sequence the snapshot is as of.
        seq: u64,
    },
    /// Changes `first`, `first + 1`, … in order.
    Changes {
        /// The sequence of the first change.
        first: u64,
        /// The changes.
        changes: Vec<Change>,
    },
    /// Nothing new; where the log stands, so the node can tell its lag and
    /// that the stream is alive.
    Heartbeat {
        /// The newest sequence committed.
        head: u64,
    },
    /// A frame type of a later version: carries no change, so a node
    /// skips it (the versioning rule: new frame types never carry
    /// changes an older node must apply).
    #[serde(other)]
    Unknown,
}

/// A change to the fleet's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A session is ended everywhere.
    SessionRevoked {
        /// The session.
        session: SessionId,
        /// When it was ended (seconds since the Unix epoch).
        at: u64,
        /// Whether the revocation is vouched for: an operator's, or a
        /// node's for a session bound to a user. A node keeps a vouched
        /// revocation in its main budget, which nothing evicts but age;
        /// any other (a cookie a client could have made up, revoked by a
        /// decision) in the budget of its own for those, so that a flood
        /// of made-up cookies revoked on one node cannot push real
        /// revocations out on every node.
        #[serde(default)]
        vouched: bool,
    },
    /// Every session of a user bound so far is ended everywhere (universal
    /// logout at the edge).
    UserRevoked {
        /// The user.
        user: UserId,
        /// When (seconds since the Unix epoch).
        at: u64,
    },
    /// A session's state as a node recorded it (the engine's session
    /// record): its baseline (device, network, first seen) and its user.
    /// A node that has not seen the session takes it as its own; one that
    /// has keeps the earliest baseline, or this one when `confirmed` (the
    /// user proved themselves on it). A thief who lands first on another
    /// node is judged against the owner's baseline.
    SessionBaseline {
        /// The engine's session record (key included).
        record: Record,
        /// The session's user passed a step-up on this baseline.
        #[serde(default)]
        confirmed: bool,
    },
    /// How many of a user's sessions were caught (enforced detections)
    /// across the fleet recently, until `until`: entity risk on every
    /// node.
    UserDetections {
        /// The user.
        user: UserId,
        /// Detections counted (the engine weighs at most 3).
        count: u8,
        /// When the count lapses (seconds since the Unix epoch).
        until: u64,
    },
    /// A user's entity risk set from outside (an operator, a partner):
    /// `points` until `until`; zero points clears it.
    UserRisk {
        /// The user.
        user: UserId,
        /// Entity-risk points, 0 to 100.
        points: u8,
        /// Until when (seconds since the Unix epoch).
        until: u64,
        /// When it was set.
        at: u64,
    },
    /// A user's data is erased everywhere: every session bound to them is
    /// ended (by its key alone), and what a node kept of them (history,
    /// flags) forgotten.
    UserErased {
        /// The user.
        user: UserId,
        /// When (seconds since the Unix epoch).
        at: u64,
    },
    /// A user's history as the fleet learnt it (version 3): the sum of
    /// every observation the nodes posted ([`NodeEventKind::UserLearned`]),
    /// as the engine's fixed profile record. A node joins it with its own
    /// (the maximum of each number: `docs/risk.md`, fleet-wide history);
    /// a record of another length is skipped.
    UserProfile {
        /// The user.
        user: UserId,
        /// The engine's profile record ([`vigil_engine` `ProfileRecord`],
        /// 288 bytes).
        record: Record,
    },
    /// Counters of the fleet's population model (version 3): per feature
    /// the total sightings, and counters by number (feature × 65,536 +
    /// row × 16,384 + column) with their counts, at most
    /// [`MAX_POPULATION_COUNTERS`]. A node takes the larger of each count
    /// and total; a counter out of range is skipped.
    Population {
        /// Total sightings per feature, in the model's order (at most 6).
        totals: Vec<u64>,
        /// `(counter, count)` pairs.
        counters: Vec<(u32, u32)>,
    },
    /// An operator trusted a device for a user, fleet-wide: on every node
    /// the device (whatever its browser version) costs the user no model
    /// points, as the node's own `trust-device` call does. Kept in
    /// snapshots. Since version 3.
    DeviceTrusted {
        /// The user.
        user: UserId,
        /// The device as nodes log it.
        device: DeviceId,
        /// When it was trusted (seconds since the Unix epoch).
        at: u64,
    },
    /// An operator trusted a network for a user, fleet-wide: on every node
    /// it is familiar to the user and costs no model points, as the node's
    /// own `trust-network` call does. Kept in snapshots. Since version 3.
    NetworkTrusted {
        /// The user.
        user: UserId,
        /// The network.
        network: TrustedNetwork,
        /// When it was trusted (seconds since the Unix epoch).
        at: u64,
    },
    /// An operator reported the refusal with this reference id a false
    /// positive: the node that refused it (and still holds the reference)
    /// makes the refused request's device and network the session's and
    /// trusts them for its user, as its own `false-positive` call does,
    /// and posts the session's new baseline `confirmed`
    /// ([`NodeEventKind::SessionBaseline`]), which every node takes;
    /// every other node has no such reference and does nothing with this
    /// change. The controller streams with it, from the facts the
    /// detection was reported with, [`Change::DeviceTrusted`] and
    /// [`Change::NetworkTrusted`] for its user (none when it has no
    /// facts), and the user's lowered detection count. Not in snapshots:
    /// it acts once, on the node's own state. Since version 3.
    FalsePositive {
        /// The decision's reference id (at most 64 bytes).
        reference: String,
        /// When it was reported (seconds since the Unix epoch).
        at: u64,
    },
    /// The rule bundle in force on every node that takes its rules from
    /// the controller (`[rules] source = "controller"`): a whole rule
    /// file, validated at the controller, published (or rolled back to) by
    /// an operator. Only the latest one matters; it replaces the node's
    /// rules whole once it compiles against the node's own config. Always
    /// a frame of its own ([`Change::travels_alone`]); its text is at most
    /// [`MAX_RULES_BYTES`] and its frame fits in [`MAX_LINE_BYTES`].
    /// Since version 3.
    RulesBundle {
        /// The bundle's version: 1, 2, … in order of publication; a
        /// rollback publishes an earlier version again under its number.
        version: u64,
        /// SHA-256 of `text`, 64 lower-case hex digits.
        sha256: String,
        /// When the version was first published (seconds since the Unix
        /// epoch).
        created_at: u64,
        /// The rule file's text (TOML, `docs/rules.md`).
        text: String,
    },
    /// Every session of a user must pass a step-up (a fresh sign-in at the
    /// identity provider) at its next request, unless it passed one at or
    /// after `at`: an operator's call, or a partner's signal (a changed
    /// credential, a lowered assurance level). Sessions first seen after
    /// `at` are not affected (the user signed in afresh). Only the latest
    /// per user matters; kept in snapshots. Since version 4.
    UserStepUp {
        /// The user.
        user: UserId,
        /// When the step-up was asked for (seconds since the Unix epoch).
        at: u64,
    },
    /// A session bound to a DBSC key (`docs/bound-sessions.md`, DBSC at
    /// the edge): the registration a node verified, as the controller
    /// keeps it (the first for the session). A node binds the session to
    /// the key unless it holds another binding for it. Since version 5
    /// (released with it: a version 4 controller would take a node's
    /// registration as an unknown kind and lose it silently, so a node
    /// keeps it until its controller speaks 5); older nodes get a change
    /// that does nothing and none in snapshots.
    DbscBound {
        /// The binding.
        binding: DbscBinding,
    },
    /// A session's rotating binding as the fleet knows it: the latest
    /// issuance presented on any node, and whether two holders were seen
    /// (`docs/bound-sessions.md`, "Across the fleet"). A node joins it
    /// with its own state (never lowering a generation, never undoing a
    /// mark); the controller keeps the join of every node's records, one
    /// per session, in snapshots too. Since version 5.
    SessionBinding(BindingRecord),
    /// A change kind of a later version. A node skips it but counts its
    /// number (the sequence stays contiguous): kinds are only ever added,
    /// each one something an older node can do without.
    #[serde(other)]
    Unknown,
}

/// A DBSC registration as the fleet carries it: made once per DBSC
/// session, never changed after. No credential: a public key and keyed
/// hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbscBinding {
    /// The app session bound (its session key).
    pub session: SessionId,
    /// The DBSC session id given to the browser (16 bytes).
    pub id: SessionId,
    /// When the session inherited another's binding (the app rotated its
    /// cookie, or one response opened two session cookies): the session
    /// whose registration it is. `None` for the registered session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<SessionId>,
    /// The public key registered, in Vigil's own encoding (`1 ‖ SEC1
    /// point` for P-256, `2 ‖ len(e) ‖ e ‖ n` for RSA), at most
    /// [`MAX_DBSC_KEY_BYTES`].
    pub key: DbscKey,
    /// When it was registered (seconds since the Unix epoch).
    pub at: u64,
}

/// A DBSC public key carried opaquely: lower-case hex of at most
/// [`MAX_DBSC_KEY_BYTES`] bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbscKey(pub Vec<u8>);

/// Longest DBSC key carried: an 8192-bit RSA modulus, a 4-byte exponent,
/// and the two bytes of the encoding.
pub const MAX_DBSC_KEY_BYTES: usize = 1024 + 4 + 2;

impl DbscKey {
    /// Reads lower-case hex of 1 to [`MAX_DBSC_KEY_BYTES`] bytes.
    pub fn parse(s: &str) -> Option<Self> {
        let bytes = s.as_bytes();
        if bytes.is_empty()
            || !bytes.len().is_multiple_of(2)
            || bytes.len() > MAX_DBSC_KEY_BYTES * 2
        {
            return None;
        }
        bytes
            .chunks_exact(2)
            .map(|pair| Some(hex_digit(pair[0])? << 4 | hex_digit(pair[1])?))
            .collect::<Option<Vec<u8>>>()
            .map(Self)
    }
}

impl fmt::Display for DbscKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// A session's rotating binding ([`Change::SessionBinding`],
/// [`NodeEventKind::SessionBinding`]): the engine's `FleetBinding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingRecord {
    /// The session.
    pub session: SessionId,
    /// The generation, from 1.
    pub generation: u32,
    /// Its issuance's nonce (not 0).
    pub nonce: u32,
    /// The previous generation's nonce (0: not known).
    pub previous_nonce: u32,
    /// When the generation was issued (seconds since the Unix epoch).
    pub issued_at: u32,
    /// When it was first presented (seconds since the Unix epoch; 0: not
    /// yet, in a record of a mark).
    pub presented_at: u32,
    /// Two holders of the session were seen.
    pub compromised: bool,
}

/// Most counters in one [`Change::Population`]: its line stays under a
/// kilobyte, so that a frame of [`MAX_BATCH`] changes stays under
/// [`MAX_LINE_BYTES`].
pub const MAX_POPULATION_COUNTERS: usize = 40;

/// Most totals in one [`Change::Population`]: one per feature of the model.
pub const POPULATION_FEATURES: usize = 6;
/// A device as nodes log it: its traits' id, 8 bytes, written as 16
/// lower-case hex digits (the form a node's `trust-device` call takes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub u64);

/// A country: two upper-case ASCII letters (ISO 3166-1 alpha-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country(pub [u8; 2]);

/// A network trusted for a user: one autonomous system, the /24 (IPv4) or
/// /48 (IPv6) holding an address, or a country.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TrustedNetwork {
    /// Every address of an autonomous system (never 0).
    Asn {
        /// The ASN.
        asn: u32,
    },
    /// The /24 or /48 holding this address (the controller sends the
    /// prefix's first address).
    Prefix {
        /// The address.
        prefix: std::net::IpAddr,
    },
    /// A country: it costs the user no model points; its networks are not
    /// made familiar.
    Country {
        /// The country.
        country: Country,
    },
    /// A network type of a later build: a node does without it.
    #[serde(other)]
    Unknown,
}

/// What a node posts: events of its engine, each with an id unique to the
/// node, so that a batch sent twice changes nothing the second time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventBatch {
    /// The protocol version the node speaks.
    pub v: u32,
    /// The events, oldest first.
    pub events: Vec<NodeEvent>,
}

/// One event from a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEvent {
    /// Unique per node: the node's own counter or random id.
    pub id: String,
    /// What happened.
    #[serde(flatten)]
    pub kind: NodeEventKind,
}

/// What a node tells the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NodeEventKind {
    /// The node's engine ended a session by a decision (the request's
    /// facts were judged `revoke`).
    SessionRevoked {
        /// The session.
        session: SessionId,
        /// Its user, when bound.
        user: Option<UserId>,
        /// The decision's reference id, the evidence's handle: the
        /// reference of this node's enforced `revoke` detection of this
        /// session ([`NodeEventKind::Detection`]), posted before it (earlier
        /// in the batch or in an earlier one). A controller refuses a
        /// revocation without it (`docs/controller.md`, Intake rules).
        reference: Option<String>,
        /// When.
        at: u64,
    },
    /// A session's state after this node saw it first, bound it to a user
    /// or saw its user pass a step-up (`confirmed`): its engine record.
    SessionBaseline {
        /// The engine's session record.
        record: Record,
        /// The user passed a step-up on this baseline.
        #[serde(default)]
        confirmed: bool,
        /// Confirmed by an operator's false positive, not by the user's
        /// step-up: every node takes it as it takes a step-up's, and the
        /// controller labels nothing `step_up_passed` for it (the user
        /// proved nothing). Left out when false; a controller of an
        /// earlier build ignores it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        false_positive: bool,
        /// The reference of this node's refusal (a block) that the user
        /// disputed ("it was me" on the block page) and answered with this
        /// step-up: the controller labels that detection with the user's
        /// word. A reference as on the refusal page (16 hex digits); left
        /// out when none, and a controller of an earlier build ignores it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disputed: Option<String>,
    },
    /// A request was refused (or, on a monitoring route, would have been):
    /// the decision's facts, the evidence a detection is counted on.
    Detection {
        /// The decision's reference id (the one on the refusal page).
        reference: String,
        /// The session, when the request had one.
        session: Option<SessionId>,
        /// Its user, when bound.
        user: Option<UserId>,
        /// The route's name.
        route: String,
        /// The rule that decided, if a rule did.
        rule: Option<String>,
        /// The action decided.
        action: String,
        /// Whether it was carried out.
        enforced: bool,
        /// The overall risk score, 0 to 100.
        score: u8,
        /// The reason codes with their points.
        reasons: Vec<(String, u8)>,
        /// When.
        at: u64,
        /// What the decision saw of the request: client address and
        /// chain, device and JA4, network. Absent from a node of an
        /// earlier build (and then not written: its batch reads the same
        /// as before); a controller of an earlier build skips it as an
        /// unknown field. Added within version 5.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        facts: Option<Box<RequestFacts>>,
    },
    /// The node's engine learnt from an allowed request of a bound user
    /// (version 3): the request's feature values, folded or hashed to
    /// `u32`s (0: unknown), and which of them it learnt. The controller
    /// adds it to the user's history and the population model, and
    /// streams both ([`Change::UserProfile`], [`Change::Population`]).
    UserLearned {
        /// The user.
        user: UserId,
        /// Client prefix, ASN, country, device, browser, platform.
        values: [u32; POPULATION_FEATURES],
        /// Bit `k` set: feature `k` was learnt (below `0x40`).
        which: u8,
        /// The first request of a session of the user.
        new_session: bool,
        /// An operator trusted the values (a false positive's feedback).
        #[serde(default)]
        trusted: bool,
        /// When (seconds since the Unix epoch).
        at: u64,
    },
    /// What the node did with a rule bundle ([`Change::RulesBundle`]):
    /// applied it (it is the node's rules now), or rejected it (it does not
    /// compile against the node's config; the node's rules are unchanged).
    /// Since version 3.
    RulesBundle {
        /// The bundle's version.
        version: u64,
        /// Its SHA-256, 64 lower-case hex digits.
        sha256: String,
        /// Applied (`true`) or rejected.
        applied: bool,
        /// Why it was rejected: each problem as `vigil-proxy check` words
        /// it (at most [`MAX_RULES_PROBLEMS`], each at most
        /// [`MAX_RULES_PROBLEM_BYTES`]); empty when applied.
        #[serde(default)]
        problems: Vec<String>,
        /// When (seconds since the Unix epoch).
        at: u64,
    },
    /// The session's user passed a step-up at the identity provider whose
    /// ID token named the provider's session (`sid`): the controller maps
    /// that provider session to this Vigil session, so that a provider's
    /// logout of it (a CAEP `session-revoked` naming the session) ends
    /// this one alone. Since version 4.
    IdpSession {
        /// The Vigil session.
        session: SessionId,
        /// Its user.
        user: UserId,
        /// The provider's session, hashed with its issuer.
        idp_session: IdpSessionId,
        /// When (seconds since the Unix epoch).
        at: u64,
    },
    /// This node verified a DBSC registration (or passed a binding on to
    /// a session the app opened on a proven request). The controller keeps
    /// the first binding of each session and streams it
    /// ([`Change::DbscBound`]); a different one for a session it holds a
    /// binding of is refused. Since version 5.
    DbscBound {
        /// The binding.
        binding: DbscBinding,
    },
    /// A session's rotating binding advanced on the node (a generation
    /// presented there first, or learnt from another node's seal) or was
    /// marked compromised: the node's state of it, at most one per session
    /// pending. Since version 5.
    SessionBinding(BindingRecord),
    /// The node's counts of one minute: requests judged by action, by
    /// reason code, and each rule's matches ([`NodeCounts`]). Added within
    /// version 5: a controller of an earlier build of it takes it as
    /// [`NodeEventKind::Unknown`] (its id remembered, nothing done).
    Counts(NodeCounts),
    /// An event kind of a later version: the controller takes it (the id
    /// is remembered) and does nothing with it.
    #[serde(other)]
    Unknown,
}

/// What a decision saw of its request, as a node reports it with a
/// detection ([`NodeEventKind::Detection`]): the facts an operator needs to
/// tell a thief from the user (`docs/dashboard.md`, Detection page). No
/// credential, no header value but addresses, and every field bounded
/// ([`RequestFacts::problem`]): a controller refuses a detection whose
/// facts are not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFacts {
    /// The client address the request was judged as.
    pub client: std::net::IpAddr,
    /// The TCP peer that sent it.
    pub peer: std::net::IpAddr,
    /// The forwarding chain as read (the header the node believes),
    /// leftmost (farthest from the node) first, without the peer; an entry
    /// naming no address (`unknown`, an obfuscated identifier, a malformed
    /// entry) as `null`. At most [`MAX_CHAIN_HOPS`]: the rightmost.
    #[serde(default)]
    pub chain: Vec<Option<std::net::IpAddr>>,
    /// Entries of the chain were left out: the node read at most its
    /// `max_hops`, and tells at most [`MAX_CHAIN_HOPS`].
    #[serde(default)]
    pub chain_truncated: bool,
    /// The trusted provider (its set's name in the node's config) the
    /// client came through; `None` when it came directly.
    #[serde(default)]
    pub provider: Option<String>,
    /// The connection's JA4 (`a_b_c`, as the engine writes it), when known.
    #[serde(default)]
    pub ja4: Option<String>,
    /// The device as nodes log it (the traits' id).
    pub device: DeviceId,
    /// The browser family as the engine names it (`chrome`, `firefox`, …).
    pub browser: String,
    /// The browser's major version (0: unknown).
    #[serde(default)]
    pub major: u16,
    /// The platform as the engine names it (`windows`, `ios`, …).
    #[serde(default)]
    pub platform: String,
    /// The client's country from the node's geo data, when known.
    #[serde(default)]
    pub country: Option<Country>,
    /// The client's autonomous system, when known.
    #[serde(default)]
    pub asn: Option<u32>,
}

/// What a node counted in one minute ([`NodeEventKind::Counts`]): every
/// request judged, by action; the reason codes behind the decisions; each
/// rule's matches. Counts, not events: no session, user or address.
///
/// Keyed at the controller by node, `run`, `minute` and each entry's kind
/// and name, and a second post of the same key *replaces* the first: a
/// batch posted again (no ack reached the node), or the same counts under
/// another event id, never counts twice. A node posts each minute of a
/// run once; a restart is a new `run`, so the minute a node restarted in
/// keeps both runs' counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCounts {
    /// This run of the node: 16 lower-case hex digits, random at start.
    pub run: String,
    /// The minute counted, as seconds since the Unix epoch divided by 60.
    pub minute: u64,
    /// The counts, at most [`MAX_COUNTS`], each kind and name once; zero
    /// counts are left out.
    #[serde(default)]
    pub counts: Vec<Count>,
}

/// One count of a [`NodeCounts`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    /// What is counted: [`COUNT_KINDS`] (`action`: requests judged and
    /// enforced by the action named; `monitored`: judged on a monitoring
    /// route, the action decided but not carried out; `reason`: decisions
    /// that carried the reason code named; `rule`: matches of the rule
    /// named that decided; `shadow`: matches recorded only — a shadow
    /// rule's, or a deciding rule's on a monitoring route). A kind of a
    /// later build is skipped by a controller that does not know it.
    pub kind: String,
    /// The action, reason code or rule: 1 to [`MAX_COUNT_NAME_BYTES`] ASCII
    /// letters, digits, `-`, `_`, `.`, or [`OTHER_RULES`].
    pub name: String,
    /// A rule's action (`rule` and `shadow`): what it did, or would have
    /// done — an engine action or `tag`; `None` when the node no longer
    /// holds the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// How many, 1 to [`MAX_COUNT`].
    pub n: u64,
}

/// Most entries in one [`NodeCounts`]. A node's actions and reason codes
/// are fixed sets (under 40 entries); past the cap, the rules matched
/// least that minute are summed into one entry named [`OTHER_RULES`].
pub const MAX_COUNTS: usize = 256;

/// Longest name of a [`Count`] (a rule name is at most 64 bytes).
pub const MAX_COUNT_NAME_BYTES: usize = 64;

/// Largest count of one entry in a minute: a billion (16 million requests
/// a second on one node).
pub const MAX_COUNT: u64 = 1_000_000_000;

/// The name of the entry that sums the rules left out past
/// [`MAX_COUNTS`] (kinds `rule` and `shadow`).
pub const OTHER_RULES: &str = "(other rules)";

/// The kinds of [`Count`] this build knows.
pub const COUNT_KINDS: [&str; 5] = ["action", "monitored", "reason", "rule", "shadow"];

/// The actions a rule's [`Count::action`] may name; the first four are
/// the engine's decisions, the only names of `action` and `monitored`
/// counts.
pub const COUNT_ACTIONS: [&str; 5] = ["allow", "step_up", "block", "revoke", "tag"];

impl NodeCounts {
    /// What is out of bounds in these counts, if anything: a run that is
    /// not 16 lower-case hex digits, more than [`MAX_COUNTS`] entries, a
    /// kind or name that is not 1 to 64 ASCII letters, digits, `-`, `_`,
    /// `.` ([`OTHER_RULES`] for a rule), a rule's action not in
    /// [`COUNT_ACTIONS`], a count of 0 or above [`MAX_COUNT`], a kind and
    /// name twice.
    pub fn problem(&self) -> Option<&'static str> {
        let word = |s: &str| {
            !s.is_empty()
                && s.len() <= MAX_COUNT_NAME_BYTES
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        if self.run.len() != 16
            || !self
                .run
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Some("counts' run is 16 lower-case hex digits");
        }
        if self.counts.len() > MAX_COUNTS {
            return Some("counts hold at most 256 entries");
        }
        let mut seen = std::collections::HashSet::new();
        for c in &self.counts {
            let rule = matches!(c.kind.as_str(), "rule" | "shadow");
            if !word(&c.kind) || !(word(&c.name) || (rule && c.name == OTHER_RULES)) {
                return Some(
                    "a count's kind and name are 1 to 64 ASCII letters, digits, `-`, `_` or `.`",
                );
            }
            if !c
                .action
                .as_deref()
                .is_none_or(|a| COUNT_ACTIONS.contains(&a))
            {
                return Some("a count's action is allow, step_up, block, revoke or tag");
            }
            // Decisions are the engine's four actions, so that what a
            // node posts under `action` and `monitored` is a fixed, small
            // set of rows whatever it sends.
            if matches!(c.kind.as_str(), "action" | "monitored")
                && !COUNT_ACTIONS[..4].contains(&c.name.as_str())
            {
                return Some("a decision's count names allow, step_up, block or revoke");
            }
            if !(1..=MAX_COUNT).contains(&c.n) {
                return Some("a count is 1 to 1000000000");
            }
            if !seen.insert((c.kind.as_str(), c.name.as_str())) {
                return Some("counts name each kind and name once");
            }
        }
        None
    }
}

/// Most entries of a chain a detection's facts carry ([`RequestFacts`]).
pub const MAX_CHAIN_HOPS: usize = 16;

/// Longest provider name, browser or platform a detection's facts carry
/// (the engine's provider names are at most 32 bytes).
pub const MAX_FACT_BYTES: usize = 64;

impl RequestFacts {
    /// What is out of bounds in these facts, if anything: a chain longer
    /// than [`MAX_CHAIN_HOPS`], a name longer than [`MAX_FACT_BYTES`] or of
    /// other bytes than ASCII letters, digits, `-`, `_`, `.` (as the engine
    /// names providers, browsers and platforms), a JA4 not of the `a_b_c`
    /// form ([`is_ja4`]), ASN 0.
    pub fn problem(&self) -> Option<&'static str> {
        let name = |s: &str, empty: bool| {
            (empty || !s.is_empty())
                && s.len() <= MAX_FACT_BYTES
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        if self.chain.len() > MAX_CHAIN_HOPS {
            return Some("a detection's chain holds at most 16 entries");
        }
        if !self.provider.as_deref().is_none_or(|p| name(p, false))
            || !name(&self.browser, false)
            || !name(&self.platform, true)
        {
            return Some(
                "a detection's provider, browser and platform are at most 64 ASCII letters, digits, `-`, `_` or `.`",
            );
        }
        if !self.ja4.as_deref().is_none_or(is_ja4) {
            return Some(
                "a detection's JA4 is `a_b_c`: 10 ASCII letters or digits, 12 and 12 lower-case hex digits",
            );
        }
        if self.asn == Some(0) {
            return Some("a detection's ASN is 1 or more");
        }
        None
    }
}

/// Whether `s` is a JA4 as the engine writes it: `a_b_c`, `a` 10 ASCII
/// letters or digits (upper case too: the last two are the first and last
/// characters of the client's first ALPN value, as it sent them), `b` and
/// `c` 12 lower-case hex digits each.
pub fn is_ja4(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b[10] == b'_'
        && b[23] == b'_'
        && b[..10].iter().all(u8::is_ascii_alphanumeric)
        && b[11..23]
            .iter()
            .chain(&b[24..])
            .all(|&c| hex_digit(c).is_some())
}

/// Longest rule bundle text, in bytes ([`Change::RulesBundle`]).
pub const MAX_RULES_BYTES: usize = 256 * 1024;

/// The file name a rule bundle's problems are reported under, at the
/// controller and on a node (`bundle.toml:LINE:COLUMN: …`).
pub const RULES_BUNDLE_FILE: &str = "bundle.toml";

/// Most problems a node reports of a rejected bundle.
pub const MAX_RULES_PROBLEMS: usize = 32;

/// Longest problem a node reports of a rejected bundle, in bytes.
pub const MAX_RULES_PROBLEM_BYTES: usize = 1024;

impl Change {
    /// This change as a node of protocol version `v` can take it. A
    /// version 1 node does not know session baselines or detection counts:
    /// it gets in their place a change it knows and that changes nothing —
    /// clearing the user risk of the user key 1, which no operator or
    /// partner sets (the chance that a user name hashes to it is 2⁻⁶⁴) —
    /// so that its sequence stays contiguous; for an erasure, the user's
    /// revocation.
    pub fn for_version(&self, v: u32) -> Change {
        match self {
            // What version 1 can do of an erasure: end every session.
            Change::UserErased { user, at } if v < 2 => Change::UserRevoked {
                user: *user,
                at: *at,
            },
            Change::SessionBaseline { .. } | Change::UserDetections { .. } if v < 2 => {
                Change::nothing()
            }
            // Version 2 would read these as unknown kinds and skip them;
            // version 1 knows no such thing.
            Change::UserProfile { .. }
            | Change::Population { .. }
            | Change::DeviceTrusted { .. }
            | Change::NetworkTrusted { .. }
            | Change::FalsePositive { .. }
            | Change::RulesBundle { .. }
                if v < 3 =>
            {
                Change::nothing()
            }
            // A version 3 node would skip it as unknown; versions 1 and 2
            // know no such thing. Either way it steps nobody up: the
            // operator who needs the sessions ended revokes the user.
            Change::UserStepUp { .. } if v < 4 => Change::nothing(),
            // Nodes before version 5 know no DBSC bindings.
            Change::DbscBound { .. } if v < 5 => Change::nothing(),
            // An older node would skip it as unknown, or not know it at
            // all: it judges bindings by the seals it sees, as before.
            Change::SessionBinding(_) if v < 5 => Change::nothing(),
            other => other.clone(),
        }
    }

    /// Whether a node of version `v` has this change in a snapshot: one it
    /// cannot take is left out (a snapshot has no numbers to keep).
    pub fn in_snapshot_of(&self, v: u32) -> bool {
        if matches!(self, Change::UserStepUp { .. }) {
            return v >= 4;
        }
        if matches!(self, Change::SessionBinding(_) | Change::DbscBound { .. }) {
            return v >= 5;
        }
        if matches!(
            self,
            Change::UserProfile { .. }
                | Change::Population { .. }
                | Change::DeviceTrusted { .. }
                | Change::NetworkTrusted { .. }
                | Change::FalsePositive { .. }
                | Change::RulesBundle { .. }
        ) {
            return v >= 3;
        }
        !matches!(
            self,
            Change::SessionBaseline { .. }
                | Change::UserDetections { .. }
                | Change::UserErased { .. }
        ) || v >= 2
    }

    /// Whether this change is sent in a frame of its own (a rule bundle,
    /// up to [`MAX_RULES_BYTES`] of text): so that no frame holding it
    /// and other changes can outgrow [`MAX_LINE_BYTES`].
    pub fn travels_alone(&self) -> bool {
        matches!(self, Change::RulesBundle { .. })
    }

    /// Whether this change alone, in a frame of the longest sequence
    /// numbers, fits in one line of [`MAX_LINE_BYTES`] (a rule bundle's
    /// text is JSON-escaped: what fits as text may not as a line).
    pub fn fits_in_a_frame(&self) -> bool {
        let changes = vec![self.clone()];
        let delta = Frame::Changes {
            first: u64::MAX,
            changes: changes.clone(),
        };
        let snapshot = Frame::Snapshot {
            seq: u64::MAX,
            changes,
        };
        // The newline is not part of the line.
        [delta, snapshot]
            .iter()
            .all(|f| write_frame(f).len() <= MAX_LINE_BYTES + 1)
    }

    /// The change a version 1 node gets in place of one it does not know,
    /// and a scrubbed change in the log: it changes nothing.
    pub fn nothing() -> Change {
        Change::UserRisk {
            user: UserId(1),
            points: 0,
            until: 0,
            at: 0,
        }
    }
}

impl NodeEventKind {
    /// The protocol version that introduced this kind of event: a
    /// controller of an older one would refuse it.
    pub fn since(&self) -> u32 {
        match self {
            NodeEventKind::SessionRevoked { .. } | NodeEventKind::Unknown => 1,
            NodeEventKind::SessionBaseline { .. } | NodeEventKind::Detection { .. } => 2,
            NodeEventKind::UserLearned { .. } | NodeEventKind::RulesBundle { .. } => 3,
            NodeEventKind::IdpSession { .. } => 4,
            NodeEventKind::SessionBinding(_)
            | NodeEventKind::DbscBound { .. }
            | NodeEventKind::Counts(_) => 5,
        }
    }
}

/// An engine record carried opaquely: bytes written as lower-case hex, at
/// most [`MAX_RECORD_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record(pub Vec<u8>);

/// Longest record carried.
pub const MAX_RECORD_BYTES: usize = 512;

impl Record {
    /// Reads lower-case hex of at most [`MAX_RECORD_BYTES`] bytes.
    pub fn parse(s: &str) -> Option<Self> {
        let bytes = s.as_bytes();
        if !bytes.len().is_multiple_of(2) || bytes.len() > MAX_RECORD_BYTES * 2 {
            return None;
        }
        bytes
            .chunks_exact(2)
            .map(|pair| Some(hex_digit(pair[0])? << 4 | hex_digit(pair[1])?))
            .collect::<Option<Vec<u8>>>()
            .map(Self)
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// What the controller answers to a posted batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventAck {
    /// Events taken now.
    pub accepted: usize,
    /// Events already taken before (same id): nothing changed.
    pub duplicates: usize,
    /// Of the events taken now, those the controller's intake rules
    /// refused (`docs/controller.md`, Intake rules): a revocation without
    /// evidence of this node's, an observation of a user beyond the
    /// node's daily budget. Taken (their ids are remembered; sending them
    /// again changes nothing) but without effect. Written only when not
    /// zero, and read as zero when absent: a controller or node of an
    /// earlier build neither sends nor expects it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub refused: usize,
    /// Ids of events of the batch not taken *yet*, to be posted again
    /// later: binding records whose compromised mark is beyond the node's
    /// marks this minute (their advance was taken; the mark waits). Written
    /// only when not empty; a controller of an earlier build sends none.
    /// Since version 5.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry: Vec<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Why a line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Longer than [`MAX_LINE_BYTES`].
    #[error("line of {0} bytes is longer than {MAX_LINE_BYTES}")]
    TooLong(usize),
    /// Not a frame of this version.
    #[error("not a frame: {0}")]
    Json(#[from] serde_json::Error),
    /// A batch larger than [`MAX_BATCH`].
    #[error("a batch of {0} changes is larger than {MAX_BATCH}")]
    Batch(usize),
}

/// Reads one line of a stream (without its newline).
pub fn read_frame(line: &[u8]) -> Result<Frame, FrameError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(FrameError::TooLong(line.len()));
    }
    let frame: Frame = serde_json::from_slice(line)?;
    match &frame {
        Frame::Snapshot { changes, .. } | Frame::Changes { changes, .. }
            if changes.len() > MAX_BATCH =>
        {
            Err(FrameError::Batch(changes.len()))
        }
        _ => Ok(frame),
    }
}

/// Writes one frame as a line, newline included.
pub fn write_frame(frame: &Frame) -> Vec<u8> {
    // Serialising these plain types cannot fail: no maps with non-string
    // keys, no floats.
    let mut out = serde_json::to_vec(frame).unwrap_or_default();
    out.push(b'\n');
    out
}

// === hex forms ===

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let bytes = s.as_bytes();
    if bytes.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = hex_digit(pair[0])? << 4 | hex_digit(pair[1])?;
    }
    Some(out)
}

impl SessionId {
    /// Reads 32 lower-case hex digits.
    pub fn parse(s: &str) -> Option<Self> {
        parse_hex::<16>(s).map(Self)
    }
}

impl IdpSessionId {
    /// Reads 32 lower-case hex digits.
    pub fn parse(s: &str) -> Option<Self> {
        parse_hex::<16>(s).map(Self)
    }
}

impl fmt::Display for IdpSessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl DeviceId {
    /// Reads 16 lower-case hex digits.
    pub fn parse(s: &str) -> Option<Self> {
        parse_hex::<8>(s).map(|b| Self(u64::from_be_bytes(b)))
    }
}

impl Country {
    /// Reads two upper-case ASCII letters.
    pub fn parse(s: &str) -> Option<Self> {
        match *s.as_bytes() {
            [a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => Some(Self([a, b])),
            _ => None,
        }
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Two ASCII letters by construction (`Country::parse`); anything
        // else is written as `?`.
        for b in self.0 {
            write!(
                f,
                "{}",
                if b.is_ascii_uppercase() {
                    char::from(b)
                } else {
                    '?'
                }
            )?;
        }
        Ok(())
    }
}

impl UserId {
    /// Reads 16 lower-case hex digits of a non-zero key.
    pub fn parse(s: &str) -> Option<Self> {
        let v = u64::from_be_bytes(parse_hex::<8>(s)?);
        (v != 0).then_some(Self(v))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

macro_rules! hex_serde {
    ($t:ty, $what:literal) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                <$t>::parse(&s).ok_or_else(|| serde::de::Error::custom($what))
            }
        }
    };
}

hex_serde!(SessionId, "expected 32 lower-case hex digits");
hex_serde!(IdpSessionId, "expected 32 lower-case hex digits");
hex_serde!(UserId, "expected 16 lower-case hex digits, not all zero");
hex_serde!(Record, "expected lower-case hex of at most 512 bytes");
hex_serde!(DbscKey, "expected lower-case hex of 1 to 1030 bytes");
hex_serde!(DeviceId, "expected 16 lower-case hex digits");
hex_serde!(Country, "expected two upper-case letters");

#[cfg(test)]
mod tests;
