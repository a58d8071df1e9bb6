//! National and private clouds end to end: a credential in Azure US Government, and one with
//! `Custom` endpoints, drive a Workspace, a RegistryConnection whose service principal pulls and a
//! Datastore with a SAS — every call goes to that cloud's hosts (the public ones are not even
//! resolvable here), the ACR token is asked for the cloud's registry audience, the registry's
//! login suffix and the storage suffix are the cloud's, in the Secrets and in ARM.

mod support;

use aml_identity_emulator::state::Registry;
use aml_identity_emulator::{CustomCloud, Seed};
use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use support::azure::*;
use support::azurite;
use support::cluster::{self, Operator};
use support::e2e::*;

/// One cloud as a credential names it and as the emulator answers for it.
struct Case {
    prefix: &'static str,
    /// `cloud` (and `endpoints`) of the credential's spec.
    cloud: serde_json::Value,
    authority: &'static str,
    resource_manager: &'static str,
    registry_suffix: &'static str,
    registry_audience: &'static str,
    storage_suffix: &'static str,
    /// `--allowed-custom-cloud-hosts`, for a namespaced credential's custom endpoints.
    allowed_hosts: Option<&'static str>,
}

fn rg() -> String {
    format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}")
}

fn workspace_id() -> String {
    format!(
        "{}/providers/Microsoft.MachineLearningServices/workspaces/mlw-team-a",
        rg()
    )
}

