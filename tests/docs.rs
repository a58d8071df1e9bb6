//! The docs cannot rot: the API reference is what `crdgen --docs` writes from the CRDs, every YAML
//! snippet is valid for the operator and accepted by a real API server, and the metrics page names
//! exactly the metrics the operator exports.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use aml_identity_operator::{crd, crd_docs};
use serde_json::Value;

fn docs() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")
}

#[test]
fn the_api_reference_is_generated_from_the_crds() {
    let dir = docs().join("api");
    let mut expected = BTreeMap::new();
    for c in crd::all() {
        let file = format!("{}.md", c.spec.names.singular.clone().unwrap());
        expected.insert(file, crd_docs::to_markdown(&c));
    }
    expected.insert("README.md".into(), crd_docs::index(&crd::all()));
    for (file, text) in &expected {
        assert_eq!(
            &std::fs::read_to_string(dir.join(file)).unwrap_or_default(),
            text,
            "docs/api/{file} is stale: run `make crds`"
        );
    }
    let present: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        present,
        expected.keys().cloned().collect(),
        "docs/api holds files crdgen does not write"
    );
    // Every spec field of every kind is in its page.
    let page = std::fs::read_to_string(dir.join("computeidentity.md")).unwrap();
    assert!(
        page.contains("`spec.tokenSecret.audiences`") && page.contains("`status.clientId`"),
        "{page}"
    );
}

/// The ```yaml blocks of every page under docs/.
fn snippets() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(docs()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("```yaml\n") {
            let body = &rest[start + 8..];
            let end = body
                .find("```")
                .unwrap_or_else(|| panic!("{name}: an unclosed yaml block"));
            for document in serde_yaml::Deserializer::from_str(&body[..end]) {
                let value: Value = serde::Deserialize::deserialize(document)
                    .unwrap_or_else(|e| panic!("{name}: invalid YAML: {e}"));
                if !value.is_null() {
                    out.push((name.clone(), value));
                }
            }
            rest = &body[end + 3..];
        }
    }
    out
}

#[tokio::test]
async fn every_yaml_snippet_is_valid_and_accepted_by_the_api_server() {
    let snippets = snippets();
    assert!(snippets.len() >= 7, "{} snippets", snippets.len());
    // The operator's own checks pass on every object of its kinds.
    for (page, object) in &snippets {
        if object["apiVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("amlidentity.io/"))
        {
            let violations = support::samples::rust_validate(object).unwrap();
            assert!(
                violations.is_empty(),
                "{page}: {} {}: {violations:?}",
                object["kind"],
                object["metadata"]["name"]
            );
        }
    }
    // Applied for real, each namespace the docs use mapped to a fresh one (cluster-scoped names
    // get the same suffix) so the run leaves nothing behind and meets no other test.
    let client = support::cluster::client().await;
    support::cluster::install_crds(&client).await;
    let suffix = support::cluster::unique();
    let rename = |ns: &str| {
        format!("docs-{ns}-{suffix}")
            .chars()
            .take(63)
            .collect::<String>()
    };
    let mut namespaces = BTreeSet::new();
    let mut objects = Vec::new();
    for (_, object) in &snippets {
        let mut object = object.clone();
        if object["kind"] == "Namespace" {
            let name = object["metadata"]["name"].as_str().unwrap().to_owned();
            object["metadata"]["name"] = rename(&name).into();
        } else if let Some(ns) = object["metadata"]["namespace"].as_str().map(str::to_owned) {
            namespaces.insert(rename(&ns));
            object["metadata"]["namespace"] = rename(&ns).into();
        } else {
            let name = object["metadata"]["name"].as_str().unwrap().to_owned();
            object["metadata"]["name"] = format!("{name}-{suffix}").into();
        }
        objects.push(object);
    }
    for ns in &namespaces {
        if !objects
            .iter()
            .any(|o| o["kind"] == "Namespace" && o["metadata"]["name"] == ns.as_str())
        {
            objects.insert(0, serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
        }
    }
    objects.sort_by_key(|o| o["kind"] != "Namespace");
    support::chart::apply(&client, &objects).await;
    support::chart::delete_cluster_scoped(&client, &objects).await;
    for o in objects.iter().filter(|o| o["kind"] == "Namespace") {
        support::cluster::delete_namespace(&client, o["metadata"]["name"].as_str().unwrap()).await;
    }
}

#[test]
fn the_metrics_page_names_what_the_operator_exports() {
    let exported = support::plugin::exported_metrics();
    let page = std::fs::read_to_string(docs().join("metrics.md")).unwrap();
    let documented: BTreeSet<String> = page
        .lines()
        .filter_map(|l| l.strip_prefix("| `aml_identity_operator_"))
        .map(|rest| format!("aml_identity_operator_{}", rest.split('`').next().unwrap()))
        .collect();
    assert_eq!(
        documented, exported,
        "docs/metrics.md and the exposition disagree"
    );
}
