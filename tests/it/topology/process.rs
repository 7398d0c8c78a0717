//! Freezing a server the test started: SIGSTOP and SIGCONT through `kill(1)` (the crate forbids
//! unsafe code, and no signal crate is a dependency). A stopped process keeps its sockets open
//! and answers nothing, like a server stuck in a long pause; its clients see timeouts, not
//! closed connections. SIGKILL (every helper's Drop) ends a stopped process too.

use std::process::Command;

/// Stops process `pid` (SIGSTOP) until [`resume`]; it holds its connections but runs nothing.
/// Panics if the signal cannot be sent (no such process).
pub fn pause(pid: u32) {
    signal(pid, "-STOP");
}

/// Lets process `pid` run again (SIGCONT) after [`pause`]; what its clients sent meanwhile is
/// then read and answered. Panics if the signal cannot be sent.
pub fn resume(pid: u32) {
    signal(pid, "-CONT");
}

fn signal(pid: u32, which: &str) {
    let status = Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .expect("kill(1) runs");
    assert!(status.success(), "kill {which} {pid} failed: {status}");
}
