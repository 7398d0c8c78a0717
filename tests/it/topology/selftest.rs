//! The topology helpers proven without rushgate: each test starts one topology, breaks it the
//! way rushgate's tests will, and checks with redis-cli or a raw RESP connection that the
//! break happened, within a deadline. Timings are printed (`--nocapture`) for the budget.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use super::{pause, resume, ClientAuth, Cluster, FaultProxy, SentinelSet, TlsRedis};
use crate::harness::{wait_until, RedisServer};

/// Longer than any reply on loopback takes, short enough to keep the suite quick.
const SILENCE: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_redis_answers_over_tls_only() {
    let mut redis = TlsRedis::start().await;
    let certs = redis.certs();
    assert_eq!(redis.url(), format!("rediss://127.0.0.1:{}", redis.port));
    assert_eq!(redis.cli(&["PING"]).trim(), "PONG");
    assert_eq!(redis.cli(&["SET", "k", "v"]).trim(), "OK");
    // Client certificates are optional: trusting the CA is enough.
    let ca = ["--tls", "--cacert", path(&certs.ca)];
    assert_eq!(redis.cli_with(&ca, &["GET", "k"]).trim(), "v");
    // A client trusting only another CA cannot verify the server.
    let other_ca = ["--tls", "--cacert", path(&certs.other_ca)];
    let refused = redis.cli_with(&other_ca, &["PING"]);
    assert!(
        refused.contains("certificate verify failed") && !refused.contains("PONG"),
        "{refused}"
    );
    // rustls (what a rustls-based client verifies with) accepts the chain for 127.0.0.1,
    // with or without the client certificate, and rejects it against the other CA.
    let identity = Some((certs.client_cert.as_path(), certs.client_key.as_path()));
    let reply = rustls_ping(redis.port, &certs.ca, identity).await;
    assert_eq!(reply.unwrap(), "+PONG");
    assert_eq!(
        rustls_ping(redis.port, &certs.ca, None).await.unwrap(),
        "+PONG"
    );
    let refused = rustls_ping(redis.port, &certs.other_ca, None)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("invalid peer certificate"),
        "{refused}"
    );
    // Plain text is refused: redis-cli without TLS gets an error, a raw PING a closed socket.
    let plain = redis.cli_with(&[], &["PING"]);
    assert!(
        plain.contains("Error") && !plain.contains("PONG"),
        "{plain}"
    );
    let mut raw = connect(redis.port).await;
    raw.write_all(b"PING\r\n").await.unwrap();
    let answer = read_reply(&mut raw, Duration::from_secs(5)).await;
    assert!(matches!(answer, Some(Err(_))), "raw PING: {answer:?}");
    wait_until(
        Duration::from_secs(5),
        "the server logs the plain-text handshakes",
        || {
            let logged = redis.log().matches("wrong version number").count() >= 2;
            async move { logged }
        },
    )
    .await;
    // A restart keeps the port and the certificates.
    redis.restart().await;
    let reply = rustls_ping(redis.port, redis.ca_file(), None).await;
    assert_eq!(reply.unwrap(), "+PONG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_redis_requiring_client_certs_refuses_others() {
    let redis = TlsRedis::start_with(ClientAuth::Required).await;
    let certs = redis.certs();
    assert_eq!(redis.cli(&["PING"]).trim(), "PONG");
    let ca = ["--tls", "--cacert", path(&certs.ca)];
    let anonymous = redis.cli_with(&ca, &["PING"]);
    assert!(
        anonymous.contains("Error") && !anonymous.contains("PONG"),
        "{anonymous}"
    );
    let stranger = [
        "--tls",
        "--cacert",
        path(&certs.ca),
        "--cert",
        path(&certs.other_client_cert),
        "--key",
        path(&certs.other_client_key),
    ];
    assert!(rustls_ping(redis.port, &certs.ca, None).await.is_err());
    let identity = Some((certs.client_cert.as_path(), certs.client_key.as_path()));
    let reply = rustls_ping(redis.port, &certs.ca, identity).await;
    assert_eq!(reply.unwrap(), "+PONG");
    let stranger = redis.cli_with(&stranger, &["PING"]);
    assert!(
        stranger.contains("Error") && !stranger.contains("PONG"),
        "{stranger}"
    );
    wait_until(
        Duration::from_secs(5),
        "the server logs both refused handshakes",
        || {
            let log = redis.log();
            let logged = log.contains("peer did not return a certificate")
                && log.contains("certificate verify failed");
            async move { logged }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_promote_the_replica_when_the_master_dies() {
    let started = Instant::now();
    let mut set = SentinelSet::start().await;
    let startup = started.elapsed();
    let [master, replica] = set.data_ports()[..] else {
        panic!("a master and a replica");
    };
    assert_eq!(set.sentinel_addrs().len(), 3);
    assert_eq!(set.current_master(), master);
    assert_eq!(set.cli(master, &["SET", "k", "v"]).trim(), "OK");
    wait_until(
        Duration::from_secs(5),
        "the write reaches the replica",
        || {
            let there = set.cli(replica, &["GET", "k"]).trim() == "v";
            async move { there }
        },
    )
    .await;

    assert!(set.pid_of(master).is_some());
    assert_eq!(set.kill_master(), master);
    assert_eq!(set.pid_of(master), None);
    let killed = Instant::now();
    let promoted = set.wait_failover(Duration::from_secs(25)).await;
    let failover = killed.elapsed();
    assert_eq!(promoted, replica);
    assert_eq!(set.current_master(), replica);
    assert_eq!(set.cli(promoted, &["GET", "k"]).trim(), "v");
    assert_eq!(set.cli(promoted, &["SET", "k", "w"]).trim(), "OK");
    eprintln!("sentinel set: started in {startup:?}, failed over {failover:?} after the kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_places_rooms_apart_and_fails_over() {
    let started = Instant::now();
    let mut cluster = Cluster::start().await;
    let startup = started.elapsed();
    assert_eq!(cluster.seed_nodes().len(), 3);
    assert!(cluster.url().starts_with("redis-cluster://127.0.0.1:"));
    // The hash tag decides the slot: every key of a room is on one master.
    let (a, b) = cluster.rooms_on_different_masters();
    let (slot_a, slot_b) = (cluster.room_slot(&a), cluster.room_slot(&b));
    assert_eq!(slot_a, cluster.slot_of(&format!("rg:{{{a}}}:other")));
    let (master_a, master_b) = (
        cluster.master_of_slot(slot_a),
        cluster.master_of_slot(slot_b),
    );
    assert_ne!(master_a, master_b);
    let key = format!("rg:{{{a}}}:q");
    assert_eq!(cluster.cli(&["SET", &key, "v"]).trim(), "OK");

    assert!(cluster.pid_of(master_a).is_some());
    assert_eq!(cluster.kill_master_of(slot_a), master_a);
    assert_eq!(cluster.pid_of(master_a), None);
    let killed = Instant::now();
    let promoted = cluster
        .wait_failover_of(slot_a, Duration::from_secs(25))
        .await;
    let failover = killed.elapsed();
    assert_ne!(promoted, master_a);
    assert!(
        cluster.ports()[3..].contains(&promoted),
        "a replica took over"
    );
    assert_eq!(cluster.master_of_slot(slot_b), master_b);
    assert_eq!(cluster.cli(&["SET", &key, "w"]).trim(), "OK");
    assert_eq!(cluster.cli(&["GET", &key]).trim(), "w");
    eprintln!("cluster: started in {startup:?}, failed over {failover:?} after the kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_proxy_forwards_and_delays_replies() {
    let redis = RedisServer::start().await;
    let proxy = FaultProxy::start(redis.port).await;
    assert_eq!(proxy.url(), format!("redis://127.0.0.1:{}", proxy.port));
    // A real client through the proxy.
    assert_eq!(
        crate::harness::redis_cli(proxy.port, &["SET", "k", "v"]).trim(),
        "OK"
    );
    assert_eq!(redis.cli(&["GET", "k"]).trim(), "v");

    let mut conn = connect(proxy.port).await;
    let direct = round_trip(&mut conn).await;
    let latency = Duration::from_millis(300);
    proxy.set_latency(latency);
    let delayed = round_trip(&mut conn).await;
    assert!(
        delayed >= latency && delayed < latency + Duration::from_millis(500),
        "{delayed:?} with {latency:?} of latency"
    );
    proxy.set_latency(Duration::ZERO);
    let after = round_trip(&mut conn).await;
    assert!(after < latency, "{after:?} once latency is off");
    eprintln!(
        "fault proxy: PING {direct:?}, with {latency:?} of latency {delayed:?}, then {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_proxy_resets_every_connection() {
    let redis = RedisServer::start().await;
    let proxy = FaultProxy::start(redis.port).await;
    let clients_alone = redis.info_field("clients", "connected_clients");
    let mut first = connect(proxy.port).await;
    let mut second = connect(proxy.port).await;
    round_trip(&mut first).await;
    round_trip(&mut second).await;
    assert_eq!(proxy.open_connections(), 2);
    assert_eq!(
        redis.info_field("clients", "connected_clients"),
        clients_alone + 2
    );

    proxy.reset_all();
    for conn in [&mut first, &mut second] {
        let reply = read_reply(conn, Duration::from_secs(5)).await;
        let kind = match reply {
            Some(Err(e)) => e.kind(),
            other => panic!("a reset connection read {other:?}"),
        };
        assert_eq!(kind, io::ErrorKind::ConnectionReset);
    }
    wait_until(
        Duration::from_secs(5),
        "the server drops both clients",
        || {
            let n = redis.info_field("clients", "connected_clients");
            async move { n == clients_alone }
        },
    )
    .await;
    assert_eq!(proxy.open_connections(), 0);
    round_trip(&mut connect(proxy.port).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_proxy_blackhole_holds_everything_until_healed() {
    let redis = RedisServer::start().await;
    let proxy = FaultProxy::start(redis.port).await;
    let mut before = connect(proxy.port).await;
    round_trip(&mut before).await;
    let clients = redis.info_field("clients", "connected_clients");

    proxy.blackhole(true);
    before.write_all(b"PING\r\n").await.unwrap();
    assert!(read_reply(&mut before, SILENCE).await.is_none(), "no reply");
    // New clients connect to the proxy, but neither reach the server nor hear back.
    let mut during = connect(proxy.port).await;
    during.write_all(b"PING\r\n").await.unwrap();
    assert!(read_reply(&mut during, SILENCE).await.is_none(), "no reply");
    assert_eq!(redis.info_field("clients", "connected_clients"), clients);

    proxy.blackhole(false);
    for conn in [&mut before, &mut during] {
        let reply = read_reply(conn, Duration::from_secs(5)).await;
        assert_eq!(reply.map(|r| r.unwrap()).as_deref(), Some("+PONG"));
    }
    assert_eq!(
        redis.info_field("clients", "connected_clients"),
        clients + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_answers_only_once_resumed() {
    let redis = RedisServer::start().await;
    let pid = redis.pid().expect("running");
    let mut conn = connect(redis.port).await;
    round_trip(&mut conn).await;

    pause(pid);
    conn.write_all(b"PING\r\n").await.unwrap();
    let silent = read_reply(&mut conn, SILENCE).await;
    resume(pid);
    assert!(silent.is_none(), "a paused server answered {silent:?}");
    let reply = read_reply(&mut conn, Duration::from_secs(5)).await;
    assert_eq!(reply.map(|r| r.unwrap()).as_deref(), Some("+PONG"));
}

/// A plain TCP connection to `127.0.0.1:<port>`.
async fn connect(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("connect to {port}: {e}"))
}

/// Sends an inline PING and returns how long `+PONG` took; panics on anything else.
async fn round_trip(conn: &mut TcpStream) -> Duration {
    let sent = Instant::now();
    conn.write_all(b"PING\r\n").await.unwrap();
    let reply = read_reply(conn, Duration::from_secs(5)).await;
    assert_eq!(reply.map(|r| r.unwrap()).as_deref(), Some("+PONG"));
    sent.elapsed()
}

/// An inline PING over TLS with rustls (ring), trusting only `ca` and presenting `identity`
/// (certificate, key) if given; the reply line, or why the handshake or the read failed.
async fn rustls_ping(port: u16, ca: &Path, identity: Option<(&Path, &Path)>) -> io::Result<String> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).expect("CA PEM"))
        .expect("CA certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => config
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(cert).expect("client certificate PEM")],
                PrivateKeyDer::from_pem_file(key).expect("client key PEM"),
            )
            .expect("client identity"),
        None => config.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let server = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    let mut tls = connector.connect(server, connect(port).await).await?;
    tls.write_all(b"PING\r\n").await?;
    read_reply(&mut tls, Duration::from_secs(5))
        .await
        .unwrap_or_else(|| Err(io::ErrorKind::TimedOut.into()))
}

/// One reply line without its CRLF: `None` if nothing complete arrived `within`, an error if
/// the connection closed or failed first.
async fn read_reply<S: AsyncRead + Unpin>(
    conn: &mut S,
    within: Duration,
) -> Option<io::Result<String>> {
    let mut line = Vec::new();
    let read = async {
        let mut buf = [0u8; 256];
        loop {
            let n = conn.read(&mut buf).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            line.extend_from_slice(&buf[..n]);
            if line.ends_with(b"\r\n") {
                return Ok(String::from_utf8_lossy(&line).trim_end().to_string());
            }
        }
    };
    tokio::time::timeout(within, read).await.ok()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf8 temp path")
}
