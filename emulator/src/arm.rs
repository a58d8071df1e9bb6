//! The Azure Resource Manager subset: user-assigned identities, their federated identity
//! credentials, and role assignments. Every call is authenticated (token signature, audience,
//! expiry, tenant), throttled per subscription and principal, and authorized by role assignments.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::collections::HashMap;

use crate::errors::arm as error;
use crate::resources::{self, ResourcePath};
use crate::state::{FederatedCredential, RoleAssignment, UserAssignedIdentity, assignment_id};
use crate::tokens::{AccessClaims, TokenProblem};
use crate::{Emulator, rbac};

const IDENTITY_VERSIONS: &[&str] = &["2023-01-31", "2024-11-30"];
const AUTHORIZATION_VERSIONS: &[&str] = &["2022-04-01"];
const MAX_FEDERATED_CREDENTIALS: usize = 20;

/// What a path addresses.
enum Target {
    Identity {
        rg: String,
        name: String,
    },
    FederatedCredential {
        rg: String,
        identity: String,
        name: Option<String>,
    },
    RoleAssignment {
        scope: String,
        name: Option<String>,
    },
    /// Workspaces, computes, datastores, connections, storage accounts, registries, vaults.
    Generic(ResourcePath),
    /// A long-running operation's status (`operationResults` or `operationsStatus`).
    Operation {
        id: String,
        location_style: bool,
    },
}

impl Target {
    fn parse(path: &str) -> Option<(String, Target)> {
        let lower = path.to_ascii_lowercase();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        if segments.len() < 2 || !segments[0].eq_ignore_ascii_case("subscriptions") {
            return None;
        }
        let subscription = segments[1].to_owned();
        const RA: &str = "/providers/microsoft.authorization/roleassignments";
        if let Some(at) = lower.find(RA) {
            let scope = path[..at].to_owned();
            let rest = path[at + RA.len()..].trim_matches('/');
            let name = (!rest.is_empty()).then(|| rest.to_owned());
            return Some((subscription, Target::RoleAssignment { scope, name }));
        }
        let is = |i: usize, s: &str| segments.get(i).is_some_and(|x| x.eq_ignore_ascii_case(s));
        if is(2, "resourceGroups")
            && is(4, "providers")
            && is(5, "Microsoft.ManagedIdentity")
            && is(6, "userAssignedIdentities")
        {
            let rg = segments.get(3)?.to_string();
            let identity = segments.get(7)?.to_string();
            return match segments.len() {
                8 => Some((subscription, Target::Identity { rg, name: identity })),
                9 | 10 if is(8, "federatedIdentityCredentials") => Some((
                    subscription,
                    Target::FederatedCredential {
                        rg,
                        identity,
                        name: segments.get(9).map(|s| s.to_string()),
                    },
                )),
                _ => None,
            };
        }
        if is(2, "providers") && is(4, "locations") && segments.len() == 8 {
            let location_style = is(6, "operationResults");
            if location_style || is(6, "operationsStatus") {
                return Some((
                    subscription,
                    Target::Operation {
                        id: segments[7].to_owned(),
                        location_style,
                    },
                ));
            }
        }
        ResourcePath::parse(path)
            .filter(|rp| rp.versions().is_some())
            .map(|rp| (subscription, Target::Generic(rp)))
    }

    fn versions(&self) -> &'static [&'static str] {
        match self {
            Target::RoleAssignment { .. } => AUTHORIZATION_VERSIONS,
            Target::Generic(rp) => rp.versions().unwrap_or_default(),
            Target::Operation { .. } => &[
                "2024-10-01",
                "2025-04-01",
                "2025-06-01",
                "2025-09-01",
                "2025-12-01",
            ],
            _ => IDENTITY_VERSIONS,
        }
    }

    /// The RBAC action of `method` on this target.
    fn action(&self, method: &Method) -> String {
        let verb = match *method {
            Method::GET => "read",
            Method::DELETE => "delete",
            _ => "write",
        };
        let resource_type = match self {
            Target::Identity { .. } => "Microsoft.ManagedIdentity/userAssignedIdentities",
            Target::FederatedCredential { .. } => {
                "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials"
            }
            Target::RoleAssignment { .. } => "Microsoft.Authorization/roleAssignments",
            Target::Generic(rp) => return rp.rbac_action(method),
            Target::Operation { .. } => "Microsoft.MachineLearningServices/locations/operations",
        };
        format!("{resource_type}/{verb}")
    }
}

