//! What the operator watches: the cluster's other Secrets cost it neither memory nor a read of
//! their data, and a Secret an object reads still brings that object back at once.

mod support;

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use support::azure::*;
use support::cluster::{self, Operator};
use support::e2e::{apply, azure_args, ready_reason, secret};

const LABEL: &str = "amlidentity.io/watch-test";

/// Resident memory once it has held steady (two equal readings 1 s apart, at most 10 s).
async fn settled_rss(operator: &Operator) -> u64 {
    let mut last = operator.rss_kib().expect("the operator runs");
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = operator.rss_kib().expect("the operator runs");
        if now == last {
            break;
        }
        last = now;
    }
    last
}

#[tokio::test]
async fn unrelated_secrets_do_not_grow_the_operator() {
    let client = cluster::client().await;
    cluster::install_crds(&client).await;
    let azure = Azure::start(vec![]).await;
    let home = cluster::namespace(&client, "watch-home").await;
    let noise = cluster::namespace(&client, "watch-noise").await;
    let operator = Operator::start_across(
        &home,
        &format!("{LABEL}={home}"),
        &format!("lease-{home}"),
        "watch-0",
        &azure_args(&azure),
    );
    // A credential whose Secret does not exist yet: its arrival must still be noticed after the
    // noise below.
    let name = apply(&client, &home, serde_json::json!({
        "apiVersion": "amlidentity.io/v1alpha1", "kind": "AzureCredential",
        "metadata": {"name": "team-a", "labels": {LABEL: home}},
        "spec": {"tenantId": TENANT, "servicePrincipal": {"clientId": APP_CLIENT_ID, "clientSecretRef": {"name": "late", "key": "clientSecret"}}},
    }))
    .await;
    ready_reason(
        &client,
        "AzureCredential",
        &home,
        &name,
        "CredentialNotFound",
    )
    .await;
    let before = settled_rss(&operator).await;

    // 1,000 Secrets of 100 KiB each in a namespace no object of the operator's lives in.
    let secrets = Api::<Secret>::namespaced(client.clone(), &noise);
    let payload = k8s_openapi::ByteString((0..100 * 1024).map(|i| (i % 251) as u8).collect());
    let started = std::time::Instant::now();
    futures::stream::iter(0..1000)
        .map(|i| {
            let (secrets, payload) = (secrets.clone(), payload.clone());
            async move {
                let secret = Secret {
                    metadata: kube::api::ObjectMeta {
                        name: Some(format!("unrelated-{i}")),
                        ..Default::default()
                    },
                    data: Some([("blob".to_string(), payload)].into()),
                    ..Default::default()
                };
                secrets
                    .create(&PostParams::default(), &secret)
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    let created_in = started.elapsed();

    // The watch is past the noise once the Secret written after it brings the credential back.
    secret(&client, &home, "late", "clientSecret", APP_SECRET).await;
    ready_reason(&client, "AzureCredential", &home, &name, "Authenticated").await;
    let after = settled_rss(&operator).await;
    let grown = after.saturating_sub(before);
    println!(
        "operator RSS: {before} KiB before, {after} KiB after 1,000 unrelated 100 KiB Secrets \
         (+{grown} KiB; they took {:.1} s to create)",
        created_in.as_secs_f64()
    );
    assert!(
        grown < 5 * 1024,
        "the operator grew by {grown} KiB with Secrets it has no use for"
    );
    assert!(!operator.logs().contains("panicked"));
    drop(operator);
    cluster::delete_namespace(&client, &noise).await;
    cluster::delete_namespace(&client, &home).await;
}
