//! The client core: connect, connect timeout, refusals, reconnection
//! schedule, closing and flow control, without I/O.
//!
//! [`ClientCore`] owns the client's [`Conn`] and its lifecycle: it decides
//! when a connect has failed, when to move on to the next address after a
//! refusal ([`handle_refused`](ClientCore::handle_refused)), when and how to
//! dial again after a loss (the
//! [`ReconnectPolicy`] with a seeded random source, so a schedule replays
//! exactly), what happens to unacknowledged messages across a reconnect, and
//! when a close has drained. Time is passed in; the only timer besides epochs
//! is the redial deadline of [`poll_timeout`](ClientCore::poll_timeout).
//!
//! # Examples
//!
//! ```
//! use std::time::{Duration, Instant};
//! use liveseq::proto::{ClientConfig, ClientCore, ClientOutput, Message};
//! use liveseq::{ConnId, ConnState, Params};
//!
//! let now = Instant::now();
//! let server: std::net::SocketAddr = "127.0.0.1:9999".parse().unwrap();
//! let mut core = ClientCore::new(now, server, 42, ClientConfig::new(Params::default()));
//! let (to, connect) = core.poll_transmit().map(|(to, m)| (to, m.into_owned())).unwrap();
//! assert_eq!((to, connect), (server, Message::connect(42)));
//!
//! let mut ack = Vec::new();
//! Message::ack(7, 42).encode(&mut ack);
//! core.handle(now, server, &ack);
//! assert_eq!(core.conn_id(), ConnId::from(7));
//! assert_eq!(core.state(), ConnState::Connected);
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::conn::{Conn, Event, Phase, Rejected, Room};
use super::message::{Message, MsgType};
use super::stats::{ConnStats, Timing};
use super::ConnId;
use super::{ConnState, CoreError};

mod config;

pub use self::config::{ClientConfig, ClientOutput, ConnectFailure};

/// The I/O-free client: see the [`proto`](crate::proto) docs.
#[derive(Debug)]
pub struct ClientCore {
    config: ClientConfig,
    /// The server's addresses, in the order to try them; never empty.
    addrs: Vec<SocketAddr>,
    /// The address in use.
    current: usize,
    /// Per address: refused since its last Connect went out.
    refused: Vec<bool>,
    /// Where the last Connect went: what a failed connect names.
    last_tried: SocketAddr,
    /// Send a Connect to the current address at once (the previous refused).
    connect_now: bool,
    /// The connection holds Data it could not take ([`ClientOutput::Withholding`]).
    withholding: bool,
    conn: Conn,
    timing: Timing,
    /// The one source of truth for the client's lifecycle state.
    state: ConnState,
    /// The first connect has not finished yet.
    first_connect: bool,
    closing: bool,
    /// The connection ended with messages never acknowledged.
    lost_with_pending: bool,
    /// Reconnect attempts since the last connection that exchanged data.
    attempt: u32,
    /// While waiting to dial again: when to send the Connect.
    redial_at: Option<Instant>,
    /// The connection lost before a reconnect, reported at the gap.
    lost_id: Option<u32>,
    /// The id of the last connection, kept for the error of a later read.
    last_id: u32,
    /// Delivered and not yet read (flow control).
    unread: (usize, usize),
    rng: SmallRng,
    outputs: VecDeque<ClientOutput>,
}

impl ClientCore {
    /// A client that starts connecting to `server` with `isn` at once (then
    /// to `config.fallbacks`, if `server` refuses).
    pub fn new(now: Instant, server: SocketAddr, isn: u64, config: ClientConfig) -> ClientCore {
        let mut conn = Conn::client(config.params, isn);
        conn.set_coalesce_acks(config.coalesce_acks);
        let addrs: Vec<SocketAddr> = std::iter::once(server)
            .chain(config.fallbacks.iter().copied())
            .collect();
        let mut core = ClientCore {
            withholding: false,
            refused: vec![false; addrs.len()],
            last_tried: server,
            addrs,
            current: 0,
            connect_now: false,
            timing: Timing::new(now, conn.next_unsent()),
            conn,
            state: ConnState::Connecting,
            first_connect: true,
            closing: false,
            lost_with_pending: false,
            attempt: 0,
            redial_at: None,
            lost_id: None,
            last_id: 0,
            unread: (0, 0),
            rng: SmallRng::seed_from_u64(config.seed),
            outputs: VecDeque::new(),
            config,
        };
        core.set_state(now, ConnState::Connecting);
        core
    }

    // ----- getters -----

    /// The lifecycle state.
    pub fn state(&self) -> ConnState {
        self.state
    }

    /// The current connection id (the last one while reconnecting; 0 before
    /// the first connect succeeds).
    pub fn conn_id(&self) -> ConnId {
        ConnId(self.last_id)
    }

