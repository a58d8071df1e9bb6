//! Tenancy end to end: two namespaces admitted to one ClusterAzureCredential whose principal is
//! Owner of the whole subscription, as a platform team runs it. The credential's `allowedScopes`
//! (`rg-aml-{namespace}`) is the ceiling: what one team names in another team's resource group is
//! refused before any Azure request, and what the operator made is revoked when it leaves the
//! spec, when the namespace goes or is de-admitted — never what it did not make.

mod support;

use std::time::Duration;

use aml_identity_emulator::Seed;
use aml_identity_emulator::state::{
    Registry, StorageAccount, Subscription, UserAssignedIdentity, Vault,
};
use aml_identity_operator::azure::Credential;
use aml_identity_operator::workload_identity::ServiceAccountAssertion;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use support::azure::*;
use support::cluster::{self, Operator};
use support::e2e::*;

/// Label every object of one test carries; the operator reconciles only those.
const LABEL: &str = "amlidentity.io/tenancy-test";

fn rg_id(rg: &str) -> String {
    format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{rg}")
}

/// One team's resources in its own resource group `rg-aml-<namespace>`.
struct Team {
    ns: String,
    rg: String,
}

impl Team {
    fn id(&self, provider: &str, name: &str) -> String {
        format!("{}/providers/{provider}/{name}", rg_id(&self.rg))
    }
    fn workspace(&self) -> String {
        self.id("Microsoft.MachineLearningServices/workspaces", "mlw")
    }
    fn identity(&self, name: &str) -> String {
        self.id("Microsoft.ManagedIdentity/userAssignedIdentities", name)
    }
    fn vault(&self) -> String {
        // Vault names are global in Azure (they name the data-plane host): one per team.
        let name: String = format!("kv{}", self.ns.replace('-', ""))
            .chars()
            .take(24)
            .collect();
        self.id("Microsoft.KeyVault/vaults", &name)
    }
    fn storage(&self) -> String {
        self.id("Microsoft.Storage/storageAccounts", "sta")
    }
    fn registry(&self) -> String {
        self.id(
            "Microsoft.ContainerRegistry/registries",
            &self.registry_name(),
        )
    }
    fn registry_name(&self) -> String {
        format!("cr{}", self.ns.replace('-', ""))
    }
}

struct Tenancy {
    client: Client,
    azure: Azure,
    operator: Operator,
    home: String,
    credential: String,
    label: String,
    a: Team,
    b: Team,
}

impl Tenancy {
    /// The emulator with both teams' resources (and a look-alike group `rg-aml-<a>b`), the shared
    /// credential admitting both namespaces, a Workspace adopting each team's workspace, and an
    /// operator across both namespaces.
    async fn start(extra: &[&str]) -> Tenancy {
        let client = cluster::client().await;
        cluster::install_crds(&client).await;
        let (_, ca) = cluster::issuer_and_ca(&client).await;
        let azure = Azure::start(vec![ca]).await;
        let home = cluster::namespace(&client, "tn-op").await;
        let label = cluster::unique();
        let a = Team {
            ns: cluster::namespace(&client, "tn-a").await,
            rg: String::new(),
        };
        let a = Team {
            rg: format!("rg-aml-{}", a.ns),
            ..a
        };
        let b_ns = cluster::namespace(&client, "tn-b").await;
        let b = Team {
            rg: format!("rg-aml-{b_ns}"),
            ns: b_ns,
        };
        let lookalike = format!("{}b", a.rg);
        let mut seed = Seed {
            subscriptions: vec![Subscription {
                id: SUBSCRIPTION.into(),
                tenant_id: TENANT.into(),
                resource_groups: vec![
                    RESOURCE_GROUP.into(),
                    a.rg.clone(),
                    b.rg.clone(),
                    lookalike.clone(),
                ],
            }],
            ..Default::default()
        };
        for team in [&a, &b] {
            seed.resources.push(serde_json::json!({"id": team.workspace(), "name": "mlw", "location": "eastus",
                "identity": {"type": "SystemAssigned", "principalId": "5d6e7f80-1a2b-4c3d-8e9f-0a1b2c3d4e5f"},
                "properties": {"workspaceId": "0f0e0d0c-0b0a-4909-8807-060504030201", "provisioningState": "Succeeded",
                    "containerRegistry": team.registry()}}));
            seed.user_assigned_identities.push(UserAssignedIdentity {
                id: team.identity("id-shared"),
                location: "eastus".into(),
                tenant_id: TENANT.into(),
                client_id: uuid::Uuid::new_v4().to_string(),
                principal_id: uuid::Uuid::new_v4().to_string(),
                tags: Default::default(),
                federated_credentials: vec![],
            });
            seed.vaults.push(Vault {
                id: team.vault(),
                tenant_id: TENANT.into(),
                ..Default::default()
            });
            seed.storage_accounts.push(StorageAccount {
                id: team.storage(),
                location: "eastus".into(),
                keys: vec!["a2V5MQ==".into(), "a2V5Mg==".into()],
            });
            seed.registries.push(Registry {
                id: team.registry(),
                login_server: format!("{}.azurecr.io", team.registry_name()),
                admin_user_enabled: true,
            });
        }
        seed.user_assigned_identities.push(UserAssignedIdentity {
            id: format!(
                "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-x",
                rg_id(&lookalike)
            ),
            location: "eastus".into(),
            tenant_id: TENANT.into(),
            client_id: uuid::Uuid::new_v4().to_string(),
            principal_id: uuid::Uuid::new_v4().to_string(),
            tags: Default::default(),
            federated_credentials: vec![],
        });
        azure.emulator().seed(seed).unwrap();
        // The platform's principal may manage everything: only allowedScopes keeps teams apart.
        let credential = format!("tn-{label}");
        platform_credential(&client, &azure, &home, &credential, &[&a.ns, &b.ns]).await;
        let mut args = azure_args(&azure);
        args.extend(["--cleanup-attempts".to_string(), "3".into()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let operator = Operator::start_across(
            &home,
            &format!("{LABEL}={label}"),
            &format!("lease-{label}"),
            &format!("tn-{label}-0"),
            &args,
        );
        let t = Tenancy {
            client,
            azure,
            operator,
            home,
            credential,
            label,
            a,
            b,
        };
        for team in [&t.a, &t.b] {
            let sa: ServiceAccount =
                serde_json::from_value(serde_json::json!({"metadata": {"name": "training"}}))
                    .unwrap();
            Api::<ServiceAccount>::namespaced(t.client.clone(), &team.ns)
                .create(&PostParams::default(), &sa)
                .await
                .unwrap();
            t.apply(&team.ns, t.workspace("ws", &team.rg)).await;
            t.reason("Workspace", &team.ns, "ws", "WorkspaceReady")
                .await;
        }
        t
    }

    /// A Workspace adopting `mlw` in resource group `rg` through the shared credential.
    fn workspace(&self, name: &str, rg: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "amlidentity.io/v1alpha1", "kind": "Workspace", "metadata": {"name": name},
            "spec": {"credentialRef": {"kind": "ClusterAzureCredential", "name": self.credential},
                     "subscriptionId": SUBSCRIPTION, "resourceGroup": rg, "workspaceName": "mlw"},
        })
    }

