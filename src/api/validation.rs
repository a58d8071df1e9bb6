//! Rust-side validation: every rule of the CRD schema (patterns, bounds and the CEL rules), so a spec
//! that reached the API server without them (an old server, `--validate=false`) is still refused.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{LazyLock, Mutex};

use regex::Regex;

use super::common::AUDIENCE_PATTERN;

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
    /// A pair of renewal settings under `at` (`spec.tokenSecret`, …): not both (`one` otherwise),
    /// `renewBefore` a duration that `bound` accepts in seconds (`bound_message` otherwise), and
    /// `renewBeforePercentage` between 1 and 99.
    pub fn renewal(
        &mut self,
        at: &str,
        renew_before: Option<&str>,
        percentage: Option<i32>,
        one: &str,
        bound: impl Fn(f64) -> bool,
        bound_message: &str,
    ) {
        self.check(renew_before.is_none() || percentage.is_none(), at, one);
        if let Some(rb) = renew_before {
            match parse_duration(rb) {
                None => self.push(
                    format!("{at}.renewBefore"),
                    format!("{rb:?} is not a duration such as 10m or 1h30m"),
                ),
                Some(secs) => self.check(bound(secs), format!("{at}.renewBefore"), bound_message),
            }
        }
        if let Some(p) = percentage {
            self.check(
                (1..=99).contains(&p),
                format!("{at}.renewBeforePercentage"),
                "must be between 1 and 99",
            );
        }
    }

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

    /// Checks a value against one of the shared patterns and its length bound.
    pub fn pattern(
        &mut self,
        value: &str,
        pattern: &'static str,
        field: impl Into<String>,
        what: &str,
    ) {
        if let Some(max) = max_length(pattern)
            && value.chars().count() > max
        {
            self.push(
                field,
                format!(
                    "{} characters is too long for {what} (at most {max})",
                    value.chars().count()
                ),
            );
        } else if !regex_for(pattern).is_match(value) {
            self.push(field, format!("{} is not {what}", shown(value)));
        }
    }

    /// Checks that a list has at most `max` entries.
    pub fn at_most(&mut self, len: usize, max: usize, field: impl Into<String>) {
        self.check(
            len <= max,
            field,
            format!("{len} entries; at most {max} are allowed"),
        );
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

    /// Refuses each entry of `list` that equals an earlier one once `key` normalised both.
    pub fn distinct(&mut self, list: &[String], field: &str, key: impl Fn(&str) -> String) {
        let mut seen = HashSet::new();
        for (i, item) in list.iter().enumerate() {
            if !seen.insert(key(item)) {
                self.push(
                    format!("{field}[{i}]"),
                    format!("{} is already listed; list each once", shown(item)),
                );
            }
        }
    }

    /// Token audiences as a spec lists them: each an https:// or api:// resource, without the
    /// `/.default` of a scope (`not_a_scope` says so), and each once in whatever form it is written.
    pub fn audiences(&mut self, list: &[String], field: &str, not_a_scope: &str) {
        self.distinct(list, field, crate::azure::scope::normalize_audience);
        for (i, audience) in list.iter().enumerate() {
            let at = format!("{field}[{i}]");
            self.pattern(
                audience,
                AUDIENCE_PATTERN,
                &at,
                "an https:// or api:// resource URI",
            );
            self.check(!audience.ends_with("/.default"), &at, not_a_scope);
        }
    }

    /// The collected violations.
    pub fn into_vec(self) -> Vec<Violation> {
        self.0
    }
}

/// A value quoted in a message: at most 100 characters of it, so a huge input never fills a status.
pub fn shown(value: &str) -> String {
    let mut chars = value.chars();
    let head: String = chars.by_ref().take(100).collect();
    if chars.next().is_some() {
        format!("{head:?}…")
    } else {
        format!("{head:?}")
    }
}

/// The longest value each shared pattern admits. The CRDs carry it as `maxLength` (so the API
/// server bounds every string before a rule or a controller reads it) and [`Violations::pattern`]
/// checks it; a pattern without a bound here is a bug the CRD tests catch.
pub fn max_length(pattern: &str) -> Option<usize> {
    PATTERNS
        .iter()
        .find(|(p, _)| *p == pattern)
        .map(|(_, n)| *n)
}

/// Every shared pattern with the longest value it admits.
const PATTERNS: &[(&str, usize)] = {
    use super::*;
    &[
        (GUID_PATTERN, 36),
        (RESOURCE_ID_PATTERN, 1024),
        (STORAGE_ACCOUNT_ID_PATTERN, 512),
        (STORAGE_SCOPE_PATTERN, 640),
        (KEY_VAULT_ID_PATTERN, 512),
        (KEY_VAULT_SCOPE_PATTERN, 640),
        (REGISTRY_ID_PATTERN, 512),
        (APPLICATION_INSIGHTS_ID_PATTERN, 768),
        (USER_ASSIGNED_IDENTITY_PATTERN, 512),
        (SCOPE_PATTERN, 1024),
        (AUDIENCE_PATTERN, 256),
        (RESOURCE_GROUP_PATTERN, 90),
        (K8S_NAME_PATTERN, 253),
        (NAMESPACE_PATTERN, 63),
        (DATA_KEY_PATTERN, 253),
        (DURATION_PATTERN, 32),
        (LOCATION_PATTERN, 64),
        (HTTPS_ENDPOINT_PATTERN, 512),
        (DNS_SUFFIX_PATTERN, 253),
        (LABEL_KEY_PATTERN, 317),
        (LABEL_VALUE_PATTERN, 63),
        (WORKSPACE_NAME_PATTERN, 33),
        (COMPUTE_NAME_PATTERN, 16),
        (DATASTORE_NAME_PATTERN, 255),
        (STORAGE_ACCOUNT_PATTERN, 24),
        (CONTAINER_PATTERN, 63),
        (SAS_PERMISSIONS_PATTERN, 6),
        (LOGIN_SERVER_PATTERN, 253),
        (CONNECTION_NAME_PATTERN, 255),
    ]
};

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
    fn patterns_read_classes_as_the_api_server_does() {
        // Go's `\w` and `\d` are ASCII, Rust's Unicode (and megabytes once repeated).
        for (pattern, _) in PATTERNS {
            assert!(
                !pattern.contains(r"\w") && !pattern.contains(r"\d"),
                "{pattern} uses a Perl class"
            );
        }
        let mut v = Violations::default();
        v.pattern(
            "rg-é",
            super::super::RESOURCE_GROUP_PATTERN,
            "spec.resourceGroup",
            "a group",
        );
        v.pattern(
            "rg-(a)_b.c",
            super::super::RESOURCE_GROUP_PATTERN,
            "spec.x",
            "a group",
        );
        assert_eq!(v.0.len(), 1, "{:?}", v.0);
        assert_eq!(v.0[0].field, "spec.resourceGroup");
    }

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
