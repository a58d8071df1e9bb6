//! `kubectl amlid`: install as `kubectl-amlid` on the PATH and kubectl finds it.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = aml_identity_operator::plugin::Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut out = std::io::stdout();
    match runtime.block_on(aml_identity_operator::plugin::run(cli, &mut out)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
