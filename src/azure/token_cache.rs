//! One token request per (credential, client id, audience) per lifetime, however many callers ask:
//! a per-key async lock makes concurrent callers wait for the one request in flight.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use super::credential::Credential;
use super::error::AzureError;
use super::jwt::Claims;

/// An access token. `Debug` never shows the value.
#[derive(Clone)]
pub struct Token {
    secret: String,
    /// When it was obtained (Unix seconds, by the cache's clock).
    pub obtained_at: i64,
    /// When it expires (Unix seconds): the JWT `exp` when readable.
    pub expires_on: i64,
    /// Its claims (ids, audience, expiry).
    pub claims: Claims,
}

impl Token {
    /// Wraps a token value.
    pub fn new(secret: String, obtained_at: i64, expires_on: i64, claims: Claims) -> Self {
        Self {
            secret,
            obtained_at,
            expires_on,
            claims,
        }
    }

    /// The bearer value, for an `Authorization` header or a Secret's data; never for logs.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// When a cached copy stops being handed out: at two thirds of its lifetime, so that whoever
    /// renews at that point gets a fresh token rather than this one.
    pub fn stale_at(&self) -> i64 {
        let lifetime = self.expires_on.saturating_sub(self.obtained_at).max(0);
        self.obtained_at.saturating_add(lifetime / 3 * 2)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("expires_on", &self.expires_on)
            .field("oid", &self.claims.oid)
            .finish_non_exhaustive()
    }
}

/// How long a cached token must still live to stand in for a renewal that failed (seconds).
pub const FALLBACK_MARGIN: i64 = 60;

type Key = (String, String, String);
type Slot = Arc<tokio::sync::Mutex<Option<Token>>>;

/// Time source, injectable so tests can move time.
pub type Now = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The shared token cache.
pub struct TokenCache {
    slots: Mutex<HashMap<Key, Slot>>,
    /// Clients ([`Credential::throttled_as`]) told to come back later (429, or a 5xx with
    /// `Retry-After`): until then no request of theirs is sent, whatever the audience.
    paused: Mutex<HashMap<String, std::time::Instant>>,
    now: Now,
}

impl Default for TokenCache {
    fn default() -> Self {
        Self::with_clock(Arc::new(|| jiff::Timestamp::now().as_second()))
    }
}

impl TokenCache {
    /// The cache's clock.
    pub fn now(&self) -> i64 {
        (self.now)()
    }

    /// A cache that reads time from `now`.
    pub fn with_clock(now: Now) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            paused: Mutex::new(HashMap::new()),
            now,
        }
    }

    /// A bearer token of `credential` for `audience`: the cached one while fresh, otherwise one new
    /// request shared by every concurrent caller. When that request fails but the cached token
    /// still has [`FALLBACK_MARGIN`] to live, the cached one is used: a credential whose source is
    /// gone for now (a ServiceAccount in a namespace being deleted cannot get tokens) can still
    /// finish its work, e.g. revoke what it made. Secrets are never filled from this fallback.
    pub async fn get(&self, credential: &Credential, audience: &str) -> Result<Token, AzureError> {
        match self.get_newer_than(credential, audience, i64::MIN).await {
            Ok(token) => Ok(token),
            Err(e) => {
                let slot = self.slot(credential, audience);
                let cached = slot.lock().await;
                let now = (self.now)();
                match cached
                    .as_ref()
                    .filter(|t| t.expires_on - now > FALLBACK_MARGIN)
                {
                    Some(token) => {
                        tracing::info!(error = %e, expires_on = token.expires_on, "renewing a token failed; using the cached one while it lasts");
                        Ok(token.clone())
                    }
                    None => Err(e),
                }
            }
        }
    }

    fn slot(&self, credential: &Credential, audience: &str) -> Slot {
        let key = (
            credential.key.clone(),
            credential.client_id.clone(),
            audience.trim_end_matches('/').to_owned(),
        );
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default()
            .clone()
    }

    /// Like [`Self::get`], but a cached token obtained before `obtained_after` does not count: a
    /// renewal must not hand back the token it replaces, while every object renewing from that same
    /// token still shares one new request.
    pub async fn get_newer_than(
        &self,
        credential: &Credential,
        audience: &str,
        obtained_after: i64,
    ) -> Result<Token, AzureError> {
        let slot = self.slot(credential, audience);
        let mut cached = slot.lock().await;
        let now = (self.now)();
        if let Some(token) = cached
            .as_ref()
            .filter(|t| now < t.stale_at() && t.obtained_at > obtained_after)
        {
            return Ok(token.clone());
        }
        let principal = credential.throttled_as();
        let until = self
            .paused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&principal)
            .copied();
        if let Some(left) = until.and_then(|u| u.checked_duration_since(std::time::Instant::now()))
            && !left.is_zero()
        {
            return Err(AzureError::Throttled {
                code: "ClientPaused".into(),
                retry_after: left.as_secs_f64().ceil() as u64,
            });
        }
        match credential.request(audience, now).await {
            Ok(token) => {
                *cached = Some(token.clone());
                Ok(token)
            }
            Err(e) => {
                let now = std::time::Instant::now();
                let wait = match &e {
                    AzureError::Throttled { retry_after, .. } => Some(
                        std::time::Duration::from_secs(*retry_after)
                            .min(super::limits::MAX_RETRY_AFTER),
                    ),
                    _ => None,
                };
                if let Some(until) = wait.and_then(|w| now.checked_add(w)) {
                    let mut paused = self.paused.lock().unwrap_or_else(|e| e.into_inner());
                    // Bounded: entries whose time has passed go when another is added.
                    paused.retain(|_, u| *u > now);
                    paused.insert(principal, until);
                }
                Err(e)
            }
        }
    }

    /// Drops every cached token of a credential (its secret rotated, or it was deleted).
    pub fn forget(&self, credential_key: &str) {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(k, _, _), _| k != credential_key);
    }
}
