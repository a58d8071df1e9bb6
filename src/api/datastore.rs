//! `Datastore`: an AML datastore and the access Secret pods use instead of the account key.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::*;
use super::credential::validate_secret_key_ref;
use super::rules::{CelRule, cel_rules};
use super::validation::{Validate, Violation, Violations, parse_duration};

/// AML datastore names: letters, digits and underscores.
pub const DATASTORE_NAME_PATTERN: &str = r"^[a-zA-Z0-9_]{1,255}$";
/// Storage account names: 3-24 lower-case letters and digits.
pub const STORAGE_ACCOUNT_PATTERN: &str = r"^[a-z0-9]{3,24}$";
/// Container, file system and share names: 3-63 lower-case letters, digits and single hyphens.
pub const CONTAINER_PATTERN: &str = r"^[a-z0-9](-?[a-z0-9]){2,62}$";
/// Service SAS permissions for a container, in the canonical order `racwdl`.
pub const SAS_PERMISSIONS_PATTERN: &str = r"^r?a?c?w?d?l?$";

/// Storage service behind the datastore.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DatastoreType {
    /// Azure Blob container.
    AzureBlob,
    /// Azure Data Lake Storage Gen1 store.
    AzureDataLakeGen1,
    /// Azure Data Lake Storage Gen2 file system.
    AzureDataLakeGen2,
    /// Azure Files share (credential-based only).
    AzureFile,
}

/// How the datastore itself authenticates to storage.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DatastoreCredentialType {
    /// Identity-based: no stored credential (Blob and ADLS only).
    None,
    /// The storage account key.
    AccountKey,
    /// A SAS token.
    Sas,
    /// A service principal with a client secret.
    ServicePrincipal,
    /// A service principal with a certificate.
    Certificate,
}

/// A service principal the datastore authenticates as.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatastorePrincipal {
    /// Tenant of the service principal.
    #[schemars(regex(pattern = GUID_PATTERN))]
    pub tenant_id: String,
    /// Client id of the service principal.
    #[schemars(regex(pattern = GUID_PATTERN))]
    pub client_id: String,
    /// Secret key with the client secret (ServicePrincipal) or PEM certificate (Certificate).
    pub secret_ref: SecretKeyRef,
}

/// The datastore's stored credential; secrets come from Secret keys and are sent to ARM only.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = datastore_credentials_rules)]
pub struct DatastoreCredentials {
    /// `None`, `AccountKey`, `Sas`, `ServicePrincipal` or `Certificate`.
    #[serde(rename = "type")]
    pub type_: DatastoreCredentialType,
    /// Secret key with the account key (AccountKey) or SAS token (Sas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// The service principal (ServicePrincipal, Certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_principal: Option<DatastorePrincipal>,
}

/// Identity-based pod access: minted as a ComputeIdentity.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentityAccess {
    /// The ComputeIdentity (same namespace) whose identity mints the credential.
    pub compute_identity_ref: LocalObjectRef,
    /// `Token` (a storage-audience access token, default) or `UserDelegationSas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<IdentityAccessMode>,
}

/// What an identity-based access Secret carries.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum IdentityAccessMode {
    /// An access token for `https://storage.azure.com`.
    Token,
    /// A user-delegation SAS signed with a key obtained as the identity.
    UserDelegationSas,
}

/// Key-based pod access: a short-lived, least-privilege, container-scoped service SAS.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = sas_access_rules)]
pub struct SasAccess {
    /// Permissions in canonical order, a subset of `racwdl` (default `rl`: read and list); for an
    /// `AzureFile` share, of `rcwdl` (Azure Files has no add).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = SAS_PERMISSIONS_PATTERN), length(min = 1))]
    pub permissions: Option<String>,
    /// Lifetime of each SAS, between 5m and 24h (default 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub ttl: Option<String>,
}

