//! Closing: draining, close_conn, loss during close, waking blocked readers,
//! dropping without close.
//!
//! Reference families: ServerClose 1-2, ServerCloseConns 1-2, ClientClose
//! 1-2 (one read error per connection, writes fail after), ServerFastClose
//! (a close issued while the network is down completes once it is back is in
//! tests/scenarios.rs).

mod common;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{faulty_client, faulty_server, payload, Acks, RawPeer, TestParams};
use liveseq::proto::{Message, MsgType};
use liveseq::{Client, ConnId, Error, Faults, Params, Server};

#[test]
fn client_close_drains_everything_written() {
    let p = TestParams::new()
        .epoch_millis(30)
        .epoch_limit(20)
        .window(4)
        .max_unacked(4)
        .build();
    let server = Server::bind("127.0.0.1:0", p).unwrap();
    // The client loses 40% of what it sends: close must wait for retransmissions.
    let faults = Faults {
        write_drop_percent: 40,
        seed: Some(5),
        ..Faults::default()
    };
    let client = faulty_client(server.local_addr().unwrap(), p, faults);
    for i in 0..100 {
        client.write(&payload(0, i, 300)).unwrap();
    }
    client.close().unwrap();
    for i in 0..100 {
        assert_eq!(
            server.read().unwrap(),
            (client.conn_id(), payload(0, i, 300))
        );
    }
    assert!(matches!(client.write(b"x"), Err(Error::Closed)));
    assert!(matches!(client.read(), Err(Error::Closed)));
    assert!(matches!(client.close(), Err(Error::Closed)), "second close");
    server.close_timeout(Duration::from_millis(100)).ok();
}

#[test]
fn server_close_drains_to_many_clients() {
    let p = TestParams::new()
        .epoch_millis(30)
        .epoch_limit(20)
        .window(4)
        .max_unacked(4)
        .build();
    let faults = Faults {
        write_drop_percent: 30,
        seed: Some(9),
        ..Faults::default()
    };
    let server = Server::builder()
        .params(p)
        .faults(faults)
        .bind("127.0.0.1:0")
        .unwrap();
    let clients: Vec<Client> = (0..6)
        .map(|_| Client::connect(server.local_addr().unwrap(), p).unwrap())
        .collect();
    for (c, client) in clients.iter().enumerate() {
        for i in 0..40 {
            server.write(client.conn_id(), &payload(c, i, 500)).unwrap();
        }
    }
    let readers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, client)| {
            thread::spawn(move || {
                for i in 0..40 {
                    assert_eq!(client.read().unwrap(), payload(c, i, 500));
                }
                // After the server is gone the client notices the silence.
                assert!(matches!(client.read(), Err(Error::ConnectionLost(id)) if id == client.conn_id()));
                assert!(matches!(client.read(), Err(Error::ConnectionLost(_))), "repeats");
                assert!(matches!(client.write(b"x"), Err(Error::ConnectionLost(_))));
                client.close().unwrap();
            })
        })
        .collect();
    server.close().unwrap();
    assert!(matches!(server.read(), Err(Error::Closed)));
    assert!(matches!(
        server.write(ConnId::from(1), b"x"),
        Err(Error::Closed)
    ));
    for r in readers {
        r.join().unwrap();
    }
}

