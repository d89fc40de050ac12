//! The server core: the connection table, routing, admission, refusals,
//! closing and flow control, without I/O.
//!
//! [`ServerCore`] holds every connection's [`Conn`](crate::proto::Conn) and decides everything a
//! server decides: which connection a datagram belongs to (by address), what
//! a repeated or a new-incarnation Connect does, when the connection limit
//! refuses one, when an ended connection leaves the table, when a close has
//! drained. Inputs carry the time they happened and a [`Sink`] that takes
//! the datagrams and outputs they produce.
//!
//! It is made of a routing table ([`table`]) and per-connection state
//! ([`slot`]), each behind its own lock, so that several threads can feed
//! it at once; what connections share is counted in atomics ([`counters`]).
//!
//! # Examples
//!
//! ```
//! use std::time::Instant;
//! use liveseq::proto::{OwedAcks, Collect, Message, ServerConfig, ServerCore, ServerOutput};
//! use liveseq::{ConnState, Params, ServerEvent};
//!
//! let now = Instant::now();
//! let client: std::net::SocketAddr = "127.0.0.1:4000".parse().unwrap();
//! let core = ServerCore::new(ServerConfig::new(Params::default()));
//! let (mut batch, mut out) = (OwedAcks::default(), Collect::default());
//! core.handle(now, client, &encode(&Message::connect(7)), &mut batch, &mut out);
//! core.end_batch(now, &mut batch, &mut out);
//! let (to, ack) = out.poll_transmit().unwrap();
//! // The id is random: the Ack carries it, and the Connect's ISN.
//! let id = ack.conn_id;
//! assert!(id >= 1);
//! assert_eq!((to, ack), (client, Message::ack(id, 7)));
//! assert!(matches!(out.poll_output(), Some(ServerOutput::State { state: ConnState::Connected, .. })));
//! assert!(matches!(out.poll_output(), Some(ServerOutput::App(ServerEvent::Connected { .. }))));
//!
//! fn encode(m: &Message<'_>) -> Vec<u8> {
//!     let mut buf = Vec::new();
//!     m.encode(&mut buf);
//!     buf
//! }
//! ```

mod admit;
mod close;
mod config;
mod counters;
mod epoch;
mod flow;
mod output;
mod recv;
mod slot;
mod table;
mod transmit;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use parking_lot::lock_api::ArcMutexGuard;
use parking_lot::{RawMutex, RwLock};

pub use self::config::{
    Limit, ServerConfig, ADMISSION_DIVISOR, AMPLIFICATION_FACTOR, CHALLENGE_EPOCHS, DEFAULT_BUDGET,
    DEFAULT_INBOX, DEFAULT_MAX_UNVALIDATED, DEFAULT_SEND_BUFFER, EVENT_COST, MAX_CONN_ID,
    RESERVE_DIVISOR,
};
pub use self::output::{ConnRef, OwedAcks, ServerOutput};

use self::counters::{Pool, Totals};
use self::slot::Slot;
use self::table::{Cell, Table};
use super::conn::Phase;
use super::sink::Sink;
use super::stats::{ConnStats, ServerStats};
use super::ConnId;
use super::{ConnState, ServerEvent};

