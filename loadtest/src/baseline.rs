//! The ceilings rushgate is measured against, served by this binary: `hello` (bare hyper
//! answering the same small JSON body as a poll), `redis-lua` (bare hyper plus one fred
//! EVALSHA per request, the least a store-backed endpoint can do) and `hyper-proxy` (bare hyper
//! forwarding with hyper-util's pooled client: a proxy on rushgate's stack with the stock client).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use fred::types::scripts::Script;
use http::{header, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as AutoBuilder;
use tokio::net::TcpListener;

/// A place body the size and shape of a real poll answer of a waiter deep in the line.
pub const POLL_LIKE_BODY: &str = concat!(
    r#"{"room":"bench","ticket":"bench.aQ2xv9Lk3Jm0Zp7W.512345.1795000000.512345."#,
    r#"k1Jc5vUo2m0sQ9rT4yX7zA3bN6dF8gH1jK4lM7nP0q","state":"waiting","position":512345,"#,
    r#""ahead":512344,"eta_seconds":{"p50":854,"p90":921},"poll_after_ms":5000}"#
);

/// The script of the `redis-lua` baseline: one key read-modify-write, like the smallest store
/// operation rushgate runs.
const LUA: &str = "return redis.call('INCR', KEYS[1])";

/// A failed request of a baseline (hyper closes that connection).
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves `handler` on `listen` with hyper-util's auto builder (as rushgate does) until killed.
async fn serve<F, Fut, B, E>(listen: SocketAddr, handler: F) -> anyhow::Result<()>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<B>, E>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    E: Into<BoxError>,
{
    let listener = TcpListener::bind(listen).await?;
    eprintln!("baseline listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            let _ = AutoBuilder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service_fn(handler))
                .await;
        });
    }
}

fn json(body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// `baseline hello`: the poll-shaped body, from memory.
pub async fn hello(listen: SocketAddr) -> anyhow::Result<()> {
    serve(listen, |_req| async {
        Ok::<_, Infallible>(json(Bytes::from_static(POLL_LIKE_BODY.as_bytes())))
    })
    .await
}

/// `baseline redis-lua`: one EVALSHA per request on a pool of `pool_size` connections.
pub async fn redis_lua(
    listen: SocketAddr,
    redis_url: &str,
    pool_size: usize,
) -> anyhow::Result<()> {
    let pool = crate::redis_info::pool(redis_url, pool_size).await?;
    let script = Arc::new(Script::from_lua(LUA));
    serve(listen, move |_req| {
        let (pool, script) = (pool.clone(), script.clone());
        async move {
            let n: Result<u64, _> = script
                .evalsha_with_reload(
                    pool.next(),
                    vec!["rg:{bench}:counter"],
                    Vec::<String>::new(),
                )
                .await;
            Ok::<_, Infallible>(match n {
                Ok(n) => json(Bytes::from(format!(r#"{{"n":{n}}}"#))),
                Err(e) => {
                    let mut resp = json(Bytes::from(format!(r#"{{"error":"{e}"}}"#)));
                    *resp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                    resp
                }
            })
        }
    })
    .await
}

/// `baseline hyper-proxy`: bare hyper forwarding every request to `upstream` with hyper-util's
/// pooled client, nothing checked or rewritten: what a proxy on the required stack costs with the
/// stock client (rushgate forwards with its own leaner pool, `src/http/proxy/pool.rs`).
pub async fn hyper_proxy(listen: SocketAddr, upstream: SocketAddr) -> anyhow::Result<()> {
    use hyper_util::client::legacy::Client;
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Incoming> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(connector);
    serve(listen, move |req: Request<Incoming>| {
        let client = client.clone();
        async move {
            let (mut parts, body) = req.into_parts();
            let path = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            parts.uri = format!("http://{upstream}{path}").parse()?;
            let resp = client.request(Request::from_parts(parts, body)).await?;
            Ok::<_, BoxError>(resp)
        }
    })
    .await
}
