//! The CustomResourceDefinitions of every kind, as `crdgen` prints them and `crds/` holds them.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::api::*;

/// Every CRD, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        AzureCredential::crd(),
        ClusterAzureCredential::crd(),
        Workspace::crd(),
        ComputeIdentity::crd(),
        Datastore::crd(),
        RegistryConnection::crd(),
    ]
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
