//! The LSP client: one connection to one server.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::driver::endpoint::{self, Empty, Endpoint, Inbox, Io, Role};
use crate::lifecycle::{ConnEvent, ConnState, ReconnectPolicy, Subscribers};
use crate::proto::{max_payload, Conn, Event, Message, MsgType, Phase, DEFAULT_MAX_DATAGRAM};
use crate::stats::{ConnStats, Timing};
use crate::{ConnId, Error, Faults, Params};

/// What the receive and epoch threads hand to `read`, in order.
enum Item {
    Data(Vec<u8>),
    Lost(u32),
    Reconnected { old: u32, new: u32 },
}

/// The client side of the state shared with the threads.
pub(crate) struct ClientRole {
    server: SocketAddr,
    conn: Mutex<ClientConn>,
    inbox: Inbox<Item>,
    events: Subscribers,
    /// The current connection id, readable without the lock.
    conn_id: AtomicU32,
}

struct ClientConn {
    conn: Conn,
    timing: Timing,
    state: ConnState,
    /// Told once whether the first connect succeeded; `None` afterwards.
    connected: Option<Sender<Result<u32, Error>>>,
    closing: bool,
    /// The connection ended with messages never acknowledged.
    lost_with_pending: bool,
    policy: Option<ReconnectPolicy>,
    /// Reconnect attempts since the last connection that exchanged data.
    attempt: u32,
    /// While waiting to dial again: when to send the Connect.
    redial_at: Option<Instant>,
    /// The connection lost before a reconnect, reported to `read` at the gap.
    lost_id: Option<u32>,
    rng: SmallRng,
}

impl ClientRole {
    fn set_state(&self, c: &mut ClientConn, conn_id: u32, state: ConnState) {
        c.state = state;
        self.events
            .emit((conn_id != 0).then_some(conn_id), self.server, state);
    }

    /// Sends what the state machine wants sent, hands data to `read` and acts
    /// on events. Runs under the connection lock, which keeps events in order.
    fn drive(&self, io: &Io, c: &mut ClientConn) {
        // Stamp first transmissions before sending them (see the server's drive).
        let conn = &mut c.conn;
        c.timing.update(
            conn.next_unsent(),
            conn.oldest_unacked(),
            std::iter::from_fn(|| conn.poll_first_acked()),
        );
        if c.redial_at.is_none() {
            while let Some(msg) = c.conn.poll_transmit() {
                io.send(&msg, self.server);
            }
        }
        while let Some(payload) = c.conn.poll_delivered() {
            let _ = self.inbox.tx.send(Item::Data(payload));
        }
        while let Some(event) = c.conn.poll_event() {
            let id = c.conn.conn_id();
            match event {
                Event::Connected => {
                    log::debug!("connected to {} as connection {id}", self.server);
                    self.conn_id.store(id, Ordering::SeqCst);
                    c.timing.mark_connected();
                    if let Some(old) = c.lost_id.take() {
                        let _ = self.inbox.tx.send(Item::Reconnected { old, new: id });
                    }
                    // Announce before `connect` returns: a subscriber added
                    // after it must not see this event.
                    self.set_state(c, id, ConnState::Connected);
                    if let Some(tx) = c.connected.take() {
                        let _ = tx.send(Ok(id));
                    }
                }
                Event::Lost if id == 0 => {
                    if let Some(tx) = c.connected.take() {
                        log::debug!("connect to {} timed out", self.server);
                        self.set_state(c, 0, ConnState::Refused);
                        let _ = tx.send(Err(Error::ConnectTimeout));
                    } else {
                        log::debug!(
                            "reconnect attempt {} to {} timed out",
                            c.attempt,
                            self.server
                        );
                        self.redial(io, c);
                    }
                }
                Event::Lost => {
                    log::debug!("connection {id} to {} lost", self.server);
                    self.set_state(c, id, ConnState::Lost);
                    if c.policy.is_some() && !c.closing {
                        c.lost_id = Some(id);
                        self.redial(io, c);
                    } else {
                        let _ = self.inbox.tx.send(Item::Lost(id));
                        c.lost_with_pending |= c.conn.take_orphans().into_iter().next().is_some();
                        if c.closing {
                            io.signal_drained();
                        }
                    }
                }
                Event::Drained => {
                    self.set_state(c, id, ConnState::Closed);
                    if c.closing {
                        io.signal_drained();
                    }
                }
            }
        }
        if c.attempt > 0
            && c.conn.phase() == Phase::Open
            && (c.conn.counters().data_received > 0 || c.conn.oldest_unacked() > c.conn.isn() + 1)
        {
            c.attempt = 0;
        }
    }

