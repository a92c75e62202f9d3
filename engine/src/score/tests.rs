//! The risk engine's signals, one by one, through the whole pipeline with a
//! geo database built for the test.

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;
use proptest::prelude::*;
use vigil_geoip::testdb::{Layout, TestDb, TestRecord};

use super::profile::{Features, Population, UserProfile};
use super::*;
use crate::decide::{Action, Policy};
use crate::device::DeviceId;
use crate::fingerprint::TlsFingerprint;
use crate::network::NetworkFacts;
use crate::pipeline::{Engine, EngineConfig, Verdict};
use crate::request::RequestView;
use crate::session::SessionHashKey;

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const SAFARI: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15";

/// London home (BT), another BT prefix, London mobile (EE), Manchester
/// (Virgin), Paris, New York, a US hosting provider.
const HOME: &str = "81.2.69.10";
const HOME_OTHER_PREFIX: &str = "81.2.70.10";
const MOBILE: &str = "31.94.1.10";
const MANCHESTER: &str = "86.1.1.10";
const PARIS: &str = "62.4.1.10";
const NEW_YORK: &str = "89.160.1.10";
const HOSTING: &str = "45.33.1.10";
const CARRIER: &str = "5.1.1.10";

const T0: u64 = 1_700_000_000;
const DAY: u64 = 86_400;

struct World {
    engine: Engine,
    _dir: tempfile::TempDir,
}

fn world_with(config: ScoreConfig) -> World {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("geo.mmdb");
    let net = |country: &str, lat: f64, lon: f64, acc: u16, asn: u32| {
        TestRecord::new()
            .country(country)
            .location(lat, lon)
            .accuracy_km(acc)
            .asn(asn)
    };
    TestDb::new(Layout::GeoLite2)
        .network("81.2.69.0/24", net("GB", 51.51, -0.09, 20, 2856))
        .network("81.2.70.0/24", net("GB", 51.51, -0.09, 20, 2856))
        .network("31.94.0.0/16", net("GB", 51.50, -0.12, 50, 12576))
        .network("86.1.0.0/16", net("GB", 53.48, -2.24, 20, 5089))
        .network("62.4.0.0/16", net("FR", 48.86, 2.35, 20, 3215))
        .network("89.160.0.0/16", net("US", 40.71, -74.0, 20, 7922))
        .network("45.33.0.0/16", net("US", 37.55, -121.98, 20, 63949))
        // A carrier placed at the country's centre, as geo databases do.
        .network("5.1.0.0/16", net("GB", 54.0, -2.0, 1000, 25135))
        .write(&path)
        .unwrap();
    let geo = vigil_geoip::GeoIp::open(&vigil_geoip::GeoPaths {
        geo: vec![path.clone()],
        asn: vec![path],
    })
    .unwrap();
    let engine = Engine::new(
        EngineConfig {
            score: config,
            ..EngineConfig::default()
        },
        SessionHashKey::from_bytes([5; 32]),
    )
    .with_geo(Arc::new(geo));
    World { engine, _dir: dir }
}

fn world() -> World {
    world_with(ScoreConfig::default())
}

/// A policy that lets everything through, to watch the scores.
fn lenient() -> Policy {
    Policy {
        low: Action::Allow,
        medium: Action::Allow,
        high: Action::Allow,
        thresholds: None,
    }
}

fn strict() -> Policy {
    Policy {
        low: Action::Allow,
        medium: Action::StepUp,
        high: Action::Block,
        thresholds: None,
    }
}

fn view<'a>(headers: &'a HeaderMap, ip: &str, at: u64) -> RequestView<'a> {
    RequestView {
        peer: ip.parse::<IpAddr>().unwrap(),
        headers,
        now_secs: at,
        tls: TlsFingerprint::default(),
        facts: Default::default(),
    }
}

fn headers(session: &str, ua: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("cookie", format!("session={session}").parse().unwrap());
    h.insert("user-agent", ua.parse().unwrap());
    h.insert("accept-language", "en-GB,en;q=0.9".parse().unwrap());
    h
}

impl World {
    fn req(&self, policy: &Policy, session: &str, ua: &str, ip: &str, at: u64) -> Verdict {
        let h = headers(session, ua);
        self.engine.evaluate(&view(&h, ip, at), policy).unwrap()
    }

    fn login(&self, session: &str, user: &str, at: u64) {
        let key = self.engine.key_for_credential(session.as_bytes()).unwrap();
        self.engine.bind_user(key, user, at);
    }

    /// `n` ordinary days for `user`: a session a day from home on Firefox,
    /// moving to the mobile network at lunch.
    fn history(&self, user: &str, days: u64) {
        for d in 0..days {
            let s = format!("{user}-h{d}");
            let t = T0 + d * DAY;
            self.login(&s, user, t);
            self.req(&lenient(), &s, FIREFOX, HOME, t);
            self.req(&lenient(), &s, FIREFOX, MOBILE, t + 4 * 3600);
            self.req(&lenient(), &s, FIREFOX, HOME, t + 9 * 3600);
        }
    }
}

/// The score is the capped sum of the reasons' points and the level follows
/// from it: every decision can be explained.
fn explained(v: &Verdict) {
    let sum: u32 = v.risk.reasons.iter().map(|c| u32::from(c.points)).sum();
    assert_eq!(u32::from(v.risk.score), sum.min(100), "{:?}", v.risk);
    assert_eq!(v.risk.level, ScoreConfig::default().level(v.risk.score));
    for part in v
        .risks
        .login
        .iter()
        .chain([&v.risks.session, &v.risks.entity])
    {
        let sum: u32 = part.reasons.iter().map(|c| u32::from(c.points)).sum();
        assert_eq!(u32::from(part.score), sum.min(100));
        for c in &part.reasons {
            assert!(
                v.risk.reasons.contains(c),
                "{c:?} missing from the overall risk"
            );
        }
    }
}

// --- session risk: network ---

#[test]
fn a_move_within_the_asn_is_low_another_asn_medium() {
    let w = world();
    let p = lenient();
    w.req(&p, "s", FIREFOX, HOME, T0);
    let same_asn = w.req(&p, "s", FIREFOX, HOME_OTHER_PREFIX, T0 + 60);
    assert_eq!(same_asn.risk.points(Reason::IpChanged), 10);
    assert_eq!(same_asn.risk.level, RiskLevel::Low);
    let other_asn = w.req(&p, "s", FIREFOX, MANCHESTER, T0 + 7200);
    assert_eq!(
        other_asn.risk.reasons,
        vec![Contribution {
            reason: Reason::AsnChanged,
            points: 30
        }]
    );
    assert_eq!(other_asn.risk.level, RiskLevel::Medium);
    explained(&other_asn);
}

#[test]
fn a_new_country_minutes_later_is_impossible_travel() {
    let w = world();
    let p = lenient();
    w.req(&p, "s", FIREFOX, HOME, T0);
    w.req(&p, "s", FIREFOX, HOME, T0 + 600);
    // London to Paris (~340 km, less 40 km of accuracy) in two minutes.
    let v = w.req(&p, "s", FIREFOX, PARIS, T0 + 720);
    assert!(v.risk.has(Reason::CountryChanged));
    assert!(v.risk.has(Reason::ImpossibleTravel));
    assert_eq!(v.risk.level, RiskLevel::High);
    explained(&v);
}

#[test]
fn a_flight_is_a_country_change_but_not_impossible() {
    let w = world();
    let p = lenient();
    w.req(&p, "s", FIREFOX, HOME, T0);
    // London to New York (5,570 km) eight hours later: 700 km/h.
    let v = w.req(&p, "s", FIREFOX, NEW_YORK, T0 + 8 * 3600);
    assert!(v.risk.has(Reason::CountryChanged));
    assert!(!v.risk.has(Reason::ImpossibleTravel));
    assert_eq!(v.risk.level, RiskLevel::Medium);
    // The same hop in one hour is not a flight.
    w.req(&p, "t", FIREFOX, HOME, T0);
    let v = w.req(&p, "t", FIREFOX, NEW_YORK, T0 + 3600);
    assert!(v.risk.has(Reason::ImpossibleTravel));
}

#[test]
fn travel_is_timed_from_the_last_request_not_the_first() {
    let w = world();
    let p = lenient();
    w.req(&p, "s", FIREFOX, HOME, T0);
    // Active in London until ten minutes before New York.
    for i in 1..=10 {
        w.req(&p, "s", FIREFOX, HOME, T0 + i * 3600);
    }
    let v = w.req(&p, "s", FIREFOX, NEW_YORK, T0 + 10 * 3600 + 600);
    assert!(v.risk.has(Reason::ImpossibleTravel), "{:?}", v.risk);
}

#[test]
fn a_coarse_place_in_the_same_country_is_no_travel() {
    let w = world();
    let p = lenient();
    w.req(&p, "s", FIREFOX, HOME, T0);
    // London to "the middle of Britain, give or take 1,000 km" in a minute.
    let v = w.req(&p, "s", FIREFOX, CARRIER, T0 + 60);
    assert!(v.risk.has(Reason::AsnChanged));
    assert!(!v.risk.has(Reason::ImpossibleTravel), "{:?}", v.risk);
}

