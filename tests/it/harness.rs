//! Test harness: a real `redis-server` per test (free port, temp dir, killed on drop) and
//! in-process rushgate servers bound to port 0, with one method per endpoint.

use std::future::Future;
use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use rushgate::app::App;
use rushgate::config::{Config, RoomConfig, Secret};
use serde_json::Value;
use tempfile::TempDir;

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Memory,
    Redis,
}

/// Runs one test body on both stores, so the embedded store and Redis cannot drift apart.
///
/// - `both_stores!(scenario)`: `async fn scenario(kind: StoreKind)` becomes two tests,
///   `scenario::memory` and `scenario::redis` (a private redis-server).
/// - `both_stores!(view: a, b, ...)`: each `async fn a(store)` gets a fresh conformance
///   [`Fixture`](crate::conformance::Fixture) of each kind, seen through its `view` method
///   (`rooms`, `shared_rooms` or `sales`).
#[macro_export]
macro_rules! both_stores {
    ($view:ident: $($name:ident),+ $(,)?) => {
        $(
            $crate::both_stores!(@tests $name, |kind| async move {
                let fixture = $crate::conformance::Fixture::of(kind).await;
                super::$name(fixture.$view()).await
            });
        )+
    };
    ($name:ident) => {
        $crate::both_stores!(@tests $name, |kind| super::$name(kind));
    };
    (@tests $name:ident, $run:expr) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                ($run)($crate::harness::StoreKind::Memory).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                ($run)($crate::harness::StoreKind::Redis).await
            }
        }
    };
}

/// `id` as a sale id, for calls on the sale store (test ids always follow the id rule).
pub fn typed_sale(id: &str) -> rushgate::id::SaleId {
    rushgate::id::SaleId::parse(id).expect("valid sale id")
}

/// `id` as a coupon-campaign id, for calls on the sale store.
pub fn typed_campaign(id: &str) -> rushgate::id::CampaignId {
    rushgate::id::CampaignId::parse(id).expect("valid campaign id")
}

/// A private redis-server for one test.
pub struct RedisServer {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
    extra: Vec<String>,
    /// A config file in `dir`, passed first on every start (Sentinel rewrites it in place).
    conf: Option<PathBuf>,
}

/// A port nothing listens on right now, for a server the test starts in another process
/// (redis-server, nginx, Prometheus, the rushgate binary). It is taken below the kernel's
/// ephemeral range: every suite runs in this one binary, and the crowd tests' thousands of
/// client connections take their source ports from that range, so a port handed out from it
/// could be taken by a client before the server that asked for it binds it. Ports are handed
/// out in turn from a per-process random start, so two callers never get the same one.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (first, span) = (
        low.saturating_sub(12_000).max(1024),
        12_000.min(low.saturating_sub(1024)),
    );
    if span > 0 {
        let start = u32::from(std::process::id() as u16) % span;
        let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
        for _ in 0..span {
            let port = first + NEXT.fetch_add(1, Ordering::Relaxed) % span;
            if let Ok(port) = u16::try_from(port) {
                if StdListener::bind(("127.0.0.1", port)).is_ok() {
                    return port;
                }
            }
        }
    }
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl RedisServer {
    /// Starts a redis-server with no persistence.
    pub async fn start() -> RedisServer {
        Self::start_with(&[]).await
    }

    /// Starts a redis-server with extra `--flag value` arguments.
    pub async fn start_with(extra: &[&str]) -> RedisServer {
        Self::start_with_conf(None, extra).await
    }

    /// Starts a redis-server whose config file `redis.conf` in its temp dir holds `conf`
    /// (given as the first argument, before the flags), with extra `--flag value` arguments.
    /// The file stays for [`restart`](Self::restart): `redis-server redis.conf --sentinel`
    /// runs a Sentinel, which needs a config file it can rewrite.
    pub async fn start_with_conf(conf: Option<&str>, extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = conf.map(|text| {
            let path = dir.path().join("redis.conf");
            std::fs::write(&path, text).expect("write redis.conf");
            path
        });
        let mut server = RedisServer {
            port: free_port(),
            dir,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            conf,
        };
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        let mut args: Vec<String> = [
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            self.dir.path().to_str().expect("utf8 dir"),
            "--save",
            "",
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(conf) = &self.conf {
            args.insert(0, conf.to_str().expect("utf8 conf path").to_string());
        }
        if !self.extra.iter().any(|a| a == "--appendonly") {
            args.extend(["--appendonly".to_string(), "no".to_string()]);
        }
        args.extend(self.extra.iter().cloned());
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let port = self.port;
        wait_until(
            Duration::from_secs(10),
            "redis-server answers PING",
            || async move { redis_cli(port, &["PING"]).trim() == "PONG" },
        )
        .await;
    }

    /// `redis://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's process id while it runs (`None` after [`kill`](Self::kill)), for
    /// signals such as SIGSTOP.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILLs the server (no shutdown save).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Runs a command with redis-cli and returns its raw output.
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args)
    }

    /// A numeric field of `INFO <section>`.
    pub fn info_field(&self, section: &str, field: &str) -> u64 {
        let info = self.cli(&["INFO", section]);
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("INFO {section} has no numeric {field}: {info}"))
    }

    /// Total commands executed (all `cmdstat_*` calls), excluding the INFO calls themselves.
    pub fn total_commands(&self) -> u64 {
        self.cli(&["INFO", "commandstats"])
            .lines()
            .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info:"))
            .filter_map(|l| l.split("calls=").nth(1))
            .filter_map(|v| v.split(',').next())
            .filter_map(|v| v.parse::<u64>().ok())
            .sum()
    }
}

