//! The LSP server: many clients on one UDP socket, with a fixed number of threads.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use parking_lot::Mutex;

use crate::driver::endpoint::{self, Empty, Endpoint, Inbox, Io, Role};
use crate::lifecycle::{ConnEvent, ConnState, Subscribers};
use crate::proto::{
    max_payload, Conn, Event, Message, MsgType, Phase, DEFAULT_MAX_DATAGRAM, MAX_ISN,
};
use crate::stats::{ConnStats, ServerStats, Timing};
use crate::{Error, Faults, Params};

/// Identifies one client connection of a [`Server`].
///
/// # Examples
///
/// ```
/// use liveseq::ConnId;
///
/// let id = ConnId::from(7);
/// assert_eq!(u32::from(id), 7);
/// assert_eq!(id.to_string(), "7");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub(crate) u32);

impl From<u32> for ConnId {
    fn from(id: u32) -> Self {
        ConnId(id)
    }
}

impl From<ConnId> for u32 {
    fn from(id: ConnId) -> Self {
        id.0
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// What the threads hand to `read`, in order.
enum Item {
    /// A connection was accepted (seen only by the event-style read).
    Opened(u32, SocketAddr),
    Data(u32, Vec<u8>),
    Lost(u32),
    /// Queued by `close_conn` behind the connection's last data.
    Closed(u32),
}

/// Something that happened on a [`Server`], as returned by
/// [`Server::next_event`].
///
/// # Examples
///
/// ```
/// use liveseq::{ConnId, ServerEvent};
///
/// let event = ServerEvent::Lost { id: ConnId::from(3) };
/// assert_eq!(event.conn_id(), ConnId::from(3));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// A client connected from `peer`; always the first event of `id`.
    Connected {
        /// The new connection.
        id: ConnId,
        /// The client's address.
        peer: SocketAddr,
    },
    /// The next message from connection `id`, in order.
    Message {
        /// The connection it came on.
        id: ConnId,
        /// The message, byte for byte as written.
        payload: Vec<u8>,
    },
    /// Connection `id` was closed with [`Server::close_conn`]; nothing more
    /// is reported for it.
    Closed {
        /// The closed connection.
        id: ConnId,
    },
    /// Nothing was heard from connection `id` for `epoch_limit` epochs (a
    /// client that closes normally ends this way too: LSP has no close
    /// message). Every message it sent before was reported first.
    Lost {
        /// The lost connection.
        id: ConnId,
    },
}

impl ServerEvent {
    /// The connection the event is about.
    pub fn conn_id(&self) -> ConnId {
        match self {
            ServerEvent::Connected { id, .. }
            | ServerEvent::Message { id, .. }
            | ServerEvent::Closed { id }
            | ServerEvent::Lost { id } => *id,
        }
    }
}

/// One connection in the table.
pub(crate) struct Entry {
    id: u32,
    addr: SocketAddr,
    state: Mutex<EntryState>,
}

struct EntryState {
    conn: Conn,
    timing: Timing,
    /// `close_conn` or `close` was called: nothing more goes to `read`.
    closed_by_user: bool,
    /// The terminal event was emitted; nothing may follow it.
    ended: bool,
}

#[derive(Default)]
struct Table {
    by_addr: HashMap<SocketAddr, Arc<Entry>>,
    by_id: HashMap<u32, Arc<Entry>>,
    next_id: u32,
    /// The server is closing: no new connections; signal when empty.
    closing: bool,
}

/// Server-wide counters (the socket-level ones live in [`Io`]).
#[derive(Default)]
struct Totals {
    accepted: AtomicU64,
    refused: AtomicU64,
    lost: AtomicU64,
    closed: AtomicU64,
    duplicate_connects: AtomicU64,
}

/// At most this many refused addresses are remembered per epoch (each gets
/// one `Refused` event per epoch); beyond it a flood costs no memory and
/// further refusals are only counted.
const MAX_REFUSED_TRACKED: usize = 4096;

/// The server side of the state shared with the threads.
pub(crate) struct ServerRole {
    table: Mutex<Table>,
    /// Mirrors `table.closing`, for readers that hold a connection lock.
    closing: AtomicBool,
    max_connections: usize,
    inbox: Inbox<Item>,
    events: Subscribers,
    totals: Totals,
    /// Ids passed to `close_conn` whose `Closed` item `read` has not returned yet:
    /// data from them still in the inbox is skipped.
    user_closed: Mutex<HashSet<u32>>,
    lost_during_close: Mutex<Vec<ConnId>>,
    refused_this_epoch: Mutex<HashSet<SocketAddr>>,
}

/// What to do with an entry once its lock is released (the table lock is
/// never taken while a connection lock is held).
#[derive(Clone, Copy, PartialEq)]
enum After {
    Keep,
    /// The connection ended: take it out of the table, then announce it.
    End(Ending),
}

/// A connection's end, announced only once it has left the table, so that
/// whoever sees the terminal event (or `ConnectionLost`) finds no stale entry.
#[derive(Clone, Copy, PartialEq)]
struct Ending {
    state: ConnState,
    /// Queue `ConnectionLost` for `read`.
    tell_reader: bool,
}

impl ServerRole {
    fn new(max_connections: usize) -> ServerRole {
        ServerRole {
            table: Mutex::new(Table::default()),
            closing: AtomicBool::new(false),
            max_connections,
            inbox: Inbox::new(),
            events: Subscribers::default(),
            totals: Totals::default(),
            user_closed: Mutex::new(HashSet::new()),
            lost_during_close: Mutex::new(Vec::new()),
            refused_this_epoch: Mutex::new(HashSet::new()),
        }
    }

