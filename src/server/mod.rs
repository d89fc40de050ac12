//! The LSP server: many clients on one UDP socket, with a fixed number of threads.
//!
//! A thin handle around a [`ServerCore`](crate::proto::ServerCore), which
//! makes every protocol decision; the threads of [`driver`](crate::driver)
//! feed it. Its settings are in [`builder`].

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::driver::endpoint::Endpoint;
use crate::driver::inbox::Empty;
use crate::driver::roles::ServerRole;
use crate::driver::{checks, time};
use crate::lifecycle::{ConnEvent, ConnState};
use crate::listener::Router;
use crate::proto::stats::{ConnStats, ServerStats};
use crate::proto::CoreError;
use crate::{ConnId, Error, Params, ServerEvent};

mod builder;

pub use builder::{ServerBuilder, MAX_DEFAULT_RECEIVE_THREADS};

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
    pub(super) endpoint: Endpoint<ServerRole>,
    pub(super) max_payload: usize,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.endpoint.shared.io.local_addr())
            .finish()
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
            .run(|core, now, out| core.write(now, id, payload, out))?
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
            .run(|core, now, out| core.try_write(now, id, payload, out))?
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
            match shared.run(|core, now, out| core.try_write(now, id, payload, out))? {
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
        if role.is_withholding(id) {
            // Its peer waits for what this read lets us acknowledge. (A
            // failure shows at the next call.)
            let _ = shared.run(|_, _, _| ());
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
            .run(|core, now, out| core.close_conn(now, id, out))?
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

    /// Server-wide totals.
    pub fn totals(&self) -> ServerStats {
        self.endpoint.shared.core.totals()
    }

    /// The error every call returns once the instance failed.
    pub(crate) fn failure(&self) -> Option<Error> {
        self.endpoint.shared.failure()
    }

    /// Makes the server's receive thread panic, to test what a failure
    /// looks like from outside (the `test-hooks` feature).
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn fail_for_tests(&self) {
        self.endpoint.shared.request_panic();
    }

    /// Makes the next call into the server's core panic, on whichever thread
    /// makes it (a user's write, say), to test that the instance then fails
    /// as a whole (the `test-hooks` feature).
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn fail_in_core_for_tests(&self) {
        self.endpoint.shared.request_core_panic();
    }
}
