//! The LSP server: many clients on one UDP socket, with a fixed number of threads.
//!
//! A thin handle around a [`ServerCore`], which makes every protocol
//! decision; the threads of [`driver`](crate::driver) feed it.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::driver::endpoint::Endpoint;
use crate::driver::inbox::Empty;
use crate::driver::roles::ServerRole;
use crate::driver::time;
use crate::driver::{checks, endpoint, io};
use crate::lifecycle::{ConnEvent, ConnState};
use crate::listener::{Listener, Router};
use crate::options::Options;
use crate::proto::stats::{ConnStats, ServerStats};
use crate::proto::{CoreError, Limit, ServerConfig, ServerCore, DEFAULT_BUDGET};
use crate::{ConnId, Error, Faults, Params, ServerEvent};

/// An LSP server: accepts any number of clients on one UDP socket.
///
/// All methods take `&self`, and `Server` is `Send + Sync`: one thread may
/// block in [`read`](Server::read) while others write, close connections or
/// close the server. The server runs a fixed number of threads however many
/// clients it has: its receive threads ([`ServerBuilder::receive_threads`]),
/// an epoch thread and a close manager.
///
/// No peer can hurt the others: [`write`](Server::write) never blocks (a
/// peer that stops acknowledging is slowed down and then ended as a slow
/// consumer), a forged Connect cannot end a live connection, the server
/// sends at most three times what it received to an address that has not
/// proven it receives, and all it buffers is bounded by a memory budget
/// ([`ServerBuilder::memory_budget`]).
///
/// # Examples
///
/// An echo server:
///
/// ```no_run
/// use liveseq::{Error, Params, Server};
///
/// # fn main() -> Result<(), Error> {
/// let server = Server::bind("127.0.0.1:9999", Params::default())?;
/// loop {
///     match server.read() {
///         // A write never blocks; its errors concern one client: no `?`.
///         Ok((id, msg)) => if let Err(err) = server.write(id, &msg) {
///             eprintln!("client {id}: {err}");
///         },
///         Err(Error::ConnectionLost(id)) => eprintln!("client {id} lost"),
///         Err(Error::ConnectionClosed(_)) => {}
///         Err(err) => return Err(err),
///     }
/// }
/// # }
/// ```
pub struct Server {
    endpoint: Endpoint<ServerRole>,
    max_payload: usize,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.endpoint.shared.io.local_addr())
            .finish()
    }
}

/// Configures a [`Server`] before binding.
///
/// # Examples
///
/// ```
/// use liveseq::{Faults, Params, Server};
///
/// # fn main() -> Result<(), liveseq::Error> {
/// let server = Server::builder()
///     .params(Params { epoch_millis: 50, ..Params::default() })
///     .faults(Faults { read_drop_percent: 10, ..Faults::default() })
///     .max_datagram_size(9000)
///     .bind("127.0.0.1:0")?;
/// assert_eq!(server.max_payload(), liveseq::proto::max_payload(9000));
/// server.close()?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ServerBuilder {
    /// What a client is configured with too.
    options: Options,
    max_connections: Option<usize>,
    memory_budget: Option<usize>,
    receive_threads: Option<usize>,
}

