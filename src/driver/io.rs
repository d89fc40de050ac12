//! The socket and everything that sends on it: binding, the buffer
//! datagrams are encoded into,
//! sends that never block, a client socket that follows its peer, waking
//! the receive thread, and the plumbing of the delay and reorder faults
//! (the epoch thread releases what they hold).

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use crossbeam_channel::Sender;
use parking_lot::{Mutex, RwLock};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use super::faults::Faults;
use super::faults::{Injector, Plan};
use super::time::deadline;
use crate::proto::Message;
use crate::Params;

/// Flags of every send: never block (see [`Io::send_raw`]).
#[cfg(unix)]
const SEND_FLAGS: libc::c_int = libc::MSG_DONTWAIT;
#[cfg(not(unix))]
const SEND_FLAGS: i32 = 0;

/// Socket buffer size we ask the kernel for.
const SOCKET_BUFFER: usize = 4 << 20;

/// Socket-level counters of one instance.
#[derive(Debug, Default)]
pub(crate) struct IoCounters {
    pub datagrams_received: AtomicU64,
    pub datagrams_sent: AtomicU64,
    pub send_errors: AtomicU64,
}

/// A datagram the delay fault postponed.
pub(super) struct Delayed {
    pub(super) due: Instant,
    pub(super) bytes: Vec<u8>,
    pub(super) to: SocketAddr,
    /// The local address it leaves from (see [`Io::send_raw`]).
    pub(super) from: Option<IpAddr>,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.due.cmp(&other.due)
    }
}

/// A datagram the reorder fault holds back: its bytes, destination and
/// the local address it leaves from.
type Reordered = (Vec<u8>, SocketAddr, Option<IpAddr>);

/// A reused buffer datagrams are encoded into before they are sent (never
/// blocking: see [`Io::send_raw`]), and the keys of the writers to wake
/// once every lock is released.
#[derive(Default)]
pub(crate) struct SendBatch {
    bytes: Vec<u8>,
    /// Destination, local address to leave from (see [`Io::send_raw`]) and
    /// end offset in `bytes` of each datagram.
    items: Vec<(SocketAddr, Option<IpAddr>, usize)>,
    pub(super) wakes: Vec<u32>,
}

impl SendBatch {
    /// Forgets everything in it, sent or not.
    pub(super) fn clear(&mut self) {
        self.bytes.clear();
        self.items.clear();
        self.wakes.clear();
    }
}

thread_local! {
    /// Reused by every input from this thread: no allocation per datagram.
    pub(super) static SEND_BATCH: RefCell<SendBatch> = RefCell::new(SendBatch::default());
}

/// The socket and everything needed to send on it.
pub(crate) struct Io {
    /// Lock `socket`: read-locked for each send, written once to release
    /// the port.
    ///
    /// `None` once the instance is closed, which releases the port.
    pub(super) socket: RwLock<Option<UdpSocket>>,
    local_addr: SocketAddr,
    pub params: Params,
    pub(super) faults: Option<Injector>,
    delayed: Sender<Delayed>,
    /// Lock `reorder fault` (a test hook).
    ///
    /// Datagrams the reorder fault holds until the next send (or epoch).
    reordered: Mutex<Vec<Reordered>>,
    pub counters: IoCounters,
    /// Signalled when a close has drained the core.
    pub(super) drained: Sender<()>,
    /// Set by [`follow_peer`](Io::follow_peer): the socket is connected to
    /// where the core sends.
    pub(super) follows_peer: AtomicBool,
    /// Lock `peer`.
    ///
    /// The address the socket is connected to, once it follows the peer.
    peer: Mutex<Option<SocketAddr>>,
    /// The socket reports each datagram's destination address.
    destinations: bool,
}

impl Io {
    /// Wraps `socket`; `delayed` goes to the epoch thread, `drained` to the
    /// close manager.
    pub(super) fn new(
        socket: UdpSocket,
        params: Params,
        faults: Faults,
        delayed: Sender<Delayed>,
        drained: Sender<()>,
    ) -> io::Result<Io> {
        Ok(Io {
            local_addr: socket.local_addr()?,
            destinations: super::sys::receives_destinations(&socket),
            socket: RwLock::new(Some(socket)),
            params,
            faults: Injector::new(faults),
            delayed,
            reordered: Mutex::new(Vec::new()),
            counters: IoCounters::default(),
            drained,
            follows_peer: AtomicBool::new(false),
            peer: Mutex::new(None),
        })
    }

