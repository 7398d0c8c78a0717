//! A shopper's place in a room: join, locate a ticket, resolve a pre-queue ticket at the
//! opening, claim an admitted session and sign its pass, the fail-open rule, and what a place
//! answer says (ETA, countdown, poll interval, remaining stock) and what the public room status
//! reveals (the drop's seed only once the opening froze the pre-queue).
//!
//! Functions of the room, the store and one `now` read per request; no HTTP type. The JSON
//! API, the proxy's waiting page and its auto-join all go through [`Places`].
//!
//! A room with `pow` on asks for a proof of work ([`super::pow`]) at the one point where a
//! new place would be made, after the presented ticket's place (when it still stands) has been
//! answered: a shopper holding a place, waiting or admitted, is never asked, and a ticket whose
//! place is gone cannot be used to skip the work.
//!
//! A poll of a waiting ticket is answered from the room's cached snapshot: verify the ticket's
//! HMAC, locate its sequence number, buffer a seen-record. Only a ticket at or past the serving
//! watermark (admitted, or evicted at the head) asks the store, once, to claim its session.

use std::net::IpAddr;

use serde::Serialize;

use super::drops;
use super::group::Groups;
use super::pow::{Challenge, Challenges, PowError, Work};
use super::room::{Eta, Room};
use super::schedule::{rfc3339, Phase, Schedule};
use super::snapshot::Located;
use crate::config::{OnStoreError, PowMode, RoomMode};
use crate::id::Identity;
use crate::ops::metrics::{POW_CHALLENGES, POW_REFUSED, POW_SOLVED};
use crate::pass::PassClaims;
use crate::pass::{
    Holder, KeyError, PassIssuer, TicketClaims, TicketSigner, TokenError, UserId, UserTokenError,
    UserTokens,
};
use crate::store::keys::pow_claim_key;
use crate::store::{
    Claimed, EndedBy, GroupHold, JoinOutcome, LeaveOutcome, Lookup, Revocation, RevokeReason,
    RoomStatus, Store, StoreError, TransferClaim, TransferOffer, GROUP_HOLD_MARGIN_MS,
};

/// A ticket older than this is refused even with a valid signature: a place is not held for
/// days. Also the ticket cookie's lifetime.
pub const TICKET_MAX_AGE_SECS: u64 = 24 * 3600;

/// How long nodes remember a revocation: as long as the longest-lived ticket it could refuse
/// (passes live no longer than a session, which is shorter).
pub const REVOCATION_KEEP_MS: u64 = TICKET_MAX_AGE_SECS * 1000;

/// How long a transfer code works.
pub const TRANSFER_CODE_TTL_SECS: u64 = 120;

/// Characters of a transfer code: no 0/O, 1/I/L, so a code read aloud or typed is unambiguous.
const CODE_ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
/// Characters in a transfer code: 31^10 ≈ 2^49.5 codes, valid two minutes each.
const CODE_LEN: usize = 10;

/// Why a place could not be worked out. Outcomes a shopper may meet (closed, expired, sold
/// out) are [`PlaceState`]s, not errors.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    /// The ticket presented is forged, for another room, or too old.
    #[error("invalid ticket: {0}")]
    BadTicket(#[from] TokenError),
    /// The store failed and the room's rule says not to fail open.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The pass could not be signed.
    #[error("signing a pass: {0}")]
    Pass(#[from] KeyError),
    /// Who the shopper is could not be established.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The ticket's place moved to another device: this ticket no longer holds it.
    #[error("this place moved to another device; this ticket no longer holds it")]
    Transferred,
    /// The ticket holds no place to act on (left, evicted or ended).
    #[error("this ticket holds no place (it left, was evicted or its session ended)")]
    NoPlace,
    /// The transfer code is unknown, expired or used.
    #[error("unknown transfer code: it expired, was used already, or never existed")]
    UnknownCode,
    /// The place changed holder or ended after the code was made; the code is spent.
    #[error("the place moved or ended after this code was made; ask for a new code")]
    StaleCode,
    /// The room asks for a proof of work before a new place and none came: solve this
    /// challenge and ask again with the answer. Nothing changed.
    #[error("a proof of work is needed before a new place ({} leading zero bits)", .0.difficulty)]
    WorkNeeded(Challenge),
    /// The proof of work presented was refused (see [`PowError`]). Nothing changed.
    #[error(transparent)]
    WorkRefused(#[from] PowError),
    /// The store did not answer a new anonymous place's join, which may still have made the
    /// place. `ticket` names it (a pending ticket, see [`TicketClaims::PENDING`]): a join
    /// that presents it finds that place, or makes it when the first attempt did not, so the
    /// retry never makes a second one.
    #[error("{error}")]
    Pending {
        /// The failure.
        error: StoreError,
        /// The ticket to retry with.
        ticket: String,
    },
    /// The store did not answer a transfer claim, which may still have moved the place.
    /// Repeating the claim with `claim_id` gets that move if it was made (or makes it).
    #[error("{error}")]
    ClaimPending {
        /// The failure.
        error: StoreError,
        /// The claim id to retry with.
        claim_id: String,
    },
}

/// How long a pending ticket ([`TicketClaims::PENDING`]) may complete its join: a retry
/// comes within seconds; an old one is a stale cookie and starts over (a new place, with a
/// proof of work where the room asks for one).
pub const PENDING_TICKET_SECS: u64 = 600;

/// How long a solved challenge's claim outlives the challenge: a node whose clock runs behind
/// still finds the claim while it takes the challenge for unexpired.
const POW_CLAIM_MARGIN_MS: u64 = 30_000;

/// State of a place, as the JSON contract names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlaceState {
    /// In line.
    Waiting,
    /// Admitted: the place carries a pass.
    Admitted,
    /// The place is gone (left, evicted, session over).
    Expired,
    /// The room takes nobody now.
    Closed,
    /// The sale behind the room has nothing left and nothing that could come back.
    SoldOut,
    /// In a scheduled drop's pre-queue: waits on a countdown; the place in line is drawn at
    /// opening.
    Prequeue,
    /// The place moved to another device: this ticket no longer holds it.
    Transferred,
    /// Admitted, but the shopper holds its group's most sessions in other rooms already: the
    /// admission is kept, and the pass comes once one of those sessions ends (or the shopper
    /// gives this place up with `leave`).
    Held,
}

impl PlaceState {
    /// The JSON name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            PlaceState::Waiting => "waiting",
            PlaceState::Admitted => "admitted",
            PlaceState::SoldOut => "sold_out",
            PlaceState::Closed => "closed",
            PlaceState::Expired => "expired",
            PlaceState::Prequeue => "prequeue",
            PlaceState::Transferred => "transferred",
            PlaceState::Held => "held",
        }
    }
}

