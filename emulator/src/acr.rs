//! Azure Container Registry's token service: `/oauth2/exchange` (AAD access token → ACR refresh
//! token, only for principals holding AcrPull or more on the registry), `/oauth2/token` (refresh
//! token → access token, form POST or Basic-auth GET), and the `/v2/` challenge.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::{Emulator, host_of};

/// ACR refresh tokens live three hours.
const REFRESH_LIFETIME: i64 = 3 * 3600;
const PULL: &str = "Microsoft.ContainerRegistry/registries/pull/read";
const PUSH: &str = "Microsoft.ContainerRegistry/registries/push/write";

/// Claims of ACR refresh and access tokens.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegistryClaims {
    /// Token id.
    pub jti: String,
    /// Principal object id.
    pub sub: String,
    /// Not before.
    pub nbf: i64,
    /// Expiry.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// `Azure Container Registry`.
    pub iss: String,
    /// The registry login server.
    pub aud: String,
    /// `refresh_token` or `access_token`.
    pub grant_type: String,
    /// Tenant.
    pub tenant: String,
    /// Granted repository access (access tokens).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access: Vec<Access>,
}

/// One repository grant, as the Docker token spec shapes it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Access {
    /// `repository`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Repository name.
    pub name: String,
    /// `pull`, `push`.
    pub actions: Vec<String>,
}

fn unauthorized(host: &str, message: &str) -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        Json(serde_json::json!({"errors": [{"code": "UNAUTHORIZED", "message": message, "detail": null}]})),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "Bearer realm=\"https://{host}/oauth2/token\",service=\"{host}\""
    )) {
        response.headers_mut().insert("www-authenticate", v);
    }
    response
}

/// The registry a request is for: by `Host`, the way clients address ACR; a request that reached
/// the emulator by address (a registry's token realm in tests) names it by its `service`.
fn registry_for(
    emu: &Emulator,
    headers: &HeaderMap,
    service: Option<&str>,
) -> Option<crate::state::Registry> {
    let host = host_of(headers);
    let host = host
        .split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let state = emu.state();
    state
        .registries
        .get(&host)
        .or_else(|| service.and_then(|s| state.registries.get(&s.to_ascii_lowercase())))
        .cloned()
}

/// `GET /v2/`: always a challenge without a valid access token.
pub async fn v2(State(emu): State<Emulator>, headers: HeaderMap) -> Response {
    let Some(registry) = registry_for(&emu, &headers, None) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match bearer.and_then(|t| {
        emu.signer()
            .verify_as::<RegistryClaims>(t, emu.clock().now())
            .ok()
    }) {
        Some(c) if c.grant_type == "access_token" && c.aud == registry.login_server => {
            Json(serde_json::json!({})).into_response()
        }
        _ => unauthorized(
            &registry.login_server,
            "authentication required, visit https://aka.ms/acr/authorization for more information.",
        ),
    }
}

/// `POST /oauth2/exchange`.
pub async fn exchange(
    State(emu): State<Emulator>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let Some(registry) = registry_for(&emu, &headers, form.get("service").map(String::as_str))
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let host = registry.login_server.clone();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    if field("grant_type") != "access_token" {
        return (StatusCode::BAD_REQUEST, Json(serde_json::json!({"errors": [{"code": "UNSUPPORTED", "message": "grant_type must be access_token"}]}))).into_response();
    }
    if !field("service").eq_ignore_ascii_case(&host) {
        return unauthorized(
            &host,
            &format!(
                "the service {:?} does not match the registry {host}",
                field("service")
            ),
        );
    }
    let now = emu.clock().now();
    let Ok(aad) = emu.signer().verify(field("access_token"), now) else {
        return unauthorized(&host, "the AAD access token is invalid or expired");
    };
    if !emu.registry_accepts(&aad.aud) {
        return unauthorized(
            &host,
            &format!("the AAD access token has the wrong audience {:?}", aad.aud),
        );
    }
    if !emu.state().authorized(&aad.oid, PULL, &registry.id, false) {
        return unauthorized(
            &host,
            &format!(
                "the principal {} is not authorized to pull from this registry: grant it AcrPull on {}",
                aad.oid, registry.id
            ),
        );
    }
    emu.count(&format!("acr.exchange:{}:{}", aad.appid, host));
    let claims = RegistryClaims {
        jti: uuid::Uuid::new_v4().to_string(),
        sub: aad.oid,
        nbf: now - 300,
        exp: now + emu.state().refresh_lifetime.unwrap_or(REFRESH_LIFETIME),
        iat: now,
        iss: "Azure Container Registry".into(),
        aud: host,
        grant_type: "refresh_token".into(),
        tenant: aad.tid,
        access: Vec::new(),
    };
    Json(serde_json::json!({"refresh_token": emu.signer().sign(&claims)})).into_response()
}

