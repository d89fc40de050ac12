//! `close_timeout` gives up on a peer that never acknowledges and still
//! leaves no thread behind. One test only: it counts the threads of the
//! whole process, so nothing else may run in this binary.

mod common;

use common::{threads, threads_settled_at};

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use liveseq::proto::{Message, MsgType};
use liveseq::{Client, ConnId, Error, Params, Server};

#[test]
fn close_timeout_with_unacknowledging_peers_leaves_no_thread() {
    let baseline = threads();
    let p = Params {
        epoch_millis: 200,
        epoch_limit: 1000,
        ..Params::default()
    };

    // Server side: a raw peer connects, then answers nothing (the server's
    // epoch limit is far away, so only the deadline can end the close).
    let server = Server::bind("127.0.0.1:0", p).unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    Message::connect(5).encode(&mut buf);
    peer.send_to(&buf, server.local_addr().unwrap()).unwrap();
    let mut rx = [0u8; 2048];
    let (n, _) = peer.recv_from(&mut rx).unwrap();
    let ack = Message::decode(&rx[..n]).unwrap();
    assert_eq!((ack.kind, ack.seq_num), (MsgType::Ack, 5));
    server
        .write(ConnId::from(ack.conn_id), b"unanswered")
        .unwrap();

    // Client side: a client whose server (a raw socket) never acks its data.
    let fake_server = UdpSocket::bind("127.0.0.1:0").unwrap();
    fake_server
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let fake_addr = fake_server.local_addr().unwrap();
    let answer = std::thread::spawn(move || {
        let mut rx = [0u8; 2048];
        let (n, from) = fake_server.recv_from(&mut rx).unwrap();
        let connect = Message::decode(&rx[..n]).unwrap();
        let mut buf = Vec::new();
        Message::ack(9, connect.seq_num).encode(&mut buf);
        fake_server.send_to(&buf, from).unwrap();
        fake_server
    });
    let client = Client::connect(fake_addr, p).unwrap();
    let _fake_server = answer.join().unwrap();
    client.write(b"unanswered too").unwrap();
    assert!(threads() >= baseline + 6, "three threads per instance");

    let deadline = Duration::from_millis(200);
    for close in [
        Box::new(|| server.close_timeout(deadline)) as Box<dyn Fn() -> Result<(), Error>>,
        Box::new(|| client.close_timeout(deadline)),
    ] {
        let started = Instant::now();
        let result = close();
        let took = started.elapsed();
        assert!(
            matches!(result, Err(Error::CloseTimedOut { unacked: 1 })),
            "{result:?}"
        );
        assert!(took >= deadline && took <= deadline + p.epoch(), "{took:?}");
    }
    assert_eq!(
        threads_settled_at(baseline),
        baseline,
        "every thread of both instances was joined"
    );
}
