//! `GET {prefix}/v1/rooms/{room}/events`: the place of a ticket as a server-sent event stream,
//! pushed when it changes instead of polled.
//!
//! Fan-out is O(1) per room per change: the room's one change counter ([`Room::watch_changes`],
//! a `tokio::sync::watch`, bumped by a refresh that changed what a waiter sees, by stock changes,
//! and at least every few seconds) wakes every stream of the room once; each stream derives its own
//! place from the room's cached state, as a poll does, and sends it only when it differs from
//! what it sent last. A waiting ticket's stream makes no store call, per connection or per event
//! (only the one pickup of a pass does, as a poll would; a held place of a group asks the store
//! at most every two seconds whether its pass may come).
//!
//! Besides `place` events: a scheduled room's waiters get `opening` events with the countdown
//! (`opens_at`, `opens_in_ms`: at once, every minute, ten seconds before) and an `opened` event
//! at the moment it opens by the node's clock; a waiter who saw the room sold out gets one
//! `restocked` event (`restock`: the sale's restock number, the same on every node) when stock
//! comes back, before the place event that shows it back in line. Each event id is
//! `{version}.{restocks told}`, so a reconnect's `Last-Event-ID` is not told of a restock twice
//! (a new page load has no id: the page keeps the restock numbers it showed).
//!
//! Guarantees: the first event is the place now (skipped when `Last-Event-ID` names the current
//! state of the room, a reconnect that missed nothing); every event has an `id`; a comment is
//! sent every [`HEARTBEAT`] so proxies keep the stream and the stream counts as the waiter being
//! alive (no polls needed); the stream ends after a final state (admitted, expired, closed,
//! transferred) and when a reload replaced the room (the client reconnects). Open streams are
//! bounded per node (`server.max_event_streams`, 503 beyond) and per client address
//! (`server.max_event_streams_per_client`, 429 beyond), and counted in
//! `rushgate_event_streams_open`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};

use super::body::{Body, BoxError};
use super::credentials::{pass_from_cookie, PeerAddr};
use super::error::ApiError;
use super::state::AppState;
use crate::clock::now_ms;
use crate::ops::metrics::EVENT_STREAMS_OPEN;
use crate::pass::TicketClaims;
use crate::queue::place::{place_body, PlaceBody, PlaceState};
use crate::queue::schedule::{rfc3339, Schedule};
use crate::queue::{Room, RETIRED};

/// How often a held place's stream asks the store whether its pass may come (each ask is a
/// store call; a held place waits on another session's end, which takes minutes).
const HELD_RECHECK_MS: u64 = 2_000;

