//! The physical limit: a minimal client making, per object, the Kubernetes writes the operator's
//! work amounts to — the user's create, the finalizer, the output Secret (created, as the operator
//! creates a new object's, with the bytes the operator wrote for that kind) and the status (the
//! operator's status for that kind) — on the same API server, with the same number of requests in
//! flight.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::workload::{self, Key};

/// What the operator wrote for one object of a kind: copied into the raw writes.
#[derive(Clone, Debug)]
pub struct Sample {
    pub secret: Secret,
    pub status: serde_json::Value,
}

/// The output Secret's name for an object of the mix.
pub fn secret_name(key: &Key) -> String {
    let suffix = match key.kind {
        "ComputeIdentity" => "token",
        "Datastore" => "access",
        _ => "pull",
    };
    format!("{}-{suffix}", key.name)
}

/// Reads what the operator wrote for `key` (a Ready object).
pub async fn sample(client: &Client, key: &Key) -> anyhow::Result<Sample> {
    let object = workload::api(client, key.kind, Some(&key.namespace))
        .get(&key.name)
        .await?;
    let secret = Api::<Secret>::namespaced(client.clone(), &key.namespace)
        .get(&secret_name(key))
        .await?;
    Ok(Sample {
        secret,
        status: object.data["status"].clone(),
    })
}

/// One object's writes; `object` is its JSON as the operator phase applied it.
async fn write(
    client: &Client,
    key: &Key,
    object: serde_json::Value,
    sample: &Sample,
) -> anyhow::Result<()> {
    let created = workload::create(client, &object).await?;
    let api = workload::api(client, key.kind, Some(&key.namespace));
    api.patch(
        &key.name,
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"finalizers": [aml_identity_operator::controllers::FINALIZER]}}),
        ),
    )
    .await?;
    let name = secret_name(key);
    let meta = &sample.secret.metadata;
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {
            "name": name, "labels": meta.labels, "annotations": meta.annotations,
            "ownerReferences": [{"apiVersion": format!("{}/{}", workload::GROUP, workload::VERSION), "kind": key.kind,
                                 "name": key.name, "uid": created.uid(), "controller": true, "blockOwnerDeletion": true}],
        },
        "type": sample.secret.type_, "data": sample.secret.data,
    });
    let secret: Secret = serde_json::from_value(secret)?;
    Api::<Secret>::namespaced(client.clone(), &key.namespace)
        .create(
            &PostParams {
                field_manager: Some("aml-identity-bench-raw".into()),
                ..Default::default()
            },
            &secret,
        )
        .await?;
    api.patch_status(
        &key.name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": sample.status})),
    )
    .await?;
    Ok(())
}

/// Makes the writes of `objects` with `in_flight` at once; returns the time they took.
pub async fn run(
    client: &Client,
    objects: Vec<(Key, serde_json::Value)>,
    samples: &BTreeMap<&'static str, Sample>,
    in_flight: usize,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(objects)
        .map(|(key, object)| async move {
            let sample = samples
                .get(key.kind)
                .ok_or_else(|| anyhow::anyhow!("no sample of {}", key.kind))?;
            write(client, &key, object, sample).await
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let elapsed = start.elapsed();
    results.into_iter().collect::<anyhow::Result<()>>()?;
    Ok(elapsed)
}
