//! The node's Instance Metadata Service token endpoint (plain HTTP, `Metadata: true` required,
//! string-valued fields, `client_id` / `object_id` / `msi_res_id` selectors).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::Emulator;
use crate::state::{Principal, identity_principal};

fn refuse(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(serde_json::json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// `GET /metadata/identity/oauth2/token?api-version=…&resource=…`.
pub async fn token(
    State(emu): State<Emulator>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required metadata header not specified",
        );
    }
    if !query.contains_key("api-version") {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'api-version' is missing",
        );
    }
    let Some(resource) = query.get("resource").filter(|r| !r.is_empty()) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'resource' is missing",
        );
    };
    if !emu.knows_resource(resource) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            &format!(
                "AADSTS500011: The resource principal named {resource} was not found in the tenant."
            ),
        );
    }
    let selectors: Vec<_> = ["client_id", "object_id", "msi_res_id"]
        .into_iter()
        .filter(|k| query.contains_key(*k))
        .collect();
    if selectors.len() > 1 {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Only one of client_id, object_id and msi_res_id may be given",
        );
    }
    let principal = {
        let state = emu.state();
        let attached = state
            .imds
            .user_assigned
            .iter()
            .filter_map(|id| state.identities.get(&id.to_ascii_lowercase()));
        let chosen: Option<Principal> = match selectors.first() {
            Some(&"client_id") => attached
                .clone()
                .find(|i| Some(&i.client_id) == query.get("client_id"))
                .map(identity_principal),
            Some(&"object_id") => attached
                .clone()
                .find(|i| Some(&i.principal_id) == query.get("object_id"))
                .map(identity_principal),
            Some(_) => attached
                .clone()
                .find(|i| {
                    query
                        .get("msi_res_id")
                        .is_some_and(|r| r.eq_ignore_ascii_case(&i.id))
                })
                .map(identity_principal),
            None => state.imds.system_assigned.as_ref().and_then(|oid| {
                state
                    .service_principals
                    .values()
                    .find(|sp| &sp.object_id == oid)
                    .map(|sp| Principal {
                        tenant_id: sp.tenant_id.clone(),
                        client_id: sp.client_id.clone(),
                        object_id: sp.object_id.clone(),
                        resource_id: None,
                    })
            }),
        };
        chosen
    };
    let Some(principal) = principal else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Identity not found",
        );
    };
    emu.count(&format!("imds.token:{}:{resource}", principal.client_id));
    let now = emu.clock().now();
    let lifetime = emu.lifetime_for(&principal.client_id);
    let (token, claims) = emu
        .signer()
        .issue(&principal, resource, now, lifetime, false);
    Json(serde_json::json!({
        "access_token": token,
        "client_id": principal.client_id,
        "expires_in": lifetime.to_string(),
        "expires_on": claims.exp.to_string(),
        "ext_expires_in": lifetime.to_string(),
        "not_before": claims.nbf.to_string(),
        "resource": resource,
        "token_type": "Bearer",
    }))
    .into_response()
}
