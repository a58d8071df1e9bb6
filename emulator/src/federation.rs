//! Verifying federated assertions as Entra ID does: the issuer's OIDC discovery document names its
//! JWKS; the assertion must be signed by one of those keys and be inside its time window.

use std::collections::HashMap;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::Mutex;

/// Claims of an external assertion that matter for matching.
#[derive(Clone, Debug, Deserialize)]
pub struct AssertionClaims {
    /// Issuer.
    pub iss: String,
    /// Subject.
    pub sub: String,
    /// Audience (a string or a list).
    pub aud: Audience,
    /// Expiry.
    pub exp: i64,
    /// Not before.
    #[serde(default)]
    pub nbf: Option<i64>,
}

/// `aud` as JWTs carry it.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// One audience.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Audience {
    /// Every audience.
    pub fn values(&self) -> Vec<String> {
        match self {
            Audience::One(a) => vec![a.clone()],
            Audience::Many(v) => v.clone(),
        }
    }
}

/// Reads a JWT's claims without verifying it (matching comes before verification, as in Entra).
pub fn peek(assertion: &str) -> Option<AssertionClaims> {
    let payload = assertion.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[derive(Deserialize)]
struct Discovery {
    jwks_uri: String,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize, Clone)]
struct Jwk {
    kid: Option<String>,
    kty: String,
    n: Option<String>,
    e: Option<String>,
}

/// Why an assertion's signature could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Discovery or JWKS could not be fetched.
    #[error("could not read the issuer's signing keys: {0}")]
    Keys(String),
    /// No key verifies the signature.
    #[error("the assertion's signature does not verify against the issuer's keys")]
    Signature,
}

/// Fetches and caches issuers' keys.
pub struct KeyCache {
    http: reqwest::Client,
    keys: Mutex<HashMap<String, Vec<Jwk>>>,
}

impl KeyCache {
    /// Uses `http` (which trusts the issuers' CAs) to fetch discovery documents and JWKS.
    pub fn new(http: reqwest::Client) -> Self {
        Self {
            http,
            keys: Mutex::new(HashMap::new()),
        }
    }

    async fn fetch(&self, issuer: &str) -> Result<Vec<Jwk>, VerifyError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let discovery: Discovery = get_json(&self.http, &url).await?;
        let jwks: Jwks = get_json(&self.http, &discovery.jwks_uri).await?;
        Ok(jwks.keys)
    }

    /// Verifies the RS256 signature of `assertion` with the keys of `issuer`, refetching once when
    /// the key id is unknown (keys rotate). Time claims are the caller's to check.
    pub async fn verify(&self, issuer: &str, assertion: &str) -> Result<(), VerifyError> {
        let header = jsonwebtoken::decode_header(assertion).map_err(|_| VerifyError::Signature)?;
        if header.alg != Algorithm::RS256 {
            return Err(VerifyError::Signature);
        }
        for refresh in [false, true] {
            let keys = {
                let mut cache = self.keys.lock().await;
                if refresh || !cache.contains_key(issuer) {
                    let keys = self.fetch(issuer).await?;
                    cache.insert(issuer.to_owned(), keys);
                }
                cache.get(issuer).cloned().unwrap_or_default()
            };
            let candidates = keys
                .iter()
                .filter(|k| k.kty == "RSA" && (header.kid.is_none() || k.kid == header.kid));
            for key in candidates {
                let (Some(n), Some(e)) = (&key.n, &key.e) else {
                    continue;
                };
                let Ok(decoding) = DecodingKey::from_rsa_components(n, e) else {
                    continue;
                };
                let mut validation = Validation::new(Algorithm::RS256);
                validation.validate_exp = false;
                validation.validate_aud = false;
                validation.required_spec_claims.clear();
                if jsonwebtoken::decode::<serde_json::Value>(assertion, &decoding, &validation)
                    .is_ok()
                {
                    return Ok(());
                }
            }
        }
        Err(VerifyError::Signature)
    }
}

async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> Result<T, VerifyError> {
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|e| VerifyError::Keys(format!("GET {url}: {e}")))?;
    if !response.status().is_success() {
        return Err(VerifyError::Keys(format!(
            "GET {url}: {}",
            response.status()
        )));
    }
    response
        .json()
        .await
        .map_err(|e| VerifyError::Keys(format!("GET {url}: {e}")))
}
