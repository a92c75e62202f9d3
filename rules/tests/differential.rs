//! The proof that Vigil's compiled conditions mean what CEL means: every
//! condition of a corpus covering the supported subset is evaluated on
//! random facts both by a rule set (one `block` rule: it decides exactly
//! when the condition is true) and by the `cel` crate's own interpreter
//! over the same facts as nested maps, and the two must agree.
//!
//! A fact not given has, for the interpreter too, the value Vigil gives an
//! unknown fact (`facts::default_text`, `facts::default_int`, `false`,
//! `[]`), and
//! `request.headers` holds every header the corpus reads (`""` when
//! absent), under the name as the condition writes it: CEL's map index is
//! case-sensitive, Vigil's header names are not (a documented deviation,
//! HTTP's rule).
//!
//! The crate is built without cel's `regex` feature (Vigil compiles
//! patterns itself), so the interpreter is given `matches` as cel's
//! standard library defines it: `regex::Regex::new(pattern).is_match(s)`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: a panic is a failure"
)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use cel::extractors::This;
use cel::{Context, ExecutionError, Program, Value as Cel};
use proptest::prelude::*;
use vigil_engine::{Action, RequestFacts};
use vigil_rules::RuleSet;
use vigil_rules::facts::{self, FactMap, Type, Value};

/// Conditions covering the subset: every operator, every type of fact,
/// headers, lists, reasons, string methods, size, ternaries, negative
/// literals, comparisons of two facts.
const CORPUS: &[&str] = &[
    r#"risk.level == "high""#,
    r#"risk.level != "low" && !user.known"#,
    r#"risk.level in ["medium", "high"]"#,
    r#""high" == risk.session.level || risk.entity.level == "high""#,
    "risk.score >= 50",
    "risk.score > 10 && risk.score <= 70",
    "risk.score < risk.login.score",
    "risk.session.score == risk.entity.score",
    "risk.score in [0, 5, 42, 100]",
    "risk.score > -1",
    r#""device_changed" in risk.reasons"#,
    r#""revoked" in risk.reasons || "user_revoked" in risk.reasons"#,
    r#"!("ip_changed" in risk.reasons)"#,
    "size(risk.reasons) >= 2",
    "risk.reasons.size() == 0",
    "request.path in risk.reasons",
    r#"device.browser == "curl" || device.class == "tool""#,
    r#"device.browser in ["chrome", "edge"] && device.major < 120"#,
    r#"device.os != "unknown" ? device.matches : session.new"#,
    r#"device.ja4.startsWith(device.ja4_a)"#,
    r#"device.tls_source == "captured" && device.ja4_a.endsWith("h2")"#,
    r#"client.country in ["FR", "DE"]"#,
    r#"client.country == "" && client.asn == 0"#,
    r#"client.ip.startsWith("10.") || client.ip == client.peer"#,
    r#"client.ip.matches("^10\\.[0-9]+\\.")"#,
    r#"client.provider != "" && client.egress != client.ip"#,
    r#"client.network_change in ["different_country", "different_asn"]"#,
    "client.chain_length > 1",
    r#"request.path.startsWith("/admin")"#,
    r#"request.path.contains("/api/") && request.method != "GET""#,
    r#"request.path.matches("^/api/v[0-9]+/")"#,
    r#"request.method in ["POST", "PUT", "DELETE"]"#,
    r#"request.host.endsWith(".example.com") && request.scheme == "https""#,
    r#"request.route == "admin" || request.listener == "internal""#,
    r#"request.path < "/b" && request.path >= "/a""#,
    "size(request.path) > 8",
    "request.host.size() <= 3",
    r#"request.headers["User-Agent"].startsWith("curl/")"#,
    r#"request.headers["user-agent"].contains("python")"#,
    r#"request.headers["x-api-key"] == "" && request.headers["User-Agent"] != """#,
    r#"size(request.headers["X-Api-Key"]) > 3"#,
    r#"request.headers["user-agent"] == request.path"#,
    "session.present && !session.new",
    "session.age > 3600 || session.idle > 600",
    "session.credentials > 1 && session.user_known",
    "session.requests > 100 || session.requests in [1, 2]",
    "session.step_up_age <= 600 && session.requests >= session.credentials",
    "session.step_up_age > 3600",
    "session.new == user.learning",
    "session.new != device.matches",
    r#"risk.default == "block" ? risk.score < 50 : risk.score >= 50"#,
    "time.hour < 6 || time.weekday == 0 || time.weekday == 6",
    r#"risk.login.level == "low" && user.known == true"#,
];

