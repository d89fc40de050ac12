//! Hostile input: nothing from the network can crash, hijack or exhaust an
//! endpoint. An attacker is a raw UDP socket on loopback; the server under
//! attack keeps serving a well-behaved client, checked byte for byte.

mod common;

use std::net::UdpSocket;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{payload, spawn_echo, RawPeer};
use liveseq::proto::{Message, MsgType, CONNECT_REACKS};
use liveseq::{Client, ConnId, Error, Params, Server};

fn params() -> Params {
    Params {
        epoch_limit: 20,
        epoch_millis: 30,
        window_size: 4,
        max_unacked_messages: 4,
        max_backoff_interval: 0,
    }
}

/// A well-behaved client exchanges `n` messages with an echo server.
fn exchange(client: &Client, n: usize, tag: usize) {
    for i in 0..n {
        client.write(&payload(tag, i, 500)).unwrap();
    }
    for i in 0..n {
        assert_eq!(client.read().unwrap(), payload(tag, i, 500), "message {i}");
    }
}

fn junk(id: u32) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"not json".to_vec(),
        b"{".to_vec(),
        br#"{"Type":1,"ConnID":1,"SeqNum":2,"Size":3,"#.to_vec(),
        b"[1,2,3]".to_vec(),
        b"null".to_vec(),
        br#"{"Type":9,"ConnID":1,"SeqNum":1}"#.to_vec(),
        br#"{"Type":-1,"ConnID":1,"SeqNum":1}"#.to_vec(),
        br#"{"Type":2,"ConnID":-5,"SeqNum":1}"#.to_vec(),
        br#"{"Type":2,"ConnID":1,"SeqNum":-1}"#.to_vec(),
        br#"{"Type":2,"ConnID":1,"SeqNum":1e400}"#.to_vec(),
        br#"{"Type":2,"ConnID":99999999999999999999,"SeqNum":1}"#.to_vec(),
        br#"{"Type":1,"ConnID":1,"SeqNum":1,"Size":1,"Checksum":70000,"Payload":"AA=="}"#.to_vec(),
        br#"{"Type":1,"ConnID":1,"SeqNum":1,"Size":1,"Checksum":1,"Payload":"!!!!"}"#.to_vec(),
        br#"{"Type":"1","ConnID":1,"SeqNum":1}"#.to_vec(),
        vec![0xFF; 65507],
        [
            br#"{"Type":1,"ConnID":1,"SeqNum":1,"Size":1,"Payload":""#.as_slice(),
            &vec![b'A'; 65000],
            b"\"}",
        ]
        .concat(),
    ];
    // Well-formed but naming the victim: Size 2^31 with a short payload, a
    // huge sequence number, a Connect-looking Data.
    v.push(format!(r#"{{"Type":1,"ConnID":{id},"SeqNum":1,"Size":2147483648,"Checksum":0,"Payload":"aGk="}}"#).into_bytes());
    v.push(format!(r#"{{"Type":1,"ConnID":{id},"SeqNum":18446744073709551615,"Size":0,"Checksum":0,"Payload":""}}"#).into_bytes());
    v.push(format!(r#"{{"Type":3,"ConnID":{id},"SeqNum":18446744073709551615}}"#).into_bytes());
    v
}

#[test]
fn junk_datagrams_are_dropped_counted_and_harmless() {
    let p = params();
    let server = Arc::new(Server::bind("127.0.0.1:0", p).unwrap());
    let addr = server.local_addr().unwrap();
    let echo = spawn_echo(server.clone());
    let client = Client::connect(addr, p).unwrap();
    exchange(&client, 20, 1);
    let id = u32::from(client.conn_id());
    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    let before = server.totals();
    let junk = junk(id);
    for d in &junk {
        attacker.send_to(d, addr).unwrap();
    }
    exchange(&client, 20, 2);
    // Everything was counted: malformed ones as malformed, the well-formed
    // ones (from an address with no connection) as rejected.
    let after = server.totals();
    let counted = (after.malformed - before.malformed) + (after.rejected - before.rejected);
    assert_eq!(counted, junk.len() as u64, "{before:?} -> {after:?}");
    assert_eq!(after.active, 1);
    client.close().unwrap();
    server.close_timeout(Duration::from_secs(1)).ok();
    echo.join().unwrap();
}

/// Junk from the victim's own address must not hurt its connection either.
#[test]
fn junk_from_the_connections_own_address_is_counted_on_it() {
    let server = Server::bind("127.0.0.1:0", params()).unwrap();
    let mut raw = RawPeer::new();
    let id = raw.connect(server.local_addr().unwrap(), 10);
    for d in junk(id) {
        raw.socket
            .send_to(&d, server.local_addr().unwrap())
            .unwrap();
    }
    raw.send(&Message::data(id, 11, b"still fine"));
    assert_eq!(
        server.read().unwrap(),
        (ConnId::from(id), b"still fine".to_vec())
    );
    let stats = server.stats(ConnId::from(id)).unwrap();
    assert!(stats.malformed_received >= 15, "{stats:?}");
    server.close_timeout(Duration::from_millis(100)).ok();
}

/// An attacker knows the victim's ConnID, the next sequence numbers and
/// which messages are unacknowledged, but sends from its own address.
#[test]
fn another_address_cannot_hijack_a_connection() {
    let p = Params {
        epoch_limit: 50,
        epoch_millis: 30,
        ..Params::default()
    };
    let server = Server::bind("127.0.0.1:0", p).unwrap();
    let addr = server.local_addr().unwrap();
    let mut victim = RawPeer::new();
    let id = victim.connect(addr, 100);
    server
        .write(ConnId::from(id), b"for the victim only")
        .unwrap();
    let first = victim.recv_non_heartbeat();
    assert_eq!((first.kind, first.seq_num), (MsgType::Data, 101));

    let mut attacker = RawPeer::new();
    let before = server.totals().rejected;
    attacker.send_to(&Message::data(id, 101, b"injected"), addr);
    attacker.send_to(&Message::ack(id, 101), addr);
    attacker.send_to(&Message::cack(id, 101), addr);
    attacker.send_to(&Message::ack(id, 0), addr);
    // Nothing from the attacker is delivered...
    assert!(matches!(
        server.read_timeout(p.epoch() * 3),
        Err(Error::Timeout)
    ));
    // ...its acks released nothing: the server still retransmits to the victim...
    let again = victim.recv_non_heartbeat();
    assert_eq!(
        (again.kind, again.seq_num, &again.payload[..]),
        (MsgType::Data, 101, &b"for the victim only"[..])
    );
    assert_eq!(server.stats(ConnId::from(id)).unwrap().unacked, 1);
    assert_eq!(server.totals().rejected - before, 4, "all four counted");
    // ...and the attacker heard nothing back.
    attacker.peer = Some(addr);
    assert_eq!(attacker.gather(Duration::from_millis(60), None), []);
    // The victim's own data still gets through.
    victim.send(&Message::data(id, 101, b"real"));
    assert_eq!(server.read().unwrap(), (ConnId::from(id), b"real".to_vec()));
    server.close_timeout(Duration::from_millis(100)).ok();
}

#[test]
fn data_outside_the_receive_window_is_neither_acked_nor_buffered() {
    let p = Params {
        epoch_limit: 50,
        epoch_millis: 30,
        window_size: 4,
        max_unacked_messages: 4,
        max_backoff_interval: 0,
    };
    let server = Server::builder()
        .params(p)
        .ack_coalescing(false)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut raw = RawPeer::new();
    let id = raw.connect(server.local_addr().unwrap(), 0);
    // Expected is 1: 5 and beyond are outside a window of 4.
    for sn in [5u64, 6, 1000, u64::from(u32::MAX), u64::MAX - 1, u64::MAX] {
        raw.send(&Message::data(id, sn, b"far"));
    }
    let replies = raw.gather(p.epoch() * 2, None);
    assert!(
        replies
            .iter()
            .all(|m| m.kind == MsgType::Ack && m.seq_num == 0),
        "only heartbeats: {replies:?}"
    );
    // Nothing was buffered: filling the gap delivers 1..=4 and nothing more.
    for sn in 1..=4u64 {
        raw.send(&Message::data(id, sn, &[sn as u8]));
    }
    for sn in 1..=4u8 {
        assert_eq!(server.read().unwrap().1, vec![sn]);
    }
    assert!(matches!(
        server.read_timeout(p.epoch() * 2),
        Err(Error::Timeout)
    ));
    // The last two are above Go's largest int: malformed, not just outside.
    let stats = server.stats(ConnId::from(id)).unwrap();
    assert_eq!(
        (
            stats.messages_received,
            stats.rejected,
            stats.malformed_received
        ),
        (4, 4, 2)
    );
    server.close_timeout(Duration::from_millis(100)).ok();
}

#[test]
fn acks_for_messages_never_sent_release_nothing() {
    let p = Params {
        epoch_limit: 50,
        epoch_millis: 30,
        window_size: 1,
        max_unacked_messages: 1,
        max_backoff_interval: 0,
    };
    let server = Server::bind("127.0.0.1:0", p).unwrap();
    let mut raw = RawPeer::new();
    let id = raw.connect(server.local_addr().unwrap(), 0);
    for i in 0..3u8 {
        server.write(ConnId::from(id), &[i]).unwrap();
    }
    assert_eq!(raw.recv_non_heartbeat().seq_num, 1);
    // Acks for 2 and 3 (queued, never sent), a CAck beyond them, a huge Ack.
    for m in [
        Message::ack(id, 2),
        Message::ack(id, 3),
        Message::cack(id, 3),
        Message::ack(id, u64::MAX),
    ] {
        raw.send(&m);
    }
    let sent: Vec<u64> = raw
        .gather(p.epoch() * 3, Some(id))
        .iter()
        .filter(|m| m.kind == MsgType::Data)
        .map(|m| m.seq_num)
        .collect();
    assert!(
        !sent.is_empty() && sent.iter().all(|&sn| sn == 1),
        "only 1 may be (re)sent: {sent:?}"
    );
    let stats = server.stats(ConnId::from(id)).unwrap();
    assert_eq!((stats.unacked, stats.queued), (1, 2));
    raw.send(&Message::ack(id, 1));
    assert_eq!(
        raw.recv_non_heartbeat().seq_num,
        2,
        "a real ack moves the window"
    );
    server.close_timeout(Duration::from_millis(100)).ok();
}

/// No amplification: one datagram from an address with no connection earns
/// at most one datagram, however long we listen. A Connect gets its Ack and
/// nothing else (no heartbeats to an address that never spoke again).
#[test]
fn no_amplification_toward_addresses_without_a_connection() {
    let p = Params {
        epoch_limit: 6,
        epoch_millis: 20,
        ..Params::default()
    };
    let server = Server::bind("127.0.0.1:0", p).unwrap();
    let addr = server.local_addr().unwrap();
    let probes: Vec<Vec<u8>> = {
        let mut v = Vec::new();
        for m in [
            Message::data(1, 1, b"x"),
            Message::ack(1, 1),
            Message::cack(1, 1),
            Message::ack(1, 0),
        ] {
            let mut b = Vec::new();
            m.encode(&mut b);
            v.push(b);
        }
        v.push(b"garbage".to_vec());
        v
    };
    for probe in &probes {
        let mut raw = RawPeer::new();
        raw.peer = Some(addr);
        raw.socket.send_to(probe, addr).unwrap();
        let replies = raw.gather(p.epoch() * 3, None);
        assert!(
            replies.is_empty(),
            "{:?} earned {replies:?}",
            String::from_utf8_lossy(probe)
        );
    }
    let mut raw = RawPeer::new();
    raw.send_to(&Message::connect(42), addr);
    // Listen past the epoch limit: the connection is reaped without a word.
    let replies = raw.gather(p.epoch() * (p.epoch_limit + 2), None);
    assert_eq!(
        replies,
        vec![Message::ack(1, 42); 1 + CONNECT_REACKS as usize],
        "the Ack and its bounded repeats, nothing more, for one Connect"
    );
    assert_eq!(server.totals().active, 0, "reaped");
    server.close().unwrap();
}

/// A flood of Connects against a limit: existing clients are served as
/// before, and the flood costs no connection state.
#[test]
fn connect_flood_with_a_limit() {
    let p = params();
    let server = Arc::new(
        Server::builder()
            .params(p)
            .max_connections(20)
            .bind("127.0.0.1:0")
            .unwrap(),
    );
    let addr = server.local_addr().unwrap();
    let echo = spawn_echo(server.clone());
    let client = Client::connect(addr, p).unwrap();
    let quiet = Instant::now();
    exchange(&client, 300, 1);
    let baseline = quiet.elapsed();

    let flooding = thread::spawn(move || {
        let sockets: Vec<UdpSocket> = (0..1000)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let mut buf = Vec::new();
        for round in 0..10u64 {
            for (i, s) in sockets.iter().enumerate() {
                buf.clear();
                Message::connect(round * 1000 + i as u64 + 1).encode(&mut buf);
                let _ = s.send_to(&buf, addr);
            }
        }
    });
    let flooded = Instant::now();
    exchange(&client, 300, 2);
    let during = flooded.elapsed();
    flooding.join().unwrap();
    let totals = server.totals();
    assert!(totals.active <= 20, "{totals:?}");
    assert!(totals.refused >= 10_000 - 20 * 10, "{totals:?}");
    // "Normal speed": generous, since a loaded 2-core machine is noisy.
    assert!(
        during < baseline * 10 + Duration::from_millis(500),
        "baseline {baseline:?}, during the flood {during:?}"
    );
    client.close().unwrap();
    server.close_timeout(Duration::from_secs(1)).ok();
    echo.join().unwrap();
}

/// Without a limit, the flood's idle connections are reaped after the epoch
/// limit and the table returns to where it was.
#[test]
fn connect_flood_without_a_limit_is_reaped() {
    let p = Params {
        epoch_limit: 4,
        epoch_millis: 25,
        ..Params::default()
    };
    let server = Arc::new(Server::bind("127.0.0.1:0", p).unwrap());
    let addr = server.local_addr().unwrap();
    let echo = spawn_echo(server.clone());
    let client = Client::connect(addr, p).unwrap();
    let events = server.subscribe();
    let sockets: Vec<UdpSocket> = (0..1000)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut buf = Vec::new();
    for (i, s) in sockets.iter().enumerate() {
        buf.clear();
        Message::connect(i as u64 + 1).encode(&mut buf);
        s.send_to(&buf, addr).unwrap();
    }
    // The real client keeps talking (heartbeats); the flood falls silent
    // after its Connect, and each of its connections is lost.
    let (mut connected, mut lost) = (0, 0);
    while lost < 1000 {
        let e = events.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_ne!(
            e.conn_id,
            Some(client.conn_id()),
            "the real client is never lost"
        );
        match e.state {
            liveseq::ConnState::Connected => connected += 1,
            liveseq::ConnState::Lost => lost += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(connected, 1000);
    assert_eq!(server.totals().active, 1, "only the real client is left");
    exchange(&client, 50, 3);
    client.close().unwrap();
    server.close_timeout(Duration::from_secs(1)).ok();
    echo.join().unwrap();
}
