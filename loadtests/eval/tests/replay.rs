//! Replaying labelled decisions (`docs/evaluation.md`, Replaying labelled
//! decisions): a changed weight changes exactly the decisions it should,
//! weight suggestions on a set whose answer is known by construction, and
//! an export that is cut short, miscounted or malformed is refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use vigil_eval::replay::{
    Decision, Direction, Label, ReplayError, Setting, read_export, replay, suggest,
};

fn d(
    reference: &str,
    rule: Option<&str>,
    action: &str,
    reasons: &[(&str, u8)],
    label: Label,
) -> Decision {
    Decision {
        reference: reference.to_owned(),
        node: "a".to_owned(),
        at: 1_000,
        route: "app".to_owned(),
        rule: rule.map(str::to_owned),
        action: action.to_owned(),
        enforced: true,
        score: u8::try_from(
            reasons
                .iter()
                .map(|(_, p)| u32::from(*p))
                .sum::<u32>()
                .min(100),
        )
        .unwrap(),
        reasons: reasons.iter().map(|(c, p)| ((*c).to_owned(), *p)).collect(),
        label,
        labelled_at: 2_000,
    }
}

use Label::{ConfirmedCompromise as CC, FalsePositive as FP};

/// The set whose right answer is known by construction (thresholds 30/60,
/// low allow, medium step_up, high block):
///
/// - two travellers marked false positive: `country_changed` 35 +
///   `new_country_for_user` 30 = 65, blocked;
/// - a roamer marked false positive: `asn_changed` 30 +
///   `new_network_for_user` 20 = 50, stepped up;
/// - a false positive a rule blocked: `asn_changed` 30, rule `hosting`;
/// - confirmed compromises: `device_changed` 70 + `country_changed` 35
///   (block), `country_changed` 35 + `asn_changed` 30 = 65 (block, and
///   just: any lowering of either softens it), `ja4_mismatch` 70 (block),
///   `impossible_travel` 50 (only stepped up).
///
/// So: lowering `new_country_for_user` spares both travellers and touches
/// no compromise (already at ×0.75: 23 + 35 = 58); lowering
/// `country_changed` or `asn_changed` would soften the second compromise;
/// nothing else spares a false positive. Raising `impossible_travel` ×1.25
/// (63) blocks the fourth compromise and is in no false positive; raising
/// `asn_changed` or `new_network_for_user` hardens the roamer first.
fn labelled() -> Vec<Decision> {
    vec![
        d(
            "fp-travel-1",
            None,
            "block",
            &[("country_changed", 35), ("new_country_for_user", 30)],
            FP,
        ),
        d(
            "fp-travel-2",
            None,
            "block",
            &[("country_changed", 35), ("new_country_for_user", 30)],
            FP,
        ),
        d(
            "fp-roam",
            None,
            "step_up",
            &[("asn_changed", 30), ("new_network_for_user", 20)],
            FP,
        ),
        d(
            "fp-rule",
            Some("hosting"),
            "block",
            &[("asn_changed", 30)],
            FP,
        ),
        d(
            "cc-device",
            None,
            "block",
            &[("device_changed", 70), ("country_changed", 35)],
            CC,
        ),
        d(
            "cc-move",
            None,
            "block",
            &[("country_changed", 35), ("asn_changed", 30)],
            CC,
        ),
        d("cc-tls", None, "block", &[("ja4_mismatch", 70)], CC),
        d(
            "cc-travel",
            None,
            "step_up",
            &[("impossible_travel", 50)],
            CC,
        ),
    ]
}

