//! `bench`: the operator at scale against the physical limit of the same API server.
//!
//! Against the local control plane (`KUBECONFIG`) and the Azure emulator (started here), it applies
//! N objects across M namespaces in a realistic mix and measures, in one run: time to all-Ready and
//! apply→Ready for a burst and at a steady arrival rate, the operator's CPU and memory, Azure
//! requests counted at the emulator, the operator's Kubernetes requests by verb, memory growth per
//! unrelated Secret, a steady state with nothing changing, and then — with the operator stopped —
//! the same Kubernetes writes by a minimal client, and the ratio.

mod azure;
mod drills;
mod operator;
mod raw;
mod readiness;
mod report;
mod storm;
mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::azure::Azure;
use crate::operator::{Instances, Operator};
use crate::readiness::Tracker;
use crate::report::Snapshot;
use crate::workload::{KINDS, Key, Run};

#[derive(Parser, Debug)]
#[command(
    about = "Benchmark aml-identity-operator against the raw write rate of the same API server"
)]
struct Args {
    /// Objects applied at once (the burst).
    #[arg(long, default_value_t = 1000)]
    objects: usize,
    /// Team namespaces they spread over.
    #[arg(long, default_value_t = 20)]
    namespaces: usize,
    /// User-assigned identities the ComputeIdentities share (namespace m uses identity m mod K).
    #[arg(long, default_value_t = 5)]
    identities: usize,
    /// Requests the bench (and the raw client) keeps in flight.
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// Objects per second in the steady-arrival phase.
    #[arg(long, default_value_t = 50.0)]
    steady_rate: f64,
    /// Seconds of steady arrival (0: skip).
    #[arg(long, default_value_t = 20)]
    steady_seconds: u64,
    /// Unrelated Secrets created to measure memory growth (0: skip).
    #[arg(long, default_value_t = 1000)]
    unrelated_secrets: usize,
    /// Minutes of steady state with no changes, reported per minute (fractions allowed).
    #[arg(long, default_value_t = 3.0)]
    idle_minutes: f64,
    /// Lifetime of the tokens the emulator issues, seconds (Entra: 60–90 min; shorter compresses
    /// renewal into the steady state).
    #[arg(long, default_value_t = 3599)]
    token_lifetime: i64,
    /// Operator instances sharing the team namespaces by label (`--namespace-selector`), each with
    /// its own Lease; the first also owns the cluster-scoped credential. Reports each one's share.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=8))]
    shards: u16,
    /// The operator's `--concurrency` (objects reconciled at once, per kind).
    #[arg(long)]
    operator_concurrency: Option<u16>,
    /// More arguments for `aml-identity-operator run` (repeatable).
    #[arg(long = "operator-arg", allow_hyphen_values = true)]
    operator_args: Vec<String>,
    /// Kubeconfig the operator signs in with (default: the bench's own, `KUBECONFIG`).
    #[arg(long, env = "AMLID_OPERATOR_KUBECONFIG")]
    operator_kubeconfig: Option<PathBuf>,
    /// Seconds objects get to become Ready after the last apply of a phase.
    #[arg(long, default_value_t = 300)]
    timeout_seconds: u64,
    /// Exit non-zero unless the deterministic targets hold (every object Ready, at most 1.1
    /// reconciles per new object in the burst, no ARM write and no Entra request beyond one per
    /// federated identity and audience in the steady state, the operator alive); timing figures
    /// are reported, never checked.
    #[arg(long)]
    check: bool,
    /// Throttling drill: for this many seconds Entra and ARM answer --throttle-share of requests
    /// with 429 or 503 (Retry-After 1 s) and every one late by --throttle-latency-ms, while a tenth
    /// of --objects more arrive and tokens renew (--token-lifetime shorter than the drill); no
    /// output Secret may ever be past its expiry, and no request may go out before its
    /// Retry-After. 0: no drill.
    #[arg(long, default_value_t = 0)]
    throttle_for: u64,
    /// Share of Entra and ARM requests the throttling drill refuses.
    #[arg(long, default_value_t = 0.3)]
    throttle_share: f64,
    /// Latency of every Entra and ARM answer during the throttling drill, milliseconds.
    #[arg(long, default_value_t = 200)]
    throttle_latency_ms: u64,
    /// API server restart drill: a command that restarts the API server and returns once it serves
    /// again (`hack/local-cluster.sh restart-apiserver`); then a tenth of --objects more are
    /// applied, and the operator must reconcile them without a restart of its own.
    #[arg(long)]
    restart_api_server: Option<String>,
    /// Kill drill: SIGKILL every operator instance (and start it again) every this many seconds
    /// while half of --objects more arrive and tokens renew; then no duplicate in Azure, every
    /// object Ready, every output Secret unexpired, and removing the run through the operator
    /// leaves nothing in Azure. 0: no drill.
    #[arg(long, default_value_t = 0)]
    kill_every: u64,
    /// Seconds the kill drill lasts.
    #[arg(long, default_value_t = 300)]
    kill_for: u64,
    /// Renewal storm drill, right after the burst: its ComputeIdentities' token Secrets share the
    /// few tokens minted for it and so expire within seconds of each other; wait until every one
    /// has renewed (about two thirds of --token-lifetime after the burst began) and report how the
    /// renewals spread, how far each came after its scheduled time, whether any came after its
    /// expiry, and the Entra requests (one per federated identity and audience at most).
    #[arg(long)]
    storm: bool,
    /// Leave the run's objects and namespaces on the cluster (they are removed by default, their
    /// finalizers dropped: the emulator they were made in is gone with the bench).
    #[arg(long)]
    keep: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.objects > 0, "--objects must be at least 1");
    anyhow::ensure!(
        (0.0..0.9).contains(&args.throttle_share),
        "--throttle-share must be at least 0 and below 0.9"
    );
    anyhow::ensure!(
        args.namespaces > 0 && args.identities > 0,
        "--namespaces and --identities must be at least 1"
    );
    anyhow::ensure!(
        args.namespaces <= 20 * args.identities,
        "--namespaces {} needs at least {} --identities: Azure allows 20 federated credentials per identity",
        args.namespaces,
        args.namespaces.div_ceil(20)
    );
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let failures = bench(&args).await?;
    if args.check && !failures.is_empty() {
        for f in &failures {
            eprintln!("check failed: {f}");
        }
        std::process::exit(1);
    }
    Ok(())
}

