//! Windows, acknowledgements and heartbeats observed on the wire, with a raw
//! UDP socket playing the peer.
//!
//! Reference families: Window 1-6 and MaxUnackedMessages 1-3 (the limits
//! hold on the wire; withheld acks stop the sender at exactly min(W, M)),
//! OutOfOrderMsg (reordered and duplicated Data delivered in order, once),
//! CAckServer (a CAck stops retransmission of everything it covers), and
//! heartbeats on an idle connection.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{RawPeer, TestParams, WAIT};
use liveseq::proto::{Message, MsgType};
use liveseq::{Client, Server};

/// The distinct Data sequence numbers among `msgs`.
fn data(msgs: &[Message<'_>]) -> BTreeSet<u64> {
    msgs.iter()
        .filter(|m| m.kind == MsgType::Data)
        .map(|m| m.seq_num)
        .collect()
}

/// Everything the peer sends until each of `expect` has come twice more
/// after its first copy: with no back-off, one resend per epoch, so two
/// epoch boundaries have passed since those messages went out, and whatever
/// the sender sent with them, or at the first boundary, has arrived before
/// the second round of resends (one socket, in order on loopback). An event
/// to wait for, where a fixed listening window would guess. Each message is
/// answered with a heartbeat on `keepalive`.
fn gather_through_two_resends(
    raw: &mut RawPeer,
    expect: &BTreeSet<u64>,
    keepalive: u32,
) -> Vec<Message<'static>> {
    let mut copies: BTreeMap<u64, usize> = BTreeMap::new();
    let mut got = Vec::new();
    while !expect
        .iter()
        .all(|sn| copies.get(sn).is_some_and(|&n| n >= 3))
    {
        let m = raw
            .recv_timeout(WAIT)
            .unwrap_or_else(|| panic!("no resends of {expect:?} within the wait: {copies:?}"));
        raw.send(&Message::ack(keepalive, 0));
        if m.kind == MsgType::Data {
            *copies.entry(m.seq_num).or_default() += 1;
        }
        got.push(m);
    }
    got
}

/// A client streams `total` messages to a raw server that withholds acks:
/// exactly min(W, M) distinct messages arrive, then, as acks flow, the rest,
/// never more than min(W, M) unacknowledged and never beyond the window.
fn client_limits(window: u32, max_unacked: u32, total: usize) {
    let p = TestParams::new()
        .epoch_millis(100)
        .epoch_limit(50)
        .window(window)
        .max_unacked(max_unacked)
        .build();
    let mut raw = RawPeer::new();
    let addr = raw.addr();
    let connecting = thread::spawn(move || Client::connect(addr, p).unwrap());
    let isn = raw.accept(1);
    let client = connecting.join().unwrap();
    for i in 0..total {
        client.write(&[i as u8]).unwrap();
    }
    let limit = window.min(max_unacked) as u64;
    let first = isn + 1;
    // Collect what arrives without acking, until two rounds of resends.
    let seen: BTreeSet<u64> = data(&gather_through_two_resends(
        &mut raw,
        &(first..first + limit).collect(),
        1,
    ));
    assert_eq!(
        seen,
        (first..first + limit).collect(),
        "W={window} M={max_unacked}"
    );
    // Acknowledge in order, one at a time; check the limits at every step.
    // Each Ack is followed by a Data message of ours, a barrier: the client
    // handles the Ack first, sending what it released, then acknowledges our
    // Data (one socket each way, in order on loopback). Once that
    // acknowledgement is in, everything the Ack released has arrived.
    let mut acked = 0u64;
    let mut received = seen.clone();
    let mut barrier = isn; // our Data, numbered from isn + 1 as a server's
    while acked < total as u64 {
        raw.send(&Message::ack(1, first + acked));
        acked += 1;
        barrier += 1;
        raw.send(&Message::data(1, barrier, b"barrier"));
        let unacked_top = first + acked + limit - 1;
        let mut released = Vec::new();
        loop {
            let m = raw.recv();
            match m.kind {
                MsgType::Ack if m.seq_num == barrier => break,
                MsgType::Data => released.push(m),
                _ => {}
            }
        }
        for sn in data(&released) {
            assert!(
                sn <= unacked_top,
                "seq {sn} beyond oldest unacked {} + limit",
                first + acked
            );
            assert!(sn < first + acked + u64::from(window), "beyond the window");
            received.insert(sn);
        }
        // The barrier held: the one message this Ack released is in.
        if unacked_top < first + total as u64 {
            assert!(
                received.contains(&unacked_top),
                "W={window} M={max_unacked}: {unacked_top} not sent before the barrier's Ack"
            );
        }
    }
    assert_eq!(received, (first..first + total as u64).collect());
    client.close().unwrap();
}

#[test]
fn window_limits_client_to_server() {
    client_limits(5, 5, 10);
    client_limits(10, 10, 25);
    client_limits(50, 5, 10);
    client_limits(50, 10, 25);
    client_limits(1, 1, 4);
}

