//! Command line: `serve`, `check-config`, `keygen`, `pass verify`, `sale add-stock`,
//! `drop verify`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::clock::now_ms;
use crate::config::PassAlgorithm;
use crate::config::{Config, ConfigError, ProcessEnv};
use crate::id::SaleId;
use crate::pass::{PassIssuer, PassKeys};
use crate::store::{RedisStore, SaleStore as _};

pub mod ctl;
mod runtime;

pub use runtime::runtime;

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
    /// Operate a running node through its admin API (`/admin/v1`).
    Ctl {
        /// Admin listener of any node.
        #[arg(
            long,
            env = "RUSHGATE_ADMIN_URL",
            default_value = "http://127.0.0.1:9090"
        )]
        admin: String,
        /// Admin token (`[admin] token`).
        #[arg(long, env = "RUSHGATE_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// What to do.
        #[command(subcommand)]
        command: ctl::CtlCommand,
    },
    /// Sale utilities (act on the shared Redis store directly).
    Sale {
        /// What to do with a sale.
        #[command(subcommand)]
        command: SaleCommand,
    },
    /// Scheduled drop utilities.
    Drop {
        /// What to do.
        #[command(subcommand)]
        command: DropCommand,
    },
}

/// `rushgate drop ...`
#[derive(Debug, Subcommand)]
pub enum DropCommand {
    /// Recompute a pre-queue's order from the published seed and the ticket ids: prints the ids
    /// in admission order, one per line (exit 0), and checks the seed against a commitment.
    Verify {
        /// The seed the room published at opening (hex).
        #[arg(long)]
        seed: String,
        /// File with one ticket id per line (a whole ticket `room.id.seq.iat.pos.mac` is read
        /// as its id); blank lines are skipped.
        #[arg(long)]
        tickets: PathBuf,
        /// The `seed_sha256` published when the pre-queue opened: exit 1 unless it matches.
        #[arg(long)]
        commitment: Option<String>,
    },
}

/// `rushgate sale ...`
#[derive(Debug, Subcommand)]
pub enum SaleCommand {
    /// Add units to a sale (negative removes unsold units); a sold-out room reopens within one
    /// refresh on every node.
    AddStock {
        /// Configuration file (its `[store]` Redis is used: redis_url or sentinel).
        #[arg(long, default_value = "config/rushgate.toml")]
        config: PathBuf,
        /// Sale id.
        sale: String,
        /// Units to add (negative: remove).
        #[arg(allow_hyphen_values = true)]
        units: i64,
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
            for warning in config.warnings() {
                println!("warning: {warning}");
            }
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
                serde_json::to_string_pretty(&*claims).unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("invalid pass: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// `sale add-stock`: needs the Redis store (the embedded store lives inside the server process;
/// use the admin API there). Exit 0 with the new counts, 1 on a store error, 2 on bad input.
pub fn sale_add_stock(config_path: &Path, sale: &str, units: i64) -> ExitCode {
    let config = match load_config(config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // The config's sale ids all follow the id rule, so an id that does not is simply not there.
    let found = config.sales.iter().find(|s| s.id == sale);
    let Some((sale, initial)) = found.and_then(|s| Some((SaleId::parse(&s.id)?, s.stock))) else {
        eprintln!("error: no sale `{sale}` in {}", config_path.display());
        return ExitCode::from(EXIT_BAD_CONFIG);
    };
    if config.store.redis().is_none() {
        eprintln!(
            "error: {} uses the embedded store, which lives inside the running server; \
             sale add-stock needs [store] redis_url or [store.sentinel]",
            config_path.display()
        );
        return ExitCode::from(EXIT_BAD_CONFIG);
    };
    let runtime = match runtime(false) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let timeout = std::time::Duration::from_millis(config.store.command_timeout_ms.max(1000));
    let result = runtime.block_on(async {
        let store = RedisStore::from_config(&config.store, 1, timeout)?
            .ok_or_else(|| crate::store::StoreError::Unavailable("no Redis configured".into()))?;
        store.wait_connected(timeout * 5).await?;
        // Before any server ran, the sale starts from its configured stock (a no-op after).
        store.init_sale(&sale, initial).await?;
        let applied = store.add_stock(&sale, units, now_ms()).await?;
        let state = store.sale_state(&sale).await?;
        Ok::<_, crate::store::StoreError>((applied, state))
    });
    match result {
        Ok(((applied, _), state)) => {
            println!(
                "sale {sale}: {applied:+} units applied; available {}, reserved {}, confirmed {}, total {}",
                state.available, state.reserved, state.confirmed, state.total
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `drop verify`: exit 0 with the order on stdout, 1 when the commitment does not match, 2 on
/// bad input (seed not hex, unreadable file).
pub fn drop_verify(seed_hex: &str, tickets: &Path, commitment: Option<&str>) -> ExitCode {
    use crate::queue::drops;
    let Some(seed) = drops::decode_hex(seed_hex) else {
        eprintln!("error: --seed must be hex");
        return ExitCode::from(EXIT_BAD_CONFIG);
    };
    if let Some(expected) = commitment {
        let actual = drops::seed_commitment(seed_hex).unwrap_or_default();
        if !actual.eq_ignore_ascii_case(expected.trim()) {
            eprintln!("seed does not match the commitment: sha256(seed) = {actual}");
            return ExitCode::from(1);
        }
    }
    let text = match std::fs::read_to_string(tickets) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", tickets.display());
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let mut ids: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| match l.split('.').collect::<Vec<_>>().as_slice() {
            [_, id, _, _, _, _] => id.to_string(),
            _ => l.to_string(),
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut out = String::new();
    for id in drops::shuffle(&seed, ids) {
        out.push_str(&id);
        out.push('\n');
    }
    print!("{out}");
    ExitCode::SUCCESS
}
