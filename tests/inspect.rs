//! `lsp-inspect`, the recording and checking proxy (src/bin/lsp-inspect/).
//!
//! Its modules are compiled into this test too (`#[path]` below), so most
//! tests drive the proxy in-process and wait on its record; the command
//! line, `listening on`, the summary's last line, SIGINT and the exit
//! codes are tested on the built binary. Real sockets on 127.0.0.1, port 0.
//!
//! * liveseq's `Client` and `Server` echo through the proxy at 0, 20 and 40%
//!   loss: everything arrives, byte for byte and in order, and no rule fires;
//! * raw-socket peers break each rule in turn: exactly that rule fires, by
//!   the side that broke it; conforming corner cases (ISN 0, re-sent Connect
//!   Acks, duplicate acks, a server silent toward an unvalidated client) fire
//!   nothing;
//! * seeded faults repeat exactly; the timeline of 1,000 messages is
//!   well-formed; the proxy's added latency is measured;
//! * opt-in: the Go reference runners through the proxy (`LIVESEQ_GO_RUNNERS`).

mod common;

#[allow(dead_code)]
#[path = "../src/bin/lsp-inspect/check/mod.rs"]
mod check;
#[allow(dead_code)]
#[path = "../src/bin/lsp-inspect/faults.rs"]
mod faults;
#[allow(dead_code)]
#[path = "../src/bin/lsp-inspect/proxy/mod.rs"]
mod proxy;
#[allow(dead_code)]
#[path = "../src/bin/lsp-inspect/record.rs"]
mod record;
#[allow(dead_code)]
#[path = "../src/bin/lsp-inspect/timeline.rs"]
mod timeline;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use liveseq::proto::Message;
use liveseq::{Client, Params, Server};

use check::{CheckParams, Rule, Side};
use faults::{DirFaults, Faults};
use proxy::{Config, Outcome, Proxy};

use common::WAIT;

/// Check parameters matching `p`, with the default timer jitter.
fn check_params(p: Params) -> CheckParams {
    let epoch = p.epoch();
    CheckParams {
        epoch,
        epoch_limit: p.epoch_limit,
        window: p.window_size.into(),
        max_unacked: p.max_unacked_messages.into(),
        max_backoff: p.max_backoff_interval,
        jitter: CheckParams::default_jitter(epoch),
    }
}

/// The same with a generous jitter, for liveseq's own endpoints under test:
/// the tests share two loaded cores, where a timer thread (an endpoint's, or
/// the proxy's receiving one) may be held up longer than any real network
/// needs allowing for. The rules still fire on a breach of that size.
fn loaded(p: Params) -> CheckParams {
    CheckParams {
        jitter: Duration::from_millis(250),
        ..check_params(p)
    }
}

fn config(server: SocketAddr, params: CheckParams, faults: Faults) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        server,
        params,
        faults,
        log: None,
        timeline: None,
        print_violations: false,
        max_clients: proxy::MAX_CLIENTS,
    }
}

fn loss(percent: f64, seed: u64) -> Faults {
    let f = DirFaults {
        drop: percent,
        ..DirFaults::default()
    };
    Faults {
        to_server: f.clone(),
        to_client: f,
        seed,
        reorder_max: Duration::from_millis(10),
    }
}

/// The rules broken on the flows of `clients`. A port of ours may have been
/// another process's a moment ago, whose peer still sends to it: what
/// strangers send to the proxy is theirs, not ours to judge.
fn rules(outcome: &Outcome, clients: &[SocketAddr]) -> Vec<(Rule, Side)> {
    outcome
        .violations
        .iter()
        .filter(|v| {
            outcome
                .clients
                .get(&v.flow)
                .is_some_and(|c| clients.contains(c))
        })
        .map(|v| (v.rule, v.side))
        .collect()
}

/// `recv_from`, again when a signal interrupted it (a child process of
/// another test exiting); fails after the socket's read timeout.
fn recv_from(socket: &UdpSocket, buf: &mut [u8]) -> (usize, SocketAddr) {
    loop {
        match socket.recv_from(buf) {
            Ok(r) => return r,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("no datagram: {e}"),
        }
    }
}

/// A liveseq client's address as the proxy sees it: clients bind the
/// unspecified address, and reach the proxy from 127.0.0.1.
fn as_seen(client: &Client) -> SocketAddr {
    let mut addr = client.local_addr().unwrap();
    if addr.ip().is_unspecified() {
        addr.set_ip([127, 0, 0, 1].into());
    }
    addr
}

/// The summary's last line agrees with the count of violations.
fn assert_summary_counts(outcome: &Outcome) {
    assert!(
        outcome
            .summary
            .ends_with(&format!("violations: {}", outcome.violation_count)),
        "{}",
        outcome.summary
    );
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("lsp-inspect-{}-{name}", std::process::id()))
}

// ----- liveseq through the proxy -----

/// Window and unacknowledged limit 4, no back-off, and a generous epoch
/// limit (50 epochs): the runs are about delivery and the rules, not loss
/// detection, on a machine that may be starved.
fn generous(epoch_millis: u64) -> Params {
    Params {
        epoch_limit: 50,
        epoch_millis,
        window_size: 4,
        max_unacked_messages: 4,
        max_backoff_interval: 0,
    }
}

