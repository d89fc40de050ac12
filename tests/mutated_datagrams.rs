//! Property tests for CI on stable (the cargo-fuzz targets in fuzz/ go
//! further): at least 100,000 random and mutated datagrams through the
//! decoder and the state machine, and 20,000 through a live server while a
//! well-behaved client on it sees every message, in order, byte for byte.

mod common;

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{payload, spawn_echo};
use liveseq::proto::Conn;
use liveseq::proto::Message;
use liveseq::{Client, Params, Server};
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn valid(rng: &mut SmallRng, conn_id: u32) -> Vec<u8> {
    let seq = rng.gen_range(0..40u64);
    let msg = match rng.gen_range(0..5) {
        0 => Message::connect(seq),
        1 => Message::ack(conn_id, seq),
        2 => Message::cack(conn_id, seq),
        _ => {
            let len = rng.gen_range(0..60);
            let p: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
            let mut out = Vec::new();
            Message::data(conn_id, seq, &p).encode(&mut out);
            return out;
        }
    };
    let mut out = Vec::new();
    msg.encode(&mut out);
    out
}

/// A valid message, then damaged: flipped bytes, cuts, swapped or repeated
/// fields, replaced numbers, junk.
fn mutated(rng: &mut SmallRng, conn_id: u32) -> Vec<u8> {
    let mut d = valid(rng, conn_id);
    for _ in 0..rng.gen_range(0..4) {
        match rng.gen_range(0..7) {
            0 if !d.is_empty() => {
                let i = rng.gen_range(0..d.len());
                d[i] ^= 1 << rng.gen_range(0..8);
            }
            1 => {
                let cut = rng.gen_range(0..=d.len());
                d.truncate(cut);
            }
            2 => {
                // Swap two fields' values: keys stay, values move.
                let text = String::from_utf8_lossy(&d).into_owned();
                let parts: Vec<&str> = text.split(',').collect();
                if parts.len() > 2 {
                    let (a, b) = (rng.gen_range(0..parts.len()), rng.gen_range(0..parts.len()));
                    let mut parts: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
                    parts.swap(a, b);
                    d = parts.join(",").into_bytes();
                }
            }
            3 => {
                let n = [
                    "-1",
                    "1e9",
                    "18446744073709551616",
                    "4294967296",
                    "0.5",
                    "null",
                    "\"7\"",
                    "[]",
                    "{}",
                ];
                let text = String::from_utf8_lossy(&d).into_owned();
                if let Some(colon) = text.find(':') {
                    let end = text[colon..].find(',').map_or(text.len(), |e| colon + e);
                    d = format!(
                        "{}:{}{}",
                        &text[..colon],
                        n[rng.gen_range(0..n.len())],
                        &text[end..]
                    )
                    .into_bytes();
                }
            }
            4 => {
                let at = rng.gen_range(0..=d.len());
                d.splice(at..at, br#","Size":2147483648"#.iter().copied());
            }
            5 => d.extend((0..rng.gen_range(0..20)).map(|_| rng.r#gen::<u8>())),
            _ => d = (0..rng.gen_range(0..80)).map(|_| rng.r#gen()).collect(),
        }
    }
    d
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, failure_persistence: None, ..ProptestConfig::default() })]

    /// 100 seeds x 1,000 datagrams = 100,000 through the decoder, the
    /// integrity rules and a state machine, checking its invariants.
    #[test]
    fn mutated_datagrams_never_break_the_decoder_or_the_state_machine(seed in any::<u64>(), window in 1u32..16) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let params = Params { window_size: window, max_unacked_messages: window, epoch_limit: 1000, ..Params::default() };
        let mut conn = Conn::server(params, 1, 0);
        for i in 0..1000 {
            let d = mutated(&mut rng, 1);
            if let Ok(mut msg) = Message::decode(&d) {
                let mut re = Vec::new();
                msg.encode(&mut re);
                prop_assert_eq!(Message::decode(&re).unwrap(), msg.clone());
                if msg.kind == liveseq::proto::MsgType::Data {
                    let _ = msg.clone().verify_data();
                }
                msg.payload = msg.payload.into_owned().into();
                let _ = conn.handle(msg);
            }
            if i % 100 == 0 {
                conn.write(vec![1, 2, 3]);
                conn.on_epoch();
            }
            while conn.poll_transmit().is_some() {}
            while conn.poll_delivered().is_some() {}
            prop_assert!(conn.reorder_buffered().0 < window as usize);
            prop_assert!(conn.unacked() <= window as usize);
        }
    }
}

#[test]
fn live_server_under_mutated_datagrams_serves_its_client_exactly() {
    let p = Params {
        epoch_limit: 50,
        epoch_millis: 20,
        window_size: 8,
        max_unacked_messages: 8,
        max_backoff_interval: 0,
    };
    let server = Arc::new(Server::bind("127.0.0.1:0", p).unwrap());
    let addr = server.local_addr().unwrap();
    let echo = spawn_echo(server.clone());
    let client = Client::connect(addr, p).unwrap();
    let id = u32::from(client.conn_id());
    let stop = Arc::new(AtomicBool::new(false));
    let attack = {
        let stop = stop.clone();
        thread::spawn(move || {
            // Several source ports; valid Connects are among the mutations, so some hold connections.
            let sockets: Vec<UdpSocket> = (0..8)
                .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
                .collect();
            let mut rng = SmallRng::seed_from_u64(77);
            let mut sent = 0u64;
            while sent < 20_000 || !stop.load(Ordering::SeqCst) {
                let s = &sockets[rng.gen_range(0..sockets.len())];
                // Name the victim's connection half of the time.
                let target = if rng.gen_bool(0.5) {
                    id
                } else {
                    rng.gen_range(1..4)
                };
                let _ = s.send_to(&mutated(&mut rng, target), addr);
                sent += 1;
                if sent % 2000 == 0 {
                    thread::sleep(Duration::from_millis(1)); // leave the loopback some room
                }
            }
            sent
        })
    };
    for i in 0..400 {
        client.write(&payload(1, i, 800)).unwrap();
    }
    for i in 0..400 {
        assert_eq!(client.read().unwrap(), payload(1, i, 800), "message {i}");
    }
    stop.store(true, Ordering::SeqCst);
    let sent = attack.join().unwrap();
    assert!(sent >= 20_000);
    let totals = server.totals();
    assert!(totals.malformed + totals.rejected > 0, "{totals:?}");
    client.close().unwrap();
    server.close_timeout(Duration::from_secs(1)).ok();
    echo.join().unwrap();
}
