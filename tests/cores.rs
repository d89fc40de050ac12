//! Deterministic tests of the decisions of `ServerCore` (the connection
//! table) and `ClientCore` (connect, timeout, reconnection): no sockets, no
//! clock. Time is an `Instant` the test moves by hand; an epoch is whatever
//! the test says it is (`handle_epoch`).

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::TestParams;
use liveseq::proto::{
    ClientConfig, ClientCore, ClientOutput, ConnectFailure, CoreError, Limit, Message,
    PolledServer, ServerConfig, ServerOutput, AMPLIFICATION_FACTOR, CHALLENGE_EPOCHS,
    CONNECT_REACKS, EVENT_COST, MAX_CONN_ID, MAX_UNANSWERED, MESSAGE_OVERHEAD,
};
use liveseq::{ConnId, ConnState, Params, ReconnectPolicy, ServerEvent};

const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 9000);

fn addr(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), port)
}

/// What every test here starts from: epochs of 100 ms, window and max
/// unacked 4; each names its epoch limit.
fn base() -> TestParams {
    TestParams::new().epoch_millis(100).window(4).max_unacked(4)
}

/// `ServerConfig::new(p)` with sequential connection ids (1, 2, 3, ...), so
/// that expected outputs can name them.
fn seq_config(p: Params) -> ServerConfig {
    let mut c = ServerConfig::new(p);
    c.id_seed = None;
    c
}

fn id(n: u32) -> ConnId {
    ConnId::from(n)
}

fn sent(core: &mut PolledServer) -> Vec<(SocketAddr, Message<'static>)> {
    std::iter::from_fn(|| core.poll_transmit().map(|(to, m)| (to, m.into_owned()))).collect()
}

fn outputs(core: &mut PolledServer) -> Vec<ServerOutput> {
    std::iter::from_fn(|| core.poll_output()).collect()
}

fn client_sent(core: &mut ClientCore) -> Vec<Message<'static>> {
    std::iter::from_fn(|| {
        core.poll_transmit().map(|(to, m)| {
            assert_eq!(to, SERVER);
            m.into_owned()
        })
    })
    .collect()
}

fn client_outputs(core: &mut ClientCore) -> Vec<ClientOutput> {
    std::iter::from_fn(|| core.poll_output()).collect()
}

fn state(id: Option<u32>, peer: SocketAddr, state: ConnState, at: Instant) -> ServerOutput {
    ServerOutput::State {
        conn_id: id.map(ConnId::from),
        peer,
        state,
        at,
    }
}

fn connected(n: u32, peer: SocketAddr, at: Instant) -> Vec<ServerOutput> {
    vec![
        state(Some(n), peer, ConnState::Connected, at),
        ServerOutput::App(ServerEvent::Connected { id: id(n), peer }),
    ]
}

fn lost(n: u32, peer: SocketAddr, at: Instant) -> Vec<ServerOutput> {
    vec![
        ServerOutput::App(ServerEvent::Lost { id: id(n) }),
        state(Some(n), peer, ConnState::Lost, at),
    ]
}

/// A server with `config`, and `isn` connected from `from` as its next id.
fn server_with(config: ServerConfig, now: Instant, from: SocketAddr, isn: u64) -> PolledServer {
    let mut s = PolledServer::new(config);
    s.handle_message(now, from, Message::connect(isn));
    let ack = sent(&mut s);
    assert_eq!(ack.len(), 1);
    assert_eq!(ack[0].1.seq_num, isn);
    outputs(&mut s);
    s
}

// ----- ServerCore -----

#[test]
fn duplicate_connect_gets_the_same_ack_and_no_new_connection() {
    let now = Instant::now();
    let a = addr(1);
    let mut s = PolledServer::new(seq_config(base().epoch_limit(5).build()));
    s.handle_message(now, a, Message::connect(7));
    assert_eq!(sent(&mut s), [(a, Message::ack(1, 7))]);
    assert_eq!(outputs(&mut s), connected(1, a, now));
    for _ in 0..3 {
        s.handle_message(now, a, Message::connect(7));
        assert_eq!(sent(&mut s), [(a, Message::ack(1, 7))]);
        assert_eq!(outputs(&mut s), []);
    }
    assert_eq!(s.connections(), [id(1)]);
    let t = s.totals();
    assert_eq!((t.accepted, t.duplicate_connects, t.active), (1, 3, 1));
}

/// RFC 5961: a Connect with another ISN from the address of a live
/// connection may be forged by anyone who knows the address. It challenges
/// the connection: nothing is sent for it for `CHALLENGE_EPOCHS` epochs, and
/// anything carrying its id from its address keeps it, unchanged.
#[test]
fn a_new_isn_from_a_live_connections_address_challenges_it_and_an_answer_keeps_it() {
    assert_eq!(CHALLENGE_EPOCHS, 2);
    let mut now = Instant::now();
    let a = addr(1);
    let mut s = server_with(seq_config(base().epoch_limit(5).build()), now, a, 7);
    s.handle_message(now, a, Message::ack(1, 0));
    assert_eq!(sent(&mut s), [(a, Message::ack(1, 0))]);
    s.write(now, id(1), b"x").unwrap();
    assert_eq!(sent(&mut s), [(a, Message::data(1, 8, b"x"))]);
    s.handle_message(now, a, Message::connect(8));
    // Neither a new connection nor an end, and no answer on the wire.
    assert_eq!((outputs(&mut s), sent(&mut s)), (vec![], vec![]));
    assert_eq!(s.totals().challenged_connects, 1);
    // Repeated, it neither restarts nor counts a second challenge.
    s.handle_message(now, a, Message::connect(8));
    assert_eq!((outputs(&mut s), sent(&mut s)), (vec![], vec![]));
    assert_eq!(s.totals().challenged_connects, 1);
    // The first epoch of the challenge: the retransmission of "x" is held
    // back (the address may belong to a restarted client now).
    now += Duration::from_millis(100);
    s.handle_epoch(now);
    assert_eq!((outputs(&mut s), sent(&mut s)), (vec![], vec![]));
    // The connection's peer answers: a heartbeat carrying its id.
    s.handle_message(now, a, Message::ack(1, 0));
    assert_eq!((outputs(&mut s), sent(&mut s)), (vec![], vec![]));
    // Past the second epoch it lives on and talks again.
    for epoch in 2..=4 {
        now += Duration::from_millis(100);
        s.handle_message(now, a, Message::ack(1, 0));
        s.handle_epoch(now);
        assert_eq!(outputs(&mut s), [], "epoch {epoch}");
        assert_eq!(
            sent(&mut s),
            [(a, Message::data(1, 8, b"x"))],
            "epoch {epoch}"
        );
    }
    s.handle_message(now, a, Message::ack(1, 8));
    assert_eq!(s.connections(), [id(1)]);
    assert_eq!(s.conn_at(a), Some(id(1)));
    assert_eq!(s.state(id(1)), Some(ConnState::Connected));
    let t = s.totals();
    assert_eq!(
        (t.accepted, t.lost, t.challenged_connects, t.active),
        (1, 0, 1, 1)
    );
}

