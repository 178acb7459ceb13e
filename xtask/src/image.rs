//! `cargo xtask image`: the container image `localhost/tracer:<version>` (and `:latest`), built
//! from `deploy/Containerfile` with the Debian-packaged podman (buildah inside) **without
//! pulling anything**: from scratch, plus the release binary and exactly the shared libraries
//! `ldd` lists for it (with the dynamic loader).
//!
//! Reproducible and fast on a rebuild: the staged files and the image get the commit's time
//! (`--timestamp`), so the same binary gives the same layer and the same image id, and podman's
//! layer cache answers without writing anything.
//!
//! `cargo xtask image --run -- ARGS` then runs it on this host as the DaemonSet runs it in a pod
//! (only CAP_BPF, CAP_PERFMON and CAP_DAC_READ_SEARCH, a read-only root, the host's tracefs,
//! BTF, cgroup v2 and kubelet logs mounted read-only); what differs between hosts (the OCI
//! runtime, the ulimits a container can get, where cgroup v2 is mounted) is a flag or computed
//! here, never part of the image.
use std::{
    fs,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};

/// The image's repository; the tags are the crate version and `latest`.
pub const REPOSITORY: &str = "localhost/tracer";
/// Where the binary lives in the image (the Containerfile's ENTRYPOINT).
const BINARY_IN_IMAGE: &str = "usr/local/bin/tracer";
/// The capabilities the tracer needs (measured: see README, "Deploying on a fleet"), as
/// podman's `--cap-add` and Kubernetes' `capabilities.add` spell them.
pub const CAPABILITIES: [&str; 3] = ["BPF", "PERFMON", "DAC_READ_SEARCH"];

/// A built image, tagged `localhost/tracer:<version>` and `localhost/tracer:latest`.
pub struct Image {
    /// `sha256:…`
    pub id: String,
}

/// Where the image's sources come from: what the OCI labels say.
struct Source {
    /// The commit (`git rev-parse HEAD`), `-dirty` when tracked files differ from it.
    revision: String,
    /// The commit's time, seconds since the epoch: the image's and its files' time.
    epoch: u64,
    /// The same time in RFC 3339 (`git log --format=%cI`), for the `created` label.
    created: String,
    /// `git remote get-url origin`, when there is one.
    url: Option<String>,
}

fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(root)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Source {
    /// Reads the revision and its time from git; outside a git checkout the revision is
    /// `unknown` and the time is the binary's modification time.
    fn read(root: &Path, binary: &Path) -> Self {
        let revision = git(root, &["rev-parse", "HEAD"]).map(|head| {
            let dirty = git(root, &["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty { format!("{head}-dirty") } else { head }
        });
        let epoch = git(root, &["log", "-1", "--format=%ct"])
            .and_then(|s| s.parse().ok())
            .or_else(|| {
                let modified = fs::metadata(binary).ok()?.modified().ok()?;
                Some(modified.duration_since(UNIX_EPOCH).ok()?.as_secs())
            })
            .unwrap_or(0);
        let url = git(root, &["remote", "get-url", "origin"]).filter(|u| !u.is_empty());
        // Outside a git checkout, the binary's time as `date` writes it.
        let created = git(root, &["log", "-1", "--format=%cI"])
            .filter(|c| !c.is_empty())
            .or_else(|| {
                let out = Command::new("date")
                    .args(["-u", "-d", &format!("@{epoch}"), "+%Y-%m-%dT%H:%M:%SZ"])
                    .output()
                    .ok()?;
                out.status
                    .success()
                    .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
            })
            .unwrap_or_else(|| "1970-01-01T00:00:00Z".into());
        Source {
            revision: revision.unwrap_or_else(|| "unknown".into()),
            epoch,
            created,
            url,
        }
    }
}

/// The shared libraries and the dynamic loader `ldd` lists for `program`; none for a static
/// executable ("not a dynamic executable").
fn shared_libraries(program: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(program)
        .stdin(Stdio::null())
        .output()
        .context("cannot run ldd (Debian package libc-bin) to list the tracer's libraries")?;
    if !out.status.success() {
        return Ok(Vec::new());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        if line.contains("not found") {
            bail!(
                "ldd {}: a library is missing on this host: {}",
                program.display(),
                line.trim()
            );
        }
        // `libc.so.6 => /lib/…/libc.so.6 (0x…)`, `/lib64/ld-linux-x86-64.so.2 (0x…)`, or
        // `linux-vdso.so.1 (0x…)` (in the kernel, no file).
        if let Some(path) = line.split_whitespace().find(|w| w.starts_with('/')) {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// Lays out the build context: `context/rootfs/` with the binary at `/usr/local/bin/tracer` and
/// each library at its own path (symlinks followed), every file dated `epoch`.
fn stage(context: &Path, binary: &Path, epoch: u64) -> Result<()> {
    if context.exists() {
        fs::remove_dir_all(context)
            .with_context(|| format!("cannot clear the build context {}", context.display()))?;
    }
    let rootfs = context.join("rootfs");
    let mut files = vec![(binary.to_path_buf(), rootfs.join(BINARY_IN_IMAGE))];
    for lib in shared_libraries(binary)? {
        let relative = lib.strip_prefix("/").expect("ldd lists absolute paths");
        files.push((lib.clone(), rootfs.join(relative)));
    }
    let time = UNIX_EPOCH + Duration::from_secs(epoch);
    for (from, to) in files {
        let parent = to.parent().expect("a file in rootfs/");
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        // fs::copy follows symlinks (libc.so.6 may be one) and keeps the mode bits.
        fs::copy(&from, &to)
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
        fs::File::options()
            .write(true)
            .open(&to)
            .and_then(|f| f.set_modified(time))
            .with_context(|| format!("cannot set the time of {}", to.display()))?;
    }
    Ok(())
}

/// Fails with what to do when podman cannot be run.
fn require_podman() -> Result<()> {
    let ok = Command::new("podman")
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        bail!(
            "cannot run podman: install podman and buildah (`cargo xtask setup` does it on Debian)"
        );
    }
    Ok(())
}

/// Builds the release tracer, stages it with its libraries and builds the image; prints and
/// returns its id and size.
pub fn build() -> Result<Image> {
    require_podman()?;
    let root = crate::workspace_root();
    let binary = crate::build_release()?;
    let source = Source::read(&root, &binary);
    let version = env!("CARGO_PKG_VERSION");
    let dir = crate::target_dir().join("image");
    let context = dir.join("context");
    stage(&context, &binary, source.epoch)?;
    let tags = vec![
        format!("{REPOSITORY}:{version}"),
        format!("{REPOSITORY}:latest"),
    ];
    let iidfile = dir.join("iid");
    let mut cmd = Command::new("podman");
    // `--pull=never`: FROM scratch needs no base image, and nothing may come from a registry.
    cmd.args(["build", "--pull=never", "--layers"])
        .arg("--file")
        .arg(root.join("deploy/Containerfile"))
        .args(["--build-arg", &format!("VERSION={version}")])
        .args(["--build-arg", &format!("REVISION={}", source.revision)])
        .args(["--build-arg", &format!("CREATED={}", source.created)])
        .args(["--timestamp", &source.epoch.to_string()])
        .arg("--iidfile")
        .arg(&iidfile);
    // The same values again as labels: buildah's layer cache (1.28, Debian 12) keys a LABEL
    // step on its text, not on the ARG values it expands, so without these a rebuild at a new
    // commit kept the previous commit's `revision` and `created` (measured). `--label` values
    // are part of the cache key: an unchanged commit still gives the same image id.
    let labels = [
        ("version", Some(version.to_string())),
        ("revision", Some(source.revision.clone())),
        ("created", Some(source.created.clone())),
        ("source", source.url.clone()),
    ];
    for (key, value) in labels {
        if let Some(value) = value {
            cmd.args([
                "--label",
                &format!("org.opencontainers.image.{key}={value}"),
            ]);
        }
    }
    for tag in &tags {
        cmd.args(["--tag", tag]);
    }
    cmd.arg(&context).stdin(Stdio::null());
    eprintln!("xtask: building the image: {cmd:?}");
    let status = cmd.status().context("cannot run podman build")?;
    if !status.success() {
        bail!("podman build failed ({status}); its output above says why");
    }
    let id = fs::read_to_string(&iidfile)
        .with_context(|| format!("podman build wrote no image id to {}", iidfile.display()))?
        .trim()
        .to_string();
    let out = Command::new("podman")
        .args(["image", "inspect", "--format", "{{.Size}}", &id])
        .stdin(Stdio::null())
        .output()
        .context("cannot run podman image inspect")?;
    let size: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .with_context(|| format!("podman image inspect {id}: no size"))?;
    println!("image {}", tags.join(", "));
    println!("id    {id}");
    println!(
        "size  {:.1} MiB ({size} bytes)",
        size as f64 / (1024.0 * 1024.0)
    );
    Ok(Image { id })
}

/// Where cgroup v2 is mounted on this host: `/sys/fs/cgroup`, or `/sys/fs/cgroup/unified`
/// beside cgroup v1 (a hybrid host).
fn cgroup2_mount() -> Result<PathBuf> {
    let mounts =
        fs::read_to_string("/proc/self/mounts").context("cannot read /proc/self/mounts")?;
    mounts
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(dir))
        })
        .context(
            "no cgroup v2 filesystem in /proc/self/mounts: workload identity needs one \
             (`mount -t cgroup2 none /sys/fs/cgroup/unified` on a cgroup v1 host)",
        )
}

/// podman lowers its own RLIMIT_NPROC to this (both limits) before it starts the runtime.
const PODMAN_NPROC: u64 = 32768;

/// `--ulimit` arguments a container can get without CAP_SYS_RESOURCE: this process's own
/// nofile limits (podman's rootful default, 1048576, may be a raise that runc cannot make) and
/// its nproc limits, at most [`PODMAN_NPROC`].
fn ulimits() -> Vec<String> {
    use nix::sys::resource::{Resource, getrlimit};
    let mut args = Vec::new();
    for (name, resource, cap) in [
        ("nofile", Resource::RLIMIT_NOFILE, u64::MAX),
        ("nproc", Resource::RLIMIT_NPROC, PODMAN_NPROC),
    ] {
        if let Ok((soft, hard)) = getrlimit(resource) {
            args.push("--ulimit".to_string());
            args.push(format!("{name}={}:{}", soft.min(cap), hard.min(cap)));
        }
    }
    args
}

/// How `--run` runs the image on this host.
pub struct RunOptions {
    /// The OCI runtime (`runc`; crun refuses a hybrid cgroup v1/v2 host).
    pub runtime: String,
    /// The seccomp profile: `unconfined`, or a profile file. podman's default profile (containers-common
    /// before late 2025) allows bpf() and perf_event_open() only with CAP_SYS_ADMIN.
    pub seccomp: String,
    /// Arguments for the tracer (default: `run`).
    pub args: Vec<String>,
}

/// Runs the built image in the foreground as the DaemonSet runs it: `--rm`, host network (so a
/// `--metrics-addr` is reachable here), every capability dropped but [`CAPABILITIES`], a
/// read-only root, tracefs, BTF, cgroup v2 and the kubelet's log directories read-only.
pub fn run(image: &Image, opts: &RunOptions) -> Result<()> {
    let mut cmd = Command::new("podman");
    // Every option goes before the image: podman takes the first word that is not an option as
    // the image, and everything after it as the command.
    cmd.args(["run", "--rm", "--name"])
        .arg(format!("tracer-xtask-{}", std::process::id()))
        .args(["--runtime", &opts.runtime])
        .args(ulimits())
        .args(["--network", "host", "--cap-drop", "ALL"])
        .args(["--cap-add", &CAPABILITIES.join(",")])
        .args(["--security-opt", &format!("seccomp={}", opts.seccomp)])
        .args(["--read-only", "--read-only-tmpfs=false"]);
    let cgroup2 = cgroup2_mount()?;
    let mut mounts = vec![
        (PathBuf::from("/sys/kernel/tracing"), "/sys/kernel/tracing"),
        (PathBuf::from("/sys/kernel/btf"), "/sys/kernel/btf"),
        (cgroup2, "/sys/fs/cgroup"),
    ];
    for dir in ["pods", "containers"] {
        let host = Path::new("/var/log").join(dir);
        if host.is_dir() {
            mounts.push((
                host,
                if dir == "pods" {
                    "/host/var/log/pods"
                } else {
                    "/host/var/log/containers"
                },
            ));
        }
    }
    for (host, inside) in &mounts {
        cmd.arg("--volume")
            .arg(format!("{}:{inside}:ro", host.display()));
    }
    cmd.arg(&image.id);
    if opts.args.is_empty() {
        cmd.arg("run");
    } else {
        cmd.args(&opts.args);
    }
    eprintln!("xtask: {cmd:?}");
    let err = cmd.exec();
    Err(err).context("cannot start podman run")
}
