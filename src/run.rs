//! The `run` subcommand: health server, leader election, controllers and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;

use crate::controllers::{self, AzureSettings, Context, Scope};
use crate::metrics::Metrics;
use crate::server::{self, Health};

/// Options of `run`.
#[derive(Clone, Debug, clap::Args)]
pub struct RunOptions {
    /// Reconcile only objects in this namespace (cluster-scoped kinds are always watched).
    #[arg(long, env = "AMLID_NAMESPACE")]
    pub namespace: Option<String>,
    /// Reconcile only objects whose labels match this selector, e.g. `shard=a`.
    #[arg(long, env = "AMLID_LABEL_SELECTOR")]
    pub label_selector: Option<String>,
    /// Reconcile only objects in namespaces whose labels match this selector, e.g. `shard=a`: several
    /// instances (each with its own `--lease-name`) share one cluster by namespace, and an object
    /// moves when its namespace's labels do. Not with `--namespace`.
    #[arg(long, env = "AMLID_NAMESPACE_SELECTOR", conflicts_with = "namespace")]
    pub namespace_selector: Option<String>,
    /// Cluster-scoped objects this instance owns, by label. Without it a `--namespace` or
    /// `--namespace-selector` instance reconciles no cluster-scoped kinds, and a cluster-wide one
    /// reconciles them all.
    #[arg(long, env = "AMLID_CLUSTER_LABEL_SELECTOR")]
    pub cluster_label_selector: Option<String>,
    /// Objects reconciled at once, per kind. A pass mostly waits on the API server and Azure
    /// (whose requests have their own budget): at 4, a burst of new objects left the API server
    /// idle between passes (bench, 4,000 objects: 66 objects/s at 4, 82 at 16).
    #[arg(long, default_value_t = 16)]
    pub concurrency: u16,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, default_value = "127.0.0.1:8080", env = "AMLID_HEALTH_ADDR")]
    pub health_addr: SocketAddr,
    /// Elect a leader with a Lease; only the leader reconciles.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "aml-identity-operator")]
    pub lease_name: String,
    /// The operator's own namespace: its Lease, and by default the Secrets of
    /// ClusterAzureCredentials. Without it, the pod's ServiceAccount namespace; the operator refuses
    /// to start when it cannot tell.
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This instance's identity in the Lease and in Events (defaults to the host name and PID).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds a leader's Lease stays valid without renewal.
    #[arg(long, default_value_t = 15)]
    pub lease_duration: u64,
    /// Runs the operator's clock this many seconds from real time: expiry and renewal decisions and
    /// SAS times use it. For tests and demos of expiry; leave at 0 in production.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true, hide = true)]
    pub clock_offset_seconds: i64,
    /// Seconds in-flight reconciles get to finish after SIGTERM.
    #[arg(long, default_value_t = 5)]
    pub shutdown_grace_seconds: u64,
    /// PEM bundle of extra CAs to trust for Azure endpoints (e.g. the emulator's `ca.pem`).
    #[arg(long, env = "AMLID_AZURE_CA_BUNDLE")]
    pub azure_ca_bundle: Option<std::path::PathBuf>,
    /// Resolve an Azure host to a fixed address, `host=ip:port` (repeatable; comma-separated in the
    /// environment), e.g. `login.microsoftonline.com=127.0.0.1:8443`.
    #[arg(long = "azure-resolve", env = "AMLID_AZURE_RESOLVE", value_delimiter = ',', value_parser = crate::azure::Transport::parse_override)]
    pub azure_resolve: Vec<(String, std::net::SocketAddr)>,
    /// Blob endpoint of a storage account, with `{account}`, for path-style endpoints (Azure Stack,
    /// emulators); default `https://{account}.blob.<storage suffix>`.
    #[arg(long, env = "AMLID_BLOB_URL_TEMPLATE")]
    pub blob_url_template: Option<String>,
    /// File endpoint of a storage account, with `{account}`, for path-style endpoints; default
    /// `https://{account}.file.<storage suffix>`.
    #[arg(long, env = "AMLID_FILE_URL_TEMPLATE")]
    pub file_url_template: Option<String>,
    /// The Azure CLI program for `azureCli` credentials.
    #[arg(long, env = "AMLID_AZURE_CLI", default_value = "az")]
    pub azure_cli: std::path::PathBuf,
    /// IMDS endpoint for managed-identity credentials.
    #[arg(long, env = "AMLID_IMDS_ENDPOINT", default_value = crate::azure::credential::IMDS_ENDPOINT)]
    pub imds_endpoint: String,
    /// Hosts a namespaced AzureCredential with `cloud: Custom` may name (each also allows its
    /// subdomains), comma-separated. Default: none, so only cluster admins' ClusterAzureCredentials
    /// may point the operator at custom endpoints.
    #[arg(long, env = "AMLID_ALLOWED_CUSTOM_CLOUD_HOSTS", value_delimiter = ',')]
    pub allowed_custom_cloud_hosts: Vec<String>,
    /// Failed cleanup attempts (with backoff from 5 s doubling to 5 min) before a deleted object
    /// is let go anyway, with a Warning Event and the `cleanup_abandoned` metric.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(i64).range(1..=100))]
    pub cleanup_attempts: i64,
    /// Namespace holding the Secrets and ServiceAccounts of ClusterAzureCredentials (defaults to
    /// the Lease namespace, i.e. the operator's own).
    #[arg(long, env = "AMLID_CLUSTER_RESOURCE_NAMESPACE")]
    pub cluster_resource_namespace: Option<String>,
    /// Serve the Azure ML managed identity endpoint to pods on this address (every replica, not
    /// only the leader), e.g. `0.0.0.0:8081`.
    #[arg(long, env = "AMLID_MSI_ENDPOINT_ADDR")]
    pub msi_endpoint_addr: Option<SocketAddr>,
    /// The endpoint's in-cluster URL, written as `MSI_ENDPOINT` into the token Secrets that ask for
    /// it, e.g. `http://aml-identity-operator-msi.aml-identity-system.svc:8081/msi/token`.
    #[arg(long, env = "AMLID_MSI_ENDPOINT_URL")]
    pub msi_endpoint_url: Option<String>,
    /// Secret (in the operator's namespace) holding the key every `MSI_SECRET` derives from;
    /// created when missing.
    #[arg(long, default_value = "aml-identity-operator-msi-key")]
    pub msi_key_secret: String,
    /// Managed identity endpoint requests per second allowed per ComputeIdentity.
    #[arg(long, default_value_t = 20.0)]
    pub msi_rate: f64,
    /// Managed identity endpoint requests one ComputeIdentity may make at once.
    #[arg(long, default_value_t = 100.0)]
    pub msi_burst: f64,
}