/// An unanswered challenge ends the connection `Lost` at its second epoch;
/// the Connect that challenged it gets nothing, the client's next one (a
/// resend) is admitted.
#[test]
fn an_unanswered_challenge_ends_the_connection_and_the_next_connect_gets_in() {
    let mut now = Instant::now();
    let a = addr(1);
    let mut s = server_with(seq_config(base().epoch_limit(5).build()), now, a, 7);
    s.handle_message(now, a, Message::ack(1, 0));
    assert_eq!(sent(&mut s), [(a, Message::ack(1, 0))]);
    s.handle_message(now, a, Message::connect(8));
    assert_eq!((outputs(&mut s), sent(&mut s)), (vec![], vec![]));
    // First epoch: no heartbeat for connection 1, no end yet.
    now += Duration::from_millis(100);
    s.handle_epoch(now);
    assert_eq!((outputs(&mut s), sent(&mut s)), (vec![], vec![]));
    // The resent Connect is still not admitted while the challenge runs.
    s.handle_message(now, a, Message::connect(8));
    assert_eq!((outputs(&mut s), sent(&mut s)), (vec![], vec![]));
    assert_eq!(s.connections(), [id(1)]);
    now += Duration::from_millis(100);
    s.handle_epoch(now);
    assert_eq!(outputs(&mut s), lost(1, a, now));
    assert_eq!(sent(&mut s), []);
    assert_eq!(s.connections(), []);
    assert!(s.conn(id(1)).is_none() && s.state(id(1)).is_none());
    assert!(matches!(s.write(now, id(1), b"x"), Err(CoreError::ConnectionLost(c)) if c == id(1)));
    // The client's next Connect.
    s.handle_message(now, a, Message::connect(8));
    assert_eq!(outputs(&mut s), connected(2, a, now));
    assert_eq!(sent(&mut s), [(a, Message::ack(2, 8))]);
    assert_eq!(s.conn_at(a), Some(id(2)));
    let t = s.totals();
    assert_eq!(
        (t.lost, t.accepted, t.challenged_connects, t.active),
        (1, 2, 1, 1)
    );
}

/// `close_conn` is the decision to show the application nothing more of a
/// connection but its `Closed`: messages not yet polled are dropped (and no
/// longer count as unread), and `Discard` tells the driver to drop those it
/// already passed on.
#[test]
fn close_conn_drops_unpolled_messages_and_says_to_discard_the_rest() {
    let now = Instant::now();
    let (a, b) = (addr(1), addr(2));
    let mut s = server_with(seq_config(base().epoch_limit(5).build()), now, a, 100);
    s.handle_message(now, b, Message::connect(200));
    outputs(&mut s);
    s.handle_message(now, a, Message::data(1, 101, b"one"));
    s.handle_message(now, b, Message::data(2, 201, b"other"));
    s.handle_message(now, a, Message::data(1, 102, b"two"));
    sent(&mut s);
    s.close_conn(now, id(1)).unwrap();
    assert_eq!(
        outputs(&mut s),
        [
            ServerOutput::App(ServerEvent::Message {
                id: id(2),
                payload: b"other".to_vec(),
            }),
            ServerOutput::Discard { id: id(1) },
            state(Some(1), a, ConnState::Closing, now),
            ServerOutput::App(ServerEvent::Closed { id: id(1) }),
            // Nothing it wrote waits for an acknowledgement.
            state(Some(1), a, ConnState::Closed, now),
        ]
    );
}

/// A connection the application closed ends without an application event
/// when it leaves to an unanswered challenge: its `Closed` was its last one.
#[test]
fn a_closed_connection_ended_by_a_challenge_reports_no_second_app_event() {
    let mut now = Instant::now();
    let a = addr(1);
    let mut s = server_with(seq_config(base().epoch_limit(5).build()), now, a, 7);
    s.write(now, id(1), b"unacked").unwrap();
    s.close_conn(now, id(1)).unwrap();
    assert_eq!(
        outputs(&mut s),
        [
            ServerOutput::Discard { id: id(1) },
            state(Some(1), a, ConnState::Closing, now),
            ServerOutput::App(ServerEvent::Closed { id: id(1) }),
        ]
    );
    sent(&mut s);
    s.handle_message(now, a, Message::connect(8));
    assert_eq!(outputs(&mut s), []);
    now += Duration::from_millis(100);
    s.handle_epoch(now);
    assert_eq!((outputs(&mut s), sent(&mut s)), (vec![], vec![]));
    now += Duration::from_millis(100);
    s.handle_epoch(now);
    assert_eq!(outputs(&mut s), [state(Some(1), a, ConnState::Lost, now)]);
    assert_eq!(sent(&mut s), []);
    s.handle_message(now, a, Message::connect(8));
    assert_eq!(outputs(&mut s), connected(2, a, now));
}

/// Ends connection `n` (isn `isn`, from `a`) by silence; returns the time.
fn lose_by_silence(s: &mut PolledServer, mut now: Instant, n: u32, a: SocketAddr) -> Instant {
    let limit = s.config().params.epoch_limit;
    for _ in 1..limit {
        now += Duration::from_millis(100);
        s.handle_epoch(now);
        assert_eq!(outputs(s), []);
        sent(s);
    }
    now += Duration::from_millis(100);
    s.handle_epoch(now);
    assert_eq!(outputs(s), lost(n, a, now));
    now
}

#[test]
fn late_duplicate_connect_of_an_ended_connection_is_ignored_for_epoch_limit_epochs() {
    let limit = 3;
    let mut now = Instant::now();
    let (a, b) = (addr(1), addr(2));
    let mut s = server_with(seq_config(base().epoch_limit(limit).build()), now, a, 7);
    now = lose_by_silence(&mut s, now, 1, a);
    for _ in 0..limit {
        s.handle_message(now, a, Message::connect(7));
        assert_eq!((outputs(&mut s), sent(&mut s)), (vec![], vec![]));
        now += Duration::from_millis(100);
        s.handle_epoch(now);
    }
    // Forgotten now: the same ISN is a new client.
    s.handle_message(now, a, Message::connect(7));
    assert_eq!(outputs(&mut s), connected(2, a, now));
    // A different ISN is never taken for a late duplicate.
    let mut s = server_with(seq_config(base().epoch_limit(limit).build()), now, b, 7);
    now = lose_by_silence(&mut s, now, 1, b);
    s.handle_message(now, b, Message::connect(9));
    assert_eq!(outputs(&mut s), connected(2, b, now));
}

/// Found writing the simulator's model of the table (the simulator catches
/// it too, through storm senders that change ISN): a late duplicate of the
/// Connect that opened an ended connection arrives after the client at that
/// address connected again (a reconnect or a restart, with a new ISN). It
/// must not replace the live connection with a ghost.
#[test]
fn late_duplicate_connect_never_replaces_a_newer_connection() {
    let mut now = Instant::now();
    let a = addr(1);
    // Ended by silence, then a new incarnation connects.
    let mut s = server_with(seq_config(base().epoch_limit(3).build()), now, a, 7);
    now = lose_by_silence(&mut s, now, 1, a);
    s.handle_message(now, a, Message::connect(8));
    assert_eq!(outputs(&mut s), connected(2, a, now));
    sent(&mut s);
    s.handle_message(now, a, Message::connect(7));
    assert_eq!((outputs(&mut s), sent(&mut s)), (vec![], vec![]));
    assert_eq!(s.connections(), [id(2)]);

    // Ended by an unanswered challenge: its own late Connect must not
    // come back once the new one is admitted.
    let mut s = server_with(seq_config(base().epoch_limit(3).build()), now, a, 7);
    s.handle_message(now, a, Message::connect(8));
    for _ in 0..CHALLENGE_EPOCHS {
        now += Duration::from_millis(100);
        s.handle_epoch(now);
    }
    assert_eq!(outputs(&mut s), lost(1, a, now));
    s.handle_message(now, a, Message::connect(8));
    assert_eq!(outputs(&mut s), connected(2, a, now));
    sent(&mut s);
    s.handle_message(now, a, Message::connect(7));
    assert_eq!((outputs(&mut s), sent(&mut s)), (vec![], vec![]));
    assert_eq!(s.connections(), [id(2)]);
    assert_eq!(s.totals().duplicate_connects, 1);
}

