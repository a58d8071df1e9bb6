//! The Azure side of the benchmark: the emulator in this process, seeded with the platform's service
//! principal, K shared user-assigned identities, one registry they may pull from, and one AML
//! workspace per namespace. Its counters are what the report calls Azure requests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aml_identity_emulator::state::{
    Registry, SeedRoleAssignment, ServicePrincipal, Subscription, UserAssignedIdentity,
};
use aml_identity_emulator::{Config, Emulator, Running, Seed};

pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const SUBSCRIPTION: &str = "3fa85f64-5717-4562-b3fc-2c963f66afa6";
pub const APP_CLIENT_ID: &str = "2f5c3a1b-7d8e-4f90-a1b2-c3d4e5f60718";
const APP_OBJECT_ID: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
/// The emulated platform service principal's secret (an emulator value, not a credential).
pub const APP_SECRET: &str = "bench-only-client-secret-aml-platform";
/// The resource group of what teams share: the identities and the registry.
pub const SHARED_GROUP: &str = "rg-bench-shared";
pub const LOGIN_SERVER: &str = "crbench.azurecr.io";

/// `/subscriptions/…/resourceGroups/{group}`.
pub fn group_id(group: &str) -> String {
    format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}")
}

/// The resource group a namespace's workspace lives in (what the credential's `{namespace}` scope
/// admits it to).
pub fn team_group(namespace: &str) -> String {
    format!("rg-aml-{namespace}")
}

/// The resource id of shared identity `k`.
pub fn identity_id(k: usize) -> String {
    format!(
        "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-bench-{k}",
        group_id(SHARED_GROUP)
    )
}

pub fn registry_id() -> String {
    format!(
        "{}/providers/Microsoft.ContainerRegistry/registries/crbench",
        group_id(SHARED_GROUP)
    )
}

fn guid(prefix: u32, n: usize) -> String {
    format!("{prefix:08x}-0000-4000-8000-{n:012x}")
}

/// A started, seeded emulator.
pub struct Azure {
    pub running: Running,
}

impl Azure {
    /// Starts the emulator in `dir`, trusting `cluster_ca` (to read the API server's issuer keys),
    /// issuing tokens that live `token_lifetime` seconds, seeded for `namespaces` and `identities`.
    pub async fn start(
        dir: &Path,
        cluster_ca: PathBuf,
        token_lifetime: i64,
        namespaces: &[String],
        identities: usize,
    ) -> anyhow::Result<Azure> {
        let mut config = Config::new(dir);
        config.trust = vec![cluster_ca];
        config.token_lifetime = token_lifetime;
        let running = Emulator::start(config).await?;
        let mut groups = vec![SHARED_GROUP.to_owned()];
        groups.extend(namespaces.iter().map(|n| team_group(n)));
        let identities: Vec<UserAssignedIdentity> = (0..identities)
            .map(|k| UserAssignedIdentity {
                id: identity_id(k),
                location: "eastus".into(),
                tenant_id: TENANT.into(),
                client_id: guid(0x0a0a_0000, k),
                principal_id: guid(0x0b0b_0000, k),
                federated_credentials: vec![],
                tags: BTreeMap::new(),
            })
            .collect();
        let mut role_assignments = vec![SeedRoleAssignment {
            scope: format!("/subscriptions/{SUBSCRIPTION}"),
            role: "Owner".into(),
            principal_id: APP_OBJECT_ID.into(),
        }];
        role_assignments.extend(identities.iter().map(|i| SeedRoleAssignment {
            scope: registry_id(),
            role: "AcrPull".into(),
            principal_id: i.principal_id.clone(),
        }));
        let workspaces = namespaces.iter().enumerate().map(|(m, ns)| {
            serde_json::json!({
                "id": format!("{}/providers/Microsoft.MachineLearningServices/workspaces/mlw-{ns}", group_id(&team_group(ns))),
                "name": format!("mlw-{ns}"), "location": "eastus",
                "identity": {"type": "SystemAssigned"},
                "properties": {"workspaceId": guid(0x0c0c_0000, m), "provisioningState": "Succeeded"},
            })
        });
        running
            .emulator
            .seed(Seed {
                tenants: vec![TENANT.into()],
                subscriptions: vec![Subscription {
                    id: SUBSCRIPTION.into(),
                    tenant_id: TENANT.into(),
                    resource_groups: groups,
                }],
                service_principals: vec![ServicePrincipal {
                    tenant_id: TENANT.into(),
                    client_id: APP_CLIENT_ID.into(),
                    object_id: APP_OBJECT_ID.into(),
                    display_name: "aml-platform".into(),
                    secrets: vec![APP_SECRET.into()],
                    federated_credentials: vec![],
                    certificates: vec![],
                }],
                user_assigned_identities: identities,
                role_assignments,
                registries: vec![Registry {
                    id: registry_id(),
                    login_server: LOGIN_SERVER.into(),
                    admin_user_enabled: false,
                }],
                resources: workspaces.collect(),
                ..Default::default()
            })
            .map_err(|e| anyhow::anyhow!("seeding the emulator: {e}"))?;
        Ok(Azure { running })
    }