    /// Creates an object labelled for this test's operator.
    async fn apply(&self, ns: &str, mut object: serde_json::Value) -> String {
        object["metadata"]["labels"][LABEL] = self.label.clone().into();
        apply(&self.client, ns, object).await
    }

    async fn reason(&self, kind: &str, ns: &str, name: &str, reason: &str) -> String {
        ready_reason(&self.client, kind, ns, name, reason).await.1
    }

    /// The request counts once the shared credential is proven and nothing has called Azure for
    /// two seconds (settled objects are quiet until their periodic resync, minutes away).
    async fn settled(&self) -> (u64, u64) {
        self.reason(
            "ClusterAzureCredential",
            "",
            &self.credential,
            "Authenticated",
        )
        .await;
        let mut last = self.requests();
        for _ in 0..15 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let now = self.requests();
            if now == last {
                return now;
            }
            last = now;
        }
        panic!("Azure traffic did not settle in 30 s");
    }

    /// Every ARM and token request the emulator answered so far.
    fn requests(&self) -> (u64, u64) {
        (
            self.azure.emulator().requests("arm."),
            self.azure.emulator().requests("entra.token"),
        )
    }

    /// Role assignments at or below `scope`, as (scope, role, principal).
    fn assignments_below(&self, scope: &str) -> Vec<(String, String, String)> {
        let scope = scope.to_ascii_lowercase();
        let mut list: Vec<_> = self
            .azure
            .emulator()
            .role_assignments()
            .into_iter()
            .filter(|ra| ra.scope.to_ascii_lowercase().starts_with(&scope))
            .map(|ra| (ra.scope, ra.role_definition_id, ra.principal_id))
            .collect();
        list.sort();
        list
    }

    /// Federated credentials on an identity, as subjects.
    fn subjects(&self, identity: &str) -> Vec<String> {
        self.azure
            .emulator()
            .identity(identity)
            .map(|i| {
                i.federated_credentials
                    .into_iter()
                    .map(|f| f.subject)
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn patch(&self, kind_name: &str, ns: &str, name: &str, patch: serde_json::Value) {
        cluster::dynamic_api(&self.client, &kind(kind_name), ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
    }

    /// Deletes the test's objects and waits (bounded) until their cleanup ran while the operator
    /// still does, then the namespaces (namespace deletion itself is the subject of its own test).
    async fn finish(self) {
        for kind_name in [
            "ComputeIdentity",
            "Datastore",
            "RegistryConnection",
            "Workspace",
        ] {
            for ns in [&self.a.ns, &self.b.ns] {
                let api = cluster::dynamic_api(&self.client, &kind(kind_name), ns);
                let _ = api
                    .delete_collection(&Default::default(), &Default::default())
                    .await;
                cluster::wait_until(
                    Duration::from_secs(60),
                    &format!("{kind_name} objects in {ns} to be gone"),
                    || async {
                        api.list(&Default::default())
                            .await
                            .ok()?
                            .items
                            .is_empty()
                            .then_some(())
                    },
                )
                .await;
            }
        }
        for ns in [&self.a.ns, &self.b.ns, &self.home] {
            cluster::delete_namespace(&self.client, ns).await;
        }
    }
}

async fn delete_namespace_and_wait(client: &Client, ns: &str) {
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    let _ = namespaces.delete(ns, &Default::default()).await;
    cluster::wait_until(
        Duration::from_secs(90),
        &format!("namespace {ns} to be gone"),
        || async {
            namespaces
                .get_opt(ns)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
}

/// A token for `account` of `ns` exchanged at Entra for `client_id`: what a pod could do itself.
async fn exchange(t: &Tenancy, ns: &str, account: &str, client_id: &str) -> Result<(), String> {
    let source = std::sync::Arc::new(ServiceAccountAssertion::new(t.client.clone(), ns, account));
    let key = format!("probe-{}", cluster::unique());
    let credential = Credential::workload_identity(
        key,
        &t.azure.cloud,
        &t.azure.transport,
        TENANT,
        client_id,
        source,
    )
    .unwrap();
    credential
        .request(
            "https://storage.azure.com",
            jiff::Timestamp::now().as_second(),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn compute_identity(identities: &[String], accounts: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "workspaceRef": {"name": "ws"}, "computeName": "cpu",
        "identity": {"type": "UserAssigned", "userAssignedIdentities": identities},
        "federation": {"serviceAccounts": accounts},
    })
}

fn object(kind_name: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"apiVersion": "amlidentity.io/v1alpha1", "kind": kind_name, "metadata": {"name": name}, "spec": spec})
}

#[tokio::test(flavor = "multi_thread")]
async fn what_a_namespace_names_outside_its_scopes_is_refused_without_a_request() {
    let t = Tenancy::start(&[]).await;
    let (a, b) = (&t.a, &t.b);
    let before_a = t.assignments_below(&rg_id(&a.rg));
    let settled = t.settled().await;

    // team-b names team-a's things, each in its own object.
    let mut refused: Vec<(&str, String, &str)> = Vec::new();
    let own = b.identity("id-shared");
    let attempts = [
        (
            "ComputeIdentity",
            "steal-identity",
            compute_identity(&[a.identity("id-shared")], &["training"]),
            "spec.identity.userAssignedIdentities[0]",
        ),
        (
            "ComputeIdentity",
            "steal-vault",
            serde_json::json!({"workspaceRef": {"name": "ws"}, "computeName": "cpu",
            "identity": {"type": "UserAssigned", "userAssignedIdentities": [own]},
            "grants": {"keyVaultSecretsUser": [a.vault()], "storageBlobDataReader": [b.storage()]}}),
            "spec.grants.keyVaultSecretsUser[0]",
        ),
        (
            "ComputeIdentity",
            "steal-storage",
            serde_json::json!({"workspaceRef": {"name": "ws"}, "computeName": "cpu",
            "identity": {"type": "UserAssigned", "userAssignedIdentities": [own]},
            "grants": {"storageBlobDataReader": [a.storage()]}}),
            "spec.grants.storageBlobDataReader[0]",
        ),
        (
            "ComputeIdentity",
            "management-token",
            serde_json::json!({"workspaceRef": {"name": "ws"}, "computeName": "cpu",
            "identity": {"type": "UserAssigned", "userAssignedIdentities": [own]}, "federation": {"serviceAccounts": ["training"]},
            "tokenSecret": {"name": "mgmt", "audiences": ["https://management.azure.com"]}}),
            "spec.tokenSecret.audiences[0]",
        ),
        (
            "RegistryConnection",
            "steal-admin",
            serde_json::json!({"workspaceRef": {"name": "ws"},
            "registry": {"loginServer": format!("{}.azurecr.io", a.registry_name()), "resourceId": a.registry()},
            "auth": {"type": "AdminUser"}, "target": {"secretName": "stolen-admin"}}),
            "spec.registry.resourceId",
        ),
        (
            "RegistryConnection",
            "steal-operator",
            serde_json::json!({"workspaceRef": {"name": "ws"},
            "registry": {"loginServer": format!("{}.azurecr.io", b.registry_name()), "resourceId": b.registry()},
            "auth": {"type": "ManagedIdentity", "managedIdentity": {"clientId": "00000000-0000-0000-0000-00000000000a", "resourceId": a.identity("id-shared"), "serviceAccount": "training"}},
            "grants": {"managedIdentityOperator": true}, "target": {"secretName": "pull"}}),
            "spec.auth.managedIdentity.resourceId",
        ),
        (
            "RegistryConnection",
            "other-login-server",
            serde_json::json!({"workspaceRef": {"name": "ws"},
            "registry": {"loginServer": format!("{}.azurecr.io", a.registry_name()), "resourceId": b.registry()},
            "auth": {"type": "AdminUser"}, "target": {"secretName": "pull-2"}}),
            "spec.registry.loginServer",
        ),
    ];
    for (kind_name, name, spec, field) in attempts {
        t.apply(&b.ns, object(kind_name, name, spec)).await;
        refused.push((kind_name, name.to_owned(), field));
    }
    // team-a's workspace, managed and deleted from team-b; and its datastore and connection
    // names, through a team-b Workspace object that names team-a's workspace.
    let mut hijack = t.workspace("hijack", &a.rg);
    hijack["spec"]["management"] = "Manage".into();
    hijack["spec"]["location"] = "eastus".into();
    hijack["spec"]["deletionPolicy"] = "Delete".into();
    t.apply(&b.ns, hijack).await;
    refused.push((
        "Workspace",
        "hijack".into(),
        "spec.subscriptionId/resourceGroup/workspaceName",
    ));
    t.apply(&b.ns, t.workspace("adopt-a", &a.rg)).await;
    refused.push((
        "Workspace",
        "adopt-a".into(),
        "spec.subscriptionId/resourceGroup/workspaceName",
    ));
    // The look-alike resource group rg-aml-<a>b is not team-a's either.
    let lookalike = format!(
        "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-x",
        rg_id(&format!("{}b", a.rg))
    );
    t.apply(
        &a.ns,
        object(
            "ComputeIdentity",
            "lookalike",
            compute_identity(std::slice::from_ref(&lookalike), &["training"]),
        ),
    )
    .await;

    for (kind_name, name, field) in &refused {
        // A login server naming another registry than the resource id beside it is refused by
        // validation already, before any scope is looked at.
        let reason = if field.contains("loginServer") {
            "InvalidSpec"
        } else {
            "OutOfScope"
        };
        let message = t.reason(kind_name, &b.ns, name, reason).await;
        let allowed = if field.contains("audiences") {
            "(https://storage.azure.com, https://vault.azure.net)".to_owned()
        } else if field.contains("loginServer") {
            "is not the login server of registry".to_owned()
        } else {
            format!("rg-aml-{}", b.ns)
        };
        assert!(
            message.contains(field) && message.contains(&allowed),
            "{kind_name} {name}: the refusal names {field} and what is allowed: {message}"
        );
    }
    let message = t
        .reason("ComputeIdentity", &a.ns, "lookalike", "OutOfScope")
        .await;
    assert!(message.contains(&lookalike), "{message}");
    for name in ["ds", "conn"] {
        let spec = if name == "ds" {
            serde_json::json!({"workspaceRef": {"name": "adopt-a"}, "datastoreName": "workspaceblobstore", "type": "AzureBlob",
                "accountName": "stteam", "containerName": "data", "register": true})
        } else {
            serde_json::json!({"workspaceRef": {"name": "adopt-a"},
                "registry": {"loginServer": format!("{}.azurecr.io", b.registry_name()), "resourceId": b.registry()},
                "auth": {"type": "ManagedIdentity", "managedIdentity": {"clientId": "00000000-0000-0000-0000-00000000000b", "resourceId": b.identity("id-shared"), "serviceAccount": "training"}}, "workspaceConnection": {"name": "workspace-acr"}, "target": {"secretName": "pull-3"}})
        };
        let kind_name = if name == "ds" {
            "Datastore"
        } else {
            "RegistryConnection"
        };
        t.apply(&b.ns, object(kind_name, name, spec)).await;
        let message = t.reason(kind_name, &b.ns, name, "OutOfScope").await;
        let field = if name == "ds" {
            "spec.datastoreName"
        } else {
            "spec.workspaceConnection.name"
        };
        assert!(message.contains(field), "{message}");
    }
    // Give any stray request time to happen, then count: not one went out for these objects.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        t.requests(),
        settled,
        "(ARM, Entra) requests made for refused objects"
    );

    // Nothing of team-a changed: no federated credential on its identity, no new grant in its
    // group, its workspace still there; and deleting the hijacking Workspace deletes nothing.
    assert!(t.subjects(&a.identity("id-shared")).is_empty());
    assert_eq!(t.assignments_below(&rg_id(&a.rg)), before_a);
    // A Workspace waits, and says so, while objects that use it are still there.
    cluster::dynamic_api(&t.client, &kind("Workspace"), &b.ns)
        .delete("adopt-a", &Default::default())
        .await
        .unwrap();
    let message = t
        .reason("Workspace", &b.ns, "adopt-a", "WaitingForDependents")
        .await;
    assert!(
        message.contains("Datastore") && message.contains("RegistryConnection"),
        "{message}"
    );
    delete_and_wait(&t.client, "Datastore", &b.ns, "ds").await;
    delete_and_wait(&t.client, "RegistryConnection", &b.ns, "conn").await;
    // Their going releases the waiting Workspace at once.
    let workspaces = cluster::dynamic_api(&t.client, &kind("Workspace"), &b.ns);
    cluster::wait_until(
        Duration::from_secs(10),
        "adopt-a to be released",
        || async {
            matches!(workspaces.get("adopt-a").await, Err(kube::Error::Api(s)) if s.code == 404)
                .then_some(())
        },
    )
    .await;
    delete_and_wait(&t.client, "Workspace", &b.ns, "hijack").await;
    assert!(
        t.azure.emulator().resource(&a.workspace()).is_some(),
        "team-a's workspace is still there"
    );
    let secrets = Api::<Secret>::namespaced(t.client.clone(), &b.ns);
    assert!(secrets.get_opt("stolen-admin").await.unwrap().is_none());
    assert_no_leaks(&t.client, &t.azure, &t.operator, &b.ns, &[APP_SECRET]).await;
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn what_leaves_the_spec_is_revoked_in_azure() {
    let t = Tenancy::start(&[]).await;
    let a = &t.a;
    let e = t.azure.emulator();
    for account in ["eval", "other"] {
        let sa: ServiceAccount =
            serde_json::from_value(serde_json::json!({"metadata": {"name": account}})).unwrap();
        Api::<ServiceAccount>::namespaced(t.client.clone(), &a.ns)
            .create(&PostParams::default(), &sa)
            .await
            .unwrap();
    }
    // A created identity first, the team's existing one second; two ServiceAccounts; two grants.
    let created = a.identity("id-created");
    let mut spec = compute_identity(
        &[created.clone(), a.identity("id-shared")],
        &["training", "eval"],
    );
    spec["createIfMissing"] = serde_json::json!({"location": "eastus"});
    spec["grants"] = serde_json::json!({"storageBlobDataReader": [a.storage()], "keyVaultSecretsUser": [a.vault()]});
    t.apply(&a.ns, object("ComputeIdentity", "ci", spec.clone()))
        .await;
    t.reason("ComputeIdentity", &a.ns, "ci", "IdentityReady")
        .await;
    let identity = e.identity(&created).expect("created");
    let (client_id, principal) = (identity.client_id.clone(), identity.principal_id.clone());
    let subject = |sa: &str| format!("system:serviceaccount:{}:{sa}", a.ns);
    let mut subjects = t.subjects(&created);
    subjects.sort();
    assert_eq!(subjects, vec![subject("eval"), subject("training")]);
    assert!(exchange(&t, &a.ns, "eval", &client_id).await.is_ok());
    assert!(e.authorized(
        &principal,
        "Microsoft.KeyVault/vaults/secrets/getSecret/action",
        &a.vault(),
        true
    ));

    // Drop a ServiceAccount, a grant and the second identity.
    t.patch(
        "ComputeIdentity",
        &a.ns,
        "ci",
        serde_json::json!({"spec": {
            "identity": {"userAssignedIdentities": [created.clone()]},
            "federation": {"serviceAccounts": ["training"]},
            "grants": {"keyVaultSecretsUser": []},
        }}),
    )
    .await;
    cluster::wait_until(
        Duration::from_secs(30),
        "the dropped grant and ServiceAccount to be revoked",
        || async {
            (t.subjects(&created) == vec![subject("training")]
                && !e.authorized(
                    &principal,
                    "Microsoft.KeyVault/vaults/secrets/getSecret/action",
                    &a.vault(),
                    true,
                ))
            .then_some(())
        },
    )
    .await;
    let refused = exchange(&t, &a.ns, "eval", &client_id).await.unwrap_err();
    assert!(
        refused.contains("70021"),
        "the removed ServiceAccount can no longer sign in: {refused}"
    );
    assert!(exchange(&t, &a.ns, "training", &client_id).await.is_ok());
    assert!(e.authorized(
        &principal,
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
        &a.storage(),
        true
    ));
    assert!(
        e.identity(&a.identity("id-shared")).is_some(),
        "an identity the operator did not create stays"
    );

    // Move to the existing identity: the created one goes, its federation moves.
    t.patch(
        "ComputeIdentity",
        &a.ns,
        "ci",
        serde_json::json!({"spec": {
            "identity": {"userAssignedIdentities": [a.identity("id-shared")]},
        }}),
    )
    .await;
    cluster::wait_until(
        Duration::from_secs(30),
        "the created identity to be deleted",
        || async { e.identity(&created).is_none().then_some(()) },
    )
    .await;
    assert_eq!(
        t.subjects(&a.identity("id-shared")),
        vec![subject("training")]
    );
    assert!(!e.authorized(
        &principal,
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
        &a.storage(),
        true
    ));

    // Deleting the object leaves nothing it made: no federated credential, no grant.
    let shared_principal = e.identity(&a.identity("id-shared")).unwrap().principal_id;
    delete_and_wait(&t.client, "ComputeIdentity", &a.ns, "ci").await;
    assert!(t.subjects(&a.identity("id-shared")).is_empty());
    assert!(
        t.assignments_below(&rg_id(&a.rg))
            .iter()
            .all(|(_, _, p)| *p != shared_principal && *p != principal)
    );
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_two_objects_need_survives_until_the_last_one_goes() {
    let t = Tenancy::start(&[]).await;
    let a = &t.a;
    let e = t.azure.emulator();
    let spec = |account: &str| {
        let mut s = compute_identity(&[a.identity("id-shared")], &[account]);
        s["grants"] = serde_json::json!({"storageBlobDataReader": [a.storage()]});
        s
    };
    t.apply(&a.ns, object("ComputeIdentity", "first", spec("training")))
        .await;
    t.apply(&a.ns, object("ComputeIdentity", "second", spec("training")))
        .await;
    for name in ["first", "second"] {
        t.reason("ComputeIdentity", &a.ns, name, "IdentityReady")
            .await;
    }
    let principal = e.identity(&a.identity("id-shared")).unwrap().principal_id;
    let read = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read";
    let grants = || {
        t.assignments_below(&a.storage())
            .into_iter()
            .filter(|(_, _, p)| *p == principal)
            .count()
    };
    assert_eq!(grants(), 1, "one assignment, held by both");
    assert_eq!(
        t.subjects(&a.identity("id-shared")).len(),
        1,
        "one federated credential, held by both"
    );

    delete_and_wait(&t.client, "ComputeIdentity", &a.ns, "first").await;
    assert!(
        e.authorized(&principal, read, &a.storage(), true),
        "the other still needs it"
    );
    assert_eq!(t.subjects(&a.identity("id-shared")).len(), 1);
    delete_and_wait(&t.client, "ComputeIdentity", &a.ns, "second").await;
    assert!(
        !e.authorized(&principal, read, &a.storage(), true),
        "the last holder removed it"
    );
    assert!(t.subjects(&a.identity("id-shared")).is_empty());
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn what_exists_already_is_neither_overwritten_nor_deleted() {
    let t = Tenancy::start(&[]).await;
    let a = &t.a;
    let e = t.azure.emulator();
    let datastore = format!("{}/datastores/workspaceblobstore", a.workspace());
    let connection = format!("{}/connections/workspace-acr", a.workspace());
    e.seed(Seed {
        resources: vec![
            serde_json::json!({"id": datastore, "name": "workspaceblobstore", "properties": {"datastoreType": "AzureBlob", "accountName": "sta", "containerName": "azureml", "credentials": {"credentialsType": "None"}}}),
            serde_json::json!({"id": connection, "name": "workspace-acr", "properties": {"category": "ContainerRegistry", "target": "elsewhere.azurecr.io", "authType": "None"}}),
        ],
        ..Default::default()
    })
    .unwrap();
    let before = (
        e.resource(&a.workspace()),
        e.resource(&datastore),
        e.resource(&connection),
    );

    let mut manage = t.workspace("manage", &a.rg);
    manage["spec"]["management"] = "Manage".into();
    manage["spec"]["location"] = "eastus".into();
    manage["spec"]["deletionPolicy"] = "Delete".into();
    t.apply(&a.ns, manage).await;
    t.apply(&a.ns, object("Datastore", "ds", serde_json::json!({"workspaceRef": {"name": "ws"}, "datastoreName": "workspaceblobstore",
        "type": "AzureBlob", "accountName": "stteam", "containerName": "mine", "register": true}))).await;
    let shared_client_id = e
        .identity(&a.identity("id-shared"))
        .expect("seeded")
        .client_id;
    t.apply(&a.ns, object("RegistryConnection", "rc", serde_json::json!({"workspaceRef": {"name": "ws"},
        "registry": {"loginServer": format!("{}.azurecr.io", a.registry_name()), "resourceId": a.registry()},
        "auth": {"type": "ManagedIdentity", "managedIdentity": {"clientId": shared_client_id, "resourceId": a.identity("id-shared"), "serviceAccount": "training"}}, "workspaceConnection": {"name": "workspace-acr"}, "target": {"secretName": "pull"}}))).await;
    for (kind_name, name) in [
        ("Workspace", "manage"),
        ("Datastore", "ds"),
        ("RegistryConnection", "rc"),
    ] {
        let message = t
            .reason(kind_name, &a.ns, name, "AzureTargetConflict")
            .await;
        assert!(message.contains("not"), "{message}");
        delete_and_wait(&t.client, kind_name, &a.ns, name).await;
    }
    assert_eq!(
        (
            e.resource(&a.workspace()),
            e.resource(&datastore),
            e.resource(&connection)
        ),
        before,
        "the existing workspace, datastore and connection are untouched"
    );
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_or_de_admitting_a_namespace_revokes_what_it_was_given() {
    let t = Tenancy::start(&[]).await;
    let e = t.azure.emulator();
    let read = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read";
    for team in [&t.a, &t.b] {
        let mut spec = compute_identity(&[team.identity("id-created")], &["training"]);
        spec["createIfMissing"] = serde_json::json!({"location": "eastus"});
        spec["grants"] = serde_json::json!({"storageBlobDataReader": [team.storage()]});
        spec["tokenSecret"] =
            serde_json::json!({"name": "tokens", "audiences": ["https://storage.azure.com"]});
        t.apply(&team.ns, object("ComputeIdentity", "ci", spec))
            .await;
        t.reason("ComputeIdentity", &team.ns, "ci", "TokensIssued")
            .await;
        assert_eq!(t.subjects(&team.identity("id-created")).len(), 1);
    }
    // team-a also signs in with a credential of its own namespace, whose Secret the namespace
    // deletion removes along with everything else.
    let a_ns = t.a.ns.clone();
    secret(&t.client, &a_ns, "own-sp", "clientSecret", APP_SECRET).await;
    t.apply(&a_ns, serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "AzureCredential", "metadata": {"name": "own"},
        "spec": {"tenantId": TENANT, "servicePrincipal": {"clientId": APP_CLIENT_ID, "clientSecretRef": {"name": "own-sp", "key": "clientSecret"}}},
    }))
    .await;
    t.reason("AzureCredential", &a_ns, "own", "Authenticated")
        .await;
    let secrets_a = Api::<Secret>::namespaced(t.client.clone(), &a_ns);
    let guarded = |s: Option<Secret>| {
        s.is_some_and(|s| {
            s.finalizers()
                .iter()
                .any(|f| f == "amlidentity.io/credential-in-use")
        })
    };
    cluster::wait_until(
        Duration::from_secs(20),
        "the credential's Secret to be guarded",
        || async { guarded(secrets_a.get_opt("own-sp").await.unwrap()).then_some(()) },
    )
    .await;
    // Deleted on its own (to replace it), the Secret goes at once, as it always did.
    secrets_a
        .delete("own-sp", &Default::default())
        .await
        .unwrap();
    cluster::wait_until(
        Duration::from_secs(20),
        "the replaced Secret to go",
        || async {
            secrets_a
                .get_opt("own-sp")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
    secret(&t.client, &a_ns, "own-sp", "clientSecret", APP_SECRET).await;
    let mut own = t.workspace("own-ws", &t.a.rg);
    own["spec"]["credentialRef"] = serde_json::json!({"name": "own"});
    t.apply(&a_ns, own).await;
    t.reason("Workspace", &a_ns, "own-ws", "WorkspaceReady")
        .await;
    let mut spec = compute_identity(&[t.a.identity("id-own")], &["training"]);
    spec["workspaceRef"] = serde_json::json!({"name": "own-ws"});
    spec["createIfMissing"] = serde_json::json!({"location": "eastus"});
    spec["grants"] = serde_json::json!({"keyVaultSecretsUser": [t.a.vault()]});
    t.apply(&a_ns, object("ComputeIdentity", "own-ci", spec))
        .await;
    t.reason("ComputeIdentity", &a_ns, "own-ci", "IdentityReady")
        .await;
    let own_principal = e.identity(&t.a.identity("id-own")).unwrap().principal_id;
    cluster::wait_until(
        Duration::from_secs(20),
        "the replaced Secret to be guarded",
        || async { guarded(secrets_a.get_opt("own-sp").await.unwrap()).then_some(()) },
    )
    .await;

    // De-admitting team-b: its token Secret and federated credential go at once.
    let credentials = cluster::dynamic_api(&t.client, &kind("ClusterAzureCredential"), "");
    credentials
        .patch(
            &t.credential,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"allowedNamespaces": {"names": [t.a.ns]}}})),
        )
        .await
        .unwrap();
    let message = t.reason("ComputeIdentity", &t.b.ns, "ci", "Denied").await;
    assert!(
        message.contains("keeps no credential Secret"),
        "{message}\n{}",
        t.operator.logs()
    );
    assert!(
        t.subjects(&t.b.identity("id-created")).is_empty(),
        "team-b's federated credential is revoked"
    );
    let secrets = Api::<Secret>::namespaced(t.client.clone(), &t.b.ns);
    assert!(
        secrets.get_opt("tokens").await.unwrap().is_none(),
        "team-b's token Secret is removed"
    );

    // Deleting both namespaces with everything inside: nothing the operator made is left.
    let principals: Vec<String> = [&t.a, &t.b]
        .iter()
        .map(|team| {
            e.identity(&team.identity("id-created"))
                .unwrap()
                .principal_id
        })
        .collect();
    for team in [&t.a, &t.b] {
        let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(t.client.clone())
            .delete(&team.ns, &Default::default())
            .await;
    }
    for team in [&t.a, &t.b] {
        delete_namespace_and_wait(&t.client, &team.ns).await;
        assert!(
            e.identity(&team.identity("id-created")).is_none(),
            "the identity it created is gone"
        );
    }
    assert!(
        e.identity(&t.a.identity("id-own")).is_none(),
        "the namespaced credential's identity is gone"
    );
    assert!(
        !e.authorized(
            &own_principal,
            "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            &t.a.vault(),
            true
        ),
        "its grant is gone"
    );
    for (team, principal) in [&t.a, &t.b].iter().zip(&principals) {
        assert!(
            !e.authorized(principal, read, &team.storage(), true),
            "no grant is left"
        );
    }
    assert!(
        !t.operator.logs().contains("panicked") && !t.operator.logs().contains("cleanup abandoned"),
        "cleanup finished without giving up"
    );
    cluster::delete_namespace(&t.client, &t.home).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_between_recording_and_creating_orphans_nothing() {
    let mut t = Tenancy::start(&[]).await;
    let a_ns = t.a.ns.clone();
    let created = t.a.identity("id-crash");
    // Azure creates the identity, but its answer is held back: the operator is killed before it
    // learns that the PUT succeeded (the moment that used to leave identities unrecorded).
    t.azure.emulator().inject(aml_identity_emulator::Fault {
        answer_delay_ms: 5000,
        times: Some(1),
        ..aml_identity_emulator::Fault::on("arm.PUT.userAssignedIdentities")
    });
    let mut spec = compute_identity(std::slice::from_ref(&created), &["training"]);
    spec["createIfMissing"] = serde_json::json!({"location": "eastus"});
    t.apply(&a_ns, object("ComputeIdentity", "ci", spec)).await;
    cluster::wait_until(
        Duration::from_secs(30),
        "Azure to create the identity",
        || async {
            t.azure
                .emulator()
                .identity(&created)
                .is_some()
                .then_some(())
        },
    )
    .await;
    t.operator.kill();
    let api = cluster::dynamic_api(&t.client, &kind("ComputeIdentity"), &a_ns);
    let record = api.get("ci").await.unwrap().data["status"]["azureResources"].clone();
    assert!(
        record
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["id"] == created.as_str())),
        "recorded before the PUT went out: {record}"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;

    let mut args = azure_args(&t.azure);
    args.extend(["--cleanup-attempts".to_string(), "3".into()]);
    t.operator = Operator::start_across(
        &t.home,
        &format!("{LABEL}={}", t.label),
        &format!("lease-{}", t.label),
        &format!("tn-{}-1", t.label),
        &args,
    );
    t.reason("ComputeIdentity", &a_ns, "ci", "IdentityReady")
        .await;
    let identities = t.azure.emulator().identity(&created);
    assert!(identities.is_some(), "one identity, made once");
    assert_eq!(t.subjects(&created).len(), 1);
    delete_and_wait(&t.client, "ComputeIdentity", &a_ns, "ci").await;
    assert!(
        t.azure.emulator().identity(&created).is_none(),
        "nothing is orphaned"
    );
    assert!(!t.operator.logs().contains("panicked"));
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_identity_gets_a_condition_not_a_write_loop() {
    let t = Tenancy::start(&[]).await;
    let a = &t.a;
    let e = t.azure.emulator();
    let full = a.identity("id-full");
    e.seed(Seed {
        user_assigned_identities: vec![UserAssignedIdentity {
            id: full.clone(),
            location: "eastus".into(),
            tenant_id: TENANT.into(),
            client_id: uuid::Uuid::new_v4().to_string(),
            principal_id: uuid::Uuid::new_v4().to_string(),
            tags: Default::default(),
            federated_credentials: (0..20)
                .map(|i| aml_identity_emulator::state::FederatedCredential {
                    name: format!("other-{i}"),
                    issuer: "https://issuer.example".into(),
                    subject: format!("system:serviceaccount:elsewhere:sa-{i}"),
                    audiences: vec!["api://AzureADTokenExchange".into()],
                })
                .collect(),
        }],
        ..Default::default()
    })
    .unwrap();
    t.apply(
        &a.ns,
        object(
            "ComputeIdentity",
            "ci",
            compute_identity(std::slice::from_ref(&full), &["training"]),
        ),
    )
    .await;
    let message = t
        .reason("ComputeIdentity", &a.ns, "ci", "FederatedCredentialLimit")
        .await;
    assert!(
        message.contains("20") && message.contains("spec.federation.serviceAccounts"),
        "{message}"
    );
    let reads = e.counter("arm.GET.federatedIdentityCredentials");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        e.counter("arm.PUT.federatedIdentityCredentials"),
        0,
        "no write was attempted"
    );
    assert!(
        e.counter("arm.GET.federatedIdentityCredentials") <= reads + 2,
        "it does not poll Azure while the identity stays full"
    );
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cleanup_that_cannot_reach_azure_gives_up_loudly_after_bounded_attempts() {
    let t = Tenancy::start(&[]).await;
    let a = &t.a;
    let mut spec = compute_identity(&[a.identity("id-shared")], &["training"]);
    spec["grants"] = serde_json::json!({"storageBlobDataReader": [a.storage()]});
    t.apply(&a.ns, object("ComputeIdentity", "ci", spec)).await;
    t.reason("ComputeIdentity", &a.ns, "ci", "IdentityReady")
        .await;
    // Azure fails every delete from now on.
    t.azure.emulator().inject(aml_identity_emulator::Fault {
        status: Some(503),
        ..aml_identity_emulator::Fault::on("arm.DELETE")
    });
    let api = cluster::dynamic_api(&t.client, &kind("ComputeIdentity"), &a.ns);
    api.delete("ci", &Default::default()).await.unwrap();
    cluster::wait_until(
        Duration::from_secs(90),
        "the object to be let go",
        || async {
            matches!(api.get("ci").await, Err(kube::Error::Api(s)) if s.code == 404).then_some(())
        },
    )
    .await;
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(t.client.clone(), &a.ns)
        .list(&Default::default())
        .await
        .unwrap();
    let abandoned = events
        .items
        .iter()
        .find(|ev| ev.reason.as_deref() == Some("CleanupAbandoned"))
        .expect("a CleanupAbandoned Warning Event");
    assert_eq!(abandoned.type_.as_deref(), Some("Warning"));
    assert!(
        abandoned
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("3 failed"),
        "{abandoned:?}"
    );
    let metric = t
        .operator
        .metric_sum("aml_identity_operator_cleanup_abandoned_total{kind=\"ComputeIdentity\"")
        .await;
    assert_eq!(metric, Some(1.0));
    t.azure.emulator().clear_faults();
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conflicting_registry_connection_takes_away_no_pull_secret_entry() {
    let t = Tenancy::start(&[]).await;
    let a = &t.a;
    let spec = serde_json::json!({"workspaceRef": {"name": "ws"},
        "registry": {"loginServer": format!("{}.azurecr.io", a.registry_name()), "resourceId": a.registry()},
        "auth": {"type": "AdminUser"}, "target": {"secretName": "acr-pull", "serviceAccounts": ["training"]}});
    t.apply(&a.ns, object("RegistryConnection", "first", spec.clone()))
        .await;
    t.reason("RegistryConnection", &a.ns, "first", "PullSecretIssued")
        .await;
    t.apply(&a.ns, object("RegistryConnection", "second", spec))
        .await;
    t.reason("RegistryConnection", &a.ns, "second", "TargetConflict")
        .await;
    delete_and_wait(&t.client, "RegistryConnection", &a.ns, "second").await;
    let accounts = Api::<ServiceAccount>::namespaced(t.client.clone(), &a.ns);
    let pulls = |sa: ServiceAccount| -> Vec<String> {
        sa.image_pull_secrets
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.name)
            .collect()
    };
    assert_eq!(
        pulls(accounts.get("training").await.unwrap()),
        vec!["acr-pull"]
    );
    // The owner takes its own entry away, and leaves one someone else added.
    accounts
        .patch("training", &PatchParams::default(), &Patch::Merge(serde_json::json!({"imagePullSecrets": [{"name": "acr-pull"}, {"name": "team-own"}]})))
        .await
        .unwrap();
    delete_and_wait(&t.client, "RegistryConnection", &a.ns, "first").await;
    assert_eq!(
        pulls(accounts.get("training").await.unwrap()),
        vec!["team-own"]
    );
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn adopted_role_tables_use_what_arm_reports_not_the_spec() {
    let t = Tenancy::start(&[]).await;
    let (a, b) = (&t.a, &t.b);
    let e = t.azure.emulator();
    // A workspace in team-b's group whose key vault, as ARM reports it, is team-a's.
    let uai = b.identity("id-shared");
    let principal = e.identity(&uai).unwrap().principal_id;
    let workspace = b.id("Microsoft.MachineLearningServices/workspaces", "mlw-r");
    e.seed(Seed {
        resources: vec![serde_json::json!({"id": workspace, "name": "mlw-r", "location": "eastus",
            "identity": {"type": "UserAssigned", "userAssignedIdentities": {uai.clone(): {"principalId": principal, "clientId": "00000000-0000-0000-0000-00000000000c"}}},
            "properties": {"workspaceId": "1f0e0d0c-0b0a-4909-8807-060504030201", "provisioningState": "Succeeded",
                "primaryUserAssignedIdentity": uai, "keyVault": a.vault(), "storageAccount": b.storage()}})],
        ..Default::default()
    })
    .unwrap();
    let mut ws = t.workspace("real", &b.rg);
    ws["spec"]["workspaceName"] = "mlw-r".into();
    ws["spec"]["roleAssignments"] = "Ensure".into();
    ws["spec"]["identity"] = serde_json::json!({"type": "UserAssigned", "userAssignedIdentities": [uai], "primaryUserAssignedIdentity": uai});
    // The spec claims an in-scope vault; the role table must not believe it.
    ws["spec"]["associatedResources"] =
        serde_json::json!({"keyVault": b.vault(), "storageAccount": b.storage()});
    t.apply(&b.ns, ws).await;
    let message = t.reason("Workspace", &b.ns, "real", "OutOfScope").await;
    assert!(
        message.contains("keyVault (as ARM reports it)") && message.contains(&a.vault()),
        "{message}"
    );
    assert!(
        t.assignments_below(&a.vault()).is_empty(),
        "nothing granted on team-a's vault"
    );
    assert!(
        t.assignments_below(&b.vault()).is_empty(),
        "nor on the vault the spec claimed"
    );
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_record_removes_nothing_of_another_team() {
    let t = Tenancy::start(&[]).await;
    let (a, b) = (&t.a, &t.b);
    let e = t.azure.emulator();
    let mut spec = compute_identity(&[a.identity("id-shared")], &["training"]);
    spec["grants"] = serde_json::json!({"storageBlobDataReader": [a.storage()]});
    t.apply(&a.ns, object("ComputeIdentity", "victim", spec))
        .await;
    t.reason("ComputeIdentity", &a.ns, "victim", "IdentityReady")
        .await;
    t.apply(
        &b.ns,
        object(
            "ComputeIdentity",
            "forger",
            compute_identity(&[b.identity("id-shared")], &["training"]),
        ),
    )
    .await;
    t.reason("ComputeIdentity", &b.ns, "forger", "IdentityReady")
        .await;
    let api_a = cluster::dynamic_api(&t.client, &kind("ComputeIdentity"), &a.ns);
    let victim = api_a.get("victim").await.unwrap().data["status"]["azureResources"].clone();
    assert!(victim.as_array().is_some_and(|r| r.len() >= 3), "{victim}");
    // An access policy someone made by hand in team-a's vault, indistinguishable by its
    // permissions from one the operator gives (get on secrets): Azure gives it no tag.
    let hand_made = "3c4d5e6f-7081-4293-a4b5-c6d7e8f90a1b";
    e.seed(Seed {
        vaults: vec![aml_identity_emulator::state::Vault {
            id: a.vault(),
            tenant_id: TENANT.into(),
            access_policies: vec![aml_identity_emulator::state::AccessPolicy {
                tenant_id: TENANT.into(),
                object_id: hand_made.into(),
                permissions: [("secrets".to_owned(), vec!["get".to_owned()])].into(),
            }],
            ..Default::default()
        }],
        ..Default::default()
    })
    .unwrap();
    let mut victim = victim;
    victim.as_array_mut().unwrap().push(serde_json::json!({
        "kind": "VaultAccessPolicy", "id": format!("{}/accessPolicies/{hand_made}", a.vault()),
    }));

    // team-b (given status write, which it should not have) claims team-a's objects as its own.
    let api_b = cluster::dynamic_api(&t.client, &kind("ComputeIdentity"), &b.ns);
    let mut forged = api_b.get("forger").await.unwrap().data["status"]["azureResources"]
        .as_array()
        .unwrap()
        .clone();
    forged.extend(victim.as_array().unwrap().iter().cloned());
    api_b
        .patch_status(
            "forger",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"azureResources": forged}})),
        )
        .await
        .unwrap();
    delete_and_wait_up_to(&t.client, "ComputeIdentity", &b.ns, "forger", 90).await;

    // Everything of team-a is still there; team-b's own federated credential is gone.
    let principal = e.identity(&a.identity("id-shared")).unwrap().principal_id;
    let read = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read";
    assert!(
        e.authorized(&principal, read, &a.storage(), true),
        "team-a's grant stays"
    );
    assert_eq!(
        t.subjects(&a.identity("id-shared")),
        vec![format!("system:serviceaccount:{}:training", a.ns)],
        "team-a's federated credential stays"
    );
    assert!(t.subjects(&b.identity("id-shared")).is_empty());
    let vault: serde_json::Value = t
        .azure
        .arm(t.azure.app_credential("check"))
        .get(&a.vault(), "2025-05-01")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        vault["properties"]["accessPolicies"][0]["objectId"], hand_made,
        "the access policy in team-a's vault stays: {vault}"
    );
    t.finish().await;
}

