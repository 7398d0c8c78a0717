//! `ApiError`: the one place that turns a failure into an HTTP status and an RFC 9457
//! `application/problem+json` body (with `Retry-After` where a retry can help, and a
//! proof-of-work challenge's `challenge`, `difficulty` and `expires_in` members).

use http::{header, HeaderValue, Response, StatusCode};

use super::body::{full, Body};
use super::proxy::PathRefused;
use crate::clock::now_ms;
use crate::config::{join_problems, Problem};
use crate::pass::{TokenError, UserTokenError};
use crate::queue::place::{IdentityError, PlaceError};
use crate::queue::pow::{Challenge, PowError};
use crate::store::StoreError;

/// Everything a request can fail with. Display is the problem `detail` shown to the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No route for this path.
    #[error("no such endpoint: {0}")]
    NotFound(String),
    /// The path exists but not for this method.
    #[error("method {method} is not allowed here; use {allow}")]
    MethodNotAllowed {
        /// Method used.
        method: String,
        /// Methods the path accepts.
        allow: &'static str,
    },
    /// The room id is not configured.
    #[error("unknown room `{0}`")]
    UnknownRoom(String),
    /// The body is not the JSON this endpoint takes.
    #[error("malformed JSON body: {0}")]
    MalformedJson(String),
    /// A field is present but unacceptable.
    #[error("invalid `{field}`: {problem}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// An operator's room message breaks a rule (length, characters, a language the room does
    /// not offer); nothing changed.
    #[error("invalid {0}")]
    InvalidMessage(#[from] crate::queue::message::MessageError),
    /// Body over the limit.
    #[error("request body is larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The request body could not be read.
    #[error("could not read the request body")]
    BodyRead,
    /// A cross-origin call the API does not allow (origin not listed, or a method or header it
    /// does not offer).
    #[error("cross-origin request refused: {0}")]
    CorsRefused(String),
    /// The request body did not arrive within `server.body_timeout_seconds` of its head.
    #[error("the request body did not arrive in time; send it at once after the head")]
    BodyTimeout,
    /// No queue ticket in the cookie or `Authorization: Bearer`.
    #[error("no queue ticket: join the room first (cookie `{0}` or Authorization: Bearer)")]
    MissingTicket(String),
    /// A ticket was presented but is not acceptable.
    #[error("invalid queue ticket: {0}")]
    BadTicket(TokenError),
    /// A pass was presented but is not acceptable.
    #[error("invalid pass: {0}")]
    BadPass(TokenError),
    /// The sale id is not configured.
    #[error("unknown sale `{0}`")]
    UnknownSale(String),
    /// The coupon campaign id is not configured.
    #[error("unknown coupon campaign `{0}`")]
    UnknownCoupon(String),
    /// No such reservation.
    #[error("unknown reservation `{0}`")]
    UnknownReservation(String),
    /// No pass in the cookie or `Authorization: Bearer`.
    #[error("no admission pass: wait in the queue first (cookie `{0}` or Authorization: Bearer)")]
    MissingPass(String),
    /// A valid pass of another room.
    #[error("this pass admits to room `{held}`, not `{wanted}`")]
    PassWrongRoom {
        /// The room of the pass.
        held: String,
        /// The room this needs.
        wanted: String,
    },
    /// The client spent its request budget.
    #[error("too many requests; retry in {retry_after} s")]
    RateLimited {
        /// Seconds until the next request is allowed.
        retry_after: u64,
    },
    /// A configuration reload found problems; the running configuration stays.
    #[error("reload refused, the running configuration stays: {}", join_problems(.0, "; "))]
    ReloadRefused(Vec<Problem>),
    /// Missing or wrong admin token.
    #[error("missing or wrong admin token (Authorization: Bearer <admin.token>)")]
    AdminUnauthorized,
    /// Missing or wrong shop API key.
    #[error("missing or wrong shop API key (Authorization: Bearer <shop.api_key>)")]
    ShopUnauthorized,
    /// The user would hold more than the per-user limit.
    #[error("limit reached: at most {limit} units per shopper, {held} already held")]
    LimitReached {
        /// The per-user limit.
        limit: u32,
        /// Units already held.
        held: u64,
    },
    /// Nothing left to sell.
    #[error("sold out{}", if *.reserved > 0 { format!(" ({} units are held by reservations and may return)", .reserved) } else { String::new() })]
    SoldOut {
        /// Units held by live reservations.
        reserved: u64,
    },
    /// Fewer units left than asked for.
    #[error("only {available} units left")]
    InsufficientStock {
        /// Units available.
        available: u64,
    },
    /// Every coupon is issued.
    #[error("all coupons of this campaign are issued")]
    CouponExhausted,
    /// The reservation is in a state that does not allow this.
    #[error("reservation is {0}")]
    ReservationConflict(&'static str),
    /// A proxied path that servers read in different ways (see [`PathRefused`]).
    #[error("{0}")]
    AmbiguousPath(PathRefused),
    /// The request headers are larger than the proxy accepts.
    #[error("request headers are larger than {limit} bytes")]
    HeadersTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The shop behind the proxy could not be reached or broke the exchange.
    #[error("the shop is not answering ({0}); retry shortly")]
    UpstreamUnavailable(String),
    /// The client's address holds `server.max_event_streams_per_client` streams on this node.
    #[error(
        "too many open event streams from this address ({0}); close one, or poll the position"
    )]
    StreamsPerClient(usize),
    /// This node has `server.max_event_streams` event streams open.
    #[error(
        "too many open event streams on this node; poll the position instead, or retry shortly"
    )]
    StreamsFull,
    /// An upgrade the proxy does not carry (`h2c`, or no `Upgrade` header).
    #[error("upgrade refused: {0}")]
    UpgradeRefused(String),
    /// The upstream already has `rooms[].max_tunnels` WebSocket (upgraded) connections open;
    /// nothing was sent to it.
    #[error("too many open WebSocket connections to the shop; nothing was sent, retry shortly")]
    TunnelsFull,
    /// The shop behind the proxy did not answer in time.
    #[error("the shop did not answer within {0} seconds; retry shortly")]
    UpstreamTimeout(u64),
    /// The gate found no valid pass for the room (always 401, never 5xx, for nginx and Envoy).
    #[error("not admitted to room `{room}`: {reason}")]
    NotAdmitted {
        /// The room asked about.
        room: String,
        /// Why no pass counts (missing, expired, forged, other room).
        reason: String,
    },
    /// Who the shopper is could not be established (bare user key refused, user token
    /// missing, forged, expired or for another audience).
    #[error("{0}")]
    Identity(IdentityError),
    /// The ticket's place moved to another device.
    #[error("this place moved to another device; this ticket no longer holds it")]
    Transferred,
    /// The ticket holds no place to act on.
    #[error("this ticket holds no place (it left, was evicted or its session ended)")]
    NoPlace,
    /// A transfer code that is unknown, expired or used.
    #[error("unknown transfer code: it expired, was used already, or never existed")]
    UnknownTransferCode,
    /// A transfer code whose place moved or ended after it was made.
    #[error("the place moved or ended after this code was made; ask for a new code")]
    StaleTransferCode,
    /// The room asks for a proof of work before a new place (401 `pow-required`); the problem
    /// carries the challenge, its difficulty and the seconds it stays valid.
    #[error("this room asks for a proof of work before a new place: find a decimal nonce such that SHA-256(challenge \":\" nonce) starts with {} zero bits, then join again with {{\"pow\": {{\"challenge\": …, \"nonce\": …}}}}", .0.difficulty)]
    PowRequired(Challenge),
    /// The proof of work presented was refused: 400 `pow-invalid` when malformed, 409
    /// `pow-replayed` when already used, else 401 `pow-invalid`.
    #[error("{0}")]
    PowRefused(PowError),
    /// The store did not answer (unreachable, failing over, or slower than
    /// `command_timeout_ms`). A write may still have been applied: the [`Retry`] says what
    /// may have happened and how to repeat the request so it happens at most once.
    #[error("the queue's store did not answer; {0}")]
    StoreUnavailable(Retry),
    /// A fault on our side (never caused by input).
    #[error("internal error")]
    Internal(String),
}

