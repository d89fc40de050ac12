//! The receive path: a datagram is decoded, routed by its source address to
//! its connection, and handled under that connection's lock; a Connect goes
//! to admission ([`admit`](super::admit)).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::lock_api::ArcMutexGuard;

use super::counters::bump;
use super::output::{OwedAcks, ServerOutput};
use super::table::Cell;
use super::{locked, release, LockedSlot, ServerCore};
use crate::proto::conn::{Rejected, MAX_ISN};
use crate::proto::message::{log_malformed, DecodeError, Message, MsgType};
use crate::proto::sink::Sink;

impl ServerCore {
    // ----- inputs -----

    /// A datagram arrived from `from`, one of a batch: acknowledgements it
    /// owes may wait for [`end_batch`](Self::end_batch). Malformed ones are
    /// counted and dropped.
    pub fn handle(
        &self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        owed: &mut OwedAcks,
        out: &mut impl Sink<ServerOutput>,
    ) {
        self.handle_all(now, [(datagram, from, None)], owed, out);
    }

    /// [`handle`](Self::handle) for a datagram sent to `local` (see
    /// [`handle_batch_to`](Self::handle_batch_to)).
    pub fn handle_to(
        &self,
        now: Instant,
        from: SocketAddr,
        local: Option<IpAddr>,
        datagram: &[u8],
        owed: &mut OwedAcks,
        out: &mut impl Sink<ServerOutput>,
    ) {
        self.handle_all(now, [(datagram, from, local)], owed, out);
    }

    /// A batch of datagrams, then its end ([`end_batch`](Self::end_batch)).
    /// Consecutive datagrams from one address are handled under one
    /// acquisition of their connection's lock, and what they deliver is
    /// handed to `out` as one burst ([`Sink::release`]).
    pub fn handle_batch<'d>(
        &self,
        now: Instant,
        datagrams: impl IntoIterator<Item = (&'d [u8], SocketAddr)>,
        owed: &mut OwedAcks,
        out: &mut impl Sink<ServerOutput>,
    ) {
        let datagrams = datagrams.into_iter().map(|(d, from)| (d, from, None));
        self.handle_all(now, datagrams, owed, out);
        self.end_batch(now, owed, out);
    }

    /// [`handle_batch`](Self::handle_batch), each datagram with the address
    /// it was sent to (`None`: the socket's own). A server on a wildcard
    /// address (`0.0.0.0`, `::`) learns it from the socket: a new connection
    /// keeps the one its Connect was sent to, and everything the server
    /// sends it leaves from there ([`Sink::transmit_from`]), as the client,
    /// whose socket is connected to that address, expects.
    pub fn handle_batch_to<'d>(
        &self,
        now: Instant,
        datagrams: impl IntoIterator<Item = (&'d [u8], SocketAddr, Option<IpAddr>)>,
        owed: &mut OwedAcks,
        out: &mut impl Sink<ServerOutput>,
    ) {
        self.handle_all(now, datagrams, owed, out);
        self.end_batch(now, owed, out);
    }

    /// [`handle_batch`](Self::handle_batch) without its end.
    fn handle_all<'d>(
        &self,
        now: Instant,
        datagrams: impl IntoIterator<Item = (&'d [u8], SocketAddr, Option<IpAddr>)>,
        owed: &mut OwedAcks,
        out: &mut impl Sink<ServerOutput>,
    ) {
        let mut locked_slot: Option<(SocketAddr, LockedSlot)> = None;
        for (datagram, from, local) in datagrams {
            let msg = match Message::decode(datagram) {
                Ok(msg) => msg,
                Err(err) => {
                    release(&mut locked_slot, out);
                    self.malformed(from, datagram, err);
                    continue;
                }
            };
            if msg.kind == MsgType::Connect {
                release(&mut locked_slot, out);
                self.handle_connect(now, from, local, msg.seq_num, datagram.len(), out);
                continue;
            }
            if locked_slot.as_ref().map(|(at, _)| *at) != Some(from) {
                release(&mut locked_slot, out);
                match self.route(from) {
                    Some(cell) => locked_slot = Some((from, cell.lock_arc())),
                    None => {
                        log::debug!("dropped {msg:?} from {from}: no connection from this address");
                        bump(&self.totals.rejected);
                        continue;
                    }
                }
            }
            if let Some((_, slot)) = &mut locked_slot {
                self.on_message(now, from, slot, msg, datagram.len(), owed, out);
            }
        }
        release(&mut locked_slot, out);
    }