/// The access Secret written for pods (never the account key).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = pod_access_rules)]
pub struct PodAccess {
    /// Name of the Secret, in this namespace.
    #[schemars(regex(pattern = K8S_NAME_PATTERN))]
    pub secret_name: String,
    /// Identity-based access (Blob and ADLS only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityAccess>,
    /// Service SAS derived from the account key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sas: Option<SasAccess>,
    /// Renew the Secret this long before it expires (a duration such as `10m`): at least 1m and
    /// less than the SAS's ttl, or at most 45m with identity access (Entra tokens live about an
    /// hour); not with renewBeforePercentage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub renew_before: Option<String>,
    /// Renew the Secret when this percentage of its lifetime is left (1-99; default 33: renew at
    /// two thirds of the lifetime); not with renewBefore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 99))]
    pub renew_before_percentage: Option<i32>,
}

/// An AML datastore.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "amlidentity.io",
    version = "v1alpha1",
    kind = "Datastore",
    doc = "An AML datastore and the short-lived, least-privilege access Secret pods use instead of the account key.",
    namespaced,
    status = "DatastoreStatus",
    shortname = "amlds",
    category = "aml",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Datastore","type":"string","jsonPath":".spec.datastoreName"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","jsonPath":".status.expiresAt","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = datastore_rules)]
pub struct DatastoreSpec {
    /// The Workspace (same namespace) the datastore belongs to.
    pub workspace_ref: LocalObjectRef,
    /// Name of the datastore in the workspace.
    #[schemars(regex(pattern = DATASTORE_NAME_PATTERN))]
    pub datastore_name: String,
    /// `AzureBlob`, `AzureDataLakeGen1`, `AzureDataLakeGen2` or `AzureFile`.
    #[serde(rename = "type")]
    pub type_: DatastoreType,
    /// Storage account (Blob, ADLS Gen2, File).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = STORAGE_ACCOUNT_PATTERN))]
    pub account_name: Option<String>,
    /// Blob container (AzureBlob).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = CONTAINER_PATTERN))]
    pub container_name: Option<String>,
    /// File system (AzureDataLakeGen2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = CONTAINER_PATTERN))]
    pub filesystem: Option<String>,
    /// File share (AzureFile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = CONTAINER_PATTERN))]
    pub share_name: Option<String>,
    /// Data Lake Gen1 store (AzureDataLakeGen1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = STORAGE_ACCOUNT_PATTERN))]
    pub store_name: Option<String>,
    /// Storage DNS suffix (default `core.windows.net`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DNS_SUFFIX_PATTERN))]
    pub endpoint: Option<String>,
    /// Only `https`: SAS and bearer tokens are never sent in clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// The datastore's stored credential (default: None, identity-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<DatastoreCredentials>,
    /// PUT the datastore into the workspace, as `az ml datastore create` does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub register: bool,
    /// The access Secret for pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_access: Option<PodAccess>,
}

/// Transport to storage.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TLS (the only choice Azure accepts for SAS with `spr=https` and bearer tokens).
    Https,
}

/// Observed state of a datastore.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatastoreStatus {
    /// Conditions and observed generation.
    #[serde(flatten)]
    pub common: CommonStatus,
    /// `azureml://` URI of the datastore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// When the credential in the access Secret expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// When the operator renews it (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<String>,
    /// Fingerprint of the registered credentials, so a rotated key is registered again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_credentials: Option<String>,
    /// When writing the credentials last failed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<String>,
    /// Failed attempts since the last success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_attempts: Option<i64>,
    /// Azure objects the operator made or holds for this object, recorded before it makes them:
    /// what revocation and cleanup remove (never the spec as edited later).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub azure_resources: Vec<AzureResource>,
}
impl_has_common_status!(DatastoreStatus);

