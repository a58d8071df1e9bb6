//! The `Datastore` behaviour: register the datastore in the workspace (PUT with credentials read
//! from Secrets, again only when something changed — a rotated key included), and write the access
//! Secret pods use instead of the account key: a short-lived service SAS scoped to the container
//! (or, for Azure Files, the share), or (identity-based) a storage token or user-delegation SAS
//! minted as a ComputeIdentity.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::expiring::{Minted, Output};
use super::ledger::{Ledger, OWNER_TAG};
use super::resolve::{self, azure_failure};
use super::revocation;
use super::{Cleanup, Context, Error, Outcome};
use crate::api::conditions::{ConditionType, Reason};
use crate::api::*;
use crate::azure::models::ml_api_versions::MACHINE_LEARNING;
use crate::azure::models::{self};
use crate::azure::paths;
use crate::azure::storage::{self, FileSas, ServiceSas};
use crate::azure::{AzureError, Cloud};
use crate::outputs;
use crate::renewal::{self, Policy};
use crate::workload_identity::federated_credential;

const DEFAULT_PERMISSIONS: &str = "rl";
const DEFAULT_TTL: i64 = 3600;

fn container_of(spec: &DatastoreSpec) -> Option<&str> {
    spec.container_name
        .as_deref()
        .or(spec.filesystem.as_deref())
        .or(spec.share_name.as_deref())
}

/// The endpoint pods reach the datastore's account at: the File service for a file share, the
/// Blob service otherwise (ADLS Gen2 included: the SDKs reach a filesystem through it).
fn account_url(ctx: &Context, spec: &DatastoreSpec, cloud: &Cloud) -> String {
    let account = spec.account_name.clone().unwrap_or_default();
    let (template, service) = match spec.type_ {
        DatastoreType::AzureFile => (&ctx.azure.file_url_template, "file"),
        _ => (&ctx.azure.blob_url_template, "blob"),
    };
    match template {
        Some(template) => template.replace("{account}", &account),
        None => format!(
            "https://{account}.{service}.{}",
            spec.endpoint.as_deref().unwrap_or(&cloud.storage_suffix)
        ),
    }
}

/// The Data Lake (`dfs`) endpoint of an ADLS Gen2 account, where `azure-storage-file-datalake` and
/// Spark's `abfss://` look for it: the blob endpoint's `.blob.` label as `.dfs.`.
fn dfs_url(ctx: &Context, spec: &DatastoreSpec, cloud: &Cloud) -> String {
    account_url(ctx, spec, cloud).replacen(".blob.", ".dfs.", 1)
}

/// The `azureml://` URI of a datastore.
fn datastore_uri(ws: &WorkspaceSpec, name: &str) -> String {
    format!(
        "azureml://subscriptions/{}/resourcegroups/{}/workspaces/{}/datastores/{name}/paths/",
        ws.subscription_id, ws.resource_group, ws.workspace_name
    )
}

async fn secret_key(
    ctx: &Context,
    namespace: &str,
    r: &SecretKeyRef,
) -> Result<Result<String, Outcome>, Error> {
    let secret = ctx
        .input_secrets
        .get(&ctx.client, namespace, &r.name)
        .await?;
    let value = secret.as_ref().and_then(|s| s.data.as_ref()).and_then(|d| {
        d.get(&r.key)
            .map(|b| String::from_utf8_lossy(&b.0).trim().to_owned())
    });
    Ok(match value {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(Outcome::not_ready(
            Reason::CredentialNotFound,
            format!("Secret {namespace}/{} has no key {:?}", r.name, r.key),
        )
        .requeue(Duration::from_secs(120))),
    })
}

