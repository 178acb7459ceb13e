//! Building blocks shared by the scenario tests.
use std::time::Duration;

use serde_json::Value;

use crate::{Netns, process::field};

/// A port nothing listens on inside a fresh namespace.
pub const CLOSED_PORT: &str = "47";

/// An nftables table `inet tt` with `rule` in its `out` chain (output hook: what this host
/// sends, e.g. REJECT or DROP of SYNs) and an empty `in` chain (input hook). To blackhole an
/// established flow as a remote path would, add a drop to `in`: the segments leave the sender
/// (TCP sees them sent and retransmits) but never arrive.
pub fn table(rule: &str) -> String {
    format!(
        "table inet tt {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n    {rule}\n  }}\n  chain in {{\n    type filter hook input priority 0; policy accept;\n  }}\n}}\n"
    )
}

/// nft commands that silently drop everything arriving for `port` (an established flow dies).
pub fn blackhole_port(port: &str) -> String {
    format!("add rule inet tt in tcp dport {port} drop\n")
}

/// A listener of the test client on a free loopback port of `ns` (`extra`: more `listen`
/// flags), with that port.
pub fn listener(ns: &Netns, extra: &[&str]) -> (crate::Proc, String) {
    let mut args = vec!["listen", "--addr", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let server = ns.client(&args);
    let port = field(
        &server.wait_line("listening", Duration::from_secs(10)),
        "port",
    )
    .expect("the listener says its port")
    .to_string();
    (server, port)
}

/// The client's lines, checked to have exited 0.
pub fn client_run(ns: &Netns, args: &[&str], timeout: Duration) -> (u32, Vec<String>) {
    let client = ns.client(args);
    let pid = client.pid();
    let (status, lines) = client.wait(timeout);
    assert!(status.success(), "client failed: {status}");
    (pid, lines)
}

pub fn sport_of(line: &str) -> u64 {
    field(line, "sport")
        .and_then(|p| p.parse().ok())
        .expect("sport in client line")
}

pub fn for_port(port: u64) -> impl Fn(&Value) -> bool {
    move |r: &Value| r["dst"]["port"] == port
}

pub fn assert_process(r: &Value, pid: u32) {
    assert_eq!(r["process"]["pid"], pid, "{r}");
    assert_eq!(r["process"]["comm"], "tt-client", "{r}");
    assert_eq!(r["process"]["uid"], 0, "{r}");
}

/// A plain HTTP/1.0 GET to a server on loopback; returns the body of a 200 response (else the
/// status line and the body, as the error).
pub fn http_get(addr: std::net::SocketAddr, path_and_query: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        conn,
        "GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    conn.read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no HTTP header")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(format!(
            "HTTP error: {}: {}",
            head.lines().next().unwrap_or(""),
            body.trim()
        ));
    }
    Ok(body.to_string())
}

/// Percent-encodes a URL query value.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A free TCP port on 127.0.0.1 (for a server that must be told its port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
