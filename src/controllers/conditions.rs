//! What a reconciliation concluded ([`Outcome`]), and turning it into `status`: metav1-style
//! conditions whose `lastTransitionTime` moves only when their status flips, plus kind-specific
//! fields — written only when something really changed.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub use crate::api::conditions::{ConditionType, Reason};
use serde_json::{Map, Value};

/// The condition every kind reports; it sums up the others.
pub const READY: ConditionType = ConditionType::Ready;

/// One condition as a reconciliation decides it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    /// Condition type.
    pub type_: ConditionType,
    /// `True` or `False`.
    pub ok: bool,
    /// Why it has its status.
    pub reason: Reason,
    /// Human-readable message; never a secret.
    pub message: String,
}

/// The result of one reconciliation: conditions (`Ready` last), status fields, when to look again,
/// and Events worth recording beyond `Ready` transitions.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Conditions in the order they are reported; `Ready` is always among them.
    pub conditions: Vec<Cond>,
    /// Kind-specific status fields (`Value::Null` removes one).
    pub fields: Map<String, Value>,
    /// Reconcile again after this long even if nothing changes.
    pub requeue: Option<Duration>,
    /// A failed attempt is tried again within this, however long the backoff has grown: what the
    /// object keeps valid runs out (half of what is left of it).
    pub retry_within: Option<Duration>,
    /// Normal Events to record (reason, action, note), e.g. `TokenIssued`/`Renew`.
    pub events: Vec<(String, String, String)>,
}

impl Outcome {
    fn with_ready(ok: bool, reason: Reason, message: impl Into<String>) -> Self {
        Self {
            conditions: vec![Cond {
                type_: READY,
                ok,
                reason,
                message: message.into(),
            }],
            ..Default::default()
        }
    }

    /// Ready.
    pub fn ready(reason: Reason, message: impl Into<String>) -> Self {
        Self::with_ready(true, reason, message)
    }

    /// Not ready.
    pub fn not_ready(reason: Reason, message: impl Into<String>) -> Self {
        Self::with_ready(false, reason, message)
    }

    /// Adds a condition before `Ready`.
    pub fn condition(
        mut self,
        type_: ConditionType,
        ok: bool,
        reason: Reason,
        message: impl Into<String>,
    ) -> Self {
        let at = self.conditions.len().saturating_sub(1);
        self.conditions.insert(
            at,
            Cond {
                type_,
                ok,
                reason,
                message: message.into(),
            },
        );
        self
    }

    /// `CredentialResolved=True`: the object's credential signed in for it.
    pub fn signed_in(self) -> Self {
        self.condition(
            ConditionType::CredentialResolved,
            true,
            Reason::Resolved,
            "signed in",
        )
    }

    /// Sets a status field.
    pub fn field(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(name.to_owned(), value.into());
        self
    }

    /// Asks to be reconciled again after `after`.
    pub fn requeue(mut self, after: Duration) -> Self {
        self.requeue = Some(after);
        self
    }

    /// Tries again within `at_most` however long the backoff has grown (see `retry_within`).
    pub fn retry_within(mut self, at_most: Duration) -> Self {
        self.retry_within = Some(at_most);
        self
    }

    /// Records a Normal Event. Events of one reason and action fold into one series that keeps
    /// its first note, so the action tells apart what deserves a note of its own.
    pub fn event(
        mut self,
        reason: impl Into<String>,
        action: impl Into<String>,
        note: impl Into<String>,
    ) -> Self {
        self.events
            .push((reason.into(), action.into(), note.into()));
        self
    }

    /// Records that credentials were written, and why ([`crate::freshness::Renew`]): a first
    /// issue, a renewal, a repair of an edited Secret, a refresh, a spec change.
    pub fn issued(self, why: crate::freshness::Renew, note: impl Into<String>) -> Self {
        self.event(ConditionType::TokenIssued.as_str(), why.action(), note)
    }

    /// Writing credentials failed: `TokenIssued` false, one more failed attempt, and another try
    /// from 30 s on, growing with the object's backoff (a still-valid output stays in place
    /// meanwhile).
    pub fn mint_failed(
        previous_attempts: Option<i64>,
        what: &str,
        reason: Reason,
        error: &str,
    ) -> Outcome {
        // The count comes from status, which someone may have edited: bounded.
        let attempts = previous_attempts.unwrap_or(0).clamp(0, 1_000_000) + 1;
        Outcome::not_ready(reason, format!("{what}: {error}"))
            .condition(ConditionType::TokenIssued, false, reason, error)
            .field("failedAttempts", attempts)
            .field(
                "lastFailureTime",
                crate::renewal::rfc3339(jiff::Timestamp::now().as_second()),
            )
            .requeue(Duration::from_secs(30))
    }

    /// Writing credentials succeeded: the failure count starts over.
    pub fn failures_cleared(self) -> Self {
        self.field("failedAttempts", Value::Null)
            .field("lastFailureTime", Value::Null)
    }

