//! What an object loses when the operator may no longer act for it, and what its deletion takes
//! back: a `Denied` or `OutOfScope` object's credential Secrets and federated credentials go at
//! once; a deleted object's whole record is revoked — signed in whether or not its namespace is
//! still admitted, since revocation only ever deletes what shows it is the operator's.

use kube::ResourceExt;

use super::credentials::Purpose;
use super::ledger::Ledger;
use super::resolve::{self, Signed};
use super::{Cleanup, Context, Error, Outcome, Reconciled};
use crate::api::conditions::Reason;
use crate::api::*;

/// The Workspace `name` an object uses, signed in through the Workspace's credential. When the
/// credential refuses the object (`Denied`), what it was given is withdrawn first
/// ([`refused`]).
pub async fn workspace_for<K: Reconciled>(
    ctx: &Context,
    obj: &K,
    name: &str,
    outputs: &[&str],
) -> Result<Result<(Workspace, Signed), Outcome>, Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let ws = match resolve::find_workspace(ctx, &namespace, name).await? {
        Ok(ws) => ws,
        Err(outcome) => return Ok(Err(outcome)),
    };
    match resolve::sign_in(ctx, &namespace, &ws.spec.credential_ref).await? {
        Ok(signed) => Ok(Ok((ws, signed))),
        Err(outcome) => refused(ctx, obj, &ws.spec.credential_ref, outputs, outcome)
            .await
            .map(Err),
    }
}

/// Cleanup of an object that goes: signed in whether or not its namespace is still admitted, the
/// whole record revoked. Released only when nothing is left; otherwise an error that the shared
/// reconciler retries a bounded number of times before it lets go with a Warning.
pub async fn revoke_all<K: Reconciled>(
    ctx: &Context,
    obj: &K,
    namespace: &str,
    reference: &CredentialRef,
) -> Result<Cleanup, Error> {
    let signed = match resolve::sign_in_for(ctx, namespace, reference, Purpose::Revoke).await? {
        Ok(s) => s,
        Err(outcome) => {
            let why = outcome.ready_condition().map(|c| c.message.clone());
            return Err(Error::Azure(format!(
                "cannot sign in to remove what this object made in Azure: {}",
                why.unwrap_or_default()
            )));
        }
    };
    let mut ledger = Ledger::of(obj);
    let all = ledger.recorded().to_vec();
    let left = ledger.revoke(ctx, obj, &signed.arm, &all).await?;
    if left.is_empty() {
        Ok(Cleanup::Done)
    } else {
        Err(Error::Azure(left.join("; ")))
    }
}

/// Cleanup of an object that acts through its Workspace's credential: the whole record revoked
/// ([`revoke_all`]); with the Workspace gone there is no credential, which counts as a failure.
pub async fn revoke_through_workspace<K: Reconciled>(
    ctx: &Context,
    obj: &K,
    workspace: &str,
) -> Result<Cleanup, Error> {
    if obj.record().is_empty() {
        return Ok(Cleanup::Done);
    }
    let namespace = obj.namespace().unwrap_or_default();
    match resolve::find_workspace(ctx, &namespace, workspace).await? {
        Ok(ws) => revoke_all(ctx, obj, &namespace, &ws.spec.credential_ref).await,
        Err(_) => Err(Error::Azure(format!(
            "Workspace {namespace}/{workspace} is gone: no credential to remove what this object made in Azure"
        ))),
    }
}

/// An object that may no longer act (`Denied`, `OutOfScope`): its credential Secrets are deleted,
/// and the federated credentials it made are revoked — the namespace's own access, removed even
/// after the namespace was de-admitted. Returns what was done, for the status message.
pub async fn withdraw<K: Reconciled>(
    ctx: &Context,
    obj: &K,
    reference: &CredentialRef,
    secrets: &[&str],
) -> Result<Vec<String>, Error> {
    let mut notes = Vec::new();
    for name in secrets {
        if crate::outputs::remove::<_, k8s_openapi::api::core::v1::Secret>(&ctx.client, obj, name)
            .await?
        {
            notes.push(format!("Secret {name} removed"));
        }
    }
    let federated: Vec<AzureResource> = obj
        .record()
        .iter()
        .filter(|r| r.kind == AzureResourceKind::FederatedIdentityCredential)
        .cloned()
        .collect();
    if federated.is_empty() {
        return Ok(notes);
    }
    let namespace = obj.namespace().unwrap_or_default();
    match resolve::sign_in_for(ctx, &namespace, reference, Purpose::Revoke).await? {
        Ok(signed) => {
            let mut ledger = Ledger::of(obj);
            let left = ledger.revoke(ctx, obj, &signed.arm, &federated).await?;
            let done = federated.len() - left.len();
            if done > 0 {
                notes.push(format!("{done} federated credential(s) revoked"));
            }
            notes.extend(left.into_iter().map(|l| format!("not revoked yet: {l}")));
        }
        Err(_) => notes.push(format!(
            "{} federated credential(s) not revoked yet: no usable credential",
            federated.len()
        )),
    }
    Ok(notes)
}

/// The outcome of an object refused its credential or scope: when it is `Denied` or
/// `OutOfScope`, what it was given is withdrawn first ([`withdraw`]) and the message says so.
pub async fn refused<K: Reconciled>(
    ctx: &Context,
    obj: &K,
    reference: &CredentialRef,
    secrets: &[&str],
    outcome: Outcome,
) -> Result<Outcome, Error> {
    let reason = outcome.ready_condition().map(|c| c.reason);
    if !matches!(reason, Some(Reason::Denied | Reason::OutOfScope)) {
        return Ok(outcome);
    }
    let notes = withdraw(ctx, obj, reference, secrets).await?;
    if !notes.is_empty() {
        tracing::info!(kind = %K::kind(&()), name = %obj.name_any(), namespace = obj.namespace(), withdrawn = %notes.join(", "), "refused object withdrawn");
    }
    let pending: Vec<&str> = notes
        .iter()
        .filter(|n| n.starts_with("not "))
        .map(String::as_str)
        .collect();
    let mut outcome = outcome;
    if let Some(ready) = outcome
        .conditions
        .iter_mut()
        .find(|c| c.type_ == super::READY)
    {
        // The same words on every pass (what was just removed goes to the log), so status settles.
        ready.message = format!(
            "{}; while refused it keeps no credential Secret and no federated credential",
            ready.message
        );
        if !pending.is_empty() {
            ready.message = format!("{} ({})", ready.message, pending.join("; "));
        }
    }
    Ok(outcome)
}
