//! When to renew a credential written into a namespace: from its real expiry, `renewBefore` or
//! `renewBeforePercentage` (default: at two thirds of the lifetime), moved earlier by a jitter that
//! is derived from the object, so a restarted operator computes the same time.

/// Renewal settings of an output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Renew this many seconds before expiry.
    pub renew_before: Option<i64>,
    /// Renew when this percentage of the lifetime is left.
    pub renew_before_percentage: Option<i32>,
}

impl Policy {
    /// The policy of a spec's `renewBefore` (a duration, checked by validation) and
    /// `renewBeforePercentage`.
    pub fn from_spec(renew_before: Option<&str>, renew_before_percentage: Option<i32>) -> Policy {
        Policy {
            renew_before: renew_before
                .and_then(crate::api::validation::parse_duration)
                .map(|s| s as i64),
            renew_before_percentage,
        }
    }

    /// What the settings add to an output's fingerprint, so that a changed setting writes the
    /// output again with the renewal time it gives: nothing without settings, so outputs made
    /// before the settings existed hash as they did (an upgrade rewrites nothing).
    pub fn fingerprint_part(&self) -> String {
        if *self == Policy::default() {
            String::new()
        } else {
            format!("|{self:?}")
        }
    }
}

/// The renewal time (Unix seconds) of a credential obtained at `obtained` and expiring at `expires`.
/// `seed` (e.g. the object's uid) spreads renewals of many objects over up to 5% of the lifetime.
pub fn renewal_time(obtained: i64, expires: i64, policy: Policy, seed: &str) -> i64 {
    // Expiries are checked where credentials are obtained; should one be absurd anyway, renew at
    // once rather than panic or overflow.
    if expires <= obtained.saturating_add(1) {
        return obtained;
    }
    let lifetime = expires.saturating_sub(obtained).max(1);
    let before = match (policy.renew_before, policy.renew_before_percentage) {
        (Some(seconds), _) => seconds,
        (None, Some(percent)) => lifetime.saturating_mul(i64::from(percent).clamp(0, 100)) / 100,
        (None, None) => lifetime / 3,
    };
    let spread = lifetime / 20;
    let jitter = if spread > 0 {
        (fnv1a(seed) % spread as u64) as i64
    } else {
        0
    };
    expires
        .saturating_sub(before)
        .saturating_sub(jitter)
        .clamp(obtained + lifetime / 10, expires - 1)
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// RFC 3339 text of Unix seconds.
pub fn rfc3339(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Unix seconds of RFC 3339 text.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    text.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_settings_that_are_there_change_a_fingerprint() {
        assert_eq!(Policy::default().fingerprint_part(), "");
        let before = Policy::from_spec(Some("10m"), None).fingerprint_part();
        let percent = Policy::from_spec(None, Some(10)).fingerprint_part();
        assert!(!before.is_empty() && !percent.is_empty() && before != percent);
        assert_ne!(
            before,
            Policy::from_spec(Some("20m"), None).fingerprint_part()
        );
    }

    #[test]
    fn default_is_two_thirds_with_a_bounded_stable_jitter() {
        let t = renewal_time(0, 3600, Policy::default(), "uid-1");
        assert!((2400 - 180..=2400).contains(&t), "{t}");
        assert_eq!(
            t,
            renewal_time(0, 3600, Policy::default(), "uid-1"),
            "the same object renews at the same time"
        );
        let others: std::collections::BTreeSet<i64> = (0..20)
            .map(|i| renewal_time(0, 3600, Policy::default(), &format!("uid-{i}")))
            .collect();
        assert!(others.len() > 5, "objects spread out");
    }

    #[test]
    fn absurd_expiries_renew_at_once_and_never_panic() {
        let p = Policy::default();
        assert_eq!(renewal_time(100, 50, p, "x"), 100, "already expired");
        assert_eq!(renewal_time(100, 100, p, "x"), 100);
        let far = renewal_time(0, i64::MAX, p, "x");
        assert!(far > 0 && far < i64::MAX);
        let odd = Policy {
            renew_before: Some(i64::MAX),
            renew_before_percentage: Some(i32::MAX),
        };
        let t = renewal_time(0, 3600, odd, "x");
        assert!((360..3600).contains(&t), "{t}");
    }

    #[test]
    fn renew_before_and_percentage_are_honoured() {
        let t = renewal_time(
            0,
            3600,
            Policy {
                renew_before: Some(900),
                renew_before_percentage: None,
            },
            "x",
        );
        assert!((2700 - 180..=2700).contains(&t));
        let t = renewal_time(
            0,
            3600,
            Policy {
                renew_before: None,
                renew_before_percentage: Some(50),
            },
            "x",
        );
        assert!((1800 - 180..=1800).contains(&t));
        assert_eq!(parse_rfc3339(&rfc3339(1_800_000_000)), Some(1_800_000_000));
    }
}
