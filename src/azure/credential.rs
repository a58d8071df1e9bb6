//! How the operator signs in: one [`Credential`] per resolved `AzureCredential` source. Client
//! secrets, certificates and client assertions are exchanged at Entra ID's v2 token endpoint;
//! managed identities ask the node's IMDS.
//!
//! The Entra exchange is done here rather than through azure_identity 1.0: that crate reads Entra's
//! error body into a borrowed `&str`, which fails on every real `error_description` (they contain
//! escaped `\r\n`), so its errors lose the AADSTS code and the status the controllers report.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use futures::future::BoxFuture;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;

use super::cloud::{Cloud, Transport};
use super::error::AzureError;
use super::jwt;
use super::token_cache::Token;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Where IMDS answers on every Azure VM.
pub const IMDS_ENDPOINT: &str = "http://169.254.169.254";

/// Supplies client assertions (e.g. a Kubernetes ServiceAccount token from the TokenRequest API,
/// audience `api://AzureADTokenExchange`) for workload identity federation.
pub trait AssertionSource: Send + Sync + fmt::Debug {
    /// A fresh assertion. Errors must not contain the assertion.
    fn assertion(&self) -> BoxFuture<'_, Result<String, String>>;
}

/// Which of the node's identities IMDS should use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManagedIdentitySelector {
    /// The system-assigned identity.
    System,
    /// A user-assigned identity by client id.
    ClientId(String),
    /// A user-assigned identity by resource id.
    ResourceId(String),
}

/// What the credential proves its identity with.
#[derive(Clone)]
enum Proof {
    Secret(String),
    Assertion(Arc<dyn AssertionSource>),
    Certificate {
        key: Arc<EncodingKey>,
        x5t: String,
    },
    ManagedIdentity {
        endpoint: String,
        selector: ManagedIdentitySelector,
    },
    AzureCli {
        program: std::path::PathBuf,
    },
}

/// A resolved credential: who signs in, and how. `Debug` never shows the secret.
#[derive(Clone)]
pub struct Credential {
    /// Identifies the credential in the token cache (e.g. `AzureCredential/ns/name@generation`).
    pub key: String,
    /// The client id that signs in (empty for a system-assigned managed identity until known).
    pub client_id: String,
    tenant_id: String,
    token_url: String,
    http: reqwest::Client,
    observer: super::cloud::Observer,
    proof: Proof,
}

impl Credential {
    /// Whom Entra throttles: the client at this token endpoint, however many credentials of the
    /// operator sign in as it (one identity federated with several namespaces' ServiceAccounts).
    pub fn throttled_as(&self) -> String {
        format!("{}|{}", self.token_url, self.client_id)
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("key", &self.key)
            .field("client_id", &self.client_id)
            .field("tenant_id", &self.tenant_id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ErrorResponse {
    error: String,
    error_description: String,
    error_codes: Vec<i64>,
}

/// The error of a refused token request, from its (untrusted) body: the AADSTS codes and the first
/// line of the description, never the body itself.
pub(crate) fn entra_error(status: u16, text: &str) -> AzureError {
    let error: ErrorResponse = serde_json::from_str(text).unwrap_or_default();
    let description = error
        .error_description
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    AzureError::Entra {
        status,
        codes: error
            .error_codes
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(","),
        description: if description.is_empty() {
            format!("{} ({status})", error.error)
        } else {
            description
        },
    }
}

/// The token of a successful token response obtained at `now`, if its expiry is plausible.
pub(crate) fn token_response(text: &str, now: i64) -> Result<Token, AzureError> {
    let parsed: TokenResponse =
        serde_json::from_str(text).map_err(|e| AzureError::unreadable("the token response", &e))?;
    let claims = jwt::claims(&parsed.access_token).unwrap_or_default();
    // The token's own `exp` is the truth; `expires_in` (a number from Entra, a string from IMDS)
    // is the fallback for opaque tokens.
    let expires_in = parsed
        .expires_in
        .as_ref()
        .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
        .unwrap_or(3599);
    let expires_on = claims.exp.unwrap_or(now.saturating_add(expires_in));
    let expires_on = super::limits::expiry(expires_on, now, "the access token")?;
    Ok(Token::new(parsed.access_token, now, expires_on, claims))
}

/// The PEM blocks of a certificate credential: the certificate (for its thumbprint) and its key.
fn pem_blocks(pem: &str) -> Vec<(String, Vec<u8>)> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in pem.lines().map(str::trim) {
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            current = Some((label.to_owned(), String::new()));
        } else if line.starts_with("-----END ") {
            if let Some((label, body)) = current.take()
                && let Ok(der) = base64::engine::general_purpose::STANDARD.decode(body)
            {
                blocks.push((label, der));
            }
        } else if let Some((_, body)) = current.as_mut() {
            body.push_str(line);
        }
    }
    blocks
}

impl Credential {
    fn new(
        key: impl Into<String>,
        cloud: &Cloud,
        transport: &Transport,
        tenant_id: &str,
        client_id: &str,
        proof: Proof,
    ) -> Result<Self, AzureError> {
        let token_url = format!(
            "{}/{tenant_id}/oauth2/v2.0/token",
            cloud.authority_host.trim_end_matches('/')
        );
        Ok(Self {
            key: key.into(),
            client_id: client_id.to_owned(),
            tenant_id: tenant_id.to_owned(),
            token_url,
            http: transport.client()?,
            observer: transport.observer.clone(),
            proof,
        })
    }

