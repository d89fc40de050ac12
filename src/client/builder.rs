//! [`ClientBuilder`]: a client's settings, checked when it connects.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Instant;

use crossbeam_channel::{bounded, Sender};
use parking_lot::Mutex;

use crate::driver::cores::{canonical, ClientCell};
use crate::driver::endpoint::Endpoint;
#[cfg(feature = "test-hooks")]
use crate::driver::faults::Faults;
use crate::driver::roles::ClientRole;
use crate::driver::{endpoint, io};
use crate::lifecycle::{ConnEvent, ReconnectPolicy, Subscribers};
use crate::options::Options;
use crate::proto::{ClientConfig, ClientCore, Limit};
use crate::{Error, Params};

use super::Client;

/// Configures a [`Client`] before connecting.
///
/// # Examples
///
/// ```no_run
/// use liveseq::{Client, Params, ReconnectPolicy};
///
/// # fn main() -> Result<(), liveseq::Error> {
/// let client = Client::builder()
///     .params(Params { window_size: 8, max_unacked_messages: 8, ..Params::default() })
///     .initial_seq_num(1000)
///     .max_datagram_size(9000)
///     .reconnect(ReconnectPolicy::default())
///     .connect("127.0.0.1:9999")?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ClientBuilder {
    /// What a server is configured with too.
    options: Options,
    isn: Option<u32>,
    reconnect: Option<ReconnectPolicy>,
    events: Vec<Sender<ConnEvent>>,
    fail_on_refused: bool,
}

impl ClientBuilder {
    /// Protocol parameters (default: [`Params::default`]).
    pub fn params(mut self, params: Params) -> Self {
        self.options.params = params;
        self
    }

    /// The initial sequence number sent in the Connect (default: random, non-zero).
    pub fn initial_seq_num(mut self, isn: u32) -> Self {
        self.isn = Some(isn);
        self
    }

    /// Faults to inject into this client's traffic (default: none). A test
    /// hook (the `test-hooks` feature), hidden from the documentation.
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn faults(mut self, faults: Faults) -> Self {
        self.options.faults = faults;
        self
    }

    /// Largest datagram this client sends, 368 to 65507 bytes (default 1472).
    /// It bounds the payload of [`Client::write`].
    pub fn max_datagram_size(mut self, size: usize) -> Self {
        self.options.max_datagram_size = Some(size);
        self
    }