impl ServerBuilder {
    /// The most connections the server keeps at once (default: unlimited).
    /// At the limit, Connects from new addresses are ignored (the client's
    /// connect times out) and a [`ConnState::Refused`] event is emitted, once
    /// per address per epoch. Connections already admitted, and their repeated
    /// Connects, are unaffected; a closing connection counts until it is gone.
    /// The check and the insertion happen under the table's lock, so the
    /// limit is never overshot, even with several receive threads, and a
    /// refused Connect allocates no connection state.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Params, Server};
    ///
    /// let server = Server::builder().max_connections(50).bind("127.0.0.1:0").unwrap();
    /// assert_eq!(server.totals().refused, 0);
    /// ```
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = Some(n);
        self
    }

    /// Protocol parameters (default: [`Params::default`]).
    pub fn params(mut self, params: Params) -> Self {
        self.options.params = params;
        self
    }

    /// Faults to inject into this server's traffic (default: none). A test
    /// hook, hidden from the documentation.
    #[doc(hidden)]
    pub fn faults(mut self, faults: Faults) -> Self {
        self.options.faults = faults;
        self
    }

    /// Largest datagram this server sends, 368 to 65507 bytes (default 1472).
    pub fn max_datagram_size(mut self, size: usize) -> Self {
        self.options.max_datagram_size = Some(size);
        self
    }

    /// Whether a burst of in-order Data is acknowledged with one CAck rather
    /// than one Ack per message (default: on). Out-of-order Data is always
    /// acknowledged individually. Go LSP peers accept CAck; turn this off for
    /// a peer that does not.
    pub fn ack_coalescing(mut self, on: bool) -> Self {
        self.options.ack_coalescing = Some(on);
        self
    }

    /// The most each connection may hold written and not yet acknowledged
    /// before it stops being writable (default: 1,024 messages or 1 MiB).
    /// [`Server::write`] never waits: past the limit it still queues, the
    /// connection's incoming messages wait in its inbox until it drains to
    /// half the limit (so the peer that causes the backlog is the one
    /// slowed down), and a peer that acknowledges nothing meanwhile for
    /// `epoch_limit` epochs (plus the back-off cap) is ended as a slow
    /// consumer. [`Server::try_write`] fails with [`Error::BufferFull`] past
    /// the limit instead, and [`Server::write_timeout`] waits for room.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::Server;
    ///
    /// let server = Server::builder().send_buffer(64, 64 * 1024).bind("127.0.0.1:0").unwrap();
    /// server.close().unwrap();
    /// ```
    pub fn send_buffer(mut self, messages: usize, bytes: usize) -> Self {
        self.options.send_buffer = Some(Limit { messages, bytes });
        self
    }

    /// The most each connection may hold delivered and not yet read
    /// (default: 4,096 messages or 4 MiB). Past it, new Data from that
    /// client is left unacknowledged, as if lost, until the application
    /// reads: the client's own window and back-off slow it down, with no
    /// message on the wire that a Go peer would not understand.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::Server;
    ///
    /// let server = Server::builder().inbox(100, 1 << 20).bind("127.0.0.1:0").unwrap();
    /// server.close().unwrap();
    /// ```
    pub fn inbox(mut self, messages: usize, bytes: usize) -> Self {
        self.options.inbox = Some(Limit { messages, bytes });
        self
    }

    /// The server-wide memory budget in bytes (default
    /// [`DEFAULT_BUDGET`](crate::proto::DEFAULT_BUDGET), 128 MiB).
    ///
    /// Everything the server holds for its connections is charged by what
    /// it really holds (payload plus a fixed overhead per message): send
    /// buffers, inboxes, out-of-order and held Data, and queued events.
    /// Each connection has a small floor of its own (a window's worth of
    /// the largest messages each way) and draws the rest from this budget;
    /// connections over their own limits draw only from its first half. When
    /// it is spent the server stops taking more: Data goes unacknowledged
    /// (the peers back off), [`Server::write`] fails with
    /// [`Error::BudgetExhausted`], and Connects from new addresses are
    /// refused. [`ServerStats::budget_in_use`] shows where it stands.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::Server;
    ///
    /// let server = Server::builder().memory_budget(16 << 20).bind("127.0.0.1:0").unwrap();
    /// assert_eq!(server.totals().budget, 16 << 20);
    /// server.close().unwrap();
    /// ```
    pub fn memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = Some(bytes);
        self
    }

    /// How many threads receive on the server's socket (default: half the
    /// cores the process may use, at least one and at most
    /// [`MAX_DEFAULT_RECEIVE_THREADS`]; the other half is left to the
    /// threads that read and write, since every message crosses both).
    /// They share the one socket; each datagram is handled under its own
    /// connection's lock, so threads serving different clients never wait
    /// for each other, and each connection's messages and events still
    /// reach the application in order. More threads than cores only adds
    /// switching; one is the least (zero means one).
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::Server;
    ///
    /// let server = Server::builder().receive_threads(2).bind("127.0.0.1:0").unwrap();
    /// server.close().unwrap();
    /// ```
    pub fn receive_threads(mut self, n: usize) -> Self {
        self.receive_threads = Some(n.max(1));
        self
    }

    /// Binds the server's socket to `addr` and starts serving. Does not block.
    pub fn bind(self, addr: impl ToSocketAddrs) -> Result<Server, Error> {
        self.start(addr, None)
    }

    /// Binds like [`bind`](ServerBuilder::bind), but hands out each
    /// connection as its own handle, as `TcpListener` does: see [`Listener`].
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Params, Server};
    ///
    /// let params = Params { epoch_millis: 50, ..Params::default() };
    /// let listener = Server::builder().params(params).max_connections(100).listen("127.0.0.1:0").unwrap();
    /// assert_ne!(listener.local_addr().unwrap().port(), 0);
    /// listener.close().unwrap();
    /// ```
    pub fn listen(self, addr: impl ToSocketAddrs) -> Result<Listener, Error> {
        Ok(Listener::new(self.start(addr, Some(Router::new()))?))
    }

    fn start(self, addr: impl ToSocketAddrs, router: Option<Router>) -> Result<Server, Error> {
        let options = self.options.check()?;
        let mut last_err = None;
        for addr in addr.to_socket_addrs()? {
            match io::bind_socket(addr) {
                Ok(socket) => {
                    let mut config = ServerConfig::new(options.params);
                    config.max_connections = self.max_connections.unwrap_or(usize::MAX);
                    config.coalesce_acks = options.coalesce_acks;
                    config.send_buffer = options.send_buffer;
                    config.inbox = options.inbox;
                    config.budget = self.memory_budget.unwrap_or(DEFAULT_BUDGET);
                    config.floor = ServerConfig::floor_for(options.params, options.max_payload);
                    // Each handle's events wait in its own queue: at most two.
                    config.charge_events = router.is_none();
                    let core = ServerCore::new(config);
                    let role = ServerRole::new(router);
                    let config = endpoint::Config {
                        params: options.params,
                        faults: options.faults,
                        batch: 32,
                        receive_threads: self
                            .receive_threads
                            .unwrap_or_else(default_receive_threads),
                    };
                    let endpoint = Endpoint::start(socket, config, core, role)?;
                    log::debug!("server listening on {}", endpoint.shared.io.local_addr());
                    return Ok(Server {
                        endpoint,
                        max_payload: options.max_payload,
                    });
                }
                Err(err) => last_err = Some(err),
            }
        }
        Err(Error::Io(last_err.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to bind to")
        })))
    }
}

