//! The `rushgate` binary: parse the CLI, set up logging, load config (exit 2 naming the field,
//! before binding a port), run.

use std::process::ExitCode;

use clap::Parser;
use rushgate::cli::{self, Cli, Command, PassCommand, SaleCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve { config } => {
            let config = match cli::load_config(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(rushgate::app::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { file } => cli::check_config(&file),
        Command::Keygen { out, algorithm } => match cli::keygen(&out, algorithm) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Pass {
            command: PassCommand::Verify { config, token },
        } => cli::pass_verify(&config, &token).unwrap_or_else(|code| code),
        Command::Sale {
            command:
                SaleCommand::AddStock {
                    config,
                    sale,
                    units,
                },
        } => cli::sale_add_stock(&config, &sale, units),
    }
}
