//! `Workspace`: an Azure Machine Learning workspace, adopted or managed, and its `config.json`.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::*;
use super::rules::{CelRule, cel_rules};
use super::validation::{Validate, Violation, Violations};

/// AML workspace names: 3-33 letters, digits, `-` or `_`, starting with a letter or digit.
pub const WORKSPACE_NAME_PATTERN: &str = r"^[a-zA-Z0-9][a-zA-Z0-9_-]{2,32}$";

/// Whether the operator only reads the workspace or owns its configuration.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Management {
    /// Read the existing workspace and report it; never write it.
    #[default]
    Adopt,
    /// Create or update the workspace through ARM (GET, diff, PUT only on drift).
    Manage,
}

/// What happens in Azure when the object is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DeletionPolicy {
    /// Leave everything in Azure as it is.
    #[default]
    Retain,
    /// Delete what the operator created (for a managed workspace, the workspace itself).
    Delete,
}

/// Managed identity types of a workspace, as ARM spells them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum WorkspaceIdentityType {
    /// The workspace's own system-assigned identity.
    SystemAssigned,
    /// One or more user-assigned identities, one of them primary.
    UserAssigned,
    /// Both kinds.
    #[serde(rename = "SystemAssigned,UserAssigned")]
    SystemAssignedUserAssigned,
}

/// The workspace's managed identity.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = workspace_identity_rules)]
pub struct WorkspaceIdentity {
    /// `SystemAssigned`, `UserAssigned` or `SystemAssigned,UserAssigned`.
    #[serde(rename = "type")]
    pub type_: WorkspaceIdentityType,
    /// Resource ids of user-assigned identities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(regex(pattern = USER_ASSIGNED_IDENTITY_PATTERN)))]
    pub user_assigned_identities: Vec<String>,
    /// Which of `userAssignedIdentities` the workspace uses to reach its resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = USER_ASSIGNED_IDENTITY_PATTERN))]
    pub primary_user_assigned_identity: Option<String>,
}

/// Resources associated with the workspace (ARM resource ids).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssociatedResources {
    /// The workspace's storage account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = STORAGE_ACCOUNT_ID_PATTERN))]
    pub storage_account: Option<String>,
    /// The workspace's key vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = KEY_VAULT_ID_PATTERN))]
    pub key_vault: Option<String>,
    /// The workspace's container registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = REGISTRY_ID_PATTERN))]
    pub container_registry: Option<String>,
    /// The workspace's Application Insights component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = APPLICATION_INSIGHTS_ID_PATTERN))]
    pub application_insights: Option<String>,
}

/// The resource ids a workspace reports, verbatim (ARM's spelling, unchecked: a report, not input).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReportedResources {
    /// Storage account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_account: Option<String>,
    /// Key vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_vault: Option<String>,
    /// Container registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_registry: Option<String>,
    /// Application Insights component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_insights: Option<String>,
}

/// Whether the operator grants the workspace identity its roles.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum RoleAssignmentsMode {
    /// Leave role assignments to someone else.
    #[default]
    None,
    /// Ensure the AML role table for a user-assigned workspace identity (Contributor on the workspace
    /// and its resources, Storage Blob Data Contributor, Key Vault Administrator for RBAC vaults).
    Ensure,
}

/// An Azure Machine Learning workspace.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "amlidentity.io",
    version = "v1alpha1",
    kind = "Workspace",
    doc = "An Azure Machine Learning workspace, adopted or managed: its identity, role assignments and config.json.",
    namespaced,
    status = "WorkspaceStatus",
    shortname = "amlws",
    category = "aml",
    printcolumn = r#"{"name":"Workspace","type":"string","jsonPath":".spec.workspaceName"}"#,
    printcolumn = r#"{"name":"Management","type":"string","jsonPath":".spec.management"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = workspace_rules)]
