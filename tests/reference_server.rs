//! A liveseq `Client` against a raw-socket imitation of the Go reference
//! server, whose connection set-up is stricter than ours (docs/PROTOCOL.md, "Connection
//! set-up"):
//!
//! - it sends the Ack of a Connect once, when it creates the connection, and
//!   never answers a repeated Connect with the same isn;
//! - it heartbeats `(Ack, id, 0)` only in epochs in which it heard nothing
//!   from that client (a repeated Connect counts as hearing from it);
//! - it acknowledges every Data message in its window with one Ack and echoes
//!   the payloads in order; connection ids start at 1.
//!
//! So a client whose Connect Ack is lost must take a heartbeat (or any
//! message carrying a ConnID from the server's address) as the answer, and
//! must leave the server silent epochs in which to send one. A seeded,
//! deterministic loss injector per direction drops the first Ack, blacks out
//! the server's first one and a half epochs, or drops 40% each way; every
//! case runs with isn 0 (as the Go echo client) and with a random isn, and
//! must connect and echo every message in order, byte for byte.

mod common;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use common::{payload, TestParams, WAIT};
use liveseq::proto::{Message, MsgType};
use liveseq::{Client, Error, Params};

/// splitmix64: a tiny seeded generator, so a loss pattern is the same on every
/// machine and in every version of the `rand` crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A draw in 0..100.
    fn percent(&mut self) -> u64 {
        self.next() % 100
    }
}

/// What to drop in one direction.
#[derive(Clone, Copy, Debug, Default)]
struct Loss {
    /// Drop the first this many datagrams.
    first: u32,
    /// Drop everything for this long after the first datagram in this direction.
    blackout: Duration,
    /// Drop this percentage of datagrams, drawn from a generator seeded with `seed`.
    percent: u64,
    seed: u64,
}

/// Applies a [`Loss`] to the datagrams of one direction, in the order they
/// pass. Every datagram takes one draw from the generator, so which ones are
/// dropped depends only on the seed and their order.
struct Injector {
    loss: Loss,
    rng: Rng,
    passed: u32,
    start: Option<Instant>,
    dropped: u32,
}

impl Injector {
    fn new(loss: Loss) -> Injector {
        Injector {
            loss,
            rng: Rng(loss.seed),
            passed: 0,
            start: None,
            dropped: 0,
        }
    }

    fn drops(&mut self) -> bool {
        let now = Instant::now();
        let start = *self.start.get_or_insert(now);
        let n = self.passed;
        self.passed += 1;
        let draw = self.rng.percent();
        let drop =
            n < self.loss.first || now < start + self.loss.blackout || draw < self.loss.percent;
        self.dropped += u32::from(drop);
        drop
    }
}

/// One connection of the imitation server.
struct RefConn {
    id: u32,
    addr: SocketAddr,
    /// Next Data sequence number expected from the client.
    expected: u64,
    /// Received ahead of `expected`, waiting for the gap to fill.
    ahead: BTreeMap<u64, Vec<u8>>,
    /// Our next Data sequence number.
    next_sn: u64,
    /// Echoes sent and not yet acknowledged.
    unacked: BTreeMap<u64, Vec<u8>>,
    /// Echoes waiting for the window.
    queued: VecDeque<Vec<u8>>,
    /// Heard from the client in the current epoch.
    heard: bool,
}

/// What the imitation server did, for the test to check it ran the scenario.
#[derive(Debug, Default)]
struct RefStats {
    connections: u32,
    connect_acks_sent: u32,
    repeated_connects: u32,
    heartbeats_sent: u32,
    echoed: u32,
    dropped_to_client: u32,
    dropped_to_server: u32,
}

struct RefState {
    socket: UdpSocket,
    window: u64,
    conns: HashMap<SocketAddr, RefConn>,
    next_id: u32,
    to_client: Injector,
    to_server: Injector,
    stats: RefStats,
}

impl RefState {
    fn send(&mut self, msg: &Message<'_>, to: SocketAddr) {
        if self.to_client.drops() {
            return;
        }
        let mut buf = Vec::new();
        msg.encode(&mut buf);
        let _ = self.socket.send_to(&buf, to);
    }