    /// Schedules the next reconnect attempt, or gives up.
    fn redial(&self, io: &Io, c: &mut ClientConn) {
        let orphans = c.conn.take_orphans();
        let Some(policy) = &c.policy else { return };
        c.attempt += 1;
        if policy.max_attempts.is_some_and(|max| c.attempt > max) {
            log::debug!(
                "giving up reconnecting to {} after {} attempts",
                self.server,
                c.attempt - 1
            );
            c.lost_with_pending = !orphans.is_empty();
            let lost = c.lost_id.take().unwrap_or(0);
            let _ = self.inbox.tx.send(Item::Lost(lost));
            self.set_state(c, 0, ConnState::Refused);
            return;
        }
        let delay = policy.delay(c.attempt, &mut c.rng);
        log::debug!(
            "reconnecting to {} in {delay:?} (attempt {})",
            self.server,
            c.attempt
        );
        c.redial_at = Some(Instant::now() + delay);
        // Heartbeats for the lost connection may still reach this socket:
        // they must not be taken as the new connection's answer.
        let stale = c.lost_id.unwrap_or(c.conn.conn_id());
        c.conn = Conn::client_after(io.params, u64::from(rand::random::<u32>().max(1)), stale);
        c.conn.set_coalesce_acks(io.coalesce_acks);
        for payload in orphans {
            c.conn.write(payload);
        }
        c.timing = Timing::new(c.conn.next_unsent());
        let attempt = c.attempt;
        self.set_state(c, 0, ConnState::Reconnecting { attempt });
    }
}

impl Role for ClientRole {
    /// Whether Data arrived in this batch (a CAck may be owed).
    type Batch = bool;

    fn on_message(&self, io: &Io, from: SocketAddr, msg: Message<'_>, batch: &mut bool) {
        if from != self.server {
            io.count_rejected(from, &"not from the server");
            return;
        }
        let mut c = self.conn.lock();
        if msg.kind == MsgType::Connect || c.redial_at.is_some() {
            c.timing.rejected += 1;
            io.count_rejected(from, &"unexpected message");
            return;
        }
        *batch |= msg.kind == MsgType::Data;
        if let Err(why) = c.conn.handle(msg) {
            c.timing.rejected += 1;
            io.count_rejected(from, &why);
        }
        self.drive(io, &mut c);
    }

    fn end_batch(&self, io: &Io, batch: &mut bool) {
        if std::mem::take(batch) && io.coalesce_acks {
            let mut c = self.conn.lock();
            c.conn.flush_acks();
            self.drive(io, &mut c);
        }
    }

    fn on_malformed(&self, from: SocketAddr) {
        if from == self.server {
            self.conn.lock().timing.malformed += 1;
        }
    }

    fn on_epoch(&self, io: &Io) {
        let mut c = self.conn.lock();
        if c.redial_at.is_none() {
            c.conn.on_epoch();
            self.drive(io, &mut c);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.conn.lock().redial_at
    }

    fn on_deadline(&self, io: &Io) {
        let mut c = self.conn.lock();
        if c.redial_at.is_some_and(|at| at <= Instant::now()) {
            c.redial_at = None;
            self.drive(io, &mut c);
        }
    }

    fn begin_close(&self, io: &Io) {
        let mut c = self.conn.lock();
        c.closing = true;
        match c.conn.phase() {
            Phase::Lost | Phase::Drained => io.signal_drained(),
            Phase::Connecting => {
                // Waiting to reconnect, or dialling: cancel it.
                log::debug!("close: reconnect to {} cancelled", self.server);
                c.redial_at = None;
                c.lost_with_pending |= !c.conn.is_idle();
                c.conn.abort();
                if !c.state.is_terminal() {
                    self.set_state(&mut c, 0, ConnState::Closed);
                }
                io.signal_drained();
            }
            Phase::Open | Phase::Closing => {
                let id = c.conn.conn_id();
                self.set_state(&mut c, id, ConnState::Closing);
                c.conn.close();
                self.drive(io, &mut c);
            }
        }
    }

    fn close_result(&self) -> Result<(), Error> {
        let c = self.conn.lock();
        if c.lost_with_pending {
            Err(Error::ConnectionLost(ConnId(
                self.conn_id.load(Ordering::SeqCst),
            )))
        } else {
            Ok(())
        }
    }

    fn abort(&self, io: &Io) -> usize {
        let mut c = self.conn.lock();
        let discarded = c.conn.abort();
        if !c.state.is_terminal() {
            let id = c.conn.conn_id();
            self.set_state(&mut c, id, ConnState::Closed);
        }
        io.signal_drained();
        discarded
    }
}

/// An LSP client: a reliable, ordered, message-oriented connection to a server.
///
/// All methods take `&self`, and `Client` is `Send + Sync`: one thread may
/// block in [`read`](Client::read) while others [`write`](Client::write) or
/// [`close`](Client::close).
///
/// # Examples
///
/// ```
/// use liveseq::{Client, Params, Server};
///
/// # fn main() -> Result<(), liveseq::Error> {
/// let params = Params { epoch_millis: 100, ..Params::default() };
/// let server = Server::bind("127.0.0.1:0", params)?;
/// let client = Client::connect(server.local_addr()?, params)?;
///
/// client.write(b"ping")?;
/// let (id, msg) = server.read()?;
/// assert_eq!((id, &msg[..]), (client.conn_id(), &b"ping"[..]));
/// server.write(id, b"pong")?;
/// assert_eq!(client.read()?, b"pong");
///
/// client.close()?;
/// server.close()?;
/// # Ok(())
/// # }
/// ```
pub struct Client {
    endpoint: Endpoint<ClientRole>,
    max_payload: usize,
    /// Set once `read` has reported the loss, so later reads repeat it.
    lost_seen: Mutex<Option<ConnId>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("conn_id", &self.conn_id())
            .field("local_addr", &self.endpoint.shared.io.local_addr())
            .field("server", &self.endpoint.shared.role.server)
            .finish()
    }
}

