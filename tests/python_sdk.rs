//! The official Azure SDK for Python (azure-identity) against the emulator: client secret through
//! the Entra endpoints (tenant discovery, token), and managed identity through IMDS.

mod support;

use std::process::Command;

use aml_identity_emulator::Seed;
use aml_identity_emulator::state::{ImdsSeed, UserAssignedIdentity};
use support::azure::*;

/// The venv's python (`make test` sets AMLID_PYTHON via hack/python-env.sh).
fn python() -> String {
    std::env::var("AMLID_PYTHON").expect(
        "AMLID_PYTHON is not set: run the tests with `make test`, which creates the Python venv",
    )
}

fn get_token(
    azure: &Azure,
    mode: &str,
    scope: &str,
    env: &[(&str, String)],
) -> Result<serde_json::Value, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/get_token.py");
    let output = Command::new(python())
        .args([script, mode, scope])
        .env("REQUESTS_CA_BUNDLE", &azure.running.ca_path)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if output.status.success() {
        Ok(serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}")))
    } else {
        Err(format!(
            "{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_identity_gets_a_token_with_a_client_secret() {
    let azure = Azure::start(vec![]).await;
    let env = |secret: &str| {
        vec![
            ("AZURE_TENANT_ID", TENANT.to_owned()),
            ("AZURE_CLIENT_ID", APP_CLIENT_ID.to_owned()),
            ("AZURE_CLIENT_SECRET", secret.to_owned()),
            (
                "AZURE_AUTHORITY_HOST",
                format!("https://localhost:{}", azure.running.https_addr.port()),
            ),
        ]
    };
    let ok = tokio::task::block_in_place(|| {
        get_token(
            &azure,
            "secret",
            "https://vault.azure.net/.default",
            &env(APP_SECRET),
        )
    })
    .unwrap();
    let claims = azure
        .emulator()
        .verify_token(ok["token"].as_str().unwrap())
        .expect("a token the emulator signed");
    assert_eq!(claims.aud, "https://vault.azure.net");
    assert_eq!(ok["expires_on"].as_i64(), Some(claims.exp));

    let refused = tokio::task::block_in_place(|| {
        get_token(
            &azure,
            "secret",
            "https://vault.azure.net/.default",
            &env("wrong"),
        )
    })
    .unwrap_err();
    assert!(refused.contains("AADSTS7000215"), "{refused}");
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_identity_gets_a_managed_identity_token_through_imds() {
    let azure = Azure::start(vec![]).await;
    let id = format!(
        "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-node",
        azure.resource_group_id()
    );
    let client_id = "6e3c1b2a-9d8f-4e7a-b6c5-d4e3f2a1b0c9";
    azure
        .emulator()
        .seed(Seed {
            user_assigned_identities: vec![UserAssignedIdentity {
                id: id.clone(),
                location: "eastus".into(),
                tenant_id: TENANT.into(),
                client_id: client_id.into(),
                principal_id: "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a".into(),
                tags: Default::default(),
                federated_credentials: vec![],
            }],
            imds: Some(ImdsSeed {
                system_assigned: None,
                user_assigned: vec![id.clone()],
            }),
            ..Default::default()
        })
        .unwrap();
    let imds = format!("http://{}", azure.running.imds_addr);
    let env = |client: &str| {
        vec![
            ("AZURE_POD_IDENTITY_AUTHORITY_HOST", imds.clone()),
            ("AZURE_CLIENT_ID", client.to_owned()),
        ]
    };
    let ok = tokio::task::block_in_place(|| {
        get_token(
            &azure,
            "imds",
            "https://storage.azure.com/.default",
            &env(client_id),
        )
    })
    .unwrap();
    let claims = azure
        .emulator()
        .verify_token(ok["token"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        (claims.appid.as_str(), claims.aud.as_str()),
        (client_id, "https://storage.azure.com")
    );
    assert_eq!(claims.xms_mirid.as_deref(), Some(id.as_str()));
    assert_eq!(
        azure
            .emulator()
            .counter(&format!("imds.token:{client_id}:https://storage.azure.com")),
        1
    );

    // An identity that is not on the node is refused.
    let refused = tokio::task::block_in_place(|| {
        get_token(
            &azure,
            "imds",
            "https://storage.azure.com/.default",
            &env("11111111-2222-3333-4444-555555555555"),
        )
    })
    .unwrap_err();
    assert!(
        refused.contains("Identity not found") || refused.contains("400"),
        "{refused}"
    );
}