/// Headers as the corpus names them (the interpreter's map is indexed by
/// that exact text).
const HEADER_KEYS: &[&str] = &["User-Agent", "user-agent", "x-api-key", "X-Api-Key"];

const STRINGS: &[&str] = &[
    "",
    "/",
    "/admin",
    "/admin/users",
    "/api/v1/x",
    "/apix",
    "/b",
    "/a",
    "GET",
    "POST",
    "DELETE",
    "app.example.com",
    "example.com",
    "abc",
    "admin",
    "internal",
    "10.0.0.1",
    "10.1.2.3",
    "192.0.2.7",
    "FR",
    "US",
    "zscaler",
    "t13d1516h2",
    "t13d1516h2_8daaf6152771_02713d6af862",
    "curl/8.5.0",
    "python-requests/2.31",
    "device_changed",
    "héllo",
    "日本",
];

const INTS: &[i64] = &[
    0,
    1,
    2,
    5,
    6,
    10,
    42,
    50,
    70,
    100,
    119,
    120,
    131,
    600,
    3601,
    -3,
    i64::MAX,
];

fn value(ty: Type, values: &'static [&'static str]) -> BoxedStrategy<Value> {
    match ty {
        Type::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        Type::Int => prop_oneof![
            prop::sample::select(INTS),
            prop::sample::select(vec![0i64, 1, 3, 6, 23])
        ]
        .prop_map(Value::Int)
        .boxed(),
        Type::String if !values.is_empty() => prop::sample::select(values)
            .prop_map(|v| Value::String(v.to_owned()))
            .boxed(),
        Type::String => prop::sample::select(STRINGS)
            .prop_map(|v| Value::String(v.to_owned()))
            .boxed(),
        Type::StringList => {
            prop::sample::subsequence(facts::reason_codes().collect::<Vec<_>>(), 0..5)
                .prop_map(|codes| Value::List(codes.into_iter().map(str::to_owned).collect()))
                .boxed()
        }
    }
}

fn fact_maps() -> impl Strategy<Value = FactMap> {
    let per_fact: Vec<_> = facts::FACTS
        .iter()
        .map(|d| prop::option::weighted(0.7, value(d.ty, d.values)).prop_map(move |v| (d.fact, v)))
        .collect();
    let headers = prop::collection::vec(
        (
            prop::sample::select(vec!["user-agent", "x-api-key"]),
            prop::sample::select(STRINGS),
        ),
        0..3,
    );
    (per_fact, headers).prop_map(|(values, headers)| {
        let mut h: Vec<(String, String)> = Vec::new();
        for (n, v) in headers {
            if !h.iter().any(|(x, _)| x == n) {
                h.push((n.to_owned(), v.to_owned()));
            }
        }
        FactMap {
            values: values
                .into_iter()
                .filter_map(|(f, v)| v.map(|v| (f, v)))
                .collect(),
            headers: h,
        }
    })
}

/// A tree of maps for the interpreter's variables.
#[derive(Default)]
struct Tree(HashMap<String, Node>);

enum Node {
    Leaf(Cel),
    Map(Tree),
}

impl Tree {
    fn insert(&mut self, path: &[&str], v: Cel) {
        match path {
            [last] => {
                self.0.insert((*last).to_owned(), Node::Leaf(v));
            }
            [first, rest @ ..] => {
                let node = self
                    .0
                    .entry((*first).to_owned())
                    .or_insert_with(|| Node::Map(Tree::default()));
                match node {
                    Node::Map(t) => t.insert(rest, v),
                    Node::Leaf(_) => panic!("{first} is a leaf and a map"),
                }
            }
            [] => {}
        }
    }

