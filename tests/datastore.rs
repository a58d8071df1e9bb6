//! The Datastore controller end to end: registered in the workspace with the account key (which the
//! pod never sees), and an access Secret with a read/list SAS for the container that a "training
//! pod" using the official azure-storage-blob reads with — and cannot write with, nor use once expired;
//! for an Azure Files datastore, a share SAS that azure-storage-file-share reads the emulator's
//! File service with, under the same limits.

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use aml_identity_emulator::Seed;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use std::time::Duration;
use support::azure::*;
use support::azurite::{self, Blob};
use support::cluster::{self, Operator};
use support::e2e::*;

fn workspace_id() -> String {
    format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.MachineLearningServices/workspaces/mlw-team-a"
    )
}

async fn setup(prefix: &str) -> (Client, Azure, String) {
    let client = cluster::client().await;
    cluster::install_crds(&client).await;
    let azure = Azure::start(vec![]).await;
    azure.grant(
        &format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"),
        "Contributor",
        APP_OBJECT_ID,
    );
    azure
        .emulator()
        .seed(Seed { resources: vec![serde_json::json!({"id": workspace_id(), "name": "mlw-team-a", "location": "eastus", "properties": {"provisioningState": "Succeeded"}})], ..Default::default() })
        .unwrap();
    let ns = cluster::namespace(&client, prefix).await;
    service_principal_credential(&client, &ns).await;
    apply(&client, &ns, serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "Workspace", "metadata": {"name": "ml-workspace"},
        "spec": {"credentialRef": {"name": "team-a"}, "subscriptionId": SUBSCRIPTION, "resourceGroup": RESOURCE_GROUP, "workspaceName": "mlw-team-a"},
    }))
    .await;
    secret(&client, &ns, "account-key", "accountKey", azurite::KEY).await;
    (client, azure, ns)
}

fn operator_args(azure: &Azure, blob: &Blob, clock_offset: i64) -> Vec<String> {
    let mut args = azure_args(azure);
    // The operator reaches Azurite too (user-delegation keys): trust both CAs.
    let bundle = azure.running.ca_path.with_file_name("bundle.pem");
    let pems = [
        std::fs::read_to_string(&azure.running.ca_path).unwrap(),
        std::fs::read_to_string(&blob.ca).unwrap(),
    ];
    std::fs::write(&bundle, pems.concat()).unwrap();
    let at = args.iter().position(|a| a == "--azure-ca-bundle").unwrap() + 1;
    args[at] = bundle.display().to_string();
    args.extend([
        "--blob-url-template".into(),
        blob.base.replace(azurite::ACCOUNT, "{account}"),
    ]);
    args.push(format!("--clock-offset-seconds={clock_offset}"));
    args
}

fn datastore(name: &str, container: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "Datastore", "metadata": {"name": name},
        "spec": {
            "workspaceRef": {"name": "ml-workspace"}, "datastoreName": name.replace('-', "_"), "type": "AzureBlob",
            "accountName": azurite::ACCOUNT, "containerName": container,
            "credentials": {"type": "AccountKey", "secretRef": {"name": "account-key", "key": "accountKey"}},
            "register": true,
            "podAccess": {"secretName": format!("{name}-access"), "sas": {"permissions": "rl", "ttl": "1h"}},
        },
    })
}

/// Runs the training pod with the Secret's keys as its environment.
fn pod(blob: &Blob, data: &BTreeMap<String, String>) -> serde_json::Value {
    let python = std::env::var("AMLID_PYTHON")
        .expect("AMLID_PYTHON is not set: run the tests with `make test`");
    let output = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/blob_pod.py"
        ))
        .envs(
            data.iter()
                .filter(|(k, _)| k.chars().all(|c| c.is_ascii_uppercase() || c == '_')),
        )
        .env(
            "EXPIRES_ON",
            data.get("expires-on").cloned().unwrap_or_default(),
        )
        .env("BLOB_NAME", azurite::BLOB.0)
        .env("REQUESTS_CA_BUNDLE", &blob.ca)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&output.stderr)))
}