    /// The server's address: the one in use (they change only while the
    /// first connect moves on from a refusal).
    pub fn server(&self) -> SocketAddr {
        self.addrs[self.current]
    }

    /// The current connection's state machine, for tests and tools.
    pub fn conn(&self) -> &Conn {
        &self.conn
    }

    /// A statistics snapshot.
    pub fn stats(&self, now: Instant) -> ConnStats {
        self.timing.snapshot(now, &self.conn)
    }

    /// Whether a write would have to wait for room in the send buffer.
    pub fn is_full(&self) -> bool {
        self.config.send_buffer_limit.reached(
            self.conn.unacked() + self.conn.queued(),
            self.conn.send_buffered().1,
        )
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// The instant [`handle_timeout`](Self::handle_timeout) wants to run, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.redial_at
    }

    /// The outcome of a finished close: `Err(ConnectionLost)` if the
    /// connection ended with messages never acknowledged.
    pub fn close_result(&self) -> Result<(), CoreError> {
        if self.lost_with_pending {
            Err(CoreError::ConnectionLost(ConnId(self.last_id)))
        } else {
            Ok(())
        }
    }

    // ----- inputs -----

    /// A datagram arrived from `from`. One that is not a message is counted
    /// (`malformed`) and dropped; one not from the server is logged and
    /// dropped (a connected socket never delivers those).
    pub fn handle(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        if from != self.server() {
            log::debug!("dropped a datagram from {from}: not from the server");
            return;
        }
        match Message::decode(datagram) {
            Ok(msg) => self.handle_message(now, from, msg),
            Err(err) => {
                super::message::log_malformed(from, err, datagram);
                self.timing.malformed += 1;
            }
        }
    }

    /// A decoded message arrived from `from`.
    pub fn handle_message(&mut self, now: Instant, from: SocketAddr, msg: Message<'_>) {
        if from != self.server() {
            return;
        }
        if msg.kind == MsgType::Connect || self.redial_at.is_some() {
            log::debug!("dropped {msg:?} from {from}: unexpected now");
            self.timing.rejected += 1;
            return;
        }
        // What to log if it is rejected (the message itself is consumed).
        let what = (msg.kind, msg.conn_id, msg.seq_num);
        match self.conn.handle(msg) {
            Ok(()) | Err(Rejected::Paused) => {}
            Err(why) => {
                log::debug!("dropped {what:?} from {from}: {why}");
                self.timing.rejected += 1;
            }
        }
        self.after(now);
    }

    /// The server's host refused the last datagram (an ICMP port
    /// unreachable, which a connected UDP socket reports on receive):
    /// nothing listens at [`server`](Self::server).
    ///
    /// While the first connect is under way, the core moves on to the next
    /// address at once ([`ClientOutput::Dialing`], then a Connect). When the
    /// last address refused, it fails the connect if
    /// [`fail_on_refused`](ClientConfig::fail_on_refused) is set; otherwise
    /// it starts over from the first address at the next scheduled Connect,
    /// and a connect that runs out of epochs with every address refused
    /// fails with [`ConnectFailure::Refused`]. Once connected, and while
    /// reconnecting, a refusal changes nothing: the epoch limit and the
    /// [`ReconnectPolicy`](crate::ReconnectPolicy) decide, as before (a server restarting on its
    /// port refuses for a moment).
    pub fn handle_refused(&mut self, now: Instant) {
        let server = self.server();
        if !self.first_connect || self.closing || self.conn.phase() != Phase::Connecting {
            log::debug!("{server} refused a datagram; left to the epoch limit");
            return;
        }
        log::debug!("{server} refused the Connect");
        self.refused[self.current] = true;
        if self.current + 1 < self.addrs.len() {
            self.current += 1;
            self.connect_now = true;
            self.outputs.push_back(ClientOutput::Dialing(self.server()));
        } else if self.config.fail_on_refused {
            self.fail_connect(now, ConnectFailure::Refused(self.last_tried));
        } else if self.current > 0 {
            // Every address refused: no Connect until the next scheduled one,
            // which starts the round over (a refusal must never be answered
            // at once by a Connect to the same refused address).
            self.current = 0;
            self.outputs.push_back(ClientOutput::Dialing(self.server()));
        }
    }

    /// The end of a batch of datagrams: owed acknowledgements go out.
    pub fn end_batch(&mut self, now: Instant) {
        if self.config.coalesce_acks && self.redial_at.is_none() {
            self.conn.flush_acks();
            self.after(now);
        }
    }

    /// An epoch passed.
    pub fn handle_epoch(&mut self, now: Instant) {
        if self.redial_at.is_none() {
            self.conn.on_epoch();
            self.after(now);
        }
    }

