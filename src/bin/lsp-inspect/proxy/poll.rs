//! The poll loop: one thread receives from the listening socket and from
//! every upstream socket.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::check::Side;

use super::clients::Clients;
use super::forward::{guarded, Out};
use super::{Shared, POLL};

/// Datagrams received from one socket before the others get their turn.
const BATCH: usize = 64;

/// poll(2) on `fds` for up to `timeout_ms`; returns how many are ready
/// (0 on a timeout, negative on an error such as an interruption).
#[allow(unsafe_code)]
fn poll(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> libc::c_int {
    let n = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
    // SAFETY: `fds` is a live, exclusively borrowed slice of `pollfd` for
    // the whole call, and `n` is at most its length; poll(2) writes only
    // the `revents` fields of those entries.
    unsafe { libc::poll(fds.as_mut_ptr(), n, timeout_ms) }
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Receives from clients and from the server for every client, in one
/// thread: the listening socket and every upstream socket are polled at
/// once, and each ready one is read until it is empty or gave [`BATCH`].
pub(super) fn io_loop(shared: &Arc<Shared>, cap: usize) {
    let mut buf = vec![0u8; 65536];
    let mut clients = Clients::new(cap);
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let timeout = libc::c_int::try_from(POLL.as_millis()).unwrap_or(50);
    let to_clients = Out {
        socket: shared.listen.clone(),
        to: None,
    };
    while !shared.stop.load(Ordering::SeqCst) {
        if clients.changed {
            fds.clear();
            fds.push(pollfd(shared.listen.as_raw_fd()));
            fds.extend(clients.by_fd.keys().map(|&fd| pollfd(fd)));
            clients.changed = false;
        }
        if poll(&mut fds, timeout) <= 0 {
            continue;
        }
        // The server's answers first: a flood from clients must not starve them.
        for pfd in fds.iter_mut().skip(1) {
            if pfd.revents == 0 {
                continue;
            }
            pfd.revents = 0;
            let fd = pfd.fd;
            for _ in 0..BATCH {
                // (A socket closed meanwhile is gone; its number, if reused,
                // is some other client's now, and so is what it receives.)
                let Some((addr, up)) = clients.by_fd(fd) else {
                    break;
                };
                let n = match up.socket.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // An ICMP error from the server's side: nothing to read.
                    Err(_) => continue,
                };
                up.answered = true;
                let flow = up.flow;
                let out = Out {
                    to: Some(addr),
                    ..to_clients.clone()
                };
                guarded(shared, flow, addr, Side::Server, &buf[..n], &out);
            }
        }
        if fds[0].revents != 0 {
            fds[0].revents = 0;
            for _ in 0..BATCH {
                let (n, from) = match shared.listen.recv_from(&mut buf) {
                    Ok(r) => r,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // An ICMP unreachable from a client that left is not ours
                    // to act on.
                    Err(_) => continue,
                };
                let Some((flow, socket)) = clients.client(shared, from) else {
                    continue;
                };
                let out = Out { socket, to: None };
                guarded(shared, flow, from, Side::Client, &buf[..n], &out);
            }
        }
    }
}
