//! Connection lifecycle (issue 4): states and ordered events, duplicate and
//! re-incarnated connections, the connection limit, close with a deadline,
//! reconnection and statistics. Events are the synchronisation: no test
//! sleeps to wait for something that has an event.

mod common;

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::TestParams;
use crossbeam_channel::Receiver;
use liveseq::proto::{Message, MsgType};
use liveseq::{Client, ConnEvent, ConnId, ConnState, Error, Params, ReconnectPolicy, Server};

const WAIT: Duration = Duration::from_secs(10);

fn next(events: &Receiver<ConnEvent>) -> ConnEvent {
    events.recv_timeout(WAIT).expect("an event within the wait")
}

/// The next event's (conn_id, state).
fn next_state(events: &Receiver<ConnEvent>) -> (Option<ConnId>, ConnState) {
    let e = next(events);
    (e.conn_id, e.state)
}

/// A raw UDP socket speaking LSP by hand. It listens only to the last
/// address it sent to (before that, to anyone): its port may have belonged to
/// another test's client a moment ago, whose server still heartbeats it.
struct Raw {
    socket: UdpSocket,
    peer: std::cell::Cell<Option<SocketAddr>>,
}

impl Raw {
    fn new() -> Raw {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(WAIT)).unwrap();
        Raw {
            socket,
            peer: std::cell::Cell::new(None),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    fn send(&self, msg: &Message<'_>, to: SocketAddr) {
        let mut buf = Vec::new();
        msg.encode(&mut buf);
        self.socket.send_to(&buf, to).unwrap();
        self.peer.set(Some(to));
    }

    fn recv(&self) -> (Message<'static>, SocketAddr) {
        let mut buf = [0u8; 65536];
        loop {
            let (n, from) = self
                .socket
                .recv_from(&mut buf)
                .expect("a datagram within the wait");
            if self.peer.get().is_none_or(|peer| peer == from) {
                return (Message::decode(&buf[..n]).unwrap().into_owned(), from);
            }
        }
    }

    /// Receives until a message other than a heartbeat arrives.
    fn recv_non_heartbeat(&self) -> (Message<'static>, SocketAddr) {
        loop {
            let (m, from) = self.recv();
            if !(m.kind == MsgType::Ack && m.seq_num == 0) {
                return (m, from);
            }
        }
    }

    /// Sends a Connect and returns the connection id from the Ack.
    fn connect(&self, server: SocketAddr, isn: u64) -> u32 {
        self.send(&Message::connect(isn), server);
        loop {
            let (m, _) = self.recv();
            if m.kind == MsgType::Ack && m.seq_num == isn {
                return m.conn_id;
            }
        }
    }
}

#[test]
fn connect_and_close_events_in_order() {
    let p = TestParams::new().epoch_millis(30).epoch_limit(5).build();
    let server = Server::bind("127.0.0.1:0", p).unwrap();
    let server_events = server.subscribe();
    let (tx, client_events) = crossbeam_channel::unbounded();
    let client = Client::builder()
        .params(p)
        .events(tx)
        .connect(server.local_addr().unwrap())
        .unwrap();
    let id = client.conn_id();
    let addr = server.local_addr().unwrap();

    let e = next(&client_events);
    assert_eq!(
        (e.conn_id, e.peer, e.state),
        (None, addr, ConnState::Connecting)
    );
    let e = next(&client_events);
    assert_eq!((e.conn_id, e.state), (Some(id), ConnState::Connected));
    assert_eq!(client.state(), ConnState::Connected);
    let e = next(&server_events);
    assert_eq!((e.conn_id, e.state), (Some(id), ConnState::Connected));
    // The client binds the unspecified address; the server sees it on loopback.
    assert_eq!(e.peer.port(), client.local_addr().unwrap().port());
    assert!(e.peer.ip().is_loopback());
    assert_eq!(server.state(id), Some(ConnState::Connected));
    assert_eq!(server.connections(), vec![id]);

    client.write(b"last words").unwrap();
    client.close().unwrap();
    assert_eq!(next_state(&client_events), (Some(id), ConnState::Closing));
    assert_eq!(next_state(&client_events), (Some(id), ConnState::Closed));
    assert!(
        client_events.try_recv().is_err(),
        "nothing after the terminal event"
    );
    assert_eq!(client.state(), ConnState::Closed);
    assert_eq!(server.read().unwrap(), (id, b"last words".to_vec()));

    // The client is gone without a word (LSP has no close message): the
    // server loses it after epoch_limit silent epochs.
    assert_eq!(next_state(&server_events), (Some(id), ConnState::Lost));
    assert!(matches!(server.read(), Err(Error::ConnectionLost(lost)) if lost == id));
    assert_eq!(server.state(id), None);
    assert!(server.connections().is_empty());
    server.close().unwrap();
    assert!(server_events.try_recv().is_err());
}

#[test]
fn close_conn_events_and_state() {
    let p = TestParams::new().epoch_millis(30).epoch_limit(5).build();
    let server = Server::bind("127.0.0.1:0", p).unwrap();
    let events = server.subscribe();
    let client = Client::connect(server.local_addr().unwrap(), p).unwrap();
    let id = client.conn_id();
    assert_eq!(next_state(&events), (Some(id), ConnState::Connected));

    server.write(id, b"bye").unwrap();
    server.close_conn(id).unwrap();
    assert_eq!(next_state(&events), (Some(id), ConnState::Closing));
    // Closing lasts until the client acknowledges "bye".
    assert_eq!(client.read().unwrap(), b"bye");
    assert_eq!(next_state(&events), (Some(id), ConnState::Closed));
    assert_eq!(server.state(id), None);
    assert!(matches!(server.read(), Err(Error::ConnectionClosed(c)) if c == id));
    client.close().unwrap();
    server.close().unwrap();
    assert!(events.try_recv().is_err());
}

#[test]
fn every_subscriber_gets_every_event_and_a_dropped_one_blocks_nothing() {
    let p = TestParams::new().epoch_millis(30).epoch_limit(5).build();
    let server = Server::bind("127.0.0.1:0", p).unwrap();
    let a = server.subscribe();
    let b = server.subscribe();
    let dropped = server.subscribe();
    drop(dropped);
    let clients: Vec<Client> = (0..3)
        .map(|_| Client::connect(server.local_addr().unwrap(), p).unwrap())
        .collect();
    let ids: HashSet<ConnId> = clients.iter().map(|c| c.conn_id()).collect();
    for sub in [&a, &b] {
        let seen: HashSet<ConnId> = (0..3)
            .map(|_| {
                let e = next(sub);
                assert_eq!(e.state, ConnState::Connected);
                e.conn_id.unwrap()
            })
            .collect();
        assert_eq!(seen, ids);
    }
    // A late subscriber sees only what happens after it subscribed.
    let late = server.subscribe();
    let first = clients[0].conn_id();
    server.close_conn(first).unwrap();
    assert_eq!(next_state(&late), (Some(first), ConnState::Closing));
    assert_eq!(next_state(&late), (Some(first), ConnState::Closed));
    for c in &clients {
        c.close().unwrap();
    }
    server.close_timeout(Duration::from_secs(5)).unwrap();
}

#[test]
fn repeated_connect_with_same_isn_gets_the_same_ack() {
    let p = TestParams::new().epoch_millis(1000).epoch_limit(5).build();
    let server = Server::bind("127.0.0.1:0", p).unwrap();
    let addr = server.local_addr().unwrap();
    let raw = Raw::new();
    let first = raw.connect(addr, 77);
    let second = raw.connect(addr, 77);
    assert_eq!(first, second);
    assert_eq!(server.connections(), vec![ConnId::from(first)]);
    let totals = server.totals();
    assert_eq!(
        (totals.accepted, totals.duplicate_connects, totals.active),
        (1, 1, 1)
    );
    server.close().unwrap();
}

/// A Connect with a new ISN from the address of a live connection
/// challenges it (RFC 5961): the server sends nothing for it for
/// `CHALLENGE_EPOCHS` epochs; nobody answers, so it ends Lost, and the
/// client's next Connect is admitted as a new connection.
#[test]
fn connect_with_new_isn_from_same_address_challenges_then_replaces_the_connection() {
    let p = TestParams::new().epoch_millis(50).epoch_limit(5).build();
    let server = Server::bind("127.0.0.1:0", p).unwrap();
    let events = server.subscribe();
    let addr = server.local_addr().unwrap();
    let raw = Raw::new();
    let old = raw.connect(addr, 10);
    raw.send(&Message::data(old, 11, b"from the old life"), addr);
    // Acknowledged with an Ack, or a CAck when the server coalesces.
    let ack = raw.recv_non_heartbeat().0;
    assert!(
        ack == Message::ack(old, 11) || ack == Message::cack(old, 11),
        "{ack:?}"
    );
    assert_eq!(
        next_state(&events),
        (Some(ConnId::from(old)), ConnState::Connected)
    );
    // The restarted client's Connect: no answer, the old one still lives.
    raw.send(&Message::connect(500), addr);
    assert_eq!(
        next_state(&events),
        (Some(ConnId::from(old)), ConnState::Lost)
    );
    assert_eq!(server.totals().challenged_connects, 1);
    assert_eq!(
        server.read().unwrap(),
        (ConnId::from(old), b"from the old life".to_vec())
    );
    assert!(matches!(server.read(), Err(Error::ConnectionLost(id)) if u32::from(id) == old));
    // Nothing was sent for the old connection since the challenge but what
    // was already on its way: no Ack for the challenging Connect either.
    raw.socket
        .set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    let mut buf = [0u8; 65536];
    while let Ok((n, _)) = raw.socket.recv_from(&mut buf) {
        let m = Message::decode(&buf[..n]).unwrap();
        assert!(
            m.conn_id == old && m.kind == MsgType::Ack && m.seq_num != 500,
            "{m:?}"
        );
    }
    raw.socket.set_read_timeout(Some(WAIT)).unwrap();
    // Its resent Connect gets in.
    let new = raw.connect(addr, 500);
    assert_ne!(old, new);
    assert_eq!(
        next_state(&events),
        (Some(ConnId::from(new)), ConnState::Connected)
    );
    raw.send(&Message::data(new, 501, b"reborn"), addr);
    assert_eq!(
        server.read().unwrap(),
        (ConnId::from(new), b"reborn".to_vec())
    );
    assert_eq!(server.connections(), vec![ConnId::from(new)]);
    assert!(matches!(
        server.write(ConnId::from(old), b"x"),
        Err(Error::ConnectionLost(id)) if u32::from(id) == old
    ));
    let totals = server.totals();
    assert_eq!(
        (
            totals.accepted,
            totals.lost,
            totals.active,
            totals.challenged_connects
        ),
        (2, 1, 1, 1)
    );
    server.close_timeout(Duration::from_millis(100)).ok();
}

#[test]
/// 200 Connects at once against a limit of 50: none of them proves its
/// address, so each one evicts the oldest unvalidated connection. Every
/// Connect is answered once, the table never holds more than the limit,
/// and exactly the limit is left.
fn connect_storm_against_a_limit_keeps_exactly_the_limit_evicting_the_unvalidated() {
    const CLIENTS: usize = 200;
    const LIMIT: usize = 50;
    let p = TestParams::new().epoch_millis(5000).epoch_limit(5).build();
    let server = Server::builder()
        .params(p)
        .max_connections(LIMIT)
        .bind("127.0.0.1:0")
        .unwrap();
    let events = server.subscribe();
    let addr = server.local_addr().unwrap();
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                let raw = Raw::new();
                raw.socket
                    .set_read_timeout(Some(Duration::from_millis(300)))
                    .unwrap();
                barrier.wait();
                raw.send(&Message::connect(i as u64 + 1), addr);
                let mut buf = [0u8; 2048];
                loop {
                    match raw.socket.recv_from(&mut buf) {
                        Ok((n, from)) if from == addr => {
                            let m = Message::decode(&buf[..n]).unwrap();
                            assert_eq!((m.kind, m.seq_num), (MsgType::Ack, i as u64 + 1));
                            return Some(m.conn_id);
                        }
                        Ok(_) => continue, // a stranger: see `Raw`
                        Err(_) => return None,
                    }
                }
            })
        })
        .collect();
    let admitted: Vec<u32> = handles
        .into_iter()
        .filter_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(admitted.len(), CLIENTS);
    assert_eq!(admitted.iter().collect::<HashSet<_>>().len(), CLIENTS);
    assert_eq!(server.connections().len(), LIMIT);
    let totals = server.totals();
    let evicted = (CLIENTS - LIMIT) as u64;
    assert_eq!(
        (
            totals.accepted,
            totals.refused,
            totals.active,
            totals.evicted_unvalidated,
            totals.lost
        ),
        (CLIENTS as u64, 0, LIMIT, evicted, evicted)
    );
    // Each eviction ends the oldest: the ones left are the last admitted.
    let mut live: Vec<ConnId> = Vec::new();
    let mut lost = 0;
    for _ in 0..CLIENTS + CLIENTS - LIMIT {
        match next(&events) {
            ConnEvent {
                state: ConnState::Connected,
                conn_id: Some(id),
                ..
            } => {
                live.push(id);
                assert!(live.len() <= LIMIT, "more than the limit at once");
            }
            ConnEvent {
                state: ConnState::Lost,
                conn_id: Some(id),
                ..
            } => {
                assert_eq!(live.remove(0), id, "not the oldest evicted");
                lost += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(lost, CLIENTS - LIMIT);
    live.sort();
    assert_eq!(server.connections(), live);
    server.close_timeout(Duration::from_millis(100)).ok();
}

#[test]
fn at_the_limit_refusals_are_reported_once_per_address_per_epoch_and_admitted_clients_are_unaffected(
) {
    let p = TestParams::new()
        .epoch_millis(60_000)
        .epoch_limit(5)
        .build();
    let server = Server::builder()
        .params(p)
        .max_connections(1)
        .bind("127.0.0.1:0")
        .unwrap();
    let events = server.subscribe();
    let addr = server.local_addr().unwrap();
    let member = Raw::new();
    let id = member.connect(addr, 1);
    assert_eq!(
        next_state(&events),
        (Some(ConnId::from(id)), ConnState::Connected)
    );
    // The member proves its address (a heartbeat with its id, answered at
    // once); an unvalidated member would make way for the outsider.
    member.send(&Message::ack(id, 0), addr);
    assert_eq!(member.recv().0, Message::ack(id, 0));

    let outsider = Raw::new();
    for _ in 0..5 {
        outsider.send(&Message::connect(9), addr);
    }
    // The member's repeated Connect is still answered, and its data flows.
    assert_eq!(member.connect(addr, 1), id);
    member.send(&Message::data(id, 2, b"still here"), addr);
    assert_eq!(
        server.read().unwrap(),
        (ConnId::from(id), b"still here".to_vec())
    );

    let e = next(&events);
    assert_eq!((e.conn_id, e.state), (None, ConnState::Refused));
    assert_eq!(e.peer, outsider.addr());
    assert_eq!(server.totals().refused, 5);
    assert!(
        events.try_recv().is_err(),
        "one Refused per address per epoch"
    );
    outsider
        .socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 2048];
    while let Ok((_, from)) = outsider.socket.recv_from(&mut buf) {
        assert_ne!(from, addr, "refused connects get no answer");
    }
    server.close_timeout(Duration::from_millis(100)).ok();
}

#[test]
fn refused_client_fails_with_connect_timeout_and_refused_event() {
    let p = TestParams::new().epoch_millis(20).epoch_limit(3).build();
    let server = Server::builder()
        .params(p)
        .max_connections(0)
        .bind("127.0.0.1:0")
        .unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let addr = server.local_addr().unwrap();
    let err = Client::builder()
        .params(p)
        .events(tx)
        .connect(addr)
        .unwrap_err();
    assert!(matches!(err, Error::ConnectTimeout(a) if a == addr));
    let states: Vec<ConnState> = rx.try_iter().map(|e| e.state).collect();
    assert_eq!(states, [ConnState::Connecting, ConnState::Refused]);
    server.close().unwrap();
}

#[test]
fn server_close_timeout_with_a_peer_that_never_acknowledges() {
    let p = TestParams::new()
        .epoch_millis(200)
        .epoch_limit(1000)
        .build();
    let server = Server::bind("127.0.0.1:0", p).unwrap();
    let events = server.subscribe();
    let addr = server.local_addr().unwrap();
    // A peer that keeps the connection alive with heartbeats but never acks data.
    let raw = Raw::new();
    let id = raw.connect(addr, 3);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let heartbeats = {
        let socket = raw.socket.try_clone().unwrap();
        let stop = stop.clone();
        thread::spawn(move || {
            let mut buf = Vec::new();
            Message::ack(id, 0).encode(&mut buf);
            let mut drain = [0u8; 2048];
            socket
                .set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = socket.send_to(&buf, addr);
                let _ = socket.recv_from(&mut drain);
            }
        })
    };
    for i in 0..3u8 {
        server.write(ConnId::from(id), &[i; 10]).unwrap();
    }
    let deadline = Duration::from_millis(300);
    let started = Instant::now();
    let result = server.close_timeout(deadline);
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    heartbeats.join().unwrap();
    assert!(
        matches!(result, Err(Error::CloseTimedOut { unacked: 3 })),
        "{result:?}"
    );
    assert!(took >= deadline, "{took:?}");
    assert!(took <= deadline + p.epoch(), "{took:?}");
    assert_eq!(
        next_state(&events),
        (Some(ConnId::from(id)), ConnState::Connected)
    );
    assert_eq!(
        next_state(&events),
        (Some(ConnId::from(id)), ConnState::Closing)
    );
    assert_eq!(
        next_state(&events),
        (Some(ConnId::from(id)), ConnState::Closed)
    );
    // The port is free again.
    UdpSocket::bind(addr).unwrap();
}

