//! The one error type of the crate.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use crate::ConnId;

/// Everything that can go wrong in liveseq.
///
/// Messages are short and lower-case, and each says what was being done,
/// to which address, and why: the whole story is in `{}`, so
/// [`source`](std::error::Error::source) is `None` for every variant (an
/// error reporter that walks the chain prints each part once).
///
/// # Examples
///
/// ```
/// use liveseq::{Error, ConnId};
///
/// let err = Error::ConnectionLost(ConnId::from(3));
/// assert_eq!(err.to_string(), "connection 3 lost");
///
/// let err = Error::LostDuringClose(vec![ConnId::from(1), ConnId::from(2)]);
/// assert_eq!(err.to_string(), "connections lost during close: 1, 2");
/// ```
///
/// A socket error names the operation and the address, then the cause:
///
/// ```
/// use std::error::Error as _;
/// use liveseq::{Params, Server};
///
/// let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
/// let addr = taken.local_addr().unwrap();
/// let err = Server::bind(addr, Params::default()).unwrap_err();
/// assert_eq!(err.to_string(), format!("cannot bind {addr}: address already in use"));
/// assert!(err.source().is_none());
/// ```
///
/// Code that works in [`std::io::Error`]s can use `?` on a liveseq result:
/// each variant maps to the [`ErrorKind`](std::io::ErrorKind) that `std::net`
/// would use, and the message stays the same.
///
/// ```
/// use std::io::ErrorKind;
///
/// fn connect(addr: std::net::SocketAddr) -> std::io::Result<liveseq::Client> {
///     let params = liveseq::Params { epoch_millis: 20, epoch_limit: 3, ..Default::default() };
///     Ok(liveseq::Client::builder().params(params).fail_on_refused(true).connect(addr)?)
/// }
///
/// // Nobody listens on a port that was just freed.
/// let addr = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
/// let err = connect(addr).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
/// assert_eq!(err.to_string(), format!("connection to {addr} refused"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error from the UDP socket (binding, for example). The message
    /// names the operation and the address where liveseq knows them, then
    /// the cause.
    #[error("{}", IoMessage(.0))]
    Io(io::Error),
    /// A setting has a value that cannot work.
    #[error("invalid {field}: {reason}")]
    InvalidParams {
        /// The field or builder setting, e.g. `"window_size"`.
        field: &'static str,
        /// Why, e.g. `"must be positive"`.
        reason: &'static str,
    },
    /// The server did not acknowledge the Connect within `epoch_limit`
    /// epochs. The address is the last one tried.
    #[error("connect to {0} timed out")]
    ConnectTimeout(SocketAddr),
    /// Every Connect was answered by the peer's host with "port
    /// unreachable": nothing listens at this address (the last one tried).
    /// See [`ClientBuilder::fail_on_refused`](crate::ClientBuilder::fail_on_refused).
    #[error("connection to {0} refused")]
    ConnectionRefused(SocketAddr),
    /// Nothing was heard from the peer for `epoch_limit` epochs.
    #[error("connection {0} lost")]
    ConnectionLost(ConnId),
    /// The connection was closed with [`Server::close_conn`](crate::Server::close_conn).
    #[error("connection {0} closed")]
    ConnectionClosed(ConnId),
    /// This [`Client`](crate::Client) or [`Server`](crate::Server) was
    /// closed with `close` or `close_timeout` (perhaps by another thread):
    /// every later call on it, and a `read` blocked when it closed, returns
    /// this. The peer going away is [`ConnectionLost`](Error::ConnectionLost)
    /// instead.
    #[error("closed")]
    Closed,
    /// The server has no connection with this id (never had, or it is gone).
    #[error("unknown connection {0}")]
    UnknownConnection(ConnId),
    /// The payload does not fit in one datagram of the configured maximum size.
    #[error("payload of {len} bytes exceeds the maximum of {max}")]
    PayloadTooLarge {
        /// Length of the rejected payload.
        len: usize,
        /// Largest payload that fits.
        max: usize,
    },
    /// Nothing arrived before the timeout of a `read_timeout` (or a
    /// `write_timeout` found no room in time).
    #[error("timed out")]
    Timeout,
    /// A `try_write` found the connection's send buffer full: the peer has
    /// not acknowledged enough of what was written yet.
    #[error("send buffer full")]
    BufferFull,
    /// A server write found no room in the server's memory budget (see
    /// [`ServerBuilder::memory_budget`](crate::ServerBuilder::memory_budget)):
    /// the message was not queued. Retry once connections have drained.
    #[error("server memory budget exhausted")]
    BudgetExhausted,
    /// The connection was ended because its peer acknowledged nothing for
    /// its stall limit while its send buffer was over its limit (a slow
    /// consumer). Reported to writes for `epoch_limit` epochs after it ended.
    #[error("connection {0} ended as a slow consumer")]
    SlowConsumer(ConnId),
    /// One of the instance's threads failed (a bug in liveseq); the client or
    /// server is closed. The string is the panic message.
    #[error("client or server failed: {0}")]
    Failed(String),
    /// The server's `close` finished, but these connections were lost before
    /// everything written to them was acknowledged.
    #[error("connections lost during close: {}", ids(.0))]
    LostDuringClose(Vec<ConnId>),
    /// A close with a deadline gave up; this many messages were never acknowledged.
    #[error("close timed out with {unacked} messages unacknowledged")]
    CloseTimedOut {
        /// Messages discarded unacknowledged (sent or still queued).
        unacked: usize,
    },
    /// A client with a [`ReconnectPolicy`](crate::ReconnectPolicy) lost its
    /// connection and made a new one. Messages read before this came from
    /// `old`, after it from `new`; unacknowledged messages were sent again, so
    /// the server may see some twice.
    #[error("connection {old} lost; reconnected as {new}")]
    Reconnected {
        /// The lost connection.
        old: ConnId,
        /// The new connection.
        new: ConnId,
    },
}