async fn secret_data(client: &Client, ns: &str, name: &str) -> BTreeMap<String, String> {
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    secret
        .data
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_training_pod_reads_with_the_sas_and_cannot_write() {
    let (client, azure, ns) = setup("ds-sas").await;
    let blob = Blob::new();
    let container = blob.prepare().await;
    let operator = Operator::start_with(
        &ns,
        "lease-ds-sas",
        "ds-sas-0",
        &operator_args(&azure, &blob, 0),
    );
    let name = apply(&client, &ns, datastore("training-data", &container)).await;
    let (status, message, obj) =
        ready_reason(&client, "Datastore", &ns, &name, "AccessIssued").await;
    assert_eq!(status, "True", "{message}");
    let access = obj.data["spec"]["podAccess"]["secretName"]
        .as_str()
        .unwrap()
        .to_owned();
    reconcile_leaves_secret_alone(&client, &operator, "Datastore", &ns, &name, &access).await;
    assert!(
        obj.data["status"]["uri"]
            .as_str()
            .unwrap()
            .starts_with("azureml://subscriptions/")
    );

    // Registered with the key; ARM answers without it, listSecrets has it.
    let arm = azure.arm(azure.app_credential("test"));
    let path = format!("{}/datastores/training_data", workspace_id());
    let secrets: aml_identity_operator::azure::models::DatastoreSecrets = arm
        .post::<(), _>(&format!("{path}/listSecrets"), "2025-12-01", None)
        .await
        .unwrap()
        .body
        .unwrap();
    assert_eq!(secrets.key.as_deref(), Some(azurite::KEY));

    let data = secret_data(&client, &ns, "training-data-access").await;
    assert!(
        !data.values().any(|v| v.contains(azurite::KEY)),
        "the pod must never receive the account key"
    );
    let sas = data["AZURE_STORAGE_SAS_TOKEN"].clone();
    assert!(sas.contains("sp=rl") && sas.contains("sr=c"), "{sas}");
    let result = tokio::task::block_in_place(|| pod(&blob, &data));
    assert_eq!(result["read"], azurite::BLOB.1, "{result}");
    assert_eq!(
        result["write"], "AuthorizationPermissionMismatch",
        "{result}"
    );
    assert!(!operator.logs().contains(&sas) && !operator.logs().contains(azurite::KEY));

    // The registration the operator made goes with the object.
    delete_and_wait(&client, "Datastore", &ns, &name).await;
    let gone: Option<aml_identity_operator::azure::models::Datastore> =
        arm.get(&path, "2025-12-01").await.unwrap();
    assert!(gone.is_none());
    assert_no_leaks(
        &client,
        &azure,
        &operator,
        &ns,
        &[APP_SECRET, azurite::KEY, &sas],
    )
    .await;
    cluster::delete_namespace(&client, &ns).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_kind_of_secret_is_refused_once_expired() {
    let (client, azure, ns) = setup("ds-expired").await;
    let blob = Blob::new();
    let container = blob.prepare().await;
    // An operator whose clock runs two hours behind writes a SAS that expired an hour ago.
    let _operator = Operator::start_with(
        &ns,
        "lease-ds-expired",
        "ds-expired-0",
        &operator_args(&azure, &blob, -7200),
    );
    let name = apply(&client, &ns, datastore("old-data", &container)).await;
    ready_reason(&client, "Datastore", &ns, &name, "AccessIssued").await;
    let data = secret_data(&client, &ns, "old-data-access").await;
    assert!(data["expires-on"].parse::<i64>().unwrap() < jiff::Timestamp::now().as_second());
    let result = tokio::task::block_in_place(|| pod(&blob, &data));
    assert_eq!(result["read"], "AuthorizationFailure", "{result}");
    assert_eq!(result["write"], "AuthorizationFailure", "{result}");
    cluster::delete_namespace(&client, &ns).await;
}

/// An ADLS Gen2 datastore: registered with its filesystem, and a SAS Secret that
/// `azure-storage-file-datalake` reads with from the keys it expects (the filesystem and the `dfs`
/// endpoint; Azurite serves the blob API the SDK downloads through).
#[tokio::test(flavor = "multi_thread")]
async fn an_adls_gen2_filesystem_is_registered_and_read_through_the_data_lake_sdk() {
    let (client, azure, ns) = setup("ds-gen2").await;
    let blob = Blob::new();
    let filesystem = blob.prepare().await;
    let _operator = Operator::start_with(
        &ns,
        "lease-ds-gen2",
        "ds-gen2-0",
        &operator_args(&azure, &blob, 0),
    );
    let mut object = datastore("lake", &filesystem);
    object["spec"]["type"] = "AzureDataLakeGen2".into();
    let spec = object["spec"].as_object_mut().unwrap();
    spec.remove("containerName");
    spec.insert("filesystem".into(), filesystem.clone().into());
    let name = apply(&client, &ns, object).await;
    let (status, message, _) = ready_reason(&client, "Datastore", &ns, &name, "AccessIssued").await;
    assert_eq!(status, "True", "{message}");

    let arm = azure.arm(azure.app_credential("test"));
    let registered: aml_identity_operator::azure::models::Datastore = arm
        .get(&format!("{}/datastores/lake", workspace_id()), "2025-12-01")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(registered.properties.datastore_type, "AzureDataLakeGen2");
    assert_eq!(
        registered.properties.filesystem.as_deref(),
        Some(filesystem.as_str())
    );

    let data = secret_data(&client, &ns, "lake-access").await;
    assert_eq!(data["AZURE_STORAGE_FILESYSTEM"], filesystem);
    assert_eq!(
        data["AZURE_STORAGE_CONTAINER"], filesystem,
        "blob SDKs read it as a container"
    );
    assert_eq!(
        data["AZURE_STORAGE_DFS_URL"], data["AZURE_STORAGE_ACCOUNT_URL"],
        "Azurite's address has no .blob. label to turn into .dfs."
    );
    let python = std::env::var("AMLID_PYTHON")
        .expect("AMLID_PYTHON is not set: run the tests with `make test`");
    let output = tokio::task::block_in_place(|| {
        Command::new(python)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/python/datalake_pod.py"
            ))
            .envs(
                data.iter()
                    .filter(|(k, _)| k.chars().all(|c| c.is_ascii_uppercase() || c == '_')),
            )
            .env("FILE_PATH", azurite::BLOB.0)
            .env("REQUESTS_CA_BUNDLE", &blob.ca)
            .output()
            .unwrap()
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&output.stderr)));
    assert_eq!(result["read"], azurite::BLOB.1, "{result}");
    cluster::delete_namespace(&client, &ns).await;
}

