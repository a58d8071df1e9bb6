//! The renewal storm drill. The burst's ComputeIdentities share the few tokens the operator minted
//! for it (one per federated ServiceAccount, identity and audience), so their Secrets all expire
//! within seconds of each other. The drill watches every one of those Secrets until each has
//! renewed, and reports how the renewals spread (the operator's jitter), how far each came after
//! the time it was scheduled for, whether any came after its expiry, and how many Entra requests
//! the storm cost.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use crate::azure::Azure;
use crate::operator::Instances;
use crate::report::{self, Snapshot};
use crate::workload::Key;

/// Expiring outputs whose expiries span more than this are no storm.
const STORM_WINDOW: i64 = 60;

/// One output Secret's renewal annotations at one version.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Version {
    issued: i64,
    expires: i64,
    renewal: i64,
}

impl Version {
    /// What the operator wrote on it (its own reader of its annotations).
    fn of(secret: &impl kube::Resource) -> Option<Version> {
        aml_identity_operator::outputs::Expiry::read(secret).map(|e| Version {
            issued: e.issued,
            expires: e.expires,
            renewal: e.renewal,
        })
    }
}

/// One Secret renewed: when it was seen, and the version it replaced.
struct Renewed {
    at: f64,
    replaced: Version,
}

/// Watches the token Secrets of `keys`' ComputeIdentities until each has renewed once (or its
/// expiry has passed by `grace`), then prints the storm's figures and returns what failed.
pub async fn storm(
    client: &Client,
    instances: &Instances,
    azure: &Azure,
    keys: &[Key],
    tokens_per_lifetime: u64,
    grace: Duration,
) -> anyhow::Result<Vec<String>> {
    let wanted: BTreeSet<(String, String)> = keys
        .iter()
        .filter(|k| k.kind == "ComputeIdentity")
        .map(|k| (k.namespace.clone(), format!("{}-token", k.name)))
        .collect();
    anyhow::ensure!(
        !wanted.is_empty(),
        "the renewal storm needs ComputeIdentities in the burst"
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watch = {
        let api: Api<PartialObjectMeta<Secret>> = Api::all(client.clone());
        let config =
            watcher::Config::default().labels("app.kubernetes.io/managed-by=aml-identity-operator");
        let wanted = wanted.clone();
        tokio::spawn(async move {
            let mut secrets = watcher(api, config)
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(next) = secrets.next().await {
                let Ok(secret) = next else { continue };
                // The run's own names, in the run's own namespaces.
                let key = (secret.namespace().unwrap_or_default(), secret.name_any());
                if !wanted.contains(&key) {
                    continue;
                }
                if let Some(version) = Version::of(&secret)
                    && tx.send((unix_now_f64(), key, version)).is_err()
                {
                    break;
                }
            }
        })
    };

    // The versions the burst left, then every change until each has renewed.
    let mut first: BTreeMap<(String, String), Version> = BTreeMap::new();
    let mut current: BTreeMap<(String, String), Version> = BTreeMap::new();
    let mut renewed: BTreeMap<(String, String), Renewed> = BTreeMap::new();
    let listed = Instant::now() + Duration::from_secs(30);
    while first.len() < wanted.len() && Instant::now() < listed {
        match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            Ok(Some((_, key, version))) => {
                first.entry(key.clone()).or_insert(version);
                current.insert(key, version);
            }
            Ok(None) => break,
            Err(_) => {}
        }
    }
    if first.len() < wanted.len() {
        watch.abort();
        anyhow::bail!(
            "only {} of the burst's {} token Secrets carry an expiry",
            first.len(),
            wanted.len()
        );
    }
    let expiries: Vec<i64> = first.values().map(|v| v.expires).collect();
    let (earliest, latest) = (
        *expiries.iter().min().unwrap_or(&0),
        *expiries.iter().max().unwrap_or(&0),
    );
    let scheduled: Vec<i64> = first.values().map(|v| v.renewal).collect();
    let (due_from, due_to) = (
        *scheduled.iter().min().unwrap_or(&0),
        *scheduled.iter().max().unwrap_or(&0),
    );
    report::phase_header(&format!(
        "drill: renewal storm: {} token Secrets ({} tokens) expiring within {} s of each other",
        first.len(),
        2 * first.len(),
        latest - earliest
    ));
    println!(
        "renewals scheduled from {} s to {} s from now (a spread of {} s)",
        due_from - unix_now(),
        due_to - unix_now(),
        due_to - due_from
    );
    let mut failures = Vec::new();
    if latest - earliest > STORM_WINDOW {
        failures.push(format!(
            "no storm: the burst's token Secrets expire over {} s (more than {STORM_WINDOW}); use a --token-lifetime well above 1.5 times the burst's convergence",
            latest - earliest
        ));
    }

    // Until every Secret has renewed, or the last expiry is `grace` behind.
    let before = Snapshot::take(instances, azure).await;
    let mut entra_per_second: Vec<u64> = Vec::new();
    let mut last_entra = before.azure.entra;
    let mut next_sample = Instant::now() + Duration::from_secs(1);
    let give_up = latest + grace.as_secs() as i64;
    while renewed.len() < first.len() && unix_now() <= give_up {
        let wait = next_sample.saturating_duration_since(Instant::now());
        match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some((at, key, version))) => {
                let Some(was) = current.insert(key.clone(), version) else {
                    continue;
                };
                if version.expires > was.expires && !renewed.contains_key(&key) {
                    renewed.insert(key, Renewed { at, replaced: was });
                }
            }
            Ok(None) => break,
            Err(_) => {
                let entra = azure.counts().entra;
                entra_per_second.push(entra - last_entra);
                last_entra = entra;
                next_sample += Duration::from_secs(1);
            }
        }
    }
    watch.abort();
    let after = Snapshot::take(instances, azure).await;

    let at: Vec<f64> = renewed.values().map(|r| r.at).collect();
    let lag: Vec<f64> = renewed
        .values()
        .map(|r| r.at - r.replaced.renewal as f64)
        .collect();
    let late = renewed
        .values()
        .filter(|r| r.at >= r.replaced.expires as f64)
        .count();
    let never = first.len() - renewed.len();
    let mut per_second: BTreeMap<i64, u64> = BTreeMap::new();
    for t in &at {
        *per_second.entry(*t as i64).or_default() += 1;
    }
    let (from, to) = (
        at.iter().copied().fold(f64::INFINITY, f64::min),
        at.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    println!(
        "renewed {} of {}: over {:.0} s (first {:.0} s before the earliest expiry), at most {} in one second",
        renewed.len(),
        first.len(),
        (to - from).max(0.0),
        earliest as f64 - from,
        per_second.values().max().copied().unwrap_or(0)
    );
    println!(
        "after the scheduled renewal time: p50 {:.1} s, p99 {:.1} s, max {:.1} s; renewed after the expiry: {late}; never renewed: {never}",
        report::percentile(&lag, 0.5),
        report::percentile(&lag, 0.99),
        report::percentile(&lag, 1.0),
    );
    let storm = after.azure.since(&before.azure);
    report::azure_line(&storm);
    println!(
        "Entra: {} requests in the storm (one per federated identity and audience: {tokens_per_lifetime}), at most {} in one second",
        storm.entra,
        entra_per_second.iter().max().copied().unwrap_or(0)
    );
    report::operator_line(&before, &after, renewed.len());
    report::kubernetes_lines(&before, &after, renewed.len());

    if late > 0 || never > 0 {
        failures.push(format!(
            "renewal storm: {late} Secrets renewed after their expiry and {never} never renewed"
        ));
    }
    if storm.entra > tokens_per_lifetime {
        failures.push(format!(
            "renewal storm: {} Entra requests, more than one per federated identity and audience ({tokens_per_lifetime})",
            storm.entra
        ));
    }
    if storm.arm_writes > 0 {
        failures.push(format!(
            "renewal storm: {} ARM writes (renewing needs none)",
            storm.arm_writes
        ));
    }
    // The jitter spreads renewals over a twentieth of the lifetime: with more than a few dozen
    // Secrets, the scheduled times must cover a good part of it.
    let lifetime = first
        .values()
        .map(|v| v.expires - v.issued)
        .max()
        .unwrap_or(0);
    if first.len() >= 40 && (due_to - due_from) * 40 < lifetime {
        failures.push(format!(
            "renewal storm: renewals scheduled within {} s of each other: no jitter",
            due_to - due_from
        ));
    }
    Ok(failures)
}

fn unix_now_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn unix_now() -> i64 {
    unix_now_f64() as i64
}
