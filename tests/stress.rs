//! Concurrency stress: many threads call read, write, close_conn and close
//! on a busy server at once, over and over. No deadlock (a watchdog bounds
//! every iteration), no panic, no leaked thread. One test only: it counts the
//! process's threads.

mod common;

use common::{threads, threads_settled_at};

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use liveseq::{Client, ConnId, Error, Faults, Params, Server};

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
    let server = Arc::new(
        Server::builder()
            .params(p)
            .faults(faults)
            .bind("127.0.0.1:0")
            .unwrap(),
    );
    let addr = server.local_addr().unwrap();
    let clients: Vec<Arc<Client>> = (0..4)
        .map(|_| Arc::new(Client::connect(addr, p).unwrap()))
        .collect();
    let ids: Vec<ConnId> = clients.iter().map(|c| c.conn_id()).collect();
    let mut workers = Vec::new();
    // Clients write and read.
    for client in &clients {
        let client = client.clone();
        workers.push(thread::spawn(move || {
            for i in 0..50u8 {
                if client.write(&[i; 64]).is_err() {
                    break;
                }
                if i % 8 == 0 {
                    let _ = client.read_timeout(Duration::from_millis(1));
                }
            }
        }));
    }
    // Two server readers echo; two writers push; one closer closes connections.
    for _ in 0..2 {
        let server = server.clone();
        workers.push(thread::spawn(move || loop {
            match server.read() {
                Ok((id, msg)) => {
                    let _ = server.write(id, &msg);
                }
                Err(Error::Closed) => return,
                Err(_) => {}
            }
        }));
    }
    for w in 0..2 {
        let (server, ids) = (server.clone(), ids.clone());
        workers.push(thread::spawn(move || {
            for i in 0..100usize {
                let _ = server.write(ids[(i + w) % ids.len()], b"push");
            }
        }));
    }
    {
        let (server, ids) = (server.clone(), ids.clone());
        workers.push(thread::spawn(move || {
            for id in ids.iter().step_by(2) {
                let _ = server.close_conn(*id);
            }
        }));
    }
    // Close while all of it is going on.
    thread::sleep(Duration::from_millis(5)); // let the traffic start
    let _ = server.close_timeout(Duration::from_secs(2));
    for c in &clients {
        let _ = c.close_timeout(Duration::from_secs(2));
    }
    for w in workers {
        w.join().expect("no panic");
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
