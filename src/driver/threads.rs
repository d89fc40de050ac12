//! The threads of an instance: the receive loops, the epoch loop and
//! the close manager, each spawned so that its panic fails the instance.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::UdpSocket;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{after, never, select, tick, Receiver, Sender};

use super::endpoint::{Core, Role, Shared};
use super::io::{stop_receivers, Delayed};
use super::sys::RecvBatch;
use crate::proto::MAX_DATAGRAM;
use crate::Error;

/// The receive thread wakes at least this often to see whether it must stop,
/// so shutdown never depends on a wake-up datagram arriving.
pub(super) const RECV_POLL: Duration = Duration::from_millis(100);

/// Receive errors in a row (not timeouts) after which the instance fails:
/// with the back-off below that is about ten seconds of nothing but errors.
const MAX_RECV_ERRORS: u32 = 110;

/// A close request sent to the close manager; `reply` is `None` for a drop.
pub(super) struct CloseRequest {
    pub(super) reply: Option<Sender<Result<(), Error>>>,
    pub(super) deadline: Option<Instant>,
}

/// Spawns a library thread whose panic fails the instance instead of
/// vanishing: it is logged, every caller wakes, and the instance closes.
pub(super) fn spawn<R: Role>(
    name: &str,
    shared: Arc<Shared<R>>,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, Error> {
    let thread_name = name.to_string();
    Ok(thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            if let Err(panic) = catch_unwind(AssertUnwindSafe(f)) {
                shared.fail_and_close(format!(
                    "{thread_name} panicked: {}",
                    panic_message(&*panic)
                ));
            }
        })?)
}

/// What a caught panic said.
pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".to_string())
}

/// The receive and epoch threads, stopped and joined by the close manager.
pub(super) struct Threads {
    pub(super) recv: Vec<JoinHandle<()>>,
    pub(super) epoch: JoinHandle<()>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) stop_epoch: Sender<()>,
}

pub(super) fn close_manager<R: Role>(
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
        shared.io.local_addr()
    );
    // A failure (the instance's, or a panic in this close) is seen below.
    let _ = shared.run(|core, now, out| core.close(now, out));
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
        shared.role.close_result(&shared.core)
    } else if let Some(failure) = shared.failure() {
        // A thread panicked, perhaps inside the core: leave it untouched.
        Err(failure)
    } else {
        match shared.run(|core, now, out| core.abort(now, out)) {
            Ok(unacked) => {
                log::debug!(
                    "closing {}: deadline passed, {unacked} messages discarded",
                    shared.io.local_addr()
                );
                Err(Error::CloseTimedOut { unacked })
            }
            Err(failure) => Err(failure),
        }
    };
    log::debug!("closing {}: stopping threads", shared.io.local_addr());
    let Threads {
        recv,
        epoch,
        stop,
        stop_epoch,
    } = threads;
    drop(stop_epoch);
    stop.store(true, Ordering::SeqCst);
    stop_receivers(&shared.io, recv.len());
    let _ = epoch.join();
    for handle in recv {
        let _ = handle.join();
    }
    log::debug!("closing {}: releasing the socket", shared.io.local_addr());
    shared.io.socket.write().take();
    shared.role.shut();
    shared.role.end();
    // Replies go out only now: whoever waits for close finds the port free.
    let mut result = Some(result);
    for reply in replies {
        let r = result.take().unwrap_or(Err(Error::Closed));
        let _ = reply.send(r);
    }
}

pub(super) fn receive_loop<R: Role>(
    shared: &Shared<R>,
    socket: UdpSocket,
    stop: &AtomicBool,
    batch_size: usize,
) {
    let io = &shared.io;
    // One byte more than the largest datagram, so nothing is silently cut.
    // Destinations only where the socket reports them (a server on a
    // wildcard address): a control buffer per datagram, and its parsing.
    let mut datagrams = RecvBatch::new(batch_size, MAX_DATAGRAM + 1, io.receives_destinations());
    let mut errors = 0u32;
    let mut owed = Default::default();
    loop {
        let received = datagrams.recv(&socket);
        if stop.load(Ordering::SeqCst) {
            return;
        }
        #[cfg(feature = "test-hooks")]
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
                if shared
                    .run(|core, now, out| core.handle_refused(now, out))
                    .is_err()
                {
                    // Failed: the close manager stops everything.
                    return;
                }
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
        let handled = shared.run(|core, now, out| {
            let kept = (0..count)
                .map(|i| datagrams.get(i))
                .filter(|_| !io.faults.as_ref().is_some_and(|f| f.drop_read()));
            core.handle_batch(now, kept, &mut owed, out);
        });
        if handled.is_err() {
            // Failed: the close manager stops everything.
            return;
        }
    }
}

pub(super) fn epoch_loop<R: Role>(
    shared: &Shared<R>,
    delay_rx: Receiver<Delayed>,
    stop: Receiver<()>,
) {
    let io = &shared.io;
    // `tick` has capacity one: a slow epoch merges ticks rather than bursting.
    let ticker = tick(io.params.epoch());
    let mut delayed: BinaryHeap<Reverse<Delayed>> = BinaryHeap::new();
    loop {
        let core_due = shared.core.poll_timeout();
        let due = match (delayed.peek().map(|Reverse(d)| d.due), core_due) {
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
                    io.release_reordered();
                }
                if shared.run(|core, now, out| core.handle_epoch(now, out)).is_err() {
                    return;
                }
            }
            recv(delay_rx) -> d => if let Ok(d) = d { delayed.push(Reverse(d)) },
            recv(next_due) -> _ => {}
            recv(stop) -> _ => return,
        }
        let now = Instant::now();
        if core_due.is_some_and(|due| due <= now)
            && shared
                .run(|core, now, out| core.handle_timeout(now, out))
                .is_err()
        {
            return;
        }
        while delayed.peek().is_some_and(|Reverse(d)| d.due <= now) {
            if let Some(Reverse(d)) = delayed.pop() {
                io.send_raw(&d.bytes, d.to, d.from);
            }
        }
    }
}