#[test]
fn close_conn_delivers_written_data_but_reads_nothing_more() {
    let p = TestParams::new()
        .epoch_millis(30)
        .epoch_limit(20)
        .window(8)
        .max_unacked(8)
        .build();
    let server = Server::bind("127.0.0.1:0", p).unwrap();
    let other = Client::connect(server.local_addr().unwrap(), p).unwrap();
    // A raw client, so the test can see the server acknowledge its data.
    let mut raw = RawPeer::new();
    let id = ConnId::from(raw.connect(server.local_addr().unwrap(), 0));
    for sn in 1..=5u64 {
        raw.send(&Message::data(id.into(), sn, &[sn as u8]));
    }
    let mut acks = Acks::new(0);
    while acks.through < 5 {
        acks.note(&raw.recv_non_heartbeat());
    }
    // All five are in the server's inbox, unread. close_conn drops them.
    server.write(id, b"goodbye").unwrap();
    server.close_conn(id).unwrap();
    assert!(matches!(
        server.write(id, b"x"),
        Err(Error::ConnectionClosed(_) | Error::UnknownConnection(_))
    ));
    other.write(b"still here").unwrap();
    assert!(matches!(server.read(), Err(Error::ConnectionClosed(c)) if c == id));
    assert_eq!(
        server.read().unwrap(),
        (other.conn_id(), b"still here".to_vec())
    );
    // Written before close_conn: still delivered (and retransmitted until acked).
    let goodbye = loop {
        let m = raw.recv_non_heartbeat();
        if m.kind == MsgType::Data {
            break m;
        }
    };
    assert_eq!(&goodbye.payload[..], b"goodbye");
    raw.send(&Message::ack(id.into(), goodbye.seq_num));
    // Data after close_conn is acknowledged but never read.
    raw.send(&Message::data(id.into(), 6, b"ignored"));
    assert!(matches!(
        server.read_timeout(Duration::from_millis(200)),
        Err(Error::Timeout)
    ));
    assert!(
        matches!(server.close_conn(id), Err(Error::UnknownConnection(_))),
        "drained and gone"
    );
    other.close().unwrap();
    server.close_timeout(Duration::from_millis(100)).ok();
}