/// A liveseq server on 127.0.0.1 echoing everything, and its echo thread.
fn echo_server(params: Params) -> (Arc<Server>, thread::JoinHandle<()>) {
    let server = Arc::new(Server::bind("127.0.0.1:0", params).unwrap());
    let echo = common::spawn_echo(server.clone());
    (server, echo)
}

/// `clients` liveseq clients echo `msgs` messages each through the proxy;
/// returns the outcome and the clients' addresses.
fn echo_through(
    percent: f64,
    seed: u64,
    clients: usize,
    msgs: usize,
) -> (Outcome, Vec<SocketAddr>) {
    let params = generous(40);
    let (server, echo) = echo_server(params);
    let proxy = Proxy::start(config(
        server.local_addr().unwrap(),
        loaded(params),
        loss(percent, seed),
    ))
    .unwrap();
    let to = proxy.local_addr();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            thread::spawn(move || {
                let client = Arc::new(Client::connect(to, params).unwrap());
                let addr = as_seen(&client);
                common::write_and_check_echoes(&client, c, msgs, 300);
                (addr, client.close())
            })
        })
        .collect();
    let (addrs, closes): (Vec<_>, Vec<_>) = handles.into_iter().map(|h| h.join().unwrap()).unzip();
    let outcome = proxy.stop();
    // The clients are gone: an echo whose Ack was lost can never drain.
    let _ = server.close_timeout(Duration::from_millis(100));
    echo.join().unwrap();
    // Every echo came back; a close that fails would say the connection
    // died while draining: show what the proxy saw.
    for close in closes {
        assert!(close.is_ok(), "{percent}%: {close:?}\n{}", outcome.summary);
    }
    (outcome, addrs)
}

#[test]
fn liveseq_echo_through_0_20_40_percent_loss_breaks_no_rule() {
    // The three loss levels run side by side: they mostly wait for epochs.
    let runs: Vec<_> = [0.0, 20.0, 40.0]
        .into_iter()
        .map(|p| thread::spawn(move || (p, echo_through(p, 42 + p as u64, 2, 60))))
        .collect();
    for run in runs {
        let (p, (outcome, clients)) = run.join().unwrap();
        println!("{p}% loss:\n{}", outcome.summary);
        assert_eq!(
            rules(&outcome, &clients),
            [],
            "{p}% loss: {:#?}",
            outcome.violations
        );
        assert_summary_counts(&outcome);
        assert_eq!(clients.len(), 2);
        assert!(clients
            .iter()
            .all(|c| outcome.clients.values().any(|x| x == c)));
        if p > 0.0 {
            assert!(outcome.summary.contains("retransmissions"));
        }
    }
}

// ----- raw peers breaking the rules -----

/// A raw client and a raw server with the proxy between them.
struct Rig {
    proxy: Proxy,
    server: UdpSocket,
    clients: Vec<UdpSocket>,
    /// The proxy's upstream address for each client, learnt from its first datagram.
    upstream: Vec<Option<SocketAddr>>,
}

const ID: u32 = 7;
const ISN: u64 = 100;
const EPOCH: Duration = Duration::from_millis(50);

fn rig_params() -> CheckParams {
    CheckParams {
        epoch: EPOCH,
        // Far beyond the sleeps of the silence scenarios (8 epochs), so a
        // late wake-up cannot add an after-lost to them.
        epoch_limit: 20,
        window: 4,
        max_unacked: 2,
        max_backoff: 0,
        jitter: Duration::from_millis(75),
    }
}

impl Rig {
    fn new(clients: usize) -> Rig {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_read_timeout(Some(WAIT)).unwrap();
        let proxy = Proxy::start(config(
            server.local_addr().unwrap(),
            rig_params(),
            Faults::default(),
        ))
        .unwrap();
        let clients = (0..clients)
            .map(|_| {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.set_read_timeout(Some(WAIT)).unwrap();
                s
            })
            .collect::<Vec<_>>();
        Rig {
            proxy,
            upstream: vec![None; clients.len()],
            server,
            clients,
        }
    }

    fn bytes(msg: &Message<'_>) -> Vec<u8> {
        let mut b = Vec::new();
        msg.encode(&mut b);
        b
    }

    /// The client addresses, for [`rules`].
    fn addrs(&self) -> Vec<SocketAddr> {
        self.clients
            .iter()
            .map(|s| s.local_addr().unwrap())
            .collect()
    }

    /// Receives on `socket` until `want` comes from `from` (any source if
    /// `None`), skipping strangers' datagrams; returns its source.
    fn expect(socket: &UdpSocket, want: &[u8], from: Option<SocketAddr>) -> SocketAddr {
        let mut buf = [0u8; 65536];
        loop {
            let (n, src) = recv_from(socket, &mut buf);
            if &buf[..n] == want && from.is_none_or(|f| f == src) {
                return src;
            }
        }
    }

