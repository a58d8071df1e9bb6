//! The ARM client's long-running operations and list* calls against the emulator's AML, storage
//! and registry resources, with ARM's linked authorization for assigning identities.

mod support;

use aml_identity_emulator::Seed;
use aml_identity_emulator::state::{
    Registry as SeedRegistry, StorageAccount, UserAssignedIdentity,
};
use aml_identity_operator::azure::AzureError;
use aml_identity_operator::azure::models::ml_api_versions::*;
use aml_identity_operator::azure::models::*;
use serde_json::json;
use support::azure::*;

const UAI_CLIENT: &str = "6e3c1b2a-9d8f-4e7a-b6c5-d4e3f2a1b0c9";
const UAI_PRINCIPAL: &str = "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a";

fn uai_id() -> String {
    format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/{IDENTITY_RESOURCE_GROUP}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-mlw-team-a"
    )
}

async fn start() -> Azure {
    let azure = Azure::start(vec![]).await;
    azure
        .emulator()
        .seed(Seed {
            user_assigned_identities: vec![UserAssignedIdentity {
                id: uai_id(),
                location: "eastus".into(),
                tenant_id: TENANT.into(),
                client_id: UAI_CLIENT.into(),
                principal_id: UAI_PRINCIPAL.into(),
                tags: Default::default(),
                federated_credentials: vec![],
            }],
            ..Default::default()
        })
        .unwrap();
    azure.grant(&azure.resource_group_id(), "Contributor", APP_OBJECT_ID);
    azure
}

fn workspace_path(azure: &Azure) -> String {
    format!(
        "{}/providers/Microsoft.MachineLearningServices/workspaces/mlw-team-a",
        azure.resource_group_id()
    )
}

fn user_assigned_workspace() -> serde_json::Value {
    json!({
        "location": "eastus",
        "identity": {"type": "UserAssigned", "userAssignedIdentities": {uai_id(): {}}},
        "properties": {"friendlyName": "team a", "primaryUserAssignedIdentity": uai_id()},
    })
}