#[test]
fn the_limit_admits_exactly_n_of_a_storm_and_refuses_once_per_address_per_epoch() {
    let mut now = Instant::now();
    let mut config = seq_config(base().epoch_limit(3).build());
    config.max_connections = 3;
    let mut s = PolledServer::new(config);
    let storm: Vec<SocketAddr> = (1..=10).map(addr).collect();
    for round in 0..3 {
        // The admitted ones prove their address at once with one heartbeat
        // (unvalidated ones would make way for the storm: see
        // `unvalidated_connections_make_way_at_the_connection_limit`) and
        // say nothing more; the others keep trying.
        let skip = if round == 0 { 0 } else { 3 };
        for (i, &a) in storm.iter().enumerate().skip(skip) {
            s.handle_message(now, a, Message::connect(100 + i as u64));
            if round == 0 && i < 3 {
                s.handle_message(now, a, Message::ack(i as u32 + 1, 0));
            }
        }
        let outs = outputs(&mut s);
        let admitted: Vec<SocketAddr> = outs
            .iter()
            .filter_map(|o| match o {
                ServerOutput::App(ServerEvent::Connected { peer, .. }) => Some(*peer),
                _ => None,
            })
            .collect();
        let refused: Vec<SocketAddr> = outs
            .iter()
            .filter_map(|o| match o {
                ServerOutput::State {
                    conn_id: None,
                    peer,
                    state: ConnState::Refused,
                    ..
                } => Some(*peer),
                _ => None,
            })
            .collect();
        // Round 0: the first three in; every round: one Refused per other
        // address (the second pass of a round adds none).
        assert_eq!(admitted, if round == 0 { &storm[..3] } else { &[] });
        assert_eq!(refused, &storm[3..], "round {round}");
        for (i, &a) in storm.iter().enumerate().skip(3) {
            s.handle_message(now, a, Message::connect(100 + i as u64));
        }
        assert_eq!(outputs(&mut s), []);
        assert_eq!(s.connections().len(), 3);
        // Refused Connects earn nothing on the wire.
        assert!(sent(&mut s).iter().all(|(to, _)| storm[..3].contains(to)));
        now += Duration::from_millis(100);
        s.handle_epoch(now);
        outputs(&mut s);
    }
    assert_eq!(s.totals().refused, 3 * 2 * 7);
    // The three were reaped (silent since their heartbeat): a refused
    // address gets in.
    assert_eq!(s.connections(), []);
    s.handle_message(now, storm[9], Message::connect(109));
    assert_eq!(outputs(&mut s), connected(4, storm[9], now));
}

#[test]
fn data_naming_a_connection_of_another_address_is_rejected_and_counted() {
    let mut now = Instant::now();
    let (a, b, stranger) = (addr(1), addr(2), addr(3));
    let mut s = server_with(seq_config(base().epoch_limit(3).build()), now, a, 7);
    s.handle_message(now, b, Message::connect(70));
    outputs(&mut s);
    sent(&mut s);
    let before = s.totals().rejected;
    s.handle_message(now, b, Message::data(1, 8, b"hijack"));
    s.handle_message(now, b, Message::ack(1, 0));
    s.handle_message(now, stranger, Message::data(1, 8, b"hijack"));
    s.end_batch(now);
    assert_eq!(s.totals().rejected, before + 3);
    assert_eq!(outputs(&mut s), []);
    assert_eq!(sent(&mut s), []);
    // Heartbeats from the wrong address do not keep connection 1 alive;
    // its own do.
    for e in 1..=3 {
        now += Duration::from_millis(100);
        s.handle_message(now, b, Message::ack(1, 0));
        s.handle_message(now, a, Message::ack(1, 0));
        s.handle_message(now, b, Message::ack(2, 0));
        s.handle_epoch(now);
        assert_eq!(outputs(&mut s), [], "epoch {e}");
        sent(&mut s);
    }
    // Silent for one epoch since the last one it heard: two more to go.
    now += Duration::from_millis(100);
    s.handle_message(now, b, Message::ack(1, 0));
    s.handle_message(now, b, Message::ack(2, 0));
    s.handle_epoch(now);
    assert_eq!(outputs(&mut s), []);
    now += Duration::from_millis(100);
    s.handle_message(now, b, Message::ack(2, 0));
    s.handle_epoch(now);
    assert_eq!(outputs(&mut s), lost(1, a, now));
    assert_eq!(s.connections(), [id(2)]);
}

#[test]
fn close_drains_then_reports_drained_exactly_once() {
    let mut now = Instant::now();
    let (a, b) = (addr(1), addr(2));
    let mut s = server_with(seq_config(base().epoch_limit(5).build()), now, a, 7);
    s.handle_message(now, a, Message::ack(1, 0));
    s.write(now, id(1), b"last words").unwrap();
    sent(&mut s);
    s.close(now);
    assert_eq!(
        outputs(&mut s),
        [state(Some(1), a, ConnState::Closing, now)]
    );
    assert!(
        matches!(s.write(now, id(1), b"more"), Err(CoreError::ConnectionClosed(c)) if c == id(1))
    );
    // No new connections while closing.
    s.handle_message(now, b, Message::connect(70));
    assert_eq!(outputs(&mut s), [state(None, b, ConnState::Refused, now)]);
    // Unacknowledged: no Drained, however many epochs (short of the limit).
    for _ in 0..3 {
        now += Duration::from_millis(100);
        s.handle_message(now, a, Message::ack(1, 0));
        s.handle_epoch(now);
        assert_eq!(outputs(&mut s), []);
    }
    s.handle_message(now, a, Message::ack(1, 8));
    assert_eq!(
        outputs(&mut s),
        [
            state(Some(1), a, ConnState::Closed, now),
            ServerOutput::Drained
        ]
    );
    s.close(now);
    s.handle_message(now, a, Message::ack(1, 8));
    now += Duration::from_millis(100);
    s.handle_epoch(now);
    assert_eq!(outputs(&mut s), []);
    assert_eq!(s.connections(), []);
}

