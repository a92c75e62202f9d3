//! Rule files as an operator writes them (and gets them wrong), and the
//! semantics of evaluation, through the public API: `RuleSet::parse_files`,
//! `RuleSet::trace` over a `FactMap`, test cases, and the engine's
//! `decide_with_rules`.

use std::path::PathBuf;

use http::HeaderMap;
use proptest::prelude::*;
use vigil_engine::{
    Action, Decision, Enforcement, Engine, EngineConfig, ForwardedHeaders, Policy, RequestFacts,
    RequestView, SessionHashKey,
};

use crate::facts::{self, FactMap, Type, Value};
use crate::{CaseOutcome, RuleError, RuleSet, RuleTrace};

// === helpers ===

fn parse(files: &[(&str, &str)]) -> Result<RuleSet, Vec<RuleError>> {
    let files: Vec<(PathBuf, String)> = files
        .iter()
        .map(|(p, t)| (PathBuf::from(p), (*t).to_owned()))
        .collect();
    RuleSet::parse_files(&files).map_err(|e| e.0)
}

fn load(text: &str) -> RuleSet {
    match parse(&[("r.toml", text)]) {
        Ok(set) => set,
        Err(e) => panic!("{text}\n{}", crate::RuleErrors(e)),
    }
}

fn errors(text: &str) -> Vec<RuleError> {
    match parse(&[("r.toml", text)]) {
        Ok(_) => panic!("loaded, expected errors:\n{text}"),
        Err(e) => e,
    }
}

/// `(line, column, rule, message)` of every error, in order.
fn summary(errors: &[RuleError]) -> Vec<(usize, usize, Option<&str>, &str)> {
    errors
        .iter()
        .map(|e| (e.line, e.column, e.rule.as_deref(), e.message.as_str()))
        .collect()
}

/// Exactly one error at `line:column` in rule `rule`, its message holding
/// `needle`.
#[track_caller]
fn one_error(text: &str, line: usize, column: usize, rule: Option<&str>, needle: &str) {
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "{:#?}", summary(&errs));
    let e = &errs[0];
    assert_eq!(e.file, PathBuf::from("r.toml"));
    assert_eq!(
        (e.line, e.column, e.rule.as_deref()),
        (line, column, rule),
        "{e}"
    );
    assert!(e.message.contains(needle), "{e}\nexpected: {needle}");
}

/// A file of one rule "r" with `condition` written in a literal string:
/// the condition's first character is at line 3, column 14.
fn with_condition(condition: &str) -> String {
    format!("[[rule]]\nname = \"r\"\ncondition = '{condition}'\naction = \"block\"\n")
}

/// A condition error at character `index` of the condition.
#[track_caller]
fn condition_error(condition: &str, index: usize, needle: &str) {
    one_error(&with_condition(condition), 3, 14 + index, Some("r"), needle);
}

/// Facts by name, values written as text and typed by the schema (lists
/// comma-separated).
fn fm(values: &[(&str, &str)]) -> FactMap {
    let mut out = FactMap::default();
    for (name, v) in values {
        let def = facts::lookup(name).unwrap_or_else(|| panic!("no fact {name}"));
        let value = match def.ty {
            Type::Bool => Value::Bool(v.parse().unwrap()),
            Type::Int => Value::Int(v.parse().unwrap()),
            Type::String => Value::String((*v).to_owned()),
            Type::StringList => Value::List(
                v.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
        };
        out.values.push((def.fact, value));
    }
    out
}

fn with_headers(mut f: FactMap, headers: &[(&str, &str)]) -> FactMap {
    f.headers = headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), (*v).to_owned()))
        .collect();
    f
}

fn request<'a>(host: &'a str, path: &'a str, method: &'a str, route: &'a str) -> RequestFacts<'a> {
    RequestFacts {
        method,
        scheme: "https",
        host,
        path,
        listener: "main",
        route,
    }
}

const ANY: RequestFacts<'static> = RequestFacts {
    method: "GET",
    scheme: "https",
    host: "app.example.com",
    path: "/",
    listener: "main",
    route: "app",
};

/// The action and the deciding rule's name.
fn decide(set: &RuleSet, facts: &FactMap, req: &RequestFacts<'_>) -> (Action, Option<String>) {
    let (ruling, _) = set.trace(facts, req, Action::Allow);
    (
        ruling.action,
        ruling.rule.map(|i| set.rule_at(i).unwrap().name.clone()),
    )
}

/// Whether the condition alone (a single block rule) matches `facts`.
fn holds(condition: &str, facts: &FactMap) -> bool {
    let set = load(&with_condition(condition));
    decide(&set, facts, &ANY).0 == Action::Block
}

// === load errors: every class, with file, rule, line and column ===

#[test]
fn syntax_errors_point_into_the_condition() {
    // The parser's end of input: character 14 of the condition.
    condition_error("risk.level == ", 14, "syntax:");
    // A multi-line condition: line and column in the file, not the string.
    let text = "[[rule]]\nname = \"r\"\ncondition = '''\nrisk.level == \"high\" &&\n  (risk.score > '''\naction = \"block\"\n";
    one_error(text, 5, 17, Some("r"), "syntax:");
}

#[test]
fn a_file_that_is_not_toml_says_where() {
    let errs = errors("[[rule]]\nname = \"r\naction = \"block\"\n");
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].rule, None);
    assert_eq!(errs[0].line, 2);
    assert!(errs[0].message.starts_with("not TOML"), "{}", errs[0]);
}

#[test]
fn unknown_facts_are_named_with_their_neighbours() {
    // Reported at the selection's `.` (CEL's position for a member).
    condition_error("risk.levl == \"high\"", 4, "unknown fact `risk.levl`");
    condition_error("risk.levl == \"high\"", 4, "facts near it: risk.level");
    condition_error("sesion.new", 6, "unknown fact `sesion.new`");
    condition_error("request.headers == \"x\"", 7, "read one header");
}

#[test]
fn literals_of_the_wrong_type_are_refused() {
    condition_error("risk.score > 5.0", 13, "write 5, not 5.0");
    condition_error("risk.score > 5u", 13, "write 5, not 5u");
    condition_error("risk.score == null", 14, "bytes and null");
    condition_error(
        "risk.score == \"5\"",
        11,
        "cannot compare an int with a string",
    );
    condition_error(
        "session.new && risk.score",
        19,
        "expected a bool, found an int",
    );
    condition_error("risk.score", 4, "a condition is a bool, this is an int");
}

