//! Every ARM model parses every matching official example body (request and responses) from
//! `../shared/reference/arm-examples`. A missing folder fails: the examples are the conformance data.

use std::path::PathBuf;

use aml_identity_operator::azure::models::*;
use serde::de::DeserializeOwned;

fn examples(folder: &str, prefix: &str) -> Vec<(PathBuf, serde_json::Value)> {
    let root = std::env::var_os("AMLID_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"))
        .join("reference/arm-examples")
        .join(folder);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("the official examples must be at {}: {e}", root.display()))
    {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(prefix)
        {
            let doc = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            out.push((path, doc));
        }
    }
    assert!(
        !out.is_empty(),
        "no {prefix}* examples in {}",
        root.display()
    );
    out
}

/// Parses the request body (when there is one) and every non-empty response body as `T`; a list
/// response (`value`) is parsed item by item. Returns how many bodies were parsed.
fn parse_all<T: DeserializeOwned>(folder: &str, prefix: &str) -> usize {
    let mut parsed = 0;
    for (path, doc) in examples(folder, prefix) {
        let mut bodies: Vec<serde_json::Value> = Vec::new();
        if let Some(body) = doc["parameters"].as_object().and_then(|p| {
            p.values()
                .find(|v| v.get("properties").is_some() || v.get("location").is_some())
        }) {
            bodies.push(body.clone());
        }
        for response in doc["responses"].as_object().unwrap().values() {
            match response.get("body") {
                Some(body) if body.get("value").is_some() => {
                    bodies.extend(body["value"].as_array().unwrap().iter().cloned())
                }
                Some(body) if !body.is_null() => bodies.push(body.clone()),
                _ => {}
            }
        }
        for body in bodies {
            serde_json::from_value::<T>(body.clone())
                .unwrap_or_else(|e| panic!("{}: {e}\n{body}", path.display()));
            parsed += 1;
        }
    }
    parsed
}

#[test]
fn user_assigned_identities_parse() {
    assert!(parse_all::<UserAssignedIdentity>("managedidentity/2024-11-30", "Identity") >= 4);
}

#[test]
fn federated_identity_credentials_parse() {
    assert!(
        parse_all::<FederatedIdentityCredential>(
            "managedidentity/2024-11-30",
            "FederatedIdentityCredential"
        ) >= 3
    );
}

#[test]
fn role_assignments_parse() {
    assert!(parse_all::<RoleAssignment>("authorization/2022-04-01", "RoleAssignments_") >= 8);
}