/// Seconds of an RFC 3339 status field.
fn seconds(obj: &kube::api::DynamicObject, field: &str) -> i64 {
    obj.data["status"][field]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .unwrap_or_else(|| panic!("status.{field}: {}", obj.data["status"]))
        .as_second()
}

/// `renewBefore` sets when the SAS Secret is renewed (less a jitter of up to a twentieth of the
/// lifetime), the Secret is renewed then, and a changed setting rewrites it with its new time.
#[tokio::test(flavor = "multi_thread")]
async fn renew_before_sets_when_the_access_secret_is_renewed() {
    let (client, azure, ns) = setup("ds-renew").await;
    let blob = Blob::new();
    let container = blob.prepare().await;
    let _operator = Operator::start_with(
        &ns,
        "lease-ds-renew",
        "ds-renew-0",
        &operator_args(&azure, &blob, 0),
    );
    let mut object = datastore("short-lived", &container);
    object["spec"]["podAccess"]["sas"]["ttl"] = "5m".into();
    object["spec"]["podAccess"]["renewBefore"] = "4m".into();
    let name = apply(&client, &ns, object).await;
    let (_, _, obj) = ready_reason(&client, "Datastore", &ns, &name, "AccessIssued").await;
    let (expires, renewal) = (seconds(&obj, "expiresAt"), seconds(&obj, "renewalTime"));
    assert!(
        (expires - 240 - 15..=expires - 240).contains(&renewal),
        "renewal {} s before expiry, not 240 s (less up to 15 s of jitter)",
        expires - renewal
    );

    // Renewed at that time (about a minute after issuing), not at the default two thirds.
    let api = cluster::dynamic_api(&client, &kind("Datastore"), &ns);
    let renewed = cluster::wait_until(Duration::from_secs(120), "the SAS renewed", || async {
        let obj = api.get(&name).await.ok()?;
        (seconds(&obj, "expiresAt") > expires).then_some(obj)
    })
    .await;
    assert!(
        jiff::Timestamp::now().as_second() >= renewal,
        "renewed early"
    );
    let data = secret_data(&client, &ns, "short-lived-access").await;
    assert_eq!(
        data["expires-on"].parse::<i64>().unwrap(),
        seconds(&renewed, "expiresAt")
    );

    // Another setting: the Secret is written again, renewing when half its lifetime is left.
    let patch = serde_json::json!({"spec": {"podAccess": {"renewBefore": null, "renewBeforePercentage": 50}}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    cluster::wait_until(Duration::from_secs(40), "the new renewal time", || async {
        let obj = api.get(&name).await.ok()?;
        let (expires, renewal) = (seconds(&obj, "expiresAt"), seconds(&obj, "renewalTime"));
        (expires - 150 - 15..=expires - 150)
            .contains(&renewal)
            .then_some(())
    })
    .await;
    cluster::delete_namespace(&client, &ns).await;
}

/// A new object's access Secret is created without being read first; one of that name that someone
/// else made is left as it is (`TargetConflict`), and once it is gone the object issues its own.
#[tokio::test(flavor = "multi_thread")]
async fn a_secret_someone_else_made_is_neither_overwritten_nor_taken() {
    let (client, azure, ns) = setup("ds-taken").await;
    let blob = Blob::new();
    let container = blob.prepare().await;
    secret(&client, &ns, "held-access", "note", "the team's own").await;
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let before = secrets.get("held-access").await.unwrap();
    let _operator = Operator::start_with(
        &ns,
        "lease-ds-taken",
        "ds-taken-0",
        &operator_args(&azure, &blob, 0),
    );
    let name = apply(&client, &ns, datastore("held", &container)).await;
    let (_, message, _) = ready_reason(&client, "Datastore", &ns, &name, "TargetConflict").await;
    assert!(message.contains("held-access"), "{message}");
    let after = secrets.get("held-access").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "the team's Secret was written"
    );
    assert!(after.metadata.owner_references.is_none());
    secrets
        .delete("held-access", &Default::default())
        .await
        .unwrap();
    ready_reason(&client, "Datastore", &ns, &name, "AccessIssued").await;
    let data = secret_data(&client, &ns, "held-access").await;
    assert!(
        data.contains_key("AZURE_STORAGE_SAS_TOKEN"),
        "{:?}",
        data.keys()
    );
    assert!(!data.contains_key("note"));
    cluster::delete_namespace(&client, &ns).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_based_access_mints_as_a_compute_identity() {
    let client = cluster::client().await;
    cluster::install_crds(&client).await;
    let (_, ca) = cluster::issuer_and_ca(&client).await;
    let azure = Azure::start(vec![ca]).await;
    azure.grant(
        &format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"),
        "Owner",
        APP_OBJECT_ID,
    );
    azure
        .emulator()
        .seed(Seed { resources: vec![serde_json::json!({"id": workspace_id(), "name": "mlw-team-a", "location": "eastus", "properties": {"provisioningState": "Succeeded"}})], ..Default::default() })
        .unwrap();
    let ns = cluster::namespace(&client, "ds-identity").await;
    service_principal_credential(&client, &ns).await;
    apply(&client, &ns, serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "Workspace", "metadata": {"name": "ml-workspace"},
        "spec": {"credentialRef": {"name": "team-a"}, "subscriptionId": SUBSCRIPTION, "resourceGroup": RESOURCE_GROUP, "workspaceName": "mlw-team-a"},
    }))
    .await;
    let sa: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "training"}})).unwrap();
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), &ns)
        .create(&Default::default(), &sa)
        .await
        .unwrap();
    let uai = format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-cpu-cluster"
    );
    apply(&client, &ns, serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "ComputeIdentity", "metadata": {"name": "cpu-cluster"},
        "spec": {"workspaceRef": {"name": "ml-workspace"}, "computeName": "cpu-cluster",
                 "identity": {"type": "UserAssigned", "userAssignedIdentities": [uai]}, "createIfMissing": {"location": "eastus"},
                 "federation": {"serviceAccounts": ["training"]}},
    }))
    .await;
    let blob = Blob::new();
    let container = blob.prepare().await;
    let _operator = Operator::start_with(
        &ns,
        "lease-ds-identity",
        "ds-identity-0",
        &operator_args(&azure, &blob, 0),
    );
    ready_reason(
        &client,
        "ComputeIdentity",
        &ns,
        "cpu-cluster",
        "IdentityReady",
    )
    .await;

    for (name, mode, key) in [
        ("by-token", "Token", "AZURE_STORAGE_TOKEN"),
        (
            "by-delegation",
            "UserDelegationSas",
            "AZURE_STORAGE_SAS_TOKEN",
        ),
    ] {
        let mut object = datastore(name, &container);
        object["spec"]["credentials"] = serde_json::json!({"type": "None"});
        object["spec"]["podAccess"] = serde_json::json!({"secretName": format!("{name}-access"), "identity": {"computeIdentityRef": {"name": "cpu-cluster"}, "mode": mode}});
        apply(&client, &ns, object).await;
        let (status, message, _) =
            ready_reason(&client, "Datastore", &ns, name, "AccessIssued").await;
        assert_eq!(status, "True", "{name}: {message}");
        let data = secret_data(&client, &ns, &format!("{name}-access")).await;
        assert!(
            data.contains_key(key),
            "{name}: {:?}",
            data.keys().collect::<Vec<_>>()
        );
        let result = tokio::task::block_in_place(|| pod(&blob, &data));
        assert_eq!(result["read"], azurite::BLOB.1, "{name}: {result}");
    }

    // A Data Lake Gen1 store: registered by its name alone, and a token for Data Lake's own
    // audience (a storage token is refused by Gen1 stores).
    let gen1 = serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "Datastore", "metadata": {"name": "gen1-store"},
        "spec": {"workspaceRef": {"name": "ml-workspace"}, "datastoreName": "lake_gen1", "type": "AzureDataLakeGen1",
                 "storeName": "adlsteama", "credentials": {"type": "None"}, "register": true,
                 "podAccess": {"secretName": "gen1-access", "identity": {"computeIdentityRef": {"name": "cpu-cluster"}}}},
    });
    apply(&client, &ns, gen1).await;
    let (status, message, _) =
        ready_reason(&client, "Datastore", &ns, "gen1-store", "AccessIssued").await;
    assert_eq!(status, "True", "{message}");
    let arm = azure.arm(azure.app_credential("test"));
    let registered: serde_json::Value = arm
        .get(
            &format!("{}/datastores/lake_gen1", workspace_id()),
            "2025-12-01",
        )
        .await
        .unwrap()
        .unwrap();
    let properties = &registered["properties"];
    assert_eq!(properties["datastoreType"], "AzureDataLakeGen1");
    assert_eq!(properties["storeName"], "adlsteama");
    assert!(
        properties.get("endpoint").is_none() && properties.get("accountName").is_none(),
        "a Gen1 store has neither: {properties}"
    );
    let data = secret_data(&client, &ns, "gen1-access").await;
    assert_eq!(data["AZURE_DATALAKE_STORE_NAME"], "adlsteama");
    assert!(
        !data.contains_key("AZURE_STORAGE_ACCOUNT_URL"),
        "{:?}",
        data.keys().collect::<Vec<_>>()
    );
    let token = &data["AZURE_STORAGE_TOKEN"];
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token.split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["aud"], "https://datalake.azure.net", "{claims}");
    cluster::delete_namespace(&client, &ns).await;
}