#[test]
fn misspelt_values_of_enumerated_facts_never_match_so_are_errors() {
    condition_error("risk.level == \"hgih\"", 14, "\"hgih\" never matches");
    // Either side, and in a list.
    condition_error("\"hgih\" == risk.level", 0, "never matches");
    condition_error(
        "device.browser in [\"chrome\", \"firefx\"]",
        29,
        "never matches",
    );
    condition_error("client.network_change == \"moved\"", 25, "never matches");
    // Free strings take any value.
    load(&with_condition("request.host == \"hgih\""));
}

#[test]
fn unknown_reason_codes_are_errors() {
    condition_error(
        "\"device_change\" in risk.reasons",
        0,
        "unknown reason \"device_change\"",
    );
}

#[test]
fn invalid_patterns_are_errors_at_load() {
    condition_error("request.path.matches(\"(a\")", 21, "invalid pattern");
    condition_error(
        "request.path.matches(request.host)",
        28,
        "a string literal pattern",
    );
}

#[test]
fn constant_conditions_are_errors() {
    // Reported at the root expression: the operator.
    condition_error("1 == 1", 2, "reads no fact");
    condition_error("true", 0, "reads no fact");
    condition_error("\"a\" in [\"a\"]", 4, "reads no fact");
}

#[test]
fn unsupported_cel_is_refused_with_its_position() {
    condition_error(
        "risk.reasons.exists(r, r == \"revoked\")",
        19,
        "macros (exists, all, map, filter) are not supported",
    );
    condition_error("risk.score + 1 > 5", 11, "arithmetic is not supported");
    condition_error("-risk.score < 0", 0, "arithmetic is not supported");
    condition_error("has(risk.score)", 3, "has() is not needed");
    condition_error("{\"a\": 1} == risk.score", 0, "maps and messages");
    condition_error(
        "request.path.lowerAscii() == \"x\"",
        23,
        "unknown method `lowerAscii`",
    );
    condition_error("int(request.path) == 1", 3, "unknown function `int`");
    condition_error(
        "request.headers[request.path] == \"x\"",
        23,
        "string literal",
    );
    condition_error(
        "request.headers[\"bad header\"] == \"x\"",
        16,
        "not a header name",
    );
    condition_error("risk.score in [1, risk.score]", 22, "int literals");
    condition_error("session.new in [true]", 12, "`in` a list of a bool");
}

#[test]
fn negating_the_smallest_int_is_an_error_not_a_panic() {
    let result = std::panic::catch_unwind(|| {
        parse(&[(
            "r.toml",
            &with_condition("risk.score > -(-9223372036854775808)"),
        )])
    });
    let errs = result.expect("no panic").expect_err("an error");
    assert_eq!(errs.len(), 1);
}

#[test]
fn columns_after_non_ascii_text_are_right() {
    // `.levl`'s `.` is character 28 of the condition, as in the ASCII case.
    condition_error(
        "request.path == \"ee\" && risk.levl == \"x\"",
        28,
        "unknown fact",
    );
    condition_error(
        "request.path == \"éé\" && risk.levl == \"x\"",
        28,
        "unknown fact",
    );
}

#[test]
fn unknown_keys_are_errors_where_written() {
    one_error(
        "[[rule]]\nname = \"r\"\ncondition = \"session.new\"\naction = \"block\"\ncolour = 1\n",
        5,
        1,
        Some("r"),
        "unknown key `colour`",
    );
    one_error(
        "x = 1\n[[rule]]\nname = \"r\"\ncondition = \"session.new\"\naction = \"block\"\n",
        1,
        1,
        None,
        "unknown key `x`",
    );
}

#[test]
fn a_rule_needs_a_name_and_an_action() {
    let errs = errors("\n[[rule]]\ncondition = \"session.new\"\n");
    assert_eq!(
        summary(&errs),
        [
            (2, 1, None, "a rule needs a `name`"),
            (2, 1, None, "a rule needs an `action`"),
        ]
    );
    one_error(
        "[[rule]]\nname = \"r\"\ncondition = \"session.new\"\n",
        1,
        1,
        Some("r"),
        "a rule needs an `action`",
    );
    one_error(
        "[[rule]]\nname = \"r\"\ncondition = \"session.new\"\naction = \"deny\"\n",
        4,
        10,
        Some("r"),
        "unknown action \"deny\"",
    );
    one_error(
        "[[rule]]\nname = \"has space\"\ncondition = \"session.new\"\naction = \"block\"\n",
        2,
        8,
        None,
        "rule name",
    );
    one_error(
        "[[rule]]\nname = \"r\"\naction = \"block\"\n",
        1,
        1,
        Some("r"),
        "a `condition` or a scope",
    );
}

#[test]
fn names_are_unique_across_files() {
    let rule = "[[rule]]\nname = \"same\"\nmethods = [\"POST\"]\naction = \"block\"\n";
    let other = "[[rule]]\nname = \"other\"\ncondition = \"session.new\"\naction = \"allow\"\n\n[[rule]]\nname = \"same\"\nmethods = [\"PUT\"]\naction = \"block\"\n";
    let errs = parse(&[("a.toml", rule), ("b.toml", other)]).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].file, PathBuf::from("b.toml"));
    assert_eq!(
        (errs[0].line, errs[0].column, errs[0].rule.as_deref()),
        (6, 1, Some("same"))
    );
    assert!(
        errs[0].message.contains("taken by the rule at a.toml:1"),
        "{}",
        errs[0]
    );
}

#[test]
fn scopes_are_checked() {
    let errs = errors(
        "[[rule]]\nname = \"r\"\nhosts = [\"app.example.com:443\"]\npath_prefixes = [\"api\", \"/a/../b\", \"/a?x\"]\nmethods = [\"get\"]\ncondition = \"session.new\"\naction = \"block\"\n",
    );
    assert_eq!(
        summary(&errs)
            .iter()
            .map(|(l, c, r, _)| (*l, *c, *r))
            .collect::<Vec<_>>(),
        [
            (3, 10, Some("r")),
            (4, 18, Some("r")),
            (4, 25, Some("r")),
            (4, 36, Some("r")),
            (5, 12, Some("r")),
        ]
    );
    assert!(errs[0].message.starts_with("host \"app.example.com:443\""));
    assert!(errs[1].message.starts_with("path prefix \"api\""));
    assert!(errs[4].message.starts_with("method \"get\""));
    // `*.` alone is no host (the rule, left without a scope, is refused
    // for that too).
    let errs = errors("[[rule]]\nname = \"r\"\nhosts = [\"*.\"]\naction = \"block\"\n");
    assert!(
        summary(&errs).contains(&(3, 10, Some("r"), errs[1].message.as_str())),
        "{errs:#?}"
    );
    assert!(errs[1].message.starts_with("host \"*.\""), "{errs:#?}");
}

