//! Evaluation of compiled conditions over a [`FactSource`]. Total: every
//! condition is true or false; nothing here allocates but a header sent
//! on several lines (joined, as HTTP reads it).

use std::cell::{Cell, OnceCell};

use crate::compile::{Bool, Cmp, Int, Str};
use crate::facts::{self, Fact, FactSource, Text};

/// The facts of one evaluation, with what is worth computing once: the
/// reason mask, the local time, which of its values each enumerated fact
/// holds (found once by comparing strings, then compared as an index by
/// every rule that reads it), and the first headers read (looked up and
/// checked as UTF-8 once, however many rules read them). `'r`: the rules
/// evaluated; `'s`: the facts.
pub(crate) struct Env<'r, 's, S> {
    source: &'s S,
    headers: [OnceCell<(&'r http::HeaderName, Text<'s>)>; HEADER_SLOTS],
    reasons: OnceCell<u32>,
    hour: OnceCell<i64>,
    weekday: OnceCell<i64>,
    /// Bit `f as usize`: `variants[f as usize]` holds fact `f`'s index.
    known: Cell<u64>,
    variants: [Cell<u8>; 64],
}

/// The index of a value an enumerated fact does not list (a fact map can
/// hold anything): in no mask.
const NO_VARIANT: u8 = u8::MAX;

/// Distinct headers remembered per evaluation; more are read each time.
const HEADER_SLOTS: usize = 4;

impl<'r, 's, S: FactSource> Env<'r, 's, S> {
    pub(crate) fn new(source: &'s S) -> Self {
        Self {
            source,
            headers: [const { OnceCell::new() }; HEADER_SLOTS],
            reasons: OnceCell::new(),
            hour: OnceCell::new(),
            weekday: OnceCell::new(),
            known: Cell::new(0),
            variants: [const { Cell::new(0) }; 64],
        }
    }

    /// Which of `values` the enumerated fact `fact` holds.
    fn variant(&self, fact: Fact, values: &[&str]) -> u8 {
        let slot = fact as usize;
        let bit = 1u64.checked_shl(u32::try_from(slot).unwrap_or(u32::MAX));
        if let (Some(bit), Some(cell)) = (bit, self.variants.get(slot))
            && self.known.get() & bit != 0
        {
            return cell.get();
        }
        let text = self.source.text(fact);
        let index = values
            .iter()
            .position(|v| *v == text.as_str())
            .and_then(|i| u8::try_from(i).ok())
            .unwrap_or(NO_VARIANT);
        if let (Some(bit), Some(cell)) = (bit, self.variants.get(slot)) {
            cell.set(index);
            self.known.set(self.known.get() | bit);
        }
        index
    }

    fn reasons(&self) -> u32 {
        *self.reasons.get_or_init(|| self.source.reasons())
    }

    pub(crate) fn truth(&self, b: &'r Bool) -> bool {
        match b {
            Bool::Const(v) => *v,
            Bool::Fact(f) => self.source.boolean(*f),
            Bool::Not(a) => !self.truth(a),
            Bool::And(a, b) => self.truth(a) && self.truth(b),
            Bool::Or(a, b) => self.truth(a) || self.truth(b),
            Bool::If(c, a, b) => {
                if self.truth(c) {
                    self.truth(a)
                } else {
                    self.truth(b)
                }
            }
            Bool::Same(negate, a, b) => (self.truth(a) == self.truth(b)) != *negate,
            Bool::Int(cmp, a, b) => compare(*cmp, self.int(a).cmp(&self.int(b))),
            // Equality compares lengths first: most strings that differ
            // never reach a byte compare.
            Bool::Str(Cmp::Eq, a, b) => self.text(a).as_str() == self.text(b).as_str(),
            Bool::Str(Cmp::Ne, a, b) => self.text(a).as_str() != self.text(b).as_str(),
            Bool::Str(cmp, a, b) => compare(*cmp, self.text(a).as_str().cmp(self.text(b).as_str())),
            Bool::Variant {
                fact,
                values,
                mask,
                negate,
            } => {
                let i = self.variant(*fact, values);
                let hit = u32::from(i) < 32 && mask & (1 << i) != 0;
                hit != *negate
            }
            Bool::IntIn(a, list) => list.contains(&self.int(a)),
            Bool::StrIn(a, list) => {
                let a = self.text(a);
                list.iter().any(|v| v == a.as_str())
            }
            Bool::Reasons(bits) => self.reasons() & bits != 0,
            Bool::StrInReasons(a) => facts::reason_bit(self.text(a).as_str())
                .is_some_and(|bit| self.reasons() & bit != 0),
            Bool::StartsWith(s, p) => self.text(s).as_str().starts_with(self.text(p).as_str()),
            Bool::EndsWith(s, p) => self.text(s).as_str().ends_with(self.text(p).as_str()),
            Bool::Contains(s, p) => self.text(s).as_str().contains(self.text(p).as_str()),
            Bool::Matches(s, re) => re.is_match(self.text(s).as_str()),
        }
    }

    fn int(&self, i: &'r Int) -> i64 {
        match i {
            Int::Const(v) => *v,
            Int::Fact(Fact::TimeHour) => *self
                .hour
                .get_or_init(|| self.source.integer(Fact::TimeHour)),
            Int::Fact(Fact::TimeWeekday) => *self
                .weekday
                .get_or_init(|| self.source.integer(Fact::TimeWeekday)),
            Int::Fact(f) => self.source.integer(*f),
            Int::Size(s) => {
                i64::try_from(self.text(s).as_str().chars().count()).unwrap_or(i64::MAX)
            }
            Int::ReasonCount => i64::from(self.reasons().count_ones()),
        }
    }

    fn text<'t>(&'t self, s: &'r Str) -> Text<'t> {
        match s {
            Str::Const(v) => Text::Str(std::borrow::Cow::Borrowed(v)),
            Str::Fact(f) => self.source.text(*f),
            Str::Header(h) => self.header(h),
        }
    }

    fn header<'t>(&'t self, name: &'r http::HeaderName) -> Text<'t> {
        for slot in &self.headers {
            let (held, text) = match slot.get() {
                Some(entry) => entry,
                None => slot.get_or_init(|| (name, self.source.header(name))),
            };
            if *held == name {
                return Text::Str(std::borrow::Cow::Borrowed(text.as_str()));
            }
        }
        self.source.header(name)
    }
}

fn compare(cmp: Cmp, order: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::{Equal, Greater, Less};
    match cmp {
        Cmp::Eq => order == Equal,
        Cmp::Ne => order != Equal,
        Cmp::Lt => order == Less,
        Cmp::Le => order != Greater,
        Cmp::Gt => order == Greater,
        Cmp::Ge => order != Less,
    }
}
