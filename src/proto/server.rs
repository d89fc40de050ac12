//! The server core: the connection table, routing, admission, refusals,
//! closing and flow control, without I/O.
//!
//! [`ServerCore`] owns every connection's [`Conn`] and decides everything a
//! server decides: which connection a datagram belongs to (by address), what
//! a repeated or a new-incarnation Connect does, when the connection limit
//! refuses one, when an ended connection leaves the table, when a close has
//! drained. Inputs carry the time they happened; outputs are pulled with
//! [`poll_transmit`](ServerCore::poll_transmit) and
//! [`poll_output`](ServerCore::poll_output). A driver calls both until they
//! return `None` after every input.
//!
//! # Examples
//!
//! ```
//! use std::time::Instant;
//! use liveseq::proto::{Message, ServerConfig, ServerCore, ServerOutput};
//! use liveseq::{ConnState, Params, ServerEvent};
//!
//! let now = Instant::now();
//! let client: std::net::SocketAddr = "127.0.0.1:4000".parse().unwrap();
//! let mut core = ServerCore::new(ServerConfig::new(Params::default()));
//! core.handle(now, client, &encode(&Message::connect(7)));
//! let (to, ack) = core.poll_transmit().map(|(to, m)| (to, m.into_owned())).unwrap();
//! // The id is random: the Ack carries it, and the Connect's ISN.
//! let id = ack.conn_id;
//! assert!(id >= 1);
//! assert_eq!((to, ack), (client, Message::ack(id, 7)));
//! assert!(matches!(core.poll_output(), Some(ServerOutput::State { state: ConnState::Connected, .. })));
//! assert!(matches!(core.poll_output(), Some(ServerOutput::App(ServerEvent::Connected { .. }))));
//!
//! fn encode(m: &Message<'_>) -> Vec<u8> {
//!     let mut buf = Vec::new();
//!     m.encode(&mut buf);
//!     buf
//! }
//! ```

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::conn::{Conn, Event, Phase, Rejected, Room, MAX_ISN, MESSAGE_OVERHEAD};
use super::message::{max_payload, DecodeError, Message, MsgType, DEFAULT_MAX_DATAGRAM};
use super::ConnId;
use crate::stats::{ConnStats, ServerStats, Timing};
use crate::{ConnState, Error, Params, ServerEvent};

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

/// Maps keyed by connection id. The server draws the ids itself, at
/// random, so no peer chooses the keys: a multiplicative hash is enough,
/// and far cheaper than the default SipHash on every datagram's lookups.
type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

/// Fibonacci hashing of a `u32` connection id (see [`IdMap`]).
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.0 = u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// How a connection ended, remembered for `epoch_limit` epochs so that a
/// write to it says why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    Lost,
    SlowConsumer,
    Closed,
}

/// One connection in the table.
#[derive(Debug)]
struct Slot {
    addr: SocketAddr,
    conn: Conn,
    timing: Timing,
    /// Delivered and not yet read (flow control), the messages in `held` included.
    unread: (usize, usize),
    /// Delivered while the connection was not writable: handed to the
    /// application once it is (Netty's auto-read, off).
    held: VecDeque<Vec<u8>>,
    /// Its send buffer passed its limit and has not yet drained to half.
    unwritable: bool,
    /// The peer sent a message carrying the connection's id: it receives
    /// what the server sends to its address.
    validated: bool,
    /// Bytes received from and sent to the address while not validated.
    bytes_in: u64,
    bytes_out: u64,
    /// Epochs left to answer a challenge (a Connect with another ISN).
    challenge: Option<u32>,
    /// Memory charged to the connection now.
    charged: usize,
    /// The connection holds Data it could not take ([`ServerOutput::Holding`]).
    holding: bool,
    /// Admission order, for evicting the oldest unvalidated connection.
    admitted: u64,
    /// Datagrams of this connection were held back since the last epoch (the
    /// 3x limit, a challenge): that epoch does not count toward its stall.
    held_back: bool,
}

/// Totals kept by the core.
#[derive(Debug, Default)]
struct Totals {
    accepted: u64,
    refused: u64,
    lost: u64,
    closed: u64,
    duplicate_connects: u64,
    malformed: u64,
    rejected: u64,
    slow_consumers: u64,
    challenged_connects: u64,
    amplification_held_bytes: u64,
    budget_refusals: u64,
    evicted_unvalidated: u64,
}

