//! Webhooks: operator alerts (`sale.sold_out`, `sale.restocked`, `room.paused`,
//! `coupon.exhausted`, …) POSTed to configured URLs, signed with HMAC-SHA256.
//!
//! Emitting never blocks a shopper request: events go into a bounded channel and a background
//! task delivers them. Every node may observe the same transition (each reads the same stock);
//! an event carries a deterministic id and the first node to claim that id in the shared store
//! (`SET NX`) delivers it, so each event is delivered once per cluster. Delivery retries with
//! exponential backoff (1, 2, 4, 8 s) until the receiver answers 2xx. An `https://` receiver's
//! certificate is verified (its hook's `ca_file`, else the system's roots); one that does not
//! verify is never sent the event, and the log says why.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{header, Request};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::{mpsc, watch};

use crate::clock::now_ms;
use crate::config::{WebhookConfig, WebhookEvent};
use crate::ops::metrics::WEBHOOK_DELIVERIES;
use crate::store::keys::webhook_claim_key;
use crate::store::Store;

/// Events waiting for delivery; beyond this new ones are dropped with a warning.
const QUEUE: usize = 1_024;
/// How long a claimed event id stays claimed (a repeat within this window is not delivered).
const CLAIM_MS: u64 = 24 * 3600 * 1000;
/// Waits between delivery attempts.
const BACKOFF: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
];
/// How long one delivery attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// One event.
#[derive(Debug, Clone)]
pub struct Event {
    /// Event type.
    pub kind: WebhookEvent,
    /// Deterministic id: every node observing the same transition computes the same id.
    pub id: String,
    /// Event details.
    pub data: Value,
}

/// The handle code emits events through. Cheap to clone; a no-op without configured webhooks.
#[derive(Clone, Default)]
pub struct Webhooks {
    tx: Option<mpsc::Sender<Event>>,
    /// The delivery side, until [`Webhooks::run`] takes it.
    pending: Arc<std::sync::Mutex<Option<Delivery>>>,
}

/// The configured hooks and the receiving end of the event queue.
type Delivery = (Vec<WebhookConfig>, mpsc::Receiver<Event>);

impl Webhooks {
    /// Queues an event for delivery without waiting.
    pub fn emit(&self, kind: WebhookEvent, id: String, data: Value) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send(Event { kind, id, data }).is_err() {
            tracing::warn!(kind = kind.as_str(), "webhook queue full; event dropped");
        }
    }
}

impl Webhooks {
    /// A handle for `hooks` (a no-op when empty); delivery starts with [`Webhooks::run`].
    pub fn new(hooks: &[WebhookConfig]) -> Self {
        if hooks.is_empty() {
            return Self::default();
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            tx: Some(tx),
            pending: Arc::new(std::sync::Mutex::new(Some((hooks.to_vec(), rx)))),
        }
    }

    /// Delivers events until shutdown (returns at once without webhooks or when already run).
    pub async fn run(self, store: Arc<dyn Store>, shutdown: watch::Receiver<bool>) {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((hooks, rx)) = pending {
            deliver_loop(hooks, store, rx, shutdown).await;
        }
    }
}

async fn deliver_loop(
    hooks: Vec<WebhookConfig>,
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<Event>,
    mut shutdown: watch::Receiver<bool>,
) {
    // One client per hook: each verifies its receiver against its own `ca_file` (or the
    // system's roots). A hook whose settings cannot be made is left out, and says why.
    let hooks: Vec<(WebhookConfig, HookClient)> = hooks
        .into_iter()
        .filter_map(|hook| match hook_client(&hook) {
            Ok(client) => Some((hook, client)),
            Err(e) => {
                tracing::error!(url = %hook.url, error = %e, "webhook cannot be delivered");
                None
            }
        })
        .collect();
    loop {
        let event = tokio::select! {
            e = rx.recv() => match e { Some(e) => e, None => return },
            _ = shutdown.changed() => return,
        };
        let subscribed: Vec<&(WebhookConfig, HookClient)> = hooks
            .iter()
            .filter(|(h, _)| h.events().any(|e| e == event.kind))
            .collect();
        if subscribed.is_empty() {
            continue;
        }
        let key = webhook_claim_key(&event.id);
        match store.claim_once(&key, CLAIM_MS, now_ms()).await {
            Ok(true) => {}
            Ok(false) => continue, // another node delivers it
            Err(e) => {
                tracing::warn!(error = %e, id = %event.id, "cannot claim webhook event; not delivered");
                continue;
            }
        }
        let body = Bytes::from(
            json!({ "id": event.id, "type": event.kind.as_str(), "at": now_ms() / 1000, "data": event.data })
                .to_string(),
        );
        for (hook, client) in subscribed {
            tokio::spawn(deliver(
                client.clone(),
                hook.clone(),
                event.kind.as_str(),
                event.id.clone(),
                body.clone(),
            ));
        }
    }
}

/// The `Rushgate-Signature` header value: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`.
pub fn signature(secret: &[u8], t: u64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return format!("t={t},v1="),
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={t},v1={hex}")
}

/// The client of one hook: plain HTTP or verified HTTPS.
type HookClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// A client for `hook`'s receiver: HTTPS verified against its `ca_file` or the system's roots
/// (name checked, TLS 1.2+), plain HTTP for an `http://` url.
fn hook_client(hook: &WebhookConfig) -> Result<HookClient, String> {
    let roots = crate::tls::roots(hook.ca_file.as_deref(), "ca_file")?;
    let tls = crate::tls::client_config(roots, None)?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// An error with its causes (hyper's client says only "client error (Connect)" at the top;
/// the cause says, e.g., that the certificate did not verify and why).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

async fn deliver(
    client: HookClient,
    hook: WebhookConfig,
    kind: &'static str,
    id: String,
    body: Bytes,
) {
    for attempt in 0..=BACKOFF.len() {
        let t = now_ms() / 1000;
        let req = Request::post(hook.url.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .header("rushgate-event", kind)
            .header("rushgate-delivery", id.as_str())
            .header(
                "rushgate-signature",
                signature(hook.secret.0.as_bytes(), t, &body),
            )
            .body(Full::new(body.clone()));
        let Ok(req) = req else {
            tracing::warn!(url = %hook.url, "webhook url unusable");
            return;
        };
        match tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(req)).await {
            Ok(Ok(resp)) if resp.status().is_success() => {
                metrics::counter!(WEBHOOK_DELIVERIES, "event" => kind, "outcome" => "delivered")
                    .increment(1);
                return;
            }
            Ok(Ok(resp)) => {
                tracing::warn!(url = %hook.url, status = %resp.status(), attempt, "webhook refused")
            }
            Ok(Err(e)) => {
                tracing::warn!(url = %hook.url, error = %with_causes(&e), attempt, "webhook failed")
            }
            Err(_) => tracing::warn!(url = %hook.url, attempt, "webhook timed out"),
        }
        if let Some(wait) = BACKOFF.get(attempt) {
            tokio::time::sleep(*wait).await;
        }
    }
    metrics::counter!(WEBHOOK_DELIVERIES, "event" => kind, "outcome" => "gave_up").increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_of_timestamp_and_body() {
        let s = signature(b"secret", 1_700_000_000, b"{}");
        assert!(s.starts_with("t=1700000000,v1="));
        assert_eq!(s.len(), "t=1700000000,v1=".len() + 64);
        assert_ne!(s, signature(b"other", 1_700_000_000, b"{}"));
    }
}
