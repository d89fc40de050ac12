//! [`Connection`]: one accepted client, read and written by its own thread.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::driver::inbox::{Empty, Inbox};
use crate::driver::time;
use crate::{ConnId, ConnStats, Error, Messages, Server};

use super::Item;

/// One client's connection, accepted by a [`Listener`](crate::Listener): read and write just
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
    pub(super) server: Arc<Server>,
    pub(super) id: ConnId,
    pub(super) peer: SocketAddr,
    pub(super) inbox: Arc<Inbox<Item>>,
    /// Lock `connection end`.
    ///
    /// How it ended, once `read` saw it: later reads say the same.
    pub(super) ended: Mutex<Option<Error>>,
    pub(super) closed: AtomicBool,
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
