//! Flow control on real sockets: client writers blocked on a full send
//! buffer, server writes that never block (queued past the limit, the
//! connection then not writable and its peer's messages held back until it
//! drains), `write_timeout` waiting for room and woken by acks, loss, slow
//! consumers and close, and readers far slower than their writers, which
//! hold a bounded inbox (plus a window held back unacknowledged) while every
//! message still arrives in order exactly once.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{payload, poll_until, Heartbeats, RawPeer, TestParams, WAIT};

/// What most tests here share: 30 ms epochs.
fn base() -> TestParams {
    TestParams::new().epoch_millis(30)
}
use crossbeam_channel::Receiver;
use liveseq::proto::{Message, MsgType};
use liveseq::{Client, ConnId, Error, Params, Server, ServerEvent};

/// The send buffer of every instance in the send-side tests, in messages.
const LIMIT: usize = 4;

/// The next Data message with a sequence number not seen before. Each one
/// seen is remembered: a retransmission must carry the same bytes. Acks are
/// skipped: heartbeats, and a server's repeated Ack of the Connect when an
/// epoch ended before our first heartbeat reached it.
fn next_new_data(raw: &mut RawPeer, seen: &mut BTreeMap<u64, Vec<u8>>) -> Message<'static> {
    loop {
        let m = raw.recv();
        if m.kind == MsgType::Ack {
            continue;
        }
        assert_eq!(m.kind, MsgType::Data, "only Data from a writer: {m:?}");
        match seen.get(&m.seq_num) {
            Some(bytes) => assert_eq!(m.payload[..], bytes[..], "retransmission of {m:?}"),
            None => {
                seen.insert(m.seq_num, m.payload.to_vec());
                return m;
            }
        }
    }
}

/// Everything the peer sends for `period` is an Ack (a heartbeat, or a
/// repeated Ack of the Connect) or a retransmission of Data already seen,
/// byte for byte.
fn only_retransmissions(raw: &mut RawPeer, period: Duration, seen: &BTreeMap<u64, Vec<u8>>) {
    for m in raw.gather(period, None) {
        if m.kind == MsgType::Data {
            let first = seen.get(&m.seq_num);
            assert!(first.is_some(), "new Data while the buffer is full: {m:?}");
            assert_eq!(first.map(|b| &b[..]), Some(&m.payload[..]));
        } else {
            assert_eq!(m.kind, MsgType::Ack, "{m:?}");
        }
    }
}

/// Runs `write` in a thread and returns once that thread is about to call
/// it; the result arrives on the receiver.
fn spawn_writer(
    write: impl FnOnce() -> Result<(), Error> + Send + 'static,
) -> Receiver<Result<(), Error>> {
    let (started_tx, started_rx) = crossbeam_channel::bounded(0);
    let (result_tx, result_rx) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        let _ = started_tx.send(());
        let _ = result_tx.send(write());
    });
    started_rx.recv().unwrap();
    result_rx
}

fn msg(i: usize) -> Vec<u8> {
    payload(0, i, 300)
}

/// A client with a send buffer of [`LIMIT`] messages, connected as id 1 to
/// a raw server that heartbeats every epoch and acknowledges nothing.
fn client_against_a_silent_server(p: Params) -> (Arc<Client>, RawPeer, u64, Heartbeats) {
    let mut raw = RawPeer::new();
    let addr = raw.addr();
    let connecting = thread::spawn(move || {
        Client::builder()
            .params(p)
            .send_buffer(LIMIT, 1 << 20)
            .connect(addr)
            .unwrap()
    });
    let isn = raw.accept(1);
    let client = Arc::new(connecting.join().unwrap());
    let heartbeats = Heartbeats::start(&raw.socket, raw.peer.unwrap(), 1, p.epoch());
    (client, raw, isn, heartbeats)
}

/// Fills the client's buffer with messages `0..LIMIT` and checks them on the wire.
fn fill_client(client: &Client, raw: &mut RawPeer, isn: u64) -> BTreeMap<u64, Vec<u8>> {
    for i in 0..LIMIT {
        client.try_write(&msg(i)).unwrap();
    }
    assert!(matches!(
        client.try_write(&msg(LIMIT)),
        Err(Error::BufferFull)
    ));
    let mut seen = BTreeMap::new();
    for i in 0..LIMIT {
        let m = next_new_data(raw, &mut seen);
        assert_eq!(m, Message::data(1, isn + 1 + i as u64, &msg(i)));
    }
    seen
}

