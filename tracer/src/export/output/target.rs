//! `--output` values: `-` (stdout), `PATH` (a file), `unix:PATH`, `tcp:HOST:PORT`.
use std::{io, path::PathBuf};

use super::{
    Sink,
    file::FileSink,
    socket::{ShipperAddr, SocketSink},
    stdout::StdoutSink,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(PathBuf),
    Socket(ShipperAddr),
}

impl Target {
    pub fn parse(s: &str) -> Result<Self, String> {
        const FORM: &str = "expected -, PATH, unix:PATH or tcp:HOST:PORT";
        if s == "-" {
            return Ok(Target::Stdout);
        }
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!("`{s}`: unix: needs a socket path ({FORM})"));
            }
            return Ok(Target::Socket(ShipperAddr::Unix(path.into())));
        }
        if let Some(addr) = s.strip_prefix("tcp:") {
            let (host, port) = addr
                .rsplit_once(':')
                .ok_or_else(|| format!("`{s}`: tcp: needs HOST:PORT ({FORM})"))?;
            let port: u16 = port
                .parse()
                .map_err(|_| format!("`{s}`: `{port}` is not a port number ({FORM})"))?;
            if host.is_empty() || port == 0 {
                return Err(format!(
                    "`{s}`: tcp: needs a host and a non-zero port ({FORM})"
                ));
            }
            return Ok(Target::Socket(ShipperAddr::Tcp(addr.to_string())));
        }
        if s.is_empty() {
            return Err(format!("empty output target ({FORM})"));
        }
        Ok(Target::File(s.into()))
    }

    pub fn open(&self) -> io::Result<Box<dyn Sink>> {
        Ok(match self {
            Target::Stdout => Box::new(StdoutSink::start()?),
            Target::File(p) => Box::new(FileSink::open(p.clone())?),
            Target::Socket(e) => Box::new(SocketSink::start(e.clone())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(Target::parse("-"), Ok(Target::Stdout));
        assert_eq!(
            Target::parse("/var/log/tracer.ndjson"),
            Ok(Target::File("/var/log/tracer.ndjson".into()))
        );
        assert_eq!(
            Target::parse("unix:/run/vector.sock"),
            Ok(Target::Socket(ShipperAddr::Unix("/run/vector.sock".into())))
        );
        assert_eq!(
            Target::parse("tcp:127.0.0.1:9000"),
            Ok(Target::Socket(ShipperAddr::Tcp("127.0.0.1:9000".into())))
        );
        assert_eq!(
            Target::parse("tcp:[::1]:9000"),
            Ok(Target::Socket(ShipperAddr::Tcp("[::1]:9000".into())))
        );
    }

    #[test]
    fn rejects_malformed_targets_with_the_accepted_form() {
        for bad in [
            "tcp:localhost",
            "tcp::9000",
            "tcp:host:0",
            "tcp:host:http",
            "unix:",
            "",
        ] {
            let e = Target::parse(bad).unwrap_err();
            assert!(e.contains("tcp:HOST:PORT"), "{bad}: {e}");
        }
    }
}
