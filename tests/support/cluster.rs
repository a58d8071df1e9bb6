//! The local control plane from a test's point of view: a client, the CRDs, throwaway namespaces and
//! operator processes that are always stopped.

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aml_identity_operator::crd;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Config};

/// A client of the local control plane named by `KUBECONFIG` (`make test` starts it and sets it).
pub async fn client() -> Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "KUBECONFIG is not set: run the tests with `make test`, which starts the local control plane"
    );
    let config = Config::infer()
        .await
        .expect("a kubeconfig for the local control plane");
    Client::try_from(config).expect("a client")
}

/// The API server's service-account issuer and the CA file that verifies its TLS (what an Entra ID
/// emulator must trust to read the issuer's keys).
pub async fn issuer_and_ca(client: &Client) -> (String, PathBuf) {
    let request = http::Request::get("/.well-known/openid-configuration")
        .body(Vec::new())
        .unwrap();
    let discovery: serde_json::Value =
        serde_json::from_str(&client.request_text(request).await.unwrap()).unwrap();
    let kubeconfig = kube::config::Kubeconfig::read().unwrap();
    let ca = kubeconfig.clusters[0]
        .cluster
        .as_ref()
        .unwrap()
        .certificate_authority
        .clone()
        .expect("the kubeconfig names its CA file");
    (discovery["issuer"].as_str().unwrap().to_owned(), ca.into())
}

/// Installs the CRDs without CEL (1.20 does not know `x-kubernetes-validations`) and waits until
/// every one is established. Idempotent, so every test may call it.
pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("aml-identity-operator-tests").force();
    for c in crd::all() {
        let name = c.metadata.name.clone().unwrap();
        api.patch(&name, &params, &Patch::Apply(crd::strip_cel(&c)))
            .await
            .unwrap_or_else(|e| panic!("installing {name}: {e}"));
    }
    for c in crd::all() {
        let name = c.metadata.name.clone().unwrap();
        wait_until(
            Duration::from_secs(30),
            &format!("{name} established"),
            || {
                let api = api.clone();
                let name = name.clone();
                async move {
                    let crd = api.get(&name).await.ok()?;
                    crd.status?
                        .conditions?
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                        .then_some(())
                }
            },
        )
        .await;
    }
}

/// Polls `check` every 200 ms until it yields a value, or panics after `timeout`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A fresh namespace for one test.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let name = format!("{prefix}-{}", unique());
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    name
}

/// Label on cluster-scoped test objects naming the test's namespace.
pub const TEST_NAMESPACE_LABEL: &str = "amlidentity.io/test-namespace";

/// Deletes a namespace (the namespace controller removes what is inside) and the cluster-scoped
/// objects labelled for it, waiting (bounded) until those are gone while the operator still runs.
pub async fn delete_namespace(client: &Client, name: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
    let api: Api<aml_identity_operator::api::ClusterAzureCredential> = Api::all(client.clone());
    let selector =
        kube::api::ListParams::default().labels(&format!("{TEST_NAMESPACE_LABEL}={name}"));
    let _ = api
        .delete_collection(&DeleteParams::default(), &selector)
        .await;
    wait_until(
        Duration::from_secs(15),
        "cluster-scoped test objects to be deleted",
        || {
            let api = api.clone();
            let selector = selector.clone();
            // No CRD installed (a test that never created one) counts as nothing to wait for.
            async move {
                api.list(&selector)
                    .await
                    .map_or(Some(()), |l| l.items.is_empty().then_some(()))
            }
        },
    )
    .await;
    release_finalizers(client, name).await;
}

