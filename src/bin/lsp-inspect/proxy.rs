//! The proxy: the only part that touches sockets, threads and clocks.
//!
//! One socket listens for clients; each client address gets its own
//! upstream socket, connected to the server, so the server sees one peer
//! per client. A thread per socket receives; every datagram is decoded,
//! judged by the [`Checker`], given a fate by the [`FaultModel`], recorded
//! and forwarded under one lock, so the check, the log and the delivery
//! order agree. Held-back copies (delay, reorder) wait in a queue served
//! by one more thread.

use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io::{self, BufWriter};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use liveseq::proto::Message;

use crate::check::{CheckParams, Checker, Side, Violation};
use crate::faults::{FaultModel, Faults};
use crate::record::Recorder;
use crate::timeline;

/// How often blocked threads look at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// The stall monitor's period, and the lateness it reports as a stall
/// (below it, the timer jitter covers it).
const STALL_TICK: Duration = Duration::from_millis(5);
const STALL_MIN: Duration = Duration::from_millis(10);

/// Client addresses served; datagrams from further ones are dropped (each
/// costs a socket and a thread).
const MAX_CLIENTS: usize = 4096;

/// Violations printed as they happen; later ones are only counted.
const PRINTED: usize = 100;

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where clients send.
    pub listen: SocketAddr,
    /// The LSP server.
    pub server: SocketAddr,
    /// The parameters the endpoints use.
    pub params: CheckParams,
    /// The faults to inject.
    pub faults: Faults,
    /// JSON-lines log file.
    pub log: Option<PathBuf>,
    /// HTML timeline file, written at the end.
    pub timeline: Option<PathBuf>,
    /// Print each violation to standard output as it is found.
    pub print_violations: bool,
}

/// The mutable heart, under one lock.
struct State {
    checker: Checker,
    faults: FaultModel,
    recorder: Recorder,
    next_index: usize,
    printed: usize,
}

/// Where a datagram goes: up a connected upstream socket, or down the
/// listening socket to a client.
#[derive(Clone)]
struct Out {
    socket: Arc<UdpSocket>,
    to: Option<SocketAddr>,
}

impl Out {
    fn send(&self, bytes: &[u8]) {
        // A failed send is a lost datagram, which LSP survives; an endpoint
        // that went away (ECONNREFUSED) must not stop the proxy.
        let _ = match self.to {
            Some(to) => self.socket.send_to(bytes, to),
            None => self.socket.send(bytes),
        };
    }
}

/// A copy held back by a delay or reorder fault.
struct Held {
    due: Instant,
    order: u64,
    index: usize,
    flow: usize,
    to: Side,
    out: Out,
    bytes: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    /// Reversed, so that the max-heap yields the earliest first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.due, other.order).cmp(&(self.due, self.order))
    }
}

struct Shared {
    state: Mutex<State>,
    /// Signalled after every recorded datagram (tests wait on it).
    changed: Condvar,
    listen: Arc<UdpSocket>,
    server: SocketAddr,
    start: Instant,
    stop: AtomicBool,
    /// A datagram's handling panicked (reported once).
    panicked: AtomicBool,
    held: Mutex<(BinaryHeap<Held>, u64)>,
    held_changed: Condvar,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not take the record with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The end of a run.
#[derive(Debug)]
// Tests (tests/inspect.rs drives the proxy in-process) read every field.
#[allow(dead_code)]
pub struct Outcome {
    /// The text summary; its last line is `violations: N`.
    pub summary: String,
    /// Violations in all.
    pub violation_count: u64,
    /// The first violations, with details.
    pub violations: Vec<Violation>,
    /// Each flow's client address (index: [`Violation::flow`]).
    pub clients: Vec<SocketAddr>,
    /// Problems writing the log or the timeline.
    pub errors: Vec<String>,
}

/// A running proxy. Stop it with [`Proxy::stop`] (dropping it stops it too).
pub struct Proxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    timeline: Option<PathBuf>,
    stopped: bool,
}

