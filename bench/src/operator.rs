//! The operator under test: the release binary beside this one, as its own process, so its CPU
//! time and memory are read from `/proc` and its Kubernetes requests from its own `/metrics`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running operator process.
pub struct Operator {
    child: Child,
    health_port: u16,
    http: reqwest::Client,
    /// How it was started, to start it again after a kill.
    args: Vec<String>,
    log: PathBuf,
    kubeconfig: Option<PathBuf>,
}

/// `aml-identity-operator` next to this binary (`cargo build --release` builds both).
pub fn binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let path = me.with_file_name("aml-identity-operator");
    anyhow::ensure!(
        path.exists(),
        "{} is missing: build it first with `cargo build --release --locked --workspace`",
        path.display()
    );
    Ok(path)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Operator {
    /// Starts `run` with `args`, its log in `log`, signing in with `kubeconfig` when given.
    pub fn start(args: &[String], log: &Path, kubeconfig: Option<&Path>) -> anyhow::Result<Self> {
        let health_port = free_port()?;
        Ok(Operator {
            child: Self::spawn(args, log, kubeconfig, health_port, false)?,
            health_port,
            http: reqwest::Client::new(),
            args: args.to_vec(),
            log: log.to_path_buf(),
            kubeconfig: kubeconfig.map(Path::to_path_buf),
        })
    }

    /// SIGKILL (nothing gets to finish), then the same process again, its log appended.
    pub fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(
            &self.args,
            &self.log,
            self.kubeconfig.as_deref(),
            self.health_port,
            true,
        )?;
        Ok(())
    }

    fn spawn(
        args: &[String],
        log: &Path,
        kubeconfig: Option<&Path>,
        health_port: u16,
        append: bool,
    ) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(log)?;
        let mut command = Command::new(binary()?);
        if let Some(path) = kubeconfig {
            command.env("KUBECONFIG", path);
        }
        let child = command
            .arg("run")
            .args(["--health-addr", &format!("127.0.0.1:{health_port}")])
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("AMLID_BENCH_OPERATOR_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        Ok(child)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User plus system CPU seconds so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid()).unwrap_or(0.0)
    }

    /// (current, peak) resident memory in MiB.
    pub fn rss_mib(&self) -> (f64, f64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                .map_or(0.0, |kib| kib / 1024.0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Its `/metrics` text; empty while it is not serving.
    pub async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.health_port);
        match self.http.get(url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Kubernetes requests it sent so far, by `verb resource`.
    pub async fn kubernetes_requests(&self) -> BTreeMap<String, f64> {
        let text = self.metrics().await;
        let mut out = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("aml_identity_operator_kubernetes_requests_total{")
            else {
                continue;
            };
            let Some((labels, value)) = rest.split_once("} ") else {
                continue;
            };
            let label = |name: &str| label_value(labels, name);
            if let (Some(verb), Some(resource), Ok(v)) = (
                label("verb"),
                label("resource"),
                value.trim().parse::<f64>(),
            ) {
                out.insert(format!("{verb} {resource}"), v);
            }
        }
        out
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            if !self.alive() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if self.alive() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of label `name` in a Prometheus series' `a="x",b="y"` (values without commas).
fn label_value(labels: &str, name: &str) -> Option<String> {
    labels.split(',').find_map(|l| {
        l.strip_prefix(name)?
            .strip_prefix("=\"")?
            .strip_suffix('"')
            .map(str::to_owned)
    })
}

/// User plus system CPU seconds of a process.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    // Linux's USER_HZ is 100 on every architecture it reports through /proc.
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

/// The operator instances of a run: one, or one per shard of the namespaces. Costs are summed;
/// memory is reported per instance.
pub struct Instances(pub Vec<Operator>);

impl Instances {
    /// CPU seconds of every instance.
    pub fn cpu_seconds(&self) -> f64 {
        self.0.iter().map(Operator::cpu_seconds).sum()
    }

    /// (current summed, highest peak) resident memory in MiB.
    pub fn rss_mib(&self) -> (f64, f64) {
        self.0
            .iter()
            .map(Operator::rss_mib)
            .fold((0.0, 0.0), |(c, p), (rc, rp)| (c + rc, f64::max(p, rp)))
    }

    /// Reconciles every instance ran so far.
    pub async fn reconciles(&self) -> f64 {
        let mut total = 0.0;
        for operator in &self.0 {
            total += operator.reconciles().await;
        }
        total
    }

    /// Kubernetes requests of every instance, by `verb resource`.
    pub async fn kubernetes_requests(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for operator in &self.0 {
            for (k, v) in operator.kubernetes_requests().await {
                *out.entry(k).or_default() += v;
            }
        }
        out
    }

    /// Whether every instance still runs.
    pub fn alive(&mut self) -> bool {
        self.0.iter_mut().all(Operator::alive)
    }

    pub async fn stop(&mut self, grace: Duration) {
        for operator in &mut self.0 {
            operator.stop(grace).await;
        }
    }
}

impl Operator {
    /// The objects (`kind/namespace/name`) this instance reports a Ready series for: the ones it
    /// reconciled (an instance forgets an object that left its shard).
    pub async fn reported_objects(&self) -> std::collections::BTreeSet<String> {
        let text = self.metrics().await;
        text.lines()
            .filter_map(|line| line.strip_prefix("aml_identity_operator_ready{"))
            .filter_map(|rest| rest.split_once('}').map(|(labels, _)| labels))
            .filter_map(|labels| {
                Some(format!(
                    "{}/{}/{}",
                    label_value(labels, "kind")?,
                    label_value(labels, "namespace")?,
                    label_value(labels, "name")?
                ))
            })
            .collect()
    }

    /// Reconciles it started, all kinds.
    pub async fn reconciles(&self) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with("aml_identity_operator_reconciles_total{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .fold(0.0, |a, b| a + b)
    }
}
