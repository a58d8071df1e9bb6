//! Built-in Azure roles and the permission check ARM and the data planes apply.
//!
//! Role definition ids are the public built-in GUIDs; actions are the subset of each role's
//! definition that the emulated APIs need.

/// A built-in role.
pub struct Role {
    /// Role definition GUID.
    pub id: &'static str,
    /// Display name.
    pub name: &'static str,
    /// Control-plane actions (wildcards allowed).
    pub actions: &'static [&'static str],
    /// Control-plane actions excluded from `actions`.
    pub not_actions: &'static [&'static str],
    /// Data-plane actions.
    pub data_actions: &'static [&'static str],
}

/// The built-in roles the emulator knows.
pub const ROLES: &[Role] = &[
    Role {
        id: "8e3af657-a8ff-443c-a75c-2fe8c4bcd635",
        name: "Owner",
        actions: &["*"],
        not_actions: &[],
        data_actions: &[],
    },
    Role {
        id: "b24988ac-6180-42a0-ab88-20f7382dd24c",
        name: "Contributor",
        actions: &["*"],
        not_actions: &[
            "Microsoft.Authorization/*/Delete",
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/elevateAccess/Action",
        ],
        data_actions: &[],
    },
    Role {
        id: "acdd72a7-3385-48ef-bd42-f606fba81ae7",
        name: "Reader",
        actions: &["*/read"],
        not_actions: &[],
        data_actions: &[],
    },
    Role {
        id: "18d7d88d-d35e-4fb5-a5c3-7773c4c72c6c",
        name: "User Access Administrator",
        actions: &["*/read", "Microsoft.Authorization/*"],
        not_actions: &[],
        data_actions: &[],
    },
    Role {
        id: "f1a07417-d97a-45cb-824c-7a7467783830",
        name: "Managed Identity Operator",
        actions: &[
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/read",
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action",
        ],
        not_actions: &[],
        data_actions: &[],
    },
    Role {
        id: "e40ec5ca-96e0-45a2-b4ff-59039f2c2b59",
        name: "Managed Identity Contributor",
        actions: &["Microsoft.ManagedIdentity/userAssignedIdentities/*"],
        not_actions: &[],
        data_actions: &[],
    },
    Role {
        id: "7f951dda-4ed3-4680-a7ca-43fe172d538d",
        name: "AcrPull",
        actions: &["Microsoft.ContainerRegistry/registries/pull/read"],
        not_actions: &[],
        data_actions: &[],
    },
    Role {
        id: "8311e382-0749-4cb8-b61a-304f252e45ec",
        name: "AcrPush",
        actions: &[
            "Microsoft.ContainerRegistry/registries/pull/read",
            "Microsoft.ContainerRegistry/registries/push/write",
        ],
        not_actions: &[],
        data_actions: &[],
    },
    Role {
        id: "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
        name: "Storage Blob Data Reader",
        actions: &[
            "Microsoft.Storage/storageAccounts/blobServices/containers/read",
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        ],
        not_actions: &[],
        data_actions: &["Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"],
    },
    Role {
        id: "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
        name: "Storage Blob Data Contributor",
        actions: &[
            "Microsoft.Storage/storageAccounts/blobServices/containers/*",
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        ],
        not_actions: &[],
        data_actions: &["Microsoft.Storage/storageAccounts/blobServices/containers/blobs/*"],
    },
    Role {
        id: "17d1049b-9a84-46fb-8f53-869881c3d3ab",
        name: "Storage Account Contributor",
        actions: &["Microsoft.Storage/storageAccounts/*"],
        not_actions: &[],
        data_actions: &[],
    },
    Role {
        id: "4633458b-17de-408a-b874-0445c86b69e6",
        name: "Key Vault Secrets User",
        actions: &[],
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
        ],
    },
    Role {
        id: "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
        name: "Key Vault Secrets Officer",
        actions: &["Microsoft.KeyVault/vaults/*/read"],
        not_actions: &[],
        data_actions: &["Microsoft.KeyVault/vaults/secrets/*"],
    },
    Role {
        id: "00482a5a-887f-4fb3-b363-3b7fe8e74483",
        name: "Key Vault Administrator",
        actions: &["Microsoft.KeyVault/vaults/*/read"],
        not_actions: &[],
        data_actions: &["Microsoft.KeyVault/vaults/*"],
    },
    Role {
        id: "f6c7c914-8db3-469d-8ca1-694a8f32e121",
        name: "AzureML Data Scientist",
        actions: &[
            "Microsoft.MachineLearningServices/workspaces/*/read",
            "Microsoft.MachineLearningServices/workspaces/*/action",
        ],
        not_actions: &["Microsoft.MachineLearningServices/workspaces/computes/*/write"],
        data_actions: &[],
    },
];

