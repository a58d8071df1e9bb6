//! The Azure layer against the strict emulator: tokens, typed refusals, the token cache's single
//! flight, ARM RBAC and its effects, throttling and retries.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aml_identity_emulator::Fault;
use aml_identity_operator::azure::arm::RetryPolicy;
use aml_identity_operator::azure::models::{self, api_versions};
use aml_identity_operator::azure::{AzureError, Credential, TokenCache};
use support::azure::*;

#[tokio::test]
async fn client_secret_gets_a_v1_token_with_real_claims() {
    let azure = Azure::start(vec![]).await;
    let token = azure
        .app_credential("sp")
        .request(
            "https://storage.azure.com",
            jiff::Timestamp::now().as_second(),
        )
        .await
        .unwrap();
    let claims = azure
        .emulator()
        .verify_token(token.secret())
        .expect("a token the emulator signed");
    assert_eq!(claims.aud, "https://storage.azure.com");
    assert_eq!(claims.iss, format!("https://sts.windows.net/{TENANT}/"));
    assert_eq!(
        (
            claims.oid.as_str(),
            claims.tid.as_str(),
            claims.appid.as_str()
        ),
        (APP_OBJECT_ID, TENANT, APP_CLIENT_ID)
    );
    assert_eq!(
        token.expires_on, claims.exp,
        "expiry is read from the token itself"
    );
    assert!(claims.exp > claims.iat + 3000);
}

#[tokio::test]
async fn a_wrong_secret_is_refused_with_aadsts_7000215_and_no_secret_in_the_error() {
    let azure = Azure::start(vec![]).await;
    let wrong = "not-the-secret-4242";
    let credential = Credential::client_secret(
        "sp",
        &azure.cloud,
        &azure.transport,
        TENANT,
        APP_CLIENT_ID,
        wrong.into(),
    )
    .unwrap();
    let error = credential
        .request(
            "https://management.azure.com",
            jiff::Timestamp::now().as_second(),
        )
        .await
        .unwrap_err();
    match &error {
        AzureError::Entra { status, codes, .. } => {
            assert_eq!((*status, codes.as_str()), (401, "7000215"))
        }
        other => panic!("expected an Entra refusal, got {other:?}"),
    }
    assert!(!error.to_string().contains(wrong));
    assert_eq!(error.reason().as_str(), "AuthenticationFailed");
}

#[tokio::test]
async fn the_token_endpoint_refuses_scopes_without_default_and_unknown_tenants() {
    let azure = Azure::start(vec![]).await;
    let http = azure.transport.client().unwrap();
    let post = |tenant: &str, scope: &str| {
        http.post(format!(
            "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", APP_CLIENT_ID),
            ("client_secret", APP_SECRET),
            ("scope", scope),
        ])
    };
    let body: serde_json::Value = post(TENANT, "https://storage.azure.com/")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["error_codes"][0], 70011, "{body}");
    let body: serde_json::Value = post(TENANT, "User.Read.All")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["error_codes"][0], 1002012, "{body}");
    let response = post(
        "00000000-0000-0000-0000-00000000dead",
        "https://storage.azure.com/.default",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error_codes"][0], 90002);
}

#[tokio::test]
async fn fifty_concurrent_callers_cause_one_token_request() {
    let azure = Azure::start(vec![]).await;
    // Every request takes a while, so all fifty callers are waiting at once.
    azure.emulator().inject(Fault {
        latency_ms: 300,
        ..Fault::on("entra.token")
    });
    let cache = Arc::new(TokenCache::default());
    let credential = azure.app_credential("sp");
    let calls = (0..50).map(|_| {
        let cache = cache.clone();
        let credential = credential.clone();
        tokio::spawn(async move {
            cache
                .get(&credential, "https://vault.azure.net")
                .await
                .map(|t| t.expires_on)
        })
    });
    let results = futures::future::join_all(calls).await;
    assert!(results.iter().all(|r| matches!(r, Ok(Ok(_)))));
    assert_eq!(
        azure.emulator().counter(&format!(
            "entra.token:{APP_CLIENT_ID}:https://vault.azure.net"
        )),
        1
    );
    assert_eq!(azure.emulator().counter("entra.token"), 1);
}

