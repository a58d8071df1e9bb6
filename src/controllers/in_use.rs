//! Deletion order that keeps revocation possible. A namespace deletion deletes everything at once,
//! but a ComputeIdentity can only remove its federated credentials while its Workspace and
//! credential (and the credential's Secret) are still there. So a Workspace or credential waits
//! while a dependent still carries the operator's finalizer, and a namespaced credential holds a
//! finalizer on its Secret while its namespace is being deleted — not otherwise, so deleting the
//! Secret to replace it works as it always did.

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};

use super::{Context, Error, FINALIZER, Reconciled};
use crate::api::*;

/// Finalizer on a namespaced credential's Secret while the credential may still be needed.
pub const SECRET_FINALIZER: &str = "amlidentity.io/credential-in-use";

/// Objects that reference `kind`/`name` (in `namespace`, or anywhere for a cluster-scoped
/// credential) and still hold the operator's finalizer: their cleanup is not done.
pub async fn dependents(
    ctx: &Context,
    namespace: Option<&str>,
    kind: &str,
    name: &str,
) -> Result<Vec<String>, Error> {
    async fn of<K: Reconciled>(
        ctx: &Context,
        namespace: Option<&str>,
        kind: &str,
        name: &str,
    ) -> Result<Vec<String>, Error> {
        let scope = namespace.or(ctx.watch_namespace.as_deref());
        let list = K::api(ctx.client.clone(), scope)
            .list(&ListParams::default())
            .await?;
        Ok(list
            .items
            .into_iter()
            .filter(|o| o.finalizers().iter().any(|f| f == FINALIZER))
            .filter(|o| o.references().iter().any(|(k, n)| *k == kind && n == name))
            .map(|o| {
                format!(
                    "{} {}/{}",
                    K::kind(&()),
                    o.namespace().unwrap_or_default(),
                    o.name_any()
                )
            })
            .collect())
    }
    let mut all = of::<Workspace>(ctx, namespace, kind, name).await?;
    all.extend(of::<ComputeIdentity>(ctx, namespace, kind, name).await?);
    all.extend(of::<Datastore>(ctx, namespace, kind, name).await?);
    all.extend(of::<RegistryConnection>(ctx, namespace, kind, name).await?);
    Ok(all)
}

/// Whether `namespace` is being deleted.
async fn terminating(ctx: &Context, namespace: &str) -> Result<bool, Error> {
    Ok(Api::<Namespace>::all(ctx.client.clone())
        .get_opt(namespace)
        .await?
        .is_none_or(|n| n.meta().deletion_timestamp.is_some()))
}

async fn set_finalizer(api: &Api<Secret>, secret: &Secret, on: bool) -> Result<(), Error> {
    let list = secret.finalizers().to_vec();
    let has = list.iter().any(|f| f == SECRET_FINALIZER);
    if has == on {
        return Ok(());
    }
    let patch = if on {
        if secret.meta().finalizers.is_none() {
            serde_json::json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": [SECRET_FINALIZER]},
            ])
        } else {
            serde_json::json!([
                {"op": "test", "path": "/metadata/finalizers", "value": list},
                {"op": "add", "path": "/metadata/finalizers/-", "value": SECRET_FINALIZER},
            ])
        }
    } else {
        let index = list
            .iter()
            .position(|f| f == SECRET_FINALIZER)
            .unwrap_or_default();
        serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": list},
            {"op": "remove", "path": format!("/metadata/finalizers/{index}")},
        ])
    };
    let patch: json_patch::Patch = serde_json::from_value(patch)?;
    match api
        .patch(
            &secret.name_any(),
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Gone meanwhile, or the list changed (the next reconcile looks again).
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 422 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Keeps the credential's Secrets readable through a namespace deletion: each gets the finalizer
/// while the credential lives; a Secret deleted on its own (not with its namespace) is let go at
/// once. `release` (the credential itself goes) lets every one go.
pub async fn guard_secrets(
    ctx: &Context,
    namespace: &str,
    names: &[String],
    release: bool,
) -> Result<(), Error> {
    let api = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    for name in names {
        let Some(secret) = api.get_opt(name).await? else {
            continue;
        };
        let deleting = secret.meta().deletion_timestamp.is_some();
        let keep = !release && (!deleting || terminating(ctx, namespace).await?);
        // A finalizer cannot be added to an object already being deleted.
        if keep && deleting && !secret.finalizers().iter().any(|f| f == SECRET_FINALIZER) {
            continue;
        }
        set_finalizer(&api, &secret, keep).await?;
    }
    Ok(())
}