#[test]
fn hopping_to_a_new_network_every_few_minutes_is_churn() {
    let w = world();
    let p = lenient();
    w.req(&p, "s", FIREFOX, "31.94.1.10", T0);
    let hops: Vec<_> = ["31.94.2.10", "31.94.3.10", "31.94.4.10", "31.94.5.10"]
        .iter()
        .enumerate()
        .map(|(i, ip)| w.req(&p, "s", FIREFOX, ip, T0 + 120 * (i as u64 + 1)))
        .collect();
    let churned: Vec<bool> = hops
        .iter()
        .map(|v| v.risk.has(Reason::NetworkChurn))
        .collect();
    assert_eq!(churned, [false, false, true, true]);
    explained(&hops[2]);
    // The same hops an hour apart are roaming.
    w.req(&p, "t", FIREFOX, "31.94.1.10", T0);
    for (i, ip) in ["31.94.2.10", "31.94.3.10", "31.94.4.10"]
        .iter()
        .enumerate()
    {
        let v = w.req(&p, "t", FIREFOX, ip, T0 + 3600 * (i as u64 + 1));
        assert!(!v.risk.has(Reason::NetworkChurn));
    }
}

#[test]
fn returning_to_the_network_just_left_is_concurrent_use() {
    let w = world();
    let p = lenient();
    w.req(&p, "s", FIREFOX, HOME, T0);
    let away = w.req(&p, "s", FIREFOX, MANCHESTER, T0 + 7200);
    assert!(!away.risk.has(Reason::ConcurrentNetworks));
    let back = w.req(&p, "s", FIREFOX, HOME, T0 + 7200 + 60);
    assert!(back.risk.has(Reason::ConcurrentNetworks));
    assert!(back.risk.has(Reason::AsnChanged));
    assert_eq!(back.risk.level, RiskLevel::High);
    explained(&back);

    // Coming back after the window is roaming, not interleaving.
    w.req(&p, "t", FIREFOX, HOME, T0);
    w.req(&p, "t", FIREFOX, MANCHESTER, T0 + 7200);
    let later = w.req(&p, "t", FIREFOX, HOME, T0 + 7200 + 3600);
    assert!(!later.risk.has(Reason::ConcurrentNetworks));
}

#[test]
fn a_refused_replay_leaves_the_owner_untouched() {
    let w = world();
    let p = strict();
    w.req(&p, "s", FIREFOX, HOME, T0);
    let thief = w.req(&p, "s", CHROME, HOSTING, T0 + 60);
    assert_eq!(thief.action, Action::Block);
    assert!(thief.risk.has(Reason::DeviceChanged));
    assert!(thief.risk.has(Reason::CountryChanged));
    assert!(thief.risk.has(Reason::ImpossibleTravel));
    let owner = w.req(&p, "s", FIREFOX, HOME, T0 + 120);
    assert_eq!(owner.action, Action::Allow);
    assert!(owner.risk.reasons.is_empty(), "{:?}", owner.risk);
}

// --- same IP, another actor ---

#[test]
fn two_people_behind_one_address_are_told_apart() {
    let w = world();
    let p = strict();
    // Alice on Firefox, Bob on Chrome, both behind the office NAT.
    w.req(&p, "alice", FIREFOX, HOME, T0);
    w.req(&p, "bob", CHROME, HOME, T0 + 1);
    for i in 2..20 {
        assert_eq!(
            w.req(&p, "alice", FIREFOX, HOME, T0 + i).action,
            Action::Allow
        );
        assert_eq!(w.req(&p, "bob", CHROME, HOME, T0 + i).action, Action::Allow);
    }
    // Bob replays Alice's cookie from the same address.
    let v = w.req(&p, "alice", CHROME, HOME, T0 + 30);
    assert_eq!(v.network_change, Some(crate::NetworkChange::Same));
    assert!(v.risk.has(Reason::DeviceChanged));
    assert_eq!(v.action, Action::Block);
}

// --- login risk and the user model ---

#[test]
fn a_new_user_is_learning_and_gets_no_model_points() {
    let w = world();
    w.login("s", "carol", T0);
    let v = w.req(&lenient(), "s", SAFARI, NEW_YORK, T0);
    assert!(v.risks.learning);
    assert_eq!(v.risks.login, Some(Risk::none()));
}

#[test]
fn login_risk_weighs_what_is_new_for_the_user() {
    let w = world();
    w.history("dave", 10);
    let t = T0 + 10 * DAY;

    w.login("usual", "dave", t);
    let usual = w.req(&lenient(), "usual", FIREFOX, HOME, t);
    assert!(!usual.risks.learning);
    let login = usual.risks.login.clone().unwrap();
    assert_eq!(login.score, 0, "{login:?}");

    w.login("odd", "dave", t + 60);
    let odd = w.req(&lenient(), "odd", SAFARI, HOSTING, t + 60);
    let login = odd.risks.login.clone().unwrap();
    for r in [
        Reason::NewDeviceForUser,
        Reason::NewNetworkForUser,
        Reason::NewCountryForUser,
    ] {
        assert!(login.has(r), "{r:?} missing: {login:?}");
    }
    assert!(login.score > 30, "{login:?}");
    explained(&odd);

    // Login risk is judged once per session.
    let again = w.req(&lenient(), "odd", SAFARI, HOSTING, t + 120);
    assert_eq!(again.risks.login, None);
}

#[test]
fn a_value_popular_with_everyone_weighs_less_than_a_rare_one() {
    let population = Population::new();
    let popular = Features([0, 100, 0, 0, 0, 0]);
    let rare = Features([0, 200, 0, 0, 0, 0]);
    for _ in 0..5000 {
        population.observe(&popular, &[Feature::Asn]);
    }
    population.observe(&rare, &[Feature::Asn]);
    let mut user = UserProfile::new(0);
    for _ in 0..20 {
        user.observe(&Features([0, 300, 0, 0, 0, 0]), &[Feature::Asn], 0);
    }
    let llr = |f: &Features| {
        user.evidence(&population, f, &[Feature::Asn], 6.0)
            .next()
            .unwrap()
            .llr
    };
    let own = llr(&Features([0, 300, 0, 0, 0, 0]));
    assert_eq!(own, 0.0);
    assert!(
        llr(&rare) > llr(&popular),
        "{} vs {}",
        llr(&rare),
        llr(&popular)
    );
    assert!(llr(&popular) > 0.0);
}

#[test]
fn familiar_networks_are_no_evidence_mid_session() {
    let w = world();
    w.history("erin", 10);
    let t = T0 + 10 * DAY;
    w.login("s", "erin", t);
    w.req(&lenient(), "s", FIREFOX, HOME, t);
    // Mobile is Erin's lunchtime network: the move is not evidence.
    let v = w.req(&strict(), "s", FIREFOX, MOBILE, t + 3 * 3600);
    assert!(v.risk.reasons.is_empty(), "{:?}", v.risk);
    // Manchester is not hers: the move counts, and the model adds to it.
    let v = w.req(&strict(), "s", FIREFOX, MANCHESTER, t + 6 * 3600);
    assert!(v.risk.has(Reason::AsnChanged));
    assert!(v.risk.has(Reason::NewNetworkForUser), "{:?}", v.risk);
    assert!(v.risk.points(Reason::NewNetworkForUser) <= 20);
    explained(&v);
}

// --- entity risk ---

#[test]
fn revoking_a_user_ends_the_sessions_they_had() {
    let w = world();
    let p = lenient();
    w.login("old", "frank", T0);
    w.req(&p, "old", FIREFOX, HOME, T0);
    let user = w.engine.user_key("frank");
    w.engine.scorer().revoke_user(user, T0 + 10);
    let v = w.req(&p, "old", FIREFOX, HOME, T0 + 20);
    assert!(v.risks.entity.has(Reason::UserRevoked));
    assert_eq!(v.action, Action::Block, "refused even by a lenient policy");
    // A session bound after the revocation is fine, even in the same second.
    w.login("new", "frank", T0 + 10);
    let v = w.req(&p, "new", FIREFOX, HOME, T0 + 10);
    assert!(!v.risk.has(Reason::UserRevoked));
    assert_eq!(v.action, Action::Allow);
    // The old cookie, replayed on and on, is refused without counting
    // against frank's new session: a revocation is not a detection.
    for i in 0..5 {
        assert_eq!(
            w.req(&strict(), "old", CHROME, HOSTING, T0 + 20 + i).action,
            Action::Block
        );
    }
    let v = w.req(&p, "new", FIREFOX, HOME, T0 + 30);
    assert!(v.risk.reasons.is_empty(), "{:?}", v.risk);
}

#[test]
fn a_partner_report_raises_every_session_until_it_expires() {
    let w = world();
    let p = lenient();
    w.login("s", "gina", T0);
    w.req(&p, "s", FIREFOX, HOME, T0);
    let user = w.engine.user_key("gina");
    w.engine
        .scorer()
        .report_user(user, 40, std::time::Duration::from_secs(3600), T0 + 1);
    let v = w.req(&p, "s", FIREFOX, HOME, T0 + 2);
    assert_eq!(v.risks.entity.points(Reason::PartnerReported), 40);
    assert_eq!(v.risk.level, RiskLevel::Medium);
    let v = w.req(&p, "s", FIREFOX, HOME, T0 + 3602);
    assert!(!v.risk.has(Reason::PartnerReported));
}

