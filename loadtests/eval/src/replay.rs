//! Replaying operators' labels: the labelled decisions a controller
//! exports (`vigil-controller export-labels`, `docs/evaluation.md`,
//! Replaying labelled decisions) read back ([`read_export`]) and decided
//! again under a changed setting — other weights for reasons, other
//! thresholds or policy, a rule dropped or acting otherwise ([`replay`]) —
//! to see, per label, how many decisions would have changed action; and
//! the weight changes the labels argue for ([`suggest`]), reported, never
//! applied.
//!
//! A decision is re-decided from what the node reported of it: each reason
//! with its points. The score is their sum (capped at 100) under the
//! setting's weights, its level read against the setting's thresholds and
//! mapped to an action by its policy, as the engine's `Policy::decide`
//! does: a `revoked`/`user_revoked` decision stays refused, and
//! `step_up_required` makes an `allow` a `step_up`. A decision a rule made
//! keeps the rule's action (rules read request facts the export does not
//! carry, so they cannot be evaluated again) unless the setting drops the
//! rule (the policy decides instead) or gives it another action.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Read};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use vigil_engine::{Action, Reason};

/// The export format version this reader takes.
pub const VERSION: u32 = 1;

/// The longest line read, in bytes.
pub const MAX_LINE: usize = 64 * 1024;

/// An operator's label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// The user was who they said.
    FalsePositive,
    /// The session was stolen.
    ConfirmedCompromise,
    /// No operator's label; the user passed a step-up on the session
    /// after the detection asked for one (the user's word: a thief who
    /// holds the second factor passes too). Counted in replays, left out of
    /// suggestions.
    StepUpPassed,
}

impl Label {
    /// `false_positive` or `confirmed_compromise`.
    pub fn as_str(self) -> &'static str {
        match self {
            Label::FalsePositive => "false_positive",
            Label::ConfirmedCompromise => "confirmed_compromise",
            Label::StepUpPassed => "step_up_passed",
        }
    }
}

/// One labelled decision, as exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The reference id.
    pub reference: String,
    /// The node that decided.
    pub node: String,
    /// When (seconds since the Unix epoch).
    pub at: u64,
    /// The route's name.
    pub route: String,
    /// The rule that decided; `None`: the route's policy.
    pub rule: Option<String>,
    /// The action decided.
    pub action: String,
    /// Whether it was carried out.
    pub enforced: bool,
    /// The score, 0 to 100.
    pub score: u8,
    /// Reason codes and their points.
    pub reasons: Vec<(String, u8)>,
    /// The label.
    pub label: Label,
    /// When it was labelled.
    pub labelled_at: u64,
}

/// An export read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    /// The period's start and end.
    pub since: u64,
    /// The period's end.
    pub until: u64,
    /// The decisions, in the file's order.
    pub decisions: Vec<Decision>,
    /// Every labelled decision of the period is in it (`false`: the
    /// export's `--max` cut it).
    pub complete: bool,
}

