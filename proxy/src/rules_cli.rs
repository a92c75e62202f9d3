//! `vigil-proxy rules check DIR` and `vigil-proxy rules test DIR`: what a
//! security team runs before a rule set goes live (and CI runs on the
//! shipped one). The same loader and evaluator as the proxy.

use std::fmt::Write as _;
use std::path::Path;

use vigil_rules::{CaseOutcome, RuleSet};

/// Loads the rules of `dir` and lists them, or every problem; the text to
/// print and whether the set is valid.
pub fn check(dir: &Path) -> (String, bool) {
    let set = match RuleSet::load_dir(dir) {
        Ok(set) => set,
        Err(errors) => return (format!("{errors}\n"), false),
    };
    let mut out = String::new();
    for r in set.rules() {
        let scope = scope_text(&r.scope);
        let _ = writeln!(
            out,
            "{}:{}: {} -> {}{} [{}]{}",
            r.file.display(),
            r.line,
            r.name,
            r.action_name(),
            match r.action {
                vigil_rules::RuleAction::Tag(t) => format!(" {}", set.tag(t).unwrap_or("")),
                vigil_rules::RuleAction::Decide(_) => String::new(),
            },
            r.mode_name(),
            if scope.is_empty() {
                String::new()
            } else {
                format!(" {scope}")
            },
        );
    }
    let _ = writeln!(out, "{}: {} rules ok", dir.display(), set.rules().len());
    (out, true)
}

/// Runs the cases of `dir/tests/` against the rules of `dir`; the report
/// and whether every case passed.
pub fn test(dir: &Path) -> (String, bool) {
    let set = match RuleSet::load_dir(dir) {
        Ok(set) => set,
        Err(errors) => return (format!("{errors}\n"), false),
    };
    let reports = match vigil_rules::run_tests(&set, dir) {
        Ok(r) => r,
        Err(errors) => return (format!("{errors}\n"), false),
    };
    let mut out = String::new();
    let mut failed = 0;
    for r in &reports {
        let decided = match &r.rule {
            Some(name) => format!("rule {name:?}"),
            None => "the route policy".to_owned(),
        };
        let matched: Vec<&str> = r
            .trace
            .iter()
            .filter(|(_, t)| *t == "match")
            .map(|(n, _)| n.as_str())
            .collect();
        match &r.outcome {
            CaseOutcome::Passed => {
                let _ = writeln!(out, "ok   {}: {} by {decided}", r.case, r.action);
            }
            CaseOutcome::Failed(why) => {
                failed += 1;
                let _ = writeln!(out, "FAIL {}: {} by {decided}", r.case, r.action);
                for w in why {
                    let _ = writeln!(out, "       {w}");
                }
                for (name, t) in &r.trace {
                    let _ = writeln!(out, "       {name}: {t}");
                }
            }
        }
        if !r.tags.is_empty() || !r.shadow.is_empty() || matched.len() > 1 {
            let _ = writeln!(
                out,
                "       matched: {}; tags: [{}]; shadow: [{}]",
                matched.join(", "),
                r.tags.join(", "),
                r.shadow.join(", ")
            );
        }
    }
    let _ = writeln!(
        out,
        "{} cases, {} passed, {failed} failed",
        reports.len(),
        reports.len() - failed
    );
    (out, failed == 0 && !reports.is_empty())
}

fn scope_text(s: &vigil_rules::Scope) -> String {
    let mut parts = Vec::new();
    for (key, list) in [
        ("routes", &s.routes),
        ("hosts", &s.hosts),
        ("paths", &s.path_prefixes),
        ("methods", &s.methods),
    ] {
        if !list.is_empty() {
            parts.push(format!("{key}={}", list.join(",")));
        }
    }
    parts.join(" ")
}
