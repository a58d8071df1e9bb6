//! ARM resources beyond identities and role assignments: AML workspaces (PUT as 202 + Location),
//! computes (201/200 + Azure-AsyncOperation), datastores and connections (secrets only through
//! `listSecrets` / `listsecrets`), storage accounts (`listKeys`), registries (`listCredentials`,
//! admin user only) and vaults. Identities in request bodies must exist and the caller must be
//! allowed to assign them, as ARM's linked authorization requires.

use axum::Json;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::Emulator;
use crate::errors::arm as error;
use crate::state::{Operation, State};
use crate::tokens::AccessClaims;

const ML_VERSIONS: &[&str] = &[
    "2024-10-01",
    "2025-04-01",
    "2025-06-01",
    "2025-09-01",
    "2025-12-01",
];
const STORAGE_VERSIONS: &[&str] = &["2024-01-01", "2025-01-01", "2025-06-01", "2025-08-01"];
const REGISTRY_VERSIONS: &[&str] = &["2025-04-01", "2025-11-01"];
const VAULT_VERSIONS: &[&str] = &["2024-11-01", "2025-05-01"];

const WORKSPACES: &str = "microsoft.machinelearningservices/workspaces";
const COMPUTES: &str = "microsoft.machinelearningservices/workspaces/computes";
const DATASTORES: &str = "microsoft.machinelearningservices/workspaces/datastores";
const CONNECTIONS: &str = "microsoft.machinelearningservices/workspaces/connections";
const STORAGE: &str = "microsoft.storage/storageaccounts";
const REGISTRIES: &str = "microsoft.containerregistry/registries";
const VAULTS: &str = "microsoft.keyvault/vaults";
const VAULT_POLICIES: &str = "microsoft.keyvault/vaults/accesspolicies";

/// A path to a generic resource, or to an action on it.
#[derive(Clone, Debug)]
pub struct ResourcePath {
    /// Resource id as the client spelled it.
    pub id: String,
    /// Resource group.
    pub rg: String,
    /// Provider namespace and types, lower-case: `microsoft.machinelearningservices/workspaces/computes`.
    pub type_path: String,
    /// Provider namespace and types as spelled by the client.
    pub type_name: String,
    /// Last name segment.
    pub name: String,
    /// The parent resource id, for child types.
    pub parent: Option<String>,
    /// A POST action (`listKeys`, `listSecrets`, …).
    pub action: Option<String>,
}

impl ResourcePath {
    /// Parses `/subscriptions/{s}/resourceGroups/{rg}/providers/{ns}/{type}/{name}[/{type}/{name}]*[/{action}]`.
    pub fn parse(path: &str) -> Option<ResourcePath> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let is = |i: usize, s: &str| segments.get(i).is_some_and(|x| x.eq_ignore_ascii_case(s));
        if !(is(0, "subscriptions") && is(2, "resourceGroups") && is(4, "providers"))
            || segments.len() < 8
        {
            return None;
        }
        let mut rest = segments[6..].to_vec();
        let action = (rest.len() % 2 == 1).then(|| rest.pop().unwrap_or_default().to_owned());
        let types: Vec<&str> = rest.iter().step_by(2).copied().collect();
        let type_name = format!("{}/{}", segments[5], types.join("/"));
        let id = format!("/{}", segments[..6 + rest.len()].join("/"));
        let parent =
            (rest.len() > 2).then(|| format!("/{}", segments[..6 + rest.len() - 2].join("/")));
        Some(ResourcePath {
            id,
            rg: segments[3].to_owned(),
            type_path: type_name.to_ascii_lowercase(),
            type_name,
            name: rest.last()?.to_string(),
            parent,
            action,
        })
    }

    /// Accepted api-versions, `None` for types the emulator does not model.
    pub fn versions(&self) -> Option<&'static [&'static str]> {
        match self.type_path.as_str() {
            WORKSPACES | COMPUTES | DATASTORES | CONNECTIONS => Some(ML_VERSIONS),
            STORAGE => Some(STORAGE_VERSIONS),
            REGISTRIES => Some(REGISTRY_VERSIONS),
            VAULTS | VAULT_POLICIES => Some(VAULT_VERSIONS),
            _ => None,
        }
    }

    /// The RBAC action of `method` on this path.
    pub fn rbac_action(&self, method: &Method) -> String {
        match (&self.action, method) {
            (Some(action), _) => format!("{}/{action}/action", self.type_name),
            (None, &Method::GET) => format!("{}/read", self.type_name),
            (None, &Method::DELETE) => format!("{}/delete", self.type_name),
            (None, _) => format!("{}/write", self.type_name),
        }
    }

    fn key(&self) -> String {
        self.id.to_ascii_lowercase()
    }
}