#[test]
fn client_close_timeout_with_a_server_that_never_acknowledges() {
    let p = TestParams::new()
        .epoch_millis(200)
        .epoch_limit(1000)
        .build();
    let raw = Raw::new();
    let server_addr = raw.addr();
    let answer = thread::spawn(move || {
        let (m, from) = raw.recv();
        assert_eq!(m.kind, MsgType::Connect);
        raw.send(&Message::ack(4, m.seq_num), from);
        raw
    });
    let client = Client::connect(server_addr, p).unwrap();
    let raw = answer.join().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let heartbeats = {
        let socket = raw.socket.try_clone().unwrap();
        let to = client.local_addr().unwrap().port();
        let stop = stop.clone();
        thread::spawn(move || {
            let mut buf = Vec::new();
            Message::ack(4, 0).encode(&mut buf);
            socket
                .set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            let mut drain = [0u8; 2048];
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = socket.send_to(&buf, ("127.0.0.1", to));
                let _ = socket.recv_from(&mut drain);
            }
        })
    };
    for _ in 0..4 {
        client.write(b"never acked").unwrap();
    }
    let started = Instant::now();
    let result = client.close_timeout(Duration::from_millis(200));
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    heartbeats.join().unwrap();
    assert!(
        matches!(result, Err(Error::CloseTimedOut { unacked: 4 })),
        "{result:?}"
    );
    assert!(took <= Duration::from_millis(200) + p.epoch(), "{took:?}");
    assert_eq!(client.state(), ConnState::Closed);
    assert!(matches!(client.write(b"x"), Err(Error::Closed)));
}

