//! A strict local emulator of the Azure APIs the operator calls: Entra ID's token endpoint (client
//! secrets and federated assertions verified against the issuer's real keys), IMDS, and an ARM
//! subset with role-based access control and throttling, Key Vault secrets, ACR's token exchange,
//! and Azure Files reads with a SAS (Azurite has no File service). It refuses what Azure refuses, with Azure's
//! error codes, so code that passes here is not merely passing a permissive fake.
//!
//! Use it in-process ([`Emulator::start`]) or as the `aml-identity-emulator` binary.

mod acr;
mod admin;
mod arm;
pub mod clock;
mod entra;
mod errors;
mod federation;
mod files;
mod imds;
mod keyvault;
pub mod rbac;
mod resources;
pub mod state;
pub mod tls;
mod tokens;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};

pub use clock::Clock;
pub use state::{Fault, Seed};
pub use tokens::AccessClaims;

/// How to start the emulator.
#[derive(Clone, Debug)]
pub struct Config {
    /// Directory for `ca.pem` (the CA clients must trust).
    pub dir: PathBuf,
    /// Additional CA bundles to trust when fetching federated issuers' keys (e.g. the local
    /// Kubernetes API server's CA).
    pub trust: Vec<PathBuf>,
    /// Lifetime of issued access tokens, seconds.
    pub token_lifetime: i64,
    /// Port for HTTPS (0 picks a free one).
    pub https_port: u16,
    /// Port for the plain-HTTP IMDS (0 picks a free one).
    pub imds_port: u16,
    /// Polls a long-running operation answers "in progress" before it completes.
    pub lro_polls: u32,
    /// `Retry-After` seconds on long-running operations (ARM says 10+; tests want 0).
    pub lro_retry_after: u64,
    /// Host named in long-running operation URLs instead of the one the client called (a hostile
    /// or broken endpoint, for tests).
    pub lro_host: Option<String>,
    /// A private cloud answered besides the national ones (`cloud: Custom` credentials).
    pub custom_cloud: Option<CustomCloud>,
}

/// A private cloud's own names: Entra ID issues tokens for its resources, its Resource Manager and
/// registries accept only tokens for those, and the serving certificate covers its hosts.
#[derive(Clone, Debug, Default)]
pub struct CustomCloud {
    /// The Resource Manager resource, e.g. `https://management.azurestack.example`.
    pub resource_manager: String,
    /// The resource its registries exchange tokens of.
    pub registry_audience: String,
    /// Host names (wildcards allowed) the certificate also covers.
    pub hosts: Vec<String>,
}

impl Config {
    /// Defaults: free ports, one-hour tokens, no extra trust.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            trust: Vec::new(),
            token_lifetime: 3599,
            https_port: 0,
            imds_port: 0,
            lro_polls: 1,
            lro_retry_after: 1,
            lro_host: None,
            custom_cloud: None,
        }
    }
}

/// Resource Manager audiences of the national clouds (the first two: public).
const RESOURCE_MANAGERS: &[&str] = &[
    "https://management.azure.com",
    "https://management.core.windows.net",
    "https://management.usgovcloudapi.net",
    "https://management.chinacloudapi.cn",
];

/// Resources Entra ID issues tokens for here (the first-party Azure resources the operator uses).
const KNOWN_RESOURCES: &[&str] = &[
    "https://management.azure.com",
    "https://management.core.windows.net",
    "https://management.usgovcloudapi.net",
    "https://management.chinacloudapi.cn",
    "https://storage.azure.com",
    "https://datalake.azure.net",
    "https://vault.azure.net",
    "https://vault.usgovcloudapi.net",
    "https://vault.azure.cn",
    "https://containerregistry.azure.net",
    "https://ml.azure.com",
];

struct Inner {
    state: Mutex<state::State>,
    clock: Clock,
    signer: tokens::Signer,
    keys: federation::KeyCache,
    token_lifetime: i64,
    lro_polls: u32,
    lro_retry_after: u64,
    lro_host: Option<String>,
    custom_cloud: Option<CustomCloud>,
}

/// A handle on the emulator's state, shared by its routes.
#[derive(Clone)]
pub struct Emulator(Arc<Inner>);

