//! `rushgate-loadtest`: the crowd simulator and the baselines rushgate is measured against.
//!
//! - `run SCENARIO.toml`: drives a bounded load (or a whole `drop` event) at a rushgate node on
//!   loopback, prints a summary table and writes JSON results and SVG plots to `--out`.
//! - `baseline hello` / `baseline redis-lua`: the ceilings of the benchmark table;
//!   `baseline hyper-proxy`: the floor of a proxy on rushgate's stack (a context row);
//!   `baseline ws-echo`: a WebSocket echo server, and `ws`: WebSocket round trips per second
//!   (through rushgate's tunnel, or to the echo server directly).
//!
//! Modules: [`client`] keep-alive connections, [`load`] the closed-loop driver, [`stats`] HDR
//! histograms, [`scenario`] scenario files, [`runs`] the endpoint scenarios, [`drop`] the event
//! simulation and its checks, [`baseline`] the baseline servers, [`redis_info`] Redis readings,
//! [`plot`] SVG charts.

mod baseline;
mod client;
mod drop;
mod load;
mod plot;
mod redis_info;
mod runs;
mod scenario;
mod stats;
mod streams;
mod target;
mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Command line.
#[derive(Parser)]
#[command(
    name = "rushgate-loadtest",
    version,
    about = "Crowd simulator and baselines for rushgate"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a scenario file against a node (or one spawned in-process with --spawn).
    Run(runs::RunArgs),
    /// WebSocket round trips per second against a target.
    Ws(ws::WsArgs),
    /// Event streams: thousands open, the time from a room change to the last stream's event.
    Streams(streams::StreamsArgs),
    /// Serves a baseline until killed.
    Baseline {
        #[command(subcommand)]
        which: Baseline,
    },
}

#[derive(Subcommand)]
enum Baseline {
    /// Bare hyper answering the poll-shaped JSON body from memory.
    Hello {
        /// Address to listen on (loopback).
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
    },
    /// Prints the poll-shaped body `hello` serves (for other baselines, e.g. nginx `return`).
    Body,
    /// Bare hyper plus one fred EVALSHA per request.
    RedisLua {
        /// Address to listen on (loopback).
        #[arg(long, default_value = "127.0.0.1:8082")]
        listen: SocketAddr,
        /// Redis to call.
        #[arg(long, default_value = "redis://127.0.0.1:6379")]
        redis: String,
        /// Connections in the pool (rushgate's default `store.pool_size` is 4).
        #[arg(long, default_value_t = 4)]
        pool: usize,
    },
    /// A WebSocket echo server (any path).
    WsEcho {
        /// Address to listen on (loopback).
        #[arg(long, default_value = "127.0.0.1:8084")]
        listen: SocketAddr,
    },
    /// Bare hyper forwarding to an upstream with hyper-util's pooled client.
    HyperProxy {
        /// Address to listen on (loopback).
        #[arg(long, default_value = "127.0.0.1:8083")]
        listen: SocketAddr,
        /// The upstream to forward to.
        #[arg(long)]
        upstream: SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The same scheduler rule as `rushgate serve`: the baselines must run on the runtime
    // rushgate runs on, or the ratios would compare schedulers instead of work.
    let runtime = match rushgate::cli::runtime(true) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Run(args) => runs::run(args).await,
        Command::Ws(args) => ws::run(args).await,
        Command::Streams(args) => streams::run(args).await.map(|_| true),
        Command::Baseline { which } => match which {
            Baseline::Hello { listen } => baseline::hello(listen).await.map(|_| true),
            Baseline::Body => {
                println!("{}", baseline::POLL_LIKE_BODY);
                Ok(true)
            }
            Baseline::RedisLua {
                listen,
                redis,
                pool,
            } => baseline::redis_lua(listen, &redis, pool)
                .await
                .map(|_| true),
            Baseline::WsEcho { listen } => ws::echo(listen).await.map(|_| true),
            Baseline::HyperProxy { listen, upstream } => {
                baseline::hyper_proxy(listen, upstream).await.map(|_| true)
            }
        },
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("rushgate-loadtest: correctness findings (see above)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("rushgate-loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Where results go.
fn out_dir(dir: &Option<PathBuf>) -> PathBuf {
    dir.clone()
        .unwrap_or_else(|| PathBuf::from("target/loadtest"))
}
