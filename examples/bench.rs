//! The performance report: liveseq against raw UDP on the same loopback, in
//! the same run, so the ratios hold on a noisy machine.
//!
//! ```text
//! cargo run --release --example bench                  # the standard report (under a minute)
//! cargo run --release --example bench -- --json        # one JSON object
//! cargo run --release --example bench -- --loss 10     # the same with 10% loss each way
//! cargo run --release --example bench -- --clients 4 --messages 50000 --size 512 --window 16
//! cargo run --release --example bench -- --sweep-svg docs/window-sweep.svg
//! cargo run --release --example bench -- --flow                 # flow control and drop figures
//! cargo run --release --example bench -- --many-clients 96 --receive-threads 4
//! ```
//!
//! Baselines: raw UDP ping-pong (round trips per second and latency) and a
//! raw UDP one-way blast into a large receive buffer (datagrams per second
//! the receiver keeps up with). Workloads (100-byte payloads unless `--size`):
//! echo at window 1, echo at window 32 with 1 and 8 clients, a one-way
//! stream at window 32, and the custom echo given by the flags. Every
//! workload runs `--runs` times and reports its median.
//!
//! The standard run ends with the rows that show how a server scales with
//! clients and cores (they add about five seconds on two cores): `--many-clients` clients
//! (default 48), each keeping 32 echoes in flight, against one liveseq
//! server; the same against a raw UDP echo on one server socket with
//! `--receive-threads` threads receiving and echoing (default every core,
//! at most 8: what one socket can do at best); and
//! the same against a TCP echo with a thread per connection and
//! length-prefixed messages, what users would pick instead.
//! `--receive-threads` sets the receive threads of every liveseq server of
//! the run too, so that scaling can be measured (with `taskset -c` to vary
//! the cores).
//!
//! `--flow` measures memory and shutdown instead, with the default buffers:
//! peak resident memory while one client writes 200,000 messages of 1,000
//! bytes as fast as `write` lets it to a server that reads 10,000 a second,
//! and the time from `drop(server)` until its port can be bound again,
//! against a healthy client and against a peer that heartbeats but never
//! acknowledges (default `Params`: the drop drains for at most
//! `epoch_limit` epochs).

mod measure;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use liveseq::proto::{Message, MsgType};
use liveseq::{Client, Faults, Params, Server};

#[derive(Parser, Debug, Clone)]
#[command(about = "liveseq throughput and latency against raw UDP")]
struct Args {
    /// Clients of the custom echo workload.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Messages per client in each workload.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Window (and max unacked) of the custom echo workload.
    #[arg(long, default_value_t = 1)]
    window: u32,
    /// Percent of datagrams dropped on every send, on both sides.
    #[arg(long, default_value_t = 0)]
    loss: u8,
    /// Repetitions of each measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Only the custom echo workload (with the ping-pong baseline).
    #[arg(long)]
    custom_only: bool,
    /// Measure echo throughput at windows 1 to 64 and draw it into this SVG file.
    #[arg(long)]
    sweep_svg: Option<std::path::PathBuf>,
    /// Flow control figures instead: peak memory under a slow reader, and
    /// the time a dropped server holds its port.
    #[arg(long)]
    flow: bool,
    /// Clients of the many-clients rows.
    #[arg(long, default_value_t = 48)]
    many_clients: usize,
    /// Receive threads of every liveseq server (default: a server's own
    /// default, half the cores, at most 8) and of the raw UDP echo baseline
    /// (default: every core, at most 8).
    #[arg(long)]
    receive_threads: Option<usize>,
}

/// Window of the many-clients rows.
const MANY_WINDOW: usize = 32;

/// The many-clients rows, measured in the same run.
#[derive(Clone, Copy)]
struct Many {
    clients: usize,
    receive_threads: usize,
    udp_receive_threads: usize,
    liveseq: Figures,
    udp: Figures,
    tcp: Figures,
}