    /// Sends what the state machine wants sent, hands delivered data to the
    /// inbox and turns its events into lifecycle events. Runs under the
    /// entry's lock, which is what keeps one connection's events in order.
    fn drive(&self, io: &Io, entry: &Entry, s: &mut EntryState) -> After {
        let EntryState {
            conn,
            timing,
            closed_by_user,
            ended,
        } = s;
        // Stamp first transmissions before sending them: an ack that comes
        // back during a burst must not yield a round trip shorter than real.
        timing.update(
            conn.next_unsent(),
            conn.oldest_unacked(),
            std::iter::from_fn(|| conn.poll_first_acked()),
        );
        while let Some(msg) = conn.poll_transmit() {
            io.send(&msg, entry.addr);
        }
        while let Some(payload) = conn.poll_delivered() {
            if !*closed_by_user {
                let _ = self.inbox.tx.send(Item::Data(entry.id, payload));
            }
        }
        let mut after = After::Keep;
        while let Some(event) = conn.poll_event() {
            let ending = match event {
                Event::Lost => {
                    log::debug!("connection {} ({}) lost", entry.id, entry.addr);
                    self.totals.lost.fetch_add(1, Ordering::Relaxed);
                    if self.closing.load(Ordering::SeqCst) && conn.orphans() > 0 {
                        self.lost_during_close.lock().push(ConnId(entry.id));
                    }
                    conn.take_orphans();
                    Ending {
                        state: ConnState::Lost,
                        tell_reader: !*closed_by_user,
                    }
                }
                Event::Drained => {
                    log::debug!("connection {} ({}) closed", entry.id, entry.addr);
                    self.totals.closed.fetch_add(1, Ordering::Relaxed);
                    Ending {
                        state: ConnState::Closed,
                        tell_reader: false,
                    }
                }
                Event::Connected => continue,
            };
            if !*ended {
                *ended = true;
                after = After::End(ending);
            }
        }
        after
    }

    /// Takes ended connections out of the table, then announces their end
    /// (terminal event, `ConnectionLost` for the reader), then signals the
    /// close manager if a closing server has no connection left. Call with no
    /// lock held.
    fn finish(&self, io: &Io, ended: Vec<(Arc<Entry>, Ending)>) {
        if ended.is_empty() {
            return;
        }
        let drained = {
            let mut table = self.table.lock();
            for (entry, _) in &ended {
                if table
                    .by_id
                    .get(&entry.id)
                    .is_some_and(|e| Arc::ptr_eq(e, entry))
                {
                    table.by_id.remove(&entry.id);
                }
                if table
                    .by_addr
                    .get(&entry.addr)
                    .is_some_and(|e| Arc::ptr_eq(e, entry))
                {
                    table.by_addr.remove(&entry.addr);
                }
            }
            table.closing && table.by_id.is_empty()
        };
        for (entry, ending) in ended {
            // Under the entry's lock, like every other event of it.
            let _guard = entry.state.lock();
            if ending.tell_reader {
                let _ = self.inbox.tx.send(Item::Lost(entry.id));
            }
            self.events.emit(Some(entry.id), entry.addr, ending.state);
        }
        if drained {
            io.signal_drained();
        }
    }

