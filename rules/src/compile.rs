//! A condition's CEL source → a typed expression over [`Facts`], checked
//! once at load and evaluated per request without allocation.
//!
//! Why not the `cel` crate's interpreter: it evaluates over dynamic
//! `Value`s in a `Context` of named variables, so every request would
//! build that context (maps of strings for every fact) before the first
//! rule runs — measured in `benches/rules.rs`: the same 50 conditions
//! cost about 80 µs a request through the interpreter with its patterns
//! compiled once (46 µs of it building the context), and under 1 µs
//! compiled here. So Vigil uses the crate's parser (the grammar,
//! macros and positions stay CEL's) and compiles the subset a policy
//! needs to a typed tree of its own. The differential property test in
//! `tests/differential.rs` evaluates every condition both ways, on random
//! facts, and requires the same answer: the subset means what CEL means.
//!
//! The subset: literals (bool, int, string, lists of them); facts by
//! their dotted name ([`crate::facts::FACTS`]) and `request.headers["…"]`;
//! `!`, `&&`, `||`, `? :`; `==` `!=` `<` `<=` `>` `>=` on ints and strings,
//! `==` `!=` on bools; `in` a list literal, and `"code" in risk.reasons`;
//! `startsWith`, `endsWith`, `contains`, `matches` (a literal pattern) and
//! `size`. Everything is typed at load: a fact name that does not exist, a
//! literal of the wrong type, a value a fact never takes (`risk.level ==
//! "hgih"`), an unknown reason code, an invalid pattern and a condition
//! that reads no fact at all are errors with their position. Nothing in
//! the subset can fail at run time, so a condition is always true or false.

use cel::common::ast::operators as op;
use cel::common::ast::{CallExpr, Expr, IdedExpr, LiteralValue, SelectExpr};
use http::HeaderName;
use regex::Regex;

use crate::facts::{self, Fact, Type};

/// A compile error: where in the condition (a character offset) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CompileError {
    /// Offset of the offending expression, in bytes from the start of the
    /// condition (as the parser's source info gives it); `None` when the
    /// parser gave none.
    pub offset: Option<usize>,
    /// Line and column (1-based) the parser reported, for syntax errors.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

/// A boolean expression.
#[derive(Debug, Clone)]
pub(crate) enum Bool {
    Const(bool),
    Fact(Fact),
    Not(Box<Bool>),
    And(Box<Bool>, Box<Bool>),
    Or(Box<Bool>, Box<Bool>),
    If(Box<Bool>, Box<Bool>, Box<Bool>),
    Same(bool, Box<Bool>, Box<Bool>),
    Int(Cmp, Int, Int),
    Str(Cmp, Str, Str),
    /// An enumerated fact (one whose [`FactDef::values`](facts::FactDef)
    /// are listed) is one of the values whose bits are set in the mask (bit
    /// `i`: `values[i]`), or is not when negated: `==`, `!=` and `in` on
    /// those facts compare an index, not strings.
    Variant {
        fact: Fact,
        values: &'static [&'static str],
        mask: u32,
        negate: bool,
    },
    IntIn(Int, Vec<i64>),
    StrIn(Str, Vec<String>),
    /// Any of these reason bits is in `risk.reasons`.
    Reasons(u32),
    /// A string (not a literal) in `risk.reasons`.
    StrInReasons(Str),
    StartsWith(Str, Str),
    EndsWith(Str, Str),
    Contains(Str, Str),
    Matches(Str, Box<Regex>),
}

/// An integer expression.
#[derive(Debug, Clone)]
pub(crate) enum Int {
    Const(i64),
    Fact(Fact),
    /// `size()` of a string: its characters, as CEL counts them.
    Size(Box<Str>),
    /// `size(risk.reasons)`.
    ReasonCount,
}

/// A string expression.
#[derive(Debug, Clone)]
pub(crate) enum Str {
    Const(String),
    Fact(Fact),
    Header(HeaderName),
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A typed expression while compiling.
enum Typed {
    Bool(Bool),
    Int(Int),
    Str(Str),
    /// A literal list (its elements' type checked when used).
    List(Vec<IdedExpr>),
    /// `risk.reasons`.
    Reasons,
}

/// What a compiled condition reads, to skip work the rules never need.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Reads {
    pub facts: bool,
    pub time: bool,
    pub reasons: bool,
}

