//! The test client: a real process that makes TCP connections the tracer must explain (and,
//! with `connect --udp`, a UDP connect it must not report).
//!
//! Each outcome is printed on stdout as one line `result=<ok|ERRNO|gave_up> sport=<port>`, so a
//! test can tie the tracer's records to what the application saw.
use std::{
    io::{Read, Write},
    net::SocketAddr,
    os::fd::AsFd,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use socket2::{Domain, Protocol, SockAddr, Socket, TcpKeepalive, Type};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Connect COUNT times (all at once when COUNT > 1), wait for each outcome, close.
    Connect {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// Close a connect still pending after this many ms (the application gives up).
        #[arg(long)]
        give_up_ms: Option<u64>,
        /// One blocking connect() instead (the kernel decides when it fails).
        #[arg(long, conflicts_with_all = ["count", "give_up_ms"])]
        blocking: bool,
        /// One connect() of a UDP socket instead (no packet is sent; only the route is looked up).
        #[arg(long, conflicts_with_all = ["count", "give_up_ms", "blocking"])]
        udp: bool,
        /// Wait for a line on stdin before connecting (print `ready` first).
        #[arg(long)]
        after_line: bool,
        /// Deny this process every TCP connect with Landlock (a ruleset handling
        /// LANDLOCK_ACCESS_NET_CONNECT_TCP, with no rule) before connecting: connect() fails with
        /// EACCES before any route lookup.
        #[arg(long)]
        landlock: bool,
        /// Rename this process (PR_SET_NAME) to these raw bytes, given in hex, before connecting.
        #[arg(long, value_name = "HEX")]
        comm_hex: Option<String>,
    },
    /// Connect with SO_KEEPALIVE, report, then wait in recv until the connection dies.
    Keepalive {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        idle: u64,
        #[arg(long)]
        intvl: u64,
        #[arg(long)]
        cnt: u32,
    },
    /// Connect, then wait in recv until the connection ends (e.g. the server resets it).
    Recv {
        #[arg(long)]
        addr: SocketAddr,
    },
    /// Connect with TCP_USER_TIMEOUT, wait for a line on stdin, send data, then wait in recv
    /// until the kernel gives up on the unacknowledged data.
    Send {
        #[arg(long)]
        addr: SocketAddr,
        /// 0: no TCP_USER_TIMEOUT (the kernel gives up after net.ipv4.tcp_retries2).
        #[arg(long)]
        user_timeout_ms: u32,
        /// Set IP_RECVERR (an ICMP error on the established connection becomes its `sk_err`,
        /// which the failing recv takes), and abort the connection (SO_LINGER 0) once recv has
        /// failed: the close itself then carries no error.
        #[arg(long)]
        recverr: bool,
    },
    /// Connect, then write 1 KiB every 10 ms until killed (a healthy busy connection when the
    /// peer reads: `listen --drain`).
    Stream {
        #[arg(long)]
        addr: SocketAddr,
    },
    /// Open COUNT connections to ADDR one after another (this process's open-file limit raised
    /// to its hard limit first), say `held ok=N failed=M`, then hold them open, sending
    /// nothing, until killed: idle connections that cost their server a file descriptor each.
    Hold {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        count: usize,
    },
    /// Call getppid() in a loop until killed: a syscall whose tracepoint a test's BPF program
    /// can hold the CPU in.
    Spin,
    /// Listen and hold every accepted connection open until killed.
    Listen {
        #[arg(long)]
        addr: SocketAddr,
        /// Abort each accepted connection with a RST (SO_LINGER 0) after this many ms.
        #[arg(long)]
        reset_after_ms: Option<u64>,
        /// Read and discard what each accepted connection sends.
        #[arg(long, conflicts_with = "reset_after_ms")]
        drain: bool,
        /// listen() backlog.
        #[arg(long, default_value_t = 128)]
        backlog: i32,
        /// Never accept(): connections wait in the accept queue until it overflows.
        #[arg(long, conflicts_with_all = ["reset_after_ms", "drain"])]
        no_accept: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().mode {
        Mode::Connect {
            addr,
            count,
            give_up_ms,
            blocking,
            udp,
            landlock,
            after_line,
            comm_hex,
        } => {
            if let Some(hex) = comm_hex {
                rename(&hex)?;
            }
            if landlock {
                landlock_deny_tcp_connect()?;
            }
            if after_line {
                say("ready");
                std::io::stdin().read_line(&mut String::new())?;
            }
            if udp {
                connect_udp(addr)
            } else if blocking {
                connect_blocking(addr)
            } else {
                connect_many(addr, count, give_up_ms)
            }
        }
        Mode::Keepalive {
            addr,
            idle,
            intvl,
            cnt,
        } => keepalive(addr, idle, intvl, cnt),
        Mode::Recv { addr } => recv(addr),
        Mode::Send {
            addr,
            user_timeout_ms,
            recverr,
        } => send(addr, user_timeout_ms, recverr),
        Mode::Stream { addr } => stream(addr),
        Mode::Listen {
            addr,
            reset_after_ms,
            drain,
            backlog,
            no_accept,
        } => listen(addr, reset_after_ms, drain, backlog, no_accept),
        Mode::Hold { addr, count } => hold(addr, count),
        Mode::Spin => {
            say("spinning");
            loop {
                std::hint::black_box(nix::unistd::getppid());
            }
        }
    }
}

fn hold(addr: SocketAddr, count: usize) -> Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    let mut held = Vec::with_capacity(count);
    let mut failed = 0;
    for _ in 0..count {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(s) => held.push(s),
            Err(_) => failed += 1,
        }
    }
    say(&format!("held ok={} failed={failed}", held.len()));
    loop {
        std::thread::park();
    }
}

