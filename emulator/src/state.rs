//! What the emulated tenant holds: principals, identities, federated credentials, role assignments,
//! the node's IMDS identities, call counters and injected faults. Secrets leave only through the
//! token endpoint; the admin API never returns them.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// A federated identity credential: which external tokens may sign in as the principal.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FederatedCredential {
    /// Name of the credential (unique per principal).
    pub name: String,
    /// Expected `iss` of the assertion, compared case-sensitively.
    pub issuer: String,
    /// Expected `sub` of the assertion, compared case-sensitively.
    pub subject: String,
    /// Accepted `aud` values.
    pub audiences: Vec<String>,
}

/// An application's service principal.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePrincipal {
    /// Tenant it lives in.
    pub tenant_id: String,
    /// Application (client) id.
    pub client_id: String,
    /// Service principal object id (`oid` of its tokens, `principalId` of role assignments).
    pub object_id: String,
    /// Display name.
    #[serde(default)]
    pub display_name: String,
    /// Valid client secrets.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Federated identity credentials on the application.
    #[serde(default)]
    pub federated_credentials: Vec<FederatedCredential>,
    /// Certificates (PEM) whose keys may sign client assertions.
    #[serde(default)]
    pub certificates: Vec<String>,
}

/// A user-assigned managed identity.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserAssignedIdentity {
    /// ARM resource id.
    pub id: String,
    /// Region.
    #[serde(default = "default_location")]
    pub location: String,
    /// Tenant.
    pub tenant_id: String,
    /// Client id.
    pub client_id: String,
    /// Principal (object) id.
    pub principal_id: String,
    /// Federated identity credentials (`.../federatedIdentityCredentials/{name}`).
    #[serde(default)]
    pub federated_credentials: Vec<FederatedCredential>,
    /// Tags, as the last PUT set them.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

fn default_location() -> String {
    "eastus".into()
}

/// A role assignment.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleAssignment {
    /// Assignment name (a GUID).
    pub name: String,
    /// Scope (an ARM id or a prefix of one).
    pub scope: String,
    /// Role definition GUID.
    pub role_definition_id: String,
    /// Principal (object) id.
    pub principal_id: String,
    /// `ServicePrincipal`, `User`, `Group`.
    #[serde(default = "default_principal_type")]
    pub principal_type: String,
    /// Free text set by whoever made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

fn default_principal_type() -> String {
    "ServicePrincipal".into()
}

/// A subscription and its resource groups.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// Subscription id.
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Resource group names.
    #[serde(default)]
    pub resource_groups: Vec<String>,
}

/// A role assignment as seeded: the role may be given by display name.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedRoleAssignment {
    /// Scope.
    pub scope: String,
    /// Role display name or GUID.
    pub role: String,
    /// Principal (object) id.
    pub principal_id: String,
}

/// Identities the node's IMDS can hand out.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImdsSeed {
    /// Object id of the node's system-assigned identity (a service principal in `servicePrincipals`).
    #[serde(default)]
    pub system_assigned: Option<String>,
    /// Resource ids of user-assigned identities attached to the node.
    #[serde(default)]
    pub user_assigned: Vec<String>,
}

/// A container registry.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registry {
    /// ARM resource id.
    pub id: String,
    /// Login server, e.g. `crmlwteama.azurecr.io`.
    pub login_server: String,
    /// Whether the admin user is enabled (`listCredentials` works only then).
    #[serde(default)]
    pub admin_user_enabled: bool,
}

/// A key vault and its secrets, authorizing data actions with Azure RBAC or with its access
/// policies (never both, as Key Vault does).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Vault {
    /// ARM resource id.
    pub id: String,
    /// Tenant whose tokens it accepts.
    pub tenant_id: String,
    /// Secret values by name (the latest version).
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// `enableRbacAuthorization` (seeds default to the RBAC model).
    #[serde(default = "rbac_by_default")]
    pub enable_rbac_authorization: bool,
    /// Access policies (what an access-policy vault authorizes with).
    #[serde(default)]
    pub access_policies: Vec<AccessPolicy>,
}

fn rbac_by_default() -> bool {
    true
}

impl Default for Vault {
    fn default() -> Self {
        Self {
            id: String::new(),
            tenant_id: String::new(),
            secrets: BTreeMap::new(),
            enable_rbac_authorization: true,
            access_policies: Vec::new(),
        }
    }
}

/// One access policy entry: a principal and its permissions per object type (lower-case here).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicy {
    /// Tenant of the principal.
    pub tenant_id: String,
    /// Object id of the principal.
    pub object_id: String,
    /// Permissions by type (`keys`, `secrets`, `certificates`).
    #[serde(default)]
    pub permissions: BTreeMap<String, Vec<String>>,
}

