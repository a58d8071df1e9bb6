//! Workload identity end to end: real ServiceAccount tokens from the local API server's TokenRequest
//! API, exchanged at the emulator, which verifies them against the API server's real OIDC keys and
//! the federated identity credentials created through ARM.

mod support;

use std::sync::Arc;

use aml_identity_operator::azure::models::{self, api_versions};
use aml_identity_operator::azure::{AzureError, Credential};
use aml_identity_operator::workload_identity::{ServiceAccountAssertion, TOKEN_EXCHANGE_AUDIENCE};
use base64::Engine;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use support::azure::*;
use support::cluster;

async fn service_account(client: &kube::Client, ns: &str, name: &str) {
    let sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
}

struct Setup {
    azure: Azure,
    client: kube::Client,
    ns: String,
    identity: models::UserAssignedIdentity,
}

/// A user-assigned identity created through ARM, with a federated credential for
/// `system:serviceaccount:<ns>:aml-operator` created through ARM too.
async fn setup(shout_the_subject: bool) -> Setup {
    let client = cluster::client().await;
    let (issuer, ca) = cluster::issuer_and_ca(&client).await;
    let azure = Azure::start(vec![ca]).await;
    let ns = cluster::namespace(&client, "wi").await;
    service_account(&client, &ns, "aml-operator").await;
    service_account(&client, &ns, "other").await;

    azure.grant(
        &azure.resource_group_id(),
        "Managed Identity Contributor",
        APP_OBJECT_ID,
    );
    let arm = azure.arm(azure.app_credential("sp"));
    let path = format!(
        "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-{ns}",
        azure.resource_group_id()
    );
    let identity: models::UserAssignedIdentity = arm
        .put(
            &path,
            api_versions::MANAGED_IDENTITY,
            &models::UserAssignedIdentity {
                location: "eastus".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .body
        .unwrap();
    let mut subject = format!("system:serviceaccount:{ns}:aml-operator");
    if shout_the_subject {
        subject = subject.replace("aml-operator", "AML-OPERATOR");
    }
    let fic = models::FederatedIdentityCredential {
        properties: models::FederatedIdentityCredentialProperties {
            issuer,
            subject,
            audiences: vec![TOKEN_EXCHANGE_AUDIENCE.into()],
        },
        ..Default::default()
    };
    arm.put::<_, models::FederatedIdentityCredential>(
        &format!("{path}/federatedIdentityCredentials/aml-operator"),
        api_versions::MANAGED_IDENTITY,
        &fic,
    )
    .await
    .unwrap();
    Setup {
        azure,
        client,
        ns,
        identity,
    }
}

impl Setup {
    fn client_id(&self) -> String {
        self.identity
            .properties
            .as_ref()
            .unwrap()
            .client_id
            .clone()
            .unwrap()
    }

    fn credential(&self, service_account: &str) -> Credential {
        let source = Arc::new(ServiceAccountAssertion::new(
            self.client.clone(),
            &self.ns,
            service_account,
        ));
        Credential::workload_identity(
            format!("wi/{}", self.ns),
            &self.azure.cloud,
            &self.azure.transport,
            TENANT,
            &self.client_id(),
            source,
        )
        .unwrap()
    }
}

fn entra_codes(error: AzureError) -> (u16, String) {
    match error {
        AzureError::Entra { status, codes, .. } => (status, codes),
        other => panic!("expected an Entra refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn the_federated_service_account_signs_in_as_the_identity() {
    let s = setup(false).await;
    let token = s
        .credential("aml-operator")
        .request(
            "https://storage.azure.com",
            jiff::Timestamp::now().as_second(),
        )
        .await
        .unwrap();
    let claims = s.azure.emulator().verify_token(token.secret()).unwrap();
    assert_eq!(
        Some(claims.oid),
        s.identity.properties.as_ref().unwrap().principal_id.clone()
    );
    assert_eq!(claims.appid, s.client_id());
    assert_eq!(
        claims.xms_mirid.as_deref().map(str::to_ascii_lowercase),
        s.identity.id.as_deref().map(str::to_ascii_lowercase)
    );
    cluster::delete_namespace(&s.client, &s.ns).await;
}

#[tokio::test]
async fn another_service_account_of_the_namespace_is_refused_with_70021() {
    let s = setup(false).await;
    let error = s
        .credential("other")
        .request(
            "https://storage.azure.com",
            jiff::Timestamp::now().as_second(),
        )
        .await
        .unwrap_err();
    assert_eq!(entra_codes(error), (401, "70021".into()));
    cluster::delete_namespace(&s.client, &s.ns).await;
}

#[tokio::test]
async fn subjects_match_case_sensitively() {
    let s = setup(true).await;
    let error = s
        .credential("aml-operator")
        .request(
            "https://storage.azure.com",
            jiff::Timestamp::now().as_second(),
        )
        .await
        .unwrap_err();
    assert_eq!(entra_codes(error), (401, "70021".into()));
    cluster::delete_namespace(&s.client, &s.ns).await;
}

#[derive(Debug)]
struct Fixed(String);
impl aml_identity_operator::azure::AssertionSource for Fixed {
    fn assertion(&self) -> futures::future::BoxFuture<'_, Result<String, String>> {
        Box::pin(async move { Ok(self.0.clone()) })
    }
}

#[tokio::test]
async fn a_tampered_assertion_fails_signature_validation_and_an_old_one_expires() {
    let s = setup(false).await;
    let genuine = aml_identity_operator::azure::AssertionSource::assertion(
        &ServiceAccountAssertion::new(s.client.clone(), &s.ns, "aml-operator"),
    )
    .await
    .unwrap();

    // Same issuer, subject and audience, payload changed after signing.
    let parts: Vec<&str> = genuine.split('.').collect();
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut payload: serde_json::Value =
        serde_json::from_slice(&engine.decode(parts[1]).unwrap()).unwrap();
    payload["exp"] = (payload["exp"].as_i64().unwrap() + 86_400).into();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        engine.encode(payload.to_string()),
        parts[2]
    );
    let credential = |assertion: String| {
        Credential::workload_identity(
            "forged",
            &s.azure.cloud,
            &s.azure.transport,
            TENANT,
            &s.client_id(),
            Arc::new(Fixed(assertion)),
        )
        .unwrap()
    };
    let error = credential(forged)
        .request(
            "https://storage.azure.com",
            jiff::Timestamp::now().as_second(),
        )
        .await
        .unwrap_err();
    assert_eq!(entra_codes(error), (401, "5002738".into()));

    // The genuine assertion, two hours later by the emulator's clock, is past its expiry.
    s.azure.emulator().clock().advance(7200);
    let error = credential(genuine)
        .request(
            "https://storage.azure.com",
            jiff::Timestamp::now().as_second(),
        )
        .await
        .unwrap_err();
    assert_eq!(entra_codes(error), (400, "700024".into()));
    cluster::delete_namespace(&s.client, &s.ns).await;
}