fn identity_id(subscription: &str, rg: &str, name: &str) -> String {
    format!(
        "/subscriptions/{subscription}/resourceGroups/{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
    )
}

/// Every `/subscriptions/...` request.
pub async fn handle(
    State(emu): State<Emulator>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let Some((subscription, target)) = Target::parse(path) else {
        return error(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            format!("The resource type for '{path}' could not be found in the emulated providers."),
        );
    };
    match query.get("api-version") {
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            );
        }
        Some(v) if !target.versions().contains(&v.as_str()) => {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidApiVersionParameter",
                format!(
                    "The api-version '{v}' is invalid. The supported versions are '{}'.",
                    target.versions().join(",")
                ),
            );
        }
        Some(_) => {}
    }
    let claims = match authenticate(&emu, &headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let tenant = {
        let state = emu.state();
        match state.subscriptions.get(&subscription.to_ascii_lowercase()) {
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    "SubscriptionNotFound",
                    format!("The subscription '{subscription}' could not be found."),
                );
            }
            Some(s) => s.tenant_id.clone(),
        }
    };
    if tenant != claims.tid {
        return error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationTokenTenant",
            format!(
                "The access token is from the wrong issuer 'https://sts.windows.net/{}/'. It must match the tenant 'https://sts.windows.net/{tenant}/' associated with this subscription.",
                claims.tid
            ),
        );
    }
    let kind = match method {
        Method::GET => "reads",
        Method::DELETE => "deletes",
        _ => "writes",
    };
    let remaining = match emu.state().take_token(
        &subscription.to_ascii_lowercase(),
        &claims.oid,
        kind,
        emu.clock().now(),
    ) {
        Ok(left) => left,
        Err(retry_after) => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "SubscriptionRequestsThrottled",
                format!(
                    "Number of '{kind}' requests for subscription '{subscription}' actor '{}' exceeded. Please try again after '{retry_after}' seconds after the additional tokens are available.",
                    claims.oid
                ),
            );
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(retry_after));
            return response;
        }
    };
    let resource = match &target {
        Target::Identity { rg, name }
        | Target::FederatedCredential {
            rg, identity: name, ..
        } => identity_id(&subscription, rg, name),
        Target::RoleAssignment { scope, .. } => scope.clone(),
        Target::Generic(rp) => rp.id.clone(),
        // Whoever started an operation may poll it; same-tenant authentication is enough.
        Target::Operation { id, location_style } => {
            return resources::poll(&emu, id, *location_style);
        }
    };
    if let Target::Generic(rp) = &target
        && rp.parent.is_none()
        && method == Method::PUT
        && !resource_group_exists(&emu, &subscription, &rp.rg)
    {
        return error(
            StatusCode::NOT_FOUND,
            "ResourceGroupNotFound",
            format!("Resource group '{}' could not be found.", rp.rg),
        );
    }
    let action = target.action(&method);
    if !emu
        .state()
        .authorized(&claims.oid, &action, &resource, false)
    {
        return error(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            format!(
                "The client '{}' with object id '{}' does not have authorization to perform action '{action}' over scope '{resource}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
                claims.appid, claims.oid
            ),
        );
    }
    let mut response = match target {
        Target::Identity { rg, name } => {
            identity(&emu, &method, &subscription, &rg, &name, &tenant, &body)
        }
        Target::FederatedCredential { rg, identity, name } => {
            federated(&emu, &method, &subscription, &rg, &identity, name, &body)
        }
        Target::RoleAssignment { scope, name } => {
            role_assignment(&emu, &method, &scope, name, &query, &body)
        }
        Target::Generic(rp) => resources::handle(
            &emu,
            &method,
            &rp,
            &claims,
            &body,
            &crate::host_of(&headers),
        ),
        Target::Operation { .. } => unreachable!("answered before authorization"),
    };
    response.headers_mut().insert(
        match kind {
            "reads" => "x-ms-ratelimit-remaining-subscription-reads",
            "deletes" => "x-ms-ratelimit-remaining-subscription-deletes",
            _ => "x-ms-ratelimit-remaining-subscription-writes",
        },
        HeaderValue::from(remaining),
    );
    response
}