impl AccessPolicy {
    /// Whether it allows `permission` on `kind` (`all` allows every one).
    pub fn allows(&self, kind: &str, permission: &str) -> bool {
        self.permissions.get(kind).is_some_and(|list| {
            list.iter()
                .any(|p| p.eq_ignore_ascii_case(permission) || p.eq_ignore_ascii_case("all"))
        })
    }
}

impl Vault {
    /// The vault name (last segment of its id).
    pub fn name(&self) -> &str {
        self.id.rsplit('/').next().unwrap_or_default()
    }
}

/// A storage account and its keys.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageAccount {
    /// ARM resource id.
    pub id: String,
    /// Region.
    #[serde(default = "default_location")]
    pub location: String,
    /// `key1` and `key2` (base64).
    pub keys: Vec<String>,
}

/// A file share (Azure Files) and its files, text by path (`dir/name`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileShare {
    /// Storage account name (one of `storageAccounts`, whose keys sign its SAS).
    pub account: String,
    /// Share name.
    pub share: String,
    /// Files by path.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

/// A long-running operation in progress.
#[derive(Clone, Debug)]
pub struct Operation {
    /// The resource it acts on (lower-case id).
    pub resource: String,
    /// Polls left before it completes.
    pub polls_left: u32,
    /// Whether it deletes the resource.
    pub delete: bool,
}

/// What tests and the demo load into the emulator. Loading merges into what is there.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seed {
    /// Tenant ids.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Subscriptions.
    #[serde(default)]
    pub subscriptions: Vec<Subscription>,
    /// Applications' service principals.
    #[serde(default)]
    pub service_principals: Vec<ServicePrincipal>,
    /// User-assigned identities.
    #[serde(default)]
    pub user_assigned_identities: Vec<UserAssignedIdentity>,
    /// Role assignments.
    #[serde(default)]
    pub role_assignments: Vec<SeedRoleAssignment>,
    /// The node's IMDS.
    #[serde(default)]
    pub imds: Option<ImdsSeed>,
    /// Container registries.
    #[serde(default)]
    pub registries: Vec<Registry>,
    /// Key vaults.
    #[serde(default)]
    pub vaults: Vec<Vault>,
    /// Storage accounts.
    #[serde(default)]
    pub storage_accounts: Vec<StorageAccount>,
    /// File shares of those accounts and the files in them.
    #[serde(default)]
    pub file_shares: Vec<FileShare>,
    /// Any other ARM resources, as full bodies with an `id` (e.g. an existing AML workspace to adopt).
    #[serde(default)]
    pub resources: Vec<serde_json::Value>,
}

/// An injected fault for requests whose route key starts with `route`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    /// Route key prefix, e.g. `entra.token` or `arm.GET`.
    pub route: String,
    /// Status to answer with; `None` only delays.
    #[serde(default)]
    pub status: Option<u16>,
    /// `Retry-After` seconds to send with the status.
    #[serde(default)]
    pub retry_after: Option<u64>,
    /// Delay before answering, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Delay after the request took effect and before the answer leaves, in milliseconds: a
    /// client that dies meanwhile never learns that it succeeded.
    #[serde(default)]
    pub answer_delay_ms: u64,
    /// Chance of applying, 0.0-1.0 (default 1).
    #[serde(default = "one")]
    pub probability: f64,
    /// Apply at most this many times.
    #[serde(default)]
    pub times: Option<u32>,
    /// Only to requests whose path contains this (one team's resource group, say).
    #[serde(default)]
    pub path_contains: Option<String>,
    /// `Location` header sent with the status (a redirect elsewhere).
    #[serde(default)]
    pub location: Option<String>,
    /// Answer with a body of this many bytes (a hostile endpoint's flood).
    #[serde(default)]
    pub body_bytes: Option<usize>,
}

fn one() -> f64 {
    1.0
}

impl Fault {
    /// A fault for `route` that applies every time and changes nothing yet (set what it does).
    pub fn on(route: impl Into<String>) -> Self {
        Self {
            route: route.into(),
            status: None,
            retry_after: None,
            latency_ms: 0,
            answer_delay_ms: 0,
            probability: 1.0,
            times: None,
            path_contains: None,
            location: None,
            body_bytes: None,
        }
    }
}

/// One principal that can receive tokens.
#[derive(Clone, Debug)]
pub struct Principal {
    /// Tenant.
    pub tenant_id: String,
    /// Client id.
    pub client_id: String,
    /// Object id.
    pub object_id: String,
    /// Resource id when a managed identity.
    pub resource_id: Option<String>,
}

