//! The ComputeIdentity controller end to end: a user-assigned identity created and patched onto the
//! compute, its grants, a federated credential for the ServiceAccount with the cluster's real
//! issuer, and a token Secret minted through that federation — not re-minted by a restart, re-minted
//! on force-refresh, and never leaked into logs, Events or status.

mod support;

use std::time::Duration;

use aml_identity_emulator::Seed;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use support::azure::*;
use support::cluster::{self, Operator};
use support::e2e::*;

fn rg() -> String {
    format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}")
}

fn workspace_id() -> String {
    format!(
        "{}/providers/Microsoft.MachineLearningServices/workspaces/mlw-team-a",
        rg()
    )
}

async fn setup(prefix: &str) -> (Client, Azure, String) {
    setup_with_lifetime(prefix, 3599).await
}

async fn setup_with_lifetime(prefix: &str, lifetime: i64) -> (Client, Azure, String) {
    let client = cluster::client().await;
    cluster::install_crds(&client).await;
    let (_, ca) = cluster::issuer_and_ca(&client).await;
    let azure = Azure::start_with_lifetime(vec![ca], lifetime).await;
    azure.grant(&rg(), "Owner", APP_OBJECT_ID);
    azure
        .emulator()
        .seed(Seed {
            vaults: vec![aml_identity_emulator::state::Vault {
                id: vault(),
                tenant_id: TENANT.into(),
                secrets: [("storage-conn".to_string(), "s3cr3t-for-training".to_string())].into(),
                ..Default::default()
            }],
            resources: vec![
                serde_json::json!({"id": workspace_id(), "name": "mlw-team-a", "location": "eastus", "identity": {"type": "SystemAssigned"}, "properties": {"workspaceId": "0f0e0d0c-0b0a-4909-8807-060504030201", "provisioningState": "Succeeded"}}),
                serde_json::json!({"id": format!("{}/computes/cpu-cluster", workspace_id()), "name": "cpu-cluster", "location": "eastus", "identity": {"type": "None"}, "properties": {"computeType": "AmlCompute", "provisioningState": "Succeeded"}}),
            ],
            ..Default::default()
        })
        .unwrap();
    let ns = cluster::namespace(&client, prefix).await;
    let sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "training"}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    service_principal_credential(&client, &ns).await;
    apply(&client, &ns, serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "Workspace", "metadata": {"name": "ml-workspace"},
        "spec": {"credentialRef": {"name": "team-a"}, "subscriptionId": SUBSCRIPTION, "resourceGroup": RESOURCE_GROUP, "workspaceName": "mlw-team-a"},
    }))
    .await;
    (client, azure, ns)
}

fn uai() -> String {
    format!(
        "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-cpu-cluster",
        rg()
    )
}

fn storage() -> String {
    format!(
        "{}/providers/Microsoft.Storage/storageAccounts/stmlwteama",
        rg()
    )
}

fn vault() -> String {
    format!("{}/providers/Microsoft.KeyVault/vaults/kv-mlw-team-a", rg())
}

/// The official azure-keyvault-secrets reads `storage-conn` from the emulator's vault with `token`
/// (as a pod would with the Secret's keys); panics with its output when it cannot.
fn read_vault_secret(azure: &Azure, token: &str, expires_on: &str) {
    let python = std::env::var("AMLID_PYTHON")
        .expect("AMLID_PYTHON is not set: run the tests with `make test`");
    let port = azure.running.https_addr.port();
    let read = tokio::task::block_in_place(|| {
        std::process::Command::new(&python)
            .args([
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/keyvault.py"),
                &format!("https://localhost:{port}/_vault/kv-mlw-team-a"),
                "storage-conn",
            ])
            .env("AZURE_ACCESS_TOKEN", token)
            .env("EXPIRES_ON", expires_on)
            .env("REQUESTS_CA_BUNDLE", &azure.running.ca_path)
            .output()
            .unwrap()
    });
    assert!(
        read.status.success(),
        "{}{}",
        String::from_utf8_lossy(&read.stdout),
        String::from_utf8_lossy(&read.stderr)
    );
}

