//! The chat example's relay, run in-process: every message reaches every
//! other client exactly once and in order, joins and leaves are announced,
//! and a broadcast skips connections that ended meanwhile.

mod common;

#[allow(dead_code)] // the example's `main` and command line
#[path = "../examples/chat.rs"]
mod chat;

use std::net::SocketAddr;

use common::{TestParams, WAIT};
use liveseq::{Client, ConnId, Error, Params, Server, ServerEvent};

/// Short epochs, with a loss time (10 x 50 ms) a starved test machine does
/// not reach by accident.
fn chat_params() -> Params {
    TestParams::new()
        .epoch_millis(50)
        .epoch_limit(10)
        .window(8)
        .max_unacked(8)
        .build()
}

/// The next message, as text; fails after [`WAIT`].
fn next(client: &Client) -> String {
    match client.read_timeout(WAIT) {
        Ok(message) => String::from_utf8(message).unwrap(),
        Err(err) => panic!("client {}: {err}", client.conn_id()),
    }
}

/// The address the server sees `client` at, as the relay prints it.
fn peer(server: &Server, client: &Client) -> SocketAddr {
    server.peer_addr(client.conn_id()).unwrap()
}

#[test]
fn every_message_reaches_every_other_client_once_in_order() {
    const N: usize = 30;
    let server = Server::bind("127.0.0.1:0", chat_params()).unwrap();
    let addr = server.local_addr().unwrap();
    std::thread::scope(|s| {
        let relay = s.spawn(|| chat::relay(&server));
        let clients: Vec<Client> = (0..3)
            .map(|_| Client::connect(addr, chat_params()).unwrap())
            .collect();
        let peers: Vec<SocketAddr> = clients.iter().map(|c| peer(&server, c)).collect();

        // Joins are announced to those already there. Once client 0 has
        // heard of client 2, the relay knows all three.
        assert_eq!(next(&clients[0]), format!("* {} joined", peers[1]));
        assert_eq!(next(&clients[0]), format!("* {} joined", peers[2]));
        assert_eq!(next(&clients[1]), format!("* {} joined", peers[2]));

        // All three talk at once.
        let received: Vec<Vec<String>> = std::thread::scope(|t| {
            let talkers: Vec<_> = clients
                .iter()
                .enumerate()
                .map(|(k, client)| {
                    t.spawn(move || {
                        let lines = (0..N).map(|i| format!("client {k} line {i}"));
                        chat::send_lines(client, lines).unwrap();
                        (0..2 * N).map(|_| next(client)).collect::<Vec<String>>()
                    })
                })
                .collect();
            talkers.into_iter().map(|t| t.join().unwrap()).collect()
        });
        // Each client read 2N lines: N from each of the others, in order,
        // leaves nothing for echoes, duplicates or strays.
        for (k, lines) in received.iter().enumerate() {
            for j in (0..3).filter(|&j| j != k) {
                let from_j: Vec<&String> = lines
                    .iter()
                    .filter(|line| line.starts_with(&format!("{}: ", peers[j])))
                    .collect();
                let expected: Vec<String> = (0..N)
                    .map(|i| format!("{}: client {j} line {i}", peers[j]))
                    .collect();
                assert_eq!(
                    from_j,
                    expected.iter().collect::<Vec<_>>(),
                    "client {k} from {j}"
                );
            }
        }

        // Client 2 leaves. LSP has no close message: the others hear of it
        // once the server has declared it lost.
        clients[2].close().unwrap();
        for client in &clients[..2] {
            assert_eq!(next(client), format!("* {} left", peers[2]));
        }
        // The relay goes on without it.
        chat::send_lines(&clients[0], ["still here".to_string()]).unwrap();
        assert_eq!(next(&clients[1]), format!("{}: still here", peers[0]));

        server.close().unwrap();
        relay.join().unwrap().unwrap();
    });
}

#[test]
fn broadcast_skips_connections_that_ended() {
    let p = chat_params();
    let server = Server::bind("127.0.0.1:0", p).unwrap();
    let addr = server.local_addr().unwrap();
    let clients: Vec<Client> = (0..3).map(|_| Client::connect(addr, p).unwrap()).collect();
    let ids: Vec<ConnId> = clients.iter().map(Client::conn_id).collect();
    for &id in &ids {
        let event = server.next_event_timeout(WAIT).unwrap();
        assert!(
            matches!(event, ServerEvent::Connected { id: e, .. } if e == id),
            "{event:?}"
        );
    }

    // Connection 0 closed by the server, connection 2 lost (its event
    // already taken), and an id that never existed.
    server.close_conn(ids[0]).unwrap();
    assert_eq!(
        server.next_event_timeout(WAIT).unwrap(),
        ServerEvent::Closed { id: ids[0] }
    );
    // A write says how a connection ended while the server remembers it,
    // epoch_limit epochs.
    assert!(matches!(
        server.write(ids[0], b"x"),
        Err(Error::ConnectionClosed(id)) if id == ids[0]
    ));
    clients[2].close().unwrap();
    assert_eq!(
        server.next_event_timeout(WAIT).unwrap(),
        ServerEvent::Lost { id: ids[2] }
    );
    let never = ConnId::from(u32::MAX);
    assert!(matches!(
        server.write(ids[2], b"x"),
        Err(Error::ConnectionLost(id)) if id == ids[2]
    ));
    // By now (epoch_limit epochs of silence later) 0 may be forgotten.
    assert!(matches!(
        server.write(ids[0], b"x"),
        Err(Error::ConnectionClosed(id) | Error::UnknownConnection(id)) if id == ids[0]
    ));
    assert!(matches!(
        server.write(never, b"x"),
        Err(Error::UnknownConnection(_))
    ));

    chat::broadcast(
        &server,
        [ids[0], never, ids[2], ids[1]],
        b"to whoever is left",
    )
    .unwrap();
    assert_eq!(next(&clients[1]), "to whoever is left");

    // Once the server is closed, a broadcast says so.
    server.close().unwrap();
    assert!(matches!(
        chat::broadcast(&server, [ids[1]], b"late"),
        Err(Error::Closed)
    ));
}

#[test]
fn long_messages_are_cut_to_fit_and_too_long_lines_skipped() {
    let server = Server::bind("127.0.0.1:0", chat_params()).unwrap();
    let addr = server.local_addr().unwrap();
    let max = server.max_payload();
    std::thread::scope(|s| {
        let relay = s.spawn(|| chat::relay(&server));
        let from = Client::connect(addr, chat_params()).unwrap();
        let to = Client::connect(addr, chat_params()).unwrap();
        let prefix = format!("{}: ", peer(&server, &from));
        assert_eq!(next(&from), format!("* {} joined", peer(&server, &to)));

        let longest = "a".repeat(from.max_payload());
        let too_long = "b".repeat(from.max_payload() + 1);
        chat::send_lines(&from, [longest.clone(), too_long, "short".to_string()]).unwrap();
        let relayed = next(&to);
        assert_eq!(relayed.len(), max);
        assert_eq!(relayed, prefix.clone() + &longest[..max - prefix.len()]);
        assert_eq!(next(&to), prefix + "short");

        server.close().unwrap();
        relay.join().unwrap().unwrap();
    });
}
