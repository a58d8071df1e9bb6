//! Failure drills on a converged run: the API server restarted under the operator, and every
//! operator instance killed with SIGKILL again and again while objects arrive and tokens renew.
//! Each prints its figures and returns what failed.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::azure::{Azure, Inventory};
use crate::operator::Instances;
use crate::readiness::{self, Tracker};
use crate::report;
use crate::workload::{self, KINDS, Key, Run};

/// What every drill works on.
pub struct Bench<'a> {
    pub client: &'a Client,
    pub run: &'a Run,
    pub tracker: &'a Tracker,
    pub in_flight: usize,
    pub timeout: Duration,
}

/// Restarts the API server with `command` (which returns once it serves again), then applies
/// `keys`: the operator must reconcile them without a restart of its own, and what was Ready
/// before must still be.
pub async fn api_server_restart(
    bench: &Bench<'_>,
    instances: &mut Instances,
    command: &str,
    keys: &[Key],
    before: &[Key],
) -> anyhow::Result<Vec<String>> {
    report::phase_header(&format!(
        "drill: API server restart (`{command}`), then {} new objects",
        keys.len()
    ));
    let pids: Vec<u32> = instances.0.iter().map(|o| o.pid()).collect();
    let started = Instant::now();
    let status = std::process::Command::new("sh")
        .args(["-c", command])
        .status()?;
    anyhow::ensure!(status.success(), "`{command}` failed: {status}");
    let restarted = started.elapsed();
    crate::apply_all(
        bench.client,
        bench.run,
        bench.tracker,
        keys,
        bench.in_flight,
    )
    .await?;
    let missing = bench.tracker.wait(keys, bench.timeout).await;
    let converged = bench.tracker.last_ready(keys).map(|t| t - started);
    println!(
        "API server back in {:.1} s; the new objects all Ready {} after the restart began",
        restarted.as_secs_f64(),
        converged.map_or("—".into(), |c| format!("{:.1} s", c.as_secs_f64()))
    );
    report::latency_line("apply→Ready", &bench.tracker.latencies(keys));
    let mut failures = Vec::new();
    if !missing.is_empty() {
        report::not_ready(bench.client, &missing).await;
        failures.push(format!(
            "{} of {} objects applied after the API server restart not Ready",
            missing.len(),
            keys.len()
        ));
    }
    let same = instances.alive() && instances.0.iter().map(|o| o.pid()).eq(pids);
    if !same {
        failures.push("the operator exited during the API server restart".into());
    }
    let (ready, total) = ready_now(bench).await?;
    println!("operator process unchanged: {same}; Ready now: {ready} of {total} objects");
    if ready < before.len() + keys.len() - missing.len() {
        failures.push(format!(
            "only {ready} of {total} objects Ready after the API server restart"
        ));
    }
    Ok(failures)
}

/// Kills every instance with SIGKILL every `every` for `duration` (starting it again each time),
/// applying `keys` in as many rounds meanwhile, then waits for everything to be Ready and checks
/// Azure for duplicates and every output Secret for expiry.
pub async fn kill(
    bench: &Bench<'_>,
    instances: &mut Instances,
    azure: &Azure,
    every: Duration,
    duration: Duration,
    keys: &[Key],
    all: &[Key],
) -> anyhow::Result<Vec<String>> {
    let rounds = (duration.as_secs_f64() / every.as_secs_f64())
        .floor()
        .max(1.0) as usize;
    report::phase_header(&format!(
        "drill: kill -9 every {} s for {} s ({rounds} rounds) while {} objects arrive",
        every.as_secs_f64(),
        duration.as_secs_f64(),
        keys.len()
    ));
    let started = Instant::now();
    let azure_before = azure.counts();
    let mut chunks = keys.chunks(keys.len().div_ceil(rounds).max(1));
    let mut kills = 0;
    let mut last_kill = started;
    // Each round: the instances die mid-work, and new objects arrive while they start again.
    for _ in 0..rounds {
        tokio::time::sleep(every).await;
        for operator in &mut instances.0 {
            operator.kill_and_restart()?;
            kills += 1;
        }
        last_kill = Instant::now();
        if let Some(chunk) = chunks.next() {
            crate::apply_all(
                bench.client,
                bench.run,
                bench.tracker,
                chunk,
                bench.in_flight,
            )
            .await?;
        }
    }
    let everything: Vec<Key> = all.iter().chain(keys).cloned().collect();
    let missing = bench.tracker.wait(&everything, bench.timeout).await;
    let settled = bench
        .tracker
        .last_ready(keys)
        .map(|t| t.saturating_duration_since(last_kill));
    println!(
        "{kills} kills in {:.0} s; the drill's objects all Ready {} after the last kill",
        last_kill.duration_since(started).as_secs_f64(),
        settled.map_or("—".into(), |s| format!("{:.1} s", s.as_secs_f64()))
    );
    report::latency_line("apply→Ready", &bench.tracker.latencies(keys));
    // Renewals during the drill show as Entra requests (with tokens living less than the drill).
    report::azure_line(&azure.counts().since(&azure_before));
    let mut failures = Vec::new();
    if !missing.is_empty() {
        report::not_ready(bench.client, &missing).await;
        failures.push(format!(
            "{} objects not Ready after the kill drill",
            missing.len()
        ));
    }
    let (ready, total) = ready_now(bench).await?;
    let (valid, secrets) = valid_secrets(bench).await?;
    let inventory = azure.inventory(bench.run.identities);
    let duplicates = inventory.duplicates();
    println!(
        "Ready now: {ready} of {total} objects; output Secrets unexpired: {valid} of {secrets}; duplicate role assignments or federated credentials in Azure: {duplicates}"
    );
    if ready < total {
        failures.push(format!(
            "{} objects not Ready after the kill drill",
            total - ready
        ));
    }
    if valid < secrets {
        failures.push(format!("{} output Secrets expired", secrets - valid));
    }
    if duplicates > 0 {
        failures.push(format!(
            "{duplicates} duplicates in Azure after the kill drill"
        ));
    }
    Ok(failures)
}

