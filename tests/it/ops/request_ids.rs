//! Request ids: every response of both listeners carries `X-Request-Id`; problem bodies carry
//! the same id as `request_id`; a sane incoming id is honoured, an unsafe one replaced.

use reqwest::StatusCode;

use crate::harness::*;

fn id_of(reply: &Reply) -> String {
    reply
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no X-Request-Id on a {} response", reply.status))
        .to_string()
}

fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_has_a_request_id_and_problems_repeat_it() {
    let room_id = room_id();
    let app = spawn_app(config(None, vec![room(&room_id)])).await;

    // Generated ids: UUIDs, different per request, on successes and problems alike.
    let joined = app.join(&room_id, None, None).await;
    assert_eq!(joined.status, StatusCode::CREATED);
    let status = app.status(&room_id).await;
    let (a, b) = (id_of(&joined), id_of(&status));
    assert!(is_uuid(&a) && is_uuid(&b), "{a} {b}");
    assert_ne!(a, b);

    let unknown = app.status("no-such-room").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(is_uuid(&id_of(&unknown)));
    assert_eq!(
        unknown.str("request_id"),
        id_of(&unknown),
        "{}",
        unknown.body
    );

    let wrong_method = app
        .send(app.client.delete(app.api(&format!("rooms/{room_id}"))))
        .await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.str("request_id"), id_of(&wrong_method));

    let no_ticket = app
        .send(
            app.client
                .get(app.api(&format!("rooms/{room_id}/position"))),
        )
        .await;
    assert_eq!(no_ticket.status, StatusCode::UNAUTHORIZED);
    assert_eq!(no_ticket.str("request_id"), id_of(&no_ticket));

    // A caller's id (a load balancer's, a trace id) is honoured, in the header and the body.
    let traced = app
        .send(
            app.client
                .get(app.api("rooms/no-such-room"))
                .header("X-Request-Id", "lb-7f3a.trace:42"),
        )
        .await;
    assert_eq!(id_of(&traced), "lb-7f3a.trace:42");
    assert_eq!(traced.str("request_id"), "lb-7f3a.trace:42");
    let traced_ok = app
        .send(
            app.client
                .post(app.api(&format!("rooms/{room_id}/join")))
                .header("X-Request-Id", "client-abc-123"),
        )
        .await;
    assert_eq!(traced_ok.status, StatusCode::CREATED);
    assert_eq!(id_of(&traced_ok), "client-abc-123");

    // An id that could break a header, a log line or JSON is replaced by a fresh one.
    for unsafe_id in ["two words", "quote\"d", &"x".repeat(200)] {
        let r = app
            .send(
                app.client
                    .get(app.api("rooms/no-such-room"))
                    .header("X-Request-Id", unsafe_id),
            )
            .await;
        assert!(is_uuid(&id_of(&r)), "{unsafe_id:?} became {}", id_of(&r));
        assert_eq!(r.str("request_id"), id_of(&r));
    }

    // The admin listener too.
    let live = app.admin_get("/livez").await;
    assert_eq!(live.status, StatusCode::OK);
    assert!(is_uuid(&id_of(&live)));
    let missing = app.admin_get("/no-such-probe").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.str("request_id"), id_of(&missing));
    let metrics = app
        .client
        .get(format!("{}/metrics", app.admin))
        .header("X-Request-Id", "scrape-1")
        .send()
        .await
        .expect("metrics");
    assert_eq!(
        metrics
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("scrape-1")
    );
    app.stop().await;
}
