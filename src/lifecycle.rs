//! Connection lifecycle: states, events, subscribers and the reconnect policy.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use parking_lot::Mutex;

pub use crate::proto::ConnState;
use crate::ConnId;

/// A change of a connection's state, as seen by [`Server::subscribe`](crate::Server::subscribe)
/// and [`Client::subscribe`](crate::Client::subscribe).
///
/// Only liveseq creates these, and fields may be added in a minor release:
/// read the fields, or match with `..`.
///
/// # Examples
///
/// ```
/// use liveseq::{Client, ConnEvent, ConnState, Params, Server};
///
/// # fn main() -> Result<(), liveseq::Error> {
/// let params = Params { epoch_millis: 50, ..Params::default() };
/// let server = Server::bind("127.0.0.1:0", params)?;
/// let events = server.subscribe();
/// let client = Client::connect(server.local_addr()?, params)?;
/// match events.recv().unwrap() {
///     ConnEvent { conn_id: Some(id), state: ConnState::Connected, .. } => assert_eq!(id, client.conn_id()),
///     other => panic!("unexpected {other:?}"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnEvent {
    /// The connection (`None` before the server assigned one, and for refusals).
    pub conn_id: Option<ConnId>,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The new state.
    pub state: ConnState,
    /// When the state changed.
    pub at: Instant,
}

/// Everyone who subscribed to an instance's events.
///
/// Channels are unbounded, so a slow subscriber never blocks the protocol; a
/// dropped one is forgotten at the next event.
///
/// Once the instance has ended (closed, or failed) every channel is
/// disconnected, so that a subscriber iterating over its events stops
/// rather than waiting for an event that can no longer come.
pub(crate) struct Subscribers {
    /// Lock `subscribers`.
    ///
    /// `None` once the instance ended.
    list: Mutex<Option<Vec<Sender<ConnEvent>>>>,
}

impl Default for Subscribers {
    fn default() -> Subscribers {
        Subscribers {
            list: Mutex::new(Some(Vec::new())),
        }
    }
}

impl Subscribers {
    pub(crate) fn subscribe(&self) -> Receiver<ConnEvent> {
        let (tx, rx) = unbounded();
        self.add(tx);
        rx
    }

    /// Adds `tx`; once the instance ended it is dropped at once (its
    /// receiver sees the channel disconnected).
    pub(crate) fn add(&self, tx: Sender<ConnEvent>) {
        if let Some(list) = self.list.lock().as_mut() {
            list.push(tx);
        }
    }

    /// The instance ended: every subscriber's channel disconnects.
    pub(crate) fn end(&self) {
        self.list.lock().take();
    }

    pub(crate) fn emit(
        &self,
        conn_id: Option<ConnId>,
        peer: SocketAddr,
        state: ConnState,
        at: Instant,
    ) {
        let mut list = self.list.lock();
        let Some(list) = list.as_mut().filter(|list| !list.is_empty()) else {
            return;
        };
        let event = ConnEvent {
            conn_id,
            peer,
            state,
            at,
        };
        log::trace!("event {event:?}");
        list.retain(|tx| tx.send(event).is_ok());
    }
}

/// When and how often a client dials again after losing its connection.
///
/// The delay before attempt `n` (from 1) is drawn uniformly from
/// `delays[min(n, delays.len()) - 1]`, so the last range repeats. Across a
/// reconnect, messages not yet acknowledged are sent again on the new
/// connection: delivery is then *at least once*, and
/// [`Client::read`](crate::Client::read) reports the gap with
/// [`Error::Reconnected`](crate::Error::Reconnected).
///
/// # Examples
///
/// ```
/// use liveseq::ReconnectPolicy;
/// use std::time::Duration;
///
/// let default = ReconnectPolicy::default();
/// assert_eq!(default.delays[0], (Duration::ZERO, Duration::from_secs(3)));
/// assert_eq!(default.max_attempts, None);
///
/// let quick = ReconnectPolicy { delays: vec![(Duration::ZERO, Duration::from_millis(50))], max_attempts: Some(5) };
/// assert_eq!(quick.delay(7, 0), Duration::ZERO);
/// assert_eq!(quick.delay(7, u64::MAX), Duration::from_millis(50));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// Ranges `(min, max)` of the delay before each attempt; the last repeats.
    pub delays: Vec<(Duration, Duration)>,
    /// Give up after this many attempts in a row (`None`: never).
    pub max_attempts: Option<u32>,
}

impl Default for ReconnectPolicy {
    /// 0-3 s, then 3-10 s, then 10-20 s for every further attempt.
    fn default() -> Self {
        let s = Duration::from_secs;
        ReconnectPolicy {
            delays: vec![(s(0), s(3)), (s(3), s(10)), (s(10), s(20))],
            max_attempts: None,
        }
    }
}

impl ReconnectPolicy {
    /// The delay before attempt `attempt` (1 for the first), given a
    /// uniformly random `random`: it maps `0..=u64::MAX` onto the attempt's
    /// range `min..=max` in order. Taking the draw rather than a generator
    /// keeps any random-number crate out of this signature, and lets the
    /// client core, which owns a seeded generator, replay a schedule exactly.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::ReconnectPolicy;
    /// use std::time::Duration;
    ///
    /// let s = Duration::from_secs;
    /// let policy = ReconnectPolicy { delays: vec![(s(0), s(3)), (s(10), s(20))], max_attempts: None };
    /// assert_eq!(policy.delay(1, u64::MAX / 2), Duration::from_millis(1500));
    /// assert_eq!(policy.delay(9, 0), s(10)); // the last range repeats
    /// ```
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        let Some(last) = self.delays.len().checked_sub(1) else {
            return Duration::ZERO;
        };
        let (lo, hi) = self.delays[(attempt.max(1) as usize - 1).min(last)];
        let Some(span) = hi.checked_sub(lo) else {
            return lo;
        };
        // Multiply-shift: `random` scaled into 0..=span nanoseconds without
        // overflow (a span beyond 2^64 ns, 584 years, loses precision only).
        let span = span.as_nanos();
        let offset = if span < 1 << 64 {
            (u128::from(random) * (span + 1)) >> 64
        } else {
            u128::from(random) * (span >> 64)
        };
        let offset = Duration::new(
            u64::try_from(offset / 1_000_000_000).unwrap_or(u64::MAX),
            (offset % 1_000_000_000) as u32,
        );
        lo.saturating_add(offset).min(hi)
    }
}
