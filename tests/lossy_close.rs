//! A close never gives up on an honest peer that is only unlucky: with the
//! fault injector dropping 20% on read and on write at both ends (36% of
//! datagrams lost each way), every client close and every server close
//! delivers everything, because the give-up rule counts unanswered tries of
//! one message (30: a chance of 0.59^30, about 1.4e-7, per message) rather
//! than epochs. Next to it, the peer the rule is for: one that heartbeats
//! and never acknowledges ends a close within the stall limit.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use liveseq::proto::MAX_UNANSWERED;
use liveseq::{Client, Error, Faults, Params, Server, ServerEvent};

/// The measured case: window 4, 30 ms epochs, epoch limit 20, back-off cap 2.
fn params() -> Params {
    Params {
        epoch_millis: 30,
        epoch_limit: 20,
        window_size: 4,
        max_unacked_messages: 4,
        max_backoff_interval: 2,
    }
}

fn lossy(seed: u64) -> Faults {
    Faults {
        read_drop_percent: 20,
        write_drop_percent: 20,
        seed: Some(seed),
        ..Faults::default()
    }
}

fn payload(i: usize) -> Vec<u8> {
    format!("message {i:03} of a lossy stream").into_bytes()
}

const MESSAGES: usize = 100;

/// Connects through the faults, retrying: at 36% loss a connect may need
/// several attempts before its deadline (that is not what is tested here).
fn connect(server: std::net::SocketAddr, seed: u64) -> Client {
    for attempt in 0..10 {
        match Client::builder()
            .params(params())
            .faults(lossy(seed * 100 + attempt))
            .connect(server)
        {
            Ok(client) => return client,
            Err(Error::ConnectTimeout(_)) => continue,
            Err(other) => panic!("connect: {other}"),
        }
    }
    panic!("no connection to {server} in 10 attempts");
}

#[test]
fn twenty_client_closes_at_36_percent_loss_deliver_everything() {
    let runs: Vec<_> = (0..20u64)
        .map(|run| {
            thread::spawn(move || {
                let server = Server::builder()
                    .params(params())
                    .faults(lossy(1000 + run))
                    .bind("127.0.0.1:0")
                    .unwrap();
                let client = connect(server.local_addr().unwrap(), run);
                for i in 0..MESSAGES {
                    client.write(&payload(i)).unwrap();
                }
                let closed = client.close();
                assert!(closed.is_ok(), "run {run}: close gave up: {closed:?}");
                // Everything arrived, in order, byte for byte.
                let mut got = Vec::new();
                while got.len() < MESSAGES {
                    match server.next_event() {
                        Ok(ServerEvent::Message { payload, .. }) => got.push(payload),
                        Ok(ServerEvent::Lost { .. }) => break,
                        Ok(_) => {}
                        Err(err) => panic!("run {run}: {err}"),
                    }
                }
                assert_eq!(got.len(), MESSAGES, "run {run}");
                for (i, p) in got.iter().enumerate() {
                    assert_eq!(p, &payload(i), "run {run}, message {i}");
                }
                server.close_timeout(Duration::ZERO).ok();
            })
        })
        .collect();
    for run in runs {
        run.join().unwrap();
    }
}

#[test]
fn five_server_closes_toward_four_clients_at_36_percent_loss_deliver_everything() {
    let runs: Vec<_> = (0..5u64)
        .map(|run| {
            thread::spawn(move || {
                let server = Server::builder()
                    .params(params())
                    .faults(lossy(2000 + run))
                    .bind("127.0.0.1:0")
                    .unwrap();
                let addr = server.local_addr().unwrap();
                let clients: Vec<Arc<Client>> = (0..4)
                    .map(|c| Arc::new(connect(addr, 3000 + run * 10 + c)))
                    .collect();
                let mut ids = Vec::new();
                while ids.len() < clients.len() {
                    if let ServerEvent::Connected { id, .. } = server.next_event().unwrap() {
                        ids.push(id);
                    }
                }
                let readers: Vec<_> = clients
                    .iter()
                    .map(|client| {
                        let client = client.clone();
                        thread::spawn(move || {
                            (0..MESSAGES)
                                .map(|_| client.read())
                                .collect::<Result<Vec<_>, _>>()
                        })
                    })
                    .collect();
                for i in 0..MESSAGES {
                    for &id in &ids {
                        server.write(id, &payload(i)).unwrap();
                    }
                }
                let closed = server.close();
                assert!(closed.is_ok(), "run {run}: close gave up: {closed:?}");
                for (c, reader) in readers.into_iter().enumerate() {
                    let got = reader.join().unwrap();
                    let got = got.unwrap_or_else(|err| panic!("run {run}, client {c}: {err}"));
                    for (i, p) in got.iter().enumerate() {
                        assert_eq!(p, &payload(i), "run {run}, client {c}, message {i}");
                    }
                }
                for client in clients {
                    let _ = client.close_timeout(Duration::ZERO);
                }
            })
        })
        .collect();
    for run in runs {
        run.join().unwrap();
    }
}

/// The peer the rule is for: it heartbeats (so it is never lost to
/// silence) and acknowledges nothing. A client's close gives up on it
/// within the stall limit, 30 x (back-off cap + 1) epochs: 2.7 s here.
#[test]
fn a_close_gives_up_on_a_peer_that_never_acknowledges_within_the_stall_limit() {
    use liveseq::proto::Message;
    use std::net::UdpSocket;

    let p = params();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(p.epoch())).unwrap();
    let addr = peer.local_addr().unwrap();
    let heartbeats = thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut id = None;
        let mut last_heartbeat = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok((n, from)) = peer.recv_from(&mut buf) {
                let Ok(msg) = Message::decode(&buf[..n]) else {
                    continue;
                };
                if msg.kind == liveseq::proto::MsgType::Connect {
                    id = Some(7);
                    let mut out = Vec::new();
                    Message::ack(7, msg.seq_num).encode(&mut out);
                    peer.send_to(&out, from).unwrap();
                    peer.connect(from).unwrap();
                }
            }
            if let Some(id) = id {
                if last_heartbeat.elapsed() >= p.epoch() {
                    let mut out = Vec::new();
                    Message::ack(id, 0).encode(&mut out);
                    if peer.send(&out).is_err() {
                        return;
                    }
                    last_heartbeat = Instant::now();
                }
            }
        }
    });
    let client = Client::connect(addr, p).unwrap();
    client.write(b"never acknowledged").unwrap();
    let start = Instant::now();
    let closed = client.close();
    let took = start.elapsed();
    assert!(
        matches!(closed, Err(Error::ConnectionLost(_))),
        "{closed:?}"
    );
    let bound = p.epoch() * MAX_UNANSWERED * (p.max_backoff_interval + 1);
    assert_eq!(bound, Duration::from_millis(2700));
    // The first try's back-off is shorter than the cap, so the 30 tries
    // take a little less than the bound; never much more.
    assert!(took < bound + p.epoch() * 5, "{took:?}");
    assert!(took > bound / 2, "gave up after only {took:?}");
    drop(heartbeats);
}
