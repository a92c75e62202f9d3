//! Vigil's rules: what happens at which risk, per app and per route,
//! written by a security team in files and changed without a rebuild.
//!
//! A rule file (TOML) holds `[[rule]]` tables, each with a name, a scope
//! (hosts, path prefixes, methods, routes), a condition in CEL over the
//! request's facts ([`facts::FACTS`]), an action (`allow`, `step_up`,
//! `block`, `revoke`, `tag`) and a mode (`enforce` or `shadow`). A
//! directory's files are read in name order and their rules in file
//! order. For each judged credential, rules whose scope matches are
//! evaluated in that order: the first enforcing match of an action other
//! than `tag` decides; a `tag` rule adds its tag and evaluation goes on;
//! every shadow match is recorded and changes nothing; when nothing
//! decides, the route's policy table does. `docs/rules.md` is the
//! operator's reference.
//!
//! Everything is checked at load ([`RuleSet::load_dir`]) and every problem
//! is reported at once with file, rule, line and column; a set that loads
//! evaluates without failing and, but for a header sent on several lines,
//! without allocating.

mod cases;
mod compile;
mod eval;
pub mod facts;
mod file;

use std::fmt;
use std::path::{Path, PathBuf};

use smallvec::SmallVec;
use vigil_engine::{Action, Facts, RequestFacts, Rules, Ruling};

use crate::facts::FactSource;

pub use cases::{CaseOutcome, CaseReport, TestCase, run_tests};
pub use file::MAX_RULES;

/// A rule's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleAction {
    /// Decide: one of the engine's actions.
    Decide(Action),
    /// Add the tag of this index ([`RuleSet::tag`]) and go on.
    Tag(u8),
}

/// A rule's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleMode {
    /// Its match decides (or tags).
    Enforce,
    /// Its match is recorded and counted, and changes nothing.
    Shadow,
}

/// Where a rule applies; an empty list means any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Hosts, lower case: exact names or `*.suffix` (not the bare suffix).
    pub hosts: Vec<String>,
    /// Path prefixes, matched on whole segments (`/api` matches `/api` and
    /// `/api/x`, not `/apix`), against the normalised path.
    pub path_prefixes: Vec<String>,
    /// Methods, upper case.
    pub methods: Vec<String>,
    /// Route names.
    pub routes: Vec<String>,
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique across the set.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Where it applies.
    pub scope: Scope,
    /// The condition as written; `None`: the scope alone.
    pub condition_source: Option<String>,
    /// What a match does.
    pub action: RuleAction,
    /// Enforce or shadow.
    pub mode: RuleMode,
    /// `step_up`: the `acr_values` to ask the identity provider for.
    pub acr_values: Option<String>,
    /// `step_up`: the most seconds since the user's last authentication.
    pub max_age: Option<u32>,
    /// The file and line it was written at.
    pub file: PathBuf,
    /// 1-based line where its table's first key is.
    pub line: usize,
    condition: Option<compile::Bool>,
    /// The number of this rule's host list among the set's distinct ones:
    /// one evaluation matches each distinct list once.
    host_group: u16,
    /// Whether any scope list is set: most rules have none, and skip the
    /// scope check.
    scoped: bool,
}

/// A validated, compiled set of rules: what [`Rules::rule`] evaluates.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Rule>,
    tags: Vec<String>,
    zone: jiff::tz::TimeZone,
}

/// One problem found in a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// The file.
    pub file: PathBuf,
    /// The rule's name, when the problem is in one.
    pub rule: Option<String>,
    /// 1-based line and column.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// Every problem found, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RuleErrors(pub Vec<RuleError>);

/// What one evaluation saw of each rule, for `rules test` and `explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleTrace {
    /// The scope did not match: the condition was not evaluated.
    OutOfScope,
    /// Evaluated, false.
    NoMatch,
    /// Evaluated, true.
    Match,
    /// Not reached: an earlier rule decided.
    NotReached,
}

// === impl RuleSet ===

impl Default for RuleSet {
    fn default() -> Self {
        Self::empty()
    }
}

impl RuleSet {
    /// No rules: the policy table decides everything.
    pub fn empty() -> Self {
        Self {
            rules: Vec::new(),
            tags: Vec::new(),
            zone: jiff::tz::TimeZone::UTC,
        }
    }

