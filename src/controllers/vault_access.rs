//! Key vaults that authorize data actions with access policies instead of Azure RBAC. The Azure ML
//! documents grant a data-plane role on an RBAC vault and an access policy on the others; the
//! operator reads the vault's `enableRbacAuthorization` to tell which. On an access-policy vault it
//! adds an entry for the principal (recorded before it is written), uses an entry someone else made
//! when that already allows enough, and otherwise says exactly what is missing and how to grant it.
//! An access policy carries no tag, so an entry counts as the operator's only while it holds
//! exactly what one of the profiles below gives: one edited by someone else is theirs and stays.

use super::ledger::{Ledger, held_elsewhere};
use super::{Context, Error, Reconciled};
use crate::api::conditions::Reason;
use crate::api::*;
use crate::azure::AzureError;
use crate::azure::arm::ArmClient;
use crate::azure::models::ml_api_versions::KEY_VAULT;
use crate::azure::models::{AccessPolicyEntry, AccessPolicyPermissions, KeyVault};

/// The permissions one kind of grant gives, per object type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Key permissions.
    pub keys: &'static [&'static str],
    /// Secret permissions.
    pub secrets: &'static [&'static str],
    /// Certificate permissions.
    pub certificates: &'static [&'static str],
}

/// A user-assigned workspace identity on an access-policy vault: "any access policy permissions
/// besides purge operations" (the AML role table), i.e. every key, secret and certificate
/// permission but `purge`.
pub const WORKSPACE_IDENTITY: Profile = Profile {
    keys: &[
        "get",
        "list",
        "update",
        "create",
        "import",
        "delete",
        "recover",
        "backup",
        "restore",
        "decrypt",
        "encrypt",
        "unwrapKey",
        "wrapKey",
        "verify",
        "sign",
        "release",
        "rotate",
        "getrotationpolicy",
        "setrotationpolicy",
    ],
    secrets: &[
        "get", "list", "set", "delete", "recover", "backup", "restore",
    ],
    certificates: &[
        "get",
        "list",
        "update",
        "create",
        "import",
        "delete",
        "recover",
        "backup",
        "restore",
        "managecontacts",
        "manageissuers",
        "getissuers",
        "listissuers",
        "setissuers",
        "deleteissuers",
    ],
};

/// Reading secrets: the documents' access-policy variant of Key Vault Secrets User ("a new policy
/// that grants the get operation for secrets").
pub const SECRETS_READER: Profile = Profile {
    keys: &[],
    secrets: &["get"],
    certificates: &[],
};

/// Every profile the operator writes (what tells its entries from others').
const PROFILES: &[Profile] = &[WORKSPACE_IDENTITY, SECRETS_READER];

impl Profile {
    fn permissions(&self) -> AccessPolicyPermissions {
        let owned = |list: &[&str]| list.iter().map(|p| (*p).to_owned()).collect();
        AccessPolicyPermissions {
            keys: owned(self.keys),
            secrets: owned(self.secrets),
            certificates: owned(self.certificates),
            storage: Vec::new(),
        }
    }

    /// What `have` lacks of this profile (`all` covers a whole type).
    fn missing(&self, have: &AccessPolicyPermissions) -> AccessPolicyPermissions {
        let lacking = |want: &[&str], have: &[String]| -> Vec<String> {
            let holds = |p: &str| have.iter().any(|h| h.eq_ignore_ascii_case(p));
            if holds("all") {
                return Vec::new();
            }
            want.iter()
                .filter(|w| !holds(w))
                .map(|w| (*w).to_owned())
                .collect()
        };
        AccessPolicyPermissions {
            keys: lacking(self.keys, &have.keys),
            secrets: lacking(self.secrets, &have.secrets),
            certificates: lacking(self.certificates, &have.certificates),
            storage: Vec::new(),
        }
    }