/// The I/O-free server: the connection table, routing, admission,
/// refusals, closing and flow control of an LSP server.
///
/// It is shared by every thread that feeds it (all methods take `&self`):
/// the table sits behind one short lock, each connection's state behind a
/// lock of its own, and what connections share (the totals, the memory
/// pool) in atomics. A datagram is looked up in the table, then handled
/// under its connection's lock alone, so threads working on different
/// connections never wait for each other. Locks are taken in one order, a
/// connection's before the table's, and an input takes at most one
/// connection's lock at a time. The one exception is admission, which locks
/// a new connection's slot while it holds the table's write lock: nobody
/// else can reach that slot yet, so no thread can wait the other way round.
///
/// Every input takes a [`Sink`] that receives the datagrams and outputs it
/// produces, under the connection's lock: that keeps each connection's
/// outputs in order. [`PolledServer`](super::PolledServer) wraps it for a
/// single thread, with outputs to poll.
///
/// # Decisions written down
///
/// * A connection belongs to the address its Connect came from; anything
///   naming it from elsewhere is rejected.
/// * Connection ids are random, from 1 to [`MAX_CONN_ID`] (as RFC 6528 made
///   TCP's initial sequence numbers unpredictable), and not reused while a
///   connection with that id, or the memory of its end, lives.
/// * A repeated Connect with the same ISN from an address with a live
///   connection is answered with the same Ack (`duplicate_connects`).
/// * A Connect with another ISN from that address is not trusted (RFC 5961):
///   it may be forged by anyone who knows the address. It never counts as
///   hearing from the connection; the server sends nothing for that
///   connection for [`CHALLENGE_EPOCHS`] epochs (so a restarted client cannot
///   adopt its id from a heartbeat), and keeps it if anything carrying its
///   id arrives from the address meanwhile. Otherwise the connection ends
///   `Lost`, and the client's next Connect is admitted: a client restarted
///   on the same address and port gets a new connection within its connect
///   deadline, and a forged Connect changes nothing a live client can see.
/// * A Connect carrying the ISN of a connection from that address that has
///   **ended** (lost, closed or replaced) in the last `epoch_limit` epochs is
///   a late duplicate of the Connect that opened it, delayed in the network,
///   and is ignored.
/// * Until a connection is validated (its peer sent a message carrying its
///   id, which an off-path attacker cannot know), the server sends its
///   address at most [`AMPLIFICATION_FACTOR`] times the bytes it received
///   from it; what does not fit is held back (and counted). At most
///   `max_unvalidated` connections are unvalidated at once, and they are the
///   first to go: the oldest makes way for a new Connect at that cap or at
///   the connection limit. (A client validates itself with a heartbeat as
///   soon as it connects, so only a peer that never receives stays
///   unvalidated for long.)
/// * At `max_connections`, a Connect from a new address is ignored (LSP has
///   no rejection message); a `Refused` output is produced once per address
///   per epoch.
/// * `write` never waits. A connection whose send buffer passes its limit
///   is *not writable* until it drains to half of it; meanwhile its
///   incoming messages wait in its inbox instead of reaching the
///   application (which keeps acknowledging until the inbox is full), so the
///   peer that causes the backlog is the one slowed down. When it is
///   writable again, a [`ServerEvent::Writable`] follows its backlog.
///   One that acknowledges nothing for its stall limit
///   ([`Conn::stall_limit`](crate::proto::Conn::stall_limit): `epoch_limit` epochs plus the back-off cap)
///   while not writable is ended `Lost` as a slow consumer.
/// * Memory: every connection is charged what it holds (payloads plus
///   [`MESSAGE_OVERHEAD`](crate::proto::MESSAGE_OVERHEAD) per message: send
///   buffer, inbox, reorder buffer, withheld Data), and queued application
///   events cost [`EVENT_COST`] each. Beyond its floor a connection draws
///   from the shared budget, less a reserve of a sixteenth
///   ([`RESERVE_DIVISOR`]) that only admissions use, so a Connect finds room
///   however full the connections are.
/// * Shares of the budget (max-min fairness): while nobody wants more than
///   it can have, any connection may use all of it. Once some do (Data
///   paused, or a write refused, for lack of budget in the last epoch), each
///   epoch sets a fair share: connections holding less than an even split
///   keep what they hold, and the rest is split evenly among the others. A
///   connection at its share takes no more: its Data goes unacknowledged
///   (paced, as by a full inbox) and writes to it fail with
///   [`Error::BudgetExhausted`](crate::proto::CoreError::BudgetExhausted),
///   so peers that never read or never acknowledge hold at most their share
///   and cannot starve the others. One to which a write was refused for
///   its share (or whose send buffer is full) and that then acknowledges
///   nothing for its stall limit is ended as a slow consumer. When the budget itself is spent, Data is left
///   unacknowledged, writes fail and Connects are refused. (With several
///   threads feeding the core at once the budget may be passed by one
///   message per thread: see the pool's notes in the source.)
#[derive(Debug)]
pub struct ServerCore {
    config: ServerConfig,
    /// Lock `table` (see the driver's list of locks): taken after a
    /// connection's, held for a lookup or an update only.
    table: RwLock<Table>,
    pool: Pool,
    totals: Totals,
}

