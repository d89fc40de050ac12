//! The thin threaded driver shared by [`Client`](crate::Client) and
//! [`Server`](crate::Server).
//!
//! Each instance owns one UDP socket and three threads:
//!
//! * the **receive thread** decodes datagrams and hands them to the role
//!   (client or server), which runs the state machine under the connection's
//!   lock and sends Acks and newly allowed Data itself;
//! * the **epoch thread** ticks every epoch (and releases datagrams held back
//!   by the delay fault);
//! * the **close manager** waits for a close request, asks the role to drain,
//!   waits until it has, then stops the other two threads, joins them and
//!   releases the socket.
//!
//! User threads send directly from `write`, so a message needs no thread
//! hand-off on the way out; only delivery to `read` crosses a channel.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{after, never, select, tick, unbounded, Receiver, Sender};
use parking_lot::{Mutex, RwLock};
use socket2::{Domain, Protocol, Socket, Type};

use super::faults::{Injector, Plan};
use super::sys::RecvBatch;
use crate::proto::{DecodeError, Message, DEFAULT_MAX_DATAGRAM, MAX_DATAGRAM};
use crate::{Error, Faults, Params};

/// Socket buffer size we ask the kernel for.
const SOCKET_BUFFER: usize = 4 << 20;

/// Socket-level counters of one instance.
#[derive(Debug, Default)]
pub(crate) struct IoCounters {
    pub datagrams_received: AtomicU64,
    pub datagrams_sent: AtomicU64,
    /// Not JSON, wrong shape, unknown type, bad base64.
    pub malformed: AtomicU64,
    /// Well-formed but unusable: wrong address for the connection, unknown
    /// connection, corrupt, outside the window, acks for unsent messages.
    pub rejected: AtomicU64,
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

thread_local! {
    /// Encoding buffer reused by every send from this thread.
    static ENCODE_BUF: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(2048));
}

/// The socket and everything needed to send on it.
pub(crate) struct Io {
    /// `None` once the instance is closed, which releases the port.
    socket: RwLock<Option<UdpSocket>>,
    local_addr: SocketAddr,
    pub params: Params,
    /// Whether connections acknowledge in-order Data with one CAck per batch.
    pub coalesce_acks: bool,
    faults: Option<Injector>,
    delayed: Sender<Delayed>,
    /// Datagrams the reorder fault holds until the next send (or epoch).
    held_back: Mutex<Vec<(Vec<u8>, SocketAddr)>>,
    pub counters: IoCounters,
    /// Signalled by the role when closing has drained every connection.
    drained: Sender<()>,
}

