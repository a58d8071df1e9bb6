//! Building `status.conditions` (metav1.Condition shape) and deciding when status really changed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::CommonStatus;

/// The condition every kind reports; it sums up the others.
pub const READY: &str = "Ready";

/// The outcome of one reconciliation, as the `Ready` condition states it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the object is ready.
    pub ready: bool,
    /// PascalCase reason.
    pub reason: String,
    /// Human-readable message; never a secret.
    pub message: String,
}

impl Verdict {
    /// A not-ready verdict.
    pub fn not_ready(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            ready: false,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// The status to write, or `None` when the current one already says the same thing (timestamps
/// aside). `lastTransitionTime` moves only when the condition's status flips.
pub fn next_status(
    current: &CommonStatus,
    generation: Option<i64>,
    verdict: &Verdict,
) -> Option<CommonStatus> {
    let status = if verdict.ready { "True" } else { "False" };
    let existing = current.conditions.iter().find(|c| c.type_ == READY);
    let unchanged = existing.is_some_and(|c| {
        c.status == status
            && c.reason == verdict.reason
            && c.message == verdict.message
            && c.observed_generation == generation
    });
    if unchanged && current.observed_generation == generation {
        return None;
    }
    let last_transition_time = match existing {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(jiff::Timestamp::now()),
    };
    let ready = Condition {
        type_: READY.into(),
        status: status.into(),
        reason: verdict.reason.clone(),
        message: verdict.message.clone(),
        observed_generation: generation,
        last_transition_time,
    };
    let mut conditions: Vec<Condition> = current
        .conditions
        .iter()
        .filter(|c| c.type_ != READY)
        .cloned()
        .collect();
    conditions.push(ready);
    Some(CommonStatus {
        observed_generation: generation,
        conditions,
    })
}

/// Whether `Ready` differs in status or reason between two statuses (worth an Event).
pub fn ready_changed(before: &CommonStatus, after: &CommonStatus) -> bool {
    let ready = |s: &CommonStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == READY)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    ready(before) != ready(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_verdict_writes_nothing_and_flip_moves_transition_time() {
        let verdict = Verdict::not_ready("InvalidSpec", "spec.tenantId: bad");
        let first = next_status(&CommonStatus::default(), Some(1), &verdict).expect("first write");
        assert_eq!(first.conditions.len(), 1);
        assert_eq!(first.conditions[0].status, "False");
        assert!(
            next_status(&first, Some(1), &verdict).is_none(),
            "an identical verdict must not rewrite status"
        );

        let new_generation =
            next_status(&first, Some(2), &verdict).expect("new generation is reported");
        assert_eq!(
            new_generation.conditions[0].last_transition_time,
            first.conditions[0].last_transition_time
        );

        std::thread::sleep(std::time::Duration::from_millis(1100));
        let fixed = next_status(
            &new_generation,
            Some(3),
            &Verdict {
                ready: true,
                reason: "Ready".into(),
                message: "ok".into(),
            },
        )
        .unwrap();
        assert_eq!(fixed.conditions[0].status, "True");
        assert_ne!(
            fixed.conditions[0].last_transition_time,
            first.conditions[0].last_transition_time
        );
        assert!(ready_changed(&new_generation, &fixed));
    }
}
