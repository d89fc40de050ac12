//! Reference scenarios that need a network we can steer: a UDP proxy per
//! client sits between it and the server and can drop everything in either
//! direction, or rewrite the server's acknowledgements like a middlebox.
//!
//! Families: ServerFastClose 1-3, ServerToClient 1-3, ClientToServer 1-3,
//! RoundTrip 1-3 (the network goes down while messages are written and a
//! close is issued; everything arrives in order once it comes back),
//! CAckServer 1-4 (a middlebox turns bursts of Acks into one CAck: no
//! retransmissions follow), MaxUnackedMessages 4-6 (the window is anchored
//! at the oldest unacknowledged message, with the max-unacked limit).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{payload, poll_until, WAIT};
use liveseq::proto::{Message, MsgType};
use liveseq::{Client, ConnId, Error, Params, Server};

/// Switches shared by every proxy of a test.
#[derive(Default)]
struct Network {
    /// Drop client-to-server datagrams.
    up_down: AtomicBool,
    /// Drop server-to-client datagrams.
    down_down: AtomicBool,
    /// Rewrite the server's Acks: hold them, send the last of a burst as a CAck.
    cack_middlebox: AtomicBool,
    /// Data datagrams seen from clients, with their sequence numbers and time.
    client_data: Mutex<Vec<(Instant, SocketAddr, u64)>>,
    /// Drop each client's first `hold_first` Data sequence numbers.
    hold_first: AtomicU64,
    stop: AtomicBool,
}

/// One client's proxy: the server sees the proxy's address as the client's.
struct Proxy {
    addr: SocketAddr,
    thread: Option<thread::JoinHandle<()>>,
    net: Arc<Network>,
}

impl Proxy {
    fn new(server: SocketAddr, net: Arc<Network>) -> Proxy {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(3)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let thread = {
            let net = net.clone();
            thread::spawn(move || {
                let mut client: Option<SocketAddr> = None;
                let mut first_data: Option<u64> = None;
                let mut held_ack: Option<Message<'static>> = None;
                let mut buf = [0u8; 65536];
                while !net.stop.load(Ordering::SeqCst) {
                    let received = socket.recv_from(&mut buf);
                    let Ok((n, from)) = received else {
                        // A quiet moment ends a burst: the middlebox lets its last Ack go, as a CAck.
                        if let (Some(ack), Some(c)) = (held_ack.take(), client) {
                            let mut out = Vec::new();
                            Message::cack(ack.conn_id, ack.seq_num).encode(&mut out);
                            let _ = socket.send_to(&out, c);
                        }
                        continue;
                    };
                    let Ok(msg) = Message::decode(&buf[..n]) else {
                        continue;
                    };
                    if from == server {
                        if net.down_down.load(Ordering::SeqCst) {
                            continue;
                        }
                        if net.cack_middlebox.load(Ordering::SeqCst)
                            && msg.kind == MsgType::Ack
                            && msg.seq_num != 0
                        {
                            held_ack = Some(msg.into_owned());
                            continue;
                        }
                        if let Some(c) = client {
                            let _ = socket.send_to(&buf[..n], c);
                        }
                    } else if client.is_none_or(|c| c == from) {
                        if client.is_none() && msg.kind != MsgType::Connect {
                            continue; // a stranger on a recycled port
                        }
                        client = Some(from);
                        if msg.kind == MsgType::Data {
                            net.client_data.lock().unwrap().push((
                                Instant::now(),
                                addr_of(&socket),
                                msg.seq_num,
                            ));
                            // Data goes out in order: the first one seen is the client's first.
                            let first = *first_data.get_or_insert(msg.seq_num);
                            if msg.seq_num < first + net.hold_first.load(Ordering::SeqCst) {
                                continue;
                            }
                        }
                        if net.up_down.load(Ordering::SeqCst) {
                            continue;
                        }
                        let _ = socket.send_to(&buf[..n], server);
                    }
                }
            })
        };
        Proxy {
            addr,
            thread: Some(thread),
            net,
        }
    }
}