/// One workload's figures.
#[derive(Clone, Copy, Default)]
struct Figures {
    per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    retransmissions: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let runs = args.runs.max(1);
    let median = |f: &dyn Fn() -> Figures| -> Figures {
        let mut all: Vec<Figures> = (0..runs).map(|_| f()).collect();
        all.sort_by(|a, b| a.per_sec.total_cmp(&b.per_sec));
        all[all.len() / 2]
    };
    if args.flow {
        flow_report(args.json);
        return Ok(());
    }
    let n = args.messages;
    let size = args.size;
    let pingpong = median(&|| udp_pingpong(n, size));
    let oneway = median(&|| udp_oneway(n * 5, size));
    if let Some(path) = &args.sweep_svg {
        let windows = [1u32, 2, 4, 8, 16, 32, 64];
        let points: Vec<(u32, f64)> = windows
            .iter()
            .map(|&w| {
                let f = median(&|| echo(&args, 1, w, n));
                println!("window {w:>2}: {:>9.0} echoes/s", f.per_sec);
                (w, f.per_sec)
            })
            .collect();
        std::fs::write(path, sweep_svg(&points, pingpong.per_sec, oneway.per_sec))?;
        println!(
            "raw ping-pong {:.0}/s, raw one-way {:.0}/s; wrote {}",
            pingpong.per_sec,
            oneway.per_sec,
            path.display()
        );
        return Ok(());
    }
    let custom = median(&|| echo(&args, args.clients, args.window, n));
    let mut rows = vec![("custom", custom)];
    if !args.custom_only {
        rows.push(("echo_w1", median(&|| echo(&args, 1, 1, n))));
        rows.push(("echo_w32", median(&|| echo(&args, 1, 32, n * 2))));
        rows.push(("echo_w32_8clients", median(&|| echo(&args, 8, 32, n / 2))));
        rows.push(("stream_w32", median(&|| stream(&args, 32, n * 5))));
    }
    let many = (!args.custom_only).then(|| {
        let clients = args.many_clients.max(1);
        let receive_threads = receive_threads(&args);
        let udp_receive_threads = udp_receive_threads(&args);
        // About twice the messages of one default row, shared by the clients.
        let per_client = (n * 2 / clients).max(200);
        Many {
            clients,
            receive_threads,
            liveseq: median(&|| echo(&args, clients, MANY_WINDOW as u32, per_client)),
            udp_receive_threads,
            udp: median(&|| udp_echo(clients, udp_receive_threads, per_client, size)),
            tcp: median(&|| tcp_echo(clients, per_client, size)),
        }
    });
    if args.json {
        print_json(&args, pingpong, oneway, &rows, many);
    } else {
        print_table(&args, pingpong, oneway, &rows);
        if let Some(m) = many {
            print_many(m);
        }
    }
    Ok(())
}

fn print_table(args: &Args, pingpong: Figures, oneway: Figures, rows: &[(&str, Figures)]) {
    println!(
        "liveseq bench: {} B payloads, {}% loss, median of {} runs",
        args.size, args.loss, args.runs
    );
    println!(
        "raw UDP ping-pong   {:>10.0} round trips/s   p50 {:>6.1} µs   p99 {:>6.1} µs",
        pingpong.per_sec, pingpong.p50_us, pingpong.p99_us
    );
    println!("raw UDP one-way     {:>10.0} datagrams/s", oneway.per_sec);
    for (name, f) in rows {
        let label = if *name == "custom" {
            format!("echo {}x w{}", args.clients, args.window)
        } else {
            name.to_string()
        };
        let window_one = *name == "echo_w1" || (*name == "custom" && args.window == 1);
        let (base, base_name) = if window_one {
            (pingpong.per_sec, "ping-pong")
        } else {
            (oneway.per_sec, "one-way")
        };
        print!(
            "{label:<19} {:>10.0} msgs/s   {:>5.2} x raw {base_name}",
            f.per_sec,
            f.per_sec / base
        );
        if f.p99_us > 0.0 {
            print!(
                "   p50 {:.1} µs p99 {:.1} µs ({:.2} x raw p99)",
                f.p50_us,
                f.p99_us,
                f.p99_us / pingpong.p99_us
            );
        }
        if args.loss > 0 || f.retransmissions > 0 {
            print!("   retransmissions {}", f.retransmissions);
        }
        println!();
    }
}

fn print_many(m: Many) {
    println!(
        "many clients: {} clients, window {MANY_WINDOW}, echoes/s of all clients together",
        m.clients
    );
    println!(
        "  liveseq server     {:>10.0} echoes/s   ({} receive threads)",
        m.liveseq.per_sec, m.receive_threads
    );
    println!(
        "  raw UDP echo       {:>10.0} echoes/s   (one socket, {} receive threads)   liveseq {:.2} x",
        m.udp.per_sec,
        m.udp_receive_threads,
        m.liveseq.per_sec / m.udp.per_sec
    );
    println!(
        "  TCP echo           {:>10.0} echoes/s   (a thread per connection)   liveseq {:.2} x",
        m.tcp.per_sec,
        m.liveseq.per_sec / m.tcp.per_sec
    );
    if m.udp.retransmissions > 0 {
        println!("  (raw UDP lost {} datagrams)", m.udp.retransmissions);
    }
}