/// Everything mutable, behind one lock.
#[derive(Default)]
pub struct State {
    /// Known tenants.
    pub tenants: Vec<String>,
    /// Subscriptions by lower-case id.
    pub subscriptions: HashMap<String, Subscription>,
    /// Service principals by client id.
    pub service_principals: HashMap<String, ServicePrincipal>,
    /// User-assigned identities by lower-case resource id.
    pub identities: BTreeMap<String, UserAssignedIdentity>,
    /// Role assignments by lower-case full id.
    pub role_assignments: BTreeMap<String, RoleAssignment>,
    /// The node's IMDS.
    pub imds: ImdsSeed,
    /// Requests per route key.
    pub counters: BTreeMap<String, u64>,
    /// Active faults.
    pub faults: Vec<Fault>,
    /// Registries by lower-case login server.
    pub registries: HashMap<String, Registry>,
    /// Vaults by lower-case name.
    pub vaults: HashMap<String, Vault>,
    /// Storage accounts by lower-case id.
    pub storage_accounts: HashMap<String, StorageAccount>,
    /// File shares by lower-case `account/share`: file contents by path.
    pub file_shares: HashMap<String, BTreeMap<String, Vec<u8>>>,
    /// Generic ARM resources (workspaces, computes, datastores, connections) by lower-case id, as
    /// returned by GET (secrets removed).
    pub resources: BTreeMap<String, serde_json::Value>,
    /// Secrets kept apart from GET bodies, by lower-case resource id (datastore secrets,
    /// connection credentials); only list* actions return them.
    pub hidden: HashMap<String, serde_json::Value>,
    /// System-assigned identities: principal id → resource id.
    pub system_identities: HashMap<String, String>,
    /// Long-running operations by id.
    pub operations: HashMap<String, Operation>,
    /// ARM throttling buckets by (subscription, principal, operation kind): tokens left and when
    /// they were last refilled.
    pub buckets: HashMap<String, (f64, i64)>,
    /// Token lifetimes that differ from the configured one, by client id (negative: tokens that
    /// are already expired when issued).
    pub token_lifetimes: HashMap<String, i64>,
    /// ACR refresh-token lifetime instead of the three hours ACR gives.
    pub refresh_lifetime: Option<i64>,
    /// When each caller (`entra|<client id>`, `arm|<principal>|<subscription>`) was told, by a 429
    /// or a 5xx with `Retry-After`, to come back, and when that was: a request before then counts
    /// as `early:<route>`, or as `overlap:<route>` when it arrived so soon after the answer
    /// ([`crate::IN_FLIGHT`]) that it was on its way before the caller could have read it.
    pub come_back: HashMap<String, (std::time::Instant, std::time::Instant)>,
}

impl State {
    /// Merges a seed.
    pub fn load(&mut self, seed: Seed) -> Result<(), String> {
        for t in seed.tenants {
            if !self.tenants.contains(&t) {
                self.tenants.push(t);
            }
        }
        for s in seed.subscriptions {
            self.subscriptions.insert(s.id.to_ascii_lowercase(), s);
        }
        for sp in seed.service_principals {
            self.service_principals.insert(sp.client_id.clone(), sp);
        }
        for i in seed.user_assigned_identities {
            self.identities.insert(i.id.to_ascii_lowercase(), i);
        }
        for ra in seed.role_assignments {
            let role =
                crate::rbac::role(&ra.role).ok_or_else(|| format!("unknown role {:?}", ra.role))?;
            let name = uuid::Uuid::new_v5(
                &uuid::Uuid::NAMESPACE_URL,
                format!("{}|{}|{}", ra.scope, role.id, ra.principal_id).as_bytes(),
            )
            .to_string();
            let assignment = RoleAssignment {
                name: name.clone(),
                scope: ra.scope.clone(),
                role_definition_id: role.id.into(),
                principal_id: ra.principal_id,
                principal_type: default_principal_type(),
                description: None,
            };
            self.role_assignments.insert(
                assignment_id(&ra.scope, &name).to_ascii_lowercase(),
                assignment,
            );
        }
        if let Some(imds) = seed.imds {
            self.imds = imds;
        }
        for r in seed.registries {
            self.registries
                .insert(r.login_server.to_ascii_lowercase(), r);
        }
        for v in seed.vaults {
            self.vaults.insert(v.name().to_ascii_lowercase(), v);
        }
        for a in seed.storage_accounts {
            self.storage_accounts.insert(a.id.to_ascii_lowercase(), a);
        }
        for f in seed.file_shares {
            let files = self
                .file_shares
                .entry(format!(
                    "{}/{}",
                    f.account.to_ascii_lowercase(),
                    f.share.to_ascii_lowercase()
                ))
                .or_default();
            files.extend(f.files.into_iter().map(|(p, c)| (p, c.into_bytes())));
        }
        for r in seed.resources {
            let id = r["id"]
                .as_str()
                .ok_or("a seeded resource needs an id")?
                .to_ascii_lowercase();
            self.resources.insert(id, r);
        }
        Ok(())
    }

