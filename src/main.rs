use clap::{Parser, Subcommand};

/// Kubernetes operator for the identity side of Azure Machine Learning.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print every CustomResourceDefinition as YAML, or write one file per CRD into `--out`.
    Crdgen {
        /// Directory to write `<name>.yaml` files into (e.g. `crds/`).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crdgen { out } => aml_identity_operator::crd::generate(out.as_deref())?,
    }
    Ok(())
}
