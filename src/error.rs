//! The one error type of the crate.

use crate::ConnId;

/// Everything that can go wrong in liveseq.
///
/// Messages are short and lower-case, in the style of `std::io::Error`.
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
/// A socket error keeps its cause as the [`source`](std::error::Error::source)
/// and does not repeat it, so error reporters that walk the chain (`anyhow`,
/// `eyre`, or the loop below) print each part once:
///
/// ```
/// use std::error::Error as _;
///
/// let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
/// let err = liveseq::Error::from(io);
/// assert_eq!(err.to_string(), "socket error");
/// assert_eq!(err.source().unwrap().to_string(), "address in use");
///
/// let mut chain = vec![err.to_string()];
/// let mut cause = err.source();
/// while let Some(e) = cause {
///     chain.push(e.to_string());
///     cause = e.source();
/// }
/// assert_eq!(chain.join(": "), "socket error: address in use");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error from the UDP socket (binding, for example); the cause is
    /// the error's [`source`](std::error::Error::source).
    #[error("socket error")]
    Io(#[from] std::io::Error),
    /// A setting has a value that cannot work.
    #[error("invalid {field}: {reason}")]
    InvalidParams {
        /// The field or builder setting, e.g. `"window_size"`.
        field: &'static str,
        /// Why, e.g. `"must be positive"`.
        reason: &'static str,
    },
    /// The server did not acknowledge the Connect within `epoch_limit` epochs.
    #[error("connect timed out")]
    ConnectTimeout,
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
