//! `Listener` and `Connection`: a thread-per-connection server in the manner
//! of `TcpListener`, each thread reading only its own peer.

mod common;

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{poll_until, TestParams, WAIT};
use liveseq::proto::{Message, MsgType};
use liveseq::{Client, ConnId, Error, Listener, Params};

fn test_params() -> Params {
    TestParams::new()
        .epoch_millis(50)
        .epoch_limit(10)
        .window(8)
        .max_unacked(8)
        .build()
}

/// What one connection's thread saw: its messages, and how it ended.
type Seen = (Vec<Vec<u8>>, String);

/// A thread per accepted connection, echoing and recording; returns the
/// record of each connection once the listener is closed.
fn serve(listener: Arc<Listener>) -> thread::JoinHandle<BTreeMap<ConnId, Seen>> {
    thread::spawn(move || {
        let mut threads = Vec::new();
        for conn in listener.incoming() {
            let conn = conn.unwrap();
            threads.push(thread::spawn(move || {
                let mut got = Vec::new();
                let end = loop {
                    match conn.read() {
                        Ok(msg) => {
                            // Waits for room in this connection's buffer only.
                            if let Err(err) = conn.write(&msg) {
                                break format!("write: {err}");
                            }
                            got.push(msg);
                        }
                        Err(err) => break err.to_string(),
                    }
                };
                (conn.id(), (got, end))
            }));
        }
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    })
}

fn tagged(tag: &str, i: usize) -> Vec<u8> {
    format!("{tag} {i}").into_bytes()
}

#[test]
fn a_thread_per_connection_with_a_slow_a_killed_and_a_closing_client() {
    let params = test_params();
    let listener = Arc::new(Listener::bind("127.0.0.1:0", params).unwrap());
    let addr = listener.local_addr().unwrap();
    let server = serve(listener.clone());

    // A slow client: reads each echo long after writing the next ones.
    let slow = thread::spawn(move || {
        let client = Client::connect(addr, params).unwrap();
        for i in 0..100 {
            client.write(&tagged("slow", i)).unwrap();
        }
        for i in 0..100 {
            thread::sleep(Duration::from_millis(2)); // the slowness under test
            assert_eq!(client.read_timeout(WAIT).unwrap(), tagged("slow", i));
        }
        let id = client.conn_id();
        client.close().unwrap();
        id
    });
    // A closing client: writes, reads its echoes, closes.
    let closing = thread::spawn(move || {
        let client = Client::connect(addr, params).unwrap();
        for i in 0..300 {
            client.write(&tagged("closing", i)).unwrap();
            assert_eq!(client.read_timeout(WAIT).unwrap(), tagged("closing", i));
        }
        let id = client.conn_id();
        client.close().unwrap();
        id
    });
    // A killed client: connects, sends three messages, and is gone.
    let killed = {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(WAIT)).unwrap();
        let send = |m: Message<'_>| {
            let mut buf = Vec::new();
            m.encode(&mut buf);
            socket.send_to(&buf, addr).unwrap();
        };
        send(Message::connect(10));
        let mut buf = [0u8; 2048];
        let id = loop {
            let (n, _) = socket.recv_from(&mut buf).unwrap();
            let m = Message::decode(&buf[..n]).unwrap();
            if m.kind == MsgType::Ack && m.seq_num == 10 {
                break m.conn_id;
            }
        };
        for i in 0..3 {
            send(Message::data(id, 11 + i as u64, &tagged("killed", i)));
        }
        // Until all three are acknowledged, then silence.
        let mut acked = 10;
        while acked < 13 {
            let (n, _) = socket.recv_from(&mut buf).unwrap();
            let m = Message::decode(&buf[..n]).unwrap();
            if matches!(m.kind, MsgType::Ack | MsgType::CAck) && m.seq_num > acked {
                acked = m.seq_num;
            }
        }
        ConnId::from(id)
    };
    let (slow, closing) = (slow.join().unwrap(), closing.join().unwrap());
    // Every connection ends Lost (LSP has no close message), one by one.
    poll_until(WAIT * 2, || listener.totals().lost == 3).expect("three connections lost");
    listener.close().unwrap();
    let seen = server.join().unwrap();

    let expect = |id: ConnId, tag: &str, n: usize| {
        let (got, end) = &seen[&id];
        let want: Vec<Vec<u8>> = (0..n).map(|i| tagged(tag, i)).collect();
        assert_eq!(
            got, &want,
            "connection {id} ({tag}) read only its own peer, in order"
        );
        assert_eq!(end, &Error::ConnectionLost(id).to_string());
    };
    assert_eq!(seen.len(), 3);
    expect(slow, "slow", 100);
    expect(closing, "closing", 300);
    expect(killed, "killed", 3);
}

