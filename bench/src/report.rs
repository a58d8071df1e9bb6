//! What the benchmark prints: snapshots of the counters it compares, and one line per figure.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::Client;

use crate::azure::{Azure, AzureCounts};
use crate::operator::Instances;
use crate::workload::{self, Key};

/// The counters at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub cpu: f64,
    pub reconciles: f64,
    pub azure: AzureCounts,
    pub kubernetes: BTreeMap<String, f64>,
}

impl Snapshot {
    pub async fn take(operator: &Instances, azure: &Azure) -> Snapshot {
        Snapshot {
            cpu: operator.cpu_seconds(),
            reconciles: operator.reconciles().await,
            azure: azure.counts(),
            kubernetes: operator.kubernetes_requests().await,
        }
    }

    /// Kubernetes requests since `before`, by `verb resource`, leaving out zeros.
    fn kubernetes_since(&self, before: &Snapshot) -> BTreeMap<String, f64> {
        self.kubernetes
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v - before.kubernetes.get(k).copied().unwrap_or(0.0),
                )
            })
            .filter(|(_, v)| *v > 0.0)
            .collect()
    }
}

/// The `q` quantile (0–1) of `values`, nearest rank.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn phase_header(title: &str) {
    println!("\n== {title}");
}

/// `500 ComputeIdentity, 350 Datastore, 150 RegistryConnection`.
pub fn mix(keys: &[Key]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for k in keys {
        *counts.entry(k.kind).or_default() += 1;
    }
    counts
        .iter()
        .map(|(kind, n)| format!("{n} {kind}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn latency_line(what: &str, seconds: &[f64]) {
    println!(
        "{what} p50 {:.3} s, p99 {:.3} s, max {:.3} s ({} objects)",
        percentile(seconds, 0.5),
        percentile(seconds, 0.99),
        percentile(seconds, 1.0),
        seconds.len()
    );
}

pub fn operator_line(before: &Snapshot, after: &Snapshot, objects: usize) {
    let cpu = after.cpu - before.cpu;
    let reconciles = after.reconciles - before.reconciles;
    println!(
        "operator CPU {cpu:.1} s: {:.1} ms per object; {reconciles:.0} reconciles, {:.2} per object",
        cpu * 1000.0 / objects.max(1) as f64,
        reconciles / objects.max(1) as f64
    );
}

pub fn azure_line(counts: &AzureCounts) {
    println!(
        "Azure (emulator): {} Entra token requests, {} ARM reads, {} ARM writes, {} ACR token requests",
        counts.entra, counts.arm_reads, counts.arm_writes, counts.acr
    );
    if !counts.routes.is_empty() {
        println!(
            "  by route: {}",
            counts
                .routes
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

/// The operator's Kubernetes requests between two snapshots, by verb, then the writes per object.
pub fn kubernetes_lines(before: &Snapshot, after: &Snapshot, objects: usize) {
    let requests = after.kubernetes_since(before);
    let mut by_verb: BTreeMap<&str, f64> = BTreeMap::new();
    for (key, n) in &requests {
        let verb = key.split(' ').next().unwrap_or(key);
        *by_verb.entry(verb).or_default() += n;
    }
    println!(
        "operator Kubernetes requests by verb: {}",
        by_verb
            .iter()
            .map(|(v, n)| format!("{v} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    per_object(
        &requests,
        objects,
        "writes per object {} (the raw client makes 3 besides the create)",
        |k| !is_read(k),
    );
    per_object(&requests, objects, "reads per object {}", is_read);
}

/// One line of `requests` that `pick` chooses: their count per object (in `label`'s `{}`), then
/// each of them.
fn per_object(
    requests: &BTreeMap<String, f64>,
    objects: usize,
    label: &str,
    pick: impl Fn(&str) -> bool,
) {
    let picked: Vec<(&String, &f64)> = requests.iter().filter(|(k, _)| pick(k)).collect();
    let total: f64 = picked.iter().map(|(_, n)| **n).sum();
    println!(
        "  {}: {}",
        label.replace("{}", &format!("{:.2}", total / objects.max(1) as f64)),
        picked
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

fn is_read(key: &str) -> bool {
    ["get ", "list ", "watch "]
        .iter()
        .any(|v| key.starts_with(v))
}

/// One minute of the steady state.
pub fn idle_row(minute: usize, step: Duration, before: &Snapshot, after: &Snapshot) {
    let azure = after.azure.since(&before.azure);
    let writes: f64 = after
        .kubernetes_since(before)
        .iter()
        .filter(|(k, _)| !is_read(k))
        .map(|(_, n)| n)
        .sum();
    let per_minute = 60.0 / step.as_secs_f64().max(1.0);
    println!(
        "{minute:>6}  {:>9.0}  {:>10.0}  {:>5.0}  {:>3.0}  {:>14.2}  {:>10.0}",
        azure.arm_reads as f64 * per_minute,
        azure.arm_writes as f64 * per_minute,
        azure.entra as f64 * per_minute,
        azure.acr as f64 * per_minute,
        (after.cpu - before.cpu) * per_minute,
        writes * per_minute
    );
}

/// Why objects are not Ready: the first few, with their Ready condition.
pub async fn not_ready(client: &Client, keys: &[Key]) {
    println!("{} objects not Ready; the first of them:", keys.len());
    for key in keys.iter().take(5) {
        let api = workload::api(client, key.kind, Some(&key.namespace));
        let condition = match api.get(&key.name).await {
            Ok(o) => o.data["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready").cloned())
                .map_or("no Ready condition".into(), |c| {
                    format!("{} {}: {}", c["status"], c["reason"], c["message"])
                }),
            Err(e) => format!("unreadable: {e}"),
        };
        println!("  {} {}/{}: {condition}", key.kind, key.namespace, key.name);
    }
}
