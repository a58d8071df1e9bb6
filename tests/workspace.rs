//! The Workspace controller end to end against the emulator: Manage creates the workspace with its
//! identity, ensures the role table and writes config.json, without rewriting what has not drifted;
//! Adopt only reads; Denied credentials never reach Entra ID; deleting with `Delete` cleans up.

mod support;

use std::time::Duration;

use aml_identity_emulator::Seed;
use aml_identity_emulator::state::{AccessPolicy, UserAssignedIdentity, Vault};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use support::azure::*;
use support::cluster::{self, Operator};
use support::e2e::*;

const UAI_PRINCIPAL: &str = "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a";

fn rg() -> String {
    format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}")
}

fn uai() -> String {
    format!(
        "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-mlw-team-a",
        rg()
    )
}

/// Changes an annotation of the object: one more reconcile, nothing else changed.
async fn touch(api: &Api<kube::api::DynamicObject>, name: &str, value: &str) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"touch": value}}})),
    )
    .await
    .unwrap();
}

fn vault() -> String {
    format!("{}/providers/Microsoft.KeyVault/vaults/kv-mlw-team-a", rg())
}

fn workspace(name: &str, management: &str, deletion: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "Workspace", "metadata": {"name": name},
        "spec": {
            "credentialRef": {"name": "team-a"},
            "subscriptionId": SUBSCRIPTION, "resourceGroup": RESOURCE_GROUP, "workspaceName": name,
            "location": "eastus", "management": management, "deletionPolicy": deletion,
            "identity": {"type": "UserAssigned", "userAssignedIdentities": [uai()], "primaryUserAssignedIdentity": uai()},
            "associatedResources": {
                "storageAccount": format!("{}/providers/Microsoft.Storage/storageAccounts/stmlwteama", rg()),
                "keyVault": format!("{}/providers/Microsoft.KeyVault/vaults/kv-mlw-team-a", rg()),
            },
            "roleAssignments": "Ensure",
            "configMapName": format!("{name}-config"),
        },
    })
}

