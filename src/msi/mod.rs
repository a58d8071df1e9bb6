//! The Azure ML managed identity endpoint, served to pods by every replica: the protocol of AML
//! compute (`GET ?api-version=2017-09-01&resource=…[&clientid=…]`, header `secret`), so training
//! code written for AML — `ManagedIdentityCredential(client_id=…).get_token(resource)`, or
//! `DefaultAzureCredential()` — runs unmodified in the cluster.
//!
//! A request is answered only for an identity its ComputeIdentity lists, for an audience its
//! credential allows, in that ComputeIdentity's namespace: tokens are minted through its federated
//! ServiceAccount, so Entra ID itself refuses anything the federation does not trust, and they come
//! from the token cache the controllers share (one Entra request per identity and audience per
//! token lifetime, however many pods ask).

pub mod budget;
pub mod directory;
pub mod key;
pub mod request;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};

use crate::api::conditions::{ConditionType, Reason};
use crate::api::{ComputeIdentity, IdentityStatus};
use crate::azure::scope::Audiences;
use crate::azure::{AzureError, Cloud};
use crate::controllers::Context;
use crate::controllers::credentials::{self, Purpose, ResolveError};
use crate::workload_identity::federated_credential;
use budget::Budgets;
pub use budget::RateLimit;
pub use directory::Directory;
pub use key::EndpointKey;
use request::{Refusal, TokenRequest};

/// The path the endpoint answers on; `MSI_ENDPOINT` names it.
pub const PATH: &str = "/msi/token";
/// How long a ComputeIdentity's credential verdict (admission, audiences) is reused.
const GRANT_TTL: Duration = Duration::from_secs(10);
/// Unknown secrets a caller (by address) may send before it gets 429: a pod after a rotation
/// sends a few, a guesser many.
const GUESSES: RateLimit = RateLimit {
    per_second: 1.0,
    burst: 20.0,
};
/// Requests answered at once; past it the endpoint answers 503 rather than queue without bound.
const MAX_IN_FLIGHT: usize = 1024;

/// What the controllers need to write `MSI_ENDPOINT` and `MSI_SECRET` into token Secrets.
#[derive(Clone)]
pub struct Issuer {
    /// The endpoint's in-cluster URL (`MSI_ENDPOINT`).
    pub url: String,
    /// The key the secrets derive from.
    pub key: Arc<EndpointKey>,
}

/// The endpoint's shared state.
pub struct Endpoint {
    ctx: Arc<Context>,
    directory: Arc<Directory>,
    /// Per ComputeIdentity.
    budgets: Budgets<(String, String)>,
    /// Per caller address, spent by refused secrets.
    guesses: Budgets<IpAddr>,
    in_flight: tokio::sync::Semaphore,
    grants: Mutex<HashMap<(String, String), GrantSlot>>,
    announced: Mutex<HashMap<(String, String, String), i64>>,
}

type GrantSlot = Arc<tokio::sync::Mutex<Option<(Instant, Result<Grant, Refusal>)>>>;

/// What a ComputeIdentity's credential allows it, as last resolved.
#[derive(Clone)]
struct Grant {
    audiences: Audiences,
    cloud: Cloud,
    tenant: String,
    granted_by: String,
}

/// A token answered.
struct Answer {
    token: String,
    expires_on: i64,
    resource: String,
    client_id: String,
}

impl Endpoint {
    /// The endpoint over `directory`, minting through `ctx`.
    pub fn new(ctx: Arc<Context>, directory: Arc<Directory>, limit: RateLimit) -> Self {
        Self {
            ctx,
            directory,
            budgets: Budgets::new(limit),
            guesses: Budgets::new(GUESSES),
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
            grants: Mutex::default(),
            announced: Mutex::default(),
        }
    }