#[test]
fn flow_control_inbox_and_send_buffer() {
    let now = Instant::now();
    let a = addr(1);
    let mut config = seq_config(base().epoch_limit(5).build());
    config.coalesce_acks = false;
    config.inbox_limit = Limit {
        messages: 2,
        bytes: usize::MAX,
    };
    config.send_buffer_limit = Limit {
        messages: 2,
        bytes: usize::MAX,
    };
    let mut s = server_with(config, now, a, 100);
    for sn in 101..=103 {
        s.handle_message(now, a, Message::data(1, sn, b"m"));
    }
    // The third is neither delivered nor acknowledged: the inbox is full.
    // It is held, and the connection says so.
    assert_eq!(
        sent(&mut s),
        [(a, Message::ack(1, 101)), (a, Message::ack(1, 102))]
    );
    let message = |p: &[u8]| {
        ServerOutput::App(ServerEvent::Message {
            id: id(1),
            payload: p.to_vec(),
        })
    };
    let withholding = |withholding| ServerOutput::Withholding {
        id: id(1),
        withholding,
    };
    assert_eq!(
        outputs(&mut s),
        [message(b"m"), message(b"m"), withholding(true)]
    );
    assert_eq!(s.conn(id(1)).unwrap().counters().withheld, 1);
    // A read takes and acknowledges it at once: no epoch, no resend.
    s.read_done(now, id(1), 1, 1);
    assert_eq!(sent(&mut s), [(a, Message::ack(1, 103))]);
    assert_eq!(outputs(&mut s), [withholding(false), message(b"m")]);
    // The sender's resend is a duplicate now: acknowledged, not delivered.
    s.handle_message(now, a, Message::data(1, 103, b"m"));
    assert_eq!(sent(&mut s), [(a, Message::ack(1, 103))]);
    assert_eq!(outputs(&mut s), []);
    s.read_done(now, id(1), 2, 2);

    // The send buffer: two unacknowledged fill it. `write` still queues
    // (the connection is then not writable), `try_write` refuses.
    assert!(!s.is_full(id(1)) && s.is_writable(id(1)));
    s.write(now, id(1), b"x").unwrap();
    s.write(now, id(1), b"y").unwrap();
    assert!(s.is_full(id(1)) && !s.is_writable(id(1)));
    assert!(matches!(
        s.try_write(now, id(1), b"z"),
        Err(CoreError::BufferFull)
    ));
    s.write(now, id(1), b"z").unwrap();
    assert_eq!(
        sent(&mut s),
        [
            (a, Message::data(1, 101, b"x")),
            (a, Message::data(1, 102, b"y")),
            (a, Message::data(1, 103, b"z")),
        ]
    );
    assert_eq!(s.totals().not_writable, 1);
    // While it is not writable its peer's messages are acknowledged (the
    // inbox has room) but held back from the application.
    s.handle_message(now, a, Message::data(1, 104, b"held"));
    assert_eq!(sent(&mut s), [(a, Message::ack(1, 104))]);
    assert_eq!(outputs(&mut s), []);
    // One acknowledged: still above half the limit (1 message).
    s.handle_message(now, a, Message::ack(1, 101));
    assert!(!s.is_writable(id(1)));
    assert_eq!(outputs(&mut s), []);
    // Two: drained to half. The held message, then `Writable`, then
    // `Room` for the writer the full buffer turned away.
    s.handle_message(now, a, Message::ack(1, 102));
    assert!(s.is_writable(id(1)));
    assert_eq!(
        outputs(&mut s),
        [
            message(b"held"),
            ServerOutput::App(ServerEvent::Writable { id: id(1) }),
            ServerOutput::Room { id: id(1) },
        ]
    );
    assert_eq!(s.totals().not_writable, 0);
    assert!(!s.is_full(id(1)));
    s.try_write(now, id(1), b"w").unwrap();

    // The client's send buffer too.
    let mut config = ClientConfig::new(base().epoch_limit(5).build());
    config.send_buffer_limit = Limit {
        messages: 1,
        bytes: usize::MAX,
    };
    let mut c = ClientCore::new(now, SERVER, 5, config);
    c.write(now, b"queued while connecting").unwrap();
    assert!(c.is_full());
    assert!(matches!(
        c.write(now, b"no room"),
        Err(CoreError::BufferFull)
    ));
}

#[test]
fn connection_ids_are_random_unique_and_within_go_int32() {
    let now = Instant::now();
    let ids_with = |seed: Option<u64>| -> Vec<u32> {
        let mut config = seq_config(base().epoch_limit(5).build());
        config.id_seed = seed;
        let mut s = PolledServer::new(config);
        (1..=500)
            .map(|port| {
                s.handle_message(now, addr(port), Message::connect(7));
                let ack = sent(&mut s);
                assert_eq!(ack.len(), 1);
                assert_eq!(s.conn_at(addr(port)), Some(id(ack[0].1.conn_id)));
                ack[0].1.conn_id
            })
            .collect()
    };
    let ids = ids_with(Some(1));
    assert!(ids.iter().all(|&n| (1..=MAX_CONN_ID).contains(&n)));
    assert_eq!(MAX_CONN_ID, (1 << 31) - 1);
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len());
    // Not a sequence anyone can guess, and spread over the whole range.
    assert_ne!(ids, (1..=500).collect::<Vec<u32>>());
    assert!(ids.iter().any(|&n| n > MAX_CONN_ID / 2) && ids.iter().any(|&n| n <= MAX_CONN_ID / 2));
    // A seed replays; another seed does not; `None` counts 1, 2, 3...
    assert_eq!(ids_with(Some(1)), ids);
    assert_ne!(ids_with(Some(2)), ids);
    assert_eq!(ids_with(None), (1..=500).collect::<Vec<u32>>());
    // `ServerConfig::new` draws a seed.
    let (x, y) = (
        ServerConfig::new(base().epoch_limit(5).build()),
        ServerConfig::new(base().epoch_limit(5).build()),
    );
    assert!(x.id_seed.is_some() && x.id_seed != y.id_seed);
}

/// Over many epochs, with the application writing to it, an address that
/// sent only Connects is sent at most `AMPLIFICATION_FACTOR` times what it
/// sent; once it proves its address (a heartbeat with the id), everything
/// flows.
#[test]
fn an_unvalidated_address_gets_at_most_three_times_what_it_sent() {
    let start = Instant::now();
    let mut now = start;
    let a = addr(1);
    let mut s = PolledServer::new(seq_config(base().epoch_limit(5).build()));
    let connect = Message::connect(7);
    let (mut bytes_in, mut bytes_out) = (encoded_len(&connect), 0);
    s.handle_message(now, a, connect.clone());
    for i in 0..4u8 {
        s.write(now, id(1), &[b'a' + i; 50]).unwrap();
    }
    let mut attempts = 0;
    for epoch in 1..=40 {
        for (to, m) in sent(&mut s) {
            assert_eq!(to, a);
            bytes_out += encoded_len(&m);
            attempts += 1;
        }
        assert!(
            bytes_out <= AMPLIFICATION_FACTOR * bytes_in,
            "epoch {epoch}: {bytes_out} bytes out for {bytes_in} in"
        );
        // A client that heard nothing resends its Connect every other
        // epoch, which keeps the connection alive.
        if epoch % 2 == 1 {
            bytes_in += encoded_len(&connect);
            s.handle_message(now, a, connect.clone());
        }
        now += Duration::from_millis(100);
        s.handle_epoch(now);
    }
    for (to, m) in sent(&mut s) {
        assert_eq!(to, a);
        bytes_out += encoded_len(&m);
        attempts += 1;
    }
    assert!(bytes_out <= AMPLIFICATION_FACTOR * bytes_in);
    assert!(!s.is_validated(id(1)));
    assert_eq!(s.totals().unvalidated, 1);
    assert!(attempts > 0 && s.totals().amplification_held_bytes > bytes_out);
    assert_eq!(outputs(&mut s), connected(1, a, start));
    // Validated: the four messages go out at the next epoch at the latest.
    s.handle_message(now, a, Message::ack(1, 0));
    assert!(s.is_validated(id(1)));
    assert_eq!(s.totals().unvalidated, 0);
    now += Duration::from_millis(100);
    s.handle_epoch(now);
    let data: Vec<Message<'static>> = sent(&mut s)
        .into_iter()
        .map(|(_, m)| m)
        .filter(|m| m.kind == liveseq::proto::MsgType::Data)
        .collect();
    let expected: Vec<Message<'static>> = (0..4u8)
        .map(|i| Message::data(1, 8 + u64::from(i), &[b'a' + i; 50]).into_owned())
        .collect();
    assert_eq!(data, expected);
}