#[tokio::test]
async fn the_cache_renews_at_two_thirds_of_the_lifetime() {
    let azure = Azure::start(vec![]).await;
    let now = Arc::new(std::sync::atomic::AtomicI64::new(
        jiff::Timestamp::now().as_second(),
    ));
    let clock = now.clone();
    let cache = TokenCache::with_clock(Arc::new(move || {
        clock.load(std::sync::atomic::Ordering::Relaxed)
    }));
    let credential = azure.app_credential("sp");
    let first = cache
        .get(&credential, "https://storage.azure.com")
        .await
        .unwrap();
    now.fetch_add(60, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        cache
            .get(&credential, "https://storage.azure.com")
            .await
            .unwrap()
            .secret(),
        first.secret()
    );
    now.store(first.stale_at(), std::sync::atomic::Ordering::Relaxed);
    cache
        .get(&credential, "https://storage.azure.com")
        .await
        .unwrap();
    assert_eq!(
        azure.emulator().counter("entra.token"),
        2,
        "a stale token is replaced, a fresh one reused"
    );
}

#[tokio::test]
async fn a_bearer_token_outlives_a_failed_renewal_but_never_its_expiry() {
    let azure = Azure::start(vec![]).await;
    let now = Arc::new(std::sync::atomic::AtomicI64::new(
        jiff::Timestamp::now().as_second(),
    ));
    let clock = now.clone();
    let cache = TokenCache::with_clock(Arc::new(move || {
        clock.load(std::sync::atomic::Ordering::Relaxed)
    }));
    let credential = azure.app_credential("sp");
    let audience = "https://management.azure.com";
    let first = cache.get(&credential, audience).await.unwrap();
    // Stale, and Entra refuses every request from now on.
    azure.emulator().inject(Fault {
        status: Some(503),
        ..Fault::on("entra.token")
    });
    now.store(first.stale_at() + 1, std::sync::atomic::Ordering::Relaxed);
    let stand_in = cache.get(&credential, audience).await.unwrap();
    assert_eq!(
        stand_in.secret(),
        first.secret(),
        "the still-valid token is used"
    );
    assert!(
        cache
            .get_newer_than(&credential, audience, i64::MIN)
            .await
            .is_err(),
        "a caller that needs a fresh token is not given the stand-in"
    );
    // Close to its expiry it is no stand-in any more.
    now.store(
        first.expires_on - aml_identity_operator::azure::token_cache::FALLBACK_MARGIN,
        std::sync::atomic::Ordering::Relaxed,
    );
    assert!(cache.get(&credential, audience).await.is_err());
}

fn identity_path(azure: &Azure, name: &str) -> String {
    format!(
        "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}",
        azure.resource_group_id()
    )
}