impl Io {
    /// Encodes `msg` and sends it to `to`, applying the instance's faults.
    /// Send errors are counted and logged, never returned: for a datagram
    /// protocol they are indistinguishable from loss.
    pub(crate) fn send(&self, msg: &Message<'_>, to: SocketAddr) {
        let Some(faults) = &self.faults else {
            ENCODE_BUF.with(|buf| {
                let mut buf = buf.borrow_mut();
                buf.clear();
                msg.encode(&mut buf);
                self.send_raw(&buf, to);
            });
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
        let copies = if duplicate { 2 } else { 1 };
        for _ in 0..copies {
            if let Some(delay) = delay {
                let _ = self.delayed.send(Delayed {
                    due: Instant::now() + delay,
                    bytes: bytes.clone(),
                    to,
                });
            } else if reorder {
                self.held_back.lock().push((bytes.clone(), to));
            } else {
                self.send_raw(&bytes, to);
                self.release_held_back();
            }
        }
    }

    /// Sends the datagrams the reorder fault held back.
    fn release_held_back(&self) {
        let held = std::mem::take(&mut *self.held_back.lock());
        for (bytes, to) in held {
            self.send_raw(&bytes, to);
        }
    }

    fn send_raw(&self, bytes: &[u8], to: SocketAddr) {
        let guard = self.socket.read();
        let Some(socket) = guard.as_ref() else { return };
        match socket.send_to(bytes, to) {
            Ok(_) => {
                self.counters.datagrams_sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => {
                self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                log::debug!("send to {to} failed: {err}");
            }
        }
    }

    /// Called by the role when a close it was asked for has finished draining.
    pub(crate) fn signal_drained(&self) {
        let _ = self.drained.send(());
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub(crate) fn count_rejected(&self, from: SocketAddr, what: &dyn std::fmt::Debug) {
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        log::debug!("dropped datagram from {from}: {what:?}");
    }
}

/// What a client or server does with datagrams, epochs and close requests.
pub(crate) trait Role: Send + Sync + 'static {
    /// What the role remembers across one batch of received datagrams.
    type Batch: Default;
    /// A decoded datagram from `from`, one of a batch.
    fn on_message(&self, io: &Io, from: SocketAddr, msg: Message<'_>, batch: &mut Self::Batch);
    /// The batch is over: send the coalesced acknowledgements.
    fn end_batch(&self, io: &Io, batch: &mut Self::Batch);
    /// One epoch passed.
    fn on_epoch(&self, io: &Io);
    /// Stop accepting work and drain; call [`Io::signal_drained`] when done
    /// (possibly from inside this call).
    fn begin_close(&self, io: &Io);
    /// The outcome of the close, asked once after draining.
    fn close_result(&self) -> Result<(), Error>;
    /// The close deadline passed: discard everything left and return how
    /// many messages were never acknowledged.
    fn abort(&self, io: &Io) -> usize;
    /// A datagram from `from` that was not a valid message.
    fn on_malformed(&self, _from: SocketAddr) {}
    /// The next instant [`Role::on_deadline`] wants to run, besides epochs.
    fn next_deadline(&self) -> Option<Instant> {
        None
    }
    /// The instant from [`Role::next_deadline`] passed.
    fn on_deadline(&self, _io: &Io) {}
}

/// State shared by the user's handle and the instance's threads.
pub(crate) struct Shared<R> {
    pub io: Io,
    pub role: R,
}

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
    pub coalesce_acks: bool,
    /// Most datagrams taken from the socket in one wake-up.
    pub batch: usize,
}

/// Creates a UDP socket bound to `addr` with large buffers.
pub(crate) fn bind_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps these at its own maximum.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The unspecified address of `peer`'s family, port 0: where a client binds.
pub(crate) fn any_addr_for(peer: SocketAddr) -> SocketAddr {
    match peer {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

impl<R: Role> Endpoint<R> {
    /// Starts the threads around `socket`. `role` is built from the [`Io`]'s
    /// pieces it may need before the threads run (nothing is received yet).
    pub(crate) fn start(socket: UdpSocket, config: Config, role: R) -> Result<Endpoint<R>, Error> {
        let Config {
            params,
            faults,
            coalesce_acks,
            batch,
        } = config;
        let local_addr = socket.local_addr()?;
        let receiver = socket.try_clone()?;
        let (delay_tx, delay_rx) = unbounded();
        let (drained_tx, drained_rx) = unbounded();
        let shared = Arc::new(Shared {
            io: Io {
                socket: RwLock::new(Some(socket)),
                local_addr,
                params,
                coalesce_acks,
                faults: Injector::new(faults),
                delayed: delay_tx,
                held_back: Mutex::new(Vec::new()),
                counters: IoCounters::default(),
                drained: drained_tx,
            },
            role,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (stop_epoch_tx, stop_epoch_rx) = unbounded::<()>();

        let recv = {
            let shared = shared.clone();
            let stop = stop.clone();
            spawn("liveseq-recv", move || {
                receive_loop(&shared, receiver, &stop, batch)
            })?
        };
        let epoch = {
            let for_thread = shared.clone();
            match spawn("liveseq-epoch", move || {
                epoch_loop(&for_thread, delay_rx, stop_epoch_rx)
            }) {
                Ok(handle) => handle,
                Err(err) => {
                    stop_receiver(&shared.io, &stop);
                    let _ = recv.join();
                    return Err(err);
                }
            }
        };
        let (close_tx, close_rx) = unbounded::<CloseRequest>();
        let manager = {
            let shared = shared.clone();
            let threads = Threads {
                recv,
                epoch,
                stop,
                stop_epoch: stop_epoch_tx,
            };
            // If this spawn fails the threads are stopped when `threads` drops.
            spawn("liveseq-close", move || {
                close_manager(&shared, close_rx, drained_rx, threads)
            })?
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
            return Err(Error::Closed);
        }
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
        result
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

impl<R: Role> Drop for Endpoint<R> {
    /// Dropping without `close` closes in the background: pending messages
    /// are still delivered, then the threads exit on their own.
    fn drop(&mut self) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            let _ = self.close_tx.send(CloseRequest {
                reply: None,
                deadline: None,
            });
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, Error> {
    Ok(thread::Builder::new().name(name.to_string()).spawn(f)?)
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
    let request = requests.recv().ok();
    let deadline = request.as_ref().and_then(|r| r.deadline);
    log::debug!(
        "closing {}: no new connections, reconnects cancelled, draining",
        shared.io.local_addr
    );
    shared.role.begin_close(&shared.io);
    let drained_in_time = match deadline {
        Some(deadline) => drained.recv_deadline(deadline).is_ok(),
        None => drained.recv().is_ok(),
    };
    let result = if drained_in_time {
        shared.role.close_result()
    } else {
        let unacked = shared.role.abort(&shared.io);
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
    stop_receiver(&shared.io, &stop);
    let _ = epoch.join();
    let _ = recv.join();
    log::debug!("closing {}: releasing the socket", shared.io.local_addr);
    shared.io.socket.write().take();
    if let Some(CloseRequest {
        reply: Some(reply), ..
    }) = request
    {
        let _ = reply.send(result);
    }
}

impl<R: Role> Shared<R> {
    /// Runs one datagram through the receive path as if it came from `from`
    /// (the fuzz target for the server's receive path uses this).
    #[cfg(fuzzing)]
    pub(crate) fn inject(&self, from: SocketAddr, datagram: &[u8]) {
        let mut batch = R::Batch::default();
        match Message::decode(datagram) {
            Ok(msg) => self.role.on_message(&self.io, from, msg, &mut batch),
            Err(_) => {
                self.io.counters.malformed.fetch_add(1, Ordering::Relaxed);
                self.role.on_malformed(from);
            }
        }
        self.role.end_batch(&self.io, &mut batch);
    }
}

/// Makes the receive thread leave its blocking `recv_from`: set the flag, then
/// send an empty datagram to our own port. If the kernel drops it because the
/// buffer is full, the thread wakes for the queued datagrams and sees the flag.
fn stop_receiver(io: &Io, stop: &AtomicBool) {
    stop.store(true, Ordering::SeqCst);
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
            log::warn!("could not wake the receive thread: {err}");
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
    let mut batch = R::Batch::default();
    loop {
        let received = datagrams.recv(&socket);
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let count = match received {
            Ok(count) => count,
            Err(err) => {
                // ICMP errors and the like: loss, as far as LSP is concerned.
                log::debug!("receive error: {err}");
                continue;
            }
        };
        io.counters
            .datagrams_received
            .fetch_add(count as u64, Ordering::Relaxed);
        for i in 0..count {
            let (datagram, from) = datagrams.get(i);
            if io.faults.as_ref().is_some_and(|f| f.drop_read()) {
                continue;
            }
            match Message::decode(datagram) {
                Ok(msg) => shared.role.on_message(io, from, msg, &mut batch),
                Err(err) => {
                    io.counters.malformed.fetch_add(1, Ordering::Relaxed);
                    shared.role.on_malformed(from);
                    log_malformed(from, err, datagram);
                }
            }
        }
        shared.role.end_batch(io, &mut batch);
    }
}

fn log_malformed(from: SocketAddr, err: DecodeError, datagram: &[u8]) {
    if log::log_enabled!(log::Level::Debug) {
        let shown = &datagram[..datagram.len().min(80)];
        log::debug!(
            "dropped malformed datagram from {from} ({err:?}): {:?}",
            String::from_utf8_lossy(shown)
        );
    }
}

fn epoch_loop<R: Role>(shared: &Shared<R>, delay_rx: Receiver<Delayed>, stop: Receiver<()>) {
    let io = &shared.io;
    // `tick` has capacity one: a slow epoch merges ticks rather than bursting.
    let ticker = tick(io.params.epoch());
    let mut held: BinaryHeap<Reverse<Delayed>> = BinaryHeap::new();
    loop {
        let role_due = shared.role.next_deadline();
        let due = match (held.peek().map(|Reverse(d)| d.due), role_due) {
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
                shared.role.on_epoch(io);
            }
            recv(delay_rx) -> d => if let Ok(d) = d { held.push(Reverse(d)) },
            recv(next_due) -> _ => {}
            recv(stop) -> _ => return,
        }
        let now = Instant::now();
        if role_due.is_some_and(|due| due <= now) {
            shared.role.on_deadline(io);
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
        // registering with three channels' wakers.
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
