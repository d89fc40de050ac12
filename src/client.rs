//! The LSP client: one connection to one server.
//!
//! A thin handle around a [`ClientCore`], which makes every protocol
//! decision (connect, timeout, reconnect schedule); the threads of
//! [`driver`](crate::driver) feed it.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::Mutex;

use crate::driver::cores::{canonical, ClientCell};
use crate::driver::endpoint::Endpoint;
#[cfg(feature = "test-hooks")]
use crate::driver::faults::Faults;
use crate::driver::inbox::Empty;
use crate::driver::roles::{ClientRole, Item};
use crate::driver::time::deadline;
use crate::driver::{checks, endpoint, io};
use crate::lifecycle::{ConnEvent, ConnState, ReconnectPolicy, Subscribers};
use crate::options::Options;
use crate::proto::stats::ConnStats;
use crate::proto::{ClientConfig, ClientCore, Limit};
use crate::{ConnId, Error, Messages, Params};

/// An LSP client: a reliable, ordered, message-oriented connection to a server.
///
/// All methods take `&self`, and `Client` is `Send + Sync`: one thread may
/// block in [`read`](Client::read) while others [`write`](Client::write) or
/// [`close`](Client::close).
///
/// # Examples
///
/// ```
/// use liveseq::{Client, Params, Server, ServerEvent};
///
/// # fn main() -> Result<(), liveseq::Error> {
/// let params = Params { epoch_millis: 100, ..Params::default() };
/// let server = Server::bind("127.0.0.1:0", params)?;
/// let client = Client::connect(server.local_addr()?, params)?;
///
/// client.write(b"ping")?;
/// let id = client.conn_id();
/// assert!(matches!(server.next_event()?, ServerEvent::Connected { id: c, .. } if c == id));
/// assert_eq!(server.next_event()?, ServerEvent::Message { id, payload: b"ping".to_vec() });
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
            .field("server", &self.peer_addr())
            .finish()
    }
}

/// Configures a [`Client`] before connecting.
///
/// # Examples
///
/// ```no_run
/// use liveseq::{Client, Params, ReconnectPolicy};
///
/// # fn main() -> Result<(), liveseq::Error> {
/// let client = Client::builder()
///     .params(Params { window_size: 8, max_unacked_messages: 8, ..Params::default() })
///     .initial_seq_num(1000)
///     .max_datagram_size(9000)
///     .reconnect(ReconnectPolicy::default())
///     .connect("127.0.0.1:9999")?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ClientBuilder {
    /// What a server is configured with too.
    options: Options,
    isn: Option<u32>,
    reconnect: Option<ReconnectPolicy>,
    events: Vec<Sender<ConnEvent>>,
    fail_on_refused: bool,
}

impl ClientBuilder {
    /// Protocol parameters (default: [`Params::default`]).
    pub fn params(mut self, params: Params) -> Self {
        self.options.params = params;
        self
    }

    /// The initial sequence number sent in the Connect (default: random, non-zero).
    pub fn initial_seq_num(mut self, isn: u32) -> Self {
        self.isn = Some(isn);
        self
    }

    /// Faults to inject into this client's traffic (default: none). A test
    /// hook (the `test-hooks` feature), hidden from the documentation.
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn faults(mut self, faults: Faults) -> Self {
        self.options.faults = faults;
        self
    }

    /// Largest datagram this client sends, 368 to 65507 bytes (default 1472).
    /// It bounds the payload of [`Client::write`].
    pub fn max_datagram_size(mut self, size: usize) -> Self {
        self.options.max_datagram_size = Some(size);
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
        self.options.ack_coalescing = Some(on);
        self
    }

    /// Also sends this client's lifecycle events to `tx`, from before the
    /// connect starts (so `Connecting`, then `Connected` or `Refused`, are seen).
    ///
    /// The channel must be unbounded (`connect` fails with
    /// [`Error::InvalidParams`] otherwise): events are never dropped, since
    /// each connection has exactly one terminal event, and a full channel
    /// must not stall the client.
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

    /// The most this client may hold written and not yet acknowledged
    /// (default: 1,024 messages or 1 MiB). [`Client::write`] blocks while the
    /// buffer is full, like a bounded channel, so a writer faster than the
    /// network holds bounded memory; [`Client::try_write`] fails instead.
    pub fn send_buffer(mut self, messages: usize, bytes: usize) -> Self {
        self.options.send_buffer = Some(Limit { messages, bytes });
        self
    }

