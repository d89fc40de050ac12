//! The per-connection protocol state machine: windows, acknowledgements,
//! retransmission back-off, heartbeats, loss detection and reordering.
//!
//! [`Conn`] performs no I/O and reads no clock, in the manner of quinn-proto:
//! a driver feeds it decoded messages ([`Conn::handle`]), epoch ticks
//! ([`Conn::on_epoch`]), application writes ([`Conn::write`]) and close
//! requests ([`Conn::close`]), then pulls what to send ([`Conn::poll_transmit`]),
//! what to hand to the reader ([`Conn::poll_delivered`]) and state changes
//! ([`Conn::poll_event`]). Drivers call the `poll_*` methods after every input
//! until they return `None`. Because time is just a count of `on_epoch` calls,
//! the whole protocol can be tested deterministically.
//!
//! This is the "lsp buffer" of the design notes: `handle` is saveInboundMessage
//! plus ackMessage/cAckMessage, `write` is relayOutboundMessage, and the window
//! check is updateOutbox.

use std::collections::{BTreeMap, VecDeque};

use super::message::{Message, MsgType};
use crate::Params;

/// The largest sequence number on the wire: the Go peers decode `SeqNum`
/// into a Go `int`, so anything above `i64::MAX` is malformed to them, and
/// the decoder rejects it too.
pub const MAX_SEQ_NUM: u64 = i64::MAX as u64;

/// The largest initial sequence number a server accepts in a Connect. It
/// leaves 2^62 sequence numbers for each side, more than any connection
/// can use, so no sequence arithmetic can reach [`MAX_SEQ_NUM`]. A Connect
/// with a larger one is refused (ignored and counted).
pub const MAX_ISN: u64 = (1 << 62) - 1;

/// How many times a server connection re-sends the Ack of its Connect, one
/// per epoch, while its client has said nothing since. A client whose
/// repeated Connects are all lost still hears it; a spoofed Connect earns
/// its claimed source at most `1 + CONNECT_REACKS` small datagrams.
pub const CONNECT_REACKS: u32 = 3;

/// What the receive and send buffers charge for each message beyond its
/// payload: the `Vec`, its place in a queue or map, and allocator rounding.
/// A 1-byte message is not free, so a flood of tiny ones is bounded too.
pub const MESSAGE_OVERHEAD: usize = 64;

/// How much more a connection may take in: messages, payload bytes, and
/// memory (payload plus [`MESSAGE_OVERHEAD`] per message, for a server's
/// memory budget). See [`Conn::set_receive_room`].
///
/// # Examples
///
/// ```
/// use liveseq::proto::{Room, MESSAGE_OVERHEAD};
///
/// let room = Room { messages: 2, bytes: 100, memory: 1000 };
/// assert!(room.fits(100));
/// assert!(room.fits(500)); // the byte limit may be passed by one message
/// assert!(!room.fits(1000)); // memory may not: a message is not free
/// assert!(room.fits(1000 - MESSAGE_OVERHEAD));
/// assert!(!Room::NONE.fits(0));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Room {
    /// Messages that may still be taken.
    pub messages: usize,
    /// Payload bytes that may still be taken.
    pub bytes: usize,
    /// Memory that may still be taken, each message charged its payload
    /// plus [`MESSAGE_OVERHEAD`].
    pub memory: usize,
}

impl Room {
    /// No limit.
    pub const UNLIMITED: Room = Room {
        messages: usize::MAX,
        bytes: usize::MAX,
        memory: usize::MAX,
    };

    /// No room at all.
    pub const NONE: Room = Room {
        messages: 0,
        bytes: 0,
        memory: 0,
    };

    /// Whether one message of `len` payload bytes fits: a message may pass
    /// the byte limit (as a connection's inbox limit is "reached", not
    /// "exceeded", so a message larger than the limit is never stuck), but
    /// never the memory.
    pub fn fits(&self, len: usize) -> bool {
        self.messages > 0 && self.bytes > 0 && len.saturating_add(MESSAGE_OVERHEAD) <= self.memory
    }

    fn take(&mut self, len: usize) {
        self.messages = self.messages.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(len);
        self.memory = self
            .memory
            .saturating_sub(len.saturating_add(MESSAGE_OVERHEAD));
    }
}

/// While connecting, a client resends its Connect in epoch 1 and then in
/// every second epoch: the Go reference server heartbeats only in epochs in
/// which it heard nothing from the client, and never re-acks a repeated
/// Connect, so a client must leave it silent epochs in which to speak.
fn connect_resend_due(epochs_connecting: u32) -> bool {
    epochs_connecting % 2 == 1
}

/// A state change the driver must act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A client's Connect was acknowledged; [`Conn::conn_id`] is now set.
    Connected,
    /// Nothing was heard from the peer for `epoch_limit` epochs (for a client
    /// still connecting: the connect failed). Unsent and unacknowledged
    /// messages were set aside: see [`Conn::take_orphans`].
    Lost,
    /// The connection is closing and every message written was acknowledged.
    Drained,
}

