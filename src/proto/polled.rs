//! [`PolledServer`]: a [`ServerCore`] driven from one thread, with its
//! datagrams and outputs kept to be polled.

use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::time::Instant;

use super::server::{OwedAcks, ServerConfig, ServerCore, ServerOutput};
use super::sink::Collect;
use super::{ConnId, Message};
use super::{CoreError as Error, ServerEvent};

/// A [`ServerCore`] for one thread: every input's datagrams and outputs
/// wait in it until polled, and datagrams handled one by one form one batch
/// until [`end_batch`](Self::end_batch). It is the core the threaded
/// server runs, called the same way; the simulator and the deterministic
/// tests drive it. Getters are the core's (through `Deref`).
///
/// # Examples
///
/// ```
/// use std::time::Instant;
/// use liveseq::proto::{Message, PolledServer, ServerConfig, ServerOutput};
/// use liveseq::{ConnState, Params, ServerEvent};
///
/// let now = Instant::now();
/// let client: std::net::SocketAddr = "127.0.0.1:4000".parse().unwrap();
/// let mut server = PolledServer::new(ServerConfig::new(Params::default()));
/// server.handle_message(now, client, Message::connect(7));
/// let (to, ack) = server.poll_transmit().unwrap();
/// // The id is random: the Ack carries it, and the Connect's ISN.
/// let id = ack.conn_id;
/// assert_eq!((to, ack), (client, Message::ack(id, 7)));
/// assert!(matches!(server.poll_output(), Some(ServerOutput::State { state: ConnState::Connected, .. })));
/// assert!(matches!(server.poll_output(), Some(ServerOutput::App(ServerEvent::Connected { .. }))));
/// assert_eq!(server.connections().len(), 1);
/// ```
#[derive(Debug)]
pub struct PolledServer {
    core: ServerCore,
    owed: OwedAcks,
    out: Collect<ServerOutput>,
}

impl Deref for PolledServer {
    type Target = ServerCore;
    fn deref(&self) -> &ServerCore {
        &self.core
    }
}

impl PolledServer {
    /// An empty server.
    pub fn new(config: ServerConfig) -> PolledServer {
        PolledServer {
            core: ServerCore::new(config),
            owed: OwedAcks::default(),
            out: Collect::default(),
        }
    }

    /// The core itself.
    pub fn core(&self) -> &ServerCore {
        &self.core
    }

    /// See [`ServerCore::handle`].
    pub fn handle(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.core
            .handle(now, from, datagram, &mut self.owed, &mut self.out);
    }

    /// See [`ServerCore::handle_to`]: what the connection this datagram
    /// opens sends leaves from `local` ([`poll_transmit_from`](Self::poll_transmit_from)).
    pub fn handle_to(
        &mut self,
        now: Instant,
        from: SocketAddr,
        local: Option<IpAddr>,
        datagram: &[u8],
    ) {
        self.core
            .handle_to(now, from, local, datagram, &mut self.owed, &mut self.out);
    }

    /// See [`ServerCore::handle_message`].
    pub fn handle_message(&mut self, now: Instant, from: SocketAddr, msg: Message<'_>) {
        self.core
            .handle_message(now, from, msg, &mut self.owed, &mut self.out);
    }

    /// See [`ServerCore::end_batch`].
    pub fn end_batch(&mut self, now: Instant) {
        self.core.end_batch(now, &mut self.owed, &mut self.out);
    }

    /// See [`ServerCore::handle_epoch`].
    pub fn handle_epoch(&mut self, now: Instant) {
        self.core.handle_epoch(now, &mut self.out);
    }

    /// See [`ServerCore::write`].
    pub fn write(&mut self, now: Instant, id: ConnId, payload: &[u8]) -> Result<(), Error> {
        self.core.write(now, id, payload, &mut self.out)
    }

    /// See [`ServerCore::try_write`].
    pub fn try_write(&mut self, now: Instant, id: ConnId, payload: &[u8]) -> Result<(), Error> {
        self.core.try_write(now, id, payload, &mut self.out)
    }

    /// See [`ServerCore::read_done`].
    pub fn read_done(&mut self, now: Instant, id: ConnId, messages: usize, bytes: usize) {
        self.core.read_done(now, id, messages, bytes, &mut self.out);
    }

    /// See [`ServerCore::close_conn`]. Messages of `id` not yet polled are
    /// dropped too, as a driver drops those it holds on
    /// [`ServerOutput::Discard`].
    pub fn close_conn(&mut self, now: Instant, id: ConnId) -> Result<(), Error> {
        let result = self.core.close_conn(now, id, &mut self.out);
        if result.is_ok() {
            let (mut messages, mut bytes) = (0, 0);
            self.out.retain_outputs(|output| match output {
                ServerOutput::App(ServerEvent::Message { id: of, payload }) if *of == id => {
                    messages += 1;
                    bytes += payload.len();
                    false
                }
                _ => true,
            });
            if messages > 0 {
                self.core.read_done(now, id, messages, bytes, &mut self.out);
            }
        }
        result
    }

    /// See [`ServerCore::close`].
    pub fn close(&mut self, now: Instant) {
        self.core.close(now, &mut self.out);
    }

    /// See [`ServerCore::abort`].
    pub fn abort(&mut self, now: Instant) -> usize {
        self.core.abort(now, &mut self.out)
    }

    /// The next datagram to send and where.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Message<'static>)> {
        self.out.poll_transmit()
    }

    /// The next datagram, where it goes and the address it is to leave
    /// from (`None`: the socket's own; see [`Sink::transmit_from`](super::Sink::transmit_from)).
    pub fn poll_transmit_from(&mut self) -> Option<(Option<IpAddr>, SocketAddr, Message<'static>)> {
        self.out.poll_transmit_from()
    }

    /// The next output for the application side.
    pub fn poll_output(&mut self) -> Option<ServerOutput> {
        self.out.poll_output()
    }
}