#[tokio::test]
async fn arm_writes_need_a_role_and_granted_roles_take_effect() {
    let azure = Azure::start(vec![]).await;
    let arm = azure.arm(azure.app_credential("sp"));
    let path = identity_path(&azure, "id-cpu-cluster");
    let body = models::UserAssignedIdentity {
        location: "eastus".into(),
        ..Default::default()
    };

    let refused = arm
        .put::<_, models::UserAssignedIdentity>(&path, api_versions::MANAGED_IDENTITY, &body)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, AzureError::Arm { status: 403, code, .. } if code == "AuthorizationFailed"),
        "{refused:?}"
    );
    assert_eq!(refused.reason().as_str(), "PermissionDenied");

    azure.grant(&azure.resource_group_id(), "Contributor", APP_OBJECT_ID);
    let created = arm
        .put::<_, models::UserAssignedIdentity>(&path, api_versions::MANAGED_IDENTITY, &body)
        .await
        .unwrap();
    assert_eq!(created.status, 201);
    assert!(
        created.ratelimit.writes.is_some(),
        "rate-limit headers are surfaced"
    );
    let identity: models::UserAssignedIdentity = arm
        .get(&path, api_versions::MANAGED_IDENTITY)
        .await
        .unwrap()
        .expect("exists");
    let principal = identity.properties.unwrap().principal_id.unwrap();
    assert!(
        arm.get::<models::UserAssignedIdentity>(
            &identity_path(&azure, "missing"),
            api_versions::MANAGED_IDENTITY
        )
        .await
        .unwrap()
        .is_none()
    );

    // Contributor cannot grant roles; Owner can, and the grant takes effect at once.
    let scope = azure.resource_group_id();
    let assignment = models::RoleAssignment {
        properties: models::RoleAssignmentProperties {
            description: None,
            role_definition_id: format!(
                "/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/4633458b-17de-408a-b874-0445c86b69e6"
            ),
            principal_id: principal.clone(),
            principal_type: Some("ServicePrincipal".into()),
            scope: None,
        },
        ..Default::default()
    };
    let ra_path =
        |name: &str| format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}");
    let name = "0b4c7f7e-1a2b-4c3d-8e9f-0a1b2c3d4e5f";
    let refused = arm
        .put::<_, models::RoleAssignment>(&ra_path(name), api_versions::AUTHORIZATION, &assignment)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, AzureError::Arm { status: 403, .. }),
        "{refused:?}"
    );
    azure.grant(&scope, "Owner", APP_OBJECT_ID);
    let vault = format!("{scope}/providers/Microsoft.KeyVault/vaults/kv-mlw-team-a");
    assert!(!azure.emulator().authorized(
        &principal,
        "Microsoft.KeyVault/vaults/secrets/getSecret/action",
        &vault,
        true
    ));
    arm.put::<_, models::RoleAssignment>(&ra_path(name), api_versions::AUTHORIZATION, &assignment)
        .await
        .unwrap();
    assert!(azure.emulator().authorized(
        &principal,
        "Microsoft.KeyVault/vaults/secrets/getSecret/action",
        &vault,
        true
    ));

    // The same grant under another name is RoleAssignmentExists.
    let again = arm
        .put::<_, models::RoleAssignment>(
            &ra_path("1b4c7f7e-1a2b-4c3d-8e9f-0a1b2c3d4e5f"),
            api_versions::AUTHORIZATION,
            &assignment,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&again, AzureError::Arm { status: 409, code, .. } if code == "RoleAssignmentExists"),
        "{again:?}"
    );

    arm.delete(&ra_path(name), api_versions::AUTHORIZATION)
        .await
        .unwrap();
    assert!(!azure.emulator().authorized(
        &principal,
        "Microsoft.KeyVault/vaults/secrets/getSecret/action",
        &vault,
        true
    ));
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused_by_arm() {
    let azure = Azure::start(vec![]).await;
    azure.grant(&azure.resource_group_id(), "Owner", APP_OBJECT_ID);
    let storage = azure
        .app_credential("sp")
        .request(
            "https://storage.azure.com",
            jiff::Timestamp::now().as_second(),
        )
        .await
        .unwrap();
    let response = azure
        .transport
        .client()
        .unwrap()
        .get(format!(
            "https://management.azure.com{}?api-version={}",
            identity_path(&azure, "x"),
            api_versions::MANAGED_IDENTITY
        ))
        .bearer_auth(storage.secret())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "InvalidAuthenticationTokenAudience");
}