#[tokio::test]
async fn creating_a_workspace_follows_202_location_and_needs_the_right_to_assign_its_identity() {
    let azure = start().await;
    let arm = azure.arm(azure.app_credential("sp"));
    let path = workspace_path(&azure);

    // Contributor on the workspace's resource group is not enough to assign an identity kept elsewhere.
    let refused = arm
        .put_and_wait::<_, Workspace>(&path, MACHINE_LEARNING, &user_assigned_workspace())
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, AzureError::Arm { status: 403, code, .. } if code == "LinkedAuthorizationFailed"),
        "{refused:?}"
    );

    azure.grant(&uai_id(), "Managed Identity Operator", APP_OBJECT_ID);
    let workspace: Workspace = arm
        .put_and_wait(&path, MACHINE_LEARNING, &user_assigned_workspace())
        .await
        .unwrap();
    assert_eq!(
        workspace.properties.provisioning_state.as_deref(),
        Some("Succeeded")
    );
    assert!(
        workspace.properties.workspace_id.is_some()
            && workspace.properties.ml_flow_tracking_uri.is_some()
    );
    let identity = workspace.identity.unwrap();
    let assigned = identity.user_assigned_identities.values().next().unwrap();
    assert_eq!(
        (
            assigned.client_id.as_deref(),
            assigned.principal_id.as_deref()
        ),
        (Some(UAI_CLIENT), Some(UAI_PRINCIPAL))
    );
    assert!(
        azure.emulator().counter("arm.GET.operationResults") >= 3,
        "the Location was polled until done"
    );

    // A user-assigned workspace without its primary identity is refused as ARM does.
    let mut no_primary = user_assigned_workspace();
    no_primary["properties"]
        .as_object_mut()
        .unwrap()
        .remove("primaryUserAssignedIdentity");
    let error = arm
        .put_and_wait::<_, Workspace>(&path, MACHINE_LEARNING, &no_primary)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, AzureError::Arm { status: 400, .. }),
        "{error:?}"
    );

    // Associated resources that are not ids of their type are refused as AML refuses them.
    let rg = azure.resource_group_id();
    for (property, id) in [
        (
            "keyVault",
            format!("{rg}/providers/Microsoft.KeyVault/vaults/kv-mlw-team-a "),
        ),
        (
            "containerRegistry",
            format!("{rg}/providers/Microsoft.Storage/storageAccounts/stmlwteama"),
        ),
        ("storageAccount", "stmlwteama".to_string()),
    ] {
        let mut bad = user_assigned_workspace();
        bad["properties"][property] = id.clone().into();
        let error = arm
            .put_and_wait::<_, Workspace>(&path, MACHINE_LEARNING, &bad)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, AzureError::Arm { status: 400, message, .. } if message.contains(property)),
            "{property} = {id:?}: {error:?}"
        );
    }
    let mut good = user_assigned_workspace();
    good["properties"]["keyVault"] =
        format!("{rg}/providers/Microsoft.KeyVault/vaults/kv-mlw-team-a").into();
    arm.put_and_wait::<_, Workspace>(&path, MACHINE_LEARNING, &good)
        .await
        .unwrap();

    arm.delete_and_wait(&path, MACHINE_LEARNING).await.unwrap();
    assert!(
        arm.get::<Workspace>(&path, MACHINE_LEARNING)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn computes_follow_azure_async_operation_and_take_one_identity_kind() {
    let azure = start().await;
    azure.grant(&uai_id(), "Managed Identity Operator", APP_OBJECT_ID);
    let arm = azure.arm(azure.app_credential("sp"));
    let workspace = workspace_path(&azure);
    let compute = format!("{workspace}/computes/cpu-cluster");

    let orphan = arm
        .put_and_wait::<_, Compute>(
            &compute,
            MACHINE_LEARNING,
            &json!({"location": "eastus", "properties": {"computeType": "AmlCompute"}}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&orphan, AzureError::Arm { status: 404, code, .. } if code == "ParentResourceNotFound"),
        "{orphan:?}"
    );

    arm.put_and_wait::<_, Workspace>(
        &workspace,
        MACHINE_LEARNING,
        &json!({"location": "eastus", "identity": {"type": "SystemAssigned"}}),
    )
    .await
    .unwrap();
    let created: Compute = arm
        .put_and_wait(&compute, MACHINE_LEARNING, &json!({"location": "eastus", "identity": {"type": "SystemAssigned"}, "properties": {"computeType": "AmlCompute"}}))
        .await
        .unwrap();
    assert!(created.identity.unwrap().principal_id.is_some());
    assert_eq!(
        created.properties.unwrap()["provisioningState"],
        "Succeeded"
    );
    assert!(
        azure.emulator().counter("arm.GET.operationsStatus") >= 3,
        "the Azure-AsyncOperation was polled until done"
    );

    let patched: Compute = arm
        .patch_and_wait(&compute, MACHINE_LEARNING, &json!({"identity": {"type": "UserAssigned", "userAssignedIdentities": {uai_id(): {}}}}))
        .await
        .unwrap();
    let identity = patched.identity.unwrap();
    assert_eq!(identity.type_, "UserAssigned");
    assert!(identity.principal_id.is_none());

    let both = arm
        .patch_and_wait::<_, Compute>(&compute, MACHINE_LEARNING, &json!({"identity": {"type": "SystemAssigned,UserAssigned", "userAssignedIdentities": {uai_id(): {}}}}))
        .await
        .unwrap_err();
    assert!(
        matches!(&both, AzureError::Arm { status: 400, .. }),
        "{both:?}"
    );
}

#[tokio::test]
async fn datastore_and_connection_secrets_come_back_only_through_list_calls() {
    let azure = start().await;
    let arm = azure.arm(azure.app_credential("sp"));
    let workspace = workspace_path(&azure);
    arm.put_and_wait::<_, Workspace>(
        &workspace,
        MACHINE_LEARNING,
        &json!({"location": "eastus", "identity": {"type": "SystemAssigned"}}),
    )
    .await
    .unwrap();

    let datastore = format!("{workspace}/datastores/training_data");
    let body = json!({"properties": {
        "datastoreType": "AzureBlob", "accountName": "stmlwteama", "containerName": "training-data", "endpoint": "core.windows.net", "protocol": "https",
        "credentials": {"credentialsType": "AccountKey", "secrets": {"secretsType": "AccountKey", "key": "a2V5LXZhbHVlLTEyMw=="}},
    }});
    let written: Datastore = arm
        .put_and_wait(&datastore, MACHINE_LEARNING, &body)
        .await
        .unwrap();
    assert!(
        written
            .properties
            .credentials
            .secrets
            .as_ref()
            .unwrap()
            .key
            .is_none(),
        "GET never echoes the key"
    );
    let secrets = arm
        .post::<(), DatastoreSecrets>(&format!("{datastore}/listSecrets"), MACHINE_LEARNING, None)
        .await
        .unwrap()
        .body
        .unwrap();
    assert_eq!(secrets.key.as_deref(), Some("a2V5LXZhbHVlLTEyMw=="));

    let file = json!({"properties": {"datastoreType": "AzureFile", "accountName": "stmlwteama", "fileShareName": "share", "credentials": {"credentialsType": "None"}}});
    let refused = arm
        .put_and_wait::<_, Datastore>(
            &format!("{workspace}/datastores/share"),
            MACHINE_LEARNING,
            &file,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, AzureError::Arm { status: 400, .. }),
        "{refused:?}"
    );
    // Each type needs its own location fields, and a Data Lake Gen1 store takes no account key.
    for (name, properties) in [
        (
            "lake",
            json!({"datastoreType": "AzureDataLakeGen2", "accountName": "stmlwteama", "containerName": "not-a-filesystem-field", "credentials": {"credentialsType": "None"}}),
        ),
        (
            "gen1",
            json!({"datastoreType": "AzureDataLakeGen1", "storeName": "adlsteama", "credentials": {"credentialsType": "AccountKey", "secrets": {"secretsType": "AccountKey", "key": "a2V5"}}}),
        ),
        (
            "blob",
            json!({"datastoreType": "AzureBlob", "accountName": "stmlwteama", "credentials": {"credentialsType": "None"}}),
        ),
    ] {
        let refused = arm
            .put_and_wait::<_, Datastore>(
                &format!("{workspace}/datastores/{name}"),
                MACHINE_LEARNING,
                &json!({"properties": properties}),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, AzureError::Arm { status: 400, .. }),
            "{name}: {refused:?}"
        );
    }
    let gen2 = json!({"properties": {"datastoreType": "AzureDataLakeGen2", "accountName": "stmlwteama", "filesystem": "raw", "credentials": {"credentialsType": "None"}}});
    arm.put_and_wait::<_, Datastore>(
        &format!("{workspace}/datastores/lake"),
        MACHINE_LEARNING,
        &gen2,
    )
    .await
    .unwrap();

    let connection = format!("{workspace}/connections/workspace-acr");
    let body = json!({"properties": {"category": "ContainerRegistry", "target": "crmlwteama.azurecr.io", "authType": "ManagedIdentity", "credentials": {"clientId": UAI_CLIENT, "resourceId": uai_id()}}});
    let written: WorkspaceConnection = arm
        .put_and_wait(&connection, MACHINE_LEARNING, &body)
        .await
        .unwrap();
    assert!(written.properties.credentials.is_none());
    let full = arm
        .post::<(), WorkspaceConnection>(
            &format!("{connection}/listsecrets"),
            MACHINE_LEARNING,
            None,
        )
        .await
        .unwrap()
        .body
        .unwrap();
    assert_eq!(full.properties.credentials.unwrap()["clientId"], UAI_CLIENT);
}

