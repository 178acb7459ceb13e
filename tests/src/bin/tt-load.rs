//! Load generator for the benchmark and the overload test: blocking TCP connects as fast as
//! possible (or at a fixed rate), counting how each ended. With `--serve` it also runs a listener
//! that accepts and closes; successful connects close with SO_LINGER 0 (a RST), so TIME_WAIT never
//! caps the rate. Prints one JSON object with the counts on stdout.
//!
//! With `--dns` it is a resolver-heavy load instead: each attempt is a DNS query over UDP to
//! `--addr`, answered by a responder of its own on that address (one A record), and counts as
//! `connected` when the answer arrives.
//!
//! With `--hold N` it opens N connections to `--addr` instead and keeps them, idle, until its
//! stdin closes (a populated socket map for the benchmark); `--park` also listens there with
//! a backlog nobody accepts from, so that the held connections cost no descriptor on that side.
//!
//! Run it inside a namespace the caller made: it connects only where `--addr` points.
use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Parser;
use socket2::{Domain, Socket, Type};

#[derive(Parser)]
struct Args {
    /// Where to connect (the first destination when `--destinations` > 1).
    #[arg(long)]
    addr: SocketAddrV4,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Stop after this many attempts (across all threads) instead, whatever the time.
    #[arg(long)]
    count: Option<u64>,
    /// Connecting threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Attempts per second across all threads (default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// Cycle over this many distinct destination addresses, counting up from `--addr`'s.
    #[arg(long, default_value_t = 1)]
    destinations: u32,
    /// Also listen on `--addr`, accepting and closing every connection.
    #[arg(long)]
    serve: bool,
    /// Pin every thread of this process to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
    /// DNS queries over UDP to `--addr` (which this process answers) instead of TCP connects.
    #[arg(long, conflicts_with_all = ["serve", "destinations"])]
    dns: bool,
    /// Open this many connections to `--addr`, print `{"held": N}` and keep them open until
    /// stdin closes.
    #[arg(long, conflicts_with_all = ["serve", "dns", "count"])]
    hold: Option<u64>,
    /// Listen on `--addr` without ever accepting (backlog 65,535, capped by the namespace's
    /// `net.core.somaxconn`): connections wait established in the accept queue.
    #[arg(long, conflicts_with_all = ["serve", "dns"])]
    park: bool,
}

#[derive(Default)]
struct Counts {
    attempts: AtomicU64,
    connected: AtomicU64,
    refused: AtomicU64,
    other: AtomicU64,
}

fn pin(cpu: usize) -> Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).context("--cpu out of range")?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .with_context(|| format!("cannot pin to CPU {cpu}"))
}

fn serve(addr: SocketAddrV4, cpu: Option<usize>) -> Result<()> {
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    listener.set_reuse_address(true)?;
    listener.bind(&SocketAddr::V4(addr).into())?;
    listener.listen(4096)?;
    std::thread::spawn(move || {
        if let Some(cpu) = cpu {
            let _ = pin(cpu);
        }
        while let Ok((conn, _)) = listener.accept() {
            drop(conn);
        }
    });
    Ok(())
}

/// Answers every DNS query arriving on `addr` with one A record (10.53.0.9, TTL 60), echoing
/// the question as resolvers do.
fn serve_dns(addr: SocketAddrV4, cpu: Option<usize>) -> Result<()> {
    let socket = std::net::UdpSocket::bind(addr).with_context(|| format!("cannot bind {addr}"))?;
    std::thread::spawn(move || {
        if let Some(cpu) = cpu {
            let _ = pin(cpu);
        }
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if n < 12 {
                continue;
            }
            let mut answer = buf[..n].to_vec();
            answer[2] |= 0x80; // QR: a response
            answer[3] = 0x80; // RA, no error
            answer[6..8].copy_from_slice(&1u16.to_be_bytes()); // ANCOUNT 1
            // The question's name by pointer, A IN, TTL 60, 4 bytes.
            answer.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 53, 0, 9]);
            let _ = socket.send_to(&answer, from);
        }
    });
    Ok(())
}

