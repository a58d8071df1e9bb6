//! What a broken or hostile endpoint can send the Azure layer, and what it makes of it: expiries
//! in the past or centuries ahead are refused, `Retry-After` is capped and pauses only the
//! principal it was sent to, long-running operations are given up after a deadline, redirects
//! are not followed, and huge bodies are not read — errors every time, never a panic or a stall.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aml_identity_emulator::Fault;
use aml_identity_operator::azure::arm::{ArmClient, Budget, RetryPolicy};
use aml_identity_operator::azure::models::Workspace;
use aml_identity_operator::azure::models::ml_api_versions::MACHINE_LEARNING;
use aml_identity_operator::azure::{AzureError, TokenCache, acr};
use support::azure::*;

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn workspace_path(azure: &Azure) -> String {
    format!(
        "{}/providers/Microsoft.MachineLearningServices/workspaces/mlw",
        azure.resource_group_id()
    )
}

#[tokio::test]
async fn tokens_already_expired_or_living_for_centuries_are_refused() {
    let azure = Azure::start(vec![]).await;
    for (lifetime, says) in [
        (-10, "already expired"),
        (16_000_000_000, "more than a day"),
    ] {
        azure
            .emulator()
            .set_token_lifetime(APP_CLIENT_ID, Some(lifetime));
        let refused = azure
            .app_credential(&format!("sp{lifetime}"))
            .request("https://management.azure.com", now())
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, AzureError::Unexpected(m) if m.contains(says)),
            "{refused:?}"
        );
    }
    azure.emulator().set_token_lifetime(APP_CLIENT_ID, None);
    assert!(
        azure
            .app_credential("sp")
            .request("https://management.azure.com", now())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn an_acr_refresh_token_already_expired_is_refused() {
    let mut azure = Azure::start(vec![]).await;
    let registry = format!(
        "{}/providers/Microsoft.ContainerRegistry/registries/crmlwteama",
        azure.resource_group_id()
    );
    azure
        .emulator()
        .seed(aml_identity_emulator::Seed {
            registries: vec![aml_identity_emulator::state::Registry {
                id: registry.clone(),
                login_server: "crmlwteama.azurecr.io".into(),
                admin_user_enabled: false,
            }],
            ..Default::default()
        })
        .unwrap();
    azure.grant(&registry, "AcrPull", APP_OBJECT_ID);
    let addr = azure.running.https_addr;
    azure
        .transport
        .host_overrides
        .push(("crmlwteama.azurecr.io".into(), addr));
    azure.emulator().set_refresh_lifetime(Some(-60));
    let aad = azure
        .app_credential("sp")
        .request(acr::ACR_AUDIENCE, now())
        .await
        .unwrap();
    let refused = acr::exchange(
        &azure.transport.client().unwrap(),
        "crmlwteama.azurecr.io",
        TENANT,
        aad.secret(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&refused, AzureError::Unexpected(m) if m.contains("already expired")),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_retry_after_of_centuries_is_capped_and_pauses_only_that_principal() {
    let azure = Azure::start(vec![]).await;
    azure.grant(&azure.resource_group_id(), "Reader", APP_OBJECT_ID);
    // Two principals' clients share the operator's budget, as every object's client does.
    let (tokens, budget) = (Arc::new(TokenCache::default()), Arc::new(Budget::default()));
    let client = |key: &str| {
        ArmClient::new(
            azure.transport.client().unwrap(),
            &azure.cloud.resource_manager,
            azure.app_credential(key),
            tokens.clone(),
            budget.clone(),
        )
    };
    for (key, retry_after) in [("first", u64::MAX), ("second", 60_000_000)] {
        let throttled = client(key);
        azure.emulator().inject(Fault {
            status: Some(429),
            retry_after: Some(retry_after),
            times: Some(1),
            ..Fault::on("arm.GET")
        });
        // Azure's 429 first, then the client's own pause: both five minutes at most, and neither
        // waited through in place.
        for _ in 0..2 {
            let started = Instant::now();
            let refused = throttled
                .get::<Workspace>(&workspace_path(&azure), MACHINE_LEARNING)
                .await
                .unwrap_err();
            assert!(
                matches!(
                    refused,
                    AzureError::Throttled {
                        retry_after: 1..=300,
                        ..
                    }
                ),
                "{refused:?}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "it does not wait in place"
            );
        }
    }
    // Another principal on the same subscription is not paused.
    let started = Instant::now();
    client("third")
        .get::<Workspace>(&workspace_path(&azure), MACHINE_LEARNING)
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_long_running_operation_that_never_ends_is_given_up() {
    let azure = Azure::start_configured(|c| {
        c.lro_polls = u32::MAX;
        c.lro_retry_after = 0;
    })
    .await;
    azure.grant(&azure.resource_group_id(), "Contributor", APP_OBJECT_ID);
    let arm = azure
        .arm(azure.app_credential("sp"))
        .with_retry(RetryPolicy {
            lro_deadline: Duration::from_secs(2),
            ..Default::default()
        });
    let started = Instant::now();
    let refused = arm
        .put_and_wait::<_, Workspace>(
            &workspace_path(&azure),
            MACHINE_LEARNING,
            &serde_json::json!({"location": "eastus", "identity": {"type": "SystemAssigned"}, "properties": {}}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, AzureError::Unexpected(m) if m.contains("did not finish")),
        "{refused:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_redirect_elsewhere_is_not_followed_and_a_huge_body_not_read() {
    let azure = Azure::start(vec![]).await;
    azure.grant(&azure.resource_group_id(), "Reader", APP_OBJECT_ID);
    let arm = azure.arm(azure.app_credential("sp"));
    azure.emulator().inject(Fault {
        status: Some(302),
        location: Some("https://collector.attacker.example/steal".into()),
        times: Some(1),
        ..Fault::on("arm.GET")
    });
    let refused = arm
        .get::<Workspace>(&workspace_path(&azure), MACHINE_LEARNING)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, AzureError::Arm { status: 302, .. }),
        "{refused:?}"
    );

    azure.emulator().inject(Fault {
        status: Some(200),
        body_bytes: Some(50 * 1024 * 1024),
        times: Some(1),
        ..Fault::on("arm.GET")
    });
    let refused = arm
        .get::<Workspace>(&workspace_path(&azure), MACHINE_LEARNING)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, AzureError::Unexpected(m) if m.contains("larger than")),
        "{refused:?}"
    );
}