/// Compiles `source` into a boolean expression. Errors are collected, not
/// stopped at: every problem the walk finds is returned.
pub(crate) fn compile(source: &str) -> Result<(Bool, Reads), Vec<CompileError>> {
    let parsed = cel::parser::Parser::new()
        .max_recursion_depth(64)
        .parse_with_source_info(source);
    let (expr, info) = match parsed {
        Ok(parsed) => parsed,
        Err(errors) => {
            return Err(errors
                .errors
                .into_iter()
                .map(|e| CompileError {
                    offset: None,
                    position: usize::try_from(e.pos.0)
                        .ok()
                        .zip(usize::try_from(e.pos.1).ok())
                        .map(|(l, c)| (l, c + 1)),
                    message: format!("syntax: {}", e.msg),
                })
                .collect());
        }
    };
    let mut c = Compiler {
        info: &info,
        errors: Vec::new(),
        reads: Reads::default(),
    };
    let compiled = c.expr(&expr);
    let result = match compiled {
        Some(Typed::Bool(b)) => Some(b),
        Some(other) => {
            c.error(
                &expr,
                format!("a condition is a bool, this is {}", kind(&other)),
            );
            None
        }
        None => None,
    };
    if result.is_some() && !c.reads.facts {
        c.error(&expr, "the condition reads no fact: it is constant".into());
    }
    match result {
        Some(b) if c.errors.is_empty() => Ok((b, c.reads)),
        _ => Err(c.errors),
    }
}

struct Compiler<'a> {
    info: &'a cel::common::ast::SourceInfo,
    errors: Vec<CompileError>,
    reads: Reads,
}

fn kind(t: &Typed) -> &'static str {
    match t {
        Typed::Bool(_) => "a bool",
        Typed::Int(_) => "an int",
        Typed::Str(_) => "a string",
        Typed::List(_) => "a list",
        Typed::Reasons => "a list of strings",
    }
}