async fn bench(args: &Args) -> anyhow::Result<Vec<String>> {
    let client = Client::try_default().await?;
    let mut run = Run::new(&run_id(), args.namespaces, args.identities);
    run.shards = usize::from(args.shards);
    let dir = std::env::temp_dir().join(format!("aml-identity-bench-{}", run.id));
    std::fs::create_dir_all(&dir)?;
    println!(
        "run {}: {} objects across {} namespaces, {} shared identities; work files in {}",
        run.id,
        args.objects,
        args.namespaces,
        args.identities,
        dir.display()
    );
    install_crds(&client).await?;
    let cluster_ca = cluster_ca()?;
    let azure = Azure::start(
        &dir.join("emulator"),
        cluster_ca,
        args.token_lifetime,
        &run.namespaces,
        args.identities,
    )
    .await?;
    // What Azure holds before the operator makes anything: the kill drill's removal must come back
    // to it.
    let baseline = azure.inventory(args.identities);
    let mut failures = Vec::new();

    let tracker = Tracker::start(
        &client,
        &run.id,
        &["Workspace", KINDS[0], KINDS[1], KINDS[2]],
    );
    let setup = run.set_up(&client).await?;
    let mut operator_args = vec![
        "--lease-namespace".to_owned(),
        run.home.clone(),
        // Only this run's objects: a cluster that ran the tests or an earlier run has others.
        "--label-selector".into(),
        format!("{}={}", workload::RUN_LABEL, run.id),
        "--azure-ca-bundle".into(),
        azure.running.ca_path.display().to_string(),
        "--azure-resolve".into(),
        azure.resolve_arg(),
        "--imds-endpoint".into(),
        format!("http://{}", azure.running.imds_addr),
    ];
    if let Some(c) = args.operator_concurrency {
        operator_args.extend(["--concurrency".into(), c.to_string()]);
    }
    operator_args.extend(args.operator_args.iter().cloned());
    let mut instances = Vec::new();
    for shard in 0..run.shards {
        let mut args_of = operator_args.clone();
        if shard == 0 {
            args_of.extend([
                "--cluster-label-selector".into(),
                format!("{}={}", workload::RUN_LABEL, run.id),
            ]);
        }
        let log = if run.shards == 1 {
            dir.join("operator.log")
        } else {
            args_of.extend([
                "--namespace-selector".into(),
                format!("{}={shard}", workload::SHARD_LABEL),
                "--lease-name".into(),
                format!("aml-identity-operator-{shard}"),
            ]);
            dir.join(format!("operator-{shard}.log"))
        };
        let operator = Operator::start(&args_of, &log, args.operator_kubeconfig.as_deref())?;
        println!("operator pid {} (log {})", operator.pid(), log.display());
        instances.push(operator);
    }
    let mut operator = Instances(instances);
    let missing = tracker.wait(&setup, Duration::from_secs(180)).await;
    if !missing.is_empty() {
        report::not_ready(&client, &missing).await;
        anyhow::bail!(
            "{} of the setup objects did not become Ready within 180 s",
            missing.len()
        );
    }
    let start = Snapshot::take(&operator, &azure).await;
    report::phase_header("setup (workspaces and pull identities, not measured)");
    report::azure_line(&start.azure);

    // The burst: every object at once, as a GitOps sync or a Helm install of a big team does.
    let burst = run.keys(args.objects, "");
    report::phase_header(&format!(
        "burst: {} objects ({}) across {} namespaces, {} in flight",
        burst.len(),
        report::mix(&burst),
        args.namespaces,
        args.in_flight
    ));
    let first_apply = Instant::now();
    apply_all(&client, &run, &tracker, &burst, args.in_flight).await?;
    let applied_in = first_apply.elapsed();
    let missing = tracker
        .wait(&burst, Duration::from_secs(args.timeout_seconds))
        .await;
    let after_burst = Snapshot::take(&operator, &azure).await;
    let converged = tracker
        .last_ready(&burst)
        .map(|t| t.duration_since(first_apply));
    if !missing.is_empty() {
        report::not_ready(&client, &missing).await;
        failures.push(format!(
            "{} of {} burst objects not Ready within {} s of the last apply",
            missing.len(),
            burst.len(),
            args.timeout_seconds
        ));
    }
    let burst_rate = converged.map(|c| burst.len() as f64 / c.as_secs_f64());
    println!(
        "applied in {:.1} s; all Ready in {}: {} objects/s",
        applied_in.as_secs_f64(),
        converged.map_or("—".into(), |c| format!("{:.1} s", c.as_secs_f64())),
        burst_rate.map_or("—".into(), |r| format!("{r:.1}"))
    );
    report::latency_line("apply→Ready", &tracker.latencies(&burst));
    report::operator_line(&start, &after_burst, burst.len());
    report::azure_line(&after_burst.azure.since(&start.azure));
    report::kubernetes_lines(&start, &after_burst, burst.len());
    // A new object needs one pass; the echoes of the operator's own writes trigger none.
    let reconciles = after_burst.reconciles - start.reconciles;
    if reconciles > burst.len() as f64 * 1.1 {
        failures.push(format!(
            "{reconciles:.0} reconciles for {} new objects (at most 1.1 per object)",
            burst.len()
        ));
    }

    if args.storm {
        failures.extend(
            storm::storm(
                &client,
                &operator,
                &azure,
                &burst,
                federated_tuples(&run) as u64,
                Duration::from_secs(30),
            )
            .await?,
        );
    }

    // Steady arrival: objects one at a time at a fixed rate, as teams add them through a day.
    let mut steady = Vec::new();
    if args.steady_seconds > 0 && args.steady_rate > 0.0 {
        let count = (args.steady_rate * args.steady_seconds as f64).round() as usize;
        steady = run.keys(count, "s");
        report::phase_header(&format!(
            "steady arrival: {count} objects at {}/s",
            args.steady_rate
        ));
        let before = Snapshot::take(&operator, &azure).await;
        apply_at_rate(&client, &run, &tracker, &steady, args.steady_rate).await?;
        let missing = tracker
            .wait(&steady, Duration::from_secs(args.timeout_seconds))
            .await;
        if !missing.is_empty() {
            report::not_ready(&client, &missing).await;
            failures.push(format!(
                "{} of {count} steady-arrival objects not Ready",
                missing.len()
            ));
        }
        let after = Snapshot::take(&operator, &azure).await;
        report::latency_line("apply→Ready", &tracker.latencies(&steady));
        report::operator_line(&before, &after, steady.len());
        report::azure_line(&after.azure.since(&before.azure));
    }

    // Memory per unrelated Secret: what a cluster's other workloads cost the operator.
    if args.unrelated_secrets > 0 {
        report::phase_header(&format!(
            "{} unrelated Secrets (1 KiB each) in the team namespaces",
            args.unrelated_secrets
        ));
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (before, _) = operator.rss_mib();
        unrelated_secrets(&client, &run, args.unrelated_secrets, args.in_flight).await?;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let (after, _) = operator.rss_mib();
        println!(
            "operator RSS {before:.1} → {after:.1} MiB: {:+.2} MiB per 1,000 Secrets (target < 1)",
            (after - before) * 1000.0 / args.unrelated_secrets as f64
        );
    }

    // Steady state: nothing changes; what does the operator still cost?
    let all: Vec<Key> = burst.iter().chain(&steady).cloned().collect();
    if args.idle_minutes > 0.0 {
        report::phase_header(&format!(
            "steady state: {} minutes with no changes ({} objects; tokens live {} s)",
            args.idle_minutes,
            all.len(),
            args.token_lifetime
        ));
        println!("minute  ARM reads  ARM writes  Entra  ACR  operator CPU s  K8s writes");
        let total = Duration::from_secs_f64(args.idle_minutes * 60.0);
        let idle_start = Snapshot::take(&operator, &azure).await;
        let mut last = idle_start.clone();
        let mut elapsed = Duration::ZERO;
        let mut minute = 0;
        while elapsed < total {
            let step = (total - elapsed).min(Duration::from_secs(60));
            tokio::time::sleep(step).await;
            elapsed += step;
            minute += 1;
            let now = Snapshot::take(&operator, &azure).await;
            report::idle_row(minute, step, &last, &now);
            last = now;
        }
        report::kubernetes_lines(&idle_start, &last, all.len());
        let idle = last.azure.since(&idle_start.azure);
        // Within one token lifetime every (federated ServiceAccount, identity, audience) and the
        // platform credential need at most one new token; with no renewal due, none.
        let lifetimes = (args.idle_minutes * 60.0 / args.token_lifetime as f64).ceil() as u64;
        let allowed = lifetimes * federated_tuples(&run) as u64;
        if idle.arm_writes > 0 {
            failures.push(format!(
                "{} ARM writes in the steady state (target 0)",
                idle.arm_writes
            ));
        }
        if idle.entra > allowed {
            failures.push(format!(
                "{} Entra requests in the steady state, more than one per federated identity and audience and one for the platform credential per token lifetime ({allowed})",
                idle.entra
            ));
        }
        let missing = tracker.wait(&all, Duration::from_secs(1)).await;
        if !missing.is_empty() {
            failures.push(format!(
                "{} objects not Ready at the end of the steady state",
                missing.len()
            ));
        }
    }
    let bench_of = drills::Bench {
        client: &client,
        run: &run,
        tracker: &tracker,
        in_flight: args.in_flight,
        timeout: Duration::from_secs(args.timeout_seconds),
    };
    let mut all = all;
    if args.throttle_for > 0 {
        let keys = run.keys(args.objects.div_ceil(10), "t");
        failures.extend(
            drills::throttle(
                &bench_of,
                &mut operator,
                &azure,
                args.throttle_share,
                Duration::from_millis(args.throttle_latency_ms),
                Duration::from_secs(args.throttle_for),
                &keys,
            )
            .await?,
        );
        all.extend(keys);
    }
    if let Some(command) = &args.restart_api_server {
        let keys = run.keys(args.objects.div_ceil(10), "r");
        failures.extend(
            drills::api_server_restart(&bench_of, &mut operator, command, &keys, &all).await?,
        );
        all.extend(keys);
    }
    if args.kill_every > 0 {
        let keys = run.keys(args.objects.div_ceil(2), "k");
        failures.extend(
            drills::kill(
                &bench_of,
                &mut operator,
                &azure,
                Duration::from_secs(args.kill_every),
                Duration::from_secs(args.kill_for),
                &keys,
                &all,
            )
            .await?,
        );
        all.extend(keys);
    }
    if !operator.alive() {
        failures.push("the operator exited".into());
    }
    let (_, peak) = operator.rss_mib();
    let total_cpu = operator.cpu_seconds();
    println!(
        "\noperator peak RSS {peak:.1} MiB (target ≤ 64 at N=10,000), {total_cpu:.1} CPU s in all"
    );
    if run.shards > 1 {
        failures.extend(shares(&operator, &run, &all).await);
    }

    // The physical limit: the same writes by a minimal client, with the operator stopped.
    let mut samples = BTreeMap::new();
    for kind in KINDS {
        if let Some(key) = burst.iter().find(|k| k.kind == kind) {
            samples.insert(kind, raw::sample(&client, key).await?);
        }
    }
    if args.kill_every > 0 {
        failures.extend(drills::removal_orphans_nothing(&bench_of, &azure, &baseline).await?);
    }
    operator.stop(Duration::from_secs(10)).await;
    let raw_run = Run::new(&format!("{}r", run.id), args.namespaces, args.identities);
    for ns in &raw_run.namespaces {
        let namespace: k8s_openapi::api::core::v1::Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))?;
        Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await?;
    }
    let raw_objects: Vec<(Key, serde_json::Value)> = (0..args.objects)
        .map(|i| {
            let key = raw_run.key(i, "");
            let object = raw_run.object(&key);
            (key, object)
        })
        .collect();
    report::phase_header(&format!(
        "raw: the same {} objects' writes by a minimal client (create, finalizer, Secret create, status), {} in flight",
        args.objects, args.in_flight
    ));
    let raw_time = raw::run(&client, raw_objects, &samples, args.in_flight).await?;
    let raw_rate = args.objects as f64 / raw_time.as_secs_f64();
    println!("{:.1} s: {raw_rate:.1} objects/s", raw_time.as_secs_f64());
    match burst_rate {
        Some(rate) => println!(
            "\nratio: the operator converged at {:.2}× the raw write rate (target ≥ 0.8 at N=10,000)",
            rate / raw_rate
        ),
        None => println!("\nratio: — (the burst did not converge)"),
    }
    if !args.keep {
        let started = Instant::now();
        workload::remove(&client, &[&run, &raw_run], args.in_flight).await?;
        println!(
            "\nremoved the run's objects and namespaces in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(failures)
}

/// Each shard's share of the measured objects (those it reports a Ready series for), with its
/// reconciles, CPU and peak memory; an object reported by two shards or by none is a failure.
async fn shares(instances: &Instances, run: &Run, all: &[Key]) -> Vec<String> {
    report::phase_header(&format!(
        "shards: {} instances by namespace label",
        run.shards
    ));
    let measured: BTreeSet<String> = all
        .iter()
        .map(|k| format!("{}/{}/{}", k.kind, k.namespace, k.name))
        .collect();
    // An instance reports what it reconciled since it started: after a kill, give it time to
    // lead and list again.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut reported = Vec::new();
    loop {
        reported.clear();
        for operator in &instances.0 {
            reported.push(operator.reported_objects().await);
        }
        let covered = measured
            .iter()
            .all(|o| reported.iter().any(|r| r.contains(o)));
        if covered || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (shard, (operator, reported)) in instances.0.iter().zip(&reported).enumerate() {
        let mine: Vec<&String> = reported.intersection(&measured).collect();
        let (_, peak) = operator.rss_mib();
        println!(
            "shard {shard}: {} objects ({:.1}%), {:.0} reconciles, {:.1} CPU s, peak RSS {peak:.1} MiB",
            mine.len(),
            100.0 * mine.len() as f64 / measured.len() as f64,
            operator.reconciles().await,
            operator.cpu_seconds(),
        );
        for object in mine {
            *seen.entry(object.clone()).or_default() += 1;
        }
    }
    let both = seen.values().filter(|n| **n > 1).count();
    let neither = measured.len() - seen.len();
    println!("objects reconciled by two shards: {both}; by none: {neither}");
    let mut failures = Vec::new();
    if both > 0 {
        failures.push(format!("{both} objects reported by more than one shard"));
    }
    if neither > 0 {
        failures.push(format!("{neither} objects reported by no shard"));
    }
    failures
}

/// Tokens the mix needs per token lifetime: every namespace's `training` federated with its one
/// identity, for two audiences, and the platform credential's own ARM token.
fn federated_tuples(run: &Run) -> usize {
    run.namespaces.len() * 2 + 1
}

fn run_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{:x}", now.as_secs() % 0x100000)
}

/// The API server's CA file, from the kubeconfig (the emulator trusts it to read the issuer's keys).
fn cluster_ca() -> anyhow::Result<PathBuf> {
    let kubeconfig = kube::config::Kubeconfig::read()?;
    kubeconfig
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref()?.certificate_authority.clone())
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("the kubeconfig names no certificate-authority file"))
}