/// Why an export could not be read, or a setting not taken.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Reading failed.
    #[error("read: {0}")]
    Io(#[from] std::io::Error),
    /// The first line is not an export's header.
    #[error("line 1: not a labelled-decision export (expected {{\"vigil_labels\":1,…}})")]
    NotAnExport,
    /// Another version of the format.
    #[error("line 1: export version {0}; this reader takes version {VERSION}")]
    Version(u32),
    /// A line that is not what the format says.
    #[error("line {line}: {problem}")]
    Line {
        /// 1-based.
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// The file ends without its end line: cut short.
    #[error("the export ends without its end line: it was cut short")]
    Truncated,
    /// More decisions than the reader takes.
    #[error("more than {0} decisions")]
    TooMany(usize),
    /// A setting that cannot be replayed.
    #[error("{0}")]
    Setting(String),
}

#[derive(Deserialize)]
struct Header {
    vigil_labels: u32,
    since: u64,
    until: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct End {
    end: EndFields,
}

#[derive(Deserialize)]
struct EndFields {
    decisions: u64,
    complete: bool,
}

/// Reads an export: a header line, decision lines, an end line whose count
/// matches. At most `max` decisions; lines of at most [`MAX_LINE`] bytes.
pub fn read_export(mut r: impl BufRead, max: usize) -> Result<Export, ReplayError> {
    let mut buf = Vec::new();
    let mut line = 0usize;
    let mut next = |buf: &mut Vec<u8>, line: &mut usize| -> Result<bool, ReplayError> {
        buf.clear();
        let n = r
            .by_ref()
            .take(u64::try_from(MAX_LINE + 1).unwrap_or(u64::MAX))
            .read_until(b'\n', buf)?;
        *line += 1;
        if n == 0 {
            return Ok(false);
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        } else if buf.len() > MAX_LINE {
            return Err(ReplayError::Line {
                line: *line,
                problem: format!("longer than {MAX_LINE} bytes"),
            });
        }
        Ok(true)
    };
    if !next(&mut buf, &mut line)? {
        return Err(ReplayError::NotAnExport);
    }
    let header: Header = serde_json::from_slice(&buf).map_err(|_| ReplayError::NotAnExport)?;
    if header.vigil_labels != VERSION {
        return Err(ReplayError::Version(header.vigil_labels));
    }
    let mut decisions = Vec::new();
    loop {
        if !next(&mut buf, &mut line)? {
            return Err(ReplayError::Truncated);
        }
        if buf.starts_with(b"{\"end\"") {
            let end: End = serde_json::from_slice(&buf).map_err(|e| ReplayError::Line {
                line,
                problem: e.to_string(),
            })?;
            if end.end.decisions != decisions.len() as u64 {
                return Err(ReplayError::Line {
                    line,
                    problem: format!(
                        "the end line counts {} decisions, the file holds {}",
                        end.end.decisions,
                        decisions.len()
                    ),
                });
            }
            if next(&mut buf, &mut line)? && !buf.iter().all(u8::is_ascii_whitespace) {
                return Err(ReplayError::Line {
                    line,
                    problem: "a line after the end line".to_owned(),
                });
            }
            return Ok(Export {
                since: header.since,
                until: header.until,
                decisions,
                complete: end.end.complete,
            });
        }
        let d: Decision = serde_json::from_slice(&buf).map_err(|e| ReplayError::Line {
            line,
            problem: e.to_string(),
        })?;
        if Action::from_str(&d.action).is_err() {
            return Err(ReplayError::Line {
                line,
                problem: format!("unknown action {:?}", d.action),
            });
        }
        if decisions.len() == max {
            return Err(ReplayError::TooMany(max));
        }
        decisions.push(d);
    }
}

/// How decisions are decided in a replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// Score at which risk is medium.
    pub medium_at: u8,
    /// Score at which risk is high.
    pub high_at: u8,
    /// The actions at low, medium and high risk.
    pub policy: [Action; 3],
    /// Reason code → factor on each of its contributions' points
    /// (rounded).
    pub scale: BTreeMap<String, f64>,
    /// Reason code → the points of each of its contributions, in place of
    /// the recorded ones (for reasons of one weight, such as
    /// `country_changed`).
    pub points: BTreeMap<String, u8>,
    /// Rules whose decisions the policy makes instead.
    pub drop_rules: BTreeSet<String>,
    /// Rules whose decisions get another action.
    pub rule_actions: BTreeMap<String, Action>,
}

impl Default for Setting {
    /// The engine's default thresholds (30, 60) and the evaluator's policy
    /// (low allow, medium step_up, high block), weights as recorded.
    fn default() -> Self {
        Self {
            medium_at: 30,
            high_at: 60,
            policy: [Action::Allow, Action::StepUp, Action::Block],
            scale: BTreeMap::new(),
            points: BTreeMap::new(),
            drop_rules: BTreeSet::new(),
            rule_actions: BTreeMap::new(),
        }
    }
}

fn known(code: &str) -> Option<Reason> {
    Reason::ALL.into_iter().find(|r| r.code() == code)
}

impl Setting {
    /// Checks the setting: thresholds 1 to 100 with medium at most high;
    /// reason codes the engine knows; factors from 0 to 10. Every problem,
    /// at once.
    pub fn check(&self) -> Result<(), ReplayError> {
        let mut problems = Vec::new();
        if self.medium_at == 0 || self.medium_at > self.high_at || self.high_at > 100 {
            problems.push(format!(
                "thresholds: medium at {} and high at {}; expected 1 <= medium <= high <= 100",
                self.medium_at, self.high_at
            ));
        }
        for code in self.scale.keys().chain(self.points.keys()) {
            if known(code).is_none() {
                problems.push(format!("{code:?} is not a reason code of the engine"));
            }
        }
        for (code, f) in &self.scale {
            if !(f.is_finite() && (0.0..=10.0).contains(f)) {
                problems.push(format!("{code}: factor {f} is not between 0 and 10"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ReplayError::Setting(problems.join("; ")))
        }
    }

    /// The points of one contribution under this setting.
    fn points_of(&self, code: &str, points: u8) -> u32 {
        if let Some(p) = self.points.get(code) {
            return u32::from(*p);
        }
        match self.scale.get(code) {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Some(f) => (f64::from(points) * f).round().clamp(0.0, 255.0) as u32,
            None => u32::from(points),
        }
    }

    /// The score of `d` under this setting: its reasons' points summed,
    /// capped at 100.
    pub fn score(&self, d: &Decision) -> u8 {
        let sum: u32 = d
            .reasons
            .iter()
            .map(|(code, p)| self.points_of(code, *p))
            .sum();
        u8::try_from(sum.min(100)).unwrap_or(100)
    }

    /// The action `d` gets under this setting.
    pub fn decide(&self, d: &Decision) -> Action {
        let recorded = Action::from_str(&d.action).unwrap_or(Action::Block);
        let reasons: Vec<Option<Reason>> = d.reasons.iter().map(|(c, _)| known(c)).collect();
        if reasons.iter().flatten().any(|r| r.is_final()) {
            return if severity(recorded) >= severity(Action::Block) {
                recorded
            } else {
                Action::Block
            };
        }
        let action = match d.rule.as_deref() {
            Some(rule) if !self.drop_rules.contains(rule) => {
                self.rule_actions.get(rule).copied().unwrap_or(recorded)
            }
            _ => {
                let score = self.score(d);
                if score >= self.high_at {
                    self.policy[2]
                } else if score >= self.medium_at {
                    self.policy[1]
                } else {
                    self.policy[0]
                }
            }
        };
        if action == Action::Allow && reasons.iter().flatten().any(|r| r.forces_step_up()) {
            Action::StepUp
        } else {
            action
        }
    }
}

/// How hard an action is on whoever holds the session: allow 0, step_up
/// 1, block 2, revoke 3.
pub fn severity(a: Action) -> u8 {
    match a {
        Action::Allow => 0,
        Action::StepUp => 1,
        Action::Block => 2,
        _ => 3,
    }
}

/// What a replay did to the decisions of one label.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LabelOutcome {
    /// Decisions with the label.
    pub decisions: u64,
    /// Decisions whose action changed.
    pub changed: u64,
    /// Of those, to a softer action (a false positive spared; a confirmed
    /// compromise let further).
    pub softer: u64,
    /// Of those, to a harder one.
    pub harder: u64,
    /// Changed to `allow`: a false positive no longer refused; a
    /// confirmed compromise missed.
    pub now_allowed: u64,
    /// `from → to` → decisions.
    pub transitions: BTreeMap<String, u64>,
}

/// A decision whose action changed, for looking it up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Changed {
    /// Its reference id.
    pub reference: String,
    /// Its label.
    pub label: Label,
    /// The action under the base setting.
    pub from: String,
    /// The action under the changed one.
    pub to: String,
}

/// A replay's report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// Decisions replayed.
    pub decisions: u64,
    /// Decisions a rule made (their action is the rule's unless the rule is
    /// dropped or given another action).
    pub rule_decided: u64,
    /// Decisions whose action under the base setting is the one recorded:
    /// where it is not, the route had other thresholds or policy.
    pub base_agrees: u64,
    /// Per label.
    pub false_positive: LabelOutcome,
    /// Per label.
    pub confirmed_compromise: LabelOutcome,
    /// Per label.
    pub step_up_passed: LabelOutcome,
    /// Up to `examples` changed decisions per label.
    pub examples: Vec<Changed>,
}

