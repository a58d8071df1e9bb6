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
        if path.is_file()
            && path
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

const ML: &str = "machinelearningservices/2025-12-01";

#[test]
fn workspaces_parse() {
    assert!(parse_all::<Workspace>(&format!("{ML}/Workspace"), "") >= 4);
}

#[test]
fn computes_parse() {
    assert!(parse_all::<Compute>(&format!("{ML}/Compute"), "") >= 4);
    assert!(parse_all::<Compute>(&format!("{ML}/Compute/createOrUpdate"), "") >= 4);
}

#[test]
fn datastores_parse() {
    let mut parsed = 0;
    for kind in [
        "AzureBlobWAccountKey",
        "AzureDataLakeGen1WServicePrincipal",
        "AzureDataLakeGen2WServicePrincipal",
        "AzureFileWAccountKey",
    ] {
        parsed += parse_all::<Datastore>(&format!("{ML}/Datastore/{kind}"), "createOrUpdate");
    }
    assert!(parsed >= 12);
    assert!(parse_all::<Datastore>(&format!("{ML}/Datastore"), "get.") >= 1);
    assert!(parse_all::<Datastore>(&format!("{ML}/Datastore"), "list.") >= 1);
    assert_eq!(
        parse_all::<DatastoreSecrets>(&format!("{ML}/Datastore"), "listSecrets"),
        1
    );
}

#[test]
fn workspace_connections_parse() {
    assert!(parse_all::<WorkspaceConnection>(&format!("{ML}/WorkspaceConnection"), "") >= 6);
}

#[test]
fn storage_keys_and_registry_credentials_parse() {
    assert_eq!(
        parse_all::<StorageAccountKeys>("storage/2025-08-01", "StorageAccountListKeys"),
        1
    );
    assert_eq!(
        parse_all::<RegistryCredentials>("containerregistry/2025-11-01", "RegistryListCredentials"),
        1
    );
    assert!(parse_all::<Registry>("containerregistry/2025-11-01", "RegistryGet") >= 1);
}