pub struct WorkspaceSpec {
    /// The credential the operator signs in with for this workspace.
    pub credential_ref: CredentialRef,
    /// Subscription id of the workspace.
    #[schemars(regex(pattern = GUID_PATTERN))]
    pub subscription_id: String,
    /// Resource group of the workspace.
    #[schemars(regex(pattern = RESOURCE_GROUP_PATTERN))]
    pub resource_group: String,
    /// Name of the workspace in Azure.
    #[schemars(regex(pattern = WORKSPACE_NAME_PATTERN))]
    pub workspace_name: String,
    /// Azure region, e.g. `eastus`. Required with `management: Manage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = LOCATION_PATTERN))]
    pub location: Option<String>,
    /// `Adopt` (default: read and report) or `Manage` (create and update through ARM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management: Option<Management>,
    /// `Retain` (default) or `Delete` what the operator created in Azure when this object goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
    /// The workspace's managed identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<WorkspaceIdentity>,
    /// Storage account, key vault, container registry and Application Insights of the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub associated_resources: Option<AssociatedResources>,
    /// `None` (default) or `Ensure` the role table for a user-assigned workspace identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_assignments: Option<RoleAssignmentsMode>,
    /// Name of the ConfigMap that receives `config.json` (subscription_id, resource_group,
    /// workspace_name). No ConfigMap is written when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = K8S_NAME_PATTERN))]
    pub config_map_name: Option<String>,
}

/// Observed state of a workspace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceStatus {
    /// Conditions and observed generation.
    #[serde(flatten)]
    pub common: CommonStatus,
    /// ARM resource id of the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// The workspace GUID (`properties.workspaceId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    /// Principal id of the system-assigned identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    /// Tenant of the workspace identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// MLflow tracking URI of the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow_tracking_uri: Option<String>,
    /// The workspace's storage account, key vault, container registry and Application Insights,
    /// as Resource Manager reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub associated_resources: Option<ReportedResources>,
    /// Azure objects the operator made or holds for this object, recorded before it makes them:
    /// what revocation and cleanup remove (never the spec as edited later).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub azure_resources: Vec<AzureResource>,
}
impl_has_common_status!(WorkspaceStatus);

/// User-assigned types list identities; the system-assigned type lists none.
pub const RULE_IDENTITY_LIST: CelRule = CelRule {
    rule: "self.type == 'SystemAssigned' ? (!has(self.userAssignedIdentities) || size(self.userAssignedIdentities) == 0) && !has(self.primaryUserAssignedIdentity) : has(self.userAssignedIdentities) && size(self.userAssignedIdentities) > 0",
    message: "identity.userAssignedIdentities must list at least one identity for a UserAssigned type, and be empty (with no primaryUserAssignedIdentity) for SystemAssigned",
};
/// The primary identity is one of the listed ones.
pub const RULE_PRIMARY_LISTED: CelRule = CelRule {
    rule: "!has(self.primaryUserAssignedIdentity) || (has(self.userAssignedIdentities) && self.primaryUserAssignedIdentity in self.userAssignedIdentities)",
    message: "identity.primaryUserAssignedIdentity must be one of identity.userAssignedIdentities",
};
/// With user-assigned identities, one must be primary.
pub const RULE_PRIMARY_REQUIRED: CelRule = CelRule {
    rule: "self.type == 'SystemAssigned' || has(self.primaryUserAssignedIdentity)",
    message: "identity.primaryUserAssignedIdentity is required when the workspace has user-assigned identities",
};
/// Creating a workspace needs a region.
pub const RULE_MANAGE_LOCATION: CelRule = CelRule {
    rule: "!has(self.management) || self.management != 'Manage' || has(self.location)",
    message: "location is required with management: Manage (the region to create the workspace in)",
};
/// The role table applies to a user-assigned workspace identity.
pub const RULE_ENSURE_NEEDS_UAI: CelRule = CelRule {
    rule: "!has(self.roleAssignments) || self.roleAssignments != 'Ensure' || (has(self.identity) && self.identity.type != 'SystemAssigned')",
    message: "roleAssignments: Ensure needs identity.type UserAssigned (or SystemAssigned,UserAssigned): the role table is for a user-assigned workspace identity",
};

cel_rules!(
    workspace_identity_rules,
    &[
        RULE_IDENTITY_LIST,
        RULE_PRIMARY_LISTED,
        RULE_PRIMARY_REQUIRED
    ]
);
cel_rules!(
    workspace_rules,
    &[RULE_MANAGE_LOCATION, RULE_ENSURE_NEEDS_UAI]
);

