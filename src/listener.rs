//! Connections as handles, in the manner of `std::net::TcpListener`: a
//! [`Listener`] accepts, each [`Connection`] reads and writes its own peer.
//!
//! Both run on the server's driver and core (a [`Server`] whose events are
//! routed to one queue per connection instead of one for all): the
//! protocol, the flow control and every protection of the server are the
//! same, and so are their settings ([`ServerBuilder`](crate::ServerBuilder)).

use std::collections::HashMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use crate::driver::inbox::{Empty, Inbox};
use crate::driver::time;
use crate::{ConnId, ConnStats, Error, Messages, Params, Server, ServerEvent, ServerStats};

/// What waits in one connection's queue.
pub(crate) enum Item {
    Data(Vec<u8>),
    Lost,
    Closed,
}

/// A connection waiting for `accept`, with the queue its messages already go to.
pub(crate) struct Accepted {
    id: ConnId,
    peer: SocketAddr,
    inbox: Arc<Inbox<Item>>,
}

/// Routes the core's application events to the queue of the connection
/// they are about (and new connections to the accept queue). Runs under the
/// lock of the connection an event is about, so each connection's events
/// keep their order; messages only read the map, so receive threads
/// working on different connections share it without waiting.
pub(crate) struct Router {
    accepts: Inbox<Accepted>,
    conns: RwLock<HashMap<ConnId, Arc<Inbox<Item>>>>,
}

impl Router {
    pub(crate) fn new() -> Router {
        Router {
            accepts: Inbox::new(),
            conns: RwLock::new(HashMap::new()),
        }
    }

    pub(crate) fn route(&self, event: ServerEvent) {
        match event {
            ServerEvent::Connected { id, peer } => {
                let inbox = Arc::new(Inbox::new());
                self.conns.write().insert(id, inbox.clone());
                let _ = self.accepts.tx.send(Accepted { id, peer, inbox });
            }
            ServerEvent::Message { id, payload } => {
                if let Some(inbox) = self.conns.read().get(&id) {
                    let _ = inbox.tx.send(Item::Data(payload));
                }
            }
            ServerEvent::Lost { id } => {
                if let Some(inbox) = self.conns.write().remove(&id) {
                    let _ = inbox.tx.send(Item::Lost);
                }
            }
            ServerEvent::Closed { id } => {
                if let Some(inbox) = self.conns.write().remove(&id) {
                    let _ = inbox.tx.send(Item::Closed);
                }
            }
            // Writability is a connection's own business: its `write` waits.
            _ => {}
        }
    }

    /// The listener closed: `accept` and every connection's `read` wake
    /// and find it closed.
    pub(crate) fn shut(&self) {
        self.accepts.shut();
        for (_, inbox) in self.conns.write().drain() {
            inbox.shut();
        }
    }
}

/// An LSP server that hands out each connection as its own handle, like
/// `std::net::TcpListener`: a thread per client reads and writes just its
/// own peer.
///
/// It is a [`Server`] underneath (one socket, a fixed number of threads, every
/// protection and setting of [`ServerBuilder`](crate::ServerBuilder), which
/// also makes listeners with [`listen`](crate::ServerBuilder::listen)).
/// Connections that were not accepted yet count against the connection
/// limit, and their messages already wait in their own queue, under flow
/// control. Closing or dropping the listener closes every connection, as
/// [`Server::close`] does; their handles then return [`Error::Closed`].
///
/// # Examples
///
/// A thread-per-connection echo server:
///
/// ```
/// use liveseq::{Client, Error, Listener, Params};
///
/// # fn main() -> Result<(), Error> {
/// let params = Params { epoch_millis: 50, ..Params::default() };
/// let listener = Listener::bind("127.0.0.1:0", params)?;
/// let client = Client::connect(listener.local_addr()?, params)?;
/// client.write(b"hello")?;
///
/// let conn = listener.accept()?;
/// let echo = std::thread::spawn(move || {
///     while let Ok(msg) = conn.read() {
///         if conn.write(&msg).is_err() {
///             break;
///         }
///     }
/// });
/// assert_eq!(client.read()?, b"hello");
/// client.close()?;
/// drop(echo); // the thread ends when its client is lost
/// # Ok(())
/// # }
/// ```
pub struct Listener {
    server: Arc<Server>,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("local_addr", &self.server.local_addr().ok())
            .finish()
    }
}

impl Listener {
    pub(crate) fn new(server: Server) -> Listener {
        Listener {
            server: Arc::new(server),
        }
    }

