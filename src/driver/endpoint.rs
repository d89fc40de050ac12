//! The thin threaded driver shared by [`Client`](crate::Client) and
//! [`Server`](crate::Server).
//!
//! Each instance owns one UDP socket, one protocol core (a
//! [`ServerCore`](crate::proto::ServerCore) or a
//! [`ClientCore`](crate::proto::ClientCore)) behind one mutex, and three
//! threads:
//!
//! * the **receive thread** takes datagrams in batches and feeds them to the core;
//! * the **epoch thread** ticks the core every epoch, runs its timers, and
//!   releases datagrams held back by the delay fault;
//! * the **close manager** waits for a close request, asks the core to
//!   drain, waits until it has (or a deadline passes), then stops the other
//!   two threads, joins them and releases the socket.
//!
//! Every input, from a thread or from the user's call, goes the same way:
//! lock the core, feed it, take its outputs (publishing them to the inbox and
//! the subscribers, which keeps them in order), send its datagrams, unlock.
//! Nothing under the lock can block: channels are unbounded, and datagrams
//! are sent with `MSG_DONTWAIT` (a full send buffer drops the datagram, which
//! the protocol sends again). Sending before the unlock is measured to pay:
//! sending after it halved one client's window-32 echo rate (43k against
//! 79k messages/s), as the thread that took the lock over raced the sender.
//!
//! Every thread runs under `catch_unwind`: a panic is logged at error level,
//! fails the instance (every blocked caller wakes, and every later call
//! returns [`Error::Failed`]) and closes it.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{after, never, select, tick, unbounded, Receiver, Sender};
use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use super::faults::{Injector, Plan};
use super::sys::RecvBatch;
use super::time::deadline;
use crate::proto::{Message, DEFAULT_MAX_DATAGRAM, MAX_DATAGRAM};
use crate::{Error, Faults, Params};

/// Flags of every send: never block (see [`Io::send_raw`]).
#[cfg(unix)]
const SEND_FLAGS: libc::c_int = libc::MSG_DONTWAIT;
#[cfg(not(unix))]
const SEND_FLAGS: i32 = 0;

/// Socket buffer size we ask the kernel for.
const SOCKET_BUFFER: usize = 4 << 20;

/// The receive thread wakes at least this often to see whether it must stop,
/// so shutdown never depends on a wake-up datagram arriving.
const RECV_POLL: Duration = Duration::from_millis(100);

/// Receive errors in a row (not timeouts) after which the instance fails:
/// with the back-off below that is about ten seconds of nothing but errors.
const MAX_RECV_ERRORS: u32 = 110;

/// Socket-level counters of one instance.
#[derive(Debug, Default)]
pub(crate) struct IoCounters {
    pub datagrams_received: AtomicU64,
    pub datagrams_sent: AtomicU64,
    pub send_errors: AtomicU64,
}

/// A datagram held back by the delay fault.
struct Delayed {
    due: Instant,
    bytes: Vec<u8>,
    to: SocketAddr,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.due.cmp(&other.due)
    }
}

/// Datagrams encoded under the core's lock and sent before it is released
/// (never blocking: see [`Io::send_raw`]).
#[derive(Default)]
struct SendBatch {
    bytes: Vec<u8>,
    /// Destination and end offset in `bytes` of each datagram.
    items: Vec<(SocketAddr, usize)>,
}

thread_local! {
    /// Reused by every input from this thread: no allocation per datagram.
    static SEND_BATCH: RefCell<SendBatch> = RefCell::new(SendBatch::default());
}

/// The socket and everything needed to send on it.
pub(crate) struct Io {
    /// `None` once the instance is closed, which releases the port.
    socket: RwLock<Option<UdpSocket>>,
    local_addr: SocketAddr,
    pub params: Params,
    faults: Option<Injector>,
    delayed: Sender<Delayed>,
    /// Datagrams the reorder fault holds until the next send (or epoch).
    held_back: Mutex<Vec<(Vec<u8>, SocketAddr)>>,
    pub counters: IoCounters,
    /// Signalled when a close has drained the core.
    drained: Sender<()>,
    /// Set by [`follow_peer`](Io::follow_peer): the socket is connected to
    /// where the core sends.
    follows_peer: AtomicBool,
    /// The address the socket is connected to, once it follows the peer.
    peer: Mutex<Option<SocketAddr>>,
}

