//! Helpers shared by the socket-level tests.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use liveseq::proto::{Message, MsgType};
use liveseq::{Client, Error, Faults, Params, Server};

/// Long enough that a test only waits this long when something is broken.
pub const WAIT: Duration = Duration::from_secs(10);

/// A test's [`Params`], each number named where it is used:
///
/// ```ignore
/// let p = TestParams::new().epoch_millis(50).epoch_limit(10).window(8).max_unacked(8).build();
/// ```
///
/// Starts from [`Params::default`] (epochs of 2 s, lost after 5, window 1,
/// max unacked 1, no back-off); a test names every number its outcome
/// depends on, in the order epoch, limit, window, max unacked, back-off.
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct TestParams(Params);

impl TestParams {
    pub fn new() -> TestParams {
        TestParams(Params::default())
    }

    pub fn epoch_millis(mut self, millis: u64) -> TestParams {
        self.0.epoch_millis = millis;
        self
    }

    /// Silent epochs before a peer is taken for lost.
    pub fn epoch_limit(mut self, epochs: u32) -> TestParams {
        self.0.epoch_limit = epochs;
        self
    }

    pub fn window(mut self, window: u32) -> TestParams {
        self.0.window_size = window;
        self
    }

    pub fn max_unacked(mut self, messages: u32) -> TestParams {
        self.0.max_unacked_messages = messages;
        self
    }

    /// A window of `n` with as many messages unacknowledged: the common case.
    pub fn window_of(self, n: u32) -> TestParams {
        self.window(n).max_unacked(n)
    }

    /// The cap, in epochs, of the retransmission back-off.
    pub fn max_backoff(mut self, epochs: u32) -> TestParams {
        self.0.max_backoff_interval = epochs;
        self
    }

    pub fn build(self) -> Params {
        self.0
    }
}

/// Message `i` of client `c`: its length varies from 1 to `max` bytes and
/// its bytes encode (c, i), so any mix-up shows.
pub fn payload(c: usize, i: usize, max: usize) -> Vec<u8> {
    let len = 1 + (i * 131 + c * 17) % max;
    (0..len)
        .map(|j| (j as u8) ^ (i as u8).wrapping_mul(7) ^ (c as u8).wrapping_mul(29))
        .collect()
}

/// An echo loop on `server` in a thread: every message goes back to its
/// sender. Ends when the server is closed.
pub fn spawn_echo(server: Arc<Server>) -> JoinHandle<()> {
    spawn_paced_echo(server, |_| Duration::ZERO)
}

/// [`spawn_echo`], holding echo `n` (from 1) back for `pace(n)` first: a
/// slow server.
pub fn spawn_paced_echo(
    server: Arc<Server>,
    mut pace: impl FnMut(u64) -> Duration + Send + 'static,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut n = 0u64;
        loop {
            match server.read() {
                Ok((id, msg)) => {
                    n += 1;
                    let hold = pace(n);
                    if !hold.is_zero() {
                        thread::sleep(hold); // the scenario: a slow server
                    }
                    let _ = server.write(id, &msg);
                }
                Err(Error::ConnectionLost(_) | Error::ConnectionClosed(_)) => {}
                Err(_) => return,
            }
        }
    })
}

/// A server on 127.0.0.1 (port 0) whose socket has `faults`.
pub fn faulty_server(p: Params, faults: Faults) -> Arc<Server> {
    Arc::new(
        Server::builder()
            .params(p)
            .faults(faults)
            .bind("127.0.0.1:0")
            .unwrap(),
    )
}

/// A client of `addr` whose socket has `faults`.
pub fn faulty_client(addr: SocketAddr, p: Params, faults: Faults) -> Client {
    Client::builder()
        .params(p)
        .faults(faults)
        .connect(addr)
        .unwrap()
}

/// Client `c` writes `msgs` messages (see [`payload`]) from this thread while
/// another reads the echoes, checking each byte for byte and in order.
pub fn write_and_check_echoes(client: &Arc<liveseq::Client>, c: usize, msgs: usize, max: usize) {
    let reader = {
        let client = client.clone();
        thread::spawn(move || {
            for i in 0..msgs {
                assert_eq!(
                    client.read().unwrap(),
                    payload(c, i, max),
                    "client {c} echo {i}"
                );
            }
        })
    };
    for i in 0..msgs {
        client.write(&payload(c, i, max)).unwrap();
    }
    reader.join().unwrap();
}

/// What a raw sender knows of its acknowledgements: a CAck acknowledges
/// everything up to its number, an Ack only its own. (A server with several
/// receive threads may take a burst out of order and acknowledge a later
/// message first: treating that Ack as cumulative would skip the gap.)
#[derive(Debug)]
pub struct Acks {
    /// Everything up to here is acknowledged.
    pub through: u64,
    above: BTreeSet<u64>,
}

impl Acks {
    /// Nothing above `isn` acknowledged yet.
    pub fn new(isn: u64) -> Acks {
        Acks {
            through: isn,
            above: BTreeSet::new(),
        }
    }

    /// Notes `m` if it is an acknowledgement (not a heartbeat).
    pub fn note(&mut self, m: &Message<'_>) {
        match m.kind {
            MsgType::CAck => self.through = self.through.max(m.seq_num),
            MsgType::Ack if m.seq_num > self.through => {
                self.above.insert(m.seq_num);
            }
            _ => {}
        }
        while self.above.first().is_some_and(|&sn| sn <= self.through + 1) {
            if let Some(sn) = self.above.pop_first() {
                self.through = self.through.max(sn);
            }
        }
    }