#[test]
fn a_detection_on_one_session_raises_the_users_others_until_confirmed() {
    let w = world();
    let p = strict();
    w.login("laptop", "hank", T0);
    w.login("phone", "hank", T0);
    w.req(&p, "laptop", FIREFOX, HOME, T0);
    w.req(&p, "phone", SAFARI, MOBILE, T0);
    let thief = w.req(&p, "laptop", CHROME, HOSTING, T0 + 60);
    assert_eq!(thief.action, Action::Block);
    let phone = w.req(&p, "phone", SAFARI, MOBILE, T0 + 120);
    assert_eq!(phone.risks.entity.points(Reason::RecentDetections), 15);
    // The user passes a step-up on the phone: the detections are cleared.
    let passed = w.req(&p, "phone", SAFARI, MOBILE, T0 + 130);
    assert!(w.engine.confirm(&passed));
    let phone = w.req(&p, "phone", SAFARI, MOBILE, T0 + 140);
    assert!(!phone.risk.has(Reason::RecentDetections));
}

// --- what rules read of the session: requests and step-ups ---

/// Rules that decide nothing and keep what they were shown of the session.
#[derive(Debug, Default)]
struct SessionSeen(std::sync::Mutex<Vec<Option<crate::decide::SessionFacts>>>);

impl crate::decide::Rules for SessionSeen {
    fn rule(&self, facts: &crate::decide::Facts<'_>) -> crate::decide::Ruling {
        self.0.lock().unwrap().push(facts.session);
        crate::decide::Ruling::table(facts.default)
    }
}

impl World {
    /// [`World::req`] with `rules` in front of the policy, applied as an
    /// enforcing route does.
    fn req_ruled(
        &self,
        policy: &Policy,
        rules: &SessionSeen,
        session: &str,
        ua: &str,
        ip: &str,
        at: u64,
    ) -> Verdict {
        let h = headers(session, ua);
        let forwarded = crate::client_ip::ForwardedHeaders::default();
        let v = self
            .engine
            .decide_with_rules(&view(&h, ip, at), policy, rules, forwarded)
            .unwrap();
        self.engine.apply(
            &v,
            &crate::pipeline::Decision {
                enforcement: crate::pipeline::Enforcement::Enforce,
                route: "",
                reference: None,
                rule: None,
                tags: None,
            },
        );
        v
    }
}

#[test]
fn a_session_counts_the_requests_it_was_allowed_including_the_one_judged() {
    let w = world();
    let p = strict();
    let seen = SessionSeen::default();
    let key = w.engine.key_for_credential(b"s").unwrap();
    // Unchanged requests (the store's count-only path), a move of network
    // (the state rewritten), and requests in the same second.
    for (ip, at) in [
        (HOME, T0),
        (HOME, T0 + 1),
        (HOME, T0 + 1),
        (HOME_OTHER_PREFIX, T0 + 120),
        (HOME_OTHER_PREFIX, T0 + 121),
    ] {
        assert_eq!(
            w.req_ruled(&p, &seen, "s", FIREFOX, ip, at).action,
            Action::Allow
        );
    }
    let requests: Vec<u64> = seen
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.unwrap().requests)
        .collect();
    assert_eq!(requests, [1, 2, 3, 4, 5]);
    assert_eq!(w.engine.scorer().session(&key).unwrap().requests(), 5);
    // A refused request (another device from a hosting network) is not
    // counted: it was not let through, and the session teaches nothing.
    let thief = w.req_ruled(&p, &seen, "s", CHROME, HOSTING, T0 + 130);
    assert_eq!(thief.action, Action::Block);
    assert_eq!(seen.0.lock().unwrap().last().unwrap().unwrap().requests, 6);
    assert_eq!(w.engine.scorer().session(&key).unwrap().requests(), 5);
    w.req_ruled(&p, &seen, "s", FIREFOX, HOME_OTHER_PREFIX, T0 + 140);
    assert_eq!(seen.0.lock().unwrap().last().unwrap().unwrap().requests, 6);
    // The count travels with the session's record.
    let b = world();
    let record = w.engine.scorer().export(&key).unwrap();
    b.engine.scorer().import(&record, T0 + 150).unwrap();
    assert_eq!(b.engine.scorer().session(&key).unwrap().requests(), 6);
    // Without a session, rules see none.
    let anon = HeaderMap::new();
    let forwarded = crate::client_ip::ForwardedHeaders::default();
    w.engine
        .decide_with_rules(&view(&anon, HOME, T0), &p, &seen, forwarded)
        .unwrap();
    assert_eq!(*seen.0.lock().unwrap().last().unwrap(), None);
}

#[test]
fn a_passed_step_up_sets_the_sessions_step_up_time() {
    let w = world();
    let p = strict();
    let seen = SessionSeen::default();
    let key = w.engine.key_for_credential(b"s").unwrap();
    w.login("s", "una", T0);
    w.req_ruled(&p, &seen, "s", FIREFOX, HOME, T0);
    assert_eq!(
        w.engine.scorer().session(&key).unwrap().stepped_up_at(),
        None
    );
    let moved = w.req_ruled(&p, &seen, "s", FIREFOX, MANCHESTER, T0 + 7200);
    assert_eq!(moved.action, Action::StepUp);
    assert_eq!(seen.0.lock().unwrap()[1].unwrap().stepped_up_at, None);
    assert!(w.engine.confirm(&moved));
    assert_eq!(
        w.engine.scorer().session(&key).unwrap().stepped_up_at(),
        Some(T0 + 7200)
    );
    // Later requests read it, and keep it through the state's rewrites
    // (a move of network) and the count-only path.
    w.req_ruled(&p, &seen, "s", FIREFOX, MANCHESTER, T0 + 7300);
    w.req_ruled(&p, &seen, "s", FIREFOX, HOME, T0 + 20_000);
    for s in &seen.0.lock().unwrap()[2..] {
        assert_eq!(s.unwrap().stepped_up_at, Some(T0 + 7200));
    }
    // A second step-up moves it; a snapshot keeps it.
    let again = w.req(&p, "s", FIREFOX, HOME, T0 + 30_000);
    assert!(w.engine.confirm(&again));
    let after = world();
    after
        .engine
        .scorer()
        .restore(&w.engine.scorer().snapshot(), T0 + 30_010)
        .unwrap();
    let state = after.engine.scorer().session(&key).unwrap();
    assert_eq!(state.stepped_up_at(), Some(T0 + 30_000));
    assert_eq!(state, w.engine.scorer().session(&key).unwrap());
    // An operator's false-positive feedback is not a step-up.
    let other = w.req(&p, "f", FIREFOX, HOME, T0);
    let f = w.engine.key_for_credential(b"f").unwrap();
    w.engine
        .feedback(
            Feedback::FalsePositive {
                session: f,
                device: other.device.summary(),
                network: other.network,
            },
            T0 + 5,
        )
        .unwrap();
    assert_eq!(w.engine.scorer().session(&f).unwrap().stepped_up_at(), None);
}

#[test]
fn the_previous_releases_records_and_snapshots_still_load() {
    let w = world();
    w.req(&strict(), "s", FIREFOX, HOME, T0);
    w.req(&strict(), "s", FIREFOX, HOME, T0 + 1);
    let key = w.engine.key_for_credential(b"s").unwrap();
    let state = w.engine.scorer().session(&key).unwrap();
    // A version 1 record is the version 2 one without its last 8 bytes.
    let mut v1 = w.engine.scorer().export(&key).unwrap()[..SessionState::RECORD_LEN_V1].to_vec();
    v1[16] = 1;
    let (k, read) = SessionState::decode(&v1).unwrap();
    assert_eq!(k, key);
    assert_eq!((read.requests(), read.stepped_up_at()), (0, None));
    assert_eq!(
        read,
        SessionState {
            requests: 0,
            stepped_up_at: 0,
            touched: state.last_seen,
            ..state
        }
    );
    // A version 1 record of version 2's length, or the reverse, is refused.
    let mut long = w.engine.scorer().export(&key).unwrap();
    long[16] = 1;
    assert!(matches!(
        SessionState::decode(&long),
        Err(RecordError::Length {
            expected: 104,
            got: 112
        })
    ));
    // A `VIGILSS2` snapshot: the header, then version 1 records.
    let mut old = b"VIGILSS2".to_vec();
    for n in [1u64, 0, 0, 0] {
        old.extend_from_slice(&n.to_le_bytes());
    }
    old.extend_from_slice(&v1);
    let fresh = world();
    let restored = fresh.engine.scorer().restore(&old, T0 + 10).unwrap();
    assert_eq!((restored.sessions, restored.refused), (1, 0));
    assert_eq!(
        fresh.engine.scorer().session(&key).unwrap().device(),
        state.device()
    );
    // Version 2 records under the old header do not fit its record size.
    let mut mixed = old[..40].to_vec();
    mixed.extend_from_slice(&w.engine.scorer().export(&key).unwrap());
    assert!(matches!(
        fresh.engine.scorer().restore(&mixed, T0 + 10),
        Err(SnapshotError::Length { .. })
    ));
}

// --- feedback ---

#[test]
fn a_passed_step_up_makes_the_new_network_the_baseline() {
    let w = world();
    let p = strict();
    w.req(&p, "s", FIREFOX, HOME, T0);
    let moved = w.req(&p, "s", FIREFOX, MANCHESTER, T0 + 7200);
    assert_eq!(moved.action, Action::StepUp);
    // Refused, so not learnt: the next request from there is asked again.
    assert_eq!(
        w.req(&p, "s", FIREFOX, MANCHESTER, T0 + 7260).action,
        Action::StepUp
    );
    let passed = w.req(&p, "s", FIREFOX, MANCHESTER, T0 + 7300);
    assert_eq!(passed.action, Action::StepUp);
    assert!(w.engine.confirm(&passed));
    let after = w.req(&p, "s", FIREFOX, MANCHESTER, T0 + 7360);
    assert_eq!(after.action, Action::Allow);
    assert!(after.risk.reasons.is_empty());
}

