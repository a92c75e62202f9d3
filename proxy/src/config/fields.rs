//! A small reader over a parsed TOML table that records every problem it
//! meets instead of stopping at the first, and names each by its dotted key.
//!
//! serde alone stops at the first error of a struct; operators fixing a file
//! want every error at once (STYLE.md 7), so each field is deserialised on
//! its own and the unknown keys of each table are reported after reading it.

use serde::de::DeserializeOwned;
use toml::{Table, Value};

/// One problem in a config file: the dotted key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the key, e.g. `routes[0].upstream`; empty for the file itself.
    pub key: String,
    /// What is wrong, and what was expected.
    pub message: String,
}

/// Collects problems while a config is read.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<Problem>);

/// A table being read: remembers which keys were asked for.
pub(crate) struct Fields<'a> {
    path: String,
    table: &'a Table,
    known: Vec<&'static str>,
}

// === impl Problems ===

impl Problems {
    pub(crate) fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    pub(crate) fn into_vec(self) -> Vec<Problem> {
        self.0
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

// === impl Fields ===

impl<'a> Fields<'a> {
    pub(crate) fn root(table: &'a Table) -> Self {
        Self {
            path: String::new(),
            table,
            known: Vec::new(),
        }
    }

    /// The dotted path of `key` in this table.
    pub(crate) fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Whether the table has `key` at all.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    /// An optional value; a value of the wrong type is a problem and `None`.
    pub(crate) fn opt<T: DeserializeOwned>(
        &mut self,
        p: &mut Problems,
        key: &'static str,
    ) -> Option<T> {
        self.known.push(key);
        let value = self.table.get(key)?;
        match T::deserialize(value.clone()) {
            Ok(v) => Some(v),
            Err(e) => {
                p.push(self.key(key), clean(&e.to_string()));
                None
            }
        }
    }

    /// An optional value with a default.
    pub(crate) fn or<T: DeserializeOwned>(
        &mut self,
        p: &mut Problems,
        key: &'static str,
        default: T,
    ) -> T {
        self.opt(p, key).unwrap_or(default)
    }

    /// A value that must be present.
    pub(crate) fn req<T: DeserializeOwned>(
        &mut self,
        p: &mut Problems,
        key: &'static str,
        what: &str,
    ) -> Option<T> {
        if !self.table.contains_key(key) {
            self.known.push(key);
            p.push(self.key(key), format!("missing; expected {what}"));
            return None;
        }
        self.opt(p, key)
    }

    /// A sub-table, or an empty one when absent.
    pub(crate) fn table(&mut self, p: &mut Problems, key: &'static str) -> Fields<'a> {
        self.known.push(key);
        let path = self.key(key);
        match self.table.get(key) {
            Some(Value::Table(t)) => Fields {
                path,
                table: t,
                known: Vec::new(),
            },
            Some(other) => {
                p.push(
                    path.clone(),
                    format!("expected a table, found {}", other.type_str()),
                );
                Fields::empty(path)
            }
            None => Fields::empty(path),
        }
    }

    /// An array of tables (`[[key]]`), empty when absent.
    pub(crate) fn tables(&mut self, p: &mut Problems, key: &'static str) -> Vec<Fields<'a>> {
        self.known.push(key);
        let path = self.key(key);
        match self.table.get(key) {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| match item {
                    Value::Table(t) => Some(Fields {
                        path: format!("{path}[{i}]"),
                        table: t,
                        known: Vec::new(),
                    }),
                    other => {
                        p.push(
                            format!("{path}[{i}]"),
                            format!("expected a table, found {}", other.type_str()),
                        );
                        None
                    }
                })
                .collect(),
            Some(other) => {
                p.push(
                    path,
                    format!(
                        "expected an array of tables ([[{key}]]), found {}",
                        other.type_str()
                    ),
                );
                Vec::new()
            }
        }
    }

    /// Reports every key of the table that was not asked for.
    pub(crate) fn finish(self, p: &mut Problems) {
        for key in self.table.keys() {
            if !self.known.contains(&key.as_str()) {
                let mut expected = self.known.clone();
                expected.sort_unstable();
                expected.dedup();
                p.push(
                    self.key(key),
                    format!("unknown key; expected one of: {}", expected.join(", ")),
                );
            }
        }
    }

    fn empty(path: String) -> Fields<'a> {
        static EMPTY: std::sync::OnceLock<Table> = std::sync::OnceLock::new();
        Fields {
            path,
            table: EMPTY.get_or_init(Table::new),
            known: Vec::new(),
        }
    }
}

/// toml's messages for a lone value carry a position that means nothing once
/// the value is cut from its file; keep the first line only.
fn clean(message: &str) -> String {
    message.lines().next().unwrap_or(message).trim().to_owned()
}