/// A long-running operation's poll (`operationResults` for Location, `operationsStatus` for
/// Azure-AsyncOperation).
pub fn poll(emu: &Emulator, id: &str, location_style: bool) -> Response {
    let mut state = emu.state();
    let Some(op) = state.operations.get_mut(id) else {
        return error(
            StatusCode::NOT_FOUND,
            "OperationNotFound",
            format!("The operation '{id}' was not found."),
        );
    };
    if op.polls_left > 0 {
        op.polls_left -= 1;
        return if location_style {
            let mut r = StatusCode::ACCEPTED.into_response();
            r.headers_mut()
                .insert("retry-after", HeaderValue::from(emu.lro_retry_after()));
            r
        } else {
            let mut r = Json(json!({"id": id, "name": id, "status": "InProgress"})).into_response();
            r.headers_mut()
                .insert("retry-after", HeaderValue::from(emu.lro_retry_after()));
            r
        };
    }
    let op = state.operations.remove(id).expect("present");
    if op.delete {
        remove_with_children(&mut state, &op.resource);
    } else if let Some(r) = state.resources.get_mut(&op.resource) {
        r["properties"]["provisioningState"] = "Succeeded".into();
    }
    match (location_style, op.delete) {
        (false, _) => Json(json!({"id": id, "name": id, "status": "Succeeded"})).into_response(),
        (true, true) => StatusCode::NO_CONTENT.into_response(),
        (true, false) => Json(
            state
                .resources
                .get(&op.resource)
                .cloned()
                .unwrap_or(Value::Null),
        )
        .into_response(),
    }
}

fn remove_with_children(state: &mut State, id: &str) {
    let prefix = format!("{id}/");
    state
        .resources
        .retain(|k, _| k != id && !k.starts_with(&prefix));
    state
        .hidden
        .retain(|k, _| k != id && !k.starts_with(&prefix));
}

/// Starts a long-running operation and returns its header (name, URL).
fn start_operation(
    emu: &Emulator,
    state: &mut State,
    rp: &ResourcePath,
    host: &str,
    location: &str,
    delete: bool,
    location_style: bool,
) -> (&'static str, String) {
    let id = uuid::Uuid::new_v4().to_string();
    state.operations.insert(
        id.clone(),
        Operation {
            resource: rp.key(),
            polls_left: emu.lro_polls(),
            delete,
        },
    );
    let subscription = rp.id.split('/').nth(2).unwrap_or_default();
    let kind = if location_style {
        "operationResults"
    } else {
        "operationsStatus"
    };
    let host = emu.lro_host(host);
    let url = format!(
        "https://{host}/subscriptions/{subscription}/providers/Microsoft.MachineLearningServices/locations/{location}/{kind}/{id}?api-version=2025-12-01"
    );
    (
        if location_style {
            "location"
        } else {
            "azure-asyncoperation"
        },
        url,
    )
}

fn with_header(mut response: Response, name: &'static str, value: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, v);
    }
    response
}