#[tokio::test]
async fn a_429_is_never_retried_before_retry_after() {
    let azure = Azure::start(vec![]).await;
    azure.grant(&azure.resource_group_id(), "Reader", APP_OBJECT_ID);
    let arm = azure.arm(azure.app_credential("sp"));
    azure.emulator().inject(Fault {
        status: Some(429),
        retry_after: Some(2),
        times: Some(1),
        ..Fault::on("arm.GET")
    });
    let started = Instant::now();
    let found = arm
        .get::<models::UserAssignedIdentity>(
            &identity_path(&azure, "absent"),
            api_versions::MANAGED_IDENTITY,
        )
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert!(found.is_none());
    assert!(
        elapsed >= Duration::from_secs(2),
        "retried after {elapsed:?}, before Retry-After"
    );
    assert_eq!(
        azure.emulator().counter("arm.GET.userAssignedIdentities"),
        2
    );

    // A Retry-After beyond the policy's patience is handed back, not slept through (and capped at
    // five minutes: an endpoint cannot pause a principal for an hour).
    azure.emulator().inject(Fault {
        status: Some(429),
        retry_after: Some(3600),
        times: Some(1),
        ..Fault::on("arm.GET")
    });
    let error = arm
        .get::<models::UserAssignedIdentity>(
            &identity_path(&azure, "absent"),
            api_versions::MANAGED_IDENTITY,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            AzureError::Throttled {
                retry_after: 300,
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_503_with_retry_after_waits_it_out_and_the_emulator_sees_nothing_early() {
    let azure = Azure::start(vec![]).await;
    azure.grant(&azure.resource_group_id(), "Reader", APP_OBJECT_ID);
    let arm = azure.arm(azure.app_credential("sp"));
    azure.emulator().inject(Fault {
        status: Some(503),
        retry_after: Some(2),
        times: Some(1),
        ..Fault::on("arm.GET")
    });
    let started = Instant::now();
    let found = arm
        .get::<models::UserAssignedIdentity>(
            &identity_path(&azure, "absent"),
            api_versions::MANAGED_IDENTITY,
        )
        .await
        .unwrap();
    assert!(found.is_none());
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "retried after {:?}, before Retry-After",
        started.elapsed()
    );
    assert_eq!(
        azure.emulator().counter("arm.GET.userAssignedIdentities"),
        2
    );
    assert_eq!(azure.emulator().early_requests(), 0);
}

#[tokio::test]
async fn a_throttled_token_request_pauses_the_principal_for_every_audience_until_retry_after() {
    let azure = Azure::start(vec![]).await;
    azure.emulator().inject(Fault {
        status: Some(429),
        retry_after: Some(2),
        times: Some(1),
        ..Fault::on("entra.token")
    });
    let cache = TokenCache::default();
    let credential = azure.app_credential("sp");
    let first = cache
        .get(&credential, "https://vault.azure.net")
        .await
        .unwrap_err();
    assert!(
        matches!(first, AzureError::Throttled { retry_after: 2, .. }),
        "{first:?}"
    );
    // Another audience of the same principal: refused here, nothing sent.
    let second = cache
        .get(&credential, "https://storage.azure.com")
        .await
        .unwrap_err();
    assert!(
        matches!(&second, AzureError::Throttled { code, .. } if code == "ClientPaused"),
        "{second:?}"
    );
    assert_eq!(azure.emulator().counter("entra.token"), 1);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    cache
        .get(&credential, "https://storage.azure.com")
        .await
        .unwrap();
    assert_eq!(azure.emulator().counter("entra.token"), 2);
    // The emulator, which told the principal when to come back, saw nothing before then; had the
    // second call gone out, it would have counted it.
    assert_eq!(azure.emulator().early_requests(), 0);
}

#[tokio::test]
async fn the_emulator_counts_a_request_sent_before_its_retry_after() {
    let azure = Azure::start(vec![]).await;
    azure.emulator().inject(Fault {
        status: Some(429),
        retry_after: Some(30),
        times: Some(1),
        ..Fault::on("entra.token")
    });
    // Two caches: nothing shared tells the second that the first was told to wait.
    let credential = azure.app_credential("sp");
    let _ = TokenCache::default()
        .get(&credential, "https://vault.azure.net")
        .await
        .unwrap_err();
    // Past the time a request could have been on its way before the answer was read.
    tokio::time::sleep(aml_identity_emulator::IN_FLIGHT * 2).await;
    TokenCache::default()
        .get(&credential, "https://vault.azure.net")
        .await
        .unwrap();
    assert_eq!(azure.emulator().counter("early:entra.token"), 1);
    assert_eq!(azure.emulator().overlapping_requests(), 0);
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_and_bounded() {
    let azure = Azure::start(vec![]).await;
    azure.grant(&azure.resource_group_id(), "Reader", APP_OBJECT_ID);
    let policy = RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(2),
        max_retry_after: Duration::from_secs(60),
        ..Default::default()
    };
    let arm = azure.arm(azure.app_credential("sp")).with_retry(policy);
    azure.emulator().inject(Fault {
        status: Some(503),
        ..Fault::on("arm.GET")
    });
    let started = Instant::now();
    let error = arm
        .get::<models::UserAssignedIdentity>(
            &identity_path(&azure, "absent"),
            api_versions::MANAGED_IDENTITY,
        )
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(error, AzureError::Arm { status: 503, .. }),
        "{error:?}"
    );
    assert!(error.is_transient());
    assert_eq!(
        azure.emulator().counter("arm.GET.userAssignedIdentities"),
        4,
        "exactly max_attempts requests"
    );
    // Backoff is at least half of 200 + 400 + 800 ms, and bounded.
    assert!(
        elapsed >= Duration::from_millis(700) && elapsed < Duration::from_secs(10),
        "{elapsed:?}"
    );
}

/// A self-signed RSA certificate and its key, as one PEM (what a certificate Secret holds).
fn rsa_certificate() -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["aml-platform".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn a_certificate_credential_signs_in_only_with_a_registered_certificate() {
    let azure = Azure::start(vec![]).await;
    let (cert, key) = rsa_certificate();
    let pem = format!("{cert}{key}");
    let credential = Credential::client_certificate(
        "cert",
        &azure.cloud,
        &azure.transport,
        TENANT,
        APP_CLIENT_ID,
        &pem,
    )
    .unwrap();
    let unknown = credential
        .request(
            "https://management.azure.com",
            jiff::Timestamp::now().as_second(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&unknown, AzureError::Entra { status: 401, codes, .. } if codes == "700027"),
        "{unknown:?}"
    );

    azure
        .emulator()
        .seed(aml_identity_emulator::Seed {
            service_principals: vec![aml_identity_emulator::state::ServicePrincipal {
                tenant_id: TENANT.into(),
                client_id: APP_CLIENT_ID.into(),
                object_id: APP_OBJECT_ID.into(),
                display_name: "aml-platform".into(),
                secrets: vec![APP_SECRET.into()],
                federated_credentials: vec![],
                certificates: vec![cert.clone()],
            }],
            ..Default::default()
        })
        .unwrap();
    let token = credential
        .request(
            "https://management.azure.com",
            jiff::Timestamp::now().as_second(),
        )
        .await
        .unwrap();
    assert_eq!(
        azure
            .emulator()
            .verify_token(token.secret())
            .unwrap()
            .appidacr,
        "2"
    );

    // Another key presenting the registered certificate's thumbprint is refused.
    let (_, other_key) = rsa_certificate();
    let impostor = Credential::client_certificate(
        "impostor",
        &azure.cloud,
        &azure.transport,
        TENANT,
        APP_CLIENT_ID,
        &format!("{cert}{other_key}"),
    )
    .unwrap();
    let refused = impostor
        .request(
            "https://management.azure.com",
            jiff::Timestamp::now().as_second(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, AzureError::Entra { status: 401, codes, .. } if codes == "700027"),
        "{refused:?}"
    );
    assert!(
        Credential::client_certificate(
            "bad",
            &azure.cloud,
            &azure.transport,
            TENANT,
            APP_CLIENT_ID,
            "not a pem"
        )
        .is_err()
    );
}

#[tokio::test]
async fn a_managed_identity_credential_asks_imds_for_the_selected_identity() {
    use aml_identity_emulator::state::{ImdsSeed, UserAssignedIdentity};
    use aml_identity_operator::azure::credential::ManagedIdentitySelector;
    let azure = Azure::start(vec![]).await;
    let id = format!(
        "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-node",
        azure.resource_group_id()
    );
    let client_id = "6e3c1b2a-9d8f-4e7a-b6c5-d4e3f2a1b0c9";
    azure
        .emulator()
        .seed(aml_identity_emulator::Seed {
            user_assigned_identities: vec![UserAssignedIdentity {
                id: id.clone(),
                location: "eastus".into(),
                tenant_id: TENANT.into(),
                client_id: client_id.into(),
                principal_id: "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a".into(),
                tags: Default::default(),
                federated_credentials: vec![],
            }],
            imds: Some(ImdsSeed {
                system_assigned: Some(APP_OBJECT_ID.into()),
                user_assigned: vec![id.clone()],
            }),
            ..Default::default()
        })
        .unwrap();
    let imds = format!("http://{}", azure.running.imds_addr);
    let by = |selector| {
        Credential::managed_identity(
            "mi",
            &azure.cloud,
            &azure.transport,
            TENANT,
            &imds,
            selector,
        )
        .unwrap()
    };

    let user = by(ManagedIdentitySelector::ResourceId(id.clone()))
        .request(
            "https://management.azure.com",
            jiff::Timestamp::now().as_second(),
        )
        .await
        .unwrap();
    assert_eq!(user.claims.appid.as_deref(), Some(client_id));
    let by_client = by(ManagedIdentitySelector::ClientId(client_id.into()))
        .request(
            "https://vault.azure.net",
            jiff::Timestamp::now().as_second(),
        )
        .await
        .unwrap();
    assert_eq!(
        by_client.claims.aud.as_deref(),
        Some("https://vault.azure.net")
    );
    let system = by(ManagedIdentitySelector::System)
        .request(
            "https://management.azure.com",
            jiff::Timestamp::now().as_second(),
        )
        .await
        .unwrap();
    assert_eq!(system.claims.oid.as_deref(), Some(APP_OBJECT_ID));
    let missing = by(ManagedIdentitySelector::ClientId(
        "11111111-2222-3333-4444-555555555555".into(),
    ))
    .request(
        "https://management.azure.com",
        jiff::Timestamp::now().as_second(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(missing, AzureError::Entra { status: 400, .. }),
        "{missing:?}"
    );
}

#[tokio::test]
async fn the_azure_cli_credential_runs_az_and_reads_its_token() {
    use std::os::unix::fs::PermissionsExt;
    let azure = Azure::start(vec![]).await;
    let real = azure
        .app_credential("sp")
        .request(
            "https://management.azure.com",
            jiff::Timestamp::now().as_second(),
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A stand-in for `az` that records how it was called and prints what `az account
    // get-access-token --output json` prints.
    let output = serde_json::json!({"accessToken": real.secret(), "expiresOn": "2026-11-26 21:00:00.000000", "expires_on": real.expires_on, "subscription": SUBSCRIPTION, "tenant": TENANT, "tokenType": "Bearer"});
    std::fs::write(dir.path().join("token.json"), output.to_string()).unwrap();
    let script = dir.path().join("az");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" > {0}/args\ncat {0}/token.json\n",
            dir.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    let credential =
        Credential::azure_cli("cli", &azure.cloud, &azure.transport, TENANT, &script).unwrap();
    let token = credential
        .request(
            "https://management.azure.com",
            jiff::Timestamp::now().as_second(),
        )
        .await
        .unwrap();
    assert_eq!(token.claims.oid.as_deref(), Some(APP_OBJECT_ID));
    assert_eq!(token.expires_on, real.expires_on);
    let args = std::fs::read_to_string(dir.path().join("args")).unwrap();
    assert_eq!(
        args.trim(),
        format!(
            "account get-access-token --resource https://management.azure.com --tenant {TENANT} --output json"
        )
    );

    std::fs::write(
        &script,
        "#!/bin/sh\necho \"ERROR: Please run 'az login' to setup account.\" >&2\nexit 1\n",
    )
    .unwrap();
    let error = credential
        .request(
            "https://management.azure.com",
            jiff::Timestamp::now().as_second(),
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("az login"), "{error}");
    let missing = Credential::azure_cli(
        "cli",
        &azure.cloud,
        &azure.transport,
        TENANT,
        &dir.path().join("absent"),
    )
    .unwrap();
    assert!(
        missing
            .request(
                "https://management.azure.com",
                jiff::Timestamp::now().as_second()
            )
            .await
            .unwrap_err()
            .to_string()
            .contains("install it")
    );
}

#[tokio::test]
async fn the_arm_client_sends_nothing_outside_its_ceiling() {
    use aml_identity_operator::azure::scope::Ceiling;
    let azure = Azure::start(vec![]).await;
    let ceiling = Ceiling::for_namespace(
        &[format!(
            "/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-aml-{{namespace}}"
        )],
        "team-a",
    )
    .unwrap();
    let arm = azure
        .arm(azure.app_credential("ceiling"))
        .within(std::sync::Arc::new(ceiling));
    let other = format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-aml-team-ab/providers/Microsoft.KeyVault/vaults/kv"
    );
    let sneaky = format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-aml-team-a/providers/Microsoft.KeyVault/vaults/../../../rg-aml-team-b"
    );
    for path in [other, sneaky] {
        let refused = arm
            .get::<serde_json::Value>(&path, "2024-11-01")
            .await
            .unwrap_err();
        assert!(
            matches!(
                refused,
                aml_identity_operator::azure::AzureError::OutOfScope(_)
            ),
            "{refused}"
        );
    }
    assert_eq!(
        (
            azure.emulator().requests("arm."),
            azure.emulator().requests("entra.token")
        ),
        (0, 0),
        "not even a token was requested"
    );
    // Inside the ceiling it is an ordinary client.
    azure.grant(&azure.resource_group_id(), "Owner", APP_OBJECT_ID);
    let inside = format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-aml-team-a/providers/Microsoft.KeyVault/vaults/kv"
    );
    assert!(
        arm.get::<serde_json::Value>(&inside, "2024-11-01")
            .await
            .is_ok()
    );
}
