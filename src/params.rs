//! Protocol parameters shared by client and server.

use crate::Error;

/// The protocol's tuning knobs, with the reference defaults.
///
/// Both ends of a connection should use the same values: the receive window
/// of one side is its `window_size`, which must cover the peer's send window.
///
/// # Examples
///
/// ```
/// use liveseq::Params;
///
/// let fast = Params { epoch_millis: 50, window_size: 32, max_unacked_messages: 32, ..Params::default() };
/// assert_eq!(fast.epoch_limit, 5);
/// assert!(fast.validate().is_ok());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Params {
    /// Epochs without hearing from the peer before the connection is declared lost.
    pub epoch_limit: u32,
    /// Length of an epoch in milliseconds.
    pub epoch_millis: u64,
    /// Sliding window: at most this many sequence numbers past the oldest unacknowledged message.
    pub window_size: u32,
    /// Cap, in epochs, of the exponential retransmission back-off (0: resend every epoch).
    pub max_backoff_interval: u32,
    /// At most this many messages unacknowledged at once (must be `<= window_size`).
    pub max_unacked_messages: u32,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            epoch_limit: 5,
            epoch_millis: 2000,
            window_size: 1,
            max_backoff_interval: 0,
            max_unacked_messages: 1,
        }
    }
}

impl Params {
    /// Checks the combination, naming the offending field.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Error, Params};
    ///
    /// let bad = Params { window_size: 2, max_unacked_messages: 3, ..Params::default() };
    /// match bad.validate() {
    ///     Err(Error::InvalidParams(msg)) => assert!(msg.contains("max_unacked_messages")),
    ///     other => panic!("unexpected {other:?}"),
    /// }
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |s: &str| Err(Error::InvalidParams(s.to_string()));
        if self.epoch_millis == 0 {
            return bad("epoch_millis must be positive");
        }
        if self.epoch_limit == 0 {
            return bad("epoch_limit must be positive");
        }
        if self.window_size == 0 {
            return bad("window_size must be positive");
        }
        if self.max_unacked_messages == 0 {
            return bad("max_unacked_messages must be positive");
        }
        if self.max_unacked_messages > self.window_size {
            return bad("max_unacked_messages must not exceed window_size");
        }
        Ok(())
    }

    /// The epoch length as a [`Duration`](std::time::Duration).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(liveseq::Params::default().epoch().as_millis(), 2000);
    /// ```
    pub fn epoch(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.epoch_millis)
    }
}