impl Io {
    /// Encodes `msg` for `to` into `batch`, through the instance's faults.
    fn queue(&self, msg: &Message<'_>, to: SocketAddr, batch: &mut SendBatch) {
        let Some(faults) = &self.faults else {
            msg.encode(&mut batch.bytes);
            batch.items.push((to, batch.bytes.len()));
            return;
        };
        let (replacement, delay, duplicate, reorder) = match faults.plan(msg, self.params.epoch()) {
            Plan::Drop => {
                log::trace!("fault: dropped outgoing {msg:?}");
                return;
            }
            Plan::Send {
                msg,
                delay,
                duplicate,
                reorder,
            } => (msg, delay, duplicate, reorder),
        };
        let mut bytes = Vec::new();
        replacement.as_ref().unwrap_or(msg).encode(&mut bytes);
        for _ in 0..if duplicate { 2 } else { 1 } {
            if let Some(delay) = delay {
                // Delayed past the clock's end: lost.
                let Some(due) = deadline(delay) else { continue };
                let _ = self.delayed.send(Delayed {
                    due,
                    bytes: bytes.clone(),
                    to,
                });
            } else if reorder {
                self.held_back.lock().push((bytes.clone(), to));
            } else {
                batch.bytes.extend_from_slice(&bytes);
                batch.items.push((to, batch.bytes.len()));
                for (held, to) in std::mem::take(&mut *self.held_back.lock()) {
                    batch.bytes.extend_from_slice(&held);
                    batch.items.push((to, batch.bytes.len()));
                }
            }
        }
    }

    /// Sends and empties `batch`.
    fn flush(&self, batch: &mut SendBatch) {
        let mut start = 0;
        for &(to, end) in &batch.items {
            self.send_raw(&batch.bytes[start..end], to);
            start = end;
        }
        batch.bytes.clear();
        batch.items.clear();
    }

    /// Sends the datagrams the reorder fault held back.
    fn release_held_back(&self) {
        let held = std::mem::take(&mut *self.held_back.lock());
        for (bytes, to) in held {
            self.send_raw(&bytes, to);
        }
    }