#[tokio::test]
async fn list_keys_and_list_credentials_need_a_control_plane_role_and_an_admin_user() {
    let azure = Azure::start(vec![]).await;
    let account = format!(
        "{}/providers/Microsoft.Storage/storageAccounts/stmlwteama",
        azure.resource_group_id()
    );
    let registry = format!(
        "{}/providers/Microsoft.ContainerRegistry/registries/crmlwteama",
        azure.resource_group_id()
    );
    azure
        .emulator()
        .seed(Seed {
            storage_accounts: vec![StorageAccount {
                id: account.clone(),
                location: "eastus".into(),
                keys: vec!["a2V5MQ==".into(), "a2V5Mg==".into()],
            }],
            registries: vec![SeedRegistry {
                id: registry.clone(),
                login_server: "crmlwteama.azurecr.io".into(),
                admin_user_enabled: false,
            }],
            ..Default::default()
        })
        .unwrap();
    let arm = azure.arm(azure.app_credential("sp"));

    azure.grant(&azure.resource_group_id(), "Reader", APP_OBJECT_ID);
    let refused = arm
        .post::<(), StorageAccountKeys>(&format!("{account}/listKeys"), STORAGE, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, AzureError::Arm { status: 403, .. }),
        "{refused:?}"
    );
    azure.grant(&account, "Storage Account Contributor", APP_OBJECT_ID);
    let keys = arm
        .post::<(), StorageAccountKeys>(&format!("{account}/listKeys"), STORAGE, None)
        .await
        .unwrap()
        .body
        .unwrap();
    assert_eq!(keys.keys[0].value, "a2V5MQ==");

    azure.grant(&registry, "Contributor", APP_OBJECT_ID);
    let disabled = arm
        .post::<(), RegistryCredentials>(
            &format!("{registry}/listCredentials"),
            CONTAINER_REGISTRY,
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&disabled, AzureError::Arm { status: 400, .. }),
        "{disabled:?}"
    );
    let info: aml_identity_operator::azure::models::Registry = arm
        .get(&registry, CONTAINER_REGISTRY)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        info.properties.login_server.as_deref(),
        Some("crmlwteama.azurecr.io")
    );
}

