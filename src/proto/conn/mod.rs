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
//!
//! The code is split by what each part keeps, so that the path of a write
//! to the wire and of a datagram to the reader can be followed by file:
//!
//! * [`send`]: the send queue, from `write` to the acknowledgement, the
//!   window and the back-off;
//! * [`transmit`]: the datagrams waiting to go out;
//! * [`recv`]: the reorder window, held Data and what waits to be read;
//! * [`acks`]: acknowledging received Data, at once or coalesced;
//! * [`Room`] and [`Counters`]: flow-control limits and statistics.
//!
//! This file holds the connection's life: its construction, `handle`,
//! `on_epoch`, `close` and loss.

mod acks;
mod counters;
mod recv;
mod room;
mod send;
#[cfg(test)]
mod tests;
mod transmit;

use std::collections::VecDeque;

use super::message::{Message, MsgType};
use crate::Params;
use acks::PendingAcks;
use recv::RecvBuffer;
use send::SendQueue;
use transmit::Transmit;

pub use counters::Counters;
pub use room::Room;

/// The largest sequence number on the wire: the Go peers decode `SeqNum`
/// into a Go `int`, so anything above `i64::MAX` is malformed to them, and
/// the decoder rejects it too.
pub const MAX_SEQ_NUM: u64 = i64::MAX as u64;

/// The largest initial sequence number a server accepts in a Connect. It
/// leaves 2^62 sequence numbers for each side, more than any connection
/// can use, so no sequence arithmetic can reach [`MAX_SEQ_NUM`]. A Connect
/// with a larger one is refused (ignored and counted).
pub const MAX_ISN: u64 = (1 << 62) - 1;

/// Transmissions of one message on the epoch schedule (its first and its
/// back-off retransmissions), all unanswered, after which a draining
/// connection gives up on its peer and a server ends a slow consumer (each
/// try given its whole back-off interval). Evidence, not time: at 36% loss
/// each way a try goes unanswered with probability 0.59, and 30 in a row
/// with 0.59^30, about 1.4e-7, so an honest peer on a bad link is
/// essentially never given up (Linux's `tcp_retries2` of 15 would fail a
/// 100-message close at that loss 3.6% of the time). A peer that leaves Data
/// unacknowledged on purpose, its inbox full, is given up the same way: a
/// close then ends within [`Conn::stall_limit`] epochs of the last progress
/// (60 s at the defaults); a close deadline (`close_timeout`) bounds it
/// sooner.
pub const MAX_UNANSWERED: u32 = 30;

/// How many times a server connection re-sends the Ack of its Connect, one
/// per epoch, while its client has said nothing since. A client whose
/// repeated Connects are all lost still hears it; a spoofed Connect earns
/// its claimed source at most `1 + CONNECT_REACKS` small datagrams.
pub const CONNECT_REACKS: u32 = 3;

