//! What a server's event-style read returns.

use std::net::SocketAddr;

use super::ConnId;

/// Something that happened on a [`Server`](crate::Server), as returned by
/// [`Server::next_event`](crate::Server::next_event).
///
/// # Examples
///
/// ```
/// use liveseq::{ConnId, ServerEvent};
///
/// let event = ServerEvent::Lost { id: ConnId::from(3) };
/// assert_eq!(event.conn_id(), ConnId::from(3));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// A client connected from `peer`; always the first event of `id`.
    Connected {
        /// The new connection.
        id: ConnId,
        /// The client's address.
        peer: SocketAddr,
    },
    /// The next message from connection `id`, in order.
    Message {
        /// The connection it came on.
        id: ConnId,
        /// The message, byte for byte as written.
        payload: Vec<u8>,
    },
    /// Connection `id` was closed with [`Server::close_conn`](crate::Server::close_conn); nothing more
    /// is reported for it.
    Closed {
        /// The closed connection.
        id: ConnId,
    },
    /// Nothing was heard from connection `id` for `epoch_limit` epochs (a
    /// client that closes normally ends this way too: LSP has no close
    /// message). Every message it sent before was reported first.
    Lost {
        /// The lost connection.
        id: ConnId,
    },
    /// Connection `id`'s send buffer, which had passed its limit, drained to
    /// half of it: its writes flow again, and the messages it sent meanwhile
    /// (held back, so that the peer causing the backlog is the one slowed
    /// down) came just before this event. A broadcaster that skipped `id`
    /// while [`Server::is_writable`](crate::Server::is_writable) was false
    /// may resume. Connections that never fill their buffer never see it.
    Writable {
        /// The connection that is writable again.
        id: ConnId,
    },
}

impl ServerEvent {
    /// The connection the event is about.
    pub fn conn_id(&self) -> ConnId {
        match self {
            ServerEvent::Connected { id, .. }
            | ServerEvent::Message { id, .. }
            | ServerEvent::Closed { id }
            | ServerEvent::Lost { id }
            | ServerEvent::Writable { id } => *id,
        }
    }
}
