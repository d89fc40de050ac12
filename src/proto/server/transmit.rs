//! The send path: a connection's datagrams go to its address, except while
//! it is challenged, and to an unvalidated address only up to the
//! amplification limit.

use std::sync::atomic::Ordering::Relaxed;

use super::config::AMPLIFICATION_FACTOR;
use super::output::ServerOutput;
use super::slot::Slot;
use super::ServerCore;
use crate::proto::sink::Sink;

impl ServerCore {
    /// Hands connection `slot`'s datagrams to `out`, but none while it is
    /// challenged, and to an unvalidated address only up to the 3x limit.
    pub(super) fn transmit(&self, slot: &mut Slot, out: &mut impl Sink<ServerOutput>) {
        if !slot.conn.has_transmit() {
            return;
        }
        if slot.challenge.is_some() {
            // Challenged: nothing for this connection goes to its
            // address, which may now belong to a restarted client.
            while slot.conn.poll_transmit().is_some() {}
            slot.unsent = true;
            return;
        }
        let to = slot.addr;
        if slot.validated {
            while let Some(msg) = slot.conn.poll_transmit() {
                out.transmit_from(slot.local, to, &msg);
            }
            return;
        }
        let budget = slot.bytes_in.saturating_mul(AMPLIFICATION_FACTOR);
        while let Some(msg) = slot.conn.poll_transmit() {
            let len = msg.encoded_len() as u64;
            if slot.bytes_out.saturating_add(len) <= budget {
                out.transmit_from(slot.local, to, &msg);
                slot.bytes_out += len;
            } else {
                // The protocol sends it again; by then the peer may have
                // proven its address, or sent more.
                self.totals.amplification_held_bytes.fetch_add(len, Relaxed);
                slot.unsent = true;
            }
        }
    }
}
