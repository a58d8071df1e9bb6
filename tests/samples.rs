//! The samples against the Rust validation and the generated CRDs against `crds/` (no cluster).

mod support;

use support::samples::{self, Expect};

#[test]
fn every_valid_sample_passes_rust_validation() {
    for s in samples::valid() {
        let violations =
            samples::rust_validate(&s.object).unwrap_or_else(|e| panic!("{}: {e}", s.file_name()));
        assert!(violations.is_empty(), "{}: {violations:?}", s.file_name());
    }
}

#[test]
fn every_invalid_sample_is_refused_naming_its_field() {
    for s in samples::invalid() {
        let field = s.field.clone().unwrap();
        match samples::rust_validate(&s.object) {
            // A list field's violation may name the item (`spec.allowedScopes[0]`).
            Ok(violations) => assert!(
                violations
                    .iter()
                    .any(|v| v.field == field || v.field.starts_with(&format!("{field}["))),
                "{}: expected a violation at {field}, got {violations:?}",
                s.file_name()
            ),
            // Only a value outside an enum may fail before validation; serde names the value.
            Err(e) => assert!(
                s.expect == Expect::Schema && e.contains("unknown variant"),
                "{}: {e}",
                s.file_name()
            ),
        }
    }
}

#[test]
fn crds_directory_matches_crdgen() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let crds = aml_identity_operator::crd::all();
    let mut expected_files: Vec<String> = Vec::new();
    for crd in &crds {
        let name = format!("{}.yaml", crd.metadata.name.as_deref().unwrap());
        let on_disk = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        assert_eq!(
            on_disk,
            aml_identity_operator::crd::to_yaml(crd).unwrap(),
            "crds/{name} is stale: run `make crds`"
        );
        expected_files.push(name);
    }
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    expected_files.sort();
    assert_eq!(
        present, expected_files,
        "crds/ holds files crdgen does not produce"
    );
}

/// Every status field a controller writes is in its kind's status schema: the API server prunes
/// what the schema does not declare, and a pruned field would be rewritten on every reconcile.
#[test]
fn every_status_field_written_is_in_the_schema() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/controllers");
    let expiring = ["ComputeIdentity", "Datastore", "RegistryConnection"];
    let credentials = ["AzureCredential", "ClusterAzureCredential"];
    let all = [
        "AzureCredential",
        "ClusterAzureCredential",
        "Workspace",
        "ComputeIdentity",
        "Datastore",
        "RegistryConnection",
    ];
    let writers: &[(&str, &[&str])] = &[
        ("compute_identity.rs", &["ComputeIdentity"]),
        ("datastore.rs", &["Datastore"]),
        ("registry_connection.rs", &["RegistryConnection"]),
        ("workspace.rs", &["Workspace"]),
        ("credentials.rs", &credentials),
        ("kinds.rs", &credentials),
        ("conditions.rs", &expiring),
        ("mod.rs", &all),
    ];
    let field =
        regex::Regex::new(r#"(?:\.field\(|outcome_fields\.insert\()\s*"([A-Za-z]+)""#).unwrap();
    let mut checked = 0;
    for (file, kinds) in writers {
        let text = std::fs::read_to_string(src.join(file)).unwrap();
        // Unit tests write made-up fields.
        let code = text.split("#[cfg(test)]").next().unwrap();
        for name in field.captures_iter(code).map(|c| c[1].to_owned()) {
            for kind in *kinds {
                let crd = aml_identity_operator::crd::all()
                    .into_iter()
                    .find(|c| c.spec.names.kind == *kind)
                    .unwrap();
                let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
                let status = &schema["openAPIV3Schema"]["properties"]["status"]["properties"];
                assert!(
                    status.get(&name).is_some(),
                    "src/controllers/{file} writes status.{name}, which {kind}'s schema lacks"
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} fields found: the scan missed the writers"
    );
}
