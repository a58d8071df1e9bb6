//! Objects the operator writes into namespaces (ConfigMaps, Secrets): always with a controller
//! ownerReference to the custom resource and the managed-by label, under the operator's field
//! manager, with the version read as precondition — and never over an object someone else made
//! (`TargetConflict`).

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The label on everything the operator writes.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "aml-identity-operator");

/// Why an output was not written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// An object of that name exists and is not this custom resource's.
    #[error(
        "{kind} {namespace}/{name} already exists and was not created by this {owner}: rename the target or delete that object"
    )]
    Conflict {
        /// Kind of the target.
        kind: String,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Owner kind.
        owner: String,
    },
    /// The API server failed.
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// Whether `existing` belongs to `owner`: our label and a controller reference to its uid.
fn owned_by<O: Resource>(existing: &impl Resource, owner: &O) -> bool {
    let ours = existing
        .meta()
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY.0))
        .is_some_and(|v| v == MANAGED_BY.1);
    let uid = owner.meta().uid.as_deref();
    let controlled = existing
        .meta()
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && Some(r.uid.as_str()) == uid);
    ours && controlled
}

/// Applies `object` (name and content; metadata is completed here) in `owner`'s namespace, after
/// reading it: the write carries the resourceVersion read as its precondition, so an object
/// replaced since then is not written over (the API server answers 409 and the next pass reads
/// again). Returns the object as stored.
pub async fn apply<O, T>(client: &kube::Client, owner: &O, mut object: T) -> Result<T, OutputError>
where
    O: Resource<DynamicType = ()>,
    T: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let namespace = owner.namespace().unwrap_or_default();
    let name = object.name_any();
    let api: Api<T> = Api::namespaced(client.clone(), &namespace);
    let existing = api.get_opt(&name).await?;
    let existing = existing.as_ref();
    if let Some(existing) = existing
        && !owned_by(existing, owner)
    {
        return Err(OutputError::Conflict {
            kind: T::kind(&()).into(),
            namespace,
            name,
            owner: O::kind(&()).into(),
        });
    }
    let meta = object.meta_mut();
    meta.namespace = Some(namespace);
    meta.labels
        .get_or_insert_with(Default::default)
        .insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
    meta.owner_references = owner.controller_owner_ref(&()).map(|r| vec![r]);
    meta.managed_fields = None;
    meta.resource_version = existing.and_then(|e| e.meta().resource_version.clone());
    let mut value =
        serde_json::to_value(&object).map_err(|e| OutputError::Kube(kube::Error::SerdeError(e)))?;
    value["apiVersion"] = T::api_version(&()).into();
    value["kind"] = T::kind(&()).into();
    let params = PatchParams::apply(crate::controllers::MANAGER).force();
    Ok(api.patch(&name, &params, &Patch::Apply(value)).await?)
}