    fn received(&mut self, datagram: &[u8], from: SocketAddr) {
        if self.to_server.drops() {
            return;
        }
        let Ok(mut msg) = Message::decode(datagram) else {
            return;
        };
        if msg.kind == MsgType::Connect {
            if let Some(conn) = self.conns.get_mut(&from) {
                // Heard, but never answered again.
                conn.heard = true;
                self.stats.repeated_connects += 1;
                return;
            }
            self.next_id += 1;
            let id = self.next_id;
            let isn = msg.seq_num;
            self.conns.insert(
                from,
                RefConn {
                    id,
                    addr: from,
                    expected: isn + 1,
                    ahead: BTreeMap::new(),
                    next_sn: isn + 1,
                    unacked: BTreeMap::new(),
                    queued: VecDeque::new(),
                    heard: true,
                },
            );
            self.stats.connections += 1;
            self.stats.connect_acks_sent += 1;
            self.send(&Message::ack(id, isn), from);
            return;
        }
        let Some(mut conn) = self.conns.remove(&from) else {
            return;
        };
        if msg.conn_id == conn.id {
            conn.heard = true;
            let intact = msg.kind != MsgType::Data || msg.verify_data();
            match msg.kind {
                MsgType::Data if intact => {
                    let sn = msg.seq_num;
                    if sn < conn.expected + self.window {
                        self.send(&Message::ack(conn.id, sn), from);
                        if sn >= conn.expected {
                            conn.ahead.insert(sn, msg.payload.into_owned());
                        }
                        while let Some(p) = conn.ahead.remove(&conn.expected) {
                            conn.expected += 1;
                            conn.queued.push_back(p);
                            self.stats.echoed += 1;
                        }
                    }
                }
                MsgType::Ack if msg.seq_num != 0 => {
                    conn.unacked.remove(&msg.seq_num);
                }
                MsgType::CAck => conn.unacked.retain(|&sn, _| sn > msg.seq_num),
                _ => {}
            }
            self.fill_window(&mut conn);
        }
        self.conns.insert(from, conn);
    }

    /// Sends queued echoes as far as the window (and max unacked, equal to it) allow.
    fn fill_window(&mut self, conn: &mut RefConn) {
        while !conn.queued.is_empty() {
            let oldest = conn.unacked.keys().next().copied().unwrap_or(conn.next_sn);
            if conn.next_sn >= oldest + self.window || conn.unacked.len() as u64 >= self.window {
                break;
            }
            let p = conn.queued.pop_front().unwrap();
            let sn = conn.next_sn;
            conn.next_sn += 1;
            self.send(&Message::data(conn.id, sn, &p), conn.addr);
            conn.unacked.insert(sn, p);
        }
    }

    /// An epoch: heartbeat the clients not heard from, resend every unacknowledged echo.
    fn epoch(&mut self) {
        let addrs: Vec<SocketAddr> = self.conns.keys().copied().collect();
        for addr in addrs {
            let mut conn = self.conns.remove(&addr).unwrap();
            if !conn.heard {
                self.stats.heartbeats_sent += 1;
                self.send(&Message::ack(conn.id, 0), addr);
            }
            conn.heard = false;
            let resend: Vec<(u64, Vec<u8>)> =
                conn.unacked.iter().map(|(&s, p)| (s, p.clone())).collect();
            for (sn, p) in resend {
                self.send(&Message::data(conn.id, sn, &p), addr);
            }
            self.conns.insert(addr, conn);
        }
    }
}

/// The imitation server, running in a thread until dropped.
struct RefServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<RefStats>>,
}

impl RefServer {
    fn start(p: Params, to_client: Loss, to_server: Loss) -> RefServer {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = p.epoch();
        let mut state = RefState {
            socket,
            window: u64::from(p.window_size),
            conns: HashMap::new(),
            next_id: 0,
            to_client: Injector::new(to_client),
            to_server: Injector::new(to_server),
            stats: RefStats::default(),
        };
        let thread = {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                let mut next_epoch = Instant::now() + epoch;
                while !stop.load(Ordering::SeqCst) {
                    let now = Instant::now();
                    if now >= next_epoch {
                        state.epoch();
                        next_epoch += epoch;
                        continue;
                    }
                    state
                        .socket
                        .set_read_timeout(Some(next_epoch - now))
                        .unwrap();
                    if let Ok((n, from)) = state.socket.recv_from(&mut buf) {
                        state.received(&buf[..n], from);
                    }
                }
                state.stats.dropped_to_client = state.to_client.dropped;
                state.stats.dropped_to_server = state.to_server.dropped;
                state.stats
            })
        };
        RefServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the server and returns what it did.
    fn finish(mut self) -> RefStats {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for RefServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects with `isn`, failing the test if the connect times out or has not
/// finished within twice the epoch limit.
fn connect(p: Params, isn: u32, server: SocketAddr) -> Client {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(
            Client::builder()
                .params(p)
                .initial_seq_num(isn)
                .connect(server),
        );
    });
    let bound = p.epoch() * (2 * p.epoch_limit) + Duration::from_secs(1);
    match rx.recv_timeout(bound) {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => panic!("connect with isn {isn} failed: {e:?}"),
        Err(_) => panic!("connect with isn {isn} neither succeeded nor failed within {bound:?}"),
    }
}