    /// A `Ready` outcome turned into `Ready=False` with `reason` and `message` (everything else
    /// kept), looked at again within a minute; a not-ready outcome is returned as it is.
    pub fn demoted(mut self, reason: Reason, message: impl Into<String>) -> Self {
        if let Some(ready) = self
            .conditions
            .iter_mut()
            .find(|c| c.type_ == READY && c.ok)
        {
            ready.ok = false;
            ready.reason = reason;
            ready.message = message.into();
            let soon = Duration::from_secs(60);
            self.requeue = Some(self.requeue.map_or(soon, |r| r.min(soon)));
        }
        self
    }

    /// `Ready=False RevocationPending` when something the spec no longer asks for could not be
    /// removed from Azure yet (`left` says what and why).
    pub fn pending_revocation(self, left: &[String]) -> Self {
        if left.is_empty() {
            return self;
        }
        self.demoted(
            Reason::RevocationPending,
            format!(
                "removing what the spec no longer asks for: {}",
                left.join("; ")
            ),
        )
    }

    /// The `Ready` condition.
    pub fn ready_condition(&self) -> Option<&Cond> {
        self.conditions.iter().find(|c| c.type_ == READY)
    }
}

/// Longest condition message written: a message quotes inputs and Azure errors, and those can be
/// of any size.
pub const MESSAGE_LIMIT: usize = 1024;

