//! Azure Container Registry pull credentials: an AAD token (for the cloud's
//! [`container_registry_audience`](super::Cloud::container_registry_audience)) exchanged for an ACR
//! refresh token, whose own `exp` says when to renew, and the `kubernetes.io/dockerconfigjson`
//! document that carries it.

use base64::Engine;
use serde::Deserialize;

use super::error::AzureError;
use super::jwt;

/// The username docker clients present with an ACR refresh token.
pub const TOKEN_USERNAME: &str = "00000000-0000-0000-0000-000000000000";

/// An ACR refresh token. `Debug` never shows the value.
#[derive(Clone)]
pub struct RefreshToken {
    secret: String,
    /// Expiry from the token's `exp`.
    pub expires_on: i64,
}

impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshToken")
            .field("expires_on", &self.expires_on)
            .finish_non_exhaustive()
    }
}

impl RefreshToken {
    /// The value, for the dockerconfigjson only.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// `{"auths":{login_server:{username,password,auth}}}` for a `kubernetes.io/dockerconfigjson` Secret.
    pub fn docker_config(&self, login_server: &str) -> String {
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("{TOKEN_USERNAME}:{}", self.secret));
        serde_json::json!({"auths": {login_server: {"username": TOKEN_USERNAME, "password": self.secret, "auth": auth}}}).to_string()
    }
}

#[derive(Deserialize)]
struct ExchangeResponse {
    refresh_token: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RegistryErrors {
    errors: Vec<RegistryError>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RegistryError {
    code: String,
    message: String,
}

/// Exchanges an AAD access token for an ACR refresh token at `https://{login_server}/oauth2/exchange`.
pub async fn exchange(
    http: &reqwest::Client,
    login_server: &str,
    tenant: &str,
    aad_token: &str,
) -> Result<RefreshToken, AzureError> {
    let response = http
        .post(format!("https://{login_server}/oauth2/exchange"))
        .form(&[
            ("grant_type", "access_token"),
            ("service", login_server),
            ("tenant", tenant),
            ("access_token", aad_token),
        ])
        .send()
        .await
        .map_err(|e| AzureError::Transport(e.without_url().to_string()))?;
    let status = response.status();
    let text = super::limits::body(response).await?;
    if !status.is_success() {
        let errors: RegistryErrors = serde_json::from_str(&text).unwrap_or_default();
        let first = errors.errors.into_iter().next().unwrap_or_default();
        return Err(AzureError::DataPlane {
            status: status.as_u16(),
            code: first.code,
            message: first.message,
        });
    }
    let parsed: ExchangeResponse = serde_json::from_str(&text)
        .map_err(|e| AzureError::unreadable("the ACR exchange response", &e))?;
    let expires_on = jwt::claims(&parsed.refresh_token)
        .and_then(|c| c.exp)
        .ok_or_else(|| AzureError::Unexpected("the ACR refresh token has no exp claim".into()))?;
    let now = jiff::Timestamp::now().as_second();
    let expires_on = super::limits::expiry(expires_on, now, "the ACR refresh token")?;
    Ok(RefreshToken {
        secret: parsed.refresh_token,
        expires_on,
    })
}
