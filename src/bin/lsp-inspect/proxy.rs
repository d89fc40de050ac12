//! The proxy: the only part that touches sockets, threads and clocks.
//!
//! One socket listens for clients; each client address gets its own
//! upstream socket, connected to the server, so the server sees one peer
//! per client. One thread waits on all of them at once with poll(2) and
//! receives from whichever is ready; every datagram is decoded, judged by
//! the [`Checker`], given a fate by the [`FaultModel`], recorded and
//! forwarded under one lock, so the check, the log and the delivery order
//! agree. Held-back copies (delay, reorder) wait in a queue served by a
//! second thread, and a third watches for the proxy being held up: three
//! threads whatever the traffic.
//!
//! At most [`Config::max_clients`] client addresses are served. A new one
//! beyond that replaces the least recently active address that never
//! proved it receives (it spoke again after the server answered it), or,
//! when every one has, the least recently active of all: its upstream
//! socket is closed and the checker and the record forget it. Spoofed
//! sources can thus take turns in the table but never shut new clients
//! out, nor evict a client that is talking with the server.

use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io::{self, BufWriter};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use liveseq::proto::Message;

use crate::check::{AgeMap, CheckParams, Checker, Side, Violation, MAX_FLOWS};
use crate::faults::{FaultModel, Faults};
use crate::record::{Datagram, Recorder};
use crate::timeline;

/// How often blocked threads look at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// The stall monitor's period, and the lateness it reports as a stall
/// (below it, the timer jitter covers it).
const STALL_TICK: Duration = Duration::from_millis(5);
const STALL_MIN: Duration = Duration::from_millis(10);

/// Client addresses served by default, and at most (the checker tracks as
/// many): each costs an upstream socket (a file descriptor, and its buffers
/// in the kernel) and a few hundred bytes here.
pub const MAX_CLIENTS: usize = MAX_FLOWS;

/// Datagrams received from one socket before the others get their turn.
const BATCH: usize = 64;

/// Bytes of held-back copies (delay, reorder) queued at most; a copy that
/// would go beyond is dropped.
pub const MAX_HELD_BYTES: usize = 16 << 20;

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
    /// Client addresses served at once (at most [`MAX_CLIENTS`]).
    pub max_clients: usize,
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

/// Held-back copies, earliest first, and what they hold.
#[derive(Default)]
struct HeldQueue {
    heap: BinaryHeap<Held>,
    order: u64,
    /// Bytes in all the copies held (at most [`MAX_HELD_BYTES`]).
    bytes: usize,
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
    held: Mutex<HeldQueue>,
    held_changed: Condvar,
    /// Copies dropped because the held queue was full.
    held_dropped: AtomicU64,
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
    /// Client addresses by flow number ([`Violation::flow`]): those still
    /// recorded and those of the violations kept.
    pub clients: std::collections::BTreeMap<usize, SocketAddr>,
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
        listen.set_nonblocking(true)?;
        let max_clients = config.max_clients.clamp(1, MAX_CLIENTS);
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
            held: Mutex::new(HeldQueue::default()),
            held_changed: Condvar::new(),
            held_dropped: AtomicU64::new(0),
            threads: Mutex::new(Vec::new()),
        });
        let mut threads = Vec::new();
        let s = shared.clone();
        threads.push(
            thread::Builder::new()
                .name("inspect-io".into())
                .spawn(move || io_loop(&s, max_clients))?,
        );
        for (name, run) in [
            ("inspect-held", held_loop as fn(&Arc<Shared>)),
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
        st.recorder.held_dropped = self.shared.held_dropped.load(Ordering::SeqCst);
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
            clients: st.recorder.clients(),
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
    up.set_nonblocking(true)?;
    Ok(up)
}

/// A client address being served.
struct Upstream {
    flow: usize,
    socket: Arc<UdpSocket>,
    /// The server sent it something.
    answered: bool,
}

/// The client addresses served, at most `cap`: those that have not proven
/// they receive (`fresh`) and those that have (`proven`), each by activity
/// (a datagram from the client), and which upstream socket is whose.
struct Clients {
    fresh: AgeMap<SocketAddr, Upstream>,
    proven: AgeMap<SocketAddr, Upstream>,
    by_fd: HashMap<RawFd, SocketAddr>,
    cap: usize,
    next_flow: usize,
    /// The set of sockets changed since the poll set was built.
    changed: bool,
    warned: bool,
}

impl Clients {
    fn new(cap: usize) -> Clients {
        Clients {
            fresh: AgeMap::new(cap),
            proven: AgeMap::new(cap),
            by_fd: HashMap::new(),
            cap,
            next_flow: 0,
            changed: true,
            warned: false,
        }
    }

    fn len(&self) -> usize {
        self.fresh.len() + self.proven.len()
    }

    /// Drops the least recently active address, fresh ones first.
    fn evict_one(&mut self, shared: &Shared) -> bool {
        let Some((_, up)) = self.fresh.pop_oldest().or_else(|| self.proven.pop_oldest()) else {
            return false;
        };
        self.by_fd.remove(&up.socket.as_raw_fd());
        self.changed = true;
        let mut st = shared.lock();
        st.checker.forget(up.flow);
        st.faults.forget(up.flow);
        st.recorder.clients_dropped += 1;
        true
    }