/// What the receive and send buffers charge for each message beyond its
/// payload: the `Vec`, its place in a queue or map, and allocator rounding.
/// A 1-byte message is not free, so a flood of tiny ones is bounded too.
pub const MESSAGE_OVERHEAD: usize = 64;

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
    /// still connecting: the connect failed), or a draining connection gave
    /// up on a peer that left its oldest message unanswered (see
    /// [`Conn::is_stalled`]). Unsent and unacknowledged
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
    /// Lost: to the epoch limit, or given up while draining.
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
    /// The application closed the connection (it reads nothing more).
    closed_by_app: bool,

    // Each with its invariants written beside its type.
    send: SendQueue,
    recv: RecvBuffer,
    acks: PendingAcks,

    // Liveness: what `on_epoch` judges the peer by.
    epochs_silent: u32,
    /// Epochs in a row with messages in flight and none newly acknowledged.
    epochs_stalled: u32,
    /// The give-up rule's verdict at the last epoch (see `is_stalled`).
    stalled: bool,
    /// Whether any Data went out since the last epoch (no heartbeat needed then).
    data_sent_this_epoch: bool,

    // The handshake.
    /// Epochs since a client started connecting (paces its Connects).
    epochs_connecting: u32,
    /// A connection id a connecting client must not adopt: its previous
    /// connection's, whose heartbeats may still arrive on the same socket.
    stale_conn_id: Option<u32>,
    /// Re-sends of the Connect's Ack left (server; see [`CONNECT_REACKS`]).
    reacks_left: u32,
    /// Whether the peer has sent anything but a Connect. A server sends no
    /// heartbeats before that, only the Connect's Ack and at most
    /// [`CONNECT_REACKS`] re-sends of it, which the server's 3x limit then
    /// caps (one Ack for a bare 32-byte Connect).
    heard: bool,

    // Outputs, until the driver polls them.
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
            closed_by_app: false,
            // Saturating: see `server` for why an isn this large is harmless.
            send: SendQueue::new(isn.saturating_add(1)),
            recv: RecvBuffer::new(isn.saturating_add(1)),
            acks: PendingAcks::default(),
            epochs_silent: 0,
            epochs_stalled: 0,
            stalled: false,
            data_sent_this_epoch: false,
            epochs_connecting: 0,
            stale_conn_id: None,
            reacks_left: 0,
            heard: false,
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

    /// Whether the connection was closed by its application (see
    /// [`close`](Conn::close)) before it ended; a loss is then no news to it.
    pub fn closed_by_app(&self) -> bool {
        self.closed_by_app
    }

    /// Epochs in a row in which messages were in flight and none was newly
    /// acknowledged.
    pub fn epochs_stalled(&self) -> u32 {
        self.epochs_stalled
    }

    /// The most epochs without acknowledgement progress before a draining
    /// connection is given up as lost, or a server's slow consumer ended:
    /// [`MAX_UNANSWERED`] x (`max_backoff_interval` + 1), the time the
    /// oldest message's 30 tries take at the back-off cap. The rule itself
    /// counts evidence, not epochs ([`is_stalled`](Conn::is_stalled)); this
    /// bound holds even for tries that were excused because they never left
    /// ([`excuse_stall`](Conn::excuse_stall)). A peer that keeps
    /// heartbeating but never acknowledges cannot make a close hang.
    pub fn stall_limit(&self) -> u32 {
        MAX_UNANSWERED.saturating_mul(self.params.max_backoff_interval.saturating_add(1))
    }

    /// Whether the peer has left the oldest message in flight unanswered
    /// for [`MAX_UNANSWERED`] transmissions on the epoch schedule (each
    /// given its whole back-off interval), or acknowledged nothing for
    /// [`stall_limit`](Conn::stall_limit) epochs: as of the last epoch.
    pub fn is_stalled(&self) -> bool {
        self.stalled
    }

    /// Epochs since anything was heard from the peer.
    pub fn epochs_silent(&self) -> u32 {
        self.epochs_silent
    }

    /// The state machine's counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    fn is_live(&self) -> bool {
        matches!(self.phase, Phase::Open | Phase::Closing)
    }

    // ----- inputs -----

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
                self.recv.delivered.clear();
                // Never acknowledged: the peer sends them again, and a
                // closing connection then consumes them.
                self.recv.withheld.clear();
                self.recv.withheld_bytes = 0;
                // The receive window stays: the peer may be closing too, and
                // only a window that keeps moving lets its last messages in.
                self.check_drained();
            }
            // A connect that never completed cannot drain: what was written
            // meanwhile is set aside, never sent (see `take_orphans`).
            Phase::Connecting => {
                self.phase = Phase::Drained;
                self.transmits.clear();
                self.orphans
                    .extend(self.send.out.drain(..).map(|m| m.payload));
                self.send.out_bytes = 0;
                self.events.push_back(Event::Drained);
            }
            Phase::Closing | Phase::Drained | Phase::Lost => {}
        }
    }

    /// Processes one message from the peer (the driver has already checked
    /// that it came from the peer's address).
    pub fn handle(&mut self, msg: Message<'_>) -> Result<(), Rejected> {
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
            MsgType::Data => self.on_data(msg),
            MsgType::Ack if msg.seq_num == 0 => {
                self.epochs_silent = 0;
                self.counters.heartbeats_received += 1;
                Ok(())
            }
            MsgType::Ack | MsgType::CAck => self.on_ack(msg),
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
        if self.send.unacked > 0 {
            self.epochs_stalled = self.epochs_stalled.saturating_add(1);
        } else {
            self.epochs_stalled = 0;
        }
        self.stalled = self.send.unacked > 0
            && (self.oldest_unanswered() || self.epochs_stalled >= self.stall_limit());
        if self.phase == Phase::Closing && self.stalled {
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
        self.retransmit();
        if !self.data_sent_this_epoch && self.heard {
            self.transmits.push_back(Transmit::Ack(0));
            self.counters.heartbeats_sent += 1;
        }
        self.data_sent_this_epoch = false;
    }

    /// Does not count the current epoch toward the stall limit: a driver
    /// that held back what this connection sent in it (a server limiting
    /// what goes to an address that has not proven it receives, or waiting
    /// for a challenge to be answered) calls it before the next
    /// [`on_epoch`](Conn::on_epoch), so that a peer is never judged on
    /// retransmissions it could not receive.
    pub fn excuse_stall(&mut self) {
        self.epochs_stalled = self.epochs_stalled.saturating_sub(1);
        self.excuse_oldest();
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

    // ----- outputs -----

    /// Gives up at once (a close whose deadline passed): discards everything
    /// unsent or unacknowledged and returns how many messages that was. The
    /// connection ends `Drained` without an event.
    pub fn abort(&mut self) -> usize {
        let discarded = self.send.out.iter().filter(|m| !m.acked).count();
        self.send.out.clear();
        self.send.out_bytes = 0;
        self.send.sent = 0;
        self.send.unacked = 0;
        self.clear_received();
        self.transmits.clear();
        self.first_acked.clear();
        self.acks.pending = 0;
        self.phase = Phase::Drained;
        discarded
    }

    /// The next state change.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ----- internals -----

    fn check_drained(&mut self) {
        if self.phase == Phase::Closing && self.send.out.is_empty() {
            self.phase = Phase::Drained;
            self.clear_received();
            self.events.push_back(Event::Drained);
        }
    }

    fn lose(&mut self) {
        self.phase = Phase::Lost;
        self.acks.pending = 0;
        self.first_acked.clear();
        self.orphans = self
            .send
            .out
            .drain(..)
            .filter(|m| !m.acked)
            .map(|m| m.payload)
            .collect();
        self.send.out_bytes = 0;
        self.send.sent = 0;
        self.send.unacked = 0;
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
