//! The two cores of [`proto`](crate::proto) as the driver sees them: the
//! [`Core`] trait, implemented next to each other so the driver's view of
//! the protocol is in one place. Each method hands the input on to the
//! core's own method of the same name.

use std::net::SocketAddr;
use std::time::Instant;

use super::endpoint::Core;
use crate::proto::{ClientCore, ClientOutput, Message, ServerCore, ServerOutput};
use crate::ConnId;

impl Core for ServerCore {
    type Output = ServerOutput;
    /// The connection a message was read from, or `None` for another event.
    type Inbox = Option<ConnId>;
    fn read_done(&mut self, now: Instant, id: Option<ConnId>, messages: usize, bytes: usize) {
        match id {
            Some(id) => ServerCore::read_done(self, now, id, messages, bytes),
            None => ServerCore::event_read(self),
        }
    }
    fn handle(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        ServerCore::handle(self, now, from, datagram);
    }
    fn end_batch(&mut self, now: Instant) {
        ServerCore::end_batch(self, now);
    }
    fn handle_epoch(&mut self, now: Instant) {
        ServerCore::handle_epoch(self, now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn handle_timeout(&mut self, _now: Instant) {}
    fn close(&mut self, now: Instant) {
        ServerCore::close(self, now);
    }
    fn abort(&mut self, now: Instant) -> usize {
        ServerCore::abort(self, now)
    }
    fn poll_transmit(&mut self) -> Option<(SocketAddr, Message<'_>)> {
        ServerCore::poll_transmit(self)
    }
    fn poll_output(&mut self) -> Option<ServerOutput> {
        ServerCore::poll_output(self)
    }
}

impl Core for ClientCore {
    type Output = ClientOutput;
    type Inbox = ();
    fn read_done(&mut self, now: Instant, _: (), messages: usize, bytes: usize) {
        ClientCore::read_done(self, now, messages, bytes);
    }
    fn handle(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        // A dual-stack socket names IPv4 senders in their IPv4-mapped form.
        ClientCore::handle(self, now, canonical(from), datagram);
    }
    fn handle_refused(&mut self, now: Instant) {
        ClientCore::handle_refused(self, now);
    }
    fn end_batch(&mut self, now: Instant) {
        ClientCore::end_batch(self, now);
    }
    fn handle_epoch(&mut self, now: Instant) {
        ClientCore::handle_epoch(self, now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        ClientCore::poll_timeout(self)
    }
    fn handle_timeout(&mut self, now: Instant) {
        ClientCore::handle_timeout(self, now);
    }
    fn close(&mut self, now: Instant) {
        ClientCore::close(self, now);
    }
    fn abort(&mut self, now: Instant) -> usize {
        ClientCore::abort(self, now)
    }
    fn poll_transmit(&mut self) -> Option<(SocketAddr, Message<'_>)> {
        ClientCore::poll_transmit(self)
    }
    fn poll_output(&mut self) -> Option<ClientOutput> {
        ClientCore::poll_output(self)
    }
}

/// `addr` with an IPv4-mapped IPv6 address as the IPv4 address it stands
/// for, the form the core knows its server by.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