#[test]
fn a_false_positive_rebaselines_the_session_and_trusts_its_facts() {
    let w = world();
    let p = strict();
    w.history("ivy", 10);
    let t = T0 + 10 * DAY;
    w.login("s", "ivy", t);
    w.req(&p, "s", FIREFOX, HOME, t);
    // Ivy got a new laptop mid-session (same cookie synced): blocked.
    let refused = w.req(&p, "s", CHROME, HOME, t + 60);
    assert_eq!(refused.action, Action::Block);
    let key = w.engine.key_for_credential(b"s").unwrap();
    let false_positive = Feedback::FalsePositive {
        session: key,
        device: refused.device.summary(),
        network: crate::NetworkFacts::from(&refused.client),
    };
    // Someone else's request in between changes nothing: the refused
    // request's own facts are adopted, not whoever comes next.
    assert_eq!(
        w.req(&p, "s", SAFARI, HOSTING, t + 90).action,
        Action::Block
    );
    assert_eq!(w.engine.feedback(false_positive, t + 100), Ok(()));
    assert_eq!(w.req(&p, "s", CHROME, HOME, t + 120).action, Action::Allow);
    assert_eq!(w.req(&p, "s", CHROME, HOME, t + 180).action, Action::Allow);
    assert_eq!(
        w.req(&p, "s", SAFARI, HOSTING, t + 200).action,
        Action::Block
    );
    // A revoked session stays revoked whatever the feedback.
    w.engine.scorer().revoke(key, t + 210);
    assert_eq!(
        w.engine.feedback(false_positive, t + 220),
        Err(FeedbackError::Revoked)
    );
    // The device is now trusted for Ivy: a new session on it has no device
    // points at login.
    w.login("s2", "ivy", t + 300);
    let v = w.req(&p, "s2", CHROME, HOME, t + 300);
    assert!(!v.risk.has(Reason::NewDeviceForUser), "{:?}", v.risk);
}

#[test]
fn a_trusted_network_is_no_evidence_and_costs_no_points() {
    let w = world();
    let p = lenient();
    w.history("jack", 10);
    let t = T0 + 10 * DAY;
    let user = w.engine.user_key("jack");
    w.login("s", "jack", t);
    w.req(&p, "s", FIREFOX, HOME, t);
    let before = w.req(&p, "s", FIREFOX, MANCHESTER, t + 7200);
    assert!(before.risk.has(Reason::AsnChanged));
    w.req(&p, "s", FIREFOX, HOME, t + 20_000);
    w.engine
        .feedback(
            Feedback::TrustNetwork {
                user,
                network: TrustedNetwork::Asn(5089),
            },
            t + 20_001,
        )
        .unwrap();
    let after = w.req(&p, "s", FIREFOX, MANCHESTER, t + 40_000);
    assert!(after.risk.reasons.is_empty(), "{:?}", after.risk);

    w.engine
        .feedback(
            Feedback::TrustDevice {
                user,
                device: w.req(&p, "probe", SAFARI, HOME, t).device.id,
            },
            t,
        )
        .unwrap();
    w.login("mac", "jack", t + 50_000);
    let v = w.req(&p, "mac", SAFARI, HOME, t + 50_000);
    assert!(!v.risk.has(Reason::NewDeviceForUser), "{:?}", v.risk);
}

// --- state ---

#[test]
fn a_session_record_carries_the_baseline_to_another_node() {
    let a = world();
    let b = world();
    let p = strict();
    a.login("s", "kim", T0);
    a.req(&p, "s", FIREFOX, HOME, T0);
    let key = a.engine.key_for_credential(b"s").unwrap();
    let record = a.engine.scorer().export(&key).unwrap();
    assert_eq!(b.engine.scorer().import(&record, T0 + 30), Ok(key));
    assert_eq!(
        b.engine.scorer().session(&key),
        a.engine.scorer().session(&key)
    );
    // The replay lands on the other node and is caught there.
    assert_eq!(
        b.req(&p, "s", CHROME, HOSTING, T0 + 60).action,
        Action::Block
    );
    assert_eq!(b.req(&p, "s", FIREFOX, HOME, T0 + 60).action, Action::Allow);
    assert_eq!(a.engine.scorer().export_all().len(), 1);
}

#[test]
fn a_thief_first_on_another_node_is_judged_against_the_owners_earlier_baseline() {
    let a = world();
    let b = world();
    let p = strict();
    // The owner is seen on node A first.
    a.login("s", "lena", T0);
    a.req(&p, "s", FIREFOX, HOME, T0);
    let key = a.engine.key_for_credential(b"s").unwrap();
    let owners = a.engine.scorer().export(&key).unwrap();
    // The thief reaches node B before the owner's sighting does: B's
    // first sighting is the thief's.
    assert_eq!(
        b.req(&p, "s", CHROME, HOSTING, T0 + 5).action,
        Action::Allow
    );
    let thiefs = b.engine.scorer().export(&key).unwrap();
    // The owner's record, seen earlier, replaces the thief's baseline on
    // B; the thief's, arriving at A, changes nothing there.
    assert_eq!(
        b.engine.scorer().adopt(&owners, false, T0 + 6),
        Ok((key, Adopted::Baseline))
    );
    assert_eq!(
        a.engine.scorer().adopt(&thiefs, false, T0 + 6),
        Ok((key, Adopted::Kept))
    );
    assert_eq!(
        b.req(&p, "s", CHROME, HOSTING, T0 + 10).action,
        Action::Block
    );
    // The record carried the binding: B knows whose session it is.
    assert_eq!(
        b.engine.scorer().session(&key).unwrap().user(),
        Some(a.engine.user_key("lena"))
    );
}

/// What a forged or stale record cannot do: take the baseline of a
/// session bound to another user, bring a step-up without a confirmation,
/// or bring back a session idle for longer than this node keeps one.
#[test]
fn a_record_cannot_rebind_claim_a_step_up_or_revive_an_idle_session() {
    let a = world();
    let b = world();
    let p = lenient();
    b.login("s", "rita", T0);
    b.req(&p, "s", FIREFOX, HOME, T0 + 10);
    let key = b.engine.key_for_credential(b"s").unwrap();
    // A record of the same session, seen earlier, bound to someone else.
    a.login("s", "sam", T0);
    let passed = a.req(&p, "s", CHROME, HOSTING, T0);
    assert!(a.engine.confirm(&passed));
    let forged = a.engine.scorer().export(&key).unwrap();
    assert_eq!(
        b.engine.scorer().adopt(&forged, false, T0 + 20),
        Ok((key, Adopted::Kept))
    );
    assert_eq!(
        b.engine.scorer().session(&key).unwrap().user(),
        Some(b.engine.user_key("rita"))
    );
    // A node that never saw it takes it, but not its step-up.
    let c = world();
    assert_eq!(
        c.engine.scorer().adopt(&forged, false, T0 + 20),
        Ok((key, Adopted::New))
    );
    assert_eq!(
        c.engine.scorer().session(&key).unwrap().stepped_up_at(),
        None
    );
    // Idle for longer than sessions are kept: not taken at all.
    let d = world();
    assert_eq!(
        d.engine.scorer().adopt(&forged, false, T0 + 31 * DAY),
        Ok((key, Adopted::Kept))
    );
    assert_eq!(d.engine.scorer().session(&key), None);
}

#[test]
fn an_adopted_session_is_bound_under_this_nodes_revocation_count() {
    let a = world();
    let b = world();
    let p = lenient();
    let user = b.engine.user_key("mona");
    // B revoked mona twice before; A never did.
    b.engine.scorer().revoke_user(user, T0 - 100);
    b.engine.scorer().revoke_user(user, T0 - 50);
    a.login("s", "mona", T0);
    a.req(&p, "s", FIREFOX, HOME, T0);
    let key = a.engine.key_for_credential(b"s").unwrap();
    let record = a.engine.scorer().export(&key).unwrap();
    assert_eq!(
        b.engine.scorer().adopt(&record, false, T0 + 1),
        Ok((key, Adopted::New))
    );
    // Not ended by revocations B applied before it knew the session...
    let v = b.req(&p, "s", FIREFOX, HOME, T0 + 2);
    assert!(!v.risk.has(Reason::UserRevoked), "{:?}", v.risk);
    // ...but by the next one.
    b.engine.scorer().revoke_user(user, T0 + 3);
    assert_eq!(b.req(&p, "s", FIREFOX, HOME, T0 + 4).action, Action::Block);
    // A revoked session takes nothing in.
    assert_eq!(
        b.engine.scorer().adopt(&record, true, T0 + 5),
        Ok((key, Adopted::Revoked))
    );
}

