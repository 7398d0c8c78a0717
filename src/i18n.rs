//! The languages of the built-in waiting page: which ones rushgate ships, how a request's
//! `Accept-Language` picks one of a room's, and every string the page shows in each
//! (`web/i18n.json`, embedded), ETA phrases and their plural forms included.
//!
//! A leaf: config checks `rooms[].languages` and `{{t:key}}` placeholders against it, the
//! HTTP layer negotiates and renders with it.

use std::collections::HashMap;
use std::sync::LazyLock;

/// The string table: language code → key → text.
const TABLE: &str = include_str!("../web/i18n.json");

/// Every language rushgate ships, in the order a room offers them by default. Codes are the
/// primary language subtags an `Accept-Language` header names (`zh` is simplified Chinese).
pub const LANGUAGES: [&str; 7] = ["en", "ko", "ja", "zh", "es", "de", "fr"];

/// The language a room falls back to when none of its languages is asked for.
pub const DEFAULT_LANGUAGE: &str = "en";

type Strings = HashMap<String, HashMap<String, String>>;

static STRINGS: LazyLock<Strings> = LazyLock::new(|| {
    // The table is part of the binary and checked by the tests below: a parse failure is a
    // build defect, and an empty table makes every lookup fall back to the key itself.
    serde_json::from_str(TABLE).unwrap_or_default()
});

/// Whether `code` is one of [`LANGUAGES`].
pub fn is_supported(code: &str) -> bool {
    LANGUAGES.contains(&code)
}

/// Whether the table has a string `key` (the keys `{{t:key}}` may name).
pub fn has_key(key: &str) -> bool {
    STRINGS
        .get(DEFAULT_LANGUAGE)
        .is_some_and(|s| s.contains_key(key))
}

/// The text of `key` in `lang`, or in English when `lang` lacks it, or the key itself when no
/// language has it (so a missing string shows as its name, never as nothing).
pub fn text<'a>(lang: &str, key: &'a str) -> &'a str {
    let found = STRINGS
        .get(lang)
        .and_then(|s| s.get(key))
        .or_else(|| STRINGS.get(DEFAULT_LANGUAGE).and_then(|s| s.get(key)));
    match found {
        // The table lives for the whole process.
        Some(t) => {
            let t: &'static str = t.as_str();
            t
        }
        None => key,
    }
}

/// Every string of `lang` (English where it lacks one), for the page's script.
pub fn strings(lang: &str) -> HashMap<&'static str, &'static str> {
    let mut out: HashMap<&'static str, &'static str> = HashMap::new();
    for code in [DEFAULT_LANGUAGE, lang] {
        if let Some(s) = STRINGS.get(code) {
            for (k, v) in s {
                out.insert(k.as_str(), v.as_str());
            }
        }
    }
    out
}

/// The BCP 47 tag for `<html lang>` (`zh` → `zh-Hans`).
pub fn tag(lang: &str) -> &'static str {
    text(lang, "tag")
}

/// The writing direction for `<html dir>` (`ltr` / `rtl`).
pub fn dir(lang: &str) -> &'static str {
    text(lang, "dir")
}

/// Whether `n` takes the singular ("one") form in `lang` (CLDR cardinal rules, integers):
/// English, Spanish and German for 1, French for 0 and 1; Korean, Japanese and Chinese have no
/// plural forms.
pub fn plural_is_one(lang: &str, n: u64) -> bool {
    match lang {
        "fr" => n <= 1,
        "ko" | "ja" | "zh" => false,
        _ => n == 1,
    }
}

/// The human ETA range for a waiter ("about 2–4 minutes", "약 2–4분"); the page's script words
/// it the same way from the same strings.
pub fn eta_text(lang: &str, p50: Option<u64>, p90: Option<u64>) -> String {
    match (p50, p90) {
        (Some(a), Some(b)) => {
            let b = b.max(a);
            if b < 60 {
                return text(lang, "eta_under_minute").to_string();
            }
            let (lo, hi) = (a.div_ceil(60).max(1), b.div_ceil(60));
            if lo == hi {
                let key = if plural_is_one(lang, lo) {
                    "eta_minutes_one"
                } else {
                    "eta_minutes_other"
                };
                text(lang, key).replace("{n}", &lo.to_string())
            } else {
                text(lang, "eta_range")
                    .replace("{lo}", &lo.to_string())
                    .replace("{hi}", &hi.to_string())
            }
        }
        _ => text(lang, "eta_unknown").to_string(),
    }
}

