//! The LSP client: one connection to one server.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crossbeam_channel::{bounded, Sender};
use parking_lot::Mutex;

use crate::conn::{Conn, ConnEvent, Phase};
use crate::endpoint::{self, Empty, Endpoint, Inbox, Io, Role};
use crate::message::{max_payload, Message, MsgType, DEFAULT_MAX_DATAGRAM};
use crate::{ConnId, Error, Faults, Params};

/// What the receive and epoch threads hand to `read`, in order.
enum Item {
    Data(Vec<u8>),
    Lost,
}

/// The client side of the state shared with the threads.
pub(crate) struct ClientRole {
    server: SocketAddr,
    conn: Mutex<ClientConn>,
    inbox: Inbox<Item>,
}

struct ClientConn {
    conn: Conn,
    /// Told once whether the connect succeeded; `None` afterwards.
    connected: Option<Sender<Result<u32, Error>>>,
    closing: bool,
    /// Set when the connection was lost with messages still unacknowledged.
    lost_with_pending: bool,
}

impl ClientRole {
    /// Sends what the state machine wants sent and acts on its events.
    /// Runs under the connection lock.
    fn drive(&self, io: &Io, c: &mut ClientConn) {
        while let Some(msg) = c.conn.poll_transmit() {
            io.send(&msg, self.server);
        }
        while let Some(payload) = c.conn.poll_delivered() {
            let _ = self.inbox.tx.send(Item::Data(payload));
        }
        while let Some(event) = c.conn.poll_event() {
            match event {
                ConnEvent::Connected => {
                    log::debug!(
                        "connected to {} as connection {}",
                        self.server,
                        c.conn.conn_id()
                    );
                    if let Some(tx) = c.connected.take() {
                        let _ = tx.send(Ok(c.conn.conn_id()));
                    }
                }
                ConnEvent::Lost => {
                    if let Some(tx) = c.connected.take() {
                        log::debug!("connect to {} timed out", self.server);
                        let _ = tx.send(Err(Error::ConnectTimeout));
                    } else {
                        log::debug!("connection {} to {} lost", c.conn.conn_id(), self.server);
                        let _ = self.inbox.tx.send(Item::Lost);
                    }
                    if c.closing {
                        c.lost_with_pending = true;
                        io.signal_drained();
                    }
                }
                ConnEvent::Drained => {
                    if c.closing {
                        io.signal_drained();
                    }
                }
            }
        }
    }
}

impl Role for ClientRole {
    fn on_message(&self, io: &Io, from: SocketAddr, msg: Message<'_>) {
        if from != self.server {
            io.count_rejected(from, &"not from the server");
            return;
        }
        let mut c = self.conn.lock();
        if msg.kind == MsgType::Connect {
            io.count_rejected(from, &"connect sent to a client");
            return;
        }
        if let Err(why) = c.conn.handle(msg) {
            io.count_rejected(from, &why);
        }
        self.drive(io, &mut c);
    }

    fn on_epoch(&self, io: &Io) {
        let mut c = self.conn.lock();
        c.conn.on_epoch();
        self.drive(io, &mut c);
    }

    fn begin_close(&self, io: &Io) {
        let mut c = self.conn.lock();
        c.closing = true;
        match c.conn.phase() {
            Phase::Lost => {
                c.lost_with_pending = c.lost_with_pending || !c.conn.is_idle();
                io.signal_drained();
            }
            Phase::Drained => io.signal_drained(),
            _ => {
                c.conn.close();
                self.drive(io, &mut c);
            }
        }
    }

    fn close_result(&self) -> Result<(), Error> {
        let c = self.conn.lock();
        if c.lost_with_pending {
            Err(Error::ConnectionLost(ConnId(c.conn.conn_id())))
        } else {
            Ok(())
        }
    }
}

