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
//! the protocol sends again). The other locks taken under it are held only
//! for a table update or a send, never across a wait: the socket's read
//! lock, the peer a client socket follows, the role's tables and the
//! subscribers' list. Datagrams the delay and reorder faults hold back are
//! sent later by the epoch thread, without the core's lock. Sending before the unlock is measured to pay:
//! sending after it halved one client's window-32 echo rate (43k against
//! 79k messages/s), as the thread that took the lock over raced the sender.
//!
//! Every thread runs under `catch_unwind`: a panic is logged at error level,
//! fails the instance (every blocked caller wakes, and every later call
//! returns [`Error::Failed`]) and closes it.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use crossbeam_channel::{unbounded, Receiver, Sender};
use parking_lot::{Condvar, Mutex, MutexGuard};

use super::io::{wake_receiver, Io, SEND_BATCH};
use super::threads::{
    close_manager, epoch_loop, receive_loop, spawn, CloseRequest, Threads, RECV_POLL,
};
use crate::proto::Message;
use crate::{Error, Faults, Params};

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
    pub(super) panic_requested: AtomicBool,
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
        let receiver = socket.try_clone()?;
        receiver.set_read_timeout(Some(RECV_POLL))?;
        let (delay_tx, delay_rx) = unbounded();
        let (drained_tx, drained_rx) = unbounded();
        let shared = Arc::new(Shared {
            core: Mutex::new(core),
            reads: unbounded(),
            room: Condvar::new(),
            io: Io::new(socket, params, faults, delay_tx, drained_tx)?,
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