/// Where the connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Client only: Connect sent, no Ack yet.
    Connecting,
    /// Exchanging data.
    Open,
    /// Closing: no new writes, nothing more delivered; waiting for acks.
    Closing,
    /// Closed after draining.
    Drained,
    /// Lost to the epoch limit.
    Lost,
}

/// Why [`Conn::handle`] did not use a message. Drivers count these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejected {
    /// Data whose payload is shorter than `Size` or whose checksum is wrong.
    Corrupt,
    /// Data at or beyond the end of the receive window: dropped without an Ack.
    OutsideWindow,
    /// New Data with no room to take or hold it (the application's inbox is
    /// full and nothing more may be held): dropped without an Ack, as if
    /// lost, so the sender backs off.
    Paused,
    /// An Ack or CAck for a sequence number that was never sent.
    UnsentAck,
    /// A message that makes no sense in this phase (a CAck while connecting,
    /// a Connect to a client, a message for another connection id).
    Unexpected,
}

/// Counters kept by the state machine (the driver adds socket-level ones).
///
/// They count local events, one at a time, in `u64`s: they cannot overflow
/// in practice, so they use plain additions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Distinct Data messages sent (first transmissions).
    pub data_sent: u64,
    /// Data retransmissions on the back-off schedule.
    pub retransmissions: u64,
    /// Payload bytes of first transmissions.
    pub bytes_sent: u64,
    /// Heartbeats `(Ack, id, 0)` sent.
    pub heartbeats_sent: u64,
    /// Acks sent for received Data.
    pub acks_sent: u64,
    /// Data messages delivered in order.
    pub data_received: u64,
    /// Payload bytes delivered in order.
    pub bytes_received: u64,
    /// Data messages received again (below the window or already buffered).
    pub duplicates_received: u64,
    /// Heartbeats received.
    pub heartbeats_received: u64,
    /// Data dropped by the integrity rules.
    pub corrupt_received: u64,
    /// Data dropped for being outside the receive window.
    pub outside_window: u64,
    /// In-order Data left unacknowledged because the application's inbox
    /// was full (flow control; the sender will retransmit it).
    pub paused_drops: u64,
    /// In-window Data kept unacknowledged because the inbox was full, and
    /// acknowledged as soon as the application read (no wait for the
    /// sender's next retransmission).
    pub held_back: u64,
    /// Draining connections given up because the peer acknowledged
    /// nothing for the stall limit (see [`Conn::stall_limit`]).
    pub stalled_closes: u64,
}

/// One written message, from `write` until it is acknowledged.
#[derive(Debug)]
struct Outgoing {
    payload: Vec<u8>,
    acked: bool,
    /// Retransmitted at least once (its ack then gives no RTT sample).
    retransmitted: bool,
    /// Epochs to wait, beyond one, before the next retransmission.
    backoff: u32,
    /// Epochs since the last transmission.
    since_sent: u32,
}

/// A datagram waiting in [`Conn::poll_transmit`]. Data refers to the queued
/// payload by sequence number, so nothing is copied until it is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transmit {
    Connect,
    Ack(u64),
    CAck(u64),
    Data(u64),
}

/// The protocol state of one connection. See the [`proto`](crate::proto) docs.
///
/// # Examples
///
/// Two state machines wired back to back, with time as a count of epochs:
///
/// ```
/// use liveseq::proto::{Conn, Event, Message};
/// use liveseq::Params;
///
/// let params = Params::default();
/// let mut client = Conn::client(params, 42);
/// let connect = client.poll_transmit().unwrap().into_owned();
/// let mut server = Conn::server(params, 1, connect.seq_num);
/// client.handle(server.poll_transmit().unwrap()).unwrap(); // (Ack, 1, 42)
/// assert_eq!(client.poll_event(), Some(Event::Connected));
///
/// client.write(b"hello".to_vec());
/// let data = client.poll_transmit().unwrap().into_owned();
/// assert_eq!(data.seq_num, 43); // isn + 1
/// server.handle(data).unwrap();
/// assert_eq!(server.poll_delivered().unwrap(), b"hello");
/// client.handle(server.poll_transmit().unwrap()).unwrap(); // (Ack, 1, 43)
/// assert_eq!(client.unacked(), 0);
///
/// // Nothing heard for epoch_limit epochs: the connection is lost.
/// for _ in 0..params.epoch_limit {
///     client.on_epoch();
/// }
/// assert_eq!(client.poll_event(), Some(Event::Lost));
/// ```
#[derive(Debug)]
pub struct Conn {
    params: Params,
    conn_id: u32,
    isn: u64,
    phase: Phase,

    /// Sequence number of `out[0]`: the oldest unacknowledged message, or the
    /// next to send when nothing is in flight.
    base: u64,
    /// Written messages: `out[..sent]` were sent at least once, the rest wait for the window.
    out: VecDeque<Outgoing>,
    /// Payload bytes in `out` not yet acknowledged.
    out_bytes: usize,
    sent: usize,
    unacked: usize,
    /// Whether any Data went out since the last epoch (no heartbeat needed then).
    data_sent_this_epoch: bool,