    /// Client `c` sends raw bytes; the server receives them, unchanged,
    /// from the client's own upstream socket.
    fn client_raw(&mut self, c: usize, bytes: &[u8]) {
        self.clients[c]
            .send_to(bytes, self.proxy.local_addr())
            .unwrap();
        let from = Rig::expect(&self.server, bytes, self.upstream[c]);
        assert!(
            !self.upstream.contains(&Some(from)) || self.upstream[c] == Some(from),
            "one upstream socket per client"
        );
        self.upstream[c] = Some(from);
    }

    fn client(&mut self, c: usize, msg: &Message<'_>) {
        self.client_raw(c, &Rig::bytes(msg));
    }

    /// The server answers client `c`, who receives it.
    fn server(&mut self, c: usize, msg: &Message<'_>) {
        let bytes = Rig::bytes(msg);
        let up = self.upstream[c].expect("the client spoke first");
        self.server.send_to(&bytes, up).unwrap();
        let mut buf = [0u8; 65536];
        let n = self.clients[c]
            .recv(&mut buf)
            .expect("the proxy forwards back");
        assert_eq!(&buf[..n], &bytes[..]);
    }

    /// Connect with `isn`, answered as `id`, and the client's first heartbeat
    /// (which validates it in the server's eyes).
    fn connect(&mut self, c: usize, isn: u64, id: u32) {
        self.client(c, &Message::connect(isn));
        self.server(c, &Message::ack(id, isn));
        self.client(c, &Message::ack(id, 0));
    }

    /// Stops the proxy (it has recorded every datagram: each was seen
    /// forwarded); returns the outcome and the rules broken by our clients.
    fn finish(self) -> (Outcome, Vec<(Rule, Side)>) {
        let addrs = self.addrs();
        let outcome = self.proxy.stop();
        let rules = rules(&outcome, &addrs);
        (outcome, rules)
    }
}

fn data(id: u32, sn: u64, payload: &[u8]) -> Message<'_> {
    Message::data(id, sn, payload)
}

/// Each scenario breaks exactly one rule, and exactly that rule fires, once.
#[test]
fn each_rule_broken_by_a_raw_peer_is_caught_and_named() {
    type Scenario = fn(&mut Rig);
    let table: Vec<(&str, Rule, Side, usize, Scenario)> = vec![
        (
            "undecodable datagram",
            Rule::Malformed,
            Side::Client,
            1,
            |r| {
                r.connect(0, ISN, ID);
                r.client_raw(0, b"{\"Type\":1,\"ConnID\":");
            },
        ),
        (
            "payload shorter than Size",
            Rule::BadSize,
            Side::Client,
            1,
            |r| {
                r.connect(0, ISN, ID);
                let mut m = data(ID, ISN + 1, b"hi");
                m.size = 5;
                r.client(0, &m);
            },
        ),
        ("wrong checksum", Rule::BadChecksum, Side::Server, 1, |r| {
            r.connect(0, ISN, ID);
            let mut m = data(ID, ISN + 1, b"hello");
            m.checksum ^= 0x0100;
            r.server(0, &m);
        }),
        (
            "Data beyond the window",
            Rule::BeyondWindow,
            Side::Client,
            1,
            |r| {
                r.connect(0, ISN, ID);
                r.client(0, &data(ID, ISN + 1, b"a"));
                // 101 unacknowledged, window 4: 105 is one too far.
                r.client(0, &data(ID, ISN + 5, b"e"));
            },
        ),
        (
            "Data beyond max unacked",
            Rule::MaxUnacked,
            Side::Server,
            1,
            |r| {
                r.connect(0, ISN, ID);
                r.server(0, &data(ID, ISN + 1, b"a"));
                r.server(0, &data(ID, ISN + 2, b"b"));
                // Acked 101 (the third may go then), but only after sending it.
                r.server(0, &data(ID, ISN + 3, b"c"));
                r.client(0, &Message::ack(ID, ISN + 1));
            },
        ),
        (
            "Ack of Data never sent",
            Rule::AckUnsent,
            Side::Server,
            1,
            |r| {
                r.connect(0, ISN, ID);
                r.client(0, &data(ID, ISN + 1, b"a"));
                r.server(0, &Message::ack(ID, ISN + 1));
                r.server(0, &Message::ack(ID, ISN + 2));
            },
        ),
        (
            "CAck of Data never sent",
            Rule::AckUnsent,
            Side::Client,
            1,
            |r| {
                r.connect(0, ISN, ID);
                r.server(0, &data(ID, ISN + 1, b"a"));
                r.client(0, &Message::cack(ID, ISN + 3));
            },
        ),
        (
            "resends faster than the back-off",
            Rule::EarlyRetransmit,
            Side::Client,
            1,
            |r| {
                r.connect(0, ISN, ID);
                // Back-off 0: one epoch between resends; eight sends at once
                // (caught from the fourth, or later if the proxy was held up).
                for _ in 0..8 {
                    r.client(0, &data(ID, ISN + 1, b"again"));
                }
            },
        ),
        ("a heartbeat skipped", Rule::Silent, Side::Client, 1, |r| {
            r.connect(0, ISN, ID);
            // Eight epochs of silence both ways (more than 2 + jitter, less
            // than the epoch limit), then the client speaks again.
            thread::sleep(EPOCH * 8);
            r.client(0, &Message::ack(ID, 0));
        }),
        (
            "talking on a lost connection",
            Rule::AfterLost,
            Side::Client,
            1,
            |r| {
                r.connect(0, ISN, ID);
                // The client heartbeats but hears nothing for more than
                // epoch_limit epochs: by then it must have given up.
                let until = Instant::now() + EPOCH * 30;
                while Instant::now() < until {
                    thread::sleep(EPOCH / 2);
                    r.client(0, &Message::ack(ID, 0));
                }
            },
        ),
        (
            "a repeated Connect answered with a new id",
            Rule::ConnectReanswered,
            Side::Server,
            1,
            |r| {
                r.connect(0, ISN, ID);
                r.client(0, &Message::connect(ISN));
                r.server(0, &Message::ack(ID + 1, ISN));
                r.server(0, &Message::ack(ID, 0)); // the first connection lives on
            },
        ),
        (
            "one id for two clients",
            Rule::ConnIdReused,
            Side::Server,
            1,
            |r| {
                r.connect(0, ISN, ID);
                r.connect(1, ISN + 50, ID);
                r.server(1, &Message::ack(ID, 0)); // reported once per address
                r.server(0, &Message::ack(ID, 0));
            },
        ),
    ];
    // The scenarios run side by side, each with its own proxy.
    let runs: Vec<_> = table
        .into_iter()
        .map(|(name, rule, side, count, scenario)| {
            thread::spawn(move || {
                let mut rig = Rig::new(2);
                scenario(&mut rig);
                ((name, rule, side, count), rig.finish())
            })
        })
        .collect();
    for run in runs {
        let ((name, rule, side, count), (outcome, broken)) = run.join().unwrap();
        assert_eq!(
            broken,
            vec![(rule, side); count],
            "{name}: {:#?}",
            outcome.violations
        );
        let v = outcome.violations.iter().find(|v| v.rule == rule).unwrap();
        assert!(v.detail.len() > 20, "{name}: {}", v.detail);
        assert!(
            outcome
                .summary
                .contains(&format!("{} ({}): ", rule.name(), side.name())),
            "{name}: {}",
            outcome.summary
        );
        assert_summary_counts(&outcome);
    }
}