    /// [`finish`](Self::finish) for one entry, if `after` says it ended.
    fn after(&self, io: &Io, entry: Arc<Entry>, after: After) {
        if let After::End(ending) = after {
            self.finish(io, vec![(entry, ending)]);
        }
    }

    fn on_connect(&self, io: &Io, from: SocketAddr, isn: u64) {
        let mut table = self.table.lock();
        let mut replaced = None;
        if let Some(existing) = table.by_addr.get(&from).cloned() {
            if existing.state.lock().conn.isn() == isn {
                drop(table);
                // Our Ack was lost: answer the repeated Connect the same way.
                self.totals
                    .duplicate_connects
                    .fetch_add(1, Ordering::Relaxed);
                let mut s = existing.state.lock();
                let _ = s.conn.handle(Message::connect(isn));
                let after = self.drive(io, &existing, &mut s);
                drop(s);
                self.after(io, existing, after);
                return;
            }
            if !table.closing {
                // A new incarnation of the client at this address (it
                // restarted): the old connection is gone for good.
                table.by_id.remove(&existing.id);
                table.by_addr.remove(&from);
                replaced = Some(existing);
            }
        }
        if table.closing || table.by_id.len() >= self.max_connections {
            drop(table);
            self.refuse(from);
            return;
        }
        table.next_id = table.next_id.wrapping_add(1).max(1);
        while table.by_id.contains_key(&table.next_id) {
            table.next_id = table.next_id.wrapping_add(1).max(1);
        }
        let id = table.next_id;
        let mut conn = Conn::server(io.params, id, isn);
        conn.set_coalesce_acks(io.coalesce_acks);
        let timing = Timing::new(conn.next_unsent());
        let entry = Arc::new(Entry {
            id,
            addr: from,
            state: Mutex::new(EntryState {
                conn,
                timing,
                closed_by_user: false,
                ended: false,
            }),
        });
        table.by_addr.insert(from, entry.clone());
        table.by_id.insert(id, entry.clone());
        // Lock the new entry before the table is released, so that no event of
        // it can be emitted before `Connected`.
        let mut s = entry.state.lock();
        drop(table);
        if let Some(old) = replaced {
            self.replace(&old);
        }
        log::debug!("connection {id} accepted from {from} (isn {isn})");
        self.totals.accepted.fetch_add(1, Ordering::Relaxed);
        self.events.emit(Some(id), from, ConnState::Connected);
        let _ = self.inbox.tx.send(Item::Opened(id, from));
        let after = self.drive(io, &entry, &mut s);
        drop(s);
        self.after(io, entry.clone(), after);
    }

    /// Ends a connection whose client reconnected from the same address.
    fn replace(&self, old: &Entry) {
        let mut s = old.state.lock();
        log::debug!(
            "connection {} ({}) replaced by a new connect",
            old.id,
            old.addr
        );
        s.conn.abort();
        self.totals.lost.fetch_add(1, Ordering::Relaxed);
        if !s.closed_by_user {
            let _ = self.inbox.tx.send(Item::Lost(old.id));
        }
        if !s.ended {
            s.ended = true;
            self.events.emit(Some(old.id), old.addr, ConnState::Lost);
        }
    }

    fn refuse(&self, from: SocketAddr) {
        self.totals.refused.fetch_add(1, Ordering::Relaxed);
        let first_this_epoch = {
            let mut refused = self.refused_this_epoch.lock();
            refused.len() < MAX_REFUSED_TRACKED && refused.insert(from)
        };
        if first_this_epoch {
            log::debug!("connect from {from} refused: at the connection limit or closing");
            self.events.emit(None, from, ConnState::Refused);
        }
    }

    fn lookup(&self, id: ConnId) -> Result<Arc<Entry>, Error> {
        self.table
            .lock()
            .by_id
            .get(&id.0)
            .cloned()
            .ok_or(Error::UnknownConnection(id))
    }

    fn entries(&self) -> Vec<Arc<Entry>> {
        self.table.lock().by_id.values().cloned().collect()
    }
}

impl Role for ServerRole {
    /// Connections that received Data in this batch and may owe a CAck.
    type Batch = Vec<Arc<Entry>>;

