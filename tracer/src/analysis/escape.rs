//! Text from outside (a Collector's message, a DNS name, a cgroup or process name, a path, a
//! flag's value) made safe for one log line: every character that could end the line, start
//! another, move the cursor or reorder what a terminal shows is written as an escape.
//!
//! Escaped: the C0 controls (`\n`, `\r`, `\t` as such, the rest as `\u{1b}`), DEL and the C1
//! controls (U+0080–U+009F), the Unicode line and paragraph separators (U+2028, U+2029) and the
//! bidirectional controls (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069). Everything
//! else, backslashes included, is kept as it is: a line can hold the text `\n`, never a newline.
//! The stderr logger (`cmd::logging`) runs every message through `Escaped`, so no log call can
//! forge a line; sources that format outside text use it too, so that what they build (an error
//! string, a warning) is safe wherever it goes.
use std::{borrow::Cow, fmt};

/// Whether `c` is written as an escape.
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `s` for a log line: unchanged (borrowed) when nothing in it needs escaping.
pub fn escape(s: &str) -> Cow<'_, str> {
    if s.chars().any(needs_escape) {
        Cow::Owned(Escaped(s).to_string())
    } else {
        Cow::Borrowed(s)
    }
}

/// `s` displayed with its unsafe characters escaped (no allocation).
#[derive(Clone, Copy, Debug)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let mut clean = 0; // start of the run not yet written
        for (i, c) in s.char_indices() {
            if !needs_escape(c) {
                continue;
            }
            f.write_str(&s[clean..i])?;
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c => write!(f, "\\u{{{:x}}}", u32::from(c))?,
            }
            clean = i + c.len_utf8();
        }
        f.write_str(&s[clean..])
    }
}

/// A `fmt::Write` that escapes what is written through it into `inner`: a whole
/// `format_args!` is escaped as it is formatted, without building the string first.
pub struct EscapingWriter<W>(pub W);

impl<W: fmt::Write> fmt::Write for EscapingWriter<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write!(self.0, "{}", Escaped(s))
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write;

    use super::*;

    #[test]
    fn line_breaks_and_controls_are_escaped_the_rest_is_kept() {
        for (raw, want) in [
            ("plain text, ünïcödé 名前 ✓", "plain text, ünïcödé 名前 ✓"),
            ("bad\ntracer: error: forged", "bad\\ntracer: error: forged"),
            ("a\r\nb\tc", "a\\r\\nb\\tc"),
            ("\u{1b}[31mred\u{1b}[0m", "\\u{1b}[31mred\\u{1b}[0m"),
            ("nul\0 bel\u{7} del\u{7f}", "nul\\u{0} bel\\u{7} del\\u{7f}"),
            ("c1\u{85}nel \u{9b}csi", "c1\\u{85}nel \\u{9b}csi"),
            ("ls\u{2028}ps\u{2029}", "ls\\u{2028}ps\\u{2029}"),
            ("rtl\u{202e}txt.exe\u{2066}", "rtl\\u{202e}txt.exe\\u{2066}"),
            ("a literal \\n stays", "a literal \\n stays"),
            ("", ""),
            ("\n", "\\n"),
        ] {
            assert_eq!(escape(raw), want, "{raw:?}");
            assert_eq!(Escaped(raw).to_string(), want, "{raw:?}");
            assert!(!escape(raw).chars().any(needs_escape));
        }
        assert!(matches!(escape("clean"), Cow::Borrowed(_)), "no copy");
    }

    #[test]
    fn every_control_character_is_escaped() {
        for c in (0u32..0x110000).filter_map(char::from_u32) {
            let s = format!("x{c}y");
            let e = escape(&s);
            if needs_escape(c) {
                assert!(e.starts_with("x\\") && e.ends_with('y'), "{c:?} → {e}");
            } else {
                assert_eq!(e, s);
            }
            assert!(!e.contains(['\n', '\r']), "{c:?}");
            assert!(!e.chars().any(char::is_control), "{c:?}");
        }
    }

    #[test]
    fn the_writer_escapes_a_whole_format() {
        let mut out = EscapingWriter(String::new());
        let collector = "ok\n\rtracer: error: forged";
        write!(out, "otlp logs: {collector}; {}", 7).unwrap();
        assert_eq!(out.0, "otlp logs: ok\\n\\rtracer: error: forged; 7");
    }
}