async fn run(case: Case, azure: Azure) {
    let client = cluster::client().await;
    cluster::install_crds(&client).await;
    let login_server = format!("crmlwteama.{}", case.registry_suffix);
    let registry_id = format!(
        "{}/providers/Microsoft.ContainerRegistry/registries/crmlwteama",
        rg()
    );
    azure.grant(&rg(), "Owner", APP_OBJECT_ID);
    azure
        .emulator()
        .seed(Seed {
            registries: vec![Registry { id: registry_id.clone(), login_server: login_server.clone(), admin_user_enabled: false }],
            resources: vec![serde_json::json!({"id": workspace_id(), "name": "mlw-team-a", "location": "usgovvirginia", "properties": {"provisioningState": "Succeeded"}})],
            ..Default::default()
        })
        .unwrap();
    let ns = cluster::namespace(&client, case.prefix).await;
    secret(&client, &ns, "aml-platform-sp", "clientSecret", APP_SECRET).await;
    secret(&client, &ns, "account-key", "accountKey", azurite::KEY).await;
    let mut credential = serde_json::json!({"tenantId": TENANT, "servicePrincipal": {"clientId": APP_CLIENT_ID, "clientSecretRef": {"name": "aml-platform-sp", "key": "clientSecret"}}});
    for (key, value) in case.cloud.as_object().unwrap() {
        credential[key] = value.clone();
    }
    apply(&client, &ns, serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "AzureCredential", "metadata": {"name": "team-a"}, "spec": credential,
    }))
    .await;
    apply(&client, &ns, serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "Workspace", "metadata": {"name": "ml-workspace"},
        "spec": {"credentialRef": {"name": "team-a"}, "subscriptionId": SUBSCRIPTION, "resourceGroup": RESOURCE_GROUP, "workspaceName": "mlw-team-a"},
    }))
    .await;
    // Only this cloud's hosts lead to the emulator.
    let addr = azure.running.https_addr;
    let mut args = vec![
        "--azure-ca-bundle".to_owned(),
        azure.running.ca_path.display().to_string(),
        "--azure-resolve".into(),
        format!(
            "{}={addr},{}={addr},{login_server}={addr}",
            case.authority, case.resource_manager
        ),
    ];
    if let Some(hosts) = case.allowed_hosts {
        args.extend(["--allowed-custom-cloud-hosts".into(), hosts.into()]);
    }
    let operator = Operator::start_with(
        &ns,
        &format!("lease-{}", case.prefix),
        &format!("{}-0", case.prefix),
        &args,
    );

    let (status, message, _) =
        ready_reason(&client, "Workspace", &ns, "ml-workspace", "WorkspaceReady").await;
    assert_eq!(status, "True", "{message}");
    apply(&client, &ns, serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "RegistryConnection", "metadata": {"name": "registry"},
        "spec": {
            "workspaceRef": {"name": "ml-workspace"},
            "registry": {"loginServer": login_server, "resourceId": registry_id},
            "auth": {"type": "ServicePrincipal", "servicePrincipal": {"clientId": APP_CLIENT_ID, "clientSecretRef": {"name": "aml-platform-sp", "key": "clientSecret"}}},
            "target": {"secretName": "registry-pull"},
        },
    }))
    .await;
    apply(&client, &ns, serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "Datastore", "metadata": {"name": "training-data"},
        "spec": {
            "workspaceRef": {"name": "ml-workspace"}, "datastoreName": "training_data", "type": "AzureBlob",
            "accountName": "stmlwteama", "containerName": "training-data",
            "credentials": {"type": "AccountKey", "secretRef": {"name": "account-key", "key": "accountKey"}},
            "register": true,
            "podAccess": {"secretName": "training-data-access", "sas": {"permissions": "rl", "ttl": "1h"}},
        },
    }))
    .await;

    let (status, message, _) = ready_reason(
        &client,
        "RegistryConnection",
        &ns,
        "registry",
        "PullSecretIssued",
    )
    .await;
    assert_eq!(status, "True", "{message}");
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let pull = secrets.get("registry-pull").await.unwrap().data.unwrap();
    let config: serde_json::Value = serde_json::from_slice(&pull[".dockerconfigjson"].0).unwrap();
    let entry = &config["auths"][&login_server];
    let password = entry["password"].as_str().unwrap().to_owned();
    // The registry takes the refresh token, and the AAD token behind it was for this cloud's
    // registry audience.
    let registry_http = azure
        .transport
        .resolving(&login_server, addr)
        .client()
        .unwrap();
    let pulled = registry_http
        .get(format!("https://{login_server}/oauth2/token"))
        .query(&[
            ("service", login_server.as_str()),
            ("scope", "repository:training/base:pull"),
        ])
        .basic_auth(entry["username"].as_str().unwrap(), Some(&password))
        .send()
        .await
        .unwrap();
    assert_eq!(pulled.status(), 200, "the registry accepts the pull Secret");
    assert!(
        azure.emulator().counter(&format!(
            "entra.token:{APP_CLIENT_ID}:{}",
            case.registry_audience
        )) >= 1,
        "no token for {}: {:?}",
        case.registry_audience,
        azure.emulator().counters()
    );

    let (status, message, _) =
        ready_reason(&client, "Datastore", &ns, "training-data", "AccessIssued").await;
    assert_eq!(status, "True", "{message}");
    let access = secrets
        .get("training-data-access")
        .await
        .unwrap()
        .data
        .unwrap();
    let text = |k: &str| String::from_utf8(access[k].0.clone()).unwrap();
    assert_eq!(
        text("AZURE_STORAGE_ACCOUNT_URL"),
        format!("https://stmlwteama.blob.{}", case.storage_suffix)
    );
    let registered: serde_json::Value = azure
        .arm(azure.app_credential("check"))
        .get(
            &format!("{}/datastores/training_data", workspace_id()),
            "2025-12-01",
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        registered["properties"]["endpoint"], case.storage_suffix,
        "{registered}"
    );
    let basic = base64::engine::general_purpose::STANDARD.encode(&password);
    assert_no_leaks(
        &client,
        &azure,
        &operator,
        &ns,
        &[
            APP_SECRET,
            &password,
            &basic,
            azurite::KEY,
            &text("AZURE_STORAGE_SAS_TOKEN"),
        ],
    )
    .await;
    cluster::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn a_us_government_credential_uses_that_cloud_everywhere() {
    let azure = Azure::start(vec![]).await;
    run(
        Case {
            prefix: "cloud-usgov",
            cloud: serde_json::json!({"cloud": "AzureUSGovernment"}),
            authority: "login.microsoftonline.us",
            resource_manager: "management.usgovcloudapi.net",
            registry_suffix: "azurecr.us",
            registry_audience: "https://containerregistry.azure.net",
            storage_suffix: "core.usgovcloudapi.net",
            allowed_hosts: None,
        },
        azure,
    )
    .await;
}

#[tokio::test]
async fn custom_endpoints_are_used_everywhere_including_the_registry_audience() {
    let azure = Azure::start_configured(|config| {
        config.custom_cloud = Some(CustomCloud {
            resource_manager: "https://management.sovereign.example".into(),
            registry_audience: "https://containerregistry.sovereign.example".into(),
            hosts: vec![
                "login.sovereign.example".into(),
                "management.sovereign.example".into(),
                "*.azurecr.sovereign.example".into(),
            ],
        });
    })
    .await;
    run(
        Case {
            prefix: "cloud-custom",
            cloud: serde_json::json!({"cloud": "Custom", "endpoints": {
                "authorityHost": "https://login.sovereign.example",
                "resourceManager": "https://management.sovereign.example",
                "storageSuffix": "core.sovereign.example",
                "containerRegistrySuffix": "azurecr.sovereign.example",
                "containerRegistryAudience": "https://containerregistry.sovereign.example",
            }}),
            authority: "login.sovereign.example",
            resource_manager: "management.sovereign.example",
            registry_suffix: "azurecr.sovereign.example",
            registry_audience: "https://containerregistry.sovereign.example",
            storage_suffix: "core.sovereign.example",
            allowed_hosts: Some("sovereign.example"),
        },
        azure,
    )
    .await;
}
