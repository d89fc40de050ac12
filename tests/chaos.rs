//! Chaos on real sockets: many clients through a network that drops,
//! duplicates, reorders and damages datagrams, and a partition that must be
//! reported as exactly one lost connection. (That no thread outlives close is
//! checked in tests/threads.rs, which must run alone.)
//!
//! The soak variant runs for `LIVESEQ_SOAK_MINUTES` (default 1):
//! `cargo test --release --test chaos -- --ignored soak --nocapture`.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{faulty_client, faulty_server, spawn_echo};
use liveseq::{Client, ConnId, Error, Faults, Params, Server};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn chaos(seed: u64) -> Faults {
    Faults {
        write_drop_percent: 30,
        duplicate_percent: 5,
        reorder_percent: 5,
        corrupt_percent: 5,
        shorten_percent: 5,
        lengthen_percent: 5,
        seed: Some(seed),
        ..Faults::default()
    }
}

fn chaos_params() -> Params {
    // 30% loss each way plus damage: a generous epoch limit keeps a live peer
    // from looking dead, short epochs keep recovery quick.
    Params {
        epoch_limit: 60,
        epoch_millis: 20,
        window_size: 16,
        max_unacked_messages: 16,
        max_backoff_interval: 1,
    }
}

/// What one client did: messages and retransmissions.
struct Run {
    messages: usize,
    retransmissions: u64,
}

/// `clients` clients each write `messages` random-size messages and read the
/// echoes: every one must arrive exactly once, in order, byte for byte.
fn chaos_exchange(clients: usize, messages: usize, seed: u64) -> Vec<Run> {
    let p = chaos_params();
    let server = faulty_server(p, chaos(seed));
    let addr = server.local_addr().unwrap();
    let echo = spawn_echo(server.clone());
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            thread::spawn(move || {
                let client = Arc::new(faulty_client(addr, p, chaos(seed * 1000 + c as u64)));
                let max = client.max_payload();
                let mut rng = SmallRng::seed_from_u64(seed + c as u64);
                let sent: Vec<Vec<u8>> = (0..messages)
                    .map(|i| {
                        let len = rng.gen_range(1..=max);
                        let mut m: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
                        m[..len.min(4)].copy_from_slice(&(i as u32).to_le_bytes()[..len.min(4)]);
                        m
                    })
                    .collect();
                let reader = {
                    let client = client.clone();
                    let expected = sent.clone();
                    thread::spawn(move || {
                        for (i, want) in expected.iter().enumerate() {
                            let got = client
                                .read()
                                .unwrap_or_else(|e| panic!("client {c} read {i}: {e}"));
                            assert!(
                                got == *want,
                                "client {c}: echo {i} differs ({} vs {} bytes)",
                                got.len(),
                                want.len()
                            );
                        }
                    })
                };
                for m in &sent {
                    client.write(m).unwrap();
                }
                reader.join().unwrap();
                let retransmissions = client.stats().retransmissions;
                client.close().unwrap();
                Run {
                    messages,
                    retransmissions,
                }
            })
        })
        .collect();
    let runs: Vec<Run> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let totals = server.totals();
    assert_eq!(totals.accepted, clients as u64);
    match server.close_timeout(Duration::from_secs(5)) {
        Ok(()) | Err(Error::LostDuringClose(_)) => {} // a closed client's last acks may be lost
        Err(e) => panic!("server close: {e}"),
    }
    echo.join().unwrap();
    runs
}

#[test]
fn sixteen_clients_through_chaos() {
    let runs = chaos_exchange(16, 500, 1);
    let retransmissions: u64 = runs.iter().map(|r| r.retransmissions).sum();
    assert_eq!(runs.iter().map(|r| r.messages).sum::<usize>(), 16 * 500);
    assert!(
        retransmissions > 1000,
        "30% loss must cost retransmissions: {retransmissions}"
    );
}

