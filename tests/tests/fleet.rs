//! What a fleet deployment relies on: every flag from a `TRACER_*` environment variable (a
//! unit's environment file, a pod's ConfigMap), a bad value named by its variable, and the
//! probes `/healthz` and `/readyz` on the metrics listener — not ready while the reader is
//! stopped and while records are being lost, ready again after.
use std::{
    io::{Read, Write},
    net::SocketAddr,
    process::Command,
    time::Duration,
};

use tracer_tests::{
    Netns, Tracer, load_bin,
    scenario::{client_run, free_port},
    tracer_bin, wait_until,
};

const WAIT: Duration = Duration::from_secs(10);

/// `GET path` on the tracer's listener: (status, body), or why there was no answer within
/// `timeout`.
fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let mut conn =
        std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = String::new();
    conn.read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no HTTP header")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    Ok((status, body.to_string()))
}

#[test]
fn every_kind_of_flag_is_taken_from_the_environment() {
    let ns = Netns::new("envcfg");
    let inode = ns.inode.to_string();
    let port = free_port().to_string();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let logs = std::env::temp_dir().join(format!("tt-envcfg-{}", std::process::id()));
    let tracer = Tracer::start_from_env(&[
        ("TRACER_NETNS", &inode),                            // a number
        ("TRACER_PORT", "47,48"),                            // a repeatable flag, comma-separated
        ("TRACER_FAILURES_ONLY", "true"),                    // a switch
        ("TRACER_STATS_INTERVAL", "0"),                      // a number with a default
        ("TRACER_METRICS_ADDR", &port),                      // an address
        ("TRACER_METRICS_LABELS", "workload"),               // a value from a set
        ("TRACER_KUBELET_LOG_ROOT", logs.to_str().unwrap()), // a path
    ]);
    for p in [47, 48, 49] {
        client_run(&ns, &["connect", "--addr", &format!("127.0.0.1:{p}")], WAIT);
    }
    tracer.wait_failures(2, WAIT, |r| {
        r["dst"]["port"] == 47 || r["dst"]["port"] == 48
    });
    let (status, body) = get(addr, "/metrics", WAIT).expect("metrics from TRACER_METRICS_ADDR");
    assert_eq!(status, 200);
    assert!(
        body.contains(r#"tracer_connect_failures_total{ip="127.0.0.1",port="47",label="refused""#),
        "{body}"
    );
    let records = tracer.stop();
    assert!(
        records.iter().all(|r| r["type"] != "summary"),
        "TRACER_FAILURES_ONLY: no summaries"
    );
    assert_eq!(
        records.iter().filter(|r| r["type"] == "stats").count(),
        2,
        "TRACER_STATS_INTERVAL=0: the ready and the final stats only"
    );
    assert!(
        records.iter().all(|r| r["dst"]["port"] != 49),
        "TRACER_PORT=47,48 filters port 49 out"
    );
}

#[test]
fn a_bad_value_from_the_environment_names_the_variable() {
    for (var, value, flag) in [
        ("TRACER_RING_BUFFER_KIB", "1000", "--ring-buffer-kib"),
        ("TRACER_PORT", "47,0", "--port"),
        ("TRACER_METRICS_ADDR", "localhost", "--metrics-addr"),
        ("TRACER_POD", "web", "--pod"),
    ] {
        let out = Command::new(tracer_bin().unwrap())
            .arg("run")
            .env(var, value)
            .output()
            .expect("run tracer");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(
            stderr.contains(var) && stderr.contains(flag),
            "{var}={value}: the error names the variable and the flag: {stderr}"
        );
        assert!(out.stdout.is_empty(), "nothing on stdout: {var}");
    }
}

#[test]
fn probes_say_alive_and_ready_and_not_ready_while_records_are_lost() {
    let ns = Netns::new("probes");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let tracer = Tracer::start(
        &ns,
        &[
            "--metrics-addr",
            &port.to_string(),
            "--ring-buffer-kib",
            "64",
            "--stats-interval",
            "0",
        ],
    );
    let short = Duration::from_secs(2);
    assert_eq!(get(addr, "/healthz", short), Ok((200, "ok\n".into())));
    wait_until("/readyz to say ready", WAIT, || {
        (get(addr, "/readyz", short).ok()? == (200, "ready\n".to_string())).then_some(())
    });

    // The reader stopped: no answer at all (a probe's timeout counts as a failure).
    tracer.pause();
    assert!(get(addr, "/readyz", Duration::from_millis(500)).is_err());
    // 20,000 refusals into a 64 KiB ring buffer nobody reads: records are lost.
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(load_bin())
        .args(["--addr", "127.0.0.1:47", "--count", "20000"])
        .output()
        .expect("run tt-load");
    assert!(out.status.success());
    tracer.resume();
    let (status, body) = wait_until("/readyz to report the loss", WAIT, || {
        let (status, body) = get(addr, "/readyz", short).ok()?;
        (status == 503).then_some((status, body))
    });
    assert!(body.contains("records were lost"), "{status} {body}");
    assert_eq!(
        get(addr, "/healthz", short),
        Ok((200, "ok\n".into())),
        "alive all along"
    );
    // Ready again once no loss was seen for a while (10 s).
    wait_until("/readyz to be ready again", Duration::from_secs(20), || {
        (get(addr, "/readyz", short).ok()?.0 == 200).then_some(())
    });
    let stopped = tracer.finish();
    assert!(
        stopped.stats["lost"].as_u64().unwrap() > 0,
        "{}",
        stopped.stats
    );
}