#[test]
fn client_write_blocks_on_a_full_send_buffer_until_acked() {
    let p = base().epoch_limit(200).window_of(8).build();
    let (client, mut raw, isn, _heartbeats) = client_against_a_silent_server(p);
    // Exactly LIMIT writes fit; they go out at once (the window is wider).
    let mut seen = fill_client(&client, &mut raw, isn);
    assert!(matches!(
        client.try_write(&msg(LIMIT)),
        Err(Error::BufferFull)
    ));
    let started = Instant::now();
    let wait = p.epoch() * 2;
    assert!(matches!(
        client.write_timeout(&msg(LIMIT), wait),
        Err(Error::Timeout)
    ));
    assert!(started.elapsed() >= wait);
    let stats = client.stats();
    assert_eq!((stats.unacked, stats.queued), (LIMIT, 0));

    // A writer in another thread waits while only retransmissions go out.
    let result = {
        let client = client.clone();
        spawn_writer(move || client.write(&msg(LIMIT)))
    };
    only_retransmissions(&mut raw, p.epoch() * 3, &seen);
    assert!(result.try_recv().is_err(), "the writer waits for room");
    // One ack makes room for one message: the writer returns and its
    // message is the next new Data on the wire.
    raw.send(&Message::ack(1, isn + 1));
    assert!(result.recv_timeout(WAIT).unwrap().is_ok());
    let m = next_new_data(&mut raw, &mut seen);
    assert_eq!(m, Message::data(1, isn + 1 + LIMIT as u64, &msg(LIMIT)));
    assert!(matches!(
        client.try_write(&msg(LIMIT + 1)),
        Err(Error::BufferFull)
    ));
    // A cumulative ack makes room for LIMIT more.
    raw.send(&Message::cack(1, isn + 1 + LIMIT as u64));
    for i in LIMIT + 1..=2 * LIMIT {
        client
            .write_timeout(&msg(i), WAIT)
            .expect("room after the CAck");
    }
    for i in LIMIT + 1..=2 * LIMIT {
        let m = next_new_data(&mut raw, &mut seen);
        assert_eq!(m, Message::data(1, isn + 1 + i as u64, &msg(i)));
    }
    raw.send(&Message::cack(1, isn + 1 + 2 * LIMIT as u64));
    client.close().unwrap();
}

#[test]
fn client_blocked_writer_wakes_when_the_connection_is_lost() {
    let p = base().epoch_limit(20).window_of(8).build();
    let (client, mut raw, isn, heartbeats) = client_against_a_silent_server(p);
    fill_client(&client, &mut raw, isn);
    let result = {
        let client = client.clone();
        spawn_writer(move || client.write(&msg(LIMIT)))
    };
    // The server falls silent: the client loses it after epoch_limit epochs.
    heartbeats.stop();
    let lost = ConnId::from(1);
    assert!(
        matches!(result.recv_timeout(WAIT).unwrap(), Err(Error::ConnectionLost(id)) if id == lost)
    );
    assert!(matches!(client.write(b"x"), Err(Error::ConnectionLost(id)) if id == lost));
    assert!(matches!(client.try_write(b"x"), Err(Error::ConnectionLost(id)) if id == lost));
    assert!(matches!(client.read(), Err(Error::ConnectionLost(id)) if id == lost));
}

#[test]
fn client_blocked_writer_wakes_when_the_client_closes() {
    let p = base().epoch_limit(1000).window_of(8).build();
    let (client, mut raw, isn, _heartbeats) = client_against_a_silent_server(p);
    fill_client(&client, &mut raw, isn);
    let result = {
        let client = client.clone();
        spawn_writer(move || client.write(&msg(LIMIT)))
    };
    // The close drains for as long as the server acknowledges nothing; the
    // blocked write, which can never succeed now, returns at once.
    let closing = {
        let client = client.clone();
        thread::spawn(move || client.close())
    };
    assert!(matches!(
        result.recv_timeout(WAIT).unwrap(),
        Err(Error::Closed)
    ));
    assert!(!closing.is_finished(), "the close still waits for acks");
    raw.send(&Message::cack(1, isn + LIMIT as u64));
    assert!(closing.join().unwrap().is_ok());
    assert!(matches!(client.write(b"x"), Err(Error::Closed)));
}

/// A server with a send buffer of [`LIMIT`] messages.
fn limited_server(p: Params) -> Arc<Server> {
    Arc::new(
        Server::builder()
            .params(p)
            .send_buffer(LIMIT, 1 << 20)
            .bind("127.0.0.1:0")
            .unwrap(),
    )
}