#[test]
fn a_confirmed_record_moves_the_baseline_and_a_later_sighting_does_not() {
    let a = world();
    let b = world();
    let p = lenient();
    b.login("s", "nina", T0);
    b.req(&p, "s", FIREFOX, HOME, T0);
    let key = b.engine.key_for_credential(b"s").unwrap();
    // A saw the session later, from the phone: not the baseline.
    a.login("s", "nina", T0);
    a.req(&p, "s", SAFARI, MOBILE, T0 + 60);
    let later = a.engine.scorer().export(&key).unwrap();
    assert_eq!(
        b.engine.scorer().adopt(&later, false, T0 + 61),
        Ok((key, Adopted::Kept))
    );
    assert_eq!(b.engine.scorer().session(&key).unwrap().device().id, {
        let v = b.req(&p, "s", FIREFOX, HOME, T0 + 62);
        v.device.id
    });
    // Nina proves herself on the phone at A: B takes the phone as the
    // baseline.
    assert_eq!(
        b.engine.scorer().adopt(&later, true, T0 + 70),
        Ok((key, Adopted::Baseline))
    );
    let v = b.req(&p, "s", SAFARI, MOBILE, T0 + 71);
    assert!(v.risks.session.reasons.is_empty(), "{:?}", v.risks.session);
}

#[test]
fn the_fleets_detections_raise_the_users_risk_here_without_double_counting() {
    let w = world();
    let p = lenient();
    w.login("s", "olga", T0);
    w.req(&p, "s", FIREFOX, HOME, T0);
    let user = w.engine.user_key("olga");
    w.engine
        .scorer()
        .fleet_detections(user, 2, T0 + 3600, T0 + 1);
    let v = w.req(&p, "s", FIREFOX, HOME, T0 + 2);
    assert_eq!(v.risks.entity.points(Reason::RecentDetections), 30);
    // The same count again, or a lower one, adds nothing: it is the
    // fleet's total, this node's included.
    w.engine
        .scorer()
        .fleet_detections(user, 2, T0 + 3600, T0 + 3);
    w.engine
        .scorer()
        .fleet_detections(user, 1, T0 + 3600, T0 + 3);
    let v = w.req(&p, "s", FIREFOX, HOME, T0 + 4);
    assert_eq!(v.risks.entity.points(Reason::RecentDetections), 30);
    // It lapses when the fleet's window does.
    let v = w.req(&p, "s", FIREFOX, HOME, T0 + 3601);
    assert!(!v.risk.has(Reason::RecentDetections));
    // A count already over is nothing.
    w.engine
        .scorer()
        .fleet_detections(user, 3, T0 + 10, T0 + 3602);
    let v = w.req(&p, "s", FIREFOX, HOME, T0 + 3603);
    assert!(!v.risk.has(Reason::RecentDetections));
    // The fleet's clear (she passed a step-up elsewhere) clears it here.
    w.engine
        .scorer()
        .fleet_detections(user, 2, T0 + 7200, T0 + 3604);
    let v = w.req(&p, "s", FIREFOX, HOME, T0 + 3605);
    assert_eq!(v.risks.entity.points(Reason::RecentDetections), 30);
    w.engine
        .scorer()
        .fleet_detections(user, 0, T0 + 3606, T0 + 3606);
    let v = w.req(&p, "s", FIREFOX, HOME, T0 + 3607);
    assert!(!v.risk.has(Reason::RecentDetections));
}

#[test]
fn erasing_a_user_ends_their_sessions_and_forgets_them() {
    let w = world();
    let p = lenient();
    let user = w.engine.user_key("pia");
    // An old session of hers, ended with all of hers; a new one since.
    w.login("s0", "pia", T0);
    w.req(&p, "s0", FIREFOX, HOME, T0);
    w.engine.scorer().revoke_user(user, T0);
    w.login("s1", "pia", T0 + 1);
    w.req(&p, "s1", FIREFOX, HOME, T0 + 1);
    w.login("other", "quin", T0);
    w.req(&p, "other", FIREFOX, HOME, T0);
    w.engine
        .scorer()
        .report_user(user, 40, std::time::Duration::from_secs(3600), T0);
    assert_eq!(w.engine.scorer().erase_user(user, T0 + 2), 1);
    // Her sessions are ended, and nothing left names her.
    assert_eq!(w.req(&p, "s1", FIREFOX, HOME, T0 + 3).action, Action::Block);
    let snapshot = w.engine.scorer().snapshot();
    let key = user.as_u64().to_le_bytes();
    assert!(
        !snapshot.windows(8).any(|b| b == key),
        "the user's key is nowhere in the node's state"
    );
    // Another user's session is untouched.
    assert_eq!(
        w.req(&p, "other", FIREFOX, HOME, T0 + 3).action,
        Action::Allow
    );
}

/// Chrome's full hello: no padding, pre_shared_key, early_data or cookie,
/// so both forms are its JA4.
const CHROME_JA4: &str = "t13d1516h2_8daaf6152771_02713d6af862";
/// The same Chrome resuming its TLS session (pre_shared_key added).
const CHROME_RESUMED_JA4: &str = "t13d1517h2_8daaf6152771_4b22cc4a5f4e";

fn hello_tls(spec: &str, stable: &str) -> TlsFingerprint {
    TlsFingerprint {
        ja4_stable: Some(stable.parse().unwrap()),
        ..TlsFingerprint::captured(spec.parse().unwrap())
    }
}

fn req_tls(w: &World, p: &Policy, session: &str, tls: TlsFingerprint, at: u64) -> Verdict {
    let h = headers(session, FIREFOX);
    let mut v = view(&h, HOME, at);
    v.tls = tls;
    w.engine.evaluate(&v, p).unwrap()
}

#[test]
fn the_owner_resuming_tls_is_the_same_device_and_a_thief_is_not() {
    let w = world();
    let p = strict();
    let full = hello_tls(CHROME_JA4, CHROME_JA4);
    let resumed = hello_tls(CHROME_RESUMED_JA4, CHROME_JA4);
    for (session, first, then) in [("a", full, resumed), ("b", resumed, full)] {
        let v = req_tls(&w, &p, session, first, T0);
        assert_eq!(v.action, Action::Allow);
        for i in 1..=5 {
            for tls in [then, first] {
                let v = req_tls(&w, &p, session, tls, T0 + i);
                assert_eq!(v.action, Action::Allow, "{session} {i}: {:?}", v.risk);
                assert!(!v.risk.has(Reason::Ja4Mismatch), "{:?}", v.risk);
            }
        }
        // The thief: the cookie, User-Agent and address, another stack,
        // full or resumed.
        for thief in [
            hello_tls(
                "t13d3112h2_e8f1e7e78f70_6bebaf5329ac",
                "t13d3112h2_e8f1e7e78f70_6bebaf5329ac",
            ),
            hello_tls(
                "t13d3113h2_e8f1e7e78f70_0c0ffee0c0de",
                "t13d3112h2_e8f1e7e78f70_6bebaf5329ac",
            ),
        ] {
            let v = req_tls(&w, &p, session, thief, T0 + 10);
            assert!(v.risk.has(Reason::Ja4Mismatch), "{:?}", v.risk);
            assert_eq!(v.action, Action::Block, "{:?}", v.risk);
        }
    }
    // Session a keeps its full hello's JA4 (the two forms are one): a
    // version 2 record, byte for byte what the previous release wrote.
    // Session b's first hello was resumed: it keeps the stable form, which
    // only a version 3 record holds.
    let record = |s: &str| {
        let key = w.engine.key_for_credential(s.as_bytes()).unwrap();
        w.engine.scorer().export(&key).unwrap()
    };
    let (a, b) = (record("a"), record("b"));
    assert_eq!((a[16], a[27]), (2, 1));
    assert_eq!((b[16], b[27]), (3, 0x81));
    for r in [a, b] {
        let (_, state) = SessionState::decode(&r).unwrap();
        assert_eq!(state.device().ja4, Some(CHROME_JA4.parse().unwrap()));
    }
    let (_, state) = SessionState::decode(&b).unwrap();
    assert_eq!(state.device().ja4_form, crate::Ja4Form::Stable);
}

#[test]
fn a_previous_releases_spec_baseline_moves_to_the_stable_form_once_it_matches() {
    // The previous release kept the spec form of whatever hello came
    // first: here a resumed one.
    let old = world();
    let p = strict();
    let resumed_spec_only = TlsFingerprint::captured(CHROME_RESUMED_JA4.parse().unwrap());
    req_tls(&old, &p, "s", resumed_spec_only, T0);
    let key = old.engine.key_for_credential(b"s").unwrap();
    let record = old.engine.scorer().export(&key).unwrap();
    assert_eq!((record[16], record[27]), (2, 1));

    let w = world();
    w.engine.scorer().import(&record, T0 + 1).unwrap();
    let full = hello_tls(CHROME_JA4, CHROME_JA4);
    let resumed = hello_tls(CHROME_RESUMED_JA4, CHROME_JA4);
    // A full hello against that baseline is only the same family (a limit:
    // a spec form cannot be reduced); it is not learnt.
    let v = req_tls(&w, &lenient(), "s", full, T0 + 2);
    assert!(v.risk.has(Reason::Ja4Mismatch), "{:?}", v.risk);
    // The next resumed hello matches it, and the baseline becomes its
    // stable form: from then on full and resumed hellos both match.
    let v = req_tls(&w, &p, "s", resumed, T0 + 3);
    assert!(v.risk.reasons.is_empty(), "{:?}", v.risk);
    let state = w.engine.scorer().session(&key).unwrap();
    assert_eq!(state.device().ja4, Some(CHROME_JA4.parse().unwrap()));
    assert_eq!(state.device().ja4_form, crate::Ja4Form::Stable);
    assert_eq!(w.engine.scorer().export(&key).unwrap()[16], 3);
    for tls in [full, resumed, full] {
        let v = req_tls(&w, &p, "s", tls, T0 + 4);
        assert_eq!(v.action, Action::Allow, "{:?}", v.risk);
        assert!(v.risk.reasons.is_empty(), "{:?}", v.risk);
    }
}