/// Handles a request for a generic resource; authentication and RBAC on `rp` are already done.
pub fn handle(
    emu: &Emulator,
    method: &Method,
    rp: &ResourcePath,
    claims: &AccessClaims,
    body: &[u8],
    host: &str,
) -> Response {
    let mut state = emu.state();
    if rp.type_path == VAULT_POLICIES {
        return vault_access_policies(&mut state, method, rp, body);
    }
    if let Some(parent) = &rp.parent
        && !state.resources.contains_key(&parent.to_ascii_lowercase())
    {
        return error(
            StatusCode::NOT_FOUND,
            "ParentResourceNotFound",
            format!(
                "Can not perform requested operation on nested resource. Parent resource '{parent}' not found."
            ),
        );
    }
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body).unwrap_or(Value::Null)
    };
    match (rp.type_path.as_str(), method.clone(), rp.action.as_deref()) {
        (STORAGE, Method::GET, None) => storage_account(&state, rp),
        (STORAGE, Method::POST, Some(a)) if a.eq_ignore_ascii_case("listKeys") => storage_keys(&state, rp),
        (REGISTRIES, Method::GET, None) => registry(&state, rp),
        (REGISTRIES, Method::POST, Some(a)) if a.eq_ignore_ascii_case("listCredentials") => registry_credentials(&state, rp),
        (VAULTS, Method::GET, None) => match state.vaults.values().find(|v| v.id.eq_ignore_ascii_case(&rp.id)) {
            Some(v) => Json(json!({"id": v.id, "name": v.name(), "type": "Microsoft.KeyVault/vaults", "location": "eastus", "properties": {
                "tenantId": v.tenant_id, "enableRbacAuthorization": v.enable_rbac_authorization,
                "accessPolicies": v.access_policies, "vaultUri": format!("https://{}.vault.azure.net/", v.name())}})).into_response(),
            None => not_found(rp),
        },
        (_, Method::GET, None) => match state.resources.get(&rp.key()) {
            Some(r) => Json(r.clone()).into_response(),
            None => not_found(rp),
        },
        (WORKSPACES | COMPUTES, Method::PUT | Method::PATCH, None) => identity_resource(emu, &mut state, method, rp, claims, body, host),
        (DATASTORES, Method::PUT, None) => datastore(&mut state, rp, body),
        (DATASTORES, Method::POST, Some(a)) if a.eq_ignore_ascii_case("listSecrets") => match state.hidden.get(&rp.key()) {
            Some(secrets) => Json(secrets.clone()).into_response(),
            None => not_found(rp),
        },
        (CONNECTIONS, Method::PUT, None) => connection(&mut state, rp, body),
        (CONNECTIONS, Method::POST, Some("listsecrets")) => match state.resources.get(&rp.key()) {
            Some(r) => {
                let mut full = r.clone();
                if let Some(c) = state.hidden.get(&rp.key()) {
                    full["properties"]["credentials"] = c.clone();
                }
                Json(full).into_response()
            }
            None => not_found(rp),
        },
        (WORKSPACES, Method::DELETE, None) => {
            if !state.resources.contains_key(&rp.key()) {
                return StatusCode::NO_CONTENT.into_response();
            }
            let location = state.resources[&rp.key()]["location"].as_str().unwrap_or("eastus").to_owned();
            let (name, url) = start_operation(emu, &mut state, rp, host, &location, true, true);
            with_header(with_header(StatusCode::ACCEPTED.into_response(), name, &url), "retry-after", &emu.lro_retry_after().to_string())
        }
        (COMPUTES | DATASTORES | CONNECTIONS, Method::DELETE, None) => {
            if state.resources.remove(&rp.key()).is_some() {
                state.hidden.remove(&rp.key());
                StatusCode::OK.into_response()
            } else {
                StatusCode::NO_CONTENT.into_response()
            }
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", format!("{method} {} is not supported by the emulator.", rp.id)),
    }
}

