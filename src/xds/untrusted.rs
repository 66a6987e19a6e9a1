//! Text a client controls (a NACK's message, the version it names, its node id), made safe for
//! a log line or a debug view: control characters escaped (a newline cannot start a forged
//! line), the length bounded, and NACK log lines limited in rate across all streams, the
//! rest counted and said in the next line logged.

use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest client text a log line carries, in bytes.
pub const LOG_BYTES: usize = 256;
/// The longest NACK message kept for debug views, in bytes.
pub const VIEW_BYTES: usize = 4096;

/// `text` with control characters escaped (`\n`, `\u{1b}`, ...), cut to at most `max` bytes
/// of the original on a character boundary, and the cut said (`…(+N bytes)`).
pub fn clip(text: &str, max: usize) -> String {
    let mut cut = text.len().min(max);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = String::with_capacity(cut + 16);
    for c in text[..cut].chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if cut < text.len() {
        let _ = write!(out, "…(+{} bytes)", text.len() - cut);
    }
    out
}

/// How many NACK lines may be logged per window, across all streams.
const LOG_BUDGET: u32 = 20;
const LOG_WINDOW: Duration = Duration::from_secs(10);

struct Budget {
    window_start: Option<Instant>,
    used: u32,
    suppressed: u64,
}

static BUDGET: Mutex<Budget> = Mutex::new(Budget {
    window_start: None,
    used: 0,
    suppressed: 0,
});

/// Whether a NACK may be logged now; `Some(n)`: yes, `n` lines having been suppressed since
/// the last one logged.
pub fn may_log() -> Option<u64> {
    let mut b = BUDGET.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    if b.window_start
        .is_none_or(|s| now.duration_since(s) >= LOG_WINDOW)
    {
        b.window_start = Some(now);
        b.used = 0;
    }
    if b.used >= LOG_BUDGET {
        b.suppressed += 1;
        return None;
    }
    b.used += 1;
    Some(std::mem::take(&mut b.suppressed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_length_bounded() {
        assert_eq!(clip("bad cluster", 256), "bad cluster");
        let forged = "x\n2026-12-08T00:00:00Z ERROR bowline::ca: root key leaked";
        let c = clip(forged, 256);
        assert!(!c.contains('\n'), "{c}");
        assert!(c.starts_with("x\\n2026"), "{c}");
        assert_eq!(clip("\u{1b}[31mred", 256), "\\u{1b}[31mred");
        let big = "é".repeat(1000);
        let c = clip(&big, 255);
        assert!(c.starts_with("éé") && c.ends_with("…(+1746 bytes)"), "{c}");
        assert!(c.len() < 300);
    }

    #[test]
    fn nack_lines_are_limited_per_window() {
        let allowed = (0..LOG_BUDGET * 3).filter(|_| may_log().is_some()).count();
        // Other tests of this process may have taken some of the window's budget.
        assert!(allowed <= LOG_BUDGET as usize, "{allowed}");
        assert!(may_log().is_none());
    }
}
