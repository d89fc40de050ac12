//! A panic in a library thread fails the instance instead of vanishing:
//! blocked callers wake with `Error::Failed`, every later call returns it,
//! and the instance closes itself, leaving no thread and no bound port. One
//! test only: it counts the threads of the whole process, so nothing else
//! may run in this binary.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::thread;

use common::{poll_until, threads, Heartbeats, RawPeer, TestParams, WAIT};
use crossbeam_channel::Receiver;
use liveseq::{Client, ConnId, Error, Server};

/// Runs `f` in a thread and returns once that thread is about to call it;
/// the result arrives on the receiver.
fn spawn_call<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Receiver<T> {
    let (started_tx, started_rx) = crossbeam_channel::bounded(0);
    let (result_tx, result_rx) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        let _ = started_tx.send(());
        let _ = result_tx.send(f());
    });
    started_rx.recv().unwrap();
    result_rx
}

/// The error is `Failed`, and says that a thread panicked.
fn assert_failed<T: std::fmt::Debug>(result: Result<T, Error>, what: &str) {
    match result {
        Err(Error::Failed(why)) => assert!(why.contains("panicked"), "{what}: {why}"),
        other => panic!("{what}: {other:?}"),
    }
}

fn settle_threads(expected: usize, what: &str) {
    poll_until(WAIT, || threads() == expected)
        .unwrap_or_else(|| panic!("{what}: {} threads, expected {expected}", threads()));
}

fn rebindable(addr: SocketAddr) -> bool {
    UdpSocket::bind(addr).is_ok()
}

#[test]
fn a_panicking_thread_fails_the_instance_and_leaves_nothing_behind() {
    let baseline = threads();
    let p = TestParams::new()
        .epoch_millis(30)
        .epoch_limit(1000)
        .window(4)
        .max_unacked(4)
        .build();

    // A server with a reader blocked in `read` (its raw client sends no
    // Data) and a writer waiting for room in a full send buffer in
    // `write_timeout` (nothing is acked; `write` would queue and return).
    let server = Arc::new(
        Server::builder()
            .params(p)
            .send_buffer(2, 1 << 20)
            .bind("127.0.0.1:0")
            .unwrap(),
    );
    let addr = server.local_addr().unwrap();
    let mut raw = RawPeer::new();
    let id = raw.connect(addr, 10);
    let conn = ConnId::from(id);
    let heartbeats = Heartbeats::start(&raw.socket, addr, id, p.epoch());
    server.try_write(conn, b"one").unwrap();
    server.try_write(conn, b"two").unwrap();
    assert!(matches!(
        server.try_write(conn, b"three"),
        Err(Error::BufferFull)
    ));
    let reader = {
        let server = server.clone();
        spawn_call(move || server.read())
    };
    let writer = {
        let server = server.clone();
        spawn_call(move || server.write_timeout(conn, b"three", WAIT))
    };
    // Two epochs of retransmissions pass; both calls still wait.
    raw.gather(p.epoch() * 2, None);
    assert!(reader.try_recv().is_err() && writer.try_recv().is_err());
    server.fail_for_tests();
    assert_failed(reader.recv_timeout(WAIT).unwrap(), "blocked server read");
    assert_failed(writer.recv_timeout(WAIT).unwrap(), "waiting server write");
    assert_failed(server.read(), "server read");
    assert_failed(server.next_event(), "server next_event");
    assert_failed(server.write(conn, b"x"), "server write");
    assert_failed(server.try_write(conn, b"x"), "server try_write");
    assert_failed(
        server.write_timeout(conn, b"x", WAIT),
        "server write_timeout",
    );
    // The instance closed itself: no thread of it is left (the heartbeats'
    // remains), and its port is free, before anyone calls close.
    settle_threads(baseline + 1, "after the server failed");
    assert!(rebindable(addr), "the failed server's port is released");
    assert_failed(server.close(), "server close");
    assert_failed(server.close(), "second server close");
    drop(server);
    heartbeats.stop();
    settle_threads(baseline, "after the server");

    // The same for a client of a raw server that heartbeats and acks nothing.
    let mut raw = RawPeer::new();
    let raw_addr = raw.addr();
    let connecting = thread::spawn(move || {
        Client::builder()
            .params(p)
            .send_buffer(2, 1 << 20)
            .connect(raw_addr)
            .unwrap()
    });
    raw.accept(3);
    let client = Arc::new(connecting.join().unwrap());
    let client_addr = client.local_addr().unwrap();
    let heartbeats = Heartbeats::start(&raw.socket, raw.peer.unwrap(), 3, p.epoch());
    client.try_write(b"one").unwrap();
    client.try_write(b"two").unwrap();
    assert!(matches!(client.try_write(b"three"), Err(Error::BufferFull)));
    let reader = {
        let client = client.clone();
        spawn_call(move || client.read())
    };
    let writer = {
        let client = client.clone();
        spawn_call(move || client.write(b"three"))
    };
    raw.gather(p.epoch() * 2, None);
    assert!(reader.try_recv().is_err() && writer.try_recv().is_err());
    client.fail_for_tests();
    assert_failed(reader.recv_timeout(WAIT).unwrap(), "blocked client read");
    assert_failed(writer.recv_timeout(WAIT).unwrap(), "blocked client write");
    assert_failed(client.read(), "client read");
    assert_failed(client.write(b"x"), "client write");
    assert_failed(client.try_write(b"x"), "client try_write");
    settle_threads(baseline + 1, "after the client failed");
    assert!(
        rebindable(client_addr),
        "the failed client's port is released"
    );
    assert_failed(client.close(), "client close");
    drop(client);
    heartbeats.stop();
    settle_threads(baseline, "after the client");
}