/// What a 503 from the store means for the request, and how to repeat it. Every write is
/// named before it is sent (a reservation id, a ticket, the user the coupon is for), so a
/// repeat made as this says finds what the first attempt did instead of doing it twice.
#[derive(Debug, Clone)]
pub enum Retry {
    /// The write may have been applied; repeating the same request (same ticket, pass, user
    /// token or key) finds it, or makes it when it was not.
    Repeat,
    /// A purchase sent without an idempotency key: it may have reserved `reservation_id`.
    /// Repeating it with `idempotency_key` answers that reservation, or makes it.
    WithKey {
        /// The key to send on the retry.
        idempotency_key: String,
        /// The reservation the first attempt may have made.
        reservation_id: String,
    },
    /// A new place's join: it may have made a place for `ticket`. Repeating the join with
    /// this ticket (the cookie this answer sets, or `Authorization: Bearer`) answers that
    /// place, or makes it.
    WithTicket {
        /// The pending ticket.
        ticket: String,
        /// Its `Set-Cookie` value, when the handler knows the cookie's attributes.
        cookie: Option<HeaderValue>,
    },
    /// A transfer claim: it may have moved the place to this device. Repeating the claim
    /// with the same code and this `claim_id` answers that move, or makes it.
    WithClaimId(String),
    /// A write that a blind repeat could do twice: read `check` first, then repeat only
    /// what it did not do.
    CheckFirst(String),
}

