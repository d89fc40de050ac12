//! Per-side state: which end sent a datagram, and what the checker knows
//! of each end of a connection (the Data it sent, the acknowledgements
//! delivered to it, when it last sent and heard).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

/// Which end of a connection sent a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// The LSP client (its datagrams go to the server).
    Client,
    /// The LSP server (its datagrams go to a client).
    Server,
}

impl Side {
    /// The other end.
    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }

    /// Lower-case name, as written in logs and summaries.
    pub fn name(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// Sequence numbers acknowledged to a sender by what the proxy delivered.
#[derive(Debug, Default)]
pub(super) struct AckSet {
    /// Everything at or below this was covered by a CAck.
    through: u64,
    /// Plain Acks above `through`.
    single: BTreeSet<u64>,
}

impl AckSet {
    pub(super) fn ack(&mut self, sn: u64) {
        if sn > self.through {
            self.single.insert(sn);
        }
    }

    pub(super) fn ack_through(&mut self, sn: u64) {
        if sn > self.through {
            self.through = sn;
            self.single = self.single.split_off(&sn.saturating_add(1));
        }
    }

    /// Folds plain Acks that continue `through` into it: the same answers
    /// to every question, in less room.
    fn compact(&mut self) {
        while let Some(next) = self.through.checked_add(1) {
            if !self.single.remove(&next) {
                break;
            }
            self.through = next;
        }
    }

    pub(super) fn forget(&mut self, sn: u64) {
        self.single.remove(&sn);
    }

    /// Plain Acks held.
    pub(super) fn len(&self) -> usize {
        self.single.len()
    }

    pub(super) fn contains(&self, sn: u64) -> bool {
        sn <= self.through || self.single.contains(&sn)
    }

    /// The smallest sequence number at or above `lo` not acknowledged.
    pub(super) fn first_unacked(&self, lo: u64) -> u64 {
        let mut n = lo.max(self.through.saturating_add(1));
        // Bounded by the set's size, and by the last number (an Ack of
        // u64::MAX must not keep a saturating count going forever).
        while self.single.contains(&n) && n < u64::MAX {
            n += 1;
        }
        n
    }
}

/// Transmissions kept per Data message for the back-off check; beyond
/// this many resends of one message its schedule is no longer checked.
pub(super) const MAX_TIMES: usize = 64;

/// Data messages remembered per side before the oldest acknowledged are forgotten.
pub const MAX_SENT: usize = 4096;

/// Data messages remembered per side at most, acknowledged or not: beyond
/// this the oldest is forgotten as if acknowledged (lenient).
pub const MAX_SENT_HARD: usize = 2 * MAX_SENT;

/// What the checker's accounting charges (in bytes, about what each costs
/// with its share of the collection holding it) for a connection, a Data
/// message remembered, each further transmission of it, and an entry of a
/// set of sequence numbers. [`super::Checker`] keeps the sum under
/// [`super::MAX_BYTES`].
pub(super) const COST_CONN: usize = 1024;
pub(super) const COST_TX: usize = 128;
pub(super) const COST_TIME: usize = 16;
pub(super) const COST_ENTRY: usize = 64;

/// One Data message a side sent.
#[derive(Debug, Default)]
pub(super) struct Tx {
    /// When the proxy saw each transmission (the first one first).
    pub(super) times: Vec<Duration>,
    pub(super) early_reported: bool,
    pub(super) reported: bool,
}

/// What the checker knows about one side of one connection.
#[derive(Debug, Default)]
pub(super) struct SideState {
    /// Data this side sent, by sequence number.
    pub(super) sent: BTreeMap<u64, Tx>,
    /// Everything below this was sent and forgotten (see [`MAX_SENT`]).
    pub(super) forgotten_below: u64,
    /// Acknowledgements of this side's Data that the proxy delivered to it.
    pub(super) acked: AckSet,
    pub(super) last_sent: Option<Duration>,
    /// Last time the proxy delivered anything of this connection to this side.
    pub(super) last_heard: Option<Duration>,
    pub(super) lost_reported: bool,
    /// This side's Data delivered once and not yet acknowledged: when.
    pub(super) rtt_pending: HashMap<u64, Duration>,
    pub(super) reported_acks: BTreeSet<u64>,
    /// Transmissions held in `sent`, all messages together.
    pub(super) times: usize,
    /// The checker forgot this connection (or its address) before: this side
    /// may have sent Data it never saw, so no Ack proves a breach.
    pub(super) history_lost: bool,
}

impl SideState {
    pub(super) fn was_sent(&self, sn: u64) -> bool {
        self.history_lost || sn < self.forgotten_below || self.sent.contains_key(&sn)
    }

    /// Notes an Ack of `sn` delivered to this side. Only Data it sent counts
    /// (an Ack of anything else moves no honest window), which keeps the
    /// acknowledged set no larger than `sent`.
    pub(super) fn acked_one(&mut self, sn: u64) {
        if self.sent.contains_key(&sn) {
            self.acked.ack(sn);
        }
    }

    fn forget_first(&mut self) {
        if let Some((sn, tx)) = self.sent.pop_first() {
            self.times -= tx.times.len();
            self.forgotten_below = self.forgotten_below.max(sn.saturating_add(1));
            self.rtt_pending.remove(&sn);
            self.acked.forget(sn);
        }
    }

    pub(super) fn forget_old(&mut self, lo: u64) {
        self.acked.compact();
        let n = self.acked.first_unacked(lo);
        while self.sent.len() > MAX_SENT {
            match self.sent.first_key_value() {
                Some((&sn, _)) if sn < n => self.forget_first(),
                _ => break,
            }
        }
        // A sender that is never acknowledged: forget its oldest anyway,
        // counting it acknowledged so that no rule is stricter for it.
        while self.sent.len() > MAX_SENT_HARD {
            if let Some((&sn, _)) = self.sent.first_key_value() {
                self.acked.ack_through(sn);
            }
            self.forget_first();
        }
        if self.rtt_pending.len() > MAX_SENT {
            self.rtt_pending.clear();
        }
    }

    /// What the accounting charges for this side (see [`COST_TX`]).
    pub(super) fn cost(&self) -> usize {
        self.sent.len() * COST_TX
            + self.times.saturating_sub(self.sent.len()) * COST_TIME
            + (self.acked.len() + self.rtt_pending.len() + self.reported_acks.len()) * COST_ENTRY
    }
}
