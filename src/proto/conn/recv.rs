//! The receive side: the reorder window, Data held back for want of room,
//! and what waits for the application, in order.

use std::collections::{BTreeMap, VecDeque};

use super::{Conn, Message, Phase, Rejected, Room};

/// What was received from the peer and not yet read by the application.
#[derive(Debug)]
pub(super) struct RecvBuffer {
    /// Next sequence number to deliver in order.
    pub(super) expected: u64,
    /// Out-of-order messages inside the receive window, by sequence number,
    /// all above `expected` (the one at `expected` is delivered at once).
    /// A map, not a slot per sequence number: memory follows what was
    /// received, whatever the window size (found by fuzzing with a huge window).
    pub(super) window: BTreeMap<u64, Vec<u8>>,
    /// Payload bytes in `window`.
    pub(super) window_bytes: usize,
    /// Delivered in order, waiting for [`Conn::poll_delivered`].
    pub(super) delivered: VecDeque<Vec<u8>>,
    /// How much more Data may be taken and acknowledged, and how much more
    /// may be held unacknowledged (flow control: see [`Conn::set_receive_room`]).
    pub(super) room: Room,
    pub(super) withhold_room: Room,
    /// In-window Data received while there was no room, not acknowledged:
    /// taken (and acknowledged) as soon as there is room again. Never also
    /// in `window`, and always empty unless the connection is open.
    pub(super) withheld: BTreeMap<u64, Vec<u8>>,
    /// Payload bytes in `held`.
    pub(super) withheld_bytes: usize,
}

impl RecvBuffer {
    /// Nothing received yet; the first message to deliver is `expected`.
    pub(super) fn new(expected: u64) -> RecvBuffer {
        RecvBuffer {
            expected,
            window: BTreeMap::new(),
            window_bytes: 0,
            delivered: VecDeque::new(),
            room: Room::UNLIMITED,
            withhold_room: Room::NONE,
            withheld: BTreeMap::new(),
            withheld_bytes: 0,
        }
    }
}

impl Conn {
    /// Next sequence number the receiver will deliver.
    pub fn next_expected(&self) -> u64 {
        self.recv.expected
    }

    /// Out-of-order messages buffered for delivery and their payload bytes
    /// (acknowledged, so they count against the inbox).
    pub fn reorder_buffered(&self) -> (usize, usize) {
        (self.recv.window.len(), self.recv.window_bytes)
    }

    /// Messages received while there was no room, held unacknowledged, and
    /// their payload bytes.
    pub fn withheld(&self) -> (usize, usize) {
        (self.recv.withheld.len(), self.recv.withheld_bytes)
    }

    /// Whether [`poll_delivered`](Conn::poll_delivered) has a payload.
    pub fn has_delivered(&self) -> bool {
        !self.recv.delivered.is_empty()
    }

    /// The next payload to hand to the application, in order.
    pub fn poll_delivered(&mut self) -> Option<Vec<u8>> {
        self.recv.delivered.pop_front()
    }

    /// Takes Data from the peer: acknowledges it and delivers it (with
    /// what it unblocks), buffers it out of order, holds it for want of
    /// room, or drops it.
    pub(super) fn on_data(&mut self, mut msg: Message<'_>) -> Result<(), Rejected> {
        if !msg.verify_data() {
            self.counters.corrupt_received += 1;
            return Err(Rejected::Corrupt);
        }
        let sn = msg.seq_num;
        let window = u64::from(self.params.window_size);
        if sn >= self.recv.expected.saturating_add(window) {
            self.counters.outside_window += 1;
            return Err(Rejected::OutsideWindow);
        }
        self.epochs_silent = 0;
        if sn < self.recv.expected || self.recv.window.contains_key(&sn) {
            self.ack_received(sn, sn < self.recv.expected);
            self.counters.duplicates_received += 1;
            return Ok(());
        }
        if self.recv.withheld.contains_key(&sn) {
            // Still held: it is acknowledged once it is taken.
            self.counters.duplicates_received += 1;
            return Ok(());
        }
        let len = msg.payload.len();
        // A closing connection consumes without delivering: it needs no room.
        if self.phase == Phase::Open && !self.recv.room.fits(len) {
            if self.recv.withhold_room.fits(len) {
                // Kept, unacknowledged, so that the application's
                // next read can take it at once.
                self.recv.withhold_room.take(len);
                self.recv.withheld_bytes += len;
                self.recv.withheld.insert(sn, msg.payload.into_owned());
                self.counters.withheld += 1;
                return Ok(());
            }
            // No room: take nothing new, as if it was lost; the
            // sender's window and back-off slow it down, and
            // heartbeats keep the connection alive.
            self.counters.paused_drops += 1;
            return Err(Rejected::Paused);
        }
        self.take(sn, msg.payload.into_owned());
        Ok(())
    }