/// Deletes the team namespaces with the operator running, so every object's cleanup runs, then
/// the shared credential; what Azure holds beyond `baseline` afterwards is orphaned.
pub async fn removal_orphans_nothing(
    bench: &Bench<'_>,
    azure: &Azure,
    baseline: &Inventory,
) -> anyhow::Result<Vec<String>> {
    report::phase_header("removal through the operator: every team namespace deleted");
    let started = Instant::now();
    let namespaces = Api::<Namespace>::all(bench.client.clone());
    for ns in &bench.run.namespaces {
        namespaces.delete(ns, &Default::default()).await?;
    }
    let deadline = Instant::now() + bench.timeout;
    let mut left = bench.run.namespaces.len();
    while left > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        left = 0;
        for ns in &bench.run.namespaces {
            if namespaces.get_opt(ns).await?.is_some() {
                left += 1;
            }
        }
    }
    let credentials = workload::api(bench.client, "ClusterAzureCredential", None);
    let _ = credentials
        .delete(&bench.run.credential(), &Default::default())
        .await;
    while credentials
        .get_opt(&bench.run.credential())
        .await?
        .is_some()
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (roles, federated, resources) = azure.inventory(bench.run.identities).beyond(baseline);
    println!(
        "namespaces gone in {:.1} s ({left} left); left in Azure: {roles} role assignments, {federated} federated credentials, {resources} resources",
        started.elapsed().as_secs_f64()
    );
    let mut failures = Vec::new();
    if left > 0 {
        failures.push(format!("{left} team namespaces not gone after removal"));
    }
    if roles + federated + resources > 0 {
        failures.push(format!(
            "orphaned in Azure after removal: {roles} role assignments, {federated} federated credentials, {resources} resources"
        ));
    }
    Ok(failures)
}

/// (Ready, total) of the run's objects as the API server has them now.
async fn ready_now(bench: &Bench<'_>) -> anyhow::Result<(usize, usize)> {
    let params = ListParams::default().labels(&format!("{}={}", workload::RUN_LABEL, bench.run.id));
    let (mut ready, mut total) = (0, 0);
    for kind in ["Workspace", KINDS[0], KINDS[1], KINDS[2]] {
        for object in workload::api(bench.client, kind, None)
            .list(&params)
            .await?
        {
            total += 1;
            ready += usize::from(readiness::ready(&object));
        }
    }
    Ok((ready, total))
}

/// (unexpired, all) output Secrets of the operator in the team namespaces, by the expiry it
/// recorded on each.
async fn valid_secrets(bench: &Bench<'_>) -> anyhow::Result<(usize, usize)> {
    let params = ListParams::default().labels("app.kubernetes.io/managed-by=aml-identity-operator");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (mut valid, mut all) = (0, 0);
    for ns in &bench.run.namespaces {
        for secret in Api::<Secret>::namespaced(bench.client.clone(), ns)
            .list_metadata(&params)
            .await?
        {
            let Some(expires) = secret.annotations().get("amlidentity.io/expires-at") else {
                continue;
            };
            all += 1;
            valid += usize::from(
                aml_identity_operator::renewal::parse_rfc3339(expires).is_some_and(|e| e > now),
            );
        }
    }
    Ok((valid, all))
}