    /// Whether `have` is exactly this profile (order and case aside).
    fn is(&self, have: &AccessPolicyPermissions) -> bool {
        let same = |want: &[&str], have: &[String]| {
            want.len() == have.len()
                && want
                    .iter()
                    .all(|w| have.iter().any(|h| h.eq_ignore_ascii_case(w)))
        };
        same(self.keys, &have.keys)
            && same(self.secrets, &have.secrets)
            && same(self.certificates, &have.certificates)
            && have.storage.is_empty()
    }
}

fn is_empty(p: &AccessPolicyPermissions) -> bool {
    p.keys.is_empty() && p.secrets.is_empty() && p.certificates.is_empty()
}

/// Whether the vault authorizes data actions with Azure RBAC. A vault created without the
/// property uses access policies (ARM's documented default is `false`).
pub fn uses_rbac(vault: &KeyVault) -> bool {
    vault.properties.enable_rbac_authorization == Some(true)
}

/// The vault `id` as Resource Manager reports it (a recent read shared by the objects that name
/// it); `None` when it does not exist.
pub async fn read(arm: &ArmClient, id: &str) -> Result<Option<KeyVault>, AzureError> {
    arm.get_recent(id, KEY_VAULT).await
}

/// The vault of a vault or vault-secret id (`…/providers/Microsoft.KeyVault/vaults/{name}[/secrets/…]`).
pub fn vault_of(id: &str) -> &str {
    const VAULTS: &str = "/providers/microsoft.keyvault/vaults/";
    let Some(at) = id.to_ascii_lowercase().find(VAULTS) else {
        return id;
    };
    let name_at = at + VAULTS.len();
    let end = id[name_at..].find('/').map_or(id.len(), |i| name_at + i);
    &id[..end]
}

/// The record of `principal`'s entry on vault `vault_id`.
fn record_entry(vault_id: &str, principal: &str) -> AzureResource {
    AzureResource::new(
        AzureResourceKind::VaultAccessPolicy,
        format!(
            "{vault_id}/accessPolicies/{}",
            principal.to_ascii_lowercase()
        ),
    )
}

fn vault_name(vault_id: &str) -> &str {
    vault_id.rsplit('/').next().unwrap_or(vault_id)
}

/// The `az` command that grants `permissions` to `principal` by hand.
fn set_policy_command(vault_id: &str, principal: &str, p: &AccessPolicyPermissions) -> String {
    let mut command = format!(
        "az keyvault set-policy --name {} --object-id {principal}",
        vault_name(vault_id)
    );
    for (flag, list) in [
        ("--key-permissions", &p.keys),
        ("--secret-permissions", &p.secrets),
        ("--certificate-permissions", &p.certificates),
    ] {
        if !list.is_empty() {
            command.push_str(&format!(" {flag} {}", list.join(" ")));
        }
    }
    command
}

fn describe(p: &AccessPolicyPermissions) -> String {
    [
        ("keys", &p.keys),
        ("secrets", &p.secrets),
        ("certificates", &p.certificates),
    ]
    .iter()
    .filter(|(_, l)| !l.is_empty())
    .map(|(t, l)| format!("{t}: {}", l.join(", ")))
    .collect::<Vec<_>>()
    .join("; ")
}

/// The principal's own entry (a compound entry, with an application id, does not let the principal
/// act alone).
fn find<'a>(vault: &'a KeyVault, principal: &str) -> Option<&'a AccessPolicyEntry> {
    vault
        .properties
        .access_policies
        .iter()
        .find(|p| p.object_id.eq_ignore_ascii_case(principal) && p.application_id.is_none())
}

/// Whether an entry holds exactly one of the operator's profiles.
fn is_profile(p: &AccessPolicyPermissions) -> bool {
    PROFILES.iter().any(|profile| profile.is(p))
}

