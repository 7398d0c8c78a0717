//! `GET {prefix}/v1/rooms/{room}/events`: the place of a ticket as a server-sent event stream,
//! pushed when it changes instead of polled.
//!
//! Fan-out is O(1) per room per refresh: the room's one change counter ([`Room::watch_changes`],
//! a `tokio::sync::watch`) wakes every stream of the room once; each stream then derives its own
//! place from the room's cached state, as a poll does, and sends it only when it differs from
//! what it sent last. A waiting ticket's stream makes no store call, per connection or per event
//! (only the one pickup of a pass does, as a poll would).
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
use crate::queue::place::{place_body, PlaceState};
use crate::queue::{Room, RETIRED};

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
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let stream = Stream {
        state: state.clone(),
        room: room.clone(),
        claims,
        ticket: token.to_string(),
        pass: pass_from_cookie(headers, &room.id).map(str::to_string),
        lang: super::place::language(room, headers).to_string(),
        changes: room.watch_changes(),
        last_body: String::new(),
        last_id,
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
    last_body: String,
    last_id: Option<u64>,
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
                if let Some(event) = self.event(version).await {
                    return Some(event);
                }
                continue;
            }
            tokio::select! {
                changed = self.changes.changed() => {
                    let version = *self.changes.borrow_and_update();
                    if changed.is_err() || version == RETIRED {
                        return None;
                    }
                    if let Some(event) = self.event(version).await {
                        return Some(event);
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

    /// The place as an event when it changed since the last one sent (`None` otherwise).
    async fn event(&mut self, version: u64) -> Option<Bytes> {
        let now = now_ms();
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
        let body = match place {
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
                serde_json::to_string(&place_body(&self.room, &place, now, &self.lang)).ok()?
            }
            // The store was needed (a pass to pick up) and did not answer: the next change
            // tries again; the client may also poll.
            Err(e) => {
                tracing::debug!(room = %self.room.id, error = %e, "event stream could not locate its place");
                return None;
            }
        };
        if body == self.last_body && !self.done {
            return None;
        }
        let event = format!("id: {version}\nevent: place\ndata: {body}\n\n");
        self.last_body = body;
        Some(Bytes::from(event))
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
