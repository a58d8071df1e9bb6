//! The step every kind that acts in Azure starts with: the referenced credential resolved (and the
//! namespace admitted), an ARM client that cannot leave the object's allowed scopes, and the scope
//! check that names the field of every id outside them — run before the first Azure request, so an
//! out-of-scope object costs Azure nothing.

use std::sync::Arc;
use std::time::Duration;

use super::credentials::{self, Purpose, ResolveError};
use super::{Context, Error, Outcome};
use crate::api::conditions::{ConditionType, Reason};
use crate::api::*;
use crate::azure::arm::ArmClient;
use crate::azure::scope::{Audiences, Ceiling};
use crate::azure::{AzureError, Cloud};

/// Signed in for one object: an ARM client bounded by the object's ceiling, and the limits.
#[derive(Clone)]
pub struct Signed {
    /// Resource Manager, refusing every path outside `ceiling`.
    pub arm: ArmClient,
    /// The HTTP client for data-plane calls (ACR, storage).
    pub http: reqwest::Client,
    /// The credential's cloud.
    pub cloud: Cloud,
    /// The credential's tenant.
    pub tenant: String,
    /// The ARM scopes the object may touch.
    pub ceiling: Arc<Ceiling>,
    /// The token audiences the object may mint for pods.
    pub audiences: Audiences,
    /// Who set those limits, for messages.
    pub granted_by: String,
}

impl Signed {
    /// `Ok` when every `(field, id)` lies within the ceiling; otherwise the `OutOfScope` outcome,
    /// naming each offending field and id and the scopes allowed.
    pub fn check<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a (String, String)>,
        namespace: &str,
    ) -> Result<(), Outcome> {
        let outside: Vec<String> = ids
            .into_iter()
            .filter(|(_, id)| !self.ceiling.admits(id))
            .map(|(field, id)| format!("{field}: {id}"))
            .collect();
        if outside.is_empty() {
            return Ok(());
        }
        Err(out_of_scope(
            &self.granted_by,
            format!(
                "{} {} outside what {} allows for namespace {namespace} ({}); nothing was requested in Azure for it",
                outside.join("; "),
                if outside.len() == 1 { "is" } else { "are" },
                self.granted_by,
                self.ceiling
            ),
        ))
    }

    /// `Ok` when every `(field, audience)` is allowed; otherwise `OutOfScope` naming them.
    pub fn check_audiences<'a>(
        &self,
        audiences: impl IntoIterator<Item = (String, &'a str)>,
    ) -> Result<(), Outcome> {
        let refused: Vec<String> = audiences
            .into_iter()
            .filter(|(_, a)| !self.audiences.admits(a))
            .map(|(field, a)| format!("{field}: {a}"))
            .collect();
        if refused.is_empty() {
            return Ok(());
        }
        Err(out_of_scope(
            &self.granted_by,
            format!(
                "{}: not among the token audiences {} allows ({}); nothing was minted",
                refused.join("; "),
                self.granted_by,
                self.audiences
            ),
        ))
    }
}

/// `Ready=False OutOfScope`: the credential itself resolved, the object asked for too much.
pub fn out_of_scope(granted_by: &str, message: String) -> Outcome {
    Outcome::not_ready(Reason::OutOfScope, message).condition(
        ConditionType::CredentialResolved,
        true,
        Reason::Resolved,
        format!("signed in through {granted_by}"),
    )
}

/// The outcome of an Azure call that failed: its reason, and when to look again.
pub fn azure_failure(error: &AzureError, what: &str) -> Outcome {
    Outcome::not_ready(error.reason(), format!("{what}: {error}")).requeue(error.retry())
}

/// The outcome when the credential cannot be used (including `Denied`, before any token request).
pub fn credential_failure(error: ResolveError) -> Result<Outcome, Error> {
    match error {
        ResolveError::Kube(e) => Err(e.into()),
        e => {
            let message = e.to_string();
            Ok(Outcome::not_ready(e.reason(), message.clone())
                .condition(
                    ConditionType::CredentialResolved,
                    false,
                    e.reason(),
                    message,
                )
                .requeue(e.retry()))
        }
    }
}

/// Signs in through `reference` for an object in `namespace`.
pub async fn sign_in(
    ctx: &Context,
    namespace: &str,
    reference: &CredentialRef,
) -> Result<Result<Signed, Outcome>, Error> {
    sign_in_for(ctx, namespace, reference, Purpose::Act).await
}

/// [`sign_in`] for a purpose: revocation also works for a namespace no longer admitted.
pub async fn sign_in_for(
    ctx: &Context,
    namespace: &str,
    reference: &CredentialRef,
    purpose: Purpose,
) -> Result<Result<Signed, Outcome>, Error> {
    let resolved = match credentials::resolve_ref_for(ctx, namespace, reference, purpose).await {
        Ok(r) => r,
        Err(e) => return credential_failure(e).map(Err),
    };
    let http = match ctx.azure.transport.client() {
        Ok(h) => h,
        Err(e) => return Ok(Err(azure_failure(&e, "Azure transport"))),
    };
    let tenant = resolved.credential.tenant_id().to_owned();
    // Revocation deletes only what Azure shows is the operator's and no live object holds
    // (ledger.rs), so it also reaches what lies outside scopes that were narrowed since.
    let acting = Arc::new(resolved.ceiling);
    let ceiling = match purpose {
        Purpose::Act => acting.clone(),
        Purpose::Revoke => Arc::new(Ceiling::Unlimited),
    };
    let arm = ArmClient::new(
        http.clone(),
        &resolved.cloud.resource_manager,
        resolved.credential,
        ctx.azure.tokens.clone(),
        ctx.azure.budget.clone(),
    )
    .observed(ctx.azure.transport.observer.clone())
    .sharing_reads(ctx.azure.reads.clone())
    .within(ceiling.clone())
    .acting_within(acting);
    Ok(Ok(Signed {
        arm,
        http,
        cloud: resolved.cloud,
        tenant,
        ceiling,
        audiences: resolved.audiences,
        granted_by: resolved.granted_by,
    }))
}

/// The Workspace a namespaced object refers to, or the outcome saying it does not exist.
pub async fn find_workspace(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Result<Workspace, Outcome>, Error> {
    match ctx.workspace(namespace, name).await? {
        Some(ws) => Ok(Ok(ws)),
        None => Ok(Err(Outcome::not_ready(
            Reason::WorkspaceNotFound,
            format!("Workspace {namespace}/{name} does not exist"),
        )
        .requeue(Duration::from_secs(60)))),
    }
}

/// `(field, id)` for each present value.
pub fn ids<'a>(
    entries: impl IntoIterator<Item = (String, Option<&'a String>)>,
) -> Vec<(String, String)> {
    entries
        .into_iter()
        .filter_map(|(field, id)| id.map(|id| (field, id.clone())))
        .collect()
}