/// Decides every decision under `base` and under `changed` and counts,
/// per label, what changed; lists up to `examples` changed decisions per
/// label.
pub fn replay(
    decisions: &[Decision],
    base: &Setting,
    changed: &Setting,
    examples: usize,
) -> ReplayReport {
    let mut report = ReplayReport::default();
    let mut listed = [0usize; 3];
    for d in decisions {
        report.decisions += 1;
        report.rule_decided += u64::from(d.rule.is_some());
        let before = base.decide(d);
        let after = changed.decide(d);
        report.base_agrees += u64::from(before.as_str() == d.action);
        let (outcome, i) = match d.label {
            Label::FalsePositive => (&mut report.false_positive, 0),
            Label::ConfirmedCompromise => (&mut report.confirmed_compromise, 1),
            Label::StepUpPassed => (&mut report.step_up_passed, 2),
        };
        outcome.decisions += 1;
        if before == after {
            continue;
        }
        outcome.changed += 1;
        if severity(after) < severity(before) {
            outcome.softer += 1;
        } else {
            outcome.harder += 1;
        }
        outcome.now_allowed += u64::from(after == Action::Allow);
        *outcome
            .transitions
            .entry(format!("{before} -> {after}"))
            .or_insert(0) += 1;
        if listed[i] < examples {
            listed[i] += 1;
            report.examples.push(Changed {
                reference: d.reference.clone(),
                label: d.label,
                from: before.to_string(),
                to: after.to_string(),
            });
        }
    }
    report
}