    /// Encodes `msg` for `to`, to leave from `from` (see
    /// [`send_raw`](Self::send_raw)), into `batch`, through the instance's
    /// faults.
    pub(super) fn queue(
        &self,
        msg: &Message<'_>,
        to: SocketAddr,
        from: Option<IpAddr>,
        batch: &mut SendBatch,
    ) {
        let Some(faults) = &self.faults else {
            msg.encode(&mut batch.bytes);
            batch.items.push((to, from, batch.bytes.len()));
            return;
        };
        let (replacement, delay, duplicate, reorder) = match faults.plan(msg, self.params.epoch()) {
            Plan::Drop => {
                log::trace!("fault: dropped outgoing {msg:?}");
                return;
            }
            Plan::Send {
                msg,
                delay,
                duplicate,
                reorder,
            } => (msg, delay, duplicate, reorder),
        };
        let mut bytes = Vec::new();
        replacement.as_ref().unwrap_or(msg).encode(&mut bytes);
        for _ in 0..if duplicate { 2 } else { 1 } {
            if let Some(delay) = delay {
                // Delayed past the clock's end: lost.
                let Some(due) = deadline(delay) else { continue };
                let _ = self.delayed.send(Delayed {
                    due,
                    bytes: bytes.clone(),
                    to,
                    from,
                });
            } else if reorder {
                self.reordered.lock().push((bytes.clone(), to, from));
            } else {
                batch.bytes.extend_from_slice(&bytes);
                batch.items.push((to, from, batch.bytes.len()));
                for (later, to, from) in std::mem::take(&mut *self.reordered.lock()) {
                    batch.bytes.extend_from_slice(&later);
                    batch.items.push((to, from, batch.bytes.len()));
                }
            }
        }
    }

    /// Sends and empties `batch`.
    pub(super) fn flush(&self, batch: &mut SendBatch) {
        let mut start = 0;
        for &(to, from, end) in &batch.items {
            self.send_raw(&batch.bytes[start..end], to, from);
            start = end;
        }
        batch.bytes.clear();
        batch.items.clear();
    }

    /// Sends the datagrams the reorder fault put behind the next one.
    pub(super) fn release_reordered(&self) {
        let reordered = std::mem::take(&mut *self.reordered.lock());
        for (bytes, to, from) in reordered {
            self.send_raw(&bytes, to, from);
        }
    }

    /// Sends without ever blocking (`MSG_DONTWAIT`): a datagram that finds
    /// the socket's send buffer full is dropped, as a network would drop it,
    /// and the protocol sends it again. Send errors are counted and logged,
    /// never returned: for a datagram protocol they are indistinguishable
    /// from loss.
    ///
    /// With `from`, the datagram leaves from that local address (an address
    /// a datagram was received at, on a socket bound to a wildcard address
    /// that [receives destinations](super::sys::recv_destinations)) rather
    /// than the one the kernel picks by route: a client's socket is
    /// connected to the address it sent to, and drops replies from any
    /// other. A socket that follows its peer is connected and sends
    /// without it (a client core never names a local address).
    pub(super) fn send_raw(&self, bytes: &[u8], to: SocketAddr, from: Option<IpAddr>) {
        let guard = self.socket.read();
        let Some(socket) = guard.as_ref() else { return };
        let sent = if self.follows_peer.load(Ordering::Relaxed) {
            self.send_connected(socket, bytes, to)
        } else if let Some(from) = from {
            super::sys::send_from(
                socket,
                self.local_addr.is_ipv6(),
                bytes,
                to,
                from,
                SEND_FLAGS,
            )
        } else {
            SockRef::from(socket).send_to_with_flags(bytes, &to.into(), SEND_FLAGS)
        };
        match sent {
            Ok(_) => {
                self.counters.datagrams_sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => {
                self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                log::debug!("send to {to} failed: {err}");
            }
        }
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether each datagram received comes with the address it was sent
    /// to (see [`super::sys::recv_destinations`]).
    pub(super) fn receives_destinations(&self) -> bool {
        self.destinations
    }

    /// Makes the socket follow the peer: before a datagram goes out it is
    /// connected to the datagram's destination. A connected UDP socket is
    /// told when the peer's host answers "port unreachable" (the receive
    /// thread gets `ConnectionRefused` and hands it to the core), which is
    /// how a client learns at once that nothing listens at an address.
    /// A client calls it as soon as its threads start, before its Connect:
    /// the epoch thread's first tick comes an epoch later, and a datagram
    /// sent before the call would only go out unconnected (harmless: the
    /// socket follows the peer from the next send on).
    pub(crate) fn follow_peer(&self) {
        self.follows_peer.store(true, Ordering::Relaxed);
    }

    fn send_connected(
        &self,
        socket: &UdpSocket,
        bytes: &[u8],
        to: SocketAddr,
    ) -> io::Result<usize> {
        let mut peer = self.peer.lock();
        if *peer != Some(to) {
            if peer.take().is_some() {
                super::sys::disconnect(socket)?;
            }
            socket.connect(self.reachable(to))?;
            *peer = Some(to);
        }
        SockRef::from(socket).send_with_flags(bytes, SEND_FLAGS)
    }

    /// `to` as this socket can reach it: an IPv6 socket reaches IPv4
    /// addresses in their IPv4-mapped form (a client bound for a list of
    /// both families is dual-stack).
    fn reachable(&self, to: SocketAddr) -> SocketAddr {
        match (self.local_addr, to) {
            (SocketAddr::V6(_), SocketAddr::V4(v4)) => (v4.ip().to_ipv6_mapped(), v4.port()).into(),
            _ => to,
        }
    }
}

/// Creates a UDP socket bound to `addr` with large buffers.
/// Errors name the operation and the address: `cannot bind 127.0.0.1:9999:
/// address already in use`.
pub(crate) fn bind_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    bind_with(addr, false)
}

/// A server's socket: [`bind_socket`], and where `addr` is a wildcard
/// address (`0.0.0.0`, `::`), on Linux the kernel reports each datagram's
/// destination address, so that each connection is answered from the
/// address its client sent to (see [`Io::send_raw`]). A server bound to
/// one address needs none of it and pays nothing for it. An IPv6 wildcard
/// socket is dual-stack or not as the system's default has it (Linux:
/// `net.ipv6.bindv6only`, normally 0, so `[::]` also takes IPv4).
pub(crate) fn bind_server_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = bind_socket(addr)?;
    if addr.ip().is_unspecified() {
        super::sys::recv_destinations(&socket).map_err(|err| {
            crate::error::context(err, format_args!("cannot receive destinations on {addr}"))
        })?;
    }
    Ok(socket)
}

