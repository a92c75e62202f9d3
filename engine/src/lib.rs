//! Vigil's per-request pipeline as plain, synchronous Rust.
//!
//! A [`RequestView`] goes in, a [`Verdict`] comes out. The stages run in the
//! order the architecture names them — session, client IP chain, device,
//! score, decide — and each is a small type with one method, so a new concern adds a
//! stage instead of editing the others. Nothing here performs I/O or waits:
//! the only state is the bounded in-memory session store the scorer keeps.
//!
//! ```
//! use std::net::IpAddr;
//! use http::HeaderMap;
//! use vigil_engine::{Engine, EngineConfig, Policy, RequestView, SessionHashKey, Action};
//!
//! let engine = Engine::new(EngineConfig::default(), SessionHashKey::from_bytes([7; 32]));
//! let policy = Policy::default();
//! let mut headers = HeaderMap::new();
//! headers.insert("cookie", "session=abc".parse().unwrap());
//! headers.insert("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0".parse().unwrap());
//! let peer: IpAddr = "192.0.2.10".parse().unwrap();
//! let verdict = engine.evaluate(&RequestView { peer, headers: &headers, now_secs: 1, tls: Default::default(), facts: Default::default() }, &policy).unwrap();
//! assert_eq!(verdict.action, Action::Allow);
//! ```

pub mod binding;
pub use binding::fleet::FleetBinding;
mod client_ip;
mod decide;
mod device;
pub mod events;
mod fingerprint;
mod idp_session;
mod ja4;
mod network;
mod pipeline;
mod request;
mod score;
mod session;
mod shards;

pub use client_ip::{
    Chain, ChainFlags, ChainSource, ChainStrategy, ClientIp, ClientIpConfig, ClientIpStage,
    DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_HOPS, ForwardedHeaders, Hop, MAX_PROVIDER_NAME_BYTES,
    MAX_TRUSTED_SETS, Node, Provider, TrustedProxies, TrustedSetError,
};
pub use decide::{
    Action, Facts, NoRules, ParseActionError, Policy, Rules, Ruling, SessionFacts, Thresholds,
};
pub use device::{
    Browser, Device, DeviceClass, DeviceId, DeviceMatch, DeviceStage, DeviceSummary, HeaderShape,
    LanguageTag, Platform, TraitMatch,
};
pub use events::{Event, EventClass, EventSink, EventStreams, Reference};
pub use fingerprint::{
    Ja3, Ja4Form, ParseFingerprintError, TlsFingerprint, TlsMatch, TlsSource, UpstreamFingerprints,
};
pub use idp_session::{IdpSessionKey, MAX_SID_BYTES};
pub use ja4::{
    ClientHello, HelloError, Ja4, MAX_HELLO_BYTES, Malformed, RESUMPTION_EXTENSIONS, Transport,
    ja4, ja4_both, ja4_o, ja4_r, ja4_ro, ja4_stable,
};
pub use network::{
    NetworkChange, NetworkFacts, NetworkMark, SAME_PREFIX_V4, SAME_PREFIX_V6, classify, same_prefix,
};
pub use pipeline::{
    Applied, Decision, Effects, Enforcement, Engine, EngineConfig, HashKeyIds, Responded,
    ResponseEffects, Verdict, valid_user_name,
};
pub use request::{RequestError, RequestFacts, RequestView, ResponseView};
pub use score::{
    Adopted, Contribution, FeatureWeights, Feedback, FeedbackError, Reason, RecordError, Restored,
    Risk, RiskLevel, Risks, ScoreConfig, Scorer, SessionState, SnapshotError, TrustedNetwork,
    UserKey, UserModelConfig,
};
pub use score::{Learnt, POPULATION_CELLS, PROFILE_FEATURES, ProfileRecord, population_cells};
pub use session::{
    Ambiguity, CredentialSource, Credentials, HASH_KEY_LEN, KeyId, MAX_CREDENTIALS, Session,
    SessionConfig, SessionError, SessionHashKey, SessionKey, SessionLimits, SessionStage, ShortKey,
};