/// The language to answer in: the first of `offered` that `accept_language` (an
/// `Accept-Language` header) asks for, highest quality first (ties in the header's order), by
/// primary subtag (`ko-KR` asks for `ko`, `zh-CN` and `zh-TW` for `zh`); `default` when it asks
/// for none of them, is absent, or cannot be read. Ranges with `q=0` are refused, `*` matches
/// nothing in particular.
pub fn negotiate<'a>(
    accept_language: Option<&str>,
    offered: &'a [String],
    default: &'a str,
) -> &'a str {
    let Some(header) = accept_language else {
        return default;
    };
    let mut ranges: Vec<(u32, usize, String)> = Vec::new();
    // A header longer than this is not a browser's; the first part is enough.
    for (i, part) in header.split(',').take(32).enumerate() {
        let mut pieces = part.split(';');
        let range = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
        let mut q = 1000u32;
        for p in pieces {
            if let Some(v) = p.trim().strip_prefix("q=") {
                q = v
                    .trim()
                    .parse::<f32>()
                    .map(|f| (f.clamp(0.0, 1.0) * 1000.0).round() as u32)
                    .unwrap_or(0);
            }
        }
        if q > 0 && !range.is_empty() && range != "*" {
            ranges.push((q, i, range));
        }
    }
    ranges.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, _, range) in &ranges {
        let primary = range.split('-').next().unwrap_or("");
        if let Some(code) = offered.iter().find(|o| o.as_str() == primary) {
            return code;
        }
    }
    default
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn offered() -> Vec<String> {
        LANGUAGES.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_language_has_every_string() {
        let table: Strings = serde_json::from_str(TABLE).unwrap();
        let en = &table["en"];
        for lang in LANGUAGES {
            let strings = table.get(lang).unwrap_or_else(|| panic!("{lang} missing"));
            for key in en.keys() {
                // Languages without a singular form need no `_one` strings.
                if key.ends_with("_one") && !plural_is_one(lang, 1) {
                    continue;
                }
                let text = strings
                    .get(key)
                    .unwrap_or_else(|| panic!("{lang} lacks {key}"));
                assert!(!text.is_empty(), "{lang}.{key} is empty");
                // Markers survive translation.
                for marker in ["{countdown}", "{seconds}", "{code}", "{n}", "{lo}", "{hi}"] {
                    assert_eq!(
                        en[key].contains(marker),
                        text.contains(marker),
                        "{lang}.{key}: {marker}"
                    );
                }
            }
            for key in strings.keys() {
                assert!(en.contains_key(key), "{lang}.{key} is not an English key");
            }
        }
        assert_eq!(table.len(), LANGUAGES.len());
    }

    #[test]
    fn accept_language_picks_the_best_offered_language() {
        let all = offered();
        assert_eq!(
            negotiate(Some("ko-KR,ko;q=0.9,en-US;q=0.8"), &all, "en"),
            "ko"
        );
        assert_eq!(negotiate(Some("en;q=0.5, ja"), &all, "en"), "ja");
        assert_eq!(negotiate(Some("zh-TW"), &all, "en"), "zh");
        assert_eq!(negotiate(Some("pt-BR, fr;q=0.3"), &all, "en"), "fr");
        assert_eq!(negotiate(Some("pt-BR, *"), &all, "de"), "de");
        assert_eq!(negotiate(Some("ko;q=0, es"), &all, "en"), "es");
        assert_eq!(negotiate(Some("ko;q=0"), &all, "en"), "en");
        assert_eq!(negotiate(Some(";;;,,,q=x"), &all, "en"), "en");
        assert_eq!(negotiate(None, &all, "fr"), "fr");
        // Only the room's languages count.
        let some = vec!["en".to_string(), "ko".to_string()];
        assert_eq!(negotiate(Some("ja, ko;q=0.5"), &some, "en"), "ko");
        assert_eq!(negotiate(Some("ja"), &some, "en"), "en");
    }

    #[test]
    fn eta_phrases_follow_each_languages_plural_rules() {
        assert_eq!(eta_text("en", Some(10), Some(40)), "less than a minute");
        assert_eq!(eta_text("en", Some(30), Some(150)), "about 1–3 minutes");
        assert_eq!(eta_text("en", Some(60), Some(60)), "about 1 minute");
        assert_eq!(eta_text("en", Some(120), Some(120)), "about 2 minutes");
        assert_eq!(eta_text("en", None, None), "not known yet");
        assert_eq!(eta_text("ko", Some(60), Some(60)), "약 1분");
        assert_eq!(eta_text("ko", Some(30), Some(150)), "약 1–3분");
        assert_eq!(eta_text("de", Some(60), Some(60)), "etwa 1 Minute");
        assert_eq!(eta_text("de", Some(120), Some(120)), "etwa 2 Minuten");
        assert_eq!(eta_text("fr", Some(60), Some(60)), "environ 1 minute");
        assert_eq!(eta_text("ja", Some(120), Some(120)), "約2分");
        assert_eq!(tag("zh"), "zh-Hans");
        assert_eq!(dir("ko"), "ltr");
        assert_eq!(text("xx", "continue"), "Continue");
        assert_eq!(text("ko", "no_such_key"), "no_such_key");
    }
}
