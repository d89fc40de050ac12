//! Epochs: every connection ticks under its own lock; unanswered challenges
//! and slow consumers end here.

use std::time::Instant;

use super::config::EVENT_COST;
use super::counters::{bump, fair_share};
use super::output::ServerOutput;
use super::slot::Slot;
use super::table::Ending;
use super::{locked, ServerCore};
use crate::proto::conn::Phase;
use crate::proto::sink::Sink;

impl ServerCore {
    /// An epoch passed: every connection ticks, each under its own lock;
    /// unanswered challenges and slow consumers end, and the budget's fair
    /// share is set anew from what each connection drew and wanted.
    pub fn handle_epoch(&self, now: Instant, out: &mut impl Sink<ServerOutput>) {
        self.table.write().on_epoch();
        let mut draws = Vec::new();
        for (id, cell) in self.snapshot() {
            locked(&cell, out, |slot, out| {
                self.tick(now, id, slot, out);
                if !slot.gone {
                    let withholding = slot.conn.withheld().0 > 0 && !slot.inbox_full(&self.config);
                    let wants_more = std::mem::take(&mut slot.wants_more) || withholding;
                    draws.push((slot.drawn(&self.config), wants_more));
                }
            });
        }
        let events = self.pool.events_unread().saturating_mul(EVENT_COST);
        let capacity = self.config.shared_budget().saturating_sub(events);
        self.pool.set_share(fair_share(capacity, &mut draws));
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
        if std::mem::take(&mut slot.unsent) {
            // Its peer could not have acknowledged what never left.
            slot.conn.excuse_stall();
        }
        let acked = slot.conn.acked();
        if acked != slot.acked_at_tick || slot.conn.unacked() == 0 {
            // It acknowledged something since the last epoch (or has nothing
            // in flight): a refusal before that is not held against it.
            slot.acked_at_tick = acked;
            slot.refused_write = false;
        }
        slot.conn.on_epoch();
        // A write refused for its share of the budget keeps the writer from
        // queueing more, as a full send buffer does: the same rule ends a
        // peer that then acknowledges nothing.
        if (slot.unwritable || slot.refused_write)
            && slot.conn.phase() == Phase::Open
            && slot.conn.is_stalled()
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
