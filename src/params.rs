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
    /// At most this many messages unacknowledged at once. Values above
    /// `window_size` are accepted, as the Go API accepts them; the window
    /// then is the limit.
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
    /// Checks for values that cannot work, naming the field. Every parameter
    /// set the Go LSP API accepts and can run with is accepted: only zeros
    /// are rejected (no epoch, no window, nothing allowed in flight, or a
    /// connection lost before it starts).
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Error, Params};
    ///
    /// // The course's window tests allow 50 unacknowledged messages in a window of 5.
    /// assert!(Params { window_size: 5, max_unacked_messages: 50, ..Params::default() }.validate().is_ok());
    ///
    /// let bad = Params { window_size: 0, ..Params::default() };
    /// match bad.validate() {
    ///     Err(Error::InvalidParams { field, .. }) => assert_eq!(field, "window_size"),
    ///     other => panic!("unexpected {other:?}"),
    /// }
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        let positive = |field: &'static str, value: u64| {
            if value == 0 {
                Err(Error::InvalidParams {
                    field,
                    reason: "must be positive",
                })
            } else {
                Ok(())
            }
        };
        positive("epoch_millis", self.epoch_millis)?;
        positive("epoch_limit", self.epoch_limit.into())?;
        positive("window_size", self.window_size.into())?;
        positive("max_unacked_messages", self.max_unacked_messages.into())
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
