//! The built binary: `check-config`, environment overrides, `keygen`, `pass verify` and `serve`
//! with a bad configuration. Bad input exits with a message naming the problem, never a panic.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rushgate::config::PassAlgorithm;
use rushgate::pass::{PassIssuer, PassKeys};
use serde_json::Value;
use tempfile::TempDir;

use super::now_secs;
use crate::harness::*;

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/rushgate.toml");

/// The binary with a clean `RUSHGATE_*` environment, run in `dir`.
fn rushgate(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rushgate"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("RUSHGATE_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("RUST_LOG", "warn").current_dir(dir);
    cmd
}

#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    /// Asserts the exit code and that nothing panicked.
    fn expect_code(&self, code: i32, what: &str) -> &Self {
        assert!(
            !self.stderr.contains("panicked") && self.code != Some(101),
            "{what}: panicked: {self:?}"
        );
        assert_eq!(self.code, Some(code), "{what}: {self:?}");
        self
    }

    fn stderr_has(&self, needle: &str, what: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "{what}: stderr lacks {needle:?}:\n{}",
            self.stderr
        );
        self
    }
}

/// Runs `cmd` to completion (at most 60 s: a command that should exit at once must not hang the
/// suite).
fn run(mut cmd: Command) -> Out {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn rushgate");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => {
            let out = out.expect("wait for rushgate");
            Out {
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        }
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("rushgate (pid {pid}) did not exit within 60 s: {cmd:?}");
        }
    }
}

fn check_config(dir: &Path, file: &Path, env: &[(&str, &str)]) -> Out {
    let mut cmd = rushgate(dir);
    cmd.arg("check-config").arg(file).envs(env.iter().copied());
    run(cmd)
}

fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

fn toml_str(path: &Path) -> String {
    toml::Value::from(path.to_str().expect("utf-8 path")).to_string()
}

/// A valid configuration with room `summer-drop` and the given key file (never generated).
fn config_text(key: &Path, algorithm: &str, audience: &str) -> String {
    format!(
        "[passes]\nalgorithm = \"{algorithm}\"\naudience = \"{audience}\"\nsigning_key_file = {}\n\
         generate_missing_key = false\nticket_secret = \"a-long-enough-ticket-secret\"\n\n\
         [[rooms]]\nid = \"summer-drop\"\n",
        toml_str(key)
    )
}

#[test]
fn check_config_accepts_the_shipped_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = check_config(dir.path(), Path::new(SHIPPED), &[]);
    out.expect_code(0, "shipped config");
    assert!(out.stdout.contains("ok (1 rooms)"), "{out:?}");
    // Checking does not create the development key.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn check_config_names_every_problem_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        &dir,
        "bad.toml",
        "[store]\nrefresh_ms = 1\n\n[[rooms]]\nid = \"ok\"\n\n[[rooms]]\nid = \"second\"\n\
         admit_per_minute = 0\nmax_active = 0\n",
    );
    let out = check_config(dir.path(), &bad, &[]);
    out.expect_code(2, "admit_per_minute = 0")
        .stderr_has(
            "rooms[1].admit_per_minute: must be greater than 0",
            "rooms[1]",
        )
        .stderr_has(
            "rooms[1].max_active: must be greater than 0",
            "every problem",
        )
        .stderr_has("store.refresh_ms: must be between 10 and 5000", "sections")
        .stderr_has("bad.toml", "names the file");
    assert!(!out.stderr.contains("rooms[0]"), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");

    let cases: &[(&str, &str, &[&str])] = &[
        (
            "unknown room field",
            "[[rooms]]\nid = \"a\"\nadmit_per_mintue = 5\n",
            &["rooms[0]", "unknown field `admit_per_mintue`"],
        ),
        (
            "unknown section field",
            "[server]\nlisten_on = \"127.0.0.1:1\"\n",
            &["server", "unknown field `listen_on`"],
        ),
        (
            "unknown section",
            "[serverr]\nlisten = \"127.0.0.1:1\"\n",
            &["unknown field `serverr`"],
        ),
        (
            "wrong type",
            "[[rooms]]\nid = \"a\"\nmax_active = \"many\"\n",
            &["rooms[0].max_active", "invalid type"],
        ),
        (
            "negative number",
            "[[rooms]]\nid = \"a\"\nadmit_per_minute = -5\n",
            &["rooms[0].admit_per_minute"],
        ),
        (
            "number too large",
            "[[rooms]]\nid = \"a\"\nmax_active = 99999999999\n",
            &["rooms[0].max_active"],
        ),
        (
            "bad room id",
            "[[rooms]]\nid = \"Summer Drop\"\n",
            &["rooms[0].id: must be"],
        ),
        (
            "missing room id",
            "[[rooms]]\nmax_active = 5\n",
            &["rooms[0]", "missing field `id`"],
        ),
        (
            "bad TOML",
            "[server\nlisten = \"127.0.0.1:8080\"\n",
            &["not valid TOML", "line 1"],
        ),
        (
            "bad TOML value",
            "[server]\nlisten = \n",
            &["not valid TOML"],
        ),
        (
            "same listeners",
            "[server]\nlisten = \"127.0.0.1:1\"\nadmin_listen = \"127.0.0.1:1\"\n",
            &["server.admin_listen: must differ from server.listen"],
        ),
        (
            "redis url scheme",
            "[store]\nredis_url = \"http://localhost\"\n",
            &["store.redis_url: must start with redis://, rediss:// (TLS), redis-cluster://"],
        ),
    ];
    for (what, text, needles) in cases {
        let file = write(&dir, "case.toml", text);
        let out = check_config(dir.path(), &file, &[]);
        out.expect_code(2, what);
        for needle in *needles {
            out.stderr_has(needle, what);
        }
    }

    let missing = dir.path().join("missing.toml");
    check_config(dir.path(), &missing, &[])
        .expect_code(2, "missing file")
        .stderr_has("cannot read", "missing file")
        .stderr_has("missing.toml", "missing file");
    check_config(dir.path(), dir.path(), &[])
        .expect_code(2, "a directory")
        .stderr_has("cannot read", "a directory");
    let binary = dir.path().join("binary.toml");
    std::fs::write(&binary, b"[server]\nlisten = \"\xff\xfe\"\n").unwrap();
    check_config(dir.path(), &binary, &[])
        .expect_code(2, "not UTF-8")
        .stderr_has("binary.toml", "not UTF-8");
}