/// Choices the protocol (docs/PROTOCOL.md) leaves open, and legal repeats: nothing fires.
#[test]
fn conforming_corner_cases_break_no_rule() {
    type Scenario = fn(&mut Rig);
    let table: Vec<(&str, Scenario)> = vec![
        ("ISN 0: the Connect's Ack looks like a heartbeat", |r| {
            r.client(0, &Message::connect(0));
            r.server(0, &Message::ack(ID, 0));
            r.server(0, &Message::ack(ID, 0));
            r.client(0, &data(ID, 1, b"x"));
            r.server(0, &Message::ack(ID, 1));
            r.server(0, &data(ID, 1, b"x"));
            r.client(0, &Message::ack(ID, 1));
        }),
        (
            "re-sent Connect Acks, a server silent toward an unvalidated client",
            |r| {
                r.client(0, &Message::connect(ISN));
                r.server(0, &Message::ack(ID, ISN));
                thread::sleep(EPOCH * 6);
                r.server(0, &Message::ack(ID, ISN));
                r.client(0, &Message::connect(ISN));
                r.server(0, &Message::ack(ID, ISN));
            },
        ),
        ("duplicate acks, CAck, a full window after acks", |r| {
            r.connect(0, ISN, ID);
            r.client(0, &data(ID, ISN + 1, b"a"));
            r.client(0, &data(ID, ISN + 2, b"b"));
            r.server(0, &Message::cack(ID, ISN + 2));
            r.client(0, &data(ID, ISN + 3, b"c"));
            r.client(0, &data(ID, ISN + 4, b"d"));
            r.server(0, &Message::ack(ID, ISN + 4)); // out of order
            r.server(0, &Message::ack(ID, ISN + 1)); // below the window: a duplicate
            r.server(0, &Message::ack(ID, ISN + 3));
            r.client(0, &data(ID, ISN + 5, b"e"));
            r.client(0, &data(ID, ISN + 8, b"h")); // 105 unacked: up to 108
        }),
        ("resends on the back-off schedule", |r| {
            r.connect(0, ISN, ID);
            for _ in 0..4 {
                r.client(0, &data(ID, ISN + 1, b"again"));
                r.server(0, &Message::ack(ID, 0));
                thread::sleep(EPOCH);
            }
        }),
        (
            "a repeated Connect answered the same way; a new ISN, a new id",
            |r| {
                r.connect(0, ISN, ID);
                r.client(0, &Message::connect(ISN));
                r.server(0, &Message::ack(ID, ISN));
                r.client(0, &Message::connect(ISN + 9));
                r.server(0, &Message::ack(ID + 1, ISN + 9));
                r.client(0, &data(ID + 1, ISN + 10, b"new"));
            },
        ),
    ];
    let runs: Vec<_> = table
        .into_iter()
        .map(|(name, scenario)| {
            thread::spawn(move || {
                let mut rig = Rig::new(1);
                scenario(&mut rig);
                (name, rig.finish())
            })
        })
        .collect();
    for run in runs {
        let (name, (outcome, broken)) = run.join().unwrap();
        assert_eq!(broken, [], "{name}: {:#?}", outcome.violations);
    }
}