/// Checks the bearer token: issued by this emulator, for Resource Manager, not expired.
fn authenticate(emu: &Emulator, headers: &HeaderMap) -> Result<AccessClaims, Box<Response>> {
    let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        )));
    };
    let claims = match emu.signer().verify(token, emu.clock().now()) {
        Ok(c) => c,
        Err(TokenProblem::Expired) => {
            return Err(Box::new(error(
                StatusCode::UNAUTHORIZED,
                "ExpiredAuthenticationToken",
                "The access token expiry UTC time is earlier than current UTC time.",
            )));
        }
        Err(_) => {
            return Err(Box::new(error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "The access token is invalid.",
            )));
        }
    };
    if !emu.is_resource_manager(&claims.aud) {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationTokenAudience",
            format!(
                "The access token has been obtained for wrong audience or resource '{}'. It should exactly match with one of the allowed audiences 'https://management.core.windows.net/','https://management.azure.com/'.",
                claims.aud
            ),
        )));
    }
    Ok(claims)
}

fn resource_group_exists(emu: &Emulator, subscription: &str, rg: &str) -> bool {
    emu.state()
        .subscriptions
        .get(&subscription.to_ascii_lowercase())
        .is_some_and(|s| s.resource_groups.iter().any(|g| g.eq_ignore_ascii_case(rg)))
}

fn identity_body(i: &UserAssignedIdentity) -> serde_json::Value {
    let name = i.id.rsplit('/').next().unwrap_or_default();
    serde_json::json!({
        "id": i.id,
        "name": name,
        "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
        "location": i.location,
        "tags": i.tags,
        "properties": {"tenantId": i.tenant_id, "principalId": i.principal_id, "clientId": i.client_id, "isolationScope": "None"},
    })
}

fn not_found(kind: &str, name: &str, rg: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!(
            "The Resource '{kind}/{name}' under resource group '{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
        ),
    )
}

fn identity(
    emu: &Emulator,
    method: &Method,
    subscription: &str,
    rg: &str,
    name: &str,
    tenant: &str,
    body: &[u8],
) -> Response {
    if !resource_group_exists(emu, subscription, rg) {
        return error(
            StatusCode::NOT_FOUND,
            "ResourceGroupNotFound",
            format!("Resource group '{rg}' could not be found."),
        );
    }
    let id = identity_id(subscription, rg, name);
    let key = id.to_ascii_lowercase();
    let mut state = emu.state();
    match *method {
        Method::GET => match state.identities.get(&key) {
            Some(i) => Json(identity_body(i)).into_response(),
            None => not_found("Microsoft.ManagedIdentity/userAssignedIdentities", name, rg),
        },
        Method::PUT => {
            #[derive(Deserialize)]
            struct Body {
                location: Option<String>,
                #[serde(default)]
                tags: std::collections::BTreeMap<String, String>,
            }
            let Ok(Body {
                location: Some(location),
                tags,
            }) = serde_json::from_slice::<Body>(body)
            else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "LocationRequired",
                    "The location property is required for this definition.",
                );
            };
            if let Some(existing) = state.identities.get_mut(&key) {
                existing.location = location;
                existing.tags = tags;
                return Json(identity_body(existing)).into_response();
            }
            let created = UserAssignedIdentity {
                id,
                location,
                tenant_id: tenant.to_owned(),
                client_id: uuid::Uuid::new_v4().to_string(),
                principal_id: uuid::Uuid::new_v4().to_string(),
                federated_credentials: Vec::new(),
                tags,
            };
            let response = (StatusCode::CREATED, Json(identity_body(&created))).into_response();
            state.identities.insert(key, created);
            response
        }
        Method::DELETE => match state.identities.remove(&key) {
            Some(_) => StatusCode::OK.into_response(),
            None => StatusCode::NO_CONTENT.into_response(),
        },
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} is not supported here."),
        ),
    }
}