    fn on_message(&self, io: &Io, from: SocketAddr, msg: Message<'_>, batch: &mut Self::Batch) {
        if msg.kind == MsgType::Connect {
            if msg.seq_num > MAX_ISN {
                io.count_rejected(from, &"connect with an isn above MAX_ISN");
                return;
            }
            self.on_connect(io, from, msg.seq_num);
            return;
        }
        let Some(entry) = self.table.lock().by_addr.get(&from).cloned() else {
            io.count_rejected(from, &"no connection from this address");
            return;
        };
        if msg.conn_id != entry.id {
            io.count_rejected(
                from,
                &format_args!("connection id {} is not this address's", msg.conn_id),
            );
            return;
        }
        if io.coalesce_acks
            && msg.kind == MsgType::Data
            && !batch.iter().any(|e| Arc::ptr_eq(e, &entry))
        {
            batch.push(entry.clone());
        }
        let after = {
            let mut s = entry.state.lock();
            if let Err(why) = s.conn.handle(msg) {
                s.timing.rejected += 1;
                io.count_rejected(from, &why);
            }
            self.drive(io, &entry, &mut s)
        };
        self.after(io, entry, after);
    }

    fn end_batch(&self, io: &Io, batch: &mut Self::Batch) {
        let mut gone = Vec::new();
        for entry in batch.drain(..) {
            let mut s = entry.state.lock();
            s.conn.flush_acks();
            if let After::End(ending) = self.drive(io, &entry, &mut s) {
                drop(s);
                gone.push((entry, ending));
            }
        }
        self.finish(io, gone);
    }

    fn on_malformed(&self, from: SocketAddr) {
        let entry = self.table.lock().by_addr.get(&from).cloned();
        if let Some(entry) = entry {
            entry.state.lock().timing.malformed += 1;
        }
    }

    fn on_epoch(&self, io: &Io) {
        self.refused_this_epoch.lock().clear();
        let mut gone = Vec::new();
        for entry in self.entries() {
            let mut s = entry.state.lock();
            s.conn.on_epoch();
            if let After::End(ending) = self.drive(io, &entry, &mut s) {
                drop(s);
                gone.push((entry, ending));
            }
        }
        self.finish(io, gone);
    }

    fn begin_close(&self, io: &Io) {
        self.closing.store(true, Ordering::SeqCst);
        let entries: Vec<Arc<Entry>> = {
            let mut table = self.table.lock();
            table.closing = true;
            table.by_id.values().cloned().collect()
        };
        let mut gone = Vec::new();
        for entry in entries {
            let mut s = entry.state.lock();
            s.closed_by_user = true;
            if s.conn.phase() == Phase::Open {
                self.events
                    .emit(Some(entry.id), entry.addr, ConnState::Closing);
            }
            s.conn.close();
            if let After::End(ending) = self.drive(io, &entry, &mut s) {
                drop(s);
                gone.push((entry, ending));
            }
        }
        self.finish(io, gone);
        if self.table.lock().by_id.is_empty() {
            io.signal_drained();
        }
    }

    fn close_result(&self) -> Result<(), Error> {
        let mut lost = std::mem::take(&mut *self.lost_during_close.lock());
        if lost.is_empty() {
            Ok(())
        } else {
            lost.sort();
            Err(Error::LostDuringClose(lost))
        }
    }

    fn abort(&self, io: &Io) -> usize {
        let entries: Vec<Arc<Entry>> = self.table.lock().by_id.drain().map(|(_, e)| e).collect();
        self.table.lock().by_addr.clear();
        let mut discarded = 0;
        for entry in entries {
            let mut s = entry.state.lock();
            discarded += s.conn.abort();
            self.totals.closed.fetch_add(1, Ordering::Relaxed);
            if !s.ended {
                s.ended = true;
                self.events
                    .emit(Some(entry.id), entry.addr, ConnState::Closed);
            }
        }
        io.signal_drained();
        discarded
    }
}

/// An LSP server: accepts any number of clients on one UDP socket.
///
/// All methods take `&self`, and `Server` is `Send + Sync`: one thread may
/// block in [`read`](Server::read) while others write, close connections or
/// close the server. The server runs three threads however many clients it has.
///
/// # Examples
///
/// An echo server:
///
/// ```no_run
/// use liveseq::{Error, Params, Server};
///
/// # fn main() -> Result<(), Error> {
/// let server = Server::bind("127.0.0.1:9999", Params::default())?;
/// loop {
///     match server.read() {
///         Ok((id, msg)) => server.write(id, &msg)?,
///         Err(Error::ConnectionLost(id)) => eprintln!("client {id} lost"),
///         Err(Error::ConnectionClosed(_)) => {}
///         Err(err) => return Err(err),
///     }
/// }
/// # }
/// ```
pub struct Server {
    endpoint: Endpoint<ServerRole>,
    max_payload: usize,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.endpoint.shared.io.local_addr())
            .finish()
    }
}