/// A raw client of `server` that heartbeats every epoch.
fn raw_client(server: &Server, p: Params, isn: u64) -> (RawPeer, u32, Heartbeats) {
    let addr = server.local_addr().unwrap();
    let mut raw = RawPeer::new();
    let id = raw.connect(addr, isn);
    let heartbeats = Heartbeats::start(&raw.socket, addr, id, p.epoch());
    // Until its first heartbeat has validated its address, the server sends
    // it at most 3x what it sent: Data written before then is held back,
    // and a later message could overtake it on the wire.
    poll_until(WAIT, || server.totals().unvalidated == 0).expect("validated");
    (raw, id, heartbeats)
}

/// Fills connection `id`'s buffer with messages `c, 0..LIMIT` and checks them
/// on the wire; returns what was seen. The connection is then not writable.
fn fill_server(
    server: &Server,
    raw: &mut RawPeer,
    id: u32,
    isn: u64,
    c: usize,
) -> BTreeMap<u64, Vec<u8>> {
    let conn = ConnId::from(id);
    for i in 0..LIMIT {
        assert!(server.is_writable(conn), "writable below the limit");
        server.try_write(conn, &payload(c, i, 300)).unwrap();
    }
    assert!(!server.is_writable(conn), "not writable at the limit");
    assert!(matches!(
        server.try_write(conn, b"more"),
        Err(Error::BufferFull)
    ));
    let mut seen = BTreeMap::new();
    for i in 0..LIMIT {
        let m = next_new_data(raw, &mut seen);
        assert_eq!(
            m,
            Message::data(id, isn + 1 + i as u64, &payload(c, i, 300))
        );
    }
    seen
}

/// The next event, skipping `Connected`.
fn next_event_after_connects(server: &Server) -> ServerEvent {
    loop {
        match server.next_event_timeout(WAIT).unwrap() {
            ServerEvent::Connected { .. } => continue,
            event => return event,
        }
    }
}

/// A connection at its limit: `write_timeout` (like `try_write`) waits for
/// room there and nowhere else, while plain writes to another connection
/// go through; an ack lets the waiting writer in, and once the buffer
/// drains to half the limit the connection reports `Writable`.
#[test]
fn server_write_timeout_waits_only_for_that_connection() {
    let p = base().epoch_limit(200).window_of(8).build();
    let server = limited_server(p);
    let (mut a, a_id, _a_heartbeats) = raw_client(&server, p, 100);
    let (mut b, b_id, _b_heartbeats) = raw_client(&server, p, 200);
    let (a_conn, b_conn) = (ConnId::from(a_id), ConnId::from(b_id));

    let mut a_seen = fill_server(&server, &mut a, a_id, 100, 1);
    assert!(server.is_writable(b_conn));
    assert_eq!(server.totals().not_writable, 1);
    let started = Instant::now();
    assert!(matches!(
        server.write_timeout(a_conn, b"late", p.epoch() * 2),
        Err(Error::Timeout)
    ));
    assert!(started.elapsed() >= p.epoch() * 2);
    let result = {
        let server = server.clone();
        spawn_writer(move || server.write_timeout(a_conn, &payload(1, LIMIT, 300), WAIT))
    };

    // Meanwhile B, which acknowledges each message before the next is
    // written, takes three buffers' worth through plain writes, in order,
    // byte for byte, and stays writable. (Without the wait for the ack a
    // quick writer could get ahead of B's acks and fill its buffer too.)
    let mut b_seen = BTreeMap::new();
    for i in 0..3 * LIMIT {
        server.write(b_conn, &payload(2, i, 300)).unwrap();
        assert!(server.is_writable(b_conn));
        let m = next_new_data(&mut b, &mut b_seen);
        assert_eq!(m, Message::data(b_id, 201 + i as u64, &payload(2, i, 300)));
        b.send(&Message::ack(b_id, m.seq_num));
        poll_until(WAIT, || server.stats(b_conn).unwrap().unacked == 0).expect("B's ack");
    }
    assert!(result.try_recv().is_err(), "A's writer still waits");
    only_retransmissions(&mut a, p.epoch() * 2, &a_seen);
    assert!(result.try_recv().is_err(), "A's writer still waits");
    assert!(server.is_writable(b_conn));
    assert!(!server.is_writable(a_conn));

    // An ack from A lets its writer through; A is still over half its limit.
    a.send(&Message::ack(a_id, 101));
    assert!(result.recv_timeout(WAIT).unwrap().is_ok());
    let m = next_new_data(&mut a, &mut a_seen);
    assert_eq!(
        m,
        Message::data(a_id, 101 + LIMIT as u64, &payload(1, LIMIT, 300))
    );
    assert!(!server.is_writable(a_conn));
    // Everything acknowledged: A is writable again, and says so (the only
    // event after the Connects: B never reached its limit).
    a.send(&Message::cack(a_id, 101 + LIMIT as u64));
    assert_eq!(
        next_event_after_connects(&server),
        ServerEvent::Writable { id: a_conn }
    );
    assert!(server.is_writable(a_conn));
    assert_eq!(server.totals().not_writable, 0);
    assert!(matches!(server.try_next_event(), Ok(None)));
    let _ = server.close_timeout(p.epoch() * 5);
}

