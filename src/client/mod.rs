//! The LSP client: one connection to one server.
//!
//! A thin handle around a [`ClientCore`], which makes every protocol
//! decision (connect, timeout, reconnect schedule); the threads of
//! [`driver`](crate::driver) feed it.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use parking_lot::Mutex;

use crate::driver::checks;
use crate::driver::endpoint::Endpoint;
use crate::driver::inbox::Empty;
use crate::driver::roles::{ClientRole, Item};
use crate::driver::time::deadline;
use crate::lifecycle::{ConnEvent, ConnState};
use crate::proto::stats::ConnStats;
use crate::proto::ClientCore;
use crate::{ConnId, Error, Messages, Params};

mod builder;

pub use self::builder::ClientBuilder;

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
    /// Lock `lost seen`.
    ///
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
                if shared.role.withholding.load(Ordering::Relaxed) {
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