/// `PUT {vault}/accessPolicies/{add|replace|remove}` (Vaults_UpdateAccessPolicy): `add` merges
/// permissions into a principal's entry (or adds one), `remove` takes the listed permissions away
/// (an entry left with none goes), `replace` sets them.
fn vault_access_policies(
    state: &mut State,
    method: &Method,
    rp: &ResourcePath,
    body: &[u8],
) -> Response {
    let parent = rp.parent.clone().unwrap_or_default();
    let Some(vault) = state
        .vaults
        .values_mut()
        .find(|v| v.id.eq_ignore_ascii_case(&parent))
    else {
        return error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!(
                "The Resource 'Microsoft.KeyVault/vaults/{}' under resource group '{}' was not found.",
                parent.rsplit('/').next().unwrap_or_default(),
                rp.rg
            ),
        );
    };
    let kind = rp.name.to_ascii_lowercase();
    if *method != Method::PUT || !["add", "replace", "remove"].contains(&kind.as_str()) {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} {} is not supported.", rp.id),
        );
    }
    let entries = serde_json::from_slice::<Value>(body).ok().and_then(|b| {
        serde_json::from_value::<Vec<crate::state::AccessPolicy>>(
            b["properties"]["accessPolicies"].clone(),
        )
        .ok()
    });
    let Some(entries) = entries.filter(|e| !e.is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "properties.accessPolicies must list at least one access policy entry.",
        );
    };
    for entry in &entries {
        if entry.tenant_id.is_empty() || uuid::Uuid::parse_str(&entry.object_id).is_err() {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "An access policy entry needs a tenantId and an objectId GUID.",
            );
        }
        let lower = |list: &Vec<String>| {
            list.iter()
                .map(|p| p.to_ascii_lowercase())
                .collect::<Vec<_>>()
        };
        let position = vault.access_policies.iter().position(|p| {
            p.object_id.eq_ignore_ascii_case(&entry.object_id)
                && p.tenant_id.eq_ignore_ascii_case(&entry.tenant_id)
        });
        match (kind.as_str(), position) {
            ("remove", None) => {}
            ("remove", Some(i)) => {
                let current = &mut vault.access_policies[i];
                for (kind_name, list) in &entry.permissions {
                    let gone = lower(list);
                    if let Some(have) = current.permissions.get_mut(kind_name) {
                        have.retain(|p| !gone.contains(&p.to_ascii_lowercase()));
                    }
                }
                current.permissions.retain(|_, l| !l.is_empty());
                if current.permissions.is_empty() {
                    vault.access_policies.remove(i);
                }
            }
            ("add", Some(i)) => {
                let current = &mut vault.access_policies[i];
                for (kind_name, list) in &entry.permissions {
                    let have = current.permissions.entry(kind_name.clone()).or_default();
                    for p in lower(list) {
                        if !have.contains(&p) {
                            have.push(p);
                        }
                    }
                }
            }
            (_, position) => {
                let mut fresh = entry.clone();
                fresh.permissions = entry
                    .permissions
                    .iter()
                    .map(|(k, l)| (k.clone(), lower(l)))
                    .collect();
                match position {
                    Some(i) => vault.access_policies[i] = fresh,
                    None => vault.access_policies.push(fresh),
                }
            }
        }
    }
    Json(json!({"id": format!("{}/accessPolicies/", vault.id), "type": "Microsoft.KeyVault/vaults/accessPolicies",
        "properties": {"accessPolicies": vault.access_policies}})).into_response()
}

fn not_found(rp: &ResourcePath) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!(
            "The Resource '{}/{}' under resource group '{}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
            rp.type_name, rp.name, rp.rg
        ),
    )
}

fn storage_account(state: &State, rp: &ResourcePath) -> Response {
    match state.storage_accounts.get(&rp.key()) {
        Some(a) => {
            let name = a.id.rsplit('/').next().unwrap_or_default();
            Json(json!({
                "id": a.id, "name": name, "type": "Microsoft.Storage/storageAccounts", "location": a.location, "kind": "StorageV2",
                "sku": {"name": "Standard_LRS", "tier": "Standard"},
                "properties": {"provisioningState": "Succeeded", "allowSharedKeyAccess": true, "primaryEndpoints": {"blob": format!("https://{name}.blob.core.windows.net/"), "file": format!("https://{name}.file.core.windows.net/")}},
            }))
            .into_response()
        }
        None => not_found(rp),
    }
}

fn storage_keys(state: &State, rp: &ResourcePath) -> Response {
    match state.storage_accounts.get(&rp.key()) {
        Some(a) => {
            let keys: Vec<_> = a.keys.iter().enumerate().map(|(i, k)| json!({"keyName": format!("key{}", i + 1), "value": k, "permissions": "FULL", "creationTime": "2026-01-01T00:00:00.0000000Z"})).collect();
            Json(json!({"keys": keys})).into_response()
        }
        None => not_found(rp),
    }
}

fn registry(state: &State, rp: &ResourcePath) -> Response {
    match state.registries.values().find(|r| r.id.eq_ignore_ascii_case(&rp.id)) {
        Some(r) => Json(json!({
            "id": r.id, "name": rp.name, "type": "Microsoft.ContainerRegistry/registries", "location": "eastus",
            "sku": {"name": "Standard", "tier": "Standard"},
            "properties": {"loginServer": r.login_server, "adminUserEnabled": r.admin_user_enabled, "provisioningState": "Succeeded"},
        }))
        .into_response(),
        None => not_found(rp),
    }
}

