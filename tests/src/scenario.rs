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
