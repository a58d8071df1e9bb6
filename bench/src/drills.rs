//! Failure drills on a converged run: Azure throttling and slow for a while, the API server
//! restarted under the operator, and every operator instance killed with SIGKILL again and again
//! while objects arrive and tokens renew. Each prints its figures and returns what failed.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use std::collections::BTreeMap;

use aml_identity_emulator::Fault;

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

impl Bench<'_> {
    /// Creates `keys`, recording each apply time.
    async fn apply(&self, keys: &[Key]) -> anyhow::Result<()> {
        crate::apply_all(self.client, self.run, self.tracker, keys, self.in_flight).await
    }
}

/// For `duration`, Entra and ARM answer `share` of requests with 429 or 503 (half each, with
/// `Retry-After: 1`) and every one of them after `latency`, while `keys` arrive and tokens renew.
/// A watcher records every output Secret's expiry each second: none may ever be past it; the
/// emulator counts requests sent before their `Retry-After`: none may be.
pub async fn throttle(
    bench: &Bench<'_>,
    instances: &mut Instances,
    azure: &Azure,
    share: f64,
    latency: Duration,
    duration: Duration,
    keys: &[Key],
) -> anyhow::Result<Vec<String>> {
    report::phase_header(&format!(
        "drill: Azure throttling {:.0}% of Entra and ARM requests (429/503, Retry-After 1 s) and {} ms latency for {} s while {} objects arrive",
        share * 100.0,
        latency.as_millis(),
        duration.as_secs(),
        keys.len()
    ));
    let before = azure.counts();
    let early_before = azure.emulator().early_requests();
    let overlap_before = azure.emulator().overlapping_requests();
    let latency_ms = latency.as_millis() as u64;
    for route in ["entra.token", "arm."] {
        // Faults apply in order, each with its own chance: 429 on share/2 of the requests, 503 on
        // share/2 of all (so share/2 / (1 - share/2) of the rest), latency on every one.
        for (status, chance) in [
            (429, share / 2.0),
            (503, (share / 2.0) / (1.0 - share / 2.0)),
        ] {
            azure.emulator().inject(Fault {
                status: Some(status),
                retry_after: Some(1),
                latency_ms,
                probability: chance,
                ..Fault::on(route)
            });
        }
        azure.emulator().inject(Fault {
            latency_ms,
            ..Fault::on(route)
        });
    }
    let watcher = ExpiryWatcher::start(bench.client.clone(), bench.run.namespaces.clone());
    let started = Instant::now();
    bench.apply(keys).await?;
    tokio::time::sleep(duration.saturating_sub(started.elapsed())).await;
    azure.emulator().clear_faults();
    let during = azure.counts().since(&before);
    let early = azure.emulator().early_requests() - early_before;
    let overlap = azure.emulator().overlapping_requests() - overlap_before;
    let missing = bench.tracker.wait(keys, bench.timeout).await;
    let seen = watcher.stop().await;
    report::azure_line(&during);
    report::latency_line("apply→Ready", &bench.tracker.latencies(keys));
    println!(
        "output Secrets watched: {} ({} samples); ever past their expiry: {}; least time left seen: {}; requests before their Retry-After: {early} (and {overlap} that arrived within {} ms of the answer, sent before it was read)",
        seen.secrets,
        seen.samples,
        seen.expired,
        seen.least_left.map_or("—".into(), |s| format!("{s} s")),
        aml_identity_emulator::IN_FLIGHT.as_millis()
    );
    let early_routes: Vec<String> = azure
        .emulator()
        .counters()
        .into_iter()
        .filter(|(k, _)| k.starts_with("early:") || k.starts_with("overlap:"))
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    if !early_routes.is_empty() {
        println!("  sent early, by route: {}", early_routes.join(", "));
    }
    let mut failures = Vec::new();
    if seen.expired > 0 {
        failures.push(format!(
            "{} output Secrets were past their expiry during the throttling drill",
            seen.expired
        ));
    }
    if early > 0 {
        failures.push(format!("{early} requests sent before their Retry-After"));
    }
    if !missing.is_empty() {
        report::not_ready(bench.client, &missing).await;
        failures.push(format!(
            "{} of {} objects applied during the throttling drill not Ready",
            missing.len(),
            keys.len()
        ));
    }
    if !instances.alive() {
        failures.push("the operator exited during the throttling drill".into());
    }
    Ok(failures)
}

/// What the expiry watcher saw.
struct Seen {
    secrets: usize,
    samples: u64,
    /// Secrets seen past the expiry they carried at least once.
    expired: usize,
    /// The least seconds left on any Secret at any sample.
    least_left: Option<i64>,
}

/// Every second, each output Secret of the operator in `namespaces` and the expiry it carries.
struct ExpiryWatcher {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Seen>,
}

impl ExpiryWatcher {
    fn start(client: Client, namespaces: Vec<String>) -> Self {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let params =
                ListParams::default().labels("app.kubernetes.io/managed-by=aml-identity-operator");
            let mut expired: BTreeMap<String, bool> = BTreeMap::new();
            let mut least_left: Option<i64> = None;
            let mut samples = 0;
            while !*stopped.borrow() {
                let now = unix_now();
                for ns in &namespaces {
                    let Ok(list) = Api::<Secret>::namespaced(client.clone(), ns)
                        .list_metadata(&params)
                        .await
                    else {
                        continue;
                    };
                    for secret in list {
                        let Some(expires) = secret
                            .annotations()
                            .get("amlidentity.io/expires-at")
                            .and_then(|e| aml_identity_operator::renewal::parse_rfc3339(e))
                        else {
                            continue;
                        };
                        let left = expires - now;
                        least_left = Some(least_left.map_or(left, |l| l.min(left)));
                        let was = expired
                            .entry(format!("{ns}/{}", secret.name_any()))
                            .or_default();
                        *was |= left <= 0;
                    }
                }
                samples += 1;
                let _ = tokio::time::timeout(Duration::from_secs(1), stopped.changed()).await;
            }
            Seen {
                secrets: expired.len(),
                samples,
                expired: expired.values().filter(|e| **e).count(),
                least_left,
            }
        });
        ExpiryWatcher { stop, task }
    }

    async fn stop(self) -> Seen {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or(Seen {
            secrets: 0,
            samples: 0,
            expired: 0,
            least_left: None,
        })
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
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
    bench.apply(keys).await?;
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
            bench.apply(chunk).await?;
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
    let now = unix_now();
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
