//! Why a core refused a write or reports a close as failed: the protocol's
//! own error, which the handles turn into [`crate::Error`].

use super::ConnId;

/// Why a core refused a call. Each has a [`crate::Error`] of the same name
/// and message, which it converts into.
///
/// # Examples
///
/// ```
/// use liveseq::proto::CoreError;
/// use liveseq::{ConnId, Error};
///
/// let refused = CoreError::ConnectionLost(ConnId::from(3));
/// assert_eq!(refused.to_string(), "connection 3 lost");
/// assert!(matches!(Error::from(refused), Error::ConnectionLost(id) if id == ConnId::from(3)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The connection's send buffer is at its limit.
    #[error("send buffer full")]
    BufferFull,
    /// The server's memory budget has no room for the message.
    #[error("server memory budget exhausted")]
    BudgetExhausted,
    /// The connection is closing or closed.
    #[error("connection {0} closed")]
    ConnectionClosed(ConnId),
    /// The connection was lost.
    #[error("connection {0} lost")]
    ConnectionLost(ConnId),
    /// The connection was ended as a slow consumer.
    #[error("connection {0} ended as a slow consumer")]
    SlowConsumer(ConnId),
    /// No connection has this id (never had, or it is forgotten).
    #[error("unknown connection {0}")]
    UnknownConnection(ConnId),
    /// The client is closing.
    #[error("closed")]
    Closed,
}