/// The most receive threads a server starts by default, however many cores
/// it has: on one socket, more stopped helping in our measurements (raw
/// UDP echo on one socket peaked at 8 threads on a 16-core machine).
pub const MAX_DEFAULT_RECEIVE_THREADS: usize = 8;

/// Half the cores the process may use, from 1 to
/// [`MAX_DEFAULT_RECEIVE_THREADS`] (see [`ServerBuilder::receive_threads`]).
pub(crate) fn default_receive_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / 2).clamp(1, MAX_DEFAULT_RECEIVE_THREADS)
}

impl Server {
    /// Binds to `addr` with the given parameters and no faults.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Params, Server};
    ///
    /// let server = Server::bind("127.0.0.1:0", Params::default()).unwrap();
    /// assert_ne!(server.local_addr().unwrap().port(), 0);
    /// server.close().unwrap();
    /// ```
    pub fn bind(addr: impl ToSocketAddrs, params: Params) -> Result<Server, Error> {
        Server::builder().params(params).bind(addr)
    }

    /// A builder for the less common settings.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The address the server's socket is bound to.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        Ok(self.endpoint.shared.io.local_addr())
    }

    /// The largest payload [`write`](Server::write) accepts.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Blocks until a message from any client arrives (each client's messages
    /// in order), or a connection ends.
    ///
    /// Returns `Err(ConnectionLost(id))` once per lost connection, after its
    /// last message; `Err(ConnectionClosed(id))` once after
    /// [`close_conn`](Server::close_conn); `Err(Closed)` after [`close`](Server::close).
    pub fn read(&self) -> Result<(ConnId, Vec<u8>), Error> {
        self.read_inner(None)
    }

    /// Like [`read`](Server::read), but gives up with [`Error::Timeout`] after `timeout`.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Error, Params, Server};
    /// use std::time::Duration;
    ///
    /// let server = Server::bind("127.0.0.1:0", Params::default()).unwrap();
    /// assert!(matches!(server.read_timeout(Duration::from_millis(5)), Err(Error::Timeout)));
    /// ```
    pub fn read_timeout(&self, timeout: Duration) -> Result<(ConnId, Vec<u8>), Error> {
        self.read_inner(Some(timeout))
    }

    fn read_inner(&self, timeout: Option<Duration>) -> Result<(ConnId, Vec<u8>), Error> {
        loop {
            return match self.next_event_inner(timeout)? {
                ServerEvent::Connected { .. } => continue,
                ServerEvent::Message { id, payload } => Ok((id, payload)),
                ServerEvent::Lost { id } => Err(Error::ConnectionLost(id)),
                ServerEvent::Closed { id } => Err(Error::ConnectionClosed(id)),
                // `read` mirrors the Go API, which has no such events.
                _ => continue,
            };
        }
    }

    /// Blocks until something happens on any connection: a client connected,
    /// a message arrived, or a connection ended. The event-style counterpart
    /// of [`read`](Server::read), for servers that track their clients.
    ///
    /// Every connection's events come in order: [`ServerEvent::Connected`]
    /// first, then its messages, then exactly one of [`ServerEvent::Closed`]
    /// (after [`close_conn`](Server::close_conn)) or [`ServerEvent::Lost`];
    /// no message is reported after its connection's end. The only errors
    /// are [`Error::Closed`], after [`close`](Server::close), and
    /// [`Error::Failed`], so `?` is safe here.
    ///
    /// `next_event` and [`read`](Server::read) take from the same queue:
    /// a server uses one or the other (`read` skips `Connected` and
    /// `Writable`). A loop that serves every client from one thread may
    /// call [`write`](Server::write), which never blocks; its errors
    /// concern one connection, so handle them rather than `?` them.
    ///
    /// # Examples
    ///
    /// An echo server that keeps track of its clients:
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use liveseq::{Client, Params, Server, ServerEvent};
    ///
    /// # fn main() -> Result<(), liveseq::Error> {
    /// let params = Params { epoch_millis: 50, ..Params::default() };
    /// let server = Server::bind("127.0.0.1:0", params)?;
    /// let client = Client::connect(server.local_addr()?, params)?;
    /// client.write(b"hi")?;
    ///
    /// let mut clients = HashMap::new();
    /// loop {
    ///     match server.next_event()? {
    ///         ServerEvent::Connected { id, peer } => {
    ///             clients.insert(id, peer);
    ///         }
    ///         ServerEvent::Message { id, payload } => {
    ///             if let Err(err) = server.write(id, &payload) {
    ///                 eprintln!("connection {id}: {err}");
    ///             }
    ///             break; // just one message in this example
    ///         }
    ///         ServerEvent::Closed { id } | ServerEvent::Lost { id } => {
    ///             clients.remove(&id);
    ///         }
    ///         _ => {}
    ///     }
    /// }
    /// assert_eq!(client.read()?, b"hi");
    /// assert_eq!(clients[&client.conn_id()].port(), client.local_addr()?.port());
    /// # Ok(())
    /// # }
    /// ```
    pub fn next_event(&self) -> Result<ServerEvent, Error> {
        self.next_event_inner(None)
    }

    /// Like [`next_event`](Server::next_event), but gives up with
    /// [`Error::Timeout`] after `timeout`.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Error, Params, Server};
    /// use std::time::Duration;
    ///
    /// let server = Server::bind("127.0.0.1:0", Params::default()).unwrap();
    /// assert!(matches!(server.next_event_timeout(Duration::from_millis(5)), Err(Error::Timeout)));
    /// ```
    pub fn next_event_timeout(&self, timeout: Duration) -> Result<ServerEvent, Error> {
        self.next_event_inner(Some(timeout))
    }

    /// The next event if one is ready, without blocking.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Params, Server};
    ///
    /// let server = Server::bind("127.0.0.1:0", Params::default()).unwrap();
    /// assert_eq!(server.try_next_event().unwrap(), None);
    /// ```
    pub fn try_next_event(&self) -> Result<Option<ServerEvent>, Error> {
        match self.next_event_inner(Some(Duration::ZERO)) {
            Ok(event) => Ok(Some(event)),
            Err(Error::Timeout) => Ok(None),
            Err(err) => Err(err),
        }
    }

    fn next_event_inner(&self, timeout: Option<Duration>) -> Result<ServerEvent, Error> {
        let shared = &self.endpoint.shared;
        let role = &shared.role;
        // A timeout past what the clock can hold means no deadline.
        let deadline = timeout.and_then(time::deadline);
        loop {
            self.endpoint.check_open()?;
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let event = match role.inbox.recv(left) {
                Ok(event) => event,
                Err(Empty::Closed) => {
                    return Err(self.endpoint.check_open().err().unwrap_or(Error::Closed))
                }
                Err(Empty::Timeout) => return Err(Error::Timeout),
            };
            match &event {
                ServerEvent::Message { id, payload } => {
                    if role.is_discarding(*id) {
                        continue;
                    }
                    // Room in the connection's inbox again (flow control).
                    self.note_read(*id, payload.len());
                }
                ServerEvent::Closed { id } => {
                    role.closed_read(*id);
                    shared.read_done(None, 0);
                }
                _ => shared.read_done(None, 0),
            }
            return Ok(event);
        }
    }

    /// The address connection `id` belongs to, or `None` once it is gone.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Client, Params, Server};
    ///
    /// let params = Params { epoch_millis: 50, ..Params::default() };
    /// let server = Server::bind("127.0.0.1:0", params).unwrap();
    /// let client = Client::connect(server.local_addr().unwrap(), params).unwrap();
    /// let peer = server.peer_addr(client.conn_id()).unwrap();
    /// assert_eq!(peer.port(), client.local_addr().unwrap().port());
    /// ```
    pub fn peer_addr(&self, id: ConnId) -> Option<SocketAddr> {
        self.endpoint.shared.core.peer_addr(id)
    }

    /// Queues `payload` for connection `id` and returns at once: it is sent
    /// from this thread if the window allows, else as soon as
    /// acknowledgements make room. **Never blocks**, so a server loop that
    /// serves every client from one thread cannot be stalled by any of them.
    ///
    /// A connection whose peer does not keep up passes its send buffer limit
    /// (see [`ServerBuilder::send_buffer`]): the message is still queued,
    /// the connection is then not [writable](Server::is_writable), and its
    /// incoming messages wait in its inbox until it drains, so the peer
    /// that causes the backlog is the one slowed down. A peer that
    /// acknowledges nothing meanwhile is ended as a slow consumer
    /// ([`Error::SlowConsumer`]). Nothing is ever dropped silently: a write
    /// that is not queued returns an error.
    ///
    /// Errors are about connection `id` alone, so a loop serving many
    /// clients handles them and carries on (never `?`):
    /// [`Error::ConnectionClosed`] after [`close_conn`](Server::close_conn),
    /// [`Error::ConnectionLost`] or [`Error::SlowConsumer`] once it ended so
    /// (for `epoch_limit` epochs, then [`Error::UnknownConnection`], also
    /// returned for ids that never existed), [`Error::BudgetExhausted`] when
    /// the server's memory budget is spent, [`Error::PayloadTooLarge`];
    /// and [`Error::Closed`] after [`close`](Server::close).
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Client, Params, Server, ServerEvent};
    ///
    /// # fn main() -> Result<(), liveseq::Error> {
    /// let params = Params { epoch_millis: 50, ..Params::default() };
    /// let server = Server::bind("127.0.0.1:0", params)?;
    /// let client = Client::connect(server.local_addr()?, params)?;
    /// client.write(b"ping")?;
    /// loop {
    ///     if let ServerEvent::Message { id, payload } = server.next_event()? {
    ///         if let Err(err) = server.write(id, &payload) {
    ///             eprintln!("connection {id}: {err}"); // only this one is affected
    ///         }
    ///         break;
    ///     }
    /// }
    /// assert_eq!(client.read()?, b"ping");
    /// # Ok(())
    /// # }
    /// ```
    pub fn write(&self, id: ConnId, payload: &[u8]) -> Result<(), Error> {
        checks::check_payload(payload.len(), self.max_payload)?;
        self.endpoint.check_open()?;
        self.endpoint
            .shared
            .run(|core, now, out| core.write(now, id, payload, out))
            .map_err(Error::from)
    }

    /// Like [`write`](Server::write), but fails with [`Error::BufferFull`]
    /// at once, queuing nothing, while the connection's send buffer is at
    /// its limit.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Client, Error, Params, Server};
    ///
    /// let params = Params { epoch_millis: 50, ..Params::default() };
    /// let server = Server::builder().params(params).send_buffer(2, 1 << 20).bind("127.0.0.1:0").unwrap();
    /// let client = Client::connect(server.local_addr().unwrap(), params).unwrap();
    /// let id = client.conn_id();
    /// // The client never reads, but LSP acknowledges on receipt: writes go
    /// // through as long as acknowledgements keep the buffer from filling.
    /// match server.try_write(id, b"hello") {
    ///     Ok(()) | Err(Error::BufferFull) => {}
    ///     Err(other) => panic!("{other}"),
    /// }
    /// ```
    pub fn try_write(&self, id: ConnId, payload: &[u8]) -> Result<(), Error> {
        checks::check_payload(payload.len(), self.max_payload)?;
        self.endpoint.check_open()?;
        self.endpoint
            .shared
            .run(|core, now, out| core.try_write(now, id, payload, out))
            .map_err(Error::from)
    }

    /// Like [`try_write`](Server::try_write), but waits up to `timeout` for
    /// room in the connection's send buffer, then fails with
    /// [`Error::Timeout`]. Only the calling thread waits.
    pub fn write_timeout(
        &self,
        id: ConnId,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<(), Error> {
        self.write_waiting(id, payload, time::deadline(timeout))
    }

    /// Writes once connection `id` has room, waiting until `deadline` (or
    /// for ever: `None`).
    pub(crate) fn write_waiting(
        &self,
        id: ConnId,
        payload: &[u8],
        deadline: Option<Instant>,
    ) -> Result<(), Error> {
        checks::check_payload(payload.len(), self.max_payload)?;
        self.endpoint.check_open()?;
        let shared = &self.endpoint.shared;
        // Only a write that could succeed once there is room waits: one to a
        // connection closing (close_conn) or gone fails at once.
        let core = &shared.core;
        let blocked = || {
            core.is_full(id) && !core.is_closing() && core.state(id) == Some(ConnState::Connected)
        };
        loop {
            // Try first: a write that finds room (the common case) takes one
            // lock of its connection. One that finds none waits, then tries
            // again (another writer may have taken the room meanwhile).
            match shared.run(|core, now, out| core.try_write(now, id, payload, out)) {
                Err(CoreError::BufferFull) => {}
                result => return result.map_err(Error::from),
            }
            let room = shared.wait_for_room(id.into(), blocked, deadline);
            self.endpoint.check_open()?;
            if !room {
                return Err(Error::Timeout);
            }
        }
    }

    /// The application took a message of `len` bytes from connection `id`.
    pub(crate) fn note_read(&self, id: ConnId, len: usize) {
        let shared = &self.endpoint.shared;
        let role = &shared.role;
        // Room in the connection's inbox again (flow control).
        shared.read_done(Some(id), len);
        if role.is_holding(id) {
            // Its peer waits for what this read lets us acknowledge.
            shared.run(|_, _, _| ());
        }
    }

    pub(crate) fn router(&self) -> Option<&Router> {
        self.endpoint.shared.role.router.as_ref()
    }

    pub(crate) fn check_open(&self) -> Result<(), Error> {
        self.endpoint.check_open()
    }

    pub(crate) fn params(&self) -> Params {
        self.endpoint.shared.io.params
    }

    /// Whether connection `id` is open and below its send buffer limit:
    /// what is written to it is on its way, and its messages reach
    /// [`read`](Server::read). A broadcaster may skip connections that are
    /// not writable and resume at their [`ServerEvent::Writable`].
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Client, Params, Server};
    ///
    /// let params = Params { epoch_millis: 50, ..Params::default() };
    /// let server = Server::bind("127.0.0.1:0", params).unwrap();
    /// let client = Client::connect(server.local_addr().unwrap(), params).unwrap();
    /// assert!(server.is_writable(client.conn_id()));
    /// server.close_conn(client.conn_id()).unwrap();
    /// assert!(!server.is_writable(client.conn_id()));
    /// ```
    pub fn is_writable(&self, id: ConnId) -> bool {
        self.endpoint.shared.core.is_writable(id)
    }

    /// Closes connection `id` without blocking: messages already written are
    /// still delivered (in the background), but `read` returns nothing more
    /// from it, only one `Err(ConnectionClosed(id))` (and `next_event` one
    /// [`ServerEvent::Closed`]).
    pub fn close_conn(&self, id: ConnId) -> Result<(), Error> {
        self.endpoint.check_open()?;
        let shared = &self.endpoint.shared;
        shared
            .run(|core, now, out| core.close_conn(now, id, out))
            .map_err(Error::from)
    }

    /// Closes the server: blocks until every message written to every client
    /// is acknowledged, then stops the server's threads and releases its
    /// socket. Connections lost meanwhile are reported with
    /// [`Error::LostDuringClose`]. A `read` blocked in another thread returns
    /// [`Error::Closed`] at once.
    pub fn close(&self) -> Result<(), Error> {
        self.endpoint.close(None)
    }

    /// Like [`close`](Server::close), but gives up draining once `timeout`
    /// has passed: what is left is discarded and the result is
    /// [`Error::CloseTimedOut`] with the number of messages never
    /// acknowledged. In every case the server's threads have stopped and its
    /// socket is released when this returns.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Params, Server};
    /// use std::time::Duration;
    ///
    /// let server = Server::bind("127.0.0.1:0", Params::default()).unwrap();
    /// server.close_timeout(Duration::from_secs(1)).unwrap();
    /// ```
    pub fn close_timeout(&self, timeout: Duration) -> Result<(), Error> {
        self.endpoint.close(time::deadline(timeout))
    }

    /// Subscribes to lifecycle events of every connection, from now on.
    ///
    /// Each subscriber gets every event; one connection's events arrive in
    /// the order its state changed, ending with exactly one terminal event
    /// (`Closed`, `Lost` or `Refused`). The channel is unbounded: a slow
    /// subscriber never blocks the server, and dropping the receiver
    /// unsubscribes.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Client, ConnState, Params, Server};
    ///
    /// let params = Params { epoch_millis: 50, ..Params::default() };
    /// let server = Server::bind("127.0.0.1:0", params).unwrap();
    /// let events = server.subscribe();
    /// let client = Client::connect(server.local_addr().unwrap(), params).unwrap();
    /// let first = events.recv().unwrap();
    /// assert_eq!((first.conn_id, first.state), (Some(client.conn_id()), ConnState::Connected));
    /// ```
    pub fn subscribe(&self) -> Receiver<ConnEvent> {
        self.endpoint.shared.role.events.subscribe()
    }

    /// The state of connection `id`, or `None` once it is gone (closed, lost
    /// or never existed).
    pub fn state(&self, id: ConnId) -> Option<ConnState> {
        self.endpoint.shared.core.state(id)
    }

    /// The ids of the connections the server has now, in ascending order:
    /// connected ones and closing ones (after [`close_conn`](Server::close_conn),
    /// until everything written to them is acknowledged). To broadcast, use
    /// [`writable`](Server::writable): writes to a closing connection fail.
    pub fn connections(&self) -> Vec<ConnId> {
        self.endpoint.shared.core.connections()
    }

    /// The ids of the connections that accept writes now (connected and not
    /// closing), in ascending order. A connection may still end between
    /// this call and a write to it: a broadcast ignores
    /// [`Error::UnknownConnection`] from such a write.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Client, Params, Server};
    ///
    /// let params = Params { epoch_millis: 50, ..Params::default() };
    /// let server = Server::bind("127.0.0.1:0", params).unwrap();
    /// let a = Client::connect(server.local_addr().unwrap(), params).unwrap();
    /// let b = Client::connect(server.local_addr().unwrap(), params).unwrap();
    /// server.close_conn(a.conn_id()).unwrap();
    /// assert_eq!(server.writable(), [b.conn_id()]);
    /// ```
    pub fn writable(&self) -> Vec<ConnId> {
        self.endpoint.shared.core.writable()
    }

    /// A snapshot of connection `id`'s statistics, or `None` once it is gone.
    pub fn stats(&self, id: ConnId) -> Option<ConnStats> {
        self.endpoint.shared.core.stats(Instant::now(), id)
    }

    /// Feeds one datagram to the receive path as if it came from `from`.
    /// Only in fuzzing builds (`--cfg fuzzing`, set by cargo-fuzz).
    #[cfg(fuzzing)]
    #[doc(hidden)]
    pub fn fuzz_inject(&self, from: SocketAddr, datagram: &[u8]) {
        self.endpoint.shared.inject(from, datagram);
    }

    /// Server-wide totals.
    pub fn totals(&self) -> ServerStats {
        self.endpoint.shared.core.totals()
    }

    /// Makes the server's receive thread panic, to test what a failure
    /// looks like from outside. Not for use outside tests.
    #[doc(hidden)]
    pub fn fail_for_tests(&self) {
        self.endpoint.shared.request_panic();
    }
}
