//! End to end: the `rushgate-loadtest` binary runs the short `drop` scenario
//! (`scenarios/drop-ci.toml`, a few thousand shoppers over a few seconds) against a rushgate
//! node it spawns in-process on a private redis-server, and must report no correctness finding:
//! no oversell, no duplicate coupon, no FIFO inversion, no increased position, no server error.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A redis-server on a free port in a temp dir, killed on drop.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(dir: &Path, redis_port: u16) -> String {
    format!(
        r#"
# `--spawn` binds both listeners on free ports instead.
[server]
listen = "127.0.0.1:18080"
admin_listen = "127.0.0.1:19090"

[store]
redis_url = "redis://127.0.0.1:{redis_port}"

[passes]
signing_key_file = "{key}"
generate_missing_key = true
ticket_secret = "drop-test-ticket-secret-0123456789"

[limits]
join_per_minute = 0
poll_per_minute = 0
purchase_per_minute = 0
coupon_per_minute = 0

[log]
level = "error"

[[rooms]]
id = "drop"
admit_per_minute = 30000
max_active = 100
idle_timeout_seconds = 2
session_seconds = 60

[[sales]]
id = "drop-sale"
room = "drop"
stock = 300
per_user_limit = 1

[[coupons]]
id = "drop-coupons"
room = "drop"
limit = 150
"#,
        key = dir.join("key.pem").display()
    )
}

#[test]
fn drop_scenario_reports_no_correctness_finding() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rushgate.toml");
    std::fs::write(&cfg, config(dir.path(), redis.port)).unwrap();
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/drop-ci.toml");
    let out = dir.path().join("out");

    let output = Command::new(env!("CARGO_BIN_EXE_rushgate-loadtest"))
        .arg("run")
        .arg(&scenario)
        .arg("--spawn")
        .arg("--quiet")
        .arg("--config")
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "loadtest failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("drop-ci.json")).unwrap()).unwrap();
    let f = &report["findings"];
    assert_eq!(f["oversold_units"], 0, "{stdout}");
    assert_eq!(f["duplicate_coupons"], 0, "{stdout}");
    assert_eq!(f["fifo_inversions"], 0, "{stdout}");
    assert_eq!(f["kendall_tau"], 1.0, "{stdout}");
    assert_eq!(f["positions_increased"], 0, "{stdout}");
    assert_eq!(f["server_errors"], 0, "{stdout}");
    assert_eq!(f["stock_invariant_broken"], false, "{stdout}");
    let c = &report["counts"];
    assert_eq!(c["shoppers"], 2000);
    // The sale ran: units were bought, never more than the stock.
    let bought = c["bought_units"].as_u64().unwrap();
    assert!(bought > 0 && bought <= 300, "{stdout}");
    assert!(c["coupons"].as_u64().unwrap() <= 150, "{stdout}");
    for plot in [
        "drop-ci-queue.svg",
        "drop-ci-admissions.svg",
        "drop-ci-latency.svg",
    ] {
        assert!(out.join(plot).exists(), "{plot} missing");
    }
}
