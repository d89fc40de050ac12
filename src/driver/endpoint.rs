//! The thin threaded driver shared by [`Client`](crate::Client) and
//! [`Server`](crate::Server).
//!
//! Each instance owns one UDP socket, one protocol core (a
//! [`ServerCore`](crate::proto::ServerCore), or a
//! [`ClientCore`](crate::proto::ClientCore) behind its mutex) and these
//! threads:
//!
//! * **receive threads** (one for a client, several for a server, sharing
//!   the socket) take datagrams in batches and feed them to the core;
//! * the **epoch thread** ticks the core every epoch, runs its timers, and
//!   sends the datagrams the delay fault postponed;
//! * the **close manager** waits for a close request, asks the core to
//!   drain, waits until it has (or a deadline passes), then stops the other
//!   threads, joins them and releases the socket.
//!
//! Every input, from a thread or from the user's call, goes the same way
//! ([`Shared::run`]): the core takes it under the locks it needs (the
//! server core locks the one connection concerned, a client core its
//! whole state) and hands its outputs to the [`Outlet`] while still holding
//! them. The outlet sends datagrams at once, and publishes outputs to the
//! inbox and the subscribers, in order, as one burst just before the core
//! releases the lock they were made under (so a reader blocked on the inbox
//! wakes once per burst). Once the core has returned, and so
//! released every lock, the writers waiting on the connections that changed
//! are woken. Nothing under a lock can block: channels are unbounded, and
//! datagrams are sent with `MSG_DONTWAIT` (a full send buffer drops the
//! datagram, which the protocol sends again). Datagrams the delay and
//! reorder faults hold back are sent later by the epoch thread.
//!
//! Why a datagram is sent under its connection's lock rather than after
//! it: two threads work on one connection at once (a writer, and the
//! receive thread taking an acknowledgement that opens the window), and a
//! thread that sent after unlocking could be overtaken by the other, which
//! puts the connection's Data on the wire out of order. The peer then
//! buffers and acknowledges message by message instead of with one CAck:
//! measured, sending after unlocking cost a client's window-32 echo 25-40%
//! (55-58k against 65-91k echoes/s, alternating runs, with 10-20% more
//! context switches). The lock held is one connection's, so the send only
//! delays that connection's other threads, never another connection's.
//!
//! Writers waiting for room wait on one of a few striped condition
//! variables ([`Rooms`](super::rooms::Rooms)), chosen by connection id: a server wakes only the
//! stripe of a connection whose buffer made room (or that ended), a client
//! its one stripe after every input.
//!
//! Every thread runs under `catch_unwind`: a panic is logged at error level,
//! fails the instance (every blocked caller wakes, and every later call
//! returns [`Error::Failed`]) and closes it.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use crossbeam_channel::{unbounded, Receiver, Sender};
use parking_lot::Mutex;

use super::faults::Faults;
use super::io::{stop_receivers, Io, SendBatch, SEND_BATCH};
use super::rooms::Rooms;
use super::threads::{
    close_manager, epoch_loop, panic_message, receive_loop, spawn, CloseRequest, Threads, RECV_POLL,
};
use crate::proto::{Message, Sink};
use crate::{Error, Params};

/// A protocol core as the driver sees it (implemented in
/// [`cores`](super::cores)). Every method takes `&self`: the core locks
/// what it needs, and hands what it produces to `out` before unlocking.
pub(crate) trait Core: Send + Sync + 'static {
    /// What the core hands to the application side.
    type Output;
    /// Which inbox a read took a message from (a connection, or nothing).
    type InboxKey: PartialEq + Send + 'static;
    /// What a receive thread keeps across one batch of datagrams.
    type OwedAcks: Default;
    fn read_done(
        &self,
        now: Instant,
        inbox: Self::InboxKey,
        messages: usize,
        bytes: usize,
        out: &mut impl Sink<Self::Output>,
    );
    /// A batch of datagrams, each with its sender and the address it was
    /// sent to (`None` where the socket does not say), and the end of the
    /// batch (owed acknowledgements go out).
    fn handle_batch<'d>(
        &self,
        now: Instant,
        datagrams: impl Iterator<Item = (&'d [u8], SocketAddr, Option<IpAddr>)>,
        owed: &mut Self::OwedAcks,
        out: &mut impl Sink<Self::Output>,
    );
    fn handle_epoch(&self, now: Instant, out: &mut impl Sink<Self::Output>);
    fn poll_timeout(&self) -> Option<Instant>;
    fn handle_timeout(&self, now: Instant, out: &mut impl Sink<Self::Output>);
    fn close(&self, now: Instant, out: &mut impl Sink<Self::Output>);
    fn abort(&self, now: Instant, out: &mut impl Sink<Self::Output>) -> usize;
    /// The peer's host refused a datagram (see [`Io::follow_peer`]); only
    /// a core whose socket follows its peer hears this.
    fn handle_refused(&self, _now: Instant, _out: &mut impl Sink<Self::Output>) {}
}

