//! The proxy suite: rushgate in front of a real upstream HTTP server (and behind a real nginx in
//! gate mode): forwarding, streaming, bypass, cookies and headers, errors, the waiting page and
//! JSON mode, forged passes, the gate, and a crowd of shoppers.

use crate::harness;

mod crowd;
mod forwarding;
mod gate;
mod nginx;
mod paths;
mod sessions;
mod tls;
mod upstream;
mod waiting;
mod websocket;

use std::net::SocketAddr;
use std::time::Duration;

use rushgate::config::RoomConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A test room in front of `upstream`: `/products/*` protected, `*.css` bypassed.
pub fn proxied_room(id: &str, upstream: &str) -> RoomConfig {
    let mut r = harness::room(id);
    r.upstream = Some(upstream.to_string());
    r.protect = vec!["/products/*".into()];
    r.bypass = vec!["*.css".into(), "/health".into()];
    r
}

/// A browser-like client: its own cookie jar, redirects not followed.
pub fn shopper() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Sends raw bytes on a fresh connection and returns everything the server answers
/// (the request should say `Connection: close`).
pub async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A recording shop and a rushgate in front of it with one room proxying to it (embedded
/// store); returns the shop, the app and the room id.
pub async fn shop_behind_rushgate() -> (upstream::Upstream, harness::TestApp, String) {
    let up = upstream::Upstream::start().await;
    let id = harness::room_id();
    let app = harness::spawn_app(harness::config(None, vec![proxied_room(&id, &up.url())])).await;
    (up, app, id)
}

/// The public address of a test app.
pub fn addr(app: &harness::TestApp) -> SocketAddr {
    app.app.as_ref().expect("running").public_addr
}