/// An LSP client: a reliable, ordered, message-oriented connection to a server.
///
/// All methods take `&self`, and `Client` is `Send + Sync`: one thread may
/// block in [`read`](Client::read) while others [`write`](Client::write) or
/// [`close`](Client::close).
///
/// # Examples
///
/// ```
/// use liveseq::{Client, Params, Server};
///
/// # fn main() -> Result<(), liveseq::Error> {
/// let params = Params { epoch_millis: 100, ..Params::default() };
/// let server = Server::bind("127.0.0.1:0", params)?;
/// let client = Client::connect(server.local_addr()?, params)?;
///
/// client.write(b"ping")?;
/// let (id, msg) = server.read()?;
/// assert_eq!((id, &msg[..]), (client.conn_id(), &b"ping"[..]));
/// server.write(id, b"pong")?;
/// assert_eq!(client.read()?, b"pong");
///
/// client.close()?;
/// server.close()?;
/// # Ok(())
/// # }
/// ```
pub struct Client {
    endpoint: Endpoint<ClientRole>,
    conn_id: ConnId,
    max_payload: usize,
    /// Set once `read` has reported the loss, so later reads repeat it.
    lost_seen: Mutex<bool>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("conn_id", &self.conn_id)
            .field("local_addr", &self.endpoint.shared.io.local_addr())
            .field("server", &self.endpoint.shared.role.server)
            .finish()
    }
}

/// Configures a [`Client`] before connecting.
///
/// # Examples
///
/// ```no_run
/// use liveseq::{Client, Faults, Params};
///
/// # fn main() -> Result<(), liveseq::Error> {
/// let client = Client::builder()
///     .params(Params { window_size: 8, max_unacked_messages: 8, ..Params::default() })
///     .initial_seq_num(1000)
///     .faults(Faults { write_drop_percent: 10, ..Faults::default() })
///     .max_datagram_size(9000)
///     .connect("127.0.0.1:9999")?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ClientBuilder {
    params: Params,
    isn: Option<u32>,
    faults: Faults,
    max_datagram_size: Option<usize>,
}

impl ClientBuilder {
    /// Protocol parameters (default: [`Params::default`]).
    pub fn params(mut self, params: Params) -> Self {
        self.params = params;
        self
    }

    /// The initial sequence number sent in the Connect (default: random, non-zero).
    pub fn initial_seq_num(mut self, isn: u32) -> Self {
        self.isn = Some(isn);
        self
    }

    /// Faults to inject into this client's traffic (default: none).
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Largest datagram this client sends, 368 to 65507 bytes (default 1472).
    /// It bounds the payload of [`Client::write`].
    pub fn max_datagram_size(mut self, size: usize) -> Self {
        self.max_datagram_size = Some(size);
        self
    }

    /// Connects to the server at `addr`, blocking until it acknowledges or
    /// `epoch_limit` epochs pass without an answer ([`Error::ConnectTimeout`]).
    pub fn connect(self, addr: impl ToSocketAddrs) -> Result<Client, Error> {
        self.params.validate()?;
        let max_datagram = self.max_datagram_size.unwrap_or(DEFAULT_MAX_DATAGRAM);
        endpoint::check_datagram_size(max_datagram)?;
        let server = addr.to_socket_addrs()?.next().ok_or_else(|| {
            Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no address to connect to",
            ))
        })?;
        let isn = self.isn.unwrap_or_else(|| rand::random::<u32>().max(1));
        let socket = endpoint::bind_socket(endpoint::any_addr_for(server))?;
        let (connected_tx, connected_rx) = bounded(1);
        let role = ClientRole {
            server,
            conn: Mutex::new(ClientConn {
                conn: Conn::client(self.params, u64::from(isn)),
                connected: Some(connected_tx),
                closing: false,
                lost_with_pending: false,
            }),
            inbox: Inbox::new(),
        };
        let endpoint = Endpoint::start(socket, self.params, self.faults, role)?;
        {
            let shared = &endpoint.shared;
            let mut c = shared.role.conn.lock();
            shared.role.drive(&shared.io, &mut c);
        }
        log::debug!(
            "connecting to {server} from {} with isn {isn}",
            endpoint.shared.io.local_addr()
        );
        match connected_rx.recv() {
            Ok(Ok(id)) => Ok(Client {
                endpoint,
                conn_id: ConnId(id),
                max_payload: max_payload(max_datagram),
                lost_seen: Mutex::new(false),
            }),
            Ok(Err(err)) => {
                let _ = endpoint.close();
                Err(err)
            }
            Err(_) => {
                let _ = endpoint.close();
                Err(Error::Closed)
            }
        }
    }
}