    /// Sends without ever blocking (`MSG_DONTWAIT`): a datagram that finds
    /// the socket's send buffer full is dropped, as a network would drop it,
    /// and the protocol sends it again. That is what lets the driver send
    /// while it holds the core's lock. Send errors are counted and logged,
    /// never returned: for a datagram protocol they are indistinguishable
    /// from loss.
    fn send_raw(&self, bytes: &[u8], to: SocketAddr) {
        let guard = self.socket.read();
        let Some(socket) = guard.as_ref() else { return };
        let sent = if self.follows_peer.load(Ordering::Relaxed) {
            self.send_connected(socket, bytes, to)
        } else {
            SockRef::from(socket).send_to_with_flags(bytes, &to.into(), SEND_FLAGS)
        };
        match sent {
            Ok(_) => {
                self.counters.datagrams_sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => {
                self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                log::debug!("send to {to} failed: {err}");
            }
        }
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Makes the socket follow the peer: before a datagram goes out it is
    /// connected to the datagram's destination. A connected UDP socket is
    /// told when the peer's host answers "port unreachable" (the receive
    /// thread gets `ConnectionRefused` and hands it to the core), which is
    /// how a client learns at once that nothing listens at an address.
    /// Call before the first send.
    pub(crate) fn follow_peer(&self) {
        self.follows_peer.store(true, Ordering::Relaxed);
    }

    fn send_connected(
        &self,
        socket: &UdpSocket,
        bytes: &[u8],
        to: SocketAddr,
    ) -> io::Result<usize> {
        let mut peer = self.peer.lock();
        if *peer != Some(to) {
            if peer.take().is_some() {
                super::sys::disconnect(socket)?;
            }
            socket.connect(self.reachable(to))?;
            *peer = Some(to);
        }
        SockRef::from(socket).send_with_flags(bytes, SEND_FLAGS)
    }

    /// `to` as this socket can reach it: an IPv6 socket reaches IPv4
    /// addresses in their IPv4-mapped form (a client bound for a list of
    /// both families is dual-stack).
    fn reachable(&self, to: SocketAddr) -> SocketAddr {
        match (self.local_addr, to) {
            (SocketAddr::V6(_), SocketAddr::V4(v4)) => (v4.ip().to_ipv6_mapped(), v4.port()).into(),
            _ => to,
        }
    }
}

/// A protocol core as the driver sees it (implemented by the cores of
/// [`proto`](crate::proto)).
pub(crate) trait Core: Send + 'static {
    /// What the core hands to the application side.
    type Output;
    /// Which inbox a read took a message from (a connection, or nothing).
    type Inbox: Send + 'static;
    fn read_done(&mut self, now: Instant, inbox: Self::Inbox, messages: usize, bytes: usize);
    fn handle(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]);
    fn end_batch(&mut self, now: Instant);
    fn handle_epoch(&mut self, now: Instant);
    fn poll_timeout(&self) -> Option<Instant>;
    fn handle_timeout(&mut self, now: Instant);
    fn close(&mut self, now: Instant);
    fn abort(&mut self, now: Instant) -> usize;
    fn poll_transmit(&mut self) -> Option<(SocketAddr, Message<'_>)>;
    fn poll_output(&mut self) -> Option<Self::Output>;
    /// The peer's host refused a datagram (see [`Io::follow_peer`]); only
    /// a core whose socket follows its peer hears this.
    fn handle_refused(&mut self, _now: Instant) {}
}

/// The application side of a client or server: where outputs go.
pub(crate) trait Role: Send + Sync + 'static {
    type Core: Core;
    /// Hands one output on (to the inbox, the subscribers, a waiting
    /// connect). Runs under the core's lock; returns whether a close has
    /// now drained.
    fn publish(&self, output: <Self::Core as Core>::Output) -> bool;
    /// The outcome of a close that drained.
    fn close_result(&self, core: &Self::Core) -> Result<(), Error>;
    /// Wakes every blocked reader; later reads find the instance closed.
    fn shut(&self);
}

/// State shared by the user's handle and the instance's threads.
pub(crate) struct Shared<R: Role> {
    core: Mutex<R::Core>,
    /// Reads the application made, told to the core at its next input: a
    /// read never waits for the core's lock (which the receive thread and
    /// writers hold often). A stale count only pauses receiving a little
    /// early; the peer's next retransmission is itself an input that
    /// delivers the count and resumes it.
    reads: ReadLog<<R::Core as Core>::Inbox>,
    /// Signalled after every input: writers waiting for room re-check.
    room: Condvar,
    pub io: Io,
    pub role: R,
    /// Set when a thread panicked or the socket failed for good.
    failure: Mutex<Option<String>>,
    failed: AtomicBool,
    /// Test hook: the receive thread panics at its next wake-up.
    panic_requested: AtomicBool,
}

impl<R: Role> Shared<R> {
    /// Runs `f` on the core, then delivers what it produced (see the module docs).
    pub(crate) fn with_core<T>(&self, f: impl FnOnce(&mut R::Core, Instant) -> T) -> T {
        let mut core = self.core.lock();
        let now = Instant::now();
        self.apply_reads(&mut core, now);
        let result = f(&mut core, now);
        self.finish(core);
        result
    }

    /// Notes that the application took a message of `len` bytes from `inbox`.
    pub(crate) fn read_done(&self, inbox: <R::Core as Core>::Inbox, len: usize) {
        let _ = self.reads.0.send((inbox, len));
    }

    fn apply_reads(&self, core: &mut R::Core, now: Instant) {
        while let Ok((inbox, len)) = self.reads.1.try_recv() {
            core.read_done(now, inbox, 1, len);
        }
    }

    /// Like [`with_core`](Self::with_core), but first waits while `blocked`
    /// says so, until `deadline` (if any). Returns `None` on timeout.
    pub(crate) fn with_core_when<T>(
        &self,
        blocked: impl Fn(&R::Core) -> bool,
        deadline: Option<Instant>,
        f: impl FnOnce(&mut R::Core, Instant) -> T,
    ) -> Option<T> {
        let mut core = self.core.lock();
        while blocked(&core) && !self.is_failed() {
            match deadline {
                None => self.room.wait(&mut core),
                Some(deadline) => {
                    if self.room.wait_until(&mut core, deadline).timed_out() {
                        if blocked(&core) {
                            return None;
                        }
                        break;
                    }
                }
            }
        }
        let now = Instant::now();
        self.apply_reads(&mut core, now);
        let result = f(&mut core, now);
        self.finish(core);
        Some(result)
    }