    /// Binds to `addr` with the given parameters; for the other settings,
    /// see [`ServerBuilder::listen`](crate::ServerBuilder::listen).
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Listener, Params};
    ///
    /// let listener = Listener::bind("127.0.0.1:0", Params::default()).unwrap();
    /// assert!(listener.try_accept().unwrap().is_none());
    /// ```
    pub fn bind(addr: impl ToSocketAddrs, params: Params) -> Result<Listener, Error> {
        Server::builder().params(params).listen(addr)
    }

    /// The address the listener's socket is bound to.
    ///
    /// # Examples
    ///
    /// ```
    /// # use liveseq::{Client, Listener, Params};
    /// # let params = Params { epoch_millis: 50, ..Params::default() };
    /// # let listener = Listener::bind("127.0.0.1:0", params).unwrap();
    /// assert!(listener.local_addr().unwrap().ip().is_loopback());
    /// ```
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.server.local_addr()
    }

    fn router(&self) -> Result<&Router, Error> {
        self.server
            .router()
            .ok_or_else(|| Error::Failed("a listener without a router".into()))
    }

    fn accept_inner(&self, timeout: Option<Duration>) -> Result<Connection, Error> {
        self.server.check_open()?;
        match self.router()?.accepts.recv(timeout) {
            Ok(Accepted { id, peer, inbox }) => {
                // Its `Connected` event was read (and routed) here.
                Ok(Connection {
                    server: self.server.clone(),
                    id,
                    peer,
                    inbox,
                    ended: Mutex::new(None),
                    closed: AtomicBool::new(false),
                })
            }
            Err(Empty::Closed) => Err(self.server.check_open().err().unwrap_or(Error::Closed)),
            Err(Empty::Timeout) => Err(Error::Timeout),
        }
    }

    /// Blocks until a client connects, and returns its connection.
    ///
    /// Fails with [`Error::Closed`] once the listener is closed.
    ///
    /// # Examples
    ///
    /// ```
    /// # use liveseq::{Client, Listener, Params};
    /// # let params = Params { epoch_millis: 50, ..Params::default() };
    /// # let listener = Listener::bind("127.0.0.1:0", params).unwrap();
    /// let client = Client::connect(listener.local_addr().unwrap(), params).unwrap();
    /// assert_eq!(listener.accept().unwrap().id(), client.conn_id());
    /// ```
    pub fn accept(&self) -> Result<Connection, Error> {
        self.accept_inner(None)
    }

    /// Like [`accept`](Listener::accept), but gives up with
    /// [`Error::Timeout`] after `timeout`.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Error, Listener, Params};
    /// use std::time::Duration;
    ///
    /// let listener = Listener::bind("127.0.0.1:0", Params::default()).unwrap();
    /// let accepted = listener.accept_timeout(Duration::from_millis(5));
    /// assert!(matches!(accepted, Err(Error::Timeout)));
    /// ```
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Connection, Error> {
        self.accept_inner(Some(timeout))
    }

    /// A connection if one is waiting, without blocking.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Client, Listener, Params};
    ///
    /// let params = Params { epoch_millis: 50, ..Params::default() };
    /// let listener = Listener::bind("127.0.0.1:0", params).unwrap();
    /// assert!(listener.try_accept().unwrap().is_none());
    /// let client = Client::connect(listener.local_addr().unwrap(), params).unwrap();
    /// let conn = listener.try_accept().unwrap().expect("connected before connect returned");
    /// assert_eq!(conn.id(), client.conn_id());
    /// ```
    pub fn try_accept(&self) -> Result<Option<Connection>, Error> {
        match self.accept_inner(Some(Duration::ZERO)) {
            Ok(conn) => Ok(Some(conn)),
            Err(Error::Timeout) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The connections as they come, as `TcpListener::incoming`: an endless
    /// iterator of [`accept`](Listener::accept)'s results, which ends once
    /// the listener is closed.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use liveseq::{Listener, Params};
    ///
    /// let listener = Listener::bind("127.0.0.1:9999", Params::default()).unwrap();
    /// for conn in listener.incoming() {
    ///     let conn = conn.unwrap();
    ///     std::thread::spawn(move || {
    ///         while let Ok(msg) = conn.read() {
    ///             let _ = conn.write(&msg);
    ///         }
    ///     });
    /// }
    /// ```
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// Server-wide totals (see [`Server::totals`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # use liveseq::{Client, Listener, Params};
    /// # let params = Params { epoch_millis: 50, ..Params::default() };
    /// # let listener = Listener::bind("127.0.0.1:0", params).unwrap();
    /// let client = Client::connect(listener.local_addr().unwrap(), params).unwrap();
    /// assert_eq!(listener.totals().accepted, 1);
    /// ```
    pub fn totals(&self) -> ServerStats {
        self.server.totals()
    }

    /// Closes the listener and every connection, accepted or not: blocks
    /// until everything written to them is acknowledged, as
    /// [`Server::close`] does. Their handles then return [`Error::Closed`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use liveseq::{Client, Listener, Params};
    /// # let params = Params { epoch_millis: 50, ..Params::default() };
    /// # let listener = Listener::bind("127.0.0.1:0", params).unwrap();
    /// let client = Client::connect(listener.local_addr().unwrap(), params).unwrap();
    /// let conn = listener.accept().unwrap();
    /// listener.close().unwrap();
    /// assert!(matches!(conn.read(), Err(liveseq::Error::Closed)));
    /// ```
    pub fn close(&self) -> Result<(), Error> {
        self.server.close()
    }

    /// Makes the listener's receive thread panic, to test what a failure
    /// looks like from outside (the `test-hooks` feature).
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn fail_for_tests(&self) {
        self.server.fail_for_tests();
    }
}

impl Drop for Listener {
    /// Closes like [`close`](Listener::close), within `epoch_limit` epochs,
    /// even while connection handles live on.
    fn drop(&mut self) {
        let params = self.server.params();
        if let Err(err) = self
            .server
            .close_timeout(params.epoch().saturating_mul(params.epoch_limit))
        {
            log::debug!("listener closed on drop: {err}");
        }
    }
}

/// The iterator of [`Listener::incoming`].
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a Listener,
}

