//! Epochs: every connection ticks under its own lock; unanswered challenges
//! and slow consumers end here.

use std::time::Instant;

use super::counters::bump;
use super::output::ServerOutput;
use super::slot::Slot;
use super::table::Ending;
use super::{locked, ServerCore};
use crate::proto::conn::Phase;
use crate::proto::sink::Sink;

impl ServerCore {
    /// An epoch passed: every connection ticks, each under its own lock;
    /// unanswered challenges and slow consumers end.
    pub fn handle_epoch(&self, now: Instant, out: &mut impl Sink<ServerOutput>) {
        self.table.write().on_epoch();
        for (id, cell) in self.snapshot() {
            locked(&cell, out, |slot, out| self.tick(now, id, slot, out));
        }
    }

    /// One epoch of connection `slot`.
    fn tick(&self, now: Instant, id: u32, slot: &mut Slot, out: &mut impl Sink<ServerOutput>) {
        if slot.gone {
            return;
        }
        if let Some(left) = slot.challenge {
            if left <= 1 {
                log::debug!(
                    "connection {id} at {} did not answer a Connect with another isn: ended",
                    slot.addr
                );
                self.end(now, slot, Ending::Lost, out);
                return;
            }
            slot.challenge = Some(left - 1);
        }
        if std::mem::take(&mut slot.held_back) {
            // Its peer could not have acknowledged what never left.
            slot.conn.excuse_stall();
        }
        slot.conn.on_epoch();
        if slot.unwritable
            && slot.conn.phase() == Phase::Open
            && slot.conn.epochs_stalled() >= slot.conn.stall_limit()
        {
            log::debug!(
                "connection {id} at {} ended as a slow consumer: nothing acknowledged in {} epochs",
                slot.addr,
                slot.conn.epochs_stalled()
            );
            bump(&self.totals.slow_consumers);
            self.end(now, slot, Ending::SlowConsumer, out);
            return;
        }
        self.after(now, slot, out);
    }
}
