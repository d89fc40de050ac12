//! The protocol itself, without I/O: the wire format and the state machines.
//!
//! Nothing in this module opens a socket, reads a clock or starts a thread.
//! Inputs carry everything they need (a decoded message, an epoch tick, a
//! write); outputs are pulled with `poll_*` methods ([`Conn`],
//! [`ClientCore`], [`PolledServer`]) or handed to a [`Sink`]
//! ([`ServerCore`]). That is what lets the protocol be tested
//! deterministically on virtual time, and what the threaded
//! [`Client`](crate::Client) and [`Server`](crate::Server) drive.
//!
//! The one synchronisation is inside [`ServerCore`], so that several
//! threads can feed one server: its table and each of its connections sit
//! behind locks of their own, which a single caller (the simulator, the
//! tests, [`PolledServer`]) takes and releases in a fixed order, so it
//! behaves exactly as plain sequential code.
//!
//! # Driving a core
//!
//! Every input takes `now`, the time it happened. `now` must never go
//! backwards from one call to the next on the same core (a driver reads one
//! monotonic clock, [`Instant`](std::time::Instant); a test advances a
//! virtual one): round-trip samples, connect deadlines and redial times are
//! differences of these instants, and are only saturated, not corrected, if
//! it does. Epochs are not read from `now`: a core counts them only as the
//! driver calls `handle_epoch`, once per `epoch_millis`.
//!
//! A driver calls, for each core:
//!
//! * [`Conn`]: [`handle`](Conn::handle) for each message, or
//!   [`on_epoch`](Conn::on_epoch), [`write`](Conn::write) or
//!   [`close`](Conn::close); after each, drain
//!   [`poll_transmit`](Conn::poll_transmit),
//!   [`poll_delivered`](Conn::poll_delivered) and
//!   [`poll_event`](Conn::poll_event) until each returns `None`.
//! * [`ClientCore`]: [`handle`](ClientCore::handle) for each datagram of a
//!   batch, then [`end_batch`](ClientCore::end_batch);
//!   [`handle_epoch`](ClientCore::handle_epoch) every epoch;
//!   [`handle_timeout`](ClientCore::handle_timeout) at
//!   [`poll_timeout`](ClientCore::poll_timeout); the application's
//!   [`write`](ClientCore::write), [`read_done`](ClientCore::read_done) and
//!   [`close`](ClientCore::close). After each call, drain
//!   [`poll_transmit`](ClientCore::poll_transmit) and
//!   [`poll_output`](ClientCore::poll_output).
//! * [`ServerCore`]: [`handle`](ServerCore::handle) for each datagram of a
//!   batch, then [`end_batch`](ServerCore::end_batch) (or
//!   [`handle_batch`](ServerCore::handle_batch) for both);
//!   [`handle_epoch`](ServerCore::handle_epoch) every epoch; the
//!   application's [`write`](ServerCore::write),
//!   [`read_done`](ServerCore::read_done),
//!   [`close_conn`](ServerCore::close_conn) and
//!   [`close`](ServerCore::close). Outputs are not polled: each call hands
//!   them to the [`Sink`] it is given, as they happen.
//!   ([`PolledServer`] collects them for a driver that prefers to poll.)
//!
//! Why two output styles: [`Conn`] and [`ClientCore`] belong to one caller
//! at a time (the client's one lock), which may poll at leisure. A
//! [`ServerCore`] is fed by several threads at once, each connection under
//! its own lock, and one connection's outputs must leave in order: they are
//! handed out under that connection's lock, at the moment they happen,
//! which a queue polled later by another thread could not promise without
//! a lock of its own around every connection's queue.
//!
//! Most programs never need this module. It is for people who write their
//! own driver (a different socket layer, an event loop), tools that speak
//! LSP by hand, and tests.
//!
//! * [`Message`], [`MsgType`] and [`checksum`]: the wire format, byte for
//!   byte as the Go implementations write it.
//! * [`Conn`]: one connection's windows, acknowledgements, back-off,
//!   heartbeats, loss detection and reordering.
//! * [`ServerCore`]: the server's connection table and every connection's
//!   state, each under its own lock; [`PolledServer`] for one thread.
//! * [`ClientCore`]: a client's connect and reconnect schedule around its
//!   [`Conn`].
//!
//! # Examples
//!
//! ```
//! use liveseq::proto::{Message, MsgType};
//!
//! let msg = Message::decode(br#"{"Type":2,"ConnID":7,"SeqNum":0}"#).unwrap();
//! assert_eq!((msg.kind, msg.conn_id, msg.seq_num), (MsgType::Ack, 7, 0));
//! ```

mod checksum;
mod client;
mod conn;
mod error;
mod event;
mod id;
mod message;
mod polled;
mod server;
mod sink;
mod state;
pub(crate) mod stats;

pub use checksum::checksum;
pub use client::{ClientConfig, ClientCore, ClientOutput, ConnectFailure};
pub use conn::{
    Conn, Counters, Event, Phase, Rejected, Room, CONNECT_REACKS, MAX_ISN, MAX_SEQ_NUM,
    MAX_UNANSWERED, MESSAGE_OVERHEAD,
};
pub use error::CoreError;
pub use event::ServerEvent;
pub use id::ConnId;
pub use message::{max_payload, DecodeError, Message, MsgType, DEFAULT_MAX_DATAGRAM, MAX_DATAGRAM};
pub use polled::PolledServer;
pub use server::{
    ConnRef, Limit, OwedAcks, ServerConfig, ServerCore, ServerOutput, ADMISSION_DIVISOR,
    AMPLIFICATION_FACTOR, CHALLENGE_EPOCHS, DEFAULT_BUDGET, DEFAULT_INBOX, DEFAULT_MAX_UNVALIDATED,
    DEFAULT_SEND_BUFFER, EVENT_COST, MAX_CONN_ID, RESERVE_DIVISOR,
};
pub use sink::{Collect, Sink};
pub use state::ConnState;
pub use stats::{ConnStats, Rtt, ServerStats};

#[cfg(test)]
mod tests {
    use super::*;

    fn is_error<E: std::error::Error + Send + Sync + 'static>(e: E) -> String {
        e.to_string()
    }

    #[test]
    fn errors_have_short_lower_case_messages() {
        assert_eq!(is_error(DecodeError::Malformed), "malformed message");
        assert_eq!(is_error(DecodeError::UnknownType), "unknown message type");
        assert_eq!(
            is_error(DecodeError::BadBase64),
            "payload is not valid base64"
        );
        assert_eq!(is_error(Rejected::Corrupt), "corrupt data");
        assert_eq!(
            is_error(Rejected::OutsideWindow),
            "data outside the receive window"
        );
        assert_eq!(
            is_error(Rejected::UnsentAck),
            "ack for a message never sent"
        );
        assert_eq!(is_error(Rejected::Unexpected), "unexpected message");
    }
}