fn registry_credentials(state: &State, rp: &ResourcePath) -> Response {
    let Some(r) = state
        .registries
        .values()
        .find(|r| r.id.eq_ignore_ascii_case(&rp.id))
    else {
        return not_found(rp);
    };
    if !r.admin_user_enabled {
        return error(
            StatusCode::BAD_REQUEST,
            "UnableToListCredentials",
            "The admin user is disabled for this registry: enable it (adminUserEnabled) or use token-based access.",
        );
    }
    let password = |n: &str| {
        uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_URL,
            format!("{}#{n}", r.id.to_ascii_lowercase()).as_bytes(),
        )
        .simple()
        .to_string()
    };
    let username = r.login_server.split('.').next().unwrap_or_default();
    Json(json!({"username": username, "passwords": [{"name": "password", "value": password("1")}, {"name": "password2", "value": password("2")}]})).into_response()
}

/// Resolves a request body's `identity` as ARM does: known identities only, assigned only by callers
/// allowed to, client and principal ids filled in, a system-assigned principal created.
fn resolve_identity(
    state: &mut State,
    claims: &AccessClaims,
    resource_id: &str,
    identity: &Value,
    compute: bool,
) -> Result<Value, Box<Response>> {
    let kind = identity["type"].as_str().unwrap_or("None");
    let system = kind.contains("SystemAssigned");
    let user = kind.contains("UserAssigned");
    if ![
        "None",
        "SystemAssigned",
        "UserAssigned",
        "SystemAssigned,UserAssigned",
    ]
    .contains(&kind)
    {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "InvalidIdentityType",
            format!(
                "The identity type '{kind}' is not valid; use None, SystemAssigned, UserAssigned or 'SystemAssigned,UserAssigned'."
            ),
        )));
    }
    if compute && system && user {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "A compute can have a system-assigned identity or user-assigned identities, not both.",
        )));
    }
    let mut resolved = json!({"type": kind});
    if system {
        let principal = uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_URL,
            format!("{}#system", resource_id.to_ascii_lowercase()).as_bytes(),
        )
        .to_string();
        state
            .system_identities
            .insert(principal.clone(), resource_id.to_owned());
        resolved["principalId"] = principal.into();
        resolved["tenantId"] = claims.tid.clone().into();
    }
    if user {
        let Some(map) = identity["userAssignedIdentities"]
            .as_object()
            .filter(|m| !m.is_empty())
        else {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "userAssignedIdentities must list at least one identity when the type includes UserAssigned.",
            )));
        };
        let mut out = serde_json::Map::new();
        for uai in map.keys() {
            let Some(found) = state.identities.get(&uai.to_ascii_lowercase()).cloned() else {
                return Err(Box::new(error(
                    StatusCode::BAD_REQUEST,
                    "FailedIdentityOperation",
                    format!("Resource '{uai}' was not found."),
                )));
            };
            let assign = "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action";
            if !state.authorized(&claims.oid, assign, &found.id, false) {
                return Err(Box::new(error(
                    StatusCode::FORBIDDEN,
                    "LinkedAuthorizationFailed",
                    format!(
                        "The client '{}' with object id '{}' has permission to perform action on scope '{resource_id}'; however, it does not have permission to perform action(s) '{assign}' on the linked scope(s) '{}' or the linked scope(s) are invalid.",
                        claims.appid, claims.oid, found.id
                    ),
                )));
            }
            out.insert(
                found.id.clone(),
                json!({"principalId": found.principal_id, "clientId": found.client_id}),
            );
        }
        resolved["userAssignedIdentities"] = Value::Object(out);
    }
    Ok(resolved)
}

/// AML refuses a workspace whose associated resources are not ids of the right type: a pasted id
/// with a trailing space, a storage account given as the registry.
fn associated_resources_are_ids(properties: &Value) -> Result<(), Box<Response>> {
    for (property, type_name) in [
        ("storageAccount", "Microsoft.Storage/storageAccounts"),
        ("keyVault", "Microsoft.KeyVault/vaults"),
        (
            "containerRegistry",
            "Microsoft.ContainerRegistry/registries",
        ),
        ("applicationInsights", "Microsoft.Insights/components"),
    ] {
        let Some(id) = properties.get(property).and_then(|v| v.as_str()) else {
            continue;
        };
        let segments: Vec<&str> = id.split('/').collect();
        let well_formed = segments.len() == 9
            && segments[0].is_empty()
            && segments[1].eq_ignore_ascii_case("subscriptions")
            && segments[3].eq_ignore_ascii_case("resourceGroups")
            && segments[5].eq_ignore_ascii_case("providers")
            && format!("{}/{}", segments[6], segments[7]).eq_ignore_ascii_case(type_name)
            && segments
                .iter()
                .skip(1)
                .all(|s| !s.is_empty() && !s.chars().any(char::is_whitespace));
        if !well_formed {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "ValidationError",
                format!("The {property} property is not a valid {type_name} resource id."),
            )));
        }
    }
    Ok(())
}