fn fic_body(identity_id: &str, f: &FederatedCredential) -> serde_json::Value {
    serde_json::json!({
        "id": format!("{identity_id}/federatedIdentityCredentials/{}", f.name),
        "name": f.name,
        "type": "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
        "properties": {"issuer": f.issuer, "subject": f.subject, "audiences": f.audiences},
    })
}

fn federated(
    emu: &Emulator,
    method: &Method,
    subscription: &str,
    rg: &str,
    identity: &str,
    name: Option<String>,
    body: &[u8],
) -> Response {
    let id = identity_id(subscription, rg, identity);
    let mut state = emu.state();
    let Some(owner) = state.identities.get_mut(&id.to_ascii_lowercase()) else {
        return not_found(
            "Microsoft.ManagedIdentity/userAssignedIdentities",
            identity,
            rg,
        );
    };
    let owner_id = owner.id.clone();
    let Some(name) = name else {
        if *method != Method::GET {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "Only GET lists federated identity credentials.",
            );
        }
        let value: Vec<_> = owner
            .federated_credentials
            .iter()
            .map(|f| fic_body(&owner_id, f))
            .collect();
        return Json(serde_json::json!({"value": value})).into_response();
    };
    match *method {
        Method::GET => match owner.federated_credentials.iter().find(|f| f.name == name) {
            Some(f) => Json(fic_body(&owner_id, f)).into_response(),
            None => not_found(
                "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
                &name,
                rg,
            ),
        },
        Method::PUT => {
            #[derive(Deserialize)]
            struct Props {
                issuer: String,
                subject: String,
                audiences: Vec<String>,
            }
            #[derive(Deserialize)]
            struct Body {
                properties: Props,
            }
            let props = match serde_json::from_slice::<Body>(body) {
                Ok(b) => b.properties,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        format!("The request body is invalid: {e}"),
                    );
                }
            };
            if !props.issuer.starts_with("https://") {
                return error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "Issuer must be a valid URL that starts with 'https://'.",
                );
            }
            if props.subject.is_empty() || props.audiences.len() != 1 {
                return error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "A federated identity credential needs a subject and exactly one audience.",
                );
            }
            if owner
                .federated_credentials
                .iter()
                .any(|f| f.name != name && f.issuer == props.issuer && f.subject == props.subject)
            {
                return error(
                    StatusCode::CONFLICT,
                    "Conflict",
                    "A federated identity credential with the same issuer and subject already exists on this identity.",
                );
            }
            let fic = FederatedCredential {
                name: name.clone(),
                issuer: props.issuer,
                subject: props.subject,
                audiences: props.audiences,
            };
            let body = fic_body(&owner_id, &fic);
            match owner
                .federated_credentials
                .iter_mut()
                .find(|f| f.name == name)
            {
                Some(existing) => {
                    *existing = fic;
                    Json(body).into_response()
                }
                None => {
                    if owner.federated_credentials.len() >= MAX_FEDERATED_CREDENTIALS {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "BadRequest",
                            format!(
                                "An identity can have at most {MAX_FEDERATED_CREDENTIALS} federated identity credentials."
                            ),
                        );
                    }
                    owner.federated_credentials.push(fic);
                    (StatusCode::CREATED, Json(body)).into_response()
                }
            }
        }
        Method::DELETE => {
            let before = owner.federated_credentials.len();
            owner.federated_credentials.retain(|f| f.name != name);
            if owner.federated_credentials.len() < before {
                StatusCode::OK
            } else {
                StatusCode::NO_CONTENT
            }
            .into_response()
        }
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} is not supported here."),
        ),
    }
}

fn assignment_body(ra: &RoleAssignment) -> serde_json::Value {
    let subscription = ra.scope.split('/').nth(2).unwrap_or_default();
    serde_json::json!({
        "id": assignment_id(&ra.scope, &ra.name),
        "type": "Microsoft.Authorization/roleAssignments",
        "name": ra.name,
        "properties": {
            "roleDefinitionId": format!("/subscriptions/{subscription}/providers/Microsoft.Authorization/roleDefinitions/{}", ra.role_definition_id),
            "principalId": ra.principal_id,
            "principalType": ra.principal_type,
            "scope": ra.scope,
            "description": ra.description,
        },
    })
}

