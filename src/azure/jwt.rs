//! Reading (not verifying) the claims of tokens Azure issued: expiry and principal ids. The token
//! itself is never logged or returned.

use base64::Engine;
use serde::Deserialize;

/// The claims the operator reads from access tokens.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Expiry (Unix seconds).
    #[serde(default)]
    pub exp: Option<i64>,
    /// Object id of the principal.
    #[serde(default)]
    pub oid: Option<String>,
    /// Client id.
    #[serde(default)]
    pub appid: Option<String>,
    /// Tenant.
    #[serde(default)]
    pub tid: Option<String>,
    /// Audience.
    #[serde(default)]
    pub aud: Option<String>,
}

/// Decodes a JWT's payload; `None` for anything that is not a JWT.
pub fn claims(token: &str) -> Option<Claims> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}