    /// The flow and upstream socket of client `from`, which just sent: an
    /// address already served (promoted once it proves it receives), or a
    /// new one, for which room is made. `None` only if no socket can be
    /// opened even then.
    fn client(&mut self, shared: &Shared, from: SocketAddr) -> Option<(usize, Arc<UdpSocket>)> {
        if let Some(up) = self.proven.touch(&from) {
            return Some((up.flow, up.socket.clone()));
        }
        if let Some(up) = self.fresh.touch(&from) {
            let got = (up.flow, up.socket.clone());
            if up.answered {
                if let Some(up) = self.fresh.remove(&from) {
                    self.proven.insert(from, up);
                }
            }
            return Some(got);
        }
        while self.len() >= self.cap && self.evict_one(shared) {}
        let up = match open_upstream(shared.server) {
            Ok(up) => up,
            // Out of descriptors, most likely: make room and try once more.
            Err(_) if self.evict_one(shared) => match open_upstream(shared.server) {
                Ok(up) => up,
                Err(e) => return self.cannot(from, &e),
            },
            Err(e) => return self.cannot(from, &e),
        };
        let socket = Arc::new(up);
        let flow = self.next_flow;
        self.next_flow += 1;
        self.by_fd.insert(socket.as_raw_fd(), from);
        self.changed = true;
        self.fresh.insert(
            from,
            Upstream {
                flow,
                socket: socket.clone(),
                answered: false,
            },
        );
        Some((flow, socket))
    }

    fn cannot<T>(&mut self, from: SocketAddr, e: &io::Error) -> Option<T> {
        if !self.warned {
            self.warned = true;
            eprintln!("lsp-inspect: cannot open a socket toward the server for {from}: {e}");
        }
        None
    }

    /// The client whose upstream socket is `fd`.
    fn by_fd(&mut self, fd: RawFd) -> Option<(SocketAddr, &mut Upstream)> {
        let addr = *self.by_fd.get(&fd)?;
        let up = match self.proven.get_mut(&addr) {
            Some(up) => up,
            None => self.fresh.get_mut(&addr)?,
        };
        Some((addr, up))
    }
}

/// poll(2) on `fds` for up to `timeout_ms`; returns how many are ready
/// (0 on a timeout, negative on an error such as an interruption).
#[allow(unsafe_code)]
fn poll(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> libc::c_int {
    let n = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
    // SAFETY: `fds` is a live, exclusively borrowed slice of `pollfd` for
    // the whole call, and `n` is at most its length; poll(2) writes only
    // the `revents` fields of those entries.
    unsafe { libc::poll(fds.as_mut_ptr(), n, timeout_ms) }
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Receives from clients and from the server for every client, in one
/// thread: the listening socket and every upstream socket are polled at
/// once, and each ready one is read until it is empty or gave [`BATCH`].
fn io_loop(shared: &Arc<Shared>, cap: usize) {
    let mut buf = vec![0u8; 65536];
    let mut clients = Clients::new(cap);
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let timeout = libc::c_int::try_from(POLL.as_millis()).unwrap_or(50);
    let to_clients = Out {
        socket: shared.listen.clone(),
        to: None,
    };
    while !shared.stop.load(Ordering::SeqCst) {
        if clients.changed {
            fds.clear();
            fds.push(pollfd(shared.listen.as_raw_fd()));
            fds.extend(clients.by_fd.keys().map(|&fd| pollfd(fd)));
            clients.changed = false;
        }
        if poll(&mut fds, timeout) <= 0 {
            continue;
        }
        // The server's answers first: a flood from clients must not starve them.
        for pfd in fds.iter_mut().skip(1) {
            if pfd.revents == 0 {
                continue;
            }
            pfd.revents = 0;
            let fd = pfd.fd;
            for _ in 0..BATCH {
                // (A socket closed meanwhile is gone; its number, if reused,
                // is some other client's now, and so is what it receives.)
                let Some((addr, up)) = clients.by_fd(fd) else {
                    break;
                };
                let n = match up.socket.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // An ICMP error from the server's side: nothing to read.
                    Err(_) => continue,
                };
                up.answered = true;
                let flow = up.flow;
                let out = Out {
                    to: Some(addr),
                    ..to_clients.clone()
                };
                guarded(shared, flow, addr, Side::Server, &buf[..n], &out);
            }
        }
        if fds[0].revents != 0 {
            fds[0].revents = 0;
            for _ in 0..BATCH {
                let (n, from) = match shared.listen.recv_from(&mut buf) {
                    Ok(r) => r,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // An ICMP unreachable from a client that left is not ours
                    // to act on.
                    Err(_) => continue,
                };
                let Some((flow, socket)) = clients.client(shared, from) else {
                    continue;
                };
                let out = Out { socket, to: None };
                guarded(shared, flow, from, Side::Client, &buf[..n], &out);
            }
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
    st.recorder.datagram(&Datagram {
        index,
        at,
        flow,
        client,
        from,
        raw: bytes,
        msg,
        seen: &seen,
        decision: &decision,
    });
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
            // A delay beyond what a clock can hold is a drop, and so is a
            // copy beyond what the queue may hold.
            let Some(due) = now.checked_add(delay) else {
                continue;
            };
            if q.bytes + bytes.len() > MAX_HELD_BYTES {
                shared.held_dropped.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            q.bytes += bytes.len();
            q.order += 1;
            let order = q.order;
            q.heap.push(Held {
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
        match q.heap.peek() {
            Some(h) if h.due <= now => {
                let Some(h) = q.heap.pop() else { continue };
                q.bytes -= h.bytes.len();
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
