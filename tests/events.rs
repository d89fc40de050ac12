//! The server's event-style read: every connection's events in order,
//! `Connected` first, exactly one terminal event, no message after it.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{TestParams, WAIT};
use liveseq::{Client, ConnId, Error, Server, ServerEvent};

/// Collects events until `done` says stop, failing after [`WAIT`].
fn events_until(server: &Server, mut done: impl FnMut(&[ServerEvent]) -> bool) -> Vec<ServerEvent> {
    let mut seen = Vec::new();
    while !done(&seen) {
        match server.next_event_timeout(WAIT) {
            Ok(event) => seen.push(event),
            Err(err) => panic!("after {seen:?}: {err}"),
        }
    }
    seen
}

#[test]
fn connected_messages_then_lost_in_order() {
    let p = TestParams::new()
        .epoch_millis(20)
        .epoch_limit(3)
        .window(4)
        .max_unacked(4)
        .build();
    let server = Server::bind("127.0.0.1:0", p).unwrap();
    let clients: Vec<Client> = (0..3)
        .map(|_| Client::connect(server.local_addr().unwrap(), p).unwrap())
        .collect();
    for (c, client) in clients.iter().enumerate() {
        for i in 0..20u8 {
            client.write(&[c as u8, i]).unwrap();
        }
    }
    for client in &clients {
        client.close().unwrap();
    }
    // A closed client falls silent: the server reports it lost.
    let events = events_until(&server, |seen| {
        seen.iter()
            .filter(|e| matches!(e, ServerEvent::Lost { .. }))
            .count()
            == 3
    });
    let mut per_conn: HashMap<ConnId, Vec<&ServerEvent>> = HashMap::new();
    for e in &events {
        per_conn.entry(e.conn_id()).or_default().push(e);
    }
    assert_eq!(per_conn.len(), 3);
    for (c, client) in clients.iter().enumerate() {
        let seen = &per_conn[&client.conn_id()];
        assert_eq!(seen.len(), 22, "{seen:?}");
        match seen[0] {
            ServerEvent::Connected { peer, .. } => {
                assert_eq!(peer.port(), client.local_addr().unwrap().port())
            }
            other => panic!("first event {other:?}"),
        }
        for (i, e) in seen[1..21].iter().enumerate() {
            assert_eq!(
                **e,
                ServerEvent::Message {
                    id: client.conn_id(),
                    payload: vec![c as u8, i as u8]
                }
            );
        }
        assert_eq!(
            *seen[21],
            ServerEvent::Lost {
                id: client.conn_id()
            }
        );
        assert_eq!(server.peer_addr(client.conn_id()), None);
    }
    assert_eq!(server.try_next_event().unwrap(), None);
    server.close().unwrap();
    assert!(matches!(server.next_event(), Err(Error::Closed)));
}

/// After `close_conn`, messages still queued from that connection are
/// skipped: `Closed` is its last event.
#[test]
fn close_conn_ends_the_events_of_a_connection() {
    let p = TestParams::new()
        .epoch_millis(20)
        .epoch_limit(5)
        .window(8)
        .max_unacked(8)
        .build();
    let server = Server::bind("127.0.0.1:0", p).unwrap();
    let client = Client::connect(server.local_addr().unwrap(), p).unwrap();
    let id = client.conn_id();
    assert!(matches!(
        server.next_event_timeout(WAIT).unwrap(),
        ServerEvent::Connected { id: got, .. } if got == id
    ));
    for i in 0..8u8 {
        client.write(&[i]).unwrap();
    }
    // Wait until the first message is in, then close with more queued.
    assert_eq!(
        server.next_event_timeout(WAIT).unwrap(),
        ServerEvent::Message {
            id,
            payload: vec![0]
        }
    );
    server.close_conn(id).unwrap();
    assert_eq!(
        server.next_event_timeout(WAIT).unwrap(),
        ServerEvent::Closed { id }
    );
    assert!(matches!(
        server.next_event_timeout(Duration::from_millis(200)),
        Err(Error::Timeout)
    ));
    server.close().unwrap();
}
