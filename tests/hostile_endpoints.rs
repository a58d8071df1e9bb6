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
    azure.transport = azure.transport.resolving("crmlwteama.azurecr.io", addr);
    azure.emulator().set_refresh_lifetime(Some(-60));
    let aad = azure
        .app_credential("sp")
        .request(&azure.cloud.container_registry_audience, now())
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

/// The operator end to end, two namespaces on one subscription: while ARM answers one team's
/// workspace with each hostile answer in turn, that workspace gets a reason, the other team's keeps
/// converging, and nothing panics.
#[tokio::test]
async fn one_teams_hostile_answers_never_stall_another_team() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, Patch, PatchParams};
    use support::cluster::{self, Operator};
    use support::e2e::{apply, azure_args, secret};

    const LABEL: &str = "amlidentity.io/hostile-test";
    let client = cluster::client().await;
    cluster::install_crds(&client).await;
    let azure = Azure::start(vec![]).await;
    azure.grant(&azure.resource_group_id(), "Contributor", APP_OBJECT_ID);
    let id = |name: &str| {
        format!(
            "{}/providers/Microsoft.MachineLearningServices/workspaces/{name}",
            azure.resource_group_id()
        )
    };
    azure
        .emulator()
        .seed(aml_identity_emulator::Seed {
            resources: ["mlw-hostile", "mlw-calm"]
                .iter()
                .map(|n| serde_json::json!({"id": id(n), "name": n, "location": "eastus", "properties": {"provisioningState": "Succeeded"}}))
                .collect(),
            ..Default::default()
        })
        .unwrap();
    let a = cluster::namespace(&client, "hostile-a").await;
    let b = cluster::namespace(&client, "hostile-b").await;
    let operator = Operator::start_across(
        &a,
        &format!("{LABEL}={a}"),
        &format!("lease-{a}"),
        "hostile-0",
        &azure_args(&azure),
    );
    for (ns, workspace) in [(&a, "mlw-hostile"), (&b, "mlw-calm")] {
        secret(&client, ns, "sp", "clientSecret", APP_SECRET).await;
        apply(&client, ns, serde_json::json!({
            "apiVersion": "amlidentity.io/v1alpha1", "kind": "AzureCredential",
            "metadata": {"name": "team", "labels": {LABEL: a}},
            "spec": {"tenantId": TENANT, "servicePrincipal": {"clientId": APP_CLIENT_ID, "clientSecretRef": {"name": "sp", "key": "clientSecret"}}},
        }))
        .await;
        apply(&client, ns, serde_json::json!({
            "apiVersion": "amlidentity.io/v1alpha1", "kind": "Workspace",
            "metadata": {"name": "ws", "labels": {LABEL: a}},
            "spec": {"credentialRef": {"name": "team"}, "subscriptionId": SUBSCRIPTION, "resourceGroup": RESOURCE_GROUP, "workspaceName": workspace, "configMapName": "cfg-0"},
        }))
        .await;
        support::e2e::ready_reason(&client, "Workspace", ns, "ws", "WorkspaceReady").await;
    }
    let workspaces = |ns: &str| cluster::dynamic_api(&client, &support::e2e::kind("Workspace"), ns);
    // The 429 comes last: it pauses that team's principal for the capped five minutes.
    let hostile: [(&str, Fault, &[&str]); 3] = [
        (
            "302 to another host",
            Fault {
                status: Some(302),
                location: Some("https://collector.attacker.example/x".into()),
                ..Fault::on("arm.GET")
            },
            &["UnexpectedResponse", "AzureError"],
        ),
        (
            "a 50 MB body",
            Fault {
                status: Some(200),
                body_bytes: Some(50 << 20),
                ..Fault::on("arm.GET")
            },
            &["UnexpectedResponse"],
        ),
        (
            "429 with Retry-After 2^64-1",
            Fault {
                status: Some(429),
                retry_after: Some(u64::MAX),
                ..Fault::on("arm.GET")
            },
            &["Throttled"],
        ),
    ];
    let poke = |ns: &str, round: String| {
        let api = workspaces(ns);
        async move {
            api.patch(
                "ws",
                &PatchParams::default(),
                &Patch::Merge(
                    serde_json::json!({"metadata": {"annotations": {"test/poke": round}}}),
                ),
            )
            .await
            .unwrap();
        }
    };
    let ready_is = |ns: &str, want: &'static str| {
        let api = workspaces(ns);
        async move {
            let obj = api.get("ws").await.ok()?;
            let (status, reason, _, _) = cluster::ready_condition(&obj)?;
            (status == want).then_some(reason)
        }
    };
    for (round, (what, fault, reasons)) in hostile.into_iter().enumerate() {
        // Healthy again first, so the reason below is this round's.
        azure.emulator().clear_faults();
        poke(&a, format!("{round}-calm")).await;
        cluster::wait_until(
            Duration::from_secs(30),
            "team a's workspace to recover",
            || ready_is(&a, "True"),
        )
        .await;
        azure.emulator().inject(Fault {
            path_contains: Some("mlw-hostile".into()),
            ..fault
        });
        // The hostile team's workspace is looked at again and gets a reason, not a hang.
        poke(&a, format!("{round}-hostile")).await;
        let reason = cluster::wait_until(
            Duration::from_secs(30),
            &format!("a reason for {what}"),
            || ready_is(&a, "False"),
        )
        .await;
        assert!(reasons.contains(&reason.as_str()), "{what}: {reason}");
        // Meanwhile the other team's workspace converges on a change: its new config.json.
        let name = format!("cfg-{}", round + 1);
        workspaces(&b)
            .patch(
                "ws",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"configMapName": name}})),
            )
            .await
            .unwrap();
        let config_maps = Api::<ConfigMap>::namespaced(client.clone(), &b);
        cluster::wait_until(
            Duration::from_secs(30),
            &format!("team b's workspace during {what}"),
            || {
                let (config_maps, name) = (config_maps.clone(), name.clone());
                async move { config_maps.get_opt(&name).await.ok()?.map(|_| ()) }
            },
        )
        .await;
    }
    azure.emulator().clear_faults();
    assert!(!operator.logs().contains("panicked"), "{}", operator.logs());
    drop(operator);
    cluster::delete_namespace(&client, &b).await;
    cluster::delete_namespace(&client, &a).await;
}
