//! One path, seen one way: every spelling of a path either reaches the shop in exactly the
//! canonical form the rules judged (and, when that form is protected, only with a pass), or is
//! refused with 400 `ambiguous-path`. The dodges measured from outside are checked one by one,
//! then a property test sends generated paths without a pass and checks that none the rules
//! protect reaches the shop.

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use rushgate::http::proxy::canonical;

use super::{addr, raw, shop_behind_rushgate};

/// `/products/*` is protected, `*.css` and `/health` bypassed (see `proxied_room`), without
/// regard to case.
fn protected(canonical: &str) -> bool {
    let p = canonical.to_lowercase();
    p.starts_with("/products/") && !p.ends_with(".css")
}

async fn get(host: std::net::SocketAddr, path: &str) -> String {
    raw(
        host,
        &format!("GET {path} HTTP/1.1\r\nHost: shop.example\r\nAccept: application/json\r\nConnection: close\r\n\r\n"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dodges_are_refused_or_forwarded_as_judged() {
    let (up, app, _id) = shop_behind_rushgate().await;
    let host = addr(&app);
    // (path sent, what must happen): Some(form the shop gets, unprotected) or None (refused
    // with 400, or protected: held for the queue, never forwarded without a pass).
    let cases: &[(&str, Option<&str>)] = &[
        ("/PRODUCTS/x", None),
        ("/Products/X", None),
        ("/products/x;.css", None),
        ("/products/x%3b.css", None),
        ("/products/x/..", Some("/products")),
        ("/products/x/%2e%2e", None),
        ("/products\\x", None),
        ("/products/x%00.css", None),
        ("/products/x%2ecss", None),
        ("/products/x%3f.css", None),
        ("/products/x%23.css", None),
        ("/products/%2e%2e/about", None),
        ("//products//x", None),
        ("/products/./x", None),
        ("/about/./us/../team", Some("/about/team")),
        ("/%61bout", Some("/about")),
        ("/products/app.CSS", Some("/products/app.CSS")),
    ];
    for (path, forwarded) in cases {
        let before = up.seen().len();
        let answer = get(host, path).await;
        let status = answer.get(9..12).unwrap_or("");
        let seen = up.seen();
        match forwarded {
            Some(form) => {
                assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
                assert_eq!(seen.len(), before + 1, "{path} not forwarded");
                assert_eq!(seen[before].uri, *form, "{path} forwarded as another path");
            }
            None => {
                assert_eq!(
                    seen.len(),
                    before,
                    "{path} reached the shop as {:?}",
                    seen.last()
                );
                // 400, or the queue's answer (a place: 200 / 201) for a protected path.
                assert!(["400", "200", "201"].contains(&status), "{path}: {answer}");
                if status == "400" {
                    assert!(answer.contains("ambiguous-path"), "{path}: {answer}");
                }
            }
        }
    }
    app.stop().await;
}

/// Pieces paths are made of: rule words in several cases, dot segments plain and encoded,
/// every delimiter encoded, parameters, backslashes, NUL, unreserved escapes, extensions.
const PIECES: &[&str] = &[
    "/",
    "//",
    "products",
    "PRODUCTS",
    "Products",
    "x",
    ".",
    "..",
    "%2e",
    "%2E",
    "%2f",
    "%2F",
    ";",
    "%3b",
    "\\",
    "%5c",
    "%00",
    ".css",
    ".CSS",
    "%3f",
    "%23",
    "%70roducts",
    "%41",
    "%",
    "a",
    "health",
    "%2e%2e",
    "%7e",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_generated_path_reaches_a_protected_page_without_a_pass() {
    let (up, app, _id) = shop_behind_rushgate().await;
    let host = addr(&app);
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 400,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let strategy = proptest::collection::vec(proptest::sample::select(PIECES), 1..8)
        .prop_map(|pieces| format!("/{}", pieces.concat()));
    let result = tokio::task::block_in_place(|| {
        runner.run(&strategy, |path| {
            let before = up.seen().len();
            let answer = handle.block_on(get(host, &path));
            let seen = up.seen();
            let status = answer.get(9..12).unwrap_or("").to_string();
            if seen.len() > before {
                let got = seen[before].uri.clone();
                // Forwarded: exactly the judged form, and never a protected one without a pass.
                let judged = canonical(&path, false);
                prop_assert_eq!(Ok(got.clone()), judged, "{} forwarded as {}", path, got);
                prop_assert!(
                    !protected(&got),
                    "{} reached the shop as {} without a pass",
                    path,
                    got
                );
            } else {
                // Not forwarded: refused as ambiguous (or by the HTTP parser), or held for the
                // queue because it is protected.
                prop_assert!(
                    status == "400"
                        || (status == "200" || status == "201")
                            && canonical(&path, false).is_ok_and(|c| protected(&c)),
                    "{} answered {}",
                    path,
                    answer
                );
            }
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    app.stop().await;
}
