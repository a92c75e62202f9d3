//! The corpus format: an IP plan (`networks.json`) and labelled requests
//! (`events.jsonl`), as documented in `loadtests/README.md` and
//! `docs/evaluation.md`.
//!
//! A corpus is a directory:
//!
//! - `networks.json`: `{"networks": [Network, ...]}`, the world's IP plan.
//!   The evaluator builds a GeoLite2-layout database from it and trusts every
//!   `zscaler-egress` network as the proxy set `zscaler`.
//! - `events.jsonl`: one [`Event`] per line, sorted by `t`.
//! - `manifest.json` (optional, informational): how the corpus was made.
//!
//! Unknown keys are errors everywhere, so a typo in a hand-written scenario
//! is reported instead of silently ignored.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// File name of the IP plan inside a corpus directory.
pub const NETWORKS_FILE: &str = "networks.json";
/// File name of the requests inside a corpus directory.
pub const EVENTS_FILE: &str = "events.jsonl";
/// File name of the optional manifest inside a corpus directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// What kind of network a range is; decides how the generator uses it and,
/// for `zscaler-egress`, that the evaluator trusts it as a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkKind {
    /// A home broadband ISP (also where residential proxies exit).
    Residential,
    /// A mobile carrier; addresses are carrier-grade NAT pools.
    Mobile,
    /// A company office behind NAT on a business line.
    Office,
    /// Egress nodes of a Zscaler-style security proxy: trusted, and they
    /// forward the client in `X-Forwarded-For`.
    ZscalerEgress,
    /// A site where many users share one public address (campus, coworking).
    Nat,
    /// A hosting, cloud or VPN provider.
    Hosting,
}

/// One range of the IP plan and what a geo database says about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// A name for humans and for scenario notes, unique in the plan.
    pub name: String,
    /// The range, `a.b.c.d/n`.
    pub cidr: String,
    /// ISO 3166-1 alpha-2 country code.
    pub country: String,
    /// City the range geolocates to (informational; written to the
    /// database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Accuracy radius of the location, in km.
    pub accuracy_km: u16,
    /// Autonomous system number.
    pub asn: u32,
    /// Autonomous system organisation.
    pub org: String,
    /// What kind of network this is.
    pub kind: NetworkKind,
}

/// The IP plan of a corpus.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkPlan {
    /// Every range.
    pub networks: Vec<Network>,
}

/// Whether a session is legitimate or attacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// Only its owner uses it.
    Legit,
    /// Its cookie was stolen and replayed.
    Attack,
}

/// Who sent a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// The user who logged in.
    Owner,
    /// Someone replaying the stolen cookie.
    Attacker,
}

/// The scenario class a session belongs to. The set is fixed: targets and
/// report rows are per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// Warm-up: ordinary days of ordinary users, so profiles mature.
    History,
    /// Office, home and cellular within the home country in one session.
    Roaming,
    /// Behind a Zscaler-style proxy whose egress node rotates; the client
    /// (in `X-Forwarded-For`) stays.
    Zscaler,
    /// A minor browser update mid-session.
    UpgradeMinor,
    /// A major browser update (+1) mid-session.
    UpgradeMajor,
    /// A flight to another continent at airliner speed, then the same
    /// session resumes there.
    Flight,
    /// Many users at once behind one NAT address.
    SharedNat,
    /// Idle for 8 to 30 hours, then resumed.
    IdleGap,
    /// A browser that does not store one rotation of the binding's
    /// companion cookie (the response timed out, the user navigated away)
    /// and comes back with the generation it held: a lost response, which
    /// the binding must not take for a copy.
    RotationLost,
    /// Replay from another country with the attacker's own device.
    ReplayOtherCountry,
    /// Replay from the victim's country, another ASN, own device.
    ReplaySameCountryOtherAsn,
    /// Replay from the victim's own address (NAT, household) with another
    /// device.
    ReplaySameIpOtherDevice,
    /// Replay with the victim's User-Agent and headers copied, another TLS
    /// stack, from another network.
    ReplayCopiedUaOtherTls,
    /// Replay with UA, headers and JA4 identical to the victim's, from
    /// another network.
    ReplayImpersonatedJa4OtherNetwork,
    /// Victim and attacker use the session in turns, minutes apart.
    Interleaved,
    /// A perfect clone (the victim's User-Agent, headers and JA4) from the
    /// victim's own address, replaying the copied cookie jar while the
    /// victim is active too.
    CloneSameIp,
    /// A perfect clone from another address of the victim's ISP (the
    /// network the victim was on), the victim active too.
    CloneSameIsp,
    /// A perfect clone from the victim's address or ISP while the victim is
    /// offline for hours: the thief uses the jar first, then the victim
    /// returns, then the thief again.
    CloneThiefFirst,
}

