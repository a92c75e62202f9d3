//! Rule files: TOML read with positions, every problem collected, then the
//! set-wide checks (unique names, rules no earlier rule leaves reachable).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use toml::de::DeTable;
use vigil_engine::Action;

use crate::compile::{self, CompileError};
use crate::{Rule, RuleAction, RuleError, RuleErrors, RuleMode, RuleSet, Scope};

/// Most rules in a set: every index fits a `u16`, and a set this large is
/// a mistake, not a policy.
pub const MAX_RULES: usize = 1_000;
/// Most distinct tags (a ruling carries them as 64 bits).
const MAX_TAGS: usize = 64;
/// Largest rule file read.
const MAX_FILE_BYTES: u64 = 1 << 20;
/// Most rule files in a directory.
const MAX_FILES: usize = 256;

/// Keys a rule may have.
const KEYS: &[&str] = &[
    "name",
    "description",
    "hosts",
    "path_prefixes",
    "methods",
    "routes",
    "condition",
    "action",
    "mode",
    "acr_values",
    "max_age",
    "tag",
];

/// The `*.toml` files directly in `dir`, by name.
pub(crate) fn read_dir(dir: &Path) -> Result<Vec<(PathBuf, String)>, RuleErrors> {
    let fail = |message: String| {
        RuleErrors(vec![RuleError {
            file: dir.to_owned(),
            rule: None,
            line: 1,
            column: 1,
            message,
        }])
    };
    let entries = fs::read_dir(dir).map_err(|e| fail(format!("cannot read the directory: {e}")))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    paths.sort();
    if paths.len() > MAX_FILES {
        return Err(fail(format!(
            "{} rule files; at most {MAX_FILES}",
            paths.len()
        )));
    }
    let mut files = Vec::with_capacity(paths.len());
    let mut errors = Vec::new();
    for path in paths {
        let read = fs::File::open(&path).and_then(|f| {
            use std::io::Read;
            let mut text = String::new();
            f.take(MAX_FILE_BYTES + 1).read_to_string(&mut text)?;
            Ok(text)
        });
        match read {
            Ok(text) if text.len() as u64 > MAX_FILE_BYTES => errors.push(RuleError {
                file: path,
                rule: None,
                line: 1,
                column: 1,
                message: format!("larger than {MAX_FILE_BYTES} bytes"),
            }),
            Ok(text) => files.push((path, text)),
            Err(e) => errors.push(RuleError {
                file: path,
                rule: None,
                line: 1,
                column: 1,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(RuleErrors(errors))
    }
}

/// 1-based line and column of byte `offset` in `text`.
pub(crate) fn position(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

struct Reader<'t> {
    file: &'t Path,
    text: &'t str,
    errors: Vec<RuleError>,
}

impl Reader<'_> {
    fn error(&mut self, rule: Option<&str>, at: usize, message: String) {
        let (line, column) = position(self.text, at);
        self.errors.push(RuleError {
            file: self.file.to_owned(),
            rule: rule.map(str::to_owned),
            line,
            column,
            message,
        });
    }
}

/// A rule as read, before the set-wide checks.
struct Draft {
    rule: Rule,
    tag: Option<String>,
}

pub(crate) fn parse(files: &[(PathBuf, String)]) -> Result<RuleSet, RuleErrors> {
    let mut errors = Vec::new();
    let mut drafts: Vec<(Draft, usize, usize)> = Vec::new();
    for (index, (path, text)) in files.iter().enumerate() {
        let mut reader = Reader {
            file: path,
            text,
            errors: Vec::new(),
        };
        for (draft, at) in read_file(&mut reader) {
            drafts.push((draft, index, at));
        }
        errors.append(&mut reader.errors);
    }
    if drafts.len() > MAX_RULES {
        errors.push(RuleError {
            file: files.first().map(|f| f.0.clone()).unwrap_or_default(),
            rule: None,
            line: 1,
            column: 1,
            message: format!("{} rules; at most {MAX_RULES}", drafts.len()),
        });
    }
    // Set-wide: unique names, tags, rules that can never decide.
    let mut names: HashMap<String, (PathBuf, usize)> = HashMap::new();
    let mut tags: Vec<String> = Vec::new();
    let mut rules: Vec<Rule> = Vec::with_capacity(drafts.len());
    for (draft, file, at) in drafts {
        let (path, text) = &files[file];
        let rule_name = draft.rule.name.clone();
        let err = |message: String| {
            let (line, column) = position(text, at);
            RuleError {
                file: path.clone(),
                rule: Some(rule_name.clone()),
                line,
                column,
                message,
            }
        };
        if let Some((first, line)) = names.get(&draft.rule.name) {
            errors.push(err(format!(
                "the name is taken by the rule at {}:{line}",
                first.display()
            )));
        } else {
            names.insert(draft.rule.name.clone(), (path.clone(), draft.rule.line));
        }
        let mut rule = draft.rule;
        if let Some(tag) = draft.tag {
            let index = match tags.iter().position(|t| *t == tag) {
                Some(i) => i,
                None => {
                    tags.push(tag);
                    tags.len() - 1
                }
            };
            if index >= MAX_TAGS {
                errors.push(err(format!("more than {MAX_TAGS} distinct tags")));
            }
            rule.action = RuleAction::Tag(u8::try_from(index).unwrap_or(u8::MAX));
        }
        if let Some(earlier) = rules.iter().find(|e| shadows(e, &rule)) {
            errors.push(err(format!(
                "never decides: rule {:?} ({}:{}) covers its scope with {} and decides first",
                earlier.name,
                earlier.file.display(),
                earlier.line,
                if earlier.condition_source.is_none() {
                    "no condition".to_owned()
                } else {
                    "the same condition".to_owned()
                }
            )));
        }
        rules.push(rule);
    }
    errors.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    if errors.is_empty() {
        // Distinct host lists numbered in order of appearance.
        let mut lists: Vec<Vec<String>> = Vec::new();
        for rule in &mut rules {
            let group = match lists.iter().position(|l| *l == rule.scope.hosts) {
                Some(g) => g,
                None => {
                    lists.push(rule.scope.hosts.clone());
                    lists.len() - 1
                }
            };
            rule.host_group = u16::try_from(group).unwrap_or(u16::MAX);
        }
        Ok(RuleSet {
            rules,
            tags,
            zone: jiff::tz::TimeZone::UTC,
        })
    } else {
        Err(RuleErrors(errors))
    }
}

/// Whether `earlier` always decides before `later` could: both enforce a
/// deciding action, `earlier`'s scope covers `later`'s, and `earlier` has
/// no condition or the same one.
fn shadows(earlier: &Rule, later: &Rule) -> bool {
    let decides =
        |r: &Rule| r.mode == RuleMode::Enforce && matches!(r.action, RuleAction::Decide(_));
    decides(earlier)
        && decides(later)
        && earlier.scope.covers(&later.scope)
        && (earlier.condition_source.is_none()
            || format!("{:?}", earlier.condition) == format!("{:?}", later.condition))
}

fn read_file(r: &mut Reader<'_>) -> Vec<(Draft, usize)> {
    let root = match DeTable::parse(r.text) {
        Ok(root) => root,
        Err(e) => {
            let at = e.span().map_or(0, |s| s.start);
            r.error(None, at, format!("not TOML: {}", e.message()));
            return Vec::new();
        }
    };
    let mut drafts = Vec::new();
    for (key, value) in root.get_ref().iter() {
        if key.get_ref().as_ref() != "rule" {
            r.error(
                None,
                key.span().start,
                format!(
                    "unknown key `{}`: a rule file holds [[rule]] tables",
                    key.get_ref()
                ),
            );
            continue;
        }
        let Some(array) = value.get_ref().as_array() else {
            r.error(
                None,
                value.span().start,
                "`rule` must be [[rule]] tables".into(),
            );
            continue;
        };
        for item in array.iter() {
            let Some(table) = item.get_ref().as_table() else {
                r.error(None, item.span().start, "a [[rule]] must be a table".into());
                continue;
            };
            if let Some(d) = read_rule(r, table, item.span().start) {
                drafts.push(d);
            }
        }
    }
    drafts
}

fn read_rule(r: &mut Reader<'_>, table: &DeTable<'_>, at: usize) -> Option<(Draft, usize)> {
    let get = |k: &str| {
        table
            .iter()
            .find(|(key, _)| key.get_ref().as_ref() == k)
            .map(|(_, v)| v)
    };
    let before = r.errors.len();
    let name = match get("name").map(|v| (v.get_ref().as_str(), v.span().start)) {
        Some((Some(n), at)) => {
            if n.is_empty()
                || n.len() > 64
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                r.error(
                    None,
                    at,
                    format!("rule name {n:?}: 1 to 64 of a-z, 0-9, `-`, `_`, `.`"),
                );
            }
            n.to_owned()
        }
        Some((None, at)) => {
            r.error(None, at, "`name` must be a string".into());
            String::new()
        }
        None => {
            r.error(None, at, "a rule needs a `name`".into());
            String::new()
        }
    };
    let rule_name = Some(name.as_str()).filter(|n| !n.is_empty());
    for (key, _) in table.iter() {
        if !KEYS.contains(&key.get_ref().as_ref()) {
            r.error(
                rule_name,
                key.span().start,
                format!(
                    "unknown key `{}` (keys: {})",
                    key.get_ref(),
                    KEYS.join(", ")
                ),
            );
        }
    }
    let string = |r: &mut Reader<'_>, k: &str| -> Option<String> {
        let v = get(k)?;
        match v.get_ref().as_str() {
            Some(s) => Some(s.to_owned()),
            None => {
                r.error(rule_name, v.span().start, format!("`{k}` must be a string"));
                None
            }
        }
    };
    let list = |r: &mut Reader<'_>, k: &str, check: fn(&str) -> Result<String, String>| {
        let mut out = Vec::new();
        let Some(v) = get(k) else { return out };
        let Some(items) = v.get_ref().as_array() else {
            r.error(
                rule_name,
                v.span().start,
                format!("`{k}` must be a list of strings"),
            );
            return out;
        };
        if items.is_empty() {
            r.error(
                rule_name,
                v.span().start,
                format!("`{k}` is empty: it would match nothing; leave it out to match any"),
            );
        }
        for item in items.iter() {
            match item.get_ref().as_str().map(check) {
                Some(Ok(s)) if out.contains(&s) => r.error(
                    rule_name,
                    item.span().start,
                    format!("{s:?} is listed twice"),
                ),
                Some(Ok(s)) => out.push(s),
                Some(Err(e)) => r.error(rule_name, item.span().start, e),
                None => r.error(rule_name, item.span().start, format!("`{k}` holds strings")),
            }
        }
        out
    };
    let scope = Scope {
        hosts: list(r, "hosts", check_host),
        path_prefixes: list(r, "path_prefixes", check_prefix),
        methods: list(r, "methods", check_method),
        routes: list(r, "routes", |s| Ok(s.to_owned())),
    };
    let description = string(r, "description").unwrap_or_default();
    let action_at = get("action").map_or(at, |v| v.span().start);
    let action = match string(r, "action").as_deref() {
        Some("tag") => Some(RuleAction::Tag(0)),
        Some(a) => match a.parse::<Action>() {
            Ok(a) => Some(RuleAction::Decide(a)),
            Err(_) => {
                r.error(
                    rule_name,
                    action_at,
                    format!("unknown action {a:?}: one of allow, step_up, block, revoke, tag"),
                );
                None
            }
        },
        None => {
            if get("action").is_none() {
                r.error(rule_name, at, "a rule needs an `action`".into());
            }
            None
        }
    };
    let mode = match string(r, "mode").as_deref() {
        None | Some("enforce") => RuleMode::Enforce,
        Some("shadow") => RuleMode::Shadow,
        Some(m) => {
            let at = get("mode").map_or(at, |v| v.span().start);
            r.error(
                rule_name,
                at,
                format!("unknown mode {m:?}: enforce or shadow"),
            );
            RuleMode::Enforce
        }
    };
    let step_up = action == Some(RuleAction::Decide(Action::StepUp));
    let acr_values = string(r, "acr_values");
    if let Some(v) = get("acr_values") {
        let value = acr_values.as_deref().unwrap_or_default();
        if !step_up {
            r.error(
                rule_name,
                v.span().start,
                "`acr_values` is for `step_up` rules".into(),
            );
        } else if value.is_empty()
            || value.len() > 256
            || !value
                .bytes()
                .all(|b| (b.is_ascii_graphic() && b != b'"' && b != b'\\') || b == b' ')
        {
            r.error(
                rule_name,
                v.span().start,
                "`acr_values`: 1 to 256 printable ASCII characters but `\"` and `\\`, space-separated".into(),
            );
        }
    }
    let max_age = match get("max_age") {
        None => None,
        Some(v) => match v
            .get_ref()
            .as_integer()
            .and_then(|i| i.as_str().parse::<u32>().ok())
        {
            Some(s) if step_up && s <= 31_536_000 => Some(s),
            Some(_) if !step_up => {
                r.error(
                    rule_name,
                    v.span().start,
                    "`max_age` is for `step_up` rules".into(),
                );
                None
            }
            _ => {
                r.error(
                    rule_name,
                    v.span().start,
                    "`max_age`: seconds, 0 to 31536000".into(),
                );
                None
            }
        },
    };
    let tag = string(r, "tag");
    match (&action, &tag) {
        (Some(RuleAction::Tag(_)), None) => r.error(
            rule_name,
            action_at,
            "a `tag` rule needs a `tag` name".into(),
        ),
        (Some(RuleAction::Decide(_)), Some(_)) | (None, Some(_)) => {
            let at = get("tag").map_or(at, |v| v.span().start);
            r.error(
                rule_name,
                at,
                "`tag` is for rules whose action is `tag`".into(),
            );
        }
        (_, Some(t))
            if t.is_empty()
                || t.len() > 64
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            let at = get("tag").map_or(at, |v| v.span().start);
            r.error(
                rule_name,
                at,
                format!("tag {t:?}: 1 to 64 of a-z, 0-9, `-`, `_`, `.`"),
            );
        }
        _ => {}
    }
    let mut condition = None;
    let condition_source = string(r, "condition");
    if let (Some(source), Some(v)) = (&condition_source, get("condition")) {
        match compile::compile(source) {
            Ok((b, _)) => condition = Some(b),
            Err(errs) => {
                let start = content_start(r.text, v.span().start);
                for e in errs {
                    let at = offset_in_file(r.text, start, source, &e);
                    r.error(rule_name, at, format!("condition: {}", e.message));
                }
            }
        }
    }
    if condition_source.is_none() && scope == Scope::default() {
        r.error(
            rule_name,
            at,
            "a rule needs a `condition` or a scope (hosts, path_prefixes, methods, routes)".into(),
        );
    }
    if r.errors.len() > before {
        return None;
    }
    let (line, _) = position(r.text, at);
    let scoped = scope != Scope::default();
    Some((
        Draft {
            rule: Rule {
                name,
                description,
                scope,
                condition_source,
                action: action?,
                mode,
                acr_values,
                max_age,
                file: r.file.to_owned(),
                line,
                condition,
                host_group: 0,
                scoped,
            },
            tag,
        },
        at,
    ))
}

