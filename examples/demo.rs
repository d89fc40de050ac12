//! The newcomer's tour: a server and several clients in one process, talking
//! over loopback through a network that loses 20% of datagrams each way.
//!
//! ```text
//! cargo run --release --example demo
//! ```
//!
//! Every client sends a few hundred messages of varying sizes, the server
//! echoes each one, and the client checks every echo byte for byte and in
//! order. The summary shows what the loss cost (retransmissions) and that
//! nothing was lost, duplicated or reordered anyway. Exits non-zero on any
//! mismatch.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use liveseq::{Client, Error, Faults, Params, Server};

const CLIENTS: usize = 4;
const MESSAGES: usize = 750;
const LOSS: u8 = 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    // Short epochs and no back-off: with this much loss, recovery is paced by
    // the retransmission timer, so a fast timer keeps the demo quick.
    let params = Params {
        epoch_millis: 10,
        epoch_limit: 100,
        window_size: 16,
        max_unacked_messages: 16,
        max_backoff_interval: 0,
    };
    let lossy = |seed| Faults {
        read_drop_percent: LOSS,
        write_drop_percent: LOSS,
        seed: Some(seed),
        ..Faults::default()
    };

    let server = Arc::new(
        Server::builder()
            .params(params)
            .faults(lossy(0))
            .bind("127.0.0.1:0")?,
    );
    let addr = server.local_addr()?;
    println!("server on {addr}; {CLIENTS} clients x {MESSAGES} messages, {LOSS}% loss each way on both sides");

    // The echo loop: each message goes back to its sender.
    let echo = {
        let server = server.clone();
        thread::spawn(move || loop {
            match server.read() {
                Ok((id, msg)) => {
                    if let Err(err) = server.write(id, &msg) {
                        eprintln!("echo to {id} failed: {err}");
                    }
                }
                Err(Error::ConnectionLost(_) | Error::ConnectionClosed(_)) => {}
                Err(_) => return,
            }
        })
    };

    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            thread::spawn(move || -> Result<(u64, liveseq::ConnStats), String> {
                let client = Client::builder()
                    .params(params)
                    .faults(lossy(n as u64 + 1))
                    .connect(addr)
                    .map_err(|e| format!("client {n}: connect: {e}"))?;
                let client = Arc::new(client);
                // Write everything from this thread; read and check the echoes in another.
                let reader = {
                    let client = client.clone();
                    thread::spawn(move || -> Result<u64, String> {
                        let mut bytes = 0;
                        for i in 0..MESSAGES {
                            let echo = client
                                .read()
                                .map_err(|e| format!("client {n}: read {i}: {e}"))?;
                            if echo != payload(n, i) {
                                return Err(format!("client {n}: echo {i} differs"));
                            }
                            bytes += echo.len() as u64;
                        }
                        Ok(bytes)
                    })
                };
                for i in 0..MESSAGES {
                    client
                        .write(&payload(n, i))
                        .map_err(|e| format!("client {n}: write {i}: {e}"))?;
                }
                let bytes = reader
                    .join()
                    .map_err(|_| format!("client {n}: reader panicked"))??;
                let stats = client.stats();
                client
                    .close()
                    .map_err(|e| format!("client {n}: close: {e}"))?;
                Ok((bytes, stats))
            })
        })
        .collect();

    let mut failures = Vec::new();
    let (mut bytes, mut retransmissions) = (0, 0);
    let mut per_client = Vec::new();
    for handle in clients {
        match handle
            .join()
            .map_err(|_| "a client thread panicked".to_string())
            .and_then(|r| r)
        {
            Ok((b, stats)) => {
                bytes += b;
                retransmissions += stats.retransmissions;
                per_client.push(stats);
            }
            Err(err) => failures.push(err),
        }
    }
    let took = started.elapsed();
    let totals = server.totals();
    server.close_timeout(Duration::from_secs(5)).ok();
    echo.join().ok();

    let echoed = CLIENTS * MESSAGES;
    println!(
        "{echoed} messages ({bytes} bytes) echoed and verified in {took:.2?}: {:.0} msgs/s",
        echoed as f64 / took.as_secs_f64()
    );
    println!(
        "{} connections accepted; the clients retransmitted {retransmissions} times to get through the loss",
        totals.accepted
    );
    for (n, s) in per_client.iter().enumerate() {
        let rtt = s.rtt.map_or_else(
            || "-".into(),
            |r| format!("{:.1?} (min {:.1?}, max {:.1?})", r.smoothed, r.min, r.max),
        );
        println!(
            "  client {n}: {} sent, {} received, {} retransmissions, {} duplicates, {} corrupt dropped, rtt {rtt}, connected in {:.1?}",
            s.messages_sent,
            s.messages_received,
            s.retransmissions,
            s.duplicates_received,
            s.corrupt_received,
            s.connect_time.unwrap_or_default()
        );
    }
    if failures.is_empty() {
        println!("every echo arrived exactly once, in order, byte for byte");
        Ok(())
    } else {
        for f in &failures {
            eprintln!("FAILED: {f}");
        }
        Err(format!("{} of {CLIENTS} clients failed", failures.len()).into())
    }
}

/// Message `i` of client `n`: 1 to 1000 bytes, different for every message.
fn payload(n: usize, i: usize) -> Vec<u8> {
    let len = 1 + (i * 37 + n * 101) % 1000;
    (0..len)
        .map(|j| (j as u8).wrapping_mul(31).wrapping_add(i as u8) ^ n as u8)
        .collect()
}