/// The datastore body for ARM, and a fingerprint of its secret part.
fn registration(
    spec: &DatastoreSpec,
    credentials: &DatastoreCredentials,
    secret: Option<&str>,
    cloud: &Cloud,
) -> (models::Datastore, String) {
    let (kind, secrets) = match credentials.type_ {
        DatastoreCredentialType::None => ("None", None),
        DatastoreCredentialType::AccountKey => (
            "AccountKey",
            Some(models::DatastoreSecrets {
                secrets_type: "AccountKey".into(),
                key: secret.map(str::to_owned),
                ..Default::default()
            }),
        ),
        DatastoreCredentialType::Sas => (
            "Sas",
            Some(models::DatastoreSecrets {
                secrets_type: "Sas".into(),
                sas_token: secret.map(str::to_owned),
                ..Default::default()
            }),
        ),
        DatastoreCredentialType::ServicePrincipal => (
            "ServicePrincipal",
            Some(models::DatastoreSecrets {
                secrets_type: "ServicePrincipal".into(),
                client_secret: secret.map(str::to_owned),
                ..Default::default()
            }),
        ),
        DatastoreCredentialType::Certificate => (
            "Certificate",
            Some(models::DatastoreSecrets {
                secrets_type: "Certificate".into(),
                certificate: secret.map(str::to_owned),
                ..Default::default()
            }),
        ),
    };
    let mut extra = models::Extra::new();
    if let Some(sp) = &credentials.service_principal {
        extra.insert("tenantId".into(), json!(sp.tenant_id));
        extra.insert("clientId".into(), json!(sp.client_id));
        extra.insert("authorityUrl".into(), json!(cloud.authority_host));
        extra.insert(
            "resourceUrl".into(),
            json!(format!("{}/", cloud.resource_manager)),
        );
    }
    let datastore_type = match spec.type_ {
        DatastoreType::AzureBlob => "AzureBlob",
        DatastoreType::AzureDataLakeGen1 => "AzureDataLakeGen1",
        DatastoreType::AzureDataLakeGen2 => "AzureDataLakeGen2",
        DatastoreType::AzureFile => "AzureFile",
    };
    let body = models::Datastore {
        id: None,
        name: None,
        properties: models::DatastoreProperties {
            datastore_type: datastore_type.into(),
            credentials: models::DatastoreCredentials {
                credentials_type: kind.into(),
                secrets,
                extra,
            },
            account_name: spec.account_name.clone(),
            container_name: spec.container_name.clone(),
            filesystem: spec.filesystem.clone(),
            file_share_name: spec.share_name.clone(),
            store_name: spec.store_name.clone(),
            // A Data Lake Gen1 store is named by storeName alone (no endpoint or protocol).
            endpoint: (spec.type_ != DatastoreType::AzureDataLakeGen1).then(|| {
                spec.endpoint
                    .clone()
                    .unwrap_or_else(|| cloud.storage_suffix.clone())
            }),
            protocol: (spec.type_ != DatastoreType::AzureDataLakeGen1).then(|| "https".into()),
            service_data_access_auth_identity: None,
            tags: Default::default(),
            extra: models::Extra::new(),
        },
    };
    let fingerprint = outputs::fingerprint(&format!(
        "{}|{}",
        serde_json::to_string(&body.properties).unwrap_or_default(),
        secret.unwrap_or_default()
    ));
    (body, fingerprint)
}

/// The datastore's ARM path.
fn datastore_path(ws: &WorkspaceSpec, spec: &DatastoreSpec) -> String {
    paths::datastore(&ws.arm_id(), &spec.datastore_name)
}

/// The output Secrets of the object (removed when it may no longer act).
fn outputs_of(ds: &Datastore) -> Vec<&str> {
    ds.spec
        .pod_access
        .iter()
        .map(|p| p.secret_name.as_str())
        .collect()
}

