//! The RegistryConnection controller end to end: a compute identity's AAD token exchanged at the
//! registry (only once it holds AcrPull) for a refresh token in a dockerconfigjson Secret that the
//! registry's token endpoint accepts, attached to a ServiceAccount, with the workspace connection;
//! and the admin-user variant.

mod support;

use aml_identity_emulator::Seed;
use aml_identity_emulator::state::Registry;
use base64::Engine;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Client;
use kube::api::{Api, PostParams};
use support::azure::*;
use support::cluster::{self, Operator};
use support::e2e::*;

const LOGIN_SERVER: &str = "crmlwteama.azurecr.io";

fn rg() -> String {
    format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}")
}

fn workspace_id() -> String {
    format!(
        "{}/providers/Microsoft.MachineLearningServices/workspaces/mlw-team-a",
        rg()
    )
}

fn registry_id() -> String {
    format!(
        "{}/providers/Microsoft.ContainerRegistry/registries/crmlwteama",
        rg()
    )
}

async fn setup(prefix: &str, admin_user: bool) -> (Client, Azure, String, Operator) {
    let client = cluster::client().await;
    cluster::install_crds(&client).await;
    let ca = kube::config::Kubeconfig::read().unwrap().clusters[0]
        .cluster
        .as_ref()
        .unwrap()
        .certificate_authority
        .clone()
        .unwrap();
    let azure = Azure::start(vec![ca.into()]).await;
    azure.grant(&rg(), "Owner", APP_OBJECT_ID);
    azure
        .emulator()
        .seed(Seed {
            registries: vec![Registry { id: registry_id(), login_server: LOGIN_SERVER.into(), admin_user_enabled: admin_user }],
            resources: vec![
                serde_json::json!({"id": workspace_id(), "name": "mlw-team-a", "location": "eastus", "properties": {"provisioningState": "Succeeded"}}),
                serde_json::json!({"id": format!("{}/computes/cpu-cluster", workspace_id()), "name": "cpu-cluster", "location": "eastus", "identity": {"type": "None"}, "properties": {"computeType": "AmlCompute"}}),
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
    let mut args = azure_args(&azure);
    args.push("--azure-resolve".into());
    args.push(format!("{LOGIN_SERVER}={}", azure.running.https_addr));
    let operator = Operator::start_with(
        &ns,
        &format!("lease-{prefix}"),
        &format!("{prefix}-0"),
        &args,
    );
    (client, azure, ns, operator)
}

fn connection(name: &str, acr_pull: bool) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "RegistryConnection", "metadata": {"name": name},
        "spec": {
            "workspaceRef": {"name": "ml-workspace"},
            "registry": {"loginServer": LOGIN_SERVER, "resourceId": registry_id()},
            "auth": {"type": "ManagedIdentity", "managedIdentity": {"computeIdentityRef": {"name": "cpu-cluster"}}},
            "workspaceConnection": {"name": "workspace-acr"},
            "grants": {"acrPull": acr_pull},
            "target": {"secretName": format!("{name}-pull"), "serviceAccounts": ["training"]},
        },
    })
}

