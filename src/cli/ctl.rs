//! `rushgate ctl`: the operator CLI over the admin API. Every command is one HTTP call to a
//! node's admin listener; the change reaches every node on the same store within a refresh.

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::Subcommand;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

/// How long one admin call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// `rushgate ctl ...` commands.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// A compact table of every room and sale.
    Status,
    /// Room controls.
    Rooms {
        /// What to do.
        #[command(subcommand)]
        command: RoomsCommand,
    },
    /// Sale controls.
    Sales {
        /// What to do.
        #[command(subcommand)]
        command: SalesCommand,
    },
    /// Settle a reservation on the shop's behalf.
    Reservations {
        /// What to do.
        #[command(subcommand)]
        command: ReservationsCommand,
    },
}

/// `ctl rooms ...`
#[derive(Debug, Subcommand)]
pub enum RoomsCommand {
    /// Figures of one room.
    Show {
        /// Room id.
        room: String,
    },
    /// Keep taking joins, stop admitting.
    Pause {
        /// Room id.
        room: String,
    },
    /// Admit again after a pause.
    Resume {
        /// Room id.
        room: String,
    },
    /// Take no new joins; admit everyone waiting at once (no pacing, no session cap).
    Drain {
        /// Room id.
        room: String,
    },
    /// Take no joins and admit nobody.
    Close {
        /// Room id.
        room: String,
    },
    /// Open a closed or draining room.
    Open {
        /// Room id.
        room: String,
    },
    /// Set admissions per minute, live on every node.
    Rate {
        /// Room id.
        room: String,
        /// Admissions per minute (> 0).
        admit_per_minute: u32,
    },
    /// Set the cap of admitted sessions, live on every node.
    MaxActive {
        /// Room id.
        room: String,
        /// Sessions alive at once (> 0).
        max_active: u32,
    },
    /// Set the message every waiter sees, live on every node and pushed to open pages
    /// (`""` gives the configured message back).
    Message {
        /// Room id.
        room: String,
        /// The message, shown in every language `--lang` does not give.
        message: String,
        /// The message in one language, `code=text` (`--lang ko="12시에 재입고"`); repeatable.
        #[arg(long = "lang", value_name = "CODE=TEXT", value_parser = lang_text)]
        langs: Vec<(String, String)>,
    },
}

/// `code=text` of `ctl rooms message --lang`.
fn lang_text(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((code, text)) if !code.trim().is_empty() => {
            Ok((code.trim().to_string(), text.to_string()))
        }
        _ => Err(format!(
            "{arg:?} is not CODE=TEXT (e.g. ko=\"12시에 재입고\")"
        )),
    }
}

/// `ctl sales ...`
#[derive(Debug, Subcommand)]
pub enum SalesCommand {
    /// Counters of one sale.
    Show {
        /// Sale id.
        sale: String,
    },
    /// Add units (a sold-out room reopens).
    AddStock {
        /// Sale id.
        sale: String,
        /// Units to add (> 0).
        units: u32,
    },
    /// Remove unsold units (never touches reserved or sold ones).
    RemoveStock {
        /// Sale id.
        sale: String,
        /// Units to remove (> 0).
        units: u32,
    },
}

/// `ctl reservations ...`
#[derive(Debug, Subcommand)]
pub enum ReservationsCommand {
    /// Mark paid.
    Confirm {
        /// Reservation id.
        id: String,
    },
    /// Give the units back.
    Release {
        /// Reservation id.
        id: String,
    },
}

/// The call a command makes: method, path under `/admin/v1/`, optional JSON body.
fn call_of(command: &CtlCommand) -> (Method, String, Option<Value>) {
    use RoomsCommand as R;
    match command {
        CtlCommand::Status => (Method::GET, "status".into(), None),
        CtlCommand::Rooms { command } => match command {
            R::Show { room } => (Method::GET, format!("rooms/{room}"), None),
            R::Pause { room } => (Method::POST, format!("rooms/{room}/pause"), None),
            R::Resume { room } => (Method::POST, format!("rooms/{room}/resume"), None),
            R::Drain { room } => (Method::POST, format!("rooms/{room}/drain"), None),
            R::Close { room } => (Method::POST, format!("rooms/{room}/close"), None),
            R::Open { room } => (Method::POST, format!("rooms/{room}/open"), None),
            R::Rate {
                room,
                admit_per_minute,
            } => (
                Method::POST,
                format!("rooms/{room}/settings"),
                Some(json!({ "admit_per_minute": admit_per_minute })),
            ),
            R::MaxActive { room, max_active } => (
                Method::POST,
                format!("rooms/{room}/settings"),
                Some(json!({ "max_active": max_active })),
            ),
            R::Message {
                room,
                message,
                langs,
            } => {
                let messages: serde_json::Map<String, Value> = langs
                    .iter()
                    .map(|(code, text)| (code.clone(), Value::from(text.as_str())))
                    .collect();
                (
                    Method::POST,
                    format!("rooms/{room}/message"),
                    Some(json!({ "message": message, "messages": messages })),
                )
            }
        },
        CtlCommand::Sales { command } => match command {
            SalesCommand::Show { sale } => (Method::GET, format!("sales/{sale}"), None),
            SalesCommand::AddStock { sale, units } => (
                Method::POST,
                format!("sales/{sale}/stock"),
                Some(json!({ "units": units })),
            ),
            SalesCommand::RemoveStock { sale, units } => (
                Method::POST,
                format!("sales/{sale}/stock"),
                Some(json!({ "units": -i64::from(*units) })),
            ),
        },
        CtlCommand::Reservations { command } => match command {
            ReservationsCommand::Confirm { id } => {
                (Method::POST, format!("reservations/{id}/confirm"), None)
            }
            ReservationsCommand::Release { id } => {
                (Method::POST, format!("reservations/{id}/release"), None)
            }
        },
    }
}