#[test]
fn server_sees_exactly_one_error_per_closed_client() {
    let p = TestParams::new()
        .epoch_millis(30)
        .epoch_limit(3)
        .window(1)
        .max_unacked(1)
        .build();
    let server = Server::bind("127.0.0.1:0", p).unwrap();
    let clients: Vec<Client> = (0..4)
        .map(|_| Client::connect(server.local_addr().unwrap(), p).unwrap())
        .collect();
    let mut expected = std::collections::HashMap::new();
    for (c, client) in clients.iter().enumerate() {
        for i in 0..10 {
            client.write(&payload(c, i, 100)).unwrap();
        }
        expected.insert(client.conn_id(), c);
    }
    for client in &clients {
        client.close().unwrap();
    }
    let mut received = std::collections::HashMap::<ConnId, usize>::new();
    let mut errors = std::collections::HashMap::<ConnId, usize>::new();
    while errors.len() < 4 {
        match server.read() {
            Ok((id, msg)) => {
                let n = received.entry(id).or_default();
                assert_eq!(msg, payload(expected[&id], *n, 100));
                *n += 1;
            }
            Err(Error::ConnectionLost(id)) => {
                assert_eq!(
                    received.get(&id),
                    Some(&10),
                    "the loss comes after all the data"
                );
                *errors.entry(id).or_default() += 1;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    assert!(errors.values().all(|&n| n == 1));
    assert!(matches!(
        server.read_timeout(Duration::from_millis(200)),
        Err(Error::Timeout)
    ));
    server.close().unwrap();
}

#[test]
fn close_with_unacknowledged_messages_under_loss() {
    let p = TestParams::new()
        .epoch_millis(20)
        .epoch_limit(40)
        .window(8)
        .max_unacked(8)
        .build();
    let faults = Faults {
        read_drop_percent: 30,
        write_drop_percent: 30,
        seed: Some(3),
        ..Faults::default()
    };
    let server = faulty_server(p, faults);
    let client = faulty_client(
        server.local_addr().unwrap(),
        p,
        Faults {
            seed: Some(4),
            ..faults
        },
    );
    for i in 0..50 {
        client.write(&payload(1, i, 800)).unwrap();
        server.write(client.conn_id(), &payload(2, i, 800)).unwrap();
    }
    assert!(client.stats().unacked + client.stats().queued > 0);
    let server_side = {
        let server = server.clone();
        let id = client.conn_id();
        thread::spawn(move || {
            for i in 0..50 {
                assert_eq!(server.read().unwrap(), (id, payload(1, i, 800)));
            }
        })
    };
    for i in 0..50 {
        assert_eq!(client.read().unwrap(), payload(2, i, 800));
    }
    let id = client.conn_id();
    client.close().unwrap();
    server_side.join().unwrap();
    // Everything arrived both ways. The client's ack of the last echo may
    // still have been lost, and a closed client answers no retransmission:
    // then the server rightly reports the connection lost during its close.
    match server.close() {
        Ok(()) => {}
        Err(Error::LostDuringClose(ids)) => assert_eq!(ids, [id]),
        Err(other) => panic!("{other}"),
    }
}

#[test]
fn close_with_a_lost_peer() {
    // A raw client that connects, then never acknowledges anything.
    let p = TestParams::new()
        .epoch_millis(30)
        .epoch_limit(3)
        .window(1)
        .max_unacked(1)
        .build();
    let server = Server::bind("127.0.0.1:0", p).unwrap();
    let mut raw = RawPeer::new();
    let id = ConnId::from(raw.connect(server.local_addr().unwrap(), 1));
    server.write(id, b"nobody listens").unwrap();
    let started = Instant::now();
    match server.close() {
        Err(Error::LostDuringClose(ids)) => assert_eq!(ids, vec![id]),
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() >= Duration::from_millis(2 * 30),
        "waited for the epoch limit"
    );

    // A client whose server vanishes with messages unacknowledged.
    let mut raw = RawPeer::new();
    let addr = raw.addr();
    let connecting = thread::spawn(move || Client::connect(addr, p).unwrap());
    raw.accept(7);
    let client = connecting.join().unwrap();
    client.write(b"never acked").unwrap();
    assert!(matches!(client.close(), Err(Error::ConnectionLost(c)) if c == ConnId::from(7)));
}

#[test]
fn close_wakes_a_blocked_reader() {
    let p = TestParams::new()
        .epoch_millis(100)
        .epoch_limit(5)
        .window(1)
        .max_unacked(1)
        .build();
    let server = Arc::new(Server::bind("127.0.0.1:0", p).unwrap());
    let client = Arc::new(Client::connect(server.local_addr().unwrap(), p).unwrap());
    let blocked_server = {
        let server = server.clone();
        thread::spawn(move || server.read())
    };
    let blocked_client = {
        let client = client.clone();
        thread::spawn(move || client.read())
    };
    // Both readers block (nothing is ever sent); close wakes them.
    client.close().unwrap();
    assert!(matches!(blocked_client.join().unwrap(), Err(Error::Closed)));
    server.close().unwrap();
    assert!(matches!(blocked_server.join().unwrap(), Err(Error::Closed)));
}

#[test]
fn dropping_without_close_still_delivers() {
    // A drop drains for at most epoch_limit epochs: through 50% loss that
    // must be far more than the drain takes, even on a loaded machine.
    let p = TestParams::new()
        .epoch_millis(20)
        .epoch_limit(100)
        .window(4)
        .max_unacked(4)
        .build();
    let server = Server::bind("127.0.0.1:0", p).unwrap();
    let faults = Faults {
        write_drop_percent: 50,
        seed: Some(1),
        ..Faults::default()
    };
    let client = faulty_client(server.local_addr().unwrap(), p, faults);
    let id = client.conn_id();
    for i in 0..30 {
        client.write(&payload(0, i, 200)).unwrap();
    }
    drop(client); // closes in the background
    for i in 0..30 {
        assert_eq!(server.read().unwrap(), (id, payload(0, i, 200)));
    }
    server.close_timeout(Duration::from_millis(100)).ok();
}

#[test]
fn connect_ack_from_elsewhere_is_ignored() {
    // Only the server's own address may answer a Connect.
    let mut raw = RawPeer::new();
    let addr = raw.addr();
    let p = Params {
        epoch_millis: 30,
        epoch_limit: 5,
        ..Params::default()
    };
    let connecting = thread::spawn(move || {
        Client::builder()
            .params(p)
            .initial_seq_num(77)
            .connect(addr)
    });
    let connect = raw.recv();
    assert_eq!((connect.kind, connect.seq_num), (MsgType::Connect, 77));
    let client_addr = raw.peer.unwrap();
    let mut impostor = RawPeer::new();
    impostor.send_to(&Message::ack(5, 77), client_addr);
    assert!(matches!(
        connecting.join().unwrap(),
        Err(Error::ConnectTimeout(a)) if a == addr
    ));
}