fn print_json(
    args: &Args,
    pingpong: Figures,
    oneway: Figures,
    rows: &[(&str, Figures)],
    many: Option<Many>,
) {
    let mut fields = vec![
        ("size".to_string(), args.size as f64),
        ("loss_percent".to_string(), f64::from(args.loss)),
        ("udp_pingpong_per_sec".to_string(), pingpong.per_sec),
        ("udp_pingpong_p50_us".to_string(), pingpong.p50_us),
        ("udp_pingpong_p99_us".to_string(), pingpong.p99_us),
        ("udp_oneway_per_sec".to_string(), oneway.per_sec),
    ];
    for (name, f) in rows {
        fields.push((format!("{name}_per_sec"), f.per_sec));
        if f.p99_us > 0.0 {
            fields.push((format!("{name}_p50_us"), f.p50_us));
            fields.push((format!("{name}_p99_us"), f.p99_us));
        }
        fields.push((format!("{name}_retransmissions"), f.retransmissions as f64));
        let window_one = *name == "echo_w1" || (*name == "custom" && args.window == 1);
        let base = if window_one {
            pingpong.per_sec
        } else {
            oneway.per_sec
        };
        fields.push((format!("{name}_ratio"), f.per_sec / base));
    }
    if let Some((_, w1)) = rows.iter().find(|(n, _)| *n == "echo_w1") {
        fields.push(("echo_w1_p99_ratio".to_string(), w1.p99_us / pingpong.p99_us));
    }
    if let Some(m) = many {
        fields.extend([
            ("many_clients".to_string(), m.clients as f64),
            ("many_window".to_string(), MANY_WINDOW as f64),
            (
                "many_liveseq_receive_threads".to_string(),
                m.receive_threads as f64,
            ),
            ("many_liveseq_per_sec".to_string(), m.liveseq.per_sec),
            (
                "many_udp_echo_receive_threads".to_string(),
                m.udp_receive_threads as f64,
            ),
            ("many_udp_echo_per_sec".to_string(), m.udp.per_sec),
            (
                "many_udp_echo_lost".to_string(),
                m.udp.retransmissions as f64,
            ),
            ("many_tcp_echo_per_sec".to_string(), m.tcp.per_sec),
            (
                "many_liveseq_udp_ratio".to_string(),
                m.liveseq.per_sec / m.udp.per_sec,
            ),
            (
                "many_liveseq_tcp_ratio".to_string(),
                m.liveseq.per_sec / m.tcp.per_sec,
            ),
        ]);
    }
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("\"{k}\":{}", json_number(*v)))
        .collect();
    println!("{{{}}}", body.join(","));
}

fn json_number(v: f64) -> String {
    if v.is_finite() {
        format!("{:.3}", v)
    } else {
        "null".into()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn latency_figures(count: usize, took: Duration, mut samples: Vec<Duration>) -> Figures {
    samples.sort();
    Figures {
        per_sec: count as f64 / took.as_secs_f64(),
        p50_us: percentile(&samples, 0.5),
        p99_us: percentile(&samples, 0.99),
        retransmissions: 0,
    }
}

/// Raw UDP round trips: one socket sends, the other echoes.
fn udp_pingpong(n: usize, size: usize) -> Figures {
    let a = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let b = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let b_addr = b.local_addr().expect("addr");
    let echo = thread::spawn(move || {
        let mut buf = [0u8; 65536];
        for _ in 0..n {
            let Ok((len, from)) = b.recv_from(&mut buf) else {
                return;
            };
            let _ = b.send_to(&buf[..len], from);
        }
    });
    let payload = vec![7u8; size];
    let mut buf = [0u8; 65536];
    let mut samples = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        a.send_to(&payload, b_addr).expect("send");
        a.recv_from(&mut buf).expect("recv");
        samples.push(t.elapsed());
    }
    let took = started.elapsed();
    let _ = echo.join();
    latency_figures(n, took, samples)
}

/// Raw UDP one way: how many datagrams per second the receiver takes in
/// while a sender blasts into its (large) buffer.
fn udp_oneway(n: usize, size: usize) -> Figures {
    let receiver =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).expect("socket");
    let _ = receiver.set_recv_buffer_size(8 << 20);
    receiver
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    let receiver: UdpSocket = receiver.into();
    receiver
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let to = receiver.local_addr().expect("addr");
    let counting = thread::spawn(move || {
        let mut buf = [0u8; 65536];
        let mut got = 0u64;
        let mut first = None;
        let mut last = Instant::now();
        while receiver.recv_from(&mut buf).is_ok() {
            first.get_or_insert_with(Instant::now);
            got += 1;
            last = Instant::now();
        }
        (
            got,
            first.map(|f| last.duration_since(f)).unwrap_or_default(),
        )
    });
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let payload = vec![7u8; size];
    for _ in 0..n {
        let _ = sender.send_to(&payload, to);
    }
    let (got, took) = counting.join().unwrap_or_default();
    Figures {
        per_sec: got.saturating_sub(1) as f64 / took.as_secs_f64().max(1e-9),
        ..Figures::default()
    }
}

