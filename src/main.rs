//! The `rushgate` binary: parse the CLI, load config (exit 2 naming the field, before binding a
//! port), set up logging as the config's `[log]` says (other commands log text at `info`), run.

use std::process::ExitCode;

/// mimalloc instead of the system allocator: the request path allocates small, short-lived
/// buffers (bodies, frames, headers) and glibc malloc showed up at ~14% of a join profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use rushgate::cli::{self, Cli, Command, DropCommand, PassCommand, SaleCommand};
use rushgate::config::LogConfig;
use rushgate::ops::logging;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` logs as its config says, so its subscriber starts after loading (problems with
    // the file go to stderr as plain lines either way).
    if !matches!(cli.command, Command::Serve { .. }) {
        logging::init(&LogConfig::default());
    }
    match cli.command {
        Command::Serve { config } => {
            let config_path = config;
            let config = match cli::load_config(&config_path) {
                Ok(c) => c,
                Err(code) => return code,
            };
            logging::init(&config.log);
            let runtime = match cli::runtime(true) {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            match runtime.block_on(rushgate::app::run(config, config_path)) {
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
        Command::Ctl {
            admin,
            token,
            command,
        } => rushgate::cli::ctl::run(&admin, token.as_deref(), &command),
        Command::Sale {
            command:
                SaleCommand::AddStock {
                    config,
                    sale,
                    units,
                },
        } => cli::sale_add_stock(&config, &sale, units),
        Command::Drop {
            command:
                DropCommand::Verify {
                    seed,
                    tickets,
                    commitment,
                },
        } => cli::drop_verify(&seed, &tickets, commitment.as_deref()),
    }
}