/// Each type names its own storage location.
pub const RULE_LOCATION_FIELDS: CelRule = CelRule {
    rule: "self.type == 'AzureBlob' ? has(self.accountName) && has(self.containerName) : self.type == 'AzureDataLakeGen2' ? has(self.accountName) && has(self.filesystem) : self.type == 'AzureFile' ? has(self.accountName) && has(self.shareName) : has(self.storeName)",
    message: "set the location fields of the type: AzureBlob needs accountName and containerName, AzureDataLakeGen2 accountName and filesystem, AzureFile accountName and shareName, AzureDataLakeGen1 storeName",
};
/// Identity-based access exists only for Blob and ADLS.
pub const RULE_IDENTITY_BLOB_ADLS: CelRule = CelRule {
    rule: "self.type != 'AzureFile' || ((has(self.credentials) && self.credentials.type != 'None') && !(has(self.podAccess) && has(self.podAccess.identity)))",
    message: "identity-based access is only for AzureBlob, AzureDataLakeGen1 and AzureDataLakeGen2: give an AzureFile datastore credentials (AccountKey or Sas) and podAccess.sas",
};
/// A service SAS is derived from the account key.
pub const RULE_SAS_NEEDS_KEY: CelRule = CelRule {
    rule: "!has(self.podAccess) || !has(self.podAccess.sas) || (has(self.credentials) && self.credentials.type == 'AccountKey')",
    message: "podAccess.sas is signed with the account key: set credentials.type AccountKey with its secretRef",
};
/// A Data Lake Gen1 store has no account key.
pub const RULE_GEN1_NO_KEY: CelRule = CelRule {
    rule: "self.type != 'AzureDataLakeGen1' || !has(self.credentials) || (self.credentials.type != 'AccountKey' && self.credentials.type != 'Sas')",
    message: "an AzureDataLakeGen1 store has no account key or SAS: give it credentials ServicePrincipal, Certificate or None, and pods podAccess.identity",
};
/// A Data Lake Gen1 store has no blob service to sign a user-delegation SAS.
pub const RULE_GEN1_TOKEN_ONLY: CelRule = CelRule {
    rule: "self.type != 'AzureDataLakeGen1' || !has(self.podAccess) || !has(self.podAccess.identity) || !has(self.podAccess.identity.mode) || self.podAccess.identity.mode == 'Token'",
    message: "an AzureDataLakeGen1 store has no blob service to sign a user-delegation SAS: use podAccess.identity.mode Token",
};
/// Azure Files has no add permission.
pub const RULE_FILE_SAS_PERMISSIONS: CelRule = CelRule {
    rule: "self.type != 'AzureFile' || !has(self.podAccess) || !has(self.podAccess.sas) || !has(self.podAccess.sas.permissions) || !self.podAccess.sas.permissions.contains('a')",
    message: "a share SAS has no add permission (a is the Blob service's): give podAccess.sas.permissions a subset of rcwdl",
};
/// Exactly one pod access method.
pub const RULE_ONE_POD_ACCESS: CelRule = CelRule {
    rule: "has(self.identity) != has(self.sas)",
    message: "podAccess needs exactly one of identity or sas",
};
/// One renewal setting at most.
pub const RULE_ONE_POD_RENEWAL: CelRule = CelRule {
    rule: "!(has(self.renewBefore) && has(self.renewBeforePercentage))",
    message: "podAccess takes renewBefore or renewBeforePercentage, not both",
};
/// `renewBefore` within the lifetime of what the Secret holds.
pub const RULE_POD_RENEW_BEFORE_BOUNDS: CelRule = CelRule {
    rule: "!has(self.renewBefore) || (duration(self.renewBefore) >= duration('1m') && (has(self.sas) ? duration(self.renewBefore) < duration(has(self.sas.ttl) ? self.sas.ttl : '1h') : duration(self.renewBefore) <= duration('45m')))",
    message: "podAccess.renewBefore must be at least 1m and less than the SAS's ttl (default 1h), or at most 45m with identity access: Entra tokens live about an hour",
};
/// SAS lifetime bounds.
pub const RULE_SAS_TTL_BOUNDS: CelRule = CelRule {
    rule: "!has(self.ttl) || (duration(self.ttl) >= duration('5m') && duration(self.ttl) <= duration('24h'))",
    message: "podAccess.sas.ttl must be between 5m and 24h: a pod's SAS should be short-lived",
};
/// Each credential type carries what it needs and nothing else.
pub const RULE_CREDENTIAL_FIELDS: CelRule = CelRule {
    rule: "(self.type == 'AccountKey' || self.type == 'Sas') ? has(self.secretRef) && !has(self.servicePrincipal) : (self.type == 'None' ? !has(self.secretRef) && !has(self.servicePrincipal) : has(self.servicePrincipal) && !has(self.secretRef))",
    message: "credentials: AccountKey and Sas need secretRef, ServicePrincipal and Certificate need servicePrincipal, None needs neither",
};