/// Sets this task's name to raw bytes (at most 15; the kernel truncates).
fn rename(hex: &str) -> Result<()> {
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<_, _>>()
        .context("--comm-hex takes hex digits")?;
    let mut name = [0u8; 16];
    let n = bytes.len().min(15);
    name[..n].copy_from_slice(&bytes[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes from `name`.
    let ret = unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
    anyhow::ensure!(ret == 0, "prctl(PR_SET_NAME) failed");
    Ok(())
}

/// Restricts this process with a Landlock ruleset that handles TCP connect and allows none.
fn landlock_deny_tcp_connect() -> Result<()> {
    // struct landlock_ruleset_attr { handled_access_fs: u64, handled_access_net: u64 } (ABI 4).
    const LANDLOCK_ACCESS_NET_CONNECT_TCP: u64 = 1 << 1;
    let attr: [u64; 2] = [0, LANDLOCK_ACCESS_NET_CONNECT_TCP];
    // SAFETY: the kernel reads `size_of_val(&attr)` bytes from `attr`, which outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
            0u32,
        )
    };
    anyhow::ensure!(
        fd >= 0,
        "landlock_create_ruleset: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    anyhow::ensure!(ret == 0, "prctl(PR_SET_NO_NEW_PRIVS) failed");
    // SAFETY: `fd` is the ruleset fd just created; flags 0.
    let ret = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) };
    // SAFETY: `fd` is ours and not used again.
    unsafe { libc::close(fd as i32) };
    anyhow::ensure!(
        ret == 0,
        "landlock_restrict_self: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn socket_for(addr: SocketAddr) -> Result<Socket> {
    Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).context("socket")
}

fn sport(s: &Socket) -> u16 {
    s.local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map_or(0, |a| a.port())
}

fn errno_name(e: &std::io::Error) -> String {
    e.raw_os_error()
        .map(|n| format!("{:?}", nix::errno::Errno::from_raw(n)))
        .unwrap_or_else(|| e.to_string())
}

fn connect_many(addr: SocketAddr, count: usize, give_up_ms: Option<u64>) -> Result<()> {
    let deadline = give_up_ms.map(|ms| Instant::now() + Duration::from_millis(ms));
    let mut pending: Vec<Socket> = Vec::with_capacity(count);
    for _ in 0..count {
        let s = socket_for(addr)?;
        s.set_nonblocking(true)?;
        match s.connect(&SockAddr::from(addr)) {
            Ok(()) => say(&format!("result=ok sport={}", sport(&s))),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => pending.push(s),
            Err(e) => say(&format!("result={} sport={}", errno_name(&e), sport(&s))),
        }
    }
    while !pending.is_empty() {
        let timeout = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    for s in pending.drain(..) {
                        say(&format!("result=gave_up sport={}", sport(&s)));
                    }
                    break;
                }
                PollTimeout::from(left.as_millis().min(60_000) as u16)
            }
            None => PollTimeout::NONE,
        };
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd> = pending
                .iter()
                .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLOUT))
                .collect();
            poll(&mut fds, timeout).context("poll")?;
            fds.iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect()
        };
        let mut still = Vec::with_capacity(pending.len());
        for (s, done) in pending.into_iter().zip(ready) {
            if !done {
                still.push(s);
                continue;
            }
            match s.take_error()? {
                None => say(&format!("result=ok sport={}", sport(&s))),
                Some(e) => say(&format!("result={} sport={}", errno_name(&e), sport(&s))),
            }
        }
        pending = still;
    }
    Ok(())
}

