//! The perfect clones and the rotating binding (docs/evaluation.md,
//! docs/bound-sessions.md): a thief with the victim's exact stack,
//! replaying the cookie jar as it was at the moment of theft, is invisible
//! to the passive signals and caught by the binding; the binding disturbs
//! no legitimate session more than the passive signals do.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: failing loudly is the point"
)]

use std::collections::HashMap;

use vigil_eval::evaluate::{ClassReport, Options, Report, evaluate_corpus};
use vigil_eval::generate::{GenerateConfig, generate};
use vigil_eval::scenario::{
    Actor, Corpus, Event, Label, Network, NetworkKind, NetworkPlan, Scenario,
};

fn row(report: &Report, class: Scenario) -> &ClassReport {
    report
        .classes
        .iter()
        .find(|c| c.class == class)
        .unwrap_or_else(|| panic!("no {class} sessions"))
}

fn evaluate(corpus: &Corpus, binding: bool) -> Report {
    evaluate_corpus(
        corpus,
        &Options {
            binding,
            ..Options::default()
        },
    )
    .unwrap()
}

/// One victim at home, and a request of the session.
fn event(t: u64, actor: Actor) -> Event {
    Event {
        t,
        session: "0123456789abcdef0123456789abcdef".into(),
        user: "victim".into(),
        scenario: Scenario::CloneSameIp,
        label: Label::Attack,
        actor,
        bind: false,
        peer: "81.2.69.7".parse().unwrap(),
        xff: None,
        ua: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36".into(),
        accept_language: Some("en-GB,en;q=0.9".into()),
        ch_platform: Some("\"Windows\"".into()),
        ch_mobile: Some("?0".into()),
        ch_ua: Some("\"Google Chrome\";v=\"131\", \"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"".into()),
        fetch_metadata: true,
        ja4: "t13d1516h2_8daaf6152771_02713d6af862".into(),
        steal: false,
        lose_rotation: false,
        note: None,
    }
}

fn home() -> NetworkPlan {
    NetworkPlan {
        networks: vec![Network {
            name: "home".into(),
            cidr: "81.2.0.0/16".into(),
            country: "GB".into(),
            city: Some("London".into()),
            lat: 51.5,
            lon: -0.12,
            accuracy_km: 20,
            asn: 2856,
            org: "BT".into(),
            kind: NetworkKind::Residential,
        }],
    }
}

/// The attack as one trace: the owner logs in and works past a rotation
/// (300 s after issuance, 30 s grace); the jar was copied after the second
/// request (generation 1); the thief replays it from the same address
/// with the same stack after the owner presented generation 2.
#[test]
fn a_jar_copied_before_a_rotation_is_refused_at_the_thiefs_first_request() {
    let t0 = 1_736_121_600 + 14 * 86_400;
    let mut login = event(t0, Actor::Owner);
    login.bind = true;
    let mut stolen = event(t0 + 10, Actor::Owner);
    stolen.steal = true;
    let events = vec![
        login,
        stolen,
        event(t0 + 400, Actor::Owner), // rotates: generation 2 set
        event(t0 + 410, Actor::Owner), // presents generation 2
        event(t0 + 1_000, Actor::Attacker),
        event(t0 + 1_060, Actor::Attacker),
    ];
    let corpus = Corpus {
        networks: home(),
        events,
        manifest: None,
    };

    let on = evaluate(&corpus, true);
    let a = row(&on, Scenario::CloneSameIp).attack.clone().unwrap();
    assert_eq!((a.detected, a.detected_high, a.caught), (1, 1, 1));
    assert_eq!(a.attacker_requests_allowed, 0);
    assert_eq!(a.requests_until_detection.unwrap().median, 1);
    assert_eq!(a.binding_sessions, 1);
    assert!(a.miss_reasons.is_empty(), "{:?}", a.miss_reasons);
    assert_eq!(row(&on, Scenario::CloneSameIp).owner_blocked_sessions, 0);
    assert_eq!(row(&on, Scenario::CloneSameIp).owner_step_ups, 0);

    // The same trace without the binding: the clone is the victim.
    let off = evaluate(&corpus, false);
    let a = row(&off, Scenario::CloneSameIp).attack.clone().unwrap();
    assert_eq!((a.detected, a.caught, a.binding_sessions), (0, 0, 0));
    assert_eq!(a.attacker_requests_allowed, 2);
}

/// The thief first: the victim's return with the superseded generation is
/// the catch (on the owner's request), the thief's own generation stays
/// current.
#[test]
fn a_thief_who_comes_first_is_caught_when_the_victim_returns() {
    let t0 = 1_736_121_600 + 14 * 86_400;
    let mut login = event(t0, Actor::Owner);
    login.bind = true;
    login.scenario = Scenario::CloneThiefFirst;
    let mut last = event(t0 + 60, Actor::Owner);
    last.steal = true;
    let thief = [4 * 3_600, 4 * 3_600 + 60, 4 * 3_600 + 120];
    let mut events = vec![login, last];
    events.extend(thief.iter().map(|d| event(t0 + d, Actor::Attacker)));
    events.push(event(t0 + 6 * 3_600, Actor::Owner));
    events.push(event(t0 + 6 * 3_600 + 30, Actor::Owner));
    for e in &mut events {
        e.scenario = Scenario::CloneThiefFirst;
    }
    let corpus = Corpus {
        networks: home(),
        events,
        manifest: None,
    };

    let on = evaluate(&corpus, true);
    let r = row(&on, Scenario::CloneThiefFirst);
    let a = r.attack.clone().unwrap();
    assert_eq!((a.detected, a.caught, a.caught_on_owner), (0, 1, 1));
    assert_eq!(a.allowed_before_caught.unwrap().median, 3);
    // Both returning requests carry the superseded generation.
    assert_eq!((r.owner_blocked_sessions, r.owner_requests), (1, 4));

    let off = evaluate(&corpus, false);
    let a = row(&off, Scenario::CloneThiefFirst).attack.clone().unwrap();
    assert_eq!((a.detected, a.caught), (0, 0));
    assert_eq!(
        row(&off, Scenario::CloneThiefFirst).owner_blocked_sessions,
        0
    );
}

/// A lost rotation: the owner's browser does not store the response that
/// rotated the companion (generation 2) and comes back with generation 1,
/// within the grace and after it. That is a lost response, not a copy: the
/// owner is never refused and no `binding_*` reason is seen, and the
/// binding goes on rotating afterwards.
#[test]
fn an_owner_whose_rotation_response_was_lost_is_not_flagged() {
    let t0 = 1_736_121_600 + 14 * 86_400;
    let owner = |t| Event {
        scenario: Scenario::RotationLost,
        label: Label::Legit,
        ..event(t, Actor::Owner)
    };
    let mut login = owner(t0);
    login.bind = true;
    let mut lossy = owner(t0 + 400); // rotates: generation 2 set, and lost
    lossy.lose_rotation = true;
    let events = vec![
        login,
        owner(t0 + 10), // presents generation 1
        lossy,
        owner(t0 + 410), // generation 1 again, within the grace
        owner(t0 + 500), // and after it: generation 2 issued anew
        owner(t0 + 510), // presents the new generation 2
        owner(t0 + 900), // rotates to generation 3
        owner(t0 + 910),
    ];
    let corpus = Corpus {
        networks: home(),
        events,
        manifest: None,
    };
    let on = evaluate(&corpus, true);
    assert_eq!((on.lost_responses, on.lost_response_sessions), (1, 1));
    let r = row(&on, Scenario::RotationLost);
    assert_eq!(r.owner_requests, 8);
    assert_eq!((r.owner_blocked_sessions, r.owner_step_ups), (0, 0));
    let l = r.legit.as_ref().unwrap();
    assert!(l.false_positive_reasons.is_empty() && l.step_up_reasons.is_empty());

    // Without the binding nothing is set, so nothing is lost.
    let off = evaluate(&corpus, false);
    assert_eq!(off.lost_responses, 0);
    assert_eq!(row(&off, Scenario::RotationLost).owner_blocked_sessions, 0);
}

/// On a generated corpus: every attack session marks one theft before the
/// replay; the clone classes are caught only with the binding on, the
/// thief-first class every time; legitimate sessions are disturbed no
/// more with the binding than without.
#[test]
fn on_a_generated_corpus_the_binding_catches_clones_and_spares_owners() {
    let config = GenerateConfig {
        seed: 11,
        users: 150,
        sessions_per_class: 60,
        history_days: 5,
        ..GenerateConfig::default()
    };
    let (corpus, stats) = generate(&config);
    // (Too few users share a NAT site at this size for `shared_nat`.)
    for class in Scenario::CLONES {
        assert!(!stats.shortfall.contains_key(class.as_str()), "{class}");
    }

    // One theft per attacked session, by the owner, before the replay.
    let mut thefts: HashMap<&str, u32> = HashMap::new();
    let mut replayed: HashMap<&str, bool> = HashMap::new();
    for e in &corpus.events {
        if e.steal {
            assert_eq!(e.actor, Actor::Owner);
            assert_eq!(e.label, Label::Attack);
            assert!(!replayed.contains_key(e.session.as_str()), "{}", e.session);
            *thefts.entry(&e.session).or_default() += 1;
        }
        if e.actor == Actor::Attacker {
            replayed.insert(&e.session, true);
        }
    }
    assert_eq!(thefts.len(), replayed.len());
    assert!(thefts.values().all(|n| *n == 1));

    let off = evaluate(&corpus, false);
    let on = evaluate(&corpus, true);
    assert_eq!((off.engine_errors, on.engine_errors), (0, 0));
    for class in Scenario::ALL {
        if class == Scenario::SharedNat {
            continue;
        }
        let (a, b) = (row(&off, class), row(&on, class));
        match class.label() {
            Label::Legit => {
                assert_eq!(
                    b.owner_blocked_sessions, a.owner_blocked_sessions,
                    "{class}: blocked with the binding"
                );
                assert!(
                    b.owner_stepped_up_sessions <= a.owner_stepped_up_sessions,
                    "{class}: stepped up more with the binding: {} > {}",
                    b.owner_stepped_up_sessions,
                    a.owner_stepped_up_sessions
                );
                let reasons = &b.legit.as_ref().unwrap().step_up_reasons;
                assert!(
                    !reasons.keys().any(|k| k.starts_with("binding_")),
                    "{class}: {reasons:?}"
                );
            }
            Label::Attack => {
                let (fa, fb) = (a.attack.as_ref().unwrap(), b.attack.as_ref().unwrap());
                assert_eq!(fa.binding_sessions, 0, "{class}");
                assert!(fb.caught >= fa.caught, "{class}");
            }
        }
    }
    for class in Scenario::CLONES {
        let (a, b) = (
            row(&off, class).attack.clone().unwrap(),
            row(&on, class).attack.clone().unwrap(),
        );
        assert!(
            b.caught > a.caught,
            "{class}: {} caught with the binding, {} without",
            b.caught,
            a.caught
        );
    }
    // Lost rotations happened, and disturbed no owner (the legit loop
    // above holds `rotation_lost` to the same figures with and without).
    let lost = row(&on, Scenario::RotationLost);
    assert!(
        on.lost_response_sessions * 10 >= lost.sessions * 9,
        "{}",
        on.table()
    );
    assert_eq!(lost.owner_blocked_sessions, 0);
    // The victim always returns after the thief had requests enough to
    // rotate: every such session is caught.
    let sessions = row(&on, Scenario::CloneThiefFirst).sessions;
    let thief_first = row(&on, Scenario::CloneThiefFirst).attack.clone().unwrap();
    assert_eq!(thief_first.caught, sessions, "{}", on.table());
}