#[tokio::test]
async fn a_long_running_operation_on_another_host_is_not_followed() {
    let azure =
        Azure::start_configured(|c| c.lro_host = Some("operations.attacker.example".into())).await;
    azure.grant(&azure.resource_group_id(), "Contributor", APP_OBJECT_ID);
    let arm = azure.arm(azure.app_credential("sp"));
    // A system-assigned workspace is created with 202 and a Location that points elsewhere.
    let refused = arm
        .put_and_wait::<_, Workspace>(
            &workspace_path(&azure),
            MACHINE_LEARNING,
            &json!({"location": "eastus", "identity": {"type": "SystemAssigned"}, "properties": {}}),
        )
        .await
        .unwrap_err();
    // Following it would have been a request to that host (a transport error here), not this.
    assert!(
        matches!(&refused, AzureError::OutOfScope(m) if m.contains("another host")),
        "{refused:?}"
    );
}

#[tokio::test]
async fn shared_reads_cost_azure_one_request_per_credential_until_a_write_or_their_time() {
    use aml_identity_operator::azure::models::UserAssignedIdentity as Identity;
    use aml_identity_operator::azure::models::api_versions::MANAGED_IDENTITY;
    use aml_identity_operator::azure::read_cache::ReadCache;
    use std::sync::Arc;
    let azure = start().await;
    azure
        .emulator()
        .seed(Seed {
            subscriptions: vec![aml_identity_emulator::state::Subscription {
                id: SUBSCRIPTION.into(),
                tenant_id: TENANT.into(),
                resource_groups: vec![RESOURCE_GROUP.into(), IDENTITY_RESOURCE_GROUP.into()],
            }],
            ..Default::default()
        })
        .unwrap();
    azure.grant(
        &format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{IDENTITY_RESOURCE_GROUP}"),
        "Contributor",
        APP_OBJECT_ID,
    );
    let cache = Arc::new(ReadCache::new(std::time::Duration::from_secs(60)));
    let arm = azure
        .arm(azure.app_credential("sp"))
        .sharing_reads(cache.clone());
    let reads = || azure.emulator().counter("arm.GET.userAssignedIdentities");
    for _ in 0..5 {
        let found: Option<Identity> = arm.get_recent(&uai_id(), MANAGED_IDENTITY).await.unwrap();
        let client_id = found.and_then(|f| f.properties).and_then(|p| p.client_id);
        assert_eq!(client_id.as_deref(), Some(UAI_CLIENT));
    }
    assert_eq!(reads(), 1, "five objects naming one identity: one read");

    // Another principal reads for itself (it may not be allowed what the first one is).
    let other = azure
        .arm(azure.app_credential("another-key"))
        .sharing_reads(cache.clone());
    let _: Option<Identity> = other.get_recent(&uai_id(), MANAGED_IDENTITY).await.unwrap();
    assert_eq!(reads(), 2);

    // A write through a client sharing the cache forgets the read, for every credential.
    let fic = format!("{}/federatedIdentityCredentials/f", uai_id());
    let _: Option<FederatedIdentityCredential> =
        arm.get_recent(&fic, MANAGED_IDENTITY).await.unwrap();
    arm.delete(&uai_id(), MANAGED_IDENTITY).await.unwrap();
    let gone: Option<Identity> = other.get_recent(&uai_id(), MANAGED_IDENTITY).await.unwrap();
    assert!(gone.is_none(), "deleted: read again, and found missing");
    assert_eq!(reads(), 3);
    let _: Option<Identity> = arm.get_recent(&uai_id(), MANAGED_IDENTITY).await.unwrap();
    assert_eq!(
        reads(),
        4,
        "what is missing is not kept: a creation must see itself"
    );

    // Outside the client's ceiling nothing is answered from the cache.
    let narrow = azure
        .arm(azure.app_credential("sp"))
        .sharing_reads(cache)
        .within(Arc::new(
            aml_identity_operator::azure::scope::Ceiling::for_namespace(
                &[format!(
                    "/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-other"
                )],
                "x",
            )
            .unwrap(),
        ));
    assert!(matches!(
        narrow
            .get_recent::<Identity>(&uai_id(), MANAGED_IDENTITY)
            .await,
        Err(AzureError::OutOfScope(_))
    ));
}