/// Raw UDP echo: one server socket, `threads` threads each receiving and
/// echoing; `clients` clients (a thread and a socket each) keep
/// [`MANY_WINDOW`] datagrams in flight until `n` came back. A lost datagram
/// is not resent: a client that hears nothing for 200 ms sends afresh, and
/// the losses are counted (in `retransmissions`).
fn udp_echo(clients: usize, threads: usize, n: usize, size: usize) -> Figures {
    let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let _ = socket2::SockRef::from(&server).set_recv_buffer_size(8 << 20);
    server
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let to = server.local_addr().expect("addr");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let echoes: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let socket = server.try_clone().expect("clone");
            let stop = stop.clone();
            thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok((len, from)) = socket.recv_from(&mut buf) {
                        let _ = socket.send_to(&buf[..len], from);
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    let per_client: Vec<_> = (0..clients)
        .map(|_| {
            thread::spawn(move || {
                let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
                socket
                    .set_read_timeout(Some(Duration::from_millis(200)))
                    .expect("timeout");
                let payload = vec![0x42u8; size];
                let mut buf = [0u8; 65536];
                let (mut sent, mut got, mut lost) = (0, 0, 0u64);
                while sent < n.min(MANY_WINDOW) {
                    let _ = socket.send_to(&payload, to);
                    sent += 1;
                }
                while got < n {
                    if socket.recv_from(&mut buf).is_ok() {
                        got += 1;
                        if sent < n {
                            let _ = socket.send_to(&payload, to);
                            sent += 1;
                        }
                    } else {
                        // Everything in flight is lost: count it, refill.
                        let in_flight = sent.saturating_sub(got);
                        lost += in_flight as u64;
                        got += in_flight;
                        while sent < n && sent.saturating_sub(got) < MANY_WINDOW {
                            let _ = socket.send_to(&payload, to);
                            sent += 1;
                        }
                    }
                }
                lost
            })
        })
        .collect();
    let lost: u64 = per_client
        .into_iter()
        .map(|h| h.join().expect("client"))
        .sum();
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in echoes {
        let _ = h.join();
    }
    let echoed = (clients * n) as u64 - lost;
    Figures {
        per_sec: echoed as f64 / took.as_secs_f64().max(1e-9),
        retransmissions: lost,
        ..Figures::default()
    }
}

/// TCP echo with a thread per connection and messages framed by a 4-byte
/// length, as a user would write it; `clients` clients keep
/// [`MANY_WINDOW`] messages in flight until `n` came back.
fn tcp_echo(clients: usize, n: usize, size: usize) -> Figures {
    use std::io::{BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};

    fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> std::io::Result<()> {
        let mut len = [0u8; 4];
        r.read_exact(&mut len)?;
        buf.resize(u32::from_be_bytes(len) as usize, 0);
        r.read_exact(buf)
    }
    fn write_frame(w: &mut impl Write, payload: &[u8]) -> std::io::Result<()> {
        let mut frame = Vec::with_capacity(4 + payload.len());
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(payload);
        w.write_all(&frame)
    }

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let to = listener.local_addr().expect("addr");
    let accepting = thread::spawn(move || {
        let mut conns = Vec::new();
        for _ in 0..clients {
            let Ok((stream, _)) = listener.accept() else {
                break;
            };
            conns.push(thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                let mut writer = stream.try_clone().expect("clone");
                let mut reader = BufReader::new(stream);
                let mut buf = Vec::new();
                while read_frame(&mut reader, &mut buf).is_ok() {
                    if write_frame(&mut writer, &buf).is_err() {
                        break;
                    }
                }
            }));
        }
        conns
    });
    let started = Instant::now();
    let per_client: Vec<_> = (0..clients)
        .map(|_| {
            thread::spawn(move || {
                let stream = TcpStream::connect(to).expect("connect");
                let _ = stream.set_nodelay(true);
                let mut writer = stream.try_clone().expect("clone");
                let mut reader = BufReader::new(stream);
                let payload = vec![0x42u8; size];
                let mut buf = Vec::new();
                let mut sent = 0;
                while sent < n.min(MANY_WINDOW) {
                    write_frame(&mut writer, &payload).expect("write");
                    sent += 1;
                }
                for _ in 0..n {
                    read_frame(&mut reader, &mut buf).expect("read");
                    assert_eq!(buf.len(), size);
                    if sent < n {
                        write_frame(&mut writer, &payload).expect("write");
                        sent += 1;
                    }
                }
            })
        })
        .collect();
    for h in per_client {
        h.join().expect("client");
    }
    let took = started.elapsed();
    for h in accepting.join().expect("accept") {
        let _ = h.join();
    }
    Figures {
        per_sec: (clients * n) as f64 / took.as_secs_f64().max(1e-9),
        ..Figures::default()
    }
}

