use super::*;

fn drain(conn: &mut Conn) -> Vec<Message<'static>> {
    std::iter::from_fn(|| conn.poll_transmit().map(Message::into_owned)).collect()
}

/// A Connect alone (perhaps spoofed) earns its Ack and a bounded number
/// of repeats: no heartbeats follow until the peer speaks again, and the
/// connection is reaped on schedule.
#[test]
fn server_is_silent_until_the_peer_speaks_beyond_connect() {
    let params = Params {
        epoch_limit: CONNECT_REACKS + 2,
        ..Params::default()
    };
    let mut conn = Conn::server(params, 1, 50);
    assert_eq!(drain(&mut conn), [Message::ack(1, 50)]);
    for _ in 0..CONNECT_REACKS {
        conn.on_epoch();
        assert_eq!(drain(&mut conn), [Message::ack(1, 50)]);
    }
    conn.on_epoch();
    assert_eq!(drain(&mut conn), []);
    conn.on_epoch();
    assert_eq!(conn.poll_event(), Some(Event::Lost));

    // Its first heartbeat is answered at once, then heartbeats flow.
    let mut conn = Conn::server(params, 1, 50);
    drain(&mut conn);
    conn.handle(Message::ack(1, 0)).unwrap();
    assert_eq!(drain(&mut conn), [Message::ack(1, 0)]);
    conn.on_epoch();
    assert_eq!(drain(&mut conn), [Message::ack(1, 0)]);
}

fn connected_client(params: Params) -> Conn {
    let mut conn = Conn::client(params, 100);
    drain(&mut conn);
    conn.handle(Message::ack(3, 100)).unwrap();
    assert_eq!(conn.poll_event(), Some(Event::Connected));
    conn
}

/// A burst of in-order Data owes one CAck, sent at `flush_acks`;
/// out-of-order Data is acknowledged at once, individually.
#[test]
fn coalesced_acks() {
    let params = Params {
        window_size: 8,
        max_unacked_messages: 8,
        ..Params::default()
    };
    let mut conn = connected_client(params);
    conn.set_coalesce_acks(true);
    for sn in 101..=104 {
        conn.handle(Message::data(3, sn, b"x")).unwrap();
    }
    conn.handle(Message::data(3, 107, b"later")).unwrap();
    assert_eq!(drain(&mut conn), [Message::ack(3, 107)]);
    conn.flush_acks();
    assert_eq!(drain(&mut conn), [Message::cack(3, 104)]);
    conn.flush_acks();
    assert_eq!(drain(&mut conn), []);
    // A single message owes a plain Ack, as from a Go peer: here a
    // duplicate below the window.
    conn.handle(Message::data(3, 102, b"x")).unwrap();
    conn.flush_acks();
    assert_eq!(drain(&mut conn), [Message::ack(3, 102)]);
    // Two owe a CAck.
    conn.handle(Message::data(3, 105, b"x")).unwrap();
    conn.handle(Message::data(3, 106, b"x")).unwrap();
    conn.flush_acks();
    assert_eq!(drain(&mut conn), [Message::cack(3, 107)]);
    assert_eq!(std::iter::from_fn(|| conn.poll_delivered()).count(), 7);
}

/// An acknowledgement still owed when the connection closes goes out
/// before it drains.
#[test]
fn close_flushes_a_pending_ack() {
    let mut conn = connected_client(Params::default());
    conn.set_coalesce_acks(true);
    conn.handle(Message::data(3, 101, b"x")).unwrap();
    conn.close();
    assert_eq!(drain(&mut conn), [Message::ack(3, 101)]);
    assert_eq!(conn.poll_event(), Some(Event::Drained));
}

/// Found by fuzzing: closing a client that is still connecting leaves no
/// state behind; what it had queued is set aside, unsent.
#[test]
fn close_while_connecting_keeps_nothing() {
    let mut conn = Conn::client(Params::default(), 9);
    conn.write(b"queued".to_vec());
    conn.close();
    assert_eq!(conn.poll_event(), Some(Event::Drained));
    assert!(conn.is_idle());
    assert_eq!(conn.take_orphans(), [b"queued".to_vec()]);
    assert_eq!(drain(&mut conn), []);
}
