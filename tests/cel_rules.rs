//! Evaluates every CEL rule of the generated CRDs against the samples with a CEL interpreter (the local
//! 1.20 API server cannot) and requires the same verdict as the Rust validation.

mod support;

use aml_identity_operator::crd;
use cel::{Context, Program, Value};
use support::samples::{self, Expect, Sample};

/// A rule that was evaluated: where it sits and whether it held.
struct Outcome {
    path: String,
    rule: String,
    held: bool,
}

/// Walks the schema and the object together, evaluating every `x-kubernetes-validations` rule on the
/// value it sits on, as the API server does.
fn evaluate(
    schema: &serde_json::Value,
    value: &serde_json::Value,
    path: &str,
    out: &mut Vec<Outcome>,
) {
    if value.is_null() {
        return;
    }
    if let Some(rules) = schema
        .get("x-kubernetes-validations")
        .and_then(|r| r.as_array())
    {
        for entry in rules {
            let rule = entry["rule"].as_str().expect("rule text");
            let program = Program::compile(rule)
                .unwrap_or_else(|e| panic!("rule {rule:?} does not compile: {e:?}"));
            let mut context = Context::default();
            context.add_variable_from_value(
                "self",
                cel::to_value(value).expect("JSON converts to CEL"),
            );
            let held = match program.execute(&context) {
                Ok(Value::Bool(b)) => b,
                other => panic!("rule {rule:?} at {path} gave {other:?}, not a bool"),
            };
            out.push(Outcome {
                path: path.to_owned(),
                rule: rule.to_owned(),
                held,
            });
        }
    }
    if let (Some(props), Some(obj)) = (
        schema.get("properties").and_then(|p| p.as_object()),
        value.as_object(),
    ) {
        for (name, sub) in props {
            if let Some(v) = obj.get(name) {
                evaluate(sub, v, &format!("{path}.{name}"), out);
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            evaluate(items, v, &format!("{path}[{i}]"), out);
        }
    }
}

fn outcomes(sample: &Sample) -> Vec<Outcome> {
    let crd = crd::all()
        .into_iter()
        .find(|c| c.spec.names.kind == sample.kind())
        .unwrap_or_else(|| panic!("no CRD for {}", sample.kind()));
    let schema = serde_json::to_value(
        &crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema,
    )
    .unwrap();
    let mut out = Vec::new();
    evaluate(&schema, &sample.object, "", &mut out);
    out
}

#[test]
fn cel_and_rust_agree_on_every_sample() {
    let mut evaluated = 0;
    for s in samples::valid().into_iter().chain(samples::invalid()) {
        if s.expect == Expect::Schema {
            continue; // refused by patterns/enums before CEL; tests/samples.rs covers them
        }
        let outcomes = outcomes(&s);
        evaluated += outcomes.len();
        let failed: Vec<_> = outcomes.iter().filter(|o| !o.held).collect();
        let rust = samples::rust_validate(&s.object).unwrap();
        match s.expect {
            Expect::Valid => {
                assert!(
                    failed.is_empty(),
                    "{}: CEL refuses a valid sample: {:?}",
                    s.file_name(),
                    failed
                        .iter()
                        .map(|o| (&o.path, &o.rule))
                        .collect::<Vec<_>>()
                );
                assert!(
                    rust.is_empty(),
                    "{}: Rust refuses a valid sample: {rust:?}",
                    s.file_name()
                );
            }
            Expect::Operator => assert!(
                !rust.is_empty(),
                "{}: meant for the operator to refuse, but Rust accepts it",
                s.file_name()
            ),
            _ => {
                assert!(
                    !failed.is_empty(),
                    "{}: no CEL rule refuses it, but Rust says {rust:?}",
                    s.file_name()
                );
                assert!(
                    !rust.is_empty(),
                    "{}: CEL refuses it ({}), Rust accepts it",
                    s.file_name(),
                    failed[0].rule
                );
            }
        }
    }
    assert!(
        evaluated > 30,
        "only {evaluated} rule evaluations: the walk missed the rules"
    );
}

#[test]
fn every_cel_rule_is_exercised_by_an_invalid_sample() {
    let mut all_rules: Vec<String> = Vec::new();
    for c in crd::all() {
        let schema = serde_json::to_value(
            &c.spec.versions[0]
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema,
        )
        .unwrap();
        collect_rules(&schema, &mut all_rules);
    }
    let mut refused: Vec<String> = Vec::new();
    for s in samples::invalid()
        .into_iter()
        .filter(|s| s.expect == Expect::Cel)
    {
        refused.extend(outcomes(&s).into_iter().filter(|o| !o.held).map(|o| o.rule));
    }
    let missing: Vec<_> = all_rules.iter().filter(|r| !refused.contains(r)).collect();
    assert!(
        missing.is_empty(),
        "rules no invalid sample breaks: {missing:#?}"
    );
}

fn collect_rules(schema: &serde_json::Value, out: &mut Vec<String>) {
    match schema {
        serde_json::Value::Object(map) => {
            if let Some(rules) = map
                .get("x-kubernetes-validations")
                .and_then(|r| r.as_array())
            {
                out.extend(rules.iter().map(|r| r["rule"].as_str().unwrap().to_owned()));
            }
            map.iter()
                .filter(|(k, _)| *k != "x-kubernetes-validations")
                .for_each(|(_, v)| collect_rules(v, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_rules(v, out)),
        _ => {}
    }
}

/// Every leaf of a JSON document as (path, value), for comparing documents field by field.
fn leaves(value: &serde_json::Value, path: String, out: &mut Vec<(String, serde_json::Value)>) {
    match value {
        serde_json::Value::Object(m) => m
            .iter()
            .for_each(|(k, v)| leaves(v, format!("{path}/{k}"), out)),
        serde_json::Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| leaves(v, format!("{path}/{i}"), out)),
        leaf => out.push((path, leaf.clone())),
    }
}

#[test]
fn strip_cel_removes_the_rules_and_nothing_else() {
    for c in crd::all() {
        let (mut before, mut after) = (Vec::new(), Vec::new());
        leaves(
            &serde_json::to_value(&c).unwrap(),
            String::new(),
            &mut before,
        );
        leaves(&crd::strip_cel(&c), String::new(), &mut after);
        let (rules, kept): (Vec<_>, Vec<_>) = before
            .into_iter()
            .partition(|(p, _)| p.contains("/x-kubernetes-validations/"));
        assert!(
            !rules.is_empty(),
            "{:?} has no CEL rules to strip",
            c.metadata.name
        );
        assert_eq!(
            kept, after,
            "strip_cel changed more than x-kubernetes-validations"
        );
    }
}