    pub fn emulator(&self) -> &Emulator {
        &self.running.emulator
    }

    /// The operator's `--azure-resolve`: every Azure host it calls, to the emulator.
    pub fn resolve_arg(&self) -> String {
        [
            "login.microsoftonline.com",
            "management.azure.com",
            LOGIN_SERVER,
        ]
        .iter()
        .map(|h| format!("{h}={}", self.running.https_addr))
        .collect::<Vec<_>>()
        .join(",")
    }

    /// Azure requests so far, by what the report shows.
    pub fn counts(&self) -> AzureCounts {
        let counters = self.emulator().counters();
        let sum = |f: &dyn Fn(&str) -> bool| -> u64 {
            counters
                .iter()
                .filter(|(k, _)| !k.contains(':') && f(k))
                .map(|(_, v)| v)
                .sum()
        };
        AzureCounts {
            routes: counters
                .iter()
                .filter(|(k, _)| !k.contains(':'))
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            entra: sum(&|k| k == "entra.token"),
            arm_reads: sum(&|k| k.starts_with("arm.GET.")),
            arm_writes: sum(&|k| k.starts_with("arm.") && !k.starts_with("arm.GET.")),
            acr: sum(&|k| k.starts_with("acr.")),
        }
    }
}

/// Requests the emulator counted.
#[derive(Clone, Debug, Default)]
pub struct AzureCounts {
    /// Every route the emulator counts (`arm.GET.workspaces`, `entra.token`, …).
    pub routes: BTreeMap<String, u64>,
    pub entra: u64,
    pub arm_reads: u64,
    pub arm_writes: u64,
    pub acr: u64,
}

impl AzureCounts {
    /// What was counted after `before`.
    pub fn since(&self, before: &AzureCounts) -> AzureCounts {
        AzureCounts {
            routes: self
                .routes
                .iter()
                .map(|(k, v)| (k.clone(), v - before.routes.get(k).copied().unwrap_or(0)))
                .filter(|(_, v)| *v > 0)
                .collect(),
            entra: self.entra - before.entra,
            arm_reads: self.arm_reads - before.arm_reads,
            arm_writes: self.arm_writes - before.arm_writes,
            acr: self.acr - before.acr,
        }
    }
}

/// What the emulated tenant holds that the operator makes: role assignments (scope, role,
/// principal), federated credentials (identity, issuer, subject) and generic ARM resources.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    pub role_assignments: Vec<(String, String, String)>,
    pub federated_credentials: Vec<(String, String, String)>,
    pub resources: Vec<String>,
}

impl Azure {
    /// The tenant's inventory now, over the run's `identities`.
    pub fn inventory(&self, identities: usize) -> Inventory {
        let emulator = self.emulator();
        let mut role_assignments: Vec<_> = emulator
            .role_assignments()
            .into_iter()
            .map(|a| {
                (
                    a.scope.to_ascii_lowercase(),
                    a.role_definition_id.to_ascii_lowercase(),
                    a.principal_id.to_ascii_lowercase(),
                )
            })
            .collect();
        role_assignments.sort();
        let mut federated_credentials: Vec<_> = (0..identities)
            .filter_map(|k| emulator.identity(&identity_id(k)))
            .flat_map(|i| {
                i.federated_credentials
                    .into_iter()
                    .map(move |f| (i.id.clone(), f.issuer, f.subject))
            })
            .collect();
        federated_credentials.sort();
        Inventory {
            role_assignments,
            federated_credentials,
            resources: emulator.resource_ids(),
        }
    }
}

impl Inventory {
    /// Entries that occur more than once: a duplicate role assignment or federated credential.
    pub fn duplicates(&self) -> usize {
        let dup = |v: &[(String, String, String)]| v.windows(2).filter(|w| w[0] == w[1]).count();
        dup(&self.role_assignments) + dup(&self.federated_credentials)
    }

    /// What this holds beyond `baseline`: (role assignments, federated credentials, resources).
    pub fn beyond(&self, baseline: &Inventory) -> (usize, usize, usize) {
        let extra = |now: &[(String, String, String)], then: &[(String, String, String)]| {
            now.iter().filter(|x| !then.contains(x)).count()
        };
        (
            extra(&self.role_assignments, &baseline.role_assignments),
            extra(&self.federated_credentials, &baseline.federated_credentials),
            self.resources
                .iter()
                .filter(|r| !baseline.resources.contains(r))
                .count(),
        )
    }
}
