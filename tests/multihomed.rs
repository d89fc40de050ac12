//! A server bound to a wildcard address (`0.0.0.0`, `[::]`) answers each
//! client from the address that client sent to (issue 26, part 3): a
//! client's socket is connected to the server's address, so a reply from
//! any other address is dropped and the connect times out.
//!
//! On loopback: all of 127.0.0.0/8 reaches `lo` on Linux, so 127.0.0.1 and
//! 127.0.0.2 are two addresses of one host, and the kernel's own choice of
//! source for a reply to 127.0.0.1 is 127.0.0.1 whichever was asked for.
//! The dual-stack test needs IPv6 loopback (`::1`): without it, it fails
//! saying so, unless `LIVESEQ_NO_IPV6=1` marks the host as having none,
//! when it says it skips (see tests/README.md).

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{spawn_echo, write_and_check_echoes, TestParams, WAIT};
use liveseq::proto::{Message, MsgType};
use liveseq::{Client, Params, Server};

const MESSAGES: usize = 100;

fn test_params() -> Params {
    TestParams::new()
        .epoch_limit(10)
        .epoch_millis(50)
        .window(8)
        .max_unacked(8)
        .build()
}

/// `server`'s port at `ip`.
fn at(ip: &str, server: SocketAddr) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), server.port())
}

/// A client for each of `targets`, at once, each echoing `MESSAGES`
/// messages byte for byte through `server`'s echo loop.
fn echo_through(targets: &[SocketAddr], p: Params) {
    let clients: Vec<_> = targets
        .iter()
        .enumerate()
        .map(|(c, &target)| {
            thread::spawn(move || {
                let client = Arc::new(
                    Client::connect(target, p)
                        .unwrap_or_else(|err| panic!("connect to {target}: {err}")),
                );
                write_and_check_echoes(&client, c, MESSAGES, 1000);
                client.close().unwrap();
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
}

/// A raw client bound to `bind` and not connected sends a Connect to
/// `target`: the Ack, and the echo of one Data message, come from `target`
/// itself (a connected client would drop them otherwise).
fn replies_come_from(bind: &str, target: SocketAddr) {
    let socket = UdpSocket::bind(bind).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let send = |msg: &Message<'_>| {
        let mut bytes = Vec::new();
        msg.encode(&mut bytes);
        socket.send_to(&bytes, target).unwrap();
    };
    let recv = || -> (Message<'static>, SocketAddr) {
        let mut buf = [0u8; 2048];
        let (n, from) = socket
            .recv_from(&mut buf)
            .unwrap_or_else(|err| panic!("no reply to a datagram sent to {target}: {err}"));
        (Message::decode(&buf[..n]).unwrap().into_owned(), from)
    };
    let isn = 7;
    send(&Message::connect(isn));
    let (ack, from) = recv();
    assert_eq!((ack.kind, ack.seq_num), (MsgType::Ack, isn), "{ack:?}");
    assert_eq!(
        from, target,
        "the Connect's Ack came from {from}, not {target}"
    );
    let id = ack.conn_id;
    send(&Message::data(id, isn + 1, b"hello"));
    loop {
        let (msg, from) = recv();
        assert_eq!(from, target, "{msg:?} came from {from}, not {target}");
        if msg.kind == MsgType::Data {
            assert_eq!(&msg.payload[..], b"hello");
            send(&Message::ack(id, msg.seq_num));
            return;
        }
    }
}

#[test]
fn a_server_on_0_0_0_0_answers_each_client_from_the_address_it_used() {
    let p = test_params();
    let server = Arc::new(Server::bind("0.0.0.0:0", p).unwrap());
    let addr = server.local_addr().unwrap();
    assert!(addr.ip().is_unspecified(), "{addr}");
    let echo = spawn_echo(server.clone());
    // The address the kernel would not have picked, and the one it would.
    echo_through(&[at("127.0.0.2", addr), at("127.0.0.1", addr)], p);
    replies_come_from("127.0.0.1:0", at("127.0.0.2", addr));
    replies_come_from("127.0.0.1:0", at("127.0.0.3", addr));
    assert_eq!(server.totals().accepted, 4);
    server.close_timeout(Duration::from_secs(5)).ok();
    echo.join().unwrap();
}

#[test]
fn a_listener_on_0_0_0_0_answers_each_client_from_the_address_it_used() {
    let p = test_params();
    let listener = Arc::new(Server::builder().params(p).listen("0.0.0.0:0").unwrap());
    let addr = listener.local_addr().unwrap();
    let serve = {
        let listener = listener.clone();
        thread::spawn(move || {
            let mut threads = Vec::new();
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                threads.push(thread::spawn(move || {
                    while let Ok(msg) = conn.read() {
                        if conn.write(&msg).is_err() {
                            break;
                        }
                    }
                }));
            }
            for t in threads {
                t.join().unwrap();
            }
        })
    };
    echo_through(&[at("127.0.0.2", addr), at("127.0.0.1", addr)], p);
    replies_come_from("127.0.0.1:0", at("127.0.0.2", addr));
    listener.close().unwrap();
    serve.join().unwrap();
}

/// Whether this host has IPv6 loopback; if not, fails unless
/// `LIVESEQ_NO_IPV6=1` says it has none, and then says it skips.
fn ipv6_loopback(test: &str) -> bool {
    if UdpSocket::bind("[::1]:0").is_ok() {
        return true;
    }
    if std::env::var("LIVESEQ_NO_IPV6").as_deref() == Ok("1") {
        eprintln!("SKIPPED {test}: no IPv6 loopback (::1), and LIVESEQ_NO_IPV6=1");
        return false;
    }
    panic!(
        "{test} needs IPv6 loopback (::1), which cannot be bound here; \
         set LIVESEQ_NO_IPV6=1 to skip it on a host without IPv6"
    );
}

#[test]
fn a_dual_stack_server_on_ipv6_any_answers_over_ipv6_and_ipv4() {
    if !ipv6_loopback("a_dual_stack_server_on_ipv6_any_answers_over_ipv6_and_ipv4") {
        return;
    }
    // liveseq leaves IPV6_V6ONLY at the system's default for a server, as
    // std's UdpSocket::bind does: on Linux net.ipv6.bindv6only, normally 0.
    let v6only = std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").unwrap_or_default();
    assert_ne!(
        v6only.trim(),
        "1",
        "net.ipv6.bindv6only is 1 on this host: a server on [::] takes no IPv4"
    );
    let p = test_params();
    let server = Arc::new(Server::bind("[::]:0", p).unwrap());
    let addr = server.local_addr().unwrap();
    assert!(addr.is_ipv6() && addr.ip().is_unspecified(), "{addr}");
    let echo = spawn_echo(server.clone());
    let v4 = |ip: [u8; 4]| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), addr.port());
    echo_through(
        &[at("::1", addr), v4([127, 0, 0, 1]), v4([127, 0, 0, 2])],
        p,
    );
    // IPv4 through the dual-stack socket: IPv4-mapped on the server's side,
    // plain IPv4 on the wire.
    replies_come_from("127.0.0.1:0", v4([127, 0, 0, 2]));
    replies_come_from("[::1]:0", at("::1", addr));
    assert_eq!(server.totals().accepted, 5);
    server.close_timeout(Duration::from_secs(5)).ok();
    echo.join().unwrap();
}
