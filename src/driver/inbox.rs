//! The application side's queue: delivered items, and a shutdown channel
//! that wakes every blocked reader when the instance closes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{select, unbounded, Receiver, Sender};
use parking_lot::Mutex;

/// The application side of an instance: delivered items, and a channel that
/// disconnects when the instance is closed so that blocked readers wake.
pub(crate) struct Inbox<T> {
    pub tx: Sender<T>,
    rx: Receiver<T>,
    shut: AtomicBool,
    /// Lock `inbox shutdown`.
    ///
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
