//! The two cores of [`proto`](crate::proto) as the driver sees them: the
//! [`Core`] trait, implemented next to each other so the driver's view of
//! the protocol is in one place.
//!
//! A [`ServerCore`] is shared as it is: it locks each connection itself.
//! A [`ClientCore`] is one connection, so it sits behind one mutex
//! ([`ClientCell`]), and its polled outputs are handed to the sink before
//! that mutex is released.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use parking_lot::Mutex;

use super::endpoint::Core;
use crate::proto::{ClientCore, ClientOutput, OwedAcks, ServerCore, ServerOutput, Sink};
use crate::ConnId;

impl Core for ServerCore {
    type Output = ServerOutput;
    /// The connection a message was read from, or `None` for another event.
    type InboxKey = Option<ConnId>;
    type OwedAcks = OwedAcks;
    fn read_done(
        &self,
        now: Instant,
        id: Option<ConnId>,
        messages: usize,
        bytes: usize,
        out: &mut impl Sink<ServerOutput>,
    ) {
        match id {
            Some(id) => ServerCore::read_done(self, now, id, messages, bytes, out),
            None => (0..messages).for_each(|_| ServerCore::event_read(self)),
        }
    }
    fn handle_batch<'d>(
        &self,
        now: Instant,
        datagrams: impl Iterator<Item = (&'d [u8], SocketAddr, Option<IpAddr>)>,
        owed: &mut OwedAcks,
        out: &mut impl Sink<ServerOutput>,
    ) {
        ServerCore::handle_batch_to(self, now, datagrams, owed, out);
    }
    fn handle_epoch(&self, now: Instant, out: &mut impl Sink<ServerOutput>) {
        ServerCore::handle_epoch(self, now, out);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn handle_timeout(&self, _now: Instant, _out: &mut impl Sink<ServerOutput>) {}
    fn close(&self, now: Instant, out: &mut impl Sink<ServerOutput>) {
        ServerCore::close(self, now, out);
    }
    fn abort(&self, now: Instant, out: &mut impl Sink<ServerOutput>) -> usize {
        ServerCore::abort(self, now, out)
    }
}

/// Lock `client core`: the client's whole state machine, held for one
/// input.
///
/// A [`ClientCore`] behind its mutex.
pub(crate) struct ClientCell(Mutex<ClientCore>);

impl ClientCell {
    pub(crate) fn new(core: ClientCore) -> ClientCell {
        ClientCell(Mutex::new(core))
    }

    /// Runs `f` on the core, then hands what it produced to `out` while
    /// still holding the lock (which keeps outputs in order).
    pub(crate) fn with<T>(
        &self,
        out: &mut impl Sink<ClientOutput>,
        f: impl FnOnce(&mut ClientCore) -> T,
    ) -> T {
        let mut core = self.0.lock();
        let result = f(&mut core);
        while let Some((to, msg)) = core.poll_transmit() {
            out.transmit(to, &msg);
        }
        while let Some(output) = core.poll_output() {
            out.output(output);
        }
        out.release();
        result
    }

    /// Reads the core without feeding it.
    pub(crate) fn peek<T>(&self, f: impl FnOnce(&ClientCore) -> T) -> T {
        f(&self.0.lock())
    }
}

impl Core for ClientCell {
    type Output = ClientOutput;
    type InboxKey = ();
    type OwedAcks = ();
    fn read_done(
        &self,
        now: Instant,
        _: (),
        messages: usize,
        bytes: usize,
        out: &mut impl Sink<ClientOutput>,
    ) {
        self.with(out, |core| core.read_done(now, messages, bytes));
    }
    fn handle_batch<'d>(
        &self,
        now: Instant,
        datagrams: impl Iterator<Item = (&'d [u8], SocketAddr, Option<IpAddr>)>,
        _: &mut (),
        out: &mut impl Sink<ClientOutput>,
    ) {
        // One lock for the whole batch: a client is one connection.
        self.with(out, |core| {
            // A client's socket is connected: where a datagram was sent is
            // never in question (nor reported).
            for (datagram, from, _) in datagrams {
                // A dual-stack socket names IPv4 senders in their IPv4-mapped form.
                core.handle(now, canonical(from), datagram);
            }
            core.end_batch(now);
        });
    }
    fn handle_refused(&self, now: Instant, out: &mut impl Sink<ClientOutput>) {
        self.with(out, |core| core.handle_refused(now));
    }
    fn handle_epoch(&self, now: Instant, out: &mut impl Sink<ClientOutput>) {
        self.with(out, |core| core.handle_epoch(now));
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.peek(ClientCore::poll_timeout)
    }
    fn handle_timeout(&self, now: Instant, out: &mut impl Sink<ClientOutput>) {
        self.with(out, |core| core.handle_timeout(now));
    }
    fn close(&self, now: Instant, out: &mut impl Sink<ClientOutput>) {
        self.with(out, |core| core.close(now));
    }
    fn abort(&self, now: Instant, out: &mut impl Sink<ClientOutput>) -> usize {
        self.with(out, |core| core.abort(now))
    }
}

/// `addr` with an IPv4-mapped IPv6 address as the IPv4 address it stands
/// for, the form the core knows its server by.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
