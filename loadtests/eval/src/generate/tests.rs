use std::collections::BTreeSet;

use vigil_engine::Ja4;

use super::*;
use crate::scenario::Label;

fn small() -> GenerateConfig {
    GenerateConfig {
        seed: 7,
        users: 120,
        sessions_per_class: 20,
        history_days: 4,
        ..GenerateConfig::default()
    }
}

#[test]
fn a_seed_gives_the_same_corpus_and_another_seed_another() {
    let (a, _) = generate(&small());
    let (b, _) = generate(&small());
    assert_eq!(a, b);
    let (c, _) = generate(&GenerateConfig { seed: 8, ..small() });
    assert_ne!(a.events, c.events);
}

#[test]
fn every_class_appears_with_its_label_and_events_are_sorted() {
    let (corpus, stats) = generate(&small());
    assert!(stats.shortfall.is_empty(), "{:?}", stats.shortfall);
    let classes: BTreeSet<Scenario> = corpus.events.iter().map(|e| e.scenario).collect();
    assert_eq!(classes, Scenario::ALL.into_iter().collect());
    assert!(corpus.events.windows(2).all(|w| w[0].t <= w[1].t));
    for e in &corpus.events {
        assert_eq!(e.label, e.scenario.label());
        assert!(
            e.actor == Actor::Owner || e.label == Label::Attack,
            "attacker in a legit session"
        );
    }
}

#[test]
fn every_ja4_parses_and_every_address_is_in_the_plan() {
    let (corpus, _) = generate(&small());
    let nets: Vec<ipnet::IpNet> = corpus
        .networks
        .networks
        .iter()
        .map(|n| n.cidr.parse().unwrap())
        .collect();
    let known = |ip: IpAddr| nets.iter().any(|n| n.contains(&ip));
    for e in &corpus.events {
        e.ja4
            .parse::<Ja4>()
            .unwrap_or_else(|_| panic!("{} does not parse", e.ja4));
        assert!(known(e.peer), "peer {} outside the plan", e.peer);
        if let Some(xff) = &e.xff {
            assert!(known(xff.parse().unwrap()), "client {xff} outside the plan");
        }
    }
}

#[test]
fn sessions_start_with_the_owner_and_bind_only_there() {
    let (corpus, _) = generate(&small());
    let mut seen = BTreeSet::new();
    for e in &corpus.events {
        let first = seen.insert(e.session.clone());
        if first {
            assert_eq!(
                e.actor,
                Actor::Owner,
                "session {} opened by the attacker",
                e.session
            );
        } else {
            assert!(!e.bind, "bind after the first request of {}", e.session);
        }
    }
}

#[test]
fn attacks_keep_to_their_class() {
    let (corpus, stats) = generate(&small());
    let plan = &corpus.networks.networks;
    let net_of = |ip: IpAddr| {
        plan.iter()
            .filter(|n| n.cidr.parse::<ipnet::IpNet>().unwrap().contains(&ip))
            .max_by_key(|n| n.cidr.parse::<ipnet::IpNet>().unwrap().prefix_len())
            .unwrap()
    };
    let client = |e: &Event| e.xff.as_ref().map_or(e.peer, |x| x.parse().unwrap());
    let mut last_owner: std::collections::HashMap<&str, &Event> = Default::default();
    for e in &corpus.events {
        match e.actor {
            Actor::Owner => {
                last_owner.insert(&e.session, e);
            }
            Actor::Attacker => {
                let victim = last_owner[e.session.as_str()];
                let (v, a) = (net_of(client(victim)), net_of(client(e)));
                match e.scenario {
                    Scenario::ReplayOtherCountry => assert_ne!(v.country, a.country),
                    Scenario::ReplaySameCountryOtherAsn => {
                        assert_eq!(v.country, a.country);
                        assert_ne!(v.asn, a.asn);
                    }
                    Scenario::ReplaySameIpOtherDevice => {
                        assert_eq!(v.name, a.name);
                    }
                    Scenario::ReplayCopiedUaOtherTls => {
                        assert_eq!(victim.ua, e.ua);
                        assert_ne!(victim.ja4, e.ja4);
                        assert_ne!(v.asn, a.asn);
                    }
                    Scenario::ReplayImpersonatedJa4OtherNetwork => {
                        assert_eq!((&victim.ua, &victim.ja4), (&e.ua, &e.ja4));
                        assert_ne!(v.asn, a.asn);
                    }
                    Scenario::Interleaved => assert_ne!(v.asn, a.asn),
                    Scenario::CloneSameIp | Scenario::CloneSameIsp | Scenario::CloneThiefFirst => {
                        // The victim's exact stack, headers and all.
                        let shape = |e: &Event| {
                            (
                                e.ua.clone(),
                                e.ja4.clone(),
                                e.accept_language.clone(),
                                e.ch_ua.clone(),
                                e.ch_platform.clone(),
                                e.ch_mobile.clone(),
                                e.fetch_metadata,
                            )
                        };
                        assert_eq!(shape(victim), shape(e));
                        assert_eq!(v.asn, a.asn);
                        if e.scenario == Scenario::CloneSameIp {
                            assert_eq!(v.name, a.name);
                        }
                        if e.scenario == Scenario::CloneSameIsp {
                            assert_eq!(v.name, a.name, "the network the victim was on");
                            assert_ne!(client(victim), client(e));
                        }
                    }
                    _ => unreachable!("attacker in {}", e.scenario),
                }
            }
        }
    }
    assert!(stats.same_ip_device_draws >= stats.sessions["replay_same_ip_other_device"]);
}

