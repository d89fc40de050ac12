//! The server core: the connection table, routing, admission, refusals,
//! closing and flow control, without I/O.
//!
//! [`ServerCore`] holds every connection's [`Conn`] and decides everything a
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
//! use liveseq::proto::{Batch, Collect, Message, ServerConfig, ServerCore, ServerOutput};
//! use liveseq::{ConnState, Params, ServerEvent};
//!
//! let now = Instant::now();
//! let client: std::net::SocketAddr = "127.0.0.1:4000".parse().unwrap();
//! let core = ServerCore::new(ServerConfig::new(Params::default()));
//! let (mut batch, mut out) = (Batch::default(), Collect::default());
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

mod counters;
mod slot;
mod table;

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::lock_api::ArcMutexGuard;
use parking_lot::{Mutex, RawMutex, RwLock};

use self::counters::{bump, Pool, Totals};
use self::slot::Slot;
use self::table::{Cell, Ending, Table};
use super::conn::{Conn, Event, Phase, Rejected, Room, MAX_ISN, MESSAGE_OVERHEAD};
use super::message::{max_payload, DecodeError, Message, MsgType, DEFAULT_MAX_DATAGRAM};
use super::sink::Sink;
use super::stats::{ConnStats, ServerStats, Timing};
use super::ConnId;
use super::{ConnState, CoreError as Error, ServerEvent};
use crate::Params;

/// How much a connection may hold on each side before flow control acts.
///
/// # Examples
///
/// ```
/// use liveseq::proto::Limit;
///
/// let limit = Limit { messages: 2, bytes: 100 };
/// assert!(!limit.reached(1, 99));
/// assert!(limit.reached(2, 0) && limit.reached(0, 100));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limit {
    /// At most this many messages.
    pub messages: usize,
    /// At most this many payload bytes.
    pub bytes: usize,
}

impl Limit {
    /// No limit at all.
    pub const UNLIMITED: Limit = Limit {
        messages: usize::MAX,
        bytes: usize::MAX,
    };

    /// Whether `messages` messages of `bytes` bytes in all fill it.
    pub fn reached(&self, messages: usize, bytes: usize) -> bool {
        messages >= self.messages || bytes >= self.bytes
    }

    /// What is left of it once `messages` messages of `bytes` bytes are
    /// held (no memory limit).
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::proto::Limit;
    ///
    /// let room = Limit { messages: 4, bytes: 100 }.room(1, 60);
    /// assert_eq!((room.messages, room.bytes), (3, 40));
    /// assert!(!Limit { messages: 4, bytes: 100 }.room(1, 100).fits(1));
    /// ```
    pub fn room(&self, messages: usize, bytes: usize) -> Room {
        Room {
            messages: self.messages.saturating_sub(messages),
            bytes: self.bytes.saturating_sub(bytes),
            memory: usize::MAX,
        }
    }
}

/// Default send buffer of a connection: 1,024 messages or 1 MiB, whichever
/// comes first. Enough to keep the largest useful window (a few hundred
/// messages) full, small enough that a fast writer holds little memory.
pub const DEFAULT_SEND_BUFFER: Limit = Limit {
    messages: 1024,
    bytes: 1 << 20,
};

/// Default inbox of a connection: 4,096 messages or 4 MiB delivered and not
/// yet read, whichever comes first. Past it, in-order Data is left
/// unacknowledged until the application reads.
pub const DEFAULT_INBOX: Limit = Limit {
    messages: 4096,
    bytes: 4 << 20,
};

/// Default server-wide memory budget: 128 MiB.
///
/// What the server holds for its connections beyond each one's floor (send
/// buffers, inboxes, reorder and held messages, queued events) shares this
/// pool. 128 MiB keeps 32 connections' full default inboxes, or 128 full
/// default send buffers, and bounds a server attacked by hundreds of peers
/// that fill everything it buffers for them to about this much plus
/// their floors (see [`ServerConfig::floor`]).
pub const DEFAULT_BUDGET: usize = 128 << 20;

/// Default cap on connections that have not yet proven that they receive
/// the server's datagrams (see [`ServerCore`]'s "Decisions written down").
pub const DEFAULT_MAX_UNVALIDATED: usize = 1024;

/// What a queued event for the application is charged against the budget
/// (the event itself, its place in the channel, a margin).
pub const EVENT_COST: usize = 128;

/// Epochs a live connection has to answer after a Connect with another
/// ISN arrives from its address (RFC 5961's stance on a SYN for an
/// established connection): anything carrying its id within them keeps it.
pub const CHALLENGE_EPOCHS: u32 = 2;

/// The most bytes a server sends to an address that has not proven it
/// receives the server's datagrams, per byte received from it (RFC 9000,
/// section 8.1).
pub const AMPLIFICATION_FACTOR: u64 = 3;

/// The largest connection id handed out: Go peers decode `ConnID` into an
/// `int`, and courses' code often into 32-bit ones.
pub const MAX_CONN_ID: u32 = i32::MAX as u32;