/// The CRDs without CEL (the local API server is Kubernetes 1.20), waited until established.
async fn install_crds(client: &Client) -> anyhow::Result<()> {
    use aml_identity_operator::crd;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("aml-identity-bench").force();
    for c in crd::all() {
        let name = c.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(crd::strip_cel(&c)))
            .await?;
    }
    for _ in 0..150 {
        let established = futures::future::join_all(crd::all().iter().map(|c| {
            let api = api.clone();
            let name = c.metadata.name.clone().unwrap_or_default();
            async move {
                api.get(&name)
                    .await
                    .ok()
                    .and_then(|c| c.status?.conditions)
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    })
            }
        }))
        .await;
        if established.iter().all(|e| *e) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("the CRDs were not established within 30 s")
}

/// Creates `keys` with `in_flight` requests at once, recording each apply time.
async fn apply_all(
    client: &Client,
    run: &Run,
    tracker: &Tracker,
    keys: &[Key],
    in_flight: usize,
) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(keys)
        .map(|key| async move {
            tracker.applied(key.clone());
            workload::create(client, &run.object(key)).await.map(|_| ())
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Creates `keys` one at a time at `rate` per second.
async fn apply_at_rate(
    client: &Client,
    run: &Run,
    tracker: &Tracker,
    keys: &[Key],
    rate: f64,
) -> anyhow::Result<()> {
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::new();
    for key in keys {
        ticks.tick().await;
        tracker.applied(key.clone());
        let (client, object) = (client.clone(), run.object(key));
        tasks.push(tokio::spawn(async move {
            workload::create(&client, &object).await.map(|_| ())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// `count` 1 KiB Secrets the operator has no reason to look at.
async fn unrelated_secrets(
    client: &Client,
    run: &Run,
    count: usize,
    in_flight: usize,
) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..count)
        .map(|i| async move {
            let ns = &run.namespaces[i % run.namespaces.len()];
            let secret: Secret = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("unrelated-{i}")},
                "stringData": {"payload": "x".repeat(1024)},
            }))?;
            Api::<Secret>::namespaced(client.clone(), ns)
                .create(&PostParams::default(), &secret)
                .await?;
            Ok(())
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    results.into_iter().collect()
}