#[test]
fn env_overrides_are_validated_like_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "env.toml",
        &config_text(&dir.path().join("k.pem"), "EdDSA", "shop"),
    );
    check_config(dir.path(), &file, &[]).expect_code(0, "without overrides");
    let var = "RUSHGATE_ROOMS_SUMMER_DROP_ADMIT_PER_MINUTE";
    check_config(dir.path(), &file, &[(var, "1200")]).expect_code(0, "a valid override");
    check_config(dir.path(), &file, &[(var, "0")])
        .expect_code(2, "override to 0")
        .stderr_has("rooms[0].admit_per_minute: must be greater than 0", var);
    check_config(dir.path(), &file, &[(var, "fast")])
        .expect_code(2, "override not a number")
        .stderr_has(var, "names the variable")
        .stderr_has("expected an integer", "override not a number");
    check_config(dir.path(), &file, &[(var, "-1")])
        .expect_code(2, "negative override")
        .stderr_has("rooms[0].admit_per_minute", "negative override");
    check_config(dir.path(), &file, &[("RUSHGATE_STORE_REFRESH_MS", "1")])
        .expect_code(2, "section override")
        .stderr_has("store.refresh_ms", "section override");
    check_config(
        dir.path(),
        &file,
        &[("RUSHGATE_PASSES_TICKET_SECRET", "short")],
    )
    .expect_code(2, "short secret")
    .stderr_has(
        "passes.ticket_secret: must be at least 8 characters",
        "secret",
    );
    check_config(
        dir.path(),
        &file,
        &[("RUSHGATE_PASSES_GENERATE_MISSING_KEY", "maybe")],
    )
    .expect_code(2, "bool override")
    .stderr_has("expected true or false", "bool override");

    // The shipped file's room `drop` is overridable the same way.
    check_config(
        dir.path(),
        Path::new(SHIPPED),
        &[("RUSHGATE_ROOMS_DROP_ADMIT_PER_MINUTE", "0")],
    )
    .expect_code(2, "shipped config with override")
    .stderr_has(
        "rooms[0].admit_per_minute: must be greater than 0",
        "shipped",
    );
}

fn keygen(dir: &Path, out: &Path, algorithm: Option<&str>) -> Out {
    let mut cmd = rushgate(dir);
    cmd.arg("keygen").arg("--out").arg(out);
    if let Some(alg) = algorithm {
        cmd.args(["--algorithm", alg]);
    }
    run(cmd)
}

