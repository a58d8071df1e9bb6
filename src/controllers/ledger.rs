//! The record of what the operator made in Azure for an object (`status.azureResources`): written
//! before the Azure object is created, so a crash in between leaves nothing unrecorded; diffed
//! against what the spec wants now, so what left the spec is revoked; walked on delete. The record
//! alone never justifies a removal: each Azure object must also show it is the operator's (its
//! deterministic name and description, its owner tag, a subject naming this namespace), and no
//! other live object may still hold it (shared role assignments and identities outlive all but the
//! last holder).

use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams};

use super::{Context, Error, Reconciled};
use crate::api::*;
use crate::azure::AzureError;
use crate::azure::arm::ArmClient;
use crate::azure::authorization;
use crate::azure::models::ml_api_versions::MACHINE_LEARNING;
use crate::azure::models::{self, api_versions};

/// Tag (workspace, datastore, identity) or connection metadata key the operator writes on what it
/// creates: the owning object's uid. Azure tag names allow no `/`, so no `amlidentity.io/` prefix.
pub const OWNER_TAG: &str = "aml-identity-operator-owner";

/// What an object has recorded, and what this pass wants.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    recorded: Vec<AzureResource>,
    wanted: Vec<AzureResource>,
}

fn insert(list: &mut Vec<AzureResource>, entry: &AzureResource) -> bool {
    if list.iter().any(|r| r.same(entry)) {
        return false;
    }
    list.push(entry.clone());
    list.sort();
    true
}

impl Ledger {
    /// The record of `obj`.
    pub fn of<K: Reconciled>(obj: &K) -> Self {
        Self {
            recorded: obj.record().to_vec(),
            wanted: Vec::new(),
        }
    }

    /// Whether `entry` is recorded.
    pub fn holds(&self, entry: &AzureResource) -> bool {
        self.recorded.iter().any(|r| r.same(entry))
    }

    /// Declares that this pass wants `entry`, which exists already and is the operator's (made
    /// for this or another object): it is held from now on. Everything recorded and not wanted in
    /// a pass is stale.
    pub fn want(&mut self, entry: AzureResource) {
        insert(&mut self.recorded, &entry);
        insert(&mut self.wanted, &entry);
    }

    /// Records `entries` in the object's status now, before they are created in Azure: one status
    /// patch, and none when all are recorded already.
    pub async fn record<K: Reconciled>(
        &mut self,
        ctx: &Context,
        obj: &K,
        entries: &[AzureResource],
    ) -> Result<(), Error> {
        let mut changed = false;
        for entry in entries {
            changed |= insert(&mut self.recorded, entry);
            insert(&mut self.wanted, entry);
        }
        if changed {
            self.write(ctx, obj).await?;
        }
        Ok(())
    }

    /// Drops `entry` from the record (it turned out not to be the operator's to keep).
    pub fn forget(&mut self, entry: &AzureResource) {
        self.recorded.retain(|r| !r.same(entry));
        self.wanted.retain(|r| !r.same(entry));
    }

