//! A room's message to its waiters: the configured one (`rooms[].message`, `rooms[].messages`)
//! or a live one an operator sets through the admin API, which replaces it on every node within
//! one refresh (the store keeps it with a version; each tick reports the version and a node
//! reads the message only when the version moved) and is pushed to every open event stream.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{check_message, RoomConfig};

/// The text of a room's message, with optional translations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomMessage {
    /// Shown in every language `messages` does not name.
    #[serde(default)]
    pub message: String,
    /// By language code (each one of the room's `languages`).
    #[serde(default)]
    pub messages: BTreeMap<String, String>,
}

/// Why an operator's message was refused (nothing changed).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    /// A text breaks the length or character rule.
    #[error("`{field}`: {problem}")]
    Text {
        /// `message` or `messages.<lang>`.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A translation for a language the room does not offer.
    #[error("`messages.{0}`: not one of the room's languages ({1})")]
    Language(String, String),
}

impl MessageError {
    /// The field of the request body the error is about.
    pub fn field(&self) -> String {
        match self {
            MessageError::Text { field, .. } => field.clone(),
            MessageError::Language(lang, _) => format!("messages.{lang}"),
        }
    }
}

impl RoomMessage {
    /// The room's configured message.
    pub fn configured(config: &RoomConfig) -> RoomMessage {
        RoomMessage {
            message: config.message.clone(),
            messages: config.messages.clone(),
        }
    }

    /// Checks an operator's message against the room's languages and the text rules of
    /// [`check_message`].
    pub fn check(&self, languages: &[String]) -> Result<(), MessageError> {
        check_message(&self.message).map_err(|problem| MessageError::Text {
            field: "message".into(),
            problem,
        })?;
        for (lang, text) in &self.messages {
            if !languages.contains(lang) {
                return Err(MessageError::Language(lang.clone(), languages.join(", ")));
            }
            check_message(text).map_err(|problem| MessageError::Text {
                field: format!("messages.{lang}"),
                problem,
            })?;
        }
        Ok(())
    }

    /// Nothing to show in any language: a live message like this gives the configured one
    /// back.
    pub fn is_empty(&self) -> bool {
        self.message.is_empty() && self.messages.values().all(String::is_empty)
    }

    /// The text for a reader of `lang`: its translation, else the general message.
    pub fn text_for(&self, lang: &str) -> &str {
        self.messages
            .get(lang)
            .filter(|t| !t.is_empty())
            .unwrap_or(&self.message)
    }

    /// The form kept in the store.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads the stored form; `None` for text that is not one (written by something else).
    pub fn decode(text: &str) -> Option<RoomMessage> {
        serde_json::from_str(text).ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_checked_and_read_per_language() {
        let langs = vec!["en".to_string(), "ko".to_string()];
        let m = RoomMessage {
            message: "Back at 12:00".into(),
            messages: [("ko".to_string(), "12시에 돌아옵니다".to_string())].into(),
        };
        assert_eq!(m.check(&langs), Ok(()));
        assert_eq!(m.text_for("ko"), "12시에 돌아옵니다");
        assert_eq!(m.text_for("en"), "Back at 12:00");
        assert_eq!(m.text_for("ja"), "Back at 12:00");
        assert_eq!(RoomMessage::decode(&m.encode()), Some(m));
        let ja = RoomMessage {
            messages: [("ja".to_string(), "x".to_string())].into(),
            ..RoomMessage::default()
        };
        assert_eq!(ja.check(&langs).unwrap_err().field(), "messages.ja");
        let long = RoomMessage {
            message: "x".repeat(1_001),
            ..RoomMessage::default()
        };
        assert_eq!(long.check(&langs).unwrap_err().field(), "message");
        let control = RoomMessage {
            message: "a\u{7}b".into(),
            ..RoomMessage::default()
        };
        assert!(control.check(&langs).is_err());
        assert!(RoomMessage::default().is_empty());
        assert_eq!(RoomMessage::decode("not json"), None);
    }
}