/// What the rules decided about one place, before it is rendered.
#[derive(Debug)]
pub struct Place {
    /// Where the place stands.
    pub state: PlaceState,
    /// The (re-)signed ticket of the place, when it has one.
    pub ticket: Option<String>,
    /// Position in line (1 = next), 0 when not waiting.
    pub position: u64,
    /// The pass and its expiry (unix seconds), once admitted.
    pub pass: Option<(String, u64)>,
}

impl Place {
    fn without_ticket(state: PlaceState) -> Self {
        Place {
            state,
            ticket: None,
            position: 0,
            pass: None,
        }
    }

    fn with_ticket(state: PlaceState, ticket: String) -> Self {
        Place {
            state,
            ticket: Some(ticket),
            position: 0,
            pass: None,
        }
    }
}

/// A place found or made by [`Places::enter`].
#[derive(Debug)]
pub struct Entered {
    /// The place.
    pub place: Place,
    /// Whether this call made it (a new place in line or an instant admission).
    pub created: bool,
}

/// The ticket a request presented to [`Places::enter`].
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    /// The ticket token.
    pub token: &'a str,
    /// Whether an invalid token is an error (a bearer token the client chose to send) or is
    /// simply replaced by a new place (a stale cookie).
    pub strict: bool,
}

/// Who holds a place: its identity in the store, its holder generation (raised when the place
/// moves to another device or its session ends, so older tickets and passes stop working),
/// and the shop's user id when the shop vouched for the shopper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shopper {
    /// Identity in the store (the member of the room's queue).
    pub id: Identity,
    /// Holder generation.
    pub gen: u32,
    /// The shop's user id (a verified user token's `sub`).
    pub uid: Option<UserId>,
}

impl Shopper {
    /// A new anonymous shopper (random identity).
    pub fn anonymous() -> Self {
        Self::new(TicketSigner::anonymous_identity(), None)
    }

    /// The shopper of `id` at generation 0.
    pub fn new(id: Identity, uid: Option<UserId>) -> Self {
        Shopper { id, gen: 0, uid }
    }

    /// The holder of a verified ticket.
    pub fn of_ticket(claims: &TicketClaims) -> Self {
        Shopper {
            id: claims.id.clone(),
            gen: claims.gen,
            uid: claims.uid.clone(),
        }
    }

    fn holder(&self) -> Holder<'_> {
        Holder {
            sub: self.id.as_str(),
            gen: self.gen,
            uid: self.uid.as_ref().map(UserId::as_str),
        }
    }
}

/// Why a join's claim of who the shopper is was refused. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// `[identity]` has a key, so a bare `user` key (which anyone may send) is refused.
    #[error(
        "this room identifies shoppers by a shop-signed `user_token`; a bare `user` key is refused"
    )]
    UserKeyRefused,
    /// `[identity]` requires every join to carry a user token.
    #[error("a shop-signed `user_token` is required to join")]
    TokenRequired,
    /// A user token was sent but no key is configured to verify it.
    #[error("`user_token` cannot be checked: this deployment has no [identity] key")]
    NoIdentityKey,
    /// The user token is forged, expired, for another audience, or unreadable.
    #[error("invalid `user_token`: {0}")]
    Token(#[from] UserTokenError),
}

/// Who a join says the shopper is, checked: `user_token` (verified; joins as its `sub`),
/// else a bare `user` key (trusted as sent, only without an `[identity]` key), else nobody
/// in particular (`None`: a random identity, when anonymous joins are allowed). Both map a shop user id to
/// the same identity, so a shop that moves from user keys to tokens keeps its shoppers'
/// places.
pub async fn identify(
    tokens: Option<&UserTokens>,
    signer: &TicketSigner,
    user: Option<&str>,
    user_token: Option<&str>,
    now_secs: u64,
) -> Result<Option<Shopper>, IdentityError> {
    match (tokens, user_token, user) {
        (Some(tokens), Some(token), _) => {
            let uid = tokens.verify(token, now_secs).await?;
            Ok(Some(Shopper::new(
                signer.user_identity(uid.as_str()),
                Some(uid),
            )))
        }
        (None, Some(_), _) => Err(IdentityError::NoIdentityKey),
        (Some(_), None, Some(_)) => Err(IdentityError::UserKeyRefused),
        (None, None, Some(user)) => Ok(Some(Shopper::new(signer.user_identity(user), None))),
        (_, None, None) => Ok(None),
    }
}

/// Eta of nothing to wait for.
const NO_ETA: Eta = Eta {
    p50: None,
    p90: None,
};

/// The ETA pair of a place answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EtaBody {
    /// Median seconds to admission.
    pub p50: Option<u64>,
    /// 90th-percentile seconds to admission.
    pub p90: Option<u64>,
}

/// The answer of join and position (field names are the API contract).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlaceBody {
    room: String,
    ticket: Option<String>,
    /// Where the place stands.
    pub state: PlaceState,
    /// Position in line (1 = next).
    pub position: u64,
    /// People ahead.
    pub ahead: u64,
    /// ETA range in seconds.
    pub eta_seconds: EtaBody,
    /// When to poll again.
    pub poll_after_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pass: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pass_expires_at: Option<u64>,
    /// Units of the room's sale still available (absent for a room that sells nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
    /// The room's message to waiters.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Scheduled drop, before the opening (pre-queue, or closed until then): when it opens
    /// (RFC 3339) and how long until then by the server's clock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opens_at: Option<String>,
    /// Milliseconds until the opening.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opens_in_ms: Option<u64>,
}

