//! [`ServerBuilder`]: a server's settings, checked when it binds.

use std::net::ToSocketAddrs;

use super::Server;
use crate::driver::endpoint::{self, Endpoint};
#[cfg(feature = "test-hooks")]
use crate::driver::faults::Faults;
use crate::driver::io;
use crate::driver::roles::ServerRole;
use crate::listener::{Listener, Router};
use crate::options::Options;
use crate::proto::{Limit, ServerConfig, ServerCore, DEFAULT_BUDGET};
#[cfg(doc)]
use crate::{ConnState, ServerStats};
use crate::{Error, Params};

/// Configures a [`Server`] before binding.
///
/// # Examples
///
/// ```
/// use liveseq::{Params, Server};
///
/// # fn main() -> Result<(), liveseq::Error> {
/// let server = Server::builder()
///     .params(Params { epoch_millis: 50, ..Params::default() })
///     .max_datagram_size(9000)
///     .bind("127.0.0.1:0")?;
/// assert_eq!(server.max_payload(), liveseq::proto::max_payload(9000));
/// server.close()?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ServerBuilder {
    /// What a client is configured with too.
    options: Options,
    max_connections: Option<usize>,
    memory_budget: Option<usize>,
    receive_threads: Option<usize>,
}

impl ServerBuilder {
    /// The most connections the server keeps at once (default: unlimited).
    /// At the limit, Connects from new addresses are ignored (the client's
    /// connect times out) and a [`ConnState::Refused`] event is emitted, once
    /// per address per epoch. Connections already admitted, and their repeated
    /// Connects, are unaffected; a closing connection counts until it is gone.
    /// The check and the insertion happen under the table's lock, so the
    /// limit is never overshot, even with several receive threads, and a
    /// refused Connect allocates no connection state.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Params, Server};
    ///
    /// let server = Server::builder().max_connections(50).bind("127.0.0.1:0").unwrap();
    /// assert_eq!(server.totals().refused, 0);
    /// ```
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = Some(n);
        self
    }

    /// Protocol parameters (default: [`Params::default`]).
    pub fn params(mut self, params: Params) -> Self {
        self.options.params = params;
        self
    }

    /// Faults to inject into this server's traffic (default: none). A test
    /// hook (the `test-hooks` feature), hidden from the documentation.
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn faults(mut self, faults: Faults) -> Self {
        self.options.faults = faults;
        self
    }

    /// Largest datagram this server sends, 368 to 65507 bytes (default 1472).
    pub fn max_datagram_size(mut self, size: usize) -> Self {
        self.options.max_datagram_size = Some(size);
        self
    }

    /// Whether a burst of in-order Data is acknowledged with one CAck rather
    /// than one Ack per message (default: on). Out-of-order Data is always
    /// acknowledged individually. Go LSP peers accept CAck; turn this off for
    /// a peer that does not.
    pub fn ack_coalescing(mut self, on: bool) -> Self {
        self.options.ack_coalescing = Some(on);
        self
    }

    /// The most each connection may hold written and not yet acknowledged
    /// before it stops being writable (default: 1,024 messages or 1 MiB).
    /// [`Server::write`] never waits: past the limit it still queues, the
    /// connection's incoming messages wait in its inbox until it drains to
    /// half the limit (so the peer that causes the backlog is the one
    /// slowed down), and a peer that acknowledges nothing meanwhile for
    /// `epoch_limit` epochs (plus the back-off cap) is ended as a slow
    /// consumer. [`Server::try_write`] fails with [`Error::BufferFull`] past
    /// the limit instead, and [`Server::write_timeout`] waits for room.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::Server;
    ///
    /// let server = Server::builder().send_buffer(64, 64 * 1024).bind("127.0.0.1:0").unwrap();
    /// server.close().unwrap();
    /// ```
    pub fn send_buffer(mut self, messages: usize, bytes: usize) -> Self {
        self.options.send_buffer = Some(Limit { messages, bytes });
        self
    }

    /// The most each connection may hold delivered and not yet read
    /// (default: 4,096 messages or 4 MiB). Past it, new Data from that
    /// client is left unacknowledged, as if lost, until the application
    /// reads: the client's own window and back-off slow it down, with no
    /// message on the wire that a Go peer would not understand.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::Server;
    ///
    /// let server = Server::builder().inbox(100, 1 << 20).bind("127.0.0.1:0").unwrap();
    /// server.close().unwrap();
    /// ```
    pub fn inbox(mut self, messages: usize, bytes: usize) -> Self {
        self.options.inbox = Some(Limit { messages, bytes });
        self
    }

    /// The server-wide memory budget in bytes (default
    /// [`DEFAULT_BUDGET`](crate::proto::DEFAULT_BUDGET), 128 MiB).
    ///
    /// Everything the server holds for its connections is charged by what
    /// it really holds (payload plus a fixed overhead per message): send
    /// buffers, inboxes, out-of-order and held Data, and queued events.
    /// Each connection has a small floor of its own (a window's worth of
    /// the largest messages each way) and draws the rest from this budget,
    /// less a sixteenth kept for admitting new connections. Once
    /// connections contend for it, each may hold at most its fair share
    /// (max-min: those using less than an even split keep theirs, the rest
    /// is split evenly among the others; see
    /// [`ServerCore`](crate::proto::ServerCore)'s notes). When its share or
    /// the budget is spent the server stops taking more: Data goes unacknowledged
    /// (the peers back off), [`Server::write`] fails with
    /// [`Error::BudgetExhausted`], and Connects from new addresses are
    /// refused. [`ServerStats::budget_in_use`] shows where it stands.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::Server;
    ///
    /// let server = Server::builder().memory_budget(16 << 20).bind("127.0.0.1:0").unwrap();
    /// assert_eq!(server.totals().budget, 16 << 20);
    /// server.close().unwrap();
    /// ```
    pub fn memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = Some(bytes);
        self
    }

    /// How many threads receive on the server's socket (default: half the
    /// cores the process may use, at least one and at most
    /// [`MAX_DEFAULT_RECEIVE_THREADS`]; the other half is left to the
    /// threads that read and write, since every message crosses both).
    /// They share the one socket; each datagram is handled under its own
    /// connection's lock, so threads serving different clients never wait
    /// for each other, and each connection's messages and events still
    /// reach the application in order. More threads than cores only adds
    /// switching; one is the least (zero means one).
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::Server;
    ///
    /// let server = Server::builder().receive_threads(2).bind("127.0.0.1:0").unwrap();
    /// server.close().unwrap();
    /// ```
    pub fn receive_threads(mut self, n: usize) -> Self {
        self.receive_threads = Some(n.max(1));
        self
    }

    /// Binds the server's socket to `addr` and starts serving. Does not block.
    pub fn bind(self, addr: impl ToSocketAddrs) -> Result<Server, Error> {
        self.start(addr, None)
    }

    /// Binds like [`bind`](ServerBuilder::bind), but hands out each
    /// connection as its own handle, as `TcpListener` does: see [`Listener`].
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Params, Server};
    ///
    /// let params = Params { epoch_millis: 50, ..Params::default() };
    /// let listener = Server::builder().params(params).max_connections(100).listen("127.0.0.1:0").unwrap();
    /// assert_ne!(listener.local_addr().unwrap().port(), 0);
    /// listener.close().unwrap();
    /// ```
    pub fn listen(self, addr: impl ToSocketAddrs) -> Result<Listener, Error> {
        Ok(Listener::new(self.start(addr, Some(Router::new()))?))
    }

    fn start(self, addr: impl ToSocketAddrs, router: Option<Router>) -> Result<Server, Error> {
        let options = self.options.check()?;
        let mut last_err = None;
        for addr in addr.to_socket_addrs()? {
            match io::bind_server_socket(addr) {
                Ok(socket) => {
                    let mut config = ServerConfig::new(options.params);
                    config.max_connections = self.max_connections.unwrap_or(usize::MAX);
                    config.coalesce_acks = options.coalesce_acks;
                    config.send_buffer_limit = options.send_buffer;
                    config.inbox_limit = options.inbox;
                    config.budget = self.memory_budget.unwrap_or(DEFAULT_BUDGET);
                    config.floor = ServerConfig::floor_for(options.params, options.max_payload);
                    // Each handle's events wait in its own queue: at most two.
                    config.charge_events = router.is_none();
                    let core = ServerCore::new(config);
                    let role = ServerRole::new(router);
                    let config = endpoint::Config {
                        params: options.params,
                        faults: options.faults,
                        batch: 32,
                        receive_threads: self
                            .receive_threads
                            .unwrap_or_else(default_receive_threads),
                    };
                    let endpoint = Endpoint::start(socket, config, core, role)?;
                    log::debug!("server listening on {}", endpoint.shared.io.local_addr());
                    return Ok(Server {
                        endpoint,
                        max_payload: options.max_payload,
                    });
                }
                Err(err) => last_err = Some(err),
            }
        }
        Err(Error::Io(last_err.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to bind to")
        })))
    }
}

/// The most receive threads a server starts by default, however many cores
/// it has: on one socket, more stopped helping in our measurements (raw
/// UDP echo on one socket peaked at 8 threads on a 16-core machine).
pub const MAX_DEFAULT_RECEIVE_THREADS: usize = 8;

/// Half the cores the process may use, from 1 to
/// [`MAX_DEFAULT_RECEIVE_THREADS`] (see [`ServerBuilder::receive_threads`]).
pub(crate) fn default_receive_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / 2).clamp(1, MAX_DEFAULT_RECEIVE_THREADS)
}
