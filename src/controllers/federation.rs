//! Federated identity credentials: the trust of this cluster's ServiceAccounts on a user-assigned
//! identity, so the operator (and pods) can sign in as it through workload identity. Shared by
//! every object of a namespace that federates the same ServiceAccount with the same identity.

use std::time::Duration;

use kube::ResourceExt;

use super::ledger::Ledger;
use super::resolve::azure_failure;
use super::{Context, Error, Outcome, Reconciled};
use crate::api::conditions::{ConditionType, Reason};
use crate::api::*;
use crate::azure::AzureError;
use crate::azure::arm::ArmClient;
use crate::azure::models::{self, api_versions};
use crate::outputs;
use crate::workload_identity::TOKEN_EXCHANGE_AUDIENCE;

/// The federated identity credential name of a ServiceAccount: readable, and unique per
/// (namespace, ServiceAccount) through a hash, so `a-b`/`c` and `a`/`b-c` never share one
/// (3-120 of `[A-Za-z0-9-_]`).
pub fn federation_name(namespace: &str, service_account: &str) -> String {
    let readable: String = format!("{namespace}-{service_account}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(100)
        .collect();
    let hash = outputs::fingerprint(&format!("{namespace}/{service_account}"));
    format!("aml-{readable}-{}", &hash[..10])
}

/// The name earlier versions gave a ServiceAccount's federated credential (found and replaced).
fn legacy_federation_name(namespace: &str, service_account: &str) -> String {
    format!("aml-{namespace}-{service_account}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(120)
        .collect()
}

/// Azure's limit of federated identity credentials on one identity.
const MAX_FEDERATED_CREDENTIALS: usize = 20;

/// Federated identity credentials on `identity_id` for `accounts` of `namespace`, each recorded
/// before it is written. Creating reads the identity's list once: Azure allows 20 per identity,
/// and a subject already trusted under another name needs nothing more (one of this operator's
/// earlier names is replaced by the current one).
#[allow(clippy::too_many_arguments)]
pub async fn federate<K: Reconciled>(
    ctx: &Context,
    obj: &K,
    ledger: &mut Ledger,
    arm: &ArmClient,
    identity_id: &str,
    issuer: &str,
    accounts: &[String],
    field: &str,
) -> Result<Result<(), Outcome>, Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let namespace = namespace.as_str();
    let failed = |e: &AzureError, what: &str| {
        azure_failure(e, what).condition(
            ConditionType::FederationValid,
            false,
            e.reason(),
            e.to_string(),
        )
    };
    let mut missing = Vec::new();
    for account in accounts {
        let fic = models::FederatedIdentityCredential {
            properties: models::FederatedIdentityCredentialProperties {
                issuer: issuer.to_owned(),
                subject: format!("system:serviceaccount:{namespace}:{account}"),
                audiences: vec![TOKEN_EXCHANGE_AUDIENCE.into()],
            },
            ..Default::default()
        };
        let path = format!(
            "{identity_id}/federatedIdentityCredentials/{}",
            federation_name(namespace, account)
        );
        let entry = AzureResource::new(AzureResourceKind::FederatedIdentityCredential, &path);
        // Shared by every object of the namespace federating the identity.
        match arm
            .get_recent::<models::FederatedIdentityCredential>(
                &path,
                api_versions::MANAGED_IDENTITY,
            )
            .await
        {
            Ok(Some(current)) if current.properties == fic.properties => ledger.want(entry),
            Ok(Some(_)) => {
                ledger.record(ctx, obj, &[entry]).await?;
                if let Err(e) = arm
                    .put::<_, models::FederatedIdentityCredential>(
                        &path,
                        api_versions::MANAGED_IDENTITY,
                        &fic,
                    )
                    .await
                {
                    return Ok(Err(failed(&e, "writing a federated identity credential")));
                }
            }
            Ok(None) => missing.push((account, path, fic, entry)),
            Err(e) => return Ok(Err(failed(&e, "reading federated identity credentials"))),
        }
    }
    if missing.is_empty() {
        return Ok(Ok(()));
    }
    let existing: Vec<models::FederatedIdentityCredential> = match arm
        .list(
            &format!("{identity_id}/federatedIdentityCredentials"),
            api_versions::MANAGED_IDENTITY,
            &[],
        )
        .await
    {
        Ok(l) => l,
        Err(e) => return Ok(Err(failed(&e, "listing federated identity credentials"))),
    };
    let mut count = existing.len();
    let mut create = Vec::new();
    for (account, path, fic, entry) in missing {
        let same = existing.iter().find(|e| {
            e.properties.issuer == fic.properties.issuer
                && e.properties.subject == fic.properties.subject
        });
        match same.and_then(|e| e.name.clone()) {
            Some(name) if name == legacy_federation_name(namespace, account) => {
                let old = format!("{identity_id}/federatedIdentityCredentials/{name}");
                if let Err(e) = arm.delete(&old, api_versions::MANAGED_IDENTITY).await {
                    return Ok(Err(failed(
                        &e,
                        "replacing an earlier federated identity credential",
                    )));
                }
                count -= 1;
                create.push((path, fic, entry));
            }
            // Made under the operator's own name for this ServiceAccount, by another object
            // since this pass read it: held, so the last holder is the one to remove it.
            Some(name) if name == federation_name(namespace, account) => ledger.want(entry),
            // Trusted already by a credential someone else made: nothing to make, nothing to own.
            Some(_) => {}
            None => create.push((path, fic, entry)),
        }
    }
    if count + create.len() > MAX_FEDERATED_CREDENTIALS {
        let message = format!(
            "identity {identity_id} has {count} federated identity credentials and {} more are needed; Azure allows {MAX_FEDERATED_CREDENTIALS} per identity: federate fewer ServiceAccounts ({field}) or use another identity",
            create.len()
        );
        return Ok(Err(Outcome::not_ready(
            Reason::FederatedCredentialLimit,
            message.clone(),
        )
        .condition(
            ConditionType::FederationValid,
            false,
            Reason::FederatedCredentialLimit,
            message,
        )
        .requeue(Duration::from_secs(1800))));
    }
    let entries: Vec<AzureResource> = create.iter().map(|(_, _, e)| e.clone()).collect();
    ledger.record(ctx, obj, &entries).await?;
    for (path, fic, _) in &create {
        if let Err(e) = arm
            .put::<_, models::FederatedIdentityCredential>(
                path,
                api_versions::MANAGED_IDENTITY,
                fic,
            )
            .await
        {
            return Ok(Err(failed(&e, "writing a federated identity credential")));
        }
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn federated_credential_names_never_collide_and_fit_azure() {
        // `a-b`/`c` and `a`/`b-c` read alike; the hash keeps them apart.
        assert_ne!(federation_name("a-b", "c"), federation_name("a", "b-c"));
        assert_ne!(federation_name("ns", "x.y"), federation_name("ns", "x-y"));
        assert_eq!(
            federation_name("team-a", "training"),
            federation_name("team-a", "training")
        );
        let long = federation_name(&"n".repeat(63), &"s".repeat(253));
        assert!((3..=120).contains(&long.len()), "{}", long.len());
        assert!(long.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        assert_ne!(long, federation_name(&"n".repeat(63), &"s".repeat(252)));
    }
}
