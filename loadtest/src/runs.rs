//! `run`: sets up the target (an external node, or one spawned in-process), runs one scenario
//! and writes its results. The endpoint scenarios (poll, join, purchase, coupon, proxy, get)
//! live here; the drop event in [`crate::drop`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use http::Method;
use rushgate::app::App;
use rushgate::clock::now_ms;
use rushgate::config::{Config, ProcessEnv};
use rushgate::id::RoomId;
use rushgate::pass::{PassIssuer, PassKeys, TicketClaims, TicketSigner};
use rushgate::queue::params_for;
use rushgate::store::{JoinOutcome, RedisStore, RoomParams, RoomStatus, Store};
use serde_json::{json, Value};

use crate::client::{get_json, get_json_auth, request};
use crate::load::{self, MakeRequest, Plan};
use crate::scenario::{Kind, Scenario};
use crate::stats::Summary;
use crate::target::Target;

/// Options of `run`.
#[derive(Args)]
pub struct RunArgs {
    /// Scenario file (loadtest/scenarios/*.toml).
    scenario: PathBuf,
    /// rushgate's public listener (loopback); with --spawn, taken from the spawned node.
    #[arg(long, default_value = "127.0.0.1:8080")]
    target: SocketAddr,
    /// rushgate's admin listener.
    #[arg(long, default_value = "127.0.0.1:9090")]
    admin: SocketAddr,
    /// The node's config file: ticket secret, pass key, Redis URL, rooms (not needed by `get`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Start rushgate in this process from --config (listeners on free ports) and target it.
    #[arg(long)]
    spawn: bool,
    /// The server's process id, for RSS readings (`poll`).
    #[arg(long)]
    server_pid: Option<u32>,
    /// A process whose CPU time to report per measured request, `NAME=PID` (repeatable: the
    /// server, its Redis, an upstream); endpoint scenarios only.
    #[arg(long = "cpu", value_parser = parse_cpu_process)]
    cpu: Vec<(String, u32)>,
    /// Results directory (JSON and SVG); default target/loadtest.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Name of the result files (default: the scenario file's stem).
    #[arg(long)]
    name: Option<String>,
    /// Overrides a scenario field: `--set conns=2000 --set drop.shoppers=100000`.
    #[arg(long = "set")]
    overrides: Vec<String>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Runs the scenario of `args`; `Ok(false)` when the drop found correctness problems.
pub async fn run(args: RunArgs) -> anyhow::Result<bool> {
    let scenario = Scenario::load(&args.scenario, &args.overrides)?;
    let name = args.name.clone().unwrap_or_else(|| {
        args.scenario
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into())
    });
    let out = crate::out_dir(&args.out);
    std::fs::create_dir_all(&out)?;

    let mut config = match &args.config {
        Some(path) => Some(
            Config::load(path, &ProcessEnv)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        ),
        None => None,
    };
    let mut app = None;
    let (mut addr, mut admin, mut pid) = (args.target, args.admin, args.server_pid);
    let mut store: Option<Arc<dyn Store>> = None;
    if args.spawn {
        let mut c = config
            .clone()
            .ok_or_else(|| anyhow::anyhow!("--spawn needs --config"))?;
        c.server.listen = "127.0.0.1:0".into();
        c.server.admin_listen = "127.0.0.1:0".into();
        let started = App::start(c.clone()).await?;
        addr = started.public_addr;
        admin = started.admin_addr;
        pid = Some(std::process::id());
        store = Some(started.state.store.clone());
        config = Some(c);
        app = Some(started);
    }
    let redis = match config.as_ref().and_then(|c| c.store.redis_url.clone()) {
        Some(url) => {
            if store.is_none() {
                let s = RedisStore::from_config(&c_store(&config), 8, Duration::from_secs(5))?
                    .ok_or_else(|| anyhow::anyhow!("no Redis configured"))?;
                s.wait_connected(Duration::from_secs(5)).await?;
                store = Some(Arc::new(s));
            }
            Some(crate::redis_info::pool(&url, 1).await?)
        }
        None => None,
    };
    let passes = match &config {
        Some(c) => {
            let (keys, _) =
                PassKeys::load_or_create(&c.passes.signing_key_file, c.passes.algorithm, false)?;
            Some(PassIssuer::new(keys, &c.passes.issuer, &c.passes.audience))
        }
        None => None,
    };
    let target = Target {
        addr,
        admin,
        config,
        store,
        redis,
        passes,
        pid,
        cpu: args.cpu.clone(),
        quiet: args.quiet,
    };