/// A scenario name that is not one of [`Scenario::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scenario {0:?}")]
pub struct UnknownScenario(pub String);

/// One request of a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Time of the request, seconds since the Unix epoch.
    pub t: u64,
    /// Session id: the request carries the cookie `session=<id>`.
    pub session: String,
    /// The session owner's user name.
    pub user: String,
    /// The session's scenario class.
    pub scenario: Scenario,
    /// The session's label.
    pub label: Label,
    /// Who sent this request.
    pub actor: Actor,
    /// The app named the user at login: the evaluator binds the session to
    /// `user` before this request.
    #[serde(default)]
    pub bind: bool,
    /// TCP peer address.
    pub peer: IpAddr,
    /// `X-Forwarded-For` value, sent when the peer is a trusted proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xff: Option<String>,
    /// `User-Agent`.
    pub ua: String,
    /// `Accept-Language`; absent when the client sends none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept_language: Option<String>,
    /// `Sec-CH-UA-Platform`, with the quotes browsers send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ch_platform: Option<String>,
    /// `Sec-CH-UA-Mobile` (`?0` or `?1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ch_mobile: Option<String>,
    /// `Sec-CH-UA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ch_ua: Option<String>,
    /// Send `Sec-Fetch-Site: same-origin`.
    #[serde(default)]
    pub fetch_metadata: bool,
    /// JA4 of the connection (`a_b_c`).
    pub ja4: String,
    /// The thief copies this client's cookie jar as it stands after this
    /// request's response (the app cookie and Vigil's companion cookie, if
    /// one was set): the moment of theft. Without one in a session, the
    /// jar is copied as it stands at the attacker's first request.
    #[serde(default, skip_serializing_if = "is_false")]
    pub steal: bool,
    /// From this request on, the next response that sets this client a
    /// cookie never reaches it (a timeout, a navigation away): the client
    /// keeps the cookies it held. With the rotating binding that response
    /// is a rotation of the companion cookie, and the client comes back
    /// with the previous generation (a lost response, not a copy).
    #[serde(default, skip_serializing_if = "is_false")]
    pub lose_rotation: bool,
    /// Free text for humans (e.g. `cookie stolen`, `landed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A whole corpus in memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Corpus {
    /// The IP plan.
    pub networks: NetworkPlan,
    /// The requests, sorted by time.
    pub events: Vec<Event>,
    /// How it was made; `None` when the directory had no manifest.
    pub manifest: Option<serde_json::Value>,
}

/// Why a corpus could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is not valid JSON of the expected shape.
    #[error("{}:{line}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line (1 for whole-file JSON).
        line: usize,
        /// What was wrong.
        source: serde_json::Error,
    },
    /// Events are not sorted by time.
    #[error("{}:{line}: event at t={t} comes after t={previous}; events must be sorted by time", path.display())]
    Unsorted {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// This event's time.
        t: u64,
        /// The previous event's time.
        previous: u64,
    },
}

// === impl Scenario ===

impl Scenario {
    /// Every class, legit ones first.
    pub const ALL: [Scenario; 18] = [
        Scenario::History,
        Scenario::Roaming,
        Scenario::Zscaler,
        Scenario::UpgradeMinor,
        Scenario::UpgradeMajor,
        Scenario::Flight,
        Scenario::SharedNat,
        Scenario::IdleGap,
        Scenario::RotationLost,
        Scenario::ReplayOtherCountry,
        Scenario::ReplaySameCountryOtherAsn,
        Scenario::ReplaySameIpOtherDevice,
        Scenario::ReplayCopiedUaOtherTls,
        Scenario::ReplayImpersonatedJa4OtherNetwork,
        Scenario::Interleaved,
        Scenario::CloneSameIp,
        Scenario::CloneSameIsp,
        Scenario::CloneThiefFirst,
    ];

    /// The perfect-clone classes: the victim's exact stack replaying a
    /// copied jar, which passive signals cannot tell apart by construction
    /// and only the rotating binding can. They have no detection target.
    pub const CLONES: [Scenario; 3] = [
        Scenario::CloneSameIp,
        Scenario::CloneSameIsp,
        Scenario::CloneThiefFirst,
    ];