/// A role by GUID, by the trailing GUID of a role definition id, or by display name.
pub fn role(reference: &str) -> Option<&'static Role> {
    let guid = reference.rsplit('/').next().unwrap_or(reference);
    ROLES
        .iter()
        .find(|r| r.id.eq_ignore_ascii_case(guid) || r.name.eq_ignore_ascii_case(reference))
}

/// Case-insensitive glob with `*` matching any run of characters; a `/*/` segment may also match
/// nothing, as Azure evaluates `userAssignedIdentities/*/assign/action` against
/// `userAssignedIdentities/assign/action`.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    glob(pattern, action) || (pattern.contains("/*/") && glob(&pattern.replace("/*/", "/"), action))
}

fn glob(pattern: &str, action: &str) -> bool {
    fn go(p: &[u8], a: &[u8]) -> bool {
        match p.split_first() {
            None => a.is_empty(),
            Some((b'*', rest)) => (0..=a.len()).any(|i| go(rest, &a[i..])),
            Some((c, rest)) => {
                a.first().is_some_and(|x| x.eq_ignore_ascii_case(c)) && go(rest, &a[1..])
            }
        }
    }
    go(pattern.as_bytes(), action.as_bytes())
}

/// Whether the role grants the action (control plane when `data` is false).
pub fn grants(role: &Role, action: &str, data: bool) -> bool {
    if data {
        return role.data_actions.iter().any(|p| action_matches(p, action));
    }
    role.actions.iter().any(|p| action_matches(p, action))
        && !role.not_actions.iter().any(|p| action_matches(p, action))
}

/// Whether `scope` contains `resource` (the same id or an ancestor), compared case-insensitively.
pub fn scope_contains(scope: &str, resource: &str) -> bool {
    let scope = scope.trim_end_matches('/').to_ascii_lowercase();
    let resource = resource.trim_end_matches('/').to_ascii_lowercase();
    scope.is_empty() || resource == scope || resource.starts_with(&format!("{scope}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contributor_cannot_write_role_assignments_but_owner_can() {
        let contributor = role("Contributor").unwrap();
        let owner = role("/subscriptions/x/providers/Microsoft.Authorization/roleDefinitions/8e3af657-a8ff-443c-a75c-2fe8c4bcd635").unwrap();
        let write = "Microsoft.Authorization/roleAssignments/write";
        assert!(!grants(contributor, write, false));
        assert!(grants(owner, write, false));
        assert!(grants(
            contributor,
            "Microsoft.ManagedIdentity/userAssignedIdentities/write",
            false
        ));
        assert!(!grants(
            role("Reader").unwrap(),
            "Microsoft.ManagedIdentity/userAssignedIdentities/write",
            false
        ));
        assert!(grants(
            role("Key Vault Secrets User").unwrap(),
            "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            true
        ));
        assert!(!grants(
            role("Key Vault Secrets User").unwrap(),
            "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            false
        ));
    }

    #[test]
    fn scopes_nest_on_segment_boundaries() {
        assert!(scope_contains(
            "/subscriptions/a/resourceGroups/rg",
            "/subscriptions/a/resourcegroups/RG/providers/x/y/z"
        ));
        assert!(!scope_contains(
            "/subscriptions/a/resourceGroups/rg",
            "/subscriptions/a/resourceGroups/rg2/providers/x/y/z"
        ));
    }
}