/// Anyone who can edit Secrets in the namespace (or a restore from backup) can change the access
/// Secret: each forged annotation and data key is repaired from the SAS's own `se`, and status
/// and the expiry metric say what is true.
#[tokio::test(flavor = "multi_thread")]
async fn a_forged_access_secret_is_repaired_from_the_sas_itself() {
    use kube::ResourceExt;
    use kube::api::{Patch, PatchParams};
    let (client, azure, ns) = setup("ds-forged").await;
    let blob = Blob::new();
    let container = blob.prepare().await;
    let operator = Operator::start_with(
        &ns,
        "lease-ds-forged",
        "ds-forged-0",
        &operator_args(&azure, &blob, 0),
    );
    let name = apply(&client, &ns, datastore("forged", &container)).await;
    ready_reason(&client, "Datastore", &ns, &name, "AccessIssued").await;
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let api = cluster::dynamic_api(&client, &kind("Datastore"), &ns);
    let se = |s: &Secret| {
        let sas =
            String::from_utf8(s.data.as_ref()?.get("AZURE_STORAGE_SAS_TOKEN")?.0.clone()).ok()?;
        aml_identity_operator::azure::storage::sas_expiry(&sas)
    };
    // A SAS and annotations that agree with each other, ten years ahead: nothing the operator
    // writes lives that long.
    let decade = aml_identity_operator::renewal::rfc3339(
        jiff::Timestamp::now().as_second() + 10 * 365 * 86_400,
    );
    let consistent = serde_json::json!({
        "metadata": {"annotations": {"amlidentity.io/expires-at": decade, "amlidentity.io/renewal-time": decade}},
        "stringData": {"AZURE_STORAGE_SAS_TOKEN": format!("sv=2025-07-05&se={}&sr=c&sp=rl&sig=forged", decade.replace(':', "%3A"))},
    });
    let edits: [(&str, serde_json::Value); 7] = [
        ("a consistent forgery ten years ahead", consistent),
        (
            "expires-at in 9999",
            serde_json::json!({"metadata": {"annotations": {"amlidentity.io/expires-at": "9999-12-01T00:00:00Z", "amlidentity.io/renewal-time": "9999-12-01T00:00:00Z"}}}),
        ),
        (
            "expires-at in the past",
            serde_json::json!({"metadata": {"annotations": {"amlidentity.io/expires-at": "2000-01-01T00:00:00Z"}}}),
        ),
        (
            "garbage annotations",
            serde_json::json!({"metadata": {"annotations": {"amlidentity.io/expires-at": "soon", "amlidentity.io/issued-at": "x"}}}),
        ),
        (
            "a SAS that claims year 9999",
            serde_json::json!({"stringData": {"AZURE_STORAGE_SAS_TOKEN": "sv=2025-07-05&se=9999-12-01T00%3A00%3A00Z&sr=c&sp=rl&sig=forged"}}),
        ),
        (
            "the SAS deleted",
            serde_json::json!({"data": {"AZURE_STORAGE_SAS_TOKEN": null}}),
        ),
        (
            "annotations deleted",
            serde_json::json!({"metadata": {"annotations": {"amlidentity.io/expires-at": null, "amlidentity.io/renewal-time": null}}}),
        ),
    ];
    for (what, edit) in edits {
        let before = secrets.get("forged-access").await.unwrap();
        secrets
            .patch(
                "forged-access",
                &PatchParams::default(),
                &Patch::Merge(edit),
            )
            .await
            .unwrap();
        let repaired = cluster::wait_until(
            std::time::Duration::from_secs(30),
            &format!("the access Secret repaired after {what}"),
            || {
                let secrets = secrets.clone();
                let before = before.resource_version();
                async move {
                    let s = secrets.get("forged-access").await.ok()?;
                    let annotated = s.annotations().get("amlidentity.io/expires-at")?.clone();
                    let real = se(&s)?;
                    (s.resource_version() != before
                        && annotated == aml_identity_operator::renewal::rfc3339(real)
                        && real < jiff::Timestamp::now().as_second() + 2 * 3600)
                        .then_some((s, annotated))
                }
            },
        )
        .await;
        let (secret, annotated) = repaired;
        // The repaired SAS works for the training pod.
        let read = pod(&blob, &secret_data(&client, &ns, &secret.name_any()).await);
        assert_eq!(read["read"], azurite::BLOB.1, "{what}: {read}");
        let status = api.get(&name).await.unwrap().data["status"].clone();
        assert_eq!(
            status["expiresAt"], annotated,
            "status tells the truth after {what}"
        );
        let gauge = operator
            .metric_sum(
                "aml_identity_operator_credential_expiry_timestamp_seconds{kind=\"Datastore\"",
            )
            .await;
        assert_eq!(
            gauge,
            Some(se(&secret).unwrap() as f64),
            "the metric tells the truth after {what}"
        );
    }
    assert!(!operator.logs().contains("panicked"));
    cluster::delete_namespace(&client, &ns).await;
}