#[test]
fn a_version_3_record_restores_and_its_form_bit_is_nowhere_else() {
    let w = world();
    req_tls(
        &w,
        &strict(),
        "s",
        hello_tls(CHROME_RESUMED_JA4, CHROME_JA4),
        T0,
    );
    let key = w.engine.key_for_credential(b"s").unwrap();
    let v3 = w.engine.scorer().export(&key).unwrap();
    assert_eq!(v3[16], 3);
    // A snapshot of version 3 records restores whole, under the same header.
    let fresh = world();
    let restored = fresh
        .engine
        .scorer()
        .restore(&w.engine.scorer().snapshot(), T0 + 10)
        .unwrap();
    assert_eq!((restored.sessions, restored.refused), (1, 0));
    assert_eq!(
        fresh.engine.scorer().session(&key).unwrap().device(),
        w.engine.scorer().session(&key).unwrap().device()
    );
    // The form bit in a version 1 or 2 record is a value no release
    // writes; so is a stable form without a JA4.
    let mut v2 = v3;
    v2[16] = 2;
    assert_eq!(
        SessionState::decode(&v2),
        Err(RecordError::Field("tls source"))
    );
    let mut no_ja4 = v3;
    no_ja4[17] &= !16;
    assert_eq!(
        SessionState::decode(&no_ja4),
        Err(RecordError::Field("tls source"))
    );
}

#[test]
fn records_refuse_what_no_release_writes() {
    let w = world();
    w.req(&strict(), "s", FIREFOX, HOME, T0);
    let key = w.engine.key_for_credential(b"s").unwrap();
    let record = w.engine.scorer().export(&key).unwrap();
    let scorer = w.engine.scorer();
    assert!(matches!(
        scorer.import(&record[..100], T0),
        Err(RecordError::Length { .. })
    ));
    let mut bad = record;
    bad[16] = 9;
    assert_eq!(scorer.import(&bad, T0), Err(RecordError::Version(9)));
    // Every bit of the flags byte now has a meaning (bit 2 marks a session
    // the app issued or its user proved themselves on).
    let mut bad = record;
    bad[26] = 0x80;
    assert_eq!(
        scorer.import(&bad, T0),
        Err(RecordError::Field("header shape"))
    );
    let mut bad = record;
    bad[27] = 9;
    assert_eq!(
        scorer.import(&bad, T0),
        Err(RecordError::Field("tls source"))
    );
}

#[test]
fn a_session_costs_at_most_the_record_budget_in_memory() {
    // The store's table holds key and state inline (see store.rs): 120
    // bytes an entry; 263 a session measured at a million (the example
    // session_memory), over the 256-byte budget since the request count
    // and step-up time (docs/performance.md).
    assert!(
        std::mem::size_of::<SessionState>() <= 104,
        "{}",
        std::mem::size_of::<SessionState>()
    );
    assert!(
        std::mem::size_of::<UserProfile>() <= 320,
        "{}",
        std::mem::size_of::<UserProfile>()
    );
}

#[test]
fn a_profile_keeps_its_most_seen_and_trusted_values() {
    let mut p = UserProfile::new(0);
    let f = |v: u32| Features([v, 0, 0, 0, 0, 0]);
    p.trust(Feature::Prefix, 999, 0);
    for v in 1..=3 {
        for _ in 0..10 {
            p.observe(&f(v), &[Feature::Prefix], 0);
        }
    }
    // A stream of one-off values cannot push out the frequent or trusted.
    for v in 100..200 {
        p.observe(&f(v), &[Feature::Prefix], 0);
    }
    for v in 1..=3 {
        assert_eq!(p.count(Feature::Prefix, v), (10, false));
    }
    assert!(p.count(Feature::Prefix, 999).1);
}

fn arb_state() -> impl Strategy<Value = SessionState> {
    (
        any::<u64>(),
        0u8..8,
        0u8..4,
        proptest::option::of(("t1[23]d[0-9]{4}h2", any::<bool>())),
        any::<[u32; 5]>(),
        proptest::option::of(("[A-Z]{2}", -9000i16..=9000, -18000i16..=18000, any::<u16>())),
        (
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            // In memory: bits 0-1 flags, 5-7 the move count (2 is free,
            // 3-4 exist only in records).
            any::<u8>().prop_map(|f| f & 0xe3),
            any::<u16>(),
            any::<u32>(),
            any::<u32>(),
        ),
    )
        .prop_map(
            |(id, shape, src, a, [client, prefix, provider, egress, asn], place, rest)| {
                let (user, first, last, previous, moved, flags, generation, requests, stepped) =
                    rest;
                let ja4 = a.and_then(|(a, stable)| {
                    let form = if stable {
                        Ja4Form::Stable
                    } else {
                        Ja4Form::Spec
                    };
                    let ja4 = format!("{a}_0123456789ab_ba9876543210").parse().ok()?;
                    Some((ja4, form))
                });
                let (country, place) = match place {
                    Some((c, lat, lon, acc)) => {
                        let b = c.as_bytes();
                        (
                            [b[0], b[1]],
                            Some(Place {
                                lat,
                                lon,
                                accuracy_km: acc,
                            }),
                        )
                    }
                    None => ([0; 2], None),
                };
                SessionState {
                    device_id: DeviceId(id),
                    shape: crate::HeaderShape::from_bits(shape),
                    tls_source: crate::TlsSource::from_u8(src).unwrap(),
                    ja4,
                    network: NetworkMark {
                        client,
                        prefix,
                        provider,
                        egress,
                        asn,
                        country,
                    },
                    place,
                    user: UserKey::from_u64(user),
                    first_seen: first,
                    last_seen: last,
                    previous,
                    moved_at: moved,
                    // Not part of the record: read back as the last-seen time.
                    touched: last,
                    requests,
                    stepped_up_at: stepped,
                    generation,
                    flags,
                }
            },
        )
}

proptest! {
    #[test]
    fn records_round_trip(state in arb_state(), key in any::<[u8; 16]>()) {
        let key = SessionKey::from_bytes(key);
        let record = state.encode(&key);
        prop_assert_eq!(SessionState::decode(&record), Ok((key, state)));
    }

    #[test]
    fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = SessionState::decode(&bytes);
        let mut fixed = [0u8; SessionState::RECORD_LEN];
        for (d, s) in fixed.iter_mut().zip(&bytes) {
            *d = *s;
        }
        fixed[16] = 2 + (bytes.first().copied().unwrap_or(0) & 1);
        if let Ok((k, s)) = SessionState::decode(&fixed) {
            // Whatever decodes re-encodes to a record that decodes the same.
            prop_assert_eq!(SessionState::decode(&s.encode(&k)), Ok((k, s)));
        }
    }

    /// Random walks of one session over networks, devices and times: every
    /// verdict's score is its reasons' sum; a request from the network of
    /// the one before carries no network reason (the lenient policy allowed
    /// it, so the session followed), and one on the session's first device
    /// no device reason (a session never moves to another device).
    #[test]
    fn every_score_is_explained(steps in proptest::collection::vec((0usize..7, 0usize..3, 1u64..20_000), 1..25)) {
        let w = world();
        let ips = [HOME, HOME_OTHER_PREFIX, MOBILE, MANCHESTER, PARIS, NEW_YORK, HOSTING];
        let uas = [FIREFOX, CHROME, SAFARI];
        w.login("s", "prop", T0);
        let mut t = T0;
        let mut last_ip = None;
        let first_ua = steps[0].1;
        for (ip, ua, dt) in steps {
            t += dt;
            let v = w.req(&lenient(), "s", uas[ua], ips[ip], t);
            explained(&v);
            let has = |r| v.risks.session.has(r);
            if last_ip == Some(ip) {
                for r in [Reason::IpChanged, Reason::AsnChanged, Reason::CountryChanged,
                          Reason::ImpossibleTravel, Reason::ConcurrentNetworks] {
                    prop_assert!(!has(r), "{:?}", v.risks.session);
                }
            }
            if ua == first_ua {
                prop_assert!(!has(Reason::DeviceChanged), "{:?}", v.risks.session);
            } else {
                prop_assert!(has(Reason::DeviceChanged), "{:?}", v.risks.session);
            }
            last_ip = Some(ip);
        }
    }
}

#[test]
fn an_update_seen_without_tls_keeps_the_sessions_fingerprint() {
    let w = world();
    let p = lenient();
    let chrome = |major: u16| {
        format!(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major}.0.0.0 Safari/537.36"
        )
    };
    let req = |ua: &str, tls: TlsFingerprint, at: u64| {
        let h = headers("s", ua);
        let mut v = view(&h, HOME, at);
        v.tls = tls;
        w.engine.evaluate(&v, &p).unwrap()
    };
    let chrome_tls =
        TlsFingerprint::captured("t13d1516h2_8daaf6152771_02713d6af862".parse().unwrap());
    let python_tls =
        TlsFingerprint::captured("t13d3112h2_e8f1e7e78f70_6bebaf5329ac".parse().unwrap());
    req(&chrome(131), chrome_tls, T0);
    // An "update" through a path with no TLS evidence...
    let v = req(&chrome(132), TlsFingerprint::default(), T0 + 60);
    assert!(v.risk.has(Reason::DeviceUpgraded));
    // ...does not wipe the JA4, so another stack is still a mismatch.
    let v = req(&chrome(132), python_tls, T0 + 120);
    assert!(v.risk.has(Reason::Ja4Mismatch), "{:?}", v.risk);
}