fn params(window: u32) -> Params {
    // Long epochs: without loss nothing should ever be retransmitted.
    Params {
        epoch_millis: 1000,
        epoch_limit: 10,
        window_size: window,
        max_unacked_messages: window,
        max_backoff_interval: 0,
    }
}

fn faults(loss: u8, seed: u64) -> Faults {
    Faults {
        write_drop_percent: loss,
        seed: Some(seed),
        ..Faults::default()
    }
}

fn lossy_params(args: &Args, window: u32) -> Params {
    if args.loss > 0 {
        // With loss, recovery is paced by the epoch: keep it short.
        Params {
            epoch_millis: 20,
            epoch_limit: 100,
            ..params(window)
        }
    } else {
        params(window)
    }
}

/// Receive threads of the liveseq servers: `--receive-threads`, or what a
/// liveseq server starts by default (half the cores, at most 8).
fn receive_threads(args: &Args) -> usize {
    args.receive_threads
        .unwrap_or_else(|| (cores() / 2).clamp(1, liveseq::MAX_DEFAULT_RECEIVE_THREADS))
}

/// Receive threads of the raw UDP echo: `--receive-threads`, or every core
/// (at most 8), what one socket can do at best.
fn udp_receive_threads(args: &Args) -> usize {
    args.receive_threads.unwrap_or_else(|| cores().min(8))
}

fn cores() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// `clients` clients each echo `n` messages through one server, keeping up
/// to `window` in flight. At window 1 each message's round trip is timed.
fn echo(args: &Args, clients: usize, window: u32, n: usize) -> Figures {
    let p = lossy_params(args, window);
    let server = Arc::new(
        Server::builder()
            .params(p)
            .faults(faults(args.loss, 1))
            .receive_threads(receive_threads(args))
            .bind("127.0.0.1:0")
            .expect("bind"),
    );
    let addr = server.local_addr().expect("addr");
    let echoing = {
        let server = server.clone();
        measure::spawn_echo(server)
    };
    let size = args.size;
    let loss = args.loss;
    let started = Instant::now();
    let per_client: Vec<_> = (0..clients)
        .map(|c| {
            thread::spawn(move || {
                let client = Arc::new(
                    Client::builder()
                        .params(p)
                        .faults(faults(loss, 100 + c as u64))
                        .connect(addr)
                        .expect("connect"),
                );
                let payload = vec![0x42u8; size];
                let mut samples = Vec::new();
                if window == 1 {
                    samples.reserve(n);
                    for _ in 0..n {
                        let t = Instant::now();
                        client.write(&payload).expect("write");
                        assert_eq!(client.read().expect("read").len(), size);
                        samples.push(t.elapsed());
                    }
                } else {
                    // Keep at most `window` echoes outstanding.
                    let (credit_tx, credit_rx) = crossbeam_channel::bounded::<()>(window as usize);
                    let reader = {
                        let client = client.clone();
                        thread::spawn(move || {
                            for _ in 0..n {
                                assert_eq!(client.read().expect("read").len(), size);
                                let _ = credit_rx.recv();
                            }
                        })
                    };
                    for _ in 0..n {
                        let _ = credit_tx.send(());
                        client.write(&payload).expect("write");
                    }
                    reader.join().expect("reader");
                }
                let retransmissions = client.stats().retransmissions;
                client.close().expect("close");
                (samples, retransmissions)
            })
        })
        .collect();
    let mut samples = Vec::new();
    let mut retransmissions = 0;
    for h in per_client {
        let (s, r) = h.join().expect("client");
        samples.extend(s);
        retransmissions += r;
    }
    let took = started.elapsed();
    let _ = server.close_timeout(Duration::from_secs(2));
    let _ = echoing.join();
    let mut f = latency_figures(clients * n, took, samples);
    f.retransmissions = retransmissions;
    f
}