/// At `max_unvalidated`, the oldest connection that never proved its
/// address makes way for a new Connect; validated ones never do.
#[test]
fn the_oldest_unvalidated_connection_makes_way_at_max_unvalidated() {
    let now = Instant::now();
    let mut config = seq_config(base().epoch_limit(5).build());
    config.max_unvalidated = 2;
    let mut s = PolledServer::new(config);
    let [a, b, c, d, e] = [1, 2, 3, 4, 5].map(addr);
    for from in [a, b] {
        s.handle_message(now, from, Message::connect(7));
    }
    outputs(&mut s);
    assert_eq!(s.totals().unvalidated, 2);
    s.handle_message(now, c, Message::connect(7));
    let mut expected = lost(1, a, now);
    expected.extend(connected(3, c, now));
    assert_eq!(outputs(&mut s), expected);
    assert_eq!(s.connections(), [id(2), id(3)]);
    // Connection 2 proves its address: only 3 is unvalidated, room for one.
    s.handle_message(now, b, Message::ack(2, 0));
    assert!(s.is_validated(id(2)));
    s.handle_message(now, d, Message::connect(7));
    assert_eq!(outputs(&mut s), connected(4, d, now));
    s.handle_message(now, e, Message::connect(7));
    let mut expected = lost(3, c, now);
    expected.extend(connected(5, e, now));
    assert_eq!(outputs(&mut s), expected);
    assert_eq!(s.connections(), [id(2), id(4), id(5)]);
    let t = s.totals();
    assert_eq!(
        (
            t.evicted_unvalidated,
            t.lost,
            t.unvalidated,
            t.accepted,
            t.refused
        ),
        (2, 2, 2, 5, 0)
    );
    // An evicted connection's late Connect is a duplicate, not a new one.
    s.handle_message(now, a, Message::connect(7));
    assert_eq!((outputs(&mut s), s.connections().len()), (vec![], 3));
}

/// At the connection limit too: a storm of Connects from addresses that
/// never prove themselves cycles through unvalidated slots and never
/// displaces a validated connection; with none to evict, it is refused.
#[test]
fn unvalidated_connections_make_way_at_the_connection_limit() {
    let now = Instant::now();
    let mut config = seq_config(base().epoch_limit(5).build());
    config.max_connections = 2;
    let mut s = PolledServer::new(config);
    let good = addr(1);
    s.handle_message(now, good, Message::connect(7));
    s.handle_message(now, good, Message::ack(1, 0));
    outputs(&mut s);
    sent(&mut s);
    for n in 2..=6u32 {
        let from = addr(n as u16);
        s.handle_message(now, from, Message::connect(7));
        let mut expected = if n > 2 {
            lost(n - 1, addr(n as u16 - 1), now)
        } else {
            vec![]
        };
        expected.extend(connected(n, from, now));
        assert_eq!(outputs(&mut s), expected, "connect {n}");
    }
    assert_eq!(s.connections(), [id(1), id(6)]);
    // The last one proves itself: nothing left to evict.
    s.handle_message(now, addr(6), Message::ack(6, 0));
    s.handle_message(now, addr(7), Message::connect(7));
    assert_eq!(
        outputs(&mut s),
        [state(None, addr(7), ConnState::Refused, now)]
    );
    let t = s.totals();
    assert_eq!((t.evicted_unvalidated, t.refused, t.active), (4, 1, 2));
}

/// A peer that keeps heartbeating but acknowledges nothing while its
/// connection is not writable is ended `Lost` after the stall limit, what
/// it sent meanwhile is handed out first, and writes then say why.
#[test]
fn a_slow_consumer_ends_lost_after_the_stall_limit() {
    let mut now = Instant::now();
    let a = addr(1);
    let mut config = seq_config(base().epoch_limit(5).build());
    config.send_buffer_limit = Limit {
        messages: 2,
        bytes: usize::MAX,
    };
    let mut s = server_with(config, now, a, 100);
    s.handle_message(now, a, Message::ack(1, 0));
    for p in [b"1", b"2", b"3"] {
        s.write(now, id(1), p).unwrap();
    }
    assert!(!s.is_writable(id(1)));
    s.handle_message(now, a, Message::data(1, 101, b"meanwhile"));
    assert_eq!(outputs(&mut s), []);
    sent(&mut s);
    // With no back-off the oldest message is tried every epoch: its 30
    // tries unanswered (MAX_UNANSWERED) end it when the 31st is due.
    let stall_limit = s.conn(id(1)).unwrap().stall_limit();
    assert_eq!(stall_limit, MAX_UNANSWERED);
    for epoch in 1..stall_limit {
        now += Duration::from_millis(100);
        s.handle_message(now, a, Message::ack(1, 0));
        s.handle_epoch(now);
        assert_eq!(outputs(&mut s), [], "epoch {epoch}");
        assert_eq!(s.conn(id(1)).unwrap().epochs_stalled(), epoch);
        sent(&mut s);
    }
    now += Duration::from_millis(100);
    s.handle_message(now, a, Message::ack(1, 0));
    s.handle_epoch(now);
    let mut expected = vec![ServerOutput::App(ServerEvent::Message {
        id: id(1),
        payload: b"meanwhile".to_vec(),
    })];
    expected.extend(lost(1, a, now));
    assert_eq!(outputs(&mut s), expected);
    assert_eq!(sent(&mut s), []);
    let t = s.totals();
    assert_eq!((t.slow_consumers, t.lost, t.not_writable), (1, 1, 0));
    // Writes say so for `epoch_limit` epochs, then the id is unknown.
    for _ in 0..5 {
        assert!(matches!(s.write(now, id(1), b"x"), Err(CoreError::SlowConsumer(c)) if c == id(1)));
        now += Duration::from_millis(100);
        s.handle_epoch(now);
    }
    assert!(
        matches!(s.write(now, id(1), b"x"), Err(CoreError::UnknownConnection(c)) if c == id(1))
    );
}

/// The server-wide budget: writes that do not fit fail with
/// `BudgetExhausted` and queue nothing, Connects are refused when no
/// unvalidated connection can make way; acknowledgements free it again.
#[test]
fn a_spent_memory_budget_refuses_writes_and_connects() {
    let now = Instant::now();
    let a = addr(1);
    let mut config = seq_config(base().epoch_limit(5).build());
    config.floor = 0;
    // Connections may draw 1,001 bytes of it; the rest (a sixteenth) is
    // the reserve that only admissions use.
    config.budget = 1067;
    assert_eq!(config.shared_budget(), 1001);
    let mut s = server_with(config, now, a, 100);
    s.handle_message(now, a, Message::ack(1, 0));
    sent(&mut s);
    // What the connection's events cost until they are read.
    let base = s.totals().budget_in_use;
    assert!(base > 0 && base % EVENT_COST == 0, "{base}");
    let payload = [7u8; 300];
    let cost = payload.len() + MESSAGE_OVERHEAD;
    s.write(now, id(1), &payload).unwrap();
    s.write(now, id(1), &payload).unwrap();
    assert_eq!(s.totals().budget_in_use, base + 2 * cost);
    assert!(base + 3 * cost > 1001);
    assert!(matches!(
        s.write(now, id(1), &payload),
        Err(CoreError::BudgetExhausted)
    ));
    assert_eq!(s.totals().budget_in_use, base + 2 * cost);
    assert_eq!(
        sent(&mut s),
        [
            (a, Message::data(1, 101, &payload)),
            (a, Message::data(1, 102, &payload))
        ]
    );
    // No room for another connection, and none to evict.
    let b = addr(2);
    s.handle_message(now, b, Message::connect(7));
    assert_eq!(outputs(&mut s), [state(None, b, ConnState::Refused, now)]);
    assert_eq!(sent(&mut s), []);
    let t = s.totals();
    assert_eq!((t.budget_refusals, t.refused, t.active), (2, 1, 1));
    // Acknowledged and the event read: free again.
    s.handle_message(now, a, Message::ack(1, 101));
    s.handle_message(now, a, Message::ack(1, 102));
    s.event_read();
    assert_eq!(s.totals().budget_in_use, base - EVENT_COST);
    s.write(now, id(1), &payload).unwrap();
    s.handle_message(now, b, Message::connect(7));
    assert_eq!(outputs(&mut s), connected(2, b, now));
}

// ----- ClientCore -----

fn connected_client(config: ClientConfig, now: Instant, isn: u64, conn: u32) -> ClientCore {
    let mut c = ClientCore::new(now, SERVER, isn, config);
    assert_eq!(client_sent(&mut c), [Message::connect(isn)]);
    c.handle_message(now, SERVER, Message::ack(conn, isn));
    let outs = client_outputs(&mut c);
    assert!(outs.contains(&ClientOutput::ConnectResult(Ok(id(conn)))));
    c
}