fn identity_resource(
    emu: &Emulator,
    state: &mut State,
    method: &Method,
    rp: &ResourcePath,
    claims: &AccessClaims,
    body: Value,
    host: &str,
) -> Response {
    let compute = rp.type_path == COMPUTES;
    let existing = state.resources.get(&rp.key()).cloned();
    if *method == Method::PATCH && existing.is_none() {
        return not_found(rp);
    }
    let mut resource = existing.clone().unwrap_or_else(
        || json!({"id": rp.id, "name": rp.name, "type": rp.type_name, "properties": {}}),
    );
    // PUT replaces, PATCH merges; both keep read-only values the service owns.
    if *method == Method::PUT {
        let Some(location) = body["location"]
            .as_str()
            .or_else(|| resource["location"].as_str())
        else {
            return error(
                StatusCode::BAD_REQUEST,
                "LocationRequired",
                "The location property is required for this definition.",
            );
        };
        resource["location"] = location.into();
        let owned = [
            "workspaceId",
            "provisioningState",
            "tenantId",
            "mlFlowTrackingUri",
            "discoveryUrl",
            "createdOn",
        ];
        let mut properties = body["properties"].clone();
        if !properties.is_object() {
            properties = json!({});
        }
        for key in owned {
            if let Some(v) = resource["properties"].get(key) {
                properties[key] = v.clone();
            }
        }
        resource["properties"] = properties;
        resource["identity"] = body
            .get("identity")
            .cloned()
            .unwrap_or(json!({"type": "None"}));
        if let Some(tags) = body.get("tags") {
            resource["tags"] = tags.clone();
        }
    } else {
        if let Some(props) = body["properties"].as_object() {
            for (k, v) in props {
                resource["properties"][k] = v.clone();
            }
        }
        if let Some(identity) = body.get("identity") {
            resource["identity"] = identity.clone();
        }
    }
    if !compute && let Err(r) = associated_resources_are_ids(&resource["properties"]) {
        return *r;
    }
    let identity = match resolve_identity(state, claims, &rp.id, &resource["identity"], compute) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    if !compute && identity["type"] == "UserAssigned" {
        let primary = resource["properties"]["primaryUserAssignedIdentity"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let listed = identity["userAssignedIdentities"]
            .as_object()
            .is_some_and(|m| m.keys().any(|k| k.eq_ignore_ascii_case(&primary)));
        if !listed {
            return error(
                StatusCode::BAD_REQUEST,
                "ValidationError",
                "primaryUserAssignedIdentity is required and must be one of the workspace's user-assigned identities when the identity type is UserAssigned.",
            );
        }
    }
    resource["identity"] = identity;
    let location = resource["location"].as_str().unwrap_or("eastus").to_owned();
    if compute {
        resource["properties"]["provisioningState"] = if existing.is_some() {
            "Updating"
        } else {
            "Creating"
        }
        .into();
        if resource["properties"]["computeType"].is_null() {
            resource["properties"]["computeType"] = "AmlCompute".into();
        }
    } else {
        let guid = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, rp.key().as_bytes()).to_string();
        let p = &mut resource["properties"];
        p["workspaceId"] = guid.into();
        p["tenantId"] = claims.tid.clone().into();
        p["mlFlowTrackingUri"] =
            format!("azureml://{location}.api.azureml.ms/mlflow/v1.0{}", rp.id).into();
        p["discoveryUrl"] = format!("https://{location}.api.azureml.ms/discovery").into();
        p["provisioningState"] = if existing.is_some() {
            "Succeeded"
        } else {
            "Creating"
        }
        .into();
    }
    state.resources.insert(rp.key(), resource.clone());
    match (compute, existing.is_some()) {
        // Computes answer 201 (create) or 200 (update) and are polled through Azure-AsyncOperation.
        (true, created) => {
            let (name, url) = start_operation(emu, state, rp, host, &location, false, false);
            let status = if created {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            with_header((status, Json(resource)).into_response(), name, &url)
        }
        // Workspaces are created with 202 + Location, and updated in place.
        (false, false) => {
            let (name, url) = start_operation(emu, state, rp, host, &location, false, true);
            with_header(
                with_header(StatusCode::ACCEPTED.into_response(), name, &url),
                "retry-after",
                &emu.lro_retry_after().to_string(),
            )
        }
        (false, true) => Json(resource).into_response(),
    }
}

/// Datastore secrets leave the GET body and stay retrievable through `listSecrets` only.
fn datastore(state: &mut State, rp: &ResourcePath, body: Value) -> Response {
    let mut properties = body["properties"].clone();
    let kind = properties["datastoreType"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if ![
        "AzureBlob",
        "AzureDataLakeGen1",
        "AzureDataLakeGen2",
        "AzureFile",
    ]
    .contains(&kind.as_str())
    {
        return error(
            StatusCode::BAD_REQUEST,
            "UserError",
            format!(
                "datastoreType '{kind}' is not supported; use AzureBlob, AzureDataLakeGen1, AzureDataLakeGen2 or AzureFile."
            ),
        );
    }
    // Each type names its storage with its own properties.
    let required: &[&str] = match kind.as_str() {
        "AzureBlob" => &["accountName", "containerName"],
        "AzureDataLakeGen2" => &["accountName", "filesystem"],
        "AzureFile" => &["accountName", "fileShareName"],
        _ => &["storeName"],
    };
    if let Some(missing) = required
        .iter()
        .find(|p| properties[**p].as_str().is_none_or(str::is_empty))
    {
        return error(
            StatusCode::BAD_REQUEST,
            "UserError",
            format!("The field {missing} is required for a datastore of type {kind}."),
        );
    }
    let credentials_type = properties["credentials"]["credentialsType"]
        .as_str()
        .unwrap_or("None")
        .to_owned();
    // A Data Lake Gen1 store has no account key or SAS: a service principal or the identity.
    if kind == "AzureDataLakeGen1" && ["AccountKey", "Sas"].contains(&credentials_type.as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            "UserError",
            format!(
                "Credentials of type {credentials_type} are not supported for AzureDataLakeGen1 datastores; use ServicePrincipal, Certificate or None."
            ),
        );
    }
    if credentials_type == "None" && kind == "AzureFile" {
        return error(
            StatusCode::BAD_REQUEST,
            "UserError",
            "Identity-based access is not supported for AzureFile datastores; provide AccountKey or Sas credentials.",
        );
    }
    let secrets = properties["credentials"]["secrets"].clone();
    if let Some(s) = properties["credentials"]
        .get_mut("secrets")
        .and_then(Value::as_object_mut)
    {
        s.retain(|k, _| k == "secretsType");
    }
    properties["isDefault"] = false.into();
    let resource =
        json!({"id": rp.id, "name": rp.name, "type": rp.type_name, "properties": properties});
    let created = state.resources.insert(rp.key(), resource.clone()).is_none();
    if secrets.is_object() {
        state.hidden.insert(rp.key(), secrets);
    } else {
        state.hidden.remove(&rp.key());
    }
    (
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(resource),
    )
        .into_response()
}

/// Connection credentials leave the GET body and stay retrievable through `listsecrets` only.
fn connection(state: &mut State, rp: &ResourcePath, body: Value) -> Response {
    let mut properties = body["properties"].clone();
    if properties["category"].as_str().is_none() || properties["authType"].as_str().is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "UserError",
            "A connection needs properties.category and properties.authType.",
        );
    }
    if properties["authType"] == "ManagedIdentity" {
        let creds = &properties["credentials"];
        let ok = creds["clientId"].is_string()
            && creds["resourceId"].is_string()
            && creds.as_object().is_some_and(|o| o.len() == 2);
        if !ok {
            return error(
                StatusCode::BAD_REQUEST,
                "UserError",
                "ManagedIdentity credentials take exactly clientId and resourceId.",
            );
        }
    }
    let credentials = properties
        .as_object_mut()
        .and_then(|p| p.remove("credentials"));
    let resource =
        json!({"id": rp.id, "name": rp.name, "type": rp.type_name, "properties": properties});
    state.resources.insert(rp.key(), resource.clone());
    match credentials {
        Some(c) => state.hidden.insert(rp.key(), c),
        None => state.hidden.remove(&rp.key()),
    };
    Json(resource).into_response()
}
