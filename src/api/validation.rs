//! Rust-side validation: every rule of the CRD schema (patterns, bounds and the CEL rules), so a spec
//! that reached the API server without them (an old server, `--validate=false`) is still refused.

use std::collections::HashMap;
use std::fmt;
use std::sync::{LazyLock, Mutex};

use regex::Regex;

/// One problem in a spec: the field path and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// JSON path of the offending field, e.g. `spec.identity.userAssignedIdentities[0]`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Implemented by every kind: all violations of the spec, in field order.
pub trait Validate {
    /// Every violation; empty when the spec is valid.
    fn validate(&self) -> Vec<Violation>;
}

/// Collects violations while walking a spec.
#[derive(Default)]
pub struct Violations(Vec<Violation>);

impl Violations {
    /// Records a violation at `field`.
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Violation {
            field: field.into(),
            message: message.into(),
        });
    }

    /// Records a violation unless `ok`.
    pub fn check(&mut self, ok: bool, field: impl Into<String>, message: impl Into<String>) {
        if !ok {
            self.push(field, message);
        }
    }

    /// Checks a value against one of the shared patterns.
    pub fn pattern(
        &mut self,
        value: &str,
        pattern: &'static str,
        field: impl Into<String>,
        what: &str,
    ) {
        if !regex_for(pattern).is_match(value) {
            self.push(field, format!("{value:?} is not {what}"));
        }
    }

    /// Checks an optional value against a pattern when present.
    pub fn pattern_opt(
        &mut self,
        value: Option<&str>,
        pattern: &'static str,
        field: impl Into<String>,
        what: &str,
    ) {
        if let Some(v) = value {
            self.pattern(v, pattern, field, what);
        }
    }

    /// The collected violations.
    pub fn into_vec(self) -> Vec<Violation> {
        self.0
    }
}

/// Compiled regexes for the shared pattern constants (a handful, each compiled once).
fn regex_for(pattern: &'static str) -> &'static Regex {
    static CACHE: LazyLock<Mutex<HashMap<&'static str, &'static Regex>>> =
        LazyLock::new(Default::default);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    cache.entry(pattern).or_insert_with(|| {
        Box::leak(Box::new(
            Regex::new(pattern).expect("valid pattern constant"),
        ))
    })
}

/// Parses a Go-style duration (`1h30m`, `90s`, `0.5h`) into seconds.
pub fn parse_duration(text: &str) -> Option<f64> {
    if !regex_for(super::common::DURATION_PATTERN).is_match(text) {
        return None;
    }
    let mut total = 0.0;
    let mut number = String::new();
    for c in text.chars() {
        match c {
            'h' | 'm' | 's' => {
                let value: f64 = number.parse().ok()?;
                total += value
                    * match c {
                        'h' => 3600.0,
                        'm' => 60.0,
                        _ => 1.0,
                    };
                number.clear();
            }
            _ => number.push(c),
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("1h30m"), Some(5400.0));
        assert_eq!(parse_duration("45s"), Some(45.0));
        assert_eq!(parse_duration("0.5h"), Some(1800.0));
        assert_eq!(parse_duration("1d"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("h"), None);
    }
}