/// Takes the operator's finalizers off what is left in a deleted test namespace: the test's
/// operator is about to stop, and objects nobody will ever release would keep the namespace
/// Terminating, piling up work for the shared control plane's namespace controller. Only objects
/// already marked for deletion are released (the operator would add its finalizer back to
/// others), for a few seconds until none is left.
async fn release_finalizers(client: &Client, namespace: &str) {
    let patch = Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}}));
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), namespace);
    for _ in 0..20 {
        let mut held = 0;
        for c in crd::all().iter().filter(|c| c.spec.scope == "Namespaced") {
            let api = dynamic_api(
                client,
                &serde_json::json!({"kind": c.spec.names.kind}),
                namespace,
            );
            for object in api
                .list(&Default::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default()
            {
                let meta = &object.metadata;
                if meta.finalizers.as_ref().is_some_and(|f| !f.is_empty()) {
                    held += 1;
                    if meta.deletion_timestamp.is_some()
                        && let Some(name) = meta.name.as_deref()
                    {
                        let _ = api.patch(name, &PatchParams::default(), &patch).await;
                    }
                }
            }
        }
        for secret in secrets
            .list(&Default::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            let meta = &secret.metadata;
            if meta.finalizers.as_ref().is_some_and(|f| !f.is_empty()) {
                held += 1;
                if meta.deletion_timestamp.is_some()
                    && let Some(name) = meta.name.as_deref()
                {
                    let _ = secrets.patch(name, &PatchParams::default(), &patch).await;
                }
            }
        }
        if held == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A short suffix unique within this machine's test runs.
pub fn unique() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{:x}{:x}{}",
        std::process::id(),
        nanos % 0xffff,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Api for a sample object by its apiVersion/kind, in `namespace` unless cluster-scoped.
pub fn dynamic_api(
    client: &Client,
    object: &serde_json::Value,
    namespace: &str,
) -> Api<DynamicObject> {
    let kind = object["kind"].as_str().unwrap();
    let gvk = GroupVersionKind::gvk("amlidentity.io", "v1alpha1", kind);
    let plural = crd::all()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap()
        .spec
        .names
        .plural;
    let resource = ApiResource::from_gvk_with_plural(&gvk, &plural);
    if kind.starts_with("Cluster") {
        Api::all_with(client.clone(), &resource)
    } else {
        Api::namespaced_with(client.clone(), namespace, &resource)
    }
}

/// The `Ready` condition of an object, as (status, reason, message, observedGeneration).
pub fn ready_condition(object: &DynamicObject) -> Option<(String, String, String, Option<i64>)> {
    let conditions = object.data.get("status")?.get("conditions")?.as_array()?;
    let ready = conditions.iter().find(|c| c["type"] == "Ready")?;
    Some((
        ready["status"].as_str()?.to_owned(),
        ready["reason"].as_str()?.to_owned(),
        ready["message"].as_str().unwrap_or_default().to_owned(),
        ready["observedGeneration"].as_i64(),
    ))
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An operator process under test; SIGTERM then SIGKILL on drop, logs kept in a file.
pub struct Operator {
    child: Option<Child>,
    /// Its `/metrics` address.
    pub health_port: u16,
    /// Where its stderr goes.
    pub log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Operator {
    /// Starts `aml-identity-operator run` scoped to `namespace`, electing a leader on `lease`.
    pub fn start(namespace: &str, lease: &str, identity: &str) -> Operator {
        Self::start_with(namespace, lease, identity, &[])
    }

    /// Like [`Operator::start`], with extra `run` arguments (e.g. where Azure is).
    pub fn start_with(namespace: &str, lease: &str, identity: &str, extra: &[String]) -> Operator {
        let mut args: Vec<String> = vec!["--namespace".into(), namespace.into()];
        args.extend_from_slice(extra);
        Self::spawn(namespace, lease, identity, &args)
    }

    /// An operator watching every namespace but only objects labelled `selector` (so tests with two
    /// namespaces stay apart from each other), living in `home` (its Lease, and the Secrets of the
    /// ClusterAzureCredentials labelled for `home`).
    pub fn start_across(
        home: &str,
        selector: &str,
        lease: &str,
        identity: &str,
        extra: &[String],
    ) -> Operator {
        let mut args: Vec<String> = vec!["--label-selector".into(), selector.into()];
        args.extend_from_slice(extra);
        Self::spawn(home, lease, identity, &args)
    }

    /// An operator signed in with the kubeconfig at `kubeconfig` (e.g. a ServiceAccount's, to test
    /// its RBAC), its Lease `lease` in `home`, with `args`.
    pub fn start_as(
        kubeconfig: &std::path::Path,
        home: &str,
        lease: &str,
        identity: &str,
        args: &[String],
    ) -> Operator {
        Self::spawn_as(Some(kubeconfig), home, lease, identity, args)
    }

    fn spawn(namespace: &str, lease: &str, identity: &str, args: &[String]) -> Operator {
        let suite = std::env::var_os("AMLID_OPERATOR_KUBECONFIG").map(std::path::PathBuf::from);
        if let Some(path) = &suite {
            assert!(
                path.exists(),
                "AMLID_OPERATOR_KUBECONFIG names {path:?}, which does not exist: `make test` writes it first"
            );
        }
        Self::spawn_as(suite.as_deref(), namespace, lease, identity, args)
    }

    fn spawn_as(
        kubeconfig: Option<&std::path::Path>,
        namespace: &str,
        lease: &str,
        identity: &str,
        args: &[String],
    ) -> Operator {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("operator.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let health_port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_aml-identity-operator"));
        // Under `make test` the operator signs in as the chart's ServiceAccount, so every test
        // also proves the chart's RBAC is enough.
        if let Some(path) = kubeconfig {
            command.env("KUBECONFIG", path);
        }
        let child = command
            .args(["run", "--lease-namespace", namespace, "--lease-name", lease])
            .args(["--identity", identity, "--lease-duration", "6"])
            .args(["--health-addr", &format!("127.0.0.1:{health_port}")])
            // This test's cluster-scoped objects carry its namespace in a label; other tests' do not.
            .args([
                "--cluster-label-selector",
                &format!("{TEST_NAMESPACE_LABEL}={namespace}"),
            ])
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("AMLID_TEST_OPERATOR_LOG")
                    .unwrap_or_else(|_| "info,kube=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting the operator");
        Operator {
            child: Some(child),
            health_port,
            log_path,
            _dir: dir,
        }
    }

    /// The operator's `/metrics` text, or `None` while it is not serving.
    pub async fn metrics(&self) -> Option<String> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.health_port))
            .await
            .ok()?;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await.ok()?;
        Some(body)
    }

    /// Sum of a metric's samples whose line starts with `prefix` (e.g. `aml_identity_operator_leader`).
    pub async fn metric_sum(&self, prefix: &str) -> Option<f64> {
        let text = self.metrics().await?;
        Some(
            text.lines()
                .filter(|l| l.starts_with(prefix) && !l.starts_with('#'))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum(),
        )
    }

    /// The operator's resident memory in KiB (VmRSS), while it runs.
    pub fn rss_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    }

    /// SIGKILL at once: a crash, with no chance to finish anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, wait up to 10 s for a clean exit, then SIGKILL. Returns whether it exited by itself.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        let logs = self.logs();
        let tail: Vec<&str> = logs
            .lines()
            .rev()
            .take(
                std::env::var("AMLID_TEST_LOG_LINES")
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(30),
            )
            .collect();
        eprintln!(
            "the operator ignored SIGTERM for 10 s; its last log lines:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        false
    }

    /// Waits up to `timeout` for the operator to exit by itself: its exit status, or `None` while
    /// it still runs.
    pub fn exited_within(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Everything the operator logged so far.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.stop();
    }
}
