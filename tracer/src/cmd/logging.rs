//! Diagnostics go to stderr as `tracer: …` lines (stdout carries only records): `tracer: MSG`
//! at info, `tracer: LEVEL: MSG` otherwise. Every message is escaped as it is written
//! (`analysis::escape`): whatever outside text a log call formats (a Collector's message, a
//! DNS, cgroup or process name, a path), one call is one line, and no line can be forged.
use std::{fmt, io};

use crate::analysis::escape::EscapingWriter;

pub fn init() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|buf, record| {
            let mut out = Io {
                w: buf,
                error: None,
            };
            let written = line(&mut out, record.level(), record.args());
            match out.error {
                Some(e) => Err(e),
                None => written.map_err(io::Error::other),
            }
        })
        .target(env_logger::Target::Stderr)
        .init();
}

/// One log line, escaped, with its newline.
fn line(out: &mut impl fmt::Write, level: log::Level, args: &fmt::Arguments<'_>) -> fmt::Result {
    match level {
        log::Level::Info => out.write_str("tracer: ")?,
        level => write!(out, "tracer: {}: ", level.as_str().to_lowercase())?,
    }
    fmt::write(&mut EscapingWriter(&mut *out), *args)?;
    out.write_char('\n')
}

/// `fmt::Write` onto an `io::Write`, keeping the I/O error.
struct Io<'a, W: io::Write> {
    w: &'a mut W,
    error: Option<io::Error>,
}

impl<W: io::Write> fmt::Write for Io<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.w.write_all(s.as_bytes()).map_err(|e| {
            self.error = Some(e);
            fmt::Error
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(level: log::Level, args: fmt::Arguments<'_>) -> String {
        let mut s = String::new();
        line(&mut s, level, &args).unwrap();
        s
    }

    #[test]
    fn one_call_is_one_line_whatever_it_formats() {
        let collector = "rejected\ntracer: error: forged\r\u{1b}[2K";
        assert_eq!(
            render(log::Level::Warn, format_args!("otlp logs: {collector}")),
            "tracer: warn: otlp logs: rejected\\ntracer: error: forged\\r\\u{1b}[2K\n"
        );
        assert_eq!(
            render(log::Level::Info, format_args!("attached {} programs", 9)),
            "tracer: attached 9 programs\n"
        );
        assert_eq!(
            render(log::Level::Error, format_args!("a\tb")),
            "tracer: error: a\\tb\n"
        );
        let s = render(log::Level::Debug, format_args!("{}", "x\n".repeat(100)));
        assert_eq!(s.matches('\n').count(), 1, "{s}");
        assert!(s.starts_with("tracer: debug: x\\nx\\n"));
    }

    #[test]
    fn io_errors_are_kept() {
        struct Full;
        impl io::Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from(io::ErrorKind::StorageFull))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = Full;
        let mut out = Io {
            w: &mut w,
            error: None,
        };
        assert!(line(&mut out, log::Level::Info, &format_args!("x")).is_err());
        assert_eq!(out.error.unwrap().kind(), io::ErrorKind::StorageFull);
    }
}