/// The endpoint's URL must be one pods can call: `http(s)://host[:port]/path`.
fn check_endpoint_flags(opts: &RunOptions) -> anyhow::Result<()> {
    match (&opts.msi_endpoint_addr, &opts.msi_endpoint_url) {
        (None, None) => Ok(()),
        (None, Some(_)) => anyhow::bail!(
            "--msi-endpoint-url needs --msi-endpoint-addr: every replica serves the endpoint the URL names"
        ),
        (Some(_), None) => anyhow::bail!(
            "--msi-endpoint-addr needs --msi-endpoint-url: the in-cluster URL pods reach the endpoint at (its Service)"
        ),
        (Some(_), Some(url)) => {
            let parsed = reqwest::Url::parse(url).map_err(|e| {
                anyhow::anyhow!("--msi-endpoint-url {url:?} is not a URL ({e}): e.g. http://aml-identity-operator-msi.aml-identity-system.svc:8081/msi/token")
            })?;
            anyhow::ensure!(
                matches!(parsed.scheme(), "http" | "https")
                    && parsed.host().is_some()
                    && parsed.query().is_none(),
                "--msi-endpoint-url {url:?} must be http(s)://host[:port]/path without a query: the SDKs append ?api-version=…"
            );
            anyhow::ensure!(
                opts.msi_rate > 0.0 && opts.msi_burst >= 1.0,
                "--msi-rate must be above 0 and --msi-burst at least 1"
            );
            Ok(())
        }
    }
}

