//! The `drop` scenario: a whole flash-sale event against one node. Shoppers arrive on a curve
//! (a spike, then a tail), join with a user key, poll at the `poll_after_ms` they are told, some
//! abandon (silently or with `leave`), and the admitted ones buy one unit, claim a coupon and
//! end their session. At the end it checks what must never happen (oversell, duplicate
//! coupons, admission out of join order, a position that grew, server errors) and reports ETA
//! error and shoppers never served.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use rand::Rng;
use rushgate::id::RoomId;
use rushgate::store::RoomStatus;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::client::{get_json, request, Answer, Conn};
use crate::scenario::{DropPlan, Scenario};
use crate::stats::{Live, Recorder};
use crate::target::Target;

/// Connections shared by every shopper: a shopper borrows one per request.
struct Pool {
    addr: SocketAddr,
    permits: Semaphore,
    idle: Mutex<Vec<Conn>>,
}

impl Pool {
    async fn send(
        &self,
        req: http::Request<http_body_util::Full<Bytes>>,
    ) -> anyhow::Result<Answer> {
        let _permit = self.permits.acquire().await?;
        let conn = self.idle.lock().ok().and_then(|mut v| v.pop());
        let mut conn = conn.unwrap_or_else(|| Conn::new(self.addr));
        let result = conn.send(req).await;
        if let Ok(mut v) = self.idle.lock() {
            v.push(conn);
        }
        result
    }
}

/// Latency recorders by request kind, shared (short critical sections, never across `.await`).
struct Recorders {
    join: Mutex<Recorder>,
    poll: Mutex<Recorder>,
    buy: Mutex<Recorder>,
}

impl Recorders {
    fn record(&self, which: &Mutex<Recorder>, sent: Instant, answer: &anyhow::Result<Answer>) {
        if let Ok(mut r) = which.lock() {
            r.record(sent, answer.as_ref().ok().map(|a| a.status.as_u16()));
        }
    }
}

/// What happened to one shopper. Times are microseconds since the event started.
#[derive(Debug, Default, Clone)]
struct Shopper {
    seq: Option<u64>,
    join_at: u64,
    /// When the last poll that answered "waiting" was sent.
    last_waiting_sent: u64,
    /// When the first answer saying "admitted" arrived.
    admitted_at: Option<u64>,
    eta_p50_s: Option<f64>,
    eta_p90_s: Option<f64>,
    abandoned: bool,
    sold_out: bool,
    expired: bool,
    never_served: bool,
    increased: u64,
    units: u64,
    coupon: Option<(String, u64)>,
    server_errors: u64,
    transport_errors: u64,
}

