//! `TlsRedis`: a private redis-server that speaks only TLS (`--port 0`), with certificates the
//! test made ([`Certs`]), optionally requiring a client certificate.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::Certs;
use crate::harness::{free_port, wait_until};

/// Whether the server asks connecting clients for a certificate (`--tls-auth-clients`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client may present a certificate; if it does, it must verify against the CA.
    Optional,
    /// A client must present a certificate signed by the CA, or the handshake fails.
    Required,
}

/// A TLS-only redis-server on a free port, killed (SIGKILL) when dropped. No plain-text port
/// is open. Its certificates and data live in temp dirs removed with it.
pub struct TlsRedis {
    /// The TLS port.
    pub port: u16,
    certs: Certs,
    auth: ClientAuth,
    dir: TempDir,
    child: Option<Child>,
}

impl TlsRedis {
    /// Starts a TLS redis-server that accepts clients with or without a certificate; returns
    /// once it answers PING over TLS.
    pub async fn start() -> TlsRedis {
        Self::start_with(ClientAuth::Optional).await
    }

    /// Starts a TLS redis-server with the given client-certificate policy (`Required`: clients
    /// without a certificate signed by [`Certs::ca`] are refused), new certificates and no
    /// persistence; returns once it answers PING over TLS (with the client certificate).
    pub async fn start_with(auth: ClientAuth) -> TlsRedis {
        let mut server = TlsRedis {
            port: free_port(),
            certs: Certs::generate(),
            auth,
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
        };
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        let dir = self.dir.path();
        let log = dir.join("redis.log");
        let auth = match self.auth {
            ClientAuth::Optional => "optional",
            ClientAuth::Required => "yes",
        };
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--protected-mode", "no"])
            .args(["--dir", path_str(dir), "--logfile", path_str(&log)])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--tls-cert-file", path_str(&self.certs.server_cert)])
            .args(["--tls-key-file", path_str(&self.certs.server_key)])
            .args(["--tls-ca-cert-file", path_str(&self.certs.ca)])
            .args(["--tls-auth-clients", auth])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let child = self.child.as_mut().expect("just spawned");
        let (port, certs) = (self.port, &self.certs);
        wait_until(
            Duration::from_secs(10),
            "TLS redis-server answers PING",
            || {
                // A redis-server built without TLS exits at once ("not supported"): say so
                // instead of waiting out the deadline.
                if let Ok(Some(status)) = child.try_wait() {
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    panic!("redis-server --tls-port exited ({status}); its log:\n{log}");
                }
                let up = tls_cli(port, &client_flags(certs), &["PING"]).trim() == "PONG";
                async move { up }
            },
        )
        .await;
    }

    /// `rediss://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    /// The certificates: [`Certs::ca`] verifies the server, [`Certs::client_cert`] and
    /// [`Certs::client_key`] are a client identity it accepts.
    pub fn certs(&self) -> &Certs {
        &self.certs
    }

    /// The CA file that verifies this server (`store.tls_ca_file`).
    pub fn ca_file(&self) -> &Path {
        &self.certs.ca
    }

    /// A client certificate this server accepts (`store.tls_cert_file`).
    pub fn cert_file(&self) -> &Path {
        &self.certs.client_cert
    }

    /// The key of [`cert_file`](Self::cert_file) (`store.tls_key_file`).
    pub fn key_file(&self) -> &Path {
        &self.certs.client_key
    }

    /// Runs a command with `redis-cli --tls`, trusting the CA and presenting the client
    /// certificate, and returns its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        tls_cli(self.port, &client_flags(&self.certs), args)
    }

    /// Runs a command with redis-cli and exactly the given TLS flags (`--tls`, `--cacert`,
    /// `--cert`, `--key`, ...), for clients the server should refuse; returns its standard
    /// output followed by its standard error, which names why a connection failed
    /// (`SSL_connect failed: certificate verify failed`, `Server closed the connection`).
    pub fn cli_with(&self, tls_flags: &[&str], args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(tls_flags)
            .args(args)
            .output()
            .map(|o| {
                let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&o.stderr));
                text
            })
            .unwrap_or_default()
    }

    /// The server's log so far: it names each refused handshake (`peer did not return a
    /// certificate`, `wrong version number`, `certificate verify failed`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// The server's process id while it runs (`None` after [`kill`](Self::kill)).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the server again on the same port with the same certificates (after
    /// [`kill`](Self::kill), or killing it first); returns once it answers PING over TLS.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// SIGKILLs the server.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `--tls --cacert <ca> --cert <client> --key <client key>`
fn client_flags(certs: &Certs) -> Vec<String> {
    vec![
        "--tls".into(),
        "--cacert".into(),
        path_str(&certs.ca).into(),
        "--cert".into(),
        path_str(&certs.client_cert).into(),
        "--key".into(),
        path_str(&certs.client_key).into(),
    ]
}

fn tls_cli(port: u16, flags: &[String], args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(flags)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf8 temp path")
}
