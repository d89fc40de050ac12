//! What the server core hands out besides datagrams, and the handles it
//! lends: the per-thread [`OwedAcks`] and a locked [`ConnRef`].

use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use parking_lot::lock_api::ArcMutexGuard;
use parking_lot::RawMutex;

use super::slot::Slot;
use super::table::Cell;
use crate::proto::conn::Conn;
use crate::proto::{ConnId, ConnState, ServerEvent};

/// What the core hands out besides datagrams, in the order it happened.
/// One connection's outputs are always in order; those of different
/// connections interleave as the threads feeding the core ran.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerOutput {
    /// A connection changed state (for subscribers). `conn_id` is `None`
    /// for a refused Connect.
    State {
        /// The connection.
        conn_id: Option<ConnId>,
        /// Its peer.
        peer: SocketAddr,
        /// Its new state.
        state: ConnState,
        /// When it changed.
        at: Instant,
    },
    /// The next thing for the application's read loop.
    App(ServerEvent),
    /// Connection `id` started (`true`) or stopped withholding Data it could not
    /// take for lack of room: while it holds, a read that makes room should
    /// reach the core at once (see [`ServerCore::read_done`](super::ServerCore::read_done)), since the
    /// peer waits for the acknowledgements it then sends.
    Withholding {
        /// The connection.
        id: ConnId,
        /// Whether it holds Data now.
        withholding: bool,
    },
    /// Connection `id`'s send buffer was at its limit and has room again:
    /// a writer waiting for room ([`ServerCore::is_full`](super::ServerCore::is_full)) should look
    /// again. (Its end is announced by a [`State`](ServerOutput::State).)
    Room {
        /// The connection.
        id: ConnId,
    },
    /// The application closed connection `id` with
    /// [`ServerCore::close_conn`](super::ServerCore::close_conn): from here on the core hands out nothing
    /// more of it but the [`ServerEvent::Closed`] that follows, and a driver
    /// that already passed messages of `id` towards the application must
    /// not let them reach it either (the guarantee of `close_conn`: after
    /// it, a read returns nothing more from `id` except one `Closed`).
    Discard {
        /// The connection.
        id: ConnId,
    },
    /// A close asked for with [`ServerCore::close`](super::ServerCore::close) has finished: every
    /// connection has ended.
    Drained,
}

/// The connections that received Data in one batch of datagrams and may
/// owe an acknowledgement at its end
/// ([`ServerCore::end_batch`](super::ServerCore::end_batch)), so that a
/// burst is acknowledged once (a CAck) rather than message by message. One
/// per thread that feeds the core; reuse it.
#[derive(Debug, Default)]
pub struct OwedAcks {
    pub(super) conns: Vec<Cell>,
}

/// A handle on one connection's state machine, locked: for tests and tools
/// ([`ServerCore::conn`](super::ServerCore::conn)). Other inputs to that connection wait while it lives.
pub struct ConnRef(pub(super) ArcMutexGuard<RawMutex, Slot>);

impl std::ops::Deref for ConnRef {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.0.conn
    }
}

impl fmt::Debug for ConnRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.conn.fmt(f)
    }
}