/// The I/O-free server: the connection table, routing, admission,
/// refusals, closing and flow control of an LSP server.
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
///   Connects are refused.
#[derive(Debug)]
pub struct ServerCore {
    config: ServerConfig,
    conns: IdMap<Slot>,
    by_addr: HashMap<SocketAddr, u32>,
    /// Recently ended connections by address and ISN: epochs left to
    /// remember them.
    ended: HashMap<(SocketAddr, u64), u32>,
    /// Recently ended connection ids: how they ended and epochs left.
    retired: IdMap<(Ending, u32)>,
    ids: Option<StdRng>,
    next_id: u32,
    closing: bool,
    refused_this_epoch: HashSet<SocketAddr>,
    /// Unvalidated connections by admission order.
    unvalidated: BTreeMap<u64, u32>,
    admissions: u64,
    /// Memory charged beyond the connections' floors.
    pool_used: usize,
    /// Application events handed out and not yet read (messages aside).
    events_unread: usize,
    unwritable: usize,
    /// Connections that may have datagrams to send.
    ready: VecDeque<u32>,
    /// Connections that received Data in this batch and may owe an ack.
    batch: Vec<u32>,
    /// Datagrams of connections that have already left the table.
    orphaned: VecDeque<(SocketAddr, Message<'static>)>,
    outputs: VecDeque<ServerOutput>,
    lost_during_close: Vec<ConnId>,
    /// [`ServerOutput::Drained`] was produced.
    drained: bool,
    totals: Totals,
    /// Reused to measure datagrams to unvalidated addresses.
    scratch: Vec<u8>,
}

/// At most this many refused addresses are remembered per epoch (each gets
/// one `Refused` output per epoch); beyond it a flood costs no memory and
/// further refusals are only counted.
const MAX_REFUSED_TRACKED: usize = 4096;

/// At most this many ended connections are remembered for late duplicate
/// Connects; beyond it, connections that end are not remembered until older
/// ones have been forgotten (each after `epoch_limit` epochs).
const MAX_ENDED_TRACKED: usize = 65536;

impl ServerCore {
    /// An empty server.
    pub fn new(config: ServerConfig) -> ServerCore {
        ServerCore {
            config,
            conns: IdMap::default(),
            by_addr: HashMap::new(),
            ended: HashMap::new(),
            retired: IdMap::default(),
            ids: config.id_seed.map(StdRng::seed_from_u64),
            next_id: 0,
            closing: false,
            refused_this_epoch: HashSet::new(),
            unvalidated: BTreeMap::new(),
            admissions: 0,
            pool_used: 0,
            events_unread: 0,
            unwritable: 0,
            ready: VecDeque::new(),
            batch: Vec::new(),
            orphaned: VecDeque::new(),
            outputs: VecDeque::new(),
            lost_during_close: Vec::new(),
            drained: false,
            totals: Totals::default(),
            scratch: Vec::new(),
        }
    }

    // ----- getters -----

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The state of connection `id`, or `None` once it has left the table.
    pub fn state(&self, id: ConnId) -> Option<ConnState> {
        self.conns.get(&id.0).map(|s| state_of(&s.conn))
    }

    /// The address of connection `id`.
    pub fn peer_addr(&self, id: ConnId) -> Option<SocketAddr> {
        self.conns.get(&id.0).map(|s| s.addr)
    }

    /// Every connection in the table (closing ones included), ascending.
    pub fn connections(&self) -> Vec<ConnId> {
        let mut ids: Vec<ConnId> = self.conns.keys().map(|&id| ConnId(id)).collect();
        ids.sort();
        ids
    }

