//! Key Vault secrets: the unauthenticated 401 challenge SDKs start with, token audience and tenant
//! checks, and — as the vault's permission model says — `Key Vault Secrets User` (or more) or an
//! access policy allowing `get` on secrets required to read.
//! Vaults are addressed by host (`{vault}.vault.azure.net`) or, for clients that can only reach
//! `localhost`, by path (`/_vault/{vault}/secrets/...`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::tokens::audience_matches;
use crate::{Emulator, host_of};

const GET_SECRET: &str = "Microsoft.KeyVault/vaults/secrets/getSecret/action";

fn kv_error(status: StatusCode, code: &str, message: &str, inner: Option<&str>) -> Response {
    let mut error = serde_json::json!({"code": code, "message": message});
    if let Some(inner) = inner {
        error["innererror"] = serde_json::json!({"code": inner});
    }
    (status, Json(serde_json::json!({"error": error}))).into_response()
}

/// `GET /secrets/{name}[/{version}]` on `{vault}.vault.azure.net`.
pub async fn by_host(
    State(emu): State<Emulator>,
    headers: HeaderMap,
    Path(path): Path<String>,
) -> Response {
    let host = host_of(&headers);
    let vault = host.split('.').next().unwrap_or_default().to_owned();
    get(&emu, &headers, &vault, &path)
}

/// `GET /_vault/{vault}/secrets/{name}[/{version}]`.
pub async fn by_path(
    State(emu): State<Emulator>,
    headers: HeaderMap,
    Path((vault, path)): Path<(String, String)>,
) -> Response {
    get(&emu, &headers, &vault, &path)
}

fn get(emu: &Emulator, headers: &HeaderMap, vault_name: &str, path: &str) -> Response {
    let Some(vault) = emu
        .state()
        .vaults
        .get(&vault_name.to_ascii_lowercase())
        .cloned()
    else {
        return kv_error(
            StatusCode::NOT_FOUND,
            "VaultNotFound",
            &format!("The vault {vault_name} does not exist."),
            None,
        );
    };
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(bearer) = bearer else {
        let mut response = kv_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "AKV10000: Request is missing a Bearer or PoP token.",
            None,
        );
        let challenge = format!(
            "Bearer authorization=\"https://login.microsoftonline.com/{}\", resource=\"https://vault.azure.net\"",
            vault.tenant_id
        );
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            response.headers_mut().insert("www-authenticate", v);
        }
        return response;
    };
    let claims = match emu.signer().verify(bearer, emu.clock().now()) {
        Ok(c) => c,
        Err(_) => {
            return kv_error(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "AKV10032: Invalid issuer, expired or malformed token.",
                None,
            );
        }
    };
    if !audience_matches(&claims.aud, "https://vault.azure.net") {
        return kv_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            &format!(
                "AKV10022: Invalid audience. Expected https://vault.azure.net, found: {}.",
                claims.aud
            ),
            None,
        );
    }
    if claims.tid != vault.tenant_id {
        return kv_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "AKV10032: Invalid issuer. The token's tenant does not own this vault.",
            None,
        );
    }
    // An access-policy vault ignores Azure RBAC for data actions, and the other way round.
    if !vault.enable_rbac_authorization {
        let allowed = vault.access_policies.iter().any(|p| {
            p.object_id.eq_ignore_ascii_case(&claims.oid)
                && p.tenant_id.eq_ignore_ascii_case(&claims.tid)
                && p.allows("secrets", "get")
        });
        if !allowed {
            let message = format!(
                "The user, group or application 'appid={};oid={}' does not have secrets get permission on key vault '{vault_name};location=eastus'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287",
                claims.appid, claims.oid
            );
            return kv_error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                &message,
                Some("AccessDenied"),
            );
        }
    } else if !emu
        .state()
        .authorized(&claims.oid, GET_SECRET, &vault.id, true)
    {
        let message = format!(
            "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid={};oid={}\r\nAction: '{GET_SECRET}'\r\nResource: '{}'",
            claims.appid,
            claims.oid,
            vault.id.to_ascii_lowercase()
        );
        return kv_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &message,
            Some("ForbiddenByRbac"),
        );
    }
    let name = path.split('/').next().unwrap_or_default();
    emu.count(&format!("keyvault.get:{}:{vault_name}", claims.appid));
    match vault.secrets.get(name) {
        Some(value) => {
            let created = 1_700_000_000;
            Json(serde_json::json!({
                "value": value,
                // Ids always name the vault by its real host, as SDKs parse them.
                "id": format!("https://{vault_name}.vault.azure.net/secrets/{name}/4387e9f3d6e14c459867679a90fd0f79"),
                "attributes": {"enabled": true, "created": created, "updated": created, "recoveryLevel": "Recoverable+Purgeable"},
                "tags": {},
            }))
            .into_response()
        }
        None => kv_error(
            StatusCode::NOT_FOUND,
            "SecretNotFound",
            &format!("A secret with (name/id) {name} was not found in this key vault."),
            None,
        ),
    }
}