/// redis-cli against the server on `port` (for tasks that cannot borrow a [`RedisServer`]).
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` until it returns true or `timeout` passes (then panics naming `what`).
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Held by the tests that open ten thousand sockets or more, one at a time: this process's
/// open-file limit (20,000 here, not raisable) is shared by every test running at once.
pub static SOCKET_HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A random room id, so tests sharing a Redis never collide.
pub fn room_id() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A room with settings that make tests fast: high pacing, short idle timeout.
pub fn room(id: &str) -> RoomConfig {
    let mut r = RoomConfig::with_id(id);
    r.admit_per_minute = 60_000;
    r.max_active = 1_000;
    r.session_seconds = 600;
    r.idle_timeout_seconds = 60;
    r
}

fn key_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rushgate-test-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("key dir");
        dir
    })
}

/// A config on ephemeral ports with the given store and rooms.
pub fn config(redis_url: Option<String>, rooms: Vec<RoomConfig>) -> Config {
    let mut c = Config::default();
    c.server.listen = "127.0.0.1:0".into();
    c.server.admin_listen = "127.0.0.1:0".into();
    c.server.shutdown_grace_seconds = 2;
    c.store.redis_url = redis_url;
    c.store.refresh_ms = 50;
    c.store.command_timeout_ms = 2_000;
    c.passes.signing_key_file = key_dir().join("pass-key.pem");
    c.passes.ticket_secret = Secret("test-ticket-secret-0123456789".into());
    c.rooms = rooms;
    // The suite drives thousands of shoppers from one address; limits get their own tests.
    c.limits = rushgate::config::LimitsConfig::off();
    c
}

/// A running rushgate with an HTTP client.
pub struct TestApp {
    pub app: Option<App>,
    pub base: String,
    pub admin: String,
    pub client: reqwest::Client,
}

/// A response: status, JSON body (Null when not JSON) and headers.
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    pub fn str(&self, field: &str) -> &str {
        self.body[field].as_str().unwrap_or_default()
    }
    pub fn u64(&self, field: &str) -> u64 {
        self.body[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field} in {}", self.body))
    }
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    }
}

/// Starts rushgate with `config`.
pub async fn spawn_app(config: Config) -> TestApp {
    let app = App::start(config).await.expect("rushgate starts");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        // Below the server's 10 s keep-alive header timeout, so an idle pooled connection is
        // never reused just as the server closes it.
        .pool_idle_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    TestApp {
        base: format!("http://{}", app.public_addr),
        admin: format!("http://{}", app.admin_addr),
        app: Some(app),
        client,
    }
}

/// Starts rushgate from `config` written to a file in `dir` (so `POST /admin/v1/reload`
/// reads it again); returns the node and the file's path.
pub async fn spawn_app_from_file(config: Config, dir: &std::path::Path) -> (TestApp, PathBuf) {
    let path = dir.join("rushgate.toml");
    std::fs::write(&path, toml::to_string(&config).expect("config as TOML")).expect("write");
    let app = App::start_with_file(config, Some(path.clone()))
        .await
        .expect("rushgate starts");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let t = TestApp {
        base: format!("http://{}", app.public_addr),
        admin: format!("http://{}", app.admin_addr),
        app: Some(app),
        client,
    };
    (t, path)
}

/// A store for `kind` plus the redis-server behind it (kept alive by the caller).
pub async fn store_url(kind: StoreKind) -> (Option<RedisServer>, Option<String>) {
    match kind {
        StoreKind::Memory => (None, None),
        StoreKind::Redis => {
            let r = RedisServer::start().await;
            let url = r.url();
            (Some(r), Some(url))
        }
    }
}

/// A response read into a [`Reply`] (body `Null` when it is not JSON).
pub async fn reply(resp: reqwest::Response) -> Reply {
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        body,
        headers,
    }
}

impl TestApp {
    pub fn api(&self, path: &str) -> String {
        format!("{}/_rushgate/v1/{path}", self.base)
    }

    /// `POST join`, optionally with a user key and/or a bearer ticket.
    pub async fn join(&self, room: &str, user: Option<&str>, ticket: Option<&str>) -> Reply {
        let mut req = self.client.post(self.api(&format!("rooms/{room}/join")));
        if let Some(user) = user {
            req = req.json(&serde_json::json!({ "user": user }));
        }
        if let Some(t) = ticket {
            req = req.bearer_auth(t);
        }
        reply(req.send().await.expect("join request")).await
    }

    /// `GET position` with a bearer ticket.
    pub async fn position(&self, room: &str, ticket: &str) -> Reply {
        let req = self
            .client
            .get(self.api(&format!("rooms/{room}/position")))
            .bearer_auth(ticket);
        reply(req.send().await.expect("position request")).await
    }

    /// `POST leave` with a bearer ticket.
    pub async fn leave(&self, room: &str, ticket: &str) -> Reply {
        let req = self
            .client
            .post(self.api(&format!("rooms/{room}/leave")))
            .bearer_auth(ticket);
        reply(req.send().await.expect("leave request")).await
    }

    /// `GET rooms/{room}`
    pub async fn status(&self, room: &str) -> Reply {
        reply(
            self.client
                .get(self.api(&format!("rooms/{room}")))
                .send()
                .await
                .expect("status"),
        )
        .await
    }

    /// Any request, for bad-input tests.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        reply(req.send().await.expect("request")).await
    }

    /// GET on the admin listener.
    pub async fn admin_get(&self, path: &str) -> Reply {
        reply(
            self.client
                .get(format!("{}{path}", self.admin))
                .send()
                .await
                .expect("admin"),
        )
        .await
    }

    /// Waits until every sale's keeper has created or read its stock record: selling starts
    /// then (before it a purchase finds no stock).
    pub async fn wait_sales_read(&self) {
        let state = &self.app.as_ref().expect("running").state;
        let sales: Vec<_> = state.sales.iter().cloned().collect();
        wait_until(
            Duration::from_secs(10),
            "every sale's stock is read",
            || {
                let ready = sales.iter().all(|s| s.cached_state().is_some());
                async move { ready }
            },
        )
        .await;
    }

    /// `GET /metrics` on the admin listener, as text (asserting it answered 2xx).
    pub async fn metrics_text(&self) -> String {
        let resp = self
            .client
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .expect("scrape /metrics");
        assert!(resp.status().is_success(), "/metrics: {}", resp.status());
        resp.text().await.expect("metrics text")
    }

    /// Waits until the room's cached state has been refreshed from the store at least once more.
    pub async fn settle(&self, room: &str) {
        let state = &self.app.as_ref().expect("running").state;
        let r = state.rooms.get(room).expect("room").clone();
        let before = r.snapshot().taken_at;
        wait_until(Duration::from_secs(10), "the room state refreshes", || {
            let r = r.clone();
            async move { r.snapshot().taken_at.is_some() && r.snapshot().taken_at != before }
        })
        .await;
    }

    /// Graceful shutdown.
    pub async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
    }
}