impl ServerCore {
    /// An empty server.
    pub fn new(config: ServerConfig) -> ServerCore {
        ServerCore {
            config,
            table: RwLock::new(Table::new(config.id_seed)),
            pool: Pool::default(),
            totals: Totals::default(),
        }
    }

    // ----- getters -----

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    fn cell(&self, id: ConnId) -> Option<Cell> {
        self.table.read().conns.get(&id.0).cloned()
    }

    /// Runs `f` on connection `id`'s slot, if it is in the table.
    fn with_slot<T>(&self, id: ConnId, f: impl FnOnce(&Slot) -> T) -> Option<T> {
        let cell = self.cell(id)?;
        let slot = cell.lock();
        (!slot.gone).then(|| f(&slot))
    }

    /// The state of connection `id`, or `None` once it has left the table.
    pub fn state(&self, id: ConnId) -> Option<ConnState> {
        self.with_slot(id, Slot::state)
    }

    /// The address of connection `id`.
    pub fn peer_addr(&self, id: ConnId) -> Option<SocketAddr> {
        self.with_slot(id, |s| s.addr)
    }

    /// Every connection in the table (closing ones included), ascending.
    pub fn connections(&self) -> Vec<ConnId> {
        let mut ids: Vec<ConnId> = self
            .table
            .read()
            .conns
            .keys()
            .map(|&id| ConnId(id))
            .collect();
        ids.sort();
        ids
    }

    /// The connections that accept writes (connected, not closing), ascending.
    pub fn writable(&self) -> Vec<ConnId> {
        let mut ids: Vec<ConnId> = self
            .snapshot()
            .into_iter()
            .filter(|(_, cell)| cell.lock().conn.phase() == Phase::Open)
            .map(|(id, _)| ConnId(id))
            .collect();
        ids.sort();
        ids
    }

    /// Whether connection `id` is open and its send buffer has room: its
    /// writes are being sent and its incoming messages reach the
    /// application. `false` for an unknown or closing connection.
    pub fn is_writable(&self, id: ConnId) -> bool {
        self.with_slot(id, |s| s.conn.phase() == Phase::Open && !s.unwritable)
            .unwrap_or(false)
    }

    /// Whether connection `id` has proven that it receives what the server
    /// sends (see the type's docs).
    pub fn is_validated(&self, id: ConnId) -> bool {
        self.with_slot(id, |s| s.validated).unwrap_or(false)
    }

    /// Whether datagrams of connection `id` went unsent since the last
    /// epoch (the 3x limit, a challenge): its next epoch does not count
    /// toward its stall limit (see [`Conn::excuse_stall`](crate::proto::Conn::excuse_stall)).
    pub fn unsent_this_epoch(&self, id: ConnId) -> bool {
        self.with_slot(id, |s| s.unsent).unwrap_or(false)
    }

    /// Connection `id`'s state machine, locked, for tests and tools.
    pub fn conn(&self, id: ConnId) -> Option<ConnRef> {
        let cell = self.cell(id)?;
        let slot = cell.lock_arc();
        (!slot.gone).then_some(ConnRef(slot))
    }

    /// The connection at `addr`, if any.
    pub fn conn_at(&self, addr: SocketAddr) -> Option<ConnId> {
        self.table
            .read()
            .by_addr
            .get(&addr)
            .map(|&(id, _)| ConnId(id))
    }

    /// A statistics snapshot of connection `id`.
    pub fn stats(&self, now: Instant, id: ConnId) -> Option<ConnStats> {
        self.with_slot(id, |s| s.timing.snapshot(now, &s.conn))
    }