/// The admission rules with what they need: the store, the ticket and pass signers, the
/// proof-of-work challenges, and the store-outage rule. Cheap to build per request from
/// borrowed handles.
pub struct Places<'a> {
    /// Room storage.
    pub store: &'a dyn Store,
    /// Ticket signer / verifier.
    pub tickets: &'a TicketSigner,
    /// Proof-of-work challenge issuer / verifier.
    pub challenges: &'a Challenges,
    /// Pass signer / verifier.
    pub passes: &'a PassIssuer,
    /// Groups of rooms (a shopper's session cap across a group).
    pub groups: &'a Groups,
    /// What a join or claim does when the store is unavailable.
    pub on_store_error: OnStoreError,
    /// Whether a join without a user token may make a place with a random identity (false
    /// with `identity.required`).
    pub anonymous_joins: bool,
}

impl Places<'_> {
    /// Verifies a ticket for `room`: signature, room, age.
    pub fn verify_ticket(
        &self,
        room: &Room,
        token: &str,
        now_secs: u64,
    ) -> Result<TicketClaims, TokenError> {
        let claims = self.tickets.verify(token)?;
        if claims.room != room.id.as_str() {
            return Err(TokenError::WrongRoom(claims.room));
        }
        if now_secs.saturating_sub(claims.iat) > TICKET_MAX_AGE_SECS {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// Gives up the place of a (verified) ticket: leaves the line or ends the session. A
    /// ticket of an older holder generation (the place moved on) changes nothing. Ending a
    /// session revokes its passes: on this node at once, on the others from their next
    /// refresh.
    pub async fn leave(
        &self,
        room: &Room,
        claims: &TicketClaims,
        now: u64,
    ) -> Result<LeaveOutcome, PlaceError> {
        if let Some(reason) = room.revoked.check(&claims.id, claims.gen) {
            return Err(revoked_error(reason));
        }
        let until = now + REVOCATION_KEEP_MS;
        let outcome = self
            .store
            .end(&room.id, &claims.id, EndedBy::Holder(claims.gen), until)
            .await?;
        if outcome != LeaveOutcome::Moved {
            room.sessions.forget(claims.id.as_str());
        }
        if outcome == LeaveOutcome::EndedSession {
            self.release_group_hold(room, claims.id.as_str(), now).await;
        }
        match outcome {
            LeaveOutcome::EndedSession => {
                room.revoked.apply(&[Revocation {
                    identity: claims.id.to_string(),
                    gen: claims.gen + 1,
                    reason: RevokeReason::Ended,
                    until_ms: until,
                }]);
                Ok(outcome)
            }
            LeaveOutcome::Moved => Err(PlaceError::Transferred),
            _ => Ok(outcome),
        }
    }

    /// Ends `identity`'s place or session as the operator (admin call, or the shop's
    /// `Rushgate-Session: end`): frees the slot and revokes every pass of the identity made so
    /// far, on every node from its next refresh.
    pub async fn end_session(
        &self,
        room: &Room,
        identity: &str,
        now: u64,
    ) -> Result<LeaveOutcome, PlaceError> {
        let outcome = self
            .store
            .end(
                &room.id,
                identity,
                EndedBy::Operator,
                now + REVOCATION_KEEP_MS,
            )
            .await?;
        room.sessions.forget(identity);
        if outcome == LeaveOutcome::EndedSession {
            self.release_group_hold(room, identity, now).await;
        }
        Ok(outcome)
    }

    /// Verifies an admission pass for `room`: signature, issuer, audience, time, room, and that
    /// it was not revoked (its session ended or its place moved). Local: no store call.
    pub fn check_pass(
        &self,
        room: &Room,
        token: &str,
    ) -> Result<std::sync::Arc<PassClaims>, TokenError> {
        let claims = self.passes.verify_for_room(token, room.id.as_str())?;
        if room.revoked.refuses(&claims) {
            return Err(TokenError::Revoked);
        }
        Ok(claims)
    }

    /// Offers the place of a verified ticket for transfer: a one-time code (and how long it
    /// works) that moves the place to whichever device claims it first, on any node.
    pub async fn offer_transfer(
        &self,
        room: &Room,
        claims: &TicketClaims,
        now: u64,
    ) -> Result<(String, u64), PlaceError> {
        if let Some(reason) = room.revoked.check(&claims.id, claims.gen) {
            return Err(revoked_error(reason));
        }
        let uid = claims.uid.as_ref().map_or("", UserId::as_str);
        // A clash of two random 10-character codes within two minutes is all but impossible;
        // retrying covers it anyway.
        for _ in 0..3 {
            let code = transfer_code();
            let offer = self
                .store
                .offer_transfer(
                    &room.id,
                    &claims.id,
                    claims.gen,
                    uid,
                    &code,
                    TRANSFER_CODE_TTL_SECS * 1000,
                    now,
                )
                .await?;
            match offer {
                TransferOffer::Offered => return Ok((code, TRANSFER_CODE_TTL_SECS)),
                TransferOffer::Moved => return Err(PlaceError::Transferred),
                TransferOffer::Absent => return Err(PlaceError::NoPlace),
                TransferOffer::Taken => continue,
            }
        }
        Err(PlaceError::Store(StoreError::Protocol(
            "no free transfer code after 3 tries".into(),
        )))
    }

    /// Claims a transfer code: the place moves to this device (same position, a new ticket of
    /// the next holder generation; an admitted place's pass moves too) and every ticket and
    /// pass of the old holder stops working (here at once, elsewhere from the next refresh).
    ///
    /// `claim_id` names this claim: the one a client repeats after a 503 (it gets the move
    /// the first attempt made, if it made one), or `None` for a new claim, named here. A
    /// claim the store did not answer is [`PlaceError::ClaimPending`] with the id to repeat.
    pub async fn claim_transfer(
        &self,
        room: &Room,
        code: &str,
        claim_id: Option<&str>,
        pass: Option<&str>,
        now: u64,
    ) -> Result<Place, PlaceError> {
        let code = normalize_code(code).ok_or(PlaceError::UnknownCode)?;
        let until = now + REVOCATION_KEEP_MS;
        let claim_id = match claim_id {
            Some(id) => id.to_string(),
            None => uuid::Uuid::new_v4().simple().to_string(),
        };
        let moved = match self
            .store
            .claim_transfer(&room.id, &code, &claim_id, now, until)
            .await
            .map_err(|error| match error {
                StoreError::Unavailable(_) => PlaceError::ClaimPending { error, claim_id },
                other => other.into(),
            })? {
            TransferClaim::Moved(t) => t,
            TransferClaim::Unknown => return Err(PlaceError::UnknownCode),
            TransferClaim::Stale => return Err(PlaceError::StaleCode),
        };
        room.revoked.apply(&[Revocation {
            identity: moved.identity.clone(),
            gen: moved.gen,
            reason: RevokeReason::Transferred,
            until_ms: until,
        }]);
        let id = Identity::parse(&moved.identity).ok_or_else(|| {
            PlaceError::Store(StoreError::Protocol(
                "transfer of a foreign identity".into(),
            ))
        })?;
        let position = match room.locate(moved.seq) {
            Located::Waiting { position } => position,
            _ => 1,
        };
        let claims = TicketClaims {
            room: room.id.as_str().to_string(),
            id,
            seq: moved.seq,
            iat: now / 1000,
            pos: if moved.admitted { 1 } else { position },
            gen: moved.gen,
            uid: UserId::parse(&moved.uid),
        };
        let ticket = self.tickets.sign(&claims);
        self.locate(room, &claims, ticket, pass, now).await
    }

    /// Finds or makes the place of a shopper: the place of the ticket presented (a strict one
    /// must be valid; an invalid lenient one is replaced), or a new place for `shopper` (a
    /// random one when `None`). `pass` is the pass the shopper already holds for the room.
    /// Before a new place is made, the room's proof-of-work rule is applied to `work` (see
    /// [`Places::check_work`]); answering a place that stands never asks for work.
    pub async fn enter(
        &self,
        room: &Room,
        presented: Option<Presented<'_>>,
        pass: Option<&str>,
        shopper: Option<Shopper>,
        work: Work<'_>,
        now: u64,
    ) -> Result<Entered, PlaceError> {
        let now_secs = now / 1000;
        let existing = |place| Entered {
            place,
            created: false,
        };
        let phase = Schedule::of(&room.config).phase(now);
        if matches!(phase, Phase::Closed | Phase::NotYetOpen) {
            return Ok(existing(Place::without_ticket(PlaceState::Closed)));
        }
        if shopper.is_none() {
            let claims = match presented {
                Some(p) if p.strict => Some(self.verify_ticket(room, p.token, now_secs)?),
                Some(p) => self.verify_ticket(room, p.token, now_secs).ok(),
                None => None,
            };
            if let Some(claims) = claims {
                let token = self.tickets.sign(&claims);
                let place = self.locate(room, &claims, token, pass, now).await?;
                if place.state != PlaceState::Expired {
                    return Ok(existing(place));
                }
            }
        }

        if phase == Phase::Ended {
            // Places already held were answered above; no new ones after closes_at.
            return Ok(existing(Place::without_ticket(PlaceState::Closed)));
        }
        if room.stock_gate().is_some_and(|g| g.sold_out) {
            // Nothing to queue for: no place is made (a restock reopens joining).
            return Ok(existing(Place::without_ticket(PlaceState::SoldOut)));
        }
        let minted = shopper.is_none();
        if minted && !self.anonymous_joins {
            return Err(PlaceError::Identity(IdentityError::TokenRequired));
        }
        // An anonymous shopper is named before anything is written: when the store does not
        // answer, the 503 carries a ticket for this identity, and the retry finds what the
        // first attempt did (see `PlaceError::Pending`).
        let shopper = shopper.unwrap_or_else(Shopper::anonymous);
        let pending = |error: PlaceError| match error {
            PlaceError::Store(error @ StoreError::Unavailable(_)) if minted => {
                PlaceError::Pending {
                    error,
                    ticket: self.sign(room, &shopper, 0, now_secs, TicketClaims::PENDING),
                }
            }
            other => other,
        };
        self.check_work(room, work, now).await.map_err(pending)?;
        if room.config.mode == RoomMode::Passthrough {
            let place = self.passthrough(room, &shopper, now)?;
            return Ok(Entered {
                place,
                created: true,
            });
        }
        self.join_store(room, shopper.clone(), minted, now)
            .await
            .map_err(pending)
    }

    /// Joins `shopper` in the store and renders the outcome (the store's failure follows the
    /// room's outage rule).
    async fn join_store(
        &self,
        room: &Room,
        mut shopper: Shopper,
        minted: bool,
        now: u64,
    ) -> Result<Entered, PlaceError> {
        let now_secs = now / 1000;
        let outcome = match self
            .store
            .join_as(&room.id, &shopper.id, minted, &room.params_now(), now)
            .await
        {
            Ok(joined) => {
                // An identity whose place moved or whose session ended holds a later
                // generation: its new ticket carries it, or every node would refuse it.
                shopper.gen = joined.gen;
                joined.outcome
            }
            Err(e) => return self.store_failed_join(room, &shopper, e, now),
        };
        let (place, created) = match outcome {
            JoinOutcome::Closed => (Place::without_ticket(PlaceState::Closed), false),
            JoinOutcome::Prequeue { created } => {
                // No seq yet: the first poll after the opening learns it from the store.
                let ticket = self.sign(room, &shopper, 0, now_secs, 0);
                (Place::with_ticket(PlaceState::Prequeue, ticket), created)
            }
            JoinOutcome::Waiting { seq, created } => {
                let position = match room.locate(seq) {
                    Located::Waiting { position } => position,
                    _ => 1,
                };
                room.record_seen(seq, now);
                let ticket = self.sign(room, &shopper, seq, now_secs, position);
                let place = Place {
                    position,
                    ..Place::with_ticket(PlaceState::Waiting, ticket)
                };
                (place, created)
            }
            JoinOutcome::Admitted { seq, created } => {
                room.note_admitted(seq);
                let ticket = self.sign(room, &shopper, seq, now_secs, 1);
                let place = self.admitted(room, &shopper, ticket, 1, now).await?;
                (place, created)
            }
        };
        Ok(Entered { place, created })
    }

    /// Where a verified ticket stands now; asks the store only for a ticket past the serving
    /// watermark whose holder has no valid pass (`pass`) yet, or a pre-queue ticket after the
    /// opening. A waiter is recorded as seen (alive).
    pub async fn locate(
        &self,
        room: &Room,
        claims: &TicketClaims,
        ticket: String,
        pass: Option<&str>,
        now: u64,
    ) -> Result<Place, PlaceError> {
        self.locate_noting(room, claims, ticket, pass, now, true)
            .await
    }

    /// [`Places::locate`], recording the waiter as seen only when `seen` (an event stream looks
    /// at every refresh, and records liveness once per liveness interval instead).
    pub async fn locate_noting(
        &self,
        room: &Room,
        claims: &TicketClaims,
        ticket: String,
        pass: Option<&str>,
        now: u64,
        seen: bool,
    ) -> Result<Place, PlaceError> {
        let shopper = Shopper::of_ticket(claims);
        match room.revoked.check(&claims.id, claims.gen) {
            Some(RevokeReason::Transferred) => {
                return Ok(Place::without_ticket(PlaceState::Transferred))
            }
            Some(RevokeReason::Ended) => return Ok(Place::without_ticket(PlaceState::Expired)),
            None => {}
        }
        match room.config.mode {
            RoomMode::Closed => return Ok(Place::without_ticket(PlaceState::Closed)),
            RoomMode::Passthrough => return self.passthrough(room, &shopper, now),
            RoomMode::Queue | RoomMode::SafetyNet => {}
        }
        if claims.is_pending() {
            return self.resolve_pending(room, claims, now).await;
        }
        if claims.seq == 0 {
            if let Some(opens) = room.params.prequeue_until_ms {
                if now < opens && !room.snapshot().state.prequeue.frozen {
                    // Before the opening a pre-queue ticket is answered from the cache.
                    return Ok(Place::with_ticket(PlaceState::Prequeue, ticket));
                }
                return self.resolve_prequeue(room, claims, pass, now).await;
            }
        }
        match room.locate(claims.seq) {
            Located::Waiting { position } => {
                if room.snapshot().state.status == RoomStatus::Closed {
                    return Ok(Place::without_ticket(PlaceState::Closed));
                }
                if seen {
                    room.record_seen(claims.seq, now);
                }
                // A waiter may hold a pass ahead of the cached queue: admitted on a lease
                // during an outage, before the store's queue has caught up.
                let ticket = match self.held_pass(room, pass, &shopper, ticket) {
                    Ok(place) => return Ok(place),
                    Err(ticket) => ticket,
                };
                let ticket = if room.outage.is_down() {
                    match self.admit_on_lease(room, &shopper, ticket, position, now)? {
                        Ok(place) => return Ok(place),
                        Err(ticket) => ticket,
                    }
                } else {
                    ticket
                };
                let sold_out = room.stock_gate().is_some_and(|g| g.sold_out);
                // A sold-out waiter keeps its place: a restock puts it back in line.
                let state = if sold_out {
                    PlaceState::SoldOut
                } else {
                    PlaceState::Waiting
                };
                Ok(Place {
                    position,
                    ..Place::with_ticket(state, ticket)
                })
            }
            Located::Gone => Ok(Place::with_ticket(PlaceState::Expired, ticket)),
            Located::PastHead => {
                // A session this node claimed: answered from memory (cheaper than verifying
                // the pass the shopper presents, and no store call for one that presents none).
                let ticket = match self.remembered(room, &shopper, ticket, now) {
                    Ok(place) => return Ok(place),
                    Err(ticket) => ticket,
                };
                match self.held_pass(room, pass, &shopper, ticket) {
                    Ok(place) => Ok(place),
                    Err(ticket) => self.admitted(room, &shopper, ticket, claims.pos, now).await,
                }
            }
        }
    }

    /// A pending ticket (a join the store did not answer): joins its identity again, which
    /// answers the place the first attempt made, if it made one, and makes it otherwise.
    /// Only the join that issued the ticket passed the room's checks (proof of work
    /// included), so an old pending ticket is expired rather than a way around them.
    async fn resolve_pending(
        &self,
        room: &Room,
        claims: &TicketClaims,
        now: u64,
    ) -> Result<Place, PlaceError> {
        if (now / 1000).saturating_sub(claims.iat) > PENDING_TICKET_SECS {
            return Ok(Place::without_ticket(PlaceState::Expired));
        }
        let shopper = Shopper::of_ticket(claims);
        match self.join_store(room, shopper, false, now).await {
            Ok(entered) => Ok(entered.place),
            Err(PlaceError::Store(error @ StoreError::Unavailable(_))) => {
                Err(PlaceError::Pending {
                    error,
                    ticket: self.tickets.sign(claims),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// A pre-queue ticket (no seq) from the opening on: asks the store where its identity
    /// stands (one call) and re-issues the ticket with its seq, so later polls are answered
    /// from the cache.
    async fn resolve_prequeue(
        &self,
        room: &Room,
        claims: &TicketClaims,
        pass: Option<&str>,
        now: u64,
    ) -> Result<Place, PlaceError> {
        let shopper = Shopper::of_ticket(claims);
        let same = || self.sign(room, &shopper, 0, claims.iat, 0);
        match self
            .store
            .lookup(&room.id, &claims.id, &room.params, now)
            .await?
        {
            Lookup::Prequeue => Ok(Place::with_ticket(PlaceState::Prequeue, same())),
            Lookup::Absent => Ok(Place::with_ticket(PlaceState::Expired, same())),
            Lookup::Admitted => match self.held_pass(room, pass, &shopper, same()) {
                Ok(place) => Ok(place),
                Err(ticket) => self.admitted(room, &shopper, ticket, 0, now).await,
            },
            Lookup::Waiting { seq } => {
                let position = match room.locate(seq) {
                    Located::Waiting { position } => position,
                    _ => 1,
                };
                room.record_seen(seq, now);
                let ticket = self.sign(room, &shopper, seq, claims.iat, position);
                Ok(Place {
                    position,
                    ..Place::with_ticket(PlaceState::Waiting, ticket)
                })
            }
        }
    }

    /// The admitted place of a shopper whose pass (already held) is valid for this room and
    /// names the shopper's identity and generation; otherwise the ticket back, for a store
    /// claim.
    fn held_pass(
        &self,
        room: &Room,
        pass: Option<&str>,
        shopper: &Shopper,
        ticket: String,
    ) -> Result<Place, String> {
        let Some(pass) = pass else {
            return Err(ticket);
        };
        match self.passes.verify_for_room(pass, room.id.as_str()) {
            Ok(c) if c.sub == shopper.id.as_str() && c.gen == shopper.gen => Ok(Place {
                pass: Some((pass.to_string(), c.exp)),
                ..Place::with_ticket(PlaceState::Admitted, ticket)
            }),
            _ => Err(ticket),
        }
    }

    /// The admitted place of a shopper whose running session this node remembers (see
    /// [`crate::queue::SessionPasses`]), with the pass it handed out; otherwise the ticket
    /// back. The caller has checked the revocations.
    fn remembered(
        &self,
        room: &Room,
        shopper: &Shopper,
        ticket: String,
        now: u64,
    ) -> Result<Place, String> {
        match room.sessions.get(shopper.id.as_str(), shopper.gen, now) {
            Some(pass) => Ok(Place {
                pass: Some(pass),
                ..Place::with_ticket(PlaceState::Admitted, ticket)
            }),
            None => Err(ticket),
        }
    }

    /// `capped`, while the store is down: admits the shopper at `position` on the node's
    /// lease with a marked pass (see [`crate::queue::Outage::admit`]), or gives the ticket back
    /// when it must wait.
    fn admit_on_lease(
        &self,
        room: &Room,
        shopper: &Shopper,
        ticket: String,
        position: u64,
        now: u64,
    ) -> Result<Result<Place, String>, PlaceError> {
        let Some(expiry_ms) =
            room.outage
                .admit(shopper.id.as_str(), position, now, room.params.session_ms)
        else {
            return Ok(Err(ticket));
        };
        let exp = expiry_ms / 1000;
        let pass = self.passes.issue_degraded(
            room.id.as_str(),
            shopper.holder(),
            position,
            now / 1000,
            exp,
        )?;
        Ok(Ok(Place {
            pass: Some((pass, exp)),
            ..Place::with_ticket(PlaceState::Admitted, ticket)
        }))
    }

    /// Mode `passthrough`: admitted at once with a pass, no queue and no store call.
    fn passthrough(&self, room: &Room, shopper: &Shopper, now: u64) -> Result<Place, PlaceError> {
        let exp = (now + room.params.session_ms) / 1000;
        let pass = self
            .passes
            .issue_to(room.id.as_str(), shopper.holder(), 0, now / 1000, exp)?;
        let ticket = self.sign(room, shopper, 0, now / 1000, 0);
        Ok(Place {
            pass: Some((pass, exp)),
            ..Place::with_ticket(PlaceState::Admitted, ticket)
        })
    }

    /// Claims the session of an admitted identity and signs its pass; expired when the store
    /// says the admission is gone. Fails open (a pass for one session) when the store is
    /// unavailable and the rule is `fail_open`.
    async fn admitted(
        &self,
        room: &Room,
        shopper: &Shopper,
        ticket: String,
        pos: u64,
        now: u64,
    ) -> Result<Place, PlaceError> {
        if let Some(held) = self.group_hold(room, shopper, now).await? {
            return Ok(Place::with_ticket(held, ticket));
        }
        let claimed = self
            .store
            .claim_as(&room.id, &shopper.id, Some(shopper.gen), &room.params, now)
            .await;
        if matches!(claimed, Ok(Claimed::Absent | Claimed::Moved)) {
            // No session after all: the group hold just taken goes back.
            self.release_group_hold(room, shopper.id.as_str(), now)
                .await;
        }
        let mut remember = false;
        let expiry_ms = match claimed {
            Ok(Claimed::Session(expiry)) => {
                remember = true;
                expiry
            }
            Ok(Claimed::Absent) => return Ok(Place::with_ticket(PlaceState::Expired, ticket)),
            // The place moved on: this node learns why within one refresh.
            Ok(Claimed::Moved) => return Ok(Place::without_ticket(PlaceState::Transferred)),
            Err(StoreError::Unavailable(_)) if self.on_store_error == OnStoreError::FailOpen => {
                now + room.params.session_ms
            }
            Err(e @ StoreError::Unavailable(_)) if self.on_store_error == OnStoreError::Capped => {
                // Admitted by the store already (past the cached head): first in line for
                // the lease (once the pacer finds the store down), which keeps its slot until
                // the store records the session.
                return match self.admit_on_lease(room, shopper, ticket, 1, now)? {
                    Ok(place) => Ok(place),
                    Err(_) => Err(e.into()),
                };
            }
            Err(e) => return Err(e.into()),
        };
        let exp = expiry_ms / 1000;
        let pass =
            self.passes
                .issue_to(room.id.as_str(), shopper.holder(), pos, now / 1000, exp)?;
        if remember {
            // The store recorded the session: later polls of this ticket are answered here.
            room.sessions
                .remember(shopper.id.as_str(), shopper.gen, expiry_ms, &pass, exp);
        }
        Ok(Place {
            pass: Some((pass, exp)),
            ..Place::with_ticket(PlaceState::Admitted, ticket)
        })
    }

    /// The group rule before a session is claimed (see [`super::group`]): `None` when the
    /// room is in no group or the shopper's hold was granted (the claim may go on);
    /// `Some(Held)` when the shopper holds its group's most sessions elsewhere (the admission's
    /// claim window is kept open meanwhile); `Some(Expired)` when the admission is gone. With
    /// the store unreachable, `fail_open` goes on without the group (as it admits without the
    /// store); any other rule refuses (503).
    async fn group_hold(
        &self,
        room: &Room,
        shopper: &Shopper,
        now: u64,
    ) -> Result<Option<PlaceState>, PlaceError> {
        let Some(group) = self.groups.of(room.id.as_str()) else {
            return Ok(None);
        };
        // Past the session's own end (a claim made now), so the hold never lapses first.
        let until = now + room.params.session_ms + GROUP_HOLD_MARGIN_MS;
        let id = shopper.id.as_str();
        let hold = self
            .store
            .group_hold(
                &group.id,
                id,
                &room.id,
                until,
                group.max_active_per_shopper,
                now,
            )
            .await;
        match hold {
            Ok(GroupHold::Granted) => Ok(None),
            Ok(GroupHold::Held(_)) => {
                let deadline = now + room.params.idle_ms;
                if self.store.keep_claim(&room.id, id, deadline, now).await? {
                    Ok(Some(PlaceState::Held))
                } else {
                    Ok(Some(PlaceState::Expired))
                }
            }
            Err(StoreError::Unavailable(_)) if self.on_store_error == OnStoreError::FailOpen => {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Gives back `identity`'s group hold in `room` (its session ended, or was never made).
    /// Best effort: a hold that cannot be dropped now lapses at its session's end, which only
    /// makes a held place wait longer.
    async fn release_group_hold(&self, room: &Room, identity: &str, now: u64) {
        let Some(group) = self.groups.of(room.id.as_str()) else {
            return;
        };
        if let Err(e) = self
            .store
            .group_release(&group.id, identity, &room.id, now)
            .await
        {
            tracing::warn!(room = %room.id, group = %group.id, error = %e, "could not give back a group hold; it lapses with the session");
        }
    }

    /// A join the store could not take: fail closed (the error), or fail open by admitting
    /// directly.
    fn store_failed_join(
        &self,
        room: &Room,
        shopper: &Shopper,
        error: StoreError,
        now: u64,
    ) -> Result<Entered, PlaceError> {
        if !matches!(error, StoreError::Unavailable(_))
            || self.on_store_error == OnStoreError::FailClosed
        {
            return Err(error.into());
        }
        if self.on_store_error == OnStoreError::Capped {
            // Only while the pacer finds the store down (a whole refresh failed), not after one
            // slow call: nobody to pass: a new arrival in an empty queue may take a leased slot;
            // with waiters it cannot be queued without the store (503, retry).
            if room.snapshot().state.waiting > 0 {
                return Err(error.into());
            }
            let ticket = self.sign(room, shopper, 0, now / 1000, 0);
            return match self.admit_on_lease(room, shopper, ticket, 1, now)? {
                Ok(place) => Ok(Entered {
                    place,
                    created: true,
                }),
                Err(_) => Err(error.into()),
            };
        }
        tracing::warn!(room = %room.id, "store unavailable: failing open, admitting without queueing");
        let place = self.passthrough(room, shopper, now)?;
        Ok(Entered {
            place,
            created: true,
        })
    }

    /// The proof-of-work rule before a new place: reads the room's pressure and counts the
    /// request in it; then, when the room asks for work, issues a challenge to a request
    /// without an answer ([`PlaceError::WorkNeeded`]), or verifies the answer (one hash) and
    /// claims its challenge in the store so it makes one place on any node
    /// ([`PlaceError::WorkRefused`] with [`PowError::Replayed`] for a second use). When the
    /// store cannot be reached the claim follows the room's outage rule: `fail_open` accepts
    /// the solution unclaimed. A room with `pow = "off"` returns at once.
    pub async fn check_work(
        &self,
        room: &Room,
        work: Work<'_>,
        now: u64,
    ) -> Result<(), PlaceError> {
        if room.config.pow == PowMode::Off {
            // Nothing to count either: a room without proof of work keeps no pressure state.
            return Ok(());
        }
        // Judged by the requests before it, then counted: a request's own arrival never decides
        // its price, so a lone join after a quiet spell is never asked.
        let difficulty = room.pow_difficulty(work.client, now);
        room.pressure().record(work.client, now);
        let Some(difficulty) = difficulty else {
            return Ok(());
        };
        let refused = |e: PowError| {
            metrics::counter!(POW_REFUSED, "room" => room.config.id.clone(), "reason" => e.reason())
                .increment(1);
            PlaceError::WorkRefused(e)
        };
        let Some(answer) = work.answer else {
            return Err(PlaceError::WorkNeeded(self.issue_challenge(
                room,
                work.client,
                difficulty,
                now,
            )));
        };
        let solved = self
            .challenges
            .verify(&room.id, work.client, answer.challenge, answer.nonce, now)
            .map_err(refused)?;
        let ttl = solved.expires_ms.saturating_sub(now) + POW_CLAIM_MARGIN_MS;
        let key = pow_claim_key(&room.id, &solved.id);
        match self.store.claim_once(&key, ttl, now).await {
            Ok(true) => {}
            Ok(false) => return Err(refused(PowError::Replayed)),
            Err(StoreError::Unavailable(_)) if self.on_store_error == OnStoreError::FailOpen => {
                tracing::warn!(room = %room.id, "store unavailable: accepting a proof of work without its single-use claim");
            }
            Err(e) => return Err(e.into()),
        }
        metrics::counter!(POW_SOLVED, "room" => room.config.id.clone()).increment(1);
        Ok(())
    }

    /// A new challenge for `client` at the difficulty in force now, at least the room's floor,
    /// whatever the room's mode: for a client whose answer was refused and who is to try again
    /// (pressure is not counted again).
    pub fn fresh_challenge(&self, room: &Room, client: IpAddr, now: u64) -> Challenge {
        let difficulty = room
            .pow_difficulty(client, now)
            .unwrap_or(room.config.pow_min_bits);
        self.issue_challenge(room, client, difficulty, now)
    }

    fn issue_challenge(&self, room: &Room, client: IpAddr, difficulty: u8, now: u64) -> Challenge {
        metrics::counter!(POW_CHALLENGES, "room" => room.config.id.clone()).increment(1);
        self.challenges.issue(&room.id, client, difficulty, now)
    }

    fn sign(&self, room: &Room, shopper: &Shopper, seq: u64, iat: u64, pos: u64) -> String {
        self.tickets.sign(&TicketClaims {
            room: room.id.as_str().to_string(),
            id: shopper.id.clone(),
            seq,
            iat,
            pos,
            gen: shopper.gen,
            uid: shopper.uid.clone(),
        })
    }
}

fn revoked_error(reason: RevokeReason) -> PlaceError {
    match reason {
        RevokeReason::Transferred => PlaceError::Transferred,
        RevokeReason::Ended => PlaceError::NoPlace,
    }
}

/// A fresh random transfer code.
fn transfer_code() -> String {
    use rand::Rng as _;
    let mut rng = rand::thread_rng();
    (0..CODE_LEN)
        .map(|_| char::from(CODE_ALPHABET[rng.gen_range(0..CODE_ALPHABET.len())]))
        .collect()
}

/// A code as typed (any case, spaces and dashes ignored), or `None` when it cannot be one.
fn normalize_code(code: &str) -> Option<String> {
    let code: String = code
        .chars()
        .filter(|c| !matches!(c, ' ' | '-'))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (code.len() == CODE_LEN && code.bytes().all(|b| CODE_ALPHABET.contains(&b))).then_some(code)
}

/// What the place answer says about `place` at `now`: ETA, poll interval (a countdown polls
/// about when the room opens), remaining stock, and the room's message for a reader of `lang`.
pub fn place_body(room: &Room, place: &Place, now: u64, lang: &str) -> PlaceBody {
    let eta = match place.state {
        PlaceState::Waiting => room.eta(place.position),
        // Nothing is being sold to wait for: no estimate until a restock.
        PlaceState::SoldOut | PlaceState::Prequeue => NO_ETA,
        _ => Eta {
            p50: Some(0),
            p90: Some(0),
        },
    };
    let opens_at = Schedule::of(&room.config)
        .opens_at
        .filter(|&o| place.state == PlaceState::Prequeue || now < o);
    let opens_in_ms = opens_at.map(|o| o.saturating_sub(now));
    let poll_after_ms = match opens_in_ms {
        // Countdown: poll about when the room opens (every node answers this from its cache).
        Some(ms) if place.state == PlaceState::Prequeue => {
            let until = ms.div_ceil(1000);
            room.poll_after_ms(&Eta {
                p50: Some(until),
                p90: Some(until),
            })
            .min(ms.max(1000))
        }
        _ => room.poll_after_ms(&eta),
    };
    PlaceBody {
        room: room.id.as_str().to_string(),
        ticket: place.ticket.clone(),
        state: place.state,
        position: place.position,
        ahead: place.position.saturating_sub(1),
        eta_seconds: EtaBody {
            p50: eta.p50,
            p90: eta.p90,
        },
        poll_after_ms,
        pass: place.pass.as_ref().map(|(p, _)| p.clone()),
        pass_expires_at: place.pass.as_ref().map(|(_, exp)| *exp),
        remaining: room.stock_gate().map(|g| g.remaining),
        message: room.message_for(lang),
        opens_at: opens_at.and_then(rfc3339),
        opens_in_ms,
    }
}

/// The public status of a room, from the cache: counts, settings in force, schedule phase,
/// stock, and the drop's seed commitment (the seed itself only once the opening froze the
/// pre-queue, so nobody can pick an identity that sorts first).
pub fn room_status(room: &Room, now: u64) -> serde_json::Value {
    let snap = room.snapshot();
    let s = &snap.state;
    let eta = room.eta(s.waiting.max(1));
    let gate = room.stock_gate();
    let (admit_per_minute, max_active) = room.settings_in_force(s);
    let schedule = Schedule::of(&room.config);
    let pre = s.prequeue;
    let opening_started = pre.frozen && schedule.opens_at.is_some_and(|o| now >= o);
    let phase = match schedule.phase(now) {
        Phase::Open if schedule.prequeue_opens_at.is_some() && !pre.opened() => "opening",
        other => other.as_str(),
    };
    serde_json::json!({
        "room": room.id.as_str(),
        "state": s.status.as_str(),
        "waiting": s.waiting,
        "active": s.active,
        "admit_per_minute": admit_per_minute,
        "max_active": max_active,
        "serving": s.served,
        "last_number": s.last_seq,
        "admitted_total": s.admitted_total,
        "admission_rate_per_minute": (snap.rates.p50 * 60.0).round(),
        "eta_seconds_for_last": eta.p50,
        "sold_out": gate.is_some_and(|g| g.sold_out),
        "remaining": gate.map(|g| g.remaining),
        "message": room.message_for(&room.config.default_language),
        "live_message": room.has_live_message(),
        "mode": room.config.mode.as_str(),
        "phase": phase,
        "prequeue_opens_at": schedule.prequeue_opens_at.and_then(rfc3339),
        "opens_at": schedule.opens_at.and_then(rfc3339),
        "closes_at": schedule.closes_at.and_then(rfc3339),
        "prequeue_waiting": pre.waiting,
        "prequeue_count": pre.frozen.then_some(pre.count),
        "seed_sha256": s.seed.as_deref().and_then(drops::seed_commitment),
        "seed": s.seed.as_deref().filter(|_| opening_started),
    })
}