    let (ok, report) = match scenario.kind {
        Kind::Drop => crate::drop::run(&target, &scenario, &out, &name).await?,
        _ => (true, endpoint(&target, &scenario, &name).await?),
    };
    if !matches!(scenario.kind, Kind::Drop) {
        if let Some(s) = report.get("summary").cloned() {
            if let Ok(s) = serde_json::from_value::<SummaryView>(s) {
                s.print();
            }
        }
        if let Some(timeline) = report
            .pointer("/summary/timeline")
            .and_then(Value::as_array)
        {
            let reqs: Vec<(f64, f64)> = series(timeline, "requests");
            let p50 = series(timeline, "p50_ms");
            let p99 = series(timeline, "p99_ms");
            crate::plot::lines(
                &out.join(format!("{name}-throughput.svg")),
                &format!("{name}: requests per second"),
                "req/s",
                &[("req/s", reqs)],
            )?;
            crate::plot::lines(
                &out.join(format!("{name}-latency.svg")),
                &format!("{name}: latency"),
                "ms",
                &[("p50", p50), ("p99", p99)],
            )?;
        }
    }
    let path = out.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    println!("results: {}", path.display());
    if let Some(app) = app {
        app.shutdown().await;
    }
    Ok(ok)
}

fn series(timeline: &[Value], field: &str) -> Vec<(f64, f64)> {
    timeline
        .iter()
        .filter_map(|s| Some((s.get("second")?.as_f64()?, s.get(field)?.as_f64()?)))
        .collect()
}

/// The part of a summary the console table shows.
#[derive(serde::Deserialize)]
struct SummaryView {
    name: String,
    requests: u64,
    req_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    errors: u64,
    statuses: std::collections::BTreeMap<String, u64>,
}

impl SummaryView {
    fn print(&self) {
        println!(
            "{:<14} {:>10} {:>11} {:>9} {:>9} {:>9} {:>7}  statuses",
            "scenario", "requests", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "errors"
        );
        println!(
            "{:<14} {:>10} {:>11.0} {:>9.3} {:>9.3} {:>9.3} {:>7}  {:?}",
            self.name,
            self.requests,
            self.req_per_s,
            self.p50_ms,
            self.p99_ms,
            self.p999_ms,
            self.errors,
            self.statuses
        );
    }
}

fn plan(s: &Scenario) -> Plan {
    Plan {
        conns: s.conns,
        duration: Duration::from_secs_f64(s.duration_s),
        warmup: Duration::from_secs_f64(s.warmup_s),
        max_requests: s.max_requests,
    }
}

/// Resident set size of `pid`, bytes (Linux `/proc`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// CPU time `pid` has used so far, all threads, as (user, system) seconds (Linux `/proc`).
pub fn cpu_seconds(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (user, system) = stat_cpu_ticks(&stat)?;
    let hz = rustix::param::clock_ticks_per_second() as f64;
    Some((user as f64 / hz, system as f64 / hz))
}

/// `utime` and `stime` (clock ticks) of a `/proc/<pid>/stat` line.
fn stat_cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    // The command name (field 2) may hold spaces and parentheses: count from its closing one.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    // utime and stime are fields 14 and 15: the 12th and 13th after the name.
    let user = fields.nth(11)?.parse().ok()?;
    let system = fields.next()?.parse().ok()?;
    Some((user, system))
}

fn parse_cpu_process(raw: &str) -> Result<(String, u32), String> {
    let (name, pid) = raw
        .split_once('=')
        .ok_or_else(|| format!("`{raw}`: expected NAME=PID"))?;
    let pid = pid
        .parse()
        .map_err(|_| format!("`{raw}`: the pid must be a number"))?;
    Ok((name.to_string(), pid))
}

/// CPU time of `t.cpu` processes since `before` (their readings, in the same order), in µs
/// per request: `{name: {user, system}}`. A process whose reading failed (it exited) is left out.
fn cpu_per_request(before: &[Option<(f64, f64)>], t: &Target, requests: u64) -> Value {
    let mut out = serde_json::Map::new();
    let per_request = |seconds: f64| seconds * 1e6 / requests.max(1) as f64;
    for ((name, pid), before) in t.cpu.iter().zip(before) {
        if let (Some((u0, s0)), Some((u1, s1))) = (before, cpu_seconds(*pid)) {
            out.insert(
                name.clone(),
                json!({ "user": per_request(u1 - u0), "system": per_request(s1 - s0) }),
            );
        }
    }
    Value::Object(out)
}

