//! Thresholds a run must meet: `--slo 'p99<2ms,detect>=0.99,disturbed<=0.01'`.
//!
//! A list of `METRIC OP VALUE`, comma-separated. Metrics:
//!
//! | metric | meaning | value |
//! | --- | --- | --- |
//! | `p50`, `p90`, `p99`, `p999`, `max`, `mean` | latency | a duration: `250us`, `2ms`, `1.5s` (a bare number is µs) |
//! | `rps` | completed requests per second | a number |
//! | `errors` | errors / requests | a fraction `0.001` or `0.1%` |
//! | `detect` | attack sessions caught / attack sessions | a fraction |
//! | `disturbed` | legit sessions refused at least once / legit sessions | a fraction |
//! | `blocked` | legit sessions blocked / legit sessions | a fraction |
//! | `cpu` | target process CPU µs per request (needs the target's pid) | µs |
//!
//! Operators: `<`, `<=`, `>`, `>=`. A metric the run cannot measure (no
//! attack sessions for `detect`, no pid for `cpu`) fails the threshold: a
//! gate that cannot be checked does not pass.

use serde::Serialize;

use crate::report::Report;

/// One threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Threshold {
    /// Metric name.
    pub metric: Metric,
    /// Comparison.
    pub op: Op,
    /// Bound, in the metric's unit (µs for latency and cpu).
    pub value: f64,
    /// As written.
    pub text: String,
}

/// What a threshold bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs, reason = "named as in the table above")]
pub enum Metric {
    P50,
    P90,
    P99,
    P999,
    Max,
    Mean,
    Rps,
    Errors,
    Detect,
    Disturbed,
    Blocked,
    Cpu,
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// Why an `--slo` does not parse: every bad item, with what was expected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("--slo: {}", .0.join("; "))]
pub struct SloError(pub Vec<String>);

/// The outcome of one threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// Target checked.
    pub target: String,
    /// The threshold as written.
    pub threshold: String,
    /// Measured value (metric's unit), when measurable.
    pub measured: Option<f64>,
    /// Whether it holds.
    pub pass: bool,
}

/// Parses an `--slo` list. Every bad item is reported at once.
pub fn parse(spec: &str) -> Result<Vec<Threshold>, SloError> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for item in spec.split(',').map(str::trim) {
        if item.is_empty() {
            problems.push("empty item (two commas, or a trailing comma?)".to_owned());
            continue;
        }
        match parse_one(item) {
            Ok(t) => out.push(t),
            Err(p) => problems.push(format!("{item:?}: {p}")),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(SloError(problems))
    }
}

fn parse_one(item: &str) -> Result<Threshold, String> {
    let at = item
        .find(['<', '>', '='])
        .ok_or("expected METRIC OP VALUE with OP one of <, <=, >, >=")?;
    let (name, rest) = item.split_at(at);
    let (op, value) = if let Some(v) = rest.strip_prefix("<=") {
        (Op::Le, v)
    } else if let Some(v) = rest.strip_prefix(">=") {
        (Op::Ge, v)
    } else if let Some(v) = rest.strip_prefix('<') {
        (Op::Lt, v)
    } else if let Some(v) = rest.strip_prefix('>') {
        (Op::Gt, v)
    } else {
        return Err("expected OP one of <, <=, >, >= (not = or ==)".into());
    };
    let metric = match name.trim() {
        "p50" => Metric::P50,
        "p90" => Metric::P90,
        "p99" => Metric::P99,
        "p999" | "p99.9" => Metric::P999,
        "max" => Metric::Max,
        "mean" => Metric::Mean,
        "rps" => Metric::Rps,
        "errors" => Metric::Errors,
        "detect" => Metric::Detect,
        "disturbed" => Metric::Disturbed,
        "blocked" => Metric::Blocked,
        "cpu" => Metric::Cpu,
        other => {
            return Err(format!(
                "unknown metric {other:?}; expected p50, p90, p99, p999, max, mean, rps, errors, detect, disturbed, blocked or cpu"
            ));
        }
    };
    let value = value.trim();
    let number = |s: &str| {
        s.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| format!("{value:?} is not a non-negative number"))
    };
    let value = match metric {
        Metric::P50 | Metric::P90 | Metric::P99 | Metric::P999 | Metric::Max | Metric::Mean => {
            duration_us(value)?
        }
        Metric::Errors | Metric::Detect | Metric::Disturbed | Metric::Blocked => {
            let v = match value.strip_suffix('%') {
                Some(p) => number(p)? / 100.0,
                None => number(value)?,
            };
            if v > 1.0 {
                return Err(format!(
                    "{value:?} is a fraction above 1 (write 0.99 or 99%)"
                ));
            }
            v
        }
        Metric::Rps | Metric::Cpu => number(value)?,
    };
    Ok(Threshold {
        metric,
        op,
        value,
        text: item.to_owned(),
    })
}

