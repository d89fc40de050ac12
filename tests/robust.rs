//! Robustness on a bad network, using each instance's own `Faults`.
//!
//! Reference families: Robust 1-6 (20% write drop both sides), the 3 x 200
//! lossy exchange (20-50% read and write drop on both sides), OutOfOrderMsg
//! (delayed datagrams reorder), VariableLengthMsg (lengthened payloads are
//! truncated back) and CorruptedMsg (shortened or corrupted payloads are
//! dropped; nothing is delivered).

mod common;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{faulty_client, faulty_server, spawn_echo, write_and_check_echoes};
use liveseq::{Client, Error, Faults, Params, Server};

fn lossy(read: u8, write: u8, seed: u64) -> Faults {
    Faults {
        read_drop_percent: read,
        write_drop_percent: write,
        seed: Some(seed),
        ..Faults::default()
    }
}

/// Echo through faulty endpoints; every message must come back exactly
/// once, in order, byte for byte, and closes must drain.
fn echo_through(
    p: Params,
    server_faults: Faults,
    client_faults: Faults,
    clients: usize,
    msgs: usize,
) {
    let server = faulty_server(p, server_faults);
    let addr = server.local_addr().unwrap();
    let echo = spawn_echo(server.clone());
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let faults = Faults {
                seed: client_faults.seed.map(|s| s + c as u64),
                ..client_faults
            };
            thread::spawn(move || {
                let client = Arc::new(faulty_client(addr, p, faults));
                write_and_check_echoes(&client, c, msgs, 600);
                client.close().unwrap();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    server.close_timeout(Duration::from_secs(5)).ok();
    echo.join().unwrap();
}

fn robust_params(window: u32) -> Params {
    Params {
        epoch_limit: 20,
        epoch_millis: 50,
        window_size: window,
        max_unacked_messages: window,
        max_backoff_interval: 0,
    }
}

#[test]
fn robust_write_drop_both_sides() {
    for (clients, msgs, window, seed) in [
        (1, 10, 1, 1),
        (3, 15, 1, 2),
        (5, 10, 1, 3),
        (1, 10, 2, 4),
        (3, 15, 5, 5),
        (5, 10, 10, 6),
    ] {
        let p = robust_params(window);
        echo_through(
            p,
            lossy(0, 20, seed),
            lossy(0, 20, seed * 100),
            clients,
            msgs,
        );
    }
}

#[test]
fn heavy_loss_three_clients_two_hundred_messages_each_way() {
    let p = Params {
        epoch_limit: 40,
        epoch_millis: 20,
        window_size: 8,
        max_unacked_messages: 8,
        max_backoff_interval: 1,
    };
    echo_through(p, lossy(20, 30, 11), lossy(30, 20, 22), 3, 200);
}

#[test]
fn half_of_everything_lost() {
    let p = Params {
        epoch_limit: 60,
        epoch_millis: 20,
        window_size: 4,
        max_unacked_messages: 4,
        max_backoff_interval: 0,
    };
    echo_through(p, lossy(25, 25, 7), lossy(25, 25, 8), 2, 60);
}

#[test]
fn delayed_datagrams_are_delivered_in_order() {
    let p = Params {
        epoch_limit: 30,
        epoch_millis: 50,
        window_size: 30,
        max_unacked_messages: 30,
        max_backoff_interval: 0,
    };
    let delayed = |seed| Faults {
        delay_percent: 50,
        seed: Some(seed),
        ..Faults::default()
    };
    echo_through(p, delayed(1), delayed(2), 5, 25);
}

#[test]
fn duplicated_and_reordered_datagrams() {
    let p = robust_params(16);
    let messy = |seed| Faults {
        duplicate_percent: 30,
        reorder_percent: 30,
        write_drop_percent: 10,
        seed: Some(seed),
        ..Faults::default()
    };
    echo_through(p, messy(3), messy(4), 3, 100);
}

#[test]
fn lengthened_payloads_are_truncated_back() {
    let p = robust_params(4);
    let longer = |seed| Faults {
        lengthen_percent: 100,
        seed: Some(seed),
        ..Faults::default()
    };
    echo_through(p, longer(1), longer(2), 2, 50);
}

/// With every Data payload shortened (or corrupted) by the sender, the
/// receiver drops all of it: nothing is delivered, nothing acknowledged.
fn nothing_gets_through(faults: Faults) {
    let p = Params {
        epoch_limit: 100,
        epoch_millis: 20,
        ..Params::default()
    };
    // Client to server.
    let server = Server::bind("127.0.0.1:0", p).unwrap();
    let client = faulty_client(server.local_addr().unwrap(), p, faults);
    client.write(b"some payload").unwrap();
    assert!(matches!(
        server.read_timeout(Duration::from_millis(300)),
        Err(Error::Timeout)
    ));
    let stats = server.stats(client.conn_id()).unwrap();
    assert_eq!(stats.messages_received, 0);
    assert!(
        stats.corrupt_received >= 5,
        "every retransmission dropped: {stats:?}"
    );
    assert_eq!(client.stats().unacked, 1, "never acknowledged");
    // A short close deadline, not a drop: a drop would flush, waiting out the
    // stall rule for an acknowledgement that cannot come.
    assert!(matches!(
        client.close_timeout(Duration::from_millis(50)),
        Err(Error::CloseTimedOut { unacked: 1 })
    ));
    server.close_timeout(Duration::from_millis(50)).ok();

    // Server to client.
    let server = faulty_server(p, faults);
    let client = Client::connect(server.local_addr().unwrap(), p).unwrap();
    server.write(client.conn_id(), b"some payload").unwrap();
    assert!(matches!(
        client.read_timeout(Duration::from_millis(300)),
        Err(Error::Timeout)
    ));
    assert!(client.stats().corrupt_received >= 5);
    client.close_timeout(Duration::from_millis(50)).ok();
    server.close_timeout(Duration::from_millis(50)).ok();
}

#[test]
fn shortened_payloads_are_dropped() {
    nothing_gets_through(Faults {
        shorten_percent: 100,
        seed: Some(1),
        ..Faults::default()
    });
}

#[test]
fn corrupted_payloads_are_dropped() {
    nothing_gets_through(Faults {
        corrupt_percent: 100,
        seed: Some(2),
        ..Faults::default()
    });
}
