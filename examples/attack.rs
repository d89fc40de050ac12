//! What one misbehaving peer costs everyone else, measured: the figures
//! behind the README's security model and flow-control sections.
//!
//! ```text
//! cargo run --release --example attack               # every measurement (about two minutes)
//! cargo run --release --example attack -- --json     # one JSON object
//! cargo run --release --example attack -- --only memory --peers 500
//! cargo run --release --example attack -- --only fill --peers 130 --epoch-millis 200
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
//!
//! The budget attacks of issue 26, peers that each stay just under their
//! own limits (default `Params` but for `--epoch-millis`, 200 ms here, and
//! the default 128 MiB budget):
//!
//! * `fill`: the `echo_server` example's loop, and `--peers` raw-socket
//!   peers (130) that each upload 1,000 messages of the largest payload, one
//!   at a time as the server acknowledges, never acknowledge the echoes, and
//!   heartbeat every epoch. `--probes` honest clients (17) connect, echo one
//!   message and close, before the attack and once the uploads are done (or
//!   have stopped); a lone honest client's echo rate (window 1) before and
//!   then; the budget in use at its peak, the server's refusals and slow
//!   consumers, and peak resident memory (the whole process, attackers
//!   included).
//! * `chat`: the chat example's relay, 170 silent members (they connect and
//!   heartbeat, and acknowledge nothing) and a talker whose 830 messages of
//!   the largest payload the relay copies to each of them; then honest
//!   member A sends a burst of 20 that honest member B must receive in
//!   order, and 3 new members join; the same before the attack.
//! * `listener`: a `Listener` whose application does not accept while 40
//!   raw-socket peers each send 4,200 messages of the largest payload (more
//!   than a default inbox, 4 MiB or 4,096 messages); it then accepts, and
//!   reads no more than the first message of a connection unless that is
//!   `good`. 4 new clients say `good` and must get an echo.

mod measure;

#[allow(dead_code)] // the example's `main`, command line and client side
#[path = "chat.rs"]
mod chat;

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use liveseq::proto::{max_payload, Message, MsgType, DEFAULT_MAX_DATAGRAM};
use liveseq::{Client, Error, Listener, Params, Server, ServerEvent, ServerStats};