/// `write` never waits: past the limit it queues, the connection is not
/// writable and the messages its peer sends are held back from the
/// application (still acknowledged) until its buffer drains to half the
/// limit; they then arrive, in order, followed by `Writable`.
#[test]
fn server_write_past_the_limit_queues_and_holds_back_the_peers_messages() {
    let p = base().epoch_limit(200).window_of(8).build();
    let server = limited_server(p);
    let (mut a, a_id, _heartbeats) = raw_client(&server, p, 100);
    let conn = ConnId::from(a_id);
    let mut seen = BTreeMap::new();
    for i in 0..2 * LIMIT {
        server.write(conn, &payload(1, i, 300)).unwrap();
        assert_eq!(server.is_writable(conn), i + 1 < LIMIT, "after {i}");
    }
    let s = server.stats(conn).unwrap();
    assert_eq!(s.unacked + s.queued, 2 * LIMIT);
    assert!(matches!(
        server.try_write(conn, b"more"),
        Err(Error::BufferFull)
    ));
    // The window (8) sends them all.
    for i in 0..2 * LIMIT {
        let m = next_new_data(&mut a, &mut seen);
        assert_eq!(m, Message::data(a_id, 101 + i as u64, &payload(1, i, 300)));
    }
    // A's own messages (its sequence numbers follow its isn too) are taken,
    // but held back from the application while A is not writable.
    let from_a = |i: usize| payload(9, i, 100);
    assert_eq!(
        server.next_event_timeout(WAIT).unwrap().conn_id(),
        conn,
        "Connected"
    );
    for i in 0..3 {
        a.send(&Message::data(a_id, 101 + i as u64, &from_a(i)));
    }
    poll_until(WAIT, || server.stats(conn).unwrap().messages_received == 3)
        .expect("A's messages are taken");
    assert_eq!(server.try_next_event().unwrap(), None, "held back");
    // Acks down to three buffered: above half the limit, still held back.
    a.send(&Message::cack(a_id, 100 + 2 * LIMIT as u64 - 3));
    poll_until(WAIT, || server.stats(conn).unwrap().unacked == 3).expect("the CAck");
    assert!(!server.is_writable(conn));
    assert_eq!(server.try_next_event().unwrap(), None, "still held back");
    // Half the limit: A's messages, in order, then Writable.
    a.send(&Message::ack(a_id, 100 + 2 * LIMIT as u64 - 2));
    for i in 0..3 {
        assert_eq!(
            server.next_event_timeout(WAIT).unwrap(),
            ServerEvent::Message {
                id: conn,
                payload: from_a(i)
            }
        );
    }
    assert_eq!(
        server.next_event_timeout(WAIT).unwrap(),
        ServerEvent::Writable { id: conn }
    );
    assert!(server.is_writable(conn));
    a.send(&Message::cack(a_id, 100 + 2 * LIMIT as u64));
    server.close().unwrap();
}

#[test]
fn server_waiting_writer_wakes_when_its_connection_is_closed() {
    let p = base().epoch_limit(1000).window_of(8).build();
    let server = limited_server(p);
    let (mut a, a_id, _heartbeats) = raw_client(&server, p, 100);
    let conn = ConnId::from(a_id);
    fill_server(&server, &mut a, a_id, 100, 1);
    let result = {
        let server = server.clone();
        spawn_writer(move || server.write_timeout(conn, b"never", WAIT))
    };
    // close_conn: what was written still drains (A acknowledges nothing,
    // so it drains for as long as A lives), but a waiting write fails now.
    server.close_conn(conn).unwrap();
    assert!(matches!(
        result.recv_timeout(WAIT).unwrap(),
        Err(Error::ConnectionClosed(id)) if id == conn
    ));
    assert_eq!(server.state(conn), Some(liveseq::ConnState::Closing));
    assert!(!server.is_writable(conn));
    for write in [Server::write, Server::try_write] {
        assert!(matches!(
            write(&server, conn, b"x"),
            Err(Error::ConnectionClosed(id)) if id == conn
        ));
    }
    a.send(&Message::cack(a_id, 100 + LIMIT as u64));
    server.close().unwrap();
}

