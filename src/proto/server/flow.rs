//! Flow control: writes into a connection's send buffer, reads that make
//! room in its inbox, writability with hysteresis, and what each connection
//! is charged against the memory budget.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::counters::bump;
use super::output::ServerOutput;
use super::slot::Slot;
use super::table::Ending;
use super::{charged_excess, hand_out, locked, ServerCore};
use crate::proto::conn::{Phase, MESSAGE_OVERHEAD};
use crate::proto::sink::Sink;
use crate::proto::{ConnId, CoreError as Error, ServerEvent};

impl ServerCore {
    /// The application writes `payload` to connection `id`. Never waits:
    /// past the connection's send buffer limit the message is still queued
    /// (the connection is then not writable, see [`is_writable`](Self::is_writable)).
    ///
    /// Fails with [`Error::ConnectionClosed`] once the connection is closing
    /// or closed, [`Error::ConnectionLost`] or [`Error::SlowConsumer`] once
    /// it ended so (while the server remembers it: `epoch_limit` epochs),
    /// [`Error::UnknownConnection`] for an id it does not know, and
    /// [`Error::BudgetExhausted`] when the server's memory budget has no
    /// room for the message.
    pub fn write(
        &self,
        now: Instant,
        id: ConnId,
        payload: &[u8],
        out: &mut impl Sink<ServerOutput>,
    ) -> Result<(), Error> {
        self.write_checked(now, id, payload, false, out)
    }

    /// Like [`write`](Self::write), but fails with [`Error::BufferFull`]
    /// while the connection's send buffer is at its limit.
    pub fn try_write(
        &self,
        now: Instant,
        id: ConnId,
        payload: &[u8],
        out: &mut impl Sink<ServerOutput>,
    ) -> Result<(), Error> {
        self.write_checked(now, id, payload, true, out)
    }

    /// The error a write to connection `id`, not in the table, fails with.
    fn gone_error(&self, id: ConnId) -> Error {
        match self.table.read().ending(id.0) {
            Some(Ending::Lost) => Error::ConnectionLost(id),
            Some(Ending::SlowConsumer) => Error::SlowConsumer(id),
            Some(Ending::Closed) => Error::ConnectionClosed(id),
            None => Error::UnknownConnection(id),
        }
    }

    fn write_checked(
        &self,
        now: Instant,
        id: ConnId,
        payload: &[u8],
        fail_if_full: bool,
        out: &mut impl Sink<ServerOutput>,
    ) -> Result<(), Error> {
        let Some(cell) = self.cell(id) else {
            return Err(self.gone_error(id));
        };
        locked(&cell, out, |slot, out| {
            self.write_locked(now, id, slot, payload, fail_if_full, out)
        })
    }

    fn write_locked(
        &self,
        now: Instant,
        id: ConnId,
        slot: &mut Slot,
        payload: &[u8],
        fail_if_full: bool,
        out: &mut impl Sink<ServerOutput>,
    ) -> Result<(), Error> {
        if slot.gone {
            return Err(self.gone_error(id));
        }
        match slot.conn.phase() {
            Phase::Open => {}
            Phase::Closing | Phase::Drained => return Err(Error::ConnectionClosed(id)),
            Phase::Lost | Phase::Connecting => return Err(Error::ConnectionLost(id)),
        }
        if slot.is_full(&self.config) {
            slot.full = true;
            if fail_if_full {
                return Err(Error::BufferFull);
            }
        }
        let room = slot.memory_room(&self.config, &self.pool);
        if payload.len().saturating_add(MESSAGE_OVERHEAD) > room {
            slot.wants_more = true;
            slot.refused_write = true;
            bump(&self.totals.budget_refusals);
            return Err(Error::BudgetExhausted);
        }
        slot.conn.write(payload.to_vec());
        self.after(now, slot, out);
        Ok(())
    }

    /// The application read `messages` messages of `bytes` bytes in all from
    /// connection `id`: room in its inbox again. Data the connection withheld
    /// for lack of room is taken and acknowledged now.
    pub fn read_done(
        &self,
        now: Instant,
        id: ConnId,
        messages: usize,
        bytes: usize,
        out: &mut impl Sink<ServerOutput>,
    ) {
        if let Some(cell) = self.cell(id) {
            locked(&cell, out, |slot, out| {
                if !slot.gone {
                    slot.unread.0 = slot.unread.0.saturating_sub(messages);
                    slot.unread.1 = slot.unread.1.saturating_sub(bytes);
                    self.after(now, slot, out);
                }
            });
        }
    }

    /// The application read an event other than a message (they are
    /// charged to the memory budget until read).
    pub fn event_read(&self) {
        self.pool.event_read();
    }

    /// Hands connection `slot`'s deliveries to the application (or holds
    /// them while it is not writable), applies writability with
    /// hysteresis, charges what it holds to the budget and tells it how much
    /// it may take; again while taking room lets more Data in.
    pub(super) fn settle_flow(&self, slot: &mut Slot, out: &mut impl Sink<ServerOutput>) {
        let id = slot.id;
        loop {
            while let Some(payload) = slot.conn.poll_delivered() {
                slot.unread.0 += 1;
                slot.unread.1 += payload.len();
                if slot.unwritable || !slot.backlog.is_empty() {
                    slot.backlog.push_back(payload);
                } else {
                    out.output(ServerOutput::App(ServerEvent::Message {
                        id: ConnId(id),
                        payload,
                    }));
                }
            }
            // Writability, with hysteresis: off at the limit, on at half.
            let (messages, bytes) = slot.conn.send_buffered();
            let limit = self.config.send_buffer_limit;
            if !slot.unwritable && limit.reached(messages, bytes) {
                slot.unwritable = true;
                self.pool.unwritable.fetch_add(1, Relaxed);
            } else if slot.unwritable && messages <= limit.messages / 2 && bytes <= limit.bytes / 2
            {
                slot.unwritable = false;
                self.pool.unwritable.fetch_sub(1, Relaxed);
                hand_out(id, &mut slot.backlog, out);
                if slot.conn.phase() == Phase::Open {
                    if self.config.charge_events {
                        self.pool.events_out(1);
                    }
                    out.output(ServerOutput::App(ServerEvent::Writable { id: ConnId(id) }));
                }
            }
            if slot.full && !slot.is_full(&self.config) {
                slot.full = false;
                out.output(ServerOutput::Room { id: ConnId(id) });
            }
            // Charge what it holds now.
            let charged = slot.charge();
            self.pool.recharge(
                charged_excess(slot.charged, self.config.floor),
                charged_excess(charged, self.config.floor),
            );
            slot.charged = charged;
            slot.set_room(&self.config, &self.pool);
            let withholding = slot.conn.withheld().0 > 0;
            if withholding != slot.withholding {
                slot.withholding = withholding;
                out.output(ServerOutput::Withholding {
                    id: ConnId(id),
                    withholding,
                });
            }
            if !slot.conn.has_delivered() {
                break;
            }
        }
    }
}