/// The behaviour.
pub async fn reconcile(ds: &Datastore, ctx: &Context) -> Result<Outcome, Error> {
    let spec = &ds.spec;
    let namespace = ds.namespace().unwrap_or_default();
    let uid = ds.meta().uid.clone().unwrap_or_default();
    let (ws, signed) = match revocation::workspace_for(
        ctx,
        ds,
        &spec.workspace_ref.name,
        &outputs_of(ds),
    )
    .await?
    {
        Ok(found) => found,
        Err(outcome) => return Ok(outcome),
    };
    let reference = ws.spec.credential_ref.clone();
    let path = datastore_path(&ws.spec, spec);
    let mut scope_ids = Vec::new();
    if spec.register {
        scope_ids.push((
            format!("spec.datastoreName (in Workspace {})", ws.name_any()),
            path.clone(),
        ));
    }
    let identity_access = spec.pod_access.as_ref().and_then(|p| p.identity.as_ref());
    let audiences =
        identity_access.map(|_| ("spec.podAccess.identity".to_owned(), audience_of(spec)));
    if let Err(refused) = signed
        .check(&scope_ids, &namespace)
        .and_then(|()| signed.check_audiences(audiences))
    {
        return revocation::refused(ctx, ds, &reference, &outputs_of(ds), refused).await;
    }
    let (arm, cloud) = (&signed.arm, &signed.cloud);
    let credentials = spec.credentials.clone().unwrap_or(DatastoreCredentials {
        type_: DatastoreCredentialType::None,
        secret_ref: None,
        service_principal: None,
    });
    let secret_ref = credentials.secret_ref.clone().or_else(|| {
        credentials
            .service_principal
            .as_ref()
            .map(|sp| sp.secret_ref.clone())
    });
    let secret = match &secret_ref {
        Some(r) => match secret_key(ctx, &namespace, r).await? {
            Ok(v) => Some(v),
            Err(outcome) => return Ok(outcome),
        },
        None => None,
    };
    let uri = datastore_uri(&ws.spec, &spec.datastore_name);
    let status = ds.status.clone().unwrap_or_default();
    let mut registered = status.registered_credentials.clone();
    let mut ledger = Ledger::of(ds);

    // 1. Registration in the workspace: created when absent, kept only when it is this object's.
    let registration_cond = if spec.register {
        let (mut body, fingerprint) = registration(spec, &credentials, secret.as_deref(), cloud);
        body.properties
            .tags
            .insert(OWNER_TAG.to_owned(), uid.clone());
        let current = match arm.get::<models::Datastore>(&path, MACHINE_LEARNING).await {
            Ok(c) => c,
            Err(e) => {
                return Ok(azure_failure(
                    &e,
                    &format!("reading datastore {}", spec.datastore_name),
                ));
            }
        };
        let entry = AzureResource::new(AzureResourceKind::Datastore, &path);
        if let Some(current) = &current
            && current.properties.tags.get(OWNER_TAG) != Some(&uid)
        {
            return Ok(Outcome::not_ready(
                Reason::AzureTargetConflict,
                format!(
                    "datastore {} already exists in workspace {} and was not registered by this object: choose another spec.datastoreName",
                    spec.datastore_name, ws.spec.workspace_name
                ),
            )
            .signed_in());
        }
        if current.is_none() || registered.as_deref() != Some(fingerprint.as_str()) {
            ledger.record(ctx, ds, &[entry]).await?;
            if let Err(e) = arm
                .put::<_, models::Datastore>(&path, MACHINE_LEARNING, &body)
                .await
            {
                return Ok(azure_failure(
                    &e,
                    &format!("registering datastore {}", spec.datastore_name),
                )
                .condition(
                    ConditionType::Registered,
                    false,
                    e.reason(),
                    e.to_string(),
                ));
            }
            registered = Some(fingerprint);
        } else {
            ledger.want(entry);
        }
        (
            ConditionType::Registered,
            true,
            Reason::Registered,
            format!(
                "datastore {} is registered in workspace {}",
                spec.datastore_name, ws.spec.workspace_name
            ),
        )
    } else {
        registered = None;
        (
            ConditionType::Registered,
            true,
            Reason::NotRequested,
            "spec.register is false".to_owned(),
        )
    };
    // A registration the spec no longer asks for (renamed, or register turned off) goes.
    let left = ledger.revoke(ctx, ds, arm, &ledger.stale()).await?;
    let base = |o: Outcome| {
        o.pending_revocation(&left)
            .signed_in()
            .condition(
                registration_cond.0,
                registration_cond.1,
                registration_cond.2,
                registration_cond.3.clone(),
            )
            .field("uri", uri.clone())
            .field("registeredCredentials", json!(registered))
            .field("azureResources", ledger.field())
    };
    let Some(access) = &spec.pod_access else {
        return Ok(base(
            Outcome::ready(
                Reason::Registered,
                format!("datastore {} is ready", spec.datastore_name),
            )
            .condition(
                ConditionType::TokenIssued,
                true,
                Reason::NotRequested,
                "no podAccess",
            ),
        )
        .requeue(Duration::from_secs(600)));
    };

    // 2. The access Secret.
    let now = ctx.azure.tokens.now();
    let policy = Policy::from_spec(
        access.renew_before.as_deref(),
        access.renew_before_percentage,
    );
    // What the Secret is made of, the renewal settings apart (they hash as `fingerprint_part`).
    let made_of = PodAccess {
        renew_before: None,
        renew_before_percentage: None,
        ..access.clone()
    };
    let fingerprint = outputs::fingerprint(&format!(
        "{:?}|{}|{}{}",
        made_of,
        registered.clone().unwrap_or_default(),
        secret
            .as_deref()
            .map(outputs::fingerprint)
            .unwrap_or_default(),
        policy.fingerprint_part()
    ));
    // What the Secret really holds: a SAS's own `se`, or a storage token's `exp`.
    let truth = |s: &Secret| match outputs::data_text(s, "AZURE_STORAGE_SAS_TOKEN") {
        Some(sas) => storage::sas_expiry(sas),
        None => outputs::data_text(s, "AZURE_STORAGE_TOKEN")
            .and_then(crate::azure::jwt::claims)
            .and_then(|c| c.exp),
    };
    let output = Output {
        owner: ds,
        secret_name: &access.secret_name,
        secret_type: "Opaque",
        fingerprint,
        policy,
    };
    let (uri, signed) = (&uri, &signed);
    let mint = |issued_after: i64| async move {
        let container = container_of(spec).unwrap_or_default().to_owned();
        // Either kind of SAS: the whole container, over https only.
        let container_sas = |permissions: String, start: Timestamp, expiry: Timestamp| ServiceSas {
            account: spec.account_name.clone().unwrap_or_default(),
            container: container.clone(),
            blob: None,
            permissions,
            start: Some(start),
            expiry,
            protocol: Some("https".into()),
        };
        let url = account_url(ctx, spec, cloud);
        let file_share = spec.type_ == DatastoreType::AzureFile;
        let mut data: BTreeMap<String, ByteString> = BTreeMap::new();
        let text = |v: &str| ByteString(v.as_bytes().to_vec());
        let gen1 = spec.type_ == DatastoreType::AzureDataLakeGen1;
        if gen1 {
            // A Data Lake Gen1 store: its name is what its SDKs and `adl://` URIs take.
            data.insert(
                "AZURE_DATALAKE_STORE_NAME".into(),
                text(spec.store_name.as_deref().unwrap_or_default()),
            );
        } else {
            data.insert(
                "AZURE_STORAGE_ACCOUNT".into(),
                text(spec.account_name.as_deref().unwrap_or_default()),
            );
            data.insert("AZURE_STORAGE_ACCOUNT_URL".into(), text(&url));
            let location_key = if file_share {
                "AZURE_STORAGE_SHARE"
            } else {
                "AZURE_STORAGE_CONTAINER"
            };
            data.insert(location_key.into(), text(&container));
        }
        // ADLS Gen2: the filesystem (the blob API's container) and the Data Lake endpoint too.
        if spec.type_ == DatastoreType::AzureDataLakeGen2 {
            data.insert("AZURE_STORAGE_FILESYSTEM".into(), text(&container));
            data.insert(
                "AZURE_STORAGE_DFS_URL".into(),
                text(&dfs_url(ctx, spec, cloud)),
            );
        }
        data.insert("AZUREML_DATASTORE_URI".into(), text(uri));
        // SAS times come from the operator's clock (movable in tests), like every expiry decision.
        let clock = Timestamp::from_second(now).unwrap_or_else(|_| Timestamp::now());
        let result: Result<(i64, i64, &str), AzureError> = async {
            if let Some(sas) = &access.sas {
                let key = secret.clone().ok_or_else(|| {
                    AzureError::Credential("podAccess.sas needs the account key".into())
                })?;
                let ttl = sas
                    .ttl
                    .as_deref()
                    .and_then(crate::api::validation::parse_duration)
                    .map_or(DEFAULT_TTL, |s| s as i64);
                let start = clock - SignedDuration::from_mins(5);
                let expiry = clock + SignedDuration::from_secs(ttl);
                let permissions = sas
                    .permissions
                    .clone()
                    .unwrap_or_else(|| DEFAULT_PERMISSIONS.into());
                // Azure Files signs a share (`sr=s`, `/file/...`), the Blob service a container.
                let token = if file_share {
                    storage::file_sas(
                        &key,
                        &FileSas {
                            account: spec.account_name.clone().unwrap_or_default(),
                            share: container.clone(),
                            file: None,
                            permissions,
                            start: Some(start),
                            expiry,
                            ip: None,
                            protocol: Some("https".into()),
                        },
                    )?
                } else {
                    storage::service_sas(&key, &container_sas(permissions, start, expiry))?
                };
                data.insert("AZURE_STORAGE_SAS_TOKEN".into(), text(&token));
                data.insert("expires-on".into(), text(&expiry.as_second().to_string()));
                let what = if file_share {
                    "a share SAS"
                } else {
                    "a service SAS"
                };
                return Ok((now, expiry.as_second(), what));
            }
            let identity = access
                .identity
                .as_ref()
                .ok_or_else(|| AzureError::Credential("podAccess needs sas or identity".into()))?;
            let token = identity_token(
                ctx,
                signed,
                &namespace,
                &identity.compute_identity_ref.name,
                audience_of(spec),
                issued_after,
            )
            .await?;
            match identity.mode.unwrap_or(IdentityAccessMode::Token) {
                IdentityAccessMode::Token => {
                    data.insert("AZURE_STORAGE_TOKEN".into(), text(token.secret()));
                    data.insert("expires-on".into(), text(&token.expires_on.to_string()));
                    Ok((token.obtained_at, token.expires_on, "a storage token"))
                }
                IdentityAccessMode::UserDelegationSas => {
                    let http = ctx.azure.transport.client()?;
                    let start = clock - SignedDuration::from_mins(5);
                    let expiry = Timestamp::from_second(token.expires_on).unwrap_or(clock);
                    let key =
                        storage::user_delegation_key(&http, &url, token.secret(), start, expiry)
                            .await?;
                    let sas = storage::user_delegation_sas(
                        &key,
                        &container_sas(DEFAULT_PERMISSIONS.to_owned(), start, expiry),
                    )?;
                    data.insert("AZURE_STORAGE_SAS_TOKEN".into(), text(&sas));
                    data.insert("expires-on".into(), text(&expiry.as_second().to_string()));
                    Ok((now, expiry.as_second(), "a user-delegation SAS"))
                }
            }
        }
        .await;
        let (obtained, expires, what) = match result {
            Ok(r) => r,
            Err(e) => {
                return Ok(Err(failed(
                    ds.status.as_ref().and_then(|s| s.failed_attempts),
                    &e,
                )));
            }
        };
        Ok(Ok(Minted {
            data,
            obtained,
            expires,
            what: if gen1 {
                format!(
                    "a Data Lake token for store {}",
                    spec.store_name.as_deref().unwrap_or_default()
                )
            } else {
                format!(
                    "{what} for {} {container} of {}",
                    if file_share { "share" } else { "container" },
                    spec.account_name.as_deref().unwrap_or_default()
                )
            },
        }))
    };
    let written = match output.refresh(ctx, now, truth, mint).await? {
        Ok(w) => w,
        Err(failed) => return Ok(base(failed)),
    };
    let e = written.expiry();
    let ready = ready(access, e.expires, e.renewal, now);
    Ok(base(written.report(ready)))
}