impl Iterator for Incoming<'_> {
    type Item = Result<Connection, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.listener.accept() {
            Err(Error::Closed) => None,
            result => Some(result),
        }
    }
}

/// One client's connection, accepted by a [`Listener`]: read and write just
/// this peer, from any thread (`Send + Sync`; share it in an `Arc`).
///
/// Every message of the peer comes to this handle, those that arrived
/// before `accept` included, in order. [`write`](Connection::write) may
/// wait for room in this connection's own send buffer, as
/// `TcpStream::write` does (only the calling thread waits);
/// [`try_write`](Connection::try_write) never does. Dropping it closes the
/// connection without waiting; [`close`](Connection::close) waits until
/// everything written is acknowledged.
pub struct Connection {
    server: Arc<Server>,
    id: ConnId,
    peer: SocketAddr,
    inbox: Arc<Inbox<Item>>,
    /// How it ended, once `read` saw it: later reads say the same.
    ended: Mutex<Option<Error>>,
    closed: AtomicBool,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .finish()
    }
}

impl Connection {
    /// The connection's id (as the client sees it).
    ///
    /// # Examples
    ///
    /// ```
    /// # use liveseq::{Client, Listener, Params};
    /// # use std::time::Duration;
    /// # let params = Params { epoch_millis: 50, ..Params::default() };
    /// # let listener = Listener::bind("127.0.0.1:0", params).unwrap();
    /// # let client = Client::connect(listener.local_addr().unwrap(), params).unwrap();
    /// # let conn = listener.accept().unwrap();
    /// assert_eq!(conn.id(), client.conn_id());
    /// ```
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The client's address.
    ///
    /// # Examples
    ///
    /// ```
    /// # use liveseq::{Client, Listener, Params};
    /// # use std::time::Duration;
    /// # let params = Params { epoch_millis: 50, ..Params::default() };
    /// # let listener = Listener::bind("127.0.0.1:0", params).unwrap();
    /// # let client = Client::connect(listener.local_addr().unwrap(), params).unwrap();
    /// # let conn = listener.accept().unwrap();
    /// assert_eq!(conn.peer_addr().port(), client.local_addr().unwrap().port());
    /// ```
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// A snapshot of the connection's statistics, or `None` once it is gone.
    ///
    /// # Examples
    ///
    /// ```
    /// # use liveseq::{Client, Listener, Params};
    /// # use std::time::Duration;
    /// # let params = Params { epoch_millis: 50, ..Params::default() };
    /// # let listener = Listener::bind("127.0.0.1:0", params).unwrap();
    /// # let client = Client::connect(listener.local_addr().unwrap(), params).unwrap();
    /// # let conn = listener.accept().unwrap();
    /// client.write(b"x").unwrap();
    /// assert_eq!(conn.read().unwrap(), b"x");
    /// assert_eq!(conn.stats().unwrap().messages_received, 1);
    /// ```
    pub fn stats(&self) -> Option<ConnStats> {
        self.server.stats(self.id)
    }