    /// Next sequence number to deliver in order.
    expected: u64,
    /// Out-of-order messages inside the receive window, by sequence number.
    /// A map, not a slot per sequence number: memory follows what was
    /// received, whatever the window size (found by fuzzing with a huge window).
    window: BTreeMap<u64, Vec<u8>>,
    delivered: VecDeque<Vec<u8>>,

    epochs_silent: u32,
    /// Payload bytes in `window`.
    window_bytes: usize,
    /// How much more Data may be taken and acknowledged, and how much more
    /// may be held unacknowledged (flow control: see [`Conn::set_receive_room`]).
    room: Room,
    hold_room: Room,
    /// In-window Data received while there was no room, not acknowledged:
    /// taken (and acknowledged) as soon as there is room again.
    held: BTreeMap<u64, Vec<u8>>,
    held_bytes: usize,
    /// Epochs in a row with messages in flight and none newly acknowledged.
    epochs_stalled: u32,
    /// The application closed the connection (it reads nothing more).
    closed_by_app: bool,
    /// Epochs since a client started connecting (paces its Connects).
    epochs_connecting: u32,
    /// A connection id a connecting client must not adopt: its previous
    /// connection's, whose heartbeats may still arrive on the same socket.
    stale_conn_id: Option<u32>,
    /// Re-sends of the Connect's Ack left (server; see [`CONNECT_REACKS`]).
    reacks_left: u32,
    /// Acknowledge in-order Data with one CAck per [`Conn::flush_acks`].
    coalesce_acks: bool,
    /// In-order Data acknowledged since the last flush, and the first of them:
    /// one is acknowledged with a plain Ack, more with a CAck.
    acks_pending: u32,
    first_pending_ack: u64,
    /// Whether the peer has sent anything but a Connect. A server sends no
    /// heartbeats before that, so a spoofed Connect earns its claimed source
    /// one Ack and nothing more (no amplification).
    heard: bool,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// Sequence numbers acknowledged on their first transmission.
    first_acked: VecDeque<u64>,
    /// Payloads never acknowledged when the connection was lost, in order.
    orphans: Vec<Vec<u8>>,
    counters: Counters,
}

impl Conn {
    /// A client connection: it starts by sending `(Connect, 0, isn)`.
    ///
    /// While connecting it takes as the answer `(Ack, id, isn)`, a heartbeat
    /// `(Ack, id, 0)` or intact Data carrying a connection id and a sequence
    /// number in its first receive window (`isn + 1` to `isn + window_size`):
    /// the Go reference server sends its Ack only once, so a client whose
    /// Ack was lost learns its id from what follows.
    pub fn client(params: Params, isn: u64) -> Conn {
        let mut conn = Conn::new(params, 0, isn, Phase::Connecting);
        conn.heard = true;
        conn.transmits.push_back(Transmit::Connect);
        conn
    }

    /// A client connection that, while it connects, takes nothing but the
    /// Ack of its Connect as naming `stale`, the id of its previous
    /// connection from the same socket (a reconnect): heartbeats and Data
    /// for that id may be the old connection's.
    pub fn client_after(params: Params, isn: u64, stale: u32) -> Conn {
        let mut conn = Conn::client(params, isn);
        conn.stale_conn_id = Some(stale);
        conn
    }

    /// A server connection accepted from `(Connect, 0, isn)`: it starts by
    /// sending `(Ack, conn_id, isn)`, and sends it again in up to
    /// [`CONNECT_REACKS`] epochs while the client says nothing more.
    ///
    /// `isn` should be at most [`MAX_ISN`] (the server refuses Connects
    /// above it); sequence arithmetic saturates, so larger values are safe
    /// but leave no room for messages.
    pub fn server(params: Params, conn_id: u32, isn: u64) -> Conn {
        let mut conn = Conn::new(params, conn_id, isn, Phase::Open);
        conn.reacks_left = CONNECT_REACKS;
        conn.transmits.push_back(Transmit::Ack(isn));
        conn
    }

    fn new(params: Params, conn_id: u32, isn: u64, phase: Phase) -> Conn {
        Conn {
            params,
            conn_id,
            isn,
            phase,
            // Saturating: see `server` for why an isn this large is harmless.
            base: isn.saturating_add(1),
            out: VecDeque::new(),
            out_bytes: 0,
            sent: 0,
            unacked: 0,
            data_sent_this_epoch: false,
            expected: isn.saturating_add(1),
            window: BTreeMap::new(),
            delivered: VecDeque::new(),
            epochs_silent: 0,
            window_bytes: 0,
            room: Room::UNLIMITED,
            hold_room: Room::NONE,
            held: BTreeMap::new(),
            held_bytes: 0,
            epochs_stalled: 0,
            closed_by_app: false,
            epochs_connecting: 0,
            stale_conn_id: None,
            reacks_left: 0,
            heard: false,
            coalesce_acks: false,
            acks_pending: 0,
            first_pending_ack: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            first_acked: VecDeque::new(),
            orphans: Vec::new(),
            counters: Counters::default(),
        }
    }

