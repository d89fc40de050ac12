//! Acknowledging received Data: at once, or coalesced into one Ack or CAck
//! per batch of input.

use super::transmit::Transmit;
use super::Conn;

/// Acknowledgements of in-order Data owed and not yet queued.
#[derive(Debug, Default)]
pub(super) struct PendingAcks {
    /// Acknowledge in-order Data with one Ack or CAck per
    /// [`Conn::flush_acks`].
    pub(super) coalesce: bool,
    /// In-order Data acknowledged since the last flush (always 0 unless
    /// `coalesce`), and the first of them: one is acknowledged with a plain
    /// Ack, more with a CAck.
    pub(super) pending: u32,
    pub(super) first_pending: u64,
}

impl Conn {
    /// Sets whether in-order Data is acknowledged once per
    /// [`flush_acks`](Conn::flush_acks) call instead of once per message: with
    /// a plain Ack if the batch held one message, with a CAck if more (as
    /// the Go peers do, a CAck never covers a single message). Out-of-order
    /// Data is always acknowledged at once, with an Ack. A driver that turns
    /// this on must call `flush_acks` after each batch of input.
    pub fn set_coalesce_acks(&mut self, on: bool) {
        self.acks.coalesce = on;
        if !on {
            self.flush_acks();
        }
    }

    /// Acknowledges the in-order Data received since the last flush.
    pub fn flush_acks(&mut self) {
        match std::mem::take(&mut self.acks.pending) {
            0 => {}
            1 => self
                .transmits
                .push_back(Transmit::Ack(self.acks.first_pending)),
            _ => self
                .transmits
                .push_back(Transmit::CAck(self.recv.expected.saturating_sub(1))),
        }
    }

    /// Acknowledges received Data `sn`. `cumulative` says whether every
    /// sequence number up to `sn` has been received, so a CAck may cover it.
    pub(super) fn ack_received(&mut self, sn: u64, cumulative: bool) {
        self.counters.acks_sent += 1;
        if self.acks.coalesce && cumulative {
            if self.acks.pending == 0 {
                self.acks.first_pending = sn;
            }
            self.acks.pending = self.acks.pending.saturating_add(1);
        } else {
            self.transmits.push_back(Transmit::Ack(sn));
        }
    }
}