    /// Takes the core's datagrams and outputs, sends, releases the lock.
    fn finish(&self, mut core: MutexGuard<'_, R::Core>) {
        SEND_BATCH.with(|batch| {
            let mut batch = batch.borrow_mut();
            while let Some((to, msg)) = core.poll_transmit() {
                self.io.queue(&msg, to, &mut batch);
            }
            let mut drained = false;
            while let Some(output) = core.poll_output() {
                drained |= self.role.publish(output);
            }
            self.io.flush(&mut batch);
            drop(core);
            self.room.notify_all();
            if drained {
                let _ = self.io.drained.send(());
            }
        });
    }

    /// Reads the core without feeding it.
    pub(crate) fn peek<T>(&self, f: impl FnOnce(&R::Core) -> T) -> T {
        f(&self.core.lock())
    }

    pub(crate) fn is_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// The error every call returns once the instance failed.
    pub(crate) fn failure(&self) -> Option<Error> {
        if !self.is_failed() {
            return None;
        }
        Some(Error::Failed(
            self.failure.lock().clone().unwrap_or_default(),
        ))
    }

    /// Marks the instance failed and wakes every blocked caller.
    fn fail(&self, why: String) {
        log::error!("liveseq {} failed: {why}", self.io.local_addr);
        {
            let mut failure = self.failure.lock();
            if failure.is_none() {
                *failure = Some(why);
            }
        }
        self.failed.store(true, Ordering::SeqCst);
        self.role.shut();
        // Take the lock so no writer is between its check and its wait.
        drop(self.core.lock());
        self.room.notify_all();
        let _ = self.io.drained.send(());
    }

    /// Runs one datagram through the receive path as if it came from `from`
    /// (the fuzz target for the server's receive path uses this).
    #[cfg(fuzzing)]
    pub(crate) fn inject(&self, from: SocketAddr, datagram: &[u8]) {
        self.with_core(|core, now| {
            core.handle(now, from, datagram);
            core.end_batch(now);
        });
    }

    /// Test hook: makes the receive thread panic (see `Server::fail_for_tests`).
    pub(crate) fn request_panic(&self) {
        self.panic_requested.store(true, Ordering::SeqCst);
        wake_receiver(&self.io);
    }
}

/// Reads noted by the application's threads, for the core.
type ReadLog<K> = (Sender<(K, usize)>, Receiver<(K, usize)>);

/// A close request sent to the close manager; `reply` is `None` for a drop.
struct CloseRequest {
    reply: Option<Sender<Result<(), Error>>>,
    deadline: Option<Instant>,
}

/// The running threads of one instance, owned by the user's handle.
pub(crate) struct Endpoint<R: Role> {
    pub shared: Arc<Shared<R>>,
    close_tx: Sender<CloseRequest>,
    manager: Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
}

/// How an instance is set up.
pub(crate) struct Config {
    pub params: Params,
    pub faults: Faults,
    /// Most datagrams taken from the socket in one wake-up.
    pub batch: usize,
}

/// Creates a UDP socket bound to `addr` with large buffers.
/// Errors name the operation and the address: `cannot bind 127.0.0.1:9999:
/// address already in use`.
pub(crate) fn bind_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    bind_with(addr, false)
}

/// [`bind_socket`], for an IPv6 `addr` also reaching IPv4 if `dual_stack`.
fn bind_with(addr: SocketAddr, dual_stack: bool) -> io::Result<UdpSocket> {
    let bind = || -> io::Result<UdpSocket> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if dual_stack {
            socket.set_only_v6(false)?;
        }
        // Best effort: the kernel caps these at its own maximum.
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
        socket.bind(&addr.into())?;
        Ok(socket.into())
    };
    bind().map_err(|err| crate::error::context(err, format_args!("cannot bind {addr}")))
}

