//! `kubectl amlid`: the operator's objects as a platform engineer asks about them — status with
//! conditions, Events, expiry and the identity chain; what a written Secret holds (never the
//! credential itself); force-renewal.

pub mod access;
pub mod doctor;
pub mod inspect;
pub mod kinds;
pub mod renew;
pub mod status;

use clap::{Parser, Subcommand, ValueEnum};
use kube::Client;

/// kubectl plugin of aml-identity-operator.
#[derive(Parser, Debug)]
#[command(name = "kubectl amlid", version, about)]
pub struct Cli {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long, global = true)]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long, global = true)]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Text, global = true)]
    pub output: Format,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// For programs.
    Json,
    /// For programs and people.
    Yaml,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Conditions, expiry, the identity chain and Events of objects: `status`, `status datastore`,
    /// `status computeidentity/cpu-cluster`.
    Status {
        /// A kind (`computeidentity`, `ci`, `datastores`…), `kind/name`, or nothing for every kind.
        target: Option<String>,
        /// With a kind: the object's name.
        name: Option<String>,
    },
    /// What a Secret holds, decoded: token claims, SAS fields, registry logins — never the token.
    Inspect {
        #[command(subcommand)]
        what: Inspect,
    },
    /// Which credential and identity a namespace, or an object in it, would use.
    Whoami {
        /// `kind/name`, or nothing for the namespace.
        target: Option<String>,
        /// With a kind: the object's name.
        name: Option<String>,
        /// Where the operator keeps ClusterAzureCredentials' ServiceAccounts (its namespace).
        #[arg(long, default_value = "aml-identity-system")]
        operator_namespace: String,
    },
    /// Checks the whole chain of one object, each link with a verdict and a fix; exits 1 when a
    /// check fails.
    Doctor {
        /// `kind/name`.
        target: String,
        /// With a kind: the object's name.
        name: Option<String>,
    },
    /// Audits the cluster.
    Audit {
        #[command(subcommand)]
        what: Audit,
    },
    /// Renews objects' credentials now (sets `amlidentity.io/force-refresh`).
    Renew {
        /// `kind/name`, or a kind with `-l` or `--all`.
        target: String,
        /// With a kind: the object's name.
        name: Option<String>,
        /// Objects of the kind whose labels match.
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// Every object of the kind.
        #[arg(long)]
        all: bool,
    },
}

/// `audit` subjects.
#[derive(Subcommand, Debug)]
pub enum Audit {
    /// Which namespaces can cause which identities and shared principals to be used; flags the
    /// ones reachable from more than one namespace.
    Access,
}

/// `inspect` targets.
#[derive(Subcommand, Debug)]
pub enum Inspect {
    /// A Secret of the namespace.
    Secret {
        /// Its name.
        name: String,
    },
}

/// A plugin failure, printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Talking to the API server failed.
    #[error("{0}")]
    Kube(#[from] kube::Error),
    /// The command line names something that is not there.
    #[error("{0}")]
    Usage(String),
    /// `doctor` found failing checks (already printed).
    #[error("{0}")]
    Unhealthy(String),
    /// Reading the kubeconfig failed.
    #[error("kubeconfig: {0}")]
    Config(String),
}

/// Runs the plugin; what it prints goes to `out`.
pub async fn run(cli: Cli, out: &mut impl std::io::Write) -> Result<(), Error> {
    let options = kube::config::KubeConfigOptions {
        context: cli.context.clone(),
        ..Default::default()
    };
    let config = match kube::Config::from_kubeconfig(&options).await {
        Ok(c) => c,
        Err(e) if cli.context.is_none() => {
            kube::Config::incluster().map_err(|_| Error::Config(e.to_string()))?
        }
        Err(e) => return Err(Error::Config(e.to_string())),
    };
    let default_namespace = config.default_namespace.clone();
    let client = Client::try_from(config)?;
    let namespace = if cli.all_namespaces {
        None
    } else {
        Some(cli.namespace.clone().unwrap_or(default_namespace))
    };
    let now = jiff::Timestamp::now().as_second();
    let write = |out: &mut dyn std::io::Write, text: String| {
        out.write_all(text.as_bytes())
            .map_err(|e| Error::Usage(format!("writing output: {e}")))
    };
    match &cli.command {
        Command::Status { target, name } => {
            let report = status::collect(
                &client,
                namespace.as_deref(),
                target.as_deref(),
                name.as_deref(),
            )
            .await?;
            write(out, render(cli.output, &report, status::text))?;
        }
        Command::Inspect {
            what: Inspect::Secret { name },
        } => {
            let namespace = namespace.ok_or_else(|| {
                Error::Usage("inspect secret takes one namespace (-n), not -A".into())
            })?;
            let api =
                kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client, &namespace);
            let secret = api.get(name).await?;
            let report = status::SecretReport::of(&secret, now);
            write(out, render(cli.output, &report, status::SecretReport::text))?;
        }
        Command::Whoami {
            target,
            name,
            operator_namespace,
        } => {
            let namespace = namespace
                .ok_or_else(|| Error::Usage("whoami takes one namespace (-n), not -A".into()))?;
            let report = access::whoami(
                &client,
                &namespace,
                target.as_deref(),
                name.as_deref(),
                operator_namespace,
            )
            .await?;
            write(out, render(cli.output, &report, access::whoami_text))?;
        }
        Command::Doctor { target, name } => {
            let namespace = namespace
                .ok_or_else(|| Error::Usage("doctor takes one namespace (-n), not -A".into()))?;
            let diagnosis =
                doctor::diagnose(&client, &namespace, target, name.as_deref(), now).await?;
            write(out, render(cli.output, &diagnosis, doctor::text))?;
            let failed = diagnosis
                .checks
                .iter()
                .filter(|c| c.verdict == doctor::Verdict::Fail)
                .count();
            if failed > 0 {
                return Err(Error::Unhealthy(format!("{failed} check(s) failed")));
            }
        }
        Command::Audit {
            what: Audit::Access,
        } => {
            let report = access::audit(&client).await?;
            write(out, render(cli.output, &report, access::audit_text))?;
        }
        Command::Renew {
            target,
            name,
            selector,
            all,
        } => {
            let renewed = renew::renew(
                &client,
                namespace.as_deref(),
                target,
                name.as_deref(),
                selector.as_deref(),
                *all,
                now,
            )
            .await?;
            write(out, render(cli.output, &renewed, renew::text))?;
        }
    }
    Ok(())
}

fn render<T: serde::Serialize>(format: Format, value: &T, text: fn(&T) -> String) -> String {
    match format {
        Format::Text => text(value),
        Format::Json => serde_json::to_string_pretty(value).expect("a report serializes") + "\n",
        Format::Yaml => serde_yaml::to_string(value).expect("a report serializes"),
    }
}

/// An object's name, from its JSON.
pub fn name_of(object: &serde_json::Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// An object's namespace, from its JSON (empty for cluster-scoped objects).
pub fn namespace_of(object: &serde_json::Value) -> &str {
    object["metadata"]["namespace"].as_str().unwrap_or_default()
}

/// The strings of the JSON list `value` (none when it is not a list).
pub fn strings(value: &serde_json::Value) -> Vec<&str> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .collect()
}

/// `3h 2m`, `45s`: a duration for people.
pub fn duration(seconds: i64) -> String {
    let (d, h, m, s) = (
        seconds / 86400,
        seconds % 86400 / 3600,
        seconds % 3600 / 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}