    /// Whether `sn` is acknowledged.
    pub fn has(&self, sn: u64) -> bool {
        sn <= self.through || self.above.contains(&sn)
    }
}

/// A raw UDP socket speaking LSP by hand, to watch and steer the wire.
///
/// It only listens to its peer (set by the first `send`, or learnt from
/// the first Connect it receives): its port may have belonged to another
/// test's client a moment ago, whose server still heartbeats it.
pub struct RawPeer {
    pub socket: UdpSocket,
    pub peer: Option<SocketAddr>,
}

impl RawPeer {
    pub fn new() -> RawPeer {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(WAIT)).unwrap();
        RawPeer { socket, peer: None }
    }

    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    pub fn send_to(&mut self, msg: &Message<'_>, to: SocketAddr) {
        let mut buf = Vec::new();
        msg.encode(&mut buf);
        self.socket.send_to(&buf, to).unwrap();
        self.peer = Some(to);
    }

    pub fn send(&mut self, msg: &Message<'_>) {
        let to = self.peer.expect("a peer to send to");
        self.send_to(msg, to);
    }

    /// The next message from the peer, or `None` after `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<Message<'static>> {
        let mut buf = [0u8; 65536];
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            self.socket.set_read_timeout(Some(left)).unwrap();
            let (n, from) = self.socket.recv_from(&mut buf).ok()?;
            let Ok(msg) = Message::decode(&buf[..n]) else {
                continue;
            };
            match self.peer {
                Some(peer) if peer != from => continue,
                None if msg.kind != MsgType::Connect => continue,
                None => self.peer = Some(from),
                _ => {}
            }
            return Some(msg.into_owned());
        }
    }

    /// Everything the peer sends during `period`. When `keepalive` names a
    /// connection id, each message is answered with a heartbeat, so the peer
    /// never declares us lost while we listen.
    pub fn gather(&mut self, period: Duration, keepalive: Option<u32>) -> Vec<Message<'static>> {
        let deadline = std::time::Instant::now() + period;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Some(m) = self.recv_timeout(left) else {
                return got;
            };
            if let Some(id) = keepalive {
                self.send(&Message::ack(id, 0));
            }
            got.push(m);
        }
    }

    pub fn recv(&mut self) -> Message<'static> {
        self.recv_timeout(WAIT)
            .expect("a message from the peer within the wait")
    }

    /// The next message that is not a heartbeat.
    pub fn recv_non_heartbeat(&mut self) -> Message<'static> {
        loop {
            let m = self.recv();
            if !(m.kind == MsgType::Ack && m.seq_num == 0) {
                return m;
            }
        }
    }

    /// Plays a client: Connect with `isn`, then a heartbeat as a real client
    /// would send in its first epoch (a server re-sends the Connect's Ack
    /// until its client speaks). Returns the connection id.
    pub fn connect(&mut self, server: SocketAddr, isn: u64) -> u32 {
        self.send_to(&Message::connect(isn), server);
        loop {
            let m = self.recv();
            if m.kind == MsgType::Ack && m.seq_num == isn {
                self.send(&Message::ack(m.conn_id, 0));
                return m.conn_id;
            }
        }
    }

    /// Plays a server: waits for a Connect, answers it as connection `id`,
    /// returns the client's isn.
    pub fn accept(&mut self, id: u32) -> u64 {
        loop {
            let m = self.recv();
            if m.kind == MsgType::Connect {
                self.send(&Message::ack(id, m.seq_num));
                return m.seq_num;
            }
        }
    }
}

/// A raw peer's heartbeats `(Ack, id, 0)` to `to`, one per `period` from a
/// clone of its socket, in a thread of their own: the peer stays alive in
/// the eyes of liveseq while it acknowledges nothing. They stop when this is
/// dropped (or [`stop`](Heartbeats::stop)ped), and the thread is joined.
pub struct Heartbeats {
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeats {
    pub fn start(socket: &UdpSocket, to: SocketAddr, id: u32, period: Duration) -> Heartbeats {
        let socket = socket.try_clone().unwrap();
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let thread = thread::spawn(move || {
            let mut heartbeat = Vec::new();
            Message::ack(id, 0).encode(&mut heartbeat);
            let ticker = crossbeam_channel::tick(period);
            loop {
                let _ = socket.send_to(&heartbeat, to);
                crossbeam_channel::select! {
                    recv(ticker) -> _ => {}
                    recv(stop_rx) -> _ => return,
                }
            }
        });
        Heartbeats {
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn stop(self) {}
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The number of threads of this process (for tests alone in their binary).
pub fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// The thread count, polled until it is `expected` (for at most five
/// seconds): a joined thread may still be listed for a moment after `join`
/// returns, since the kernel wakes the joiner before it removes the task.
pub fn threads_settled_at(expected: usize) -> usize {
    let mut n = threads();
    poll_until(Duration::from_secs(5), || {
        n = threads();
        n == expected
    });
    n
}

/// Polls `cond` every few milliseconds until it holds or `limit` passes;
/// returns how long it took, or `None`. Only for conditions no event reports
/// (a thread count, a port becoming free, a counter in a stats snapshot).
pub fn poll_until(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = std::time::Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        thread::sleep(Duration::from_millis(2));
    }
}
