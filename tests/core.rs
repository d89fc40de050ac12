//! Deterministic tests of the protocol state machine (`liveseq::proto::Conn`):
//! no sockets, no clock, no sleeps. Time is a count of `on_epoch` calls.
//!
//! Reference families covered here: ExpBackOff (the 1, 3, 6, 11, ... schedule),
//! Window and MaxUnackedMessages (limits and anchoring), OutOfOrderMsg,
//! CAckServer (CAck handling), VariableLengthMsg and CorruptedMsg (integrity
//! rules), BasicISN (sequence numbers start at isn + 1), epoch-limit loss.

mod common;

use std::borrow::Cow;

use common::TestParams;

/// What every test here shares: 1 s epochs (time is virtual) and no
/// back-off unless a test names one.
fn base() -> TestParams {
    TestParams::new().epoch_millis(1000).max_backoff(0)
}
use liveseq::proto::{Conn, Event, Phase, Rejected, CONNECT_REACKS, MAX_ISN, MAX_SEQ_NUM};
use liveseq::proto::{Message, MsgType};
use liveseq::Params;

fn drain(conn: &mut Conn) -> Vec<Message<'static>> {
    std::iter::from_fn(|| conn.poll_transmit().map(Message::into_owned)).collect()
}

fn events(conn: &mut Conn) -> Vec<Event> {
    std::iter::from_fn(|| conn.poll_event()).collect()
}

fn delivered(conn: &mut Conn) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| conn.poll_delivered()).collect()
}