    // ----- getters -----

    /// The connection id (0 while a client is still connecting).
    pub fn conn_id(&self) -> u32 {
        self.conn_id
    }

    /// The client's initial sequence number.
    pub fn isn(&self) -> u64 {
        self.isn
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Messages sent and not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.unacked
    }

    /// Messages written but not yet sent (waiting for the window).
    pub fn queued(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Payload bytes written and not yet acknowledged (sent or queued).
    pub fn buffered_bytes(&self) -> usize {
        self.out_bytes
    }

    /// Whether the connection was closed by its application (see
    /// [`close`](Conn::close)) before it ended; a loss is then no news to it.
    pub fn closed_by_app(&self) -> bool {
        self.closed_by_app
    }

    /// Oldest unacknowledged sequence number (or the next to send).
    pub fn oldest_unacked(&self) -> u64 {
        self.base
    }

    /// Sequence numbers currently unacknowledged, in order.
    pub fn in_flight(&self) -> impl Iterator<Item = u64> + '_ {
        let base = self.base;
        self.out
            .iter()
            .take(self.sent)
            .enumerate()
            .filter(|(_, m)| !m.acked)
            .map(move |(i, _)| base.saturating_add(i as u64))
    }

    /// Next sequence number the receiver will deliver.
    pub fn next_expected(&self) -> u64 {
        self.expected
    }

    /// Out-of-order messages buffered for delivery.
    pub fn buffered(&self) -> usize {
        self.window.len()
    }

    /// Out-of-order messages buffered for delivery and their payload bytes
    /// (acknowledged, so they count against the inbox).
    pub fn reorder_buffered(&self) -> (usize, usize) {
        (self.window.len(), self.window_bytes)
    }

    /// Messages received while there was no room, held unacknowledged, and
    /// their payload bytes.
    pub fn held(&self) -> (usize, usize) {
        (self.held.len(), self.held_bytes)
    }

    /// Written messages not yet acknowledged (sent or waiting), and their
    /// payload bytes.
    pub fn send_buffered(&self) -> (usize, usize) {
        (self.out.len(), self.out_bytes)
    }

    /// Messages written and acknowledged so far (those sent, less those in
    /// flight): it grows with every acknowledgement of something new.
    pub fn acked(&self) -> u64 {
        self.counters.data_sent - self.unacked as u64
    }

    /// Epochs in a row in which messages were in flight and none was newly
    /// acknowledged.
    pub fn epochs_stalled(&self) -> u32 {
        self.epochs_stalled
    }

    /// Epochs without acknowledgement progress after which a draining
    /// connection is given up as lost: `epoch_limit` epochs, plus the
    /// back-off cap, so that a message waiting out its back-off is
    /// retransmitted at least once more before the connection is judged.
    /// A peer that keeps heartbeating but never acknowledges cannot make a
    /// close hang.
    pub fn stall_limit(&self) -> u32 {
        self.params
            .epoch_limit
            .saturating_add(self.params.max_backoff_interval)
    }

    /// Epochs since anything was heard from the peer.
    pub fn epochs_silent(&self) -> u32 {
        self.epochs_silent
    }

    /// Whether everything written has been acknowledged.
    pub fn is_idle(&self) -> bool {
        self.out.is_empty()
    }

