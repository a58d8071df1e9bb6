//! End-to-end helpers: the operator process pointed at an in-process emulator, objects applied to the
//! local control plane, and waits on their conditions.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};

use super::azure::Azure;
use super::cluster;

/// Operator arguments that point it at the emulator under the real host names.
pub fn azure_args(azure: &Azure) -> Vec<String> {
    vec![
        "--azure-ca-bundle".into(),
        azure.running.ca_path.display().to_string(),
        "--azure-resolve".into(),
        format!(
            "login.microsoftonline.com={0},management.azure.com={0}",
            azure.running.https_addr
        ),
        "--imds-endpoint".into(),
        format!("http://{}", azure.running.imds_addr),
    ]
}

/// Creates an object of this API; returns its name.
pub async fn apply(client: &Client, ns: &str, object: serde_json::Value) -> String {
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    let name = object.metadata.name.clone().unwrap();
    let api = cluster::dynamic_api(client, &serde_json::to_value(&object).unwrap(), ns);
    api.create(&PostParams::default(), &object).await.unwrap();
    name
}

/// Writes a Secret with one string key.
pub async fn secret(client: &Client, ns: &str, name: &str, key: &str, value: &str) {
    let api = Api::<Secret>::namespaced(client.clone(), ns);
    let body = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {key: value}});
    api.patch(
        name,
        &PatchParams::apply("tests").force(),
        &Patch::Apply(body),
    )
    .await
    .unwrap();
}

/// `{"apiVersion", "kind"}` of one of this API's kinds.
pub fn kind(kind: &str) -> serde_json::Value {
    serde_json::json!({"apiVersion": "amlidentity.io/v1alpha1", "kind": kind})
}

