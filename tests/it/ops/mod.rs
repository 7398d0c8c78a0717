//! Operating a drop: a real Prometheus scraping a node during a crowd, the Grafana dashboard's
//! metrics, request ids in headers, problem bodies and logs, and the deployment files.

use crate::harness;

mod deploy;
mod drain;
mod logs;
mod prometheus;
mod request_ids;

use std::collections::BTreeSet;
use std::path::PathBuf;

use harness::TestApp;

/// A file of the repository.
pub fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `GET /metrics` of a node as text.
pub async fn scrape(app: &TestApp) -> String {
    app.metrics_text().await
}

/// Names of the series in a Prometheus text exposition (`name{...} value` or `name value`).
pub fn exposed_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// The value of the one series `name` with label `label="value"` in an exposition.
pub fn exposed_value(text: &str, name: &str, label: &str, value: &str) -> Option<f64> {
    let needle = format!("{label}=\"{value}\"");
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&needle))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Every `rushgate_*` metric name the Grafana dashboard mentions.
pub fn dashboard_metric_names() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo_file("deploy/grafana/rushgate.json"))
        .expect("deploy/grafana/rushgate.json");
    let mut names = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("rushgate_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// Every PromQL expression of the dashboard (panel targets and template variables), with the
/// `$room` / `$sale` variables replaced by match-all.
pub fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(repo_file("deploy/grafana/rushgate.json"))
        .expect("deploy/grafana/rushgate.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut out = Vec::new();
    collect_exprs(&dashboard, &mut out);
    out.into_iter()
        .map(|e| e.replace("$room", ".*").replace("$sale", ".*"))
        .collect()
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_exprs(i, out)),
        _ => {}
    }
}
