//! `[[webhooks]]`: operator alerts POSTed to URLs, and [`WebhookEvent`], the events one can
//! subscribe to. Event names stay strings in the file so an unknown one is a validation problem
//! naming the field (not a parse error); the section hands out the parsed events.

use serde::{Deserialize, Serialize};

use super::{Problem, Secret};

/// One `[[webhooks]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Receiver URL, `https://` (certificate verified against `ca_file` or the system's
    /// roots) or `http://`.
    pub url: String,
    /// PEM file of the certificate authorities that sign an `https://` receiver's certificate
    /// (a private CA); absent: the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Event types to send, by name (see [`WebhookEvent`]); [`WebhookConfig::events`] gives them
    /// parsed.
    pub events: Vec<String>,
    /// HMAC-SHA256 key of the `Rushgate-Signature` header (≥ 16 characters).
    pub secret: Secret,
}

/// An event type a webhook can subscribe to. The serde name is the name in the config and in
/// the `type` / `Rushgate-Event` of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WebhookEvent {
    /// A scheduled room's pre-queue opened.
    #[serde(rename = "room.prequeue_opened")]
    RoomPrequeueOpened,
    /// A scheduled room opened.
    #[serde(rename = "room.opened")]
    RoomOpened,
    /// An operator paused a room.
    #[serde(rename = "room.paused")]
    RoomPaused,
    /// A sale's stock reached zero.
    #[serde(rename = "sale.sold_out")]
    SaleSoldOut,
    /// Stock was added to a sale (its total grew).
    #[serde(rename = "sale.restocked")]
    SaleRestocked,
    /// A coupon campaign issued its last coupon.
    #[serde(rename = "coupon.exhausted")]
    CouponExhausted,
}

impl WebhookEvent {
    /// Every event, in the order the docs list them.
    pub const ALL: [WebhookEvent; 6] = [
        WebhookEvent::RoomPrequeueOpened,
        WebhookEvent::RoomOpened,
        WebhookEvent::RoomPaused,
        WebhookEvent::SaleSoldOut,
        WebhookEvent::SaleRestocked,
        WebhookEvent::CouponExhausted,
    ];

    /// The event's name, identical to its serde/config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::RoomPrequeueOpened => "room.prequeue_opened",
            WebhookEvent::RoomOpened => "room.opened",
            WebhookEvent::RoomPaused => "room.paused",
            WebhookEvent::SaleSoldOut => "sale.sold_out",
            WebhookEvent::SaleRestocked => "sale.restocked",
            WebhookEvent::CouponExhausted => "coupon.exhausted",
        }
    }

    /// The event named `name` exactly (see [`WebhookEvent::as_str`]), if any.
    pub fn parse(name: &str) -> Option<WebhookEvent> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

impl WebhookConfig {
    /// The subscribed events, parsed, in the order configured; names that are not events are
    /// skipped (validation refuses them, so a validated config loses none).
    pub fn events(&self) -> impl Iterator<Item = WebhookEvent> + '_ {
        self.events.iter().filter_map(|e| WebhookEvent::parse(e))
    }

    /// URL, event and secret rules of the hook at `index`.
    pub(super) fn validate(&self, index: usize, problems: &mut Vec<Problem>) {
        let i = index;
        let https = self.url.starts_with("https://");
        if !(https || self.url.starts_with("http://")) || self.url.parse::<http::Uri>().is_err() {
            problems.push(Problem::new(
                format!("webhooks[{i}].url"),
                "must be an https:// or http:// URL",
            ));
        }
        if let Some(path) = &self.ca_file {
            if !https {
                problems.push(Problem::new(
                    format!("webhooks[{i}].ca_file"),
                    "is only used with an https:// url",
                ));
            } else if let Err(e) = crate::tls::roots(Some(path), "ca_file") {
                problems.push(Problem::new(format!("webhooks[{i}].ca_file"), e));
            }
        }
        if self.events.is_empty() {
            problems.push(Problem::new(
                format!("webhooks[{i}].events"),
                "must name at least one event",
            ));
        }
        for e in &self.events {
            if WebhookEvent::parse(e).is_none() {
                problems.push(Problem::new(
                    format!("webhooks[{i}].events"),
                    "unknown event; use room.prequeue_opened, room.opened, room.paused, sale.sold_out, sale.restocked or coupon.exhausted",
                ));
            }
        }
        if self.secret.0.len() < 16 {
            problems.push(Problem::new(
                format!("webhooks[{i}].secret"),
                "must be at least 16 characters",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_round_trip_and_unknown_names_are_problems() {
        for e in WebhookEvent::ALL {
            assert_eq!(WebhookEvent::parse(e.as_str()), Some(e));
            assert_eq!(
                serde_json::to_value(e).ok(),
                Some(serde_json::Value::from(e.as_str()))
            );
        }
        let hook = WebhookConfig {
            url: "http://127.0.0.1:9/hook".into(),
            ca_file: None,
            events: vec!["sale.sold_out".into(), "sale.sold-out".into()],
            secret: Secret("0123456789abcdef".into()),
        };
        assert_eq!(
            hook.events().collect::<Vec<_>>(),
            [WebhookEvent::SaleSoldOut]
        );
        let mut problems = Vec::new();
        hook.validate(3, &mut problems);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0]
                .to_string()
                .starts_with("webhooks[3].events: unknown event; use room.prequeue_opened,"),
            "{}",
            problems[0]
        );
    }
}
