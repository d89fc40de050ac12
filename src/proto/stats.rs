//! Statistics snapshots of connections and servers.

use std::time::{Duration, Instant};

/// Round-trip time estimates, sampled only from messages acknowledged on
/// their first transmission (a retransmitted message's ack is ambiguous).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rtt {
    /// Exponentially smoothed (weight 1/8 per sample, as TCP's SRTT).
    pub smoothed: Duration,
    /// Smallest sample.
    pub min: Duration,
    /// Largest sample.
    pub max: Duration,
    /// Number of samples.
    pub samples: u64,
}

/// A snapshot of one connection's counters and state.
///
/// # Examples
///
/// ```
/// # use liveseq::{Client, Params, Server};
/// # let params = Params { epoch_millis: 100, ..Params::default() };
/// # let server = Server::bind("127.0.0.1:0", params).unwrap();
/// # let client = Client::connect(server.local_addr().unwrap(), params).unwrap();
/// client.write(b"hi").unwrap();
/// let (id, _) = server.read().unwrap();
/// let stats = server.stats(id).unwrap();
/// assert_eq!((stats.messages_received, stats.bytes_received), (1, 2));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnStats {
    /// Data messages sent (first transmissions only).
    pub messages_sent: u64,
    /// Payload bytes sent (first transmissions only).
    pub bytes_sent: u64,
    /// Data messages received and delivered in order.
    pub messages_received: u64,
    /// Payload bytes received and delivered in order.
    pub bytes_received: u64,
    /// Data retransmissions.
    pub retransmissions: u64,
    /// Heartbeats sent.
    pub heartbeats_sent: u64,
    /// Heartbeats received.
    pub heartbeats_received: u64,
    /// Data messages received more than once.
    pub duplicates_received: u64,
    /// Data messages dropped by the integrity rules (short or bad checksum).
    pub corrupt_received: u64,
    /// Datagrams from the peer's address that were not valid messages.
    pub malformed_received: u64,
    /// Valid messages dropped: outside the window, acks of unsent messages.
    pub rejected: u64,
    /// Data left unacknowledged because the application's inbox was full
    /// (flow control: the peer sends it again once there is room).
    pub paused_drops: u64,
    /// In-window Data kept unacknowledged while the inbox was full and
    /// acknowledged as soon as the application read.
    pub withheld: u64,
    /// Messages sent and not yet acknowledged.
    pub unacked: usize,
    /// Messages written but not yet sent (waiting for the window).
    pub queued: usize,
    /// Round-trip time, once a sample exists.
    pub rtt: Option<Rtt>,
    /// How long the connect took (client side; `None` on the server).
    pub connect_time: Option<Duration>,
    /// Time since the connection was created.
    pub age: Duration,
    /// Epochs since anything was heard from the peer.
    pub epochs_since_heard: u32,
}

/// Server-wide totals.
///
/// # Examples
///
/// ```
/// # use liveseq::{Params, Server};
/// let server = Server::bind("127.0.0.1:0", Params::default()).unwrap();
/// assert_eq!(server.totals().active, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Connections in the table now (including closing ones).
    pub active: usize,
    /// Connections ever accepted.
    pub accepted: u64,
    /// Connects ignored: at `max_connections`, for lack of memory budget
    /// (also counted in `budget_refusals`), or while closing.
    pub refused: u64,
    /// Connections lost: to the epoch limit, an unanswered challenge, as
    /// slow consumers, or evicted before they were validated.
    pub lost: u64,
    /// Connections closed after draining.
    pub closed: u64,
    /// Repeated Connects answered with the existing connection's Ack.
    pub duplicate_connects: u64,
    /// Datagrams that were not valid LSP messages.
    pub malformed: u64,
    /// Valid messages dropped: from an address with no connection, naming
    /// another address's connection, corrupt, outside the window, and so on.
    pub rejected: u64,
    /// The server-wide memory budget (see [`ServerBuilder::memory_budget`](crate::ServerBuilder::memory_budget)).
    pub budget: usize,
    /// Of it, in use now: connections beyond their floors, and unread events.
    pub budget_in_use: usize,
    /// Everything charged now, floors included.
    pub memory_in_use: usize,
    /// Connections not writable now: their send buffer passed its limit,
    /// and their incoming messages wait until it drains.
    pub not_writable: usize,
    /// Connections ended because they acknowledged nothing while not writable.
    pub slow_consumers: u64,
    /// Connections that have not yet proven they receive the server's datagrams.
    pub unvalidated: usize,
    /// Unvalidated connections ended to make way for new ones.
    pub evicted_unvalidated: u64,
    /// Connects with a new ISN from the address of a live connection, which
    /// challenged it instead of replacing it.
    pub challenged_connects: u64,
    /// Bytes not sent to unvalidated addresses, to stay within three times
    /// what they sent.
    pub amplification_held_bytes: u64,
    /// Writes and Connects refused because the memory budget was spent.
    pub budget_refusals: u64,
}

