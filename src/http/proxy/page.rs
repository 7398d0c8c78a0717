//! The waiting page: the built-in one (`web/waiting.html`, embedded) or a shop's own template
//! (`rooms[].page_template`), both filled by plain `{{placeholder}}` replacement with every value
//! HTML-escaped, so a template can never be made to run a shopper's input. The placeholder
//! syntax and the check of a shop's template are config's ([`crate::config::fill`],
//! [`crate::config::read_template`]), so a template that validates is one that loads.

use std::path::Path;
use std::sync::Arc;

use crate::config::fill;
use crate::config::read_template;

/// The built-in waiting page.
const BUILTIN: &str = include_str!("../../../web/waiting.html");
/// The polling script every page gets through `{{script}}`.
const SCRIPT: &str = include_str!("../../../web/waiting.js");

/// A waiting-page template, checked when loaded.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    text: Arc<str>,
}

/// What one rendering of the page shows.
pub(crate) struct PageView<'a> {
    /// Room id.
    pub(crate) room: &'a str,
    /// `waiting`, `admitted`, `sold_out`, `closed`, `expired`, `prequeue`, `transferred`, or
    /// `pow` (no place yet: a proof of work first).
    pub(crate) state: &'a str,
    /// 1-based position among live waiters (0 when not waiting).
    pub(crate) position: u64,
    /// Position at join, for the progress bar.
    pub(crate) first_position: u64,
    /// ETA range in seconds.
    pub(crate) eta: (Option<u64>, Option<u64>),
    /// Units of the room's sale still available.
    pub(crate) remaining: Option<u64>,
    /// The operator's note.
    pub(crate) message: &'a str,
    /// When to poll next.
    pub(crate) poll_after_ms: u64,
    /// Where the shopper goes once admitted.
    pub(crate) return_url: &'a str,
    /// The position endpoint of the room.
    pub(crate) position_url: &'a str,
    /// Scheduled drop before the opening: ms until it opens (the page counts down).
    pub(crate) opens_in_ms: Option<u64>,
    /// State `pow`: the challenge the page's script solves before joining.
    pub(crate) pow: Option<PowView<'a>>,
}

/// A proof-of-work challenge as the waiting page's script gets it.
pub(crate) struct PowView<'a> {
    /// The challenge text.
    pub(crate) challenge: &'a str,
    /// Leading zero bits asked.
    pub(crate) difficulty: u8,
    /// How long the challenge stays valid.
    pub(crate) expires_in_ms: u64,
    /// Where the Web Worker script is served.
    pub(crate) worker_url: &'a str,
    /// The cookie the answer goes back in (`rg_pow_{room}`).
    pub(crate) cookie: &'a str,
}

impl Template {
    /// The embedded default page.
    pub(crate) fn builtin() -> Template {
        Template {
            text: Arc::from(BUILTIN),
        }
    }

    /// Reads and checks a shop's template file.
    pub(crate) fn load(path: &Path) -> Result<Template, String> {
        let text = read_template(path)?;
        Ok(Template {
            text: Arc::from(text),
        })
    }

    /// The page for `view`.
    pub(crate) fn render(&self, view: &PageView<'_>) -> String {
        let eta = eta_text(view.eta.0, view.eta.1);
        let progress = progress_percent(view.first_position, view.position, view.state);
        let refresh = match view.state {
            // Without a script there is no solving: a slow refresh, not a loop.
            "sold_out" | "closed" | "pow" => 30,
            _ => view.poll_after_ms.div_ceil(1000).max(1),
        };
        let config = serde_json::json!({
            "room": view.room,
            "state": view.state,
            "first_position": view.first_position,
            "poll_after_ms": view.poll_after_ms,
            "return_url": view.return_url,
            "position_url": view.position_url,
            "opens_in_ms": view.opens_in_ms,
            "pow": view.pow.as_ref().map(|p| serde_json::json!({
                "challenge": p.challenge,
                "difficulty": p.difficulty,
                "expires_in_ms": p.expires_in_ms,
                "worker_url": p.worker_url,
                "cookie": p.cookie,
            })),
        });
        // Safe inside <script>: no `<`, `>` or `&` can close the element or start a comment.
        let config = config
            .to_string()
            .replace('<', "\\u003c")
            .replace('>', "\\u003e")
            .replace('&', "\\u0026");
        let script = format!(
            "<script type=\"application/json\" id=\"rg-config\">{config}</script>\n<script>{SCRIPT}</script>"
        );
        let num = |n: Option<u64>| n.map(|v| v.to_string()).unwrap_or_default();
        fill(&self.text, |name| match name {
            "room" => Some(escape(view.room)),
            "state" => Some(escape(view.state)),
            "headline" => Some(escape(headline(view.state))),
            "position" => Some(view.position.to_string()),
            "ahead" => Some(view.position.saturating_sub(1).to_string()),
            "eta" => Some(escape(&eta)),
            "eta_p50" => Some(num(view.eta.0)),
            "eta_p90" => Some(num(view.eta.1)),
            "progress_percent" => Some(progress.to_string()),
            "message" => Some(escape(view.message)),
            "remaining" => Some(num(view.remaining)),
            "poll_after_ms" => Some(view.poll_after_ms.to_string()),
            "refresh_seconds" => Some(refresh.to_string()),
            "return_url" => Some(escape(view.return_url)),
            "position_url" => Some(escape(view.position_url)),
            "script" => Some(script.clone()),
            "lang" => Some("en".to_string()),
            _ => None,
        })
    }
}

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn headline(state: &str) -> &'static str {
    match state {
        "waiting" => "You are in line",
        "admitted" => "It is your turn",
        "sold_out" => "Sold out",
        "closed" => "The queue is closed",
        "prequeue" => "The drop opens soon",
        "transferred" => "Your place moved",
        "pow" => "Just a moment",
        _ => "Your place has expired",
    }
}

