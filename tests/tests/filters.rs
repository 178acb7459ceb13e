//! `--port`, `--dst`, `--pid` and `--comm`: connections that do not match are not traced at all
//! (filtered in the kernel). Each test makes a non-matching connection first and a matching
//! one last; once the matching record is in, the other one would have been too.
use std::time::Duration;

use serde_json::Value;
use tracer_tests::{
    Netns, Tracer,
    scenario::{client_run, for_port},
};

const WAIT: Duration = Duration::from_secs(10);

fn only(tracer: Tracer, matching: impl Fn(&Value) -> bool) -> Value {
    tracer.wait_failures(1, WAIT, &matching);
    let stopped = tracer.finish_with(1);
    let r = stopped.failures.into_iter().next().unwrap();
    assert!(matching(&r), "{r}");
    r
}

#[test]
fn port_filter() {
    let ns = Netns::new("fport");
    let tracer = Tracer::start(&ns, &["--port", "47", "--port", "1"]);
    client_run(&ns, &["connect", "--addr", "127.0.0.1:48"], WAIT);
    client_run(&ns, &["connect", "--addr", "127.0.0.1:47"], WAIT);
    only(tracer, for_port(47));
}

#[test]
fn destination_prefix_filter() {
    let ns = Netns::new("fdst");
    let tracer = Tracer::start(&ns, &["--dst", "127.0.0.2/32", "--dst", "fd00::/8"]);
    client_run(&ns, &["connect", "--addr", "127.0.0.1:47"], WAIT);
    client_run(&ns, &["connect", "--addr", "[::1]:47"], WAIT);
    client_run(&ns, &["connect", "--addr", "127.0.0.2:47"], WAIT);
    only(tracer, |r| r["dst"]["ip"] == "127.0.0.2");
}

#[test]
fn pid_filter() {
    let ns = Netns::new("fpid");
    let mut chosen = ns.client(&["connect", "--addr", "127.0.0.1:47", "--after-line"]);
    chosen.wait_line("ready", WAIT);
    let tracer = Tracer::start(&ns, &["--pid", &chosen.pid().to_string()]);
    client_run(&ns, &["connect", "--addr", "127.0.0.1:47"], WAIT);
    chosen.send_line("go");
    let pid = chosen.pid();
    chosen.wait(WAIT);
    only(tracer, |r| r["process"]["pid"] == pid);
}

#[test]
fn comm_filter() {
    let ns = Netns::new("fcomm");
    // The same client under another name.
    let dir = std::env::temp_dir().join(format!("tt-fcomm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let renamed = dir.join("other-client");
    std::fs::copy(tracer_tests::client_bin(), &renamed).unwrap();
    let tracer = Tracer::start(&ns, &["--comm", "other-client"]);
    client_run(&ns, &["connect", "--addr", "127.0.0.1:47"], WAIT);
    let other = ns.spawn(&renamed, &["connect", "--addr", "127.0.0.1:48"]);
    other.wait(WAIT);
    let _ = std::fs::remove_dir_all(&dir);
    only(tracer, |r| {
        r["process"]["comm"] == "other-client" && r["dst"]["port"] == 48
    });
}

#[test]
fn filter_values_are_validated_with_the_accepted_form() {
    let bin = tracer_tests::tracer_bin().unwrap();
    for (args, needle) in [
        (vec!["--dst", "10.0.0.0/40"], "CIDR"),
        (vec!["--port", "0"], "--port"),
        (vec!["--comm", "a-name-longer-than-15"], "15 bytes"),
        (
            vec!["--successes", "--failures-only"],
            "cannot be used with",
        ),
        (vec!["--output", "tcp:nohost"], "tcp:HOST:PORT"),
        (vec!["--metrics-addr", "somewhere"], "IP:PORT"),
    ] {
        let o = std::process::Command::new(&bin)
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let ports: Vec<String> = (1..=17)
        .flat_map(|p| ["--port".to_string(), p.to_string()])
        .collect();
    let o = std::process::Command::new(&bin)
        .args(&ports)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("at most 16 values of --port"), "{err}");
}
