//! One keep-alive HTTP/1.1 connection per load worker (the wrk model): a worker sends its next
//! request when the previous answer is read, so M workers keep M requests in flight.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{handshake, SendRequest};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// How long one request may take before it counts as an error (and the connection is redone).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// An answer read whole.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: Bytes,
}

/// A reconnecting keep-alive connection to one address.
pub struct Conn {
    addr: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    /// A connection to `addr`, opened at the first request.
    pub fn new(addr: SocketAddr) -> Conn {
        Conn { addr, sender: None }
    }

    async fn connect(&mut self) -> anyhow::Result<&mut SendRequest<Full<Bytes>>> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            let (sender, conn) = handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        self.sender
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("no connection"))
    }

    /// Sends `req` and reads the whole answer. On any error the connection is dropped, so the
    /// next request opens a new one.
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> anyhow::Result<Answer> {
        let result = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let sender = self.connect().await?;
            sender.ready().await?;
            let resp = sender.send_request(req).await?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, anyhow::Error>(Answer {
                status: parts.status,
                body,
            })
        })
        .await;
        match result {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                self.sender = None;
                Err(anyhow::anyhow!("request timed out"))
            }
        }
    }
}

/// A request with `Host` set for `addr`.
pub fn request(
    method: http::Method,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> anyhow::Result<Request<Full<Bytes>>> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string());
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    if !body.is_empty() {
        b = b.header(http::header::CONTENT_TYPE, "application/json");
    }
    Ok(b.body(Full::new(body))?)
}

/// GETs a JSON document (status endpoints).
pub async fn get_json(addr: SocketAddr, path: &str) -> anyhow::Result<Value> {
    let mut conn = Conn::new(addr);
    let a = conn
        .send(request(Method::GET, addr, path, &[], Bytes::new())?)
        .await?;
    Ok(serde_json::from_slice(&a.body)?)
}

/// GET `path` with an `Authorization` header (`Bearer …`) and its JSON body, whatever the
/// status.
pub async fn get_json_auth(addr: SocketAddr, path: &str, auth: &str) -> anyhow::Result<Value> {
    let mut conn = Conn::new(addr);
    let a = conn
        .send(request(
            Method::GET,
            addr,
            path,
            &[("authorization", auth)],
            Bytes::new(),
        )?)
        .await?;
    Ok(serde_json::from_slice(&a.body)?)
}
