//! `Cluster`: a Redis Cluster of three masters and three replicas, private redis-servers on
//! free ports (cluster bus ports too), with helpers to find where a room's keys live, kill the
//! master of a slot and wait for its replica to take over.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use crate::harness::{free_port, redis_cli, room_id, wait_until, RedisServer};

/// Every hash slot of a cluster.
const SLOTS: u16 = 16_384;

/// Six cluster nodes, every process killed when dropped. A node that misses pings for 1 s
/// (`cluster-node-timeout 1000`) is marked failed and its replica elected in its place.
/// Nodes announce their real `127.0.0.1:<port>`, so clients follow redirects straight to
/// them ([`FaultProxy`](super::FaultProxy) cannot stand in front of a cluster node).
pub struct Cluster {
    /// The first three were made masters by `--cluster create`, the last three replicas.
    nodes: Vec<RedisServer>,
    /// Masters killed by [`kill_master_of`](Self::kill_master_of).
    killed: Vec<u16>,
}

/// One line of `CLUSTER NODES`, the fields the helpers read.
struct NodeLine {
    port: u16,
    master: bool,
    failing: bool,
    slots: Vec<(u16, u16)>,
}

impl Cluster {
    /// Starts six nodes (`--cluster-enabled yes`, their own `nodes.conf` in their temp dirs, a
    /// free cluster bus port each) and joins them with `redis-cli --cluster create
    /// --cluster-replicas 1`. Returns once every node says `cluster_state:ok` with all 16384
    /// slots served, sees three masters with slots and three replicas, none failing, and every
    /// replica's link to its master is up (so a replica can be elected right away).
    pub async fn start() -> Cluster {
        let mut nodes = Vec::new();
        for _ in 0..6 {
            // The bus port defaults to port + 10000, which may fall in the ephemeral range.
            let bus = free_port().to_string();
            nodes.push(
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-port",
                    &bus,
                    // A replica's first sync would otherwise wait 5 s for more replicas.
                    "--repl-diskless-sync-delay",
                    "0",
                ])
                .await,
            );
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        // It waits for the nodes to meet, polling once a second: off the async workers.
        let created = tokio::task::spawn_blocking(move || {
            Command::new("redis-cli")
                .args(["--cluster", "create"])
                .args(&addrs)
                .args(["--cluster-replicas", "1", "--cluster-yes"])
                .output()
        })
        .await
        .expect("cluster create task")
        .expect("redis-cli runs");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
        let cluster = Cluster {
            nodes,
            killed: Vec::new(),
        };
        wait_until(
            Duration::from_secs(20),
            "every node says cluster_state:ok and sees 3 masters and 3 linked replicas",
            || {
                let ready = cluster.nodes.iter().all(|n| {
                    let lines = node_lines(n.port);
                    let masters = lines.iter().filter(|l| l.master && !l.slots.is_empty());
                    let replicas = lines.iter().filter(|l| !l.master);
                    cluster_ok(n.port)
                        && masters.count() == 3
                        && replicas.count() == 3
                        && lines.iter().all(|l| !l.failing)
                        && (is_master(n.port)
                            || n.cli(&["INFO", "replication"])
                                .contains("master_link_status:up"))
                });
                async move { ready }
            },
        )
        .await;
        cluster
    }

    /// `redis-cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3` (the seed nodes).
    pub fn url(&self) -> String {
        format!("redis-cluster://{}", self.seed_nodes().join(","))
    }

    /// `127.0.0.1:<port>` of the three nodes created as masters (a client needs only one that
    /// answers; after a failover one of them may be dead).
    pub fn seed_nodes(&self) -> Vec<String> {
        self.nodes[..3]
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }

    /// The ports of all six nodes, masters at start first.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The process id of the node on `port` while it runs (for [`pause`](super::pause));
    /// `None` once killed or if no node has that port.
    pub fn pid_of(&self, port: u16) -> Option<u32> {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .and_then(RedisServer::pid)
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot_of(&self, key: &str) -> u16 {
        let reply = redis_cli(self.live_port(), &["CLUSTER", "KEYSLOT", key]);
        reply
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("CLUSTER KEYSLOT {key}: {reply}"))
    }

    /// The slot of every key of room `id` (`rg:{id}:...`: the hash tag is the id).
    pub fn room_slot(&self, id: &str) -> u16 {
        self.slot_of(&format!("rg:{{{id}}}:q"))
    }

    /// The port of the master serving `slot` as a live node sees it (`CLUSTER NODES`: a
    /// master, not flagged failing, whose ranges hold the slot). Panics if none serves it.
    pub fn master_of_slot(&self, slot: u16) -> u16 {
        master_in_view(self.live_port(), slot)
            .unwrap_or_else(|| panic!("no live master serves slot {slot}"))
    }

    /// Two fresh room ids (from [`room_id`]) whose keys live on different masters.
    pub fn rooms_on_different_masters(&self) -> (String, String) {
        let first = room_id();
        let first_master = self.master_of_slot(self.room_slot(&first));
        // Two thirds of random ids land elsewhere; 100 misses in a row means a broken cluster.
        for _ in 0..100 {
            let second = room_id();
            if self.master_of_slot(self.room_slot(&second)) != first_master {
                return (first, second);
            }
        }
        panic!("100 room ids all landed on master {first_master}");
    }

    /// SIGKILLs the master serving `slot` and returns its port; it stays dead.
    pub fn kill_master_of(&mut self, slot: u16) -> u16 {
        let port = self.master_of_slot(slot);
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("the master {port} is one of this cluster's nodes"));
        node.kill();
        self.killed.push(port);
        port
    }

    /// Starts every killed master again on its port and directory: each rejoins the cluster as
    /// a replica of the master that replaced it. Returns once each answers `ROLE` as a replica
    /// with its link to its master up.
    pub async fn restart_killed(&mut self) {
        let killed = std::mem::take(&mut self.killed);
        for port in &killed {
            if let Some(node) = self.nodes.iter_mut().find(|n| n.port == *port) {
                node.restart().await;
            }
        }
        for port in killed {
            wait_until(
                Duration::from_secs(20),
                &format!("{port} is a replica again with its link up"),
                || async move {
                    let info = redis_cli(port, &["INFO", "replication"]);
                    info.contains("role:slave") && info.contains("master_link_status:up")
                },
            )
            .await;
        }
    }

    /// Waits until every live node says `cluster_state:ok` and names the same live master for
    /// `slot`, one that was not killed and answers `ROLE` as a master (the replica that took
    /// over); returns its port. Panics after `timeout`.
    pub async fn wait_failover_of(&self, slot: u16, timeout: Duration) -> u16 {
        let mut promoted = None;
        wait_until(
            timeout,
            &format!("a replica serves slot {slot} and every live node says cluster_state:ok"),
            || {
                let live: Vec<u16> = self.live_ports().collect();
                let views: BTreeSet<Option<u16>> =
                    live.iter().map(|&p| master_in_view(p, slot)).collect();
                promoted = match views.into_iter().collect::<Vec<_>>()[..] {
                    [Some(port)]
                        if live.contains(&port)
                            && is_master(port)
                            && live.iter().all(|&p| cluster_ok(p)) =>
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

    /// Moves `slot` from its master to the master on `to` the way `redis-cli --cluster
    /// reshard` does, slowly: IMPORTING on the target, MIGRATING on the source, then its keys
    /// one MIGRATE at a time with `pause` between them (clients meanwhile meet ASK redirections,
    /// and TRYAGAIN for a script whose keys are split), and finally `SETSLOT NODE` on every
    /// master. Returns the number of keys moved.
    pub async fn move_slot(&self, slot: u16, to: u16, pause: Duration) -> usize {
        let from = self.master_of_slot(slot);
        assert_ne!(from, to, "slot {slot} is on {to} already");
        let id = |port: u16| redis_cli(port, &["CLUSTER", "MYID"]).trim().to_string();
        let (from_id, to_id) = (id(from), id(to));
        let slot_s = slot.to_string();
        let ok = |port: u16, args: &[&str]| {
            let reply = redis_cli(port, args);
            assert_eq!(reply.trim(), "OK", "{args:?} on {port}: {reply}");
        };
        ok(to, &["CLUSTER", "SETSLOT", &slot_s, "IMPORTING", &from_id]);
        ok(from, &["CLUSTER", "SETSLOT", &slot_s, "MIGRATING", &to_id]);
        let mut moved = 0;
        loop {
            let keys = redis_cli(from, &["CLUSTER", "GETKEYSINSLOT", &slot_s, "1"]);
            let Some(key) = keys.lines().map(str::trim).find(|k| !k.is_empty()) else {
                break;
            };
            let to_s = to.to_string();
            let reply = redis_cli(from, &["MIGRATE", "127.0.0.1", &to_s, key, "0", "5000"]);
            assert!(
                matches!(reply.trim(), "OK" | "NOKEY"),
                "MIGRATE {key}: {reply}"
            );
            moved += 1;
            tokio::time::sleep(pause).await;
        }
        let masters: Vec<u16> = self.live_ports().filter(|&p| is_master(p)).collect();
        for port in masters {
            ok(port, &["CLUSTER", "SETSLOT", &slot_s, "NODE", &to_id]);
        }
        moved
    }

    /// Another live master than the one serving `slot`.
    pub fn other_master(&self, slot: u16) -> u16 {
        let serving = self.master_of_slot(slot);
        self.live_ports()
            .find(|&p| p != serving && is_master(p) && self.nodes[..3].iter().any(|n| n.port == p))
            .expect("another live master")
    }

    /// Runs a command with `redis-cli -c` (following MOVED redirects) through a live node and
    /// returns its raw output.
    pub fn cli(&self, args: &[&str]) -> String {
        let args: Vec<&str> = std::iter::once("-c").chain(args.iter().copied()).collect();
        redis_cli(self.live_port(), &args)
    }

    /// Ports of the nodes whose process runs.
    fn live_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes
            .iter()
            .filter(|n| n.pid().is_some())
            .map(|n| n.port)
    }

    fn live_port(&self) -> u16 {
        self.live_ports().next().expect("a live cluster node")
    }
}

/// `CLUSTER INFO` of the node on `port` says the cluster is ok with every slot served.
fn cluster_ok(port: u16) -> bool {
    let info = redis_cli(port, &["CLUSTER", "INFO"]);
    info.contains("cluster_state:ok") && info.contains(&format!("cluster_slots_ok:{SLOTS}"))
}

/// The node on `port` answers `ROLE` as a master.
fn is_master(port: u16) -> bool {
    redis_cli(port, &["ROLE"]).lines().next() == Some("master")
}

/// The master serving `slot` in the view of the node on `port`.
fn master_in_view(port: u16, slot: u16) -> Option<u16> {
    node_lines(port)
        .into_iter()
        .find(|l| l.master && !l.failing && l.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
        .map(|l| l.port)
}

/// `CLUSTER NODES` of the node on `port`, parsed: `<id> <ip:port@cport> <flags> <master>
/// <ping> <pong> <epoch> <link> <slot ranges...>`. Empty when the node does not answer.
fn node_lines(port: u16) -> Vec<NodeLine> {
    redis_cli(port, &["CLUSTER", "NODES"])
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let addr = fields.get(1)?;
            let port = addr.split('@').next()?.rsplit(':').next()?.parse().ok()?;
            let flags: Vec<&str> = fields.get(2)?.split(',').collect();
            let slots = fields
                .iter()
                .skip(8)
                .filter(|s| !s.starts_with('[')) // slots being migrated
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|n| (n, n)),
                })
                .collect();
            Some(NodeLine {
                port,
                master: flags.contains(&"master"),
                failing: flags.iter().any(|f| f.starts_with("fail")),
                slots,
            })
        })
        .collect()
}