impl Retry {
    /// The retry instruction, as the problem's `retry` member and the end of its `detail`.
    pub fn instruction(&self) -> &'static str {
        match self {
            Retry::Repeat => "the request may have been applied; repeating the same request after Retry-After is safe: it finds what the first attempt did",
            Retry::WithKey { .. } => "the purchase may have reserved `reservation_id`; repeat it with this `idempotency_key`: it answers that reservation, or makes it, never a second one",
            Retry::WithTicket { .. } => "the join may have made a place; repeat it with this `ticket` (the cookie set here, or Authorization: Bearer): it answers that place, or makes it, never a second one",
            Retry::WithClaimId(_) => "the claim may have moved the place; repeat it with the same code and this `claim_id`: it answers that move, or makes it",
            Retry::CheckFirst(_) => "the change may have been applied; read `check` before repeating it, because a blind repeat may apply it twice",
        }
    }
}

impl std::fmt::Display for Retry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.instruction())
    }
}

impl From<PlaceError> for ApiError {
    fn from(e: PlaceError) -> Self {
        match e {
            PlaceError::Pending {
                error: StoreError::Unavailable(_),
                ticket,
            } => ApiError::StoreUnavailable(Retry::WithTicket {
                ticket,
                cookie: None,
            }),
            PlaceError::Pending { error, .. } => error.into(),
            PlaceError::ClaimPending {
                error: StoreError::Unavailable(_),
                claim_id,
            } => ApiError::StoreUnavailable(Retry::WithClaimId(claim_id)),
            PlaceError::ClaimPending { error, .. } => error.into(),
            PlaceError::BadTicket(e) => ApiError::BadTicket(e),
            PlaceError::Store(e) => e.into(),
            PlaceError::Pass(e) => ApiError::Internal(e.to_string()),
            PlaceError::Identity(e) => ApiError::Identity(e),
            PlaceError::Transferred => ApiError::Transferred,
            PlaceError::NoPlace => ApiError::NoPlace,
            PlaceError::UnknownCode => ApiError::UnknownTransferCode,
            PlaceError::StaleCode => ApiError::StaleTransferCode,
            PlaceError::WorkNeeded(challenge) => ApiError::PowRequired(challenge),
            PlaceError::WorkRefused(e) => ApiError::PowRefused(e),
        }
    }
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> Self {
        ApiError::Identity(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => ApiError::StoreUnavailable(Retry::Repeat),
            StoreError::Protocol(msg) => ApiError::Internal(msg),
        }
    }
}