/// The API server parses `--namespace-selector` (the same grammar as `kubectl -l`), and the
/// operator must be able to list namespaces to follow it.
async fn check_namespace_selector(client: &Client, selector: &str) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Namespace;
    let params = kube::api::ListParams::default().labels(selector).limit(1);
    match kube::Api::<Namespace>::all(client.clone())
        .list_metadata(&params)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 400 => anyhow::bail!(
            "--namespace-selector {selector:?} is not a label selector ({}): e.g. shard=a, or shard in (a,b)",
            e.message
        ),
        Err(kube::Error::Api(e)) if e.code == 403 => anyhow::bail!(
            "--namespace-selector needs list and watch on namespaces, which this identity lacks: grant them (the chart's ClusterRole has them)"
        ),
        Err(e) => Err(anyhow::anyhow!(e).context("checking --namespace-selector")),
    }
}

/// Where a pod's ServiceAccount namespace is mounted.
const POD_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The operator's own namespace: the flag (or `POD_NAMESPACE`), else the mounted ServiceAccount
/// namespace. Never a guess: a Lease or ClusterAzureCredential Secrets in a namespace the platform
/// team did not choose would be a silent fault.
pub fn own_namespace(flag: Option<&str>, mounted: Option<&str>) -> anyhow::Result<String> {
    let valid = |n: &str| {
        let n = n.trim();
        (!n.is_empty()
            && n.len() <= 63
            && regex::Regex::new(crate::api::common::NAMESPACE_PATTERN)
                .expect("a valid pattern")
                .is_match(n))
        .then(|| n.to_owned())
    };
    match (flag, mounted) {
        (Some(flag), _) => valid(flag).ok_or_else(|| {
            anyhow::anyhow!(
                "--lease-namespace (POD_NAMESPACE) is {}, which is not a namespace name: set it to the operator's own namespace",
                crate::api::validation::shown(flag)
            )
        }),
        (None, Some(mounted)) => valid(mounted).ok_or_else(|| {
            anyhow::anyhow!("{POD_NAMESPACE_FILE} does not hold a namespace name: set POD_NAMESPACE")
        }),
        (None, None) => anyhow::bail!(
            "cannot tell the operator's own namespace: set POD_NAMESPACE (the Helm chart sets it from the downward API) or --lease-namespace"
        ),
    }
}