/// Configures a [`Client`] before connecting.
///
/// # Examples
///
/// ```no_run
/// use liveseq::{Client, Faults, Params, ReconnectPolicy};
///
/// # fn main() -> Result<(), liveseq::Error> {
/// let client = Client::builder()
///     .params(Params { window_size: 8, max_unacked_messages: 8, ..Params::default() })
///     .initial_seq_num(1000)
///     .faults(Faults { write_drop_percent: 10, ..Faults::default() })
///     .max_datagram_size(9000)
///     .reconnect(ReconnectPolicy::default())
///     .connect("127.0.0.1:9999")?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ClientBuilder {
    params: Params,
    isn: Option<u32>,
    faults: Faults,
    max_datagram_size: Option<usize>,
    reconnect: Option<ReconnectPolicy>,
    events: Vec<Sender<ConnEvent>>,
    ack_coalescing: Option<bool>,
}

impl ClientBuilder {
    /// Protocol parameters (default: [`Params::default`]).
    pub fn params(mut self, params: Params) -> Self {
        self.params = params;
        self
    }

    /// The initial sequence number sent in the Connect (default: random, non-zero).
    pub fn initial_seq_num(mut self, isn: u32) -> Self {
        self.isn = Some(isn);
        self
    }

    /// Faults to inject into this client's traffic (default: none).
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Largest datagram this client sends, 368 to 65507 bytes (default 1472).
    /// It bounds the payload of [`Client::write`].
    pub fn max_datagram_size(mut self, size: usize) -> Self {
        self.max_datagram_size = Some(size);
        self
    }

