//! The queue side of the proxy: waiting page and JSON mode, re-queueing forged and expired pass
//! cookies, the shop's own page template, and config errors naming the field.

use std::path::Path;

use reqwest::StatusCode;
use rushgate::config::Config;

use super::upstream::Upstream;
use super::{now_secs, proxied_room, shopper};
use crate::harness::*;

/// A room with one slot, held by a blocker, so every new shopper waits.
async fn full_room(up: &Upstream) -> (TestApp, String, String) {
    let id = room_id();
    let mut r = proxied_room(&id, &up.url());
    r.max_active = 1;
    r.message = "Drop <b>opens</b> soon".into();
    let app = spawn_app(config(None, vec![r])).await;
    let blocker = app.join(&id, None, None).await;
    assert_eq!(blocker.str("state"), "admitted");
    let ticket = blocker.str("ticket").to_string();
    (app, id, ticket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_page_json_mode_and_admission_redirect() {
    let up = Upstream::start().await;
    let (app, id, blocker) = full_room(&up).await;
    let client = shopper();
    let url = format!("{}/products/drop", app.base);

    // JSON mode: the place body, with the ticket cookie.
    let r = client
        .get(&url)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(r
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|c| c.to_str().unwrap().starts_with(&format!("rg_ticket_{id}="))));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["state"], "waiting", "{body}");
    assert_eq!(body["position"], 1);
    assert_eq!(body["ahead"], 0);
    assert!(body["poll_after_ms"].as_u64().unwrap() > 0);

    // The same shopper asks for the page: same place, HTML, status 200.
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let html = r.text().await.unwrap();
    for needle in [
        "aria-live",
        "data-state=\"waiting\"",
        "data-rg=\"position\">1<",
        "Drop &lt;b&gt;opens&lt;/b&gt; soon",
        "http-equiv=\"refresh\"",
        "role=\"progressbar\"",
        "name=\"viewport\"",
        &format!("/_rushgate/v1/rooms/{id}/position"),
    ] {
        assert!(html.contains(needle), "page lacks {needle}: {html}");
    }
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "external asset"
    );

    // The blocker leaves; the waiter is admitted and the next visit redirects with the pass.
    app.leave(&id, &blocker).await;
    wait_until(
        std::time::Duration::from_secs(10),
        "the waiter is admitted",
        || {
            let client = client.clone();
            let url = url.clone();
            async move {
                let r = client.get(&url).send().await.unwrap();
                r.status() == StatusCode::SEE_OTHER
            }
        },
    )
    .await;
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-upstream"], "yes");
    assert_eq!(up.seen().len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_foreign_passes_are_requeued_never_forwarded() {
    let up = Upstream::start().await;
    let (app, id, _blocker) = full_room(&up).await;
    let passes = &app.app.as_ref().unwrap().state.passes;
    let now = now_secs();
    let expired = passes
        .issue(&id, "someone", 1, now - 1200, now - 600)
        .unwrap();
    let other_room = passes
        .issue("elsewhere", "someone", 1, now, now + 600)
        .unwrap();
    let valid = passes.issue(&id, "someone", 1, now, now + 600).unwrap();
    let forged = {
        // A real pass with its last signature characters changed.
        let mut t = valid.clone();
        let tail = if t.ends_with('A') { "B" } else { "A" };
        t.truncate(t.len() - 1);
        t + tail
    };
    for (what, cookie) in [
        ("garbage", "not-a-jwt".to_string()),
        ("forged", forged),
        ("expired", expired),
        ("other room", other_room),
    ] {
        let r = app
            .client
            .get(format!("{}/products/drop", app.base))
            .header("cookie", format!("rg_pass_{id}={cookie}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{what}");
        assert!(r.headers().get("x-upstream").is_none(), "{what} forwarded");
        assert!(
            r.text().await.unwrap().contains("data-state=\"waiting\""),
            "{what}"
        );
    }
    assert!(up.seen().is_empty(), "something reached the upstream");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shop_page_template_is_rendered_with_escaped_values() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("page.html");
    std::fs::write(
        &path,
        "<html><body><h1>Shop queue {{ room }}</h1><p id=pos>{{position}}</p>\
         <p>{{eta}}</p><p>{{message}}</p>{{script}}</body></html>",
    )
    .unwrap();
    let id = room_id();
    let mut r = proxied_room(&id, &up.url());
    r.max_active = 1;
    r.message = "<script>alert(1)</script>".into();
    r.page_template = Some(path.clone());
    let app = spawn_app(config(None, vec![r])).await;
    app.join(&id, None, None).await;
    let html = shopper()
        .get(format!("{}/products/x", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains(&format!("Shop queue {id}")), "{html}");
    assert!(html.contains("<p id=pos>1</p>"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(html.contains("id=\"rg-config\""), "{html}");
    app.stop().await;

    // A template with a typo, a bad upstream and bad rules: every problem names its field.
    std::fs::write(&path, "<p>{{posiiton}}</p>").unwrap();
    let text = format!(
        "[[rooms]]\nid = \"a\"\nupstream = \"ftp://shop\"\nprotect = [\"products\"]\n\
         page_template = \"{}\"\n[[rooms]]\nid = \"b\"\nbypass = [\"*.css\"]\n",
        path.display()
    );
    let err = Config::from_toml_str(
        &text,
        Path::new("t.toml"),
        &std::collections::HashMap::new(),
    )
    .unwrap_err()
    .to_string();
    for needle in [
        "rooms[0].upstream: must start with http:// or https://",
        "rooms[0].protect[0]: `products` must start with '/'",
        "rooms[0].page_template: unknown placeholder {{posiiton}}",
        "rooms[1].bypass: needs `upstream`",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
}