cel_rules!(
    datastore_rules,
    &[
        RULE_LOCATION_FIELDS,
        RULE_IDENTITY_BLOB_ADLS,
        RULE_GEN1_NO_KEY,
        RULE_GEN1_TOKEN_ONLY,
        RULE_SAS_NEEDS_KEY,
        RULE_FILE_SAS_PERMISSIONS
    ]
);
cel_rules!(
    pod_access_rules,
    &[
        RULE_ONE_POD_ACCESS,
        RULE_ONE_POD_RENEWAL,
        RULE_POD_RENEW_BEFORE_BOUNDS
    ]
);
cel_rules!(sas_access_rules, &[RULE_SAS_TTL_BOUNDS]);
cel_rules!(datastore_credentials_rules, &[RULE_CREDENTIAL_FIELDS]);

impl Validate for Datastore {
    fn validate(&self) -> Vec<Violation> {
        let s = &self.spec;
        let mut v = Violations::default();
        v.pattern(
            &s.workspace_ref.name,
            K8S_NAME_PATTERN,
            "spec.workspaceRef.name",
            "a Workspace name",
        );
        v.pattern(
            &s.datastore_name,
            DATASTORE_NAME_PATTERN,
            "spec.datastoreName",
            "a datastore name (letters, digits and '_')",
        );
        v.pattern_opt(
            s.account_name.as_deref(),
            STORAGE_ACCOUNT_PATTERN,
            "spec.accountName",
            "a storage account name (3-24 lower-case letters and digits)",
        );
        v.pattern_opt(
            s.store_name.as_deref(),
            STORAGE_ACCOUNT_PATTERN,
            "spec.storeName",
            "a Data Lake store name",
        );
        for (field, value) in [
            ("containerName", &s.container_name),
            ("filesystem", &s.filesystem),
            ("shareName", &s.share_name),
        ] {
            v.pattern_opt(
                value.as_deref(),
                CONTAINER_PATTERN,
                format!("spec.{field}"),
                "a name of 3-63 lower-case letters, digits and single hyphens",
            );
        }
        v.pattern_opt(
            s.endpoint.as_deref(),
            DNS_SUFFIX_PATTERN,
            "spec.endpoint",
            "a DNS suffix such as core.windows.net",
        );
        let (location_ok, location_field) = match s.type_ {
            DatastoreType::AzureBlob => (
                s.account_name.is_some() && s.container_name.is_some(),
                "spec.containerName",
            ),
            DatastoreType::AzureDataLakeGen2 => (
                s.account_name.is_some() && s.filesystem.is_some(),
                "spec.filesystem",
            ),
            DatastoreType::AzureFile => (
                s.account_name.is_some() && s.share_name.is_some(),
                "spec.shareName",
            ),
            DatastoreType::AzureDataLakeGen1 => (s.store_name.is_some(), "spec.storeName"),
        };
        v.check(location_ok, location_field, RULE_LOCATION_FIELDS.message);
        let credential_type = s.credentials.as_ref().map(|c| c.type_);
        if s.type_ == DatastoreType::AzureDataLakeGen1 {
            v.check(
                !matches!(
                    credential_type,
                    Some(DatastoreCredentialType::AccountKey | DatastoreCredentialType::Sas)
                ),
                "spec.credentials.type",
                RULE_GEN1_NO_KEY.message,
            );
            let mode = s
                .pod_access
                .as_ref()
                .and_then(|p| p.identity.as_ref())
                .and_then(|i| i.mode);
            v.check(
                mode.is_none_or(|m| m == IdentityAccessMode::Token),
                "spec.podAccess.identity.mode",
                RULE_GEN1_TOKEN_ONLY.message,
            );
        }
        if s.type_ == DatastoreType::AzureFile {
            let identity_based =
                matches!(credential_type, None | Some(DatastoreCredentialType::None))
                    || s.pod_access.as_ref().is_some_and(|p| p.identity.is_some());
            v.check(
                !identity_based,
                "spec.credentials",
                RULE_IDENTITY_BLOB_ADLS.message,
            );
        }
        if let Some(c) = &s.credentials {
            use DatastoreCredentialType as T;
            let ok = match c.type_ {
                T::AccountKey | T::Sas => c.secret_ref.is_some() && c.service_principal.is_none(),
                T::None => c.secret_ref.is_none() && c.service_principal.is_none(),
                T::ServicePrincipal | T::Certificate => {
                    c.service_principal.is_some() && c.secret_ref.is_none()
                }
            };
            v.check(ok, "spec.credentials", RULE_CREDENTIAL_FIELDS.message);
            if let Some(r) = &c.secret_ref {
                validate_secret_key_ref(r, "spec.credentials.secretRef", &mut v);
            }
            if let Some(sp) = &c.service_principal {
                v.pattern(
                    &sp.tenant_id,
                    GUID_PATTERN,
                    "spec.credentials.servicePrincipal.tenantId",
                    "a tenant id GUID",
                );
                v.pattern(
                    &sp.client_id,
                    GUID_PATTERN,
                    "spec.credentials.servicePrincipal.clientId",
                    "a client id GUID",
                );
                validate_secret_key_ref(
                    &sp.secret_ref,
                    "spec.credentials.servicePrincipal.secretRef",
                    &mut v,
                );
            }
        }
        if let Some(p) = &s.pod_access {
            v.pattern(
                &p.secret_name,
                K8S_NAME_PATTERN,
                "spec.podAccess.secretName",
                "a Secret name",
            );
            v.check(
                p.identity.is_some() != p.sas.is_some(),
                "spec.podAccess",
                RULE_ONE_POD_ACCESS.message,
            );
            // What the Secret holds lives the SAS's ttl (an unreadable one is reported on its own
            // field), or an Entra token's hour.
            let lifetime = match &p.sas {
                Some(sas) => sas
                    .ttl
                    .as_deref()
                    .map_or(Some(3600.0), parse_duration)
                    .map(|ttl| (ttl, false)),
                None => Some((2700.0, true)),
            };
            v.renewal(
                "spec.podAccess",
                p.renew_before.as_deref(),
                p.renew_before_percentage,
                RULE_ONE_POD_RENEWAL.message,
                |secs| {
                    lifetime.is_none_or(|(limit, inclusive)| {
                        secs >= 60.0 && (secs < limit || (inclusive && secs == limit))
                    })
                },
                RULE_POD_RENEW_BEFORE_BOUNDS.message,
            );
            if let Some(i) = &p.identity {
                v.pattern(
                    &i.compute_identity_ref.name,
                    K8S_NAME_PATTERN,
                    "spec.podAccess.identity.computeIdentityRef.name",
                    "a ComputeIdentity name",
                );
            }
            if let Some(sas) = &p.sas {
                v.check(
                    credential_type == Some(DatastoreCredentialType::AccountKey),
                    "spec.podAccess.sas",
                    RULE_SAS_NEEDS_KEY.message,
                );
                v.pattern_opt(
                    sas.permissions.as_deref(),
                    SAS_PERMISSIONS_PATTERN,
                    "spec.podAccess.sas.permissions",
                    "a subset of racwdl in that order",
                );
                v.check(
                    s.type_ != DatastoreType::AzureFile
                        || !sas.permissions.as_deref().is_some_and(|p| p.contains('a')),
                    "spec.podAccess.sas.permissions",
                    RULE_FILE_SAS_PERMISSIONS.message,
                );
                v.check(
                    sas.permissions.as_deref() != Some(""),
                    "spec.podAccess.sas.permissions",
                    "grant at least one permission, e.g. rl",
                );
                if let Some(ttl) = &sas.ttl {
                    match parse_duration(ttl) {
                        None => v.push(
                            "spec.podAccess.sas.ttl",
                            format!("{ttl:?} is not a duration such as 1h or 30m"),
                        ),
                        Some(secs) => v.check(
                            (300.0..=86400.0).contains(&secs),
                            "spec.podAccess.sas.ttl",
                            RULE_SAS_TTL_BOUNDS.message,
                        ),
                    }
                }
            }
        }
        v.into_vec()
    }
}