/// A client's socket for `peers` (never empty), and the peers it can
/// reach. It binds the unspecified address of their family, port 0; for a
/// list of both families, an IPv6 socket that also reaches IPv4 (see
/// [`Io::follow_peer`]), or an IPv4 one for the IPv4 addresses alone where
/// the host has no IPv6.
pub(crate) fn bind_client_socket(peers: &[SocketAddr]) -> io::Result<(UdpSocket, Vec<SocketAddr>)> {
    let v4_any: SocketAddr = (Ipv4Addr::UNSPECIFIED, 0).into();
    let v6_any: SocketAddr = (Ipv6Addr::UNSPECIFIED, 0).into();
    let v4_only = || -> io::Result<(UdpSocket, Vec<SocketAddr>)> {
        let socket = bind_socket(v4_any)?;
        Ok((
            socket,
            peers.iter().copied().filter(SocketAddr::is_ipv4).collect(),
        ))
    };
    if peers.iter().all(SocketAddr::is_ipv4) {
        return v4_only();
    }
    let dual = peers.iter().any(SocketAddr::is_ipv4);
    match bind_with(v6_any, dual) {
        Ok(socket) => Ok((socket, peers.to_vec())),
        Err(err) if dual => {
            log::debug!("no IPv6 socket ({err}): trying the IPv4 addresses alone");
            v4_only()
        }
        Err(err) => Err(err),
    }
}

impl<R: Role> Endpoint<R> {
    /// Starts the threads around `socket`, `core` and `role`.
    pub(crate) fn start(
        socket: UdpSocket,
        config: Config,
        core: R::Core,
        role: R,
    ) -> Result<Endpoint<R>, Error> {
        let Config {
            params,
            faults,
            batch,
        } = config;
        let local_addr = socket.local_addr()?;
        let receiver = socket.try_clone()?;
        receiver.set_read_timeout(Some(RECV_POLL))?;
        let (delay_tx, delay_rx) = unbounded();
        let (drained_tx, drained_rx) = unbounded();
        let shared = Arc::new(Shared {
            core: Mutex::new(core),
            reads: unbounded(),
            room: Condvar::new(),
            io: Io {
                socket: RwLock::new(Some(socket)),
                local_addr,
                params,
                faults: Injector::new(faults),
                delayed: delay_tx,
                held_back: Mutex::new(Vec::new()),
                counters: IoCounters::default(),
                drained: drained_tx,
                follows_peer: AtomicBool::new(false),
                peer: Mutex::new(None),
            },
            role,
            failure: Mutex::new(None),
            failed: AtomicBool::new(false),
            panic_requested: AtomicBool::new(false),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (stop_epoch_tx, stop_epoch_rx) = unbounded::<()>();
        let (close_tx, close_rx) = unbounded::<CloseRequest>();

        let recv = {
            let shared = shared.clone();
            let stop = stop.clone();
            let close_tx = close_tx.clone();
            spawn("liveseq-recv", shared.clone(), close_tx, move || {
                receive_loop(&shared, receiver, &stop, batch)
            })?
        };
        let epoch = {
            let for_thread = shared.clone();
            match spawn(
                "liveseq-epoch",
                shared.clone(),
                close_tx.clone(),
                move || epoch_loop(&for_thread, delay_rx, stop_epoch_rx),
            ) {
                Ok(handle) => handle,
                Err(err) => {
                    stop.store(true, Ordering::SeqCst);
                    let _ = recv.join();
                    return Err(err);
                }
            }
        };
        let manager = {
            let threads = Threads {
                recv,
                epoch,
                stop,
                stop_epoch: stop_epoch_tx,
            };
            let for_thread = shared.clone();
            // If this spawn fails the threads are stopped when `threads` drops.
            spawn(
                "liveseq-close",
                shared.clone(),
                close_tx.clone(),
                move || close_manager(&for_thread, close_rx, drained_rx, threads),
            )?
        };
        Ok(Endpoint {
            shared,
            close_tx,
            manager: Mutex::new(Some(manager)),
            closed: AtomicBool::new(false),
        })
    }

    /// Closes and waits: drains (until `deadline`, if any), stops every
    /// thread, releases the socket. A second call returns [`Error::Closed`].
    pub(crate) fn close(&self, deadline: Option<Instant>) -> Result<(), Error> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Err(self.shared.failure().unwrap_or(Error::Closed));
        }
        self.shared.role.shut();
        let (reply_tx, reply_rx) = unbounded();
        let result = match self.close_tx.send(CloseRequest {
            reply: Some(reply_tx),
            deadline,
        }) {
            Ok(()) => reply_rx.recv().unwrap_or(Err(Error::Closed)),
            Err(_) => Err(Error::Closed),
        };
        if let Some(manager) = self.manager.lock().take() {
            let _ = manager.join();
        }
        match self.shared.failure() {
            Some(failure) => Err(failure),
            None => result,
        }
    }

