//! Rule tests: cases that give facts and the outcome a rule set must reach,
//! as policy engines test their policies. Files `tests/*.toml` beside the
//! rules; `vigil-proxy rules test DIR` runs them.
//!
//! ```toml
//! [[case]]
//! name = "a known user's new device steps up on admin"
//! expect = "step_up"            # the action
//! rule = "admin-new-device"     # the deciding rule; "" for the route policy
//! tags = []                     # optional: exactly these tags
//! shadow = []                   # optional: exactly these shadow matches
//! default = "allow"             # the route policy's action (default allow)
//! [case.facts]
//! request.path = "/admin/users"
//! risk.level = "medium"
//! risk.reasons = ["device_changed"]
//! [case.headers]
//! user-agent = "Mozilla/5.0 …"
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use toml::{Table, Value as Toml};
use vigil_engine::{Action, RequestFacts};

use crate::facts::{self, Fact, FactMap, Type, Value};
use crate::{RuleError, RuleErrors, RuleSet, RuleTrace};

/// One case, as read.
#[derive(Debug, Clone, PartialEq)]
pub struct TestCase {
    /// Its name.
    pub name: String,
    /// The file it is in.
    pub file: PathBuf,
    /// The facts.
    pub facts: FactMap,
    /// The route policy's action.
    pub default: Action,
    /// The action expected.
    pub expect: Action,
    /// The deciding rule expected; `Some("")`: the route policy.
    pub rule: Option<String>,
    /// The tags expected, when given.
    pub tags: Option<Vec<String>>,
    /// The shadow matches expected, when given.
    pub shadow: Option<Vec<String>>,
}

/// Passed, or what differed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaseOutcome {
    /// As expected.
    Passed,
    /// What differed from the expectation.
    Failed(Vec<String>),
}

/// One case run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseReport {
    /// `file: name`.
    pub case: String,
    /// The outcome.
    pub outcome: CaseOutcome,
    /// The action reached.
    pub action: Action,
    /// The deciding rule (`None`: the route policy).
    pub rule: Option<String>,
    /// Tags added.
    pub tags: Vec<String>,
    /// Shadow rules that matched.
    pub shadow: Vec<String>,
    /// Each rule: its name and what happened to it (`out of scope`, `no
    /// match`, `match`, `not reached`).
    pub trace: Vec<(String, &'static str)>,
}

/// Reads every case in `dir/tests/*.toml` and runs it against `set`.
pub fn run_tests(set: &RuleSet, dir: &Path) -> Result<Vec<CaseReport>, RuleErrors> {
    let cases = read_cases(&dir.join("tests"))?;
    Ok(cases.iter().map(|c| run_case(set, c)).collect())
}

fn run_case(set: &RuleSet, case: &TestCase) -> CaseReport {
    let text = |f: Fact| match case.facts.values.iter().find(|(x, _)| *x == f) {
        Some((_, Value::String(s))) => s.as_str(),
        _ => facts::default_text(f),
    };
    let request = RequestFacts {
        method: text(Fact::RequestMethod),
        scheme: text(Fact::RequestScheme),
        host: text(Fact::RequestHost),
        path: text(Fact::RequestPath),
        listener: text(Fact::RequestListener),
        route: text(Fact::RequestRoute),
    };
    let (ruling, trace) = set.trace(&case.facts, &request, case.default);
    let name = |i: u16| set.rule_at(i).map_or(String::new(), |r| r.name.clone());
    let rule = ruling.rule.map(name);
    let tags: Vec<String> = set.tags(ruling.tags).map(str::to_owned).collect();
    let shadow: Vec<String> = ruling.shadow.iter().map(|i| name(*i)).collect();
    let mut failures = Vec::new();
    if ruling.action != case.expect {
        failures.push(format!("expected {}, got {}", case.expect, ruling.action));
    }
    if let Some(want) = &case.rule {
        let got = rule.clone().unwrap_or_default();
        if *want != got {
            let show = |r: &str| {
                if r.is_empty() {
                    "the route policy".to_owned()
                } else {
                    format!("rule {r:?}")
                }
            };
            failures.push(format!(
                "expected {} to decide, {} did",
                show(want),
                show(&got)
            ));
        }
    }
    let same = |a: &[String], b: &[String]| {
        let (mut a, mut b) = (a.to_vec(), b.to_vec());
        a.sort();
        b.sort();
        a == b
    };
    if let Some(want) = &case.tags
        && !same(want, &tags)
    {
        failures.push(format!("expected tags {want:?}, got {tags:?}"));
    }
    if let Some(want) = &case.shadow
        && !same(want, &shadow)
    {
        failures.push(format!("expected shadow matches {want:?}, got {shadow:?}"));
    }
    CaseReport {
        case: format!("{}: {}", case.file.display(), case.name),
        outcome: if failures.is_empty() {
            CaseOutcome::Passed
        } else {
            CaseOutcome::Failed(failures)
        },
        action: ruling.action,
        rule,
        tags,
        shadow,
        trace: set
            .rules()
            .iter()
            .zip(trace)
            .map(|(r, t)| {
                (
                    r.name.clone(),
                    match t {
                        RuleTrace::OutOfScope => "out of scope",
                        RuleTrace::NoMatch => "no match",
                        RuleTrace::Match => "match",
                        RuleTrace::NotReached => "not reached",
                    },
                )
            })
            .collect(),
    }
}