/// The same from the server to a raw client.
#[test]
fn window_limits_server_to_client() {
    for (window, max_unacked, total) in [(5u32, 5u32, 10usize), (50, 5, 10), (10, 3, 12)] {
        let p = TestParams::new()
            .epoch_millis(100)
            .epoch_limit(50)
            .window(window)
            .max_unacked(max_unacked)
            .build();
        let server = Server::bind("127.0.0.1:0", p).unwrap();
        let mut raw = RawPeer::new();
        let id = raw.connect(server.local_addr().unwrap(), 500);
        for i in 0..total {
            server.write(id.into(), &[i as u8]).unwrap();
        }
        let limit = u64::from(window.min(max_unacked));
        let seen = data(&gather_through_two_resends(
            &mut raw,
            &(501..501 + limit).collect(),
            id,
        ));
        assert_eq!(
            seen,
            (501..501 + limit).collect(),
            "W={window} M={max_unacked}"
        );
        // A CAck for all of them releases the next min(W, M) at once.
        raw.send(&Message::cack(id, 500 + limit));
        let upto = (500 + total as u64).min(500 + 2 * limit);
        let next: BTreeSet<u64> = data(&gather_through_two_resends(
            &mut raw,
            &(501 + limit..=upto).collect(),
            id,
        ))
        .into_iter()
        .filter(|&sn| sn > 500 + limit)
        .collect();
        assert_eq!(next, (501 + limit..=upto).collect());
        server.close_timeout(Duration::from_millis(50)).ok();
    }
}

/// Reordered and duplicated Data from a raw client is delivered in order,
/// exactly once, each copy acknowledged.
#[test]
fn out_of_order_and_duplicates_from_the_wire() {
    let p = TestParams::new()
        .epoch_millis(1000)
        .epoch_limit(50)
        .window(8)
        .max_unacked(8)
        .build();
    let server = Server::builder()
        .params(p)
        .ack_coalescing(false)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut raw = RawPeer::new();
    let id = raw.connect(server.local_addr().unwrap(), 0);
    let order = [5u64, 3, 1, 3, 8, 2, 7, 1, 4, 6, 5, 8];
    for sn in order {
        raw.send(&Message::data(id, sn, format!("m{sn}").as_bytes()));
    }
    for sn in 1..=8u64 {
        assert_eq!(
            server.read().unwrap(),
            (id.into(), format!("m{sn}").into_bytes())
        );
    }
    assert!(
        server.read_timeout(Duration::from_millis(100)).is_err(),
        "duplicates delivered once"
    );
    let acks: Vec<u64> = raw
        .gather(Duration::from_millis(100), None)
        .iter()
        .filter(|m| m.kind == MsgType::Ack && m.seq_num != 0)
        .map(|m| m.seq_num)
        .collect();
    assert_eq!(acks, order, "every copy acknowledged, in arrival order");
    let stats = server.stats(id.into()).unwrap();
    assert_eq!((stats.messages_received, stats.duplicates_received), (8, 4));
    server.close_timeout(Duration::from_millis(50)).ok();
}

/// A CAck covering a window stops every retransmission it covers.
#[test]
fn cack_from_the_peer_stops_retransmission() {
    let p = TestParams::new()
        .epoch_millis(50)
        .epoch_limit(50)
        .window(4)
        .max_unacked(4)
        .build();
    let mut raw = RawPeer::new();
    let addr = raw.addr();
    let connecting = thread::spawn(move || Client::connect(addr, p).unwrap());
    let isn = raw.accept(3);
    let client = connecting.join().unwrap();
    for i in 0..4u8 {
        client.write(&[i]).unwrap();
    }
    let mut first = BTreeSet::new();
    while first.len() < 4 {
        let m = raw.recv();
        if m.kind == MsgType::Data {
            first.insert(m.seq_num);
        }
    }
    raw.send(&Message::cack(3, isn + 4));
    // Over 6 epochs: heartbeats only, no Data.
    let after = raw.gather(Duration::from_millis(300), Some(3));
    let data_after = after.iter().filter(|m| m.kind == MsgType::Data).count();
    let heartbeats = after
        .iter()
        .filter(|m| m.kind == MsgType::Ack && m.seq_num == 0)
        .count();
    assert_eq!(data_after, 0, "the CAck covered everything");
    assert!(heartbeats >= 3, "heartbeats while idle: {heartbeats}");
    assert_eq!(client.stats().unacked, 0);
    client.close().unwrap();
}

/// An idle connection heartbeats once per epoch in each direction.
#[test]
fn idle_connection_heartbeats_every_epoch() {
    let p = TestParams::new()
        .epoch_millis(40)
        .epoch_limit(50)
        .window(1)
        .max_unacked(1)
        .build();
    let server = Arc::new(Server::bind("127.0.0.1:0", p).unwrap());
    let mut raw = RawPeer::new();
    let id = raw.connect(server.local_addr().unwrap(), 10);
    raw.send(&Message::ack(id, 0)); // speak once: the server now heartbeats
    let started = std::time::Instant::now();
    let mut heartbeats = 0;
    while started.elapsed() < Duration::from_millis(400) {
        if let Some(m) = raw.recv_timeout(Duration::from_millis(100)) {
            assert_eq!(
                (m.kind, m.conn_id, m.seq_num),
                (MsgType::Ack, id, 0),
                "only heartbeats"
            );
            heartbeats += 1;
            raw.send(&Message::ack(id, 0));
        }
    }
    // About ten epochs passed (plus the immediate answer to our first word);
    // a starved epoch thread merges late ticks, hence the lower bound of 4.
    assert!(
        (4..=13).contains(&heartbeats),
        "{heartbeats} heartbeats in ~10 epochs"
    );
    let silent = server.stats(id.into()).unwrap().epochs_since_heard;
    assert!(silent <= 1, "we answered every heartbeat: {silent}");
    server.close_timeout(Duration::from_millis(50)).ok();
}