// ----- faults, timeline, overhead -----

/// The fault of each of `n` datagrams through a proxy with `faults`, from the log.
fn fates(faults: Faults, n: usize) -> Vec<String> {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let log = tmp(&format!("fates-{}.jsonl", faults.seed));
    let mut cfg = config(server.local_addr().unwrap(), rig_params(), faults);
    cfg.log = Some(log.clone());
    let proxy = Proxy::start(cfg).unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = client.local_addr().unwrap();
    for i in 0..n {
        let mut b = Vec::new();
        data(ID, ISN + 1 + i as u64, b"payload").encode(&mut b);
        client.send_to(&b, proxy.local_addr()).unwrap();
    }
    assert!(proxy
        .wait_until(WAIT, |r| r.flows.values().any(
            |f| f.client == me && f.rows.len() + f.omitted.datagrams as usize == n
        )));
    proxy.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    let me = me.to_string();
    text.lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.get("type")?;
            (v.get("client")?.as_str()? == me)
                .then(|| v.get("fault").map_or("-".into(), |f| f.to_string()))
        })
        .collect()
}

#[test]
fn seeded_faults_repeat_exactly() {
    let faults = |seed| Faults {
        to_server: DirFaults {
            drop: 30.0,
            dup: 20.0,
            corrupt: 20.0,
            ..DirFaults::default()
        },
        seed,
        ..Faults::default()
    };
    let a = fates(faults(5), 200);
    assert_eq!(a.len(), 200);
    assert_eq!(a, fates(faults(5), 200));
    assert_ne!(a, fates(faults(6), 200));
    assert!(a.iter().any(|f| f.contains("drop")));
    assert!(a.iter().any(|f| f.contains("duplicated")));
    assert!(a.iter().any(|f| f.contains("corrupted")));
}

/// Every tag opened is closed, in order (void HTML elements aside): well-formed enough.
fn assert_balanced(html: &str) {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        rest = &rest[start + 1..];
        let end = rest.find('>').expect("a tag is closed");
        let tag = &rest[..end];
        rest = &rest[end + 1..];
        if tag.starts_with('!') || tag.ends_with('/') {
            continue;
        }
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        if name == "meta" {
            continue;
        }
        if tag.starts_with('/') {
            assert_eq!(stack.pop().as_deref(), Some(name.as_str()), "near {tag:?}");
        } else {
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
}

#[test]
fn timeline_of_a_thousand_messages() {
    let params = Params {
        epoch_limit: 20,
        epoch_millis: 50,
        window_size: 8,
        max_unacked_messages: 8,
        max_backoff_interval: 0,
    };
    let server = Arc::new(Server::bind("127.0.0.1:0", params).unwrap());
    let echo = common::spawn_echo(server.clone());
    let path = tmp("timeline.html");
    let mut cfg = config(server.local_addr().unwrap(), loaded(params), loss(10.0, 3));
    cfg.timeline = Some(path.clone());
    let proxy = Proxy::start(cfg).unwrap();
    let client = Arc::new(Client::connect(proxy.local_addr(), params).unwrap());
    let me = as_seen(&client);
    common::write_and_check_echoes(&client, 0, 500, 100);
    client.close().unwrap();
    let outcome = proxy.stop();
    let _ = server.close_timeout(Duration::from_millis(100));
    echo.join().unwrap();
    assert_eq!(rules(&outcome, &[me]), [], "{:#?}", outcome.violations);
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);

    let html = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    assert_balanced(&html);
    // Our client's section: one arrow per datagram up to the cap, the rest
    // summed up (a stranger's datagrams would have a section of their own).
    let ours = &html[html.find(&format!("Client {me}")).unwrap()..];
    let ours = &ours[..ours.find("</svg>").unwrap()];
    assert_eq!(ours.matches("<g><title>").count(), record::ROWS_PER_FLOW);
    assert!(html.contains("more datagrams not drawn"));
    assert!(html.contains("Data ("));
    // Self-contained: nothing to run, nothing to fetch.
    assert!(!html.contains("<script") && !html.contains(" src=") && !html.contains("href="));
}

/// Median round trip of `n` heartbeat ping-pongs from `to` and back.
fn ping_pong(to: SocketAddr, n: usize) -> Duration {
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    let mut b = Vec::new();
    Message::ack(ID, 0).encode(&mut b);
    let mut buf = [0u8; 2048];
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            client.send_to(&b, to).unwrap();
            while recv_from(&client, &mut buf).1 != to {}
            t.elapsed()
        })
        .collect();
    times.sort();
    times[n / 2]
}