    fn into_value(self) -> Cel {
        let map: HashMap<String, Cel> = self
            .0
            .into_iter()
            .map(|(k, n)| {
                let v = match n {
                    Node::Leaf(v) => v,
                    Node::Map(t) => t.into_value(),
                };
                (k, v)
            })
            .collect();
        map.into()
    }
}

/// The interpreter's variables for `facts`: every fact, unknown ones with
/// Vigil's unknown value.
fn variables(facts: &FactMap) -> Vec<(String, Cel)> {
    let mut root = Tree::default();
    for def in facts::FACTS {
        let given = facts
            .values
            .iter()
            .find(|(f, _)| *f == def.fact)
            .map(|(_, v)| v);
        let v: Cel = match (def.ty, given) {
            (Type::Bool, Some(Value::Bool(b))) => (*b).into(),
            (Type::Bool, _) => false.into(),
            (Type::Int, Some(Value::Int(i))) => (*i).into(),
            (Type::Int, _) => facts::default_int(def.fact).into(),
            (Type::String, Some(Value::String(s))) => s.clone().into(),
            (Type::String, _) => facts::default_text(def.fact).into(),
            (Type::StringList, Some(Value::List(l))) => l.clone().into(),
            (Type::StringList, _) => Vec::<String>::new().into(),
        };
        let path: Vec<&str> = def.name.split('.').collect();
        root.insert(&path, v);
    }
    let mut headers: HashMap<String, Cel> = HashMap::new();
    for key in HEADER_KEYS {
        let lower = key.to_ascii_lowercase();
        let v = facts
            .headers
            .iter()
            .find(|(n, _)| *n == lower)
            .map_or("", |(_, v)| v.as_str());
        headers.insert((*key).to_owned(), v.into());
    }
    root.insert(&["request", "headers"], headers.into());
    root.0
        .into_iter()
        .map(|(k, n)| {
            let v = match n {
                Node::Leaf(v) => v,
                Node::Map(t) => t.into_value(),
            };
            (k, v)
        })
        .collect()
}

/// `matches` as cel's standard library defines it (its `regex` feature).
fn matches(This(this): This<Arc<String>>, re: Arc<String>) -> Result<bool, ExecutionError> {
    regex::Regex::new(&re)
        .map(|r| r.is_match(&this))
        .map_err(|e| ExecutionError::function_error("matches", e))
}

fn interpreter(program: &Program, facts: &FactMap) -> Result<bool, String> {
    let mut ctx = Context::default();
    ctx.add_function("matches", matches)
        .map_err(|e| format!("{e:?}"))?;
    for (name, v) in variables(facts) {
        ctx.add_variable_from_value(name, v);
    }
    match program.execute(&ctx) {
        Ok(Cel::Bool(b)) => Ok(b),
        Ok(other) => Err(format!("not a bool: {other:?}")),
        Err(e) => Err(format!("error: {e:?}")),
    }
}

const REQUEST: RequestFacts<'static> = RequestFacts {
    method: "GET",
    scheme: "https",
    host: "h",
    path: "/",
    listener: "l",
    route: "r",
};

fn ours(set: &RuleSet, facts: &FactMap) -> bool {
    let (ruling, _) = set.trace(facts, &REQUEST, Action::Allow);
    ruling.action == Action::Block
}

struct Compiled {
    source: &'static str,
    set: RuleSet,
    program: Program,
}

fn corpus() -> Vec<Compiled> {
    CORPUS
        .iter()
        .map(|source| {
            let text =
                format!("[[rule]]\nname = \"c\"\ncondition = '''{source}'''\naction = \"block\"\n");
            let set = RuleSet::parse_files(&[(PathBuf::from("c.toml"), text)])
                .unwrap_or_else(|e| panic!("{source}: {e}"));
            let program = Program::compile(source).unwrap_or_else(|e| panic!("{source}: {e:?}"));
            Compiled {
                source,
                set,
                program,
            }
        })
        .collect()
}