impl Emulator {
    fn state(&self) -> MutexGuard<'_, state::State> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn signer(&self) -> &tokens::Signer {
        &self.0.signer
    }

    fn keys(&self) -> &federation::KeyCache {
        &self.0.keys
    }

    fn count(&self, key: &str) {
        self.state().count(key);
    }

    fn lro_polls(&self) -> u32 {
        self.0.lro_polls
    }

    fn lro_host<'a>(&'a self, host: &'a str) -> &'a str {
        self.0.lro_host.as_deref().unwrap_or(host)
    }

    fn lro_retry_after(&self) -> u64 {
        self.0.lro_retry_after
    }

    fn knows_resource(&self, resource: &str) -> bool {
        KNOWN_RESOURCES
            .iter()
            .any(|r| tokens::audience_matches(resource, r))
            || resource.starts_with("api://")
            || self.0.custom_cloud.as_ref().is_some_and(|c| {
                tokens::audience_matches(resource, &c.resource_manager)
                    || tokens::audience_matches(resource, &c.registry_audience)
            })
    }

    /// Whether `aud` is a Resource Manager's: a national cloud's or the custom cloud's.
    fn is_resource_manager(&self, aud: &str) -> bool {
        RESOURCE_MANAGERS
            .iter()
            .any(|r| tokens::audience_matches(aud, r))
            || self
                .0
                .custom_cloud
                .as_ref()
                .is_some_and(|c| tokens::audience_matches(aud, &c.resource_manager))
    }

    /// Whether a registry takes a token of `aud` for the token exchange: ACR's own resource (the
    /// custom cloud's, if set) or a Resource Manager's.
    fn registry_accepts(&self, aud: &str) -> bool {
        tokens::audience_matches(aud, "https://containerregistry.azure.net")
            || self
                .0
                .custom_cloud
                .as_ref()
                .is_some_and(|c| tokens::audience_matches(aud, &c.registry_audience))
            || self.is_resource_manager(aud)
    }

    /// Starts both listeners on 127.0.0.1 and returns once they accept connections.
    pub async fn start(config: Config) -> anyhow::Result<Running> {
        std::fs::create_dir_all(&config.dir)?;
        let mut hosts = tls::default_hosts();
        hosts.extend(config.custom_cloud.iter().flat_map(|c| c.hosts.clone()));
        let material = tls::generate(&hosts)?;
        let ca_path = config.dir.join("ca.pem");
        std::fs::write(&ca_path, &material.ca_pem)?;

        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(10));
        for bundle in &config.trust {
            for cert in reqwest::Certificate::from_pem_bundle(&std::fs::read(bundle)?)? {
                http = http.add_root_certificate(cert);
            }
        }
        let emulator = Emulator(Arc::new(Inner {
            state: Mutex::new(state::State::default()),
            clock: Clock::default(),
            signer: tokens::Signer::generate().map_err(|e| anyhow::anyhow!("signing key: {e}"))?,
            keys: federation::KeyCache::new(http.build()?),
            token_lifetime: config.token_lifetime,
            lro_polls: config.lro_polls,
            lro_retry_after: config.lro_retry_after,
            lro_host: config.lro_host.clone(),
            custom_cloud: config.custom_cloud.clone(),
        }));

        // The CA a registry trusts for ACR tokens (its `auth.token.rootcertbundle`).
        std::fs::write(
            config.dir.join("acr-token-ca.pem"),
            &emulator.0.signer.token_ca_pem,
        )?;
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
            material.chain_pem.into_bytes(),
            material.key_pem.into_bytes(),
        )
        .await?;
        let https_listener = std::net::TcpListener::bind(("127.0.0.1", config.https_port))?;
        https_listener.set_nonblocking(true)?;
        let https_addr = https_listener.local_addr()?;
        let imds_listener = tokio::net::TcpListener::bind(("127.0.0.1", config.imds_port)).await?;
        let imds_addr = imds_listener.local_addr()?;

        let handle = axum_server::Handle::new();
        let app = emulator.router();
        let server_handle = handle.clone();
        let https = tokio::spawn(async move {
            let server =
                axum_server::from_tcp_rustls(https_listener, tls).map(|s| s.handle(server_handle));
            match server {
                Ok(server) => {
                    if let Err(e) = server
                        .serve(app.into_make_service_with_connect_info::<SocketAddr>())
                        .await
                    {
                        tracing::error!(error = %e, "emulator HTTPS server failed");
                    }
                }
                Err(e) => tracing::error!(error = %e, "emulator HTTPS listener failed"),
            }
        });
        let imds_app = Router::new()
            .route("/metadata/identity/oauth2/token", get(imds::token))
            .with_state(emulator.clone());
        let imds_app = imds_app.layer(middleware::from_fn_with_state(
            emulator.clone(),
            count_and_inject,
        ));
        let imds = tokio::spawn(async move {
            if let Err(e) = axum::serve(imds_listener, imds_app).await {
                tracing::error!(error = %e, "emulator IMDS server failed");
            }
        });
        Ok(Running {
            emulator,
            https_addr,
            imds_addr,
            ca_path,
            handle,
            tasks: vec![https, imds],
        })
    }

    fn router(&self) -> Router {
        Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(entra::token))
            .route(
                "/{tenant}/v2.0/.well-known/openid-configuration",
                get(entra::discovery),
            )
            .route("/subscriptions/{*rest}", any(arm::handle))
            .route("/oauth2/exchange", post(acr::exchange))
            .route("/oauth2/token", get(acr::token_get).post(acr::token_post))
            .route("/v2/", get(acr::v2))
            .route("/secrets/{*path}", get(keyvault::by_host))
            .route("/_vault/{vault}/secrets/{*path}", get(keyvault::by_path))
            .route("/_file/{*path}", any(files::handle))
            .route("/_emulator/seed", post(admin::seed))
            .route("/_emulator/counters", get(admin::counters))
            .route("/_emulator/clock", post(admin::clock))
            .route(
                "/_emulator/faults",
                post(admin::add_fault).delete(admin::clear_faults),
            )
            .route("/_emulator/role-assignments", get(admin::role_assignments))
            .layer(middleware::from_fn_with_state(
                self.clone(),
                count_and_inject,
            ))
            .with_state(self.clone())
    }

    /// Loads a seed directly (the same as `POST /_emulator/seed`).
    pub fn seed(&self, seed: Seed) -> Result<(), String> {
        self.state().load(seed)
    }

    /// Requests counted so far for a route key (e.g. `entra.token`), or a more specific key such as
    /// `entra.token:{client_id}:{resource}`.
    pub fn counter(&self, key: &str) -> u64 {
        self.state().counters.get(key).copied().unwrap_or(0)
    }

    /// Every counter, by route key (and the more specific `key:…` ones).
    pub fn counters(&self) -> std::collections::BTreeMap<String, u64> {
        self.state().counters.clone()
    }

    /// Requests counted for every route key starting with `prefix` (`arm.`: every ARM request;
    /// `entra.token`: every token request, whoever asked). Specific keys are not double-counted.
    pub fn requests(&self, prefix: &str) -> u64 {
        self.state()
            .counters
            .iter()
            .filter(|(k, _)| k.starts_with(prefix) && !k.contains(':'))
            .map(|(_, v)| v)
            .sum()
    }

    /// Requests that arrived within [`IN_FLIGHT`] of their caller's `Retry-After` answer, before
    /// it was up (any route): on their way before it was read.
    pub fn overlapping_requests(&self) -> u64 {
        self.counted_as("overlap:")
    }

    /// Requests sent before the `Retry-After` their caller was given (any route).
    pub fn early_requests(&self) -> u64 {
        self.counted_as("early:")
    }

    /// The sum of the counters named `<label>…` (`early:`, `overlap:`).
    fn counted_as(&self, label: &str) -> u64 {
        self.state()
            .counters
            .iter()
            .filter(|(k, _)| k.starts_with(label))
            .map(|(_, v)| v)
            .sum()
    }

    /// Adds a fault.
    pub fn inject(&self, fault: Fault) {
        self.state().faults.push(fault);
    }

    /// Issues tokens for `client_id` that live `seconds` (negative: already expired), or the
    /// configured lifetime again with `None`.
    pub fn set_token_lifetime(&self, client_id: &str, seconds: Option<i64>) {
        let mut state = self.state();
        match seconds {
            Some(s) => state.token_lifetimes.insert(client_id.to_owned(), s),
            None => state.token_lifetimes.remove(client_id),
        };
    }

    /// Issues ACR refresh tokens that live `seconds` (negative: already expired).
    pub fn set_refresh_lifetime(&self, seconds: Option<i64>) {
        self.state().refresh_lifetime = seconds;
    }

    fn lifetime_for(&self, client_id: &str) -> i64 {
        self.state()
            .token_lifetimes
            .get(client_id)
            .copied()
            .unwrap_or(self.0.token_lifetime)
    }

    /// Removes every injected fault.
    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// The emulator's clock.
    pub fn clock(&self) -> &Clock {
        &self.0.clock
    }

    /// Whether `principal_id` holds a role assignment granting `action` on `resource`.
    pub fn authorized(&self, principal_id: &str, action: &str, resource: &str, data: bool) -> bool {
        self.state()
            .authorized(principal_id, action, resource, data)
    }

    /// Every role assignment, as stored (inspection for tests; not counted as a request).
    pub fn role_assignments(&self) -> Vec<state::RoleAssignment> {
        self.state().role_assignments.values().cloned().collect()
    }

    /// A user-assigned identity with its federated credentials, if it exists (not counted).
    pub fn identity(&self, id: &str) -> Option<state::UserAssignedIdentity> {
        self.state()
            .identities
            .get(&id.to_ascii_lowercase())
            .cloned()
    }

    /// A generic ARM resource (workspace, compute, datastore, connection) as stored (not counted).
    pub fn resource(&self, id: &str) -> Option<serde_json::Value> {
        self.state()
            .resources
            .get(&id.to_ascii_lowercase())
            .cloned()
    }

    /// Ids (lower case) of the generic ARM resources: workspaces, computes, datastores,
    /// connections.
    pub fn resource_ids(&self) -> Vec<String> {
        self.state().resources.keys().cloned().collect()
    }

    /// Every token this emulator issued (access, ACR refresh and access tokens), for leak checks.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.0.signer.issued()
    }

    /// Verifies a token this emulator issued and returns its claims.
    pub fn verify_token(&self, token: &str) -> Option<AccessClaims> {
        self.0.signer.verify(token, self.0.clock.now()).ok()
    }
}