async fn dockerconfig(client: &Client, ns: &str, name: &str) -> (String, String) {
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    assert_eq!(
        secret.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    let config: serde_json::Value =
        serde_json::from_slice(&secret.data.unwrap()[".dockerconfigjson"].0).unwrap();
    let auth = &config["auths"][LOGIN_SERVER];
    let basic = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(auth["auth"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        basic,
        format!(
            "{}:{}",
            auth["username"].as_str().unwrap(),
            auth["password"].as_str().unwrap()
        )
    );
    (
        auth["username"].as_str().unwrap().to_owned(),
        auth["password"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn a_compute_identity_pulls_once_it_holds_acr_pull() {
    let (client, azure, ns, operator) = setup("rc-mi", false).await;
    let uai = format!(
        "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-cpu-cluster",
        rg()
    );
    apply(&client, &ns, serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "ComputeIdentity", "metadata": {"name": "cpu-cluster"},
        "spec": {"workspaceRef": {"name": "ml-workspace"}, "computeName": "cpu-cluster",
                 "identity": {"type": "UserAssigned", "userAssignedIdentities": [uai]}, "createIfMissing": {"location": "eastus"},
                 "federation": {"serviceAccounts": ["training"]}},
    }))
    .await;
    let (_, _, ci) = ready_reason(
        &client,
        "ComputeIdentity",
        &ns,
        "cpu-cluster",
        "IdentityReady",
    )
    .await;
    let client_id = ci.data["status"]["clientId"].as_str().unwrap().to_owned();

    // Without AcrPull the registry refuses the exchange, and the condition says so.
    let denied = apply(&client, &ns, connection("no-grant", false)).await;
    let (_, message, _) = ready_reason(
        &client,
        "RegistryConnection",
        &ns,
        &denied,
        "PermissionDenied",
    )
    .await;
    assert!(message.contains("AcrPull"), "{message}");

    let name = apply(&client, &ns, connection("workspace-registry", true)).await;
    let (status, message, obj) = ready_reason(
        &client,
        "RegistryConnection",
        &ns,
        &name,
        "PullSecretIssued",
    )
    .await;
    assert_eq!(status, "True", "{message}");
    let expires: jiff::Timestamp = obj.data["status"]["expiresAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let lifetime = expires.as_second() - jiff::Timestamp::now().as_second();
    assert!(
        (3 * 3600 - 120..=3 * 3600).contains(&lifetime),
        "renewed from the refresh token's own exp: {lifetime}s"
    );

    let (username, password) = dockerconfig(&client, &ns, "workspace-registry-pull").await;
    assert_eq!(username, "00000000-0000-0000-0000-000000000000");
    let mut transport = azure.transport.clone();
    transport
        .host_overrides
        .push((LOGIN_SERVER.into(), azure.running.https_addr));
    let registry_http = transport.client().unwrap();
    let pull = registry_http
        .get(format!("https://{LOGIN_SERVER}/oauth2/token"))
        .query(&[
            ("service", LOGIN_SERVER),
            ("scope", "repository:training/base:pull"),
        ])
        .basic_auth(&username, Some(&password))
        .send()
        .await
        .unwrap();
    assert_eq!(pull.status(), 200, "the registry accepts the pull Secret");

    let sa = Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .get("training")
        .await
        .unwrap();
    assert!(
        sa.image_pull_secrets
            .unwrap()
            .iter()
            .any(|p| p.name == "workspace-registry-pull")
    );
    let arm = azure.arm(azure.app_credential("test"));
    let conn: aml_identity_operator::azure::models::WorkspaceConnection = arm
        .post::<(), _>(
            &format!("{}/connections/workspace-acr/listsecrets", workspace_id()),
            "2025-12-01",
            None,
        )
        .await
        .unwrap()
        .body
        .unwrap();
    assert_eq!(conn.properties.auth_type, "ManagedIdentity");
    assert_eq!(
        conn.properties.credentials.unwrap()["clientId"],
        client_id.as_str()
    );
    assert!(!operator.logs().contains(&password));

    // The workspace connection goes with the object.
    delete_and_wait(&client, "RegistryConnection", &ns, &name).await;
    let gone: Option<aml_identity_operator::azure::models::WorkspaceConnection> = arm
        .get(
            &format!("{}/connections/workspace-acr", workspace_id()),
            "2025-12-01",
        )
        .await
        .unwrap();
    assert!(gone.is_none());
    cluster::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn the_admin_user_variant_reads_list_credentials() {
    let (client, _azure, ns, _operator) = setup("rc-admin", true).await;
    let name = apply(&client, &ns, serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "RegistryConnection", "metadata": {"name": "admin"},
        "spec": {
            "workspaceRef": {"name": "ml-workspace"},
            "registry": {"loginServer": LOGIN_SERVER, "resourceId": registry_id()},
            "auth": {"type": "AdminUser"},
            "target": {"secretName": "admin-pull"},
        },
    }))
    .await;
    ready_reason(
        &client,
        "RegistryConnection",
        &ns,
        &name,
        "PullSecretIssued",
    )
    .await;
    let (username, password) = dockerconfig(&client, &ns, "admin-pull").await;
    assert_eq!(username, "crmlwteama");
    assert_eq!(password.len(), 32);
    cluster::delete_namespace(&client, &ns).await;
}
