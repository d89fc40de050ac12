//! Scale benchmarks: many connections on one server.
//!
//! ```text
//! cargo run --release --example scale -- idle --conns 10000 --epoch-millis 100
//! cargo run --release --example scale -- busy --clients 1000 --window 8 --rounds 20
//! ```
//!
//! `idle` opens the connections from raw UDP sockets (a Connect and one
//! heartbeat each, then silence, so the load generator costs nothing) and
//! measures, at several connection counts, the server's memory per
//! connection (resident set growth) and the CPU share of its threads while it
//! heartbeats every connection each epoch.
//!
//! `busy` connects real [`Client`]s (three threads each) and has a handful of
//! driver threads echo messages through all of them at the given window,
//! reporting aggregate throughput.

mod measure;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use liveseq::proto::Message;
use liveseq::{Client, Params, Server};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Idle connections: memory per connection and heartbeat CPU.
    Idle {
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
        #[arg(long, default_value_t = 100)]
        epoch_millis: u64,
        /// How long to measure CPU at each step, in epochs.
        #[arg(long, default_value_t = 30)]
        epochs: u32,
    },
    /// Many clients exchanging messages.
    Busy {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        #[arg(long, default_value_t = 8)]
        window: u32,
        /// Each round every client echoes `window` messages.
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        #[arg(long, default_value_t = 8)]
        threads: usize,
        /// The server's receive threads (default: the library's).
        #[arg(long)]
        receive_threads: Option<usize>,
    },
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Args::parse().mode {
        Mode::Idle {
            conns,
            epoch_millis,
            epochs,
        } => idle(conns, epoch_millis, epochs),
        Mode::Busy {
            clients,
            window,
            rounds,
            threads,
            receive_threads,
        } => busy(clients, window, rounds, threads, receive_threads),
    }
}

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// CPU time (user + system) used so far by this process's threads whose
/// name starts with `prefix`, in clock ticks.
fn cpu_ticks(prefix: &str) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let get = |i: usize| {
                fields
                    .get(i - 3)
                    .and_then(|f| f.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            total += get(14) + get(15);
        }
    }
    total
}

fn idle(conns: usize, epoch_millis: u64, epochs: u32) -> Result<(), Box<dyn std::error::Error>> {
    // A high epoch limit: the raw sockets never answer heartbeats.
    let params = Params {
        epoch_millis,
        epoch_limit: 1_000_000,
        ..Params::default()
    };
    let server = Server::bind("127.0.0.1:0", params)?;
    let addr = server.local_addr()?;
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    println!("idle connections, epoch {epoch_millis} ms");
    println!(
        "{:>8} {:>14} {:>12} {:>16}",
        "conns", "bytes/conn", "server CPU", "CPU µs/conn/epoch"
    );
    let mut sockets: Vec<UdpSocket> = Vec::with_capacity(conns);
    let steps = [conns / 4, conns / 2, conns];
    let base_rss = rss();
    for &target in &steps {
        open_idle(&mut sockets, target, addr)?;
        assert_eq!(
            server.totals().active,
            target,
            "every raw socket got its Ack"
        );
        let per_conn = rss().saturating_sub(base_rss) as f64 / target as f64;
        let window = Duration::from_millis(epoch_millis * u64::from(epochs));
        let before = cpu_ticks("liveseq-");
        std::thread::sleep(window); // measuring CPU over wall time
        let used = (cpu_ticks("liveseq-") - before) as f64 / ticks_per_sec;
        let share = used / window.as_secs_f64();
        let per = used * 1e6 / (target as f64 * f64::from(epochs));
        println!(
            "{target:>8} {per_conn:>14.0} {:>11.1}% {per:>16.2}",
            share * 100.0
        );
    }
    let totals = server.totals();
    println!(
        "accepted {} active {} malformed {}",
        totals.accepted, totals.active, totals.malformed
    );
    drop(sockets);
    server.close_timeout(Duration::from_secs(1)).ok();
    Ok(())
}

/// Opens raw connections until there are `target`: Connect, wait for the
/// Ack, then one heartbeat so the server starts heartbeating it.
fn open_idle(
    sockets: &mut Vec<UdpSocket>,
    target: usize,
    server: SocketAddr,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut rx = [0u8; 256];
    while sockets.len() < target {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(Duration::from_secs(5)))?;
        let isn = sockets.len() as u64 + 1;
        buf.clear();
        Message::connect(isn).encode(&mut buf);
        socket.send_to(&buf, server)?;
        let (n, _) = socket.recv_from(&mut rx)?;
        let ack = Message::decode(&rx[..n]).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        buf.clear();
        Message::ack(ack.conn_id, 0).encode(&mut buf);
        socket.send_to(&buf, server)?;
        // Heartbeats will pile up unread; a tiny buffer keeps that cheap.
        socket2::SockRef::from(&socket).set_recv_buffer_size(1)?;
        sockets.push(socket);
    }
    Ok(())
}

fn busy(
    clients: usize,
    window: u32,
    rounds: usize,
    threads: usize,
    receive_threads: Option<usize>,
) -> Result<(), Box<dyn std::error::Error>> {
    let params = Params {
        epoch_millis: 1000,
        epoch_limit: 10,
        window_size: window,
        max_unacked_messages: window,
        ..Params::default()
    };
    let mut builder = Server::builder().params(params);
    if let Some(n) = receive_threads {
        builder = builder.receive_threads(n);
    }
    let server = std::sync::Arc::new(builder.bind("127.0.0.1:0")?);
    let addr = server.local_addr()?;
    let echo = {
        let server = server.clone();
        measure::spawn_echo(server)
    };
    let started = Instant::now();
    let all: Vec<Client> = (0..clients)
        .map(|_| Client::connect(addr, params))
        .collect::<Result<_, _>>()?;
    println!("{clients} clients connected in {:.2?}", started.elapsed());
    let payload = [0x5Au8; 100];
    let per_thread = clients.div_ceil(threads.max(1));
    let started = Instant::now();
    std::thread::scope(|scope| {
        for group in all.chunks(per_thread) {
            scope.spawn(move || {
                for _ in 0..rounds {
                    for c in group {
                        for _ in 0..window {
                            c.write(&payload).expect("write");
                        }
                    }
                    for c in group {
                        for _ in 0..window {
                            assert_eq!(c.read().expect("read"), payload);
                        }
                    }
                }
            });
        }
    });
    let took = started.elapsed();
    let messages = clients * rounds * window as usize;
    println!(
        "{messages} echoes through {clients} clients at window {window}: {took:.2?}, {:.0} msgs/s aggregate",
        messages as f64 / took.as_secs_f64()
    );
    for c in &all {
        c.close()?;
    }
    server.close_timeout(Duration::from_secs(2)).ok();
    echo.join().ok();
    Ok(())
}