/// The route key of a request, for counters and faults: `entra.token`, `imds.token`,
/// `arm.PUT.roleAssignments`, …; `None` for the admin API.
fn route_key(method: &str, path: &str) -> Option<String> {
    if path.starts_with("/_emulator/") {
        return None;
    }
    if path.starts_with("/metadata/identity/") {
        return Some("imds.token".into());
    }
    if path == "/oauth2/exchange" {
        return Some("acr.exchange".into());
    }
    if path == "/oauth2/token" {
        return Some("acr.token".into());
    }
    if path.starts_with("/v2/") {
        return Some("acr.v2".into());
    }
    if path.starts_with("/secrets/") || path.starts_with("/_vault/") {
        return Some("keyvault.get".into());
    }
    if path.starts_with("/_file/") {
        return Some(format!("file.{method}"));
    }
    if path.ends_with("/oauth2/v2.0/token") {
        return Some("entra.token".into());
    }
    if path.contains("/.well-known/") {
        return Some("entra.discovery".into());
    }
    if path.starts_with("/subscriptions/") {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        // The resource type is the last type segment: …/{type}/{name} or a collection …/{type}.
        let provider_at = segments
            .iter()
            .rposition(|s| s.eq_ignore_ascii_case("providers"));
        let kind = match provider_at {
            Some(i) => {
                let after = &segments[i + 2..];
                let index = if after.len().is_multiple_of(2) {
                    after.len().saturating_sub(2)
                } else {
                    after.len() - 1
                };
                after.get(index).copied().unwrap_or("unknown")
            }
            None => "resourceGroups",
        };
        return Some(format!("arm.{method}.{kind}"));
    }
    Some(format!("other.{method}"))
}