#[test]
fn connect_timeout_after_epoch_limit_epochs() {
    let limit = 4;
    let mut now = Instant::now();
    let mut c = ClientCore::new(
        now,
        SERVER,
        5,
        ClientConfig::new(base().epoch_limit(limit).build()),
    );
    assert_eq!(
        client_outputs(&mut c),
        [ClientOutput::State {
            conn_id: None,
            state: ConnState::Connecting,
            at: now
        }]
    );
    assert_eq!(client_sent(&mut c), [Message::connect(5)]);
    for epoch in 1..limit {
        now += Duration::from_millis(100);
        c.handle_epoch(now);
        assert_eq!(client_outputs(&mut c), [], "epoch {epoch}");
        let resent = client_sent(&mut c);
        assert_eq!(resent.len(), usize::from(epoch % 2 == 1), "epoch {epoch}");
    }
    now += Duration::from_millis(100);
    c.handle_epoch(now);
    assert_eq!(
        client_outputs(&mut c),
        [
            ClientOutput::State {
                conn_id: None,
                state: ConnState::Refused,
                at: now
            },
            ClientOutput::ConnectResult(Err(ConnectFailure::TimedOut(SERVER))),
        ]
    );
    assert_eq!(c.state(), ConnState::Refused);
    assert_eq!(client_sent(&mut c), []);
    // Nothing more, ever.
    c.handle_message(now, SERVER, Message::ack(1, 5));
    c.handle_epoch(now);
    assert_eq!(client_outputs(&mut c), []);
}

fn policy() -> ReconnectPolicy {
    let ms = Duration::from_millis;
    ReconnectPolicy {
        delays: vec![(ms(10), ms(20)), (ms(30), ms(40))],
        max_attempts: Some(3),
    }
}

/// Silence for `epoch_limit` epochs from `now`; returns the time after.
fn silence(c: &mut ClientCore, mut now: Instant, limit: u32) -> (Instant, Vec<ClientOutput>) {
    let mut outs = Vec::new();
    for _ in 0..limit {
        now += Duration::from_millis(100);
        c.handle_epoch(now);
        outs.extend(client_outputs(c));
        client_sent(c);
    }
    (now, outs)
}

/// Waits out the redial delay, checking it is within `range`; returns the
/// new Connect's ISN.
fn redial(c: &mut ClientCore, now: Instant, range: (u64, u64)) -> (Instant, u64) {
    let at = c.poll_timeout().expect("a redial is scheduled");
    let delay = at - now;
    assert!(
        delay >= Duration::from_millis(range.0) && delay <= Duration::from_millis(range.1),
        "{delay:?} outside {range:?}"
    );
    // Silent until then, even on an epoch.
    c.handle_timeout(at - Duration::from_nanos(1));
    c.handle_epoch(at - Duration::from_nanos(1));
    assert_eq!(client_sent(c), []);
    c.handle_timeout(at);
    let connect = client_sent(c);
    assert_eq!(connect.len(), 1);
    assert_eq!(connect[0], Message::connect(connect[0].seq_num));
    assert_eq!(c.poll_timeout(), None);
    (at, connect[0].seq_num)
}

#[test]
fn reconnect_schedule_counts_attempts_within_the_policy_then_gives_up() {
    let limit = 3;
    let now = Instant::now();
    let mut config = ClientConfig::new(base().epoch_limit(limit).build());
    config.reconnect = Some(policy());
    config.seed = 42;
    let mut c = connected_client(config.clone(), now, 5, 1);
    let (mut now, outs) = silence(&mut c, now, limit);
    assert_eq!(
        outs,
        [
            ClientOutput::State {
                conn_id: Some(id(1)),
                state: ConnState::Lost,
                at: now
            },
            ClientOutput::State {
                conn_id: None,
                state: ConnState::Reconnecting { attempt: 1 },
                at: now
            },
        ]
    );
    let mut isns = vec![5];
    let ranges = [(10, 20), (30, 40), (30, 40)];
    for (attempt, range) in (1..=3).zip(ranges) {
        let (at, isn) = redial(&mut c, now, range);
        assert!(!isns.contains(&isn), "a new ISN for every attempt");
        isns.push(isn);
        let (after, outs) = silence(&mut c, at, limit);
        now = after;
        let next = if attempt < 3 {
            vec![ClientOutput::State {
                conn_id: None,
                state: ConnState::Reconnecting {
                    attempt: attempt + 1,
                },
                at: now,
            }]
        } else {
            // Gave up: the lost connection is reported, then Refused.
            vec![
                ClientOutput::Lost(id(1)),
                ClientOutput::State {
                    conn_id: None,
                    state: ConnState::Refused,
                    at: now,
                },
            ]
        };
        assert_eq!(outs, next, "attempt {attempt}");
    }
    assert_eq!(c.state(), ConnState::Refused);
    assert_eq!(c.poll_timeout(), None);
    assert!(matches!(c.write(now, b"x"), Err(CoreError::ConnectionLost(l)) if l == id(1)));

    // The same seed replays the same schedule.
    let mut again = connected_client(config, Instant::now(), 5, 1);
    let (t, _) = silence(&mut again, Instant::now(), limit);
    let (_, isn) = redial(&mut again, t, (10, 20));
    assert_eq!(isn, isns[1]);
}

#[test]
fn reconnect_resends_unacknowledged_messages_first_and_reports_the_gap() {
    let limit = 3;
    let now = Instant::now();
    let mut config = ClientConfig::new(base().epoch_limit(limit).build());
    config.reconnect = Some(policy());
    let mut c = connected_client(config, now, 5, 1);
    c.write(now, b"acked").unwrap();
    c.write(now, b"unacked").unwrap();
    client_sent(&mut c);
    c.handle_message(now, SERVER, Message::ack(1, 6));
    let (now, _) = silence(&mut c, now, limit);
    let (now, isn) = redial(&mut c, now, (10, 20));
    c.write(now, b"during the gap").unwrap();
    c.handle_message(now, SERVER, Message::ack(2, isn));
    assert_eq!(
        client_outputs(&mut c),
        [
            ClientOutput::Reconnected {
                old: id(1),
                new: id(2)
            },
            ClientOutput::State {
                conn_id: Some(id(2)),
                state: ConnState::Connected,
                at: now
            },
        ]
    );
    assert_eq!(
        client_sent(&mut c),
        [
            Message::data(2, isn + 1, b"unacked"),
            Message::data(2, isn + 2, b"during the gap"),
        ]
    );
}

#[test]
fn close_while_reconnecting_cancels_the_redial_and_drains_at_once() {
    let limit = 3;
    let now = Instant::now();
    let mut config = ClientConfig::new(base().epoch_limit(limit).build());
    config.reconnect = Some(policy());
    let mut c = connected_client(config, now, 5, 1);
    c.write(now, b"never acked").unwrap();
    let (now, _) = silence(&mut c, now, limit);
    assert!(c.poll_timeout().is_some());
    c.close(now);
    assert_eq!(
        client_outputs(&mut c),
        [
            ClientOutput::State {
                conn_id: None,
                state: ConnState::Closed,
                at: now
            },
            ClientOutput::Drained,
        ]
    );
    assert_eq!(c.poll_timeout(), None);
    assert!(matches!(c.close_result(), Err(CoreError::ConnectionLost(l)) if l == id(1)));
    c.handle_timeout(now + Duration::from_secs(1));
    c.handle_epoch(now + Duration::from_secs(1));
    c.close(now);
    assert_eq!(
        (client_outputs(&mut c), client_sent(&mut c)),
        (vec![], vec![])
    );
}