#[test]
fn added_latency_is_measured() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let echo = thread::spawn(move || {
        server
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 2048];
        loop {
            let (n, from) = recv_from(&server, &mut buf);
            if &buf[..n] == b"stop" {
                return;
            }
            server.send_to(&buf[..n], from).unwrap();
        }
    });
    let params = CheckParams {
        epoch: Duration::from_secs(10),
        ..rig_params()
    };
    let proxy = Proxy::start(config(addr, params, Faults::default())).unwrap();
    let direct = ping_pong(addr, 2000);
    let through = ping_pong(proxy.local_addr(), 2000);
    let outcome = proxy.stop();
    assert_summary_counts(&outcome);
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(b"stop", addr)
        .unwrap();
    echo.join().unwrap();
    let added = through.saturating_sub(direct);
    println!(
        "median round trip: direct {:.1} us, through the proxy {:.1} us: {:.1} us added per round trip \
         ({:.1} us per datagram)",
        direct.as_secs_f64() * 1e6,
        through.as_secs_f64() * 1e6,
        added.as_secs_f64() * 1e6,
        added.as_secs_f64() * 1e6 / 2.0
    );
    // Only a gross regression should fail this on a loaded machine.
    assert!(added < Duration::from_millis(20), "{added:?}");
}

// ----- hostile traffic: every table bounded -----

/// The floods of issue 26 on the checker alone, from one client address
/// (flow 0) while a healthy connection lives on another (flow 1): Acks with
/// random ConnIDs, Connects with random ISNs answered with new ConnIDs, and
/// Data never acknowledged. Every table stays within its bound, and the
/// healthy connection is still judged (a breach on it is still caught).
#[test]
fn the_checkers_tables_stay_bounded_under_floods_from_one_address() {
    let mut rng = faults::Rng(26);
    let mut c = check::Checker::new(rig_params());
    let mut n = 0;
    let mut at = Duration::ZERO;
    let mut both = |c: &mut check::Checker, at, flow, from: Side, m: &Message<'_>| {
        let seen = c.sent(at, flow, from, n, Ok(m));
        n += 1;
        c.delivered(at, flow, from.other(), Ok(m));
        seen.violations.iter().map(|v| v.rule).collect::<Vec<_>>()
    };
    // The healthy connection, on flow 1.
    both(&mut c, at, 1, Side::Client, &Message::connect(ISN));
    both(&mut c, at, 1, Side::Server, &Message::ack(ID, ISN));
    both(&mut c, at, 1, Side::Client, &Message::ack(ID, 0));
    let tick = Duration::from_micros(50); // 20,000 datagrams a second
    let mut peak = check::Sizes::default();
    for i in 0..60_000u64 {
        at += tick;
        let id = (rng.next() as u32) | 1 << 31;
        match i % 3 {
            // An Ack on a ConnID nobody gave out.
            0 => {
                both(&mut c, at, 0, Side::Client, &Message::ack(id, rng.next()));
            }
            // A Connect with a new ISN, answered with a new ConnID.
            1 => {
                let isn = rng.next() >> 1;
                both(&mut c, at, 0, Side::Client, &Message::connect(isn));
                both(&mut c, at, 0, Side::Server, &Message::ack(id, isn));
            }
            // Data on one connection, never acknowledged.
            _ => {
                both(&mut c, at, 0, Side::Client, &data(ID + 1, 1 + i, b"x"));
            }
        }
        if i % 100 == 0 {
            // The healthy connection heartbeats now and then.
            both(&mut c, at, 1, Side::Client, &Message::ack(ID, 0));
            both(&mut c, at, 1, Side::Server, &Message::ack(ID, 0));
        }
        if i % 1000 == 0 {
            let s = c.sizes();
            peak = check::Sizes {
                flows: peak.flows.max(s.flows),
                conns: peak.conns.max(s.conns),
                isns: peak.isns.max(s.isns),
                answers: peak.answers.max(s.answers),
                sent: peak.sent.max(s.sent),
                owners: peak.owners.max(s.owners),
                reused: peak.reused.max(s.reused),
                stalls: peak.stalls.max(s.stalls),
                bytes: peak.bytes.max(s.bytes),
                conns_forgotten: s.conns_forgotten,
            };
        }
    }
    println!("peak sizes: {peak:?}");
    assert!(peak.flows <= 2, "{peak:?}");
    // Flow 0 holds at most its share, flow 1 its one connection.
    assert!(peak.conns <= check::MAX_CONNS_PER_FLOW + 1, "{peak:?}");
    assert!(peak.isns <= check::MAX_ISNS + 1, "{peak:?}");
    assert!(peak.answers <= check::MAX_ANSWERS + 1, "{peak:?}");
    assert!(peak.sent <= check::MAX_SENT_HARD * 2 + 4, "{peak:?}");
    assert!(peak.owners <= 20_001 + 1, "{peak:?}");
    assert!(peak.bytes <= check::MAX_BYTES, "{peak:?}");
    assert!(peak.conns_forgotten > 10_000, "{peak:?}");
    // The healthy connection was never forgotten: a breach on it is caught.
    at += Duration::from_millis(1);
    assert_eq!(
        both(&mut c, at, 1, Side::Client, &data(ID, ISN + 1, b"a")),
        []
    );
    assert_eq!(
        both(&mut c, at, 1, Side::Client, &data(ID, ISN + 5, b"e")),
        [Rule::BeyondWindow]
    );
}