/// Who a request comes from, as Azure throttles it: the client id of a token request, the
/// principal and subscription of an ARM call (from its bearer token, not verified here: the
/// handlers do that). `None` for what is not tracked.
async fn caller_of(key: &str, request: Request) -> (Option<String>, Request) {
    if key == "entra.token" {
        let (parts, body) = request.into_parts();
        let bytes = axum::body::to_bytes(body, 256 * 1024)
            .await
            .unwrap_or_default();
        // The form as a query string: the URL parser decodes it as `application/x-www-form-urlencoded`.
        let client =
            reqwest::Url::parse(&format!("http://form/?{}", String::from_utf8_lossy(&bytes)))
                .ok()
                .and_then(|url| {
                    url.query_pairs()
                        .find(|(k, _)| k == "client_id")
                        .map(|(_, v)| format!("entra|{v}"))
                });
        return (
            client,
            Request::from_parts(parts, axum::body::Body::from(bytes)),
        );
    }
    if !key.starts_with("arm.") {
        return (None, request);
    }
    let principal = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|jwt| jwt.split('.').nth(1))
        .and_then(|payload| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload.trim_end_matches('='))
                .ok()
        })
        .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
        .and_then(|claims| claims["oid"].as_str().map(str::to_owned));
    let subscription = request
        .uri()
        .path()
        .split("/subscriptions/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_ascii_lowercase();
    (
        principal.map(|p| format!("arm|{p}|{subscription}")),
        request,
    )
}

