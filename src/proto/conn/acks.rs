//! Acknowledging received Data: at once, or coalesced into one Ack or CAck
//! per batch of input.

use super::transmit::Transmit;
use super::Conn;

impl Conn {
    /// Sets whether in-order Data is acknowledged once per
    /// [`flush_acks`](Conn::flush_acks) call instead of once per message: with
    /// a plain Ack if the batch held one message, with a CAck if more (as
    /// the Go peers do, a CAck never covers a single message). Out-of-order
    /// Data is always acknowledged at once, with an Ack. A driver that turns
    /// this on must call `flush_acks` after each batch of input.
    pub fn set_coalesce_acks(&mut self, on: bool) {
        self.coalesce_acks = on;
        if !on {
            self.flush_acks();
        }
    }

    /// Acknowledges the in-order Data received since the last flush.
    pub fn flush_acks(&mut self) {
        match std::mem::take(&mut self.acks_pending) {
            0 => {}
            1 => self
                .transmits
                .push_back(Transmit::Ack(self.first_pending_ack)),
            _ => self
                .transmits
                .push_back(Transmit::CAck(self.expected.saturating_sub(1))),
        }
    }

    /// Acknowledges received Data `sn`. `cumulative` says whether every
    /// sequence number up to `sn` has been received, so a CAck may cover it.
    pub(super) fn ack_received(&mut self, sn: u64, cumulative: bool) {
        self.counters.acks_sent += 1;
        if self.coalesce_acks && cumulative {
            if self.acks_pending == 0 {
                self.first_pending_ack = sn;
            }
            self.acks_pending = self.acks_pending.saturating_add(1);
        } else {
            self.transmits.push_back(Transmit::Ack(sn));
        }
    }
}
