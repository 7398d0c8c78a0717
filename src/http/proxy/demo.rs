//! `upstream = "builtin:demo"`: a tiny shop served in process, so `rushgate serve` shows a whole
//! drop in a browser: a home page, a product page for the room's sale (buy button calling the
//! purchase API, optional coupon button), and an order confirmation.

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::page::escape;
use crate::clock::now_ms;
use crate::config::fill;
use crate::http::body::{full, Body};
use crate::http::error::ApiError;
use crate::http::state::AppState;
use crate::pass::PassClaims;

const HOME: &str = include_str!("../../../web/demo/home.html");
const PRODUCT: &str = include_str!("../../../web/demo/product.html");
const ORDER: &str = include_str!("../../../web/demo/order.html");
const CSS: &str = include_str!("../../../web/demo/shop.css");

/// Answers one request of the demo shop for `room`. `pass` is the verified pass when the path
/// is protected (the demo trusts it: the proxy checked it).
pub(crate) fn serve(
    state: &AppState,
    room: &str,
    req: &Request<Incoming>,
    pass: Option<&PassClaims>,
) -> Result<Response<Body>, ApiError> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return Err(ApiError::MethodNotAllowed {
            method: req.method().as_str().chars().take(16).collect(),
            allow: "GET",
        });
    }
    let path = req.uri().path();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        [""] => Ok(html(StatusCode::OK, home(state, room))),
        ["products", sale] => Ok(match product(state, room, sale, pass) {
            Some(page) => html(StatusCode::OK, page),
            None => not_found(),
        }),
        ["orders", reservation] => Ok(html(StatusCode::OK, order(reservation, req))),
        ["static", "shop.css"] => Ok(asset(CSS, "text/css; charset=utf-8")),
        ["health"] => Ok(asset("ok\n", "text/plain; charset=utf-8")),
        _ => Ok(not_found()),
    }
}

fn home(state: &AppState, room: &str) -> String {
    let products: String = state
        .sales
        .iter()
        .filter(|s| s.config.room == room)
        .map(|s| {
            let id = escape(&s.config.id);
            format!(
                "<div class=\"card\"><h2>{}</h2><p class=\"muted\">Limited drop: {} units.</p>\
                 <a class=\"button\" href=\"/products/{id}\">See the product</a></div>",
                escape(&title(&s.config.id)),
                s.config.stock
            )
        })
        .collect();
    let products = if products.is_empty() {
        "<div class=\"card\"><p>This room sells nothing: add a <code>[[sales]]</code> entry for it.</p></div>".to_string()
    } else {
        products
    };
    fill(HOME, |name| match name {
        "room" => Some(escape(room)),
        "products" => Some(products.clone()),
        _ => None,
    })
}

fn product(
    state: &AppState,
    room: &str,
    sale_id: &str,
    pass: Option<&PassClaims>,
) -> Option<String> {
    let sale = state.sales.get(sale_id).filter(|s| s.config.room == room)?;
    let remaining = sale
        .cached_state()
        .map_or_else(|| "…".to_string(), |s| s.available.to_string());
    let prefix = &state.config.server.api_prefix;
    let coupon = state
        .config
        .coupons
        .iter()
        .find(|c| c.room.as_deref() == Some(room))
        .map(|c| {
            format!(
                "<button id=\"coupon\" class=\"secondary\" type=\"button\" data-url=\"{}\">Claim a coupon</button>",
                escape(&format!("{prefix}/v1/coupons/{}/claim", c.id))
            )
        })
        .unwrap_or_default();
    let pass_info = match pass {
        Some(p) => {
            let mins = p.exp.saturating_sub(now_ms() / 1000).div_ceil(60);
            format!("admitted · pass valid {mins} more min")
        }
        None => "not protected".to_string(),
    };
    Some(fill(PRODUCT, |name| match name {
        "name" => Some(escape(&title(&sale.config.id))),
        "remaining" => Some(remaining.clone()),
        "limit" => Some(sale.config.per_user_limit.to_string()),
        "purchase_url" => Some(escape(&format!(
            "{prefix}/v1/sales/{}/purchase",
            sale.config.id
        ))),
        "coupon_button" => Some(coupon.clone()),
        "pass_info" => Some(escape(&pass_info)),
        _ => None,
    }))
}

fn order(reservation: &str, req: &Request<Incoming>) -> String {
    let query =
        |key: &str| super::rules::query_param(req.uri(), key).and_then(|v| v.parse::<u64>().ok());
    let until = query("expires_at")
        .map(|exp| {
            let mins = exp.saturating_sub(now_ms() / 1000).div_ceil(60);
            format!(" for the next {mins} minutes")
        })
        .unwrap_or_default();
    let reservation = super::rules::percent_decode(reservation);
    fill(ORDER, |name| match name {
        "reservation" => Some(escape(&reservation)),
        "quantity" => Some(query("quantity").unwrap_or(1).to_string()),
        "until" => Some(escape(&until)),
        _ => None,
    })
}

/// `summer-sneakers` → `Summer Sneakers`.
fn title(id: &str) -> String {
    id.split(['-', '_'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn html(status: StatusCode, page: String) -> Response<Body> {
    let mut resp = Response::new(full(page));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn asset(body: &'static str, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(body));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

fn not_found() -> Response<Body> {
    html(
        StatusCode::NOT_FOUND,
        "<!doctype html><title>Not found</title><p>No such page in the demo shop. \
         <a href=\"/\">Home</a></p>"
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_and_templates() {
        assert_eq!(title("summer-drop_2"), "Summer Drop 2");
        for t in [HOME, PRODUCT, ORDER] {
            assert!(t.contains("/static/shop.css"));
        }
    }
}