/// What a [`ServerCore`] is set up with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Protocol parameters.
    pub params: Params,
    /// Most connections at once.
    pub max_connections: usize,
    /// Acknowledge bursts of in-order Data once per batch.
    pub coalesce_acks: bool,
    /// Per-connection limit on written, unacknowledged messages. Past it the
    /// connection is not writable (see [`ServerCore::is_writable`]).
    pub send_buffer: Limit,
    /// Per-connection limit on delivered, unread messages.
    pub inbox: Limit,
    /// Server-wide memory budget in bytes, beyond each connection's floor.
    pub budget: usize,
    /// Memory each connection may use outside the shared budget: a window's
    /// worth of the largest messages each way, so that no crowd of other
    /// connections can starve it.
    pub floor: usize,
    /// Most connections not yet validated at once; at the cap, the oldest
    /// of them makes way for a new one.
    pub max_unvalidated: usize,
    /// Whether each connection's `Connected` and terminal events are charged
    /// to the budget until the application reads them (they queue for one
    /// reader). A driver that hands each connection's events to that
    /// connection's own queue, where at most two of them can wait, turns
    /// this off.
    pub charge_events: bool,
    /// Seed of the random connection ids, or `None` for ids 1, 2, 3, ...
    /// (predictable: for tests and tools only; a server on a network must
    /// use random ids, or anyone can guess them).
    pub id_seed: Option<u64>,
}

impl ServerConfig {
    /// `params` with no connection limit, CAck coalescing, the default
    /// buffer limits and budget, and random connection ids.
    pub fn new(params: Params) -> ServerConfig {
        ServerConfig {
            params,
            max_connections: usize::MAX,
            coalesce_acks: true,
            send_buffer: DEFAULT_SEND_BUFFER,
            inbox: DEFAULT_INBOX,
            budget: DEFAULT_BUDGET,
            floor: ServerConfig::floor_for(params, max_payload(DEFAULT_MAX_DATAGRAM)),
            max_unvalidated: DEFAULT_MAX_UNVALIDATED,
            charge_events: true,
            id_seed: Some(rand::random()),
        }
    }

    /// The floor that guarantees a connection a window's worth of messages
    /// of up to `max_payload` bytes each way.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::proto::{ServerConfig, MESSAGE_OVERHEAD};
    /// use liveseq::Params;
    ///
    /// let floor = ServerConfig::floor_for(Params::default(), 1000);
    /// assert_eq!(floor, 2 * (1000 + MESSAGE_OVERHEAD));
    /// ```
    pub fn floor_for(params: Params, max_payload: usize) -> usize {
        (params.window_size as usize)
            .saturating_mul(2)
            .saturating_mul(max_payload.saturating_add(MESSAGE_OVERHEAD))
    }
}

/// What the core hands out besides datagrams, in the order it happened.
/// One connection's outputs are always in order; those of different
/// connections interleave as the threads feeding the core ran.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerOutput {
    /// A connection changed state (for subscribers). `conn_id` is `None`
    /// for a refused Connect.
    State {
        /// The connection.
        conn_id: Option<ConnId>,
        /// Its peer.
        peer: SocketAddr,
        /// Its new state.
        state: ConnState,
        /// When it changed.
        at: Instant,
    },
    /// The next thing for the application's read loop.
    App(ServerEvent),
    /// Connection `id` started (`true`) or stopped holding Data it could not
    /// take for lack of room: while it holds, a read that makes room should
    /// reach the core at once (see [`ServerCore::read_done`]), since the
    /// peer waits for the acknowledgements it then sends.
    Holding {
        /// The connection.
        id: ConnId,
        /// Whether it holds Data now.
        holding: bool,
    },
    /// Connection `id`'s send buffer was at its limit and has room again:
    /// a writer waiting for room ([`ServerCore::is_full`]) should look
    /// again. (Its end is announced by a [`State`](ServerOutput::State).)
    Room {
        /// The connection.
        id: ConnId,
    },
    /// The application closed connection `id` with
    /// [`ServerCore::close_conn`]: from here on the core hands out nothing
    /// more of it but the [`ServerEvent::Closed`] that follows, and a driver
    /// that already passed messages of `id` towards the application must
    /// not let them reach it either (the guarantee of `close_conn`: after
    /// it, a read returns nothing more from `id` except one `Closed`).
    Discard {
        /// The connection.
        id: ConnId,
    },
    /// A close asked for with [`ServerCore::close`] has finished: every
    /// connection has ended.
    Drained,
}

/// Connections that received Data in one batch of datagrams and may owe an
/// acknowledgement at its end ([`ServerCore::end_batch`]). One per thread
/// that feeds the core; reuse it.
#[derive(Debug, Default)]
pub struct Batch {
    owed: Vec<Cell>,
}

/// A handle on one connection's state machine, locked: for tests and tools
/// ([`ServerCore::conn`]). Other inputs to that connection wait while it lives.
pub struct ConnRef(ArcMutexGuard<RawMutex, Slot>);

impl std::ops::Deref for ConnRef {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.0.conn
    }
}

impl fmt::Debug for ConnRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.conn.fmt(f)
    }
}