    /// The most this client may hold delivered and not yet read (default:
    /// 4,096 messages or 4 MiB). Past it, new Data from the server is left
    /// unacknowledged until the application reads, so the server slows down.
    pub fn inbox(mut self, messages: usize, bytes: usize) -> Self {
        self.options.inbox = Some(Limit { messages, bytes });
        self
    }

    /// Whether a connect fails as soon as the server's host refuses it
    /// (default: off).
    ///
    /// Off, a client keeps sending its Connect for `epoch_limit` epochs even
    /// where nothing listens yet, as LSP promises (a client may start before
    /// its server); if every attempt was refused, the error is then
    /// [`Error::ConnectionRefused`] rather than [`Error::ConnectTimeout`].
    /// On, the connect fails with [`Error::ConnectionRefused`] at the first
    /// refusal of the last address, as `TcpStream::connect` does. A refusal
    /// is the ICMP "port unreachable" the server's host sends back; hosts and
    /// firewalls that send none leave a connect to time out either way.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Client, Error, Params};
    /// use std::time::{Duration, Instant};
    ///
    /// // Nobody listens on a port that was just freed.
    /// let addr = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    /// let params = Params { epoch_millis: 2000, ..Params::default() };
    /// let start = Instant::now();
    /// let err = Client::builder().params(params).fail_on_refused(true).connect(addr).unwrap_err();
    /// assert!(matches!(err, Error::ConnectionRefused(a) if a == addr));
    /// assert!(start.elapsed() < Duration::from_secs(2)); // before the second Connect
    /// ```
    pub fn fail_on_refused(mut self, on: bool) -> Self {
        self.fail_on_refused = on;
        self
    }