    async fn answer(&self, request: TokenRequest) -> Result<Answer, Refusal> {
        let Some(ci) = self.directory.find(&request.secret) else {
            return Err(Refusal::unauthorized(
                "the secret header matches no ComputeIdentity that serves the managed identity endpoint: send MSI_SECRET of the current token Secret (a force-refresh changes it), and check that the ComputeIdentity exists and sets spec.tokenSecret.msiEndpoint",
            ));
        };
        let (namespace, name) = (ci.namespace().unwrap_or_default(), ci.name_any());
        self.take_budget(&namespace, &name)?;
        let who = format!("ComputeIdentity {namespace}/{name}");
        refused_by_verdict(&ci, &who)?;
        let identity = identity_for(&ci, request.client_id.as_deref(), &who)?;
        let grant = self.grant(&ci).await?;
        if !grant.audiences.admits(&request.audience) {
            return Err(Refusal::bad_request(
                "invalid_resource",
                format!(
                    "resource {} is not among the token audiences {} allows for {who} ({})",
                    request.audience, grant.granted_by, grant.audiences
                ),
            ));
        }
        let Some(account) = ci
            .spec
            .federation
            .as_ref()
            .and_then(|f| f.service_accounts.first())
        else {
            return Err(Refusal::forbidden(format!(
                "{who} federates no ServiceAccount (spec.federation.serviceAccounts): tokens are minted through the first one"
            )));
        };
        let tenant = if identity.tenant_id.is_empty() {
            grant.tenant.clone()
        } else {
            identity.tenant_id.clone()
        };
        // The controllers' credential for this ServiceAccount: the endpoint shares their tokens.
        let credential = federated_credential(
            &self.ctx.client,
            &self.ctx.azure.transport,
            &namespace,
            account,
            &grant.cloud,
            &tenant,
            &identity.client_id,
        )
        .map_err(|e| minting_failed(&e, &identity.client_id))?;
        let token = self
            .ctx
            .azure
            .tokens
            .get(&credential, &request.audience)
            .await
            .map_err(|e| minting_failed(&e, &identity.client_id))?;
        self.announce(&ci, &identity.client_id, &request.audience, &token)
            .await;
        Ok(Answer {
            token: token.secret().to_owned(),
            expires_on: token.expires_on,
            resource: request.resource,
            client_id: identity.client_id,
        })
    }

    /// One request from the ComputeIdentity's budget, or 429 with when to come back.
    fn take_budget(&self, namespace: &str, name: &str) -> Result<(), Refusal> {
        self.budgets
            .take((namespace.to_owned(), name.to_owned()))
            .map_err(Refusal::throttled)
    }

    /// The credential's verdict for `ci`'s namespace, reused for [`GRANT_TTL`]; one lookup at a
    /// time per ComputeIdentity however many requests wait for it.
    async fn grant(&self, ci: &ComputeIdentity) -> Result<Grant, Refusal> {
        let namespace = ci.namespace().unwrap_or_default();
        let slot = self
            .grants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((namespace.clone(), ci.spec.workspace_ref.name.clone()))
            .or_default()
            .clone();
        let mut cached = slot.lock().await;
        if let Some((at, verdict)) = cached.as_ref()
            && at.elapsed() < GRANT_TTL
        {
            return verdict.clone();
        }
        let verdict = self.resolve(&namespace, &ci.spec.workspace_ref.name).await;
        *cached = Some((Instant::now(), verdict.clone()));
        verdict
    }