    async fn write<K: Reconciled>(&self, ctx: &Context, obj: &K) -> Result<(), Error> {
        let api = K::api(ctx.client.clone(), obj.namespace().as_deref());
        let patch = serde_json::json!({"status": {"azureResources": self.recorded}});
        api.patch_status(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        Ok(())
    }

    /// Recorded entries this pass did not want.
    pub fn stale(&self) -> Vec<AzureResource> {
        self.recorded
            .iter()
            .filter(|r| !self.wanted.iter().any(|w| w.same(r)))
            .cloned()
            .collect()
    }

    /// Every recorded entry.
    pub fn recorded(&self) -> &[AzureResource] {
        &self.recorded
    }

    /// The record as a status field value.
    pub fn field(&self) -> serde_json::Value {
        serde_json::to_value(&self.recorded).unwrap_or_default()
    }

    /// Removes `entries` from Azure where they are the operator's and no other live object holds
    /// them, then from the record: federated credentials first (they are access), the workspace
    /// last (the others live below it). Returns what could not be removed, with why.
    pub async fn revoke<K: Reconciled>(
        &mut self,
        ctx: &Context,
        obj: &K,
        arm: &ArmClient,
        entries: &[AzureResource],
    ) -> Result<Vec<String>, Error> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut entries = entries.to_vec();
        entries.sort_by_key(|e| e.kind);
        let mut holders: Option<Vec<AzureResource>> = None;
        let mut left = Vec::new();
        let namespace = obj.namespace().unwrap_or_default();
        let uid = obj.meta().uid.clone().unwrap_or_default();
        for entry in &entries {
            let shareable = matches!(
                entry.kind,
                AzureResourceKind::RoleAssignment
                    | AzureResourceKind::VaultAccessPolicy
                    | AzureResourceKind::UserAssignedIdentity
                    | AzureResourceKind::FederatedIdentityCredential
            );
            if shareable {
                if holders.is_none() {
                    holders = Some(held_by_others(ctx, &uid).await?);
                }
                if holders.iter().flatten().any(|h| h.same(entry)) {
                    // Another object still needs it: the last holder removes it.
                    self.forget(entry);
                    continue;
                }
            }
            match remove(arm, entry, &namespace, &uid).await {
                Ok(removed) => {
                    if !removed {
                        tracing::info!(kind = ?entry.kind, id = %entry.id, "not the operator's: left in Azure, dropped from the record");
                    }
                    self.forget(entry);
                }
                Err(e) => left.push(format!("{:?} {}: {e}", entry.kind, entry.id)),
            }
        }
        self.write(ctx, obj).await?;
        Ok(left)
    }
}