/// One client streams `n` messages to the server, which only reads.
fn stream(args: &Args, window: u32, n: usize) -> Figures {
    let p = lossy_params(args, window);
    let server = Server::builder()
        .params(p)
        .faults(faults(args.loss, 7))
        .bind("127.0.0.1:0")
        .expect("bind");
    let client = Client::builder()
        .params(p)
        .faults(faults(args.loss, 8))
        .connect(server.local_addr().expect("addr"))
        .expect("connect");
    let payload = vec![0x42u8; args.size];
    let started = Instant::now();
    let writer = thread::spawn(move || {
        for _ in 0..n {
            client.write(&payload).expect("write");
        }
        let retransmissions = client.stats().retransmissions;
        client.close().expect("close");
        retransmissions
    });
    for _ in 0..n {
        server.read().expect("read");
    }
    let took = started.elapsed();
    let retransmissions = writer.join().expect("writer");
    let _ = server.close_timeout(Duration::from_secs(2));
    Figures {
        per_sec: n as f64 / took.as_secs_f64(),
        retransmissions,
        ..Figures::default()
    }
}

/// Messages written in the flow measurement, their size, and the pace of
/// the server's reader.
const FLOW_MESSAGES: usize = 200_000;
const FLOW_SIZE: usize = 1000;
const FLOW_READS_PER_SEC: f64 = 10_000.0;

/// What the slow-reader run measured.
struct FlowFigures {
    rss_start_kib: u64,
    peak_kib: u64,
    /// Resident memory every tenth of the run.
    samples_kib: Vec<u64>,
    max_unread: u64,
    seconds: f64,
    writer_seconds: f64,
}