/// How often a stream sends a comment when nothing changed.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// `GET {prefix}/v1/rooms/{room}/events` (see the module doc).
pub async fn events(
    state: &AppState,
    room_id: &str,
    req: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let room = state.room(room_id)?;
    let headers = req.headers();
    let now = now_ms();
    let (token, claims) = super::queue::verified_ticket(&state.places(), room, headers, now)?;
    let client = state
        .limits
        .client_address(headers, req.extensions().get::<PeerAddr>().copied());
    let per_client = ClientSlot::take(state, client)?;
    let Ok(slot) = state.event_streams.clone().try_acquire_owned() else {
        return Err(ApiError::StreamsFull);
    };
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(EventId::parse)
        .unwrap_or_default();
    let restocks_now = room.stock_gate().map_or(0, |g| g.restocks);
    let opens_at = Schedule::of(&room.config).opens_at.filter(|&o| o > now);
    let stream = Stream {
        state: state.clone(),
        room: room.clone(),
        claims,
        ticket: token.to_string(),
        pass: pass_from_cookie(headers, &room.id).map(str::to_string),
        lang: super::place::language(room, headers).to_string(),
        changes: room.watch_changes(),
        last_body: None,
        last_id: last.version,
        // A reconnect names the restocks its client was told of; a new stream counts from now
        // (a waiter is told of a restock it saw coming, not of one before it looked).
        restocks_told: last.restocks.unwrap_or(restocks_now),
        saw_sold_out: false,
        opens_at,
        held_until: None,
        seen_interval: None,
        first: true,
        done: false,
        _open: Open::new(slot, per_client),
    };
    let frames = futures_util::stream::unfold(stream, |mut s| async move {
        let frame = s.next().await?;
        Some((Ok::<_, BoxError>(Frame::data(frame)), s))
    });
    // The stream's future is Send but not Sync; the response body type must be both, and a
    // body is only ever polled through `&mut`, which is what SyncWrapper relies on.
    let frames = sync_wrapper::SyncStream::new(frames);
    let mut resp = Response::new(StreamBody::new(frames).boxed());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // nginx and other buffering proxies pass events on at once.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

/// One open stream.
struct Stream {
    state: AppState,
    room: Arc<Room>,
    claims: TicketClaims,
    ticket: String,
    pass: Option<String>,
    /// The language of the messages sent (the stream's `Accept-Language`).
    lang: String,
    changes: tokio::sync::watch::Receiver<u64>,
    last_body: Option<PlaceBody>,
    last_id: Option<u64>,
    /// The sale's restocks this stream's client was told of (or that came before it looked).
    restocks_told: u64,
    /// The place was sold out since the last restock notice: the next restock is news.
    saw_sold_out: bool,
    /// A scheduled room's opening still ahead (ms): the stream counts down to it.
    opens_at: Option<u64>,
    /// A held place (see [`crate::queue::group`]) asks the store whether it may have its
    /// pass: not at every refresh, only from this time on (ms).
    held_until: Option<u64>,
    /// The liveness interval this stream last recorded its waiter in.
    seen_interval: Option<u64>,
    first: bool,
    done: bool,
    _open: Open,
}

impl Stream {
    /// The next bytes to send, or `None` when the stream ends.
    async fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        loop {
            if self.first {
                self.first = false;
                let version = *self.changes.borrow_and_update();
                if version == RETIRED {
                    return None;
                }
                if self.last_id == Some(version) {
                    continue;
                }
                let mut first = self.event(version).await.unwrap_or_default();
                if let Some(opens) = self.opens_at {
                    first.extend_from_slice(&self.opening(opens, now_ms()));
                }
                if first.is_empty() {
                    continue;
                }
                return Some(Bytes::from(first));
            }
            let now = now_ms();
            let countdown = self.opens_at.map(|opens| next_mark(opens, now));
            // A waiter's liveness once per liveness interval, whether or not the room wakes
            // the stream meanwhile (it wakes only on a change a waiter can see).
            let params = &self.room.params;
            let alive_due = (self.claims.seq > 0 && !self.done)
                .then(|| (params.interval_of(now) + 1) * params.interval_ms);
            tokio::select! {
                () = sleep_or_never(alive_due) => {
                    let now = now_ms();
                    let interval = self.room.params.interval_of(now);
                    if self.seen_interval != Some(interval) {
                        self.room.record_seen(self.claims.seq, now);
                        self.seen_interval = Some(interval);
                    }
                }
                () = sleep_or_never(countdown) => {
                    if let Some(opens) = self.opens_at {
                        return Some(Bytes::from(self.opening(opens, now_ms())));
                    }
                }
                changed = self.changes.changed() => {
                    let version = *self.changes.borrow_and_update();
                    if changed.is_err() || version == RETIRED {
                        return None;
                    }
                    if let Some(event) = self.event(version).await {
                        return Some(Bytes::from(event));
                    }
                }
                () = tokio::time::sleep(HEARTBEAT) => {
                    // An open stream is a waiter that is still there (a room that publishes
                    // nothing for a while wakes no stream).
                    let now = now_ms();
                    let interval = self.room.params.interval_of(now);
                    if self.claims.seq > 0 && self.seen_interval != Some(interval) {
                        self.room.record_seen(self.claims.seq, now);
                        self.seen_interval = Some(interval);
                    }
                    return Some(Bytes::from_static(b": ping\n\n"));
                }
            }
        }
    }

    /// An `opening` event with the countdown to `opens`, or, once it has come, an `opened`
    /// event (after which the stream counts down no more). The place event that follows the
    /// opening's refresh gives the waiter its place in line.
    fn opening(&mut self, opens: u64, now: u64) -> Vec<u8> {
        let id = self.event_id(*self.changes.borrow());
        let room = self.room.id.as_str();
        let at = rfc3339(opens).unwrap_or_default();
        if now >= opens {
            self.opens_at = None;
            let data = serde_json::json!({ "room": room, "opened_at": at });
            format!("id: {id}\nevent: opened\ndata: {data}\n\n").into_bytes()
        } else {
            let data = serde_json::json!({
                "room": room,
                "opens_at": at,
                "opens_in_ms": opens - now,
            });
            format!("id: {id}\nevent: opening\ndata: {data}\n\n").into_bytes()
        }
    }

    /// The id of an event sent now: the room's change version and the restocks told
    /// (`Last-Event-ID` gives both back on a reconnect).
    fn event_id(&self, version: u64) -> String {
        EventId {
            version: Some(version),
            restocks: Some(self.restocks_told),
        }
        .to_string()
    }

    /// A `restocked` event when the place was sold out and the sale has been restocked since
    /// the last notice: once per restock for this waiter (a reconnect's `Last-Event-ID` says
    /// which were told).
    fn restock_notice(&mut self, state: PlaceState, version: u64) -> Option<String> {
        let gate = self.room.stock_gate()?;
        if state == PlaceState::SoldOut {
            self.saw_sold_out = true;
            return None;
        }
        // An admission out of a sold-out line is news of a restock even when this node's keeper
        // has not read it yet (the pacer may admit against another node's newer read): it is
        // the next restock after the last one told.
        let restock = if state == PlaceState::Admitted && self.saw_sold_out {
            gate.restocks.max(self.restocks_told + 1)
        } else {
            gate.restocks
        };
        if restock <= self.restocks_told {
            return None;
        }
        self.restocks_told = restock;
        if !std::mem::take(&mut self.saw_sold_out) {
            // Restocked before this waiter saw the room sold out: nothing to tell.
            return None;
        }
        let data = serde_json::json!({
            "room": self.room.id.as_str(),
            "restock": restock,
            "remaining": gate.remaining,
        });
        let id = self.event_id(version);
        Some(format!("id: {id}\nevent: restocked\ndata: {data}\n\n"))
    }

    /// The place as an event when it changed since the last one sent (`None` otherwise),
    /// after a `restocked` notice when this change brought stock back to a sold-out place.
    async fn event(&mut self, version: u64) -> Option<Vec<u8>> {
        let now = now_ms();
        if self.held_until.is_some_and(|until| now < until) {
            return None;
        }
        // Liveness once per liveness interval, as a poller's cadence costs the store; not at
        // every refresh the stream looks at.
        let interval = self.room.params.interval_of(now);
        let seen = self.seen_interval != Some(interval);
        let place = self
            .state
            .places()
            .locate_noting(
                &self.room,
                &self.claims,
                self.ticket.clone(),
                self.pass.as_deref(),
                now,
                seen,
            )
            .await;
        if seen && place.is_ok() {
            self.seen_interval = Some(interval);
        }
        let (body, notice) = match place {
            Ok(place) => {
                if matches!(
                    place.state,
                    PlaceState::Admitted
                        | PlaceState::Expired
                        | PlaceState::Closed
                        | PlaceState::Transferred
                ) {
                    self.done = true;
                }
                if let Some(pass) = &place.pass {
                    self.pass = Some(pass.0.clone());
                }
                // A re-issued ticket (a pre-queue ticket that learned its seq at the opening):
                // later events locate it from the cache instead of asking the store again.
                if let Some(t) = place.ticket.as_ref().filter(|t| **t != self.ticket) {
                    if let Ok(claims) = self.state.tickets.verify(t) {
                        self.claims = claims;
                        self.ticket = t.clone();
                    }
                }
                self.held_until =
                    (place.state == PlaceState::Held).then_some(now + HELD_RECHECK_MS);
                let notice = self.restock_notice(place.state, version);
                (place_body(&self.room, &place, now, &self.lang), notice)
            }
            // The store was needed (a pass to pick up) and did not answer: the next change
            // tries again; the client may also poll.
            Err(e) => {
                tracing::debug!(room = %self.room.id, error = %e, "event stream could not locate its place");
                return None;
            }
        };
        // Most refreshes change nothing a given waiter sees: compared as values, not as JSON,
        // so an unchanged place costs no serialisation.
        if self.last_body.as_ref() == Some(&body) && !self.done && notice.is_none() {
            return None;
        }
        let data = serde_json::to_string(&body).ok()?;
        let id = self.event_id(version);
        // The opening comes before the first place after it, whichever woke first.
        let mut event = match self.opens_at.filter(|&o| now >= o) {
            Some(opens) => String::from_utf8(self.opening(opens, now)).unwrap_or_default(),
            None => String::new(),
        };
        event.push_str(&notice.unwrap_or_default());
        event.push_str(&format!("id: {id}\nevent: place\ndata: {data}\n\n"));
        self.last_body = Some(body);
        Some(event.into_bytes())
    }
}

