//! Command line: `serve`, `check-config`, `keygen`, `pass verify`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, ProcessEnv};
use crate::pass::{PassAlgorithm, PassIssuer, PassKeys};

/// Exit code for an unusable configuration.
pub const EXIT_BAD_CONFIG: u8 = 2;

/// rushgate: virtual waiting room and flash-sale engine.
#[derive(Debug, Parser)]
#[command(name = "rushgate", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve {
        /// Configuration file.
        #[arg(long, default_value = "config/rushgate.toml")]
        config: PathBuf,
    },
    /// Validate a configuration file and exit (0 valid, 2 invalid).
    CheckConfig {
        /// Configuration file.
        file: PathBuf,
    },
    /// Write a new pass signing key (PKCS#8 PEM).
    Keygen {
        /// Output file (refuses to overwrite).
        #[arg(long)]
        out: PathBuf,
        /// Key type.
        #[arg(long, default_value = "EdDSA", value_parser = parse_algorithm)]
        algorithm: PassAlgorithm,
    },
    /// Pass utilities.
    Pass {
        /// What to do with passes.
        #[command(subcommand)]
        command: PassCommand,
    },
}

/// `rushgate pass ...`
#[derive(Debug, Subcommand)]
pub enum PassCommand {
    /// Verify a pass with the configured key; prints its claims (exit 0) or why it is invalid (exit 1).
    Verify {
        /// Configuration file.
        #[arg(long, default_value = "config/rushgate.toml")]
        config: PathBuf,
        /// The pass (compact JWT).
        token: String,
    },
}

fn parse_algorithm(s: &str) -> Result<PassAlgorithm, String> {
    match s {
        "EdDSA" => Ok(PassAlgorithm::EdDSA),
        "ES256" => Ok(PassAlgorithm::ES256),
        _ => Err("expected EdDSA or ES256".into()),
    }
}

/// Loads a config or prints every problem and returns the exit code for a bad config.
pub fn load_config(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path, &ProcessEnv).map_err(|e| {
        match &e {
            ConfigError::Invalid(problems) => {
                eprintln!("error: invalid configuration {}:", path.display());
                for p in problems {
                    eprintln!("  {p}");
                }
            }
            other => eprintln!("error: {other}"),
        }
        ExitCode::from(EXIT_BAD_CONFIG)
    })
}

/// `check-config`
pub fn check_config(path: &Path) -> ExitCode {
    match load_config(path) {
        Ok(config) => {
            println!("{}: ok ({} rooms)", path.display(), config.rooms.len());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `keygen`
pub fn keygen(out: &Path, algorithm: PassAlgorithm) -> anyhow::Result<()> {
    if out.exists() {
        anyhow::bail!(
            "{} exists; refusing to overwrite a signing key",
            out.display()
        );
    }
    let (keys, _) = PassKeys::load_or_create(out, algorithm, true)?;
    println!("wrote {} ({algorithm}, kid {})", out.display(), keys.kid());
    Ok(())
}

/// `pass verify`
pub fn pass_verify(config_path: &Path, token: &str) -> Result<ExitCode, ExitCode> {
    let config = load_config(config_path)?;
    let keys = match PassKeys::load_or_create(
        &config.passes.signing_key_file,
        config.passes.algorithm,
        false,
    ) {
        Ok((keys, _)) => keys,
        Err(e) => {
            eprintln!("error: pass signing key: {e}");
            return Err(ExitCode::from(EXIT_BAD_CONFIG));
        }
    };
    let issuer = PassIssuer::new(keys, &config.passes.issuer, &config.passes.audience);
    match issuer.verify(token) {
        Ok(claims) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&claims).unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("invalid pass: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