    async fn resolve(&self, namespace: &str, workspace: &str) -> Result<Grant, Refusal> {
        let unavailable = |what: String| Refusal::unavailable(what, 10);
        let ws = match crate::controllers::resolve::find_workspace(&self.ctx, namespace, workspace)
            .await
        {
            Ok(Ok(ws)) => ws,
            Ok(Err(_)) => {
                return Err(Refusal::forbidden(format!(
                    "Workspace {namespace}/{workspace} does not exist: the ComputeIdentity has no credential"
                )));
            }
            Err(e) => {
                return Err(unavailable(format!(
                    "reading Workspace {namespace}/{workspace}: {e}"
                )));
            }
        };
        match credentials::limits_for(&self.ctx, namespace, &ws.spec.credential_ref, Purpose::Act)
            .await
        {
            Ok(limits) => Ok(Grant {
                tenant: limits.spec.tenant_id.clone(),
                cloud: credentials::cloud_of(&limits.spec),
                audiences: limits.audiences,
                granted_by: limits.granted_by,
            }),
            Err(ResolveError::Denied(why)) => Err(Refusal::forbidden(why)),
            Err(ResolveError::Kube(e)) => Err(unavailable(format!("Kubernetes API: {e}"))),
            Err(e) => Err(unavailable(format!(
                "the credential of Workspace {namespace}/{workspace} cannot be used: {e}"
            ))),
        }
    }

    /// One `TokenServed` Event per (object, identity, audience) and token, never per request.
    async fn announce(
        &self,
        ci: &ComputeIdentity,
        client_id: &str,
        audience: &str,
        token: &crate::azure::Token,
    ) {
        let key = (
            ci.meta().uid.clone().unwrap_or_default(),
            client_id.to_owned(),
            audience.to_owned(),
        );
        {
            let mut announced = self.announced.lock().unwrap_or_else(|e| e.into_inner());
            if announced.get(&key) == Some(&token.obtained_at) {
                return;
            }
            if announced.len() > 4096 {
                let now = self.ctx.azure.tokens.now();
                announced.retain(|_, obtained| *obtained > now - 2 * 3600);
            }
            announced.insert(key, token.obtained_at);
        }
        let event = Event {
            type_: EventType::Normal,
            reason: "TokenServed".into(),
            note: Some(format!(
                "the managed identity endpoint serves identity {client_id} tokens for {audience}, valid until {}",
                crate::renewal::rfc3339(token.expires_on)
            )),
            action: "ServeToken".into(),
            secondary: None,
        };
        if let Err(e) = self.ctx.events.publish(&event, &ci.object_ref(&())).await {
            tracing::warn!(error = %e, "publishing a TokenServed Event");
        }
    }
}

/// A ComputeIdentity its credential refuses (`Denied`, `OutOfScope`) gets no token, whatever
/// its secret.
fn refused_by_verdict(ci: &ComputeIdentity, who: &str) -> Result<(), Refusal> {
    let conditions = ci.status.iter().flat_map(|s| s.common.conditions.iter());
    for c in conditions {
        let reason = Reason::parse(&c.reason);
        let refusing = matches!(reason, Some(Reason::Denied | Reason::OutOfScope))
            && (c.type_ == ConditionType::Ready.as_str()
                || c.type_ == ConditionType::CredentialResolved.as_str());
        if refusing && c.status == "False" {
            return Err(Refusal::forbidden(format!(
                "{who} is {}: {}",
                c.reason, c.message
            )));
        }
    }
    Ok(())
}

/// The identity asked for: `client_id` when it is one the ComputeIdentity lists (and ARM
/// reported), else its default identity.
fn identity_for(
    ci: &ComputeIdentity,
    client_id: Option<&str>,
    who: &str,
) -> Result<IdentityStatus, Refusal> {
    let listed = &ci.spec.identity.user_assigned_identities;
    let known: Vec<IdentityStatus> = ci
        .status
        .iter()
        .flat_map(|s| s.identities.iter())
        .filter(|i| {
            listed
                .iter()
                .any(|l| l.eq_ignore_ascii_case(&i.resource_id))
        })
        .cloned()
        .collect();
    let default = || {
        let status = ci.status.as_ref()?;
        let id = status.client_id.clone()?;
        Some(
            known
                .iter()
                .find(|i| i.client_id.eq_ignore_ascii_case(&id))
                .cloned()
                .unwrap_or(IdentityStatus {
                    client_id: id,
                    ..Default::default()
                }),
        )
    };
    match client_id {
        None => default().ok_or_else(|| {
            Refusal::unavailable(
                format!("{who} has no identity ready yet: see kubectl amlid status"),
                15,
            )
        }),
        Some(wanted) => known
            .iter()
            .find(|i| i.client_id.eq_ignore_ascii_case(wanted))
            .cloned()
            .ok_or_else(|| {
                let ids: Vec<&str> = known.iter().map(|i| i.client_id.as_str()).collect();
                Refusal::bad_request(
                    "invalid_request",
                    format!(
                        "identity {wanted} is not one of {who}'s identities (spec.identity.userAssignedIdentities): ask for {}",
                        if ids.is_empty() {
                            "none yet (the ComputeIdentity is not ready)".to_owned()
                        } else {
                            ids.join(" or ")
                        }
                    ),
                )
            }),
    }
}