    /// Dial again after losing the connection, as `policy` says (default:
    /// off). See [`ReconnectPolicy`] for what happens to messages in flight.
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = Some(policy);
        self
    }

    /// Whether a burst of in-order Data is acknowledged with one CAck rather
    /// than one Ack per message (default: on). Go LSP peers accept CAck.
    pub fn ack_coalescing(mut self, on: bool) -> Self {
        self.ack_coalescing = Some(on);
        self
    }

    /// Also sends this client's lifecycle events to `tx`, from before the
    /// connect starts (so `Connecting`, then `Connected` or `Refused`, are seen).
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Client, ConnState, Params};
    ///
    /// let quiet = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    /// let (tx, rx) = crossbeam_channel::unbounded();
    /// let params = Params { epoch_millis: 10, epoch_limit: 2, ..Params::default() };
    /// assert!(Client::builder().params(params).events(tx).connect(quiet.local_addr().unwrap()).is_err());
    /// let states: Vec<ConnState> = rx.try_iter().map(|e| e.state).collect();
    /// assert_eq!(states, [ConnState::Connecting, ConnState::Refused]);
    /// ```
    pub fn events(mut self, tx: Sender<ConnEvent>) -> Self {
        self.events.push(tx);
        self
    }

    /// Connects to the server at `addr`, blocking until it acknowledges or
    /// `epoch_limit` epochs pass without an answer ([`Error::ConnectTimeout`]).
    pub fn connect(self, addr: impl ToSocketAddrs) -> Result<Client, Error> {
        self.params.validate()?;
        let max_datagram = self.max_datagram_size.unwrap_or(DEFAULT_MAX_DATAGRAM);
        endpoint::check_datagram_size(max_datagram)?;
        if let Some(policy) = &self.reconnect {
            if policy.delays.iter().any(|(lo, hi)| lo > hi) {
                return Err(Error::InvalidParams {
                    field: "reconnect",
                    reason: "delays must be (min, max) with min <= max",
                });
            }
        }
        let server = addr.to_socket_addrs()?.next().ok_or_else(|| {
            Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no address to connect to",
            ))
        })?;
        let isn = self.isn.unwrap_or_else(|| rand::random::<u32>().max(1));
        let socket = endpoint::bind_socket(endpoint::any_addr_for(server))?;
        let (connected_tx, connected_rx) = bounded(1);
        let coalesce_acks = self.ack_coalescing.unwrap_or(true);
        let mut conn = Conn::client(self.params, u64::from(isn));
        conn.set_coalesce_acks(coalesce_acks);
        let events = Subscribers::default();
        for tx in self.events {
            events.add(tx);
        }
        let role = ClientRole {
            server,
            conn: Mutex::new(ClientConn {
                timing: Timing::new(conn.next_unsent()),
                conn,
                state: ConnState::Connecting,
                connected: Some(connected_tx),
                closing: false,
                lost_with_pending: false,
                policy: self.reconnect,
                attempt: 0,
                redial_at: None,
                lost_id: None,
                rng: SmallRng::from_entropy(),
            }),
            inbox: Inbox::new(),
            events,
            conn_id: AtomicU32::new(0),
        };
        role.events.emit(None, server, ConnState::Connecting);
        let config = endpoint::Config {
            params: self.params,
            faults: self.faults,
            coalesce_acks,
            batch: 16,
        };
        let endpoint = Endpoint::start(socket, config, role)?;
        {
            let shared = &endpoint.shared;
            let mut c = shared.role.conn.lock();
            shared.role.drive(&shared.io, &mut c);
        }
        log::debug!(
            "connecting to {server} from {} with isn {isn}",
            endpoint.shared.io.local_addr()
        );
        match connected_rx.recv() {
            Ok(Ok(_)) => Ok(Client {
                endpoint,
                max_payload: max_payload(max_datagram),
                lost_seen: Mutex::new(None),
            }),
            Ok(Err(err)) => {
                let _ = endpoint.close(None);
                Err(err)
            }
            Err(_) => {
                let _ = endpoint.close(None);
                Err(Error::Closed)
            }
        }
    }
}

impl Client {
    /// Connects with the given parameters, a random initial sequence number
    /// and no faults. Blocks until the server acknowledges.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Client, Error, Params};
    ///
    /// // Nobody listens there: the connect gives up after epoch_limit epochs.
    /// let quiet = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    /// let params = Params { epoch_millis: 10, epoch_limit: 3, ..Params::default() };
    /// let err = Client::connect(quiet.local_addr().unwrap(), params).unwrap_err();
    /// assert!(matches!(err, Error::ConnectTimeout));
    /// ```
    pub fn connect(addr: impl ToSocketAddrs, params: Params) -> Result<Client, Error> {
        Client::builder().params(params).connect(addr)
    }

    /// A builder for the less common settings.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The id the server gave this connection (a reconnect changes it).
    pub fn conn_id(&self) -> ConnId {
        ConnId(self.endpoint.shared.role.conn_id.load(Ordering::SeqCst))
    }

