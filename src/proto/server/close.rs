//! Closing and ending: the application's close of one connection or of the
//! server, abort, a connection's end (announced, then taken out of the
//! table), and the `Drained` that follows the last one.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::counters::bump;
use super::output::ServerOutput;
use super::slot::Slot;
use super::table::Ending;
use super::{charged_excess, hand_out, locked, state_change, ServerCore};
use crate::proto::conn::{Event, Phase};
use crate::proto::sink::Sink;
use crate::proto::{ConnId, ConnState, CoreError as Error, ServerEvent};

impl ServerCore {
    /// Closes connection `id`: what was written is still delivered, but
    /// nothing more is read from it. [`ServerOutput::Discard`] tells the
    /// driver to drop its messages already handed out, and its last
    /// application event is [`ServerEvent::Closed`], produced now.
    pub fn close_conn(
        &self,
        now: Instant,
        id: ConnId,
        out: &mut impl Sink<ServerOutput>,
    ) -> Result<(), Error> {
        let cell = self.cell(id).ok_or(Error::UnknownConnection(id))?;
        locked(&cell, out, |slot, out| {
            self.close_locked(now, id, slot, out)
        })
    }

    fn close_locked(
        &self,
        now: Instant,
        id: ConnId,
        slot: &mut Slot,
        out: &mut impl Sink<ServerOutput>,
    ) -> Result<(), Error> {
        if slot.gone {
            return Err(Error::UnknownConnection(id));
        }
        if slot.conn.phase() != Phase::Open {
            return Ok(());
        }
        slot.conn.close();
        // Its backlog (delivered while it was not writable) is not read now.
        let backlog_bytes: usize = slot.backlog.iter().map(Vec::len).sum();
        slot.unread.0 = slot.unread.0.saturating_sub(slot.backlog.len());
        slot.unread.1 = slot.unread.1.saturating_sub(backlog_bytes);
        slot.backlog.clear();
        out.output(ServerOutput::Discard { id });
        state_change(now, Some(id), slot.addr, ConnState::Closing, out);
        out.output(ServerOutput::App(ServerEvent::Closed { id }));
        self.after(now, slot, out);
        Ok(())
    }

    /// Starts closing the server: no new connections, every connection
    /// drains, then [`ServerOutput::Drained`].
    pub fn close(&self, now: Instant, out: &mut impl Sink<ServerOutput>) {
        {
            let mut table = self.table.write();
            if table.closing {
                return;
            }
            table.closing = true;
        }
        for (id, cell) in self.snapshot() {
            locked(&cell, out, |slot, out| {
                if slot.gone {
                    return;
                }
                if slot.conn.phase() == Phase::Open {
                    slot.conn.close();
                    state_change(now, Some(ConnId(id)), slot.addr, ConnState::Closing, out);
                }
                self.after(now, slot, out);
            });
        }
        self.check_drained(out);
    }

    /// Gives up closing: discards everything unacknowledged, ends every
    /// connection `Closed`, and returns how many messages were discarded.
    pub fn abort(&self, now: Instant, out: &mut impl Sink<ServerOutput>) -> usize {
        self.table.write().closing = true;
        let mut discarded = 0;
        for (id, cell) in self.snapshot() {
            discarded += locked(&cell, out, |slot, out| {
                if slot.gone {
                    return 0;
                }
                let discarded = slot.conn.abort();
                bump(&self.totals.closed);
                state_change(now, Some(ConnId(id)), slot.addr, ConnState::Closed, out);
                self.remove(slot, None, out);
                discarded
            });
        }
        self.check_drained(out);
        discarded
    }

    /// Takes `slot` out of the table and every index, releases what it was
    /// charged, and remembers how it ended (`None`: not remembered, the
    /// server is aborting). Its outputs must already be out: a `Drained`
    /// may follow at once.
    pub(super) fn remove(
        &self,
        slot: &mut Slot,
        ending: Option<Ending>,
        out: &mut impl Sink<ServerOutput>,
    ) {
        slot.gone = true;
        {
            let mut table = self.table.write();
            table.remove(slot.id, slot.addr, slot.admitted);
            if let Some(ending) = ending {
                let epochs = self.config.params.epoch_limit;
                table.retire(slot.id, slot.addr, slot.conn.isn(), ending, epochs);
            }
        }
        self.pool
            .recharge(charged_excess(slot.charged, self.config.floor), 0);
        slot.charged = 0;
        if slot.unwritable {
            slot.unwritable = false;
            self.pool.unwritable.fetch_sub(1, Relaxed);
        }
        if slot.withholding {
            slot.withholding = false;
            out.output(ServerOutput::Withholding {
                id: ConnId(slot.id),
                withholding: false,
            });
        }
    }

    /// Ends a live connection at once (challenge unanswered, slow consumer,
    /// evicted): what it delivered is handed out, then its end.
    pub(super) fn end(
        &self,
        now: Instant,
        slot: &mut Slot,
        ending: Ending,
        out: &mut impl Sink<ServerOutput>,
    ) {
        if slot.gone {
            return;
        }
        let id = slot.id;
        let reading = !slot.conn.closed_by_app();
        slot.conn.abort();
        bump(&self.totals.lost);
        if reading {
            hand_out(id, &mut slot.backlog, out);
            out.output(ServerOutput::App(ServerEvent::Lost { id: ConnId(id) }));
        }
        state_change(now, Some(ConnId(id)), slot.addr, ConnState::Lost, out);
        self.remove(slot, Some(ending), out);
        self.check_drained(out);
    }

    pub(super) fn check_drained(&self, out: &mut impl Sink<ServerOutput>) {
        let drained = {
            let mut table = self.table.write();
            let now_drained = table.closing && table.conns.is_empty() && !table.drained;
            table.drained |= now_drained;
            now_drained
        };
        if drained {
            out.output(ServerOutput::Drained);
        }
    }

    /// Acts on connection `slot`'s events: a connection that was lost or
    /// has drained is announced, then leaves the table.
    pub(super) fn on_conn_events(
        &self,
        now: Instant,
        slot: &mut Slot,
        out: &mut impl Sink<ServerOutput>,
    ) {
        let id = slot.id;
        let mut ending = None;
        while let Some(event) = slot.conn.poll_event() {
            match event {
                Event::Lost => {
                    bump(&self.totals.lost);
                    if slot.conn.orphans() > 0 && self.table.read().closing {
                        self.table.write().lost_during_close.push(ConnId(id));
                    }
                    slot.conn.take_orphans();
                    ending = Some(ConnState::Lost);
                }
                Event::Drained => {
                    bump(&self.totals.closed);
                    ending = Some(ConnState::Closed);
                }
                Event::Connected => {}
            }
        }
        let Some(state) = ending else { return };
        // Its end is announced first, then it leaves the table: whoever
        // sees `Drained` has seen every connection's end.
        if !slot.conn.closed_by_app() {
            hand_out(id, &mut slot.backlog, out);
            if state == ConnState::Lost {
                out.output(ServerOutput::App(ServerEvent::Lost { id: ConnId(id) }));
            }
        }
        state_change(now, Some(ConnId(id)), slot.addr, state, out);
        let how = if state == ConnState::Lost {
            Ending::Lost
        } else {
            Ending::Closed
        };
        self.remove(slot, Some(how), out);
        self.check_drained(out);
    }
}
