//! CEL rules (`x-kubernetes-validations`) as data, attached to schemas by schemars transforms.
//!
//! Each rule is the CRD-side twin of a check in the kind's `Validate` impl; `tests/cel_rules.rs`
//! evaluates every rule against the samples and requires the same verdict as the Rust validation.

use schemars::Schema;

/// One `x-kubernetes-validations` entry.
#[derive(Clone, Copy, Debug)]
pub struct CelRule {
    /// The CEL expression, evaluated with `self` bound to the object the rule sits on.
    pub rule: &'static str,
    /// What the API server answers when the rule is false: the field and the fix.
    pub message: &'static str,
}

/// Appends rules to a schema's `x-kubernetes-validations` (schemars flatten keeps an inner struct's
/// rules only while the outer one has none, so outer transforms must append, never replace).
pub fn append(schema: &mut Schema, rules: &[CelRule]) {
    let entries = rules
        .iter()
        .map(|r| serde_json::json!({"rule": r.rule, "message": r.message}));
    match schema
        .get_mut("x-kubernetes-validations")
        .and_then(|v| v.as_array_mut())
    {
        Some(existing) => existing.extend(entries),
        None => {
            schema.insert(
                "x-kubernetes-validations".into(),
                serde_json::Value::Array(entries.collect()),
            );
        }
    }
}

/// Declares a schemars transform function that appends the given rules.
macro_rules! cel_rules {
    ($fn_name:ident, $rules:expr) => {
        fn $fn_name(schema: &mut schemars::Schema) {
            $crate::api::rules::append(schema, $rules);
        }
    };
}
pub(crate) use cel_rules;