/// Query of `GET /oauth2/token`.
#[derive(Deserialize)]
pub struct TokenQuery {
    service: Option<String>,
    scope: Option<String>,
}

/// `GET /oauth2/token` with Basic credentials (username `00000000-…`, password = refresh token), as
/// docker clients call it.
pub async fn token_get(
    State(emu): State<Emulator>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Response {
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let refresh = basic
        .as_deref()
        .and_then(|b| b.split_once(':'))
        .map(|(_, password)| password.to_owned());
    access_token(
        &emu,
        &headers,
        refresh.as_deref(),
        query.service.as_deref(),
        query.scope.as_deref(),
    )
}

/// `POST /oauth2/token` with `grant_type=refresh_token`.
pub async fn token_post(
    State(emu): State<Emulator>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    access_token(
        &emu,
        &headers,
        form.get("refresh_token").map(String::as_str),
        form.get("service").map(String::as_str),
        form.get("scope").map(String::as_str),
    )
}

fn access_token(
    emu: &Emulator,
    headers: &HeaderMap,
    refresh: Option<&str>,
    service: Option<&str>,
    scope: Option<&str>,
) -> Response {
    let Some(registry) = registry_for(emu, headers, service) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let host = registry.login_server.clone();
    let now = emu.clock().now();
    let Some(claims) = refresh.and_then(|t| emu.signer().verify_as::<RegistryClaims>(t, now).ok())
    else {
        return unauthorized(&host, "the refresh token is invalid or expired");
    };
    if claims.grant_type != "refresh_token"
        || claims.aud != host
        || service.is_some_and(|s| !s.eq_ignore_ascii_case(&host))
    {
        return unauthorized(&host, "the refresh token was not issued for this registry");
    }
    // repository:NAME:pull[,push]; the principal's roles decide what is granted right now.
    let mut access = Vec::new();
    if let Some(scope) = scope {
        let parts: Vec<&str> = scope.split(':').collect();
        if parts.len() == 3 && parts[0] == "repository" {
            let state = emu.state();
            let actions: Vec<String> = parts[2]
                .split(',')
                .filter(|a| match *a {
                    "pull" => state.authorized(&claims.sub, PULL, &registry.id, false),
                    "push" => state.authorized(&claims.sub, PUSH, &registry.id, false),
                    _ => false,
                })
                .map(String::from)
                .collect();
            if actions.is_empty() {
                return unauthorized(&host, &format!("insufficient scopes for {scope}"));
            }
            access.push(Access {
                type_: "repository".into(),
                name: parts[1].into(),
                actions,
            });
        }
    }
    let access_claims = RegistryClaims {
        jti: uuid::Uuid::new_v4().to_string(),
        sub: claims.sub,
        nbf: now - 300,
        exp: now + 3600,
        iat: now,
        iss: "Azure Container Registry".into(),
        aud: host,
        grant_type: "access_token".into(),
        tenant: claims.tenant,
        access,
    };
    let token = emu.signer().sign(&access_claims);
    Json(serde_json::json!({"access_token": token, "token": token, "expires_in": 3600}))
        .into_response()
}