#[test]
fn a_changed_weight_changes_exactly_the_decisions_it_carries() {
    let set = labelled();
    let base = Setting::default();
    // Unchanged: nothing changes, and the base gives every recorded action.
    let same = replay(&set, &base, &base, 10);
    assert_eq!(same.decisions, 8);
    assert_eq!(same.base_agrees, 8);
    assert_eq!(same.rule_decided, 1);
    assert_eq!(
        same.false_positive.changed + same.confirmed_compromise.changed,
        0
    );

    let mut changed = base.clone();
    changed.scale.insert("new_country_for_user".to_owned(), 0.5);
    let r = replay(&set, &base, &changed, 10);
    assert_eq!(r.false_positive.decisions, 4);
    assert_eq!(r.false_positive.changed, 2);
    assert_eq!(r.false_positive.softer, 2);
    assert_eq!(r.false_positive.now_allowed, 0);
    assert_eq!(
        r.false_positive.transitions.into_iter().collect::<Vec<_>>(),
        [("block -> step_up".to_owned(), 2)]
    );
    assert_eq!(r.confirmed_compromise.decisions, 4);
    assert_eq!(r.confirmed_compromise.changed, 0);
    let refs: Vec<&str> = r.examples.iter().map(|e| e.reference.as_str()).collect();
    assert_eq!(refs, ["fp-travel-1", "fp-travel-2"]);

    // `country_changed` set to 0 points: the travellers go to step_up (30),
    // and so does a confirmed compromise (asn_changed 30 alone).
    let mut changed = base.clone();
    changed.points.insert("country_changed".to_owned(), 0);
    let r = replay(&set, &base, &changed, 10);
    assert_eq!(r.false_positive.changed, 2);
    assert_eq!(r.confirmed_compromise.changed, 1);
    assert_eq!(r.confirmed_compromise.softer, 1);
    assert!(
        r.examples
            .iter()
            .any(|e| e.reference == "cc-move" && e.to == "step_up")
    );

    // A rule decides whatever the weights say, until it is dropped: then
    // the policy does (asn_changed 30: step_up) — or given another action.
    let mut changed = base.clone();
    changed.scale.insert("asn_changed".to_owned(), 0.0);
    let r = replay(&set[3..4], &base, &changed, 10);
    assert_eq!(r.false_positive.changed, 0);
    changed.drop_rules.insert("hosting".to_owned());
    let r = replay(&set[3..4], &base, &changed, 10);
    assert_eq!(
        r.false_positive.transitions.into_iter().collect::<Vec<_>>(),
        [("block -> allow".to_owned(), 1)]
    );
    assert_eq!(r.false_positive.now_allowed, 1);
    let mut changed = base.clone();
    changed
        .rule_actions
        .insert("hosting".to_owned(), vigil_engine::Action::StepUp);
    let r = replay(&set[3..4], &base, &changed, 10);
    assert_eq!(r.false_positive.softer, 1);

    // Higher thresholds: every 65 becomes a step-up, the 100 and 70 stay.
    let mut changed = base.clone();
    changed.high_at = 66;
    let r = replay(&set, &base, &changed, 10);
    assert_eq!(r.false_positive.changed, 2);
    assert_eq!(r.confirmed_compromise.changed, 1);
}

#[test]
fn revocations_stay_refused_and_an_ask_for_step_up_stays_asked() {
    let base = Setting::default();
    let mut zero = base.clone();
    zero.scale.insert("revoked".to_owned(), 0.0);
    zero.scale.insert("device_changed".to_owned(), 0.0);
    let revoked = d("rv", None, "block", &[("revoked", 100)], CC);
    assert_eq!(zero.decide(&revoked), vigil_engine::Action::Block);
    let asked = d(
        "su",
        None,
        "step_up",
        &[("step_up_required", 0), ("device_changed", 70)],
        FP,
    );
    assert_eq!(zero.decide(&asked), vigil_engine::Action::StepUp);
}

#[test]
fn suggestions_are_the_ones_known_by_construction() {
    let list = suggest(&labelled(), &Setting::default());
    let got: Vec<(&str, Direction, f64, u64, u64, u64)> = list
        .iter()
        .map(|s| {
            (
                s.reason.as_str(),
                s.direction,
                s.factor,
                s.false_positives_spared,
                s.compromises_hardened,
                s.decisions_with_reason,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("new_country_for_user", Direction::Lower, 0.75, 2, 0, 2),
            ("impossible_travel", Direction::Raise, 1.25, 0, 1, 1),
        ]
    );
    // Replaying the first suggestion does what it says.
    let mut changed = Setting::default();
    changed
        .scale
        .insert("new_country_for_user".to_owned(), 0.75);
    let r = replay(&labelled(), &Setting::default(), &changed, 0);
    assert_eq!(
        (r.false_positive.softer, r.confirmed_compromise.softer),
        (2, 0)
    );
    // Without false positives there is nothing to spare.
    let compromises: Vec<Decision> = labelled().into_iter().filter(|d| d.label == CC).collect();
    assert!(
        suggest(&compromises, &Setting::default())
            .iter()
            .all(|s| s.direction == Direction::Raise)
    );
}

fn file(lines: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l.as_bytes());
        out.push(b'\n');
    }
    out
}

