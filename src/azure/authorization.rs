//! Azure role assignments as the operator makes them: built-in role ids, one deterministic name per
//! (scope, role, principal) so re-running never duplicates, `RoleAssignmentExists` under another
//! name counted as granted (and then not ours), and removal only of assignments that carry the
//! operator's name and description.

use super::arm::ArmClient;
use super::error::AzureError;
use super::models::{self, api_versions};

/// Built-in role definition ids.
pub mod roles {
    /// Contributor.
    pub const CONTRIBUTOR: &str = "b24988ac-6180-42a0-ab88-20f7382dd24c";
    /// Storage Blob Data Contributor.
    pub const STORAGE_BLOB_DATA_CONTRIBUTOR: &str = "ba92f5b4-2d11-453d-a403-e96b0029c9fe";
    /// Storage Blob Data Reader.
    pub const STORAGE_BLOB_DATA_READER: &str = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1";
    /// Key Vault Administrator.
    pub const KEY_VAULT_ADMINISTRATOR: &str = "00482a5a-887f-4fb3-b363-3b7fe8e74483";
    /// Key Vault Secrets User.
    pub const KEY_VAULT_SECRETS_USER: &str = "4633458b-17de-408a-b874-0445c86b69e6";
    /// AcrPull.
    pub const ACR_PULL: &str = "7f951dda-4ed3-4680-a7ca-43fe172d538d";
    /// Managed Identity Operator.
    pub const MANAGED_IDENTITY_OPERATOR: &str = "f1a07417-d97a-45cb-824c-7a7467783830";
}

/// The description on every assignment the operator makes: a human in the portal sees who owns it,
/// and cleanup removes nothing without it.
pub const DESCRIPTION: &str = "Managed by aml-identity-operator";

/// A role granted to a principal at a scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// ARM scope (a resource id).
    pub scope: String,
    /// Role definition GUID.
    pub role: &'static str,
    /// Principal (object) id.
    pub principal: String,
}

impl Grant {
    /// A grant of `role` at `scope` to `principal`.
    pub fn new(scope: impl Into<String>, role: &'static str, principal: impl Into<String>) -> Self {
        Self {
            scope: scope.into(),
            role,
            principal: principal.into(),
        }
    }

    /// The assignment's deterministic name.
    pub fn name(&self) -> String {
        assignment_name(&self.scope, self.role, &self.principal)
    }

    /// The assignment's ARM id: `{scope}/providers/Microsoft.Authorization/roleAssignments/{name}`.
    pub fn id(&self) -> String {
        format!(
            "{}/providers/Microsoft.Authorization/roleAssignments/{}",
            self.scope,
            self.name()
        )
    }
}

/// The deterministic role assignment name of (scope, role, principal).
pub fn assignment_name(scope: &str, role: &str, principal: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!(
            "{}|{role}|{}",
            scope.to_ascii_lowercase(),
            principal.to_ascii_lowercase()
        )
        .as_bytes(),
    )
    .to_string()
}

/// Whether the grant is in place, and whether it is the operator's own assignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granted {
    /// The operator's assignment (its deterministic name) exists or was just made.
    Ours,
    /// Someone else's assignment grants the same: it is left alone, never removed.
    Theirs,
}

/// Whether the grant is in place, reading only: the operator's assignment (one GET, all a steady
/// state costs), else an equal assignment under another name at exactly that scope.
pub async fn find(arm: &ArmClient, grant: &Grant) -> Result<Option<Granted>, AzureError> {
    let path = grant.id();
    let current: Option<models::RoleAssignment> =
        arm.get(&path, api_versions::AUTHORIZATION).await?;
    if current.is_some() {
        return Ok(Some(Granted::Ours));
    }
    let filter = format!("principalId eq '{}'", grant.principal);
    let existing: Vec<models::RoleAssignment> = arm
        .list(
            &format!(
                "{}/providers/Microsoft.Authorization/roleAssignments",
                grant.scope
            ),
            api_versions::AUTHORIZATION,
            &[("$filter", filter.as_str())],
        )
        .await?;
    Ok(classify(grant, &existing))
}

/// Which of `listed` grants the same as `grant` at exactly its scope. The operator's own name among
/// them is the operator's: another of its passes (for another object holding the same grant) can
/// make it between the GET and the LIST, and taking it for someone else's would leave it unheld.
fn classify(grant: &Grant, listed: &[models::RoleAssignment]) -> Option<Granted> {
    let ours = grant.name();
    let mut equal = listed.iter().filter(|ra| {
        let p = &ra.properties;
        p.role_definition_id
            .rsplit('/')
            .next()
            .is_some_and(|r| r.eq_ignore_ascii_case(grant.role))
            && p.principal_id.eq_ignore_ascii_case(&grant.principal)
            && p.scope.as_deref().is_some_and(|s| {
                s.trim_end_matches('/')
                    .eq_ignore_ascii_case(grant.scope.trim_end_matches('/'))
            })
    });
    let mut found = None;
    for ra in equal.by_ref() {
        if ra
            .name
            .as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case(&ours))
        {
            return Some(Granted::Ours);
        }
        found = Some(Granted::Theirs);
    }
    found
}