/// A writer waiting on a connection whose peer falls silent wakes with
/// `ConnectionLost` when the connection is lost; writes fail so for
/// `epoch_limit` epochs, then with `UnknownConnection`.
#[test]
fn server_waiting_writer_wakes_when_its_connection_is_lost() {
    // The back-off cap puts the slow-consumer rule (epoch_limit + 10 epochs
    // without an ack, counted from the fill) well behind the loss
    // (epoch_limit silent epochs, counted from the last heartbeat, just
    // after the fill), so the connection is lost, not ended as slow.
    let p = base().epoch_limit(20).window_of(8).max_backoff(10).build();
    let server = limited_server(p);
    let (mut a, a_id, heartbeats) = raw_client(&server, p, 100);
    let conn = ConnId::from(a_id);
    fill_server(&server, &mut a, a_id, 100, 1);
    let result = {
        let server = server.clone();
        spawn_writer(move || server.write_timeout(conn, b"never", WAIT))
    };
    // A falls silent: after epoch_limit epochs the connection is gone.
    heartbeats.stop();
    assert!(matches!(
        result.recv_timeout(WAIT).unwrap(),
        Err(Error::ConnectionLost(id)) if id == conn
    ));
    let woke = Instant::now();
    assert!(matches!(server.read(), Err(Error::ConnectionLost(id)) if id == conn));
    assert_eq!(server.totals().slow_consumers, 0);
    for write in [Server::write, Server::try_write] {
        assert!(matches!(
            write(&server, conn, b"x"),
            Err(Error::ConnectionLost(id)) if id == conn
        ));
    }
    // Forgotten after epoch_limit epochs (the first may tick at once).
    let mut last = None;
    poll_until(WAIT, || {
        last = Some(server.write(conn, b"x"));
        !matches!(last, Some(Err(Error::ConnectionLost(id))) if id == conn)
    })
    .expect("the server forgets the connection");
    assert!(
        matches!(last, Some(Err(Error::UnknownConnection(id))) if id == conn),
        "{last:?}"
    );
    assert!(woke.elapsed() >= p.epoch() * (p.epoch_limit - 2));
    server.close().unwrap();
}

/// A peer that heartbeats but acknowledges nothing while its connection is
/// over its limit is ended as a slow consumer after `epoch_limit` epochs
/// (plus the back-off cap, here 0): a waiting writer wakes with
/// `SlowConsumer`, the connection ends `Lost`, and writes fail with
/// `SlowConsumer` until the server forgets it.
#[test]
fn server_waiting_writer_wakes_when_its_peer_is_a_slow_consumer() {
    let p = base().epoch_limit(5).window_of(8).build();
    let server = limited_server(p);
    let (mut a, a_id, _heartbeats) = raw_client(&server, p, 100);
    let conn = ConnId::from(a_id);
    let filled = Instant::now();
    fill_server(&server, &mut a, a_id, 100, 1);
    let result = {
        let server = server.clone();
        spawn_writer(move || server.write_timeout(conn, b"never", WAIT))
    };
    assert!(matches!(
        result.recv_timeout(WAIT).unwrap(),
        Err(Error::SlowConsumer(id)) if id == conn
    ));
    // epoch_limit epochs without an ack, the first possibly cut short.
    assert!(filled.elapsed() >= p.epoch() * (p.epoch_limit - 1));
    assert!(matches!(server.read(), Err(Error::ConnectionLost(id)) if id == conn));
    let totals = server.totals();
    assert_eq!((totals.slow_consumers, totals.lost), (1, 1), "{totals:?}");
    for write in [Server::write, Server::try_write] {
        assert!(matches!(
            write(&server, conn, b"x"),
            Err(Error::SlowConsumer(id)) if id == conn
        ));
    }
    let mut last = None;
    poll_until(WAIT, || {
        last = Some(server.write(conn, b"x"));
        !matches!(last, Some(Err(Error::SlowConsumer(id))) if id == conn)
    })
    .expect("the server forgets the connection");
    assert!(
        matches!(last, Some(Err(Error::UnknownConnection(id))) if id == conn),
        "{last:?}"
    );
    server.close().unwrap();
}