impl ReplayReport {
    /// The report as text.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{} labelled decisions replayed ({} decided by a rule); the base setting gives the recorded action for {}\n\n",
            self.decisions, self.rule_decided, self.base_agrees
        );
        s.push_str(
            "| label | decisions | changed | softer | harder | now allowed | transitions |\n",
        );
        s.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
        for (label, o) in [
            ("false_positive", &self.false_positive),
            ("confirmed_compromise", &self.confirmed_compromise),
            ("step_up_passed", &self.step_up_passed),
        ] {
            let t: Vec<String> = o
                .transitions
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            s.push_str(&format!(
                "| {label} | {} | {} | {} | {} | {} | {} |\n",
                o.decisions,
                o.changed,
                o.softer,
                o.harder,
                o.now_allowed,
                t.join(", ")
            ));
        }
        if !self.examples.is_empty() {
            s.push_str("\nchanged decisions (reference label: from -> to):\n");
            for e in &self.examples {
                s.push_str(&format!(
                    "  {} {}: {} -> {}\n",
                    e.reference,
                    e.label.as_str(),
                    e.from,
                    e.to
                ));
            }
        }
        s
    }
}

// === suggestions ===

/// Factors tried when lowering a reason's weight, from the smallest change.
pub const LOWER: [f64; 4] = [0.75, 0.5, 0.25, 0.0];

/// Factors tried when raising a reason's weight, from the smallest change.
pub const RAISE: [f64; 4] = [1.25, 1.5, 2.0, 3.0];

/// Which way a suggestion moves a weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Lower: fewer false positives refused, no confirmed compromise let
    /// further.
    Lower,
    /// Raise: confirmed compromises met harder, no false positive refused
    /// harder.
    Raise,
}

/// One reason's weight change the labels argue for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suggestion {
    /// The reason code.
    pub reason: String,
    /// Lower or raise.
    pub direction: Direction,
    /// The factor on its points.
    pub factor: f64,
    /// False positives whose action becomes softer.
    pub false_positives_spared: u64,
    /// Confirmed compromises whose action becomes harder.
    pub compromises_hardened: u64,
    /// Labelled decisions that carry the reason.
    pub decisions_with_reason: u64,
}