impl Client {
    /// Connects with the given parameters, a random initial sequence number
    /// and no faults. Blocks until the server acknowledges.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Client, Error, Params};
    ///
    /// // Nobody listens there: the connect gives up after epoch_limit epochs.
    /// let quiet = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    /// let params = Params { epoch_millis: 10, epoch_limit: 3, ..Params::default() };
    /// let err = Client::connect(quiet.local_addr().unwrap(), params).unwrap_err();
    /// assert!(matches!(err, Error::ConnectTimeout));
    /// ```
    pub fn connect(addr: impl ToSocketAddrs, params: Params) -> Result<Client, Error> {
        Client::builder().params(params).connect(addr)
    }

    /// A builder for the less common settings.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The id the server gave this connection.
    pub fn conn_id(&self) -> ConnId {
        self.conn_id
    }

    /// The local address of the client's socket.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        Ok(self.endpoint.shared.io.local_addr())
    }

    /// The server's address.
    pub fn peer_addr(&self) -> Result<SocketAddr, Error> {
        Ok(self.endpoint.shared.role.server)
    }

    /// The largest payload [`write`](Client::write) accepts.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Blocks until the next message from the server arrives, in order.
    ///
    /// Returns [`Error::ConnectionLost`] once every message received before
    /// the loss has been read, and [`Error::Closed`] after [`close`](Client::close).
    pub fn read(&self) -> Result<Vec<u8>, Error> {
        self.read_inner(None)
    }

    /// Like [`read`](Client::read), but gives up with [`Error::Timeout`]
    /// after `timeout`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use liveseq::{Client, Error, Params, Server};
    /// # use std::time::Duration;
    /// # let params = Params { epoch_millis: 100, ..Params::default() };
    /// # let server = Server::bind("127.0.0.1:0", params).unwrap();
    /// # let client = Client::connect(server.local_addr().unwrap(), params).unwrap();
    /// assert!(matches!(client.read_timeout(Duration::from_millis(10)), Err(Error::Timeout)));
    /// ```
    pub fn read_timeout(&self, timeout: Duration) -> Result<Vec<u8>, Error> {
        self.read_inner(Some(timeout))
    }

    fn read_inner(&self, timeout: Option<Duration>) -> Result<Vec<u8>, Error> {
        if self.endpoint.is_closed() {
            return Err(Error::Closed);
        }
        if *self.lost_seen.lock() {
            return Err(Error::ConnectionLost(self.conn_id));
        }
        match self.endpoint.shared.role.inbox.recv(timeout) {
            Ok(Item::Data(payload)) => Ok(payload),
            Ok(Item::Lost) => {
                *self.lost_seen.lock() = true;
                Err(Error::ConnectionLost(self.conn_id))
            }
            Err(Empty::Closed) => Err(Error::Closed),
            Err(Empty::Timeout) => Err(Error::Timeout),
        }
    }

    /// Queues `payload` for the server and returns at once; it is sent as
    /// soon as the window allows (immediately, from this thread, if it does).
    ///
    /// Fails with [`Error::PayloadTooLarge`], [`Error::ConnectionLost`] or
    /// [`Error::Closed`].
    pub fn write(&self, payload: &[u8]) -> Result<(), Error> {
        endpoint::check_payload(payload.len(), self.max_payload)?;
        if self.endpoint.is_closed() {
            return Err(Error::Closed);
        }
        let shared = &self.endpoint.shared;
        let mut c = shared.role.conn.lock();
        match c.conn.phase() {
            Phase::Open => {
                c.conn.write(payload.to_vec());
                shared.role.drive(&shared.io, &mut c);
                Ok(())
            }
            Phase::Lost => Err(Error::ConnectionLost(self.conn_id)),
            _ => Err(Error::Closed),
        }
    }

    /// Closes the connection: blocks until every message written has been
    /// acknowledged (or the connection is lost: [`Error::ConnectionLost`]),
    /// then stops the client's threads and releases its socket. A `read`
    /// blocked in another thread returns [`Error::Closed`] at once.
    pub fn close(&self) -> Result<(), Error> {
        self.endpoint.shared.role.inbox.shut();
        self.endpoint.close()
    }
}