    fn read_inner(&self, timeout: Option<Duration>) -> Result<Vec<u8>, Error> {
        if let Some(end) = &*self.ended.lock() {
            return Err(same_error(end));
        }
        let ended = match self.inbox.recv(timeout) {
            Ok(Item::Data(payload)) => {
                self.server.note_read(self.id, payload.len());
                return Ok(payload);
            }
            Ok(Item::Lost) => Error::ConnectionLost(self.id),
            Ok(Item::Closed) => Error::ConnectionClosed(self.id),
            Err(Empty::Timeout) => return Err(Error::Timeout),
            Err(Empty::Closed) => Error::Closed,
        };
        *self.ended.lock() = Some(same_error(&ended));
        Err(ended)
    }

    /// Blocks until the peer's next message arrives.
    ///
    /// Fails with [`Error::ConnectionLost`] once the peer was silent for
    /// `epoch_limit` epochs (after its last message), with
    /// [`Error::ConnectionClosed`] after [`close`](Connection::close), and
    /// with [`Error::Closed`] once the listener is closed; then every later
    /// read fails the same way.
    ///
    /// # Examples
    ///
    /// ```
    /// # use liveseq::{Client, Listener, Params};
    /// # use std::time::Duration;
    /// # let params = Params { epoch_millis: 50, ..Params::default() };
    /// # let listener = Listener::bind("127.0.0.1:0", params).unwrap();
    /// # let client = Client::connect(listener.local_addr().unwrap(), params).unwrap();
    /// # let conn = listener.accept().unwrap();
    /// client.write(b"hi").unwrap();
    /// assert_eq!(conn.read().unwrap(), b"hi");
    /// ```
    pub fn read(&self) -> Result<Vec<u8>, Error> {
        self.read_inner(None)
    }