/// Ensures `principal` may do what `profile` gives on the access-policy vault `vault_id`
/// (`cached`: a recent read of it). An entry counts as the operator's when it holds exactly a
/// profile and this or another live object records it; the operator's is shared (held by every
/// object that relies on it) and widened when needed, anyone else's is used when it allows
/// enough and otherwise reported. `Err` carries the reason and a message that says what to grant.
#[allow(clippy::too_many_arguments)]
pub async fn ensure<K: Reconciled>(
    ctx: &Context,
    obj: &K,
    ledger: &mut Ledger,
    arm: &ArmClient,
    vault_id: &str,
    cached: &KeyVault,
    principal: &str,
    profile: &Profile,
) -> Result<Result<(), (Reason, String)>, Error> {
    let entry = record_entry(vault_id, principal);
    // At rest: the entry this object holds, still exactly the operator's and enough.
    if ledger.holds(&entry)
        && find(cached, principal).is_some_and(|e| {
            is_profile(&e.permissions) && is_empty(&profile.missing(&e.permissions))
        })
    {
        ledger.want(entry);
        return Ok(Ok(()));
    }
    // Anything else is decided on a fresh read.
    arm.forget(vault_id);
    let name = vault_name(vault_id);
    let vault = match arm.get::<KeyVault>(vault_id, KEY_VAULT).await {
        Ok(Some(vault)) => vault,
        Ok(None) => {
            return Ok(Err((
                Reason::NotFound,
                format!("key vault {vault_id} does not exist"),
            )));
        }
        Err(e) => {
            return Ok(Err((e.reason(), format!("reading key vault {name}: {e}"))));
        }
    };
    let existing = find(&vault, principal);
    let ours = match existing {
        Some(e) if is_profile(&e.permissions) => {
            let uid = obj.meta().uid.clone().unwrap_or_default();
            ledger.holds(&entry) || held_elsewhere(ctx, &uid, &entry).await?
        }
        _ => false,
    };
    if let Some(existing) = existing {
        let lacking = profile.missing(&existing.permissions);
        if is_empty(&lacking) {
            if ours {
                ledger.want(entry);
            } else {
                // Someone else's (or changed by someone since): used, never removed.
                ledger.forget(&entry);
            }
            return Ok(Ok(()));
        }
        if !ours {
            ledger.forget(&entry);
            return Ok(Err((
                Reason::AccessPolicyIncomplete,
                format!(
                    "key vault {name} authorizes with access policies, and the access policy of principal {principal} there, which the operator did not make (or someone changed since), lacks {}: grant them (`{}`) or switch the vault to Azure RBAC",
                    describe(&lacking),
                    set_policy_command(vault_id, principal, &lacking)
                ),
            )));
        }
    }
    let Some(tenant) = vault.properties.tenant_id.clone() else {
        return Ok(Err((
            Reason::UnexpectedResponse,
            format!(
                "key vault {name} reports no tenantId: the access policy cannot name the principal's tenant"
            ),
        )));
    };
    let wanted = profile.permissions();
    ledger.record(ctx, obj, &[entry]).await?;
    // `add` merges into the operator's own entry (a wider profile includes the narrower one).
    let body = serde_json::json!({"properties": {"accessPolicies": [AccessPolicyEntry {
        tenant_id: tenant,
        object_id: principal.to_owned(),
        application_id: None,
        permissions: wanted.clone(),
    }]}});
    let written = arm
        .put::<_, serde_json::Value>(&format!("{vault_id}/accessPolicies/add"), KEY_VAULT, &body)
        .await;
    arm.forget(vault_id);
    match written {
        Ok(_) => Ok(Ok(())),
        Err(e) => Ok(Err((
            e.reason(),
            format!(
                "adding an access policy for principal {principal} to key vault {name}: {e}; to grant it by hand: `{}`",
                set_policy_command(vault_id, principal, &wanted)
            ),
        ))),
    }
}