#[test]
fn keygen_writes_loadable_pkcs8_keys() {
    let dir = tempfile::tempdir().unwrap();
    for (alg, flag) in [
        (PassAlgorithm::EdDSA, None),
        (PassAlgorithm::EdDSA, Some("EdDSA")),
        (PassAlgorithm::ES256, Some("ES256")),
    ] {
        let path = dir
            .path()
            .join(format!("nested/{}-{}.pem", alg, flag.is_some()));
        let out = keygen(dir.path(), &path, flag);
        out.expect_code(0, "keygen");
        let pem = std::fs::read_to_string(&path).expect("key file written");
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{alg}");
        assert!(
            pem.trim_end().ends_with("-----END PRIVATE KEY-----"),
            "{alg}"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{alg}: key file mode {mode:o}");
        let keys = PassKeys::from_pem(&pem, alg).expect("PassKeys::from_pem loads the key");
        assert!(
            out.stdout.contains(&format!("({alg}, kid {})", keys.kid())),
            "{out:?}"
        );
        let other = match alg {
            PassAlgorithm::EdDSA => PassAlgorithm::ES256,
            PassAlgorithm::ES256 => PassAlgorithm::EdDSA,
        };
        assert!(
            PassKeys::from_pem(&pem, other).is_err(),
            "{alg} key loads as {other}"
        );
        // A signing key is never overwritten.
        keygen(dir.path(), &path, flag)
            .expect_code(1, "keygen over an existing key")
            .stderr_has("refusing to overwrite", "existing key");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), pem);
    }

    let unsupported = dir.path().join("rs.pem");
    keygen(dir.path(), &unsupported, Some("RS256"))
        .expect_code(2, "unsupported algorithm")
        .stderr_has("EdDSA or ES256", "unsupported algorithm");
    assert!(!unsupported.exists());

    // The parent is a file: an error message, no panic.
    let file = write(&dir, "plain", "x");
    keygen(dir.path(), &file.join("k.pem"), None)
        .expect_code(1, "parent is a file")
        .stderr_has("error", "parent is a file");
}

fn pass_verify(dir: &Path, config: &Path, token: &str) -> Out {
    let mut cmd = rushgate(dir);
    cmd.args(["pass", "verify", "--config"])
        .arg(config)
        .arg(token);
    run(cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_verify_prints_claims_and_rejects_forgeries() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("pass.pem");
    let d = dir.path().to_path_buf();
    let k = key.clone();
    tokio::task::spawn_blocking(move || keygen(&d, &k, None).expect_code(0, "keygen").code)
        .await
        .unwrap();

    // A real pass from a server signing with that key.
    let mut c = config(None, vec![room("summer-drop")]);
    c.passes.signing_key_file = key.clone();
    c.passes.generate_missing_key = false;
    let app = spawn_app(c).await;
    let joined = app.join("summer-drop", Some("shopper-1"), None).await;
    assert_eq!(joined.str("state"), "admitted", "{}", joined.body);
    let pass = joined.str("pass").to_string();
    let sub = joined.str("ticket").split('.').nth(1).unwrap().to_string();
    app.stop().await;

    let cfg = write(&dir, "rushgate.toml", &config_text(&key, "EdDSA", "shop"));
    let pem = std::fs::read_to_string(&key).unwrap();
    let issuer = PassIssuer::new(
        PassKeys::from_pem(&pem, PassAlgorithm::EdDSA).unwrap(),
        "rushgate",
        "shop",
    );
    let now = now_secs();
    let stranger = |alg| {
        let pem = PassKeys::generate_pem(alg).unwrap();
        PassIssuer::new(PassKeys::from_pem(&pem, alg).unwrap(), "rushgate", "shop")
    };
    let genuine = issuer.verify(&pass).unwrap();
    let forged_ed = stranger(PassAlgorithm::EdDSA)
        .issue_claims(&genuine)
        .unwrap();
    let forged_es = stranger(PassAlgorithm::ES256)
        .issue_claims(&genuine)
        .unwrap();
    let expired = issuer
        .issue("summer-drop", &sub, 1, now - 1200, now - 600)
        .unwrap();
    let other_audience = PassIssuer::new(
        PassKeys::from_pem(&pem, PassAlgorithm::EdDSA).unwrap(),
        "rushgate",
        "another-shop",
    )
    .issue("summer-drop", &sub, 1, now, now + 600)
    .unwrap();
    let missing_key_cfg = write(
        &dir,
        "nokey.toml",
        &config_text(&dir.path().join("absent.pem"), "EdDSA", "shop"),
    );
    let bad_cfg = write(
        &dir,
        "bad.toml",
        "[[rooms]]\nid = \"a\"\n[[rooms]]\nid = \"b\"\nadmit_per_minute = 0\n",
    );

    let d = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let dir = d.as_path();
        let out = pass_verify(dir, &cfg, &pass);
        out.expect_code(0, "genuine pass");
        let claims: Value = serde_json::from_str(&out.stdout).expect("claims as JSON");
        assert_eq!(claims["room"], "summer-drop");
        assert_eq!(claims["sub"], sub.as_str());
        assert_eq!(claims["iss"], "rushgate");
        assert_eq!(claims["aud"], "shop");
        assert_eq!(claims["pos"], 1);
        assert_eq!(claims["jti"], genuine.jti.as_str());
        assert_eq!(claims["exp"], genuine.exp);

        for (what, token, reason) in [
            (
                "forged (Ed25519)",
                forged_ed.as_str(),
                "signature is invalid",
            ),
            ("forged (P-256)", forged_es.as_str(), "signature is invalid"),
            ("expired", expired.as_str(), "expired"),
            ("other audience", other_audience.as_str(), "audience"),
            ("garbage", "not-a-pass", "malformed"),
            ("empty", "", "malformed"),
        ] {
            let out = pass_verify(dir, &cfg, token);
            out.expect_code(1, what).stderr_has(reason, what);
            assert!(out.stdout.is_empty(), "{what}: {out:?}");
        }
        pass_verify(dir, &missing_key_cfg, &pass)
            .expect_code(2, "missing key file")
            .stderr_has("pass signing key", "missing key file");
        assert!(!dir.join("absent.pem").exists(), "verify generated a key");
        pass_verify(dir, &bad_cfg, &pass)
            .expect_code(2, "bad config")
            .stderr_has(
                "rooms[1].admit_per_minute: must be greater than 0",
                "bad config",
            );
        pass_verify(dir, &dir.join("none.toml"), &pass)
            .expect_code(2, "missing config")
            .stderr_has("cannot read", "missing config");
    })
    .await
    .unwrap();
}