impl Validate for Workspace {
    fn validate(&self) -> Vec<Violation> {
        let s = &self.spec;
        let mut v = Violations::default();
        v.pattern(
            &s.credential_ref.name,
            K8S_NAME_PATTERN,
            "spec.credentialRef.name",
            "an object name",
        );
        v.pattern(
            &s.subscription_id,
            GUID_PATTERN,
            "spec.subscriptionId",
            "a subscription id GUID",
        );
        v.pattern(
            &s.resource_group,
            RESOURCE_GROUP_PATTERN,
            "spec.resourceGroup",
            "a resource group name (1-90 characters, not ending in '.')",
        );
        v.pattern(
            &s.workspace_name,
            WORKSPACE_NAME_PATTERN,
            "spec.workspaceName",
            "a workspace name (3-33 letters, digits, '-' or '_')",
        );
        v.pattern_opt(
            s.location.as_deref(),
            LOCATION_PATTERN,
            "spec.location",
            "a region name such as eastus",
        );
        v.pattern_opt(
            s.config_map_name.as_deref(),
            K8S_NAME_PATTERN,
            "spec.configMapName",
            "a ConfigMap name",
        );
        if let Some(id) = &s.identity {
            let system_only = id.type_ == WorkspaceIdentityType::SystemAssigned;
            v.at_most(
                id.user_assigned_identities.len(),
                16,
                "spec.identity.userAssignedIdentities",
            );
            for (i, uai) in id.user_assigned_identities.iter().enumerate() {
                v.pattern(
                    uai,
                    USER_ASSIGNED_IDENTITY_PATTERN,
                    format!("spec.identity.userAssignedIdentities[{i}]"),
                    "a user-assigned identity resource id",
                );
            }
            v.pattern_opt(
                id.primary_user_assigned_identity.as_deref(),
                USER_ASSIGNED_IDENTITY_PATTERN,
                "spec.identity.primaryUserAssignedIdentity",
                "a user-assigned identity resource id",
            );
            let listed_ok = if system_only {
                id.user_assigned_identities.is_empty()
                    && id.primary_user_assigned_identity.is_none()
            } else {
                !id.user_assigned_identities.is_empty()
            };
            v.check(
                listed_ok,
                "spec.identity.userAssignedIdentities",
                RULE_IDENTITY_LIST.message,
            );
            if let Some(primary) = &id.primary_user_assigned_identity {
                v.check(
                    id.user_assigned_identities.contains(primary),
                    "spec.identity.primaryUserAssignedIdentity",
                    RULE_PRIMARY_LISTED.message,
                );
            }
            v.check(
                system_only || id.primary_user_assigned_identity.is_some(),
                "spec.identity.primaryUserAssignedIdentity",
                RULE_PRIMARY_REQUIRED.message,
            );
        }
        if let Some(r) = &s.associated_resources {
            for (field, value, pattern, what) in [
                (
                    "storageAccount",
                    &r.storage_account,
                    STORAGE_ACCOUNT_ID_PATTERN,
                    "a Microsoft.Storage/storageAccounts resource id",
                ),
                (
                    "keyVault",
                    &r.key_vault,
                    KEY_VAULT_ID_PATTERN,
                    "a Microsoft.KeyVault/vaults resource id",
                ),
                (
                    "containerRegistry",
                    &r.container_registry,
                    REGISTRY_ID_PATTERN,
                    "a Microsoft.ContainerRegistry/registries resource id",
                ),
                (
                    "applicationInsights",
                    &r.application_insights,
                    APPLICATION_INSIGHTS_ID_PATTERN,
                    "a Microsoft.Insights/components resource id",
                ),
            ] {
                v.pattern_opt(
                    value.as_deref(),
                    pattern,
                    format!("spec.associatedResources.{field}"),
                    what,
                );
            }
        }
        v.check(
            s.management != Some(Management::Manage) || s.location.is_some(),
            "spec.location",
            RULE_MANAGE_LOCATION.message,
        );
        let has_uai = s
            .identity
            .as_ref()
            .is_some_and(|i| i.type_ != WorkspaceIdentityType::SystemAssigned);
        v.check(
            s.role_assignments != Some(RoleAssignmentsMode::Ensure) || has_uai,
            "spec.roleAssignments",
            RULE_ENSURE_NEEDS_UAI.message,
        );
        v.into_vec()
    }
}

impl WorkspaceSpec {
    /// The workspace's ARM id.
    pub fn arm_id(&self) -> String {
        crate::azure::paths::workspace(
            &self.subscription_id,
            &self.resource_group,
            &self.workspace_name,
        )
    }
}
