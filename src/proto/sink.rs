//! Where a core's datagrams and outputs go: the [`Sink`] a caller passes
//! in, and [`Collect`], the sink that keeps them to be polled.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use super::message::Message;

/// Receives what a [`ServerCore`](super::ServerCore) produces while it
/// handles one input.
///
/// The core calls it under the lock of the connection the datagram or
/// output belongs to. That is what keeps each connection's outputs in the
/// order they happened however many threads feed the core, and why an
/// implementation must not block: send a datagram without waiting (the
/// driver sends it at once, under that lock, so that one connection's
/// datagrams leave in order; a full socket buffer drops it, as a network
/// would), and hand an output on through an unbounded queue.
pub trait Sink<O> {
    /// A datagram for `to`.
    fn transmit(&mut self, to: SocketAddr, msg: &Message<'_>);
    /// A datagram for `to`, to leave from the address `local` (the one the
    /// connection's Connect was sent to, see
    /// [`ServerCore::handle_batch_to`](super::ServerCore::handle_batch_to));
    /// `None`: from the socket's own address. A sink that cannot choose
    /// sends it as [`transmit`](Self::transmit) does.
    fn transmit_from(&mut self, local: Option<IpAddr>, to: SocketAddr, msg: &Message<'_>) {
        let _ = local;
        self.transmit(to, msg);
    }
    /// The next output, in order.
    fn output(&mut self, output: O);
    /// The core is about to release the lock under which it called this
    /// sink: a sink that holds outputs back (to hand them on as one burst)
    /// must hand them on now, while they are still sure to come before
    /// anything another thread produces for the same connection.
    fn release(&mut self) {}
}

/// A [`Sink`] that keeps everything, to be polled: for tests, tools and a
/// single-threaded driver.
///
/// # Examples
///
/// ```
/// use liveseq::proto::{Collect, Message, Sink};
///
/// let mut out: Collect<&str> = Collect::default();
/// let to = "127.0.0.1:9".parse().unwrap();
/// out.transmit(to, &Message::ack(1, 0));
/// out.output("connected");
/// assert_eq!(out.poll_transmit(), Some((to, Message::ack(1, 0))));
/// assert_eq!((out.poll_output(), out.poll_output()), (Some("connected"), None));
/// ```
#[derive(Debug)]
pub struct Collect<O> {
    transmits: VecDeque<(Option<IpAddr>, SocketAddr, Message<'static>)>,
    outputs: VecDeque<O>,
}

impl<O> Default for Collect<O> {
    fn default() -> Self {
        Collect {
            transmits: VecDeque::new(),
            outputs: VecDeque::new(),
        }
    }
}

impl<O> Collect<O> {
    /// The oldest datagram not yet polled, and where it goes.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Message<'static>)> {
        self.transmits.pop_front().map(|(_, to, msg)| (to, msg))
    }

    /// Like [`poll_transmit`](Self::poll_transmit), with the address the
    /// datagram is to leave from (see [`Sink::transmit_from`]).
    pub fn poll_transmit_from(&mut self) -> Option<(Option<IpAddr>, SocketAddr, Message<'static>)> {
        self.transmits.pop_front()
    }

    /// The oldest output not yet polled.
    pub fn poll_output(&mut self) -> Option<O> {
        self.outputs.pop_front()
    }

    /// Keeps only the outputs not yet polled for which `keep` is true.
    pub fn retain_outputs(&mut self, keep: impl FnMut(&O) -> bool) {
        self.outputs.retain(keep);
    }
}

impl<O> Sink<O> for Collect<O> {
    fn transmit(&mut self, to: SocketAddr, msg: &Message<'_>) {
        self.transmits
            .push_back((None, to, msg.clone().into_owned()));
    }

    fn transmit_from(&mut self, local: Option<IpAddr>, to: SocketAddr, msg: &Message<'_>) {
        self.transmits
            .push_back((local, to, msg.clone().into_owned()));
    }

    fn output(&mut self, output: O) {
        self.outputs.push_back(output);
    }
}