    /// Sets how much more Data the connection may take (acknowledge and
    /// buffer for the application, in order or not) and how much more it
    /// may hold unacknowledged when that runs out, both counted from what
    /// it holds now. A driver sets both after every input, from the
    /// application's inbox limit and its memory budget.
    ///
    /// New Data that does not fit `room` is held, unacknowledged, if it fits
    /// `hold`, and otherwise dropped as if lost (duplicates are still
    /// acknowledged). Held Data is taken, in order, and acknowledged here as
    /// soon as `room` allows: a reader that makes room is not paced by the
    /// sender's retransmissions. A closing connection needs no room (it
    /// discards what it receives).
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::proto::{Conn, Message, Room};
    /// use liveseq::Params;
    ///
    /// let params = Params { window_size: 4, max_unacked_messages: 4, ..Params::default() };
    /// let mut conn = Conn::server(params, 1, 100);
    /// conn.poll_transmit(); // the Connect's Ack
    /// conn.set_receive_room(Room::NONE, Room::UNLIMITED);
    /// conn.handle(Message::data(1, 101, b"held")).unwrap();
    /// assert_eq!(conn.poll_delivered(), None);
    /// assert_eq!(conn.poll_transmit(), None); // not acknowledged
    /// // The application read: room again, taken and acknowledged at once.
    /// conn.set_receive_room(Room::UNLIMITED, Room::NONE);
    /// assert_eq!(conn.poll_delivered().unwrap(), b"held");
    /// assert_eq!(conn.poll_transmit().unwrap(), Message::ack(1, 101));
    /// ```
    pub fn set_receive_room(&mut self, room: Room, hold: Room) {
        self.recv.room = room;
        self.recv.withhold_room = hold;
        if self.recv.withheld.is_empty() || self.phase != Phase::Open {
            return;
        }
        let mut taken = false;
        while let Some(entry) = self.recv.withheld.first_entry() {
            let len = entry.get().len();
            if !self.recv.room.fits(len) {
                break;
            }
            let (sn, payload) = entry.remove_entry();
            self.recv.withheld_bytes -= len;
            self.take(sn, payload);
            taken = true;
        }
        if taken {
            self.flush_acks();
        }
    }

    /// Takes new in-window Data `sn`: acknowledges it, then delivers it
    /// (and what it unblocks) or buffers it out of order.
    pub(super) fn take(&mut self, sn: u64, payload: Vec<u8>) {
        if self.phase == Phase::Open {
            self.recv.room.take(payload.len());
        }
        self.ack_received(sn, sn == self.recv.expected);
        if sn != self.recv.expected {
            self.recv.window_bytes += payload.len();
            self.recv.window.insert(sn, payload);
            return;
        }
        self.deliver_next(payload);
        while let Some(payload) = self.recv.window.remove(&self.recv.expected) {
            self.recv.window_bytes -= payload.len();
            self.deliver_next(payload);
        }
    }

    /// Forgets everything received and not delivered.
    pub(super) fn clear_received(&mut self) {
        self.recv.window.clear();
        self.recv.window_bytes = 0;
        self.recv.withheld.clear();
        self.recv.withheld_bytes = 0;
    }

    /// Takes the message numbered `expected`.
    pub(super) fn deliver_next(&mut self, payload: Vec<u8>) {
        // Closing: acknowledged and consumed, but no longer delivered.
        if self.phase == Phase::Open {
            self.counters.data_received += 1;
            self.counters.bytes_received += payload.len() as u64;
            self.recv.delivered.push_back(payload);
        }
        self.recv.expected = self.recv.expected.saturating_add(1);
    }
}
