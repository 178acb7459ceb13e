//! The tracer binary's user-facing errors and subcommands.
use std::process::{Command, Output};

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
