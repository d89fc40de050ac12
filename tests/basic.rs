//! Basic behaviour on real sockets over loopback.
//!
//! Reference families: Basic 1-9 (echo with 1 to 10 clients, message counts
//! and window sizes, a slow server), SendReceive 1-3 (everything inside one
//! epoch: nothing may depend on retransmission), BasicISN (sequence numbers
//! on the wire), ServerSlowStart 1-2 (connect retries until the server is
//! up), plus connect failure, parameter validation and payload limits.

mod common;

use std::net::UdpSocket;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{spawn_echo, spawn_paced_echo, write_and_check_echoes, RawPeer, TestParams};
use liveseq::proto::{Message, MsgType};
use liveseq::{Client, Error, Params, Server};

/// The reference tests' epochs: 2 s, lost after 5.
fn reference() -> TestParams {
    TestParams::new().epoch_millis(2000).epoch_limit(5)
}

/// `clients` clients each send `msgs` messages and check every echo, byte
/// for byte and in order. `server_delay` holds each echo back (Basic 7-9).
fn echo_run(p: Params, clients: usize, msgs: usize, server_delay: Option<Duration>) {
    let server = Arc::new(Server::bind("127.0.0.1:0", p).unwrap());
    let addr = server.local_addr().unwrap();
    let echo = match server_delay {
        None => spawn_echo(server.clone()),
        Some(max) => spawn_paced_echo(server.clone(), move |n| {
            max.mul_f64((n * 7919 % 100) as f64 / 100.0)
        }),
    };
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            thread::spawn(move || {
                let client = Arc::new(Client::connect(addr, p).unwrap());
                write_and_check_echoes(&client, c, msgs, 1000);
                let stats = client.stats();
                assert_eq!(
                    (stats.messages_sent, stats.messages_received),
                    (msgs as u64, msgs as u64)
                );
                client.close().unwrap();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(server.totals().accepted, clients as u64);
    server.close_timeout(Duration::from_secs(5)).ok();
    echo.join().unwrap();
}

#[test]
fn basic_one_client_few_messages() {
    echo_run(reference().window(1).max_unacked(1).build(), 1, 3, None);
    echo_run(reference().window(1).max_unacked(1).build(), 1, 50, None);
}

#[test]
fn basic_two_clients() {
    echo_run(reference().window(1).max_unacked(1).build(), 2, 50, None);
}

#[test]
fn basic_ten_clients_window_two() {
    echo_run(reference().window(2).max_unacked(2).build(), 10, 50, None);
}

#[test]
fn basic_two_clients_500_messages_window_two_unacked_one() {
    echo_run(reference().window(2).max_unacked(1).build(), 2, 500, None);
}

#[test]
fn basic_ten_clients_500_messages_window_twenty() {
    echo_run(
        reference().window(20).max_unacked(10).build(),
        10,
        500,
        None,
    );
}

#[test]
fn basic_thousand_messages_each_way() {
    echo_run(reference().window(8).max_unacked(8).build(), 1, 1000, None);
    echo_run(reference().window(4).max_unacked(4).build(), 3, 1000, None);
}

#[test]
fn basic_slow_server() {
    let slow = Some(Duration::from_millis(10));
    echo_run(reference().window(2).max_unacked(2).build(), 4, 10, slow);
    echo_run(reference().window(10).max_unacked(10).build(), 5, 10, slow);
    echo_run(reference().window(10).max_unacked(10).build(), 2, 50, slow);
}

/// SendReceive: epochs far longer than the exchange, so a lost datagram
/// would stall the test: none may be needed.
#[test]
fn send_receive_inside_one_epoch() {
    echo_run(
        TestParams::new()
            .epoch_millis(5000)
            .epoch_limit(3)
            .window(1)
            .max_unacked(1)
            .build(),
        1,
        6,
        None,
    );
    echo_run(
        TestParams::new()
            .epoch_millis(10_000)
            .epoch_limit(3)
            .window(1)
            .max_unacked(1)
            .build(),
        4,
        6,
        None,
    );
}

#[test]
fn client_connects_before_the_server_is_up() {
    let p = TestParams::new()
        .epoch_millis(50)
        .epoch_limit(8)
        .window(1)
        .max_unacked(1)
        .build();
    // Reserve a port, start connecting to it, then start the server there.
    let reserved = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = reserved.local_addr().unwrap();
    let connecting = thread::spawn(move || Client::connect(addr, p));
    // Wait until the first Connect has been sent (and ignored): no server yet.
    let mut buf = [0u8; 2048];
    reserved.set_read_timeout(Some(common::WAIT)).unwrap();
    let (n, _) = reserved.recv_from(&mut buf).unwrap();
    assert_eq!(Message::decode(&buf[..n]).unwrap().kind, MsgType::Connect);
    drop(reserved);
    let server = Server::bind(addr, p).unwrap();
    let client = connecting
        .join()
        .unwrap()
        .expect("connect succeeds once the server is up");
    client.write(b"late but fine").unwrap();
    assert_eq!(
        server.read().unwrap(),
        (client.conn_id(), b"late but fine".to_vec())
    );
    client.close().unwrap();
    server.close_timeout(Duration::from_secs(2)).ok();
}

#[test]
fn connect_to_nothing_times_out_after_the_epoch_limit() {
    let quiet = UdpSocket::bind("127.0.0.1:0").unwrap();
    let p = TestParams::new()
        .epoch_millis(20)
        .epoch_limit(4)
        .window(1)
        .max_unacked(1)
        .build();
    let started = std::time::Instant::now();
    let addr = quiet.local_addr().unwrap();
    let err = Client::connect(addr, p).unwrap_err();
    assert!(
        matches!(err, Error::ConnectTimeout(a) if a == addr),
        "{err:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(4 * 20));
    // The first Connect, then one in epoch 1 and every second epoch after
    // (epoch 3) before giving up at epoch 4.
    let mut buf = [0u8; 2048];
    quiet.set_nonblocking(true).unwrap();
    let mut connects = 0;
    while let Ok((n, _)) = quiet.recv_from(&mut buf) {
        assert_eq!(Message::decode(&buf[..n]).unwrap().kind, MsgType::Connect);
        connects += 1;
    }
    assert_eq!(connects, 3);
}

#[test]
fn invalid_params_are_rejected_naming_the_field() {
    let cases = [
        (
            Params {
                epoch_millis: 0,
                ..Params::default()
            },
            "epoch_millis",
        ),
        (
            Params {
                window_size: 0,
                ..Params::default()
            },
            "window_size",
        ),
        (
            Params {
                epoch_limit: 0,
                ..Params::default()
            },
            "epoch_limit",
        ),
        (
            Params {
                max_unacked_messages: 0,
                ..Params::default()
            },
            "max_unacked_messages",
        ),
    ];
    for (p, field) in cases {
        match Server::bind("127.0.0.1:0", p) {
            Err(Error::InvalidParams { field: got, .. }) => assert_eq!(got, field),
            other => panic!("{field}: {other:?}"),
        }
        match Client::connect("127.0.0.1:9", p) {
            Err(Error::InvalidParams { field: got, .. }) => assert_eq!(got, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    assert!(matches!(
        Server::builder()
            .max_datagram_size(65508)
            .bind("127.0.0.1:0"),
        Err(Error::InvalidParams {
            field: "max_datagram_size",
            ..
        })
    ));
    // What the Go API accepts is accepted: the window is then the limit.
    let p = Params {
        window_size: 2,
        max_unacked_messages: 3,
        ..Params::default()
    };
    Server::bind("127.0.0.1:0", p).unwrap().close().unwrap();
}

#[test]
fn payload_limits() {
    let p = reference().window(1).max_unacked(1).build();
    for max_datagram in [None, Some(9000), Some(65507)] {
        let mut builder = Server::builder().params(p);
        let mut client_builder = Client::builder().params(p);
        if let Some(size) = max_datagram {
            builder = builder.max_datagram_size(size);
            client_builder = client_builder.max_datagram_size(size);
        }
        let server = builder.bind("127.0.0.1:0").unwrap();
        let client = client_builder
            .connect(server.local_addr().unwrap())
            .unwrap();
        let max = client.max_payload();
        assert_eq!(
            max,
            liveseq::proto::max_payload(max_datagram.unwrap_or(1472))
        );
        let biggest: Vec<u8> = (0..max).map(|i| i as u8).collect();
        client.write(&biggest).unwrap();
        assert_eq!(server.read().unwrap().1, biggest);
        server.write(client.conn_id(), &biggest).unwrap();
        assert_eq!(client.read().unwrap(), biggest);
        let too_big = vec![0u8; max + 1];
        assert!(
            matches!(client.write(&too_big), Err(Error::PayloadTooLarge { len, max: m }) if len == max + 1 && m == max)
        );
        assert!(matches!(
            server.write(client.conn_id(), &too_big),
            Err(Error::PayloadTooLarge { .. })
        ));
        client.write(b"").unwrap();
        assert_eq!(server.read().unwrap().1, b"", "empty messages are messages");
        client.close().unwrap();
        server.close_timeout(Duration::from_secs(2)).ok();
    }
}

/// BasicISN: Connect carries the isn, its Ack echoes it, the first Data on
/// each side is isn + 1, for many random isns.
#[test]
fn isn_progression_on_the_wire() {
    let p = reference().window(1).max_unacked(1).build();
    // The client side, seen by a raw server.
    for isn in [1u32, 255, 70_000, u32::MAX] {
        let mut raw = RawPeer::new();
        let addr = raw.addr();
        let connecting = thread::spawn(move || {
            Client::builder()
                .params(p)
                .initial_seq_num(isn)
                .connect(addr)
                .unwrap()
        });
        assert_eq!(raw.accept(9), u64::from(isn));
        let client = connecting.join().unwrap();
        client.write(b"first").unwrap();
        let data = raw.recv_non_heartbeat();
        assert_eq!(
            (data.kind, data.conn_id, data.seq_num),
            (MsgType::Data, 9, u64::from(isn) + 1)
        );
        raw.send(&Message::ack(9, data.seq_num));
        client.close().unwrap();
    }
    // The server side, seen by a raw client.
    let server = Server::bind("127.0.0.1:0", p).unwrap();
    for isn in [0u64, 1, 4242, u64::from(u32::MAX)] {
        let mut raw = RawPeer::new();
        let id = raw.connect(server.local_addr().unwrap(), isn);
        raw.send(&Message::data(id, isn + 1, b"ping"));
        let (conn, msg) = server.read().unwrap();
        assert_eq!((u32::from(conn), msg), (id, b"ping".to_vec()));
        server.write(conn, b"pong").unwrap();
        let data = loop {
            let m = raw.recv_non_heartbeat();
            if m.kind == MsgType::Data {
                break m;
            }
        };
        assert_eq!(
            (data.conn_id, data.seq_num, &data.payload[..]),
            (id, isn + 1, &b"pong"[..])
        );
    }
    server.close_timeout(Duration::from_millis(100)).ok();
}

#[test]
fn many_clients_with_random_isns_each_write_one_message() {
    let p = reference().window(1).max_unacked(1).build();
    let server = Arc::new(Server::bind("127.0.0.1:0", p).unwrap());
    let addr = server.local_addr().unwrap();
    let clients: Vec<Client> = (0..100)
        .map(|_| Client::connect(addr, p).unwrap())
        .collect();
    for (i, c) in clients.iter().enumerate() {
        c.write(format!("client {i}").as_bytes()).unwrap();
    }
    let mut seen = std::collections::HashMap::new();
    for _ in 0..100 {
        let (id, msg) = server.read().unwrap();
        assert!(seen.insert(id, msg).is_none(), "one message per connection");
    }
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(seen[&c.conn_id()], format!("client {i}").into_bytes());
        c.close().unwrap();
    }
    server.close_timeout(Duration::from_millis(100)).ok();
}