    /// The redial deadline may have passed: dial if it has.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.redial_at.is_some_and(|at| at <= now) {
            self.redial_at = None;
            self.after(now);
        }
    }

    /// The application writes `payload`. While a reconnect is under way it
    /// waits for the new connection.
    ///
    /// Fails with [`CoreError::ConnectionLost`] once the connection is lost for
    /// good, [`CoreError::Closed`] once closing, and [`CoreError::BufferFull`] while
    /// the send buffer is full.
    pub fn write(&mut self, now: Instant, payload: &[u8]) -> Result<(), CoreError> {
        match self.conn.phase() {
            Phase::Open | Phase::Connecting if !self.state.is_terminal() && !self.closing => {}
            Phase::Lost | Phase::Connecting if !self.closing => {
                return Err(CoreError::ConnectionLost(ConnId(self.last_id)))
            }
            _ => return Err(CoreError::Closed),
        }
        if self.is_full() {
            return Err(CoreError::BufferFull);
        }
        self.conn.write(payload.to_vec());
        self.after(now);
        Ok(())
    }

    /// The application read `messages` messages of `bytes` bytes in all.
    pub fn read_done(&mut self, now: Instant, messages: usize, bytes: usize) {
        self.unread.0 = self.unread.0.saturating_sub(messages);
        self.unread.1 = self.unread.1.saturating_sub(bytes);
        self.after(now);
    }

    /// Starts closing: drains what was written, or cancels a reconnect.
    /// [`ClientOutput::Drained`] follows once it is done.
    pub fn close(&mut self, now: Instant) {
        if self.closing {
            return;
        }
        self.closing = true;
        match self.conn.phase() {
            Phase::Lost | Phase::Drained => self.outputs.push_back(ClientOutput::Drained),
            Phase::Connecting => {
                // Waiting to reconnect, or dialling: cancel it.
                self.redial_at = None;
                self.lost_with_pending |= !self.conn.is_idle();
                self.conn.abort();
                if !self.state.is_terminal() {
                    self.set_state(now, ConnState::Closed);
                }
                self.outputs.push_back(ClientOutput::Drained);
            }
            Phase::Open | Phase::Closing => {
                self.set_state(now, ConnState::Closing);
                self.conn.close();
                self.after(now);
            }
        }
    }

    /// Gives up closing: discards what is unacknowledged and returns how
    /// many messages that was.
    pub fn abort(&mut self, now: Instant) -> usize {
        self.closing = true;
        self.redial_at = None;
        let discarded = self.conn.abort();
        if !self.state.is_terminal() {
            self.set_state(now, ConnState::Closed);
        }
        discarded
    }

    // ----- outputs -----

    /// The next datagram to send and where.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Message<'_>)> {
        if self.redial_at.is_some() {
            return None;
        }
        let to = self.server();
        if std::mem::take(&mut self.connect_now) {
            self.refused[self.current] = false;
            self.last_tried = to;
            return Some((to, Message::connect(self.conn.isn())));
        }
        let msg = self.conn.poll_transmit()?;
        if msg.kind == MsgType::Connect {
            self.refused[self.current] = false;
            self.last_tried = to;
        }
        Some((to, msg))
    }

    /// The next output for the application side.
    pub fn poll_output(&mut self) -> Option<ClientOutput> {
        self.outputs.pop_front()
    }

    // ----- internals -----

    /// The first connect failed: no more Connects, and the driver is told why.
    fn fail_connect(&mut self, now: Instant, why: ConnectFailure) {
        self.first_connect = false;
        self.connect_now = false;
        self.conn.abort();
        self.set_state(now, ConnState::Refused);
        self.outputs
            .push_back(ClientOutput::ConnectResult(Err(why)));
    }

    fn set_state(&mut self, now: Instant, state: ConnState) {
        self.state = state;
        let id = self.conn.conn_id();
        self.outputs.push_back(ClientOutput::State {
            conn_id: (id != 0).then_some(ConnId(id)),
            state,
            at: now,
        });
    }

    /// After any input: stamp sends, hand out deliveries, act on events.
    fn after(&mut self, now: Instant) {
        let conn = &mut self.conn;
        self.timing.update(
            now,
            conn.next_unsent(),
            conn.oldest_unacked(),
            std::iter::from_fn(|| conn.poll_first_acked()),
        );
        let mut delivered = Vec::new();
        loop {
            while let Some(payload) = self.conn.poll_delivered() {
                self.unread.0 += 1;
                self.unread.1 += payload.len();
                delivered.push(payload);
            }
            // The inbox counts what is delivered and unread and what waits
            // out of order; past it, a window's worth is held unacknowledged
            // so that the next read takes it at once.
            let (buffered, buffered_bytes) = self.conn.reorder_buffered();
            let room = self
                .config
                .inbox_limit
                .room(self.unread.0 + buffered, self.unread.1 + buffered_bytes);
            let hold = Room {
                messages: (self.config.params.window_size as usize)
                    .saturating_sub(self.conn.withheld().0),
                ..Room::UNLIMITED
            };
            self.conn.set_receive_room(room, hold);
            if !self.conn.has_delivered() {
                break;
            }
        }
        let withholding = self.conn.withheld().0 > 0;
        if withholding != self.withholding {
            self.withholding = withholding;
            self.outputs
                .push_back(ClientOutput::Withholding(withholding));
        }
        while let Some(event) = self.conn.poll_event() {
            let id = self.conn.conn_id();
            if event != Event::Connected {
                // Everything received before an end is handed out first.
                self.outputs
                    .extend(delivered.drain(..).map(ClientOutput::Data));
            }
            match event {
                Event::Connected => {
                    self.last_id = id;
                    self.timing.mark_connected(now);
                    if self.conn.unacked() == 0 {
                        // Prove our address to the server at once (it sends
                        // an unvalidated address little, and drops such
                        // connections first); Data, if any went out, does too.
                        self.conn.heartbeat_now();
                    }
                    if let Some(old) = self.lost_id.take() {
                        self.outputs.push_back(ClientOutput::Reconnected {
                            old: ConnId(old),
                            new: ConnId(id),
                        });
                    }
                    self.set_state(now, ConnState::Connected);
                    if std::mem::take(&mut self.first_connect) {
                        self.outputs
                            .push_back(ClientOutput::ConnectResult(Ok(ConnId(id))));
                    }
                    // Data that proved the connection (its Ack was lost or
                    // overtaken) belongs after it is announced, and after
                    // the `Reconnected` marker.
                    self.outputs
                        .extend(delivered.drain(..).map(ClientOutput::Data));
                }
                Event::Lost if id == 0 => {
                    if self.first_connect {
                        let last = self.last_tried;
                        let why = if self.refused.iter().all(|&refused| refused) {
                            ConnectFailure::Refused(last)
                        } else {
                            ConnectFailure::TimedOut(last)
                        };
                        self.fail_connect(now, why);
                    } else {
                        // A reconnect attempt timed out.
                        self.redial(now);
                    }
                }
                Event::Lost => {
                    self.set_state(now, ConnState::Lost);
                    if self.config.reconnect.is_some() && !self.closing {
                        self.lost_id = Some(id);
                        self.redial(now);
                    } else {
                        self.outputs.push_back(ClientOutput::Lost(ConnId(id)));
                        self.lost_with_pending |= !self.conn.take_orphans().is_empty();
                        if self.closing {
                            self.outputs.push_back(ClientOutput::Drained);
                        }
                    }
                }
                Event::Drained => {
                    self.set_state(now, ConnState::Closed);
                    if self.closing {
                        self.outputs.push_back(ClientOutput::Drained);
                    }
                }
            }
        }
        self.outputs
            .extend(delivered.drain(..).map(ClientOutput::Data));
        // A new connection that exchanged data starts the attempt count over.
        let c = &self.conn;
        if self.attempt > 0
            && c.phase() == Phase::Open
            && (c.counters().data_received > 0 || c.oldest_unacked() > c.isn().saturating_add(1))
        {
            self.attempt = 0;
        }
    }

    /// Schedules the next reconnect attempt, or gives up.
    fn redial(&mut self, now: Instant) {
        let orphans = self.conn.take_orphans();
        let Some(policy) = &self.config.reconnect else {
            return;
        };
        self.attempt = self.attempt.saturating_add(1);
        if policy.max_attempts.is_some_and(|max| self.attempt > max) {
            self.lost_with_pending = !orphans.is_empty();
            let lost = self.lost_id.take().unwrap_or(self.last_id);
            self.outputs.push_back(ClientOutput::Lost(ConnId(lost)));
            self.set_state(now, ConnState::Refused);
            return;
        }
        // A delay from the user's policy: one that would overflow the clock
        // is clamped to a year (it means "practically never").
        let delay = policy
            .delay(self.attempt, self.rng.r#gen())
            .min(Duration::from_secs(365 * 24 * 3600));
        self.redial_at = Some(now.checked_add(delay).unwrap_or(now));
        // Heartbeats for the lost connection may still reach this socket:
        // they must not be taken as the new connection's answer.
        let stale = self.lost_id.unwrap_or(self.last_id);
        let isn = u64::from(self.rng.r#gen::<u32>().max(1));
        self.conn = Conn::client_after(self.config.params, isn, stale);
        self.conn.set_coalesce_acks(self.config.coalesce_acks);
        for payload in orphans {
            self.conn.write(payload);
        }
        self.timing = Timing::new(now, self.conn.next_unsent());
        let attempt = self.attempt;
        self.set_state(now, ConnState::Reconnecting { attempt });
    }
}