impl Proxy {
    /// Binds the listening socket, opens the log and starts forwarding.
    pub fn start(config: Config) -> io::Result<Proxy> {
        let listen = UdpSocket::bind(config.listen)?;
        listen.set_read_timeout(Some(POLL))?;
        let addr = listen.local_addr()?;
        let log: Option<Box<dyn io::Write + Send>> = match &config.log {
            Some(path) => Some(Box::new(BufWriter::new(File::create(path).map_err(
                |e| io::Error::new(e.kind(), format!("{}: {e}", path.display())),
            )?))),
            None => None,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                checker: Checker::new(config.params),
                faults: FaultModel::new(config.faults),
                recorder: Recorder::new(log),
                next_index: 0,
                printed: if config.print_violations {
                    0
                } else {
                    PRINTED + 1
                },
            }),
            changed: Condvar::new(),
            listen: Arc::new(listen),
            server: config.server,
            start: Instant::now(),
            stop: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            held: Mutex::new((BinaryHeap::new(), 0)),
            held_changed: Condvar::new(),
            threads: Mutex::new(Vec::new()),
        });
        let mut threads = Vec::new();
        for (name, run) in [
            ("inspect-clients", clients_loop as fn(&Arc<Shared>)),
            ("inspect-held", held_loop),
            ("inspect-stalls", stall_loop),
        ] {
            let s = shared.clone();
            threads.push(
                thread::Builder::new()
                    .name(name.into())
                    .spawn(move || run(&s))?,
            );
        }
        shared
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(threads);
        Ok(Proxy {
            shared,
            addr,
            timeline: config.timeline,
            stopped: false,
        })
    }

    /// The address clients should send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until `done` holds for the record, or `timeout` passes;
    /// returns whether it held. `done` runs under the proxy's lock.
    #[allow(dead_code)] // for tests/inspect.rs
    pub fn wait_until(&self, timeout: Duration, mut done: impl FnMut(&Recorder) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        loop {
            if done(&st.recorder) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, left.min(POLL))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Stops forwarding, joins every thread, writes the timeline and
    /// returns the summary.
    pub fn stop(mut self) -> Outcome {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Outcome {
        self.stopped = true;
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.held_changed.notify_all();
        // The clients thread may still add upstream threads until it ends:
        // join until none are left.
        loop {
            let batch: Vec<_> = std::mem::take(
                &mut *self
                    .shared
                    .threads
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()),
            );
            if batch.is_empty() {
                break;
            }
            for t in batch {
                let _ = t.join();
            }
        }
        let elapsed = self.shared.start.elapsed();
        let mut st = self.shared.lock();
        let summary = st
            .recorder
            .summary(elapsed, st.checker.rtt(), st.checker.stalls());
        let mut errors = Vec::new();
        if let Err(e) = st.recorder.finish() {
            errors.push(format!("log: {e}"));
        }
        if let Some(path) = &self.timeline {
            let html = timeline::render(&st.recorder, st.checker.params(), &summary);
            if let Err(e) = std::fs::write(path, html) {
                errors.push(format!("timeline {}: {e}", path.display()));
            }
        }
        Outcome {
            summary,
            violation_count: st.recorder.violation_count(),
            violations: st.recorder.violations.clone(),
            clients: st.recorder.flows.iter().map(|f| f.client).collect(),
            errors,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.shutdown();
        }
    }
}

/// The local address an upstream socket binds: loopback for a loopback
/// server (so nothing listens beyond the machine), else any.
fn upstream_bind(server: SocketAddr) -> SocketAddr {
    let ip = match (server.ip(), server.ip().is_loopback()) {
        (IpAddr::V4(_), true) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        (IpAddr::V4(_), false) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (IpAddr::V6(_), true) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        (IpAddr::V6(_), false) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}

fn open_upstream(server: SocketAddr) -> io::Result<UdpSocket> {
    let up = UdpSocket::bind(upstream_bind(server))?;
    up.connect(server)?;
    up.set_read_timeout(Some(POLL))?;
    Ok(up)
}

/// Receives from clients and forwards to the server.
fn clients_loop(shared: &Arc<Shared>) {
    let mut buf = vec![0u8; 65536];
    let mut clients: HashMap<SocketAddr, (usize, Out)> = HashMap::new();
    let mut warned = false;
    while !shared.stop.load(Ordering::SeqCst) {
        let (n, from) = match shared.listen.recv_from(&mut buf) {
            Ok(r) => r,
            // Timeouts let the loop see the stop flag; other errors (an ICMP
            // unreachable from a client that left) are not ours to act on.
            Err(_) => continue,
        };
        let (flow, out) = match clients.get(&from) {
            Some(c) => c.clone(),
            None if clients.len() >= MAX_CLIENTS => {
                if !warned {
                    warned = true;
                    eprintln!(
                        "lsp-inspect: more than {MAX_CLIENTS} client addresses: ignoring new ones"
                    );
                }
                continue;
            }
            None => {
                match open_upstream(shared.server) {
                    Ok(up) => {
                        let up = Arc::new(up);
                        let flow = clients.len();
                        let out = Out {
                            socket: up.clone(),
                            to: None,
                        };
                        clients.insert(from, (flow, out.clone()));
                        let s = shared.clone();
                        let spawned = thread::Builder::new()
                            .name(format!("inspect-up-{flow}"))
                            .spawn(move || server_loop(&s, &up, flow, from));
                        if let Ok(t) = spawned {
                            s_threads(shared).push(t);
                        }
                        (flow, out)
                    }
                    Err(e) => {
                        if !warned {
                            warned = true;
                            eprintln!("lsp-inspect: cannot open a socket toward the server for {from}: {e}");
                        }
                        continue;
                    }
                }
            }
        };
        guarded(shared, flow, from, Side::Client, &buf[..n], &out);
    }
}

fn s_threads(shared: &Shared) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
    shared.threads.lock().unwrap_or_else(|e| e.into_inner())
}

