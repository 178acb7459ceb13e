//! The metrics endpoint scraped by a real Prometheus server (Debian's `prometheus`, started on
//! loopback with its own config and data directory), queried through its HTTP API.
use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tracer_tests::{
    Netns, Proc, Tracer,
    scenario::{client_run, free_port, http_get, url_encode},
    wait_until,
};

#[test]
fn prometheus_scrapes_the_failure_counter_per_destination() {
    let ns = Netns::new("prom");
    let tracer = Tracer::start(&ns, &["--metrics-addr", "127.0.0.1:0"]);
    let metrics: SocketAddr = tracer.metrics_addr();
    let dir = std::env::temp_dir().join(format!("tt-prom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = Cleanup(dir.clone());
    std::fs::write(
        dir.join("prometheus.yml"),
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: tracer\n    static_configs:\n      - targets: ['{metrics}']\n"),
    )
    .unwrap();
    let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!(
        "--config.file={}",
        dir.join("prometheus.yml").display()
    ))
    .arg(format!(
        "--storage.tsdb.path={}",
        dir.join("data").display()
    ))
    .arg(format!("--web.listen-address={web}"));
    let _prometheus = Proc::spawn_with_stderr(cmd, Stdio::null());

    let (_, lines) = client_run(
        &ns,
        &["connect", "--addr", "127.0.0.1:47", "--count", "7"],
        Duration::from_secs(10),
    );
    assert_eq!(lines.len(), 7);
    tracer.wait_failures(7, Duration::from_secs(10), |_| true);

    let query = r#"tracer_connect_failures_total{ip="127.0.0.1",port="47",label="refused"}"#;
    let path = format!("/api/v1/query?query={}", url_encode(query));
    let value = wait_until(
        "Prometheus to have scraped 7 refusals",
        Duration::from_secs(60),
        || {
            let body = http_get(web, &path).ok()?;
            let v: Value = serde_json::from_str(&body).ok()?;
            let value = v["data"]["result"][0]["value"][1].as_str()?.to_string();
            (value == "7").then_some(value)
        },
    );
    assert_eq!(value, "7");
    let text = http_get(metrics, "/metrics").unwrap();
    assert!(
        text.contains(r#"tracer_connect_attempts_total{ip="127.0.0.1",port="47"} 7"#),
        "{text}"
    );
    assert!(text.contains("tracer_lost_events_total 0"), "{text}");
    tracer.finish_with(7);
}

struct Cleanup(std::path::PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