/// What publishing one output asks of the driver.
pub(crate) enum Published {
    Nothing,
    /// A close has drained.
    Drained,
    /// Writers waiting on this key (a connection id) should look again.
    Wake(u32),
}

/// The application side of a client or server: where outputs go.
pub(crate) trait Role: Send + Sync + 'static {
    type Core: Core;
    /// Writers wait on a change of their connection after every input,
    /// not only on the core's say-so (a client: any ack may make room).
    const WAKE_ON_EVERY_INPUT: bool;
    /// Hands one output on (to the inbox, the subscribers, a waiting
    /// connect). Runs under the lock of the connection it concerns.
    fn publish(&self, output: <Self::Core as Core>::Output) -> Published;
    /// The outcome of a close that drained.
    fn close_result(&self, core: &Self::Core) -> Result<(), Error>;
    /// Wakes every blocked reader; later reads find the instance closed.
    fn shut(&self);
    /// The instance has ended (closed, or failed): no event can come any
    /// more, and every subscriber's channel disconnects.
    fn end(&self);
}

/// Where the core's outputs go during one input (see the module docs):
/// datagrams into this thread's send batch, outputs to the role.
pub(crate) struct Outlet<'a, R: Role> {
    io: &'a Io,
    role: &'a R,
    batch: &'a mut SendBatch,
    /// Outputs kept until the core releases the lock they were made
    /// under ([`Sink::release`]): handed on as one burst, a reader blocked
    /// on the inbox wakes once for them rather than once each.
    pending: Vec<<R::Core as Core>::Output>,
    drained: bool,
}

impl<R: Role> Sink<<R::Core as Core>::Output> for Outlet<'_, R> {
    fn transmit(&mut self, to: SocketAddr, msg: &Message<'_>) {
        // Queued; sent at `release`, still under the lock of the connection
        // it belongs to (see there).
        self.io.queue(msg, to, None, self.batch);
    }

    fn transmit_from(&mut self, local: Option<IpAddr>, to: SocketAddr, msg: &Message<'_>) {
        // As `transmit`, leaving from `local` (see `Io::send_raw`).
        self.io.queue(msg, to, local, self.batch);
    }

    fn output(&mut self, output: <R::Core as Core>::Output) {
        self.pending.push(output);
    }

    fn release(&mut self) {
        // What the connection's input produced goes out now, before its lock
        // is released: one connection's datagrams leave in the order its
        // state machine made them, whichever threads work on it (see the
        // module docs for what sending after unlocking cost), and a burst
        // is one pass over the batch rather than one per datagram.
        self.io.flush(self.batch);
        for output in self.pending.drain(..) {
            match self.role.publish(output) {
                Published::Nothing => {}
                Published::Drained => self.drained = true,
                Published::Wake(key) => {
                    if !self.batch.wakes.contains(&key) {
                        self.batch.wakes.push(key);
                    }
                }
            }
        }
    }
}

/// State shared by the user's handle and the instance's threads.
pub(crate) struct Shared<R: Role> {
    pub core: R::Core,
    /// Reads the application made, told to the core at its next input: a
    /// read never waits for a lock of the core's. A stale count only pauses
    /// receiving a little early; the peer's next retransmission is itself
    /// an input that delivers the count and resumes it.
    reads: ReadLog<<R::Core as Core>::InboxKey>,
    rooms: Rooms,
    pub io: Io,
    pub role: R,
    /// Lock `failure`.
    ///
    /// Set when a thread panicked or the socket failed for good.
    failure: Mutex<Option<String>>,
    failed: AtomicBool,
    /// The close manager's requests: a failure asks it to close at once.
    close_tx: Sender<CloseRequest>,
    /// Test hook: the receive thread panics at its next wake-up.
    #[cfg(feature = "test-hooks")]
    pub(super) panic_requested: AtomicBool,
    /// Test hook: the next call into the core panics.
    #[cfg(feature = "test-hooks")]
    core_panic_requested: AtomicBool,
}