fn connect_blocking(addr: SocketAddr) -> Result<()> {
    let s = socket_for(addr)?;
    match s.connect(&SockAddr::from(addr)) {
        Ok(()) => say(&format!("result=ok sport={}", sport(&s))),
        Err(e) => say(&format!("result={} sport={}", errno_name(&e), sport(&s))),
    }
    Ok(())
}

fn connect_udp(addr: SocketAddr) -> Result<()> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .context("socket")?;
    match s.connect(&SockAddr::from(addr)) {
        Ok(()) => say(&format!("result=ok sport={}", sport(&s))),
        Err(e) => say(&format!("result={} sport={}", errno_name(&e), sport(&s))),
    }
    Ok(())
}

fn keepalive(addr: SocketAddr, idle: u64, intvl: u64, cnt: u32) -> Result<()> {
    let s = socket_for(addr)?;
    let ka = TcpKeepalive::new()
        .with_time(Duration::from_secs(idle))
        .with_interval(Duration::from_secs(intvl))
        .with_retries(cnt);
    s.set_tcp_keepalive(&ka)?;
    s.connect(&SockAddr::from(addr)).context("connect")?;
    say(&format!("connected sport={}", sport(&s)));
    wait_in_recv(s.into());
    Ok(())
}

/// Reads until the connection ends; prints how.
fn wait_in_recv(mut stream: std::net::TcpStream) {
    let sport = stream.local_addr().map_or(0, |a| a.port());
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return say(&format!("result=eof sport={sport}")),
            Ok(_) => continue,
            Err(e) => return say(&format!("result={} sport={sport}", errno_name(&e))),
        }
    }
}

fn recv(addr: SocketAddr) -> Result<()> {
    let s = socket_for(addr)?;
    s.connect(&SockAddr::from(addr)).context("connect")?;
    say(&format!("connected sport={}", sport(&s)));
    wait_in_recv(s.into());
    Ok(())
}

fn send(addr: SocketAddr, user_timeout_ms: u32, recverr: bool) -> Result<()> {
    let s = socket_for(addr)?;
    if user_timeout_ms > 0 {
        s.set_tcp_user_timeout(Some(Duration::from_millis(user_timeout_ms.into())))?;
    }
    if recverr {
        let on: libc::c_int = 1;
        // SAFETY: setsockopt reads an int of the size given from a live local.
        let ret = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&s),
                libc::IPPROTO_IP,
                libc::IP_RECVERR,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        anyhow::ensure!(ret == 0, "IP_RECVERR: {}", std::io::Error::last_os_error());
    }
    s.connect(&SockAddr::from(addr)).context("connect")?;
    say(&format!("connected sport={}", sport(&s)));
    let mut go = String::new();
    std::io::stdin().read_line(&mut go)?;
    let mut stream: std::net::TcpStream = s.into();
    let keep = stream.try_clone()?;
    stream.write_all(&[b'x'; 8192])?;
    wait_in_recv(stream);
    if recverr {
        socket2::SockRef::from(&keep).set_linger(Some(Duration::ZERO))?;
    }
    Ok(())
}

fn stream(addr: SocketAddr) -> Result<()> {
    let s = socket_for(addr)?;
    s.connect(&SockAddr::from(addr)).context("connect")?;
    say(&format!("connected sport={}", sport(&s)));
    let mut stream: std::net::TcpStream = s.into();
    loop {
        stream.write_all(&[b'x'; 1024])?;
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn listen(
    addr: SocketAddr,
    reset_after_ms: Option<u64>,
    drain: bool,
    backlog: i32,
    no_accept: bool,
) -> Result<()> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&SockAddr::from(addr)).context("bind")?;
    socket.listen(backlog).context("listen")?;
    let l: std::net::TcpListener = socket.into();
    say(&format!("listening port={}", l.local_addr()?.port()));
    if no_accept {
        loop {
            std::thread::park();
        }
    }
    let mut held = Vec::new();
    for conn in l.incoming() {
        let mut conn = conn?;
        if drain {
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
            });
            continue;
        }
        match reset_after_ms {
            Some(ms) => {
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(ms));
                    let s = Socket::from(conn);
                    let _ = s.set_linger(Some(Duration::ZERO));
                    drop(s);
                });
            }
            None => held.push(conn),
        }
    }
    Ok(())
}