/// Configures a [`Server`] before binding.
///
/// # Examples
///
/// ```
/// use liveseq::{Faults, Params, Server};
///
/// # fn main() -> Result<(), liveseq::Error> {
/// let server = Server::builder()
///     .params(Params { epoch_millis: 50, ..Params::default() })
///     .faults(Faults { read_drop_percent: 10, ..Faults::default() })
///     .max_datagram_size(9000)
///     .bind("127.0.0.1:0")?;
/// assert_eq!(server.max_payload(), liveseq::proto::max_payload(9000));
/// server.close()?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ServerBuilder {
    params: Params,
    faults: Faults,
    max_datagram_size: Option<usize>,
    max_connections: Option<usize>,
    ack_coalescing: Option<bool>,
}

impl ServerBuilder {
    /// The most connections the server keeps at once (default: unlimited).
    /// At the limit, Connects from new addresses are ignored (the client's
    /// connect times out) and a [`ConnState::Refused`] event is emitted, once
    /// per address per epoch. Connections already admitted, and their repeated
    /// Connects, are unaffected; a closing connection counts until it is gone.
    /// The check and the insertion happen under one lock, so the limit is
    /// never overshot, and a refused Connect allocates no connection state.
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
        self.params = params;
        self
    }

    /// Faults to inject into this server's traffic (default: none).
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Largest datagram this server sends, 368 to 65507 bytes (default 1472).
    pub fn max_datagram_size(mut self, size: usize) -> Self {
        self.max_datagram_size = Some(size);
        self
    }

    /// Whether a burst of in-order Data is acknowledged with one CAck rather
    /// than one Ack per message (default: on). Out-of-order Data is always
    /// acknowledged individually. Go LSP peers accept CAck; turn this off for
    /// a peer that does not.
    pub fn ack_coalescing(mut self, on: bool) -> Self {
        self.ack_coalescing = Some(on);
        self
    }

    /// Binds the server's socket to `addr` and starts serving. Does not block.
    pub fn bind(self, addr: impl ToSocketAddrs) -> Result<Server, Error> {
        self.params.validate()?;
        let max_datagram = self.max_datagram_size.unwrap_or(DEFAULT_MAX_DATAGRAM);
        endpoint::check_datagram_size(max_datagram)?;
        let mut last_err = None;
        for addr in addr.to_socket_addrs()? {
            match endpoint::bind_socket(addr) {
                Ok(socket) => {
                    let role = ServerRole::new(self.max_connections.unwrap_or(usize::MAX));
                    let config = endpoint::Config {
                        params: self.params,
                        faults: self.faults,
                        coalesce_acks: self.ack_coalescing.unwrap_or(true),
                        batch: 32,
                    };
                    let endpoint = Endpoint::start(socket, config, role)?;
                    log::debug!("server listening on {}", endpoint.shared.io.local_addr());
                    return Ok(Server {
                        endpoint,
                        max_payload: max_payload(max_datagram),
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

impl Server {
    /// Binds to `addr` with the given parameters and no faults.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Params, Server};
    ///
    /// let server = Server::bind("127.0.0.1:0", Params::default()).unwrap();
    /// assert_ne!(server.local_addr().unwrap().port(), 0);
    /// server.close().unwrap();
    /// ```
    pub fn bind(addr: impl ToSocketAddrs, params: Params) -> Result<Server, Error> {
        Server::builder().params(params).bind(addr)
    }

    /// A builder for the less common settings.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The address the server's socket is bound to.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        Ok(self.endpoint.shared.io.local_addr())
    }

    /// The largest payload [`write`](Server::write) accepts.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Blocks until a message from any client arrives (each client's messages
    /// in order), or a connection ends.
    ///
    /// Returns `Err(ConnectionLost(id))` once per lost connection, after its
    /// last message; `Err(ConnectionClosed(id))` once after
    /// [`close_conn`](Server::close_conn); `Err(Closed)` after [`close`](Server::close).
    pub fn read(&self) -> Result<(ConnId, Vec<u8>), Error> {
        self.read_inner(None)
    }

    /// Like [`read`](Server::read), but gives up with [`Error::Timeout`] after `timeout`.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Error, Params, Server};
    /// use std::time::Duration;
    ///
    /// let server = Server::bind("127.0.0.1:0", Params::default()).unwrap();
    /// assert!(matches!(server.read_timeout(Duration::from_millis(5)), Err(Error::Timeout)));
    /// ```
    pub fn read_timeout(&self, timeout: Duration) -> Result<(ConnId, Vec<u8>), Error> {
        self.read_inner(Some(timeout))
    }

    fn read_inner(&self, timeout: Option<Duration>) -> Result<(ConnId, Vec<u8>), Error> {
        let role = &self.endpoint.shared.role;
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        loop {
            if self.endpoint.is_closed() {
                return Err(Error::Closed);
            }
            let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
            let item = match role.inbox.recv(left) {
                Ok(item) => item,
                Err(Empty::Closed) => return Err(Error::Closed),
                Err(Empty::Timeout) => return Err(Error::Timeout),
            };
            match item {
                Item::Opened(..) => {}
                Item::Data(id, payload) => {
                    if !role.user_closed.lock().contains(&id) {
                        return Ok((ConnId(id), payload));
                    }
                }
                Item::Lost(id) => return Err(Error::ConnectionLost(ConnId(id))),
                Item::Closed(id) => {
                    role.user_closed.lock().remove(&id);
                    return Err(Error::ConnectionClosed(ConnId(id)));
                }
            }
        }
    }

    /// Blocks until something happens on any connection: a client connected,
    /// a message arrived, or a connection ended. The event-style counterpart
    /// of [`read`](Server::read), for servers that track their clients.
    ///
    /// Every connection's events come in order: [`ServerEvent::Connected`]
    /// first, then its messages, then exactly one of [`ServerEvent::Closed`]
    /// (after [`close_conn`](Server::close_conn)) or [`ServerEvent::Lost`];
    /// no message is reported after its connection's end. The only error is
    /// [`Error::Closed`], after [`close`](Server::close), so `?` is safe here.
    ///
    /// # Examples
    ///
    /// An echo server that keeps track of its clients:
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use liveseq::{Client, Params, Server, ServerEvent};
    ///
    /// # fn main() -> Result<(), liveseq::Error> {
    /// let params = Params { epoch_millis: 50, ..Params::default() };
    /// let server = Server::bind("127.0.0.1:0", params)?;
    /// let client = Client::connect(server.local_addr()?, params)?;
    /// client.write(b"hi")?;
    ///
    /// let mut clients = HashMap::new();
    /// loop {
    ///     match server.next_event()? {
    ///         ServerEvent::Connected { id, peer } => {
    ///             clients.insert(id, peer);
    ///         }
    ///         ServerEvent::Message { id, payload } => {
    ///             server.write(id, &payload)?;
    ///             break; // just one message in this example
    ///         }
    ///         ServerEvent::Closed { id } | ServerEvent::Lost { id } => {
    ///             clients.remove(&id);
    ///         }
    ///         _ => {}
    ///     }
    /// }
    /// assert_eq!(client.read()?, b"hi");
    /// assert_eq!(clients[&client.conn_id()].port(), client.local_addr()?.port());
    /// # Ok(())
    /// # }
    /// ```
    pub fn next_event(&self) -> Result<ServerEvent, Error> {
        self.next_event_inner(None)
    }

    /// Like [`next_event`](Server::next_event), but gives up with
    /// [`Error::Timeout`] after `timeout`.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Error, Params, Server};
    /// use std::time::Duration;
    ///
    /// let server = Server::bind("127.0.0.1:0", Params::default()).unwrap();
    /// assert!(matches!(server.next_event_timeout(Duration::from_millis(5)), Err(Error::Timeout)));
    /// ```
    pub fn next_event_timeout(&self, timeout: Duration) -> Result<ServerEvent, Error> {
        self.next_event_inner(Some(timeout))
    }

    /// The next event if one is ready, without blocking.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Params, Server};
    ///
    /// let server = Server::bind("127.0.0.1:0", Params::default()).unwrap();
    /// assert_eq!(server.try_next_event().unwrap(), None);
    /// ```
    pub fn try_next_event(&self) -> Result<Option<ServerEvent>, Error> {
        match self.next_event_inner(Some(Duration::ZERO)) {
            Ok(event) => Ok(Some(event)),
            Err(Error::Timeout) => Ok(None),
            Err(err) => Err(err),
        }
    }

    fn next_event_inner(&self, timeout: Option<Duration>) -> Result<ServerEvent, Error> {
        let role = &self.endpoint.shared.role;
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        loop {
            if self.endpoint.is_closed() {
                return Err(Error::Closed);
            }
            let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
            let item = match role.inbox.recv(left) {
                Ok(item) => item,
                Err(Empty::Closed) => return Err(Error::Closed),
                Err(Empty::Timeout) => return Err(Error::Timeout),
            };
            return Ok(match item {
                Item::Opened(id, peer) => ServerEvent::Connected {
                    id: ConnId(id),
                    peer,
                },
                Item::Data(id, payload) => {
                    if role.user_closed.lock().contains(&id) {
                        continue;
                    }
                    ServerEvent::Message {
                        id: ConnId(id),
                        payload,
                    }
                }
                Item::Lost(id) => ServerEvent::Lost { id: ConnId(id) },
                Item::Closed(id) => {
                    role.user_closed.lock().remove(&id);
                    ServerEvent::Closed { id: ConnId(id) }
                }
            });
        }
    }

    /// The address connection `id` belongs to, or `None` once it is gone.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Client, Params, Server};
    ///
    /// let params = Params { epoch_millis: 50, ..Params::default() };
    /// let server = Server::bind("127.0.0.1:0", params).unwrap();
    /// let client = Client::connect(server.local_addr().unwrap(), params).unwrap();
    /// let peer = server.peer_addr(client.conn_id()).unwrap();
    /// assert_eq!(peer.port(), client.local_addr().unwrap().port());
    /// ```
    pub fn peer_addr(&self, id: ConnId) -> Option<SocketAddr> {
        self.endpoint.shared.role.lookup(id).ok().map(|e| e.addr)
    }

    /// Queues `payload` for connection `id` and returns at once.
    ///
    /// Fails with [`Error::UnknownConnection`] if there is no such connection
    /// (it never existed, was lost, or finished closing),
    /// [`Error::ConnectionClosed`] after [`close_conn`](Server::close_conn),
    /// [`Error::PayloadTooLarge`], or [`Error::Closed`].
    pub fn write(&self, id: ConnId, payload: &[u8]) -> Result<(), Error> {
        endpoint::check_payload(payload.len(), self.max_payload)?;
        if self.endpoint.is_closed() {
            return Err(Error::Closed);
        }
        let shared = &self.endpoint.shared;
        let entry = shared.role.lookup(id)?;
        let mut s = entry.state.lock();
        let after = match s.conn.phase() {
            Phase::Open => {
                s.conn.write(payload.to_vec());
                shared.role.drive(&shared.io, &entry, &mut s)
            }
            Phase::Closing | Phase::Drained => return Err(Error::ConnectionClosed(id)),
            Phase::Lost | Phase::Connecting => return Err(Error::UnknownConnection(id)),
        };
        drop(s);
        shared.role.after(&shared.io, entry, after);
        Ok(())
    }

    /// Closes connection `id` without blocking: messages already written are
    /// still delivered (in the background), but `read` returns nothing more
    /// from it, only one `Err(ConnectionClosed(id))`.
    pub fn close_conn(&self, id: ConnId) -> Result<(), Error> {
        if self.endpoint.is_closed() {
            return Err(Error::Closed);
        }
        let shared = &self.endpoint.shared;
        let entry = shared.role.lookup(id)?;
        let after = {
            let mut s = entry.state.lock();
            if s.closed_by_user {
                return Ok(());
            }
            s.closed_by_user = true;
            if s.conn.phase() == Phase::Open {
                shared
                    .role
                    .events
                    .emit(Some(id.0), entry.addr, ConnState::Closing);
            }
            shared.role.user_closed.lock().insert(id.0);
            let _ = shared.role.inbox.tx.send(Item::Closed(id.0));
            s.conn.close();
            shared.role.drive(&shared.io, &entry, &mut s)
        };
        shared.role.after(&shared.io, entry, after);
        Ok(())
    }

    /// Closes the server: blocks until every message written to every client
    /// is acknowledged, then stops the server's threads and releases its
    /// socket. Connections lost meanwhile are reported with
    /// [`Error::LostDuringClose`]. A `read` blocked in another thread returns
    /// [`Error::Closed`] at once.
    pub fn close(&self) -> Result<(), Error> {
        self.endpoint.shared.role.inbox.shut();
        self.endpoint.close(None)
    }

    /// Like [`close`](Server::close), but gives up draining once `timeout`
    /// has passed: what is left is discarded and the result is
    /// [`Error::CloseTimedOut`] with the number of messages never
    /// acknowledged. In every case the server's threads have stopped and its
    /// socket is released when this returns.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Params, Server};
    /// use std::time::Duration;
    ///
    /// let server = Server::bind("127.0.0.1:0", Params::default()).unwrap();
    /// server.close_timeout(Duration::from_secs(1)).unwrap();
    /// ```
    pub fn close_timeout(&self, timeout: Duration) -> Result<(), Error> {
        self.endpoint.shared.role.inbox.shut();
        self.endpoint.close(Some(Instant::now() + timeout))
    }

    /// Subscribes to lifecycle events of every connection, from now on.
    ///
    /// Each subscriber gets every event; one connection's events arrive in
    /// the order its state changed, ending with exactly one terminal event
    /// (`Closed`, `Lost` or `Refused`). The channel is unbounded: a slow
    /// subscriber never blocks the server, and dropping the receiver
    /// unsubscribes.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::{Client, ConnState, Params, Server};
    ///
    /// let params = Params { epoch_millis: 50, ..Params::default() };
    /// let server = Server::bind("127.0.0.1:0", params).unwrap();
    /// let events = server.subscribe();
    /// let client = Client::connect(server.local_addr().unwrap(), params).unwrap();
    /// let first = events.recv().unwrap();
    /// assert_eq!((first.conn_id, first.state), (Some(client.conn_id()), ConnState::Connected));
    /// ```
    pub fn subscribe(&self) -> Receiver<ConnEvent> {
        self.endpoint.shared.role.events.subscribe()
    }

    /// The state of connection `id`, or `None` once it is gone (closed, lost
    /// or never existed).
    pub fn state(&self, id: ConnId) -> Option<ConnState> {
        let entry = self.endpoint.shared.role.lookup(id).ok()?;
        let s = entry.state.lock();
        Some(match s.conn.phase() {
            Phase::Connecting => ConnState::Connecting,
            Phase::Open => ConnState::Connected,
            Phase::Closing => ConnState::Closing,
            Phase::Drained => ConnState::Closed,
            Phase::Lost => ConnState::Lost,
        })
    }

    /// The ids of the connections the server has now, closing ones included,
    /// in ascending order.
    pub fn connections(&self) -> Vec<ConnId> {
        let mut ids: Vec<ConnId> = self
            .endpoint
            .shared
            .role
            .table
            .lock()
            .by_id
            .keys()
            .map(|&id| ConnId(id))
            .collect();
        ids.sort();
        ids
    }

    /// A snapshot of connection `id`'s statistics, or `None` once it is gone.
    pub fn stats(&self, id: ConnId) -> Option<ConnStats> {
        let entry = self.endpoint.shared.role.lookup(id).ok()?;
        let s = entry.state.lock();
        Some(s.timing.snapshot(&s.conn))
    }

    /// Feeds one datagram to the receive path as if it came from `from`.
    /// Only in fuzzing builds (`--cfg fuzzing`, set by cargo-fuzz).
    #[cfg(fuzzing)]
    #[doc(hidden)]
    pub fn fuzz_inject(&self, from: SocketAddr, datagram: &[u8]) {
        self.endpoint.shared.inject(from, datagram);
    }

    /// Server-wide totals.
    pub fn totals(&self) -> ServerStats {
        let role = &self.endpoint.shared.role;
        let io = &self.endpoint.shared.io;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ServerStats {
            active: role.table.lock().by_id.len(),
            accepted: load(&role.totals.accepted),
            refused: load(&role.totals.refused),
            lost: load(&role.totals.lost),
            closed: load(&role.totals.closed),
            duplicate_connects: load(&role.totals.duplicate_connects),
            malformed: load(&io.counters.malformed),
            rejected: load(&io.counters.rejected),
        }
    }
}