/// Receives from the server for one client and forwards to it.
fn server_loop(shared: &Arc<Shared>, up: &UdpSocket, flow: usize, client: SocketAddr) {
    let mut buf = vec![0u8; 65536];
    let out = Out {
        socket: shared.listen.clone(),
        to: Some(client),
    };
    while !shared.stop.load(Ordering::SeqCst) {
        if let Ok(n) = up.recv(&mut buf) {
            guarded(shared, flow, client, Side::Server, &buf[..n], &out);
        }
    }
}

/// [`handle`], surviving a bug: a panic while handling one datagram costs
/// that datagram (LSP resends it) and is reported once, instead of ending
/// the thread that forwards everything else.
fn guarded(shared: &Shared, flow: usize, client: SocketAddr, from: Side, bytes: &[u8], out: &Out) {
    let run = || handle(shared, flow, client, from, bytes, out);
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).is_err()
        && !shared.panicked.swap(true, Ordering::SeqCst)
    {
        eprintln!(
            "lsp-inspect: internal error handling a datagram from the {}; carrying on",
            from.name()
        );
    }
}

/// Checks, decides, records and forwards one datagram.
fn handle(shared: &Shared, flow: usize, client: SocketAddr, from: Side, bytes: &[u8], out: &Out) {
    let msg = Message::decode(bytes);
    let msg = msg.as_ref().map_err(|e| *e);
    let mut guard = shared.lock();
    let st = &mut *guard;
    let at = shared.start.elapsed();
    let index = st.next_index;
    st.next_index += 1;
    let seen = st.checker.sent(at, flow, from, index, msg);
    let decision = st.faults.decide(at, flow, from, msg.ok());
    st.recorder
        .datagram(index, at, flow, client, from, bytes, msg, &seen, &decision);
    for v in &seen.violations {
        if st.printed < PRINTED {
            println!(
                "violation #{index} at {:.3} s: {} by the {} of {client}{}: {}",
                at.as_secs_f64(),
                v.rule,
                v.side.name(),
                v.conn.map_or(String::new(), |c| format!(" (conn {c})")),
                v.detail
            );
        } else if st.printed == PRINTED {
            println!("(further violations are only counted)");
        }
        st.printed = st.printed.saturating_add(1);
    }
    let wire = decision.replacement.as_deref().unwrap_or(bytes);
    let replaced = decision.replacement.as_deref().map(Message::decode);
    let delivered = match &replaced {
        Some(m) => m.as_ref().map_err(|e| *e),
        None => msg,
    };
    let mut held = Vec::new();
    for &delay in &decision.copies {
        if delay.is_zero() {
            out.send(wire);
            st.checker
                .delivered(shared.start.elapsed(), flow, from.other(), delivered);
        } else {
            held.push((delay, wire.to_vec()));
        }
    }
    drop(guard);
    shared.changed.notify_all();
    if !held.is_empty() {
        let now = Instant::now();
        let mut q = shared.held.lock().unwrap_or_else(|e| e.into_inner());
        for (delay, bytes) in held {
            // A delay beyond what a clock can hold is a drop.
            let Some(due) = now.checked_add(delay) else {
                continue;
            };
            q.1 += 1;
            let order = q.1;
            q.0.push(Held {
                due,
                order,
                index,
                flow,
                to: from.other(),
                out: out.clone(),
                bytes,
            });
        }
        drop(q);
        shared.held_changed.notify_all();
    }
}

/// Sends held-back copies when they are due.
fn held_loop(shared: &Arc<Shared>) {
    let mut q = shared.held.lock().unwrap_or_else(|e| e.into_inner());
    while !shared.stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        match q.0.peek() {
            Some(h) if h.due <= now => {
                let Some(h) = q.0.pop() else { continue };
                drop(q);
                let mut st = shared.lock();
                h.out.send(&h.bytes);
                let at = shared.start.elapsed();
                let msg = Message::decode(&h.bytes);
                st.checker
                    .delivered(at, h.flow, h.to, msg.as_ref().map_err(|e| *e));
                st.recorder.released(h.index, at);
                drop(st);
                q = shared.held.lock().unwrap_or_else(|e| e.into_inner());
            }
            next => {
                let wait = next.map_or(POLL, |h| h.due.saturating_duration_since(now).min(POLL));
                q = shared
                    .held_changed
                    .wait_timeout(q, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
    }
}

/// Watches for the proxy being held up: it wakes every [`STALL_TICK`] and
/// tells the checker whenever a wake-up came [`STALL_MIN`] or more late.
fn stall_loop(shared: &Arc<Shared>) {
    let mut last = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        thread::sleep(STALL_TICK);
        let now = Instant::now();
        if now.saturating_duration_since(last) >= STALL_TICK + STALL_MIN {
            let from = last.saturating_duration_since(shared.start);
            let to = now.saturating_duration_since(shared.start);
            shared.lock().checker.stalled(from, to);
        }
        last = now;
    }
}
