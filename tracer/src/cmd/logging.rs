//! Diagnostics go to stderr as `tracer: …` lines (stdout carries only records).
use std::io::Write;

pub fn init() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|buf, record| match record.level() {
            log::Level::Info => writeln!(buf, "tracer: {}", record.args()),
            level => writeln!(
                buf,
                "tracer: {}: {}",
                level.as_str().to_lowercase(),
                record.args()
            ),
        })
        .target(env_logger::Target::Stderr)
        .init();
}