#[test]
fn server_waiting_writer_wakes_when_the_server_closes() {
    let p = base().epoch_limit(1000).window_of(8).build();
    let server = limited_server(p);
    let (mut a, a_id, _heartbeats) = raw_client(&server, p, 100);
    let conn = ConnId::from(a_id);
    fill_server(&server, &mut a, a_id, 100, 1);
    let result = {
        let server = server.clone();
        spawn_writer(move || server.write_timeout(conn, b"never", WAIT))
    };
    let closing = {
        let server = server.clone();
        thread::spawn(move || server.close())
    };
    assert!(matches!(
        result.recv_timeout(WAIT).unwrap(),
        Err(Error::Closed)
    ));
    assert!(!closing.is_finished(), "the close still waits for acks");
    a.send(&Message::cack(a_id, 100 + LIMIT as u64));
    assert!(closing.join().unwrap().is_ok());
}

/// A liveseq client writes as fast as `write` lets it to a server whose
/// reader takes a millisecond per message (a hundred times slower than the
/// writer): the server never holds more than its inbox limit (plus one
/// window) unread, the writer never holds more than its send buffer, and
/// every message arrives in order, byte for byte, exactly once.
#[test]
fn a_reader_a_hundred_times_slower_than_its_writer() {
    const INBOX: usize = 16;
    const WINDOW: u32 = 8;
    const SEND_BUFFER: usize = 32;
    const N: usize = 1000;
    let p = base()
        .epoch_millis(20)
        .epoch_limit(50)
        .window_of(WINDOW)
        .build();
    let server = Server::builder()
        .params(p)
        .inbox(INBOX, 1 << 20)
        .bind("127.0.0.1:0")
        .unwrap();
    let client = Arc::new(
        Client::builder()
            .params(p)
            .send_buffer(SEND_BUFFER, 1 << 20)
            .connect(server.local_addr().unwrap())
            .unwrap(),
    );
    let id = client.conn_id();
    let writer = {
        let client = client.clone();
        thread::spawn(move || {
            for i in 0..N {
                client.write(&payload(3, i, 500)).unwrap();
                let s = client.stats();
                assert!(s.unacked + s.queued <= SEND_BUFFER);
            }
        })
    };
    let stats = || server.stats(id).expect("the connection is there");
    // Nothing is read until the inbox is full, then for three more of the
    // writer's epochs, while it keeps resending what the server turns away.
    poll_until(WAIT, || stats().messages_received >= INBOX as u64).expect("the inbox fills");
    thread::sleep(p.epoch() * 3); // the workload: a reader that is not reading
    let idle = stats();
    assert!(
        (INBOX..INBOX + WINDOW as usize).contains(&(idle.messages_received as usize)),
        "{idle:?}"
    );
    let mut peak = 0;
    for i in 0..N {
        assert_eq!(
            server.read().unwrap(),
            (id, payload(3, i, 500)),
            "message {i}"
        );
        let unread = stats().messages_received as usize - (i + 1);
        peak = peak.max(unread);
        assert!(
            unread < INBOX + WINDOW as usize,
            "{unread} unread after {i}"
        );
        thread::sleep(Duration::from_millis(1)); // the workload: a slow reader
    }
    writer.join().unwrap();
    // Without loss, a retransmission means Data was turned away unacknowledged.
    let sent = client.stats();
    assert!(sent.retransmissions > 0, "{sent:?}");
    assert_eq!(stats().rejected, 0, "flow control is not the peer's fault");
    client.close().unwrap();
    assert!(
        peak >= INBOX - 1,
        "the inbox was full while the reader read"
    );
    assert!(matches!(
        server.read_timeout(p.epoch() * 3),
        Err(Error::Timeout) | Err(Error::ConnectionLost(_))
    ));
    server.close().unwrap();
}

