//! The deployment files, checked by running what can run without a Docker engine: the image's
//! health probe against a live node, the container config through `check-config` with the
//! environment compose gives it, the Prometheus config through `promtool`, and the cross-file
//! references (paths, ports, image version) by reading.

use std::process::Command;

use super::repo_file;
use crate::harness::*;

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_file(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn healthcheck(port: u16) -> bool {
    Command::new("bash")
        .arg(repo_file("deploy/healthcheck.sh"))
        .env("RUSHGATE_HEALTH_PORT", port.to_string())
        .status()
        .expect("run bash")
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_health_probe_passes_on_a_live_node_only() {
    let app = spawn_app(config(None, vec![room(&room_id())])).await;
    let admin_port = app.app.as_ref().expect("running").admin_addr.port();
    let public_port = app.app.as_ref().expect("running").public_addr.port();
    let probe = tokio::task::spawn_blocking(move || healthcheck(admin_port));
    assert!(
        probe.await.expect("probe"),
        "/livez probe failed on a live node"
    );
    // The public listener has no /livez (404), and a closed port refuses.
    let on_public = tokio::task::spawn_blocking(move || healthcheck(public_port));
    assert!(!on_public.await.expect("probe"));
    let closed = free_port();
    let on_closed = tokio::task::spawn_blocking(move || healthcheck(closed));
    assert!(!on_closed.await.expect("probe"));
    app.stop().await;
}

fn check_container_config(env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rushgate"));
    cmd.arg("check-config")
        .arg(repo_file("deploy/rushgate.toml"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("RUSHGATE_")) {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied())
        .output()
        .expect("run check-config")
}

#[test]
fn container_config_is_valid_with_the_compose_environment() {
    let compose = read("deploy/compose.yaml");
    let env = [
        ("RUSHGATE_STORE_REDIS_URL", "redis://redis:6379"),
        (
            "RUSHGATE_PASSES_TICKET_SECRET",
            "0123456789abcdef0123456789abcdef",
        ),
        ("RUSHGATE_SHOP_API_KEY", "shop-key-0123456789abcdef"),
        ("RUSHGATE_ADMIN_TOKEN", "admin-token-0123456789abcdef"),
    ];
    for (name, _) in env {
        assert!(compose.contains(&format!("{name}:")), "compose sets {name}");
    }
    let ok = check_container_config(&env);
    assert!(
        ok.status.success(),
        "deploy/rushgate.toml with the compose env: {}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
    // Listening on 0.0.0.0 without an admin token is refused, naming the field.
    let no_token = check_container_config(&env[..3]);
    assert_eq!(no_token.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("admin.token"));
}

#[test]
fn prometheus_config_is_valid_and_scrapes_both_admin_listeners() {
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(repo_file("deploy/prometheus.yml"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `promtool` ({e}): it comes with the Debian package `prometheus`, \
                 which scripts/test.sh installs"
            )
        });
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let prometheus = read("deploy/prometheus.yml");
    let config = read("deploy/rushgate.toml");
    assert!(config.contains("admin_listen = \"0.0.0.0:9090\""));
    for node in ["rushgate-1:9090", "rushgate-2:9090"] {
        assert!(prometheus.contains(node), "prometheus scrapes {node}");
    }
}

#[test]
fn compose_and_dockerfile_reference_what_exists() {
    let compose = read("deploy/compose.yaml");
    for path in [
        "./rushgate.toml",
        "./prometheus.yml",
        "./grafana/provisioning",
        "./grafana/rushgate.json",
    ] {
        assert!(compose.contains(path), "compose mounts {path}");
        assert!(repo_file(&format!("deploy/{path}")).exists(), "{path}");
    }
    for part in ["--appendonly", "yes", "--appendfsync", "always"] {
        assert!(compose.contains(&format!("\"{part}\"")), "redis {part}");
    }
    let dockerfile = read("Dockerfile");
    let ignore = read(".dockerignore");
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ")) {
        if line.contains("--from=") {
            continue;
        }
        let sources: Vec<&str> = line.split_whitespace().skip(1).collect();
        for src in &sources[..sources.len() - 1] {
            assert!(repo_file(src).exists(), "Dockerfile copies missing {src}");
            let top = src.split('/').next().unwrap_or(src);
            assert!(
                !ignore
                    .lines()
                    .any(|l| l.trim_end_matches('/') == top || l.trim_end_matches('/') == *src),
                ".dockerignore excludes {src}, which the Dockerfile copies"
            );
        }
    }
    assert!(dockerfile.contains("HEALTHCHECK"));
    assert!(dockerfile.contains("USER rushgate"));
    // The build image is at least the crate's rust-version.
    let manifest = read("Cargo.toml");
    let wanted = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"').to_string())
        .expect("rust-version");
    let image = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("FROM rust:"))
        .and_then(|l| l.split('-').next())
        .expect("FROM rust:<version>-…");
    let version = |v: &str| -> Vec<u32> { v.split('.').filter_map(|p| p.parse().ok()).collect() };
    assert!(
        version(image) >= version(&wanted),
        "rust:{image} is older than rust-version {wanted}"
    );
}
