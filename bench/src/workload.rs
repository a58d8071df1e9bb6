//! What the benchmark applies: M team namespaces admitted to one ClusterAzureCredential, each with a
//! workspace and a pull identity, and N objects across them in a realistic mix — ComputeIdentities
//! with token Secrets sharing K identities (half), SAS Datastores (35%), RegistryConnections (15%).

use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::azure::{self, APP_CLIENT_ID, APP_SECRET, LOGIN_SERVER, SUBSCRIPTION, TENANT};

/// Label on everything one run creates: `amlidentity.io/bench=<run>`.
pub const RUN_LABEL: &str = "amlidentity.io/bench";
pub const GROUP: &str = "amlidentity.io";
pub const VERSION: &str = "v1alpha1";
/// Label on team namespaces naming the shard that reconciles them (`--shards` above 1).
pub const SHARD_LABEL: &str = "amlidentity.io/bench-shard";
/// The per-namespace ComputeIdentity RegistryConnections pull through (set up, not measured).
pub const PULL_IDENTITY: &str = "pull-identity";

/// The kinds measured, in the order of the mix.
pub const KINDS: [&str; 3] = ["ComputeIdentity", "Datastore", "RegistryConnection"];

/// One measured object.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

/// The names of one run.
#[derive(Clone, Debug)]
pub struct Run {
    pub id: String,
    /// Team namespaces.
    pub namespaces: Vec<String>,
    /// The operator's own namespace (its Lease, the credential's Secret).
    pub home: String,
    pub identities: usize,
    /// Operator instances sharing the namespaces by label (1: no sharding).
    pub shards: usize,
}

impl Run {
    pub fn new(id: &str, namespaces: usize, identities: usize) -> Run {
        Run {
            id: id.to_owned(),
            namespaces: (0..namespaces).map(|m| format!("b{id}-{m}")).collect(),
            home: format!("b{id}-system"),
            identities,
            shards: 1,
        }
    }

    /// The shard of team namespace `m`'s objects: round robin.
    pub fn shard_of(&self, namespace: &str) -> usize {
        self.namespaces
            .iter()
            .position(|n| n == namespace)
            .unwrap_or(0)
            % self.shards
    }

    pub fn credential(&self) -> String {
        format!("bench-{}", self.id)
    }

    /// Objects 0..`count` of the mix, named with `prefix` (one per phase, so phases never collide).
    pub fn keys(&self, count: usize, prefix: &str) -> Vec<Key> {
        (0..count).map(|i| self.key(i, prefix)).collect()
    }

    /// Object `i` of the mix: its kind, namespace and name.
    pub fn key(&self, i: usize, prefix: &str) -> Key {
        let kind = match i % 20 {
            0..10 => KINDS[0],
            10..17 => KINDS[1],
            _ => KINDS[2],
        };
        let short = match kind {
            "ComputeIdentity" => "ci",
            "Datastore" => "ds",
            _ => "rc",
        };
        Key {
            kind,
            namespace: self.namespaces[i % self.namespaces.len()].clone(),
            name: format!("{prefix}{short}-{i}"),
        }
    }

    /// The identity namespace `m`'s ComputeIdentities share (each identity federates with at most
    /// ⌈M/K⌉ namespaces, under Azure's 20 federated credentials per identity when M ≤ 20·K).
    fn identity_of(&self, namespace: &str) -> String {
        let m = self
            .namespaces
            .iter()
            .position(|n| n == namespace)
            .unwrap_or(0);
        azure::identity_id(m % self.identities)
    }

    /// The object `key` names, labelled with the run.
    pub fn object(&self, key: &Key) -> serde_json::Value {
        let spec = match key.kind {
            "ComputeIdentity" => json!({
                "workspaceRef": {"name": "ws"}, "computeName": key.name,
                "identity": {"type": "UserAssigned", "userAssignedIdentities": [self.identity_of(&key.namespace)]},
                "federation": {"serviceAccounts": ["training"]},
                "tokenSecret": {"name": format!("{}-token", key.name), "audiences": ["https://storage.azure.com", "https://vault.azure.net"]},
            }),
            "Datastore" => json!({
                "workspaceRef": {"name": "ws"}, "datastoreName": key.name.replace('-', "_"),
                "type": "AzureBlob", "accountName": "stbench", "containerName": "training-data",
                "credentials": {"type": "AccountKey", "secretRef": {"name": "st-key", "key": "accountKey"}},
                "register": false,
                "podAccess": {"secretName": format!("{}-access", key.name), "sas": {"permissions": "rl", "ttl": "1h"}},
            }),
            _ => json!({
                "workspaceRef": {"name": "ws"},
                "registry": {"loginServer": LOGIN_SERVER, "resourceId": azure::registry_id()},
                "auth": {"type": "ManagedIdentity", "managedIdentity": {"computeIdentityRef": {"name": PULL_IDENTITY}}},
                "target": {"secretName": format!("{}-pull", key.name)},
            }),
        };
        json!({
            "apiVersion": format!("{GROUP}/{VERSION}"), "kind": key.kind,
            "metadata": {"name": key.name, "namespace": key.namespace, "labels": {RUN_LABEL: self.id}},
            "spec": spec,
        })
    }

