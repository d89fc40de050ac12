//! What a connection counts as it goes.

/// Counters kept by the state machine (the driver adds socket-level ones).
///
/// They count local events, one at a time, in `u64`s: they cannot overflow
/// in practice, so they use plain additions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Distinct Data messages sent (first transmissions).
    pub data_sent: u64,
    /// Data retransmissions on the back-off schedule.
    pub retransmissions: u64,
    /// Payload bytes of first transmissions.
    pub bytes_sent: u64,
    /// Heartbeats `(Ack, id, 0)` sent.
    pub heartbeats_sent: u64,
    /// Acks sent for received Data.
    pub acks_sent: u64,
    /// Data messages delivered in order.
    pub data_received: u64,
    /// Payload bytes delivered in order.
    pub bytes_received: u64,
    /// Data messages received again (below the window or already buffered).
    pub duplicates_received: u64,
    /// Heartbeats received.
    pub heartbeats_received: u64,
    /// Data dropped by the integrity rules.
    pub corrupt_received: u64,
    /// Data dropped for being outside the receive window.
    pub outside_window: u64,
    /// In-order Data left unacknowledged because the application's inbox
    /// was full (flow control; the sender will retransmit it).
    pub paused_drops: u64,
    /// In-window Data kept unacknowledged because the inbox was full, and
    /// acknowledged as soon as the application read (no wait for the
    /// sender's next retransmission).
    pub withheld: u64,
    /// Draining connections given up because the peer acknowledged
    /// nothing for the stall limit (see
    /// [`Conn::stall_limit`](super::Conn::stall_limit)).
    pub stalled_closes: u64,
}
