//! The LSP server: many clients on one UDP socket, with a fixed number of threads.
//!
//! A thin handle around a [`ServerCore`], which makes every protocol
//! decision; the threads of [`driver`](crate::driver) feed it.

use std::collections::HashSet;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use parking_lot::Mutex;

use crate::driver::endpoint::{self, Core, Empty, Endpoint, Inbox, Role};
use crate::lifecycle::{ConnEvent, ConnState, Subscribers};
use crate::proto::{
    max_payload, Limit, Message, ServerConfig, ServerCore, ServerOutput, DEFAULT_INBOX,
    DEFAULT_MAX_DATAGRAM, DEFAULT_SEND_BUFFER,
};
use crate::stats::{ConnStats, ServerStats};
use crate::{Error, Faults, Params, ServerEvent};

/// Identifies one client connection of a [`Server`].
///
/// # Examples
///
/// ```
/// use liveseq::ConnId;
///
/// let id = ConnId::from(7);
/// assert_eq!(u32::from(id), 7);
/// assert_eq!(id.to_string(), "7");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub(crate) u32);

impl From<u32> for ConnId {
    fn from(id: u32) -> Self {
        ConnId(id)
    }
}

impl From<ConnId> for u32 {
    fn from(id: ConnId) -> Self {
        id.0
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Core for ServerCore {
    type Output = ServerOutput;
    type Inbox = ConnId;
    fn read_done(&mut self, now: Instant, id: ConnId, messages: usize, bytes: usize) {
        ServerCore::read_done(self, now, id, messages, bytes);
    }
    fn handle(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        ServerCore::handle(self, now, from, datagram);
    }
    fn end_batch(&mut self, now: Instant) {
        ServerCore::end_batch(self, now);
    }
    fn handle_epoch(&mut self, now: Instant) {
        ServerCore::handle_epoch(self, now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn handle_timeout(&mut self, _now: Instant) {}
    fn close(&mut self, now: Instant) {
        ServerCore::close(self, now);
    }
    fn abort(&mut self, now: Instant) -> usize {
        ServerCore::abort(self, now)
    }
    fn poll_transmit(&mut self) -> Option<(SocketAddr, Message<'_>)> {
        ServerCore::poll_transmit(self)
    }
    fn poll_output(&mut self) -> Option<ServerOutput> {
        ServerCore::poll_output(self)
    }
}

/// The server's application side: where the core's outputs go.
pub(crate) struct ServerRole {
    inbox: Inbox<ServerEvent>,
    events: Subscribers,
    /// Ids passed to `close_conn` whose `Closed` event has not been read
    /// yet: their messages still in the inbox are skipped.
    user_closed: Mutex<HashSet<ConnId>>,
}

impl Role for ServerRole {
    type Core = ServerCore;

    fn publish(&self, output: ServerOutput) -> bool {
        match output {
            ServerOutput::State {
                conn_id,
                peer,
                state,
                at,
            } => self.events.emit(conn_id, peer, state, at),
            ServerOutput::App(event) => {
                let _ = self.inbox.tx.send(event);
            }
            ServerOutput::Drained => return true,
        }
        false
    }

    fn close_result(&self, core: &ServerCore) -> Result<(), Error> {
        let mut lost = core.lost_during_close().to_vec();
        if lost.is_empty() {
            Ok(())
        } else {
            lost.sort();
            Err(Error::LostDuringClose(lost))
        }
    }

    fn shut(&self) {
        self.inbox.shut();
    }
}

/// An LSP server: accepts any number of clients on one UDP socket.
///
/// All methods take `&self`, and `Server` is `Send + Sync`: one thread may
/// block in [`read`](Server::read) while others write, close connections or
/// close the server. The server runs three threads however many clients it has.
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
///         Ok((id, msg)) => server.write(id, &msg)?,
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
    params: Params,
    faults: Faults,
    max_datagram_size: Option<usize>,
    max_connections: Option<usize>,
    ack_coalescing: Option<bool>,
    send_buffer: Option<Limit>,
    inbox: Option<Limit>,
}

impl ServerBuilder {
    /// The most connections the server keeps at once (default: unlimited).
    /// At the limit, Connects from new addresses are ignored (the client's
    /// connect times out) and a [`ConnState::Refused`] event is emitted, once
    /// per address per epoch. Connections already admitted, and their repeated
    /// Connects, are unaffected; a closing connection counts until it is gone.
    /// The check and the insertion happen under one lock, so the limit is
    /// never overshot, and a refused Connect allocates no connection state.
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
        self.params = params;
        self
    }

    /// Faults to inject into this server's traffic (default: none).
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Largest datagram this server sends, 368 to 65507 bytes (default 1472).
    pub fn max_datagram_size(mut self, size: usize) -> Self {
        self.max_datagram_size = Some(size);
        self
    }

    /// Whether a burst of in-order Data is acknowledged with one CAck rather
    /// than one Ack per message (default: on). Out-of-order Data is always
    /// acknowledged individually. Go LSP peers accept CAck; turn this off for
    /// a peer that does not.
    pub fn ack_coalescing(mut self, on: bool) -> Self {
        self.ack_coalescing = Some(on);
        self
    }

    /// The most each connection may hold written and not yet acknowledged
    /// (default: 1,024 messages or 1 MiB). [`Server::write`] blocks while a
    /// connection's buffer is full, like a bounded channel, so a fast writer
    /// holds bounded memory; [`Server::try_write`] fails at once instead.
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
        self.send_buffer = Some(Limit { messages, bytes });
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
        self.inbox = Some(Limit { messages, bytes });
        self
    }

    /// Binds the server's socket to `addr` and starts serving. Does not block.
    pub fn bind(self, addr: impl ToSocketAddrs) -> Result<Server, Error> {
        self.params.validate()?;
        let max_datagram = self.max_datagram_size.unwrap_or(DEFAULT_MAX_DATAGRAM);
        endpoint::check_datagram_size(max_datagram)?;
        let send_buffer = self.send_buffer.unwrap_or(DEFAULT_SEND_BUFFER);
        let inbox = self.inbox.unwrap_or(DEFAULT_INBOX);
        endpoint::check_limit("send_buffer", send_buffer)?;
        endpoint::check_limit("inbox", inbox)?;
        let mut last_err = None;
        for addr in addr.to_socket_addrs()? {
            match endpoint::bind_socket(addr) {
                Ok(socket) => {
                    let core = ServerCore::new(ServerConfig {
                        params: self.params,
                        max_connections: self.max_connections.unwrap_or(usize::MAX),
                        coalesce_acks: self.ack_coalescing.unwrap_or(true),
                        send_buffer,
                        inbox,
                    });
                    let role = ServerRole {
                        inbox: Inbox::new(),
                        events: Subscribers::default(),
                        user_closed: Mutex::new(HashSet::new()),
                    };
                    let config = endpoint::Config {
                        params: self.params,
                        faults: self.faults,
                        batch: 32,
                    };
                    let endpoint = Endpoint::start(socket, config, core, role)?;
                    log::debug!("server listening on {}", endpoint.shared.io.local_addr());
                    return Ok(Server {
                        endpoint,
                        max_payload: max_payload(max_datagram),
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
    /// a server uses one or the other (`read` skips `Connected`). A loop
    /// that serves every client from one thread should write with
    /// [`try_write`](Server::try_write) (or [`write_timeout`](Server::write_timeout)):
    /// [`write`](Server::write) waits while that client's send buffer is
    /// full, and a client that stops acknowledging would stall everyone.
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
    ///             server.write(id, &payload)?;
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
        let deadline = timeout.map(|t| Instant::now() + t);
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
                    if role.user_closed.lock().contains(id) {
                        continue;
                    }
                    // Room in the connection's inbox again (flow control).
                    let (id, len) = (*id, payload.len());
                    shared.read_done(id, len);
                }
                ServerEvent::Closed { id } => {
                    role.user_closed.lock().remove(id);
                }
                _ => {}
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
        self.endpoint.shared.peek(|core| core.peer_addr(id))
    }

    /// Queues `payload` for connection `id`: it is sent at once, from this
    /// thread, if the window allows, else as soon as acknowledgements make
    /// room. Returns at once unless the connection's send buffer is full
    /// (see [`ServerBuilder::send_buffer`]); then it blocks until there is
    /// room, as a bounded channel does. Only writers to that connection wait.
    ///
    /// Fails with [`Error::UnknownConnection`] if there is no such connection
    /// (it never existed, was lost, or finished closing; a writer blocked on
    /// a connection that ends gets this too), [`Error::ConnectionClosed`]
    /// after [`close_conn`](Server::close_conn) (a writer blocked on that
    /// connection gets this at once), [`Error::PayloadTooLarge`], or
    /// [`Error::Closed`].
    pub fn write(&self, id: ConnId, payload: &[u8]) -> Result<(), Error> {
        self.write_inner(id, payload, None)
    }

    /// Like [`write`](Server::write), but fails with [`Error::BufferFull`]
    /// at once instead of waiting for room.
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
        endpoint::check_payload(payload.len(), self.max_payload)?;
        self.endpoint.check_open()?;
        self.endpoint
            .shared
            .with_core(|core, now| core.write(now, id, payload))
    }

    /// Like [`write`](Server::write), but gives up with [`Error::Timeout`]
    /// if the send buffer has no room within `timeout`.
    pub fn write_timeout(
        &self,
        id: ConnId,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<(), Error> {
        self.write_inner(id, payload, Some(Instant::now() + timeout))
    }

    fn write_inner(
        &self,
        id: ConnId,
        payload: &[u8],
        deadline: Option<Instant>,
    ) -> Result<(), Error> {
        endpoint::check_payload(payload.len(), self.max_payload)?;
        self.endpoint.check_open()?;
        let shared = &self.endpoint.shared;
        // Only a write that could succeed once there is room waits: one to a
        // connection closing (close_conn) or gone fails at once.
        let written = shared.with_core_when(
            |core| {
                core.is_full(id)
                    && !core.is_closing()
                    && core.state(id) == Some(ConnState::Connected)
            },
            deadline,
            |core, now| core.write(now, id, payload),
        );
        self.endpoint.check_open()?;
        written.unwrap_or(Err(Error::Timeout))
    }

    /// Closes connection `id` without blocking: messages already written are
    /// still delivered (in the background), but `read` returns nothing more
    /// from it, only one `Err(ConnectionClosed(id))` (and `next_event` one
    /// [`ServerEvent::Closed`]).
    pub fn close_conn(&self, id: ConnId) -> Result<(), Error> {
        self.endpoint.check_open()?;
        let shared = &self.endpoint.shared;
        shared.with_core(|core, now| {
            let open = core.state(id) == Some(ConnState::Connected);
            if open {
                shared.role.user_closed.lock().insert(id);
            }
            core.close_conn(now, id)
        })
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
        self.endpoint.close(Some(Instant::now() + timeout))
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
        self.endpoint.shared.peek(|core| core.state(id))
    }

    /// The ids of the connections the server has now, in ascending order:
    /// connected ones and closing ones (after [`close_conn`](Server::close_conn),
    /// until everything written to them is acknowledged). To broadcast, use
    /// [`writable`](Server::writable): writes to a closing connection fail.
    pub fn connections(&self) -> Vec<ConnId> {
        self.endpoint.shared.peek(|core| core.connections())
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
        self.endpoint.shared.peek(|core| core.writable())
    }

    /// A snapshot of connection `id`'s statistics, or `None` once it is gone.
    pub fn stats(&self, id: ConnId) -> Option<ConnStats> {
        self.endpoint
            .shared
            .peek(|core| core.stats(Instant::now(), id))
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
        self.endpoint.shared.peek(|core| core.totals())
    }

    /// Makes the server's receive thread panic, to test what a failure
    /// looks like from outside. Not for use outside tests.
    #[doc(hidden)]
    pub fn fail_for_tests(&self) {
        self.endpoint.shared.request_panic();
    }
}
