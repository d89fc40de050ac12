//! Where a connection is in its life, as the cores report it.

/// Where a connection is in its life.
///
/// ```text
///            connect / Connect received
///                     |
///   client:      Connecting --(no Ack in epoch_limit epochs)--> Refused
///                     |
///                     v
///                 Connected --(epoch_limit silent epochs)--> Lost
///                     |                                       |
///        close / close_conn                     (client with a reconnect policy)
///                     v                                       v
///                  Closing --(all acknowledged)--> Closed   Reconnecting { attempt } --> Connected
///                     |                                       |
///                     +--(peer silent)--> Lost                +--(attempts exhausted)--> Refused
/// ```
///
/// A server emits `Refused` (with no connection id) for a Connect it ignored:
/// at [`ServerBuilder::max_connections`](crate::ServerBuilder::max_connections),
/// when its memory budget has no room for one more connection
/// ([`ServerBuilder::memory_budget`](crate::ServerBuilder::memory_budget)),
/// or while it closes.
///
/// # Examples
///
/// ```
/// use liveseq::ConnState;
///
/// assert!(ConnState::Lost.is_terminal());
/// assert!(!ConnState::Reconnecting { attempt: 1 }.is_terminal());
/// ```
///
/// More states may be added in a minor release, so a `match` needs a `_` arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnState {
    /// A client sent its Connect and waits for the Ack.
    Connecting,
    /// Data flows both ways.
    Connected,
    /// Closing: draining what was written, nothing more delivered.
    Closing,
    /// Closed after draining (terminal).
    Closed,
    /// Nothing heard from the peer for `epoch_limit` epochs (terminal).
    Lost,
    /// Client: the connect failed. Server: a Connect was ignored because of
    /// the connection limit (terminal).
    Refused,
    /// A client with a [`ReconnectPolicy`](crate::ReconnectPolicy) waits to dial again, or is dialling.
    Reconnecting {
        /// 1 for the first attempt after a loss.
        attempt: u32,
    },
}

impl ConnState {
    /// Whether no event follows this one for the same connection.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            ConnState::Closed | ConnState::Lost | ConnState::Refused
        )
    }
}