fn addr_of(socket: &UdpSocket) -> SocketAddr {
    socket.local_addr().unwrap()
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.net.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn set_network(net: &Network, up: bool) {
    net.up_down.store(!up, Ordering::SeqCst);
    net.down_down.store(!up, Ordering::SeqCst);
}

#[derive(Clone, Copy, Debug)]
enum Direction {
    ServerToClient,
    ClientToServer,
    RoundTrip,
}

/// The network is down while `msgs` messages are written (in the given
/// direction) and a close is issued; it comes back before the epoch limit;
/// the close completes and every message has arrived in order.
fn down_while_writing_and_closing(
    direction: Direction,
    clients: usize,
    msgs: usize,
    epoch_millis: u64,
) {
    // The outage (three epochs) must stay well under the epoch limit even
    // when this thread oversleeps on a loaded machine: 20 ms epochs with a
    // limit of 5 left two epochs of slack and failed now and then.
    let p = Params {
        epoch_limit: 10,
        epoch_millis,
        window_size: 1,
        max_unacked_messages: 1,
        max_backoff_interval: 0,
    };
    let server = Arc::new(Server::bind("127.0.0.1:0", p).unwrap());
    let net = Arc::new(Network::default());
    let proxies: Vec<Proxy> = (0..clients)
        .map(|_| Proxy::new(server.local_addr().unwrap(), net.clone()))
        .collect();
    let clients: Vec<Arc<Client>> = proxies
        .iter()
        .map(|px| Arc::new(Client::connect(px.addr, p).unwrap()))
        .collect();
    let ids: Vec<ConnId> = clients.iter().map(|c| c.conn_id()).collect();
    let to_server = matches!(direction, Direction::ClientToServer | Direction::RoundTrip);
    let to_client = matches!(direction, Direction::ServerToClient | Direction::RoundTrip);

    set_network(&net, false);
    for i in 0..msgs {
        for (c, client) in clients.iter().enumerate() {
            if to_server {
                client.write(&payload(c, i, 200)).unwrap();
            }
            if to_client {
                server.write(ids[c], &payload(c + 100, i, 200)).unwrap();
            }
        }
    }
    // Readers on both sides collect what arrives.
    let client_readers: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(c, client)| {
            let client = client.clone();
            thread::spawn(move || {
                if to_client {
                    for i in 0..msgs {
                        assert_eq!(
                            client.read().unwrap(),
                            payload(c + 100, i, 200),
                            "client {c} message {i}"
                        );
                    }
                }
            })
        })
        .collect();
    let server_reader = {
        let server = server.clone();
        let ids = ids.clone();
        thread::spawn(move || {
            let mut next: HashMap<ConnId, usize> = HashMap::new();
            let want = if to_server { msgs * ids.len() } else { 0 };
            for _ in 0..want {
                let (id, msg) = server.read().unwrap();
                let c = ids.iter().position(|&x| x == id).unwrap();
                let i = next.entry(id).or_default();
                assert_eq!(msg, payload(c, *i, 200), "server: client {c} message {i}");
                *i += 1;
            }
        })
    };
    // Clients that only write close during the outage: the close must wait
    // for the network, then complete. (A reading client closes after its
    // reads, since closing stops delivery.)
    let closing: Vec<_> = clients
        .iter()
        .filter(|_| !to_client)
        .map(|client| {
            let client = client.clone();
            thread::spawn(move || client.close())
        })
        .collect();
    thread::sleep(Duration::from_millis(epoch_millis * 3)); // the outage: three epochs, under the limit of ten
    set_network(&net, true);
    for r in client_readers {
        r.join().unwrap();
    }
    server_reader.join().unwrap();
    for c in closing {
        c.join().unwrap().unwrap();
    }
    if to_client {
        for client in &clients {
            client.close().unwrap();
        }
    }
    match direction {
        // ServerFastClose: the server closes right after the outage started.
        Direction::ServerToClient => server.close().unwrap(),
        _ => {
            server.close_timeout(Duration::from_secs(5)).ok();
        }
    }
    drop(proxies);
}

#[test]
fn server_to_client_across_an_outage() {
    down_while_writing_and_closing(Direction::ServerToClient, 1, 10, 50);
    down_while_writing_and_closing(Direction::ServerToClient, 3, 10, 50);
}

#[test]
fn client_to_server_across_an_outage() {
    down_while_writing_and_closing(Direction::ClientToServer, 1, 10, 50);
    down_while_writing_and_closing(Direction::ClientToServer, 5, 10, 50);
}