    /// The file and report name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::History => "history",
            Scenario::Roaming => "roaming",
            Scenario::Zscaler => "zscaler",
            Scenario::UpgradeMinor => "upgrade_minor",
            Scenario::UpgradeMajor => "upgrade_major",
            Scenario::Flight => "flight",
            Scenario::SharedNat => "shared_nat",
            Scenario::IdleGap => "idle_gap",
            Scenario::RotationLost => "rotation_lost",
            Scenario::ReplayOtherCountry => "replay_other_country",
            Scenario::ReplaySameCountryOtherAsn => "replay_same_country_other_asn",
            Scenario::ReplaySameIpOtherDevice => "replay_same_ip_other_device",
            Scenario::ReplayCopiedUaOtherTls => "replay_copied_ua_other_tls",
            Scenario::ReplayImpersonatedJa4OtherNetwork => "replay_impersonated_ja4_other_network",
            Scenario::Interleaved => "interleaved",
            Scenario::CloneSameIp => "clone_same_ip",
            Scenario::CloneSameIsp => "clone_same_isp",
            Scenario::CloneThiefFirst => "clone_thief_first",
        }
    }

    /// The label of every session of this class.
    pub fn label(self) -> Label {
        match self {
            Scenario::History
            | Scenario::Roaming
            | Scenario::Zscaler
            | Scenario::UpgradeMinor
            | Scenario::UpgradeMajor
            | Scenario::Flight
            | Scenario::SharedNat
            | Scenario::IdleGap
            | Scenario::RotationLost => Label::Legit,
            Scenario::ReplayOtherCountry
            | Scenario::ReplaySameCountryOtherAsn
            | Scenario::ReplaySameIpOtherDevice
            | Scenario::ReplayCopiedUaOtherTls
            | Scenario::ReplayImpersonatedJa4OtherNetwork
            | Scenario::Interleaved
            | Scenario::CloneSameIp
            | Scenario::CloneSameIsp
            | Scenario::CloneThiefFirst => Label::Attack,
        }
    }

    /// For attack classes, the share of sessions that must be detected (the
    /// attacker gets at least one action other than allow): 95% for a replay
    /// from the victim's own address, 99% for every other. `None` for legit
    /// classes and for the perfect clones ([`Scenario::CLONES`]), which are
    /// reported without a target: they are caught by the binding or not at
    /// all.
    pub fn detection_target(self) -> Option<f64> {
        match (self.label(), self) {
            (Label::Legit, _) => None,
            (_, s) if Scenario::CLONES.contains(&s) => None,
            (Label::Attack, Scenario::ReplaySameIpOtherDevice) => Some(0.95),
            (Label::Attack, _) => Some(0.99),
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scenario {
    type Err = UnknownScenario;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownScenario(s.to_owned()))
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

// === impl Label, Actor ===

impl Label {
    /// `legit` or `attack`.
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Legit => "legit",
            Label::Attack => "attack",
        }
    }
}

impl Actor {
    /// `owner` or `attacker`.
    pub fn as_str(self) -> &'static str {
        match self {
            Actor::Owner => "owner",
            Actor::Attacker => "attacker",
        }
    }
}

// === impl Corpus ===

impl Corpus {
    /// Writes `networks.json`, `events.jsonl` and, when there is one,
    /// `manifest.json` into `dir`, creating it if needed.
    pub fn write_dir(&self, dir: &Path) -> Result<(), CorpusError> {
        std::fs::create_dir_all(dir).map_err(|source| CorpusError::Io {
            path: dir.to_owned(),
            source,
        })?;
        write_json(&dir.join(NETWORKS_FILE), &self.networks)?;
        if let Some(manifest) = &self.manifest {
            write_json(&dir.join(MANIFEST_FILE), manifest)?;
        }
        let path = dir.join(EVENTS_FILE);
        let io = |source| CorpusError::Io {
            path: path.clone(),
            source,
        };
        let mut out = BufWriter::new(File::create(&path).map_err(io)?);
        for (i, event) in self.events.iter().enumerate() {
            serde_json::to_writer(&mut out, event).map_err(|source| CorpusError::Json {
                path: path.clone(),
                line: i + 1,
                source,
            })?;
            out.write_all(b"\n").map_err(io)?;
        }
        out.flush().map_err(io)
    }

    /// Reads a corpus directory whole. Fails on the first malformed line or
    /// on events out of time order.
    pub fn read_dir(dir: &Path) -> Result<Self, CorpusError> {
        let networks = read_networks(dir)?;
        let manifest_path = dir.join(MANIFEST_FILE);
        let manifest = if manifest_path.exists() {
            Some(read_json(&manifest_path)?)
        } else {
            None
        };
        let events = EventReader::open(&dir.join(EVENTS_FILE))?.collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            networks,
            events,
            manifest,
        })
    }
}