/// Datagrams from more client addresses than the checker tracks: it keeps
/// the most recently active, and forgets the rest.
#[test]
fn the_checker_tracks_a_bounded_number_of_addresses() {
    let mut c = check::Checker::with_caps(rig_params(), 100, 1000);
    for flow in 0..10_000 {
        let at = Duration::from_micros(flow as u64);
        c.sent(at, flow, Side::Client, flow, Ok(&Message::connect(ISN)));
        c.sent(
            at,
            flow,
            Side::Server,
            flow,
            Ok(&Message::ack(flow as u32 + 1, ISN)),
        );
    }
    let s = c.sizes();
    assert_eq!((s.flows, s.conns), (100, 100), "{s:?}");
}

/// /proc/PID/status's `Threads:` line.
fn threads_of(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

/// The binary, serving at most 256 client addresses, flooded from 1,500
/// local ports (one Connect each, as spoofed sources would send), while a
/// liveseq client talks through it: the client keeps being served, a new
/// client after the flood gets through, and the proxy runs the same few
/// threads throughout.
#[test]
fn binary_under_a_flood_from_many_addresses_keeps_serving_with_fixed_threads() {
    let params = generous(50);
    let (server, echo) = echo_server(params);
    let (mut child, rx, addr) = spawn_bin(
        server.local_addr().unwrap(),
        &[
            "--max-clients",
            "256",
            "--epoch-limit",
            "50",
            "--window-size",
            "4",
            "--max-unacked",
            "4",
            "--jitter-ms",
            "250",
        ],
    );
    let pid = child.id();
    let before = threads_of(pid);

    let early = Arc::new(Client::connect(addr, params).unwrap());
    let mut ours = vec![as_seen(&early)];
    common::write_and_check_echoes(&early, 0, 20, 100);
    let start = Instant::now();
    let mut flood = Vec::new();
    let mut b = Vec::new();
    for i in 0..1500u64 {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.clear();
        Message::connect(1000 + i).encode(&mut b);
        s.send_to(&b, addr).unwrap();
        flood.push(s);
        if i % 300 == 0 {
            // The early client talks on meanwhile.
            common::write_and_check_echoes(&early, 0, 2, 100);
        }
    }
    let during = threads_of(pid);
    let flooded = start.elapsed();
    drop(flood);
    common::write_and_check_echoes(&early, 0, 20, 100);
    let late = Arc::new(Client::connect(addr, params).unwrap());
    ours.push(as_seen(&late));
    common::write_and_check_echoes(&late, 1, 20, 100);
    let after = threads_of(pid);
    early.close().unwrap();
    late.close().unwrap();

    let status = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
    let lines: Vec<String> = rx.iter().collect();
    let _ = server.close_timeout(Duration::from_millis(100));
    echo.join().unwrap();
    println!(
        "threads before, during, after the flood: {before}, {during}, {after}; flood took {flooded:?}"
    );
    let summary = lines.join("\n");
    println!("{summary}");
    assert_eq!((during, after), (before, before), "{summary}");
    assert!(before <= 4, "{before} threads");
    for me in ours {
        let me = format!(" of {me}");
        assert!(!lines.iter().any(|l| l.contains(&me)), "{summary}");
    }
    // Some 1,500 addresses in all (the kernel may drop a few), at most 256
    // at a time.
    let dropped = lines
        .iter()
        .find_map(|l| {
            l.trim()
                .split_once(" client address(es) dropped by the proxy")
        })
        .and_then(|(n, _)| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{summary}"));
    assert!(dropped >= 1000, "{summary}");
}

// ----- the binary -----

const BIN: &str = env!("CARGO_BIN_EXE_lsp-inspect");

#[test]
fn bad_arguments_exit_2_with_one_line() {
    for args in [
        &["--listen", "127.0.0.1:0", "--server", "127.0.0.1:9"][..],
        &[
            "--listen",
            "127.0.0.1:0",
            "--server",
            "127.0.0.1:9",
            "--epoch-millis",
            "50",
            "--drop",
            "x",
        ],
        &["--bogus"],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("lsp-inspect: error: "), "{err}");
        assert!(out.stdout.is_empty());
    }
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("--blackout A-B") && help.contains("exit status"));
}

/// Starts the binary against `server`; returns it with its stdout lines
/// arriving on a channel, once it printed `listening on`.
fn spawn_bin(
    server: SocketAddr,
    extra: &[&str],
) -> (std::process::Child, mpsc::Receiver<String>, SocketAddr) {
    let mut child = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--epoch-millis",
            "50",
            "--server",
        ])
        .arg(server.to_string())
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let first = rx.recv_timeout(WAIT).unwrap();
    let addr = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line {first:?}"))
        .parse()
        .unwrap();
    (child, rx, addr)
}