    /// Connects to the server at `addr`, like `TcpStream::connect`: each
    /// address it resolves to is tried in turn, the next as soon as one is
    /// refused, all within one deadline of `epoch_limit` epochs. Blocks until
    /// a server acknowledges, or fails with [`Error::ConnectTimeout`] (no
    /// answer in time) or [`Error::ConnectionRefused`] (see
    /// [`fail_on_refused`](Self::fail_on_refused)).
    ///
    /// The Connect is sent at once, again one epoch later, then every second
    /// epoch: a Go reference server heartbeats only in epochs in which it
    /// heard nothing, and such a heartbeat is taken as the answer too. An
    /// address that neither answers nor refuses holds the connect until the
    /// deadline.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use liveseq::{Client, Params, Server};
    ///
    /// # fn main() -> Result<(), liveseq::Error> {
    /// let params = Params { epoch_millis: 100, ..Params::default() };
    /// let server = Server::bind("127.0.0.1:0", params)?;
    /// // Nothing listens on the first address: the client moves on at once.
    /// let closed = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    /// let addrs: [SocketAddr; 2] = [closed, server.local_addr()?];
    /// let client = Client::builder().params(params).connect(&addrs[..])?;
    /// assert_eq!(client.peer_addr(), server.local_addr()?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn connect(self, addr: impl ToSocketAddrs) -> Result<Client, Error> {
        let options = self.options.check()?;
        if self.events.iter().any(|tx| tx.capacity().is_some()) {
            // Events are sent while the client's state is locked: a full
            // channel would stall the client, and dropping an event would
            // break "exactly one terminal event".
            return Err(Error::InvalidParams {
                field: "events",
                reason: "the channel must be unbounded",
            });
        }
        if let Some(policy) = &self.reconnect {
            if policy.delays.iter().any(|(lo, hi)| lo > hi) {
                return Err(Error::InvalidParams {
                    field: "reconnect",
                    reason: "delays must be (min, max) with min <= max",
                });
            }
        }
        let resolved: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|err| crate::error::context(err, "cannot resolve the server's address"))?
            .map(canonical)
            .collect();
        let no_address = || {
            Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no address to connect to",
            ))
        };
        if resolved.is_empty() {
            return Err(no_address());
        }
        let (socket, addrs) = io::bind_client_socket(&resolved)?;
        let Some((&server, fallbacks)) = addrs.split_first() else {
            return Err(no_address());
        };
        let isn = self.isn.unwrap_or_else(|| rand::random::<u32>().max(1));
        let (connected_tx, connected_rx) = bounded(1);
        let events = Subscribers::default();
        for tx in self.events {
            events.add(tx);
        }
        let core = ClientCore::new(
            Instant::now(),
            server,
            u64::from(isn),
            ClientConfig {
                params: options.params,
                coalesce_acks: options.coalesce_acks,
                send_buffer: options.send_buffer,
                inbox: options.inbox,
                reconnect: self.reconnect,
                seed: rand::random(),
                fallbacks: fallbacks.to_vec(),
                fail_on_refused: self.fail_on_refused,
            },
        );
        let role = ClientRole::new(server, events, connected_tx);
        let config = endpoint::Config {
            params: options.params,
            faults: options.faults,
            batch: 16,
            receive_threads: 1,
        };
        let endpoint = Endpoint::start(socket, config, ClientCell::new(core), role)?;
        // Connected to the server, the socket hears of refusals.
        endpoint.shared.io.follow_peer();
        // Sends the Connect and announces `Connecting`.
        endpoint.shared.run(|core, _, out| core.with(out, |_| ()))?;
        log::debug!(
            "connecting to {server} from {} with isn {isn}",
            endpoint.shared.io.local_addr()
        );
        match connected_rx.recv() {
            Ok(Ok(_)) => Ok(Client {
                endpoint,
                max_payload: options.max_payload,
                lost_seen: Mutex::new(None),
            }),
            Ok(Err(err)) => {
                let _ = endpoint.close(None);
                Err(err)
            }
            Err(_) => {
                let failure = endpoint.shared.failure();
                let _ = endpoint.close(None);
                Err(failure.unwrap_or(Error::Closed))
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
    /// // A socket that never answers: the connect gives up after epoch_limit epochs.
    /// let quiet = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    /// let addr = quiet.local_addr().unwrap();
    /// let params = Params { epoch_millis: 10, epoch_limit: 3, ..Params::default() };
    /// let err = Client::connect(addr, params).unwrap_err();
    /// assert!(matches!(err, Error::ConnectTimeout(a) if a == addr));
    ///
    /// // Nothing bound there at all: every Connect is refused.
    /// drop(quiet);
    /// let err = Client::connect(addr, params).unwrap_err();
    /// assert!(matches!(err, Error::ConnectionRefused(a) if a == addr));
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
        self.endpoint.shared.core.peek(|core| core.conn_id())
    }

    /// The local address of the client's socket.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        Ok(self.endpoint.shared.io.local_addr())
    }

    /// The server's address: the one that answered, of those `connect`
    /// was given. Always known, unlike
    /// [`Server::peer_addr`](crate::Server::peer_addr)'s.
    ///
    /// # Examples
    ///
    /// ```
    /// # use liveseq::{Client, Params, Server};
    /// # let params = Params { epoch_millis: 100, ..Params::default() };
    /// # let server = Server::bind("127.0.0.1:0", params).unwrap();
    /// let client = Client::connect(server.local_addr().unwrap(), params).unwrap();
    /// assert_eq!(client.peer_addr(), server.local_addr().unwrap());
    /// ```
    pub fn peer_addr(&self) -> SocketAddr {
        self.endpoint.shared.core.peek(|core| core.server())
    }

    /// The largest payload [`write`](Client::write) accepts.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// The connection's current state.
    pub fn state(&self) -> ConnState {
        self.endpoint.shared.core.peek(|core| core.state())
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
        self.endpoint
            .shared
            .core
            .peek(|core| core.stats(Instant::now()))
    }

    /// The server's messages, in order, as [`read`](Client::read) returns
    /// them, until the connection ends (see [`Messages`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Client, Params, Server, ServerEvent};
    ///
    /// let params = Params { epoch_millis: 50, ..Params::default() };
    /// let server = Server::bind("127.0.0.1:0", params).unwrap();
    /// let client = Client::connect(server.local_addr().unwrap(), params).unwrap();
    /// let Ok(ServerEvent::Connected { id, .. }) = server.next_event() else { panic!() };
    /// server.write(id, b"one").unwrap();
    /// server.write(id, b"two").unwrap();
    /// let mut messages = client.messages();
    /// assert_eq!(messages.next().unwrap().unwrap(), b"one");
    /// assert_eq!(messages.next().unwrap().unwrap(), b"two");
    /// ```
    pub fn messages(&self) -> Messages<'_> {
        Messages::new(move || self.read())
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
        // A timeout past the clock's end waits for ever, like `read`.
        self.read_inner(deadline(timeout).map(|_| timeout))
    }

    /// Like [`read`](Client::read), but returns `Ok(None)` at once when no
    /// message is waiting.
    ///
    /// # Examples
    ///
    /// ```
    /// # use liveseq::{Client, Params, Server, ServerEvent};
    /// # fn main() -> Result<(), liveseq::Error> {
    /// # let params = Params { epoch_millis: 100, ..Params::default() };
    /// # let server = Server::bind("127.0.0.1:0", params)?;
    /// let client = Client::connect(server.local_addr()?, params)?;
    /// assert_eq!(client.try_read()?, None);
    ///
    /// # let _connected = server.next_event()?;
    /// server.write(client.conn_id(), b"hi")?;
    /// let payload = loop {
    ///     if let Some(payload) = client.try_read()? {
    ///         break payload;
    ///     }
    ///     std::thread::yield_now(); // a real program would do other work here
    /// };
    /// assert_eq!(payload, b"hi");
    /// # Ok(())
    /// # }
    /// ```
    pub fn try_read(&self) -> Result<Option<Vec<u8>>, Error> {
        match self.read_inner(Some(Duration::ZERO)) {
            Ok(payload) => Ok(Some(payload)),
            Err(Error::Timeout) => Ok(None),
            Err(err) => Err(err),
        }
    }

    fn read_inner(&self, timeout: Option<Duration>) -> Result<Vec<u8>, Error> {
        self.endpoint.check_open()?;
        if let Some(id) = *self.lost_seen.lock() {
            return Err(Error::ConnectionLost(id));
        }
        let shared = &self.endpoint.shared;
        match shared.role.inbox.recv(timeout) {
            Ok(Item::Data(payload)) => {
                // Room in the inbox again (flow control).
                let len = payload.len();
                shared.read_done((), len);
                if shared.role.holding.load(Ordering::Relaxed) {
                    // A failure shows at the next call.
                    let _ = shared.run(|_, _, _| ());
                }
                Ok(payload)
            }
            Ok(Item::Lost(id)) => {
                *self.lost_seen.lock() = Some(id);
                Err(Error::ConnectionLost(id))
            }
            Ok(Item::Reconnected { old, new }) => Err(Error::Reconnected { old, new }),
            Err(Empty::Closed) => Err(self.endpoint.check_open().err().unwrap_or(Error::Closed)),
            Err(Empty::Timeout) => Err(Error::Timeout),
        }
    }

    /// Queues `payload` for the server: it is sent at once, from this
    /// thread, if the window allows, else as soon as acknowledgements make
    /// room. Returns at once unless the send buffer is full (see
    /// [`ClientBuilder::send_buffer`]); then it blocks until there is room,
    /// as a bounded channel does. While a reconnect is under way, what is
    /// written waits for the new connection.
    ///
    /// Fails with [`Error::PayloadTooLarge`], [`Error::ConnectionLost`] (a
    /// writer blocked when the connection is lost gets this too) or
    /// [`Error::Closed`] (a writer blocked when `close` is called gets this at once).
    pub fn write(&self, payload: &[u8]) -> Result<(), Error> {
        self.write_inner(payload, None)
    }

    /// Like [`write`](Client::write), but fails with [`Error::BufferFull`]
    /// at once instead of waiting for room.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Client, Error, Params};
    ///
    /// // A server that never answers data: after the Connect's Ack, silence.
    /// let quiet = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    /// let params = Params { epoch_millis: 50, epoch_limit: 20, ..Params::default() };
    /// let addr = quiet.local_addr().unwrap();
    /// let server = std::thread::spawn(move || {
    ///     let mut buf = [0u8; 1500];
    ///     let (n, from) = quiet.recv_from(&mut buf).unwrap();
    ///     let connect = liveseq::proto::Message::decode(&buf[..n]).unwrap();
    ///     let mut ack = Vec::new();
    ///     liveseq::proto::Message::ack(1, connect.seq_num).encode(&mut ack);
    ///     quiet.send_to(&ack, from).unwrap();
    ///     quiet // keep the port bound while the client writes
    /// });
    /// let client = Client::builder().params(params).send_buffer(2, 1 << 20).connect(addr).unwrap();
    /// client.try_write(b"one").unwrap();
    /// client.try_write(b"two").unwrap();
    /// assert!(matches!(client.try_write(b"three"), Err(Error::BufferFull)));
    /// # drop(server);
    /// ```
    pub fn try_write(&self, payload: &[u8]) -> Result<(), Error> {
        checks::check_payload(payload.len(), self.max_payload)?;
        self.endpoint.check_open()?;
        self.endpoint
            .shared
            .run(|core, now, out| core.with(out, |core| core.write(now, payload)))?
            .map_err(Error::from)
    }

    /// Like [`write`](Client::write), but gives up with [`Error::Timeout`]
    /// if the send buffer has no room within `timeout` (one past the
    /// clock's end waits as long as `write` would).
    pub fn write_timeout(&self, payload: &[u8], timeout: Duration) -> Result<(), Error> {
        self.write_inner(payload, deadline(timeout))
    }

    fn write_inner(&self, payload: &[u8], deadline: Option<Instant>) -> Result<(), Error> {
        checks::check_payload(payload.len(), self.max_payload)?;
        self.endpoint.check_open()?;
        let shared = &self.endpoint.shared;
        // A close makes every later write fail: a waiting one fails now.
        let blocked =
            |core: &ClientCore| core.is_full() && !core.state().is_terminal() && !core.is_closing();
        loop {
            // Under one lock: write if there is room (the common case).
            let written = shared.run(|cell, now, out| {
                cell.with(out, |core| {
                    (!blocked(core)).then(|| core.write(now, payload))
                })
            })?;
            if let Some(written) = written {
                return written.map_err(Error::from);
            }
            let room = shared.wait_for_room(0, || shared.core.peek(blocked), deadline);
            self.endpoint.check_open()?;
            if !room {
                return Err(Error::Timeout);
            }
        }
    }

    /// Closes the connection: blocks until every message written has been
    /// acknowledged (or the connection is lost: [`Error::ConnectionLost`]),
    /// then stops the client's threads and releases its socket. A pending
    /// reconnect is cancelled. A `read` blocked in another thread returns
    /// [`Error::Closed`] at once.
    pub fn close(&self) -> Result<(), Error> {
        self.endpoint.close(None)
    }

    /// Like [`close`](Client::close), but gives up draining after `timeout`:
    /// what is left is discarded and the result is [`Error::CloseTimedOut`].
    /// The threads have stopped when this returns, whatever the result. A
    /// timeout past the clock's end waits as long as `close` would.
    pub fn close_timeout(&self, timeout: Duration) -> Result<(), Error> {
        self.endpoint.close(deadline(timeout))
    }

    /// Closes without waiting: whatever is written and not yet acknowledged
    /// is discarded, the threads stop and the socket is released. Returns
    /// how many messages were discarded. For a program that must not wait
    /// on a peer that may be gone (dropping a `Client` flushes, which waits
    /// up to `epoch_limit` epochs for a server that died). A `read` blocked
    /// in another thread returns [`Error::Closed`].
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Client, Params, Server};
    ///
    /// let params = Params { epoch_millis: 50, ..Params::default() };
    /// let server = Server::bind("127.0.0.1:0", params).unwrap();
    /// let client = Client::connect(server.local_addr().unwrap(), params).unwrap();
    /// server.close().unwrap(); // the server is gone: nothing will be acknowledged
    /// client.write(b"lost").unwrap();
    /// assert_eq!(client.abort().unwrap(), 1);
    /// assert!(matches!(client.write(b"x"), Err(liveseq::Error::Closed)));
    /// ```
    pub fn abort(&self) -> Result<usize, Error> {
        match self.endpoint.close(Some(Instant::now())) {
            Ok(()) => Ok(0),
            Err(Error::CloseTimedOut { unacked }) => Ok(unacked),
            Err(err) => Err(err),
        }
    }

    /// Makes the client's receive thread panic, to test what a failure
    /// looks like from outside (the `test-hooks` feature).
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn fail_for_tests(&self) {
        self.endpoint.shared.request_panic();
    }

    /// Makes the next call into the client's core panic, on whichever thread
    /// makes it (a user's write, say), to test that the instance then fails
    /// as a whole (the `test-hooks` feature).
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn fail_in_core_for_tests(&self) {
        self.endpoint.shared.request_core_panic();
    }
}
