//! What a [`ClientCore`](super::ClientCore) is set up with, and what it
//! hands out besides datagrams.

use std::net::SocketAddr;
use std::time::Instant;

use crate::proto::server::{Limit, DEFAULT_INBOX, DEFAULT_SEND_BUFFER};
use crate::proto::{ConnId, ConnState};
use crate::{Params, ReconnectPolicy};

/// What a [`ClientCore`](super::ClientCore) is set up with.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Protocol parameters.
    pub params: Params,
    /// Acknowledge bursts of in-order Data once per batch.
    pub coalesce_acks: bool,
    /// Limit on written, unacknowledged messages.
    pub send_buffer_limit: Limit,
    /// Limit on delivered, unread messages.
    pub inbox_limit: Limit,
    /// Dial again after a loss, as this says.
    pub reconnect: Option<ReconnectPolicy>,
    /// Seeds the random source of reconnect delays and ISNs.
    pub seed: u64,
    /// Addresses to try after the first, in order, each as soon as the one
    /// before it refused ([`ClientCore::handle_refused`](super::ClientCore::handle_refused)); all within the
    /// one connect deadline of `epoch_limit` epochs.
    pub fallbacks: Vec<SocketAddr>,
    /// Fail the connect as soon as the last address refused, as TCP does,
    /// instead of retrying until the deadline (LSP lets a client start
    /// before its server).
    pub fail_on_refused: bool,
}

impl ClientConfig {
    /// `params` with CAck coalescing, the default buffer limits and no
    /// reconnection.
    pub fn new(params: Params) -> ClientConfig {
        ClientConfig {
            params,
            coalesce_acks: true,
            send_buffer_limit: DEFAULT_SEND_BUFFER,
            inbox_limit: DEFAULT_INBOX,
            reconnect: None,
            seed: 0,
            fallbacks: Vec::new(),
            fail_on_refused: false,
        }
    }
}

/// What the core hands out besides datagrams, in the order it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientOutput {
    /// The connection changed state (for subscribers).
    State {
        /// The connection, once the server named it.
        conn_id: Option<ConnId>,
        /// The new state.
        state: ConnState,
        /// When it changed.
        at: Instant,
    },
    /// The first connect finished: `Ok` with the connection id, or why not.
    ConnectResult(Result<ConnId, ConnectFailure>),
    /// The previous address refused: datagrams go to this one from now on
    /// (a driver with a connected socket connects it here).
    Dialing(SocketAddr),
    /// The next message from the server, in order.
    Data(Vec<u8>),
    /// The connection was lost (every message before it was handed out).
    Lost(ConnId),
    /// A reconnect replaced connection `old` by `new` here in the stream.
    Reconnected {
        /// The lost connection.
        old: ConnId,
        /// The new one.
        new: ConnId,
    },
    /// The connection started (`true`) or stopped withholding Data it could
    /// not take for lack of room in the inbox: while it holds, a read
    /// should reach the core at once (see [`ClientCore::read_done`](super::ClientCore::read_done)), since
    /// the server waits for the acknowledgements it then sends.
    Withholding(bool),
    /// A close asked for with [`ClientCore::close`](super::ClientCore::close) has finished.
    Drained,
}

/// Why the first connect failed.
///
/// # Examples
///
/// ```
/// use liveseq::proto::ConnectFailure;
/// use liveseq::Error;
///
/// let addr = "127.0.0.1:9".parse().unwrap();
/// assert!(matches!(Error::from(ConnectFailure::Refused(addr)), Error::ConnectionRefused(a) if a == addr));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectFailure {
    /// `epoch_limit` epochs passed, and some address's last Connect was
    /// neither answered nor refused. The address is where the last Connect went.
    TimedOut(SocketAddr),
    /// The last Connect to every address was refused. The address is where
    /// the last Connect went.
    Refused(SocketAddr),
}