/// The weight changes, one reason at a time, that the labels argue for,
/// over `base`:
///
/// - **lower** a reason by the factor of [`LOWER`] that spares the most
///   false positives (their action softer) while no confirmed compromise's
///   action becomes softer at all; ties go to the smallest change;
/// - **raise** a reason by the factor of [`RAISE`] that hardens the most
///   confirmed compromises (a step-up that becomes a block) while no false
///   positive's action becomes harder; ties go to the smallest change.
///
/// Only operators' labels (decisions labelled `step_up_passed` are left
/// out: the user's word is not a finding), and only reasons the engine
/// weighs (not `revoked`, `user_revoked`, `step_up_required`) that appear
/// in them. Lowerings first, by
/// false positives spared; then raisings, by compromises hardened; ties by
/// code. Never applied: a report for an operator to weigh.
pub fn suggest(decisions: &[Decision], base: &Setting) -> Vec<Suggestion> {
    let decisions: Vec<&Decision> = decisions
        .iter()
        .filter(|d| d.label != Label::StepUpPassed)
        .collect();
    let mut codes: BTreeMap<&'static str, u64> = BTreeMap::new();
    for d in &decisions {
        let mut seen = BTreeSet::new();
        for (code, _) in &d.reasons {
            if let Some(r) = known(code)
                && !r.is_final()
                && !r.forces_step_up()
                && seen.insert(r.code())
            {
                *codes.entry(r.code()).or_insert(0) += 1;
            }
        }
    }
    let before: Vec<Action> = decisions.iter().map(|d| base.decide(d)).collect();
    // (softer FP, softer CC, harder FP, harder CC) with `code` scaled.
    let effect = |code: &str, factor: f64| {
        let mut s = base.clone();
        s.scale.insert(code.to_owned(), factor);
        let mut e = [0u64; 4];
        for (d, b) in decisions.iter().zip(&before) {
            if !d.reasons.iter().any(|(c, _)| c == code) {
                continue;
            }
            let a = s.decide(d);
            let fp = d.label == Label::FalsePositive;
            match severity(a).cmp(&severity(*b)) {
                std::cmp::Ordering::Less => e[if fp { 0 } else { 1 }] += 1,
                std::cmp::Ordering::Greater => e[if fp { 2 } else { 3 }] += 1,
                std::cmp::Ordering::Equal => {}
            }
        }
        e
    };
    let mut lower = Vec::new();
    let mut raise = Vec::new();
    for (&code, &n) in &codes {
        let mut best: Option<(f64, u64)> = None;
        for f in LOWER {
            let e = effect(code, f);
            if e[1] == 0 && e[0] > 0 && best.is_none_or(|(_, spared)| e[0] > spared) {
                best = Some((f, e[0]));
            }
        }
        if let Some((factor, spared)) = best {
            lower.push(Suggestion {
                reason: code.to_owned(),
                direction: Direction::Lower,
                factor,
                false_positives_spared: spared,
                compromises_hardened: 0,
                decisions_with_reason: n,
            });
        }
        let mut best: Option<(f64, u64)> = None;
        for f in RAISE {
            let e = effect(code, f);
            if e[2] == 0 && e[3] > 0 && best.is_none_or(|(_, hardened)| e[3] > hardened) {
                best = Some((f, e[3]));
            }
        }
        if let Some((factor, hardened)) = best {
            raise.push(Suggestion {
                reason: code.to_owned(),
                direction: Direction::Raise,
                factor,
                false_positives_spared: 0,
                compromises_hardened: hardened,
                decisions_with_reason: n,
            });
        }
    }
    lower.sort_by(|a, b| {
        b.false_positives_spared
            .cmp(&a.false_positives_spared)
            .then_with(|| a.reason.cmp(&b.reason))
    });
    raise.sort_by(|a, b| {
        b.compromises_hardened
            .cmp(&a.compromises_hardened)
            .then_with(|| a.reason.cmp(&b.reason))
    });
    lower.extend(raise);
    lower
}

/// Suggestions as text.
pub fn suggestions_table(list: &[Suggestion]) -> String {
    if list.is_empty() {
        return "no weight change of one reason spares a false positive without softening a confirmed compromise, or hardens a confirmed compromise without hardening a false positive\n".to_owned();
    }
    let mut s = String::from(
        "suggestions (one reason at a time; never applied — weigh them, then replay):\n\
         | reason | change | factor | false positives spared | compromises hardened | labelled decisions with it |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    for g in list {
        s.push_str(&format!(
            "| {} | {} | x{} | {} | {} | {} |\n",
            g.reason,
            match g.direction {
                Direction::Lower => "lower",
                Direction::Raise => "raise",
            },
            g.factor,
            g.false_positives_spared,
            g.compromises_hardened,
            g.decisions_with_reason
        ));
    }
    s
}