/// The storage audience of identity-based access.
const STORAGE_AUDIENCE: &str = "https://storage.azure.com";
/// Data Lake Storage Gen1's audience: its stores take tokens for it, not for storage.
const DATALAKE_AUDIENCE: &str = "https://datalake.azure.net";

/// The audience identity-based pod access mints for.
fn audience_of(spec: &DatastoreSpec) -> &'static str {
    match spec.type_ {
        DatastoreType::AzureDataLakeGen1 => DATALAKE_AUDIENCE,
        _ => STORAGE_AUDIENCE,
    }
}

/// A storage token minted as a ComputeIdentity (through its federated ServiceAccount), whose
/// identity must lie within the scopes of the Datastore's credential.
async fn identity_token(
    ctx: &Context,
    signed: &resolve::Signed,
    namespace: &str,
    name: &str,
    audience: &str,
    issued_after: i64,
) -> Result<crate::azure::Token, AzureError> {
    let (tenant, cloud) = (&signed.tenant, &signed.cloud);
    let ci = Api::<ComputeIdentity>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|e| AzureError::Credential(e.to_string()))?
        .ok_or_else(|| {
            AzureError::Credential(format!("ComputeIdentity {namespace}/{name} does not exist"))
        })?;
    if let Some(id) = ci.spec.identity.user_assigned_identities.first()
        && !signed.ceiling.admits(id)
    {
        return Err(AzureError::OutOfScope(format!(
            "spec.podAccess.identity: the identity {id} of ComputeIdentity {name} is outside what {} allows for namespace {namespace} ({})",
            signed.granted_by, signed.ceiling
        )));
    }
    let client_id = ci
        .status
        .as_ref()
        .and_then(|s| s.client_id.clone())
        .ok_or_else(|| {
            AzureError::Credential(format!("ComputeIdentity {name} has no client id yet"))
        })?;
    let account = ci
        .spec
        .federation
        .as_ref()
        .and_then(|f| f.service_accounts.first().cloned())
        .ok_or_else(|| {
            AzureError::Credential(format!(
                "ComputeIdentity {name} federates no ServiceAccount"
            ))
        })?;
    let credential = federated_credential(
        &ctx.client,
        &ctx.azure.transport,
        namespace,
        &account,
        cloud,
        tenant,
        &client_id,
    )?;
    ctx.azure
        .tokens
        .get_newer_than(&credential, audience, issued_after)
        .await
}

fn ready(access: &PodAccess, expires: i64, renewal: i64, now: i64) -> Outcome {
    let message = format!(
        "Secret {} holds storage access valid until {}",
        access.secret_name,
        renewal::rfc3339(expires)
    );
    Outcome::ready(Reason::AccessIssued, message.clone())
        .condition(ConditionType::TokenIssued, true, Reason::Issued, message)
        .field("expiresAt", renewal::rfc3339(expires))
        .field("renewalTime", renewal::rfc3339(renewal))
        .failures_cleared()
        .requeue(Duration::from_secs((renewal - now).max(1) as u64))
}

fn failed(previous_attempts: Option<i64>, error: &AzureError) -> Outcome {
    Outcome::mint_failed(
        previous_attempts,
        "writing the access Secret",
        error.reason(),
        &error.to_string(),
    )
}

/// Cleanup on delete: the registration this object made, from the record.
pub async fn cleanup(ds: &Datastore, ctx: &Context) -> Result<Cleanup, Error> {
    revocation::revoke_through_workspace(ctx, ds, &ds.spec.workspace_ref.name).await
}