/// Removes a recorded entry if it lies within the scopes the object may act in (an access policy
/// names no namespace, so a record cannot reach beyond them) and still holds exactly one of the
/// operator's profiles; `Ok(false)` when it is not the operator's to remove. A vault or entry
/// already gone counts as removed.
pub async fn remove(arm: &ArmClient, id: &str) -> Result<bool, AzureError> {
    let Some((vault_id, principal)) = id.rsplit_once("/accessPolicies/") else {
        return Ok(false);
    };
    if !arm.acting_scopes().admits(vault_id) {
        return Ok(false);
    }
    let Some(vault) = arm.get::<KeyVault>(vault_id, KEY_VAULT).await? else {
        return Ok(true);
    };
    let Some(existing) = find(&vault, principal) else {
        return Ok(true);
    };
    if !is_profile(&existing.permissions) {
        return Ok(false);
    }
    let body = serde_json::json!({"properties": {"accessPolicies": [existing]}});
    let removed = arm
        .put::<_, serde_json::Value>(
            &format!("{vault_id}/accessPolicies/remove"),
            KEY_VAULT,
            &body,
        )
        .await;
    arm.forget(vault_id);
    removed.map(|_| true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perms(keys: &[&str], secrets: &[&str]) -> AccessPolicyPermissions {
        AccessPolicyPermissions {
            keys: keys.iter().map(|s| s.to_string()).collect(),
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
            certificates: Vec::new(),
            storage: Vec::new(),
        }
    }

    #[test]
    fn missing_permissions_are_named_and_all_covers_a_type() {
        let lacking = SECRETS_READER.missing(&perms(&["get"], &["list"]));
        assert_eq!(lacking.secrets, vec!["get"]);
        assert!(is_empty(&SECRETS_READER.missing(&perms(&[], &["ALL"]))));
        assert!(is_empty(&SECRETS_READER.missing(&perms(&[], &["Get"]))));
        let workspace = WORKSPACE_IDENTITY.missing(&perms(&["all"], &["all"]));
        assert_eq!(
            workspace.certificates.len(),
            WORKSPACE_IDENTITY.certificates.len()
        );
        assert!(workspace.keys.is_empty() && workspace.secrets.is_empty());
    }

    #[test]
    fn only_an_entry_holding_exactly_a_profile_is_the_operators() {
        assert!(SECRETS_READER.is(&perms(&[], &["GET"])));
        assert!(!SECRETS_READER.is(&perms(&[], &["get", "list"])));
        assert!(!WORKSPACE_IDENTITY.is(&perms(&["get"], &["get"])));
        let mut with_storage = perms(&[], &["get"]);
        with_storage.storage = vec!["get".into()];
        assert!(
            !SECRETS_READER.is(&with_storage),
            "storage permissions make it someone else's"
        );
        assert!(WORKSPACE_IDENTITY.is(&WORKSPACE_IDENTITY.permissions()));
        // No purge anywhere in what the workspace identity gets.
        let all = WORKSPACE_IDENTITY.permissions();
        assert!(
            [all.keys, all.secrets, all.certificates]
                .iter()
                .flatten()
                .all(|p| !p.eq_ignore_ascii_case("purge") && !p.eq_ignore_ascii_case("all"))
        );
    }

    #[test]
    fn the_hand_grant_names_the_vault_principal_and_each_permission() {
        let command = set_policy_command(
            "/subscriptions/s/resourceGroups/r/providers/Microsoft.KeyVault/vaults/kv-a",
            "p-1",
            &perms(&[], &["get"]),
        );
        assert_eq!(
            command,
            "az keyvault set-policy --name kv-a --object-id p-1 --secret-permissions get"
        );
    }

    #[test]
    fn the_vault_of_a_secret_is_found_by_its_provider_segment() {
        let vault =
            "/subscriptions/s/resourceGroups/secrets/providers/Microsoft.KeyVault/vaults/kv-a";
        assert_eq!(vault_of(vault), vault);
        assert_eq!(vault_of(&format!("{vault}/secrets/conn")), vault);
        assert_eq!(vault_of("not-an-id"), "not-an-id");
    }

    #[test]
    fn a_vault_without_the_property_uses_access_policies() {
        let vault: KeyVault =
            serde_json::from_value(serde_json::json!({"properties": {"tenantId": "t"}})).unwrap();
        assert!(!uses_rbac(&vault));
        let vault: KeyVault = serde_json::from_value(
            serde_json::json!({"properties": {"enableRbacAuthorization": true}}),
        )
        .unwrap();
        assert!(uses_rbac(&vault));
    }
}