    /// Whether `close` was called (or the handle dropped).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// The error a call on a closed or failed instance returns, if it is one.
    pub(crate) fn check_open(&self) -> Result<(), Error> {
        if let Some(failure) = self.shared.failure() {
            return Err(failure);
        }
        if self.is_closed() {
            return Err(Error::Closed);
        }
        Ok(())
    }
}

impl<R: Role> Drop for Endpoint<R> {
    /// Dropping without `close` flushes, as `BufWriter` does: it closes and
    /// waits until everything written is acknowledged or `epoch_limit`
    /// epochs pass, so a program that returns from `main` without `close`
    /// loses nothing a live peer could receive. While the thread panics it
    /// does not wait: the close finishes in the background.
    fn drop(&mut self) {
        if self.is_closed() {
            return;
        }
        let params = self.shared.io.params;
        let deadline = super::time::deadline(params.epoch().saturating_mul(params.epoch_limit));
        if thread::panicking() {
            self.closed.store(true, Ordering::SeqCst);
            self.shared.role.shut();
            let _ = self.close_tx.send(CloseRequest {
                reply: None,
                deadline: Some(Instant::now()),
            });
            return;
        }
        if let Err(err) = self.close(deadline) {
            log::debug!("close on drop: {err}");
        }
    }
}

/// Spawns a library thread whose panic fails the instance instead of
/// vanishing: it is logged, every caller wakes, and the instance closes.
fn spawn<R: Role>(
    name: &str,
    shared: Arc<Shared<R>>,
    close_tx: Sender<CloseRequest>,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, Error> {
    let thread_name = name.to_string();
    Ok(thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            if let Err(panic) = catch_unwind(AssertUnwindSafe(f)) {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".to_string());
                shared.fail(format!("{thread_name} panicked: {what}"));
                // Close at once: nothing more can be trusted to drain.
                let _ = close_tx.send(CloseRequest {
                    reply: None,
                    deadline: Some(Instant::now()),
                });
            }
        })?)
}

/// The receive and epoch threads, stopped and joined by the close manager.
struct Threads {
    recv: JoinHandle<()>,
    epoch: JoinHandle<()>,
    stop: Arc<AtomicBool>,
    stop_epoch: Sender<()>,
}