/// One query for `load-N.bench.test` A; counted `connected` when its answer arrives.
fn query_once(socket: &std::net::UdpSocket, to: SocketAddrV4, n: u64, counts: &Counts) {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&(n as u16).to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    let label = format!("load-{}", n % 1000);
    for part in [label.as_str(), "bench", "test"] {
        q.push(part.len() as u8);
        q.extend_from_slice(part.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut buf = [0u8; 512];
    let answered = socket.send_to(&q, to).is_ok()
        && socket
            .recv(&mut buf)
            .is_ok_and(|len| len >= 2 && buf[..2] == q[..2]);
    if answered {
        &counts.connected
    } else {
        &counts.other
    }
    .fetch_add(1, Ordering::Relaxed);
}

/// The `i`-th destination: `--addr`'s IPv4 address plus `i`, same port.
fn destination(base: SocketAddrV4, i: u32) -> SocketAddr {
    let ip = Ipv4Addr::from(u32::from(*base.ip()).wrapping_add(i));
    SocketAddr::V4(SocketAddrV4::new(ip, base.port()))
}

fn connect_once(to: &SocketAddr, counts: &Counts) {
    let outcome = Socket::new(Domain::IPV4, Type::STREAM, None).and_then(|s| {
        s.connect(&(*to).into())?;
        s.set_linger(Some(Duration::ZERO))?;
        Ok(())
    });
    match outcome {
        Ok(()) => &counts.connected,
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => &counts.refused,
        Err(_) => &counts.other,
    }
    .fetch_add(1, Ordering::Relaxed);
}

/// A listener nobody accepts from, for `--park`.
fn park(addr: SocketAddrV4) -> Result<Socket> {
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    listener.set_reuse_address(true)?;
    listener.bind(&SocketAddr::V4(addr).into())?;
    listener.listen(65_535)?;
    Ok(listener)
}

/// `--hold`: `n` connections to `addr`, kept until stdin closes.
fn hold(addr: SocketAddrV4, n: u64) -> Result<()> {
    let to: SocketAddr = SocketAddr::V4(addr);
    let mut held = Vec::with_capacity(n as usize);
    for i in 0..n {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        s.connect(&to.into())
            .with_context(|| format!("held connection {i} of {n} to {addr}"))?;
        held.push(s);
    }
    println!("{}", serde_json::json!({ "held": held.len() }));
    use std::io::{Read, Write};
    std::io::stdout().flush()?;
    let mut sink = [0u8; 64];
    while std::io::stdin().read(&mut sink).is_ok_and(|n| n > 0) {}
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.threads == 0 || args.destinations == 0 {
        bail!("--threads and --destinations must be at least 1");
    }
    if let Some(cpu) = args.cpu {
        pin(cpu)?;
    }
    let _parked = args.park.then(|| park(args.addr)).transpose()?;
    if let Some(n) = args.hold {
        return hold(args.addr, n);
    }
    if args.serve {
        serve(args.addr, args.cpu)?;
    }
    if args.dns {
        serve_dns(args.addr, args.cpu)?;
    }
    let counts = Arc::new(Counts::default());
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.seconds);
    let workers: Vec<_> = (0..args.threads)
        .map(|_| {
            let (counts, next, stop) = (counts.clone(), next.clone(), stop.clone());
            let (base, limit, rate, dests, cpu, dns) = (
                args.addr,
                args.count,
                args.rate,
                args.destinations,
                args.cpu,
                args.dns,
            );
            std::thread::spawn(move || {
                if let Some(cpu) = cpu {
                    let _ = pin(cpu);
                }
                let resolver = dns.then(|| {
                    let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("a UDP socket");
                    s.set_read_timeout(Some(Duration::from_secs(1)))
                        .expect("a read timeout");
                    s
                });
                while !stop.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if limit.is_some_and(|l| n >= l) || (limit.is_none() && Instant::now() >= end) {
                        break;
                    }
                    if let Some(rate) = rate {
                        // Attempt n is due at start + n / rate.
                        let due = start + Duration::from_secs_f64(n as f64 / rate);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    counts.attempts.fetch_add(1, Ordering::Relaxed);
                    match &resolver {
                        Some(socket) => query_once(socket, base, n, &counts),
                        None => {
                            connect_once(&destination(base, (n % dests as u64) as u32), &counts)
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    stop.store(true, Ordering::Relaxed);
    let seconds = start.elapsed().as_secs_f64();
    let attempts = counts.attempts.load(Ordering::Relaxed);
    println!(
        "{}",
        serde_json::json!({
            "attempts": attempts,
            "connected": counts.connected.load(Ordering::Relaxed),
            "refused": counts.refused.load(Ordering::Relaxed),
            "other": counts.other.load(Ordering::Relaxed),
            "seconds": seconds,
            "per_second": attempts as f64 / seconds,
        })
    );
    Ok(())
}