/// The refusal for a failed mint: Entra's own words (never a token), and whether a retry helps.
fn minting_failed(error: &AzureError, client_id: &str) -> Refusal {
    let description = format!("minting a token for identity {client_id}: {error}");
    match error {
        AzureError::Throttled { retry_after, .. } => Refusal {
            description,
            ..Refusal::throttled(*retry_after)
        },
        e if e.is_transient() => Refusal::unavailable(description, 10),
        AzureError::Entra { status, .. } if *status >= 500 => Refusal::unavailable(description, 10),
        _ => Refusal::bad_request("invalid_grant", description),
    }
}

/// Binds `addr` and serves `endpoint` until `shutdown` completes; requests in flight then finish.
pub async fn serve(
    addr: SocketAddr,
    endpoint: Arc<Endpoint>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let app = Router::new()
        .route(PATH, get(token))
        .fallback(|| async {
            refusal_response(&Refusal {
                status: 404,
                error: "not_found",
                description: format!("the managed identity endpoint answers GET {PATH}"),
                outcome: "not_found",
                retry_after: None,
            })
        })
        .with_state(endpoint);
    crate::server::bind_and_serve(addr, app, "managed identity endpoint", shutdown).await
}

async fn token(
    State(endpoint): State<Arc<Endpoint>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let pairs = query.map(|q| q.0).unwrap_or_default();
    let secret = headers.get("secret").and_then(|v| v.to_str().ok());
    let parsed = request::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())), secret);
    let answered = match (parsed, endpoint.in_flight.try_acquire()) {
        (_, Err(_)) => Err(Refusal::unavailable(
            "the managed identity endpoint is answering as many requests as it may at once",
            1,
        )),
        // A caller that keeps sending unknown secrets is guessing (or broken): it waits.
        (_, Ok(_)) if !endpoint.guesses.has(&peer.ip()) => Err(Refusal::guessing(1)),
        (Ok(request), Ok(_permit)) => endpoint.answer(request).await,
        (Err(refusal), Ok(_)) => Err(refusal),
    };
    if let Err(refusal) = &answered
        && refusal.status == 401
    {
        let _ = endpoint.guesses.take(peer.ip());
    }
    let outcome = match &answered {
        Ok(_) => "issued",
        Err(r) => r.outcome,
    };
    endpoint
        .ctx
        .metrics
        .observe_msi(outcome, started.elapsed().as_secs_f64());
    match answered {
        Ok(a) => (
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            axum::Json(serde_json::json!({
                "access_token": a.token,
                "expires_on": a.expires_on,
                "resource": a.resource,
                "token_type": "Bearer",
                "client_id": a.client_id,
            })),
        )
            .into_response(),
        Err(refusal) => {
            if refusal.status != 401 && refusal.status != 429 {
                tracing::info!(status = refusal.status, reason = %refusal.description, "managed identity endpoint refused a request");
            }
            refusal_response(&refusal)
        }
    }
}

fn refusal_response(refusal: &Refusal) -> Response {
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (
        status,
        axum::Json(serde_json::json!({
            "error": refusal.error,
            "error_description": refusal.description,
        })),
    )
        .into_response();
    if let Some(seconds) = refusal.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
