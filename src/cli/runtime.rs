//! The tokio runtime every command runs on: the server scheduler for `serve` (and
//! `rushgate-loadtest`), one thread for short commands.

use std::process::ExitCode;

/// A tokio runtime (the server scheduler of `server_runtime_builder` for `serve` and for
/// `rushgate-loadtest`, one thread for short CLI commands), or the exit code after printing why
/// it could not start.
pub fn runtime(server: bool) -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut builder = if server {
        server_runtime_builder()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

/// The scheduler a server runs on: tokio's multi-threaded one, one worker per CPU this process
/// may use, or its single-threaded one when that is one CPU (pinned with `taskset`, or a cgroup
/// quota of one CPU, which `available_parallelism` honours). With one worker there is no one to
/// share tasks with, and the multi-threaded scheduler's hand-offs, atomics and idle-worker
/// bookkeeping are pure cost: on one core the single-threaded scheduler served 5-35% more
/// requests per second on every bench row (`scripts/bench.sh`). The load generator and the
/// baselines of `rushgate-loadtest` use the same rule, so the bench compares like with like.
fn server_runtime_builder() -> tokio::runtime::Builder {
    let one_cpu = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    if one_cpu {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
}
