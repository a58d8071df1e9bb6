//! The Azure Resource Manager client: bearer tokens from the shared cache, pinned api-versions,
//! ARM error bodies as typed errors, `Retry-After` honoured on 429 (never retried early), bounded
//! jittered backoff on 5xx, a per-subscription request budget, and rate-limit headers surfaced.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::credential::Credential;
use super::error::AzureError;
use super::models::ErrorResponse;
use super::scope::Ceiling;
use super::token_cache::TokenCache;

/// The longest a long-running operation is followed in one go.
pub const LRO_DEADLINE: Duration = Duration::from_secs(300);

/// Retry limits.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, first included.
    pub max_attempts: u32,
    /// First backoff after a 5xx or a connection failure.
    pub base_delay: Duration,
    /// Longest backoff.
    pub max_delay: Duration,
    /// Longest `Retry-After` waited in place; beyond it the caller gets [`AzureError::Throttled`].
    pub max_retry_after: Duration,
    /// Longest a long-running operation is followed in one go.
    pub lro_deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
            lro_deadline: LRO_DEADLINE,
        }
    }
}

/// One subscription's slice of the [`Budget`].
struct Bucket {
    tokens: f64,
    refilled: Instant,
    paused_until: Option<Instant>,
}

/// Client-side limit per subscription, kept well below ARM's buckets, and the shared pause a 429
/// imposes on every caller of that subscription.
pub struct Budget {
    capacity: f64,
    refill_per_sec: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Budget {
    /// `capacity` requests in a burst, `refill_per_sec` after that.
    pub fn new(capacity: f64, refill_per_sec: f64) -> Self {
        Self {
            capacity,
            refill_per_sec,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn with_bucket<R>(&self, subscription: &str, f: impl FnOnce(&mut Bucket, Instant) -> R) -> R {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let bucket = buckets.entry(subscription.to_owned()).or_insert(Bucket {
            tokens: self.capacity,
            refilled: now,
            paused_until: None,
        });
        f(bucket, now)
    }

    /// How long to wait before the next request to `subscription` may go out (and takes its slot).
    fn reserve(&self, subscription: &str) -> Duration {
        self.with_bucket(subscription, |b, now| {
            b.tokens = (b.tokens
                + now.duration_since(b.refilled).as_secs_f64() * self.refill_per_sec)
                .min(self.capacity)
                - 1.0;
            b.refilled = now;
            let deficit = if b.tokens < 0.0 {
                Duration::from_secs_f64(-b.tokens / self.refill_per_sec)
            } else {
                Duration::ZERO
            };
            let paused = b
                .paused_until
                .filter(|until| *until > now)
                .map(|until| until - now)
                .unwrap_or_default();
            deficit.max(paused)
        })
    }

    /// How much longer requests to `subscription` are paused by a 429.
    fn paused_for(&self, subscription: &str) -> Duration {
        self.with_bucket(subscription, |b, now| {
            b.paused_until
                .filter(|until| *until > now)
                .map(|until| until - now)
                .unwrap_or_default()
        })
    }

    /// Holds every request to `subscription` until `after` has passed.
    fn pause(&self, subscription: &str, after: Duration) {
        self.with_bucket(subscription, |b, now| {
            let until = now + after;
            b.paused_until = Some(b.paused_until.map_or(until, |u| u.max(until)));
        })
    }
}

impl Default for Budget {
    fn default() -> Self {
        // ARM refills 25 reads/s per subscription and principal; stay under it with room for bursts.
        Self::new(100.0, 20.0)
    }
}

/// `x-ms-ratelimit-remaining-*` values of a response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateLimit {
    /// Reads left.
    pub reads: Option<u64>,
    /// Writes left.
    pub writes: Option<u64>,
    /// Deletes left.
    pub deletes: Option<u64>,
}

/// A successful response.
#[derive(Clone, Debug)]
pub struct ArmResponse<T> {
    /// HTTP status.
    pub status: u16,
    /// Parsed body (`None` for an empty body).
    pub body: Option<T>,
    /// Rate-limit headers.
    pub ratelimit: RateLimit,
    /// `Location` of a long-running operation.
    pub location: Option<String>,
    /// `Azure-AsyncOperation` of a long-running operation.
    pub async_operation: Option<String>,
    /// `Retry-After` seconds, when given.
    pub retry_after: Option<u64>,
}

/// The ARM client of one credential.
#[derive(Clone)]
pub struct ArmClient {
    http: reqwest::Client,
    endpoint: String,
    credential: Credential,
    tokens: Arc<TokenCache>,
    budget: Arc<Budget>,
    retry: RetryPolicy,
    observer: super::cloud::Observer,
    ceiling: Arc<Ceiling>,
    acting: Option<Arc<Ceiling>>,
    reads: Option<Arc<super::read_cache::ReadCache>>,
}

impl ArmClient {
    /// A client for `endpoint` (e.g. `https://management.azure.com`).
    pub fn new(
        http: reqwest::Client,
        endpoint: &str,
        credential: Credential,
        tokens: Arc<TokenCache>,
        budget: Arc<Budget>,
    ) -> Self {
        Self {
            http,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            credential,
            tokens,
            budget,
            retry: RetryPolicy::default(),
            observer: Default::default(),
            ceiling: Arc::new(Ceiling::Unlimited),
            acting: None,
            reads: None,
        }
    }

    /// Shares recent reads through `cache` ([`ArmClient::get_recent`]); every write through this
    /// client forgets what it changes.
    pub fn sharing_reads(mut self, cache: Arc<super::read_cache::ReadCache>) -> Self {
        self.reads = Some(cache);
        self
    }

    /// Forgets the shared reads of `path` and below: a write elsewhere changed it (an access
    /// policy written through `{vault}/accessPolicies/add` changes the vault).
    pub fn forget(&self, path: &str) {
        if let Some(cache) = &self.reads {
            cache.forget(path);
        }
    }

    /// Refuses, before any token or request, every path outside `ceiling` (the backstop behind
    /// each controller's own scope check, which names the offending field).
    pub fn within(mut self, ceiling: Arc<Ceiling>) -> Self {
        self.ceiling = ceiling;
        self
    }

    /// The scopes this client may touch.
    pub fn ceiling(&self) -> &Ceiling {
        &self.ceiling
    }

    /// Records the scopes the object this client serves may act in, when the client itself may
    /// reach further (revocation, which must also reach scopes narrowed since).
    pub fn acting_within(mut self, ceiling: Arc<Ceiling>) -> Self {
        self.acting = Some(ceiling);
        self
    }

    /// The scopes the object may act in: a removal that Azure cannot attribute to the operator
    /// (an access policy carries no tag) stays within them.
    pub fn acting_scopes(&self) -> &Ceiling {
        self.acting.as_deref().unwrap_or(&self.ceiling)
    }

    /// Reports every response to `observer` (metrics).
    pub fn observed(mut self, observer: super::cloud::Observer) -> Self {
        self.observer = observer;
        self
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// GET; `Ok(None)` when the resource does not exist.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        api_version: &str,
    ) -> Result<Option<T>, AzureError> {
        match self
            .send::<(), T>(Method::GET, path, Some(api_version), None)
            .await
        {
            Ok(r) => Ok(r.body),
            Err(AzureError::Arm { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// [`ArmClient::get`] of a resource many objects share, answered from this credential's read
    /// of it within the shared cache's lifetime when there is one (see `read_cache`).
    pub async fn get_recent<T: DeserializeOwned + Serialize>(
        &self,
        path: &str,
        api_version: &str,
    ) -> Result<Option<T>, AzureError> {
        let Some(cache) = &self.reads else {
            return self.get(path, api_version).await;
        };
        if !self.ceiling.admits(path) {
            // The same refusal as the request would get, without a cached answer.
            return self.get(path, api_version).await;
        }
        let who = self.credential.cache_key();
        if let Some(body) = cache.get(who, path, api_version)
            && let Ok(found) = serde_json::from_value::<T>(body)
        {
            return Ok(Some(found));
        }
        let found: Option<T> = self.get(path, api_version).await?;
        if let Some(body) = found.as_ref().and_then(|f| serde_json::to_value(f).ok()) {
            cache.put(who, path, api_version, body);
        }
        Ok(found)
    }

    /// GET a collection with extra query parameters (e.g. `$filter`).
    pub async fn list<T: DeserializeOwned>(
        &self,
        path: &str,
        api_version: &str,
        query: &[(&str, &str)],
    ) -> Result<Vec<T>, AzureError> {
        let response = self
            .send_with::<(), super::models::List<T>>(
                Method::GET,
                path,
                Some(api_version),
                query,
                None,
            )
            .await?;
        Ok(response.body.map(|l| l.value).unwrap_or_default())
    }

    /// PUT a body.
    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        api_version: &str,
        body: &B,
    ) -> Result<ArmResponse<T>, AzureError> {
        self.send(Method::PUT, path, Some(api_version), Some(body))
            .await
    }

    /// PATCH a body.
    pub async fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        api_version: &str,
        body: &B,
    ) -> Result<ArmResponse<T>, AzureError> {
        self.send(Method::PATCH, path, Some(api_version), Some(body))
            .await
    }

    /// POST an action (e.g. `listKeys`).
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        api_version: &str,
        body: Option<&B>,
    ) -> Result<ArmResponse<T>, AzureError> {
        self.send(Method::POST, path, Some(api_version), body).await
    }

    /// DELETE; a resource that is already gone counts as deleted.
    pub async fn delete(&self, path: &str, api_version: &str) -> Result<(), AzureError> {
        match self
            .send::<(), serde_json::Value>(Method::DELETE, path, Some(api_version), None)
            .await
        {
            Ok(_) | Err(AzureError::Arm { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// PUT and follow the long-running operation to its end (202 + Location, 201/200 +
    /// Azure-AsyncOperation, or a non-terminal `provisioningState`); returns the resource as GET
    /// shows it afterwards.
    pub async fn put_and_wait<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        api_version: &str,
        body: &B,
    ) -> Result<T, AzureError> {
        let first = self
            .send::<B, serde_json::Value>(Method::PUT, path, Some(api_version), Some(body))
            .await?;
        self.complete_within(path, api_version, first, false)
            .await?;
        self.get(path, api_version).await?.ok_or_else(|| {
            AzureError::Unexpected(format!("{path} is gone right after it was written"))
        })
    }

    /// PATCH and follow the long-running operation, as [`Self::put_and_wait`].
    pub async fn patch_and_wait<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        api_version: &str,
        body: &B,
    ) -> Result<T, AzureError> {
        let first = self
            .send::<B, serde_json::Value>(Method::PATCH, path, Some(api_version), Some(body))
            .await?;
        self.complete_within(path, api_version, first, false)
            .await?;
        self.get(path, api_version).await?.ok_or_else(|| {
            AzureError::Unexpected(format!("{path} is gone right after it was patched"))
        })
    }

    /// DELETE and follow the long-running operation; a resource already gone counts as deleted.
    pub async fn delete_and_wait(&self, path: &str, api_version: &str) -> Result<(), AzureError> {
        match self
            .send::<(), serde_json::Value>(Method::DELETE, path, Some(api_version), None)
            .await
        {
            Ok(first) => self.complete_within(path, api_version, first, true).await,
            Err(AzureError::Arm { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// [`Self::complete`], given up after the policy's deadline: an operation that never ends must not
    /// hold a reconcile for an hour.
    async fn complete_within(
        &self,
        path: &str,
        api_version: &str,
        first: ArmResponse<serde_json::Value>,
        delete: bool,
    ) -> Result<(), AzureError> {
        let deadline = self.retry.lro_deadline;
        tokio::time::timeout(deadline, self.complete(path, api_version, first, delete))
            .await
            .unwrap_or_else(|_| {
                Err(AzureError::Unexpected(format!(
                    "{path}: the long-running operation did not finish within {} s; looking again later",
                    deadline.as_secs()
                )))
            })
    }

    async fn complete(
        &self,
        path: &str,
        api_version: &str,
        first: ArmResponse<serde_json::Value>,
        delete: bool,
    ) -> Result<(), AzureError> {
        const MAX_POLLS: u32 = 120;
        let pause = |retry_after: Option<u64>| {
            tokio::time::sleep(Duration::from_secs(retry_after.unwrap_or(1).min(30)))
        };
        if let Some(url) = &first.async_operation {
            for _ in 0..MAX_POLLS {
                let poll = self
                    .send::<(), serde_json::Value>(Method::GET, url, None, None)
                    .await?;
                let body = poll.body.unwrap_or_default();
                match body["status"].as_str() {
                    Some(s) if s.eq_ignore_ascii_case("Succeeded") => return Ok(()),
                    Some(s)
                        if s.eq_ignore_ascii_case("Failed")
                            || s.eq_ignore_ascii_case("Canceled") =>
                    {
                        return Err(operation_failed(path, s, &body));
                    }
                    _ => pause(poll.retry_after.or(first.retry_after)).await,
                }
            }
            return Err(AzureError::Unexpected(format!(
                "{path}: the operation did not finish after {MAX_POLLS} polls"
            )));
        }
        if first.status == 202 {
            let Some(url) = &first.location else {
                return Ok(());
            };
            let mut retry_after = first.retry_after;
            for _ in 0..MAX_POLLS {
                pause(retry_after).await;
                let poll = self
                    .send::<(), serde_json::Value>(Method::GET, url, None, None)
                    .await?;
                if poll.status != 202 {
                    return Ok(());
                }
                retry_after = poll.retry_after;
            }
            return Err(AzureError::Unexpected(format!(
                "{path}: the operation did not finish after {MAX_POLLS} polls"
            )));
        }
        if delete {
            return Ok(());
        }
        // A 200/201 body whose provisioningState is not terminal means "still running".
        let mut state = provisioning_state(first.body.as_ref());
        for _ in 0..MAX_POLLS {
            match state.as_deref() {
                None | Some("Succeeded") => return Ok(()),
                Some(s @ ("Failed" | "Canceled")) => {
                    return Err(operation_failed(path, s, &serde_json::Value::Null));
                }
                Some(_) => pause(first.retry_after).await,
            }
            let current: Option<serde_json::Value> = self.get(path, api_version).await?;
            state = provisioning_state(current.as_ref());
        }
        Err(AzureError::Unexpected(format!(
            "{path}: provisioning did not finish after {MAX_POLLS} polls"
        )))
    }

    /// Sends to `path` (below the endpoint, with `api_version`) or to an absolute URL that already
    /// carries its api-version (a long-running operation's status URL).
    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        api_version: Option<&str>,
        body: Option<&B>,
    ) -> Result<ArmResponse<T>, AzureError> {
        self.send_with(method, path, api_version, &[], body).await
    }

    async fn send_with<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        api_version: Option<&str>,
        query: &[(&str, &str)],
        body: Option<&B>,
    ) -> Result<ArmResponse<T>, AzureError> {
        if method != Method::GET
            && let Some(cache) = &self.reads
        {
            cache.forget(path);
        }
        let url = if path.starts_with("https://") {
            // A long-running operation's URL: only on the endpoint's own host, where the token goes.
            if !path.starts_with(&format!("{}/", self.endpoint)) {
                return Err(AzureError::OutOfScope(format!(
                    "a long-running operation of {method} points at another host than {}; not followed",
                    self.endpoint
                )));
            }
            path.to_owned()
        } else {
            if !self.ceiling.admits(path) {
                return Err(AzureError::OutOfScope(format!(
                    "{path} is outside the allowed scopes ({}): not requested",
                    self.ceiling
                )));
            }
            format!("{}{}", self.endpoint, path)
        };
        let subscription = url
            .split("/subscriptions/")
            .nth(1)
            .and_then(|rest| rest.split(['/', '?']).next())
            .unwrap_or_default()
            .to_ascii_lowercase();
        // ARM limits each principal per subscription; one endpoint's throttling (a custom cloud
        // a tenant names) must not pause another principal's calls to the same subscription.
        let budget_key = format!("{}|{}|{subscription}", self.endpoint, self.credential.key);
        let path = url
            .strip_prefix(&self.endpoint)
            .unwrap_or(&url)
            .split('?')
            .next()
            .unwrap_or_default()
            .to_owned();
        let path = path.as_str();
        let mut attempt = 0;
        loop {
            attempt += 1;
            // A pause longer than is worth waiting in place fails at once: the object backs off
            // instead of holding a reconcile slot.
            let paused = self.budget.paused_for(&budget_key);
            if paused > self.retry.max_retry_after {
                return Err(AzureError::Throttled {
                    code: "ClientPaused".into(),
                    retry_after: paused.as_secs().max(1),
                });
            }
            let wait = self.budget.reserve(&budget_key);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let token = self.tokens.get(&self.credential, &self.endpoint).await?;
            // A pause another call was given while this one waited for its slot or its token
            // holds it too: nothing goes out before a Retry-After this principal was told.
            for waited in 0.. {
                let paused = self.budget.paused_for(&budget_key);
                if paused.is_zero() {
                    break;
                }
                if paused > self.retry.max_retry_after || waited >= self.retry.max_attempts {
                    return Err(AzureError::Throttled {
                        code: "ClientPaused".into(),
                        retry_after: paused.as_secs().max(1),
                    });
                }
                tokio::time::sleep(paused).await;
            }
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(token.secret());
            if let Some(version) = api_version {
                request = request.query(&[("api-version", version)]);
            }
            if !query.is_empty() {
                request = request.query(query);
            }
            if let Some(b) = body {
                request = request.json(b);
            }
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) if attempt < self.retry.max_attempts => {
                    tracing::debug!(%method, path, attempt, error = %e, "ARM request failed; retrying");
                    tokio::time::sleep(self.backoff(attempt)).await;
                    continue;
                }
                Err(e) => return Err(AzureError::Transport(e.without_url().to_string())),
            };
            let status = response.status();
            self.observer.observe("arm", status.as_u16());
            let headers = response.headers().clone();
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let text = super::limits::body(response).await?;

            if status == StatusCode::TOO_MANY_REQUESTS {
                // Capped: an endpoint's hint can pause this principal's calls, not forever.
                let wait = super::limits::retry_after(header("retry-after").as_deref());
                let retry_after = wait.as_secs();
                self.budget.pause(&budget_key, wait);
                let code = parse_error(&text).0;
                if attempt < self.retry.max_attempts && wait <= self.retry.max_retry_after {
                    tracing::info!(%method, path, retry_after, "throttled by ARM; waiting as told");
                    continue; // the budget's pause makes the next reserve() wait at least Retry-After
                }
                return Err(AzureError::Throttled { code, retry_after });
            }
            // A server error that says when to come back (ARM's 503) pauses this principal's calls
            // like a 429: nothing goes out before it.
            if status.is_server_error()
                && let Some(hint) = header("retry-after")
            {
                let wait = super::limits::retry_after(Some(&hint));
                self.budget.pause(&budget_key, wait);
                if attempt < self.retry.max_attempts && wait <= self.retry.max_retry_after {
                    tracing::info!(%method, path, retry_after = wait.as_secs(), status = status.as_u16(), "ARM unavailable; waiting as told");
                    continue;
                }
                return Err(AzureError::Throttled {
                    code: parse_error(&text).0,
                    retry_after: wait.as_secs(),
                });
            }
            if status.is_server_error() && attempt < self.retry.max_attempts {
                tracing::debug!(%method, path, attempt, status = status.as_u16(), "ARM server error; retrying");
                tokio::time::sleep(self.backoff(attempt)).await;
                continue;
            }
            if !status.is_success() {
                let (code, message) = parse_error(&text);
                return Err(AzureError::Arm {
                    method: method.to_string(),
                    path: path.to_owned(),
                    status: status.as_u16(),
                    code,
                    message,
                });
            }
            let parsed = if text.trim().is_empty() {
                None
            } else {
                Some(serde_json::from_str(&text).map_err(|e| {
                    AzureError::unreadable(&format!("the answer to {method} {path}"), &e)
                })?)
            };
            let number = |name: &str| header(name).and_then(|v| v.parse().ok());
            return Ok(ArmResponse {
                status: status.as_u16(),
                body: parsed,
                ratelimit: RateLimit {
                    reads: number("x-ms-ratelimit-remaining-subscription-reads"),
                    writes: number("x-ms-ratelimit-remaining-subscription-writes"),
                    deletes: number("x-ms-ratelimit-remaining-subscription-deletes"),
                },
                location: header("location"),
                async_operation: header("azure-asyncoperation"),
                retry_after: header("retry-after")
                    .map(|v| super::limits::retry_after(Some(&v)).as_secs()),
            });
        }
    }

    /// Exponential backoff with jitter: half the step fixed, half random.
    fn backoff(&self, attempt: u32) -> Duration {
        let step = self
            .retry
            .base_delay
            .saturating_mul(1 << (attempt - 1).min(16))
            .min(self.retry.max_delay);
        let half = step / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

fn provisioning_state(body: Option<&serde_json::Value>) -> Option<String> {
    body?
        .get("properties")?
        .get("provisioningState")?
        .as_str()
        .map(str::to_owned)
}

fn operation_failed(path: &str, status: &str, body: &serde_json::Value) -> AzureError {
    let error = &body["error"];
    AzureError::Arm {
        method: "LRO".into(),
        path: path.to_owned(),
        status: 200,
        code: error["code"].as_str().unwrap_or(status).to_owned(),
        message: error["message"]
            .as_str()
            .unwrap_or("the long-running operation ended without success")
            .to_owned(),
    }
}

pub(crate) fn parse_error(text: &str) -> (String, String) {
    let parsed: ErrorResponse = serde_json::from_str(text).unwrap_or_default();
    match parsed.error {
        Some(e) => (e.code, e.message),
        None => (
            parsed.code.unwrap_or_else(|| "Unknown".into()),
            parsed
                .message
                .unwrap_or_else(|| text.chars().take(200).collect()),
        ),
    }
}