#[test]
fn revocations_are_kept_when_the_store_is_full() {
    let w = world_with(ScoreConfig {
        max_sessions: 16,
        ..ScoreConfig::default()
    });
    let scorer = w.engine.scorer();
    let key = |i: u32| {
        w.engine
            .key_for_credential(format!("r{i}").as_bytes())
            .unwrap()
    };
    for i in 0..64 {
        scorer.revoke(key(i), T0);
        // Used often, as a replay loop would.
        for _ in 0..3 {
            assert!(scorer.is_revoked(&key(i)));
        }
    }
    // The newest revocation is never the one turned away.
    assert!(scorer.is_revoked(&key(63)));
    let v = w.req(&strict(), "r63", FIREFOX, HOME, T0 + 1);
    assert!(v.risk.has(Reason::Revoked));
}

#[test]
fn a_binding_that_lands_while_a_request_is_scored_is_kept() {
    let w = world();
    let p = lenient();
    w.req(&p, "s", FIREFOX, HOME, T0);
    let scorer = w.engine.scorer();
    let key = w.engine.key_for_credential(b"s").unwrap();
    let device =
        crate::DeviceStage::default().traits(&headers("s", FIREFOX), TlsFingerprint::default());
    let moved = NetworkFacts::new(MANCHESTER.parse().unwrap()).mark();
    // The request is scored (a move: its state will be written)...
    let scored = scorer.score(Some(key), &device, &moved, None, T0 + 60);
    // ...the login response binds the session meanwhile...
    let user = w.engine.user_key("lena");
    scorer.bind_user(key, user, T0 + 61);
    // ...and the request's state lands after: the binding stays.
    scorer.commit(scored.observation, Commit::Allowed, T0 + 62);
    let state = scorer.session(&key).unwrap();
    assert_eq!(state.user(), Some(user));
    assert_eq!(state.network, moved, "the move is kept too");
}

#[test]
fn an_import_keeps_to_the_local_clock_and_never_rolls_a_session_back() {
    let a = world();
    let b = world();
    a.req(&strict(), "s", FIREFOX, HOME, T0);
    let key = a.engine.key_for_credential(b"s").unwrap();
    let mut record = a.engine.scorer().export(&key).unwrap();
    // A record from a node whose clock runs far ahead.
    record[90..94].copy_from_slice(&u32::MAX.to_le_bytes());
    b.engine.scorer().import(&record, T0 + 5).unwrap();
    assert_eq!(
        b.engine.scorer().session(&key).unwrap().last_seen,
        u32::try_from(T0 + 5).unwrap()
    );
    // The session moves on at b; an older record from a changes nothing.
    b.req(&strict(), "s", FIREFOX, HOME_OTHER_PREFIX, T0 + 600);
    let now_at_b = b.engine.scorer().session(&key).unwrap();
    let stale = a.engine.scorer().export(&key).unwrap();
    b.engine.scorer().import(&stale, T0 + 700).unwrap();
    assert_eq!(b.engine.scorer().session(&key).unwrap(), now_at_b);
}

#[test]
fn a_snapshot_restores_sessions_and_revocations_after_a_restart() {
    let before = world();
    let p = strict();
    before.history("pia", 10);
    let pia = before.engine.user_key("pia");
    let month = std::time::Duration::from_secs(30 * DAY);
    before.engine.scorer().report_user(pia, 40, month, T0);
    before.req(&p, "kept", FIREFOX, HOME, T0);
    before.login("gone", "olga", T0);
    before.req(&p, "gone", FIREFOX, HOME, T0);
    before.req(&p, "cut", FIREFOX, HOME, T0);
    let cut = before.engine.key_for_credential(b"cut").unwrap();
    before.engine.scorer().revoke(cut, T0 + 1);
    before
        .engine
        .scorer()
        .revoke_user(before.engine.user_key("olga"), T0 + 2);
    let snapshot = before.engine.scorer().snapshot();

    let after = world();
    let restored = after.engine.scorer().restore(&snapshot, T0 + 10).unwrap();
    assert_eq!(
        restored,
        Restored {
            sessions: 11,
            revocations: 2,
            users: 2,
            refused: 0
        }
    );
    // Pia's history came back: her next login is judged, not learning, and
    // the partner's report still counts.
    let t = T0 + 11 * DAY;
    after.login("pia-new", "pia", t);
    let v = after.req(&lenient(), "pia-new", FIREFOX, HOME, t);
    assert!(!v.risks.learning, "{:?}", v.risks);
    assert_eq!(v.risks.entity.points(Reason::PartnerReported), 40);
    // The baseline survived: a replay from another device is caught...
    assert_eq!(
        after.req(&p, "kept", CHROME, HOME, T0 + 20).action,
        Action::Block
    );
    assert_eq!(
        after.req(&p, "kept", FIREFOX, HOME, T0 + 21).action,
        Action::Allow
    );
    // ...and the revocations hold, each with its reason.
    assert!(
        after
            .req(&p, "cut", FIREFOX, HOME, T0 + 22)
            .risk
            .has(Reason::Revoked)
    );
    assert!(
        after
            .req(&p, "gone", FIREFOX, HOME, T0 + 23)
            .risk
            .has(Reason::UserRevoked)
    );

    // A revocation past its time is not brought back.
    let late = world();
    let ttl = ScoreConfig::default().revocation_ttl.as_secs();
    let restored = late
        .engine
        .scorer()
        .restore(&snapshot, T0 + ttl + 100)
        .unwrap();
    assert_eq!((restored.revocations, restored.refused), (0, 2));

    // What is not a snapshot is refused whole.
    let scorer = after.engine.scorer();
    assert_eq!(
        scorer.restore(b"hello", T0),
        Err(SnapshotError::NotASnapshot)
    );
    assert!(matches!(
        scorer.restore(&snapshot[..snapshot.len() - 1], T0),
        Err(SnapshotError::Length { .. })
    ));
}

proptest! {
    #[test]
    fn restoring_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let w = world();
        let mut input = b"VIGILSS4".to_vec();
        input.extend_from_slice(&bytes);
        let _ = w.engine.scorer().restore(&bytes, T0);
        let _ = w.engine.scorer().restore(&input, T0);
    }
}

proptest! {
    #[test]
    fn profiles_round_trip(seen in proptest::collection::vec((any::<[u32; 6]>(), any::<u32>(), any::<bool>()), 0..40)) {
        let mut p = UserProfile::new(7);
        for (values, at, trust) in seen {
            let f = Features(values);
            p.observe(&f, &super::profile::ALL, at);
            if trust {
                p.trust(Feature::Asn, values[1], at);
            }
            p.add_session();
        }
        let record = p.encode();
        prop_assert_eq!(UserProfile::decode(&record), Some(p));
        prop_assert_eq!(UserProfile::decode(&record[1..]), None);
    }
}

#[test]
fn a_first_request_committing_after_its_login_binding_keeps_the_user() {
    let w = world();
    let scorer = w.engine.scorer();
    let key = w.engine.key_for_credential(b"new").unwrap();
    let device =
        crate::DeviceStage::default().traits(&headers("new", FIREFOX), TlsFingerprint::default());
    let home = NetworkFacts::new(HOME.parse().unwrap()).mark();
    let scored = scorer.score(Some(key), &device, &home, None, T0);
    let user = w.engine.user_key("max");
    scorer.bind_user(key, user, T0 + 1);
    scorer.commit(scored.observation, Commit::Allowed, T0 + 2);
    assert_eq!(scorer.session(&key).unwrap().user(), Some(user));
}

#[test]
fn a_false_positive_on_a_session_refused_at_its_first_request_gives_it_a_baseline() {
    let w = world();
    let p = strict();
    w.login("s", "nina", T0);
    let key = w.engine.key_for_credential(b"s").unwrap();
    // Say the first request was refused (login risk): the operator vouches
    // for its device.
    let firefox = crate::DeviceStage::default()
        .traits(&headers("s", FIREFOX), TlsFingerprint::default())
        .summary();
    w.engine
        .feedback(
            Feedback::FalsePositive {
                session: key,
                device: firefox,
                network: NetworkFacts::new(HOME.parse().unwrap()),
            },
            T0 + 10,
        )
        .unwrap();
    // Now it is the session's device: another is refused.
    assert_eq!(w.req(&p, "s", CHROME, HOME, T0 + 20).action, Action::Block);
    assert_eq!(w.req(&p, "s", FIREFOX, HOME, T0 + 30).action, Action::Allow);
}

#[test]
fn a_clock_behind_the_snapshot_keeps_its_revocations() {
    let before = world();
    before.req(&strict(), "r", FIREFOX, HOME, T0);
    let key = before.engine.key_for_credential(b"r").unwrap();
    before.engine.scorer().revoke(key, T0 + 100);
    let snapshot = before.engine.scorer().snapshot();
    let after = world();
    let restored = after.engine.scorer().restore(&snapshot, T0 + 50).unwrap();
    assert_eq!(restored.revocations, 1);
    assert!(after.engine.scorer().is_revoked(&key));
}