impl Ledger {
    /// Ensures `grants`, reading first (one GET each at steady state), recording the operator's own
    /// assignments before making them; one that someone else made is used and never recorded.
    pub async fn ensure_grants<K: Reconciled>(
        &mut self,
        ctx: &Context,
        obj: &K,
        arm: &ArmClient,
        grants: &[authorization::Grant],
    ) -> Result<Result<(), AzureError>, Error> {
        let mut missing = Vec::new();
        for grant in grants {
            let entry = AzureResource::new(AzureResourceKind::RoleAssignment, grant.id());
            match authorization::find(arm, grant).await {
                Ok(Some(authorization::Granted::Ours)) => self.want(entry),
                Ok(Some(authorization::Granted::Theirs)) => {}
                Ok(None) => missing.push((grant, entry)),
                Err(e) => return Ok(Err(e)),
            }
        }
        let entries: Vec<AzureResource> = missing.iter().map(|(_, e)| e.clone()).collect();
        self.record(ctx, obj, &entries).await?;
        for (grant, entry) in missing {
            match authorization::create(arm, grant).await {
                Ok(authorization::Granted::Ours) => {}
                Ok(authorization::Granted::Theirs) => self.forget(&entry),
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(()))
    }
}

/// Removes one recorded object if Azure shows it is the operator's; `Ok(false)` when it is not
/// (left alone). Already gone counts as removed.
async fn remove(
    arm: &ArmClient,
    entry: &AzureResource,
    namespace: &str,
    uid: &str,
) -> Result<bool, AzureError> {
    let owned_by = |tags: &std::collections::BTreeMap<String, String>| {
        tags.get(OWNER_TAG).is_some_and(|v| v == uid)
    };
    match entry.kind {
        AzureResourceKind::RoleAssignment => authorization::remove(arm, &entry.id).await,
        AzureResourceKind::VaultAccessPolicy => super::vault_access::remove(arm, &entry.id).await,
        AzureResourceKind::FederatedIdentityCredential => {
            let Some(fic) = arm
                .get::<models::FederatedIdentityCredential>(
                    &entry.id,
                    api_versions::MANAGED_IDENTITY,
                )
                .await?
            else {
                return Ok(true);
            };
            // It trusts a ServiceAccount of this namespace: removing it takes away only this
            // namespace's own access.
            if !fic
                .properties
                .subject
                .starts_with(&format!("system:serviceaccount:{namespace}:"))
            {
                return Ok(false);
            }
            arm.delete(&entry.id, api_versions::MANAGED_IDENTITY)
                .await
                .map(|_| true)
        }
        AzureResourceKind::UserAssignedIdentity => {
            let Some(identity) = arm
                .get::<models::UserAssignedIdentity>(&entry.id, api_versions::MANAGED_IDENTITY)
                .await?
            else {
                return Ok(true);
            };
            // Created by the operator (for this or an earlier holder), and no holder is left.
            if !identity.tags.contains_key(OWNER_TAG) {
                return Ok(false);
            }
            arm.delete(&entry.id, api_versions::MANAGED_IDENTITY)
                .await
                .map(|_| true)
        }
        AzureResourceKind::Workspace => {
            let Some(ws) = arm
                .get::<models::Workspace>(&entry.id, MACHINE_LEARNING)
                .await?
            else {
                return Ok(true);
            };
            if !owned_by(&ws.tags) {
                return Ok(false);
            }
            arm.delete_and_wait(&entry.id, MACHINE_LEARNING)
                .await
                .map(|_| true)
        }
        AzureResourceKind::Datastore => {
            let Some(ds) = arm
                .get::<models::Datastore>(&entry.id, MACHINE_LEARNING)
                .await?
            else {
                return Ok(true);
            };
            if !owned_by(&ds.properties.tags) {
                return Ok(false);
            }
            arm.delete(&entry.id, MACHINE_LEARNING).await.map(|_| true)
        }
        AzureResourceKind::WorkspaceConnection => {
            let Some(c) = arm
                .get::<models::WorkspaceConnection>(&entry.id, MACHINE_LEARNING)
                .await?
            else {
                return Ok(true);
            };
            if !owned_by(&c.properties.metadata) {
                return Ok(false);
            }
            arm.delete(&entry.id, MACHINE_LEARNING).await.map(|_| true)
        }
    }
}

/// Whether a live object other than `uid` records `entry`: evidence, with what Azure shows, that
/// an untagged Azure object (a key vault access policy) is the operator's.
pub async fn held_elsewhere(
    ctx: &Context,
    uid: &str,
    entry: &AzureResource,
) -> Result<bool, Error> {
    Ok(held_by_others(ctx, uid)
        .await?
        .iter()
        .any(|h| h.same(entry)))
}

/// Everything recorded by the operator's live objects other than `uid` (objects being deleted
/// release what they hold): the holders a shared Azure object waits for.
async fn held_by_others(ctx: &Context, uid: &str) -> Result<Vec<AzureResource>, Error> {
    async fn of<K: Reconciled>(ctx: &Context, uid: &str) -> Result<Vec<AzureResource>, Error> {
        let api = K::api(ctx.client.clone(), ctx.watch_namespace.as_deref());
        let list = api.list(&ListParams::default()).await?;
        Ok(list
            .items
            .into_iter()
            .filter(|o| {
                o.meta().uid.as_deref() != Some(uid) && o.meta().deletion_timestamp.is_none()
            })
            .flat_map(|o| o.record().to_vec())
            .collect())
    }
    let mut all = of::<Workspace>(ctx, uid).await?;
    all.extend(of::<ComputeIdentity>(ctx, uid).await?);
    all.extend(of::<Datastore>(ctx, uid).await?);
    all.extend(of::<RegistryConnection>(ctx, uid).await?);
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: AzureResourceKind, id: &str) -> AzureResource {
        AzureResource::new(kind, id)
    }

    #[test]
    fn stale_is_recorded_minus_wanted_case_blind() {
        let mut ledger = Ledger {
            recorded: vec![
                entry(AzureResourceKind::RoleAssignment, "/subscriptions/s/A"),
                entry(
                    AzureResourceKind::FederatedIdentityCredential,
                    "/subscriptions/s/F",
                ),
            ],
            wanted: Vec::new(),
        };
        ledger.want(entry(
            AzureResourceKind::RoleAssignment,
            "/SUBSCRIPTIONS/S/a",
        ));
        assert_eq!(
            ledger.stale(),
            vec![entry(
                AzureResourceKind::FederatedIdentityCredential,
                "/subscriptions/s/F"
            )]
        );
        ledger.forget(&entry(
            AzureResourceKind::FederatedIdentityCredential,
            "/subscriptions/s/f",
        ));
        assert!(ledger.stale().is_empty());
        assert_eq!(ledger.recorded().len(), 1);
    }
}
