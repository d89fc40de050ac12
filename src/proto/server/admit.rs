//! Admission: what a Connect does, from a new address or from a live
//! connection's (the challenge), eviction of unvalidated connections, and
//! refusals.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::config::{CHALLENGE_EPOCHS, EVENT_COST};
use super::counters::bump;
use super::output::ServerOutput;
use super::slot::Slot;
use super::table::{Ending, Table};
use super::{locked, state_change, ServerCore};
use crate::proto::conn::Conn;
use crate::proto::message::Message;
use crate::proto::sink::Sink;
use crate::proto::stats::Timing;
use crate::proto::{ConnId, ConnState, ServerEvent};

impl ServerCore {
    // ----- internals -----

    pub(super) fn on_connect(
        &self,
        now: Instant,
        from: SocketAddr,
        local: Option<IpAddr>,
        isn: u64,
        len: usize,
        out: &mut impl Sink<ServerOutput>,
    ) {
        if let Some(cell) = self.route(from) {
            let live = locked(&cell, out, |slot, out| {
                if slot.gone {
                    // It ended between the lookup and the lock, and so left
                    // the table.
                    return false;
                }
                self.on_live_connect(now, slot, isn, len, out);
                true
            });
            if live {
                return;
            }
        }
        {
            let table = self.table.read();
            if table.ended.contains_key(&(from, isn)) {
                // A late duplicate of the Connect that opened a connection now
                // ended: admitting it would open a ghost connection.
                bump(&self.totals.duplicate_connects);
                return;
            }
            if table.closing {
                drop(table);
                self.refuse(now, from, out);
                return;
            }
        }
        let mut table = loop {
            // Unvalidated connections are the first to go. (Not for the
            // budget: they hold next to nothing, so evicting them would free
            // nothing.)
            self.evict_for_room(now, out);
            let table = self.table.write();
            if table.by_addr.contains_key(&from) {
                // Another thread admitted this address's Connect meanwhile
                // (a duplicate sent before our Ack came back).
                bump(&self.totals.duplicate_connects);
                return;
            }
            if !table.closing && self.table_full(&table) && !table.unvalidated.is_empty() {
                // Another thread's admission took the room just made: make
                // room again (each pass admits someone, so this ends).
                continue;
            }
            break table;
        };
        if table.closing || !self.admits(&table) {
            if !table.closing
                && self.pool.in_use().saturating_add(2 * EVENT_COST) > self.config.budget
            {
                bump(&self.totals.budget_refusals);
            }
            drop(table);
            self.refuse(now, from, out);
            return;
        }
        let id = table.new_id();
        let mut conn = Conn::server(self.config.params, id, isn);
        conn.set_coalesce_acks(self.config.coalesce_acks);
        let timing = Timing::new(now, conn.next_unsent());
        table.admissions += 1;
        let admitted = table.admissions;
        let cell = Arc::new(Mutex::new(Slot {
            id,
            addr: from,
            local,
            conn,
            timing,
            gone: false,
            unread: (0, 0),
            backlog: VecDeque::new(),
            unwritable: false,
            full: false,
            validated: false,
            bytes_in: len as u64,
            bytes_out: 0,
            challenge: None,
            charged: 0,
            withholding: false,
            admitted,
            unsent: false,
            wants_more: false,
            refused_write: false,
            acked_at_tick: 0,
        }));
        // Locked before anyone else can find it (so no lock-order question
        // arises), and held until its `Connected` is out: whatever a
        // datagram for it produces comes after.
        let mut slot = cell.lock();
        table.conns.insert(id, cell.clone());
        table.by_addr.insert(from, (id, cell.clone()));
        table.unvalidated.insert(admitted, id);
        drop(table);
        if self.config.charge_events {
            // Its `Connected` and its terminal event, charged now (see `app`).
            self.pool.events_out(2);
        }
        bump(&self.totals.accepted);
        state_change(now, Some(ConnId(id)), from, ConnState::Connected, out);
        out.output(ServerOutput::App(ServerEvent::Connected {
            id: ConnId(id),
            peer: from,
        }));
        self.after(now, &mut slot, out);
        out.release();
    }

    /// A Connect from the address of live connection `slot`.
    fn on_live_connect(
        &self,
        now: Instant,
        slot: &mut Slot,
        isn: u64,
        len: usize,
        out: &mut impl Sink<ServerOutput>,
    ) {
        slot.bytes_in = slot.bytes_in.saturating_add(len as u64);
        if slot.conn.isn() == isn {
            // Our Ack was lost: answer the repeated Connect the same way.
            bump(&self.totals.duplicate_connects);
            let _ = slot.conn.handle(Message::connect(isn));
            self.after(now, slot, out);
            return;
        }
        let (late, closing) = {
            let table = self.table.read();
            (table.ended.contains_key(&(slot.addr, isn)), table.closing)
        };
        if late {
            bump(&self.totals.duplicate_connects);
            return;
        }
        if closing {
            self.refuse(now, slot.addr, out);
            return;
        }
        if slot.challenge.is_none() {
            log::debug!(
                "a Connect with isn {isn} from {}, whose connection {} is live: challenged",
                slot.addr,
                slot.id
            );
            slot.challenge = Some(CHALLENGE_EPOCHS);
            bump(&self.totals.challenged_connects);
        }
    }

    /// Ends the oldest unvalidated connections while the table is full.
    fn evict_for_room(&self, now: Instant, out: &mut impl Sink<ServerOutput>) {
        loop {
            let oldest = {
                let table = self.table.read();
                if !self.table_full(&table) {
                    return;
                }
                table
                    .unvalidated
                    .first_key_value()
                    .and_then(|(_, id)| table.conns.get(id).cloned())
            };
            let Some(cell) = oldest else { return };
            locked(&cell, out, |slot, out| {
                if !slot.gone && !slot.validated {
                    log::debug!("connection {} evicted: never validated", slot.id);
                    bump(&self.totals.evicted_unvalidated);
                    self.end(now, slot, Ending::Lost, out);
                }
            });
        }
    }

    /// Whether the table has no room for a new connection: the connection
    /// limit, or the cap on unvalidated connections.
    fn table_full(&self, table: &Table) -> bool {
        table.conns.len() >= self.config.max_connections
            || table.unvalidated.len() >= self.config.max_unvalidated
    }

    /// Whether a new connection may be admitted now.
    fn admits(&self, table: &Table) -> bool {
        !self.table_full(table)
            && self.pool.in_use().saturating_add(2 * EVENT_COST) <= self.config.budget
    }

    pub(super) fn refuse(&self, now: Instant, from: SocketAddr, out: &mut impl Sink<ServerOutput>) {
        bump(&self.totals.refused);
        if self.table.write().first_refusal(from) {
            state_change(now, None, from, ConnState::Refused, out);
        }
    }
}
