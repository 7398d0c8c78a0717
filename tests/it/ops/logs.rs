//! Logs of the real binary: with `[log] format = "json"` every stderr line is one JSON object,
//! and each request logs one line carrying its request id.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;

use crate::harness::free_port;

/// The spawned binary, killed on drop, with its stderr lines arriving on a channel.
struct Server {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    /// Every line read so far.
    seen: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(log_section: &str) -> (Server, u16) {
        let dir = tempfile::tempdir().expect("temp dir");
        let (public, admin) = (free_port(), free_port());
        let config = dir.path().join("rushgate.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{public}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
                 [passes]\nsigning_key_file = \"{}\"\nticket_secret = \"log-test-secret-0123456789\"\n\
                 {log_section}\n[[rooms]]\nid = \"logs\"\n",
                dir.path().join("key.pem").display()
            ),
        )
        .expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_rushgate"))
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rushgate");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let server = Server {
            child,
            lines,
            seen: Vec::new(),
            _dir: dir,
        };
        (server, public)
    }

    /// Reads lines until one satisfies `want` (panics after 20 s, showing what was read).
    async fn wait_line(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return line;
                    }
                }
                _ => panic!(
                    "no log line {what}; stderr so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET rooms/logs` with a request id, retried until the server accepts connections.
async fn get_with_id(port: u16, id: &str) -> reqwest::StatusCode {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sent = client
            .get(format!("http://127.0.0.1:{port}/_rushgate/v1/rooms/logs"))
            .header("X-Request-Id", id)
            .send()
            .await;
        match sent {
            Ok(resp) => return resp.status(),
            Err(e) => assert!(Instant::now() < deadline, "server never answered: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_the_request_id() {
    let (mut server, port) = Server::start("[log]\nformat = \"json\"\nlevel = \"info\"\n");
    let started = server
        .wait_line("announcing the listeners", |l| {
            l.contains("rushgate serving")
        })
        .await;
    assert_eq!(json(&started)["level"], "INFO", "{started}");

    assert_eq!(get_with_id(port, "log-test-7").await, 200);
    let line = server
        .wait_line("for the request", |l| l.contains("log-test-7"))
        .await;
    let v = json(&line);
    assert_eq!(v["target"], "rushgate::request", "{line}");
    assert_eq!(v["request_id"], "log-test-7", "{line}");
    assert_eq!(v["route"], "room_status", "{line}");
    assert_eq!(v["status"], 200, "{line}");
    assert_eq!(v["method"], "GET", "{line}");
    assert!(v["duration_ms"].as_f64().is_some(), "{line}");
    for seen in &server.seen {
        json(seen);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_carry_the_request_id_and_level_filters() {
    // `warn` for everything but request lines: the start-up line disappears, requests remain.
    let (mut server, port) =
        Server::start("[log]\nformat = \"text\"\nlevel = \"warn,rushgate::request=info\"\n");
    assert_eq!(get_with_id(port, "text-test-9").await, 200);
    let line = server
        .wait_line("for the request", |l| l.contains("text-test-9"))
        .await;
    assert!(line.contains("request_id=text-test-9"), "{line}");
    assert!(serde_json::from_str::<Value>(&line).is_err(), "{line}");
    assert!(
        !server.seen.iter().any(|l| l.contains("rushgate serving")),
        "info lines pass a warn filter: {:?}",
        server.seen
    );
}

#[test]
fn log_section_is_validated_and_overridable_from_env() {
    use std::collections::HashMap;
    use std::path::Path;

    use rushgate::config::{Config, ConfigError, LogFormat};

    let parse = |text: &str, env: &[(&str, &str)]| {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_toml_str(text, Path::new("test.toml"), &env)
    };
    let defaults = parse("", &[]).expect("empty config");
    assert_eq!(defaults.log.format, LogFormat::Text);
    assert_eq!(defaults.log.level, "info");
    let json = parse("", &[("RUSHGATE_LOG_FORMAT", "json")]).expect("env override");
    assert_eq!(json.log.format, LogFormat::Json);
    let problems = |text: &str| match parse(text, &[]) {
        Err(e @ ConfigError::Invalid(_)) => e.to_string(),
        other => panic!("{text:?} accepted: {other:?}"),
    };
    assert!(problems("[log]\nformat = \"yaml\"\n").contains("log.format"));
    assert!(problems("[log]\nlevel = \"rushgate=loud\"\n").contains("log.level"));
}
