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
//! assert_eq!((to, ack), (client, Message::ack(1, 7)));
//! assert!(matches!(core.poll_output(), Some(ServerOutput::State { state: ConnState::Connected, .. })));
//! assert!(matches!(core.poll_output(), Some(ServerOutput::App(ServerEvent::Connected { .. }))));
//!
//! fn encode(m: &Message<'_>) -> Vec<u8> {
//!     let mut buf = Vec::new();
//!     m.encode(&mut buf);
//!     buf
//! }
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use super::conn::{Conn, Event, Phase, Rejected, MAX_ISN};
use super::message::{DecodeError, Message, MsgType};
use crate::stats::{ConnStats, ServerStats, Timing};
use crate::{ConnId, ConnState, Error, Params, ServerEvent};

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
    /// Per-connection limit on written, unacknowledged messages.
    pub send_buffer: Limit,
    /// Per-connection limit on delivered, unread messages.
    pub inbox: Limit,
}

impl ServerConfig {
    /// `params` with no connection limit, CAck coalescing and the default
    /// buffer limits.
    pub fn new(params: Params) -> ServerConfig {
        ServerConfig {
            params,
            max_connections: usize::MAX,
            coalesce_acks: true,
            send_buffer: DEFAULT_SEND_BUFFER,
            inbox: DEFAULT_INBOX,
        }
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
    /// A close asked for with [`ServerCore::close`] has finished: every
    /// connection has ended.
    Drained,
}

/// One connection in the table.
#[derive(Debug)]
struct Slot {
    addr: SocketAddr,
    conn: Conn,
    timing: Timing,
    /// Delivered to the application and not yet read (flow control).
    unread: (usize, usize),
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
}

/// The I/O-free server: the connection table, routing, admission,
/// refusals, closing and flow control of an LSP server.
///
/// # Decisions written down
///
/// * A connection belongs to the address its Connect came from; anything
///   naming it from elsewhere is rejected.
/// * A repeated Connect with the same ISN from an address with a live
///   connection is answered with the same Ack (`duplicate_connects`).
/// * A Connect with another ISN from that address is a restarted client: the
///   old connection ends `Lost` and a new one is admitted in the same step.
/// * A Connect carrying the ISN of a connection from that address that has
///   **ended** (lost, closed or replaced) in the last `epoch_limit` epochs is
///   a late duplicate of the Connect that opened it, delayed in the network,
///   and is ignored, even when a newer connection from that address is live:
///   admitting it would open a ghost connection that is never used (and
///   would replace the live one). A different ISN is a new client.
/// * At `max_connections`, a Connect from a new address is ignored (LSP has
///   no rejection message); a `Refused` output is produced once per address
///   per epoch.
#[derive(Debug)]
pub struct ServerCore {
    config: ServerConfig,
    conns: HashMap<u32, Slot>,
    by_addr: HashMap<SocketAddr, u32>,
    /// Recently ended connections by address and ISN: epochs left to
    /// remember them.
    ended: HashMap<(SocketAddr, u64), u32>,
    next_id: u32,
    closing: bool,
    refused_this_epoch: HashSet<SocketAddr>,
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
            conns: HashMap::new(),
            by_addr: HashMap::new(),
            ended: HashMap::new(),
            next_id: 0,
            closing: false,
            refused_this_epoch: HashSet::new(),
            ready: VecDeque::new(),
            batch: Vec::new(),
            orphaned: VecDeque::new(),
            outputs: VecDeque::new(),
            lost_during_close: Vec::new(),
            drained: false,
            totals: Totals::default(),
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
        }
    }

    /// Whether `write(id, ..)` of `len` bytes would have to wait for room.
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
            Ok(msg) => self.handle_message(now, from, msg),
            Err(err) => {
                log_malformed(from, err, datagram);
                self.totals.malformed += 1;
                if let Some(slot) = self
                    .by_addr
                    .get(&from)
                    .and_then(|id| self.conns.get_mut(id))
                {
                    slot.timing.malformed += 1;
                }
            }
        }
    }

    /// A decoded message arrived from `from`.
    pub fn handle_message(&mut self, now: Instant, from: SocketAddr, msg: Message<'_>) {
        if msg.kind == MsgType::Connect {
            if msg.seq_num > MAX_ISN {
                log::debug!(
                    "dropped a Connect from {from}: isn {} above MAX_ISN",
                    msg.seq_num
                );
                self.totals.rejected += 1;
                return;
            }
            self.on_connect(now, from, msg.seq_num);
            return;
        }
        let Some(&id) = self.by_addr.get(&from) else {
            log::debug!("dropped {msg:?} from {from}: no connection from this address");
            self.totals.rejected += 1;
            return;
        };
        if msg.conn_id != id {
            log::debug!("dropped {msg:?} from {from}: connection {id} is this address's");
            self.totals.rejected += 1;
            return;
        }
        if msg.kind == MsgType::Data && self.config.coalesce_acks && !self.batch.contains(&id) {
            self.batch.push(id);
        }
        if let Some(slot) = self.conns.get_mut(&id) {
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

    /// An epoch passed: every connection ticks.
    pub fn handle_epoch(&mut self, now: Instant) {
        self.refused_this_epoch.clear();
        self.ended.retain(|_, left| {
            *left = left.saturating_sub(1);
            *left > 0
        });
        let mut ids: Vec<u32> = self.conns.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(slot) = self.conns.get_mut(&id) {
                slot.conn.on_epoch();
                self.after(now, id);
            }
        }
    }

    /// The application writes `payload` to connection `id`.
    ///
    /// Fails with [`Error::UnknownConnection`] if it is not in the table,
    /// [`Error::ConnectionClosed`] once it is closing, and
    /// [`Error::BufferFull`] while its send buffer is full.
    pub fn write(&mut self, now: Instant, id: ConnId, payload: &[u8]) -> Result<(), Error> {
        let full = self.is_full(id);
        let slot = self
            .conns
            .get_mut(&id.0)
            .ok_or(Error::UnknownConnection(id))?;
        match slot.conn.phase() {
            Phase::Open => {}
            Phase::Closing | Phase::Drained => return Err(Error::ConnectionClosed(id)),
            Phase::Lost | Phase::Connecting => return Err(Error::UnknownConnection(id)),
        }
        if full {
            return Err(Error::BufferFull);
        }
        slot.conn.write(payload.to_vec());
        self.after(now, id.0);
        Ok(())
    }

    /// The application read `messages` messages of `bytes` bytes in all from
    /// connection `id`: room in its inbox again.
    pub fn read_done(&mut self, now: Instant, id: ConnId, messages: usize, bytes: usize) {
        if let Some(slot) = self.conns.get_mut(&id.0) {
            slot.unread.0 = slot.unread.0.saturating_sub(messages);
            slot.unread.1 = slot.unread.1.saturating_sub(bytes);
            self.after(now, id.0);
        }
    }

    /// Closes connection `id`: what was written is still delivered, but
    /// nothing more is read from it. Its last application event is
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
        let peer = slot.addr;
        self.state_change(now, Some(id), peer, ConnState::Closing);
        self.outputs
            .push_back(ServerOutput::App(ServerEvent::Closed { id }));
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
            if let Some(mut slot) = self.conns.remove(&id) {
                self.by_addr.remove(&slot.addr);
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
            if self
                .conns
                .get_mut(&id)
                .is_some_and(|slot| slot.conn.has_transmit())
            {
                break id;
            }
            self.ready.pop_front();
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

    fn on_connect(&mut self, now: Instant, from: SocketAddr, isn: u64) {
        let live = self.by_addr.get(&from).copied();
        if let Some(id) = live {
            if self.conns.get(&id).is_some_and(|s| s.conn.isn() == isn) {
                // Our Ack was lost: answer the repeated Connect the same way.
                self.totals.duplicate_connects += 1;
                if let Some(slot) = self.conns.get_mut(&id) {
                    let _ = slot.conn.handle(Message::connect(isn));
                }
                self.after(now, id);
                return;
            }
        }
        if self.ended.contains_key(&(from, isn)) {
            // A late duplicate of the Connect that opened a connection now
            // ended: admitting it would open a ghost connection (and end
            // the live one, if the client has connected again since).
            self.totals.duplicate_connects += 1;
            return;
        }
        if let Some(id) = live {
            if !self.closing {
                // A new incarnation of the client at this address: the old
                // connection is gone for good.
                self.replace(now, id);
            }
        }
        if self.closing || self.conns.len() >= self.config.max_connections {
            self.refuse(now, from);
            return;
        }
        self.next_id = self.next_id.wrapping_add(1).max(1);
        while self.conns.contains_key(&self.next_id) {
            self.next_id = self.next_id.wrapping_add(1).max(1);
        }
        let id = self.next_id;
        let mut conn = Conn::server(self.config.params, id, isn);
        conn.set_coalesce_acks(self.config.coalesce_acks);
        let timing = Timing::new(now, conn.next_unsent());
        self.conns.insert(
            id,
            Slot {
                addr: from,
                conn,
                timing,
                unread: (0, 0),
            },
        );
        self.by_addr.insert(from, id);
        self.totals.accepted += 1;
        self.state_change(now, Some(ConnId(id)), from, ConnState::Connected);
        self.outputs
            .push_back(ServerOutput::App(ServerEvent::Connected {
                id: ConnId(id),
                peer: from,
            }));
        self.after(now, id);
    }

    /// Ends a connection whose client reconnected from the same address.
    fn replace(&mut self, now: Instant, id: u32) {
        let Some(mut slot) = self.conns.remove(&id) else {
            return;
        };
        self.by_addr.remove(&slot.addr);
        self.remember_ended(slot.addr, slot.conn.isn());
        let reading = !slot.conn.closed_by_app();
        slot.conn.abort();
        self.totals.lost += 1;
        if reading {
            self.outputs
                .push_back(ServerOutput::App(ServerEvent::Lost { id: ConnId(id) }));
        }
        self.state_change(now, Some(ConnId(id)), slot.addr, ConnState::Lost);
    }

    /// Remembers an ended connection for `epoch_limit` epochs, so that late
    /// duplicates of its Connect are recognised.
    fn remember_ended(&mut self, addr: SocketAddr, isn: u64) {
        if self.ended.len() < MAX_ENDED_TRACKED {
            self.ended
                .insert((addr, isn), self.config.params.epoch_limit);
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

    /// After any input to connection `id`: note its datagrams, hand its
    /// deliveries to the application, act on its events, apply flow control.
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
        while let Some(payload) = conn.poll_delivered() {
            slot.unread.0 += 1;
            slot.unread.1 += payload.len();
            self.outputs
                .push_back(ServerOutput::App(ServerEvent::Message {
                    id: ConnId(id),
                    payload,
                }));
        }
        let inbox_full = self.config.inbox.reached(slot.unread.0, slot.unread.1);
        conn.set_receive_paused(inbox_full);
        if conn.has_transmit() && self.ready.back() != Some(&id) {
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
        let Some(mut slot) = self.conns.remove(&id) else {
            return;
        };
        self.by_addr.remove(&slot.addr);
        self.remember_ended(slot.addr, slot.conn.isn());
        while let Some(msg) = slot.conn.poll_transmit() {
            self.orphaned.push_back((slot.addr, msg.into_owned()));
        }
        if state == ConnState::Lost && !slot.conn.closed_by_app() {
            self.outputs
                .push_back(ServerOutput::App(ServerEvent::Lost { id: ConnId(id) }));
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
