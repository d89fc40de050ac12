//! Concurrency stress: many threads call read, write, close_conn and close
//! on a busy server at once, over and over. No deadlock (a watchdog bounds
//! every iteration), no panic, no leaked thread, and every call either
//! succeeds or fails with an error its documentation allows at that moment;
//! what arrives was written, at most once, in order per reader. One test
//! only: it counts the process's threads.

mod common;

use common::{faulty_server, threads, threads_settled_at};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use liveseq::{Client, ConnId, Error, Faults, Params};

const CLIENTS: usize = 4;
const CLIENT_WRITES: u8 = 50;
const PUSHES_PER_WRITER: usize = 100;

/// Client message `i`: 64 bytes of `i`, so that any mix-up shows.
fn message(i: u8) -> [u8; 64] {
    [i; 64]
}

/// Which `i` a 64-byte message of [`message`] carries.
fn index_of(msg: &[u8]) -> u8 {
    assert_eq!(msg.len(), 64, "{msg:?}");
    assert!(msg.iter().all(|&b| b == msg[0]), "{msg:?}");
    assert!(msg[0] < CLIENT_WRITES, "{msg:?}");
    msg[0]
}

/// What one client saw.
#[derive(Default)]
struct ClientLog {
    /// The messages whose `write` returned Ok.
    written: BTreeSet<u8>,
    /// Echoes read, in order.
    echoes: Vec<u8>,
    /// `b"push"` messages read.
    pushes: usize,
}

/// What the server's threads saw, per connection.
#[derive(Default)]
struct ServerLog {
    /// Per reader thread, per connection: the messages read, in order.
    read: Vec<BTreeMap<ConnId, Vec<u8>>>,
    /// Echoes whose `write` returned Ok, per connection.
    echoed: BTreeMap<ConnId, BTreeSet<u8>>,
    /// Pushes whose `write` returned Ok, per connection.
    pushed: BTreeMap<ConnId, usize>,
    /// `ConnectionClosed(id)` read, per connection.
    closed_read: BTreeMap<ConnId, usize>,
    /// The connections `close_conn` closed (it returned Ok).
    closed: BTreeSet<ConnId>,
    /// Set just before the server's close: from then on every connection is
    /// closing, and writes to it fail with `ConnectionClosed`.
    closing: bool,
}

/// A server `write` to `id` may fail only because the connection or the
/// server ended: closing or closed, by `close_conn` or by the server's close
/// (`ConnectionClosed`, or `UnknownConnection` once forgotten), lost (a
/// process starved of the CPU for `epoch_limit` epochs may look silent), or
/// the server closed.
fn assert_server_write(result: Result<(), Error>, id: ConnId, log: &Mutex<ServerLog>) -> bool {
    match &result {
        Ok(()) => true,
        Err(Error::ConnectionClosed(i) | Error::UnknownConnection(i)) => {
            let i = *i;
            assert_eq!(i, id);
            let log = log.lock().unwrap();
            assert!(
                log.closing || log.closed.contains(&id),
                "{id} was not closed: {result:?}"
            );
            false
        }
        Err(Error::ConnectionLost(i)) => {
            assert_eq!(*i, id);
            false
        }
        Err(Error::Closed) => false,
        Err(other) => panic!("server write to {id}: {other:?}"),
    }
}

