//! The send queue: each written message from `write` until its
//! acknowledgement, the window that paces first transmissions and the
//! back-off that paces retransmissions.

use std::collections::VecDeque;

use super::transmit::Transmit;
use super::{Conn, Message, MsgType, Phase, Rejected};

/// Every written message from `write` until it is acknowledged. The
/// invariants below hold between calls into [`Conn`].
#[derive(Debug)]
pub(super) struct SendQueue {
    /// Sequence number of `out[0]`: the oldest unacknowledged message, or the
    /// next to send when nothing is in flight.
    pub(super) base: u64,
    /// Written messages: `out[..sent]` were sent at least once, the rest wait
    /// for the window. `out[0]` is never acknowledged: acknowledged messages
    /// leave from the front at once (`after_acks`), so `base` moves with them.
    pub(super) out: VecDeque<Outgoing>,
    /// Payload bytes in `out` not yet acknowledged (an acknowledged
    /// message's payload is dropped when it is acknowledged).
    pub(super) out_bytes: usize,
    /// How many of `out` were sent at least once: at most `out.len()`, and
    /// at most the window size. `base + sent` numbers the next first
    /// transmission.
    pub(super) sent: usize,
    /// How many of `out[..sent]` are not yet acknowledged: at most `sent`
    /// and at most `max_unacked_messages`.
    pub(super) unacked: usize,
}

impl SendQueue {
    /// An empty queue whose first message will carry `base`.
    pub(super) fn new(base: u64) -> SendQueue {
        SendQueue {
            base,
            out: VecDeque::new(),
            out_bytes: 0,
            sent: 0,
            unacked: 0,
        }
    }
}

/// One written message, from `write` until it is acknowledged.
#[derive(Debug)]
pub(super) struct Outgoing {
    pub(super) payload: Vec<u8>,
    pub(super) acked: bool,
    /// Retransmitted at least once (its ack then gives no RTT sample).
    pub(super) retransmitted: bool,
    /// Epochs to wait, beyond one, before the next retransmission.
    pub(super) backoff: u32,
    /// Epochs since the last transmission.
    pub(super) since_sent: u32,
    /// Transmissions on the epoch schedule (the first one and back-off
    /// expirations), none of them answered yet: the evidence a give-up rule
    /// counts (see [`MAX_UNANSWERED`](super::MAX_UNANSWERED)).
    pub(super) tries: u32,
}