/// Connects to an imitation server with the given losses and echoes `msgs`
/// messages, checking each byte for byte and in order.
fn run(p: Params, isn: u32, msgs: usize, to_client: Loss, to_server: Loss) -> RefStats {
    let server = RefServer::start(p, to_client, to_server);
    let client = connect(p, isn, server.addr);
    assert_eq!(client.conn_id(), liveseq::ConnId::from(1));
    for i in 0..msgs {
        client.write(&payload(0, i, 200)).unwrap();
    }
    for i in 0..msgs {
        match client.read_timeout(WAIT) {
            Ok(echo) => assert_eq!(echo, payload(0, i, 200), "echo {i} (isn {isn})"),
            Err(e) => panic!("echo {i} of {msgs} (isn {isn}): {e:?}"),
        }
    }
    match client.close_timeout(WAIT) {
        // The imitation never heartbeats a client it hears from, so an idle
        // client may rightly call it lost while the last Ack is repeated.
        Ok(()) | Err(Error::ConnectionLost(_)) => {}
        Err(e) => panic!("close (isn {isn}): {e:?}"),
    }
    let stats = server.finish();
    assert_eq!(stats.connections, 1, "{stats:?}");
    assert_eq!(stats.connect_acks_sent, 1, "{stats:?}");
    assert_eq!(stats.echoed as usize, msgs, "{stats:?}");
    stats
}

fn random_isn() -> u32 {
    rand::random::<u32>().max(1)
}

fn fast() -> Params {
    TestParams::new()
        .epoch_millis(25)
        .epoch_limit(6)
        .window(4)
        .max_unacked(4)
        .build()
}

const MSGS: usize = 20;

fn no_loss() -> Loss {
    Loss::default()
}

fn drop_first_ack() -> Loss {
    Loss {
        first: 1,
        ..Loss::default()
    }
}

fn blackout(p: Params) -> Loss {
    Loss {
        blackout: p.epoch().mul_f64(1.5),
        ..Loss::default()
    }
}

#[test]
fn no_loss_isn_zero() {
    run(fast(), 0, MSGS, no_loss(), no_loss());
}

#[test]
fn no_loss_random_isn() {
    run(fast(), random_isn(), MSGS, no_loss(), no_loss());
}

#[test]
fn connect_ack_lost_isn_zero() {
    let stats = run(fast(), 0, MSGS, drop_first_ack(), no_loss());
    assert!(stats.heartbeats_sent > 0, "{stats:?}");
}

#[test]
fn connect_ack_lost_random_isn() {
    let stats = run(fast(), random_isn(), MSGS, drop_first_ack(), no_loss());
    assert!(stats.heartbeats_sent > 0, "{stats:?}");
}

#[test]
fn server_silenced_for_one_and_a_half_epochs_isn_zero() {
    let stats = run(fast(), 0, MSGS, blackout(fast()), no_loss());
    assert!(stats.dropped_to_client > 0, "{stats:?}");
}

#[test]
fn server_silenced_for_one_and_a_half_epochs_random_isn() {
    let stats = run(fast(), random_isn(), MSGS, blackout(fast()), no_loss());
    assert!(stats.dropped_to_client > 0, "{stats:?}");
}

/// The first `n` seeds whose generator drops the first datagram at `percent`:
/// with these, the Ack of the Connect is always lost.
fn seeds_dropping_the_first(n: usize, percent: u64) -> Vec<u64> {
    (1..)
        .filter(|&seed| Rng(seed).percent() < percent)
        .take(n)
        .collect()
}

/// 40% loss each way, three seeds that lose the Connect's Ack, clients in
/// parallel. The epoch limit is generous so that only connecting is at stake.
fn forty_percent_each_way(isn: impl Fn() -> u32) {
    let p = TestParams::new()
        .epoch_millis(25)
        .epoch_limit(16)
        .window(8)
        .max_unacked(8)
        .build();
    let runs: Vec<_> = seeds_dropping_the_first(3, 40)
        .into_iter()
        .map(|seed| {
            let isn = isn();
            thread::spawn(move || {
                let to_client = Loss {
                    percent: 40,
                    seed,
                    ..Loss::default()
                };
                let to_server = Loss {
                    percent: 40,
                    seed: seed ^ 0x5EED,
                    ..Loss::default()
                };
                run(p, isn, 2 * MSGS, to_client, to_server)
            })
        })
        .collect();
    for r in runs {
        let stats = r.join().unwrap();
        assert!(stats.dropped_to_client > 0, "{stats:?}");
    }
}

#[test]
fn forty_percent_each_way_isn_zero() {
    forty_percent_each_way(|| 0);
}

#[test]
fn forty_percent_each_way_random_isn() {
    forty_percent_each_way(random_isn);
}