    /// The connections that accept writes (connected, not closing), ascending.
    pub fn writable(&self) -> Vec<ConnId> {
        let mut ids: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, s)| s.conn.phase() == Phase::Open)
            .map(|(&id, _)| ConnId(id))
            .collect();
        ids.sort();
        ids
    }

    /// Whether connection `id` is open and its send buffer has room: its
    /// writes are being sent and its incoming messages reach the
    /// application. `false` for an unknown or closing connection.
    pub fn is_writable(&self, id: ConnId) -> bool {
        self.conns
            .get(&id.0)
            .is_some_and(|s| s.conn.phase() == Phase::Open && !s.unwritable)
    }

    /// Whether connection `id` has proven that it receives what the server
    /// sends (see the type's docs).
    pub fn is_validated(&self, id: ConnId) -> bool {
        self.conns.get(&id.0).is_some_and(|s| s.validated)
    }

    /// Whether datagrams of connection `id` were held back since the last
    /// epoch (the 3x limit, a challenge): its next epoch does not count
    /// toward its stall limit (see [`Conn::excuse_stall`]).
    pub fn held_back_this_epoch(&self, id: ConnId) -> bool {
        self.conns.get(&id.0).is_some_and(|s| s.held_back)
    }

    /// Connection `id`'s state machine, for tests and tools.
    pub fn conn(&self, id: ConnId) -> Option<&Conn> {
        self.conns.get(&id.0).map(|s| &s.conn)
    }

    /// The connection at `addr`, if any.
    pub fn conn_at(&self, addr: SocketAddr) -> Option<ConnId> {
        self.by_addr.get(&addr).map(|&id| ConnId(id))
    }

    /// A statistics snapshot of connection `id`.
    pub fn stats(&self, now: Instant, id: ConnId) -> Option<ConnStats> {
        let s = self.conns.get(&id.0)?;
        Some(s.timing.snapshot(now, &s.conn))
    }

    /// Server-wide totals.
    pub fn totals(&self) -> ServerStats {
        let t = &self.totals;
        ServerStats {
            active: self.conns.len(),
            accepted: t.accepted,
            refused: t.refused,
            lost: t.lost,
            closed: t.closed,
            duplicate_connects: t.duplicate_connects,
            malformed: t.malformed,
            rejected: t.rejected,
            budget: self.config.budget,
            budget_in_use: self.pool_in_use(),
            memory_in_use: self.conns.values().map(|s| s.charged).sum::<usize>()
                + self.events_unread * EVENT_COST,
            not_writable: self.unwritable,
            slow_consumers: t.slow_consumers,
            unvalidated: self.unvalidated.len(),
            evicted_unvalidated: t.evicted_unvalidated,
            challenged_connects: t.challenged_connects,
            amplification_held_bytes: t.amplification_held_bytes,
            budget_refusals: t.budget_refusals,
        }
    }

    /// Whether connection `id`'s send buffer is at its limit (a
    /// [`try_write`](Self::try_write) would fail with [`Error::BufferFull`]).
    pub fn is_full(&self, id: ConnId) -> bool {
        self.conns.get(&id.0).is_some_and(|s| {
            self.config
                .send_buffer
                .reached(s.conn.unacked() + s.conn.queued(), s.conn.buffered_bytes())
        })
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Connections lost while closing with messages unacknowledged.
    pub fn lost_during_close(&self) -> &[ConnId] {
        &self.lost_during_close
    }

    // ----- inputs -----

    /// A datagram arrived from `from`. Malformed ones are counted and dropped.
    pub fn handle(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        match Message::decode(datagram) {
            Ok(msg) => self.handle_sized(now, from, msg, datagram.len()),
            Err(err) => {
                log_malformed(from, err, datagram);
                self.totals.malformed += 1;
                if let Some(slot) = self
                    .by_addr
                    .get(&from)
                    .and_then(|id| self.conns.get_mut(id))
                {
                    slot.timing.malformed += 1;
                    slot.bytes_in = slot.bytes_in.saturating_add(datagram.len() as u64);
                }
            }
        }
    }

    /// A decoded message arrived from `from` (as if in a datagram of its
    /// encoded size).
    pub fn handle_message(&mut self, now: Instant, from: SocketAddr, msg: Message<'_>) {
        self.scratch.clear();
        msg.encode(&mut self.scratch);
        let len = self.scratch.len();
        self.handle_sized(now, from, msg, len);
    }

    fn handle_sized(&mut self, now: Instant, from: SocketAddr, msg: Message<'_>, len: usize) {
        if msg.kind == MsgType::Connect {
            if msg.seq_num > MAX_ISN {
                log::debug!(
                    "dropped a Connect from {from}: isn {} above MAX_ISN",
                    msg.seq_num
                );
                self.totals.rejected += 1;
                return;
            }
            self.on_connect(now, from, msg.seq_num, len);
            return;
        }
        let Some(&id) = self.by_addr.get(&from) else {
            log::debug!("dropped {msg:?} from {from}: no connection from this address");
            self.totals.rejected += 1;
            return;
        };
        let Some(slot) = self.conns.get_mut(&id) else {
            return;
        };
        slot.bytes_in = slot.bytes_in.saturating_add(len as u64);
        if msg.conn_id != id {
            log::debug!("dropped {msg:?} from {from}: connection {id} is this address's");
            self.totals.rejected += 1;
            return;
        }
        // Only a peer that receives our datagrams knows the (random) id.
        if slot.challenge.take().is_some() {
            log::debug!("connection {id} at {from} answered the challenge");
        }
        if !slot.validated {
            slot.validated = true;
            self.unvalidated.remove(&slot.admitted);
        }

        if msg.kind == MsgType::Data {
            if self.config.coalesce_acks && !self.batch.contains(&id) {
                self.batch.push(id);
            }
            self.refresh_room(id);
        }
        let Some(slot) = self.conns.get_mut(&id) else {
            return;
        };
        // What to log if it is rejected (the message itself is consumed).
        let what = (msg.kind, msg.conn_id, msg.seq_num);
        match slot.conn.handle(msg) {
            Ok(()) => {}
            // Flow control, not a fault of the peer's.
            Err(Rejected::Paused) => {}
            Err(why) => {
                log::debug!("dropped {what:?} from {from}: {why}");
                slot.timing.rejected += 1;
                self.totals.rejected += 1;
            }
        }
        self.after(now, id);
    }

    /// The end of a batch of datagrams: owed acknowledgements go out.
    pub fn end_batch(&mut self, now: Instant) {
        for id in std::mem::take(&mut self.batch) {
            if let Some(slot) = self.conns.get_mut(&id) {
                slot.conn.flush_acks();
                self.after(now, id);
            }
        }
    }

    /// An epoch passed: every connection ticks; unanswered challenges and
    /// slow consumers end.
    pub fn handle_epoch(&mut self, now: Instant) {
        self.refused_this_epoch.clear();
        fn forget(left: &mut u32) -> bool {
            *left = left.saturating_sub(1);
            *left > 0
        }
        self.ended.retain(|_, left| forget(left));
        self.retired.retain(|_, (_, left)| forget(left));
        let mut ids: Vec<u32> = self.conns.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let Some(slot) = self.conns.get_mut(&id) else {
                continue;
            };
            if let Some(left) = slot.challenge {
                if left <= 1 {
                    log::debug!(
                        "connection {id} at {} did not answer a Connect with another isn: ended",
                        slot.addr
                    );
                    self.end(now, id, Ending::Lost);
                    continue;
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
                self.totals.slow_consumers += 1;
                self.end(now, id, Ending::SlowConsumer);
                continue;
            }
            self.after(now, id);
        }
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
    pub fn write(&mut self, now: Instant, id: ConnId, payload: &[u8]) -> Result<(), Error> {
        self.write_checked(now, id, payload, false)
    }

    /// Like [`write`](Self::write), but fails with [`Error::BufferFull`]
    /// while the connection's send buffer is at its limit.
    pub fn try_write(&mut self, now: Instant, id: ConnId, payload: &[u8]) -> Result<(), Error> {
        self.write_checked(now, id, payload, true)
    }

    fn write_checked(
        &mut self,
        now: Instant,
        id: ConnId,
        payload: &[u8],
        fail_if_full: bool,
    ) -> Result<(), Error> {
        let full = self.is_full(id);
        let room = self.conns.get(&id.0).map(|s| self.memory_room(s));
        let Some(slot) = self.conns.get_mut(&id.0) else {
            return Err(match self.retired.get(&id.0) {
                Some((Ending::Lost, _)) => Error::ConnectionLost(id),
                Some((Ending::SlowConsumer, _)) => Error::SlowConsumer(id),
                Some((Ending::Closed, _)) => Error::ConnectionClosed(id),
                None => Error::UnknownConnection(id),
            });
        };
        match slot.conn.phase() {
            Phase::Open => {}
            Phase::Closing | Phase::Drained => return Err(Error::ConnectionClosed(id)),
            Phase::Lost | Phase::Connecting => return Err(Error::ConnectionLost(id)),
        }
        if full && fail_if_full {
            return Err(Error::BufferFull);
        }
        if room.is_some_and(|room| payload.len().saturating_add(MESSAGE_OVERHEAD) > room) {
            self.totals.budget_refusals += 1;
            return Err(Error::BudgetExhausted);
        }
        slot.conn.write(payload.to_vec());
        self.after(now, id.0);
        Ok(())
    }

    /// The application read `messages` messages of `bytes` bytes in all from
    /// connection `id`: room in its inbox again. Data the connection held
    /// for lack of room is taken and acknowledged now.
    pub fn read_done(&mut self, now: Instant, id: ConnId, messages: usize, bytes: usize) {
        if let Some(slot) = self.conns.get_mut(&id.0) {
            slot.unread.0 = slot.unread.0.saturating_sub(messages);
            slot.unread.1 = slot.unread.1.saturating_sub(bytes);
            self.after(now, id.0);
        }
    }

    /// The application read an event other than a message (they are
    /// charged to the memory budget until read).
    pub fn event_read(&mut self) {
        self.events_unread = self.events_unread.saturating_sub(1);
    }

    /// Closes connection `id`: what was written is still delivered, but
    /// nothing more is read from it. Its messages not yet polled are
    /// dropped, [`ServerOutput::Discard`] tells the driver to drop those it
    /// already took, and its last application event is
    /// [`ServerEvent::Closed`], produced now.
    pub fn close_conn(&mut self, now: Instant, id: ConnId) -> Result<(), Error> {
        let slot = self
            .conns
            .get_mut(&id.0)
            .ok_or(Error::UnknownConnection(id))?;
        if slot.conn.phase() != Phase::Open {
            return Ok(());
        }
        slot.conn.close();
        // Messages held back while it was not writable are not read now.
        slot.unread.0 = slot.unread.0.saturating_sub(slot.held.len());
        slot.unread.1 = slot
            .unread
            .1
            .saturating_sub(slot.held.iter().map(Vec::len).sum());
        slot.held.clear();
        // So are its messages handed out but not yet polled.
        let (mut messages, mut bytes) = (0, 0);
        self.outputs.retain(|output| match output {
            ServerOutput::App(ServerEvent::Message { id: of, payload }) if *of == id => {
                messages += 1;
                bytes += payload.len();
                false
            }
            _ => true,
        });
        slot.unread.0 = slot.unread.0.saturating_sub(messages);
        slot.unread.1 = slot.unread.1.saturating_sub(bytes);
        let peer = slot.addr;
        self.outputs.push_back(ServerOutput::Discard { id });
        self.state_change(now, Some(id), peer, ConnState::Closing);
        self.app(ServerEvent::Closed { id });
        self.after(now, id.0);
        Ok(())
    }

    /// Starts closing the server: no new connections, every connection
    /// drains, then [`ServerOutput::Drained`].
    pub fn close(&mut self, now: Instant) {
        if self.closing {
            return;
        }
        self.closing = true;
        let mut ids: Vec<u32> = self.conns.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(slot) = self.conns.get_mut(&id) {
                if slot.conn.phase() == Phase::Open {
                    slot.conn.close();
                    let peer = slot.addr;
                    self.state_change(now, Some(ConnId(id)), peer, ConnState::Closing);
                }
                self.after(now, id);
            }
        }
        self.check_drained();
    }

    /// Gives up closing: discards everything unacknowledged, ends every
    /// connection `Closed`, and returns how many messages were discarded.
    pub fn abort(&mut self, now: Instant) -> usize {
        self.closing = true;
        let mut ids: Vec<u32> = self.conns.keys().copied().collect();
        ids.sort_unstable();
        let mut discarded = 0;
        for id in ids {
            if let Some(mut slot) = self.remove(id) {
                discarded += slot.conn.abort();
                self.totals.closed += 1;
                self.state_change(now, Some(ConnId(id)), slot.addr, ConnState::Closed);
            }
        }
        self.check_drained();
        discarded
    }

    // ----- outputs -----

    /// The next datagram to send and where.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Message<'_>)> {
        if let Some((to, msg)) = self.orphaned.pop_front() {
            return Some((to, msg));
        }
        let id = loop {
            let &id = self.ready.front()?;
            let Some(slot) = self.conns.get_mut(&id) else {
                self.ready.pop_front();
                continue;
            };
            if !slot.conn.has_transmit() {
                self.ready.pop_front();
                continue;
            }
            if slot.challenge.is_some() {
                // Challenged: nothing for this connection goes to its
                // address, which may now belong to a restarted client.
                while slot.conn.poll_transmit().is_some() {}
                slot.held_back = true;
                self.ready.pop_front();
                continue;
            }
            if slot.validated {
                break id;
            }
            let Some(msg) = slot.conn.poll_transmit().map(Message::into_owned) else {
                continue;
            };
            self.scratch.clear();
            msg.encode(&mut self.scratch);
            let len = self.scratch.len() as u64;
            if slot.bytes_out.saturating_add(len)
                <= slot.bytes_in.saturating_mul(AMPLIFICATION_FACTOR)
            {
                slot.bytes_out += len;
                return Some((slot.addr, msg));
            }
            // The protocol sends it again; by then the peer may have proven
            // its address, or sent more.
            self.totals.amplification_held_bytes += len;
            slot.held_back = true;
        };
        let slot = self.conns.get_mut(&id)?;
        let to = slot.addr;
        slot.conn.poll_transmit().map(|msg| (to, msg))
    }

    /// The next output for the application side.
    pub fn poll_output(&mut self) -> Option<ServerOutput> {
        self.outputs.pop_front()
    }

    // ----- internals -----

    fn on_connect(&mut self, now: Instant, from: SocketAddr, isn: u64, len: usize) {
        let live = self.by_addr.get(&from).copied();
        if let Some(id) = live {
            if let Some(slot) = self.conns.get_mut(&id) {
                slot.bytes_in = slot.bytes_in.saturating_add(len as u64);
                if slot.conn.isn() == isn {
                    // Our Ack was lost: answer the repeated Connect the same way.
                    self.totals.duplicate_connects += 1;
                    let _ = slot.conn.handle(Message::connect(isn));
                    self.after(now, id);
                    return;
                }
            }
        }
        if self.ended.contains_key(&(from, isn)) {
            // A late duplicate of the Connect that opened a connection now
            // ended: admitting it would open a ghost connection.
            self.totals.duplicate_connects += 1;
            return;
        }
        if self.closing {
            self.refuse(now, from);
            return;
        }
        if let Some(slot) = live.and_then(|id| self.conns.get_mut(&id)) {
            if slot.challenge.is_none() {
                log::debug!(
                    "a Connect with isn {isn} from {from}, whose connection {} is live: challenged",
                    slot.conn.conn_id()
                );
                slot.challenge = Some(CHALLENGE_EPOCHS);
                self.totals.challenged_connects += 1;
            }
            return;
        }
        // Unvalidated connections are the first to go. (Not for the budget:
        // they hold next to nothing, so evicting them would free nothing.)
        while self.table_full() {
            let Some((_, oldest)) = self.unvalidated.pop_first() else {
                break;
            };
            log::debug!("connection {oldest} evicted: never validated");
            self.totals.evicted_unvalidated += 1;
            self.end(now, oldest, Ending::Lost);
        }
        if !self.admits() {
            if self.pool_in_use().saturating_add(2 * EVENT_COST) > self.config.budget {
                self.totals.budget_refusals += 1;
            }
            self.refuse(now, from);
            return;
        }
        let id = self.new_id();
        let mut conn = Conn::server(self.config.params, id, isn);
        conn.set_coalesce_acks(self.config.coalesce_acks);
        let timing = Timing::new(now, conn.next_unsent());
        self.admissions += 1;
        self.conns.insert(
            id,
            Slot {
                addr: from,
                conn,
                timing,
                unread: (0, 0),
                held: VecDeque::new(),
                unwritable: false,
                validated: false,
                bytes_in: len as u64,
                bytes_out: 0,
                challenge: None,
                charged: 0,
                holding: false,
                admitted: self.admissions,
                held_back: false,
            },
        );
        self.unvalidated.insert(self.admissions, id);
        self.by_addr.insert(from, id);
        if self.config.charge_events {
            // Its `Connected` and its terminal event, charged now (see `app`).
            self.events_unread += 2;
        }
        self.totals.accepted += 1;
        self.state_change(now, Some(ConnId(id)), from, ConnState::Connected);
        self.app(ServerEvent::Connected {
            id: ConnId(id),
            peer: from,
        });
        self.after(now, id);
    }

    /// Whether the table has no room for a new connection: the connection
    /// limit, or the cap on unvalidated connections.
    fn table_full(&self) -> bool {
        self.conns.len() >= self.config.max_connections
            || self.unvalidated.len() >= self.config.max_unvalidated
    }

    /// Whether a new connection may be admitted now.
    fn admits(&self) -> bool {
        !self.table_full()
            && self.pool_in_use().saturating_add(2 * EVENT_COST) <= self.config.budget
    }

    /// A connection id not in use and not remembered.
    fn new_id(&mut self) -> u32 {
        loop {
            let id = match &mut self.ids {
                Some(rng) => rng.gen_range(1..=MAX_CONN_ID),
                None => {
                    self.next_id = self.next_id.wrapping_add(1).max(1);
                    self.next_id
                }
            };
            if !self.conns.contains_key(&id) && !self.retired.contains_key(&id) {
                return id;
            }
        }
    }

    /// Takes connection `id` out of the table and every index.
    fn remove(&mut self, id: u32) -> Option<Slot> {
        let slot = self.conns.remove(&id)?;
        self.by_addr.remove(&slot.addr);
        self.unvalidated.remove(&slot.admitted);
        self.pool_used -= self.excess(slot.charged);
        if slot.unwritable {
            self.unwritable -= 1;
        }
        if slot.holding {
            self.outputs.push_back(ServerOutput::Holding {
                id: ConnId(id),
                holding: false,
            });
        }
        Some(slot)
    }

    /// Ends a live connection at once (challenge unanswered, slow consumer,
    /// evicted): what it delivered is handed out, then its end.
    fn end(&mut self, now: Instant, id: u32, ending: Ending) {
        let Some(mut slot) = self.remove(id) else {
            return;
        };
        self.retire(id, &slot, ending);
        let reading = !slot.conn.closed_by_app();
        slot.conn.abort();
        self.totals.lost += 1;
        if reading {
            self.hand_out(id, &mut slot.held);
            self.app(ServerEvent::Lost { id: ConnId(id) });
        }
        self.state_change(now, Some(ConnId(id)), slot.addr, ConnState::Lost);
        self.check_drained();
    }

    /// Remembers an ended connection for `epoch_limit` epochs: its Connect,
    /// so that late duplicates are recognised, and its id, so that it is
    /// not handed out again and writes to it say how it ended.
    fn retire(&mut self, id: u32, slot: &Slot, ending: Ending) {
        if self.ended.len() < MAX_ENDED_TRACKED {
            let epochs = self.config.params.epoch_limit;
            self.ended.insert((slot.addr, slot.conn.isn()), epochs);
            self.retired.insert(id, (ending, epochs));
        }
    }

    fn refuse(&mut self, now: Instant, from: SocketAddr) {
        self.totals.refused += 1;
        let first_this_epoch = self.refused_this_epoch.len() < MAX_REFUSED_TRACKED
            && self.refused_this_epoch.insert(from);
        if first_this_epoch {
            self.state_change(now, None, from, ConnState::Refused);
        }
    }

    fn state_change(
        &mut self,
        now: Instant,
        conn_id: Option<ConnId>,
        peer: SocketAddr,
        state: ConnState,
    ) {
        self.outputs.push_back(ServerOutput::State {
            conn_id,
            peer,
            state,
            at: now,
        });
    }

    /// Hands messages held back from connection `id` to the application.
    fn hand_out(&mut self, id: u32, held: &mut VecDeque<Vec<u8>>) {
        self.outputs.extend(held.drain(..).map(|payload| {
            ServerOutput::App(ServerEvent::Message {
                id: ConnId(id),
                payload,
            })
        }));
    }

    /// Queues a connection's `Connected` or terminal event. Both were
    /// charged to the budget when it was admitted, so that no connection's
    /// end can push the budget over.
    fn app(&mut self, event: ServerEvent) {
        self.outputs.push_back(ServerOutput::App(event));
    }

    /// Memory beyond the floor, drawn from the shared budget.
    fn excess(&self, charged: usize) -> usize {
        charged.saturating_sub(self.config.floor)
    }

    /// The shared budget in use: connections beyond their floors, and
    /// unread events.
    fn pool_in_use(&self) -> usize {
        self.pool_used
            .saturating_add(self.events_unread.saturating_mul(EVENT_COST))
    }

    /// How much more memory `slot` may take: the rest of its floor, then
    /// the shared budget (only its first half for a connection over its
    /// own limits, so that those cannot starve the others).
    fn memory_room(&self, slot: &Slot) -> usize {
        memory_room(&self.config, self.pool_in_use(), slot)
    }

    /// Tells connection `id` how much it may take now: its inbox (the
    /// reorder buffer counts against it) and memory; past that, a window's
    /// worth is held unacknowledged so that the next read takes it at once.
    /// Done before each Data message too, since other connections may have
    /// used the shared budget since this one's last input.
    fn refresh_room(&mut self, id: u32) {
        let pool = self.pool_in_use();
        if let Some(slot) = self.conns.get_mut(&id) {
            set_room(&self.config, pool, slot);
        }
    }

    /// After any input to connection `id`: note its datagrams, hand its
    /// deliveries to the application, act on its events, apply flow control
    /// and the memory budget.
    fn after(&mut self, now: Instant, id: u32) {
        let Some(slot) = self.conns.get_mut(&id) else {
            return;
        };
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
            let Some(slot) = self.conns.get_mut(&id) else {
                return;
            };
            while let Some(payload) = slot.conn.poll_delivered() {
                slot.unread.0 += 1;
                slot.unread.1 += payload.len();
                if slot.unwritable || !slot.held.is_empty() {
                    slot.held.push_back(payload);
                } else {
                    self.outputs
                        .push_back(ServerOutput::App(ServerEvent::Message {
                            id: ConnId(id),
                            payload,
                        }));
                }
            }
            // Writability, with hysteresis: off at the limit, on at half.
            let (messages, bytes) = slot.conn.send_buffered();
            let limit = self.config.send_buffer;
            let mut now_writable = false;
            if !slot.unwritable && limit.reached(messages, bytes) {
                slot.unwritable = true;
                self.unwritable += 1;
            } else if slot.unwritable && messages <= limit.messages / 2 && bytes <= limit.bytes / 2
            {
                slot.unwritable = false;
                self.unwritable -= 1;
                now_writable = true;
            }
            let open = slot.conn.phase() == Phase::Open;
            let mut held = std::mem::take(&mut slot.held);
            if now_writable {
                self.hand_out(id, &mut held);
                if open {
                    if self.config.charge_events {
                        self.events_unread += 1;
                    }
                    self.outputs
                        .push_back(ServerOutput::App(ServerEvent::Writable { id: ConnId(id) }));
                }
            }
            let Some(slot) = self.conns.get_mut(&id) else {
                return;
            };
            slot.held = held;
            // Charge what it holds now.
            let charged = charge(slot);
            let (old, new) = (
                charged_excess(slot.charged, self.config.floor),
                charged_excess(charged, self.config.floor),
            );
            slot.charged = charged;
            self.pool_used = self.pool_used - old + new;
            let pool = self
                .pool_used
                .saturating_add(self.events_unread.saturating_mul(EVENT_COST));
            set_room(&self.config, pool, slot);
            let holding = slot.conn.held().0 > 0;
            if holding != slot.holding {
                slot.holding = holding;
                self.outputs.push_back(ServerOutput::Holding {
                    id: ConnId(id),
                    holding,
                });
            }
            if !slot.conn.has_delivered() {
                break;
            }
        }
        let Some(slot) = self.conns.get_mut(&id) else {
            return;
        };
        if slot.conn.has_transmit() && self.ready.back() != Some(&id) {
            self.ready.push_back(id);
        }
        let mut ending = None;
        while let Some(event) = slot.conn.poll_event() {
            match event {
                Event::Lost => {
                    self.totals.lost += 1;
                    if self.closing && slot.conn.orphans() > 0 {
                        self.lost_during_close.push(ConnId(id));
                    }
                    slot.conn.take_orphans();
                    ending = Some(ConnState::Lost);
                }
                Event::Drained => {
                    self.totals.closed += 1;
                    ending = Some(ConnState::Closed);
                }
                Event::Connected => {}
            }
        }
        let Some(state) = ending else { return };
        // The connection leaves the table in the same step that announces
        // its end, so whoever sees the end finds no stale entry.
        let Some(mut slot) = self.remove(id) else {
            return;
        };
        let how = if state == ConnState::Lost {
            Ending::Lost
        } else {
            Ending::Closed
        };
        self.retire(id, &slot, how);
        if slot.validated && slot.challenge.is_none() {
            while let Some(msg) = slot.conn.poll_transmit() {
                self.orphaned.push_back((slot.addr, msg.into_owned()));
            }
        }
        if !slot.conn.closed_by_app() {
            self.hand_out(id, &mut slot.held);
            if state == ConnState::Lost {
                self.app(ServerEvent::Lost { id: ConnId(id) });
            }
        }
        self.state_change(now, Some(ConnId(id)), slot.addr, state);
        self.check_drained();
    }

    fn check_drained(&mut self) {
        if self.closing && self.conns.is_empty() && !self.drained {
            self.drained = true;
            self.outputs.push_back(ServerOutput::Drained);
        }
    }
}