    /// Dial again after losing the connection, as `policy` says (default:
    /// off). See [`ReconnectPolicy`] for what happens to messages in flight.
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = Some(policy);
        self
    }

    /// Whether a burst of in-order Data is acknowledged with one CAck rather
    /// than one Ack per message (default: on). Go LSP peers accept CAck.
    pub fn ack_coalescing(mut self, on: bool) -> Self {
        self.options.ack_coalescing = Some(on);
        self
    }

    /// Also sends this client's lifecycle events to `tx`, from before the
    /// connect starts (so `Connecting`, then `Connected` or `Refused`, are seen).
    ///
    /// The channel must be unbounded (`connect` fails with
    /// [`Error::InvalidParams`] otherwise): events are never dropped, since
    /// each connection has exactly one terminal event, and a full channel
    /// must not stall the client.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Client, ConnState, Params};
    ///
    /// let quiet = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    /// let (tx, rx) = crossbeam_channel::unbounded();
    /// let params = Params { epoch_millis: 10, epoch_limit: 2, ..Params::default() };
    /// assert!(Client::builder().params(params).events(tx).connect(quiet.local_addr().unwrap()).is_err());
    /// let states: Vec<ConnState> = rx.try_iter().map(|e| e.state).collect();
    /// assert_eq!(states, [ConnState::Connecting, ConnState::Refused]);
    /// ```
    pub fn events(mut self, tx: Sender<ConnEvent>) -> Self {
        self.events.push(tx);
        self
    }

    /// The most this client may hold written and not yet acknowledged
    /// (default: 1,024 messages or 1 MiB). [`Client::write`] blocks while the
    /// buffer is full, like a bounded channel, so a writer faster than the
    /// network holds bounded memory; [`Client::try_write`] fails instead.
    pub fn send_buffer(mut self, messages: usize, bytes: usize) -> Self {
        self.options.send_buffer = Some(Limit { messages, bytes });
        self
    }

    /// The most this client may hold delivered and not yet read (default:
    /// 4,096 messages or 4 MiB). Past it, new Data from the server is left
    /// unacknowledged until the application reads, so the server slows down.
    pub fn inbox(mut self, messages: usize, bytes: usize) -> Self {
        self.options.inbox = Some(Limit { messages, bytes });
        self
    }

    /// Whether a connect fails as soon as the server's host refuses it
    /// (default: off).
    ///
    /// Off, a client keeps sending its Connect for `epoch_limit` epochs even
    /// where nothing listens yet, as LSP promises (a client may start before
    /// its server); if every attempt was refused, the error is then
    /// [`Error::ConnectionRefused`] rather than [`Error::ConnectTimeout`].
    /// On, the connect fails with [`Error::ConnectionRefused`] at the first
    /// refusal of the last address, as `TcpStream::connect` does. A refusal
    /// is the ICMP "port unreachable" the server's host sends back; hosts and
    /// firewalls that send none leave a connect to time out either way.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Client, Error, Params};
    /// use std::time::{Duration, Instant};
    ///
    /// // Nobody listens on a port that was just freed.
    /// let addr = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    /// let params = Params { epoch_millis: 2000, ..Params::default() };
    /// let start = Instant::now();
    /// let err = Client::builder().params(params).fail_on_refused(true).connect(addr).unwrap_err();
    /// assert!(matches!(err, Error::ConnectionRefused(a) if a == addr));
    /// assert!(start.elapsed() < Duration::from_secs(2)); // before the second Connect
    /// ```
    pub fn fail_on_refused(mut self, on: bool) -> Self {
        self.fail_on_refused = on;
        self
    }

    /// Connects to the server at `addr`, like `TcpStream::connect`: each
    /// address it resolves to is tried in turn, the next as soon as one is
    /// refused, all within one deadline of `epoch_limit` epochs. Blocks until
    /// a server acknowledges, or fails with [`Error::ConnectTimeout`] (no
    /// answer in time) or [`Error::ConnectionRefused`] (see
    /// [`fail_on_refused`](Self::fail_on_refused)).
    ///
    /// The Connect is sent at once, again one epoch later, then every second
    /// epoch: a Go reference server heartbeats only in epochs in which it
    /// heard nothing, and such a heartbeat is taken as the answer too. An
    /// address that neither answers nor refuses holds the connect until the
    /// deadline.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use liveseq::{Client, Params, Server};
    ///
    /// # fn main() -> Result<(), liveseq::Error> {
    /// let params = Params { epoch_millis: 100, ..Params::default() };
    /// let server = Server::bind("127.0.0.1:0", params)?;
    /// // Nothing listens on the first address: the client moves on at once.
    /// let closed = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    /// let addrs: [SocketAddr; 2] = [closed, server.local_addr()?];
    /// let client = Client::builder().params(params).connect(&addrs[..])?;
    /// assert_eq!(client.peer_addr(), server.local_addr()?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn connect(self, addr: impl ToSocketAddrs) -> Result<Client, Error> {
        let options = self.options.check()?;
        if self.events.iter().any(|tx| tx.capacity().is_some()) {
            // Events are sent while the client's state is locked: a full
            // channel would stall the client, and dropping an event would
            // break "exactly one terminal event".
            return Err(Error::InvalidParams {
                field: "events",
                reason: "the channel must be unbounded",
            });
        }
        if let Some(policy) = &self.reconnect {
            if policy.delays.iter().any(|(lo, hi)| lo > hi) {
                return Err(Error::InvalidParams {
                    field: "reconnect",
                    reason: "delays must be (min, max) with min <= max",
                });
            }
        }
        let resolved: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|err| crate::error::context(err, "cannot resolve the server's address"))?
            .map(canonical)
            .collect();
        let no_address = || {
            Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no address to connect to",
            ))
        };
        if resolved.is_empty() {
            return Err(no_address());
        }
        let (socket, addrs) = io::bind_client_socket(&resolved)?;
        let Some((&server, fallbacks)) = addrs.split_first() else {
            return Err(no_address());
        };
        let isn = self.isn.unwrap_or_else(|| rand::random::<u32>().max(1));
        let (connected_tx, connected_rx) = bounded(1);
        let events = Subscribers::default();
        for tx in self.events {
            events.add(tx);
        }
        let core = ClientCore::new(
            Instant::now(),
            server,
            u64::from(isn),
            ClientConfig {
                params: options.params,
                coalesce_acks: options.coalesce_acks,
                send_buffer_limit: options.send_buffer,
                inbox_limit: options.inbox,
                reconnect: self.reconnect,
                seed: rand::random(),
                fallbacks: fallbacks.to_vec(),
                fail_on_refused: self.fail_on_refused,
            },
        );
        let role = ClientRole::new(server, events, connected_tx);
        let config = endpoint::Config {
            params: options.params,
            faults: options.faults,
            batch: 16,
            receive_threads: 1,
        };
        let endpoint = Endpoint::start(socket, config, ClientCell::new(core), role)?;
        // Connected to the server, the socket hears of refusals.
        endpoint.shared.io.follow_peer();
        // Sends the Connect and announces `Connecting`.
        endpoint.shared.run(|core, _, out| core.with(out, |_| ()))?;
        log::debug!(
            "connecting to {server} from {} with isn {isn}",
            endpoint.shared.io.local_addr()
        );
        match connected_rx.recv() {
            Ok(Ok(_)) => Ok(Client {
                endpoint,
                max_payload: options.max_payload,
                lost_seen: Mutex::new(None),
            }),
            Ok(Err(err)) => {
                let _ = endpoint.close(None);
                Err(err)
            }
            Err(_) => {
                let failure = endpoint.shared.failure();
                let _ = endpoint.close(None);
                Err(failure.unwrap_or(Error::Closed))
            }
        }
    }
}
