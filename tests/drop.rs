//! Dropping an open `Server` or `Client` flushes it, like a `BufWriter`:
//! the drop blocks until what was written is acknowledged, or for at most
//! `epoch_limit` epochs, and returns once its threads have stopped and its
//! port is released. One test only: it counts the threads of the whole
//! process, so nothing else may run in this binary.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use common::{payload, poll_until, threads, Heartbeats, RawPeer, TestParams, WAIT};
use liveseq::{Client, ConnId, Server};

fn rebindable(addr: SocketAddr) -> bool {
    UdpSocket::bind(addr).is_ok()
}

/// Waits until the process has `expected` threads.
fn settle_threads(expected: usize, what: &str) {
    poll_until(WAIT, || threads() == expected)
        .unwrap_or_else(|| panic!("{what}: {} threads, expected {expected}", threads()));
}

/// The server's receive threads, set so that its thread count is known.
const RECEIVE_THREADS: usize = 2;

/// What every test here starts from: epochs of 50 ms, window and max
/// unacked 8; each names its epoch limit.
fn base() -> TestParams {
    TestParams::new().epoch_millis(50).window(8).max_unacked(8)
}

#[test]
fn drop_drains_then_releases_threads_and_port() {
    let baseline = threads();

    // Healthy peers: the drop delivers what was written and returns, its
    // port released, long before the drain's deadline (here two seconds).
    let p = base().epoch_limit(40).build();
    let deadline = p.epoch() * p.epoch_limit;
    let server = Server::builder()
        .params(p)
        .receive_threads(RECEIVE_THREADS)
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr().unwrap();

    let client = Client::connect(addr, p).unwrap();
    let (id, client_addr) = (client.conn_id(), client.local_addr().unwrap());
    for i in 0..20 {
        client.write(&payload(5, i, 400)).unwrap();
    }
    let dropped = Instant::now();
    drop(client);
    let took = dropped.elapsed();
    assert!(
        took < deadline,
        "a dropped client took {took:?} against a healthy server"
    );
    assert!(rebindable(client_addr), "the client's port is released");
    for i in 0..20 {
        assert_eq!(server.read().unwrap(), (id, payload(5, i, 400)));
    }
    // The server's receive threads, its epoch thread and its close manager.
    settle_threads(
        baseline + RECEIVE_THREADS + 2,
        "the dropped client's threads",
    );

    let client = Client::connect(addr, p).unwrap();
    let id = client.conn_id();
    for i in 0..20 {
        server.write(id, &payload(6, i, 400)).unwrap();
    }
    let dropped = Instant::now();
    drop(server);
    let took = dropped.elapsed();
    assert!(
        took < deadline,
        "a dropped server took {took:?} against a healthy client"
    );
    assert!(rebindable(addr), "the server's port is released");
    for i in 0..20 {
        assert_eq!(client.read().unwrap(), payload(6, i, 400));
    }
    drop(client);
    settle_threads(baseline, "every thread of the healthy pair");

    // Peers that heartbeat and never acknowledge: the drop blocks, draining,
    // for epoch_limit epochs, then gives up and returns with its port
    // released; within one more epoch (and generous slack for a loaded
    // machine) no thread is left. Two rules end it, whichever comes first:
    // the drop's deadline of epoch_limit epochs, and the close's stall rule
    // (epoch_limit epochs, plus the back-off cap of 0, acknowledging
    // nothing while messages are in flight, counted in epochs of the
    // instance's clock since the writes: the first may tick at once).
    let p = base().epoch_limit(10).build();
    let earliest = p.epoch() * (p.epoch_limit - 1);
    let bound = p.epoch() * (p.epoch_limit + 1) + Duration::from_secs(2);

    let server = Server::bind("127.0.0.1:0", p).unwrap();
    let addr = server.local_addr().unwrap();
    let mut raw = RawPeer::new();
    let raw_id = raw.connect(addr, 77);
    let heartbeats = Heartbeats::start(&raw.socket, addr, raw_id, p.epoch());
    for i in 0..3 {
        server
            .write(ConnId::from(raw_id), &payload(7, i, 400))
            .unwrap();
    }
    let dropped = Instant::now();
    drop(server);
    let took = dropped.elapsed();
    assert!(rebindable(addr), "the server's port is released");
    assert!(
        took >= earliest,
        "released after {took:?}, before epoch_limit epochs"
    );
    assert!(took <= bound, "released after {took:?}");
    settle_threads(
        baseline + 1,
        "the dropped server's threads (the heartbeats remain)",
    );
    assert!(
        dropped.elapsed() <= bound,
        "threads left after {:?}",
        dropped.elapsed()
    );
    heartbeats.stop();
    settle_threads(baseline, "the heartbeats");

    let mut raw = RawPeer::new();
    let raw_addr = raw.addr();
    let connecting = thread::spawn(move || Client::connect(raw_addr, p).unwrap());
    raw.accept(5);
    let client = connecting.join().unwrap();
    let client_addr = client.local_addr().unwrap();
    let heartbeats = Heartbeats::start(&raw.socket, raw.peer.unwrap(), 5, p.epoch());
    for i in 0..3 {
        client.write(&payload(8, i, 400)).unwrap();
    }
    let dropped = Instant::now();
    drop(client);
    let took = dropped.elapsed();
    assert!(rebindable(client_addr), "the client's port is released");
    assert!(
        took >= earliest,
        "released after {took:?}, before epoch_limit epochs"
    );
    assert!(took <= bound, "released after {took:?}");
    settle_threads(
        baseline + 1,
        "the dropped client's threads (the heartbeats remain)",
    );
    assert!(
        dropped.elapsed() <= bound,
        "threads left after {:?}",
        dropped.elapsed()
    );
    heartbeats.stop();
    settle_threads(baseline, "the heartbeats");
}