impl Compiler<'_> {
    fn error(&mut self, at: &IdedExpr, message: String) {
        let offset = self
            .info
            .offset_for(at.id)
            .and_then(|(start, _)| usize::try_from(start).ok());
        self.errors.push(CompileError {
            offset,
            position: None,
            message,
        });
    }

    fn expr(&mut self, e: &IdedExpr) -> Option<Typed> {
        match &e.expr {
            Expr::Literal(l) => self.literal(e, l),
            Expr::Ident(name) => self.fact(e, name),
            Expr::Select(s) => self.select(e, s),
            Expr::Call(call) => self.call(e, call),
            Expr::List(list) => Some(Typed::List(list.elements.clone())),
            Expr::Comprehension(_) => {
                self.error(
                    e,
                    "macros (exists, all, map, filter) are not supported: use `in` or a method"
                        .into(),
                );
                None
            }
            Expr::Map(_) | Expr::Struct(_) => {
                self.error(
                    e,
                    "maps and messages are not supported in conditions".into(),
                );
                None
            }
            Expr::Unspecified => {
                self.error(e, "this expression is not supported in conditions".into());
                None
            }
        }
    }

    fn literal(&mut self, e: &IdedExpr, l: &LiteralValue) -> Option<Typed> {
        match l {
            LiteralValue::Boolean(b) => Some(Typed::Bool(Bool::Const(**b))),
            LiteralValue::Int(i) => Some(Typed::Int(Int::Const(**i))),
            LiteralValue::String(s) => Some(Typed::Str(Str::Const(s.to_string()))),
            LiteralValue::UInt(_) => {
                self.error(e, "facts are ints: write 5, not 5u".into());
                None
            }
            LiteralValue::Double(_) => {
                self.error(e, "facts are ints: write 5, not 5.0".into());
                None
            }
            LiteralValue::Bytes(_) | LiteralValue::Null => {
                self.error(e, "bytes and null are not facts' types".into());
                None
            }
        }
    }

    /// A dotted name: `risk.level`, or the first part of one.
    fn dotted(e: &IdedExpr) -> Option<String> {
        match &e.expr {
            Expr::Ident(n) => Some(n.clone()),
            Expr::Select(s) if !s.test => {
                Some(format!("{}.{}", Self::dotted(&s.operand)?, s.field))
            }
            _ => None,
        }
    }

    fn select(&mut self, e: &IdedExpr, s: &SelectExpr) -> Option<Typed> {
        if s.test {
            self.error(
                e,
                "has() is not needed: every fact always has a value (\"\", 0 or false when unknown)"
                    .into(),
            );
            return None;
        }
        match Self::dotted(e) {
            Some(name) => self.fact(e, &name),
            None => {
                self.error(e, format!("`.{}` of something that is not a fact", s.field));
                None
            }
        }
    }

    fn fact(&mut self, e: &IdedExpr, name: &str) -> Option<Typed> {
        if name == facts::HEADERS {
            self.error(e, "read one header: request.headers[\"name\"]".into());
            return None;
        }
        let Some(def) = facts::lookup(name) else {
            let hint = facts::FACTS
                .iter()
                .filter(|f| {
                    f.name.starts_with(&format!("{name}."))
                        || name
                            .split('.')
                            .next()
                            .is_some_and(|g| f.name.starts_with(g))
                })
                .map(|f| f.name)
                .take(8)
                .collect::<Vec<_>>();
            let hint = if hint.is_empty() {
                String::from("see docs/rules.md for the facts")
            } else {
                format!("facts near it: {}", hint.join(", "))
            };
            self.error(e, format!("unknown fact `{name}` ({hint})"));
            return None;
        };
        self.reads.facts = true;
        self.reads.time |= matches!(def.fact, Fact::TimeHour | Fact::TimeWeekday);
        Some(match def.ty {
            Type::Bool => Typed::Bool(Bool::Fact(def.fact)),
            Type::Int => Typed::Int(Int::Fact(def.fact)),
            Type::String => Typed::Str(Str::Fact(def.fact)),
            Type::StringList => {
                self.reads.reasons = true;
                Typed::Reasons
            }
        })
    }

    fn call(&mut self, e: &IdedExpr, call: &CallExpr) -> Option<Typed> {
        let f = call.func_name.as_str();
        let args = &call.args;
        if let Some(target) = &call.target {
            return self.method(e, f, target, args);
        }
        match (f, args.as_slice()) {
            (op::LOGICAL_NOT, [a]) => {
                let a = self.boolean(a)?;
                Some(Typed::Bool(Bool::Not(Box::new(a))))
            }
            (op::LOGICAL_AND | op::LOGICAL_OR, [a, b]) => {
                let (a, b) = (self.boolean(a), self.boolean(b));
                let (a, b) = (Box::new(a?), Box::new(b?));
                Some(Typed::Bool(if f == op::LOGICAL_AND {
                    Bool::And(a, b)
                } else {
                    Bool::Or(a, b)
                }))
            }
            (op::CONDITIONAL, [c, a, b]) => {
                let (c, a, b) = (self.boolean(c), self.boolean(a), self.boolean(b));
                Some(Typed::Bool(Bool::If(
                    Box::new(c?),
                    Box::new(a?),
                    Box::new(b?),
                )))
            }
            (
                op::EQUALS
                | op::NOT_EQUALS
                | op::LESS
                | op::LESS_EQUALS
                | op::GREATER
                | op::GREATER_EQUALS,
                [a, b],
            ) => self.compare(e, f, a, b),
            (op::IN, [a, b]) => self.membership(e, a, b),
            (op::INDEX, [target, key]) => self.index(e, target, key),
            ("size", [a]) => self.size(e, a),
            (op::NEGATE, [a]) => match &a.expr {
                Expr::Literal(LiteralValue::Int(i)) => match i.checked_neg() {
                    Some(v) => Some(Typed::Int(Int::Const(v))),
                    None => {
                        self.error(e, "this negation does not fit in an int".into());
                        None
                    }
                },
                _ => {
                    self.error(e, "arithmetic is not supported in conditions".into());
                    None
                }
            },
            (op::ADD | op::SUBSTRACT | op::MULTIPLY | op::DIVIDE | op::MODULO, _) => {
                self.error(e, "arithmetic is not supported in conditions".into());
                None
            }
            (op::HAS, _) => {
                self.error(
                    e,
                    "has() is not needed: every fact always has a value".into(),
                );
                None
            }
            _ => {
                self.error(e, format!("unknown function `{}`", f.trim_matches('_')));
                None
            }
        }
    }

    fn boolean(&mut self, e: &IdedExpr) -> Option<Bool> {
        match self.expr(e)? {
            Typed::Bool(b) => Some(b),
            other => {
                self.error(e, format!("expected a bool, found {}", kind(&other)));
                None
            }
        }
    }

    fn string(&mut self, e: &IdedExpr) -> Option<Str> {
        match self.expr(e)? {
            Typed::Str(s) => Some(s),
            other => {
                self.error(e, format!("expected a string, found {}", kind(&other)));
                None
            }
        }
    }

    /// Checks that a literal compared with an enumerated fact is one of its
    /// values: a misspelt value would silently never match.
    fn check_value(&mut self, at: &IdedExpr, fact: &Str, literal: &Str) {
        let (Str::Fact(f), Str::Const(v)) = (fact, literal) else {
            return;
        };
        let Some(def) = facts::FACTS.iter().find(|d| d.fact == *f) else {
            return;
        };
        if !def.values.is_empty() && !def.values.contains(&v.as_str()) {
            self.error(
                at,
                format!(
                    "`{}` is one of {}; {v:?} never matches",
                    def.name,
                    def.values
                        .iter()
                        .map(|v| format!("{v:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
    }

    fn compare(&mut self, e: &IdedExpr, f: &str, a: &IdedExpr, b: &IdedExpr) -> Option<Typed> {
        let cmp = match f {
            op::EQUALS => Cmp::Eq,
            op::NOT_EQUALS => Cmp::Ne,
            op::LESS => Cmp::Lt,
            op::LESS_EQUALS => Cmp::Le,
            op::GREATER => Cmp::Gt,
            _ => Cmp::Ge,
        };
        let (x, y) = (self.expr(a), self.expr(b));
        match (x?, y?) {
            (Typed::Int(x), Typed::Int(y)) => Some(Typed::Bool(Bool::Int(cmp, x, y))),
            (Typed::Str(x), Typed::Str(y)) => {
                self.check_value(b, &x, &y);
                self.check_value(a, &y, &x);
                if matches!(cmp, Cmp::Eq | Cmp::Ne) {
                    let variant = match (&x, &y) {
                        (Str::Fact(f), Str::Const(v)) | (Str::Const(v), Str::Fact(f)) => {
                            variant(*f, std::slice::from_ref(v), cmp == Cmp::Ne)
                        }
                        _ => None,
                    };
                    if let Some(b) = variant {
                        return Some(Typed::Bool(b));
                    }
                }
                Some(Typed::Bool(Bool::Str(cmp, x, y)))
            }
            (Typed::Bool(x), Typed::Bool(y)) if matches!(cmp, Cmp::Eq | Cmp::Ne) => Some(
                Typed::Bool(Bool::Same(cmp == Cmp::Ne, Box::new(x), Box::new(y))),
            ),
            (x, y) => {
                self.error(e, format!("cannot compare {} with {}", kind(&x), kind(&y)));
                None
            }
        }
    }

    fn membership(&mut self, e: &IdedExpr, a: &IdedExpr, b: &IdedExpr) -> Option<Typed> {
        let item = self.expr(a)?;
        match self.expr(b)? {
            Typed::Reasons => match item {
                Typed::Str(Str::Const(code)) => match facts::reason_bit(&code) {
                    Some(bit) => Some(Typed::Bool(Bool::Reasons(bit))),
                    None => {
                        self.error(
                            a,
                            format!(
                                "unknown reason {code:?}: one of {}",
                                facts::reason_codes().collect::<Vec<_>>().join(", ")
                            ),
                        );
                        None
                    }
                },
                Typed::Str(s) => Some(Typed::Bool(Bool::StrInReasons(s))),
                other => {
                    self.error(
                        a,
                        format!("risk.reasons holds strings, not {}", kind(&other)),
                    );
                    None
                }
            },
            Typed::List(elements) => match item {
                Typed::Int(x) => {
                    let mut values = Vec::new();
                    for el in &elements {
                        match &el.expr {
                            Expr::Literal(LiteralValue::Int(i)) => values.push(**i),
                            _ => self
                                .error(el, "a list compared with an int holds int literals".into()),
                        }
                    }
                    Some(Typed::Bool(Bool::IntIn(x, values)))
                }
                Typed::Str(x) => {
                    let mut values = Vec::new();
                    for el in &elements {
                        match &el.expr {
                            Expr::Literal(LiteralValue::String(s)) => {
                                let v = Str::Const(s.to_string());
                                self.check_value(el, &x, &v);
                                values.push(s.to_string());
                            }
                            _ => self.error(
                                el,
                                "a list compared with a string holds string literals".into(),
                            ),
                        }
                    }
                    if let Str::Fact(f) = &x
                        && let Some(b) = variant(*f, &values, false)
                    {
                        return Some(Typed::Bool(b));
                    }
                    Some(Typed::Bool(Bool::StrIn(x, values)))
                }
                other => {
                    self.error(e, format!("`in` a list of {}: not supported", kind(&other)));
                    None
                }
            },
            other => {
                self.error(b, format!("`in` needs a list, found {}", kind(&other)));
                None
            }
        }
    }

    fn index(&mut self, e: &IdedExpr, target: &IdedExpr, key: &IdedExpr) -> Option<Typed> {
        if Self::dotted(target).as_deref() != Some(facts::HEADERS) {
            self.error(e, "only request.headers can be indexed".into());
            return None;
        }
        let Expr::Literal(LiteralValue::String(name)) = &key.expr else {
            self.error(key, "a header is named by a string literal".into());
            return None;
        };
        let lower = name.to_ascii_lowercase();
        match HeaderName::from_bytes(lower.as_bytes()) {
            Ok(h) => {
                self.reads.facts = true;
                Some(Typed::Str(Str::Header(h)))
            }
            Err(_) => {
                self.error(key, format!("{name:?} is not a header name"));
                None
            }
        }
    }

    fn size(&mut self, e: &IdedExpr, a: &IdedExpr) -> Option<Typed> {
        match self.expr(a)? {
            Typed::Str(s) => Some(Typed::Int(Int::Size(Box::new(s)))),
            Typed::Reasons => Some(Typed::Int(Int::ReasonCount)),
            other => {
                self.error(e, format!("size() of {}: not supported", kind(&other)));
                None
            }
        }
    }

    fn method(
        &mut self,
        e: &IdedExpr,
        f: &str,
        target: &IdedExpr,
        args: &[IdedExpr],
    ) -> Option<Typed> {
        match (f, args) {
            ("size", []) => self.size(e, target),
            ("startsWith" | "endsWith" | "contains", [arg]) => {
                let (s, a) = (self.string(target), self.string(arg));
                let (s, a) = (s?, a?);
                Some(Typed::Bool(match f {
                    "startsWith" => Bool::StartsWith(s, a),
                    "endsWith" => Bool::EndsWith(s, a),
                    _ => Bool::Contains(s, a),
                }))
            }
            ("matches", [arg]) => {
                let s = self.string(target)?;
                let Expr::Literal(LiteralValue::String(pattern)) = &arg.expr else {
                    self.error(arg, "matches() takes a string literal pattern".into());
                    return None;
                };
                match regex::RegexBuilder::new(pattern)
                    .size_limit(1 << 20)
                    .build()
                {
                    Ok(re) => Some(Typed::Bool(Bool::Matches(s, Box::new(re)))),
                    Err(err) => {
                        self.error(arg, format!("invalid pattern: {err}"));
                        None
                    }
                }
            }
            _ => {
                self.error(
                    e,
                    format!("unknown method `{f}` with {} argument(s)", args.len()),
                );
                None
            }
        }
    }
}

/// `fact` compared with `literals` as an index into its values, when it is
/// an enumerated fact and every literal is one of them (otherwise the
/// compile has reported the literal, or the fact takes any string).
fn variant(fact: Fact, literals: &[String], negate: bool) -> Option<Bool> {
    let values = facts::FACTS.iter().find(|d| d.fact == fact)?.values;
    if values.is_empty() || values.len() > 32 {
        return None;
    }
    let mut mask = 0u32;
    for l in literals {
        let i = values.iter().position(|v| v == l)?;
        mask |= 1 << i;
    }
    Some(Bool::Variant {
        fact,
        values,
        mask,
        negate,
    })
}
