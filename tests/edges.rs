//! No panic and no unbounded wait at the edges: settings at their extremes,
//! a close that waits on an instance that failed, and a panic inside the
//! core during a user's call (the `test-hooks` feature's
//! `fail_in_core_for_tests`).

use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use liveseq::proto::{Message, MsgType};
use liveseq::{Client, Error, Listener, Params, Server, ServerEvent};

fn params() -> Params {
    Params {
        epoch_millis: 30,
        epoch_limit: 10,
        ..Params::default()
    }
}

/// How long a call that must return "at once" may take on a loaded
/// machine: far less than anything it could be waiting for.
const PROMPT: Duration = Duration::from_secs(5);

#[test]
fn a_listener_with_the_largest_timings_drops_without_a_panic() {
    let extreme = Params {
        epoch_millis: u64::MAX,
        epoch_limit: u32::MAX,
        ..Params::default()
    };
    let listener = Listener::bind("127.0.0.1:0", extreme).unwrap();
    let (done_tx, done) = mpsc::channel();
    thread::spawn(move || {
        drop(listener);
        let _ = done_tx.send(());
    });
    // Nothing to drain: the drop's deadline (epoch x epoch_limit,
    // saturated) is never needed.
    done.recv_timeout(PROMPT).expect("the drop returned");
}

/// A raw peer that connects and heartbeats but never acknowledges Data.
fn silent_peer(server: SocketAddr) -> (UdpSocket, u32) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(server).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = Vec::new();
    Message::connect(5).encode(&mut buf);
    let mut datagram = [0u8; 2048];
    for _ in 0..50 {
        socket.send(&buf).unwrap();
        if let Ok(n) = socket.recv(&mut datagram) {
            let ack = Message::decode(&datagram[..n]).unwrap();
            assert_eq!((ack.kind, ack.seq_num), (MsgType::Ack, 5));
            let id = ack.conn_id;
            // Prove the address, so that the server sends Data to it.
            buf.clear();
            Message::ack(id, 0).encode(&mut buf);
            socket.send(&buf).unwrap();
            return (socket, id);
        }
    }
    panic!("no Ack from {server}");
}

#[test]
fn connection_close_returns_once_its_listener_failed() {
    let listener = Listener::bind("127.0.0.1:0", params()).unwrap();
    let (_peer, _id) = silent_peer(listener.local_addr().unwrap());
    let conn = listener.accept().unwrap();
    conn.write(b"never acknowledged").unwrap();
    let (result_tx, result) = mpsc::channel();
    let closing = thread::spawn(move || {
        // Waits for the acknowledgement that never comes.
        let _ = result_tx.send(conn.close());
    });
    // The close is waiting (its peer acknowledges nothing); the listener
    // fails under it.
    assert!(result.recv_timeout(Duration::from_millis(100)).is_err());
    listener.fail_for_tests();
    let outcome = result.recv_timeout(PROMPT).expect("close returned");
    assert!(matches!(outcome, Err(Error::Failed(_))), "{outcome:?}");
    closing.join().unwrap();
    assert!(matches!(listener.close(), Err(Error::Failed(_))));
}

#[test]
fn a_panic_in_the_core_during_a_server_write_fails_the_server_not_the_caller() {
    let server = Server::bind("127.0.0.1:0", params()).unwrap();
    let client = Client::connect(server.local_addr().unwrap(), params()).unwrap();
    let id = match server.next_event().unwrap() {
        ServerEvent::Connected { id, .. } => id,
        other => panic!("{other:?}"),
    };
    server.write(id, b"before").unwrap();
    assert_eq!(client.read().unwrap(), b"before");

    // A reader blocked in the server wakes with the failure too.
    let server = std::sync::Arc::new(server);
    let reader = {
        let server = server.clone();
        thread::spawn(move || server.next_event())
    };
    server.fail_in_core_for_tests();
    // The panic happens inside this call, on this thread: it returns the
    // failure instead of unwinding into it.
    let written = server.write(id, b"during");
    assert!(matches!(written, Err(Error::Failed(_))), "{written:?}");
    let read = reader.join().unwrap();
    assert!(matches!(read, Err(Error::Failed(_))), "{read:?}");
    // Every later call says so, and touches nothing.
    assert!(matches!(server.write(id, b"after"), Err(Error::Failed(_))));
    assert!(matches!(server.close_conn(id), Err(Error::Failed(_))));
    assert!(matches!(server.close(), Err(Error::Failed(_))));
}

#[test]
fn a_panic_in_the_core_during_a_client_write_fails_the_client_not_the_caller() {
    let server = Server::bind("127.0.0.1:0", params()).unwrap();
    let client =
        std::sync::Arc::new(Client::connect(server.local_addr().unwrap(), params()).unwrap());
    let reader = {
        let client = client.clone();
        thread::spawn(move || client.read())
    };
    client.fail_in_core_for_tests();
    let written = client.write(b"during");
    assert!(matches!(written, Err(Error::Failed(_))), "{written:?}");
    let read = reader.join().unwrap();
    assert!(matches!(read, Err(Error::Failed(_))), "{read:?}");
    assert!(matches!(client.write(b"after"), Err(Error::Failed(_))));
    assert!(matches!(client.close(), Err(Error::Failed(_))));
    // The server is another instance: untouched.
    assert!(server.close().is_ok());
}

#[test]
fn abort_discards_and_never_waits_for_a_dead_server() {
    // An epoch limit of 10 x 200 ms: a drop would wait up to 2 s to flush.
    let slow = Params {
        epoch_millis: 200,
        epoch_limit: 10,
        ..Params::default()
    };
    let server = Server::bind("127.0.0.1:0", slow).unwrap();
    let client = Client::connect(server.local_addr().unwrap(), slow).unwrap();
    server.close().unwrap();
    for i in 0..3u8 {
        client.write(&[i]).unwrap();
    }
    let start = std::time::Instant::now();
    // Window 1: one in flight, two queued; all three discarded.
    assert_eq!(client.abort().unwrap(), 3);
    assert!(start.elapsed() < slow.epoch(), "{:?}", start.elapsed());
    assert!(matches!(client.read(), Err(Error::Closed)));
    assert!(matches!(client.abort(), Err(Error::Closed)));
}

#[test]
fn messages_yield_in_order_then_the_end_once() {
    let listener = Listener::bind("127.0.0.1:0", params()).unwrap();
    let client = Client::connect(listener.local_addr().unwrap(), params()).unwrap();
    let conn = listener.accept().unwrap();
    for i in 0..10u8 {
        client.write(&[i; 3]).unwrap();
        conn.write(&[i; 5]).unwrap();
    }
    let from_client: Vec<Vec<u8>> = conn.messages().take(10).map(Result::unwrap).collect();
    assert_eq!(
        from_client,
        (0..10u8).map(|i| vec![i; 3]).collect::<Vec<_>>()
    );
    let from_server: Vec<Vec<u8>> = client.messages().take(10).map(Result::unwrap).collect();
    assert_eq!(
        from_server,
        (0..10u8).map(|i| vec![i; 5]).collect::<Vec<_>>()
    );
    // The client goes away: the connection's messages end with its loss,
    // yielded once.
    client.close().unwrap();
    let mut rest = conn.messages();
    assert!(matches!(rest.next(), Some(Err(Error::ConnectionLost(_)))));
    assert!(rest.next().is_none());
    // A closed client's messages simply end.
    assert!(client.messages().next().is_none());
}