    /// The local address of the client's socket.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        Ok(self.endpoint.shared.io.local_addr())
    }

    /// The server's address.
    pub fn peer_addr(&self) -> Result<SocketAddr, Error> {
        Ok(self.endpoint.shared.role.server)
    }

    /// The largest payload [`write`](Client::write) accepts.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// The connection's current state.
    pub fn state(&self) -> ConnState {
        self.endpoint.shared.role.conn.lock().state
    }

    /// Subscribes to this client's lifecycle events, from now on (see
    /// [`Server::subscribe`](crate::Server::subscribe) for the guarantees).
    pub fn subscribe(&self) -> Receiver<ConnEvent> {
        self.endpoint.shared.role.events.subscribe()
    }

    /// A snapshot of the connection's statistics.
    ///
    /// # Examples
    ///
    /// ```
    /// # use liveseq::{Client, Params, Server};
    /// # let params = Params { epoch_millis: 100, ..Params::default() };
    /// # let server = Server::bind("127.0.0.1:0", params).unwrap();
    /// let client = Client::connect(server.local_addr().unwrap(), params).unwrap();
    /// assert!(client.stats().connect_time.is_some());
    /// ```
    pub fn stats(&self) -> ConnStats {
        let c = self.endpoint.shared.role.conn.lock();
        c.timing.snapshot(&c.conn)
    }

    /// Blocks until the next message from the server arrives, in order.
    ///
    /// Returns [`Error::ConnectionLost`] once every message received before
    /// the loss has been read, and [`Error::Closed`] after [`close`](Client::close).
    /// With a reconnect policy, [`Error::Reconnected`] marks where the old
    /// connection's messages end and the new one's begin.
    pub fn read(&self) -> Result<Vec<u8>, Error> {
        self.read_inner(None)
    }

    /// Like [`read`](Client::read), but gives up with [`Error::Timeout`]
    /// after `timeout`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use liveseq::{Client, Error, Params, Server};
    /// # use std::time::Duration;
    /// # let params = Params { epoch_millis: 100, ..Params::default() };
    /// # let server = Server::bind("127.0.0.1:0", params).unwrap();
    /// # let client = Client::connect(server.local_addr().unwrap(), params).unwrap();
    /// assert!(matches!(client.read_timeout(Duration::from_millis(10)), Err(Error::Timeout)));
    /// ```
    pub fn read_timeout(&self, timeout: Duration) -> Result<Vec<u8>, Error> {
        self.read_inner(Some(timeout))
    }

    fn read_inner(&self, timeout: Option<Duration>) -> Result<Vec<u8>, Error> {
        if self.endpoint.is_closed() {
            return Err(Error::Closed);
        }
        if let Some(id) = *self.lost_seen.lock() {
            return Err(Error::ConnectionLost(id));
        }
        match self.endpoint.shared.role.inbox.recv(timeout) {
            Ok(Item::Data(payload)) => Ok(payload),
            Ok(Item::Lost(id)) => {
                *self.lost_seen.lock() = Some(ConnId(id));
                Err(Error::ConnectionLost(ConnId(id)))
            }
            Ok(Item::Reconnected { old, new }) => Err(Error::Reconnected {
                old: ConnId(old),
                new: ConnId(new),
            }),
            Err(Empty::Closed) => Err(Error::Closed),
            Err(Empty::Timeout) => Err(Error::Timeout),
        }
    }

    /// Queues `payload` for the server and returns at once; it is sent as
    /// soon as the window allows (immediately, from this thread, if it does).
    /// While a reconnect is under way, it waits for the new connection.
    ///
    /// Fails with [`Error::PayloadTooLarge`], [`Error::ConnectionLost`] or
    /// [`Error::Closed`].
    pub fn write(&self, payload: &[u8]) -> Result<(), Error> {
        endpoint::check_payload(payload.len(), self.max_payload)?;
        if self.endpoint.is_closed() {
            return Err(Error::Closed);
        }
        let shared = &self.endpoint.shared;
        let mut c = shared.role.conn.lock();
        match c.conn.phase() {
            Phase::Open | Phase::Connecting if !c.state.is_terminal() => {
                c.conn.write(payload.to_vec());
                shared.role.drive(&shared.io, &mut c);
                Ok(())
            }
            Phase::Lost | Phase::Connecting => Err(Error::ConnectionLost(self.conn_id())),
            _ => Err(Error::Closed),
        }
    }

    /// Closes the connection: blocks until every message written has been
    /// acknowledged (or the connection is lost: [`Error::ConnectionLost`]),
    /// then stops the client's threads and releases its socket. A pending
    /// reconnect is cancelled. A `read` blocked in another thread returns
    /// [`Error::Closed`] at once.
    pub fn close(&self) -> Result<(), Error> {
        self.endpoint.shared.role.inbox.shut();
        self.endpoint.close(None)
    }

    /// Like [`close`](Client::close), but gives up draining after `timeout`:
    /// what is left is discarded and the result is [`Error::CloseTimedOut`].
    /// The threads have stopped when this returns, whatever the result.
    pub fn close_timeout(&self, timeout: Duration) -> Result<(), Error> {
        self.endpoint.shared.role.inbox.shut();
        self.endpoint.close(Some(Instant::now() + timeout))
    }
}