/// The same the other way round, where `Server::write` never waits: a
/// server queues a thousand messages at once for a client whose reader is a
/// hundred times slower. The connection is then not writable; the client
/// holds its inbox plus at most a window's worth held back unacknowledged
/// (never more: the server has no more than a window in flight, so nothing
/// is turned away), reads are paced by the hold-back, every message arrives
/// in order, byte for byte, exactly once, and once the client has read
/// everything the connection is writable again.
#[test]
fn a_client_reader_a_hundred_times_slower_than_its_server() {
    const INBOX: usize = 16;
    const WINDOW: u32 = 8;
    const SEND_BUFFER: usize = 32;
    const N: usize = 1000;
    let p = base()
        .epoch_millis(20)
        .epoch_limit(50)
        .window_of(WINDOW)
        .build();
    let server = Server::builder()
        .params(p)
        .send_buffer(SEND_BUFFER, 1 << 20)
        .bind("127.0.0.1:0")
        .unwrap();
    let client = Client::builder()
        .params(p)
        .inbox(INBOX, 1 << 20)
        .connect(server.local_addr().unwrap())
        .unwrap();
    let id = client.conn_id();
    for i in 0..N {
        server.write(id, &payload(5, i, 500)).unwrap();
    }
    // Every write returned at once, with nothing read: the client has
    // acknowledged at most its inbox, so nearly everything is queued.
    let s = server.stats(id).unwrap();
    assert!(s.unacked <= WINDOW as usize, "{s:?}");
    assert!(s.unacked + s.queued >= N - INBOX, "{s:?}");
    assert!(!server.is_writable(id));
    assert_eq!(server.totals().not_writable, 1);
    poll_until(WAIT, || client.stats().messages_received >= INBOX as u64).expect("the inbox fills");
    thread::sleep(p.epoch() * 3); // the workload: a reader that is not reading
    let idle = client.stats();
    assert_eq!(idle.messages_received as usize, INBOX, "{idle:?}");
    for i in 0..N {
        assert_eq!(client.read().unwrap(), payload(5, i, 500), "message {i}");
        let unread = client.stats().messages_received as usize - (i + 1);
        assert!(unread <= INBOX, "{unread} unread after {i}");
        thread::sleep(Duration::from_millis(1)); // the workload: a slow reader
    }
    // Drained: writable again, and the server says so.
    assert_eq!(
        next_event_after_connects(&server),
        ServerEvent::Writable { id }
    );
    assert!(server.is_writable(id));
    let received = client.stats();
    assert_eq!(received.paused_drops, 0, "{received:?}");
    assert!(received.withheld >= u64::from(WINDOW), "{received:?}");
    assert_eq!(received.rejected, 0, "flow control is not the peer's fault");
    // Without loss, a retransmission means Data was held unacknowledged
    // (for the three epochs nothing was read).
    let sent = server.stats(id).unwrap();
    assert!(sent.retransmissions > 0, "{sent:?}");
    server.close().unwrap();
    assert!(matches!(client.read(), Err(Error::ConnectionLost(_))));
}

/// The next Ack that is neither a heartbeat nor a repeated Ack of the
/// Connect (sent if an epoch ended before our first heartbeat arrived).
fn next_ack(raw: &mut RawPeer, isn: u64) -> Message<'static> {
    loop {
        let m = raw.recv_non_heartbeat();
        if !(m.kind == MsgType::Ack && m.seq_num == isn) {
            return m;
        }
    }
}