    /// Reads every `*.toml` file directly in `dir` (name order; the
    /// `tests/` folder holds test cases, not rules).
    pub fn load_dir(dir: &Path) -> Result<Self, RuleErrors> {
        let files = file::read_dir(dir)?;
        Self::parse_files(&files)
    }

    /// Compiles rule files given as (path, text), in order.
    pub fn parse_files(files: &[(PathBuf, String)]) -> Result<Self, RuleErrors> {
        file::parse(files)
    }

    /// The same rules with `time.hour` and `time.weekday` read in the IANA
    /// time zone `name` (default UTC).
    pub fn with_time_zone(mut self, name: &str) -> Result<Self, String> {
        self.zone = jiff::tz::TimeZone::get(name)
            .map_err(|e| format!("unknown time zone {name:?}: {e}"))?;
        Ok(self)
    }

    /// The rules, in evaluation order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rule at `index` (a [`Ruling`]'s `rule` or `shadow` entry).
    pub fn rule_at(&self, index: u16) -> Option<&Rule> {
        self.rules.get(usize::from(index))
    }

    /// The tag names set in `bits` (a [`Ruling`]'s `tags`).
    pub fn tags(&self, bits: u64) -> impl Iterator<Item = &str> {
        self.tags
            .iter()
            .enumerate()
            .filter(move |(i, _)| bits & (1 << i) != 0)
            .map(|(_, t)| t.as_str())
    }

    /// The name of tag `index`.
    pub fn tag(&self, index: u8) -> Option<&str> {
        self.tags.get(usize::from(index)).map(String::as_str)
    }

    /// Whether the set has no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The zone `time.hour` and `time.weekday` are read in.
    pub fn time_zone(&self) -> &jiff::tz::TimeZone {
        &self.zone
    }

    /// The ruling over facts given by value (a test case, `explain`), for
    /// a request with `request` in scope terms and `default` as the
    /// table's action, with what happened to each rule.
    pub fn trace(
        &self,
        source: &impl FactSource,
        request: &RequestFacts<'_>,
        default: Action,
    ) -> (Ruling, Vec<RuleTrace>) {
        let mut trace = Vec::with_capacity(self.rules.len());
        let ruling = self.run(source, request, default, |t| trace.push(t));
        trace.resize(self.rules.len(), RuleTrace::NotReached);
        (ruling, trace)
    }

    fn run(
        &self,
        source: &impl FactSource,
        request: &RequestFacts<'_>,
        default: Action,
        mut seen: impl FnMut(RuleTrace),
    ) -> Ruling {
        let env = eval::Env::new(source);
        let mut tags = 0u64;
        let mut shadow: SmallVec<[u16; 2]> = SmallVec::new();
        let mut hosts = HostMemo {
            // A set's host patterns are lower case (the loader lowers
            // them): a lower-case host compares byte for byte.
            lower: !request.host.bytes().any(|b| b.is_ascii_uppercase()),
            known: 0,
            hit: 0,
        };
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.in_scope(request, &mut hosts) {
                seen(RuleTrace::OutOfScope);
                continue;
            }
            let matched = rule.condition.as_ref().is_none_or(|c| env.truth(c));
            seen(if matched {
                RuleTrace::Match
            } else {
                RuleTrace::NoMatch
            });
            if !matched {
                continue;
            }
            // At most MAX_RULES rules: the index fits.
            let index = u16::try_from(i).unwrap_or(u16::MAX);
            match (rule.mode, rule.action) {
                (RuleMode::Shadow, _) => shadow.push(index),
                (RuleMode::Enforce, RuleAction::Tag(t)) => tags |= 1 << t,
                (RuleMode::Enforce, RuleAction::Decide(action)) => {
                    return Ruling {
                        action,
                        rule: Some(index),
                        tags,
                        shadow,
                    };
                }
            }
        }
        Ruling {
            action: default,
            rule: None,
            tags,
            shadow,
        }
    }
}

impl Rules for RuleSet {
    fn rule(&self, facts: &Facts<'_>) -> Ruling {
        let source = facts::Request {
            facts,
            zone: &self.zone,
        };
        self.run(&source, &facts.request.facts, facts.default, |_| {})
    }
}

/// Which host lists of a set matched the request, by host group (the
/// first 64 groups; the rest are matched every time).
struct HostMemo {
    lower: bool,
    known: u64,
    hit: u64,
}