fn micros(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

fn body(a: &Answer) -> Value {
    serde_json::from_slice(&a.body).unwrap_or(Value::Null)
}

fn seq_of(ticket: &str) -> Option<u64> {
    ticket.split('.').nth(2)?.parse().ok()
}

/// Notes an answer's failure kind on the shopper.
fn note(sh: &mut Shopper, r: &anyhow::Result<Answer>) {
    match r {
        Ok(a) if a.status.is_server_error() => sh.server_errors += 1,
        Ok(_) => {}
        Err(_) => sh.transport_errors += 1,
    }
}

struct Ctx {
    pool: Pool,
    rec: Recorders,
    plan: DropPlan,
    start: Instant,
    deadline: Instant,
    room: String,
    sale: Option<String>,
    coupon: Option<String>,
    /// `Authorization` of the shop backend (confirms what was bought).
    shop_auth: String,
}

async fn shopper(ctx: Arc<Ctx>, i: u64) -> Shopper {
    let api = "/_rushgate/v1";
    let addr = ctx.pool.addr;
    let mut sh = Shopper::default();
    let (abandon, say_leave, abandon_after) = {
        let mut rng = rand::thread_rng();
        let abandon = rng.gen_bool(ctx.plan.abandon_share.clamp(0.0, 1.0));
        (
            abandon,
            rng.gen_bool(ctx.plan.leave_share.clamp(0.0, 1.0)),
            rng.gen_range(0..4u32),
        )
    };
    let join_body = Bytes::from(format!(r#"{{"user":"shopper-{i}"}}"#));
    let Ok(req) = request(
        Method::POST,
        addr,
        &format!("{api}/rooms/{}/join", ctx.room),
        &[],
        join_body,
    ) else {
        return sh;
    };
    let sent = Instant::now();
    let r = ctx.pool.send(req).await;
    ctx.rec.record(&ctx.rec.join, sent, &r);
    note(&mut sh, &r);
    sh.join_at = micros(ctx.start);
    let Ok(a) = r else { return sh };
    let b = body(&a);
    let Some(ticket) = b["ticket"].as_str().map(str::to_string) else {
        sh.sold_out = b["state"] == "sold_out";
        sh.never_served = !sh.sold_out && b["state"] != "closed";
        return sh;
    };
    sh.seq = seq_of(&ticket);
    sh.eta_p50_s = b["eta_seconds"]["p50"].as_f64();
    sh.eta_p90_s = b["eta_seconds"]["p90"].as_f64();
    let auth = format!("Bearer {ticket}");
    let mut last_position = b["position"].as_u64().unwrap_or(u64::MAX);
    let mut state = b["state"].as_str().unwrap_or("").to_string();
    let mut pass = b["pass"].as_str().map(str::to_string);
    let mut wait_ms = b["poll_after_ms"].as_u64().unwrap_or(1000);
    if state == "waiting" {
        sh.last_waiting_sent = sent.duration_since(ctx.start).as_micros() as u64;
    }
    let mut polls = 0u32;
    while state == "waiting" {
        if abandon && polls >= abandon_after {
            sh.abandoned = true;
            if say_leave {
                if let Ok(req) = request(
                    Method::POST,
                    addr,
                    &format!("{api}/rooms/{}/leave", ctx.room),
                    &[("authorization", &auth)],
                    Bytes::new(),
                ) {
                    let r = ctx.pool.send(req).await;
                    note(&mut sh, &r);
                }
            }
            return sh;
        }
        let pause = Duration::from_millis(wait_ms.min(ctx.plan.max_poll_ms).max(50));
        if Instant::now() + pause > ctx.deadline {
            sh.never_served = true;
            return sh;
        }
        tokio::time::sleep(pause).await;
        let Ok(req) = request(
            Method::GET,
            addr,
            &format!("{api}/rooms/{}/position", ctx.room),
            &[("authorization", &auth)],
            Bytes::new(),
        ) else {
            return sh;
        };
        let sent = Instant::now();
        let r = ctx.pool.send(req).await;
        ctx.rec.record(&ctx.rec.poll, sent, &r);
        note(&mut sh, &r);
        polls += 1;
        let Ok(a) = r else { continue };
        if !a.status.is_success() {
            continue;
        }
        let b = body(&a);
        state = b["state"].as_str().unwrap_or("").to_string();
        wait_ms = b["poll_after_ms"].as_u64().unwrap_or(1000);
        if state == "waiting" {
            sh.last_waiting_sent = sent.duration_since(ctx.start).as_micros() as u64;
            let p = b["position"].as_u64().unwrap_or(0);
            if p > last_position {
                sh.increased += 1;
            }
            last_position = p;
        }
        pass = b["pass"].as_str().map(str::to_string);
    }
    match state.as_str() {
        "admitted" => sh.admitted_at = Some(micros(ctx.start)),
        "sold_out" => sh.sold_out = true,
        "expired" => sh.expired = true,
        _ => {}
    }
    if let (Some(_), Some(pass)) = (sh.admitted_at, pass) {
        let bearer = format!("Bearer {pass}");
        if let Some(sale) = &ctx.sale {
            let buy = Bytes::from(format!(r#"{{"quantity":1,"idempotency_key":"drop-{i}"}}"#));
            if let Ok(req) = request(
                Method::POST,
                addr,
                &format!("{api}/sales/{sale}/purchase"),
                &[("authorization", &bearer)],
                buy,
            ) {
                let sent = Instant::now();
                let r = ctx.pool.send(req).await;
                ctx.rec.record(&ctx.rec.buy, sent, &r);
                note(&mut sh, &r);
                let reservation = match &r {
                    Ok(a) if a.status == http::StatusCode::CREATED => {
                        let b = body(a);
                        sh.units += b["quantity"].as_u64().unwrap_or(1);
                        b["reservation_id"].as_str().map(str::to_string)
                    }
                    _ => None,
                };
                // The shop takes the payment and confirms, as a real checkout would: once every
                // unit is confirmed the sale is sold out and the rest of the line is told so.
                if let Some(id) = reservation {
                    let path = format!("{api}/reservations/{id}/confirm");
                    if let Ok(req) = request(
                        Method::POST,
                        addr,
                        &path,
                        &[("authorization", &ctx.shop_auth)],
                        Bytes::new(),
                    ) {
                        let r = ctx.pool.send(req).await;
                        note(&mut sh, &r);
                    }
                }
            }
        }
        if let Some(coupon) = ctx.coupon.as_ref().filter(|_| ctx.plan.coupons) {
            if let Ok(req) = request(
                Method::POST,
                addr,
                &format!("{api}/coupons/{coupon}/claim"),
                &[("authorization", &bearer)],
                Bytes::new(),
            ) {
                let r = ctx.pool.send(req).await;
                note(&mut sh, &r);
                if let Ok(a) = &r {
                    let b = body(a);
                    if let (Some(code), Some(serial)) = (b["code"].as_str(), b["serial"].as_u64()) {
                        sh.coupon = Some((code.to_string(), serial));
                    }
                }
            }
        }
        // End the session so the slot goes to the next shopper.
        if let Ok(req) = request(
            Method::POST,
            addr,
            &format!("{api}/rooms/{}/leave", ctx.room),
            &[("authorization", &auth)],
            Bytes::new(),
        ) {
            let r = ctx.pool.send(req).await;
            note(&mut sh, &r);
        }
    }
    sh
}

/// Binary indexed tree over `n` ranks: counts of inserted ranks below a bound.
struct Fenwick(Vec<u64>);

impl Fenwick {
    fn add(&mut self, rank: usize) {
        let mut i = rank + 1;
        while i < self.0.len() {
            self.0[i] += 1;
            i += i & i.wrapping_neg();
        }
    }
    /// Inserted ranks `< rank`.
    fn below(&self, rank: usize) -> u64 {
        let (mut i, mut s) = (rank, 0);
        while i > 0 {
            s += self.0[i];
            i -= i & i.wrapping_neg();
        }
        s
    }
}

/// Kendall tau of admission order against join order, over the pairs whose order the
/// observations prove: `i` was provably admitted before `j` when `i`'s first "admitted" answer
/// arrived before `j`'s last "waiting" poll was sent. Returns (tau, concordant, discordant).
fn kendall(admitted: &[(u64, u64, u64)]) -> (f64, u64, u64) {
    // (seq, last_waiting_sent, admitted_at), sorted by seq.
    let mut items = admitted.to_vec();
    items.sort_unstable();
    let mut times: Vec<u64> = items.iter().flat_map(|&(_, w, a)| [w, a]).collect();
    times.sort_unstable();
    times.dedup();
    let rank = |t: u64| times.partition_point(|&x| x < t);
    let (mut waits, mut admits) = (
        Fenwick(vec![0; times.len() + 2]),
        Fenwick(vec![0; times.len() + 2]),
    );
    let (mut concordant, mut discordant, mut seen) = (0u64, 0u64, 0u64);
    for &(_, w, a) in &items {
        // Earlier seqs still waiting after this one was admitted: inversions.
        discordant += seen - waits.below(rank(a) + 1);
        // Earlier seqs admitted before this one was last seen waiting: proven in order.
        concordant += admits.below(rank(w));
        waits.add(rank(w));
        admits.add(rank(a));
        seen += 1;
    }
    let tau = if concordant + discordant == 0 {
        1.0
    } else {
        (concordant as f64 - discordant as f64) / (concordant + discordant) as f64
    };
    (tau, concordant, discordant)
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Findings that fail the run.
#[derive(Debug, Serialize)]
struct Findings {
    oversold_units: u64,
    stock_invariant_broken: bool,
    duplicate_coupons: u64,
    fifo_inversions: u64,
    kendall_tau: f64,
    positions_increased: u64,
    server_errors: u64,
}

/// Runs the drop; returns whether every check passed and the report.
pub async fn run(
    t: &Target,
    s: &Scenario,
    out: &Path,
    name: &str,
) -> anyhow::Result<(bool, Value)> {
    let plan = s.drop.clone();
    let config = t
        .config
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("drop needs --config"))?;
    let sale = config
        .sales
        .iter()
        .find(|x| x.room == s.room)
        .map(|x| x.id.clone());
    let coupon = config
        .coupons
        .iter()
        .find(|c| c.room.as_deref() == Some(s.room.as_str()))
        .map(|c| c.id.clone());
    if let Some(store) = &t.store {
        let room = RoomId::parse(&s.room).ok_or_else(|| anyhow::anyhow!("bad room id"))?;
        store.set_status(&room, RoomStatus::Open).await?;
    }
    let sale_path = sale.as_ref().map(|id| format!("/admin/v1/sales/{id}"));
    let stock_before = match &sale_path {
        Some(p) => get_json(t.admin, p).await?,
        None => Value::Null,
    };

    let start = Instant::now();
    let live = Arc::new(Live::default());
    let ctx = Arc::new(Ctx {
        pool: Pool {
            addr: t.addr,
            permits: Semaphore::new(plan.conns.max(1)),
            idle: Mutex::new(Vec::new()),
        },
        rec: Recorders {
            join: Mutex::new(Recorder::new(start, live.clone())),
            poll: Mutex::new(Recorder::new(start, live.clone())),
            buy: Mutex::new(Recorder::new(start, live.clone())),
        },
        plan: plan.clone(),
        start,
        deadline: start + Duration::from_secs_f64(plan.deadline_s),
        room: s.room.clone(),
        sale: sale.clone(),
        coupon: coupon.clone(),
        shop_auth: format!("Bearer {}", config.shop.api_key.0),
    });

    // Room status sampled every 250 ms: queue length and admissions over time.
    let samples: Arc<Mutex<Vec<(f64, u64, u64)>>> = Arc::default();
    let sampler = {
        let (samples, addr, room) = (samples.clone(), t.addr, s.room.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(v) = get_json(addr, &format!("/_rushgate/v1/rooms/{room}")).await {
                    if let Ok(mut s) = samples.lock() {
                        s.push((
                            start.elapsed().as_secs_f64(),
                            v["waiting"].as_u64().unwrap_or(0),
                            v["admitted_total"].as_u64().unwrap_or(0),
                        ));
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };

    let bar = crate::load::progress(plan.shoppers, t.quiet);
    bar.set_message("drop: shoppers arriving");
    let in_flight = Arc::new(Semaphore::new(plan.max_in_flight.max(1)));
    let spike_n = (plan.shoppers as f64 * plan.spike_share.clamp(0.0, 1.0)) as u64;
    let mut tasks = Vec::with_capacity(plan.shoppers as usize);
    for i in 0..plan.shoppers {
        let at = if i < spike_n {
            plan.spike_s * i as f64 / spike_n.max(1) as f64
        } else {
            plan.spike_s
                + plan.tail_s * (i - spike_n) as f64 / (plan.shoppers - spike_n).max(1) as f64
        };
        tokio::time::sleep_until((start + Duration::from_secs_f64(at)).into()).await;
        let permit = in_flight.clone().acquire_owned().await?;
        let ctx = ctx.clone();
        let bar = bar.clone();
        tasks.push(tokio::spawn(async move {
            let sh = shopper(ctx, i).await;
            drop(permit);
            bar.inc(1);
            sh
        }));
    }
    bar.set_message("drop: waiting for the line to clear");
    let mut shoppers = Vec::with_capacity(tasks.len());
    for task in tasks {
        if let Ok(sh) = task.await {
            shoppers.push(sh);
        }
    }
    bar.finish_and_clear();
    let elapsed = start.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    sampler.abort();

    // ---- checks ----
    let stock_after = match &sale_path {
        Some(p) => get_json(t.admin, p).await?,
        None => Value::Null,
    };
    let units: u64 = shoppers.iter().map(|s| s.units).sum();
    let field = |k: &str| stock_after[k].as_u64().unwrap_or(0);
    // Units handed out (as buyers saw them, and as the store counts them) beyond the stock.
    let oversold = if sale.is_some() {
        units
            .max(field("reserved") + field("confirmed"))
            .saturating_sub(field("total"))
    } else {
        0
    };
    let invariant_broken = sale.is_some()
        && field("available") + field("reserved") + field("confirmed") != field("total");
    let mut codes: HashMap<&str, u64> = HashMap::new();
    let mut serials: HashMap<u64, u64> = HashMap::new();
    for (code, serial) in shoppers.iter().filter_map(|s| s.coupon.as_ref()) {
        *codes.entry(code.as_str()).or_default() += 1;
        *serials.entry(*serial).or_default() += 1;
    }
    let duplicates = codes
        .values()
        .chain(serials.values())
        .map(|n| n.saturating_sub(1))
        .sum::<u64>();
    let admitted: Vec<(u64, u64, u64)> = shoppers
        .iter()
        .filter_map(|s| Some((s.seq?, s.last_waiting_sent, s.admitted_at?)))
        .collect();
    let (tau, concordant, discordant) = kendall(&admitted);
    let increased: u64 = shoppers.iter().map(|s| s.increased).sum();
    let server_errors: u64 = shoppers.iter().map(|s| s.server_errors).sum();
    let transport_errors: u64 = shoppers.iter().map(|s| s.transport_errors).sum();
    let mut eta_err = Vec::new();
    let mut within_p90 = 0u64;
    for s in shoppers.iter().filter(|s| s.last_waiting_sent > 0) {
        if let (Some(at), Some(p50)) = (s.admitted_at, s.eta_p50_s) {
            let actual = at.saturating_sub(s.join_at) as f64 / 1e6;
            eta_err.push(actual - p50);
            if s.eta_p90_s.is_some_and(|p90| actual <= p90 + 1.0) {
                within_p90 += 1;
            }
        }
    }
    let eta_n = eta_err.len() as u64;
    let mut abs: Vec<f64> = eta_err.iter().map(|e| e.abs()).collect();
    let findings = Findings {
        oversold_units: oversold,
        stock_invariant_broken: invariant_broken,
        duplicate_coupons: duplicates,
        fifo_inversions: discordant,
        kendall_tau: tau,
        positions_increased: increased,
        server_errors,
    };
    let ok = oversold == 0
        && !invariant_broken
        && duplicates == 0
        && discordant == 0
        && increased == 0
        && server_errors == 0;
    let count = |f: fn(&Shopper) -> bool| shoppers.iter().filter(|s| f(s)).count() as u64;
    let counts = json!({
        "shoppers": shoppers.len(),
        "admitted": count(|s| s.admitted_at.is_some()),
        "bought_units": units,
        "coupons": codes.len(),
        "sold_out_answers": count(|s| s.sold_out),
        "abandoned": count(|s| s.abandoned),
        "expired_while_polling": count(|s| s.expired && !s.abandoned),
        "never_served": count(|s| s.never_served),
        "transport_errors": transport_errors,
    });
    let eta = json!({
        "measured_shoppers": eta_n,
        "median_abs_error_s": median(&mut abs),
        "mean_error_s": if eta_n > 0 { eta_err.iter().sum::<f64>() / eta_n as f64 } else { 0.0 },
        "share_within_p90": if eta_n > 0 { within_p90 as f64 / eta_n as f64 } else { 1.0 },
    });
    let summaries: Vec<_> = [
        ("join", &ctx.rec.join),
        ("poll", &ctx.rec.poll),
        ("purchase", &ctx.rec.buy),
    ]
    .iter()
    .filter_map(|(n, r)| r.lock().ok().map(|r| r.summary(n, elapsed)))
    .collect();

    println!(
        "drop: {} shoppers in {:.1} s",
        shoppers.len(),
        elapsed.as_secs_f64()
    );
    println!("{:<28} {:>12}", "check", "result");
    for (k, v) in [
        ("oversold units", oversold.to_string()),
        (
            "stock invariant",
            if invariant_broken {
                "BROKEN".into()
            } else {
                "holds".to_string()
            },
        ),
        ("duplicate coupons", duplicates.to_string()),
        (
            "FIFO inversions",
            format!("{discordant} of {}", concordant + discordant),
        ),
        ("Kendall tau", format!("{tau:.4}")),
        ("positions increased", increased.to_string()),
        ("server errors (5xx)", server_errors.to_string()),
        ("never served", counts["never_served"].to_string()),
        (
            "ETA median |error| s",
            format!("{:.2}", eta["median_abs_error_s"].as_f64().unwrap_or(0.0)),
        ),
    ] {
        println!("{k:<28} {v:>12}");
    }
    for s in &summaries {
        println!(
            "{:<10} {:>9} req {:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms",
            s.name, s.requests, s.req_per_s, s.p50_ms, s.p99_ms
        );
    }

    // ---- plots ----
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    let waiting: Vec<(f64, f64)> = samples.iter().map(|&(t, w, _)| (t, w as f64)).collect();
    let admissions: Vec<(f64, f64)> = samples
        .windows(2)
        .map(|w| {
            (
                w[1].0,
                (w[1].2.saturating_sub(w[0].2)) as f64 / (w[1].0 - w[0].0).max(1e-3),
            )
        })
        .collect();
    crate::plot::lines(
        &out.join(format!("{name}-queue.svg")),
        "drop: waiting shoppers",
        "shoppers",
        &[("waiting", waiting)],
    )?;
    crate::plot::lines(
        &out.join(format!("{name}-admissions.svg")),
        "drop: admissions per second",
        "admissions/s",
        &[("admitted/s", admissions)],
    )?;
    if let Some(poll) = summaries.iter().find(|s| s.name == "poll") {
        let p = |f: fn(&crate::stats::Second) -> f64| {
            poll.timeline
                .iter()
                .map(|s| (s.second as f64, f(s)))
                .collect::<Vec<_>>()
        };
        crate::plot::lines(
            &out.join(format!("{name}-latency.svg")),
            "drop: poll latency",
            "ms",
            &[("p50", p(|s| s.p50_ms)), ("p99", p(|s| s.p99_ms))],
        )?;
    }
    let report = json!({
        "scenario": s,
        "ok": ok,
        "findings": findings,
        "counts": counts,
        "eta": eta,
        "stock_before": stock_before,
        "stock_after": stock_after,
        "requests": summaries,
        "seconds": elapsed.as_secs_f64(),
    });
    Ok((ok, report))
}

#[cfg(test)]
mod tests {
    use super::kendall;

    #[test]
    fn in_order_admissions_have_tau_one() {
        // seq, last waiting poll sent, admitted answer received.
        let obs = [(1, 0, 10), (2, 12, 20), (3, 22, 30), (4, 5, 40)];
        let (tau, c, d) = kendall(&obs);
        assert_eq!((tau, d), (1.0, 0));
        assert!(c >= 3);
    }

    #[test]
    fn an_overtaking_shopper_is_an_inversion() {
        // 2 was admitted (t=10) while 1 was still seen waiting at t=15.
        let obs = [(1, 15, 30), (2, 0, 10)];
        let (tau, _, d) = kendall(&obs);
        assert_eq!(d, 1);
        assert!(tau < 0.0);
    }
}