/// How soon after a `Retry-After` answer a request of the same caller may arrive and still have
/// been sent before the caller could read it (loopback, two busy cores): counted apart, as
/// `overlap:<route>`, not as early.
pub const IN_FLIGHT: Duration = Duration::from_millis(100);

/// Counts every request by route key (and, as `early:<route>`, those sent before the caller's
/// `Retry-After` was up), applies injected faults, and records when each throttled caller was
/// told to come back.
async fn count_and_inject(State(emu): State<Emulator>, request: Request, next: Next) -> Response {
    let Some(key) = route_key(request.method().as_str(), request.uri().path()) else {
        return next.run(request).await;
    };
    let (caller, request) = caller_of(&key, request).await;
    if let Some(caller) = &caller {
        let mut state = emu.state();
        let now = std::time::Instant::now();
        if let Some((told, until)) = state.come_back.get(caller).copied()
            && now < until
        {
            if now.duration_since(told) < IN_FLIGHT {
                state.count(&format!("overlap:{key}"));
            } else {
                state.count(&format!("early:{key}"));
            }
        }
    }
    let response = answer(&emu, &key, request, next).await;
    let status = response.status();
    let hint = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let (Some(caller), Some(secs)) = (caller, hint)
        && (status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error())
    {
        // A hostile endpoint's hint can be centuries: a day is as good as for ever here.
        if let Some(at) =
            std::time::Instant::now().checked_add(Duration::from_secs(secs.min(86_400)))
        {
            emu.state()
                .come_back
                .insert(caller, (std::time::Instant::now(), at));
        }
    }
    response
}

async fn answer(emu: &Emulator, key: &str, request: Request, next: Next) -> Response {
    let fault = {
        let mut state = emu.state();
        state.count(key);
        state.take_fault(key, request.uri().path())
    };
    if let Some(fault) = fault {
        if fault.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(fault.latency_ms)).await;
        }
        if let Some(status) = fault.status {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = errors::arm(
                status,
                if status == StatusCode::TOO_MANY_REQUESTS {
                    "TooManyRequests"
                } else {
                    "InjectedFault"
                },
                format!("Injected {status} for {key}"),
            );
            if let Some(secs) = fault.retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", HeaderValue::from(secs));
            }
            if let Some(location) = fault
                .location
                .as_deref()
                .and_then(|l| HeaderValue::from_str(l).ok())
            {
                response.headers_mut().insert("location", location);
            }
            if let Some(n) = fault.body_bytes {
                *response.body_mut() = axum::body::Body::from(vec![b' '; n]);
            }
            return response;
        }
        if fault.answer_delay_ms > 0 {
            let response = next.run(request).await;
            tokio::time::sleep(Duration::from_millis(fault.answer_delay_ms)).await;
            return response;
        }
    }
    next.run(request).await
}

/// `Host` of a request (used to answer with the host name the client used).
fn host_of(headers: &HeaderMap) -> String {
    headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_owned()
}

/// A running emulator. Dropping it stops the servers.
pub struct Running {
    /// The shared state, for seeding and inspection.
    pub emulator: Emulator,
    /// HTTPS address (Entra ID, ARM, admin).
    pub https_addr: SocketAddr,
    /// Plain-HTTP IMDS address.
    pub imds_addr: SocketAddr,
    /// The CA certificate clients must trust.
    pub ca_path: PathBuf,
    handle: axum_server::Handle<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// `https://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("https://{}", self.https_addr)
    }

    /// Writes `addresses.json` (https, imds, ca) into `dir`, for scripts.
    pub fn write_addresses(&self, dir: &Path) -> std::io::Result<()> {
        let doc = serde_json::json!({
            "https": self.base_url(),
            "imds": format!("http://{}", self.imds_addr),
            "ca": self.ca_path,
        });
        std::fs::write(dir.join("addresses.json"), serde_json::to_vec_pretty(&doc)?)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.shutdown();
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl IntoResponse for state::Fault {
    fn into_response(self) -> Response {
        axum::Json(self).into_response()
    }
}