    /// Everything the teams and the platform provide before the measured objects: namespaces
    /// (admitted by label), ServiceAccounts, the storage key, the shared credential, a workspace and
    /// the pull identity per namespace.
    pub async fn set_up(&self, client: &Client) -> anyhow::Result<Vec<Key>> {
        for ns in std::iter::once(&self.home).chain(&self.namespaces) {
            let mut labels = json!({RUN_LABEL: self.id});
            if self.shards > 1 && ns != &self.home {
                labels[SHARD_LABEL] = self.shard_of(ns).to_string().into();
            }
            let namespace: Namespace =
                serde_json::from_value(json!({"metadata": {"name": ns, "labels": labels}}))?;
            Api::<Namespace>::all(client.clone())
                .create(&PostParams::default(), &namespace)
                .await?;
        }
        let params = PatchParams::apply("aml-identity-bench").force();
        let secrets = Api::<Secret>::namespaced(client.clone(), &self.home);
        secrets
            .patch(
                "aml-platform-sp",
                &params,
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "aml-platform-sp"}, "stringData": {"clientSecret": APP_SECRET}})),
            )
            .await?;
        let credential = json!({
            "apiVersion": format!("{GROUP}/{VERSION}"), "kind": "ClusterAzureCredential",
            "metadata": {"name": self.credential(), "labels": {RUN_LABEL: self.id}},
            "spec": {
                "tenantId": TENANT,
                "servicePrincipal": {"clientId": APP_CLIENT_ID, "clientSecretRef": {"name": "aml-platform-sp", "key": "clientSecret"}},
                "allowedNamespaces": {"selector": {"matchLabels": {RUN_LABEL: self.id}}},
                "allowedScopes": [
                    format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-aml-{{namespace}}"),
                    azure::group_id(azure::SHARED_GROUP),
                ],
                "allowedAudiences": ["https://storage.azure.com", "https://vault.azure.net"],
            },
        });
        create(client, &credential).await?;
        let mut waited = Vec::new();
        for ns in &self.namespaces {
            let sa: ServiceAccount =
                serde_json::from_value(json!({"metadata": {"name": "training"}}))?;
            Api::<ServiceAccount>::namespaced(client.clone(), ns)
                .create(&PostParams::default(), &sa)
                .await?;
            // An emulated 64-byte account key (base64, as Azure shows it): what a team keeps,
            // never what a pod gets.
            let key = base64_of(&format!(
                "{:<64}",
                format!("bench-account-key-{ns}-{}", self.id)
            ));
            Api::<Secret>::namespaced(client.clone(), ns)
                .patch(
                    "st-key",
                    &params,
                    &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "st-key"}, "stringData": {"accountKey": key}})),
                )
                .await?;
            create(client, &json!({
                "apiVersion": format!("{GROUP}/{VERSION}"), "kind": "Workspace",
                "metadata": {"name": "ws", "namespace": ns, "labels": {RUN_LABEL: self.id}},
                "spec": {"credentialRef": {"kind": "ClusterAzureCredential", "name": self.credential()},
                         "subscriptionId": SUBSCRIPTION, "resourceGroup": azure::team_group(ns), "workspaceName": format!("mlw-{ns}")},
            }))
            .await?;
            let pull = Key {
                kind: "ComputeIdentity",
                namespace: ns.clone(),
                name: PULL_IDENTITY.into(),
            };
            create(client, &self.object(&pull)).await?;
            waited.push(Key {
                kind: "Workspace",
                namespace: ns.clone(),
                name: "ws".into(),
            });
            waited.push(pull);
        }
        Ok(waited)
    }
}

/// The API of one of this group's kinds (namespaced unless `namespace` is `None`).
pub fn api(client: &Client, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
    let lower = kind.to_ascii_lowercase();
    let plural = match lower.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None => format!("{lower}s"),
    };
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, kind), &plural);
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// Creates one of this group's objects from its JSON.
pub async fn create(client: &Client, object: &serde_json::Value) -> anyhow::Result<DynamicObject> {
    let object: DynamicObject = serde_json::from_value(object.clone())?;
    let kind = object
        .types
        .as_ref()
        .map(|t| t.kind.clone())
        .unwrap_or_default();
    let api = api(client, &kind, object.namespace().as_deref());
    Ok(api.create(&PostParams::default(), &object).await?)
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// Removes what `runs` created: finalizers dropped (the Azure side goes with the emulator), then
/// the namespaces and the cluster-scoped credential.
pub async fn remove(client: &Client, runs: &[&Run], in_flight: usize) -> anyhow::Result<()> {
    use futures::StreamExt;
    let drop_finalizers = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    for run in runs {
        for kind in ["Workspace", KINDS[0], KINDS[1], KINDS[2]] {
            let selector =
                kube::api::ListParams::default().labels(&format!("{RUN_LABEL}={}", run.id));
            let list = api(client, kind, None).list_metadata(&selector).await?;
            let results: Vec<kube::Result<_>> = futures::stream::iter(list.items)
                .map(|o| {
                    let api = api(client, kind, o.metadata.namespace.as_deref());
                    let patch = &drop_finalizers;
                    async move {
                        api.patch_metadata(&o.name_any(), &PatchParams::default(), patch)
                            .await
                    }
                })
                .buffer_unordered(in_flight)
                .collect()
                .await;
            for r in results {
                match r {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let namespaces = Api::<Namespace>::all(client.clone());
        for ns in std::iter::once(&run.home).chain(&run.namespaces) {
            match namespaces.delete(ns, &Default::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        let credentials = api(client, "ClusterAzureCredential", None);
        let _ = credentials
            .patch_metadata(&run.credential(), &PatchParams::default(), &drop_finalizers)
            .await;
        let _ = credentials
            .delete(&run.credential(), &Default::default())
            .await;
    }
    Ok(())
}