const FILE_ACCOUNT: &str = "stmlwfiles";
const FILE: (&str, &str) = ("train.csv", "feature,label\n0.5,1\n");

fn file_datastore(name: &str, share: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "Datastore", "metadata": {"name": name},
        "spec": {
            "workspaceRef": {"name": "ml-workspace"}, "datastoreName": name.replace('-', "_"), "type": "AzureFile",
            "accountName": FILE_ACCOUNT, "shareName": share,
            "credentials": {"type": "AccountKey", "secretRef": {"name": "account-key", "key": "accountKey"}},
            "register": true,
            "podAccess": {"secretName": format!("{name}-access"), "sas": {"permissions": "rl", "ttl": "1h"}},
        },
    })
}

/// Runs the file-share training pod (azure-storage-file-share) with the Secret's keys.
fn file_pod(azure: &Azure, data: &BTreeMap<String, String>) -> serde_json::Value {
    let python = std::env::var("AMLID_PYTHON")
        .expect("AMLID_PYTHON is not set: run the tests with `make test`");
    let output = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/file_pod.py"
        ))
        .envs(
            data.iter()
                .filter(|(k, _)| k.chars().all(|c| c.is_ascii_uppercase() || c == '_')),
        )
        .env("FILE_NAME", FILE.0)
        .env("REQUESTS_CA_BUNDLE", &azure.running.ca_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&output.stderr)))
}

