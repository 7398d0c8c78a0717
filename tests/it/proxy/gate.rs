//! Gate mode: 204 with a valid pass of the room (cookie or bearer, any method), 401 otherwise.

use reqwest::StatusCode;

use super::now_secs;
use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_is_204_with_a_valid_pass_and_401_otherwise() {
    let id = room_id();
    let app = spawn_app(config(None, vec![room(&id)])).await;
    let joined = app.join(&id, None, None).await;
    let pass = joined.str("pass").to_string();
    assert!(!pass.is_empty());
    let passes = &app.app.as_ref().unwrap().state.passes;
    let now = now_secs();
    let expired = passes.issue(&id, "x", 1, now - 1200, now - 600).unwrap();
    let other = passes.issue("other", "x", 1, now, now + 600).unwrap();
    let gate = app.api(&format!("rooms/{id}/gate"));

    let by_cookie = app
        .send(
            app.client
                .get(&gate)
                .header("cookie", format!("a=1; rg_pass_{id}={pass}")),
        )
        .await;
    assert_eq!(by_cookie.status, StatusCode::NO_CONTENT);
    assert_eq!(by_cookie.headers["rushgate-pass"].to_str().unwrap(), pass);
    let by_bearer = app.send(app.client.post(&gate).bearer_auth(&pass)).await;
    assert_eq!(by_bearer.status, StatusCode::NO_CONTENT);
    // A shop's own bearer token does not hide a valid pass cookie.
    let both = app
        .send(
            app.client
                .get(&gate)
                .bearer_auth("shop-session-token")
                .header("cookie", format!("rg_pass_{id}={pass}")),
        )
        .await;
    assert_eq!(both.status, StatusCode::NO_CONTENT);

    for (what, req) in [
        ("nothing", app.client.get(&gate)),
        ("garbage", app.client.get(&gate).bearer_auth("garbage")),
        ("expired", app.client.get(&gate).bearer_auth(&expired)),
        ("other room", app.client.get(&gate).bearer_auth(&other)),
        (
            "ticket instead of pass",
            app.client.get(&gate).bearer_auth(joined.str("ticket")),
        ),
    ] {
        let r = app.send(req).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.body);
        assert!(
            r.str("type").ends_with("/not-admitted"),
            "{what}: {}",
            r.body
        );
    }
    let unknown = app.send(app.client.get(app.api("rooms/nope/gate"))).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    app.stop().await;
}