/// An event id: `{version}.{restocks}` (the room's change version on the node that sent it,
/// and the restocks its client was told of); a bare `{version}` is read too.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct EventId {
    version: Option<u64>,
    restocks: Option<u64>,
}

impl EventId {
    /// Reads a `Last-Event-ID`; parts that are not numbers are `None`.
    fn parse(text: &str) -> EventId {
        let mut parts = text.trim().splitn(2, '.');
        let version = parts.next().and_then(|v| v.parse().ok());
        let restocks = parts.next().and_then(|v| v.parse().ok());
        EventId { version, restocks }
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{}",
            self.version.unwrap_or(0),
            self.restocks.unwrap_or(0)
        )
    }
}

/// When a countdown to `opens` next speaks: every minute while more than a minute is left,
/// then at ten seconds before, then at the opening itself.
fn next_mark(opens: u64, now: u64) -> u64 {
    let left = opens.saturating_sub(now);
    if left > 70_000 {
        now + 60_000
    } else if left > 10_000 {
        opens - 10_000
    } else {
        opens
    }
}

/// Sleeps until wall-clock time `at_ms`, or forever when there is nothing to wait for.
async fn sleep_or_never(at_ms: Option<u64>) {
    match at_ms {
        Some(at) => tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()))).await,
        None => std::future::pending().await,
    }
}