#[test]
fn empty_lists_and_duplicates_are_errors() {
    let errs = errors(
        "[[rule]]\nname = \"r\"\nmethods = []\ncondition = \"session.new\"\naction = \"block\"\n",
    );
    assert_eq!(summary(&errs).len(), 1);
    assert_eq!((errs[0].line, errs[0].column), (3, 11));
    assert!(errs[0].message.contains("`methods` is empty"));
    one_error(
        "[[rule]]\nname = \"r\"\nmethods = [\"GET\", \"GET\"]\naction = \"block\"\n",
        3,
        19,
        Some("r"),
        "listed twice",
    );
}

#[test]
fn step_up_options_are_only_for_step_up() {
    let errs = errors(
        "[[rule]]\nname = \"r\"\ncondition = \"session.new\"\naction = \"block\"\nacr_values = \"mfa\"\nmax_age = 300\n",
    );
    assert_eq!(
        summary(&errs),
        [
            (5, 14, Some("r"), "`acr_values` is for `step_up` rules"),
            (6, 11, Some("r"), "`max_age` is for `step_up` rules"),
        ]
    );
    let errs = errors(
        "[[rule]]\nname = \"r\"\ncondition = \"session.new\"\naction = \"step_up\"\nacr_values = \"\"\nmax_age = -1\n",
    );
    assert_eq!(errs.len(), 2);
    assert!(errs[1].message.contains("0 to 31536000"));
    let set = load(
        "[[rule]]\nname = \"r\"\ncondition = \"session.new\"\naction = \"step_up\"\nacr_values = \"urn:mfa\"\nmax_age = 300\n",
    );
    assert_eq!(set.rules()[0].acr_values.as_deref(), Some("urn:mfa"));
    assert_eq!(set.rules()[0].max_age, Some(300));
}

#[test]
fn tags_need_a_tag_action_and_a_name() {
    one_error(
        "[[rule]]\nname = \"r\"\ncondition = \"session.new\"\naction = \"tag\"\n",
        4,
        10,
        Some("r"),
        "needs a `tag` name",
    );
    one_error(
        "[[rule]]\nname = \"r\"\ncondition = \"session.new\"\naction = \"block\"\ntag = \"x\"\n",
        5,
        7,
        Some("r"),
        "`tag` is for rules whose action is `tag`",
    );
    one_error(
        "[[rule]]\nname = \"r\"\ncondition = \"session.new\"\naction = \"tag\"\ntag = \"no spaces\"\n",
        5,
        7,
        Some("r"),
        "tag \"no spaces\"",
    );
}

#[test]
fn a_rule_an_earlier_rule_always_decides_before_is_an_error() {
    // Covering scope, no condition.
    one_error(
        "[[rule]]\nname = \"all-sub\"\nhosts = [\"*.example.com\"]\naction = \"block\"\n\n[[rule]]\nname = \"one\"\nhosts = [\"a.example.com\"]\npath_prefixes = [\"/admin\"]\naction = \"allow\"\n",
        6,
        1,
        Some("one"),
        "never decides: rule \"all-sub\" (r.toml:1) covers its scope with no condition",
    );
    // Covering scope, the same condition.
    one_error(
        "[[rule]]\nname = \"a\"\npath_prefixes = [\"/api\"]\ncondition = \"risk.level == \\\"high\\\"\"\naction = \"block\"\n[[rule]]\nname = \"b\"\npath_prefixes = [\"/api/v1\"]\nmethods = [\"POST\"]\ncondition = \"risk.level == \\\"high\\\"\"\naction = \"step_up\"\n",
        6,
        1,
        Some("b"),
        "the same condition",
    );
    // Not shadowed: a narrower earlier scope, another condition, a
    // wildcard against its bare domain, a prefix that is not a segment,
    // a shadow or tag earlier rule.
    load(
        "[[rule]]\nname = \"a\"\nhosts = [\"*.example.com\"]\naction = \"block\"\n\n[[rule]]\nname = \"b\"\nhosts = [\"example.com\"]\naction = \"allow\"\n",
    );
    load(
        "[[rule]]\nname = \"a\"\npath_prefixes = [\"/api\"]\naction = \"block\"\n\n[[rule]]\nname = \"b\"\npath_prefixes = [\"/apix\"]\naction = \"allow\"\n",
    );
    load(
        "[[rule]]\nname = \"a\"\npath_prefixes = [\"/api/v1\"]\naction = \"block\"\n\n[[rule]]\nname = \"b\"\npath_prefixes = [\"/api\"]\naction = \"allow\"\n",
    );
    load(
        "[[rule]]\nname = \"a\"\ncondition = \"session.new\"\naction = \"block\"\n\n[[rule]]\nname = \"b\"\ncondition = \"!session.new\"\naction = \"allow\"\n",
    );
    load(
        "[[rule]]\nname = \"a\"\ncondition = \"session.new\"\naction = \"block\"\nmode = \"shadow\"\n\n[[rule]]\nname = \"b\"\ncondition = \"session.new\"\naction = \"allow\"\n[[rule]]\nname = \"c\"\ncondition = \"user.known\"\naction = \"tag\"\ntag = \"t\"\n\n[[rule]]\nname = \"d\"\ncondition = \"user.known\"\naction = \"revoke\"\n",
    );
}

#[test]
fn every_error_of_a_file_is_reported_at_once_in_order() {
    let text = "[[rule]]\nname = \"b\"\ncondition = 'risk.level == \"hgih\"'\naction = \"block\"\n\n[[rule]]\nname = \"a\"\nmethods = [\"get\"]\ncondition = 'risk.score > 5.0 || risk.levl == \"x\"'\naction = \"nope\"\n";
    let errs = errors(text);
    assert_eq!(
        summary(&errs)
            .iter()
            .map(|(l, c, r, _)| (*l, *c, *r))
            .collect::<Vec<_>>(),
        [
            (3, 28, Some("b")),
            (8, 12, Some("a")),
            (9, 27, Some("a")),
            (9, 38, Some("a")),
            (10, 10, Some("a")),
        ],
        "{}",
        crate::RuleErrors(errs.clone())
    );
    // The display: file:line:column: rule "name": message, one a line.
    let shown = crate::RuleErrors(errs).to_string();
    assert!(
        shown.starts_with("r.toml:3:28: rule \"b\": condition: `risk.level`"),
        "{shown}"
    );
    assert_eq!(
        shown.lines().filter(|l| l.starts_with("r.toml:")).count(),
        5
    );
}