/// Runs until SIGTERM or SIGINT; returns an error if leadership is lost (the process should restart).
pub async fn run(mut opts: RunOptions) -> anyhow::Result<()> {
    let mounted = std::fs::read_to_string(POD_NAMESPACE_FILE).ok();
    opts.lease_namespace = Some(own_namespace(
        opts.lease_namespace.as_deref(),
        mounted.as_deref(),
    )?);
    let own_namespace = opts.lease_namespace.clone().unwrap_or_default();
    check_endpoint_flags(&opts)?;
    let metrics = Arc::new(Metrics::default());
    let client = crate::kube_requests::client(metrics.kubernetes_requests.clone()).await?;
    if let Some(selector) = &opts.namespace_selector {
        check_namespace_selector(&client, selector).await?;
    }
    let identity = opts.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let ready = Arc::new(AtomicBool::new(false));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shutdown_tx = Arc::new(shutdown_tx);
    let signalled = shutdown_tx.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        signalled.send_replace(true);
    });

    // Loaded before anything is served: a replica without the key could not tell secrets apart.
    let msi_key = match &opts.msi_endpoint_addr {
        Some(_) => Some(Arc::new(
            crate::msi::EndpointKey::load_or_create(&client, &own_namespace, &opts.msi_key_secret)
                .await?,
        )),
        None => None,
    };
    let directory = msi_key
        .clone()
        .map(|key| Arc::new(crate::msi::Directory::new(key)));
    let health = Health {
        metrics: metrics.clone(),
        ready: ready.clone(),
        endpoint: directory.as_ref().map(|d| d.synced.clone()),
    };
    let mut server_stop = shutdown_rx.clone();
    let (addr, server_task) = server::serve(opts.health_addr, health, async move {
        let _ = server_stop.wait_for(|s| *s).await;
    })
    .await?;
    tracing::info!(%addr, "serving /healthz /readyz /metrics");

    let transport = crate::azure::Transport {
        ca_bundle: opts.azure_ca_bundle.clone(),
        host_overrides: opts.azure_resolve.clone(),
        timeout: None,
        observer: metrics.azure_observer(),
        ..Default::default()
    };
    // Fail at start on an unreadable CA bundle rather than on the first reconcile.
    transport.client()?;
    let cluster_namespace = opts
        .cluster_resource_namespace
        .clone()
        .unwrap_or_else(|| own_namespace.clone());
    let mut azure = AzureSettings::with_clock_offset(
        transport,
        &opts.imds_endpoint,
        cluster_namespace,
        opts.clock_offset_seconds,
    );
    azure.blob_url_template = opts.blob_url_template.clone();
    azure.file_url_template = opts.file_url_template.clone();
    azure.azure_cli = opts.azure_cli.clone();
    azure.allowed_custom_cloud_hosts = opts.allowed_custom_cloud_hosts.clone();
    let mut ctx = Context::new(
        client.clone(),
        metrics.clone(),
        Some(identity.clone()),
        azure,
    );
    ctx.watch_namespace = opts.namespace.clone();
    ctx.namespace_selector = opts.namespace_selector.clone();
    ctx.cleanup_attempts = opts.cleanup_attempts;
    if let (Some(key), Some(url)) = (&msi_key, &opts.msi_endpoint_url) {
        ctx.msi = Some(crate::msi::Issuer {
            url: url.clone(),
            key: key.clone(),
        });
    }
    let ctx = Arc::new(ctx);
    let endpoint_task = match (&directory, opts.msi_endpoint_addr) {
        (Some(directory), Some(addr)) => {
            let watching = directory.clone();
            let (client, namespace, labels) = (
                client.clone(),
                opts.namespace.clone(),
                opts.label_selector.clone(),
            );
            let watch = tokio::spawn(async move {
                watching
                    .watch(client, namespace.as_deref(), labels.as_deref())
                    .await
            });
            let endpoint = Arc::new(crate::msi::Endpoint::new(
                ctx.clone(),
                directory.clone(),
                crate::msi::RateLimit {
                    per_second: opts.msi_rate,
                    burst: opts.msi_burst,
                },
            ));
            let mut stop = shutdown_rx.clone();
            let (bound, task) = crate::msi::serve(addr, endpoint, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await?;
            tracing::info!(addr = %bound, path = crate::msi::PATH, "serving the Azure ML managed identity endpoint");
            Some((task, watch))
        }
        _ => None,
    };
    let scope = Scope {
        namespace: opts.namespace.clone(),
        label_selector: opts.label_selector.clone(),
        cluster_label_selector: opts.cluster_label_selector.clone(),
        concurrency: opts.concurrency,
    };

    let grace = std::time::Duration::from_secs(opts.shutdown_grace_seconds);
    let result = if opts.leader_elect {
        run_as_leader(client, &opts, identity, ctx, scope, shutdown_rx, ready).await
    } else {
        ready.store(true, Ordering::Relaxed);
        bounded(
            controllers::run_all(ctx, scope, shutdown_rx.clone()),
            shutdown_rx,
            grace,
        )
        .await;
        Ok(())
    };
    if result.is_err() {
        // Leadership lost: the servers stop too, so that the process exits and its restart rejoins
        // the election (a process left serving would look alive and never lead again).
        shutdown_tx.send_replace(true);
    }
    // Requests in flight finish (graceful shutdown), bounded like the controllers.
    if let Some((task, watch)) = endpoint_task {
        let _ = tokio::time::timeout(grace, task).await;
        watch.abort();
    }
    let _ = server_task.await;
    tracing::info!("stopped");
    result
}