/// Deletes `owner`'s output `name` of kind `T` if it is `owner`'s (someone else's object of that
/// name stays). Returns whether one was deleted.
pub async fn remove<O, T>(client: &kube::Client, owner: &O, name: &str) -> Result<bool, kube::Error>
where
    O: Resource<DynamicType = ()>,
    T: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let namespace = owner.namespace().unwrap_or_default();
    let api: Api<T> = Api::namespaced(client.clone(), &namespace);
    let Some(existing) = api.get_opt(name).await? else {
        return Ok(false);
    };
    if !owned_by(&existing, owner) || existing.meta().deletion_timestamp.is_some() {
        return Ok(false);
    }
    let params = kube::api::DeleteParams {
        preconditions: existing
            .meta()
            .uid
            .clone()
            .map(|uid| kube::api::Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
        ..Default::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Annotation on a custom resource: a new value re-mints its credentials now.
pub const FORCE_REFRESH: &str = "amlidentity.io/force-refresh";
const EXPIRES_AT: &str = "amlidentity.io/expires-at";
const RENEWAL_TIME: &str = "amlidentity.io/renewal-time";
const ISSUED_AT: &str = "amlidentity.io/issued-at";
const FINGERPRINT: &str = "amlidentity.io/spec-hash";
const REFRESHED_FOR: &str = "amlidentity.io/force-refresh-handled";

/// What a Secret holding expiring credentials records about them in its annotations, so that a
/// restarted operator knows they are still good and does not mint again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expiry {
    /// When the earliest credential expires (Unix seconds).
    pub expires: i64,
    /// When to renew (Unix seconds).
    pub renewal: i64,
    /// When the credentials were obtained (Unix seconds).
    pub issued: i64,
    /// A hash of what the credentials were made for (identity, audiences, permissions…).
    pub fingerprint: String,
    /// The force-refresh annotation value these credentials answered.
    pub force: String,
}

impl Expiry {
    /// The annotations to write.
    pub fn annotations(&self) -> std::collections::BTreeMap<String, String> {
        std::collections::BTreeMap::from([
            (EXPIRES_AT.to_owned(), crate::renewal::rfc3339(self.expires)),
            (
                RENEWAL_TIME.to_owned(),
                crate::renewal::rfc3339(self.renewal),
            ),
            (ISSUED_AT.to_owned(), self.issued.to_string()),
            (FINGERPRINT.to_owned(), self.fingerprint.clone()),
            (REFRESHED_FOR.to_owned(), self.force.clone()),
        ])
    }

    /// Reads them back from a Secret.
    pub fn read(secret: &impl Resource) -> Option<Expiry> {
        let a = secret.meta().annotations.as_ref()?;
        Some(Expiry {
            expires: crate::renewal::parse_rfc3339(a.get(EXPIRES_AT)?)?,
            renewal: crate::renewal::parse_rfc3339(a.get(RENEWAL_TIME)?)?,
            issued: a.get(ISSUED_AT)?.parse().ok()?,
            fingerprint: a.get(FINGERPRINT)?.clone(),
            force: a.get(REFRESHED_FOR).cloned().unwrap_or_default(),
        })
    }

    /// The expiry of `existing` when it can stay as it is; otherwise why it must be written again
    /// ([`crate::freshness`]): `truth` reads the credentials' own expiry from its data (a JWT
    /// `exp`, a SAS `se`).
    pub fn still_good<O: Resource>(
        existing: Option<&k8s_openapi::api::core::v1::Secret>,
        owner: &O,
        fingerprint: &str,
        force: &str,
        now: i64,
        truth: impl Fn(&k8s_openapi::api::core::v1::Secret) -> Option<i64>,
    ) -> Result<Expiry, crate::freshness::Renew> {
        let observed = crate::freshness::Observed {
            exists: existing.is_some(),
            ours: existing.is_some_and(|s| owned_by(s, owner)),
            expiry: existing.and_then(Expiry::read),
            credentials_expire: existing.and_then(truth),
        };
        let wanted = crate::freshness::Wanted { fingerprint, force };
        crate::freshness::check(&wanted, &observed, now)
    }
}

/// A Secret data key as text.
pub fn data_text<'a>(secret: &'a k8s_openapi::api::core::v1::Secret, key: &str) -> Option<&'a str> {
    secret
        .data
        .as_ref()?
        .get(key)
        .and_then(|v| std::str::from_utf8(&v.0).ok())
}

/// The current force-refresh value of a custom resource.
pub fn force_refresh(owner: &impl Resource) -> String {
    owner
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(FORCE_REFRESH))
        .cloned()
        .unwrap_or_default()
}

/// A short stable hash for fingerprints.
pub fn fingerprint(text: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    digest
        .as_ref()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Why a Secret of expiring credentials was not written.
#[derive(Debug)]
pub enum WriteError {
    /// It was to be created and one of that name exists (the API server's answer).
    Exists(kube::Error),
    /// It is someone else's, or the API server failed.
    Output(OutputError),
}

/// Writes `owner`'s Secret `name` of `type_` holding expiring credentials, with their [`Expiry`]
/// in its annotations: created when `existing` is `None`, otherwise (when `existing` is the
/// owner's) replaced whole with the resourceVersion read as precondition, so a Secret changed
/// since it was read is not written over (409). The operator owns every field of such a Secret:
/// a key it no longer writes goes, and an edit is not kept.
pub async fn write_expiring<O: Resource<DynamicType = ()>>(
    client: &kube::Client,
    owner: &O,
    name: &str,
    type_: &str,
    data: std::collections::BTreeMap<String, k8s_openapi::ByteString>,
    expiry: &Expiry,
    existing: Option<&k8s_openapi::api::core::v1::Secret>,
) -> Result<(), WriteError> {
    let namespace = owner.namespace().unwrap_or_default();
    if let Some(existing) = existing
        && !owned_by(existing, owner)
    {
        return Err(WriteError::Output(OutputError::Conflict {
            kind: "Secret".into(),
            namespace,
            name: name.into(),
            owner: O::kind(&()).into(),
        }));
    }
    let secret = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.clone()),
            labels: Some([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())].into()),
            annotations: Some(expiry.annotations()),
            owner_references: owner.controller_owner_ref(&()).map(|r| vec![r]),
            resource_version: existing.and_then(|e| e.metadata.resource_version.clone()),
            ..Default::default()
        },
        type_: Some(type_.to_owned()),
        data: Some(data),
        ..Default::default()
    };
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &namespace);
    let params = kube::api::PostParams {
        field_manager: Some(crate::controllers::MANAGER.into()),
        ..Default::default()
    };
    let written = match existing {
        None => api.create(&params, &secret).await,
        Some(_) => api.replace(name, &params, &secret).await,
    };
    match written {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if existing.is_none() && e.code == 409 => {
            Err(WriteError::Exists(kube::Error::Api(e)))
        }
        Err(e) => Err(WriteError::Output(OutputError::Kube(e))),
    }
}