/// An Azure Files datastore: the pod gets a share SAS (`sr=s`), never the key; with it the official
/// azure-storage-file-share lists the share and reads a file, and cannot create one, reach another
/// share, widen its own permissions or use it once expired (the emulator checks each as the File
/// service does).
#[tokio::test(flavor = "multi_thread")]
async fn a_file_share_sas_reads_the_share_and_nothing_more() {
    use aml_identity_emulator::state::{FileShare, StorageAccount};
    let (client, azure, ns) = setup("ds-file").await;
    azure
        .emulator()
        .seed(Seed {
            storage_accounts: vec![StorageAccount {
                id: format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.Storage/storageAccounts/{FILE_ACCOUNT}"),
                location: "eastus".into(),
                keys: vec![azurite::KEY.into()],
            }],
            file_shares: ["shared-files", "other-team-files"]
                .map(|share| FileShare {
                    account: FILE_ACCOUNT.into(),
                    share: share.into(),
                    files: [
                        (FILE.0.to_owned(), FILE.1.to_owned()),
                        ("runs/metrics.json".to_owned(), "{}".to_owned()),
                    ]
                    .into(),
                })
                .to_vec(),
            ..Default::default()
        })
        .unwrap();
    let mut args = azure_args(&azure);
    args.extend([
        "--file-url-template".into(),
        format!("{}/_file/{{account}}", azure.running.base_url()),
    ]);
    let operator = Operator::start_with(&ns, "lease-ds-file", "ds-file-0", &args);
    let name = apply(&client, &ns, file_datastore("shared-files", "shared-files")).await;
    let (status, message, _) = ready_reason(&client, "Datastore", &ns, &name, "AccessIssued").await;
    assert_eq!(status, "True", "{message}");
    let data = secret_data(&client, &ns, "shared-files-access").await;
    let sas = data["AZURE_STORAGE_SAS_TOKEN"].clone();
    assert!(
        sas.contains("sr=s") && sas.contains("sp=rl") && sas.contains("spr=https"),
        "{sas}"
    );
    assert_eq!(data["AZURE_STORAGE_SHARE"], "shared-files");
    assert!(!data.contains_key("AZURE_STORAGE_CONTAINER"), "{data:?}");
    assert!(!data.values().any(|v| v.contains(azurite::KEY)));

    let result = tokio::task::block_in_place(|| file_pod(&azure, &data));
    assert_eq!(
        result["list"],
        serde_json::json!(["runs", FILE.0]),
        "{result}"
    );
    assert_eq!(result["read"], FILE.1, "{result}");
    assert_eq!(
        result["write"], "AuthorizationPermissionMismatch",
        "{result}"
    );

    // The same SAS pointed at another share, or with its permissions widened, fails its signature.
    let mut elsewhere = data.clone();
    elsewhere.insert("AZURE_STORAGE_SHARE".into(), "other-team-files".into());
    let mut widened = data.clone();
    widened.insert(
        "AZURE_STORAGE_SAS_TOKEN".into(),
        sas.replace("sp=rl", "sp=rcwdl"),
    );
    for (what, forged) in [("another share", elsewhere), ("widened", widened)] {
        let result = tokio::task::block_in_place(|| file_pod(&azure, &forged));
        for op in ["list", "read", "write"] {
            assert_eq!(result[op], "AuthenticationFailed", "{what}: {result}");
        }
    }
    // Past its expiry on the service's clock, nothing works.
    azure.emulator().clock().advance(2 * 3600);
    let result = tokio::task::block_in_place(|| file_pod(&azure, &data));
    azure.emulator().clock().advance(-2 * 3600);
    assert_eq!(result["list"], "AuthenticationFailed", "{result}");
    assert_eq!(result["read"], "AuthenticationFailed", "{result}");

    assert_no_leaks(
        &client,
        &azure,
        &operator,
        &ns,
        &[APP_SECRET, azurite::KEY, &sas],
    )
    .await;
    cluster::delete_namespace(&client, &ns).await;
}