    /// The state machine's counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    fn is_live(&self) -> bool {
        matches!(self.phase, Phase::Open | Phase::Closing)
    }

    // ----- inputs -----

    /// Queues a payload for sending (relayOutboundMessage). It goes out at once
    /// if the window allows; a client still connecting sends it once connected.
    /// Ignored once the connection is closing, closed or lost.
    pub fn write(&mut self, payload: Vec<u8>) {
        if !matches!(self.phase, Phase::Open | Phase::Connecting) {
            return;
        }
        self.out_bytes += payload.len();
        self.out.push_back(Outgoing {
            payload,
            acked: false,
            retransmitted: false,
            backoff: 0,
            since_sent: 0,
        });
        self.fill_window();
    }

    /// Starts closing: no more writes are accepted, nothing more is delivered,
    /// and [`Event::Drained`] follows once everything is acknowledged
    /// (at once if it already is). Received Data is still acknowledged so the
    /// peer can drain too.
    pub fn close(&mut self) {
        self.closed_by_app = true;
        match self.phase {
            Phase::Open => {
                // The peer still needs the acks of what we received.
                self.flush_acks();
                self.phase = Phase::Closing;
                self.delivered.clear();
                // Never acknowledged: the peer sends them again, and a
                // closing connection then consumes them.
                self.held.clear();
                self.held_bytes = 0;
                // The receive window stays: the peer may be closing too, and
                // only a window that keeps moving lets its last messages in.
                self.check_drained();
            }
            // A connect that never completed cannot drain: what was written
            // meanwhile is set aside, never sent (see `take_orphans`).
            Phase::Connecting => {
                self.phase = Phase::Drained;
                self.transmits.clear();
                self.orphans.extend(self.out.drain(..).map(|m| m.payload));
                self.out_bytes = 0;
                self.events.push_back(Event::Drained);
            }
            Phase::Closing | Phase::Drained | Phase::Lost => {}
        }
    }

    /// Processes one message from the peer (the driver has already checked
    /// that it came from the peer's address).
    pub fn handle(&mut self, mut msg: Message<'_>) -> Result<(), Rejected> {
        match self.phase {
            Phase::Drained | Phase::Lost => return Err(Rejected::Unexpected),
            Phase::Connecting => {
                // The Ack of our Connect, a heartbeat, or the server's first
                // Data: each proves the connection exists and names it. Other
                // acks are ignored, and Data must be intact before its id is
                // trusted, and numbered from our isn (inside our receive
                // window): Data of another connection to this address (an
                // earlier attempt's, a previous process's) is not ours. Only
                // the Ack carrying our isn may name the stale id (a restarted
                // server may hand out the same id again).
                let fresh = Some(msg.conn_id) != self.stale_conn_id;
                let window = u64::from(self.params.window_size);
                let ours = msg.seq_num > self.isn && msg.seq_num - self.isn <= window;
                let proof = msg.conn_id != 0
                    && match msg.kind {
                        MsgType::Ack if msg.seq_num == self.isn => true,
                        MsgType::Ack => msg.seq_num == 0 && fresh,
                        MsgType::Data => fresh && ours && msg.clone().verify_data(),
                        MsgType::Connect | MsgType::CAck => false,
                    };
                if !proof {
                    return Err(Rejected::Unexpected);
                }
                self.epochs_silent = 0;
                self.conn_id = msg.conn_id;
                self.phase = Phase::Open;
                self.events.push_back(Event::Connected);
                self.fill_window();
                if msg.kind != MsgType::Data {
                    return Ok(());
                }
            }
            Phase::Open | Phase::Closing => {}
        }
        if msg.conn_id != self.conn_id && msg.kind != MsgType::Connect {
            return Err(Rejected::Unexpected);
        }
        if msg.kind != MsgType::Connect && !self.heard {
            self.heard = true;
            // First word from the peer since its Connect: answer at once, so it
            // hears from us within one of its epochs even though heartbeats
            // were held back until now (a Data message gets its Ack instead).
            if msg.kind != MsgType::Data {
                self.transmits.push_back(Transmit::Ack(0));
                self.counters.heartbeats_sent += 1;
            }
        }
        match msg.kind {
            MsgType::Connect => {
                // A repeated Connect (our Ack was lost): answer it again.
                if msg.seq_num != self.isn || self.conn_id == 0 {
                    return Err(Rejected::Unexpected);
                }
                self.epochs_silent = 0;
                self.transmits.push_back(Transmit::Ack(self.isn));
                Ok(())
            }
            MsgType::Data => {
                if !msg.verify_data() {
                    self.counters.corrupt_received += 1;
                    return Err(Rejected::Corrupt);
                }
                let sn = msg.seq_num;
                let window = u64::from(self.params.window_size);
                if sn >= self.expected.saturating_add(window) {
                    self.counters.outside_window += 1;
                    return Err(Rejected::OutsideWindow);
                }
                self.epochs_silent = 0;
                if sn < self.expected || self.window.contains_key(&sn) {
                    self.ack_received(sn, sn < self.expected);
                    self.counters.duplicates_received += 1;
                    return Ok(());
                }
                if self.held.contains_key(&sn) {
                    // Still held: it is acknowledged once it is taken.
                    self.counters.duplicates_received += 1;
                    return Ok(());
                }
                let len = msg.payload.len();
                // A closing connection consumes without delivering: it needs no room.
                if self.phase == Phase::Open && !self.room.fits(len) {
                    if self.hold_room.fits(len) {
                        // Kept, unacknowledged, so that the application's
                        // next read can take it at once.
                        self.hold_room.take(len);
                        self.held_bytes += len;
                        self.held.insert(sn, msg.payload.into_owned());
                        self.counters.held_back += 1;
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
            MsgType::Ack if msg.seq_num == 0 => {
                self.epochs_silent = 0;
                self.counters.heartbeats_received += 1;
                Ok(())
            }
            MsgType::Ack | MsgType::CAck => {
                let sn = msg.seq_num;
                if sn >= self.next_unsent() {
                    return Err(Rejected::UnsentAck);
                }
                self.epochs_silent = 0;
                // Below `base`: an ack of something acknowledged before.
                if let Some(index) = sn.checked_sub(self.base) {
                    // Below `sent`, a usize: the check above bounds it.
                    let index = index as usize;
                    if msg.kind == MsgType::Ack {
                        self.ack_one(index);
                    } else {
                        for i in 0..=index {
                            self.ack_one(i);
                        }
                    }
                    self.after_acks();
                }
                Ok(())
            }
        }
    }

    /// One epoch passed: detect loss, retransmit on the back-off schedule,
    /// send a heartbeat if no Data went out, resend an unanswered Connect.
    pub fn on_epoch(&mut self) {
        if !matches!(self.phase, Phase::Connecting | Phase::Open | Phase::Closing) {
            return;
        }
        self.epochs_silent = self.epochs_silent.saturating_add(1);
        if self.epochs_silent >= self.params.epoch_limit {
            self.lose();
            return;
        }
        if self.unacked > 0 {
            self.epochs_stalled = self.epochs_stalled.saturating_add(1);
        } else {
            self.epochs_stalled = 0;
        }
        if self.phase == Phase::Closing && self.epochs_stalled >= self.stall_limit() {
            // A peer that heartbeats but never acknowledges: a close must
            // not wait for it forever.
            self.counters.stalled_closes += 1;
            self.lose();
            return;
        }
        if self.phase == Phase::Connecting {
            self.epochs_connecting = self.epochs_connecting.saturating_add(1);
            if connect_resend_due(self.epochs_connecting) {
                self.transmits.push_back(Transmit::Connect);
            }
            return;
        }
        if !self.heard && self.reacks_left > 0 {
            // Our Ack may have been lost, and the client's repeated Connects
            // too: say it again, a bounded number of times.
            self.reacks_left -= 1;
            self.transmits.push_back(Transmit::Ack(self.isn));
        }
        self.flush_acks();
        let cap = self.params.max_backoff_interval;
        for (i, m) in self.out.iter_mut().take(self.sent).enumerate() {
            if m.acked {
                continue;
            }
            m.since_sent = m.since_sent.saturating_add(1);
            if m.since_sent > m.backoff {
                m.since_sent = 0;
                m.retransmitted = true;
                m.backoff = if m.backoff == 0 {
                    1
                } else {
                    m.backoff.saturating_mul(2)
                }
                .min(cap);
                self.transmits
                    .push_back(Transmit::Data(self.base.saturating_add(i as u64)));
                self.counters.retransmissions += 1;
                self.data_sent_this_epoch = true;
            }
        }
        if !self.data_sent_this_epoch && self.heard {
            self.transmits.push_back(Transmit::Ack(0));
            self.counters.heartbeats_sent += 1;
        }
        self.data_sent_this_epoch = false;
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
        self.room = room;
        self.hold_room = hold;
        if self.held.is_empty() || self.phase != Phase::Open {
            return;
        }
        let mut taken = false;
        while let Some(entry) = self.held.first_entry() {
            let len = entry.get().len();
            if !self.room.fits(len) {
                break;
            }
            let (sn, payload) = entry.remove_entry();
            self.held_bytes -= len;
            self.take(sn, payload);
            taken = true;
        }
        if taken {
            self.flush_acks();
        }
    }

    /// Does not count the current epoch toward the stall limit: a driver
    /// that held back what this connection sent in it (a server limiting
    /// what goes to an address that has not proven it receives, or waiting
    /// for a challenge to be answered) calls it before the next
    /// [`on_epoch`](Conn::on_epoch), so that a peer is never judged on
    /// retransmissions it could not receive.
    pub fn excuse_stall(&mut self) {
        self.epochs_stalled = self.epochs_stalled.saturating_sub(1);
    }

    /// Queues a heartbeat `(Ack, id, 0)` now, outside the epoch schedule: a
    /// client sends one as soon as it is connected (unless Data goes out),
    /// so that the server knows at once that the client receives what it
    /// sends (its address is validated).
    pub fn heartbeat_now(&mut self) {
        if self.phase == Phase::Open {
            self.transmits.push_back(Transmit::Ack(0));
            self.counters.heartbeats_sent += 1;
        }
    }

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

    // ----- outputs -----

    /// Whether [`poll_transmit`](Conn::poll_transmit) has something to send.
    pub fn has_transmit(&mut self) -> bool {
        while let Some(&t) = self.transmits.front() {
            if let Transmit::Data(sn) = t {
                if !self.is_unacked(sn) {
                    // Acknowledged since it was queued: nothing to send.
                    self.transmits.pop_front();
                    continue;
                }
            }
            return true;
        }
        false
    }

    fn is_unacked(&self, sn: u64) -> bool {
        sn.checked_sub(self.base)
            .and_then(|i| self.out.get(i as usize))
            .is_some_and(|m| !m.acked)
    }

    /// The next datagram to send, if any. Data borrows its queued payload.
    pub fn poll_transmit(&mut self) -> Option<Message<'_>> {
        loop {
            let t = self.transmits.pop_front()?;
            return Some(match t {
                Transmit::Connect => Message::connect(self.isn),
                Transmit::Ack(sn) => Message::ack(self.conn_id, sn),
                Transmit::CAck(sn) => Message::cack(self.conn_id, sn),
                Transmit::Data(sn) => {
                    // Acknowledged since it was queued: nothing to send.
                    // The index is below `sent`, a usize, when it is found.
                    let Some(m) = sn
                        .checked_sub(self.base)
                        .and_then(|i| self.out.get(i as usize))
                    else {
                        continue;
                    };
                    if m.acked {
                        continue;
                    }
                    Message::data(self.conn_id, sn, &m.payload)
                }
            });
        }
    }

    /// Whether [`poll_delivered`](Conn::poll_delivered) has a payload.
    pub fn has_delivered(&self) -> bool {
        !self.delivered.is_empty()
    }

    /// The next payload to hand to the application, in order.
    pub fn poll_delivered(&mut self) -> Option<Vec<u8>> {
        self.delivered.pop_front()
    }

    /// The next sequence number acknowledged on its first transmission
    /// (drivers use these for round-trip time samples).
    pub fn poll_first_acked(&mut self) -> Option<u64> {
        self.first_acked.pop_front()
    }

    /// Sequence number the next newly sent message will carry.
    pub fn next_unsent(&self) -> u64 {
        self.base.saturating_add(self.sent as u64)
    }

    /// Messages that were never acknowledged when the connection was lost,
    /// in write order (a reconnecting client sends them again). Empties the list.
    pub fn take_orphans(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.orphans)
    }

    /// How many messages were discarded when the connection was lost.
    pub fn orphans(&self) -> usize {
        self.orphans.len()
    }

    /// Gives up at once (a close whose deadline passed): discards everything
    /// unsent or unacknowledged and returns how many messages that was. The
    /// connection ends `Drained` without an event.
    pub fn abort(&mut self) -> usize {
        let discarded = self.out.iter().filter(|m| !m.acked).count();
        self.out.clear();
        self.out_bytes = 0;
        self.sent = 0;
        self.unacked = 0;
        self.clear_received();
        self.transmits.clear();
        self.first_acked.clear();
        self.acks_pending = 0;
        self.phase = Phase::Drained;
        discarded
    }

    /// The next state change.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ----- internals -----

    /// Sends queued messages while `seq <= base + window - 1` and fewer than
    /// `max_unacked` are in flight (updateOutbox).
    fn fill_window(&mut self) {
        if !self.is_live() {
            return;
        }
        let window = self.params.window_size as usize;
        let max_unacked = self.params.max_unacked_messages as usize;
        while self.sent < self.out.len() && self.sent < window && self.unacked < max_unacked {
            let m = &mut self.out[self.sent];
            m.backoff = 0;
            m.since_sent = 0;
            self.counters.data_sent += 1;
            self.counters.bytes_sent += m.payload.len() as u64;
            self.transmits.push_back(Transmit::Data(self.next_unsent()));
            self.sent += 1;
            self.unacked += 1;
            self.data_sent_this_epoch = true;
        }
    }

    /// Acknowledges received Data `sn`. `cumulative` says whether every
    /// sequence number up to `sn` has been received, so a CAck may cover it.
    fn ack_received(&mut self, sn: u64, cumulative: bool) {
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

    /// Takes new in-window Data `sn`: acknowledges it, then delivers it
    /// (and what it unblocks) or buffers it out of order.
    fn take(&mut self, sn: u64, payload: Vec<u8>) {
        if self.phase == Phase::Open {
            self.room.take(payload.len());
        }
        self.ack_received(sn, sn == self.expected);
        if sn != self.expected {
            self.window_bytes += payload.len();
            self.window.insert(sn, payload);
            return;
        }
        self.deliver_next(payload);
        while let Some(payload) = self.window.remove(&self.expected) {
            self.window_bytes -= payload.len();
            self.deliver_next(payload);
        }
    }

    /// Forgets everything received and not delivered.
    fn clear_received(&mut self) {
        self.window.clear();
        self.window_bytes = 0;
        self.held.clear();
        self.held_bytes = 0;
    }

    /// Takes the message numbered `expected`.
    fn deliver_next(&mut self, payload: Vec<u8>) {
        // Closing: acknowledged and consumed, but no longer delivered.
        if self.phase == Phase::Open {
            self.counters.data_received += 1;
            self.counters.bytes_received += payload.len() as u64;
            self.delivered.push_back(payload);
        }
        self.expected = self.expected.saturating_add(1);
    }

    fn ack_one(&mut self, index: usize) {
        let m = &mut self.out[index];
        if !m.acked {
            self.epochs_stalled = 0;
            m.acked = true;
            self.out_bytes -= m.payload.len();
            m.payload = Vec::new();
            self.unacked -= 1;
            if !m.retransmitted {
                self.first_acked
                    .push_back(self.base.saturating_add(index as u64));
            }
        }
    }

    fn after_acks(&mut self) {
        while self.out.front().is_some_and(|m| m.acked) {
            self.out.pop_front();
            self.base = self.base.saturating_add(1);
            self.sent -= 1;
        }
        self.fill_window();
        self.check_drained();
    }

    fn check_drained(&mut self) {
        if self.phase == Phase::Closing && self.out.is_empty() {
            self.phase = Phase::Drained;
            self.clear_received();
            self.events.push_back(Event::Drained);
        }
    }

    fn lose(&mut self) {
        self.phase = Phase::Lost;
        self.acks_pending = 0;
        self.first_acked.clear();
        self.orphans = self
            .out
            .drain(..)
            .filter(|m| !m.acked)
            .map(|m| m.payload)
            .collect();
        self.out_bytes = 0;
        self.sent = 0;
        self.unacked = 0;
        self.clear_received();
        self.transmits.clear();
        self.events.push_back(Event::Lost);
    }
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Rejected::Corrupt => "corrupt data",
            Rejected::OutsideWindow => "data outside the receive window",
            Rejected::Paused => "data while receiving is paused",
            Rejected::UnsentAck => "ack for a message never sent",
            Rejected::Unexpected => "unexpected message",
        })
    }
}

