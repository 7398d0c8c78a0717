//! The one wall clock. Rules that depend on time take `now` as an argument (one reading per
//! request, passed down), so tests and the embedded store run them under controlled time.

/// Current wall-clock time in ms since the Unix epoch (0 if the clock reads before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