/// Runs one ctl command: exit 0 on success, 1 when the node refused (the problem's detail is
/// printed), 2 when the node could not be reached.
pub fn run(admin: &str, token: Option<&str>, command: &CtlCommand) -> ExitCode {
    let runtime = match super::runtime(false) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let (method, path, body) = call_of(command);
    let url = format!("{}/admin/v1/{path}", admin.trim_end_matches('/'));
    match runtime.block_on(call(&url, method, token, body)) {
        Ok((status, value)) if status.is_success() => {
            match command {
                CtlCommand::Status => print!("{}", status_table(&value)),
                _ => println!(
                    "{}",
                    serde_json::to_string_pretty(&value).unwrap_or_default()
                ),
            }
            ExitCode::SUCCESS
        }
        Ok((status, value)) => {
            let detail = value["detail"].as_str().unwrap_or("no detail");
            eprintln!("error: {status}: {detail}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {url}: {e}");
            ExitCode::from(2)
        }
    }
}

async fn call(
    url: &str,
    method: Method,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<(StatusCode, Value), String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::builder().method(method).uri(url);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let payload = match body {
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    let req = req.body(Full::new(payload)).map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(CALL_TIMEOUT, client.request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| format!("cannot reach the admin listener: {e}"))?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((status, value))
}

/// The `status` answer as two aligned tables (rooms, then sales).
pub fn status_table(v: &Value) -> String {
    let cell = |x: &Value| match x {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut rows = vec![[
        "ROOM", "STATE", "WAITING", "ACTIVE", "MAX", "RATE/MIN", "MEASURED", "ETA(s)", "SALE",
    ]
    .map(String::from)
    .to_vec()];
    for r in v["rooms"].as_array().into_iter().flatten() {
        rows.push(
            [
                "room",
                "state",
                "waiting",
                "active",
                "max_active",
                "admit_per_minute",
                "measured_admissions_per_minute",
                "eta_seconds_for_last",
                "sale",
            ]
            .iter()
            .map(|k| cell(&r[*k]))
            .collect(),
        );
    }
    let mut out = table(&rows);
    let sales: Vec<&Value> = v["sales"].as_array().into_iter().flatten().collect();
    if !sales.is_empty() {
        let mut rows = vec![[
            "SALE",
            "ROOM",
            "AVAILABLE",
            "RESERVED",
            "CONFIRMED",
            "TOTAL",
            "SOLD OUT",
        ]
        .map(String::from)
        .to_vec()];
        for s in sales {
            rows.push(
                [
                    "sale",
                    "room",
                    "available",
                    "reserved",
                    "confirmed",
                    "total",
                    "sold_out",
                ]
                .iter()
                .map(|k| cell(&s[*k]))
                .collect(),
            );
        }
        out.push('\n');
        out.push_str(&table(&rows));
    }
    out
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table_aligns_rooms_and_sales() {
        let v = json!({
            "rooms": [{"room": "drop", "state": "open", "waiting": 1200, "active": 100,
                       "max_active": 100, "admit_per_minute": 600,
                       "measured_admissions_per_minute": 598.0, "eta_seconds_for_last": 120,
                       "sale": "sneakers"}],
            "sales": [{"sale": "sneakers", "room": "drop", "available": 10, "reserved": 3,
                       "confirmed": 987, "total": 1000, "sold_out": false}]
        });
        let t = status_table(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("ROOM  STATE  WAITING"), "{t}");
        assert!(lines[1].starts_with("drop  open   1200"), "{t}");
        assert!(t.contains("sneakers  drop  10"), "{t}");
    }
}
