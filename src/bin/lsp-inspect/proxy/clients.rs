//! The client table: which client addresses are served, each one's
//! upstream socket toward the server, and who is evicted to make room.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use crate::check::AgeMap;

use super::Shared;

/// The local address an upstream socket binds: loopback for a loopback
/// server (so nothing listens beyond the machine), else any.
fn upstream_bind(server: SocketAddr) -> SocketAddr {
    let ip = match (server.ip(), server.ip().is_loopback()) {
        (IpAddr::V4(_), true) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        (IpAddr::V4(_), false) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (IpAddr::V6(_), true) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        (IpAddr::V6(_), false) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}

fn open_upstream(server: SocketAddr) -> io::Result<UdpSocket> {
    let up = UdpSocket::bind(upstream_bind(server))?;
    up.connect(server)?;
    up.set_nonblocking(true)?;
    Ok(up)
}

/// A client address being served.
pub(super) struct Upstream {
    pub(super) flow: usize,
    pub(super) socket: Arc<UdpSocket>,
    /// The server sent it something.
    pub(super) answered: bool,
}

/// The client addresses served, at most `cap`: those that have not proven
/// they receive (`fresh`) and those that have (`proven`), each by activity
/// (a datagram from the client), and which upstream socket is whose.
pub(super) struct Clients {
    fresh: AgeMap<SocketAddr, Upstream>,
    proven: AgeMap<SocketAddr, Upstream>,
    pub(super) by_fd: HashMap<RawFd, SocketAddr>,
    cap: usize,
    next_flow: usize,
    /// The set of sockets changed since the poll set was built.
    pub(super) changed: bool,
    warned: bool,
}

impl Clients {
    pub(super) fn new(cap: usize) -> Clients {
        Clients {
            fresh: AgeMap::new(cap),
            proven: AgeMap::new(cap),
            by_fd: HashMap::new(),
            cap,
            next_flow: 0,
            changed: true,
            warned: false,
        }
    }

    fn len(&self) -> usize {
        self.fresh.len() + self.proven.len()
    }

    /// Drops the least recently active address, fresh ones first.
    fn evict_one(&mut self, shared: &Shared) -> bool {
        let Some((_, up)) = self.fresh.pop_oldest().or_else(|| self.proven.pop_oldest()) else {
            return false;
        };
        self.by_fd.remove(&up.socket.as_raw_fd());
        self.changed = true;
        let mut st = shared.lock();
        st.checker.forget(up.flow);
        st.faults.forget(up.flow);
        st.recorder.clients_dropped += 1;
        true
    }

    /// The flow and upstream socket of client `from`, which just sent: an
    /// address already served (promoted once it proves it receives), or a
    /// new one, for which room is made. `None` only if no socket can be
    /// opened even then.
    pub(super) fn client(
        &mut self,
        shared: &Shared,
        from: SocketAddr,
    ) -> Option<(usize, Arc<UdpSocket>)> {
        if let Some(up) = self.proven.touch(&from) {
            return Some((up.flow, up.socket.clone()));
        }
        if let Some(up) = self.fresh.touch(&from) {
            let got = (up.flow, up.socket.clone());
            if up.answered {
                if let Some(up) = self.fresh.remove(&from) {
                    self.proven.insert(from, up);
                }
            }
            return Some(got);
        }
        while self.len() >= self.cap && self.evict_one(shared) {}
        let up = match open_upstream(shared.server) {
            Ok(up) => up,
            // Out of descriptors, most likely: make room and try once more.
            Err(_) if self.evict_one(shared) => match open_upstream(shared.server) {
                Ok(up) => up,
                Err(e) => return self.cannot(from, &e),
            },
            Err(e) => return self.cannot(from, &e),
        };
        let socket = Arc::new(up);
        let flow = self.next_flow;
        self.next_flow += 1;
        self.by_fd.insert(socket.as_raw_fd(), from);
        self.changed = true;
        self.fresh.insert(
            from,
            Upstream {
                flow,
                socket: socket.clone(),
                answered: false,
            },
        );
        Some((flow, socket))
    }

    fn cannot<T>(&mut self, from: SocketAddr, e: &io::Error) -> Option<T> {
        if !self.warned {
            self.warned = true;
            eprintln!("lsp-inspect: cannot open a socket toward the server for {from}: {e}");
        }
        None
    }

    /// The client whose upstream socket is `fd`.
    pub(super) fn by_fd(&mut self, fd: RawFd) -> Option<(SocketAddr, &mut Upstream)> {
        let addr = *self.by_fd.get(&fd)?;
        let up = match self.proven.get_mut(&addr) {
            Some(up) => up,
            None => self.fresh.get_mut(&addr)?,
        };
        Some((addr, up))
    }
}