/// Deletes an object and waits up to `seconds` until it is gone (its cleanup may retry first).
async fn delete_and_wait_up_to(
    client: &Client,
    kind_name: &str,
    ns: &str,
    name: &str,
    seconds: u64,
) {
    let api = cluster::dynamic_api(client, &kind(kind_name), ns);
    api.delete(name, &Default::default()).await.unwrap();
    cluster::wait_until(
        Duration::from_secs(seconds),
        &format!("{kind_name} {name} to be gone"),
        || async {
            matches!(api.get(name).await, Err(kube::Error::Api(s)) if s.code == 404).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn narrowing_the_scopes_withdraws_what_lay_outside_them() {
    let t = Tenancy::start(&[]).await;
    let a = &t.a;
    let mut spec = compute_identity(&[a.identity("id-shared")], &["training"]);
    spec["tokenSecret"] =
        serde_json::json!({"name": "tokens", "audiences": ["https://storage.azure.com"]});
    t.apply(&a.ns, object("ComputeIdentity", "ci", spec)).await;
    t.reason("ComputeIdentity", &a.ns, "ci", "TokensIssued")
        .await;
    assert_eq!(t.subjects(&a.identity("id-shared")).len(), 1);
    // The platform moves teams to other resource groups: team-a's identity is outside now.
    cluster::dynamic_api(&t.client, &kind("ClusterAzureCredential"), "")
        .patch(&t.credential, &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {
            "allowedScopes": [format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-ml-{{namespace}}")]}})))
        .await
        .unwrap();
    t.reason("ComputeIdentity", &a.ns, "ci", "OutOfScope").await;
    cluster::wait_until(
        Duration::from_secs(30),
        "the federated credential to be revoked",
        || async {
            t.subjects(&a.identity("id-shared"))
                .is_empty()
                .then_some(())
        },
    )
    .await;
    let secrets = Api::<Secret>::namespaced(t.client.clone(), &a.ns);
    assert!(secrets.get_opt("tokens").await.unwrap().is_none());
    t.finish().await;
}

/// `kubectl amlid` on the shared setup: `audit access` flags the identity and the principal two
/// namespaces can both have used; `doctor` finds the out-of-scope id (naming the field and the
/// scopes), a federated ServiceAccount that does not exist, and a workload-identity credential
/// whose federated credential trusts another subject (printing what Entra ID must trust);
/// `whoami` says which credential a namespace may use and why.
#[tokio::test(flavor = "multi_thread")]
async fn the_plugin_audits_who_reaches_what_and_doctor_finds_the_broken_link() {
    let t = Tenancy::start(&[]).await;
    let (a, b) = (&t.a, &t.b);
    let (issuer, _) = cluster::issuer_and_ca(&t.client).await;
    let wi_client = uuid::Uuid::new_v4().to_string();
    t.azure
        .emulator()
        .seed(Seed {
            user_assigned_identities: vec![UserAssignedIdentity {
                id: a.identity("id-wi"),
                location: "eastus".into(),
                tenant_id: TENANT.into(),
                client_id: wi_client.clone(),
                principal_id: uuid::Uuid::new_v4().to_string(),
                tags: Default::default(),
                federated_credentials: vec![aml_identity_emulator::state::FederatedCredential {
                    name: "wrong-subject".into(),
                    issuer: issuer.clone(),
                    subject: format!("system:serviceaccount:{}:someone-else", a.ns),
                    audiences: vec!["api://AzureADTokenExchange".into()],
                }],
            }],
            ..Default::default()
        })
        .unwrap();
    t.apply(
        &a.ns,
        object(
            "ComputeIdentity",
            "own",
            compute_identity(&[a.identity("id-shared")], &["training", "missing-sa"]),
        ),
    )
    .await;
    t.apply(
        &b.ns,
        object(
            "ComputeIdentity",
            "steal",
            compute_identity(&[a.identity("id-shared")], &["training"]),
        ),
    )
    .await;
    t.apply(&a.ns, object("AzureCredential", "wi", serde_json::json!({"tenantId": TENANT, "workloadIdentity": {"clientId": wi_client, "serviceAccountName": "training"}}))).await;
    t.reason("ComputeIdentity", &b.ns, "steal", "OutOfScope")
        .await;
    ready_reason(
        &t.client,
        "AzureCredential",
        &a.ns,
        "wi",
        "AuthenticationFailed",
    )
    .await;

    use support::plugin::amlid;

    // audit access: team-a's identity is reachable from both namespaces, and so is the shared
    // principal.
    let (ok, json, err) = amlid(&["audit", "access", "-o", "json"]);
    assert!(ok, "{err}");
    let audit: serde_json::Value = serde_json::from_str(&json).unwrap();
    let admitted: Vec<&str> = audit["clusterCredentials"][&t.credential]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(
        admitted.contains(&a.ns.as_str()) && admitted.contains(&b.ns.as_str()),
        "{audit}"
    );
    let identity = audit["identities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["identity"] == a.identity("id-shared").to_ascii_lowercase())
        .unwrap_or_else(|| panic!("{audit}"));
    assert_eq!(identity["shared"], true);
    let mut both = vec![a.ns.clone(), b.ns.clone()];
    both.sort();
    assert_eq!(identity["namespaces"], serde_json::json!(both));
    let principal = audit["identities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["identity"] == format!("client {APP_CLIENT_ID}"))
        .unwrap();
    assert_eq!(principal["shared"], true);
    let (ok, text, _) = amlid(&["audit", "access"]);
    assert!(
        ok && text.contains(&format!(
            "SHARED {}",
            a.identity("id-shared").to_ascii_lowercase()
        )),
        "{text}"
    );

    // doctor: the out-of-scope id, by field, with the scopes and the fix.
    let (ok, json, _) = amlid(&["doctor", "-n", &b.ns, "computeidentity/steal", "-o", "json"]);
    assert!(!ok, "doctor must fail on a broken object");
    let diagnosis: serde_json::Value = serde_json::from_str(&json).unwrap();
    let scope = diagnosis["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "scope" && c["verdict"] == "fail")
        .unwrap_or_else(|| panic!("{diagnosis}"));
    assert!(
        scope["detail"]
            .as_str()
            .unwrap()
            .contains("spec.identity.userAssignedIdentities[0]"),
        "{scope}"
    );
    assert!(
        scope["detail"].as_str().unwrap().contains(&b.rg)
            && scope["fix"].as_str().unwrap().contains("allowedScopes"),
        "{scope}"
    );
    assert!(
        diagnosis["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["check"] == "admission" && c["verdict"] == "ok"),
        "{diagnosis}"
    );

    // doctor: a federated ServiceAccount that does not exist.
    let (ok, text, _) = amlid(&["doctor", "-n", &a.ns, "amlci", "own"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("[FAIL] federation")
            && text.contains(&format!(
                "kubectl -n {} create serviceaccount missing-sa",
                a.ns
            )),
        "{text}"
    );
    assert!(
        text.contains(&format!("subject system:serviceaccount:{}:training", a.ns)),
        "{text}"
    );

    // doctor: the workload-identity credential's federated credential trusts another subject.
    let (ok, text, _) = amlid(&["doctor", "-n", &a.ns, "azcred/wi"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("[FAIL] sign-in") && text.contains("federated credential does not match"),
        "{text}"
    );
    assert!(text.contains(&format!("must trust issuer {issuer}, subject system:serviceaccount:{}:training, audience api://AzureADTokenExchange", a.ns)), "{text}");

    // whoami: which credential, and why the namespace may use it.
    let (ok, text, err) = amlid(&["whoami", "-n", &b.ns, "--operator-namespace", &t.home]);
    assert!(ok, "{err}");
    assert!(
        text.contains(&format!(
            "ClusterAzureCredential/{}: servicePrincipal {APP_CLIENT_ID}",
            t.credential
        )) && text.contains("named in allowedNamespaces.names"),
        "{text}"
    );
    let (ok, text, _) = amlid(&["whoami", "-n", &a.ns, "amlci/own"]);
    assert!(
        ok && text.contains("spec.workspaceRef -> Workspace")
            && text.contains(&format!(
                "AzureCredential/{}/wi: workloadIdentity {wi_client} as ServiceAccount {}/training",
                a.ns, a.ns
            )),
        "{text}"
    );
}