/// An open stream: its node-wide slot, its client's slot and its place in the gauge, for as
/// long as it lives.
struct Open {
    _slot: tokio::sync::OwnedSemaphorePermit,
    _client: ClientSlot,
    gauge: metrics::Gauge,
}

impl Open {
    fn new(slot: tokio::sync::OwnedSemaphorePermit, client: ClientSlot) -> Open {
        let gauge = metrics::gauge!(EVENT_STREAMS_OPEN);
        gauge.increment(1.0);
        Open {
            _slot: slot,
            _client: client,
            gauge,
        }
    }
}

/// One of a client address's streams (`server.max_event_streams_per_client`); the address's
/// entry goes when its last stream closes, so the map holds only addresses with open streams.
struct ClientSlot {
    by_client: Arc<dashmap::DashMap<IpAddr, usize>>,
    client: IpAddr,
}

impl ClientSlot {
    fn take(state: &AppState, client: IpAddr) -> Result<ClientSlot, ApiError> {
        let most = state.config.server.max_event_streams_per_client;
        let mut open = state.event_streams_by_client.entry(client).or_insert(0);
        if *open >= most {
            return Err(ApiError::StreamsPerClient(most));
        }
        *open += 1;
        drop(open);
        Ok(ClientSlot {
            by_client: state.event_streams_by_client.clone(),
            client,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.by_client.remove_if_mut(&self.client, |_, open| {
            *open = open.saturating_sub(1);
            *open == 0
        });
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_carry_the_restocks_told() {
        let id = EventId {
            version: Some(17),
            restocks: Some(2),
        };
        assert_eq!(id.to_string(), "17.2");
        assert_eq!(EventId::parse("17.2"), id);
        assert_eq!(
            EventId::parse("17"),
            EventId {
                version: Some(17),
                restocks: None
            }
        );
        assert_eq!(EventId::parse("x.y"), EventId::default());
    }

    #[test]
    fn a_countdown_speaks_each_minute_then_at_ten_seconds_then_at_the_opening() {
        assert_eq!(next_mark(1_000_000, 0), 60_000);
        assert_eq!(next_mark(1_000_000, 940_000), 990_000);
        assert_eq!(next_mark(1_000_000, 995_000), 1_000_000);
        assert_eq!(next_mark(1_000_000, 1_000_500), 1_000_000);
    }
}
