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
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use crate::driver::inbox::{Empty, Inbox};
use crate::{ConnId, Error, Params, Server, ServerEvent, ServerStats};

mod connection;

pub use self::connection::Connection;

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
    /// Lock `router`: read-locked to route an output, written to add or
    /// remove a connection.
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
