//! The tracer binary's user-facing errors and subcommands.
use std::{
    ffi::{OsStr, OsString},
    io::Read,
    os::unix::ffi::OsStringExt,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use tracer_tests::{require_kernel, schema, tracer_bin};

fn tracer(args: &[&str]) -> Output {
    Command::new(tracer_bin().unwrap())
        .args(args)
        .output()
        .expect("run tracer")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let o = tracer(&["--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--no-such-flag"), "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "nothing on stdout");
}

#[test]
fn bad_value_names_the_flag_and_the_form() {
    let o = tracer(&["run", "--ring-buffer-kib", "3"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("--ring-buffer-kib") && e.contains("power of two"),
        "{e}"
    );
}

#[test]
fn missing_tracefs_says_how_to_mount_it() {
    require_kernel();
    let o = tracer(&["run", "--tracefs", "/nonexistent/tracefs"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("tracefs is not mounted") && e.contains("mount -t tracefs"),
        "{e}"
    );
    assert!(!e.contains("attached"), "nothing was loaded: {e}");
    assert!(o.stdout.is_empty());
}

#[test]
fn without_privileges_names_the_missing_capabilities() {
    require_kernel();
    let o = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(tracer_bin().unwrap())
        .output()
        .expect("setpriv");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("CAP_BPF") && e.contains("CAP_PERFMON") && e.contains("sudo"),
        "{e}"
    );
    assert!(!e.contains("attached"), "nothing was loaded: {e}");
}

/// A non-root user with CAP_BPF and CAP_PERFMON but not CAP_DAC_READ_SEARCH cannot look into
/// tracefs (root's, mode 0700): the error says so and names the missing capability, rather than
/// calling tracefs unmounted.
#[test]
fn unreadable_tracefs_names_the_capability_that_reads_it() {
    require_kernel();
    let mode = std::fs::metadata("/sys/kernel/tracing")
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .expect("tracefs at /sys/kernel/tracing (cargo xtask setup mounts it)");
    assert_eq!(
        mode, 0o700,
        "the test needs tracefs to be root's only, as on Debian"
    );
    let o = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all,+bpf,+perfmon",
            "--ambient-caps=+bpf,+perfmon",
            "--bounding-set=-all,+bpf,+perfmon",
        ])
        .arg(tracer_bin().unwrap())
        .args(["run", "--tracefs", "/sys/kernel/tracing"])
        .output()
        .expect("setpriv");
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("cannot be read") && e.contains("CAP_DAC_READ_SEARCH"),
        "{e}"
    );
    assert!(!e.contains("not mounted"), "{e}");
}

#[test]
fn check_reports_every_hook_and_field_ok() {
    require_kernel();
    let o = tracer(&["check"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    for hook in [
        "sock:inet_sock_set_state",
        "tcp:tcp_retransmit_skb",
        "tcp:tcp_receive_reset",
        "tcp:tcp_send_reset",
        "sock:inet_sk_error_report",
        "tcp:tcp_destroy_sock",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with("ok") && l.contains(hook)),
            "{hook} in:\n{out}"
        );
    }
    for field in [
        "sock.sk_err",
        "sock.sk_err_soft",
        "net.ns.inum",
        "icsk_retransmits",
        "icsk_probes_out",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("ok") && l.contains(field)),
            "{field} in:\n{out}"
        );
    }
}

#[test]
fn check_fails_when_tracefs_is_missing() {
    let o = tracer(&["check", "--tracefs", "/nonexistent/tracefs"]);
    assert!(!o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.lines()
            .any(|l| l.starts_with("missing") && l.contains("tracefs")),
        "{out}"
    );
}

#[test]
fn schema_command_prints_the_shipped_schema() {
    let o = tracer(&["schema"]);
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout), schema::SCHEMA);
    schema::validate(&[]); // it compiles as a JSON Schema
}

