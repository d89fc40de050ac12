//! No thread outlives `close()`, and `close()` releases the socket. One test
//! only: it counts every thread of the process, so nothing else may run in
//! this binary at the same time.

mod common;

use common::{threads, threads_settled_at};

use std::net::UdpSocket;
use std::thread;
use std::time::Duration;

use liveseq::{Client, Error, Faults, Params, Server};

/// The server's receive threads; with its epoch thread and close manager,
/// its threads. A client has three.
const RECEIVE_THREADS: usize = 3;
const SERVER_THREADS: usize = RECEIVE_THREADS + 2;

#[test]
fn close_joins_every_thread_and_releases_the_socket() {
    let baseline = threads();
    let p = Params {
        epoch_millis: 20,
        epoch_limit: 500, // no loss is declared while a reader waits for close
        window_size: 4,
        max_unacked_messages: 4,
        ..Params::default()
    };
    let faults = |seed| Faults {
        read_drop_percent: 20,
        write_drop_percent: 20,
        seed: Some(seed),
        ..Faults::default()
    };
    for round in 0..3u64 {
        let server = std::sync::Arc::new(
            Server::builder()
                .params(p)
                .faults(faults(round))
                .receive_threads(RECEIVE_THREADS)
                .bind("127.0.0.1:0")
                .unwrap(),
        );
        let addr = server.local_addr().unwrap();
        let clients: Vec<Client> = (0..4)
            .map(|c| {
                Client::builder()
                    .params(p)
                    .faults(faults(round * 10 + c))
                    .connect(addr)
                    .unwrap()
            })
            .collect();
        assert_eq!(
            threads(),
            baseline + SERVER_THREADS + 3 * 4,
            "a fixed number of threads per instance, whatever the client count"
        );
        for (i, c) in clients.iter().enumerate() {
            for j in 0..20u8 {
                c.write(&[i as u8, j]).unwrap();
            }
        }
        for _ in 0..80 {
            server.read().unwrap();
        }
        // Nothing more will come: a reader in another thread blocks until close wakes it.
        let blocked = {
            let server = server.clone();
            thread::spawn(move || server.read())
        };
        for c in &clients {
            c.close().unwrap();
        }
        drop(clients);
        assert_eq!(
            threads_settled_at(baseline + SERVER_THREADS + 1),
            baseline + SERVER_THREADS + 1,
            "the clients' threads are gone (the server and the reader remain)"
        );
        server.close().unwrap();
        assert!(matches!(blocked.join().unwrap(), Err(Error::Closed)));
        assert_eq!(
            threads_settled_at(baseline),
            baseline,
            "round {round}: no thread outlives close"
        );
        // The port is free again.
        UdpSocket::bind(addr).unwrap();
    }
    // A server dropped without close finishes in the background.
    let server = Server::bind("127.0.0.1:0", p).unwrap();
    drop(server);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while threads() > baseline && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5)); // no handle is left to wait on: poll the count
    }
    assert_eq!(
        threads(),
        baseline,
        "a dropped server's threads exit on their own"
    );
}
