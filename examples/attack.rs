//! What one misbehaving peer costs everyone else, measured: the figures
//! behind the README's security model and flow-control sections.
//!
//! ```text
//! cargo run --release --example attack               # every measurement (about a minute)
//! cargo run --release --example attack -- --json     # one JSON object
//! cargo run --release --example attack -- --only memory --peers 500
//! ```
//!
//! * `stall`: a well-behaved client's echo rate against the README's server
//!   loop, before and while another peer sends 3,000 messages and never
//!   acknowledges the echoes (heartbeating every epoch), with the longest
//!   wait for one echo; default `Params` unless `--epoch-millis`.
//! * `memory`: `--peers` peers (500) that each fill everything the server
//!   buffers for them (they write as fast as acknowledged and never
//!   acknowledge), against an echo server with the default memory budget:
//!   peak resident memory of the whole process, the budget in use, and a
//!   well-behaved client's echoes meanwhile.
//! * `reader`: a server reading 5,000 messages a second from a client that
//!   writes as fast as it may, with the default inbox and with an inbox of
//!   32 messages: the rate the reader gets.
//! * `amplification`: bytes the server sends to an address per byte
//!   received from it, for a lone Connect and for a forged session (a
//!   Connect, then Data and heartbeats naming a guessed connection id).

mod measure;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use liveseq::proto::{Message, MsgType};
use liveseq::{Client, Params, Server, ServerEvent};

#[derive(Parser, Debug)]
#[command(about = "what one misbehaving peer costs the others")]
struct Args {
    /// Only this measurement: stall, memory, reader or amplification.
    #[arg(long)]
    only: Option<String>,
    /// Peers of the memory measurement.
    #[arg(long, default_value_t = 500)]
    peers: usize,
    /// Epoch length of the stall and memory measurements (default: Params's).
    #[arg(long, default_value_t = Params::default().epoch_millis)]
    epoch_millis: u64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn main() {
    let args = Args::parse();
    let run = |name: &str| args.only.as_deref().is_none_or(|only| only == name);
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut say = |key: &str, value: String, text: String| {
        if !args.json {
            println!("{text}");
        }
        fields.push((key.to_string(), value));
    };
    let params = Params {
        epoch_millis: args.epoch_millis,
        ..Params::default()
    };
    if run("stall") {
        let s = stall(params);
        say(
            "stall",
            format!(
                "{{\"before_per_sec\":{:.0},\"during_per_sec\":{:.0},\"longest_wait_ms\":{:.1},\"attack_seconds\":{:.1},\"slow_consumers\":{}}}",
                s.before, s.during, s.longest.as_secs_f64() * 1e3, s.attack.as_secs_f64(), s.slow_consumers
            ),
            format!(
                "stall: {:.0} echoes/s before, {:.0}/s during {:.1} s of a never-acknowledging peer; longest wait {:.1} ms; slow consumers ended: {}",
                s.before, s.during, s.attack.as_secs_f64(), s.longest.as_secs_f64() * 1e3, s.slow_consumers
            ),
        );
    }
    if run("memory") {
        let m = memory(params, args.peers);
        say(
            "memory",
            format!(
                "{{\"peers\":{},\"connected\":{},\"rss_start_kib\":{},\"peak_rss_kib\":{},\"budget\":{},\"peak_budget_in_use\":{},\"good_echoes\":{},\"longest_wait_ms\":{:.1}}}",
                args.peers, m.connected, m.rss_start_kib, m.peak_kib, m.budget, m.peak_budget, m.echoes, m.longest.as_secs_f64() * 1e3
            ),
            format!(
                "memory: {} peers filling every buffer ({} connected): peak RSS {:.1} MiB (from {:.1} MiB), budget in use at most {:.1} of {:.1} MiB; a good client echoed {} messages, longest wait {:.1} ms",
                args.peers, m.connected, m.peak_kib as f64 / 1024.0, m.rss_start_kib as f64 / 1024.0,
                m.peak_budget as f64 / 1048576.0, m.budget as f64 / 1048576.0, m.echoes, m.longest.as_secs_f64() * 1e3
            ),
        );
    }
    if run("reader") {
        for (inbox, key) in [
            (None, "reader_default_inbox"),
            (Some(32), "reader_inbox_32"),
        ] {
            let rate = reader(inbox);
            say(
                key,
                format!("{rate:.0}"),
                format!(
                    "reader: {rate:.0} messages/s of 5,000/s taken ({:.0}%), inbox {}",
                    rate / 50.0,
                    inbox.map_or("default".to_string(), |n| format!("{n} messages"))
                ),
            );
        }
    }
    if run("amplification") {
        let (lone, forged) = amplification(params);
        say(
            "amplification",
            format!("{{\"lone_connect\":{lone:.2},\"forged_session\":{forged:.2}}}"),
            format!(
                "amplification: {lone:.2}x for a lone Connect, {forged:.2}x for a forged session"
            ),
        );
    }
    if args.json {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        println!("{{{}}}", body.join(","));
    }
}

fn encode(msg: &Message<'_>) -> Vec<u8> {
    let mut buf = Vec::new();
    msg.encode(&mut buf);
    buf
}

/// The README's server loop, on its own thread.
fn readme_loop(server: Arc<Server>) -> thread::JoinHandle<()> {
    thread::spawn(move || loop {
        match server.next_event() {
            Ok(ServerEvent::Message { id, payload }) => {
                if let Err(err) = server.write(id, &payload) {
                    log::debug!("connection {id}: {err}");
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    })
}

/// A peer that writes `messages` messages as fast as the server
/// acknowledges them (once `go` is set), never acknowledges, and heartbeats
/// every epoch. `None` if its Connect is not answered (refused).
fn hog(
    server: SocketAddr,
    params: Params,
    messages: u64,
    size: usize,
    stop: Arc<AtomicBool>,
    go: Arc<AtomicBool>,
) -> Option<thread::JoinHandle<()>> {
    let socket = UdpSocket::bind("127.0.0.1:0").ok()?;
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .ok()?;
    let isn = 1;
    let mut buf = vec![0u8; 65536];
    let mut id = None;
    'connect: for _ in 0..3 {
        socket
            .send_to(&encode(&Message::connect(isn)), server)
            .ok()?;
        while let Ok((n, _)) = socket.recv_from(&mut buf) {
            if let Ok(m) = Message::decode(&buf[..n]) {
                if m.kind == MsgType::Ack && m.seq_num == isn {
                    id = Some(m.conn_id);
                    break 'connect;
                }
            }
        }
    }
    let id = id?;
    // Proves the address, as any peer that receives does.
    socket.send_to(&encode(&Message::ack(id, 0)), server).ok()?;
    socket
        .set_read_timeout(Some(Duration::from_millis(5)))
        .ok()?;
    Some(thread::spawn(move || {
        while !go.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(1));
        }
        let window = u64::from(params.window_size);
        let payload = vec![b'x'; size];
        // Acknowledged through `acked`, and the single Acks above it (a
        // server with several receive threads may acknowledge a later
        // message of a burst first).
        let (mut acked, mut next) = (isn, isn + 1);
        let mut above = std::collections::BTreeSet::new();
        let mut last_epoch = Instant::now() - params.epoch();
        while !stop.load(Ordering::SeqCst) {
            while next <= isn + messages && next <= acked + window {
                let _ = socket.send_to(&encode(&Message::data(id, next, &payload)), server);
                next += 1;
            }
            if last_epoch.elapsed() >= params.epoch() {
                last_epoch = Instant::now();
                let _ = socket.send_to(&encode(&Message::ack(id, 0)), server);
                for sn in (acked + 1..next).filter(|sn| !above.contains(sn)) {
                    let _ = socket.send_to(&encode(&Message::data(id, sn, &payload)), server);
                }
            }
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                match Message::decode(&buf[..n]) {
                    Ok(m) if m.kind == MsgType::CAck => acked = acked.max(m.seq_num),
                    Ok(m) if m.kind == MsgType::Ack && m.seq_num > acked => {
                        above.insert(m.seq_num);
                    }
                    _ => {}
                }
                while above.first().is_some_and(|&sn| sn <= acked + 1) {
                    acked = acked.max(above.pop_first().unwrap_or(acked));
                }
            }
        }
    }))
}