fn role_assignment(
    emu: &Emulator,
    method: &Method,
    scope: &str,
    name: Option<String>,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Response {
    let mut state = emu.state();
    let Some(name) = name else {
        if *method != Method::GET {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "Only GET lists role assignments.",
            );
        }
        let principal = query
            .get("$filter")
            .and_then(|f| f.strip_prefix("principalId eq '"))
            .map(|p| p.trim_end_matches('\''));
        let value: Vec<_> = state
            .role_assignments
            .values()
            .filter(|ra| {
                rbac::scope_contains(&ra.scope, scope) || rbac::scope_contains(scope, &ra.scope)
            })
            .filter(|ra| principal.is_none_or(|p| ra.principal_id.eq_ignore_ascii_case(p)))
            .map(assignment_body)
            .collect();
        return Json(serde_json::json!({"value": value})).into_response();
    };
    if uuid::Uuid::parse_str(&name).is_err() {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidRoleAssignmentId",
            format!(
                "The role assignment ID '{name}' is not valid. The role assignment ID must be a GUID."
            ),
        );
    }
    let key = assignment_id(scope, &name).to_ascii_lowercase();
    match *method {
        Method::GET => match state.role_assignments.get(&key) {
            Some(ra) => Json(assignment_body(ra)).into_response(),
            None => error(
                StatusCode::NOT_FOUND,
                "RoleAssignmentNotFound",
                format!("The role assignment '{name}' is not found."),
            ),
        },
        Method::PUT => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Props {
                role_definition_id: String,
                principal_id: String,
                principal_type: Option<String>,
                description: Option<String>,
            }
            #[derive(Deserialize)]
            struct Body {
                properties: Props,
            }
            let props = match serde_json::from_slice::<Body>(body) {
                Ok(b) => b.properties,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "InvalidRequestContent",
                        format!("The request content was invalid: {e}"),
                    );
                }
            };
            let Some(role) = rbac::role(&props.role_definition_id) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "RoleDefinitionDoesNotExist",
                    format!(
                        "The specified role definition with ID '{}' does not exist.",
                        props.role_definition_id
                    ),
                );
            };
            let known = state.principal_exists(&props.principal_id);
            if !known {
                return error(
                    StatusCode::BAD_REQUEST,
                    "PrincipalNotFound",
                    format!(
                        "Principal {} does not exist in the directory.",
                        props.principal_id
                    ),
                );
            }
            let requested = RoleAssignment {
                name: name.clone(),
                scope: scope.to_owned(),
                role_definition_id: role.id.to_owned(),
                principal_id: props.principal_id,
                principal_type: props
                    .principal_type
                    .unwrap_or_else(|| "ServicePrincipal".into()),
                description: props.description,
            };
            let same_grant = |ra: &RoleAssignment| {
                ra.scope
                    .trim_end_matches('/')
                    .eq_ignore_ascii_case(requested.scope.trim_end_matches('/'))
                    && ra.role_definition_id == requested.role_definition_id
                    && ra
                        .principal_id
                        .eq_ignore_ascii_case(&requested.principal_id)
            };
            if let Some(existing) = state.role_assignments.get(&key) {
                return if same_grant(existing) {
                    (StatusCode::CREATED, Json(assignment_body(existing))).into_response()
                } else {
                    error(
                        StatusCode::CONFLICT,
                        "RoleAssignmentUpdateNotPermitted",
                        "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
                    )
                };
            }
            if let Some(other) = state.role_assignments.values().find(|ra| same_grant(ra)) {
                return error(
                    StatusCode::CONFLICT,
                    "RoleAssignmentExists",
                    format!(
                        "The role assignment already exists. The ID of the existing role assignment is {}.",
                        other.name.replace('-', "")
                    ),
                );
            }
            let response = (StatusCode::CREATED, Json(assignment_body(&requested))).into_response();
            state.role_assignments.insert(key, requested);
            response
        }
        Method::DELETE => match state.role_assignments.remove(&key) {
            Some(ra) => Json(assignment_body(&ra)).into_response(),
            None => StatusCode::NO_CONTENT.into_response(),
        },
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} is not supported here."),
        ),
    }
}