/// The I/O-free server: the connection table, routing, admission,
/// refusals, closing and flow control of an LSP server.
///
/// It is shared by every thread that feeds it (all methods take `&self`):
/// the table sits behind one short lock, each connection's state behind a
/// lock of its own, and what connections share (the totals, the memory
/// pool) in atomics. A datagram is looked up in the table, then handled
/// under its connection's lock alone, so threads working on different
/// connections never wait for each other. Locks are always taken in one
/// order, a connection's before the table's, and an input takes at most
/// one connection's lock at a time.
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
///   writable again, a [`ServerEvent::Writable`] follows its held messages.
///   One that acknowledges nothing for its stall limit
///   ([`Conn::stall_limit`]: `epoch_limit` epochs plus the back-off cap)
///   while not writable is ended `Lost` as a slow consumer.
/// * Memory: every connection is charged what it holds (payloads plus
///   [`MESSAGE_OVERHEAD`] per message: send buffer, inbox, reorder buffer,
///   held Data), and queued application events cost [`EVENT_COST`] each.
///   Beyond its floor a connection draws from the shared budget, and one
///   over its own limits only from the first half of it, so that peers that
///   never read cannot starve the others. When the budget is spent, Data is
///   left unacknowledged, writes fail with [`Error::BudgetExhausted`] and
///   Connects are refused. (With several threads feeding the core at once
///   the budget may be passed by one message per thread: see the pool's
///   notes in the source.)
#[derive(Debug)]
pub struct ServerCore {
    config: ServerConfig,
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

