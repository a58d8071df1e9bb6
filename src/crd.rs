//! The CustomResourceDefinitions of every kind, as `crdgen` prints them and `crds/` holds them.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::api::validation::max_length;
use crate::api::*;

/// Every CRD, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    [
        AzureCredential::crd(),
        ClusterAzureCredential::crd(),
        Workspace::crd(),
        ComputeIdentity::crd(),
        Datastore::crd(),
        RegistryConnection::crd(),
    ]
    .into_iter()
    .map(with_length_bounds)
    .collect()
}

/// Gives every patterned string its `maxLength` from [`max_length`], so the bound sits beside the
/// pattern in one table instead of on each field.
fn with_length_bounds(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn bound(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                let pattern = map.get("pattern").and_then(|p| p.as_str());
                if map.get("type").and_then(|t| t.as_str()) == Some("string")
                    && !map.contains_key("maxLength")
                    && let Some(max) = pattern.and_then(max_length)
                {
                    map.insert("maxLength".into(), max.into());
                }
                map.values_mut().for_each(bound);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(bound),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(&crd).expect("a CRD serializes");
    bound(&mut value);
    serde_json::from_value(value).expect("bounds keep a CRD a CRD")
}

/// One CRD as YAML, as written to `crds/<name>.yaml`.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(crd)
}

/// Writes every CRD to `dir/<name>.yaml`, or prints them as one YAML stream when `dir` is `None`.
pub fn generate(dir: Option<&std::path::Path>, without_cel: bool) -> anyhow::Result<()> {
    for crd in all() {
        let yaml = if without_cel {
            serde_yaml::to_string(&strip_cel(&crd))?
        } else {
            to_yaml(&crd)?
        };
        match dir {
            Some(dir) => {
                let name = crd.metadata.name.as_deref().unwrap_or("unnamed");
                std::fs::write(dir.join(format!("{name}.yaml")), yaml)?;
            }
            None => print!("---\n{yaml}"),
        }
    }
    Ok(())
}

/// A copy of a CRD without `x-kubernetes-validations` anywhere, for API servers older than 1.25
/// that reject the field. Nothing else changes.
pub fn strip_cel(crd: &CustomResourceDefinition) -> serde_json::Value {
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                map.remove("x-kubernetes-validations");
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(crd).expect("a CRD serializes");
    strip(&mut value);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every string, list and map of every spec has a bound the API server enforces before any rule
    /// or controller reads it (CEL cost estimates need them too).
    #[test]
    fn every_spec_value_is_bounded() {
        fn walk(schema: &serde_json::Value, path: &str, unbounded: &mut Vec<String>) {
            let has = |k: &str| schema.get(k).is_some();
            match schema.get("type").and_then(|t| t.as_str()) {
                Some("string") if !(has("maxLength") || has("enum") || has("format")) => {
                    unbounded.push(format!("{path} (string)"))
                }
                Some("array") if !has("maxItems") => unbounded.push(format!("{path} (list)")),
                Some("object")
                    if schema
                        .get("additionalProperties")
                        .is_some_and(|a| a.is_object())
                        && !has("maxProperties") =>
                {
                    unbounded.push(format!("{path} (map)"))
                }
                _ => {}
            }
            for (name, child) in schema["properties"].as_object().into_iter().flatten() {
                walk(child, &format!("{path}.{name}"), unbounded);
            }
            if let Some(items) = schema.get("items") {
                walk(items, &format!("{path}[]"), unbounded);
            }
            if let Some(values) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                walk(values, &format!("{path}{{}}"), unbounded);
            }
        }
        let mut unbounded = Vec::new();
        for crd in all() {
            let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
            let kind = &crd.spec.names.kind;
            walk(
                &schema["openAPIV3Schema"]["properties"]["spec"],
                &format!("{kind}.spec"),
                &mut unbounded,
            );
        }
        assert!(unbounded.is_empty(), "unbounded: {unbounded:#?}");
    }
}