async fn start(prefix: &str) -> (kube::Client, Azure, String, Operator) {
    let client = cluster::client().await;
    cluster::install_crds(&client).await;
    let azure = Azure::start(vec![]).await;
    azure
        .emulator()
        .seed(Seed {
            user_assigned_identities: vec![UserAssignedIdentity {
                id: uai(),
                location: "eastus".into(),
                tenant_id: TENANT.into(),
                client_id: "6e3c1b2a-9d8f-4e7a-b6c5-d4e3f2a1b0c9".into(),
                principal_id: UAI_PRINCIPAL.into(),
                tags: Default::default(),
                federated_credentials: vec![],
            }],
            // The workspace's vault, authorizing with Azure RBAC.
            vaults: vec![Vault {
                id: vault(),
                tenant_id: TENANT.into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap();
    let ns = cluster::namespace(&client, prefix).await;
    let operator = Operator::start_with(
        &ns,
        &format!("lease-{prefix}"),
        &format!("{prefix}-0"),
        &azure_args(&azure),
    );
    (client, azure, ns, operator)
}

#[tokio::test]
async fn manage_creates_the_workspace_grants_its_roles_and_exports_config_json() {
    let (client, azure, ns, operator) = start("ws-manage").await;
    azure.grant(&rg(), "Owner", APP_OBJECT_ID);
    service_principal_credential(&client, &ns).await;
    let name = apply(&client, &ns, workspace("mlw-team-a", "Manage", "Delete")).await;

    let (status, message, obj) =
        ready_reason(&client, "Workspace", &ns, &name, "WorkspaceReady").await;
    assert_eq!(status, "True", "{message}");
    let workspace_id = obj.data["status"]["workspaceId"]
        .as_str()
        .expect("workspace GUID")
        .to_owned();
    assert!(
        obj.data["status"]["mlflowTrackingUri"]
            .as_str()
            .unwrap()
            .starts_with("azureml://")
    );

    // The role table of the AML docs, for the primary user-assigned identity.
    let storage = format!(
        "{}/providers/Microsoft.Storage/storageAccounts/stmlwteama",
        rg()
    );
    let vault = format!("{}/providers/Microsoft.KeyVault/vaults/kv-mlw-team-a", rg());
    let ws_id = format!(
        "{}/providers/Microsoft.MachineLearningServices/workspaces/{name}",
        rg()
    );
    let e = azure.emulator();
    assert!(e.authorized(
        UAI_PRINCIPAL,
        "Microsoft.MachineLearningServices/workspaces/write",
        &ws_id,
        false
    ));
    assert!(e.authorized(
        UAI_PRINCIPAL,
        "Microsoft.Storage/storageAccounts/write",
        &storage,
        false
    ));
    assert!(e.authorized(
        UAI_PRINCIPAL,
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
        &storage,
        true
    ));
    assert!(e.authorized(
        UAI_PRINCIPAL,
        "Microsoft.KeyVault/vaults/secrets/getSecret/action",
        &vault,
        true
    ));

    let config = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get(&format!("{name}-config"))
        .await
        .unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&config.data.unwrap()["config.json"]).unwrap();
    assert_eq!(
        (
            json["subscription_id"].as_str(),
            json["resource_group"].as_str(),
            json["workspace_name"].as_str()
        ),
        (
            Some(SUBSCRIPTION),
            Some(RESOURCE_GROUP),
            Some(name.as_str())
        )
    );
    assert_eq!(json["workspace_id"], workspace_id.as_str());
    assert_eq!(
        config.metadata.labels.unwrap()["app.kubernetes.io/managed-by"],
        "aml-identity-operator"
    );
    assert_eq!(
        config.metadata.owner_references.unwrap()[0].controller,
        Some(true)
    );

    // Another reconcile (an annotation change) reads but does not write the unchanged workspace.
    let puts = azure.emulator().counter("arm.PUT.workspaces");
    assert_eq!(puts, 1);
    let api = cluster::dynamic_api(&client, &kind("Workspace"), &ns);
    touch(&api, &name, "1").await;
    let gets = azure.emulator().counter("arm.GET.workspaces");
    cluster::wait_until(Duration::from_secs(20), "another reconcile", || async {
        (azure.emulator().counter("arm.GET.workspaces") > gets).then_some(())
    })
    .await;
    assert_eq!(
        azure.emulator().counter("arm.PUT.workspaces"),
        1,
        "no drift, no PUT"
    );

    // Deleting with deletionPolicy Delete removes the workspace and the grants the operator made.
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    cluster::wait_until(
        Duration::from_secs(30),
        "the Workspace object to go",
        || {
            let api = api.clone();
            let name = name.clone();
            async move {
                matches!(api.get(&name).await, Err(kube::Error::Api(s)) if s.code == 404)
                    .then_some(())
            }
        },
    )
    .await;
    assert!(!azure.emulator().authorized(
        UAI_PRINCIPAL,
        "Microsoft.KeyVault/vaults/secrets/getSecret/action",
        &vault,
        true
    ));
    assert!(azure.emulator().counter("arm.DELETE.workspaces") >= 1);
    assert!(!operator.logs().contains(APP_SECRET));
    let arm_ok = operator
        .metric_sum("aml_identity_operator_azure_requests_total{service=\"arm\",code=\"200\"}")
        .await
        .unwrap();
    let entra_ok = operator
        .metric_sum("aml_identity_operator_azure_requests_total{service=\"entra\",code=\"200\"}")
        .await
        .unwrap();
    assert!(
        arm_ok >= 2.0 && entra_ok >= 1.0,
        "Azure requests are counted by service and status: arm {arm_ok}, entra {entra_ok}"
    );
    assert_no_leaks(&client, &azure, &operator, &ns, &[APP_SECRET]).await;
    cluster::delete_namespace(&client, &ns).await;
}

/// A vault that authorizes with access policies instead of Azure RBAC.
fn access_policy_vault(policies: Vec<AccessPolicy>) -> Seed {
    Seed {
        vaults: vec![Vault {
            id: vault(),
            tenant_id: TENANT.into(),
            secrets: [("storage-conn".to_owned(), "s3cr3t".to_owned())].into(),
            enable_rbac_authorization: false,
            access_policies: policies,
        }],
        ..Default::default()
    }
}

fn policy(object_id: &str, secrets: &[&str]) -> AccessPolicy {
    AccessPolicy {
        tenant_id: TENANT.into(),
        object_id: object_id.into(),
        permissions: [(
            "secrets".to_owned(),
            secrets.iter().map(|s| s.to_string()).collect(),
        )]
        .into(),
    }
}

async fn vault_policies(azure: &Azure) -> Vec<AccessPolicy> {
    let arm = azure.arm(azure.app_credential("check"));
    let vault = arm
        .get::<serde_json::Value>(&vault(), "2025-05-01")
        .await
        .unwrap()
        .unwrap();
    serde_json::from_value(vault["properties"]["accessPolicies"].clone()).unwrap()
}

/// On a vault without Azure RBAC the workspace identity gets what the AML documents ask there —
/// an access policy with every permission but purge — instead of Key Vault Administrator; an
/// insufficient entry someone else made is reported with the exact grant, never changed; status
/// lists the associated resources as ARM reports them; deleting removes only the operator's entry.
#[tokio::test(flavor = "multi_thread")]
async fn an_access_policy_vault_gets_an_access_policy_instead_of_a_role() {
    let (client, azure, ns, operator) = start("ws-policy").await;
    azure.grant(&rg(), "Owner", APP_OBJECT_ID);
    let someone = "0a1b2c3d-4e5f-4061-8273-948596a7b8c9";
    // The identity already has a policy someone else made, allowing too little.
    azure
        .emulator()
        .seed(access_policy_vault(vec![
            policy(someone, &["get", "list"]),
            policy(UAI_PRINCIPAL, &["get"]),
        ]))
        .unwrap();
    service_principal_credential(&client, &ns).await;
    let name = apply(&client, &ns, workspace("mlw-team-a", "Manage", "Delete")).await;
    let (_, message, _) =
        ready_reason(&client, "Workspace", &ns, &name, "AccessPolicyIncomplete").await;
    assert!(
        message.contains(&format!(
            "az keyvault set-policy --name kv-mlw-team-a --object-id {UAI_PRINCIPAL} --key-permissions get"
        )) && message.contains("secrets: list, set"),
        "{message}"
    );
    assert!(!message.contains("purge"), "{message}");
    assert_eq!(
        vault_policies(&azure)
            .await
            .iter()
            .find(|p| p.object_id == UAI_PRINCIPAL)
            .unwrap()
            .permissions["secrets"],
        vec!["get"],
        "an entry the operator did not make is left as it is"
    );
    assert_eq!(azure.emulator().counter("arm.PUT.accessPolicies"), 0);

    // Without that entry, the operator adds its own.
    azure
        .emulator()
        .seed(access_policy_vault(vec![policy(someone, &["get", "list"])]))
        .unwrap();
    let api = cluster::dynamic_api(&client, &kind("Workspace"), &ns);
    touch(&api, &name, "1").await;
    let (status, message, obj) =
        ready_reason(&client, "Workspace", &ns, &name, "WorkspaceReady").await;
    assert_eq!(status, "True", "{message}");
    let roles = obj.data["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "RoleAssignmentsReady")
        .unwrap()
        .clone();
    assert!(
        roles["message"]
            .as_str()
            .unwrap()
            .contains("access policies"),
        "{roles}"
    );
    let ours = vault_policies(&azure)
        .await
        .into_iter()
        .find(|p| p.object_id == UAI_PRINCIPAL)
        .expect("an access policy for the workspace identity");
    for kind_name in ["keys", "secrets", "certificates"] {
        let list = &ours.permissions[kind_name];
        assert!(list.contains(&"get".to_owned()), "{kind_name}: {list:?}");
        assert!(
            !list.iter().any(|p| p == "purge" || p == "all"),
            "{kind_name}: {list:?}"
        );
    }
    let e = azure.emulator();
    let on_vault: Vec<String> = e
        .role_assignments()
        .into_iter()
        .filter(|r| r.principal_id == UAI_PRINCIPAL && r.scope.eq_ignore_ascii_case(&vault()))
        .map(|r| r.role_definition_id)
        .collect();
    assert!(
        on_vault
            .iter()
            .any(|r| r.ends_with("b24988ac-6180-42a0-ab88-20f7382dd24c")),
        "Contributor on the vault: {on_vault:?}"
    );
    assert!(
        !on_vault
            .iter()
            .any(|r| r.ends_with("00482a5a-887f-4fb3-b363-3b7fe8e74483")),
        "no Key Vault Administrator on an access-policy vault: {on_vault:?}"
    );
    let recorded = obj.data["status"]["azureResources"].to_string();
    assert!(recorded.contains("VaultAccessPolicy"), "{recorded}");
    assert_eq!(
        obj.data["status"]["associatedResources"]["keyVault"],
        vault().as_str()
    );
    assert!(
        obj.data["status"]["associatedResources"]["storageAccount"]
            .as_str()
            .unwrap()
            .ends_with("/storageAccounts/stmlwteama")
    );
    assert!(
        obj.data["status"]["mlflowTrackingUri"]
            .as_str()
            .unwrap()
            .starts_with("azureml://")
    );
    // Settled: another pass reads the vault but adds nothing.
    let puts = e.counter("arm.PUT.accessPolicies");
    assert_eq!(puts, 1);
    touch(&api, &name, "2").await;
    let reads = e.counter("arm.GET.vaults");
    cluster::wait_until(Duration::from_secs(20), "another reconcile", || async {
        (e.counter("arm.GET.vaults") > reads).then_some(())
    })
    .await;
    assert_eq!(e.counter("arm.PUT.accessPolicies"), puts);

    // A ComputeIdentity of the same identity needing get on secrets there shares the entry: it
    // holds it too, and its deletion leaves it to the Workspace.
    apply(&client, &ns, serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "ComputeIdentity", "metadata": {"name": "same-identity"},
        "spec": {"workspaceRef": {"name": name}, "computeName": "cpu-cluster",
                 "identity": {"type": "UserAssigned", "userAssignedIdentities": [uai()]},
                 "grants": {"keyVaultSecretsUser": [vault()]}},
    }))
    .await;
    let (_, message, ci) = ready_reason(
        &client,
        "ComputeIdentity",
        &ns,
        "same-identity",
        "IdentityReady",
    )
    .await;
    assert!(
        ci.data["status"]["azureResources"]
            .to_string()
            .contains("VaultAccessPolicy"),
        "{message}: {}",
        ci.data["status"]
    );
    delete_and_wait(&client, "ComputeIdentity", &ns, "same-identity").await;
    assert!(
        vault_policies(&azure)
            .await
            .iter()
            .any(|p| p.object_id == UAI_PRINCIPAL),
        "the Workspace still holds the entry"
    );
    assert_eq!(
        e.counter("arm.PUT.accessPolicies"),
        puts,
        "shared, not written again"
    );

    // Deleting removes the operator's entry and leaves the other.
    delete_and_wait(&client, "Workspace", &ns, &name).await;
    let left = vault_policies(&azure).await;
    assert_eq!(left, vec![policy(someone, &["get", "list"])]);
    assert_no_leaks(&client, &azure, &operator, &ns, &[APP_SECRET]).await;
    cluster::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn adopt_reports_a_missing_workspace_and_a_conflicting_config_map() {
    let (client, azure, ns, _operator) = start("ws-adopt").await;
    azure.grant(&rg(), "Reader", APP_OBJECT_ID);
    service_principal_credential(&client, &ns).await;
    let name = apply(&client, &ns, workspace("mlw-absent", "Adopt", "Retain")).await;
    let (_, message, _) = ready_reason(&client, "Workspace", &ns, &name, "WorkspaceNotFound").await;
    assert!(
        message.contains("mlw-absent") && message.contains("management: Manage"),
        "{message}"
    );
    assert_eq!(
        azure.emulator().counter("arm.PUT.workspaces"),
        0,
        "Adopt never writes"
    );

    // An existing workspace is adopted; a ConfigMap someone else owns is not overwritten.
    let existing = format!(
        "{}/providers/Microsoft.MachineLearningServices/workspaces/mlw-existing",
        rg()
    );
    azure
        .emulator()
        .seed(Seed { resources: vec![serde_json::json!({"id": existing, "name": "mlw-existing", "location": "eastus", "properties": {"workspaceId": "0f0e0d0c-0b0a-4909-8807-060504030201", "provisioningState": "Succeeded"}})], ..Default::default() })
        .unwrap();
    let foreign: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": "mlw-existing-config"}, "data": {"config.json": "{}"}})).unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    let mut adopted = workspace("mlw-existing", "Adopt", "Retain");
    adopted["spec"].as_object_mut().unwrap().remove("identity");
    adopted["spec"]["roleAssignments"] = "None".into();
    let name = apply(&client, &ns, adopted).await;
    let (_, message, obj) = ready_reason(&client, "Workspace", &ns, &name, "TargetConflict").await;
    assert!(message.contains("mlw-existing-config"), "{message}");
    assert_eq!(
        obj.data["status"]["workspaceId"],
        "0f0e0d0c-0b0a-4909-8807-060504030201"
    );
    let untouched = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get("mlw-existing-config")
        .await
        .unwrap();
    assert_eq!(untouched.data.unwrap()["config.json"], "{}");
    cluster::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn a_cluster_credential_that_does_not_admit_the_namespace_is_denied_before_any_token_request()
{
    let (client, azure, ns, _operator) = start("ws-denied").await;
    secret(&client, &ns, "aml-platform-sp", "clientSecret", APP_SECRET).await;
    let credential = format!("platform-{}", cluster::unique());
    apply(&client, &ns, serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "ClusterAzureCredential",
        "metadata": {"name": credential},
        "spec": {"tenantId": TENANT, "servicePrincipal": {"clientId": APP_CLIENT_ID, "clientSecretRef": {"name": "aml-platform-sp", "key": "clientSecret"}},
                 "allowedNamespaces": {"names": ["some-other-team"]}, "allowedScopes": [rg()]},
    }))
    .await;
    let mut ws = workspace("mlw-team-a", "Manage", "Retain");
    ws["spec"]["credentialRef"] =
        serde_json::json!({"kind": "ClusterAzureCredential", "name": credential});
    let name = apply(&client, &ns, ws).await;
    let (_, message, _) = ready_reason(&client, "Workspace", &ns, &name, "Denied").await;
    assert!(
        message.contains(&ns) && message.contains("allowedNamespaces"),
        "{message}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        azure.emulator().counter("entra.token"),
        0,
        "a denied reference must not reach Entra ID"
    );

    // Admitting the namespace is noticed at once (the Workspace watches its credential), and the
    // Workspace goes on to Azure — where this application holds no role yet.
    let api = Api::<aml_identity_operator::api::ClusterAzureCredential>::all(client.clone());
    api.patch(
        &credential,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"allowedNamespaces": {"names": [ns]}}})),
    )
    .await
    .unwrap();
    let (_, message, _) = ready_reason(&client, "Workspace", &ns, &name, "PermissionDenied").await;
    assert!(message.contains("AuthorizationFailed"), "{message}");
    let _ = Api::<aml_identity_operator::api::ClusterAzureCredential>::all(client.clone())
        .delete(&credential, &DeleteParams::default())
        .await;
    cluster::delete_namespace(&client, &ns).await;
}