    /// Whether datagrams of connection `id` were held back since the last
    /// epoch (the 3x limit, a challenge): its next epoch does not count
    /// toward its stall limit (see [`Conn::excuse_stall`]).
    pub fn held_back_this_epoch(&self, id: ConnId) -> bool {
        self.with_slot(id, |s| s.held_back).unwrap_or(false)
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
    /// [`try_write`](Self::try_write) would fail with [`Error::BufferFull`]).
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

    // ----- inputs -----

    /// A datagram arrived from `from`, one of a batch: acknowledgements it
    /// owes may wait for [`end_batch`](Self::end_batch). Malformed ones are
    /// counted and dropped.
    pub fn handle(
        &self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        batch: &mut Batch,
        out: &mut impl Sink<ServerOutput>,
    ) {
        self.handle_all(now, [(datagram, from)], batch, out);
    }

    /// A batch of datagrams, then its end ([`end_batch`](Self::end_batch)).
    /// Consecutive datagrams from one address are handled under one
    /// acquisition of their connection's lock, and what they deliver is
    /// handed to `out` as one burst ([`Sink::release`]).
    pub fn handle_batch<'d>(
        &self,
        now: Instant,
        datagrams: impl IntoIterator<Item = (&'d [u8], SocketAddr)>,
        batch: &mut Batch,
        out: &mut impl Sink<ServerOutput>,
    ) {
        self.handle_all(now, datagrams, batch, out);
        self.end_batch(now, batch, out);
    }

    /// [`handle_batch`](Self::handle_batch) without its end.
    fn handle_all<'d>(
        &self,
        now: Instant,
        datagrams: impl IntoIterator<Item = (&'d [u8], SocketAddr)>,
        batch: &mut Batch,
        out: &mut impl Sink<ServerOutput>,
    ) {
        let mut held: Option<(SocketAddr, Held)> = None;
        for (datagram, from) in datagrams {
            let msg = match Message::decode(datagram) {
                Ok(msg) => msg,
                Err(err) => {
                    release(&mut held, out);
                    self.malformed(from, datagram, err);
                    continue;
                }
            };
            if msg.kind == MsgType::Connect {
                release(&mut held, out);
                self.handle_connect(now, from, msg.seq_num, datagram.len(), out);
                continue;
            }
            if held.as_ref().map(|(at, _)| *at) != Some(from) {
                release(&mut held, out);
                match self.route(from) {
                    Some(cell) => held = Some((from, cell.lock_arc())),
                    None => {
                        log::debug!("dropped {msg:?} from {from}: no connection from this address");
                        bump(&self.totals.rejected);
                        continue;
                    }
                }
            }
            if let Some((_, slot)) = &mut held {
                self.on_message(now, from, slot, msg, datagram.len(), batch, out);
            }
        }
        release(&mut held, out);
    }

    /// A decoded message arrived from `from` (as if in a datagram of its
    /// encoded size).
    pub fn handle_message(
        &self,
        now: Instant,
        from: SocketAddr,
        msg: Message<'_>,
        batch: &mut Batch,
        out: &mut impl Sink<ServerOutput>,
    ) {
        let len = msg.encoded_len();
        if msg.kind == MsgType::Connect {
            self.handle_connect(now, from, msg.seq_num, len, out);
            return;
        }
        let Some(cell) = self.route(from) else {
            log::debug!("dropped {msg:?} from {from}: no connection from this address");
            bump(&self.totals.rejected);
            return;
        };
        let mut slot = cell.lock_arc();
        self.on_message(now, from, &mut slot, msg, len, batch, out);
        out.release();
    }

    fn malformed(&self, from: SocketAddr, datagram: &[u8], err: DecodeError) {
        log_malformed(from, err, datagram);
        bump(&self.totals.malformed);
        if let Some(cell) = self.route(from) {
            let mut slot = cell.lock();
            slot.timing.malformed += 1;
            slot.bytes_in = slot.bytes_in.saturating_add(datagram.len() as u64);
        }
    }

    fn route(&self, from: SocketAddr) -> Option<Cell> {
        self.table
            .read()
            .by_addr
            .get(&from)
            .map(|(_, cell)| cell.clone())
    }

    fn handle_connect(
        &self,
        now: Instant,
        from: SocketAddr,
        isn: u64,
        len: usize,
        out: &mut impl Sink<ServerOutput>,
    ) {
        if isn > MAX_ISN {
            log::debug!("dropped a Connect from {from}: isn {isn} above MAX_ISN");
            bump(&self.totals.rejected);
            return;
        }
        self.on_connect(now, from, isn, len, out);
    }

    /// A message other than Connect from `from`, whose connection `slot` is
    /// (locked).
    #[allow(clippy::too_many_arguments)]
    fn on_message(
        &self,
        now: Instant,
        from: SocketAddr,
        slot: &mut Held,
        msg: Message<'_>,
        len: usize,
        batch: &mut Batch,
        out: &mut impl Sink<ServerOutput>,
    ) {
        if slot.gone {
            // It ended between the lookup and the lock.
            log::debug!("dropped {msg:?} from {from}: its connection just ended");
            bump(&self.totals.rejected);
            return;
        }
        let id = slot.id;
        slot.bytes_in = slot.bytes_in.saturating_add(len as u64);
        if msg.conn_id != id {
            log::debug!("dropped {msg:?} from {from}: connection {id} is this address's");
            bump(&self.totals.rejected);
            return;
        }
        // Only a peer that receives our datagrams knows the (random) id.
        if slot.challenge.take().is_some() {
            log::debug!("connection {id} at {from} answered the challenge");
        }
        if !slot.validated {
            slot.validated = true;
            self.table.write().unvalidated.remove(&slot.admitted);
        }
        if msg.kind == MsgType::Data {
            if self.config.coalesce_acks {
                let cell = ArcMutexGuard::mutex(slot);
                if !batch.owed.iter().any(|c| Arc::ptr_eq(c, cell)) {
                    batch.owed.push(cell.clone());
                }
            }
            // Other connections may have used the shared budget since.
            slot.set_room(&self.config, self.pool.in_use());
        }
        // What to log if it is rejected (the message itself is consumed).
        let what = (msg.kind, msg.conn_id, msg.seq_num);
        match slot.conn.handle(msg) {
            Ok(()) => {}
            // Flow control, not a fault of the peer's.
            Err(Rejected::Paused) => {}
            Err(why) => {
                log::debug!("dropped {what:?} from {from}: {why}");
                slot.timing.rejected += 1;
                bump(&self.totals.rejected);
            }
        }
        self.after(now, slot, out);
    }

    /// The end of a batch of datagrams: owed acknowledgements go out.
    pub fn end_batch(&self, now: Instant, batch: &mut Batch, out: &mut impl Sink<ServerOutput>) {
        for cell in batch.owed.drain(..) {
            locked(&cell, out, |slot, out| {
                if !slot.gone {
                    slot.conn.flush_acks();
                    self.after(now, slot, out);
                }
            });
        }
    }

    /// An epoch passed: every connection ticks, each under its own lock;
    /// unanswered challenges and slow consumers end.
    pub fn handle_epoch(&self, now: Instant, out: &mut impl Sink<ServerOutput>) {
        self.table.write().on_epoch();
        for (id, cell) in self.snapshot() {
            locked(&cell, out, |slot, out| self.tick(now, id, slot, out));
        }
    }

    /// One epoch of connection `slot`.
    fn tick(&self, now: Instant, id: u32, slot: &mut Slot, out: &mut impl Sink<ServerOutput>) {
        if slot.gone {
            return;
        }
        if let Some(left) = slot.challenge {
            if left <= 1 {
                log::debug!(
                    "connection {id} at {} did not answer a Connect with another isn: ended",
                    slot.addr
                );
                self.end(now, slot, Ending::Lost, out);
                return;
            }
            slot.challenge = Some(left - 1);
        }
        if std::mem::take(&mut slot.held_back) {
            // Its peer could not have acknowledged what never left.
            slot.conn.excuse_stall();
        }
        slot.conn.on_epoch();
        if slot.unwritable
            && slot.conn.phase() == Phase::Open
            && slot.conn.epochs_stalled() >= slot.conn.stall_limit()
        {
            log::debug!(
                "connection {id} at {} ended as a slow consumer: nothing acknowledged in {} epochs",
                slot.addr,
                slot.conn.epochs_stalled()
            );
            bump(&self.totals.slow_consumers);
            self.end(now, slot, Ending::SlowConsumer, out);
            return;
        }
        self.after(now, slot, out);
    }

    /// The application writes `payload` to connection `id`. Never waits:
    /// past the connection's send buffer limit the message is still queued
    /// (the connection is then not writable, see [`is_writable`](Self::is_writable)).
    ///
    /// Fails with [`Error::ConnectionClosed`] once the connection is closing
    /// or closed, [`Error::ConnectionLost`] or [`Error::SlowConsumer`] once
    /// it ended so (while the server remembers it: `epoch_limit` epochs),
    /// [`Error::UnknownConnection`] for an id it does not know, and
    /// [`Error::BudgetExhausted`] when the server's memory budget has no
    /// room for the message.
    pub fn write(
        &self,
        now: Instant,
        id: ConnId,
        payload: &[u8],
        out: &mut impl Sink<ServerOutput>,
    ) -> Result<(), Error> {
        self.write_checked(now, id, payload, false, out)
    }

    /// Like [`write`](Self::write), but fails with [`Error::BufferFull`]
    /// while the connection's send buffer is at its limit.
    pub fn try_write(
        &self,
        now: Instant,
        id: ConnId,
        payload: &[u8],
        out: &mut impl Sink<ServerOutput>,
    ) -> Result<(), Error> {
        self.write_checked(now, id, payload, true, out)
    }

    /// The error a write to connection `id`, not in the table, fails with.
    fn gone_error(&self, id: ConnId) -> Error {
        match self.table.read().ending(id.0) {
            Some(Ending::Lost) => Error::ConnectionLost(id),
            Some(Ending::SlowConsumer) => Error::SlowConsumer(id),
            Some(Ending::Closed) => Error::ConnectionClosed(id),
            None => Error::UnknownConnection(id),
        }
    }

    fn write_checked(
        &self,
        now: Instant,
        id: ConnId,
        payload: &[u8],
        fail_if_full: bool,
        out: &mut impl Sink<ServerOutput>,
    ) -> Result<(), Error> {
        let Some(cell) = self.cell(id) else {
            return Err(self.gone_error(id));
        };
        locked(&cell, out, |slot, out| {
            self.write_locked(now, id, slot, payload, fail_if_full, out)
        })
    }

    fn write_locked(
        &self,
        now: Instant,
        id: ConnId,
        slot: &mut Slot,
        payload: &[u8],
        fail_if_full: bool,
        out: &mut impl Sink<ServerOutput>,
    ) -> Result<(), Error> {
        if slot.gone {
            return Err(self.gone_error(id));
        }
        match slot.conn.phase() {
            Phase::Open => {}
            Phase::Closing | Phase::Drained => return Err(Error::ConnectionClosed(id)),
            Phase::Lost | Phase::Connecting => return Err(Error::ConnectionLost(id)),
        }
        if slot.is_full(&self.config) {
            slot.full = true;
            if fail_if_full {
                return Err(Error::BufferFull);
            }
        }
        let room = slot.memory_room(&self.config, self.pool.in_use());
        if payload.len().saturating_add(MESSAGE_OVERHEAD) > room {
            bump(&self.totals.budget_refusals);
            return Err(Error::BudgetExhausted);
        }
        slot.conn.write(payload.to_vec());
        self.after(now, slot, out);
        Ok(())
    }

    /// The application read `messages` messages of `bytes` bytes in all from
    /// connection `id`: room in its inbox again. Data the connection held
    /// for lack of room is taken and acknowledged now.
    pub fn read_done(
        &self,
        now: Instant,
        id: ConnId,
        messages: usize,
        bytes: usize,
        out: &mut impl Sink<ServerOutput>,
    ) {
        if let Some(cell) = self.cell(id) {
            locked(&cell, out, |slot, out| {
                if !slot.gone {
                    slot.unread.0 = slot.unread.0.saturating_sub(messages);
                    slot.unread.1 = slot.unread.1.saturating_sub(bytes);
                    self.after(now, slot, out);
                }
            });
        }
    }

    /// The application read an event other than a message (they are
    /// charged to the memory budget until read).
    pub fn event_read(&self) {
        self.pool.event_read();
    }

    /// Closes connection `id`: what was written is still delivered, but
    /// nothing more is read from it. [`ServerOutput::Discard`] tells the
    /// driver to drop its messages already handed out, and its last
    /// application event is [`ServerEvent::Closed`], produced now.
    pub fn close_conn(
        &self,
        now: Instant,
        id: ConnId,
        out: &mut impl Sink<ServerOutput>,
    ) -> Result<(), Error> {
        let cell = self.cell(id).ok_or(Error::UnknownConnection(id))?;
        locked(&cell, out, |slot, out| {
            self.close_locked(now, id, slot, out)
        })
    }

    fn close_locked(
        &self,
        now: Instant,
        id: ConnId,
        slot: &mut Slot,
        out: &mut impl Sink<ServerOutput>,
    ) -> Result<(), Error> {
        if slot.gone {
            return Err(Error::UnknownConnection(id));
        }
        if slot.conn.phase() != Phase::Open {
            return Ok(());
        }
        slot.conn.close();
        // Messages held back while it was not writable are not read now.
        let held_bytes: usize = slot.held.iter().map(Vec::len).sum();
        slot.unread.0 = slot.unread.0.saturating_sub(slot.held.len());
        slot.unread.1 = slot.unread.1.saturating_sub(held_bytes);
        slot.held.clear();
        out.output(ServerOutput::Discard { id });
        state_change(now, Some(id), slot.addr, ConnState::Closing, out);
        out.output(ServerOutput::App(ServerEvent::Closed { id }));
        self.after(now, slot, out);
        Ok(())
    }

    /// Starts closing the server: no new connections, every connection
    /// drains, then [`ServerOutput::Drained`].
    pub fn close(&self, now: Instant, out: &mut impl Sink<ServerOutput>) {
        {
            let mut table = self.table.write();
            if table.closing {
                return;
            }
            table.closing = true;
        }
        for (id, cell) in self.snapshot() {
            locked(&cell, out, |slot, out| {
                if slot.gone {
                    return;
                }
                if slot.conn.phase() == Phase::Open {
                    slot.conn.close();
                    state_change(now, Some(ConnId(id)), slot.addr, ConnState::Closing, out);
                }
                self.after(now, slot, out);
            });
        }
        self.check_drained(out);
    }

    /// Gives up closing: discards everything unacknowledged, ends every
    /// connection `Closed`, and returns how many messages were discarded.
    pub fn abort(&self, now: Instant, out: &mut impl Sink<ServerOutput>) -> usize {
        self.table.write().closing = true;
        let mut discarded = 0;
        for (id, cell) in self.snapshot() {
            discarded += locked(&cell, out, |slot, out| {
                if slot.gone {
                    return 0;
                }
                let discarded = slot.conn.abort();
                bump(&self.totals.closed);
                state_change(now, Some(ConnId(id)), slot.addr, ConnState::Closed, out);
                self.remove(slot, None, out);
                discarded
            });
        }
        self.check_drained(out);
        discarded
    }

    // ----- internals -----

    fn on_connect(
        &self,
        now: Instant,
        from: SocketAddr,
        isn: u64,
        len: usize,
        out: &mut impl Sink<ServerOutput>,
    ) {
        if let Some(cell) = self.route(from) {
            let live = locked(&cell, out, |slot, out| {
                if slot.gone {
                    // It ended between the lookup and the lock, and so left
                    // the table.
                    return false;
                }
                self.on_live_connect(now, slot, isn, len, out);
                true
            });
            if live {
                return;
            }
        }
        {
            let table = self.table.read();
            if table.ended.contains_key(&(from, isn)) {
                // A late duplicate of the Connect that opened a connection now
                // ended: admitting it would open a ghost connection.
                bump(&self.totals.duplicate_connects);
                return;
            }
            if table.closing {
                drop(table);
                self.refuse(now, from, out);
                return;
            }
        }
        let mut table = loop {
            // Unvalidated connections are the first to go. (Not for the
            // budget: they hold next to nothing, so evicting them would free
            // nothing.)
            self.evict_for_room(now, out);
            let table = self.table.write();
            if table.by_addr.contains_key(&from) {
                // Another thread admitted this address's Connect meanwhile
                // (a duplicate sent before our Ack came back).
                bump(&self.totals.duplicate_connects);
                return;
            }
            if !table.closing && self.table_full(&table) && !table.unvalidated.is_empty() {
                // Another thread's admission took the room just made: make
                // room again (each pass admits someone, so this ends).
                continue;
            }
            break table;
        };
        if table.closing || !self.admits(&table) {
            if !table.closing
                && self.pool.in_use().saturating_add(2 * EVENT_COST) > self.config.budget
            {
                bump(&self.totals.budget_refusals);
            }
            drop(table);
            self.refuse(now, from, out);
            return;
        }
        let id = table.new_id();
        let mut conn = Conn::server(self.config.params, id, isn);
        conn.set_coalesce_acks(self.config.coalesce_acks);
        let timing = Timing::new(now, conn.next_unsent());
        table.admissions += 1;
        let admitted = table.admissions;
        let cell = Arc::new(Mutex::new(Slot {
            id,
            addr: from,
            conn,
            timing,
            gone: false,
            unread: (0, 0),
            held: VecDeque::new(),
            unwritable: false,
            full: false,
            validated: false,
            bytes_in: len as u64,
            bytes_out: 0,
            challenge: None,
            charged: 0,
            holding: false,
            admitted,
            held_back: false,
        }));
        // Locked before anyone else can find it (so no lock-order question
        // arises), and held until its `Connected` is out: whatever a
        // datagram for it produces comes after.
        let mut slot = cell.lock();
        table.conns.insert(id, cell.clone());
        table.by_addr.insert(from, (id, cell.clone()));
        table.unvalidated.insert(admitted, id);
        drop(table);
        if self.config.charge_events {
            // Its `Connected` and its terminal event, charged now (see `app`).
            self.pool.events_out(2);
        }
        bump(&self.totals.accepted);
        state_change(now, Some(ConnId(id)), from, ConnState::Connected, out);
        out.output(ServerOutput::App(ServerEvent::Connected {
            id: ConnId(id),
            peer: from,
        }));
        self.after(now, &mut slot, out);
        out.release();
    }

    /// A Connect from the address of live connection `slot`.
    fn on_live_connect(
        &self,
        now: Instant,
        slot: &mut Slot,
        isn: u64,
        len: usize,
        out: &mut impl Sink<ServerOutput>,
    ) {
        slot.bytes_in = slot.bytes_in.saturating_add(len as u64);
        if slot.conn.isn() == isn {
            // Our Ack was lost: answer the repeated Connect the same way.
            bump(&self.totals.duplicate_connects);
            let _ = slot.conn.handle(Message::connect(isn));
            self.after(now, slot, out);
            return;
        }
        let (late, closing) = {
            let table = self.table.read();
            (table.ended.contains_key(&(slot.addr, isn)), table.closing)
        };
        if late {
            bump(&self.totals.duplicate_connects);
            return;
        }
        if closing {
            self.refuse(now, slot.addr, out);
            return;
        }
        if slot.challenge.is_none() {
            log::debug!(
                "a Connect with isn {isn} from {}, whose connection {} is live: challenged",
                slot.addr,
                slot.id
            );
            slot.challenge = Some(CHALLENGE_EPOCHS);
            bump(&self.totals.challenged_connects);
        }
    }

    /// Ends the oldest unvalidated connections while the table is full.
    fn evict_for_room(&self, now: Instant, out: &mut impl Sink<ServerOutput>) {
        loop {
            let oldest = {
                let table = self.table.read();
                if !self.table_full(&table) {
                    return;
                }
                table
                    .unvalidated
                    .first_key_value()
                    .and_then(|(_, id)| table.conns.get(id).cloned())
            };
            let Some(cell) = oldest else { return };
            locked(&cell, out, |slot, out| {
                if !slot.gone && !slot.validated {
                    log::debug!("connection {} evicted: never validated", slot.id);
                    bump(&self.totals.evicted_unvalidated);
                    self.end(now, slot, Ending::Lost, out);
                }
            });
        }
    }

    /// Whether the table has no room for a new connection: the connection
    /// limit, or the cap on unvalidated connections.
    fn table_full(&self, table: &Table) -> bool {
        table.conns.len() >= self.config.max_connections
            || table.unvalidated.len() >= self.config.max_unvalidated
    }

    /// Whether a new connection may be admitted now.
    fn admits(&self, table: &Table) -> bool {
        !self.table_full(table)
            && self.pool.in_use().saturating_add(2 * EVENT_COST) <= self.config.budget
    }

    /// Takes `slot` out of the table and every index, releases what it was
    /// charged, and remembers how it ended (`None`: not remembered, the
    /// server is aborting). Its outputs must already be out: a `Drained`
    /// may follow at once.
    fn remove(&self, slot: &mut Slot, ending: Option<Ending>, out: &mut impl Sink<ServerOutput>) {
        slot.gone = true;
        {
            let mut table = self.table.write();
            table.remove(slot.id, slot.addr, slot.admitted);
            if let Some(ending) = ending {
                let epochs = self.config.params.epoch_limit;
                table.retire(slot.id, slot.addr, slot.conn.isn(), ending, epochs);
            }
        }
        self.pool
            .recharge(charged_excess(slot.charged, self.config.floor), 0);
        slot.charged = 0;
        if slot.unwritable {
            slot.unwritable = false;
            self.pool.unwritable.fetch_sub(1, Relaxed);
        }
        if slot.holding {
            slot.holding = false;
            out.output(ServerOutput::Holding {
                id: ConnId(slot.id),
                holding: false,
            });
        }
    }

    /// Ends a live connection at once (challenge unanswered, slow consumer,
    /// evicted): what it delivered is handed out, then its end.
    fn end(
        &self,
        now: Instant,
        slot: &mut Slot,
        ending: Ending,
        out: &mut impl Sink<ServerOutput>,
    ) {
        if slot.gone {
            return;
        }
        let id = slot.id;
        let reading = !slot.conn.closed_by_app();
        slot.conn.abort();
        bump(&self.totals.lost);
        if reading {
            hand_out(id, &mut slot.held, out);
            out.output(ServerOutput::App(ServerEvent::Lost { id: ConnId(id) }));
        }
        state_change(now, Some(ConnId(id)), slot.addr, ConnState::Lost, out);
        self.remove(slot, Some(ending), out);
        self.check_drained(out);
    }

    fn refuse(&self, now: Instant, from: SocketAddr, out: &mut impl Sink<ServerOutput>) {
        bump(&self.totals.refused);
        if self.table.write().first_refusal(from) {
            state_change(now, None, from, ConnState::Refused, out);
        }
    }

    /// After any input to connection `slot`: note its datagrams, hand its
    /// deliveries to the application, act on its events, apply flow control
    /// and the memory budget, send what it has to send.
    fn after(&self, now: Instant, slot: &mut Slot, out: &mut impl Sink<ServerOutput>) {
        let id = slot.id;
        let conn = &mut slot.conn;
        // Stamp first transmissions before they leave: an ack that comes
        // back during a burst must not yield a round trip shorter than real.
        slot.timing.update(
            now,
            conn.next_unsent(),
            conn.oldest_unacked(),
            std::iter::from_fn(|| conn.poll_first_acked()),
        );
        loop {
            while let Some(payload) = slot.conn.poll_delivered() {
                slot.unread.0 += 1;
                slot.unread.1 += payload.len();
                if slot.unwritable || !slot.held.is_empty() {
                    slot.held.push_back(payload);
                } else {
                    out.output(ServerOutput::App(ServerEvent::Message {
                        id: ConnId(id),
                        payload,
                    }));
                }
            }
            // Writability, with hysteresis: off at the limit, on at half.
            let (messages, bytes) = slot.conn.send_buffered();
            let limit = self.config.send_buffer;
            if !slot.unwritable && limit.reached(messages, bytes) {
                slot.unwritable = true;
                self.pool.unwritable.fetch_add(1, Relaxed);
            } else if slot.unwritable && messages <= limit.messages / 2 && bytes <= limit.bytes / 2
            {
                slot.unwritable = false;
                self.pool.unwritable.fetch_sub(1, Relaxed);
                hand_out(id, &mut slot.held, out);
                if slot.conn.phase() == Phase::Open {
                    if self.config.charge_events {
                        self.pool.events_out(1);
                    }
                    out.output(ServerOutput::App(ServerEvent::Writable { id: ConnId(id) }));
                }
            }
            if slot.full && !slot.is_full(&self.config) {
                slot.full = false;
                out.output(ServerOutput::Room { id: ConnId(id) });
            }
            // Charge what it holds now.
            let charged = slot.charge();
            self.pool.recharge(
                charged_excess(slot.charged, self.config.floor),
                charged_excess(charged, self.config.floor),
            );
            slot.charged = charged;
            slot.set_room(&self.config, self.pool.in_use());
            let holding = slot.conn.held().0 > 0;
            if holding != slot.holding {
                slot.holding = holding;
                out.output(ServerOutput::Holding {
                    id: ConnId(id),
                    holding,
                });
            }
            if !slot.conn.has_delivered() {
                break;
            }
        }
        self.transmit(slot, out);
        let mut ending = None;
        while let Some(event) = slot.conn.poll_event() {
            match event {
                Event::Lost => {
                    bump(&self.totals.lost);
                    if slot.conn.orphans() > 0 && self.table.read().closing {
                        self.table.write().lost_during_close.push(ConnId(id));
                    }
                    slot.conn.take_orphans();
                    ending = Some(ConnState::Lost);
                }
                Event::Drained => {
                    bump(&self.totals.closed);
                    ending = Some(ConnState::Closed);
                }
                Event::Connected => {}
            }
        }
        let Some(state) = ending else { return };
        // Its end is announced first, then it leaves the table: whoever
        // sees `Drained` has seen every connection's end.
        if !slot.conn.closed_by_app() {
            hand_out(id, &mut slot.held, out);
            if state == ConnState::Lost {
                out.output(ServerOutput::App(ServerEvent::Lost { id: ConnId(id) }));
            }
        }
        state_change(now, Some(ConnId(id)), slot.addr, state, out);
        let how = if state == ConnState::Lost {
            Ending::Lost
        } else {
            Ending::Closed
        };
        self.remove(slot, Some(how), out);
        self.check_drained(out);
    }

    /// Hands connection `slot`'s datagrams to `out`, but none while it is
    /// challenged, and to an unvalidated address only up to the 3x limit.
    fn transmit(&self, slot: &mut Slot, out: &mut impl Sink<ServerOutput>) {
        if !slot.conn.has_transmit() {
            return;
        }
        if slot.challenge.is_some() {
            // Challenged: nothing for this connection goes to its
            // address, which may now belong to a restarted client.
            while slot.conn.poll_transmit().is_some() {}
            slot.held_back = true;
            return;
        }
        let to = slot.addr;
        if slot.validated {
            while let Some(msg) = slot.conn.poll_transmit() {
                out.transmit(to, &msg);
            }
            return;
        }
        let budget = slot.bytes_in.saturating_mul(AMPLIFICATION_FACTOR);
        while let Some(msg) = slot.conn.poll_transmit() {
            let len = msg.encoded_len() as u64;
            if slot.bytes_out.saturating_add(len) <= budget {
                out.transmit(to, &msg);
                slot.bytes_out += len;
            } else {
                // The protocol sends it again; by then the peer may have
                // proven its address, or sent more.
                self.totals.amplification_held_bytes.fetch_add(len, Relaxed);
                slot.held_back = true;
            }
        }
    }

    fn check_drained(&self, out: &mut impl Sink<ServerOutput>) {
        let drained = {
            let mut table = self.table.write();
            let now_drained = table.closing && table.conns.is_empty() && !table.drained;
            table.drained |= now_drained;
            now_drained
        };
        if drained {
            out.output(ServerOutput::Drained);
        }
    }
}

/// A connection's slot, locked, as a batch holds it across datagrams.
type Held = ArcMutexGuard<RawMutex, Slot>;

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
fn release(held: &mut Option<(SocketAddr, Held)>, out: &mut impl Sink<ServerOutput>) {
    if let Some((_, slot)) = held.take() {
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

/// Hands messages held back from connection `id` to the application.
fn hand_out(id: u32, held: &mut VecDeque<Vec<u8>>, out: &mut impl Sink<ServerOutput>) {
    for payload in held.drain(..) {
        out.output(ServerOutput::App(ServerEvent::Message {
            id: ConnId(id),
            payload,
        }));
    }
}

fn charged_excess(charged: usize, floor: usize) -> usize {
    charged.saturating_sub(floor)
}

/// Logs a datagram that was not a message, at debug level, with its start.
pub(crate) fn log_malformed(from: SocketAddr, err: DecodeError, datagram: &[u8]) {
    if log::log_enabled!(log::Level::Debug) {
        let shown = &datagram[..datagram.len().min(80)];
        log::debug!(
            "dropped a malformed datagram from {from} ({err}): {:?}",
            String::from_utf8_lossy(shown)
        );
    }
}
