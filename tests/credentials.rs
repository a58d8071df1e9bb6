//! The credential controllers end to end: the operator process signs in at the emulator with each
//! source, reports who it is, reacts to a rotated Secret, and never logs the secret.

mod support;

use aml_identity_emulator::Seed;
use aml_identity_emulator::state::{FederatedCredential, ImdsSeed, UserAssignedIdentity};
use k8s_openapi::api::core::v1::ServiceAccount;

use kube::api::{Api, PostParams};
use support::azure::*;
use support::cluster::{self, Operator};
use support::e2e::{apply, azure_args, ready_reason, secret};

#[tokio::test]
async fn a_service_principal_credential_signs_in_and_follows_its_rotated_secret() {
    let client = cluster::client().await;
    cluster::install_crds(&client).await;
    let azure = Azure::start(vec![]).await;
    let ns = cluster::namespace(&client, "cred-sp").await;
    secret(&client, &ns, "aml-platform-sp", "clientSecret", APP_SECRET).await;
    let operator = Operator::start_with(&ns, "lease-cred-sp", "cred-sp-0", &azure_args(&azure));
    let name = apply(&client, &ns, serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "AzureCredential", "metadata": {"name": "team-a"},
        "spec": {"tenantId": TENANT, "servicePrincipal": {"clientId": APP_CLIENT_ID, "clientSecretRef": {"name": "aml-platform-sp", "key": "clientSecret"}}},
    }))
    .await;

    let (status, message, obj) =
        ready_reason(&client, "AzureCredential", &ns, &name, "Authenticated").await;
    assert_eq!(status, "True", "{message}");
    assert_eq!(obj.data["status"]["objectId"], APP_OBJECT_ID);
    assert_eq!(obj.data["status"]["appId"], APP_CLIENT_ID);

    // Rotating the Secret to a wrong value is noticed without touching the credential object.
    let wrong = "rotated-but-wrong-secret-0042";
    secret(&client, &ns, "aml-platform-sp", "clientSecret", wrong).await;
    let (status, message, obj) = ready_reason(
        &client,
        "AzureCredential",
        &ns,
        &name,
        "AuthenticationFailed",
    )
    .await;
    assert_eq!(status, "False");
    assert!(message.contains("7000215"), "{message}");
    assert!(obj.data["status"]["objectId"].is_null());
    secret(&client, &ns, "aml-platform-sp", "clientSecret", APP_SECRET).await;
    ready_reason(&client, "AzureCredential", &ns, &name, "Authenticated").await;

    let logs = operator.logs();
    for value in [APP_SECRET, wrong] {
        assert!(!logs.contains(value), "the operator logged a client secret");
    }
    support::e2e::assert_no_leaks(&client, &azure, &operator, &ns, &[APP_SECRET, wrong]).await;
    cluster::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn a_missing_secret_is_reported_by_name() {
    let client = cluster::client().await;
    cluster::install_crds(&client).await;
    let azure = Azure::start(vec![]).await;
    let ns = cluster::namespace(&client, "cred-missing").await;
    let _operator = Operator::start_with(
        &ns,
        "lease-cred-missing",
        "cred-missing-0",
        &azure_args(&azure),
    );
    let name = apply(&client, &ns, serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "AzureCredential", "metadata": {"name": "team-a"},
        "spec": {"tenantId": TENANT, "servicePrincipal": {"clientId": APP_CLIENT_ID, "clientSecretRef": {"name": "absent", "key": "clientSecret"}}},
    }))
    .await;
    let (_, message, _) =
        ready_reason(&client, "AzureCredential", &ns, &name, "CredentialNotFound").await;
    assert!(
        message.contains(&format!("Secret {ns}/absent")),
        "{message}"
    );
    assert_eq!(
        azure.emulator().counter("entra.token"),
        0,
        "nothing reached Entra ID"
    );
    cluster::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn workload_identity_and_managed_identity_credentials_sign_in() {
    let client = cluster::client().await;
    cluster::install_crds(&client).await;
    let (issuer, ca) = cluster::issuer_and_ca(&client).await;
    let azure = Azure::start(vec![ca]).await;
    let ns = cluster::namespace(&client, "cred-wi").await;
    let sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "aml-operator"}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();

    let uai = |name: &str| {
        format!(
            "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}",
            azure.resource_group_id()
        )
    };
    let (wi_client, wi_principal) = (
        "8b3f4c2e-1d5a-4e6f-9a7b-0c1d2e3f4a5b",
        "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f",
    );
    let (mi_client, mi_principal) = (
        "6e3c1b2a-9d8f-4e7a-b6c5-d4e3f2a1b0c9",
        "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a",
    );
    azure
        .emulator()
        .seed(Seed {
            user_assigned_identities: vec![
                UserAssignedIdentity {
                    id: uai("id-team-a-operator"),
                    location: "eastus".into(),
                    tenant_id: TENANT.into(),
                    client_id: wi_client.into(),
                    principal_id: wi_principal.into(),
                    tags: Default::default(),
                    federated_credentials: vec![FederatedCredential {
                        name: "aml-operator".into(),
                        issuer,
                        subject: format!("system:serviceaccount:{ns}:aml-operator"),
                        audiences: vec!["api://AzureADTokenExchange".into()],
                    }],
                },
                UserAssignedIdentity {
                    id: uai("id-node"),
                    location: "eastus".into(),
                    tenant_id: TENANT.into(),
                    client_id: mi_client.into(),
                    principal_id: mi_principal.into(),
                    tags: Default::default(),
                    federated_credentials: vec![],
                },
            ],
            imds: Some(ImdsSeed {
                system_assigned: None,
                user_assigned: vec![uai("id-node")],
            }),
            ..Default::default()
        })
        .unwrap();
    let _operator = Operator::start_with(&ns, "lease-cred-wi", "cred-wi-0", &azure_args(&azure));

    let wi = apply(&client, &ns, serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "AzureCredential", "metadata": {"name": "team-a"},
        "spec": {"tenantId": TENANT, "workloadIdentity": {"clientId": wi_client, "serviceAccountName": "aml-operator"}},
    }))
    .await;
    let mi_name = format!("node-{}", cluster::unique());
    apply(&client, &ns, serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "ClusterAzureCredential",
        "metadata": {"name": mi_name, "labels": {cluster::TEST_NAMESPACE_LABEL: ns}},
        "spec": {"tenantId": TENANT, "managedIdentity": {"clientId": mi_client}, "allowedNamespaces": {"names": [ns]}, "allowedScopes": [format!("/subscriptions/{SUBSCRIPTION}")]},
    }))
    .await;

    let (_, _, obj) = ready_reason(&client, "AzureCredential", &ns, &wi, "Authenticated").await;
    assert_eq!(obj.data["status"]["objectId"], wi_principal);
    let (_, _, obj) = ready_reason(
        &client,
        "ClusterAzureCredential",
        &ns,
        &mi_name,
        "Authenticated",
    )
    .await;
    assert_eq!(obj.data["status"]["appId"], mi_client);
    cluster::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn a_namespace_cannot_borrow_another_namespaces_federation() {
    let client = cluster::client().await;
    cluster::install_crds(&client).await;
    let (issuer, ca) = cluster::issuer_and_ca(&client).await;
    let azure = Azure::start(vec![ca]).await;
    let owner = cluster::namespace(&client, "cred-owner").await;
    let thief = cluster::namespace(&client, "cred-thief").await;
    let client_id = "8b3f4c2e-1d5a-4e6f-9a7b-0c1d2e3f4a5b";
    azure
        .emulator()
        .seed(Seed {
            user_assigned_identities: vec![UserAssignedIdentity {
                id: format!(
                    "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-owner",
                    azure.resource_group_id()
                ),
                location: "eastus".into(),
                tenant_id: TENANT.into(),
                client_id: client_id.into(),
                principal_id: "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f".into(),
                tags: Default::default(),
                federated_credentials: vec![FederatedCredential {
                    name: "owner".into(),
                    issuer,
                    subject: format!("system:serviceaccount:{owner}:aml-operator"),
                    audiences: vec!["api://AzureADTokenExchange".into()],
                }],
            }],
            ..Default::default()
        })
        .unwrap();
    // The other namespace makes a ServiceAccount of the same name and names the same client id.
    let sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "aml-operator"}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), &thief)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    let _operator = Operator::start_with(
        &thief,
        "lease-cred-thief",
        "cred-thief-0",
        &azure_args(&azure),
    );
    let name = apply(&client, &thief, serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "AzureCredential", "metadata": {"name": "borrowed"},
        "spec": {"tenantId": TENANT, "workloadIdentity": {"clientId": client_id, "serviceAccountName": "aml-operator"}},
    }))
    .await;
    let (status, message, obj) = ready_reason(
        &client,
        "AzureCredential",
        &thief,
        &name,
        "AuthenticationFailed",
    )
    .await;
    assert_eq!(status, "False");
    assert!(
        message.contains("70021")
            && message.contains(&format!("system:serviceaccount:{thief}:aml-operator")),
        "{message}"
    );
    assert!(obj.data["status"]["objectId"].is_null());
    cluster::delete_namespace(&client, &thief).await;
    cluster::delete_namespace(&client, &owner).await;
}