/// Waits until Ready has `reason`; returns (status, message, object).
pub async fn ready_reason(
    client: &Client,
    kind_name: &str,
    ns: &str,
    name: &str,
    reason: &str,
) -> (String, String, DynamicObject) {
    let api = cluster::dynamic_api(client, &kind(kind_name), ns);
    let mut last = String::new();
    let found = tokio::time::timeout(Duration::from_secs(40), async {
        loop {
            if let Ok(obj) = api.get(name).await
                && let Some((status, got, message, _)) = cluster::ready_condition(&obj)
            {
                if got == reason {
                    return (status, message, obj);
                }
                last = format!("{got}: {message}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("{kind_name} {name} did not reach {reason}; last: {last}"))
}

/// An AzureCredential named `team-a` signing in as the emulator's seeded service principal.
pub async fn service_principal_credential(client: &Client, ns: &str) {
    use super::azure::{APP_CLIENT_ID, APP_SECRET, TENANT};
    secret(client, ns, "aml-platform-sp", "clientSecret", APP_SECRET).await;
    apply(client, ns, serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "AzureCredential", "metadata": {"name": "team-a"},
        "spec": {"tenantId": TENANT, "servicePrincipal": {"clientId": APP_CLIENT_ID, "clientSecretRef": {"name": "aml-platform-sp", "key": "clientSecret"}}},
    }))
    .await;
}

/// The platform team's shared credential for two-team tests: the emulator's service principal,
/// Owner on the subscription (so only `allowedScopes` keeps teams apart), its secret in `home`,
/// and a ClusterAzureCredential `name` admitting `teams`, each to its own `rg-aml-<namespace>`,
/// minting for storage and Key Vault only.
pub async fn platform_credential(
    client: &Client,
    azure: &Azure,
    home: &str,
    name: &str,
    teams: &[&str],
) {
    use super::azure::{APP_CLIENT_ID, APP_OBJECT_ID, APP_SECRET, SUBSCRIPTION, TENANT};
    azure.grant(
        &format!("/subscriptions/{SUBSCRIPTION}"),
        "Owner",
        APP_OBJECT_ID,
    );
    secret(client, home, "aml-platform-sp", "clientSecret", APP_SECRET).await;
    apply(client, home, serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "ClusterAzureCredential",
        "metadata": {"name": name, "labels": {cluster::TEST_NAMESPACE_LABEL: home}},
        "spec": {"tenantId": TENANT, "servicePrincipal": {"clientId": APP_CLIENT_ID, "clientSecretRef": {"name": "aml-platform-sp", "key": "clientSecret"}},
                 "allowedNamespaces": {"names": teams},
                 "allowedScopes": [format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-aml-{{namespace}}")],
                 "allowedAudiences": ["https://storage.azure.com", "https://vault.azure.net"]},
    }))
    .await;
}

/// Deletes one of this API's objects and waits (bounded) until its finalizer let it go.
pub async fn delete_and_wait(client: &Client, kind_name: &str, ns: &str, name: &str) {
    let api = cluster::dynamic_api(client, &kind(kind_name), ns);
    api.delete(name, &kube::api::DeleteParams::default())
        .await
        .unwrap();
    cluster::wait_until(
        Duration::from_secs(30),
        &format!("{kind_name} {name} to be deleted"),
        || {
            let api = api.clone();
            async move {
                matches!(api.get(name).await, Err(kube::Error::Api(s)) if s.code == 404)
                    .then_some(())
            }
        },
    )
    .await;
}

/// Asserts that no token the emulator issued, and none of `secrets` (client secrets, keys, SAS),
/// appears in the operator's log, in the namespace's Events, or in any status of this API's objects.
pub async fn assert_no_leaks(
    client: &Client,
    azure: &Azure,
    operator: &cluster::Operator,
    ns: &str,
    secrets: &[&str],
) {
    use k8s_openapi::api::events::v1::Event;
    let mut places: Vec<(String, String)> = vec![("the operator log".into(), operator.logs())];
    let events = Api::<Event>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .unwrap();
    places.push((
        "Events".into(),
        serde_json::to_string(&events.items).unwrap(),
    ));
    for kind_name in [
        "AzureCredential",
        "ClusterAzureCredential",
        "Workspace",
        "ComputeIdentity",
        "Datastore",
        "RegistryConnection",
    ] {
        let api = cluster::dynamic_api(client, &kind(kind_name), ns);
        for object in api.list(&Default::default()).await.unwrap() {
            places.push((
                format!(
                    "the status of {kind_name} {}",
                    object.metadata.name.clone().unwrap_or_default()
                ),
                object.data["status"].to_string(),
            ));
        }
    }
    let tokens = azure.emulator().issued_tokens();
    assert!(
        !tokens.is_empty(),
        "the emulator issued no token: nothing was checked"
    );
    for needle in tokens
        .iter()
        .map(String::as_str)
        .chain(secrets.iter().copied())
    {
        for (place, text) in &places {
            assert!(
                !text.contains(needle),
                "a token, key or secret appears in {place}"
            );
        }
    }
}

/// Pokes an object with an unrelated annotation (which reconciles it) and asserts that its output
/// Secret `secret` is not written again: a still-good output is recognised from what it holds.
pub async fn reconcile_leaves_secret_alone(
    client: &Client,
    operator: &cluster::Operator,
    kind_name: &str,
    ns: &str,
    name: &str,
    secret: &str,
) {
    use kube::ResourceExt;
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    // Settled first: the Secret unchanged for two seconds.
    let mut before = secrets.get(secret).await.unwrap().resource_version();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = secrets.get(secret).await.unwrap().resource_version();
        if now == before {
            break;
        }
        before = now;
    }
    let counter = format!("aml_identity_operator_reconciles_total{{kind=\"{kind_name}\"");
    let reconciles = operator.metric_sum(&counter).await.unwrap_or_default();
    let api = cluster::dynamic_api(client, &kind(kind_name), ns);
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"example.com/poke": cluster::unique()}}})),
    )
    .await
    .unwrap();
    cluster::wait_until(
        Duration::from_secs(20),
        "the poked object to be reconciled",
        || async { (operator.metric_sum(&counter).await? > reconciles).then_some(()) },
    )
    .await;
    // Whatever that pass wrote has been written by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        secrets.get(secret).await.unwrap().resource_version(),
        before,
        "{kind_name} {name} wrote Secret {secret} again though it was still good"
    );
}