    /// The principal behind a client id: an application or a user-assigned identity.
    pub fn principal_by_client_id(&self, client_id: &str) -> Option<Principal> {
        if let Some(sp) = self.service_principals.get(client_id) {
            return Some(Principal {
                tenant_id: sp.tenant_id.clone(),
                client_id: sp.client_id.clone(),
                object_id: sp.object_id.clone(),
                resource_id: None,
            });
        }
        self.identities
            .values()
            .find(|i| i.client_id == client_id)
            .map(identity_principal)
    }

    /// Federated credentials of the principal behind `client_id`.
    pub fn federated_credentials(&self, client_id: &str) -> Vec<FederatedCredential> {
        if let Some(sp) = self.service_principals.get(client_id) {
            return sp.federated_credentials.clone();
        }
        self.identities
            .values()
            .find(|i| i.client_id == client_id)
            .map(|i| i.federated_credentials.clone())
            .unwrap_or_default()
    }

    /// Whether a principal (application, user-assigned or system-assigned identity) exists.
    pub fn principal_exists(&self, principal_id: &str) -> bool {
        self.service_principals
            .values()
            .any(|sp| sp.object_id.eq_ignore_ascii_case(principal_id))
            || self
                .identities
                .values()
                .any(|i| i.principal_id.eq_ignore_ascii_case(principal_id))
            || self
                .system_identities
                .keys()
                .any(|p| p.eq_ignore_ascii_case(principal_id))
    }

    /// Whether `principal_id` may perform `action` on `resource`.
    pub fn authorized(&self, principal_id: &str, action: &str, resource: &str, data: bool) -> bool {
        self.role_assignments.values().any(|ra| {
            ra.principal_id.eq_ignore_ascii_case(principal_id)
                && crate::rbac::scope_contains(&ra.scope, resource)
                && crate::rbac::role(&ra.role_definition_id)
                    .is_some_and(|r| crate::rbac::grants(r, action, data))
        })
    }

    /// Counts a request.
    pub fn count(&mut self, key: &str) {
        *self.counters.entry(key.to_owned()).or_default() += 1;
    }

    /// The fault to apply to a request with this route key, if any (consumes one use).
    pub fn take_fault(&mut self, route: &str, path: &str) -> Option<Fault> {
        let index = self.faults.iter().position(|f| {
            route.starts_with(&f.route)
                && f.path_contains.as_deref().is_none_or(|p| path.contains(p))
                && rand::random::<f64>() < f.probability
        })?;
        let fault = self.faults[index].clone();
        if let Some(times) = &mut self.faults[index].times {
            *times -= 1;
            if *times == 0 {
                self.faults.remove(index);
            }
        }
        Some(fault)
    }
}

/// ARM's regional token bucket per subscription and principal: (size, refill per second) for
/// reads, writes and deletes, as Azure Resource Manager documents them.
pub fn bucket_shape(kind: &str) -> (f64, f64) {
    match kind {
        "reads" => (250.0, 25.0),
        _ => (200.0, 10.0),
    }
}

impl State {
    /// Takes one token from the bucket; `Err(seconds)` says when to retry when it is empty.
    pub fn take_token(
        &mut self,
        subscription: &str,
        principal: &str,
        kind: &str,
        now: i64,
    ) -> Result<u64, u64> {
        let (size, refill) = bucket_shape(kind);
        let entry = self
            .buckets
            .entry(format!("{subscription}|{principal}|{kind}"))
            .or_insert((size, now));
        let refilled = (entry.0 + (now - entry.1).max(0) as f64 * refill).min(size);
        if refilled < 1.0 {
            entry.0 = refilled;
            entry.1 = now;
            return Err(((1.0 - refilled) / refill).ceil().max(1.0) as u64);
        }
        *entry = (refilled - 1.0, now);
        Ok(entry.0 as u64)
    }
}

/// A user-assigned identity as a principal.
pub fn identity_principal(i: &UserAssignedIdentity) -> Principal {
    Principal {
        tenant_id: i.tenant_id.clone(),
        client_id: i.client_id.clone(),
        object_id: i.principal_id.clone(),
        resource_id: Some(i.id.clone()),
    }
}

/// Full id of a role assignment.
pub fn assignment_id(scope: &str, name: &str) -> String {
    format!(
        "{}/providers/Microsoft.Authorization/roleAssignments/{name}",
        scope.trim_end_matches('/')
    )
}