/// Bookkeeping for RTT samples and ages. It reads no clock: every method
/// takes the time.
#[derive(Debug)]
pub(crate) struct Timing {
    created: Instant,
    pub connect_time: Option<Duration>,
    /// First transmissions not yet acknowledged: (sequence number, sent at).
    sent_at: std::collections::VecDeque<(u64, Instant)>,
    /// Sequence numbers below this have been recorded in `sent_at`.
    recorded_upto: u64,
    rtt: Option<Rtt>,
    pub malformed: u64,
    pub rejected: u64,
}

impl Timing {
    pub(crate) fn new(now: Instant, first_seq: u64) -> Timing {
        Timing {
            created: now,
            connect_time: None,
            sent_at: std::collections::VecDeque::new(),
            recorded_upto: first_seq,
            rtt: None,
            malformed: 0,
            rejected: 0,
        }
    }

    pub(crate) fn mark_connected(&mut self, now: Instant) {
        self.connect_time = Some(now.saturating_duration_since(self.created));
    }

    /// Records the send time of first transmissions up to `next_unsent`, and
    /// turns first-transmission acks into samples.
    pub(crate) fn update(
        &mut self,
        now: Instant,
        next_unsent: u64,
        oldest_unacked: u64,
        first_acked: impl Iterator<Item = u64>,
    ) {
        while self.recorded_upto < next_unsent {
            self.sent_at.push_back((self.recorded_upto, now));
            self.recorded_upto = self.recorded_upto.saturating_add(1);
        }
        for sn in first_acked {
            if let Some(pos) = self.sent_at.iter().position(|&(s, _)| s == sn) {
                if let Some((_, sent)) = self.sent_at.remove(pos) {
                    self.sample(now.saturating_duration_since(sent));
                }
            }
        }
        while self
            .sent_at
            .front()
            .is_some_and(|&(s, _)| s < oldest_unacked)
        {
            self.sent_at.pop_front();
        }
    }

    fn sample(&mut self, d: Duration) {
        self.rtt = Some(match self.rtt {
            None => Rtt {
                smoothed: d,
                min: d,
                max: d,
                samples: 1,
            },
            Some(r) => Rtt {
                smoothed: (r.smoothed * 7 + d) / 8,
                min: r.min.min(d),
                max: r.max.max(d),
                samples: r.samples + 1,
            },
        });
    }

    pub(crate) fn snapshot(&self, now: Instant, conn: &crate::proto::Conn) -> ConnStats {
        let c = conn.counters();
        ConnStats {
            messages_sent: c.data_sent,
            bytes_sent: c.bytes_sent,
            messages_received: c.data_received,
            bytes_received: c.bytes_received,
            retransmissions: c.retransmissions,
            heartbeats_sent: c.heartbeats_sent,
            heartbeats_received: c.heartbeats_received,
            duplicates_received: c.duplicates_received,
            corrupt_received: c.corrupt_received,
            malformed_received: self.malformed,
            rejected: self.rejected,
            paused_drops: c.paused_drops,
            withheld: c.withheld,
            unacked: conn.unacked(),
            queued: conn.queued(),
            rtt: self.rtt,
            connect_time: self.connect_time,
            age: now.saturating_duration_since(self.created),
            epochs_since_heard: conn.epochs_silent(),
        }
    }
}