fn close_manager<R: Role>(
    shared: &Shared<R>,
    requests: Receiver<CloseRequest>,
    drained: Receiver<()>,
    threads: Threads,
) {
    // Every handle gone without a request (impossible, but harmless): just stop.
    let first = requests.recv().ok();
    let mut deadline = first.as_ref().and_then(|r| r.deadline);
    let mut replies: Vec<Sender<Result<(), Error>>> =
        first.and_then(|r| r.reply).into_iter().collect();
    log::debug!(
        "closing {}: no new connections, reconnects cancelled, draining",
        shared.io.local_addr
    );
    if !shared.is_failed() {
        shared.with_core(|core, now| core.close(now));
    }
    // Wait for the drain; a later request (a close after a drop, or a
    // failure) may bring the deadline forward.
    let drained_in_time = loop {
        if shared.is_failed() {
            break false;
        }
        let timeout = match deadline {
            Some(d) => after(d.saturating_duration_since(Instant::now())),
            None => never(),
        };
        select! {
            recv(drained) -> _ => break !shared.is_failed(),
            recv(requests) -> r => if let Ok(r) = r {
                replies.extend(r.reply);
                deadline = match (deadline, r.deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            },
            recv(timeout) -> _ => break false,
        }
    };
    let result = if drained_in_time {
        shared.peek(|core| shared.role.close_result(core))
    } else if let Some(failure) = shared.failure() {
        // A thread panicked, perhaps inside the core: leave it untouched.
        Err(failure)
    } else {
        let unacked = shared.with_core(|core, now| core.abort(now));
        log::debug!(
            "closing {}: deadline passed, {unacked} messages discarded",
            shared.io.local_addr
        );
        Err(Error::CloseTimedOut { unacked })
    };
    log::debug!("closing {}: stopping threads", shared.io.local_addr);
    let Threads {
        recv,
        epoch,
        stop,
        stop_epoch,
    } = threads;
    drop(stop_epoch);
    stop.store(true, Ordering::SeqCst);
    wake_receiver(&shared.io);
    let _ = epoch.join();
    let _ = recv.join();
    log::debug!("closing {}: releasing the socket", shared.io.local_addr);
    shared.io.socket.write().take();
    shared.role.shut();
    // Replies go out only now: whoever waits for close finds the port free.
    let mut result = Some(result);
    for reply in replies {
        let r = result.take().unwrap_or(Err(Error::Closed));
        let _ = reply.send(r);
    }
}

/// Wakes the receive thread early by sending an empty datagram to our own
/// port. Only a speed-up: the thread also wakes every [`RECV_POLL`].
fn wake_receiver(io: &Io) {
    if io.follows_peer.load(Ordering::Relaxed) {
        // A connected socket takes datagrams from its peer alone, so the
        // wake-up datagram would be filtered out. Shutting reading down
        // wakes a blocked receive at once; it is only done to stop (or to
        // panic on request), so nothing is lost.
        if let Some(socket) = io.socket.read().as_ref() {
            let _ = SockRef::from(socket).shutdown(std::net::Shutdown::Read);
        }
        return;
    }
    let mut to = io.local_addr;
    if to.ip().is_unspecified() {
        to.set_ip(match to {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    let guard = io.socket.read();
    if let Some(socket) = guard.as_ref() {
        if let Err(err) = socket.send_to(&[], to) {
            log::debug!("could not wake the receive thread: {err}");
        }
    }
}

fn receive_loop<R: Role>(
    shared: &Shared<R>,
    socket: UdpSocket,
    stop: &AtomicBool,
    batch_size: usize,
) {
    let io = &shared.io;
    // One byte more than the largest datagram, so nothing is silently cut.
    let mut datagrams = RecvBatch::new(batch_size, MAX_DATAGRAM + 1);
    let mut errors = 0u32;
    loop {
        let received = datagrams.recv(&socket);
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if shared.panic_requested.swap(false, Ordering::SeqCst) {
            panic!("panic requested by a test");
        }
        let count = match received {
            Ok(count) => {
                errors = 0;
                count
            }
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
                // A socket connected to its peer (a client's) reports the
                // peer's "port unreachable" here: news for the core, at most
                // one per datagram sent, so it can neither spin nor persist.
                errors = 0;
                shared.with_core(|core, now| core.handle_refused(now));
                continue;
            }
            Err(err) => {
                // Other ICMP errors and the like are loss, as far as LSP is
                // concerned; an error that persists is not, and must not spin.
                errors += 1;
                log::debug!("receive error {errors}: {err}");
                if errors >= MAX_RECV_ERRORS {
                    shared.fail(format!("receive failed {errors} times in a row: {err}"));
                    return;
                }
                thread::sleep(Duration::from_millis(1 << errors.min(7)));
                continue;
            }
        };
        io.counters
            .datagrams_received
            .fetch_add(count as u64, Ordering::Relaxed);
        shared.with_core(|core, now| {
            for i in 0..count {
                let (datagram, from) = datagrams.get(i);
                if io.faults.as_ref().is_some_and(|f| f.drop_read()) {
                    continue;
                }
                core.handle(now, from, datagram);
            }
            core.end_batch(now);
        });
    }
}

fn epoch_loop<R: Role>(shared: &Shared<R>, delay_rx: Receiver<Delayed>, stop: Receiver<()>) {
    let io = &shared.io;
    // `tick` has capacity one: a slow epoch merges ticks rather than bursting.
    let ticker = tick(io.params.epoch());
    let mut held: BinaryHeap<Reverse<Delayed>> = BinaryHeap::new();
    loop {
        let core_due = shared.peek(|core| core.poll_timeout());
        let due = match (held.peek().map(|Reverse(d)| d.due), core_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let next_due = match due {
            Some(due) => after(due.saturating_duration_since(Instant::now())),
            None => never(),
        };
        select! {
            recv(ticker) -> _ => {
                if io.faults.is_some() {
                    io.release_held_back();
                }
                shared.with_core(|core, now| core.handle_epoch(now));
            }
            recv(delay_rx) -> d => if let Ok(d) = d { held.push(Reverse(d)) },
            recv(next_due) -> _ => {}
            recv(stop) -> _ => return,
        }
        let now = Instant::now();
        if core_due.is_some_and(|due| due <= now) {
            shared.with_core(|core, now| core.handle_timeout(now));
        }
        while held.peek().is_some_and(|Reverse(d)| d.due <= now) {
            if let Some(Reverse(d)) = held.pop() {
                io.send_raw(&d.bytes, d.to);
            }
        }
    }
}

/// The application side of an instance: delivered items, and a channel that
/// disconnects when the instance is closed so that blocked readers wake.
pub(crate) struct Inbox<T> {
    pub tx: Sender<T>,
    rx: Receiver<T>,
    shut: AtomicBool,
    /// Dropped by `shut`, which disconnects `shutdown_rx` and wakes readers.
    shutdown_tx: Mutex<Option<Sender<()>>>,
    shutdown_rx: Receiver<()>,
}

/// What a read that found nothing returns.
pub(crate) enum Empty {
    Closed,
    Timeout,
}

impl<T> Inbox<T> {
    pub(crate) fn new() -> Inbox<T> {
        let (tx, rx) = unbounded();
        let (shutdown_tx, shutdown_rx) = unbounded();
        Inbox {
            tx,
            rx,
            shut: AtomicBool::new(false),
            shutdown_tx: Mutex::new(Some(shutdown_tx)),
            shutdown_rx,
        }
    }

    /// Wakes every blocked reader; later reads return `Empty::Closed`.
    pub(crate) fn shut(&self) {
        self.shut.store(true, Ordering::SeqCst);
        self.shutdown_tx.lock().take();
    }

    /// Blocks until an item arrives, the inbox is shut, or `timeout` passes.
    pub(crate) fn recv(&self, timeout: Option<Duration>) -> Result<T, Empty> {
        if self.shut.load(Ordering::SeqCst) {
            return Err(Empty::Closed);
        }
        // Under load the next item is usually there already: take it without
        // registering with two channels' wakers.
        if let Ok(item) = self.rx.try_recv() {
            return Ok(item);
        }
        match timeout {
            None => select! {
                recv(self.rx) -> item => item.map_err(|_| Empty::Closed),
                recv(self.shutdown_rx) -> _ => Err(Empty::Closed),
            },
            Some(t) => select! {
                recv(self.rx) -> item => item.map_err(|_| Empty::Closed),
                recv(self.shutdown_rx) -> _ => Err(Empty::Closed),
                default(t) => Err(Empty::Timeout),
            },
        }
    }
}

/// Checks a write against the largest payload that fits one datagram.
pub(crate) fn check_payload(len: usize, max: usize) -> Result<(), Error> {
    if len > max {
        Err(Error::PayloadTooLarge { len, max })
    } else {
        Ok(())
    }
}

/// Validates a configured maximum datagram size.
pub(crate) fn check_datagram_size(size: usize) -> Result<(), Error> {
    if !(DEFAULT_MAX_DATAGRAM / 4..=MAX_DATAGRAM).contains(&size) {
        return Err(Error::InvalidParams {
            field: "max_datagram_size",
            reason: "must be between 368 and 65507",
        });
    }
    Ok(())
}

/// Validates a send buffer or inbox limit.
pub(crate) fn check_limit(field: &'static str, limit: crate::proto::Limit) -> Result<(), Error> {
    if limit.messages == 0 || limit.bytes == 0 {
        return Err(Error::InvalidParams {
            field,
            reason: "must allow at least one message and one byte",
        });
    }
    Ok(())
}