#[test]
fn binary_runs_for_its_duration_and_on_sigint_ends_with_the_summary() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    server.set_read_timeout(Some(WAIT)).unwrap();
    let saddr = server.local_addr().unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut b = Vec::new();
    data(ID, ISN + 1, b"hi").encode(&mut b);
    b[5] = b'9'; // unknown type: undecodable

    // --duration: stops on its own. A violation does not change the exit code.
    let (mut child, rx, addr) = spawn_bin(saddr, &["--duration", "1.5"]);
    client.send_to(&b, addr).unwrap();
    Rig::expect(&server, &b, None);
    assert!(child.wait().unwrap().success());
    let lines: Vec<String> = rx.iter().collect();
    let me = client.local_addr().unwrap();
    let ours = format!("malformed by the client of {me}:");
    assert_eq!(
        lines.iter().filter(|l| l.contains(&ours)).count(),
        1,
        "{lines:?}"
    );
    // Strangers' datagrams (a port reused) would be counted too.
    let found = lines
        .iter()
        .filter(|l| l.starts_with("violation #"))
        .count();
    assert_eq!(lines.last(), Some(&format!("violations: {found}")));

    // No duration: runs until SIGINT.
    let (mut child, rx, _) = spawn_bin(saddr, &[]);
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
    let lines: Vec<String> = rx.iter().collect();
    let found = lines
        .iter()
        .filter(|l| l.starts_with("violation #"))
        .count();
    assert!(lines[found].starts_with("summary: "), "{lines:?}");
    assert_eq!(lines.last(), Some(&format!("violations: {found}")));
}

// ----- opt-in: the Go reference runners -----

/// The Go echo server and client through the proxy at 0, 20 and 40% loss
/// (dropped by the proxy, each way): every echo must come back and the
/// inspector must find nothing. Ignored by default; run with `--ignored` and
/// `LIVESEQ_GO_RUNNERS` naming the folder with `srunner_sols` and
/// `crunner_sols` (without it, the run fails).
#[test]
#[ignore = "needs the Go runners: set LIVESEQ_GO_RUNNERS (see tests/README.md)"]
fn go_reference_runners_through_the_proxy() {
    let Some(dir) = std::env::var_os("LIVESEQ_GO_RUNNERS").map(PathBuf::from) else {
        panic!(
            "set LIVESEQ_GO_RUNNERS to the folder with srunner_sols and crunner_sols \
             (bin/linux/amd64 of the public repository zoharrpg/Distributed-Bitcoin-Miner; \
             see tests/README.md)"
        );
    };
    let lines = 50;
    let runs: Vec<_> = [0.0, 20.0, 40.0]
        .into_iter()
        .map(|p| {
            let dir = dir.clone();
            thread::spawn(move || (p, go_run(&dir, p, lines)))
        })
        .collect();
    for run in runs {
        let (p, outcome) = run.join().unwrap();
        println!("Go runners, {p}% loss each way:\n{}\n", outcome.summary);
        // crunner_sols is its proxy's one client, the first address heard.
        let crunner = Vec::from_iter(outcome.clients.values().next().copied());
        assert_eq!(
            rules(&outcome, &crunner),
            [],
            "{p}%: {:#?}",
            outcome.violations
        );
    }
}

/// A subprocess killed and reaped when dropped.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn lines_of(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

fn go_run(dir: &std::path::Path, percent: f64, lines: usize) -> Outcome {
    let params = Params {
        epoch_limit: 20,
        epoch_millis: 100,
        window_size: 4,
        max_unacked_messages: 4,
        max_backoff_interval: 2,
    };
    let flags = |p: &Params| {
        [
            ("-elim", p.epoch_limit.to_string()),
            ("-ems", p.epoch_millis.to_string()),
            ("-wsize", p.window_size.to_string()),
            ("-maxUnackMessages", p.max_unacked_messages.to_string()),
            ("-maxbackoff", p.max_backoff_interval.to_string()),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_string(), v])
        .collect::<Vec<_>>()
    };
    // srunner on a port that was free a moment ago (retried if taken).
    let (_srunner, port) = (0..10)
        .find_map(|_| {
            let port = UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = Command::new(dir.join("srunner_sols"))
                .args(["-port", &port.to_string()])
                .args(flags(&params))
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let rx = lines_of(&mut child);
            let child = Reaped(child);
            while let Ok(line) = rx.recv_timeout(WAIT) {
                if line.contains("waiting for clients") {
                    return Some((child, port));
                }
            }
            None
        })
        .expect("srunner_sols starts");
    let proxy = Proxy::start(config(
        SocketAddr::from(([127, 0, 0, 1], port)),
        check_params(params),
        loss(percent, 1000 + percent as u64),
    ))
    .unwrap();
    let words: Vec<String> = (0..lines)
        .map(|i| format!("word-{i}-{}", "x".repeat(i % 40)))
        .collect();
    let mut crunner = Command::new(dir.join("crunner_sols"))
        .args([
            "-host",
            "127.0.0.1",
            "-port",
            &proxy.local_addr().port().to_string(),
        ])
        .args(flags(&params))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut crunner);
    let mut stdin = crunner.stdin.take().unwrap();
    let input: String = words.iter().map(|w| format!("{w}\n")).collect();
    let _crunner = Reaped(crunner);
    // Closed once written: the runner drains on end of input.
    thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut echoes = Vec::new();
    while echoes.len() < words.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            panic!("{percent}%: {} of {} echoes", echoes.len(), words.len());
        };
        let mut line = line.as_str();
        while let Some(rest) = line.strip_prefix("Client: ") {
            line = rest;
        }
        if let Some(echo) = line.strip_prefix("Server: ") {
            echoes.push(echo.to_string());
        }
    }
    assert_eq!(echoes, words, "{percent}%");
    proxy.stop()
}