#[test]
fn the_corpus_loads_and_covers_every_fact() {
    let all = CORPUS.join(" ");
    for def in facts::FACTS {
        assert!(all.contains(def.name), "no condition reads {}", def.name);
    }
    assert!(CORPUS.len() >= 40);
    assert_eq!(corpus().len(), CORPUS.len());
}

#[test]
fn unknown_facts_agree_too() {
    for c in corpus() {
        let empty = FactMap::default();
        assert_eq!(
            Ok(ours(&c.set, &empty)),
            interpreter(&c.program, &empty),
            "{}",
            c.source
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn every_condition_means_what_cel_means(facts in fact_maps()) {
        thread_local! {
            static CORPUS_SETS: Vec<Compiled> = corpus();
        }
        CORPUS_SETS.with(|corpus| -> Result<(), TestCaseError> {
            for c in corpus {
                let mine = ours(&c.set, &facts);
                let cel = interpreter(&c.program, &facts);
                prop_assert_eq!(Ok(mine), cel, "{}", c.source);
            }
            Ok(())
        })?;
    }
}

/// How often each condition was true over a fixed sample: a condition
/// that is never (or always) true would prove little.
#[test]
fn the_facts_drawn_make_each_condition_both_true_and_false() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRunner};
    let corpus = corpus();
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    let strategy = fact_maps();
    let mut trues = vec![0usize; corpus.len()];
    let n = 2000;
    for _ in 0..n {
        let facts = strategy.new_tree(&mut runner).unwrap().current();
        for (i, c) in corpus.iter().enumerate() {
            trues[i] += usize::from(ours(&c.set, &facts));
        }
    }
    let degenerate: Vec<_> = corpus
        .iter()
        .zip(&trues)
        .filter(|(_, t)| **t == 0 || **t == n)
        .map(|(c, t)| format!("{} ({t}/{n})", c.source))
        .collect();
    assert!(degenerate.is_empty(), "{degenerate:#?}");
}

/// The harness can fail: a condition and a slightly different one
/// disagree on the facts that tell them apart, through both paths.
#[test]
fn the_comparison_can_fail() {
    let c = corpus();
    let at_least = c.iter().find(|c| c.source == "risk.score >= 50").unwrap();
    let above = Program::compile("risk.score > 50").unwrap();
    let fifty = FactMap {
        values: vec![(facts::lookup("risk.score").unwrap().fact, Value::Int(50))],
        headers: Vec::new(),
    };
    assert!(ours(&at_least.set, &fifty));
    assert_eq!(interpreter(&above, &fifty), Ok(false));
    // Headers reach the interpreter under the name as written.
    let curl = FactMap {
        values: Vec::new(),
        headers: vec![("user-agent".to_owned(), "curl/8.5.0".to_owned())],
    };
    let ua = Program::compile(r#"request.headers["User-Agent"].startsWith("curl/")"#).unwrap();
    assert_eq!(interpreter(&ua, &curl), Ok(true));
}

/// Documented deviation: `risk.reasons` is a set of codes (a bit mask),
/// not a list. A code given twice counts once in `size()`, where CEL's
/// list would count it twice; the engine's reasons of the three risks are
/// merged the same way.
#[test]
fn reasons_are_a_set_not_a_list() {
    let twice = FactMap {
        values: vec![(
            facts::lookup("risk.reasons").unwrap().fact,
            Value::List(vec!["ip_changed".to_owned(), "ip_changed".to_owned()]),
        )],
        headers: Vec::new(),
    };
    let c = corpus();
    let size = c
        .iter()
        .find(|c| c.source == "size(risk.reasons) >= 2")
        .unwrap();
    assert!(!ours(&size.set, &twice));
    assert_eq!(interpreter(&size.program, &twice), Ok(true));
}