/// A raw writer that behaves like the Go client (a window of `window`,
/// every unacknowledged message resent each epoch, acks counted) against a
/// server whose inbox holds `inbox` (messages, bytes) and whose window is 8.
/// While the inbox is full the server holds new Data unacknowledged, up to
/// its window's worth (a resent held message is a duplicate, still not
/// acknowledged), and drops what does not fit unacknowledged; each read
/// takes held Data, in order, as far as there is room, and acknowledges it
/// at once, before the writer's next retransmission.
fn go_like_writer_against_a_full_inbox(window: u64, inbox: (usize, usize)) {
    const M: u64 = 24;
    const ISN: u64 = 1000;
    let p = base()
        .epoch_millis(50)
        .epoch_limit(100)
        .window_of(8)
        .build();
    // One receive thread: the model below follows the datagrams in the
    // order they were sent, and so must the server.
    let server = Server::builder()
        .params(p)
        .inbox(inbox.0, inbox.1)
        .ack_coalescing(false)
        .receive_threads(1)
        .bind("127.0.0.1:0")
        .unwrap();
    let mut raw = RawPeer::new();
    let id = raw.connect(server.local_addr().unwrap(), ISN);
    let conn = ConnId::from(id);
    let msg = |i: u64| payload(4, i as usize, 300);
    // Message i carries sequence number ISN + 1 + i.
    let mut next = 0u64;
    let mut unacked = BTreeSet::new();
    let mut acks = Vec::new();
    // The model of the server: delivered and read so far, in messages;
    // unread bytes; the messages it holds unacknowledged; and its counters
    // (held, dropped for lack of room, duplicates).
    let (mut delivered, mut read, mut unread_bytes) = (0u64, 0u64, 0usize);
    let mut held = BTreeSet::new();
    let (mut held_back, mut paused_drops, mut duplicates) = (0u64, 0u64, 0u64);
    let fits = |delivered: u64, read: u64, unread_bytes: usize| {
        ((delivered - read) as usize) < inbox.0 && unread_bytes < inbox.1
    };
    let mut turned_away_rounds = 0;
    let reads_per_round = [0u64, 0, 1, 0, 0, 3];
    for round in 0.. {
        // One epoch of the writer: resend everything unacknowledged, then
        // fill the window with new messages.
        let base = unacked.first().copied().unwrap_or(next);
        while next < M && next < base + window {
            unacked.insert(next);
            next += 1;
        }
        let burst: Vec<u64> = unacked.iter().copied().collect();
        if burst.is_empty() {
            break;
        }
        for &i in &burst {
            raw.send(&Message::data(id, ISN + 1 + i, &msg(i)));
        }
        // The server takes them in order while its inbox is not full
        // (nothing is held then: a read takes held Data first), holds what
        // follows up to its window, and drops the rest without an ack.
        let mut taken = Vec::new();
        for &i in &burst {
            if held.contains(&i) {
                duplicates += 1;
            } else if fits(delivered, read, unread_bytes) {
                assert!(held.is_empty());
                delivered += 1;
                unread_bytes += msg(i).len();
                taken.push(i);
            } else if held.len() < p.window_size as usize {
                held.insert(i);
                held_back += 1;
            } else {
                paused_drops += 1;
            }
        }
        // A heartbeat after the burst: once the server has counted it, it
        // has handled the whole burst (one socket, one order on loopback).
        // (`connect` sent one after the Ack, and each round one more.)
        raw.send(&Message::ack(id, 0));
        let heartbeats = 2 + round as u64;
        let model = (delivered, heartbeats, held_back, paused_drops, duplicates);
        poll_until(WAIT, || {
            let s = server.stats(conn).unwrap();
            let counted = (
                s.messages_received,
                s.heartbeats_received,
                s.withheld,
                s.paused_drops,
                s.duplicates_received,
            );
            counted == model
        })
        .unwrap_or_else(|| panic!("round {round}: {model:?} {:?}", server.stats(conn)));
        if taken.is_empty() {
            turned_away_rounds += 1;
        }
        // The application reads a little, sometimes nothing. Each read
        // makes room for held Data, which is taken and acknowledged at once.
        for _ in 0..reads_per_round[round % reads_per_round.len()] {
            if read == delivered {
                break;
            }
            assert_eq!(server.read().unwrap(), (conn, msg(read)));
            unread_bytes -= msg(read).len();
            read += 1;
            while fits(delivered, read, unread_bytes) {
                let Some(i) = held.pop_first() else {
                    break;
                };
                delivered += 1;
                unread_bytes += msg(i).len();
                taken.push(i);
            }
        }
        for &i in &taken {
            assert_eq!(
                next_ack(&mut raw, ISN),
                Message::ack(id, ISN + 1 + i),
                "window {window}, round {round}"
            );
            unacked.remove(&i);
            acks.push(i);
        }
    }
    while read < M {
        assert_eq!(server.read().unwrap(), (conn, msg(read)));
        read += 1;
    }
    assert_eq!(
        acks,
        (0..M).collect::<Vec<_>>(),
        "each acknowledged once, in order"
    );
    assert!(turned_away_rounds >= 2, "{turned_away_rounds}");
    // The writer's window never exceeds the server's, so the hold-back
    // always has room: nothing is dropped.
    assert!(
        held_back > 0 && paused_drops == 0,
        "{held_back} {paused_drops}"
    );
    let s = server.stats(conn).unwrap();
    assert_eq!(
        (
            s.messages_received,
            s.withheld,
            s.paused_drops,
            s.duplicates_received
        ),
        (M, held_back, 0, duplicates)
    );
    assert_eq!(s.rejected, 0, "flow control is not the peer's fault");
    // Nothing but heartbeats follows: no ack was owed.
    for m in raw.gather(p.epoch() * 2, Some(id)) {
        assert_eq!((m.kind, m.seq_num), (MsgType::Ack, 0), "{m:?}");
    }
    server.close().unwrap();
}

#[test]
fn go_like_writer_window_1() {
    go_like_writer_against_a_full_inbox(1, (4, 1 << 20));
}

#[test]
fn go_like_writer_window_3() {
    go_like_writer_against_a_full_inbox(3, (4, 1 << 20));
}

#[test]
fn go_like_writer_window_8() {
    go_like_writer_against_a_full_inbox(8, (4, 1 << 20));
}

/// The byte limit of the inbox (here about three messages' worth) works
/// the same way.
#[test]
fn go_like_writer_against_an_inbox_full_of_bytes() {
    go_like_writer_against_a_full_inbox(8, (1000, 500));
}
