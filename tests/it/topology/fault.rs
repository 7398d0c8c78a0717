//! `FaultProxy`: a TCP proxy on a free port between rushgate and a Redis, whose faults a test
//! switches at run time: added latency, every connection reset, and a partition (black hole).
//! It runs as tasks on the test's tokio runtime and stops when dropped.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::harness::free_port;

/// A proxy from `127.0.0.1:<port>` to `127.0.0.1:<upstream>`, forwarding bytes both ways
/// unchanged until a fault is switched on. Dropping it closes every connection. Bytes pass
/// untouched, so a [`TlsRedis`](super::TlsRedis) behind it is reached at
/// `rediss://127.0.0.1:<port>` (its certificate names 127.0.0.1).
pub struct FaultProxy {
    /// The port clients connect to.
    pub port: u16,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

/// The switches, read by every connection.
struct Shared {
    upstream: u16,
    /// Added to every reply, in microseconds.
    latency_us: AtomicU64,
    /// True while partitioned.
    blackhole: watch::Sender<bool>,
    /// Bumped by each `reset_all`.
    resets: watch::Sender<u64>,
    open: AtomicUsize,
}

impl FaultProxy {
    /// Starts a proxy in front of the server on `127.0.0.1:<upstream_port>`, listening on a
    /// port from [`free_port`]; it accepts connections as soon as this returns. Must be called
    /// on a tokio runtime, which runs it.
    pub async fn start(upstream_port: u16) -> FaultProxy {
        // A port free when picked may be taken before the bind (a Redis Cluster node binds its
        // bus on port + 10,000 later): pick another.
        let mut attempt = 0;
        let (port, listener) = loop {
            let port = free_port();
            match TcpListener::bind(("127.0.0.1", port)).await {
                Ok(listener) => break (port, listener),
                Err(e) if attempt < 20 => {
                    attempt += 1;
                    let _ = e;
                }
                Err(e) => panic!("bind the proxy port: {e}"),
            }
        };
        let shared = Arc::new(Shared {
            upstream: upstream_port,
            latency_us: AtomicU64::new(0),
            blackhole: watch::Sender::new(false),
            resets: watch::Sender::new(0),
            open: AtomicUsize::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        FaultProxy {
            port,
            shared,
            accept,
        }
    }

    /// `redis://127.0.0.1:<proxy port>`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Delays every byte from the server by `latency` (measured from when the proxy read it),
    /// so each command's round trip takes `latency` longer; requests pass undelayed. Bytes
    /// keep their order. Applies at once to bytes not yet sent. `Duration::ZERO` turns it off.
    pub fn set_latency(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.shared.latency_us.store(us, Ordering::Relaxed);
    }

    /// Closes every open connection with a TCP reset, on both sides (the client's read fails
    /// with `ConnectionReset`, and the server drops its client). Connections opened afterwards
    /// work as before.
    pub fn reset_all(&self) {
        self.shared.resets.send_modify(|n| *n += 1);
    }

    /// With `true`, a partition: the proxy forwards nothing either way and answers nothing,
    /// and connections accepted meanwhile do not reach the server (clients connect, then time
    /// out). Nothing is dropped: with `false`, what was held is delivered in order, and held
    /// connections reach the server then, as after a healed network.
    pub fn blackhole(&self, on: bool) {
        self.shared.blackhole.send_replace(on);
    }

    /// The number of client connections the proxy holds now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // The accept task owns the connections' JoinSet: aborting it closes them all.
        self.accept.abort();
    }
}

impl Shared {
    fn latency(&self) -> Duration {
        Duration::from_micros(self.latency_us.load(Ordering::Relaxed))
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((client, _)) = accepted {
                    connections.spawn(relay(client, shared.clone()));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Counts a connection as open while it lives.
struct Open(Arc<Shared>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one client connection: connects upstream (once no partition holds it), then pumps
/// both ways until either side closes or a reset is asked for.
async fn relay(mut client: TcpStream, shared: Arc<Shared>) {
    shared.open.fetch_add(1, Ordering::Relaxed);
    let _open = Open(shared.clone());
    let mut resets = shared.resets.subscribe();
    let mut blackhole = shared.blackhole.subscribe();
    let connect = async {
        let _ = blackhole.wait_for(|on| !*on).await;
        TcpStream::connect(("127.0.0.1", shared.upstream)).await
    };
    let mut server = tokio::select! {
        connected = connect => match connected {
            Ok(server) => server,
            // The server is down: the client sees its connection reset.
            Err(_) => return reset(&client),
        },
        _ = resets.changed() => return reset(&client),
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let was_reset = {
        let (from_client, to_client) = client.split();
        let (from_server, to_server) = server.split();
        tokio::select! {
            _ = pump(from_client, to_server, &shared, false) => false,
            _ = pump(from_server, to_client, &shared, true) => false,
            _ = resets.changed() => true,
        }
    };
    if was_reset {
        reset(&client);
        reset(&server);
    }
}

/// Makes dropping `stream` send a TCP reset instead of a FIN.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

/// Copies one direction until the reader closes (after delivering what it read) or the
/// writer fails. Reading and writing are decoupled by a small queue so that delayed bytes
/// are a delay line, not a throughput cap; the writer holds while a partition lasts.
async fn pump(mut from: ReadHalf<'_>, mut to: WriteHalf<'_>, shared: &Shared, delayed: bool) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(64);
    let read = async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            if tx.send((Instant::now(), buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
        // The writer delivers what is queued, then ends.
        drop(tx);
        std::future::pending::<()>().await
    };
    let write = async {
        let mut blackhole = shared.blackhole.subscribe();
        while let Some((read_at, bytes)) = rx.recv().await {
            let _ = blackhole.wait_for(|on| !*on).await;
            if delayed {
                tokio::time::sleep_until(read_at + shared.latency()).await;
            }
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = read => {}
        _ = write => {}
    }
}