/// `1, 2, 3`: connection ids as the user sees them elsewhere.
fn ids(ids: &[ConnId]) -> String {
    ids.iter()
        .map(ConnId::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl From<io::Error> for Error {
    /// Wraps a bare I/O error, so that `?` works on `std::net` calls.
    fn from(err: io::Error) -> Error {
        Error::Io(err)
    }
}

impl From<Error> for io::Error {
    /// The [`ErrorKind`](io::ErrorKind) `std::net` would use for the same
    /// failure; the liveseq error stays inside, so the message is unchanged.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::ErrorKind;
    /// use liveseq::{ConnId, Error};
    ///
    /// let io = std::io::Error::from(Error::ConnectionLost(ConnId::from(7)));
    /// assert_eq!(io.kind(), ErrorKind::ConnectionReset);
    /// assert_eq!(io.to_string(), "connection 7 lost");
    /// assert!(io.get_ref().unwrap().downcast_ref::<Error>().is_some());
    /// ```
    fn from(err: Error) -> io::Error {
        use io::ErrorKind as K;
        let err = match err {
            Error::Io(io) => return io,
            other => other,
        };
        let kind = match &err {
            Error::ConnectionRefused(_) => K::ConnectionRefused,
            Error::Timeout | Error::ConnectTimeout(_) => K::TimedOut,
            Error::ConnectionLost(_) => K::ConnectionReset,
            Error::ConnectionClosed(_) | Error::Closed => K::NotConnected,
            Error::UnknownConnection(_) => K::NotFound,
            Error::BufferFull => K::WouldBlock,
            Error::PayloadTooLarge { .. } | Error::InvalidParams { .. } => K::InvalidInput,
            _ => K::Other,
        };
        io::Error::new(kind, err)
    }
}

/// What went wrong with a socket, and while doing what: `cannot bind
/// 127.0.0.1:9999: address already in use`. Travels inside an
/// [`io::Error`] of the cause's kind, so callers keep matching on kinds.
#[derive(Debug)]
struct Context {
    what: String,
    cause: io::Error,
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, IoMessage(&self.cause))
    }
}

// No `source`: the cause is already in the message.
impl std::error::Error for Context {}

/// `cause` with what was being done (`"cannot bind 127.0.0.1:9999"`) in front.
pub(crate) fn context(cause: io::Error, what: impl fmt::Display) -> io::Error {
    io::Error::new(
        cause.kind(),
        Context {
            what: what.to_string(),
            cause,
        },
    )
}

/// An `io::Error` in the crate's style: lower-case, without the
/// `(os error N)` tail the OS message carries (its kind and `Debug` keep it).
struct IoMessage<'a>(&'a io::Error);

impl fmt::Display for IoMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let err = self.0;
        let Some(code) = err.raw_os_error() else {
            return write!(f, "{err}");
        };
        let text = err.to_string();
        let text = text
            .strip_suffix(&format!(" (os error {code})"))
            .unwrap_or(&text);
        let mut chars = text.chars();
        match chars.next() {
            Some(first) => write!(f, "{}{}", first.to_lowercase(), chars.as_str()),
            None => Ok(()),
        }
    }
}

// What the cores of `proto` report, as the handles return it.

impl From<crate::proto::ConnectFailure> for Error {
    fn from(failure: crate::proto::ConnectFailure) -> Error {
        use crate::proto::ConnectFailure;
        match failure {
            ConnectFailure::TimedOut(addr) => Error::ConnectTimeout(addr),
            ConnectFailure::Refused(addr) => Error::ConnectionRefused(addr),
        }
    }
}

impl From<crate::proto::CoreError> for Error {
    fn from(err: crate::proto::CoreError) -> Error {
        use crate::proto::CoreError;
        match err {
            CoreError::BufferFull => Error::BufferFull,
            CoreError::BudgetExhausted => Error::BudgetExhausted,
            CoreError::ConnectionClosed(id) => Error::ConnectionClosed(id),
            CoreError::ConnectionLost(id) => Error::ConnectionLost(id),
            CoreError::SlowConsumer(id) => Error::SlowConsumer(id),
            CoreError::UnknownConnection(id) => Error::UnknownConnection(id),
            CoreError::Closed => Error::Closed,
        }
    }
}