#[derive(Parser, Debug)]
#[command(about = "what one misbehaving peer costs the others")]
struct Args {
    /// Only this measurement: stall, memory, reader, amplification, fill,
    /// chat or listener.
    #[arg(long)]
    only: Option<String>,
    /// Peers of the memory (default 500) and fill (default 130) measurements.
    #[arg(long)]
    peers: Option<usize>,
    /// Epoch length of the stall and memory measurements (default:
    /// Params's, 2,000 ms) and of fill, chat and listener (default 200 ms).
    #[arg(long)]
    epoch_millis: Option<u64>,
    /// Honest connects of the fill measurement, before and during.
    #[arg(long, default_value_t = 17)]
    probes: usize,
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
        epoch_millis: args.epoch_millis.unwrap_or(Params::default().epoch_millis),
        ..Params::default()
    };
    // The budget attacks: short epochs, so that they take seconds.
    let budget_params = Params {
        epoch_millis: args.epoch_millis.unwrap_or(200),
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
        let peers = args.peers.unwrap_or(500);
        let m = memory(params, peers);
        say(
            "memory",
            format!(
                "{{\"peers\":{},\"connected\":{},\"rss_start_kib\":{},\"peak_rss_kib\":{},\"budget\":{},\"peak_budget_in_use\":{},\"good_echoes\":{},\"longest_wait_ms\":{:.1}}}",
                peers, m.connected, m.rss_start_kib, m.peak_kib, m.budget, m.peak_budget, m.echoes, m.longest.as_secs_f64() * 1e3
            ),
            format!(
                "memory: {} peers filling every buffer ({} connected): peak RSS {:.1} MiB (from {:.1} MiB), budget in use at most {:.1} of {:.1} MiB; a good client echoed {} messages, longest wait {:.1} ms",
                peers, m.connected, m.peak_kib as f64 / 1024.0, m.rss_start_kib as f64 / 1024.0,
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
    if run("fill") {
        let f = fill(budget_params, args.peers.unwrap_or(130), args.probes);
        say(
            "fill",
            format!(
                "{{\"epoch_millis\":{},\"peers\":{},\"connected\":{},\"uploaded\":{},\"upload_target\":{},\"fill_seconds\":{:.2},\"probes\":{},\"honest_before\":{},\"honest_during\":{},\"rate_alone_per_sec\":{:.0},\"rate_during_per_sec\":{:.0},\"budget\":{},\"peak_budget_in_use\":{},\"at_fill\":{},\"end\":{},\"rss_start_kib\":{},\"peak_rss_kib\":{},\"echo_errors\":{},\"failures\":{}}}",
                f.epoch_millis, f.peers, f.connected, f.uploaded, f.target, f.fill_seconds, f.probes,
                f.honest_before, f.honest_during, f.rate_alone, f.rate_during, f.end.budget, f.peak_budget,
                totals_json(&f.at_fill), totals_json(&f.end), f.rss_start_kib, f.peak_rss_kib,
                json_counts(&f.echo_errors), f.failures.len()
            ),
            format!(
                "fill: {} peers ({} connected) uploaded {} of {} messages of {} B in {:.1} s (epochs of {} ms); honest clients {} of {} before, {} of {} after the fill; a new client's echo rate {:.0}/s alone, {:.0}/s then; budget in use at most {:.1} of {:.1} MiB; at the fill: {}; at the end: {}; peak RSS {:.1} MiB (from {:.1}); the echo loop's errors: {}",
                f.peers, f.connected, f.uploaded, f.target, largest(), f.fill_seconds, f.epoch_millis,
                f.honest_before, f.probes, f.honest_during, f.probes, f.rate_alone, f.rate_during,
                f.peak_budget as f64 / 1048576.0, f.end.budget as f64 / 1048576.0,
                totals_text(&f.at_fill), totals_text(&f.end),
                f.peak_rss_kib as f64 / 1024.0, f.rss_start_kib as f64 / 1024.0, text_counts(&f.echo_errors)
            ) + &lines(&f.rate_errors, &f.failures),
        );
    }
    if run("chat") {
        let c = chat_attack(budget_params, 170);
        say(
            "chat",
            format!(
                "{{\"epoch_millis\":{},\"members\":{},\"connected\":{},\"talk\":{},\"talk_sent\":{},\"talker_close\":\"{}\",\"b_got_talk\":{},\"b_missed_talk\":\"{}\",\"talked_seconds\":{:.2},\"burst_before\":{},\"burst_before_in_order\":{},\"burst_during\":{},\"burst_during_in_order\":{},\"joins\":{},\"joins_before\":{},\"joins_during\":{},\"budget\":{},\"peak_budget_in_use\":{},\"talked\":{},\"after_burst\":{},\"after_joins\":{},\"settled_seconds\":{:.2},\"settled\":{},\"rss_start_kib\":{},\"peak_rss_kib\":{},\"failures\":{}}}",
                c.epoch_millis, c.members, c.connected, c.talk, c.talk_sent, c.talk_close.replace('"', "'"), c.b_talk,
                c.b_missed.join(","), c.talked_seconds,
                c.burst_before.0, c.burst_before.1, c.burst_during.0, c.burst_during.1, c.joins, c.joins_before,
                c.joins_during, c.end.budget, c.peak_budget, totals_json(&c.talked), totals_json(&c.at_burst),
                totals_json(&c.end), c.settled_seconds, totals_json(&c.settled),
                c.rss_start_kib, c.peak_rss_kib, c.failures.len()
            ),
            format!(
                "chat: {} silent members ({} connected) and a talker ({} of {} messages of {} B written, close: {} after {:.1} s; B got {} of them, missed {}), epochs of {} ms; A's burst of 20 reached B {} ({} in order) before, {} ({} in order) during; joins {} of {} before, {} of {} during; budget in use at most {:.1} of {:.1} MiB; when the talker closed: {}; after the burst: {}; after the joins: {}; {:.1} s later: {}; peak RSS {:.1} MiB (from {:.1})",
                c.members, c.connected, c.talk_sent, c.talk, largest(), c.talk_close, c.talked_seconds, c.b_talk,
                if c.b_missed.is_empty() { "none".to_string() } else { c.b_missed.join(",") }, c.epoch_millis,
                c.burst_before.0, c.burst_before.1, c.burst_during.0, c.burst_during.1,
                c.joins_before, c.joins, c.joins_during, c.joins,
                c.peak_budget as f64 / 1048576.0, c.end.budget as f64 / 1048576.0,
                totals_text(&c.talked), totals_text(&c.at_burst), totals_text(&c.end), c.settled_seconds, totals_text(&c.settled),
                c.peak_rss_kib as f64 / 1024.0, c.rss_start_kib as f64 / 1024.0
            ) + &lines(&[], &c.failures),
        );
    }
    if run("listener") {
        let l = listener_attack(budget_params, 40);
        say(
            "listener",
            format!(
                "{{\"epoch_millis\":{},\"peers\":{},\"connected\":{},\"uploaded\":{},\"upload_target\":{},\"fill_seconds\":{:.2},\"accepted\":{},\"good\":{},\"good_ok\":{},\"budget\":{},\"peak_budget_in_use\":{},\"at_fill\":{},\"end\":{},\"rss_start_kib\":{},\"peak_rss_kib\":{},\"failures\":{}}}",
                l.epoch_millis, l.peers, l.connected, l.uploaded, l.target, l.fill_seconds, l.accepted, l.good,
                l.good_ok, l.end.budget, l.peak_budget, totals_json(&l.at_fill), totals_json(&l.end),
                l.rss_start_kib, l.peak_rss_kib, l.failures.len()
            ),
            format!(
                "listener: {} peers ({} connected) never accepted uploaded {} of {} messages of {} B in {:.1} s (epochs of {} ms); then {} accepted and only good ones read; new clients {} of {} echoed; budget in use at most {:.1} of {:.1} MiB; at the fill: {}; at the end: {}; peak RSS {:.1} MiB (from {:.1})",
                l.peers, l.connected, l.uploaded, l.target, largest(), l.fill_seconds, l.epoch_millis, l.accepted,
                l.good_ok, l.good, l.peak_budget as f64 / 1048576.0, l.end.budget as f64 / 1048576.0,
                totals_text(&l.at_fill), totals_text(&l.end),
                l.peak_rss_kib as f64 / 1024.0, l.rss_start_kib as f64 / 1024.0
            ) + &lines(&[], &l.failures),
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

/// Connects from a new socket on 127.0.0.1 by hand, and proves the address
/// with a heartbeat, as any peer that receives does: the socket and its
/// connection id, or `None` if the Connect is not answered (refused).
fn raw_connect(server: SocketAddr) -> Option<(UdpSocket, u32)> {
    let socket = UdpSocket::bind("127.0.0.1:0").ok()?;
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .ok()?;
    let isn = 1;
    let mut buf = vec![0u8; 65536];
    for _ in 0..3 {
        socket
            .send_to(&encode(&Message::connect(isn)), server)
            .ok()?;
        while let Ok((n, _)) = socket.recv_from(&mut buf) {
            if let Ok(m) = Message::decode(&buf[..n]) {
                if m.kind == MsgType::Ack && m.seq_num == isn {
                    socket
                        .send_to(&encode(&Message::ack(m.conn_id, 0)), server)
                        .ok()?;
                    return Some((socket, m.conn_id));
                }
            }
        }
    }
    None
}

/// A peer that writes `messages` messages as fast as the server
/// acknowledges them (once `go` is set), never acknowledges, and heartbeats
/// every epoch; it adds each message acknowledged to `uploaded`. `None` if
/// its Connect is not answered (refused).
fn hog(
    server: SocketAddr,
    params: Params,
    messages: u64,
    size: usize,
    stop: Arc<AtomicBool>,
    go: Arc<AtomicBool>,
    uploaded: Arc<AtomicU64>,
) -> Option<thread::JoinHandle<()>> {
    let isn = 1;
    let (socket, id) = raw_connect(server)?;
    socket
        .set_read_timeout(Some(Duration::from_millis(5)))
        .ok()?;
    Some(thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
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
                let before = acked;
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
                uploaded.fetch_add(acked - before, Ordering::SeqCst);
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
    let attacker =
        hog(addr, params, 3000, 100, stop.clone(), go, Arc::default()).expect("attacker");
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
        .filter_map(|_| {
            let (stop, go) = (stop.clone(), go.clone());
            hog(addr, params, u64::MAX / 4, 1000, stop, go, Arc::default())
        })
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

/// The payload of the largest message at the default datagram size (1,026 B).
fn largest() -> usize {
    max_payload(DEFAULT_MAX_DATAGRAM)
}

/// The longest a probe waits for one answer: the connect deadline
/// (`epoch_limit` epochs), and at least 2 s.
fn patience(params: Params) -> Duration {
    (params.epoch() * params.epoch_limit).max(Duration::from_secs(2))
}

/// The name of an error's variant (`BudgetExhausted`, `ConnectionLost`).
fn kind(err: &Error) -> String {
    let text = format!("{err:?}");
    text.split(['(', ' ', '{']).next().unwrap_or("").to_string()
}

/// `{"A":1,"B":2}`.
fn json_counts(counts: &BTreeMap<String, u64>) -> String {
    let body: Vec<String> = counts.iter().map(|(k, n)| format!("\"{k}\":{n}")).collect();
    format!("{{{}}}", body.join(","))
}

/// `A x1, B x2`, or `none`.
fn text_counts(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return "none".to_string();
    }
    let body: Vec<String> = counts.iter().map(|(k, n)| format!("{k} x{n}")).collect();
    body.join(", ")
}

/// `peers` hogs that each upload `messages` of the largest payload, all at
/// once after every one has connected.
struct Upload {
    hogs: Vec<thread::JoinHandle<()>>,
    connected: usize,
    /// Messages the server acknowledged when the uploads were done or stopped.
    uploaded: u64,
    target: u64,
    seconds: f64,
}

impl Upload {
    /// Stops the hogs, and waits until they have.
    fn stop(&mut self, stop: &AtomicBool) {
        stop.store(true, Ordering::SeqCst);
        for h in self.hogs.drain(..) {
            let _ = h.join();
        }
    }
}

/// Stops a [`sample_peak`] thread: the most budget in use it saw.
fn peak_of(sampler: thread::ScopedJoinHandle<'_, usize>, stop: &AtomicBool) -> usize {
    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap_or(0)
}

/// Starts the hogs of an [`Upload`] and waits until they are done or make
/// no progress for three epochs (at least 0.5 s), within 60 s.
fn upload(
    addr: SocketAddr,
    params: Params,
    peers: usize,
    messages: u64,
    stop: &Arc<AtomicBool>,
) -> Upload {
    let go = Arc::new(AtomicBool::new(false));
    let uploaded = Arc::new(AtomicU64::new(0));
    let hogs: Vec<_> = (0..peers)
        .filter_map(|_| {
            let (stop, go, up) = (stop.clone(), go.clone(), uploaded.clone());
            hog(addr, params, messages, largest(), stop, go, up)
        })
        .collect();
    let connected = hogs.len();
    let target = connected as u64 * messages;
    go.store(true, Ordering::SeqCst);
    let start = Instant::now();
    let quiet = (params.epoch() * 3).max(Duration::from_millis(500));
    let uploaded = wait_uploads(&uploaded, target, quiet, Duration::from_secs(60));
    Upload {
        hogs,
        connected,
        uploaded,
        target,
        seconds: start.elapsed().as_secs_f64(),
    }
}

/// What went wrong for an honest peer, and the server's totals just after.
struct Failure {
    what: String,
    error: String,
    at: Duration,
    totals: ServerStats,
}

impl Failure {
    fn text(&self) -> String {
        let t = &self.totals;
        format!(
            "  {} failed at {:.2} s: {}; totals then: active {}, accepted {}, refused {}, budget_refusals {}, lost {}, slow_consumers {}, budget_in_use {} of {}, not_writable {}",
            self.what, self.at.as_secs_f64(), self.error, t.active, t.accepted, t.refused,
            t.budget_refusals, t.lost, t.slow_consumers, t.budget_in_use, t.budget, t.not_writable
        )
    }
}

/// `notes` and `failures`, each on a line of its own after the summary.
fn lines(notes: &[String], failures: &[Failure]) -> String {
    let failures = failures.iter().map(Failure::text);
    notes
        .iter()
        .cloned()
        .chain(failures)
        .map(|line| format!("\n{line}"))
        .collect()
}

/// The parts of the totals a budget measurement reports.
fn totals_json(t: &ServerStats) -> String {
    format!(
        "{{\"active\":{},\"accepted\":{},\"refused\":{},\"budget_refusals\":{},\"lost\":{},\"slow_consumers\":{},\"budget_in_use\":{},\"not_writable\":{}}}",
        t.active, t.accepted, t.refused, t.budget_refusals, t.lost, t.slow_consumers, t.budget_in_use, t.not_writable
    )
}

fn totals_text(t: &ServerStats) -> String {
    format!(
        "active {}, refused {}, budget_refusals {}, slow_consumers {}, lost {}, budget in use {:.1} MiB",
        t.active,
        t.refused,
        t.budget_refusals,
        t.slow_consumers,
        t.lost,
        t.budget_in_use as f64 / 1048576.0
    )
}

/// Samples `budget_in_use` every 2 ms in a scoped thread until `stop`: the
/// most seen.
fn sample_peak<'s>(
    scope: &'s thread::Scope<'s, '_>,
    totals: impl Fn() -> ServerStats + Send + 's,
    stop: &'s AtomicBool,
) -> thread::ScopedJoinHandle<'s, usize> {
    scope.spawn(move || {
        let mut peak = 0;
        while !stop.load(Ordering::SeqCst) {
            peak = peak.max(totals().budget_in_use);
            thread::sleep(Duration::from_millis(2));
        }
        peak.max(totals().budget_in_use)
    })
}

/// Waits until `uploaded` reaches `target`, or has not grown for `quiet`,
/// or `deadline` has passed since the start: the count then.
fn wait_uploads(uploaded: &AtomicU64, target: u64, quiet: Duration, deadline: Duration) -> u64 {
    let start = Instant::now();
    let (mut last, mut since) = (uploaded.load(Ordering::SeqCst), Instant::now());
    loop {
        let now = uploaded.load(Ordering::SeqCst);
        if now >= target || start.elapsed() >= deadline {
            return now;
        }
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= quiet {
            return now;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// What the `echo_server` example's loop would have printed: its failed
/// echoes and lost connections, by kind, and the echoes written.
#[derive(Default)]
struct EchoLog {
    echoed: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl EchoLog {
    fn count(&self, what: String) {
        if let Ok(mut errors) = self.errors.lock() {
            *errors.entry(what).or_default() += 1;
        }
    }

    fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

/// The `echo_server` example's loop, on its own thread: it counts in `log`
/// what that example prints (at debug level here, one line for each).
fn echo_server_loop(server: Arc<Server>, log: Arc<EchoLog>) -> thread::JoinHandle<()> {
    thread::spawn(move || loop {
        match server.read() {
            Ok((id, msg)) => match server.write(id, &msg) {
                Ok(()) => {
                    log.echoed.fetch_add(1, Ordering::Relaxed);
                }
                Err(err) => {
                    log::debug!("echo_server: echo to connection {id} failed: {err}");
                    log.count(format!("echo failed: {}", kind(&err)));
                }
            },
            Err(Error::ConnectionLost(id)) => {
                log::debug!("echo_server: connection {id} lost");
                log.count("connection lost".to_string());
            }
            Err(Error::ConnectionClosed(_)) => {}
            Err(_) => return,
        }
    })
}

/// An honest client: connects, echoes one message, closes.
fn honest_echo(addr: SocketAddr, params: Params) -> Result<(), String> {
    let client = Client::connect(addr, params).map_err(|e| format!("connect: {e}"))?;
    client.write(b"honest").map_err(|e| format!("write: {e}"))?;
    match client.read_timeout(patience(params)) {
        Ok(echo) if echo == b"honest" => {}
        Ok(_) => return Err("a wrong echo".to_string()),
        Err(e) => return Err(format!("echo: {e}")),
    }
    client
        .close_timeout(patience(params))
        .map_err(|e| format!("close: {e}"))
}

/// `probes` honest clients in turn: how many succeeded, and the failures.
fn honest_probes(
    addr: SocketAddr,
    params: Params,
    probes: usize,
    phase: &str,
    start: Instant,
    totals: impl Fn() -> ServerStats,
) -> (usize, Vec<Failure>) {
    let mut failures = Vec::new();
    for i in 0..probes {
        if let Err(error) = honest_echo(addr, params) {
            failures.push(Failure {
                what: format!("honest client {} of {probes} {phase}", i + 1),
                error,
                at: start.elapsed(),
                totals: totals(),
            });
        }
    }
    (probes - failures.len(), failures)
}

/// A new client's echo rate for `period`, one message in flight: echoes
/// per second, and why it stopped early if it did.
fn echo_rate(addr: SocketAddr, params: Params, period: Duration) -> (f64, Option<String>) {
    let client = match Client::connect(addr, params) {
        Ok(client) => client,
        Err(e) => return (0.0, Some(format!("connect: {e}"))),
    };
    let start = Instant::now();
    let mut n = 0u64;
    let mut error = None;
    while start.elapsed() < period {
        if let Err(e) = client.write(b"ping") {
            error = Some(format!("write after {n} echoes: {e}"));
            break;
        }
        match client.read_timeout(patience(params)) {
            Ok(echo) if echo == b"ping" => n += 1,
            Ok(_) => {
                error = Some("a wrong echo".to_string());
                break;
            }
            Err(e) => {
                error = Some(format!("echo after {n} echoes: {e}"));
                break;
            }
        }
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let _ = client.close_timeout(Duration::from_secs(1));
    (rate, error)
}

struct Fill {
    epoch_millis: u64,
    peers: usize,
    connected: usize,
    uploaded: u64,
    target: u64,
    fill_seconds: f64,
    probes: usize,
    honest_before: usize,
    honest_during: usize,
    rate_alone: f64,
    rate_during: f64,
    rate_errors: Vec<String>,
    at_fill: ServerStats,
    end: ServerStats,
    peak_budget: usize,
    rss_start_kib: u64,
    peak_rss_kib: u64,
    echo_errors: BTreeMap<String, u64>,
    failures: Vec<Failure>,
}

/// The echo_server attack: see the module's documentation.
fn fill(params: Params, peers: usize, probes: usize) -> Fill {
    const MESSAGES: u64 = 1000;
    let server = Arc::new(Server::bind("127.0.0.1:0", params).expect("bind"));
    let addr = server.local_addr().expect("addr");
    let log = Arc::new(EchoLog::default());
    let echo = echo_server_loop(server.clone(), log.clone());
    let start = Instant::now();
    let stop_sampling = AtomicBool::new(false);
    let result = thread::scope(|s| {
        let peak = sample_peak(s, || server.totals(), &stop_sampling);
        let totals = || server.totals();
        let (honest_before, mut failures) =
            honest_probes(addr, params, probes, "before the attack", start, totals);
        let (rate_alone, alone_error) = echo_rate(addr, params, Duration::from_secs(2));
        measure::reset_peak_rss();
        let (rss_start_kib, _) = measure::rss_kib();
        let stop = Arc::new(AtomicBool::new(false));
        let mut up = upload(addr, params, peers, MESSAGES, &stop);
        let at_fill = server.totals();
        let (honest_during, during) =
            honest_probes(addr, params, probes, "after the fill", start, totals);
        failures.extend(during);
        let (rate_during, during_error) = echo_rate(addr, params, Duration::from_secs(2));
        let (_, peak_rss_kib) = measure::rss_kib();
        let end = server.totals();
        up.stop(&stop);
        let peak_budget = peak_of(peak, &stop_sampling);
        let rate_errors = [("alone", alone_error), ("during", during_error)]
            .into_iter()
            .filter_map(|(when, e)| e.map(|e| format!("  echo-rate client {when}: {e}")))
            .collect();
        Fill {
            epoch_millis: params.epoch_millis,
            peers,
            connected: up.connected,
            uploaded: up.uploaded,
            target: up.target,
            fill_seconds: up.seconds,
            probes,
            honest_before,
            honest_during,
            rate_alone,
            rate_during,
            rate_errors,
            at_fill,
            end,
            peak_budget,
            rss_start_kib,
            peak_rss_kib,
            echo_errors: log.errors(),
            failures,
        }
    });
    let _ = server.close_timeout(Duration::from_secs(1));
    let _ = echo.join();
    result
}

/// A member's received messages, sorted as they come: those of a burst
/// (`burst R I`), the talker's (`talk I`), the rest.
#[derive(Default)]
struct Inbox {
    /// Burst round -> indexes, in the order received.
    bursts: Mutex<BTreeMap<u32, Vec<u32>>>,
    /// The talker's messages, by index.
    talk: Mutex<Vec<u64>>,
    other: AtomicU64,
}

impl Inbox {
    fn take(&self, msg: &[u8]) {
        let text = String::from_utf8_lossy(msg);
        if let Some(at) = text.find("burst ") {
            let mut words = text[at + 6..].split_whitespace();
            let round = words.next().and_then(|w| w.parse().ok());
            let i = words.next().and_then(|w| w.parse().ok());
            if let (Some(round), Some(i), Ok(mut bursts)) = (round, i, self.bursts.lock()) {
                bursts.entry(round).or_default().push(i);
                return;
            }
        }
        if let Some(at) = text.find(": talk ") {
            let i = text[at + 7..].split_whitespace().next();
            if let (Some(i), Ok(mut talk)) = (i.and_then(|w| w.parse().ok()), self.talk.lock()) {
                talk.push(i);
                return;
            }
        }
        {
            self.other.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Of the talker's `n` messages: how many arrived, and the ranges of
    /// those that did not (`a-b`, or `a` alone).
    fn talk(&self, n: u64) -> (u64, Vec<String>) {
        let talk = self.talk.lock().map(|t| t.clone()).unwrap_or_default();
        let got: std::collections::BTreeSet<u64> = talk.into_iter().collect();
        let mut missing: Vec<(u64, u64)> = Vec::new();
        for i in (0..n).filter(|i| !got.contains(i)) {
            match missing.last_mut() {
                Some((_, last)) if *last + 1 == i => *last = i,
                _ => missing.push((i, i)),
            }
        }
        let ranges = missing
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        (got.len() as u64, ranges)
    }

    /// Of burst `round`: how many arrived, and how many of them in order
    /// (each the next expected).
    fn burst(&self, round: u32) -> (usize, usize) {
        let bursts = self.bursts.lock().map(|b| b.clone()).unwrap_or_default();
        let got = bursts.get(&round).cloned().unwrap_or_default();
        let in_order = got
            .iter()
            .enumerate()
            .take_while(|&(k, &i)| i as usize == k)
            .count();
        (got.len(), in_order)
    }
}

/// Reads `client` into `inbox` until `stop` or the client's end.
fn member_reader<'s>(
    scope: &'s thread::Scope<'s, '_>,
    client: &'s Client,
    inbox: &'s Inbox,
    stop: &'s AtomicBool,
) {
    scope.spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match client.read_timeout(Duration::from_millis(50)) {
                Ok(msg) => inbox.take(&msg),
                Err(Error::Timeout) => {}
                Err(_) => return,
            }
        }
    });
}

struct Chat {
    epoch_millis: u64,
    members: usize,
    connected: usize,
    talk: u64,
    talk_sent: u64,
    talk_close: String,
    b_talk: u64,
    b_missed: Vec<String>,
    talked_seconds: f64,
    settled_seconds: f64,
    burst_before: (usize, usize),
    burst_during: (usize, usize),
    joins_before: usize,
    joins_during: usize,
    joins: usize,
    talked: ServerStats,
    at_burst: ServerStats,
    end: ServerStats,
    settled: ServerStats,
    peak_budget: usize,
    rss_start_kib: u64,
    peak_rss_kib: u64,
    failures: Vec<Failure>,
}

/// The chat attack: see the module's documentation.
fn chat_attack(params: Params, members: usize) -> Chat {
    const TALK: u64 = 830;
    const BURST: u32 = 20;
    const JOINS: usize = 3;
    let server = Arc::new(Server::bind("127.0.0.1:0", params).expect("bind"));
    let addr = server.local_addr().expect("addr");
    let relay = {
        let server = server.clone();
        thread::spawn(move || chat::relay(&server))
    };
    let start = Instant::now();
    let stop = AtomicBool::new(false);
    let stop_sampling = AtomicBool::new(false);
    let a = Client::connect(addr, params).expect("member A");
    let b = Client::connect(addr, params).expect("member B");
    let (a_inbox, b_inbox) = (Inbox::default(), Inbox::default());
    let result = thread::scope(|s| {
        let peak = sample_peak(s, || server.totals(), &stop_sampling);
        member_reader(s, &a, &a_inbox, &stop);
        member_reader(s, &b, &b_inbox, &stop);
        let mut failures = Vec::new();
        let mut fail = |what: String, error: String| {
            failures.push(Failure {
                what,
                error,
                at: start.elapsed(),
                totals: server.totals(),
            })
        };
        // A's burst of 20; B's count of it within 10 s.
        let burst = |round: u32, fail: &mut dyn FnMut(String, String)| {
            for i in 0..BURST {
                if let Err(e) = a.write(format!("burst {round} {i}").as_bytes()) {
                    fail(
                        format!("member A's write {i} of burst {round}"),
                        e.to_string(),
                    );
                }
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while b_inbox.burst(round).0 < BURST as usize && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            b_inbox.burst(round)
        };
        let joins = |phase: &str, fail: &mut dyn FnMut(String, String)| {
            let mut ok = 0;
            for i in 0..JOINS {
                match Client::connect(addr, params) {
                    Ok(_joined) => ok += 1,
                    Err(e) => fail(format!("join {} of {JOINS} {phase}", i + 1), e.to_string()),
                }
            }
            ok
        };
        let burst_before = burst(0, &mut fail);
        let joins_before = joins("before the attack", &mut fail);
        measure::reset_peak_rss();
        let (rss_start_kib, _) = measure::rss_kib();
        let silent: Vec<_> = (0..members).filter_map(|_| raw_connect(addr)).collect();
        let connected = silent.len();
        let stop = &stop;
        s.spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                for (socket, id) in &silent {
                    let _ = socket.send_to(&encode(&Message::ack(*id, 0)), addr);
                }
                let next = Instant::now() + params.epoch();
                while Instant::now() < next && !stop.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(10));
                }
            }
        });
        // The talker: everything it says is copied to each member.
        let talking = Instant::now();
        let mut talk_sent = 0;
        let talk_close = match Client::connect(addr, params) {
            Ok(talker) => {
                for i in 0..TALK {
                    let mut msg = format!("talk {i} ").into_bytes();
                    msg.resize(talker.max_payload(), b'.');
                    match talker.write_timeout(&msg, Duration::from_secs(10)) {
                        Ok(()) => talk_sent += 1,
                        Err(e) => {
                            fail(format!("the talker's write {i}"), e.to_string());
                            break;
                        }
                    }
                }
                // Everything it said is then the relay's, ahead of the burst.
                match talker.close_timeout(Duration::from_secs(30)) {
                    Ok(()) => "ok".to_string(),
                    Err(e) => e.to_string(),
                }
            }
            Err(e) => format!("connect: {e}"),
        };
        let talked_seconds = talking.elapsed().as_secs_f64();
        let talked = server.totals();
        let burst_during = burst(1, &mut fail);
        let at_burst = server.totals();
        let joins_during = joins("during the attack", &mut fail);
        let end = server.totals();
        // Then until the silent members are ended (as slow consumers or
        // lost), within the stall limit and a few epochs more.
        let settling = Instant::now();
        let limit = params.epoch() * (params.epoch_limit + params.max_backoff_interval + 5);
        while settling.elapsed() < limit
            && (server.totals().slow_consumers as usize) < connected
            && server.totals().lost < connected as u64
        {
            thread::sleep(Duration::from_millis(10));
        }
        let settled_seconds = settling.elapsed().as_secs_f64();
        let settled = server.totals();
        let (_, peak_rss_kib) = measure::rss_kib();
        stop.store(true, Ordering::SeqCst);
        let peak_budget = peak_of(peak, &stop_sampling);
        Chat {
            epoch_millis: params.epoch_millis,
            members,
            connected,
            talk: TALK,
            talk_sent,
            talk_close,
            b_talk: b_inbox.talk(TALK).0,
            b_missed: b_inbox.talk(TALK).1,
            talked_seconds,
            settled_seconds,
            burst_before,
            burst_during,
            joins_before,
            joins_during,
            joins: JOINS,
            talked,
            at_burst,
            end,
            settled,
            peak_budget,
            rss_start_kib,
            peak_rss_kib,
            failures,
        }
    });
    let _ = a.close_timeout(Duration::from_secs(1));
    let _ = b.close_timeout(Duration::from_secs(1));
    let _ = server.close_timeout(Duration::from_secs(1));
    let _ = relay.join();
    result
}

struct ListenerFill {
    epoch_millis: u64,
    peers: usize,
    connected: usize,
    uploaded: u64,
    target: u64,
    fill_seconds: f64,
    at_fill: ServerStats,
    accepted: usize,
    good: usize,
    good_ok: usize,
    end: ServerStats,
    peak_budget: usize,
    rss_start_kib: u64,
    peak_rss_kib: u64,
    failures: Vec<Failure>,
}

/// A client the listener's application accepts: says `good`, gets it back.
fn good_client(addr: SocketAddr, params: Params) -> Result<(), String> {
    let client = Client::connect(addr, params).map_err(|e| format!("connect: {e}"))?;
    for msg in [&b"good"[..], b"hello"] {
        client.write(msg).map_err(|e| format!("write: {e}"))?;
        match client.read_timeout(Duration::from_secs(5)) {
            Ok(echo) if echo == msg => {}
            Ok(_) => return Err("a wrong echo".to_string()),
            Err(e) => return Err(format!("echo: {e}")),
        }
    }
    client
        .close_timeout(patience(params))
        .map_err(|e| format!("close: {e}"))
}

/// The Listener attack: see the module's documentation.
fn listener_attack(params: Params, peers: usize) -> ListenerFill {
    const MESSAGES: u64 = 4200;
    const GOOD: usize = 4;
    let listener = Listener::bind("127.0.0.1:0", params).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_sampling = AtomicBool::new(false);
    let accepted = AtomicUsize::new(0);
    thread::scope(|s| {
        let peak = sample_peak(s, || listener.totals(), &stop_sampling);
        measure::reset_peak_rss();
        let (rss_start_kib, _) = measure::rss_kib();
        let mut up = upload(addr, params, peers, MESSAGES, &stop);
        let at_fill = listener.totals();
        // Now the application accepts: a connection whose first message is
        // `good` is echoed; any other is kept and never read again.
        let (listener, stop, accepted) = (&listener, &stop, &accepted);
        s.spawn(move || {
            let mut kept = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let conn = match listener.accept_timeout(Duration::from_millis(50)) {
                    Ok(conn) => conn,
                    Err(Error::Timeout) => continue,
                    Err(_) => return,
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                match conn.read_timeout(Duration::from_secs(2)) {
                    Ok(first) if first == b"good" => {
                        s.spawn(move || {
                            let _ = conn.write(&first);
                            while !stop.load(Ordering::SeqCst) {
                                match conn.read_timeout(Duration::from_millis(50)) {
                                    Ok(msg) => {
                                        let _ = conn.write(&msg);
                                    }
                                    Err(Error::Timeout) => {}
                                    Err(_) => return,
                                }
                            }
                        });
                    }
                    _ => kept.push(conn),
                }
            }
        });
        let mut failures = Vec::new();
        let mut good_ok = 0;
        for i in 0..GOOD {
            match good_client(addr, params) {
                Ok(()) => good_ok += 1,
                Err(error) => failures.push(Failure {
                    what: format!("new client {} of {GOOD}", i + 1),
                    error,
                    at: start.elapsed(),
                    totals: listener.totals(),
                }),
            }
        }
        let (_, peak_rss_kib) = measure::rss_kib();
        let end = listener.totals();
        up.stop(stop);
        let peak_budget = peak_of(peak, &stop_sampling);
        ListenerFill {
            epoch_millis: params.epoch_millis,
            peers,
            connected: up.connected,
            uploaded: up.uploaded,
            target: up.target,
            fill_seconds: up.seconds,
            at_fill,
            accepted: accepted.load(Ordering::SeqCst),
            good: GOOD,
            good_ok,
            end,
            peak_budget,
            rss_start_kib,
            peak_rss_kib,
            failures,
        }
    })
}