#[tokio::test]
async fn a_namespaced_custom_cloud_calls_only_hosts_the_operator_allows() {
    let client = cluster::client().await;
    cluster::install_crds(&client).await;
    let azure = Azure::start(vec![]).await;
    let ns = cluster::namespace(&client, "cred-custom").await;
    secret(&client, &ns, "sp", "clientSecret", APP_SECRET).await;
    let mut args = azure_args(&azure);
    args.extend([
        "--allowed-custom-cloud-hosts".to_string(),
        "microsoftonline.com,azure.com".into(),
    ]);
    let _operator = Operator::start_with(&ns, "lease-cred-custom", "cred-custom-0", &args);
    let credential = |name: &str, authority: &str| {
        serde_json::json!({
            "apiVersion": "amlidentity.io/v1alpha1", "kind": "AzureCredential", "metadata": {"name": name},
            "spec": {"tenantId": TENANT, "cloud": "Custom",
                     "endpoints": {"authorityHost": authority, "resourceManager": "https://management.azure.com"},
                     "servicePrincipal": {"clientId": APP_CLIENT_ID, "clientSecretRef": {"name": "sp", "key": "clientSecret"}}},
        })
    };
    // A tenant points its credential at a host of its choosing: refused before any request.
    apply(
        &client,
        &ns,
        credential("elsewhere", "https://login.attacker.example"),
    )
    .await;
    let (_, message, _) = ready_reason(
        &client,
        "AzureCredential",
        &ns,
        "elsewhere",
        "CustomCloudNotAllowed",
    )
    .await;
    assert!(
        message.starts_with("spec.endpoints.authorityHost: login.attacker.example")
            && message.contains("microsoftonline.com, azure.com"),
        "{message}"
    );
    assert_eq!(azure.emulator().requests("entra.token"), 0);
    // Hosts within the allow-list (subdomains included) are called.
    apply(
        &client,
        &ns,
        credential("allowed", "https://login.microsoftonline.com"),
    )
    .await;
    ready_reason(&client, "AzureCredential", &ns, "allowed", "Authenticated").await;
    cluster::delete_namespace(&client, &ns).await;
}