#[test]
fn reconnecting_client_does_not_take_its_old_connection_for_the_new_one() {
    let limit = 3;
    let now = Instant::now();
    let mut config = ClientConfig::new(base().epoch_limit(limit).build());
    config.reconnect = Some(policy());
    let mut c = connected_client(config, now, 5, 1);
    let (now, _) = silence(&mut c, now, limit);
    // While waiting to dial, nothing is taken at all.
    c.handle_message(now, SERVER, Message::ack(3, 0));
    assert_eq!(client_outputs(&mut c), []);
    let (now, isn) = redial(&mut c, now, (10, 20));
    // Heartbeats and Data of the old connection 1 do not connect it...
    c.handle_message(now, SERVER, Message::ack(1, 0));
    c.handle_message(now, SERVER, Message::data(1, 6, b"old"));
    assert_eq!(client_outputs(&mut c), []);
    assert_eq!(c.state(), ConnState::Reconnecting { attempt: 1 });
    // ...but the Ack of its own Connect does, even naming id 1 again.
    c.handle_message(now, SERVER, Message::ack(1, isn));
    assert_eq!(c.state(), ConnState::Connected);
    assert_eq!(c.conn_id(), id(1));
}

/// Found by the simulator: when the server's first Data is what tells the
/// client its connection id (the Ack was lost or overtaken), the Data is
/// handed out after the connection is announced, and after a reconnect
/// after the `Reconnected` marker: it belongs to the new connection.
#[test]
fn data_that_connects_the_client_comes_after_the_connect_and_the_gap_marker() {
    let limit = 3;
    let now = Instant::now();
    let mut c = ClientCore::new(
        now,
        SERVER,
        5,
        ClientConfig::new(base().epoch_limit(limit).build()),
    );
    client_outputs(&mut c);
    c.handle_message(now, SERVER, Message::data(1, 6, b"first"));
    assert_eq!(
        client_outputs(&mut c),
        [
            ClientOutput::State {
                conn_id: Some(id(1)),
                state: ConnState::Connected,
                at: now
            },
            ClientOutput::ConnectResult(Ok(id(1))),
            ClientOutput::Data(b"first".to_vec()),
        ]
    );

    let mut config = ClientConfig::new(base().epoch_limit(limit).build());
    config.reconnect = Some(policy());
    let mut c = connected_client(config, now, 5, 1);
    c.handle_message(now, SERVER, Message::data(1, 6, b"old"));
    assert_eq!(
        client_outputs(&mut c),
        [ClientOutput::Data(b"old".to_vec())]
    );
    let (now, _) = silence(&mut c, now, limit);
    let (now, isn) = redial(&mut c, now, (10, 20));
    c.handle_message(now, SERVER, Message::data(2, isn + 1, b"new"));
    assert_eq!(
        client_outputs(&mut c),
        [
            ClientOutput::Reconnected {
                old: id(1),
                new: id(2)
            },
            ClientOutput::State {
                conn_id: Some(id(2)),
                state: ConnState::Connected,
                at: now
            },
            ClientOutput::Data(b"new".to_vec()),
        ]
    );
}

fn encoded_len(m: &Message<'_>) -> u64 {
    let mut buf = Vec::new();
    m.encode(&mut buf);
    buf.len() as u64
}

/// A silent new connection's Ack is said again `CONNECT_REACKS` times, as
/// far as anti-amplification allows: at most `AMPLIFICATION_FACTOR` times
/// the bytes its address sent, the rest held back and counted.
#[test]
fn server_reacks_a_silent_new_connection_within_the_amplification_limit_then_reaps_it() {
    let mut now = Instant::now();
    let a = addr(1);
    let limit = CONNECT_REACKS + 2;
    let (connect, ack) = (Message::connect(7), Message::ack(1, 7));
    let credit = AMPLIFICATION_FACTOR * encoded_len(&connect);
    let mut out = encoded_len(&ack);
    let mut held = 0;
    let mut reacked = 0;
    let mut s = server_with(seq_config(base().epoch_limit(limit).build()), now, a, 7);
    for epoch in 1..limit {
        now += Duration::from_millis(100);
        s.handle_epoch(now);
        let mut expected = vec![];
        if epoch <= CONNECT_REACKS {
            if out + encoded_len(&ack) <= credit {
                out += encoded_len(&ack);
                expected.push((a, ack.clone()));
                reacked += 1;
            } else {
                held += encoded_len(&ack);
            }
        }
        assert_eq!(sent(&mut s), expected, "epoch {epoch}");
        assert_eq!(s.totals().amplification_held_bytes, held, "epoch {epoch}");
    }
    // One Connect never buys all the re-sends.
    assert!(reacked < CONNECT_REACKS && held > 0);
    assert!(!s.is_validated(id(1)));
    now += Duration::from_millis(100);
    s.handle_epoch(now);
    assert_eq!(outputs(&mut s), lost(1, a, now));

    // A repeated Connect buys its own answer.
    let mut s = server_with(seq_config(base().epoch_limit(limit).build()), now, a, 7);
    for _ in 0..5 {
        s.handle_message(now, a, connect.clone());
        assert_eq!(sent(&mut s), [(a, ack.clone())]);
    }
    assert_eq!(s.totals().amplification_held_bytes, 0);
}

/// Known hazard, found by the simulator (restarted clients): a client that
/// restarts from the same address while the server still has its previous
/// connection takes that connection's heartbeat for the answer to its
/// Connect (as it must with the Go reference server, which acknowledges a
/// Connect once), and the old connection acknowledges the new client's Data
/// as duplicates of what it already received when the new ISN is lower.
/// The message is acknowledged, never delivered, and the client's close
/// reports success.
#[test]
#[ignore = "known hazard: a client restarted on the same address can lose acknowledged messages"]
fn a_restarted_client_on_the_same_address_loses_nothing_silently() {
    let now = Instant::now();
    let a = addr(1);
    let mut s = server_with(seq_config(base().epoch_limit(5).build()), now, a, 1000);
    for sn in 1001..=1005 {
        s.handle_message(now, a, Message::data(1, sn, b"old"));
    }
    s.end_batch(now);
    sent(&mut s);
    outputs(&mut s);
    // The client restarts: a fresh core on the same address, a new ISN. Its
    // Connect is lost; the old connection's heartbeat reaches it.
    let mut c = ClientCore::new(
        now,
        SERVER,
        10,
        ClientConfig::new(base().epoch_limit(5).build()),
    );
    client_sent(&mut c);
    c.handle_message(now, SERVER, Message::ack(1, 0));
    c.write(now, b"new").unwrap();
    for m in client_sent(&mut c) {
        s.handle_message(now, a, m);
    }
    s.end_batch(now);
    for (_, m) in sent(&mut s) {
        c.handle_message(now, SERVER, m);
    }
    c.close(now);
    let delivered = outputs(&mut s).into_iter().any(|o| {
        matches!(o, ServerOutput::App(ServerEvent::Message { ref payload, .. }) if payload == b"new")
    });
    let drained_ok =
        client_outputs(&mut c).contains(&ClientOutput::Drained) && c.close_result().is_ok();
    assert!(
        delivered || !drained_ok,
        "\"new\" was acknowledged and the close succeeded, but it was never delivered"
    );
}

// ----- ClientCore: refusals and address lists -----

const OTHER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3)), 9000);

/// What the client sent, with where it went.
fn client_sent_to(core: &mut ClientCore) -> Vec<(SocketAddr, Message<'static>)> {
    std::iter::from_fn(|| core.poll_transmit().map(|(to, m)| (to, m.into_owned()))).collect()
}

