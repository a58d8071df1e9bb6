//! `aml-identity-emulator`: the emulator as a process, for the demo and for non-Rust clients.

use std::path::PathBuf;

use aml_identity_emulator::{Config, Emulator, Seed};
use clap::Parser;

/// A strict local emulator of Entra ID, IMDS and the ARM subset aml-identity-operator uses.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Directory for ca.pem and addresses.json.
    #[arg(long)]
    dir: PathBuf,
    /// JSON seed to load at start.
    #[arg(long)]
    seed: Option<PathBuf>,
    /// CA bundles to trust when fetching federated issuers' keys (repeatable).
    #[arg(long)]
    trust: Vec<PathBuf>,
    /// HTTPS port (0: any free port).
    #[arg(long, default_value_t = 0)]
    https_port: u16,
    /// IMDS port (0: any free port).
    #[arg(long, default_value_t = 0)]
    imds_port: u16,
    /// Lifetime of issued tokens in seconds.
    #[arg(long, default_value_t = 3599)]
    token_lifetime: i64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut config = Config::new(&args.dir);
    config.trust = args.trust;
    config.https_port = args.https_port;
    config.imds_port = args.imds_port;
    config.token_lifetime = args.token_lifetime;
    let running = Emulator::start(config).await?;
    if let Some(path) = args.seed {
        let seed: Seed = serde_json::from_slice(&std::fs::read(&path)?)?;
        running.emulator.seed(seed).map_err(anyhow::Error::msg)?;
    }
    running.write_addresses(&args.dir)?;
    tracing::info!(https = %running.base_url(), imds = %running.imds_addr, "emulator ready");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