// === impl Scope ===

impl Scope {
    /// Whether a request with these facts is in scope.
    pub fn matches(&self, r: &vigil_engine::RequestFacts<'_>) -> bool {
        (self.routes.is_empty() || self.routes.iter().any(|x| x == r.route))
            && (self.methods.is_empty() || self.methods.iter().any(|m| m == r.method))
            && (self.hosts.is_empty() || self.hosts.iter().any(|h| host_matches(h, r.host)))
            && (self.path_prefixes.is_empty()
                || self.path_prefixes.iter().any(|p| prefix_matches(p, r.path)))
    }

    /// Whether every request in `other`'s scope is in this one.
    pub fn covers(&self, other: &Scope) -> bool {
        let list = |mine: &[String], theirs: &[String], within: fn(&str, &str) -> bool| {
            mine.is_empty()
                || (!theirs.is_empty() && theirs.iter().all(|t| mine.iter().any(|m| within(m, t))))
        };
        list(&self.routes, &other.routes, |m, t| m == t)
            && list(&self.methods, &other.methods, |m, t| m == t)
            && list(&self.hosts, &other.hosts, |m, t| {
                m == t
                    || (m.starts_with("*.") && host_matches(m, t.trim_start_matches("*.")))
                    || (m.starts_with("*.") && t.starts_with("*.") && t.ends_with(&m[1..]))
            })
            && list(&self.path_prefixes, &other.path_prefixes, prefix_matches)
    }
}

/// Whether `host` is the host `pattern` names, without regard to case:
/// an exact name, or `*.example.com` for `a.example.com` (not
/// `example.com`). Routes and rule scopes match hosts with this one
/// function, so that they never disagree.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => {
            host.len() > suffix.len()
                && host
                    .get(host.len() - suffix.len()..)
                    .is_some_and(|t| t.eq_ignore_ascii_case(suffix))
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// [`host_matches`] for a lower-case pattern and host: the same answer,
/// compared byte for byte (lengths first) instead of folding case.
fn lower_host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        None => pattern == host,
    }
}

/// Whether `path` is under `prefix` on whole segments: `/api` matches
/// `/api`, `/api/`, `/api/x` and `/api?q`, not `/apix`. Routes and rule
/// scopes match paths with this one function.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    let Some(rest) = path.strip_prefix(prefix) else {
        return false;
    };
    prefix.ends_with('/') || rest.is_empty() || rest.starts_with(['/', '?'])
}

// === impl Rule ===

impl Rule {
    /// [`Scope::matches`], with the host lists already matched in this
    /// evaluation remembered.
    #[inline]
    fn in_scope(&self, r: &RequestFacts<'_>, memo: &mut HostMemo) -> bool {
        if !self.scoped {
            return true;
        }
        let s = &self.scope;
        if !(s.routes.is_empty() || s.routes.iter().any(|x| x == r.route))
            || !(s.methods.is_empty() || s.methods.iter().any(|m| m == r.method))
        {
            return false;
        }
        if !s.hosts.is_empty() {
            let bit = 1u64.checked_shl(u32::from(self.host_group));
            let hit = match bit {
                Some(bit) if memo.known & bit != 0 => memo.hit & bit != 0,
                _ => {
                    let hit = s.hosts.iter().any(|h| {
                        if memo.lower {
                            lower_host_matches(h, r.host)
                        } else {
                            host_matches(h, r.host)
                        }
                    });
                    if let Some(bit) = bit {
                        memo.known |= bit;
                        if hit {
                            memo.hit |= bit;
                        }
                    }
                    hit
                }
            };
            if !hit {
                return false;
            }
        }
        s.path_prefixes.is_empty() || s.path_prefixes.iter().any(|p| prefix_matches(p, r.path))
    }

    /// The action's name, as written.
    pub fn action_name(&self) -> &'static str {
        match self.action {
            RuleAction::Decide(a) => a.as_str(),
            RuleAction::Tag(_) => "tag",
        }
    }

    /// `enforce` or `shadow`.
    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            RuleMode::Enforce => "enforce",
            RuleMode::Shadow => "shadow",
        }
    }
}

// === impl RuleErrors ===

impl fmt::Display for RuleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if let Some(rule) = &self.rule {
            write!(f, "rule {rule:?}: ")?;
        }
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests;