    /// The name it is cached under (tokens, reads): who signs in, never a secret.
    pub fn cache_key(&self) -> &str {
        &self.key
    }

    /// A service principal with a client secret.
    pub fn client_secret(
        key: impl Into<String>,
        cloud: &Cloud,
        transport: &Transport,
        tenant_id: &str,
        client_id: &str,
        secret: String,
    ) -> Result<Self, AzureError> {
        if secret.is_empty() {
            return Err(AzureError::Credential("the client secret is empty".into()));
        }
        Self::new(
            key,
            cloud,
            transport,
            tenant_id,
            client_id,
            Proof::Secret(secret),
        )
    }

    /// A service principal with a certificate: `pem` holds the certificate and its RSA private key.
    pub fn client_certificate(
        key: impl Into<String>,
        cloud: &Cloud,
        transport: &Transport,
        tenant_id: &str,
        client_id: &str,
        pem: &str,
    ) -> Result<Self, AzureError> {
        let blocks = pem_blocks(pem);
        let cert = blocks
            .iter()
            .find(|(label, _)| label == "CERTIFICATE")
            .ok_or_else(|| {
                AzureError::Credential("the certificate PEM has no CERTIFICATE block".into())
            })?;
        let private = blocks
            .iter()
            .find(|(label, _)| label.ends_with("PRIVATE KEY"))
            .ok_or_else(|| {
                AzureError::Credential("the certificate PEM has no PRIVATE KEY block".into())
            })?;
        let key_pem = format!(
            "-----BEGIN {0}-----\n{1}\n-----END {0}-----\n",
            private.0,
            base64::engine::general_purpose::STANDARD.encode(&private.1)
        );
        let encoding = EncodingKey::from_rsa_pem(key_pem.as_bytes()).map_err(|_| {
            AzureError::Credential("the certificate's private key is not an RSA key".into())
        })?;
        let thumbprint =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &cert.1);
        let x5t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(thumbprint.as_ref());
        Self::new(
            key,
            cloud,
            transport,
            tenant_id,
            client_id,
            Proof::Certificate {
                key: Arc::new(encoding),
                x5t,
            },
        )
    }

    /// Workload identity: `source`'s assertions exchanged for tokens of `client_id`.
    pub fn workload_identity(
        key: impl Into<String>,
        cloud: &Cloud,
        transport: &Transport,
        tenant_id: &str,
        client_id: &str,
        source: Arc<dyn AssertionSource>,
    ) -> Result<Self, AzureError> {
        Self::new(
            key,
            cloud,
            transport,
            tenant_id,
            client_id,
            Proof::Assertion(source),
        )
    }

    /// The node's managed identity through IMDS at `endpoint` (normally [`IMDS_ENDPOINT`]).
    pub fn managed_identity(
        key: impl Into<String>,
        cloud: &Cloud,
        transport: &Transport,
        tenant_id: &str,
        endpoint: &str,
        selector: ManagedIdentitySelector,
    ) -> Result<Self, AzureError> {
        let client_id = match &selector {
            ManagedIdentitySelector::ClientId(id) => id.clone(),
            _ => String::new(),
        };
        let proof = Proof::ManagedIdentity {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            selector,
        };
        Self::new(key, cloud, transport, tenant_id, &client_id, proof)
    }

    /// The signed-in Azure CLI (`program`, normally `az`) of the machine running the operator.
    pub fn azure_cli(
        key: impl Into<String>,
        cloud: &Cloud,
        transport: &Transport,
        tenant_id: &str,
        program: &std::path::Path,
    ) -> Result<Self, AzureError> {
        Self::new(
            key,
            cloud,
            transport,
            tenant_id,
            "",
            Proof::AzureCli {
                program: program.to_owned(),
            },
        )
    }

