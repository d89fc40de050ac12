//! The datagrams waiting to go out, in the order they were decided.

use super::{Conn, Message};

/// A datagram waiting in [`Conn::poll_transmit`]. Data refers to the queued
/// payload by sequence number, so nothing is copied until it is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Transmit {
    Connect,
    Ack(u64),
    CAck(u64),
    Data(u64),
}

impl Conn {
    /// Whether [`poll_transmit`](Conn::poll_transmit) has something to send
    /// (Data acknowledged since it was queued is not sent).
    pub fn has_transmit(&self) -> bool {
        self.transmits.iter().any(|&t| match t {
            Transmit::Data(sn) => self.is_unacked(sn),
            _ => true,
        })
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
                        .checked_sub(self.send.base)
                        .and_then(|i| self.send.out.get(i as usize))
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
}
