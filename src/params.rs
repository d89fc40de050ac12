//! Protocol parameters shared by client and server.

use crate::Error;

/// The protocol's tuning knobs, with the reference defaults
/// ([`Params::default`]: epochs of 2 s, lost after 5 silent epochs) and
/// presets for real networks ([`Params::lan`], [`Params::wan`]).
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
    /// For a local network (round trips well under 10 ms): a peer that goes
    /// away is noticed within a second.
    ///
    /// Epochs of 100 ms, a limit of 10 epochs, a window of 32 messages with
    /// 32 unacknowledged allowed, and retransmission back-off capped at 4
    /// epochs. So:
    ///
    /// * a connection is lost 0.9 to 1 s after the peer's last datagram
    ///   (ten heartbeats in a row must be lost first);
    /// * a connect gives up after 1 s;
    /// * a lost message is first sent again at the next epoch tick, within
    ///   100 ms.
    ///
    /// An idle connection costs ten heartbeats a second each way.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::Params;
    /// use std::time::Duration;
    ///
    /// let lan = Params::lan();
    /// assert_eq!(lan.epoch() * lan.epoch_limit, Duration::from_secs(1));
    /// assert!(lan.validate().is_ok());
    /// ```
    pub const fn lan() -> Params {
        Params {
            epoch_limit: 10,
            epoch_millis: 100,
            window_size: 32,
            max_backoff_interval: 4,
            max_unacked_messages: 32,
        }
    }

    /// For the internet (round trips up to a few hundred milliseconds, bursts
    /// of loss): quick retransmission, patient loss detection.
    ///
    /// Epochs of 1 s (TCP's minimum retransmission timeout, RFC 6298), a
    /// limit of 10 epochs, a window of 64 messages with 64 unacknowledged
    /// allowed, and back-off capped at 8 epochs. So:
    ///
    /// * a connection is lost 9 to 10 s after the peer's last datagram
    ///   (nine heartbeats in a row may be lost without harm);
    /// * a connect gives up after 10 s;
    /// * a lost message is first sent again at the next epoch tick, within
    ///   1 s.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::Params;
    /// use std::time::Duration;
    ///
    /// let wan = Params::wan();
    /// assert_eq!(wan.epoch() * wan.epoch_limit, Duration::from_secs(10));
    /// assert!(wan.validate().is_ok());
    /// ```
    pub const fn wan() -> Params {
        Params {
            epoch_limit: 10,
            epoch_millis: 1000,
            window_size: 64,
            max_backoff_interval: 8,
            max_unacked_messages: 64,
        }
    }

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