#[test]
fn errors_of_several_files_are_sorted_by_file() {
    let bad = with_condition("risk.score > 5.0");
    let errs = parse(&[("b.toml", &bad), ("a.toml", "[[rule]]\nname = \"x\"\n")]).unwrap_err();
    let files: Vec<_> = errs.iter().map(|e| e.file.display().to_string()).collect();
    assert_eq!(files, ["a.toml", "a.toml", "b.toml"], "{errs:#?}");
}

#[test]
fn load_dir_reads_toml_files_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("20-late.toml"),
        "[[rule]]\nname = \"late\"\ncondition = \"session.new\"\naction = \"allow\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("10-early.toml"),
        "[[rule]]\nname = \"early\"\ncondition = \"user.known\"\naction = \"block\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.md"), "not rules").unwrap();
    let set = RuleSet::load_dir(dir.path()).unwrap();
    let names: Vec<_> = set.rules().iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["early", "late"]);
    assert_eq!(set.rules()[1].file, dir.path().join("20-late.toml"));
    assert_eq!(set.rules()[1].line, 1);
    assert!(RuleSet::load_dir(&dir.path().join("missing")).is_err());
}

// === evaluation ===

const ORDER: &str = r#"
[[rule]]
name = "tag-tools"
condition = 'device.class == "tool"'
action = "tag"
tag = "tool"

[[rule]]
name = "watch-new"
condition = "session.new"
action = "block"
mode = "shadow"

[[rule]]
name = "high-blocks"
condition = 'risk.level == "high"'
action = "block"

[[rule]]
name = "tag-fr"
condition = 'client.country == "FR"'
action = "tag"
tag = "fr"

[[rule]]
name = "medium-steps-up"
condition = 'risk.level == "medium"'
action = "step_up"

[[rule]]
name = "medium-revokes"
condition = 'risk.level == "medium" && risk.score > 60'
action = "revoke"
"#;

#[test]
fn the_first_enforcing_match_decides_tags_accumulate_shadows_record() {
    let set = load(ORDER);
    let facts = fm(&[
        ("device.class", "tool"),
        ("session.new", "true"),
        ("client.country", "FR"),
        ("risk.level", "medium"),
        ("risk.score", "70"),
    ]);
    let (ruling, trace) = set.trace(&facts, &ANY, Action::Allow);
    assert_eq!(ruling.action, Action::StepUp);
    assert_eq!(
        set.rule_at(ruling.rule.unwrap()).unwrap().name,
        "medium-steps-up"
    );
    let tags: Vec<_> = set.tags(ruling.tags).collect();
    assert_eq!(tags, ["tool", "fr"]);
    assert_eq!(ruling.shadow.as_slice(), [1]);
    assert_eq!(
        trace,
        [
            RuleTrace::Match,
            RuleTrace::Match,
            RuleTrace::NoMatch,
            RuleTrace::Match,
            RuleTrace::Match,
            RuleTrace::NotReached,
        ]
    );
    // Tags set before the deciding rule only.
    let facts = fm(&[("risk.level", "high"), ("client.country", "FR")]);
    let (ruling, _) = set.trace(&facts, &ANY, Action::Allow);
    assert_eq!(ruling.action, Action::Block);
    assert_eq!(ruling.tags, 0);
    assert!(ruling.shadow.is_empty());
}

#[test]
fn nothing_matching_leaves_the_policy_tables_action() {
    let set = load(ORDER);
    for default in Action::ALL {
        let (ruling, trace) = set.trace(&fm(&[("session.new", "true")]), &ANY, default);
        assert_eq!(ruling.action, default);
        assert_eq!(ruling.rule, None);
        assert_eq!(
            ruling.shadow.as_slice(),
            [1],
            "the shadow match is recorded"
        );
        assert!(!trace.contains(&RuleTrace::NotReached));
    }
    let (ruling, _) = RuleSet::empty().trace(&FactMap::default(), &ANY, Action::StepUp);
    assert_eq!(ruling.action, Action::StepUp);
}

#[test]
fn a_shadow_match_never_decides() {
    let set = load(
        "[[rule]]\nname = \"s\"\ncondition = \"session.new\"\naction = \"revoke\"\nmode = \"shadow\"\n",
    );
    let (ruling, trace) = set.trace(&fm(&[("session.new", "true")]), &ANY, Action::Allow);
    assert_eq!((ruling.action, ruling.rule), (Action::Allow, None));
    assert_eq!(ruling.shadow.as_slice(), [0]);
    assert_eq!(trace, [RuleTrace::Match]);
}

const SCOPES: &str = r#"
[[rule]]
name = "admin-host"
hosts = ["admin.example.com"]
action = "block"

[[rule]]
name = "sub"
hosts = ["*.corp.example"]
action = "step_up"

[[rule]]
name = "api"
path_prefixes = ["/api"]
methods = ["POST", "DELETE"]
action = "revoke"

[[rule]]
name = "route"
routes = ["billing"]
condition = "!user.known"
action = "block"
"#;

