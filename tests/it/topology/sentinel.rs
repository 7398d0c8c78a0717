//! `SentinelSet`: a master, one replica and three Sentinels watching them, all private
//! redis-servers on free ports (`redis-server <conf> --sentinel`, so no extra package), with
//! helpers to kill the master and wait for the Sentinels to promote the replica.

use std::time::Duration;

use crate::harness::{redis_cli, wait_until, RedisServer};

/// The name the Sentinels monitor the master under (`store.sentinel.master`).
const MASTER_NAME: &str = "rushgate";

/// A monitored master/replica pair and a quorum-2 set of three Sentinels, every process killed
/// when dropped. Sentinels mark a silent master down after 1 s (`down-after-milliseconds
/// 1000`) and retry a failed failover after 10 s (twice `failover-timeout 5000`).
pub struct SentinelSet {
    /// The master and the replica, in that order at start (roles swap on failover).
    data: Vec<RedisServer>,
    sentinels: Vec<RedisServer>,
    /// The master [`kill_master`](Self::kill_master) killed last.
    killed: Option<u16>,
}

impl SentinelSet {
    /// Starts the master, the replica (`--replicaof`) and three Sentinels, each with its own
    /// config file in its own temp dir. Returns once replication is online and every Sentinel
    /// sees the master up, its one replica and the two other Sentinels, so a failover can
    /// start right away.
    pub async fn start() -> SentinelSet {
        // Replicas sync diskless, by default after waiting 5 s for more replicas to join.
        let master = RedisServer::start_with(&["--repl-diskless-sync-delay", "0"]).await;
        let master_port = master.port.to_string();
        let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &master_port]).await;
        wait_until(
            Duration::from_secs(10),
            "the replica's link to the master is up",
            || {
                let up = replica
                    .cli(&["INFO", "replication"])
                    .contains("master_link_status:up");
                async move { up }
            },
        )
        .await;

        let conf = format!(
            "sentinel monitor {MASTER_NAME} 127.0.0.1 {port} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
             sentinel failover-timeout {MASTER_NAME} 5000\n",
            port = master.port
        );
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            sentinels.push(RedisServer::start_with_conf(Some(&conf), &["--sentinel"]).await);
        }
        // A Sentinel learns the replica from the master's INFO at once, and the other Sentinels
        // from their hello messages (every 2 s).
        wait_until(
            Duration::from_secs(15),
            "every Sentinel knows the master, its replica and the two other Sentinels",
            || {
                let ready = sentinels.iter().all(|s| {
                    let master = fields(&s.cli(&["SENTINEL", "master", MASTER_NAME]));
                    let field = |name: &str| master.iter().find(|(k, _)| k == name).map(|f| &f.1);
                    field("flags").is_some_and(|f| f == "master")
                        && field("num-slaves").is_some_and(|n| n == "1")
                        && field("num-other-sentinels").is_some_and(|n| n == "2")
                });
                async move { ready }
            },
        )
        .await;
        SentinelSet {
            data: vec![master, replica],
            sentinels,
            killed: None,
        }
    }

    /// The name the master is monitored under (`store.sentinel.master`).
    pub fn master_name(&self) -> &'static str {
        MASTER_NAME
    }

    /// `127.0.0.1:<port>` of each Sentinel (`store.sentinel.nodes`).
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect()
    }

    /// The ports of the data servers: the master at start, then the replica.
    pub fn data_ports(&self) -> Vec<u16> {
        self.data.iter().map(|s| s.port).collect()
    }

    /// The process id of the data server or Sentinel on `port` while it runs (for
    /// [`pause`](super::pause)); `None` once killed or if no server of the set has that port.
    pub fn pid_of(&self, port: u16) -> Option<u32> {
        self.data
            .iter()
            .chain(&self.sentinels)
            .find(|s| s.port == port)
            .and_then(RedisServer::pid)
    }

    /// The master's port as the first Sentinel that answers names it
    /// (`SENTINEL get-master-addr-by-name`). Panics if none answers.
    pub fn current_master(&self) -> u16 {
        self.sentinels
            .iter()
            .find_map(|s| master_addr(s.port))
            .expect("a Sentinel names the master")
    }

    /// SIGKILLs the data server the Sentinels name as master and returns its port; it stays
    /// dead.
    pub fn kill_master(&mut self) -> u16 {
        let port = self.current_master();
        let server = self
            .data
            .iter_mut()
            .find(|s| s.port == port)
            .unwrap_or_else(|| panic!("the master {port} is one of this set's servers"));
        server.kill();
        self.killed = Some(port);
        port
    }

    /// Waits until every Sentinel names the same master, other than the one
    /// [`kill_master`](Self::kill_master) killed (or, with none killed, than the master at the
    /// call), and that server answers `ROLE` as a master; returns its port. Panics after
    /// `timeout`.
    pub async fn wait_failover(&self, timeout: Duration) -> u16 {
        let old = self.killed.unwrap_or_else(|| self.current_master());
        let mut promoted = None;
        wait_until(
            timeout,
            &format!("the Sentinels name a master other than {old} that says ROLE master"),
            || {
                let named: Vec<Option<u16>> =
                    self.sentinels.iter().map(|s| master_addr(s.port)).collect();
                promoted = match named.first() {
                    Some(&Some(port))
                        if port != old
                            && named.iter().all(|n| *n == Some(port))
                            && redis_cli(port, &["ROLE"]).lines().next() == Some("master") =>
                    {
                        Some(port)
                    }
                    _ => None,
                };
                let done = promoted.is_some();
                async move { done }
            },
        )
        .await;
        promoted.expect("the wait ended on a promoted master")
    }

    /// Runs a command with redis-cli against `port` (a data server or a Sentinel) and returns
    /// its raw output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        redis_cli(port, args)
    }
}

/// The master's port according to the Sentinel on `port`, if it answers.
fn master_addr(sentinel: u16) -> Option<u16> {
    let reply = redis_cli(
        sentinel,
        &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
    );
    let mut lines = reply.lines();
    match (lines.next(), lines.next()) {
        (Some("127.0.0.1"), Some(port)) => port.trim().parse().ok(),
        _ => None,
    }
}

/// A flat `key\nvalue\n...` reply (redis-cli's output for a map when not on a terminal) as
/// pairs.
fn fields(reply: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = reply.lines().collect();
    lines
        .chunks_exact(2)
        .map(|kv| (kv[0].to_string(), kv[1].to_string()))
        .collect()
}
