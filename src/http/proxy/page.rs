//! The waiting page: the built-in one (`web/waiting.html`, embedded) or a shop's own template
//! (`rooms[].page_template`), both filled by plain `{{placeholder}}` replacement with every value
//! HTML-escaped, so a template can never be made to run a shopper's input. The placeholder
//! syntax and the check of a shop's template are config's ([`crate::config::fill`],
//! [`crate::config::read_template`]), so a template that validates is one that loads.

use std::path::Path;
use std::sync::Arc;

use crate::config::fill;
use crate::config::read_template;
use crate::i18n;

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
    /// The operator's note, in `lang`.
    pub(crate) message: &'a str,
    /// The language of the page (one of [`crate::i18n::LANGUAGES`]).
    pub(crate) lang: &'a str,
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
        let lang = view.lang;
        let eta = i18n::eta_text(lang, view.eta.0, view.eta.1);
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
            "lang": i18n::tag(lang),
            "plural_one": i18n::plural_is_one(lang, 1),
            "t": i18n::strings(lang),
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
            "headline" => Some(escape(headline(lang, view.state))),
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
            "lang" => Some(i18n::tag(lang).to_string()),
            "dir" => Some(i18n::dir(lang).to_string()),
            _ => name.strip_prefix("t:").map(|key| translated(lang, key)),
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

fn headline(lang: &str, state: &str) -> &'static str {
    let key = match state {
        "waiting" => "headline_waiting",
        "admitted" => "headline_admitted",
        "sold_out" => "headline_sold_out",
        "closed" => "headline_closed",
        "prequeue" => "headline_prequeue",
        "transferred" => "headline_transferred",
        "pow" => "headline_pow",
        "held" => "headline_held",
        _ => "headline_expired",
    };
    i18n::text(lang, key)
}

/// The page's string `key` in `lang`, HTML-escaped, with its markers made into the elements
/// the script fills (`{countdown}`, `{seconds}`, `{code}`).
fn translated(lang: &str, key: &str) -> String {
    escape(i18n::text(lang, key))
        .replace("{countdown}", "<strong data-rg=\"countdown\"></strong>")
        .replace("{seconds}", "<span data-rg=\"move-expires\"></span>")
        .replace("{code}", "<code data-rg=\"move-text\"></code>")
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
            lang: "en",
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
    fn the_page_speaks_the_requests_language() {
        for lang in i18n::LANGUAGES {
            let mut v = view("", "/p");
            v.lang = lang;
            let html = Template::builtin().render(&v);
            assert!(!html.contains("{{"), "{lang}: unfilled placeholder");
            assert!(html.contains(&format!("<html lang=\"{}\" dir=\"ltr\">", i18n::tag(lang))));
            assert!(
                html.contains(&escape(i18n::text(lang, "headline_waiting"))),
                "{lang}"
            );
            assert!(
                html.contains(&escape(i18n::text(lang, "position_label"))),
                "{lang}"
            );
            assert!(
                html.contains(&escape(&i18n::eta_text(lang, Some(30), Some(150)))),
                "{lang}"
            );
            assert!(
                html.contains("<strong data-rg=\"countdown\"></strong>"),
                "{lang}"
            );
        }
        let mut v = view("", "/p");
        v.lang = "ko";
        let html = Template::builtin().render(&v);
        assert!(html.contains("대기 중입니다"));
        assert!(html.contains("약 1–3분"));
        assert!(!html.contains("You are in line"));
    }

    #[test]
    fn progress_reads_well() {
        assert_eq!(progress_percent(9, 9, "waiting"), 10);
        assert_eq!(progress_percent(9, 1, "waiting"), 90);
        assert_eq!(progress_percent(1, 1, "admitted"), 100);
    }
}