#[test]
fn scopes_select_by_host_prefix_method_and_route() {
    let set = load(SCOPES);
    let none = FactMap::default();
    let at = |host, path, method, route| decide(&set, &none, &request(host, path, method, route));
    let named = |a: Action, r: &str| (a, Some(r.to_owned()));
    assert_eq!(
        at("admin.example.com", "/", "GET", "x"),
        named(Action::Block, "admin-host")
    );
    assert_eq!(
        at("ADMIN.example.com", "/", "GET", "x"),
        named(Action::Block, "admin-host")
    );
    assert_eq!(
        at("xadmin.example.com", "/", "GET", "x"),
        (Action::Allow, None)
    );
    // A wildcard matches subdomains, not the bare domain.
    assert_eq!(
        at("a.corp.example", "/", "GET", "x"),
        named(Action::StepUp, "sub")
    );
    assert_eq!(
        at("a.b.corp.example", "/", "GET", "x"),
        named(Action::StepUp, "sub")
    );
    assert_eq!(at("corp.example", "/", "GET", "x"), (Action::Allow, None));
    assert_eq!(at("xcorp.example", "/", "GET", "x"), (Action::Allow, None));
    // Prefixes on segment boundaries.
    for path in ["/api", "/api/", "/api/v1/users"] {
        assert_eq!(
            at("h", path, "POST", "x"),
            named(Action::Revoke, "api"),
            "{path}"
        );
    }
    for path in ["/apix", "/ap", "/v1/api", "/"] {
        assert_eq!(at("h", path, "POST", "x"), (Action::Allow, None), "{path}");
    }
    assert_eq!(at("h", "/api/x", "GET", "x"), (Action::Allow, None));
    assert_eq!(at("h", "/api/x", "post", "x"), (Action::Allow, None));
    // Routes, with the condition evaluated only in scope.
    assert_eq!(
        at("h", "/", "GET", "billing"),
        named(Action::Block, "route")
    );
    let known = fm(&[("user.known", "true")]);
    assert_eq!(
        decide(&set, &known, &request("h", "/", "GET", "billing")),
        (Action::Allow, None)
    );
    let (_, trace) = set.trace(&known, &request("h", "/", "GET", "other"), Action::Allow);
    assert!(
        trace.iter().all(|t| *t == RuleTrace::OutOfScope),
        "{trace:?}"
    );
}

#[test]
fn a_slash_prefix_matches_every_path() {
    let set = load("[[rule]]\nname = \"r\"\npath_prefixes = [\"/admin/\"]\naction = \"block\"\n");
    let none = FactMap::default();
    assert_eq!(
        decide(&set, &none, &request("h", "/admin/x", "GET", "r")).0,
        Action::Block
    );
    assert_eq!(
        decide(&set, &none, &request("h", "/admin/", "GET", "r")).0,
        Action::Block
    );
    // `/admin/` does not name `/admin` itself.
    assert_eq!(
        decide(&set, &none, &request("h", "/admin", "GET", "r")).0,
        Action::Allow
    );
}