#[test]
fn pass_verify_with_es256() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("es.pem");
    keygen(dir.path(), &key, Some("ES256")).expect_code(0, "keygen ES256");
    let cfg = write(&dir, "es.toml", &config_text(&key, "ES256", "shop"));
    let pem = std::fs::read_to_string(&key).unwrap();
    let issuer = PassIssuer::new(
        PassKeys::from_pem(&pem, PassAlgorithm::ES256).unwrap(),
        "rushgate",
        "shop",
    );
    let now = now_secs();
    let pass = issuer
        .issue("summer-drop", "aAAAAAAAAAAAAAAA", 4, now, now + 60)
        .unwrap();
    let out = pass_verify(dir.path(), &cfg, &pass);
    out.expect_code(0, "ES256 pass");
    let claims: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(claims["pos"], 4);

    // An EdDSA pass under an ES256 key is refused; so is an EdDSA key file in an ES256 config.
    let ed = PassKeys::generate_pem(PassAlgorithm::EdDSA).unwrap();
    let ed_pass = PassIssuer::new(
        PassKeys::from_pem(&ed, PassAlgorithm::EdDSA).unwrap(),
        "rushgate",
        "shop",
    )
    .issue("summer-drop", "aAAAAAAAAAAAAAAA", 4, now, now + 60)
    .unwrap();
    pass_verify(dir.path(), &cfg, &ed_pass)
        .expect_code(1, "EdDSA pass, ES256 key")
        .stderr_has("signature is invalid", "alg confusion");
    let ed_key = write(&dir, "ed.pem", &ed);
    let mismatched = write(
        &dir,
        "mismatch.toml",
        &config_text(&ed_key, "ES256", "shop"),
    );
    pass_verify(dir.path(), &mismatched, &pass)
        .expect_code(2, "EdDSA key in an ES256 config")
        .stderr_has("not a valid P-256", "key type");
}

#[test]
fn serve_with_a_bad_config_exits_2_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    // Hold the port the config names: a bad config must be refused before any bind is tried.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let bad = write(
        &dir,
        "serve.toml",
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[[rooms]]\nid = \"a\"\n\n\
             [[rooms]]\nid = \"b\"\nadmit_per_minute = 0\n"
        ),
    );
    let serve = |file: &Path, env: &[(&str, &str)]| {
        let mut cmd = rushgate(dir.path());
        cmd.arg("serve")
            .arg("--config")
            .arg(file)
            .envs(env.iter().copied());
        run(cmd)
    };
    let out = serve(&bad, &[]);
    out.expect_code(2, "serve, bad config")
        .stderr_has("rooms[1].admit_per_minute: must be greater than 0", "serve");
    assert!(!out.stderr.to_lowercase().contains("address"), "{out:?}");

    serve(&dir.path().join("absent.toml"), &[])
        .expect_code(2, "serve, missing config")
        .stderr_has("cannot read", "serve, missing config");
    let broken = write(&dir, "broken.toml", "[[rooms]\n");
    serve(&broken, &[])
        .expect_code(2, "serve, bad TOML")
        .stderr_has("not valid TOML", "serve, bad TOML");
    // A valid file made invalid from the environment.
    let good = write(
        &dir,
        "good.toml",
        &format!("[server]\nlisten = \"127.0.0.1:{port}\"\n\n[[rooms]]\nid = \"summer-drop\"\n"),
    );
    serve(&good, &[("RUSHGATE_ROOMS_SUMMER_DROP_MAX_ACTIVE", "0")])
        .expect_code(2, "serve, env override")
        .stderr_has("rooms[0].max_active: must be greater than 0", "serve, env");
    // No key file was generated by any of these.
    assert!(!dir.path().join("config").exists());
    drop(held);
}