#[test]
fn round_trip_across_an_outage() {
    down_while_writing_and_closing(Direction::RoundTrip, 3, 10, 50);
    down_while_writing_and_closing(Direction::RoundTrip, 5, 100, 20);
}

/// ServerFastClose: the server writes, the network goes down, the server
/// closes at once; the close completes only after the network is back, and
/// every client has everything.
///
/// A closing connection that acknowledges nothing for `epoch_limit` epochs
/// while messages are in flight is given up (so that no peer can hold a
/// close), judged before that epoch's retransmission: only the
/// retransmissions of the first `epoch_limit - 1` epochs can end the
/// stall. The outage (three epochs, starting just before the writes) must
/// leave at least one of them after it, with room for the machine's
/// scheduling: an epoch limit of 7 leaves three.
#[test]
fn server_fast_close_during_an_outage() {
    for (clients, msgs) in [(1, 10), (3, 10), (5, 50)] {
        let p = Params {
            epoch_limit: 7,
            epoch_millis: 50,
            ..Params::default()
        };
        let server = Server::bind("127.0.0.1:0", p).unwrap();
        let net = Arc::new(Network::default());
        let proxies: Vec<Proxy> = (0..clients)
            .map(|_| Proxy::new(server.local_addr().unwrap(), net.clone()))
            .collect();
        let clients: Vec<Client> = proxies
            .iter()
            .map(|px| Client::connect(px.addr, p).unwrap())
            .collect();
        // Each client proves its address with a heartbeat right after it
        // connects; the outage must not swallow it, or the server could
        // send it no more than 3x what it received (not even the first
        // messages) until the client's next heartbeat after the outage.
        poll_until(WAIT, || server.totals().unvalidated == 0).expect("the clients validate");
        set_network(&net, false);
        for (c, client) in clients.iter().enumerate() {
            for i in 0..msgs {
                server.write(client.conn_id(), &payload(c, i, 300)).unwrap();
            }
        }
        let restore = {
            let net = net.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(150)); // the outage: three epochs
                set_network(&net, true);
            })
        };
        let started = Instant::now();
        let readers: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(c, client)| {
                thread::spawn(move || {
                    for i in 0..msgs {
                        assert_eq!(client.read().unwrap(), payload(c, i, 300));
                    }
                    client
                })
            })
            .collect();
        server.close().unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(140),
            "close waited for the network"
        );
        restore.join().unwrap();
        for r in readers {
            r.join().unwrap().close().ok();
        }
        drop(proxies);
    }
}

/// CAckServer: the middlebox swallows the server's Acks and sends only the
/// last of each burst, as a CAck. After two epochs, a window of twelve
/// epochs shows no Data retransmission: the CAcks cover everything.
#[test]
fn cack_middlebox_stops_retransmissions() {
    for (window, max_unacked, msgs) in [(1u32, 1u32, 30usize), (100, 50, 200), (100, 100, 150)] {
        let p = Params {
            epoch_limit: 5,
            epoch_millis: 50,
            window_size: window,
            max_unacked_messages: max_unacked,
            max_backoff_interval: 0,
        };
        let server = Arc::new(
            Server::builder()
                .params(p)
                .ack_coalescing(false)
                .bind("127.0.0.1:0")
                .unwrap(),
        );
        let net = Arc::new(Network::default());
        let proxies: Vec<Proxy> = (0..5)
            .map(|_| Proxy::new(server.local_addr().unwrap(), net.clone()))
            .collect();
        let clients: Vec<Client> = proxies
            .iter()
            .map(|px| Client::connect(px.addr, p).unwrap())
            .collect();
        // Only once connected: the Ack of a Connect must stay an Ack.
        net.cack_middlebox.store(true, Ordering::SeqCst);
        let reading = {
            let server = server.clone();
            thread::spawn(move || {
                for _ in 0..5 * msgs {
                    server.read().unwrap();
                }
            })
        };
        let writers: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(c, client)| {
                thread::spawn(move || {
                    for i in 0..msgs {
                        client.write(&payload(c, i, 100)).unwrap();
                    }
                    client
                })
            })
            .collect();
        let clients: Vec<Client> = writers.into_iter().map(|w| w.join().unwrap()).collect();
        reading.join().unwrap();
        // From two epochs after the exchange, twelve epochs without a resend:
        // had the CAcks not covered everything, the back-off would resend.
        let window_start = Instant::now() + p.epoch() * 2;
        thread::sleep((window_start + p.epoch() * 12).saturating_duration_since(Instant::now())); // the observation window
        let data = net.client_data.lock().unwrap().clone();
        let mut seen = BTreeSet::new();
        let mut resent = 0;
        for (at, proxy, sn) in data {
            if !seen.insert((proxy, sn)) && at >= window_start {
                resent += 1;
            }
        }
        assert_eq!(
            resent, 0,
            "W={window} M={max_unacked}: retransmissions despite CAcks"
        );
        assert_eq!(seen.len(), 5 * msgs, "every message crossed once");
        for c in clients {
            assert_eq!(c.stats().unacked, 0);
            c.close().unwrap();
        }
        server.close_timeout(Duration::from_secs(2)).ok();
        drop(proxies);
    }
}