/// Echoes one message at a time for `period`: echoes per second and the
/// longest wait for one.
fn echo_for(client: &Client, period: Duration) -> (f64, Duration) {
    let start = Instant::now();
    let (mut n, mut longest) = (0u64, Duration::ZERO);
    while start.elapsed() < period {
        let sent = Instant::now();
        client.write(b"ping").expect("write");
        assert_eq!(client.read().expect("read"), b"ping");
        longest = longest.max(sent.elapsed());
        n += 1;
    }
    (n as f64 / start.elapsed().as_secs_f64(), longest)
}

struct Stall {
    before: f64,
    during: f64,
    longest: Duration,
    attack: Duration,
    slow_consumers: u64,
}

fn stall(params: Params) -> Stall {
    let server = Arc::new(Server::bind("127.0.0.1:0", params).expect("bind"));
    let addr = server.local_addr().expect("addr");
    let echo = readme_loop(server.clone());
    let client = Client::connect(addr, params).expect("connect");
    let (before, _) = echo_for(&client, Duration::from_secs(2));
    let stop = Arc::new(AtomicBool::new(false));
    let go = Arc::new(AtomicBool::new(true));
    let attacker = hog(addr, params, 3000, 100, stop.clone(), go).expect("attacker");
    // Until the attacker is ended (its stall limit), and two epochs more.
    let start = Instant::now();
    let mut longest = Duration::ZERO;
    let mut rates = Vec::new();
    while server.totals().slow_consumers == 0 && start.elapsed() < Duration::from_secs(120) {
        let (rate, wait) = echo_for(&client, Duration::from_millis(500));
        rates.push(rate);
        longest = longest.max(wait);
    }
    let (rate, wait) = echo_for(&client, params.epoch() * 2);
    rates.push(rate);
    longest = longest.max(wait);
    let attack = start.elapsed();
    stop.store(true, Ordering::SeqCst);
    let _ = attacker.join();
    let slow_consumers = server.totals().slow_consumers;
    drop(client);
    let _ = server.close_timeout(Duration::from_secs(1));
    let _ = echo.join();
    Stall {
        before,
        during: rates.iter().sum::<f64>() / rates.len() as f64,
        longest,
        attack,
        slow_consumers,
    }
}