/// Where the text of a string value starting at `at` begins: after its
/// quote, or after a multi-line string's quotes and the newline that
/// directly follows them.
fn content_start(text: &str, at: usize) -> usize {
    let rest = text.get(at..).unwrap_or_default();
    let quotes = if rest.starts_with("'''") || rest.starts_with("\"\"\"") {
        3
    } else {
        1
    };
    let mut start = at + quotes;
    let after = text.get(start..).unwrap_or_default();
    if quotes == 3 {
        if after.starts_with("\r\n") {
            start += 2;
        } else if after.starts_with('\n') {
            start += 1;
        }
    }
    start
}

/// The byte offset in the file of a compile error in `source`, which was
/// written from `start` on. Exact for literal strings and for basic
/// strings without escapes (an escape shifts what follows it).
fn offset_in_file(text: &str, start: usize, source: &str, e: &CompileError) -> usize {
    let chars = match (e.offset, e.position) {
        // The source info's offsets are bytes already.
        (Some(o), _) => return (start + o.min(source.len())).min(text.len()),
        (None, Some((line, column))) => {
            let mut o = 0;
            for (i, l) in source.split_inclusive('\n').enumerate() {
                if i + 1 == line {
                    o += column.saturating_sub(1);
                    break;
                }
                o += l.chars().count();
            }
            o
        }
        (None, None) => 0,
    };
    let bytes = source
        .char_indices()
        .nth(chars)
        .map_or(source.len(), |(b, _)| b);
    (start + bytes).min(text.len())
}

fn check_host(h: &str) -> Result<String, String> {
    let lower = h.to_ascii_lowercase();
    let name = lower.strip_prefix("*.").unwrap_or(&lower);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(lower)
    } else {
        Err(format!(
            "host {h:?}: a DNS name without port, or `*.` and one (a wildcard matches subdomains only)"
        ))
    }
}

fn check_prefix(p: &str) -> Result<String, String> {
    let normal = p.starts_with('/')
        && !p.contains(['?', '#', '%', '\\', ';'])
        && !p.split('/').skip(1).any(|s| s == "." || s == "..")
        && !p.contains("//");
    if normal {
        Ok(p.to_owned())
    } else {
        Err(format!(
            "path prefix {p:?}: a normalised path (from `/`, no `.`/`..` segments, `//`, `%`, `\\`, `;`, query): rules match normalised paths, so this would never match"
        ))
    }
}

fn check_method(m: &str) -> Result<String, String> {
    if !m.is_empty() && m.len() <= 16 && m.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(m.to_owned())
    } else {
        Err(format!("method {m:?}: upper case, as sent (GET, POST, …)"))
    }
}
