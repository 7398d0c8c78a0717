//! An operator's control of a room, applied through the store so every node follows from its
//! next tick: the lifecycle state (pause, resume, close, drain), live pacing settings and the
//! room's live message.
//! Pausing a room announces it to the operators' webhooks.

use super::message::{MessageError, RoomMessage};
use super::room::Room;
use crate::config::WebhookEvent;
use crate::store::{RoomStatus, Store, StoreError};
use crate::webhooks::Webhooks;

/// Moves `room` to `status` for every node; a pause emits `room.paused` (one event per pause,
/// named by `now`).
pub async fn set_status(
    store: &dyn Store,
    webhooks: &Webhooks,
    room: &Room,
    status: RoomStatus,
    now: u64,
) -> Result<(), StoreError> {
    store.set_status(&room.id, status).await?;
    tracing::info!(room = %room.id, state = status.as_str(), "room state changed by operator");
    if status == RoomStatus::Paused {
        webhooks.emit(
            WebhookEvent::RoomPaused,
            format!("room.paused:{}:{now}", room.id),
            serde_json::json!({ "room": room.id.as_str() }),
        );
    }
    Ok(())
}

/// Sets the live admission rate and/or session cap of `room` for every node (`None` keeps the
/// value in force). Both must be greater than 0; the caller checks.
pub async fn set_settings(
    store: &dyn Store,
    room: &Room,
    admit_per_minute: Option<u32>,
    max_active: Option<u32>,
) -> Result<(), StoreError> {
    store
        .set_settings(&room.id, admit_per_minute, max_active)
        .await?;
    tracing::info!(room = %room.id, admit_per_minute = ?admit_per_minute, max_active = ?max_active, "room settings changed by operator");
    Ok(())
}

/// Why a live message was not set.
#[derive(Debug, thiserror::Error)]
pub enum SetMessageError {
    /// The message breaks a rule; nothing changed.
    #[error(transparent)]
    Invalid(#[from] MessageError),
    /// The store did not take it.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Sets the live message of `room` for every node (each shows it from its next refresh on,
/// and pushes it to its open event streams); an empty message gives the configured one back.
/// Returns the message's version.
pub async fn set_message(
    store: &dyn Store,
    room: &Room,
    message: &RoomMessage,
) -> Result<u64, SetMessageError> {
    message.check(&room.config.languages)?;
    let version = store.set_message(&room.id, &message.encode()).await?;
    tracing::info!(room = %room.id, version, cleared = message.is_empty(), "room message changed by operator");
    Ok(version)
}