fn quick_reconnect(max_attempts: Option<u32>) -> ReconnectPolicy {
    ReconnectPolicy {
        delays: vec![(Duration::ZERO, Duration::from_millis(30))],
        max_attempts,
    }
}

#[test]
fn reconnecting_client_resumes_after_a_server_restart_on_the_same_port() {
    let p = TestParams::new().epoch_millis(30).epoch_limit(4).build();
    let server = Server::bind("127.0.0.1:0", p).unwrap();
    let addr = server.local_addr().unwrap();
    let client = Client::builder()
        .params(p)
        .reconnect(quick_reconnect(None))
        .connect(addr)
        .unwrap();
    let events = client.subscribe();
    let old = client.conn_id();
    client.write(b"one").unwrap();
    assert_eq!(server.read().unwrap(), (old, b"one".to_vec()));
    server.write(old, b"two").unwrap();
    assert_eq!(client.read().unwrap(), b"two");
    server.close().unwrap();

    assert_eq!(next_state(&events), (Some(old), ConnState::Lost));
    assert_eq!(
        next_state(&events),
        (None, ConnState::Reconnecting { attempt: 1 })
    );
    // Written while the server is down: delivered once it is back.
    client.write(b"three").unwrap();
    let server = Server::bind(addr, p).unwrap();
    let mut attempts = 1;
    let new = loop {
        match next_state(&events) {
            (Some(id), ConnState::Connected) => break id,
            (None, ConnState::Reconnecting { attempt }) => {
                attempts += 1;
                assert_eq!(attempt, attempts, "attempts count up");
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(client.conn_id(), new);
    assert!(
        matches!(client.read(), Err(Error::Reconnected { old: o, new: n }) if o == old && n == new)
    );
    assert_eq!(server.read().unwrap(), (new, b"three".to_vec()));
    server.write(new, b"four").unwrap();
    assert_eq!(client.read().unwrap(), b"four");
    // Data flowed on the new connection, so the attempt count starts over
    // when the server goes away again.
    server.close().unwrap();
    assert_eq!(next_state(&events), (Some(new), ConnState::Lost));
    assert_eq!(
        next_state(&events),
        (None, ConnState::Reconnecting { attempt: 1 })
    );
    // Closing while reconnecting cancels it.
    client.close().unwrap();
    loop {
        match next_state(&events) {
            (None, ConnState::Reconnecting { .. }) => continue,
            last => {
                assert_eq!(last, (None, ConnState::Closed));
                break;
            }
        }
    }
    assert!(events.try_recv().is_err());
}

#[test]
fn unacknowledged_messages_are_resent_in_order_on_the_new_connection() {
    let p = Params {
        epoch_millis: 30,
        epoch_limit: 4,
        window_size: 4,
        max_unacked_messages: 4,
        ..Params::default()
    };
    // A raw server: accepts the first connection, never acks its data, goes
    // silent; then answers the reconnect and acks everything.
    let raw = Raw::new();
    let addr = raw.addr();
    let client = Client::builder().params(p).reconnect(quick_reconnect(None));
    let connecting = thread::spawn(move || client.connect(addr).unwrap());
    let (m, client_addr) = raw.recv();
    raw.send(&Message::ack(1, m.seq_num), client_addr);
    let client = connecting.join().unwrap();
    let events = client.subscribe();
    for i in 0..6u8 {
        client.write(&[i]).unwrap();
    }
    // Wait for the loss, then for the new Connect (a different isn).
    assert_eq!(
        next_state(&events),
        (Some(ConnId::from(1)), ConnState::Lost)
    );
    let new_isn = loop {
        let (m, _) = raw.recv();
        if m.kind == MsgType::Connect && m.seq_num != 0 {
            break m.seq_num;
        }
    };
    raw.send(&Message::ack(2, new_isn), client_addr);
    let mut got = Vec::new();
    while got.len() < 6 {
        let (m, _) = raw.recv();
        if m.kind == MsgType::Data && m.seq_num > new_isn + got.len() as u64 {
            assert_eq!(m.seq_num, new_isn + 1 + got.len() as u64);
            got.push(m.payload[0]);
            raw.send(&Message::ack(2, m.seq_num), client_addr);
        }
    }
    assert_eq!(got, [0, 1, 2, 3, 4, 5], "resent in write order");
    client.close().unwrap();
}

#[test]
fn reconnect_gives_up_after_max_attempts() {
    let p = TestParams::new().epoch_millis(20).epoch_limit(2).build();
    let server = Server::bind("127.0.0.1:0", p).unwrap();
    let client = Client::builder()
        .params(p)
        .reconnect(quick_reconnect(Some(2)))
        .connect(server.local_addr().unwrap())
        .unwrap();
    let events = client.subscribe();
    let id = client.conn_id();
    server.close().unwrap();
    assert_eq!(next_state(&events), (Some(id), ConnState::Lost));
    assert_eq!(
        next_state(&events),
        (None, ConnState::Reconnecting { attempt: 1 })
    );
    assert_eq!(
        next_state(&events),
        (None, ConnState::Reconnecting { attempt: 2 })
    );
    assert_eq!(next_state(&events), (None, ConnState::Refused));
    assert!(matches!(client.read(), Err(Error::ConnectionLost(lost)) if lost == id));
    assert!(matches!(client.write(b"x"), Err(Error::ConnectionLost(_))));
    client.close().unwrap();
}

#[test]
fn close_during_a_reconnect_delay_cancels_it() {
    let p = TestParams::new().epoch_millis(20).epoch_limit(2).build();
    let server = Server::bind("127.0.0.1:0", p).unwrap();
    let slow = ReconnectPolicy {
        delays: vec![(Duration::from_secs(30), Duration::from_secs(30))],
        max_attempts: None,
    };
    let client = Client::builder()
        .params(p)
        .reconnect(slow)
        .connect(server.local_addr().unwrap())
        .unwrap();
    let events = client.subscribe();
    server.close().unwrap();
    assert_eq!(next_state(&events).1, ConnState::Lost);
    assert_eq!(
        next_state(&events),
        (None, ConnState::Reconnecting { attempt: 1 })
    );
    let started = Instant::now();
    client.close().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "close did not wait for the delay"
    );
    assert_eq!(next_state(&events), (None, ConnState::Closed));
    assert!(events.try_recv().is_err());
}

#[test]
fn only_one_connection_attempt_is_in_flight() {
    let p = TestParams::new().epoch_millis(20).epoch_limit(2).build();
    let raw = Raw::new();
    let addr = raw.addr();
    let connecting = thread::spawn(move || {
        Client::builder()
            .params(p)
            .reconnect(quick_reconnect(Some(3)))
            .connect(addr)
            .unwrap()
    });
    let (m, client_addr) = raw.recv();
    raw.send(&Message::ack(1, m.seq_num), client_addr);
    let client = connecting.join().unwrap();
    let events = client.subscribe();
    // Never answer again: the client loses the connection and tries 3 times.
    let mut isns = vec![m.seq_num];
    raw.socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    loop {
        if let Ok(ConnEvent {
            state: ConnState::Refused,
            ..
        }) = events.try_recv()
        {
            break;
        }
        let mut buf = [0u8; 2048];
        if let Ok((n, from)) = raw.socket.recv_from(&mut buf) {
            if from != client_addr {
                continue; // a stranger: see `Raw`
            }
            let m = Message::decode(&buf[..n]).unwrap();
            if m.kind == MsgType::Connect && m.seq_num != isns.last().copied().unwrap_or(u64::MAX) {
                isns.push(m.seq_num);
            }
        }
    }
    // Each attempt's Connects form one unbroken run: no two attempts overlap.
    assert_eq!(
        isns.len(),
        4,
        "the first connect and three attempts: {isns:?}"
    );
    assert_eq!(isns.iter().collect::<HashSet<_>>().len(), 4, "{isns:?}");
    client.close().unwrap();
}

/// A proxy between one client and the server that drops every third Data
/// datagram from the client and counts what crosses, by type.
#[test]
fn stats_match_exactly_counted_traffic() {
    const N: usize = 60;
    let p = TestParams::new().epoch_millis(20).epoch_limit(20).build();
    let server = Server::bind("127.0.0.1:0", p).unwrap();
    let proxy = UdpSocket::bind("127.0.0.1:0").unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let server_addr = server.local_addr().unwrap();
    let counts = thread::spawn(move || {
        let mut client_addr = None;
        let (mut data_seen, mut data_forwarded, mut heartbeats_seen) = (0u64, 0u64, 0u64);
        let mut buf = [0u8; 65536];
        proxy
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        while let Ok((n, from)) = proxy.recv_from(&mut buf) {
            if n == 0 {
                break; // the test's stop signal
            }
            if client_addr.is_some_and(|c| c != from) && from != server_addr {
                continue; // a stranger: see `Raw`
            }
            if from == server_addr {
                if let Some(to) = client_addr {
                    proxy.send_to(&buf[..n], to).unwrap();
                }
                continue;
            }
            let m = Message::decode(&buf[..n]).unwrap();
            if client_addr.is_none() {
                if m.kind != MsgType::Connect {
                    continue; // a stranger: see `Raw`
                }
                client_addr = Some(from);
            }
            match m.kind {
                MsgType::Data => {
                    data_seen += 1;
                    if data_seen % 3 == 0 {
                        continue;
                    }
                    data_forwarded += 1;
                }
                MsgType::Ack if m.seq_num == 0 => heartbeats_seen += 1,
                _ => {}
            }
            proxy.send_to(&buf[..n], server_addr).unwrap();
        }
        (data_seen, data_forwarded, heartbeats_seen)
    });
    let client = Client::connect(proxy_addr, p).unwrap();
    let id = client.conn_id();
    let mut bytes = 0u64;
    for i in 0..N {
        let payload = vec![i as u8; i + 1];
        bytes += payload.len() as u64;
        client.write(&payload).unwrap();
        assert_eq!(server.read().unwrap(), (id, payload));
    }
    client.close().unwrap();
    let server_stats = server.stats(id).unwrap();
    let client_stats = client.stats();
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(&[], proxy_addr)
        .unwrap();
    let (data_seen, data_forwarded, heartbeats_seen) = counts.join().unwrap();

    assert_eq!(
        (client_stats.messages_sent, client_stats.bytes_sent),
        (N as u64, bytes)
    );
    assert_eq!(
        client_stats.messages_sent + client_stats.retransmissions,
        data_seen
    );
    assert_eq!(client_stats.retransmissions, data_seen - N as u64);
    assert!(client_stats.retransmissions >= N as u64 / 3);
    assert_eq!(client_stats.heartbeats_sent, heartbeats_seen);
    assert_eq!((client_stats.unacked, client_stats.queued), (0, 0));
    let rtt = client_stats
        .rtt
        .expect("RTT samples from first-transmission acks");
    assert!(rtt.min <= rtt.smoothed && rtt.smoothed <= rtt.max);
    assert!(
        rtt.samples > 0 && rtt.samples < N as u64,
        "retransmitted messages give no sample: {rtt:?}"
    );
    assert!(client_stats.connect_time.is_some());

    assert_eq!(
        (server_stats.messages_received, server_stats.bytes_received),
        (N as u64, bytes)
    );
    assert_eq!(
        server_stats.messages_received + server_stats.duplicates_received,
        data_forwarded
    );
    assert_eq!(server_stats.corrupt_received, 0);
    assert_eq!(server_stats.connect_time, None);
    server.close_timeout(Duration::from_millis(100)).ok();
}