fn data_seqs(msgs: &[Message<'_>]) -> Vec<u64> {
    msgs.iter()
        .filter(|m| m.kind == MsgType::Data)
        .map(|m| m.seq_num)
        .collect()
}

fn is_heartbeat(m: &Message<'_>) -> bool {
    m.kind == MsgType::Ack && m.seq_num == 0
}

/// A client connected as connection 1 with isn 100 (first Data is 101).
fn client(p: Params) -> Conn {
    let mut c = Conn::client(p, 100);
    assert_eq!(drain(&mut c), [Message::connect(100)]);
    c.handle(Message::ack(1, 100)).unwrap();
    assert_eq!(events(&mut c), [Event::Connected]);
    assert_eq!(c.conn_id(), 1);
    c
}

/// A server connection 1 for isn 100 that has heard from its peer.
fn server(p: Params) -> Conn {
    let mut s = Conn::server(p, 1, 100);
    assert_eq!(drain(&mut s), [Message::ack(1, 100)]);
    s.handle(Message::ack(1, 0)).unwrap();
    drain(&mut s);
    s
}

/// Epochs (1-based) at which a never-acknowledged message is sent again.
fn resend_epochs(max_backoff: u32, epochs: u32) -> Vec<u32> {
    let mut c = client(
        base()
            .epoch_limit(1000)
            .window_of(1)
            .max_backoff(max_backoff)
            .build(),
    );
    c.write(b"m".to_vec());
    assert_eq!(
        data_seqs(&drain(&mut c)),
        [101],
        "first transmission at epoch 0"
    );
    let mut at = Vec::new();
    for epoch in 1..=epochs {
        // The server stays audible (heartbeats) but never acknowledges.
        c.handle(Message::ack(1, 0)).unwrap();
        c.on_epoch();
        let sent = drain(&mut c);
        if data_seqs(&sent) == [101] {
            at.push(epoch);
        } else {
            assert!(data_seqs(&sent).is_empty());
        }
    }
    at
}

#[test]
fn backoff_schedule_doubles_per_message() {
    assert_eq!(resend_epochs(1000, 45), [1, 3, 6, 11, 20, 37]);
}

#[test]
fn backoff_zero_resends_every_epoch() {
    assert_eq!(resend_epochs(0, 6), [1, 2, 3, 4, 5, 6]);
}

#[test]
fn backoff_is_capped() {
    // Gaps (epochs between sends) are backoff + 1: 1, 2, 3, 3, 3 with cap 2.
    assert_eq!(resend_epochs(2, 15), [1, 3, 6, 9, 12, 15]);
    // Cap 4: 1, 3, 6, 11, 16, 21 (ExpBackOff: 5 sends in 14 epochs).
    assert_eq!(resend_epochs(4, 21), [1, 3, 6, 11, 16, 21]);
    assert_eq!(resend_epochs(1, 6), [1, 3, 5]);
}

#[test]
fn each_message_keeps_its_own_backoff() {
    let mut c = client(
        base()
            .epoch_limit(1000)
            .window_of(2)
            .max_backoff(1000)
            .build(),
    );
    c.write(b"a".to_vec());
    drain(&mut c);
    c.on_epoch(); // epoch 1: "a" resent
    assert_eq!(data_seqs(&drain(&mut c)), [101]);
    c.write(b"b".to_vec()); // first sent between epochs 1 and 2
    assert_eq!(data_seqs(&drain(&mut c)), [102]);
    let mut sends = Vec::new();
    for epoch in 2..=12 {
        c.handle(Message::ack(1, 0)).unwrap();
        c.on_epoch();
        for sn in data_seqs(&drain(&mut c)) {
            sends.push((epoch, sn));
        }
    }
    // "a": 1, 3, 6, 11; "b" (sent at epoch 1): 2, 4, 7, 12.
    assert_eq!(
        sends,
        [
            (2, 102),
            (3, 101),
            (4, 102),
            (6, 101),
            (7, 102),
            (11, 101),
            (12, 102)
        ]
    );
}

#[test]
fn heartbeat_only_in_epochs_without_data() {
    let mut c = client(
        base()
            .epoch_limit(1000)
            .window_of(1)
            .max_backoff(1000)
            .build(),
    );
    c.on_epoch();
    assert_eq!(drain(&mut c), [Message::ack(1, 0)], "idle epoch: heartbeat");
    c.write(b"x".to_vec());
    drain(&mut c);
    c.on_epoch(); // data was sent during the epoch, and it is resent now
    let sent = drain(&mut c);
    assert!(!sent.iter().any(is_heartbeat), "{sent:?}");
    c.handle(Message::ack(1, 101)).unwrap();
    c.on_epoch(); // the resend at the last tick counted for that epoch
    assert_eq!(drain(&mut c), [Message::ack(1, 0)]);
    c.on_epoch();
    assert_eq!(drain(&mut c), [Message::ack(1, 0)]);
    assert_eq!(c.counters().heartbeats_sent, 3);
}

#[test]
fn loss_is_declared_exactly_at_the_epoch_limit() {
    for limit in [1, 2, 5, 9] {
        let mut c = client(base().epoch_limit(limit).window_of(1).build());
        for epoch in 1..limit {
            c.on_epoch();
            assert_eq!(
                events(&mut c),
                [],
                "limit {limit}: not lost at epoch {epoch}"
            );
            assert_eq!(c.epochs_silent(), epoch);
        }
        c.on_epoch();
        assert_eq!(events(&mut c), [Event::Lost], "limit {limit}");
        assert_eq!(c.phase(), Phase::Lost);
        c.on_epoch();
        assert_eq!(events(&mut c), [], "one Lost only");
        assert_eq!(drain(&mut c), [], "a lost connection sends nothing");
    }
}

#[test]
fn anything_heard_resets_the_silence() {
    let mut c = client(base().epoch_limit(3).window_of(1).build());
    for heard in [
        Message::ack(1, 0),
        Message::data(1, 101, b"d"),
        Message::cack(1, 100),
    ] {
        c.on_epoch();
        c.on_epoch();
        assert_eq!(c.epochs_silent(), 2);
        c.handle(heard).unwrap();
        assert_eq!(c.epochs_silent(), 0);
    }
    assert_eq!(events(&mut c), []);
}

/// Connect goes out at once and in epoch 1, then every second epoch, so a
/// Go reference server (which heartbeats only in epochs it heard nothing)
/// gets silent epochs; the connect still fails after `epoch_limit` epochs.
#[test]
fn connect_is_resent_in_epoch_one_then_every_other_epoch_then_fails() {
    let mut c = Conn::client(base().epoch_limit(8).window_of(1).max_backoff(8).build(), 7);
    assert_eq!(drain(&mut c), [Message::connect(7)]);
    let mut sent_in = Vec::new();
    for epoch in 1..8 {
        c.on_epoch();
        match drain(&mut c).as_slice() {
            [] => {}
            [m] if *m == Message::connect(7) => sent_in.push(epoch),
            other => panic!("epoch {epoch}: {other:?}"),
        }
    }
    assert_eq!(sent_in, [1, 3, 5, 7]);
    assert_eq!(events(&mut c), []);
    c.on_epoch();
    assert_eq!(events(&mut c), [Event::Lost]);
    assert_eq!(c.conn_id(), 0);
}

/// While connecting, the Ack of our Connect, a heartbeat or intact Data
/// names the connection; other acks, CAcks and damaged Data do not.
#[test]
fn connecting_client_adopts_the_id_from_an_ack_a_heartbeat_or_data() {
    let p = base().epoch_limit(5).window_of(4).build();
    let mut c = Conn::client(p, 7);
    drain(&mut c);
    assert_eq!(c.handle(Message::ack(3, 8)), Err(Rejected::Unexpected));
    assert_eq!(c.handle(Message::cack(3, 7)), Err(Rejected::Unexpected));
    assert_eq!(c.handle(Message::ack(0, 7)), Err(Rejected::Unexpected));
    let mut damaged = Message::data(3, 8, b"hello").into_owned();
    damaged.checksum ^= 1;
    assert_eq!(c.handle(damaged), Err(Rejected::Unexpected));
    assert_eq!(c.phase(), Phase::Connecting);
    c.handle(Message::ack(3, 7)).unwrap();
    assert_eq!((c.phase(), c.conn_id()), (Phase::Open, 3));

    // The reference server's Ack was lost; its heartbeat names the connection.
    let mut c = Conn::client(p, 7);
    drain(&mut c);
    c.handle(Message::ack(5, 0)).unwrap();
    assert_eq!((c.phase(), c.conn_id()), (Phase::Open, 5));
    assert_eq!(events(&mut c), [Event::Connected]);

    // So does the server's first Data, which is delivered and acknowledged.
    let mut c = Conn::client(p, 7);
    drain(&mut c);
    c.handle(Message::data(6, 8, b"first")).unwrap();
    assert_eq!((c.phase(), c.conn_id()), (Phase::Open, 6));
    assert_eq!(delivered(&mut c), [b"first".to_vec()]);
    assert_eq!(drain(&mut c), [Message::ack(6, 8)]);

    // Data numbered from another isn (another connection to this address:
    // an earlier attempt's, a previous process's) names no connection of
    // ours; the last sequence number of our first window does.
    let mut c = Conn::client(p, 7);
    drain(&mut c);
    for sn in [7, 12, 1000, 3] {
        assert_eq!(
            c.handle(Message::data(6, sn, b"theirs")),
            Err(Rejected::Unexpected)
        );
    }
    assert_eq!(c.phase(), Phase::Connecting);
    c.handle(Message::data(6, 11, b"ours")).unwrap();
    assert_eq!((c.phase(), c.conn_id()), (Phase::Open, 6));
}

/// A reconnecting client ignores its previous connection's heartbeats.
#[test]
fn reconnecting_client_ignores_its_stale_connection_id() {
    let mut c = Conn::client_after(base().epoch_limit(5).window_of(1).build(), 7, 4);
    drain(&mut c);
    assert_eq!(c.handle(Message::ack(4, 0)), Err(Rejected::Unexpected));
    assert_eq!(
        c.handle(Message::data(4, 8, b"old")),
        Err(Rejected::Unexpected)
    );
    assert_eq!(c.phase(), Phase::Connecting);
    c.handle(Message::ack(5, 0)).unwrap();
    assert_eq!(c.conn_id(), 5);

    // A restarted server may give the same id again: its Ack with our isn counts.
    let mut c = Conn::client_after(base().epoch_limit(5).window_of(1).build(), 7, 4);
    drain(&mut c);
    c.handle(Message::ack(4, 7)).unwrap();
    assert_eq!((c.phase(), c.conn_id()), (Phase::Open, 4));
}

/// A new server connection whose client has not spoken again re-sends the
/// Connect's Ack in a few epochs, then falls silent until it is reaped: a
/// spoofed Connect earns a bounded number of datagrams.
#[test]
fn server_reacks_a_silent_new_connection_a_bounded_number_of_times() {
    let limit = 10;
    let mut s = Conn::server(base().epoch_limit(limit).window_of(1).build(), 4, 0);
    let mut sent = drain(&mut s);
    for _ in 1..limit {
        s.on_epoch();
        sent.extend(drain(&mut s));
    }
    assert_eq!(sent, vec![Message::ack(4, 0); 1 + CONNECT_REACKS as usize]);
    s.on_epoch();
    assert_eq!(events(&mut s), [Event::Lost]);

    // Once the client speaks, heartbeats take over as usual.
    let mut s = Conn::server(base().epoch_limit(limit).window_of(1).build(), 4, 9);
    drain(&mut s);
    s.handle(Message::ack(4, 0)).unwrap();
    assert_eq!(drain(&mut s), [Message::ack(4, 0)]);
    s.on_epoch();
    assert_eq!(drain(&mut s), [Message::ack(4, 0)]);
}

/// Sequence numbers near the top of the range never overflow: the state
/// machine saturates, and the decoder rejects what Go cannot read.
#[test]
fn isn_and_sequence_numbers_at_their_extremes() {
    for isn in [MAX_ISN, MAX_SEQ_NUM, u64::MAX - 1, u64::MAX] {
        let p = base().epoch_limit(3).window_of(4).max_backoff(2).build();
        let mut s = Conn::server(p, 1, isn);
        assert_eq!(drain(&mut s), [Message::ack(1, isn)]);
        s.handle(Message::ack(1, 0)).unwrap();
        s.write(b"x".to_vec());
        for sn in [0, 1, isn, isn.saturating_add(1), u64::MAX] {
            let _ = s.handle(Message::data(1, sn, b"d"));
            let _ = s.handle(Message::ack(1, sn));
            let _ = s.handle(Message::cack(1, sn));
        }
        for _ in 0..3 {
            s.on_epoch();
            drain(&mut s);
        }
        assert_eq!(events(&mut s), [Event::Lost]);

        let mut c = Conn::client(p, isn);
        drain(&mut c);
        c.handle(Message::ack(2, isn)).unwrap();
        c.write(b"y".to_vec());
        c.handle(Message::cack(2, u64::MAX)).unwrap_err();
        drain(&mut c);
        c.close();
    }
}

#[test]
fn isn_zero_connects_like_the_go_client() {
    let mut c = Conn::client(base().epoch_limit(5).window_of(1).build(), 0);
    drain(&mut c);
    c.handle(Message::ack(9, 0)).unwrap();
    assert_eq!(events(&mut c), [Event::Connected]);
    c.write(b"first".to_vec());
    assert_eq!(data_seqs(&drain(&mut c)), [1]);
}

#[test]
fn sequence_numbers_start_at_isn_plus_one_on_both_sides() {
    let p = base().epoch_limit(5).window_of(4).build();
    let mut c = client(p);
    let mut s = server(p);
    c.write(b"up".to_vec());
    s.write(b"down".to_vec());
    assert_eq!(data_seqs(&drain(&mut c)), [101]);
    assert_eq!(data_seqs(&drain(&mut s)), [101]);
}

#[test]
fn repeated_connect_gets_the_same_ack() {
    let mut s = Conn::server(base().epoch_limit(5).window_of(1).build(), 4, 55);
    assert_eq!(drain(&mut s), [Message::ack(4, 55)]);
    s.handle(Message::connect(55)).unwrap();
    assert_eq!(drain(&mut s), [Message::ack(4, 55)]);
    assert_eq!(s.handle(Message::connect(56)), Err(Rejected::Unexpected));
}

/// Sends never exceed the window (anchored at the oldest unacknowledged
/// message) or max unacked, whatever order the acks come in.
#[test]
fn window_and_max_unacked_limits() {
    for (w, m) in [(1, 1), (5, 5), (10, 3), (50, 5), (8, 8)] {
        let mut c = client(base().epoch_limit(100).window(w).max_unacked(m).build());
        for i in 0..60u8 {
            c.write(vec![i]);
        }
        let first = data_seqs(&drain(&mut c));
        let expect: Vec<u64> = (101..101 + u64::from(w.min(m))).collect();
        assert_eq!(first, expect, "W={w} M={m}: exactly min(W, M) go out");
        assert_eq!(c.unacked() as u32, w.min(m));
        assert_eq!(c.queued(), 60 - w.min(m) as usize);
    }
}

#[test]
fn window_is_anchored_at_the_oldest_unacknowledged() {
    let mut c = client(base().epoch_limit(100).window_of(4).build());
    for i in 0..10u8 {
        c.write(vec![i]);
    }
    assert_eq!(data_seqs(&drain(&mut c)), [101, 102, 103, 104]);
    // Acks for everything but the oldest: nothing new may go (103..106 would
    // need 101 acknowledged).
    for sn in [102, 103, 104] {
        c.handle(Message::ack(1, sn)).unwrap();
    }
    assert!(data_seqs(&drain(&mut c)).is_empty());
    assert_eq!(c.oldest_unacked(), 101);
    c.handle(Message::ack(1, 101)).unwrap();
    assert_eq!(data_seqs(&drain(&mut c)), [105, 106, 107, 108]);
    assert_eq!(c.in_flight().collect::<Vec<_>>(), [105, 106, 107, 108]);
}

#[test]
fn max_unacked_limits_below_the_window() {
    let mut c = client(base().epoch_limit(100).window(10).max_unacked(2).build());
    for i in 0..6u8 {
        c.write(vec![i]);
    }
    assert_eq!(data_seqs(&drain(&mut c)), [101, 102]);
    c.handle(Message::ack(1, 102)).unwrap();
    assert_eq!(
        data_seqs(&drain(&mut c)),
        [103],
        "one slot freed, window has room"
    );
    c.handle(Message::ack(1, 101)).unwrap();
    assert_eq!(data_seqs(&drain(&mut c)), [104]);
}

#[test]
fn out_of_order_data_is_buffered_and_delivered_in_order() {
    let mut s = server(base().epoch_limit(5).window_of(8).build());
    for sn in [104, 102, 103] {
        s.handle(Message::data(1, sn, &[sn as u8])).unwrap();
        assert_eq!(
            drain(&mut s),
            [Message::ack(1, sn)],
            "acked at once, out of order too"
        );
        assert!(delivered(&mut s).is_empty());
    }
    assert_eq!(s.reorder_buffered().0, 3);
    s.handle(Message::data(1, 101, &[101])).unwrap();
    assert_eq!(
        delivered(&mut s),
        [vec![101], vec![102], vec![103], vec![104]]
    );
    assert_eq!((s.next_expected(), s.reorder_buffered().0), (105, 0));
}

#[test]
fn duplicates_are_acknowledged_again_and_delivered_once() {
    let mut s = server(base().epoch_limit(5).window_of(4).build());
    s.handle(Message::data(1, 101, b"a")).unwrap();
    s.handle(Message::data(1, 103, b"c")).unwrap();
    drain(&mut s);
    s.handle(Message::data(1, 101, b"a")).unwrap(); // below the window
    s.handle(Message::data(1, 103, b"c")).unwrap(); // already buffered
    assert_eq!(drain(&mut s), [Message::ack(1, 101), Message::ack(1, 103)]);
    assert_eq!(s.counters().duplicates_received, 2);
    s.handle(Message::data(1, 102, b"b")).unwrap();
    assert_eq!(
        delivered(&mut s),
        [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
}

#[test]
fn data_beyond_the_window_is_dropped_unacknowledged_and_unbuffered() {
    let mut s = server(base().epoch_limit(5).window_of(3).build());
    assert_eq!(
        s.handle(Message::data(1, 104, b"far")),
        Err(Rejected::OutsideWindow)
    );
    assert_eq!(
        s.handle(Message::data(1, u64::MAX, b"very far")),
        Err(Rejected::OutsideWindow)
    );
    assert_eq!(drain(&mut s), []);
    assert_eq!(s.reorder_buffered().0, 0);
    s.handle(Message::data(1, 103, b"edge")).unwrap(); // e + W - 1: inside
    assert_eq!(s.reorder_buffered().0, 1);
}

#[test]
fn cack_acknowledges_everything_up_to_its_sequence_number() {
    let mut c = client(base().epoch_limit(100).window_of(8).build());
    for i in 0..8u8 {
        c.write(vec![i]);
    }
    drain(&mut c);
    c.handle(Message::cack(1, 105)).unwrap();
    assert_eq!(c.in_flight().collect::<Vec<_>>(), [106, 107, 108]);
    assert_eq!(c.oldest_unacked(), 106);
    // A CAck below the window changes nothing.
    c.handle(Message::cack(1, 102)).unwrap();
    assert_eq!(c.unacked(), 3);
    // No retransmission of what the CAck covered.
    c.on_epoch();
    assert_eq!(data_seqs(&drain(&mut c)), [106, 107, 108]);
}

#[test]
fn acks_for_unsent_sequence_numbers_are_ignored() {
    let mut c = client(base().epoch_limit(100).window_of(2).build());
    for i in 0..4u8 {
        c.write(vec![i]);
    }
    assert_eq!(data_seqs(&drain(&mut c)), [101, 102]);
    assert_eq!(c.handle(Message::ack(1, 103)), Err(Rejected::UnsentAck));
    assert_eq!(c.handle(Message::cack(1, 104)), Err(Rejected::UnsentAck));
    assert_eq!(
        c.handle(Message::ack(1, u64::MAX)),
        Err(Rejected::UnsentAck)
    );
    assert_eq!((c.unacked(), c.queued(), c.oldest_unacked()), (2, 2, 101));
    assert!(data_seqs(&drain(&mut c)).is_empty());
}

#[test]
fn integrity_rules_for_received_data() {
    let mut s = server(base().epoch_limit(5).window_of(4).build());
    let good = Message::data(1, 101, b"payload");

    let mut short = good.clone();
    short.payload = Cow::Owned(b"pay".to_vec());
    assert_eq!(s.handle(short), Err(Rejected::Corrupt));

    let mut corrupt = good.clone();
    corrupt.payload = Cow::Owned(b"Payload".to_vec());
    assert_eq!(s.handle(corrupt), Err(Rejected::Corrupt));
    assert_eq!(drain(&mut s), [], "no Ack for a dropped message");

    let mut long = good.clone();
    long.payload = Cow::Owned(b"payload plus junk".to_vec());
    s.handle(long).unwrap();
    assert_eq!(
        delivered(&mut s),
        [b"payload".to_vec()],
        "truncated to Size"
    );
    assert_eq!(s.counters().corrupt_received, 2);
}

#[test]
fn close_drains_then_reports_drained_once() {
    let mut c = client(base().epoch_limit(100).window_of(2).build());
    for i in 0..3u8 {
        c.write(vec![i]);
    }
    drain(&mut c);
    c.close();
    assert_eq!(c.phase(), Phase::Closing);
    c.write(b"too late".to_vec());
    assert_eq!(c.queued(), 1, "writes after close are ignored");
    // Data received while closing is acknowledged but not delivered.
    c.handle(Message::data(1, 101, b"in")).unwrap();
    assert_eq!(drain(&mut c), [Message::ack(1, 101)]);
    assert!(delivered(&mut c).is_empty());
    c.handle(Message::ack(1, 101)).unwrap();
    c.handle(Message::ack(1, 102)).unwrap();
    assert_eq!(data_seqs(&drain(&mut c)), [103]);
    assert_eq!(events(&mut c), []);
    c.handle(Message::ack(1, 103)).unwrap();
    assert_eq!(events(&mut c), [Event::Drained]);
    assert_eq!(c.phase(), Phase::Drained);
    assert!(c.is_idle());
}

#[test]
fn close_with_nothing_pending_drains_at_once() {
    let mut c = client(base().epoch_limit(5).window_of(1).build());
    c.close();
    assert_eq!(events(&mut c), [Event::Drained]);
}

#[test]
fn loss_sets_aside_what_was_never_acknowledged() {
    let mut c = client(base().epoch_limit(2).window_of(2).build());
    for i in 0..5u8 {
        c.write(vec![i]);
    }
    drain(&mut c);
    c.handle(Message::ack(1, 101)).unwrap();
    c.on_epoch();
    c.on_epoch();
    assert_eq!(events(&mut c), [Event::Lost]);
    assert_eq!(c.take_orphans(), [vec![1], vec![2], vec![3], vec![4]]);
    assert!(c.is_idle());
}

/// Found by the simulator: both ends close before reading everything. Each
/// must keep its receive window moving while closing (acknowledging and
/// discarding), or each side's last message stays outside the other's
/// window forever and neither close completes.
#[test]
fn both_sides_closing_with_data_in_flight_still_drain() {
    let p = base().epoch_limit(100).window_of(1).build();
    let mut c = client(p);
    let mut s = server(p);
    for i in 0..3u8 {
        c.write(vec![i]);
        s.write(vec![i]);
    }
    c.close();
    s.close();
    let mut epochs = 0;
    while !(c.phase() == Phase::Drained && s.phase() == Phase::Drained) {
        // Exchange everything in flight, then let an epoch pass.
        for _ in 0..4 {
            for m in drain(&mut c) {
                let _ = s.handle(m);
            }
            for m in drain(&mut s) {
                let _ = c.handle(m);
            }
        }
        c.on_epoch();
        s.on_epoch();
        epochs += 1;
        assert!(
            epochs < 20,
            "close livelocked: client {:?}, server {:?}",
            c.phase(),
            s.phase()
        );
    }
    assert!(
        delivered(&mut c).is_empty() && delivered(&mut s).is_empty(),
        "nothing delivered after close"
    );
}