async fn run_as_leader(
    client: Client,
    opts: &RunOptions,
    identity: String,
    ctx: Arc<Context>,
    scope: Scope,
    mut shutdown: watch::Receiver<bool>,
    ready: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let grace = std::time::Duration::from_secs(opts.shutdown_grace_seconds);
    let manager = LeaseManagerBuilder::new(client, &opts.lease_name)
        .with_namespace(opts.lease_namespace.as_deref().unwrap_or_default())
        .with_identity(&identity)
        .with_duration(opts.lease_duration)
        .with_grace(opts.lease_duration.div_ceil(3))
        .with_field_manager(lease_field_manager(&identity))
        .build()
        .await?;
    let (mut leader, lease_task) = manager.watch().await;
    ready.store(true, Ordering::Relaxed);
    tracing::info!(lease = %opts.lease_name, %identity, "waiting for leadership");

    let stopped = tokio::select! {
        won = leader.wait_for(|l| *l) => { won?; false }
        _ = shutdown.wait_for(|s| *s) => true,
    };
    if stopped {
        drop(leader);
        let _ = lease_task.await;
        return Ok(());
    }
    tracing::info!(%identity, "leading");
    ctx.metrics.leader.set(1);

    let lost = tokio::select! {
        _ = bounded(controllers::run_all(ctx.clone(), scope, shutdown.clone()), shutdown.clone(), grace) => false,
        _ = leader.wait_for(|l| !*l) => true,
    };
    ctx.metrics.leader.set(0);
    // Closing the channel makes the lease task release the Lease, so a standby takes over at once.
    drop(leader);
    let _ = lease_task.await;
    if lost {
        anyhow::bail!(
            "lost the leader Lease {}; exiting so that a restart rejoins the election",
            opts.lease_name
        );
    }
    Ok(())
}

/// The field manager of this instance's Lease writes. Taking the Lease is a server-side apply whose
/// conflict tells a contender it lost, so each instance needs its own manager: under one shared
/// name, two instances starting together both took the Lease and both reconciled. The API server
/// allows 128 characters; a longer identity is named by its UUIDv5.
fn lease_field_manager(identity: &str) -> String {
    let manager = format!("{}-{identity}", controllers::MANAGER);
    if manager.len() <= 128 {
        return manager;
    }
    let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, identity.as_bytes());
    format!("{}-{id}", controllers::MANAGER)
}

/// Runs `controllers` until they finish, but no longer than `grace` after shutdown was asked for:
/// an in-flight reconcile waiting on Azure must not keep the process alive past its termination grace.
async fn bounded(
    controllers: impl std::future::Future<Output = ()>,
    mut shutdown: watch::Receiver<bool>,
    grace: std::time::Duration,
) {
    tokio::select! {
        _ = controllers => {}
        _ = async {
            let _ = shutdown.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!(?grace, "reconciles still running at the end of the shutdown grace period; exiting"),
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::{lease_field_manager, own_namespace};

    #[test]
    fn each_instance_writes_its_lease_under_its_own_manager() {
        let a = lease_field_manager("operator-7d9f-abcde");
        let b = lease_field_manager("operator-7d9f-fghij");
        assert_ne!(a, b);
        assert!(a.ends_with("operator-7d9f-abcde"), "{a}");
        let long_a = lease_field_manager(&"a".repeat(253));
        let long_b = lease_field_manager(&format!("{}b", "a".repeat(252)));
        assert_ne!(long_a, long_b);
        assert!(long_a.len() <= 128 && long_b.len() <= 128, "{long_a}");
    }

    #[test]
    fn the_own_namespace_is_told_never_guessed() {
        assert_eq!(own_namespace(Some("ops"), Some("other")).unwrap(), "ops");
        assert_eq!(own_namespace(None, Some("ops\n")).unwrap(), "ops");
        let none = own_namespace(None, None).unwrap_err().to_string();
        assert!(none.contains("POD_NAMESPACE"), "{none}");
        for bad in ["", "Ops", "a/b", &"a".repeat(64)] {
            let e = own_namespace(Some(bad), None).unwrap_err().to_string();
            assert!(e.contains("--lease-namespace"), "{bad}: {e}");
        }
        assert!(own_namespace(None, Some("")).is_err());
    }
}