    /// The tenant it signs in to.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// Requests a token for `audience` (a resource such as `https://storage.azure.com`), bypassing
    /// any cache: use [`super::TokenCache`] instead. `now` stamps when it was obtained.
    pub async fn request(&self, audience: &str, now: i64) -> Result<Token, AzureError> {
        let resource = audience.trim_end_matches('/');
        if let Proof::AzureCli { program } = &self.proof {
            return self.azure_cli_token(program, resource, now).await;
        }
        let request = match &self.proof {
            Proof::ManagedIdentity { endpoint, selector } => {
                let mut query = vec![
                    ("api-version", "2018-02-01".to_owned()),
                    ("resource", resource.to_owned()),
                ];
                match selector {
                    ManagedIdentitySelector::System => {}
                    ManagedIdentitySelector::ClientId(id) => query.push(("client_id", id.clone())),
                    ManagedIdentitySelector::ResourceId(id) => {
                        query.push(("msi_res_id", id.clone()))
                    }
                }
                self.http
                    .get(format!("{endpoint}/metadata/identity/oauth2/token"))
                    .header("Metadata", "true")
                    .query(&query)
            }
            proof => {
                let mut form = vec![
                    ("grant_type", "client_credentials".to_owned()),
                    ("client_id", self.client_id.clone()),
                    ("scope", format!("{resource}/.default")),
                ];
                match proof {
                    Proof::Secret(secret) => form.push(("client_secret", secret.clone())),
                    Proof::Assertion(source) => {
                        let assertion = source.assertion().await.map_err(AzureError::Credential)?;
                        form.push(("client_assertion_type", JWT_BEARER.to_owned()));
                        form.push(("client_assertion", assertion));
                    }
                    Proof::Certificate { key, x5t } => {
                        form.push(("client_assertion_type", JWT_BEARER.to_owned()));
                        form.push((
                            "client_assertion",
                            self.certificate_assertion(key, x5t, now)?,
                        ));
                    }
                    Proof::ManagedIdentity { .. } | Proof::AzureCli { .. } => {
                        unreachable!("handled above")
                    }
                }
                self.http.post(&self.token_url).form(&form)
            }
        };
        let service = if matches!(self.proof, Proof::ManagedIdentity { .. }) {
            "imds"
        } else {
            "entra"
        };
        let response = request.send().await.map_err(|e| {
            self.observer.observe(service, 0);
            AzureError::Transport(e.without_url().to_string())
        })?;
        let status = response.status();
        self.observer.observe(service, status.as_u16());
        let hint = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = super::limits::body(response).await?;
        // Throttled, or unavailable for a time it names: the token cache sends nothing for this
        // principal before then.
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || (status.is_server_error() && hint.is_some())
        {
            let error: ErrorResponse = serde_json::from_str(&text).unwrap_or_default();
            return Err(AzureError::Throttled {
                code: if error.error.is_empty() {
                    format!("HTTP {}", status.as_u16())
                } else {
                    error.error
                },
                retry_after: super::limits::retry_after(hint.as_deref()).as_secs(),
            });
        }
        if !status.is_success() {
            return Err(entra_error(status.as_u16(), &text));
        }
        token_response(&text, now)
    }

    /// `az account get-access-token --resource R --tenant T --output json`, as the SDKs' Azure CLI
    /// credentials run it. The CLI's stderr never carries the token; its stdout is parsed here only.
    async fn azure_cli_token(
        &self,
        program: &std::path::Path,
        resource: &str,
        now: i64,
    ) -> Result<Token, AzureError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct CliToken {
            access_token: String,
            #[serde(default, rename = "expires_on")]
            expires_on: Option<i64>,
        }
        let output = tokio::process::Command::new(program)
            .args([
                "account",
                "get-access-token",
                "--resource",
                resource,
                "--tenant",
                &self.tenant_id,
                "--output",
                "json",
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| {
                AzureError::Credential(format!(
                    "running the Azure CLI ({}): {e}; install it or use another credential source",
                    program.display()
                ))
            })?;
        self.observer
            .observe("azure-cli", if output.status.success() { 200 } else { 1 });
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let first = stderr
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no message")
                .trim()
                .to_owned();
            return Err(AzureError::Credential(format!(
                "the Azure CLI could not get a token (run `az login`): {first}"
            )));
        }
        let parsed: CliToken = serde_json::from_slice(&output.stdout)
            .map_err(|e| AzureError::unreadable("the Azure CLI output", &e))?;
        let claims = jwt::claims(&parsed.access_token).unwrap_or_default();
        let expires_on = claims.exp.or(parsed.expires_on).unwrap_or(now + 300);
        let expires_on = super::limits::expiry(expires_on, now, "the Azure CLI's token")?;
        Ok(Token::new(parsed.access_token, now, expires_on, claims))
    }

    /// A signed client assertion for the token endpoint (RS256, `x5t` thumbprint, 5 minutes).
    fn certificate_assertion(
        &self,
        key: &EncodingKey,
        x5t: &str,
        now: i64,
    ) -> Result<String, AzureError> {
        let mut header = Header::new(Algorithm::RS256);
        header.x5t = Some(x5t.to_owned());
        let claims = serde_json::json!({
            "aud": self.token_url,
            "iss": self.client_id,
            "sub": self.client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": now,
            "iat": now,
            "exp": now + 300,
        });
        jsonwebtoken::encode(&header, &claims, key)
            .map_err(|_| AzureError::Credential("signing the certificate assertion failed".into()))
    }
}