impl ApiError {
    fn status_and_type(&self) -> (StatusCode, &'static str, &'static str) {
        use ApiError::*;
        match self {
            NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            MethodNotAllowed { .. } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            UnknownRoom(_) => (StatusCode::NOT_FOUND, "unknown-room", "Unknown room"),
            MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed-json", "Malformed JSON"),
            InvalidField { .. } | InvalidMessage(_) => {
                (StatusCode::BAD_REQUEST, "invalid-field", "Invalid field")
            }
            BodyTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Body too large",
            ),
            BodyRead => (
                StatusCode::BAD_REQUEST,
                "body-unreadable",
                "Body unreadable",
            ),
            CorsRefused(_) => (
                StatusCode::FORBIDDEN,
                "cors-refused",
                "Cross-origin refused",
            ),
            BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "body-timeout", "Body too slow"),
            MissingTicket(_) => (StatusCode::UNAUTHORIZED, "missing-ticket", "Missing ticket"),
            BadTicket(_) => (StatusCode::UNAUTHORIZED, "invalid-ticket", "Invalid ticket"),
            BadPass(_) => (StatusCode::UNAUTHORIZED, "invalid-pass", "Invalid pass"),
            UnknownSale(_) => (StatusCode::NOT_FOUND, "unknown-sale", "Unknown sale"),
            UnknownCoupon(_) => (
                StatusCode::NOT_FOUND,
                "unknown-coupon",
                "Unknown coupon campaign",
            ),
            UnknownReservation(_) => (
                StatusCode::NOT_FOUND,
                "unknown-reservation",
                "Unknown reservation",
            ),
            MissingPass(_) => (StatusCode::UNAUTHORIZED, "missing-pass", "Missing pass"),
            PassWrongRoom { .. } => (
                StatusCode::FORBIDDEN,
                "pass-wrong-room",
                "Pass of another room",
            ),
            RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
            ),
            ReloadRefused(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "reload-refused",
                "Reload refused",
            ),
            AdminUnauthorized => (
                StatusCode::UNAUTHORIZED,
                "admin-unauthorized",
                "Admin token required",
            ),
            ShopUnauthorized => (
                StatusCode::UNAUTHORIZED,
                "shop-unauthorized",
                "Shop key required",
            ),
            LimitReached { .. } => (StatusCode::CONFLICT, "limit-reached", "Limit reached"),
            SoldOut { .. } => (StatusCode::CONFLICT, "sold-out", "Sold out"),
            InsufficientStock { .. } => (
                StatusCode::CONFLICT,
                "insufficient-stock",
                "Insufficient stock",
            ),
            CouponExhausted => (
                StatusCode::CONFLICT,
                "coupon-exhausted",
                "Coupons exhausted",
            ),
            ReservationConflict(_) => (
                StatusCode::CONFLICT,
                "reservation-conflict",
                "Reservation conflict",
            ),
            AmbiguousPath(_) => (StatusCode::BAD_REQUEST, "ambiguous-path", "Ambiguous path"),
            HeadersTooLarge { .. } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers-too-large",
                "Request headers too large",
            ),
            UpstreamUnavailable(_) => (
                StatusCode::BAD_GATEWAY,
                "upstream-unavailable",
                "Shop unavailable",
            ),
            StreamsPerClient(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "streams-per-client",
                "Too many event streams from this address",
            ),
            StreamsFull => (
                StatusCode::SERVICE_UNAVAILABLE,
                "streams-full",
                "Too many event streams",
            ),
            UpgradeRefused(_) => (
                StatusCode::BAD_REQUEST,
                "upgrade-refused",
                "Upgrade refused",
            ),
            TunnelsFull => (
                StatusCode::SERVICE_UNAVAILABLE,
                "tunnels-full",
                "Too many tunnels",
            ),
            UpstreamTimeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream-timeout",
                "Shop timed out",
            ),
            NotAdmitted { .. } => (StatusCode::UNAUTHORIZED, "not-admitted", "Not admitted"),
            Identity(e) => match e {
                IdentityError::UserKeyRefused | IdentityError::NoIdentityKey => (
                    StatusCode::BAD_REQUEST,
                    "user-token-required",
                    "User token required",
                ),
                IdentityError::TokenRequired => (
                    StatusCode::UNAUTHORIZED,
                    "user-token-required",
                    "User token required",
                ),
                IdentityError::Token(UserTokenError::KeysUnavailable(_)) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "identity-keys-unavailable",
                    "Shop keys unavailable",
                ),
                IdentityError::Token(_) => (
                    StatusCode::UNAUTHORIZED,
                    "invalid-user-token",
                    "Invalid user token",
                ),
            },
            Transferred => (StatusCode::CONFLICT, "transferred", "Place moved"),
            NoPlace => (StatusCode::CONFLICT, "no-place", "No place"),
            UnknownTransferCode => (
                StatusCode::NOT_FOUND,
                "unknown-transfer-code",
                "Unknown transfer code",
            ),
            StaleTransferCode => (
                StatusCode::CONFLICT,
                "stale-transfer-code",
                "Stale transfer code",
            ),
            PowRequired(_) => (
                StatusCode::UNAUTHORIZED,
                "pow-required",
                "Proof of work required",
            ),
            PowRefused(PowError::Malformed) => (
                StatusCode::BAD_REQUEST,
                "pow-invalid",
                "Invalid proof of work",
            ),
            PowRefused(PowError::Replayed) => (
                StatusCode::CONFLICT,
                "pow-replayed",
                "Proof of work already used",
            ),
            PowRefused(_) => (
                StatusCode::UNAUTHORIZED,
                "pow-invalid",
                "Invalid proof of work",
            ),
            StoreUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                "Queue unavailable",
            ),
            Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }

    /// The problem+json response without a request id (see [`ApiError::into_problem`]).
    pub fn into_response(self) -> Response<Body> {
        self.into_problem(None)
    }

    /// The same failure as a small HTML page for a browser on a shop page: status, title, what
    /// happened, the request id to quote, and (for 429/503) an automatic retry.
    pub fn into_page(self, request_id: Option<&str>) -> Response<Body> {
        let (status, _, title) = self.status_and_type();
        let detail = self.to_string();
        let mut resp = self.into_problem(request_id);
        let retry = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(|s| format!("<meta http-equiv=\"refresh\" content=\"{}\">", escape(s)))
            .unwrap_or_default();
        let html = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">{retry}\
             <title>{code} {title}</title><style>body{{font-family:system-ui,sans-serif;\
             max-width:36rem;margin:3rem auto;padding:0 1rem;color:#222}}small{{color:#666}}</style>\
             </head><body><h1>{title}</h1><p>{detail}</p>{again}<p><small>Request id: {id}</small></p>\
             </body></html>",
            code = status.as_u16(),
            title = escape(title),
            detail = escape(&detail),
            again = if retry.is_empty() { "" } else { "<p>This page will try again by itself.</p>" },
            id = escape(request_id.unwrap_or("-")),
        );
        *resp.body_mut() = full(html);
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        resp
    }

    /// The problem+json response with the request's id as its `request_id` member (the router
    /// passes it for every error, so clients can quote it). Server-side faults are logged here,
    /// once.
    pub fn into_problem(self, request_id: Option<&str>) -> Response<Body> {
        let (status, slug, title) = self.status_and_type();
        if let ApiError::Internal(cause) = &self {
            tracing::error!(%cause, request_id, "internal error");
        }
        let mut body = serde_json::json!({
            "type": format!("https://rushgate.dev/problems/{slug}"),
            "title": title,
            "status": status.as_u16(),
            "detail": self.to_string(),
        });
        if let Some(id) = request_id {
            body["request_id"] = serde_json::Value::from(id);
        }
        if let ApiError::StoreUnavailable(retry) = &self {
            body["outcome"] = serde_json::Value::from("unknown");
            body["retry"] = serde_json::Value::from(retry.instruction());
            match retry {
                Retry::Repeat => {}
                Retry::WithKey {
                    idempotency_key,
                    reservation_id,
                } => {
                    body["idempotency_key"] = serde_json::Value::from(idempotency_key.as_str());
                    body["reservation_id"] = serde_json::Value::from(reservation_id.as_str());
                }
                Retry::WithTicket { ticket, .. } => {
                    body["ticket"] = serde_json::Value::from(ticket.as_str());
                }
                Retry::WithClaimId(id) => body["claim_id"] = serde_json::Value::from(id.as_str()),
                Retry::CheckFirst(check) => body["check"] = serde_json::Value::from(check.as_str()),
            }
        }
        if let ApiError::PowRequired(challenge) = &self {
            body["challenge"] = serde_json::Value::from(challenge.text.as_str());
            body["difficulty"] = serde_json::Value::from(challenge.difficulty);
            body["expires_in"] =
                serde_json::Value::from(challenge.expires_ms.saturating_sub(now_ms()) / 1000);
        }
        let mut resp = Response::new(full(body.to_string()));
        *resp.status_mut() = status;
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            ApiError::StoreUnavailable(retry) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
                if let Retry::WithTicket {
                    cookie: Some(cookie),
                    ..
                } = retry
                {
                    headers.append(header::SET_COOKIE, cookie);
                }
            }
            ApiError::Identity(IdentityError::Token(UserTokenError::KeysUnavailable(_)))
            | ApiError::TunnelsFull
            | ApiError::StreamsFull => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            }
            ApiError::MethodNotAllowed { allow, .. } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::RateLimited { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            _ => {}
        }
        resp
    }
}

/// Minimal HTML escaping for text put into an error page.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
