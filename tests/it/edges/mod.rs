//! Edge cases: bad input over real HTTP, fuzzed tokens and requests, connections that never
//! finish (silent sockets, trickling bodies, a full listener), pass interop with another JWT
//! library through the JWKS, and the command line of the built binary.

use crate::harness;

mod bad_input;
mod cli;
mod connections;
mod fuzz;
mod jwks;

use std::io::{Read as _, Write as _};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use harness::Reply;

/// Unix seconds now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Whether `r` is an RFC 9457 problem whose `status` member matches the HTTP status.
pub fn is_problem(r: &Reply) -> bool {
    let ct = r
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let non_empty = |field: &str| r.body[field].as_str().is_some_and(|s| !s.is_empty());
    ct == "application/problem+json"
        && non_empty("type")
        && non_empty("title")
        && non_empty("detail")
        && r.body["status"].as_u64() == Some(u64::from(r.status.as_u16()))
}

/// Asserts `r` is a problem with `status` whose `type` ends in `/{slug}` (`"*"`: any type).
pub fn assert_problem(r: &Reply, status: u16, slug: &str, context: &str) {
    assert_eq!(
        r.status.as_u16(),
        status,
        "{context}: status; body {}",
        r.body
    );
    assert!(
        is_problem(r),
        "{context}: not a complete problem+json ({:?}): {}",
        r.headers.get("content-type"),
        r.body
    );
    if slug != "*" {
        let ty = r.body["type"].as_str().unwrap_or_default();
        assert!(
            ty.ends_with(&format!("/{slug}")),
            "{context}: type {ty}, wanted …/{slug}"
        );
    }
}

/// What came back on a raw TCP connection.
#[derive(Debug)]
pub struct RawReply {
    /// Status code of the first status line, if the server answered one.
    pub status: Option<u16>,
    /// Everything read.
    pub text: String,
}

impl RawReply {
    /// The value of header `name` (case-insensitive) in the response head.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.text.split("\r\n\r\n").next()?;
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    /// The body after the response head.
    pub fn body(&self) -> &str {
        self.text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }
}

/// Writes `request` as is to the server at `base` (`http://host:port`) and reads until the
/// server closes or 10 s pass. With `half_close` the write side is shut after the request (for
/// garbage that might otherwise leave the server waiting for more bytes).
pub async fn raw_http(base: &str, request: Vec<u8>, half_close: bool) -> RawReply {
    let addr = base.trim_start_matches("http://").to_string();
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        // The server may answer (and close) before reading everything; that is its right.
        let _ = s.write_all(&request);
        if half_close {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text
            .strip_prefix("HTTP/1.1 ")
            .or_else(|| text.strip_prefix("HTTP/1.0 "))
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok());
        RawReply { status, text }
    })
    .await
    .expect("raw http task")
}