/// Share of the way from the place at join to the front: never 0 once in line, 100 admitted.
fn progress_percent(first: u64, position: u64, state: &str) -> u64 {
    if state == "admitted" {
        return 100;
    }
    if position == 0 {
        return 0;
    }
    let first = first.max(position);
    (first - position + 1) * 100 / (first + 1)
}

/// A human ETA range ("about 2–4 minutes"); the script has the same wording.
pub(crate) fn eta_text(p50: Option<u64>, p90: Option<u64>) -> String {
    match (p50, p90) {
        (Some(a), Some(b)) => {
            let b = b.max(a);
            if b < 60 {
                "less than a minute".to_string()
            } else {
                let (lo, hi) = (a.div_ceil(60).max(1), b.div_ceil(60));
                if lo == hi {
                    format!("about {lo} minute{}", if lo == 1 { "" } else { "s" })
                } else {
                    format!("about {lo}–{hi} minutes")
                }
            }
        }
        _ => "not known yet".to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::check_template;

    fn view<'a>(message: &'a str, return_url: &'a str) -> PageView<'a> {
        PageView {
            room: "drop",
            state: "waiting",
            position: 3,
            first_position: 9,
            eta: (Some(30), Some(150)),
            remaining: Some(7),
            message,
            poll_after_ms: 1500,
            return_url,
            position_url: "/_rushgate/v1/rooms/drop/position",
            opens_in_ms: None,
            pow: None,
        }
    }

    #[test]
    fn builtin_page_uses_only_known_placeholders_and_escapes_values() {
        check_template(BUILTIN).unwrap();
        let html = Template::builtin().render(&view("<b>hi</b>", "/p?a=1&b=</script>"));
        assert!(html.contains("&lt;b&gt;hi&lt;/b&gt;"));
        assert!(!html.contains("<b>hi"));
        assert!(!html.contains("b=</script>"));
        assert!(html.contains("aria-live"));
        assert!(!html.contains("{{"), "unfilled placeholder");
        assert!(html.contains("http-equiv=\"refresh\" content=\"2\""));
    }

    #[test]
    fn the_pow_state_carries_the_challenge_to_the_script() {
        let mut v = view("", "/p");
        v.state = "pow";
        v.position = 0;
        v.pow = Some(PowView {
            challenge: "drop.10.1795000120.AAAAAAAAAAAAAAAA.BBBBBBBBBBBB.CCCC",
            difficulty: 10,
            expires_in_ms: 120_000,
            worker_url: "/_rushgate/v1/pow/worker.js",
            cookie: "rg_pow_drop",
        });
        let html = Template::builtin().render(&v);
        assert!(html.contains("data-state=\"pow\""));
        assert!(html.contains("Just a moment"));
        assert!(html.contains("\"difficulty\":10"));
        assert!(html.contains("drop.10.1795000120.AAAAAAAAAAAAAAAA.BBBBBBBBBBBB.CCCC"));
        assert!(html.contains("/_rushgate/v1/pow/worker.js"));
        assert!(html.contains("data-rg=\"pow-progress\""));
        assert!(html.contains("http-equiv=\"refresh\" content=\"30\""));
        assert!(!html.contains("{{"), "unfilled placeholder");
    }

    #[test]
    fn eta_and_progress_read_well() {
        assert_eq!(eta_text(Some(10), Some(40)), "less than a minute");
        assert_eq!(eta_text(Some(30), Some(150)), "about 1–3 minutes");
        assert_eq!(eta_text(Some(120), Some(120)), "about 2 minutes");
        assert_eq!(eta_text(None, None), "not known yet");
        assert_eq!(progress_percent(9, 9, "waiting"), 10);
        assert_eq!(progress_percent(9, 1, "waiting"), 90);
        assert_eq!(progress_percent(1, 1, "admitted"), 100);
    }
}