    /// Server-wide totals.
    pub fn totals(&self) -> ServerStats {
        let t = &self.totals;
        let get = |c: &AtomicU64| c.load(Relaxed);
        let (active, unvalidated) = {
            let table = self.table.read();
            (table.conns.len(), table.unvalidated.len())
        };
        let charged: usize = self
            .snapshot()
            .iter()
            .map(|(_, cell)| cell.lock().charged)
            .sum();
        ServerStats {
            active,
            accepted: get(&t.accepted),
            refused: get(&t.refused),
            lost: get(&t.lost),
            closed: get(&t.closed),
            duplicate_connects: get(&t.duplicate_connects),
            malformed: get(&t.malformed),
            rejected: get(&t.rejected),
            budget: self.config.budget,
            budget_in_use: self.pool.in_use(),
            memory_in_use: charged + self.pool.events_unread() * EVENT_COST,
            not_writable: self.pool.unwritable.load(Relaxed),
            slow_consumers: get(&t.slow_consumers),
            unvalidated,
            evicted_unvalidated: get(&t.evicted_unvalidated),
            challenged_connects: get(&t.challenged_connects),
            amplification_held_bytes: get(&t.amplification_held_bytes),
            budget_refusals: get(&t.budget_refusals),
        }
    }

    /// Whether connection `id`'s send buffer is at its limit (a
    /// [`try_write`](Self::try_write) would fail with [`Error::BufferFull`](crate::proto::CoreError::BufferFull)).
    pub fn is_full(&self, id: ConnId) -> bool {
        self.with_slot(id, |s| s.is_full(&self.config))
            .unwrap_or(false)
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closing(&self) -> bool {
        self.table.read().closing
    }

    /// Connections lost while closing with messages unacknowledged.
    pub fn lost_during_close(&self) -> Vec<ConnId> {
        self.table.read().lost_during_close.clone()
    }

    /// Every connection in the table, ascending by id.
    fn snapshot(&self) -> Vec<(u32, Cell)> {
        let mut all: Vec<(u32, Cell)> = self
            .table
            .read()
            .conns
            .iter()
            .map(|(&id, cell)| (id, cell.clone()))
            .collect();
        all.sort_unstable_by_key(|&(id, _)| id);
        all
    }

    /// After any input to connection `slot`: note its datagrams, then the
    /// three jobs every input ends with, in this order: flow control and
    /// the memory budget ([`flow`]), sending ([`transmit`]), and acting on
    /// its events ([`close`]).
    fn after(&self, now: Instant, slot: &mut Slot, out: &mut impl Sink<ServerOutput>) {
        let conn = &mut slot.conn;
        // Stamp first transmissions before they leave: an ack that comes
        // back during a burst must not yield a round trip shorter than real.
        slot.timing.update(
            now,
            conn.next_unsent(),
            conn.oldest_unacked(),
            std::iter::from_fn(|| conn.poll_first_acked()),
        );
        self.settle_flow(slot, out);
        self.transmit(slot, out);
        self.on_conn_events(now, slot, out);
    }
}

/// A connection's slot, locked, as a batch holds it across datagrams.
type LockedSlot = ArcMutexGuard<RawMutex, Slot>;

/// Runs `f` on `cell`'s slot under its lock, and tells `out` to pass on
/// what it holds before the lock is released (see [`Sink::release`]).
fn locked<S: Sink<ServerOutput>, T>(
    cell: &Cell,
    out: &mut S,
    f: impl FnOnce(&mut Slot, &mut S) -> T,
) -> T {
    let mut slot = cell.lock();
    let result = f(&mut slot, out);
    out.release();
    result
}

/// Releases the connection a batch holds, after `out` passed on what it
/// holds for it.
fn release(locked_slot: &mut Option<(SocketAddr, LockedSlot)>, out: &mut impl Sink<ServerOutput>) {
    if let Some((_, slot)) = locked_slot.take() {
        out.release();
        // Only now: another thread's outputs for it must come after.
        drop(slot);
    }
}

fn state_change(
    now: Instant,
    conn_id: Option<ConnId>,
    peer: SocketAddr,
    state: ConnState,
    out: &mut impl Sink<ServerOutput>,
) {
    out.output(ServerOutput::State {
        conn_id,
        peer,
        state,
        at: now,
    });
}

/// Hands connection `id`'s backlog (messages delivered while it was not
/// writable) to the application.
fn hand_out(id: u32, backlog: &mut VecDeque<Vec<u8>>, out: &mut impl Sink<ServerOutput>) {
    for payload in backlog.drain(..) {
        out.output(ServerOutput::App(ServerEvent::Message {
            id: ConnId(id),
            payload,
        }));
    }
}

fn charged_excess(charged: usize, floor: usize) -> usize {
    charged.saturating_sub(floor)
}