/// A duration in µs: `250us` (or `µs`), `2ms`, `1.5s`, or bare µs.
fn duration_us(s: &str) -> Result<f64, String> {
    let (num, scale) = if let Some(n) = s.strip_suffix("us").or_else(|| s.strip_suffix("µs")) {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else {
        (s, 1.0)
    };
    num.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| v * scale)
        .ok_or_else(|| format!("{s:?} is not a duration (250us, 2ms, 1.5s)"))
}

// === impl Threshold ===

impl Threshold {
    /// Checks the threshold against a report.
    pub fn check(&self, report: &Report) -> Check {
        let l = &report.latency;
        let measured = match self.metric {
            Metric::P50 => Some(l.p50 as f64),
            Metric::P90 => Some(l.p90 as f64),
            Metric::P99 => Some(l.p99 as f64),
            Metric::P999 => Some(l.p999 as f64),
            Metric::Max => Some(l.max as f64),
            Metric::Mean => Some(l.mean),
            Metric::Rps => Some(report.throughput),
            Metric::Errors => Some(report.error_rate),
            Metric::Detect => report.detect,
            Metric::Disturbed => report.disturbed,
            Metric::Blocked => report.legit_blocked,
            Metric::Cpu => report.cpu_us_per_request,
        };
        let pass = measured.is_some_and(|m| match self.op {
            Op::Lt => m < self.value,
            Op::Le => m <= self.value,
            Op::Gt => m > self.value,
            Op::Ge => m >= self.value,
        });
        Check {
            target: report.target.clone(),
            threshold: self.text.clone(),
            measured,
            pass,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test")]
    use super::*;

    #[test]
    fn the_issues_example_parses() {
        let t = parse("p99<2ms,detect>=0.99,disturbed<=0.01").unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(
            (t[0].metric, t[0].op, t[0].value),
            (Metric::P99, Op::Lt, 2000.0)
        );
        assert_eq!(
            (t[1].metric, t[1].op, t[1].value),
            (Metric::Detect, Op::Ge, 0.99)
        );
        assert_eq!(
            (t[2].metric, t[2].op, t[2].value),
            (Metric::Disturbed, Op::Le, 0.01)
        );
    }

    #[test]
    fn units_and_percentages() {
        let t = parse("p50 < 250us, max<1.5s, errors<0.1%, rps>=10000, p999<=900").unwrap();
        let v: Vec<f64> = t.iter().map(|t| t.value).collect();
        assert_eq!(v, [250.0, 1_500_000.0, 0.001, 10_000.0, 900.0]);
    }

    #[test]
    fn every_bad_item_is_named_with_what_was_expected() {
        let e = parse("p99<2 ms,latency<2ms,detect=0.99,disturbed<=2,,p50>fast").unwrap_err();
        let m = e.to_string();
        assert_eq!(e.0.len(), 5, "{m}");
        assert!(
            m.contains("\"latency<2ms\": unknown metric \"latency\""),
            "{m}"
        );
        assert!(
            m.contains("\"detect=0.99\": expected OP one of <, <=, >, >="),
            "{m}"
        );
        assert!(
            m.contains("\"disturbed<=2\": \"2\" is a fraction above 1"),
            "{m}"
        );
        assert!(m.contains("empty item"), "{m}");
        assert!(
            m.contains("\"p50>fast\": \"fast\" is not a duration"),
            "{m}"
        );
        // "2 ms" parses: spaces around the number are allowed.
        assert!(!m.contains("p99<2 ms"), "{m}");
        assert!(
            parse("detect")
                .unwrap_err()
                .to_string()
                .contains("expected METRIC OP VALUE")
        );
        assert!(
            parse("p99<-1ms")
                .unwrap_err()
                .to_string()
                .contains("not a duration")
        );
        assert!(
            parse("rps>NaN")
                .unwrap_err()
                .to_string()
                .contains("not a non-negative number")
        );
    }
}