/// A UDP proxy between one client and the server that can cut the link.
struct Proxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Proxy {
    fn new(server: SocketAddr) -> Proxy {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let (cut, stop) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let thread = {
            let (cut, stop) = (cut.clone(), stop.clone());
            thread::spawn(move || {
                let mut client = None;
                let mut buf = [0u8; 65536];
                while !stop.load(Ordering::SeqCst) {
                    let Ok((n, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    if cut.load(Ordering::SeqCst) {
                        continue;
                    }
                    if from == server {
                        if let Some(c) = client {
                            let _ = socket.send_to(&buf[..n], c);
                        }
                    } else if client.is_none_or(|c| c == from) {
                        client = Some(from);
                        let _ = socket.send_to(&buf[..n], server);
                    }
                }
            })
        };
        Proxy {
            addr,
            cut,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_partitioned_client_is_reported_lost_and_the_others_are_unaffected() {
    let p = Params {
        epoch_limit: 5,
        epoch_millis: 50,
        window_size: 4,
        max_unacked_messages: 4,
        max_backoff_interval: 0,
    };
    let server = Arc::new(Server::bind("127.0.0.1:0", p).unwrap());
    let addr = server.local_addr().unwrap();
    let proxy = Proxy::new(addr);
    let victim = Client::connect(proxy.addr, p).unwrap();
    let victim_id = victim.conn_id();
    let others: Vec<Client> = (0..3).map(|_| Client::connect(addr, p).unwrap()).collect();

    // Midway through an exchange, the victim's link goes dark.
    for i in 0..20u8 {
        victim.write(&[i]).unwrap();
    }
    for i in 0..20u8 {
        assert_eq!(server.read().unwrap(), (victim_id, vec![i]));
    }
    let cut_at = Instant::now();
    proxy.cut.store(true, Ordering::SeqCst);
    let writers: Vec<_> = others
        .into_iter()
        .enumerate()
        .map(|(n, c)| {
            thread::spawn(move || {
                for i in 0..100u32 {
                    c.write(&[&[n as u8][..], &i.to_le_bytes()].concat())
                        .unwrap();
                }
                // Stay open: a closed client falls silent and would be reported lost too.
                c
            })
        })
        .collect();
    let mut from_others = std::collections::HashMap::<ConnId, u32>::new();
    let mut lost = Vec::new();
    while from_others.values().sum::<u32>() < 300 || lost.is_empty() {
        match server.read() {
            Ok((id, msg)) => {
                assert_ne!(id, victim_id, "nothing crosses the partition");
                let next = from_others.entry(id).or_default();
                assert_eq!(
                    u32::from_le_bytes(msg[1..5].try_into().unwrap()),
                    *next,
                    "in order"
                );
                *next += 1;
            }
            Err(Error::ConnectionLost(id)) => {
                let after = cut_at.elapsed();
                lost.push(id);
                assert_eq!(id, victim_id, "only the partitioned client is lost");
                assert!(
                    after <= p.epoch() * (p.epoch_limit + 1) + Duration::from_millis(100),
                    "reported {after:?} after the partition"
                );
                assert!(
                    after >= p.epoch() * (p.epoch_limit - 1),
                    "not before the limit: {after:?}"
                );
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(lost, [victim_id]);
    for w in writers {
        let c = w.join().unwrap();
        assert_ne!(c.conn_id(), victim_id);
        c.close().unwrap();
    }
    assert!(
        matches!(victim.read(), Err(Error::ConnectionLost(_))),
        "the victim sees it too"
    );
    drop(victim);
    server.close_timeout(Duration::from_secs(2)).ok();
}

#[test]
#[ignore = "soak: run with --ignored soak"]
fn soak_chaos() {
    let minutes: f64 = std::env::var("LIVESEQ_SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(1.0);
    let until = Instant::now() + Duration::from_secs_f64(minutes * 60.0);
    let started = Instant::now();
    let (mut messages, mut retransmissions, mut rounds) = (0usize, 0u64, 0u64);
    while Instant::now() < until {
        rounds += 1;
        for run in chaos_exchange(8, 300, rounds) {
            messages += run.messages;
            retransmissions += run.retransmissions;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "soak: round {rounds}, {messages} messages echoed through chaos, {:.0} msgs/s, {retransmissions} retransmissions ({:.2} per message)",
            messages as f64 / secs,
            retransmissions as f64 / messages as f64
        );
    }
}