/// One client writes [`FLOW_MESSAGES`] messages as fast as `write` lets it;
/// the server reads them at [`FLOW_READS_PER_SEC`]. Default buffers, window
/// 32, 100 ms epochs (the sender's retransmission timer is what resumes a
/// paused flow, so a shorter epoch keeps the pipe fuller).
fn flow_memory() -> FlowFigures {
    let p = Params {
        epoch_millis: 100,
        epoch_limit: 50,
        ..params(32)
    };
    let server = Server::bind("127.0.0.1:0", p).expect("bind");
    let client = Client::connect(server.local_addr().expect("addr"), p).expect("connect");
    let id = client.conn_id();
    measure::reset_peak_rss();
    let (rss_start_kib, _) = measure::rss_kib();
    let started = Instant::now();
    let writer = thread::spawn(move || {
        let payload = vec![0x42u8; FLOW_SIZE];
        for _ in 0..FLOW_MESSAGES {
            client.write(&payload).expect("write");
        }
        let wrote = started.elapsed();
        client.close().expect("close");
        wrote
    });
    let mut samples_kib = Vec::new();
    let mut max_unread = 0;
    for i in 0..FLOW_MESSAGES {
        // The reader's pace: message i no earlier than i / rate seconds in.
        let due = started + Duration::from_secs_f64(i as f64 / FLOW_READS_PER_SEC);
        let ahead = due.saturating_duration_since(Instant::now());
        if ahead > Duration::from_millis(1) {
            thread::sleep(ahead);
        }
        let (_, msg) = server.read().expect("read");
        assert_eq!(msg.len(), FLOW_SIZE);
        if i % 1000 == 0 {
            if let Some(s) = server.stats(id) {
                max_unread = max_unread.max(s.messages_received.saturating_sub(i as u64 + 1));
            }
        }
        if (i + 1) % (FLOW_MESSAGES / 10) == 0 {
            samples_kib.push(measure::rss_kib().0);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let writer_seconds = writer.join().expect("writer").as_secs_f64();
    let (_, peak_kib) = measure::rss_kib();
    let _ = server.close_timeout(Duration::from_secs(2));
    FlowFigures {
        rss_start_kib,
        peak_kib,
        samples_kib,
        max_unread,
        seconds,
        writer_seconds,
    }
}

/// A raw LSP client that connects to `server`, then heartbeats every
/// `epoch` and acknowledges nothing, until `stop` is dropped.
fn never_acking_peer(
    server: SocketAddr,
    epoch: Duration,
) -> (u32, crossbeam_channel::Sender<()>, thread::JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = Vec::new();
    Message::connect(1).encode(&mut buf);
    socket.send_to(&buf, server).expect("send");
    let mut rx = [0u8; 2048];
    let id = loop {
        let (n, _) = socket.recv_from(&mut rx).expect("the Connect's Ack");
        if let Ok(m) = Message::decode(&rx[..n]) {
            if m.kind == MsgType::Ack && m.seq_num == 1 {
                break m.conn_id;
            }
        }
    };
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let heartbeats = thread::spawn(move || {
        let mut heartbeat = Vec::new();
        Message::ack(id, 0).encode(&mut heartbeat);
        let ticker = crossbeam_channel::tick(epoch);
        loop {
            let _ = socket.send_to(&heartbeat, server);
            crossbeam_channel::select! {
                recv(ticker) -> _ => {}
                recv(stop_rx) -> _ => return,
            }
        }
    });
    (id, stop_tx, heartbeats)
}

/// Drops a server (default `Params`) that has just written 100 messages of
/// 1,000 bytes to a healthy client, or 10 to a never-acknowledging peer,
/// and returns how long until its port can be bound again (`None`: not
/// within a minute).
fn drop_to_rebind(healthy: bool) -> Option<Duration> {
    let p = Params::default();
    let server = Server::bind("127.0.0.1:0", p).expect("bind");
    let addr = server.local_addr().expect("addr");
    let payload = vec![0x42u8; FLOW_SIZE];
    let mut client = None;
    let mut peer = None;
    if healthy {
        let c = Client::connect(addr, p).expect("connect");
        for _ in 0..100 {
            server.write(c.conn_id(), &payload).expect("write");
        }
        client = Some(c);
    } else {
        let (id, stop, thread) = never_acking_peer(addr, p.epoch());
        for _ in 0..10 {
            server.write(id.into(), &payload).expect("write");
        }
        peer = Some((stop, thread));
    }
    let dropped = Instant::now();
    drop(server);
    let mut freed = None;
    while dropped.elapsed() < Duration::from_secs(60) {
        if UdpSocket::bind(addr).is_ok() {
            freed = Some(dropped.elapsed());
            break;
        }
        thread::sleep(Duration::from_millis(1)); // nothing reports a free port: poll
    }
    if let Some((stop, thread)) = peer {
        drop(stop);
        let _ = thread.join();
    }
    drop(client);
    freed
}

fn flow_report(json: bool) {
    let f = flow_memory();
    let healthy = drop_to_rebind(true);
    let never_acking = drop_to_rebind(false);
    let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    let mib = |kib: u64| kib as f64 / 1024.0;
    if json {
        let samples: Vec<String> = f.samples_kib.iter().map(|&k| k.to_string()).collect();
        println!(
            "{{\"flow_messages\":{FLOW_MESSAGES},\"flow_size\":{FLOW_SIZE},\"flow_reads_per_sec\":{},\"rss_start_kib\":{},\"peak_rss_kib\":{},\"rss_samples_kib\":[{}],\"max_unread\":{},\"flow_seconds\":{},\"writer_seconds\":{},\"drop_healthy_ms\":{},\"drop_never_acking_ms\":{}}}",
            json_number(FLOW_READS_PER_SEC),
            f.rss_start_kib,
            f.peak_kib,
            samples.join(","),
            f.max_unread,
            json_number(f.seconds),
            json_number(f.writer_seconds),
            json_number(ms(healthy)),
            json_number(ms(never_acking)),
        );
        return;
    }
    println!(
        "liveseq flow: {FLOW_MESSAGES} messages of {FLOW_SIZE} B, written as fast as write allows, read at {FLOW_READS_PER_SEC:.0}/s (default buffers)"
    );
    println!(
        "resident memory   {:>8.1} MiB at the start, peak {:.1} MiB (+{:.1} MiB)",
        mib(f.rss_start_kib),
        mib(f.peak_kib),
        mib(f.peak_kib.saturating_sub(f.rss_start_kib))
    );
    let samples: Vec<String> = f
        .samples_kib
        .iter()
        .map(|&k| format!("{:.1}", mib(k)))
        .collect();
    println!("  every tenth (MiB) {}", samples.join(" "));
    println!(
        "reader            {:>8.2} s for all ({:.0}/s); the writer's last write returned after {:.2} s; at most {} unread",
        f.seconds,
        FLOW_MESSAGES as f64 / f.seconds,
        f.writer_seconds,
        f.max_unread
    );
    let p = Params::default();
    println!(
        "drop(server) until the port is free (default Params: {} epochs of {} ms):",
        p.epoch_limit, p.epoch_millis
    );
    println!("  healthy client           {:>9.1} ms", ms(healthy));
    match never_acking {
        Some(_) => println!("  never-acknowledging peer {:>9.1} ms", ms(never_acking)),
        None => println!("  never-acknowledging peer  not within 60 s"),
    }
}

/// A line chart of echo throughput against window size (log2 axis), with
/// the raw UDP figures as reference lines.
fn sweep_svg(points: &[(u32, f64)], pingpong: f64, oneway: f64) -> String {
    let (w, h, left, bottom, top, right) = (720.0, 420.0, 80.0, 50.0, 40.0, 170.0);
    let max_y = points
        .iter()
        .map(|p| p.1)
        .fold(oneway.max(pingpong), f64::max)
        * 1.1;
    let max_x = points.last().map_or(1.0, |p| f64::from(p.0).log2());
    let x = |win: f64| left + win.log2() / max_x * (w - left - right);
    let y = |v: f64| h - bottom - v / max_y * (h - bottom - top);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" font-size="15" text-anchor="middle">liveseq echo throughput by window (1 client, 100-byte payloads, loopback)</text>
<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/>
<line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="black"/>
"#,
        w / 2.0,
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    );
    for i in 0..=5 {
        let v = max_y * f64::from(i) / 5.0;
        svg += &format!(
            r##"<line x1="{left}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#ddd"/><text x="{2}" y="{3:.1}" text-anchor="end">{4:.0}k</text>
"##,
            y(v),
            w - right,
            left - 6.0,
            y(v) + 4.0,
            v / 1000.0
        );
    }
    for &(win, _) in points {
        svg += &format!(
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{win}</text>
"#,
            x(f64::from(win)),
            h - bottom + 18.0
        );
    }
    svg += &format!(
        r#"<text x="{}" y="{}" text-anchor="middle">window size (max unacked = window)</text>
<text x="18" y="{}" transform="rotate(-90 18 {})" text-anchor="middle">messages per second</text>
"#,
        (left + w - right) / 2.0,
        h - 10.0,
        h / 2.0,
        h / 2.0
    );
    for (value, label, color) in [
        (oneway, "raw UDP one-way", "#999"),
        (pingpong, "raw UDP ping-pong", "#c60"),
    ] {
        svg += &format!(
            r#"<line x1="{left}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="{color}" stroke-dasharray="6 4"/><text x="{2}" y="{3:.1}" fill="{color}">{label}</text>
"#,
            y(value),
            w - right,
            w - right + 6.0,
            y(value) + 4.0
        );
    }
    let path: Vec<String> = points
        .iter()
        .map(|&(win, v)| format!("{:.1},{:.1}", x(f64::from(win)), y(v)))
        .collect();
    svg += &format!(
        r##"<polyline points="{}" fill="none" stroke="#06c" stroke-width="2.5"/>
"##,
        path.join(" ")
    );
    for &(win, v) in points {
        svg += &format!(
            r##"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="#06c"/>
"##,
            x(f64::from(win)),
            y(v)
        );
    }
    svg += &format!(
        r##"<text x="{}" y="{:.1}" fill="#06c">liveseq echo</text>
</svg>
"##,
        w - right + 6.0,
        y(points.last().map_or(0.0, |p| p.1)) + 4.0
    );
    svg
}