#[test]
fn top_needs_a_terminal() {
    let o = tracer(&["top"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("needs a terminal") && e.contains("tracer run"),
        "{e}"
    );
}

/// Runs the tracer with `args` and these environment variables (and no other `TRACER_*`), as
/// root, for at most 10 s: its exit code (`None`: still running then, killed) and its stderr.
fn run_with_env(args: &[&OsStr], env: &[(&str, &OsStr)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(tracer_bin().unwrap());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TRACER_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tracer");
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (code, reader.join().unwrap())
}

/// Hostile values in the environment (and one argument that is not UTF-8): each is a usage
/// error, exit 2, naming the variable and what it accepts, before anything is loaded; no
/// panic, and no value can start a log line of its own.
#[test]
fn hostile_environment_values_are_usage_errors_before_anything_is_loaded() {
    require_kernel(); // root: a value let through would load the programs
    let s = |v: &str| OsString::from(v);
    let run = [s("run"), s("--netns"), s("1")];
    let endpoint = ("TRACER_OTLP_ENDPOINT", s("http://127.0.0.1:4318"));
    // (the environment, the variable the error names, what it says is accepted)
    type Case<'a> = (Vec<(&'a str, OsString)>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![("TRACER_STATS_INTERVAL", s("18446744073709551615"))],
            "TRACER_STATS_INTERVAL",
            "0 (off) to 86400",
        ),
        (
            vec![("TRACER_SUMMARY_INTERVAL", s("18446744073709551615"))],
            "TRACER_SUMMARY_INTERVAL",
            "0 (off) to 86400",
        ),
        (
            vec![("TRACER_STATS_INTERVAL", s("86401"))],
            "TRACER_STATS_INTERVAL",
            "0 (off) to 86400",
        ),
        (
            vec![("TRACER_SUMMARY_INTERVAL", s("-1"))],
            "TRACER_SUMMARY_INTERVAL",
            "0 (off) to 86400",
        ),
        (
            vec![
                endpoint.clone(),
                ("TRACER_OTLP_METRICS_INTERVAL", s("99999999999999999999999")),
            ],
            "TRACER_OTLP_METRICS_INTERVAL",
            "0 (off) to 86400",
        ),
        (
            vec![("TRACER_OTLP_ENDPOINT", s("http://127.0.0.1:99999"))],
            "TRACER_OTLP_ENDPOINT",
            "1..=65535",
        ),
        (
            vec![("TRACER_OTLP_ENDPOINT", s("http://127.0.0.1:0"))],
            "TRACER_OTLP_ENDPOINT",
            "1..=65535",
        ),
        (
            vec![("TRACER_OTLP_ENDPOINT", s("http://[::1]:65536/otlp"))],
            "TRACER_OTLP_ENDPOINT",
            "1..=65535",
        ),
        (
            vec![(
                "TRACER_PORT",
                s("1\ntracer: error: forged by the environment"),
            )],
            "TRACER_PORT",
            "--port",
        ),
        (
            vec![(
                "TRACER_STATS_INTERVAL",
                OsString::from_vec(vec![b'1', 0xff]),
            )],
            "TRACER_STATS_INTERVAL",
            "not UTF-8",
        ),
    ];
    for (env, names, accepts) in &cases {
        let env: Vec<(&str, &OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        let args: Vec<&OsStr> = run.iter().map(OsString::as_os_str).collect();
        let (code, e) = run_with_env(&args, &env);
        let case = format!("{env:?}");
        assert_eq!(code, Some(2), "{case}: exit code, stderr:\n{e}");
        assert!(
            e.contains(names) && e.contains(accepts),
            "{case}: names {names} and {accepts}:\n{e}"
        );
        assert!(!e.contains("panicked"), "{case}:\n{e}");
        assert!(!e.contains("attached"), "{case}: nothing was loaded:\n{e}");
        assert!(
            !e.lines().any(|l| l.starts_with("tracer: error: forged")),
            "{case}: a forged line:\n{e}"
        );
    }
    // An argument that is not UTF-8 (the error path read the arguments as UTF-8 and panicked).
    let bad = OsString::from_vec(vec![0xff, 0xfe]);
    for args in [vec![s("run"), s("--comm"), bad.clone()], vec![bad.clone()]] {
        let args: Vec<&OsStr> = args.iter().map(OsString::as_os_str).collect();
        let (code, e) = run_with_env(&args, &[]);
        assert_eq!(code, Some(2), "{args:?}:\n{e}");
        assert!(
            !e.contains("panicked") && !e.contains("attached"),
            "{args:?}:\n{e}"
        );
    }
}