/// On a key vault that authorizes with access policies, `keyVaultSecretsUser` becomes what the
/// documents ask there — an access policy allowing get on secrets — and the official SDK reads a
/// secret with the Secret's vault token; a grant naming one secret is refused (access policies
/// cannot be narrowed to one), and the entry goes with the object.
#[tokio::test(flavor = "multi_thread")]
async fn an_access_policy_vault_gets_a_policy_for_key_vault_secrets_user() {
    let (client, azure, ns) = setup("ci-policy").await;
    azure
        .emulator()
        .seed(Seed {
            vaults: vec![aml_identity_emulator::state::Vault {
                id: vault(),
                tenant_id: TENANT.into(),
                secrets: [(
                    "storage-conn".to_string(),
                    "s3cr3t-for-training".to_string(),
                )]
                .into(),
                enable_rbac_authorization: false,
                access_policies: vec![],
            }],
            ..Default::default()
        })
        .unwrap();
    let operator = Operator::start_with(&ns, "lease-ci-policy", "ci-policy-0", &azure_args(&azure));
    let object = |grant: String| {
        serde_json::json!({
            "apiVersion": "amlidentity.io/v1alpha1", "kind": "ComputeIdentity", "metadata": {"name": "cpu-cluster"},
            "spec": {
                "workspaceRef": {"name": "ml-workspace"}, "computeName": "cpu-cluster",
                "identity": {"type": "UserAssigned", "userAssignedIdentities": [uai()]},
                "createIfMissing": {"location": "eastus"},
                "grants": {"keyVaultSecretsUser": [grant]},
                "federation": {"serviceAccounts": ["training"]},
                "tokenSecret": {"name": "cpu-cluster-identity", "audiences": ["https://vault.azure.net"]},
            },
        })
    };
    let policies = || async {
        let vault: serde_json::Value = azure
            .arm(azure.app_credential("check"))
            .get(&vault(), "2025-05-01")
            .await
            .unwrap()
            .unwrap();
        vault["properties"]["accessPolicies"]
            .as_array()
            .unwrap()
            .clone()
    };
    let name = apply(
        &client,
        &ns,
        object(format!("{}/secrets/storage-conn", vault())),
    )
    .await;
    let (_, message, _) = ready_reason(
        &client,
        "ComputeIdentity",
        &ns,
        &name,
        "AccessPolicyIncomplete",
    )
    .await;
    assert!(
        message.starts_with("spec.grants.keyVaultSecretsUser[0]")
            && message.contains("cannot be limited to one secret"),
        "{message}"
    );
    assert!(policies().await.is_empty());

    let api = cluster::dynamic_api(&client, &kind("ComputeIdentity"), &ns);
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"grants": {"keyVaultSecretsUser": [vault()]}}})),
    )
    .await
    .unwrap();
    let (status, message, obj) =
        ready_reason(&client, "ComputeIdentity", &ns, &name, "TokensIssued").await;
    assert_eq!(status, "True", "{message}");
    let principal = obj.data["status"]["principalId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        policies().await,
        vec![
            serde_json::json!({"tenantId": TENANT, "objectId": principal, "permissions": {"secrets": ["get"]}})
        ]
    );
    assert!(
        !azure
            .emulator()
            .role_assignments()
            .iter()
            .any(|r| r.principal_id == principal && r.scope.eq_ignore_ascii_case(&vault())),
        "no role on an access-policy vault"
    );
    let secret = Api::<Secret>::namespaced(client.clone(), &ns)
        .get("cpu-cluster-identity")
        .await
        .unwrap();
    let data = secret.data.unwrap();
    let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
    read_vault_secret(
        &azure,
        &text("vault.azure.net.token"),
        &text("vault.azure.net.expires-on"),
    );

    delete_and_wait(&client, "ComputeIdentity", &ns, &name).await;
    assert!(
        policies().await.is_empty(),
        "the policy goes with the object"
    );
    assert!(!operator.logs().contains("s3cr3t"));
    cluster::delete_namespace(&client, &ns).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_assigned_identity_gets_grants_federation_and_a_token_secret() {
    let (client, azure, ns) = setup("ci-user").await;
    let mut operator = Operator::start_with(&ns, "lease-ci-user", "ci-user-0", &azure_args(&azure));
    let name = apply(&client, &ns, serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "ComputeIdentity", "metadata": {"name": "cpu-cluster"},
        "spec": {
            "workspaceRef": {"name": "ml-workspace"}, "computeName": "cpu-cluster",
            "identity": {"type": "UserAssigned", "userAssignedIdentities": [uai()]},
            "createIfMissing": {"location": "eastus"}, "manageCompute": true,
            "grants": {"storageBlobDataReader": [storage()], "keyVaultSecretsUser": [vault()]},
            "federation": {"serviceAccounts": ["training"]},
            "tokenSecret": {"name": "cpu-cluster-identity", "audiences": ["https://storage.azure.com", "https://vault.azure.net"]},
        },
    }))
    .await;
    let (status, message, obj) =
        ready_reason(&client, "ComputeIdentity", &ns, &name, "TokensIssued").await;
    assert_eq!(status, "True", "{message}");
    let client_id = obj.data["status"]["clientId"].as_str().unwrap().to_owned();
    let principal = obj.data["status"]["principalId"]
        .as_str()
        .unwrap()
        .to_owned();
    // The record holds what was made: the identity, its federated credential, two grants.
    let record = obj.data["status"]["azureResources"]
        .as_array()
        .unwrap()
        .clone();
    let kinds: Vec<(&str, &str)> = record
        .iter()
        .map(|r| (r["kind"].as_str().unwrap(), r["id"].as_str().unwrap()))
        .collect();
    assert!(
        kinds.contains(&("UserAssignedIdentity", uai().as_str())),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|(k, _)| *k == "RoleAssignment").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|(k, _)| *k == "FederatedIdentityCredential")
            .count(),
        1,
        "{kinds:?}"
    );
    assert!(
        obj.data["status"]["renewalTime"].as_str().unwrap()
            < obj.data["status"]["expiresAt"].as_str().unwrap()
    );

    // Grants and federation took effect in Azure.
    let e = azure.emulator();
    assert!(e.authorized(
        &principal,
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
        &storage(),
        true
    ));
    assert!(e.authorized(
        &principal,
        "Microsoft.KeyVault/vaults/secrets/getSecret/action",
        &vault(),
        true
    ));

    // The Secret: ids for the SDKs and one working token per audience.
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let secret = secrets.get("cpu-cluster-identity").await.unwrap();
    let data = secret.data.clone().unwrap();
    let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
    assert_eq!(text("AZURE_CLIENT_ID"), client_id);
    assert_eq!(text("DEFAULT_IDENTITY_CLIENT_ID"), client_id);
    assert_eq!(text("AZURE_TENANT_ID"), TENANT);
    let mut tokens = Vec::new();
    for (key, audience) in [
        ("storage.azure.com", "https://storage.azure.com"),
        ("vault.azure.net", "https://vault.azure.net"),
    ] {
        let token = text(&format!("{key}.token"));
        let claims = e.verify_token(&token).expect("a token the emulator issued");
        assert_eq!(
            (
                claims.aud.as_str(),
                claims.appid.as_str(),
                claims.oid.as_str()
            ),
            (audience, client_id.as_str(), principal.as_str())
        );
        assert_eq!(text(&format!("{key}.expires-on")), claims.exp.to_string());
        tokens.push(token);
    }
    let issued = e.counter("entra.token");
    let earliest = [
        text("storage.azure.com.expires-on"),
        text("vault.azure.net.expires-on"),
    ]
    .iter()
    .map(|v| v.parse::<f64>().unwrap())
    .fold(f64::MAX, f64::min);
    let gauge = operator
        .metric_sum(
            "aml_identity_operator_credential_expiry_timestamp_seconds{kind=\"ComputeIdentity\"",
        )
        .await;
    let metrics = operator.metrics().await.unwrap_or_default();
    let lines: Vec<&str> = metrics.lines().filter(|l| l.contains("expiry")).collect();
    assert_eq!(
        gauge,
        Some(earliest),
        "the expiry gauge shows when the Secret's tokens expire: {lines:?}"
    );

    // The tokens work for the official SDKs: Azurite serves a blob to the storage token, and the
    // emulator's Key Vault gives a secret to the vault token (the identity holds Secrets User there).
    let blob = support::azurite::Blob::new();
    let container = blob.prepare().await;
    let python = std::env::var("AMLID_PYTHON")
        .expect("AMLID_PYTHON is not set: run the tests with `make test`");
    let read = tokio::task::block_in_place(|| {
        std::process::Command::new(&python)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/python/blob_pod.py"
            ))
            .env("AZURE_STORAGE_ACCOUNT_URL", &blob.base)
            .env("AZURE_STORAGE_CONTAINER", &container)
            .env("AZURE_STORAGE_TOKEN", &tokens[0])
            .env("EXPIRES_ON", text("storage.azure.com.expires-on"))
            .env("BLOB_NAME", support::azurite::BLOB.0)
            .env("REQUESTS_CA_BUNDLE", &blob.ca)
            .output()
            .unwrap()
    });
    let result: serde_json::Value = serde_json::from_slice(&read.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&read.stderr)));
    assert_eq!(result["read"], support::azurite::BLOB.1, "{result}");
    read_vault_secret(&azure, &tokens[1], &text("vault.azure.net.expires-on"));

    // A TokenIssued Event says who got what until when, never the value.
    let events = Api::<Event>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    let issued_event = events
        .items
        .iter()
        .find(|ev| ev.reason.as_deref() == Some("TokenIssued"))
        .expect("a TokenIssued Event");
    let note = issued_event.note.clone().unwrap_or_default();
    assert!(
        note.contains(&client_id) && note.contains("https://storage.azure.com"),
        "{note}"
    );

    // A restart re-reads the Secret and mints nothing, and asks ARM nothing about the settled
    // identity: its compute, grants and federated credential are looked at again at renewal.
    let version = secret.resource_version();
    let arm_writes = || e.requests("arm.PUT") + e.requests("arm.PATCH") + e.requests("arm.DELETE");
    let identity_reads = || {
        [
            "userAssignedIdentities",
            "federatedIdentityCredentials",
            "computes",
        ]
        .iter()
        .map(|kind| e.requests(&format!("arm.GET.{kind}")))
        .sum::<u64>()
    };
    let writes = arm_writes();
    let reads = identity_reads();
    assert!(reads > 0, "the first pass read the identity");
    assert!(operator.stop());
    let operator = Operator::start_with(&ns, "lease-ci-user", "ci-user-1", &azure_args(&azure));
    cluster::wait_until(
        Duration::from_secs(30),
        "the restarted operator to reconcile",
        || async {
            (operator
                .metric_sum("aml_identity_operator_reconciles_total{kind=\"ComputeIdentity\"")
                .await?
                >= 1.0)
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        e.counter("entra.token"),
        issued + 1,
        "only the credential's own proof, no new tokens for the Secret"
    );
    assert_eq!(arm_writes(), writes, "a restart writes nothing to ARM");
    assert_eq!(
        identity_reads(),
        reads,
        "a restart reads nothing of a settled identity from ARM"
    );
    assert_eq!(
        secrets
            .get("cpu-cluster-identity")
            .await
            .unwrap()
            .resource_version(),
        version
    );

    // force-refresh mints now.
    let api = cluster::dynamic_api(&client, &kind("ComputeIdentity"), &ns);
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(
            serde_json::json!({"metadata": {"annotations": {"amlidentity.io/force-refresh": "1"}}}),
        ),
    )
    .await
    .unwrap();
    let refreshed = cluster::wait_until(Duration::from_secs(30), "a re-minted Secret", || {
        let secrets = secrets.clone();
        let version = version.clone();
        async move {
            secrets
                .get("cpu-cluster-identity")
                .await
                .ok()
                .filter(|s| s.resource_version() != version)
        }
    })
    .await;
    let new_token =
        String::from_utf8(refreshed.data.unwrap()["storage.azure.com.token"].0.clone()).unwrap();
    assert_ne!(new_token, tokens[0]);
    tokens.push(new_token);

    // No token appears in logs, Events or status.
    let status = serde_json::to_string(&api.get(&name).await.unwrap().data["status"]).unwrap();
    let events = serde_json::to_string(
        &Api::<Event>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items,
    )
    .unwrap();
    for token in &tokens {
        assert!(
            !operator.logs().contains(token.as_str()),
            "a token in the operator log"
        );
        assert!(!events.contains(token.as_str()), "a token in an Event");
        assert!(!status.contains(token.as_str()), "a token in status");
    }

    // Deleting the object removes what the operator made in Azure: the federated credential, the
    // grants, and the identity it created.
    delete_and_wait(&client, "ComputeIdentity", &ns, &name).await;
    let arm = azure.arm(azure.app_credential("test"));
    let identity: Option<aml_identity_operator::azure::models::UserAssignedIdentity> =
        arm.get(&uai(), "2024-11-30").await.unwrap();
    assert!(
        identity.is_none(),
        "the identity the operator created is gone"
    );
    assert!(!e.authorized(
        &principal,
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
        &storage(),
        true
    ));
    assert_no_leaks(&client, &azure, &operator, &ns, &[APP_SECRET]).await;
    cluster::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn a_system_assigned_identity_is_reported_without_a_token() {
    let (client, azure, ns) = setup("ci-system").await;
    let _operator =
        Operator::start_with(&ns, "lease-ci-system", "ci-system-0", &azure_args(&azure));
    let name = apply(&client, &ns, serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "ComputeIdentity", "metadata": {"name": "cpu-cluster"},
        "spec": {
            "workspaceRef": {"name": "ml-workspace"}, "computeName": "cpu-cluster",
            "identity": {"type": "SystemAssigned"}, "manageCompute": true,
            "grants": {"storageBlobDataReader": [storage()]},
            "tokenSecret": {"name": "cpu-cluster-identity", "audiences": ["https://storage.azure.com"]},
        },
    }))
    .await;
    let (status, _, obj) = ready_reason(
        &client,
        "ComputeIdentity",
        &ns,
        &name,
        "SystemAssignedReported",
    )
    .await;
    assert_eq!(status, "True");
    let principal = obj.data["status"]["principalId"]
        .as_str()
        .unwrap()
        .to_owned();
    let conditions = obj.data["status"]["conditions"].as_array().unwrap();
    let token = conditions
        .iter()
        .find(|c| c["type"] == "TokenIssued")
        .unwrap();
    assert_eq!(
        (token["status"].as_str(), token["reason"].as_str()),
        (Some("False"), Some("SystemAssignedIdentity"))
    );
    assert!(azure.emulator().authorized(
        &principal,
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
        &storage(),
        true
    ));
    assert!(
        Api::<Secret>::namespaced(client.clone(), &ns)
            .get_opt("cpu-cluster-identity")
            .await
            .unwrap()
            .is_none()
    );
    let _ = obj.name_any();
    cluster::delete_namespace(&client, &ns).await;
}