/// How much more memory `slot` may take when `pool` of the shared budget is
/// in use: the rest of its floor, then the budget (only its first half for
/// a connection over its own limits, so that those cannot starve the others).
fn memory_room(config: &ServerConfig, pool: usize, slot: &Slot) -> usize {
    let over = slot.unwritable || config.inbox.reached(slot.unread.0, slot.unread.1);
    let cap = if over {
        config.budget / 2
    } else {
        config.budget
    };
    config
        .floor
        .saturating_sub(slot.charged)
        .saturating_add(cap.saturating_sub(pool))
}

/// Tells `slot`'s connection how much it may take now: its inbox (the
/// reorder buffer counts against it) and memory; past that, a window's
/// worth is held unacknowledged so that the next read takes it at once.
fn set_room(config: &ServerConfig, pool: usize, slot: &mut Slot) {
    let memory = memory_room(config, pool, slot);
    let (buffered, buffered_bytes) = slot.conn.reorder_buffered();
    let room = Room {
        memory,
        ..config
            .inbox
            .room(slot.unread.0 + buffered, slot.unread.1 + buffered_bytes)
    };
    let hold = Room {
        messages: (config.params.window_size as usize).saturating_sub(slot.conn.held().0),
        bytes: usize::MAX,
        memory,
    };
    slot.conn.set_receive_room(room, hold);
}

/// What a connection holds, as charged against the memory budget.
fn charge(slot: &Slot) -> usize {
    let cost = |(messages, bytes): (usize, usize)| {
        messages
            .saturating_mul(MESSAGE_OVERHEAD)
            .saturating_add(bytes)
    };
    cost(slot.conn.send_buffered())
        .saturating_add(cost(slot.unread))
        .saturating_add(cost(slot.conn.reorder_buffered()))
        .saturating_add(cost(slot.conn.held()))
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

/// The user-facing state of a server connection, derived from its phase.
fn state_of(conn: &Conn) -> ConnState {
    match conn.phase() {
        Phase::Connecting => ConnState::Connecting,
        Phase::Open => ConnState::Connected,
        Phase::Closing => ConnState::Closing,
        Phase::Drained => ConnState::Closed,
        Phase::Lost => ConnState::Lost,
    }
}
