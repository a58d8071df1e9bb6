//! Key Vault secrets with the challenge flow SDKs use: an unauthenticated request first, then a
//! token for the resource the 401 challenge names — accepted only when the challenge's resource
//! domain matches the vault's host, so a vault cannot ask for a token of another service.

use serde::Deserialize;

use super::credential::Credential;
use super::error::AzureError;
use super::token_cache::TokenCache;

/// Key Vault data-plane API version.
pub const API_VERSION: &str = "7.6";

/// A secret value. `Debug` never shows it.
#[derive(Clone, Deserialize)]
pub struct SecretBundle {
    value: String,
    /// Secret id (with version).
    pub id: String,
}

impl std::fmt::Debug for SecretBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBundle")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl SecretBundle {
    /// The secret's value.
    pub fn value(&self) -> &str {
        &self.value
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct KvError {
    error: KvErrorDetail,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct KvErrorDetail {
    code: String,
    message: String,
}

/// The `resource` (or `scope` without `/.default`) of a `WWW-Authenticate: Bearer …` challenge.
pub fn challenge_resource(header: &str) -> Option<String> {
    let params = header.trim().strip_prefix("Bearer")?;
    let value = |key: &str| {
        params.split(',').find_map(|part| {
            let (k, v) = part.trim().split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
        })
    };
    value("resource").or_else(|| value("scope").map(|s| s.trim_end_matches("/.default").to_owned()))
}

/// Reads the latest version of `name` from the vault at `vault_url` (e.g. `https://kv.vault.azure.net`).
pub async fn get_secret(
    http: &reqwest::Client,
    tokens: &TokenCache,
    credential: &Credential,
    vault_url: &str,
    name: &str,
) -> Result<SecretBundle, AzureError> {
    let url = format!("{}/secrets/{name}", vault_url.trim_end_matches('/'));
    let transport = |e: reqwest::Error| AzureError::Transport(e.without_url().to_string());
    let challenge = http
        .get(&url)
        .query(&[("api-version", API_VERSION)])
        .send()
        .await
        .map_err(transport)?;
    if challenge.status() != reqwest::StatusCode::UNAUTHORIZED {
        return Err(AzureError::Unexpected(format!(
            "Key Vault answered {} without a token instead of a challenge",
            challenge.status()
        )));
    }
    let resource = challenge
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .and_then(challenge_resource)
        .ok_or_else(|| {
            AzureError::Unexpected("Key Vault's 401 carries no Bearer challenge".into())
        })?;
    let vault_host = reqwest::Url::parse(vault_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let resource_host = reqwest::Url::parse(&resource)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    if resource_host.is_empty() || !vault_host.ends_with(&format!(".{resource_host}")) {
        return Err(AzureError::Unexpected(format!(
            "the challenge resource {resource} does not match the vault host {vault_host}"
        )));
    }
    let token = tokens.get(credential, &resource).await?;
    let response = http
        .get(&url)
        .query(&[("api-version", API_VERSION)])
        .bearer_auth(token.secret())
        .send()
        .await
        .map_err(transport)?;
    let status = response.status();
    let text = super::limits::body(response).await?;
    if !status.is_success() {
        let error: KvError = serde_json::from_str(&text).unwrap_or_default();
        let message = error
            .error
            .message
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        return Err(AzureError::DataPlane {
            status: status.as_u16(),
            code: error.error.code,
            message,
        });
    }
    serde_json::from_str(&text)
        .map_err(|e| AzureError::unreadable("the Key Vault secret response", &e))
}