#[test]
fn a_full_store_snapshot_fits_the_announced_bound() {
    let w = world_with(ScoreConfig {
        max_sessions: 16,
        max_users: 16,
        ..ScoreConfig::default()
    });
    for i in 0..40 {
        let s = format!("s{i}");
        w.login(&s, &format!("u{}", i % 20), T0 + i);
        w.req(&strict(), &s, FIREFOX, HOME, T0 + i);
        w.engine.scorer().revoke(
            w.engine
                .key_for_credential(format!("r{i}").as_bytes())
                .unwrap(),
            T0,
        );
        w.engine.scorer().report_user(
            w.engine.user_key(&format!("u{i}")),
            10,
            std::time::Duration::from_secs(60),
            T0,
        );
    }
    w.engine.scorer().run_pending_tasks();
    let snapshot = w.engine.scorer().snapshot();
    assert!(snapshot.len() as u64 <= w.engine.scorer().max_snapshot_bytes());
    assert!(snapshot.len() > 40 * 16, "{}", snapshot.len());
}

#[test]
fn reconfigure_weighs_the_next_request_anew_and_keeps_the_sessions() {
    let w = world();
    let p = lenient();
    w.req(&p, "s", FIREFOX, HOME, T0);
    w.engine.reconfigure(EngineConfig {
        score: ScoreConfig {
            asn_changed: 50,
            max_sessions: 1,
            ..ScoreConfig::default()
        },
        ..EngineConfig::default()
    });
    // The baseline learnt before the reload, judged with the new weight.
    let moved = w.req(&p, "s", FIREFOX, MANCHESTER, T0 + 7200);
    assert_eq!(
        moved.risk.reasons,
        vec![Contribution {
            reason: Reason::AsnChanged,
            points: 50
        }]
    );
    assert_eq!(
        w.engine.scorer().config().max_sessions,
        ScoreConfig::default().max_sessions,
        "a store keeps its size until a restart"
    );
}

#[test]
fn a_flood_of_minted_revocations_never_evicts_a_real_one() {
    // Revocations are budgeted by max_sessions: a flood three times that
    // would have evicted every older revocation from one shared budget.
    let w = world_with(ScoreConfig {
        max_sessions: 1_024,
        ..ScoreConfig::default()
    });
    let p = Policy {
        high: Action::Revoke,
        ..Policy::default()
    };
    // A real session: the app bound it to a user; then it is revoked.
    w.login("real", "rita", T0);
    w.req(&p, "real", FIREFOX, HOME, T0);
    let real = w.req(&p, "real", CHROME, HOSTING, T0 + 60);
    assert_eq!(real.action, Action::Revoke);
    let key = real.session.unwrap().key;
    // A client mints thousands of cookies and gets each revoked.
    for i in 0..3_000u64 {
        let s = format!("minted{i}");
        w.req(&p, &s, FIREFOX, HOME, T0 + 100);
        w.req(&p, &s, CHROME, HOSTING, T0 + 101);
    }
    w.engine.scorer().run_pending_tasks();
    let (minted, budget) = w.engine.scorer().minted_revocations();
    assert_eq!(budget, 1_024);
    assert!(minted <= budget, "{minted}");
    assert!(w.engine.scorer().is_revoked(&key));
}

#[test]
fn a_vouched_revocation_of_an_unseen_session_outlives_a_flood_of_minted_ones() {
    // The fleet's controller ends sessions this node has never seen. An
    // operator's word (vouched) goes to the main budget; a plain revoke of
    // an unknown session to the minted one, which a flood empties.
    let w = world_with(ScoreConfig {
        max_sessions: 1_024,
        ..ScoreConfig::default()
    });
    let scorer = w.engine.scorer();
    let key = |s: &str| w.engine.key_for_cookie("session", s.as_bytes()).unwrap();
    w.engine.revoke_vouched(key("operator-ended"), T0);
    w.engine.revoke(key("plain-ended"), T0);
    for i in 0..3_000u64 {
        scorer.revoke(key(&format!("minted{i}")), T0 + 1);
    }
    scorer.run_pending_tasks();
    assert!(scorer.is_revoked(&key("operator-ended")));
    assert!(
        !scorer.is_revoked(&key("plain-ended")),
        "evicted by the flood"
    );
}

/// Rules that allow whatever they are shown, by their rule 0.
#[derive(Debug, Default)]
struct AllowAll;

impl crate::decide::Rules for AllowAll {
    fn rule(&self, _: &crate::decide::Facts<'_>) -> crate::decide::Ruling {
        crate::decide::Ruling {
            rule: Some(0),
            ..crate::decide::Ruling::table(Action::Allow)
        }
    }
}

/// An operator's or partner's step-up of a user: every session of theirs
/// opened before the ask is sent to step up at its next request — even by
/// a lenient policy or rules that allow — until it passes one; a session
/// opened after, and other users, are not. It holds through a snapshot,
/// and for a session this node learns of later.
#[test]
fn a_users_step_up_holds_on_each_older_session_until_it_passes() {
    let w = world();
    let p = lenient();
    for (s, user) in [("a", "vera"), ("b", "vera"), ("other", "walt")] {
        w.login(s, user, T0);
        assert_eq!(w.req(&p, s, FIREFOX, HOME, T0).action, Action::Allow);
    }
    let vera = w.engine.user_key("vera");
    w.engine.require_step_up(vera, T0 + 10);

    let v = w.req(&p, "a", FIREFOX, HOME, T0 + 20);
    assert!(v.risks.entity.has(Reason::StepUpRequired), "{:?}", v.risks);
    assert_eq!(v.risk.points(Reason::StepUpRequired), 0);
    assert_eq!(v.action, Action::StepUp);
    explained(&v);
    // Rules that allow cannot lower it.
    let h = headers("a", FIREFOX);
    let ruled = w
        .engine
        .decide_with_rules(
            &view(&h, HOME, T0 + 20),
            &p,
            &AllowAll,
            crate::client_ip::ForwardedHeaders::default(),
        )
        .unwrap();
    assert_eq!((ruled.action, ruled.ruling.rule), (Action::StepUp, None));
    assert_eq!(
        w.req(&p, "other", FIREFOX, HOME, T0 + 20).action,
        Action::Allow
    );
    // A passed step-up clears it for that session alone.
    assert!(w.engine.confirm(&v));
    assert_eq!(w.req(&p, "a", FIREFOX, HOME, T0 + 21).action, Action::Allow);
    assert_eq!(
        w.req(&p, "b", FIREFOX, HOME, T0 + 22).action,
        Action::StepUp
    );
    // A session opened after the ask is not asked; an older ask arriving
    // late changes nothing.
    w.login("c", "vera", T0 + 30);
    assert_eq!(w.req(&p, "c", FIREFOX, HOME, T0 + 30).action, Action::Allow);
    w.engine.require_step_up(vera, T0 + 5);
    assert_eq!(w.req(&p, "a", FIREFOX, HOME, T0 + 40).action, Action::Allow);

    // After a restart from a snapshot: the same.
    let after = world();
    after
        .engine
        .scorer()
        .restore(&w.engine.scorer().snapshot(), T0 + 50)
        .unwrap();
    assert_eq!(
        after.req(&p, "b", FIREFOX, HOME, T0 + 51).action,
        Action::StepUp
    );
    assert_eq!(
        after.req(&p, "a", FIREFOX, HOME, T0 + 52).action,
        Action::Allow
    );

    // A node that learns of vera's sessions after the ask: b, bound
    // before it, is asked; a's confirmed record brings its pass along.
    let n = world();
    n.engine.require_step_up(vera, T0 + 10);
    for (s, confirmed) in [("b", false), ("a", true)] {
        let key = w.engine.key_for_credential(s.as_bytes()).unwrap();
        let record = w.engine.scorer().export(&key).unwrap();
        assert_eq!(
            n.engine.scorer().adopt(&record, confirmed, T0 + 60),
            Ok((key, Adopted::New))
        );
    }
    assert_eq!(
        n.req(&p, "b", FIREFOX, HOME, T0 + 61).action,
        Action::StepUp
    );
    assert_eq!(n.req(&p, "a", FIREFOX, HOME, T0 + 62).action, Action::Allow);
    // A later ask asks a again.
    n.engine.require_step_up(vera, T0 + 70);
    assert_eq!(
        n.req(&p, "a", FIREFOX, HOME, T0 + 71).action,
        Action::StepUp
    );
}

/// A snapshot of the previous release (`VIGILSS3`: entity records without
/// a step-up time) is still restored whole.
#[test]
fn a_previous_snapshot_with_shorter_entity_records_is_restored() {
    let w = world();
    let p = lenient();
    w.login("s", "xena", T0);
    w.req(&p, "s", FIREFOX, HOME, T0);
    let xena = w.engine.user_key("xena");
    let month = std::time::Duration::from_secs(30 * DAY);
    w.engine.scorer().report_user(xena, 40, month, T0);
    let snapshot = w.engine.scorer().snapshot();
    // Rewrite it as the previous release wrote it: the same sections, the
    // entity records 4 bytes shorter.
    let entities = u64::from_le_bytes(snapshot[32..40].try_into().unwrap());
    assert_eq!(entities, 1);
    let mut old = snapshot.clone();
    old[..8].copy_from_slice(b"VIGILSS3");
    old.truncate(old.len() - 4);
    let after = world();
    let restored = after.engine.scorer().restore(&old, T0 + 10).unwrap();
    assert_eq!(restored.refused, 0);
    let v = after.req(&p, "s", FIREFOX, HOME, T0 + 11);
    assert_eq!(v.risks.entity.points(Reason::PartnerReported), 40);
    assert!(!v.risk.has(Reason::StepUpRequired));
    assert_eq!(v.action, Action::Allow);
}