    /// A decoded message arrived from `from` (as if in a datagram of its
    /// encoded size).
    pub fn handle_message(
        &self,
        now: Instant,
        from: SocketAddr,
        msg: Message<'_>,
        owed: &mut OwedAcks,
        out: &mut impl Sink<ServerOutput>,
    ) {
        let len = msg.encoded_len();
        if msg.kind == MsgType::Connect {
            self.handle_connect(now, from, None, msg.seq_num, len, out);
            return;
        }
        let Some(cell) = self.route(from) else {
            log::debug!("dropped {msg:?} from {from}: no connection from this address");
            bump(&self.totals.rejected);
            return;
        };
        let mut slot = cell.lock_arc();
        self.on_message(now, from, &mut slot, msg, len, owed, out);
        out.release();
    }

    fn malformed(&self, from: SocketAddr, datagram: &[u8], err: DecodeError) {
        log_malformed(from, err, datagram);
        bump(&self.totals.malformed);
        if let Some(cell) = self.route(from) {
            let mut slot = cell.lock();
            slot.timing.malformed += 1;
            slot.bytes_in = slot.bytes_in.saturating_add(datagram.len() as u64);
        }
    }

    pub(super) fn route(&self, from: SocketAddr) -> Option<Cell> {
        self.table
            .read()
            .by_addr
            .get(&from)
            .map(|(_, cell)| cell.clone())
    }

    fn handle_connect(
        &self,
        now: Instant,
        from: SocketAddr,
        local: Option<IpAddr>,
        isn: u64,
        len: usize,
        out: &mut impl Sink<ServerOutput>,
    ) {
        if isn > MAX_ISN {
            log::debug!("dropped a Connect from {from}: isn {isn} above MAX_ISN");
            bump(&self.totals.rejected);
            return;
        }
        self.on_connect(now, from, local, isn, len, out);
    }

    /// A message other than Connect from `from`, whose connection `slot` is
    /// (locked).
    #[allow(clippy::too_many_arguments)]
    fn on_message(
        &self,
        now: Instant,
        from: SocketAddr,
        slot: &mut LockedSlot,
        msg: Message<'_>,
        len: usize,
        owed: &mut OwedAcks,
        out: &mut impl Sink<ServerOutput>,
    ) {
        if slot.gone {
            // It ended between the lookup and the lock.
            log::debug!("dropped {msg:?} from {from}: its connection just ended");
            bump(&self.totals.rejected);
            return;
        }
        let id = slot.id;
        slot.bytes_in = slot.bytes_in.saturating_add(len as u64);
        if msg.conn_id != id {
            log::debug!("dropped {msg:?} from {from}: connection {id} is this address's");
            bump(&self.totals.rejected);
            return;
        }
        // Only a peer that receives our datagrams knows the (random) id.
        if slot.challenge.take().is_some() {
            log::debug!("connection {id} at {from} answered the challenge");
        }
        if !slot.validated {
            slot.validated = true;
            self.table.write().unvalidated.remove(&slot.admitted);
        }
        if msg.kind == MsgType::Data {
            if self.config.coalesce_acks {
                let cell = ArcMutexGuard::mutex(slot);
                if !owed.conns.iter().any(|c| Arc::ptr_eq(c, cell)) {
                    owed.conns.push(cell.clone());
                }
            }
            // Other connections may have used the shared budget since.
            slot.set_room(&self.config, &self.pool);
        }
        // What to log if it is rejected (the message itself is consumed).
        let what = (msg.kind, msg.conn_id, msg.seq_num);
        match slot.conn.handle(msg) {
            Ok(()) => {}
            // Flow control, not a fault of the peer's.
            Err(Rejected::Paused) => {
                if !slot.inbox_full(&self.config) {
                    slot.wants_more = true;
                }
            }
            Err(why) => {
                log::debug!("dropped {what:?} from {from}: {why}");
                slot.timing.rejected += 1;
                bump(&self.totals.rejected);
            }
        }
        self.after(now, slot, out);
    }

    /// The end of a batch of datagrams: owed acknowledgements go out.
    pub fn end_batch(&self, now: Instant, owed: &mut OwedAcks, out: &mut impl Sink<ServerOutput>) {
        for cell in owed.conns.drain(..) {
            locked(&cell, out, |slot, out| {
                if !slot.gone {
                    slot.conn.flush_acks();
                    self.after(now, slot, out);
                }
            });
        }
    }
}