fn one_iteration(seed: u64) {
    let p = Params {
        epoch_limit: 10,
        epoch_millis: 10,
        window_size: 8,
        max_unacked_messages: 8,
        max_backoff_interval: 0,
    };
    let faults = Faults {
        write_drop_percent: 10,
        seed: Some(seed),
        ..Faults::default()
    };
    let server = faulty_server(p, faults);
    let addr = server.local_addr().unwrap();
    let clients: Vec<Arc<Client>> = (0..CLIENTS)
        .map(|_| Arc::new(Client::connect(addr, p).unwrap()))
        .collect();
    let ids: Vec<ConnId> = clients.iter().map(|c| c.conn_id()).collect();
    let server_log = Arc::new(Mutex::new(ServerLog {
        read: vec![BTreeMap::new(); 2],
        ..ServerLog::default()
    }));
    let mut client_workers = Vec::new();
    let mut server_workers = Vec::new();
    // Clients write and read. A write fails only once the connection is
    // lost (the server closed) or the client is closed; a read may also time
    // out, and gets only echoes and pushes.
    for client in &clients {
        let client = client.clone();
        client_workers.push(thread::spawn(move || {
            let mut log = ClientLog::default();
            let read = |log: &mut ClientLog| match client.read_timeout(Duration::from_millis(1)) {
                Ok(msg) if msg == b"push" => log.pushes += 1,
                Ok(msg) => log.echoes.push(index_of(&msg)),
                Err(Error::Timeout | Error::ConnectionLost(_) | Error::Closed) => {}
                Err(other) => panic!("client read: {other:?}"),
            };
            for i in 0..CLIENT_WRITES {
                match client.write(&message(i)) {
                    Ok(()) => {
                        log.written.insert(i);
                    }
                    Err(Error::ConnectionLost(_) | Error::Closed) => break,
                    Err(other) => panic!("client write {i}: {other:?}"),
                }
                if i % 8 == 0 {
                    read(&mut log);
                }
            }
            log
        }));
    }
    // Two server readers echo; two writers push; one closer closes connections.
    // The readers say when the traffic has started: a first message read.
    let (started_tx, started_rx) = crossbeam_channel::bounded::<()>(1);
    for reader in 0..2 {
        let (server, log, started) = (server.clone(), server_log.clone(), started_tx.clone());
        server_workers.push(thread::spawn(move || loop {
            match server.read() {
                Ok((id, msg)) => {
                    let _ = started.try_send(());
                    let i = index_of(&msg);
                    log.lock().unwrap().read[reader]
                        .entry(id)
                        .or_default()
                        .push(i);
                    if assert_server_write(server.write(id, &msg), id, &log) {
                        let mut log = log.lock().unwrap();
                        assert!(
                            log.echoed.entry(id).or_default().insert(i),
                            "{id} echo {i} twice"
                        );
                    }
                }
                Err(Error::ConnectionClosed(id)) => {
                    *log.lock().unwrap().closed_read.entry(id).or_default() += 1;
                }
                Err(Error::ConnectionLost(_)) => {}
                Err(Error::Closed) => return,
                Err(other) => panic!("server read: {other:?}"),
            }
        }));
    }
    for w in 0..2 {
        let (server, ids, log) = (server.clone(), ids.clone(), server_log.clone());
        server_workers.push(thread::spawn(move || {
            for i in 0..PUSHES_PER_WRITER {
                let id = ids[(i + w) % ids.len()];
                if assert_server_write(server.write(id, b"push"), id, &log) {
                    *log.lock().unwrap().pushed.entry(id).or_default() += 1;
                }
            }
        }));
    }
    {
        let (server, ids, log) = (server.clone(), ids.clone(), server_log.clone());
        server_workers.push(thread::spawn(move || {
            for &id in ids.iter().step_by(2) {
                // Noted before the call: a reader may see the close at once.
                log.lock().unwrap().closed.insert(id);
                match server.close_conn(id) {
                    Ok(()) => {}
                    // The server closed, or the connection was lost (a
                    // starved process) and forgotten: nothing closed.
                    Err(Error::Closed) | Err(Error::UnknownConnection(_)) => {
                        log.lock().unwrap().closed.remove(&id);
                    }
                    Err(other) => panic!("close_conn({id}): {other:?}"),
                }
            }
        }));
    }
    // Close while all of it is going on.
    started_rx
        .recv_timeout(common::WAIT)
        .expect("the server reads a first message");
    // Every client is alive until the server's close returns: it drains.
    server_log.lock().unwrap().closing = true;
    server.close_timeout(Duration::from_secs(2)).unwrap();
    for w in server_workers {
        w.join().expect("no panic");
    }
    // The server is gone: a client drains what it can and ends one way or another.
    for c in &clients {
        match c.close_timeout(Duration::from_secs(2)) {
            Ok(()) | Err(Error::ConnectionLost(_) | Error::CloseTimedOut { .. }) => {}
            Err(other) => panic!("client close: {other:?}"),
        }
    }
    let client_logs: Vec<ClientLog> = client_workers
        .into_iter()
        .map(|w| w.join().expect("no panic"))
        .collect();

    let server_log = server_log.lock().unwrap();
    for (id, n) in &server_log.closed_read {
        assert!(
            server_log.closed.contains(id),
            "ConnectionClosed({id}) read, never closed"
        );
        assert_eq!(*n, 1, "ConnectionClosed({id}) read {n} times");
    }
    for (c, (id, log)) in ids.iter().zip(&client_logs).enumerate() {
        // What the server read from this client: written, at most once, in
        // order within each reader.
        let mut read_by_server = BTreeSet::new();
        for reader in &server_log.read {
            let got = reader.get(id).map_or(&[][..], Vec::as_slice);
            assert!(got.windows(2).all(|w| w[0] < w[1]), "client {c}: {got:?}");
            for i in got {
                assert!(read_by_server.insert(*i), "client {c}: {i} read twice");
            }
        }
        assert!(
            read_by_server.is_subset(&log.written),
            "client {c}: read {read_by_server:?}, written {:?}",
            log.written
        );
        // What came back: echoed by the server, at most once, in the order
        // the server wrote it (one stream per connection).
        let echoed = server_log.echoed.get(id).cloned().unwrap_or_default();
        let echoes: BTreeSet<u8> = log.echoes.iter().copied().collect();
        assert_eq!(echoes.len(), log.echoes.len(), "client {c}: an echo twice");
        assert!(
            echoes.is_subset(&echoed),
            "client {c}: {echoes:?} not all echoed ({echoed:?})"
        );
        let pushed = server_log.pushed.get(id).copied().unwrap_or(0);
        assert!(
            log.pushes <= pushed,
            "client {c}: {} pushes read, {pushed} written",
            log.pushes
        );
        assert!(pushed <= 2 * PUSHES_PER_WRITER / CLIENTS);
    }
}

#[test]
fn concurrent_read_write_close_conn_and_close() {
    let baseline = threads();
    for i in 0..25u64 {
        // A watchdog: a deadlock fails the test instead of hanging CI.
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let worker = thread::spawn(move || {
            one_iteration(i);
            let _ = done_tx.send(());
        });
        assert!(
            done_rx.recv_timeout(Duration::from_secs(20)).is_ok(),
            "iteration {i} deadlocked"
        );
        worker.join().unwrap();
        assert_eq!(
            threads_settled_at(baseline),
            baseline,
            "iteration {i} left threads behind"
        );
    }
}