/// A ComputeIdentity with a token Secret for storage, minted through `training`.
fn storage_tokens(name: &str, secret: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "ComputeIdentity", "metadata": {"name": name},
        "spec": {
            "workspaceRef": {"name": "ml-workspace"}, "computeName": "cpu-cluster",
            "identity": {"type": "UserAssigned", "userAssignedIdentities": [uai()]}, "createIfMissing": {"location": "eastus"},
            "federation": {"serviceAccounts": ["training"]},
            "tokenSecret": {"name": secret, "audiences": ["https://storage.azure.com"]},
        },
    })
}

#[tokio::test]
async fn a_permanently_failing_object_backs_off_instead_of_looping() {
    let (client, azure, ns) = setup("ci-backoff").await;
    let operator =
        Operator::start_with(&ns, "lease-ci-backoff", "ci-backoff-0", &azure_args(&azure));
    // Entra has no such resource: every mint fails the same way (AADSTS500011).
    let mut object = storage_tokens("unknown", "unknown-tokens");
    object["spec"]["tokenSecret"]["audiences"] = serde_json::json!(["https://nothing.example"]);
    let name = apply(&client, &ns, object).await;
    let (_, message, first) = ready_reason(
        &client,
        "ComputeIdentity",
        &ns,
        &name,
        "AuthenticationFailed",
    )
    .await;
    assert!(message.contains("500011"), "{message}");
    // Counted from here: on a loaded machine the first failure may be seen a retry late.
    let attempts_before = first.data["status"]["failedAttempts"]
        .as_i64()
        .unwrap_or_default();
    let e = azure.emulator();
    let start = (e.requests("entra.token"), e.requests("arm."));
    tokio::time::sleep(Duration::from_secs(40)).await;
    let (entra, arm) = (
        e.requests("entra.token") - start.0,
        e.requests("arm.") - start.1,
    );
    // A failure every ~0.2 s would be about 200 of each; retries at ~30 s and ~60 s are a handful.
    assert!(entra <= 3, "{entra} token requests in 40 s");
    assert!(arm <= 12, "{arm} ARM requests in 40 s");
    let api = cluster::dynamic_api(&client, &kind("ComputeIdentity"), &ns);
    let status = api.get(&name).await.unwrap().data["status"].clone();
    let attempts = status["failedAttempts"].as_i64().unwrap_or_default();
    assert!(
        attempts >= 1 && attempts - attempts_before <= 2,
        "{attempts_before} attempts, then {status}"
    );
    let next = status["nextRetryTime"]
        .as_str()
        .expect("the next retry time is in status");
    assert!(next > jiff::Timestamp::now().to_string().as_str(), "{next}");
    assert!(!operator.logs().contains("panicked"));
    cluster::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn a_tampered_token_secret_is_repaired_not_believed() {
    let (client, azure, ns) = setup("ci-tamper").await;
    let operator = Operator::start_with(&ns, "lease-ci-tamper", "ci-tamper-0", &azure_args(&azure));
    let name = apply(&client, &ns, storage_tokens("tampered", "tampered-tokens")).await;
    ready_reason(&client, "ComputeIdentity", &ns, &name, "TokensIssued").await;
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let api = cluster::dynamic_api(&client, &kind("ComputeIdentity"), &ns);
    let real_exp = |s: &Secret| {
        let token = String::from_utf8(
            s.data.as_ref().unwrap()["storage.azure.com.token"]
                .0
                .clone(),
        )
        .unwrap();
        azure
            .emulator()
            .verify_token(&token)
            .expect("a token of the emulator")
            .exp
    };
    let edits: [(&str, serde_json::Value); 5] = [
        (
            "expires-at in 9999",
            serde_json::json!({"metadata": {"annotations": {"amlidentity.io/expires-at": "9999-12-01T00:00:00Z"}}}),
        ),
        (
            "renewal-time in 9999",
            serde_json::json!({"metadata": {"annotations": {"amlidentity.io/renewal-time": "9999-12-01T00:00:00Z"}}}),
        ),
        (
            "garbage",
            serde_json::json!({"metadata": {"annotations": {"amlidentity.io/expires-at": "soon", "amlidentity.io/renewal-time": "-1"}}}),
        ),
        (
            "a token replaced",
            serde_json::json!({"stringData": {"storage.azure.com.token": "x.eyJleHAiOjI1MzQwMjMwMDc5OX0.y"}}),
        ),
        (
            "a token deleted",
            serde_json::json!({"data": {"storage.azure.com.token": null}}),
        ),
    ];
    for (what, edit) in edits {
        let before = secrets.get("tampered-tokens").await.unwrap();
        secrets
            .patch(
                "tampered-tokens",
                &PatchParams::default(),
                &Patch::Merge(edit),
            )
            .await
            .unwrap();
        // The edit brings the owner back: it re-mints and writes what is true.
        let repaired = cluster::wait_until(
            Duration::from_secs(30),
            &format!("the Secret repaired after {what}"),
            || {
                let secrets = secrets.clone();
                let before = before.resource_version();
                async move {
                    let s = secrets.get("tampered-tokens").await.ok()?;
                    let annotations = s.metadata.annotations.clone().unwrap_or_default();
                    let token = s.data.as_ref()?.get("storage.azure.com.token")?.0.clone();
                    (s.resource_version() != before
                        && annotations
                            .get("amlidentity.io/expires-at")
                            .is_some_and(|a| !a.starts_with("9999") && a != "soon")
                        && !String::from_utf8(token).ok()?.starts_with("x."))
                    .then_some(s)
                }
            },
        )
        .await;
        let exp = real_exp(&repaired);
        let annotated =
            repaired.metadata.annotations.clone().unwrap()["amlidentity.io/expires-at"].clone();
        assert_eq!(
            annotated,
            aml_identity_operator::renewal::rfc3339(exp),
            "{what}"
        );
        let status = api.get(&name).await.unwrap().data["status"].clone();
        assert_eq!(
            status["expiresAt"], annotated,
            "status tells the truth after {what}"
        );
        // The gauge is set after the Secret is written: wait (bounded) for it to catch up.
        let gauge = cluster::wait_until(
            Duration::from_secs(10),
            &format!("the metric to tell the truth after {what}"),
            || {
                let operator = &operator;
                async move {
                    let gauge = operator
                        .metric_sum("aml_identity_operator_credential_expiry_timestamp_seconds{kind=\"ComputeIdentity\"")
                        .await;
                    (gauge == Some(exp as f64)).then_some(gauge)
                }
            },
        )
        .await;
        assert_eq!(gauge, Some(exp as f64), "{what}");
    }
    let events = Api::<Event>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        events.items.iter().any(|e| e
            .note
            .as_deref()
            .is_some_and(|n| n.contains("expires-at annotation does not match"))),
        "the TokenIssued Event says why it re-minted"
    );
    assert!(!operator.logs().contains("panicked"));
    cluster::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn tokens_are_renewed_before_they_expire() {
    // Tokens that live 30 s: the default renewal (two thirds of the lifetime) comes after ~20 s.
    let (client, azure, ns) = setup_with_lifetime("ci-renew", 30).await;
    let _operator = Operator::start_with(&ns, "lease-ci-renew", "ci-renew-0", &azure_args(&azure));
    let name = apply(
        &client,
        &ns,
        storage_tokens("renewing", "renewing-identity"),
    )
    .await;
    ready_reason(&client, "ComputeIdentity", &ns, &name, "TokensIssued").await;
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let token_of = |s: &Secret| {
        String::from_utf8(
            s.data.as_ref().unwrap()["storage.azure.com.token"]
                .0
                .clone(),
        )
        .unwrap()
    };
    let first = secrets.get("renewing-identity").await.unwrap();
    let first_expiry: i64 = String::from_utf8(
        first.data.as_ref().unwrap()["storage.azure.com.expires-on"]
            .0
            .clone(),
    )
    .unwrap()
    .parse()
    .unwrap();
    let renewed = cluster::wait_until(Duration::from_secs(40), "a renewed token", || {
        let secrets = secrets.clone();
        let old = token_of(&first);
        async move {
            secrets
                .get("renewing-identity")
                .await
                .ok()
                .filter(|s| token_of(s) != old)
        }
    })
    .await;
    let now = jiff::Timestamp::now().as_second();
    assert!(
        now < first_expiry,
        "renewed {}s after the old token expired",
        now - first_expiry
    );
    let claims = azure
        .emulator()
        .verify_token(&token_of(&renewed))
        .expect("a valid new token");
    assert!(claims.exp > first_expiry);
    cluster::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn a_hundred_objects_sharing_an_identity_cause_one_token_request() {
    let (client, azure, ns) = setup("ci-many").await;
    let _operator = Operator::start_with(&ns, "lease-ci-many", "ci-many-0", &azure_args(&azure));
    apply(&client, &ns, storage_tokens("first", "first-identity")).await;
    let (_, _, first) =
        ready_reason(&client, "ComputeIdentity", &ns, "first", "TokensIssued").await;
    let client_id = first.data["status"]["clientId"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 0..99 {
        apply(
            &client,
            &ns,
            storage_tokens(&format!("shared-{i}"), &format!("shared-{i}-identity")),
        )
        .await;
    }
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    cluster::wait_until(Duration::from_secs(120), "100 token Secrets", || {
        let secrets = secrets.clone();
        async move {
            let list = secrets
                .list(
                    &ListParams::default()
                        .labels("app.kubernetes.io/managed-by=aml-identity-operator"),
                )
                .await
                .ok()?;
            (list.items.len() >= 100).then_some(())
        }
    })
    .await;
    let tokens: std::collections::BTreeSet<Vec<u8>> = secrets
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=aml-identity-operator"))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| s.data.unwrap()["storage.azure.com.token"].0.clone())
        .collect();
    assert_eq!(tokens.len(), 1, "every Secret carries the one shared token");
    assert_eq!(
        azure.emulator().counter(&format!(
            "entra.token:{client_id}:https://storage.azure.com"
        )),
        1,
        "one Entra request for 100 objects"
    );
    cluster::delete_namespace(&client, &ns).await;
}

/// `kubectl amlid` as a user runs it (the binary, with the user's kubeconfig): `status` shows the
/// verdict, the identity chain, the output Secret and the Events; `inspect secret` decodes the
/// token Secret without a byte of any token; `renew` makes the operator mint again.
#[tokio::test]
async fn the_kubectl_plugin_reports_inspects_and_renews() {
    let (client, azure, ns) = setup("ci-plugin").await;
    let _operator =
        Operator::start_with(&ns, "lease-ci-plugin", "ci-plugin-0", &azure_args(&azure));
    let name = apply(&client, &ns, storage_tokens("plugged", "plugged-tokens")).await;
    ready_reason(&client, "ComputeIdentity", &ns, &name, "TokensIssued").await;
    use support::plugin::amlid;

    let (ok, table, err) = amlid(&["status", "-n", &ns]);
    assert!(ok, "{err}");
    let row = table
        .lines()
        .find(|l| l.contains("plugged"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.starts_with("ComputeIdentity")
            && row.contains("True")
            && row.contains("TokensIssued")
            && row.contains("in "),
        "{table}"
    );
    assert!(
        table.contains("Workspace") && table.contains("AzureCredential"),
        "{table}"
    );

    let (ok, detail, err) = amlid(&["status", "-n", &ns, "amlci/plugged"]);
    assert!(ok, "{err}");
    for expected in [
        "Ready=True (TokensIssued)",
        &format!("spec.workspaceRef -> Workspace/{ns}/ml-workspace"),
        &format!("spec.credentialRef -> AzureCredential/{ns}/team-a: True (Authenticated)"),
        "plugged-tokens (Opaque)",
        "Events:",
    ] {
        assert!(detail.contains(expected), "{expected} not in:\n{detail}");
    }
    let (ok, json, _) = amlid(&[
        "status",
        "-n",
        &ns,
        "computeidentities",
        "plugged",
        "-o",
        "json",
    ]);
    assert!(ok);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let object = &report["objects"][0];
    assert_eq!(object["ready"], "True");
    assert!(
        object["expiresAt"].is_string() && !object["events"].as_array().unwrap().is_empty(),
        "{object}"
    );
    let (ok, yaml, _) = amlid(&["status", "-A", "ComputeIdentity", "-o", "yaml"]);
    assert!(ok);
    let all: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
    assert!(
        all["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["namespace"] == ns.as_str() && o["name"] == "plugged")
    );

    // inspect secret: the claims, never the token.
    let secret = Api::<Secret>::namespaced(client.clone(), &ns)
        .get("plugged-tokens")
        .await
        .unwrap();
    let token = String::from_utf8(
        secret.data.as_ref().unwrap()["storage.azure.com.token"]
            .0
            .clone(),
    )
    .unwrap();
    for format in ["text", "json", "yaml"] {
        let (ok, shown, err) = amlid(&[
            "inspect",
            "secret",
            "plugged-tokens",
            "-n",
            &ns,
            "-o",
            format,
        ]);
        assert!(ok, "{err}");
        assert!(
            shown.contains("https://storage.azure.com")
                && shown.contains("ComputeIdentity/plugged"),
            "{shown}"
        );
        for part in token.split('.') {
            assert!(
                !shown.contains(part),
                "inspect secret -o {format} printed part of the token:\n{shown}"
            );
        }
    }

    // renew: a new token is minted.
    let (ok, said, err) = amlid(&["renew", "-n", &ns, "computeidentity/plugged"]);
    assert!(
        ok && said.contains(&format!("ComputeIdentity {ns}/plugged")),
        "{said}{err}"
    );
    cluster::wait_until(
        std::time::Duration::from_secs(30),
        "a renewed token",
        || {
            let client = client.clone();
            let (ns, token) = (ns.clone(), token.clone());
            async move {
                let s = Api::<Secret>::namespaced(client, &ns)
                    .get("plugged-tokens")
                    .await
                    .ok()?;
                let now = String::from_utf8(s.data.as_ref()?["storage.azure.com.token"].0.clone())
                    .ok()?;
                (now != token).then_some(())
            }
        },
    )
    .await;
    let (ok, said, _) = amlid(&["renew", "-n", &ns, "datastore", "--all"]);
    assert!(ok && said.contains("No objects matched"), "{said}");

    // Mistakes get a message saying what to do.
    let (ok, _, err) = amlid(&["renew", "-n", &ns, "workspace/ml-workspace"]);
    assert!(!ok && err.contains("writes nothing that expires"), "{err}");
    let (ok, _, err) = amlid(&["status", "-n", &ns, "certificates"]);
    assert!(!ok && err.contains("computeidentity"), "{err}");
    let (ok, _, err) = amlid(&["renew", "-n", &ns, "amlci"]);
    assert!(!ok && err.contains("-l SELECTOR or --all"), "{err}");
    cluster::delete_namespace(&client, &ns).await;
}

/// The per-object series the chart's alerts read: `ready` is 1 for a Ready object and 0 for a
/// refused one, the expiry is exported while a Secret holds credentials, and every series of an
/// object leaves with it — also for an object that never got the finalizer (an invalid spec),
/// whose series would otherwise alert for ever.
#[tokio::test]
async fn per_object_metrics_follow_the_object_and_leave_with_it() {
    let (client, azure, ns) = setup("ci-metrics").await;
    let operator =
        Operator::start_with(&ns, "lease-ci-metrics", "ci-metrics-0", &azure_args(&azure));
    let good = apply(&client, &ns, storage_tokens("measured", "measured-tokens")).await;
    let mut invalid = storage_tokens("refused", "refused-tokens");
    // A rule only the operator enforces here (the 1.20 API server runs no CEL).
    invalid["spec"]["identity"] = serde_json::json!({"type": "SystemAssigned"});
    let bad = apply(&client, &ns, invalid).await;
    ready_reason(&client, "ComputeIdentity", &ns, &good, "TokensIssued").await;
    ready_reason(&client, "ComputeIdentity", &ns, &bad, "InvalidSpec").await;
    let series = |text: &str, metric: &str, name: &str| -> Option<f64> {
        let labels = format!("kind=\"ComputeIdentity\",namespace=\"{ns}\",name=\"{name}\"");
        text.lines()
            .find(|l| l.starts_with(&format!("{metric}{{")) && l.contains(&labels))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    };
    let text = cluster::wait_until(Duration::from_secs(20), "the per-object series", || async {
        let text = operator.metrics().await?;
        (series(&text, "aml_identity_operator_ready", "refused").is_some()
            && series(&text, "aml_identity_operator_ready", "measured").is_some())
        .then_some(text)
    })
    .await;
    assert_eq!(
        series(&text, "aml_identity_operator_ready", "measured"),
        Some(1.0)
    );
    assert_eq!(
        series(&text, "aml_identity_operator_ready", "refused"),
        Some(0.0)
    );
    let expiry = series(
        &text,
        "aml_identity_operator_credential_expiry_timestamp_seconds",
        "measured",
    )
    .expect("the expiry of the token Secret");
    assert!(expiry > jiff::Timestamp::now().as_second() as f64);
    assert!(
        series(
            &text,
            "aml_identity_operator_credential_expiry_timestamp_seconds",
            "refused"
        )
        .is_none()
    );

    for name in [&good, &bad] {
        delete_and_wait(&client, "ComputeIdentity", &ns, name).await;
    }
    cluster::wait_until(
        Duration::from_secs(20),
        "the deleted objects' series to go",
        || async {
            let text = operator.metrics().await?;
            let left: Vec<&str> = text
                .lines()
                .filter(|l| {
                    l.starts_with("aml_identity_operator_")
                        && l.contains(&format!("namespace=\"{ns}\""))
                        && l.contains("kind=\"ComputeIdentity\"")
                })
                .collect();
            left.is_empty().then_some(())
        },
    )
    .await;
    cluster::delete_namespace(&client, &ns).await;
}