/// Every case of the `*.toml` files in `dir`, by file name; no directory
/// is no cases.
pub(crate) fn read_cases(dir: &Path) -> Result<Vec<TestCase>, RuleErrors> {
    let mut paths: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(_) => return Ok(Vec::new()),
    };
    paths.sort();
    let mut cases = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        let problem = |message: String| RuleError {
            file: path.clone(),
            rule: None,
            line: 1,
            column: 1,
            message,
        };
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                errors.push(problem(format!("cannot read: {e}")));
                continue;
            }
        };
        match parse_cases(&path, &text) {
            Ok(mut c) => cases.append(&mut c),
            Err(messages) => errors.extend(messages.into_iter().map(problem)),
        }
    }
    if errors.is_empty() {
        Ok(cases)
    } else {
        Err(RuleErrors(errors))
    }
}

/// The cases of one file, or every problem in it.
pub(crate) fn parse_cases(path: &Path, text: &str) -> Result<Vec<TestCase>, Vec<String>> {
    let root: Table = text
        .parse()
        .map_err(|e: toml::de::Error| vec![format!("not TOML: {}", e.message())])?;
    let mut errors = Vec::new();
    let mut cases = Vec::new();
    for key in root.keys().filter(|k| *k != "case") {
        errors.push(format!(
            "unknown key `{key}`: a test file holds [[case]] tables"
        ));
    }
    let items = match root.get("case") {
        Some(Toml::Array(items)) => items.as_slice(),
        Some(_) => {
            errors.push("`case` must be [[case]] tables".into());
            &[]
        }
        None => &[],
    };
    for (i, item) in items.iter().enumerate() {
        let Some(t) = item.as_table() else {
            errors.push(format!("case {}: not a table", i + 1));
            continue;
        };
        let name = t
            .get("name")
            .and_then(Toml::as_str)
            .unwrap_or_default()
            .to_owned();
        let label = if name.is_empty() {
            format!("case {}", i + 1)
        } else {
            format!("case {name:?}")
        };
        let mut err = |m: String| errors.push(format!("{label}: {m}"));
        if name.is_empty() {
            err("needs a `name`".into());
        }
        for k in t.keys() {
            if ![
                "name", "expect", "rule", "tags", "shadow", "default", "facts", "headers",
            ]
            .contains(&k.as_str())
            {
                err(format!("unknown key `{k}`"));
            }
        }
        let action = |k: &str, fallback: Option<Action>, err: &mut dyn FnMut(String)| match t
            .get(k)
            .map(|v| v.as_str().map(str::parse::<Action>))
        {
            Some(Some(Ok(a))) => Some(a),
            Some(_) => {
                err(format!("`{k}`: one of allow, step_up, block, revoke"));
                None
            }
            None => {
                if fallback.is_none() {
                    err(format!("needs `{k}`"));
                }
                fallback
            }
        };
        let expect = action("expect", None, &mut err);
        let default = action("default", Some(Action::Allow), &mut err);
        let strings = |k: &str, err: &mut dyn FnMut(String)| -> Option<Vec<String>> {
            let v = t.get(k)?;
            let list: Option<Vec<String>> = v
                .as_array()
                .and_then(|a| a.iter().map(|x| x.as_str().map(str::to_owned)).collect());
            if list.is_none() {
                err(format!("`{k}` must be a list of strings"));
            }
            list
        };
        let tags = strings("tags", &mut err);
        let shadow = strings("shadow", &mut err);
        let rule = match t.get("rule") {
            Some(Toml::String(s)) => Some(s.clone()),
            Some(_) => {
                err("`rule` must be a string".into());
                None
            }
            None => None,
        };
        let mut facts = FactMap::default();
        if let Some(f) = t.get("facts") {
            match f.as_table() {
                Some(table) => flatten(table, "", &mut facts, &mut err),
                None => err("`facts` must be a table".into()),
            }
        }
        if let Some(h) = t.get("headers") {
            match h.as_table() {
                Some(table) => {
                    for (k, v) in table {
                        match v.as_str() {
                            Some(s) => facts.headers.push((k.to_ascii_lowercase(), s.to_owned())),
                            None => err(format!("header {k:?} must be a string")),
                        }
                    }
                }
                None => err("`headers` must be a table".into()),
            }
        }
        if let (Some(expect), Some(default)) = (expect, default) {
            cases.push(TestCase {
                name,
                file: path.to_owned(),
                facts,
                default,
                expect,
                rule,
                tags,
                shadow,
            });
        }
    }
    if errors.is_empty() {
        Ok(cases)
    } else {
        Err(errors)
    }
}

/// Facts written as nested tables (`[case.facts] risk.level = "high"`, or
/// `risk = { level = "high" }`) into values by fact, typed by the schema.
fn flatten(table: &Table, prefix: &str, out: &mut FactMap, err: &mut dyn FnMut(String)) {
    for (k, v) in table {
        let name = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if let Toml::Table(inner) = v
            && facts::lookup(&name).is_none()
        {
            flatten(inner, &name, out, err);
            continue;
        }
        let Some(def) = facts::lookup(&name) else {
            err(format!("unknown fact `{name}`"));
            continue;
        };
        let value = match (def.ty, v) {
            (Type::Bool, Toml::Boolean(b)) => Value::Bool(*b),
            (Type::Int, Toml::Integer(i)) => Value::Int(*i),
            (Type::String, Toml::String(s)) => {
                if !def.values.is_empty() && !def.values.contains(&s.as_str()) {
                    err(format!("`{name}` is one of {:?}, not {s:?}", def.values));
                    continue;
                }
                Value::String(s.clone())
            }
            (Type::StringList, Toml::Array(a)) => {
                let mut codes = Vec::new();
                for x in a {
                    match x.as_str() {
                        Some(c) if facts::reason_bit(c).is_some() => codes.push(c.to_owned()),
                        _ => err(format!("`{name}`: {x} is not a reason code")),
                    }
                }
                Value::List(codes)
            }
            (ty, _) => {
                err(format!("`{name}` is {ty:?}, given {}", v.type_str()));
                continue;
            }
        };
        out.values.push((def.fact, value));
    }
}