struct Memory {
    connected: usize,
    rss_start_kib: u64,
    peak_kib: u64,
    budget: usize,
    peak_budget: usize,
    echoes: u64,
    longest: Duration,
}

fn memory(params: Params, peers: usize) -> Memory {
    // Window 8, and the epoch limit long enough that the peers are not
    // ended as slow consumers before they have filled what they can.
    let params = Params {
        window_size: 8,
        max_unacked_messages: 8,
        epoch_limit: 20,
        ..params
    };
    let server = Arc::new(Server::bind("127.0.0.1:0", params).expect("bind"));
    let addr = server.local_addr().expect("addr");
    let echo = readme_loop(server.clone());
    let good = Client::connect(addr, params).expect("connect");
    measure::reset_peak_rss();
    let (rss_start_kib, _) = measure::rss_kib();
    let stop = Arc::new(AtomicBool::new(false));
    // Every peer connects first, then all of them flood at once.
    let go = Arc::new(AtomicBool::new(false));
    let hogs: Vec<_> = (0..peers)
        .filter_map(|_| hog(addr, params, u64::MAX / 4, 1000, stop.clone(), go.clone()))
        .collect();
    let connected = hogs.len();
    go.store(true, Ordering::SeqCst);
    let start = Instant::now();
    let (mut echoes, mut longest, mut peak_budget) = (0, Duration::ZERO, 0);
    while start.elapsed() < Duration::from_secs(10) {
        let (rate, wait) = echo_for(&good, Duration::from_millis(200));
        echoes += (rate * 0.2) as u64;
        longest = longest.max(wait);
        peak_budget = peak_budget.max(server.totals().budget_in_use);
    }
    let (_, peak_kib) = measure::rss_kib();
    stop.store(true, Ordering::SeqCst);
    for h in hogs {
        let _ = h.join();
    }
    let budget = server.totals().budget;
    drop(good);
    let _ = server.close_timeout(Duration::from_secs(1));
    let _ = echo.join();
    Memory {
        connected,
        rss_start_kib,
        peak_kib,
        budget,
        peak_budget,
        echoes,
        longest,
    }
}

/// The rate a server reading 5,000 messages a second gets from a client
/// writing as fast as it may (default `Params`, 100-byte messages).
fn reader(inbox: Option<usize>) -> f64 {
    const RATE: f64 = 5000.0;
    const MESSAGES: usize = 15_000;
    let params = Params::default();
    let mut builder = Server::builder().params(params);
    if let Some(n) = inbox {
        builder = builder.inbox(n, 1 << 20);
    }
    let server = builder.bind("127.0.0.1:0").expect("bind");
    let client = Client::connect(server.local_addr().expect("addr"), params).expect("connect");
    let writer = thread::spawn(move || {
        for i in 0..MESSAGES {
            client.write(&(i as u64).to_be_bytes()).expect("write");
        }
        client
    });
    let start = Instant::now();
    for i in 0..MESSAGES {
        let due = start + Duration::from_secs_f64(i as f64 / RATE);
        let ahead = due.saturating_duration_since(Instant::now());
        if !ahead.is_zero() {
            thread::sleep(ahead);
        }
        let (_, msg) = server.read().expect("read");
        assert_eq!(msg, (i as u64).to_be_bytes());
    }
    let rate = MESSAGES as f64 / start.elapsed().as_secs_f64();
    let client = writer.join().expect("writer");
    let _ = client.close_timeout(Duration::from_secs(1));
    let _ = server.close_timeout(Duration::from_secs(1));
    rate
}

/// Bytes received per byte sent, over `epochs` epochs, by a socket that
/// sends a Connect and then (for a forged session) Data and a heartbeat
/// every epoch naming `guess`, the id a sequential server would have given.
fn amplification(params: Params) -> (f64, f64) {
    let params = Params {
        epoch_millis: 50,
        ..params
    };
    let measure = |forge: bool| {
        let server = Server::bind("127.0.0.1:0", params).expect("bind");
        let addr = server.local_addr().expect("addr");
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(5)))
            .expect("timeout");
        let (mut sent, mut received) = (0usize, 0usize);
        let mut send = |bytes: Vec<u8>| {
            sent += bytes.len();
            let _ = socket.send_to(&bytes, addr);
        };
        send(encode(&Message::connect(1)));
        let guess = 1;
        let start = Instant::now();
        let mut epoch = 0;
        let mut buf = [0u8; 2048];
        while start.elapsed() < params.epoch() * 10 {
            if forge && start.elapsed() >= params.epoch() * epoch {
                send(encode(&Message::data(guess, 2 + u64::from(epoch), b"x")));
                send(encode(&Message::ack(guess, 0)));
                epoch += 1;
            }
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                received += n;
            }
        }
        let _ = server.close_timeout(Duration::ZERO);
        received as f64 / sent as f64
    };
    (measure(false), measure(true))
}