impl std::error::Error for Rejected {}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(conn: &mut Conn) -> Vec<Message<'static>> {
        std::iter::from_fn(|| conn.poll_transmit().map(Message::into_owned)).collect()
    }

    /// A Connect alone (perhaps spoofed) earns its Ack and a bounded number
    /// of repeats: no heartbeats follow until the peer speaks again, and the
    /// connection is reaped on schedule.
    #[test]
    fn server_is_silent_until_the_peer_speaks_beyond_connect() {
        let params = Params {
            epoch_limit: CONNECT_REACKS + 2,
            ..Params::default()
        };
        let mut conn = Conn::server(params, 1, 50);
        assert_eq!(drain(&mut conn), [Message::ack(1, 50)]);
        for _ in 0..CONNECT_REACKS {
            conn.on_epoch();
            assert_eq!(drain(&mut conn), [Message::ack(1, 50)]);
        }
        conn.on_epoch();
        assert_eq!(drain(&mut conn), []);
        conn.on_epoch();
        assert_eq!(conn.poll_event(), Some(Event::Lost));

        // Its first heartbeat is answered at once, then heartbeats flow.
        let mut conn = Conn::server(params, 1, 50);
        drain(&mut conn);
        conn.handle(Message::ack(1, 0)).unwrap();
        assert_eq!(drain(&mut conn), [Message::ack(1, 0)]);
        conn.on_epoch();
        assert_eq!(drain(&mut conn), [Message::ack(1, 0)]);
    }

    fn connected_client(params: Params) -> Conn {
        let mut conn = Conn::client(params, 100);
        drain(&mut conn);
        conn.handle(Message::ack(3, 100)).unwrap();
        assert_eq!(conn.poll_event(), Some(Event::Connected));
        conn
    }

    /// A burst of in-order Data owes one CAck, sent at `flush_acks`;
    /// out-of-order Data is acknowledged at once, individually.
    #[test]
    fn coalesced_acks() {
        let params = Params {
            window_size: 8,
            max_unacked_messages: 8,
            ..Params::default()
        };
        let mut conn = connected_client(params);
        conn.set_coalesce_acks(true);
        for sn in 101..=104 {
            conn.handle(Message::data(3, sn, b"x")).unwrap();
        }
        conn.handle(Message::data(3, 107, b"later")).unwrap();
        assert_eq!(drain(&mut conn), [Message::ack(3, 107)]);
        conn.flush_acks();
        assert_eq!(drain(&mut conn), [Message::cack(3, 104)]);
        conn.flush_acks();
        assert_eq!(drain(&mut conn), []);
        // A single message owes a plain Ack, as from a Go peer: here a
        // duplicate below the window.
        conn.handle(Message::data(3, 102, b"x")).unwrap();
        conn.flush_acks();
        assert_eq!(drain(&mut conn), [Message::ack(3, 102)]);
        // Two owe a CAck.
        conn.handle(Message::data(3, 105, b"x")).unwrap();
        conn.handle(Message::data(3, 106, b"x")).unwrap();
        conn.flush_acks();
        assert_eq!(drain(&mut conn), [Message::cack(3, 107)]);
        assert_eq!(std::iter::from_fn(|| conn.poll_delivered()).count(), 7);
    }

    /// An acknowledgement still owed when the connection closes goes out
    /// before it drains.
    #[test]
    fn close_flushes_a_pending_ack() {
        let mut conn = connected_client(Params::default());
        conn.set_coalesce_acks(true);
        conn.handle(Message::data(3, 101, b"x")).unwrap();
        conn.close();
        assert_eq!(drain(&mut conn), [Message::ack(3, 101)]);
        assert_eq!(conn.poll_event(), Some(Event::Drained));
    }

    /// Found by fuzzing: closing a client that is still connecting leaves no
    /// state behind; what it had queued is set aside, unsent.
    #[test]
    fn close_while_connecting_keeps_nothing() {
        let mut conn = Conn::client(Params::default(), 9);
        conn.write(b"queued".to_vec());
        conn.close();
        assert_eq!(conn.poll_event(), Some(Event::Drained));
        assert!(conn.is_idle());
        assert_eq!(conn.take_orphans(), [b"queued".to_vec()]);
        assert_eq!(drain(&mut conn), []);
    }
}