impl Conn {
    /// Messages sent and not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.send.unacked
    }

    /// Messages written but not yet sent (waiting for the window).
    pub fn queued(&self) -> usize {
        self.send.out.len() - self.send.sent
    }

    /// Oldest unacknowledged sequence number (or the next to send).
    pub fn oldest_unacked(&self) -> u64 {
        self.send.base
    }

    /// Sequence numbers currently unacknowledged, in order.
    pub fn in_flight(&self) -> impl Iterator<Item = u64> + '_ {
        let base = self.send.base;
        self.send
            .out
            .iter()
            .take(self.send.sent)
            .enumerate()
            .filter(|(_, m)| !m.acked)
            .map(move |(i, _)| base.saturating_add(i as u64))
    }

    /// Written messages not yet acknowledged (sent or waiting), and their
    /// payload bytes.
    pub fn send_buffered(&self) -> (usize, usize) {
        (self.send.out.len(), self.send.out_bytes)
    }

    /// Messages written and acknowledged so far (those sent, less those in
    /// flight): it grows with every acknowledgement of something new.
    pub fn acked(&self) -> u64 {
        self.counters.data_sent - self.send.unacked as u64
    }

    /// Whether everything written has been acknowledged.
    pub fn is_idle(&self) -> bool {
        self.send.out.is_empty()
    }

    /// Sequence number the next newly sent message will carry.
    pub fn next_unsent(&self) -> u64 {
        self.send.base.saturating_add(self.send.sent as u64)
    }

    /// The next sequence number acknowledged on its first transmission
    /// (drivers use these for round-trip time samples).
    pub fn poll_first_acked(&mut self) -> Option<u64> {
        self.first_acked.pop_front()
    }

    /// Messages that were never acknowledged when the connection was lost,
    /// in write order (a reconnecting client sends them again). Empties the list.
    pub fn take_orphans(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.orphans)
    }

    /// How many messages were discarded when the connection was lost.
    pub fn orphans(&self) -> usize {
        self.orphans.len()
    }

    /// Queues a payload for sending (relayOutboundMessage). It goes out at once
    /// if the window allows; a client still connecting sends it once connected.
    /// Ignored once the connection is closing, closed or lost.
    pub fn write(&mut self, payload: Vec<u8>) {
        if !matches!(self.phase, Phase::Open | Phase::Connecting) {
            return;
        }
        self.send.out_bytes += payload.len();
        self.send.out.push_back(Outgoing {
            payload,
            acked: false,
            retransmitted: false,
            backoff: 0,
            since_sent: 0,
            tries: 0,
        });
        self.fill_window();
    }

    /// Takes an Ack or CAck of Data sent on this connection.
    pub(super) fn on_ack(&mut self, msg: Message<'_>) -> Result<(), Rejected> {
        let sn = msg.seq_num;
        if sn >= self.next_unsent() {
            return Err(Rejected::UnsentAck);
        }
        self.epochs_silent = 0;
        // Below `base`: an ack of something acknowledged before.
        if let Some(index) = sn.checked_sub(self.send.base) {
            // Below `sent`, a usize: the check above bounds it.
            let index = index as usize;
            if msg.kind == MsgType::Ack {
                self.ack_one(index);
            } else {
                for i in 0..=index {
                    self.ack_one(i);
                }
            }
            self.after_acks();
        }
        Ok(())
    }

    /// Retransmits each message in flight whose back-off has run out.
    pub(super) fn retransmit(&mut self) {
        let cap = self.params.max_backoff_interval;
        for (i, m) in self.send.out.iter_mut().take(self.send.sent).enumerate() {
            if m.acked {
                continue;
            }
            m.since_sent = m.since_sent.saturating_add(1);
            if m.since_sent > m.backoff {
                m.since_sent = 0;
                m.tries = m.tries.saturating_add(1);
                m.retransmitted = true;
                m.backoff = if m.backoff == 0 {
                    1
                } else {
                    m.backoff.saturating_mul(2)
                }
                .min(cap);
                self.transmits
                    .push_back(Transmit::Data(self.send.base.saturating_add(i as u64)));
                self.counters.retransmissions += 1;
                self.data_sent_this_epoch = true;
            }
        }
    }

    /// Whether the oldest message in flight has been sent
    /// [`MAX_UNANSWERED`](super::MAX_UNANSWERED) times on the epoch
    /// schedule, each given its whole back-off interval to be answered, and
    /// is due once more.
    pub(super) fn oldest_unanswered(&self) -> bool {
        self.send.sent > 0
            && self.send.out.front().is_some_and(|m| {
                !m.acked
                    && m.tries >= super::MAX_UNANSWERED
                    && m.since_sent.saturating_add(1) > m.backoff
            })
    }

    /// Takes back the last epoch-schedule transmission of the oldest
    /// message in flight, if it was made in the last epoch: it never left
    /// (see [`excuse_stall`](Conn::excuse_stall)).
    pub(super) fn excuse_oldest(&mut self) {
        if let Some(m) = self.send.out.front_mut() {
            if self.send.sent > 0 && !m.acked && m.since_sent == 0 && m.tries > 1 {
                m.tries -= 1;
            }
        }
    }

    pub(super) fn is_unacked(&self, sn: u64) -> bool {
        sn.checked_sub(self.send.base)
            .and_then(|i| self.send.out.get(i as usize))
            .is_some_and(|m| !m.acked)
    }

    /// Sends queued messages while `seq <= base + window - 1` and fewer than
    /// `max_unacked` are in flight (updateOutbox).
    pub(super) fn fill_window(&mut self) {
        if !self.is_live() {
            return;
        }
        let window = self.params.window_size as usize;
        let max_unacked = self.params.max_unacked_messages as usize;
        while self.send.sent < self.send.out.len()
            && self.send.sent < window
            && self.send.unacked < max_unacked
        {
            let m = &mut self.send.out[self.send.sent];
            m.backoff = 0;
            m.since_sent = 0;
            m.tries = 1;
            self.counters.data_sent += 1;
            self.counters.bytes_sent += m.payload.len() as u64;
            self.transmits.push_back(Transmit::Data(self.next_unsent()));
            self.send.sent += 1;
            self.send.unacked += 1;
            self.data_sent_this_epoch = true;
        }
    }

    pub(super) fn ack_one(&mut self, index: usize) {
        let m = &mut self.send.out[index];
        if !m.acked {
            self.epochs_stalled = 0;
            m.acked = true;
            self.send.out_bytes -= m.payload.len();
            m.payload = Vec::new();
            self.send.unacked -= 1;
            if !m.retransmitted {
                self.first_acked
                    .push_back(self.send.base.saturating_add(index as u64));
            }
        }
    }

    pub(super) fn after_acks(&mut self) {
        while self.send.out.front().is_some_and(|m| m.acked) {
            self.send.out.pop_front();
            self.send.base = self.send.base.saturating_add(1);
            self.send.sent -= 1;
        }
        self.fill_window();
        self.check_drained();
    }
}