    /// The peer's messages, in order, as [`read`](Connection::read) returns
    /// them, until the connection ends (see [`Messages`]): the loop of a
    /// thread that serves one client.
    ///
    /// # Examples
    ///
    /// ```
    /// # use liveseq::{Client, Listener, Params};
    /// # let params = Params { epoch_millis: 50, ..Params::default() };
    /// # let listener = Listener::bind("127.0.0.1:0", params).unwrap();
    /// # let client = Client::connect(listener.local_addr().unwrap(), params).unwrap();
    /// # let conn = listener.accept().unwrap();
    /// client.write(b"ping").unwrap();
    /// for msg in conn.messages() {
    ///     let msg = msg.unwrap();
    ///     conn.write(&msg).unwrap();
    ///     break; // one is enough here
    /// }
    /// assert_eq!(client.read().unwrap(), b"ping");
    /// ```
    pub fn messages(&self) -> Messages<'_> {
        Messages::new(move || self.read())
    }

    /// Like [`read`](Connection::read), but gives up with
    /// [`Error::Timeout`] after `timeout`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use liveseq::{Client, Listener, Params};
    /// # use std::time::Duration;
    /// # let params = Params { epoch_millis: 50, ..Params::default() };
    /// # let listener = Listener::bind("127.0.0.1:0", params).unwrap();
    /// # let client = Client::connect(listener.local_addr().unwrap(), params).unwrap();
    /// # let conn = listener.accept().unwrap();
    /// use liveseq::Error;
    /// assert!(matches!(conn.read_timeout(Duration::from_millis(5)), Err(Error::Timeout)));
    /// ```
    pub fn read_timeout(&self, timeout: Duration) -> Result<Vec<u8>, Error> {
        self.read_inner(Some(timeout))
    }

    /// The peer's next message if one is waiting, without blocking.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Client, Listener, Params};
    /// use std::time::Duration;
    ///
    /// let params = Params { epoch_millis: 50, ..Params::default() };
    /// let listener = Listener::bind("127.0.0.1:0", params).unwrap();
    /// let client = Client::connect(listener.local_addr().unwrap(), params).unwrap();
    /// let conn = listener.accept().unwrap();
    /// assert_eq!(conn.try_read().unwrap(), None);
    /// client.write(b"hi").unwrap();
    /// assert_eq!(conn.read_timeout(Duration::from_secs(5)).unwrap(), b"hi");
    /// ```
    pub fn try_read(&self) -> Result<Option<Vec<u8>>, Error> {
        match self.read_inner(Some(Duration::ZERO)) {
            Ok(msg) => Ok(Some(msg)),
            Err(Error::Timeout) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Queues `payload` for the peer; waits while this connection's send
    /// buffer is full (only this thread waits). Fails with
    /// [`Error::ConnectionLost`], [`Error::ConnectionClosed`],
    /// [`Error::PayloadTooLarge`] or [`Error::Closed`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use liveseq::{Client, Listener, Params};
    /// # use std::time::Duration;
    /// # let params = Params { epoch_millis: 50, ..Params::default() };
    /// # let listener = Listener::bind("127.0.0.1:0", params).unwrap();
    /// # let client = Client::connect(listener.local_addr().unwrap(), params).unwrap();
    /// # let conn = listener.accept().unwrap();
    /// conn.write(b"hello").unwrap();
    /// assert_eq!(client.read().unwrap(), b"hello");
    /// ```
    pub fn write(&self, payload: &[u8]) -> Result<(), Error> {
        self.server.write_waiting(self.id, payload, None)
    }

    /// Like [`write`](Connection::write), but gives up with
    /// [`Error::Timeout`] if there is no room within `timeout`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use liveseq::{Client, Listener, Params};
    /// # use std::time::Duration;
    /// # let params = Params { epoch_millis: 50, ..Params::default() };
    /// # let listener = Listener::bind("127.0.0.1:0", params).unwrap();
    /// # let client = Client::connect(listener.local_addr().unwrap(), params).unwrap();
    /// # let conn = listener.accept().unwrap();
    /// conn.write_timeout(b"hello", Duration::from_secs(1)).unwrap();
    /// assert_eq!(client.read().unwrap(), b"hello");
    /// ```
    pub fn write_timeout(&self, payload: &[u8], timeout: Duration) -> Result<(), Error> {
        self.server
            .write_waiting(self.id, payload, time::deadline(timeout))
    }

    /// Like [`write`](Connection::write), but fails with
    /// [`Error::BufferFull`] at once instead of waiting for room.
    ///
    /// # Examples
    ///
    /// ```
    /// # use liveseq::{Client, Listener, Params};
    /// # use std::time::Duration;
    /// # let params = Params { epoch_millis: 50, ..Params::default() };
    /// # let listener = Listener::bind("127.0.0.1:0", params).unwrap();
    /// # let client = Client::connect(listener.local_addr().unwrap(), params).unwrap();
    /// # let conn = listener.accept().unwrap();
    /// use liveseq::Error;
    /// match conn.try_write(b"hello") {
    ///     Ok(()) | Err(Error::BufferFull) => {}
    ///     Err(other) => panic!("{other}"),
    /// }
    /// ```
    pub fn try_write(&self, payload: &[u8]) -> Result<(), Error> {
        self.server.try_write(self.id, payload)
    }

    /// Closes the connection and waits until everything written to it is
    /// acknowledged (or the peer is lost: [`Error::ConnectionLost`]). Reads
    /// then fail with [`Error::ConnectionClosed`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use liveseq::{Client, Listener, Params};
    /// # use std::time::Duration;
    /// # let params = Params { epoch_millis: 50, ..Params::default() };
    /// # let listener = Listener::bind("127.0.0.1:0", params).unwrap();
    /// # let client = Client::connect(listener.local_addr().unwrap(), params).unwrap();
    /// # let conn = listener.accept().unwrap();
    /// conn.write(b"bye").unwrap();
    /// conn.close().unwrap(); // "bye" was acknowledged
    /// assert_eq!(client.read().unwrap(), b"bye");
    /// ```
    pub fn close(&self) -> Result<(), Error> {
        let events = self.server.subscribe();
        self.closed.store(true, Ordering::SeqCst);
        match self.server.close_conn(self.id) {
            Ok(()) => {}
            Err(Error::UnknownConnection(_)) => return Ok(()),
            Err(err) => return Err(err),
        }
        if self.server.state(self.id).is_none() {
            return Ok(());
        }
        // Ends when the instance does (closed or failed): every subscriber
        // is then disconnected.
        for event in events.iter() {
            if event.conn_id == Some(self.id) && event.state.is_terminal() {
                return match event.state {
                    crate::ConnState::Lost => Err(Error::ConnectionLost(self.id)),
                    _ => Ok(()),
                };
            }
        }
        // The listener closed, or failed, meanwhile.
        Err(self.server.failure().unwrap_or(Error::Closed))
    }
}

impl Drop for Connection {
    /// Closes the connection without waiting: what was written is still
    /// delivered in the background.
    fn drop(&mut self) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            let _ = self.server.close_conn(self.id);
        }
    }
}

/// The same error again (errors are not `Clone`: they may hold an `io::Error`).
fn same_error(err: &Error) -> Error {
    match err {
        Error::ConnectionLost(id) => Error::ConnectionLost(*id),
        Error::ConnectionClosed(id) => Error::ConnectionClosed(*id),
        _ => Error::Closed,
    }
}