#[test]
fn flights_never_beat_an_airliner() {
    let (corpus, stats) = generate(&small());
    assert!(stats.sessions["flight"] > 0);
    assert!(stats.max_flight_speed_kmh > 100.0);
    assert!(
        stats.max_flight_speed_kmh <= 900.0,
        "{}",
        stats.max_flight_speed_kmh
    );
    assert!(corpus.events.iter().any(|e| e.scenario == Scenario::Flight));
}

#[test]
fn zscaler_sessions_rotate_egress_behind_a_stable_client() {
    let (corpus, _) = generate(&small());
    let mut by_session: std::collections::BTreeMap<&str, (BTreeSet<IpAddr>, BTreeSet<&str>)> =
        Default::default();
    for e in corpus
        .events
        .iter()
        .filter(|e| e.scenario == Scenario::Zscaler)
    {
        let entry = by_session.entry(&e.session).or_default();
        entry.0.insert(e.peer);
        entry
            .1
            .insert(e.xff.as_deref().expect("zscaler requests carry xff"));
    }
    assert!(!by_session.is_empty());
    assert!(by_session.values().all(|(_, clients)| clients.len() == 1));
    assert!(by_session.values().any(|(peers, _)| peers.len() > 1));
}

#[test]
fn many_users_share_one_nat_address() {
    let (corpus, stats) = generate(&GenerateConfig {
        users: 400,
        ..small()
    });
    assert!(stats.max_nat_group >= 8, "{}", stats.max_nat_group);
    let mut users_per_ip: std::collections::BTreeMap<IpAddr, BTreeSet<&str>> = Default::default();
    for e in corpus
        .events
        .iter()
        .filter(|e| e.scenario == Scenario::SharedNat)
    {
        users_per_ip.entry(e.peer).or_default().insert(&e.user);
    }
    assert!(users_per_ip.values().any(|u| u.len() >= 8));
}

#[test]
fn a_user_is_in_one_scenario_at_a_time() {
    let (corpus, _) = generate(&small());
    let mut spans: std::collections::BTreeMap<&str, (&str, u64, u64)> = Default::default();
    for e in corpus
        .events
        .iter()
        .filter(|e| e.scenario != Scenario::History)
    {
        let s = spans.entry(&e.session).or_insert((&e.user, e.t, e.t));
        s.2 = e.t;
    }
    let mut by_user: std::collections::BTreeMap<&str, Vec<(u64, u64)>> = Default::default();
    for (user, start, end) in spans.into_values() {
        by_user.entry(user).or_default().push((start, end));
    }
    for (user, mut list) in by_user {
        list.sort();
        for w in list.windows(2) {
            assert!(w[0].1 < w[1].0, "{user}: scenarios overlap: {w:?}");
        }
    }
}