/// Runs an endpoint scenario; returns its JSON report.
async fn endpoint(t: &Target, s: &Scenario, name: &str) -> anyhow::Result<Value> {
    let api = "/_rushgate/v1";
    let addr = t.addr;
    let mut extra = json!({});
    let make: Arc<MakeRequest> = match s.kind {
        Kind::Get => {
            let path = s.path.clone();
            Arc::new(move |_, _| request(Method::GET, addr, &path, &[], Bytes::new()))
        }
        Kind::Poll | Kind::PollAdmitted => {
            let tickets = if s.kind == Kind::Poll {
                prepare_poll(t, s, &mut extra).await?
            } else {
                prepare_admitted(t, s, &mut extra).await?
            };
            let tickets = Arc::new(tickets);
            let path = format!("{api}/rooms/{}/position", s.room);
            Arc::new(move |w, i| {
                let n = tickets.len().max(1);
                let ticket = tickets
                    .get((w * 7919 + i as usize * 31) % n)
                    .map(String::as_str)
                    .unwrap_or("");
                request(
                    Method::GET,
                    addr,
                    &path,
                    &[("authorization", ticket)],
                    Bytes::new(),
                )
            })
        }
        Kind::Join => {
            if let Some(store) = &t.store {
                let room = room_id(&s.room)?;
                store.set_status(&room, RoomStatus::Open).await?;
            }
            let path = format!("{api}/rooms/{}/join", s.room);
            Arc::new(move |_, _| request(Method::POST, addr, &path, &[], Bytes::new()))
        }
        Kind::Purchase | Kind::Coupon | Kind::Proxy => {
            let sale_room = room_of_sale(t.config()?, &s.sale).unwrap_or_else(|| s.room.clone());
            let coupon_room = t
                .config()?
                .coupons
                .iter()
                .find(|c| c.id == s.coupon)
                .and_then(|c| c.room.clone())
                .unwrap_or_else(|| s.room.clone());
            let room = match s.kind {
                Kind::Purchase => sale_room,
                Kind::Coupon => coupon_room,
                _ => s.room.clone(),
            };
            let passes: Vec<String> = (0..s.conns)
                .map(|_| t.mint_pass(&room))
                .collect::<anyhow::Result<_>>()?;
            let passes = Arc::new(passes);
            let kind = s.kind;
            let path = match kind {
                Kind::Purchase => format!("{api}/sales/{}/purchase", s.sale),
                Kind::Coupon => format!("{api}/coupons/{}/claim", s.coupon),
                _ => s.path.clone(),
            };
            Arc::new(move |w, i| {
                let pass = passes.get(w).map(String::as_str).unwrap_or("");
                match kind {
                    Kind::Proxy => {
                        let cookie = format!("rg_pass_{room}={pass}");
                        request(
                            Method::GET,
                            addr,
                            &path,
                            &[("cookie", &cookie)],
                            Bytes::new(),
                        )
                    }
                    _ => {
                        let auth = format!("Bearer {pass}");
                        let body = if kind == Kind::Purchase {
                            Bytes::from(format!(r#"{{"quantity":1,"idempotency_key":"w{w}-{i}"}}"#))
                        } else {
                            Bytes::new()
                        };
                        request(Method::POST, addr, &path, &[("authorization", &auth)], body)
                    }
                }
            })
        }
        Kind::Drop => anyhow::bail!("drop is not an endpoint scenario"),
    };

    // Redis commands per request over the measured window (pacer ticks included).
    let window = match &t.redis {
        Some(pool) => {
            let pool = pool.clone();
            let warmup = Duration::from_secs_f64(s.warmup_s);
            Some(tokio::spawn(async move {
                tokio::time::sleep(warmup).await;
                crate::redis_info::commands_total(&pool).await.ok()
            }))
        }
        None => None,
    };
    // CPU time of the server-side processes over the same window.
    let cpu_window = {
        let pids: Vec<u32> = t.cpu.iter().map(|(_, pid)| *pid).collect();
        let warmup = Duration::from_secs_f64(s.warmup_s);
        tokio::spawn(async move {
            tokio::time::sleep(warmup).await;
            pids.into_iter().map(cpu_seconds).collect::<Vec<_>>()
        })
    };
    let summary: Summary = load::run(name, addr, plan(s), make, t.quiet).await;
    if let Ok(before) = cpu_window.await {
        if !before.is_empty() {
            extra["cpu_us_per_request"] = cpu_per_request(&before, t, summary.requests);
        }
    }
    if let (Some(handle), Some(pool)) = (window, &t.redis) {
        if let (Ok(Some(before)), Ok(after)) =
            (handle.await, crate::redis_info::commands_total(pool).await)
        {
            let delta = after.saturating_sub(before);
            extra["redis_commands"] = json!(delta);
            extra["redis_commands_per_request"] =
                json!(delta as f64 / summary.requests.max(1) as f64);
        }
    }
    if let Some(pid) = t.pid {
        if let Some(rss) = rss_bytes(pid) {
            extra["rss_bytes_after"] = json!(rss);
        }
    }
    Ok(json!({
        "scenario": s,
        "summary": summary,
        "extra": extra,
    }))
}

fn room_id(id: &str) -> anyhow::Result<RoomId> {
    RoomId::parse(id).ok_or_else(|| anyhow::anyhow!("bad room id {id:?}"))
}

fn room_of_sale(c: &Config, sale: &str) -> Option<String> {
    c.sales
        .iter()
        .find(|x| x.id == sale)
        .map(|x| x.room.clone())
}

/// What a scenario that joins shoppers through the store needs: the node's store, the room,
/// its store parameters and the node's ticket signer (`kind` names the scenario in errors).
fn store_room(
    t: &Target,
    s: &Scenario,
    kind: &str,
) -> anyhow::Result<(Arc<dyn Store>, RoomId, RoomParams, TicketSigner)> {
    let config = t.config()?;
    let store = t.store.clone().ok_or_else(|| {
        anyhow::anyhow!("{kind} needs the node's store (Redis in --config, or --spawn)")
    })?;
    let room_config = config
        .rooms
        .iter()
        .find(|r| r.id == s.room)
        .ok_or_else(|| anyhow::anyhow!("room {} is not in the config", s.room))?;
    let signer = TicketSigner::new(config.passes.ticket_secret.0.as_bytes());
    Ok((store, room_id(&s.room)?, params_for(room_config), signer))
}

/// `poll`: pauses the room, bulk-joins `waiting` shoppers straight through the store (the same
/// join script as the endpoint, without HTTP), measures Redis memory and the node's RSS, and
/// returns signed tickets spread over the line.
async fn prepare_poll(t: &Target, s: &Scenario, extra: &mut Value) -> anyhow::Result<Vec<String>> {
    let (store, room, params, signer) = store_room(t, s, "poll")?;
    store.set_status(&room, RoomStatus::Paused).await?;

    let status_path = format!("/_rushgate/v1/rooms/{}", s.room);
    let before = get_json(t.addr, &status_path).await?;
    let last_before = before["last_number"].as_u64().unwrap_or(0);
    let mem_before = match &t.redis {
        Some(p) => Some(crate::redis_info::used_memory(p).await?),
        None => None,
    };
    let rss_before = t.pid.and_then(rss_bytes);

    let n = s.waiting;
    let stride = (n / s.tickets.max(1)).max(1);
    let started = Instant::now();
    let bar = load::progress(n, t.quiet);
    bar.set_message("bulk join");
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..256 {
        let (store, room, next, bar) = (store.clone(), room.clone(), next.clone(), bar.clone());
        workers.push(tokio::spawn(async move {
            let mut kept = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let id = TicketSigner::anonymous_identity();
                match store.join(&room, &id, true, &params, now_ms()).await {
                    Ok(JoinOutcome::Waiting { seq, .. }) if i % stride == 0 => kept.push((id, seq)),
                    Ok(_) => {}
                    Err(e) => return Err(anyhow::anyhow!("bulk join: {e}")),
                }
                if i % 1024 == 0 {
                    bar.set_position(i);
                }
            }
            Ok(kept)
        }));
    }
    let mut kept = Vec::new();
    for w in workers {
        kept.extend(w.await??);
    }
    bar.finish_and_clear();
    let fill_seconds = started.elapsed().as_secs_f64();

    // Wait until the node's snapshot holds the whole line.
    let want = last_before + n;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut waiting = 0;
    loop {
        let st = get_json(t.addr, &status_path).await?;
        waiting = st["waiting"].as_u64().unwrap_or(waiting);
        if st["last_number"].as_u64().unwrap_or(0) >= want || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mem_after = match &t.redis {
        Some(p) => Some(crate::redis_info::used_memory(p).await?),
        None => None,
    };
    let rss_after = t.pid.and_then(rss_bytes);
    extra["bulk_joined"] = json!(n);
    extra["bulk_join_seconds"] = json!(fill_seconds);
    extra["bulk_joins_per_second"] = json!(n as f64 / fill_seconds.max(1e-9));
    extra["waiting"] = json!(waiting);
    if let (Some(a), Some(b)) = (mem_before, mem_after) {
        extra["redis_used_memory_before"] = json!(a);
        extra["redis_used_memory_after"] = json!(b);
        extra["redis_bytes_per_waiter"] = json!(b.saturating_sub(a) as f64 / n.max(1) as f64);
        if let Some(p) = &t.redis {
            extra["bare_zset_bytes_per_entry"] =
                json!(crate::redis_info::bare_zset_bytes_per_entry(p, n.min(1_000_000)).await?);
        }
    }
    if let (Some(a), Some(b)) = (rss_before, rss_after) {
        extra["rss_bytes_before"] = json!(a);
        extra["rss_bytes_after_join"] = json!(b);
        extra["rss_delta_bytes"] = json!(b as i64 - a as i64);
    }
    let now = now_ms() / 1000;
    Ok(kept
        .into_iter()
        .map(|(id, seq)| {
            let ticket = signer.sign(&TicketClaims {
                room: s.room.clone(),
                id,
                seq,
                iat: now,
                pos: seq.saturating_sub(last_before),
                gen: 0,
                uid: None,
            });
            format!("Bearer {ticket}")
        })
        .collect())
}

/// `poll_admitted`: admits `tickets` shoppers through the store (the join script, in a room
/// with room for all of them), picks each one's pass up with a first poll (the one claim the
/// store records), and returns their tickets.
async fn prepare_admitted(
    t: &Target,
    s: &Scenario,
    extra: &mut Value,
) -> anyhow::Result<Vec<String>> {
    let (store, room, params, signer) = store_room(t, s, "poll_admitted")?;
    store.set_status(&room, RoomStatus::Open).await?;
    let now = now_ms() / 1000;
    let mut tickets = Vec::new();
    for _ in 0..s.tickets {
        let id = TicketSigner::anonymous_identity();
        match store.join(&room, &id, true, &params, now_ms()).await? {
            JoinOutcome::Admitted { seq, .. } => tickets.push(format!(
                "Bearer {}",
                signer.sign(&TicketClaims {
                    room: s.room.clone(),
                    id,
                    seq,
                    iat: now,
                    pos: 1,
                    gen: 0,
                    uid: None,
                })
            )),
            other => anyhow::bail!(
                "room {} must admit {} shoppers at once (max_active, burst): {other:?}",
                s.room,
                s.tickets
            ),
        }
    }
    // The node learns of the admissions from its next refresh; then each pass is picked up.
    let path = format!("/_rushgate/v1/rooms/{}/position", s.room);
    let deadline = Instant::now() + Duration::from_secs(30);
    for ticket in &tickets {
        loop {
            let body = get_json_auth(t.addr, &path, ticket).await?;
            if body["state"] == "admitted" && body["pass"].is_string() {
                break;
            }
            if Instant::now() > deadline {
                anyhow::bail!("a ticket was not admitted: {body}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    extra["admitted_tickets"] = json!(tickets.len());
    Ok(tickets)
}

/// The `[store]` section of the node's config (the default when there is none).
fn c_store(config: &Option<rushgate::config::Config>) -> rushgate::config::StoreConfig {
    config.as_ref().map(|c| c.store.clone()).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_are_read_after_the_command_name() {
        let line = "4242 (we (ird) name) S 1 4242 4242 0 -1 4194560 120 0 3 0 731 95 0 0 20 0 3 0";
        assert_eq!(stat_cpu_ticks(line), Some((731, 95)));
        assert_eq!(stat_cpu_ticks("4242 (short) S 1"), None);
        assert_eq!(parse_cpu_process("redis=17").unwrap(), ("redis".into(), 17));
        assert!(parse_cpu_process("redis").unwrap_err().contains("NAME=PID"));
        assert!(parse_cpu_process("redis=x").is_err());
    }

    #[test]
    fn this_process_cpu_time_grows_with_work() {
        let total = || {
            let (user, system) = cpu_seconds(std::process::id()).unwrap();
            user + system
        };
        let start = total();
        let mut x = 1u64;
        // Until the kernel has counted 50 ms more (a condition, not a fixed time); bounded.
        for _ in 0..10_000 {
            for i in 0..100_000u64 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
            }
            if total() >= start + 0.05 {
                return;
            }
        }
        panic!("no CPU time counted after all that work ({x})");
    }
}