/// `text` cut to at most `max` bytes (at a character boundary), marked with `…` when cut.
pub fn capped(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The conditions to report: every type of the kind (`all`, in order), each keeping its
/// `lastTransitionTime` while its status is unchanged. A type the outcome does not decide (its step
/// was not reached) keeps what it last reported, or is `Unknown` until its step first runs.
pub fn conditions(
    current: &[Condition],
    generation: Option<i64>,
    all: &[ConditionType],
    desired: &[Cond],
) -> Vec<Condition> {
    let decided = desired.iter().map(|d| d.type_);
    let extra: Vec<ConditionType> = decided.filter(|t| !all.contains(t)).collect();
    all.iter()
        .chain(extra.iter())
        .map(|type_| {
            let previous = current.iter().find(|c| c.type_ == type_.as_str());
            let Some(d) = desired.iter().find(|d| d.type_ == *type_) else {
                return previous.cloned().unwrap_or_else(|| Condition {
                    type_: type_.as_str().into(),
                    status: "Unknown".into(),
                    reason: Reason::NotReached.as_str().into(),
                    message: "an earlier step has not succeeded yet".into(),
                    observed_generation: generation,
                    last_transition_time: Time(jiff::Timestamp::now()),
                });
            };
            let status = if d.ok { "True" } else { "False" };
            let last_transition_time = match previous {
                Some(c) if c.status == status => c.last_transition_time.clone(),
                _ => Time(jiff::Timestamp::now()),
            };
            Condition {
                type_: type_.as_str().into(),
                status: status.into(),
                reason: d.reason.as_str().into(),
                message: capped(&d.message, MESSAGE_LIMIT),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// The `status` merge patch for `outcome`, or `None` when the current status already says it all.
pub fn status_patch(
    current: &Value,
    current_conditions: &[Condition],
    generation: Option<i64>,
    all: &[ConditionType],
    outcome: &Outcome,
) -> Option<Value> {
    let mut status = outcome.fields.clone();
    status.insert("observedGeneration".into(), generation.into());
    let conditions = conditions(current_conditions, generation, all, &outcome.conditions);
    status.insert(
        "conditions".into(),
        serde_json::to_value(&conditions).expect("conditions serialize"),
    );
    let unchanged = status
        .iter()
        .all(|(k, v)| says_the_same(current.get(k).unwrap_or(&Value::Null), v));
    (!unchanged).then(|| serde_json::json!({ "status": status }))
}

/// Whether two status values say the same: an absent field, `null` and an empty list or map all
/// say "none", so a field written empty once is not written again for that alone.
fn says_the_same(current: &Value, desired: &Value) -> bool {
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    current == desired || (empty(current) && empty(desired))
}

/// `Ready` of a condition list as (status, reason, message).
pub fn ready_of(conditions: &[Condition]) -> Option<(&str, &str, &str)> {
    conditions
        .iter()
        .find(|c| c.type_ == READY.as_str())
        .map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::{COMPUTE_IDENTITY_CONDITIONS, CREDENTIAL_CONDITIONS};

    fn of(conditions: &[Condition], type_: ConditionType) -> &Condition {
        conditions
            .iter()
            .find(|c| c.type_ == type_.as_str())
            .unwrap_or_else(|| panic!("no {type_} in {conditions:?}"))
    }

    fn written(patch: &Value) -> Vec<Condition> {
        serde_json::from_value(patch["status"]["conditions"].clone()).unwrap()
    }

    #[test]
    fn messages_are_capped_at_a_character_boundary() {
        let long = "é".repeat(5000);
        let outcome = Outcome::not_ready(Reason::InvalidSpec, long.clone());
        let written = conditions(&[], Some(1), CREDENTIAL_CONDITIONS, &outcome.conditions);
        let ready = of(&written, READY);
        assert!(ready.message.len() <= MESSAGE_LIMIT);
        assert!(ready.message.ends_with('…'));
        assert_eq!(capped("short", MESSAGE_LIMIT), "short");
    }

    #[test]
    fn every_condition_of_the_kind_is_present_unknown_until_reached() {
        let outcome = Outcome::not_ready(Reason::InvalidSpec, "spec.identity: bad");
        let written = conditions(
            &[],
            Some(1),
            COMPUTE_IDENTITY_CONDITIONS,
            &outcome.conditions,
        );
        assert_eq!(
            written.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(),
            [
                "CredentialResolved",
                "PermissionsVerified",
                "FederationValid",
                "TokenIssued",
                "Ready"
            ]
        );
        assert_eq!(of(&written, ConditionType::TokenIssued).status, "Unknown");
        assert_eq!(of(&written, READY).status, "False");
    }

    #[test]
    fn a_transient_failure_of_an_earlier_step_keeps_later_conditions_and_their_times() {
        let all = COMPUTE_IDENTITY_CONDITIONS;
        let settled = Outcome::ready(Reason::IdentityReady, "ok")
            .signed_in()
            .condition(
                ConditionType::PermissionsVerified,
                true,
                Reason::Granted,
                "ok",
            )
            .condition(
                ConditionType::FederationValid,
                true,
                Reason::Federated,
                "ok",
            )
            .condition(ConditionType::TokenIssued, true, Reason::Issued, "ok");
        let first = status_patch(&Value::Null, &[], Some(1), all, &settled).unwrap();
        let before = written(&first);
        std::thread::sleep(std::time::Duration::from_millis(1100));

        // Entra ID is down: the sign-in step fails and nothing after it runs.
        let outage = Outcome::not_ready(Reason::TemporarilyUnavailable, "Entra ID answered 503")
            .condition(
                ConditionType::CredentialResolved,
                false,
                Reason::TemporarilyUnavailable,
                "503",
            );
        let second = status_patch(&first["status"], &before, Some(1), all, &outage).unwrap();
        let during = written(&second);
        for later in [
            ConditionType::PermissionsVerified,
            ConditionType::FederationValid,
            ConditionType::TokenIssued,
        ] {
            assert_eq!(of(&during, later), of(&before, later), "{later}");
        }
        assert_ne!(
            of(&during, ConditionType::CredentialResolved).last_transition_time,
            of(&before, ConditionType::CredentialResolved).last_transition_time
        );

        // Back again: the later steps never flipped, so their times are the first ones.
        let third = status_patch(&second["status"], &during, Some(1), all, &settled).unwrap();
        let after = written(&third);
        assert_eq!(
            of(&after, ConditionType::TokenIssued).last_transition_time,
            of(&before, ConditionType::TokenIssued).last_transition_time
        );
    }

    #[test]
    fn same_outcome_writes_nothing_and_a_flip_moves_the_transition_time() {
        let all = CREDENTIAL_CONDITIONS;
        let outcome = Outcome::not_ready(Reason::InvalidSpec, "spec.tenantId: bad");
        let patch = status_patch(&Value::Null, &[], Some(1), all, &outcome).expect("first write");
        let status = patch["status"].clone();
        let conditions = written(&patch);
        assert_eq!(conditions.len(), 2);
        assert!(
            status_patch(&status, &conditions, Some(1), all, &outcome).is_none(),
            "an identical outcome must not rewrite status"
        );

        let next = status_patch(&status, &conditions, Some(2), all, &outcome)
            .expect("a new generation is reported");
        let again = written(&next);
        assert_eq!(
            of(&again, READY).last_transition_time,
            of(&conditions, READY).last_transition_time
        );

        std::thread::sleep(std::time::Duration::from_millis(1100));
        let fixed = Outcome::ready(Reason::Authenticated, "ok")
            .condition(
                ConditionType::CredentialResolved,
                true,
                Reason::Resolved,
                "ok",
            )
            .field("objectId", "x");
        let patch = status_patch(&next["status"], &again, Some(3), all, &fixed).unwrap();
        let flipped = written(&patch);
        assert_eq!(
            flipped.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(),
            ["CredentialResolved", "Ready"]
        );
        assert_ne!(
            of(&flipped, READY).last_transition_time,
            of(&conditions, READY).last_transition_time
        );
        assert_eq!(patch["status"]["objectId"], "x");
    }

    #[test]
    fn an_empty_list_says_what_an_absent_field_says() {
        use serde_json::json;
        assert!(says_the_same(&Value::Null, &json!([])));
        assert!(says_the_same(&json!({}), &Value::Null));
        assert!(says_the_same(&json!([]), &json!({})));
        assert!(!says_the_same(&Value::Null, &json!(["x"])));
        assert!(!says_the_same(&json!([]), &json!(0)));
        assert!(
            !says_the_same(&json!(""), &Value::Null),
            "an empty string is a value"
        );
    }
}