fn header() -> String {
    r#"{"vigil_labels":1,"since":0,"until":2000,"exported_at":3000}"#.to_owned()
}

#[test]
fn an_export_reads_back_and_a_cut_or_forged_one_is_refused() {
    let lines: Vec<String> = std::iter::once(header())
        .chain(labelled().iter().map(|d| serde_json::to_string(d).unwrap()))
        .chain([r#"{"end":{"decisions":8,"complete":true}}"#.to_owned()])
        .collect();
    let export = read_export(&file(&lines)[..], 100).unwrap();
    assert_eq!(export.decisions, labelled());
    assert!(export.complete);
    assert_eq!(export.until, 2000);

    // Cut before its end line.
    let cut = &lines[..lines.len() - 1];
    assert!(matches!(
        read_export(&file(cut)[..], 100),
        Err(ReplayError::Truncated)
    ));
    // A line lost in the middle: the count says so.
    let mut lost = lines.clone();
    lost.remove(3);
    let e = read_export(&file(&lost)[..], 100).unwrap_err().to_string();
    assert_eq!(
        e,
        "line 9: the end line counts 8 decisions, the file holds 7"
    );
    // Something after the end.
    let mut after = lines.clone();
    after.push(lines[1].clone());
    assert!(read_export(&file(&after)[..], 100).is_err());
    // Not an export, another version.
    assert!(matches!(
        read_export(&b"{}\n"[..], 100),
        Err(ReplayError::NotAnExport)
    ));
    assert!(matches!(
        read_export(&b""[..], 100),
        Err(ReplayError::NotAnExport)
    ));
    let v2 = r#"{"vigil_labels":2,"since":0,"until":1}"#.to_owned();
    assert!(matches!(
        read_export(&file(&[v2])[..], 100),
        Err(ReplayError::Version(2))
    ));
    // An unknown action, an unknown label, a line too long.
    let mut bad = lines.clone();
    bad[1] = bad[1].replace("\"block\"", "\"shrug\"");
    assert_eq!(
        read_export(&file(&bad)[..], 100).unwrap_err().to_string(),
        "line 2: unknown action \"shrug\""
    );
    let mut bad = lines.clone();
    bad[1] = bad[1].replace("false_positive", "maybe");
    assert!(
        read_export(&file(&bad)[..], 100)
            .unwrap_err()
            .to_string()
            .starts_with("line 2: ")
    );
    let mut long = lines.clone();
    long[1] = format!(
        "{}{}",
        &long[1][..long[1].len() - 1],
        format_args!(",\"pad\":\"{}\"}}", "x".repeat(70_000))
    );
    assert_eq!(
        read_export(&file(&long)[..], 100).unwrap_err().to_string(),
        "line 2: longer than 65536 bytes"
    );
    // More than the reader takes.
    assert!(matches!(
        read_export(&file(&lines)[..], 7),
        Err(ReplayError::TooMany(7))
    ));
}

#[test]
fn a_setting_with_unknown_reasons_or_bad_thresholds_is_refused_with_every_problem() {
    let mut s = Setting::default();
    s.scale.insert("no_such_reason".to_owned(), 0.5);
    s.scale.insert("ip_changed".to_owned(), f64::NAN);
    s.medium_at = 70;
    let e = s.check().unwrap_err().to_string();
    assert!(e.contains("medium at 70 and high at 60"), "{e}");
    assert!(e.contains("\"no_such_reason\" is not a reason code"), "{e}");
    assert!(e.contains("ip_changed: factor NaN"), "{e}");
}