/// MaxUnackedMessages 4-6: the first quarter is lost (its retransmissions
/// back off), the second quarter gets through, then the server's Acks are
/// blocked while the last half is written. The window is anchored at the
/// oldest unacknowledged message and at most M can be unacknowledged, so
/// the server can read exactly three quarters; once Acks flow, the rest.
#[test]
fn max_unacked_with_the_window_anchored_at_the_oldest() {
    for clients in [1usize, 5] {
        let (n, m) = (20usize, 10u32);
        let p = Params {
            epoch_limit: 100,
            epoch_millis: 30,
            window_size: 20,
            max_unacked_messages: m,
            max_backoff_interval: 4,
        };
        let server = Arc::new(Server::bind("127.0.0.1:0", p).unwrap());
        let net = Arc::new(Network::default());
        let proxies: Vec<Proxy> = (0..clients)
            .map(|_| Proxy::new(server.local_addr().unwrap(), net.clone()))
            .collect();
        let clients: Vec<Client> = proxies
            .iter()
            .map(|px| Client::connect(px.addr, p).unwrap())
            .collect();
        let write_range = |range: std::ops::Range<usize>| {
            for (c, client) in clients.iter().enumerate() {
                for i in range.clone() {
                    client.write(&payload(c, i, 50)).unwrap();
                }
            }
        };
        // The first quarter is lost until released; the second gets through.
        net.hold_first.store((n / 4) as u64, Ordering::SeqCst);
        write_range(0..n / 2);
        // Wait until the second quarter is acknowledged: then only the first is
        // unacknowledged. (Polling: no event marks an acknowledgement.)
        poll_until(WAIT, || clients.iter().all(|c| c.stats().unacked == n / 4)).unwrap_or_else(
            || {
                let unacked: Vec<usize> = clients.iter().map(|c| c.stats().unacked).collect();
                panic!(
                    "the second quarter never acknowledged: unacked {unacked:?}, expected {} each",
                    n / 4
                )
            },
        );
        // Block the server's Acks and write the last half: with M = 10 and 5
        // unacknowledged, exactly 5 more may go.
        net.down_down.store(true, Ordering::SeqCst);
        write_range(n / 2..n);
        net.hold_first.store(0, Ordering::SeqCst);
        // The first quarter's retransmissions arrive in time: the server can
        // read the first three quarters, and no more.
        let mut read: HashMap<ConnId, usize> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while read.values().sum::<usize>() < clients.len() * 3 * n / 4 {
            assert!(Instant::now() < deadline, "server read only {read:?}");
            if let Ok((id, _)) = server.read_timeout(Duration::from_millis(100)) {
                *read.entry(id).or_default() += 1;
            }
        }
        assert!(
            matches!(server.read_timeout(p.epoch() * 6), Err(Error::Timeout)),
            "more than three quarters got through with Acks blocked"
        );
        assert!(read.values().all(|&r| r == 3 * n / 4), "{read:?}");
        net.down_down.store(false, Ordering::SeqCst);
        for _ in 0..clients.len() * n / 4 {
            server.read().unwrap();
        }
        for c in clients {
            c.close().unwrap();
        }
        server.close_timeout(Duration::from_secs(2)).ok();
        drop(proxies);
    }
}