/// Makes the operator's assignment; an equal one made meanwhile under another name counts as
/// granted, and is not ours.
pub async fn create(arm: &ArmClient, grant: &Grant) -> Result<Granted, AzureError> {
    let path = grant.id();
    let subscription = grant.scope.split('/').nth(2).unwrap_or_default();
    let body = models::RoleAssignment {
        properties: models::RoleAssignmentProperties {
            role_definition_id: format!(
                "/subscriptions/{subscription}/providers/Microsoft.Authorization/roleDefinitions/{}",
                grant.role
            ),
            principal_id: grant.principal.clone(),
            principal_type: Some("ServicePrincipal".into()),
            scope: None,
            description: Some(DESCRIPTION.into()),
        },
        ..Default::default()
    };
    match arm
        .put::<_, models::RoleAssignment>(&path, api_versions::AUTHORIZATION, &body)
        .await
    {
        Ok(_) => Ok(Granted::Ours),
        Err(AzureError::Arm {
            status: 409, code, ..
        }) if code == "RoleAssignmentExists" => Ok(Granted::Theirs),
        Err(e) => Err(e),
    }
}

/// Removes the assignment at `id` if it is the operator's: its name is the deterministic name of
/// the scope, role and principal ARM reports for it, and it carries the operator's description.
/// Gone already counts as removed; someone else's is left and reported as `Ok(false)`.
pub async fn remove(arm: &ArmClient, id: &str) -> Result<bool, AzureError> {
    let Some(current) = arm
        .get::<models::RoleAssignment>(id, api_versions::AUTHORIZATION)
        .await?
    else {
        return Ok(true);
    };
    let p = &current.properties;
    let role = p
        .role_definition_id
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let scope = id
        .split("/providers/Microsoft.Authorization/roleAssignments/")
        .next()
        .unwrap_or_default();
    let name = id.rsplit('/').next().unwrap_or_default();
    let ours = assignment_name(scope, &role, &p.principal_id).eq_ignore_ascii_case(name)
        && p.description.as_deref() == Some(DESCRIPTION);
    if !ours {
        return Ok(false);
    }
    arm.delete(id, api_versions::AUTHORIZATION).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_equal_assignment_under_the_operators_own_name_is_the_operators() {
        let grant = Grant::new("/subscriptions/s/resourceGroups/rg", roles::ACR_PULL, "p");
        let listed = |name: &str, role: &str, scope: &str| models::RoleAssignment {
            id: None,
            name: Some(name.to_owned()),
            properties: models::RoleAssignmentProperties {
                role_definition_id: format!(
                    "/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/{role}"
                ),
                principal_id: "P".into(),
                principal_type: None,
                scope: Some(scope.to_owned()),
                description: None,
            },
        };
        let scope = "/subscriptions/s/resourceGroups/RG/";
        assert_eq!(classify(&grant, &[]), None);
        assert_eq!(
            classify(&grant, &[listed("someone-elses", roles::ACR_PULL, scope)]),
            Some(Granted::Theirs)
        );
        assert_eq!(
            classify(
                &grant,
                &[
                    listed("someone-elses", roles::ACR_PULL, scope),
                    listed(&grant.name().to_uppercase(), roles::ACR_PULL, scope)
                ]
            ),
            Some(Granted::Ours),
            "made by another pass of the operator between the GET and the LIST"
        );
        assert_eq!(
            classify(&grant, &[listed(&grant.name(), "other-role", scope)]),
            None,
            "another role grants nothing here"
        );
        assert_eq!(
            classify(
                &grant,
                &[listed(
                    "x",
                    roles::ACR_PULL,
                    "/subscriptions/s/resourceGroups/rg/x"
                )]
            ),
            None,
            "a narrower scope is not this grant"
        );
    }

    #[test]
    fn names_are_deterministic_and_case_blind() {
        let a = Grant::new("/subscriptions/S/resourceGroups/RG", roles::ACR_PULL, "P");
        let b = Grant::new("/subscriptions/s/resourcegroups/rg", roles::ACR_PULL, "p");
        assert_eq!(a.name(), b.name());
        assert_ne!(
            a.name(),
            Grant::new(
                "/subscriptions/s/resourcegroups/rg",
                roles::CONTRIBUTOR,
                "p"
            )
            .name()
        );
        assert!(a.id().ends_with(&format!("/roleAssignments/{}", a.name())));
    }
}