/// Messages sent before `accept` returned the connection wait for it.
#[test]
fn messages_before_accept_reach_the_connection() {
    let params = test_params();
    let listener = Listener::bind("127.0.0.1:0", params).unwrap();
    let client = Client::connect(listener.local_addr().unwrap(), params).unwrap();
    for i in 0..20 {
        client.write(&tagged("early", i)).unwrap();
    }
    // All acknowledged (so all arrived) before anyone accepted.
    poll_until(WAIT, || {
        client.stats().unacked == 0 && client.stats().queued == 0
    })
    .expect("acknowledged");
    let conn = listener.accept_timeout(WAIT).unwrap();
    assert_eq!(conn.id(), client.conn_id());
    assert_eq!(conn.peer_addr().port(), client.local_addr().unwrap().port());
    for i in 0..20 {
        assert_eq!(conn.read_timeout(WAIT).unwrap(), tagged("early", i));
    }
    assert_eq!(conn.try_read().unwrap(), None);
    conn.write(b"late reply").unwrap();
    assert_eq!(client.read_timeout(WAIT).unwrap(), b"late reply");
}

/// Closing the listener closes every connection; their handles then
/// return `Closed`, and `incoming` ends.
#[test]
fn closing_the_listener_closes_every_connection() {
    let params = test_params();
    let listener = Listener::bind("127.0.0.1:0", params).unwrap();
    let client = Client::connect(listener.local_addr().unwrap(), params).unwrap();
    let conn = listener.accept_timeout(WAIT).unwrap();
    conn.write(b"bye").unwrap();
    let reader = {
        let conn = Arc::new(conn);
        let for_thread = conn.clone();
        (thread::spawn(move || for_thread.read()), conn)
    };
    listener.close().unwrap(); // drains: "bye" was acknowledged first
    assert_eq!(client.read_timeout(WAIT).unwrap(), b"bye");
    assert!(matches!(reader.0.join().unwrap(), Err(Error::Closed)));
    assert!(matches!(reader.1.read(), Err(Error::Closed)));
    assert!(reader.1.write(b"x").is_err());
    assert!(listener.incoming().next().is_none());
    assert!(matches!(listener.accept(), Err(Error::Closed)));
}

/// `Connection::close` waits until what was written is acknowledged;
/// dropping one closes it without waiting.
#[test]
fn close_and_drop_of_a_connection() {
    let params = test_params();
    let listener = Listener::bind("127.0.0.1:0", params).unwrap();
    let addr = listener.local_addr().unwrap();
    let a = Client::connect(addr, params).unwrap();
    let b = Client::connect(addr, params).unwrap();
    let first = listener.accept_timeout(WAIT).unwrap();
    let second = listener.accept_timeout(WAIT).unwrap();
    let (conn_a, conn_b) = if first.id() == a.conn_id() {
        (first, second)
    } else {
        (second, first)
    };
    for i in 0..50 {
        conn_a.write(&tagged("a", i)).unwrap();
    }
    conn_a.close().unwrap();
    assert_eq!(conn_a.stats(), None, "gone once drained");
    for i in 0..50 {
        assert_eq!(a.read_timeout(WAIT).unwrap(), tagged("a", i));
    }
    assert!(matches!(conn_a.read(), Err(Error::ConnectionClosed(id)) if id == a.conn_id()));
    assert!(matches!(
        conn_a.write(b"x"),
        Err(Error::ConnectionClosed(_))
    ));

    conn_b.write(b"last").unwrap();
    drop(conn_b);
    assert_eq!(b.read_timeout(WAIT).unwrap(), b"last");
    poll_until(WAIT, || listener.totals().closed == 2).expect("both closed");
}