/// [`bind_socket`], for an IPv6 `addr` also reaching IPv4 if `dual_stack`.
fn bind_with(addr: SocketAddr, dual_stack: bool) -> io::Result<UdpSocket> {
    let bind = || -> io::Result<UdpSocket> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if dual_stack {
            socket.set_only_v6(false)?;
        }
        // Best effort: the kernel caps these at its own maximum.
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
        socket.bind(&addr.into())?;
        Ok(socket.into())
    };
    bind().map_err(|err| crate::error::context(err, format_args!("cannot bind {addr}")))
}

/// A client's socket for `peers` (never empty), and the peers it can
/// reach. It binds the unspecified address of their family, port 0; for a
/// list of both families, an IPv6 socket that also reaches IPv4 (see
/// [`Io::follow_peer`]), or an IPv4 one for the IPv4 addresses alone where
/// the host has no IPv6.
pub(crate) fn bind_client_socket(peers: &[SocketAddr]) -> io::Result<(UdpSocket, Vec<SocketAddr>)> {
    let v4_any: SocketAddr = (Ipv4Addr::UNSPECIFIED, 0).into();
    let v6_any: SocketAddr = (Ipv6Addr::UNSPECIFIED, 0).into();
    let v4_only = || -> io::Result<(UdpSocket, Vec<SocketAddr>)> {
        let socket = bind_socket(v4_any)?;
        Ok((
            socket,
            peers.iter().copied().filter(SocketAddr::is_ipv4).collect(),
        ))
    };
    if peers.iter().all(SocketAddr::is_ipv4) {
        return v4_only();
    }
    let dual = peers.iter().any(SocketAddr::is_ipv4);
    match bind_with(v6_any, dual) {
        Ok(socket) => Ok((socket, peers.to_vec())),
        Err(err) if dual => {
            log::debug!("no IPv6 socket ({err}): trying the IPv4 addresses alone");
            v4_only()
        }
        Err(err) => Err(err),
    }
}

/// Wakes the `threads` receive threads so that they see they must stop:
/// shutting reading down wakes every blocked receive at once (Linux does
/// so even for an unconnected UDP socket, though it answers `ENOTCONN`),
/// and one empty datagram each does elsewhere. Only a speed-up: each thread
/// also wakes every [`RECV_POLL`](super::threads::RECV_POLL).
pub(super) fn stop_receivers(io: &Io, threads: usize) {
    if let Some(socket) = io.socket.read().as_ref() {
        let _ = SockRef::from(socket).shutdown(std::net::Shutdown::Read);
    }
    if !io.follows_peer.load(Ordering::Relaxed) {
        for _ in 0..threads {
            wake_receiver(io);
        }
    }
}

/// Wakes a receive thread early by sending an empty datagram to our own
/// port. Only a speed-up: the thread also wakes every [`RECV_POLL`](super::threads::RECV_POLL).
pub(super) fn wake_receiver(io: &Io) {
    if io.follows_peer.load(Ordering::Relaxed) {
        // A connected socket takes datagrams from its peer alone, so the
        // wake-up datagram would be filtered out. Shutting reading down
        // wakes a blocked receive at once; it is only done to stop (or to
        // panic on request), so nothing is lost.
        if let Some(socket) = io.socket.read().as_ref() {
            let _ = SockRef::from(socket).shutdown(std::net::Shutdown::Read);
        }
        return;
    }
    let mut to = io.local_addr;
    if to.ip().is_unspecified() {
        to.set_ip(match to {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    let guard = io.socket.read();
    if let Some(socket) = guard.as_ref() {
        if let Err(err) = socket.send_to(&[], to) {
            log::debug!("could not wake the receive thread: {err}");
        }
    }
}