#[test]
fn headers_are_read_by_case_insensitive_name() {
    let agent = fm(&[]);
    let curl = with_headers(agent.clone(), &[("user-agent", "curl/8.5.0")]);
    assert!(holds(
        r#"request.headers["User-Agent"].startsWith("curl/")"#,
        &curl
    ));
    assert!(holds(
        r#"request.headers["user-agent"] == "curl/8.5.0""#,
        &curl
    ));
    assert!(holds(
        r#"request.headers["USER-AGENT"].contains("8.5")"#,
        &curl
    ));
    // Absent: "".
    assert!(holds(r#"request.headers["X-Api-Key"] == """#, &curl));
    assert!(!holds(r#"request.headers["User-Agent"] != """#, &agent));
    assert!(holds(r#"size(request.headers["User-Agent"]) == 0"#, &agent));
}

#[test]
fn lists_strings_sizes_and_reasons() {
    let f = fm(&[
        ("request.path", "/admin/users"),
        ("request.method", "DELETE"),
        ("client.country", "FR"),
        ("device.major", "131"),
        ("client.ip", "10.1.2.3"),
        ("risk.reasons", "device_changed,ip_changed"),
        ("request.host", "héllo.example"),
    ]);
    let yes = [
        r#"request.method in ["POST", "DELETE"]"#,
        r#"client.country in ["FR", "DE"]"#,
        "device.major in [120, 131]",
        r#"!(client.country in ["US"])"#,
        r#"request.path.startsWith("/admin")"#,
        r#"request.path.endsWith("/users")"#,
        r#"request.path.contains("min/us")"#,
        r#"request.path.matches("^/admin/[a-z]+$")"#,
        r#"client.ip.matches("^10\\.")"#,
        "size(request.path) == 12",
        "request.path.size() == 12",
        "size(request.host) == 13",
        r#""device_changed" in risk.reasons"#,
        r#""ip_changed" in risk.reasons && !("revoked" in risk.reasons)"#,
        "size(risk.reasons) == 2",
        "risk.reasons.size() >= 2",
        r#"request.method in risk.reasons || true == !session.new"#,
        r#"session.new ? false : request.path > "/a""#,
        r#"request.path >= "/admin" && request.path < "/b""#,
        "device.major > -1 && device.major != 0",
        "session.new == false",
        r#"risk.level == "low""#,
        r#"device.browser == "other""#,
        r#"request.scheme == "http""#,
        r#"risk.default == "allow""#,
        r#"client.network_change == """#,
    ];
    for c in yes {
        assert!(holds(c, &f), "{c}");
    }
    let no = [
        r#"request.method in ["GET"]"#,
        r#"request.path.startsWith("/api")"#,
        r#"request.path.matches("^/users")"#,
        r#""revoked" in risk.reasons"#,
        "size(risk.reasons) > 2",
        "session.new || user.known",
        r#"request.host.matches("^[a-z.]+$")"#,
    ];
    for c in no {
        assert!(!holds(c, &f), "{c}");
    }
}

#[test]
fn a_fact_not_given_has_its_unknown_value() {
    let none = FactMap::default();
    assert!(holds(
        "risk.score == 0 && session.age == 0 && !user.known",
        &none
    ));
    assert!(holds(
        r#"request.path == "" && client.country == """#,
        &none
    ));
    assert!(holds("size(risk.reasons) == 0", &none));
    assert!(holds(
        r#"device.class == "unknown" && device.os == "unknown""#,
        &none
    ));
    assert!(holds(r#"device.tls_source == "none""#, &none));
    // A step-up never passed is older than any age a rule writes: 0 would
    // read as "just now".
    assert!(holds(
        "session.requests == 0 && session.step_up_age > 900 && !(session.step_up_age <= 900)",
        &none
    ));
    assert!(holds("session.step_up_age == 9223372036854775807", &none));
    // A value of the wrong type in the map reads as unknown, too.
    let wrong = FactMap {
        values: vec![(facts::lookup("risk.score").unwrap().fact, Value::Bool(true))],
        headers: Vec::new(),
    };
    assert!(holds("risk.score == 0", &wrong));
}

// === test cases ===

const CASE_RULES: &str = r#"
[[rule]]
name = "admin-new-device"
path_prefixes = ["/admin"]
condition = '"device_changed" in risk.reasons'
action = "step_up"

[[rule]]
name = "curl"
condition = 'request.headers["user-agent"].startsWith("curl/")'
action = "tag"
tag = "tool"
"#;

const CASES: &str = r#"
[[case]]
name = "new device on admin"
expect = "step_up"
rule = "admin-new-device"
[case.facts]
request.path = "/admin/users"
risk = { level = "medium", reasons = ["device_changed"] }

[[case]]
name = "curl is tagged"
expect = "block"
default = "block"
rule = ""
tags = ["tool"]
[case.facts]
request.path = "/"
[case.headers]
User-Agent = "curl/8"

[[case]]
name = "wrong expectation"
expect = "allow"
rule = ""
tags = ["nope"]
[case.facts.request]
path = "/admin"
[case.facts.risk]
reasons = ["device_changed"]
"#;

#[test]
fn test_cases_run_and_failures_say_what_differed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.toml"), CASE_RULES).unwrap();
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    std::fs::write(dir.path().join("tests").join("cases.toml"), CASES).unwrap();
    let set = RuleSet::load_dir(dir.path()).unwrap();
    assert_eq!(set.rules().len(), 2, "tests/ holds cases, not rules");
    let reports = crate::run_tests(&set, dir.path()).unwrap();
    assert_eq!(reports.len(), 3);
    assert_eq!(reports[0].outcome, CaseOutcome::Passed, "{:?}", reports[0]);
    assert_eq!(
        reports[0].trace[0],
        ("admin-new-device".to_owned(), "match")
    );
    assert_eq!(reports[1].outcome, CaseOutcome::Passed, "{:?}", reports[1]);
    assert_eq!(reports[1].trace[0].1, "out of scope");
    assert!(reports[2].case.ends_with("cases.toml: wrong expectation"));
    assert_eq!(
        reports[2].outcome,
        CaseOutcome::Failed(vec![
            "expected allow, got step_up".to_owned(),
            "expected the route policy to decide, rule \"admin-new-device\" did".to_owned(),
            "expected tags [\"nope\"], got []".to_owned(),
        ])
    );
}

#[test]
fn bad_case_files_report_every_problem() {
    let path = std::path::Path::new("tests/bad.toml");
    let text = r#"
extra = 1
[[case]]
expect = "deny"
colour = 1
[case.facts]
risk.level = "hgih"
risk.scor = 5
risk.score = "high"
risk.reasons = ["nope"]
"#;
    let errs = crate::cases::parse_cases(path, text).unwrap_err();
    assert_eq!(
        errs,
        [
            "unknown key `extra`: a test file holds [[case]] tables",
            "case 1: needs a `name`",
            "case 1: unknown key `colour`",
            "case 1: `expect`: one of allow, step_up, block, revoke",
            "case 1: `risk.level` is one of [\"low\", \"medium\", \"high\"], not \"hgih\"",
            "case 1: `risk.reasons`: \"nope\" is not a reason code",
            "case 1: unknown fact `risk.scor`",
            "case 1: `risk.score` is Int, given string",
        ],
        "{errs:#?}"
    );
    assert!(crate::cases::parse_cases(path, "[[case").is_err());
    let ok = crate::cases::parse_cases(
        path,
        "[[case]]\nname = \"n\"\nexpect = \"revoke\"\n[case.facts]\nsession.new = true\n",
    )
    .unwrap();
    assert_eq!(ok[0].expect, Action::Revoke);
    assert_eq!(ok[0].default, Action::Allow);
    assert_eq!(ok[0].facts, fm(&[("session.new", "true")]));
}

#[test]
fn enumerated_facts_compare_as_strings_would() {
    // Compiled to an index of the fact's values; a value the fact does not
    // list (a test case can give anything) equals none of them.
    assert!(facts::FACTS.len() <= 64, "eval's per-fact cache holds 64");
    let odd = fm(&[("risk.level", "weird"), ("device.browser", "firefox")]);
    assert!(!holds(r#"risk.level == "low""#, &odd));
    assert!(holds(r#"risk.level != "low" && "low" != risk.level"#, &odd));
    assert!(!holds(r#"risk.level in ["low", "medium", "high"]"#, &odd));
    assert!(holds(
        r#"device.browser in ["chrome", "firefox"] && device.browser == "firefox""#,
        &odd
    ));
    assert!(holds(
        r#"device.browser != "chrome" && !(device.browser in ["edge"])"#,
        &odd
    ));
    // Ordering still compares the strings.
    assert!(holds(
        r#"device.browser < "opera" && risk.level > "medium""#,
        &odd
    ));
}

#[test]
fn rules_sharing_a_host_list_agree_on_it_whatever_the_hosts_case() {
    let set = load(
        r#"
[[rule]]
name = "a"
hosts = ["*.example.com"]
condition = 'risk.level == "high"'
action = "block"

[[rule]]
name = "b"
hosts = ["*.example.com"]
path_prefixes = ["/x"]
action = "tag"
tag = "x"

[[rule]]
name = "c"
hosts = ["other.example.org", "*.EXAMPLE.com"]
action = "step_up"
"#,
    );
    for host in ["app.example.com", "APP.Example.COM"] {
        let (ruling, trace) = set.trace(
            &FactMap::default(),
            &request(host, "/x/y", "GET", "r"),
            Action::Allow,
        );
        assert_eq!(ruling.action, Action::StepUp, "{host}");
        assert_eq!(ruling.tags, 1, "{host}");
        assert_eq!(
            trace,
            [RuleTrace::NoMatch, RuleTrace::Match, RuleTrace::Match],
            "{host}"
        );
        let (_, trace) = set.trace(
            &FactMap::default(),
            &request("example.com", "/x/y", "GET", "r"),
            Action::Allow,
        );
        assert_eq!(trace, [RuleTrace::OutOfScope; 3]);
    }
}

#[test]
fn the_shipped_rule_set_passes_its_cases() {
    // The proxy's CLI test runs them too; this needs no proxy build.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("default");
    let set = RuleSet::load_dir(&dir).unwrap();
    let reports = crate::run_tests(&set, &dir).unwrap();
    assert!(reports.len() >= 12);
    for r in &reports {
        assert_eq!(r.outcome, CaseOutcome::Passed, "{r:#?}");
    }
}

#[test]
fn a_rules_dir_without_tests_has_no_cases() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        crate::run_tests(&RuleSet::empty(), dir.path())
            .unwrap()
            .is_empty()
    );
}

// === through the engine: Facts from a real decision ===

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
const NOW: u64 = 1_700_000_000;

fn engine() -> Engine {
    Engine::new(EngineConfig::default(), SessionHashKey::from_bytes([7; 32]))
}

fn headers(cookie: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("user-agent", FIREFOX.parse().unwrap());
    h.insert("x-tenant", "acme".parse().unwrap());
    if let Some(c) = cookie {
        h.insert("cookie", c.parse().unwrap());
    }
    h
}

fn view<'a>(h: &'a HeaderMap, path: &'a str) -> RequestView<'a> {
    RequestView {
        peer: "192.0.2.7".parse().unwrap(),
        headers: h,
        now_secs: NOW,
        tls: Default::default(),
        facts: RequestFacts {
            method: "GET",
            scheme: "https",
            host: "app.example.com",
            path,
            listener: "main",
            route: "app",
        },
    }
}

const ENGINE_RULES: &str = r#"
[[rule]]
name = "admin-firefox"
path_prefixes = ["/admin"]
condition = 'device.browser == "firefox" && request.path.startsWith("/admin/")'
action = "step_up"

[[rule]]
name = "from-doc-net"
condition = 'client.ip.startsWith("192.0.2.") && request.headers["X-Tenant"] == "acme"'
action = "block"
"#;

#[test]
fn rules_decide_over_the_engines_facts() {
    let e = engine();
    let set = load(ENGINE_RULES);
    let h = headers(None);
    let v = e
        .decide_with_rules(
            &view(&h, "/admin/users"),
            &Policy::default(),
            &set,
            ForwardedHeaders::NONE,
        )
        .unwrap();
    assert_eq!(v.action, Action::StepUp);
    assert_eq!(v.ruling.rule, Some(0));
    let v = e
        .decide_with_rules(
            &view(&h, "/home"),
            &Policy::default(),
            &set,
            ForwardedHeaders::NONE,
        )
        .unwrap();
    assert_eq!((v.action, v.ruling.rule), (Action::Block, Some(1)));
    // Without rules, the table: allow.
    let v = e
        .decide(
            &view(&h, "/home"),
            &Policy::default(),
            ForwardedHeaders::NONE,
        )
        .unwrap();
    assert_eq!((v.action, v.ruling.rule), (Action::Allow, None));
}

#[test]
fn engine_facts_read_as_documented() {
    let e = engine();
    let h = headers(Some("session=abc"));
    let set = load(
        r#"
[[rule]]
name = "facts"
condition = '''
request.method == "GET" && request.scheme == "https" && request.host == "app.example.com"
&& request.route == "app" && request.listener == "main" && request.path == "/x"
&& client.ip == "192.0.2.7" && client.peer == "192.0.2.7" && client.chain_length == 0
&& device.browser == "firefox" && device.major == 133 && device.os == "linux"
&& session.present && session.new && session.credentials == 1 && !user.known
&& risk.level == "low" && risk.default == "allow" && size(risk.reasons) == 0
&& time.hour == 22 && time.weekday == 2
'''
action = "revoke"
"#,
    );
    let v = e
        .decide_with_rules(
            &view(&h, "/x"),
            &Policy::default(),
            &set,
            ForwardedHeaders::NONE,
        )
        .unwrap();
    assert_eq!(
        (v.action, v.ruling.rule),
        (Action::Revoke, Some(0)),
        "{v:#?}"
    );
}

#[test]
fn session_requests_and_step_up_age_come_from_the_engines_session_record() {
    let e = engine();
    let h = headers(Some("session=abc"));
    let set = load(
        r#"
[[rule]]
name = "admin-fresh-step-up"
path_prefixes = ["/admin"]
condition = "session.step_up_age > 900"
action = "step_up"

[[rule]]
name = "busy"
condition = "session.requests > 3"
action = "tag"
tag = "busy"
"#,
    );
    let run = |path: &str, secs: u64| {
        let view = RequestView {
            now_secs: NOW + secs,
            ..view(&h, path)
        };
        let v = e
            .decide_with_rules(&view, &Policy::default(), &set, ForwardedHeaders::NONE)
            .unwrap();
        e.apply(
            &v,
            &Decision {
                enforcement: Enforcement::Enforce,
                route: "app",
                reference: None,
                rule: None,
                tags: None,
            },
        );
        v
    };
    // This request is counted: the first reads 1, the fourth 4.
    for i in 1..=3 {
        let v = run("/home", i);
        assert_eq!((v.action, v.ruling.tags), (Action::Allow, 0), "request {i}");
    }
    assert_eq!(run("/home", 4).ruling.tags, 1);
    // Never stepped up: admin asks for one.
    let asked = run("/admin/users", 5);
    assert_eq!((asked.action, asked.ruling.rule), (Action::StepUp, Some(0)));
    // The app confirms the passed step-up: admin is open for 15 minutes.
    assert!(e.confirm(&asked));
    assert_eq!(run("/admin/users", 6).action, Action::Allow);
    assert_eq!(run("/admin/users", 5 + 900).action, Action::Allow);
    assert_eq!(run("/admin/users", 5 + 901).action, Action::StepUp);
}

#[test]
fn a_revoked_session_is_refused_whatever_the_rules_say() {
    let e = engine();
    let allow = load(
        "[[rule]]\nname = \"let-in\"\ncondition = 'client.ip == \"192.0.2.7\"'\naction = \"allow\"\n",
    );
    let h = headers(Some("session=stolen"));
    let first = e.evaluate(&view(&h, "/"), &Policy::default()).unwrap();
    let key = first.session.unwrap().key;
    e.revoke(key, NOW);
    let v = e
        .decide_with_rules(
            &view(&h, "/"),
            &Policy::default(),
            &allow,
            ForwardedHeaders::NONE,
        )
        .unwrap();
    assert_eq!(v.action, Action::Block);
    assert_eq!(v.ruling.rule, None);
    // The same rule lets an anonymous request in.
    let anon = headers(None);
    let v = e
        .decide_with_rules(
            &view(&anon, "/"),
            &Policy::default(),
            &allow,
            ForwardedHeaders::NONE,
        )
        .unwrap();
    assert_eq!((v.action, v.ruling.rule), (Action::Allow, Some(0)));
}

// === evaluation never panics ===

const REPRESENTATIVE: &[&str] = &[
    r#"risk.level == "high""#,
    r#"risk.level in ["medium", "high"] && !user.known"#,
    "risk.score >= 70",
    r#""device_changed" in risk.reasons"#,
    r#"size(risk.reasons) > 2"#,
    r#"request.path in risk.reasons"#,
    r#"device.browser == "curl" || device.class == "tool""#,
    r#"client.country in ["RU", "KP", "IR"]"#,
    r#"request.headers["User-Agent"].contains("python")"#,
    r#"request.headers["x-api-key"] == """#,
    r#"request.path.startsWith("/admin")"#,
    r#"request.path.matches("^/api/v[0-9]+/")"#,
    r#"client.ip.matches("^10\\.")"#,
    "size(request.path) > 200",
    "session.age > 86400 && session.idle > 3600",
    "time.hour < 6 || time.weekday == 0",
    r#"client.network_change in ["different_country", "different_asn"]"#,
    r#"session.new ? risk.score > 20 : risk.score > 50"#,
    r#"device.ja4_a.endsWith("h2") != device.matches"#,
    r#"client.asn in [13335, 16509] && client.provider != """#,
];

fn representative_set() -> RuleSet {
    let mut text = String::new();
    for (i, c) in REPRESENTATIVE.iter().enumerate() {
        let action = ["allow", "step_up", "block", "revoke", "tag"][i % 5];
        let mode = if i % 7 == 3 { "shadow" } else { "enforce" };
        let tag = if action == "tag" {
            format!("tag = \"t{i}\"\n")
        } else {
            String::new()
        };
        text.push_str(&format!(
            "[[rule]]\nname = \"r{i}\"\ncondition = '''{c}'''\naction = \"{action}\"\nmode = \"{mode}\"\n{tag}\n"
        ));
    }
    load(&text)
}

fn any_value(ty: Type, values: &'static [&'static str]) -> BoxedStrategy<Value> {
    match ty {
        Type::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        Type::Int => prop_oneof![any::<i64>(), -2i64..300]
            .prop_map(Value::Int)
            .boxed(),
        Type::String if !values.is_empty() => prop::sample::select(values)
            .prop_map(|v| Value::String(v.to_owned()))
            .boxed(),
        Type::String => prop_oneof![
            ".{0,40}",
            Just("/admin/x".to_owned()),
            Just(String::new()),
            Just("ZZ".repeat(200))
        ]
        .prop_map(Value::String)
        .boxed(),
        Type::StringList => prop::collection::vec(
            prop_oneof![
                prop::sample::select(facts::reason_codes().collect::<Vec<_>>()),
                Just("bogus")
            ]
            .prop_map(str::to_owned),
            0..6,
        )
        .prop_map(Value::List)
        .boxed(),
    }
}

fn any_facts() -> impl Strategy<Value = FactMap> {
    let per_fact: Vec<_> = facts::FACTS
        .iter()
        .map(|d| {
            prop::option::weighted(0.6, any_value(d.ty, d.values)).prop_map(move |v| (d.fact, v))
        })
        .collect();
    let headers = prop::collection::vec(
        (
            prop::sample::select(vec!["user-agent", "x-api-key", "cookie"]),
            ".{0,30}",
        ),
        0..4,
    );
    (per_fact, headers).prop_map(|(values, headers)| FactMap {
        values: values
            .into_iter()
            .filter_map(|(f, v)| v.map(|v| (f, v)))
            .collect(),
        headers: headers
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v))
            .collect(),
    })
}

proptest! {
    #[test]
    fn evaluation_never_panics(
        facts in any_facts(),
        host in "[a-zA-Z.*-]{0,20}",
        path in "/?[a-z/]{0,20}",
        method in prop::sample::select(vec!["GET", "POST", "get", ""]),
        default in prop::sample::select(Action::ALL.to_vec()),
    ) {
        let set = representative_set();
        let req = request(&host, &path, method, "app");
        let (ruling, trace) = set.trace(&facts, &req, default);
        prop_assert_eq!(trace.len(), set.rules().len());
        match ruling.rule {
            Some(i) => {
                prop_assert_eq!(trace[usize::from(i)], RuleTrace::Match);
                prop_assert!(trace[usize::from(i) + 1..].iter().all(|t| *t == RuleTrace::NotReached));
            }
            None => prop_assert_eq!(ruling.action, default),
        }
    }
}

// === limits ===

#[test]
fn a_set_of_more_than_max_rules_is_refused() {
    let rule = |i: usize| {
        format!("[[rule]]\nname = \"r{i}\"\ncondition = \"risk.score > {i}\"\naction = \"block\"\n")
    };
    let at_most: String = (0..crate::MAX_RULES).map(rule).collect();
    let started = std::time::Instant::now();
    assert_eq!(load(&at_most).rules().len(), crate::MAX_RULES);
    // The set-wide checks compare every pair: still quick at the limit.
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    let over: String = (0..=crate::MAX_RULES).map(rule).collect();
    let errs = errors(&over);
    assert_eq!(summary(&errs), [(1, 1, None, "1001 rules; at most 1000")]);
}

#[test]
fn at_most_64_distinct_tags() {
    let rules = |n: usize| -> String {
        (0..n)
            .map(|i| {
                format!(
                    "[[rule]]\nname = \"t{i}\"\ncondition = \"risk.score > {i}\"\naction = \"tag\"\ntag = \"tag{i}\"\n"
                )
            })
            .collect()
    };
    let set = load(&rules(64));
    let all = fm(&[("risk.score", "100")]);
    let (ruling, _) = set.trace(&all, &ANY, Action::Allow);
    assert_eq!(ruling.tags, u64::MAX);
    assert_eq!(set.tags(ruling.tags).count(), 64);
    assert_eq!(set.tag(63), Some("tag63"));
    let errs = errors(&rules(65));
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].rule.as_deref(), Some("t64"));
    assert!(errs[0].message.contains("more than 64 distinct tags"));
}

#[test]
fn a_header_sent_on_several_lines_is_read_joined() {
    let e = engine();
    let mut h = headers(None);
    h.append("x-tenant", "other".parse().unwrap());
    let set = load(
        "[[rule]]\nname = \"r\"\ncondition = 'request.headers[\"X-Tenant\"] == \"acme, other\"'\naction = \"block\"\n",
    );
    let v = e
        .decide_with_rules(
            &view(&h, "/"),
            &Policy::default(),
            &set,
            ForwardedHeaders::NONE,
        )
        .unwrap();
    assert_eq!((v.action, v.ruling.rule), (Action::Block, Some(0)));
}
