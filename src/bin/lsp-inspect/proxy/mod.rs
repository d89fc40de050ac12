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
//!
//! The parts: [`clients`] holds the client table, each client's upstream
//! socket and the eviction; [`poll`] the loop that receives from every
//! socket; [`forward`] what is done with each datagram; [`held`] the queue
//! of held-back copies and its thread; [`stall`] the stall watcher.

mod clients;
mod forward;
mod held;
mod poll;
mod stall;

use std::fs::File;
use std::io::{self, BufWriter};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::check::{CheckParams, Checker, Violation, MAX_FLOWS};
use crate::faults::{FaultModel, Faults};
use crate::record::Recorder;
use crate::timeline;

use forward::PRINTED;
use held::{held_loop, HeldQueue};
use poll::io_loop;
use stall::stall_loop;

/// How often blocked threads look at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// Client addresses served by default, and at most (the checker tracks as
/// many): each costs an upstream socket (a file descriptor, and its buffers
/// in the kernel) and a few hundred bytes here.
pub const MAX_CLIENTS: usize = MAX_FLOWS;

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
