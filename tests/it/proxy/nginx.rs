//! Gate mode behind a real nginx (Debian package; scripts/test.sh installs it): `auth_request` to
//! rushgate's gate, `error_page 401 = @queue` to rushgate's waiting page, then the shop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;

use super::upstream::Upstream;
use crate::harness::*;

/// An nginx master in the foreground with its own prefix, config and logs in a temp dir.
struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Nginx {
    /// SIGTERM first: the master then stops its workers (a SIGKILLed master leaves them
    /// running, orphaned); SIGKILL only if it has not exited within two seconds.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..40 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("nginx is installed (scripts/test.sh installs the Debian package)")
}

/// The nginx config the README shows, with test ports.
fn conf(dir: &Path, port: u16, rushgate: &str, shop: &str, room: &str) -> String {
    let d = dir.display();
    // nginx started as root would switch workers to `nobody`; keep them as the current user.
    let user = if running_as_root() { "user root;" } else { "" };
    format!(
        r#"{user}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
  access_log {d}/access.log;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port};

    # rushgate's API (position polls, the waiting page's script) on the shop's own origin.
    location /_rushgate/ {{
      proxy_pass http://{rushgate};
    }}

    # Protected pages: ask the gate first; without a pass, show the waiting page instead.
    location /products/ {{
      auth_request /_rushgate_gate;
      auth_request_set $rushgate_pass $upstream_http_rushgate_pass;
      proxy_set_header Rushgate-Pass $rushgate_pass;
      error_page 401 = @queue;
      proxy_pass http://{shop};
    }}

    location = /_rushgate_gate {{
      internal;
      proxy_pass http://{rushgate}/_rushgate/v1/rooms/{room}/gate;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
    }}

    location @queue {{
      rewrite ^ /_rushgate/v1/rooms/{room}/wait? break;
      proxy_set_header X-Original-URI $request_uri;
      proxy_pass http://{rushgate};
    }}

    location / {{
      proxy_pass http://{shop};
    }}
  }}
}}
"#
    )
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Nginx {
    async fn start(rushgate: &str, shop: &str, room: &str) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf(dir.path(), port, rushgate, shop, room)).unwrap();
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let nginx = Nginx { child, port, dir };
        wait_until(Duration::from_secs(10), "nginx listens", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        nginx
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_gate_queues_then_lets_in() {
    let up = Upstream::start().await;
    let id = room_id();
    let mut r = room(&id);
    r.max_active = 1;
    let app = spawn_app(config(None, vec![r])).await;
    let state = app.app.as_ref().unwrap().state.clone();
    up.set_verifier(state.passes.clone(), &id);
    let rushgate = app.app.as_ref().unwrap().public_addr.to_string();
    let nginx = Nginx::start(&rushgate, &up.addr.to_string(), &id).await;

    // Unprotected pages go straight to the shop.
    let client = super::shopper();
    let home = client.get(nginx.url("/")).send().await.unwrap();
    assert_eq!(home.headers()["x-upstream"], "yes", "{}", nginx.error_log());

    // The room is full: the protected page is the waiting page, served through nginx.
    let blocker = app.join(&id, None, None).await;
    let product = nginx.url("/products/drop?size=9");
    let r = client.get(&product).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", nginx.error_log());
    assert!(r.headers().get("x-upstream").is_none());
    let html = r.text().await.unwrap();
    assert!(html.contains("data-state=\"waiting\""), "{html}");
    assert!(
        html.contains("/products/drop?size=9"),
        "return URL lost: {html}"
    );
    assert!(up.seen().iter().all(|s| !s.uri.starts_with("/products")));

    // The slot frees; reloading the page (what the meta refresh does) redirects back with the
    // pass, and nginx then lets the shopper through to the shop with Rushgate-Pass.
    app.leave(&id, blocker.str("ticket")).await;
    wait_until(Duration::from_secs(10), "the waiter is admitted", || {
        let client = client.clone();
        let product = product.clone();
        async move {
            let r = client.get(&product).send().await.unwrap();
            r.status() == StatusCode::SEE_OTHER
                && r.headers()["location"] == "/products/drop?size=9"
        }
    })
    .await;
    let r = client.get(&product).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", nginx.error_log());
    assert_eq!(r.headers()["x-upstream"], "yes");
    let forwarded: Vec<_> = up
        .seen()
        .into_iter()
        .filter(|s| s.uri.starts_with("/products"))
        .collect();
    assert_eq!(forwarded.len(), 1);
    assert!(forwarded[0].pass_sub.is_some(), "no valid Rushgate-Pass");
    assert_eq!(up.bad_passes(), 0);
    drop(nginx);
    app.stop().await;
}