impl<R: Role> Shared<R> {
    /// Runs one input through the core, then sends and wakes (see the module
    /// docs). Once the instance has failed it touches nothing and returns
    /// [`Error::Failed`]; a panic inside fails the instance, has it closed,
    /// and returns the same error, so it never unwinds into a user's thread
    /// nor leaves a half-updated core to anyone else.
    pub(crate) fn run<T>(
        &self,
        f: impl FnOnce(&R::Core, Instant, &mut Outlet<'_, R>) -> T,
    ) -> Result<T, Error> {
        if let Some(failure) = self.failure() {
            return Err(failure);
        }
        match catch_unwind(AssertUnwindSafe(|| self.run_unguarded(f))) {
            Ok(result) => Ok(result),
            Err(panic) => {
                let why = format!("the core panicked: {}", panic_message(&*panic));
                self.fail_and_close(why.clone());
                Err(self.failure().unwrap_or(Error::Failed(why)))
            }
        }
    }

    fn run_unguarded<T>(&self, f: impl FnOnce(&R::Core, Instant, &mut Outlet<'_, R>) -> T) -> T {
        SEND_BATCH.with(|batch| {
            let mut batch = batch.borrow_mut();
            // Whatever a panic left behind in this thread's batch is stale.
            batch.clear();
            let now = Instant::now();
            let mut out = Outlet {
                io: &self.io,
                role: &self.role,
                batch: &mut batch,
                pending: Vec::new(),
                drained: false,
            };
            // Reads from one inbox in a row are told in one call.
            let mut pending: Option<(<R::Core as Core>::InboxKey, usize, usize)> = None;
            while let Ok((inbox, len)) = self.reads.1.try_recv() {
                match &mut pending {
                    Some((of, messages, bytes)) if *of == inbox => {
                        *messages += 1;
                        *bytes += len;
                    }
                    _ => {
                        if let Some((of, messages, bytes)) = pending.replace((inbox, 1, len)) {
                            self.core.read_done(now, of, messages, bytes, &mut out);
                        }
                    }
                }
            }
            if let Some((of, messages, bytes)) = pending {
                self.core.read_done(now, of, messages, bytes, &mut out);
            }
            #[cfg(feature = "test-hooks")]
            if self.core_panic_requested.swap(false, Ordering::SeqCst) {
                panic!("a panic in the core, requested by a test");
            }
            let result = f(&self.core, now, &mut out);
            // Outputs made outside any connection's lock (a refusal, the end
            // of a close) are in no connection's order.
            out.release();
            let drained = out.drained;
            // Every lock of the core is released by now.
            if R::WAKE_ON_EVERY_INPUT {
                self.rooms.wake(0);
            }
            for key in batch.wakes.drain(..) {
                self.rooms.wake(key);
            }
            if drained {
                let _ = self.io.drained.send(());
            }
            result
        })
    }

    /// Notes that the application took a message of `len` bytes from `inbox`.
    pub(crate) fn read_done(&self, inbox: <R::Core as Core>::InboxKey, len: usize) {
        let _ = self.reads.0.send((inbox, len));
    }

    /// Waits while `blocked` says so, until `deadline` (if any), for a wake
    /// on `key`. Returns whether it is no longer blocked (or the instance
    /// failed: the caller finds out).
    pub(crate) fn wait_for_room(
        &self,
        key: u32,
        blocked: impl Fn() -> bool,
        deadline: Option<Instant>,
    ) -> bool {
        let key = if R::WAKE_ON_EVERY_INPUT { 0 } else { key };
        let stripe = self.rooms.stripe(key);
        let mut guard = stripe.lock.lock();
        stripe.waiters.fetch_add(1, Ordering::SeqCst);
        let mut room = true;
        while blocked() && !self.is_failed() {
            match deadline {
                None => stripe.room.wait(&mut guard),
                Some(deadline) => {
                    if stripe.room.wait_until(&mut guard, deadline).timed_out() {
                        room = !blocked();
                        break;
                    }
                }
            }
        }
        stripe.waiters.fetch_sub(1, Ordering::SeqCst);
        room
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

    /// Fails the instance ([`fail`](Self::fail)) and has it closed at once:
    /// after a panic nothing can be trusted to drain.
    pub(super) fn fail_and_close(&self, why: String) {
        self.fail(why);
        let _ = self.close_tx.send(CloseRequest {
            reply: None,
            deadline: Some(Instant::now()),
        });
    }

    /// Marks the instance failed and wakes every blocked caller.
    pub(super) fn fail(&self, why: String) {
        log::error!("liveseq {} failed: {why}", self.io.local_addr());
        {
            let mut failure = self.failure.lock();
            if failure.is_none() {
                *failure = Some(why);
            }
        }
        self.failed.store(true, Ordering::SeqCst);
        self.role.shut();
        self.role.end();
        self.rooms.wake_all();
        let _ = self.io.drained.send(());
    }

    /// Test hook: makes the receive thread panic (see `Server::fail_for_tests`).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn request_panic(&self) {
        self.panic_requested.store(true, Ordering::SeqCst);
        super::io::wake_receiver(&self.io);
    }

    /// Test hook: makes the next call into the core panic (see
    /// `Server::fail_in_core_for_tests`).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn request_core_panic(&self) {
        self.core_panic_requested.store(true, Ordering::SeqCst);
    }
}

/// Stops and joins the receive threads `recv` of an instance whose start
/// failed half way.
fn stop_started(io: &Io, stop: &AtomicBool, recv: Vec<JoinHandle<()>>) {
    stop.store(true, Ordering::SeqCst);
    stop_receivers(io, recv.len());
    for handle in recv {
        let _ = handle.join();
    }
}

/// Reads noted by the application's threads, for the core.
type ReadLog<K> = (Sender<(K, usize)>, Receiver<(K, usize)>);

/// The running threads of one instance, owned by the user's handle.
pub(crate) struct Endpoint<R: Role> {
    pub shared: Arc<Shared<R>>,
    close_tx: Sender<CloseRequest>,
    /// Lock `manager`: the close manager's handle, taken to join it.
    manager: Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
}

/// How an instance is set up.
pub(crate) struct Config {
    pub params: Params,
    pub faults: Faults,
    /// Most datagrams taken from the socket in one wake-up.
    pub batch: usize,
    /// Receive threads sharing the socket.
    pub receive_threads: usize,
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
            receive_threads,
        } = config;
        socket.set_read_timeout(Some(RECV_POLL))?;
        let receivers = (0..receive_threads.max(1))
            .map(|_| socket.try_clone())
            .collect::<Result<Vec<_>, _>>()?;
        let (delay_tx, delay_rx) = unbounded();
        let (drained_tx, drained_rx) = unbounded();
        let (close_tx, close_rx) = unbounded::<CloseRequest>();
        let shared = Arc::new(Shared {
            close_tx: close_tx.clone(),
            core,
            reads: unbounded(),
            rooms: Rooms::new(),
            io: Io::new(socket, params, faults, delay_tx, drained_tx)?,
            role,
            failure: Mutex::new(None),
            failed: AtomicBool::new(false),
            #[cfg(feature = "test-hooks")]
            panic_requested: AtomicBool::new(false),
            #[cfg(feature = "test-hooks")]
            core_panic_requested: AtomicBool::new(false),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (stop_epoch_tx, stop_epoch_rx) = unbounded::<()>();

        let mut recv = Vec::with_capacity(receivers.len());
        for receiver in receivers {
            let for_thread = shared.clone();
            let stop_flag = stop.clone();
            match spawn("liveseq-recv", shared.clone(), move || {
                receive_loop(&for_thread, receiver, &stop_flag, batch)
            }) {
                Ok(handle) => recv.push(handle),
                Err(err) => {
                    stop_started(&shared.io, &stop, recv);
                    return Err(err);
                }
            }
        }
        let epoch = {
            let for_thread = shared.clone();
            match spawn("liveseq-epoch", shared.clone(), move || {
                epoch_loop(&for_thread, delay_rx, stop_epoch_rx)
            }) {
                Ok(handle) => handle,
                Err(err) => {
                    stop_started(&shared.io, &stop, recv);
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
            spawn("liveseq-close", shared.clone(), move || {
                close_manager(&for_thread, close_rx, drained_rx, threads)
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