/// Reads `networks.json` of a corpus directory.
pub fn read_networks(dir: &Path) -> Result<NetworkPlan, CorpusError> {
    read_json(&dir.join(NETWORKS_FILE))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, CorpusError> {
    let file = File::open(path).map_err(|source| CorpusError::Io {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_reader(BufReader::new(file)).map_err(|source| CorpusError::Json {
        path: path.to_owned(),
        line: source.line(),
        source,
    })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), CorpusError> {
    let io = |source| CorpusError::Io {
        path: path.to_owned(),
        source,
    };
    let mut out = BufWriter::new(File::create(path).map_err(io)?);
    serde_json::to_writer_pretty(&mut out, value).map_err(|source| CorpusError::Json {
        path: path.to_owned(),
        line: 1,
        source,
    })?;
    out.write_all(b"\n").map_err(io)?;
    out.flush().map_err(io)
}

/// Streams the events of an `events.jsonl` file, checking time order, so
/// that a large corpus is evaluated without holding it in memory.
#[derive(Debug)]
pub struct EventReader {
    path: PathBuf,
    lines: std::io::Lines<BufReader<File>>,
    line: usize,
    previous: u64,
}

impl EventReader {
    /// Opens `path`.
    pub fn open(path: &Path) -> Result<Self, CorpusError> {
        let file = File::open(path).map_err(|source| CorpusError::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            path: path.to_owned(),
            lines: BufReader::new(file).lines(),
            line: 0,
            previous: 0,
        })
    }
}

impl Iterator for EventReader {
    type Item = Result<Event, CorpusError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let line = self.lines.next()?;
            self.line += 1;
            let line = match line {
                Ok(line) => line,
                Err(source) => {
                    return Some(Err(CorpusError::Io {
                        path: self.path.clone(),
                        source,
                    }));
                }
            };
            if line.trim().is_empty() {
                continue;
            }
            let event: Event = match serde_json::from_str(&line) {
                Ok(e) => e,
                Err(source) => {
                    return Some(Err(CorpusError::Json {
                        path: self.path.clone(),
                        line: self.line,
                        source,
                    }));
                }
            };
            if event.t < self.previous {
                return Some(Err(CorpusError::Unsorted {
                    path: self.path.clone(),
                    line: self.line,
                    t: event.t,
                    previous: self.previous,
                }));
            }
            self.previous = event.t;
            return Some(Ok(event));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names_round_trip_through_serde_and_from_str() {
        for s in Scenario::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<Scenario>(&json).unwrap(), s);
            assert_eq!(s.as_str().parse::<Scenario>(), Ok(s));
        }
        assert!("replay".parse::<Scenario>().is_err());
    }

    #[test]
    fn targets_follow_the_issue() {
        assert_eq!(Scenario::Roaming.detection_target(), None);
        assert_eq!(
            Scenario::ReplaySameIpOtherDevice.detection_target(),
            Some(0.95)
        );
        assert_eq!(Scenario::Interleaved.detection_target(), Some(0.99));
        for c in Scenario::CLONES {
            assert_eq!((c.label(), c.detection_target()), (Label::Attack, None));
        }
    }

    #[test]
    fn unknown_event_keys_are_errors() {
        let line = r#"{"t":1,"session":"s","user":"u","scenario":"history","label":"legit","actor":"owner","peer":"81.2.69.1","ua":"x","ja4":"t13d1516h2_8daaf6152771_02713d6af862","colour":"red"}"#;
        assert!(serde_json::from_str::<Event>(line).is_err());
        let ok = line.replace(r#","colour":"red""#, "");
        let event: Event = serde_json::from_str(&ok).unwrap();
        assert!(!event.bind && !event.fetch_metadata && event.xff.is_none());
    }

    #[test]
    fn a_written_corpus_reads_back_and_unsorted_events_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let event = |t| Event {
            t,
            session: "s1".into(),
            user: "u1".into(),
            scenario: Scenario::History,
            label: Label::Legit,
            actor: Actor::Owner,
            bind: t == 5,
            peer: "81.2.69.1".parse().unwrap(),
            xff: None,
            ua: "curl/8.5.0".into(),
            accept_language: None,
            ch_platform: None,
            ch_mobile: None,
            ch_ua: None,
            fetch_metadata: false,
            ja4: "t13d3112h2_e8f1e7e78f70_b26ce05bbdd6".into(),
            steal: false,
            lose_rotation: false,
            note: None,
        };
        let corpus = Corpus {
            networks: NetworkPlan::default(),
            events: vec![event(5), event(9)],
            manifest: Some(serde_json::json!({"seed": 1})),
        };
        corpus.write_dir(dir.path()).unwrap();
        assert_eq!(Corpus::read_dir(dir.path()).unwrap(), corpus);

        let unsorted = Corpus {
            events: vec![event(9), event(5)],
            ..corpus
        };
        unsorted.write_dir(dir.path()).unwrap();
        let err = Corpus::read_dir(dir.path()).unwrap_err();
        assert!(
            matches!(err, CorpusError::Unsorted { line: 2, .. }),
            "{err}"
        );
    }
}