/// The client's outputs are exactly: the connect failed at `at`, for `why`.
fn assert_connect_failed(c: &mut ClientCore, at: Instant, why: ConnectFailure) {
    assert_eq!(
        client_outputs(c),
        [
            ClientOutput::State {
                conn_id: None,
                state: ConnState::Refused,
                at,
            },
            ClientOutput::ConnectResult(Err(why)),
        ]
    );
}

/// A client connecting to `SERVER`, then `fallbacks`, past its first Connect.
fn connecting(limit: u32, fallbacks: &[SocketAddr], fail_on_refused: bool) -> ClientCore {
    let mut config = ClientConfig::new(base().epoch_limit(limit).build());
    config.fallbacks = fallbacks.to_vec();
    config.fail_on_refused = fail_on_refused;
    let mut c = ClientCore::new(Instant::now(), SERVER, 5, config);
    client_outputs(&mut c);
    assert_eq!(client_sent_to(&mut c), [(SERVER, Message::connect(5))]);
    c
}

#[test]
fn fail_on_refused_fails_at_the_first_refusal_and_sends_nothing_more() {
    let now = Instant::now();
    let mut c = connecting(5, &[], true);
    c.handle_refused(now);
    assert_connect_failed(&mut c, now, ConnectFailure::Refused(SERVER));
    assert_eq!(c.state(), ConnState::Refused);
    for _ in 0..10 {
        c.handle_epoch(now);
        c.handle_refused(now);
    }
    assert_eq!(client_sent_to(&mut c), []);
    assert_eq!(client_outputs(&mut c), []);
}

#[test]
fn a_refused_address_hands_over_to_the_next_at_once() {
    let now = Instant::now();
    let mut c = connecting(5, &[OTHER], true);
    c.handle_refused(now);
    assert_eq!(client_outputs(&mut c), [ClientOutput::Dialing(OTHER)]);
    assert_eq!(client_sent_to(&mut c), [(OTHER, Message::connect(5))]);
    assert_eq!(c.server(), OTHER);
    // The second address answers: connected there.
    c.handle_message(now, OTHER, Message::ack(9, 5));
    assert!(client_outputs(&mut c).contains(&ClientOutput::ConnectResult(Ok(id(9)))));
    assert_eq!(c.server(), OTHER);

    // Had it refused too, the connect would have failed naming it.
    let mut c = connecting(5, &[OTHER], true);
    c.handle_refused(now);
    client_outputs(&mut c);
    client_sent_to(&mut c);
    c.handle_refused(now);
    assert_connect_failed(&mut c, now, ConnectFailure::Refused(OTHER));
}

#[test]
fn by_default_refusals_wait_for_the_schedule_and_the_deadline_says_refused() {
    let limit = 5;
    let mut now = Instant::now();
    let mut c = connecting(limit, &[OTHER], false);
    let mut connects = vec![SERVER];
    c.handle_refused(now);
    let mut dialed = Vec::new();
    for epoch in 1..=limit {
        // Every Connect is refused the moment it is sent, until a round of
        // both addresses is over: then nothing until the next scheduled one.
        loop {
            let sent = client_sent_to(&mut c);
            if sent.is_empty() {
                break;
            }
            for (to, msg) in sent {
                assert_eq!(msg, Message::connect(5));
                connects.push(to);
                c.handle_refused(now);
            }
        }
        if epoch < limit {
            dialed.extend(client_outputs(&mut c));
        }
        now += Duration::from_millis(100);
        c.handle_epoch(now);
    }
    let round = [ClientOutput::Dialing(OTHER), ClientOutput::Dialing(SERVER)];
    assert_eq!(dialed, [round.clone(), round.clone(), round].concat());
    // Scheduled Connects in epochs 1 and 3 start a round at the first address.
    assert_eq!(
        connects,
        [SERVER, OTHER, SERVER, OTHER, SERVER, OTHER],
        "one round at once, then one per scheduled Connect"
    );
    assert_connect_failed(&mut c, now, ConnectFailure::Refused(OTHER));
}

#[test]
fn a_connect_that_was_not_refused_every_time_times_out() {
    let limit = 4;
    let mut now = Instant::now();
    let mut c = connecting(limit, &[], false);
    c.handle_refused(now);
    assert_eq!(client_outputs(&mut c), [], "a single address just waits");
    for _ in 0..limit {
        now += Duration::from_millis(100);
        c.handle_epoch(now);
        // The Connect of epoch 1 and 3 meets silence.
        client_sent_to(&mut c);
    }
    assert_connect_failed(&mut c, now, ConnectFailure::TimedOut(SERVER));
}

#[test]
fn a_server_that_starts_late_is_still_reached_after_refusals() {
    let mut now = Instant::now();
    let mut c = connecting(5, &[], false);
    c.handle_refused(now);
    now += Duration::from_millis(100);
    c.handle_epoch(now);
    assert_eq!(client_sent_to(&mut c), [(SERVER, Message::connect(5))]);
    c.handle_message(now, SERVER, Message::ack(3, 5));
    assert!(client_outputs(&mut c).contains(&ClientOutput::ConnectResult(Ok(id(3)))));
}

#[test]
fn refusals_once_connected_or_while_reconnecting_change_nothing() {
    let limit = 3;
    let now = Instant::now();
    let mut config = ClientConfig::new(base().epoch_limit(limit).build());
    config.reconnect = Some(policy());
    config.fail_on_refused = true;
    config.seed = 7;
    let mut c = connected_client(config, now, 5, 1);
    c.handle_refused(now);
    assert_eq!(client_outputs(&mut c), []);
    assert_eq!(c.state(), ConnState::Connected);

    // Lost; the reconnect's Connect is refused: the policy still decides.
    let (now, _) = silence(&mut c, now, limit);
    let (now, _isn) = redial(&mut c, now, (10, 20));
    c.handle_refused(now);
    assert_eq!(client_outputs(&mut c), []);
    assert_eq!(client_sent_to(&mut c), []);
    assert_eq!(c.state(), ConnState::Reconnecting { attempt: 1 });
    let (now, outs) = silence(&mut c, now, limit);
    assert_eq!(
        outs,
        [ClientOutput::State {
            conn_id: None,
            state: ConnState::Reconnecting { attempt: 2 },
            at: now,
        }]
    );
    redial(&mut c, now, (30, 40));
}

/// A server on a wildcard address answers from the address each client sent
/// its Connect to: the Ack, Data and heartbeats of a connection all leave
/// from there, whichever local address later datagrams arrive on.
#[test]
fn each_connection_sends_from_the_address_its_connect_was_sent_to() {
    let mut now = Instant::now();
    let (a, b) = (addr(1), addr(2));
    let (la, lb): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "::1".parse().unwrap());
    let mut s = PolledServer::new(seq_config(base().epoch_limit(5).build()));
    let mut connect = Vec::new();
    Message::connect(7).encode(&mut connect);
    s.handle_to(now, a, Some(la), &connect);
    s.handle_to(now, b, Some(lb), &connect);
    s.end_batch(now);
    let sent: Vec<_> = std::iter::from_fn(|| s.poll_transmit_from()).collect();
    assert_eq!(
        sent,
        [
            (Some(la), a, Message::ack(1, 7)),
            (Some(lb), b, Message::ack(2, 7))
        ]
    );
    s.handle_message(now, a, Message::ack(1, 0));
    s.write(now, id(1), b"hi").unwrap();
    now += Duration::from_millis(100);
    s.handle_epoch(now);
    let sent: Vec<_> = std::iter::from_fn(|| s.poll_transmit_from()).collect();
    assert!(
        sent.contains(&(Some(la), a, Message::data(1, 8, b"hi"))),
        "{sent:?}"
    );
    // Every datagram of each connection leaves from its own address.
    for (local, to, _) in &sent {
        assert_eq!(*local, Some(if *to == a { la } else { lb }), "{sent:?}");
    }
}
